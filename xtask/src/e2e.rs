//! `cargo xtask e2e`: boot the patched Xen (and Debian's unpatched one, to
//! compare) under QEMU in software emulation with a 4-vCPU Linux dom0 on 2
//! emulated CPUs, run `evroute-e2e` as dom0's init once per boot, and
//! summarise. Serial logs stay in target/e2e/.
//!
//! Two dom0 kernels: Debian's, which knows nothing of vCPU sets (the tool
//! drives the hypercall itself), and the patched one `cargo xtask linux`
//! builds (Linux's own affinity becomes the set), booted with a virtio disk.

use crate::linux;
use crate::run::Steps;
use crate::test_guest;
use crate::toolstack;
use crate::xen;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Which hypervisor and which dom0 kernel a boot uses.
#[derive(Clone, Copy, PartialEq)]
enum Image {
    Debian,
    Patched,
    /// As dom0: the PV test guest (`tests/guest/`), no Linux at all.
    TestGuest,
}

/// One boot: `label` is also the tool's mode.
struct BootSpec {
    label: &'static str,
    xen: Image,
    kernel: Image,
    /// `evtchn-route=` (patched Xen only).
    route: Option<&'static str>,
    xen_extra: &'static str,
    dom0_extra: &'static str,
    /// Lines Xen must print: the scheduler and waiting mode asked for were
    /// the ones used.
    xen_says: &'static [&'static str],
    /// dom0 runs Debian's Xen toolstack and creates domains.
    toolstack: bool,
    /// The patched Xen with one check undone (`test_guest::BROKEN`): the
    /// test guest's cases that guard it must fail.
    broken: Option<&'static str>,
}

const fn boot_spec(label: &'static str, xen: Image, kernel: Image, route: Option<&'static str>) -> BootSpec {
    BootSpec { label, xen, kernel, route, xen_extra: "", dom0_extra: "", xen_says: &[], toolstack: false, broken: None }
}

/// A notify-path boot: the patched Xen with `xen_extra`, Debian's kernel.
const fn notify_boot(label: &'static str, xen_extra: &'static str, xen_says: &'static [&'static str]) -> BootSpec {
    BootSpec { xen_extra, xen_says, ..boot_spec(label, Patched, Debian, None) }
}

/// The notify path's boots: the null scheduler with dom0's 2 vCPUs one per
/// pCPU, and credit2 with 4 vCPUs on 2 pCPUs. A poller comes back within
/// 50-300 µs plus TCG's slow hypercalls, so the waits may last up to 1 ms.
const SAYS_NULL: &str = "Using scheduler: null Scheduler (null)";
const SAYS_CREDIT2: &str = "Using scheduler: SMP Credit Scheduler rev2 (credit2)";
const SAYS_POLL: &str = "evtchn-wait: poll, for at most 1000us";
const SAYS_CREDIT1: &str = "Using scheduler: SMP Credit Scheduler (credit)";

