//! Connection slots: who may hold a connection to the daemon, and how many.
//!
//! `--max-connections` slots in all. The last `--reserved-connections` of them are kept for the
//! daemon's own uid and root, so that other users, however many connections they open, can
//! never lock the daemon's owner (or an administrator) out. Every other uid may hold at most
//! `--max-connections-per-user` at once. A slot is taken when a connection is accepted (its
//! uid comes from `SO_PEERCRED`, before anything is read from it) and given back when the
//! connection's task lets go of it, which is before any slow work after the close.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The limits, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct SlotLimits {
    /// All connections.
    pub total: usize,
    /// Kept for the daemon's uid and root.
    pub reserved: usize,
    /// Per other uid.
    pub per_user: usize,
}

#[derive(Debug, Default)]
struct Table {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// The daemon's connection slots.
#[derive(Clone, Debug)]
pub struct Slots {
    limits: SlotLimits,
    table: Arc<Mutex<Table>>,
    daemon_uid: u32,
}

/// A taken slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    slots: Slots,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.lock();
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.per_uid.remove(&self.uid);
            }
        }
    }
}

impl Slots {
    /// Slots under `limits`, for a daemon running as `daemon_uid`.
    pub fn new(limits: SlotLimits, daemon_uid: u32) -> Slots {
        Slots {
            limits,
            table: Arc::default(),
            daemon_uid,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limits.
    pub fn limits(&self) -> SlotLimits {
        self.limits
    }

    /// Connections held now: in all, and per uid (sorted by uid).
    pub fn counts(&self) -> (usize, Vec<(u32, usize)>) {
        let t = self.lock();
        let mut per_uid: Vec<(u32, usize)> = t.per_uid.iter().map(|(u, n)| (*u, *n)).collect();
        per_uid.sort_unstable();
        (t.total, per_uid)
    }

    /// Whether `uid` is one the reserved slots are for.
    pub fn privileged(&self, uid: u32) -> bool {
        uid == 0 || uid == self.daemon_uid
    }

    /// Takes a slot for a connection of `uid`, or says which limit refuses it, with its value
    /// and the usage.
    pub fn take(&self, uid: u32) -> Result<Slot, String> {
        let l = self.limits;
        let mut t = self.lock();
        if t.total >= l.total {
            return Err(format!(
                "mmshared is at its connection limit (--max-connections {}); try again",
                l.total
            ));
        }
        if !self.privileged(uid) {
            let open = t.per_uid.get(&uid).copied().unwrap_or(0);
            if open >= l.per_user {
                return Err(format!(
                    "uid {uid} already holds {open} connections (--max-connections-per-user {}); close some or try again",
                    l.per_user
                ));
            }
            let shared = l.total.saturating_sub(l.reserved);
            let others: usize = t
                .per_uid
                .iter()
                .filter(|(u, _)| !self.privileged(**u))
                .map(|(_, n)| n)
                .sum();
            if others >= shared {
                return Err(format!(
                    "mmshared's connections for users other than its own are all taken ({shared}: --max-connections {} less --reserved-connections {}); try again",
                    l.total, l.reserved
                ));
            }
        }
        t.total += 1;
        *t.per_uid.entry(uid).or_default() += 1;
        drop(t);
        Ok(Slot {
            slots: self.clone(),
            uid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Other users share what is not reserved, each up to its own limit; the daemon's uid and
    /// root can still connect when they have taken all of it; slots come back when dropped.
    #[test]
    fn reserved_slots_stay_for_the_daemons_uid_and_root() {
        let slots = Slots::new(
            SlotLimits {
                total: 6,
                reserved: 2,
                per_user: 3,
            },
            1000,
        );
        let a: Vec<Slot> = (0..3).map(|_| slots.take(2001).unwrap()).collect();
        let e = slots.take(2001).unwrap_err();
        assert!(
            e.contains("uid 2001 already holds 3") && e.contains("per-user 3"),
            "{e}"
        );
        let b = slots.take(2002).unwrap();
        let e = slots.take(2003).unwrap_err();
        assert!(
            e.contains("(4: ") && e.contains("--reserved-connections 2"),
            "{e}"
        );
        let owner = slots.take(1000).unwrap();
        let root = slots.take(0).unwrap();
        let e = slots.take(0).unwrap_err();
        assert!(e.contains("--max-connections 6"), "{e}");
        drop((owner, b));
        slots.take(2003).unwrap();
        drop(a);
        assert_eq!(slots.lock().per_uid.get(&2001), None);
        drop(root);
    }
}
