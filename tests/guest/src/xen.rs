//! What a 64-bit PV guest needs of Xen before any test can run: the ELF
//! notes Xen's loader reads, the entry points, the hypercall page, and the
//! few hypercalls the cases make.

use core::arch::{asm, global_asm};
use core::fmt;

/// `DOMID_SELF` (xen.h): the caller's own domain.
pub const DOMID_SELF: u16 = 0x7ff0;
/// `VCPUOP_*` (vcpu.h), missing from xen-sys.
pub const VCPUOP_INITIALISE: u32 = 0;
pub const VCPUOP_UP: u32 = 1;
const VCPUOP_GET_RUNSTATE_INFO: u32 = 4;
/// `RUNSTATE_blocked` (vcpu.h).
pub const RUNSTATE_BLOCKED: i32 = 2;
/// `UVMF_INVLPG` (xen.h): flush this one address from the TLB.
const UVMF_INVLPG: u64 = 2;

// The ELF notes (XEN_ELFNOTE_*, elfnote.h), the entry points and the
// hypercall page. AT&T syntax: numeric local labels would read as binary
// numbers in Intel's.
global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl _start
_start:
    /* rsi: start_info; Xen's stack is one page, so take ours. */
    mov %rsi, %rbx
    lea boot_stack_top(%rip), %rsp
    /* fpu_taskswitch(0): the compiled code uses SSE registers. */
    xor %edi, %edi
    lea hypercall_page+{fpu}*32(%rip), %rax
    call *%rax
    mov %rbx, %rdi
    call guest_main
    ud2

    /* A secondary vCPU: rsp and rdi (its id) come from VCPUOP_initialise. */
    .globl secondary_start
secondary_start:
    mov %rdi, %rbx
    xor %edi, %edi
    lea hypercall_page+{fpu}*32(%rip), %rax
    call *%rax
    mov %rbx, %rdi
    call secondary_main
    ud2

    /* Every callback Xen may need an address for: nothing is expected. */
    .globl no_callback
no_callback:
    ud2

    .section .text.hypercall_page, "ax"
    .balign 4096
    .globl hypercall_page
hypercall_page:
    .skip 4096

    .section .bss.boot_stack, "aw", @nobits
    .balign 4096
boot_stack:
    .skip 65536
boot_stack_top:

    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 2f - 1f, {guest_os}
    .asciz "Xen"
1:  .asciz "evroute-test-guest"
2:  .balign 4
    .long 4, 2f - 1f, {xen_version}
    .asciz "Xen"
1:  .asciz "xen-3.0"
2:  .balign 4
    .long 4, 2f - 1f, {loader}
    .asciz "Xen"
1:  .asciz "generic"
2:  .balign 4
    .long 4, 8, {virt_base}
    .asciz "Xen"
    .quad 0
    .long 4, 8, {paddr_offset}
    .asciz "Xen"
    .quad 0
    .long 4, 8, {entry}
    .asciz "Xen"
    .quad _start
    .long 4, 8, {hypercall_note}
    .asciz "Xen"
    .quad hypercall_page
    "#,
    fpu = const xen_sys::__HYPERVISOR_fpu_taskswitch,
    guest_os = const xen_sys::XEN_ELFNOTE_GUEST_OS,
    xen_version = const xen_sys::XEN_ELFNOTE_XEN_VERSION,
    loader = const xen_sys::XEN_ELFNOTE_LOADER,
    virt_base = const xen_sys::XEN_ELFNOTE_VIRT_BASE,
    paddr_offset = const xen_sys::XEN_ELFNOTE_PADDR_OFFSET,
    entry = const xen_sys::XEN_ELFNOTE_ENTRY,
    hypercall_note = const xen_sys::XEN_ELFNOTE_HYPERCALL_PAGE,
    options(att_syntax)
);

unsafe extern "C" {
    static hypercall_page: [u8; 4096];
    pub fn secondary_start();
    pub fn no_callback();
}

