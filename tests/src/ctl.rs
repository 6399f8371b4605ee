//! `evtchnctl` as an operator runs it in dom0 on the patched kernel: its
//! table and JSON name a channel this tool made (port, IRQ, name, set),
//! `set` by IRQ reaches Xen, `get` reads it back, and bad input is refused
//! with the reason. Its output goes to the log.

use crate::xen::Privcmd;
use crate::{report, Pair};
use std::process::Command;

const CTL: &str = "/bin/evtchnctl";

/// Runs evtchnctl with `args`: exit success, stdout, stderr; all logged.
fn run(args: &[&str]) -> (bool, String, String) {
    let out = match Command::new(CTL).args(args).output() {
        Ok(o) => o,
        Err(e) => return (false, String::new(), format!("cannot run {CTL}: {e}")),
    };
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    println!("EVROUTE-DETAIL evtchnctl $ evtchnctl {} (exit {})", args.join(" "), out.status.code().unwrap_or(-1));
    for line in stdout.lines().chain(stderr.lines()) {
        println!("EVROUTE-DETAIL evtchnctl | {line}");
    }
    (out.status.success(), stdout, stderr)
}

pub fn evtchnctl(pc: &Privcmd) -> bool {
    let (mut pair, irq) =
        match Pair::new("evr-ctl-rx", "evr-ctl-tx").and_then(|p| Ok((p, crate::xen::irq_of("evr-ctl-rx")?))) {
            Ok(x) => x,
            Err(e) => return report("evtchnctl", false, format!("a channel pair and its IRQ: {e}")),
        };
    super::guest::pings(&mut pair, 20, 0);
    let p = pair.rx_port;
    let mut log = Vec::new();

    let (ok, table, _) = run(&["show"]);
    let row = table.lines().find(|l| l.split_whitespace().next() == Some(&p.to_string()));
    let table_ok = ok && row.is_some_and(|r| r.contains("evtchn:evr-ctl-rx") && r.contains(&format!(" {irq} ")));
    log.push(format!("table row of port {p}: {row:?}"));

    let (ok, json, _) = run(&["show", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let entry = parsed.as_array().and_then(|a| a.iter().find(|e| e["port"] == p)).cloned().unwrap_or_default();
    let json_ok = ok
        && entry["irq"] == irq
        && entry["name"] == "evtchn:evr-ctl-rx"
        && entry["xen_set"] == "0-3"
        && entry["xen_set_error"].is_null()
        && entry["handled"].as_array().is_some_and(|h| h.iter().filter_map(|c| c.as_u64()).sum::<u64>() >= 20);
    log.push(format!("json entry of port {p}: {entry}"));

    // Linux's channel: refused without --force (Linux keeps its own records).
    let (unforced, _, why) = run(&["set", &format!("irq{irq}"), "1-2"]);
    let guarded = !unforced && why.contains("smp_affinity_list instead, or give --force");
    let (set_ok, _, _) = run(&["set", "--force", &format!("irq{irq}"), "1-2"]);
    let (get_ok, got, _) = run(&["get", &p.to_string()]);
    let xen = pc.get_vcpu_set(p);
    let set_get =
        guarded && set_ok && get_ok && got.trim() == format!("port {p}: 1-2 (of 4 vCPUs)") && xen == Ok(0b110);
    log.push(format!(
        "set irq{irq} 1-2 refused without --force: {guarded}; with it, then get: {:?}, Xen's set {xen:?}",
        got.trim()
    ));

    let Ok(ipi) = pc.bind_ipi(0) else {
        return report("evtchnctl", false, "EVTCHNOP_bind_ipi failed".into());
    };
    let refusals = [
        (vec!["set".to_string(), p.to_string(), "0-x".into()], "CPULIST '0-x': expected a number at byte 2"),
        (vec!["set".into(), "--force".into(), p.to_string(), "7".into()], "vCPU 7 is out of range (below 4)"),
        (vec!["set".into(), ipi.to_string(), "0".into()], &format!("set port {ipi} to {{0}}: Xen refused it: EINVAL")),
        (vec!["get".into(), "0".into()], "port 0 is reserved"),
        (vec!["get".into(), "irq999999".into()], "IRQ 999999 is not in /proc/interrupts"),
        (vec!["get".into(), "nine".into()], "'nine': expected a port number or irqN"),
    ];
    let mut refused = true;
    for (args, want) in &refusals {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = run(&args);
        if ok || !err.contains(want) {
            refused = false;
            log.push(format!("evtchnctl {}: want a failure saying '{want}', got '{}'", args.join(" "), err.trim()));
        }
    }
    let _ = pc.close(ipi);
    let kept = pc.get_vcpu_set(p);
    refused &= kept == Ok(0b110);
    log.push(format!("after the refusals port {p}'s set {kept:?}"));
    report(
        "evtchnctl",
        table_ok && json_ok && set_get && refused,
        format!(
            "show {table_ok}, --json {json_ok}, set/get {set_get}, {} refusals {refused}; {}",
            refusals.len(),
            log.join("; ")
        ),
    )
}
