//! Scenarios for dom0 running the patched kernel (guest-evtchn/linux/):
//! what a write to /proc/irq/N/smp_affinity does to Xen's vCPU set, CPU
//! hotplug, a storm of affinity writes, and the fallbacks.

use crate::linux::{cpu_online, effective, irq_row, kernel_log, set_affinity, BAD_LOG_LINES};
use crate::xen::{pin, Privcmd};
use crate::{per_cpu_delta, report, Pair, ALL_VCPUS};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ENOSYS: i32 = 38;
const EOPNOTSUPP: i32 = 95;

/// The kernel says once, at boot, whether it gives channels vCPU sets:
/// exactly one "vCPU sets:" line, the expected one.
pub fn probe_logged(name: &str, want: &str) -> bool {
    let log = kernel_log().unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("vCPU sets:")).collect();
    report(name, lines.len() == 1 && lines[0].contains(want), format!("{lines:?}, want one line with '{want}'"))
}

/// The IRQ Linux gave the receiving half of a pair.
fn irq_of(pair_rx: &str) -> u32 {
    crate::xen::irq_of(pair_rx).expect("the pair's IRQ in /proc/interrupts")
}

/// Linux's effective affinity, Xen's set (GET) and Xen's bound vCPU.
fn state(pc: &Privcmd, irq: u32, port: u32) -> (u64, u64, u32) {
    (effective(irq).unwrap_or(0), pc.get_vcpu_set(port).unwrap_or(0), pc.bound_vcpu(port).unwrap_or(u32::MAX))
}

/// A step's check: effective affinity and Xen's set both `want`, the
/// bound vCPU inside it.
fn expect(pc: &Privcmd, irq: u32, port: u32, what: &str, want: u64, log: &mut Vec<String>) -> bool {
    let (eff, set, bound) = state(pc, irq, port);
    let ok = eff == want && set == want && bound < 64 && want >> bound & 1 == 1;
    let flag = if ok { String::new() } else { format!(" <-- want {want:#x}") };
    log.push(format!("{what}: effective {eff:#x} set {set:#x} bound {bound}{flag}"));
    ok
}

/// `echo MASK > smp_affinity` reaches Xen: a new channel starts with every
/// CPU (the default affinity), a one-CPU mask binds it to that vCPU, a
/// wider mask gives the set back.
pub fn affinity(pc: &Privcmd) -> bool {
    let pair = Pair::new("evr-aff-rx", "evr-aff-tx").expect("pair");
    let irq = irq_of("evr-aff-rx");
    let p = pair.rx_port;
    let mut log = Vec::new();
    let mut ok = expect(pc, irq, p, "new channel", ALL_VCPUS, &mut log);
    for mask in [0b0100, 0b1111, 0b0110, 0b0001, 0b1111] {
        let w = set_affinity(irq, mask);
        ok &= w.is_ok();
        ok &= expect(pc, irq, p, &format!("echo {mask:x}"), mask, &mut log);
    }
    report("affinity", ok, format!("IRQ {irq}, port {p}: {}", log.join("; ")))
}

/// Send `n` events to the pair's receiver from `cpu` and read them all
/// there: with the other vCPUs idle, that vCPU is the running one.
pub(crate) fn pings(pair: &mut Pair, n: usize, cpu: usize) -> usize {
    pin(cpu);
    let mut got = 0;
    for _ in 0..n {
        pair.tx.notify(pair.tx_port).expect("notify");
        if pair.rx.wait(3000).map(|v| v.contains(&pair.rx_port)).unwrap_or(false) {
            got += 1;
            pair.rx.unmask(pair.rx_port).expect("unmask");
        }
    }
    got
}

/// CPU 3 goes offline: it leaves the set (Linux's effective affinity and
/// Xen's set both lose it) and handles no event while offline, though it
/// took them before (its count in /proc/interrupts, kept across the
/// offline period, does not move); back online it rejoins only the sets
/// whose affinity holds it.
pub fn hotplug(pc: &Privcmd) -> bool {
    let mut pair = Pair::new("evr-hp-rx", "evr-hp-tx").expect("pair");
    let irq = irq_of("evr-hp-rx");
    let p = pair.rx_port;
    let mut log = Vec::new();
    let mut ok = set_affinity(irq, ALL_VCPUS).is_ok();
    let row = |what: &str| irq_row("evtchn:evr-hp-rx").unwrap_or_else(|e| panic!("{what}: {e}"));
    let sent = 300;
    let got_on3 = pings(&mut pair, sent, 3);
    let cpu3_before = row("before").counts.get(3).copied().flatten();

    ok &= cpu_online(3, false).is_ok();
    ok &= expect(pc, irq, p, "CPU 3 offline", 0b0111, &mut log);
    let got = pings(&mut pair, sent, 1);
    ok &= got == sent && got_on3 == sent;
    ok &= cpu_online(3, true).is_ok();
    let cpu3_after = row("after").counts.get(3).copied().flatten();
    ok &= cpu3_before.is_some_and(|n| n > 0) && cpu3_before == cpu3_after;
    log.push(format!(
        "{got_on3}/{sent} delivered sent from CPU 3, which handled {cpu3_before:?}; {got}/{sent} while it was offline, after which it had handled {cpu3_after:?}"
    ));
    ok &= expect(pc, irq, p, "CPU 3 online", ALL_VCPUS, &mut log);

    // The user's mask decides what an online CPU rejoins.
    ok &= set_affinity(irq, 0b0110).is_ok();
    ok &= cpu_online(3, false).is_ok();
    ok &= expect(pc, irq, p, "mask 6, CPU 3 offline", 0b0110, &mut log);
    ok &= cpu_online(3, true).is_ok();
    ok &= expect(pc, irq, p, "mask 6, CPU 3 online", 0b0110, &mut log);
    ok &= cpu_online(2, false).is_ok();
    ok &= expect(pc, irq, p, "mask 6, CPU 2 offline", 0b0010, &mut log);
    ok &= cpu_online(2, true).is_ok();
    ok &= expect(pc, irq, p, "mask 6, CPU 2 online", 0b0110, &mut log);
    ok &= pings(&mut pair, 50, 1) == 50;
    report("hotplug", ok, log.join("; "))
}

