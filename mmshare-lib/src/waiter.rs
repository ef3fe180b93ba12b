//! Async waiting without a thread per waiter: one waiter thread per process sleeps on the
//! shared futex words of every array and stream that a task awaits, and wakes the tasks.
//!
//! # Why a thread at all
//! An array's or a stream's "something happened" signal is a futex word in a shared mapping,
//! bumped by a writer or publisher in another process (and woken with `FUTEX_WAKE` only if the
//! control file counts a sleeper, module `array::control`). Nothing turns a futex word into a file
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
//! Bounds, as for blocking waiters: the thread never sleeps longer than [`RESCAN`] (an array
//! word that moved without a `FUTEX_WAKE`, for example because a process zeroed the sleeper
//! count, is found by the next scan), and every [`RECHECK_ALL`] it wakes every registered
//! task, which polls again and so sees what moves no futex word: a subscription reclaimed by
//! the daemon, a publisher that lost its stream, or a publish that did not bump the stream's
//! word because its sleeper count had been zeroed by another process.
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
//! polled again drops its own). The thread never touches a handle's memory: each word it
//! watches it maps itself, one read-only page of the word's file per distinct word, so a
//! future that is leaked (`mem::forget`) while its handle is dropped leaves only a stale
//! registration, woken at the next full re-check and otherwise harmless. Wakers run outside
//! the thread's lock and a panicking waker does not kill the thread. After `fork()` the child
//! starts with no waiter threads of its own (the parent's do not exist there) and makes new
//! ones as its tasks wait.

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

/// One pending wait between polls: its registration with a waiter thread, and whether it is
/// counted among the sleepers of the word it waits on. The crate's futures keep one; so do
/// bindings whose event loop keeps a wait across calls (Python's asyncio, through
/// `Subscriber::poll_receive_token`, `RawArray::poll_changed`, `Publisher::poll_loan_token`).
/// The handle it belongs to ends it (`end_wait`); a wait that is dropped unended leaves its
/// sleeper count behind (a cost: a `FUTEX_WAKE` per publish for nobody), never a lost wake-up.
#[derive(Debug, Default)]
pub struct AsyncWait {
    pub(crate) registration: Option<Registration>,
    /// The registrations on further words (a subscriber of several lanes sleeps on each
    /// lane's word).
    pub(crate) more: Vec<Registration>,
    pub(crate) counted: bool,
    /// When it first found its condition unmet (a publisher's stall policy counts from it).
    pub(crate) since: Option<std::time::Instant>,
}

impl AsyncWait {
    /// A wait that has not begun.
    pub fn new() -> AsyncWait {
        AsyncWait::default()
    }

    /// Whether it is counted among its word's sleepers (it has found its condition unmet at
    /// least once and was not ended since).
    pub fn is_counted(&self) -> bool {
        self.counted
    }
}

