//! The metrics endpoint (`mmshared --metrics ADDR`, off by default): the Prometheus text format
//! (version 0.0.4) over HTTP, on a Unix socket or a loopback TCP address, encoded by the
//! `prometheus-client` crate.
//!
//! What it shows is read when it is scraped: every object (an array's versions and bytes, a
//! stream's frames, bytes, subscribers with their lag, missed and received frames, dead writers
//! recovered), per user the bytes, objects and connections held against their limits, and the
//! daemon's connections, requests by kind and errors by kind. It shows object names and uids
//! to whoever can reach it, which is why it is off by default, its Unix socket is mode 0600
//! (the daemon's user only), and a TCP address must be a loopback one.
//!
//! The HTTP side is a few lines on purpose: one `GET /metrics` per connection, a request of at
//! most 8 KiB read within 2 s, at most 4 scrapes at once, the answer, and close. A web
//! framework would bring a server this endpoint does not need. The text is rendered on a
//! blocking thread (reading every object's state may touch thousands of files, which must not
//! hold up the workers that serve clients), one render at a time, and reused for a second, so
//! scrapes in a burst cost one render.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mmshare::internal::proto::{Backing, ErrorKind, Request, Response};
use mmshare::{Access, ObjectInfo, RawArray, bridge_stats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::registry::Registry;
use crate::shutdown::Shutdown;
use crate::slots::Slots;

/// Where the endpoint listens: a Unix socket path, or a loopback TCP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket (mode 0600) at this path.
    Unix(PathBuf),
    /// A TCP address on a loopback interface.
    Tcp(SocketAddr),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "http://{a}/metrics"),
        }
    }
}

/// Parses `--metrics`: a path (anything with a `/`) is a Unix socket; otherwise a loopback
/// `IP:PORT`.
///
/// # Errors
/// What is wrong, with the value.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    if text.contains('/') {
        return Ok(Endpoint::Unix(PathBuf::from(text)));
    }
    let addr: SocketAddr = text.parse().map_err(|_| {
        format!("{text:?} is neither a socket path (with a '/') nor an address like 127.0.0.1:9464")
    })?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: the metrics show object names and uids, so they \
             are served on 127.0.0.1, ::1 or a Unix socket only"
        ));
    }
    Ok(Endpoint::Tcp(addr))
}

/// A request kind or an error kind, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// What the connection handlers count as they go.
#[derive(Debug, Default)]
pub struct Counters {
    requests: Family<Kind, Counter>,
    errors: Family<Kind, Counter>,
    refused: Counter,
    rechecks: Counter,
}

impl Counters {
    /// Counts a request.
    pub(crate) fn request(&self, request: &Request) {
        let kind = match request {
            Request::Hello { .. } => "hello",
            Request::Create { .. } => "create",
            Request::Open { .. } => "open",
            Request::Stat { .. } => "stat",
            Request::List { .. } => "list",
            Request::Delete { .. } => "delete",
            Request::CreateStream { .. } => "create_stream",
            Request::OpenStream { .. } => "open_stream",
            Request::ListAll { .. } => "list_all",
            Request::WaitFor { .. } => "wait_for",
            Request::Watch { .. } => "watch",
        };
        self.requests.get_or_create(&Kind { kind }).inc();
    }

    /// Counts a reply that is an error, by kind.
    pub(crate) fn reply(&self, response: &Response) {
        if let Response::Error { kind, .. } = response {
            self.errors
                .get_or_create(&Kind {
                    kind: error_name(*kind),
                })
                .inc();
        }
    }

    /// Counts a `WaitFor` that looked again after it was woken (by the creation of its
    /// name, or after it fell behind the changes).
    pub(crate) fn recheck(&self) {
        self.rechecks.inc();
    }

    /// Counts a connection refused for want of a slot or a descriptor.
    pub(crate) fn refused(&self) {
        self.refused.inc();
    }
}

fn error_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "not_found",
        ErrorKind::AlreadyExists => "already_exists",
        ErrorKind::InvalidName => "invalid_name",
        ErrorKind::InvalidDtype => "invalid_dtype",
        ErrorKind::InvalidShape => "invalid_shape",
        ErrorKind::PermissionDenied => "permission_denied",
        ErrorKind::QuotaExceeded => "quota_exceeded",
        ErrorKind::NoSpace => "no_space",
        ErrorKind::Busy => "busy",
        ErrorKind::ProtocolError => "protocol_error",
        ErrorKind::Internal => "internal",
        ErrorKind::WrongKind => "wrong_kind",
        ErrorKind::Timeout => "timeout",
        _ => "other",
    }
}

