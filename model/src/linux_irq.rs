//! Linux's IRQ layer over the FIFO consumer, for an event that may arrive
//! on any vCPU of its set: `drivers/xen/events/events_base.c` of Linux 6.1
//! with the vCPU-set series, and `handle_edge_irq()` of
//! `kernel/irq/chip.c`, which every event-channel IRQ of the series uses
//! (dynamic, lateeoi, MSI/edge PIRQ).
//!
//! Per IRQ: `is_active` taken before the handler (a delivery that finds it
//! set is ignored), the chip's ack clearing PENDING (lateeoi's also masking
//! until the EOI and keeping `is_active`), mask reasons counted under the
//! info lock, the descriptor lock's in-progress and pending flags, and
//! `set_affinity_irq()` turning the effective affinity into Xen's vCPU set.
//! CPU hotplug: leaving the sets while still taking events, the IRQ core's
//! migration off the stopped CPU, and the CPU-dead drain that raises again
//! what was left on its queue.

use crate::abi::{Port, SharedEvents};
use crate::bugs::{Bug, Bugs};
use crate::guest::{self, Consumer};
use crate::hypervisor::{Hypervisor, RunState};
use crate::sync::{lock, AtomicU64, Mutex, Ordering};
use evroute_guest::VcpuSet;

/// `EVT_MASK_REASON_*`.
pub const MASK_EXPLICIT: u8 = 0x01;
pub const MASK_TEMPORARY: u8 = 0x02;
pub const MASK_EOI_PENDING: u8 = 0x04;

/// The IRQ descriptor's state that `desc->lock` guards.
#[derive(Debug)]
struct Desc {
    /// `IRQD_IRQ_INPROGRESS`: a CPU runs the handler.
    inprogress: bool,
    /// `IRQS_PENDING`: a delivery came while it ran; run it again.
    pending: bool,
    /// `irqd_irq_masked()`: the core masked it (mask_ack on a busy IRQ).
    core_masked: bool,
    /// The user's mask (`smp_affinity`), Linux CPUs.
    affinity: u64,
    /// `effective_affinity`: the set Xen was given, or the one CPU.
    effective: u64,
    /// `info->cpu`: the CPU whose vCPU Xen keeps the channel bound to.
    bound_cpu: u32,
}

/// One event-channel IRQ of the guest.
pub struct Irq {
    pub port: Port,
    /// The lateeoi chip (`xen-dyn-lateeoi`: backends, /dev/xen/evtchn).
    pub lateeoi: bool,
    /// `info->is_active`. Linux's xchg is a locked instruction on x86 and,
    /// in the kernel's memory model, is ordered here by the full barriers
    /// of the event word's cmpxchg; loom weakens SeqCst to AcqRel, under
    /// which an AtomicBool lets a CPU read it set after the EOI cleared it.
    /// A lock gives the model the order Linux has.
    is_active: Mutex<bool>,
    /// `info->in_handler`: 1 while the CPU that took `is_active` is in
    /// `generic_handle_irq()`, 2 when an EOI waits for it to return. A
    /// lock for the reason `is_active` is one.
    in_handler: Mutex<u8>,
    /// `info->mask_reason`, under `info->lock`.
    mask_reason: Mutex<u8>,
    desc: Mutex<Desc>,
    /// lateeoi: the CPUs whose handler awaits `xen_irq_lateeoi()`.
    eoi_owed: AtomicU64,
    /// Handler runs: a step inside the handler, so another CPU may act
    /// while it runs.
    runs: AtomicU64,
}

/// The guest kernel: its CPUs, their Xen vCPU ids, one IRQ.
pub struct Linux {
    pub irq: Irq,
    /// `xen_vcpu_nr(cpu)`: Xen's vCPU id of each Linux CPU.
    vcpu_of: Vec<u32>,
    /// `cpu_online_mask`.
    online: AtomicU64,
    /// `evtchn_set_cpus`: online and not on their way down.
    set_cpus: AtomicU64,
    /// lateeoi: the handler's first run sends its EOI before it returns
    /// (netback's spurious path does; or a thread that ran meanwhile).
    pub eoi_in_first_run: bool,
    bugs: Bugs,
}

