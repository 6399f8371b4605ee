//! Xen's patched `event_fifo.c` and `event_route.c`, compiled unmodified in
//! user space (see build.rs and c/), behind a safe wrapper that speaks the
//! model's traits: the model's guest consumer runs on the C domain's shared
//! pages exactly as on the model's.

use evroute_model::abi::{ControlBlock, EvtchnSetVcpuSet, Port, SharedEvents};
use evroute_model::guest::Hypercalls;
use evroute_model::hypervisor::{Kind, RunState, MAX_SETS_DEFAULT};
use evroute_model::Policy;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU32, AtomicU8};
use std::sync::{Mutex, MutexGuard};

#[repr(C)]
struct RawDomain {
    _opaque: [u8; 0],
}

/// How a C domain is built.
#[derive(Clone, Copy, Debug)]
pub struct DomainConfig {
    pub nr_vcpus: u32,
    pub nr_ports: u32,
    pub policy: Policy,
    /// FIFO set up (`EVTCHNOP_init_control`); false: the 2-level ABI.
    pub fifo: bool,
    /// A 32-bit PV guest (its bitmap addresses: see [`XenDomain::g32_addr`]).
    pub pv32: bool,
    /// An HVM guest making its hypercalls in 32-bit mode.
    pub compat_calls: bool,
    /// vCPUs (of the first 64) that have not mapped their control block.
    pub unmapped: u64,
    /// A vCPU id with no `struct vcpu` (`d->vcpu[]` has a gap), or -1.
    pub gap: i32,
    /// `evtchn-route-max-sets=`.
    pub max_sets: u32,
}

impl DomainConfig {
    /// A FIFO domain, every vCPU online, running, its control block mapped.
    pub fn new(nr_vcpus: u32, nr_ports: u32, policy: Policy) -> Self {
        DomainConfig {
            nr_vcpus,
            nr_ports,
            policy,
            fifo: true,
            pv32: false,
            compat_calls: false,
            unmapped: 0,
            gap: -1,
            max_sets: MAX_SETS_DEFAULT,
        }
    }
}

/// `struct hx_config` in c/harness.c.
#[repr(C)]
struct RawConfig {
    nr_vcpus: c_uint,
    nr_ports: c_uint,
    policy: c_uint,
    fifo: bool,
    pv32: bool,
    compat_calls: bool,
    unmapped: u64,
    gap: c_int,
}

/// `struct evtchn_route_inputs`: what the decision reads.
#[repr(C)]
pub struct RouteInputs {
    pub set: *const u64,
    pub running: *const u64,
    pub blocked: *const u64,
    pub heavy: *const u64,
    pub receivable: *const u64,
    pub nwords: c_uint,
    pub bound: c_uint,
    pub last: c_uint,
}

