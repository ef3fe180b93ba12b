//! The Linux-specific system calls, in one place: shared futexes, process identity, space
//! reservation. The rest of the crate speaks in project terms.

use std::fs::File;
use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use std::os::fd::OwnedFd;

use rustix::fs::FallocateFlags;
use rustix::net;
use rustix::thread::futex;

/// Waits while `*word == expected`, for at most `timeout`, on a **shared** futex.
///
/// A shared futex is keyed by the physical page (inode and offset for a file mapping), so a
/// wake from any process mapping the same file reaches this waiter; a private futex (the
/// default of most libraries) is keyed by the virtual address and silently never wakes across
/// processes. Waiting only reads the word, so it works on a read-only mapping.
///
/// Returns when woken, when the word no longer holds `expected`, on a signal, or on timeout;
/// callers re-check their condition in every case.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = rustix::time::Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    // EAGAIN (value changed), EINTR and ETIMEDOUT all mean "look again"; there is nothing else
    // a valid, aligned, mapped word can produce. Success means another thread or process woke
    // us with FUTEX_WAKE: counted, so tests can prove wakes cross process boundaries.
    FUTEX_WAIT_CALLS.with(|n| n.set(n.get() + 1));
    match futex::wait(word, futex::Flags::empty(), expected, Some(&ts)) {
        Ok(()) => {
            FUTEX_WAKEUPS.fetch_add(1, Ordering::Relaxed);
            FUTEX_WOKEN.with(|n| n.set(n.get() + 1));
        }
        // The word had already moved on: the publish this waiter was about to sleep through
        // happened between its check and its sleep (the lost-wake-up window), and the bumped
        // word turned the sleep into an immediate return. Counted for the test of that window.
        Err(rustix::io::Errno::AGAIN) => {
            FUTEX_ALREADY_CHANGED.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {}
    }
}

