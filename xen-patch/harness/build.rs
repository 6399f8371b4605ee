//! Compile the patched Xen files unmodified: strip their `#include` lines,
//! prepend `c/emul.h` (and the stripped `event_route.h`), as Xen's own
//! tools/tests do.
//!
//! The patched tree comes from `cargo xtask xen --prepare`, which records
//! its path in `target/evroute-xen-src`; `EVROUTE_XEN_SRC` overrides it.

include!("seeded.rs");

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let pointer = manifest.join("../../target/evroute-xen-src");
    println!("cargo:rerun-if-env-changed=EVROUTE_XEN_SRC");
    println!("cargo:rerun-if-env-changed=EVROUTE_XEN_PRISTINE");
    println!("cargo:rerun-if-env-changed=EVROUTE_SEEDED_C");
    println!("cargo:rerun-if-changed=seeded.rs");
    println!("cargo:rerun-if-changed={}", pointer.display());
    println!("cargo:rerun-if-changed=c");
    // Line 1: the patched tree; line 2: the same source without the series.
    let recorded = fs::read_to_string(&pointer).unwrap_or_default();
    let mut lines = recorded.lines().map(|l| PathBuf::from(l.trim()));
    let recorded_src = lines.next();
    let src = match env::var("EVROUTE_XEN_SRC") {
        Ok(s) => PathBuf::from(s),
        Err(_) => recorded_src.unwrap_or_else(|| {
            panic!(
                "no patched Xen source: run `cargo xtask xen --prepare` (it writes {}), or set EVROUTE_XEN_SRC",
                pointer.display()
            )
        }),
    };
    // EVROUTE_XEN_PRISTINE=1: event_fifo.c as Debian ships it, for the
    // benchmark's "unpatched" column (cargo xtask bench-xen).
    let fifo_src = if env::var_os("EVROUTE_XEN_PRISTINE").is_some() {
        lines.next().unwrap_or_else(|| panic!("no unpatched Xen source recorded in {}", pointer.display()))
    } else {
        src.clone()
    };
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let xen = src.join("xen");
    for f in ["common/event_fifo.c", "common/event_route.c", "include/xen/event_route.h"] {
        println!("cargo:rerun-if-changed={}", xen.join(f).display());
    }

    let mut fifo = stripped(&fifo_src.join("xen/common/event_fifo.c"));
    let mut route = stripped(&xen.join("common/event_route.c"));
    // EVROUTE_SEEDED_C=<name>: put one mistake back (seeded.rs).
    if let Ok(name) = env::var("EVROUTE_SEEDED_C") {
        let bug = SEEDED_C.iter().find(|b| b.name == name).unwrap_or_else(|| panic!("no seeded C bug {name}"));
        let text = if bug.file == "fifo" { &mut fifo } else { &mut route };
        for (from, to) in bug.edits {
            assert!(text.contains(from), "seeded bug {name}: the patched C no longer has:\n{from}");
            *text = text.replacen(from, to, 1);
        }
    }
    fs::write(out.join("event_route.h"), stripped(&xen.join("include/xen/event_route.h"))).unwrap();
    fs::write(out.join("fifo.c"), prelude() + &fifo).unwrap();
    let glue = fs::read_to_string(manifest.join("c/route_glue.c")).unwrap();
    fs::write(out.join("route.c"), prelude() + &route + &glue).unwrap();

    cc::Build::new()
        .file(manifest.join("c/harness.c"))
        .file(out.join("fifo.c"))
        .file(out.join("route.c"))
        .include(manifest.join("c"))
        .include(&out)
        .include(xen.join("include"))
        .define("__XEN_INTERFACE_VERSION__", "0x00040e00")
        .flag("-std=gnu11")
        .flag_if_supported("-Wno-unused-function")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-sign-compare")
        .flag_if_supported("-Wno-missing-field-initializers")
        .opt_level(2)
        .compile("evroute_xen_harness");
}

fn prelude() -> String {
    "#include \"emul.h\"\n#include \"event_route.h\"\n".to_string()
}

/// The file without its `#include` lines (emul.h stands in for them).
fn stripped(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim_start().starts_with("#include")).map(|l| format!("{l}\n")).collect()
}
