//! `mmshare._native`: the Python package's core, over mmshare-lib.
//!
//! The seqlock, the request protocol, crash recovery and (later) the stream slot protocol run
//! here, in the same Rust code the Rust API uses; the Python modules beside it (`mmshare/`)
//! only shape the API (context managers, NumPy views, dataclasses). Nothing here is public API:
//! the Python package is.
//!
//! Memory is handed to NumPy without copies through `__array_interface__` (see
//! `mmshare/array.py`): this module gives out the address and length of a mapping, and the
//! Python object that carries the interface keeps the native object that owns the mapping
//! alive, so a view can never outlive its pages. Every wait and every copy made by Rust runs
//! with the GIL released.

mod aio;
mod array;
mod client;
mod errors;
mod ndarray;
mod service;
mod stream;
mod watch;

use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// The longest stretch a wait runs without looking at pending signals: between slices, a
/// Ctrl-C (KeyboardInterrupt) or another Python signal handler gets to run.
const SLICE: Duration = Duration::from_millis(100);

/// Runs `attempt(slice)` with the GIL released, slice after slice, until it gives something
/// other than a timeout (`is_timeout`) or `timeout` has passed; handles pending signals between
/// slices, so a long wait can be interrupted. Returns the last outcome.
pub(crate) fn sliced<R: Send, E: Send>(
    py: Python<'_>,
    timeout: Duration,
    mut attempt: impl FnMut(Duration) -> Result<R, E> + Send,
    is_timeout: impl Fn(&E) -> bool,
) -> PyResult<Result<R, E>> {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let got = py.detach(|| attempt(left.min(SLICE)));
        match got {
            Err(e) if is_timeout(&e) && start.elapsed() < timeout => {
                py.check_signals()?;
                // Let another thread waiting for the same handle's lock take it first.
                std::thread::yield_now();
            }
            other => return Ok(other),
        }
    }
}

/// `0.25 s`, `10 s`: a timeout for messages.
/// A C-contiguous buffer of exactly `len` bytes, borrowed through the buffer protocol (any
/// exporter: a NumPy array of any dtype, `bytes`, `bytearray`, `memoryview`) and released when
/// this goes, which happens with the GIL held: callers keep it on their own stack and hand only
/// its address to code that runs with the GIL released.
pub(crate) struct Bytes(Box<pyo3::ffi::Py_buffer>);

impl Bytes {
    /// Borrows `obj`'s buffer: C-contiguous, of `len` bytes, writable if `writable`. `what`
    /// names it in errors ("source", "destination").
    pub(crate) fn borrow(
        obj: &Bound<'_, PyAny>,
        len: usize,
        writable: bool,
        what: &str,
    ) -> PyResult<Bytes> {
        // The wanted length is formatted only for an error: this runs on every send.
        Self::borrow_where(obj, writable, what, &|| format!("of {len} bytes"), |got| {
            got == len
        })
    }

