//! The dedicated-core notify path's wake protocol (Xen's `evtchn-wait=`):
//! a vCPU that blocks or polls waits in Xen for a while instead of being
//! descheduled, and a sender on another pCPU that finds it waiting skips
//! the wake-up and the IPI.
//!
//! As Xen does it (`vcpu_block_wait()`/`do_poll()`, `evtchn_wait()`,
//! `vcpu_unblock()`, `vcpu_kick()` in the series):
//! - Waiter: set `_VPF_blocked`, full barrier, check for events (return
//!   if one is pending). Then the wait: set `evtchn_waiting`, full
//!   barrier, watch `_VPF_blocked` until it is clear (a wake-up: back to
//!   the guest) or a softirq ends the watch; clear `evtchn_waiting`, full
//!   barrier; the schedule then reads `_VPF_blocked` and deschedules the
//!   vCPU only if it is still set.
//! - Sender: write the pending word (a locked operation: a full barrier),
//!   then `vcpu_unblock()`: clear `_VPF_blocked` if set; full barrier;
//!   test `evtchn_waiting`: set, the waiter sees the bit clear and needs
//!   no wake-up; clear, `vcpu_wake()` as today.
//!
//! The watched word is `_VPF_blocked`, Xen's, not the guest's: a guest
//! cannot choose what Xen watches, and every wake-up clears it.
//! `evtchn_waiting` against `_VPF_blocked` is Dekker's pattern: store,
//! full barrier, load the other's, on both sides, so at least one side
//! sees the other's store (the waiter's store that counts is the clear of
//! `evtchn_waiting` when it gives up). The seeded bugs break it: the
//! sender tests the flag before its write, or has no barrier after the
//! clear; the waiter has none after giving up.

use crate::bugs::{Bug, Bugs};
use crate::sync::{fence, spin_hint, AtomicBool, AtomicU32, Ordering};

/// One vCPU's words, as Xen keeps them.
#[derive(Default)]
pub struct WaitWord {
    /// `evtchn_upcall_pending` (or a polled port's PENDING): what the
    /// vCPU's checks for events read.
    pub pending: AtomicU32,
    /// `_VPF_blocked`: set by the vCPU before its last check, cleared by
    /// any wake-up. The waiter watches it.
    pub blocked: AtomicBool,
    /// `evtchn_waiting`: the vCPU waits in Xen; a wake-up needs no
    /// `vcpu_wake()` and no IPI.
    pub waiting: AtomicBool,
    /// `vcpu_wake()` ran for a descheduled vCPU.
    pub woken: AtomicBool,
}

/// How a block ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// The check after setting `_VPF_blocked` found the event: no wait.
    Pending,
    /// A wake-up cleared `_VPF_blocked` during the wait: back to the guest
    /// at once, no IPI, no schedule.
    Woken,
    /// The wait ended (softirq); the schedule found `_VPF_blocked`
    /// already cleared: the vCPU runs on.
    Runnable,
    /// Descheduled: runs again only through `vcpu_wake()`.
    Descheduled,
}

impl WaitWord {
    /// The waiter, on the vCPU's own pCPU. `softirq` is this pCPU's
    /// pending softirq (another unit runnable, a timer): it ends the wait.
    pub fn block(&self, softirq: &AtomicBool, bugs: Bugs) -> WaitEnd {
        // Relaxed stores ordered by the fences: Xen's set_bit + smp_mb().
        self.blocked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.pending.load(Ordering::Relaxed) != 0 {
            self.blocked.store(false, Ordering::Relaxed);
            return WaitEnd::Pending;
        }
        self.waiting.store(true, Ordering::Relaxed);
        // Not needed for correctness (a sender that misses the flag wakes
        // the vCPU as today); it lets senders see the flag from the start.
        fence(Ordering::SeqCst);
        let woken = loop {
            // Acquire: the sender's pending write, made before its clear,
            // is seen on the way back to the guest.
            if !self.blocked.load(Ordering::Acquire) {
                break true;
            }
            if softirq.load(Ordering::Relaxed) {
                break false;
            }
            spin_hint();
        };
        self.waiting.store(false, Ordering::Relaxed);
        // The barrier Dekker's pattern needs: a sender that still read the
        // flag set cleared `_VPF_blocked` before, and the schedule sees it.
        if !bugs.has(Bug::GiveUpWithoutBarrier) {
            fence(Ordering::SeqCst);
        }
        if woken {
            return WaitEnd::Woken;
        }
        // schedule(): the unit is runnable unless still blocked.
        if !self.blocked.load(Ordering::Acquire) {
            return WaitEnd::Runnable;
        }
        WaitEnd::Descheduled
    }

    /// The sender, on another pCPU: set-pending's write, then
    /// `vcpu_kick()` → `vcpu_unblock()`.
    pub fn notify(&self, bugs: Bugs) {
        let early = bugs.has(Bug::FlagTestedBeforeWord).then(|| self.waiting.load(Ordering::Relaxed));
        // test_and_set_bit(): a locked operation, a full barrier.
        self.pending.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        // test_and_clear_bit(_VPF_blocked). AcqRel: the woken vCPU sees
        // the pending write made before it.
        if !self.blocked.swap(false, Ordering::AcqRel) {
            return;
        }
        if !bugs.has(Bug::SendWithoutBarrier) {
            fence(Ordering::SeqCst);
        }
        let waiting = early.unwrap_or_else(|| self.waiting.load(Ordering::Relaxed));
        if !waiting {
            // vcpu_wake().
            self.woken.store(true, Ordering::Relaxed);
        }
    }
}
