//! [`Publisher`]: the one process that fills a stream's slots in place and publishes them.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::time::Duration;

use ndarray::{ArrayViewMutD, IxDyn, ShapeBuilder};

use super::files::StreamFiles;
use super::protocol::{self, PublisherState};
use super::sleep::{self, Futex};
use super::subscriber::PublisherId;
use crate::array::raw::DEFAULT_TIMEOUT;
use crate::backoff::{Backoff, Step, WaitHistory};
use crate::dtype::Element;
use crate::error::{OpenError, StreamError};
use crate::format::now_ns;
use crate::shape::Order;
use crate::sys::{Liveness, ProcessId};

/// Frames of at least this many bytes are loaned the newest free slot first (when the stream
/// keeps no history, not even of 1 frame, and has no lossy subscriber: `protocol::try_loan`),
/// so a pipeline of big frames reuses the slots still in the caches. Below it the oldest-first order is kept: it
/// puts frame `n` in slot `n % slots`, where a subscriber looks for it first (for small frames
/// that saves the scan of the slot table, a real part of a receive).
const NEWEST_FIRST_FROM: u64 = 64 << 10;

/// The publishing side of a stream: loans a free slot, lets the caller fill it in place,
/// publishes it as the next frame.
///
/// One publisher is attached to a stream at a time (its identity is recorded in the data
/// file; a second gets [`StreamError::PublisherBusy`]). Dropping it detaches.
///
/// # Example
/// ```
/// use mmshare::{create_stream_files, Delivery, DType, Publisher, StreamSpec, Subscriber};
/// let dir = tempfile::tempdir()?;
/// let (path, _) = create_stream_files(dir.path(), &StreamSpec::new("counts", DType::U32, vec![4]))?;
/// let mut publisher = Publisher::<u32>::open(&path)?;
/// let subscriber = Subscriber::<u32>::open(&path, Delivery::Lossless)?; // another process, usually
///
/// let mut frame = publisher.loan()?;
/// frame.copy_from_slice(&[1, 2, 3, 4]); // plain &mut [u32] over shared memory
/// assert_eq!(frame.publish(), 0); // frame numbers start at 0
///
/// let sample = subscriber.receive()?.expect("published above");
/// assert_eq!((sample.number(), &sample[..]), (0, &[1, 2, 3, 4][..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Publisher<T: Element> {
    files: StreamFiles,
    pub(super) state: PublisherState,
    /// Frames are handled as bytes whatever the dtype (`attach_bytes`).
    bytes: bool,
    /// The slot of a loan made by `loan_token` and not yet published or abandoned.
    outstanding: Option<usize>,
    /// A slot loaned right after the last publish, for the next loan ([`Publisher::loan_ahead`]).
    pub(super) ahead: Option<usize>,
    /// Whether each publish loans the next slot at once: frames below [`NEWEST_FIRST_FROM`]
    /// (loaned oldest first) in a stream whose slot table has a cache line per slot.
    pub(super) loans_ahead: bool,
    /// The Rust type last checked against the per-frame header's dtype (`header_mut`).
    header_type: Option<std::any::TypeId>,
    /// How long this publisher's recent waits for a free slot lasted: they choose how
    /// patient the next one is ([`WaitHistory`]).
    slot_waits: WaitHistory,
    me: u64,
    /// Who it is, as its frames say (streams with several publishers).
    id: PublisherId,
    timeout: Duration,
    /// What must live as long as this handle (the daemon connection that is its lease).
    lease: Option<Arc<dyn std::fmt::Debug + Send + Sync>>,
    _element: PhantomData<fn() -> T>,
}

impl<T: Element> std::fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("stream", &self.files.header().name)
            .field("next", &self.state.next)
            .finish_non_exhaustive()
    }
}

/// Checks that `T` is the stream's element type, with the layout the slot arithmetic needs.
pub(super) fn check_element<T: Element>(files: &StreamFiles) -> Result<(), StreamError> {
    Ok(crate::error::check_element::<T>(&files.header().dtype)?)
}

/// `rows` for a frame of a stream that varies (`variable`) or not, at most `max`.
fn checked_rows(variable: bool, rows: u64, max: u64) -> Result<u64, StreamError> {
    if rows > max {
        return Err(StreamError::TooManyRows { rows, max });
    }
    if !variable && rows != max {
        return Err(StreamError::FixedSize { rows, max });
    }
    Ok(rows)
}

/// Checks that `H` is the element type of `files`' per-frame header, with the size and
/// alignment its place needs.
pub(super) fn check_header_type<H: Element>(files: &StreamFiles) -> Result<(), StreamError> {
    let header = files.header();
    let Some(dtype) = header.frame_header.as_ref() else {
        return Err(StreamError::FrameHeader {
            name: header.name.clone(),
            reason: "its frames carry no header".into(),
        });
    };
    crate::error::check_element::<H>(dtype).map_err(|e| StreamError::FrameHeader {
        name: header.name.clone(),
        reason: match e {
            OpenError::DTypeMismatch { expected, found } => {
                format!("it is {found}, and the type asked for is {expected}")
            }
            other => format!("the type asked for does not fit it: {other}"),
        },
    })
}

