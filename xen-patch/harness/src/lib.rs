//! Xen's patched `event_fifo.c` and `event_route.c`, compiled unmodified in
//! user space (see build.rs and c/), behind a safe wrapper that speaks the
//! model's traits: the model's guest consumer runs on the C domain's shared
//! pages exactly as on the model's.

use evroute_model::abi::{ControlBlock, EvtchnSetVcpuSet, Port, SharedEvents};
use evroute_model::guest::Hypercalls;
use evroute_model::hypervisor::{Kind, RunState};
use evroute_model::Policy;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::AtomicU32;
use std::sync::{Mutex, MutexGuard};

#[repr(C)]
struct RawDomain {
    _opaque: [u8; 0],
}

extern "C" {
    fn hx_create(nr_vcpus: c_uint, nr_ports: c_uint, policy: c_uint, fifo: c_int) -> *mut RawDomain;
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
    fn hx_word(d: *mut RawDomain, port: c_uint) -> *mut u32;
    fn hx_control_block(d: *mut RawDomain, vcpu: c_uint) -> *mut c_void;
    fn hx_upcall(d: *mut RawDomain, vcpu: c_uint) -> *mut u32;
    fn hx_lastq(d: *mut RawDomain, port: c_uint) -> u32;
    fn hx_notify_vcpu(d: *mut RawDomain, port: c_uint) -> c_uint;
    fn hx_priority(d: *mut RawDomain, port: c_uint) -> c_uint;
}

/// The address the C side treats as an unreadable guest buffer (`HX_BAD_ADDR`).
pub const BAD_ADDR: u64 = 0xbad0;

/// `opt_evtchn_route` is one global in the C, as in Xen: one domain at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A C domain. Its shared pages live until it is dropped.
pub struct XenDomain {
    d: *mut RawDomain,
    nr_vcpus: u32,
    nr_ports: u32,
    _global: MutexGuard<'static, ()>,
}

impl XenDomain {
    /// A FIFO (or, `fifo == false`, 2-level) domain with every vCPU online
    /// and running, under boot option `policy`.
    pub fn new(nr_vcpus: u32, nr_ports: u32, policy: Policy, fifo: bool) -> Self {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        assert!((1..=1024).contains(&nr_vcpus) && (2..=1024).contains(&nr_ports));
        // SAFETY: plain constructor; the sizes are within the harness's page pool.
        let d = unsafe { hx_create(nr_vcpus, nr_ports, policy as c_uint, c_int::from(fifo)) };
        assert!(!d.is_null());
        XenDomain { d, nr_vcpus, nr_ports, _global: guard }
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
        let mut op = EvtchnSetVcpuSet { port, flags, nr_bits, _pad: 0, bitmap: addr };
        // SAFETY: `op` is a live repr(C) struct; the C reads or writes at most
        // `need` bytes at `addr`, which is either BAD_ADDR (never
        // dereferenced) or a buffer at least that long, borrowed for the call.
        let rc = unsafe { hx_set_vcpu_set(self.d, &mut op) };
        (rc, op.nr_bits)
    }

    pub fn set_run_state(&self, vcpu: u32, s: RunState) {
        // public/vcpu.h: RUNSTATE_running 0, runnable 1, blocked 2, offline 3.
        let rs = match s {
            RunState::Running => 0,
            RunState::Runnable => 1,
            RunState::Blocked => 2,
            RunState::Offline => 3,
        };
        assert!(vcpu < self.nr_vcpus);
        // SAFETY: self.d is live and vcpu is in range.
        unsafe { hx_set_runstate(self.d, vcpu, rs) }
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

    fn upcall_pending(&self, vcpu: u32) -> &AtomicU32 {
        assert!(vcpu < self.nr_vcpus);
        // SAFETY: a field of the live vCPU, accessed only atomically.
        unsafe { AtomicU32::from_ptr(hx_upcall(self.d, vcpu)) }
    }
}

impl Hypercalls for XenDomain {
    fn unmask(&self, port: Port) {
        XenDomain::unmask(self, port);
    }
}
