//! The loom suite: every scenario in every interleaving up to the preemption
//! bound (`LOOM_MAX_PREEMPTIONS`, 2 in CI), and every seeded bug caught.
//! Built only with `--features loom` (see `cargo xtask loom`).

use evroute_model::bugs::{Bug, Bugs};
use evroute_model::scenarios::{scenario, seeded, SEEDED_BUGS};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn explore(name: &str, bugs: Bugs) {
    let s = scenario(name).expect("known scenario");
    let run = s.run;
    let t = Instant::now();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let mut builder = loom::model::Builder::new();
    // Scenarios are short: a deeper branch count only means a runaway loop.
    builder.max_branches = 10_000;
    // A race that needs more preemptions than the run's bound gets them.
    if let Some(min) = s.min_preemptions {
        builder.preemption_bound = Some(builder.preemption_bound.map_or(min, |b| b.max(min)));
    }
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        run(bugs)
    });
    let bound = builder.preemption_bound.map_or("none".to_string(), |b| b.to_string());
    eprintln!(
        "loom: {name}: {} interleavings in {:.1}s (preemption bound {bound})",
        runs.load(Ordering::Relaxed),
        t.elapsed().as_secs_f64()
    );
}

macro_rules! scenarios {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                explore($name, Bugs::NONE);
            }
        )*
    };
}

scenarios! {
    scenario_two_senders_one_consumer => "two-senders-one-consumer",
    scenario_set_change_moves_queue => "set-change-moves-queue",
    scenario_set_change_while_none_runs => "set-change-while-none-runs",
    scenario_stale_tail_after_queue_move => "stale-tail-after-queue-move",
    scenario_consume_on_old_while_routed_to_new => "consume-on-old-while-routed-to-new",
    scenario_mask_unmask_race => "mask-unmask-race",
    scenario_priority_change_race => "priority-change-race",
    scenario_close_and_reuse_linked_port => "close-and-reuse-linked-port",
    scenario_opposite_queue_moves => "opposite-queue-moves",
    scenario_control_block_mapped_while_routed => "control-block-mapped-while-routed",
    scenario_queue_changes_under_a_raise => "queue-changes-under-a-raise",
    scenario_load_and_heavy_agree => "load-and-heavy-agree",
    scenario_mark_lifts_next_period => "mark-lifts-next-period",
    scenario_mark_straddles_a_period => "mark-straddles-a-period",
    scenario_raise_while_handler_runs => "raise-while-handler-runs",
    scenario_set_change_while_lateeoi_pending => "set-change-while-lateeoi-pending",
    scenario_lateeoi_handler_runs_again => "lateeoi-handler-runs-again",
    scenario_wait_in_xen_vs_send => "wait-in-xen-vs-send",
    scenario_cpu_offline_with_event_linked => "cpu-offline-with-event-linked",
}

#[test]
fn every_scenario_has_a_loom_test() {
    let me = include_str!("loom.rs");
    for s in evroute_model::scenarios::SCENARIOS {
        assert!(me.contains(&format!("=> \"{}\"", s.name)), "scenario {} has no loom test", s.name);
    }
}

/// Run the scenario of `bug` with the bug on, in a child process (loom
/// aborts the process when it finds a deadlock); its output if it failed.
fn caught(bug: Bug) -> Option<String> {
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args(["seeded_bug_from_env", "--exact", "--nocapture", "--test-threads", "1"])
        .env("EVROUTE_BUG", bug.name())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run the test binary again");
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (!out.status.success()).then_some(text)
}

/// Each seeded bug must make its scenario fail, and fail for the invariant it
/// breaks; a bug that slips through means the checks have gone blind.
#[test]
fn every_seeded_bug_is_caught() {
    let mut missed = Vec::new();
    for s in SEEDED_BUGS {
        match caught(s.bug) {
            Some(out) if out.contains(s.invariant) => {
                eprintln!("caught {:<32} -> {}", s.bug.name(), violation_line(&out, s.invariant));
            }
            Some(out) => missed.push(format!("{}: failed, but not on {}:\n{out}", s.bug.name(), s.invariant)),
            None => missed.push(format!("{}: scenario {} passed with the bug on", s.bug.name(), s.scenario)),
        }
    }
    assert!(missed.is_empty(), "seeded bugs not caught:\n{}", missed.join("\n"));
}

fn violation_line<'a>(out: &'a str, invariant: &str) -> &'a str {
    out.lines().find(|l| l.contains(invariant)).unwrap_or("").trim()
}

/// `cargo xtask loom --bug NAME`: run one seeded bug and fail loudly.
#[test]
fn seeded_bug_from_env() {
    let Ok(name) = std::env::var("EVROUTE_BUG") else { return };
    let bug = Bug::from_name(&name).unwrap_or_else(|| panic!("no seeded bug {name}"));
    explore(seeded(bug).scenario, Bugs::only(bug));
}
