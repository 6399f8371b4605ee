//! The simulated host: pCPUs run vCPUs as the scheduler says; event sources
//! raise events on channels; Xen routes each at set-pending time with
//! `evroute_model::route` (the one implementation of the decision) and links
//! it on the chosen vCPU's queue; the guest consumes its queue in an upcall,
//! as Linux's FIFO consumer does, and may hand work to a worker thread.
//!
//! Single-threaded and deterministic: a binary heap of timestamped events,
//! ties broken by insertion order.

use crate::metrics::Metrics;
use crate::scenario::{ms, us, Ns, Scenario};
use crate::sched::{self, Pcpu, PcpuView, Scheduler, VcpuId};
use crate::workload::{Arrivals, SourceRng};
use evroute_model::hypervisor::sched::{period_of, RunState, Sched};
use evroute_model::route::{set_bit, Bits};
use evroute_model::{route, Policy, RouteInputs};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

const NEVER: Ns = Ns::MAX;

#[derive(Clone, Copy, Debug)]
enum Ev {
    /// Source `0` raises its next event.
    Raise(u32),
    /// The send hypercall's notification reaches the vCPU (IPI or wake-up).
    Deliver(u32),
    /// The vCPU's current guest phase ends, unless it was paused since (`gen`).
    GuestDone(u32, u64),
    /// The pCPU's timer or a tickle: decide again, unless re-armed since.
    Resched(u32, u64),
    /// The scheduler's periodic accounting.
    Tick,
    /// A blocked vCPU's wake-up and schedule, `wake_us` after its IPI.
    Wake(u32),
    /// The vCPU's wait in Xen (`evtchn-wait`) reaches its bound, unless it
    /// ended since (`gen`).
    WaitEnd(u32, u64),
    /// A vCPU's housekeeping tick (its guest kernel's timer).
    Housekeeping(u32),
}

struct Timed {
    at: Ns,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    // Reversed: BinaryHeap is a max-heap, the earliest event comes first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct Chan {
    dom: usize,
    /// The vCPU set, as domain-local bit words.
    set: Vec<u64>,
    bound: u32,
    /// The vCPU whose queue it was last linked on (`fifo_lastq`).
    last: u32,
    /// PENDING (and LINKED: the model consumes both together).
    pending: bool,
    /// Raise times merged into the pending event.
    raises: Vec<Ns>,
    /// The source raising it, or `None` for the guest's IPI to a vCPU.
    source: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing started (about to pick, or blocked).
    Idle,
    /// The CPU-bound loop: never ends, any interrupt may preempt it.
    Background,
    /// Guest interrupt entry, once per upcall.
    Entry,
    /// The handler of the event last taken off the queue.
    Handler,
    /// The front item of the worker thread.
    Worker,
}

struct Work {
    raises: Vec<Ns>,
    remaining: Ns,
    /// The event source whose deferred work this is; None: housekeeping.
    source: Option<usize>,
}

struct Vcpu {
    dom: usize,
    local: u32,
    state: RunState,
    pcpu: Option<Pcpu>,
    busy: bool,
    /// The vCPU's FIFO queue (one priority: every channel here has the default).
    fifo: VecDeque<usize>,
    /// `evtchn_upcall_pending`, set by Xen when it links onto an empty flag.
    upcall_pending: bool,
    /// The guest has seen the flag (IPI arrived, or it was scheduled in).
    noticed: bool,
    phase: Phase,
    /// Of the current phase, as of `started`.
    remaining: Ns,
    started: Ns,
    gen: u64,
    /// Raise times of the event whose handler runs, and its source.
    batch: Vec<Ns>,
    handling: usize,
    worker: VecDeque<Work>,
    /// Work handed over by another vCPU, visible once its IPI is handled.
    inbox: Vec<Work>,
    ipi_chan: usize,
    run_since: Ns,
    /// Waiting in Xen for an event instead of blocking (`evtchn-wait`):
    /// still running, and holding its pCPU.
    waiting: bool,
    wait_gen: u64,
}

struct Domain {
    first: VcpuId,
    /// What routing reads: the model's own running/blocked/heavy bitmaps.
    sched: Sched,
}