use Image::{Debian, Patched, TestGuest};
const BOOTS: [BootSpec; 23] = [
    boot_spec("unpatched", Debian, Debian, None),
    boot_spec("off", Patched, Debian, Some("off")),
    boot_spec("running", Patched, Debian, Some("running")),
    boot_spec("balanced", Patched, Debian, Some("balanced")),
    BootSpec { xen_extra: "sched=credit2", ..boot_spec("guest-credit2", Patched, Patched, Some("running")) },
    BootSpec {
        xen_extra: "sched=credit",
        xen_says: &[SAYS_CREDIT1],
        ..boot_spec("guest-credit1", Patched, Patched, Some("running"))
    },
    boot_spec("compat-unpatched", Debian, Patched, None),
    boot_spec("compat-off", Patched, Patched, Some("off")),
    BootSpec { dom0_extra: "xen.fifo_events=0", ..boot_spec("compat-fifo0", Patched, Patched, Some("running")) },
    BootSpec { dom0_extra: "xen.evtchn_sets=0", ..boot_spec("compat-sets0", Patched, Patched, Some("running")) },
    notify_boot("notify-off", "sched=null dom0_max_vcpus=2 evtchn-wait=off", &[SAYS_NULL]),
    notify_boot(
        "notify-poll",
        "sched=null dom0_max_vcpus=2 evtchn-wait=poll evtchn-wait-us=1000",
        &[SAYS_NULL, SAYS_POLL],
    ),
    // QEMU's CPU model has no MONITOR: mwait must fall back to poll.
    notify_boot(
        "notify-mwait",
        "sched=null dom0_max_vcpus=2 evtchn-wait=mwait evtchn-wait-us=1000",
        &[SAYS_NULL, "evtchn-wait=mwait: no usable MONITOR/MWAIT; using poll", SAYS_POLL],
    ),
    notify_boot("shared-off", "sched=credit2 evtchn-wait=off", &[SAYS_CREDIT2]),
    notify_boot("shared-poll", "sched=credit2 evtchn-wait=poll evtchn-wait-us=1000", &[SAYS_CREDIT2, SAYS_POLL]),
    // Second domains through the real toolstack: dom0 pings an
    // overcommitted domU (the patched kernel, with and without a set) and
    // an unmodified one (Debian's kernel) beside it; under credit2 (with
    // the lifecycle), credit1, and on Debian's Xen for the baseline.
    BootSpec { toolstack: true, ..boot_spec("domu", Patched, Debian, Some("running")) },
    BootSpec {
        toolstack: true,
        xen_extra: "sched=credit",
        xen_says: &[SAYS_CREDIT1],
        ..boot_spec("domu-credit1", Patched, Debian, Some("running"))
    },
    BootSpec { toolstack: true, ..boot_spec("domu-unpatched", Debian, Debian, None) },
    // The PV test guest as dom0, on each routing option, then on Xens with
    // a check undone, where the cases that guard it must fail.
    boot_spec("testguest-off", Patched, TestGuest, Some("off")),
    boot_spec("testguest-running", Patched, TestGuest, Some("running")),
    boot_spec("testguest-balanced", Patched, TestGuest, Some("balanced")),
    BootSpec {
        broken: Some("route-ignores-receivable"),
        ..boot_spec("testguest-broken-receivable", Patched, TestGuest, Some("running"))
    },
    BootSpec {
        broken: Some("bitmap-as-pointer"),
        ..boot_spec("testguest-broken-bitmap", Patched, TestGuest, Some("running"))
    },
];
/// The busy loops' throughput with pollers beside them (over alone, in
/// the same boot) may differ by this much between `evtchn-wait=off` and
/// `poll`: the wait must yield the pCPU to them.
const SHARED_TOLERANCE: f64 = 0.02;
/// How far the unmodified guest's round trips on the patched Xen may be
/// from Debian's Xen, booted the same way (d1 bound on both): TCG's noise
/// between boots. Its p50 moved by under 6 % between such boots and its
/// p99 by up to 1.6x (the rounds of one boot alone differ by up to 1.4x).
const UNMODIFIED_P50: f64 = 0.25;
const UNMODIFIED_P99: f64 = 2.0;
/// `evtchn-wait-us=` of the `poll` boots, and the emulated pCPUs.
const SHARED_WAIT_US: f64 = 1000.0;
const QEMU_CPUS: f64 = 2.0;
const BOOT_TIMEOUT_SECS: &str = "300";
/// The emulated disk of the patched-kernel boots (random data, host-cached).
const DISK_MIB: u64 = 64;
/// What Xen prints when it drops an event: Xen 4.17's FIFO bailout after
/// three queue changes, and a set-pending on a vCPU without a control block.
const DROPPED_EVENT_WARNINGS: [&str; 2] =
    ["lost event (too many queue changes)", "has no FIFO event channel control block"];
/// What Xen prints when its own checks fire (WARN_ON, BUG_ON, a failed
/// ASSERT in a debug build) or it faults.
const XEN_TROUBLE: [&str; 5] = ["Xen WARN at", "Xen BUG at", "Assertion '", "FATAL TRAP", "Panic on CPU"];

/// Which Xen to boot, and in which modes.
#[derive(clap::Args, Default)]
pub struct Args {
    /// Boot this hypervisor image (a Xen you built with the series applied,
    /// say to another Xen tree) instead of building Debian's, patched and
    /// not.
    #[arg(long, value_name = "PATH")]
    pub xen: Option<PathBuf>,
    /// Boots to run (unpatched, off, running, balanced, guest-credit2,
    /// guest-credit1, compat-unpatched, compat-off, compat-fifo0,
    /// compat-sets0, notify-off, notify-poll, notify-mwait, shared-off,
    /// shared-poll, domu, domu-credit1, domu-unpatched); all by default;
    /// with --xen, those of the patched Xen but the toolstack's (Debian's
    /// 4.17 toolstack drives a 4.17 Xen only: name them to run them).
    #[arg(long, value_delimiter = ',', value_name = "BOOT")]
    pub boots: Vec<String>,
}

