//! Bad input says what is wrong and where, and nothing runs.

use evroute_sim::scenario::{read_trace, Scenario, DEFAULT};
use std::process::Command;

fn err(text: &str) -> String {
    Scenario::parse(text, "bad.toml").map(|_| ()).expect_err("must be refused").to_string()
}

/// The default scenario with `from` replaced by `to` (which must be there).
fn default_with(from: &str, to: &str) -> String {
    assert!(DEFAULT.contains(from), "{from}");
    DEFAULT.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("needle") + 1
}

#[test]
fn each_bad_field_is_named_with_its_line_and_what_is_allowed() {
    let cases = [
        ("pcpus = 4", "pcpus = 0", "host.pcpus: 0; allowed 1 to 64"),
        (
            "scheduler = \"credit2\"",
            "scheduler = \"rtds\"",
            "unknown variant `rtds`, expected one of `credit2`, `credit`, `null`",
        ),
        ("busy = [0, 1, 2]", "busy = [0, 1, 7]", "domain.busy: vCPU 7; the domain has vCPUs 0 to 3"),
        ("domain = \"guest\"", "domain = \"gest\"", "source.domain: no domain `gest`; defined: guest, neighbour"),
        ("handler_us = 5.0", "handler_us = -1.0", "source.handler_us: must be >= 0"),
        ("channels = 4", "chanels = 4", "unknown field `chanels`"),
        ("rate_per_s = 20000", "rate_per_s = 0", "source.arrival: rate_per_s, on_ms and off_ms must be > 0"),
        ("set = \"all\"", "set = []", "source.set: an empty set"),
        ("duration_ms = 10000", "duration_ms = -5", "duration_ms: must be a positive number"),
        (
            "ratelimit_us = 1000",
            "ratelimit_us = 1000\nevtchn_wait_us = 5000",
            "host.evtchn_wait_us: 5000; allowed 0 (off) or 1 to 1000, as Xen's evtchn-wait-us",
        ),
        (
            "arrival = { kind = \"poisson\", rate_per_s = 20000 }",
            "arrival = { kind = \"closed\", gap_us_min = 300.0, gap_us_max = 100.0 }",
            "source.arrival: closed needs 0 < gap_us_min <= gap_us_max",
        ),
        ("handler_us = 5.0", "handler_us = 5.0\nper_merged_us = -2.0", "source.per_merged_us: must be >= 0"),
        (
            "busy = \"all\"",
            "busy = \"all\"\nhousekeeping = { every_ms = 1.0, cost_us = 2000.0 }",
            "domain.housekeeping: every_ms must be > 0 and 0 <= cost_us < every_ms",
        ),
    ];
    for (from, to, want) in cases {
        let text = default_with(from, to);
        let e = err(&text);
        // A replacement may add a line: the error is at the last one.
        let line = line_of(&text, to.lines().last().expect("non-empty"));
        assert!(e.starts_with(&format!("bad.toml:{line}:")), "`{to}`: wrong place in `{e}`, want line {line}");
        assert!(e.contains(want), "`{to}`: `{e}` does not say `{want}`");
    }
}

#[test]
fn the_null_scheduler_refuses_more_vcpus_than_pcpus() {
    let e = err(&default_with("scheduler = \"credit2\"", "scheduler = \"null\""));
    assert!(e.contains("10 vCPUs need pcpus >= 10"), "{e}");
}

#[test]
fn a_bad_trace_line_is_named() {
    let dir = std::env::temp_dir().join(format!("evroute-sim-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("t.csv");
    std::fs::write(&p, "time_us\n10\n20\nabc\n").unwrap();
    let e = read_trace(p.to_str().unwrap()).unwrap_err();
    assert!(e.ends_with(":4: `abc` is not a timestamp in µs"), "{e}");
    std::fs::write(&p, "10\n5\n").unwrap();
    let e = read_trace(p.to_str().unwrap()).unwrap_err();
    assert!(e.ends_with(":2: timestamps must not go backwards"), "{e}");
    std::fs::write(&p, "time_us\n10\n20.5\n").unwrap();
    assert_eq!(read_trace(p.to_str().unwrap()).unwrap(), vec![10_000, 20_500]);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn sim(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_evroute-sim")).args(args).output().expect("run evroute-sim");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_flags_and_files_exit_non_zero_and_say_why() {
    let (code, e) = sim(&["--policy", "fast"]);
    assert_eq!(code, 2);
    assert!(e.contains("`fast` is not a policy; allowed: off, running, balanced"), "{e}");
    let (code, e) = sim(&["sweep", "--overcommit", "1.5,x"]);
    assert_eq!(code, 2);
    assert!(e.contains("--overcommit") && e.contains("`x` is not a positive number"), "{e}");
    let (code, e) = sim(&["--scenario", "/nonexistent.toml"]);
    assert_eq!(code, 2);
    assert!(e.contains("/nonexistent.toml: cannot read"), "{e}");
}
