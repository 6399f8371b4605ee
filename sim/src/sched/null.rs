//! null: each vCPU owns one pCPU (assigned in creation order); a pCPU whose
//! vCPU is blocked idles. The scenario check refuses more vCPUs than pCPUs,
//! so Xen's wait queue for unassigned vCPUs never fills.

use super::{Pcpu, PcpuView, Pick, Scheduler, VcpuId};
use crate::scenario::Ns;

pub struct Null {
    /// pCPU p runs vCPU p.
    blocked: Vec<bool>,
    nr_pcpus: usize,
}

impl Null {
    pub fn new(n: usize, nr_pcpus: usize) -> Self {
        assert!(n <= nr_pcpus, "null scheduler: more vCPUs than pCPUs");
        Null { blocked: vec![false; n], nr_pcpus }
    }
}

impl Scheduler for Null {
    fn wake(&mut self, v: VcpuId, now: Ns, _pcpus: &[PcpuView]) -> Option<(Pcpu, Ns)> {
        self.blocked[v] = false;
        Some((v, now))
    }

    /// A pCPU runs its one vCPU or nothing.
    fn idle_on_block(&self, _p: Pcpu) -> bool {
        true
    }

    fn schedule(&mut self, p: Pcpu, _now: Ns, prev: Option<(VcpuId, bool)>) -> Pick {
        debug_assert!(p < self.nr_pcpus);
        if let Some((v, false)) = prev {
            self.blocked[v] = true;
        }
        let next = (p < self.blocked.len() && !self.blocked[p]).then_some(p);
        Pick { next, slice: None }
    }
}
