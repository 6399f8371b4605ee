//! The routing decision: which vCPU's FIFO queue a per-OS event joins when it
//! is set pending. This is the only implementation; the Xen patch
//! (`xen/common/event_route.c`) is a line-by-line C transcription with the
//! same names and the same order of cases, the simulator calls it directly.
//!
//! Pure and allocation-free: sets are bit words (bit `v % 64` of word
//! `v / 64` is vCPU `v`), and every function costs O(words), never O(vCPUs).

use crate::error::Error;

/// A read-only view of a vCPU bitmap, word by word. Implemented for plain
/// words and for the hypervisor's atomically updated scheduler masks.
pub trait Bits {
    fn nwords(&self) -> usize;
    fn word(&self, i: usize) -> u64;
}

impl Bits for [u64] {
    fn nwords(&self) -> usize {
        self.len()
    }
    fn word(&self, i: usize) -> u64 {
        self[i]
    }
}

impl<const N: usize> Bits for [u64; N] {
    fn nwords(&self) -> usize {
        N
    }
    fn word(&self, i: usize) -> u64 {
        self[i]
    }
}

/// The boot option `evtchn-route=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Policy {
    /// `off`: today's Xen, always the bound vCPU (`notify_vcpu_id`).
    Bound = 0,
    /// `running`: stay on the last queue while its vCPU runs, else any running
    /// vCPU of the set, else a blocked one (woken, it runs at once; a
    /// preempted one waits for a time slice), else the bound one.
    PreferRunning = 1,
    /// `balanced`: as `PreferRunning`, but a vCPU at the load bound (events
    /// routed to it, halved every period) is crowded: stay on the last vCPU
    /// while it runs and is light, else the next light running vCPU of the
    /// set, else as `PreferRunning`.
    Balanced = 2,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::Bound, Policy::PreferRunning, Policy::Balanced];

    /// The spelling of the Xen command-line option's value.
    pub const fn option_name(self) -> &'static str {
        match self {
            Policy::Bound => "off",
            Policy::PreferRunning => "running",
            Policy::Balanced => "balanced",
        }
    }

    pub fn from_option(s: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.option_name() == s)
    }
}

/// Everything the decision looks at, read by the caller at set-pending time.
/// All masks have the same number of words (the domain's vCPUs, rounded up).
pub struct RouteInputs<'a, S: Bits + ?Sized, M: Bits + ?Sized> {
    /// The channel's vCPU set (always holds `bound`).
    pub set: &'a S,
    /// vCPUs on a pCPU right now.
    pub running: &'a M,
    /// vCPUs blocked (halted, waiting for an event): a wake-up runs them.
    pub blocked: &'a M,
    /// vCPUs at the load bound (`Balanced` only; see `hypervisor::sched`).
    pub heavy: &'a M,
    /// vCPUs able to take an event now: online, FIFO control block mapped,
    /// reached by an upcall. Every search is limited to them.
    pub receivable: &'a M,
    /// The channel's `notify_vcpu_id`.
    pub bound: u32,
    /// The vCPU of the queue the event was last linked on (`fifo_lastq`).
    pub last: u32,
}

/// Choose the vCPU whose queue the event should join: never one outside
/// `receivable`, unless no vCPU of the set is in it (then the bound vCPU,
/// as without a set).
///
/// The answer is a preference: if the event is still LINKED on its old queue
/// the FIFO code leaves it there (a queue has one consumer; only the
/// hypervisor may link, only that vCPU may unlink).
pub fn route<S: Bits + ?Sized, M: Bits + ?Sized>(policy: Policy, inp: &RouteInputs<'_, S, M>) -> u32 {
    match policy {
        Policy::Bound => inp.bound,
        Policy::PreferRunning => route_prefer_running(inp),
        Policy::Balanced => route_balanced(inp),
    }
}

/// The first case of both policies: stay on the last vCPU while it is in
/// the set, running and able to take the event (and, for `Balanced`, under
/// the load bound). Staying put costs nothing: no queue change, no second
/// lock. It reads one bit of each mask, so set-pending may ask it before
/// taking the set's lock.
pub fn stays_on_last<S: Bits + ?Sized, M: Bits + ?Sized>(policy: Policy, inp: &RouteInputs<'_, S, M>) -> bool {
    let last = inp.last;
    let stays = test_bit(inp.set, last) && test_bit(inp.running, last) && test_bit(inp.receivable, last);
    match policy {
        Policy::Bound => false,
        Policy::PreferRunning => stays,
        Policy::Balanced => stays && !test_bit(inp.heavy, last),
    }
}

