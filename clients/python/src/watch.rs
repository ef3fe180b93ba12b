//! `NativeWatch`: a watch of the daemon's objects (`Client.watch`), read with the GIL released.

use std::sync::Mutex;
use std::time::Duration;

use mmshare::{Watch, WatchEvent};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors;

/// The events of one watch, as `(kind, fields)`: "ready", "created" (`name`, `stream`),
/// "deleted" (`name`), "subscribers" (`name`, `count`), "lost" (`events`).
#[pyclass(frozen, module = "mmshare._native")]
#[derive(Debug)]
pub struct NativeWatch {
    watch: Mutex<Option<Watch>>,
}

impl NativeWatch {
    pub(crate) fn new(watch: Watch) -> NativeWatch {
        NativeWatch {
            watch: Mutex::new(Some(watch)),
        }
    }
}

fn event<'py>(py: Python<'py>, e: WatchEvent) -> PyResult<(&'static str, Bound<'py, PyDict>)> {
    let d = PyDict::new(py);
    let kind = match e {
        WatchEvent::Created { name, stream } => {
            d.set_item("name", name)?;
            d.set_item("kind", if stream { "stream" } else { "array" })?;
            "created"
        }
        WatchEvent::Deleted { name } => {
            d.set_item("name", name)?;
            "deleted"
        }
        WatchEvent::Subscribers { name, count } => {
            d.set_item("name", name)?;
            d.set_item("count", count)?;
            "subscribers"
        }
        WatchEvent::Lost { events } => {
            d.set_item("events", events)?;
            "lost"
        }
        WatchEvent::Ready => "ready",
        _ => "unknown",
    };
    Ok((kind, d))
}

#[pymethods]
impl NativeWatch {
    /// The next event, waiting up to `timeout` seconds in 100 ms slices (between which
    /// pending signals run); None when none came, or once the watch is closed.
    fn next<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<(&'static str, Bound<'py, PyDict>)>> {
        let limit = crate::duration(timeout)?;
        let started = std::time::Instant::now();
        loop {
            let left = limit.saturating_sub(started.elapsed());
            let slice = left.min(Duration::from_millis(100));
            let got = py.detach(|| {
                let mut guard = self.watch.lock().unwrap_or_else(|p| p.into_inner());
                match guard.as_mut() {
                    Some(w) => w.next_timeout(Some(slice)).map(Some),
                    None => Ok(None),
                }
            });
            match got.map_err(|e| errors::client(py, e))? {
                Some(Some(e)) => return event(py, e).map(Some),
                None => return Ok(None),
                Some(None) if left.is_zero() => return Ok(None),
                Some(None) => py.check_signals()?,
            }
        }
    }

    /// The watch's socket, for an event loop's `add_reader` (-1 once closed).
    fn fileno(&self) -> i32 {
        self.watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(-1, Watch::fd)
    }

    /// The next event if one has arrived (never waits); ("end", {}) once the watch ended
    /// (closed, or the daemon stopped).
    fn try_next<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<(&'static str, Bound<'py, PyDict>)>> {
        let got = {
            let mut guard = self.watch.lock().unwrap_or_else(|p| p.into_inner());
            match guard.as_mut() {
                Some(w) => w.try_next(),
                None => return Ok(Some(("end", PyDict::new(py)))),
            }
        };
        match got {
            Ok(Some(e)) => event(py, e).map(Some),
            Ok(None) => Ok(None),
            Err(mmshare::ClientError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Ok(Some(("end", PyDict::new(py))))
            }
            Err(e) => Err(errors::client(py, e)),
        }
    }

    /// Ends the watch (closes its connection).
    fn close(&self) {
        self.watch.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
