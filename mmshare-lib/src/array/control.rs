//! An array's control file: where waiters count themselves as sleepers, so that a writer makes
//! the `FUTEX_WAKE` system call only when someone sleeps.
//!
//! Readers map the array itself read-only, so they cannot write a sleeper count into it. Each
//! array `DIR/NAME` therefore has a small control file `DIR/.control/NAME` that every
//! participant maps read-write (names never start with '.', so `.control` never collides with
//! an array or a stream). It holds one word that matters:
//!
//! * `SLEEPERS` (`u32` at 0x040): waiters that are asleep on the array's futex word, or about
//!   to be. A waiter adds itself, fences (SeqCst), sleeps with `FUTEX_WAIT` while the futex word
//!   still holds the value it saw, and removes itself when it wakes. A writer bumps the futex
//!   word after publishing, fences (SeqCst), and calls `FUTEX_WAKE` only if `SLEEPERS` is not
//!   zero. Either the writer sees the sleeper, or the kernel's check inside `FUTEX_WAIT` sees
//!   the bumped word and does not sleep: no wake-up is lost.
//!
//! A waiter killed while counted would leave `SLEEPERS` too high for good, and every later
//! write would call `FUTEX_WAKE` for nobody. So each process with a waiter counted holds a
//! shared OFD lock on byte 2 of the control state (taken before it counts itself, given up
//! after its last waiter took itself out; the kernel drops it when the process dies or
//! execs), and the daemon's periodic check sets `SLEEPERS` back to 0 when it counts waiters
//! that no such lock backs (`ArrayControl::heal_sleepers`).
//!
//! Like a stream's control file, nothing in it is trusted: a process that zeroes `SLEEPERS`
//! makes sleepers wake by their 50 ms re-check instead of at once; one that raises it makes
//! writers call `FUTEX_WAKE` needlessly. Neither can corrupt data. A handle opened without the
//! control file (an older file, or a descriptor passed without it) always wakes when it
//! writes, and sleeps unregistered when it waits (woken by writers that have no control file
//! either, otherwise by the re-check).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;

use crate::array::mapping::Mapping;
use crate::control_file::control_header;

/// The directory beside the arrays that holds their control files.
pub const CONTROL_DIR: &str = ".control";

/// Size of an array's control file.
const CONTROL_LEN: usize = 4096;

/// Offset of the `SLEEPERS` word (the same as in a stream's control file).
const SLEEPERS: usize = 0x040;

/// The control file of the array file at `array`: `DIR/.control/NAME`.
pub fn control_path(array: &Path) -> PathBuf {
    let dir = array.parent().unwrap_or(Path::new("."));
    let name = array.file_name().unwrap_or_default();
    dir.join(CONTROL_DIR).join(name)
}

