//! The cases: each prints `EVROUTE <name> PASS|FAIL <detail>`.
//!
//! They follow the error table of the ABI (`EVTCHNOP_set_vcpu_set`), the
//! rows a Linux guest cannot reach among them (the 2-level ABI, a vCPU that
//! is down, a vCPU that is up but never mapped its control block, bitmaps
//! at addresses Linux's privcmd would never pass), then deliver events
//! across vCPUs, then throw random arguments at Xen.

use core::fmt;
use evroute_guest::abi::{errno, EvtchnSetVcpuSet, EVTCHNOP_SET_VCPU_SET, EVTCHN_VCPU_SET_GET, MAX_VCPUS};
use evroute_guest::vcpu_set::SetError;
use evroute_guest::{Consumer, Faults, SetVcpuSetOp, VcpuSet};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::pages::{now_ns, Memory, Shared, ADJACENT, GUARDED, NR_PORTS, NR_VCPUS};
use crate::{say, smp, xen};

/// Xen's own mappings in a 64-bit PV guest's view: the direct map, and the
/// read-only M2P table a guest may read itself but never hand to Xen.
const XEN_DIRECTMAP: u64 = 0xffff_8300_0000_1000;
const XEN_M2P: u64 = 0xffff_8000_0000_0000;
/// Canonical, in the guest's half, never mapped by this guest.
const UNMAPPED: u64 = 0x7000_0000_0000;
/// The first non-canonical address.
const NON_CANONICAL: u64 = 0x8000_0000_0000;
/// Events per delivery case.
const ROUNDS: u32 = 20;
/// How long one event's round may take, in Xen's ns (a round takes milliseconds under TCG).
const ROUND_NS: u64 = 1_000_000_000;

/// Random argument sets.
const RANDOM_CALLS: u32 = 10_000;

static ONES: [u8; 1024] = [0x01; 1024];
static ALL: [u8; 1024] = [0xff; 1024];
static ZEROS: [u8; 1024] = [0; 1024];
/// vCPU 4: the first id past the domain's four.
static FOUR: [u8; 1] = [0x10];

/// What went wrong in a case's rounds.
#[derive(Default, Debug)]
struct Tally {
    lost: u32,
    not_blocked: u32,
    stuck: bool,
}

impl Tally {
    fn clean(&self) -> bool {
        self.lost == 0 && self.not_blocked == 0 && !self.stuck
    }
}

/// How one event's round ended.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Round {
    Arrived,
    /// Never handled: dropped, or queued where no vCPU looks.
    Lost,
    /// vCPU 1 never saw vCPU 0 blocked, so the round proves nothing.
    NotBlocked,
    /// vCPU 1 did not send in time.
    Stuck,
}

/// The hypercall as `evroute-guest` makes it.
struct Xen;

impl SetVcpuSetOp for Xen {
    unsafe fn set_vcpu_set_op(&self, op: &mut EvtchnSetVcpuSet) -> Result<(), i32> {
        // SAFETY: the caller's contract is the bitmap's.
        unsafe { xen::evtchn_op_raw(EVTCHNOP_SET_VCPU_SET, op) }
    }
}

/// A call's port, flags, nr_bits, pad and bitmap address.
type Args = (u32, u32, u32, u32, u64);

/// The hypercall with every field the case's own.
///
/// # Safety
/// `bitmap` is memory the guest lets Xen read (set) or write (GET) for
/// `ceil(nr_bits / 8)` bytes, or an address Xen must refuse: the test is
/// that it does.
unsafe fn raw(port: u32, flags: u32, nr_bits: u32, pad: u32, bitmap: u64) -> Result<u32, i32> {
    let mut op = EvtchnSetVcpuSet { port, flags, nr_bits, pad, bitmap };
    // SAFETY: the caller's contract.
    unsafe { xen::evtchn_op_raw(EVTCHNOP_SET_VCPU_SET, &mut op) }.map(|()| op.nr_bits)
}

/// Xen's errno of a refused call; -1 for what the library refused itself
/// (the cases only give it sets it accepts).
fn errno_of(e: SetError) -> i32 {
    match e {
        SetError::Xen(e) => e,
        _ => -1,
    }
}

fn addr(b: &[u8]) -> u64 {
    b.as_ptr() as u64
}

fn set_of(list: &str) -> VcpuSet {
    VcpuSet::parse_list(list).expect("a literal list")
}

