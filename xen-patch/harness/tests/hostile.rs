//! What a hostile or careless guest can do to `EVTCHNOP_set_vcpu_set` and
//! routing, against the patched C: each test is named after the rule it
//! checks, and each failed on the first version of the series.

use evroute_model::abi::{EvtchnSetVcpuSet, SharedEvents, EVTCHN_VCPU_SET_GET, LINKED, PENDING};
use evroute_model::hypervisor::{Kind, LastQ, RunState};
use evroute_model::Policy;
use evroute_xen_harness::{DomainConfig, XenDomain, COMPAT_VIRT_START, XEN_AREA};
use std::sync::atomic::Ordering::SeqCst;

const EINVAL: i32 = -22;
const EFAULT: i32 = -14;
const ENOMEM: i32 = -12;
const ENOSPC: i32 = -28;

fn running(nr_vcpus: u32) -> XenDomain {
    XenDomain::with(DomainConfig::new(nr_vcpus, 16, Policy::PreferRunning))
}

/// The set a GET reads back (the domain's first `nr_vcpus` bits).
fn get(x: &XenDomain, port: u32) -> Vec<u32> {
    let mut b = vec![0u8; x.nr_vcpus().div_ceil(8) as usize];
    let (rc, _) = x.set_vcpu_set(port, EVTCHN_VCPU_SET_GET, x.nr_vcpus(), Some(&mut b));
    assert_eq!(rc, 0, "GET of port {port}");
    (0..x.nr_vcpus()).filter(|v| b[*v as usize / 8] >> (v % 8) & 1 != 0).collect()
}

fn set(x: &XenDomain, port: u32, vcpus: &[u32]) -> i32 {
    let mut b = vec![0u8; x.nr_vcpus().div_ceil(8) as usize];
    for v in vcpus {
        b[*v as usize / 8] |= 1 << (v % 8);
    }
    x.set_vcpu_set(port, 0, x.nr_vcpus(), Some(&mut b)).0
}

/// The vCPU whose queue `port` was last linked on.
fn last_vcpu(x: &XenDomain, port: u32) -> u32 {
    LastQ::from_raw(x.lastq(port)).vcpu
}

fn pending(x: &XenDomain, port: u32) -> bool {
    x.word(port).unwrap().load(SeqCst) & PENDING != 0
}

/// Every vCPU that exists consumes its queues.
fn consume_all(x: &XenDomain, nr_vcpus: u32) {
    for v in (0..nr_vcpus).filter(|v| x.vcpu_exists(*v)) {
        let mut c = evroute_model::guest::Consumer::new(v, 16, evroute_model::guest::Faults::NONE);
        c.upcall(x, &(), &mut |_| {});
    }
}

/// A 32-bit PV guest names no address at or above 4GiB, nor a range that
/// runs into Xen's compat area: such a bitmap is refused with -EFAULT
/// before any copy, so neither GET writes nor a set reads Xen's own
/// mappings of the guest (its per-domain area, below 2^47).
#[test]
fn pv32_bitmap_outside_the_guest_is_refused_before_any_copy() {
    let x = XenDomain::with(DomainConfig { pv32: true, ..DomainConfig::new(4, 16, Policy::PreferRunning) });
    let p = x.alloc(Kind::Interdomain, 0).unwrap();
    let bad = [
        XEN_AREA,
        XEN_AREA + 0x1000,
        1 << 32,
        u64::from(u32::MAX),
        COMPAT_VIRT_START,
        COMPAT_VIRT_START - 1, // two bytes straddle the compat area
        u64::MAX - 1,
        u64::MAX - 100, // the range wraps past 2^64
    ];
    for addr in bad {
        for flags in [0, EVTCHN_VCPU_SET_GET] {
            let mut op = EvtchnSetVcpuSet { port: p, flags, nr_bits: 16, pad: 0, bitmap: addr };
            // SAFETY: a 32-bit domain's addresses are its own; any is safe.
            let rc = unsafe { x.vcpu_set_op(&mut op) };
            assert_eq!(rc, EFAULT, "address {addr:#x}, flags {flags}");
        }
    }
    assert_eq!(x.counters().xen_area_accesses, 0, "a copy reached Xen's per-domain area");
    assert_eq!(x.notify_vcpu(p), 0);

    // Its own pages work, up to the last byte below the compat area.
    let top = x.g32_addr(1) + 4094;
    let low = x.g32_addr(0);
    x.g32_write(1, 4094, &[0b0110, 0]);
    for (bitmap, flags) in [(top, 0), (low, EVTCHN_VCPU_SET_GET)] {
        let mut op = EvtchnSetVcpuSet { port: p, flags, nr_bits: 16, pad: 0, bitmap };
        // SAFETY: as above.
        assert_eq!(unsafe { x.vcpu_set_op(&mut op) }, 0, "{bitmap:#x}");
    }
    assert_eq!(x.g32_read(0)[..2], [0b0110, 0], "read back through the low page");
    assert_eq!(x.counters().xen_area_accesses, 0);
}

