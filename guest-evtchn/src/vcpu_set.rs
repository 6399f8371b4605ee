//! vCPU sets: built from a guest's CPU numbers, printed and parsed as CPU
//! lists, and handed to Xen by `EVTCHNOP_set_vcpu_set` with the checks the
//! ABI makes that a guest can make first.
//!
//! A [`VcpuSet`] stores its bits in the ABI's own layout (bit `n` is bit
//! `n % 8` of byte `n / 8`), so the hypercall reads and writes it in place:
//! nothing is copied or allocated.

use core::fmt;

use crate::abi::{errno, EvtchnSetVcpuSet, Port, EVTCHN_VCPU_SET_GET, MAX_VCPUS};

const BYTES: usize = MAX_VCPUS as usize / 8;

/// A set of Xen vCPU ids below [`MAX_VCPUS`].
#[derive(Clone, PartialEq, Eq)]
pub struct VcpuSet {
    bytes: [u8; BYTES],
}

impl Default for VcpuSet {
    fn default() -> Self {
        VcpuSet::new()
    }
}

/// Why a set could not be built or given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetError {
    /// The set has no vCPU (the ABI's `nr_bits == 0` and "no bit set" rows).
    Empty,
    /// A vCPU id at or past `limit`: [`MAX_VCPUS`] for any set, the domain's
    /// vCPU count when the caller gives it.
    VcpuOutOfRange { vcpu: u32, limit: u32 },
    /// The guest's CPU `cpu` has no Xen vCPU (the caller's map said so).
    CpuWithoutVcpu { cpu: u32 },
    /// Port 0 is reserved and never a channel.
    PortZero,
    /// Xen refused the operation with this errno (positive); see [`explain`].
    Xen(i32),
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SetError::Empty => f.write_str("the set has no vCPU"),
            SetError::VcpuOutOfRange { vcpu, limit } => write!(f, "vCPU {vcpu} is out of range (below {limit})"),
            SetError::CpuWithoutVcpu { cpu } => write!(f, "CPU {cpu} has no Xen vCPU"),
            SetError::PortZero => f.write_str("port 0 is reserved"),
            SetError::Xen(e) => write!(f, "Xen refused it: {} ({})", errno_name(e), explain(e)),
        }
    }
}

