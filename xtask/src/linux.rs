//! `cargo xtask linux`: fetch Debian's Linux 6.1 source (pinned, cached,
//! checked), apply the guest series `guest-evtchn/linux/`, build a small Xen
//! PV dom0 kernel from `guest-evtchn/linux/dom0.config`, print where its
//! bzImage is.
//!
//! Cache under `~/.cache/evroute/linux/`: the source package, and one tree
//! per (package, series, config), with its build, so a rerun with the same
//! inputs builds nothing. Older trees are removed (each is ~1.5 GB).

use crate::run::Steps;
use crate::xen::{apt_install, cache_dir, on_path, repo_root, series_in, sha256, sha256_str};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian 12's kernel source, pinned: it comes from the security suite, whose
/// version moves; the archive keeps a few older ones for a while.
pub const VERSION: &str = "6.1.192-3";
const DEB: &str = "linux-source-6.1_6.1.192-3_all.deb";
const DEB_SHA256: &str = "5259c57ca92092da39bd2ea803046da0e3c28f2b6a11ea20f6297468188ceb67";

/// A built kernel: the image to boot, and the tree it came from.
pub struct Kernel {
    pub bzimage: PathBuf,
    pub src: PathBuf,
}

pub fn main() -> Result<(), String> {
    let mut steps = Steps::default();
    let k = build(&mut steps)?;
    println!("{}", k.bzimage.display());
    eprintln!("patched dom0 kernel: {}", k.bzimage.display());
    steps.summary();
    Ok(())
}

fn linux_dir() -> PathBuf {
    repo_root().join("guest-evtchn/linux")
}

/// The series, in order (the cover letter excluded).
pub fn series() -> Result<Vec<PathBuf>, String> {
    series_in(&linux_dir())
}

/// `CONFIG_X=y` / `CONFIG_X=n` lines of dom0.config; a bad line is an
/// error naming the file and line.
pub fn config_options() -> Result<Vec<(String, bool)>, String> {
    let path = linux_dir().join("dom0.config");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut opts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("{}:{}: expected CONFIG_<NAME>=y or =n, found '{line}'", path.display(), i + 1);
        let (name, value) = line.split_once('=').ok_or_else(bad)?;
        let ok_name = name.strip_prefix("CONFIG_").is_some_and(|n| {
            !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        });
        let on = match value {
            "y" => true,
            "n" => false,
            _ => return Err(bad()),
        };
        if !ok_name {
            return Err(bad());
        }
        opts.push((name.to_string(), on));
    }
    Ok(opts)
}

/// Fetch, patch, configure and build (each step skipped when cached).
pub fn build(steps: &mut Steps) -> Result<Kernel, String> {
    let dir = cache_dir().join("linux");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    ensure_tools(steps)?;
    let deb = fetch(steps, &dir)?;
    let options = config_options()?;

    let mut key = DEB_SHA256.to_string();
    for p in series()? {
        key.push_str(&sha256(&p)?);
    }
    key.push_str(&sha256(&linux_dir().join("dom0.config"))?);
    let key = &sha256_str(&key)[..16];
    let tree = dir.join(format!("tree-{key}"));
    let src = tree.join("linux-source-6.1");
    let bzimage = src.join("arch/x86/boot/bzImage");
    let built = tree.join(".evroute-built");
    if built.exists() && bzimage.exists() {
        eprintln!("==> patched dom0 kernel (cached): {}", bzimage.display());
        return Ok(Kernel { bzimage, src });
    }

    let patched = tree.join(".evroute-patched");
    if !patched.exists() {
        remove_other_trees(&dir, &tree);
        let _ = fs::remove_dir_all(&tree);
        fs::create_dir_all(&tree).map_err(|e| e.to_string())?;
        let mut unpack = Command::new("sh");
        unpack.arg("-c").arg(format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -xO ./usr/src/linux-source-6.1.tar.xz | tar -xJ -C '{}'",
            deb.display(),
            tree.display()
        ));
        steps.run(&format!("unpack linux-source-6.1 {VERSION}"), unpack)?;
        for p in series()? {
            let mut apply = Command::new("patch");
            apply.args(["-p1", "--forward", "--batch", "-d"]).arg(&src).arg("-i").arg(&p);
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            steps.run(&format!("apply {name}"), apply)?;
        }
        fs::write(&patched, key).map_err(|e| e.to_string())?;
    }

    configure(steps, &src, &options)?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut make = Command::new("make");
    make.arg("-C").arg(&src).arg(format!("-j{jobs}")).args(["-s", "bzImage"]);
    steps.run(&format!("build the dom0 kernel (make -j{jobs} bzImage)"), make)?;
    if !bzimage.exists() {
        return Err(format!("the build finished but {} is missing", bzimage.display()));
    }
    fs::write(&built, key).map_err(|e| e.to_string())?;
    Ok(Kernel { bzimage, src })
}

