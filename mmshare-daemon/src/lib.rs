//! `mmshared`, the mmshare daemon: it owns named arrays in two directories and hands clients
//! file descriptors to them over a SOCK_SEQPACKET Unix socket. It is never on the data path.
//!
//! # Layout
//! - `config`: command-line flags and their defaults.
//! - `server`: start-up checks, the listener, the per-connection handler, request dispatch.
//! - `connection`: receiving bounded requests and sending replies with descriptors.
//! - `registry`: the named arrays, access checks, create/open/stat/list/delete, recovery of
//!   writers that died mid-write.
//! - `shutdown`: SIGINT/SIGTERM handling and graceful stop.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod connection;
mod registry;
mod server;
mod shutdown;

pub use config::Config;
pub use registry::{Creds, Perm, permits};

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

/// Runs the daemon with `config` (logging to stderr) and returns the process exit code:
/// 0 after a clean shutdown, 1 when it could not start.
pub fn main_with(config: Config) -> ExitCode {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
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
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mmshared: {message}");
            ExitCode::FAILURE
        }
    }
}