/// A CPU list or mask that does not parse: what is wrong, at which byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub at: usize,
    pub what: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl VcpuSet {
    pub const fn new() -> Self {
        VcpuSet { bytes: [0; BYTES] }
    }

    pub fn insert(&mut self, vcpu: u32) -> Result<(), SetError> {
        if vcpu >= MAX_VCPUS {
            return Err(SetError::VcpuOutOfRange { vcpu, limit: MAX_VCPUS });
        }
        self.bytes[vcpu as usize / 8] |= 1 << (vcpu % 8);
        Ok(())
    }

    pub fn remove(&mut self, vcpu: u32) {
        if vcpu < MAX_VCPUS {
            self.bytes[vcpu as usize / 8] &= !(1 << (vcpu % 8));
        }
    }

    pub fn contains(&self, vcpu: u32) -> bool {
        vcpu < MAX_VCPUS && self.bytes[vcpu as usize / 8] >> (vcpu % 8) & 1 == 1
    }

    pub fn clear(&mut self) {
        self.bytes = [0; BYTES];
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.iter().all(|&b| b == 0)
    }

    pub fn len(&self) -> u32 {
        self.bytes.iter().map(|b| b.count_ones()).sum()
    }

    /// The ids in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        // Eight bytes at a time as one little-endian word: bit n of the word
        // is bit n % 8 of byte n / 8, the ABI's order.
        self.bytes.chunks_exact(8).zip((0u32..).step_by(64)).flat_map(|(c, base)| {
            let mut w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            core::iter::from_fn(move || {
                let bit = (w != 0).then(|| w.trailing_zeros())?;
                w &= w - 1;
                Some(base + bit)
            })
        })
    }

    /// Bits the hypercall must carry: one past the highest id, 0 if empty.
    pub fn nr_bits(&self) -> u32 {
        match self.bytes.iter().rposition(|&b| b != 0) {
            Some(i) => i as u32 * 8 + 8 - self.bytes[i].leading_zeros(),
            None => 0,
        }
    }

    /// The set's bitmap as Xen reads it: `ceil(nr_bits / 8)` bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.nr_bits().div_ceil(8) as usize]
    }

    /// The set Xen should hold for a guest's CPUs: each CPU number is mapped
    /// to its Xen vCPU id by `vcpu_of` (Linux's `xen_vcpu_nr()`; the two
    /// differ after CPU hotplug or kexec, so never use CPU numbers as ids).
    pub fn from_cpus(
        cpus: impl IntoIterator<Item = u32>,
        mut vcpu_of: impl FnMut(u32) -> Option<u32>,
    ) -> Result<VcpuSet, SetError> {
        let mut set = VcpuSet::new();
        for cpu in cpus {
            set.insert(vcpu_of(cpu).ok_or(SetError::CpuWithoutVcpu { cpu })?)?;
        }
        Ok(set)
    }

    /// Parses a CPU list as Linux prints one (`0-3,6,8-9`; `/proc/irq/N/
    /// smp_affinity_list`). Spaces and a final newline are allowed; an empty
    /// list is the empty set.
    pub fn parse_list(s: &str) -> Result<VcpuSet, ParseError> {
        let mut set = VcpuSet::new();
        let trimmed = s.trim_end_matches('\n');
        if trimmed.trim().is_empty() {
            return Ok(set);
        }
        let mut offset = 0;
        for raw in trimmed.split(',') {
            let start = offset + (raw.len() - raw.trim_start().len());
            let item = raw.trim();
            let (lo, hi) = match item.split_once('-') {
                Some((a, b)) => {
                    let b_at = start + a.len() + 1 + (b.len() - b.trim_start().len());
                    (parse_id(a, start)?, parse_id(b, b_at)?)
                }
                None => {
                    let id = parse_id(item, start)?;
                    (id, id)
                }
            };
            if lo > hi {
                return Err(ParseError { at: start, what: "range runs backwards" });
            }
            for id in lo..=hi {
                set.insert(id).map_err(|_| ParseError { at: start, what: "vCPU id at or past 8192" })?;
            }
            offset += raw.len() + 1;
        }
        Ok(set)
    }

    /// Parses a hexadecimal CPU mask as Linux prints one (`/proc/irq/N/
    /// smp_affinity`): comma-separated groups of 32 bits, most significant
    /// first, e.g. `00000000,0000000f`; a group of fewer digits still
    /// stands for its 32 bits, as Linux's `cpumask_parse()` reads it.
    pub fn parse_mask(s: &str) -> Result<VcpuSet, ParseError> {
        let mut set = VcpuSet::new();
        let text = s.trim_end_matches('\n');
        let groups: usize = text.split(',').count();
        let mut at = 0;
        for (i, group) in text.split(',').enumerate() {
            let base = 32 * (groups - 1 - i) as u32;
            if group.is_empty() || group.len() > 8 {
                return Err(ParseError { at, what: "a group of 1 to 8 hexadecimal digits expected" });
            }
            for (k, c) in group.char_indices() {
                let v = c.to_digit(16).ok_or(ParseError { at: at + k, what: "not a hexadecimal digit" })?;
                let nibble = base + 4 * (group.len() - 1 - k) as u32;
                for b in (0..4).filter(|b| v >> b & 1 == 1) {
                    set.insert(nibble + b).map_err(|_| ParseError { at: at + k, what: "CPU at or past 8192" })?;
                }
            }
            at += group.len() + 1;
        }
        Ok(set)
    }

    /// The argument that gives `port` this set, checked as Xen would check
    /// it where a guest can know the answer first (the ABI's rows for port 0,
    /// an empty set, and ids at or past `nr_vcpus`, the domain's count).
    ///
    /// The returned struct points at `self`: it is valid while `self` is
    /// neither moved nor changed, which [`VcpuSet::give`] ensures.
    pub fn set_op(&self, port: Port, nr_vcpus: u32) -> Result<EvtchnSetVcpuSet, SetError> {
        if port == 0 {
            return Err(SetError::PortZero);
        }
        let nr_bits = self.nr_bits();
        if nr_bits == 0 {
            return Err(SetError::Empty);
        }
        let limit = nr_vcpus.min(MAX_VCPUS);
        if nr_bits > limit {
            return Err(SetError::VcpuOutOfRange { vcpu: nr_bits - 1, limit });
        }
        Ok(EvtchnSetVcpuSet { port, flags: 0, nr_bits, pad: 0, bitmap: self.bytes.as_ptr() as u64 })
    }

    /// Gives `port` this set through `xen`.
    pub fn give<X: SetVcpuSetOp + ?Sized>(&self, xen: &X, port: Port, nr_vcpus: u32) -> Result<(), SetError> {
        let mut op = self.set_op(port, nr_vcpus)?;
        // SAFETY: `op.bitmap` is `self.bytes`, borrowed for the whole call and
        // at least `ceil(op.nr_bits / 8)` bytes long.
        unsafe { xen.set_vcpu_set_op(&mut op) }.map_err(SetError::Xen)
    }

    /// Reads `port`'s set back from Xen into `self`; returns the domain's
    /// vCPU count, which Xen writes back.
    pub fn fetch<X: SetVcpuSetOp + ?Sized>(&mut self, xen: &X, port: Port) -> Result<u32, SetError> {
        if port == 0 {
            return Err(SetError::PortZero);
        }
        self.clear();
        let mut op = EvtchnSetVcpuSet {
            port,
            flags: EVTCHN_VCPU_SET_GET,
            nr_bits: MAX_VCPUS,
            pad: 0,
            bitmap: self.bytes.as_mut_ptr() as u64,
        };
        // SAFETY: `op.bitmap` is `self.bytes`, borrowed mutably for the whole
        // call and `MAX_VCPUS / 8` bytes long, as `op.nr_bits` says.
        unsafe { xen.set_vcpu_set_op(&mut op) }.map_err(SetError::Xen)?;
        Ok(op.nr_bits)
    }
}