impl<T: Element> Publisher<T> {
    /// Attaches as the publisher of the stream directory `path`.
    ///
    /// # Errors
    /// As [`StreamFiles::open`]; [`OpenError::DTypeMismatch`] (in [`StreamError::Open`]);
    /// [`StreamError::PublisherBusy`] while another publisher is attached and not positively
    /// dead.
    pub fn open(path: impl AsRef<Path>) -> Result<Publisher<T>, StreamError> {
        Self::attach_any(StreamFiles::open_lanes(path, true)?)
    }

    /// Attaches as a publisher of a stream with several publishers, in the first lane of
    /// `lanes` that has none ([`StreamFiles::open_lanes`], data files read-write); the lanes
    /// not taken are closed.
    ///
    /// # Errors
    /// As [`Publisher::attach`]; [`StreamError::PublishersFull`] when every lane has a live
    /// publisher (for a stream with one lane: [`StreamError::PublisherBusy`]).
    pub fn attach_any(lanes: Vec<StreamFiles>) -> Result<Publisher<T>, StreamError> {
        if let Some(first) = lanes.first() {
            check_element::<T>(first)?;
        }
        Self::attach_first_free(lanes, false)
    }

    fn attach_first_free(
        lanes: Vec<StreamFiles>,
        bytes: bool,
    ) -> Result<Publisher<T>, StreamError> {
        super::files::check_lanes(&lanes)?;
        let count = lanes.len() as u32;
        let name = lanes[0].header().name.clone();
        for files in lanes {
            match Self::attach_checked(files, bytes) {
                Err(StreamError::PublisherBusy { .. }) if count > 1 => continue,
                got => return got,
            }
        }
        Err(StreamError::PublishersFull {
            name,
            max_publishers: count,
        })
    }

    /// Attaches as the publisher of already mapped stream files (data file read-write).
    ///
    /// # Errors
    /// As [`Publisher::open`].
    pub fn attach(files: StreamFiles) -> Result<Publisher<T>, StreamError> {
        check_element::<T>(&files)?;
        Self::attach_checked(files, false)
    }

    fn attach_checked(files: StreamFiles, bytes: bool) -> Result<Publisher<T>, StreamError> {
        if !files.data_writable() {
            return Err(OpenError::Io {
                path: files.header().name.clone().into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "a publisher needs the data file mapped read-write",
                ),
            }
            .into());
        }
        let me = ProcessId::current().to_word();
        let word = files.publisher_word();
        // The publisher's liveness lock: held by a live publisher (whatever its pid
        // namespace), dropped by the kernel when it dies or execs. Without OFD locks, the
        // recorded publisher's liveness is judged from `/proc` instead.
        let locked = files.lock_publisher().ok().flatten();
        if locked == Some(false) {
            return Err(StreamError::PublisherBusy {
                name: files.header().name.clone(),
                pid: word.load(Acquire) as u32,
            });
        }
        loop {
            let current = word.load(Acquire);
            let free = match ProcessId::from_word(current) {
                None => true,
                // We hold the lock: whoever the word names is not attached any more.
                Some(_) if locked == Some(true) => true,
                Some(other) => current != me && other.liveness() == Liveness::Dead,
            };
            if !free {
                return Err(StreamError::PublisherBusy {
                    name: files.header().name.clone(),
                    pid: current as u32,
                });
            }
            // AcqRel: Acquire pairs with the previous publisher's Release when it detached,
            // so its last stores to the slot table are visible to `attach` below.
            if word.compare_exchange(current, me, AcqRel, Relaxed).is_ok() {
                break;
            }
        }
        // A publisher killed while it slept waiting for a slot left itself counted; nobody
        // else counts there (one publisher at a time).
        files.pub_sleepers().store(0, Relaxed);
        // Only the lane's attached publisher stores it: our attach number.
        let attach = files.attaches_word().load(Relaxed).wrapping_add(1);
        files.attaches_word().store(attach, Relaxed);
        let id = PublisherId::new(files.lane(), attach as u32, me as u32);
        let state = protocol::attach(&files.ring())
            .keeping(files.history())
            .newest_first(files.header().data_len >= NEWEST_FIRST_FROM && files.history() == 0);
        let loans_ahead = files.header().data_len < NEWEST_FIRST_FROM
            && files.header().features.incompat & crate::format::FEATURE_SLOT_LINES != 0;
        Ok(Publisher {
            files,
            state,
            bytes,
            outstanding: None,
            ahead: None,
            loans_ahead,
            header_type: None,
            slot_waits: WaitHistory::default(),
            me,
            id,
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

    /// The stream's files (header, statistics, subscribers): its lane's, for a stream with
    /// several publishers.
    pub fn files(&self) -> &StreamFiles {
        &self.files
    }

    /// Who it is: its lane and attach number, and its pid; the frames of a stream with
    /// several publishers carry it ([`crate::Sample::publisher`]).
    pub fn id(&self) -> PublisherId {
        self.id
    }

    /// Elements per frame (bytes per frame for a handle made by `attach_bytes`); for
    /// variable-size frames, the largest frame's.
    pub fn frame_len(&self) -> usize {
        if self.bytes {
            self.files.header().data_len as usize
        } else {
            self.files.header().len() as usize
        }
    }

    /// Elements per row, a slice along axis 0 (bytes for a handle made by `attach_bytes`).
    pub fn row_len(&self) -> usize {
        self.files.row_units(self.bytes, size_of::<T>())
    }

    /// The most rows a frame has (its first dimension; 1 for a 0-d frame).
    pub fn max_rows(&self) -> u64 {
        self.files.max_rows()
    }

    /// Whether the stream's frames vary in length along axis 0 (`StreamOptions::variable`).
    pub fn is_variable(&self) -> bool {
        self.files.header().is_variable()
    }

    /// The dtype of each frame's header, if the stream's frames carry one.
    pub fn header_dtype(&self) -> Option<&crate::DType> {
        self.files.header().frame_header.as_ref()
    }

    /// Checks (once per type) that `H` is the per-frame header's element type.
    fn check_header<H: Element>(&mut self) -> Result<(), StreamError> {
        let id = std::any::TypeId::of::<H>();
        if self.header_type != Some(id) {
            check_header_type::<H>(&self.files)?;
            self.header_type = Some(id);
        }
        Ok(())
    }

    /// Subscribers attached now (records in use, whoever subscribed: this process or
    /// another).
    pub fn subscriber_count(&self) -> usize {
        self.files.subscriber_count()
    }

    /// Waits until at least `n` subscribers are attached, at most `timeout`; returns how many
    /// are. Woken by each subscriber that joins (a futex in the stream's control state, no
    /// polling); returns at once if they are there already. Use it before publishing the
    /// first frame so that lossless subscribers started alongside miss nothing.
    ///
    /// # Errors
    /// [`StreamError::SubscribersTimeout`] naming how many came.
    pub fn wait_for_subscribers(&self, n: usize, timeout: Duration) -> Result<usize, StreamError> {
        let started = std::time::Instant::now();
        self.files
            .wait_for_members(timeout, |count| count >= n)
            .map_err(|attached| StreamError::SubscribersTimeout {
                name: self.files.header().name.clone(),
                wanted: n,
                attached,
                waited: started.elapsed(),
            })
    }

    /// The number the next published frame gets (= frames published so far).
    pub fn next_number(&self) -> u64 {
        self.state.next
    }

    /// How long [`Publisher::loan`] waits for a free slot (default 10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn check_attached(&self) -> Result<(), StreamError> {
        // Relaxed: only detects a take-over; nothing is read through it.
        let now = self.files.publisher_word().load(Relaxed);
        if now == self.me {
            Ok(())
        } else {
            Err(StreamError::PublisherLost {
                name: self.files.header().name.clone(),
                by: now as u32,
            })
        }
    }

    /// Loans a free slot at once, or `None` when lossless subscribers are a whole ring behind.
    ///
    /// # Errors
    /// [`StreamError::PublisherLost`].
    pub fn try_loan(&mut self) -> Result<Option<SampleMut<'_, T>>, StreamError> {
        self.check_attached()?;
        self.check_no_token()?;
        Ok(self.try_slot().map(move |slot| SampleMut::new(self, slot)))
    }