struct Source {
    chans: Vec<usize>,
    arrivals: Arrivals,
    rng: SourceRng,
    handler: Ns,
    /// Handler time per merged raise.
    per_merged: Ns,
    /// (global worker vCPU, cost including the switch to it)
    deferred: Option<(VcpuId, Ns)>,
}

struct PcpuState {
    since: Ns,
    timer_at: Ns,
    gen: u64,
}

pub struct Host {
    policy: Policy,
    now: Ns,
    warmup: Ns,
    end: Ns,
    send: Ns,
    entry: Ns,
    wake: Ns,
    watch: Ns,
    /// `evtchn-wait-us`; 0: off.
    wait: Ns,
    /// Per domain: housekeeping period and cost of its idle vCPUs.
    housekeeping: Vec<Option<(Ns, Ns)>>,
    /// Draws each housekeeping gap.
    hk_rng: SourceRng,
    heap: BinaryHeap<Timed>,
    seq: u64,
    sched: Box<dyn Scheduler>,
    pcpus: Vec<PcpuState>,
    views: Vec<PcpuView>,
    vcpus: Vec<Vcpu>,
    domains: Vec<Domain>,
    chans: Vec<Chan>,
    sources: Vec<Source>,
    spare: Vec<Vec<Ns>>,
    /// Every routed set-pending, when asked for (`log_routes`).
    routes: Option<Vec<RouteStep>>,
    pub metrics: Metrics,
}

/// One routing decision as the host took it, for checking step by step
/// (`Host::log_routes`): the decision's inputs, word 0 of each mask, and
/// what the host did with it.
#[derive(Clone, Debug)]
pub struct RouteStep {
    pub chan: usize,
    pub set: u64,
    pub running: u64,
    pub blocked: u64,
    pub heavy: u64,
    pub receivable: u64,
    pub bound: u32,
    pub last: u32,
    /// The vCPU whose queue the event joined.
    pub joined: u32,
    /// The domain's vCPUs that were on a pCPU / blocked, from the host's
    /// own vCPU states rather than the masks routing read.
    pub on_pcpu: u64,
    pub halted: u64,
}

/// Timestamps of trace sources, read once and shared by every run.
pub type Traces = Vec<Option<Arc<Vec<Ns>>>>;

pub fn read_traces(s: &Scenario) -> Result<Traces, String> {
    s.sources
        .iter()
        .map(|src| match src.arrival.get_ref() {
            crate::scenario::Arrival::Trace { file } => crate::scenario::read_trace(file).map(|t| Some(Arc::new(t))),
            _ => Ok(None),
        })
        .collect()
}

fn words(n: u32) -> usize {
    n.div_ceil(64) as usize
}

