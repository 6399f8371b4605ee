//! The interleavings loom explores: hypervisor CPUs and guest vCPUs as
//! threads on one model domain. Each scenario sets the stage sequentially,
//! races its threads, joins them, lets every notified vCPU drain, and checks
//! the invariants of [`crate::ghost::inv`]. Without the `loom` feature the
//! same code runs on OS threads, as a stress test.

use crate::abi::{Port, PRIORITY_DEFAULT};
use crate::bugs::{Bug, Bugs};
use crate::ghost::inv;
use crate::guest::{self, Consumer};
use crate::hypervisor::sched::LOAD_BOUND;
use crate::hypervisor::{Config, Hypervisor, Kind, RunState};
use crate::route::Policy;
use crate::sync::{thread, Arc};

/// A named race.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(Bugs),
    /// The least preemption bound that reaches the race, when it needs more
    /// than CI's bound of 2 (loom then explores this scenario alone deeper).
    pub min_preemptions: Option<usize>,
}

/// A seeded bug, the scenario that exposes it, and the invariant it breaks.
pub struct SeededBug {
    pub bug: Bug,
    pub scenario: &'static str,
    pub invariant: &'static str,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "two-senders-one-consumer",
        about: "two CPUs raise two events while vCPU0 drains its queue",
        run: two_senders_one_consumer,
        min_preemptions: None,
    },
    Scenario {
        name: "set-change-moves-queue",
        about: "a raise races EVTCHNOP_set_vcpu_set moving the event to another vCPU",
        run: set_change_moves_queue,
        min_preemptions: None,
    },
    Scenario {
        name: "set-change-while-none-runs",
        about: "a raise races a set change while no vCPU runs: the decision falls back to the bound vCPU as it moves",
        run: set_change_while_none_runs,
        min_preemptions: None,
    },
    Scenario {
        name: "stale-tail-after-queue-move",
        about: "an event moves off vCPU0's queue (of which it was the consumed tail) while another joins vCPU0's queue",
        run: stale_tail_after_queue_move,
        min_preemptions: None,
    },
    Scenario {
        name: "consume-on-old-while-routed-to-new",
        about: "vCPU0 consumes an event while routing picks vCPU1 for it and it is still LINKED on vCPU0",
        run: consume_on_old_while_routed_to_new,
        min_preemptions: None,
    },
    Scenario {
        name: "mask-unmask-race",
        about: "the guest masks and unmasks an event while Xen raises it and vCPU0 consumes",
        run: mask_unmask_race,
        min_preemptions: None,
    },
    Scenario {
        name: "priority-change-race",
        about: "EVTCHNOP_set_priority races raises of the event and of a neighbour on its old queue",
        run: priority_change_race,
        min_preemptions: None,
    },
    Scenario {
        name: "close-and-reuse-linked-port",
        about: "a port still LINKED is closed and a new channel allocated while vCPU0 consumes",
        run: close_and_reuse_linked_port,
        min_preemptions: None,
    },
    Scenario {
        name: "opposite-queue-moves",
        about: "two events move between vCPU0 and vCPU1 in opposite directions at once",
        run: opposite_queue_moves,
        min_preemptions: None,
    },
    Scenario {
        name: "control-block-mapped-while-routed",
        about:
            "a raise races vCPU1 mapping its control block while vCPU1 runs, vCPU0 is preempted and vCPU2 is offline",
        run: control_block_mapped_while_routed,
        min_preemptions: None,
    },
    Scenario {
        name: "queue-changes-under-a-raise",
        about: "three priority changes land inside one raise's three tries to lock the event's queues",
        run: queue_changes_under_a_raise,
        min_preemptions: Some(3),
    },
    Scenario {
        name: "load-and-heavy-agree",
        about: "one CPU routes an event to vCPU0 at the load bound while another finds vCPU0 drained",
        run: load_and_heavy_agree,
        min_preemptions: None,
    },
];

