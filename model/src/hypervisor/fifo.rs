//! Xen 4.17's `xen/common/event_fifo.c`, function by function, on the
//! model's shared pages. Comments at each race say which interleaving the
//! code is there for; the Xen function each mirrors is named in its doc.

use super::channel::{Channel, LastQ};
use super::Hypervisor;
use crate::abi::{Port, SharedEvents, BUSY, LINKED, LINK_MASK, MASKED, MAX_QUEUES, PENDING, PRIORITY_MIN};
use crate::bugs::Bug;
use crate::error::Error;
use crate::sync::{lock, AtomicU32, Mutex, MutexGuard, Ordering};

/// `struct evtchn_fifo_queue`: HEAD lives in the vCPU's control block.
pub struct Queue {
    pub lock: Mutex<()>,
    /// Last port linked, or 0 once invalidated. Protected by `lock`; an
    /// atomic only so the seeded lock-skipping bug stays defined behaviour.
    pub tail: AtomicU32,
}

impl Queue {
    pub fn new() -> Self {
        Queue { lock: Mutex::new(()), tail: AtomicU32::new(0) }
    }
    fn tail(&self) -> u32 {
        self.tail.load(Ordering::Relaxed)
    }
    fn set_tail(&self, t: u32) {
        self.tail.store(t, Ordering::Relaxed);
    }
}

/// `try_set_link`: set LINK iff the word is still LINKED. `Some(true)` linked,
/// `Some(false)` not LINKED (the tail was consumed), `None` lost a race.
fn try_set_link(word: &AtomicU32, w: &mut u32, link: Port) -> Option<bool> {
    if *w & LINKED == 0 {
        return Some(false);
    }
    let old = *w;
    let new = (old & !(BUSY | LINK_MASK)) | link;
    // SeqCst: Xen's cmpxchg; pairs with the guest's cmpxchg in clear_linked.
    match word.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => Some(true),
        Err(cur) => {
            *w = cur;
            None
        }
    }
}

/// `evtchn_fifo_set_link`: link `link` behind the tail word iff the tail is
/// still LINKED. The guest may only set/clear MASKED, clear PENDING and clear
/// LINKED meanwhile; BUSY stops it unmasking, so the cmpxchg fails at most 4 times.
fn set_link(word: &AtomicU32, link: Port) -> bool {
    let mut w = word.load(Ordering::SeqCst);
    if let Some(r) = try_set_link(word, &mut w, link) {
        return r;
    }
    // Lock the word against guest unmasking.
    word.fetch_or(BUSY, Ordering::SeqCst);
    w = word.load(Ordering::SeqCst);
    for _ in 0..4 {
        if let Some(r) = try_set_link(word, &mut w, link) {
            if !r {
                word.fetch_and(!BUSY, Ordering::SeqCst);
            }
            return r;
        }
    }
    // Xen warns "port not linked" and goes on as if linked.
    word.fetch_and(!BUSY, Ordering::SeqCst);
    true
}

/// Both queue locks of one set-pending, released on drop (old first).
struct QueueLocks<'a> {
    _old: Option<MutexGuard<'a, ()>>,
    _new: Option<MutexGuard<'a, ()>>,
}

impl Hypervisor {
    pub(super) fn qidx(v: u32, prio: usize) -> usize {
        v as usize * MAX_QUEUES + prio
    }

