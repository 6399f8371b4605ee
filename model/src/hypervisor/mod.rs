//! One domain as Xen sees it: its channels, its vCPUs' FIFO queues, the
//! scheduler state routing reads, and the event-channel operations a guest
//! calls, mirroring `xen/common/event_channel.c` with evroute's patch.

mod channel;
mod fifo;
pub mod sched;

pub use channel::{Kind, LastQ};
pub use sched::{RunState, Sched};

use crate::abi::{EvtchnSetVcpuSet, Port, EVTCHN_VCPU_SET_GET, MAX_VCPUS, PRIORITY_DEFAULT};
use crate::bugs::{Bug, Bugs};
use crate::error::Error;
use crate::ghost::Ghost;
use crate::guest::Hypercalls;
use crate::route::{self, Bits, Policy, RouteInputs};
use crate::shared::SharedPages;
use crate::sync::{lock, read, write, AtomicU32, AtomicU64, Ordering};
use channel::Channel;
use fifo::Queue;
use sched::period_of;

/// How the model domain is built.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub nr_vcpus: u32,
    /// Ports 0..nr_ports have event words (port 0 is never used).
    pub nr_ports: u32,
    /// The boot option `evtchn-route=`.
    pub policy: Policy,
    /// Whether the domain set up FIFO (EVTCHNOP_init_control); false = 2-level.
    pub fifo: bool,
    /// vCPUs (of the first 64) that have not mapped their FIFO control block
    /// yet; [`Hypervisor::init_control`] maps one.
    pub unmapped: u64,
    /// `evtchn-route-max-sets=`: out-of-line sets a domain may hold (only
    /// domains of more than 64 vCPUs allocate sets).
    pub max_sets: u32,
    pub bugs: Bugs,
}

/// `evtchn-route-max-sets=`'s default.
pub const MAX_SETS_DEFAULT: u32 = 4096;

impl Config {
    pub fn new(nr_vcpus: u32, nr_ports: u32, policy: Policy) -> Self {
        Config { nr_vcpus, nr_ports, policy, fifo: true, unmapped: 0, max_sets: MAX_SETS_DEFAULT, bugs: Bugs::NONE }
    }
}

pub struct Hypervisor {
    cfg: Config,
    shared: SharedPages,
    chans: Box<[Channel]>,
    /// `nr_vcpus * 16` queues; queue `v * 16 + prio`.
    queues: Box<[Queue]>,
    pub sched: Sched,
    ghost: Ghost,
    /// Out-of-line sets held (`nr_ext`), against `max_sets`.
    nr_ext: AtomicU32,
    /// Xen's `NOW()` in ns, as far as `Balanced`'s load periods go: moved
    /// on by `time_passes`.
    now: AtomicU64,
}

impl Hypervisor {
    pub fn new(cfg: Config) -> Self {
        assert!(cfg.nr_vcpus >= 1 && cfg.nr_vcpus <= MAX_VCPUS, "1..={MAX_VCPUS} vCPUs");
        let nwords = cfg.nr_vcpus.div_ceil(64) as usize;
        Hypervisor {
            shared: SharedPages::new(cfg.nr_vcpus, cfg.nr_ports),
            chans: (0..cfg.nr_ports).map(|_| Channel::new(nwords)).collect(),
            queues: (0..cfg.nr_vcpus as usize * crate::abi::MAX_QUEUES).map(|_| Queue::new()).collect(),
            sched: Sched::with(cfg.nr_vcpus, cfg.unmapped, cfg.bugs),
            ghost: Ghost::new(cfg.nr_ports),
            nr_ext: AtomicU32::new(0),
            now: AtomicU64::new(0),
            cfg,
        }
    }

