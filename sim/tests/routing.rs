//! The simulator's routing, step by step: every routed set-pending of a
//! run is checked against `evroute_model::route` on the inputs the host
//! passed, the host's memory of each channel's last queue, and the masks
//! against the host's own vCPU states. A host that forgot an event's last
//! vCPU, or fed routing stale masks, moves figures without failing any
//! other check; here it fails at the first step it happens.

use evroute_model::{route, Policy, RouteInputs};
use evroute_sim::host::{read_traces, Host};
use evroute_sim::scenario::Scenario;
use std::collections::HashMap;
use std::path::Path;

fn check(file: &str, policy: Policy) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(file);
    let mut s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    // A second of simulated time is tens of thousands of decisions.
    s.duration_ms = toml::Spanned::new(0..0, 1000.0);
    let traces = read_traces(&s).expect("traces");
    let (_, steps) = Host::new(&s, policy, &traces).run_logged();
    assert!(steps.len() > 1000, "{file}: only {} routed set-pendings", steps.len());
    let mut last: HashMap<usize, u32> = HashMap::new();
    let mut moved = 0;
    for (i, st) in steps.iter().enumerate() {
        let at = format!("{file}, {policy:?}, step {i} ({st:?})");
        let inputs = RouteInputs {
            set: &[st.set][..],
            running: &[st.running][..],
            blocked: &[st.blocked][..],
            heavy: &[st.heavy][..],
            receivable: &[st.receivable][..],
            bound: st.bound,
            last: st.last,
        };
        assert_eq!(st.joined, route(policy, &inputs), "{at}: the event joined another queue than routing chose");
        let want_last = *last.get(&st.chan).unwrap_or(&st.bound);
        assert_eq!(st.last, want_last, "{at}: routing was told the wrong last queue");
        assert_eq!(st.running, st.on_pcpu, "{at}: the running mask is not the vCPUs on a pCPU");
        assert_eq!(st.blocked, st.halted, "{at}: the blocked mask is not the halted vCPUs");
        moved += usize::from(st.joined != st.last);
        last.insert(st.chan, st.joined);
    }
    if policy != Policy::Bound {
        assert!(moved > 0, "{file}, {policy:?}: no event ever changed queue, so `last` was never tested");
    }
}

#[test]
fn every_routing_step_of_the_default_scenario_is_the_models_decision() {
    for p in Policy::ALL {
        check("default.toml", p);
    }
}

#[test]
fn every_routing_step_of_the_bursts_scenario_is_the_models_decision() {
    for p in Policy::ALL {
        check("bursts.toml", p);
    }
}