    /// Borrows `obj`'s buffer as `borrow` does, of any length `fits` accepts (`wanted_len`
    /// says which, for the error).
    pub(crate) fn borrow_where(
        obj: &Bound<'_, PyAny>,
        writable: bool,
        what: &str,
        wanted_len: &dyn Fn() -> String,
        fits: impl Fn(usize) -> bool,
    ) -> PyResult<Bytes> {
        use pyo3::ffi;
        let wanted = || {
            format!(
                "the {what} must be a C-contiguous{} buffer {}",
                if writable { ", writable" } else { "" },
                wanted_len()
            )
        };
        let mut view = Box::new(std::mem::MaybeUninit::<ffi::Py_buffer>::zeroed());
        let flags = ffi::PyBUF_C_CONTIGUOUS
            | ffi::PyBUF_FORMAT
            | if writable { ffi::PyBUF_WRITABLE } else { 0 };
        // SAFETY: `obj` is a live object (we hold the GIL through its `Bound`), `view` is
        // writable memory for one `Py_buffer`, and the flags are the API's own constants.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) } != 0 {
            let cause = PyErr::fetch(obj.py());
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "{}: {cause}",
                wanted()
            )));
        }
        // SAFETY: `PyObject_GetBuffer` succeeded, so it filled `view` in.
        let bytes = Bytes(unsafe { Box::from_raw(Box::into_raw(view).cast::<ffi::Py_buffer>()) });
        let got = bytes.len();
        if !fits(got) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "{} (got {got} bytes)",
                wanted()
            )));
        }
        if bytes.holds_objects() {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "the {what} must hold plain data, not Python objects (its buffer format is {:?})",
                bytes.format()
            )));
        }
        Ok(bytes)
    }

    /// Borrows `obj`'s buffer as `borrow` does, or `None` when it cannot, making no Python
    /// object either way: for a caller that holds a lock Python code could want. After a
    /// `None` the Python error indicator may be set: the caller clears it (`PyErr::take`)
    /// once it has let go of the lock.
    pub(crate) fn borrow_quietly(
        obj: &Bound<'_, PyAny>,
        len: usize,
        writable: bool,
    ) -> Option<Bytes> {
        use pyo3::ffi;
        let mut view = Box::new(std::mem::MaybeUninit::<ffi::Py_buffer>::zeroed());
        let flags = ffi::PyBUF_C_CONTIGUOUS
            | ffi::PyBUF_FORMAT
            | if writable { ffi::PyBUF_WRITABLE } else { 0 };
        // SAFETY: as in `borrow_where`.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) } != 0 {
            return None;
        }
        // SAFETY: `PyObject_GetBuffer` succeeded, so it filled `view` in.
        let bytes = Bytes(unsafe { Box::from_raw(Box::into_raw(view).cast::<ffi::Py_buffer>()) });
        (bytes.len() == len && !bytes.holds_objects()).then_some(bytes)
    }

    /// Borrows `obj`'s buffer, C-contiguous, with its item format and shape, or `None` when it
    /// exports none that way (the Python error is cleared): the first look of a fast path
    /// that falls back to the general one.
    pub(crate) fn borrow_described(obj: &Bound<'_, PyAny>) -> Option<Bytes> {
        use pyo3::ffi;
        let mut view = Box::new(std::mem::MaybeUninit::<ffi::Py_buffer>::zeroed());
        let flags = ffi::PyBUF_C_CONTIGUOUS | ffi::PyBUF_FORMAT;
        // SAFETY: as in `borrow_where`.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) } != 0 {
            drop(PyErr::take(obj.py()));
            return None;
        }
        // SAFETY: `PyObject_GetBuffer` succeeded, so it filled `view` in.
        Some(Bytes(unsafe {
            Box::from_raw(Box::into_raw(view).cast::<ffi::Py_buffer>())
        }))
    }

    /// The item format (`struct` syntax; "B" when the exporter gave none).
    pub(crate) fn format(&self) -> &std::ffi::CStr {
        if self.0.format.is_null() {
            c"B"
        } else {
            // SAFETY: a non-null format of a filled view is a NUL-terminated string that
            // lives as long as the view.
            unsafe { std::ffi::CStr::from_ptr(self.0.format) }
        }
    }

    /// Whether the items hold Python objects (an `O` in the format, outside field names): an
    /// array of references, whose bytes are no frame's and must never be overwritten by one.
    pub(crate) fn holds_objects(&self) -> bool {
        let mut in_name = false;
        self.format().to_bytes().iter().any(|&c| {
            if c == b':' {
                in_name = !in_name;
            }
            !in_name && c == b'O'
        })
    }

    /// The shape (one entry per dimension; a 0-d buffer has none).
    pub(crate) fn shape(&self) -> &[isize] {
        let ndim = usize::try_from(self.0.ndim).unwrap_or(0);
        if ndim == 0 || self.0.shape.is_null() {
            return &[];
        }
        // SAFETY: a view filled with PyBUF_ND has `ndim` shape entries, living as long as it.
        unsafe { std::slice::from_raw_parts(self.0.shape, ndim) }
    }

    /// The first byte; valid for `len` bytes while this lives.
    pub(crate) fn address(&self) -> usize {
        self.0.buf as usize
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        usize::try_from(self.0.len).unwrap_or(0)
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful `PyObject_GetBuffer` and is released
        // once, here; `Bytes` is not `Send` (it holds raw pointers), so this runs on the thread
        // that borrowed it, which holds the GIL whenever one of its `Bytes` goes (see above).
        unsafe { pyo3::ffi::PyBuffer_Release(&mut *self.0) };
    }
}

pub(crate) fn seconds_text(d: Duration) -> String {
    format!("{} s", (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// A timeout from Python: seconds (`None`: as good as forever).
pub(crate) fn duration(seconds: Option<f64>) -> PyResult<Duration> {
    match seconds {
        None => Ok(Duration::from_secs(u64::from(u32::MAX))),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s.min(1e9))),
        Some(s) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be a number of seconds >= 0 or None, not {s}"
        ))),
    }
}

/// `gil_used`: the per-frame fast paths rely on the GIL (module `ndarray`), so a free-threaded
/// Python turns it on for this module.
#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Connection>()?;
    m.add_class::<array::NativeArray>()?;
    m.add_class::<array::WriteToken>()?;
    m.add_class::<stream::NativePublisher>()?;
    m.add_class::<stream::NativeSender>()?;
    m.add_class::<stream::NativePoller>()?;
    m.add_class::<stream::NativeLoan>()?;
    m.add_class::<stream::NativeSubscriber>()?;
    m.add_class::<stream::NativeSample>()?;
    m.add_class::<service::NativeRequester>()?;
    m.add_class::<service::NativeResponse>()?;
    m.add_class::<service::NativeServer>()?;
    m.add_class::<service::NativeRequest>()?;
    m.add_class::<watch::NativeWatch>()?;
    m.add_class::<aio::Notifier>()?;
    m.add_class::<aio::NativeWait>()?;
    m.add_class::<client::PendingWaitFor>()?;
    m.add(
        "PROTOCOL_VERSION",
        mmshare::internal::proto::PROTOCOL_VERSION,
    )?;
    m.add_function(wrap_pyfunction!(client::default_socket_path, m)?)?;
    Ok(())
}
