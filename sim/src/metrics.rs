//! What a run measures, and the summary a report prints.

use crate::scenario::Ns;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in ns: an HDR histogram for percentiles and an exact sum for
/// the mean (the closed-form checks compare means to within 2 %).
pub struct Latency {
    pub hist: Histogram<u64>,
    sum: u128,
}

impl Default for Latency {
    fn default() -> Self {
        // 1 ns to an hour at three significant figures; longer saturates.
        Latency { hist: Histogram::new_with_bounds(1, 3_600 * 1_000_000_000, 3).expect("valid bounds"), sum: 0 }
    }
}

impl Latency {
    pub fn record(&mut self, ns: Ns) {
        self.hist.saturating_record(ns);
        self.sum += u128::from(ns);
    }

    pub fn summary(&self) -> LatencySummary {
        let n = self.hist.len();
        let q = |p: f64| if n == 0 { 0.0 } else { self.hist.value_at_quantile(p) as f64 / 1e3 };
        LatencySummary {
            count: n,
            mean_us: if n == 0 { 0.0 } else { round3(self.sum as f64 / n as f64 / 1e3) },
            p50_us: round3(q(0.50)),
            p90_us: round3(q(0.90)),
            p99_us: round3(q(0.99)),
            p999_us: round3(q(0.999)),
            max_us: round3(self.hist.max() as f64 / 1e3),
        }
    }
}

/// Three decimals: stable JSON, and no more precision than is measured.
pub fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// Counters of one run. Event counts start after the warm-up; CPU time is
/// counted from time 0 (it is what the conservation check adds up).
#[derive(Default)]
pub struct Metrics {
    /// Per delivered event: the raise that made it pending until its
    /// handler starts on a vCPU (what the booted tools measure).
    pub handler: Latency,
    /// Per delivered event: that raise until the last stage (handler, or
    /// the deferred work) ends.
    pub completion: Latency,
    /// Raises merged into an event already pending, until the handler that
    /// took them starts (counted apart: they are not deliveries).
    pub merged: Latency,
    pub raised: u64,
    /// Raised while the channel was still pending: merged into that event.
    pub coalesced: u64,
    /// Handler runs, by global vCPU.
    pub handled: Vec<u64>,
    /// Upcalls notified to a vCPU that was running (an IPI).
    pub ipis: u64,
    /// Blocked vCPUs woken by an event.
    pub wakeups: u64,
    /// `evtchn-wait`: waits in Xen ended by an event, and waits that ended
    /// in a block after all.
    pub waits_hit: u64,
    pub waits_gave_up: u64,
    pub context_switches: u64,
    pub run_time: Vec<Ns>,
    pub idle_time: Vec<Ns>,
    /// Per global vCPU, after the warm-up: time its application (the busy
    /// loop) ran, that is, running and not in Xen's or the guest's event
    /// path. Handler time on a vCPU is taken from it.
    pub app_time: Vec<Ns>,
    /// Events the engine processed (the benchmark's unit).
    pub engine_events: u64,
}
