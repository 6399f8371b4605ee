//! `evroute-sim`: what routing buys under a given load, in seconds.

use clap::{Args, Parser, Subcommand};
use evroute_model::Policy;
use evroute_sim::report::{run_all, run_one, table};
use evroute_sim::scenario::{Scenario, DEFAULT};
use evroute_sim::{host, plot, sweep};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "evroute-sim",
    about = "Simulate per-OS event latency and balance under evroute's routing policies",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a grid of overcommit ratios x event rates, in parallel.
    Sweep(SweepArgs),
    /// Simulated events per second on one core, and a 100-configuration sweep's wall time.
    Bench(BenchArgs),
}

#[derive(Args)]
struct Common {
    /// Scenario file (TOML); without it, the default scenario (sim/scenarios/default.toml).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the host's `evtchn_wait_us` (Xen's evtchn-wait-us with
    /// evtchn-wait=poll; 0: off).
    #[arg(long, value_name = "US")]
    evtchn_wait_us: Option<f64>,
    /// Override the simulated time per policy (ms).
    #[arg(long, value_name = "MS", value_parser = positive)]
    duration_ms: Option<f64>,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write SVG figures into this directory.
    #[arg(long, value_name = "DIR")]
    svg: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Policies to compare (`evtchn-route=` values).
    #[arg(long, value_delimiter = ',', default_value = "off,running,balanced", value_parser = policy)]
    policy: Vec<Policy>,
}

#[derive(Args)]
struct SweepArgs {
    #[command(flatten)]
    common: Common,
    /// Overcommit ratios (vCPUs / pCPUs), reached by resizing the background domain.
    #[arg(long, value_delimiter = ',', value_parser = positive, default_values_t = sweep::RATIOS)]
    overcommit: Vec<f64>,
    /// Event rates per second, applied to every source.
    #[arg(long, value_delimiter = ',', value_parser = positive, default_values_t = sweep::RATES)]
    rates: Vec<f64>,
}

#[derive(Args)]
struct BenchArgs {
    /// Simulated time per policy (ms).
    #[arg(long, value_name = "MS", default_value = "60000", value_parser = positive)]
    duration_ms: f64,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

fn policy(s: &str) -> Result<Policy, String> {
    Policy::from_option(s).ok_or_else(|| format!("`{s}` is not a policy; allowed: off, running, balanced"))
}

/// The built-in scenario, named as the file it is shipped as.
fn default_scenario() -> Result<Scenario, String> {
    Scenario::parse(DEFAULT, "sim/scenarios/default.toml").map_err(|e| e.to_string())
}

fn load(c: &Common) -> Result<Scenario, String> {
    let mut s = match &c.scenario {
        Some(p) => Scenario::load(p).map_err(|e| e.to_string())?,
        None => default_scenario()?,
    };
    if let Some(seed) = c.seed {
        s.seed = seed;
    }
    if let Some(d) = c.duration_ms {
        *s.duration_ms.get_mut() = d;
    }
    if let Some(w) = c.evtchn_wait_us {
        if !(w == 0.0 || (1.0..=1000.0).contains(&w)) {
            return Err(format!("--evtchn-wait-us {w}: allowed 0 (off) or 1 to 1000, as Xen's evtchn-wait-us"));
        }
        s.host.evtchn_wait_us = Some(toml::Spanned::new(0..0, w));
    }
    Ok(s)
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

fn svg_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn run(a: RunArgs) -> Result<(), String> {
    let s = load(&a.common)?;
    let t = Instant::now();
    let (report, metrics) = run_all(&s, &a.policy)?;
    print!("{}", table(&report));
    let events: u64 = report.policies.iter().map(|p| p.engine_events).sum();
    println!("{events} simulated events in {:.2} s wall", t.elapsed().as_secs_f64());
    if let Some(j) = &a.common.json {
        write_json(j, &report)?;
        println!("wrote {}", j.display());
    }
    if let Some(d) = &a.common.svg {
        svg_dir(d)?;
        for p in [plot::latency_cdf(d, &report, &metrics)?, plot::vcpu_share(d, &report)?] {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn run_sweep(a: SweepArgs) -> Result<(), String> {
    let mut s = load(&a.common)?;
    if a.common.duration_ms.is_none() {
        *s.duration_ms.get_mut() = sweep::POINT_MS;
    }
    let t = Instant::now();
    let points = sweep::run(&s, &a.overcommit, &a.rates, true)?;
    println!("{} — sweep, {:.1} s simulated per policy and point", s.name, s.duration_ms.get_ref() / 1e3);
    println!(
        "{:>10} {:>6} {:>9} {:>12} {:>12} {:>12} {:>8}",
        "overcommit", "vCPUs", "events/s", "p99 off", "p99 running", "p99 balanced", "off/run"
    );
    for p in &points {
        let q = |n: &str| p.policies.iter().find(|x| x.policy == n).map_or(0.0, |x| x.p99_us);
        let ratio = if q("running") > 0.0 { q("off") / q("running") } else { 0.0 };
        println!(
            "{:>10.2} {:>6} {:>9.0} {:>12.1} {:>12.1} {:>12.1} {:>7.2}x",
            p.overcommit,
            p.vcpus,
            p.rate_per_s,
            q("off"),
            q("running"),
            q("balanced"),
            ratio
        );
    }
    println!("{} configurations x 3 policies in {:.1} s wall", points.len(), t.elapsed().as_secs_f64());
    if let Some(j) = &a.common.json {
        write_json(j, &points)?;
        println!("wrote {}", j.display());
    }
    if let Some(d) = &a.common.svg {
        svg_dir(d)?;
        println!("wrote {}", plot::sweep(d, &points)?.display());
    }
    Ok(())
}

fn bench(a: BenchArgs) -> Result<(), String> {
    let mut s = default_scenario()?;
    *s.duration_ms.get_mut() = a.duration_ms;
    let traces = host::read_traces(&s)?;
    println!("one core, default scenario, {:.0} s simulated per policy:", a.duration_ms / 1e3);
    let (mut all_events, mut all_secs) = (0u64, 0f64);
    for p in Policy::ALL {
        let t = Instant::now();
        let (r, _) = run_one(&s, p, &traces);
        let secs = t.elapsed().as_secs_f64();
        all_events += r.engine_events;
        all_secs += secs;
        println!(
            "  {:<9} {:>11} events in {:>6.3} s = {:>5.2} M events/s",
            p.option_name(),
            r.engine_events,
            secs,
            r.engine_events as f64 / secs / 1e6
        );
    }
    println!(
        "  all       {:>11} events in {:>6.3} s = {:>5.2} M events/s",
        all_events,
        all_secs,
        all_events as f64 / all_secs / 1e6
    );
    *s.duration_ms.get_mut() = sweep::POINT_MS;
    let t = Instant::now();
    let points = sweep::run(&s, &sweep::RATIOS, &sweep::RATES, false)?;
    println!(
        "sweep: {} configurations x 3 policies, {:.0} s simulated each, on {} threads: {:.1} s wall",
        points.len(),
        sweep::POINT_MS / 1e3,
        rayon::current_num_threads(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        None => run(cli.run),
        Some(Cmd::Sweep(a)) => run_sweep(a),
        Some(Cmd::Bench(a)) => bench(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evroute-sim: {e}");
            ExitCode::from(2)
        }
    }
}
