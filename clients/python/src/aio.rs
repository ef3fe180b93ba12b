//! asyncio for the native handles: waits that an event loop keeps between calls, woken by the
//! core's waiter thread (module `waiter` of mmshare-lib) without a thread per waiter.
//!
//! A [`Notifier`] belongs to one event loop: an eventfd that the loop watches
//! (`loop.add_reader`), and the ids of the waits woken since the loop last looked. A
//! [`NativeWait`] is one pending await: the core's `AsyncWait` (its registration with the
//! waiter thread and its sleeper count) and a `Waker` that, when the waiter thread calls it,
//! records the wait's id and writes the eventfd. The loop's reader then drains the eventfd,
//! takes the ids and resolves their asyncio futures; each awaiting coroutine polls its handle
//! again (`poll_receive`, `poll_changed`, `poll_loan`), which either completes or registers
//! anew. A cancelled await ends its wait (`end_wait`): nothing is taken and nothing stays
//! registered or counted.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Wake, Waker};

use mmshare::AsyncWait;
use pyo3::prelude::*;

/// What the wakers of one loop's waits share with the loop.
#[derive(Debug)]
struct Shared {
    fd: OwnedFd,
    ready: Mutex<Vec<u64>>,
}

impl Shared {
    fn signal(&self, id: u64) {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
        // An eventfd counter: any write makes it readable until the loop reads it. A full
        // counter (EAGAIN) is readable already.
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }
}

/// The wake-up of one wait: called by the core's waiter thread (any thread).
struct WaitWaker {
    shared: Arc<Shared>,
    id: u64,
}

impl Wake for WaitWaker {
    fn wake(self: Arc<Self>) {
        self.shared.signal(self.id);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.signal(self.id);
    }
}

/// One event loop's end of the wake-ups: `fileno()` for `loop.add_reader`, `drain()` for the
/// ids woken since.
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct Notifier {
    shared: Arc<Shared>,
    next: AtomicU64,
}

#[pymethods]
impl Notifier {
    #[new]
    fn new() -> PyResult<Notifier> {
        let fd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("eventfd: {e}")))?;
        Ok(Notifier {
            shared: Arc::new(Shared {
                fd,
                ready: Mutex::new(Vec::new()),
            }),
            next: AtomicU64::new(1),
        })
    }

    /// The eventfd the loop watches for reading.
    fn fileno(&self) -> i32 {
        self.shared.fd.as_raw_fd()
    }

    /// Resets the eventfd and returns the ids of the waits woken since the last call.
    fn drain(&self) -> Vec<u64> {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.shared.fd, &mut buf);
        std::mem::take(
            &mut *self
                .shared
                .ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// A new wait whose wake-ups come here.
    fn new_wait(&self) -> NativeWait {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        NativeWait {
            id,
            waker: Waker::from(Arc::new(WaitWaker {
                shared: Arc::clone(&self.shared),
                id,
            })),
            wait: Mutex::new(AsyncWait::new()),
            pid: std::process::id(),
        }
    }
}

/// One pending await of a handle (poll it with the handle's `poll_*`, end it with its
/// `end_wait`).
#[pyclass(frozen, module = "mmshare._native")]
pub(crate) struct NativeWait {
    id: u64,
    pub(crate) waker: Waker,
    pub(crate) wait: Mutex<AsyncWait>,
    /// The process that made it (a forked child's copy counts nothing of its own).
    pid: u32,
}

impl NativeWait {
    /// Whether this is a forked child's copy of a wait its parent made.
    pub(crate) fn foreign(&self) -> bool {
        std::process::id() != self.pid
    }

    /// Runs `f` on the core's wait state and the waker.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut AsyncWait, &Waker) -> R) -> R {
        f(
            &mut self.wait.lock().unwrap_or_else(PoisonError::into_inner),
            &self.waker,
        )
    }
}

#[pymethods]
impl NativeWait {
    /// The id its wake-ups carry (`Notifier.drain`).
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// Whether it is counted among its word's sleepers (it found its condition unmet and was
    /// not ended since).
    #[getter]
    fn counted(&self) -> bool {
        self.with(|w, _| w.is_counted())
    }
}