/// An interdomain channel from this domain to itself: events sent on the
/// second port are raised on the first.
fn loopback() -> Result<(u32, u32), i32> {
    let mut a = xen_sys::evtchn_alloc_unbound { dom: xen::DOMID_SELF, remote_dom: xen::DOMID_SELF, port: 0 };
    xen::evtchn_op(xen_sys::EVTCHNOP_alloc_unbound, &mut a)?;
    let mut b = xen_sys::evtchn_bind_interdomain { remote_dom: xen::DOMID_SELF, remote_port: a.port, local_port: 0 };
    xen::evtchn_op(xen_sys::EVTCHNOP_bind_interdomain, &mut b)?;
    Ok((a.port, b.local_port))
}

fn close(port: u32) -> Result<(), i32> {
    xen::evtchn_op(xen_sys::EVTCHNOP_close, &mut xen_sys::evtchn_close { port })
}

pub struct Run<'m> {
    mem: &'m Memory,
    /// `evtchn-route=` is on: the table applies; off, every call is refused.
    on: bool,
    passed: u32,
    failed: u32,
    /// vCPU 0's consumer (vCPU 0 only ever drains its own queues).
    consumer: Consumer,
    /// Events vCPU 0's consumer handled, per port below 64.
    handled: [u32; 64],
}

impl<'m> Run<'m> {
    pub fn new(mem: &'m Memory, on: bool) -> Self {
        Run { mem, on, passed: 0, failed: 0, consumer: Consumer::new(0, NR_PORTS, Faults::NONE), handled: [0; 64] }
    }

    fn check(&mut self, name: &str, ok: bool, detail: fmt::Arguments<'_>) -> bool {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        say!("EVROUTE {name} {} {detail}", if ok { "PASS" } else { "FAIL" });
        ok
    }

    /// The errno the table gives, or -EOPNOTSUPP with routing off.
    fn want(&self, e: i32) -> i32 {
        if self.on {
            e
        } else {
            errno::EOPNOTSUPP
        }
    }

    /// One refused call; with routing on, `keep`'s set must be `kept` after.
    fn refused(&mut self, name: &str, got: Result<u32, i32>, e: i32, keep: u32, kept: &VcpuSet) -> bool {
        let want = self.want(e);
        let after = self.get(keep);
        let unchanged = !self.on || after.as_ref() == Ok(kept);
        self.check(
            name,
            got == Err(want) && unchanged,
            format_args!("got {got:?}, want Err({want}); port {keep}'s set after: {after:?}"),
        )
    }

    fn get(&self, port: u32) -> Result<VcpuSet, i32> {
        let mut s = VcpuSet::new();
        s.fetch(&Xen, port).map(|_| s).map_err(errno_of)
    }

    fn give(&self, port: u32, set: &VcpuSet) -> Result<(), i32> {
        set.give(&Xen, port, NR_VCPUS as u32).map_err(errno_of)
    }

    /// vCPU 0 drains its own queues; returns how many events it handled.
    fn drain(&mut self) -> usize {
        let handled = &mut self.handled;
        self.consumer.upcall(&Shared, &(), &mut |p| handled[p as usize % 64] += 1)
    }

    /// One event from outside vCPU 0's reach: vCPU 1 sends on `b` (raising
    /// `a`) once vCPU 0 is blocked polling `ports`, then on `rt` (raising
    /// `r`, vCPU 0's own) so that vCPU 0 wakes whatever became of `a`'s
    /// event. Returns whether `a`'s event was handled, on vCPU 0 or 2.
    fn round(&mut self, (a, b): (u32, u32), (r, rt): (u32, u32), ports: &[u32]) -> Round {
        let before = self.handled[a as usize % 64] + smp::handled(2, a);
        let woken = self.handled[r as usize % 64];
        let ticket = smp::post_send(1, Some(0), b, rt);
        // `r`'s event is the wake-up: poll until vCPU 0 has handled it (a
        // poll returns at once while it is pending, so none is missed), or
        // until the round's time is up.
        let deadline = now_ns(0) + ROUND_NS;
        while self.handled[r as usize % 64] == woken && now_ns(0) < deadline {
            let _ = xen::poll(ports, deadline);
            self.drain();
        }
        while !smp::sent(1, ticket) {
            if now_ns(0) >= deadline {
                return Round::Stuck;
            }
            core::hint::spin_loop();
        }
        if smp::sent_unblocked(1) {
            return Round::NotBlocked;
        }
        // Xen queued (or dropped) `a`'s event before vCPU 1's second send
        // returned; wait for whichever vCPU has it to take it, so the next
        // round's event is not merged into this one.
        while now_ns(0) < deadline {
            self.drain();
            if self.handled[a as usize % 64] + smp::handled(2, a) > before {
                return Round::Arrived;
            }
            xen::yield_now();
        }
        Round::Lost
    }

