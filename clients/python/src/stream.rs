//! Streams for Python: a publisher and its loans, a subscriber and its samples, over
//! mmshare-lib's byte handles (`Publisher::<u8>::attach_bytes`, `Subscriber::<u8>::attach_bytes`)
//! and tokens, so the slot protocol is the Rust code's.
//!
//! A loan or a sample is a Python object of its own, which NumPy views of its frame keep alive
//! (through `mmshare/stream.py`'s `_Pages`). A sample's hold is let go when the native sample
//! object goes, that is when the Python `Sample` and every view of its frame are gone: a view
//! can never show a slot the publisher reused.
//!
//! Locks, and why nothing deadlocks with the GIL: a handle's `Mutex` (the publisher, the
//! subscriber) is waited for only with the GIL released (`send`'s fast path tries it with the
//! GIL held, and takes the slow path if it is taken), and waits run in slices of at most 100 ms
//! (signals are handled between them, and the waiter yields before it takes the lock again),
//! so a thread that needs the lock usually waits no more than a slice or two. A sample's
//! release never waits for the subscriber: it queues its token, which is released at once if
//! the subscriber is free, else by its holder when it lets go. A token's own small lock is
//! never held while waiting for another.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mmshare::{Delivery, LoanToken, Publisher, SampleToken, StreamError, Subscriber};
use pyo3::prelude::*;

