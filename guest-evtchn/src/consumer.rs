//! The guest's side of the FIFO ABI as Linux 6.1 does it
//! (`drivers/xen/events/events_fifo.c` and the upcall loop of
//! `events_base.c`): a per-vCPU consumer that drains its own queues, and the
//! mask/unmask operations that race with the hypervisor.
//!
//! Only the vCPU that owns a queue ever unlinks from it; that is the single
//! consumer rule the routing must keep.

use crate::abi::{Port, SharedEvents, BUSY, LINKED, LINK_MASK, MASKED, MAX_QUEUES, PENDING};
pub use crate::faults::{Fault, Faults};
use crate::sync::{spin_hint, AtomicU32, Ordering};

/// What the guest asks of the hypervisor while consuming or unmasking.
pub trait Hypercalls {
    /// `EVTCHNOP_unmask`: clear MASKED and link the event if it is pending.
    fn unmask(&self, port: Port);
}

/// Hooks for a checker to watch the consumer. `()` watches nothing.
pub trait Observer {
    /// `port` was unlinked from queue `prio` of `vcpu`.
    fn dequeued(&self, _vcpu: u32, _prio: usize, _port: Port) {}
    /// `port` was handled on `vcpu`; `seen` is the word the decision was made on.
    fn handled(&self, _vcpu: u32, _port: Port, _seen: u32) {}
    /// The consumer walked more links than the queue can hold.
    fn runaway(&self, _vcpu: u32, _prio: usize) {}
    /// `port` was passed, PENDING still set, to an IRQ layer on `vcpu`.
    fn delivered(&self, _vcpu: u32, _port: Port, _seen: u32) {}
}

impl Observer for () {}

/// One vCPU's consumer: Linux's per-CPU `cpu_queue` (the local HEAD copies).
#[derive(Debug)]
pub struct Consumer {
    vcpu: u32,
    /// Where this vCPU stopped in each queue; 0 means "reached the tail, read
    /// HEAD from the control block next time".
    head: [u32; MAX_QUEUES],
    faults: Faults,
    /// Links followed before a queue counts as corrupt (a cycle): more than
    /// the ports that exist.
    max_links: usize,
    /// Pass deliveries to an IRQ layer whose ack clears PENDING, as Linux's
    /// `handle_irq_for_port()`, instead of clearing it here.
    irq_layer: bool,
}

impl Consumer {
    pub fn new(vcpu: u32, nr_ports: u32, faults: Faults) -> Self {
        Consumer { vcpu, head: [0; MAX_QUEUES], faults, max_links: nr_ports as usize + 1, irq_layer: false }
    }

    /// A consumer whose handler is an IRQ layer that acks (clears PENDING)
    /// itself, and may ignore a delivery another vCPU is handling.
    pub fn with_irq_layer(vcpu: u32, nr_ports: u32, faults: Faults) -> Self {
        Consumer { irq_layer: true, ..Consumer::new(vcpu, nr_ports, faults) }
    }

    pub fn vcpu(&self) -> u32 {
        self.vcpu
    }

    /// `__xen_evtchn_do_upcall`: while the upcall flag is set, clear it and
    /// drain the queues. Returns how many events were handled.
    pub fn upcall<S: SharedEvents, O: Observer>(&mut self, sh: &S, obs: &O, handler: &mut impl FnMut(Port)) -> usize {
        let pending = sh.upcall_pending(self.vcpu);
        let mut n = 0;
        // SeqCst: pairs with the hypervisor's set of the flag after it links
        // (vcpu_mark_events_pending); the flag is cleared before the drain so
        // a link made during it re-arms the loop.
        while pending.swap(0, Ordering::SeqCst) != 0 {
            n += self.handle_events(sh, obs, handler);
        }
        n
    }

    /// `__evtchn_fifo_handle_events`: take READY, consume the highest-priority
    /// queue one event at a time, folding in READY bits set meanwhile.
    pub fn handle_events<S: SharedEvents, O: Observer>(
        &mut self,
        sh: &S,
        obs: &O,
        handler: &mut impl FnMut(Port),
    ) -> usize {
        let cb = sh.control_block(self.vcpu);
        // SeqCst: an xchg, as in Linux; pairs with Xen's test_and_set of READY.
        let mut ready = cb.ready.swap(0, Ordering::SeqCst);
        let mut n = 0;
        let mut steps = 0;
        while ready != 0 {
            let prio = ready.trailing_zeros() as usize;
            n += self.consume_one_event(sh, obs, prio, &mut ready, handler);
            steps += 1;
            if steps > self.max_links * MAX_QUEUES {
                obs.runaway(self.vcpu, prio);
                return n;
            }
            ready |= cb.ready.swap(0, Ordering::SeqCst);
        }
        n
    }