pub fn main(args: &Args) -> Result<(), String> {
    let mut steps = Steps::default();
    if let Some(bad) = args.boots.iter().find(|b| !BOOTS.iter().any(|s| s.label == b.as_str())) {
        let known: Vec<&str> = BOOTS.iter().map(|s| s.label).collect();
        return Err(format!("--boots: no boot '{bad}'; known: {}", known.join(", ")));
    }
    let boots: Vec<&BootSpec> = BOOTS
        .iter()
        .filter(|b| {
            if args.boots.is_empty() {
                // A Xen of your own gets the boots of the patched Xen, but
                // not the toolstack's: Debian's 4.17 xl drives only a 4.17.
                // Nor the broken Xens: they are built from the source.
                args.xen.is_none() || (b.xen == Patched && !b.toolstack && b.broken.is_none())
            } else {
                args.boots.iter().any(|l| l == b.label)
            }
        })
        .collect();
    let debian_xen: Vec<&str> = boots.iter().filter(|b| b.xen == Debian).map(|b| b.label).collect();
    if args.xen.is_some() && !debian_xen.is_empty() {
        return Err(format!(
            "--xen boots a patched image; these boots need Debian's own Xen: {} (drop --xen, or leave them out of --boots)",
            debian_xen.join(", ")
        ));
    }
    if let Some(x) = &args.xen {
        if !x.is_file() {
            return Err(format!("--xen {}: no such file", x.display()));
        }
    }
    if args.xen.is_some() {
        if let Some(b) = boots.iter().find(|b| b.broken.is_some()) {
            return Err(format!("--xen: boot '{}' needs a Xen built from the source with a check undone", b.label));
        }
    }
    let want_debian_kernel = boots.iter().any(|b| b.kernel == Debian);
    let mut pkgs: Vec<&str> =
        [("qemu-system-x86_64", "qemu-system-x86"), ("busybox", "busybox-static"), ("cpio", "cpio")]
            .into_iter()
            .filter(|(bin, _)| !xen::on_path(bin))
            .map(|(_, pkg)| pkg)
            .collect();
    if want_debian_kernel && debian_kernel().is_err() {
        pkgs.push("linux-image-amd64");
    }
    if !pkgs.is_empty() {
        xen::apt_install(&mut steps, &pkgs)?;
    }
    let debian = if want_debian_kernel { Some(debian_kernel()?) } else { None };
    // The patched kernel is dom0's in some boots and a domU's in others.
    let patched_kernel = if boots.iter().any(|b| b.kernel == Patched || b.toolstack) {
        Some(linux::build(&mut steps)?.bzimage)
    } else {
        None
    };

    // The two hypervisors: Debian's source, patched and as shipped; or the
    // image given.
    let (patched, patched_tree, pristine) = match &args.xen {
        Some(image) => (image.clone(), None, None),
        None => {
            let patched = xen::prepare(&mut steps)?;
            xen::build(&mut steps, &patched)?;
            let pristine = xen::Tree { src: xen::prepare_pristine(&mut steps)?, patched: false };
            if boots.iter().any(|b| b.xen == Debian) {
                xen::build(&mut steps, &pristine)?;
            }
            (patched.src.join("xen/xen"), Some(patched), Some(pristine.src.join("xen/xen")))
        }
    };

    // Each a copy of the patched tree just built, with one check undone.
    let mut broken = BTreeMap::new();
    for name in boots.iter().filter_map(|b| b.broken) {
        let tree = patched_tree.as_ref().expect("--xen is refused above for the broken Xens' boots");
        let spec = test_guest::BROKEN.iter().find(|x| x.name == name).ok_or(format!("no broken Xen '{name}'"))?;
        broken.insert(name, (spec, spec.build(&mut steps, tree)?));
    }
    let guest = if boots.iter().any(|b| b.kernel == TestGuest) { Some(test_guest::build(&mut steps)?) } else { None };

    let root = xen::repo_root();
    let out = root.join("target/e2e");
    let target_dir = out.to_string_lossy().into_owned();
    steps.cargo(
        "build evroute-e2e (static)",
        &["build", "--release", "--target", "x86_64-unknown-linux-gnu", "-p", "evroute-tests"],
        &[("RUSTFLAGS", "-C target-feature=+crt-static"), ("CARGO_TARGET_DIR", &target_dir)],
    )?;
    let tool = out.join("x86_64-unknown-linux-gnu/release/evroute-e2e");
    let kver = debian.as_ref().map(|(_, v)| v.as_str());
    let initrd = initramfs(&mut steps, &out, "initramfs", &tool, kver, None)?;
    let toolstack_initrd = match (boots.iter().any(|b| b.toolstack), &debian, &patched_kernel) {
        (true, Some((vmlinuz, kver)), Some(patched)) => {
            let ts = toolstack::fetch(&mut steps)?;
            let domu = Domu { toolstack: &ts, debian: vmlinuz, patched };
            Some(initramfs(&mut steps, &out, "initramfs-domu", &tool, Some(kver), Some(domu))?)
        }
        _ => None,
    };
    let disk = out.join("disk.img");
    if patched_kernel.is_some() {
        let mut dd = Command::new("dd");
        dd.arg("if=/dev/urandom").arg(format!("of={}", disk.display())).args([
            "bs=1M",
            &format!("count={DISK_MIB}"),
            "status=none",
        ]);
        steps.run("the emulated disk (random data)", dd)?;
    }

    let mut results = Vec::new();
    for b in boots {
        let xen_image = match (b.xen, b.broken) {
            (_, Some(name)) => &broken[name].1,
            (Debian, None) => pristine.as_ref().expect("built for an unpatched boot"),
            _ => &patched,
        };
        let kernel = match b.kernel {
            Debian => &debian.as_ref().expect("installed above").0,
            Patched => patched_kernel.as_ref().expect("built above"),
            TestGuest => guest.as_ref().expect("built above"),
        };
        let initrd = if b.toolstack { toolstack_initrd.as_ref().expect("built above") } else { &initrd };
        let mut done = boot(&out, b, xen_image, kernel, initrd, &disk)?;
        if let Some(name) = b.broken {
            caught(&mut done, broken[name].0);
        }
        results.push(done);
    }
    healthy_verdict(&mut results);
    shared_verdict(&mut results);
    unmodified_verdict(&mut results);
    summary(&results);
    steps.summary();
    let failed: Vec<String> = results
        .iter()
        .flat_map(|b| b.verdicts.iter().filter(|(_, ok, _)| !ok).map(move |(s, _, d)| format!("{}: {s}: {d}", b.label)))
        .collect();
    if !failed.is_empty() {
        return Err(format!("e2e scenarios failed:\n  {}", failed.join("\n  ")));
    }
    Ok(())
}

