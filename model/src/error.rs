//! Every way an operation's argument can be wrong, and the errno Xen returns.

use crate::abi::errno;
use core::fmt;

/// A rejected operation. Whatever the variant, no channel was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Beyond the domain's channels (`!port_is_valid`).
    BadPort,
    /// The port names a free channel, or port 0 (reserved).
    Unbound,
    /// IPI, per-vCPU VIRQ or Xen-consumer channel: their vCPU is fixed.
    WrongKind,
    /// Priority above `EVTCHN_FIFO_PRIORITY_MIN` (15).
    BadPriority,
    /// A vCPU set with no bit (or `nr_bits == 0`).
    EmptySet,
    /// A set bit at or beyond the domain's vCPU count, or `nr_bits` beyond
    /// [`crate::abi::MAX_VCPUS`].
    BitBeyondVcpus,
    /// No vCPU in the set can take events: each is down (never brought up,
    /// or offlined) or has not mapped its FIFO control block.
    NoReceivingVcpu,
    /// `EVTCHNOP_bind_vcpu` to a vCPU that does not exist.
    NoSuchVcpu,
    /// `evtchn-route=off`, or the domain uses the 2-level ABI.
    NotSupported,
    /// Unknown bits in `flags`, or `pad` not zero.
    BadArgument,
    /// The domain holds `evtchn-route-max-sets` out-of-line sets already
    /// (only domains of more than 64 vCPUs allocate a set).
    TooManySets,
    /// The guest's bitmap could not be read or written.
    Fault,
    /// No free port to allocate.
    NoFreePort,
}

impl Error {
    /// The positive Xen errno; the hypercall returns its negation.
    pub const fn errno(self) -> i32 {
        match self {
            Error::BadPort
            | Error::Unbound
            | Error::WrongKind
            | Error::BadPriority
            | Error::BadArgument
            | Error::EmptySet
            | Error::BitBeyondVcpus
            | Error::NoReceivingVcpu => errno::EINVAL,
            Error::NoSuchVcpu => errno::ENOENT,
            Error::NotSupported => errno::EOPNOTSUPP,
            Error::Fault => errno::EFAULT,
            Error::NoFreePort | Error::TooManySets => errno::ENOSPC,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Error::BadPort => "port beyond the domain's channels",
            Error::Unbound => "port names a free or reserved channel",
            Error::WrongKind => "IPI, per-vCPU VIRQ and Xen-consumer channels keep their vCPU",
            Error::BadPriority => "priority above 15",
            Error::EmptySet => "vCPU set is empty",
            Error::BitBeyondVcpus => "vCPU set names a vCPU the domain does not have",
            Error::NoReceivingVcpu => "no vCPU of the set can take events (all down or without a control block)",
            Error::NoSuchVcpu => "no such online vCPU",
            Error::NotSupported => "routing is off (evtchn-route=off) or the domain uses the 2-level ABI",
            Error::BadArgument => "unknown flag, or pad not zero",
            Error::TooManySets => "the domain holds as many vCPU sets as evtchn-route-max-sets allows",
            Error::Fault => "guest bitmap not accessible",
            Error::NoFreePort => "no free port",
        };
        write!(f, "{what} (-{})", self.errno())
    }
}