impl Host {
    pub fn new(s: &Scenario, policy: Policy, traces: &Traces) -> Host {
        let nr_pcpus = *s.host.pcpus.get_ref() as usize;
        let mut vcpus = Vec::new();
        let mut domains = Vec::new();
        let mut chans = Vec::new();
        for (di, d) in s.domains.iter().enumerate() {
            let n = *d.vcpus.get_ref();
            domains.push(Domain { first: vcpus.len(), sched: Sched::new(n) });
            for v in 0..n {
                // Each vCPU's reschedule IPI: a per-vCPU channel, never routed.
                let mut set = vec![0u64; words(n)];
                set_bit(&mut set, v);
                chans.push(Chan { dom: di, set, bound: v, last: v, pending: false, raises: Vec::new(), source: None });
                vcpus.push(Vcpu {
                    dom: di,
                    local: v,
                    state: RunState::Runnable,
                    pcpu: None,
                    busy: d.is_busy(v),
                    fifo: VecDeque::new(),
                    upcall_pending: false,
                    noticed: false,
                    phase: Phase::Idle,
                    remaining: 0,
                    started: 0,
                    gen: 0,
                    batch: Vec::new(),
                    handling: 0,
                    worker: VecDeque::new(),
                    inbox: Vec::new(),
                    ipi_chan: chans.len() - 1,
                    run_since: 0,
                    waiting: false,
                    wait_gen: 0,
                });
            }
        }
        let mut sources = Vec::new();
        for (si, src) in s.sources.iter().enumerate() {
            let di = s.domain_index(src.domain.get_ref()).expect("checked");
            let n = *s.domains[di].vcpus.get_ref();
            let mut set = vec![0u64; words(n)];
            for v in (0..n).filter(|&v| src.in_set(v)) {
                set_bit(&mut set, v);
            }
            let mut ids = Vec::new();
            for b in s.bound_of(src) {
                // The set always holds the bound vCPU (binding adds it).
                let mut set = set.clone();
                set_bit(&mut set, b);
                ids.push(chans.len());
                chans.push(Chan {
                    dom: di,
                    set,
                    bound: b,
                    last: b,
                    pending: false,
                    raises: Vec::new(),
                    source: Some(si),
                });
            }
            let deferred = src
                .deferred
                .as_ref()
                .map(|d| (domains[di].first + *d.vcpu.get_ref() as usize, us(s.costs.switch_us) + us(d.cost_us)));
            sources.push(Source {
                chans: ids,
                arrivals: Arrivals::new(src.arrival.get_ref(), traces[si].clone()),
                rng: SourceRng::new(s.seed, si),
                handler: us(*src.handler_us.get_ref()),
                per_merged: us(src.per_merged_us.as_ref().map_or(0.0, |m| *m.get_ref())),
                deferred,
            });
        }
        let warmup = ms(s.warmup_ms);
        let metrics = Metrics {
            handled: vec![0; vcpus.len()],
            run_time: vec![0; vcpus.len()],
            idle_time: vec![0; nr_pcpus],
            app_time: vec![0; vcpus.len()],
            ..Metrics::default()
        };
        Host {
            policy,
            now: 0,
            warmup,
            end: warmup + ms(*s.duration_ms.get_ref()),
            send: us(s.costs.send_us),
            wake: us(s.costs.wake_us),
            watch: us(s.costs.watch_us),
            wait: us(s.host.wait_us()),
            housekeeping: s
                .domains
                .iter()
                .map(|d| d.housekeeping.as_ref().map(|h| (ms(h.get_ref().every_ms), us(h.get_ref().cost_us))))
                .collect(),
            hk_rng: SourceRng::new(s.seed, usize::MAX),
            entry: us(s.costs.entry_us),
            heap: BinaryHeap::new(),
            seq: 0,
            sched: sched::new(s.host.scheduler, vcpus.len(), nr_pcpus, us(s.host.ratelimit_us), s.seed),
            pcpus: (0..nr_pcpus).map(|_| PcpuState { since: 0, timer_at: NEVER, gen: 0 }).collect(),
            views: vec![PcpuView::default(); nr_pcpus],
            vcpus,
            domains,
            chans,
            sources,
            spare: Vec::new(),
            routes: None,
            metrics,
        }
    }

    /// Run to the end, recording every routed set-pending (domains of up
    /// to 64 vCPUs, the masks' first word).
    pub fn run_logged(mut self) -> (Metrics, Vec<RouteStep>) {
        self.routes = Some(Vec::new());
        self.run_to_end()
    }

    fn push(&mut self, at: Ns, ev: Ev) {
        self.seq += 1;
        self.heap.push(Timed { at, seq: self.seq, ev });
    }

    fn measuring(&self, t: Ns) -> bool {
        t >= self.warmup
    }

    /// Run to the end; the metrics are in `self.metrics`.
    pub fn run(self) -> Metrics {
        self.run_to_end().0
    }

