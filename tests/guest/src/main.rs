//! evroute's PV test guest: booted by Xen as its initial domain (no Linux),
//! it calls `EVTCHNOP_set_vcpu_set` the ways a Linux guest never does and
//! prints one `EVROUTE <case> PASS|FAIL <detail>` line per case on Xen's
//! console, then `EVROUTE-DONE`, and reboots the machine.
//!
//! Xen's command line for it: `dom0_max_vcpus=4`; its own (the module's):
//! `evroute.mode=<boot label> evroute.route=off|running|balanced`.
#![no_std]
#![no_main]

mod cases;
mod mem;
mod pages;
mod smp;
mod xen;

#[unsafe(no_mangle)]
extern "C" fn guest_main(si: *const xen_sys::start_info) -> ! {
    // SAFETY: Xen passes its start_info in rsi, which _start hands on; this
    // runs once.
    let mem = match unsafe { pages::Memory::new(si) } {
        Ok(m) => m,
        Err(e) => {
            say!("EVROUTE test-guest-start FAIL {e}");
            xen::shutdown(xen_sys::SHUTDOWN_crash);
        }
    };
    let mode = mem.arg("evroute.mode").unwrap_or("?");
    let route = mem.arg("evroute.route").unwrap_or("off");
    say!("EVROUTE-BOOT mode={mode} test guest, evtchn-route={route}, {} vCPUs", pages::NR_VCPUS);
    let mut run = cases::Run::new(&mem, route != "off");
    run.all();
    let ok = run.summary();
    say!("EVROUTE-DONE {}", if ok { "PASS" } else { "FAIL" });
    xen::shutdown(xen_sys::SHUTDOWN_reboot)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("EVROUTE test-guest-panic FAIL {info}");
    xen::shutdown(xen_sys::SHUTDOWN_crash)
}