/// Debian's dom0 kernel: /boot/vmlinuz-<ver> with its modules.
fn debian_kernel() -> Result<(PathBuf, String), String> {
    let mut found: Vec<String> = fs::read_dir("/boot")
        .map_err(|e| format!("/boot: {e}"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
        .filter(|v| Path::new("/lib/modules").join(v).join("kernel/drivers/xen/xen-evtchn.ko").exists())
        .collect();
    found.sort();
    let ver = found.pop().ok_or("no /boot/vmlinuz-* with xen-evtchn.ko (apt-get install linux-image-amd64)")?;
    Ok((PathBuf::from(format!("/boot/vmlinuz-{ver}")), ver))
}

/// What dom0 needs to create domUs: the unpacked toolstack packages and
/// the two guest kernels (Debian's, unmodified; the patched one).
struct Domu<'a> {
    toolstack: &'a Path,
    debian: &'a Path,
    patched: &'a Path,
}

/// busybox, Debian's Xen device modules (the patched kernel has them built
/// in), the test tool and an init that runs it with the mode given on the
/// kernel command line, then powers off. With `domu` also Debian's Xen user
/// space, the modules it needs, and the domUs' kernels and initramfs under
/// /domu.
fn initramfs(
    steps: &mut Steps,
    out: &Path,
    name: &str,
    tool: &Path,
    kver: Option<&str>,
    domu: Option<Domu>,
) -> Result<PathBuf, String> {
    let root = out.join(name);
    let copy = |from: &Path, to: &Path| fs::copy(from, to).map(|_| ()).map_err(|e| format!("{}: {e}", from.display()));
    let busybox =
        ["/bin/busybox", "/usr/bin/busybox"].into_iter().map(Path::new).find(|p| p.exists()).ok_or("no busybox")?;
    busybox_root(
        &root,
        busybox,
        &["bin", "dev", "proc", "sys", "lib/modules"],
        &["sh", "mount", "insmod", "sed", "grep", "poweroff", "cat"],
    )?;
    if let Some(kver) = kver {
        let mods = Path::new("/lib/modules").join(kver).join("kernel/drivers/xen");
        let mut wanted = vec!["xen-evtchn.ko", "xen-privcmd.ko"];
        if domu.is_some() {
            wanted.extend(["xenfs/xenfs.ko", "xen-gntdev.ko", "xen-gntalloc.ko"]);
        }
        for m in wanted {
            let file = Path::new(m).file_name().expect("a file name");
            copy(&mods.join(m), &root.join("lib/modules").join(file))?;
        }
    }
    if let (Some(d), Some(kver)) = (domu, kver) {
        toolstack::install(d.toolstack, &root)?;
        copy(d.debian, &root.join("domu/vmlinuz"))?;
        copy(d.patched, &root.join("domu/vmlinuz-patched"))?;
        domu_initramfs(steps, out, busybox, tool, kver, &root.join("domu/initrd.gz"))?;
    }
    copy(tool, &root.join("bin/evroute-e2e"))?;
    copy(&tool.with_file_name("evtchnctl"), &root.join("bin/evtchnctl"))?;
    let init = "#!/bin/sh\n\
        mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
        if grep -q evroute.modules=1 /proc/cmdline; then\n\
        insmod /lib/modules/xen-evtchn.ko\ninsmod /lib/modules/xen-privcmd.ko\nfi\n\
        if [ -e /lib/modules/xenfs.ko ]; then\n\
        insmod /lib/modules/xenfs.ko\ninsmod /lib/modules/xen-gntdev.ko\ninsmod /lib/modules/xen-gntalloc.ko\n\
        mount -t xenfs xenfs /proc/xen\nmount -t tmpfs tmpfs /run\nmkdir -p /run/xen /run/xenstored /dev/pts\n\
        mount -t devpts devpts /dev/pts\nfi\n\
        mode=$(sed -n 's/.*evroute\\.mode=\\([a-z0-9-]*\\).*/\\1/p' /proc/cmdline)\n\
        echo \"EVROUTE-BOOT mode=$mode cpus=$(grep -c ^processor /proc/cpuinfo)\"\n\
        /bin/evroute-e2e \"$mode\"\npoweroff -f\n";
    fs::write(root.join("init"), init).map_err(|e| e.to_string())?;
    let initrd = out.join(format!("{name}.gz"));
    pack(steps, &root, &initrd, &format!("initramfs: pack {name}"))?;
    Ok(initrd)
}

/// A fresh initramfs tree at `root`: `dirs`, and busybox with `applets`.
fn busybox_root(root: &Path, busybox: &Path, dirs: &[&str], applets: &[&str]) -> Result<(), String> {
    let _ = fs::remove_dir_all(root);
    for d in dirs {
        fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    fs::copy(busybox, root.join("bin/busybox")).map_err(|e| format!("{}: {e}", busybox.display()))?;
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Make `root`'s init executable and pack the tree as a gzipped cpio at `to`.
fn pack(steps: &mut Steps, root: &Path, to: &Path, what: &str) -> Result<(), String> {
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(format!(
        "chmod +x '{r}/init' && cd '{r}' && find . | cpio -o -H newc --quiet | gzip > '{}'",
        to.display(),
        r = root.display()
    ));
    steps.run(what, sh)
}

/// The domUs' initramfs: busybox, the event-channel device module of
/// Debian's kernel `kver` (the patched kernel has it built in), the tool,
/// and an init that reports its vCPUs on its console, then echoes dom0's
/// pings (`evroute-e2e domu-echo`) until destroyed.
fn domu_initramfs(
    steps: &mut Steps,
    out: &Path,
    busybox: &Path,
    tool: &Path,
    kver: &str,
    to: &Path,
) -> Result<(), String> {
    let root = out.join("initramfs-domu-guest");
    busybox_root(&root, busybox, &["bin", "dev", "proc", "lib/modules"], &["sh", "mount", "grep", "sleep", "insmod"])?;
    let module = Path::new("/lib/modules").join(kver).join("kernel/drivers/xen/xen-evtchn.ko");
    fs::copy(&module, root.join("lib/modules/xen-evtchn.ko")).map_err(|e| format!("{}: {e}", module.display()))?;
    fs::copy(tool, root.join("bin/evroute-e2e")).map_err(|e| format!("{}: {e}", tool.display()))?;
    let init = "#!/bin/sh\nmount -t proc proc /proc\nmount -t devtmpfs dev /dev\n\
        [ -e /dev/xen/evtchn ] || insmod /lib/modules/xen-evtchn.ko\n\
        echo \"EVROUTE-DOMU-UP cpus=$(grep -c ^processor /proc/cpuinfo)\" > /dev/hvc0\n\
        /bin/evroute-e2e domu-echo > /dev/hvc0 2>&1\n\
        while true; do sleep 1; done\n";
    fs::write(root.join("init"), init).map_err(|e| e.to_string())?;
    pack(steps, &root, to, "initramfs: the domU's")
}

struct Boot {
    label: String,
    secs: f64,
    verdicts: Vec<(String, bool, String)>,
    metrics: Vec<BTreeMap<String, String>>,
}

/// One boot: `label` is the tool's mode and, on the patched Xen, the
/// `evtchn-route=` value.
fn boot(out: &Path, spec: &BootSpec, xen: &Path, vmlinuz: &Path, initrd: &Path, disk: &Path) -> Result<Boot, String> {
    let label = spec.label;
    let log = out.join(format!("serial-{label}.log"));
    let _ = fs::remove_file(&log);
    // guest_loglvl=all: Xen's warnings about a guest's events (a dropped
    // event) reach the log, which is checked below. conring_size: room in
    // Xen's console ring for the 'e' dumps the tool reads back.
    // The test guest ends by rebooting the machine, which ends QEMU.
    let mut xen_cmdline = if spec.kernel == TestGuest {
        "console=com1 com1=115200,8n1 dom0_max_vcpus=4 dom0_mem=128M guest_loglvl=all"
    } else {
        "console=com1 com1=115200,8n1 noreboot dom0_max_vcpus=4 dom0_mem=1G guest_loglvl=all conring_size=256k"
    }
    .to_string();
    for extra in [spec.route.map(|r| format!("evtchn-route={r}")).unwrap_or_default(), spec.xen_extra.to_string()] {
        if !extra.is_empty() {
            xen_cmdline.push(' ');
            xen_cmdline.push_str(&extra);
        }
    }
    let modules = if spec.kernel == Debian { " evroute.modules=1" } else { "" };
    let dom0 = if spec.kernel == TestGuest {
        format!("{} evroute.mode={label} evroute.route={}", vmlinuz.display(), spec.route.unwrap_or("off"))
    } else {
        format!(
            "{} console=hvc0 quiet evroute.mode={label}{modules} {},{}",
            vmlinuz.display(),
            spec.dom0_extra,
            initrd.display()
        )
    };
    eprintln!("==> boot {label}: Xen \"{xen_cmdline}\", dom0 {} (serial log {})", vmlinuz.display(), log.display());
    let t = Instant::now();
    let mut qemu = Command::new("timeout");
    qemu.arg(BOOT_TIMEOUT_SECS)
        .args(["qemu-system-x86_64", "-nographic", "-cpu", "qemu64", "-m", "2G", "-smp", "2", "-no-reboot"])
        .args(["-monitor", "none", "-serial"])
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(xen)
        .arg("-append")
        .arg(&xen_cmdline)
        .arg("-initrd")
        .arg(&dom0)
        .stdin(std::process::Stdio::null());
    if spec.kernel == Patched {
        // One request queue: one interrupt to follow.
        qemu.arg("-drive")
            .arg(format!("file={},if=none,id=d0,format=raw", disk.display()))
            .args(["-device", "virtio-blk-pci,drive=d0,num-queues=1"]);
    }
    let status = qemu.status().map_err(|e| format!("qemu-system-x86_64: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
    if !text.contains("EVROUTE-BOOT") {
        return Err(format!(
            "boot '{label}' did not come up (qemu {status}, {secs:.0}s): dom0's init never ran; see {}",
            log.display()
        ));
    }
    let mut verdicts = Vec::new();
    let mut metrics = Vec::new();
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(rest) = line.strip_prefix("EVROUTE ") {
            let mut it = rest.splitn(3, ' ');
            let (name, verdict, detail) = (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or(""));
            verdicts.push((name.to_string(), verdict == "PASS", detail.to_string()));
        } else if let Some(rest) = line.strip_prefix("EVROUTE-METRIC ") {
            metrics.push(parse_metric(rest));
        } else if line.starts_with("EVROUTE-DETAIL") {
            eprintln!("    {line}");
        }
    }
    for want in spec.xen_says {
        let said = text.contains(want);
        verdicts.push(("xen-says".into(), said, format!("Xen printed '{want}': {said}")));
    }
    let dropped: usize = DROPPED_EVENT_WARNINGS.iter().map(|w| text.matches(w).count()).sum();
    verdicts.push((
        "xen-log".into(),
        dropped == 0,
        format!("{dropped} warnings of a dropped event ({})", DROPPED_EVENT_WARNINGS.join("; ")),
    ));
    let trouble: Vec<&str> = text.lines().filter(|l| XEN_TROUBLE.iter().any(|w| l.contains(w))).collect();
    verdicts.push((
        "xen-warn".into(),
        trouble.is_empty(),
        format!("{} lines of Xen's own warnings {trouble:?}", trouble.len()),
    ));
    if !text.contains("EVROUTE-DONE") {
        verdicts.push((
            "finished".into(),
            false,
            format!("the tool did not finish (crash or time-out); see {}", log.display()),
        ));
    }
    eprintln!("    {label}: {secs:.1}s wall, {} scenarios", verdicts.len());
    Ok(Boot { label: label.to_string(), secs, verdicts, metrics })
}

/// A boot on a Xen with a check undone: it passes (as one verdict) when
/// every case that guards that check failed; the boot's other verdicts
/// are shown but do not count (a broken Xen may well break more).
fn caught(boot: &mut Boot, broken: &test_guest::Broken) {
    let mut missed = Vec::new();
    for case in broken.must_fail {
        match boot.verdicts.iter().find(|(n, _, _)| n == case) {
            Some((_, false, d)) => eprintln!("    caught by {case}: {d}"),
            Some((_, true, _)) => missed.push(format!("{case} passed")),
            None => missed.push(format!("{case} did not run")),
        }
    }
    let others = boot.verdicts.iter().filter(|(n, ok, _)| !ok && !broken.must_fail.contains(&n.as_str())).count();
    let detail = format!(
        "Xen with {}: {} of {} guarding cases failed ({}); {others} other verdicts failed, not counted",
        broken.about,
        broken.must_fail.len() - missed.len(),
        broken.must_fail.len(),
        if missed.is_empty() { broken.must_fail.join(", ") } else { missed.join("; ") }
    );
    boot.verdicts = vec![(format!("caught-{}", broken.name), missed.is_empty(), detail)];
}

/// A broken Xen's guarding cases prove something only if they pass on the
/// patched Xen: checked against `testguest-running` when it ran too.
fn healthy_verdict(boots: &mut [Boot]) {
    let passed_there: Option<Vec<String>> = boots
        .iter()
        .find(|b| b.label == "testguest-running")
        .map(|b| b.verdicts.iter().filter(|(_, ok, _)| *ok).map(|(n, _, _)| n.clone()).collect());
    for broken in &test_guest::BROKEN {
        let Some(b) =
            boots.iter_mut().find(|b| b.verdicts.iter().any(|(n, _, _)| *n == format!("caught-{}", broken.name)))
        else {
            continue;
        };
        let (ok, detail) = match &passed_there {
            Some(p) => {
                let failing: Vec<&str> =
                    broken.must_fail.iter().copied().filter(|c| !p.iter().any(|n| n == c)).collect();
                (
                    failing.is_empty(),
                    format!(
                        "its guarding cases on the patched Xen (testguest-running): {} not passing {failing:?}",
                        failing.len()
                    ),
                )
            }
            None => (true, "not compared: testguest-running was not booted in this run".to_string()),
        };
        b.verdicts.push((format!("guards-pass-when-fixed-{}", broken.name), ok, detail));
    }
}

/// `k=v` pairs; a value in brackets may hold spaces.
pub fn parse_metric(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_string();
        let after = &rest[eq + 1..];
        let end = if after.starts_with('[') {
            after.find(']').map_or(after.len(), |i| i + 1)
        } else {
            after.find(' ').unwrap_or(after.len())
        };
        m.insert(key, after[..end].to_string());
        rest = &after[end..];
    }
    m
}

fn summary(boots: &[Boot]) {
    println!("\n| boot | wall s | scenario | result | detail |\n|---|---|---|---|---|");
    for b in boots {
        for (s, ok, d) in &b.verdicts {
            println!("| {} | {:.1} | {s} | {} | {d} |", b.label, b.secs, if *ok { "PASS" } else { "FAIL" });
        }
    }
    let share_rows = boots.iter().flat_map(|b| b.metrics.iter()).filter(|m| is_share(m)).count();
    if share_rows > 0 {
        println!("\n| boot | scenario | bound vCPU | per-vCPU handled | on running vCPUs | Jain | p50 µs | p99 µs |\n|---|---|---|---|---|---|---|---|");
    }
    let mut latency = BTreeMap::new();
    for b in boots {
        for m in b.metrics.iter().filter(|m| is_share(m)) {
            let g = |k: &str| m.get(k).cloned().unwrap_or_default();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                b.label,
                g("scenario"),
                g("bound_vcpu"),
                g("per_vcpu"),
                g("running_share"),
                g("jain"),
                g("p50_us"),
                g("p99_us")
            );
            latency.insert(
                g("scenario"),
                (g("p50_us").parse::<f64>().unwrap_or(0.0), g("p99_us").parse::<f64>().unwrap_or(0.0)),
            );
        }
    }
    disk_summary(boots);
    notify_summary(boots);
    cross_summary(boots);
    if let (Some(off), Some(on)) = (latency.get("share-off"), latency.get("share-running")) {
        if on.0 > 0.0 && on.1 > 0.0 {
            println!(
                "\nlatency off/running: p50 {:.1}/{:.1} µs = {:.2}x, p99 {:.1}/{:.1} µs = {:.2}x",
                off.0,
                on.0,
                off.0 / on.0,
                off.1,
                on.1,
                off.1 / on.1
            );
        }
    }
}

fn is_disk(m: &BTreeMap<String, String>) -> bool {
    m.get("scenario").is_some_and(|s| s.starts_with("disk-"))
}

fn is_notify(m: &BTreeMap<String, String>) -> bool {
    m.get("scenario").is_some_and(|s| s == "notify" || s == "shared")
}

fn is_cross(m: &BTreeMap<String, String>) -> bool {
    m.get("scenario").is_some_and(|s| s.starts_with("cross"))
}

fn is_share(m: &BTreeMap<String, String>) -> bool {
    !is_disk(m) && !is_notify(m) && !is_cross(m)
}

/// The cross-domain rounds: per boot, guest and round, the round trips and
/// where Xen and the guest put the events; then bound over set.
fn cross_summary(boots: &[Boot]) {
    let rows = scenario_rows(boots, "cross");
    if rows.is_empty() {
        return;
    }
    println!("\n| boot | guest | kernel | round | mean µs | p50 µs | p90 µs | p99 µs | per-vCPU handled | Xen's set | routed running/blocked/other | running share |\n|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (label, m) in &rows {
        let g = |k: &str| m.get(k).cloned().unwrap_or_default();
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            g("guest"),
            g("kernel"),
            g("round"),
            g("mean_us"),
            g("p50_us"),
            g("p90_us"),
            g("p99_us"),
            g("per_vcpu"),
            g("xen_set"),
            g("routed"),
            g("running_share")
        );
    }
    for (label, m) in scenario_rows(boots, "cross-ratio") {
        let g = |k: &str| m.get(k).cloned().unwrap_or_default();
        println!(
            "{label}: d1's round trip bound over set: mean {}x, p50 {}x, p90 {}x, p99 {}x",
            g("mean_bound_over_set"),
            g("p50_bound_over_set"),
            g("p90_bound_over_set"),
            g("p99_bound_over_set")
        );
    }
}

/// The unmodified guest's p50 and p99 round trip in boot `label`'s bound
/// round: the one where d1 does the same on either Xen (with the set, d1
/// keeps a pCPU differently busy on the patched Xen).
fn unmodified_latency(boots: &[Boot], label: &str) -> Option<(f64, f64)> {
    let is = |m: &BTreeMap<String, String>, k: &str, v: &str| m.get(k).map(String::as_str) == Some(v);
    let (_, m) = scenario_rows(boots, "cross")
        .into_iter()
        .find(|(l, m)| *l == label && is(m, "guest", "d2") && is(m, "round", "bound"))?;
    Some((m.get("p50_us")?.parse().ok()?, m.get("p99_us")?.parse().ok()?))
}

/// With `domu` and `domu-unpatched` both run (credit2 both), the
/// unmodified guest's round trips on the patched Xen against Debian's:
/// p50 within [`UNMODIFIED_P50`], p99 within a factor [`UNMODIFIED_P99`].
fn unmodified_verdict(boots: &mut [Boot]) {
    let (Some(patched), Some(debian)) =
        (unmodified_latency(boots, "domu"), unmodified_latency(boots, "domu-unpatched"))
    else {
        if boots.iter().any(|b| b.label.starts_with("domu")) {
            println!("\nunmodified-vs-unpatched: not judged (needs both the domu and domu-unpatched boots)");
        }
        return;
    };
    let (r50, r99) = (patched.0 / debian.0, patched.1 / debian.1);
    let ok = (r50 - 1.0).abs() <= UNMODIFIED_P50 && (1.0 / UNMODIFIED_P99..=UNMODIFIED_P99).contains(&r99);
    if let Some(b) = boots.iter_mut().find(|b| b.label == "domu") {
        b.verdicts.push((
            "unmodified-vs-unpatched".into(),
            ok,
            format!(
                "d2 (Debian's kernel) beside d1, p50/p99 {:.1}/{:.1} µs on this Xen, {:.1}/{:.1} µs on Debian's: {r50:.2}x, {r99:.2}x (want p50 within {:.0}%, p99 within {UNMODIFIED_P99}x)",
                patched.0,
                patched.1,
                debian.0,
                debian.1,
                UNMODIFIED_P50 * 100.0
            ),
        ));
    }
}

/// Every metric line of `scenario`, with its boot's label, in boot order.
fn scenario_rows<'a>(boots: &'a [Boot], scenario: &str) -> Vec<(&'a str, &'a BTreeMap<String, String>)> {
    boots
        .iter()
        .flat_map(|b| b.metrics.iter().map(move |m| (b.label.as_str(), m)))
        .filter(|(_, m)| m.get("scenario").map(String::as_str) == Some(scenario))
        .collect()
}