/// An HVM guest calling in 32-bit mode names only addresses below 4GiB:
/// above, Xen's copy for an HVM compat caller would reach its argument
/// translation area (in the per-domain area) directly.
#[test]
fn compat_caller_bitmap_above_4gib_is_refused_before_any_copy() {
    let x = XenDomain::with(DomainConfig { compat_calls: true, ..DomainConfig::new(4, 16, Policy::PreferRunning) });
    let p = x.alloc(Kind::Interdomain, 0).unwrap();
    for addr in [XEN_AREA, XEN_AREA + 0x800, 1 << 32, (1 << 32) - 1, u64::MAX - 100] {
        for flags in [0, EVTCHN_VCPU_SET_GET] {
            let mut op = EvtchnSetVcpuSet { port: p, flags, nr_bits: 16, pad: 0, bitmap: addr };
            // SAFETY: a 32-bit caller's addresses are its own (two pages and
            // Xen's areas, hx_guest_range()); any value is safe.
            let rc = unsafe { x.vcpu_set_op(&mut op) };
            assert_eq!(rc, EFAULT, "address {addr:#x}, flags {flags}");
        }
    }
    assert_eq!(x.counters().xen_area_accesses, 0, "a copy reached Xen's per-domain area");
    assert_eq!(x.notify_vcpu(p), 0);
}

/// A vCPU put down while already descheduled (an INIT IPI while paused)
/// has no run-state change to say so; routing still never queues on it.
#[test]
fn a_vcpu_put_down_while_paused_is_never_chosen() {
    let x = running(3);
    let p = x.alloc(Kind::Interdomain, 0).unwrap();
    assert_eq!(set(&x, p, &[0, 1, 2]), 0);
    x.set_run_state(0, RunState::Offline);
    x.pause(1);
    x.set_down(1, true);
    x.set_run_state(2, RunState::Runnable);
    assert_eq!(x.send(p), 0);
    assert_ne!(last_vcpu(&x, p), 1, "queued on a vCPU that is down");
}

/// `pad` must be zero, so that it can carry meaning later; a non-zero pad
/// changes nothing.
#[test]
fn non_zero_pad_is_refused() {
    let x = running(4);
    let p = x.alloc(Kind::Interdomain, 0).unwrap();
    let mut b = [0b11u8];
    for pad in [1, 0x8000_0000, u32::MAX] {
        let mut op = EvtchnSetVcpuSet { port: p, flags: 0, nr_bits: 8, pad, bitmap: b.as_mut_ptr() as u64 };
        // SAFETY: the bitmap is `b`, one byte for 8 bits, alive for the call.
        assert_eq!(unsafe { x.vcpu_set_op(&mut op) }, EINVAL, "pad {pad:#x}");
    }
    assert_eq!(get(&x, p), vec![0]);
}

/// A guest copy may fault, and for an HVM guest sleep on paging: it is made
/// with no lock held, set or GET, on domains with inline and allocated sets.
#[test]
fn no_guest_copy_under_a_lock() {
    for n in [4, 70] {
        let x = running(n);
        let p = x.alloc(Kind::Interdomain, 0).unwrap();
        assert_eq!(set(&x, p, &[1, 2]), 0);
        assert_eq!(get(&x, p), vec![1, 2]);
        assert_eq!(x.set_vcpu_set(p, 0, 8, None).0, EFAULT);
        assert_eq!(x.set_vcpu_set(p, EVTCHN_VCPU_SET_GET, 8, None).0, EFAULT);
        assert_eq!(x.counters().copies_under_lock, 0, "{n} vCPUs");
    }
}

/// A set that moves the bound vCPU (and a PIRQ's affinity with it) changes
/// nothing if any allocation fails: allocate first, then commit.
#[test]
fn a_failed_allocation_changes_nothing() {
    for n in [4, 70] {
        for policy in [Policy::PreferRunning, Policy::Balanced] {
            for k in 1..=8 {
                let x = XenDomain::with(DomainConfig::new(n, 16, policy));
                let p = x.alloc(Kind::Interdomain, 0).unwrap();
                x.fail_alloc_in(k);
                let rc = set(&x, p, &[2, 3]);
                x.fail_alloc_in(0);
                match rc {
                    0 => assert_eq!(get(&x, p), vec![2, 3]),
                    ENOMEM => {
                        assert_eq!(x.notify_vcpu(p), 0, "{n} vCPUs, allocation {k}: bound vCPU moved");
                        assert_eq!(get(&x, p), vec![0], "{n} vCPUs, allocation {k}: set changed");
                    }
                    rc => panic!("{n} vCPUs, allocation {k}: {rc}"),
                }
            }
        }
    }
}

