//! `NativeArray`: a mapped array (mmshare-lib's `RawArray`, through the daemon) and the
//! seqlock operations on it; `WriteToken`: a write side held across Python statements.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mmshare::{Finish, RawArray, ReadError, Shared, WriteSession};
use pyo3::prelude::*;

use crate::{Bytes, duration, errors, sliced};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A read timeout that reports the whole wait, not its last slice.
fn total_wait(e: ReadError, started: std::time::Instant) -> ReadError {
    match e {
        ReadError::Timeout {
            sequence,
            retries,
            writer,
            ..
        } => ReadError::Timeout {
            waited: started.elapsed(),
            sequence,
            retries,
            writer,
        },
        other => other,
    }
}

/// A mapped array. The mapping lives as long as this object does; NumPy views of it hold a
/// reference to it (through their `base`), so `close()` only refuses further operations.
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeArray {
    array: Arc<Shared<RawArray>>,
    closed: AtomicBool,
}

impl NativeArray {
    pub(crate) fn new(mut shared: Shared<RawArray>) -> NativeArray {
        // Torn data is reported per call (`allow_torn`), so the handle itself accepts it.
        shared.handle_mut().set_accept_torn(true);
        NativeArray {
            array: Arc::new(shared),
            closed: AtomicBool::new(false),
        }
    }

    fn name(&self) -> &str {
        &self.array.header().name
    }

    fn live(&self, py: Python<'_>) -> PyResult<&RawArray> {
        if self.closed.load(Ordering::Relaxed) {
            Err(errors::with_message(
                py,
                "MmshareError",
                format!("array {} is closed", self.name()),
            ))
        } else {
            Ok(&self.array)
        }
    }
}

#[pymethods]
impl NativeArray {
    /// Address of the first data byte in this process (for `__array_interface__`).
    #[getter]
    fn data_address(&self) -> usize {
        self.array.data_ptr() as usize
    }

    /// Data length in bytes.
    #[getter]
    fn data_len(&self) -> u64 {
        self.array.header().data_len
    }

    /// Whether the mapping is writable (opened "r+" or created).
    #[getter]
    fn writable(&self) -> bool {
        self.array.access() == mmshare::Access::Write
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// The seqlock sequence (odd while a write is in progress).
    #[getter]
    fn sequence(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.live(py)?.sequence())
    }