pub const SEEDED_BUGS: &[SeededBug] = &[
    SeededBug {
        bug: Bug::NoTailInvalidation,
        scenario: "stale-tail-after-queue-move",
        invariant: inv::QUEUE_WELL_FORMED,
    },
    SeededBug {
        bug: Bug::SkipOldQueueLock,
        scenario: "stale-tail-after-queue-move",
        invariant: inv::QUEUE_WELL_FORMED,
    },
    SeededBug { bug: Bug::LockOrderInverted, scenario: "opposite-queue-moves", invariant: inv::NO_DEADLOCK },
    SeededBug {
        bug: Bug::RouteLinkedToNewQueue,
        scenario: "consume-on-old-while-routed-to-new",
        invariant: inv::LINKED_ON_ONE_QUEUE,
    },
    SeededBug { bug: Bug::ReuseLinkedPort, scenario: "close-and-reuse-linked-port", invariant: inv::ROUTED_WITHIN_SET },
    SeededBug { bug: Bug::RouteIgnoresSet, scenario: "set-change-moves-queue", invariant: inv::ROUTED_WITHIN_SET },
    SeededBug {
        bug: Bug::FallbackOutsideSet,
        scenario: "set-change-while-none-runs",
        invariant: inv::ROUTED_WITHIN_SET,
    },
    SeededBug {
        bug: Bug::ClearLinkedBeforeReadLink,
        scenario: "two-senders-one-consumer",
        invariant: inv::NO_LOST_EVENT,
    },
    SeededBug {
        bug: Bug::RouteIgnoresReceivable,
        scenario: "control-block-mapped-while-routed",
        invariant: inv::NO_LOST_EVENT,
    },
    SeededBug { bug: Bug::ThreeTryBailout, scenario: "queue-changes-under-a-raise", invariant: inv::NO_LOST_EVENT },
    SeededBug { bug: Bug::HeavySetOrClear, scenario: "load-and-heavy-agree", invariant: inv::HEAVY_MATCHES_LOAD },
    SeededBug { bug: Bug::UnmaskIgnoresPending, scenario: "mask-unmask-race", invariant: inv::UNMASK_DELIVERS },
    SeededBug { bug: Bug::HandleMaskedEvent, scenario: "mask-unmask-race", invariant: inv::MASKED_NOT_HANDLED },
];

pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

pub fn seeded(bug: Bug) -> &'static SeededBug {
    SEEDED_BUGS.iter().find(|s| s.bug == bug).expect("every bug has a scenario")
}

/// A domain for one run, with its vCPUs' consumers.
struct Stage {
    hv: Arc<Hypervisor>,
    consumers: Vec<Consumer>,
}

impl Stage {
    fn new(nr_vcpus: u32, nr_ports: u32, policy: Policy, bugs: Bugs) -> Self {
        Self::with(Config { bugs, ..Config::new(nr_vcpus, nr_ports, policy) })
    }

    fn with(cfg: Config) -> Self {
        let (nr_vcpus, nr_ports, bugs) = (cfg.nr_vcpus, cfg.nr_ports, cfg.bugs);
        let hv = Arc::new(Hypervisor::new(cfg));
        let consumers = (0..nr_vcpus).map(|v| Consumer::new(v, nr_ports, bugs)).collect();
        Stage { hv, consumers }
    }

    fn bind(&self, vcpu: u32) -> Port {
        self.hv.alloc(Kind::Interdomain, vcpu).expect("free port")
    }

    fn set(&self, port: Port, vcpus: &[u32]) {
        let mut bytes = [0u8; 8];
        for v in vcpus {
            bytes[*v as usize / 8] |= 1 << (v % 8);
        }
        self.hv.set_vcpu_set(port, 64, Some(&bytes)).expect("valid set");
    }

    fn send(&self, port: Port) {
        self.hv.send(port).expect("bound port");
    }

    /// vCPU `v` takes its upcall now (on the calling thread).
    fn drain(&mut self, v: u32) {
        let hv = &*self.hv;
        self.consumers[v as usize].upcall(hv.shared(), hv.ghost(), &mut |_| {});
    }

    /// Take vCPU `v`'s consumer to run it on another thread.
    fn take(&mut self, v: u32) -> Consumer {
        std::mem::replace(&mut self.consumers[v as usize], Consumer::new(v, 0, Bugs::NONE))
    }

    fn give(&mut self, c: Consumer) {
        let v = c.vcpu() as usize;
        self.consumers[v] = c;
    }

    /// Every notified vCPU that can take events drains (an offline vCPU, or
    /// one without a control block, does not run its consumer), then the
    /// invariants are checked.
    fn quiesce(mut self) {
        for v in 0..self.consumers.len() as u32 {
            if self.hv.sched.can_take(v) {
                self.drain(v);
            }
        }
        self.hv.ghost().check_quiescent(self.hv.shared());
        self.hv.ghost().check_load(&self.hv.sched, self.consumers.len() as u32);
    }
}

/// Run `f` on a new thread with its own handle on the domain.
fn spawn<T: Send + 'static>(
    hv: &Arc<Hypervisor>,
    f: impl FnOnce(&Hypervisor) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let hv = Arc::clone(hv);
    thread::spawn(move || f(&hv))
}

fn drain_on(hv: &Arc<Hypervisor>, mut c: Consumer) -> thread::JoinHandle<Consumer> {
    spawn(hv, move |hv| {
        c.upcall(hv.shared(), hv.ghost(), &mut |_| {});
        c
    })
}

