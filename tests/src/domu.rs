//! A second domain through Debian's Xen toolstack (the `domu` boot): dom0
//! starts xenstored, xen-init-dom0 and xenconsoled as its init scripts
//! would, then `xl create`s a 4-vCPU PV domU from its own kernel and a
//! small initramfs, lists it, destroys it, and creates it once more.

use crate::report;
use std::process::Command;
use std::time::{Duration, Instant};

const XEN_BIN: &str = "/usr/lib/xen-4.17/bin";
const CONFIG: &str = "/etc/xen/d1.cfg";
const VCPUS: usize = 4;
/// How long a domU may take to reach its init under TCG.
const UP_WITHIN: Duration = Duration::from_secs(120);

/// Run a toolstack binary; its exit status and output (stdout then stderr).
fn run(bin: &str, args: &[&str]) -> (bool, String) {
    match Command::new(format!("{XEN_BIN}/{bin}")).args(args).output() {
        Ok(o) => (
            o.status.success(),
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        ),
        Err(e) => (false, format!("{bin}: {e}")),
    }
}

/// Start a daemon that forks into the background: its output is not
/// piped, or waiting for the pipe to close would wait for the daemon.
fn start(bin: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Stdio::null;
    match Command::new(format!("{XEN_BIN}/{bin}")).args(args).stdin(out()).stdout(out()).stderr(out()).status() {
        Ok(st) => (st.success(), format!("{bin}: {st}")),
        Err(e) => (false, format!("{bin}: {e}")),
    }
}

/// Xen's free memory in MiB (`xl info`).
fn free_mib() -> Option<u64> {
    run("xl", &["info"]).1.lines().find_map(|l| l.strip_prefix("free_memory")?.split(':').nth(1)?.trim().parse().ok())
}

/// The `xl list` row of `name`: its vCPU count.
fn listed_vcpus(name: &str) -> Option<usize> {
    let (_, out) = run("xl", &["list"]);
    out.lines().find(|l| l.split_whitespace().next() == Some(name))?.split_whitespace().nth(3)?.parse().ok()
}

/// Create d1 and wait for its init to report on its console.
fn create() -> Result<f64, String> {
    let _ = std::fs::remove_file("/var/log/xen/guest-d1.log");
    let t = Instant::now();
    let (ok, out) = run("xl", &["create", CONFIG]);
    if !ok {
        return Err(format!("xl create: {}", out.trim()));
    }
    while t.elapsed() < UP_WITHIN {
        let log = std::fs::read_to_string("/var/log/xen/guest-d1.log").unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.contains("EVROUTE-DOMU-UP")) {
            return if l.contains(&format!("cpus={VCPUS}")) {
                Ok(t.elapsed().as_secs_f64())
            } else {
                Err(format!("the domU says '{}', want cpus={VCPUS}", l.trim()))
            };
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("no EVROUTE-DOMU-UP on d1's console within {}s", UP_WITHIN.as_secs()))
}

/// Destroy d1; true once it is gone and Xen's free memory is `want` again.
fn destroy(want: Option<u64>) -> (bool, String) {
    let (ok, out) = run("xl", &["destroy", "d1"]);
    let t = Instant::now();
    let mut free = free_mib();
    while (listed_vcpus("d1").is_some() || free != want) && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(250));
        free = free_mib();
    }
    let gone = listed_vcpus("d1").is_none();
    (
        ok && gone && free == want,
        format!("destroy ok {ok} ({}), gone {gone}, free {free:?} MiB, want {want:?}", out.trim()),
    )
}

pub fn run_domu() -> bool {
    let cfg = format!(
        "name = \"d1\"\ntype = \"pv\"\nkernel = \"/domu/vmlinuz\"\nramdisk = \"/domu/initrd.gz\"\n\
         extra = \"console=hvc0 quiet\"\nmemory = 256\nvcpus = {VCPUS}\non_poweroff = \"destroy\"\non_crash = \"destroy\"\n"
    );
    if let Err(e) = std::fs::write(CONFIG, cfg) {
        return report("toolstack", false, format!("{CONFIG}: {e}"));
    }
    println!("EVROUTE-DETAIL domu: starting xenstored, xen-init-dom0, xenconsoled");
    let daemons = [
        start("xenstored", &["--pid-file", "/run/xenstored.pid"]),
        run("xen-init-dom0", &[]),
        start("xenconsoled", &["--pid-file=/run/xenconsoled.pid", "--log=guest", "--log-dir=/var/log/xen"]),
    ];
    let started = daemons.iter().all(|(ok, _)| *ok);
    let dom0 = listed_vcpus("Domain-0");
    let mut ok = report(
        "toolstack",
        started && dom0.is_some(),
        format!(
            "xenstored, xen-init-dom0, xenconsoled started: {started}; xl list shows Domain-0 with {dom0:?} vCPUs{}",
            daemons.iter().filter(|(ok, _)| !ok).map(|(_, o)| format!("; {}", o.trim())).collect::<String>()
        ),
    );
    if !ok {
        return false;
    }
    println!("EVROUTE-DETAIL domu: creating d1");
    let free_before = free_mib();
    let first = create();
    ok &= report("xl-create", first.is_ok(), format!("{first:?} (seconds to the domU's init)"));
    if first.is_err() {
        let _ = run("xl", &["destroy", "d1"]);
        return false;
    }
    let vcpus = listed_vcpus("d1");
    let (_, vl) = run("xl", &["vcpu-list", "d1"]);
    let rows = vl.lines().filter(|l| l.split_whitespace().next() == Some("d1")).count();
    ok &= report(
        "xl-list",
        vcpus == Some(VCPUS) && rows == VCPUS,
        format!("xl list: d1 with {vcpus:?} vCPUs; xl vcpu-list: {rows} rows; want {VCPUS}"),
    );
    let (gone, detail) = destroy(free_before);
    ok &= report("xl-destroy", gone, detail);
    let second = create();
    ok &= report("xl-create-again", second.is_ok(), format!("{second:?}"));
    let (gone, detail) = destroy(free_before);
    ok &= report("xl-destroy-again", gone, detail);
    println!(
        "EVROUTE-METRIC scenario=domu up_s={:.1} again_s={:.1} free_mib={free_before:?}",
        first.unwrap_or(0.0),
        second.unwrap_or(0.0)
    );
    ok
}
