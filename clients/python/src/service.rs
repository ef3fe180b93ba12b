//! Request/response for Python: `NativeRequester` and `NativeServer` over the Rust
//! `Requester<u8, u8>` and `Server<u8, u8>` (bytes; `mmshare/service.py` gives them dtypes and
//! shapes), with requests and responses held as tokens between calls.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mmshare::{Client, LoanToken, RequestToken, Requester, ResponseToken, SampleToken, Server};
use mmshare::{ServiceError, StreamError};
use pyo3::prelude::*;

use crate::errors;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn seconds(timeout: Option<f64>) -> PyResult<Duration> {
    match timeout {
        None => Ok(mmshare::MAX_WAIT),
        Some(t) => Duration::try_from_secs_f64(t).map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "timeout {t} is not a number of seconds >= 0"
            ))
        }),
    }
}

/// A service error as the exception of `mmshare.errors` it is.
pub(crate) fn error(py: Python<'_>, e: ServiceError) -> PyErr {
    match e {
        ServiceError::ServerLost {
            name,
            server,
            pending,
        } => {
            let message = ServiceError::ServerLost {
                name,
                server,
                pending: pending.clone(),
            }
            .to_string();
            errors::raise(py, "ServerLost", (message, server, pending))
        }
        e @ (ServiceError::Timeout { .. } | ServiceError::NoServer { .. }) => {
            errors::with_message(py, "Timeout", e.to_string())
        }
        e @ ServiceError::Full { .. } => errors::with_message(py, "Busy", e.to_string()),
        e @ ServiceError::WrongLength { .. } => {
            pyo3::exceptions::PyValueError::new_err(e.to_string())
        }
        ServiceError::Stream(s) => crate::stream::error(py, s),
        ServiceError::Client(c) => errors::client(py, c),
        other => errors::with_message(py, "MmshareError", other.to_string()),
    }
}

fn is_timeout(e: &ServiceError) -> bool {
    matches!(
        e,
        ServiceError::Timeout { .. } | ServiceError::Stream(StreamError::ReceiveTimeout { .. })
    )
}

/// Attaches a requester of service `name` (bytes).
pub(crate) fn requester(py: Python<'_>, client: &Client, name: &str) -> PyResult<NativeRequester> {
    let requester = py
        .detach(|| client.requester_bytes(name))
        .map_err(|e| error(py, e))?;
    Ok(NativeRequester {
        request_nbytes: requester.request_len(),
        response_nbytes: requester.response_len(),
        slot: requester.slot(),
        shared: Arc::new(RequesterShared {
            requester: Mutex::new(requester),
            loan: Mutex::new(None),
        }),
    })
}

/// Attaches a server of service `name` (bytes).
pub(crate) fn server(py: Python<'_>, client: &Client, name: &str) -> PyResult<NativeServer> {
    let server = py
        .detach(|| client.server_bytes(name))
        .map_err(|e| error(py, e))?;
    Ok(NativeServer {
        request_nbytes: server.request_len(),
        response_nbytes: server.response_nbytes(),
        slot: server.slot(),
        shared: Arc::new(Mutex::new(server)),
    })
}

struct RequesterShared {
    requester: Mutex<Requester<u8, u8>>,
    /// The request loaned and not sent yet: its server and token.
    loan: Mutex<Option<(u32, LoanToken)>>,
}

/// A requester of a service (bytes).
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeRequester {
    shared: Arc<RequesterShared>,
    request_nbytes: usize,
    response_nbytes: usize,
    slot: u32,
}

#[pymethods]
impl NativeRequester {
    #[getter]
    fn slot(&self) -> u32 {
        self.slot
    }

    #[getter]
    fn request_nbytes(&self) -> usize {
        self.request_nbytes
    }

    #[getter]
    fn response_nbytes(&self) -> usize {
        self.response_nbytes
    }

    /// Requests sent and not answered yet.
    #[getter]
    fn pending(&self) -> usize {
        lock(&self.shared.requester).pending()
    }

    /// The server slots with a server attached.
    fn servers(&self) -> Vec<u32> {
        lock(&self.shared.requester).servers()
    }

