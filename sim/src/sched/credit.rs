//! credit (credit1), as Xen 4.17.5's `sched/credit.c`: a vCPU picked from
//! the runqueue runs a 30 ms slice; the rate limit only keeps the current
//! vCPU for the rest of it (`csched_schedule`). Every 10 ms tick the
//! running vCPU pays for its time, loses BOOST and joins the active list
//! if it was off it (`csched_tick` → `csched_unit_acct`), and the tick
//! never preempts. Every 30 ms the period's CPU time is shared out as
//! credit among the active vCPUs; one whose credit passes a slice's worth
//! leaves the list with its credit halved, and credit is bounded below by
//! minus a slice (`csched_acct`). Priorities, highest first: BOOST (woken
//! with credit left), UNDER (credit >= 0), OVER. A woken BOOST vCPU
//! preempts a lower-priority one (`__runq_tickle`) once that one has run
//! for the rate limit. One runqueue (Xen's per-pCPU runqueues with work
//! stealing behave alike for these purposes).

use super::{Pcpu, PcpuView, Pick, Scheduler, VcpuId};
use crate::scenario::{Ns, MS, US};

const TICK: Ns = 10 * MS;
const TICKS_PER_ACCT: u64 = 3;
const TSLICE: Ns = 30 * MS;
/// `CSCHED_MIN_TIMER` (`XEN_SYSCTL_SCHED_RATELIMIT_MIN`, 100 µs): the
/// shortest rest of a rate-limited slice.
const MIN_TIMER: Ns = 100 * US;
/// `credits_per_tslice`: above it a vCPU leaves the active list; below its
/// negative, credit is clipped.
const CREDIT_CAP: i64 = TSLICE as i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pri {
    Over = 0,
    Under = 1,
    Boost = 2,
}

pub struct Credit {
    credit: Vec<i64>,
    pri: Vec<Pri>,
    burnt_to: Vec<Ns>,
    entered: Vec<Ns>,
    blocked: Vec<bool>,
    /// On the active list: earns credit at each accounting.
    active: Vec<bool>,
    /// Runnable, not running: highest priority first, FIFO within one.
    runq: Vec<VcpuId>,
    nr_pcpus: usize,
    ratelimit: Ns,
    ticks: u64,
}

impl Credit {
    pub fn new(n: usize, nr_pcpus: usize, ratelimit: Ns) -> Self {
        Credit {
            credit: vec![0; n],
            pri: vec![Pri::Under; n],
            burnt_to: vec![0; n],
            entered: vec![0; n],
            blocked: vec![false; n],
            active: vec![false; n],
            runq: Vec::new(),
            nr_pcpus,
            ratelimit,
            ticks: 0,
        }
    }

    fn burn(&mut self, v: VcpuId, now: Ns) {
        self.credit[v] -= now.saturating_sub(self.burnt_to[v]) as i64;
        self.burnt_to[v] = now;
    }

    fn insert(&mut self, v: VcpuId) {
        let at = self.runq.iter().position(|&o| self.pri[o] < self.pri[v]).unwrap_or(self.runq.len());
        self.runq.insert(at, v);
    }

    fn update_pri(&mut self, v: VcpuId) {
        if self.credit[v] < 0 {
            self.pri[v] = Pri::Over;
        } else if self.pri[v] == Pri::Over {
            self.pri[v] = Pri::Under;
        }
    }

    /// `csched_acct`: the period's CPU time, shared equally among the
    /// active vCPUs (equal weights, no caps). Each gets UNDER or OVER by its
    /// credit; credit below minus a slice is clipped; one above a slice
    /// leaves the list, its credit halved.
    fn account(&mut self) {
        let active: Vec<VcpuId> = (0..self.credit.len()).filter(|&v| self.active[v]).collect();
        if active.is_empty() {
            return;
        }
        let fair = (TICK * TICKS_PER_ACCT) as i64 * self.nr_pcpus as i64 / active.len() as i64;
        for v in active {
            self.credit[v] = (self.credit[v] + fair).max(-CREDIT_CAP);
            self.pri[v] = if self.credit[v] < 0 { Pri::Over } else { Pri::Under };
            if self.credit[v] > CREDIT_CAP {
                self.active[v] = false;
                self.credit[v] /= 2;
            }
        }
        self.sort_runq();
    }

    /// `csched_runq_sort`: priorities changed, the runqueue follows.
    fn sort_runq(&mut self) {
        let pri = &self.pri;
        // Stable: FIFO within a priority.
        self.runq.sort_by_key(|&v| std::cmp::Reverse(pri[v]));
    }
}

impl Scheduler for Credit {
    /// Nothing waits in the (one) runqueue.
    fn idle_on_block(&self, _p: Pcpu) -> bool {
        self.runq.is_empty()
    }

