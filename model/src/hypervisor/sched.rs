//! What routing reads of the scheduler and of the FIFO set-up, per domain:
//! bitmaps of running, blocked and receivable vCPUs, and the decaying load
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

/// `Balanced`'s load of a vCPU: the events routed to it, halved at every
/// period boundary; at this bound it counts as heavy. Kept below the bound
/// by about 4 events a period, so a vCPU must take that many, period after
/// period, to stay heavy; a period without events clears the mark at the
/// next period's first decision.
pub const LOAD_BOUND: u8 = 8;

/// A period is 2^20 ns (about a millisecond) of Xen's `NOW()`: a load
/// halves once per period that passes.
pub const LOAD_PERIOD_SHIFT: u32 = 20;

/// Periods are counted modulo 2^24: the load word is `period << 8 | count`.
pub const PERIOD_MASK: u32 = (1 << 24) - 1;

/// The period of a time in ns (Xen: `NOW()`).
pub fn period_of(ns: u64) -> u32 {
    (ns >> LOAD_PERIOD_SHIFT) as u32 & PERIOD_MASK
}

/// A load word: the period it was last brought up to date in, and the count.
fn unpack(w: u32) -> (u32, u8) {
    (w >> 8, w as u8)
}

fn pack(period: u32, count: u8) -> u32 {
    (period & PERIOD_MASK) << 8 | u32::from(count)
}

/// How far (in periods) a load or the domain's period may be ahead of a
/// caller's clock and still count as "later": a CPU that read `NOW()` just
/// before another moved on. Anything further ahead is taken for a stamp
/// from a wrap (2^24 periods, 4.9 hours) ago: a caller more than this far
/// behind the others (held up for periods) decays loads it should not, and
/// a stamp within this of a whole wrap old counts as current. Both only
/// make the hint wrong for a period.
pub const LOAD_SKEW: u32 = 1;

/// Is period `at` up to `LOAD_SKEW` periods after `now` (modulo 2^24)?
fn ahead(at: u32, now: u32) -> bool {
    let d = at.wrapping_sub(now) & PERIOD_MASK;
    d != 0 && d <= LOAD_SKEW
}

/// The count of load word `w` brought to period `now`: halved once per
/// period since its own. A word from a slightly later period than `now`
/// (see `LOAD_SKEW`) is left as it is.
fn decayed(w: u32, now: u32) -> (u32, u8) {
    let (at, count) = unpack(w);
    if ahead(at, now) {
        return (at, count);
    }
    let elapsed = now.wrapping_sub(at) & PERIOD_MASK;
    (now, if elapsed >= 8 { 0 } else { count >> elapsed })
}

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
    /// Per vCPU, `period << 8 | count` (see `decayed`).
    load: Box<[AtomicU32]>,
    /// The latest period a `Balanced` decision of this domain started in.
    period: AtomicU32,
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
            load: (0..nr_vcpus).map(|_| AtomicU32::new(0)).collect(),
            period: AtomicU32::new(0),
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

    /// A `Balanced` decision starts in period `now`: the first one of a new
    /// period brings every heavy vCPU's load up to date, which halves it
    /// below the bound (`route_new_period()`). Costs O(words) and one update
    /// per heavy vCPU, once per period, each paid for by at least
    /// `LOAD_BOUND / 2` events routed to that vCPU since its load was last
    /// halved. A light vCPU's load decays when next touched.
    pub fn new_period(&self, now: u32) {
        let mut seen = self.period.load(Ordering::Relaxed);
        // Never back: a caller whose clock is behind leaves it to the others.
        // One CPU per period sweeps; a loser to a CPU still behind retries.
        // Relaxed: the loads are hints, changed by their own atomics.
        loop {
            if seen == now || ahead(seen, now) {
                return;
            }
            match self.period.compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(s) => seen = s,
            }
        }
        if self.bugs.has(Bug::StickyMark) {
            // The mistake: decay only when an event comes, and Balanced
            // sends none to a heavy vCPU, so its mark never clears.
            return;
        }
        for (i, word) in self.heavy.iter().enumerate() {
            let mut w = word.load(Ordering::Relaxed);
            while w != 0 {
                let v = (i * 64) as u32 + w.trailing_zeros();
                w &= w - 1;
                self.add_load(v, now, 0);
            }
        }
    }

    /// An event was routed to `v` in period `now` (`route_load_add()`).
    pub fn note_routed(&self, v: u32, now: u32) {
        self.add_load(v, now, 1);
    }

    /// Bring `v`'s load to period `now` and add `n` events, up to the bound.
    fn add_load(&self, v: u32, now: u32, n: u8) {
        let load = &self.load[v as usize];
        let mut old = load.load(Ordering::Relaxed);
        let (before, after) = loop {
            let (at, count) = decayed(old, now);
            let new = pack(at, count.saturating_add(n).min(LOAD_BOUND));
            if new == old {
                return;
            }
            // Relaxed: the count is a hint; the toggle below keeps the bit
            // consistent whatever order two changes take.
            match load.compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break (unpack(old).1, unpack(new).1),
                // Another CPU's change took effect first: build on it.
                Err(seen) => old = seen,
            }
        };
        self.load_crossed(v, before, after);
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

    /// `v`'s stored count (not brought up to date).
    pub fn load(&self, v: u32) -> u8 {
        unpack(self.load[v as usize].load(Ordering::Relaxed)).1
    }

    /// The period `v`'s load was last brought up to date in.
    pub fn load_period(&self, v: u32) -> u32 {
        unpack(self.load[v as usize].load(Ordering::Relaxed)).0
    }

    /// The latest period a decision of this domain started in.
    pub fn period(&self) -> u32 {
        self.period.load(Ordering::Relaxed)
    }

    pub fn note_kick(&self, v: u32) {
        self.kicks[v as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn kicks(&self, v: u32) -> u32 {
        self.kicks[v as usize].load(Ordering::Relaxed)
    }
}