/// Routing picks only a vCPU that can take the event: one that runs but
/// never mapped its control block, one that is offline, one no upcall
/// reaches (HVM without a vector callback), one that does not exist: none
/// gets the event, which is never dropped. Once vCPU 1 maps its control
/// block, events go to it.
#[test]
fn never_routed_to_a_vcpu_that_cannot_take_the_event() {
    for policy in [Policy::PreferRunning, Policy::Balanced] {
        let cfg = DomainConfig { unmapped: 0b0010, gap: 4, ..DomainConfig::new(6, 16, policy) };
        let x = XenDomain::with(cfg);
        let p = x.alloc(Kind::Interdomain, 0).unwrap();
        assert_eq!(set(&x, p, &[0, 1, 2, 3, 4, 5]), 0);
        x.set_run_state(0, RunState::Runnable);
        x.set_run_state(2, RunState::Offline);
        x.set_upcall(3, false);
        x.set_run_state(5, RunState::Runnable);
        // vCPUs 1 and 3 run, 2 is offline, 4 does not exist: 0 and 5 are
        // preempted; the bound vCPU 0 is the one that can take it.
        for _ in 0..3 {
            assert_eq!(x.send(p), 0);
            assert!(pending(&x, p), "{policy:?}: event dropped");
            assert_eq!(last_vcpu(&x, p), 0, "{policy:?}");
            consume_all(&x, 6);
        }
        assert_eq!(x.counters().warnings, 0, "{policy:?}: Xen warned (a dropped event)");
        assert_eq!(x.init_control(1), 0);
        assert_eq!(x.send(p), 0);
        assert_eq!(last_vcpu(&x, p), 1, "{policy:?}: once mapped, the running vCPU");
        consume_all(&x, 6);
        x.set_upcall(3, true);
        x.set_run_state(1, RunState::Offline);
        assert_eq!(x.send(p), 0);
        assert_eq!(last_vcpu(&x, p), 3, "{policy:?}: the upcall reaches vCPU 3 now");
    }
}

/// A set none of whose vCPUs can take events is refused, and the bound vCPU
/// a set moves to is one that can.
#[test]
fn a_set_needs_a_vcpu_that_can_take_events() {
    let x =
        XenDomain::with(DomainConfig { unmapped: 0b0010, gap: 3, ..DomainConfig::new(5, 16, Policy::PreferRunning) });
    let p = x.alloc(Kind::Interdomain, 0).unwrap();
    x.set_run_state(2, RunState::Offline);
    x.set_upcall(4, false);
    for vcpus in [&[1][..], &[2], &[3], &[4], &[1, 2, 3, 4]] {
        assert_eq!(set(&x, p, vcpus), EINVAL, "{vcpus:?}");
    }
    assert_eq!(get(&x, p), vec![0]);
    assert_eq!(set(&x, p, &[1, 2, 3, 4, 0]), 0);
    assert_eq!(x.notify_vcpu(p), 0);
    x.set_upcall(4, true);
    assert_eq!(set(&x, p, &[1, 2, 3, 4]), 0);
    assert_eq!(x.notify_vcpu(p), 4, "the first vCPU of the set that can take events");
}

/// A domain's first set allocates its routing state; if the call fails
/// after that (no vCPU of the set can take events), the state goes back
/// to the allocator it came from, whole.
#[test]
fn a_failed_first_set_frees_what_it_allocated() {
    for n in [4, 70] {
        let x = XenDomain::with(DomainConfig { unmapped: 0b0010, ..DomainConfig::new(n, 16, Policy::PreferRunning) });
        let p = x.alloc(Kind::Interdomain, 0).unwrap();
        assert_eq!(set(&x, p, &[1]), EINVAL);
        let c = x.counters();
        assert_eq!(c.wrong_frees, 0, "{n} vCPUs: vmalloc'ed state given to xfree()");
        assert_eq!(c.live_allocs, 0, "{n} vCPUs: leaked");
    }
}

/// Domains of up to 64 vCPUs keep a set inside the channel: sets cost no
/// allocation beyond the domain's routing state.
#[test]
fn small_domains_keep_sets_in_the_channel() {
    let x = running(64);
    let ports: Vec<u32> = (0..8).map(|_| x.alloc(Kind::Interdomain, 0).unwrap()).collect();
    assert_eq!(set(&x, ports[0], &[1, 63]), 0);
    let after_first = x.counters().live_allocs;
    for (i, p) in ports.iter().enumerate() {
        assert_eq!(set(&x, *p, &[i as u32, 40, 63]), 0);
        assert_eq!(x.send(*p), 0);
    }
    assert_eq!(x.counters().live_allocs, after_first, "a set allocated memory");
}

