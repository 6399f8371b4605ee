//! What dom0's own kernel shows and takes: /proc/interrupts, an IRQ's
//! affinity files, CPU hotplug, the kernel log.

use std::io;

/// One row of /proc/interrupts: the IRQ number and its count per CPU id
/// (`None` for a CPU not shown, i.e. offline).
pub struct IrqRow {
    pub irq: u32,
    pub counts: Vec<Option<u64>>,
}

impl IrqRow {
    /// Counts per CPU id, an offline CPU as 0.
    pub fn dense(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.unwrap_or(0)).collect()
    }
}

/// The /proc/interrupts row whose name (last field) is `name`. The header
/// names the CPUs shown: offline CPUs have no column.
pub fn irq_row(name: &str) -> io::Result<IrqRow> {
    let text = std::fs::read_to_string("/proc/interrupts")?;
    let mut lines = text.lines();
    let cpus: Vec<usize> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.strip_prefix("CPU")?.parse().ok())
        .collect();
    let line = lines
        .find(|l| l.split_whitespace().last() == Some(name))
        .ok_or_else(|| io::Error::other(format!("{name} not in /proc/interrupts")))?;
    let mut fields = line.split_whitespace();
    let irq = fields
        .next()
        .and_then(|f| f.strip_suffix(':'))
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other(format!("{name}: no IRQ number in '{line}'")))?;
    let width = cpus.iter().max().map_or(0, |m| m + 1);
    let mut counts = vec![None; width];
    for (cpu, field) in cpus.iter().zip(fields) {
        counts[*cpu] = field.parse().ok();
    }
    Ok(IrqRow { irq, counts })
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
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists_parse_as_linux_prints_them() {
        assert_eq!(parse_cpu_list("0-3"), Some(0b1111));
        assert_eq!(parse_cpu_list("2"), Some(0b100));
        assert_eq!(parse_cpu_list("0,2-3"), Some(0b1101));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }
}
