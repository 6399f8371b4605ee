//! `cargo xtask xen`: fetch Debian's Xen source (cached, checked), apply
//! evroute's patch series, build `xen/xen`, print where it is.
//!
//! Cache layout under `~/.cache/evroute/xen/`: the source package files, and
//! one unpacked, patched tree per (source checksum, series checksum), so a
//! rerun with the same inputs reuses the tree and Xen's incremental build.

use crate::run::Steps;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian 12's Xen, pinned: unpinned, apt picks the security suite's newer
/// version whose files were not served when checked.
pub const DEBIAN_VERSION: &str = "4.17.5+72-g01140da4e8-1";
const ORIG: &str = "xen_4.17.5+72-g01140da4e8.orig.tar.xz";
const ORIG_SHA256: &str = "53922f4d0a02c577f2ea9d63f65989cd88715779eebeed879ca1d314103ee06e";
const DSC: &str = "xen_4.17.5+72-g01140da4e8-1.dsc";
const DEB_SRC_LIST: &str = "/etc/apt/sources.list.d/evroute-deb-src.sources";

#[derive(clap::Args)]
pub struct Args {
    /// Fetch and patch only (what the harness needs); do not build Xen.
    #[arg(long)]
    pub prepare: bool,
}

/// A Debian Xen tree, patched with the series or not, ready for the
/// harness or a build.
pub struct Tree {
    pub src: PathBuf,
    pub patched: bool,
}

pub fn main(args: &Args) -> Result<(), String> {
    let mut steps = Steps::default();
    let tree = prepare_for_harness(&mut steps)?;
    if !args.prepare {
        build(&mut steps, &tree)?;
        println!("{}", tree.src.join("xen/xen").display());
        eprintln!("patched Xen: {}", tree.src.join("xen/xen").display());
    } else {
        println!("{}", tree.src.display());
    }
    steps.summary();
    Ok(())
}

pub fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/evroute")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the repository").to_path_buf()
}

/// The series, in order (`xen-patch/0001-…patch`, cover letter excluded).
pub fn series() -> Result<Vec<PathBuf>, String> {
    series_in(&repo_root().join("xen-patch"))
}

/// The `git format-patch` files of `dir`, in order, the cover letter
/// (`0000-…`) excluded; none is an error.
pub fn series_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut patches: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".patch") && !name.starts_with("0000-")
        })
        .collect();
    patches.sort();
    if patches.is_empty() {
        return Err(format!("no patches in {}", dir.display()));
    }
    Ok(patches)
}

pub fn prepare(steps: &mut Steps) -> Result<Tree, String> {
    let pkg = cache_dir().join("xen");
    fs::create_dir_all(&pkg).map_err(|e| format!("{}: {e}", pkg.display()))?;
    ensure_tools(steps)?;
    fetch(steps, &pkg)?;

    let mut key = ORIG_SHA256.to_string();
    for p in series()? {
        key.push_str(&sha256(&p)?);
    }
    let key = &sha256_str(&key)[..16];
    let tree = pkg.join(format!("tree-{key}"));
    let src = tree.join("src");
    let done = tree.join(".evroute-patched");
    if done.exists() {
        eprintln!("==> patched source (cached): {}", src.display());
        return Ok(Tree { src, patched: true });
    }
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(&tree).map_err(|e| e.to_string())?;
    let mut unpack = Command::new("dpkg-source");
    unpack.arg("-x").arg(pkg.join(DSC)).arg(&src);
    steps.run("unpack Debian source (orig + Debian patches)", unpack)?;
    for p in series()? {
        let mut apply = Command::new("patch");
        apply.args(["-p1", "--forward", "--batch", "-d"]).arg(&src).arg("-i").arg(&p);
        let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        steps.run(&format!("apply {name}"), apply)?;
    }
    fs::write(&done, key).map_err(|e| e.to_string())?;
    Ok(Tree { src, patched: true })
}

/// The same Debian source without the series (the benchmark's baseline).
pub fn prepare_pristine(steps: &mut Steps) -> Result<PathBuf, String> {
    let pkg = cache_dir().join("xen");
    let tree = pkg.join(format!("pristine-{}", &ORIG_SHA256[..16]));
    let src = tree.join("src");
    if tree.join(".evroute-unpacked").exists() {
        return Ok(src);
    }
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(&tree).map_err(|e| e.to_string())?;
    let mut unpack = Command::new("dpkg-source");
    unpack.arg("-x").arg(pkg.join(DSC)).arg(&src);
    steps.run("unpack Debian source without the series", unpack)?;
    fs::write(tree.join(".evroute-unpacked"), "").map_err(|e| e.to_string())?;
    Ok(src)
}

/// Prepare the patched (and unpatched) trees and tell the harness's build
/// script where they are.
pub fn prepare_for_harness(steps: &mut Steps) -> Result<Tree, String> {
    let tree = prepare(steps)?;
    let pristine = prepare_pristine(steps)?;
    let pointer = repo_root().join("target/evroute-xen-src");
    fs::create_dir_all(pointer.parent().expect("target/")).map_err(|e| e.to_string())?;
    // Rewrite only on change: build.rs reruns when this file changes.
    let want = format!("{}\n{}\n", tree.src.display(), pristine.display());
    if fs::read_to_string(&pointer).ok().as_deref() != Some(want.as_str()) {
        fs::write(&pointer, &want).map_err(|e| format!("{}: {e}", pointer.display()))?;
    }
    Ok(tree)
}