/// Builds the metrics registry of a daemon: the counters, and what is read at each scrape.
pub(crate) fn registry(
    counters: &Arc<Counters>,
    objects: Arc<Registry>,
    slots: Slots,
) -> prometheus_client::registry::Registry {
    let mut r = prometheus_client::registry::Registry::with_prefix("mmshare");
    r.register(
        "requests",
        "Requests answered, by kind",
        counters.requests.clone(),
    );
    r.register(
        "errors",
        "Requests answered with an error, by the error's kind",
        counters.errors.clone(),
    );
    r.register(
        "connections_refused",
        "Connections refused at once (no slot for the user, or no descriptor)",
        counters.refused.clone(),
    );
    r.register(
        "wait_rechecks",
        "Times a WaitFor looked for its name again: once per creation of that name (it is \
         woken by the creation, it does not poll)",
        counters.rechecks.clone(),
    );
    r.register_collector(Box::new(Snapshot { objects, slots }));
    r
}

/// What is read from the registry and the connection slots at each scrape.
#[derive(Debug)]
struct Snapshot {
    objects: Arc<Registry>,
    slots: Slots,
}

/// Encodes one metric family: a descriptor, then each labelled value.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    items: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in items {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The counters of a bridge's stats array, read through a mapping of its own with a short
/// timeout (its writer is a client: a seqlock it leaves odd must not hold up a scrape).
fn bridge_words(a: &mmshare::ArrayInfo) -> Option<[u64; bridge_stats::WORDS]> {
    let mut bytes = [0u8; bridge_stats::WORDS * 8];
    if a.dtype != "<u8" || a.data_len != bytes.len() as u64 {
        return None;
    }
    let mut raw = RawArray::open(&a.path, Access::Read).ok()?;
    raw.set_timeout(Duration::from_millis(20));
    raw.read_bytes(0, &mut bytes).ok()?;
    bridge_stats::from_bytes(&bytes)
}