    #[getter]
    fn version(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.live(py)?.version())
    }

    #[getter]
    fn torn(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.live(py)?.is_torn())
    }

    /// The version if one newer than `newer_than` is published; otherwise `None`, with `wait`
    /// registered so that its notifier is told when a write may have published one (asyncio's
    /// `await_version`).
    fn poll_changed(
        &self,
        py: Python<'_>,
        newer_than: u64,
        wait: &crate::aio::NativeWait,
    ) -> PyResult<Option<u64>> {
        let a = self.live(py)?;
        Ok(
            wait.with(|w, waker| match a.poll_changed(newer_than, w, waker) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            }),
        )
    }

    /// Ends a wait of `poll_changed` (a cancelled await): nothing stays registered or counted.
    fn end_wait(&self, wait: &crate::aio::NativeWait) {
        if wait.foreign() {
            return; // a forked child's copy: the count is the parent's
        }
        wait.with(|w, _| self.array.end_wait(w));
    }

    /// Copies that a concurrent write invalidated, so far.
    #[getter]
    fn retries(&self) -> u64 {
        self.array.retries()
    }

    /// A consistent copy of the whole data area into `dst`, a C-contiguous, writable buffer
    /// of `data_len` bytes (an ndarray of any dtype, a `bytearray`, ...), copied with the GIL
    /// released; returns the version it holds. `fresh`: `dst` was just allocated for this
    /// copy and never touched (`RawArray::read_bytes_fresh`).
    #[pyo3(signature = (dst, timeout, allow_torn, fresh=false))]
    fn read_into(
        &self,
        py: Python<'_>,
        dst: Bound<'_, PyAny>,
        timeout: Option<f64>,
        allow_torn: bool,
        fresh: bool,
    ) -> PyResult<u64> {
        let array = self.live(py)?;
        let timeout = duration(timeout)?;
        let len = usize::try_from(array.header().data_len).expect("mapped, so it fits");
        let dst = Bytes::borrow(&dst, len, true, "destination")?;
        let address = dst.address();
        let started = std::time::Instant::now();
        let got = sliced(
            py,
            timeout,
            |slice| {
                // SAFETY: `address` is the start of `dst`'s own `len`-byte writable buffer,
                // borrowed (so kept allocated) while this call holds `dst`. Another
                // thread writing into it meanwhile would only spoil its own copy.
                let buf = unsafe { std::slice::from_raw_parts_mut(address as *mut u8, len) };
                array.with_timeout(slice, || {
                    if fresh {
                        array.read_bytes_fresh(0, buf)
                    } else {
                        array.read_bytes(0, buf)
                    }
                })
            },
            |e| matches!(e, ReadError::Timeout { .. }),
        )?
        .map_err(|e| total_wait(e, started));
        match got {
            Ok(snapshot) if snapshot.torn && !allow_torn => {
                Err(errors::raise(py, "Torn", (snapshot.version,)))
            }
            Ok(snapshot) => Ok(snapshot.version),
            Err(e) => Err(errors::read(py, self.name(), e)),
        }
    }

    /// Runs `attempt()` (which copies out of the live pages, for example NumPy applying an
    /// index) inside the seqlock read protocol, until a copy validates; returns that copy.
    /// An exception from an attempt that a write overlapped is thrown away with its copy.
    /// `span`, the data bytes `(start, end)` the attempt reads (a basic index's view), lets a
    /// striped array validate only their stripes.
    #[pyo3(signature = (attempt, timeout, allow_torn, span=None))]
    fn read_with(
        &self,
        py: Python<'_>,
        attempt: Bound<'_, PyAny>,
        timeout: Option<f64>,
        allow_torn: bool,
        span: Option<(u64, u64)>,
    ) -> PyResult<Py<PyAny>> {
        let array = self.live(py)?;
        let timeout = duration(timeout)?;
        let attempt = attempt.unbind();
        // The GIL is released while the protocol waits for a write to end, and taken for each
        // attempt only: the writer may be another thread of this process.
        let started = std::time::Instant::now();
        // A KeyboardInterrupt (or SystemExit) raised inside an attempt is not an error of the
        // copy: it is kept, even if that copy is thrown away, and raised once the read ends.
        let interrupt: Mutex<Option<PyErr>> = Mutex::new(None);
        let got = sliced(
            py,
            timeout,
            |slice| {
                let bytes = span.map_or(0..array.header().data_len, |(a, b)| a..b);
                // SAFETY: `attempt` only reads the data area (through NumPy views of it),
                // inside `span` when one is given (the caller's view of those bytes), and
                // its result is used only after `read_raw_span` validated it; a copy that
                // overlapped a write, and any exception it raised, is dropped and the attempt
                // made again.
                array.with_timeout(slice, || unsafe {
                    array.read_raw_span(bytes.clone(), |_| {
                        Python::attach(|py| {
                            if lock(&interrupt).is_some() {
                                return Ok(py.None());
                            }
                            let got = attempt.bind(py).call0().map(Bound::unbind);
                            if let Err(e) = &got
                                && !e.is_instance_of::<pyo3::exceptions::PyException>(py)
                            {
                                *lock(&interrupt) = Some(e.clone_ref(py));
                            }
                            got
                        })
                    })
                })
            },
            |e| matches!(e, ReadError::Timeout { .. }),
        )?
        .map_err(|e| total_wait(e, started));
        if let Some(e) = lock(&interrupt).take() {
            return Err(e);
        }
        match got {
            Ok((_, snapshot)) if snapshot.torn && !allow_torn => {
                Err(errors::raise(py, "Torn", (snapshot.version,)))
            }
            Ok((value, _)) => value,
            Err(e) => Err(errors::read(py, self.name(), e)),
        }
    }

    /// Waits (GIL released, asleep on the shared futex) for a version newer than
    /// `newer_than`; returns it.
    fn wait(&self, py: Python<'_>, newer_than: u64, timeout: Option<f64>) -> PyResult<u64> {
        let array = self.live(py)?;
        let limit = duration(timeout)?;
        let started = std::time::Instant::now();
        sliced(
            py,
            limit,
            |slice| array.wait_for_version(newer_than, slice),
            |_| true,
        )?
        .map_err(|mut e| {
            e.waited = started.elapsed();
            errors::wait(py, self.name(), &e)
        })
    }

    /// The stamp of the data bytes `(start, end)` (a basic index's view): grows with every
    /// publish of their stripes (of the array, with one lock).
    fn span_stamp(&self, py: Python<'_>, span: (u64, u64)) -> PyResult<u64> {
        Ok(self.live(py)?.span_stamp(span.0..span.1))
    }

    /// Waits (GIL released, asleep on the shared futex) until the stamp of the data bytes
    /// `span` is above `newer_than`; returns it. Writes elsewhere wake the wait, not end it.
    fn wait_span(
        &self,
        py: Python<'_>,
        span: (u64, u64),
        newer_than: u64,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let array = self.live(py)?;
        let limit = duration(timeout)?;
        let started = std::time::Instant::now();
        sliced(
            py,
            limit,
            |slice| array.wait_for_span(span.0..span.1, newer_than, slice),
            |_| true,
        )?
        .map_err(|mut e| {
            e.waited = started.elapsed();
            errors::wait(py, self.name(), &e)
        })
    }

    /// Takes the write side (waiting with the GIL released); the token publishes. `span`, the
    /// data bytes `(start, end)` the write may store into (a basic index's view), makes a
    /// striped array take only their stripes; `contiguous` says the view covers all of them.
    #[pyo3(signature = (timeout, durable=false, span=None, contiguous=true))]
    fn begin_write(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        durable: bool,
        span: Option<(u64, u64)>,
        contiguous: bool,
    ) -> PyResult<WriteToken> {
        let array = self.live(py)?;
        let timeout = duration(timeout)?;
        // Not sliced: the wait for a recovery's claim on the writer word inside it decides
        // "lost" by the timeout, so it must see the whole of it.
        let session = py
            .detach(|| {
                array.with_timeout(timeout, || match span {
                    Some((a, b)) => array.begin_write_span(a..b, contiguous, durable),
                    None if durable => array.begin_write_durable(),
                    None => array.begin_write(),
                })
            })
            .map_err(|e| errors::write(py, self.name(), e))?;
        Ok(WriteToken {
            array: Arc::clone(&self.array),
            session: std::sync::Mutex::new(Some(session)),
            started: AtomicBool::new(false),
            timeout,
            pid: std::process::id(),
        })
    }

    /// Writes dirty pages to the file (msync); nothing for read-only handles.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let array = self.live(py)?;
        if array.access() == mmshare::Access::Write {
            py.detach(|| array.flush())
                .map_err(|e| errors::with_message(py, "MmshareError", e.to_string()))?;
        }
        Ok(())
    }

    /// Refuses every further operation. The pages stay mapped while views of them exist.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// The write side of an array, held from `NativeArray.begin_write` to `finish`.