/// Sleeps while the process-private futex `word` holds `expected`, at most `timeout` (`None`:
/// until woken). Any outcome means "look again".
#[cfg(feature = "async")]
pub(crate) fn futex_wait_private(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| rustix::time::Timespec {
        tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    let _ = futex::wait(word, futex::Flags::PRIVATE, expected, ts.as_ref());
}

/// Sleeps until one of `words` no longer holds its value (shared futexes, `futex_waitv`,
/// Linux 5.16 and later), a wake on one of them, or `timeout`; at most 128 words.
///
/// # Errors
/// `ENOSYS` on an older kernel (the caller falls back to sleeping), `EINVAL` for more than
/// 128 words. A changed value, a wake, a timeout and a signal are all `Ok`: look again.
pub fn futex_wait_any(words: &[(&AtomicU32, u32)], timeout: Duration) -> io::Result<()> {
    let waiters: Vec<futex::Wait> = words
        .iter()
        .map(|&(word, val)| {
            let mut w = futex::Wait::new();
            w.val = u64::from(val);
            w.uaddr = futex::WaitPtr::new(word.as_ptr().cast());
            w.flags = futex::WaitFlags::SIZE_U32;
            w
        })
        .collect();
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let end = Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec as u32) + timeout;
    let deadline = rustix::time::Timespec {
        tv_sec: i64::try_from(end.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(end.subsec_nanos()),
    };
    FUTEX_WAIT_CALLS.with(|n| n.set(n.get() + 1));
    match futex::waitv(
        &waiters,
        futex::WaitvFlags::empty(),
        Some(&deadline),
        rustix::time::ClockId::Monotonic,
    ) {
        Ok(_) => {
            FUTEX_WOKEN.with(|n| n.set(n.get() + 1));
            Ok(())
        }
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR | rustix::io::Errno::TIMEDOUT) => {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

static FUTEX_WAKEUPS: AtomicU64 = AtomicU64::new(0);
static FUTEX_ALREADY_CHANGED: AtomicU64 = AtomicU64::new(0);

/// How many futex sleeps in this process returned at once because the word no longer held the
/// expected value. A diagnostic for tests.
#[cfg(test)]
pub(crate) fn futex_already_changed() -> u64 {
    FUTEX_ALREADY_CHANGED.load(Ordering::Relaxed)
}

/// How many times a futex sleep in this process ended because it was woken (rather than by a
/// timeout or a changed value). A diagnostic: tests use it to prove that a write in one process
/// wakes a sleeper in another.
pub fn futex_wakeups() -> u64 {
    FUTEX_WAKEUPS.load(Ordering::Relaxed)
}

/// Wakes every waiter on the shared futex `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    FUTEX_WAKE_CALLS.with(|n| n.set(n.get() + 1));
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}

thread_local! {
    static FUTEX_WAKE_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static FUTEX_WAIT_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static FUTEX_WOKEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many shared-futex sleeps (`FUTEX_WAIT`) the calling thread has started, and how many of
/// them a `FUTEX_WAKE` ended. A diagnostic: tests use it to tell a waiter that was woken from
/// one that polled or ran out its sleep.
pub fn futex_wait_calls() -> (u64, u64) {
    (
        FUTEX_WAIT_CALLS.with(std::cell::Cell::get),
        FUTEX_WOKEN.with(std::cell::Cell::get),
    )
}

/// How many `FUTEX_WAKE` system calls the calling thread has made. A diagnostic: tests use it
/// to prove that publishing with nobody asleep makes no system call (per thread, so that other
/// threads of a test binary do not disturb the count).
pub fn futex_wake_calls() -> u64 {
    FUTEX_WAKE_CALLS.with(std::cell::Cell::get)
}

/// A process, identified so that a reused pid is not mistaken for it: the pid plus the time the
/// process started (clock ticks since boot, field 22 of `/proc/PID/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// Its start time in clock ticks since boot.
    pub start_time: u64,
}

/// Liveness of a recorded process.
///
/// Recovery acts only on `Dead`, which needs positive evidence; everything that cannot be
/// checked is `Unknown`, and `Unknown` is never treated as dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The same process is still running.
    Alive,
    /// Positive evidence that it is gone: no process has its pid (`kill(pid, 0)` fails with
    /// `ESRCH`), it is a zombie, or the pid now belongs to a process with another start time.
    Dead,
    /// It cannot be told: no start time was recorded, or its `/proc` entry cannot be read
    /// (hidepid, permissions) while a process with that pid may exist.
    Unknown,
}

/// What `/proc/PID/stat` says of a pid.
enum Stat {
    /// The process runs (or sleeps, or is stopped), with this start time.
    Running { start_time: u64 },
    /// It exited and waits to be reaped.
    Zombie,
}

/// Reads the state and start time of `pid` from `/proc`. `Ok(None)` when there is no entry
/// for it (which alone does not prove it is gone: hidepid hides other users' processes).
fn read_stat(pid: u32) -> io::Result<Option<Stat>> {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat");
    // The command name (field 2) is in parentheses and may contain spaces and ')'; the fields
    // after the last ')' are plain numbers. Field 3 is the state, field 22 the start time.
    let rest = &stat[stat.rfind(')').ok_or_else(malformed)? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next().ok_or_else(malformed)?;
    let start_time = fields
        .nth(22 - 4)
        .and_then(|f| f.parse().ok())
        .ok_or_else(malformed)?;
    // A zombie *leader* may still have live threads (its main thread called pthread_exit):
    // the process is gone only when no task of it is left running.
    if (state == "Z" || state == "X") && !has_live_thread(pid) {
        return Ok(Some(Stat::Zombie));
    }
    Ok(Some(Stat::Running { start_time }))
}

/// Whether some thread of `pid` other than a zombie is listed in `/proc/PID/task`.
fn has_live_thread(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_ascii_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
    })
}

/// Whether a process with this pid exists, by `kill(pid, 0)`: `Some(false)` only on `ESRCH`
/// (positive evidence), `Some(true)` when it exists (success or `EPERM`), `None` otherwise.
fn pid_exists(pid: u32) -> Option<bool> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    match rustix::process::test_kill_process(pid) {
        Ok(()) | Err(rustix::io::Errno::PERM) => Some(true),
        Err(rustix::io::Errno::SRCH) => Some(false),
        Err(_) => None,
    }
}