fn two_senders_one_consumer(bugs: Bugs) {
    let mut st = Stage::new(1, 3, Policy::PreferRunning, bugs);
    let (a, b) = (st.bind(0), st.bind(0));
    // Each CPU raises both events, in opposite orders: appends race the
    // consumer's unlinking of the tail, and second raises coalesce or re-link.
    let t1 = spawn(&st.hv, move |hv| {
        hv.send(a).unwrap();
        hv.send(b).unwrap();
    });
    let t2 = spawn(&st.hv, move |hv| {
        hv.send(b).unwrap();
        hv.send(a).unwrap();
    });
    st.drain(0);
    t1.join().unwrap();
    t2.join().unwrap();
    st.quiesce();
}

fn set_change_moves_queue(bugs: Bugs) {
    let mut st = Stage::new(2, 2, Policy::PreferRunning, bugs);
    let p = st.bind(0);
    st.send(p); // LINKED on vCPU0 when the race starts
                // vCPU0 is preempted: routing wants vCPU1 as soon as the set allows it.
    st.hv.sched.set_state(0, RunState::Runnable);
    let c0 = st.take(0);
    let c0 = drain_on(&st.hv, c0);
    let t1 = spawn(&st.hv, move |hv| hv.send(p).unwrap());
    let t2 = spawn(&st.hv, move |hv| {
        let bytes = [0b10u8];
        hv.set_vcpu_set(p, 2, Some(&bytes)).unwrap();
    });
    st.drain(1);
    st.give(c0.join().unwrap());
    t1.join().unwrap();
    t2.join().unwrap();
    st.quiesce();
}

fn set_change_while_none_runs(bugs: Bugs) {
    let st = Stage::new(2, 2, Policy::PreferRunning, bugs);
    let p = st.bind(0);
    st.hv.sched.set_state(0, RunState::Runnable);
    st.hv.sched.set_state(1, RunState::Runnable);
    let t1 = spawn(&st.hv, move |hv| hv.send(p).unwrap());
    let t2 = spawn(&st.hv, move |hv| {
        let bytes = [0b10u8];
        hv.set_vcpu_set(p, 2, Some(&bytes)).unwrap();
    });
    t1.join().unwrap();
    t2.join().unwrap();
    st.quiesce();
}

fn stale_tail_after_queue_move(bugs: Bugs) {
    let mut st = Stage::new(2, 3, Policy::PreferRunning, bugs);
    let (p, f) = (st.bind(0), st.bind(0));
    st.set(p, &[0, 1]);
    // p joins and leaves vCPU0's queue: it is that queue's consumed tail.
    st.send(p);
    st.drain(0);
    st.hv.sched.set_state(0, RunState::Runnable);
    let t1 = spawn(&st.hv, move |hv| hv.send(p).unwrap()); // routed to vCPU1
    let t2 = spawn(&st.hv, move |hv| hv.send(f).unwrap()); // bound to vCPU0
    st.drain(1);
    t1.join().unwrap();
    t2.join().unwrap();
    st.quiesce();
}

fn consume_on_old_while_routed_to_new(bugs: Bugs) {
    let mut st = Stage::new(2, 2, Policy::PreferRunning, bugs);
    let p = st.bind(0);
    st.set(p, &[0, 1]);
    st.send(p); // LINKED on vCPU0, not yet consumed
    st.hv.sched.set_state(0, RunState::Runnable);
    let c0 = st.take(0);
    let c0 = drain_on(&st.hv, c0);
    let t1 = spawn(&st.hv, move |hv| {
        hv.send(p).unwrap();
        hv.send(p).unwrap();
    });
    // The scheduler swaps the two vCPUs while routing reads their states.
    let sched = spawn(&st.hv, move |hv| {
        hv.sched.set_state(1, RunState::Runnable);
        hv.sched.set_state(0, RunState::Running);
    });
    st.drain(1);
    st.give(c0.join().unwrap());
    t1.join().unwrap();
    sched.join().unwrap();
    st.quiesce();
}

fn mask_unmask_race(bugs: Bugs) {
    let mut st = Stage::new(1, 2, Policy::PreferRunning, bugs);
    let p = st.bind(0);
    st.send(p); // linked and pending before the race
    let guest = spawn(&st.hv, move |hv| {
        guest::mask(hv.shared(), p);
        hv.ghost().guest_unmasked(p);
        guest::unmask(hv.shared(), hv, p, hv.config().bugs);
    });
    let t1 = spawn(&st.hv, move |hv| hv.send(p).unwrap());
    st.drain(0);
    guest.join().unwrap();
    t1.join().unwrap();
    st.quiesce();
}

