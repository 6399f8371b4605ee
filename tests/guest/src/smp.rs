//! Secondary vCPUs: brought up with `VCPUOP_initialise` and `VCPUOP_up`,
//! then each spins (so Xen sees it running) doing what vCPU 0 asks: send on
//! a port, or drain its own queues with `evroute-guest`'s consumer.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use evroute_guest::{Consumer, Faults};

use crate::pages::{now_ns, Memory, Page, Shared, NR_PORTS, NR_VCPUS};
use crate::xen;

const STACK_PAGES: usize = 4;
/// How long a sender waits to see the receiving vCPU blocked.
const BLOCKED_WAIT_NS: u64 = 2_000_000_000;
static STACKS: [[Page; STACK_PAGES]; NR_VCPUS] = [const { [const { Page::new() }; STACK_PAGES] }; NR_VCPUS];

/// One vCPU's mailbox. SeqCst throughout: a handful of operations per
/// event, and the cases reason about their order across vCPUs.
pub struct Mailbox {
    /// Ports to send on, in order, then zero; vCPU 0 writes, the owner clears.
    send: [AtomicU32; 2],
    /// 1 + the vCPU that must be blocked before the sends (0: send at once).
    after_blocked: AtomicU32,
    /// The last sends went out without seeing that vCPU blocked (time-out).
    not_blocked: AtomicBool,
    /// Bumped by the owner after each batch of sends.
    sent: AtomicU32,
    /// The owner drains its queues while this is set (it has a control block).
    consume: AtomicBool,
    /// Events the owner's consumer handled, per port below 64.
    handled: [AtomicU32; 64],
    /// The owner has started.
    alive: AtomicBool,
}

impl Mailbox {
    const fn new() -> Self {
        Mailbox {
            send: [const { AtomicU32::new(0) }; 2],
            after_blocked: AtomicU32::new(0),
            not_blocked: AtomicBool::new(false),
            sent: AtomicU32::new(0),
            consume: AtomicBool::new(false),
            handled: [const { AtomicU32::new(0) }; 64],
            alive: AtomicBool::new(false),
        }
    }
}

pub static MAILBOX: [Mailbox; NR_VCPUS] = [const { Mailbox::new() }; NR_VCPUS];

/// Asks `vcpu` to send on `first`, then on `then` (0: nothing), once
/// `blocked` (if any) is blocked in Xen. Returns a ticket for [`sent`].
pub fn post_send(vcpu: u32, blocked: Option<u32>, first: u32, then: u32) -> u32 {
    let m = &MAILBOX[vcpu as usize];
    let ticket = m.sent.load(Ordering::SeqCst);
    m.after_blocked.store(blocked.map_or(0, |b| b + 1), Ordering::SeqCst);
    m.send[1].store(then, Ordering::SeqCst);
    m.send[0].store(first, Ordering::SeqCst);
    ticket
}

/// Whether `vcpu`'s last sends had to go out before it saw the vCPU it
/// waited for blocked.
pub fn sent_unblocked(vcpu: u32) -> bool {
    MAILBOX[vcpu as usize].not_blocked.load(Ordering::SeqCst)
}

/// Whether `vcpu` made the sends of `ticket`.
pub fn sent(vcpu: u32, ticket: u32) -> bool {
    MAILBOX[vcpu as usize].sent.load(Ordering::SeqCst) != ticket
}

/// Lets `vcpu` drain its own queues (it must have a control block).
pub fn set_consuming(vcpu: u32, on: bool) {
    MAILBOX[vcpu as usize].consume.store(on, Ordering::SeqCst);
}

/// Events `vcpu`'s consumer handled on `port` so far.
pub fn handled(vcpu: u32, port: u32) -> u32 {
    MAILBOX[vcpu as usize].handled[port as usize % 64].load(Ordering::SeqCst)
}

/// Brings `vcpu` up on the boot page tables, entering `secondary_main`.
pub fn bring_up(mem: &Memory, vcpu: u32) -> Result<(), i32> {
    // SAFETY: vcpu_guest_context is plain data (integers and arrays of
    // them), for which all-zero is a valid value.
    let mut ctx: xen_sys::vcpu_guest_context = unsafe { core::mem::zeroed() };
    let stack_top = STACKS[vcpu as usize][STACK_PAGES - 1].addr() + 4096;
    ctx.flags = u64::from(xen_sys::VGCF_in_kernel);
    ctx.user_regs.cs = xen_sys::FLAT_KERNEL_CS as u16;
    ctx.user_regs.ss = xen_sys::FLAT_KERNEL_SS as u16;
    ctx.user_regs.__bindgen_anon_8.rip = xen::secondary_start as *const () as u64;
    ctx.user_regs.__bindgen_anon_10.rsp = stack_top;
    ctx.user_regs.__bindgen_anon_7.rdi = u64::from(vcpu);
    ctx.kernel_ss = u64::from(xen_sys::FLAT_KERNEL_SS);
    ctx.kernel_sp = stack_top;
    let trap = xen::no_callback as *const () as u64;
    ctx.event_callback_eip = trap;
    ctx.failsafe_callback_eip = trap;
    ctx.syscall_callback_eip = trap;
    // The boot vCPU's top-level table, as a 64-bit guest's CR3 (mfn << 12).
    ctx.ctrlreg[3] = mem.mfn(mem.page_table) << 12;
    xen::vcpu_op(xen::VCPUOP_INITIALISE, vcpu, &mut ctx)?;
    xen::vcpu_op(xen::VCPUOP_UP, vcpu, &mut ())?;
    while !MAILBOX[vcpu as usize].alive.load(Ordering::SeqCst) {
        xen::yield_now();
    }
    Ok(())
}

/// A secondary vCPU's life: never returns, never blocks.
#[unsafe(no_mangle)]
extern "C" fn secondary_main(vcpu: u64) -> ! {
    let vcpu = vcpu as u32;
    let m = &MAILBOX[vcpu as usize];
    let mut consumer = Consumer::new(vcpu, NR_PORTS, Faults::NONE);
    m.alive.store(true, Ordering::SeqCst);
    loop {
        let port = m.send[0].swap(0, Ordering::SeqCst);
        if port != 0 {
            let then = m.send[1].swap(0, Ordering::SeqCst);
            if let Some(b) = m.after_blocked.load(Ordering::SeqCst).checked_sub(1) {
                // The event must find vCPU `b` blocked, not about to block;
                // give up after a while, and say so, rather than hang.
                let deadline = now_ns(vcpu) + BLOCKED_WAIT_NS;
                let mut blocked = false;
                while !blocked && now_ns(vcpu) < deadline {
                    blocked = xen::runstate(b) == Ok(xen::RUNSTATE_BLOCKED);
                }
                m.not_blocked.store(!blocked, Ordering::SeqCst);
            }
            for p in [port, then].into_iter().filter(|&p| p != 0) {
                let mut op = xen_sys::evtchn_send { port: p };
                let _ = xen::evtchn_op(xen_sys::EVTCHNOP_send, &mut op);
            }
            m.sent.fetch_add(1, Ordering::SeqCst);
        }
        if m.consume.load(Ordering::SeqCst) {
            consumer.upcall(&Shared, &(), &mut |p| {
                m.handled[p as usize % 64].fetch_add(1, Ordering::SeqCst);
            });
        }
        core::hint::spin_loop();
    }
}