fn parse_id(s: &str, at: usize) -> Result<u32, ParseError> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError { at, what: "expected a number" });
    }
    s.parse().map_err(|_| ParseError { at, what: "number too large" })
}

impl fmt::Display for VcpuSet {
    /// As a CPU list (`0-3,6`), the empty set as nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut run: Option<(u32, u32)> = None;
        let mut first = true;
        let mut flush = |f: &mut fmt::Formatter<'_>, (lo, hi): (u32, u32)| {
            let sep = if first { "" } else { "," };
            first = false;
            if lo == hi {
                write!(f, "{sep}{lo}")
            } else {
                write!(f, "{sep}{lo}-{hi}")
            }
        };
        for id in self.iter() {
            run = match run {
                Some((lo, hi)) if hi + 1 == id => Some((lo, id)),
                Some(r) => {
                    flush(f, r)?;
                    Some((id, id))
                }
                None => Some((id, id)),
            };
        }
        match run {
            Some(r) => flush(f, r),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for VcpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VcpuSet({self})")
    }
}

/// The guest's way to make `EVTCHNOP_set_vcpu_set` (a hypercall page, Linux's
/// privcmd, a model of Xen).
pub trait SetVcpuSetOp {
    /// Makes the hypercall with `op`; `Err` holds Xen's errno, positive.
    ///
    /// # Safety
    /// `op.bitmap` must address `ceil(op.nr_bits / 8)` bytes that stay valid
    /// for the call: readable to set, writable to get
    /// ([`EVTCHN_VCPU_SET_GET`]).
    unsafe fn set_vcpu_set_op(&self, op: &mut EvtchnSetVcpuSet) -> Result<(), i32>;
}

