//! The synchronous Rust client of `mmshared`: no async runtime needed in user programs.
//!
//! A [`Client`] is one SOCK_SEQPACKET connection. Requests are serialized on it (one in flight
//! at a time), so a client can be shared between threads. Arrays come back as [`Shared`]
//! handles: the mapping (built from the descriptor the daemon sent) plus the reply's
//! [`ArrayInfo`]. A handle opened for writing keeps the connection open: the connection is the
//! writer's lease, and when it closes the daemon checks for a write left half-done.

use std::ops::Deref;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::array::Array;
use crate::array::raw::{Access, RawArray};
use crate::dtype::{DType, Element};
use crate::error::{OpenError, StreamError};
use crate::proto::{
    self, ArrayInfo, Backing, ErrorKind, MAX_MESSAGE, ObjectInfo, OpenAccess, PROTOCOL_VERSION,
    Request, Response, StreamInfo, StreamRole, WatchEvent, WireOrder,
};
use crate::shape::Order;
use crate::stream::{Delivery, Publisher, StreamFiles, Subscriber};
use crate::sys;

/// Environment variable that points every client (and the daemon) at another socket.
pub const SOCKET_ENV: &str = "MMSHARE_SOCKET";

/// The socket path clients and the daemon use by default: `$MMSHARE_SOCKET`, else
/// `$XDG_RUNTIME_DIR/mmshare/mmshared.sock`, else `/tmp/mmshare-$UID/mmshared.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return Path::new(&dir).join("mmshare").join("mmshared.sock");
    }
    let uid = rustix::process::getuid().as_raw();
    PathBuf::from(format!("/tmp/mmshare-{uid}/mmshared.sock"))
}

/// Environment variable with the uid the daemon is expected to run as (a number, such as
/// `1000`), for clients that connect to another user's daemon; see [`ConnectOptions`].
pub const SERVER_UID_ENV: &str = "MMSHARE_SERVER_UID";

/// The environment variable with the default wait for the daemon, in seconds (0: no limit):
/// see [`ConnectOptions::timeout`].
pub const TIMEOUT_ENV: &str = "MMSHARE_TIMEOUT";

/// How long a client waits for the daemon to accept a connection and to answer a request,
/// unless told otherwise ([`ConnectOptions::timeout`], [`TIMEOUT_ENV`]). A daemon that is up
/// answers in microseconds; this only bounds how long a frozen or overloaded one can stall a
/// caller.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the daemon is, and which user it must run as: what [`Client::connect_with`] takes.
///
/// Before it sends anything, a client reads the uid of the process that listens on the socket
/// (`SO_PEERCRED`) and refuses a daemon that runs as another user than expected, with
/// [`ClientError::WrongServer`]. Root is always accepted (a socket that systemd's socket
/// activation created and passed to the daemon reports root). The expected uid is:
/// 1. the one given with [`ConnectOptions::server_uid`], else
/// 2. the one in `$MMSHARE_SERVER_UID` ([`SERVER_UID_ENV`]), else
/// 3. on the default socket ([`ConnectOptions::default_socket`]; a path from `$MMSHARE_SOCKET`
///    counts as the default, since the user did not type it into the program): this
///    process's effective uid. Another user can create the default directory
///    `/tmp/mmshare-$UID` first and run a daemon there, which would then receive (and could
///    read) this user's "private" arrays.
/// 4. On a path the program names ([`ConnectOptions::new`]): nobody in particular, no check.
///
/// # Example
/// ```no_run
/// use mmshare::{Client, ConnectOptions};
/// // A daemon that uid 1001 runs for several users.
/// let client = Client::connect_with(&ConnectOptions::new("/srv/cams/mmshared.sock").server_uid(1001))?;
/// # Ok::<(), mmshare::ClientError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    path: PathBuf,
    default: bool,
    server_uid: Option<u32>,
    timeout: Option<Duration>,
}

impl ConnectOptions {
    /// The daemon at `path`: its uid is checked only if one is given ([`Self::server_uid`],
    /// or `$MMSHARE_SERVER_UID`).
    pub fn new(path: impl AsRef<Path>) -> Self {
        ConnectOptions {
            path: path.as_ref().to_owned(),
            default: false,
            server_uid: None,
            timeout: None,
        }
    }

    /// The daemon at [`default_socket_path`] (`$MMSHARE_SOCKET` included): it must run as this
    /// process's effective uid or as root, unless another uid is given ([`Self::server_uid`],
    /// or `$MMSHARE_SERVER_UID`).
    pub fn default_socket() -> Self {
        ConnectOptions {
            path: default_socket_path(),
            default: true,
            server_uid: None,
            timeout: None,
        }
    }

    /// The uid the daemon must run as (root is accepted too). Overrides `$MMSHARE_SERVER_UID`.
    pub fn server_uid(mut self, uid: u32) -> Self {
        self.server_uid = Some(uid);
        self
    }

    /// How long to wait for the daemon to accept the connection, and for each reply, before
    /// giving up with [`ClientError::Timeout`]; `Duration::ZERO` waits without limit.
    /// Overrides `$MMSHARE_TIMEOUT` ([`TIMEOUT_ENV`]); the default is
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The wait for the daemon, as [`Client::connect_with`] uses it: [`Self::timeout`], else
    /// `$MMSHARE_TIMEOUT` (seconds, fractions allowed; 0 for no limit), else
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    ///
    /// # Errors
    /// [`ClientError::BadTimeout`] when `$MMSHARE_TIMEOUT` is set but not a number of seconds.
    pub fn request_timeout(&self) -> Result<Duration, ClientError> {
        if let Some(t) = self.timeout {
            return Ok(t);
        }
        match std::env::var_os(TIMEOUT_ENV).filter(|v| !v.is_empty()) {
            None => Ok(DEFAULT_REQUEST_TIMEOUT),
            Some(value) => {
                let text = value.to_string_lossy();
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| ClientError::BadTimeout {
                        value: text.into_owned(),
                    })
            }
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is the default socket path (whose daemon must be this user's or root's).
    pub fn is_default(&self) -> bool {
        self.default
    }

    /// The uid the daemon must run as (or root), as [`Client::connect_with`] checks it; `None`
    /// when it is not checked (a named path, with no uid given).
    ///
    /// # Errors
    /// [`ClientError::BadServerUid`] when `$MMSHARE_SERVER_UID` is set but not a uid.
    pub fn expected_server_uid(&self) -> Result<Option<u32>, ClientError> {
        if let Some(uid) = self.server_uid {
            return Ok(Some(uid));
        }
        if let Some(value) = std::env::var_os(SERVER_UID_ENV).filter(|v| !v.is_empty()) {
            let text = value.to_string_lossy();
            return text
                .trim()
                .parse::<u32>()
                .map(Some)
                .map_err(|_| ClientError::BadServerUid {
                    value: text.into_owned(),
                });
        }
        Ok(self.default.then(sys::euid))
    }
}

/// The request's name, for messages.
fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Hello { .. } => "Hello",
        Request::Create { .. } => "Create",
        Request::Open { .. } => "Open",
        Request::Stat { .. } => "Stat",
        Request::List { .. } => "List",
        Request::ListAll { .. } => "ListAll",
        Request::Delete { .. } => "Delete",
        Request::CreateStream { .. } => "CreateStream",
        Request::OpenStream { .. } => "OpenStream",
        Request::WaitFor { .. } => "WaitFor",
        Request::Watch { .. } => "Watch",
    }
}

