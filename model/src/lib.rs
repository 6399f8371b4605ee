//! evroute's model: Xen's FIFO event-channel ABI and the per-OS routing
//! decision, as Rust that loom and proptest check.
//!
//! - [`route`]: the one routing decision (no_std, allocation-free).
//! - [`abi`], [`guest`]: event words, control blocks, the new operation's
//!   struct, and the per-vCPU consumer: `evroute-guest`'s own modules, the
//!   code guests link, re-exported here so the scenarios check it in place.
//! - [`hypervisor`]: Xen 4.17's `event_fifo.c` and the channel operations.
//! - [`linux_irq`]: Linux's IRQ layer over the consumer (`is_active`, acks,
//!   lateeoi, mask reasons, vCPU sets from affinity, CPU hotplug).
//! - [`notify`]: the dedicated-core wait in Xen and its sender's skipped kick.
//! - [`fairness`]: Jain's index, how evenly events spread over vCPUs.
//! - [`ghost`]: invariants, by name, and the bookkeeping that checks them.
//! - [`scenarios`]: the interleavings loom explores; [`bugs`]: seeded mistakes.
#![cfg_attr(not(feature = "std"), no_std)]

pub use evroute_guest::abi;
pub use evroute_guest::consumer as guest;
pub mod bugs;
pub mod error;
pub mod fairness;
pub mod notify;
pub mod route;
pub mod sync;

#[cfg(feature = "std")]
pub mod ghost;
#[cfg(feature = "std")]
pub mod hypervisor;
#[cfg(feature = "std")]
pub mod linux_irq;
#[cfg(feature = "std")]
pub mod scenarios;
#[cfg(feature = "std")]
pub mod shared;

pub use error::Error;
pub use route::{route, Policy, RouteInputs};
