//! The guest's memory as the cases use it: frames Xen needs by machine
//! number (control blocks, the event array), Xen's shared-info page mapped
//! in, and pages whose mapping the cases change (read-only, unmapped).

use core::cell::UnsafeCell;
use evroute_guest::abi::{ControlBlock, Port, SharedEvents};
use evroute_guest::sync::{AtomicU32, AtomicU8};

use crate::xen;

/// vCPUs the guest has (`dom0_max_vcpus=` on Xen's command line).
pub const NR_VCPUS: usize = 4;
/// Ports one event-array page covers.
pub const NR_PORTS: u32 = 1024;

/// One page of the image, shared with Xen or remapped by the cases.
#[repr(C, align(4096))]
pub struct Page(UnsafeCell<[u8; 4096]>);

// SAFETY: the bytes are only reached through raw pointers and atomics;
// Xen and the vCPUs share them as the FIFO ABI says.
unsafe impl Sync for Page {}

impl Page {
    pub const fn new() -> Self {
        Page(UnsafeCell::new([0; 4096]))
    }
    pub fn addr(&self) -> u64 {
        self.0.get() as u64
    }
}

static EVENT_ARRAY: Page = Page::new();
static CONTROL: [Page; NR_VCPUS] = [const { Page::new() }; NR_VCPUS];
/// Mapped onto Xen's shared-info page by [`map_shared_info`].
static SHARED_INFO: Page = Page::new();
/// Two pages: the first stays mapped, the second is unmapped by [`Memory::
/// new`], so a bitmap at the first's end straddles into nothing.
pub static GUARDED: [Page; 2] = [const { Page::new() }; 2];
/// Two mapped pages, for a bitmap that straddles a page end and is whole.
pub static ADJACENT: [Page; 2] = [const { Page::new() }; 2];

/// What `start_info` told the guest, and the mappings it changed.
pub struct Memory {
    mfn_list: *const u64,
    nr_pages: u64,
    /// The top-level page table: mapped read-only, as every PV page table.
    pub page_table: u64,
    pub cmdline: &'static str,
}

impl Memory {
    /// # Safety
    /// `si` is the `start_info` Xen passed at entry, and this runs once.
    pub unsafe fn new(si: *const xen_sys::start_info) -> Result<Memory, &'static str> {
        // SAFETY: Xen maps start_info for the guest and never moves it.
        let si = unsafe { &*si };
        let cmd = &si.cmd_line;
        let len = cmd.iter().position(|&c| c == 0).unwrap_or(cmd.len());
        // SAFETY: `cmd_line` is `len` bytes of Xen's copy of the command line.
        let bytes = unsafe { core::slice::from_raw_parts(cmd.as_ptr() as *const u8, len) };
        let mem = Memory {
            mfn_list: si.mfn_list as *const u64,
            nr_pages: si.nr_pages,
            page_table: si.pt_base,
            cmdline: core::str::from_utf8(bytes).map_err(|_| "command line not UTF-8")?,
        };
        // SAFETY: SHARED_INFO is a page of the image nothing else uses; the
        // PTE names Xen's shared-info frame, present and writable.
        unsafe { xen::update_va_mapping(SHARED_INFO.addr(), si.shared_info | PTE_RW) }
            .map_err(|_| "mapping shared_info failed")?;
        // SAFETY: nothing lives at address 0 (the image starts at 1 MiB);
        // unmapped, a null bitmap must fault in Xen as it would here.
        unsafe { xen::update_va_mapping(0, 0) }.map_err(|_| "unmapping page 0 failed")?;
        // SAFETY: GUARDED[1] is never used through its old mapping.
        unsafe { xen::update_va_mapping(GUARDED[1].addr(), 0) }.map_err(|_| "unmapping the guard page failed")?;
        Ok(mem)
    }

    /// The machine frame of the image's page at `va` (VIRT_BASE is 0, so
    /// the pseudo-physical frame is `va >> 12`).
    pub fn mfn(&self, va: u64) -> u64 {
        let pfn = va >> 12;
        assert!(pfn < self.nr_pages, "address {va:#x} outside the guest");
        // SAFETY: Xen maps the p2m list of nr_pages entries at mfn_list.
        unsafe { *self.mfn_list.add(pfn as usize) }
    }

    /// `key=value` from the command line.
    pub fn arg(&self, key: &str) -> Option<&'static str> {
        self.cmdline.split(' ').find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }

    /// `EVTCHNOP_init_control` for `vcpu` on its page of CONTROL.
    pub fn init_control(&self, vcpu: u32) -> Result<(), i32> {
        let mut op = xen_sys::evtchn_init_control {
            control_gfn: self.mfn(CONTROL[vcpu as usize].addr()),
            offset: 0,
            vcpu,
            link_bits: 0,
            _pad: [0; 7],
        };
        xen::evtchn_op(xen_sys::EVTCHNOP_init_control, &mut op)
    }

    /// `EVTCHNOP_expand_array` with the one event-array page.
    pub fn expand_array(&self) -> Result<(), i32> {
        let mut op = xen_sys::evtchn_expand_array { array_gfn: self.mfn(EVENT_ARRAY.addr()) };
        xen::evtchn_op(xen_sys::EVTCHNOP_expand_array, &mut op)
    }
}