use crate::{Bytes, duration, errors, seconds_text, sliced};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` on what `m` guards, with the GIL released while it waits for the lock.
fn locked<T: Send, R: Send>(m: &Mutex<T>, f: impl FnOnce(&mut T) -> R + Send) -> R {
    Python::attach(|py| py.detach(|| f(&mut lock(m))))
}

/// A stream error as the matching `mmshare.errors` exception.
pub(crate) fn error(py: Python<'_>, e: StreamError) -> PyErr {
    let class = match &e {
        StreamError::ReceiveTimeout { .. }
        | StreamError::LoanTimeout { .. }
        | StreamError::SubscribersTimeout { .. } => "Timeout",
        StreamError::PublisherBusy { .. } => "Busy",
        StreamError::HoldLimit { .. } => "HoldLimit",
        StreamError::Evicted { .. } => "Evicted",
        StreamError::NoRecord { .. } | StreamError::NoHoldBudget { .. } => "QuotaExceeded",
        StreamError::BadMaxHeld { .. }
        | StreamError::BadStart { .. }
        | StreamError::LengthMismatch { .. } => {
            return pyo3::exceptions::PyValueError::new_err(e.to_string());
        }
        _ => "MmshareError",
    };
    errors::with_message(py, class, e.to_string())
}

/// The publishing side of a stream (one per stream at a time).
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativePublisher {
    publisher: Arc<Mutex<Publisher<u8>>>,
    frame_bytes: usize,
}

impl NativePublisher {
    pub(crate) fn new(publisher: Publisher<u8>) -> NativePublisher {
        NativePublisher {
            frame_bytes: publisher.frame_len(),
            publisher: Arc::new(Mutex::new(publisher)),
        }
    }
}

#[pymethods]
impl NativePublisher {
    /// Bytes per frame.
    #[getter]
    fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }

    /// The number the next published frame gets.
    #[getter]
    fn next_number(&self) -> u64 {
        locked(&self.publisher, |p| p.next_number())
    }

    /// Subscribers attached now.
    #[getter]
    fn subscriber_count(&self) -> usize {
        locked(&self.publisher, |p| p.subscriber_count())
    }

    /// Waits (GIL released, interruptible) until at least `n` subscribers are attached;
    /// returns how many are. Woken by each join: the slices between signal checks are the
    /// futex sleeps themselves, not polls.
    fn wait_for_subscribers(
        &self,
        py: Python<'_>,
        n: usize,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let limit = duration(timeout)?;
        let publisher = &self.publisher;
        // The publisher's lock is taken for one slice at a time: a loan from another thread
        // goes on between slices.
        let got = sliced(
            py,
            limit,
            |slice| lock(publisher).wait_for_subscribers(n, slice),
            |e| matches!(e, StreamError::SubscribersTimeout { .. }),
        )?;
        match got {
            Ok(count) => Ok(count),
            Err(StreamError::SubscribersTimeout {
                name,
                wanted,
                attached,
                ..
            }) => Err(error(
                py,
                StreamError::SubscribersTimeout {
                    name,
                    wanted,
                    attached,
                    waited: limit,
                },
            )),
            Err(e) => Err(error(py, e)),
        }
    }

    /// Loans a slot, waiting (GIL released, interruptible) while lossless subscribers are a
    /// ring behind.
    fn loan(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<NativeLoan> {
        let limit = duration(timeout)?;
        let publisher = &self.publisher;
        let got = sliced(
            py,
            limit,
            |slice| {
                let mut p = lock(publisher);
                let token = p.loan_token(slice)?;
                let address = p.frame_ptr(&token) as usize;
                Ok::<_, StreamError>((token, address))
            },
            |e| matches!(e, StreamError::LoanTimeout { .. }),
        )?;
        let (token, address) = match got {
            Ok(got) => got,
            Err(StreamError::LoanTimeout { lag, slots, .. }) => {
                return Err(errors::with_message(
                    py,
                    "Timeout",
                    format!(
                        "no free slot within {}: the slowest lossless subscriber is {lag} frames behind (the ring has {slots})",
                        seconds_text(limit)
                    ),
                ));
            }
            Err(e) => return Err(error(py, e)),
        };
        Ok(NativeLoan {
            number: token.number(),
            address,
            publisher: Arc::clone(&self.publisher),
            token: Mutex::new(Some(token)),
        })
    }

    /// Copies `src` (a C-contiguous buffer of the frame's bytes in the stream's layout: an
    /// ndarray of any dtype, `bytes`, ...) into a loaned slot and publishes it, with no view
    /// made; returns the number.
    ///
    /// The fast path (a free slot, nobody else using this publisher) never releases the GIL
    /// for small frames: releasing and taking it back costs more than the copy. The publisher's
    /// lock is only tried then, never waited for, so the rule above holds.
    fn send(&self, py: Python<'_>, src: Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<u64> {
        /// Frames from this size on are copied with the GIL released.
        const DETACH_FROM: usize = 64 << 10;
        let len = self.frame_bytes;
        let src = Bytes::borrow(&src, len, false, "frame")?;
        let from = src.address();
        let copy = move |to: usize| {
            // SAFETY: `from` is the borrowed source's `len` bytes, kept by `src` for this
            // call; `to` is the loaned slot's `len` bytes, ours until published. They do not
            // overlap (one is the caller's memory, the other the stream's mapping).
            unsafe { std::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, len) };
        };
        if len < DETACH_FROM
            && let Ok(mut p) = self.publisher.try_lock()
        {
            match p.loan_token(std::time::Duration::ZERO) {
                Ok(token) => {
                    copy(p.frame_ptr(&token) as usize);
                    return p.publish_token(token).map_err(|e| error(py, e));
                }
                Err(StreamError::LoanTimeout { .. }) => {} // full: wait below
                Err(e) => return Err(error(py, e)),
            }
        }
        let loan = self.loan(py, timeout)?;
        let to = loan.address;
        if len < DETACH_FROM {
            copy(to);
        } else {
            py.detach(|| copy(to));
        }
        loan.publish(py)
    }
}

/// A loaned slot: written through its address, then published or abandoned (dropping it
/// unpublished abandons it: nothing is delivered).
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeLoan {
    publisher: Arc<Mutex<Publisher<u8>>>,
    token: Mutex<Option<LoanToken>>,
    number: u64,
    address: usize,
}

#[pymethods]
impl NativeLoan {
    /// The number the frame gets when published.
    #[getter]
    fn number(&self) -> u64 {
        self.number
    }

    /// Address of the frame's first byte (writable until published or abandoned).
    #[getter]
    fn address(&self) -> usize {
        self.address
    }

    /// Whether it was published or abandoned.
    #[getter]
    fn finished(&self) -> bool {
        lock(&self.token).is_none()
    }

    /// Publishes the frame; returns its number. A second call raises.
    fn publish(&self, py: Python<'_>) -> PyResult<u64> {
        let token = lock(&self.token).take();
        let Some(token) = token else {
            return Err(errors::with_message(
                py,
                "MmshareError",
                format!("frame {} was already published or abandoned", self.number),
            ));
        };
        locked(&self.publisher, |p| p.publish_token(token)).map_err(|e| error(py, e))
    }

    /// Gives the slot back unpublished (nothing after publishing).
    fn abandon(&self) {
        let token = lock(&self.token).take();
        if let Some(token) = token {
            locked(&self.publisher, |p| p.abandon_token(token));
        }
    }
}

impl Drop for NativeLoan {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// What a subscriber's samples share: the subscriber, and the tokens of samples released
/// while it was busy (released by whoever takes the subscriber next).
struct Shared {
    subscriber: Mutex<Subscriber<u8>>,
    released: Mutex<Vec<SampleToken>>,
}

impl Shared {
    /// The subscriber, with every queued release carried out first. Whatever is queued
    /// while it is held is released when the guard goes.
    fn take(&self) -> Taken<'_> {
        let s = lock(&self.subscriber);
        Self::drain(&self.released, &s);
        Taken {
            shared: self,
            guard: Some(s),
        }
    }

    /// As `take`, if the subscriber is free now (never waits: callable with the GIL held).
    fn try_take(&self) -> Option<Taken<'_>> {
        let s = match self.subscriber.try_lock() {
            Ok(s) => s,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Self::drain(&self.released, &s);
        Some(Taken {
            shared: self,
            guard: Some(s),
        })
    }

    fn drain(released: &Mutex<Vec<SampleToken>>, s: &Subscriber<u8>) {
        let tokens = std::mem::take(&mut *lock(released));
        for token in tokens {
            s.release_token(token);
        }
    }

    /// Carries out queued releases if the subscriber is free; if it is not, its holder does
    /// when it lets go (`Taken::drop`), so no release stays queued once nobody holds it.
    fn drain_if_free(&self) {
        while !lock(&self.released).is_empty() {
            match self.subscriber.try_lock() {
                Ok(s) => Self::drain(&self.released, &s),
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    Self::drain(&self.released, &p.into_inner());
                }
                Err(std::sync::TryLockError::WouldBlock) => break,
            }
        }
    }

    /// Releases `token` now if the subscriber is free, else queues it for its holder.
    fn release(&self, token: SampleToken) {
        lock(&self.released).push(token);
        self.drain_if_free();
    }
}

/// The subscriber, locked; releases queued meanwhile are carried out when it is let go.
struct Taken<'a> {
    shared: &'a Shared,
    guard: Option<MutexGuard<'a, Subscriber<u8>>>,
}

impl std::ops::Deref for Taken<'_> {
    type Target = Subscriber<u8>;
    fn deref(&self) -> &Subscriber<u8> {
        self.guard.as_ref().expect("held until drop")
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.shared.drain_if_free();
    }
}

/// The receiving side of a stream.
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeSubscriber {
    shared: Arc<Shared>,
    frame_bytes: usize,
    lossless: bool,
}

impl NativeSubscriber {
    pub(crate) fn new(subscriber: Subscriber<u8>) -> NativeSubscriber {
        NativeSubscriber {
            frame_bytes: subscriber.frame_len(),
            lossless: subscriber.delivery() == Delivery::Lossless,
            shared: Arc::new(Shared {
                subscriber: Mutex::new(subscriber),
                released: Mutex::new(Vec::new()),
            }),
        }
    }

    fn sample(&self, token: SampleToken, address: usize) -> NativeSample {
        NativeSample {
            number: token.number(),
            missed_before: token.missed_before(),
            published_ns: token.published_ns(),
            address,
            shared: Arc::clone(&self.shared),
            token: Mutex::new(Some(token)),
        }
    }

    /// Runs `f` on the subscriber (queued releases done first), the GIL released meanwhile.
    fn with<R: Send>(&self, f: impl FnOnce(&Subscriber<u8>) -> R + Send) -> R {
        let shared = &self.shared;
        Python::attach(|py| py.detach(|| f(&shared.take())))
    }
}

/// Takes a sample with `how` and detaches it: the token and the frame's address.
fn detached(
    shared: &Shared,
    how: impl FnOnce(&Subscriber<u8>) -> Result<Option<mmshare::Sample<'_, u8>>, StreamError>,
) -> Result<Option<(SampleToken, usize)>, StreamError> {
    taken(&shared.take(), how)
}

/// `how` on a subscriber already taken; the sample as its token and frame address.
fn taken(
    s: &Taken<'_>,
    how: impl FnOnce(&Subscriber<u8>) -> Result<Option<mmshare::Sample<'_, u8>>, StreamError>,
) -> Result<Option<(SampleToken, usize)>, StreamError> {
    Ok(how(s)?.map(|sample| {
        let token = sample.into_token();
        let address = s.frame_ptr(&token) as usize;
        (token, address)
    }))
}

#[pymethods]
impl NativeSubscriber {
    #[getter]
    fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }

    #[getter]
    fn lossless(&self) -> bool {
        self.lossless
    }

    #[getter]
    fn max_held(&self) -> usize {
        self.with(Subscriber::max_held)
    }

    /// Frames skipped so far.
    #[getter]
    fn missed(&self) -> u64 {
        self.with(Subscriber::missed)
    }

    /// Whether the publisher demoted it to lossy (the stream's stall policy).
    #[getter]
    fn demoted(&self) -> bool {
        self.with(Subscriber::demoted)
    }

    /// Frames received so far.
    #[getter]
    fn received(&self) -> u64 {
        self.with(Subscriber::received)
    }

    /// The number of the next frame it will receive.
    #[getter]
    fn next_number(&self) -> u64 {
        self.with(Subscriber::next_number)
    }

    /// The frame it started at.
    #[getter]
    fn first_frame(&self) -> u64 {
        self.with(Subscriber::first_frame)
    }

    /// The next frame, waiting up to `timeout` (GIL released, interruptible): spinning
    /// briefly, then asleep on the stream's futex, registered so that the publisher wakes it.
    fn receive(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<NativeSample> {
        let limit = duration(timeout)?;
        let shared = &self.shared;
        let got = sliced(
            py,
            limit,
            |slice| detached(shared, |s| s.receive_timeout(slice).map(Some)),
            |e| matches!(e, StreamError::ReceiveTimeout { .. }),
        )?;
        match got {
            Ok(Some((token, address))) => Ok(self.sample(token, address)),
            Ok(None) => unreachable!("receive_timeout returns a sample or an error"),
            Err(StreamError::ReceiveTimeout { next, .. }) => Err(errors::with_message(
                py,
                "Timeout",
                format!(
                    "no frame within {} (next expected frame {next})",
                    seconds_text(limit)
                ),
            )),
            Err(e) => Err(error(py, e)),
        }
    }

    /// The next frame if one is there, else None; never waits for a frame (only, briefly, for
    /// another thread's call on this subscriber).
    fn try_receive(&self, py: Python<'_>) -> PyResult<Option<NativeSample>> {
        let shared = &self.shared;
        // Never waits, so with the GIL held if the subscriber is free (the common case, and
        // the one a busy-polling caller repeats): releasing the GIL costs more than the poll.
        let got = match shared.try_take() {
            Some(s) => taken(&s, Subscriber::receive),
            None => py.detach(|| detached(shared, Subscriber::receive)),
        };
        got.map(|got| got.map(|(token, address)| self.sample(token, address)))
            .map_err(|e| error(py, e))
    }

    /// The newest frame (None before the first), skipping older ones (counted as missed).
    fn latest(&self, py: Python<'_>) -> PyResult<Option<NativeSample>> {
        let shared = &self.shared;
        py.detach(|| detached(shared, Subscriber::latest))
            .map(|got| got.map(|(token, address)| self.sample(token, address)))
            .map_err(|e| error(py, e))
    }
}

/// A held frame. Its hold is released when this object goes (or by `release`, which the
/// Python layer calls only once no view of the frame is left).
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeSample {
    shared: Arc<Shared>,
    token: Mutex<Option<SampleToken>>,
    number: u64,
    missed_before: u64,
    published_ns: u64,
    address: usize,
}

#[pymethods]
impl NativeSample {
    #[getter]
    fn number(&self) -> u64 {
        self.number
    }

    #[getter]
    fn missed_before(&self) -> u64 {
        self.missed_before
    }

    #[getter]
    fn published_ns(&self) -> u64 {
        self.published_ns
    }

    /// Address of the frame's first byte (read-only, valid while held).
    #[getter]
    fn address(&self) -> usize {
        self.address
    }

    /// Whether the slot still holds this frame and this hold (false only if a scribbler
    /// erased the hold and the slot was reused).
    fn is_intact(&self) -> bool {
        let (shared, token) = (&self.shared, &self.token);
        // The subscriber first (waited for without the GIL), then the token's own lock,
        // which is never held while waiting for anything.
        Python::attach(|py| {
            py.detach(|| {
                let s = shared.take();
                lock(token).as_ref().is_some_and(|t| s.token_is_intact(t))
            })
        })
    }

    /// Lets go of the hold (nothing if already let go). Never waits for the subscriber.
    fn release(&self) {
        let token = lock(&self.token).take();
        if let Some(token) = token {
            self.shared.release(token);
        }
    }
}

impl Drop for NativeSample {
    fn drop(&mut self) {
        self.release();
    }
}
