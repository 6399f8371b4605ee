//! `evroute-e2e MODE`: the end-to-end scenarios, run as dom0's init on the
//! patched Xen under QEMU (see `cargo xtask e2e`). Prints one `EVROUTE
//! <scenario> PASS|FAIL ...` line per scenario and `EVROUTE-METRIC ...`
//! lines; the xtask reads them.
//!
//! With Debian's dom0 kernel, MODE is the boot's `evtchn-route=` value (or
//! `unpatched`): the hypercall and Xen's routing, driven directly. With the
//! patched kernel: `guest-credit2` and `guest-credit1` (Linux's affinity
//! as Xen's set, CPU hotplug, a storm of affinity writes, a disk's
//! interrupt), and the fallbacks `compat-unpatched`, `compat-off`,
//! `compat-fifo0`, `compat-sets0`.

mod ctl;
mod disk;
mod domu;
mod echo;
mod guest;
mod notify;
mod xenstat;
mod xenstore;

use evroute_model::abi::EvtchnSetVcpuSet;
use evroute_model::fairness::jain;
use evroute_tests::{linux, xen};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use xen::{irq_counts, pin, Evtchn, Privcmd};

const EINVAL: i32 = 22;
const EFAULT: i32 = 14;
const EOPNOTSUPP: i32 = 95;
const ENOSYS: i32 = 38;
/// dom0 runs with 4 vCPUs on 2 emulated CPUs: 2 and 3 are kept busy
/// (running), 0 and 1 idle (blocked).
const BUSY: [usize; 2] = [2, 3];
pub(crate) const ALL_VCPUS: u64 = 0b1111;

/// Per-CPU counts gained between two reads of an IRQ's row (a CPU missing
/// from `before` counted from 0).
pub(crate) fn per_cpu_delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before.iter().chain(std::iter::repeat(&0))).map(|(a, b)| a.saturating_sub(*b)).collect()
}

/// The value at fraction `p` of an ascending slice (nearest rank, the
/// last for p = 1); `None` if empty.
pub(crate) fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied()
}

pub(crate) fn report(name: &str, ok: bool, detail: String) -> bool {
    println!("EVROUTE {name} {} {detail}", if ok { "PASS" } else { "FAIL" });
    ok
}

/// The modes, and what the kernel logs about vCPU sets in each.
const GUEST_MODES: [(&str, &str); 6] = [
    ("guest-credit2", "per-OS events go to any CPU of their affinity"),
    ("guest-credit1", "per-OS events go to any CPU of their affinity"),
    ("compat-unpatched", "not offered by the hypervisor (-38)"),
    ("compat-off", "not offered by the hypervisor (-95)"),
    ("compat-fifo0", "not used with the 2-level ABI"),
    ("compat-sets0", "off (xen.evtchn_sets=0)"),
];

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode == "domu-echo" {
        // A domU's init: echoes until the domain is destroyed.
        if let Err(e) = echo::run() {
            println!("EVROUTE-ECHO FAILED: {e}");
        }
        return;
    }
    let pc = Privcmd::open().expect("/dev/xen/privcmd (insmod xen-privcmd)");
    if let Some((_, logged)) = GUEST_MODES.iter().find(|(m, _)| *m == mode) {
        let ok = guest_mode(&pc, &mode, logged);
        println!("EVROUTE-DONE {}", if ok { "PASS" } else { "FAIL" });
        return;
    }
    if mode == "bench-notify" {
        let events = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(10_000);
        if let Err(e) = notify::bench(&pc, events).map(drop) {
            eprintln!("evroute-e2e bench-notify: {e}");
            std::process::exit(1);
        }
        return;
    }
    if ["domu", "domu-credit1", "domu-unpatched"].contains(&mode.as_str()) {
        let ok = domu::run_domu(&pc, &mode);
        println!("EVROUTE-DONE {}", if ok { "PASS" } else { "FAIL" });
        return;
    }
    if mode.starts_with("notify-") || mode.starts_with("shared-") {
        let ok = notify::run(&pc, &mode);
        println!("EVROUTE-DONE {}", if ok { "PASS" } else { "FAIL" });
        return;
    }
    if !["unpatched", "off", "running", "balanced"].contains(&mode.as_str()) {
        let guest: Vec<&str> = GUEST_MODES.iter().map(|(m, _)| *m).collect();
        eprintln!(
            "usage: evroute-e2e unpatched|off|running|balanced|domu|domu-credit1|domu-unpatched|domu-echo|{}|notify-{{off,poll,mwait}}|shared-{{off,poll}}|bench-notify [EVENTS]",
            guest.join("|")
        );
        std::process::exit(2);
    }
    let mut ok = true;
    ok &= abi(&pc, &mode);
    if mode == "off" || mode == "unpatched" {
        ok &= share(&pc, &format!("share-{mode}"), None, &mode);
    } else {
        ok &= share(&pc, "nothing-set", None, &mode);
        ok &= share(&pc, &format!("share-{mode}"), Some(ALL_VCPUS), &mode);
    }
    if mode == "running" || mode == "balanced" {
        ok &= crowd(&pc, &mode);
    }
    if mode == "running" {
        ok &= bad_input(&pc);
        ok &= storm(&pc);
        ok &= close_rebind(&pc);
    }
    println!("EVROUTE-DONE {}", if ok { "PASS" } else { "FAIL" });
}