/// Xen's system time (ns since boot) as `vcpu` sees it: its
/// `vcpu_time_info` in shared info, extrapolated with the TSC.
pub fn now_ns(vcpu: u32) -> u64 {
    assert!((vcpu as usize) < NR_VCPUS);
    let t = (SHARED_INFO.addr() + 64 * u64::from(vcpu) + 32) as *const u8;
    loop {
        // SAFETY: vcpu_info[vcpu].time (struct vcpu_time_info) sits at
        // offset 32 of the vCPU's 64 bytes in the mapped shared-info page;
        // Xen updates it under the version, which is read around the fields.
        unsafe {
            let version = core::ptr::read_volatile(t as *const u32);
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
            let tsc_stamp = core::ptr::read_volatile(t.add(8) as *const u64);
            let system = core::ptr::read_volatile(t.add(16) as *const u64);
            let mul = core::ptr::read_volatile(t.add(24) as *const u32);
            let shift = core::ptr::read_volatile(t.add(28) as *const i8);
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
            if version & 1 == 0 && version == core::ptr::read_volatile(t as *const u32) {
                let mut delta = core::arch::x86_64::_rdtsc().wrapping_sub(tsc_stamp);
                delta = if shift < 0 { delta >> -shift } else { delta << shift };
                return system + ((u128::from(delta) * u128::from(mul)) >> 32) as u64;
            }
        }
    }
}

/// Present | writable | accessed | dirty.
const PTE_RW: u64 = 0x63;

/// The pages the consumer reads, as `evroute-guest` asks for them.
pub struct Shared;

impl SharedEvents for Shared {
    fn word(&self, port: Port) -> Option<&AtomicU32> {
        if port == 0 || port >= NR_PORTS {
            return None;
        }
        // SAFETY: inside the event-array page, 4-byte aligned, and only
        // accessed atomically by the guest and by Xen.
        Some(unsafe { AtomicU32::from_ptr((EVENT_ARRAY.addr() as *mut u32).add(port as usize)) })
    }

    fn control_block(&self, vcpu: u32) -> &ControlBlock {
        // SAFETY: the control block sits at offset 0 of vCPU `vcpu`'s page;
        // ControlBlock has the header's layout (checked in evroute-guest),
        // and its words are only accessed atomically.
        unsafe { &*(CONTROL[vcpu as usize].addr() as *const ControlBlock) }
    }

    fn upcall_pending(&self, vcpu: u32) -> &AtomicU8 {
        assert!((vcpu as usize) < NR_VCPUS);
        // SAFETY: vcpu_info[vcpu] starts at vcpu * 64 of the shared-info
        // page mapped at SHARED_INFO; evtchn_upcall_pending is its first byte.
        unsafe { AtomicU8::from_ptr((SHARED_INFO.addr() + 64 * u64::from(vcpu)) as *mut u8) }
    }
}