impl Linux {
    /// An IRQ on `port`, every CPU online, bound (as Xen binds a new
    /// channel) to `bound_cpu`'s vCPU, with that CPU as its affinity.
    pub fn new(port: Port, lateeoi: bool, vcpu_of: Vec<u32>, bound_cpu: u32, bugs: Bugs) -> Self {
        let all = (1u64 << vcpu_of.len()) - 1;
        let desc = Desc {
            inprogress: false,
            pending: false,
            core_masked: false,
            affinity: 1 << bound_cpu,
            effective: 1 << bound_cpu,
            bound_cpu,
        };
        Linux {
            irq: Irq {
                port,
                lateeoi,
                is_active: Mutex::new(false),
                in_handler: Mutex::new(0),
                mask_reason: Mutex::new(0),
                desc: Mutex::new(desc),
                eoi_owed: AtomicU64::new(0),
                runs: AtomicU64::new(0),
            },
            vcpu_of,
            online: AtomicU64::new(all),
            set_cpus: AtomicU64::new(all),
            eoi_in_first_run: false,
            bugs,
        }
    }

    pub fn nr_cpus(&self) -> u32 {
        self.vcpu_of.len() as u32
    }

    pub fn vcpu_of(&self, cpu: u32) -> u32 {
        self.vcpu_of[cpu as usize]
    }

    /// The Linux CPU running on Xen vCPU `vcpu`.
    pub fn cpu_of(&self, vcpu: u32) -> u32 {
        self.vcpu_of.iter().position(|&v| v == vcpu).expect("every vCPU runs a CPU") as u32
    }

    /// A consumer for `cpu`'s vCPU whose deliveries go through this layer.
    pub fn consumer(&self, cpu: u32, nr_ports: u32) -> Consumer {
        Consumer::with_irq_layer(self.vcpu_of(cpu), nr_ports, self.bugs.guest())
    }

    /// The upcall on `cpu`: drain its queues, each delivery through
    /// [`Linux::handle_irq_for_port`].
    pub fn upcall(&self, hv: &Hypervisor, c: &mut Consumer) {
        let cpu = self.cpu_of(c.vcpu());
        c.upcall(hv.shared(), hv.ghost(), &mut |port| self.handle_irq_for_port(hv, cpu, port));
    }

    /// `handle_irq_for_port()`: ignore a delivery while another CPU has the
    /// event (`is_active`), else the flow handler.
    pub fn handle_irq_for_port(&self, hv: &Hypervisor, cpu: u32, port: Port) {
        if port != self.irq.port {
            return;
        }
        if std::mem::replace(&mut *lock(&self.irq.is_active), true) {
            return;
        }
        *lock(&self.irq.in_handler) = 1;
        self.handle_edge_irq(hv, cpu);
        // An EOI sent while the handler ran waited for it to return.
        let waited = std::mem::replace(&mut *lock(&self.irq.in_handler), 0) == 2;
        if waited {
            hv.ghost().handler_end(self.irq.port);
            self.end_eoi_wait(hv);
        }
    }

    /// `handle_edge_irq()`.
    fn handle_edge_irq(&self, hv: &Hypervisor, cpu: u32) {
        let irq = &self.irq;
        let mut d = lock(&irq.desc);
        if d.inprogress {
            // Another CPU runs the handler: leave it a rerun, mask and ack.
            d.pending = true;
            d.core_masked = true;
            self.mask_ack(hv);
            return;
        }
        self.ack(hv);
        loop {
            if d.pending && d.core_masked {
                d.core_masked = false;
                self.do_unmask(hv, MASK_EXPLICIT);
            }
            d.pending = false;
            d.inprogress = true;
            drop(d);
            self.handler(hv, cpu);
            d = lock(&irq.desc);
            d.inprogress = false;
            if !d.pending {
                return;
            }
        }
    }