    /// Loans a free slot, waiting up to the timeout (10 s by default, [`Publisher::set_timeout`])
    /// while lossless subscribers are a whole ring behind. Lossy subscribers never make it wait.
    ///
    /// # Errors
    /// [`StreamError::LoanTimeout`] with the slowest lossless subscriber's lag;
    /// [`StreamError::PublisherLost`].
    pub fn loan(&mut self) -> Result<SampleMut<'_, T>, StreamError> {
        self.loan_timeout(self.timeout)
    }

    /// [`Publisher::loan`] with its own timeout.
    ///
    /// # Errors
    /// As [`Publisher::loan`].
    pub fn loan_timeout(&mut self, timeout: Duration) -> Result<SampleMut<'_, T>, StreamError> {
        self.check_attached()?;
        self.check_no_token()?;
        let slot = match self.try_slot() {
            Some(slot) => slot,
            None => self.wait_for_slot(timeout)?,
        };
        Ok(SampleMut::new(self, slot))
    }

    /// A free slot now: the one loaned ahead after the last publish, or a loan's.
    fn try_slot(&mut self) -> Option<usize> {
        self.ahead
            .take()
            .or_else(|| protocol::try_loan(&self.files.ring(), &mut self.state))
    }

    /// After a publish of a small frame, loans the next slot at once (if one is free), so
    /// that the next loan's take-back, fence and hold scan are done while the subscribers
    /// read the frame just published, not on the next frame's way to them. With a cache line
    /// per slot-table entry this touches no line a subscriber polls for the frame just
    /// published. The frame taken back for it leaves the offer one publish earlier than it
    /// would have: a lossy subscriber lagging by a whole ring finds one frame fewer.
    fn loan_ahead(&mut self) {
        // Not for a publisher that lost the stream: its copy of the tags is stale, and its
        // take-backs would hide the new publisher's frames.
        if self.loans_ahead && self.ahead.is_none() && self.check_attached().is_ok() {
            self.ahead = protocol::try_loan(&self.files.ring(), &mut self.state);
        }
    }

    fn check_no_token(&self) -> Result<(), StreamError> {
        match self.outstanding {
            None => Ok(()),
            Some(_) => Err(StreamError::LoanOutstanding {
                name: self.files.header().name.clone(),
            }),
        }
    }

    /// Loans a slot, waiting up to `timeout` as [`Publisher::loan_timeout`] does, without
    /// borrowing the publisher: for bindings whose loans span calls (Python's
    /// `with publisher.loan() as frame:`, a C caller). The frame is written through
    /// [`Publisher::frame_ptr`] (`frame_len` elements) and ends with
    /// [`Publisher::publish_token`] or [`Publisher::abandon_token`]; until then no other loan
    /// is made ([`StreamError::LoanOutstanding`]).
    ///
    /// # Errors
    /// As [`Publisher::loan`]; [`StreamError::LoanOutstanding`].
    pub fn loan_token(&mut self, timeout: Duration) -> Result<LoanToken, StreamError> {
        self.check_attached()?;
        self.check_no_token()?;
        let slot = match self.try_slot() {
            Some(slot) => slot,
            None => self.wait_for_slot(timeout)?,
        };
        self.outstanding = Some(slot);
        self.start_loan(slot);
        Ok(LoanToken {
            slot,
            number: self.state.next,
            rows: self.files.max_rows(),
            max_rows: self.files.max_rows(),
            variable: self.is_variable(),
        })
    }

    /// A new loan of `slot`: its header zeroed (a loan never shows the previous frame's).
    fn start_loan(&self, slot: usize) {
        if let Some(ptr) = self.files.header_ptr(slot) {
            // SAFETY: the header is inside the read-write mapping (the frame-info table is
            // checked at open), and the slot is on loan to this publisher: no subscriber
            // reads it (module docs), and this process writes it only through this loan.
            unsafe { ptr.write_bytes(0, self.files.header().frame_header_len()) };
        }
    }

    /// The first byte of the per-frame header of the frame `token` loans (writable,
    /// [`Publisher::header_dtype`]'s size, 8-byte aligned), if the stream's frames carry one.
    /// For the holder of the token only, until it publishes or abandons it.
    pub fn header_ptr(&self, token: &LoanToken) -> Option<*mut u8> {
        self.files.header_ptr(token.slot)
    }

    /// The first byte of the frame `token` loans (writable, `frame_len` elements, page
    /// aligned). Writing through it is for the holder of the token only, until it publishes
    /// or abandons it.
    pub fn frame_ptr(&self, token: &LoanToken) -> *mut u8 {
        self.files.slot_ptr(token.slot)
    }

    /// Publishes the frame of `token`; returns its number.
    ///
    /// # Errors
    /// [`StreamError::PublisherLost`] if another publisher took the stream over meanwhile
    /// (this one was judged dead); nothing is published then.
    ///
    /// # Panics
    /// If `token` is not this publisher's outstanding loan (a bug in the caller).
    pub fn publish_token(&mut self, token: LoanToken) -> Result<u64, StreamError> {
        assert_eq!(
            self.outstanding,
            Some(token.slot),
            "publish_token: not this publisher's outstanding loan"
        );
        self.outstanding = None;
        self.check_attached()?;
        // Capped: a token of another publisher's stream could carry more.
        let rows = token.rows.min(self.max_rows());
        Ok(self.publish_slot(token.slot, rows))
    }

    /// Gives the loan of `token` back unpublished: nothing is delivered, and the next loan
    /// may take the slot again.
    ///
    /// # Panics
    /// If `token` is not this publisher's outstanding loan (a bug in the caller).
    pub fn abandon_token(&mut self, token: LoanToken) {
        assert_eq!(
            self.outstanding,
            Some(token.slot),
            "abandon_token: not this publisher's outstanding loan"
        );
        self.outstanding = None;
    }

    fn wait_for_slot(&mut self, timeout: Duration) -> Result<usize, StreamError> {
        // Patient: a lossless subscriber that holds the publisher back is usually reading a
        // frame at this moment, and will free a slot within that frame's reading time. Unless
        // this publisher's recent waits were long: then that subscriber is paced by something
        // else, and yielding through the wait only takes CPU time from others.
        let mut backoff = Backoff::patient_unless(&self.slot_waits, timeout);
        #[cfg(test)]
        PATIENT_WAITS.with(|w| w.borrow_mut().push(backoff.is_patient()));
        let got = self.wait_for_slot_with(&mut backoff);
        if got.is_ok() {
            self.slot_waits.record(backoff.elapsed());
        }
        got
    }

    /// Whether this publisher's recent waits for a free slot were long ([`WaitHistory`]).
    #[cfg(test)]
    pub(crate) fn slot_waits_long(&self) -> bool {
        self.slot_waits.long()
    }

    /// Makes this publisher's recent waits for a free slot long, as after a few of 1 ms.
    #[cfg(test)]
    pub(crate) fn note_long_slot_waits(&mut self) {
        for _ in 0..10 {
            self.slot_waits.record(Duration::from_millis(1));
        }
    }

    fn wait_for_slot_with(&mut self, backoff: &mut Backoff) -> Result<usize, StreamError> {
        // A lossless subscriber on this CPU cannot free a slot while we spin here; with more
        // participants than CPUs, one probably is.
        if self.files.crowded() || self.files.lossless_subscriber_on(crate::sys::cpu_hint()) {
            backoff.without_spin();
        }
        let policy = self.files.stall_policy().acts_after();
        loop {
            // The stream's stall policy: past its wait (checked at least every 50 ms, the
            // longest sleep), and only if a loan still fails, the lossless subscribers that
            // hold us back become lossy (or are evicted), and the loan is tried again at once.
            if let Some((after, evict)) = policy
                && backoff.elapsed() >= after
            {
                if let Some(slot) = protocol::try_loan(&self.files.ring(), &mut self.state) {
                    return Ok(slot);
                }
                if protocol::demote_laggards(&self.files.ring(), evict) > 0 {
                    if let Some(slot) = protocol::try_loan(&self.files.ring(), &mut self.state) {
                        return Ok(slot);
                    }
                    continue;
                }
            }
            match backoff.step() {
                Step::Spun => {}
                Step::TimedOut => {
                    let lag = self
                        .files
                        .subscribers()
                        .iter()
                        .filter(|s| s.lossless)
                        .map(|s| s.lag)
                        .max()
                        .unwrap_or(0);
                    return Err(StreamError::LoanTimeout {
                        waited: backoff.elapsed(),
                        lag,
                        slots: self.files.slots() as u32,
                    });
                }
                Step::Sleep(at_most) => {
                    // Not past the time the stall policy acts at: it acts on time even when
                    // the wait sleeps early (the usual schedule sleeps after 100 µs).
                    let at_most = match policy {
                        Some((after, _)) if backoff.elapsed() < after => {
                            at_most.min(after - backoff.elapsed())
                        }
                        _ => at_most,
                    };
                    #[cfg(test)]
                    SLOT_SLEEPS.with(|w| w.borrow_mut().push(at_most));
                    let (sleepers, futex) = (self.files.pub_sleepers(), self.files.pub_futex());
                    let ring = self.files.ring();
                    let state = &mut self.state;
                    // Counted in PUB_SLEEPERS, a subscriber that releases a hold or moves its
                    // cursor wakes us (module `sleep`); the loan attempt is the last check.
                    let got = sleep::sleep_unless(
                        futex,
                        || {
                            sleepers.fetch_add(1, Relaxed);
                        },
                        || protocol::try_loan(&ring, state),
                        |seen| Futex::wait(futex, seen, at_most),
                    );
                    self.uncount_waiting();
                    if let Some(slot) = got {
                        return Ok(slot);
                    }
                    self.check_attached()?;
                    continue;
                }
            }
            self.check_attached()?;
            if let Some(slot) = protocol::try_loan(&self.files.ring(), &mut self.state) {
                return Ok(slot);
            }
        }
    }

    /// Takes a waiter of this publisher out of PUB_SLEEPERS again. Not once another publisher
    /// took the stream over: it reset the count when it attached, and the count is its
    /// waiters' now. Saturating: the word is untrusted.
    fn uncount_waiting(&self) {
        if self.check_attached().is_ok() {
            let _ = self
                .files
                .pub_sleepers()
                .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
        }
    }

    /// Copies `frame` into a loaned slot and publishes it; returns its frame number. For
    /// variable-size frames, `frame` may hold any whole number of rows up to the maximum.
    ///
    /// # Errors
    /// [`StreamError::LengthMismatch`], and as [`Publisher::loan`].
    pub fn send(&mut self, frame: &[T]) -> Result<u64, StreamError> {
        let rows = self.rows_of_len(frame.len())?;
        let mut slot = self.loan()?;
        slot.set_rows(rows)?;
        slot.copy_from_slice(frame);
        Ok(slot.publish())
    }

    /// [`Publisher::send`] with the frame's per-frame header.
    ///
    /// # Errors
    /// As [`Publisher::send`]; [`StreamError::FrameHeader`] when `H` is not the stream's
    /// per-frame header dtype (or the stream has none).
    pub fn send_with_header<H: Element>(
        &mut self,
        frame: &[T],
        header: &H,
    ) -> Result<u64, StreamError> {
        let rows = self.rows_of_len(frame.len())?;
        self.check_header::<H>()?;
        let mut slot = self.loan()?;
        slot.set_rows(rows)?;
        slot.copy_from_slice(frame);
        *slot.header_mut::<H>()? = *header;
        Ok(slot.publish())
    }

    /// The rows a frame of `len` elements has: the maximum's length for a fixed-size stream,
    /// any whole number of rows up to it for a variable-size one (rows of no elements, as in
    /// a shape `(n, 0)`, cannot be counted from a length: such frames are sent whole, with
    /// the most rows; loan one and [`SampleMut::set_rows`] for fewer).
    fn rows_of_len(&self, len: usize) -> Result<u64, StreamError> {
        let (row, max) = (self.row_len(), self.frame_len());
        let whole = if self.is_variable() && row > 0 {
            len <= max && len.is_multiple_of(row)
        } else {
            len == max
        };
        if !whole && self.is_variable() && row > 0 {
            return Err(StreamError::NotWholeRows {
                given: len,
                row,
                max,
            });
        }
        if !whole {
            return Err(StreamError::LengthMismatch {
                given: len,
                expected: max,
            });
        }
        Ok(if self.is_variable() && row > 0 {
            (len / row) as u64
        } else {
            self.max_rows()
        })
    }

    /// Frees the records of subscribers that are positively dead (their pid is gone or was
    /// reused): their holds and lossless cursors stop holding this publisher back. The daemon
    /// does this for the streams it serves; call it when using stream files without one.
    ///
    /// Without the daemon, liveness is judged from this process's view of `/proc`: a live
    /// subscriber in another pid namespace with its own `/proc` may be judged dead, and then
    /// gets [`StreamError::SubscriptionLost`] (streams shared across pid namespaces should go
    /// through the daemon, whose connection leases tell).
    pub fn reclaim_dead_subscribers(&self) -> usize {
        self.files.reclaim_subscribers(|who| who.liveness())
    }

    fn publish_slot(&mut self, slot: usize, rows: u64) -> u64 {
        if let Some(word) = self.files.rows_word(slot) {
            // Relaxed: the tag's Release store in `publish` orders it before any subscriber's
            // Acquire of that tag, with the frame's bytes.
            word.store(rows, Relaxed);
        }
        if let Some(word) = self.files.publisher_of_word(slot) {
            // Relaxed, as the rows.
            word.store(self.id.word(), Relaxed);
        }
        let number = protocol::publish(&self.files.ring(), &mut self.state, slot, now_ns());
        // `publish` ended with the fence of the waker's half of the sleep handshake.
        sleep::wake_after_fence(self.files.sleepers(), self.files.futex());
        self.files.note_publisher_cpu();
        self.loan_ahead();
        number
    }
}

