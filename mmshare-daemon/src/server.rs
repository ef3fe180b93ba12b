//! The listener and the per-connection handler.
//!
//! Start-up order matters: first make sure no other daemon serves this socket or these
//! directories (a second daemon scanning the directories would delete the first one's
//! in-progress temp files; `Config::prepare_paths` has checked the directories and holds their
//! locks), then rebuild the registry, recover dead writers, and only then bind and announce
//! `listening on <socket>`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use mmshare::internal::proto::{
    ErrorKind, OpenAccess, PROTOCOL_VERSION, Request, Response, WatchEvent,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_seqpacket::{UnixSeqpacket, UnixSeqpacketListener};
use tracing::{debug, error, info, warn};

use crate::Config;
use crate::config::Paths;
use crate::connection::{Connection, Incoming};
use crate::registry::{Creds, Limits, Registry, RequestError, descriptor_limit};
use crate::shutdown::{self, Shutdown};
use crate::slots::{Slot, SlotLimits, Slots};

/// How often every array is checked for a writer that died mid-write. A check of an array
/// with no write in progress is one load of its sequence, so this can be frequent: a writer
/// that is positively dead is recovered well within a second.
const RECOVERY_PERIOD: Duration = Duration::from_millis(250);
/// Connections being refused (Busy) at once; beyond this they are closed without a reply.
const MAX_REFUSALS: usize = 1024;
/// A new connection must say Hello within this time, or it is closed (so idle connections
/// cannot hold every connection slot).
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A reply the client does not read within this time ends the connection (a client that never
/// reads cannot block shutdown or hold a task forever).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Arrays one connection is tracked as writer of (its leases), at most.
const MAX_LEASES: usize = 1024;
/// Consecutive malformed messages after which a client is disconnected.
const MAX_BAD_MESSAGES: u32 = 8;

/// What stops the daemon.
#[derive(Debug)]
pub enum StopOn {
    /// SIGINT or SIGTERM (the `mmshared` binary).
    Signals,
    /// The value in this channel becoming `true` (an embedded daemon).
    Handle(tokio::sync::watch::Receiver<bool>),
}

enum Stop {
    Signals(shutdown::Signals),
    Handle(tokio::sync::watch::Receiver<bool>),
}

/// Runs the daemon until it is told to stop; sends on `ready` once it listens.
///
/// # Errors
/// A message for the operator: another daemon is running, a directory or the socket cannot be
/// set up.
pub async fn run(
    config: Config,
    mut paths: Paths,
    stop: StopOn,
    ready: Option<SyncSender<()>>,
) -> Result<(), String> {
    // Only `mmshared` itself talks to a service manager, not a daemon embedded in a program.
    let managed = matches!(stop, StopOn::Signals);
    let stop = match stop {
        StopOn::Signals => Stop::Signals(
            shutdown::Signals::install()
                .map_err(|e| format!("cannot install signal handlers: {e}"))?,
        ),
        StopOn::Handle(rx) => Stop::Handle(rx),
    };
    raise_fd_limit();
    let budget = DescriptorBudget::for_limit(descriptor_limit().0, config.max_connections)?;
    if budget.connections < config.max_connections {
        warn!(
            "the descriptor limit (RLIMIT_NOFILE {}) allows {} connections, not --max-connections {}: raise it (ulimit -n, or LimitNOFILE= under systemd) to serve that many",
            descriptor_limit().0,
            budget.connections,
            config.max_connections
        );
    }
    info!(
        limit = descriptor_limit().0,
        connections = budget.connections,
        open_objects = budget.open_objects,
        "descriptor budget"
    );
    for warning in &paths.warnings {
        warn!("{warning}");
    }
    let socket_path = paths.socket.clone();
    let storage = paths.storage.clone();
    let memory = paths.memory.clone();
    // A socket the service manager passed is its own: no stale file to clear, none to remove.
    let passed = paths.passed.take();
    let activated = passed.is_some();
    if !activated {
        check_socket_free(&socket_path)?;
    }
    let limits = Limits {
        max_arrays: config.max_arrays,
        max_bytes: config.max_bytes,
        max_bytes_per_user: config.max_bytes_per_user,
        user_share: config.user_share,
        reserve: config.reserve,
        max_objects_per_user: config.max_objects_per_user,
        daemon_uid: rustix::process::geteuid().as_raw(),
        max_open_objects: budget.open_objects,
    };
    let keeper = if config.no_fd_keeper {
        None
    } else {
        let m = memory.clone();
        let reached = tokio::task::spawn_blocking(move || {
            crate::keeper::Launch::this_executable()
                .and_then(|launch| crate::keeper::Keeper::connect(&m, launch))
        })
        .await
        .map_err(|e| format!("keeper start panicked: {e}"))?;
        match reached {
            Ok((keeper, held)) => {
                // Each client must get its own open file description of control state (a
                // reopen through /proc), or its participant lock is invisible to the keeper.
                let reopens = mmshare::internal::sealed_memfd("mmshare-probe", 4096, &[])
                    .and_then(|f| mmshare::internal::reopen(&f));
                if let Err(e) = reopens {
                    error!(
                        "cannot reopen a memfd through /proc ({e}): the keeper will not see \
                         which control state is in use, and running participants lose it at \
                         the next restart of this daemon"
                    );
                }
                info!(
                    held = held.len(),
                    "descriptor keeper reached: control state survives a daemon restart"
                );
                Some((keeper, held))
            }
            Err(e) => {
                warn!(
                    "no descriptor keeper ({e}): control state will not survive a restart of this daemon"
                );
                None
            }
        }
    };
    let registry = {
        let (s, m) = (storage.clone(), memory.clone());
        tokio::task::spawn_blocking(move || Registry::load(s, m, limits, keeper))
            .await
            .map_err(|e| format!("registry load panicked: {e}"))?
            .map_err(|e| {
                format!(
                    "cannot use array directories {} and {}: {e}",
                    storage.display(),
                    memory.display()
                )
            })?
    };
    let registry = Arc::new(registry);
    {
        let r = registry.clone();
        let _ = tokio::task::spawn_blocking(move || r.recover_all()).await;
    }
    // The metrics endpoint is bound before the daemon says it is ready: one that cannot be
    // bound stops the start.
    let metrics_listener = match &config.metrics {
        Some(endpoint) => Some((endpoint, crate::metrics::bind(endpoint).await?)),
        None => None,
    };
    let listener = match passed {
        Some(fd) => UnixSeqpacketListener::try_from(fd).map_err(|e| {
            format!(
                "cannot use the socket the service manager passed ({}): {e}",
                socket_path.display()
            )
        })?,
        None => bind(&socket_path, config.socket_mode)?,
    };
    info!(
        storage = %storage.display(),
        memory = %memory.display(),
        arrays = registry.len(),
        activated,
        "listening on {}",
        socket_path.display()
    );
    if managed {
        crate::activation::notify_ready(&format!(
            "serving {} objects on {}",
            registry.len(),
            socket_path.display()
        ));
    }

    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(async move {
        match stop {
            Stop::Signals(mut signals) => {
                let name = signals.recv().await;
                info!("{name}: shutting down (again to exit at once)");
                crate::activation::notify_stopping();
                let second = tokio::spawn(async move {
                    let name = signals.recv().await;
                    warn!("{name} again: exiting without waiting for connections");
                    std::process::exit(1);
                });
                drop(second);
            }
            Stop::Handle(mut rx) => {
                let _ = rx.wait_for(|stop| *stop).await;
                info!("stop requested: shutting down");
            }
        }
        trigger.fire();
    });
    tokio::spawn(periodic_recovery(registry.clone(), shutdown.clone()));
    // The watch's subscriber counts (module `presence`): a thread of its own, asleep on the
    // streams' futex words (or on its own while nobody watches).
    let presence = registry.presence.clone();
    let monitor = {
        let (registry, presence) = (registry.clone(), presence.clone());
        std::thread::Builder::new()
            .name("presence".into())
            .spawn(move || crate::presence::monitor(registry, presence))
            .map_err(|e| format!("cannot start the presence thread: {e}"))?
    };

    let slots = Slots::new(
        SlotLimits {
            total: budget.connections,
            reserved: config.reserved_connections.min(budget.connections),
            per_user: config.max_connections_per_user,
        },
        rustix::process::geteuid().as_raw(),
    );
    let idle = (config.idle_timeout > 0).then(|| Duration::from_secs(config.idle_timeout));
    let counters = Arc::new(crate::metrics::Counters::default());
    if let Some((endpoint, bound)) = metrics_listener {
        let metrics = crate::metrics::registry(&counters, registry.clone(), slots.clone());
        crate::metrics::announce(endpoint);
        tokio::spawn(crate::metrics::serve(
            bound,
            Arc::new(crate::metrics::Exporter::new(metrics)),
            shutdown.clone(),
        ));
    }
    let result = accept_loop(listener, registry, slots, idle, shutdown, counters).await;
    presence.stop();
    let _ = tokio::task::spawn_blocking(move || monitor.join()).await;
    if !activated {
        let _ = std::fs::remove_file(&socket_path);
    }
    info!("stopped");
    // The directories' locks are held until here.
    drop(paths);
    result
}

/// Counts a refused connection, and takes a place among the connections being told so.
fn refused(
    counters: &crate::metrics::Counters,
    refusals: &Arc<Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::TryAcquireError> {
    counters.refused();
    refusals.clone().try_acquire_owned()
}

async fn accept_loop(
    mut listener: UnixSeqpacketListener,
    registry: Arc<Registry>,
    slots: Slots,
    idle: Option<Duration>,
    mut shutdown: Shutdown,
    counters: Arc<crate::metrics::Counters>,
) -> Result<(), String> {
    // Every connection task holds a clone of `done_tx`; when all are dropped, `recv` ends.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    // Connections being told Busy are bounded too.
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let mut spare = Spare::take();
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.wait() => break,
        };
        spare.refill();
        let (socket, refusal) = match accepted {
            Ok(s) => (s, None),
            Err(e) => {
                let out_of_descriptors = matches!(
                    rustix::io::Errno::from_io_error(&e),
                    Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
                );
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    warn!("accept failed: {e} (said once every 10 s at most)");
                    last_warning = Some(Instant::now());
                }
                // Out of descriptors: let the spare go to take the waiting connection and tell
                // it so, rather than leave it (and every later one) hanging unanswered.
                if out_of_descriptors && spare.release() {
                    match listener.accept().await {
                        Ok(s) => {
                            let (limit, _) = descriptor_limit();
                            let why = format!(
                                "the daemon is out of file descriptors ({e}; RLIMIT_NOFILE \
                                 {limit}); try again later"
                            );
                            (s, Some(why))
                        }
                        Err(_) => continue,
                    }
                } else {
                    // Back off instead of spinning; keep serving what is connected.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        };
        let creds = match socket.peer_cred() {
            Ok(c) => Creds {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid().map_or(0, |p| p as u32),
            },
            Err(e) => {
                warn!("cannot read peer credentials, closing: {e}");
                continue;
            }
        };
        let taken = match refusal {
            Some(why) => Err(why),
            None => slots.take(creds.uid),
        };
        match taken {
            Ok(slot) => {
                let (registry, shutdown, done, counters) = (
                    registry.clone(),
                    shutdown.clone(),
                    done_tx.clone(),
                    counters.clone(),
                );
                tokio::spawn(async move {
                    handle_connection(socket, creds, slot, registry, idle, shutdown, counters)
                        .await;
                    drop(done);
                });
            }
            Err(why) => match refused(&counters, &refusals) {
                // Read the client's first message before replying Busy and closing: closing a
                // socket with an unread message resets it, and the client would lose the reply.
                Ok(permit) => {
                    tokio::spawn(async move {
                        let mut first = [0u8; 256]; // a Hello fits; the rest is truncated away
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut first))
                                .await;
                        let conn = Connection::new_small(socket);
                        debug!(
                            uid = creds.uid,
                            pid = creds.pid,
                            "connection refused: {why}"
                        );
                        let reply = Response::Error {
                            kind: ErrorKind::Busy,
                            message: why,
                        };
                        let _ = conn.send(&reply, &[]).await;
                        drop(permit);
                    });
                }
                // Even the refusals are at their limit: just close.
                Err(_) => drop(socket),
            },
        }
    }
    drop(listener);
    drop(done_tx);
    let _ = done_rx.recv().await;
    Ok(())
}

