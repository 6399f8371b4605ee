//! `Balanced`'s load signal on random sequences: events routed to vCPUs at
//! a clock that only moves forward, checked against a plain reference (a
//! count per vCPU, halved once per period that passes, capped at the
//! bound). After every step the heavy bit is "count at the bound", and
//! after the first decision of a period no vCPU is heavy on an earlier
//! period's events: a mark lasts at most until the period after the events
//! that earned it, whatever the vCPU does.

use evroute_model::bugs::{Bug, Bugs};
use evroute_model::hypervisor::sched::{Sched, LOAD_BOUND, LOAD_SKEW, PERIOD_MASK};
use proptest::prelude::*;

const VCPUS: u32 = 70; // two bitmap words

#[derive(Clone, Debug)]
enum Step {
    /// An event routed to the vCPU.
    Routed(u32),
    /// The clock moves on this many periods; a decision then starts.
    Periods(u32),
}

fn step() -> impl Strategy<Value = Step> {
    let v = prop_oneof![0u32..3, Just(63u32), Just(64u32), Just(69u32)];
    // Whole wraps of the 24-bit period too, and jumps to just behind it.
    let far = prop_oneof![Just(1u32 << 23), Just((1u32 << 23) + 5), Just(PERIOD_MASK), Just(PERIOD_MASK - 1)];
    prop_oneof![8 => v.prop_map(Step::Routed), 1 => (1u32..4).prop_map(Step::Periods), 1 => Just(Step::Periods(20)), 1 => far.prop_map(Step::Periods)]
}

/// A reference load brought to `now`: halved per period since `at`, unless
/// `at` is up to `LOAD_SKEW` periods ahead (a caller whose clock is behind).
fn brought((at, c): (u32, u8), now: u32) -> (u32, u8) {
    let ahead = at.wrapping_sub(now) & PERIOD_MASK;
    if ahead != 0 && ahead <= LOAD_SKEW {
        return (at, c);
    }
    let elapsed = now.wrapping_sub(at) & PERIOD_MASK;
    (now, if elapsed >= 8 { 0 } else { c >> elapsed })
}

/// Run `steps` from period `start`; `Err` names the first disagreement.
fn run(start: u32, steps: &[Step], bugs: Bugs) -> Result<(), String> {
    let s = Sched::with(VCPUS, 0, bugs);
    let mut now = start & PERIOD_MASK;
    // Reference: (period of the count, count) per vCPU; a new domain's
    // loads are stamped 0 whatever the clock says.
    let mut model = vec![(0u32, 0u8); VCPUS as usize];
    // The domain's period, and the sweep its first decision in a new one
    // makes: every vCPU at the bound brought up to date.
    let mut period = 0u32;
    let mut sweep = |model: &mut Vec<(u32, u8)>, now: u32| {
        let ahead = period.wrapping_sub(now) & PERIOD_MASK;
        if period == now || (ahead != 0 && ahead <= LOAD_SKEW) || bugs.has(Bug::StickyMark) {
            period = if period == now || ahead <= LOAD_SKEW { period } else { now };
            return;
        }
        period = now;
        for m in model.iter_mut().filter(|m| m.1 >= LOAD_BOUND) {
            *m = brought(*m, now);
        }
    };
    for (i, st) in steps.iter().enumerate() {
        match *st {
            Step::Routed(v) => {
                s.new_period(now);
                sweep(&mut model, now);
                s.note_routed(v, now);
                let m = &mut model[v as usize];
                let (at, c) = brought(*m, now);
                *m = (at, (c + 1).min(LOAD_BOUND));
            }
            Step::Periods(n) => {
                now = (now + n) & PERIOD_MASK;
                s.new_period(now);
                sweep(&mut model, now);
            }
        }
        for v in 0..VCPUS {
            let live = brought(model[v as usize], now).1;
            let heavy = s.is_heavy(v);
            if heavy != (s.load(v) >= LOAD_BOUND) {
                return Err(format!("step {i}: vCPU {v} heavy bit {heavy}, stored load {}", s.load(v)));
            }
            // The stored count may lag (a light vCPU decays when next
            // touched), but a heavy vCPU's is always current.
            if heavy && live < LOAD_BOUND {
                return Err(format!("step {i}: vCPU {v} marked heavy with {live} events left in period {now}"));
            }
            if !heavy && live >= LOAD_BOUND {
                return Err(format!("step {i}: vCPU {v} not marked with {live} events in period {now}"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_mark_is_the_decayed_count_at_the_bound(
        start in prop_oneof![Just(0u32), any::<u32>(), Just(PERIOD_MASK - 1)],
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        prop_assert_eq!(run(start, &steps, Bugs::NONE), Ok(()));
    }
}

/// A domain created half a wrap into the clock, or a vCPU left alone that
/// long, still decays: its stamp is far behind, not "ahead".
#[test]
fn a_load_stamped_half_a_wrap_ago_decays() {
    let mut steps: Vec<Step> = (0..LOAD_BOUND).map(|_| Step::Routed(1)).collect();
    steps.extend([Step::Periods(1), Step::Routed(2)]);
    assert_eq!(run(3 << 22, &steps, Bugs::NONE), Ok(()));
    let mut steps: Vec<Step> = (0..LOAD_BOUND).map(|_| Step::Routed(1)).collect();
    steps.extend([Step::Periods(3 << 22), Step::Routed(2)]);
    assert_eq!(run(0, &steps, Bugs::NONE), Ok(()));
}

/// A heavy vCPU that gets no more events (Balanced sends it none) is light
/// after the next period's first decision; with the sticky mark it never is.
#[test]
fn a_heavy_vcpu_left_alone_is_light_a_period_later() {
    let mut steps: Vec<Step> = (0..LOAD_BOUND).map(|_| Step::Routed(1)).collect();
    steps.extend([Step::Periods(1), Step::Routed(2)]);
    assert_eq!(run(0, &steps, Bugs::NONE), Ok(()));
    let err = run(0, &steps, Bugs::only(Bug::StickyMark)).expect_err("the sticky mark must be caught");
    assert!(err.contains("marked heavy"), "{err}");
}