impl std::fmt::Debug for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let variant = match self {
            ClientError::Connect { .. } => "Connect",
            ClientError::Server { .. } => "Server",
            ClientError::Timeout { .. } => "Timeout",
            ClientError::WrongServer { .. } => "WrongServer",
            ClientError::BadTimeout { .. } => "BadTimeout",
            ClientError::BadServerUid { .. } => "BadServerUid",
            ClientError::Io(_) => "Io",
            ClientError::Protocol(_) => "Protocol",
            ClientError::OutOfDescriptors { .. } => "OutOfDescriptors",
            ClientError::Open(_) => "Open",
            ClientError::Stream(_) => "Stream",
        };
        write!(f, "{variant}: {self}")
    }
}

/// The message of [`ClientError::WrongServer`].
fn wrong_server_message(path: &Path, expected: u32, actual: u32) -> String {
    let who = if expected == sys::euid() {
        " (this user)"
    } else {
        ""
    };
    format!(
        "the daemon at {} runs as uid {actual}, not as uid {expected}{who} or root: refusing to \
         use it (another user may have taken the socket path; pass the expected uid with \
         {SERVER_UID_ENV} / server_uid if this daemon is meant to be another user's)",
        path.display()
    )
}

/// A client request that failed.
///
/// Its `Debug` form is its message (what `main() -> Result<(), Box<dyn Error>>` prints when it
/// returns one: "Error: cannot connect to mmshared at ..."), with the variant named in front;
/// match on the variants, not on either text.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The daemon's socket could not be reached.
    #[error(
        "cannot connect to mmshared at {path}: {source} (is the daemon running? start it with `mmshared`, or set {SOCKET_ENV})"
    )]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The daemon listening on the socket runs as another user than expected (see
    /// [`ConnectOptions`]); nothing was sent to it.
    #[error("{}", wrong_server_message(.path, *.expected, *.actual))]
    WrongServer {
        /// The socket path.
        path: PathBuf,
        /// The uid the daemon was expected to run as (root would have been accepted too).
        expected: u32,
        /// The uid it runs as (`SO_PEERCRED`).
        actual: u32,
    },
    /// The daemon did not accept the connection, or did not answer, within the client's
    /// timeout ([`ConnectOptions::timeout`]): it is stopped, frozen or overloaded. A request
    /// that timed out may or may not have been carried out; the connection is dropped and the
    /// next request dials again.
    #[error(
        "mmshared at {} did not {what} within {waited:?} (is it stopped or overloaded? the wait is set with ConnectOptions::timeout or {TIMEOUT_ENV})",
        path.display()
    )]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// What the client waited for ("accept the connection", "answer Open", ...).
        what: String,
        /// How long it waited.
        waited: Duration,
    },
    /// `$MMSHARE_TIMEOUT` is set, but not to a number of seconds.
    #[error(
        "{TIMEOUT_ENV}={value:?} is not a number of seconds (such as 10 or 0.5; 0 for no limit): fix it or unset it"
    )]
    BadTimeout {
        /// The variable's value.
        value: String,
    },
    /// `$MMSHARE_SERVER_UID` is set, but not to a uid.
    #[error(
        "{SERVER_UID_ENV}={value:?} is not a uid (a number such as 1000): set it to the uid the daemon runs as, or unset it"
    )]
    BadServerUid {
        /// The variable's value.
        value: String,
    },
    /// Sending or receiving failed (for example the daemon went away).
    #[error("connection to mmshared failed: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon's reply made no sense, or it speaks another protocol version.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// This process is at its own descriptor limit: the daemon's reply carried descriptors
    /// (of an object it opened or created) that the kernel could not give this process.
    #[error(
        "this process is out of file descriptors (RLIMIT_NOFILE {limit}): it could not receive the descriptors of the daemon's reply; close some, or raise the limit (ulimit -n)"
    )]
    OutOfDescriptors {
        /// The process's soft descriptor limit.
        limit: u64,
    },
    /// The daemon refused the request.
    #[error("{kind:?}: {message}")]
    Server {
        /// The kind of failure.
        kind: ErrorKind,
        /// The daemon's message.
        message: String,
    },
    /// The descriptor could not be mapped, or holds another dtype than asked for.
    #[error("{0}")]
    Open(#[from] OpenError),
    /// A stream could not be attached (its files, its records, its publisher).
    #[error("{0}")]
    Stream(#[from] StreamError),
}

impl ClientError {
    /// The daemon's error kind, when the daemon refused the request.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Server { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// One connection; requests on it are serialized by the mutex, which also guards the reply
/// buffer (allocated once, not per request).
#[derive(Debug)]
struct Connection {
    inner: Mutex<(OwnedFd, Vec<u8>)>,
    /// Where it was made, which daemon uid it expects and how long it waits: to dial again
    /// when the daemon closed an idle connection, or after a daemon restart.
    path: PathBuf,
    expected: Option<u32>,
    timeout: Duration,
    /// The leases the client's live handles hold through this connection, taken again on
    /// every connection it dials anew.
    leases: Mutex<Vec<LeaseRecord>>,
    next_lease: std::sync::atomic::AtomicU64,
}

/// A lease as the client remembers it: the request that took it (`Open` for writing, or
/// `OpenStream` in a role) and the device and inode of the data file it is for, which a
/// request taking it again must find (else the object is gone, or another took its name).
#[derive(Clone, Debug)]
struct LeaseRecord {
    id: u64,
    request: Request,
    file: (u64, u64),
}

/// A lease held through a client's connection (write access to an array, or a role on a
/// stream) for as long as the handle holding this lives: the connection stays open, and a
/// connection the client dials anew (after a daemon restart, or after the daemon closed an
/// idle one) takes the lease again before it carries anything else. Dropping it stops that
/// (the daemon keeps the lease until the connection closes, as it always did).
#[derive(Debug)]
pub(crate) struct Lease {
    conn: Arc<Connection>,
    id: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| r.id != self.id);
    }
}

/// Device and inode of `file`.
fn file_id(file: &std::fs::File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

/// Whether connecting failed because no daemon listens right now (it is restarting): worth
/// trying again for a while.
fn daemon_away(e: &std::io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::CONNREFUSED | rustix::io::Errno::NOENT)
    )
}

