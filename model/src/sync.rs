//! The one door to shared words, locks and threads.
//!
//! Nothing else in the crate names `core::sync`, `std::sync` or `std::thread`:
//! with the `loom` feature every primitive below is loom's, so each structure
//! built on them is explored in every interleaving loom can produce; without
//! it they are the real ones (as tokio's `src/loom/` does).

#[cfg(feature = "loom")]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

#[cfg(not(feature = "loom"))]
pub use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

#[cfg(feature = "loom")]
pub use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(all(feature = "std", not(feature = "loom")))]
pub use std::sync::{Arc, Mutex, MutexGuard};

/// Threads for the checked scenarios: loom's under loom, the OS's otherwise.
#[cfg(feature = "loom")]
pub use loom::thread;

#[cfg(all(feature = "std", not(feature = "loom")))]
pub use std::thread;

/// Take a lock that is never poisoned in a passing run: a panic while it is
/// held is already a failed check, so poisoning carries no extra information.
#[cfg(feature = "std")]
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(all(feature = "std", feature = "loom"))]
pub use loom::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[cfg(all(feature = "std", not(feature = "loom")))]
pub use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Back off inside a retry loop. Under loom this must yield, or a loop that
/// waits for another thread (a guest spinning while Xen holds BUSY) would be
/// explored forever instead of letting that thread run.
pub fn spin_hint() {
    #[cfg(feature = "loom")]
    loom::thread::yield_now();
    #[cfg(not(feature = "loom"))]
    core::hint::spin_loop();
}

/// Read-lock; see [`lock`] on poisoning.
#[cfg(feature = "std")]
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match l.read() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Write-lock; see [`lock`] on poisoning.
#[cfg(feature = "std")]
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    match l.write() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