/// dom0 on the patched kernel: each scenario of the mode, then the kernel
/// log must hold no warning of a lost, doubled or unmasked event.
fn guest_mode(pc: &Privcmd, mode: &str, logged: &str) -> bool {
    let mut ok = guest::probe_logged("probe-logged", logged);
    match mode {
        "guest-credit2" => {
            ok &= guest::affinity(pc);
            ok &= guest::hotplug(pc);
            ok &= guest::affinity_storm();
            ok &= disk::disk(pc, "credit2");
            ok &= ctl::evtchnctl(pc);
        }
        "guest-credit1" => ok &= disk::disk(pc, "credit1"),
        _ => ok &= guest::compat(pc, mode),
    }
    let log = linux::kernel_log().unwrap_or_default();
    let bad: Vec<&str> = log.lines().filter(|l| linux::BAD_LOG_LINES.iter().any(|w| l.contains(w))).collect();
    ok &= report("kernel-log", bad.is_empty(), format!("{} warning lines {bad:?}", bad.len()));
    ok
}

/// A loop-back pair in dom0: events notified on `tx_port` arrive on `rx_port`.
pub(crate) struct Pair {
    pub rx: Evtchn,
    pub tx: Evtchn,
    pub rx_port: u32,
    pub tx_port: u32,
}

impl Pair {
    pub fn new(rx_name: &str, tx_name: &str) -> std::io::Result<Pair> {
        let rx = Evtchn::open(rx_name)?;
        let rx_port = rx.bind_unbound()?;
        let tx = Evtchn::open(tx_name)?;
        let tx_port = tx.bind_interdomain(rx_port)?;
        // Binding sets the new local port pending ("we may have lost
        // notifications", evtchn_bind_interdomain): consume that event, or
        // a ping-pong starts one reply ahead and two pings can coalesce.
        let first = tx.wait(2000)?;
        if first != [tx_port] {
            return Err(std::io::Error::other(format!("port {tx_port}: expected the bind-time event, read {first:?}")));
        }
        tx.unmask(tx_port)?;
        Ok(Pair { rx, tx, rx_port, tx_port })
    }
}

