//! The one door to shared words, locks and threads.
//!
//! Nothing else in the crate names `core::sync`, `std::sync` or `std::thread`:
//! with the `loom` feature every primitive below is loom's, so each structure
//! built on them is explored in every interleaving loom can produce; without
//! it they are the real ones (as tokio's `src/loom/` does).

// The atomics are the guest library's, so the consumer and the model's Xen
// share one type of word (loom's under the `loom` feature).
pub use evroute_guest::sync::{fence, spin_hint, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

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
