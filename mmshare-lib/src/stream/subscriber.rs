//! [`Subscriber`]: receives a stream's frames and reads them in place.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ndarray::{ArrayViewD, IxDyn, ShapeBuilder};

use super::files::StreamFiles;
use super::layout::{self, MAX_HELD};
use super::protocol::{self, SubscriberState, Taken};
use super::publisher::{check_element, wake_publisher_side};
use super::sleep::{self, Futex};
use crate::array::raw::DEFAULT_TIMEOUT;
use crate::backoff::{Backoff, Step};
use crate::dtype::Element;
use crate::error::StreamError;
use crate::shape::Order;
use crate::sys::ProcessId;

/// How a subscriber takes frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Delivery {
    /// Never slows the publisher; a subscriber that falls more than a ring behind skips
    /// ahead, and counts exactly what it skipped ([`Subscriber::missed`],
    /// [`Sample::missed_before`]).
    #[default]
    Lossy,
    /// Every frame, in order, none twice, through [`Subscriber::receive`]: the publisher
    /// waits (up to its loan timeout) while this subscriber is a whole ring behind.
    /// [`Subscriber::latest`] still jumps to the newest frame (counting the frames it skips
    /// as missed) and may give the newest frame again (see there for when it may not).
    Lossless,
}

/// Samples a subscriber may hold at once unless it asks otherwise.
pub const DEFAULT_MAX_HELD: usize = 2;

/// Where a new subscriber starts.
///
/// Frames published before a subscriber joins are kept for it only by the stream's history
/// (`StreamOptions::history`) and by slots the publisher has not reused yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartAt {
    /// The next frame published after it subscribes: nothing earlier, and nothing counted as
    /// missed for it. The default for lossy subscribers.
    Next,
    /// The oldest frame still offered when it subscribes (the history, and older frames whose
    /// slots were not reused yet); frames older than that are not counted as missed.
    Oldest,
    /// Frame `n` (resuming after a restart: the frame after the last one it handled). The
    /// frames from `n` on that are no longer offered are skipped and counted as missed at
    /// the first receive ([`Sample::missed_before`], [`Subscriber::missed`]), so the
    /// subscriber learns exactly how many it lost. A number above the frames published waits
    /// for that frame. `Frame(0)`, every frame the stream ever published, is the default for
    /// lossless subscribers: one that joins late gets what is still offered and counts the
    /// rest as missed, rather than starting late without a word.
    Frame(u64),
}

/// How to subscribe: the delivery, the samples held at once, and where to start.
///
/// ```
/// use mmshare::{Delivery, StartAt, SubscribeOptions};
/// let options = SubscribeOptions::new(Delivery::Lossless).max_held(4).start(StartAt::Oldest);
/// assert_eq!(options.start_at(), StartAt::Oldest);
/// assert_eq!(SubscribeOptions::from(Delivery::Lossless).start_at(), StartAt::Frame(0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscribeOptions {
    delivery: Delivery,
    max_held: usize,
    start: Option<StartAt>,
}

impl SubscribeOptions {
    /// `delivery`, [`DEFAULT_MAX_HELD`] samples, and the default start of that delivery.
    pub fn new(delivery: Delivery) -> SubscribeOptions {
        SubscribeOptions {
            delivery,
            max_held: DEFAULT_MAX_HELD,
            start: None,
        }
    }

    /// Samples it may hold at once, 1 to 16 (fewer are granted if the stream's hold budget
    /// is short).
    pub fn max_held(mut self, max_held: usize) -> SubscribeOptions {
        self.max_held = max_held;
        self
    }

    /// Where it starts.
    pub fn start(mut self, start: StartAt) -> SubscribeOptions {
        self.start = Some(start);
        self
    }

    /// The delivery asked for.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// The samples asked for.
    pub fn held(&self) -> usize {
        self.max_held
    }

    /// Where it starts: as set, or [`StartAt::Next`] for a lossy subscriber and
    /// [`StartAt::Frame`]`(0)` for a lossless one.
    pub fn start_at(&self) -> StartAt {
        self.start.unwrap_or(match self.delivery {
            Delivery::Lossy => StartAt::Next,
            Delivery::Lossless => StartAt::Frame(0),
        })
    }
}

impl From<Delivery> for SubscribeOptions {
    fn from(delivery: Delivery) -> SubscribeOptions {
        SubscribeOptions::new(delivery)
    }
}

/// The receiving side of a stream.
///
/// A stream with several publishers has one ring (lane) per publisher; a subscriber holds a
/// record in each and merges them: [`Subscriber::receive`] takes, among the lanes whose next
/// frame is published, the one published first (module docs, "Several publishers"). Lossy
/// or lossless, missed counts, `max_held` and the stall policy all apply per lane.
///
/// Not `Sync`: one thread receives (samples borrow the subscriber). Dropping it frees its
/// records for another subscriber.
pub struct Subscriber<T: Element> {
    /// One per lane, in lane order (one for a stream with one publisher).
    lanes: Vec<Lane>,
    /// The lane the merge looks at first when publish times tie (turns round, so that no
    /// lane is always last).
    turn: Cell<usize>,
    /// The Rust type last checked against the per-frame header's dtype (`Sample::header`).
    header_type: Cell<Option<std::any::TypeId>>,
    delivery: Delivery,
    /// Frames are handled as bytes whatever the dtype (`attach_bytes`).
    bytes: bool,
    timeout: Duration,
    /// What must live as long as this handle (the daemon connection that is its lease).
    lease: Option<Arc<dyn std::fmt::Debug + Send + Sync>>,
    _element: PhantomData<fn() -> T>,
}

/// A subscription's part in one lane: its record there and what it keeps about it.
struct Lane {
    files: StreamFiles,
    state: RefCell<SubscriberState>,
    /// Bit `k` set = held entry `k` is in use by a live [`Sample`].
    in_use: Cell<u32>,
    /// Waits of this handle counted as asleep now (a blocking receive, polled waits): the
    /// record's one `sleeping` flag and one SLEEPERS count stand for all of them, taken when
    /// the first begins and given back when the last ends.
    sleeps: Cell<u32>,
    max_held: usize,
    delivery: Delivery,
    /// The subscription's owner word (its record's `owner`).
    me: u64,
    /// The frame it started at (its first cursor).
    first: u64,
    /// The process that subscribed (a forked child, another process, drops without freeing).
    process: u64,
}

