//! Run a scenario under each policy and report: the table, the JSON.

use crate::host::{read_traces, Host, Traces};
use crate::metrics::{round3, LatencySummary, Metrics};
use crate::scenario::Scenario;
use evroute_model::fairness::jain;
use evroute_model::Policy;
use rayon::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PolicyResult {
    /// The `evtchn-route=` value.
    pub policy: &'static str,
    pub raised: u64,
    pub coalesced: u64,
    /// Per delivered event: the raise that made it pending to its handler's
    /// start.
    pub handler: LatencySummary,
    /// Per delivered event: that raise to the end of the last stage.
    pub completion: LatencySummary,
    /// Raises merged into an event already pending, to the handler that
    /// took them (not deliveries: not in `handler`).
    pub merged: LatencySummary,
    /// Handler runs on each vCPU of the first source's domain.
    pub handled_per_vcpu: Vec<u64>,
    /// Jain's index over the vCPUs of the first source's set.
    pub jain: f64,
    pub ipis_per_event: f64,
    pub wakeups_per_event: f64,
    /// `evtchn-wait`: waits in Xen ended by an event, and that blocked
    /// after all.
    pub waits_hit: u64,
    pub waits_gave_up: u64,
    /// The first source's domain: CPUs' worth of time its busy vCPUs'
    /// application ran (what handler time is taken from), and the share of
    /// the simulated time the slowest of them ran it.
    pub app_cpus: f64,
    pub app_min: f64,
    pub context_switches: u64,
    pub engine_events: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub pcpus: u32,
    pub vcpus: u32,
    pub scheduler: String,
    /// Xen's `evtchn-wait-us` (0: `evtchn-wait=off`).
    pub evtchn_wait_us: f64,
    pub simulated_ms: f64,
    pub policies: Vec<PolicyResult>,
}

pub fn policy_label(p: Policy) -> &'static str {
    match p {
        Policy::Bound => "off (Bound)",
        Policy::PreferRunning => "running (PreferRunning)",
        Policy::Balanced => "balanced (Balanced)",
    }
}

/// One run of `s` under `policy`.
pub fn run_one(s: &Scenario, policy: Policy, traces: &Traces) -> (PolicyResult, Metrics) {
    let m = Host::new(s, policy, traces).run();
    (summarise(s, policy, &m), m)
}

fn summarise(s: &Scenario, policy: Policy, m: &Metrics) -> PolicyResult {
    let secs_ns = *s.duration_ms.get_ref() * 1e6;
    let (handled, in_set, app): (Vec<u64>, Vec<u64>, Vec<f64>) = match s.sources.first() {
        Some(src) => {
            let di = s.domain_index(src.domain.get_ref()).expect("checked");
            let first: usize = s.domains[..di].iter().map(|d| *d.vcpus.get_ref() as usize).sum();
            let n = *s.domains[di].vcpus.get_ref() as usize;
            let h = m.handled[first..first + n].to_vec();
            let set = (0..n as u32).filter(|&v| src.in_set(v)).map(|v| h[v as usize]).collect();
            let app = (0..n as u32)
                .filter(|&v| s.domains[di].is_busy(v))
                .map(|v| m.app_time[first + v as usize] as f64 / secs_ns)
                .collect();
            (h, set, app)
        }
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    let per = |x: u64| if m.raised == 0 { 0.0 } else { round3(x as f64 / m.raised as f64) };
    PolicyResult {
        policy: policy.option_name(),
        raised: m.raised,
        coalesced: m.coalesced,
        handler: m.handler.summary(),
        completion: m.completion.summary(),
        merged: m.merged.summary(),
        handled_per_vcpu: handled,
        jain: round3(jain(&in_set)),
        ipis_per_event: per(m.ipis),
        wakeups_per_event: per(m.wakeups),
        waits_hit: m.waits_hit,
        waits_gave_up: m.waits_gave_up,
        // An empty f64 sum is -0.0: start from 0.
        app_cpus: round3(app.iter().fold(0.0, |a, x| a + x)),
        app_min: round3(app.iter().copied().reduce(f64::min).unwrap_or(0.0)),
        context_switches: m.context_switches,
        engine_events: m.engine_events,
    }
}

/// Every policy of `policies`, in parallel; results in the order given.
pub fn run_all(s: &Scenario, policies: &[Policy]) -> Result<(Report, Vec<Metrics>), String> {
    let traces = read_traces(s)?;
    let runs: Vec<(PolicyResult, Metrics)> = policies.par_iter().map(|&p| run_one(s, p, &traces)).collect();
    let (results, metrics) = runs.into_iter().unzip();
    let report = Report {
        scenario: s.name.clone(),
        seed: s.seed,
        pcpus: *s.host.pcpus.get_ref(),
        vcpus: s.total_vcpus(),
        scheduler: format!("{:?}", s.host.scheduler).to_lowercase(),
        evtchn_wait_us: s.host.wait_us(),
        simulated_ms: *s.duration_ms.get_ref(),
        policies: results,
    };
    Ok((report, metrics))
}

pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} — {} pCPUs, {} vCPUs, {}, {:.1} s simulated per policy, seed {}",
        r.scenario,
        r.pcpus,
        r.vcpus,
        r.scheduler,
        r.simulated_ms / 1e3,
        r.seed
    );
    let _ = writeln!(
        out,
        "latency per delivered event, µs: from the raise that made it pending to its handler's start; 'done' = to the end of the last stage"
    );
    let _ = writeln!(
        out,
        "{:<24} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7} {:>7} {:>8} {:>7}",
        "policy",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "done p50",
        "done p99",
        "Jain",
        "IPIs/ev",
        "wake/ev",
        "app CPUs",
        "app min"
    );
    for p in &r.policies {
        let pol = Policy::from_option(p.policy).expect("own name");
        let _ = writeln!(
            out,
            "{:<24} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>6.3} {:>7.3} {:>7.3} {:>8.3} {:>7.3}",
            policy_label(pol),
            p.handler.p50_us,
            p.handler.p90_us,
            p.handler.p99_us,
            p.handler.p999_us,
            p.handler.max_us,
            p.completion.p50_us,
            p.completion.p99_us,
            p.jain,
            p.ipis_per_event,
            p.wakeups_per_event,
            p.app_cpus,
            p.app_min
        );
    }
    for p in &r.policies {
        let _ = writeln!(out, "handled per vCPU, {:<9} {:?}", p.policy, p.handled_per_vcpu);
    }
    for p in &r.policies {
        let m = &p.merged;
        let _ = writeln!(
            out,
            "merged raises, {:<12} {} of {} raised, to the handler that took them: p50 {:.1} µs, p99 {:.1} µs",
            p.policy, p.coalesced, p.raised, m.p50_us, m.p99_us
        );
    }
    if r.evtchn_wait_us > 0.0 {
        for p in &r.policies {
            let _ = writeln!(
                out,
                "evtchn-wait {} µs, {:<9} {} waits ended by an event, {} without one",
                r.evtchn_wait_us, p.policy, p.waits_hit, p.waits_gave_up
            );
        }
    }
    let get = |name: &str| r.policies.iter().find(|p| p.policy == name);
    if let (Some(b), Some(pr)) = (get("off"), get("running")) {
        if pr.handler.p99_us > 0.0 {
            let _ = writeln!(out, "p99 off / running: {:.2}x", b.handler.p99_us / pr.handler.p99_us);
        }
    }
    out
}