/// A descriptor held in reserve (of `/dev/null`): when accepting fails for want of
/// descriptors, it is let go to accept the waiting connection and tell it Busy, and taken again
/// afterwards.
struct Spare(Option<std::fs::File>);

impl Spare {
    fn take() -> Spare {
        Spare(std::fs::File::open("/dev/null").ok())
    }

    /// Lets the spare go; whether there was one.
    fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Takes the spare again if it was let go (and a descriptor is free).
    fn refill(&mut self) {
        if self.0.is_none() {
            *self = Spare::take();
        }
    }
}

async fn periodic_recovery(registry: Arc<Registry>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(RECOVERY_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        let r = registry.clone();
        let _ = tokio::task::spawn_blocking(move || r.recover_all()).await;
    }
}

fn error_response(e: RequestError) -> Response {
    Response::Error {
        kind: e.kind,
        message: e.message,
    }
}

/// Serves one connection until it closes, the daemon stops, or it stays idle: no Hello within
/// [`HELLO_TIMEOUT`], or nothing sent for `idle` while it holds no lease (no write access, no
/// stream; a reader's connection holds none, and its client dials again when it next asks).
/// The connection's `slot` is given back as soon as the connection is closed, before the
/// recovery that may wait for the client process to exit.
async fn handle_connection(
    socket: UnixSeqpacket,
    creds: Creds,
    slot: Slot,
    registry: Arc<Registry>,
    idle: Option<Duration>,
    mut shutdown: Shutdown,
    counters: Arc<crate::metrics::Counters>,
) {
    let mut conn = Connection::new(socket);
    let mut greeted = false;
    let mut bad = 0u32;
    // Arrays this connection opened for writing: its writer leases.
    let mut leases = BTreeSet::new();
    loop {
        let incoming = tokio::select! {
            // A request that is there is read before any timeout is acted on.
            biased;
            incoming = conn.recv() => incoming,
            () = shutdown.wait() => break,
            () = tokio::time::sleep(HELLO_TIMEOUT), if !greeted => {
                debug!(pid = creds.pid, "no Hello within {HELLO_TIMEOUT:?}: closing");
                break;
            }
            () = tokio::time::sleep(idle.unwrap_or_default()), if idle.is_some() && greeted && leases.is_empty() => {
                info!(pid = creds.pid, uid = creds.uid, "idle for {:?} holding nothing: closing", idle.unwrap_or_default());
                break;
            }
        };
        let request = match incoming {
            Ok(Incoming::Request(r)) => r,
            Ok(Incoming::Closed) => break,
            Ok(Incoming::Bad(e)) => {
                bad += 1;
                debug!(pid = creds.pid, "malformed request: {e}");
                let reply = Response::Error {
                    kind: ErrorKind::ProtocolError,
                    message: e.to_string(),
                };
                if !send_within(&conn, &reply, &[]).await || bad >= MAX_BAD_MESSAGES || !greeted {
                    break;
                }
                continue;
            }
            Err(e) => {
                debug!(pid = creds.pid, "connection error: {e}");
                break;
            }
        };
        bad = 0;
        counters.request(&request);
        if !greeted {
            let reply = match request {
                Request::Hello { version, client } if version == PROTOCOL_VERSION => {
                    debug!(pid = creds.pid, uid = creds.uid, client, "hello");
                    greeted = true;
                    Response::Hello {
                        version: PROTOCOL_VERSION,
                        server: format!("mmshared {}", env!("CARGO_PKG_VERSION")),
                    }
                }
                Request::Hello { version, .. } => Response::Error {
                    kind: ErrorKind::ProtocolError,
                    message: format!(
                        "unsupported protocol version {version}: this daemon speaks version {PROTOCOL_VERSION}"
                    ),
                },
                _ => Response::Error {
                    kind: ErrorKind::ProtocolError,
                    message: "the first message on a connection must be Hello".into(),
                },
            };
            counters.reply(&reply);
            if !send_within(&conn, &reply, &[]).await || !greeted {
                break;
            }
            continue;
        }
        // The two requests that wait: each keeps the connection until it is done (a watch
        // for good), and ends it if the client closes it or sends anything meanwhile.
        let request = match request {
            Request::WaitFor { name, timeout_ms } => {
                let wait = Wait {
                    name: &name,
                    timeout_ms,
                    counters: &counters,
                };
                let Some(reply) = wait_for(&registry, creds, &mut conn, wait, &mut shutdown).await
                else {
                    break;
                };
                counters.reply(&reply);
                if !send_within(&conn, &reply, &[]).await {
                    break;
                }
                continue;
            }
            Request::Watch { prefix } => {
                watch(&registry, creds, &mut conn, &prefix, &mut shutdown).await;
                break;
            }
            other => other,
        };
        // Create may reserve gigabytes (fallocate) and fsyncs: run it off the async workers.
        // Everything else is a map lookup and at most one open(2) of a local file, cheaper
        // than the two thread hand-offs a blocking task costs (measured in benches/open.rs).
        let slow = matches!(
            request,
            Request::Create { .. } | Request::CreateStream { .. } | Request::Delete { .. }
        );
        let (reply, files, lease) = if slow {
            let r = registry.clone();
            match tokio::task::spawn_blocking(move || handle_request(&r, creds, request)).await {
                Ok(x) => x,
                Err(e) => {
                    error!("request handler panicked: {e}");
                    (
                        Response::Error {
                            kind: ErrorKind::Internal,
                            message: "internal error; see the daemon log".into(),
                        },
                        Vec::new(),
                        None,
                    )
                }
            }
        } else {
            handle_request(&registry, creds, request)
        };
        if let Some(name) = lease
            && leases.len() < MAX_LEASES
            && !leases.contains(&name)
        {
            // Beyond the cap, the periodic check (every second) still recovers dead writers.
            registry.add_lease(&name, creds.pid);
            leases.insert(name);
        }
        counters.reply(&reply);
        let attached: Vec<&File> = files.iter().collect();
        if !send_within(&conn, &reply, &attached).await {
            debug!(pid = creds.pid, "reply not delivered: closing");
            break;
        }
    }
    drop(conn);
    drop(slot);
    if !leases.is_empty() {
        let names: Vec<String> = leases.into_iter().collect();
        let _ = tokio::task::spawn_blocking(move || {
            registry.recover_after_close(&names, creds.pid);
            registry.release_leases(&names, creds.pid);
        })
        .await;
    }
}

