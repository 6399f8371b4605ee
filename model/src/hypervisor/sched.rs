//! What routing reads of the scheduler: per-domain bitmaps of running,
//! blocked and online vCPUs, and the bounded load signal of `Balanced`.
//!
//! Xen keeps these in `vcpu_runstate_change()`; readers take them without a
//! lock. Every access is Relaxed: a stale bit can only make a worse choice,
//! never break a FIFO rule, which holds for whatever vCPU is chosen.

use crate::route::Bits;
use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// A vCPU's scheduling state as routing sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    /// On a pCPU now.
    Running,
    /// Runnable but preempted: waits for its next time slice.
    Runnable,
    /// Halted until an event (or timer) wakes it.
    Blocked,
    /// Down or never brought up (`_VPF_down`).
    Offline,
}

/// Events routed to one vCPU since its queues were last found drained (or it
/// blocked), at which it counts as heavy for `Balanced`. Bounded so the
/// signal costs one byte.
pub const LOAD_BOUND: u8 = 8;

pub struct Sched {
    pub running: Box<[AtomicU64]>,
    pub blocked: Box<[AtomicU64]>,
    pub online: Box<[AtomicU64]>,
    pub heavy: Box<[AtomicU64]>,
    load: Box<[AtomicU8]>,
    /// Notifications sent (`vcpu_mark_events_pending` found the flag clear).
    kicks: Box<[AtomicU32]>,
}

impl Bits for [AtomicU64] {
    fn nwords(&self) -> usize {
        self.len()
    }
    fn word(&self, i: usize) -> u64 {
        self[i].load(Ordering::Relaxed)
    }
}

fn words(nr_vcpus: u32) -> Box<[AtomicU64]> {
    (0..nr_vcpus.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()
}

fn put(mask: &[AtomicU64], v: u32, on: bool) {
    let (i, bit) = ((v / 64) as usize, 1u64 << (v % 64));
    if on {
        mask[i].fetch_or(bit, Ordering::Relaxed);
    } else {
        mask[i].fetch_and(!bit, Ordering::Relaxed);
    }
}

impl Sched {
    /// Every vCPU online and running.
    pub fn new(nr_vcpus: u32) -> Self {
        let s = Sched {
            running: words(nr_vcpus),
            blocked: words(nr_vcpus),
            online: words(nr_vcpus),
            heavy: words(nr_vcpus),
            load: (0..nr_vcpus).map(|_| AtomicU8::new(0)).collect(),
            kicks: (0..nr_vcpus).map(|_| AtomicU32::new(0)).collect(),
        };
        for v in 0..nr_vcpus {
            put(&s.online, v, true);
            put(&s.running, v, true);
        }
        s
    }

    /// The hook Xen's `vcpu_runstate_change()` calls.
    pub fn set_state(&self, v: u32, state: RunState) {
        put(&self.running, v, state == RunState::Running);
        put(&self.blocked, v, state == RunState::Blocked);
        put(&self.online, v, state != RunState::Offline);
        if state == RunState::Blocked {
            // A vCPU only blocks with its queues drained.
            self.set_load(v, 0);
        }
    }

    pub fn state(&self, v: u32) -> RunState {
        let bit = |m: &[AtomicU64]| crate::route::test_bit(m, v);
        match (bit(&self.online), bit(&self.running), bit(&self.blocked)) {
            (false, _, _) => RunState::Offline,
            (_, true, _) => RunState::Running,
            (_, _, true) => RunState::Blocked,
            _ => RunState::Runnable,
        }
    }

    pub fn is_online(&self, v: u32) -> bool {
        crate::route::test_bit(&self.online[..], v)
    }

    /// An event was routed to `v`; `fresh` if `v` had drained every queue
    /// (its READY word was empty).
    pub fn note_routed(&self, v: u32, fresh: bool) {
        let load = if fresh { 1 } else { self.load[v as usize].load(Ordering::Relaxed).saturating_add(1) };
        self.set_load(v, load.min(LOAD_BOUND));
    }

    fn set_load(&self, v: u32, load: u8) {
        let was_heavy = self.load[v as usize].swap(load, Ordering::Relaxed) >= LOAD_BOUND;
        // The shared bitmap changes only when the bound is crossed.
        if (load >= LOAD_BOUND) != was_heavy {
            put(&self.heavy, v, load >= LOAD_BOUND);
        }
    }

    pub fn note_kick(&self, v: u32) {
        self.kicks[v as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn kicks(&self, v: u32) -> u32 {
        self.kicks[v as usize].load(Ordering::Relaxed)
    }
}