/// Wakes the publisher if it sleeps waiting for a slot (after a hold was released or a
/// lossless cursor moved). Only a system call when it does sleep.
pub(super) fn wake_publisher_side(files: &StreamFiles) {
    sleep::wake(files.pub_sleepers(), files.pub_futex());
}

#[cfg(test)]
thread_local! {
    /// Test record: for each wait for a free slot this thread began, whether it was patient.
    pub(crate) static PATIENT_WAITS: std::cell::RefCell<Vec<bool>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// Test record: the longest sleep each futex sleep of a wait for a free slot asked for.
    pub(crate) static SLOT_SLEEPS: std::cell::RefCell<Vec<Duration>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl<T: Element> Drop for Publisher<T> {
    fn drop(&mut self) {
        // A forked child that drops its copy must not detach the parent.
        if ProcessId::current().to_word() != self.me {
            return;
        }
        // Release: our last stores to the slot table happen-before the next publisher's
        // attach. A failure means we were replaced; nothing to give back then.
        let _ = self
            .files
            .publisher_word()
            .compare_exchange(self.me, 0, Release, Relaxed);
        self.files.unlock_publisher();
    }
}

impl Publisher<u8> {
    /// Attaches as the publisher of already mapped stream files of any dtype, handling frames
    /// as bytes: [`Publisher::frame_len`] is the frame's length in bytes and loans deref to
    /// all of its bytes. For tools and bindings that do not know the element type at compile
    /// time (the frame is still written in the stream's dtype, shape and order).
    ///
    /// # Errors
    /// As [`Publisher::open`], without the dtype check.
    pub fn attach_bytes(files: StreamFiles) -> Result<Publisher<u8>, StreamError> {
        Self::attach_checked(files, true)
    }

    /// [`Publisher::attach_any`], handling frames as bytes ([`Publisher::attach_bytes`]).
    ///
    /// # Errors
    /// As [`Publisher::attach_any`], without the dtype check.
    pub fn attach_any_bytes(lanes: Vec<StreamFiles>) -> Result<Publisher<u8>, StreamError> {
        Self::attach_first_free(lanes, true)
    }
}

/// A loan made by [`Publisher::loan_token`]: the slot and the number the frame gets.
#[derive(Debug)]
#[must_use = "a loan token must be published or abandoned"]
pub struct LoanToken {
    slot: usize,
    number: u64,
    rows: u64,
    max_rows: u64,
    variable: bool,
}

impl LoanToken {
    /// The rows the frame has when published: the maximum, unless [`LoanToken::set_rows`]
    /// shrank it.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Gives the frame `rows` rows (variable-size streams only; at most the maximum).
    ///
    /// # Errors
    /// [`StreamError::FixedSize`] for a stream whose frames do not vary;
    /// [`StreamError::TooManyRows`] above the maximum.
    pub fn set_rows(&mut self, rows: u64) -> Result<(), StreamError> {
        self.rows = checked_rows(self.variable, rows, self.max_rows)?;
        Ok(())
    }

    /// The number the frame gets when published.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Which slot of the ring it is (for diagnostics).
    pub fn slot(&self) -> usize {
        self.slot
    }
}

/// Async loans (feature `async`, or `tokio`).
#[cfg(feature = "async")]
impl<T: Element> Publisher<T> {
    /// A free slot, awaited without blocking a thread while lossless subscribers are a whole
    /// ring behind (lossless backpressure): the task sleeps until a subscriber's progress
    /// wakes the publisher's futex word, which the process's waiter thread turns into a
    /// `Waker` call. Resolves at once when a slot is free. No timeout of its own: wrap it in
    /// the runtime's. Cancel-safe: a dropped future has loaned nothing and leaves no
    /// registration or sleeper count behind.
    ///
    /// # Errors
    /// [`StreamError::PublisherLost`]; [`StreamError::LoanOutstanding`].
    pub fn loan_async(&mut self) -> LoanAsync<'_, T> {
        LoanAsync {
            publisher: Some(self),
            wait: crate::waiter::AsyncWait::new(),
        }
    }

    /// A free slot if there is one (the wait ended); otherwise registers `waker` with the
    /// process's waiter thread (counted in the stream's publisher sleepers, so a subscriber's
    /// progress wakes it) and returns `Pending`: poll again once woken, with the same `wait`.
    /// [`Publisher::loan_async`] is built on it.
    fn poll_slot(
        &mut self,
        wait: &mut crate::waiter::AsyncWait,
        waker: &std::task::Waker,
    ) -> std::task::Poll<Result<usize, StreamError>> {
        wait.registration = None;
        // Checked once per poll, before both attempts: a take-over between this check and a
        // loan is a race the check never closed (it only detects one), and the loaned slot's
        // publish then reports `PublisherLost`.
        if let Err(e) = self.check_attached().and_then(|()| self.check_no_token()) {
            self.end_wait(wait);
            return std::task::Poll::Ready(Err(e));
        }
        // A slot loaned ahead is the next loan's, this one's too: a loan of its own here would
        // find that slot free (tag 0, unheld) and hand it out a second time.
        if let Some(slot) = self.ahead.take() {
            self.end_wait(wait);
            return std::task::Poll::Ready(Ok(slot));
        }
        let Publisher { files, state, .. } = self;
        let ring = files.ring();
        let counted = &mut wait.counted;
        let mut registration = None;
        // The sleep handshake of `wait_for_slot` (module `sleep`), whose sleep is the waiter
        // thread's: counted in PUB_SLEEPERS once, until the wait ends. The flag is set as the
        // count is taken, so a panic in the attempt leaves no count that `end_wait` would not
        // give back.
        // The stream's stall policy, as `wait_for_slot` applies it: once the wait has lasted
        // its time, and a loan still fails, the lossless subscribers that hold us back become
        // lossy (or are evicted). Polled waits are re-polled at least every second (the waiter
        // thread's full re-check), so the policy acts at most that late.
        let since = *wait.since.get_or_insert_with(std::time::Instant::now);
        let stalled = |ring: &_, state: &mut _| {
            let (after, evict) = files.stall_policy().acts_after()?;
            if since.elapsed() < after || protocol::demote_laggards(ring, evict) == 0 {
                return None;
            }
            protocol::try_loan(ring, state)
        };
        let got = protocol::try_loan(&ring, state)
            .or_else(|| stalled(&ring, state))
            .or_else(|| {
                sleep::sleep_unless(
                    files.pub_futex(),
                    || {
                        if !*counted {
                            files.pub_sleepers().fetch_add(1, Relaxed);
                            *counted = true;
                        }
                    },
                    || protocol::try_loan(&ring, state),
                    |seen| {
                        registration = Some(crate::waiter::register(
                            files.control_file(),
                            super::layout::offsets::PUB_FUTEX,
                            seen,
                            waker,
                        ));
                    },
                )
            });
        wait.registration = registration;
        match got {
            Some(slot) => {
                self.end_wait(wait);
                std::task::Poll::Ready(Ok(slot))
            }
            None => std::task::Poll::Pending,
        }
    }

    /// [`Publisher::loan_token`] polled: a token for a free slot if there is one (the wait
    /// ended), else `Pending` with `waker` registered (counted among the publisher sleepers). For
    /// bindings whose event loop keeps the wait between calls (Python's asyncio). End an
    /// abandoned wait with [`Publisher::end_wait`].
    pub fn poll_loan_token(
        &mut self,
        wait: &mut crate::waiter::AsyncWait,
        waker: &std::task::Waker,
    ) -> std::task::Poll<Result<LoanToken, StreamError>> {
        self.poll_slot(wait, waker).map(|got| {
            got.map(|slot| {
                self.outstanding = Some(slot);
                self.start_loan(slot);
                LoanToken {
                    slot,
                    number: self.state.next,
                    rows: self.files.max_rows(),
                    max_rows: self.files.max_rows(),
                    variable: self.is_variable(),
                }
            })
        })
    }

    /// Ends a wait of [`Publisher::poll_loan_token`]: its registration goes and its sleeper
    /// count is given back (nothing if it had none).
    pub fn end_wait(&self, wait: &mut crate::waiter::AsyncWait) {
        wait.registration = None;
        wait.since = None;
        if std::mem::take(&mut wait.counted) {
            self.uncount_waiting();
        }
    }
}

