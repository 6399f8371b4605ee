//! The PV test guest (`tests/guest/`, its own workspace): built as a static
//! freestanding ELF for the host's x86-64 target (CI's toolchain has no
//! other), linted, and booted against Xens with one of the series' checks
//! undone, whose cases must then fail.

use crate::run::Steps;
use crate::xen::{self, Tree};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// Codegen for a guest that Xen maps at its link addresses (no PIE).
const RUSTFLAGS: &str = "-C\x1frelocation-model=static";

fn manifest() -> String {
    xen::repo_root().join("tests/guest/Cargo.toml").to_string_lossy().into_owned()
}

fn target_dir() -> String {
    xen::repo_root().join("target/test-guest").to_string_lossy().into_owned()
}

/// Builds the guest; returns the ELF Xen boots.
pub fn build(steps: &mut Steps) -> Result<PathBuf, String> {
    let target = target_dir();
    steps.cargo(
        "build the PV test guest",
        &["build", "--release", "--manifest-path", &manifest()],
        &[("CARGO_TARGET_DIR", &target), ("CARGO_ENCODED_RUSTFLAGS", RUSTFLAGS)],
    )?;
    Ok(PathBuf::from(target).join("release/evroute-test-guest"))
}

/// rustfmt and clippy on the guest, which the workspace's runs do not see.
pub fn lint(steps: &mut Steps) -> Result<(), String> {
    let target = target_dir();
    let env = [("CARGO_TARGET_DIR", target.as_str()), ("CARGO_ENCODED_RUSTFLAGS", RUSTFLAGS)];
    steps.cargo("fmt (test guest)", &["fmt", "--check", "--manifest-path", &manifest()], &[])?;
    steps.cargo(
        "clippy (test guest)",
        &["clippy", "--release", "--manifest-path", &manifest(), "--", "-D", "warnings"],
        &env,
    )
}

/// A Xen with one check of the series undone, and the guest's cases that
/// must then fail.
pub struct Broken {
    pub name: &'static str,
    pub about: &'static str,
    /// `xen/common/<file>`, each text replaced (exactly once) and its replacement.
    file: &'static str,
    edits: Edits,
    pub must_fail: &'static [&'static str],
}

enum Edits {
    /// The edits of the harness's seeded C bug of this name.
    Seeded(&'static str),
    Own(&'static [(&'static str, &'static str)]),
}

pub const BROKEN: [Broken; 2] = [
    Broken {
        name: "route-ignores-receivable",
        about: "routing may pick a vCPU that has not mapped its control block",
        file: "event_route.c",
        edits: Edits::Seeded("route-ignores-receivable"),
        must_fail: &["event-vcpu-without-control-block"],
    },
    // Xen's guest-access copies refuse its own range by themselves (even
    // the unchecked `__copy_*_guest` mask the address), so the mistake
    // put back is the one that loses them: the address used as a pointer.
    // Xen then reads and writes its own memory for the guest, and faults
    // at the read-only M2P write that follows the rows below.
    Broken {
        name: "bitmap-as-pointer",
        about: "the bitmap's address is used as Xen's own pointer (memcpy) instead of through a guest-access copy",
        file: "event_route.c",
        edits: Edits::Own(&[
            ("copy_from_guest(bytes, bitmap, nbytes)", "!memcpy(bytes, bitmap.p, nbytes)"),
            ("copy_to_guest(bitmap, bytes, nbytes)", "!memcpy(bitmap.p, bytes, nbytes)"),
        ]),
        must_fail: &["row10-xen-directmap", "row10-xen-directmap-get", "row10-xen-m2p"],
    },
];

impl Broken {
    fn edits(&self) -> Result<&'static [(&'static str, &'static str)], String> {
        match self.edits {
            Edits::Own(e) => Ok(e),
            Edits::Seeded(name) => crate::SEEDED_C
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.edits)
                .ok_or_else(|| format!("no seeded C bug '{name}' in xen-patch/harness/seeded.rs")),
        }
    }

    /// The patched tree copied, the edits made, built; cached per tree.
    pub fn build(&self, steps: &mut Steps, patched: &Tree) -> Result<PathBuf, String> {
        let key = patched.src.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("tree");
        let dir = xen::cache_dir().join("xen").join(format!("broken-{}-{key}", self.name));
        let src = dir.join("src");
        let image = src.join("xen/xen");
        let done = dir.join(".evroute-built");
        if done.exists() && image.exists() {
            eprintln!("==> Xen with '{}' (cached): {}", self.name, image.display());
            return Ok(image);
        }
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(&patched.src).arg(&src);
        steps.run(&format!("copy the patched Xen for '{}'", self.name), cp)?;
        let file = src.join("xen/common").join(self.file);
        let mut text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        for (from, to) in self.edits()? {
            if text.matches(from).count() != 1 {
                return Err(format!("broken Xen '{}': {from:?} is not in {} exactly once", self.name, file.display()));
            }
            text = text.replace(from, to);
        }
        fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        xen::build(steps, &Tree { src: src.clone(), patched: true })?;
        fs::write(&done, "").map_err(|e| e.to_string())?;
        Ok(image)
    }
}
