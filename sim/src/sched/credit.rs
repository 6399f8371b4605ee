//! credit (credit1): 30 ms time slices; every 10 ms tick the running vCPU
//! pays for its time and loses BOOST; every 30 ms the period's CPU time is
//! shared out as credit among the active vCPUs (`csched_acct`). Priority:
//! BOOST (woken with credit left) > UNDER (credit >= 0) > OVER. A woken
//! BOOST vCPU preempts a lower-priority one (`__runq_tickle`) once that one
//! has run for the rate limit. One runqueue (Xen's per-pCPU runqueues with
//! work stealing behave alike for these purposes).

use super::{Pcpu, PcpuView, Pick, Scheduler, VcpuId};
use crate::scenario::{Ns, MS};

const TICK: Ns = 10 * MS;
const TICKS_PER_ACCT: u64 = 3;
const TSLICE: Ns = 30 * MS;
/// The most credit a vCPU keeps (one time slice); above it, it is inactive.
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

    /// `csched_acct`: the period's CPU time, shared equally among the vCPUs
    /// that were not blocked, capped at one slice each.
    fn account(&mut self) {
        let active: Vec<VcpuId> = (0..self.credit.len()).filter(|&v| !self.blocked[v]).collect();
        if active.is_empty() {
            return;
        }
        let fair = ((TICK * TICKS_PER_ACCT) as i64 * self.nr_pcpus as i64 / active.len() as i64).min(CREDIT_CAP);
        for v in active {
            self.credit[v] = (self.credit[v] + fair).min(CREDIT_CAP);
            self.update_pri(v);
        }
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

    fn schedule(&mut self, _p: Pcpu, now: Ns, prev: Option<(VcpuId, bool)>) -> Pick {
        let mut keep = None;
        if let Some((v, runnable)) = prev {
            self.burn(v, now);
            self.update_pri(v);
            if !runnable {
                self.blocked[v] = true;
            } else if now < self.entered[v] + self.ratelimit
                || self.runq.first().is_none_or(|&h| self.pri[h] < self.pri[v])
            {
                keep = Some(v);
            } else {
                self.insert(v);
            }
        }
        let next = keep.or_else(|| (!self.runq.is_empty()).then(|| self.runq.remove(0)));
        let Some(v) = next else { return Pick { next: None, slice: None } };
        if keep.is_none() {
            self.entered[v] = now;
            self.burnt_to[v] = now;
        }
        let slice =
            if now < self.entered[v] + self.ratelimit { self.entered[v] + self.ratelimit - now } else { TSLICE };
        Pick { next: Some(v), slice: Some(slice) }
    }

    fn tick_period(&self) -> Option<Ns> {
        Some(TICK)
    }

    fn tick(&mut self, now: Ns, pcpus: &[PcpuView]) -> Vec<Pcpu> {
        for c in pcpus {
            if let Some(v) = c.cur {
                // `csched_unit_acct`: BOOST lasts until the first tick.
                if self.pri[v] == Pri::Boost {
                    self.pri[v] = Pri::Under;
                }
                self.burn(v, now);
                self.update_pri(v);
            }
        }
        self.ticks += 1;
        if self.ticks % TICKS_PER_ACCT == 0 {
            self.account();
        }
        // A queued vCPU now outranks a running one: that pCPU decides again.
        let head = self.runq.first().map(|&h| self.pri[h]);
        pcpus
            .iter()
            .enumerate()
            .filter(|(_, c)| c.cur.is_some_and(|v| head.is_some_and(|h| h > self.pri[v])))
            .map(|(p, _)| p)
            .collect()
    }
}