    /// Loans a request slot (waiting up to `timeout` seconds for a server and for room);
    /// returns `(id, address)` of the loan, which `send_loan` sends.
    fn loan(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<(u64, usize)> {
        let timeout = seconds(timeout)?;
        let shared = &self.shared;
        let got = py.detach(|| {
            let mut r = lock(&shared.requester);
            let mut loan = lock(&shared.loan);
            if loan.is_some() {
                return Err(ServiceError::Stream(StreamError::LoanOutstanding {
                    name: "the service".into(),
                }));
            }
            r.set_timeout(timeout);
            let (server, id, token) = r.loan_token()?;
            let address = r.request_ptr(server, &token) as usize;
            *loan = Some((server, token));
            Ok((id, address))
        });
        got.map_err(|e| error(py, e))
    }

    /// Sends the loaned request; returns its correlation id.
    fn send_loan(&self, py: Python<'_>) -> PyResult<u64> {
        let shared = &self.shared;
        py.detach(|| {
            let mut r = lock(&shared.requester);
            let Some((server, token)) = lock(&shared.loan).take() else {
                return Err(ServiceError::Stream(StreamError::LoanOutstanding {
                    name: "no request is loaned".into(),
                }));
            };
            r.send_token(server, token)
        })
        .map_err(|e| error(py, e))
    }

    /// Gives the loaned request back unsent (nothing if none).
    fn abandon_loan(&self) {
        let mut r = lock(&self.shared.requester);
        if let Some((server, token)) = lock(&self.shared.loan).take() {
            r.abandon_token(server, token);
        }
    }

    /// The next response, waiting up to `timeout` seconds (interruptible).
    fn receive(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<NativeResponse> {
        let timeout = seconds(timeout)?;
        let shared = &self.shared;
        let got = crate::sliced(
            py,
            timeout,
            |slice| {
                let r = lock(&shared.requester);
                r.receive_token(slice).map(|(id, token)| {
                    let address = r.response_ptr(&token) as usize;
                    (id, token, address)
                })
            },
            is_timeout,
        )?;
        let (id, token, address) = got.map_err(|e| error(py, e))?;
        Ok(NativeResponse {
            id,
            server: token.lane() as u32,
            address,
            shared: Arc::clone(&self.shared),
            token: Mutex::new(Some(token)),
            pid: std::process::id(),
        })
    }
}

/// A response, held until `release`.
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeResponse {
    shared: Arc<RequesterShared>,
    token: Mutex<Option<SampleToken>>,
    id: u64,
    server: u32,
    address: usize,
    pid: u32,
}

#[pymethods]
impl NativeResponse {
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    #[getter]
    fn server(&self) -> u32 {
        self.server
    }

    #[getter]
    fn address(&self) -> usize {
        self.address
    }

    /// Lets go of the response (nothing if already let go, or in a forked child).
    fn release(&self, py: Python<'_>) {
        let token = lock(&self.token).take();
        if let Some(token) = token
            && std::process::id() == self.pid
        {
            let shared = &self.shared;
            py.detach(|| lock(&shared.requester).release_response(token));
        }
    }
}

/// A server of a service (bytes).
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeServer {
    shared: Arc<Mutex<Server<u8, u8>>>,
    request_nbytes: usize,
    response_nbytes: usize,
    slot: u32,
}

#[pymethods]
impl NativeServer {
    #[getter]
    fn slot(&self) -> u32 {
        self.slot
    }

    #[getter]
    fn request_nbytes(&self) -> usize {
        self.request_nbytes
    }

    #[getter]
    fn response_nbytes(&self) -> usize {
        self.response_nbytes
    }

    /// The next request, waiting up to `timeout` seconds (interruptible).
    fn receive(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<NativeRequest> {
        let timeout = seconds(timeout)?;
        let shared = &self.shared;
        let got = crate::sliced(
            py,
            timeout,
            |slice| {
                let s = lock(shared);
                s.receive_token(slice).map(|token| {
                    let address = s.request_ptr(&token) as usize;
                    (token, address)
                })
            },
            is_timeout,
        )?;
        let (token, address) = got.map_err(|e| error(py, e))?;
        Ok(NativeRequest {
            id: token.id(),
            requester: token.requester_slot(),
            requester_pid: token.requester_pid(),
            address,
            shared: Arc::clone(&self.shared),
            token: Mutex::new(Some(token)),
            response: Mutex::new(None),
            pid: std::process::id(),
        })
    }
}

/// A request, held until `release`; it loans and sends its own response.
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeRequest {
    shared: Arc<Mutex<Server<u8, u8>>>,
    token: Mutex<Option<RequestToken>>,
    response: Mutex<Option<ResponseToken>>,
    id: u64,
    requester: u32,
    requester_pid: u32,
    address: usize,
    pid: u32,
}

#[pymethods]
impl NativeRequest {
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    #[getter]
    fn requester(&self) -> u32 {
        self.requester
    }

    #[getter]
    fn requester_pid(&self) -> u32 {
        self.requester_pid
    }

    #[getter]
    fn address(&self) -> usize {
        self.address
    }

    /// Loans this request's response (waiting while its requester is a ring behind); returns
    /// its address.
    fn loan_response(&self, py: Python<'_>) -> PyResult<usize> {
        let (shared, token, response) = (&self.shared, &self.token, &self.response);
        py.detach(|| {
            let s = lock(shared);
            let mut response = lock(response);
            if response.is_some() {
                return Err(ServiceError::Stream(StreamError::LoanOutstanding {
                    name: "this request's response".into(),
                }));
            }
            let token = lock(token);
            let Some(request) = token.as_ref() else {
                return Err(ServiceError::Stream(StreamError::LoanOutstanding {
                    name: "a released request (answer it before releasing it)".into(),
                }));
            };
            let loan = s.loan_response_token(request)?;
            let address = match s.response_ptr(&loan) {
                Ok(ptr) => ptr as usize,
                Err(e) => {
                    let _ = s.abandon_response(loan);
                    return Err(e);
                }
            };
            *response = Some(loan);
            Ok(address)
        })
        .map_err(|e| error(py, e))
    }

    /// Sends the loaned response to the requester.
    fn send_response(&self, py: Python<'_>) -> PyResult<()> {
        let (shared, response) = (&self.shared, &self.response);
        py.detach(|| {
            let Some(loan) = lock(response).take() else {
                return Err(ServiceError::Stream(StreamError::LoanOutstanding {
                    name: "no response is loaned".into(),
                }));
            };
            lock(shared).send_response(loan)
        })
        .map_err(|e| error(py, e))
    }

    /// Gives the loaned response back unsent (nothing if none).
    fn abandon_response(&self) {
        if let Some(loan) = lock(&self.response).take() {
            // Nothing else holds the server's responders here (the lock): it cannot fail.
            let _ = lock(&self.shared).abandon_response(loan);
        }
    }

    /// Lets go of the request (nothing if already let go, or in a forked child).
    fn release(&self, py: Python<'_>) {
        let token = lock(&self.token).take();
        if let Some(token) = token
            && std::process::id() == self.pid
        {
            let shared = &self.shared;
            py.detach(|| lock(shared).release_request(token));
        }
    }
}