/// The longest `WaitFor` waits (the client asks for at most this).
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// `WaitFor`: `Stat`'s reply once `name` exists and `who` may read it, at once if it does;
/// else woken by each creation of that name (and after a lost change) to look again, until
/// `timeout_ms`. `None` when the connection must end: the client closed it or sent a request
/// before the answer (one request at a time), or the daemon stops.
struct Wait<'a> {
    name: &'a str,
    timeout_ms: u64,
    counters: &'a crate::metrics::Counters,
}

async fn wait_for(
    registry: &Registry,
    who: Creds,
    conn: &mut Connection,
    wait: Wait<'_>,
    shutdown: &mut Shutdown,
) -> Option<Response> {
    let Wait {
        name,
        timeout_ms,
        counters,
    } = wait;
    let timeout = Duration::from_millis(timeout_ms).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + timeout;
    // Subscribed before the first look: a creation after it is in the channel.
    let mut changes = registry.presence.subscribe();
    loop {
        let stat = Request::Stat {
            name: name.to_owned(),
        };
        let (reply, _, _) = handle_request(registry, who, stat);
        if !matches!(
            reply,
            Response::Error {
                kind: ErrorKind::NotFound,
                ..
            }
        ) {
            return Some(reply);
        }
        loop {
            tokio::select! {
                biased;
                _ = conn.recv() => return None,
                () = shutdown.wait() => return None,
                () = tokio::time::sleep_until(deadline) => {
                    return Some(Response::Error {
                        kind: ErrorKind::Timeout,
                        message: format!(
                            "no array or stream named {name:?} appeared within {} s",
                            timeout.as_secs_f64()
                        ),
                    });
                }
                change = changes.recv() => match change {
                    Ok(c) if c.name() == name
                        && matches!(c.event, WatchEvent::Created { .. }) => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
        counters.recheck();
    }
}

/// `Watch`: `Event(Ready)`, then every change of an object under `prefix` that `who` may
/// read, until the client closes the connection (or sends anything), a send fails, or the
/// daemon stops.
async fn watch(
    registry: &Registry,
    who: Creds,
    conn: &mut Connection,
    prefix: &str,
    shutdown: &mut Shutdown,
) {
    let mut changes = registry.presence.subscribe();
    let _counted = registry.presence.watching();
    if !send_within(conn, &Response::Event(WatchEvent::Ready), &[]).await {
        return;
    }
    loop {
        let event = tokio::select! {
            biased;
            _ = conn.recv() => return,
            () = shutdown.wait() => return,
            change = changes.recv() => match change {
                Ok(c) if c.name().starts_with(prefix) && c.visible_to(who) => c.event,
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    WatchEvent::Lost { events: n }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        };
        if !send_within(conn, &Response::Event(event), &[]).await {
            return;
        }
    }
}

/// Sends a reply unless the client has not made room for it within [`SEND_TIMEOUT`].
async fn send_within(conn: &Connection, reply: &Response, files: &[&File]) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, conn.send(reply, files)).await,
        Ok(Ok(()))
    )
}

/// Serves one request. Returns the reply, the files to attach, and the name of an array the
/// connection now holds write access to (or of a stream it attached to). The daemon's paths
/// are left out of replies to users other than its own uid and root.
pub(crate) fn handle_request(
    registry: &Registry,
    who: Creds,
    request: Request,
) -> (Response, Vec<File>, Option<String>) {
    let (mut reply, files, lease) = dispatch(registry, who, request);
    if !crate::registry::sees_paths(who) {
        redact_paths(&mut reply);
        if let Response::Error { message, .. } = &mut reply {
            *message = registry.scrub(message);
        }
    }
    (reply, files, lease)
}

/// Empties every `path` field of `reply`: the daemon's directories are its own business, and
/// only its uid and root could open a path in them anyway.
fn redact_paths(reply: &mut Response) {
    use mmshare::internal::proto::ObjectInfo;
    match reply {
        Response::Array(info) => info.path.clear(),
        Response::Stream(info) => info.path.clear(),
        Response::List { arrays, .. } => arrays.iter_mut().for_each(|a| a.path.clear()),
        Response::Objects { objects, .. } => {
            for object in objects {
                match object {
                    ObjectInfo::Array(a) => a.path.clear(),
                    ObjectInfo::Stream(s) => s.path.clear(),
                }
            }
        }
        Response::Hello { .. }
        | Response::Deleted
        | Response::Error { .. }
        | Response::Event(_) => {}
    }
}

fn dispatch(
    registry: &Registry,
    who: Creds,
    request: Request,
) -> (Response, Vec<File>, Option<String>) {
    match request {
        Request::Hello { version, .. } if version == PROTOCOL_VERSION => (
            Response::Hello {
                version: PROTOCOL_VERSION,
                server: format!("mmshared {}", env!("CARGO_PKG_VERSION")),
            },
            Vec::new(),
            None,
        ),
        Request::Hello { version, .. } => (
            Response::Error {
                kind: ErrorKind::ProtocolError,
                message: format!(
                    "unsupported protocol version {version}: this daemon speaks version {PROTOCOL_VERSION}"
                ),
            },
            Vec::new(),
            None,
        ),
        Request::Create {
            name,
            dtype,
            shape,
            order,
            backing,
            mode,
            exist_ok,
            stripes,
            sparse,
        } => match registry.create(
            who, &name, &dtype, &shape, order, backing, mode, exist_ok, stripes, sparse,
        ) {
            Ok((info, file, control)) => (
                Response::Array(info),
                std::iter::once(file).chain(control).collect(),
                Some(name),
            ),
            Err(e) => (error_response(e), Vec::new(), None),
        },
        Request::Open { name, access } => match registry.open(who, &name, access) {
            Ok((info, file, control)) => {
                let lease = (access == OpenAccess::Write).then_some(name);
                let files = std::iter::once(file).chain(control).collect();
                (Response::Array(info), files, lease)
            }
            Err(e) => (error_response(e), Vec::new(), None),
        },
        Request::Stat { name } => match registry.stat_stream(who, &name) {
            Some(Ok(info)) => (Response::Stream(info), Vec::new(), None),
            Some(Err(e)) => (error_response(e), Vec::new(), None),
            None => match registry.stat(who, &name) {
                Ok(info) => (Response::Array(info), Vec::new(), None),
                Err(e) => (error_response(e), Vec::new(), None),
            },
        },
        Request::CreateStream {
            name,
            dtype,
            shape,
            order,
            slots,
            max_subscribers,
            backing,
            mode,
            exist_ok,
            stall,
            history,
            header,
            variable,
            max_publishers,
        } => match registry.create_stream(
            who,
            &name,
            &dtype,
            &shape,
            order,
            slots,
            max_subscribers,
            backing,
            mode,
            exist_ok,
            stall.into(),
            history,
            &header,
            variable,
            max_publishers.max(1),
        ) {
            Ok(info) => (Response::Stream(info), Vec::new(), None),
            Err(e) => (error_response(e), Vec::new(), None),
        },
        Request::List { prefix, after } => {
            let (arrays, more) = registry.list(who, &prefix, after.as_deref());
            (Response::List { arrays, more }, Vec::new(), None)
        }
        Request::ListAll { prefix, after } => {
            let (objects, more) = registry.list_all(who, &prefix, after.as_deref());
            (Response::Objects { objects, more }, Vec::new(), None)
        }
        // The connection handler waits for these (`wait_for`, `watch`); here, where nothing
        // waits (the wire fuzz harness), they are answered as at their first look.
        Request::WaitFor { name, .. } => match dispatch(registry, who, Request::Stat { name }) {
            (
                Response::Error {
                    kind: ErrorKind::NotFound,
                    message,
                },
                files,
                lease,
            ) => (
                Response::Error {
                    kind: ErrorKind::Timeout,
                    message,
                },
                files,
                lease,
            ),
            other => other,
        },
        Request::Watch { .. } => (Response::Event(WatchEvent::Ready), Vec::new(), None),
        Request::OpenStream { name, role } => match registry.open_stream(who, &name, role) {
            Ok((info, fds)) => (Response::Stream(info), fds, Some(name)),
            Err(e) => (error_response(e), Vec::new(), None),
        },
        Request::Delete { name } => match registry.delete(who, &name) {
            Ok(()) => (Response::Deleted, Vec::new(), None),
            Err(e) => (error_response(e), Vec::new(), None),
        },
    }
}

/// How the daemon spends its descriptors: a fixed reserve for its own use (listener, lock
/// files, keeper, logs, the spare kept for refusing connections), two per connection (its
/// socket, and a descriptor in flight to it), three per object held open (the data file, the
/// control state, and the mapping's copy of it). Objects nobody uses cost none, so there is
/// no bound on how many objects the daemon serves, only on how many are in use at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DescriptorBudget {
    /// Connections served at once (at most `--max-connections`).
    pub(crate) connections: usize,
    /// Objects held open at once.
    pub(crate) open_objects: usize,
}