impl ProcessId {
    /// The identity as one header word: pid in the low 32 bits, the low 32 bits of the start
    /// time in the high 32 bits (a reused pid would also need a start time equal modulo 2^32
    /// ticks, about 497 days at 100 Hz, to be mistaken for the writer).
    pub fn to_word(self) -> u64 {
        u64::from(self.pid) | (self.start_time & 0xFFFF_FFFF) << 32
    }

    /// The identity stored in a header word, `None` for 0 (no writer).
    pub fn from_word(word: u64) -> Option<ProcessId> {
        (word != 0).then_some(ProcessId {
            pid: word as u32,
            start_time: word >> 32,
        })
    }

    /// The calling process. Cached per fork, so it stays right across `fork`.
    ///
    /// The pid is the one `/proc` shows (field 1 of `/proc/self/stat`), not `getpid()`: in a
    /// child pid namespace that still shares the host's `/proc` (`unshare --pid`), `getpid()`
    /// is a namespace-local number (often 1) that would name another process to the daemon,
    /// while `/proc` speaks the daemon's language. Without a readable `/proc`, the start time is
    /// 0, which recovery treats as "cannot tell" and never as dead.
    ///
    /// Called on every write, so it makes no system call once known: the identity is kept
    /// with the number of forks this process image has been through (counted by a
    /// `pthread_atfork` child handler), and read again only in a forked child. (`getpid`
    /// on every write cost a 64-byte write about a third of its time.)
    pub fn current() -> ProcessId {
        /// Bumped in every child right after `fork` (libc's, which every way of forking
        /// without `exec` in Rust and Python goes through).
        static FORKS: AtomicU64 = AtomicU64::new(0);
        extern "C" fn forked() {
            // Async-signal-safe: one atomic add.
            FORKS.fetch_add(1, Ordering::Relaxed);
        }
        static REGISTERED: OnceLock<bool> = OnceLock::new();
        // The process's identity for a fork count: shared, consulted when a thread's own copy
        // is missing or from before a fork.
        static SHARED: std::sync::Mutex<Option<(u64, ProcessId)>> = std::sync::Mutex::new(None);
        thread_local! {
            static MINE: std::cell::Cell<Option<(u64, ProcessId)>> =
                const { std::cell::Cell::new(None) };
        }
        let registered = *REGISTERED.get_or_init(|| {
            // SAFETY: registers a child handler that only does an atomic add; the handler is
            // a plain `extern "C" fn` that lives for the whole program.
            unsafe { libc::pthread_atfork(None, None, Some(forked)) == 0 }
        });
        if !registered {
            // No fork count: read the identity every time, as a forked child must.
            return Self::read_self().unwrap_or(ProcessId {
                pid: std::process::id(),
                start_time: 0,
            });
        }
        let forks = FORKS.load(Ordering::Relaxed);
        if let Some((seen, id)) = MINE.get()
            && seen == forks
        {
            return id;
        }
        // The lock is never held across the /proc read: a thread forking while another holds
        // it would leave the child's lock held forever.
        let known = match *SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some((seen, id)) if seen == forks => Some(id),
            _ => None,
        };
        let id = known.unwrap_or_else(|| {
            let id = Self::read_self().unwrap_or(ProcessId {
                pid: std::process::id(),
                start_time: 0,
            });
            *SHARED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((forks, id));
            id
        });
        MINE.set(Some((forks, id)));
        id
    }

    fn read_self() -> Option<ProcessId> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let pid = stat.split_ascii_whitespace().next()?.parse().ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        let start_time = rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()?;
        Some(ProcessId { pid, start_time })
    }

    /// Reads the identity of `pid` from /proc, if that process exists and its entry can be
    /// read (zombies count as gone).
    pub fn read(pid: u32) -> Option<ProcessId> {
        match read_stat(pid) {
            Ok(Some(Stat::Running { start_time })) => Some(ProcessId { pid, start_time }),
            _ => None,
        }
    }

    /// Whether this exact process (same pid, same start time modulo 2^32 ticks) still runs.
    ///
    /// `Dead` only on positive evidence (see [`Liveness::Dead`]). `Unknown` when the identity
    /// has no start time (its /proc entry was unreadable when it was recorded), or when this
    /// process cannot read the pid's `/proc` entry and cannot rule out that it exists. Callers
    /// must not treat `Unknown` as dead.
    ///
    /// A pid recorded in another pid namespace with its own `/proc` names some other process
    /// here, and may be judged `Dead` although its writer runs: that is why publishing is a
    /// compare-and-swap (module `seqlock`), which turns such a mistake into a clean error for
    /// that writer instead of a sequence that runs backwards.
    pub fn liveness(&self) -> Liveness {
        if self.pid == 0 || self.start_time == 0 {
            return Liveness::Unknown;
        }
        match read_stat(self.pid) {
            Ok(Some(Stat::Running { start_time }))
                if start_time & 0xFFFF_FFFF == self.start_time & 0xFFFF_FFFF =>
            {
                Liveness::Alive
            }
            Ok(Some(_)) => Liveness::Dead,
            // No entry, or an unreadable one: only ESRCH from kill(pid, 0) proves it is gone.
            Ok(None) | Err(_) => match pid_exists(self.pid) {
                Some(false) => Liveness::Dead,
                _ => Liveness::Unknown,
            },
        }
    }
}

