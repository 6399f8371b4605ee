//! The C memory functions the compiler calls, which a freestanding guest
//! has no libc to take from. Copies and fills in assembly (`rep movsb`,
//! `rep stosb`): a Rust loop there could be turned back into a call to
//! itself. The comparison is a plain loop, which LLVM does not turn into
//! `memcmp`.

use core::arch::asm;

/// # Safety
/// As C's `memcpy`: `n` bytes, valid, not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract is `rep movsb`'s (direction flag clear,
    // as the ABI keeps it).
    unsafe {
        asm!("rep movsb", inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") n => _, options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// As C's `memmove`: `n` bytes, valid, possibly overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy never overwrites bytes it has yet to read here.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: copying backwards from the last byte (direction flag set for
    // the copy only) never overwrites bytes it has yet to read.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rdi") dst.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            inout("rcx") n => _,
            options(nostack)
        )
    };
    dst
}

/// # Safety
/// As C's `memset`: `n` bytes at `dst`, valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: as memcpy.
    unsafe {
        asm!("rep stosb", inout("rdi") dst => _, inout("rcx") n => _, in("al") c as u8, options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// As C's `memcmp`: `n` bytes at each, valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, within both buffers.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// As memcmp.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}

/// The host target's `core` was built to unwind and names this symbol; the
/// guest aborts on panic, so nothing ever calls it.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
