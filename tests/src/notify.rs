//! The dedicated-core notify path (`evtchn-wait=`), on Debian's unmodified
//! dom0 kernel.
//!
//! `notify-*` boots (the null scheduler, dom0's 2 vCPUs one per pCPU): a
//! thread on vCPU 1 waits in `SCHEDOP_poll` on a masked port; a thread on
//! vCPU 0 sends. One-way latency, send to the poll's return, beside the
//! send hypercall's own cost, and Xen's IPIs per event.
//!
//! `shared-*` boots (credit2, 4 vCPUs on 2 pCPUs): busy loops on vCPUs 2
//! and 3, pollers on vCPUs 0 and 1 fed at random intervals. The busy
//! loops' throughput while the pollers are fed, over their throughput
//! while not, in the same boot (the xtask compares that ratio between
//! `off` and `poll`), and every event delivered. Both kinds then run a lock-heavy workload.

use crate::xen::{pin, Evtchn, Privcmd};
use crate::xenstat::perf_counters;
use crate::{percentile, report, Pair};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Events of the one-way test.
const EVENTS: usize = 2000;
/// A poller that got nothing for this long lost an event.
const LOST_AFTER: Duration = Duration::from_secs(2);
/// The last counter Xen's 'p' key prints (the series adds its own after
/// the common ones).
const LAST_COUNTER: &str = "evtchn-wait: kicks skipped";
const IPIS: &str = "#IPIs";
const WAIT_EVENT: &str = "evtchn-wait: event came";
const WAIT_GAVE_UP: &str = "evtchn-wait: ended without event";

/// The time-stamp counter: agrees across this dom0's vCPUs within a
/// microsecond, where `CLOCK_MONOTONIC` is skewed by up to ~120 µs.
fn tsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86-64.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

/// TSC ticks per microsecond, against the monotonic clock over 200 ms.
fn tsc_per_us() -> f64 {
    let (t0, c0) = (Instant::now(), tsc());
    while t0.elapsed() < Duration::from_millis(200) {
        std::hint::spin_loop();
    }
    (tsc() - c0) as f64 / t0.elapsed().as_secs_f64() / 1e6
}

fn spin_ticks(ticks: u64) {
    let t = tsc();
    while tsc() - t < ticks {
        std::hint::spin_loop();
    }
}

/// xorshift64: gaps between events, the same in every boot.
pub(crate) struct Gaps(pub u64);

impl Gaps {
    pub fn next_in(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

/// A port that wakes pollers and nothing else: masked and not pending.
/// Binding left it pending (`Pair::new` consumed that on the sending
/// half); one event read without unmasking leaves the receiving half so.
fn masked_pair(name: &str) -> std::io::Result<Pair> {
    let pair = Pair::new(&format!("{name}-rx"), &format!("{name}-tx"))?;
    pair.tx.notify(pair.tx_port)?;
    let got = pair.rx.wait(2000)?;
    if got != [pair.rx_port] {
        return Err(std::io::Error::other(format!("port {}: read {got:?} while masking it", pair.rx_port)));
    }
    Ok(pair)
}

/// After a poll returned for the event: unmask (Linux takes the pending
/// event and clears it), read it, and leave the port masked again.
fn rearm(rx: &mut Evtchn, port: u32) -> std::io::Result<()> {
    rx.unmask(port)?;
    let got = rx.wait(LOST_AFTER.as_millis() as i32)?;
    if got != [port] {
        return Err(std::io::Error::other(format!("re-arm of port {port}: read {got:?}")));
    }
    Ok(())
}

pub fn run(pc: &Privcmd, mode: &str) -> bool {
    let mut ok = match mode.split_once('-') {
        Some(("notify", wait)) => one_way(pc, wait),
        Some(("shared", wait)) => shared(pc, wait),
        _ => report(mode, false, "unknown mode".into()),
    };
    if mode == "notify-mwait" {
        // What `cargo xtask bench-notify` runs on hardware: here it must
        // find that mwait fell back to poll.
        let r = bench(pc, 200);
        ok &= report("bench-notify", r.as_deref() == Ok("poll"), format!("found mode {r:?}, want Ok(\"poll\")"));
    }
    ok &= lock_workload(mode);
    ok
}

pub(crate) fn counters(pc: &Privcmd) -> BTreeMap<String, u64> {
    perf_counters(pc, LAST_COUNTER).unwrap_or_else(|e| {
        println!("EVROUTE-DETAIL perf counters: {e}");
        BTreeMap::new()
    })
}

pub(crate) fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, name: &str) -> u64 {
    after.get(name).copied().unwrap_or(0).saturating_sub(before.get(name).copied().unwrap_or(0))
}

/// What the one-way test measured.
struct OneWay {
    /// Send to the poll's return, and the send hypercall alone, µs, sorted.
    one_way: Vec<f64>,
    send: Vec<f64>,
    lost: bool,
    ipis_per_event: f64,
    /// Waits in Xen ended by the event, and that blocked after all.
    waited: u64,
    gave_up: u64,
    spurious: u64,
}

impl OneWay {
    fn p(v: &[f64], q: f64) -> f64 {
        percentile(v, q).unwrap_or(0.0)
    }

