//! One configuration of the set-pending benchmark, run under callgrind by
//! `cargo xtask bench-xen`, which counts instructions in `hx_bench_send`
//! (set-pending) or `hx_bench_runstate` (vcpu_runstate_change()'s hook).
//!
//! Usage: set-pending-bench <unpatched|off|running|balanced> <vcpus> <stay|move|switch|switch-set> <iterations>
//!
//! `stay`: the event's last vCPU keeps running (the common case). `move`:
//! the running vCPU alternates, so every raise changes queue (the worst
//! case: a search of the set, both queue locks, tail invalidation).
//! `switch`: context switches of a domain that gave no channel a set;
//! `switch-set`: of one that did.

use evroute_model::abi::{SharedEvents, LINKED, LINK_MASK, MAX_QUEUES, PENDING};
use evroute_model::hypervisor::{Kind, LastQ, RunState};
use evroute_model::Policy;
use evroute_xen_harness::XenDomain;
use std::process::ExitCode;
use std::sync::atomic::Ordering::SeqCst;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("set-pending-bench: {e}\nusage: set-pending-bench <unpatched|off|running|balanced> <vcpus> <stay|move|switch|switch-set> <iterations>");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let [_, policy, vcpus, scenario, iters] = args else { return Err("four arguments".into()) };
    // "unpatched" is Debian's event_fifo.c (a separate build): no routing either.
    let policy = match policy.as_str() {
        "unpatched" => Policy::Bound,
        p => Policy::from_option(p).ok_or(format!("policy '{p}': one of unpatched, off, running, balanced"))?,
    };
    let n: u32 = vcpus.parse().map_err(|e| format!("vcpus '{vcpus}': {e}"))?;
    let moving = match scenario.as_str() {
        "stay" | "switch" | "switch-set" => false,
        "move" => true,
        s => return Err(format!("scenario '{s}': stay, move, switch or switch-set")),
    };
    let iters: u32 = iters.parse().map_err(|e| format!("iterations '{iters}': {e}"))?;
    if !(2..=1024).contains(&n) {
        return Err(format!("vcpus {n}: 2..=1024"));
    }

    let d = XenDomain::new(n, 64, policy, true);
    let port = d.alloc(Kind::Interdomain, 0).map_err(|e| format!("alloc: {e}"))?;
    if scenario == "switch" {
        d.bench_switches(iters);
        return Ok(());
    }
    if policy != Policy::Bound {
        let mut all = vec![0xffu8; n.div_ceil(8) as usize];
        let (rc, _) = d.set_vcpu_set(port, 0, n, Some(&mut all));
        if rc != 0 {
            return Err(format!("set_vcpu_set: {rc}"));
        }
    }
    if scenario == "switch-set" {
        d.bench_switches(iters);
        return Ok(());
    }
    for v in 0..n {
        d.set_run_state(v, RunState::Runnable);
    }
    let (a, b) = (n - 1, n / 2);
    d.set_run_state(a, RunState::Running);
    for i in 0..iters {
        if moving {
            let (now, before) = if i % 2 == 0 { (b, a) } else { (a, b) };
            d.set_run_state(before, RunState::Runnable);
            d.set_run_state(now, RunState::Running);
        }
        if d.bench_send(port) != 0 {
            return Err("send failed".into());
        }
        // The guest consumes the event (not counted).
        let w = d.word(port).expect("port has a word");
        w.fetch_and(!(PENDING | LINKED | LINK_MASK), SeqCst);
        let v = LastQ::from_raw(d.lastq(port)).vcpu;
        let cb = d.control_block(v);
        cb.ready.store(0, SeqCst);
        for q in 0..MAX_QUEUES {
            cb.head[q].store(0, SeqCst);
        }
        d.upcall_pending(v).store(0, SeqCst);
    }
    Ok(())
}
