//! What routing reads of the scheduler and of the FIFO set-up, per domain:
//! bitmaps of running, blocked and receivable vCPUs, and the bounded load
//! signal of `Balanced` (`struct evtchn_route_domain` in the Xen patch).
//!
//! Xen keeps them in `vcpu_runstate_change()` and the FIFO control-block
//! mapping; readers take them without a lock. The masks are hints (a stale
//! bit can only make a worse choice, never break a FIFO rule) except
//! `receivable`, which must never hold a vCPU that cannot take an event:
//! it is written under `lock`, after what it describes.

use crate::bugs::{Bug, Bugs};
use crate::route::Bits;
use crate::sync::{lock, AtomicU32, AtomicU64, AtomicU8, Mutex, Ordering};

/// A vCPU's scheduling state as routing sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    /// On a pCPU now.
    Running,
    /// Runnable but preempted: waits for its next time slice.
    Runnable,
    /// Halted until an event (or timer) wakes it.
    Blocked,
    /// Down, never brought up, or paused (`RUNSTATE_offline`).
    Offline,
}

/// Events routed to one vCPU while it had not drained its queues, at which
/// it counts as heavy for `Balanced`. Bounded so the signal costs one byte.
pub const LOAD_BOUND: u8 = 8;

/// Per-vCPU flags (`ROUTE_*` in the Xen patch); a vCPU is receivable when
/// it has all of them. The model has no HVM callback, so every vCPU is
/// reached by an upcall.
const MAPPED: u8 = 1 << 0;
const ONLINE: u8 = 1 << 2;
const RECEIVES: u8 = MAPPED | ONLINE;

pub struct Sched {
    pub running: Box<[AtomicU64]>,
    pub blocked: Box<[AtomicU64]>,
    pub heavy: Box<[AtomicU64]>,
    /// vCPUs with every flag: online with a control block mapped.
    pub receivable: Box<[AtomicU64]>,
    /// Serialises changes of a vCPU's flags and its receivable bit.
    lock: Mutex<()>,
    flags: Box<[AtomicU8]>,
    load: Box<[AtomicU8]>,
    /// Notifications sent (`vcpu_mark_events_pending` found the flag clear).
    kicks: Box<[AtomicU32]>,
    bugs: Bugs,
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

/// Set or clear bit `v` (an atomic read-modify-write, like Xen's set_bit).
fn put(mask: &[AtomicU64], v: u32, on: bool) {
    let (i, bit) = ((v / 64) as usize, 1u64 << (v % 64));
    if on {
        mask[i].fetch_or(bit, Ordering::Relaxed);
    } else {
        mask[i].fetch_and(!bit, Ordering::Relaxed);
    }
}

impl Sched {
    /// Every vCPU online, running, its control block mapped.
    pub fn new(nr_vcpus: u32) -> Self {
        Self::with(nr_vcpus, 0, Bugs::NONE)
    }

    /// As [`Sched::new`], but the vCPUs of `unmapped` (of the first 64) have
    /// not mapped their control block yet.
    pub fn with(nr_vcpus: u32, unmapped: u64, bugs: Bugs) -> Self {
        let s = Sched {
            running: words(nr_vcpus),
            blocked: words(nr_vcpus),
            heavy: words(nr_vcpus),
            receivable: words(nr_vcpus),
            lock: Mutex::new(()),
            flags: (0..nr_vcpus).map(|_| AtomicU8::new(ONLINE)).collect(),
            load: (0..nr_vcpus).map(|_| AtomicU8::new(0)).collect(),
            kicks: (0..nr_vcpus).map(|_| AtomicU32::new(0)).collect(),
            bugs,
        };
        for v in 0..nr_vcpus {
            put(&s.running, v, true);
            let mapped = v >= 64 || unmapped & (1 << v) == 0;
            s.flag(v, MAPPED, mapped);
        }
        s
    }

    /// `route_flag()`: change one flag of `v` and its receivable bit.
    fn flag(&self, v: u32, flag: u8, on: bool) {
        let _g = lock(&self.lock);
        let f = self.flags[v as usize].load(Ordering::Relaxed);
        let f = if on { f | flag } else { f & !flag };
        self.flags[v as usize].store(f, Ordering::Relaxed);
        // Release: what the flag describes (a mapped control block) is
        // visible before the bit; pairs with the Acquire in `can_take`.
        let (i, bit) = ((v / 64) as usize, 1u64 << (v % 64));
        if f == RECEIVES {
            self.receivable[i].fetch_or(bit, Ordering::Release);
        } else {
            self.receivable[i].fetch_and(!bit, Ordering::Release);
        }
    }