fn gauge(v: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

fn counter(v: u64) -> ConstCounter {
    ConstCounter::new(v)
}

fn backing(b: Backing) -> String {
    match b {
        Backing::File => "file".to_owned(),
        Backing::Memory => "memory".to_owned(),
    }
}

type Labels = Vec<(&'static str, String)>;

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        use MetricType::{Counter as C, Gauge as G};
        let snap = self.objects.metrics_snapshot();
        let limits = self.objects.limits();
        let mut arrays = Vec::new();
        let mut streams = Vec::new();
        for object in &snap.objects {
            match object {
                ObjectInfo::Array(a) => arrays.push(a),
                ObjectInfo::Stream(s) => streams.push(s),
            }
        }
        let object = |name: &str, uid: u32, b: Backing| -> Labels {
            vec![
                ("name", name.to_owned()),
                ("owner_uid", uid.to_string()),
                ("backing", backing(b)),
            ]
        };
        let a_labels = |a: &&mmshare::ArrayInfo| object(&a.name, a.owner_uid, a.backing);
        family(
            &mut e,
            "array_versions",
            "Versions published (writes) of an array; rate() is its updates per second",
            C,
            arrays.iter().map(|a| (a_labels(a), counter(a.version))),
        )?;
        family(
            &mut e,
            "array_written_bytes",
            "Bytes written into an array, each version counted whole (a write of part of it \
             counts the array's size)",
            C,
            arrays
                .iter()
                .map(|a| (a_labels(a), counter(a.version.saturating_mul(a.data_len)))),
        )?;
        family(
            &mut e,
            "array_size_bytes",
            "Size of an array's data",
            G,
            arrays.iter().map(|a| (a_labels(a), gauge(a.data_len))),
        )?;
        family(
            &mut e,
            "array_torn",
            "1 while an array's current version is marked torn (a writer died mid-write)",
            G,
            arrays
                .iter()
                .map(|a| (a_labels(a), gauge(u64::from(a.torn)))),
        )?;
        family(
            &mut e,
            "array_recoveries",
            "Writers found dead mid-write and recovered by the daemon, per array, since it \
             started",
            C,
            arrays.iter().map(|a| {
                let n = snap.recoveries.get(&a.name).copied().unwrap_or(0);
                (a_labels(a), counter(n))
            }),
        )?;
        let s_labels = |s: &&mmshare::StreamInfo| object(&s.name, s.owner_uid, s.backing);
        family(
            &mut e,
            "stream_frames",
            "Frames published on a stream; rate() is its frames per second",
            C,
            streams.iter().map(|s| (s_labels(s), counter(s.published))),
        )?;
        family(
            &mut e,
            "stream_published_bytes",
            "Bytes published on a stream (frames times the frame size)",
            C,
            streams.iter().map(|s| {
                (
                    s_labels(s),
                    counter(s.published.saturating_mul(s.frame_len)),
                )
            }),
        )?;
        family(
            &mut e,
            "stream_publisher_attached",
            "1 while a publisher is attached to a stream",
            G,
            streams
                .iter()
                .map(|s| (s_labels(s), gauge(u64::from(s.publisher.is_some())))),
        )?;
        family(
            &mut e,
            "stream_subscribers",
            "Subscribers of a stream",
            G,
            streams
                .iter()
                .map(|s| (s_labels(s), gauge(s.subscribers.len() as u64))),
        )?;
        family(
            &mut e,
            "stream_max_lag_frames",
            "Frames the furthest-behind subscriber of a stream has yet to take",
            G,
            streams.iter().map(|s| {
                let lag = s.subscribers.iter().map(|x| x.lag).max().unwrap_or(0);
                (s_labels(s), gauge(lag))
            }),
        )?;
        // Per subscriber, labelled by the pid it recorded and its mode. Two subscriptions of
        // one process in one mode share those labels: they are summed (the lag is the larger),
        // since Prometheus refuses two samples of one series.
        let mut per_subscriber: std::collections::BTreeMap<(String, u32, bool), (u64, u64, u64)> =
            std::collections::BTreeMap::new();
        for s in &streams {
            for x in &s.subscribers {
                let entry = per_subscriber
                    .entry((s.name.clone(), x.pid, x.lossless))
                    .or_default();
                entry.0 = entry.0.max(x.lag);
                entry.1 = entry.1.saturating_add(x.missed);
                entry.2 = entry.2.saturating_add(x.received);
            }
        }
        let subscribers = || {
            per_subscriber.iter().map(|((name, pid, lossless), v)| {
                let labels: Labels = vec![
                    ("name", name.clone()),
                    ("pid", pid.to_string()),
                    (
                        "delivery",
                        if *lossless { "lossless" } else { "lossy" }.to_owned(),
                    ),
                ];
                (labels, *v)
            })
        };
        family(
            &mut e,
            "subscriber_lag_frames",
            "Frames published that a subscriber has yet to take (pid: the one the subscriber \
             recorded in its record)",
            G,
            subscribers().map(|(l, v)| (l, gauge(v.0))),
        )?;
        family(
            &mut e,
            "subscriber_missed_frames",
            "Frames a subscriber skipped (taken back before it took them)",
            C,
            subscribers().map(|(l, v)| (l, counter(v.1))),
        )?;
        family(
            &mut e,
            "subscriber_received_frames",
            "Frames a subscriber took",
            C,
            subscribers().map(|(l, v)| (l, counter(v.2))),
        )?;

        // Users, against their limits (the daemon's own uid and root have none of their own).
        let (connections, per_uid) = self.slots.counts();
        let slot_limits = self.slots.limits();
        let uid = |u: u32| -> Labels { vec![("uid", u.to_string())] };
        family(
            &mut e,
            "user_bytes",
            "Bytes a user's objects take, per directory (file or memory)",
            G,
            snap.usage.iter().flat_map(|(u, bytes, _)| {
                [Backing::File, Backing::Memory]
                    .into_iter()
                    .zip(bytes.iter().copied())
                    .map(move |(b, n)| {
                        let mut l = uid(*u);
                        l.push(("backing", backing(b)));
                        (l, gauge(n))
                    })
            }),
        )?;
        family(
            &mut e,
            "user_bytes_limit",
            "Most bytes one user other than the daemon's own and root may have, per directory",
            G,
            [Backing::File, Backing::Memory].into_iter().map(|b| {
                (
                    vec![("backing", backing(b))],
                    gauge(self.objects.user_byte_cap(b)),
                )
            }),
        )?;
        family(
            &mut e,
            "user_objects",
            "Arrays and streams a user owns",
            G,
            snap.usage
                .iter()
                .map(|(u, _, objects)| (uid(*u), gauge(*objects as u64))),
        )?;
        family(
            &mut e,
            "user_objects_limit",
            "Most arrays and streams one user other than the daemon's own and root may own",
            G,
            [(Labels::new(), gauge(limits.max_objects_per_user as u64))],
        )?;
        family(
            &mut e,
            "user_connections",
            "Connections a user holds",
            G,
            per_uid.iter().map(|(u, n)| (uid(*u), gauge(*n as u64))),
        )?;
        family(
            &mut e,
            "user_connections_limit",
            "Most connections one user other than the daemon's own and root may hold",
            G,
            [(Labels::new(), gauge(slot_limits.per_user as u64))],
        )?;

        // The daemon as a whole.
        family(
            &mut e,
            "connections",
            "Connections held now",
            G,
            [(Labels::new(), gauge(connections as u64))],
        )?;
        family(
            &mut e,
            "connections_limit",
            "Most connections the daemon holds (--max-connections, within its descriptor \
             limit)",
            G,
            [(Labels::new(), gauge(slot_limits.total as u64))],
        )?;
        family(
            &mut e,
            "objects",
            "Arrays and streams the daemon holds",
            G,
            [(Labels::new(), gauge(snap.objects.len() as u64))],
        )?;
        family(
            &mut e,
            "objects_limit",
            "Most arrays and streams the daemon holds (--max-arrays)",
            G,
            [(Labels::new(), gauge(limits.max_arrays as u64))],
        )?;
        family(
            &mut e,
            "bytes",
            "Bytes all objects take",
            G,
            [(Labels::new(), gauge(snap.bytes))],
        )?;
        // What mmshare-bridge carries to and from other hosts, from the counter arrays it
        // keeps here (mmshare::bridge_stats); an array of such a name that does not hold
        // that layout is skipped.
        let bridged: Vec<(Labels, [u64; bridge_stats::WORDS])> = arrays
            .iter()
            .filter_map(|a| {
                let (direction, object) = bridge_stats::parse_name(&a.name)?;
                let words = bridge_words(a)?;
                let labels = vec![
                    ("object", object.to_owned()),
                    ("direction", direction.as_str().to_owned()),
                ];
                Some((labels, words))
            })
            .collect();
        for (name, help, i) in [
            (
                "bridge_frames",
                "Frames (array versions) a bridge carried to or from another host; rate() is \
                 frames per second",
                bridge_stats::word::FRAMES,
            ),
            (
                "bridge_bytes",
                "Bytes a bridge carried (frame data and per-frame headers); rate() is bytes \
                 per second",
                bridge_stats::word::BYTES,
            ),
            (
                "bridge_lost_frames",
                "Frames a bridge could not deliver: skipped numbers, counted, never delivered",
                bridge_stats::word::LOST,
            ),
            (
                "bridge_reconnects",
                "Times the other side of a bridge came back after it had been seen",
                bridge_stats::word::RECONNECTS,
            ),
            (
                "bridge_resumes",
                "Resumes a bridge asked for (importing) or served (exporting) after a gap",
                bridge_stats::word::RESUMES,
            ),
            (
                "bridge_dropped_frames",
                "Frames a bridge dropped as torn, malformed or not fitting the local object",
                bridge_stats::word::DROPPED,
            ),
            (
                "bridge_copied_bytes",
                "Bytes a bridge copied itself (sending: per-frame headers only; receiving: \
                 each byte once, into the local slot)",
                bridge_stats::word::COPIED,
            ),
        ] {
            family(
                &mut e,
                name,
                help,
                C,
                bridged.iter().map(|(l, w)| (l.clone(), counter(w[i]))),
            )?;
        }
        family(
            &mut e,
            "bridge_connected",
            "1 while the other side of a bridge is connected",
            G,
            bridged
                .iter()
                .map(|(l, w)| (l.clone(), gauge(w[bridge_stats::word::CONNECTED]))),
        )?;
        Ok(())
    }
}

