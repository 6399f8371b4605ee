//! `evtchnctl`: a domain's event channels as Xen and Linux see them, and
//! their vCPU sets, for operators. Runs in dom0 or a guest, over
//! `/dev/xen/privcmd`, on the caller's own channels.
//!
//! The Linux side (IRQ, name, affinity, per-CPU counts) is joined by port
//! from /proc/interrupts, which shows a Xen IRQ's port on a kernel with
//! evroute's guest series; elsewhere those columns stay empty.

use clap::{Parser, Subcommand};
use evroute_guest::abi::{errno, Port};
use evroute_guest::vcpu_set::{errno_name, explain, SetError};
use evroute_guest::VcpuSet;
use evroute_tests::linux::{self, IrqRow};
use evroute_tests::xen::{Channel, Privcmd};
use serde::Serialize;
use std::process::ExitCode;
use xen_sys as xs;

#[derive(Parser)]
#[command(about = "See and change event channels' vCPU sets (EVTCHNOP_set_vcpu_set)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the caller's per-OS channels: port, kind, Linux IRQ, name,
    /// affinity, Xen's set, bound vCPU, events handled per CPU.
    Show {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Give a channel a vCPU set (Xen vCPU ids). A channel Linux has an
    /// IRQ for is refused without --force: write its
    /// /proc/irq/N/smp_affinity instead, which Linux turns into the set
    /// (guest series) and keeps its own records of.
    Set {
        /// A port, or `irqN` for the channel behind Linux IRQ N.
        target: String,
        /// vCPU ids, as `0-3,6`.
        cpulist: String,
        /// Give the set even though Linux handles the channel: Linux's
        /// record of the bound vCPU may then be stale, and a kernel without
        /// the guest series does not expect an event on several CPUs.
        #[arg(long)]
        force: bool,
    },
    /// Print a channel's vCPU set as Xen holds it.
    Get {
        /// A port, or `irqN`.
        target: String,
    },
}