/// Word `i` of the set, limited to the vCPUs that can take the event.
fn set_receivable<S: Bits + ?Sized, M: Bits + ?Sized>(inp: &RouteInputs<'_, S, M>, i: usize) -> u64 {
    inp.set.word(i) & inp.receivable.word(i)
}

fn route_prefer_running<S: Bits + ?Sized, M: Bits + ?Sized>(inp: &RouteInputs<'_, S, M>) -> u32 {
    if stays_on_last(Policy::PreferRunning, inp) {
        return inp.last;
    }
    let running = |i| set_receivable(inp, i) & inp.running.word(i);
    if let Some(v) = first_cyclic(inp.set.nwords(), inp.last, running) {
        return v;
    }
    route_not_running(inp)
}

fn route_balanced<S: Bits + ?Sized, M: Bits + ?Sized>(inp: &RouteInputs<'_, S, M>) -> u32 {
    // Staying put is free while the last vCPU keeps up with its events.
    if stays_on_last(Policy::Balanced, inp) {
        return inp.last;
    }
    // Spread: the next light running vCPU after the last one.
    let light_running = |i| set_receivable(inp, i) & inp.running.word(i) & !inp.heavy.word(i);
    if let Some(v) = first_cyclic(inp.set.nwords(), inp.last.wrapping_add(1), light_running) {
        return v;
    }
    // Every running vCPU of the set is heavy: as PreferRunning. (Waking a
    // light blocked vCPU instead spreads further but, where the host is
    // overcommitted, the woken vCPU waits for a pCPU: see docs/evaluation.md.)
    route_prefer_running(inp)
}

/// No vCPU of the set that can take the event runs: prefer one that is
/// blocked, since waking it runs it at once, where a preempted vCPU waits for
/// the scheduler's next slice.
fn route_not_running<S: Bits + ?Sized, M: Bits + ?Sized>(inp: &RouteInputs<'_, S, M>) -> u32 {
    let bound = inp.bound;
    if test_bit(inp.set, bound) && test_bit(inp.blocked, bound) && test_bit(inp.receivable, bound) {
        return bound;
    }
    let blocked = |i| set_receivable(inp, i) & inp.blocked.word(i);
    if let Some(v) = first_cyclic(inp.set.nwords(), inp.last, blocked) {
        return v;
    }
    // The bound vCPU if it can take the event (the set holds it, except while
    // a set change is half done: bound vCPU and set are written apart), else
    // the set's first vCPU from it that can; so the choice never leaves the
    // set that was read while any vCPU of it can take the event.
    if let Some(v) = first_cyclic(inp.set.nwords(), bound, |i| set_receivable(inp, i)) {
        return v;
    }
    // No vCPU of the set can take it: the bound vCPU, as without a set.
    bound
}

/// Is bit `v` set? Out-of-range bits read as clear.
pub fn test_bit<B: Bits + ?Sized>(b: &B, v: u32) -> bool {
    let i = (v / 64) as usize;
    i < b.nwords() && b.word(i) & (1u64 << (v % 64)) != 0
}

/// Set bit `v` of `words`.
pub fn set_bit(words: &mut [u64], v: u32) {
    words[(v / 64) as usize] |= 1 << (v % 64);
}

/// The first set bit of `mask` at or after `from`, wrapping round once.
/// `mask(i)` computes word `i` on the fly, so intersections cost no buffer.
pub fn first_cyclic(nwords: usize, from: u32, mask: impl Fn(usize) -> u64) -> Option<u32> {
    if nwords == 0 {
        return None;
    }
    let from = from as usize % (nwords * 64);
    let (w0, b0) = (from / 64, from % 64);
    let high = mask(w0) & (!0u64 << b0);
    if high != 0 {
        return Some((w0 * 64) as u32 + high.trailing_zeros());
    }
    for k in 1..=nwords {
        let i = (w0 + k) % nwords;
        // Back at the first word: only the bits below `from` are left.
        let m = if k == nwords { mask(i) & ((1u64 << b0) - 1) } else { mask(i) };
        if m != 0 {
            return Some((i * 64) as u32 + m.trailing_zeros());
        }
    }
    None
}