/// The future of [`Publisher::loan_async`].
#[cfg(feature = "async")]
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct LoanAsync<'a, T: Element> {
    /// `None` once resolved.
    publisher: Option<&'a mut Publisher<T>>,
    wait: crate::waiter::AsyncWait,
}

#[cfg(feature = "async")]
impl<'a, T: Element> std::future::Future for LoanAsync<'a, T> {
    type Output = Result<SampleMut<'a, T>, StreamError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        let p = this
            .publisher
            .as_deref_mut()
            .expect("polled after it resolved");
        match p.poll_slot(&mut this.wait, cx.waker()) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(got) => {
                let p = this.publisher.take().expect("not yet resolved");
                std::task::Poll::Ready(got.map(|slot| SampleMut::new(p, slot)))
            }
        }
    }
}

#[cfg(feature = "async")]
impl<T: Element> Drop for LoanAsync<'_, T> {
    fn drop(&mut self) {
        if let Some(p) = self.publisher.as_deref() {
            p.end_wait(&mut self.wait);
        }
    }
}

/// A loaned slot: a plain `&mut [T]` over shared memory that no subscriber reads until it is
/// published. Dropping it unpublished returns the slot; nothing is delivered.
pub struct SampleMut<'a, T: Element> {
    publisher: &'a mut Publisher<T>,
    slot: usize,
    rows: u64,
}

