//! Locking a mutex whose holder panicked: tapedeck takes the data and goes on (and reads what a
//! caught panic said, for the error that reports it).
//!
//! Every mutex in tapedeck guards state that stays consistent at each point a panic could
//! leave it (counters, statuses, a writer's buffers whose failure is recorded separately), and a
//! recorder that stops reporting or flushing because some other thread panicked would lose
//! exactly what it exists to keep. So a poisoned lock is taken as it is. This one helper says
//! so once, instead of a private copy of it in each module.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// What a caught panic said (its `&str` or `String` payload), if it said anything.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<&str> {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
}

/// Locks `m`, ignoring poison (see the module docs).
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