///
/// If the token is dropped unfinished, the write is published anyway, so the write side is
/// never left held by a live process: as an untouched, complete write if the body never ran
/// (an interrupt between `begin_write` returning and the caller keeping the token), as TORN
/// once the caller said it `started`.
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct WriteToken {
    array: Arc<Shared<RawArray>>,
    session: std::sync::Mutex<Option<WriteSession>>,
    /// The caller said the body may have written (`started`): an unfinished token then
    /// publishes TORN, not an untouched write.
    started: AtomicBool,
    timeout: Duration,
    /// The writing process: a forked child's copy never finishes the parent's write.
    pid: u32,
}

impl WriteToken {
    fn take(&self) -> Option<WriteSession> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

#[pymethods]
impl WriteToken {
    /// The version this write publishes.
    #[getter]
    fn version(&self) -> Option<u64> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(WriteSession::version)
    }

    /// Marks that the write's body is about to run (from here on the data may be changed):
    /// a token dropped unfinished after this publishes TORN.
    fn started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// Publishes: `how` is "complete", "repair" (every byte replaced: clears TORN) or "torn"
    /// (the body failed). Returns the version; raises `LostWriteSide` if a recovery took the
    /// write side over meanwhile. A second call does nothing and returns None.
    fn finish(&self, py: Python<'_>, how: &str) -> PyResult<Option<u64>> {
        let how = match how {
            "complete" => Finish::Complete,
            "repair" => Finish::Repair,
            "torn" => Finish::Torn,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "how must be 'complete', 'repair' or 'torn', not {other:?}"
                )));
            }
        };
        let Some(session) = self.take() else {
            return Ok(None);
        };
        let array = &self.array;
        py.detach(|| array.with_timeout(self.timeout, || array.finish_write(session, how)))
            .map(Some)
            .map_err(|e| errors::write(py, &array.header().name, e))
    }
}

impl Drop for WriteToken {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // Inherited through fork(): the write is the parent's to finish (a session that is
            // not finished publishes nothing).
            let _ = self.take();
            return;
        }
        if let Some(session) = self.take() {
            let how = if self.started.load(Ordering::Relaxed) {
                Finish::Torn
            } else {
                Finish::Complete
            };
            let (array, timeout) = (&self.array, self.timeout);
            // Publishing may wait (for a recovery's claim to resolve): without the GIL.
            Python::attach(|py| {
                py.detach(|| {
                    let _ = array.with_timeout(timeout, || array.finish_write(session, how));
                });
            });
        }
    }
}
