//! credit2 (Xen's default): every vCPU burns credit as it runs; the runnable
//! vCPU with the most credit runs; when the one picked has none left, every
//! vCPU's credit is topped up (`reset_credit`). A waking vCPU preempts the
//! running vCPU with the least credit if it has more by the migration
//! resistance (`runq_tickle`, `tickle_score`), but not one that has run for
//! less than the rate limit. At a slice's end a waiting vCPU that last ran
//! on another pCPU takes over only with the migration resistance more
//! credit than the current one (`runq_candidate`). One runqueue (Xen has
//! one per socket).
//!
//! Slice jitter: on Xen no two pCPUs end their slices at the same instant
//! (timer interrupt latency, the schedule path's own time); here slices
//! that start together would end together for ever, descheduling a guest's
//! vCPUs as a block. Each slice gets a uniform 0-50 µs more, drawn from
//! the scenario's seed: 50 µs is the scale of credit2's own tolerances
//! (a tenth of `CSCHED2_MIN_TIMER`), so slice lengths barely change.

use super::{Pcpu, PcpuView, Pick, Scheduler, VcpuId};
use crate::scenario::{Ns, MS, US};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// `CSCHED2_CREDIT_INIT`: credit is in ns of run time (equal weights).
const CREDIT_INIT: i64 = 10 * MS as i64;
const CREDIT_MIN: i64 = -CREDIT_INIT;
const CARRYOVER_MAX: i64 = 500 * US as i64;
const MIN_TIMER: Ns = 500 * US;
const MAX_TIMER: Ns = CREDIT_INIT as Ns;
/// `opt_migrate_resist`, 500 µs.
const MIGRATE_RESIST: i64 = 500 * US as i64;
/// The most jitter added to a slice.
const JITTER: Ns = 50 * US;

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
    jitter: SmallRng,
}

impl Credit2 {
    pub fn new(n: usize, ratelimit: Ns, seed: u64) -> Self {
        Credit2 {
            credit: vec![CREDIT_INIT; n],
            entered: vec![0; n],
            burnt_to: vec![0; n],
            last_pcpu: vec![None; n],
            runq: Vec::new(),
            ratelimit,
            jitter: SmallRng::seed_from_u64(seed ^ 0xc2c2_c2c2_c2c2_c2c2),
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
                // `runq_candidate`: a waiter that last ran elsewhere needs
                // the migration resistance more credit to take over.
                let best = self
                    .runq
                    .iter()
                    .map(|&w| self.credit[w] - if self.last_pcpu[w] == Some(p) { 0 } else { MIGRATE_RESIST })
                    .max();
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
        let slice = self.runtime(v, now) + self.jitter.random_range(0..=JITTER);
        Pick { next: Some(v), slice: Some(slice) }
    }
}

/// Decisions against the `sched/credit2.c` functions they follow.
#[cfg(test)]
mod tests {
    use super::*;

    fn views(cur: &[Option<VcpuId>]) -> Vec<PcpuView> {
        cur.iter().map(|&cur| PcpuView { cur, tickled: false }).collect()
    }

    /// Two vCPUs; vCPU 0 woke and was picked on pCPU 0 at 0.
    fn zero_running() -> Credit2 {
        let mut c = Credit2::new(2, MS, 1);
        c.wake(0, 0, &views(&[None]));
        c.schedule(0, 0, None);
        c
    }

    /// Two pCPUs that pick at the same instant do not end their slices at
    /// the same instant; each slice is `csched2_runtime`'s plus 0-50 µs.
    #[test]
    fn slices_that_start_together_do_not_end_together() {
        let mut c = Credit2::new(4, MS, 1);
        for v in 0..4 {
            c.wake(v, 0, &views(&[None, None]));
        }
        let (a, b) = (c.schedule(0, 0, None), c.schedule(1, 0, None));
        let (sa, sb) = (a.slice.unwrap(), b.slice.unwrap());
        assert_ne!(sa, sb, "lock-step slices");
        for s in [sa, sb] {
            assert!((MIN_TIMER..=MIN_TIMER.max(MS) + JITTER).contains(&s), "slice {s}");
        }
    }

    /// `tickle_score` → `is_preemptable`: a running vCPU inside the rate
    /// limit is not a candidate, so a waker that beats it by far still
    /// finds no pCPU and waits in the runqueue for a schedule.
    #[test]
    fn a_wake_never_tickles_a_vcpu_inside_the_rate_limit() {
        for (now, tickled) in [(300 * US, None), (2 * MS, Some((0, 2 * MS)))] {
            let mut c = zero_running();
            c.credit[1] = c.credit[0] + 2 * MS as i64;
            assert_eq!(c.wake(1, now, &views(&[Some(0)])), tickled, "woken at {now} ns");
        }
    }

    /// `runq_candidate`: at a slice's end a waiter that last ran on another
    /// pCPU takes over only with `opt_migrate_resist` (500 µs) more credit.
    #[test]
    fn a_waiter_from_another_pcpu_needs_the_migration_resistance() {
        for (extra, takes_over) in [(300 * US as i64, false), (600 * US as i64, true)] {
            let mut c = zero_running();
            c.last_pcpu[1] = Some(1);
            c.runq.push(1);
            let now = 2 * MS;
            c.burnt_to[0] = now; // nothing more to burn: credits as set
            c.credit[0] = 5 * MS as i64;
            c.credit[1] = c.credit[0] + extra;
            let pick = c.schedule(0, now, Some((0, true)));
            assert_eq!(pick.next == Some(1), takes_over, "{extra} ns more credit");
        }
    }
}
