//! Random operation sequences on the model, step by step against a plain
//! sequential reference: a set of pending events, each handled exactly once,
//! masked ones held, every bad argument rejected with its error and without
//! effect. proptest shrinks a failure to a short, readable sequence.

use evroute_model::abi::{SharedEvents, MASKED, PENDING, PRIORITY_MIN};
use evroute_model::bugs::Bugs;
use evroute_model::guest::{self, Consumer};
use evroute_model::hypervisor::{Config, Hypervisor, Kind, RunState};
use evroute_model::{Error, Policy};
use proptest::prelude::*;
use std::sync::atomic::Ordering::SeqCst;

const VCPUS: u32 = 4;
/// Ports 1..PORTS are real; 0 and PORTS are out of range on purpose.
const PORTS: u32 = 8;

#[derive(Clone, Copy, Debug)]
enum Op {
    Raise(u32),
    Consume(u32),
    Mask(u32),
    Unmask(u32),
    /// Set a port's vCPU set from 8 bits (bits 4–7 name vCPUs that do not exist).
    SetSet(u32, u8),
    SetPriority(u32, u32),
    RunState(u32, RunState),
    Close(u32),
    Alloc(u32),
    BindVcpu(u32, u32),
    /// Every notified vCPU drains; nothing unmasked may stay pending.
    Quiesce,
}

fn op() -> impl Strategy<Value = Op> {
    let port = 0..=PORTS;
    let vcpu = 0..VCPUS + 1;
    let state = prop_oneof![
        Just(RunState::Running),
        Just(RunState::Runnable),
        Just(RunState::Blocked),
        Just(RunState::Offline)
    ];
    prop_oneof![
        4 => port.clone().prop_map(Op::Raise),
        3 => (0..VCPUS).prop_map(Op::Consume),
        1 => port.clone().prop_map(Op::Mask),
        1 => port.clone().prop_map(Op::Unmask),
        2 => (port.clone(), any::<u8>()).prop_map(|(p, b)| Op::SetSet(p, b)),
        1 => (port.clone(), 0..PRIORITY_MIN + 3).prop_map(|(p, q)| Op::SetPriority(p, q)),
        2 => ((0..VCPUS), state).prop_map(|(v, s)| Op::RunState(v, s)),
        1 => port.clone().prop_map(Op::Close),
        1 => vcpu.clone().prop_map(Op::Alloc),
        1 => (port, vcpu).prop_map(|(p, v)| Op::BindVcpu(p, v)),
        1 => Just(Op::Quiesce),
    ]
}

/// The sequential reference: what each port should look like.
#[derive(Clone, Copy, Debug, Default)]
struct RefPort {
    bound: bool,
    vcpu: u32,
    set: u64,
    pending: bool,
    masked: bool,
    /// vCPUs the event may be handled on: the sets it had while pending.
    allowed: u64,
    handled: u32,
}

struct Run {
    hv: Hypervisor,
    consumers: Vec<Consumer>,
    refs: Vec<RefPort>,
    online: u64,
    policy: Policy,
}

impl Run {
    fn new(policy: Policy, bugs: Bugs) -> Self {
        let hv = Hypervisor::new(Config { bugs, ..Config::new(VCPUS, PORTS, policy) });
        let consumers = (0..VCPUS).map(|v| Consumer::new(v, PORTS, bugs.guest())).collect();
        let mut run = Run { hv, consumers, refs: vec![RefPort::default(); PORTS as usize], online: 0b1111, policy };
        for v in 0..3 {
            run.step(Op::Alloc(v)).unwrap();
        }
        run
    }

    fn r(&mut self, p: u32) -> Option<&mut RefPort> {
        self.refs.get_mut(p as usize).filter(|_| p != 0)
    }

    /// The error the reference expects for an operation on port `p` that
    /// needs a bound channel.
    fn bound_err(&self, p: u32) -> Option<Error> {
        match self.refs.get(p as usize) {
            None => Some(Error::BadPort),
            // Port 0 is valid but reserved: refused as unbound.
            Some(r) if !r.bound || p == 0 => Some(Error::Unbound),
            _ => None,
        }
    }