/// The symbolic name of one of the new operation's errnos.
pub fn errno_name(e: i32) -> &'static str {
    match e {
        errno::EFAULT => "EFAULT",
        errno::EINVAL => "EINVAL",
        errno::ENOENT => "ENOENT",
        errno::ENOSPC => "ENOSPC",
        errno::EOPNOTSUPP => "EOPNOTSUPP",
        errno::ENOMEM => "ENOMEM",
        errno::EPERM => "EPERM",
        errno::ENOSYS => "ENOSYS",
        _ => "errno",
    }
}

/// What an errno of `EVTCHNOP_set_vcpu_set` means, in the ABI's words.
pub fn explain(e: i32) -> &'static str {
    match e {
        errno::EOPNOTSUPP => "routing is off (evtchn-route=off or not built), or the domain uses the 2-level ABI",
        errno::EINVAL => "bad flags or pad, no such or a free port, a per-vCPU or Xen-consumer channel, an empty set, a vCPU past the domain's, or no vCPU of the set can take events",
        errno::EFAULT => "Xen could not read (set) or write (get) the bitmap",
        errno::ENOSPC => "the domain holds as many sets as evtchn-route-max-sets allows",
        errno::ENOMEM => "Xen ran out of memory",
        errno::EPERM => "not allowed (the operation works on the caller's own channels)",
        errno::ENOENT => "no such vCPU",
        errno::ENOSYS => "this Xen has no EVTCHNOP_set_vcpu_set (not built with evroute's series)",
        _ => "not an errno of this operation",
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;
    use std::string::ToString;
    use std::vec::Vec;

    #[test]
    fn lists_parse_and_print_round_trip() {
        for s in ["0", "0-3", "0-3,6,8-9", "1,3,5", "8191", ""] {
            assert_eq!(VcpuSet::parse_list(s).unwrap().to_string(), s);
        }
        assert_eq!(VcpuSet::parse_list(" 0 - 2, 5\n").unwrap().to_string(), "0-2,5");
    }

    #[test]
    fn bad_lists_say_where() {
        assert_eq!(VcpuSet::parse_list("0-3,x").unwrap_err(), ParseError { at: 4, what: "expected a number" });
        assert_eq!(VcpuSet::parse_list("3-1").unwrap_err().what, "range runs backwards");
        assert_eq!(VcpuSet::parse_list("8192").unwrap_err().what, "vCPU id at or past 8192");
        assert_eq!(VcpuSet::parse_list("1,,2").unwrap_err(), ParseError { at: 2, what: "expected a number" });
        assert_eq!(VcpuSet::parse_list(" 0 - x").unwrap_err(), ParseError { at: 5, what: "expected a number" });
    }

    #[test]
    fn masks_parse_as_linux_prints_them() {
        assert_eq!(VcpuSet::parse_mask("00000000,0000000f\n").unwrap().to_string(), "0-3");
        assert_eq!(VcpuSet::parse_mask("1,00000000").unwrap().to_string(), "32");
        // Each group is 32 bits however many digits it shows.
        assert_eq!(VcpuSet::parse_mask("1,0").unwrap().to_string(), "32");
        assert_eq!(VcpuSet::parse_mask("80000000,1").unwrap().to_string(), "0,63");
        assert_eq!(VcpuSet::parse_mask("0g").unwrap_err(), ParseError { at: 1, what: "not a hexadecimal digit" });
        assert_eq!(VcpuSet::parse_mask("1,123456789").unwrap_err().at, 2);
        assert_eq!(VcpuSet::parse_mask("f,,1").unwrap_err().at, 2);
    }

    #[test]
    fn nr_bits_and_bytes_follow_the_highest_id() {
        let mut s = VcpuSet::new();
        assert_eq!((s.nr_bits(), s.as_bytes().len()), (0, 0));
        s.insert(0).unwrap();
        assert_eq!((s.nr_bits(), s.as_bytes()), (1, &[1u8][..]));
        s.insert(9).unwrap();
        assert_eq!((s.nr_bits(), s.as_bytes()), (10, &[1u8, 2][..]));
        s.insert(8191).unwrap();
        assert_eq!(s.nr_bits(), 8192);
        assert_eq!(s.iter().collect::<Vec<_>>(), [0, 9, 8191]);
        assert_eq!(s.len(), 3);
        assert!(s.insert(8192).is_err());
    }

    #[test]
    fn cpus_map_through_the_guests_vcpu_ids() {
        // CPU n is vCPU n + 1 (as after a kexec that renumbered them).
        let s = VcpuSet::from_cpus([0, 2], |c| Some(c + 1)).unwrap();
        assert_eq!(s.to_string(), "1,3");
        assert_eq!(VcpuSet::from_cpus([5], |_| None).unwrap_err(), SetError::CpuWithoutVcpu { cpu: 5 });
    }

    #[test]
    fn set_op_checks_what_a_guest_can_know() {
        let mut s = VcpuSet::new();
        assert_eq!(s.set_op(3, 4).unwrap_err(), SetError::Empty);
        s.insert(4).unwrap();
        assert_eq!(s.set_op(3, 4).unwrap_err(), SetError::VcpuOutOfRange { vcpu: 4, limit: 4 });
        assert_eq!(s.set_op(0, 8).unwrap_err(), SetError::PortZero);
        let op = s.set_op(3, 8).unwrap();
        assert_eq!((op.port, op.flags, op.nr_bits, op.pad), (3, 0, 5, 0));
        assert_eq!(op.bitmap, s.as_bytes().as_ptr() as u64);
    }

    /// A Xen that answers with the set it was given and a fixed errno.
    struct Fake(core::cell::Cell<[u8; 2]>, i32);

    impl SetVcpuSetOp for Fake {
        unsafe fn set_vcpu_set_op(&self, op: &mut EvtchnSetVcpuSet) -> Result<(), i32> {
            if self.1 != 0 {
                return Err(self.1);
            }
            let p = op.bitmap as *mut u8;
            if op.flags == EVTCHN_VCPU_SET_GET {
                // SAFETY: the caller gave at least nr_bits / 8 >= 2 bytes.
                unsafe { core::ptr::copy_nonoverlapping(self.0.get().as_ptr(), p, 2) };
                op.nr_bits = 12;
            } else {
                let mut b = [0u8; 2];
                // SAFETY: the caller gave ceil(nr_bits / 8) bytes; copy at most those.
                unsafe { core::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), op.nr_bits.div_ceil(8).min(2) as usize) };
                self.0.set(b);
            }
            Ok(())
        }
    }

    #[test]
    fn give_and_fetch_pass_the_bitmap_in_place() {
        let xen = Fake(core::cell::Cell::new([0; 2]), 0);
        let set = VcpuSet::parse_list("1,9").unwrap();
        set.give(&xen, 5, 12).unwrap();
        assert_eq!(xen.0.get(), [2, 2]);
        let mut back = VcpuSet::parse_list("0-20").unwrap();
        assert_eq!(back.fetch(&xen, 5).unwrap(), 12);
        assert_eq!(back, set);
        let refused = Fake(core::cell::Cell::new([0; 2]), errno::EOPNOTSUPP);
        let err = set.give(&refused, 5, 12).unwrap_err();
        assert_eq!(err, SetError::Xen(errno::EOPNOTSUPP));
        assert!(format!("{err}").starts_with("Xen refused it: EOPNOTSUPP (routing is off"));
    }
}
