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
//! Lock order: an object's lock, then under it the registry's state lock or the keeper's
//! (opening an object may close others to make room, which looks them up in the state; a
//! publisher check judges with the leases in it). Nobody waits for an object's lock while
//! holding the state lock: the state lock is released before any object's lock is taken,
//! except for objects that are not visible yet (a create, the load). Other objects' locks
//! are only ever taken with `try_lock` while holding one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// How many objects the daemon may hold open at once, and how many it does, in all and for
/// each uid whose request opened them.
#[derive(Debug)]
pub(crate) struct Budget {
    max: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    per_uid: HashMap<u32, usize>,
    /// Of `open`, those opened for users that a [`Share`] limits.
    shared: usize,
}

/// What a user other than the daemon's own and root may take of the places: at most
/// `per_user` for its own requests, and all such users together at most `together`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Share {
    pub(crate) per_user: usize,
    pub(crate) together: usize,
}

/// Why no place was given: every one is taken, or the user's share or the users' share is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    User { holds: usize, cap: usize },
    Together { holds: usize, cap: usize },
}

impl Budget {
    pub(crate) fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            max,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more open object, opened for `uid` (limited by `share` unless `None`:
    /// the daemon's own uid and root).
    pub(crate) fn take(self: &Arc<Self>, uid: u32, share: Option<Share>) -> Result<Token, Refused> {
        let mut c = self.counts();
        if c.open >= self.max {
            return Err(Refused::Full);
        }
        if let Some(share) = share {
            let holds = c.per_uid.get(&uid).copied().unwrap_or(0);
            if holds >= share.per_user {
                return Err(Refused::User {
                    holds,
                    cap: share.per_user,
                });
            }
            if c.shared >= share.together {
                return Err(Refused::Together {
                    holds: c.shared,
                    cap: share.together,
                });
            }
            c.shared += 1;
        }
        c.open += 1;
        *c.per_uid.entry(uid).or_default() += 1;
        Ok(Token {
            budget: self.clone(),
            uid,
            shared: share.is_some(),
        })
    }

    /// A place whatever the limits say (for objects in use found at start, whose participants
    /// need their state): counted, so that later opens wait until enough are closed.
    pub(crate) fn take_over(self: &Arc<Self>, uid: u32) -> Token {
        let mut c = self.counts();
        c.open += 1;
        *c.per_uid.entry(uid).or_default() += 1;
        Token {
            budget: self.clone(),
            uid,
            shared: false,
        }
    }

    /// Objects held open now.
    pub(crate) fn open(&self) -> usize {
        self.counts().open
    }

    /// Most objects held open at once.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// One open object's place in the [`Budget`], given back when the object is closed (when the
/// last reference to its open state goes, which may be after the registry let go of it).
#[derive(Debug)]
pub(crate) struct Token {
    budget: Arc<Budget>,
    uid: u32,
    shared: bool,
}

impl Drop for Token {
    fn drop(&mut self) {
        let mut c = self.budget.counts();
        c.open = c.open.saturating_sub(1);
        if self.shared {
            c.shared = c.shared.saturating_sub(1);
        }
        if let Some(n) = c.per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_uid.remove(&self.uid);
            }
        }
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
        let a = budget.take(0, None).expect("first");
        let b = budget.take(0, None).expect("second");
        assert_eq!(budget.take(0, None).unwrap_err(), Refused::Full);
        assert_eq!(budget.open(), 2);
        drop(a);
        assert_eq!(budget.open(), 1);
        let c = budget.take(0, None).expect("the place given back");
        drop((b, c));
        assert_eq!(budget.open(), 0);
    }

    #[test]
    fn a_user_takes_at_most_its_share_and_users_together_theirs() {
        let budget = Budget::new(10);
        let share = Some(Share {
            per_user: 2,
            together: 3,
        });
        let mine = [
            budget.take(7, share).unwrap(),
            budget.take(7, share).unwrap(),
        ];
        assert_eq!(
            budget.take(7, share).unwrap_err(),
            Refused::User { holds: 2, cap: 2 }
        );
        let theirs = budget.take(8, share).unwrap();
        assert_eq!(
            budget.take(9, share).unwrap_err(),
            Refused::Together { holds: 3, cap: 3 }
        );
        // The daemon's own uid and root are limited only by the total.
        let own: Vec<Token> = (0..7).map(|_| budget.take(0, None).unwrap()).collect();
        assert_eq!(budget.take(0, None).unwrap_err(), Refused::Full);
        drop((mine, theirs, own));
        assert_eq!(budget.open(), 0);
        assert!(budget.take(7, share).is_ok());
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