/// Whether a send failed because the daemon had already closed the connection: the request
/// never reached it, so sending it again on a new connection cannot do it twice.
fn closed_before_send(e: &std::io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET | rustix::io::Errno::NOTCONN)
    )
}

impl Connection {
    /// Connects to `path`, checks the daemon's uid, and says Hello; returns the connection
    /// and the daemon's name.
    fn dial(
        path: &Path,
        expected: Option<u32>,
        timeout: Duration,
    ) -> Result<(Connection, String), ClientError> {
        let fd = sys::seqpacket_connect(path, timeout).map_err(|source| {
            if source.kind() == std::io::ErrorKind::TimedOut {
                ClientError::Timeout {
                    path: path.to_owned(),
                    what: "accept the connection".into(),
                    waited: timeout,
                }
            } else {
                ClientError::Connect {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        if let Some(expected) = expected {
            let actual = sys::peer_uid(&fd)?;
            if actual != expected && actual != 0 {
                return Err(ClientError::WrongServer {
                    path: path.to_owned(),
                    expected,
                    actual,
                });
            }
        }
        let conn = Connection {
            inner: Mutex::new((fd, vec![0u8; MAX_MESSAGE + 1])),
            path: path.to_owned(),
            expected,
            timeout,
            leases: Mutex::new(Vec::new()),
            next_lease: std::sync::atomic::AtomicU64::new(0),
        };
        let server = conn.hello()?;
        Ok((conn, server))
    }

    fn hello(&self) -> Result<String, ClientError> {
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            client: program_name(),
        };
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = proto::encode(&hello).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.send(&guard, &bytes, "take the handshake")?;
        match self.receive(&mut guard, "answer the handshake")? {
            (Response::Hello { version, server }, _) if version == PROTOCOL_VERSION => Ok(server),
            (Response::Hello { version, .. }, _) => Err(ClientError::Protocol(format!(
                "daemon speaks protocol version {version}, this client {PROTOCOL_VERSION}"
            ))),
            (Response::Error { kind, message }, _) => Err(ClientError::Server { kind, message }),
            (other, _) => Err(unexpected(&other)),
        }
    }

    fn call(&self, request: &Request) -> Result<(Response, Vec<OwnedFd>), ClientError> {
        let bytes = proto::encode(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let what = format!("answer {}", request_name(request));
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let redial = |guard: &mut (OwnedFd, Vec<u8>)| -> Result<(), ClientError> {
            self.reconnect(guard)?;
            self.send(guard, &bytes, &what)
        };
        if let Err(e) = sys::send_message(&guard.0, &bytes) {
            if !closed_before_send(&e) {
                return Err(self.failed(&guard, e, &what));
            }
            // The daemon closed this connection (it closes connections that hold nothing and
            // stay idle): dial again, once, and send the request there.
            redial(&mut guard)?;
            return self.receive(&mut guard, &what);
        }
        match self.receive(&mut guard, &what) {
            // The daemon closed the connection with the request unread in it (a reset, not
            // an end of file): it was not carried out, so it is sent again, once.
            Err(ClientError::Io(e))
                if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::CONNRESET) =>
            {
                redial(&mut guard)?;
                self.receive(&mut guard, &what)
            }
            other => other,
        }
    }

    /// Remembers the lease that `request` took (for the data file `file`), to take it again on
    /// every new connection; it is forgotten when the returned [`Lease`] drops.
    fn lease(self: &Arc<Self>, request: Request, file: &std::fs::File) -> Lease {
        let id = self
            .next_lease
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(file) = file_id(file) {
            self.leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(LeaseRecord { id, request, file });
        }
        Lease {
            conn: self.clone(),
            id,
        }
    }

    /// Dials the daemon anew in place of the connection in `guard` (which it closed, or
    /// which died with it), trying again with a growing pause while no daemon listens (it is
    /// restarting) until the timeout has passed (10 s if it is 0), and takes every lease
    /// again on the new connection.
    fn reconnect(&self, guard: &mut (OwnedFd, Vec<u8>)) -> Result<(), ClientError> {
        let patience = if self.timeout.is_zero() {
            DEFAULT_REQUEST_TIMEOUT
        } else {
            self.timeout
        };
        let deadline = std::time::Instant::now() + patience;
        let mut pause = Duration::from_millis(10);
        let fresh = loop {
            match Connection::dial(&self.path, self.expected, self.timeout) {
                Ok((fresh, _)) => break fresh,
                Err(ClientError::Connect { source, .. })
                    if daemon_away(&source) && std::time::Instant::now() + pause < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        };
        *guard = fresh.inner.into_inner().unwrap_or_else(|p| p.into_inner());
        self.retake_leases(guard);
        Ok(())
    }

    /// Takes every remembered lease again on the new connection in `guard`. A lease whose
    /// object is gone, or whose name now holds another object, is forgotten (its handle keeps
    /// its mapping, without a lease); one the daemon refuses for now (it did not answer, say)
    /// is kept for the next connection.
    fn retake_leases(&self, guard: &mut (OwnedFd, Vec<u8>)) {
        let records = self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for record in records {
            let Ok(bytes) = proto::encode(&record.request) else {
                continue;
            };
            let what = format!("answer {}", request_name(&record.request));
            if self.send(guard, &bytes, &what).is_err() {
                return;
            }
            let same = match self.receive(guard, &what) {
                Ok((Response::Array(_) | Response::Stream(_), fds)) => {
                    fds.into_iter()
                        .next()
                        .map(std::fs::File::from)
                        .and_then(|f| file_id(&f))
                        == Some(record.file)
                }
                Ok((Response::Error { kind, .. }, _))
                    if kind == ErrorKind::Busy || kind == ErrorKind::Internal =>
                {
                    continue;
                }
                Ok(_) => false,
                Err(_) => return,
            };
            if !same {
                self.leases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|r| r.id != record.id);
            }
        }
    }

    /// Sends `bytes`; a send that waits past the timeout is [`ClientError::Timeout`].
    fn send(
        &self,
        guard: &(OwnedFd, Vec<u8>),
        bytes: &[u8],
        what: &str,
    ) -> Result<(), ClientError> {
        sys::send_message(&guard.0, bytes).map_err(|e| self.failed(guard, e, what))
    }

    /// The error for `e` on the connection in `guard` while waiting for the daemon to `what`.
    /// A timeout leaves the connection out of step (the reply may still come), so it is shut
    /// down: the next request dials again.
    fn failed(&self, guard: &(OwnedFd, Vec<u8>), e: std::io::Error, what: &str) -> ClientError {
        if sys::timed_out(&e) {
            let _ = rustix::net::shutdown(&guard.0, rustix::net::Shutdown::Both);
            return ClientError::Timeout {
                path: self.path.clone(),
                what: what.to_owned(),
                waited: self.timeout,
            };
        }
        ClientError::Io(e)
    }

    fn receive(
        &self,
        guard: &mut (OwnedFd, Vec<u8>),
        what: &str,
    ) -> Result<(Response, Vec<OwnedFd>), ClientError> {
        let got = match sys::recv_message(&guard.0, &mut guard.1) {
            Ok(got) => got,
            Err(e) => return Err(self.failed(guard, e, what)),
        };
        parse_reply(&guard.1, got)
    }
}

/// A reply received into `buf` (`got` says how it came), decoded and checked.
fn parse_reply(buf: &[u8], got: sys::Received) -> Result<(Response, Vec<OwnedFd>), ClientError> {
    if got.len == 0 {
        return Err(ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "mmshared closed the connection",
        )));
    }
    if got.truncated || got.len > MAX_MESSAGE {
        return Err(ClientError::Protocol(format!(
            "reply longer than {MAX_MESSAGE} bytes"
        )));
    }
    if got.fds_lost {
        // The daemon did what was asked (an object opened or created), but this process
        // could not take the descriptors: its own limit, not the daemon's or the protocol's.
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        return Err(ClientError::OutOfDescriptors {
            limit: limit.unwrap_or(u64::MAX),
        });
    }
    let response: Response =
        proto::decode(&buf[..got.len]).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok((response, got.fds))
}

/// The longest [`Client::wait_for`] waits: a day.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A watch of the daemon's objects ([`Client::watch`]): an iterator of [`WatchEvent`]s that
/// blocks until the next one, or [`Watch::next_timeout`].
#[derive(Debug)]
pub struct Watch {
    conn: Connection,
}

impl Watch {
    /// The next event, waiting at most `timeout` (`None`: without limit); `Ok(None)` when
    /// none came in time.
    ///
    /// # Errors
    /// The daemon closed the connection (it stopped), or a malformed message.
    pub fn next_timeout(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<WatchEvent>, ClientError> {
        let mut guard = self.conn.inner.lock().unwrap_or_else(|p| p.into_inner());
        // A receive timeout of its own for each call (0 is no limit to the kernel).
        let limit = timeout.map(|t| t.max(Duration::from_micros(1)));
        rustix::net::sockopt::set_socket_timeout(
            &guard.0,
            rustix::net::sockopt::Timeout::Recv,
            limit,
        )
        .map_err(|e| ClientError::Io(e.into()))?;
        let (fd, buf) = &mut *guard;
        let got = sys::recv_message(fd, buf);
        event_reply(buf, got)
    }

    /// The watch's socket, for an event loop to watch for reading (then [`Watch::try_next`]).
    #[doc(hidden)]
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.conn
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .as_raw_fd()
    }