/// The CPU this thread runs on right now, plus one (0 when the kernel cannot say): the form of
/// the CPU hints in a stream's control file, where 0 means "unknown".
///
/// glibc answers from the thread's restartable-sequences area when the kernel keeps one (a
/// memory read), else through the vDSO; either way no system call on the paths that ask.
pub(crate) fn cpu_hint() -> u32 {
    // SAFETY: `sched_getcpu` takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).map_or(0, |c| c.wrapping_add(1))
}

/// Asks the CPU to start loading the cache line at `addr` for reading, and returns at once: a
/// hint with no effect on what the program sees. Never faults, even on an address that is not
/// mapped (the load is then dropped), so any address will do.
///
/// A subscriber polling for its next frame asks for the frame's first line on each poll: when
/// the frame arrives, that line is already on its way, beside the tag line the poll reads, so
/// that a small frame costs one cache miss after its tag instead of two in a row.
#[inline]
pub(crate) fn prefetch(addr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(addr.cast());
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above: `prfm` is a hint that never faults and writes nothing.
    unsafe {
        std::arch::asm!(
            "prfm pldl1keep, [{addr}]",
            addr = in(reg) addr,
            options(nostack, readonly, preserves_flags)
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = addr;
}

/// How many CPUs the machine has online, read once per process: how many busy-waiting
/// participants can run at the same time. (Not the caller's affinity: a thread pinned to one
/// CPU would count one, and the other participants are other processes with their own.) A
/// thread's [`CPUS_FOR_TEST`] stands in for it in tests.
pub(crate) fn usable_cpus() -> usize {
    #[cfg(test)]
    if let Some(n) = CPUS_FOR_TEST.with(std::cell::Cell::get) {
        return n;
    }
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        usize::try_from(online).map_or(1, |n| n.max(1))
    })
}

#[cfg(test)]
thread_local! {
    /// The CPU count [`usable_cpus`] answers on this thread, when set (tests).
    pub(crate) static CPUS_FOR_TEST: std::cell::Cell<Option<usize>> =
        const { std::cell::Cell::new(None) };
}

/// Reserves `len` bytes of real disk space for `file`, so later writes through a mapping cannot
/// hit a full disk (which would be a SIGBUS, not an error).
///
/// # Errors
/// The OS error; `ENOSPC` when the space is not there.
pub fn reserve_space(file: &File, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    rustix::fs::fallocate(file, FallocateFlags::empty(), 0, len).map_err(io::Error::from)
}

/// The seals that make a control memfd safe to share: nobody can shrink it (which would turn
/// every mapping's access past the new end into SIGBUS), grow it (which would bypass the
/// daemon's byte limits: memfd pages are RAM), or change the seals.
pub const CONTROL_SEALS: rustix::fs::SealFlags = rustix::fs::SealFlags::SHRINK
    .union(rustix::fs::SealFlags::GROW)
    .union(rustix::fs::SealFlags::SEAL);

