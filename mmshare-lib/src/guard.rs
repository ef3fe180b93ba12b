//! A guard against truncation for a process that maps files others can truncate: the daemon.
//!
//! A file mapped `MAP_SHARED` that someone truncates raises `SIGBUS` at the next access to a
//! page past its new end, and kills the process. The daemon maps data files that writers hold
//! read-write (a writer is trusted with the contents, and the kernel has no seal for files on
//! disk), and it must survive a writer that truncates one: checking the size first (`fstat`)
//! leaves a window between the check and the access.
//!
//! So, once [`guard_mappings_against_truncation`] is called, every mapping this crate makes
//! in the process is registered in a fixed table, and a `SIGBUS` handler looks the faulting
//! address up there. For an address inside a registered mapping (and a fault the kernel
//! raised for an access past the end of the file, `BUS_ADRERR`) it maps a private, zeroed,
//! anonymous page over the faulting page (`mmap(MAP_FIXED)`), marks the mapping *truncated*,
//! and returns: the interrupted load or store runs again on the fresh page, reading zeros or
//! writing into memory nobody else sees. The owner then asks `Mapping::truncated()` (the
//! daemon's `intact()` checks do) and stops using the object. Any other SIGBUS is not ours: it
//! goes to the disposition the guard replaced (its handler is called; the default action is
//! put back and the fault happens again under it, so the process dies of `SIGBUS` as before).
//!
//! Everything the handler does is async-signal-safe: atomic loads and stores on a table that
//! is allocated once and never freed, `mmap`, and `sigaction`. Registration is a
//! compare-and-swap on a free entry; an entry's `len` is published before its `start`, and
//! removed first, so the handler never matches half an entry. A mapping is unregistered before
//! it is unmapped.
//!
//! Not for library users in general: a process-wide signal handler is the application's
//! choice, and clients are better served by never receiving a descriptor that can be resized.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// One registered mapping: `[start, start + len)`; `start` 0 = free.
struct Entry {
    start: AtomicUsize,
    len: AtomicUsize,
    hit: AtomicBool,
}

/// The table, allocated once (leaked: the handler may read it at any time).
static TABLE: AtomicPtr<Entry> = AtomicPtr::new(std::ptr::null_mut());
static CAPACITY: AtomicUsize = AtomicUsize::new(0);
static PAGE: AtomicUsize = AtomicUsize::new(4096);
/// The disposition the handler replaced, put back for faults that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Installs the guard for this process, with room for `capacity` mappings at once (mappings
/// made while the table is full are not guarded). Idempotent: later calls change nothing.
///
/// # Errors
/// The OS error of `sigaction`.
pub fn guard_mappings_against_truncation(capacity: usize) -> io::Result<()> {
    static INSTALLED: OnceLock<io::Result<()>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let capacity = capacity.max(1);
        let table: Box<[Entry]> = (0..capacity)
            .map(|_| Entry {
                start: AtomicUsize::new(0),
                len: AtomicUsize::new(0),
                hit: AtomicBool::new(false),
            })
            .collect();
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        CAPACITY.store(capacity, Ordering::Relaxed);
        // Release: pairs with the Acquire loads of TABLE in `register` and the handler, which
        // then see the initialized entries and CAPACITY.
        TABLE.store(Box::leak(table).as_mut_ptr(), Ordering::Release);
        // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags), filled in
        // below; `on_sigbus` has the SA_SIGINFO signature; `old` is written by the kernel.
        unsafe {
            // The disposition to hand faults that are not ours to is read (and kept) before
            // the handler can run.
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                return Err(io::Error::last_os_error());
            }
            let _ = PREVIOUS.set(old);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

fn table() -> &'static [Entry] {
    let ptr = TABLE.load(Ordering::Acquire);
    if ptr.is_null() {
        return &[];
    }
    // SAFETY: TABLE points to a leaked boxed slice of CAPACITY entries, published with
    // Release after CAPACITY was stored, and never freed.
    unsafe { std::slice::from_raw_parts(ptr, CAPACITY.load(Ordering::Relaxed)) }
}

/// A registered mapping; dropping it unregisters it.
#[derive(Debug)]
pub(crate) struct Guarded {
    index: usize,
}