impl<T: Element> std::fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let states: Vec<_> = self.lanes.iter().map(|l| l.state.borrow()).collect();
        f.debug_struct("Subscriber")
            .field("stream", &self.files().header().name)
            .field("delivery", &self.delivery)
            .field("lanes", &states)
            .finish_non_exhaustive()
    }
}

/// What a subscriber knows of one lane (one publisher's ring): [`Subscriber::lane_stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LaneStats {
    /// The lane's index.
    pub lane: u32,
    /// Frames of this lane it skipped so far.
    pub missed: u64,
    /// Frames of this lane it received so far.
    pub received: u64,
    /// The lane's frame number it wants next.
    pub next_number: u64,
    /// The lane's frame number it started at.
    pub first_frame: u64,
    /// Samples it may hold from this lane at once.
    pub max_held: usize,
}

impl Lane {
    /// Takes a record in `files`' control file, as `options` say, owned by `me` (the
    /// subscription's nonce: the same in every lane, so that its records can be told apart
    /// from others' and put together, `files::lane_subscribers`).
    fn attach(files: StreamFiles, options: SubscribeOptions, me: u64) -> Result<Lane, StreamError> {
        let (delivery, max_held) = (options.delivery, options.max_held);
        let process = ProcessId::current().to_word();
        let ring = files.ring();
        let name = || files.header().name.clone();
        // The record's liveness lock is taken before the claim and held while the record is
        // ours (see `StreamFiles::reclaim_subscribers`); without OFD locks the record is
        // marked as judged by its process identity instead.
        // The record whose lock could not be asked (no OFD locks): claimed without one.
        let unlocked = Cell::new(None);
        let record = protocol::claim_record_locked(
            &ring,
            me,
            |r| match files.lock_record(r) {
                Ok(taken) => taken,
                Err(_) => {
                    unlocked.set(Some(r));
                    true
                }
            },
            |r| files.unlock_record(r),
        )
        .ok_or_else(|| StreamError::NoRecord {
            name: name(),
            max_subscribers: ring.records.len() as u32,
        })?;
        ring.records[record].who.store(process, Relaxed);
        let budget = files.hold_capacity();
        let granted = protocol::take_budget(&ring, max_held as u64, budget);
        if granted == 0 {
            protocol::unsubscribe(&ring, record, me, process, super::files::reclaimer_gone);
            files.unlock_record(record);
            return Err(StreamError::NoHoldBudget {
                name: name(),
                slots: files.slots() as u32,
                budget,
            });
        }
        let lossless = delivery == Delivery::Lossless;
        let extra = if unlocked.get() == Some(record) {
            layout::CONFIG_UNLOCKED
        } else {
            0
        } | layout::config_tag(me);
        let start = options.start_at();
        let started = protocol::subscribe_with(&ring, record, granted, lossless, extra, start);
        if lossless {
            // A publisher waiting for a slot may have seen our lower first cursor.
            wake_publisher_side(&files);
        }
        if started.marked {
            files.count_join();
            files.announce_membership();
        }
        let mut state = SubscriberState::new(record, started.cursor, me);
        // Frames from the one asked for that are gone: reported with the first sample.
        state.missed = started.skipped;
        state.pending_missed = started.skipped;
        let first = match start {
            StartAt::Frame(n) => n,
            _ => started.cursor,
        };
        Ok(Lane {
            files,
            state: RefCell::new(state),
            in_use: Cell::new(0),
            sleeps: Cell::new(0),
            max_held: granted as usize,
            delivery,
            me,
            first,
            process,
        })
    }

    fn record(&self) -> usize {
        self.state.borrow().record
    }

    fn cursor(&self) -> u64 {
        self.state.borrow().cursor
    }

    /// Starts loading the first line of the frame slot the next frame is expected in (the
    /// slot its number hints at, where `protocol::receive` looks first), so that it arrives
    /// while the poll reads the slot's tag (`sys::prefetch`). One line only: for bigger
    /// frames, more lines measured no faster (4 KiB) or slower (all 64 of them).
    fn prefetch_next(&self) {
        let slot = (self.cursor() % self.files.slots() as u64) as usize;
        crate::sys::prefetch(self.files.slot_ptr(slot));
    }

    /// Whether the record is still this subscription's (not reclaimed: an evicted one still
    /// owns its record, its holds and its sleeper count until it drops).
    fn owns_record(&self) -> bool {
        // Relaxed: only detects a reclaim.
        self.files.ring().records[self.record()].owner.load(Relaxed) == self.me
    }

    fn check_record(&self) -> Result<(), StreamError> {
        // Relaxed: only detects a reclaim, or an eviction.
        let record = &self.files.ring().records[self.record()];
        if !self.owns_record() {
            return Err(StreamError::SubscriptionLost {
                name: self.files.header().name.clone(),
            });
        }
        if record.config.load(Relaxed) & layout::CONFIG_EVICTED != 0 {
            return Err(StreamError::Evicted {
                name: self.files.header().name.clone(),
            });
        }
        Ok(())
    }

    fn demoted(&self) -> bool {
        // Relaxed: a status; what it changes is the publisher's, not ours. Only while the
        // record is ours (after a reclaim its config is someone else's).
        self.owns_record()
            && self.files.ring().records[self.record()]
                .config
                .load(Relaxed)
                & layout::CONFIG_DEMOTED
                != 0
    }

    fn free_entry(&self) -> Result<usize, StreamError> {
        let in_use = self.in_use.get();
        let entry = in_use.trailing_ones() as usize;
        if entry >= self.max_held {
            return Err(StreamError::HoldLimit {
                max_held: self.max_held,
            });
        }
        Ok(entry)
    }

