//! One domain as Xen sees it: its channels, its vCPUs' FIFO queues, the
//! scheduler state routing reads, and the event-channel operations a guest
//! calls, mirroring `xen/common/event_channel.c` with evroute's patch.

mod channel;
mod fifo;
pub mod sched;

pub use channel::{Kind, LastQ};
pub use sched::{RunState, Sched};

use crate::abi::{Port, SharedEvents, MAX_VCPUS, PRIORITY_DEFAULT};
use crate::bugs::{Bug, Bugs};
use crate::error::Error;
use crate::ghost::Ghost;
use crate::guest::Hypercalls;
use crate::route::{self, Bits, Policy, RouteInputs};
use crate::shared::SharedPages;
use crate::sync::{lock, read, write, Ordering};
use channel::Channel;
use fifo::Queue;

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
    pub bugs: Bugs,
}

impl Config {
    pub fn new(nr_vcpus: u32, nr_ports: u32, policy: Policy) -> Self {
        Config { nr_vcpus, nr_ports, policy, fifo: true, bugs: Bugs::NONE }
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
}

impl Hypervisor {
    pub fn new(cfg: Config) -> Self {
        assert!(cfg.nr_vcpus >= 1 && cfg.nr_vcpus <= MAX_VCPUS, "1..={MAX_VCPUS} vCPUs");
        let nwords = cfg.nr_vcpus.div_ceil(64) as usize;
        Hypervisor {
            shared: SharedPages::new(cfg.nr_vcpus, cfg.nr_ports),
            chans: (0..cfg.nr_ports).map(|_| Channel::new(nwords)).collect(),
            queues: (0..cfg.nr_vcpus as usize * crate::abi::MAX_QUEUES).map(|_| Queue::new()).collect(),
            sched: Sched::new(cfg.nr_vcpus),
            ghost: Ghost::new(cfg.nr_ports),
            cfg,
        }
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

    /// Does set-pending consult this channel's set? Only per-OS kinds, and
    /// only with the option on.
    fn routes(&self, ch: &Channel) -> bool {
        self.cfg.policy != Policy::Bound && ch.kind().per_os()
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

    /// `evtchn_fifo_set_pending_routed` (the routed port ops): pick the
    /// queue's vCPU, count it for `balanced`, then the unchanged FIFO
    /// set-pending. With the option off, `evtchn_fifo_set_pending` alone.
    fn set_pending(&self, port: Port, ch: &Channel) {
        let v = self.route_target(port, ch);
        if self.cfg.policy == Policy::Balanced {
            // Fresh: the vCPU had drained every queue (READY empty).
            let fresh = self.shared.control_block(v).ready.load(Ordering::SeqCst) == 0;
            self.sched.note_routed(v, fresh);
        }
        self.fifo_set_pending(v, port, ch);
    }

    /// The routing decision for one set-pending: `evtchn_route_pick()` in the
    /// Xen patch. With the option off this is `notify_vcpu_id`, as today.
    fn route_target(&self, port: Port, ch: &Channel) -> u32 {
        let bound = ch.notify_vcpu.load(Ordering::Relaxed);
        if !self.routes(ch) {
            return bound;
        }
        let last = LastQ::from_raw(ch.lastq.load(Ordering::Relaxed)).vcpu;
        let s = &self.sched;
        // Fast path, no lock: the first case of both policies needs one bit
        // of one word of the set, atomic on its own; whichever version of
        // the set that word came from, `last` was in the set when read.
        if route::stays_on_last(self.cfg.policy, &ch.set[..], &s.running[..], &s.heavy[..], last) {
            return last;
        }
        let _g = lock(&ch.set_lock);
        let set = &ch.set[..];
        let inputs =
            RouteInputs { set, running: &s.running[..], blocked: &s.blocked[..], heavy: &s.heavy[..], bound, last };
        let mut v = route::route(self.cfg.policy, &inputs);
        if self.cfg.bugs.has(Bug::RouteIgnoresSet) {
            v = route::first_cyclic(s.running.len(), last, |i| s.running[i].load(Ordering::Relaxed)).unwrap_or(v);
        }
        let none_awake = |i: usize| set.word(i) & (s.running.word(i) | s.blocked.word(i)) == 0;
        if self.cfg.bugs.has(Bug::FallbackOutsideSet) && (0..set.len()).all(none_awake) {
            v = bound;
        }
        self.ghost.routed(port, v, set);
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

    /// `EVTCHNOP_set_vcpu_set` (set): check everything, then change one
    /// channel. `bitmap` is the guest's buffer, `None` if it cannot be read.
    /// Checks run in the order docs/abi.md lists; a failure changes nothing.
    pub fn set_vcpu_set(&self, port: Port, nr_bits: u32, bitmap: Option<&[u8]>) -> Result<(), Error> {
        let ch = self.check_set_op(port)?;
        if nr_bits == 0 {
            return Err(Error::EmptySet);
        }
        if nr_bits > MAX_VCPUS {
            return Err(Error::BitBeyondVcpus);
        }
        let bytes = bitmap.filter(|b| b.len() >= nr_bits.div_ceil(8) as usize).ok_or(Error::Fault)?;
        let mut words = vec![0u64; self.cfg.nr_vcpus.div_ceil(64).max(nr_bits.div_ceil(64)) as usize];
        bytes_to_words(&bytes[..nr_bits.div_ceil(8) as usize], &mut words);
        // Bits at or past nr_bits are not part of the set.
        for (i, w) in words.iter_mut().enumerate() {
            *w &= route::valid_bits(i, nr_bits);
        }
        let mut online = vec![0u64; words.len()];
        for (o, w) in online.iter_mut().zip(self.sched.online.iter()) {
            *o = w.load(Ordering::Relaxed);
        }
        route::check_vcpu_set(&words[..], nr_bits, self.cfg.nr_vcpus, &online[..])?;

        let _g = write(&ch.lock);
        // Closed or re-bound while we checked? Then the checks are stale.
        if !ch.kind().per_os() {
            return Err(if ch.kind() == Kind::Free { Error::Unbound } else { Error::WrongKind });
        }
        let n = ch.set.len();
        // Keep the bound vCPU inside the set (as the Xen patch: before the
        // set is written; a decision in between still stays in its set).
        let bound = ch.notify_vcpu.load(Ordering::Relaxed);
        if !route::test_bit(&words[..], bound) {
            let first =
                route::first_cyclic(n, 0, |i| words[i] & online[i]).expect("checked: an online vCPU is in the set");
            ch.notify_vcpu.store(first, Ordering::Relaxed);
        }
        ch.write_set(&words[..n]);
        Ok(())
    }

    /// `EVTCHNOP_set_vcpu_set` with `EVTCHN_VCPU_SET_GET`: copy the set into
    /// `out` (`nr_bits` bits of it) and return the domain's vCPU count.
    pub fn get_vcpu_set(&self, port: Port, nr_bits: u32, out: Option<&mut [u8]>) -> Result<u32, Error> {
        let ch = self.check_set_op(port)?;
        if nr_bits > MAX_VCPUS {
            return Err(Error::BitBeyondVcpus);
        }
        let need = nr_bits.div_ceil(8) as usize;
        // Copying nothing cannot fault.
        let mut none: [u8; 0] = [];
        let out = match out {
            Some(o) if o.len() >= need => o,
            _ if need == 0 => &mut none[..],
            _ => return Err(Error::Fault),
        };
        let set = ch.read_set();
        for (i, byte) in out[..nr_bits.div_ceil(8) as usize].iter_mut().enumerate() {
            let word = set.get(i / 8).copied().unwrap_or(0);
            let mut b = (word >> ((i % 8) * 8)) as u8;
            if (i as u32 + 1) * 8 > nr_bits {
                b &= (1u16 << (nr_bits % 8)).wrapping_sub(1) as u8;
            }
            *byte = b;
        }
        Ok(self.cfg.nr_vcpus)
    }

    /// The checks both halves of the new operation share, in order.
    fn check_set_op(&self, port: Port) -> Result<&Channel, Error> {
        if self.cfg.policy == Policy::Bound || !self.cfg.fifo {
            return Err(Error::NotSupported);
        }
        let ch = self.bound_chan(port)?;
        if !ch.kind().per_os() {
            return Err(Error::WrongKind);
        }
        Ok(ch)
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
