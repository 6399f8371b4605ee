//! The checker's bookkeeping ("ghost state"): what happened to each port, kept
//! beside the system, and the invariants asserted on it by name.
//!
//! Ghost state uses the real `core` atomics on purpose, not `crate::sync`:
//! it is the observer, not part of the system, and must not add interleavings
//! for loom to explore. Loom runs all its threads on one OS thread, so these
//! updates happen in the order of the interleaving being explored.

use crate::abi::{Port, SharedEvents, LINKED, MASKED, MAX_QUEUES, PENDING};
use crate::guest::Observer;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};

/// The invariants, each written once here and once in docs/design.md.
pub mod inv {
    /// After quiescence every raised, unmasked event was handled, and every
    /// send was followed by a handling that began after it (or the event is
    /// still pending, masked): Xen dropped no raise.
    pub const NO_LOST_EVENT: &str = "no-lost-event";
    /// A raise (PENDING 0→1) is handled at most once.
    pub const NO_DOUBLE_HANDLING: &str = "no-double-handling";
    /// An event is LINKED on at most one queue.
    pub const LINKED_ON_ONE_QUEUE: &str = "linked-on-at-most-one-queue";
    /// Each queue is a list of its own events, ending, that only its vCPU consumes.
    pub const QUEUE_WELL_FORMED: &str = "queue-well-formed";
    /// A masked event is not handled while masked.
    pub const MASKED_NOT_HANDLED: &str = "masked-not-handled";
    /// Unmasking a pending event delivers it.
    pub const UNMASK_DELIVERS: &str = "unmask-delivers-pending";
    /// The chosen queue's vCPU is in the channel's set at decision time,
    /// unless the event was still LINKED on its (own channel's) old queue.
    pub const ROUTED_WITHIN_SET: &str = "routed-within-set";
    /// Every lock is eventually granted (loom reports a deadlock itself).
    pub const NO_DEADLOCK: &str = "deadlock";
    /// `Balanced`'s heavy bit of each vCPU equals "load at the bound".
    pub const HEAVY_MATCHES_LOAD: &str = "heavy-matches-load";
    /// Once a `Balanced` decision has run in period P, no vCPU is heavy on
    /// events of a period before P - 1: a mark lasts at most until the first
    /// decision of the period after the one its last event landed in (P - 1
    /// is allowed: a CPU that read the clock before P marks after P's sweep).
    pub const NO_STICKY_MARK: &str = "no-sticky-mark";

    /// One IRQ's handler runs on one CPU at a time (a lateeoi handler
    /// until its EOI), however many vCPUs the event may be delivered to.
    pub const NO_CONCURRENT_HANDLER: &str = "no-concurrent-handler";
    /// Quiescent, Xen's set is the guest's effective affinity in Xen vCPU
    /// ids, within the online CPUs, and Xen's bound vCPU is the guest's.
    pub const SET_MATCHES_AFFINITY: &str = "xen-set-matches-affinity";

    /// A vCPU that waits in Xen for an event is never left blocked with
    /// the event raised and no kick on its way.
    pub const NO_LOST_WAKEUP: &str = "no-lost-wakeup";

    pub const ALL: [&str; 13] = [
        NO_LOST_EVENT,
        NO_DOUBLE_HANDLING,
        LINKED_ON_ONE_QUEUE,
        QUEUE_WELL_FORMED,
        MASKED_NOT_HANDLED,
        UNMASK_DELIVERS,
        ROUTED_WITHIN_SET,
        NO_DEADLOCK,
        HEAVY_MATCHES_LOAD,
        NO_STICKY_MARK,
        NO_CONCURRENT_HANDLER,
        SET_MATCHES_AFFINITY,
        NO_LOST_WAKEUP,
    ];
}

/// Fail the run, naming the invariant first so tests and people can match it.
#[track_caller]
pub fn violated(invariant: &str, detail: core::fmt::Arguments<'_>) -> ! {
    panic!("invariant violated: {invariant}: {detail}")
}

#[derive(Default)]
struct PortGhost {
    /// Raises that set PENDING from 0 to 1.
    edges: AtomicU32,
    handled: AtomicU32,
    /// PENDING bits cleared by close rather than by a handler.
    dropped: AtomicU32,
    /// 1 + the queue index (vcpu * 16 + prio) the event is linked on, or 0.
    queue: AtomicU32,
    /// The channel incarnation that linked it.
    link_gen: AtomicU32,
    /// Incarnation of the channel now on this port (bumped at allocation).
    gen: AtomicU32,
    /// The guest unmasked it at least once.
    unmasked: AtomicBool,
    /// Stamp of the latest set-pending's start (a send, or an unmask's relink).
    last_raise: AtomicU32,
    /// Stamp of the latest handling (PENDING cleared by the handler) or
    /// drop (PENDING cleared by close).
    last_done: AtomicU32,
    /// Handlers of the port's IRQ running now, and on which CPU the last began.
    running: AtomicU32,
    running_on: AtomicU32,
}

