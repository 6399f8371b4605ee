//! The same random operation sequences on Xen's patched C (the harness) and
//! on evroute-model, with everything a guest or Xen can observe compared
//! after every step: return codes, every event word, each vCPU's READY,
//! HEADs and upcall flag, each channel's last queue, bound vCPU and
//! priority, the events each vCPU's consumer handles, and the sets read
//! back. Bad arguments included.

use evroute_model::abi::{Port, SharedEvents, EVTCHN_VCPU_SET_GET, MAX_QUEUES};
use evroute_model::bugs::Bugs;
use evroute_model::guest::{self, Consumer, Observer};
use evroute_model::hypervisor::{Config, Hypervisor, Kind, RunState};
use evroute_model::{Error, Policy};
use evroute_xen_harness::XenDomain;
use proptest::prelude::*;
use std::sync::atomic::Ordering::SeqCst;

const VCPUS: u32 = 4;
/// Ports 0..PORTS are valid (0 is reserved); PORTS itself is out of range.
const PORTS: u32 = 8;

#[derive(Clone, Debug)]
enum Op {
    Alloc(Kind, u32),
    Close(u32),
    Send(u32),
    Consume(u32),
    Mask(u32),
    /// The guest's unmask (hypercall only if pending).
    Unmask(u32),
    /// EVTCHNOP_unmask directly.
    HyperUnmask(u32),
    SetPriority(u32, u32),
    BindVcpu(u32, u32),
    /// Set from `bits`, `nr_bits` long; `fault`: the buffer is unreadable.
    SetSet {
        port: u32,
        nr_bits: u32,
        bits: u64,
        fault: bool,
    },
    GetSet {
        port: u32,
        nr_bits: u32,
        fault: bool,
    },
    RunState(u32, RunState),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Interdomain),
        1 => Just(Kind::Unbound),
        1 => Just(Kind::Pirq),
        1 => Just(Kind::VirqGlobal),
        1 => Just(Kind::VirqPerVcpu),
        1 => Just(Kind::Ipi),
        1 => Just(Kind::XenConsumer),
    ]
}

fn nr_bits() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..=70, 1 => Just(8192u32), 1 => Just(8193u32)]
}

fn op() -> impl Strategy<Value = Op> {
    let port = 0..=PORTS;
    let vcpu = 0..=VCPUS;
    let state = prop_oneof![
        Just(RunState::Running),
        Just(RunState::Runnable),
        Just(RunState::Blocked),
        Just(RunState::Offline)
    ];
    let bits = prop_oneof![3 => 0u64..16, 1 => any::<u64>()];
    prop_oneof![
        2 => (kind(), vcpu.clone()).prop_map(|(k, v)| Op::Alloc(k, v)),
        1 => port.clone().prop_map(Op::Close),
        5 => port.clone().prop_map(Op::Send),
        4 => (0..VCPUS).prop_map(Op::Consume),
        1 => port.clone().prop_map(Op::Mask),
        1 => port.clone().prop_map(Op::Unmask),
        1 => port.clone().prop_map(Op::HyperUnmask),
        1 => (port.clone(), 0u32..18).prop_map(|(p, q)| Op::SetPriority(p, q)),
        1 => (port.clone(), vcpu).prop_map(|(p, v)| Op::BindVcpu(p, v)),
        3 => (port.clone(), nr_bits(), bits, proptest::bool::weighted(0.1))
            .prop_map(|(port, nr_bits, bits, fault)| Op::SetSet { port, nr_bits, bits, fault }),
        1 => (port, nr_bits(), proptest::bool::weighted(0.1))
            .prop_map(|(port, nr_bits, fault)| Op::GetSet { port, nr_bits, fault }),
        3 => ((0..VCPUS), state).prop_map(|(v, s)| Op::RunState(v, s)),
    ]
}

fn errno(r: Result<(), Error>) -> i32 {
    r.map_or_else(|e| -e.errno(), |()| 0)
}

/// The guest buffer for a set: the bits, `ceil(nr_bits / 8)` bytes of them.
fn buffer(nr_bits: u32, bits: u64) -> Vec<u8> {
    let mut b = vec![0u8; nr_bits.div_ceil(8) as usize];
    for (i, byte) in b.iter_mut().enumerate().take(8) {
        *byte = (bits >> (8 * i)) as u8;
    }
    b
}

struct Pair {
    model: Hypervisor,
    xen: XenDomain,
    mc: Vec<Consumer>,
    xc: Vec<Consumer>,
}

