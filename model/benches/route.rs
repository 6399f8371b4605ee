//! ns per routing decision for domains of 4, 64 and 512 vCPUs.
//! `cargo bench -p evroute-model` (target: <= 20 ns at 64 vCPUs).
//!
//! The hard case for each policy: the last vCPU is not running, so the search
//! goes past it; the only running vCPU of the set sits in the last word.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use evroute_model::route::{route, Policy, RouteInputs};
use std::hint::black_box;

/// Set, running, blocked, heavy and receivable masks of `nr` vCPUs.
fn inputs(nr: u32) -> [Vec<u64>; 5] {
    let words = nr.div_ceil(64) as usize;
    let mut set = vec![!0u64; words];
    if nr % 64 != 0 {
        set[words - 1] = (1u64 << (nr % 64)) - 1;
    }
    let mut running = vec![0u64; words];
    let top = nr - 1;
    running[(top / 64) as usize] |= 1 << (top % 64);
    let blocked = vec![0u64; words];
    let heavy = vec![0u64; words];
    let receivable = set.clone();
    [set, running, blocked, heavy, receivable]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    for nr in [4u32, 64, 512] {
        let [set, running, blocked, heavy, receivable] = inputs(nr);
        for policy in Policy::ALL {
            let inp = RouteInputs {
                set: &set[..],
                running: &running[..],
                blocked: &blocked[..],
                heavy: &heavy[..],
                receivable: &receivable[..],
                bound: 0,
                last: 0,
            };
            g.bench_with_input(BenchmarkId::new(policy.option_name(), nr), &inp, |b, inp| {
                b.iter(|| route(black_box(policy), black_box(inp)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
