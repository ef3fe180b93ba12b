//! Running under a service manager: the listening socket systemd passes by socket activation
//! (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`; sd_listen_fds(3)), and the readiness and
//! status notifications it waits for (`NOTIFY_SOCKET`; sd_notify(3)). Both come from the
//! `sd-notify` crate; this module checks what was passed before the daemon relies on it.
//!
//! Without those variables (a daemon started by hand, or by the CLI's demo) nothing here does
//! anything: the daemon binds its own socket and notifies nobody.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::net::{SocketAddrUnix, SocketType, sockopt};

/// The variables a process started by socket activation gets, which the processes this daemon
/// starts (its descriptor keeper) must not see: they name descriptors and a pid that are not
/// theirs.
pub(crate) const SERVICE_MANAGER_VARS: [&str; 4] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
];

/// A listening socket the service manager passed, and the path it is bound to.
#[derive(Debug)]
pub(crate) struct Passed {
    pub(crate) listener: OwnedFd,
    pub(crate) path: PathBuf,
}

/// Whether the passed descriptors were taken already (each may have one owner).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The listening socket passed by socket activation, if any (`Ok(None)` when this process was
/// not started that way). `socket` is the path given with `--socket`, which must then be the
/// one the passed socket is bound to.
///
/// # Errors
/// One line saying what is wrong with what was passed: more than one descriptor, not a
/// `SOCK_SEQPACKET` Unix socket, not listening, or bound to no path or another path.
pub(crate) fn passed_socket(socket: Option<&Path>) -> Result<Option<Passed>, String> {
    let fds: Vec<(i32, String)> = sd_notify::listen_fds_with_names()
        .map_err(|e| format!("socket activation: {e}"))?
        .collect();
    if fds.is_empty() || TAKEN.swap(true, Ordering::AcqRel) {
        return Ok(None);
    }
    if fds.len() != 1 {
        let names: Vec<&str> = fds.iter().map(|(_, n)| n.as_str()).collect();
        return Err(format!(
            "socket activation passed {} descriptors ({}); mmshared listens on exactly one \
             (one ListenSequentialPacket= in its .socket unit)",
            fds.len(),
            names.join(", ")
        ));
    }
    let raw = fds[0].0;
    // SAFETY: LISTEN_PID names this process, so by the socket-activation protocol descriptor
    // `raw` (3, the first passed) was opened for it and is used by nothing else in it; `TAKEN`
    // makes this the only place that takes ownership of it, once.
    let listener = unsafe { OwnedFd::from_raw_fd(raw) };
    let kind = sockopt::socket_type(&listener)
        .map_err(|e| format!("socket activation: descriptor {raw} is not a socket ({e})"))?;
    if kind != SocketType::SEQPACKET {
        return Err(format!(
            "socket activation passed a {} socket; mmshared speaks SOCK_SEQPACKET \
             (ListenSequentialPacket= in its .socket unit)",
            type_name(kind)
        ));
    }
    if !sockopt::socket_acceptconn(&listener).unwrap_or(false) {
        return Err(format!(
            "socket activation: descriptor {raw} is not a listening socket"
        ));
    }
    let address = rustix::net::getsockname(&listener)
        .map_err(|e| format!("socket activation: cannot read the socket's address: {e}"))?;
    let path = SocketAddrUnix::try_from(address)
        .ok()
        .and_then(|unix| {
            unix.path()
                .map(|p| PathBuf::from(p.to_string_lossy().into_owned()))
        })
        .ok_or_else(|| {
            "socket activation passed a socket that is not bound to a file path (clients \
             connect by path)"
                .to_owned()
        })?;
    // The service manager passes the socket in blocking mode; the accept loop polls it.
    rustix::io::ioctl_fionbio(&listener, true)
        .map_err(|e| format!("socket activation: cannot make the socket non-blocking: {e}"))?;
    if let Some(wanted) = socket
        && std::path::absolute(wanted).ok().as_deref() != Some(path.as_path())
    {
        return Err(format!(
            "--socket {} but the service manager passed the socket {}: drop --socket or make \
             them the same",
            wanted.display(),
            path.display()
        ));
    }
    Ok(Some(Passed { listener, path }))
}

fn type_name(kind: SocketType) -> String {
    match kind {
        SocketType::STREAM => "SOCK_STREAM".to_owned(),
        SocketType::DGRAM => "SOCK_DGRAM".to_owned(),
        other => format!("type {}", other.as_raw()),
    }
}

/// Tells the service manager the daemon is ready (it listens and has loaded its objects), with
/// a status line. Nothing without `NOTIFY_SOCKET`.
pub(crate) fn notify_ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells the service manager the daemon is stopping.
pub(crate) fn notify_stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping"),
    ]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}