/// Larger domains allocate a set per channel, within evtchn-route-max-sets:
/// past it -ENOSPC, and nothing changes; a closed channel gives its back.
#[test]
fn sets_a_domain_may_allocate_are_bounded() {
    let x = XenDomain::with(DomainConfig { max_sets: 3, ..DomainConfig::new(70, 16, Policy::PreferRunning) });
    let ports: Vec<u32> = (0..4).map(|_| x.alloc(Kind::Interdomain, 0).unwrap()).collect();
    for p in &ports[..3] {
        assert_eq!(set(&x, *p, &[1, 65]), 0);
    }
    let live = x.counters().live_allocs;
    assert_eq!(set(&x, ports[3], &[2, 66]), ENOSPC);
    assert_eq!(get(&x, ports[3]), vec![0]);
    assert_eq!(x.notify_vcpu(ports[3]), 0);
    assert_eq!(x.counters().live_allocs, live);
    // A channel that has its set may change it.
    assert_eq!(set(&x, ports[0], &[3, 69]), 0);
    assert_eq!(x.close(ports[1]), 0);
    assert_eq!(x.counters().live_allocs, live - 1, "close freed the set");
    assert_eq!(set(&x, ports[3], &[2, 66]), 0);
}

/// With the option off, and with it on for a domain that never gave a
/// channel a set, Xen keeps no routing state: nothing is allocated on a
/// context switch or a send.
#[test]
fn no_routing_state_without_a_set() {
    for policy in [Policy::Bound, Policy::PreferRunning, Policy::Balanced] {
        let x = XenDomain::with(DomainConfig::new(8, 16, policy));
        let p = x.alloc(Kind::Interdomain, 0).unwrap();
        for i in 0..100 {
            x.set_run_state(i % 8, if i % 3 == 0 { RunState::Blocked } else { RunState::Running });
            assert_eq!(x.send(p), 0);
            consume_all(&x, 8);
        }
        assert_eq!(x.counters().live_allocs, 0, "{policy:?}");
    }
}

/// An event still LINKED stays on its queue whatever routing prefers, on a
/// domain whose set spans several words.
#[test]
fn a_linked_event_stays_on_its_queue() {
    let x = running(130);
    let p = x.alloc(Kind::Interdomain, 0).unwrap();
    assert_eq!(set(&x, p, &[0, 65, 129]), 0);
    assert_eq!(x.send(p), 0);
    let first = last_vcpu(&x, p);
    x.set_run_state(first, RunState::Runnable);
    x.word(p).unwrap().fetch_and(!PENDING, SeqCst); // handled, not yet unlinked
    assert_eq!(x.send(p), 0);
    assert_eq!(last_vcpu(&x, p), first);
    assert_ne!(x.word(p).unwrap().load(SeqCst) & LINKED, 0);
}

/// The per-channel counts say where each event was queued, by the state of
/// that vCPU as routing reads it, for a channel with a set and one without;
/// a domain that never gave a set has no routing state and counts nothing;
/// a freed port starts from zero when it is bound again.
#[test]
fn per_channel_counts_follow_the_vcpu_routing_picked() {
    let x = running(4);
    let plain = x.alloc(Kind::Interdomain, 1).unwrap();
    let routed = x.alloc(Kind::Interdomain, 0).unwrap();
    x.set_run_state(1, RunState::Running);
    assert_eq!(x.send(plain), 0);
    assert_eq!(x.routed(plain), [0, 0, 0], "counted before the domain had routing state");

    assert_eq!(set(&x, routed, &[2, 3]), 0);
    for (state, want) in
        [(RunState::Running, [1, 0, 0]), (RunState::Blocked, [1, 1, 0]), (RunState::Runnable, [1, 1, 1])]
    {
        x.set_run_state(1, state);
        assert_eq!(x.send(plain), 0);
        assert_eq!(x.routed(plain), want, "bound vCPU 1 {state:?}");
    }

    x.set_run_state(2, RunState::Runnable);
    x.set_run_state(3, RunState::Running);
    assert_eq!(x.send(routed), 0);
    assert_eq!(x.routed(routed), [1, 0, 0], "the set's running vCPU 3 was chosen");
    consume_all(&x, 4);
    x.set_run_state(3, RunState::Blocked);
    assert_eq!(x.send(routed), 0);
    assert_eq!(x.routed(routed), [1, 1, 0], "no vCPU of the set runs: a blocked one");

    assert_eq!(x.close(routed), 0);
    assert_eq!(x.routed(routed), [0, 0, 0], "a freed port keeps its counts for its next binding");
}
