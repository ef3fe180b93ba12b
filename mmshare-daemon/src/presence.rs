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
use mmshare::internal::Membership;
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
/// The shortest time between two looks.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Joins or leaves reported one by one per look, at most (more: the count alone).
const MAX_STEPS: u64 = 64;
/// Streams handed to the monitor and not taken yet, at most.
const MAX_ADOPTED: usize = 1024;

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
    /// Streams handed to the monitor as they were created or opened while watches are open
    /// (their own mappings of the control state): the monitor looks at each at least once,
    /// even if it is closed again before the monitor gets to it (a subscriber that came and
    /// went in a moment is still reported).
    adopted: std::sync::Mutex<Vec<((u64, u64), Watched)>>,
    /// The streams the monitor watches already (their control states' keys): not mapped
    /// again when they are opened again.
    known: std::sync::Mutex<std::collections::BTreeSet<(u64, u64)>>,
}

impl Presence {
    pub(crate) fn new() -> Presence {
        Presence {
            changes: broadcast::channel(BACKLOG).0,
            watches: AtomicUsize::new(0),
            kick: AtomicU32::new(0),
            stopping: AtomicBool::new(false),
            adopted: Default::default(),
            known: Default::default(),
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

    /// Hands the monitor stream `files` (just created, `fresh`: its statistics start at
    /// zero; or just opened for a client) and wakes it. Nothing while no watch is open.
    pub(crate) fn adopt(&self, files: &mmshare::StreamFiles, fresh: bool) {
        if self.watches.load(Ordering::SeqCst) == 0 {
            return;
        }
        let Some(key) = control_key(files) else {
            return;
        };
        {
            // Watched, or handed over already (or too many waiting: the monitor is behind and
            // finds open streams itself): only a look is needed.
            let adopted = self.adopted.lock().unwrap_or_else(|p| p.into_inner());
            let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            if known.contains(&key)
                || adopted.len() >= MAX_ADOPTED
                || adopted.iter().any(|(k, _)| *k == key)
            {
                drop((adopted, known));
                self.kick();
                return;
            }
        }
        match Membership::map(files.control_file(), files.max_subscribers() as u32) {
            Ok(membership) => {
                // Where its statistics stand now, before the client that opens it joins: every
                // change from here on is reported.
                let last = if fresh {
                    (0, 0, 0)
                } else {
                    let (joins, leaves) = membership.joins_and_leaves();
                    let count = u32::try_from(membership.count()).unwrap_or(u32::MAX);
                    (count, joins, leaves)
                };
                self.adopted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((
                        key,
                        Watched {
                            header: files.header().clone(),
                            membership,
                            last: Some(last),
                            looked: false,
                        },
                    ));
            }
            Err(e) => debug!(stream = files.header().name, "cannot watch: {e}"),
        }
        self.kick();
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

/// One open stream the monitor watches: its own mapping of the stream's control state, and
/// what it saw there last.
#[derive(Debug)]
pub(crate) struct Watched {
    header: Header,
    membership: Membership,
    /// Subscribers, subscriptions started and ended, at the last look (`None` before it).
    last: Option<(u32, u64, u64)>,
    /// Looked at once at least (only then may it be forgotten).
    looked: bool,
}

/// Device and inode of a stream's control state: a stream deleted and made again is another.
fn control_key(files: &mmshare::StreamFiles) -> Option<(u64, u64)> {
    let meta = files.control_file().metadata().ok()?;
    Some((
        std::os::unix::fs::MetadataExt::dev(&meta),
        std::os::unix::fs::MetadataExt::ino(&meta),
    ))
}

/// The monitor: reports the subscriber counts of open streams while watches are open (module
/// docs). Runs until [`Presence::stop`].
pub(crate) fn monitor(registry: Arc<Registry>, presence: Arc<Presence>) {
    // By the control state's device and inode: a stream deleted and made again is another.
    let mut watched: BTreeMap<(u64, u64), Watched> = BTreeMap::new();
    let mut waitv = true;
    // The first look once watches are open takes what is there as the starting point: a
    // watch reports changes, not the state it began in (a listing shows that).
    let mut baseline = true;
    while !presence.stopping.load(Ordering::SeqCst) {
        let kicked = presence.kick.load(Ordering::SeqCst);
        if presence.watches.load(Ordering::SeqCst) == 0 {
            watched.clear();
            presence
                .known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            presence
                .adopted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            baseline = true;
            let _ = mmshare::internal::futex_wait_any(&[(&presence.kick, kicked)], RECHECK);
            continue;
        }
        let open = refresh(&registry, &presence, &mut watched);
        // At most `MAX_WORDS - 1` streams are slept on; the others are looked at every second.
        // The same streams are registered in, slept on and taken out of again: none is added
        // or removed until they are.
        let slept_keys: Vec<(u64, u64)> = watched.keys().take(MAX_WORDS - 1).copied().collect();
        let slept: Vec<&Watched> = slept_keys.iter().map(|k| &watched[k]).collect();
        for w in &slept {
            w.membership.words().0.fetch_add(1, Ordering::Relaxed);
        }
        // Pairs with the fence of a subscriber that started or ended before it reads the
        // sleeper count (`announce_membership`): it sees us counted, or we see its record.
        std::sync::atomic::fence(Ordering::SeqCst);
        let seen: Vec<u32> = slept
            .iter()
            .map(|w| w.membership.words().1.load(Ordering::Relaxed))
            .collect();
        std::sync::atomic::fence(Ordering::Acquire);
        drop(slept);
        for w in watched.values_mut() {
            look(&presence, w, baseline);
        }
        baseline = false;
        let mut words: Vec<(&AtomicU32, u32)> = vec![(&presence.kick, kicked)];
        words.extend(
            slept_keys
                .iter()
                .zip(&seen)
                .map(|(k, &v)| (watched[k].membership.words().1, v)),
        );
        if waitv {
            if let Err(e) = mmshare::internal::futex_wait_any(&words, RECHECK) {
                if e.raw_os_error() == Some(rustix::io::Errno::NOSYS.raw_os_error()) {
                    warn!(
                        "no futex_waitv (Linux 5.16): the watch of subscribers looks every {FALLBACK:?}"
                    );
                    waitv = false;
                } else {
                    debug!("futex_waitv: {e}");
                    std::thread::sleep(FALLBACK);
                }
            }
        } else {
            std::thread::sleep(FALLBACK);
        }
        for k in &slept_keys {
            let _ = watched[k].membership.words().0.fetch_update(
                Ordering::Relaxed,
                Ordering::Relaxed,
                |n| Some(n.saturating_sub(1)),
            );
        }
        // Streams closed since (nobody uses them: their subscribers are gone), once looked at.
        watched.retain(|key, w| {
            let keep = open.contains(key) || !w.looked;
            if !keep && w.last.is_some_and(|(count, ..)| count > 0) {
                send(&presence, &w.header, 0);
            }
            keep
        });
        *presence.known.lock().unwrap_or_else(|p| p.into_inner()) =
            watched.keys().copied().collect();
        // Subscribers joining and leaving in a burst (or a participant bumping the word on
        // purpose) are looked at together, not one look each.
        std::thread::sleep(MIN_INTERVAL);
    }
    debug!("presence monitor stopped");
}

/// Adds to `watched` the streams handed over (`Presence::adopt`) and every stream open now that
/// it lacks (mapped for the monitor: it holds nothing of the daemon's own, so a stream nobody
/// uses is closed as ever); returns the keys of the streams open now.
fn refresh(
    registry: &Registry,
    presence: &Presence,
    watched: &mut BTreeMap<(u64, u64), Watched>,
) -> std::collections::BTreeSet<(u64, u64)> {
    let handed: Vec<_> =
        std::mem::take(&mut *presence.adopted.lock().unwrap_or_else(|p| p.into_inner()));
    for (key, w) in handed {
        watched.entry(key).or_insert(w);
    }
    let mut open = std::collections::BTreeSet::new();
    for stream in registry.open_streams() {
        let files = &stream.files;
        let Some(key) = control_key(files) else {
            continue;
        };
        open.insert(key);
        if watched.contains_key(&key) {
            continue;
        }
        match Membership::map(files.control_file(), files.max_subscribers() as u32) {
            Ok(membership) => {
                watched.insert(
                    key,
                    Watched {
                        header: files.header().clone(),
                        membership,
                        last: None,
                        looked: false,
                    },
                );
            }
            Err(e) => debug!(stream = files.header().name, "cannot watch: {e}"),
        }
    }
    open
}

/// Reports what changed in `w` since the last look: a join or a leave each when the
/// statistics add up (joins first, then leaves, within one look), else the new count. A
/// stream first seen at the `baseline` look reports nothing; one that opened since reports
/// the subscribers it has (they joined since).
fn look(presence: &Presence, w: &mut Watched, baseline: bool) {
    let count = u32::try_from(w.membership.count()).unwrap_or(u32::MAX);
    let (joins, leaves) = w.membership.joins_and_leaves();
    match w.last {
        None if count > 0 && !baseline => send(presence, &w.header, count),
        None => {}
        Some((before, j, l)) => {
            let (dj, dl) = (joins.wrapping_sub(j), leaves.wrapping_sub(l));
            let adds_up = dj <= MAX_STEPS
                && dl <= MAX_STEPS
                && u64::from(before) + dj == u64::from(count) + dl;
            if adds_up {
                let mut now = u64::from(before);
                for _ in 0..dj {
                    now += 1;
                    send(presence, &w.header, now as u32);
                }
                for _ in 0..dl {
                    now -= 1;
                    send(presence, &w.header, now as u32);
                }
            } else if count != before {
                send(presence, &w.header, count);
            }
        }
    }
    w.last = Some((count, joins, leaves));
    w.looked = true;
}

fn send(presence: &Presence, header: &Header, count: u32) {
    let event = WatchEvent::Subscribers {
        name: header.name.clone(),
        count,
    };
    let _ = presence.changes.send(Change::new(event, header));
}