    /// Lock queue `q` and the event's last queue `old_q`. Xen orders the two
    /// locks by address; the model orders them by index, also a total order.
    fn lock_queues(&self, q: usize, old_q: usize) -> QueueLocks<'_> {
        let l = |i: usize| Some(lock(&self.queues[i].lock));
        if q == old_q {
            return QueueLocks { _old: None, _new: l(q) };
        }
        if self.cfg.bugs.has(Bug::SkipOldQueueLock) {
            return QueueLocks { _old: None, _new: l(q) };
        }
        if q < old_q || self.cfg.bugs.has(Bug::LockOrderInverted) {
            let new = l(q);
            QueueLocks { _old: l(old_q), _new: new }
        } else {
            let old = l(old_q);
            QueueLocks { _old: old, _new: l(q) }
        }
    }

    /// `evtchn_fifo_set_pending`: set PENDING and, if the event is unmasked
    /// and not already LINKED, link it on queue (`v`, its priority).
    pub(super) fn fifo_set_pending(&self, v: u32, port: Port, ch: &Channel) {
        let Some(word) = self.shared.word(port) else {
            // No event-array page yet: remember for when it is added.
            ch.pending.store(true, Ordering::Relaxed);
            return;
        };

        // Lock every queue the event may be on (two during a queue change)
        // *before* testing PENDING, and hold the new one until the event is
        // visibly linked, so the guest is never woken for an event it cannot
        // see. The last queue may change while we wait for its lock: retry.
        let mut locked = None;
        let (mut q, mut old_q) = (0, 0);
        let tries = if self.cfg.bugs.has(Bug::ThreeTryBailout) { 3 } else { 4 };
        for attempt in 0..tries {
            let last = LastQ::from_raw(ch.lastq.load(Ordering::SeqCst));
            // After three tries lost to queue changes, a fourth takes the
            // priority as read (a change only matters to later links): then
            // only fifo_lastq must hold still.
            let stay = attempt == 3;
            q = Self::qidx(v, ch.priority.load(Ordering::Relaxed) as usize);
            old_q = Self::qidx(last.vcpu, last.prio);
            let guards = self.lock_queues(q, old_q);
            let again = LastQ::from_raw(ch.lastq.load(Ordering::SeqCst));
            if (stay || q == Self::qidx(v, ch.priority.load(Ordering::Relaxed) as usize))
                && old_q == Self::qidx(again.vcpu, again.prio)
            {
                locked = Some(guards);
                break;
            }
            // fifo_lastq changed even so: a set-pending that began after us
            // linked the event, PENDING set, so the guest sees it after this
            // raise. Merged into that one, as any raise of a pending event.
            if stay {
                return;
            }
        }

        let mut linked = true;
        match locked {
            // Xen 4.17 as released: gives up before setting PENDING, and the
            // event is lost.
            None => log_lost(port),
            // Control block not mapped: Xen drops the event ("has no FIFO
            // event channel control block"); routing must never choose such
            // a vCPU.
            Some(_) if !self.sched.is_mapped(v) => log_lost(port),
            Some(mut guards) => {
                // SeqCst: a locked bit op in Xen; pairs with the guest's clear
                // of PENDING. Set only with the queue locks held (see above).
                if word.fetch_or(PENDING, Ordering::SeqCst) & PENDING == 0 {
                    self.ghost.raised(port);
                }
                let w_masked = word.load(Ordering::SeqCst) & MASKED != 0;
                let won_linked = !w_masked && word.fetch_or(LINKED, Ordering::SeqCst) & LINKED == 0;
                if won_linked {
                    self.ghost.linked(port, q);
                    linked = self.link_on(q, old_q, v, port, ch, &mut guards);
                } else if !w_masked {
                    // Still LINKED on its old queue: it stays there, whatever
                    // routing preferred. Only that queue's vCPU may unlink it.
                    if self.cfg.bugs.has(Bug::RouteLinkedToNewQueue) && q != old_q {
                        self.ghost.linked(port, q);
                        linked = self.link_on(q, old_q, v, port, ch, &mut guards);
                    } else {
                        self.ghost.stayed_linked(port);
                    }
                }
            }
        }

        // Guards dropped: the queue locks are released before notifying.
        let cb = self.shared.control_block(v);
        let prio = q % MAX_QUEUES;
        if !linked && cb.ready.fetch_or(1 << prio, Ordering::SeqCst) & (1 << prio) == 0 {
            self.mark_events_pending(v);
        }
    }

    /// The linking half of `evtchn_fifo_set_pending`, with both locks held.
    /// Returns whether the event went behind an existing tail.
    fn link_on(&self, q: usize, old_q: usize, v: u32, port: Port, ch: &Channel, guards: &mut QueueLocks<'_>) -> bool {
        // If this event was the old queue's tail, that queue is now empty and
        // its tail must be invalidated, or a later event for the old queue
        // would be linked behind this one, onto the new queue.
        if !self.cfg.bugs.has(Bug::NoTailInvalidation) && self.queues[old_q].tail() == port {
            self.queues[old_q].set_tail(0);
        }
        if old_q != q {
            ch.lastq.store(LastQ { vcpu: v, prio: q % MAX_QUEUES }.raw(), Ordering::SeqCst);
            guards._old = None;
        }
        // Link behind the tail iff the tail is still LINKED; if the guest has
        // consumed it (or the queue is empty), start the queue at HEAD.
        let queue = &self.queues[q];
        let mut linked = false;
        let tail = queue.tail();
        if tail != 0 {
            if let Some(tw) = self.shared.word(tail) {
                linked = set_link(tw, port);
            }
        }
        if !linked {
            // SeqCst: Xen's write_atomic then the READY test_and_set; the
            // guest reads HEAD only after seeing READY.
            self.shared.control_block(v).head[q % MAX_QUEUES].store(port, Ordering::SeqCst);
        }
        queue.set_tail(port);
        linked
    }

    /// `evtchn_fifo_unmask`: clear MASKED and, if pending, link the event.
    pub(super) fn fifo_unmask(&self, port: Port, ch: &Channel) {
        let Some(word) = self.shared.word(port) else { return };
        word.fetch_and(!MASKED, Ordering::SeqCst);
        // Relink if pending.
        if word.load(Ordering::SeqCst) & PENDING != 0 {
            self.set_pending(port, ch);
        }
    }

    /// `evtchn_fifo_set_priority`: only future links use the new queue; an
    /// event pending or being linked stays on the old one.
    pub(super) fn fifo_set_priority(&self, ch: &Channel, prio: u32) -> Result<(), Error> {
        if prio > PRIORITY_MIN {
            return Err(Error::BadPriority);
        }
        ch.priority.store(prio as u8, Ordering::Relaxed);
        Ok(())
    }

    /// `evtchn_fifo_is_busy`: a LINKED port may not be reallocated, or its
    /// first event could be delivered on the old queue's vCPU.
    pub(super) fn fifo_is_busy(&self, port: Port) -> bool {
        self.shared.word(port).is_some_and(|w| w.load(Ordering::SeqCst) & LINKED != 0)
    }

    /// `evtchn_fifo_clear_pending`: just clear PENDING; the guest unlinks and
    /// ignores non-pending events.
    pub(super) fn fifo_clear_pending(&self, port: Port) {
        if let Some(w) = self.shared.word(port) {
            if w.fetch_and(!PENDING, Ordering::SeqCst) & PENDING != 0 {
                self.ghost.dropped(port);
            }
        }
    }

    /// `vcpu_mark_events_pending`: raise the upcall, kick if it was clear.
    fn mark_events_pending(&self, v: u32) {
        if self.shared.upcall_pending(v).swap(1, Ordering::SeqCst) == 0 {
            self.sched.note_kick(v);
        }
    }
}

/// Xen's warning when it drops an event (the no-lost-event check sees the
/// loss itself).
fn log_lost(port: Port) {
    #[cfg(not(feature = "loom"))]
    eprintln!("port {port} lost event");
    #[cfg(feature = "loom")]
    let _ = port;
}