/// The text the endpoint answers with.
fn render(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
        warn!("cannot encode the metrics: {e}");
    }
    text
}

/// How long a rendered text is served again.
const REUSE_FOR: Duration = Duration::from_secs(1);

/// The metrics registry, and its last rendering.
#[derive(Debug)]
pub(crate) struct Exporter {
    registry: prometheus_client::registry::Registry,
    last: std::sync::Mutex<Option<(std::time::Instant, Arc<String>)>>,
}

impl Exporter {
    pub(crate) fn new(registry: prometheus_client::registry::Registry) -> Exporter {
        Exporter {
            registry,
            last: std::sync::Mutex::new(None),
        }
    }

    /// The text: the last rendering if it is recent, else a new one. Blocking (it reads every
    /// object's state): call it off the async workers. One render at a time: a scrape that
    /// comes during one waits for it and gets its text.
    fn text(&self) -> Arc<String> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, text)) = last.as_ref()
            && at.elapsed() < REUSE_FOR
        {
            return text.clone();
        }
        let text = Arc::new(render(&self.registry));
        *last = Some((std::time::Instant::now(), text.clone()));
        text
    }
}

/// Most scrapes answered at once.
const MAX_SCRAPES: usize = 4;
/// The longest request read, and how long it may take.
const MAX_REQUEST: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds the endpoint: a Unix socket is made mode 0600 (a stale one is replaced, a live one
/// refused).
///
/// # Errors
/// One line naming the endpoint.
pub(crate) async fn bind(endpoint: &Endpoint) -> Result<Listener, String> {
    match endpoint {
        Endpoint::Unix(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::dirs::check_socket_dir(dir).map_err(|e| {
                    format!(
                        "--metrics {}: its directory {}: refusing to listen there",
                        path.display(),
                        e.explain(dir)
                    )
                })?;
            }
            replace_stale(path)?;
            let listener = tokio::net::UnixListener::bind(path)
                .map_err(|e| format!("--metrics {}: cannot listen: {e}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("--metrics {}: cannot set mode 0600: {e}", path.display()))?;
            Ok(Listener::Unix(listener, path.clone()))
        }
        Endpoint::Tcp(addr) => tokio::net::TcpListener::bind(addr)
            .await
            .map(Listener::Tcp)
            .map_err(|e| format!("--metrics {addr}: cannot listen: {e}")),
    }
}

fn replace_stale(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) if !m.file_type().is_socket() => Err(format!(
            "--metrics {}: exists and is not a socket; refusing to replace it",
            path.display()
        )),
        // Only "connection refused" proves nobody listens (a listener of another kind answers a
        // stream connect with EPROTOTYPE; one we may not reach, with EACCES): anything else is
        // left alone.
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::CONNREFUSED.raw_os_error()) => {
                std::fs::remove_file(path)
                    .map_err(|e| format!("--metrics {}: cannot remove: {e}", path.display()))
            }
            Ok(_) => Err(format!(
                "--metrics {}: another process listens there",
                path.display()
            )),
            Err(e) => Err(format!(
                "--metrics {}: a socket is there and its owner is unknown ({e}); refusing to \
                 replace it",
                path.display()
            )),
        },
    }
}

