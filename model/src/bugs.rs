//! Seeded bugs: real mistakes, each switchable at run time, that the checks
//! must catch. The suite enables each in turn and fails if its scenario still
//! passes (`cargo xtask loom --list-bugs`, `--bug NAME`).

/// One seeded mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Bug {
    /// Xen: a queue change does not invalidate the old queue's stale tail, so
    /// a later event for the old queue is linked behind an event now on the
    /// new one (the reason for `if ( old_q->tail == port ) old_q->tail = 0;`).
    NoTailInvalidation,
    /// Xen: set-pending locks only the new queue, not the event's last queue.
    SkipOldQueueLock,
    /// Xen: the two queue locks are taken new-then-old instead of in address
    /// order, so two events moving in opposite directions deadlock.
    LockOrderInverted,
    /// Xen: an event still LINKED on its old queue is linked onto the routed
    /// queue as well, instead of staying where it is.
    RouteLinkedToNewQueue,
    /// Xen: a port still LINKED on a queue is handed out again by allocation
    /// (`evtchn_fifo_is_busy` ignored), so the new channel's first event
    /// lands on the old channel's queue.
    ReuseLinkedPort,
    /// Xen: routing picks a running vCPU outside the channel's set.
    RouteIgnoresSet,
    /// Xen: with no vCPU of the set running or blocked, routing falls back
    /// to the bound vCPU even while a set change has moved the set away
    /// from it (bound vCPU and set are written apart).
    FallbackOutsideSet,
    /// Xen: routing ignores which vCPUs can take an event, so an event goes
    /// to a running vCPU that has not mapped its control block, and
    /// `evtchn_fifo_set_pending` drops it.
    RouteIgnoresReceivable,
    /// Xen (4.17 as released): set-pending gives up after three tries lost to
    /// queue changes and drops the event ("lost event (too many queue
    /// changes)") instead of staying on the event's last queue.
    ThreeTryBailout,
    /// Xen: the heavy bit is set or cleared after the load count changes,
    /// so a set delayed past a later clear leaves the bit and the count
    /// disagreeing (instead of toggling on each crossing).
    HeavySetOrClear,
    /// Xen: `Balanced`'s load decays only when an event is routed to the
    /// vCPU; `Balanced` routes none to a heavy vCPU while another running
    /// vCPU of the set is light, so the mark sticks and
    /// every event falls back to the vCPUs still light (the first
    /// version's flaw, with a mark cleared only when seen drained).
    StickyMark,
    /// Guest: LINKED is cleared by a plain store after the link was read, so a
    /// link Xen appends in between is lost (Linux uses one cmpxchg).
    ClearLinkedBeforeReadLink,
    /// Guest: unmask clears MASKED even when PENDING is set, instead of asking
    /// Xen (EVTCHNOP_unmask) to link the pending event.
    UnmaskIgnoresPending,
    /// Guest: the consumer handles a pending event without checking MASKED.
    HandleMaskedEvent,
    /// Linux: the lateeoi chip's ack clears `is_active` (as the edge chip's
    /// does) instead of keeping it until the EOI, so a delivery on another
    /// CPU runs the handler while the first still owes its EOI.
    LateEoiClearsActiveAtAck,
    /// Linux (6.1 as released): an EOI sent while the handler still runs
    /// unmasks at once, so another CPU takes the event, mask-acks it, and
    /// the first CPU runs the handler again without the EOI mask: the next
    /// event runs it before that run's EOI. (The fix lets the EOI wait for
    /// the handler to return.)
    EoiWhileHandlerRuns,
    /// Linux (6.1 as released): the EOI clears `is_active`, then lifts the
    /// EOI mask in a second step, so a re-run's mask-ack that takes
    /// `is_active` in between has its EOI mask lifted.
    EoiUnmaskApart,
    /// Xen (notify path): the sender tests the waiter's flag before it
    /// writes the watched word, so a waiter that gives up in between blocks
    /// on an event nobody kicks it for.
    FlagTestedBeforeWord,
    /// Xen (notify path): the sender clears `_VPF_blocked` and tests the
    /// flag with no full barrier between, so the flag may be read before
    /// the clear is visible (store buffering), with the same result.
    SendWithoutBarrier,
    /// Xen (notify path): the waiter that gives up clears its flag and the
    /// schedule reads `_VPF_blocked` with no full barrier between: it may
    /// read the bit still set while a sender reads the flag still set and
    /// skips the wake-up.
    GiveUpWithoutBarrier,
    /// Linux: the set handed to Xen is built from Linux CPU numbers rather
    /// than `xen_vcpu_nr()`, so it names other vCPUs where the two differ.
    SetFromLinuxCpuNumbers,
    /// Linux: a CPU going offline is left in the sets (the mask is not
    /// limited to online CPUs), so Xen may queue events on a stopped vCPU.
    OfflineCpuLeftInSet,
    /// Linux (6.1 as released): the CPU-dead drain drops a pending event
    /// left on the dead CPU's queue ("Dropping pending event") instead of
    /// raising it again.
    DeadCpuDropsEvent,
}

