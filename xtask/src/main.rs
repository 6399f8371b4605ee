//! `cargo xtask <command>`: the project's commands, so README, CI and people
//! run the same steps.

mod bench_notify;
mod bench_xen;
mod e2e;
mod linux;
mod loom;
mod run;
mod test_guest;
mod toolstack;
mod xen;

include!("../../xen-patch/harness/seeded.rs");

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "evroute project commands")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The test command: fmt, clippy, unit tests, proptest, the Xen C
    /// differential test, the simulator's validation and main job, loom,
    /// seeded bugs, the guest kernel series (checkpatch, build), then the
    /// QEMU boots (e2e).
    Test,
    /// Run the loom scenarios, or one seeded bug.
    Loom(loom::Args),
    /// Fetch Debian's Xen 4.17.5 source, apply xen-patch/, build xen/xen.
    Xen(xen::Args),
    /// Fetch Debian's Linux 6.1 source, apply guest-evtchn/linux/, build the
    /// dom0 kernel the end-to-end tests boot.
    Linux,
    /// Instructions per set-pending (callgrind): unpatched, off, each policy.
    BenchXen,
    /// The notify path's one-way latency on this machine (dom0 of a host
    /// booted with the patched Xen), beside the modes recorded before.
    BenchNotify(bench_notify::Args),
    /// Boot the patched (and unpatched) Xen under QEMU with a Linux dom0
    /// and run the end-to-end scenarios.
    E2e(e2e::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Test => test(),
        Cmd::Loom(args) => loom::main(&args),
        Cmd::Xen(args) => xen::main(&args),
        Cmd::Linux => linux::main(),
        Cmd::BenchXen => bench_xen::main(),
        Cmd::BenchNotify(args) => bench_notify::main(&args),
        Cmd::E2e(args) => e2e::main(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Each mistake of xen-patch/harness/seeded.rs, put back into the C, must
/// make its test fail.
fn seeded_c(steps: &mut run::Steps) -> Result<(), String> {
    for bug in SEEDED_C {
        let mut cmd = run::Steps::cargo_cmd(&[
            "test",
            "-p",
            "evroute-xen-harness",
            "--release",
            "--test",
            bug.test,
            "--",
            "--exact",
            bug.case,
        ]);
        cmd.env("EVROUTE_SEEDED_C", bug.name);
        eprintln!("==> seeded C bug {}: {}; {} must fail", bug.name, bug.about, bug.case);
        steps.run_must_fail(&format!("harness: seeded C bug {}", bug.name), cmd, "test result: FAILED")?;
    }
    Ok(())
}

fn test() -> Result<(), String> {
    let mut steps = run::Steps::default();
    steps.cargo("fmt", &["fmt", "--all", "--check"], &[])?;
    // The harness compiles the patched Xen files: fetch and patch them first.
    xen::prepare_for_harness(&mut steps)?;
    steps.cargo("clippy", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[])?;
    steps.cargo(
        "clippy (loom build)",
        &["clippy", "-p", "evroute-model", "--features", "loom", "--all-targets", "--", "-D", "warnings"],
        &[],
    )?;
    steps.cargo("no_std build of the model", &["build", "-p", "evroute-model", "--no-default-features"], &[])?;
    // The PV test guest is its own workspace (freestanding, panic=abort).
    test_guest::lint(&mut steps)?;
    steps.cargo("unit tests + proptest", &["test", "--workspace", "--release"], &[])?;
    seeded_c(&mut steps)?;
    // The main job, as the README gives it: the policy table of the default scenario.
    steps.cargo("main job: evroute-sim (default scenario)", &["run", "--release", "-q", "-p", "evroute-sim"], &[])?;
    loom::suite(&mut steps, loom::BOUND_CI)?;
    // The guest series: checked as the kernel's maintainers check it, and
    // built (the boots below use it).
    let kernel = linux::build(&mut steps)?;
    linux::checkpatch(&mut steps, &kernel)?;
    steps.summary();
    // The real system last: the patched Xen booted under QEMU.
    e2e::main(&e2e::Args::default())
}