    /// Takes a frame the way `how` does into a free held entry.
    fn take(&self, how: Take) -> Result<Option<(usize, Taken)>, StreamError> {
        self.check_record()?;
        let entry = self.free_entry()?;
        let ring = self.files.ring();
        let got = {
            let mut state = self.state.borrow_mut();
            let got = how(&ring, &mut state, entry);
            if std::mem::take(&mut state.dropped_a_hold) {
                // A publisher waiting for a slot may have seen that hold.
                wake_publisher_side(&self.files);
            }
            if state.lost {
                return Err(StreamError::SubscriptionLost {
                    name: self.files.header().name.clone(),
                });
            }
            got
        };
        let Some(taken) = got else {
            return Ok(None);
        };
        self.in_use.set(self.in_use.get() | 1 << entry);
        if self.delivery == Delivery::Lossless {
            // Our cursor moved: a publisher waiting for us may go on.
            wake_publisher_side(&self.files);
        }
        Ok(Some((entry, taken)))
    }

    /// Counts this subscriber in SLEEPERS and flags its record as asleep: counted first,
    /// flagged second (and unflagged before uncounted, `uncount_sleeping`), so whoever
    /// reclaims our record if we die asleep takes us out of SLEEPERS exactly when the flag is
    /// set.
    fn count_sleeping(&self) {
        let n = self.sleeps.get();
        self.sleeps.set(n + 1);
        if n > 0 || !self.owns_record() {
            // Counted already, by another wait of this handle; or the record is not ours any
            // more (its `sleeping` flag is its new owner's).
            return;
        }
        self.files.sleepers().fetch_add(1, Relaxed);
        self.files.ring().records[self.record()]
            .sleeping
            .store(1, Relaxed);
    }

    /// Takes us out of SLEEPERS once the last wait of this handle ends, only if nobody (a
    /// reclaimer that judged us dead) did it. Not once the record was reclaimed: it may be
    /// another subscriber's by now, and its `sleeping` flag and count are not ours to clear.
    fn uncount_sleeping(&self) {
        let n = self.sleeps.get();
        self.sleeps.set(n.saturating_sub(1));
        if n != 1 || !self.owns_record() {
            return; // another wait of this handle still sleeps (or none was counted)
        }
        let sleeping = &self.files.ring().records[self.record()].sleeping;
        if sleeping.compare_exchange(1, 0, Relaxed, Relaxed).is_ok() {
            let _ = self
                .files
                .sleepers()
                .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
        }
    }

    fn release(&self, entry: usize, slot: usize) {
        protocol::release(&self.files.ring(), self.record(), entry, slot);
        self.in_use.set(self.in_use.get() & !(1 << entry));
        wake_publisher_side(&self.files);
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // A forked child that drops its copy must not free the parent's record, and a
        // subscriber that lost its record (it was judged dead) must not free it again: the
        // record may belong to another subscriber of this process now.
        if ProcessId::current().to_word() != self.process || self.state.borrow().lost {
            return;
        }
        // Samples borrow the subscriber, so none is alive here.
        let freed = protocol::unsubscribe(
            &self.files.ring(),
            self.record(),
            self.me,
            self.process,
            super::files::reclaimer_gone,
        );
        if let Some(freed) = freed {
            if freed.was_started {
                self.files.count_leave();
            }
            // A wait left counted (an async wait dropped unended) goes with the record.
            self.files.forget_sleeper(freed);
        }
        // Only once the record is free: a reclaimer must never find it owned and unlocked.
        self.files.unlock_record(self.record());
        wake_publisher_side(&self.files);
        self.files.announce_membership();
    }
}

/// How a lane's frame is taken: `protocol::receive` or `protocol::latest`.
type Take = fn(
    &protocol::Ring<'_, std::sync::atomic::AtomicU64>,
    &mut SubscriberState,
    usize,
) -> Option<Taken>;

impl<T: Element> Subscriber<T> {
    /// Subscribes to the stream directory `path` (`options`: a [`Delivery`], or
    /// [`SubscribeOptions`]): to every lane of a stream with several publishers.
    ///
    /// # Errors
    /// As [`Subscriber::attach`].
    pub fn open(
        path: impl AsRef<Path>,
        options: impl Into<SubscribeOptions>,
    ) -> Result<Subscriber<T>, StreamError> {
        Self::attach_lanes(StreamFiles::open_lanes(path, false)?, options)
    }

    /// Subscribes through already mapped stream files, holding at most
    /// [`SubscribeOptions::max_held`] samples at once (fewer if the stream's hold budget is
    /// short: see [`Subscriber::max_held`]), starting where the options say.
    ///
    /// # Errors
    /// [`StreamError::BadMaxHeld`] outside `1..=16`; [`StreamError::NoRecord`] when every
    /// subscriber record is taken; [`StreamError::NoHoldBudget`] when the stream's hold
    /// capacity ([`StreamFiles::hold_capacity`]) is all granted; a dtype mismatch in
    /// [`StreamError::Open`]; [`StreamError::Lanes`] for a stream with several publishers
    /// (use [`Subscriber::attach_lanes`]).
    pub fn attach(
        files: StreamFiles,
        options: impl Into<SubscribeOptions>,
    ) -> Result<Subscriber<T>, StreamError> {
        Self::attach_lanes(vec![files], options)
    }

    /// Subscribes to every lane of a stream with several publishers, given the mapped files
    /// of each lane in lane order ([`StreamFiles::open_lanes`]; one for a stream with one
    /// publisher).
    ///
    /// # Errors
    /// As [`Subscriber::attach`]; [`StreamError::Lanes`] when `lanes` are not all the lanes
    /// of one stream, in order.
    pub fn attach_lanes(
        lanes: Vec<StreamFiles>,
        options: impl Into<SubscribeOptions>,
    ) -> Result<Subscriber<T>, StreamError> {
        if let Some(first) = lanes.first() {
            check_element::<T>(first)?;
        }
        Self::attach_checked(lanes, options.into(), false)
    }

