//! A scenario file (TOML): the host, its domains, the event sources and the
//! costs. Every mistake is reported with the file, line and column and what
//! is allowed there; unknown keys are errors, so a typo never silently falls
//! back to a default.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use toml::Spanned;

/// Simulated time, in nanoseconds.
pub type Ns = u64;

pub const US: Ns = 1_000;
pub const MS: Ns = 1_000_000;
pub const NS_PER_S: Ns = 1_000_000_000;

/// The default scenario, also shipped as `sim/scenarios/default.toml`.
pub const DEFAULT: &str = include_str!("../scenarios/default.toml");

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated time per policy, after the warm-up.
    pub duration_ms: Spanned<f64>,
    /// Simulated time before metrics are recorded.
    #[serde(default)]
    pub warmup_ms: f64,
    pub host: Host,
    #[serde(default)]
    pub costs: Costs,
    #[serde(rename = "domain")]
    pub domains: Vec<Domain>,
    #[serde(rename = "source", default)]
    pub sources: Vec<Source>,
    /// What a booted Xen measured in the layout this scenario mirrors
    /// (`sim/tests/calibration.rs` holds the simulation to it).
    #[serde(default)]
    pub calibration: Option<Calibration>,
}

/// Booted figures beside a scenario, for the latency measured to the end of
/// the last stage ("done"): the median over the runs listed, and the band
/// (a factor) the simulated figure must stay within.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// p99 with no set (`evtchn-route=off`), µs, one value per booted run.
    pub bound_p99_us: Spanned<Vec<f64>>,
    /// p99 no set / p99 with the set under `running`, per booted run.
    pub ratio_p99: Spanned<Vec<f64>>,
    pub band: Spanned<f64>,
}

