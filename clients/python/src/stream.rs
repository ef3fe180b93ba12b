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

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use mmshare::{Delivery, LoanToken, Publisher, SampleToken, StreamError, Subscriber};
use pyo3::prelude::*;

use std::task::Poll;

use crate::aio::NativeWait;
use crate::ndarray::KnownLayout;
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
        StreamError::PublisherBusy { .. } | StreamError::PublishersFull { .. } => "Busy",
        StreamError::HoldLimit { .. } => "HoldLimit",
        StreamError::Evicted { .. } => "Evicted",
        StreamError::NoRecord { .. } | StreamError::NoHoldBudget { .. } => "QuotaExceeded",
        StreamError::BadMaxHeld { .. }
        | StreamError::BadStart { .. }
        | StreamError::LengthMismatch { .. }
        | StreamError::NotWholeRows { .. }
        | StreamError::TooManyRows { .. }
        | StreamError::FixedSize { .. } => {
            return pyo3::exceptions::PyValueError::new_err(e.to_string());
        }
        _ => "MmshareError",
    };
    errors::with_message(py, class, e.to_string())
}

/// The publishing side of a stream (one per stream at a time): the Python handle's. Its
/// `send` is a [`NativeSender`] over the same core.
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativePublisher {
    core: Arc<PubCore>,
}

impl std::ops::Deref for NativePublisher {
    type Target = PubCore;
    fn deref(&self) -> &PubCore {
        &self.core
    }
}

/// What a publisher handle's native methods work on. Loans hold the publisher itself (its
/// `Arc`), not this: the publisher detaches when the handle and its last loan are gone.
pub(crate) struct PubCore {
    publisher: Arc<Mutex<Publisher<u8>>>,
    frame_bytes: usize,
    row_bytes: usize,
    header_bytes: usize,
    variable: bool,
    id: mmshare::PublisherId,
    /// The stream's name, for errors.
    name: String,
    /// The process that opened it (its `ProcessId` word and pid): `send_frame` refuses to run
    /// in a child it forked, as every other method of the Python handle does.
    opener: (u64, u32),
    /// What `send_frame` takes as it is, once the Python handle has said (`sender`).
    direct: OnceLock<Direct>,
    /// Set when the Python handle is closed: its `send` refuses from then on, even while a
    /// loan keeps the publisher attached.
    closed: AtomicBool,
}

/// What `NativeSender::send_frame` needs to copy a frame in without Python code: the
/// frames it can take as they are, and the Python function for the others.
struct Direct {
    /// `numpy.ndarray`: only an exact ndarray is taken as it is (a subclass may mean more
    /// than its bytes, so it goes the converting way, as it always did).
    ndarray: Py<pyo3::types::PyType>,
    /// The buffer format an ndarray of the stream's dtype exports (`memoryview(a).format`),
    /// and the frame's shape: an ndarray with both is the frame's bytes already. `None` when
    /// no frame is taken as it is (not a plain numeric dtype in C order, or variable size).
    layout: Option<(std::ffi::CString, Vec<isize>)>,
    /// `mmshare.stream._send_converting(spec, native, frame, timeout, casting, header)`,
    /// and its `spec`: the general path (conversions, casting checks, headers, errors).
    converting: Py<PyAny>,
    spec: Py<PyAny>,
    /// The dtype object and shape of an ndarray `as_frame` took: another exact ndarray with
    /// both is read without the buffer protocol (module `ndarray`).
    known: KnownLayout,
}

/// Refuses a handle's fast method (one that is the Python handle's own: no Python code runs
/// before it) once the handle is closed, or in a child forked from its opener, with the errors
/// the Python methods raise.
fn usable(
    py: Python<'_>,
    side: &str,
    name: &str,
    (word, pid): (u64, u32),
    closed: &AtomicBool,
) -> PyResult<()> {
    if closed.load(Ordering::Relaxed) {
        return Err(errors::with_message(
            py,
            "MmshareError",
            format!("the {side} of stream '{name}' is closed"),
        ));
    }
    if mmshare::ProcessId::current().to_word() != word {
        return Err(errors::with_message(
            py,
            "WrongProcess",
            format!(
                "the {side} of stream '{name}' was opened by process {pid}, and this process \
                 is a child it forked: a handle is one participant and stays its opener's. \
                 Open it again here (by name, or pass it pickled: it reopens by name in the \
                 receiver)"
            ),
        ));
    }
    Ok(())
}

/// The casting rules of NumPy (`mmshare.array.CASTINGS`): any of them allows a dtype to
/// itself, so a frame already in the stream's dtype is taken under each.
const CASTINGS: [&str; 5] = ["no", "equiv", "safe", "same_kind", "unsafe"];

impl NativePublisher {
    pub(crate) fn new(publisher: Publisher<u8>) -> NativePublisher {
        let process = mmshare::ProcessId::current();
        let core = PubCore {
            id: publisher.id(),
            frame_bytes: publisher.frame_len(),
            row_bytes: publisher.row_len(),
            header_bytes: publisher.header_dtype().map_or(0, mmshare::DType::size),
            variable: publisher.is_variable(),
            name: publisher.files().header().name.clone(),
            opener: (process.to_word(), process.pid),
            direct: OnceLock::new(),
            closed: AtomicBool::new(false),
            publisher: Arc::new(Mutex::new(publisher)),
        };
        NativePublisher {
            core: Arc::new(core),
        }
    }
}