impl Pair {
    fn new(policy: Policy) -> Self {
        Pair {
            model: Hypervisor::new(Config::new(VCPUS, PORTS, policy)),
            xen: XenDomain::new(VCPUS, PORTS, policy, true),
            mc: (0..VCPUS).map(|v| Consumer::new(v, PORTS, Bugs::NONE)).collect(),
            xc: (0..VCPUS).map(|v| Consumer::new(v, PORTS, Bugs::NONE)).collect(),
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let (m, x) = (&self.model, &self.xen);
        let (rm, rx): (i32, i32) = match *op {
            Op::Alloc(k, v) => (
                m.alloc(k, v).map_or_else(|e| -e.errno(), |p| p as i32),
                x.alloc(k, v).map_or_else(|e| e, |p| p as i32),
            ),
            Op::Close(p) => (errno(m.close(p)), x.close(p)),
            Op::Send(p) => (errno(m.send(p)), x.send(p)),
            Op::Consume(v) => {
                let hm = drain(&mut self.mc[v as usize], m.shared(), m.ghost());
                let hx = drain(&mut self.xc[v as usize], x, &());
                prop_assert_eq!(hm, hx, "vCPU {} handled different events", v);
                (0, 0)
            }
            Op::Mask(p) => {
                guest::mask(m.shared(), p);
                guest::mask(x, p);
                (0, 0)
            }
            Op::Unmask(p) => {
                guest::unmask(m.shared(), m, p, Bugs::NONE);
                guest::unmask(x, x, p, Bugs::NONE);
                (0, 0)
            }
            Op::HyperUnmask(p) => (errno(m.unmask(p)), x.unmask(p)),
            Op::SetPriority(p, q) => (errno(m.set_priority(p, q)), x.set_priority(p, q)),
            Op::BindVcpu(p, v) => (errno(m.bind_vcpu(p, v)), x.bind_vcpu(p, v)),
            Op::SetSet { port, nr_bits, bits, fault } => {
                let mut buf = buffer(nr_bits, bits);
                let rm = errno(m.set_vcpu_set(port, nr_bits, (!fault).then_some(&buf[..])));
                let (rx, _) = x.set_vcpu_set(port, 0, nr_bits, (!fault).then_some(&mut buf[..]));
                (rm, rx)
            }
            Op::GetSet { port, nr_bits, fault } => {
                let mut bm = vec![0xa5u8; nr_bits.div_ceil(8) as usize];
                let mut bx = bm.clone();
                let rm = m.get_vcpu_set(port, nr_bits, (!fault).then_some(&mut bm[..]));
                let (rx, nx) = x.set_vcpu_set(port, EVTCHN_VCPU_SET_GET, nr_bits, (!fault).then_some(&mut bx[..]));
                if let Ok(n) = rm {
                    prop_assert_eq!(n, nx, "nr_bits read back");
                    prop_assert_eq!(&bm, &bx, "set read back for port {}", port);
                }
                (rm.map_or_else(|e| -e.errno(), |_| 0), rx)
            }
            Op::RunState(v, s) => {
                m.sched.set_state(v, s);
                x.set_run_state(v, s);
                (0, 0)
            }
        };
        prop_assert_eq!(rm, rx, "return code of {:?}: model {}, Xen {}", op, rm, rx);
        self.compare()
    }

    /// Everything observable must be equal.
    fn compare(&self) -> Result<(), TestCaseError> {
        let (m, x) = (&self.model, &self.xen);
        for p in 1..PORTS {
            let wm = m.shared().word(p).unwrap().load(SeqCst);
            let wx = x.word(p).unwrap().load(SeqCst);
            prop_assert_eq!(wm, wx, "event word of port {}: model {:#010x}, Xen {:#010x}", p, wm, wx);
            prop_assert_eq!(m.lastq_raw(p).unwrap(), x.lastq(p), "last queue of port {}", p);
            prop_assert_eq!(m.bound_vcpu(p).unwrap(), x.notify_vcpu(p), "bound vCPU of port {}", p);
            prop_assert_eq!(m.priority(p).unwrap(), x.priority(p), "priority of port {}", p);
        }
        for v in 0..VCPUS {
            let (cm, cx) = (m.shared().control_block(v), x.control_block(v));
            prop_assert_eq!(cm.ready.load(SeqCst), cx.ready.load(SeqCst), "READY of vCPU {}", v);
            for q in 0..MAX_QUEUES {
                prop_assert_eq!(cm.head[q].load(SeqCst), cx.head[q].load(SeqCst), "HEAD {} of vCPU {}", q, v);
            }
            let (um, ux) = (m.shared().upcall_pending(v).load(SeqCst), x.upcall_pending(v).load(SeqCst));
            prop_assert_eq!(um, ux, "upcall flag of vCPU {}", v);
        }
        Ok(())
    }
}

fn drain<S: SharedEvents, O: Observer>(c: &mut Consumer, sh: &S, obs: &O) -> Vec<Port> {
    let mut handled = Vec::new();
    c.upcall(sh, obs, &mut |p| handled.push(p));
    handled
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(5_000)
}

fn run_sequence(policy: Policy, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut pair = Pair::new(policy);
    for v in 0..3 {
        pair.step(&Op::Alloc(Kind::Interdomain, v))?;
    }
    for op in ops {
        pair.step(op)?;
    }
    // Let every notified vCPU drain: both must end the same.
    for v in 0..VCPUS {
        pair.step(&Op::Consume(v))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 20_000, ..ProptestConfig::default() })]

    /// The patched C and the model agree on every observable after every step.
    #[test]
    fn xen_c_matches_the_model(
        policy in prop_oneof![Just(Policy::Bound), Just(Policy::PreferRunning), Just(Policy::Balanced)],
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run_sequence(policy, &ops)?;
    }
}

/// A 2-level domain refuses the new operation, and so does `evtchn-route=off`.
#[test]
fn set_vcpu_set_is_refused_without_fifo_or_with_routing_off() {
    let mut bits = [0b11u8];
    for (policy, fifo) in [(Policy::PreferRunning, false), (Policy::Bound, true)] {
        let x = XenDomain::new(VCPUS, PORTS, policy, fifo);
        let m = Hypervisor::new(Config { fifo, ..Config::new(VCPUS, PORTS, policy) });
        let (rx, _) = x.set_vcpu_set(1, 0, 8, Some(&mut bits));
        assert_eq!(rx, -95, "Xen, {policy:?}, fifo={fifo}");
        assert_eq!(m.set_vcpu_set(1, 8, Some(&bits)), Err(Error::NotSupported));
    }
}

/// Unknown flag bits: -EINVAL, checked by the handler before the port.
#[test]
fn unknown_flags_are_rejected() {
    let x = XenDomain::new(VCPUS, PORTS, Policy::PreferRunning, true);
    let mut bits = [0b1u8];
    assert_eq!(x.set_vcpu_set(1, 0x2, 8, Some(&mut bits)).0, -22);
}