impl<T: Element> std::fmt::Debug for SampleMut<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleMut")
            .field("number", &self.number())
            .field("slot", &self.slot)
            .finish()
    }
}

impl<'a, T: Element> SampleMut<'a, T> {
    fn new(publisher: &'a mut Publisher<T>, slot: usize) -> Self {
        publisher.start_loan(slot);
        let rows = publisher.max_rows();
        SampleMut {
            publisher,
            slot,
            rows,
        }
    }

    /// The rows the frame has (the maximum unless [`SampleMut::set_rows`] shrank it).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Gives the frame `rows` rows, at most the maximum (variable-size streams only): the
    /// slice and the published frame are then its first `rows` rows.
    ///
    /// # Errors
    /// [`StreamError::FixedSize`] for a stream whose frames do not vary (unless `rows` is the
    /// maximum); [`StreamError::TooManyRows`] above the maximum.
    pub fn set_rows(&mut self, rows: u64) -> Result<(), StreamError> {
        let max = self.publisher.max_rows();
        self.rows = checked_rows(self.publisher.is_variable(), rows, max)?;
        Ok(())
    }

    /// The frame's header bytes (empty if the stream's frames carry none), zeroed when the
    /// loan began.
    pub fn header_bytes_mut(&mut self) -> &mut [u8] {
        let len = self.publisher.files.header().frame_header_len();
        match self.publisher.files.header_ptr(self.slot) {
            // SAFETY: inside the read-write mapping (checked at open), `len` bytes, and only
            // this loan accesses it (as for the frame: see `deref`).
            Some(ptr) => unsafe { std::slice::from_raw_parts_mut(ptr, len) },
            None => &mut [],
        }
    }