fn priority_change_race(bugs: Bugs) {
    let mut st = Stage::new(1, 3, Policy::PreferRunning, bugs);
    let (p, q) = (st.bind(0), st.bind(0));
    st.send(p);
    st.drain(0); // p is the consumed tail of the priority-7 queue
    let t1 = spawn(&st.hv, move |hv| hv.set_priority(p, PRIORITY_DEFAULT - 4).unwrap());
    let t2 = spawn(&st.hv, move |hv| hv.send(p).unwrap());
    let t3 = spawn(&st.hv, move |hv| hv.send(q).unwrap());
    st.drain(0);
    t1.join().unwrap();
    t2.join().unwrap();
    t3.join().unwrap();
    st.quiesce();
}

fn close_and_reuse_linked_port(bugs: Bugs) {
    let mut st = Stage::new(2, 3, Policy::PreferRunning, bugs);
    let p = st.bind(0);
    st.send(p); // LINKED on vCPU0
    let c0 = st.take(0);
    let c0 = drain_on(&st.hv, c0);
    let t1 = spawn(&st.hv, move |hv| {
        hv.close(p).unwrap();
        let n = hv.alloc(Kind::Interdomain, 1).unwrap();
        hv.send(n).unwrap();
    });
    st.drain(1);
    st.give(c0.join().unwrap());
    t1.join().unwrap();
    st.quiesce();
}

fn opposite_queue_moves(bugs: Bugs) {
    let mut st = Stage::new(2, 3, Policy::PreferRunning, bugs);
    let (a, b) = (st.bind(0), st.bind(1));
    st.send(a);
    st.send(b);
    st.drain(0);
    st.drain(1);
    // a was last on vCPU0 and must go to vCPU1; b the other way round.
    st.set(a, &[1]);
    st.set(b, &[0]);
    let t1 = spawn(&st.hv, move |hv| hv.send(a).unwrap());
    let t2 = spawn(&st.hv, move |hv| hv.send(b).unwrap());
    t1.join().unwrap();
    t2.join().unwrap();
    st.quiesce();
}

fn control_block_mapped_while_routed(bugs: Bugs) {
    // vCPU1 runs but has not mapped its control block yet; vCPU2 is offline.
    let cfg = Config { bugs, unmapped: 0b010, ..Config::new(3, 2, Policy::PreferRunning) };
    let st = Stage::with(cfg);
    let p = st.bind(0);
    st.set(p, &[0, 1, 2]);
    st.hv.sched.set_state(0, RunState::Runnable);
    st.hv.sched.set_state(2, RunState::Offline);
    let t1 = spawn(&st.hv, move |hv| hv.send(p).unwrap());
    let t2 = spawn(&st.hv, move |hv| hv.init_control(1).unwrap());
    t1.join().unwrap();
    t2.join().unwrap();
    st.quiesce();
}

fn queue_changes_under_a_raise(bugs: Bugs) {
    let mut st = Stage::new(1, 2, Policy::PreferRunning, bugs);
    let p = st.bind(0);
    st.send(p);
    st.drain(0); // p is unlinked; its last queue is vCPU0's priority-7 queue
    let sender = spawn(&st.hv, move |hv| hv.send(p).unwrap());
    let changes: Vec<_> =
        [6, 5, 4].into_iter().map(|prio| spawn(&st.hv, move |hv| hv.set_priority(p, prio).unwrap())).collect();
    sender.join().unwrap();
    for c in changes {
        c.join().unwrap();
    }
    st.quiesce();
}

fn load_and_heavy_agree(bugs: Bugs) {
    let st = Stage::new(1, 2, Policy::Balanced, bugs);
    for _ in 1..LOAD_BOUND {
        st.hv.sched.note_routed(0, false);
    }
    // One below the bound: this raise makes vCPU0 heavy...
    let t1 = spawn(&st.hv, move |hv| hv.sched.note_routed(0, false));
    // ...while another CPU finds its READY word empty.
    let t2 = spawn(&st.hv, move |hv| hv.sched.drained(0));
    t1.join().unwrap();
    t2.join().unwrap();
    st.quiesce();
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;

    /// On real threads the scenarios see only the interleavings the OS gives;
    /// loom (tests/loom.rs) is the proof. This keeps them runnable and
    /// catches a scenario that fails even sequentially.
    #[test]
    fn every_scenario_passes_on_real_threads() {
        for s in SCENARIOS {
            for _ in 0..200 {
                (s.run)(Bugs::NONE);
            }
        }
    }

    #[test]
    fn every_bug_has_a_known_scenario_and_invariant() {
        for b in Bug::ALL {
            let s = seeded(b);
            assert!(scenario(s.scenario).is_some(), "{}", s.scenario);
            assert!(inv::ALL.contains(&s.invariant), "{}", s.invariant);
        }
    }
}