    fn run_to_end(mut self) -> (Metrics, Vec<RouteStep>) {
        for v in 0..self.vcpus.len() {
            self.set_state(v, RunState::Runnable);
            let _ = self.sched.wake(v, 0, &self.views);
        }
        for p in 0..self.pcpus.len() {
            self.do_schedule(p, 0);
        }
        for si in 0..self.sources.len() {
            let s = &mut self.sources[si];
            if let Some(t) = s.arrivals.next(0, &mut s.rng) {
                self.push(t, Ev::Raise(si as u32));
            }
        }
        if let Some(t) = self.sched.tick_period() {
            self.push(t, Ev::Tick);
        }
        // Housekeeping ticks, spread over the first period so that the
        // vCPUs' timers do not fire together.
        for v in 0..self.vcpus.len() {
            if let Some((every, _)) = self.housekeeping[self.vcpus[v].dom] {
                self.push(every * (v as u64 + 1) / (self.vcpus.len() as u64 + 1), Ev::Housekeeping(v as u32));
            }
        }
        while let Some(Timed { at, ev, .. }) = self.heap.pop() {
            if at > self.end {
                break;
            }
            self.now = at;
            self.metrics.engine_events += 1;
            match ev {
                Ev::Raise(s) => self.raise(s as usize),
                Ev::Deliver(v) => self.deliver(v as usize),
                Ev::GuestDone(v, gen) => self.guest_done(v as usize, gen),
                Ev::Resched(p, gen) => {
                    if self.pcpus[p as usize].gen == gen {
                        self.do_schedule(p as usize, at);
                    }
                }
                Ev::Wake(v) => self.wake(v as usize),
                Ev::Housekeeping(v) => self.housekeeping(v as usize),
                Ev::WaitEnd(v, gen) => {
                    let v = v as usize;
                    if self.vcpus[v].waiting && self.vcpus[v].wait_gen == gen {
                        self.stop_waiting(v, false);
                        self.deschedule(v);
                    }
                }
                Ev::Tick => {
                    for p in self.sched.tick(at, &self.views) {
                        self.arm(p, at);
                    }
                    let period = self.sched.tick_period().expect("ticking scheduler");
                    self.push(at + period, Ev::Tick);
                }
            }
        }
        let end = self.end;
        for p in 0..self.pcpus.len() {
            match self.views[p].cur {
                Some(v) => {
                    // Counts the application time of a vCPU still in its loop.
                    self.pause(v, end);
                    self.metrics.run_time[v] += end - self.vcpus[v].run_since;
                }
                None => self.metrics.idle_time[p] += end - self.pcpus[p].since,
            }
        }
        (self.metrics, self.routes.unwrap_or_default())
    }

    // ---- Xen: set-pending and notification -------------------------------

    fn raise(&mut self, si: usize) {
        let now = self.now;
        let s = &mut self.sources[si];
        let n = s.chans.len() as u32;
        let c = s.chans[if n > 1 { s.rng.below(n) as usize } else { 0 }];
        if let Some(t) = s.arrivals.next(now, &mut s.rng) {
            self.push(t, Ev::Raise(si as u32));
        }
        let measuring = self.measuring(now);
        self.metrics.raised += u64::from(measuring);
        self.chans[c].raises.push(now);
        if !self.set_pending(c) {
            self.metrics.coalesced += u64::from(measuring);
        }
    }

    /// `evtchn_fifo_set_pending` with routing: false if already pending.
    fn set_pending(&mut self, c: usize) -> bool {
        let ch = &self.chans[c];
        if ch.pending {
            return false;
        }
        let d = &self.domains[ch.dom];
        // As Xen's routed set-pending under `balanced`: the first decision of
        // a load period lifts the last period's marks.
        let balanced = self.policy == Policy::Balanced && ch.source.is_some();
        let period = period_of(self.now);
        if balanced {
            d.sched.new_period(period);
        }
        let target = match ch.source {
            // Per-vCPU events (IPIs) are never routed.
            None => ch.bound,
            Some(_) => route(
                self.policy,
                &RouteInputs {
                    set: &ch.set[..],
                    running: &d.sched.running[..],
                    blocked: &d.sched.blocked[..],
                    heavy: &d.sched.heavy[..],
                    receivable: &d.sched.receivable[..],
                    bound: ch.bound,
                    last: ch.last,
                },
            ),
        };
        let v = d.first + target as usize;
        if let (Some(log), Some(_)) = (self.routes.as_mut(), ch.source) {
            let dom = ch.dom;
            let mine = || self.vcpus.iter().filter(move |x| x.dom == dom);
            let bits = |f: &dyn Fn(&Vcpu) -> bool| mine().filter(|x| f(x)).fold(0u64, |m, x| m | 1 << x.local);
            log.push(RouteStep {
                chan: c,
                set: ch.set[0],
                running: d.sched.running.word(0),
                blocked: d.sched.blocked.word(0),
                heavy: d.sched.heavy.word(0),
                receivable: d.sched.receivable.word(0),
                bound: ch.bound,
                last: ch.last,
                joined: target,
                on_pcpu: bits(&|x| x.pcpu.is_some()),
                halted: bits(&|x| x.state == RunState::Blocked),
            });
        }
        if balanced {
            d.sched.note_routed(target, period);
        }
        let ch = &mut self.chans[c];
        ch.pending = true;
        ch.last = target;
        let vc = &mut self.vcpus[v];
        vc.fifo.push_back(c);
        // `vcpu_mark_events_pending`: notify only when the flag was clear.
        if !vc.upcall_pending {
            vc.upcall_pending = true;
            // A vCPU waiting in Xen sees the write itself: no IPI.
            let cost = if vc.waiting { self.watch } else { self.send };
            self.push(self.now + cost, Ev::Deliver(v as u32));
        }
        true
    }