    /// The chip's `irq_ack`: `ack_dynirq()` / `eoi_pirq()`, or for lateeoi
    /// `lateeoi_ack_dynirq()`, which masks until the EOI and keeps
    /// `is_active` so a delivery on another CPU meanwhile is ignored.
    fn ack(&self, hv: &Hypervisor) {
        if self.irq.lateeoi {
            self.do_mask(hv, MASK_EOI_PENDING);
            if self.bugs.has(Bug::LateEoiClearsActiveAtAck) {
                *lock(&self.irq.is_active) = false;
            }
            self.clear_pending(hv);
        } else {
            self.event_handler_exit(hv);
        }
    }

    /// The chip's `irq_mask_ack` (lateeoi's masks for the core, not the
    /// EOI): for an event that came while another CPU runs the handler,
    /// which then runs it again without an ack.
    fn mask_ack(&self, hv: &Hypervisor) {
        self.do_mask(hv, MASK_EXPLICIT);
        self.event_handler_exit(hv);
    }

    /// `event_handler_exit()`: `is_active` off, then PENDING cleared.
    fn event_handler_exit(&self, hv: &Hypervisor) {
        *lock(&self.irq.is_active) = false;
        self.clear_pending(hv);
    }

    /// `clear_evtchn()`: an edge consumed if PENDING was set.
    fn clear_pending(&self, hv: &Hypervisor) {
        if let Some(w) = hv.shared().word(self.irq.port) {
            if w.fetch_and(!crate::abi::PENDING, Ordering::SeqCst) & crate::abi::PENDING != 0 {
                hv.ghost().acked(self.irq.port);
            }
        }
    }

    /// The driver's handler; a lateeoi one lasts until its EOI.
    fn handler(&self, hv: &Hypervisor, cpu: u32) {
        hv.ghost().handler_start(self.irq.port, cpu);
        let first = self.irq.runs.fetch_add(1, Ordering::Relaxed) == 0;
        if self.irq.lateeoi {
            self.irq.eoi_owed.fetch_or(1 << cpu, Ordering::SeqCst);
            if first && self.eoi_in_first_run {
                self.lateeoi(hv, cpu);
            }
        } else {
            hv.ghost().handler_end(self.irq.port);
        }
    }

    /// `xen_irq_lateeoi()` for the handler `cpu` owes one: the handler is
    /// over, `is_active` off, then the EOI mask lifted (a pending event is
    /// linked again, to a vCPU of the set). While the handler still runs
    /// the EOI waits for it to return (`handle_irq_for_port` ends it), as
    /// an event unmasked now could be run again by that handler's CPU
    /// without an ack.
    pub fn lateeoi(&self, hv: &Hypervisor, cpu: u32) {
        if self.irq.eoi_owed.fetch_and(!(1 << cpu), Ordering::SeqCst) & 1 << cpu == 0 {
            return;
        }
        {
            let mut h = lock(&self.irq.in_handler);
            if *h == 1 && !self.bugs.has(Bug::EoiWhileHandlerRuns) {
                *h = 2;
                return;
            }
        }
        hv.ghost().handler_end(self.irq.port);
        self.end_eoi_wait(hv);
    }

    /// `is_active` off and the EOI mask lifted in one hold of the info lock:
    /// a CPU that takes the event in between (from a delivery it saw before
    /// the ack), acks it and runs the handler would otherwise have that
    /// run's EOI mask lifted here.
    fn end_eoi_wait(&self, hv: &Hypervisor) {
        let mut r = lock(&self.irq.mask_reason);
        *lock(&self.irq.is_active) = false;
        if self.bugs.has(Bug::EoiUnmaskApart) {
            drop(r);
            self.do_unmask(hv, MASK_EOI_PENDING);
            return;
        }
        self.lift(hv, &mut r, MASK_EOI_PENDING);
    }

