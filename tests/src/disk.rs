//! A real device's interrupt, from outside dom0's vCPUs: QEMU's virtio-blk
//! disk, whose completions reach dom0 as an MSI-X PIRQ. Random 4 KiB
//! O_DIRECT reads while every vCPU runs a busy loop, with the interrupt's
//! affinity one CPU (as Linux binds it today) and then all CPUs (a set):
//! completion latency, where Linux handled the interrupt, and where Xen
//! queued it (running, blocked or other vCPU, from the 'e' debug key).

use crate::linux::{effective, irq_row, set_affinity};
use crate::xen::{pin, Privcmd};
use crate::xenstat::{busiest_pirq, dom0_channels};
use crate::{per_cpu_delta, percentile, report, ALL_VCPUS};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The disk's request queue interrupt (one queue: QEMU's num-queues=1).
const DISK_IRQ_NAME: &str = "virtio0-req.0";
const BLOCK: usize = 4096;
/// Reads per phase and round, and the most time a phase-round may take.
const READS: usize = 800;
const PHASE_LIMIT: Duration = Duration::from_secs(10);
const ROUNDS: usize = 2;
/// The reader shares CPU 3 with a busy loop; "today" binds the interrupt
/// to CPU 0, the first of the default mask.
const READER_CPU: usize = 3;
const SINGLE: u64 = 0b0001;

#[derive(Default)]
struct Phase {
    lat_us: Vec<f64>,
    per_vcpu: Vec<u64>,
    routed: [u64; 3],
    port: Option<u32>,
}

pub fn disk(pc: &Privcmd, sched: &str) -> bool {
    let irq = match irq_row(DISK_IRQ_NAME) {
        Ok(r) => r.irq,
        Err(e) => return report(&format!("disk-{sched}"), false, format!("no disk interrupt: {e}")),
    };
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open("/dev/vda").expect("/dev/vda");
    let size = {
        use std::io::Seek;
        (&file).seek(std::io::SeekFrom::End(0)).expect("disk size")
    };
    let blocks = size / BLOCK as u64;
    let layout = std::alloc::Layout::from_size_align(BLOCK, BLOCK).expect("layout");
    // SAFETY: a non-zero size; freed below with the same layout.
    let ptr = unsafe { std::alloc::alloc(layout) };
    assert!(!ptr.is_null(), "4 KiB aligned buffer");
    // SAFETY: ptr is BLOCK bytes, live until dealloc below, used by this thread only.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, BLOCK) };

    let stop = AtomicBool::new(false);
    let mut phases = [Phase::default(), Phase::default()];
    let mut ok = true;
    let mut notes = Vec::new();
    std::thread::scope(|s| {
        for cpu in 0..4 {
            let stop = &stop;
            s.spawn(move || {
                pin(cpu);
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        pin(READER_CPU);
        let mut rng = 0x853c_49e6_748f_ea9bu64;
        for round in 0..ROUNDS {
            for (which, mask) in [(0, SINGLE), (1, ALL_VCPUS)] {
                let ph = &mut phases[which];
                ok &= set_affinity(irq, mask).is_ok();
                let eff = effective(irq).unwrap_or(0);
                if eff != mask {
                    ok = false;
                    notes.push(format!("round {round}: echo {mask:x} gave effective {eff:#x}"));
                }
                let (irq_before, xen_before) = (irq_row(DISK_IRQ_NAME).map(|r| r.dense()), dom0_channels(pc));
                let t = Instant::now();
                for _ in 0..READS {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let off = (rng % blocks) * BLOCK as u64;
                    let r = Instant::now();
                    file.read_exact_at(buf, off).expect("O_DIRECT read");
                    ph.lat_us.push(r.elapsed().as_secs_f64() * 1e6);
                    if t.elapsed() > PHASE_LIMIT {
                        break;
                    }
                }
                let (irq_after, xen_after) = (irq_row(DISK_IRQ_NAME).map(|r| r.dense()), dom0_channels(pc));
                if let (Ok(b), Ok(a)) = (irq_before, irq_after) {
                    let d = per_cpu_delta(&a, &b);
                    ph.per_vcpu.resize(d.len().max(ph.per_vcpu.len()), 0);
                    ph.per_vcpu.iter_mut().zip(d).for_each(|(sum, n)| *sum += n);
                }
                match (xen_before, xen_after) {
                    (Ok(b), Ok(a)) => match busiest_pirq(&b, &a) {
                        Some((port, d)) => {
                            if ph.port.is_some_and(|p| p != port) {
                                notes.push(format!("the busiest PIRQ changed from port {:?} to {port}", ph.port));
                                ok = false;
                            }
                            ph.port = Some(port);
                            (0..3).for_each(|i| ph.routed[i] += d[i]);
                        }
                        None => {
                            ok = false;
                            notes.push("no PIRQ channel in Xen's dump".into());
                        }
                    },
                    (b, a) => {
                        ok = false;
                        notes.push(format!("Xen's counts unavailable: {:?} {:?}", b.err(), a.err()));
                    }
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    // SAFETY: allocated above with this layout; `buf` is not used after this.
    unsafe { std::alloc::dealloc(ptr, layout) };

    let mut shares = [0.0; 2];
    for (i, (label, ph)) in ["single", "set"].iter().zip(phases.iter_mut()).enumerate() {
        ph.lat_us.sort_by(f64::total_cmp);
        let pct = |p: f64| percentile(&ph.lat_us, p).unwrap_or(0.0);
        let total: u64 = ph.routed.iter().sum();
        shares[i] = if total == 0 { 0.0 } else { ph.routed[0] as f64 / total as f64 };
        println!(
            "EVROUTE-METRIC scenario=disk-{sched}-{label} reads={} p50_us={:.1} p99_us={:.1} per_vcpu={:?} port={} routed=[{}/{}/{}] running_share={:.3}",
            ph.lat_us.len(),
            pct(0.50),
            pct(0.99),
            ph.per_vcpu,
            ph.port.map_or("?".into(), |p| p.to_string()),
            ph.routed[0],
            ph.routed[1],
            ph.routed[2],
            shares[i]
        );
    }
    let enough = phases.iter().all(|p| p.lat_us.len() >= 200);
    report(
        &format!("disk-{sched}"),
        ok && enough && shares[1] >= 0.90,
        format!(
            "Xen queued the disk's interrupt on a running vCPU: set {:.3} (want >= 0.90), one CPU {:.3}; {} + {} reads{}",
            shares[1],
            shares[0],
            phases[0].lat_us.len(),
            phases[1].lat_us.len(),
            if notes.is_empty() { String::new() } else { format!("; {}", notes.join("; ")) }
        ),
    )
}