    /// [`ROUNDS`] rounds; how many ended other than `Arrived`, by kind
    /// (lost, not blocked, stuck). A stuck sender ends them early.
    fn rounds(&mut self, ab: (u32, u32), rrt: (u32, u32), ports: &[u32]) -> Tally {
        let mut t = Tally::default();
        for _ in 0..ROUNDS {
            match self.round(ab, rrt, ports) {
                Round::Arrived => {}
                Round::Lost => t.lost += 1,
                Round::NotBlocked => t.not_blocked += 1,
                Round::Stuck => {
                    t.stuck = true;
                    break;
                }
            }
        }
        t
    }

    pub fn summary(&self) -> bool {
        say!(
            "EVROUTE-DETAIL test guest: {} cases, {} passed, {} failed",
            self.passed + self.failed,
            self.passed,
            self.failed
        );
        self.failed == 0
    }

    pub fn all(&mut self) {
        // Row 2: before EVTCHNOP_init_control the domain uses the 2-level ABI.
        let Ok((a, b)) = loopback() else {
            self.check("setup-channels", false, format_args!("loopback channel refused"));
            return;
        };
        let mut out = [0u8; 1];
        // SAFETY: ONES is readable; `out` is ours to write, one byte.
        let (got, got_get) =
            unsafe { (raw(a, 0, 8, 0, addr(&ONES)), raw(a, EVTCHN_VCPU_SET_GET, 8, 0, out.as_mut_ptr() as u64)) };
        let e = errno::EOPNOTSUPP;
        self.check(
            "row2-two-level-abi",
            got == Err(e) && got_get == Err(e),
            format_args!("set {got:?}, get {got_get:?}, want Err({e}) for both"),
        );

        if !self.setup() {
            return;
        }
        let Ok((r, rt)) = loopback() else {
            self.check("setup-channels", false, format_args!("loopback channel refused"));
            return;
        };
        let base = set_of("0,2");
        self.set_and_get(a, &base);
        self.table(a, &base);
        self.no_control_block(a, b, r, rt);
        self.routed(a, b, r, rt, "event-set-delivers");
        self.random(&base, [a, b, r, rt]);
        self.routed(a, b, r, rt, "event-after-random");
    }

    /// FIFO for vCPUs 0 and 2; vCPU 1 up without a control block; vCPU 3 down.
    fn setup(&mut self) -> bool {
        let steps = [
            ("init_control(0)", self.mem.init_control(0)),
            ("expand_array", self.mem.expand_array()),
            ("init_control(2)", self.mem.init_control(2)),
            ("vCPU 1 up", smp::bring_up(self.mem, 1)),
            ("vCPU 2 up", smp::bring_up(self.mem, 2)),
        ];
        let failed = steps.iter().find(|(_, r)| r.is_err());
        smp::set_consuming(2, true);
        self.check(
            "fifo-and-vcpus",
            failed.is_none(),
            format_args!("FIFO on vCPUs 0 and 2, vCPUs 1 and 2 up; first failure: {failed:?}"),
        )
    }