/// `make tinyconfig`, each option of dom0.config, `make olddefconfig`; then
/// every option must read as asked (Kconfig drops one silently when a
/// dependency is missing).
fn configure(steps: &mut Steps, src: &Path, options: &[(String, bool)]) -> Result<(), String> {
    let make = |target: &str| {
        let mut c = Command::new("make");
        c.arg("-C").arg(src).args(["-s", target]);
        c
    };
    steps.run("configure the kernel (tinyconfig)", make("tinyconfig"))?;
    let mut set = Command::new(src.join("scripts/config"));
    set.arg("--file").arg(src.join(".config"));
    for (name, on) in options {
        set.arg(if *on { "--enable" } else { "--disable" }).arg(name.trim_start_matches("CONFIG_"));
    }
    steps.run("configure the kernel (dom0.config)", set)?;
    steps.run("configure the kernel (olddefconfig)", make("olddefconfig"))?;
    let config = fs::read_to_string(src.join(".config")).map_err(|e| format!("{}/.config: {e}", src.display()))?;
    for (name, on) in options {
        let is_y = config.lines().any(|l| l == format!("{name}=y"));
        if is_y != *on {
            return Err(format!(
                "{name} is {} after olddefconfig, dom0.config asks for {} (a dependency missing?)",
                if is_y { "y" } else { "not set" },
                if *on { "y" } else { "n" }
            ));
        }
    }
    Ok(())
}

fn remove_other_trees(dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p != keep && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("tree-")) {
            eprintln!("==> removing the older kernel tree {}", p.display());
            let _ = fs::remove_dir_all(&p);
        }
    }
}

/// The kernel build's tools: flex, bison, bc, libelf (objtool), xz.
fn ensure_tools(steps: &mut Steps) -> Result<(), String> {
    let mut missing: Vec<&str> =
        [("flex", "flex"), ("bison", "bison"), ("bc", "bc"), ("xz", "xz-utils"), ("make", "make")]
            .into_iter()
            .filter(|(bin, _)| !on_path(bin))
            .map(|(_, pkg)| pkg)
            .collect();
    if !Path::new("/usr/include/gelf.h").exists() {
        missing.push("libelf-dev");
    }
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(steps, &missing)
}

/// Download the pinned package once; check it.
fn fetch(steps: &mut Steps, dir: &Path) -> Result<PathBuf, String> {
    let deb = dir.join(DEB);
    if !deb.exists() {
        crate::xen::apt_update_once(steps)?;
        let mut get = Command::new("apt-get");
        get.args(["download", "-q"]).arg(format!("linux-source-6.1={VERSION}")).current_dir(dir);
        steps.run(&format!("fetch linux-source-6.1={VERSION}"), get).map_err(|e| {
            format!(
                "{e}\nlinux-source-6.1 {VERSION} may have left the archive (the security suite's version moves): \
                 `apt-cache madison linux-source-6.1` lists what is there; pin one in xtask/src/linux.rs \
                 (VERSION, DEB, DEB_SHA256) and check that guest-evtchn/linux/ still applies"
            )
        })?;
    } else {
        eprintln!("==> linux-source-6.1={VERSION} (cached): {}", deb.display());
    }
    let sum = sha256(&deb)?;
    if sum != DEB_SHA256 {
        return Err(format!("{} has sha256 {sum}, expected {DEB_SHA256}; delete it to refetch", deb.display()));
    }
    Ok(deb)
}

/// The series as the kernel's maintainers check it: `checkpatch.pl --strict`
/// from the tree it applies to, clean (a CHECK fails too).
pub fn checkpatch(steps: &mut Steps, k: &Kernel) -> Result<(), String> {
    let mut cmd = Command::new(k.src.join("scripts/checkpatch.pl"));
    cmd.args(["--strict", "--no-tree", "-q"]).args(series()?);
    steps.run("checkpatch.pl --strict guest-evtchn/linux/", cmd)
}