    fn attach_checked(
        lanes: Vec<StreamFiles>,
        options: SubscribeOptions,
        bytes: bool,
    ) -> Result<Subscriber<T>, StreamError> {
        let max_held = options.max_held;
        if !(1..=MAX_HELD).contains(&max_held) {
            return Err(StreamError::BadMaxHeld {
                given: max_held,
                max: MAX_HELD,
            });
        }
        if let StartAt::Frame(n) = options.start_at()
            && n > protocol::MAX_START
        {
            return Err(StreamError::BadStart {
                given: n,
                max: protocol::MAX_START,
            });
        }
        super::files::check_lanes(&lanes)?;
        let me = super::files::subscription_nonce();
        // A lane attached before one that fails is dropped, and its record freed.
        let lanes = lanes
            .into_iter()
            .map(|files| Lane::attach(files, options, me))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Subscriber {
            lanes,
            turn: Cell::new(0),
            header_type: Cell::new(None),
            delivery: options.delivery,
            bytes,
            timeout: DEFAULT_TIMEOUT,
            lease: None,
            _element: PhantomData,
        })
    }

    /// Keeps `lease` alive as long as this handle (the client's daemon connection).
    pub(crate) fn with_lease(mut self, lease: Arc<dyn std::fmt::Debug + Send + Sync>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The stream's files (header, statistics, subscribers): those of lane 0 for a stream with
    /// several publishers ([`Subscriber::lane_files`] for the others).
    pub fn files(&self) -> &StreamFiles {
        &self.lanes[0].files
    }

    /// The files of lane `lane` (`None` past the last).
    pub fn lane_files(&self, lane: usize) -> Option<&StreamFiles> {
        self.lanes.get(lane).map(|l| &l.files)
    }

    /// The lanes it receives from: the stream's publisher limit (1 for most streams).
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// What it knows of lane `lane` (`None` past the last): its own counts there.
    pub fn lane_stats(&self, lane: usize) -> Option<LaneStats> {
        let l = self.lanes.get(lane)?;
        let state = l.state.borrow();
        Some(LaneStats {
            lane: lane as u32,
            missed: state.missed,
            received: state.received,
            next_number: state.cursor,
            first_frame: l.first,
            max_held: l.max_held,
        })
    }

    /// Lossy or lossless: lossy once the publisher demoted a lossless subscriber
    /// ([`Subscriber::demoted`]).
    pub fn delivery(&self) -> Delivery {
        if self.delivery == Delivery::Lossless && self.demoted() {
            Delivery::Lossy
        } else {
            self.delivery
        }
    }

    /// Samples this subscriber may hold at once from each publisher (what it asked for, or
    /// less if the stream's hold budget was short: the least of its lanes').
    pub fn max_held(&self) -> usize {
        self.lanes.iter().map(|l| l.max_held).min().unwrap_or(0)
    }

    /// Frames skipped so far (lossy subscribers that fell behind, or `latest()` jumps), of
    /// every publisher.
    pub fn missed(&self) -> u64 {
        self.lanes.iter().map(|l| l.state.borrow().missed).sum()
    }

    /// Frames received so far, of every publisher.
    pub fn received(&self) -> u64 {
        self.lanes.iter().map(|l| l.state.borrow().received).sum()
    }

    /// The frame it started at: the first it wanted ([`StartAt`]). Frames before it were
    /// published before it subscribed and are not counted as missed. Lane 0's, for a stream
    /// with several publishers ([`Subscriber::lane_stats`]).
    pub fn first_frame(&self) -> u64 {
        self.lanes[0].first
    }

    /// The number of the next frame it will receive (lane 0's, for a stream with several
    /// publishers: [`Subscriber::lane_stats`]).
    pub fn next_number(&self) -> u64 {
        self.lanes[0].cursor()
    }

    /// How long [`Subscriber::receive_timeout`] waits by default in iteration (10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Elements per frame (bytes per frame for a handle made by `attach_bytes`).
    pub fn frame_len(&self) -> usize {
        if self.bytes {
            self.files().header().data_len as usize
        } else {
            self.files().header().len() as usize
        }
    }

    /// The first byte of the frame `token` holds (`frame_len` elements, page aligned, read
    /// only), valid until the token is released.
    pub fn frame_ptr(&self, token: &SampleToken) -> *const u8 {
        match self.lane_of(token) {
            Some(lane) => lane.files.slot_ptr(token.slot).cast_const(),
            None => std::ptr::null(),
        }
    }

    /// The lane of `token`, if it is this subscriber's token (`None` for another's).
    fn lane_of(&self, token: &SampleToken) -> Option<&Lane> {
        if token.owner != self.lanes[0].me {
            return None;
        }
        self.lanes.get(token.lane)
    }

    /// The first byte of the per-frame header of the frame `token` holds (read-only, the
    /// header dtype's size), if the stream's frames carry one; valid while it is held.
    /// `None` for another subscriber's token.
    pub fn header_ptr(&self, token: &SampleToken) -> Option<*const u8> {
        self.lane_of(token)?
            .files
            .header_ptr(token.slot)
            .map(<*mut u8>::cast_const)
    }

    /// Elements per row, a slice along axis 0 (bytes for a handle made by `attach_bytes`).
    pub fn row_len(&self) -> usize {
        self.files().row_units(self.bytes, size_of::<T>())
    }

    /// The elements (bytes, for `attach_bytes`) of a held frame of `rows` rows.
    fn len_of(&self, rows: u64) -> usize {
        if self.files().header().is_variable() {
            self.row_len() * rows as usize
        } else {
            self.frame_len()
        }
    }

    /// Checks (once per type) that `H` is the per-frame header's element type.
    fn check_header<H: Element>(&self) -> Result<(), StreamError> {
        let id = std::any::TypeId::of::<H>();
        if self.header_type.get() != Some(id) {
            super::publisher::check_header_type::<H>(self.files())?;
            self.header_type.set(Some(id));
        }
        Ok(())
    }

    /// Releases the hold of `token` (as dropping its sample does); a token of another
    /// subscriber is ignored.
    pub fn release_token(&self, token: SampleToken) {
        // Another subscriber's token is not ours to release: its entry here may be one of our
        // live samples' (it would lose its hold while it is read).
        if let Some(lane) = self.lane_of(&token) {
            lane.release(token.entry, token.slot);
        }
    }

    /// [`Sample::is_intact`] for a token (false for another subscriber's).
    pub fn token_is_intact(&self, token: &SampleToken) -> bool {
        let Some(lane) = self.lane_of(token) else {
            return false;
        };
        protocol::still_intact(
            &lane.files.ring(),
            lane.record(),
            token.entry,
            token.slot,
            token.number.wrapping_add(1),
        )
    }

    /// The subscription's owner word in lane 0 (tests).
    #[cfg(test)]
    pub(crate) fn owner_word(&self) -> u64 {
        self.lanes[0].me
    }

    /// Its record in lane 0.
    #[cfg(test)]
    pub(crate) fn record(&self) -> usize {
        self.lanes[0].record()
    }

    /// Whether a publisher demoted this lossless subscriber to lossy (the stream's stall
    /// policy, after it stalled the publisher): from then on it may miss frames of that
    /// publisher, each counted ([`Subscriber::missed`], [`Sample::missed_before`]), and
    /// [`Subscriber::delivery`] says Lossy.
    pub fn demoted(&self) -> bool {
        self.lanes.iter().any(Lane::demoted)
    }

    /// Takes a frame from lane `lane` the way `how` does.
    fn take_from(&self, lane: usize, how: Take) -> Result<Option<Sample<'_, T>>, StreamError> {
        let l = &self.lanes[lane];
        let Some((entry, taken)) = l.take(how)? else {
            return Ok(None);
        };
        // Relaxed: the tag's Acquire validation in `protocol::hold` made them visible, and the
        // hold keeps them from changing.
        let published_ns = l.files.ring().slots[taken.slot].time.load(Relaxed);
        let publisher = l.files.publisher_of_word(taken.slot).map(|w| PublisherId {
            lane: lane as u32,
            word: w.load(Relaxed),
        });
        Ok(Some(Sample {
            subscriber: self,
            lane,
            slot: taken.slot,
            entry,
            number: taken.number,
            missed_before: taken.missed_before,
            published_ns,
            publisher,
            // Read once, while held: the frame's length cannot change under the sample.
            rows: l.files.rows_of(taken.slot),
        }))
    }

    /// The lanes in the order the merge tries them: by `key` (lanes without one left out),
    /// ties from the current turn on.
    fn lanes_by(&self, key: impl Fn(&Lane) -> Option<u64>, newest: bool) -> Vec<usize> {
        let n = self.lanes.len();
        let turn = self.turn.get() % n;
        let mut order: Vec<(u64, usize, usize)> = (0..n)
            .filter_map(|i| {
                let k = key(&self.lanes[i])?;
                let k = if newest { u64::MAX - k } else { k };
                Some((k, (i + n - turn) % n, i))
            })
            .collect();
        order.sort_unstable();
        self.turn.set(turn + 1);
        order.into_iter().map(|(_, _, i)| i).collect()
    }

    /// The next frame, if one was published since the last one taken; never waits. With
    /// several publishers: of the lanes whose next frame is published, the one published
    /// first (module docs, "Several publishers").
    ///
    /// # Errors
    /// [`StreamError::HoldLimit`] while `max_held` samples of the lane it would take from
    /// are alive; [`StreamError::SubscriptionLost`].
    pub fn receive(&self) -> Result<Option<Sample<'_, T>>, StreamError> {
        if self.lanes.len() == 1 {
            self.lanes[0].prefetch_next();
            return self.take_from(0, protocol::receive);
        }
        let order = self.lanes_by(
            |l| protocol::next_publish_time(&l.files.ring(), l.cursor()),
            false,
        );
        for lane in order {
            self.lanes[lane].prefetch_next();
            if let Some(sample) = self.take_from(lane, protocol::receive)? {
                return Ok(Some(sample));
            }
        }
        Ok(None)
    }

    /// The newest published frame (`None` before the first), skipping older ones (counted as
    /// missed). Returns the newest frame again if it was already received, while it is still
    /// offered: it always is, but for one case. In a stream of frames of 64 KiB or more with
    /// no history and no lossy subscriber, the publisher reuses the newest frame's slot for
    /// its next loan once every subscriber is past that frame and nobody holds it (so that a
    /// pipeline in step writes where the last frame was just read, in the caches); from then
    /// until the next publish no frame is offered, and this returns `None` at once (so does
    /// it for a subscriber that joins meanwhile). A frame not yet received is never taken
    /// away from a lossless subscriber. With several publishers: the newest by publish
    /// time across them, skipping only within its lane.
    ///
    /// # Errors
    /// As [`Subscriber::receive`].
    pub fn latest(&self) -> Result<Option<Sample<'_, T>>, StreamError> {
        if self.lanes.len() == 1 {
            return self.take_from(0, protocol::latest);
        }
        let order = self.lanes_by(|l| protocol::newest_publish_time(&l.files.ring()), true);
        for lane in order {
            if let Some(sample) = self.take_from(lane, protocol::latest)? {
                return Ok(Some(sample));
            }
        }
        Ok(None)
    }

    /// Whether a frame after this subscriber's cursor is published, in any lane: what a
    /// polling caller can ask before it gets ready to take one (a read of each lane's
    /// `PUBLISHED` word; no system call, nothing written). A hint: a lossy subscriber may
    /// still find nothing when that frame was taken back meanwhile, and a frame published just
    /// after the answer is not counted.
    ///
    /// # Errors
    /// [`StreamError::SubscriptionLost`] and [`StreamError::Evicted`], as
    /// [`Subscriber::receive`] reports them: a polling loop that asks this first still learns
    /// that its subscription ended.
    pub fn has_new(&self) -> Result<bool, StreamError> {
        for lane in &self.lanes {
            lane.check_record()?;
            // A caller that asks this in a loop takes the frame as soon as it says yes.
            lane.prefetch_next();
        }
        Ok(self.anything_new())
    }

    /// Whether some lane has a frame after its cursor (the last check before a sleep).
    fn anything_new(&self) -> bool {
        self.lanes
            .iter()
            .any(|l| protocol::newer_than(&l.files.ring(), l.cursor()))
    }

    /// The next frame, waiting up to `timeout`: spinning briefly, then yielding, then asleep
    /// on the stream's futex (woken by the next publish).
    ///
    /// # Errors
    /// [`StreamError::ReceiveTimeout`], and as [`Subscriber::receive`].
    pub fn receive_timeout(&self, timeout: Duration) -> Result<Sample<'_, T>, StreamError> {
        let mut backoff = Backoff::new(timeout);
        let mut first_miss = true;
        loop {
            if let Some(sample) = self.receive()? {
                return Ok(sample);
            }
            if std::mem::take(&mut first_miss)
                && (self.shares_cpu_with_a_publisher() || self.files().crowded())
            {
                backoff.without_spin();
            }
            match backoff.step() {
                Step::Spun => {}
                Step::TimedOut => {
                    return Err(StreamError::ReceiveTimeout {
                        waited: backoff.elapsed(),
                        next: self.next_number(),
                    });
                }
                Step::Sleep(at_most) => {
                    // A lane whose record was lost is reported now, not when it next
                    // publishes (and is not counted as a sleeper meanwhile).
                    for lane in &self.lanes {
                        lane.check_record()?;
                    }
                    self.sleep(at_most);
                }
            }
        }
    }

    /// Notes the CPU this subscriber waits on in its records (for a publisher waiting for
    /// it), and tells whether a lane's publisher last published from that CPU: then spinning
    /// here would only keep it from publishing.
    fn shares_cpu_with_a_publisher(&self) -> bool {
        let cpu = crate::sys::cpu_hint();
        let mut shared = false;
        for lane in &self.lanes {
            lane.files.note_subscriber_cpu(lane.record(), cpu);
            shared |= lane.files.publisher_on(cpu);
        }
        shared
    }

    /// The futex words of every lane.
    fn futexes(&self) -> Vec<&std::sync::atomic::AtomicU32> {
        self.lanes.iter().map(|l| l.files.futex()).collect()
    }

    /// Sleeps until the next publish of any lane (or `at_most`), registered as a sleeper in
    /// every lane so that each publisher knows to wake us (module `sleep`).
    fn sleep(&self, at_most: Duration) {
        let words = self.futexes();
        sleep::sleep_unless_any(
            &words,
            || self.count_sleeping(),
            || self.anything_new().then_some(()),
            |seen| {
                let pairs: Vec<_> = words.iter().copied().zip(seen.iter().copied()).collect();
                Futex::wait_any(&pairs, at_most);
            },
        );
        self.uncount_sleeping();
    }

    fn count_sleeping(&self) {
        for lane in &self.lanes {
            lane.count_sleeping();
        }
    }

    fn uncount_sleeping(&self) {
        for lane in &self.lanes {
            lane.uncount_sleeping();
        }
    }

    /// Iterates over frames as they arrive, waiting up to the subscriber's timeout for each;
    /// ends at the first error (a timeout included). Each sample must be dropped before the
    /// next is taken if `max_held` is 1.
    pub fn iter(&self) -> impl Iterator<Item = Result<Sample<'_, T>, StreamError>> + '_ {
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let next = self.receive_timeout(self.timeout);
            done = next.is_err();
            Some(next)
        })
    }
}