    fn expect(got: Result<(), Error>, want: Option<Error>, op: Op) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.err(), want, "{:?}", op);
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Raise(p) => {
                let want = self.bound_err(p);
                Self::expect(self.hv.send(p), want, op)?;
                if want.is_none() {
                    let r = self.r(p).unwrap();
                    r.pending = true;
                    r.allowed |= r.set;
                }
            }
            Op::Consume(v) => self.consume(v)?,
            Op::Mask(p) => {
                guest::mask(self.hv.shared(), p);
                if let Some(r) = self.r(p) {
                    r.masked = true;
                }
            }
            Op::Unmask(p) => {
                guest::unmask(self.hv.shared(), &self.hv, p, self.hv.config().bugs.guest());
                if let Some(r) = self.r(p) {
                    r.masked = false;
                    if r.pending && r.bound {
                        r.allowed |= r.set;
                    }
                }
            }
            Op::SetSet(p, bits) => {
                let want = if self.policy == Policy::Bound {
                    Some(Error::NotSupported)
                } else if let Some(e) = self.bound_err(p) {
                    Some(e)
                } else if bits == 0 {
                    Some(Error::EmptySet)
                } else if bits >> VCPUS != 0 {
                    Some(Error::BitBeyondVcpus)
                } else if u64::from(bits) & self.online == 0 {
                    Some(Error::NoReceivingVcpu)
                } else {
                    None
                };
                Self::expect(self.hv.set_vcpu_set(p, 8, Some(&[bits])), want, op)?;
                if want.is_none() {
                    let online = self.online;
                    let r = self.r(p).unwrap();
                    r.set = u64::from(bits);
                    if r.set & (1 << r.vcpu) == 0 {
                        r.vcpu = (r.set & online).trailing_zeros();
                    }
                    prop_assert_eq!(self.hv.bound_vcpu(p).unwrap(), self.refs[p as usize].vcpu);
                }
            }
            Op::SetPriority(p, prio) => {
                let bad_port = (p >= PORTS).then_some(Error::BadPort);
                let want = bad_port.or((prio > PRIORITY_MIN).then_some(Error::BadPriority));
                Self::expect(self.hv.set_priority(p, prio), want, op)?;
            }
            Op::RunState(v, s) => {
                self.hv.sched.set_state(v, s);
                if s == RunState::Offline {
                    self.online &= !(1 << v);
                } else {
                    self.online |= 1 << v;
                }
            }
            Op::Close(p) => {
                let want = self.bound_err(p);
                Self::expect(self.hv.close(p), want, op)?;
                if want.is_none() {
                    let r = self.r(p).unwrap();
                    // Xen leaves MASKED alone on close and allocation (evtchn_fifo_init).
                    *r = RefPort { handled: r.handled, masked: r.masked, ..RefPort::default() };
                }
            }
            Op::Alloc(v) => self.alloc(v)?,
            Op::BindVcpu(p, v) => {
                // Xen checks the vCPU (it may be offline) before the port.
                let want = if v >= VCPUS { Some(Error::NoSuchVcpu) } else { self.bound_err(p) };
                Self::expect(self.hv.bind_vcpu(p, v), want, op)?;
                if want.is_none() {
                    let r = self.r(p).unwrap();
                    r.vcpu = v;
                    r.set = 1 << v;
                }
            }
            Op::Quiesce => {
                for _ in 0..4 {
                    for v in 0..VCPUS {
                        self.consume(v)?;
                    }
                }
                for p in 1..PORTS {
                    let r = self.refs[p as usize];
                    prop_assert!(!r.pending || r.masked, "port {p} pending and unmasked after quiescence: {r:?}");
                }
                self.hv.ghost().check_quiescent(self.hv.shared());
            }
        }
        self.compare_words()
    }

    fn alloc(&mut self, v: u32) -> Result<(), TestCaseError> {
        let got = self.hv.alloc(Kind::Interdomain, v);
        if v >= VCPUS {
            prop_assert_eq!(got, Err(Error::NoSuchVcpu));
            return Ok(());
        }
        match got {
            Ok(p) => {
                let r = &mut self.refs[p as usize];
                prop_assert!(!r.bound, "allocated port {} is in use", p);
                *r = RefPort {
                    bound: true,
                    vcpu: v,
                    set: 1 << v,
                    handled: r.handled,
                    masked: r.masked,
                    ..RefPort::default()
                };
            }
            Err(e) => {
                prop_assert_eq!(e, Error::NoFreePort);
                for p in 1..PORTS {
                    // A free port may only be refused while still LINKED.
                    prop_assert!(self.refs[p as usize].bound || self.hv.kind(p) == Ok(Kind::Free));
                }
            }
        }
        Ok(())
    }

    fn consume(&mut self, v: u32) -> Result<(), TestCaseError> {
        let mut handled = Vec::new();
        self.consumers[v as usize].upcall(self.hv.shared(), self.hv.ghost(), &mut |p| handled.push(p));
        for p in handled {
            let r = &mut self.refs[p as usize];
            prop_assert!(r.pending && !r.masked && r.bound, "vCPU {v} handled port {p}: {r:?}");
            prop_assert!(r.allowed & (1 << v) != 0, "port {p} handled on vCPU {v}, outside its sets {:#b}", r.allowed);
            r.pending = false;
            r.allowed = 0;
            r.handled += 1;
        }
        Ok(())
    }

    /// PENDING and MASKED of every word equal the reference's.
    fn compare_words(&self) -> Result<(), TestCaseError> {
        for p in 1..PORTS {
            let w = self.hv.shared().word(p).unwrap().load(SeqCst);
            let r = &self.refs[p as usize];
            prop_assert_eq!(w & PENDING != 0, r.pending, "port {} PENDING (word {:#010x}) vs {:?}", p, w, r);
            prop_assert_eq!(w & MASKED != 0, r.masked, "port {} MASKED (word {:#010x}) vs {:?}", p, w, r);
            prop_assert_eq!(self.hv.ghost().handled_count(p), r.handled, "port {} handled count", p);
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 20_000, ..ProptestConfig::default() })]

    /// Every raise is handled once, on a vCPU of the event's set, masked
    /// events are held, and each bad argument gets its error with no effect.
    #[test]
    fn random_operations_match_the_sequential_reference(
        policy in prop_oneof![Just(Policy::Bound), Just(Policy::PreferRunning), Just(Policy::Balanced)],
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        run_ops(policy, Bugs::NONE, &ops)?;
    }
}