    /// The next event if one has arrived; never waits.
    ///
    /// # Errors
    /// As [`Watch::next_timeout`].
    #[doc(hidden)]
    pub fn try_next(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        let mut guard = self.conn.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (fd, buf) = &mut *guard;
        let got = sys::try_recv_message(fd, buf);
        event_reply(buf, got)
    }
}

/// The event a watch's receive gave (`None` when none came in time).
fn event_reply(
    buf: &[u8],
    got: std::io::Result<sys::Received>,
) -> Result<Option<WatchEvent>, ClientError> {
    let got = match got {
        Err(e) if sys::timed_out(&e) => return Ok(None),
        Err(e) => return Err(ClientError::Io(e)),
        Ok(got) => got,
    };
    match parse_reply(buf, got)? {
        (Response::Event(event), _) => Ok(Some(event)),
        (other, _) => Err(unexpected(&other)),
    }
}

/// A `wait_for` request sent on a connection of its own, whose reply the caller's event loop
/// awaits: watch [`PendingWaitFor::fd`] for reading, then [`PendingWaitFor::try_take`].
#[doc(hidden)]
#[derive(Debug)]
pub struct PendingWaitFor {
    conn: Connection,
}

impl PendingWaitFor {
    /// The connection's socket.
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.conn
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .as_raw_fd()
    }

    /// The answer if it has arrived (the object, or the daemon's error: `Timeout` when the wait
    /// ran out); `Ok(None)` if not yet. Never waits.
    ///
    /// # Errors
    /// As [`Client::wait_for`].
    pub fn try_take(&self) -> Result<Option<ObjectInfo>, ClientError> {
        let mut guard = self.conn.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (fd, buf) = &mut *guard;
        match sys::try_recv_message(fd, buf) {
            Err(e) if sys::timed_out(&e) => Ok(None),
            Err(e) => Err(ClientError::Io(e)),
            Ok(got) => wait_for_reply(buf, got).map(Some),
        }
    }
}

/// The object a `WaitFor` reply names, or its error.
fn wait_for_reply(buf: &[u8], got: sys::Received) -> Result<ObjectInfo, ClientError> {
    match parse_reply(buf, got)? {
        (Response::Array(info), _) => Ok(ObjectInfo::Array(info)),
        (Response::Stream(info), _) => Ok(ObjectInfo::Stream(info)),
        (Response::Error { kind, message }, _) => Err(ClientError::Server { kind, message }),
        (other, _) => Err(unexpected(&other)),
    }
}

impl Iterator for Watch {
    type Item = Result<WatchEvent, ClientError>;

    /// The next event, waiting for it without limit; `None` once the daemon closed the watch
    /// (it stopped).
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_timeout(None) {
            Ok(event) => event.map(Ok),
            Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// A connection to `mmshared`.
///
/// # Example
/// ```no_run
/// use mmshare::{Access, Client};
/// let client = Client::connect_default()?;
/// let frames = client.open::<u8>("camera.frames", Access::Read)?;
/// let latest = frames.read_to_vec()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    conn: Arc<Connection>,
    path: PathBuf,
    server: String,
}

/// What to create; built with [`CreateOptions::new`] and the setters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// Array name.
    pub name: String,
    /// NumPy dtype string.
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Memory order (default C).
    pub order: Order,
    /// File (default) or memory backing.
    pub backing: Backing,
    /// Permission bits (default 0o600).
    pub mode: u32,
    /// Return the existing array if one with the same dtype, shape and order exists.
    pub exist_ok: bool,
    /// Stripes (default 0: the daemon chooses from the size; see [`CreateOptions::stripes`]).
    pub stripes: u32,
    /// A sparse file (default `false`; see [`CreateOptions::sparse`]).
    pub sparse: bool,
}

impl CreateOptions {
    /// A C-order, file-backed, mode 0600 array.
    pub fn new(name: impl Into<String>, dtype: impl Into<String>, shape: &[u64]) -> Self {
        CreateOptions {
            name: name.into(),
            dtype: dtype.into(),
            shape: shape.to_vec(),
            order: Order::C,
            backing: Backing::File,
            mode: 0o600,
            exist_ok: false,
            stripes: 0,
            sparse: false,
        }
    }