/// A bound endpoint.
#[derive(Debug)]
pub(crate) enum Listener {
    Unix(tokio::net::UnixListener, PathBuf),
    Tcp(tokio::net::TcpListener),
}

/// Answers scrapes until `shutdown`; removes its Unix socket then.
pub(crate) async fn serve(listener: Listener, registry: Arc<Exporter>, mut shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let accepted: std::io::Result<Box<dyn Stream>> = tokio::select! {
            () = shutdown.wait() => break,
            a = accept(&listener) => a,
        };
        let Ok(stream) = accepted else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        // Beyond MAX_SCRAPES at once, a scrape is closed unanswered.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            answer(stream, &registry).await;
            drop(permit);
        });
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn accept(listener: &Listener) -> std::io::Result<Box<dyn Stream>> {
    Ok(match listener {
        Listener::Unix(l, _) => {
            let (stream, _) = l.accept().await?;
            // The socket is made 0600 only after it listens: a connection of another user made
            // in that moment is refused here, by its credentials.
            let me = rustix::process::geteuid().as_raw();
            match stream.peer_cred() {
                Ok(c) if c.uid() == me || c.uid() == 0 => Box::new(stream),
                _ => return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
            }
        }
        Listener::Tcp(l) => Box::new(l.accept().await?.0),
    })
}

/// Reads one request (bounded in size and time) and answers it.
async fn answer(mut stream: Box<dyn Stream>, registry: &Arc<Exporter>) {
    let mut request = Vec::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return;
    }
    if !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let _ = tokio::time::timeout(
            REQUEST_TIMEOUT,
            stream.write_all(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\
                  Connection: close\r\n\r\n",
            ),
        )
        .await;
        return;
    }
    let line = request
        .split(|&b| b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim_end().to_owned())
        .unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, target.split('?').next()) {
        ("GET", Some("/metrics")) => {
            let exporter = registry.clone();
            match tokio::task::spawn_blocking(move || exporter.text()).await {
                Ok(text) => (
                    "200 OK",
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    text.to_string(),
                ),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "the metrics could not be rendered; see the daemon's log\n".to_owned(),
                ),
            }
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "mmshared serves its metrics at /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics\n".to_owned(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Logs where the endpoint listens.
pub(crate) fn announce(endpoint: &Endpoint) {
    info!("metrics on {endpoint} (they show object names and uids to whoever can connect there)");
}
