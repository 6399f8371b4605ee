//! The consumer's speed, and vCPU sets kept as plain bytes against `bitvec`.
//! `cargo bench -p evroute-guest` prints events consumed per second on one
//! core and ns per set operation.
//!
//! - `consume/1024`: one queue of 1,024 pending events, linked as Xen links
//!   them, drained by `handle_events` (each event: one cmpxchg to unlink, one
//!   fetch_and to ack, the handler).
//! - `vcpu-set/*`: a 64-vCPU domain's set from Linux CPUs 0-63 (every other
//!   one), then walked, as a guest does on each affinity write.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use evroute_guest::abi::{ControlBlock, Port, SharedEvents, LINKED, PENDING};
use evroute_guest::sync::{AtomicU32, AtomicU8, Ordering};
use evroute_guest::{Consumer, Faults, VcpuSet};
use std::hint::black_box;

/// One vCPU's shared pages: an event array of `n + 1` words and its control block.
struct Pages {
    words: Vec<AtomicU32>,
    cb: ControlBlock,
    upcall: AtomicU8,
}

impl SharedEvents for Pages {
    fn word(&self, port: Port) -> Option<&AtomicU32> {
        (port != 0).then(|| self.words.get(port as usize)).flatten()
    }
    fn control_block(&self, _vcpu: u32) -> &ControlBlock {
        &self.cb
    }
    fn upcall_pending(&self, _vcpu: u32) -> &AtomicU8 {
        &self.upcall
    }
}

impl Pages {
    /// Ports 1..=n pending and linked in order on queue 0, as Xen leaves them.
    fn fill(&self, n: u32) {
        for p in 1..=n {
            let link = if p == n { 0 } else { p + 1 };
            self.words[p as usize].store(PENDING | LINKED | link, Ordering::Relaxed);
        }
        self.cb.head[0].store(1, Ordering::Relaxed);
        self.cb.ready.store(1, Ordering::Relaxed);
    }
}

fn consume(c: &mut Criterion) {
    let n = 1024u32;
    let pages = Pages {
        words: (0..=n).map(|_| AtomicU32::new(0)).collect(),
        cb: ControlBlock::default(),
        upcall: AtomicU8::new(0),
    };
    let mut g = c.benchmark_group("consume");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        let mut consumer = Consumer::new(0, n + 1, Faults::NONE);
        let mut seen = 0u64;
        b.iter(|| {
            pages.fill(n);
            let handled = consumer.handle_events(&pages, &(), &mut |p| seen += p as u64);
            assert_eq!(handled, n as usize);
        });
        black_box(seen);
    });
    g.finish();
}

fn vcpu_sets(c: &mut Criterion) {
    use bitvec::prelude::*;
    let cpus: Vec<u32> = (0..64).step_by(2).collect();
    let mut g = c.benchmark_group("vcpu-set");
    g.bench_function("bytes", |b| {
        b.iter(|| {
            let set = VcpuSet::from_cpus(black_box(&cpus).iter().copied(), Some).unwrap();
            black_box(set.iter().sum::<u32>() + set.nr_bits())
        })
    });
    g.bench_function("bitvec", |b| {
        b.iter(|| {
            // The same layout as the ABI's: bit n in byte n / 8, bit n % 8.
            let mut set = BitArray::<[u8; 1024], Lsb0>::ZERO;
            for &cpu in black_box(&cpus) {
                set.set(cpu as usize, true);
            }
            let nr_bits = set.last_one().map_or(0, |i| i + 1) as u32;
            black_box(set.iter_ones().map(|i| i as u32).sum::<u32>() + nr_bits)
        })
    });
    g.finish();
}

criterion_group!(benches, consume, vcpu_sets);
criterion_main!(benches);
