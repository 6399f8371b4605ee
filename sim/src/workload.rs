//! When each event source raises its next event.

use crate::scenario::{ms, Arrival, Ns, NS_PER_S};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

pub enum Arrivals {
    Poisson {
        mean: f64,
    },
    /// Markov-modulated: Poisson while on, nothing while off.
    OnOff {
        mean: f64,
        mean_on: f64,
        mean_off: f64,
        on: bool,
        phase_end: Ns,
    },
    Trace {
        times: Arc<Vec<Ns>>,
        next: usize,
    },
    /// One event in flight: only the first raise is scheduled here; the
    /// host raises each next one `gap` after the last completed.
    Closed {
        lo: Ns,
        hi: Ns,
        started: bool,
    },
}

/// A source's own random stream, so every policy sees the same arrivals
/// and the same channel choices (common random numbers).
pub struct SourceRng(SmallRng);

impl SourceRng {
    pub fn new(seed: u64, source: usize) -> Self {
        SourceRng(SmallRng::seed_from_u64(seed ^ (source as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
    }

    /// An exponential variate of the given mean (ns).
    pub fn exp(&mut self, mean: f64) -> Ns {
        let u: f64 = self.0.random();
        (-(1.0 - u).ln() * mean) as Ns
    }

    pub fn below(&mut self, n: u32) -> u32 {
        self.0.random_range(0..n)
    }

    /// Uniform in `lo..=hi` (ns).
    pub fn between(&mut self, lo: Ns, hi: Ns) -> Ns {
        self.0.random_range(lo..=hi)
    }
}

impl Arrivals {
    /// `traces` holds the timestamps of trace sources, read once per run.
    pub fn new(a: &Arrival, trace: Option<Arc<Vec<Ns>>>) -> Self {
        match a {
            Arrival::Poisson { rate_per_s } => Arrivals::Poisson { mean: NS_PER_S as f64 / rate_per_s },
            Arrival::Onoff { rate_per_s, on_ms, off_ms } => Arrivals::OnOff {
                mean: NS_PER_S as f64 / rate_per_s,
                mean_on: ms(*on_ms) as f64,
                mean_off: ms(*off_ms) as f64,
                on: false,
                phase_end: 0,
            },
            Arrival::Trace { .. } => Arrivals::Trace { times: trace.expect("trace read"), next: 0 },
            Arrival::Closed { gap_us_min, gap_us_max } => {
                Arrivals::Closed { lo: (gap_us_min * 1e3) as Ns, hi: (gap_us_max * 1e3) as Ns, started: false }
            }
        }
    }

    /// A closed loop's next raise after its event completed at `now`.
    pub fn after_completion(&mut self, now: Ns, rng: &mut SourceRng) -> Option<Ns> {
        match self {
            Arrivals::Closed { lo, hi, .. } => Some(now + rng.between(*lo, *hi)),
            _ => None,
        }
    }

    /// The next raise after `now`, or `None` when the source is done.
    pub fn next(&mut self, now: Ns, rng: &mut SourceRng) -> Option<Ns> {
        match self {
            Arrivals::Poisson { mean } => Some(now + rng.exp(*mean).max(1)),
            Arrivals::OnOff { mean, mean_on, mean_off, on, phase_end } => {
                let mut t = now;
                loop {
                    if *on {
                        let next = t + rng.exp(*mean).max(1);
                        if next < *phase_end {
                            return Some(next);
                        }
                        t = *phase_end;
                        *on = false;
                        *phase_end = t + rng.exp(*mean_off);
                    } else {
                        t = t.max(*phase_end);
                        *on = true;
                        *phase_end = t + rng.exp(*mean_on);
                    }
                }
            }
            Arrivals::Trace { times, next } => {
                let t = times.get(*next).copied();
                *next += 1;
                t
            }
            Arrivals::Closed { lo, hi, started } => {
                (!std::mem::replace(started, true)).then(|| now + rng.between(*lo, *hi))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(a: &Arrival, secs: u64) -> f64 {
        let mut arr = Arrivals::new(a, None);
        let mut rng = SourceRng::new(7, 0);
        let (mut t, mut n) = (0, 0u64);
        while let Some(next) = arr.next(t, &mut rng) {
            if next > secs * NS_PER_S {
                break;
            }
            assert!(next > t || (t == 0 && next == 0), "arrivals must move forward");
            t = next;
            n += 1;
        }
        n as f64 / secs as f64
    }

    #[test]
    fn poisson_arrivals_come_at_the_rate_asked() {
        let r = count(&Arrival::Poisson { rate_per_s: 20_000.0 }, 20);
        assert!((r - 20_000.0).abs() < 200.0, "{r}/s");
    }

    #[test]
    fn on_off_arrivals_average_rate_times_the_on_fraction() {
        let r = count(&Arrival::Onoff { rate_per_s: 100_000.0, on_ms: 1.0, off_ms: 9.0 }, 50);
        assert!((r - 10_000.0).abs() < 500.0, "{r}/s, want 10,000/s");
    }
}