/// The memfd name of object `name`'s control state: `mmshare-control:NAME`, cut to the
/// kernel's 249-byte limit (names are ASCII, so any cut is a character boundary).
pub(crate) fn memfd_name(name: &str) -> String {
    let mut s = format!("mmshare-control:{name}");
    s.truncate(249);
    s
}

/// Makes an anonymous shared-memory file (`memfd_create`, close-on-exec) of exactly `len`
/// bytes, space reserved, starting with `head`, then seals it with [`CONTROL_SEALS`]. What
/// the kernel enforces from then on, for every process that ever gets a descriptor for it:
/// its size never changes, whatever that descriptor's access mode.
///
/// # Errors
/// The OS error (`ENOSPC`/`ENOMEM` when the memory is not there, `EMFILE`, ...).
pub fn sealed_memfd(name: &str, len: u64, head: &[u8]) -> io::Result<File> {
    use rustix::fs::{MemfdFlags, fcntl_add_seals, memfd_create};
    use std::os::unix::fs::FileExt;
    let fd = memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    let file = File::from(fd);
    file.set_len(len)?;
    reserve_space(&file, len)?;
    file.write_all_at(head, 0)?;
    fcntl_add_seals(&file, CONTROL_SEALS)?;
    Ok(file)
}

/// Whether `file` carries every seal of [`CONTROL_SEALS`] (false for a regular file, which
/// cannot be sealed, and when the seals cannot be read).
pub fn is_sealed(file: &File) -> bool {
    rustix::fs::fcntl_get_seals(file).is_ok_and(|s| s.contains(CONTROL_SEALS))
}

/// Opens `file` again through `/proc/self/fd`, read-write and close-on-exec: a new open file
/// description of the same file (for a memfd: the same memory, the same seals), so that locks
/// taken through it are its own.
///
/// # Errors
/// The OS error (`ENOENT` without `/proc`).
pub fn reopen(file: &File) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// The byte of a control file whose lock marks a live participant.
const PARTICIPANT_BYTE: i64 = 0;

fn ofd_lock(file: &File, cmd: libc::c_int, kind: libc::c_int) -> io::Result<libc::flock> {
    ofd_lock_at(file, PARTICIPANT_BYTE, cmd, kind)
}

