//! Async waiting without a thread per waiter: one waiter thread per process sleeps on the
//! shared futex words of every array and stream that a task awaits, and wakes the tasks.
//!
//! # Why a thread at all
//! An array's or a stream's "something happened" signal is a futex word in a shared mapping,
//! bumped by a writer or publisher in another process (and woken with `FUTEX_WAKE` only if the
//! control file counts a sleeper, module `sleepers`). Nothing turns a futex word into a file
//! descriptor that an async runtime's epoll could watch, so some thread must sleep in the
//! kernel on the words. Blocking waiters each sleep on their own word (`Backoff`), a thread
//! per waiter; here one thread sleeps on up to [`WORDS_PER_THREAD`] words at once with
//! `futex_waitv` (Linux ≥ 5.16), whose limit is 128 words per call: one of them is the
//! thread's own *poke* word, so 127 distinct shared words per thread, and a second thread is
//! started only beyond that. Any number of tasks may wait on the same word. A word is known by
//! its file and offset, not by its address: each handle maps the file at its own address, and
//! the kernel keys a shared futex by file and offset too, so the thread waits on the word once,
//! at the address of any one of the handles whose tasks wait on it.
//!
//! # The protocol (the same as a blocking waiter's, with the sleep done by the thread)
//! A future that finds its condition unmet:
//! 1. counts itself as a sleeper in the control file (as a blocking waiter does just before
//!    it sleeps), then fences (SeqCst);
//! 2. reads the futex word (`seen`), fences (Acquire), and checks its condition again: a
//!    writer that published before reading the sleeper count is seen here;
//! 3. if still unmet, registers `(word, seen, waker)` with a waiter thread and returns
//!    `Pending`. Registering bumps the thread's poke word and wakes it, so the thread rebuilds
//!    its list.
//!
//! The waiter thread reads its poke word, then, under its lock, reads every registered word:
//! a registration whose `seen` differs from the word's value now is woken at once (its word
//! moved while it was registering); the others go into one `futex_waitv` call, each with the
//! value just read, plus the poke word. The kernel checks every value before sleeping, so a
//! word bumped after the thread read it makes the call return at once (`EAGAIN`), and a
//! `FUTEX_WAKE` on any of the words (a writer that saw the sleeper count) ends the sleep. Then
//! the thread looks again. Either the writer sees the sleeper count and wakes the word, or the
//! futex word had moved before the future's step 2 and the future did not register, or the
//! word moved after it and the thread's comparison or the kernel's check catches it: no
//! wake-up is lost.
//!
//! Bounds, as for blocking waiters: the thread never sleeps longer than [`RESCAN`] (a word
//! that moved without a `FUTEX_WAKE`, for example because a process zeroed the sleeper count,
//! is found by the next scan), and every [`RECHECK_ALL`] it wakes every registered task, which
//! polls again and so sees conditions that move no futex word (a subscription reclaimed by
//! the daemon, a publisher that lost its stream).
//!
//! # Without futex_waitv
//! On kernels before 5.16 (`ENOSYS`), or when `MMSHARE_ASYNC_POLL=1` is set (for tests, or
//! sandboxes whose seccomp filter refuses the call), the thread polls instead: while anything
//! is registered it scans the words every [`POLL_TICK`] (1 ms), sleeping on its poke word in
//! between. Wake-ups then come up to 1 ms late, and the thread wakes 1 000 times a second
//! while tasks wait (nothing when none do).
//!
//! # Cancel safety and memory safety
//! A registration is removed when its [`Registration`] is dropped (a future that is dropped or
//! polled again drops its own). The thread reads a word only under the shard's lock and only
//! while it is registered, and a registration is dropped by its future before the handle whose
//! mapping holds the word can be dropped (the future borrows the handle). The kernel may still
//! be asleep on an address that was unmapped meanwhile: that is harmless (it keys shared
//! futexes by file and offset, and the thread's next scan no longer looks at it).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};

use rustix::thread::futex;