    /// The hook Xen's `vcpu_runstate_change()` calls.
    pub fn set_state(&self, v: u32, state: RunState) {
        put(&self.running, v, state == RunState::Running);
        put(&self.blocked, v, state == RunState::Blocked);
        let online = state != RunState::Offline;
        if (self.flags[v as usize].load(Ordering::Relaxed) & ONLINE != 0) != online {
            self.flag(v, ONLINE, online);
        }
    }

    /// `EVTCHNOP_init_control` mapped `v`'s control block.
    pub fn map_control_block(&self, v: u32) {
        self.flag(v, MAPPED, true);
    }

    pub fn state(&self, v: u32) -> RunState {
        let bit = |m: &[AtomicU64]| crate::route::test_bit(m, v);
        if self.flags[v as usize].load(Ordering::Relaxed) & ONLINE == 0 {
            return RunState::Offline;
        }
        match (bit(&self.running), bit(&self.blocked)) {
            (true, _) => RunState::Running,
            (_, true) => RunState::Blocked,
            _ => RunState::Runnable,
        }
    }

    /// Has `v` mapped its control block (`evtchn_fifo_vcpu_mapped()`)?
    pub fn is_mapped(&self, v: u32) -> bool {
        self.flags[v as usize].load(Ordering::Relaxed) & MAPPED != 0
    }

    /// Can `v` take an event: is it in `receivable`? Acquire: a set bit
    /// means its control block is mapped (pairs with `flag`'s Release;
    /// Xen's smp_rmb() in evtchn_route_vcpu()).
    pub fn can_take(&self, v: u32) -> bool {
        self.receivable[(v / 64) as usize].load(Ordering::Acquire) & (1 << (v % 64)) != 0
    }

    /// An event was routed to `v`. Its count restarts at 1 if `v` had
    /// drained every queue (its READY word was empty), else it grows up to
    /// the bound (`evtchn_route_loaded()`).
    pub fn note_routed(&self, v: u32, drained: bool) {
        let load = &self.load[v as usize];
        let mut old = load.load(Ordering::Relaxed);
        let new = loop {
            let new = if drained { 1 } else { old.saturating_add(1).min(LOAD_BOUND) };
            if new == old {
                return;
            }
            // Relaxed: the count is a hint; the toggle below keeps the bit
            // consistent whatever order two changes take.
            match load.compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break new,
                // Another CPU's change took effect first: build on it.
                Err(seen) => old = seen,
            }
        };
        self.load_crossed(v, old, new);
    }

    /// `v` was seen with every queue drained (its READY word empty): its
    /// count restarts (`evtchn_route_drained()`). Blocking says nothing of
    /// its queues (SCHEDOP_poll, or halting with events disabled).
    pub fn drained(&self, v: u32) {
        let old = self.load[v as usize].swap(0, Ordering::Relaxed);
        self.load_crossed(v, old, 0);
    }

    /// A change of the count from `old` to `new` crossed the bound: toggle
    /// the heavy bit. Crossings alternate in the order the count's changes
    /// take effect, and toggles commute, so the bit ends equal to
    /// `load >= LOAD_BOUND` however two changes interleave.
    fn load_crossed(&self, v: u32, old: u8, new: u8) {
        if (old >= LOAD_BOUND) == (new >= LOAD_BOUND) {
            return;
        }
        let (i, bit) = ((v / 64) as usize, 1u64 << (v % 64));
        if self.bugs.has(Bug::HeavySetOrClear) {
            // The mistake: set or clear after the fact. A set delayed past a
            // later clear leaves a light vCPU marked heavy.
            put(&self.heavy, v, new >= LOAD_BOUND);
        } else {
            self.heavy[i].fetch_xor(bit, Ordering::Relaxed);
        }
    }

    pub fn is_heavy(&self, v: u32) -> bool {
        crate::route::test_bit(&self.heavy[..], v)
    }

    pub fn load(&self, v: u32) -> u8 {
        self.load[v as usize].load(Ordering::Relaxed)
    }

    pub fn note_kick(&self, v: u32) {
        self.kicks[v as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn kicks(&self, v: u32) -> u32 {
        self.kicks[v as usize].load(Ordering::Relaxed)
    }
}