/// The new operation answers as the option says: -EOPNOTSUPP when off; a
/// set that reads back when on.
fn abi(pc: &Privcmd, mode: &str) -> bool {
    let pair = Pair::new("evr-abi-rx", "evr-abi-tx").expect("loop-back pair");
    let r = pc.set_vcpu_set(pair.rx_port, 0b0110);
    if mode == "unpatched" {
        return report("abi-unpatched", r == Err(ENOSYS), format!("set_vcpu_set -> {r:?}, want Err({ENOSYS})"));
    }
    if mode == "off" {
        return report("abi-off", r == Err(EOPNOTSUPP), format!("set_vcpu_set -> {r:?}, want Err({EOPNOTSUPP})"));
    }
    let back = pc.get_vcpu_set(pair.rx_port);
    report("abi-set-get", r.is_ok() && back == Ok(0b0110), format!("set -> {r:?}, read back {back:?}"))
}

/// Pings from a busy vCPU to a channel Linux bound to an idle vCPU: where are
/// they handled, and how fast? With a set (`vcpus`) and routing on, at least
/// 90 % must be handled on a vCPU that was running; without one, all on the
/// bound vCPU, as on unpatched Xen.
fn share(pc: &Privcmd, name: &str, vcpus: Option<u64>, mode: &str) -> bool {
    const PINGS: usize = 600;
    let pair = Pair::new(&format!("evr-{}", &name[..name.len().min(10)]), "evr-sh-tx").expect("pair");
    if let Some(v) = vcpus {
        if let Err(e) = pc.set_vcpu_set(pair.rx_port, v) {
            return report(name, false, format!("set_vcpu_set: errno {e}"));
        }
    }
    let bound = pc.bound_vcpu(pair.rx_port).unwrap_or(u32::MAX) as usize;
    let before = irq_counts(&pair.rx.name).unwrap_or_default();
    let timers_before = timer_counts();
    let stat_before = cpu_times();
    // Debian's Xen has no perf counters (the dump would time out).
    let perf = mode != "unpatched";
    let perf_before = if perf { notify::counters(pc) } else { Default::default() };
    let Pair { rx, tx, rx_port, tx_port } = pair;
    let sent_at = AtomicU64::new(0);
    let acked = AtomicBool::new(true);
    let epoch = Instant::now();
    let mut lat = std::thread::scope(|s| {
        // Polls without sleeping, so its vCPU is running whenever an event
        // comes: the latency is Xen's delivery and dom0's interrupt path,
        // not Linux waking a thread.
        let receiver = s.spawn(|| {
            pin(BUSY[1]);
            let mut lat = Vec::with_capacity(PINGS);
            let mut idle_since = Instant::now();
            while lat.len() < PINGS && idle_since.elapsed() < Duration::from_secs(3) {
                match rx.wait(0) {
                    Ok(p) if !p.is_empty() => {
                        lat.push(epoch.elapsed().as_nanos() as u64 - sent_at.load(Ordering::Acquire));
                        rx.unmask(rx_port).expect("unmask");
                        acked.store(true, Ordering::Release);
                        idle_since = Instant::now();
                    }
                    Ok(_) => std::hint::spin_loop(),
                    Err(e) => panic!("wait: {e}"),
                }
            }
            lat
        });
        pin(BUSY[0]);
        for _ in 0..PINGS {
            while !acked.swap(false, Ordering::AcqRel) {
                std::hint::spin_loop();
            }
            // Stay busy between pings, so this vCPU is running when it sends.
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(200) {
                std::hint::spin_loop();
            }
            sent_at.store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
            tx.notify(tx_port).expect("notify");
        }
        receiver.join().expect("receiver")
    });
    let after = irq_counts(&rx.name).unwrap_or_default();
    let secs = epoch.elapsed().as_secs_f64();
    // How often each vCPU's guest timer fired: how often an idle vCPU wakes
    // (the simulator's housekeeping period is calibrated on it).
    let timer_hz: Vec<f64> = per_cpu_delta(&timer_counts(), &timers_before)
        .iter()
        .map(|&n| (n as f64 / secs * 10.0).round() / 10.0)
        .collect();
    let busy_share: Vec<f64> = cpu_times()
        .iter()
        .zip(&stat_before)
        .map(|(a, b)| {
            let (busy, all) = (a.0 - b.0, a.1 - b.1);
            if all == 0 {
                0.0
            } else {
                (busy as f64 / all as f64 * 1000.0).round() / 1000.0
            }
        })
        .collect();
    if perf {
        let perf_after = notify::counters(pc);
        let sched: Vec<String> = perf_after
            .keys()
            .filter(|k| k.starts_with("csched"))
            .map(|k| format!("{}={}", k.replace(' ', ""), notify::delta(&perf_after, &perf_before, k)))
            .collect();
        println!("EVROUTE-DETAIL scheduler counters during {name}: {}", sched.join(" "));
    }
    let counts = per_cpu_delta(&after, &before);
    let total: u64 = counts.iter().sum();
    let on_running: u64 = BUSY.iter().map(|&c| counts.get(c).copied().unwrap_or(0)).sum();
    let share = if total == 0 { 0.0 } else { on_running as f64 / total as f64 };
    lat.sort_unstable();
    let pct = |p: f64| percentile(&lat, p).map_or(0.0, |n| n as f64 / 1000.0);
    println!(
        "EVROUTE-METRIC scenario={name} mode={mode} bound_vcpu={bound} pings={} handled={total} per_vcpu={counts:?} running_share={share:.3} jain={:.3} p50_us={:.1} p99_us={:.1} timer_hz={timer_hz:?} busy_share={busy_share:?}",
        lat.len(),
        jain(&counts),
        pct(0.50),
        pct(0.99)
    );
    let complete = lat.len() == PINGS;
    let pass = match vcpus {
        None => complete && counts.get(bound).copied() == Some(total),
        Some(_) => complete && share >= 0.90,
    };
    let want =
        if vcpus.is_none() { format!("all on the bound vCPU {bound}") } else { ">= 90% on running vCPUs 2,3".into() };
    report(name, pass, format!("{}/{PINGS} delivered, per-vCPU {counts:?}, want {want}", lat.len()))
}