/// The metric `key` of the boot `label`'s `scenario`.
fn metric(boots: &[Boot], label: &str, scenario: &str, key: &str) -> Option<f64> {
    let (_, m) = scenario_rows(boots, scenario).into_iter().find(|(l, _)| *l == label)?;
    m.get(key)?.parse().ok()
}

/// With both shared-core boots run, two verdicts of the `shared-poll`
/// boot. The busy loops' relative throughput with `poll` is no more than
/// [`SHARED_TOLERANCE`] below `off`'s, or than the wider spread of either
/// boot's own rounds (TCG's noise between boots); faster is no failure.
/// And, not subject to that noise, an upper bound on what the waits took
/// from them: waits in Xen times the longest wait, over the pCPUs' time,
/// under the same tolerance.
fn shared_verdict(boots: &mut [Boot]) {
    let m = |label: &str, key: &str| metric(boots, label, "shared", key);
    let (Some(off), Some(poll), Some(waits), Some(secs)) =
        (m("shared-off", "ratio"), m("shared-poll", "ratio"), m("shared-poll", "waits"), m("shared-poll", "secs"))
    else {
        return;
    };
    let spread = |label: &str, median: f64| {
        m(label, "ratio_max").zip(m(label, "ratio_min")).map_or(0.0, |(hi, lo)| (hi - lo) / median)
    };
    let change = poll / off - 1.0;
    let noise = spread("shared-off", off).max(spread("shared-poll", poll));
    let allowed = SHARED_TOLERANCE.max(noise);
    let waited_share = waits * SHARED_WAIT_US * 1e-6 / (QEMU_CPUS * secs);
    if let Some(b) = boots.iter_mut().find(|b| b.label == "shared-poll") {
        b.verdicts.push((
            "shared-throughput".into(),
            change >= -allowed,
            format!(
                "busy loops beside fed pollers at {poll:.4} of their speed alone with poll, {off:.4} with off: {:+.2}% (want no lower than -{:.1}%: 2%, or the boots' own spread {:.1}%)",
                change * 100.0,
                allowed * 100.0,
                noise * 100.0
            ),
        ));
        b.verdicts.push((
            "shared-wait-time".into(),
            waited_share <= SHARED_TOLERANCE,
            format!(
                "{waits:.0} waits x {SHARED_WAIT_US:.0} us in {secs:.1} s on {QEMU_CPUS:.0} pCPUs: at most {:.3}% of their time (want <= 2%)",
                waited_share * 100.0
            ),
        ));
    }
}

