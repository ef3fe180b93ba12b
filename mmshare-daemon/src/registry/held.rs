//! What the daemon holds open of an object: only while the object is in use, and never more
//! objects at once than its descriptor limit allows.
//!
//! An object nobody uses costs the daemon no descriptor and no mapping: it is a header and a
//! path in the registry. The first request that needs more (an open, a create, a recovery)
//! opens it: the data file, mapped, and its control state (a sealed memfd: the keeper's copy
//! at start, else fresh). It is closed again once nobody uses it, which the daemon learns from
//! the kernel: no open file description other than its own holds a participant lock on the
//! control state or on the data file (every client and every by-path opener takes one, and
//! the daemon takes it for a client on the client's own description before sending it).
//!
//! Closing the control state of an unused object loses nothing: with no participant, every
//! subscriber record is free, no sleeper is counted and no hold is granted, which is exactly
//! what fresh state says. The check and the handing out of control state happen under the
//! object's own lock, so a client can never receive state the daemon is about to drop.
//!
//! Lock order: the registry's state, released before any object's lock is taken; then one
//! object's lock, and under it the keeper's. Taking other objects' locks while holding one
//! only ever uses `try_lock`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// How many objects the daemon may hold open at once, and how many it does.
#[derive(Debug)]
pub(crate) struct Budget {
    open: AtomicUsize,
    max: usize,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A place for one more open object, or `None` when all `max` are taken.
    pub(crate) fn take(self: &Arc<Self>) -> Option<Token> {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Token(self.clone()))
    }

    /// Objects held open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Most objects held open at once.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// One open object's place in the [`Budget`], given back when the object is closed (when the
/// last reference to its open state goes, which may be after the registry let go of it).
#[derive(Debug)]
pub(crate) struct Token(Arc<Budget>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An object's open state `T`, or nothing while the object is unused.
#[derive(Debug)]
pub(crate) struct Held<T> {
    slot: Mutex<Option<Arc<T>>>,
}

impl<T> Held<T> {
    /// Nothing held.
    pub(crate) fn empty() -> Held<T> {
        Held {
            slot: Mutex::new(None),
        }
    }

    /// Holding `open`.
    pub(crate) fn with(open: T) -> Held<T> {
        Held {
            slot: Mutex::new(Some(Arc::new(open))),
        }
    }

    /// The open state, if the object is open now (it may be closed by the time it is used;
    /// the `Arc` keeps what it holds alive until then).
    pub(crate) fn get(&self) -> Option<Arc<T>> {
        self.lock().clone()
    }

    /// The slot, locked: to open or close the object, or to hand out its control state while
    /// no one can close it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Option<Arc<T>>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The slot, if no one else holds it right now.
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, Option<Arc<T>>>> {
        match self.slot.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// Whether `open` (an object's open state in its slot) is used by no one: no request of the
/// daemon holds it (only the slot refers to it) and `in_use` (the kernel's participant locks)
/// says no.
pub(crate) fn unused<T>(open: &Arc<T>, in_use: impl FnOnce(&T) -> bool) -> bool {
    Arc::strong_count(open) == 1 && !in_use(open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_gives_out_at_most_its_places_and_takes_them_back() {
        let budget = Budget::new(2);
        let a = budget.take().expect("first");
        let b = budget.take().expect("second");
        assert!(budget.take().is_none(), "a third place out of two");
        assert_eq!(budget.open(), 2);
        drop(a);
        assert_eq!(budget.open(), 1);
        let c = budget.take().expect("the place given back");
        drop((b, c));
        assert_eq!(budget.open(), 0);
    }

    #[test]
    fn open_state_in_use_by_a_request_is_not_unused() {
        let held = Held::with(5u8);
        let open = held.get().expect("held");
        assert!(!unused(held.lock().as_ref().unwrap(), |_| false));
        drop(open);
        assert!(unused(held.lock().as_ref().unwrap(), |_| false));
        assert!(!unused(held.lock().as_ref().unwrap(), |_| true));
    }
}