    fn set_and_get(&mut self, a: u32, base: &VcpuSet) {
        let given = self.give(a, base);
        let mut back = VcpuSet::new();
        let fetched = back.fetch(&Xen, a);
        let ok = if self.on {
            given.is_ok() && fetched == Ok(NR_VCPUS as u32) && back == *base
        } else {
            given == Err(errno::EOPNOTSUPP)
        };
        self.check(
            "set-and-get",
            ok,
            format_args!("set {{{base}}}: {given:?}; read back {{{back}}}, Xen's vCPU count {fetched:?}"),
        );
        // GET writes ceil(nr_bits / 8) bytes and no more, bits past nr_bits zero.
        let mut buf = [0xffu8; 2];
        // SAFETY: `buf` is ours to write, two bytes (Xen may write one).
        let got = unsafe { raw(a, EVTCHN_VCPU_SET_GET, 1, 0, buf.as_mut_ptr() as u64) };
        // SAFETY: Xen may have written `buf` behind the compiler's back.
        let seen = unsafe { core::ptr::read_volatile(&buf) };
        buf = seen;
        let ok =
            if self.on { got == Ok(NR_VCPUS as u32) && buf == [0x01, 0xff] } else { got == Err(errno::EOPNOTSUPP) };
        self.check(
            "get-writes-only-nr-bits",
            ok,
            format_args!("1-bit GET: {got:?}, buffer {buf:02x?} (want [01, ff])"),
        );
    }

