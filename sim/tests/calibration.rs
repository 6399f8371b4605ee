//! Calibration: each `sim/scenarios/calib-*.toml` mirrors a booted
//! measurement of `cargo xtask e2e` and carries its booted figures. The
//! simulated p99 with no set (Bound) and the p99 ratio Bound/PreferRunning
//! must stay within the scenario's band (a factor) of the booted medians:
//! a scheduler change that moves the simulator away from the booted Xen
//! fails here. Latency is to the end of the last stage ("done"), as the
//! booted tool reads it.

use evroute_model::Policy;
use evroute_sim::report::run_all;
use evroute_sim::scenario::{Calibration, Scenario};
use std::path::Path;

/// Simulated against booted, as "factor off": 1.0 is a match.
fn off_by(sim: f64, booted: f64) -> f64 {
    (sim / booted).max(booted / sim)
}

fn calibrate(file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(file);
    let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let c = s.calibration.clone().unwrap_or_else(|| panic!("{file}: no [calibration] table"));
    let (r, _) = run_all(&s, &[Policy::Bound, Policy::PreferRunning]).expect("runs");
    let (bound, running) = (r.policies[0].completion.p99_us, r.policies[1].completion.p99_us);
    let band = *c.band.get_ref();
    let booted_p99 = Calibration::median(c.bound_p99_us.get_ref());
    let booted_ratio = Calibration::median(c.ratio_p99.get_ref());
    let ratio = bound / running;
    println!("{file}: Bound p99 {bound:.1} µs (booted {booted_p99:.1}), ratio {ratio:.2}x (booted {booted_ratio:.2}x)");
    assert!(
        off_by(bound, booted_p99) <= band,
        "{file}: simulated Bound p99 {bound:.1} µs, booted median {booted_p99:.1} µs: {:.2}x apart, band {band}x",
        off_by(bound, booted_p99)
    );
    assert!(
        off_by(ratio, booted_ratio) <= band,
        "{file}: simulated p99 ratio Bound/PreferRunning {ratio:.2}x, booted median {booted_ratio:.2}x: {:.2}x apart, band {band}x",
        off_by(ratio, booted_ratio)
    );
}

#[test]
fn the_share_layout_under_credit2_matches_the_booted_xen() {
    calibrate("calib-share-credit2.toml");
}

#[test]
fn every_calibration_scenario_is_checked() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("sim/scenarios")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with("calib-"))
        .collect();
    files.sort();
    assert_eq!(files, ["calib-share-credit2.toml"], "a new calib-*.toml needs its test above");
}
