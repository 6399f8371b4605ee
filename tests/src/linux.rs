//! What dom0's own kernel shows and takes: /proc/interrupts, an IRQ's
//! affinity files, CPU hotplug, the kernel log.

use std::io;

/// One row of /proc/interrupts: the IRQ number, its count per CPU id
/// (`None` for a CPU not shown, i.e. offline), and what follows the counts.
pub struct IrqRow {
    pub irq: u32,
    pub counts: Vec<Option<u64>>,
    /// The chip's name (`xen-dyn`, `xen-pirq`, ...).
    pub chip: String,
    /// The event channel's port, which a Xen IRQ shows after its chip's
    /// name on a kernel with the guest series (none on others).
    pub port: Option<u32>,
    /// The handlers' names: for a Xen IRQ all that follows its flow
    /// (`-event`), elsewhere the last field.
    pub name: String,
}

impl IrqRow {
    /// Counts per CPU id, an offline CPU as 0.
    pub fn dense(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.unwrap_or(0)).collect()
    }
}

/// Every numbered row of /proc/interrupts. The header names the CPUs
/// shown: offline CPUs have no column.
pub fn interrupts() -> io::Result<Vec<IrqRow>> {
    Ok(parse_interrupts(&std::fs::read_to_string("/proc/interrupts")?))
}

pub fn parse_interrupts(text: &str) -> Vec<IrqRow> {
    let mut lines = text.lines();
    let cpus: Vec<usize> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.strip_prefix("CPU")?.parse().ok())
        .collect();
    let width = cpus.iter().max().map_or(0, |m| m + 1);
    let mut rows = Vec::new();
    for line in lines {
        let mut fields = line.split_whitespace();
        // Rows such as "NMI:" or "ERR:" are not IRQs.
        let Some(irq) = fields.next().and_then(|f| f.strip_suffix(':')).and_then(|f| f.parse().ok()) else {
            continue;
        };
        let mut counts = vec![None; width];
        for (cpu, field) in cpus.iter().zip(fields.by_ref()) {
            counts[*cpu] = field.parse().ok();
        }
        let rest: Vec<&str> = fields.collect();
        let chip = rest.first().copied().unwrap_or_default().to_string();
        let xen = chip.starts_with("xen-");
        let port = if xen { rest.get(1).and_then(|f| f.parse().ok()) } else { None };
        // A Xen IRQ's flow ("-event", "-edge") comes before its handlers'
        // names, which may hold spaces and commas; elsewhere the last field.
        let name = match rest.iter().position(|f| f.starts_with('-')) {
            Some(flow) if xen => rest[flow + 1..].join(" "),
            _ if rest.len() > 1 => rest.last().copied().unwrap_or_default().to_string(),
            _ => String::new(),
        };
        rows.push(IrqRow { irq, counts, chip, port, name });
    }
    rows
}

/// The /proc/interrupts row whose handlers' names are `name`.
pub fn irq_row(name: &str) -> io::Result<IrqRow> {
    interrupts()?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| io::Error::other(format!("{name} not in /proc/interrupts")))
}

/// Write `/proc/irq/N/smp_affinity` (a hex CPU mask).
pub fn set_affinity(irq: u32, mask: u64) -> io::Result<()> {
    std::fs::write(format!("/proc/irq/{irq}/smp_affinity"), format!("{mask:x}\n"))
}

/// `/proc/irq/N/effective_affinity_list` as a mask.
pub fn effective(irq: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/irq/{irq}/effective_affinity_list"))?;
    parse_cpu_list(text.trim()).ok_or_else(|| io::Error::other(format!("IRQ {irq}: bad CPU list '{}'", text.trim())))
}

/// "0-2,5" as a mask.
pub fn parse_cpu_list(s: &str) -> Option<u64> {
    let mut m = 0u64;
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        if a > b || b >= 64 {
            return None;
        }
        for c in a..=b {
            m |= 1 << c;
        }
    }
    Some(m)
}

/// Take a CPU offline or bring it back (`/sys/devices/system/cpu/cpuN/online`).
pub fn cpu_online(cpu: usize, on: bool) -> io::Result<()> {
    std::fs::write(format!("/sys/devices/system/cpu/cpu{cpu}/online"), if on { "1\n" } else { "0\n" })
}

/// The kernel's log buffer as it stands (`SYSLOG_ACTION_READ_ALL`).
pub fn kernel_log() -> io::Result<String> {
    let mut buf = vec![0u8; 256 * 1024];
    // SAFETY: READ_ALL writes at most buf.len() bytes into buf.
    let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), buf.len() as libc::c_int) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Kernel log lines that mean an event was lost, handled twice or handled
/// while it should have been masked.
pub const BAD_LOG_LINES: [&str; 5] =
    ["apparently not enabled", "spurious", "Dropping pending event", "lost event", "WARNING"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_linux_prints_them() {
        assert_eq!(parse_cpu_list("0-3"), Some(0b1111));
        assert_eq!(parse_cpu_list("2"), Some(0b100));
        assert_eq!(parse_cpu_list("0,2-3"), Some(0b1101));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn xen_rows_give_their_port_when_the_kernel_shows_it() {
        let text = "           CPU0       CPU1       CPU3\n\
            \x20 24:        5          0          7   xen-dyn    17    -event     evtchn:evr-rx\n\
            \x20 25:        1          2          3   xen-dyn        -event     xenbus\n\
            \x20 30:        9          0          0   xen-pirq   40    -ioapic-level  ata_piix, uhci_hcd:usb1\n\
            \x20 31:        0          0          0   xen-dyn    41    -event\n\
            \x20  0:       30          0          0   IO-APIC   2-edge      timer\n\
            NMI:          0          0          0   Non-maskable interrupts\n";
        let rows = parse_interrupts(text);
        assert_eq!(rows.len(), 5);
        assert_eq!((rows[0].irq, rows[0].port, rows[0].name.as_str()), (24, Some(17), "evtchn:evr-rx"));
        assert_eq!(rows[0].counts, [Some(5), Some(0), None, Some(7)]);
        assert_eq!((rows[1].chip.as_str(), rows[1].port), ("xen-dyn", None));
        assert_eq!((rows[2].port, rows[2].name.as_str()), (Some(40), "ata_piix, uhci_hcd:usb1"));
        assert_eq!((rows[3].port, rows[3].name.as_str()), (Some(41), ""));
        assert_eq!((rows[4].chip.as_str(), rows[4].port, rows[4].name.as_str()), ("IO-APIC", None, "timer"));
    }
}