/// Distinct shared futex words one waiter thread sleeps on (`futex_waitv` takes 128 words;
/// the thread's own poke word is the 128th).
pub const WORDS_PER_THREAD: usize = 127;

/// The longest a waiter thread sleeps before it reads every word again.
const RESCAN: Duration = Duration::from_millis(50);

/// How often every registered task is woken to check its condition in full (not within the
/// unit tests, which count wake-ups exactly).
const RECHECK_ALL: Duration = if cfg!(test) {
    Duration::from_secs(3600)
} else {
    Duration::from_secs(1)
};

/// The scan period without `futex_waitv`.
const POLL_TICK: Duration = Duration::from_millis(1);

/// Registers `waker` to be woken once the shared futex word `word` no longer holds `seen`
/// (or at the latest within [`RECHECK_ALL`]).
///
/// # Safety
/// `word` stays mapped (and a futex word of a shared mapping or of this process) until the
/// returned registration is dropped.
pub(crate) unsafe fn register(
    word: &AtomicU32,
    file: &std::fs::File,
    offset: usize,
    seen: u32,
    waker: &Waker,
) -> Registration {
    use std::os::unix::fs::MetadataExt;
    let addr = std::ptr::from_ref(word) as usize;
    // The word's identity: its file and offset (module docs). Without the file's identity
    // (fstat failed), the address stands in: correct, only not shared with other handles.
    let key = match file.metadata() {
        Ok(m) => Key(m.dev(), m.ino(), offset as u64),
        Err(_) => Key(u64::MAX, addr as u64, 0),
    };
    reactor().register(key, addr, seen, waker)
}

/// A shared futex word's identity: device, inode, offset in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key(u64, u64, u64);

/// A task's place in a waiter thread's list; dropping it takes the task out.
#[derive(Debug)]
pub(crate) struct Registration {
    shard: Arc<Shard>,
    key: Key,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = lock(&self.shard.state);
        if let Some(at) = state.entries.iter().position(|e| e.key == self.key) {
            let entry = &mut state.entries[at];
            entry.regs.retain(|r| r.id != self.id);
            if entry.regs.is_empty() {
                state.entries.swap_remove(at);
            }
        }
        // The thread may still sleep on the word: harmless (see the module docs), and it
        // drops the word from its next call.
    }
}

/// How many waiter threads this process runs (for tests and diagnostics).
pub fn waiter_threads() -> usize {
    REACTOR.get().map_or(0, |r| lock(&r.shards).len())
}

/// How many tasks are registered with the waiter threads now (for tests and diagnostics).
pub fn registered_waiters() -> usize {
    REACTOR.get().map_or(0, |r| {
        lock(&r.shards)
            .iter()
            .map(|s| {
                lock(&s.state)
                    .entries
                    .iter()
                    .map(|e| e.regs.len())
                    .sum::<usize>()
            })
            .sum()
    })
}

/// Whether the waiter threads poll (no `futex_waitv`, or `MMSHARE_ASYNC_POLL=1`).
pub fn waiter_polls() -> bool {
    REACTOR
        .get()
        .is_some_and(|r| r.poll.load(Ordering::Relaxed))
}

static REACTOR: OnceLock<Reactor> = OnceLock::new();