    pub fn eoi_owed(&self) -> u64 {
        self.irq.eoi_owed.load(Ordering::SeqCst)
    }

    /// `do_mask()`: mask in Xen's word when the first reason comes.
    fn do_mask(&self, hv: &Hypervisor, reason: u8) {
        let mut r = lock(&self.irq.mask_reason);
        if *r == 0 {
            guest::mask(hv.shared(), self.irq.port);
        }
        *r |= reason;
    }

    /// `do_unmask()`: unmask when the last reason goes (a pending event is
    /// linked by Xen: EVTCHNOP_unmask).
    fn do_unmask(&self, hv: &Hypervisor, reason: u8) {
        self.lift(hv, &mut lock(&self.irq.mask_reason), reason);
    }

    /// Drop `reason` from the held mask reasons `r`; unmask when none is left.
    fn lift(&self, hv: &Hypervisor, r: &mut u8, reason: u8) {
        *r &= !reason;
        if *r == 0 {
            hv.ghost().guest_unmasked(self.irq.port);
            guest::unmask(hv.shared(), hv, self.irq.port, self.bugs.guest());
        }
    }

    /// A write to `/proc/irq/N/smp_affinity`: the user's mask, then
    /// `set_affinity_irq()` under the descriptor lock.
    pub fn write_affinity(&self, hv: &Hypervisor, mask: u64) {
        let mut d = lock(&self.irq.desc);
        d.affinity = mask;
        self.set_affinity(hv, &mut d);
    }

    /// `set_affinity_irq()` with vCPU sets: the CPUs of the user's mask a
    /// set may hold, as Xen vCPU ids, in one EVTCHNOP_set_vcpu_set; one CPU
    /// (or a refused set) is bound with EVTCHNOP_bind_vcpu instead.
    fn set_affinity(&self, hv: &Hypervisor, d: &mut Desc) {
        let mut set = d.affinity & self.online.load(Ordering::SeqCst) & self.set_cpus.load(Ordering::SeqCst);
        if self.bugs.has(Bug::OfflineCpuLeftInSet) {
            set = d.affinity;
        }
        if set.count_ones() >= 2 {
            // The guest library's conversion, CPU numbers to Xen vCPU ids.
            let cpus = (0..self.nr_cpus()).filter(|c| set >> c & 1 == 1);
            let vcpus = VcpuSet::from_cpus(cpus, |cpu| {
                Some(if self.bugs.has(Bug::SetFromLinuxCpuNumbers) { cpu } else { self.vcpu_of(cpu) })
            })
            .expect("every CPU has a vCPU id below 8192");
            if hv.set_vcpu_set(self.irq.port, vcpus.nr_bits(), Some(vcpus.as_bytes())).is_ok() {
                // Xen keeps the bound vCPU if it is in the set, else binds
                // the set's lowest vCPU id.
                if set >> d.bound_cpu & 1 == 0 {
                    let lowest = (0..self.nr_cpus()).filter(|c| set >> c & 1 == 1).min_by_key(|&c| self.vcpu_of(c));
                    d.bound_cpu = lowest.expect("two CPUs or more");
                }
                d.effective = set;
                return;
            }
        }
        let pool = if set != 0 { set } else { d.affinity & self.online.load(Ordering::SeqCst) };
        let tcpu = pool.trailing_zeros();
        // xen_rebind_evtchn_to_cpu(): masked while Xen moves it.
        self.do_mask(hv, MASK_TEMPORARY);
        if hv.bind_vcpu(self.irq.port, self.vcpu_of(tcpu)).is_ok() {
            d.bound_cpu = tcpu;
        }
        self.do_unmask(hv, MASK_TEMPORARY);
        d.effective = 1 << tcpu;
    }