    /// The notification arrives: an IPI to a running vCPU, a wake-up for a
    /// blocked one; a preempted vCPU sees the flag when next scheduled.
    fn deliver(&mut self, v: usize) {
        let now = self.now;
        let measuring = self.measuring(now);
        let vc = &mut self.vcpus[v];
        if !vc.upcall_pending {
            return;
        }
        match vc.state {
            RunState::Running if vc.waiting => {
                vc.noticed = true;
                self.stop_waiting(v, true);
                self.interrupt(v);
            }
            RunState::Running => {
                self.metrics.ipis += u64::from(measuring);
                vc.noticed = true;
                if !matches!(vc.phase, Phase::Entry | Phase::Handler) {
                    self.interrupt(v);
                }
            }
            RunState::Blocked => {
                self.metrics.wakeups += u64::from(measuring);
                if self.wake > 0 {
                    self.push(now + self.wake, Ev::Wake(v as u32));
                } else {
                    self.wake(v);
                }
            }
            RunState::Runnable | RunState::Offline => {}
        }
    }

    // ---- Scheduling ------------------------------------------------------

    fn set_state(&mut self, v: VcpuId, st: RunState) {
        let vc = &mut self.vcpus[v];
        vc.state = st;
        self.domains[vc.dom].sched.set_state(vc.local, st);
    }

    fn wake(&mut self, v: VcpuId) {
        if self.vcpus[v].state != RunState::Blocked {
            return; // Woken already (an earlier Wake).
        }
        self.set_state(v, RunState::Runnable);
        if let Some((p, at)) = self.sched.wake(v, self.now, &self.views) {
            self.views[p].tickled = true;
            self.arm(p, at);
        }
    }

    /// Make `p` decide again at `at`, unless it already will by then.
    fn arm(&mut self, p: Pcpu, at: Ns) {
        let ps = &mut self.pcpus[p];
        if at < ps.timer_at {
            ps.timer_at = at;
            ps.gen += 1;
            let gen = ps.gen;
            self.push(at, Ev::Resched(p as u32, gen));
        }
    }

    fn do_schedule(&mut self, p: Pcpu, now: Ns) {
        let prev = self.views[p].cur;
        // Anything for this pCPU (Xen: a softirq) ends a wait: it blocks.
        if let Some(v) = prev.filter(|&v| self.vcpus[v].waiting) {
            self.stop_waiting(v, false);
            self.set_state(v, RunState::Blocked);
        }
        match prev {
            Some(v) => {
                self.pause(v, now);
                self.metrics.run_time[v] += now - self.vcpus[v].run_since;
            }
            None => self.metrics.idle_time[p] += now - self.pcpus[p].since,
        }
        let prev_arg = prev.map(|v| (v, self.vcpus[v].state != RunState::Blocked));
        let pick = self.sched.schedule(p, now, prev_arg);
        if let Some(v) = prev.filter(|&v| pick.next != Some(v)) {
            self.vcpus[v].pcpu = None;
            if self.vcpus[v].state == RunState::Running {
                self.set_state(v, RunState::Runnable);
            }
        }
        self.views[p] = PcpuView { cur: pick.next, tickled: false };
        let ps = &mut self.pcpus[p];
        ps.since = now;
        ps.timer_at = NEVER;
        ps.gen += 1;
        if let Some(s) = pick.slice {
            self.arm(p, now + s);
        }
        if let Some(v) = pick.next {
            if prev != Some(v) {
                self.metrics.context_switches += u64::from(self.measuring(now));
                assert!(self.vcpus[v].pcpu.is_none(), "vCPU {v} on two pCPUs at once");
                self.vcpus[v].pcpu = Some(p);
                self.set_state(v, RunState::Running);
            }
            let vc = &mut self.vcpus[v];
            vc.run_since = now;
            // Back in the guest, a pending upcall is taken at once.
            vc.noticed |= vc.upcall_pending;
            self.resume(v);
        }
    }

