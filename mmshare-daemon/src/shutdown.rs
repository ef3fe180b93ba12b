//! Graceful shutdown: SIGINT or SIGTERM stops the accept loop; connections finish the request
//! they are handling, then close; the daemon exits when the last one is gone.

use tokio::sync::watch;

/// Tells tasks that shutdown has begun. Cheap to clone; `wait` resolves once.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending side, held by the signal task.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// A new shutdown pair.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    /// Starts the shutdown.
    pub fn fire(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    /// Resolves when shutdown begins (at once if it has).
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|down| *down).await;
    }
}

/// SIGINT and SIGTERM, caught from the moment `install` returns (install before announcing
/// readiness, or a signal sent right after `listening on` would kill the process outright).
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    ///
    /// # Errors
    /// If the signal handlers cannot be registered.
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves with the signal's name when one arrives.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