impl Subscriber<u8> {
    /// Subscribes through already mapped stream files of any dtype, handling frames as bytes:
    /// [`Subscriber::frame_len`] is the frame's length in bytes and samples deref to all of
    /// its bytes. For tools and bindings that do not know the element type at compile time.
    ///
    /// # Errors
    /// As [`Subscriber::attach`], without the dtype check.
    pub fn attach_bytes(
        files: StreamFiles,
        options: impl Into<SubscribeOptions>,
    ) -> Result<Subscriber<u8>, StreamError> {
        Self::attach_checked(vec![files], options.into(), true)
    }

    /// [`Subscriber::attach_bytes`] for every lane of a stream ([`Subscriber::attach_lanes`]).
    ///
    /// # Errors
    /// As [`Subscriber::attach_lanes`], without the dtype check.
    pub fn attach_lanes_bytes(
        lanes: Vec<StreamFiles>,
        options: impl Into<SubscribeOptions>,
    ) -> Result<Subscriber<u8>, StreamError> {
        Self::attach_checked(lanes, options.into(), true)
    }
}

/// Who published a frame of a stream with several publishers ([`Sample::publisher`]): its
/// lane, and the publisher's identity word, recorded by the publisher with the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublisherId {
    lane: u32,
    word: u64,
}

