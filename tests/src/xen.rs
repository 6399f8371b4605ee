//! dom0's two doors into Xen: `/dev/xen/privcmd` for hypercalls and
//! `/dev/xen/evtchn` for event channels bound to this process.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use xen_sys as xs;

/// `struct privcmd_hypercall` (include/uapi/xen/privcmd.h).
#[repr(C)]
struct Hypercall {
    op: u64,
    arg: [u64; 5],
}

/// `_IOC(_IOC_NONE, type, nr, size)` as Linux encodes it on x86.
const fn ioc(ty: u8, nr: u64, size: u64) -> u64 {
    (size << 16) | ((ty as u64) << 8) | nr
}

/// `DOMID_SELF` (xen/include/public/xen.h), missing from xen-sys.
const DOMID_SELF: u16 = 0x7ff0;

const IOCTL_PRIVCMD_HYPERCALL: u64 = ioc(b'P', 0, 48);
const IOCTL_EVTCHN_BIND_INTERDOMAIN: u64 = ioc(b'E', 1, 8);
const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u64 = ioc(b'E', 2, 4);
const IOCTL_EVTCHN_UNBIND: u64 = ioc(b'E', 3, 4);
const IOCTL_EVTCHN_NOTIFY: u64 = ioc(b'E', 4, 4);

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub struct Privcmd(File);

/// A channel as `EVTCHNOP_status` describes it.
#[derive(Clone, Copy, Debug)]
pub struct Channel {
    /// `EVTCHNSTAT_*`.
    pub state: u32,
    /// The vCPU Xen keeps it bound to.
    pub vcpu: u32,
    /// Unbound: the domain allowed to bind it; interdomain: domain and port.
    pub remote: Option<(u16, Option<u32>)>,
    pub pirq: Option<u32>,
    pub virq: Option<u32>,
}

impl Channel {
    /// The state's name, and what it is bound to.
    pub fn kind(&self) -> String {
        match (self.state, self.remote, self.pirq, self.virq) {
            (xs::EVTCHNSTAT_unbound, Some((d, _)), _, _) => format!("unbound (dom {d})"),
            (xs::EVTCHNSTAT_interdomain, Some((d, Some(p))), _, _) => format!("interdomain (dom {d} port {p})"),
            (xs::EVTCHNSTAT_pirq, _, Some(p), _) => format!("pirq {p}"),
            (xs::EVTCHNSTAT_virq, _, _, Some(v)) => format!("virq {v}"),
            (xs::EVTCHNSTAT_ipi, ..) => "ipi".into(),
            (xs::EVTCHNSTAT_closed, ..) => "closed".into(),
            (s, ..) => format!("state {s}"),
        }
    }
}

impl evroute_guest::SetVcpuSetOp for Privcmd {
    unsafe fn set_vcpu_set_op(&self, op: &mut evroute_guest::abi::EvtchnSetVcpuSet) -> Result<(), i32> {
        self.evtchn_op(evroute_guest::abi::EVTCHNOP_SET_VCPU_SET, op)
    }
}

impl Privcmd {
    pub fn open() -> io::Result<Self> {
        Ok(Privcmd(OpenOptions::new().read(true).write(true).open("/dev/xen/privcmd")?))
    }