    fn block(&mut self, v: VcpuId) {
        let p = self.vcpus[v].pcpu.expect("a running vCPU blocks");
        // `evtchn-wait`: wait in Xen first where the pCPU would go idle.
        // The vCPU stays running (for routing too) and keeps its pCPU.
        if self.wait > 0 && self.sched.idle_on_block(p) {
            let vc = &mut self.vcpus[v];
            vc.waiting = true;
            vc.wait_gen += 1;
            let gen = vc.wait_gen;
            self.push(self.now + self.wait, Ev::WaitEnd(v as u32, gen));
            return;
        }
        self.deschedule(v);
    }

    /// The guest kernel's timer on a vCPU that is not busy: a little work,
    /// then it blocks again (a busy vCPU's tick is folded into its loop).
    /// A blocked vCPU is woken for it, as by its timer's VIRQ.
    fn housekeeping(&mut self, v: VcpuId) {
        let (every, cost) = self.housekeeping[self.vcpus[v].dom].expect("scheduled only with housekeeping");
        // Uniform in [every/2, 3*every/2]: an idle tickless kernel wakes for
        // its next timer, not on a grid; a fixed period beats against the
        // scheduler's slices and makes the tail swing with the period.
        let gap = self.hk_rng.between(every / 2, every + every / 2);
        self.push(self.now + gap, Ev::Housekeeping(v as u32));
        if self.vcpus[v].busy {
            return;
        }
        let spare = self.spare.pop().unwrap_or_default();
        self.vcpus[v].worker.push_back(Work { raises: spare, remaining: cost, source: None });
        match self.vcpus[v].state {
            RunState::Blocked => self.wake(v),
            RunState::Running if self.vcpus[v].waiting => {
                self.stop_waiting(v, true);
                self.interrupt(v);
            }
            RunState::Running if self.vcpus[v].phase == Phase::Idle => self.interrupt(v),
            _ => {}
        }
    }

    /// Blocked: off its pCPU until a wake-up.
    fn deschedule(&mut self, v: VcpuId) {
        self.set_state(v, RunState::Blocked);
        let p = self.vcpus[v].pcpu.take().expect("a running vCPU blocks");
        self.do_schedule(p, self.now);
    }

    /// The wait ends: by the event (`hit`), or to block after all.
    fn stop_waiting(&mut self, v: VcpuId, hit: bool) {
        let measuring = self.measuring(self.now);
        self.vcpus[v].waiting = false;
        self.vcpus[v].wait_gen += 1;
        if hit {
            self.metrics.waits_hit += u64::from(measuring);
        } else {
            self.metrics.waits_gave_up += u64::from(measuring);
        }
    }

    // ---- The guest ---------------------------------------------------------

    /// Stop the clock of the current phase (descheduled or interrupted).
    fn pause(&mut self, v: VcpuId, now: Ns) {
        let vc = &mut self.vcpus[v];
        if vc.phase == Phase::Background {
            // The application ran since `started` (counted after the warm-up).
            self.metrics.app_time[v] += now.saturating_sub(vc.started.max(self.warmup));
            vc.started = now;
        }
        if matches!(vc.phase, Phase::Entry | Phase::Handler | Phase::Worker) {
            vc.remaining -= (now - vc.started).min(vc.remaining);
            vc.gen += 1;
        }
    }

    /// An upcall interrupts the worker thread or the background loop.
    fn interrupt(&mut self, v: VcpuId) {
        self.pause(v, self.now);
        let vc = &mut self.vcpus[v];
        if vc.phase == Phase::Worker {
            vc.worker.front_mut().expect("worker phase has work").remaining = vc.remaining;
        }
        vc.phase = Phase::Idle;
        self.resume(v);
    }