fn run_ops(policy: Policy, bugs: Bugs, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut run = Run::new(policy, bugs);
    for op in ops {
        run.step(*op)?;
    }
    run.step(Op::RunState(0, RunState::Running))?;
    run.step(Op::Quiesce)
}

/// The seeded bugs a single thread can show must be found by the same random
/// search (the racy ones need loom): proof this test can fail.
#[test]
fn random_search_finds_the_sequential_seeded_bugs() {
    use evroute_model::bugs::Bug;
    use proptest::test_runner::{Config as RunnerConfig, TestRunner};
    let sequential = [
        Bug::NoTailInvalidation,
        Bug::UnmaskIgnoresPending,
        Bug::HandleMaskedEvent,
        Bug::RouteIgnoresSet,
        Bug::ReuseLinkedPort,
    ];
    for bug in sequential {
        let mut runner =
            TestRunner::new(RunnerConfig { cases: cases(), failure_persistence: None, ..RunnerConfig::default() });
        let strategy =
            (prop_oneof![Just(Policy::PreferRunning), Just(Policy::Balanced)], proptest::collection::vec(op(), 1..60));
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let result = runner.run(&strategy, |(policy, ops)| run_ops(policy, Bugs::only(bug), &ops));
        std::panic::set_hook(quiet);
        match result {
            Err(e) => eprintln!("{}: found, shrunk to {e}", bug.name()),
            Ok(()) => panic!("{}: {} random sequences did not find it", bug.name(), cases()),
        }
    }
}