extern "C" {
    fn hx_create(c: *const RawConfig) -> *mut RawDomain;
    fn hx_destroy(d: *mut RawDomain);
    fn hx_alloc(d: *mut RawDomain, kind: c_uint, vcpu: c_uint) -> c_int;
    fn hx_close(d: *mut RawDomain, port: c_uint) -> c_int;
    fn hx_send(d: *mut RawDomain, port: c_uint) -> c_int;
    fn hx_bench_send(d: *mut RawDomain, port: c_uint) -> c_int;
    fn hx_unmask(d: *mut RawDomain, port: c_uint) -> c_int;
    fn hx_set_priority(d: *mut RawDomain, port: c_uint, prio: c_uint) -> c_int;
    fn hx_bind_vcpu(d: *mut RawDomain, port: c_uint, vcpu: c_uint) -> c_int;
    fn hx_set_vcpu_set(d: *mut RawDomain, op: *mut EvtchnSetVcpuSet) -> c_int;
    fn hx_set_runstate(d: *mut RawDomain, vcpu: c_uint, runstate: c_int);
    fn hx_init_control(d: *mut RawDomain, vcpu: c_uint) -> c_int;
    fn hx_set_upcall(d: *mut RawDomain, vcpu: c_uint, reaches: c_int);
    fn hx_vcpu_exists(d: *mut RawDomain, vcpu: c_uint) -> c_int;
    fn hx_pause(d: *mut RawDomain, vcpu: c_uint);
    fn hx_set_down(d: *mut RawDomain, vcpu: c_uint, down: c_int);
    fn hx_bench_switches(d: *mut RawDomain, n: c_uint);
    fn hx_word(d: *mut RawDomain, port: c_uint) -> *mut u32;
    fn hx_control_block(d: *mut RawDomain, vcpu: c_uint) -> *mut c_void;
    fn hx_upcall(d: *mut RawDomain, vcpu: c_uint) -> *mut u8;
    fn hx_lastq(d: *mut RawDomain, port: c_uint) -> u32;
    fn hx_notify_vcpu(d: *mut RawDomain, port: c_uint) -> c_uint;
    fn hx_priority(d: *mut RawDomain, port: c_uint) -> c_uint;
    fn hx_routed(d: *mut RawDomain, port: c_uint, out: *mut u32);
    fn hx_g32_page(which: c_uint, gaddr: *mut u64) -> *mut u8;
    fn hx_route_pick(policy: c_uint, inputs: *const RouteInputs) -> c_uint;
    fn hx_set_max_sets(n: c_uint);
    // C longs, 64-bit on the x86-64 Linux the harness builds for.
    static mut hx_copies_under_lock: u64;
    static mut hx_xen_area_accesses: u64;
    static mut hx_fail_alloc_in: c_uint;
    static mut hx_warnings: u64;
    static mut hx_now: i64;
    static mut hx_live_allocs: i64;
    static mut hx_wrong_frees: u64;
}

/// The address the C side treats as an unreadable guest buffer (`HX_BAD_ADDR`).
pub const BAD_ADDR: u64 = 0xbad0;
/// Where the harness puts Xen's per-domain mappings of a 32-bit PV guest
/// (L4 slot 4 on x86-64): below 2^47, so a native access check admits it.
pub const XEN_AREA: u64 = 0x0000_0200_0000_0000;
/// Where a 32-bit PV guest's addresses end (`HYPERVISOR_COMPAT_VIRT_START`).
pub const COMPAT_VIRT_START: u64 = 0xF580_0000;

/// `opt_evtchn_route` is one global in the C, as in Xen: one domain at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A C domain. Its shared pages live until it is dropped.
pub struct XenDomain {
    d: *mut RawDomain,
    nr_vcpus: u32,
    nr_ports: u32,
    _global: MutexGuard<'static, ()>,
}

/// What the C counted while a domain was alive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Guest copies made while a lock was held.
    pub copies_under_lock: u64,
    /// Copies that reached Xen's own mappings of a 32-bit PV guest.
    pub xen_area_accesses: u64,
    /// Warnings Xen printed (a dropped event, a port still on a queue...).
    pub warnings: u64,
    /// Allocations made since the domain was built and not freed.
    pub live_allocs: i64,
    /// Blocks given back to the other allocator's free (vzalloc / xfree).
    pub wrong_frees: u64,
}

impl XenDomain {
    /// A FIFO (or, `fifo == false`, 2-level) domain with every vCPU online
    /// and running, under boot option `policy`.
    pub fn new(nr_vcpus: u32, nr_ports: u32, policy: Policy, fifo: bool) -> Self {
        Self::with(DomainConfig { fifo, ..DomainConfig::new(nr_vcpus, nr_ports, policy) })
    }

    pub fn with(cfg: DomainConfig) -> Self {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        assert!((1..=1024).contains(&cfg.nr_vcpus) && (2..=1024).contains(&cfg.nr_ports));
        assert!(cfg.gap != 0, "vCPU 0 always exists");
        let raw = RawConfig {
            nr_vcpus: cfg.nr_vcpus,
            nr_ports: cfg.nr_ports,
            policy: cfg.policy as c_uint,
            fifo: cfg.fifo,
            pv32: cfg.pv32,
            compat_calls: cfg.compat_calls,
            unmapped: cfg.unmapped,
            gap: cfg.gap,
        };
        // SAFETY: the counters are plain globals of the C, only touched while
        // ONE_AT_A_TIME is held; the constructor reads the config and sizes
        // its allocations from it (checked above).
        let d = unsafe {
            hx_copies_under_lock = 0;
            hx_xen_area_accesses = 0;
            hx_fail_alloc_in = 0;
            hx_warnings = 0;
            hx_wrong_frees = 0;
            hx_set_max_sets(cfg.max_sets);
            let d = hx_create(&raw);
            hx_live_allocs = 0;
            d
        };
        assert!(!d.is_null());
        XenDomain { d, nr_vcpus: cfg.nr_vcpus, nr_ports: cfg.nr_ports, _global: guard }
    }

