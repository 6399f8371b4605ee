//! The hypervisor's per-channel state (`struct evtchn`), as much of it as
//! FIFO and routing use.

use crate::abi::PRIORITY_DEFAULT;
use crate::sync::{lock, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Mutex, Ordering, RwLock};

/// `chn->state` plus the distinctions routing cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Free = 0,
    Unbound,
    Interdomain,
    Pirq,
    /// A global VIRQ (e.g. VIRQ_DOM_EXC): rebindable.
    VirqGlobal,
    /// A per-vCPU VIRQ (e.g. VIRQ_TIMER): tied to its vCPU.
    VirqPerVcpu,
    Ipi,
    /// Consumed by Xen itself (ioreq, vm_event): no guest queue.
    XenConsumer,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::Free,
        Kind::Unbound,
        Kind::Interdomain,
        Kind::Pirq,
        Kind::VirqGlobal,
        Kind::VirqPerVcpu,
        Kind::Ipi,
        Kind::XenConsumer,
    ];

    /// May the guest move it to another vCPU (`EVTCHNOP_bind_vcpu`'s rule,
    /// which `EVTCHNOP_set_vcpu_set` shares)?
    pub const fn per_os(self) -> bool {
        matches!(self, Kind::Unbound | Kind::Interdomain | Kind::Pirq | Kind::VirqGlobal)
    }
}

/// `union evtchn_fifo_lastq`: the queue the event was last linked on, read
/// and written as one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastQ {
    pub vcpu: u32,
    pub prio: usize,
}

impl LastQ {
    /// Xen's layout: `last_priority` in byte 0, `last_vcpu_id` in bytes 2–3.
    pub fn raw(self) -> u32 {
        self.prio as u32 | self.vcpu << 16
    }
    pub fn from_raw(raw: u32) -> Self {
        LastQ { vcpu: raw >> 16, prio: (raw & 0xff) as usize }
    }
}

pub struct Channel {
    /// `chn->lock`: write-held while the channel is allocated, closed,
    /// re-bound or given a set; read-held by unmask and set-priority.
    pub lock: RwLock<()>,
    /// The interdomain peer's `chn->lock`: `evtchn_send` holds the *sending*
    /// channel's lock, not this channel's, so a send races everything that
    /// takes only `lock`. Close and allocation take both
    /// (`double_evtchn_lock`), sender side first.
    pub sender_lock: RwLock<()>,
    kind: AtomicU8,
    /// `notify_vcpu_id`: the bound vCPU, always a member of `set`.
    pub notify_vcpu: AtomicU32,
    /// `chn->priority`: written without a lock, read at set-pending time
    /// (a change only affects events linked afterwards).
    pub priority: AtomicU8,
    /// `fifo_lastq` (raw [`LastQ`]): written under both queue locks.
    pub lastq: AtomicU32,
    /// `chn->pending`: a raise while no event-array page held the word.
    pub pending: AtomicBool,
    /// The vCPU set, written one word at a time (atomically) under
    /// `set_lock`. Its own lock, because senders of an interdomain channel
    /// hold the *sending* channel's lock, not this one. Never held with a
    /// queue lock, so it adds no lock-order edge.
    pub set: Box<[AtomicU64]>,
    /// Serialises writers of `set`, and readers that need several words.
    pub set_lock: Mutex<()>,
    /// The set is held out of line (a domain of more than 64 vCPUs after
    /// its first `EVTCHNOP_set_vcpu_set`), counted against `max_sets`.
    /// Written under `lock`.
    pub has_ext: AtomicBool,
    /// The guest gave the channel a set (Xen: `route.word` or `route.ext`
    /// not empty). Without one, set-pending neither routes nor counts.
    pub has_set: AtomicBool,
}

impl Channel {
    pub fn new(nwords: usize) -> Self {
        Channel {
            lock: RwLock::new(()),
            sender_lock: RwLock::new(()),
            kind: AtomicU8::new(Kind::Free as u8),
            notify_vcpu: AtomicU32::new(0),
            priority: AtomicU8::new(PRIORITY_DEFAULT as u8),
            // Xen's struct evtchn starts zeroed: last queue vCPU 0, priority 0.
            lastq: AtomicU32::new(0),
            pending: AtomicBool::new(false),
            set: (0..nwords).map(|_| AtomicU64::new(0)).collect(),
            set_lock: Mutex::new(()),
            has_ext: AtomicBool::new(false),
            has_set: AtomicBool::new(false),
        }
    }

    /// Replace the set (word by word, under `set_lock`).
    pub fn write_set(&self, words: &[u64]) {
        let _g = lock(&self.set_lock);
        for (w, v) in self.set.iter().zip(words.iter().chain(core::iter::repeat(&0))) {
            // Relaxed: the lock orders writers; a lock-free reader takes one
            // word, and any version of it names vCPUs of some version of the set.
            w.store(*v, Ordering::Relaxed);
        }
    }

    /// The set as plain words (under `set_lock`).
    pub fn read_set(&self) -> Vec<u64> {
        let _g = lock(&self.set_lock);
        self.set.iter().map(|w| w.load(Ordering::Relaxed)).collect()
    }

    pub fn kind(&self) -> Kind {
        // Relaxed: kind changes only under the write lock; readers hold the read lock.
        Kind::ALL[self.kind.load(Ordering::Relaxed) as usize]
    }

    pub fn set_kind(&self, k: Kind) {
        self.kind.store(k as u8, Ordering::Relaxed);
    }
}
