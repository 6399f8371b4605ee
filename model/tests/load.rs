//! `Balanced`'s load signal on random sequences: events routed to vCPUs at
//! a clock that only moves forward, sometimes by half a wrap of the 24-bit
//! period, checked against a plain reference on a 64-bit clock (a count per
//! vCPU, halved once per period that passes, capped at the bound; the heavy
//! vCPUs brought up to date at each new period). After every step the heavy
//! bit is "count at the bound", and no vCPU is marked that the reference
//! says has decayed below it. The one place the 24-bit period cannot tell
//! (a stamp within `LOAD_SKEW` of a whole number of wraps old, which
//! `sched.rs` documents) ends a run without a verdict.

use evroute_model::bugs::{Bug, Bugs};
use evroute_model::hypervisor::sched::{Sched, LOAD_BOUND, LOAD_SKEW, PERIOD_MASK};
use proptest::prelude::*;

const VCPUS: u32 = 70; // two bitmap words
const WRAP: u64 = PERIOD_MASK as u64 + 1;

#[derive(Clone, Debug)]
enum Step {
    /// An event routed to the vCPU.
    Routed(u32),
    /// The clock moves on this many periods; a decision then starts.
    Periods(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let v = prop_oneof![0u32..3, Just(63u32), Just(64u32), Just(69u32)];
    let far = prop_oneof![Just(WRAP / 2), Just(WRAP / 2 + 5), Just(WRAP - 5), Just(3 * WRAP)];
    prop_oneof![
        8 => v.prop_map(Step::Routed),
        1 => (1u64..4).prop_map(Step::Periods),
        1 => Just(Step::Periods(20)),
        1 => far.prop_map(Step::Periods),
    ]
}

/// The reference count `c` stamped at `at`, brought to `now` (64-bit).
fn brought((at, c): (u64, u8), now: u64) -> u8 {
    let elapsed = now - at;
    if elapsed >= 8 {
        0
    } else {
        c >> elapsed
    }
}

/// A true age the 24-bit period cannot tell from a current or later stamp.
fn in_window(elapsed: u64) -> bool {
    let r = elapsed % WRAP;
    elapsed >= WRAP - u64::from(LOAD_SKEW) && (r <= u64::from(LOAD_SKEW) || r >= WRAP - u64::from(LOAD_SKEW))
}

/// Run `steps` from period `start`; `Err` names the first disagreement.
fn run(start: u64, steps: &[Step], bugs: Bugs) -> Result<(), String> {
    let s = Sched::with(VCPUS, 0, bugs);
    let p24 = |t: u64| (t % WRAP) as u32;
    let mut now = start;
    // Reference: (period, count) as stored per vCPU; a new domain's loads
    // and period are stamped 0 whatever the clock says.
    let mut model = vec![(0u64, 0u8); VCPUS as usize];
    let mut period = 0u64;
    for (i, st) in steps.iter().enumerate() {
        if model.iter().any(|m| in_window(now - m.0)) || in_window(now - period) {
            return Ok(());
        }
        if let Step::Periods(n) = *st {
            now += n;
        }
        if model.iter().any(|m| in_window(now - m.0)) || in_window(now - period) {
            return Ok(());
        }
        s.new_period(p24(now));
        if period != now && !bugs.has(Bug::StickyMark) {
            for m in model.iter_mut().filter(|m| m.1 >= LOAD_BOUND) {
                *m = (now, brought(*m, now));
            }
        }
        period = now;
        if let Step::Routed(v) = *st {
            s.note_routed(v, p24(now));
            let m = &mut model[v as usize];
            *m = (now, (brought(*m, now) + 1).min(LOAD_BOUND));
        }
        for v in 0..VCPUS {
            let live = brought(model[v as usize], now);
            let heavy = s.is_heavy(v);
            if heavy != (s.load(v) >= LOAD_BOUND) {
                return Err(format!("step {i}: vCPU {v} heavy bit {heavy}, stored load {}", s.load(v)));
            }
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
    #[test]
    fn the_mark_is_the_decayed_count_at_the_bound(
        start in prop_oneof![Just(0u64), 0u64..(4 * WRAP), Just(WRAP - 1)],
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
    assert_eq!(run(3 * WRAP / 4, &steps, Bugs::NONE), Ok(()));
    let mut steps: Vec<Step> = (0..LOAD_BOUND).map(|_| Step::Routed(1)).collect();
    steps.extend([Step::Periods(3 * WRAP / 4), Step::Routed(2)]);
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
