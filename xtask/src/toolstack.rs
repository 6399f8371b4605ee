//! Debian's Xen 4.17 user space for dom0 (xl, xenstored, xenconsoled and
//! the libraries they load), at the version of the hypervisor source, for
//! the boots that create a second domain. Downloaded once with `apt-get
//! download` and unpacked with `dpkg -x` under
//! `~/.cache/evroute/xen-utils/<version>/`; keyed by that version.

use crate::run::Steps;
use crate::xen;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The packages at `xen::DEBIAN_VERSION`: the toolstack and its Xen libraries.
const XEN_PACKAGES: [&str; 12] = [
    "xen-utils-4.17",
    "xen-utils-common",
    "libxenmisc4.17",
    "libxenstore4",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxentoollog1",
    "libxentoolcore1",
    "libxenhypfs1",
    "libxendevicemodel1",
];

/// What dom0 runs of the toolstack (`/usr/lib/xen-4.17/bin`).
const BINARIES: [&str; 4] = ["xl", "xenstored", "xenconsoled", "xen-init-dom0"];

/// Other libraries `xl` loads, from Debian 12 as it stands.
const OTHER_PACKAGES: [&str; 1] = ["libyajl2"];

/// The C libraries every toolstack binary loads, copied from the machine
/// (a Debian 12 host, as the rest of `cargo xtask e2e` assumes).
/// libgcc_s: glibc loads it for pthread_cancel, which xl uses.
pub const HOST_LIBS: [&str; 8] = [
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "liblzma.so.5",
    "libuuid.so.1",
    "libz.so.1",
    "libzstd.so.1",
    "libbz2.so.1.0",
];

/// The unpacked packages' root.
pub fn fetch(steps: &mut Steps) -> Result<PathBuf, String> {
    let dir = xen::cache_dir().join("xen-utils").join(xen::DEBIAN_VERSION);
    let root = dir.join("root");
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(root);
    }
    let debs = dir.join("debs");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&debs).map_err(|e| format!("{}: {e}", debs.display()))?;
    xen::apt_update_once(steps)?;
    let mut get = Command::new("apt-get");
    get.current_dir(&debs)
        .arg("download")
        .args(XEN_PACKAGES.iter().map(|p| format!("{p}={}", xen::DEBIAN_VERSION)))
        .args(OTHER_PACKAGES);
    steps.run("apt-get download the Xen 4.17 toolstack", get)?;
    let mut names: Vec<PathBuf> = fs::read_dir(&debs)
        .map_err(|e| e.to_string())?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    names.sort();
    for deb in &names {
        let mut x = Command::new("dpkg");
        x.arg("-x").arg(deb).arg(&root);
        steps.run(&format!("dpkg -x {}", deb.file_name().unwrap_or_default().to_string_lossy()), x)?;
    }
    for bin in BINARIES {
        if !root.join("usr/lib/xen-4.17/bin").join(bin).is_file() {
            return Err(format!("the toolstack packages hold no {bin}"));
        }
    }
    fs::write(&done, names.iter().map(|p| format!("{}\n", p.display())).collect::<String>())
        .map_err(|e| e.to_string())?;
    Ok(root)
}

/// Copy the toolstack into an initramfs root: its binaries, the Xen and
/// host libraries, the runtime directories.
pub fn install(toolstack: &Path, root: &Path) -> Result<(), String> {
    let mkdir = |d: &Path| fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()));
    let bin = root.join("usr/lib/xen-4.17/bin");
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    for d in [&bin, &libdir, &root.join("lib/x86_64-linux-gnu"), &root.join("lib64")] {
        mkdir(d)?;
    }
    for d in ["var/lib/xen", "var/log/xen", "run", "etc/xen", "tmp", "domu"] {
        mkdir(&root.join(d))?;
    }
    // As on Debian: /var/run is /run (a tmpfs the init mounts).
    std::os::unix::fs::symlink("../run", root.join("var/run")).map_err(|e| format!("/var/run: {e}"))?;
    let copy = |from: &Path, to: &Path| fs::copy(from, to).map(|_| ()).map_err(|e| format!("{}: {e}", from.display()));
    for b in BINARIES {
        copy(&toolstack.join("usr/lib/xen-4.17/bin").join(b), &bin.join(b))?;
    }
    for e in fs::read_dir(toolstack.join("usr/lib/x86_64-linux-gnu")).map_err(|e| e.to_string())? {
        let p = e.map_err(|e| e.to_string())?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name.contains(".so") {
            // Resolves the packages' symlinks: one file per name.
            copy(&p, &libdir.join(&name))?;
        }
    }
    // xl's own settings file, as Debian installs it.
    copy(&toolstack.join("etc/xen/xl.conf"), &root.join("etc/xen/xl.conf"))?;
    for l in HOST_LIBS {
        copy(&Path::new("/lib/x86_64-linux-gnu").join(l), &root.join("lib/x86_64-linux-gnu").join(l))?;
    }
    copy(Path::new("/lib64/ld-linux-x86-64.so.2"), &root.join("lib64/ld-linux-x86-64.so.2"))
}