impl PublisherId {
    pub(crate) fn new(lane: u32, attach: u32, pid: u32) -> PublisherId {
        PublisherId {
            lane,
            word: u64::from(attach) << 32 | u64::from(pid),
        }
    }

    /// The lane (ring) it publishes in, `0..max_publishers`.
    pub fn lane(&self) -> u32 {
        self.lane
    }

    /// Its process id (in the publisher's pid namespace).
    pub fn pid(&self) -> u32 {
        self.word as u32
    }

    /// Which attach of its lane it is (1 for the lane's first publisher, then 2, ...): a
    /// publisher that replaces a dead one in its lane gets the next.
    pub fn attach(&self) -> u32 {
        (self.word >> 32) as u32
    }

    /// One number for the publisher, stable for its life and never reused by a later
    /// publisher of the stream (while attaches stay below 2^32): its attach and lane.
    pub fn id(&self) -> u64 {
        u64::from(self.attach()) << 16 | u64::from(self.lane)
    }

    /// The word the publisher writes with each frame (frame-info entry, bytes 8..16).
    pub(crate) fn word(&self) -> u64 {
        self.word
    }
}

impl std::fmt::Display for PublisherId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "publisher {} (lane {}, attach {}, pid {})",
            self.id(),
            self.lane,
            self.attach(),
            self.pid()
        )
    }
}

/// A held frame detached from the borrow of its subscriber ([`Sample::into_token`]), for
/// bindings whose samples outlive a call (Python's `Sample`, a C caller). It keeps its hold
/// (and counts against `max_held`) until [`Subscriber::release_token`]; a token that is
/// dropped instead keeps the hold for the life of the subscriber.
#[derive(Debug)]
#[must_use = "a sample token holds its slot until released"]
pub struct SampleToken {
    /// The subscription it belongs to (its nonce): a token is only ever used on its own
    /// subscriber (another's is ignored, never released there).
    owner: u64,
    lane: usize,
    slot: usize,
    entry: usize,
    publisher: Option<PublisherId>,
    number: u64,
    missed_before: u64,
    published_ns: u64,
    rows: u64,
}

impl SampleToken {
    /// As [`Sample::rows`].
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// As [`Sample::number`].
    pub fn number(&self) -> u64 {
        self.number
    }

    /// As [`Sample::missed_before`].
    pub fn missed_before(&self) -> u64 {
        self.missed_before
    }

