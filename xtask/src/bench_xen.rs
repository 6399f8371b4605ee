//! `cargo xtask bench-xen`: instructions per set-pending in the harness,
//! counted by callgrind (repeatable, whatever else the machine does), for
//! Debian's unpatched event_fifo.c and the patched one with routing off and
//! under each policy, for domains of 4, 64 and 512 vCPUs; and instructions
//! a context switch pays for routing (vcpu_runstate_change()'s hook).

use crate::run::Steps;
use crate::xen;
use std::fs;
use std::path::Path;
use std::process::Command;

const ITERS: u32 = 20_000;
const POLICIES: [&str; 4] = ["unpatched", "off", "running", "balanced"];
const VCPUS: [u32; 3] = [4, 64, 512];
const SCENARIOS: [&str; 2] = ["stay", "move"];
/// Context switches measured: (row, boot option, scenario of set-pending-bench).
const SWITCHES: [(&str, &str, &str); 4] = [
    ("evtchn-route=off", "off", "switch"),
    ("running, no channel has a set", "running", "switch"),
    ("running, a channel has a set", "running", "switch-set"),
    ("balanced, a channel has a set", "balanced", "switch-set"),
];

pub fn main() -> Result<(), String> {
    let mut steps = Steps::default();
    if !xen::on_path("valgrind") {
        xen::apt_install(&mut steps, &["valgrind"])?;
    }
    xen::prepare_for_harness(&mut steps)?;
    let root = xen::repo_root();
    let build = ["build", "--release", "-p", "evroute-xen-harness", "--bin", "set-pending-bench"];
    steps.cargo("build benchmark (patched event_fifo.c)", &build, &[])?;
    let pristine_dir = root.join("target/pristine");
    let pristine_dir = pristine_dir.to_string_lossy();
    steps.cargo(
        "build benchmark (unpatched event_fifo.c)",
        &build,
        &[("EVROUTE_XEN_PRISTINE", "1"), ("CARGO_TARGET_DIR", &pristine_dir)],
    )?;

    let mut rows = Vec::new();
    let total = POLICIES.len() * VCPUS.len() * SCENARIOS.len();
    for policy in POLICIES {
        let bin = if policy == "unpatched" {
            root.join("target/pristine/release/set-pending-bench")
        } else {
            root.join("target/release/set-pending-bench")
        };
        for n in VCPUS {
            let mut row = vec![policy.to_string(), n.to_string()];
            for scenario in SCENARIOS {
                eprintln!("[{}/{total}] {policy} {n} vCPUs {scenario}", rows.len() * SCENARIOS.len() + row.len() - 1);
                row.push(format!("{:.0}", per_call(&bin, policy, n, scenario)?));
            }
            rows.push(row);
        }
    }

    let mut switches = Vec::new();
    for (label, policy, scenario) in SWITCHES {
        let mut row = vec![label.to_string()];
        for n in VCPUS {
            let bin = root.join("target/release/set-pending-bench");
            eprintln!("[switch] {label} {n} vCPUs");
            let with = per_call_in(&bin, "hx_bench_runstate", policy, n, scenario)?;
            let without = per_call_in(&bin, "hx_bench_runstate_base", policy, n, scenario)?;
            row.push(format!("{:.1}", with - without));
        }
        switches.push(row);
    }

    let mut table = String::from(
        "| event_fifo.c | vCPUs | instructions per set-pending, last vCPU running (stay) | … last vCPU preempted (move) |\n|---|---|---|---|\n",
    );
    for r in &rows {
        table.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[3]));
    }
    table.push_str("\n| context switch | instructions added, 4 vCPUs | 64 vCPUs | 512 vCPUs |\n|---|---|---|---|\n");
    for r in &switches {
        table.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[3]));
    }
    let out = root.join("target/xen-bench.md");
    fs::write(&out, &table).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("{table}");
    eprintln!("(callgrind, {ITERS} sends each; table also in {})", out.display());
    steps.summary();
    Ok(())
}

/// Instructions inside `hx_bench_send` per call.
fn per_call(bin: &Path, policy: &str, n: u32, scenario: &str) -> Result<f64, String> {
    per_call_in(bin, "hx_bench_send", policy, n, scenario)
}

/// Instructions inside function `func` per call (ITERS calls).
fn per_call_in(bin: &Path, func: &str, policy: &str, n: u32, scenario: &str) -> Result<f64, String> {
    let out = std::env::temp_dir().join(format!("evroute-cg-{func}-{policy}-{n}-{scenario}.out"));
    let status = Command::new("valgrind")
        .args(["--tool=callgrind", "-q"])
        .arg(format!("--toggle-collect={func}"))
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(bin)
        .args([policy, &n.to_string(), scenario, &ITERS.to_string()])
        .status()
        .map_err(|e| format!("valgrind: {e}"))?;
    if !status.success() {
        return Err(format!("{} {policy} {n} {scenario} failed under valgrind", bin.display()));
    }
    let text = fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = fs::remove_file(&out);
    let total: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("totals: "))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("no totals in callgrind output for {policy} {n} {scenario}"))?;
    Ok(total / f64::from(ITERS))
}
