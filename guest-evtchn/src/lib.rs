//! A guest's side of Xen's FIFO event-channel ABI with evroute's per-OS
//! vCPU sets, for guests that are not Linux (unikernels, Rust kernels):
//!
//! - [`consumer`]: the per-vCPU queue consumer (READY/HEAD, LINKED clearing,
//!   priorities) and mask/unmask, as Linux 6.1 does them;
//! - [`vcpu_set`]: vCPU sets, their conversion from a guest's CPU numbers,
//!   and `EVTCHNOP_set_vcpu_set`'s argument with the ABI's checks;
//! - [`abi`]: the shared words, control block and the new operation's struct.
//!
//! The crate is `no_std` and allocates nothing: the guest gives it its shared
//! pages through [`abi::SharedEvents`] and its hypercalls through
//! [`consumer::Hypercalls`] and [`vcpu_set::SetVcpuSetOp`]. evroute's model
//! checks this same code with loom (feature `loom`), with Xen's side of the
//! queues and the routing running beside it.
#![no_std]

pub mod abi;
pub mod consumer;
pub mod faults;
pub mod sync;
pub mod vcpu_set;

pub use consumer::{Consumer, Hypercalls};
pub use faults::{Fault, Faults};
pub use vcpu_set::{SetVcpuSetOp, VcpuSet};
