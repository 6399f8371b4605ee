//! Mistakes in the guest's side that a checker switches on to show it
//! catches them (evroute-model's seeded bugs of the same names). Only the
//! `seeded-faults` feature keeps them; without it [`Faults::has`] is a
//! constant `false` and every faulty branch is compiled out.

/// One seeded mistake in the consumer or in unmask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// LINKED is cleared by a plain store after the link was read, so a
    /// link Xen appends in between is lost (Linux uses one cmpxchg).
    ClearLinkedBeforeReadLink,
    /// Unmask clears MASKED even when PENDING is set, instead of asking
    /// Xen (`EVTCHNOP_unmask`) to link the pending event.
    UnmaskIgnoresPending,
    /// The consumer handles a pending event without checking MASKED.
    HandleMaskedEvent,
}

/// The faults switched on; [`Faults::NONE`] in every real guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults(u8);

impl Faults {
    pub const NONE: Faults = Faults(0);

    /// These faults and `fault` too (a checker's run).
    #[cfg(feature = "seeded-faults")]
    pub const fn with(self, fault: Fault) -> Faults {
        Faults(self.0 | 1 << fault as u8)
    }

    #[inline(always)]
    pub const fn has(self, fault: Fault) -> bool {
        cfg!(feature = "seeded-faults") && self.0 & (1 << fault as u8) != 0
    }
}