/// The notify path: one-way latency and IPIs per event, off vs poll
/// (and mwait, which falls back to poll under QEMU).
fn notify_summary(boots: &[Boot]) {
    let rows = scenario_rows(boots, "notify");
    if rows.is_empty() {
        return;
    }
    println!("\n| notify (null scheduler): boot (mode) | events | one-way p50 µs | p99 µs | send p50 µs | p99 µs | IPIs/event | waits ended by the event | gave up |\n|---|---|---|---|---|---|---|---|---|");
    for (label, m) in &rows {
        let g = |k: &str| m.get(k).cloned().unwrap_or_default();
        println!(
            "| {label} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |",
            g("mode"),
            g("events"),
            g("one_way_p50_us"),
            g("one_way_p99_us"),
            g("send_p50_us"),
            g("send_p99_us"),
            g("ipis_per_event"),
            g("wait_event"),
            g("wait_gave_up")
        );
    }
    if let (Some(off), Some(poll)) = (
        metric(boots, "notify-off", "notify", "one_way_p50_us"),
        metric(boots, "notify-poll", "notify", "one_way_p50_us"),
    ) {
        if poll > 0.0 {
            println!("notify p50 off/poll: {off:.1}/{poll:.1} µs = {:.2}x", off / poll);
        }
    }
}

