//! The domU's side of the cross-domain scenario (`evroute-e2e domu-echo`,
//! run by the domU's init): allocate a channel for dom0, publish its port
//! in xenstore, echo every ping, and obey dom0's commands (written to
//! `data/cmd`, answered in `data/ack`).
//!
//! Commands, `SEQ VERB [MASK]`: `report` answers the echo interrupt's
//! per-vCPU counts; `echo MASK` writes the echo interrupt's affinity
//! first, `all MASK` that of every per-OS interrupt of the guest.

use crate::linux::set_affinity;
use crate::xen::{irq_counts, irq_of, pin, Evtchn};
use crate::xenstore::Xenstore;
use std::time::Duration;

const NAME: &str = "evr-echo";

/// Put the calling thread in SCHED_FIFO: once woken, the echo runs before
/// anything else of its vCPU.
fn realtime() -> std::io::Result<()> {
    let p = libc::sched_param { sched_priority: 10 };
    // SAFETY: sets this thread's policy from a live sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The per-OS (`xen-dyn`) interrupts of this guest: its channels to other
/// domains.
fn per_os_irqs() -> Vec<u32> {
    let text = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("xen-dyn"))
        .filter_map(|l| l.split_whitespace().next()?.strip_suffix(':')?.parse().ok())
        .collect()
}

/// Carry out one command; the answer for `data/ack`.
fn obey(verb: &str, mask: Option<u64>, echo_irq: u32) -> String {
    let counts = || irq_counts(NAME);
    let (irqs, mask) = match (verb, mask) {
        ("report", _) => (vec![], 0),
        ("echo", Some(m)) => (vec![echo_irq], m),
        ("all", Some(m)) => (per_os_irqs(), m),
        _ => return format!("error: unknown command '{verb} {mask:?}'"),
    };
    let failed: Vec<String> =
        irqs.iter().filter_map(|&i| set_affinity(i, mask).err().map(|e| format!("IRQ {i}: {e}"))).collect();
    if !failed.is_empty() {
        return format!("error: affinity {mask:x}: {}", failed.join("; "));
    }
    match counts() {
        Ok(c) => format!("ok set={} counts={}", irqs.len(), c.iter().map(u64::to_string).collect::<Vec<_>>().join(",")),
        Err(e) => format!("error: {e}"),
    }
}

pub fn run() -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let busy = std::fs::read_to_string("/proc/cmdline").unwrap_or_default().contains("evroute.busy=1");
    let ev = Evtchn::open(NAME).map_err(|e| format!("/dev/xen/evtchn: {e}"))?;
    // remote domain 0: a channel dom0 may bind.
    let port = ev.bind_unbound().map_err(|e| format!("bind unbound port for dom0: {e}"))?;
    ev.set_nonblocking().map_err(|e| e.to_string())?;
    let irq = irq_of(NAME).map_err(|e| e.to_string())?;
    // Published before any echo thread starts: a failure here ends the
    // tool with its reason on the console (dom0 binds only after it).
    let mut xs = Xenstore::open().map_err(|e| format!("xenstore: {e}"))?;
    for (k, v) in [("data/port", port.to_string()), ("data/irq", irq.to_string())] {
        xs.write(k, &v).map_err(|e| format!("xenstore write {k}: {e}"))?;
    }
    println!("EVROUTE-ECHO port={port} irq={irq} cpus={cpus} busy={busy}");
    let ev = &ev;
    std::thread::scope(|s| {
        // Busy: a poller spinning on the device on every vCPU (the guest's
        // busy loops); whichever vCPU takes the interrupt, a running
        // poller echoes at once. Idle: one thread sleeping in the device,
        // as a driver waits for its interrupt (one per vCPU would wake
        // every vCPU for each event).
        let pollers = if busy { cpus } else { 1 };
        for cpu in 0..pollers {
            s.spawn(move || {
                if busy {
                    pin(cpu);
                } else if let Err(e) = realtime() {
                    println!("EVROUTE-ECHO SCHED_FIFO: {e}");
                }
                let timeout = if busy { 0 } else { -1 };
                loop {
                    match ev.wait(timeout) {
                        Ok(ports) => {
                            for p in ports {
                                // Unmask first: dom0 sends the next ping
                                // only once this one is answered.
                                let r = ev.unmask(p).and_then(|()| ev.notify(p));
                                if let Err(e) = r {
                                    println!("EVROUTE-ECHO port {p}: {e}");
                                }
                            }
                        }
                        Err(e) => {
                            // Say it, then slowly: an error that stays
                            // (a ring overflow) must not flood the console.
                            println!("EVROUTE-ECHO wait: {e}");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            });
        }
        let mut last = String::new();
        let mut said = false;
        loop {
            // Seldom: each read wakes xenstored in dom0, which would take
            // pCPU time from the guests under test.
            std::thread::sleep(Duration::from_millis(250));
            let cmd = match xs.read("data/cmd") {
                Ok(c) => c,
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::NotFound && !said {
                        println!("EVROUTE-ECHO xenstore read data/cmd: {e}");
                        said = true;
                    }
                    continue;
                }
            };
            let mut f = cmd.split_whitespace();
            let (Some(seq), Some(verb)) = (f.next(), f.next()) else { continue };
            if seq == last {
                continue;
            }
            let mask = f.next().and_then(|m| u64::from_str_radix(m, 16).ok());
            let answer = obey(verb, mask, irq);
            if let Err(e) = xs.write("data/ack", &format!("{seq} {answer}")) {
                println!("EVROUTE-ECHO xenstore write data/ack: {e}");
            }
            last = seq.to_string();
        }
    })
}

/// A guest's answer: `ok set=N counts=C0,C1,...` (interrupts given the
/// mask, the echo interrupt's per-vCPU counts) or `error: ...`.
pub fn parse_ack(ack: &str) -> Result<(usize, Vec<u64>), String> {
    let rest = ack.strip_prefix("ok ").ok_or_else(|| format!("the guest says '{ack}'"))?;
    let field = |k: &str| rest.split_whitespace().find_map(|f| f.strip_prefix(k));
    let set = field("set=").and_then(|n| n.parse().ok());
    let counts: Option<Vec<u64>> = field("counts=").and_then(|c| c.split(',').map(|n| n.parse().ok()).collect());
    match (set, counts) {
        (Some(s), Some(c)) => Ok((s, c)),
        _ => Err(format!("bad answer '{ack}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_errors_are_passed_on() {
        assert_eq!(parse_ack("ok set=3 counts=0,12,7,1"), Ok((3, vec![0, 12, 7, 1])));
        assert!(parse_ack("error: affinity f: IRQ 5: Invalid argument").unwrap_err().contains("IRQ 5"));
        assert!(parse_ack("ok set=1 counts=0,x").is_err());
        assert!(parse_ack("ok counts=1").is_err());
    }
}