    pub fn nr_vcpus(&self) -> u32 {
        self.nr_vcpus
    }

    /// Allocate a channel of `kind` bound to `vcpu`: the port, or -errno.
    pub fn alloc(&self, kind: Kind, vcpu: u32) -> Result<Port, i32> {
        // SAFETY: self.d is live; the C checks the arguments.
        let r = unsafe { hx_alloc(self.d, kind as c_uint, vcpu) };
        if r < 0 {
            Err(r)
        } else {
            Ok(r as Port)
        }
    }

    pub fn close(&self, port: Port) -> i32 {
        // SAFETY: self.d is live; the C checks the port.
        unsafe { hx_close(self.d, port) }
    }

    pub fn send(&self, port: Port) -> i32 {
        // SAFETY: self.d is live; the C checks the port.
        unsafe { hx_send(self.d, port) }
    }

    /// `send` through the one function the benchmark counts instructions in.
    pub fn bench_send(&self, port: Port) -> i32 {
        // SAFETY: self.d is live; the C checks the port.
        unsafe { hx_bench_send(self.d, port) }
    }

    pub fn unmask(&self, port: Port) -> i32 {
        // SAFETY: self.d is live; the C checks the port.
        unsafe { hx_unmask(self.d, port) }
    }

    pub fn set_priority(&self, port: Port, prio: u32) -> i32 {
        // SAFETY: self.d is live; the C checks port and priority.
        unsafe { hx_set_priority(self.d, port, prio) }
    }

    pub fn bind_vcpu(&self, port: Port, vcpu: u32) -> i32 {
        // SAFETY: self.d is live; the C checks port and vCPU.
        unsafe { hx_bind_vcpu(self.d, port, vcpu) }
    }

    /// `EVTCHNOP_set_vcpu_set`; `bitmap` None is an unreadable buffer. For a
    /// set, the buffer must hold at least `ceil(nr_bits / 8)` bytes or be None.
    pub fn set_vcpu_set(&self, port: Port, flags: u32, nr_bits: u32, bitmap: Option<&mut [u8]>) -> (i32, u32) {
        let need = nr_bits.div_ceil(8) as usize;
        let addr = match bitmap {
            Some(b) if b.len() >= need => b.as_mut_ptr() as u64,
            _ => BAD_ADDR,
        };
        let mut op = EvtchnSetVcpuSet { port, flags, nr_bits, pad: 0, bitmap: addr };
        // SAFETY: the C reads or writes at most `need` bytes at `addr`, which
        // is either BAD_ADDR (never dereferenced) or a buffer at least that
        // long, borrowed for the call.
        let rc = unsafe { self.vcpu_set_op(&mut op) };
        (rc, op.nr_bits)
    }

    /// `EVTCHNOP_set_vcpu_set` with the caller's own argument, as a guest
    /// passes it.
    ///
    /// # Safety
    /// For a 64-bit domain `op.bitmap` is a pointer of this process: it must
    /// be `BAD_ADDR`, 0, within [`XEN_AREA`]'s range, or valid for
    /// `ceil(op.nr_bits / 8)` bytes. A 32-bit domain's addresses are its own
    /// (see [`XenDomain::g32_page`]); any value is safe.
    pub unsafe fn vcpu_set_op(&self, op: &mut EvtchnSetVcpuSet) -> i32 {
        // SAFETY: self.d is live, `op` a live repr(C) struct; the address
        // is the caller's promise.
        unsafe { hx_set_vcpu_set(self.d, op) }
    }

    pub fn set_run_state(&self, vcpu: u32, s: RunState) {
        // public/vcpu.h: RUNSTATE_running 0, runnable 1, blocked 2, offline 3.
        let rs = match s {
            RunState::Running => 0,
            RunState::Runnable => 1,
            RunState::Blocked => 2,
            RunState::Offline => 3,
        };
        assert!(self.vcpu_exists(vcpu));
        // SAFETY: self.d is live and the vCPU exists.
        unsafe { hx_set_runstate(self.d, vcpu, rs) }
    }