/// The disk's interrupt: completion latency and where it was handled (Linux)
/// and queued (Xen), affinity one CPU vs all CPUs, per scheduler.
fn disk_summary(boots: &[Boot]) {
    let rows: Vec<&BTreeMap<String, String>> =
        boots.iter().flat_map(|b| b.metrics.iter()).filter(|m| is_disk(m)).collect();
    if rows.is_empty() {
        return;
    }
    println!("\n| disk interrupt | reads | p50 µs | p99 µs | handled per vCPU | Xen queued on running/blocked/other vCPU | running share |\n|---|---|---|---|---|---|---|");
    let mut p99 = BTreeMap::new();
    for m in &rows {
        let g = |k: &str| m.get(k).cloned().unwrap_or_default();
        let scenario = g("scenario");
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            scenario.trim_start_matches("disk-"),
            g("reads"),
            g("p50_us"),
            g("p99_us"),
            g("per_vcpu"),
            g("routed").trim_matches(|c| c == '[' || c == ']'),
            g("running_share")
        );
        p99.insert(scenario, g("p99_us").parse::<f64>().unwrap_or(0.0));
    }
    for sched in ["credit2", "credit1"] {
        if let (Some(one), Some(set)) =
            (p99.get(&format!("disk-{sched}-single")), p99.get(&format!("disk-{sched}-set")))
        {
            if *set > 0.0 {
                println!("disk p99 {sched}: one CPU {one:.0} µs / set {set:.0} µs = {:.2}x", one / set);
            }
        }
    }
}