    /// A **sparse** file: only its header is allocated at create, and each write allocates
    /// the file range it writes first, so a full disk is an error of that write (never a
    /// SIGBUS). For arrays larger than the disk's free space, or than will ever be written
    /// (a 64 GiB array written here and there). The daemon's limits count its apparent size.
    /// `exist_ok` does not compare it.
    pub fn sparse(mut self, yes: bool) -> Self {
        self.sparse = yes;
        self
    }

    /// How many stripes, each with its own seqlock, the array is divided into along its
    /// outermost axis in memory, so that writers of different regions run at once and
    /// readers of a region are not held up by writes elsewhere: 1 for one sequence, 2 to 32
    /// for that many (whole slabs each: an array may get fewer), 0 (the default) to let the
    /// daemon choose (one sequence below 1 MiB; above, stripes of at least 64 KiB, up to 32).
    /// `exist_ok` does not compare it.
    pub fn stripes(mut self, stripes: u32) -> Self {
        self.stripes = stripes;
        self
    }

    /// Backed by the daemon's tmpfs directory instead of its storage directory.
    pub fn memory(mut self) -> Self {
        self.backing = Backing::Memory;
        self
    }

    /// Sets the permission bits.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the memory order.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Accept an existing identical array.
    pub fn exist_ok(mut self, yes: bool) -> Self {
        self.exist_ok = yes;
        self
    }
}

fn wire_order(order: Order) -> WireOrder {
    match order {
        Order::C => WireOrder::C,
        Order::F => WireOrder::F,
    }
}

/// What [`Client::create_stream`] creates: name, dtype, one frame's shape, and the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Stream name.
    pub name: String,
    /// NumPy dtype string (`<f4`, `float32`, `uint8`, ...).
    pub dtype: String,
    /// One frame's dimensions.
    pub shape: Vec<u64>,
    /// Memory order of a frame.
    pub order: Order,
    /// Frames in the ring (default 8).
    pub slots: u32,
    /// Subscriber records (default 16).
    pub max_subscribers: u32,
    /// File (default) or memory backing.
    pub backing: Backing,
    /// Permission bits (default 0600).
    pub mode: u32,
    /// Succeed if an identical stream exists (default false).
    pub exist_ok: bool,
    /// What the publisher does about a lossless subscriber that stalls it (default Block).
    pub stall: crate::StallPolicy,
    /// The newest frames kept offered for subscribers that join late (default 0).
    pub history: u32,
    /// The dtype of each frame's header, as a dtype string (default: none).
    pub header: Option<String>,
    /// Whether frames vary in length along axis 0 (default false).
    pub variable: bool,
    /// Publishers it may have at once, one ring (lane) each (default 1, at most 16).
    pub max_publishers: u32,
}

impl StreamOptions {
    /// A file-backed, C-order stream of 8 slots and 16 subscriber records, mode 0600.
    pub fn new(name: impl Into<String>, dtype: impl Into<String>, frame_shape: &[u64]) -> Self {
        StreamOptions {
            name: name.into(),
            dtype: dtype.into(),
            shape: frame_shape.to_vec(),
            order: Order::C,
            slots: 8,
            max_subscribers: 16,
            backing: Backing::File,
            mode: 0o600,
            exist_ok: false,
            stall: crate::StallPolicy::Block,
            history: 0,
            header: None,
            variable: false,
            max_publishers: 1,
        }
    }

    /// Lets `n` publishers publish at once (1 to [`crate::MAX_PUBLISHERS`]; default 1): each
    /// gets a ring (lane) of its own, so they never wait for each other, and subscribers
    /// receive the frames of all of them, each publisher's in its order
    /// ([`crate::Sample::publisher`] says whose). Every lane has `slots` slots, so the stream
    /// takes `n` times the space.
    pub fn max_publishers(mut self, n: u32) -> Self {
        self.max_publishers = n;
        self
    }

    /// Gives every frame a header of `dtype` (a dtype string: a number, a time, a record's
    /// descr): one element, written in the loan ([`crate::SampleMut::header_mut`]) and read in
    /// the sample ([`crate::Sample::header`]) with the frame's guarantees. At most 65528
    /// bytes.
    pub fn header(mut self, dtype: impl Into<String>) -> Self {
        self.header = Some(dtype.into());
        self
    }

    /// Frames that vary in length along axis 0: the shape is the largest frame's, and each
    /// frame has its own rows ([`crate::SampleMut::set_rows`], [`crate::Sample::rows`]). At
    /// least one dimension; C order unless it has only one.
    pub fn variable(mut self, yes: bool) -> Self {
        self.variable = yes;
        self
    }

    /// Keeps the newest `frames` offered for subscribers that join late or resume
    /// ([`crate::StartAt`]), at most `slots - 2`. The hold budget shrinks by as much: the
    /// subscribers together may hold `slots - 1 - max(history, 1)` frames at once, so give
    /// the ring `history` + the holds wanted + 1 slots.
    pub fn history(mut self, frames: u32) -> Self {
        self.history = frames;
        self
    }

    /// What the publisher does about a lossless subscriber that keeps it waiting for a slot:
    /// wait (`StallPolicy::Block`, the default), or after a while make it lossy (`Demote`) or
    /// evict it (`Evict`).
    pub fn on_stall(mut self, policy: crate::StallPolicy) -> Self {
        self.stall = policy;
        self
    }

    /// Frames in the ring.
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// Subscriber records.
    pub fn max_subscribers(mut self, n: u32) -> Self {
        self.max_subscribers = n;
        self
    }

    /// Back it with the daemon's tmpfs directory.
    pub fn memory(mut self) -> Self {
        self.backing = Backing::Memory;
        self
    }

    /// Permission bits.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Memory order of a frame.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Succeed if an identical stream exists.
    pub fn exist_ok(mut self, yes: bool) -> Self {
        self.exist_ok = yes;
        self
    }
}

