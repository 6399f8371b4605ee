//! The dedicated-core notify path's wake protocol: a vCPU that waits for
//! an event in Xen, watching its pending word instead of blocking, and a
//! sender on another pCPU that skips the IPI when it sees the vCPU waiting,
//! as the write to the watched word is the notification.
//!
//! Waiter: set `waiting`, full barrier, watch the word until it is set or a
//! softirq ends the wait; then clear `waiting` and block as today
//! (`vcpu_block()`: set blocked, full barrier, check for events again).
//! Sender: write the word, full barrier, test `waiting`; only if clear,
//! kick (`vcpu_unblock()`: a blocked vCPU is woken).
//!
//! The two "store, full barrier, load the other's" pairs are Dekker's: at
//! least one side sees the other's store, so either the sender kicks or
//! the waiter sees the word. The seeded bugs test the flag before writing
//! the word, or after it without the barrier (the store may still sit in
//! the sender's store buffer): the waiter that gave up meanwhile sleeps on
//! an event.

use crate::bugs::{Bug, Bugs};
use crate::sync::{fence, spin_hint, AtomicBool, AtomicU32, Ordering};

/// One vCPU's watched word and its wait state, as Xen keeps them.
#[derive(Default)]
pub struct WaitWord {
    /// `evtchn_upcall_pending` (or a polled port's event word).
    pub word: AtomicU32,
    /// The vCPU waits in Xen on `word`: senders need not kick it.
    pub waiting: AtomicBool,
    /// `_VPF_blocked`: the vCPU is descheduled until a kick.
    pub blocked: AtomicBool,
    /// A sender's kick found it blocked and woke it.
    pub woken: AtomicBool,
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// The word was set while the vCPU watched it: back to the guest at
    /// once, no IPI, no schedule.
    Word,
    /// A softirq ended the watch; the event was found on the way to
    /// blocking (`vcpu_block()`'s check after setting blocked).
    Recheck,
    /// Blocked: runs again only when a sender's kick wakes it.
    Blocked,
}

impl WaitWord {
    /// The waiter, on the vCPU's own pCPU. `softirq` is this pCPU's
    /// pending softirq (another unit runnable, a timer): it ends the watch.
    pub fn wait(&self, softirq: &AtomicBool) -> WaitEnd {
        // Relaxed stores ordered by the fences: Xen's smp_mb().
        self.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        while !softirq.load(Ordering::Relaxed) {
            if self.word.load(Ordering::Relaxed) != 0 {
                self.waiting.store(false, Ordering::Relaxed);
                return WaitEnd::Word;
            }
            spin_hint();
        }
        self.waiting.store(false, Ordering::Relaxed);
        // vcpu_block(): blocked first, then check for events after a full
        // barrier, so a sender that missed `waiting` kicks a blocked vCPU.
        self.blocked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.word.load(Ordering::Relaxed) != 0 {
            self.blocked.store(false, Ordering::Relaxed);
            return WaitEnd::Recheck;
        }
        WaitEnd::Blocked
    }

    /// The sender, on another pCPU: set-pending's write, then the kick
    /// unless the vCPU watches the word.
    pub fn notify(&self, bugs: Bugs) {
        if bugs.has(Bug::FlagTestedBeforeWord) {
            let waiting = self.waiting.load(Ordering::Relaxed);
            self.word.store(1, Ordering::Relaxed);
            if !waiting {
                self.kick();
            }
            return;
        }
        self.word.store(1, Ordering::Relaxed);
        if !bugs.has(Bug::SendWithoutBarrier) {
            fence(Ordering::SeqCst);
        }
        if !self.waiting.load(Ordering::Relaxed) {
            self.kick();
        }
    }

    /// `vcpu_unblock()`: wake the vCPU if it is blocked.
    fn kick(&self) {
        // AcqRel: the woken vCPU sees the word written before the kick.
        if self.blocked.swap(false, Ordering::AcqRel) {
            self.woken.store(true, Ordering::Relaxed);
        }
    }
}