impl Guarded {
    /// Registers `[start, start + len)` if the guard is installed and has room.
    pub(crate) fn register(start: usize, len: usize) -> Option<Guarded> {
        for (index, entry) in table().iter().enumerate() {
            // Claim a free entry with a placeholder start no address matches (1 is never a
            // mapping's page-aligned start), then publish len, then the real start.
            if entry
                .start
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                entry.hit.store(false, Ordering::Relaxed);
                entry.len.store(len, Ordering::Relaxed);
                // Release: the handler's Acquire load of `start` then sees `len`.
                entry.start.store(start, Ordering::Release);
                return Some(Guarded { index });
            }
        }
        None
    }

    /// Whether a fault in this mapping was caught: the file was truncated under it.
    pub(crate) fn truncated(&self) -> bool {
        table()[self.index].hit.load(Ordering::Acquire)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let entry = &table()[self.index];
        // The placeholder first (the handler then matches nothing here), then free it.
        entry.start.store(1, Ordering::Release);
        entry.len.store(0, Ordering::Relaxed);
        entry.start.store(0, Ordering::Release);
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local and always addressable.
    let errno = unsafe { *libc::__errno_location() };
    if !replace_lost_page(info) {
        pass_on(sig, info, ctx);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// For a fault at an address past the end of a registered mapping's file (`BUS_ADRERR`, sent
/// by the kernel, not by `kill`), maps a zero page over it and marks the mapping. Anything
/// else (a hardware memory error, a misaligned access, a signal someone sent) is not ours.
fn replace_lost_page(info: *mut libc::siginfo_t) -> bool {
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code != libc::BUS_ADRERR {
        return false;
    }
    let page = PAGE.load(Ordering::Relaxed);
    for entry in table() {
        let start = entry.start.load(Ordering::Acquire);
        if start <= 1 {
            continue;
        }
        let len = entry.len.load(Ordering::Relaxed);
        // The entry must be the same one whose `len` was read (not freed and reused between).
        if entry.start.load(Ordering::Acquire) != start {
            continue;
        }
        if addr >= start && addr < start.saturating_add(len) {
            let at = addr & !(page - 1);
            // SAFETY: the page lies inside a mapping this process made and still holds
            // (registered, not yet unregistered); replacing it with anonymous memory changes
            // what its accesses see, never which memory is valid. mmap is a plain system call.
            let r = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if r != libc::MAP_FAILED {
                entry.hit.store(true, Ordering::Release);
                return true;
            }
        }
    }
    false
}

/// Hands a fault that is not ours to the disposition the guard replaced: its handler is
/// called as the kernel would have called it; for the default action (or ignoring), that
/// disposition is put back and the handler returns, so a fault raised by the faulting
/// instruction happens again under it (the process dies of SIGBUS, as without the guard). A
/// SIGBUS someone sent with `kill` is then not raised again; the guard stays off afterwards.
fn pass_on(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(previous) = PREVIOUS.get() else {
        return;
    };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: `previous` is the disposition the kernel returned for SIGBUS.
        unsafe { libc::sigaction(sig, previous, std::ptr::null_mut()) };
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the kernel returned this as an SA_SIGINFO handler: it has that signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the kernel returned this as a plain handler: it has that signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::mapping::Mapping;

    /// A guarded mapping whose file is truncated under it reads zeros instead of killing the
    /// process, and says it was truncated; an untouched one does not.
    #[test]
    fn a_truncated_guarded_mapping_reads_zeros_and_says_so() {
        guard_mappings_against_truncation(64).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(8192).unwrap();
        let map = Mapping::map(&file, 8192, true).unwrap();
        let other = Mapping::map(&file, 8192, false).unwrap();
        map.u64_at(0x400).store(7, Ordering::Relaxed);
        assert_eq!(other.u64_at(0x400).load(Ordering::Relaxed), 7);
        assert!(!map.truncated());
        file.set_len(0).unwrap();
        // Both accesses would be SIGBUS without the guard.
        assert_eq!(map.u64_at(0x400).load(Ordering::Relaxed), 0);
        map.u64_at(0x408).store(9, Ordering::Relaxed);
        assert!(map.truncated());
        assert!(!other.truncated(), "the other mapping was not touched yet");
        assert_eq!(other.u32_word(4096).load(Ordering::Relaxed), 0);
        assert!(other.truncated());
    }
}