/// Per-vCPU counts of Xen's per-CPU timer VIRQ (`timer<N>`, taken only on
/// vCPU N); 0 where the line is missing.
fn timer_counts() -> Vec<u64> {
    (0..4)
        .map(|v| crate::linux::irq_row(&format!("timer{v}")).map_or(0, |r| r.dense().get(v).copied().unwrap_or(0)))
        .collect()
}

/// Per-vCPU (busy, busy + idle) jiffies from /proc/stat: the share of its
/// running time a vCPU spent out of Linux's idle loop (steal left out).
fn cpu_times() -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            // user nice system idle iowait irq softirq steal ...
            let f: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let get = |i: usize| f.get(i).copied().unwrap_or(0);
            let busy = get(0) + get(1) + get(2) + get(5) + get(6);
            (busy, busy + get(3) + get(4))
        })
        .collect()
}

/// Every error of the ABI table through privcmd, then 10,000 random bad
/// argument sets; afterwards the set is unchanged and the channel delivers.
fn bad_input(pc: &Privcmd) -> bool {
    let pair = Pair::new("evr-bad-rx", "evr-bad-tx").expect("pair");
    let good = 0b0101u64;
    pc.set_vcpu_set(pair.rx_port, good).expect("valid set");
    let freed = pc.alloc_unbound().expect("alloc_unbound");
    pc.close(freed).expect("close");
    let ipi = pc.bind_ipi(0).expect("bind_ipi");
    // A per-vCPU VIRQ Linux leaves unbound on vCPU 1.
    let virq = pc.bind_virq(xen_sys::VIRQ_DEBUG, 1).expect("bind_virq VIRQ_DEBUG");
    // Bitmaps of 1 KiB filled with one byte value, made once (Xen reads them).
    let byte = |b: u8| Box::leak(Box::new([b; 1024])).as_ptr() as u64;
    let (ones, zeros, all, high) = (byte(0x1), byte(0x0), byte(0xff), byte(0xf0));
    let p = pair.rx_port;
    // Xen's own mappings in a 64-bit PV guest's view (the direct map).
    let xen = 0xffff_8300_0000_0000u64;
    let cases: Vec<(&str, u32, u32, u32, u32, u64, i32)> = vec![
        ("port 0 (reserved)", 0, 0, 8, 0, ones, EINVAL),
        ("port beyond the table", 1 << 20, 0, 8, 0, ones, EINVAL),
        ("free port", freed, 0, 8, 0, ones, EINVAL),
        ("IPI channel", ipi, 0, 8, 0, ones, EINVAL),
        ("per-vCPU VIRQ channel", virq, 0, 8, 0, ones, EINVAL),
        ("unknown flag", p, 0x2, 8, 0, ones, EINVAL),
        ("pad not zero", p, 0, 8, 1, ones, EINVAL),
        ("nr_bits 0", p, 0, 0, 0, ones, EINVAL),
        ("nr_bits 8193", p, 0, 8193, 0, ones, EINVAL),
        ("bit beyond the vCPUs", p, 0, 16, 0, all, EINVAL),
        ("empty set", p, 0, 8, 0, zeros, EINVAL),
        ("unreadable bitmap", p, 0, 8, 0, 0x1, EFAULT),
        ("unwritable bitmap (get)", p, 1, 8, 0, 0x1, EFAULT),
        ("bitmap in Xen's range", p, 0, 8, 0, xen, EFAULT),
        ("bitmap in Xen's range (get)", p, 1, 8, 0, xen, EFAULT),
    ];
    let mut ok = true;
    for (what, port, flags, nr_bits, pad, addr, want) in &cases {
        let mut op = EvtchnSetVcpuSet { port: *port, flags: *flags, nr_bits: *nr_bits, pad: *pad, bitmap: *addr };
        let got = pc.vcpu_set_op(&mut op);
        if got != Err(*want) {
            ok = false;
            println!("EVROUTE-DETAIL bad-input {what}: got {got:?}, want Err({want})");
        }
    }
    let _ = pc.close(ipi);
    let _ = pc.close(virq);
    // Random invalid arguments: every call must fail, none may change a set.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut accepted = 0;
    for _ in 0..10_000 {
        let r = next();
        let (port, flags, nr_bits, pad, addr) = match r % 6 {
            0 => ((r >> 8) as u32 | 1 << 20, 0, 8, 0, ones),
            1 => (p, ((r >> 8) as u32) | 0x2, 8, 0, ones),
            2 => (p, 0, 8193 + (r >> 40) as u32 % 100_000, 0, ones),
            3 => (p, 0, 8, 0, 0x1000 + (r >> 20) % 0x1000),
            4 => (p, 0, 8, (r >> 32) as u32 | 1, ones),
            _ => (p, 0, 16, 0, high),
        };
        let mut op = EvtchnSetVcpuSet { port, flags, nr_bits, pad, bitmap: addr };
        if pc.vcpu_set_op(&mut op).is_ok() {
            accepted += 1;
        }
    }
    let kept = pc.get_vcpu_set(p);
    pair.tx.notify(pair.tx_port).expect("notify");
    let delivered = pair.rx.wait(3000).map(|v| v.contains(&p)).unwrap_or(false);
    report(
        "bad-input",
        ok && accepted == 0 && kept == Ok(good) && delivered,
        format!(
            "{} table cases, 10000 random: {accepted} accepted, set afterwards {kept:?} (want Ok({good})), still delivers: {delivered}",
            cases.len()
        ),
    )
}