    fn metric(&self, mode: &str) -> String {
        format!(
            "scenario=notify mode={mode} events={} one_way_p50_us={:.1} one_way_p99_us={:.1} send_p50_us={:.1} send_p99_us={:.1} ipis_per_event={:.3} wait_event={} wait_gave_up={} spurious={}",
            self.one_way.len(),
            Self::p(&self.one_way, 0.5),
            Self::p(&self.one_way, 0.99),
            Self::p(&self.send, 0.5),
            Self::p(&self.send, 0.99),
            self.ipis_per_event,
            self.waited,
            self.gave_up,
            self.spurious
        )
    }
}

/// Send on vCPU 0, return from `SCHEDOP_poll` on vCPU 1, `events` times.
fn measure_one_way(pc: &Privcmd, events: usize) -> Result<OneWay, String> {
    let per_us = tsc_per_us();
    let Pair { mut rx, tx, rx_port, tx_port } = masked_pair("nfy").map_err(|e| format!("masked pair: {e}"))?;
    // TSC of the send in flight; 0 when the poller has taken it.
    let sent = AtomicU64::new(0);
    let polling = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let before = counters(pc);
    let (one_way, send, spurious, lost) = std::thread::scope(|s| {
        let (sent, polling, stop, rx) = (&sent, &polling, &stop, &mut rx);
        let waiter = s.spawn(move || {
            pin(1);
            let mut lat = Vec::with_capacity(events);
            let mut spurious = 0u64;
            while lat.len() < events && !stop.load(Ordering::Acquire) {
                polling.store(true, Ordering::Release);
                if let Err(e) = pc.poll(rx_port) {
                    println!("EVROUTE-DETAIL poll: errno {e}");
                    break;
                }
                let t = tsc();
                let at = sent.load(Ordering::Acquire);
                if at == 0 {
                    spurious += 1; // A tick or another event for this vCPU.
                    continue;
                }
                polling.store(false, Ordering::Release);
                lat.push(t.saturating_sub(at));
                if let Err(e) = rearm(rx, rx_port) {
                    println!("EVROUTE-DETAIL {e}");
                    break;
                }
                sent.store(0, Ordering::Release);
            }
            (lat, spurious)
        });
        pin(0);
        let mut gaps = Gaps(0x2545_f491_4f6c_dd1d);
        let mut cost = Vec::with_capacity(events);
        let mut lost = false;
        for _ in 0..events {
            // Wait until the poller is back in its poll, then a random
            // 50-300 µs so that it is well inside Xen when the event comes.
            let t = Instant::now();
            while sent.load(Ordering::Acquire) != 0 || !polling.load(Ordering::Acquire) {
                if t.elapsed() > LOST_AFTER {
                    lost = true;
                    break;
                }
                std::hint::spin_loop();
            }
            if lost {
                break;
            }
            spin_ticks((gaps.next_in(50, 300) as f64 * per_us) as u64);
            let t0 = tsc();
            sent.store(t0, Ordering::Release);
            tx.notify(tx_port).expect("notify");
            cost.push(tsc() - t0);
        }
        stop.store(true, Ordering::Release);
        if lost {
            // Free the poller if it still waits.
            let _ = tx.notify(tx_port);
        }
        let (lat, spurious) = waiter.join().expect("waiter");
        (lat, cost, spurious, lost)
    });
    let after = counters(pc);
    let to_us = |v: Vec<u64>| {
        let mut v: Vec<f64> = v.into_iter().map(|t| t as f64 / per_us).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let n = one_way.len() as f64;
    Ok(OneWay {
        one_way: to_us(one_way),
        send: to_us(send),
        lost,
        ipis_per_event: if n > 0.0 { delta(&after, &before, IPIS) as f64 / n } else { f64::NAN },
        waited: delta(&after, &before, WAIT_EVENT),
        gave_up: delta(&after, &before, WAIT_GAVE_UP),
        spurious,
    })
}

/// The booted test: off takes today's path, an IPI per event wakes the
/// blocked poller; poll (and mwait, which falls back to it under QEMU):
/// the event ends the wait in Xen, as the counters say, and sends no IPI.
fn one_way(pc: &Privcmd, wait: &str) -> bool {
    let name = format!("notify-{wait}");
    let m = match measure_one_way(pc, EVENTS) {
        Ok(m) => m,
        Err(e) => return report(&name, false, e),
    };
    println!("EVROUTE-METRIC {}", m.metric(wait));
    let (p50, send_p50) = (OneWay::p(&m.one_way, 0.5), OneWay::p(&m.send, 0.5));
    let events = m.one_way.len() as f64;
    let complete = m.one_way.len() == EVENTS && !m.lost;
    let (pass, want) = if wait == "off" {
        (complete && m.waited == 0 && m.ipis_per_event >= 0.9, "no wait in Xen, >= 0.9 IPIs per event".to_string())
    } else {
        (
            complete && m.waited as f64 >= 0.9 * events && m.ipis_per_event <= 0.1 && p50 <= 1.5 * send_p50,
            format!(
                "waits ended by the event >= 90%, <= 0.1 IPIs/event, p50 <= 1.5 x the send's p50 ({send_p50:.1} us)"
            ),
        )
    };
    report(
        &name,
        pass,
        format!(
            "{}/{EVENTS} events, lost: {}, p50 {p50:.1} us, {:.3} IPIs/event, waits ended by the event {}, gave up {}; want {want}",
            m.one_way.len(),
            m.lost,
            m.ipis_per_event,
            m.waited,
            m.gave_up
        ),
    )
}

/// `evroute-e2e bench-notify [EVENTS]` in dom0 of any host running the
/// patched Xen (`cargo xtask bench-notify`): the one-way test, labelled
/// with the `evtchn-wait` mode Xen printed at boot.
/// Returns the mode it found.
pub fn bench(pc: &Privcmd, events: usize) -> Result<String, String> {
    let mut index = 0;
    let boot_log = pc.read_console(&mut index).map_err(|e| format!("readconsole: errno {e}"))?;
    let after = |marker: &str| boot_log.lines().find_map(|l| l.split_once(marker).map(|(_, r)| r.trim()));
    // Xen prints no evtchn-wait line when the option is off.
    let mode = match after("evtchn-wait: ").and_then(|r| r.split(',').next()) {
        Some(m @ ("poll" | "mwait")) => m,
        Some(_) => "?",
        None => "off",
    };
    let sched = after("Using scheduler: ").unwrap_or("(not in Xen's console ring)");
    println!("EVROUTE-DETAIL Xen: scheduler {sched}, evtchn-wait {mode}; {events} events");
    let m = measure_one_way(pc, events)?;
    println!("EVROUTE-METRIC {}", m.metric(mode));
    if m.lost {
        return Err(format!("an event was lost after {} (no return from the poll within 2 s)", m.one_way.len()));
    }
    Ok(mode.to_string())
}

/// Busy loops on vCPUs 2 and 3 for `secs`; the one on vCPU 2 also feeds
/// `feed` (pollers' pairs) at random 0.5-2 ms intervals, one event in
/// flight per poller. Returns loop rounds per second and events sent.
fn busy(feed: &[(Evtchn, u32, &AtomicBool)], secs: f64, per_us: f64) -> (f64, u64) {
    let rounds = AtomicU64::new(0);
    let sends = AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for cpu in [2, 3] {
            let (rounds, sends) = (&rounds, &sends);
            s.spawn(move || {
                pin(cpu);
                let mut gaps = Gaps(0x9e37_79b9_7f4a_7c15 ^ cpu as u64);
                let mut next = tsc();
                let (mut n, mut k) = (0u64, 0usize);
                while t.elapsed().as_secs_f64() < secs {
                    for _ in 0..1000 {
                        std::hint::black_box(n);
                        n += 1;
                    }
                    if cpu == 2 && !feed.is_empty() && tsc() >= next {
                        let (tx, port, in_flight) = &feed[k % feed.len()];
                        if !in_flight.swap(true, Ordering::AcqRel) {
                            tx.notify(*port).expect("notify");
                            sends.fetch_add(1, Ordering::Relaxed);
                        }
                        k += 1;
                        next = tsc() + (gaps.next_in(500, 2000) as f64 * per_us) as u64;
                    }
                }
                rounds.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    (rounds.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64(), sends.load(Ordering::Relaxed))
}

/// Busy loops alone and with events for pollers on vCPUs 0 and 1, in
/// turn: alone (1 s), fed (2 s), alone, ..., fed, alone. Each fed phase's
/// throughput over the mean of the phases around it; the median of those.
/// The pollers wait all along, in Xen or blocked: in the phases alone
/// nothing wakes them.
fn shared(pc: &Privcmd, wait: &str) -> bool {
    const ROUNDS: usize = 5;
    let name = format!("shared-{wait}");
    let per_us = tsc_per_us();
    let mut pairs = Vec::new();
    for n in ["sha", "shb"] {
        match masked_pair(n) {
            Ok(p) => pairs.push(p),
            Err(e) => return report(&name, false, format!("masked pair: {e}")),
        }
    }
    let in_flight = [AtomicBool::new(false), AtomicBool::new(false)];
    let stop = AtomicBool::new(false);
    let before = counters(pc);
    let (feed, pollers): (Vec<_>, Vec<_>) = pairs
        .into_iter()
        .zip(&in_flight)
        .map(|(Pair { rx, tx, rx_port, tx_port }, f)| ((tx, tx_port, f), (rx, rx_port, f)))
        .unzip();
    let t = Instant::now();
    let (mut ratios, sent, delivered) = std::thread::scope(|s| {
        let handles: Vec<_> = pollers
            .into_iter()
            .enumerate()
            .map(|(cpu, (mut rx, port, in_flight))| {
                let stop = &stop;
                s.spawn(move || {
                    pin(cpu);
                    let mut got = 0u64;
                    loop {
                        pc.poll(port).expect("poll");
                        if in_flight.load(Ordering::Acquire) {
                            rearm(&mut rx, port).expect("re-arm");
                            // The event that frees the poller at the end.
                            if stop.load(Ordering::Acquire) {
                                return got;
                            }
                            got += 1;
                            in_flight.store(false, Ordering::Release);
                        }
                    }
                })
            })
            .collect();
        let mut alone = vec![busy(&[], 1.0, per_us).0];
        let (mut fed, mut sent) = (Vec::new(), 0);
        for _ in 0..ROUNDS {
            let (rate, n) = busy(&feed, 2.0, per_us);
            fed.push(rate);
            sent += n;
            alone.push(busy(&[], 1.0, per_us).0);
        }
        // Let the last events land, then free the pollers.
        let t = Instant::now();
        while in_flight.iter().any(|f| f.load(Ordering::Acquire)) && t.elapsed() < LOST_AFTER {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Release);
        for (tx, port, f) in &feed {
            f.store(true, Ordering::Release);
            let _ = tx.notify(*port);
        }
        let delivered: u64 = handles.into_iter().map(|h| h.join().expect("poller")).sum();
        let ratios: Vec<f64> = fed.iter().enumerate().map(|(i, f)| 2.0 * f / (alone[i] + alone[i + 1])).collect();
        (ratios, sent, delivered)
    });
    let secs = t.elapsed().as_secs_f64();
    let after = counters(pc);
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ROUNDS / 2];
    let (lo, hi) = (ratios[0], ratios[ROUNDS - 1]);
    let waited = delta(&after, &before, WAIT_EVENT) + delta(&after, &before, WAIT_GAVE_UP);
    println!(
        "EVROUTE-METRIC scenario=shared mode={wait} ratio={ratio:.4} ratio_min={lo:.4} ratio_max={hi:.4} secs={secs:.1} sent={sent} delivered={delivered} waits={waited}"
    );
    report(
        &name,
        sent > 0 && delivered == sent,
        format!(
            "{delivered}/{sent} events delivered; busy loops at {ratio:.4} of their speed alone (median of {ROUNDS}, {lo:.4}-{hi:.4}); {waited} waits in Xen in {secs:.1} s"
        ),
    )
}

/// Four threads on a contended mutex, whose waits sleep in the kernel
/// (futexes: the kernel's own spinlocks, and PV spinlocks where a lock
/// holder's vCPU is preempted), for a second: the count must come out.
fn lock_workload(mode: &str) -> bool {
    const THREADS: usize = 4;
    let counter = Mutex::new(0u64);
    let done = AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for cpu in 0..THREADS {
            let (counter, done) = (&counter, &done);
            s.spawn(move || {
                pin(cpu % std::thread::available_parallelism().map_or(1, |n| n.get()));
                let mut n = 0u64;
                while t.elapsed() < Duration::from_secs(1) {
                    for _ in 0..100 {
                        *counter.lock().expect("no panics under the lock") += 1;
                    }
                    n += 100;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    let got = *counter.lock().expect("no panics under the lock");
    let want = done.load(Ordering::Relaxed);
    report(
        &format!("locks-{mode}"),
        got == want && got > 0,
        format!(
            "{THREADS} threads, {got} increments under one mutex in {:.1} s (want {want})",
            t.elapsed().as_secs_f64()
        ),
    )
}