/// Creates (or replaces) the control file of the array file at `array`.
///
/// # Errors
/// The OS error.
pub fn create_control(array: &Path) -> io::Result<PathBuf> {
    let path = control_path(array);
    let dir = path.parent().unwrap_or(Path::new("."));
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let temp = dir.join(crate::files::temp_name(
        &path.file_name().unwrap_or_default().to_string_lossy(),
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    let result = (|| {
        crate::sys::reserve_space(&file, CONTROL_LEN as u64)?;
        file.write_all_at(&control_header(0, 0), 0)?;
        // Replaces a stale control file of an earlier array of the same name: nobody can be
        // registered in it for this array.
        std::fs::rename(&temp, &path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map(|()| path)
}

/// Makes the control state of array `name` as the daemon hands it out: a sealed memfd (no
/// file, and no one who receives it can change its size), 4096 bytes, laid out as a control
/// file. Its memfd name, `mmshare-control:NAME`, shows in `/proc/PID/maps` and `/proc/PID/fd`
/// of the processes that map it, for diagnosis.
///
/// # Errors
/// The OS error.
pub fn new_array_control(name: &str) -> io::Result<File> {
    crate::sys::sealed_memfd(
        &crate::sys::memfd_name(name),
        CONTROL_LEN as u64,
        &control_header(0, 0),
    )
}

/// Whether `file` holds an array's control state: at least 4096 bytes, the right magic.
pub fn is_array_control(file: &File) -> bool {
    let mut head = [0u8; 8];
    file.metadata().is_ok_and(|m| m.len() >= CONTROL_LEN as u64)
        && file.read_exact_at(&mut head, 0).is_ok()
        && head == control_header(0, 0)[..8]
}

/// The control file's byte that every process with a waiter counted in `SLEEPERS` holds a
/// shared OFD lock on (see [`ArrayControl::sleep_begin`]). Byte 0 is the participant lock's.
const SLEEPER_LOCK_BYTE: u64 = 2;

/// A mapped array control file, and its descriptor (for the sleepers' presence lock).
#[derive(Debug)]
pub(crate) struct ArrayControl {
    map: Mapping,
    file: File,
    /// Waiters of this handle counted in `SLEEPERS` now: the presence lock is held while
    /// there is one (an OFD lock belongs to the description, shared by the handle's threads).
    asleep: std::sync::Mutex<u32>,
}

impl ArrayControl {
    /// Maps `file` if it is an array control file (at least 4096 bytes, the right magic);
    /// `None` otherwise (the handle then works without one).
    pub(crate) fn map(file: File) -> Option<ArrayControl> {
        if !is_array_control(&file) {
            return None;
        }
        let map = Mapping::map(&file, CONTROL_LEN, true).ok()?;
        Some(ArrayControl {
            map,
            file,
            asleep: std::sync::Mutex::new(0),
        })
    }

    /// Opens and maps the control file of the array file at `array`, if there is one.
    pub(crate) fn open_beside(array: &Path) -> Option<ArrayControl> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(control_path(array))
            .ok()?;
        Self::map(file)
    }

    /// The sleeper count.
    pub(crate) fn sleepers(&self) -> &AtomicU32 {
        self.map.u32_at(SLEEPERS)
    }

    /// Counts a waiter of this handle in `SLEEPERS`, after marking the handle's presence with
    /// a shared lock on [`SLEEPER_LOCK_BYTE`] (the first of its waiters takes it). The kernel
    /// drops that lock when the process dies or execs, so a count that no presence lock
    /// backs belongs to waiters that are gone, and [`ArrayControl::heal_sleepers`] takes it
    /// back: a waiter killed asleep does not leave every later write with a `FUTEX_WAKE`.
    pub(crate) fn sleep_begin(&self) {
        let mut asleep = self.asleep.lock().unwrap_or_else(|p| p.into_inner());
        if *asleep == 0 {
            let _ = crate::sys::lock_shared_byte(&self.file, SLEEPER_LOCK_BYTE);
        }
        *asleep += 1;
        self.sleepers()
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes a waiter counted by [`ArrayControl::sleep_begin`] out again (never below 0: a
    /// healing may have taken it out already), and the presence lock with the last one.
    pub(crate) fn sleep_end(&self) {
        let mut asleep = self.asleep.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.sleepers().fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |n| Some(n.saturating_sub(1)),
        );
        *asleep = asleep.saturating_sub(1);
        if *asleep == 0 {
            crate::sys::unlock_byte(&self.file, SLEEPER_LOCK_BYTE);
        }
    }

    /// Sets `SLEEPERS` back to 0 when it counts waiters although no process holds the
    /// presence lock (they died asleep); returns whether it did. The count is read between
    /// two checks of the lock, and cleared only if it did not change: a waiter that counts
    /// itself meanwhile holds the lock by then, or changed the count. (One that locks, counts
    /// and is taken out again between the two checks is not sleeping any more.)
    pub(crate) fn heal_sleepers(&self) -> bool {
        let count = self.sleepers();
        let absent = || crate::sys::byte_locked(&self.file, SLEEPER_LOCK_BYTE).ok() == Some(false);
        let seen = count.load(std::sync::atomic::Ordering::Relaxed);
        if seen == 0 || !absent() {
            return false;
        }
        let again = count.load(std::sync::atomic::Ordering::Relaxed);
        again == seen
            && absent()
            && count
                .compare_exchange(
                    seen,
                    0,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
    }
}