    /// `EVTCHNOP_init_control` from `vcpu` for itself: 0 or -errno.
    pub fn init_control(&self, vcpu: u32) -> i32 {
        assert!(self.vcpu_exists(vcpu));
        // SAFETY: self.d is live and the vCPU exists.
        unsafe { hx_init_control(self.d, vcpu) }
    }

    /// An HVM callback change: whether an upcall reaches `vcpu`.
    pub fn set_upcall(&self, vcpu: u32, reaches: bool) {
        assert!(self.vcpu_exists(vcpu));
        // SAFETY: self.d is live and the vCPU exists.
        unsafe { hx_set_upcall(self.d, vcpu, c_int::from(reaches)) }
    }

    /// `vcpu` is paused: descheduled (`RUNSTATE_offline`) but not down.
    pub fn pause(&self, vcpu: u32) {
        assert!(self.vcpu_exists(vcpu));
        // SAFETY: self.d is live and the vCPU exists.
        unsafe { hx_pause(self.d, vcpu) }
    }

    /// `_VPF_down` changes with no run-state change (an INIT IPI while the
    /// vCPU is paused).
    pub fn set_down(&self, vcpu: u32, down: bool) {
        assert!(self.vcpu_exists(vcpu));
        // SAFETY: self.d is live and the vCPU exists.
        unsafe { hx_set_down(self.d, vcpu, c_int::from(down)) }
    }

    pub fn vcpu_exists(&self, vcpu: u32) -> bool {
        // SAFETY: self.d is live; the C checks the range.
        unsafe { hx_vcpu_exists(self.d, vcpu) != 0 }
    }

    /// `n` context switches through vcpu_runstate_change()'s hook (and as
    /// many without it), for the benchmark.
    pub fn bench_switches(&self, n: u32) {
        assert!((0..self.nr_vcpus).all(|v| self.vcpu_exists(v)));
        // SAFETY: self.d is live and every vCPU exists.
        unsafe { hx_bench_switches(self.d, n) }
    }

    /// `ns` of Xen's `NOW()` pass (what `balanced`'s load periods follow).
    pub fn time_passes(&self, ns: u64) {
        // SAFETY: a global of the C, touched only while this domain (and so
        // ONE_AT_A_TIME) is held.
        unsafe { hx_now += ns as i64 }
    }

    /// The next `n`-th allocation Xen makes fails (0: none).
    pub fn fail_alloc_in(&self, n: u32) {
        // SAFETY: a global of the C, touched only while this domain (and so
        // ONE_AT_A_TIME) is held.
        unsafe { hx_fail_alloc_in = n }
    }

    pub fn counters(&self) -> Counters {
        // SAFETY: globals of the C, touched only under ONE_AT_A_TIME.
        unsafe {
            Counters {
                copies_under_lock: hx_copies_under_lock,
                xen_area_accesses: hx_xen_area_accesses,
                warnings: hx_warnings,
                live_allocs: hx_live_allocs,
                wrong_frees: hx_wrong_frees,
            }
        }
    }

    /// A 32-bit PV guest's own pages: `which` 0 is a low one, 1 the last one
    /// below [`COMPAT_VIRT_START`]. Their guest address.
    pub fn g32_addr(&self, which: u32) -> u64 {
        self.g32_page(which).0
    }

    /// Write `bytes` at `offset` of a 32-bit PV guest's page.
    pub fn g32_write(&self, which: u32, offset: usize, bytes: &[u8]) {
        let (_, page) = self.g32_page(which);
        assert!(offset + bytes.len() <= 4096);
        // SAFETY: within the 4 KiB page (checked), which only this domain
        // (ONE_AT_A_TIME) uses while it lives.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), page.add(offset), bytes.len()) }
    }

    /// A copy of a 32-bit PV guest's page.
    pub fn g32_read(&self, which: u32) -> Vec<u8> {
        let (_, page) = self.g32_page(which);
        // SAFETY: a live 4 KiB page of the C; copied out at once.
        unsafe { std::slice::from_raw_parts(page, 4096).to_vec() }
    }