impl PubCore {
    /// `frame` as the stream's frame bytes, if it is one as it is: an exact ndarray of the
    /// stream's dtype (by buffer format) and shape, C-contiguous.
    fn as_frame(&self, direct: &Direct, frame: &Bound<'_, PyAny>) -> Option<Bytes> {
        let (format, shape) = direct.layout.as_ref()?;
        if !frame.get_type().is(direct.ndarray.bind(frame.py())) {
            return None;
        }
        let bytes = Bytes::borrow_described(frame)?;
        let fits = bytes.format() == format.as_c_str()
            && bytes.shape() == shape.as_slice()
            && bytes.len() == self.frame_bytes;
        if fits {
            // SAFETY: `frame` is an exact ndarray (above); the GIL is held.
            unsafe { direct.known.remember(frame, bytes.format()) };
        }
        fits.then_some(bytes)
    }

    /// A loan, waiting up to `timeout` (the Python handle's `loan`).
    fn loan_for(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<NativeLoan> {
        let limit = duration(timeout)?;
        let publisher = &self.publisher;
        let got = sliced(
            py,
            limit,
            |slice| {
                let mut p = lock(publisher);
                let token = p.loan_token(slice)?;
                let address = p.frame_ptr(&token) as usize;
                let header = p.header_ptr(&token).map_or(0, |h| h as usize);
                Ok::<_, StreamError>((token, address, header))
            },
            |e| matches!(e, StreamError::LoanTimeout { .. }),
        )?;
        let (token, address, header_address) = match got {
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
            header_address,
            publisher: Arc::clone(&self.publisher),
            token: Mutex::new(Some(token)),
        })
    }

    /// The Python handle's raw `send` (see there).
    fn send_raw(
        &self,
        py: Python<'_>,
        src: Bound<'_, PyAny>,
        timeout: Option<f64>,
        header: Option<Bound<'_, PyAny>>,
        rows: Option<u64>,
    ) -> PyResult<u64> {
        let (max, row) = (self.frame_bytes, self.row_bytes);
        let src = if self.variable && row > 0 {
            Bytes::borrow_where(
                &src,
                false,
                "frame",
                &|| format!("of whole rows ({row} bytes each) up to {max} bytes"),
                |got| got <= max && got.is_multiple_of(row),
            )?
        } else {
            Bytes::borrow(&src, max, false, "frame")?
        };
        let len = src.len();
        let rows = match (self.variable, rows) {
            (true, Some(rows)) => Some(rows),
            (true, None) if row > 0 => Some((len / row) as u64),
            _ => None,
        };
        let header = match header {
            Some(h) if self.header_bytes > 0 => {
                Some(Bytes::borrow(&h, self.header_bytes, false, "header")?)
            }
            Some(_) => {
                return Err(errors::with_message(
                    py,
                    "MmshareError",
                    "this stream's frames carry no header".to_owned(),
                ));
            }
            None => None,
        };
        self.send_bytes(py, &src, timeout, header.as_ref(), rows)
    }

    /// Copies `src` (and `header`) into a loaned slot and publishes it (`send`).
    fn send_bytes(
        &self,
        py: Python<'_>,
        src: &Bytes,
        timeout: Option<f64>,
        header: Option<&Bytes>,
        rows: Option<u64>,
    ) -> PyResult<u64> {
        let len = src.len();
        let (from, header_from) = (src.address(), header.map(Bytes::address));
        // SAFETY: `from` and `header_from` are the borrowed buffers, kept by the caller's
        // `Bytes` for this call, of `len` and (as `send_raw` checked) `header_bytes` bytes.
        if let Some(sent) = unsafe { self.send_now(py, from, len, header_from, rows) } {
            return sent;
        }
        let loan = self.loan_for(py, timeout)?;
        if let Some(rows) = rows {
            loan.set_rows(py, rows)?; // on an error the loan is dropped: abandoned
        }
        let (to, header_to) = (loan.address, loan.header_address);
        let header_len = self.header_bytes;
        // SAFETY: as above (the borrows outlive the GIL's release: they are released only
        // when the caller's `Bytes` go); `to` is the loan's frame, at least `len` bytes, ours
        // until published, and `header_to` its header, of `header_len` bytes. Neither
        // overlaps the caller's memory.
        let copy = move || unsafe { copy_in(from, len, header_from, header_len, to, header_to) };
        if len < DETACH_FROM {
            copy();
        } else {
            py.detach(copy);
        }
        loan.publish(py)
    }