/// Check a vCPU set a guest asks for, in the order the Xen patch checks it.
/// `nr_bits` is how many bits the guest passed; `receivers` are its vCPUs
/// that can take events (up, control block mapped, reached by an upcall).
pub fn check_vcpu_set<B: Bits + ?Sized>(set: &B, nr_bits: u32, nr_vcpus: u32, receivers: &B) -> Result<(), Error> {
    let mut any = false;
    let mut any_receiver = false;
    for i in 0..set.nwords() {
        let w = set.word(i) & valid_bits(i, nr_bits);
        any |= w != 0;
        if w & !valid_bits(i, nr_vcpus) != 0 {
            return Err(Error::BitBeyondVcpus);
        }
        any_receiver |= w & receivers.word(i) != 0;
    }
    if !any {
        return Err(Error::EmptySet);
    }
    if !any_receiver {
        return Err(Error::NoReceivingVcpu);
    }
    Ok(())
}

/// The bits of word `i` that lie below `n`.
pub fn valid_bits(i: usize, n: u32) -> u64 {
    let lo = (i * 64) as u64;
    match u64::from(n).saturating_sub(lo) {
        0 => 0,
        k if k >= 64 => !0,
        k => (1u64 << k) - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(
        set: &'a [u64],
        running: &'a [u64],
        blocked: &'a [u64],
        heavy: &'a [u64],
    ) -> RouteInputs<'a, [u64], [u64]> {
        RouteInputs { set, running, blocked, heavy, receivable: &ALL, bound: 0, last: 0 }
    }

    const ALL: [u64; 1] = [!0];

    #[test]
    fn bound_policy_ignores_everything_else() {
        let mut i = inputs(&[0b1110], &[0b1110], &[0], &[0]);
        i.bound = 2;
        assert_eq!(route(Policy::Bound, &i), 2);
    }

    #[test]
    fn prefer_running_keeps_last_queue_while_its_vcpu_runs() {
        let mut i = inputs(&[0b1111], &[0b1010], &[0], &[0]);
        i.last = 3;
        assert_eq!(route(Policy::PreferRunning, &i), 3);
    }

    #[test]
    fn prefer_running_moves_off_a_descheduled_last_vcpu() {
        let mut i = inputs(&[0b1111], &[0b0100], &[0], &[0]);
        i.last = 1;
        assert_eq!(route(Policy::PreferRunning, &i), 2);
    }

    #[test]
    fn prefer_running_never_leaves_the_set() {
        let mut i = inputs(&[0b0011], &[0b1100], &[0], &[0]);
        i.last = 1;
        i.bound = 1;
        assert_eq!(route(Policy::PreferRunning, &i), 1);
    }

    #[test]
    fn blocked_beats_preempted_when_none_runs() {
        // vCPU 0 (bound) preempted, vCPU 3 blocked.
        let i = inputs(&[0b1001], &[0], &[0b1000], &[0]);
        assert_eq!(route(Policy::PreferRunning, &i), 3);
        assert_eq!(route(Policy::Balanced, &i), 3);
    }

    #[test]
    fn fallback_stays_in_the_set_while_the_bound_vcpu_is_outside_it() {
        let mut i = inputs(&[0b1000], &[0], &[0], &[0]);
        i.bound = 1; // a set change has moved the set but not yet the bound vCPU
        assert_eq!(route(Policy::PreferRunning, &i), 3);
        assert_eq!(route(Policy::Balanced, &i), 3);
    }

    #[test]
    fn bound_when_nothing_runs_or_blocks() {
        let mut i = inputs(&[0b0110], &[0], &[0], &[0]);
        i.bound = 2;
        i.last = 1;
        assert_eq!(route(Policy::PreferRunning, &i), 2);
    }

    #[test]
    fn balanced_stays_while_light_and_moves_off_a_heavy_vcpu() {
        let set = [0b1111u64];
        let running = [0b1111u64];
        let mut i = inputs(&set, &running, &[0], &[0b0100]);
        i.last = 1;
        assert_eq!(route(Policy::Balanced, &i), 1, "the last vCPU runs and is light: stay");
        i.last = 2;
        assert_eq!(route(Policy::Balanced, &i), 3, "the last vCPU is heavy: the next light one");
        let heavy = [0b1100u64];
        i.heavy = &heavy;
        i.last = 3;
        assert_eq!(route(Policy::Balanced, &i), 0, "wraps round");
        let all_heavy = [0b1111u64];
        i.heavy = &all_heavy;
        i.last = 2;
        assert_eq!(route(Policy::Balanced, &i), 2, "all heavy: as PreferRunning, stay put");
    }

    #[test]
    fn a_set_of_one_is_todays_behaviour_for_every_policy() {
        for running in [0u64, 1 << 5, !0] {
            for blocked in [0u64, 1 << 5, !running] {
                let set = [1u64 << 5];
                let mut i = inputs(&set, core::slice::from_ref(&running), core::slice::from_ref(&blocked), &[0]);
                i.bound = 5;
                i.last = 5;
                for p in Policy::ALL {
                    assert_eq!(route(p, &i), 5, "{p:?} running={running:#x} blocked={blocked:#x}");
                }
            }
        }
    }

    #[test]
    fn never_a_vcpu_that_cannot_take_the_event() {
        // vCPU 1 runs but has no control block (or is offline); 2 is blocked.
        let mut i = inputs(&[0b0111], &[0b0010], &[0b0100], &[0]);
        let receivable = [0b0101u64];
        i.receivable = &receivable;
        i.last = 1;
        for p in [Policy::PreferRunning, Policy::Balanced] {
            assert_eq!(route(p, &i), 2, "{p:?}: the blocked vCPU that can take it");
        }
        let blocked_none = [0u64];
        i.blocked = &blocked_none;
        i.bound = 1;
        for p in [Policy::PreferRunning, Policy::Balanced] {
            assert_eq!(route(p, &i), 2, "{p:?}: the set's first receiver from the bound vCPU");
        }
    }

    #[test]
    fn bound_vcpu_when_no_vcpu_of_the_set_can_take_the_event() {
        let mut i = inputs(&[0b0110], &[0b0110], &[0], &[0]);
        let receivable = [0b1001u64];
        i.receivable = &receivable;
        i.bound = 2;
        i.last = 1;
        for p in Policy::ALL {
            assert_eq!(route(p, &i), 2, "{p:?}");
        }
    }

    #[test]
    fn first_cyclic_wraps_within_and_across_words() {
        let words = [1u64 << 3, 0, 1u64 << 63];
        let m = |i: usize| words[i];
        assert_eq!(first_cyclic(3, 0, m), Some(3));
        assert_eq!(first_cyclic(3, 4, m), Some(191));
        assert_eq!(first_cyclic(3, 191, m), Some(191));
        // From the last word round to the first; a start past the end wraps.
        assert_eq!(first_cyclic(3, 192 + 5, m), Some(191), "from wraps modulo the bits");
        assert_eq!(first_cyclic(3, 190, |i| if i == 0 { 1 << 2 } else { 0 }), Some(2));
        assert_eq!(first_cyclic(3, 2, |i| if i == 0 { 0b11 } else { 0 }), Some(0));
        assert_eq!(first_cyclic(3, 0, |_| 0), None);
        assert_eq!(first_cyclic(0, 0, |_| !0), None);
    }

    #[test]
    fn check_vcpu_set_rejects_each_bad_set_with_its_error() {
        let online = [0b0111u64];
        assert_eq!(check_vcpu_set(&[0u64][..], 64, 4, &online[..]), Err(Error::EmptySet));
        assert_eq!(check_vcpu_set(&[0b1u64][..], 0, 4, &online[..]), Err(Error::EmptySet));
        assert_eq!(check_vcpu_set(&[0b10000u64][..], 64, 4, &online[..]), Err(Error::BitBeyondVcpus));
        assert_eq!(check_vcpu_set(&[0b1000u64][..], 64, 4, &online[..]), Err(Error::NoReceivingVcpu));
        assert_eq!(check_vcpu_set(&[0b1010u64][..], 64, 4, &online[..]), Ok(()));
        // Bits at or past nr_bits are not part of the set (as xenctl_bitmap).
        assert_eq!(check_vcpu_set(&[0b10010u64][..], 4, 4, &online[..]), Ok(()));
    }

    #[test]
    fn valid_bits_covers_partial_and_whole_words() {
        assert_eq!(valid_bits(0, 0), 0);
        assert_eq!(valid_bits(0, 3), 0b111);
        assert_eq!(valid_bits(0, 64), !0);
        assert_eq!(valid_bits(1, 64), 0);
        assert_eq!(valid_bits(1, 65), 1);
    }
}