    /// Every row of the error table a guest can reach, each leaving `a`'s set.
    fn table(&mut self, a: u32, base: &VcpuSet) {
        use errno::{EFAULT, EINVAL};
        let get = EVTCHN_VCPU_SET_GET;
        let mut scratch = [0u8; 8];
        let scratch = scratch.as_mut_ptr() as u64;
        // The IPI and VIRQ first: Xen hands out the lowest free port, so a
        // port freed before them would be theirs.
        let mut ipi = xen_sys::evtchn_bind_ipi { vcpu: 0, port: 0 };
        let ipi_bound = xen::evtchn_op(xen_sys::EVTCHNOP_bind_ipi, &mut ipi);
        let mut virq = xen_sys::evtchn_bind_virq { virq: xen_sys::VIRQ_TIMER, vcpu: 0, port: 0 };
        let virq_bound = xen::evtchn_op(xen_sys::EVTCHNOP_bind_virq, &mut virq);
        let freed = loopback().map(|(rx, tx)| (rx, close(rx), close(tx)));
        let distinct = matches!(freed, Ok((f, Ok(()), Ok(()))) if f != 0 && f != ipi.port && f != virq.port)
            && ipi.port != 0
            && virq.port != 0
            && ipi.port != virq.port;
        if !self.check(
            "table-channels",
            ipi_bound.is_ok() && virq_bound.is_ok() && distinct,
            format_args!(
                "IPI {ipi_bound:?} port {}, VIRQ {virq_bound:?} port {}, freed {freed:?}",
                ipi.port, virq.port
            ),
        ) {
            return;
        }
        let freed = freed.map_or(0, |(f, _, _)| f);
        // The last byte of a mapped page followed by an unmapped one.
        let edge = GUARDED[0].addr() + 4095;
        // SAFETY: `edge` is the last byte of GUARDED[0], mapped and ours.
        unsafe { core::ptr::write_volatile(edge as *mut u8, 0x01) };
        let rows: [(&str, u32, u32, u32, u32, u64, i32); 31] = [
            ("row3-unknown-flag", a, 0x2, 8, 0, addr(&ONES), EINVAL),
            ("row3-high-flag", a, 0x8000_0001, 8, 0, scratch, EINVAL),
            ("row3-pad", a, 0, 8, 1, addr(&ONES), EINVAL),
            ("row3-pad-get", a, get, 8, 0x8000_0000, scratch, EINVAL),
            ("row4-port-beyond", a + 4096, 0, 8, 0, addr(&ONES), EINVAL),
            ("row4-port-past-fifo", 1 << 17, 0, 8, 0, addr(&ONES), EINVAL),
            ("row4-port-max", u32::MAX, get, 8, 0, scratch, EINVAL),
            ("row5-port-0", 0, 0, 8, 0, addr(&ONES), EINVAL),
            ("row5-free-port", freed, 0, 8, 0, addr(&ONES), EINVAL),
            ("row6-ipi", ipi.port, 0, 8, 0, addr(&ONES), EINVAL),
            ("row6-per-vcpu-virq", virq.port, 0, 8, 0, addr(&ONES), EINVAL),
            ("row7-nr-bits-0", a, 0, 0, 0, addr(&ONES), EINVAL),
            ("row8-nr-bits-8193-unread", a, 0, MAX_VCPUS + 1, 0, 0, EINVAL),
            ("row8-nr-bits-max-unread", a, 0, u32::MAX, 0, XEN_DIRECTMAP, EINVAL),
            // Xen's own range first: a Xen that reads these as its own pointers
            // faults on the unmapped ones below, and must show here first.
            ("row10-xen-directmap", a, 0, 8, 0, XEN_DIRECTMAP, EFAULT),
            ("row10-xen-directmap-get", a, get, 8, 0, XEN_DIRECTMAP, EFAULT),
            ("row10-xen-m2p", a, 0, 8, 0, XEN_M2P, EFAULT),
            ("row10-xen-m2p-get", a, get, 8, 0, XEN_M2P, EFAULT),
            ("row10-null", a, 0, 8, 0, 0, EFAULT),
            ("row10-unmapped", a, 0, 8, 0, UNMAPPED, EFAULT),
            ("row10-unmapped-get", a, get, 8, 0, UNMAPPED, EFAULT),
            ("row10-non-canonical", a, 0, 8, 0, NON_CANONICAL, EFAULT),
            ("row10-read-only-get", a, get, 64, 0, self.mem.page_table, EFAULT),
            ("row10-straddles-into-unmapped", a, 0, 16, 0, edge, EFAULT),
            ("row10-straddles-into-unmapped-get", a, get, 16, 0, edge, EFAULT),
            ("row11-vcpu-4", a, 0, 8, 0, addr(&FOUR), EINVAL),
            ("row11-bits-past-vcpus", a, 0, 16, 0, addr(&ALL), EINVAL),
            ("row11-all-8192", a, 0, MAX_VCPUS, 0, addr(&ALL), EINVAL),
            ("row12-no-bit", a, 0, 8, 0, addr(&ZEROS), EINVAL),
            ("row12-no-bit-8192", a, 0, MAX_VCPUS, 0, addr(&ZEROS), EINVAL),
            ("row12-bits-past-nr-bits-only", a, 0, 2, 0, addr(&FOUR), EINVAL),
        ];
        for (name, port, flags, nr_bits, pad, bitmap, e) in rows {
            // SAFETY: each bitmap is ours (read-only statics are only read,
            // `scratch` and the guarded page's last byte are ours to write)
            // or an address Xen must refuse, which the row checks.
            let got = unsafe { raw(port, flags, nr_bits, pad, bitmap) };
            self.refused(name, got, e, a, base);
        }
        // Row 14: no vCPU of the set can take events.
        for (name, list) in
            [("row14-vcpu-down", "3"), ("row14-no-control-block", "1"), ("row14-down-and-no-block", "1,3")]
        {
            let set = set_of(list);
            let got = self.give(a, &set).map(|()| 0);
            self.refused(name, got, EINVAL, a, base);
        }
        // A set that holds a vCPU able to take events is accepted, as given.
        let mixed = set_of("0,1,3");
        let given = self.give(a, &mixed);
        let back = self.get(a);
        let ok = if self.on { given.is_ok() && back.as_ref() == Ok(&mixed) } else { given == Err(errno::EOPNOTSUPP) };
        self.check("row14-one-vcpu-can-take", ok, format_args!("set {{{mixed}}}: {given:?}, read back {back:?}"));
        // A bitmap that straddles a page end between two mapped pages: Xen
        // must read and write the byte on the second page too. First bit 8
        // (past the vCPUs) on the second page: refused only if it was read.
        let edge = ADJACENT[0].addr() + 4095;
        let put = |b: [u8; 2]| {
            // SAFETY: both pages are mapped and ours; nothing else uses them.
            unsafe {
                core::ptr::write_volatile(edge as *mut u8, b[0]);
                core::ptr::write_volatile((edge + 1) as *mut u8, b[1]);
            }
        };
        // SAFETY: as `put`.
        let read = || unsafe {
            [core::ptr::read_volatile(edge as *const u8), core::ptr::read_volatile((edge + 1) as *const u8)]
        };
        put([0x01, 0x01]);
        // SAFETY: Xen reads (then writes) these two bytes, ours.
        let far_bit = unsafe { raw(a, 0, 16, 0, edge) };
        put([0x05, 0x00]);
        // SAFETY: as above.
        let got = unsafe { raw(a, 0, 16, 0, edge) };
        put([0xff, 0xff]);
        // SAFETY: as above.
        let got_get = unsafe { raw(a, get, 16, 0, edge) };
        let bytes = read();
        let ok = if self.on {
            far_bit == Err(EINVAL) && got == Ok(16) && got_get == Ok(NR_VCPUS as u32) && bytes == [0x05, 0]
        } else {
            [far_bit, got, got_get].iter().all(|r| *r == Err(errno::EOPNOTSUPP))
        };
        self.check(
            "straddles-two-mapped-pages",
            ok,
            format_args!(
                "bit 8 on the second page: {far_bit:?} (want EINVAL); {{0,2}} across the page end: {got:?}; GET across it: {got_get:?}, bytes {bytes:02x?} (want [05, 00])"
            ),
        );
        let restored = self.give(a, base);
        self.check(
            "set-restored",
            !self.on || restored.is_ok(),
            format_args!("port {a} back to {{{base}}}: {restored:?}"),
        );
        let _ = close(ipi.port);
        let _ = close(virq.port);
    }