impl Bug {
    pub const ALL: [Bug; 23] = [
        Bug::NoTailInvalidation,
        Bug::SkipOldQueueLock,
        Bug::LockOrderInverted,
        Bug::RouteLinkedToNewQueue,
        Bug::ReuseLinkedPort,
        Bug::RouteIgnoresSet,
        Bug::FallbackOutsideSet,
        Bug::RouteIgnoresReceivable,
        Bug::ThreeTryBailout,
        Bug::HeavySetOrClear,
        Bug::StickyMark,
        Bug::ClearLinkedBeforeReadLink,
        Bug::UnmaskIgnoresPending,
        Bug::HandleMaskedEvent,
        Bug::LateEoiClearsActiveAtAck,
        Bug::EoiWhileHandlerRuns,
        Bug::EoiUnmaskApart,
        Bug::FlagTestedBeforeWord,
        Bug::SendWithoutBarrier,
        Bug::GiveUpWithoutBarrier,
        Bug::SetFromLinuxCpuNumbers,
        Bug::OfflineCpuLeftInSet,
        Bug::DeadCpuDropsEvent,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Bug::NoTailInvalidation => "no-tail-invalidation",
            Bug::SkipOldQueueLock => "skip-old-queue-lock",
            Bug::LockOrderInverted => "lock-order-inverted",
            Bug::RouteLinkedToNewQueue => "route-linked-to-new-queue",
            Bug::ReuseLinkedPort => "reuse-linked-port",
            Bug::RouteIgnoresSet => "route-ignores-set",
            Bug::FallbackOutsideSet => "fallback-outside-set",
            Bug::RouteIgnoresReceivable => "route-ignores-receivable",
            Bug::ThreeTryBailout => "three-try-bailout",
            Bug::HeavySetOrClear => "heavy-set-or-clear",
            Bug::StickyMark => "sticky-mark",
            Bug::ClearLinkedBeforeReadLink => "clear-linked-before-read-link",
            Bug::UnmaskIgnoresPending => "unmask-ignores-pending",
            Bug::HandleMaskedEvent => "handle-masked-event",
            Bug::LateEoiClearsActiveAtAck => "lateeoi-clears-active-at-ack",
            Bug::EoiWhileHandlerRuns => "eoi-while-handler-runs",
            Bug::EoiUnmaskApart => "eoi-unmask-apart",
            Bug::FlagTestedBeforeWord => "flag-tested-before-word",
            Bug::SendWithoutBarrier => "send-without-barrier",
            Bug::GiveUpWithoutBarrier => "give-up-without-barrier",
            Bug::SetFromLinuxCpuNumbers => "set-from-linux-cpu-numbers",
            Bug::OfflineCpuLeftInSet => "offline-cpu-left-in-set",
            Bug::DeadCpuDropsEvent => "dead-cpu-drops-event",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// The set of bugs switched on; empty in every real run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs(u32);

impl Bugs {
    pub const NONE: Bugs = Bugs(0);

    pub const fn only(bug: Bug) -> Bugs {
        Bugs(1 << bug as u32)
    }

    #[inline]
    pub const fn has(self, bug: Bug) -> bool {
        self.0 & (1 << bug as u32) != 0
    }
}

impl Bugs {
    /// The guest library's faults among these bugs: the consumer and unmask
    /// are `evroute-guest`'s code, which knows its own three.
    pub const fn guest(self) -> evroute_guest::Faults {
        use evroute_guest::{Fault, Faults};
        let mut f = Faults::NONE;
        if self.has(Bug::ClearLinkedBeforeReadLink) {
            f = f.with(Fault::ClearLinkedBeforeReadLink);
        }
        if self.has(Bug::UnmaskIgnoresPending) {
            f = f.with(Fault::UnmaskIgnoresPending);
        }
        if self.has(Bug::HandleMaskedEvent) {
            f = f.with(Fault::HandleMaskedEvent);
        }
        f
    }
}