/// Ping-pong while another thread keeps changing the set and priority: a
/// lost wake-up shows as a stall.
fn storm(pc: &Privcmd) -> bool {
    const ROUND_TRIPS: u32 = 2000;
    let Pair { rx, tx, rx_port, tx_port } = Pair::new("evr-storm-a", "evr-storm-b").expect("pair");
    let stop = AtomicBool::new(false);
    let (done, secs, changes, echoed) = std::thread::scope(|s| {
        let changer = s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let set = 1 + (i * 7) % 15; // every non-empty subset of 4 vCPUs
                let _ = pc.set_vcpu_set(rx_port, set);
                let _ = pc.set_vcpu_set(tx_port, 16 - set);
                let _ = pc.set_priority(rx_port, (i % 16) as u32);
                std::thread::sleep(Duration::from_micros(50));
            }
            i
        });
        let echo = s.spawn(move || {
            let mut n = 0;
            while n < ROUND_TRIPS {
                match rx.wait(5000) {
                    Ok(p) if !p.is_empty() => {
                        if p.len() > 1 {
                            println!("EVROUTE-DETAIL storm: echo read {p:?} at {n}");
                        }
                        n += p.len() as u32;
                        rx.unmask(rx_port).expect("unmask");
                        rx.notify(rx_port).expect("notify back");
                    }
                    _ => break,
                }
            }
            n
        });
        let mut done = 0;
        let t = Instant::now();
        while done < ROUND_TRIPS {
            tx.notify(tx_port).expect("notify");
            match tx.wait(5000) {
                Ok(p) if !p.is_empty() => {
                    if p.len() > 1 {
                        println!("EVROUTE-DETAIL storm: sender read {p:?} at {done}");
                    }
                    tx.unmask(tx_port).expect("unmask");
                    done += p.len() as u32;
                }
                r => {
                    println!("EVROUTE-DETAIL storm: sender wait -> {r:?} at {done}");
                    break;
                }
            }
        }
        let secs = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        (done, secs, changer.join().expect("changer"), echo.join().expect("echo"))
    });
    report(
        "storm",
        done == ROUND_TRIPS && echoed == ROUND_TRIPS,
        format!("{done}/{ROUND_TRIPS} replies received, {echoed} pings received, in {secs:.1}s while {changes} set/priority changes"),
    )
}