    /// Hypercall `op(cmd, arg)`: Ok, or the positive errno.
    fn call<T>(&self, op: u32, cmd: u32, arg: &mut T) -> Result<(), i32> {
        let mut h = Hypercall { op: u64::from(op), arg: [u64::from(cmd), arg as *mut T as u64, 0, 0, 0] };
        // SAFETY: `h` is a live privcmd_hypercall; `arg` points to a live,
        // initialised T for the duration of the call, which is all Xen reads
        // or writes (PV dom0: Xen reads this process's memory directly).
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), IOCTL_PRIVCMD_HYPERCALL, &mut h) };
        if r < 0 {
            Err(last_errno())
        } else {
            Ok(())
        }
    }

    /// `HYPERVISOR_event_channel_op(cmd, arg)`: Ok, or the positive errno.
    pub fn evtchn_op<T>(&self, cmd: u32, arg: &mut T) -> Result<(), i32> {
        self.call(xs::__HYPERVISOR_event_channel_op, cmd, arg)
    }

    /// `SCHEDOP_poll` on one port, no time-out: returns when the port is
    /// or becomes pending, or spuriously (any event for this vCPU).
    pub fn poll(&self, port: u32) -> Result<(), i32> {
        /// `struct sched_poll` on x86-64: ports, nr_ports (+4 pad), timeout.
        #[repr(C)]
        struct SchedPoll {
            ports: u64,
            nr_ports: u32,
            timeout: u64,
        }
        let mut ports = [port];
        let mut sp = SchedPoll { ports: ports.as_mut_ptr() as u64, nr_ports: 1, timeout: 0 };
        self.call(xs::__HYPERVISOR_sched_op, xs::SCHEDOP_poll, &mut sp)
    }

    /// `EVTCHNOP_set_vcpu_set` with a raw bitmap address (so tests can pass
    /// bad ones). Returns `nr_bits` as written back (GET) or the errno.
    pub fn set_vcpu_set_raw(&self, port: u32, flags: u32, nr_bits: u32, addr: u64) -> Result<u32, i32> {
        let mut op = evroute_model::abi::EvtchnSetVcpuSet { port, flags, nr_bits, pad: 0, bitmap: addr };
        self.vcpu_set_op(&mut op)
    }

    /// `EVTCHNOP_set_vcpu_set` with every field the caller's.
    pub fn vcpu_set_op(&self, op: &mut evroute_model::abi::EvtchnSetVcpuSet) -> Result<u32, i32> {
        self.evtchn_op(evroute_model::abi::EVTCHNOP_SET_VCPU_SET, op).map(|()| op.nr_bits)
    }

    pub fn set_vcpu_set(&self, port: u32, vcpus: u64) -> Result<(), i32> {
        let bytes = vcpus.to_le_bytes();
        self.set_vcpu_set_raw(port, 0, 64, bytes.as_ptr() as u64).map(|_| ())
    }

    /// The set read back (`EVTCHN_VCPU_SET_GET`), as 64 bits.
    pub fn get_vcpu_set(&self, port: u32) -> Result<u64, i32> {
        let mut bytes = [0u8; 8];
        self.set_vcpu_set_raw(port, evroute_model::abi::EVTCHN_VCPU_SET_GET, 64, bytes.as_mut_ptr() as u64)?;
        Ok(u64::from_le_bytes(bytes))
    }

    pub fn set_priority(&self, port: u32, priority: u32) -> Result<(), i32> {
        let mut op = xs::evtchn_set_priority { port, priority };
        self.evtchn_op(xs::EVTCHNOP_set_priority, &mut op)
    }

    pub fn bind_ipi(&self, vcpu: u32) -> Result<u32, i32> {
        let mut op = xs::evtchn_bind_ipi { vcpu, port: 0 };
        self.evtchn_op(xs::EVTCHNOP_bind_ipi, &mut op).map(|()| op.port)
    }

    pub fn bind_virq(&self, virq: u32, vcpu: u32) -> Result<u32, i32> {
        let mut op = xs::evtchn_bind_virq { virq, vcpu, port: 0 };
        self.evtchn_op(xs::EVTCHNOP_bind_virq, &mut op).map(|()| op.port)
    }

    pub fn alloc_unbound(&self) -> Result<u32, i32> {
        let mut op = xs::evtchn_alloc_unbound { dom: DOMID_SELF, remote_dom: 0, port: 0 };
        self.evtchn_op(xs::EVTCHNOP_alloc_unbound, &mut op).map(|()| op.port)
    }

    /// `EVTCHNOP_status` of a channel of ours, as Xen fills it.
    fn status_raw(&self, port: u32) -> Result<xs::evtchn_status, i32> {
        // SAFETY: evtchn_status is plain old data; all-zero is valid.
        let mut op: xs::evtchn_status = unsafe { std::mem::zeroed() };
        op.dom = DOMID_SELF;
        op.port = port;
        self.evtchn_op(xs::EVTCHNOP_status, &mut op).map(|()| op)
    }

    /// The vCPU a channel of ours is bound to (`EVTCHNOP_status`).
    pub fn bound_vcpu(&self, port: u32) -> Result<u32, i32> {
        self.status_raw(port).map(|op| op.vcpu)
    }

    /// `EVTCHNOP_status` of a channel of ours: its state (`EVTCHNSTAT_*`)
    /// and, unbound or interdomain, the remote domain.
    pub fn status(&self, port: u32) -> Result<(u32, Option<u16>), i32> {
        let c = self.channel(port)?;
        Ok((c.state, c.remote.map(|(dom, _)| dom)))
    }

    /// What Xen says of a channel of ours.
    pub fn channel(&self, port: u32) -> Result<Channel, i32> {
        let op = self.status_raw(port)?;
        let mut c = Channel { state: op.status, vcpu: op.vcpu, remote: None, pirq: None, virq: None };
        match op.status {
            // SAFETY: Xen filled the union member its status names.
            xs::EVTCHNSTAT_unbound => c.remote = Some((unsafe { op.u.unbound.dom }, None)),
            xs::EVTCHNSTAT_interdomain => {
                // SAFETY: as above.
                let i = unsafe { op.u.interdomain };
                c.remote = Some((i.dom, Some(i.port)));
            }
            // SAFETY: as above.
            xs::EVTCHNSTAT_pirq => c.pirq = Some(unsafe { op.u.pirq }),
            // SAFETY: as above.
            xs::EVTCHNSTAT_virq => c.virq = Some(unsafe { op.u.virq }),
            _ => {}
        }
        Ok(c)
    }

    /// `EVTCHNOP_send` straight to Xen: its answer, which Linux's notify
    /// ioctl drops.
    pub fn send(&self, port: u32) -> Result<(), i32> {
        let mut op = xs::evtchn_send { port };
        self.evtchn_op(xs::EVTCHNOP_send, &mut op)
    }

    /// Xen's free memory in pages (`XEN_SYSCTL_physinfo`).
    pub fn free_pages(&self) -> Result<u64, i32> {
        // struct xen_sysctl_physinfo: ten u32, then total_pages, free_pages.
        let mut body = [0u8; 112];
        self.sysctl(XEN_SYSCTL_PHYSINFO, &mut body)?;
        Ok(u64::from_ne_bytes(body[48..56].try_into().expect("8 bytes")))
    }

    pub fn close(&self, port: u32) -> Result<(), i32> {
        let mut op = xs::evtchn_close { port };
        self.evtchn_op(xs::EVTCHNOP_close, &mut op)
    }

    /// `HYPERVISOR_sysctl` with `body` as the start of the union, copied
    /// back after the call (OUT fields). Xen refuses a sysctl
    /// whose interface version is not its own (-EACCES), which changes
    /// between releases (0x15 in 4.17, 0x16 in 4.20): try 4.17's first,
    /// then the neighbours, and remember the one that answers.
    fn sysctl(&self, cmd: u32, body: &mut [u8]) -> Result<(), i32> {
        use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
        static VERSION: AtomicU32 = AtomicU32::new(0);
        const EACCES: i32 = 13;
        let known = VERSION.load(Relaxed);
        let tries: Vec<u32> = if known != 0 {
            vec![known]
        } else {
            [0x15].into_iter().chain((0x10..0x20).filter(|v| *v != 0x15)).collect()
        };
        for version in tries {
            let mut op = Sysctl { cmd, interface_version: version, u: [0; 128] };
            op.u[..body.len()].copy_from_slice(body);
            let mut h =
                Hypercall { op: u64::from(xs::__HYPERVISOR_sysctl), arg: [&mut op as *mut Sysctl as u64, 0, 0, 0, 0] };
            // SAFETY: `h` is a live privcmd_hypercall and `op` a live struct
            // xen_sysctl; the buffers `body` names are the caller's, live.
            let r = unsafe { libc::ioctl(self.0.as_raw_fd(), IOCTL_PRIVCMD_HYPERCALL, &mut h) };
            let err = if r < 0 { last_errno() } else { 0 };
            if err != EACCES {
                VERSION.store(version, Relaxed);
                body.copy_from_slice(&op.u[..body.len()]);
                return if err == 0 { Ok(()) } else { Err(err) };
            }
        }
        Err(EACCES)
    }

    /// Press debug keys on Xen's console (`XEN_SYSCTL_debug_keys`).
    pub fn debug_keys(&self, keys: &str) -> Result<(), i32> {
        let mut body = [0u8; 12];
        body[..8].copy_from_slice(&(keys.as_ptr() as u64).to_ne_bytes());
        body[8..].copy_from_slice(&(keys.len() as u32).to_ne_bytes());
        self.sysctl(XEN_SYSCTL_DEBUG_KEYS, &mut body)
    }

    /// What Xen's console ring holds from `index` on; advances `index`
    /// (`XEN_SYSCTL_readconsole`, incremental).
    pub fn read_console(&self, index: &mut u32) -> Result<String, i32> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // clear=0, incremental=1, pad, index, buffer, count.
            let mut body = [0u8; 20];
            body[1] = 1;
            body[4..8].copy_from_slice(&index.to_ne_bytes());
            body[8..16].copy_from_slice(&(buf.as_mut_ptr() as u64).to_ne_bytes());
            body[16..20].copy_from_slice(&(buf.len() as u32).to_ne_bytes());
            self.sysctl(XEN_SYSCTL_READCONSOLE, &mut body)?;
            *index = u32::from_ne_bytes([body[4], body[5], body[6], body[7]]);
            let n = u32::from_ne_bytes([body[16], body[17], body[18], body[19]]) as usize;
            out.extend_from_slice(&buf[..n.min(buf.len())]);
            if n < buf.len() {
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
        }
    }
}