    fn g32_page(&self, which: u32) -> (u64, *mut u8) {
        let mut gaddr = 0u64;
        // SAFETY: the C returns one of two static pages and their address.
        let page = unsafe { hx_g32_page(which, &mut gaddr) };
        (gaddr, page)
    }

    /// `fifo_lastq` of `port` (raw, Xen's layout).
    pub fn lastq(&self, port: Port) -> u32 {
        assert!(port < self.nr_ports);
        // SAFETY: self.d is live and the port is in range.
        unsafe { hx_lastq(self.d, port) }
    }

    pub fn notify_vcpu(&self, port: Port) -> u32 {
        assert!(port < self.nr_ports);
        // SAFETY: self.d is live and the port is in range.
        unsafe { hx_notify_vcpu(self.d, port) }
    }

    pub fn priority(&self, port: Port) -> u32 {
        assert!(port < self.nr_ports);
        // SAFETY: self.d is live and the port is in range.
        unsafe { hx_priority(self.d, port) }
    }

    /// The channel's counts of events queued for a running, blocked, other
    /// vCPU (`CONFIG_EVTCHN_ROUTE_STATS`).
    pub fn routed(&self, port: Port) -> [u32; 3] {
        assert!(port < self.nr_ports);
        let mut out = [0u32; 3];
        // SAFETY: self.d is live, the port in range, out holds three u32s.
        unsafe { hx_routed(self.d, port, out.as_mut_ptr()) };
        out
    }
}

/// The C decision (`evtchn_route_pick()`) on the same inputs as
/// `evroute_model::route`; every mask must have as many words as the set.
pub fn route_pick(policy: Policy, inp: &evroute_model::RouteInputs<'_, [u64], [u64]>) -> u32 {
    let n = inp.set.len();
    assert!([inp.running, inp.blocked, inp.heavy, inp.receivable].iter().all(|m| m.len() == n));
    let raw = RouteInputs {
        set: inp.set.as_ptr(),
        running: inp.running.as_ptr(),
        blocked: inp.blocked.as_ptr(),
        heavy: inp.heavy.as_ptr(),
        receivable: inp.receivable.as_ptr(),
        nwords: n as c_uint,
        bound: inp.bound,
        last: inp.last,
    };
    // SAFETY: every pointer is valid for `n` words, borrowed for the call;
    // the C reads nothing else.
    unsafe { hx_route_pick(policy as c_uint, &raw) }
}

impl Drop for XenDomain {
    fn drop(&mut self) {
        // SAFETY: self.d came from hx_create and is destroyed once.
        unsafe { hx_destroy(self.d) }
    }
}

impl SharedEvents for XenDomain {
    fn word(&self, port: Port) -> Option<&AtomicU32> {
        // SAFETY: self.d is live; the C returns null or a pointer into the
        // event-array page, which lives as long as the domain.
        let p = unsafe { hx_word(self.d, port) };
        // SAFETY: the word is 4-byte aligned guest memory, only ever
        // accessed atomically (by the C's atomics and by this reference).
        (!p.is_null()).then(|| unsafe { AtomicU32::from_ptr(p) })
    }

    fn control_block(&self, vcpu: u32) -> &ControlBlock {
        assert!(vcpu < self.nr_vcpus);
        // SAFETY: vCPU `vcpu`'s control block sits at offset 0 of its page,
        // which lives as long as the domain; ControlBlock is repr(C) with the
        // layout of struct evtchn_fifo_control_block (checked in abi.rs),
        // and its words are only accessed atomically.
        unsafe { &*(hx_control_block(self.d, vcpu) as *const ControlBlock) }
    }

    fn upcall_pending(&self, vcpu: u32) -> &AtomicU8 {
        assert!(self.vcpu_exists(vcpu), "vCPU {vcpu} does not exist");
        // SAFETY: a field of the live vCPU, accessed only atomically.
        unsafe { AtomicU8::from_ptr(hx_upcall(self.d, vcpu)) }
    }
}

impl Hypercalls for XenDomain {
    fn unmask(&self, port: Port) {
        XenDomain::unmask(self, port);
    }
}