    /// `ns` of time pass (the clock `Balanced`'s load periods follow).
    pub fn time_passes(&self, ns: u64) {
        self.now.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn shared(&self) -> &SharedPages {
        &self.shared
    }

    pub fn ghost(&self) -> &Ghost {
        &self.ghost
    }

    /// `_evtchn_from_port`: a valid port's channel. Port 0 is valid in Xen
    /// (`ECS_RESERVED`), so operations that need a bound channel refuse it
    /// as unbound, and unmask or set-priority accept it.
    fn chan(&self, port: Port) -> Result<&Channel, Error> {
        self.chans.get(port as usize).ok_or(Error::BadPort)
    }

    /// A valid port whose channel is in use.
    fn bound_chan(&self, port: Port) -> Result<&Channel, Error> {
        let ch = self.chan(port)?;
        if ch.kind() == Kind::Free {
            return Err(Error::Unbound);
        }
        Ok(ch)
    }

    /// `domain_vcpu()`: the vCPU exists (it may be offline, as in Xen).
    fn check_vcpu(&self, v: u32) -> Result<(), Error> {
        if v >= self.cfg.nr_vcpus {
            return Err(Error::NoSuchVcpu);
        }
        Ok(())
    }

    /// Does set-pending consult this channel's set? With the option on,
    /// once the guest gave it one (only per-OS channels can have one).
    fn routes(&self, ch: &Channel) -> bool {
        self.cfg.policy != Policy::Bound && ch.has_set.load(Ordering::Relaxed)
    }

    /// `get_free_port` + `evtchn_port_init`, as `EVTCHNOP_alloc_unbound` and
    /// the bind operations do: the lowest free port that is not still LINKED.
    pub fn alloc(&self, kind: Kind, vcpu: u32) -> Result<Port, Error> {
        assert!(kind != Kind::Free);
        self.check_vcpu(vcpu)?;
        for port in 1..self.cfg.nr_ports {
            let ch = &self.chans[port as usize];
            let _s = write(&ch.sender_lock);
            let _g = write(&ch.lock);
            if ch.kind() != Kind::Free {
                continue;
            }
            if self.fifo_is_busy(port) && !self.cfg.bugs.has(Bug::ReuseLinkedPort) {
                continue;
            }
            ch.set_kind(kind);
            ch.notify_vcpu.store(vcpu, Ordering::Relaxed);
            ch.priority.store(PRIORITY_DEFAULT as u8, Ordering::Relaxed);
            ch.pending.store(false, Ordering::Relaxed);
            ch.write_set(&only(ch.set.len(), vcpu));
            self.ghost.allocated(port);
            return Ok(port);
        }
        Err(Error::NoFreePort)
    }

    /// `evtchn_close` (for the model's loop-back channels): clear PENDING,
    /// free the channel and drop its set. A LINKED event stays on its queue
    /// for the guest to unlink; the port is busy until then.
    pub fn close(&self, port: Port) -> Result<(), Error> {
        let ch = self.bound_chan(port)?;
        let _s = write(&ch.sender_lock);
        let _g = write(&ch.lock);
        if ch.kind() == Kind::Free {
            return Err(Error::Unbound);
        }
        self.fifo_clear_pending(port);
        ch.set_kind(Kind::Free);
        // evtchn_free: "Reset binding to vcpu0 when the channel is freed."
        ch.notify_vcpu.store(0, Ordering::Relaxed);
        ch.write_set(&[]);
        ch.has_set.store(false, Ordering::Relaxed);
        if ch.has_ext.swap(false, Ordering::Relaxed) {
            self.nr_ext.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `evtchn_reset`: close every channel.
    pub fn reset(&self) {
        for port in 1..self.cfg.nr_ports {
            let _ = self.close(port);
        }
    }

    /// The receiving half of `evtchn_send` / `send_guest_pirq` /
    /// `send_guest_global_virq`: set the channel pending, routed.
    pub fn send(&self, port: Port) -> Result<(), Error> {
        let ch = self.bound_chan(port)?;
        let _g = read(&ch.sender_lock);
        if ch.kind() == Kind::Free {
            return Err(Error::Unbound);
        }
        self.set_pending(port, ch);
        Ok(())
    }

    /// `EVTCHNOP_init_control` for vCPU `v`: its control block is mapped, so
    /// routing may choose its queues from now on.
    pub fn init_control(&self, v: u32) -> Result<(), Error> {
        self.check_vcpu(v)?;
        self.sched.map_control_block(v);
        Ok(())
    }

    /// `evtchn_fifo_set_pending_routed` (the routed port ops): pick the
    /// queue's vCPU, then the unchanged FIFO set-pending. With the option
    /// off, or no set, `evtchn_fifo_set_pending` on the bound vCPU alone.
    fn set_pending(&self, port: Port, ch: &Channel) {
        self.ghost.raising(port);
        let v = self.route_target(port, ch);
        self.fifo_set_pending(v, port, ch);
    }

    /// `evtchn_route_vcpu()` in the Xen patch: the routing decision for one
    /// set-pending, with `balanced`'s bookkeeping. Without a set (or with
    /// the option off) this is `notify_vcpu_id`, as today.
    fn route_target(&self, port: Port, ch: &Channel) -> u32 {
        let bound = ch.notify_vcpu.load(Ordering::Relaxed);
        if !self.routes(ch) {
            return bound;
        }
        let last = LastQ::from_raw(ch.lastq.load(Ordering::Relaxed)).vcpu;
        let balanced = self.cfg.policy == Policy::Balanced;
        let now = period_of(self.now.load(Ordering::Relaxed));
        // The first decision of a period lifts the marks of the last one.
        if balanced {
            self.sched.new_period(now);
        }
        let v = self.decide_target(port, ch, bound, last);
        if balanced {
            self.sched.note_routed(v, now);
        }
        v
    }

    /// The decision itself, on the masks as they are now.
    fn decide_target(&self, port: Port, ch: &Channel, bound: u32, last: u32) -> u32 {
        let s = &self.sched;
        // The bug ignores who can take the event: every vCPU "can".
        let everyone: Box<[crate::sync::AtomicU64]>;
        let receivable = if self.cfg.bugs.has(Bug::RouteIgnoresReceivable) {
            everyone = s.receivable.iter().map(|_| crate::sync::AtomicU64::new(!0)).collect();
            &everyone
        } else {
            &s.receivable
        };
        // A set of one word is a consistent snapshot read without a lock;
        // a longer one is read under the set's lock (as the C).
        let (running, blocked, heavy) = (&s.running[..], &s.blocked[..], &s.heavy[..]);
        let receivable = &receivable[..];
        let (v, set) = if ch.set.len() == 1 {
            let one = [ch.set[0].load(Ordering::Relaxed)];
            let inputs = RouteInputs { set: &one[..], running, blocked, heavy, receivable, bound, last };
            (self.decide(&inputs), one.to_vec())
        } else {
            let inputs = RouteInputs { set: &ch.set[..], running, blocked, heavy, receivable, bound, last };
            // Fast path, no lock: the first case needs one bit of one word
            // of the set, atomic on its own.
            if route::stays_on_last(self.cfg.policy, &inputs) {
                let _ = self.sched.can_take(last);
                return last;
            }
            let _g = lock(&ch.set_lock);
            let words: Vec<u64> = ch.set.iter().map(|w| w.load(Ordering::Relaxed)).collect();
            (self.decide(&inputs), words)
        };
        self.routed(port, v, bound, &set)
    }

    /// `evtchn_route_pick()`, with the seeded routing bugs.
    fn decide<S: Bits + ?Sized>(&self, inputs: &RouteInputs<'_, S, [crate::sync::AtomicU64]>) -> u32 {
        let mut v = route::route(self.cfg.policy, inputs);
        let (set, s) = (inputs.set, &self.sched);
        if self.cfg.bugs.has(Bug::RouteIgnoresSet) {
            v = route::first_cyclic(s.running.len(), inputs.last, |i| s.running[i].load(Ordering::Relaxed))
                .unwrap_or(v);
        }
        let none_awake = |i: usize| set.word(i) & (s.running.word(i) | s.blocked.word(i)) == 0;
        if self.cfg.bugs.has(Bug::FallbackOutsideSet) && (0..set.nwords()).all(none_awake) {
            v = inputs.bound;
        }
        v
    }

    /// Routing chose `v` for `port` from `set`: tell the ghost, and order the
    /// chosen vCPU's control block after its receivable bit (the C's smp_rmb).
    fn routed(&self, port: Port, v: u32, bound: u32, set: &[u64]) -> u32 {
        let _ = self.sched.can_take(v);
        self.ghost.routed(port, v, bound, set, |w| self.sched.can_take(w));
        v
    }

    /// `EVTCHNOP_unmask`.
    pub fn unmask(&self, port: Port) -> Result<(), Error> {
        let ch = self.chan(port)?;
        let _g = read(&ch.lock);
        self.fifo_unmask(port, ch);
        Ok(())
    }

    /// `EVTCHNOP_set_priority`: Xen 4.17 checks only that the port is valid.
    pub fn set_priority(&self, port: Port, prio: u32) -> Result<(), Error> {
        let ch = self.chan(port)?;
        let _g = read(&ch.lock);
        self.fifo_set_priority(ch, prio)
    }

    /// `EVTCHNOP_bind_vcpu`: move a per-OS channel to one vCPU, which also
    /// replaces its set by that one vCPU.
    pub fn bind_vcpu(&self, port: Port, vcpu: u32) -> Result<(), Error> {
        self.check_vcpu(vcpu)?;
        let ch = self.bound_chan(port)?;
        let _g = write(&ch.lock);
        if !ch.kind().per_os() {
            return Err(Error::WrongKind);
        }
        ch.notify_vcpu.store(vcpu, Ordering::Relaxed);
        ch.write_set(&only(ch.set.len(), vcpu));
        Ok(())
    }

    /// `EVTCHNOP_set_vcpu_set`, as the hypercall: `op.flags` 0 sets the
    /// channel's set from `bitmap`, [`EVTCHN_VCPU_SET_GET`] copies it into
    /// `bitmap` and returns the domain's vCPU count in `op.nr_bits`.
    /// `bitmap` is the guest's buffer, `None` if it cannot be accessed.
    /// Checks run in the order docs/abi.md lists; a failure changes nothing.
    pub fn vcpu_set_op(&self, op: &mut EvtchnSetVcpuSet, bitmap: Option<&mut [u8]>) -> Result<(), Error> {
        if self.cfg.policy == Policy::Bound || !self.cfg.fifo {
            return Err(Error::NotSupported);
        }
        if op.flags & !EVTCHN_VCPU_SET_GET != 0 || op.pad != 0 {
            return Err(Error::BadArgument);
        }
        let ch = self.bound_chan(op.port)?;
        if !ch.kind().per_os() {
            return Err(Error::WrongKind);
        }
        let get = op.flags & EVTCHN_VCPU_SET_GET != 0;
        if !get && op.nr_bits == 0 {
            return Err(Error::EmptySet);
        }
        if op.nr_bits > MAX_VCPUS {
            return Err(Error::BitBeyondVcpus);
        }
        let nbytes = op.nr_bits.div_ceil(8) as usize;
        // Copying nothing cannot fault.
        let mut none: [u8; 0] = [];
        let buf = match bitmap {
            Some(b) if b.len() >= nbytes => &mut b[..nbytes],
            _ if nbytes == 0 => &mut none[..],
            _ => return Err(Error::Fault),
        };
        if get {
            self.get_set(ch, op.nr_bits, buf)?;
            op.nr_bits = self.cfg.nr_vcpus;
            return Ok(());
        }
        self.set_set(ch, op.nr_bits, buf)
    }

    /// The set half: the guest's bytes, already copied in (before any lock).
    fn set_set(&self, ch: &Channel, nr_bits: u32, bytes: &[u8]) -> Result<(), Error> {
        let mut words = vec![0u64; self.cfg.nr_vcpus.div_ceil(64).max(nr_bits.div_ceil(64)) as usize];
        bytes_to_words(bytes, &mut words);
        // Bits at or past nr_bits are not part of the set.
        for (i, w) in words.iter_mut().enumerate() {
            *w &= route::valid_bits(i, nr_bits);
        }
        let receivers: Vec<u64> = self.sched.receivable.iter().map(|w| w.load(Ordering::Relaxed)).collect();
        let mut receivers_long = receivers.clone();
        receivers_long.resize(words.len(), 0);
        route::check_vcpu_set(&words[..], nr_bits, self.cfg.nr_vcpus, &receivers_long[..])?;

        let _g = write(&ch.lock);
        // Closed or re-bound while we checked? Then the checks are stale.
        if !ch.kind().per_os() {
            return Err(Error::WrongKind);
        }
        let n = ch.set.len();
        if n > 1 && !ch.has_ext.load(Ordering::Relaxed) {
            if self.nr_ext.load(Ordering::Relaxed) >= self.cfg.max_sets {
                return Err(Error::TooManySets);
            }
            self.nr_ext.fetch_add(1, Ordering::Relaxed);
            ch.has_ext.store(true, Ordering::Relaxed);
        }
        // Keep the bound vCPU inside the set (as the Xen patch: before the
        // set is written; a decision in between still stays in its set).
        let bound = ch.notify_vcpu.load(Ordering::Relaxed);
        if !route::test_bit(&words[..], bound) {
            let first = route::first_cyclic(n, 0, |i| words[i] & receivers[i])
                .expect("checked: a vCPU that can take events is in the set");
            ch.notify_vcpu.store(first, Ordering::Relaxed);
        }
        ch.write_set(&words[..n]);
        ch.has_set.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The get half: `nr_bits` bits of the set into `out` (bits past
    /// `nr_bits` clear), copied out after the lock is dropped.
    fn get_set(&self, ch: &Channel, nr_bits: u32, out: &mut [u8]) -> Result<(), Error> {
        let set = ch.read_set();
        for (i, byte) in out.iter_mut().enumerate() {
            let word = set.get(i / 8).copied().unwrap_or(0);
            let mut b = (word >> ((i % 8) * 8)) as u8;
            if (i as u32 + 1) * 8 > nr_bits {
                b &= (1u16 << (nr_bits % 8)).wrapping_sub(1) as u8;
            }
            *byte = b;
        }
        Ok(())
    }

    /// Set the channel's set from `nr_bits` bits of `bitmap`.
    pub fn set_vcpu_set(&self, port: Port, nr_bits: u32, bitmap: Option<&[u8]>) -> Result<(), Error> {
        let mut copy = bitmap.map(<[u8]>::to_vec);
        let mut op = EvtchnSetVcpuSet { port, flags: 0, nr_bits, pad: 0, bitmap: 0 };
        self.vcpu_set_op(&mut op, copy.as_deref_mut())
    }

    /// Read the channel's set into `out` (`nr_bits` bits of it); the
    /// domain's vCPU count.
    pub fn get_vcpu_set(&self, port: Port, nr_bits: u32, out: Option<&mut [u8]>) -> Result<u32, Error> {
        let mut op = EvtchnSetVcpuSet { port, flags: EVTCHN_VCPU_SET_GET, nr_bits, pad: 0, bitmap: 0 };
        self.vcpu_set_op(&mut op, out)?;
        Ok(op.nr_bits)
    }

    /// The channel's set as words (for tests and the debug key).
    pub fn vcpu_set_words(&self, port: Port) -> Result<Vec<u64>, Error> {
        Ok(self.chan(port)?.read_set())
    }

    /// `notify_vcpu_id` (0 for a free channel, as Xen resets it).
    pub fn bound_vcpu(&self, port: Port) -> Result<u32, Error> {
        Ok(self.chan(port)?.notify_vcpu.load(Ordering::Relaxed))
    }

    /// `chn->priority`.
    pub fn priority(&self, port: Port) -> Result<u32, Error> {
        Ok(u32::from(self.chan(port)?.priority.load(Ordering::Relaxed)))
    }

    /// `fifo_lastq`, raw (Xen's layout).
    pub fn lastq_raw(&self, port: Port) -> Result<u32, Error> {
        Ok(self.chan(port)?.lastq.load(Ordering::Relaxed))
    }

    pub fn kind(&self, port: Port) -> Result<Kind, Error> {
        Ok(self.chan(port)?.kind())
    }

    /// The vCPU of the queue `port` was last linked on.
    pub fn last_vcpu(&self, port: Port) -> Result<u32, Error> {
        Ok(LastQ::from_raw(self.chan(port)?.lastq.load(Ordering::Relaxed)).vcpu)
    }
}

impl Hypercalls for Hypervisor {
    fn unmask(&self, port: Port) {
        let _ = Hypervisor::unmask(self, port);
    }
}

/// A set of `nwords` words holding only `v`.
fn only(nwords: usize, v: u32) -> Vec<u64> {
    let mut set = vec![0; nwords];
    route::set_bit(&mut set, v);
    set
}

/// The guest's byte bitmap (bit `n` in byte `n / 8`) into words.
pub fn bytes_to_words(bytes: &[u8], words: &mut [u64]) {
    for (i, b) in bytes.iter().enumerate() {
        words[i / 8] |= u64::from(*b) << ((i % 8) * 8);
    }
}