/// Two threads write random masks to both halves' smp_affinity for 30 s
/// while a ping-pong runs: every ping answered once, nothing twice, no
/// warning in the kernel log.
pub fn affinity_storm() -> bool {
    const SECS: u64 = 30;
    let Pair { mut rx, tx, rx_port, tx_port } = Pair::new("evr-as-rx", "evr-as-tx").expect("pair");
    let irqs = [irq_of("evr-as-rx"), irq_of("evr-as-tx")];
    let log_before = kernel_log().unwrap_or_default();
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let extra = AtomicU64::new(0);
    let (sent, answered, echoed, secs) = std::thread::scope(|s| {
        for seed in [0x9e37_79b9_7f4a_7c15u64, 0xd1b5_4a32_d192_ed03] {
            let (stop, writes) = (&stop, &writes);
            s.spawn(move || {
                let mut r = seed;
                while !stop.load(Ordering::Relaxed) {
                    r ^= r << 13;
                    r ^= r >> 7;
                    r ^= r << 17;
                    let mask = 1 + r % 15;
                    if set_affinity(irqs[(r >> 32) as usize % 2], mask).is_ok() {
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let echo = {
            let (stop, extra, rx) = (&stop, &extra, &mut rx);
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match rx.wait(200) {
                        Ok(p) if !p.is_empty() => {
                            extra.fetch_add(p.len() as u64 - 1, Ordering::Relaxed);
                            n += 1;
                            rx.unmask(rx_port).expect("unmask");
                            rx.notify(rx_port).expect("notify back");
                        }
                        Ok(_) => {}
                        Err(e) => panic!("echo wait: {e}"),
                    }
                }
                n
            })
        };
        let t = Instant::now();
        let (mut sent, mut answered) = (0u64, 0u64);
        while t.elapsed() < Duration::from_secs(SECS) {
            tx.notify(tx_port).expect("notify");
            sent += 1;
            match tx.wait(5000) {
                Ok(p) if !p.is_empty() => {
                    extra.fetch_add(p.len() as u64 - 1, Ordering::Relaxed);
                    answered += 1;
                    tx.unmask(tx_port).expect("unmask");
                }
                r => {
                    println!("EVROUTE-DETAIL storm-affinity: no answer to ping {sent} within 5 s ({r:?})");
                    break;
                }
            }
        }
        let secs = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        (sent, answered, echo.join().expect("echo"), secs)
    });
    // A late duplicate would still be on the way: give it time to show.
    std::thread::sleep(Duration::from_millis(500));
    let late = tx.wait(0).map(|v| v.len() as u64).unwrap_or(0) + rx.wait(0).map(|v| v.len() as u64).unwrap_or(0);
    let log_after = kernel_log().unwrap_or_default();
    let new_bad: Vec<String> = BAD_LOG_LINES
        .iter()
        .filter(|w| log_after.matches(*w).count() > log_before.matches(*w).count())
        .map(|w| w.to_string())
        .collect();
    let dup = extra.load(Ordering::Relaxed) + late;
    report(
        "storm-affinity",
        sent == answered && echoed == sent && dup == 0 && new_bad.is_empty() && sent > 100,
        format!(
            "{secs:.0} s: {sent} pings, {echoed} received, {answered} answered, {dup} duplicated, {} affinity writes, new kernel warnings {new_bad:?}",
            writes.load(Ordering::Relaxed)
        ),
    )
}

/// A fallback boot behaves as Linux does today: one CPU per IRQ, no set in
/// Xen (or no operation), and events handled on that CPU only.
pub fn compat(pc: &Privcmd, mode: &str) -> bool {
    let mut pair = Pair::new("evr-cp-rx", "evr-cp-tx").expect("pair");
    let irq = irq_of("evr-cp-rx");
    let p = pair.rx_port;
    let wrote = set_affinity(irq, ALL_VCPUS).is_ok();
    let eff = effective(irq).unwrap_or(0);
    let bound = pc.bound_vcpu(p).unwrap_or(u32::MAX);
    let get = pc.get_vcpu_set(p);
    let want_get = match mode {
        "compat-unpatched" => Err(ENOSYS),
        "compat-off" | "compat-fifo0" => Err(EOPNOTSUPP),
        _ => Ok(1u64 << bound.min(63)),
    };
    let before = irq_row("evtchn:evr-cp-rx").map(|r| r.dense()).unwrap_or_default();
    let got = pings(&mut pair, 100, 1);
    let after = irq_row("evtchn:evr-cp-rx").map(|r| r.dense()).unwrap_or_default();
    let delta = per_cpu_delta(&after, &before);
    let on_eff: u64 = delta.iter().enumerate().filter(|(c, _)| eff >> c & 1 == 1).map(|(_, n)| n).sum();
    let total: u64 = delta.iter().sum();
    report(
        "one-cpu-per-irq",
        wrote && eff.count_ones() == 1 && eff == 1 << bound.min(63) && get == want_get && got == 100 && on_eff == total,
        format!("echo f: effective {eff:#x}, Xen bound vCPU {bound}, GET {get:?} (want {want_get:?}), {got}/100 delivered, per-CPU {delta:?}"),
    )
}
