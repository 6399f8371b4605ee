//! `cargo xtask loom`: the loom suite (every scenario, then every seeded bug
//! must be caught), `--deep` for a larger preemption bound, `--bug NAME` to
//! watch one seeded bug fail, `--list-bugs`.

use crate::run::Steps;
use evroute_model::bugs::Bug;
use evroute_model::scenarios::{seeded, SEEDED_BUGS};

/// Preemption bound in CI: every scenario within minutes on two cores.
pub const BOUND_CI: u32 = 2;
/// `--deep`: one more preemption, for a longer run before a release.
pub const BOUND_DEEP: u32 = 3;

#[derive(clap::Args)]
pub struct Args {
    /// Explore with preemption bound 3 instead of 2.
    #[arg(long)]
    deep: bool,
    /// Switch on one seeded bug; the run must fail naming the invariant.
    #[arg(long, value_name = "NAME", conflicts_with = "list_bugs")]
    bug: Option<String>,
    /// List the seeded bugs, their scenarios and the invariants they break.
    #[arg(long)]
    list_bugs: bool,
}

pub fn main(args: &Args) -> Result<(), String> {
    if args.list_bugs {
        println!("{:<32} {:<38} breaks", "bug", "scenario");
        for s in SEEDED_BUGS {
            println!("{:<32} {:<38} {}", s.bug.name(), s.scenario, s.invariant);
        }
        return Ok(());
    }
    let bound = if args.deep { BOUND_DEEP } else { BOUND_CI };
    let mut steps = Steps::default();
    if let Some(name) = &args.bug {
        let bug = Bug::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("no seeded bug '{name}'; known: {}", known.join(", "))
        })?;
        let s = seeded(bug);
        eprintln!("seeded bug {name}: scenario {}, expected to break {}", s.scenario, s.invariant);
        let result = loom_test(
            &mut steps,
            &format!("loom --bug {name}"),
            bound,
            "seeded_bug_from_env",
            &[("EVROUTE_BUG", name)],
        );
        return match result {
            Err(_) => Err(format!(
                "seeded bug {name} caught: the run failed (see 'invariant violated: {}' above)",
                s.invariant
            )),
            Ok(()) => Err(format!("seeded bug {name} was NOT caught by scenario {}", s.scenario)),
        };
    }
    suite(&mut steps, bound)?;
    steps.summary();
    Ok(())
}

/// Every scenario must pass, then every seeded bug must be caught.
pub fn suite(steps: &mut Steps, bound: u32) -> Result<(), String> {
    loom_test(steps, "loom scenarios", bound, "scenario_", &[])?;
    loom_test(steps, "loom seeded bugs", bound, "every_seeded_bug_is_caught", &[])
}

fn loom_test(steps: &mut Steps, name: &str, bound: u32, filter: &str, env: &[(&str, &str)]) -> Result<(), String> {
    let bound = bound.to_string();
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.push(("LOOM_MAX_PREEMPTIONS", &bound));
    let args = [
        "test",
        "-p",
        "evroute-model",
        "--features",
        "loom",
        "--release",
        "--test",
        "loom",
        "--",
        filter,
        "--nocapture",
        "--test-threads",
        "2",
    ];
    steps.cargo(name, &args, &env)
}