    /// The set holds vCPU 1, up and running but without a control block,
    /// and vCPU 0, blocked: each event sent from vCPU 1 must reach vCPU 0.
    fn no_control_block(&mut self, a: u32, b: u32, r: u32, rt: u32) {
        let set = set_of("0-1");
        let given = self.give(a, &set);
        let (before, before2) = (self.handled[a as usize % 64], smp::handled(2, a));
        let t = self.rounds((a, b), (r, rt), &[a, r]);
        let arrived = self.handled[a as usize % 64] - before;
        let ok = arrived == ROUNDS && t.clean() && smp::handled(2, a) == before2 && (given.is_ok() || !self.on);
        self.check(
            "event-vcpu-without-control-block",
            ok,
            format_args!(
                "set {{{set}}} ({given:?}); {ROUNDS} events sent from vCPU 1 while vCPU 0 was blocked: {arrived} reached vCPU 0; {t:?}"
            ),
        );
        let _ = self.give(a, &set_of("0,2"));
    }

    /// vCPU 0 blocks, vCPU 2 spins with its queues mapped, vCPU 1 sends:
    /// with routing on the events go to the running vCPU of the set (2),
    /// with it off to the bound one (0). None may be lost.
    fn routed(&mut self, a: u32, b: u32, r: u32, rt: u32, name: &str) {
        let (before0, before2) = (self.handled[a as usize % 64], smp::handled(2, a));
        let t = self.rounds((a, b), (r, rt), &[r]);
        let on2 = smp::handled(2, a) - before2;
        let on0 = self.handled[a as usize % 64] - before0;
        let ok = t.clean() && on0 + on2 == ROUNDS && if self.on { on2 > ROUNDS / 2 } else { on0 == ROUNDS };
        self.check(
            name,
            ok,
            format_args!(
                "set {{0,2}}, {ROUNDS} events from vCPU 1 while vCPU 0 was blocked: {on2} on vCPU 2 (running), {on0} on vCPU 0 (bound); {t:?}; routing {}",
                if self.on { "on: most on vCPU 2" } else { "off: all on vCPU 0" }
            ),
        );
    }

