//! Presence: waiting until an object exists (`WaitFor`), and watching objects come and go and
//! streams' subscribers join and leave (`Watch`).
//!
//! The registry reports every create and delete here as it makes it ([`Presence::created`],
//! [`Presence::deleted`]), on a broadcast channel that each waiting or watching connection
//! subscribes to before it looks: a change between its look and its wait is in its channel, so
//! nothing is missed and nothing is polled.
//!
//! Subscribers come and go in the streams' control state, without the daemon. While at least
//! one watch is open, the **monitor** thread ([`monitor`]) keeps count: it registers in every
//! open stream's membership sleeper count (`MEMBER_SLEEPERS`), fences, reads each stream's
//! membership futex word, counts the subscribers, reports what changed, and sleeps on all the
//! words at once (`futex_waitv`, Linux 5.16 and later) together with its own `kick` word. A
//! subscriber that claims or frees a record bumps its stream's word and wakes it when the
//! count is not zero: the same handshake as a sleeping subscriber's (docs/FORMAT.md), so a
//! change is either seen by the count or wakes the sleep. The `kick` word wakes it when a
//! watch starts or a stream is opened (a subscriber is about to join). It also looks again
//! every second: the sleeper count lives in memory every participant can write, and a
//! zeroed count must not silence a stream for good. Without `futex_waitv` (older kernels) it
//! looks every 250 ms instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use mmshare::format::Header;
use mmshare::internal::proto::WatchEvent;
use tokio::sync::broadcast;
use tracing::{debug, warn};

use crate::registry::{Creds, Perm, Registry, permits};

/// Changes a slow watcher may fall behind by before it is told it lost some (`Lost`).
const BACKLOG: usize = 4096;
/// The monitor looks again at least this often, woken or not.
const RECHECK: Duration = Duration::from_secs(1);
/// The monitor's period without `futex_waitv`.
const FALLBACK: Duration = Duration::from_millis(250);
/// Words one `futex_waitv` can wait on; one of them is the monitor's own.
const MAX_WORDS: usize = 128;

/// One change, with what decides who may see it: the object's owner and mode (a change of an
/// object a user may not read is not reported to that user, as `List` leaves it out).
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub event: WatchEvent,
    header: Arc<Header>,
}

