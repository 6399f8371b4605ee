//! A grid of overcommit ratios and event rates, run in parallel.

use crate::host::read_traces;
use crate::metrics::round3;
use crate::report::run_one;
use crate::scenario::{Arrival, Scenario};
use evroute_model::Policy;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

/// The default grid: overcommit ratios (vCPUs / pCPUs) ...
pub const RATIOS: [f64; 10] = [1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0];
/// ... and event rates per second.
pub const RATES: [f64; 10] = [1e3, 2e3, 5e3, 1e4, 2e4, 3e4, 4e4, 6e4, 8e4, 1e5];
/// Simulated time per policy at each point: a point needs less than the
/// headline run.
pub const POINT_MS: f64 = 2000.0;

#[derive(Clone, Debug, Serialize)]
pub struct SweepPolicy {
    pub policy: &'static str,
    pub p50_us: f64,
    pub p99_us: f64,
    pub done_p99_us: f64,
    pub jain: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SweepPoint {
    pub overcommit: f64,
    pub vcpus: u32,
    pub rate_per_s: f64,
    pub policies: Vec<SweepPolicy>,
}

/// `base` with its background domains (those no source raises events in)
/// grown or shrunk so that vCPUs / pCPUs is `ratio`, and every source at `rate`.
pub fn variant(base: &Scenario, ratio: f64, rate: f64) -> Result<Scenario, String> {
    let mut s = base.clone();
    let pcpus = *s.host.pcpus.get_ref() as f64;
    let used: Vec<bool> =
        s.domains.iter().map(|d| s.sources.iter().any(|src| src.domain.get_ref() == d.name.get_ref())).collect();
    let fixed: u32 = s.domains.iter().zip(&used).filter(|(_, u)| **u).map(|(d, _)| *d.vcpus.get_ref()).sum();
    let want = (ratio * pcpus).round() as u32;
    let bg = used.iter().position(|u| !u).ok_or("sweep: the scenario needs a domain without sources to scale")?;
    if want <= fixed {
        return Err(format!("sweep: overcommit {ratio} means {want} vCPUs, but the guests alone have {fixed}"));
    }
    // The first background domain takes the difference; others keep theirs.
    let others: u32 =
        s.domains.iter().enumerate().filter(|(i, _)| !used[*i] && *i != bg).map(|(_, d)| *d.vcpus.get_ref()).sum();
    let n = want.checked_sub(fixed + others).filter(|&n| n > 0).ok_or(format!(
        "sweep: overcommit {ratio} leaves no vCPU for background domain `{}`",
        s.domains[bg].name.get_ref()
    ))?;
    *s.domains[bg].vcpus.get_mut() = n;
    for src in &mut s.sources {
        match src.arrival.get_mut() {
            Arrival::Poisson { rate_per_s } | Arrival::Onoff { rate_per_s, .. } => *rate_per_s = rate,
            Arrival::Trace { .. } => {
                return Err(format!("sweep: source `{}` replays a trace; its rate is fixed", src.name))
            }
            Arrival::Closed { .. } => {
                return Err(format!("sweep: source `{}` is a closed loop; it has no rate to set", src.name))
            }
        }
    }
    Ok(s)
}

pub fn run(base: &Scenario, ratios: &[f64], rates: &[f64], progress: bool) -> Result<Vec<SweepPoint>, String> {
    let traces = read_traces(base)?;
    let grid: Vec<(f64, f64, Scenario)> = rates
        .iter()
        .flat_map(|&rate| ratios.iter().map(move |&r| (r, rate)))
        .map(|(r, rate)| variant(base, r, rate).map(|s| (r, rate, s)))
        .collect::<Result<_, _>>()?;
    let bar = if progress { ProgressBar::new(grid.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} configurations, eta {eta}")
            .expect("valid template"),
    );
    let points = grid
        .par_iter()
        .map(|(ratio, rate, s)| {
            let policies = Policy::ALL
                .iter()
                .map(|&p| {
                    let (r, _) = run_one(s, p, &traces);
                    SweepPolicy {
                        policy: r.policy,
                        p50_us: r.handler.p50_us,
                        p99_us: r.handler.p99_us,
                        done_p99_us: r.completion.p99_us,
                        jain: r.jain,
                    }
                })
                .collect();
            bar.inc(1);
            SweepPoint { overcommit: round3(*ratio), vcpus: s.total_vcpus(), rate_per_s: *rate, policies }
        })
        .collect();
    bar.finish_and_clear();
    Ok(points)
}
