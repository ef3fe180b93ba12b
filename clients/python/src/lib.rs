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

mod array;
mod client;
mod errors;
mod stream;

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

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Connection>()?;
    m.add_class::<array::NativeArray>()?;
    m.add_class::<array::WriteToken>()?;
    m.add_class::<stream::NativePublisher>()?;
    m.add_class::<stream::NativeLoan>()?;
    m.add_class::<stream::NativeSubscriber>()?;
    m.add_class::<stream::NativeSample>()?;
    m.add("PROTOCOL_VERSION", mmshare::proto::PROTOCOL_VERSION)?;
    m.add_function(wrap_pyfunction!(client::default_socket_path, m)?)?;
    Ok(())
}