impl Change {
    fn new(event: WatchEvent, header: &Header) -> Change {
        Change {
            event,
            header: Arc::new(header.clone()),
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.header.name
    }

    /// Whether `who` may see it: read permission on the object.
    pub fn visible_to(&self, who: Creds) -> bool {
        permits(&self.header, who, Perm::Read)
    }
}

/// The registry's presence state: the channel of changes and the monitor's controls.
#[derive(Debug)]
pub(crate) struct Presence {
    changes: broadcast::Sender<Change>,
    /// Watches open: the monitor sleeps while there are none.
    watches: AtomicUsize,
    /// The monitor's own futex word: bumped (and woken) when it should look again at once.
    kick: AtomicU32,
    /// Set when the daemon stops: the monitor ends.
    stopping: AtomicBool,
}

impl Presence {
    pub(crate) fn new() -> Presence {
        Presence {
            changes: broadcast::channel(BACKLOG).0,
            watches: AtomicUsize::new(0),
            kick: AtomicU32::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    /// A receiver of every change from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Reports that the object of `header` was created (a stream or an array).
    pub(crate) fn created(&self, header: &Header, stream: bool) {
        let event = WatchEvent::Created {
            name: header.name.clone(),
            stream,
        };
        // No receiver is no error: nobody waits or watches.
        let _ = self.changes.send(Change::new(event, header));
    }

    /// Reports that the object of `header` was deleted.
    pub(crate) fn deleted(&self, header: &Header) {
        let event = WatchEvent::Deleted {
            name: header.name.clone(),
        };
        let _ = self.changes.send(Change::new(event, header));
    }

    /// Counts a watch open until the guard drops, and has the monitor look at once.
    pub(crate) fn watching(self: &Arc<Self>) -> WatchGuard {
        self.watches.fetch_add(1, Ordering::SeqCst);
        self.kick();
        WatchGuard(self.clone())
    }

    /// Has the monitor look at the streams again now (a stream was opened: a subscriber is
    /// about to join). Nothing while no watch is open.
    pub(crate) fn kick(&self) {
        if self.watches.load(Ordering::SeqCst) > 0 {
            self.kick.fetch_add(1, Ordering::SeqCst);
            mmshare::internal::futex_wake_all(&self.kick);
        }
    }

    /// Ends the monitor.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.kick.fetch_add(1, Ordering::SeqCst);
        mmshare::internal::futex_wake_all(&self.kick);
    }
}

/// A watch, counted while it lives.
pub(crate) struct WatchGuard(Arc<Presence>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The monitor: reports the subscriber counts of open streams while watches are open (module
/// docs). Runs until [`Presence::stop`].
pub(crate) fn monitor(registry: Arc<Registry>, presence: Arc<Presence>) {
    // Subscribers per stream at the last look (streams with none are left out).
    let mut last: BTreeMap<String, (u32, Change)> = BTreeMap::new();
    let mut waitv = true;
    while !presence.stopping.load(Ordering::SeqCst) {
        let kicked = presence.kick.load(Ordering::SeqCst);
        if presence.watches.load(Ordering::SeqCst) == 0 {
            last.clear();
            let _ = mmshare::internal::futex_wait_any(&[(&presence.kick, kicked)], RECHECK);
            continue;
        }
        let mut streams = registry.open_streams();
        if streams.len() > MAX_WORDS - 1 {
            // More than one wait can hold: the rest are looked at every second.
            streams.sort_by_key(|s| std::cmp::Reverse(s.files.subscriber_count()));
        }
        let watched = streams.len().min(MAX_WORDS - 1);
        for s in &streams[..watched] {
            s.files.member_words().0.fetch_add(1, Ordering::Relaxed);
        }
        // Pairs with the fence of a subscriber that claimed or freed a record before it reads
        // the sleeper count (`StreamFiles::announce_membership`): it sees us counted, or we
        // see its record below.
        std::sync::atomic::fence(Ordering::SeqCst);
        let seen: Vec<u32> = streams[..watched]
            .iter()
            .map(|s| s.files.member_words().1.load(Ordering::Relaxed))
            .collect();
        std::sync::atomic::fence(Ordering::Acquire);
        let mut now = BTreeMap::new();
        for s in &streams {
            let header = s.files.header();
            let count = u32::try_from(s.files.subscriber_count()).unwrap_or(u32::MAX);
            if count > 0 {
                let event = WatchEvent::Subscribers {
                    name: header.name.clone(),
                    count,
                };
                now.insert(header.name.clone(), (count, Change::new(event, header)));
            }
        }
        report_changes(&presence, &last, &now);
        last = now;
        let mut words: Vec<(&AtomicU32, u32)> = vec![(&presence.kick, kicked)];
        words.extend(
            streams[..watched]
                .iter()
                .zip(&seen)
                .map(|(s, &v)| (s.files.member_words().1, v)),
        );
        if waitv {
            if let Err(e) = mmshare::internal::futex_wait_any(&words, RECHECK) {
                warn!("futex_waitv: {e}; the watch of subscribers looks every {FALLBACK:?}");
                waitv = false;
            }
        } else {
            std::thread::sleep(FALLBACK);
        }
        for s in &streams[..watched] {
            let _ =
                s.files
                    .member_words()
                    .0
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(1))
                    });
        }
    }
    debug!("presence monitor stopped");
}

/// Sends a `Subscribers` change for every stream whose count differs between `before` and
/// `after` (a stream missing from one has 0 there).
fn report_changes(
    presence: &Presence,
    before: &BTreeMap<String, (u32, Change)>,
    after: &BTreeMap<String, (u32, Change)>,
) {
    for (name, (count, change)) in after {
        if before.get(name).map(|(c, _)| *c) != Some(*count) {
            let _ = presence.changes.send(change.clone());
        }
    }
    for (name, (_, change)) in before {
        if !after.contains_key(name) {
            let mut gone = change.clone();
            gone.event = WatchEvent::Subscribers {
                name: name.clone(),
                count: 0,
            };
            let _ = presence.changes.send(gone);
        }
    }
}