fn ofd_lock_at(
    file: &File,
    byte: libc::off_t,
    cmd: libc::c_int,
    kind: libc::c_int,
) -> io::Result<libc::flock> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = byte;
    lock.l_len = 1;
    // l_pid must be 0 for the OFD commands.
    loop {
        // SAFETY: `file` is an open descriptor for the duration of the call, and `lock` is a
        // valid, writable `struct flock` the kernel reads (SETLK) or fills in (GETLK).
        let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut lock as *mut libc::flock) };
        if r == 0 {
            return Ok(lock);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Marks the calling handle as a live participant of the object whose control file `file`
/// is: a shared open-file-description lock (`F_OFD_SETLK`, `F_RDLCK`) on byte 0, through
/// `file`'s own open file description.
///
/// The kernel drops it when the last reference to that description goes: when the process
/// dies, when it execs (the descriptor is close-on-exec and exec drops the mappings), or when
/// the handle closes its descriptor and unmaps the file. A mapping keeps the description
/// alive, so the lock lasts exactly as long as the handle can touch the control memory. A
/// `fork()`ed child shares the description and so the lock: the object counts as in use while
/// either process keeps it. OFD locks do not depend on pids, so this is right across pid
/// namespaces and pid reuse.
///
/// # Errors
/// The OS error; `EAGAIN` if someone holds a write lock on that byte (never an mmshare
/// process: they only test for one).
pub fn hold_participant_lock(file: &File) -> io::Result<()> {
    ofd_lock(file, libc::F_OFD_SETLK, libc::F_RDLCK).map(|_| ())
}

/// Whether any open file description other than `file`'s holds a participant lock on the
/// control file `file` (`F_OFD_GETLK`: asks, takes nothing).
///
/// # Errors
/// The OS error (`EINVAL` on a kernel without OFD locks, before 3.15).
pub fn has_participants(file: &File) -> io::Result<bool> {
    let found = ofd_lock(file, libc::F_OFD_GETLK, libc::F_WRLCK)?;
    Ok(found.l_type != libc::F_UNLCK as libc::c_short)
}

/// A liveness lock: an exclusive open-file-description lock on one byte of a control file,
/// which a participant holds for as long as it is a subscriber (the byte of its record) or
/// the publisher (`PUBLISHER_LOCK_BYTE`). The kernel drops it when the description goes: at
/// death, at `exec`, or when the handle closes and unmaps the file; a `fork()`ed child shares
/// it. So "the byte is locked" is the kernel's word that the participant lives, with no pid
/// involved (right across pid namespaces, not fooled by pid reuse or by `exec`).
///
/// Takes the lock on `byte` through `file`'s description; `Ok(false)` if another description
/// holds a lock on it.
///
/// # Errors
/// The OS error (`EINVAL` on a kernel without OFD locks, before 3.15).
pub(crate) fn try_lock_byte(file: &File, byte: u64) -> io::Result<bool> {
    match ofd_lock_at(file, byte as libc::off_t, libc::F_OFD_SETLK, libc::F_WRLCK) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Takes a shared lock on `byte` through `file`'s description (as many descriptions may hold
/// one at once; see [`try_lock_byte`] for what the kernel does with it).
///
/// # Errors
/// The OS error (`EAGAIN` if someone holds an exclusive lock there).
pub(crate) fn lock_shared_byte(file: &File, byte: u64) -> io::Result<()> {
    ofd_lock_at(file, byte as libc::off_t, libc::F_OFD_SETLK, libc::F_RDLCK).map(|_| ())
}

/// Gives up the lock [`try_lock_byte`] took on `byte` (nothing if there was none).
pub(crate) fn unlock_byte(file: &File, byte: u64) {
    let _ = ofd_lock_at(file, byte as libc::off_t, libc::F_OFD_SETLK, libc::F_UNLCK);
}

/// Whether a description other than `file`'s holds a lock on `byte` (`F_OFD_GETLK`: asks,
/// takes nothing).
///
/// # Errors
/// The OS error.
pub(crate) fn byte_locked(file: &File, byte: u64) -> io::Result<bool> {
    let found = ofd_lock_at(file, byte as libc::off_t, libc::F_OFD_GETLK, libc::F_WRLCK)?;
    Ok(found.l_type != libc::F_UNLCK as libc::c_short)
}

/// Whether a description other than `file`'s holds an **exclusive** lock on `byte`:
/// `Some(true)` if so, `Some(false)` if nobody holds a lock there, `None` if someone holds a
/// shared one (a reader's, which tells nothing of a writer).
///
/// # Errors
/// The OS error.
pub(crate) fn write_locked(file: &File, byte: u64) -> io::Result<Option<bool>> {
    let found = ofd_lock_at(file, byte as libc::off_t, libc::F_OFD_GETLK, libc::F_WRLCK)?;
    Ok(match found.l_type as libc::c_int {
        libc::F_UNLCK => Some(false),
        libc::F_WRLCK => Some(true),
        _ => None,
    })
}

/// Connects a close-on-exec SOCK_SEQPACKET Unix socket to `path`, waiting at most `timeout`
/// while the listener's queue is full (a frozen or overloaded daemon accepts nothing, and a
/// blocking connect would wait for it for ever). The connected socket then waits at most
/// `timeout` for each send and receive (`SO_SNDTIMEO`, `SO_RCVTIMEO`), which then fail with
/// `EAGAIN`. `Duration::ZERO` waits without limit.
///
/// # Errors
/// The OS error (`ENOENT`, `ECONNREFUSED`, `EACCES`, ...); `ErrorKind::TimedOut` when the
/// queue stayed full for `timeout`.
pub(crate) fn seqpacket_connect(
    path: &std::path::Path,
    timeout: std::time::Duration,
) -> io::Result<OwnedFd> {
    use std::time::{Duration, Instant};
    let fd = net::socket_with(
        net::AddressFamily::UNIX,
        net::SocketType::SEQPACKET,
        net::SocketFlags::CLOEXEC | net::SocketFlags::NONBLOCK,
        None,
    )?;
    let addr = net::SocketAddrUnix::new(path)?;
    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    let mut pause = Duration::from_millis(1);
    loop {
        match net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(rustix::io::Errno::INTR) => {}
            // A Unix socket's queue is full: the listener accepts nothing right now.
            Err(rustix::io::Errno::AGAIN) => {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the daemon accepted no connection",
                    ));
                }
                let left = deadline.map_or(pause, |d| d - now);
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
    rustix::io::ioctl_fionbio(&fd, false)?;
    let limit = (!timeout.is_zero()).then_some(timeout);
    net::sockopt::set_socket_timeout(&fd, net::sockopt::Timeout::Recv, limit)?;
    net::sockopt::set_socket_timeout(&fd, net::sockopt::Timeout::Send, limit)?;
    Ok(fd)
}

/// Whether `e` is the expiry of a socket's send or receive timeout.
pub(crate) fn timed_out(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut
}

/// The effective uid of the process at the other end of the connected Unix socket `fd`
/// (`SO_PEERCRED`): for a client, the uid the daemon had when it called `listen` (root for a
/// socket that systemd created and passed to it).
pub(crate) fn peer_uid(fd: &OwnedFd) -> io::Result<u32> {
    Ok(net::sockopt::socket_peercred(fd)?.uid.as_raw())
}

/// This process's effective uid.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Sends one message (no descriptors). `MSG_NOSIGNAL`: a closed peer is an error, not SIGPIPE.
pub(crate) fn send_message(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    let n = net::send(fd, bytes, net::SendFlags::NOSIGNAL)?;
    if n != bytes.len() {
        return Err(io::Error::other(format!(
            "sent {n} of {} bytes",
            bytes.len()
        )));
    }
    Ok(())
}

/// Most descriptors one received message keeps: two per lane of a stream with the most
/// publishers (its data file and control state), and two to spare.
pub(crate) const MAX_RECEIVED_FDS: usize = 2 * crate::format::MAX_PUBLISHERS as usize + 2;

/// A received message: its length (0 means the peer closed), whether it was longer than the
/// buffer, the descriptors attached to it (received close-on-exec; at most
/// [`MAX_RECEIVED_FDS`] are kept, any others closed at once), and whether the kernel dropped descriptors it carried
/// (`MSG_CTRUNC`: this process is at its descriptor limit).
pub(crate) struct Received {
    pub(crate) len: usize,
    pub(crate) truncated: bool,
    pub(crate) fds: Vec<OwnedFd>,
    pub(crate) fds_lost: bool,
}

/// Receives one message into `buf`, with at most a few descriptors.
pub(crate) fn recv_message(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Received> {
    recv_message_with(fd, buf, net::RecvFlags::empty())
}

/// [`recv_message`] that never waits: `WouldBlock` when no message is there.
pub(crate) fn try_recv_message(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Received> {
    recv_message_with(fd, buf, net::RecvFlags::DONTWAIT)
}

fn recv_message_with(fd: &OwnedFd, buf: &mut [u8], flags: net::RecvFlags) -> io::Result<Received> {
    let mut space =
        [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_RECEIVED_FDS))];
    let mut control = net::RecvAncillaryBuffer::new(&mut space);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = loop {
        match net::recvmsg(
            fd,
            &mut iov,
            &mut control,
            net::RecvFlags::CMSG_CLOEXEC | flags,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut kept = Vec::new();
    for m in control.drain() {
        if let net::RecvAncillaryMessage::ScmRights(fds) = m {
            for received in fds {
                // Dropping the ones beyond the limit closes them.
                if kept.len() < MAX_RECEIVED_FDS {
                    kept.push(received);
                }
            }
        }
    }
    Ok(Received {
        len: msg.bytes,
        truncated: msg.flags.contains(net::ReturnFlags::TRUNC),
        fds: kept,
        fds_lost: msg.flags.contains(net::ReturnFlags::CTRUNC),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_a_made_up_one_is_not() {
        let me = ProcessId::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_time > 0);
        assert_eq!(me.liveness(), Liveness::Alive);
        let imposter = ProcessId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert_eq!(imposter.liveness(), Liveness::Dead);
        assert_eq!(
            ProcessId::from_word(me.to_word()).unwrap().liveness(),
            Liveness::Alive
        );
        assert_eq!(ProcessId::from_word(0), None);
        let no_start = ProcessId {
            pid: me.pid,
            start_time: 0,
        };
        assert_eq!(no_start.liveness(), Liveness::Unknown);
    }

    /// Dead needs positive evidence: a reaped child's pid (ESRCH) is dead; a pid this process
    /// cannot even name (beyond pid_t) is unknown, never dead.
    #[test]
    fn liveness_is_dead_only_on_positive_evidence() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let id = ProcessId::read(child.id()).expect("a running child has a /proc entry");
        assert_eq!(id.liveness(), Liveness::Alive);
        child.kill().unwrap();
        // Not yet reaped: a zombie has exited, which is positive evidence too. (The signal is
        // delivered asynchronously; the watchdog only stops a broken build from hanging.)
        let watchdog = std::time::Instant::now() + Duration::from_secs(10);
        while id.liveness() != Liveness::Dead {
            assert!(
                std::time::Instant::now() < watchdog,
                "killed child still alive"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(std::fs::read_to_string(format!("/proc/{}/stat", id.pid)).is_ok());
        child.wait().unwrap();
        assert_eq!(id.liveness(), Liveness::Dead);
        let unnameable = ProcessId {
            pid: u32::MAX,
            start_time: 5,
        };
        assert_eq!(unnameable.liveness(), Liveness::Unknown);
    }
}

#[cfg(test)]
mod wait_any_tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// `futex_wait_any` sleeps on several words and a wake on any one of them ends it (counted
    /// as woken, not as a timeout); a word that no longer holds its value returns at once.
    #[test]
    fn a_wake_on_any_word_ends_the_wait() {
        static A: AtomicU32 = AtomicU32::new(0);
        static B: AtomicU32 = AtomicU32::new(0);
        let waker = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            B.fetch_add(1, Ordering::SeqCst);
            super::futex_wake_all(&B);
        });
        let (_, woken) = super::futex_wait_calls();
        super::futex_wait_any(&[(&A, 0), (&B, 0)], Duration::from_secs(30)).unwrap();
        assert_eq!(
            super::futex_wait_calls().1,
            woken + 1,
            "woken, not timed out"
        );
        waker.join().unwrap();
        // B holds 1 now: a wait for 0 returns at once, without a wake.
        super::futex_wait_any(&[(&A, 0), (&B, 0)], Duration::from_secs(30)).unwrap();
        assert_eq!(super::futex_wait_calls().1, woken + 1);
    }

    /// The identity is cached, and a forked child gets its own, not its parent's (the cache
    /// is from before the fork), from the thread that forked as from a thread it starts.
    #[test]
    fn a_forked_child_knows_it_is_not_its_parent() {
        use crate::sys::ProcessId;
        let parent = ProcessId::current();
        assert_eq!(parent.pid, std::process::id());
        assert_eq!(ProcessId::current(), parent, "cached");
        // SAFETY: the child only calls async-signal-safe-enough code of this crate (reading
        // /proc, a mutex nobody else holds: this test's threads do not touch it meanwhile)
        // and exits with `_exit`.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            let me = ProcessId::current();
            let from_thread = std::thread::spawn(ProcessId::current).join().ok();
            let ok = me.pid == std::process::id()
                && me != parent
                && me.start_time != 0
                && from_thread == Some(me);
            // SAFETY: ends the child without running the parent's test harness teardown.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status}"
        );
        assert_eq!(ProcessId::current(), parent, "the parent's stays");
    }
}
