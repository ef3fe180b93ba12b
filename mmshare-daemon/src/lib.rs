//! `mmshared`, the mmshare daemon: it owns named arrays in two directories and hands clients
//! file descriptors to them over a SOCK_SEQPACKET Unix socket. It is never on the data path.
//!
//! # Layout
//! - `config`: command-line flags and their defaults; the start-up checks of the socket and
//!   the directories.
//! - `dirs`: directories opened so that the daemon never writes into another user's directory
//!   or through a planted symlink.
//! - `server`: start-up checks, the listener, the per-connection handler, request dispatch.
//! - `connection`: receiving bounded requests and sending replies with descriptors.
//! - `registry`: the named arrays, access checks, create/open/stat/list/delete, recovery of
//!   writers that died mid-write.
//! - `shutdown`: SIGINT/SIGTERM handling and graceful stop.
//! - `keeper`: the descriptor keeper, a small process that holds control memfds across
//!   daemon restarts.
//! - [`fuzzing`]: request decoding and dispatch without a socket, for fuzzing and tests.
// Denied, not forbidden: `activation` takes ownership of the descriptor systemd passes, the one
// operation here that needs `unsafe`.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod activation;
mod config;
mod connection;
mod dirs;
pub mod fuzzing;
mod keeper;
pub mod metrics;
mod presence;
mod registry;
mod server;
mod shutdown;
mod slots;

pub use config::Config;
pub use registry::{Creds, Perm, permits};

use std::process::ExitCode;

/// Runs the descriptor keeper on `socket` (what `mmshared --fd-keeper SOCKET` does; the
/// daemon starts it itself): holds control memfds until no daemon is connected and none is in
/// use.
pub fn run_keeper(socket: &std::path::Path) -> ExitCode {
    keeper::run(socket)
}

use tracing_subscriber::EnvFilter;

/// Runs the daemon with `config` (logging to stderr) and returns the process exit code:
/// 0 after a clean shutdown, 1 when it could not start.
pub fn main_with(config: Config) -> ExitCode {
    // A socket passed by systemd's socket activation replaces the one the daemon would bind.
    let passed = match activation::passed_socket(config.socket.as_deref()) {
        Ok(passed) => passed,
        Err(message) => {
            eprintln!("mmshared: {message}");
            return ExitCode::FAILURE;
        }
    };
    let mut paths = match config.prepare_paths_with(passed.as_ref().map(|p| p.path.as_path())) {
        Ok(paths) => paths,
        Err(message) => {
            eprintln!("mmshared: {message}");
            return ExitCode::FAILURE;
        }
    };
    paths.passed = passed.map(|p| p.listener);
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        config::LogFormat::Text => logger
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        config::LogFormat::Json => logger.json().try_init(),
    };
    // Writers hold data files read-write and can truncate them under the daemon's mappings:
    // turn what would be SIGBUS into zero pages the daemon notices (mmshare-lib's `guard`).
    // Room for every object's mappings (a stream has two) and some to spare. Only in the
    // `mmshared` process: a program that embeds a daemon keeps its own SIGBUS disposition.
    if let Err(e) = mmshare::guard_mappings_against_truncation(
        config.max_arrays.saturating_mul(2).saturating_add(256),
    ) {
        tracing::warn!("cannot install the truncation guard: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mmshared")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mmshared: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config, paths, server::StopOn::Signals, None)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mmshared: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A daemon running on a thread of this process (what `mmshare demo` uses when no daemon is
/// reachable). It stops, finishing requests in flight, when stopped or dropped.
#[derive(Debug)]
pub struct EmbeddedDaemon {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    socket: std::path::PathBuf,
}

impl EmbeddedDaemon {
    /// Starts a daemon with `config` and returns once it listens. It runs without a
    /// descriptor keeper (the keeper is `mmshared --fd-keeper`, and this process is not
    /// `mmshared`): its objects' control state does not outlive it.
    ///
    /// # Errors
    /// What would make `mmshared` refuse to start (a live socket, unusable directories).
    pub fn start(mut config: Config) -> Result<EmbeddedDaemon, String> {
        config.no_fd_keeper = true;
        let paths = config.prepare_paths()?;
        let socket = paths.socket.clone();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("mmshared-embedded".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the async runtime: {e}"))?;
                runtime.block_on(server::run(
                    config,
                    paths,
                    server::StopOn::Handle(rx),
                    Some(ready_tx),
                ))
            })
            .map_err(|e| format!("cannot start the daemon thread: {e}"))?;
        match ready_rx.recv() {
            Ok(()) => Ok(EmbeddedDaemon {
                stop,
                thread: Some(thread),
                socket,
            }),
            // The thread ended before it was ready: report why.
            Err(_) => Err(thread
                .join()
                .map_err(|_| "the daemon thread panicked".to_string())?
                .err()
                .unwrap_or_else(|| "the daemon stopped before it was ready".into())),
        }
    }

    /// The socket it listens on.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Stops it and waits until it has.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EmbeddedDaemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}