    /// As [`Sample::published_ns`].
    pub fn published_ns(&self) -> u64 {
        self.published_ns
    }

    /// As [`Sample::publisher`].
    pub fn publisher(&self) -> Option<PublisherId> {
        self.publisher
    }

    /// As [`Sample::lane`].
    pub fn lane(&self) -> usize {
        self.lane
    }
}

/// A received frame: a plain `&[T]` over shared memory, never rewritten while it is held.
/// Dropping it releases the slot.
pub struct Sample<'a, T: Element> {
    subscriber: &'a Subscriber<T>,
    lane: usize,
    slot: usize,
    entry: usize,
    number: u64,
    missed_before: u64,
    published_ns: u64,
    publisher: Option<PublisherId>,
    rows: u64,
}

impl<T: Element> std::fmt::Debug for Sample<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sample")
            .field("number", &self.number)
            .field("missed_before", &self.missed_before)
            .field("published_ns", &self.published_ns)
            .field("lane", &self.lane)
            .field("slot", &self.slot)
            .finish()
    }
}

impl<T: Element> Sample<'_, T> {
    /// The frame's number (0 for the first frame ever published on the stream; with several
    /// publishers, on its lane: each publisher's frames are numbered in its own order).
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Frames this subscriber skipped just before this one (of the same lane).
    pub fn missed_before(&self) -> u64 {
        self.missed_before
    }

    /// The lane (publisher ring) it came from: 0 for a stream with one publisher.
    pub fn lane(&self) -> usize {
        self.lane
    }

    /// Who published it, for a stream with several publishers (`None` for a stream with one:
    /// its frames carry no publisher word).
    pub fn publisher(&self) -> Option<PublisherId> {
        self.publisher
    }

    /// The stream files of its lane.
    fn files(&self) -> &StreamFiles {
        &self.subscriber.lanes[self.lane].files
    }

    /// When it was published, ns since the Unix epoch.
    pub fn published_ns(&self) -> u64 {
        self.published_ns
    }

    /// The rows the frame has: its length along axis 0 (the stream's first dimension unless
    /// its frames vary).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The frame's shape: the stream's, with [`Sample::rows`] as its first dimension.
    pub fn shape(&self) -> Vec<u64> {
        let mut shape = self.files().header().shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = self.rows;
        }
        shape
    }

    /// The frame's header bytes (empty if the stream's frames carry none): published with
    /// the frame, held with it.
    pub fn header_bytes(&self) -> &[u8] {
        let files = self.files();
        let len = files.header().frame_header_len();
        match files.header_ptr(self.slot) {
            // SAFETY: inside the mapping (checked at open), `len` bytes, not rewritten while
            // the frame is held (as the frame itself: see `deref`).
            Some(ptr) => unsafe { std::slice::from_raw_parts(ptr, len) },
            None => &[],
        }
    }

    /// The frame's header as `H`, the Rust type of the stream's per-frame header dtype
    /// (checked: its dtype must be exactly the stream's).
    ///
    /// # Errors
    /// [`StreamError::FrameHeader`] when the stream has no per-frame header or `H` is not its
    /// type.
    pub fn header<H: Element>(&self) -> Result<&H, StreamError> {
        self.subscriber.check_header::<H>()?;
        let ptr = self
            .files()
            .header_ptr(self.slot)
            .expect("checked: the stream has a per-frame header");
        // SAFETY: `check_header` proved that `H`'s dtype is the header's and its size the
        // header's length, alignment at most 8 (the header is 8-byte aligned); held, so not
        // rewritten (see `header_bytes`); every bit pattern is a valid `H` (`Pod`).
        Ok(unsafe { &*ptr.cast_const().cast::<H>() })
    }

    /// The frame as an N-dimensional view in its shape ([`Sample::shape`]) and the stream's
    /// order.
    pub fn view(&self) -> ArrayViewD<'_, T> {
        let header = self.files().header();
        let dims: Vec<usize> = self.shape().iter().map(|&d| d as usize).collect();
        let fortran = header.order == Order::F;
        ArrayViewD::from_shape(IxDyn(&dims).set_f(fortran), &self[..])
            .expect("the slot holds exactly shape-many elements")
    }

    /// Whether the slot still holds this frame and this subscriber's hold on it: false only
    /// if someone erased the hold in the control file and the publisher reused the slot, in
    /// which case the bytes read may belong to a newer frame.
    pub fn is_intact(&self) -> bool {
        let lane = &self.subscriber.lanes[self.lane];
        protocol::still_intact(
            &lane.files.ring(),
            lane.record(),
            self.entry,
            self.slot,
            self.number.wrapping_add(1),
        )
    }

    /// Copies the frame into `dst`, which must be exactly as long (else a panic, as
    /// `<[T]>::copy_from_slice`). The same bytes as `dst.copy_from_slice(&sample)`, with
    /// the copy that measured fastest for a frame another CPU has just written: on x86-64,
    /// from 1 KiB, the CPU's string move instead of `memcpy` (4 KiB frames copied out about
    /// 8 % faster between two cores). As for reading in place, a process that erased this
    /// subscriber's hold in the control file could have the slot reused during the copy:
    /// [`Sample::is_intact`] afterwards tells (the Python binding's copies check it).
    pub fn copy_to(&self, dst: &mut [T]) {
        crate::copy::copy_fresh(bytemuck::cast_slice_mut(dst), bytemuck::cast_slice(self));
    }

    /// Releases the slot (the same as dropping the sample).
    pub fn release(self) {}

    /// Keeps the hold but ends the borrow of the subscriber: the frame stays held until
    /// [`Subscriber::release_token`].
    pub fn into_token(self) -> SampleToken {
        let me = std::mem::ManuallyDrop::new(self);
        SampleToken {
            owner: me.subscriber.lanes[0].me,
            lane: me.lane,
            slot: me.slot,
            entry: me.entry,
            publisher: me.publisher,
            number: me.number,
            missed_before: me.missed_before,
            published_ns: me.published_ns,
            rows: me.rows,
        }
    }
}