    fn wake(&mut self, v: VcpuId, now: Ns, pcpus: &[PcpuView]) -> Option<(Pcpu, Ns)> {
        self.blocked[v] = false;
        self.update_pri(v);
        if self.pri[v] == Pri::Under {
            self.pri[v] = Pri::Boost;
        }
        self.insert(v);
        if let Some(p) = pcpus.iter().position(PcpuView::free) {
            return Some((p, now));
        }
        // Preempt the lowest-priority running vCPU below it, once the rate
        // limit lets it go.
        let (p, cur) = pcpus
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.tickled)
            .filter_map(|(p, c)| c.cur.map(|cur| (p, cur)))
            // The lowest priority; of those, the one on longest (rate limit).
            .min_by_key(|&(_, cur)| (self.pri[cur], self.entered[cur]))?;
        (self.pri[v] > self.pri[cur]).then(|| (p, now.max(self.entered[cur] + self.ratelimit)))
    }

    /// `csched_schedule`: a runnable current vCPU that has run less than
    /// the rate limit keeps the pCPU for the rest of it; otherwise the
    /// highest priority runs (the current one too, if nothing outranks it)
    /// for a full slice.
    fn schedule(&mut self, _p: Pcpu, now: Ns, prev: Option<(VcpuId, bool)>) -> Pick {
        if let Some((v, runnable)) = prev {
            self.burn(v, now);
            self.update_pri(v);
            if !runnable {
                self.blocked[v] = true;
            } else if now < self.entered[v] + self.ratelimit {
                let rest = (self.entered[v] + self.ratelimit - now).max(MIN_TIMER);
                return Pick { next: Some(v), slice: Some(rest) };
            } else if self.runq.first().is_none_or(|&h| self.pri[h] < self.pri[v]) {
                // Back on the runqueue and picked again: a new slice, and
                // it keeps its start (Xen restores `start_time`).
                return Pick { next: Some(v), slice: Some(TSLICE) };
            } else {
                self.insert(v);
            }
        }
        if self.runq.is_empty() {
            return Pick { next: None, slice: None };
        }
        let v = self.runq.remove(0);
        self.entered[v] = now;
        self.burnt_to[v] = now;
        Pick { next: Some(v), slice: Some(TSLICE) }
    }

    fn tick_period(&self) -> Option<Ns> {
        Some(TICK)
    }

    /// `csched_tick`: account the running vCPUs; it never preempts
    /// (a queued vCPU that now outranks one waits for its slice to end).
    fn tick(&mut self, now: Ns, pcpus: &[PcpuView]) -> Vec<Pcpu> {
        for c in pcpus {
            if let Some(v) = c.cur {
                // `csched_unit_acct`: BOOST lasts until the first tick; a
                // vCPU off the active list rejoins it.
                if self.pri[v] == Pri::Boost {
                    self.pri[v] = Pri::Under;
                }
                self.active[v] = true;
                self.burn(v, now);
                self.update_pri(v);
            }
        }
        self.ticks += 1;
        if self.ticks % TICKS_PER_ACCT == 0 {
            self.account();
        }
        Vec::new()
    }
}

/// Each decision against the `sched/credit.c` function it follows.
#[cfg(test)]
mod tests {
    use super::*;

    const RL: Ns = MS; // sched_ratelimit_us=1000

    fn busy(pcpus: &[Option<VcpuId>]) -> Vec<PcpuView> {
        pcpus.iter().map(|&cur| PcpuView { cur, tickled: false }).collect()
    }

    /// Two vCPUs on one pCPU; vCPU 0 woke and was picked at 0.
    fn zero_running() -> Credit {
        let mut c = Credit::new(2, 1, RL);
        c.wake(0, 0, &busy(&[None]));
        c.schedule(0, 0, None);
        c
    }

    /// `csched_schedule`: a vCPU picked from the runqueue runs `tslice`
    /// (30 ms), not the rest of the rate limit.
    #[test]
    fn a_new_pick_runs_a_whole_slice() {
        let mut c = Credit::new(2, 1, RL);
        c.wake(0, 0, &busy(&[None]));
        let pick = c.schedule(0, 0, None);
        assert_eq!((pick.next, pick.slice), (Some(0), Some(TSLICE)));
    }

    /// The rate-limit branch: the current vCPU, run 400 µs, keeps the pCPU
    /// for the other 600 µs even though a BOOST vCPU waits.
    #[test]
    fn the_rate_limit_keeps_only_the_current_vcpu_for_the_rest() {
        let mut c = zero_running();
        c.wake(1, 100 * US, &busy(&[Some(0)]));
        let pick = c.schedule(0, 400 * US, Some((0, true)));
        assert_eq!((pick.next, pick.slice), (Some(0), Some(600 * US)));
        // Past the rate limit the BOOST vCPU goes first, for a whole slice.
        let pick = c.schedule(0, 1_200 * US, Some((0, true)));
        assert_eq!((pick.next, pick.slice), (Some(1), Some(TSLICE)));
    }

    /// `csched_tick` accounts but never preempts: a queued vCPU that now
    /// outranks the running one waits for the slice to end.
    #[test]
    fn the_tick_never_preempts() {
        let mut c = zero_running();
        c.credit[0] = -5 * MS as i64; // OVER
        c.pri[0] = Pri::Over;
        c.blocked[1] = false;
        c.pri[1] = Pri::Under;
        c.insert(1);
        assert!(c.tick(TICK, &busy(&[Some(0)])).is_empty());
    }

    /// `csched_acct`: a vCPU whose credit passes a slice's worth leaves the
    /// active list with its credit halved, and earns nothing until it runs
    /// at a tick again (`csched_unit_acct`).
    #[test]
    fn a_vcpu_over_the_cap_leaves_the_active_list_halved() {
        let mut c = Credit::new(2, 1, RL);
        c.active = vec![true, true];
        c.credit[0] = CREDIT_CAP - 1_000;
        c.account();
        let fair = (TICK * TICKS_PER_ACCT) as i64 / 2;
        assert!(!c.active[0]);
        assert_eq!(c.credit[0], (CREDIT_CAP - 1_000 + fair) / 2);
        let before = c.credit[0];
        c.account();
        assert_eq!(c.credit[0], before, "off the list: no credit");
        c.tick(TICK, &busy(&[Some(0)]));
        assert!(c.active[0], "running at a tick: back on the list");
    }

    /// Credit is bounded below by minus a slice.
    #[test]
    fn credit_is_clipped_at_minus_a_slice() {
        let mut c = Credit::new(1, 1, RL);
        c.active[0] = true;
        c.credit[0] = -10 * CREDIT_CAP;
        c.account();
        assert_eq!(c.credit[0], -CREDIT_CAP);
        assert_eq!(c.pri[0], Pri::Over);
    }
}