/// One hypercall through the page Xen filled: `nr` with up to five
/// arguments. Returns Xen's answer (`-errno` on failure).
///
/// # Safety
/// Every pointer argument must be valid for what hypercall `nr` does with it.
pub unsafe fn hypercall(nr: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let entry = core::ptr::addr_of!(hypercall_page) as u64 + u64::from(nr) * 32;
    let ret: i64;
    // SAFETY: the stub at `entry` is Xen's (`syscall` with rcx and r11 saved);
    // Xen may clobber the argument registers (a debug build poisons them),
    // so all are declared clobbered. The caller vouches for the arguments.
    unsafe {
        asm!(
            "call {entry}",
            entry = in(reg) entry,
            lateout("rax") ret,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// `Ok` or the errno, positive.
fn answer(ret: i64) -> Result<(), i32> {
    if ret < 0 {
        Err(-ret as i32)
    } else {
        Ok(())
    }
}

/// An argument Xen reads and writes only in place: it holds no address
/// Xen would read or write through, so a borrow of it is all a call needs.
///
/// # Safety
/// Implement only for structs without such an address.
pub unsafe trait InPlace {}

// SAFETY: each holds ports, domain and vCPU ids, frame numbers, a reason,
// or a vCPU's registers (addresses it will run at, never accessed by Xen).
unsafe impl InPlace for () {}
// SAFETY: as above.
unsafe impl InPlace for xen_sys::evtchn_alloc_unbound {}
// SAFETY: as above.
unsafe impl InPlace for xen_sys::evtchn_bind_interdomain {}
// SAFETY: as above.
unsafe impl InPlace for xen_sys::evtchn_bind_ipi {}
// SAFETY: as above.
unsafe impl InPlace for xen_sys::evtchn_bind_virq {}
// SAFETY: as above.
unsafe impl InPlace for xen_sys::evtchn_close {}
// SAFETY: as above.
unsafe impl InPlace for xen_sys::evtchn_send {}
// SAFETY: as above.
unsafe impl InPlace for xen_sys::evtchn_init_control {}
// SAFETY: as above.
unsafe impl InPlace for xen_sys::evtchn_expand_array {}
// SAFETY: as above.
unsafe impl InPlace for xen_sys::sched_shutdown {}
// SAFETY: as above.
unsafe impl InPlace for xen_sys::vcpu_guest_context {}
// SAFETY: as above.
unsafe impl InPlace for RunstateInfo {}

/// `HYPERVISOR_event_channel_op(cmd, arg)`.
pub fn evtchn_op<T: InPlace>(cmd: u32, arg: &mut T) -> Result<(), i32> {
    // SAFETY: `arg` is borrowed for the call and holds no other address.
    unsafe { evtchn_op_raw(cmd, arg) }
}

/// `HYPERVISOR_event_channel_op(cmd, arg)` with an argument that may hold
/// addresses.
///
/// # Safety
/// Every address in `arg` must be valid for what `cmd` does with it, or
/// one Xen must refuse (the cases' hostile bitmaps).
pub unsafe fn evtchn_op_raw<T>(cmd: u32, arg: &mut T) -> Result<(), i32> {
    // SAFETY: `arg` is borrowed for the call; the caller vouches for the rest.
    answer(unsafe { hypercall(xen_sys::__HYPERVISOR_event_channel_op, cmd.into(), arg as *mut T as u64, 0, 0, 0) })
}

/// `HYPERVISOR_sched_op(cmd, arg)`.
///
/// # Safety
/// As [`evtchn_op_raw`].
unsafe fn sched_op<T>(cmd: u32, arg: &mut T) -> Result<(), i32> {
    // SAFETY: as evtchn_op_raw.
    answer(unsafe { hypercall(xen_sys::__HYPERVISOR_sched_op, cmd.into(), arg as *mut T as u64, 0, 0, 0) })
}

/// `HYPERVISOR_vcpu_op(cmd, vcpu, arg)`.
pub fn vcpu_op<T: InPlace>(cmd: u32, vcpu: u32, arg: &mut T) -> Result<(), i32> {
    // SAFETY: `arg` is borrowed for the call and holds no other address.
    answer(unsafe { hypercall(xen_sys::__HYPERVISOR_vcpu_op, cmd.into(), vcpu.into(), arg as *mut T as u64, 0, 0) })
}

/// `struct vcpu_runstate_info` (vcpu.h).
#[repr(C)]
pub struct RunstateInfo {
    state: i32,
    state_entry_time: u64,
    time: [u64; 4],
}

/// `VCPUOP_get_runstate_info`: the state (`RUNSTATE_*`) `vcpu` is in now.
pub fn runstate(vcpu: u32) -> Result<i32, i32> {
    let mut info = RunstateInfo { state: -1, state_entry_time: 0, time: [0; 4] };
    vcpu_op(VCPUOP_GET_RUNSTATE_INFO, vcpu, &mut info).map(|()| info.state)
}

/// Makes `pte` (a machine address with a PTE's low bits) the mapping of
/// `va`, or unmaps `va` with `pte == 0`.
///
/// # Safety
/// Nothing may use the old mapping of `va` afterwards.
pub unsafe fn update_va_mapping(va: u64, pte: u64) -> Result<(), i32> {
    // SAFETY: the caller gives up the old mapping; Xen checks the new one.
    answer(unsafe { hypercall(xen_sys::__HYPERVISOR_update_va_mapping, va, pte, UVMF_INVLPG, 0, 0) })
}

/// `SCHEDOP_yield`: let another vCPU run on this pCPU.
pub fn yield_now() {
    // SAFETY: SCHEDOP_yield reads no argument.
    let _ = unsafe { sched_op(xen_sys::SCHEDOP_yield, &mut ()) };
}

/// `SCHEDOP_poll` on `ports` until Xen's system time `deadline` (ns):
/// returns once one is pending, an event is raised for this vCPU, or then.
pub fn poll(ports: &[u32], deadline: u64) -> Result<(), i32> {
    #[repr(C)]
    struct SchedPoll {
        ports: u64,
        nr_ports: u32,
        timeout: u64,
    }
    let mut sp = SchedPoll { ports: ports.as_ptr() as u64, nr_ports: ports.len() as u32, timeout: deadline };
    // SAFETY: `sp.ports` is `ports`, borrowed for the call, `nr_ports` long.
    unsafe { sched_op(xen_sys::SCHEDOP_poll, &mut sp) }
}

/// The machine stops: Xen reboots, which ends QEMU (`-no-reboot`).
pub fn shutdown(reason: u32) -> ! {
    let mut arg = xen_sys::sched_shutdown { reason };
    loop {
        // SAFETY: sched_shutdown holds only the reason.
        let _ = unsafe { sched_op(xen_sys::SCHEDOP_shutdown, &mut arg) };
    }
}

/// Writes `bytes` to Xen's console (`CONSOLEIO_write`).
fn console_write(bytes: &[u8]) {
    for chunk in bytes.chunks(1024) {
        // SAFETY: Xen reads `chunk.len()` bytes from `chunk`.
        unsafe {
            hypercall(
                xen_sys::__HYPERVISOR_console_io,
                xen_sys::CONSOLEIO_write.into(),
                chunk.len() as u64,
                chunk.as_ptr() as u64,
                0,
                0,
            )
        };
    }
}

/// One line for Xen's console, gathered on the stack and written at once,
/// so that Xen's own messages cannot land inside a verdict line.
pub struct Line {
    buf: [u8; 2048],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Line { buf: [0; 2048], len: 0 }
    }

    /// Writes the line (cut at 2 KiB), then a newline.
    pub fn finish(mut self) {
        if self.len == self.buf.len() {
            self.len -= 1;
        }
        self.buf[self.len] = b'\n';
        console_write(&self.buf[..=self.len]);
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Prints one line on Xen's console.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut line = $crate::xen::Line::new();
        let _ = write!(line, $($arg)*);
        line.finish();
    }};
}
