//! Rust errors as the exceptions of `mmshare/errors.py` (which mirror `ErrorKind` one to one),
//! with the messages Python users see.

use mmshare::{ClientError, ErrorKind, OpenError, ReadError, WaitTimeout, WriteError};
use pyo3::prelude::*;

/// An instance of `mmshare.errors.<class>` made with `args`, as a `PyErr`.
pub(crate) fn raise<'py, A>(py: Python<'py>, class: &str, args: A) -> PyErr
where
    A: pyo3::call::PyCallArgs<'py>,
{
    let made = py
        .import("mmshare.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1(args));
    match made {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// `mmshare.errors.<class>(message)`.
pub(crate) fn with_message(py: Python<'_>, class: &str, message: impl Into<String>) -> PyErr {
    raise(py, class, (message.into(),))
}

fn kind_class(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "NotFound",
        ErrorKind::AlreadyExists => "AlreadyExists",
        ErrorKind::InvalidName => "InvalidName",
        ErrorKind::InvalidDtype => "InvalidDtype",
        ErrorKind::InvalidShape => "InvalidShape",
        ErrorKind::PermissionDenied => "PermissionDenied",
        ErrorKind::QuotaExceeded => "QuotaExceeded",
        ErrorKind::NoSpace => "NoSpace",
        ErrorKind::Busy => "Busy",
        ErrorKind::ProtocolError => "ProtocolError",
        ErrorKind::Internal => "Internal",
        ErrorKind::WrongKind => "WrongKind",
        ErrorKind::Timeout => "Timeout",
        // A kind newer than this binding: none while it is built with the library.
        _ => "MmshareError",
    }
}

/// A failed request (`path` is the daemon's socket, for the messages that name it).
pub(crate) fn client(py: Python<'_>, e: ClientError) -> PyErr {
    match e {
        ClientError::Server { kind, message } => with_message(py, kind_class(kind), message),
        ClientError::Connect { .. } => with_message(py, "ConnectError", e.to_string()),
        ClientError::WrongServer {
            ref path,
            expected,
            actual,
        } => {
            let message = e.to_string();
            raise(py, "WrongServer", (message, path.clone(), expected, actual))
        }
        ClientError::BadServerUid { .. } | ClientError::BadTimeout { .. } => {
            with_message(py, "ConnectError", e.to_string())
        }
        ClientError::Timeout { .. } => with_message(py, "Timeout", e.to_string()),
        ClientError::Io(_) => with_message(py, "ConnectError", e.to_string()),
        ClientError::Protocol(message) => with_message(py, "ProtocolError", message),
        // The process's own limit: an OSError with EMFILE, as Python's own open() raises.
        ClientError::OutOfDescriptors { .. } => {
            pyo3::exceptions::PyOSError::new_err((24, e.to_string()))
        }
        ClientError::Open(open) => self::open(py, open),
        ClientError::Stream(stream) => crate::stream::error(py, stream),
        other => with_message(py, "MmshareError", other.to_string()),
    }
}

/// A descriptor the daemon sent that could not be mapped as an array.
pub(crate) fn open(py: Python<'_>, e: OpenError) -> PyErr {
    with_message(py, "FormatError", e.to_string())
}

/// A failed read of array `name`.
pub(crate) fn read(py: Python<'_>, name: &str, e: ReadError) -> PyErr {
    match e {
        ReadError::Torn { version } => raise(py, "Torn", (version,)),
        ReadError::Timeout { .. } => with_message(py, "Timeout", format!("array {name}: {e}")),
        other => with_message(py, "MmshareError", format!("array {name}: {other}")),
    }
}

/// A failed write of array `name`.
pub(crate) fn write(py: Python<'_>, name: &str, e: WriteError) -> PyErr {
    match e {
        WriteError::LostWriteSide { sequence, found } => {
            raise(py, "LostWriteSide", (sequence, found))
        }
        WriteError::ReadOnly => with_message(
            py,
            "PermissionDenied",
            format!("{name} is open read-only; open it with mode 'r+'"),
        ),
        WriteError::Timeout { .. } => with_message(py, "Timeout", format!("array {name}: {e}")),
        WriteError::NoSpace { .. } => with_message(py, "NoSpace", format!("array {name}: {e}")),
        other => with_message(py, "MmshareError", format!("array {name}: {other}")),
    }
}

/// A wait on array `name` that timed out.
pub(crate) fn wait(py: Python<'_>, name: &str, e: &WaitTimeout) -> PyErr {
    with_message(
        py,
        "Timeout",
        format!(
            "no version of {name} newer than {} within {:.3} s (version {} now)",
            e.newer_than,
            e.waited.as_secs_f64(),
            e.current
        ),
    )
}