pub struct Ghost {
    ports: Box<[PortGhost]>,
    /// Orders the stamps. Loom runs threads one at a time and switches only
    /// at its own operations, so a stamp taken right after an atomic step
    /// is taken in the same step.
    clock: AtomicU32,
}

impl Ghost {
    pub fn new(nr_ports: u32) -> Self {
        Ghost { ports: (0..nr_ports).map(|_| PortGhost::default()).collect(), clock: AtomicU32::new(0) }
    }

    fn stamp(&self) -> u32 {
        self.clock.fetch_add(1, SeqCst) + 1
    }

    /// A set-pending of `port` begins (before it reads or locks anything).
    pub fn raising(&self, port: Port) {
        self.port(port).last_raise.store(self.stamp(), SeqCst);
    }

    fn port(&self, port: Port) -> &PortGhost {
        &self.ports[port as usize]
    }

    pub fn allocated(&self, port: Port) {
        self.port(port).gen.fetch_add(1, SeqCst);
    }

    pub fn raised(&self, port: Port) {
        self.port(port).edges.fetch_add(1, SeqCst);
    }

    pub fn dropped(&self, port: Port) {
        let g = self.port(port);
        g.dropped.fetch_add(1, SeqCst);
        g.last_done.store(self.stamp(), SeqCst);
    }

    pub fn guest_unmasked(&self, port: Port) {
        self.port(port).unmasked.store(true, SeqCst);
    }

    pub fn handled_count(&self, port: Port) -> u32 {
        self.port(port).handled.load(SeqCst)
    }

    /// Xen linked `port` on queue `qidx` (it won LINKED, or a bug skipped that).
    pub fn linked(&self, port: Port, qidx: usize) {
        let g = self.port(port);
        let prev = g.queue.swap(qidx as u32 + 1, SeqCst);
        if prev != 0 {
            violated(
                inv::LINKED_ON_ONE_QUEUE,
                format_args!(
                    "port {port} linked on queue {} while still on queue {}",
                    qname(qidx),
                    qname(prev as usize - 1)
                ),
            );
        }
        g.link_gen.store(g.gen.load(SeqCst), SeqCst);
    }

    /// Xen found `port` still LINKED and left it on its old queue.
    pub fn stayed_linked(&self, port: Port) {
        let g = self.port(port);
        let (now, then) = (g.gen.load(SeqCst), g.link_gen.load(SeqCst));
        if g.queue.load(SeqCst) != 0 && now != then {
            violated(
                inv::ROUTED_WITHIN_SET,
                format_args!(
                    "port {port} was reused while LINKED: the new channel's event joins the old channel's queue"
                ),
            );
        }
    }

    /// Routing chose `vcpu`; it must be in `set` (the words it read), or be
    /// the bound vCPU when no vCPU of the set can take the event now.
    pub fn routed<B: crate::route::Bits + ?Sized>(
        &self,
        port: Port,
        vcpu: u32,
        bound: u32,
        set: &B,
        can_take: impl Fn(u32) -> bool,
    ) {
        if crate::route::test_bit(set, vcpu) {
            return;
        }
        let nbits = set.nwords() as u32 * 64;
        let none_can = (0..nbits).filter(|&w| crate::route::test_bit(set, w)).all(|w| !can_take(w));
        if vcpu == bound && none_can {
            return;
        }
        let words: Vec<u64> = (0..set.nwords()).map(|i| set.word(i)).collect();
        violated(inv::ROUTED_WITHIN_SET, format_args!("port {port} routed to vCPU {vcpu}, not in its set {words:x?}"));
    }

    /// Check every port once no thread runs and every notified vCPU drained.
    pub fn check_quiescent<S: SharedEvents>(&self, sh: &S) {
        for (port, g) in self.ports.iter().enumerate().skip(1) {
            let port = port as Port;
            let Some(word) = sh.word(port) else { continue };
            let w = word.load(SeqCst);
            let pending = u32::from(w & PENDING != 0);
            let (e, h, d) = (g.edges.load(SeqCst), g.handled.load(SeqCst), g.dropped.load(SeqCst));
            if h + d + pending > e {
                violated(
                    inv::NO_DOUBLE_HANDLING,
                    format_args!("port {port}: {h} handled + {d} dropped + {pending} pending, for {e} raises"),
                );
            }
            if pending == 1 && w & MASKED == 0 {
                let inv = if g.unmasked.load(SeqCst) { inv::UNMASK_DELIVERS } else { inv::NO_LOST_EVENT };
                violated(
                    inv,
                    format_args!(
                        "port {port} pending and unmasked after every notified vCPU drained (word {w:#010x}, {})",
                        match g.queue.load(SeqCst) {
                            0 => "on no queue".to_string(),
                            q => format!("linked on {}", qname(q as usize - 1)),
                        }
                    ),
                );
            }
            if h + d + pending < e {
                violated(
                    inv::NO_LOST_EVENT,
                    format_args!("port {port}: {h} handled + {d} dropped + {pending} pending, for {e} raises"),
                );
            }
            let (raised, done) = (g.last_raise.load(SeqCst), g.last_done.load(SeqCst));
            if pending == 0 && raised > done {
                violated(
                    inv::NO_LOST_EVENT,
                    format_args!(
                        "port {port}: raised at step {raised}, not pending, and not handled since (last at step {done})"
                    ),
                );
            }
            if w & LINKED != 0 {
                violated(
                    inv::QUEUE_WELL_FORMED,
                    format_args!("port {port} still LINKED after every notified vCPU drained (word {w:#010x})"),
                );
            }
        }
    }
}