    /// Random arguments: every answer an errno of the table or success; an
    /// accepted set reads back as given; `a` and `r` unchanged.
    fn random(&mut self, base: &VcpuSet, earlier: [u32; 4]) {
        let scratch: [u32; 4] = core::array::from_fn(|_| loopback().map_or(0, |(rx, _)| rx));
        let before = earlier.map(|p| self.get(p));
        let seed = 0x6576_726f_7574_6521u64;
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut buf = [0u8; 1024];
        // Addresses Xen must never accept, and two it may read but not write
        // (the page tables) or only one byte of (the guarded page's end).
        let must_fault = [0, UNMAPPED, XEN_DIRECTMAP, XEN_M2P, NON_CANONICAL];
        let odd = [self.mem.page_table, GUARDED[0].addr() + 4095];
        let (mut accepted, mut unexpected, mut mismatched, mut compared) = (0u32, 0u32, 0u32, 0u32);
        let mut by_errno = [0u32; 4]; // EINVAL, EFAULT, EOPNOTSUPP, other refusals
        let mut first_bad: Option<(Args, Result<u32, i32>)> = None;
        for _ in 0..RANDOM_CALLS {
            let set = rng.random_bool(0.5);
            let flags = match rng.random_range(0..10) {
                0 => rng.random::<u32>() | 2,
                _ if set => 0,
                _ => EVTCHN_VCPU_SET_GET,
            };
            // Sets never name the earlier channels: an accepted one would
            // change them. Reads may.
            let port = match rng.random_range(0..8) {
                0 => rng.random(),
                1 => rng.random_range(0..64),
                2 if !set => earlier[rng.random_range(0..4)],
                _ => scratch[rng.random_range(0..4)],
            };
            let port = if flags == 0 && earlier.contains(&port) { scratch[0] } else { port };
            let nr_bits = match rng.random_range(0..8) {
                0 => 0,
                1 => MAX_VCPUS,
                2 => MAX_VCPUS + 1,
                3 => rng.random(),
                _ => rng.random_range(1..=16),
            };
            let pad = if rng.random_range(0..10) == 0 { rng.random() } else { 0 };
            // A set mostly within the four vCPUs, sometimes anything.
            let wide = rng.random_bool(0.2);
            for byte in buf.iter_mut() {
                *byte = if wide { rng.random() } else { 0 };
            }
            if !wide {
                buf[0] = rng.random_range(0..16);
            }
            let bitmap = match rng.random_range(0..8) {
                0 => must_fault[rng.random_range(0..must_fault.len())],
                1 => odd[rng.random_range(0..odd.len())],
                _ => buf.as_mut_ptr() as u64,
            };
            // SAFETY: `buf` is ours (1 KiB, as much as any accepted nr_bits
            // needs); the page tables are read-only to us, so Xen may not
            // write them; the guarded page's last byte is ours; the rest
            // Xen must refuse, which this case checks.
            let got = unsafe { raw(port, flags, nr_bits, pad, bitmap) };
            // SAFETY: Xen may have written `buf` (a GET) behind the compiler's back.
            unsafe { core::ptr::write_volatile(&mut buf, core::ptr::read_volatile(&buf)) };
            match got {
                Ok(_) => {
                    accepted += 1;
                    if flags == 0 && self.on && bitmap == buf.as_ptr() as u64 {
                        // What was given: the bits below nr_bits.
                        let mut want = VcpuSet::new();
                        for v in 0..nr_bits.min(NR_VCPUS as u32) {
                            if buf[v as usize / 8] >> (v % 8) & 1 == 1 {
                                let _ = want.insert(v);
                            }
                        }
                        compared += 1;
                        if self.get(port).as_ref() != Ok(&want) {
                            mismatched += 1;
                        }
                    }
                }
                Err(errno::EINVAL) => by_errno[0] += 1,
                Err(errno::EFAULT) => by_errno[1] += 1,
                Err(errno::EOPNOTSUPP) => by_errno[2] += 1,
                Err(_) => by_errno[3] += 1,
            }
            let is_get = flags == EVTCHN_VCPU_SET_GET;
            let expected = match got {
                Ok(_) => {
                    self.on
                        && pad == 0
                        && flags & !EVTCHN_VCPU_SET_GET == 0
                        && nr_bits <= MAX_VCPUS
                        && (is_get || nr_bits >= 1)
                        && (!must_fault.contains(&bitmap) || nr_bits == 0)
                        && !(is_get && bitmap == self.mem.page_table && nr_bits > 0)
                }
                Err(e) if !self.on => e == errno::EOPNOTSUPP,
                Err(e) => matches!(e, errno::EINVAL | errno::EFAULT),
            };
            if !expected {
                unexpected += 1;
                first_bad.get_or_insert(((port, flags, nr_bits, pad, bitmap), got));
            }
        }
        let after = earlier.map(|p| self.get(p));
        // Each earlier channel read back (so "unchanged" is not two equal
        // errors) and at least one accepted set compared.
        let kept = !self.on || (after[0].as_ref() == Ok(base) && after == before && before.iter().all(Result::is_ok));
        let compared_some = !self.on || compared > 0;
        self.check(
            "random-arguments",
            unexpected == 0 && mismatched == 0 && kept && compared_some,
            format_args!(
                "{RANDOM_CALLS} calls (seed {seed:#x}): {accepted} accepted, EINVAL {}, EFAULT {}, EOPNOTSUPP {}, other {}; unexpected answers {unexpected} (first {first_bad:x?}); accepted sets read back {compared}, not as given {mismatched}; earlier ports {earlier:?}: sets {before:?} -> {after:?}",
                by_errno[0], by_errno[1], by_errno[2], by_errno[3]
            ),
        );
        for p in scratch {
            let _ = close(p);
        }
    }
}
