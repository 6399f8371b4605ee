//! credit2 (Xen's default): every vCPU burns credit as it runs; the runnable
//! vCPU with the most credit runs; when the one picked has none left, every
//! vCPU's credit is topped up (`reset_credit`). A waking vCPU preempts the
//! running vCPU with the least credit if it has more by the migration
//! resistance (`runq_tickle`, `tickle_score`), but not one that has run for
//! less than the rate limit. One runqueue (Xen has one per socket).

use super::{Pcpu, PcpuView, Pick, Scheduler, VcpuId};
use crate::scenario::{Ns, MS, US};

/// `CSCHED2_CREDIT_INIT`: credit is in ns of run time (equal weights).
const CREDIT_INIT: i64 = 10 * MS as i64;
const CREDIT_MIN: i64 = -CREDIT_INIT;
const CARRYOVER_MAX: i64 = 500 * US as i64;
const MIN_TIMER: Ns = 500 * US;
const MAX_TIMER: Ns = CREDIT_INIT as Ns;
/// `opt_migrate_resist`, 500 µs.
const MIGRATE_RESIST: i64 = 500 * US as i64;

pub struct Credit2 {
    credit: Vec<i64>,
    /// When the vCPU was last put on its pCPU (for the rate limit) ...
    entered: Vec<Ns>,
    /// ... and when its credit was last burnt.
    burnt_to: Vec<Ns>,
    last_pcpu: Vec<Option<Pcpu>>,
    /// Runnable, not running; in insertion order, which breaks credit ties.
    runq: Vec<VcpuId>,
    ratelimit: Ns,
}

impl Credit2 {
    pub fn new(n: usize, ratelimit: Ns) -> Self {
        Credit2 {
            credit: vec![CREDIT_INIT; n],
            entered: vec![0; n],
            burnt_to: vec![0; n],
            last_pcpu: vec![None; n],
            runq: Vec::new(),
            ratelimit,
        }
    }

    fn burn(&mut self, v: VcpuId, now: Ns) {
        let ran = now.saturating_sub(self.burnt_to[v]) as i64;
        self.credit[v] = (self.credit[v] - ran).max(CREDIT_MIN);
        self.burnt_to[v] = now;
    }

    /// The runqueue's best: most credit, first inserted on ties.
    fn best(&self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, &v) in self.runq.iter().enumerate() {
            if best.is_none_or(|b| self.credit[v] > self.credit[self.runq[b]]) {
                best = Some(i);
            }
        }
        best
    }

    /// Every vCPU gets `CREDIT_INIT` more (running ones burn what they ran
    /// since lazily; the sum is the same), clipped to the carry-over.
    fn reset_credit(&mut self, picked: VcpuId) {
        let reset = if self.credit[picked] == CREDIT_MIN { 2 * CREDIT_INIT } else { CREDIT_INIT };
        for c in &mut self.credit {
            *c = (*c + reset).min(CREDIT_INIT + CARRYOVER_MAX);
        }
    }

    /// `csched2_runtime`: until its credit meets the next waiter's, within
    /// [max(MIN_TIMER, rest of the rate limit), MAX_TIMER].
    fn runtime(&self, v: VcpuId, now: Ns) -> Ns {
        let mut rt = self.credit[v];
        if let Some(b) = self.best() {
            let w = self.credit[self.runq[b]];
            if w > 0 {
                rt = self.credit[v] - w;
            }
        }
        let min = MIN_TIMER.max((self.entered[v] + self.ratelimit).saturating_sub(now));
        (rt.max(0) as Ns).clamp(min, MAX_TIMER.max(min))
    }
}

impl Scheduler for Credit2 {
    /// Nothing waits in the (one) runqueue.
    fn idle_on_block(&self, _p: Pcpu) -> bool {
        self.runq.is_empty()
    }

    fn wake(&mut self, v: VcpuId, now: Ns, pcpus: &[PcpuView]) -> Option<(Pcpu, Ns)> {
        self.runq.push(v);
        // An idle pCPU first, the one it last ran on if that is idle.
        if let Some(p) = self.last_pcpu[v].filter(|&p| pcpus[p].free()) {
            return Some((p, now));
        }
        if let Some(p) = pcpus.iter().position(PcpuView::free) {
            return Some((p, now));
        }
        // Else preempt the vCPU it beats by the most (`tickle_score`).
        let mut max = (0i64, None);
        for (p, c) in pcpus.iter().enumerate() {
            let Some(cur) = c.cur.filter(|_| !c.tickled) else { continue };
            if now < self.entered[cur] + self.ratelimit {
                continue; // not preemptable yet
            }
            self.burn(cur, now);
            let mut score = self.credit[v] - self.credit[cur];
            if self.last_pcpu[v] != Some(p) {
                score -= MIGRATE_RESIST;
            }
            if score > max.0 {
                max = (score, Some(p));
            }
        }
        max.1.map(|p| (p, now))
    }

    fn schedule(&mut self, p: Pcpu, now: Ns, prev: Option<(VcpuId, bool)>) -> Pick {
        let mut keep = None;
        if let Some((v, runnable)) = prev {
            self.burn(v, now);
            if runnable {
                let best = self.best().map(|b| self.credit[self.runq[b]]);
                // The rate limit keeps it on; so does having the most credit.
                if now < self.entered[v] + self.ratelimit || best.is_none_or(|c| self.credit[v] >= c) {
                    keep = Some(v);
                } else {
                    self.runq.push(v);
                }
            }
        }
        let next = match keep {
            Some(v) => Some(v),
            None => self.best().map(|b| self.runq.remove(b)),
        };
        let Some(v) = next else { return Pick { next: None, slice: None } };
        if self.credit[v] <= 0 {
            self.reset_credit(v);
        }
        if keep.is_none() {
            self.entered[v] = now;
            self.burnt_to[v] = now;
        }
        self.last_pcpu[v] = Some(p);
        Pick { next: Some(v), slice: Some(self.runtime(v, now)) }
    }
}