/// Crowding: four channels, each with a set of all vCPUs, raised back to
/// back by a thread on vCPU 2 and read by a poller on vCPU 3 (one event in
/// flight per channel). `running` keeps every event on the sender's own
/// vCPU, which is running; `balanced` must spread them once that vCPU has
/// taken its load bound within a period: no vCPU may handle more than 3/4.
fn crowd(pc: &Privcmd, mode: &str) -> bool {
    const CHANNELS: usize = 4;
    const EVENTS: u64 = 4000;
    let pairs: Vec<Pair> = (0..CHANNELS)
        .map(|k| Pair::new(&format!("evr-crowd-r{k}"), &format!("evr-crowd-t{k}")).expect("pair"))
        .collect();
    for p in &pairs {
        if let Err(e) = pc.set_vcpu_set(p.rx_port, ALL_VCPUS) {
            return report(&format!("crowd-{mode}"), false, format!("set_vcpu_set: errno {e}"));
        }
    }
    let before: Vec<Vec<u64>> = pairs.iter().map(|p| irq_counts(&p.rx.name).unwrap_or_default()).collect();
    let acked: Vec<AtomicBool> = (0..CHANNELS).map(|_| AtomicBool::new(true)).collect();
    let (mut rxs, mut txs) = (Vec::new(), Vec::new());
    for Pair { rx, tx, rx_port, tx_port } in pairs {
        rxs.push((rx, rx_port));
        txs.push((tx, tx_port));
    }
    let t = Instant::now();
    let (sent, got) = std::thread::scope(|s| {
        let acked = &acked;
        let rxs = &mut rxs;
        let receiver = s.spawn(move || {
            pin(BUSY[1]);
            let (mut got, mut idle_since) = (0u64, Instant::now());
            while got < EVENTS && idle_since.elapsed() < Duration::from_secs(3) {
                for (k, (rx, port)) in rxs.iter_mut().enumerate() {
                    if let Ok(p) = rx.wait(0) {
                        if !p.is_empty() {
                            got += p.len() as u64;
                            rx.unmask(*port).expect("unmask");
                            acked[k].store(true, Ordering::Release);
                            idle_since = Instant::now();
                        }
                    }
                }
            }
            got
        });
        pin(BUSY[0]);
        let mut sent = 0u64;
        let start = Instant::now();
        'send: while sent < EVENTS {
            for (k, (tx, port)) in txs.iter().enumerate() {
                if sent == EVENTS || start.elapsed() > Duration::from_secs(20) {
                    break 'send;
                }
                if acked[k].swap(false, Ordering::AcqRel) {
                    tx.notify(*port).expect("notify");
                    sent += 1;
                }
            }
        }
        (sent, receiver.join().expect("receiver"))
    });
    let secs = t.elapsed().as_secs_f64();
    let mut counts = vec![0u64; 4];
    for ((rx, _), b) in rxs.iter().zip(&before) {
        let d = per_cpu_delta(&irq_counts(&rx.name).unwrap_or_default(), b);
        counts.iter_mut().zip(d).for_each(|(c, n)| *c += n);
    }
    let total: u64 = counts.iter().sum();
    let max_share = if total == 0 { 0.0 } else { *counts.iter().max().unwrap_or(&0) as f64 / total as f64 };
    println!(
        "EVROUTE-METRIC scenario=crowd-{mode} sent={sent} received={got} handled={total} per_vcpu={counts:?} jain={:.3} max_share={max_share:.3} events_per_s={:.0}",
        jain(&counts),
        got as f64 / secs
    );
    let delivered = sent == EVENTS && got == EVENTS;
    let spread = mode != "balanced" || max_share <= 0.75;
    report(
        &format!("crowd-{mode}"),
        delivered && spread,
        format!(
            "{got}/{EVENTS} delivered, per-vCPU {counts:?}{}",
            if mode == "balanced" { format!(", largest share {max_share:.3} (want <= 0.75)") } else { String::new() }
        ),
    )
}