/// On top of defconfig: 32-bit PV guests (so the compat paths are built and
/// checked); the null scheduler (Debian's config has none: `sched=null`
/// would fall back to credit2 silently), which needs EXPERT and
/// UNSUPPORTED; software perf counters (IPIs and the notify path's counts,
/// read through the 'p' key); routing compiled in, and its per-channel
/// counts, which the booted tests read (the unpatched tree has no routing
/// options; Kconfig drops them there).
const CONFIG: [&str; 7] = [
    "CONFIG_PV32=y",
    "CONFIG_EXPERT=y",
    "CONFIG_UNSUPPORTED=y",
    "CONFIG_SCHED_NULL=y",
    "CONFIG_PERF_COUNTERS=y",
    "CONFIG_EVTCHN_ROUTE=y",
    "CONFIG_EVTCHN_ROUTE_STATS=y",
];

pub fn build(steps: &mut Steps, tree: &Tree) -> Result<(), String> {
    let xen = tree.src.join("xen");
    configure(steps, &xen, tree.patched)?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut make = Command::new("make");
    make.arg("-C").arg(&xen).arg(format!("-j{jobs}")).arg("-s");
    steps.run("build Xen", make)?;
    let image = xen.join("xen");
    if !image.exists() {
        return Err(format!("the build finished but {} is missing", image.display()));
    }
    Ok(())
}

/// defconfig plus [`CONFIG`], once per tree (a marker file records it).
fn configure(steps: &mut Steps, xen: &Path, patched: bool) -> Result<(), String> {
    let want: Vec<&str> = CONFIG.iter().copied().filter(|c| patched || !c.contains("EVTCHN_ROUTE")).collect();
    let marker = xen.join(".evroute-config");
    if fs::read_to_string(&marker).ok().as_deref() == Some(want.join("\n").as_str()) && xen.join(".config").exists() {
        return Ok(());
    }
    let mut def = Command::new("make");
    def.arg("-C").arg(xen).arg("defconfig");
    steps.run("configure Xen (defconfig)", def)?;
    let config = xen.join(".config");
    let mut text = fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    for c in &want {
        text.push_str(c);
        text.push('\n');
    }
    fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    let mut old = Command::new("make");
    old.arg("-C").arg(xen).arg("olddefconfig");
    steps.run(&format!("configure Xen ({})", want.join(" ")), old)?;
    let got = fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    for c in &want {
        if !got.lines().any(|l| l == *c) {
            return Err(format!("{} lost {c} after olddefconfig (a dependency missing?)", config.display()));
        }
    }
    fs::write(&marker, want.join("\n")).map_err(|e| format!("{}: {e}", marker.display()))
}

/// flex and bison for Xen's build, dpkg-source to unpack, patch to apply.
fn ensure_tools(steps: &mut Steps) -> Result<(), String> {
    let missing: Vec<&str> = [("flex", "flex"), ("bison", "bison"), ("dpkg-source", "dpkg-dev"), ("patch", "patch")]
        .into_iter()
        .filter(|(bin, _)| !on_path(bin))
        .map(|(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(steps, &missing)
}

pub fn apt_install(steps: &mut Steps, pkgs: &[&str]) -> Result<(), String> {
    apt_update_once(steps)?;
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "-q", "--no-install-recommends"]).args(pkgs).env("DEBIAN_FRONTEND", "noninteractive");
    steps.run(&format!("apt-get install {}", pkgs.join(" ")), cmd)
}

pub fn apt_update_once(steps: &mut Steps) -> Result<(), String> {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let mut cmd = Command::new("apt-get");
    cmd.args(["update", "-q"]);
    steps.run("apt-get update", cmd)
}

pub fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(bin).is_file()))
}

/// Download the pinned source package once; check the orig tarball.
fn fetch(steps: &mut Steps, pkg: &Path) -> Result<(), String> {
    let orig = pkg.join(ORIG);
    if !(orig.exists() && pkg.join(DSC).exists()) {
        if !Path::new(DEB_SRC_LIST).exists() {
            fs::write(
                DEB_SRC_LIST,
                "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            )
            .map_err(|e| format!("cannot add Debian's source list {DEB_SRC_LIST} (run as root): {e}"))?;
        }
        let mut update = Command::new("apt-get");
        update.args(["update", "-q"]);
        steps.run("apt-get update (with deb-src)", update)?;
        let mut get = Command::new("apt-get");
        get.args(["source", "--download-only", "-q"]).arg(format!("xen={DEBIAN_VERSION}")).current_dir(pkg);
        steps.run(&format!("fetch Debian source xen={DEBIAN_VERSION}"), get)?;
    } else {
        eprintln!("==> Debian source xen={DEBIAN_VERSION} (cached): {}", pkg.display());
    }
    let sum = sha256(&orig)?;
    if sum != ORIG_SHA256 {
        return Err(format!("{} has sha256 {sum}, expected {ORIG_SHA256}; delete it to refetch", orig.display()));
    }
    Ok(())
}

pub fn sha256(path: &Path) -> Result<String, String> {
    let out = Command::new("sha256sum").arg(path).output().map_err(|e| format!("sha256sum: {e}"))?;
    if !out.status.success() {
        return Err(format!("sha256sum {} failed", path.display()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string())
}

pub fn sha256_str(s: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum is part of coreutils");
    child.stdin.take().expect("piped").write_all(s.as_bytes()).expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}