    /// Publishes `len` bytes from `from` (and the frame's header from `header_from`) right
    /// away, with the GIL kept, if the frame is below [`DETACH_FROM`], nobody else is using
    /// this publisher and a slot is free (the common case); `None` when it cannot, having
    /// done nothing (the caller then waits for a loan, with the GIL released).
    ///
    /// # Safety
    /// `from` is valid for reads of `len` bytes, and `header_from` (if any) of the frame
    /// header's bytes, until this returns.
    unsafe fn send_now(
        &self,
        py: Python<'_>,
        from: usize,
        len: usize,
        header_from: Option<usize>,
        rows: Option<u64>,
    ) -> Option<PyResult<u64>> {
        if len >= DETACH_FROM {
            return None;
        }
        let mut p = self.publisher.try_lock().ok()?;
        // Errors are made into Python exceptions only once the publisher is let go: making
        // one may run Python code (the garbage collector, a finalizer), which may send.
        let mut token = match p.loan_token(std::time::Duration::ZERO) {
            Ok(token) => token,
            Err(StreamError::LoanTimeout { .. }) => return None, // full: the caller waits
            Err(e) => {
                drop(p);
                return Some(Err(error(py, e)));
            }
        };
        if let Some(rows) = rows
            && let Err(e) = token.set_rows(rows)
        {
            // Never outstanding past an error: the next loan must not find it.
            p.abandon_token(token);
            drop(p);
            return Some(Err(error(py, e)));
        }
        let header_to = p.header_ptr(&token).map_or(0, |h| h as usize);
        // SAFETY: the sources as the caller promises; the loaned slot's frame (at least `len`
        // bytes: the callers checked the length against the stream's frame) and header, ours
        // until published, overlap no memory of the caller's.
        unsafe {
            copy_in(
                from,
                len,
                header_from,
                self.header_bytes,
                p.frame_ptr(&token) as usize,
                header_to,
            );
        }
        let published = p.publish_token(token);
        drop(p);
        Some(published.map_err(|e| error(py, e)))
    }
}

/// Copies a frame's `len` bytes from `from` to `to`, and its header's `header_len` bytes
/// from `header_from` (if any) to `header_to`.
///
/// # Safety
/// Each source is valid for reads and each destination for writes of its length, and no
/// source overlaps a destination.
unsafe fn copy_in(
    from: usize,
    len: usize,
    header_from: Option<usize>,
    header_len: usize,
    to: usize,
    header_to: usize,
) {
    // SAFETY: as the caller promises.
    unsafe {
        std::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, len);
        if let Some(h) = header_from {
            std::ptr::copy_nonoverlapping(h as *const u8, header_to as *mut u8, header_len);
        }
    }
}

/// A publisher's identity as Python sees it: `(id, lane, attach, pid)`.
type PublisherTuple = (u64, u32, u32, u32);

fn publisher_tuple(id: mmshare::PublisherId) -> PublisherTuple {
    (id.id(), id.lane(), id.attach(), id.pid())
}

#[pymethods]
impl NativePublisher {
    /// Who it is: `(id, lane, attach, pid)` (module docs of the Rust `stream` module,
    /// "Several publishers").
    #[getter]
    fn identity(&self) -> PublisherTuple {
        publisher_tuple(self.id)
    }

