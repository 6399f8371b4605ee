//! The one door to atomics: loom's under the `loom` feature, so a checker
//! explores the consumer in every interleaving, the core ones otherwise.

#[cfg(feature = "loom")]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

#[cfg(not(feature = "loom"))]
pub use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Back off inside a retry loop. Under loom this must yield, or a loop that
/// waits for another thread (a guest spinning while Xen holds BUSY) would be
/// explored forever instead of letting that thread run.
pub fn spin_hint() {
    #[cfg(feature = "loom")]
    loom::thread::yield_now();
    #[cfg(not(feature = "loom"))]
    core::hint::spin_loop();
}