fn reactor() -> &'static Reactor {
    REACTOR.get_or_init(|| Reactor {
        shards: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(1),
        poll: AtomicBool::new(std::env::var_os("MMSHARE_ASYNC_POLL").is_some_and(|v| v == "1")),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct Reactor {
    /// Lock order: `shards`, then a shard's `state`.
    shards: Mutex<Vec<Arc<Shard>>>,
    next_id: AtomicU64,
    /// Poll instead of `futex_waitv` (set at start by the environment, or on `ENOSYS`).
    poll: AtomicBool,
}

#[derive(Debug)]
struct Shard {
    state: Mutex<ShardState>,
    /// Bumped (and woken) whenever the list changes, so the thread rebuilds its call.
    poke: AtomicU32,
}

#[derive(Debug, Default)]
struct ShardState {
    /// One per distinct word, at most `WORDS_PER_THREAD`.
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    key: Key,
    /// Never empty: an entry goes with its last registration.
    regs: Vec<Reg>,
}

#[derive(Debug)]
struct Reg {
    id: u64,
    /// The word's address in this registration's mapping (mapped while it is registered).
    addr: usize,
    seen: u32,
    waker: Waker,
    /// Woken already (it stays listed until its future drops the registration).
    woken: bool,
}

impl Reactor {
    fn register(&'static self, key: Key, addr: usize, seen: u32, waker: &Waker) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let reg = Reg {
            id,
            addr,
            seen,
            waker: waker.clone(),
            woken: false,
        };
        let mut shards = lock(&self.shards);
        // The shard that already sleeps on this word, else the first with room, else a new
        // shard with its own thread.
        let holding = shards
            .iter()
            .position(|s| lock(&s.state).entries.iter().any(|e| e.key == key));
        let with_room = || {
            shards
                .iter()
                .position(|s| lock(&s.state).entries.len() < WORDS_PER_THREAD)
        };
        if let Some(at) = holding.or_else(with_room) {
            let shard = Arc::clone(&shards[at]);
            let mut state = lock(&shard.state);
            match state.entries.iter_mut().find(|e| e.key == key) {
                Some(entry) => entry.regs.push(reg),
                None => state.entries.push(Entry {
                    key,
                    regs: vec![reg],
                }),
            }
            drop(state);
            return self.poked(shard, key, id);
        }
        let shard = Arc::new(Shard {
            state: Mutex::new(ShardState {
                entries: vec![Entry {
                    key,
                    regs: vec![reg],
                }],
            }),
            poke: AtomicU32::new(0),
        });
        shards.push(Arc::clone(&shard));
        let n = shards.len();
        let for_thread = Arc::clone(&shard);
        std::thread::Builder::new()
            .name(format!("mmshare-waiter-{n}"))
            .spawn(move || self.run(&for_thread))
            .expect("cannot start an mmshare waiter thread");
        self.poked(shard, key, id)
    }

    /// Tells `shard`'s thread that its list changed.
    fn poked(&self, shard: Arc<Shard>, key: Key, id: u64) -> Registration {
        shard.poke.fetch_add(1, Ordering::Release);
        let _ = futex::wake(&shard.poke, futex::Flags::PRIVATE, 1);
        Registration { shard, key, id }
    }

    /// A waiter thread: scan, sleep on the words, repeat.
    fn run(&self, shard: &Shard) {
        let mut last_full = Instant::now();
        let mut waits: Vec<futex::Wait> = Vec::with_capacity(WORDS_PER_THREAD + 1);
        let mut to_wake: Vec<Waker> = Vec::new();
        loop {
            let poke_seen = shard.poke.load(Ordering::Acquire);
            let full = last_full.elapsed() >= RECHECK_ALL;
            if full {
                last_full = Instant::now();
            }
            waits.clear();
            let mut poke = futex::Wait::new();
            poke.val = u64::from(poke_seen);
            poke.uaddr = futex::WaitPtr::new(std::ptr::from_ref(&shard.poke).cast_mut().cast());
            poke.flags = futex::WaitFlags::SIZE_U32 | futex::WaitFlags::PRIVATE;
            waits.push(poke);
            {
                let mut state = lock(&shard.state);
                for entry in &mut state.entries {
                    // Any registration's address will do: they all map the same word.
                    let addr = entry.regs[0].addr;
                    // SAFETY: the registration is listed, so its future (and the handle whose
                    // mapping holds the word) is alive; registrations are removed under this
                    // lock.
                    let now = unsafe { &*(addr as *const AtomicU32) }.load(Ordering::Acquire);
                    let mut waiting = false;
                    for reg in entry.regs.iter_mut().filter(|r| !r.woken) {
                        if reg.seen != now || full {
                            reg.woken = true;
                            to_wake.push(reg.waker.clone());
                        } else {
                            waiting = true;
                        }
                    }
                    if waiting {
                        let mut w = futex::Wait::new();
                        w.val = u64::from(now);
                        w.uaddr = futex::WaitPtr::new(addr as *mut std::ffi::c_void);
                        w.flags = futex::WaitFlags::SIZE_U32;
                        waits.push(w);
                    }
                }
            }
            // Woken outside the lock: a waker may run code that drops a registration.
            for waker in to_wake.drain(..) {
                waker.wake();
            }
            self.sleep(shard, &waits, poke_seen);
        }
    }

    /// Sleeps until a word in `waits` moves or is woken, the poke word moves, or the rescan
    /// period ends.
    fn sleep(&self, shard: &Shard, waits: &[futex::Wait], poke_seen: u32) {
        if waits.len() == 1 {
            // Nothing registered: sleep until a registration comes.
            crate::sys::futex_wait_private(&shard.poke, poke_seen, None);
            return;
        }
        if !self.poll.load(Ordering::Relaxed) {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let mut until = rustix::time::Timespec {
                tv_sec: now.tv_sec,
                tv_nsec: now.tv_nsec + i64::from(RESCAN.subsec_nanos()),
            };
            if until.tv_nsec >= 1_000_000_000 {
                until.tv_sec += 1;
                until.tv_nsec -= 1_000_000_000;
            }
            match futex::waitv(
                waits,
                futex::WaitvFlags::empty(),
                Some(&until),
                rustix::time::ClockId::Monotonic,
            ) {
                Err(rustix::io::Errno::NOSYS) => self.poll.store(true, Ordering::Relaxed),
                // Woken, a value had moved (EAGAIN), the period ended, a signal, or a word
                // unmapped meanwhile (EFAULT): all mean "scan again".
                _ => return,
            }
        }
        crate::sys::futex_wait_private(&shard.poke, poke_seen, Some(POLL_TICK));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&c), Waker::from(c))
    }

    fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // One test for the whole module: the reactor is global to the process.
    #[test]
    fn wakes_on_a_moved_word_shares_threads_and_forgets_dropped_registrations() {
        let words: Vec<AtomicU32> = (0..200).map(|_| AtomicU32::new(0)).collect();
        // The words' identity: this file, at offset = index (they are plain memory here).
        let file = tempfile::tempfile().expect("temp file");
        // A word that moved before the thread saw the registration: woken by the scan.
        let (moved, waker) = counter();
        // SAFETY: the words outlive every registration (dropped before the end).
        let early = unsafe { register(&words[0], &file, 0, 7, &waker) };
        until("the early wake-up", || moved.0.load(Ordering::SeqCst) == 1);
        drop(early);

        // 199 words, 3 tasks each, then a FUTEX_WAKE-less bump of every word.
        let (hits, waker) = counter();
        let regs: Vec<Registration> = (1..words.len())
            .flat_map(|i| {
                let (w, file, waker) = (&words[i], &file, &waker);
                // SAFETY: as above.
                (0..3).map(move |_| unsafe { register(w, file, i, 0, waker) })
            })
            .collect();
        assert_eq!(registered_waiters(), 597);
        assert_eq!(waiter_threads(), 2, "199 words need two threads of 127");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(hits.0.load(Ordering::SeqCst), 0, "nothing moved yet");
        for w in &words[1..] {
            w.store(1, Ordering::Release);
            crate::sys::futex_wake_all(w);
        }
        until("597 wake-ups", || hits.0.load(Ordering::SeqCst) == 597);
        drop(regs);
        assert_eq!(registered_waiters(), 0, "dropped registrations are gone");

        // A dropped registration is never woken.
        let (none, waker) = counter();
        // SAFETY: as above.
        let reg = unsafe { register(&words[1], &file, 1, 1, &waker) };
        drop(reg);
        words[1].store(2, Ordering::Release);
        crate::sys::futex_wake_all(&words[1]);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(none.0.load(Ordering::SeqCst), 0);
        assert_eq!(waiter_threads(), 2, "threads are reused, not added");
    }
}