    /// The frame's header as `H`, the Rust type of the stream's per-frame header dtype
    /// (checked: its dtype must be exactly the stream's).
    ///
    /// # Errors
    /// [`StreamError::FrameHeader`] when the stream has no per-frame header or `H` is not its
    /// type.
    pub fn header_mut<H: Element>(&mut self) -> Result<&mut H, StreamError> {
        self.publisher.check_header::<H>()?;
        let ptr = self
            .publisher
            .files
            .header_ptr(self.slot)
            .expect("checked: the stream has a per-frame header");
        // SAFETY: `check_header` proved that `H`'s dtype is the header's and that its size is
        // the header's length, with alignment at most 8 (the header is 8-byte aligned); the
        // bytes are this loan's alone (see `header_bytes_mut`), and every bit pattern is a
        // valid `H` (`Pod`).
        Ok(unsafe { &mut *ptr.cast::<H>() })
    }

    /// The number this frame gets when published.
    pub fn number(&self) -> u64 {
        self.publisher.state.next
    }

    /// Which slot of the ring it is (for diagnostics).
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The frame as an N-dimensional view in its shape (the stream's, with
    /// [`SampleMut::rows`] as the first dimension) and the stream's order.
    pub fn view_mut(&mut self) -> ArrayViewMutD<'_, T> {
        let header = self.publisher.files.header();
        let mut dims: Vec<usize> = header.shape.iter().map(|&d| d as usize).collect();
        if let Some(first) = dims.first_mut() {
            *first = self.rows as usize;
        }
        let fortran = header.order == Order::F;
        ArrayViewMutD::from_shape(IxDyn(&dims).set_f(fortran), &mut self[..])
            .expect("the slot holds exactly shape-many elements")
    }

