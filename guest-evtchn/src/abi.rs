//! The FIFO event-channel ABI as Xen's public `xen/include/public/event_channel.h`
//! lays it out, plus evroute's new operation.
//!
//! Constants come from `xen-sys` (bindings of Xen 4.14's public headers). Its
//! `EVTCHN_FIFO_PENDING`… are bit *positions*; the masks below are derived from
//! them once, here, so no other module shifts by hand.

use crate::sync::{AtomicU32, AtomicU8};
use xen_sys as xs;

/// One event word (`event_word_t`): PENDING, MASKED, LINKED, BUSY and a LINK.
pub type EventWord = xs::event_word_t;
/// An event-channel port (`evtchn_port_t`).
pub type Port = xs::evtchn_port_t;

pub const PENDING: EventWord = 1 << xs::EVTCHN_FIFO_PENDING;
pub const MASKED: EventWord = 1 << xs::EVTCHN_FIFO_MASKED;
pub const LINKED: EventWord = 1 << xs::EVTCHN_FIFO_LINKED;
pub const BUSY: EventWord = 1 << xs::EVTCHN_FIFO_BUSY;
pub const LINK_MASK: EventWord = xs::EVTCHN_FIFO_LINK_MASK;

/// Queues per vCPU, one per priority (0 is the highest).
pub const MAX_QUEUES: usize = xs::EVTCHN_FIFO_MAX_QUEUES as usize;
pub const PRIORITY_MIN: u32 = xs::EVTCHN_FIFO_PRIORITY_MIN;
pub const PRIORITY_DEFAULT: u32 = xs::EVTCHN_FIFO_PRIORITY_DEFAULT;
/// Ports the FIFO ABI can name (LINK is 17 bits; port 0 means "no link").
pub const NR_CHANNELS: u32 = xs::EVTCHN_FIFO_NR_CHANNELS;
/// Xen's `EVTCHN_FIFO_EVENT_WORDS_PER_PAGE` (xen/include/xen/event_fifo.h):
/// event words per 4 KiB event-array page.
pub const EVENT_WORDS_PER_PAGE: u32 = 4096 / core::mem::size_of::<EventWord>() as u32;

/// `EVTCHNOP_reset_cont` (Xen 4.14+), missing from xen-sys; the last number taken.
pub const EVTCHNOP_RESET_CONT: u32 = 14;
/// evroute's new operation: set or read back a channel's vCPU set.
pub const EVTCHNOP_SET_VCPU_SET: u32 = 15;
/// `evtchn_set_vcpu_set.flags`: copy the channel's set out instead of setting it.
pub const EVTCHN_VCPU_SET_GET: u32 = 1;

/// `EVTCHN_VCPU_SET_MAX_BITS`: the longest bitmap the new operation accepts
/// (x86's `MAX_VIRT_CPUS`, 8192); a longer one is rejected unread.
pub const MAX_VCPUS: u32 = 8192;

/// `struct evtchn_set_vcpu_set` (evroute's docs/abi.md): one 24-byte layout for 32- and
/// 64-bit guests, the bitmap's address being a 64-bit field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnSetVcpuSet {
    /// IN: the channel.
    pub port: Port,
    /// IN: 0 to set, [`EVTCHN_VCPU_SET_GET`] to read back.
    pub flags: u32,
    /// IN: bits in `bitmap`. OUT (get): the domain's vCPU count.
    pub nr_bits: u32,
    /// Must be zero (-EINVAL otherwise), so that it can carry meaning later.
    pub pad: u32,
    /// IN/OUT: guest address of the bitmap, bit `n` in byte `n / 8`, bit `n % 8`.
    pub bitmap: u64,
}

/// The per-vCPU control block (`struct evtchn_fifo_control_block`): READY has
/// one bit per priority with a non-empty queue; HEAD is each queue's first port.
#[repr(C)]
pub struct ControlBlock {
    pub ready: AtomicU32,
    _rsvd: u32,
    pub head: [AtomicU32; MAX_QUEUES],
}

impl Default for ControlBlock {
    fn default() -> Self {
        ControlBlock { ready: AtomicU32::new(0), _rsvd: 0, head: core::array::from_fn(|_| AtomicU32::new(0)) }
    }
}

// The real (non-loom) atomics are plain 32-bit words: check that the control
// block matches the header's layout byte for byte.
#[cfg(not(feature = "loom"))]
const _: () = {
    assert!(core::mem::size_of::<ControlBlock>() == core::mem::size_of::<xs::evtchn_fifo_control_block>());
    assert!(core::mem::offset_of!(ControlBlock, ready) == core::mem::offset_of!(xs::evtchn_fifo_control_block, ready));
    assert!(core::mem::offset_of!(ControlBlock, head) == core::mem::offset_of!(xs::evtchn_fifo_control_block, head));
    assert!(core::mem::size_of::<EvtchnSetVcpuSet>() == 24);
};

/// What guest and hypervisor both see: the event array and one control block
/// per vCPU. The consumer reaches shared memory only through this trait, so
/// the same code runs on a guest's real mappings and on the model's pages.
pub trait SharedEvents {
    /// The event word of `port`, or `None` if no event-array page covers it.
    fn word(&self, port: Port) -> Option<&AtomicU32>;
    fn control_block(&self, vcpu: u32) -> &ControlBlock;
    /// `vcpu_info.evtchn_upcall_pending` of `vcpu` (a byte: the next one is
    /// the upcall mask, which the consumer must not touch).
    fn upcall_pending(&self, vcpu: u32) -> &AtomicU8;
}

/// Xen's public errno values (`xen/include/public/errno.h`), which the
/// hypercall returns negated.
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOMEM: i32 = 12;
    pub const EFAULT: i32 = 14;
    pub const EBUSY: i32 = 16;
    pub const ENOENT: i32 = 2;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const ENOSYS: i32 = 38;
    pub const EOPNOTSUPP: i32 = 95;
}
