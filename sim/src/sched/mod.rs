//! Xen's schedulers, as the simulator's host runs them. Each keeps its own
//! runqueue of runnable vCPUs that are not on a pCPU; the host tells it when
//! a vCPU wakes and asks it what a pCPU runs next. Modelled from Xen 4.17's
//! `xen/common/sched/{credit2,credit,null}.c`; what each leaves out is in
//! `docs/sim.md`.

mod credit;
mod credit2;
mod null;

use crate::scenario::{Ns, SchedKind};

pub type VcpuId = usize;
pub type Pcpu = usize;

/// What a pCPU runs, as a scheduler sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct PcpuView {
    pub cur: Option<VcpuId>,
    /// Already told to decide again (Xen's `tickled` mask): a second waking
    /// vCPU must look for another pCPU.
    pub tickled: bool,
}

impl PcpuView {
    pub fn free(&self) -> bool {
        self.cur.is_none() && !self.tickled
    }
}

/// A decision for one pCPU: what it runs and when to decide again (`None`:
/// not until the vCPU blocks or another one is woken onto it).
pub struct Pick {
    pub next: Option<VcpuId>,
    pub slice: Option<Ns>,
}

pub trait Scheduler: Send {
    /// A blocked vCPU became runnable. Returns the pCPU that should decide
    /// again and when: an idle one now, or one whose vCPU it should preempt.
    fn wake(&mut self, v: VcpuId, now: Ns, pcpus: &[PcpuView]) -> Option<(Pcpu, Ns)>;

    /// Choose what `p` runs from `now`. `prev` is what it ran until now and
    /// whether that vCPU is still runnable (false: it blocked).
    fn schedule(&mut self, p: Pcpu, now: Ns, prev: Option<(VcpuId, bool)>) -> Pick;

    /// Would `p` run nothing else if its vCPU blocked now (Xen's
    /// `idle_on_block` hook, which `evtchn-wait` asks before it waits)?
    fn idle_on_block(&self, p: Pcpu) -> bool;

    /// The period of [`Scheduler::tick`], if the scheduler has one.
    fn tick_period(&self) -> Option<Ns> {
        None
    }

    /// Periodic accounting; returns the pCPUs that should decide again now.
    fn tick(&mut self, _now: Ns, _pcpus: &[PcpuView]) -> Vec<Pcpu> {
        Vec::new()
    }
}

/// `seed` drives credit2's slice jitter (see `credit2.rs`).
pub fn new(kind: SchedKind, nr_vcpus: usize, nr_pcpus: usize, ratelimit: Ns, seed: u64) -> Box<dyn Scheduler> {
    match kind {
        SchedKind::Credit2 => Box::new(credit2::Credit2::new(nr_vcpus, ratelimit, seed)),
        SchedKind::Credit => Box::new(credit::Credit::new(nr_vcpus, nr_pcpus, ratelimit)),
        SchedKind::Null => Box::new(null::Null::new(nr_vcpus, nr_pcpus)),
    }
}
