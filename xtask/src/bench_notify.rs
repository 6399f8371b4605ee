//! `cargo xtask bench-notify`: the notify path's one-way test (send on vCPU
//! 0, return from `SCHEDOP_poll` on vCPU 1) on the machine this runs on:
//! dom0 of a host booted with the patched Xen, where MONITOR/MWAIT is real
//! (QEMU cannot show it). Xen's `evtchn-wait` is a boot option, so each
//! run measures the mode this boot has, keeps it under
//! `target/bench-notify/<mode>.metric`, and prints every mode recorded so
//! far side by side: boot with `evtchn-wait=off`, `poll` and `mwait` in
//! turn and run it once in each.

use crate::run::Steps;
use crate::xen;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Events to send.
    #[arg(long, default_value_t = 10_000)]
    pub events: u32,
}

const MODES: [&str; 3] = ["off", "poll", "mwait"];
const COLUMNS: [(&str, &str); 7] = [
    ("events", "events"),
    ("one_way_p50_us", "one-way p50 µs"),
    ("one_way_p99_us", "p99 µs"),
    ("send_p50_us", "send p50 µs"),
    ("ipis_per_event", "IPIs/event"),
    ("wait_event", "waits ended by the event"),
    ("wait_gave_up", "gave up"),
];

pub fn main(args: &Args) -> Result<(), String> {
    if !Path::new("/dev/xen/privcmd").exists() {
        return Err("no /dev/xen/privcmd: run this as root in dom0 of a host booted with the patched Xen \
                    (dom0 with at least 2 vCPUs, `xl` not needed); under QEMU, \
                    `cargo xtask e2e --boots notify-off,notify-poll,notify-mwait` runs the same test"
            .into());
    }
    let mut steps = Steps::default();
    steps.cargo("build evroute-e2e", &["build", "--release", "-p", "evroute-tests"], &[])?;
    let root = xen::repo_root();
    let mut tool = Command::new(root.join("target/release/evroute-e2e"));
    tool.arg("bench-notify").arg(args.events.to_string());
    eprintln!("==> one-way test, {} events (about {} s)", args.events, args.events / 2000 + 1);
    let out = tool.output().map_err(|e| format!("evroute-e2e: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    for l in text.lines().filter(|l| l.starts_with("EVROUTE-DETAIL")) {
        eprintln!("    {l}");
    }
    if !out.status.success() {
        return Err(format!("evroute-e2e bench-notify failed ({})", out.status));
    }
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("EVROUTE-METRIC "))
        .ok_or("evroute-e2e printed no EVROUTE-METRIC line")?;
    let m = crate::e2e::parse_metric(line);
    let mode = m.get("mode").cloned().unwrap_or_default();
    let dir = root.join("target/bench-notify");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join(format!("{mode}.metric"));
    fs::write(&file, line).map_err(|e| format!("{}: {e}", file.display()))?;
    eprintln!("recorded {}", file.display());
    let recorded: BTreeMap<&str, BTreeMap<String, String>> = MODES
        .iter()
        .filter_map(|&md| {
            let t = fs::read_to_string(dir.join(format!("{md}.metric"))).ok()?;
            Some((md, crate::e2e::parse_metric(&t)))
        })
        .collect();
    let head: Vec<&str> = COLUMNS.iter().map(|(_, h)| *h).collect();
    println!("| evtchn-wait | {} |\n|---|{}", head.join(" | "), "---|".repeat(COLUMNS.len()));
    for (md, m) in &recorded {
        let cells: Vec<String> = COLUMNS.iter().map(|(k, _)| m.get(*k).cloned().unwrap_or_default()).collect();
        println!("| {md} | {} |", cells.join(" | "));
    }
    let missing: Vec<&str> = MODES.iter().filter(|m| !recorded.contains_key(*m)).copied().collect();
    if !missing.is_empty() {
        println!("not measured yet: {} (boot Xen with evtchn-wait=<mode> and run again)", missing.join(", "));
    }
    Ok(())
}