    /// `consume_one_event`: unlink the head of queue `prio`, handle it if it
    /// is pending and unmasked, and remember where the queue goes on.
    fn consume_one_event<S: SharedEvents, O: Observer>(
        &mut self,
        sh: &S,
        obs: &O,
        prio: usize,
        ready: &mut u32,
        handler: &mut impl FnMut(Port),
    ) -> usize {
        let mut head = self.head[prio];
        // Reached the tail last time? Then Xen may have started the queue
        // afresh: read HEAD (SeqCst: Linux's virt_rmb before this read).
        if head == 0 {
            head = sh.control_block(self.vcpu).head[prio].load(Ordering::SeqCst);
        }
        let port = head;
        let Some(word) = sh.word(port) else {
            // Xen only links ports it has a word for; a HEAD without one is a
            // corrupt queue. Drop the queue as Linux would fault.
            obs.runaway(self.vcpu, prio);
            *ready &= !(1 << prio);
            self.head[prio] = 0;
            return 0;
        };
        obs.dequeued(self.vcpu, prio, port);
        let next = self.clear_linked(word);
        // A zero link: the queue is empty from our side; Xen sets READY again
        // (and writes HEAD) if it links something after the clear.
        if next == 0 {
            *ready &= !(1 << prio);
        }
        let mut handled = 0;
        let seen = word.load(Ordering::SeqCst);
        let masked = seen & MASKED != 0 && !self.faults.has(Fault::HandleMaskedEvent);
        if seen & PENDING != 0 && !masked && self.irq_layer {
            obs.delivered(self.vcpu, port, seen);
            handler(port);
            handled = 1;
        } else if seen & PENDING != 0 && !masked {
            // The irq chip's ack (clear_evtchn) clears PENDING before the
            // handler runs; a raise after this point is a new edge.
            if word.fetch_and(!PENDING, Ordering::SeqCst) & PENDING != 0 {
                obs.handled(self.vcpu, port, seen);
                handler(port);
                handled = 1;
            }
        }
        self.head[prio] = next;
        handled
    }

    /// `clear_linked`: clear LINKED and LINK in one atomic step and return the
    /// link, so a link Xen appends concurrently is either seen here or finds
    /// LINKED clear and makes Xen start the queue afresh.
    fn clear_linked(&self, word: &AtomicU32) -> u32 {
        if self.faults.has(Fault::ClearLinkedBeforeReadLink) {
            let w = word.load(Ordering::SeqCst);
            word.fetch_and(!(LINKED | LINK_MASK), Ordering::SeqCst);
            return w & LINK_MASK;
        }
        let mut w = word.load(Ordering::SeqCst);
        loop {
            let new = w & !(LINKED | LINK_MASK);
            // SeqCst: Linux's sync_cmpxchg, a full barrier on x86.
            match word.compare_exchange(w, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(old) => return old & LINK_MASK,
                Err(cur) => {
                    w = cur;
                    spin_hint();
                }
            }
        }
    }
}

/// `evtchn_fifo_mask`: set MASKED.
pub fn mask<S: SharedEvents>(sh: &S, port: Port) {
    if let Some(word) = sh.word(port) {
        word.fetch_or(MASKED, Ordering::SeqCst);
    }
}

/// `evtchn_fifo_unmask`: clear MASKED without a hypercall unless the event is
/// pending, in which case only Xen may clear it (and link the event).
pub fn unmask<S: SharedEvents, H: Hypercalls>(sh: &S, hc: &H, port: Port, faults: Faults) {
    let Some(word) = sh.word(port) else { return };
    if !clear_masked_cond(word, faults) {
        hc.unmask(port);
    }
}

/// `clear_masked_cond`: true if MASKED is now clear; false if the event is
/// pending and the hypervisor must unmask it. Waits out BUSY (Xen is linking
/// behind this event and must not see it unmasked meanwhile).
fn clear_masked_cond(word: &AtomicU32, faults: Faults) -> bool {
    let mut w = word.load(Ordering::SeqCst);
    loop {
        if w & MASKED == 0 {
            return true;
        }
        if w & PENDING != 0 && !faults.has(Fault::UnmaskIgnoresPending) {
            return false;
        }
        let old = w & !BUSY;
        let new = old & !MASKED;
        match word.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(cur) => {
                w = cur;
                spin_hint();
            }
        }
    }
}