/// The guest's IRQ layer: handling is its ack clearing PENDING, and its
/// handler runs apart from that.
impl Ghost {
    /// The IRQ's ack cleared PENDING: this raise is taken.
    pub fn acked(&self, port: Port) {
        let g = self.port(port);
        g.handled.fetch_add(1, SeqCst);
        g.last_done.store(self.stamp(), SeqCst);
    }

    pub fn handler_start(&self, port: Port, cpu: u32) {
        let g = self.port(port);
        if g.running.fetch_add(1, SeqCst) != 0 {
            let other = g.running_on.load(SeqCst);
            violated(
                inv::NO_CONCURRENT_HANDLER,
                format_args!("port {port}: handler starts on CPU {cpu} while CPU {other} runs it"),
            );
        }
        g.running_on.store(cpu, SeqCst);
    }

    pub fn handler_end(&self, port: Port) {
        self.port(port).running.fetch_sub(1, SeqCst);
    }
}

impl Ghost {
    /// `Balanced`'s heavy bit of every vCPU equals "load at the bound".
    pub fn check_load(&self, sched: &crate::hypervisor::Sched, nr_vcpus: u32) {
        use crate::hypervisor::sched::LOAD_BOUND;
        for v in 0..nr_vcpus {
            let (load, heavy) = (sched.load(v), sched.is_heavy(v));
            if heavy != (load >= LOAD_BOUND) {
                violated(
                    inv::HEAVY_MATCHES_LOAD,
                    format_args!("vCPU {v}: load {load} (bound {LOAD_BOUND}) but heavy bit {heavy}"),
                );
            }
        }
    }
}

impl Ghost {
    /// No vCPU heavy on events of a period before the domain's latest - 1.
    pub fn check_marks_fresh(&self, sched: &crate::hypervisor::Sched, nr_vcpus: u32) {
        use crate::hypervisor::sched::PERIOD_MASK;
        for v in (0..nr_vcpus).filter(|&v| sched.is_heavy(v)) {
            let (at, now) = (sched.load_period(v), sched.period());
            if now.wrapping_sub(at) & PERIOD_MASK > 1 {
                violated(
                    inv::NO_STICKY_MARK,
                    format_args!("vCPU {v}: heavy on events of period {at}, a decision has run in period {now}"),
                );
            }
        }
    }
}

fn qname(qidx: usize) -> String {
    format!("vCPU{}/prio{}", qidx / MAX_QUEUES, qidx % MAX_QUEUES)
}

impl Observer for Ghost {
    fn dequeued(&self, vcpu: u32, prio: usize, port: Port) {
        let mine = vcpu as usize * MAX_QUEUES + prio;
        let Some(g) = self.ports.get(port as usize) else {
            violated(
                inv::QUEUE_WELL_FORMED,
                format_args!("vCPU {vcpu} found port {port}, which does not exist, in queue {prio}"),
            );
        };
        let on = g.queue.load(SeqCst);
        if on != mine as u32 + 1 {
            let where_ = if on == 0 { "no queue".to_string() } else { qname(on as usize - 1) };
            violated(
                inv::QUEUE_WELL_FORMED,
                format_args!("{} consumed port {port}, which Xen linked on {where_}", qname(mine)),
            );
        }
        // Cleared before the guest clears LINKED, so Xen cannot relink first.
        g.queue.store(0, SeqCst);
    }

    fn handled(&self, vcpu: u32, port: Port, seen: u32) {
        self.delivered(vcpu, port, seen);
        self.acked(port);
    }

    fn delivered(&self, vcpu: u32, port: Port, seen: u32) {
        if seen & MASKED != 0 {
            violated(
                inv::MASKED_NOT_HANDLED,
                format_args!("vCPU {vcpu} handled port {port} with MASKED set (word {seen:#010x})"),
            );
        }
    }

    fn runaway(&self, vcpu: u32, prio: usize) {
        violated(
            inv::QUEUE_WELL_FORMED,
            format_args!("queue vCPU{vcpu}/prio{prio} does not end (a cycle, or a link to nowhere)"),
        );
    }
}