impl Client {
    /// Connects to the daemon at `path` and performs the version handshake. The daemon's uid
    /// is checked only if `$MMSHARE_SERVER_UID` is set (see [`ConnectOptions`]).
    ///
    /// # Errors
    /// As [`Client::connect_with`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Client::connect_with(&ConnectOptions::new(path))
    }

    /// Connects as `options` say: checks who the daemon runs as (see [`ConnectOptions`]),
    /// then performs the version handshake.
    ///
    /// # Errors
    /// [`ClientError::Connect`] naming the path; [`ClientError::WrongServer`] naming both uids
    /// if the daemon runs as another user than expected; [`ClientError::BadServerUid`];
    /// [`ClientError::Protocol`] if the daemon speaks another protocol version.
    pub fn connect_with(options: &ConnectOptions) -> Result<Client, ClientError> {
        let path = options.path.clone();
        let expected = options.expected_server_uid()?;
        let (conn, server) = Connection::dial(&path, expected, options.request_timeout()?)?;
        Ok(Client {
            conn: Arc::new(conn),
            path,
            server,
        })
    }

    /// Connects to [`default_socket_path`], whose daemon must run as this user or root (or
    /// as the uid in `$MMSHARE_SERVER_UID`): [`ConnectOptions::default_socket`].
    ///
    /// # Errors
    /// As [`Client::connect_with`].
    pub fn connect_default() -> Result<Client, ClientError> {
        Client::connect_with(&ConnectOptions::default_socket())
    }

    /// The socket this client is connected to.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// The daemon's name and version, from the handshake. (`Client::server` attaches a
    /// service's server.)
    pub fn server_name(&self) -> &str {
        &self.server
    }

    fn call(&self, request: &Request) -> Result<(Response, Vec<OwnedFd>), ClientError> {
        match self.conn.call(request)? {
            (Response::Error { kind, message }, _) => Err(ClientError::Server { kind, message }),
            ok => Ok(ok),
        }
    }

    /// An array reply: its description, the array's descriptor, and its control file's if the
    /// daemon sent one.
    fn call_for_array(
        &self,
        request: &Request,
    ) -> Result<(ArrayInfo, OwnedFd, Option<OwnedFd>), ClientError> {
        match self.call(request)? {
            (Response::Array(info), fds) => {
                let mut fds = fds.into_iter();
                match fds.next() {
                    Some(fd) => Ok((info, fd, fds.next())),
                    None => Err(ClientError::Protocol(
                        "reply carried no file descriptor".into(),
                    )),
                }
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    fn shared(
        &self,
        info: ArrayInfo,
        (fd, control): (OwnedFd, Option<OwnedFd>),
        access: Access,
    ) -> Result<Shared<RawArray>, ClientError> {
        let control = control.map(std::fs::File::from).and_then(adopt_control);
        let data = std::fs::File::from(fd);
        // The data file is marked too: the daemon keeps counting a deleted array's memory
        // against its owner while someone still maps it.
        let _ = sys::hold_participant_lock(&data);
        let lease = (access == Access::Write).then(|| {
            let again = Request::Open {
                name: info.name.clone(),
                access: OpenAccess::Write,
            };
            self.conn.lease(again, &data)
        });
        let mut raw = RawArray::from_files(data, control, access)?;
        if access == Access::Write {
            raw.register_writer();
        }
        Ok(Shared {
            array: raw,
            info,
            _lease: lease,
        })
    }

    /// Creates an array and returns a read-write handle on it.
    ///
    /// # Errors
    /// [`ClientError::Server`] with `AlreadyExists`, `InvalidName`, `InvalidDtype`,
    /// `InvalidShape`, `QuotaExceeded`, `NoSpace`, ...
    pub fn create(&self, options: &CreateOptions) -> Result<Shared<RawArray>, ClientError> {
        let request = Request::Create {
            name: options.name.clone(),
            dtype: options.dtype.clone(),
            shape: options.shape.clone(),
            order: wire_order(options.order),
            backing: options.backing,
            mode: options.mode,
            exist_ok: options.exist_ok,
            stripes: options.stripes,
            sparse: options.sparse,
        };
        let (info, fd, control) = self.call_for_array(&request)?;
        self.shared(info, (fd, control), Access::Write)
    }

    /// Creates a file-backed, mode 0600 array of `T` and returns a typed read-write handle.
    ///
    /// # Errors
    /// As [`Client::create`].
    pub fn create_array<T: Element>(
        &self,
        name: &str,
        shape: &[u64],
    ) -> Result<Shared<Array<T>>, ClientError> {
        let dtype = T::dtype().map_err(OpenError::ElementDType)?;
        self.create(&CreateOptions::new(name, dtype.descr(), shape))?
            .typed()
    }

    /// Opens an array as `T` elements.
    ///
    /// # Errors
    /// `NotFound`, `PermissionDenied` from the daemon; [`OpenError::DTypeMismatch`] if the
    /// array holds another dtype.
    pub fn open<T: Element>(
        &self,
        name: &str,
        access: Access,
    ) -> Result<Shared<Array<T>>, ClientError> {
        self.open_raw(name, access)?.typed()
    }

    /// Opens an array untyped.
    ///
    /// # Errors
    /// As [`Client::open`], without the dtype check.
    pub fn open_raw(&self, name: &str, access: Access) -> Result<Shared<RawArray>, ClientError> {
        let request = Request::Open {
            name: name.to_owned(),
            access: match access {
                Access::Read => OpenAccess::Read,
                Access::Write => OpenAccess::Write,
            },
        };
        let (info, fd, control) = self.call_for_array(&request)?;
        self.shared(info, (fd, control), access)
    }

    /// Describes an array.
    ///
    /// # Errors
    /// `NotFound`, `PermissionDenied`.
    pub fn stat(&self, name: &str) -> Result<ArrayInfo, ClientError> {
        match self.call(&Request::Stat {
            name: name.to_owned(),
        })? {
            (Response::Array(info), _) => Ok(info),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Lists the arrays whose names start with `prefix`, in name order (all pages).
    ///
    /// # Errors
    /// Connection or protocol errors.
    pub fn list(&self, prefix: &str) -> Result<Vec<ArrayInfo>, ClientError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let request = Request::List {
                prefix: prefix.to_owned(),
                after: after.take(),
            };
            match self.call(&request)? {
                (Response::List { arrays, more }, _) => {
                    after = arrays.last().map(|a| a.name.clone());
                    all.extend(arrays);
                    if !more || after.is_none() {
                        return Ok(all);
                    }
                }
                (other, _) => return Err(unexpected(&other)),
            }
        }
    }

    /// Waits until an array or a stream named `name` exists (and this uid may read it), at
    /// most `timeout` (a day at most); returns its description. The daemon answers when it
    /// creates the object (it is woken by the creation; nothing polls), or at once if the
    /// object is there. The wait has a connection of its own, so other requests through this
    /// client go on meanwhile.
    ///
    /// # Errors
    /// [`ClientError::Server`] with `ErrorKind::Timeout` naming the name and the wait;
    /// `InvalidName`; connection errors.
    pub fn wait_for(&self, name: &str, timeout: Duration) -> Result<ObjectInfo, ClientError> {
        self.wait_for_until(name, timeout, &mut || false)?
            .ok_or_else(|| ClientError::Protocol("a wait that cannot stop stopped".into()))
    }

    /// [`Client::wait_for`] that calls `stop` about every 100 ms while it waits and gives up
    /// (`Ok(None)`) when it says so: for bindings that must let a signal handler run (Python's
    /// Ctrl-C). One request all the same: the daemon is not asked again.
    #[doc(hidden)]
    pub fn wait_for_until(
        &self,
        name: &str,
        timeout: Duration,
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<Option<ObjectInfo>, ClientError> {
        let timeout = timeout.min(MAX_WAIT);
        let conn = self.send_wait_for(name, timeout)?;
        let mut guard = conn.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Room for the daemon's answer after the wait: the connection's usual timeout again.
        let patience = (!self.conn.timeout.is_zero()).then(|| timeout + self.conn.timeout);
        let started = std::time::Instant::now();
        let (fd, buf) = &mut *guard;
        let got = loop {
            rustix::net::sockopt::set_socket_timeout(
                &*fd,
                rustix::net::sockopt::Timeout::Recv,
                Some(Duration::from_millis(100)),
            )
            .map_err(|e| ClientError::Io(e.into()))?;
            match sys::recv_message(fd, buf) {
                Ok(got) => break got,
                Err(e) if sys::timed_out(&e) => {
                    if stop() {
                        return Ok(None);
                    }
                    if patience.is_some_and(|p| started.elapsed() > p) {
                        return Err(ClientError::Timeout {
                            path: self.conn.path.clone(),
                            what: "answer WaitFor".into(),
                            waited: started.elapsed(),
                        });
                    }
                }
                Err(e) => return Err(ClientError::Io(e)),
            }
        };
        wait_for_reply(buf, got).map(Some)
    }

    /// Sends a `WaitFor` request on a connection of its own, and returns the connection.
    fn send_wait_for(&self, name: &str, timeout: Duration) -> Result<Connection, ClientError> {
        let (conn, _) = Connection::dial(&self.conn.path, self.conn.expected, self.conn.timeout)?;
        let request = Request::WaitFor {
            name: name.to_owned(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let bytes = proto::encode(&request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        {
            let guard = conn.inner.lock().unwrap_or_else(|p| p.into_inner());
            conn.send(&guard, &bytes, "take WaitFor")?;
        }
        Ok(conn)
    }

    /// [`Client::wait_for`] for an event loop: sends the request on a connection of its own
    /// and returns at once; the loop watches [`PendingWaitFor::fd`] and takes the answer with
    /// [`PendingWaitFor::try_take`]. Dropping it closes the connection (the daemon stops
    /// waiting).
    ///
    /// # Errors
    /// Connecting, or sending the request.
    #[doc(hidden)]
    pub fn start_wait_for(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<PendingWaitFor, ClientError> {
        Ok(PendingWaitFor {
            conn: self.send_wait_for(name, timeout.min(MAX_WAIT))?,
        })
    }

    /// Watches the arrays and streams whose names start with `prefix` (that this uid may
    /// read): each one created or deleted, and each change of a stream's subscribers, as the
    /// daemon sees them, from the moment this returns. A connection of its own carries the
    /// events; dropping the [`Watch`] ends it.
    ///
    /// # Errors
    /// Connection errors.
    pub fn watch(&self, prefix: &str) -> Result<Watch, ClientError> {
        let (conn, _) = Connection::dial(&self.conn.path, self.conn.expected, self.conn.timeout)?;
        let request = Request::Watch {
            prefix: prefix.to_owned(),
        };
        match conn.call(&request)? {
            (Response::Event(WatchEvent::Ready), _) => Ok(Watch { conn }),
            (Response::Error { kind, message }, _) => Err(ClientError::Server { kind, message }),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Describes an array or a stream.
    ///
    /// # Errors
    /// `NotFound`, `PermissionDenied`.
    pub fn describe(&self, name: &str) -> Result<ObjectInfo, ClientError> {
        match self.call(&Request::Stat {
            name: name.to_owned(),
        })? {
            (Response::Array(info), _) => Ok(ObjectInfo::Array(info)),
            (Response::Stream(info), _) => Ok(ObjectInfo::Stream(info)),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Lists the arrays and streams whose names start with `prefix`, in name order (all
    /// pages). Streams come without their subscriber lists (use [`Client::describe`]).
    ///
    /// # Errors
    /// Connection or protocol errors.
    pub fn list_all(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ClientError> {
        let mut all: Vec<ObjectInfo> = Vec::new();
        let mut after = None;
        loop {
            let request = Request::ListAll {
                prefix: prefix.to_owned(),
                after: after.take(),
            };
            match self.call(&request)? {
                (Response::Objects { objects, more }, _) => {
                    after = objects.last().map(|o| o.name().to_owned());
                    all.extend(objects);
                    if !more || after.is_none() {
                        return Ok(all);
                    }
                }
                (other, _) => return Err(unexpected(&other)),
            }
        }
    }

    /// Creates a stream (a ring of frames); attach to it with [`Client::publisher`] and
    /// [`Client::subscribe`].
    ///
    /// # Errors
    /// [`ClientError::Server`] with `AlreadyExists`, `InvalidName`, `InvalidDtype`,
    /// `InvalidShape` (also for bad `slots` or `max_subscribers`), `QuotaExceeded`, `NoSpace`.
    pub fn create_stream(&self, options: &StreamOptions) -> Result<StreamInfo, ClientError> {
        let request = Request::CreateStream {
            name: options.name.clone(),
            dtype: options.dtype.clone(),
            shape: options.shape.clone(),
            order: wire_order(options.order),
            slots: options.slots,
            max_subscribers: options.max_subscribers,
            backing: options.backing,
            mode: options.mode,
            exist_ok: options.exist_ok,
            stall: options.stall.into(),
            history: options.history,
            header: options.header.clone().unwrap_or_default(),
            variable: options.variable,
            max_publishers: options.max_publishers,
        };
        match self.call(&request)? {
            (Response::Stream(info), _) => Ok(info),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Opens stream `name` in `role` through the daemon: every lane's files, and the lease
    /// that must live as long as the handles made from them.
    pub(crate) fn open_stream_files(
        &self,
        name: &str,
        role: StreamRole,
    ) -> Result<(Vec<StreamFiles>, Arc<Lease>), ClientError> {
        let request = Request::OpenStream {
            name: name.to_owned(),
            role,
        };
        let (info, fds) = match self.call(&request)? {
            (Response::Stream(info), fds) => (info, fds),
            (other, _) => return Err(unexpected(&other)),
        };
        let lanes = info.max_publishers.max(1) as usize;
        if fds.len() != 2 * lanes {
            return Err(ClientError::Protocol(format!(
                "a reply for a stream of {lanes} lanes must carry {} file descriptors, not {}",
                2 * lanes,
                fds.len()
            )));
        }
        let mut fds = fds.into_iter();
        let mut files = Vec::with_capacity(lanes);
        let mut lease = None;
        while let (Some(data), Some(control)) = (fds.next(), fds.next()) {
            let Some(control) = adopt_control(std::fs::File::from(control)) else {
                return Err(ClientError::Protocol(format!(
                    "the daemon sent stream {name:?}'s control state in a file whose size anyone \
                     holding it could change (not a sealed memfd); refusing to map it"
                )));
            };
            let data = std::fs::File::from(data);
            // As for arrays: a deleted stream's memory stays counted while someone maps it.
            let _ = sys::hold_participant_lock(&data);
            if lease.is_none() {
                lease = Some(self.conn.lease(request.clone(), &data));
            }
            files.push(StreamFiles::from_files(
                data,
                control,
                role == StreamRole::Publish,
            )?);
        }
        let lease = lease.expect("at least one lane");
        Ok((files, Arc::new(lease)))
    }

    /// Attaches as the publisher of stream `name` (needs write permission). The connection
    /// stays open while the publisher lives.
    ///
    /// # Errors
    /// `NotFound`, `WrongKind`, `PermissionDenied`, `Busy` (another publisher is attached)
    /// from the daemon; [`StreamError`] from the files (a dtype mismatch included).
    pub fn publisher<T: Element>(&self, name: &str) -> Result<Publisher<T>, ClientError> {
        let (files, conn) = self.open_stream_files(name, StreamRole::Publish)?;
        Ok(Publisher::attach_any(files)?.with_lease(conn))
    }

    /// Subscribes to stream `name` (needs read permission), holding at most
    /// [`crate::DEFAULT_MAX_HELD`] samples at once, starting where `delivery` starts by
    /// default ([`crate::SubscribeOptions::start_at`]).
    ///
    /// # Errors
    /// As [`Client::subscribe_with`].
    pub fn subscribe<T: Element>(
        &self,
        name: &str,
        delivery: Delivery,
    ) -> Result<Subscriber<T>, ClientError> {
        self.subscribe_with(name, delivery)
    }

    /// Subscribes to stream `name` with `options` (a [`Delivery`], or
    /// [`crate::SubscribeOptions`]: the samples held at once, fewer if the stream's hold
    /// budget is short, and where to start). The connection stays open while the subscriber
    /// lives, so the daemon reclaims its record if the process dies.
    ///
    /// # Errors
    /// `NotFound`, `WrongKind`, `PermissionDenied` from the daemon; [`StreamError`]
    /// (`NoRecord`, `NoHoldBudget`, a dtype mismatch).
    pub fn subscribe_with<T: Element>(
        &self,
        name: &str,
        options: impl Into<crate::SubscribeOptions>,
    ) -> Result<Subscriber<T>, ClientError> {
        let (files, conn) = self.open_stream_files(name, StreamRole::Subscribe)?;
        Ok(Subscriber::attach_lanes(files, options)?.with_lease(conn))
    }

    /// [`Client::publisher`] for a stream of any dtype, handling frames as bytes
    /// ([`Publisher::attach_bytes`]).
    ///
    /// # Errors
    /// As [`Client::publisher`], without the dtype check.
    pub fn publisher_bytes(&self, name: &str) -> Result<Publisher<u8>, ClientError> {
        let (files, conn) = self.open_stream_files(name, StreamRole::Publish)?;
        Ok(Publisher::attach_any_bytes(files)?.with_lease(conn))
    }

    /// [`Client::subscribe_with`] for a stream of any dtype, handling frames as bytes
    /// ([`Subscriber::attach_bytes`]).
    ///
    /// # Errors
    /// As [`Client::subscribe_with`], without the dtype check.
    pub fn subscribe_bytes(
        &self,
        name: &str,
        options: impl Into<crate::SubscribeOptions>,
    ) -> Result<Subscriber<u8>, ClientError> {
        let (files, conn) = self.open_stream_files(name, StreamRole::Subscribe)?;
        Ok(Subscriber::attach_lanes_bytes(files, options)?.with_lease(conn))
    }

    /// Deletes an array. Processes that map it keep working; the name is free at once.
    ///
    /// # Errors
    /// `NotFound`, `PermissionDenied`.
    pub fn delete(&self, name: &str) -> Result<(), ClientError> {
        match self.call(&Request::Delete {
            name: name.to_owned(),
        })? {
            (Response::Deleted, _) => Ok(()),
            (other, _) => Err(unexpected(&other)),
        }
    }
}

/// Takes control state the daemon sent: only a memfd sealed against resizing (a file that
/// another participant could truncate would turn this process's accesses into SIGBUS), marked
/// with this handle's participant lock so that the daemon and its descriptor keeper know the
/// state is in use (`sys::hold_participant_lock`). A lock that cannot be taken (someone holds
/// a conflicting one on purpose) costs only that: the state may be dropped while this handle
/// still uses it once every other participant has gone.
fn adopt_control(control: std::fs::File) -> Option<std::fs::File> {
    if !sys::is_sealed(&control) {
        return None;
    }
    let _ = sys::hold_participant_lock(&control);
    Some(control)
}

fn unexpected(response: &Response) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {response:?}"))
}

fn program_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "rust-client".into())
}

/// An array handed out by the daemon: the mapping plus the reply that described it.
///
/// Dereferences to the handle (`Array<T>` or `RawArray`), so every seqlock operation is there.
/// A handle opened for writing keeps its connection open (the writer's lease).
#[derive(Debug)]
pub struct Shared<A> {
    array: A,
    info: ArrayInfo,
    _lease: Option<Lease>,
}

impl<A> Deref for Shared<A> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.array
    }
}

impl<A> Shared<A> {
    /// The daemon's description of the array when it was opened.
    pub fn info(&self) -> &ArrayInfo {
        &self.info
    }

    /// Mutable access to the handle's settings (timeout, torn policy).
    pub fn handle_mut(&mut self) -> &mut A {
        &mut self.array
    }
}

impl Shared<RawArray> {
    /// Types the handle.
    ///
    /// # Errors
    /// [`OpenError::DTypeMismatch`] (as a [`ClientError::Open`]).
    pub fn typed<T: Element>(self) -> Result<Shared<Array<T>>, ClientError> {
        Ok(Shared {
            array: Array::from_raw(self.array)?,
            info: self.info,
            _lease: self._lease,
        })
    }

    /// The array's dtype.
    pub fn dtype(&self) -> DType {
        self.array.header().dtype.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client takes control state only as a memfd sealed against resizing: a plain file (which
    /// any holder could truncate) is refused, a sealed memfd is taken and marked with the
    /// participant lock, which the daemon's side of the memfd then sees.
    #[test]
    fn only_sealed_control_state_is_taken_and_it_is_marked_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let plain = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("control"))
            .unwrap();
        plain.set_len(4096).unwrap();
        assert!(adopt_control(plain).is_none());
        let daemons = crate::array::control::new_array_control("sealed").unwrap();
        assert!(!sys::has_participants(&daemons).unwrap());
        let clients = adopt_control(sys::reopen(&daemons).unwrap()).expect("sealed state");
        assert!(sys::has_participants(&daemons).unwrap());
        drop(clients);
        assert!(!sys::has_participants(&daemons).unwrap());
    }
}