/// `struct xen_sysctl` (xen/include/public/sysctl.h): command, interface
/// version, then a union padded to 128 bytes and 8-aligned.
#[repr(C, align(8))]
struct Sysctl {
    cmd: u32,
    interface_version: u32,
    u: [u8; 128],
}

const XEN_SYSCTL_READCONSOLE: u32 = 1;
const XEN_SYSCTL_PHYSINFO: u32 = 3;
const XEN_SYSCTL_DEBUG_KEYS: u32 = 7;

/// One open of `/dev/xen/evtchn`. Linux names its interrupts
/// `evtchn:<comm at open>`, so each is opened under its own thread name to
/// tell them apart in /proc/interrupts.
pub struct Evtchn {
    f: File,
    pub name: String,
}

impl Evtchn {
    pub fn open(name: &str) -> io::Result<Self> {
        let cname = std::ffi::CString::new(name).expect("no NUL");
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of <= 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, cname.as_ptr() as libc::c_ulong, 0, 0, 0) };
        let f = OpenOptions::new().read(true).write(true).open("/dev/xen/evtchn")?;
        Ok(Evtchn { f, name: name.to_string() })
    }

    fn ioctl(&self, req: u64, arg: &mut [u32]) -> io::Result<u32> {
        // SAFETY: `arg` is the ioctl's struct (u32 fields), live for the call.
        let r = unsafe { libc::ioctl(self.f.as_raw_fd(), req, arg.as_mut_ptr()) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u32)
        }
    }

    /// A new unbound port of ours for dom0 to bind (in dom0: the
    /// receiving half of a loop-back pair).
    pub fn bind_unbound(&self) -> io::Result<u32> {
        self.ioctl(IOCTL_EVTCHN_BIND_UNBOUND_PORT, &mut [0])
    }

    /// Bind to dom0's `remote_port`: the sending half of a loop-back pair.
    pub fn bind_interdomain(&self, remote_port: u32) -> io::Result<u32> {
        self.bind_remote(0, remote_port)
    }

    /// Bind to `remote_port` of domain `dom` (which allocated it for us).
    pub fn bind_remote(&self, dom: u32, remote_port: u32) -> io::Result<u32> {
        self.ioctl(IOCTL_EVTCHN_BIND_INTERDOMAIN, &mut [dom, remote_port])
    }

    /// Reads return nothing instead of blocking: several threads may wait
    /// on one open and only one of them gets each port.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        let fd = self.f.as_raw_fd();
        // SAFETY: fcntl on a descriptor this struct owns; no pointers.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn unbind(&self, port: u32) -> io::Result<()> {
        self.ioctl(IOCTL_EVTCHN_UNBIND, &mut [port]).map(|_| ())
    }

    pub fn notify(&self, port: u32) -> io::Result<()> {
        self.ioctl(IOCTL_EVTCHN_NOTIFY, &mut [port]).map(|_| ())
    }

    /// Ports that fired, waiting up to `timeout_ms`; empty on time-out.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<Vec<u32>> {
        let mut pfd = libc::pollfd { fd: self.f.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Ok(Vec::new());
        }
        let mut buf = [0u8; 256];
        let n = match (&self.f).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        Ok(buf[..n].chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// Re-enable delivery of `port` (the driver masks it after each event).
    pub fn unmask(&self, port: u32) -> io::Result<()> {
        (&self.f).write_all(&port.to_ne_bytes())
    }
}

/// Linux's IRQ number of the channel opened as `name`.
pub fn irq_of(name: &str) -> io::Result<u32> {
    crate::linux::irq_row(&format!("evtchn:{name}")).map(|r| r.irq)
}

/// Per-CPU counts of the interrupt named `evtchn:<name>` in /proc/interrupts
/// (an offline CPU as 0).
pub fn irq_counts(name: &str) -> io::Result<Vec<u64>> {
    crate::linux::irq_row(&format!("evtchn:{name}")).map(|r| r.dense())
}

/// Pin the calling thread to one CPU.
pub fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in
    // bounds for cpu < CPU_SETSIZE; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