/// Close and rebind ports while events are in flight: nothing is delivered
/// on a port that is no longer bound, and Xen keeps working.
fn close_rebind(pc: &Privcmd) -> bool {
    let rx = Evtchn::open("evr-cr-rx").expect("evtchn");
    let tx = Evtchn::open("evr-cr-tx").expect("evtchn");
    let (mut stray, mut reused) = (0, 0);
    let mut last = None;
    for _ in 0..100 {
        // Drain what the previous binding delivered before it was closed.
        while rx.wait(0).map(|p| !p.is_empty()).unwrap_or(false) {}
        let a = rx.bind_unbound().expect("bind");
        reused += usize::from(last == Some(a));
        let b = tx.bind_interdomain(a).expect("bind");
        let _ = pc.set_vcpu_set(a, ALL_VCPUS);
        // Nothing may arrive on a fresh binding before it is notified: an
        // event still queued for a closed port must not reach its successor.
        stray += rx.wait(20).map(|ports| ports.len()).unwrap_or(0);
        for _ in 0..5 {
            let _ = tx.notify(b);
        }
        rx.unbind(a).expect("unbind");
        tx.unbind(b).expect("unbind");
        last = Some(a);
    }
    let pair = Pair::new("evr-cr2-rx", "evr-cr2-tx").expect("pair after rebinds");
    let _ = pc.set_vcpu_set(pair.rx_port, ALL_VCPUS);
    pair.tx.notify(pair.tx_port).expect("notify");
    let alive = pair.rx.wait(3000).map(|v| v.contains(&pair.rx_port)).unwrap_or(false);
    report("close-rebind", stray == 0 && alive, format!("100 close/rebind cycles ({reused} reused the port): {stray} stray deliveries, a fresh pair delivers: {alive}"))
}