/// Descriptors kept for the daemon's own use.
const DESCRIPTORS_KEPT: u64 = 64;
/// Descriptors per connection.
const DESCRIPTORS_PER_CONNECTION: u64 = 2;
/// Descriptors per object held open.
const DESCRIPTORS_PER_OPEN_OBJECT: u64 = 3;
/// Fewest objects held open at once the daemon starts with.
const MIN_OPEN_OBJECTS: u64 = 8;

impl DescriptorBudget {
    /// The budget for `limit` descriptors and `max_connections`: connections get what they
    /// ask, but never more than half of what is left after the reserve; objects get the rest.
    ///
    /// # Errors
    /// A message for the operator when `limit` is too low to serve even a few objects.
    pub(crate) fn for_limit(limit: u64, max_connections: usize) -> Result<Self, String> {
        let least = DESCRIPTORS_KEPT + 2 * MIN_OPEN_OBJECTS * DESCRIPTORS_PER_OPEN_OBJECT;
        if limit < least {
            return Err(format!(
                "the descriptor limit (RLIMIT_NOFILE {limit}) is too low: the daemon needs at \
                 least {least} (raise it with ulimit -n, or LimitNOFILE= under systemd)"
            ));
        }
        let left = limit - DESCRIPTORS_KEPT;
        let for_connections = (max_connections as u64 * DESCRIPTORS_PER_CONNECTION).min(left / 2);
        let connections = for_connections / DESCRIPTORS_PER_CONNECTION;
        let open_objects =
            (left - connections * DESCRIPTORS_PER_CONNECTION) / DESCRIPTORS_PER_OPEN_OBJECT;
        Ok(DescriptorBudget {
            connections: usize::try_from(connections).unwrap_or(usize::MAX),
            open_objects: usize::try_from(open_objects).unwrap_or(usize::MAX),
        })
    }
}