    /// Publishes the frame (its first [`SampleMut::rows`] rows, and its header); returns its
    /// number.
    pub fn publish(self) -> u64 {
        let (slot, rows) = (self.slot, self.rows);
        self.publisher.publish_slot(slot, rows)
    }

    /// Elements of the frame as it stands: its rows' worth.
    fn len(&self) -> usize {
        if self.publisher.is_variable() {
            self.publisher.row_len() * self.rows as usize
        } else {
            self.publisher.frame_len()
        }
    }
}

impl<T: Element> Deref for SampleMut<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        let len = self.len();
        let ptr = self.publisher.files.slot_ptr(self.slot).cast::<T>();
        // SAFETY: the slot is inside the read-write mapping (checked at open), page aligned
        // (enough for any `Element`, checked in `check_element`), and holds `len` elements
        // (data_len = len * size_of::<T>()). Every bit pattern is a valid `T` (sealed
        // plain-data element types). No one else accesses it while it is loaned: its tag is
        // 0 and no subscriber held it when it was loaned (`protocol::try_loan`), and
        // subscribers read only slots whose tag they validated after recording a hold.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

impl<T: Element> DerefMut for SampleMut<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let len = self.len();
        let ptr = self.publisher.files.slot_ptr(self.slot).cast::<T>();
        // SAFETY: as for `deref`, and `&mut self` makes this the only reference in this
        // process; the mapping is writable (the publisher maps the data file read-write).
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }
}
