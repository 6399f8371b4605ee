//! Closed-form checks of the simulator: cases whose answer is known without
//! simulating, so a mistake in the engine, a scheduler or the guest shows.

use evroute_model::Policy;
use evroute_sim::host::{read_traces, Host};
use evroute_sim::report::{run_all, run_one, PolicyResult};
use evroute_sim::scenario::{Scenario, DEFAULT};

fn scenario(text: &str) -> Scenario {
    Scenario::parse(text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn one(s: &Scenario, p: Policy) -> PolicyResult {
    run_one(s, p, &read_traces(s).unwrap()).0
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= want.abs() * rel
}

/// One vCPU on its own pCPU (null scheduler), CPU-bound (`busy = "all"`)
/// or idle between events (`"none"`); events as `arrival` (the TOML
/// table), handler 10 µs, send 2 µs, entry 3.5 µs; `extra_host` and
/// `extra_costs` are added to those tables.
fn one_vcpu(busy: &str, arrival: &str, duration_ms: u32, extra_host: &str, extra_costs: &str) -> Scenario {
    scenario(&format!(
        r#"
        name = "one vCPU on its own pCPU"
        duration_ms = {duration_ms}
        [host]
        pcpus = 1
        scheduler = "null"
        {extra_host}
        [costs]
        send_us = 2.0
        entry_us = 3.5
        {extra_costs}
        [[domain]]
        name = "g"
        vcpus = 1
        busy = "{busy}"
        [[source]]
        name = "s"
        domain = "g"
        handler_us = 10.0
        arrival = {arrival}
        "#
    ))
}

fn poisson(rate: u32) -> String {
    format!(r#"{{ kind = "poisson", rate_per_s = {rate} }}"#)
}

/// One vCPU alone, at 50 events/s.
fn one_vcpu_alone(busy: &str) -> PolicyResult {
    let s = one_vcpu(busy, &poisson(50), 2000, "", "");
    let r = one(&s, Policy::Bound);
    assert!(r.raised > 50, "too few events: {}", r.raised);
    assert_eq!(r.coalesced, 0);
    r
}

/// Nothing waits, so every event's latency is exactly the path: send +
/// entry to the handler, plus the handler to completion.
#[test]
fn a_vcpu_that_always_runs_sees_only_the_path_cost() {
    let r = one_vcpu_alone("all");
    assert_eq!(r.handler.mean_us, 5.5, "{:?}", r.handler);
    assert!(close(r.handler.max_us, 5.5, 1e-3) && close(r.handler.p50_us, 5.5, 1e-3), "{:?}", r.handler);
    assert_eq!(r.completion.mean_us, 15.5, "{:?}", r.completion);
    assert_eq!(r.ipis_per_event, 1.0);
    assert_eq!(r.wakeups_per_event, 0.0);
}

/// Idle between events: each event wakes the vCPU (the null scheduler runs
/// it at once), and the latency is still the path.
#[test]
fn a_blocked_vcpu_on_its_own_pcpu_is_woken_by_every_event() {
    let r = one_vcpu_alone("none");
    assert_eq!(r.handler.mean_us, 5.5, "{:?}", r.handler);
    assert_eq!(r.completion.mean_us, 15.5, "{:?}", r.completion);
    assert_eq!(r.wakeups_per_event, 1.0);
    assert_eq!(r.ipis_per_event, 0.0);
}

/// One always-running vCPU serving Poisson arrivals with a fixed handler
/// cost and free notification is an M/D/1 queue: mean wait
/// rho * D / (2 (1 - rho)). Channels are many so that merging a raise into
/// a still-pending event (which M/D/1 does not have) is negligible.
#[test]
fn a_single_server_poisson_case_matches_the_md1_mean() {
    for (rate, d_us) in [(50_000.0, 10.0), (80_000.0, 10.0)] {
        let s = scenario(&format!(
            r#"
            name = "M/D/1"
            duration_ms = 20000
            warmup_ms = 100
            [host]
            pcpus = 1
            scheduler = "null"
            [costs]
            send_us = 0.0
            entry_us = 0.0
            [[domain]]
            name = "g"
            vcpus = 1
            busy = "all"
            [[source]]
            name = "s"
            domain = "g"
            channels = 4096
            handler_us = {d_us}
            arrival = {{ kind = "poisson", rate_per_s = {rate} }}
            "#
        ));
        let r = one(&s, Policy::Bound);
        let rho = rate * d_us * 1e-6;
        let wq = rho * d_us / (2.0 * (1.0 - rho));
        eprintln!(
            "rho {rho}: wait {} µs (M/D/1 {wq}), sojourn {} µs, merged {}",
            r.handler.mean_us, r.completion.mean_us, r.coalesced
        );
        assert!((r.coalesced as f64) < 1e-3 * r.raised as f64, "{} of {} merged", r.coalesced, r.raised);
        assert!(close(r.handler.mean_us, wq, 0.02), "rho {rho}: mean wait {} µs, M/D/1 {wq:.3} µs", r.handler.mean_us);
        assert!(
            close(r.completion.mean_us, wq + d_us, 0.02),
            "rho {rho}: mean sojourn {} µs, M/D/1 {:.3} µs",
            r.completion.mean_us,
            wq + d_us
        );
    }
}

fn all_running(rate_per_s: u32, duration_ms: u32) -> Scenario {
    scenario(&format!(
        r#"
        name = "no overcommit"
        duration_ms = {duration_ms}
        [host]
        pcpus = 4
        scheduler = "null"
        [[domain]]
        name = "g"
        vcpus = 4
        busy = "all"
        [[source]]
        name = "net"
        domain = "g"
        channels = 4
        handler_us = 5.0
        arrival = {{ kind = "poisson", rate_per_s = {rate_per_s} }}
        "#
    ))
}

/// Every vCPU always on a pCPU: the bound vCPU runs, so routing has nothing
/// to improve and every policy must give the same events the same fate;
/// Balanced too while no vCPU takes its load bound (here about half an
/// event per vCPU and period). At 10,000 events/s per vCPU each reaches
/// it, and Balanced moves events on: the handled counts differ.
#[test]
fn with_every_vcpu_always_running_all_policies_coincide() {
    let strip = |p: &PolicyResult| PolicyResult { policy: "", ..p.clone() };
    let (r, _) = run_all(&all_running(40_000, 3000), &Policy::ALL).unwrap();
    assert!(r.policies[0].raised > 100_000);
    assert_eq!(strip(&r.policies[0]), strip(&r.policies[1]));
    assert_ne!(r.policies[0].handled_per_vcpu, r.policies[2].handled_per_vcpu, "Balanced never moved an event");
    let (r, _) = run_all(&all_running(2_000, 30_000), &Policy::ALL).unwrap();
    assert!(r.policies[0].raised > 50_000);
    assert_eq!(strip(&r.policies[0]), strip(&r.policies[1]));
    assert_eq!(strip(&r.policies[0]), strip(&r.policies[2]));
}

fn busy_host(sched: &str, pcpus: u32, vcpus: u32) -> Scenario {
    scenario(&format!(
        r#"
        name = "busy"
        duration_ms = 3000
        [host]
        pcpus = {pcpus}
        scheduler = "{sched}"
        [[domain]]
        name = "g"
        vcpus = {vcpus}
        busy = "all"
        "#
    ))
}

/// Each scheduler hands out exactly the host's CPU time: run time of every
/// vCPU plus idle time of every pCPU is pCPUs x time, with events, wake-ups
/// and preemptions going on (the default scenario) and without.
#[test]
fn every_scheduler_conserves_cpu_time() {
    let mut cases = vec![busy_host("credit2", 3, 7), busy_host("credit", 3, 7), busy_host("null", 4, 3)];
    for sched in ["credit2", "credit"] {
        let mut s = scenario(DEFAULT);
        *s.duration_ms.get_mut() = 2000.0;
        s.host.scheduler = toml::Value::String(sched.into()).try_into().unwrap();
        cases.push(s);
    }
    for s in &cases {
        let end = ((s.warmup_ms + s.duration_ms.get_ref()) * 1e6) as u64;
        let p = u64::from(*s.host.pcpus.get_ref());
        for policy in Policy::ALL {
            let m = Host::new(s, policy, &read_traces(s).unwrap()).run();
            let run: u64 = m.run_time.iter().sum();
            let idle: u64 = m.idle_time.iter().sum();
            assert_eq!(
                run + idle,
                p * end,
                "{:?} {policy:?}: run {run} + idle {idle} != {p} x {end}",
                s.host.scheduler
            );
        }
    }
}

/// Equal weights, all CPU-bound: each vCPU gets its share within 5 %.
#[test]
fn credit_schedulers_share_the_host_equally_among_busy_vcpus() {
    for sched in ["credit2", "credit"] {
        let s = busy_host(sched, 3, 7);
        let m = Host::new(&s, Policy::Bound, &vec![None]).run();
        let fair = 3.0 * 3e9 / 7.0;
        for (v, &t) in m.run_time.iter().enumerate() {
            assert!(
                close(t as f64, fair, 0.05),
                "{sched}: vCPU {v} ran {:.3} s, fair {:.3} s",
                t as f64 / 1e9,
                fair / 1e9
            );
        }
    }
}

#[test]
fn the_same_seed_gives_byte_identical_json() {
    let mut s = scenario(DEFAULT);
    *s.duration_ms.get_mut() = 1000.0;
    let json = |s: &Scenario| serde_json::to_string_pretty(&run_all(s, &Policy::ALL).unwrap().0).unwrap();
    let a = json(&s);
    assert_eq!(a, json(&s));
    s.seed += 1;
    assert_ne!(a, json(&s), "the seed must matter");
}

/// With the guest's bound vCPUs preempted by a neighbour, PreferRunning
/// must move events to running vCPUs: the default scenario's headline.
/// Per delivered event most find their vCPU running either way (the
/// medians meet at the path cost); the events that find it preempted make
/// the tail, and PreferRunning must cut it.
#[test]
fn prefer_running_cuts_the_default_scenarios_tail() {
    let mut s = scenario(DEFAULT);
    *s.duration_ms.get_mut() = 3000.0;
    let (r, _) = run_all(&s, &[Policy::Bound, Policy::PreferRunning]).unwrap();
    let (off, on) = (&r.policies[0], &r.policies[1]);
    assert!(
        on.handler.p90_us * 2.0 < off.handler.p90_us,
        "p90 off {} running {}",
        off.handler.p90_us,
        on.handler.p90_us
    );
    assert!(on.handler.p99_us < off.handler.p99_us, "p99 off {} running {}", off.handler.p99_us, on.handler.p99_us);
}

/// A replayed trace raises exactly its events, at its times: spaced 1 ms
/// apart on an always-running vCPU, each sees only the path cost.
#[test]
fn a_trace_is_replayed_event_for_event() {
    let dir = std::env::temp_dir().join(format!("evroute-sim-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let times: String = (1..=500).map(|i| format!("{}\n", i * 1000)).collect();
    std::fs::write(dir.join("events.csv"), format!("time_us\n{times}")).unwrap();
    let file = dir.join("replay.toml");
    std::fs::write(
        &file,
        r#"
        name = "replay"
        duration_ms = 1000
        [host]
        pcpus = 1
        scheduler = "null"
        [[domain]]
        name = "g"
        vcpus = 1
        busy = "all"
        [[source]]
        name = "s"
        domain = "g"
        handler_us = 10.0
        arrival = { kind = "trace", file = "events.csv" }
        "#,
    )
    .unwrap();
    let s = Scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let r = one(&s, Policy::PreferRunning);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(r.raised, 500);
    assert_eq!(r.handler.count, 500);
    assert_eq!(r.handler.mean_us, 5.5, "{:?}", r.handler);
    assert_eq!(r.completion.mean_us, 15.5, "{:?}", r.completion);
    assert!(close(r.completion.max_us, 15.5, 1e-3), "{:?}", r.completion);
}

/// One idle vCPU on its own pCPU, Poisson events at 1000/s, with Xen's
/// evtchn-wait bound `wait_us` (0: off); a wake-up costs 6 µs.
fn one_vcpu_waiting(wait_us: f64) -> PolicyResult {
    let s = one_vcpu(
        "none",
        &poisson(1000),
        20000,
        &format!("evtchn_wait_us = {wait_us}"),
        "wake_us = 6.0\nwatch_us = 0.5",
    );
    one(&s, Policy::Bound)
}

/// evtchn-wait on dedicated cores: an event within the bound of the block
/// (Poisson: probability 1 - e^-(rate x bound) = 1 - 1/e for 1 ms at
/// 1000/s) costs the watched line, the others the IPI and the wake-up.
#[test]
fn a_vcpu_waiting_in_xen_takes_events_within_the_bound_without_a_wake_up() {
    // A few events come while the vCPU still handles the last one (about
    // 2%: ~21.5 µs of work per ms); they take the running vCPU's path.
    let off = one_vcpu_waiting(0.0);
    assert!(close(off.handler.p50_us, 11.5, 1e-3), "{:?}", off.handler);
    assert!(close(off.wakeups_per_event, 1.0, 0.03), "{}", off.wakeups_per_event);
    assert_eq!((off.waits_hit, off.waits_gave_up), (0, 0));

    let on = one_vcpu_waiting(1000.0);
    let hit = on.waits_hit as f64 / on.raised as f64;
    let want = 1.0 - (-1.0f64).exp();
    assert!(close(hit, want, 0.03), "share of events taken while waiting {hit:.3}, want {want:.3}");
    assert!(close(on.wakeups_per_event, 1.0 - want, 0.05), "{}", on.wakeups_per_event);
    assert!(close(on.handler.mean_us, want * 4.0 + (1.0 - want) * 11.5, 0.03), "{:?}", on.handler);
    assert!(close(on.handler.p50_us, 4.0, 1e-3), "{:?}", on.handler);
    assert!(on.ipis_per_event <= off.ipis_per_event, "a waiting vCPU needs no IPI: {}", on.ipis_per_event);
}

/// Where another vCPU could use the pCPU (credit2, always something in
/// the runqueue), the wait never starts: every figure is evtchn-wait=off's.
#[test]
fn the_wait_never_starts_where_another_vcpu_is_runnable() {
    let off = scenario(DEFAULT);
    let mut on = off.clone();
    on.host.evtchn_wait_us = Some(toml::Spanned::new(0..0, 1000.0));
    for p in [Policy::Bound, Policy::PreferRunning] {
        let (a, b) = (one(&off, p), one(&on, p));
        assert_eq!((b.waits_hit, b.waits_gave_up), (0, 0), "{p:?}");
        assert_eq!(a, b, "{p:?}");
    }
}

/// A closed loop (the booted tools' ping): one event in flight, the next a
/// uniform 100-300 µs gap after the last completed. On an always-running
/// vCPU each cycle is the gap plus send + entry + handler (15.5 µs), so
/// 2 s hold 2 s / 215.5 µs events, none merged, each seeing the path.
#[test]
fn a_closed_loop_keeps_one_event_in_flight() {
    let s = one_vcpu("all", r#"{ kind = "closed", gap_us_min = 100.0, gap_us_max = 300.0 }"#, 2000, "", "");
    let r = one(&s, Policy::Bound);
    assert_eq!(r.coalesced, 0, "one in flight: nothing to merge into");
    let want = 2e6 / 215.5;
    assert!(close(r.raised as f64, want, 0.02), "{} raised, want about {want:.0}", r.raised);
    assert!(close(r.handler.p99_us, 5.5, 1e-3), "{:?}", r.handler);
    assert_eq!(r.merged.count, 0);
}

/// The guest kernel's housekeeping tick: an idle vCPU alone on its pCPU
/// wakes every 4 ms for 100 µs of work, so it runs 2.5 % of the time; a
/// busy one is not charged (its tick is folded into its loop).
#[test]
fn idle_vcpus_wake_for_housekeeping() {
    let s = scenario(
        r#"
        name = "housekeeping"
        duration_ms = 2000
        [host]
        pcpus = 2
        scheduler = "null"
        [[domain]]
        name = "g"
        vcpus = 2
        busy = [1]
        housekeeping = { every_ms = 4.0, cost_us = 100.0 }
        "#,
    );
    let m = Host::new(&s, Policy::Bound, &read_traces(&s).unwrap()).run();
    let share = m.run_time[0] as f64 / 2e9;
    assert!(close(share, 0.025, 0.02), "idle vCPU ran {:.4} of the time", share);
    assert_eq!(m.run_time[1], 2_000_000_000, "the busy vCPU runs all the time");
}