impl<T: Element> Deref for Sample<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        let sub = self.subscriber;
        let ptr = self.files().slot_ptr(self.slot).cast::<T>();
        // SAFETY: the slot is inside the mapping, page aligned and holds `frame_len`
        // elements (checked at open; element layout checked in `check_element`), and every
        // bit pattern is a valid `T`. The publisher does not write it while we hold it: our
        // hold was recorded and the tag re-validated after a SeqCst fence, so its loan scan
        // sees the hold (`protocol` module docs). A process that erases holds in the control
        // file can break that; `is_intact` then reports it. `len_of` is at most `frame_len`
        // (`rows_of` caps the rows at the maximum).
        unsafe { std::slice::from_raw_parts(ptr, sub.len_of(self.rows)) }
    }
}

impl<'a, T: Element> Sample<'a, T> {
    /// The sample again from its token (the hold and the in-use entry are the token's).
    #[cfg(feature = "async")]
    pub(crate) fn from_token(subscriber: &'a Subscriber<T>, token: SampleToken) -> Sample<'a, T> {
        Sample {
            subscriber,
            lane: token.lane,
            slot: token.slot,
            entry: token.entry,
            publisher: token.publisher,
            number: token.number,
            missed_before: token.missed_before,
            published_ns: token.published_ns,
            rows: token.rows,
        }
    }
}

/// Async receiving (feature `async`, or `tokio`).
#[cfg(feature = "async")]
impl<T: Element> Subscriber<T> {
    /// The next frame, awaited without blocking a thread: the task sleeps until a publish
    /// wakes the stream's futex word, which the process's waiter thread turns into a `Waker`
    /// call (one thread sleeps for many waiting tasks). A publish makes no system call unless
    /// some task or thread waits.
    ///
    /// Takes `&mut self` so that the future is `Send` (a `Subscriber` is not `Sync`) and can
    /// be awaited in a spawned task; release the sample before the next `recv`. No timeout of
    /// its own: wrap it in the runtime's (`tokio::time::timeout`). Cancel-safe: a dropped
    /// future has taken no frame and leaves no registration or sleeper count behind.
    ///
    /// # Errors
    /// As [`Subscriber::receive`].
    pub fn recv(&mut self) -> Recv<'_, T> {
        Recv {
            subscriber: Some(self),
            wait: crate::waiter::AsyncWait::new(),
        }
    }
}

/// The future of [`Subscriber::recv`].
#[cfg(feature = "async")]
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Recv<'a, T: Element> {
    /// `None` once resolved.
    subscriber: Option<&'a mut Subscriber<T>>,
    wait: crate::waiter::AsyncWait,
}

/// Polled receiving, for bindings whose event loop keeps the wait between calls (Python's
/// asyncio); [`Subscriber::recv`] is built on it.
#[cfg(feature = "async")]
impl<T: Element> Subscriber<T> {
    /// The next frame if there is one (the wait ended); otherwise registers `waker` with the
    /// process's waiter thread (counted among the stream's sleepers, so a publish wakes it)
    /// and returns `Pending`: poll again once woken, with the same `wait`. End the wait with
    /// [`Subscriber::end_wait`] if it is abandoned (a cancelled await): it then takes nothing
    /// and leaves nothing registered.
    pub fn poll_receive_token(
        &self,
        wait: &mut crate::waiter::AsyncWait,
        waker: &std::task::Waker,
    ) -> std::task::Poll<Result<SampleToken, StreamError>> {
        wait.registration = None;
        wait.more.clear();
        let attempt = |s: &Subscriber<T>| s.receive().map(|got| got.map(Sample::into_token));
        let got = match attempt(self) {
            Ok(None) => {
                // The sleep handshake of `Subscriber::sleep` (module `sleep`), whose sleep is
                // the waiter thread's: counted in SLEEPERS once, until the wait ends. The flag
                // is set as the count is taken, so a panic in the attempt leaves no count that
                // `end_wait` would not give back.
                let counted = &mut wait.counted;
                let mut registrations = Vec::new();
                let got = sleep::sleep_unless_any(
                    &self.futexes(),
                    || {
                        if !*counted {
                            self.count_sleeping();
                            *counted = true;
                        }
                    },
                    || match attempt(self) {
                        Ok(None) => None,
                        got => Some(got),
                    },
                    |seen| {
                        registrations = self
                            .lanes
                            .iter()
                            .zip(seen)
                            .map(|(lane, &seen)| {
                                crate::waiter::register(
                                    lane.files.data_file(),
                                    crate::format::offsets::FUTEX,
                                    seen,
                                    waker,
                                )
                            })
                            .collect();
                    },
                );
                let mut registrations = registrations.into_iter();
                wait.registration = registrations.next();
                wait.more.extend(registrations);
                match got {
                    Some(got) => got,
                    None => return std::task::Poll::Pending,
                }
            }
            got => got,
        };
        self.end_wait(wait);
        std::task::Poll::Ready(got.map(|t| t.expect("a receive that gave something")))
    }

    /// Ends a wait of [`Subscriber::poll_receive_token`]: its registrations go and its
    /// sleeper count is given back (nothing if it had none).
    pub fn end_wait(&self, wait: &mut crate::waiter::AsyncWait) {
        wait.registration = None;
        wait.more.clear();
        if std::mem::take(&mut wait.counted) {
            self.uncount_sleeping();
        }
    }
}

#[cfg(feature = "async")]
impl<'a, T: Element> std::future::Future for Recv<'a, T> {
    type Output = Result<Sample<'a, T>, StreamError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        let sub = this
            .subscriber
            .as_deref()
            .expect("polled after it resolved");
        match sub.poll_receive_token(&mut this.wait, cx.waker()) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(got) => {
                let subscriber: &'a Subscriber<T> =
                    this.subscriber.take().expect("not yet resolved");
                std::task::Poll::Ready(got.map(|token| Sample::from_token(subscriber, token)))
            }
        }
    }
}

#[cfg(feature = "async")]
impl<T: Element> Drop for Recv<'_, T> {
    fn drop(&mut self) {
        if let Some(s) = self.subscriber.as_deref() {
            s.end_wait(&mut self.wait);
        }
    }
}

impl<T: Element> Drop for Sample<'_, T> {
    fn drop(&mut self) {
        self.subscriber.lanes[self.lane].release(self.entry, self.slot);
    }
}