/// One line of `show`.
#[derive(Serialize)]
struct Row {
    port: Port,
    kind: String,
    irq: Option<u32>,
    name: Option<String>,
    /// Linux's affinity (`smp_affinity_list`).
    affinity: Option<String>,
    /// Xen's set (vCPU ids, a CPU list), or `xen_set_error` says why not.
    xen_set: Option<String>,
    xen_set_error: Option<String>,
    /// The vCPU id Xen keeps the channel bound to.
    bound_vcpu: u32,
    /// /proc/interrupts' count per Linux CPU number (an offline CPU as 0).
    handled: Vec<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let pc = match Privcmd::open() {
        Ok(pc) => pc,
        Err(e) => {
            eprintln!("evtchnctl: cannot open /dev/xen/privcmd: {e} (not in a Xen domain, or xen-privcmd not loaded)");
            return ExitCode::FAILURE;
        }
    };
    let done = match cli.cmd {
        Cmd::Show { json } => show(&pc, json),
        Cmd::Set { target, cpulist, force } => set(&pc, &target, &cpulist, force),
        Cmd::Get { target } => get(&pc, &target),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evtchnctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The channel a `PORT` or `irqN` argument names.
fn port_of(target: &str, irqs: &[IrqRow]) -> Result<Port, String> {
    if let Some(n) = target.strip_prefix("irq") {
        let irq: u32 = n.parse().map_err(|_| format!("'{target}': expected irqN, N a Linux IRQ number"))?;
        let row = irqs.iter().find(|r| r.irq == irq).ok_or(format!("IRQ {irq} is not in /proc/interrupts"))?;
        return row.port.ok_or(format!(
            "IRQ {irq} ({} {}) shows no event channel port in /proc/interrupts: not a Xen IRQ, or a kernel \
             without the guest series; give the port instead",
            row.chip, row.name
        ));
    }
    target.parse().map_err(|_| format!("'{target}': expected a port number or irqN"))
}

fn xen_error(what: &str, e: SetError) -> String {
    format!("{what}: {e}")
}

fn interrupts() -> Result<Vec<IrqRow>, String> {
    linux::interrupts().map_err(|e| format!("/proc/interrupts: {e}"))
}

fn set(pc: &Privcmd, target: &str, cpulist: &str, force: bool) -> Result<(), String> {
    let irqs = interrupts()?;
    let port = port_of(target, &irqs)?;
    let set = VcpuSet::parse_list(cpulist).map_err(|e| format!("CPULIST '{cpulist}': {e}"))?;
    if let Some(row) = irqs.iter().find(|r| r.port == Some(port)).filter(|_| !force) {
        return Err(format!(
            "port {port} is Linux's IRQ {} ({}): write /proc/irq/{}/smp_affinity_list instead, or give --force",
            row.irq, row.name, row.irq
        ));
    }
    // Xen reports the domain's vCPU count with the set it holds; where it
    // will not read the set back, the set itself gets Xen's answer.
    let nr_vcpus = VcpuSet::new().fetch(pc, port).unwrap_or(evroute_guest::abi::MAX_VCPUS);
    set.give(pc, port, nr_vcpus).map_err(|e| xen_error(&format!("set port {port} to {{{set}}}"), e))?;
    let bound = pc.bound_vcpu(port).map_or_else(|e| format!("? ({})", errno_name(e)), |v| v.to_string());
    println!("port {port}: set {set} (bound vCPU {bound})");
    Ok(())
}

fn get(pc: &Privcmd, target: &str) -> Result<(), String> {
    let port = port_of(target, &interrupts()?)?;
    let mut set = VcpuSet::new();
    let nr_vcpus = set.fetch(pc, port).map_err(|e| xen_error(&format!("port {port}"), e))?;
    println!("port {port}: {set} (of {nr_vcpus} vCPUs)");
    Ok(())
}

/// Xen's per-vCPU VIRQs (`virq_is_global()` false): timer, debug,
/// xenoprof, xenpmu. Every other VIRQ is global, so per-OS.
const PER_VCPU_VIRQS: [u32; 4] = [0, 1, 7, 13];

/// The per-OS channels: all but IPIs and per-vCPU VIRQs.
fn rows(pc: &Privcmd) -> Result<Vec<Row>, String> {
    let irqs = interrupts()?;
    let mut rows = Vec::new();
    for port in 1..evroute_guest::abi::NR_CHANNELS {
        let c: Channel = match pc.channel(port) {
            Ok(c) => c,
            // Past the domain's ports.
            Err(errno::EINVAL) => break,
            // A security policy may hide one channel; show the others.
            Err(e) => {
                eprintln!("evtchnctl: port {port}: EVTCHNOP_status refused: {}", errno_name(e));
                continue;
            }
        };
        let per_vcpu = c.state == xs::EVTCHNSTAT_ipi || c.virq.is_some_and(|v| PER_VCPU_VIRQS.contains(&v));
        if c.state == xs::EVTCHNSTAT_closed || per_vcpu {
            continue;
        }
        let mut set = VcpuSet::new();
        let (xen_set, xen_set_error) = match set.fetch(pc, port) {
            Ok(_) => (Some(set.to_string()), None),
            Err(SetError::Xen(e)) => (None, Some(format!("{} ({})", errno_name(e), explain(e)))),
            Err(e) => (None, Some(e.to_string())),
        };
        let irq = irqs.iter().find(|r| r.port == Some(port));
        let affinity = irq.and_then(|r| std::fs::read_to_string(format!("/proc/irq/{}/smp_affinity_list", r.irq)).ok());
        rows.push(Row {
            port,
            kind: c.kind(),
            irq: irq.map(|r| r.irq),
            name: irq.map(|r| r.name.clone()),
            affinity: affinity.map(|a| a.trim().to_string()),
            xen_set,
            xen_set_error,
            bound_vcpu: c.vcpu,
            handled: irq.map(IrqRow::dense).unwrap_or_default(),
        });
    }
    Ok(rows)
}

fn show(pc: &Privcmd, json: bool) -> Result<(), String> {
    let rows = rows(pc)?;
    if json {
        println!("{}", serde_json::to_string(&rows).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!(
        "{:>5}  {:<30} {:>4}  {:<24} {:<9} {:<9} {:>5}  handled per CPU",
        "port", "kind", "irq", "name", "affinity", "xen set", "bound"
    );
    let dash = || "-".to_string();
    for r in &rows {
        println!(
            "{:>5}  {:<30} {:>4}  {:<24} {:<9} {:<9} {:>5}  {}",
            r.port,
            r.kind,
            r.irq.map_or_else(dash, |i| i.to_string()),
            r.name.clone().unwrap_or_else(dash),
            r.affinity.clone().unwrap_or_else(dash),
            r.xen_set
                .clone()
                .or_else(|| r.xen_set_error.as_ref().map(|e| e.split(' ').next().unwrap_or("-").to_string()))
                .unwrap_or_else(dash),
            r.bound_vcpu,
            r.handled.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
        );
    }
    if rows.iter().all(|r| r.irq.is_none()) && !rows.is_empty() {
        println!("(no Xen IRQ shows its port in /proc/interrupts: a kernel without the guest series)");
    }
    Ok(())
}