    /// Bytes per frame (the largest frame, for variable-size frames).
    #[getter]
    fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }

    /// Bytes per row (a slice along axis 0).
    #[getter]
    fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Bytes of each frame's header (0 when frames carry none).
    #[getter]
    fn header_bytes(&self) -> usize {
        self.header_bytes
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
        self.loan_for(py, timeout)
    }

    /// A loan if a slot is free now; otherwise `None`, with `wait` registered so that its
    /// notifier is told when a subscriber's progress may have freed one (asyncio's `aloan`).
    fn poll_loan(&self, py: Python<'_>, wait: &NativeWait) -> PyResult<Option<NativeLoan>> {
        let publisher = &self.publisher;
        let got = py.detach(|| {
            let mut p = lock(publisher);
            wait.with(|w, waker| match p.poll_loan_token(w, waker) {
                Poll::Pending => Ok(None),
                Poll::Ready(Ok(token)) => {
                    let address = p.frame_ptr(&token) as usize;
                    let header = p.header_ptr(&token).map_or(0, |h| h as usize);
                    Ok(Some((token, address, header)))
                }
                Poll::Ready(Err(e)) => Err(e),
            })
        });
        match got {
            Ok(Some((token, address, header_address))) => Ok(Some(NativeLoan {
                number: token.number(),
                address,
                header_address,
                publisher: Arc::clone(&self.publisher),
                token: Mutex::new(Some(token)),
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(error(py, e)),
        }
    }

    /// The subscriber count if at least `n` are attached; otherwise `None`, with `wait`
    /// registered so that its notifier is told when one joins or leaves (asyncio's
    /// `await_for_subscribers`).
    fn poll_subscribers(&self, py: Python<'_>, n: usize, wait: &NativeWait) -> Option<usize> {
        let publisher = &self.publisher;
        py.detach(|| {
            let p = lock(publisher);
            wait.with(
                |w, waker| match p.files().poll_members(|c| c >= n, w, waker) {
                    Poll::Ready(count) => Some(count),
                    Poll::Pending => None,
                },
            )
        })
    }

    /// Ends a wait of `poll_subscribers`: nothing stays registered or counted.
    fn end_subscribers_wait(&self, wait: &NativeWait) {
        if wait.foreign() {
            return; // a forked child's copy: the count is the parent's
        }
        locked(&self.publisher, |p| {
            wait.with(|w, _| p.files().end_member_wait(w))
        });
    }

    /// Ends a wait of `poll_loan` (a cancelled `aloan`): nothing stays registered or counted.
    fn end_wait(&self, wait: &NativeWait) {
        if wait.foreign() {
            return; // a forked child's copy: the count is the parent's
        }
        locked(&self.publisher, |p| wait.with(|w, _| p.end_wait(w)));
    }

    /// Copies `src` (a C-contiguous buffer of the frame's bytes in the stream's layout: an
    /// ndarray of any dtype, `bytes`, ...) into a loaned slot and publishes it, with no view
    /// made; returns the number.
    ///
    /// The fast path (a free slot, nobody else using this publisher) never releases the GIL
    /// for small frames: releasing and taking it back costs more than the copy. The publisher's
    /// lock is only tried then, never waited for, so the rule above holds.
    ///
    /// For variable-size frames, `src` may hold any whole number of rows up to the largest
    /// frame's; `header` (the per-frame header's bytes, exactly its size) is copied in too.
    /// `rows`: the frame's rows, for variable-size frames whose rows have no bytes (otherwise
    /// counted from the length).
    #[pyo3(signature = (src, timeout, header=None, rows=None))]
    fn send(
        &self,
        py: Python<'_>,
        src: Bound<'_, PyAny>,
        timeout: Option<f64>,
        header: Option<Bound<'_, PyAny>>,
        rows: Option<u64>,
    ) -> PyResult<u64> {
        self.send_raw(py, src, timeout, header, rows)
    }

    /// The handle's `send` ([`NativeSender`]): told what it may take as it is (`format` and
    /// `shape`: of an ndarray that is a frame already; `None` for a stream whose frames
    /// always go the converting way) and how to send anything else (`converting(spec,
    /// sender, frame, timeout, casting, header)`). The first call's description stays.
    fn sender(
        &self,
        ndarray: Bound<'_, pyo3::types::PyType>,
        format: Option<&str>,
        shape: Vec<isize>,
        spec: Py<PyAny>,
        converting: Py<PyAny>,
    ) -> PyResult<NativeSender> {
        crate::ndarray::check_ndarray(&ndarray)?;
        let layout = match format {
            Some(f) => Some((
                std::ffi::CString::new(f).map_err(|_| {
                    pyo3::exceptions::PyValueError::new_err(format!("bad buffer format {f:?}"))
                })?,
                shape,
            )),
            None => None,
        };
        let _ = self.direct.set(Direct {
            ndarray: ndarray.unbind(),
            layout,
            converting,
            spec,
            known: KnownLayout::default(),
        });
        Ok(NativeSender {
            core: Arc::clone(&self.core),
        })
    }

    /// Marks the handle closed: its `send` refuses from now on (the publisher itself
    /// detaches when this object and its last loan are gone).
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// A publisher handle's `send`: what the Python handle's `send` attribute is bound to, so that
/// the common call runs no Python code. Like any bound method it keeps what it works on alive
/// (`client.publisher(name).send(frame)` must work); once the handle is closed it refuses.
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeSender {
    core: Arc<PubCore>,
}

impl NativeSender {
    fn core(&self, py: Python<'_>) -> PyResult<&PubCore> {
        let core = &*self.core;
        usable(py, "publisher", &core.name, core.opener, &core.closed)?;
        Ok(core)
    }
}

#[pymethods]
impl NativeSender {
    /// `Publisher.send` (its documentation is there). A frame that already is the stream's
    /// frame (an exact ndarray of its dtype, by buffer format, and shape, C-contiguous; no
    /// header) is copied in here; any other goes to the converting path, which checks,
    /// converts and sends it as it always did. `casting` None means the default, "same_kind".
    #[pyo3(signature = (frame, timeout=Some(10.0), casting=None, header=None))]
    fn send_frame(
        slf: &Bound<'_, Self>,
        frame: Bound<'_, PyAny>,
        timeout: Option<f64>,
        casting: Option<Bound<'_, PyAny>>,
        header: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let core = slf.get().core(py)?;
        let Some(direct) = core.direct.get() else {
            return Err(errors::with_message(
                py,
                "MmshareError",
                "a sender made without its description".to_owned(),
            ));
        };
        let rule_ok = match &casting {
            None => true,
            Some(c) => c
                .cast::<pyo3::types::PyString>()
                .ok()
                .and_then(|c| c.to_str().ok().map(|c| CASTINGS.contains(&c)))
                .unwrap_or(false),
        };
        if header.is_none() && rule_ok && frame.get_type().is(direct.ndarray.bind(py)) {
            // SAFETY: `frame` is an exact ndarray, and its address is used by `send_now`
            // alone, which keeps the GIL and runs no Python code.
            if let Some(from) = unsafe { direct.known.address(&frame, false) } {
                // SAFETY: `from` is the array's data, `frame_bytes` long (the remembered
                // layout's bytes), readable until `send_now` returns (above).
                let sent = unsafe { core.send_now(py, from, core.frame_bytes, None, None) };
                if let Some(sent) = sent {
                    return Ok(sent?.into_pyobject(py)?.into_any().unbind());
                }
            }
        }
        if header.is_none()
            && rule_ok
            && let Some(bytes) = core.as_frame(direct, &frame)
        {
            let number = core.send_bytes(py, &bytes, timeout, None, None)?;
            return Ok(number.into_pyobject(py)?.into_any().unbind());
        }
        let casting = match casting {
            Some(c) => c.unbind(),
            None => "same_kind".into_pyobject(py)?.into_any().unbind(),
        };
        let (converting, spec) = (direct.converting.clone_ref(py), direct.spec.clone_ref(py));
        converting.call1(py, (spec, slf, frame, timeout, casting, header))
    }

    /// The handle's raw `send` of a frame's bytes (what the converting path ends with).
    #[pyo3(signature = (src, timeout, header=None, rows=None))]
    fn send(
        &self,
        py: Python<'_>,
        src: Bound<'_, PyAny>,
        timeout: Option<f64>,
        header: Option<Bound<'_, PyAny>>,
        rows: Option<u64>,
    ) -> PyResult<u64> {
        self.core(py)?.send_raw(py, src, timeout, header, rows)
    }
}

/// Frames from this size on are copied (into a loan, or out of a sample) with the GIL
/// released; below it, releasing and taking the GIL back costs more than the copy.
const DETACH_FROM: usize = 64 << 10;

/// A loaned slot: written through its address, then published or abandoned (dropping it
/// unpublished abandons it: nothing is delivered).
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeLoan {
    publisher: Arc<Mutex<Publisher<u8>>>,
    token: Mutex<Option<LoanToken>>,
    number: u64,
    address: usize,
    header_address: usize,
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

    /// Address of the frame's header (0 when frames carry none; writable until published).
    #[getter]
    fn header_address(&self) -> usize {
        self.header_address
    }

    /// Whether it was published or abandoned.
    #[getter]
    fn finished(&self) -> bool {
        lock(&self.token).is_none()
    }

    /// The rows the frame will be published with.
    #[getter]
    fn rows(&self) -> u64 {
        lock(&self.token).as_ref().map_or(0, LoanToken::rows)
    }

    /// Publishes the frame with `rows` rows (variable-size frames only; at most the
    /// largest frame's).
    fn set_rows(&self, py: Python<'_>, rows: u64) -> PyResult<()> {
        match lock(&self.token).as_mut() {
            Some(token) => token.set_rows(rows).map_err(|e| error(py, e)),
            None => Err(errors::with_message(
                py,
                "MmshareError",
                format!("frame {} was already published or abandoned", self.number),
            )),
        }
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
///
/// No token may stay queued once nobody holds the subscriber (a lossless stream's publisher
/// would wait for it). A releaser queues its token, sets `queued`, fences and tries the
/// subscriber; a holder lets the subscriber go, fences and looks at `queued`. The two
/// `SeqCst` fences order the two sides (a store, a fence, a load on each: Dekker's
/// pattern): either the releaser's try finds the subscriber free, or the holder sees
/// `queued`. So a take can skip the queue's lock when `queued` is clear, which it almost
/// always is: a missed token is the holder's to drain when it lets go.
struct Shared {
    subscriber: Mutex<Subscriber<u8>>,
    released: Mutex<Vec<SampleToken>>,
    /// Whether `released` may hold tokens: set with a push, cleared with the drain that
    /// empties it (both under `released`'s lock).
    queued: AtomicBool,
}

impl Shared {
    /// The subscriber, with every queued release carried out first. Whatever is queued
    /// while it is held is released when the guard goes.
    fn take(&self) -> Taken<'_> {
        let s = lock(&self.subscriber);
        self.drain(&s);
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
        self.drain(&s);
        Some(Taken {
            shared: self,
            guard: Some(s),
        })
    }

    /// Carries out the queued releases (`s` is the subscriber, held). Relaxed: a token
    /// queued after this look is drained when the holder lets go (see [`Shared`]).
    fn drain(&self, s: &Subscriber<u8>) {
        if !self.queued.load(Relaxed) {
            return;
        }
        let tokens = {
            let mut released = lock(&self.released);
            self.queued.store(false, Relaxed);
            std::mem::take(&mut *released)
        };
        for token in tokens {
            s.release_token(token);
        }
    }

    /// Carries out queued releases if the subscriber is free; if it is not, its holder does
    /// when it lets go (`Taken::drop`), so no release stays queued once nobody holds it. The
    /// caller fenced (`SeqCst`) since it queued a token or let the subscriber go.
    fn drain_if_free(&self) {
        while self.queued.load(Relaxed) {
            match self.subscriber.try_lock() {
                Ok(s) => self.drain(&s),
                Err(std::sync::TryLockError::Poisoned(p)) => self.drain(&p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => break,
            }
            // We let the subscriber go again: a releaser whose try failed meanwhile counts on
            // our next look at the flag, as on a holder's (the fence of `Taken::drop`).
            fence(SeqCst);
        }
    }

    /// Releases `token` now if the subscriber is free, else queues it for its holder.
    fn release(&self, token: SampleToken) {
        {
            let mut released = lock(&self.released);
            released.push(token);
            self.queued.store(true, Relaxed);
        }
        // Pairs with the holder's fence in `Taken::drop` (see [`Shared`]).
        fence(SeqCst);
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
        // Pairs with the releaser's fence in `Shared::release`.
        fence(SeqCst);
        self.shared.drain_if_free();
    }
}

/// The receiving side of a stream: the Python handle's. Its `try_receive_into` is a
/// [`NativePoller`] over the same core.
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeSubscriber {
    core: Arc<SubCore>,
}

impl std::ops::Deref for NativeSubscriber {
    type Target = SubCore;
    fn deref(&self) -> &SubCore {
        &self.core
    }
}

/// What a subscriber handle's native methods work on. Samples hold the subscriber itself
/// (`Shared`), not this: the subscription ends when the handle and its last sample are gone.
pub(crate) struct SubCore {
    shared: Arc<Shared>,
    frame_bytes: usize,
    header_bytes: usize,
    lossless: bool,
    variable: bool,
    /// The stream's name, for errors.
    name: String,
    /// The process that subscribed (`ProcessId` word and pid): `try_receive_into`, which is
    /// the Python handle's own method, refuses in a child it forked.
    opener: (u64, u32),
    /// Set when the Python handle is closed (its `try_receive_into` refuses from then on,
    /// even while a sample keeps the subscription).
    closed: AtomicBool,
    /// The dtype object and shape of an exact ndarray `try_receive_into` has copied a frame
    /// into: another with both is written without the buffer protocol (module `ndarray`).
    known: KnownLayout,
}

impl NativeSubscriber {
    pub(crate) fn new(subscriber: Subscriber<u8>) -> NativeSubscriber {
        let process = mmshare::ProcessId::current();
        let core = SubCore {
            name: subscriber.files().header().name.clone(),
            opener: (process.to_word(), process.pid),
            closed: AtomicBool::new(false),
            known: KnownLayout::default(),
            variable: subscriber.files().header().is_variable(),
            frame_bytes: subscriber.frame_len(),
            header_bytes: subscriber.files().header().frame_header_len(),
            lossless: subscriber.delivery() == Delivery::Lossless,
            shared: Arc::new(Shared {
                subscriber: Mutex::new(subscriber),
                released: Mutex::new(Vec::new()),
                queued: AtomicBool::new(false),
            }),
        };
        NativeSubscriber {
            core: Arc::new(core),
        }
    }
}

impl SubCore {
    /// `try_receive_into` after the handle's checks (see there). `plain`: `dst` is an exact
    /// `numpy.ndarray`, whose buffer NumPy's C code lends without running Python code.
    fn poll_into(
        &self,
        py: Python<'_>,
        dst: Bound<'_, PyAny>,
        plain: bool,
    ) -> PyResult<Option<u64>> {
        let shared = &self.shared;
        // The look, with the subscriber let go again before the destination is borrowed
        // (which may run Python code, and that code may use this subscriber); but for a
        // plain ndarray, one take does the look, the borrow and the copy.
        if !self.variable
            && let Some(s) = shared.try_take()
        {
            match s.has_new() {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                Err(e) => return Err(error(py, e)),
            }
            if plain && self.frame_bytes < DETACH_FROM {
                // An exact ndarray of a dtype object and shape taken before is read as it is
                // (module `ndarray`): the GIL is kept until the copy is done.
                // SAFETY: `plain`: `dst` is an exact ndarray.
                if let Some(to) = unsafe { self.known.address(&dst, true) } {
                    let got = copy_next(&s, to, self.frame_bytes);
                    drop(s);
                    return copied(py, got);
                }
                // NumPy lends an exact ndarray's buffer without running Python code, and
                // nothing here makes a Python object while the subscriber is taken (making
                // one may run the garbage collector, and a finalizer may want this
                // subscriber). A buffer that does not fit goes the general way below, which
                // says what is wrong with it.
                if let Some(lent) = Bytes::borrow_quietly(&dst, self.frame_bytes, true) {
                    // SAFETY: as above; the buffer is C-contiguous, writable, of the frame's
                    // bytes. Remembering makes no Python object.
                    unsafe { self.known.remember(&dst, lent.format()) };
                    let got = copy_next(&s, lent.address(), lent.len());
                    drop(s);
                    return copied(py, got);
                }
                drop(s);
                drop(PyErr::take(py));
            }
        }
        let dst = self.destination(py, &dst)?;
        let (to, len) = (dst.address(), dst.len());
        let copy = move |s: &Subscriber<u8>| copy_next(s, to, len);
        let got = match shared.try_take() {
            Some(s) if len < DETACH_FROM => copy(&s),
            busy_or_big => {
                drop(busy_or_big);
                py.detach(|| copy(&shared.take()))
            }
        };
        copied(py, got)
    }

    /// The frame's bytes as a destination for a copy out: `dst` borrowed (C-contiguous,
    /// writable, exactly the frame's bytes). Only fixed-size frames: a variable-size frame
    /// has its own length, which a copy into a fixed buffer would not tell.
    fn destination(&self, py: Python<'_>, dst: &Bound<'_, PyAny>) -> PyResult<Bytes> {
        if self.variable {
            return Err(errors::with_message(
                py,
                "MmshareError",
                "receive_into takes fixed-size frames only: this stream's frames vary in \
                 length (use receive(), whose sample has the frame's rows)"
                    .to_owned(),
            ));
        }
        Bytes::borrow(dst, self.frame_bytes, true, "destination")
    }

    fn sample(&self, (token, address, header_address): Held) -> NativeSample {
        NativeSample {
            lane: token.lane(),
            publisher: token.publisher().map(publisher_tuple),
            number: token.number(),
            missed_before: token.missed_before(),
            published_ns: token.published_ns(),
            rows: token.rows(),
            address,
            header_address,
            pid: std::process::id(),
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

/// A failed receive as Python sees it: a timeout says how long it waited and which frame it
/// waited for.
fn receive_error(py: Python<'_>, e: StreamError, limit: std::time::Duration) -> PyErr {
    match e {
        StreamError::ReceiveTimeout { next, .. } => errors::with_message(
            py,
            "Timeout",
            format!(
                "no frame within {} (next expected frame {next})",
                seconds_text(limit)
            ),
        ),
        e => error(py, e),
    }
}

/// Takes the next frame of `s` if there is one, copies its `len` bytes to `to` and releases
/// it; its number, and whether the copy is the frame's (`copy_out`).
fn copy_next(
    s: &Subscriber<u8>,
    to: usize,
    len: usize,
) -> Result<Option<(u64, bool)>, StreamError> {
    Ok(s.receive()?.map(|sample| {
        // SAFETY: `to` is the start of the caller's borrowed, writable `len`-byte buffer,
        // kept alive (borrowed) for the whole call that reaches here.
        let intact = unsafe { copy_out(&sample, to, len) };
        (sample.number(), intact)
    }))
}

/// Copies a held sample's bytes (a fixed-size frame: exactly `len` bytes, which
/// `NativeSubscriber::destination` made sure of) to `to`; whether the slot still held the
/// frame when the copy ended (`Sample::is_intact`: false only if someone erased the hold in
/// the control file and the publisher reused the slot meanwhile).
///
/// # Safety
/// `to` is valid for writes of `len` bytes for the call, does not overlap the mapping, and
/// nothing else reads or writes it during the call (another Python thread may run while the
/// copy runs with the GIL released: using the destination meanwhile is that program's race).
unsafe fn copy_out(sample: &mmshare::Sample<'_, u8>, to: usize, len: usize) -> bool {
    assert_eq!(
        sample.len(),
        len,
        "a fixed-size frame is the destination's size"
    );
    // An empty frame: nothing to copy, and an exporter may lend a null address for 0 bytes
    // (a slice may not have one).
    if len > 0 {
        // SAFETY: `to` as the caller promises (non-null: `len` > 0 bytes are writable there).
        sample.copy_to(unsafe { std::slice::from_raw_parts_mut(to as *mut u8, len) });
    }
    sample.is_intact()
}

/// What a poll's copy out (`copy_next`) gives Python: the frame's number, None, or the error.
fn copied(py: Python<'_>, got: Result<Option<(u64, bool)>, StreamError>) -> PyResult<Option<u64>> {
    match got {
        Ok(Some((number, intact))) => intact_or_error(py, number, intact).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(error(py, e)),
    }
}

/// The number of a frame copied out, or the error that its copy is not the frame's.
fn intact_or_error(py: Python<'_>, number: u64, intact: bool) -> PyResult<u64> {
    if intact {
        return Ok(number);
    }
    Err(errors::with_message(
        py,
        "MmshareError",
        format!(
            "frame {number} was overwritten while it was copied: this subscriber's hold was \
             erased in the stream's control file and the publisher reused the slot; the \
             destination holds bytes of a newer frame"
        ),
    ))
}

/// A detached sample: its token, its frame's address and its header's (0 if none).
type Held = (SampleToken, usize, usize);

/// Takes a sample with `how` and detaches it.
fn detached(
    shared: &Shared,
    how: impl FnOnce(&Subscriber<u8>) -> Result<Option<mmshare::Sample<'_, u8>>, StreamError>,
) -> Result<Option<Held>, StreamError> {
    taken(&shared.take(), how)
}

/// `how` on a subscriber already taken; the sample detached.
fn taken(
    s: &Taken<'_>,
    how: impl FnOnce(&Subscriber<u8>) -> Result<Option<mmshare::Sample<'_, u8>>, StreamError>,
) -> Result<Option<Held>, StreamError> {
    Ok(how(s)?.map(|sample| {
        let token = sample.into_token();
        let address = s.frame_ptr(&token) as usize;
        let header = s.header_ptr(&token).map_or(0, |h| h as usize);
        (token, address, header)
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

    /// Marks the handle closed: `try_receive_into` refuses from now on (the subscription
    /// itself ends when this object goes).
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Bytes of each frame's header (0 when frames carry none).
    #[getter]
    fn header_bytes(&self) -> usize {
        self.header_bytes
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
            Ok(Some(held)) => Ok(self.sample(held)),
            Ok(None) => unreachable!("receive_timeout returns a sample or an error"),
            Err(e) => Err(receive_error(py, e, limit)),
        }
    }

    /// The next frame if there is one; otherwise `None`, with `wait` registered so that its
    /// notifier is told when a publish may have brought one (asyncio's `areceive`).
    fn poll_receive(&self, py: Python<'_>, wait: &NativeWait) -> PyResult<Option<NativeSample>> {
        let shared = &self.shared;
        let got = py.detach(|| {
            let s = shared.take();
            wait.with(|w, waker| match s.poll_receive_token(w, waker) {
                Poll::Pending => Ok(None),
                Poll::Ready(Ok(token)) => {
                    let address = s.frame_ptr(&token) as usize;
                    let header = s.header_ptr(&token).map_or(0, |h| h as usize);
                    Ok(Some((token, address, header)))
                }
                Poll::Ready(Err(e)) => Err(e),
            })
        });
        got.map(|got| got.map(|held| self.sample(held)))
            .map_err(|e| error(py, e))
    }

    /// Ends a wait of `poll_receive` (a cancelled `areceive`): nothing taken, nothing left
    /// registered or counted.
    fn end_wait(&self, wait: &NativeWait) {
        if wait.foreign() {
            return; // a forked child's copy: the count is the parent's
        }
        self.with(|s| wait.with(|w, _| s.end_wait(w)));
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
        got.map(|got| got.map(|held| self.sample(held)))
            .map_err(|e| error(py, e))
    }

    /// Copies the next frame into `dst` (a C-contiguous writable buffer of exactly the
    /// frame's bytes) and releases it at once; returns its number, or None when none is
    /// there. Never waits for a frame. No sample object: for a caller that polls and wants a
    /// copy, this is one call per frame, with the GIL kept for frames below 64 KiB.
    ///
    /// A poll that finds nothing (most calls of a polling loop) returns before the
    /// destination's buffer is borrowed: `dst` is checked whenever a frame is there for it
    /// (a lost or evicted subscription is still reported at once).
    fn try_receive_into(&self, py: Python<'_>, dst: Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        usable(py, "subscriber", &self.name, self.opener, &self.closed)?;
        self.poll_into(py, dst, false)
    }

    /// The handle's `try_receive_into` ([`NativePoller`]); `ndarray` is `numpy.ndarray`.
    fn poller(&self, ndarray: Bound<'_, pyo3::types::PyType>) -> PyResult<NativePoller> {
        crate::ndarray::check_ndarray(&ndarray)?;
        Ok(NativePoller {
            core: Arc::clone(&self.core),
            ndarray: ndarray.unbind(),
        })
    }

    /// Copies the next frame into `dst` as `try_receive_into` does, waiting up to `timeout`
    /// for it as `receive` does (GIL released, interruptible); returns its number.
    fn receive_into(
        &self,
        py: Python<'_>,
        dst: Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let dst = self.destination(py, &dst)?;
        let (to, len) = (dst.address(), dst.len());
        let limit = duration(timeout)?;
        let shared = &self.shared;
        let got = sliced(
            py,
            limit,
            |slice| {
                let s = shared.take();
                let sample = s.receive_timeout(slice)?;
                // SAFETY: as in `copy_next`.
                let intact = unsafe { copy_out(&sample, to, len) };
                Ok((sample.number(), intact))
            },
            |e| matches!(e, StreamError::ReceiveTimeout { .. }),
        )?;
        match got {
            Ok((number, intact)) => intact_or_error(py, number, intact),
            Err(e) => Err(receive_error(py, e, limit)),
        }
    }

    /// The newest frame (None before the first, or when it was taken and its slot reused:
    /// `Subscriber::latest`), skipping older ones (counted as missed).
    fn latest(&self, py: Python<'_>) -> PyResult<Option<NativeSample>> {
        let shared = &self.shared;
        py.detach(|| detached(shared, Subscriber::latest))
            .map(|got| got.map(|held| self.sample(held)))
            .map_err(|e| error(py, e))
    }
}

/// A subscriber handle's `try_receive_into`: what the Python handle's attribute is bound to,
/// so that a polling loop runs no Python code. Like any bound method it keeps what it works on
/// alive; once the handle is closed it refuses.
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativePoller {
    core: Arc<SubCore>,
    /// `numpy.ndarray`: an exact one is borrowed with the subscriber taken (`poll_into`).
    ndarray: Py<pyo3::types::PyType>,
}

#[pymethods]
impl NativePoller {
    /// `Subscriber.try_receive_into` (its documentation is there).
    fn try_receive_into(&self, py: Python<'_>, dst: Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        let core = &*self.core;
        usable(py, "subscriber", &core.name, core.opener, &core.closed)?;
        let plain = dst.get_type().is(self.ndarray.bind(py));
        core.poll_into(py, dst, plain)
    }
}

/// A held frame. Its hold is released when this object goes (or by `release`, which the
/// Python layer calls only once no view of the frame is left).
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeSample {
    shared: Arc<Shared>,
    token: Mutex<Option<SampleToken>>,
    lane: usize,
    publisher: Option<PublisherTuple>,
    number: u64,
    missed_before: u64,
    published_ns: u64,
    rows: u64,
    address: usize,
    header_address: usize,
    /// The process that took it: a child `fork()` made inherits the object but not the hold
    /// (the hold is the parent's: releasing it from the child would free a slot the parent
    /// still reads).
    pid: u32,
}

#[pymethods]
impl NativeSample {
    /// The rows the frame has.
    #[getter]
    fn rows(&self) -> u64 {
        self.rows
    }

    /// Address of the frame's header (0 when frames carry none; read-only, valid while held).
    #[getter]
    fn header_address(&self) -> usize {
        self.header_address
    }

    #[getter]
    fn number(&self) -> u64 {
        self.number
    }

    /// The lane (publisher ring) it came from.
    #[getter]
    fn lane(&self) -> usize {
        self.lane
    }

    /// Who published it, `(id, lane, attach, pid)`, for a stream of several publishers.
    #[getter]
    fn publisher(&self) -> Option<PublisherTuple> {
        self.publisher
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

    /// Lets go of the hold (nothing if already let go, or in a forked child: the hold is the
    /// parent's). Never waits for the subscriber.
    fn release(&self) {
        let token = lock(&self.token).take();
        if let Some(token) = token
            && std::process::id() == self.pid
        {
            self.shared.release(token);
        }
    }
}

impl Drop for NativeSample {
    fn drop(&mut self) {
        self.release();
    }
}