/// Registers `waker` to be woken once the shared futex word at `offset` in `file` no longer
/// holds `seen` (or at the latest within [`RECHECK_ALL`]).
pub(crate) fn register(
    file: &std::fs::File,
    offset: usize,
    seen: u32,
    waker: &Waker,
) -> Registration {
    use std::os::unix::fs::MetadataExt;
    // The word's identity: its file and offset (module docs). Without the file's identity
    // (fstat failed), a key of our own keeps the entry apart from every other.
    let key = match file.metadata() {
        Ok(m) => Key(m.dev(), m.ino(), offset as u64),
        Err(_) => Key(
            u64::MAX,
            reactor().next_id.fetch_add(1, Ordering::Relaxed),
            0,
        ),
    };
    reactor().register(key, file, offset, seen, waker)
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
        // What is taken out is dropped after the lock (a waker's drop may run user code).
        let (mut reg, mut entry) = (None, None);
        {
            let mut state = lock(&self.shard.state);
            if let Some(at) = state.entries.iter().position(|e| e.key == self.key) {
                let regs = &mut state.entries[at].regs;
                if let Some(i) = regs.iter().position(|r| r.id == self.id) {
                    reg = Some(regs.swap_remove(i));
                }
                if regs.is_empty() {
                    entry = Some(state.entries.swap_remove(at));
                }
            }
        }
        drop((reg, entry));
        // The thread may still sleep on the word's page: harmless, it drops the word from
        // its next call.
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

/// `at` plus `period` (less than a second), normalized: `tv_nsec` stays below 10^9, as
/// `futex_waitv` requires of an absolute deadline.
fn later_by(at: rustix::time::Timespec, period: Duration) -> rustix::time::Timespec {
    let mut until = rustix::time::Timespec {
        tv_sec: at.tv_sec,
        tv_nsec: at.tv_nsec + i64::from(period.subsec_nanos()),
    };
    if until.tv_nsec >= 1_000_000_000 {
        until.tv_sec += 1;
        until.tv_nsec -= 1_000_000_000;
    }
    until
}

/// How many times a waiter thread was woken by a `FUTEX_WAKE` on a watched word (rather than
/// by a rescan, a registration or a value that had already moved). A diagnostic: tests use it
/// to prove that writers wake the waiter thread, not only its periodic scans.
pub fn waiter_wakeups() -> u64 {
    WAKEUPS.load(Ordering::Relaxed)
}

static WAKEUPS: AtomicU64 = AtomicU64::new(0);

static REACTOR: OnceLock<Reactor> = OnceLock::new();

fn reactor() -> &'static Reactor {
    REACTOR.get_or_init(|| Reactor {
        shards: Mutex::new(Vec::new()),
        pid: AtomicU32::new(std::process::id()),
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
    /// The process the shards' threads run in (a forked child has none of them).
    pid: AtomicU32,
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
    /// The thread's own read-only mapping of the page that holds the word, and the word's
    /// offset in it; `None` if the page could not be mapped (the entry's tasks are then woken
    /// by the full re-check only).
    /// Shared (`Arc`) so the thread can keep a page mapped across its sleep even if the
    /// entry goes meanwhile.
    page: Option<(Arc<memmap2::Mmap>, usize)>,
    /// Never empty: an entry goes with its last registration.
    regs: Vec<Reg>,
}

impl Entry {
    fn word(&self) -> Option<&AtomicU32> {
        self.page.as_ref().map(|(map, at)| {
            // SAFETY: `at` is a 4-aligned offset inside the mapped page (checked in `new`),
            // and the page stays mapped while the entry lives.
            unsafe { &*map.as_ptr().add(*at).cast::<AtomicU32>() }
        })
    }

    fn new(key: Key, file: &std::fs::File, offset: usize) -> Entry {
        let size = rustix::param::page_size();
        let start = offset - offset % size;
        let page = offset
            .is_multiple_of(4)
            .then(|| {
                // SAFETY: a read-only, shared mapping of one page of the word's file; the file
                // may change under it (that is the point), and the thread reads the word only
                // with atomic loads.
                unsafe {
                    memmap2::MmapOptions::new()
                        .offset(start as u64)
                        .len(size)
                        .map(file)
                }
                .ok()
            })
            .flatten()
            .map(|map| (Arc::new(map), offset - start));
        Entry {
            key,
            page,
            regs: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Reg {
    id: u64,
    seen: u32,
    /// Taken when the task is woken (it stays listed until its future drops the
    /// registration).
    waker: Option<Waker>,
}

impl Reactor {
    fn register(
        &'static self,
        key: Key,
        file: &std::fs::File,
        offset: usize,
        seen: u32,
        waker: &Waker,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let reg = Reg {
            id,
            seen,
            waker: Some(waker.clone()),
        };
        let mut shards = lock(&self.shards);
        let me = std::process::id();
        if self.pid.swap(me, Ordering::Relaxed) != me {
            // A forked child: the parent's threads do not run here.
            shards.clear();
        }
        // The shard that already watches this word, else the first with room, else a new
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
                None => {
                    let mut entry = Entry::new(key, file, offset);
                    entry.regs.push(reg);
                    state.entries.push(entry);
                }
            }
            drop(state);
            return self.poked(shard, key, id);
        }
        let mut entry = Entry::new(key, file, offset);
        entry.regs.push(reg);
        let shard = Arc::new(Shard {
            state: Mutex::new(ShardState {
                entries: vec![entry],
            }),
            poke: AtomicU32::new(0),
        });
        let for_thread = Arc::clone(&shard);
        // Started before the shard is listed: a shard without its thread is never listed.
        std::thread::Builder::new()
            .name(format!("mmshare-waiter-{}", shards.len() + 1))
            .spawn(move || self.run(&for_thread))
            .expect("cannot start an mmshare waiter thread");
        shards.push(Arc::clone(&shard));
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
        // The pages `waits` points into, kept mapped until the call returns: a registration
        // dropped meanwhile may remove its entry (and would otherwise unmap the page).
        let mut pinned: Vec<Arc<memmap2::Mmap>> = Vec::new();
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
            pinned.clear();
            // Tasks waiting on a word whose page could not be mapped: only the full re-check
            // wakes them, so the thread must not sleep past it.
            let mut unwatched = false;
            {
                let mut state = lock(&shard.state);
                for entry in &mut state.entries {
                    let now = entry.word().map(|w| w.load(Ordering::Acquire));
                    let mut waiting = false;
                    for reg in entry.regs.iter_mut().filter(|r| r.waker.is_some()) {
                        if full || now.is_some_and(|now| reg.seen != now) {
                            to_wake.extend(reg.waker.take());
                        } else {
                            waiting = true;
                        }
                    }
                    if let (true, Some(now), Some(word)) = (waiting, now, entry.word()) {
                        let mut w = futex::Wait::new();
                        w.val = u64::from(now);
                        w.uaddr = futex::WaitPtr::new(std::ptr::from_ref(word).cast_mut().cast());
                        w.flags = futex::WaitFlags::SIZE_U32;
                        waits.push(w);
                        pinned.extend(entry.page.as_ref().map(|(map, _)| Arc::clone(map)));
                    } else if waiting {
                        unwatched = true;
                    }
                }
            }
            // Woken outside the lock (a waker may run code that drops a registration); a
            // waker that panics must not take the thread, and every other task, with it.
            for waker in to_wake.drain(..) {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
            }
            self.sleep(shard, &waits, poke_seen, unwatched);
        }
    }

    /// Sleeps until a word in `waits` moves or is woken, the poke word moves, or the rescan
    /// period ends.
    fn sleep(&self, shard: &Shard, waits: &[futex::Wait], poke_seen: u32, unwatched: bool) {
        if waits.len() == 1 {
            // No word to watch: sleep until a registration comes, or (tasks on unmapped
            // words) until the next full re-check may be due.
            let at_most = unwatched.then_some(RESCAN);
            crate::sys::futex_wait_private(&shard.poke, poke_seen, at_most);
            return;
        }
        if !self.poll.load(Ordering::Relaxed) {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let until = later_by(now, RESCAN);
            match futex::waitv(
                waits,
                futex::WaitvFlags::empty(),
                Some(&until),
                rustix::time::ClockId::Monotonic,
            ) {
                // Woken by a FUTEX_WAKE on a watched word (index 0 is the poke word).
                Ok(i) => {
                    if i > 0 {
                        WAKEUPS.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                // A value had moved, the period ended, a signal, or a page the kernel could
                // not read (EFAULT; should not happen, the pages are pinned): scan again.
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::TIMEDOUT)
                | Err(rustix::io::Errno::INTR | rustix::io::Errno::FAULT) => return,
                // No futex_waitv (before 5.16: ENOSYS), or refused (a seccomp filter: EPERM,
                // ...): poll from now on rather than spin on the error.
                Err(_) => self.poll.store(true, Ordering::Relaxed),
            }
        }
        crate::sys::futex_wait_private(&shard.poke, poke_seen, Some(POLL_TICK));
    }
}

/// Serializes the unit tests that use the (process-wide) waiter threads.
#[cfg(test)]
pub(crate) static TEST_LOCK: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {

    /// The thread's deadline: a period later, carried into the seconds at the nanosecond
    /// boundary (cargo-mutants found the carry untested: a wrong one makes an invalid or past
    /// deadline, and the thread spins instead of sleeping).
    #[test]
    fn a_deadline_a_period_later_is_normalized() {
        use rustix::time::Timespec;
        let at = |tv_sec, tv_nsec| Timespec { tv_sec, tv_nsec };
        let ms = Duration::from_millis;
        let got = later_by(at(10, 100), ms(50));
        assert_eq!((got.tv_sec, got.tv_nsec), (10, 50_000_100));
        let got = later_by(at(10, 980_000_000), ms(50));
        assert_eq!((got.tv_sec, got.tv_nsec), (11, 30_000_000));
        let got = later_by(at(10, 950_000_000), ms(50));
        assert_eq!((got.tv_sec, got.tv_nsec), (11, 0));
        let got = later_by(at(10, 949_999_999), ms(50));
        assert_eq!((got.tv_sec, got.tv_nsec), (10, 999_999_999));
    }
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

    /// A file of `n` u32 futex words, mapped shared and writable here (the waiter maps its
    /// own page of it, as it does for other processes' arrays and streams).
    fn words(n: usize) -> (std::fs::File, memmap2::MmapMut) {
        let file = tempfile::tempfile().expect("temp file");
        file.set_len((n * 4).next_multiple_of(4096) as u64)
            .expect("size");
        // SAFETY: a private temp file, only accessed atomically below.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map");
        (file, map)
    }

    fn word(map: &memmap2::MmapMut, i: usize) -> &AtomicU32 {
        // SAFETY: in bounds and 4-aligned (the mapping is page aligned).
        unsafe { &*map.as_ptr().add(4 * i).cast::<AtomicU32>() }
    }

    // One test for the whole module: the reactor is global to the process (other async unit
    // tests take `TEST_LOCK` too, so the counts below are this test's alone).
    #[test]
    fn wakes_on_a_moved_word_shares_threads_and_forgets_dropped_registrations() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let (file, map) = words(200);
        // A word that moved before the thread saw the registration: woken by the scan.
        let (moved, waker) = counter();
        let early = register(&file, 0, 7, &waker);
        until("the early wake-up", || moved.0.load(Ordering::SeqCst) == 1);
        drop(early);

        // 199 words, 3 tasks each, then a bump and FUTEX_WAKE of every word.
        let (hits, waker) = counter();
        let regs: Vec<Registration> = (1..200)
            .flat_map(|i| {
                let (file, waker) = (&file, &waker);
                (0..3).map(move |_| register(file, 4 * i, 0, waker))
            })
            .collect();
        assert_eq!(registered_waiters(), 597);
        assert_eq!(waiter_threads(), 2, "199 words need two threads of 127");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(hits.0.load(Ordering::SeqCst), 0, "nothing moved yet");
        let woken_before = waiter_wakeups();
        for i in 1..200 {
            word(&map, i).store(1, Ordering::Release);
            crate::sys::futex_wake_all(word(&map, i));
        }
        until("597 wake-ups", || hits.0.load(Ordering::SeqCst) == 597);
        assert!(
            waiter_wakeups() > woken_before,
            "FUTEX_WAKE woke the waiter threads"
        );
        drop(regs);
        assert_eq!(registered_waiters(), 0, "dropped registrations are gone");

        // A dropped registration is never woken; a waker that panics does not stop the thread.
        let (none, waker) = counter();
        drop(register(&file, 4, 1, &waker));
        let bad = Waker::from(Arc::new(Panics));
        let panicking = register(&file, 8, 1, &bad);
        word(&map, 1).store(2, Ordering::Release);
        crate::sys::futex_wake_all(word(&map, 1));
        word(&map, 2).store(2, Ordering::Release);
        crate::sys::futex_wake_all(word(&map, 2));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(none.0.load(Ordering::SeqCst), 0);
        drop(panicking);
        let (after, waker) = counter();
        let reg = register(&file, 12, 1, &waker);
        word(&map, 3).store(2, Ordering::Release);
        crate::sys::futex_wake_all(word(&map, 3));
        until("a wake-up after a panicking waker", || {
            after.0.load(Ordering::SeqCst) == 1
        });
        drop(reg);
        assert_eq!(waiter_threads(), 2, "threads are reused, not added");
    }

    struct Panics;

    impl Wake for Panics {
        fn wake(self: Arc<Self>) {
            panic!("a waker that panics");
        }
    }
}