/// Raises the soft descriptor limit to the hard one: every connection and every array costs
/// descriptors, and the default soft limit (often 1024) is below --max-connections.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            warn!("cannot raise the descriptor limit: {e}");
        }
    }
}

/// Refuses to start if another daemon answers on `path`; removes a stale socket file.
fn check_socket_free(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    };
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        // Only "connection refused" proves nobody listens. A SOCK_SEQPACKET listener answers a
        // stream connect with EPROTOTYPE; any other error (EACCES, ...) is not proof either.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::CONNREFUSED.raw_os_error()) => {
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
            info!(socket = %path.display(), "removed a stale socket file");
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PROTOTYPE.raw_os_error()) => {
            Err(live_daemon(path))
        }
        Ok(_) => Err(live_daemon(path)),
        Err(e) => Err(format!(
            "cannot tell whether {} is in use: {e}",
            path.display()
        )),
    }
}

fn live_daemon(path: &Path) -> String {
    format!(
        "another mmshared is already listening on {}; stop it first, or use --socket for a second one",
        path.display()
    )
}

fn bind(path: &Path, mode: u32) -> Result<UnixSeqpacketListener, String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        check_socket_dir(parent)?;
    }
    let listener = UnixSeqpacketListener::bind_with_backlog(path, 1024)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set mode {mode:o} on {}: {e}", path.display()))?;
    Ok(listener)
}

/// Checks again, just before binding, that the socket's directory is the daemon's
/// (`Config::prepare_paths` checked it at start, before the registry was loaded).
fn check_socket_dir(dir: &Path) -> Result<(), String> {
    crate::dirs::check_socket_dir(dir).map_err(|e| {
        format!(
            "socket directory {}: refusing to listen there",
            e.explain(dir)
        )
    })
}