impl Calibration {
    /// The median of a list of booted runs.
    pub fn median(runs: &[f64]) -> f64 {
        let mut v = runs.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
}

fn default_seed() -> u64 {
    1
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub pcpus: Spanned<u32>,
    pub scheduler: SchedKind,
    /// Xen's `sched_ratelimit_us` (default 1000).
    #[serde(default = "default_ratelimit")]
    pub ratelimit_us: f64,
    /// Xen's `evtchn-wait=poll` (or `mwait`) with this `evtchn-wait-us`: a
    /// vCPU that would block on a pCPU with nothing else to run waits in
    /// Xen this long first. 0 (the default): `evtchn-wait=off`.
    #[serde(default)]
    pub evtchn_wait_us: Option<Spanned<f64>>,
}

fn default_ratelimit() -> f64 {
    1000.0
}

impl Host {
    /// `evtchn_wait_us`, 0 when off.
    pub fn wait_us(&self) -> f64 {
        self.evtchn_wait_us.as_ref().map_or(0.0, |w| *w.get_ref())
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SchedKind {
    Credit2,
    Credit,
    Null,
}

/// Costs of the notification path, in µs; defaults are the figures measured
/// on real hardware in the 2009 mwait thread (see `docs/sim.md`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Costs {
    /// Send hypercall + IPI: raise until the target vCPU sees its upcall.
    #[serde(default = "default_send")]
    pub send_us: f64,
    /// Guest interrupt entry, once per upcall.
    #[serde(default = "default_entry")]
    pub entry_us: f64,
    /// Switch to the guest's worker thread, per deferred item.
    #[serde(default = "default_switch")]
    pub switch_us: f64,
    /// After the IPI, waking a blocked vCPU and scheduling it (~6 µs on
    /// hardware, ~8 µs with the send). 0 (the default) folds it into
    /// `send_us`, as scenarios written before the notify path do.
    #[serde(default)]
    pub wake_us: f64,
    /// A vCPU waiting in Xen (`evtchn_wait_us`) sees the sender's write:
    /// a cache line moving, ~0.5 µs.
    #[serde(default = "default_watch")]
    pub watch_us: f64,
}

fn default_send() -> f64 {
    2.0
}
fn default_entry() -> f64 {
    3.5
}
fn default_switch() -> f64 {
    3.0
}
fn default_watch() -> f64 {
    0.5
}

impl Default for Costs {
    fn default() -> Self {
        Costs {
            send_us: default_send(),
            entry_us: default_entry(),
            switch_us: default_switch(),
            wake_us: 0.0,
            watch_us: default_watch(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub name: Spanned<String>,
    pub vcpus: Spanned<u32>,
    /// vCPUs that run a CPU-bound loop: `"all"`, `"none"` or a list.
    #[serde(default)]
    pub busy: Option<Spanned<VcpuList>>,
    /// The guest kernel's housekeeping: each vCPU that is not busy wakes
    /// every `every_ms` (its timer tick) and runs `cost_us` of work before
    /// it blocks again, as a Linux guest's idle vCPUs do. None: never.
    #[serde(default)]
    pub housekeeping: Option<Spanned<Housekeeping>>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Housekeeping {
    pub every_ms: f64,
    pub cost_us: f64,
}

impl Domain {
    pub fn is_busy(&self, v: u32) -> bool {
        self.busy.as_ref().is_some_and(|b| b.get_ref().contains(v))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum VcpuList {
    Named(Named),
    List(Vec<u32>),
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Named {
    All,
    None,
}

impl VcpuList {
    pub fn contains(&self, v: u32) -> bool {
        match self {
            VcpuList::Named(Named::All) => true,
            VcpuList::List(l) => l.contains(&v),
            VcpuList::Named(Named::None) => false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    /// The domain whose channels it raises.
    pub domain: Spanned<String>,
    /// Channels (queues of a multi-queue device); each event picks one uniformly.
    #[serde(default)]
    pub channels: Option<Spanned<u32>>,
    /// Bound vCPU of each channel; default channel i on vCPU i mod vcpus.
    #[serde(default)]
    pub bound: Option<Spanned<Vec<u32>>>,
    /// The channels' vCPU set (`EVTCHNOP_set_vcpu_set`); default all.
    #[serde(default)]
    pub set: Option<Spanned<VcpuList>>,
    /// Handler cost per event consumed, µs.
    pub handler_us: Spanned<f64>,
    /// More handler time per raise merged into the event (work per packet
    /// rather than per interrupt); 0 by default.
    #[serde(default)]
    pub per_merged_us: Option<Spanned<f64>>,
    pub arrival: Spanned<Arrival>,
    /// A second stage on a guest worker thread pinned to one vCPU.
    #[serde(default)]
    pub deferred: Option<Deferred>,
}

impl Source {
    pub fn nr_channels(&self) -> u32 {
        self.channels.as_ref().map_or(1, |c| *c.get_ref())
    }

    /// Is vCPU `v` in the channels' set (default: all)?
    pub fn in_set(&self, v: u32) -> bool {
        self.set.as_ref().is_none_or(|s| s.get_ref().contains(v))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum Arrival {
    /// Poisson arrivals.
    Poisson { rate_per_s: f64 },
    /// Poisson at `rate_per_s` during on-periods, silent during off-periods;
    /// both lengths exponential with the given means.
    Onoff { rate_per_s: f64, on_ms: f64, off_ms: f64 },
    /// Replay of a CSV file: one timestamp in µs per line (a header line is
    /// allowed), relative to the file's directory.
    Trace { file: String },
    /// Closed loop, as the booted tools ping: one event in flight; the next
    /// is raised a gap (uniform in `gap_us_min..gap_us_max`) after the last
    /// one's handling completed.
    Closed { gap_us_min: f64, gap_us_max: f64 },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Deferred {
    pub vcpu: Spanned<u32>,
    pub cost_us: f64,
}

/// What is wrong, and where.
#[derive(Debug)]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.msg)
        } else {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.msg)
        }
    }
}

impl std::error::Error for ScenarioError {}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: 0,
            col: 0,
            msg: format!("cannot read: {e}"),
        })?;
        let mut s = Scenario::parse(&text, &file)?;
        s.resolve_traces(path.parent().unwrap_or(Path::new("."))).map_err(|msg| ScenarioError {
            file,
            line: 0,
            col: 0,
            msg,
        })?;
        Ok(s)
    }

    /// Parse and check; `file` names the text in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map_or((0, 0), |r| line_col(text, r.start));
            ScenarioError { file: file.into(), line, col, msg: e.message().to_string() }
        })?;
        s.check().map_err(|(at, msg)| {
            let (line, col) = line_col(text, at);
            ScenarioError { file: file.into(), line, col, msg }
        })?;
        Ok(s)
    }

    /// Relative trace paths are relative to the scenario file.
    fn resolve_traces(&mut self, dir: &Path) -> Result<(), String> {
        for src in &mut self.sources {
            if let Arrival::Trace { file } = src.arrival.get_mut() {
                let p = dir.join(&*file);
                if !p.exists() {
                    return Err(format!("source `{}`: trace file {} does not exist", src.name, p.display()));
                }
                *file = p.display().to_string();
            }
        }
        Ok(())
    }

    pub fn domain_index(&self, name: &str) -> Option<usize> {
        self.domains.iter().position(|d| d.name.get_ref() == name)
    }

    /// Checks serde cannot express; the error carries a byte offset.
    fn check(&self) -> Result<(), (usize, String)> {
        let at = |s: std::ops::Range<usize>| s.start;
        let pos = |x: f64| x.is_finite() && x > 0.0;
        if !pos(*self.duration_ms.get_ref()) {
            return Err((at(self.duration_ms.span()), "duration_ms: must be a positive number of milliseconds".into()));
        }
        if let Some(c) = &self.calibration {
            for runs in [&c.bound_p99_us, &c.ratio_p99] {
                if runs.get_ref().is_empty() || !runs.get_ref().iter().all(|&x| pos(x)) {
                    return Err((at(runs.span()), "calibration: a list of one or more positive booted figures".into()));
                }
            }
            if !(pos(*c.band.get_ref()) && *c.band.get_ref() > 1.0) {
                return Err((at(c.band.span()), "calibration.band: a factor above 1".into()));
            }
        }
        let p = *self.host.pcpus.get_ref();
        if !(1..=64).contains(&p) {
            return Err((at(self.host.pcpus.span()), format!("host.pcpus: {p}; allowed 1 to 64")));
        }
        if let Some(w) = &self.host.evtchn_wait_us {
            let us = *w.get_ref();
            if !(us == 0.0 || (1.0..=1000.0).contains(&us)) {
                return Err((
                    at(w.span()),
                    format!("host.evtchn_wait_us: {us}; allowed 0 (off) or 1 to 1000, as Xen's evtchn-wait-us"),
                ));
            }
        }

        if self.domains.is_empty() {
            return Err((0, "at least one [[domain]] is needed".into()));
        }
        for (i, d) in self.domains.iter().enumerate() {
            let n = *d.vcpus.get_ref();
            if !(1..=512).contains(&n) {
                return Err((at(d.vcpus.span()), format!("domain.vcpus: {n}; allowed 1 to 512")));
            }
            if self.domains[..i].iter().any(|o| o.name.get_ref() == d.name.get_ref()) {
                return Err((at(d.name.span()), format!("domain name `{}` is used twice", d.name.get_ref())));
            }
            if let Some(b) = &d.busy {
                check_list(b, n, "domain.busy")?;
            }
            if let Some(h) = &d.housekeeping {
                let Housekeeping { every_ms, cost_us } = *h.get_ref();
                if !(pos(every_ms) && cost_us.is_finite() && cost_us >= 0.0 && cost_us < every_ms * 1e3) {
                    return Err((
                        at(h.span()),
                        "domain.housekeeping: every_ms must be > 0 and 0 <= cost_us < every_ms".into(),
                    ));
                }
            }
        }
        let total = self.total_vcpus();
        if self.host.scheduler == SchedKind::Null && total > p {
            return Err((
                at(self.host.pcpus.span()),
                format!("the null scheduler runs one vCPU per pCPU: {total} vCPUs need pcpus >= {total}"),
            ));
        }
        for s in &self.sources {
            let Some(di) = self.domain_index(s.domain.get_ref()) else {
                let names: Vec<&str> = self.domains.iter().map(|d| d.name.get_ref().as_str()).collect();
                return Err((
                    at(s.domain.span()),
                    format!("source.domain: no domain `{}`; defined: {}", s.domain.get_ref(), names.join(", ")),
                ));
            };
            let n = *self.domains[di].vcpus.get_ref();
            let ch = s.nr_channels();
            if let Some(c) = &s.channels {
                if !(1..=4096).contains(&ch) {
                    return Err((at(c.span()), format!("source.channels: {ch}; allowed 1 to 4096")));
                }
            }
            if let Some(b) = &s.bound {
                if b.get_ref().len() != ch as usize {
                    return Err((
                        at(b.span()),
                        format!("source.bound: {} entries for {ch} channels", b.get_ref().len()),
                    ));
                }
                if let Some(v) = b.get_ref().iter().find(|&&v| v >= n) {
                    return Err((at(b.span()), format!("source.bound: vCPU {v}; the domain has vCPUs 0 to {}", n - 1)));
                }
            }
            if let Some(set) = &s.set {
                check_list(set, n, "source.set")?;
                if set.get_ref() == &VcpuList::Named(Named::None) || set.get_ref() == &VcpuList::List(vec![]) {
                    return Err((
                        at(set.span()),
                        "source.set: an empty set (allowed: \"all\" or a list of vCPUs)".into(),
                    ));
                }
            }
            let h = *s.handler_us.get_ref();
            if !(h.is_finite() && h >= 0.0) {
                return Err((at(s.handler_us.span()), "source.handler_us: must be >= 0".into()));
            }
            if let Some(m) = &s.per_merged_us {
                if !(m.get_ref().is_finite() && *m.get_ref() >= 0.0) {
                    return Err((at(m.span()), "source.per_merged_us: must be >= 0".into()));
                }
            }
            let bad_rate = match s.arrival.get_ref() {
                Arrival::Poisson { rate_per_s } => !pos(*rate_per_s),
                Arrival::Onoff { rate_per_s, on_ms, off_ms } => !(pos(*rate_per_s) && pos(*on_ms) && pos(*off_ms)),
                Arrival::Trace { .. } => false,
                Arrival::Closed { gap_us_min, gap_us_max } => {
                    if !(pos(*gap_us_min) && gap_us_max.is_finite() && gap_us_max >= gap_us_min) {
                        return Err((
                            at(s.arrival.span()),
                            "source.arrival: closed needs 0 < gap_us_min <= gap_us_max".into(),
                        ));
                    }
                    false
                }
            };
            if bad_rate {
                return Err((at(s.arrival.span()), "source.arrival: rate_per_s, on_ms and off_ms must be > 0".into()));
            }
            if let Some(d) = &s.deferred {
                if *d.vcpu.get_ref() >= n {
                    return Err((
                        at(d.vcpu.span()),
                        format!("deferred.vcpu: {}; the domain has vCPUs 0 to {}", d.vcpu.get_ref(), n - 1),
                    ));
                }
            }
        }
        let c = &self.costs;
        if [c.send_us, c.entry_us, c.switch_us, c.wake_us, c.watch_us].iter().any(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err((0, "costs: every cost must be >= 0".into()));
        }
        Ok(())
    }

    /// The bound vCPU of each channel of source `s`.
    pub fn bound_of(&self, s: &Source) -> Vec<u32> {
        let n = *self.domains[self.domain_index(s.domain.get_ref()).expect("checked")].vcpus.get_ref();
        match &s.bound {
            Some(b) => b.get_ref().clone(),
            None => (0..s.nr_channels()).map(|c| c % n).collect(),
        }
    }

    pub fn total_vcpus(&self) -> u32 {
        self.domains.iter().map(|d| *d.vcpus.get_ref()).sum()
    }
}

fn check_list(l: &Spanned<VcpuList>, n: u32, what: &str) -> Result<(), (usize, String)> {
    if let VcpuList::List(vs) = l.get_ref() {
        if let Some(v) = vs.iter().find(|&&v| v >= n) {
            return Err((l.span().start, format!("{what}: vCPU {v}; the domain has vCPUs 0 to {}", n - 1)));
        }
    }
    Ok(())
}

/// Read a trace: one timestamp (µs) per line, ascending; a first line that
/// is not a number is a header.
pub fn read_trace(path: &str) -> Result<Vec<Ns>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let field = line.split(',').next().unwrap_or("").trim();
        if field.is_empty() {
            continue;
        }
        match field.parse::<f64>() {
            Ok(us) if us.is_finite() && us >= 0.0 => {
                let t = (us * US as f64) as Ns;
                if out.last().is_some_and(|&l| t < l) {
                    return Err(format!("{path}:{}: timestamps must not go backwards", i + 1));
                }
                out.push(t);
            }
            _ if i == 0 => {} // header
            _ => return Err(format!("{path}:{}: `{field}` is not a timestamp in µs", i + 1)),
        }
    }
    Ok(out)
}

pub fn us(x: f64) -> Ns {
    (x * US as f64).round() as Ns
}

pub fn ms(x: f64) -> Ns {
    (x * MS as f64).round() as Ns
}