    /// The CPU-hotplug callback run on `cpu` as it goes down, while it still
    /// takes events: it leaves the CPUs a set may hold, then every set.
    pub fn cpu_leaving(&self, hv: &Hypervisor, cpu: u32) {
        self.set_cpus.fetch_and(!(1 << cpu), Ordering::SeqCst);
        let mut d = lock(&self.irq.desc);
        if d.effective >> cpu & 1 == 1 && d.effective.count_ones() > 1 {
            self.set_affinity(hv, &mut d);
        }
    }

    /// Stop-machine on `cpu`, after its last upcall: offline for Linux, then
    /// `fixup_irqs()` moves what still names it; then Xen takes its vCPU down.
    pub fn cpu_stopped(&self, hv: &Hypervisor, cpu: u32) {
        self.online.fetch_and(!(1 << cpu), Ordering::SeqCst);
        {
            let mut d = lock(&self.irq.desc);
            if d.effective >> cpu & 1 == 1 {
                self.set_affinity(hv, &mut d);
            }
        }
        hv.sched.set_state(self.vcpu_of(cpu), RunState::Offline);
    }

    /// The CPU-dead callback on another CPU: drain the dead CPU's queues;
    /// a pending per-OS event is raised again (unmasking a pending event
    /// has Xen link it anew) rather than dropped.
    pub fn cpu_dead(&self, hv: &Hypervisor, dead: &mut Consumer) {
        dead.handle_events(hv.shared(), hv.ghost(), &mut |port| {
            if port != self.irq.port || self.bugs.has(Bug::DeadCpuDropsEvent) {
                return;
            }
            // EVTCHNOP_unmask queues a pending event, masked or not; if a
            // mask reason is held, whoever lifts the last one does.
            // Held across the hypercall, as Linux holds info->lock.
            let r = lock(&self.irq.mask_reason);
            if *r == 0 {
                let _ = hv.unmask(port);
            }
        });
    }

    /// `cpu` comes back: Xen runs its vCPU again, which takes its upcall
    /// (anything Xen linked on its queue while it was down: a raise whose
    /// routing chose it before it left the set may link there after the
    /// CPU-dead drain), then the hotplug callback puts it back in the sets
    /// of the IRQs whose user mask holds it.
    pub fn cpu_online(&self, hv: &Hypervisor, c: &mut Consumer) {
        let cpu = self.cpu_of(c.vcpu());
        hv.sched.set_state(c.vcpu(), RunState::Running);
        self.online.fetch_or(1 << cpu, Ordering::SeqCst);
        self.upcall(hv, c);
        self.set_cpus.fetch_or(1 << cpu, Ordering::SeqCst);
        let mut d = lock(&self.irq.desc);
        if d.affinity >> cpu & 1 == 1 {
            self.set_affinity(hv, &mut d);
        }
    }

    /// What a quiescent system must show: Xen's set is the effective
    /// affinity in Xen vCPU ids, within the online CPUs, and Xen's bound
    /// vCPU is `info->cpu`'s.
    pub fn check_set_matches(&self, hv: &Hypervisor) {
        let d = lock(&self.irq.desc);
        let port = self.irq.port;
        let words = hv.vcpu_set_words(port).unwrap_or_default();
        let bound = hv.bound_vcpu(port).unwrap_or(u32::MAX);
        let xen = match words.first().copied().unwrap_or(0) {
            0 => 1u64 << bound.min(63),
            w => w,
        };
        let want =
            (0..self.nr_cpus()).filter(|c| d.effective >> c & 1 == 1).fold(0u64, |m, c| m | 1 << self.vcpu_of(c));
        let online = self.online.load(Ordering::SeqCst);
        if xen != want || d.effective & !online != 0 || bound != self.vcpu_of(d.bound_cpu) {
            crate::ghost::violated(
                crate::ghost::inv::SET_MATCHES_AFFINITY,
                format_args!(
                    "port {port}: Xen's set {xen:#b} bound vCPU {bound}; Linux's effective affinity {:#b} (vCPUs {want:#b}), info->cpu {}, online {online:#b}",
                    d.effective, d.bound_cpu
                ),
            );
        }
    }
}
