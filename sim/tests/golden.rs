//! The simulator's figures in `docs/evaluation.md` are golden outputs: each
//! table there must be what the scenario gives today, so a change to the
//! engine that moves a published figure fails here until the table is
//! re-run (`cargo run --release -p evroute-sim -- --scenario …`).

use evroute_model::Policy;
use evroute_sim::report::{run_all, PolicyResult};
use evroute_sim::scenario::Scenario;
use std::path::Path;

const EVALUATION: &str = include_str!("../../docs/evaluation.md");

/// The first table after `heading`: its header cells and its rows' cells.
fn table_after(heading: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let at = EVALUATION.find(heading).unwrap_or_else(|| panic!("no '{heading}' in docs/evaluation.md"));
    let cells = |l: &str| l.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect::<Vec<_>>();
    let mut lines = EVALUATION[at..].lines().skip_while(|l| !l.starts_with('|'));
    let header = cells(lines.next().expect("a table"));
    let rows = lines.skip(1).take_while(|l| l.starts_with('|')).map(cells).collect();
    (header, rows)
}

/// A result's value for a column, as the tables print it.
fn cell(p: &PolicyResult, column: &str) -> String {
    match column {
        "p50" => format!("{:.1}", p.handler.p50_us),
        "p90" => format!("{:.1}", p.handler.p90_us),
        "p99" => format!("{:.1}", p.handler.p99_us),
        "p99.9" => format!("{:.1}", p.handler.p999_us),
        "max" => format!("{:.1}", p.handler.max_us),
        "done p50" => format!("{:.1}", p.completion.p50_us),
        "done p99" => format!("{:.1}", p.completion.p99_us),
        "Jain" => format!("{:.3}", p.jain),
        "IPIs/ev" => format!("{:.3}", p.ipis_per_event),
        "wake-ups/ev" => format!("{:.3}", p.wakeups_per_event),
        "app CPUs" => format!("{:.3}", p.app_cpus),
        "app min" => format!("{:.3}", p.app_min),
        other => panic!("unknown column '{other}'"),
    }
}

fn check(heading: &str, scenario: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(scenario);
    let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let (r, _) = run_all(&s, &[Policy::Bound, Policy::PreferRunning, Policy::Balanced]).expect("runs");
    let (header, rows) = table_after(heading);
    assert_eq!(rows.len(), 3, "{heading}: one row per policy");
    for (row, p) in rows.iter().zip(&r.policies) {
        for (column, published) in header.iter().zip(row).skip(1) {
            assert_eq!(
                &cell(p, column),
                published,
                "{heading}, {} row, column {column}: docs say {published}; re-run {scenario}",
                p.policy
            );
        }
    }
}

#[test]
fn the_default_table_is_what_the_default_scenario_gives() {
    check("### Default: an overcommitted host, a multi-queue NIC", "sim/scenarios/default.toml");
}

#[test]
fn the_bursts_table_is_what_the_bursts_scenario_gives() {
    check("### Bursts: where Balanced differs", "sim/scenarios/bursts.toml");
}

#[test]
fn the_crowd_table_is_what_the_crowd_scenario_gives() {
    check("### Crowding: handler time taken from the application", "sim/scenarios/crowd.toml");
}

#[test]
fn the_deferred_table_is_what_the_deferred_scenario_gives() {
    check("### Where routing does not help: work deferred to a thread", "sim/scenarios/deferred.toml");
}