    /// The running vCPU goes on with, or picks, its work: interrupts first,
    /// then the worker thread, then the CPU-bound loop; else it blocks.
    fn resume(&mut self, v: VcpuId) {
        let now = self.now;
        let vc = &mut self.vcpus[v];
        loop {
            match vc.phase {
                Phase::Entry | Phase::Handler | Phase::Worker => {
                    vc.started = now;
                    vc.gen += 1;
                    let (at, gen) = (now + vc.remaining, vc.gen);
                    self.push(at, Ev::GuestDone(v as u32, gen));
                    return;
                }
                Phase::Idle | Phase::Background => {
                    if vc.upcall_pending && vc.noticed {
                        // The guest clears the flag, then drains its queue.
                        vc.upcall_pending = false;
                        vc.noticed = false;
                        if !vc.fifo.is_empty() {
                            vc.phase = Phase::Entry;
                            vc.remaining = self.entry;
                        }
                        continue;
                    }
                    if let Some(w) = vc.worker.front() {
                        vc.phase = Phase::Worker;
                        vc.remaining = w.remaining;
                        continue;
                    }
                    if vc.busy {
                        vc.phase = Phase::Background;
                        vc.started = now;
                        return;
                    }
                    vc.phase = Phase::Idle;
                    self.block(v);
                    return;
                }
            }
        }
    }

    fn guest_done(&mut self, v: VcpuId, gen: u64) {
        let vc = &self.vcpus[v];
        if vc.gen != gen || vc.state != RunState::Running {
            return;
        }
        match vc.phase {
            Phase::Entry => self.consume_next(v),
            Phase::Handler => {
                self.finish_handler(v);
                self.consume_next(v);
            }
            Phase::Worker => {
                let w = self.vcpus[v].worker.pop_front().expect("worker phase has work");
                self.complete(w.raises, w.source);
                self.vcpus[v].phase = Phase::Idle;
                self.resume(v);
            }
            Phase::Idle | Phase::Background => unreachable!("no timed work in {:?}", vc.phase),
        }
    }

    /// Linux's consumer: take the queue's head, clear PENDING, run its handler.
    fn consume_next(&mut self, v: VcpuId) {
        let now = self.now;
        loop {
            let Some(c) = self.vcpus[v].fifo.pop_front() else {
                self.vcpus[v].phase = Phase::Idle;
                self.resume(v);
                return;
            };
            let ch = &mut self.chans[c];
            ch.pending = false;
            let Some(si) = ch.source else {
                // The reschedule IPI: the handed-over work becomes runnable.
                let vc = &mut self.vcpus[v];
                vc.worker.extend(vc.inbox.drain(..));
                continue;
            };
            let raises = std::mem::replace(&mut ch.raises, self.spare.pop().unwrap_or_default());
            if self.measuring(now) {
                self.metrics.handled[v] += 1;
            }
            // The first raise made the event pending; the rest merged into it.
            if let Some((&first, merged)) = raises.split_first() {
                if first >= self.warmup {
                    self.metrics.handler.record(now - first);
                }
                for &r in merged.iter().filter(|&&r| r >= self.warmup) {
                    self.metrics.merged.record(now - r);
                }
            }
            let vc = &mut self.vcpus[v];
            vc.batch = raises;
            vc.handling = si;
            vc.phase = Phase::Handler;
            let src = &self.sources[si];
            vc.remaining = src.handler + src.per_merged * (vc.batch.len() as u64).saturating_sub(1);
            self.resume(v);
            return;
        }
    }

    fn finish_handler(&mut self, v: VcpuId) {
        let raises = std::mem::take(&mut self.vcpus[v].batch);
        let source = self.vcpus[v].handling;
        let deferred = self.sources[source].deferred;
        match deferred {
            None => self.complete(raises, Some(source)),
            Some((w, cost)) => {
                let work = Work { raises, remaining: cost, source: Some(source) };
                if w == v {
                    self.vcpus[v].worker.push_back(work);
                } else {
                    self.vcpus[w].inbox.push(work);
                    let ipi = self.vcpus[w].ipi_chan;
                    self.set_pending(ipi);
                }
            }
        }
    }

    fn complete(&mut self, mut raises: Vec<Ns>, source: Option<usize>) {
        let now = self.now;
        if let Some(&first) = raises.first().filter(|&&r| r >= self.warmup) {
            self.metrics.completion.record(now - first);
        }
        raises.clear();
        self.spare.push(raises);
        let Some(source) = source else { return };
        let s = &mut self.sources[source];
        if let Some(t) = s.arrivals.after_completion(now, &mut s.rng) {
            self.push(t, Ev::Raise(source as u32));
        }
    }
}
