//! evroute-sim: a discrete-event simulator of a virtualised host that
//! measures per-OS event latency and balance under each routing policy.
//! Routing is `evroute_model::route` itself; see `docs/sim.md`.

pub mod host;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod sched;
pub mod sweep;
pub mod workload;
