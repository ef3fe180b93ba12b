//! The memory mapping of one array file, and typed access to its header words.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::format::HEADER_SIZE;
use crate::guard::Guarded;

/// A shared mapping of a whole array file: the header page, then the padded data area.
///
/// # The hazard, and what this type does about it
/// Other processes map the same file and may write any byte of it at any time, and a process
/// with write access to the file could even truncate it, after which touching the lost pages
/// raises SIGBUS. So:
/// * no `&[u8]`, `&T` or `&mut` is ever formed over the mapped bytes; every access is an atomic
///   load or store through a raw pointer (the seqlock module), which makes concurrent writes by
///   others well-defined;
/// * the mapping length is checked against the file size and the header before mapping, and no
///   access goes past `len`;
/// * truncation is not defended against in a client: mmshare's daemon never truncates a file,
///   array files are 0600 in a directory clients cannot list, clients only ever receive a
///   descriptor, and control state is sealed against resizing. A writer that truncates a data
///   file anyway crashes the readers (SIGBUS), as with any shared mapping; docs/FORMAT.md says
///   so. In a process that installed the truncation guard (module `guard`: the daemon), every
///   mapping is registered, a truncation turns into zero pages instead of a signal, and
///   [`Mapping::truncated`] reports it.
pub(crate) struct Mapping {
    // Declared first, so it is dropped (unregistered) before the mapping is unmapped.
    guard: Option<Guarded>,
    // Holds the mapping alive; never dereferenced as a slice.
    _map: MapKind,
    base: *mut u8,
    len: usize,
    writable: bool,
}

enum MapKind {
    ReadOnly(#[allow(dead_code)] Mmap),
    ReadWrite(MmapMut),
}

// SAFETY: the mapping is plain shared memory, valid until drop from any thread; every access to
// the bytes behind `base` is atomic (see the type docs), so sharing it across threads adds no
// data race beyond the cross-process ones the seqlock already handles.
unsafe impl Send for Mapping {}
// SAFETY: as for Send: `&Mapping` only allows atomic access to the mapped bytes.
unsafe impl Sync for Mapping {}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish()
    }
}

impl Mapping {
    /// Maps the first `len` bytes of `file`, shared, read-only or read-write.
    ///
    /// The caller has checked that the file is at least `len` bytes long.
    pub(crate) fn map(file: &File, len: usize, writable: bool) -> io::Result<Mapping> {
        debug_assert!(len >= HEADER_SIZE);
        let mut opts = MmapOptions::new();
        opts.len(len);
        let (map, base) = if writable {
            // SAFETY: memmap2 requires that the file is not modified or truncated in ways the
            // program does not expect. Modification by other processes is the point and is only
            // observed through atomics (type docs); truncation is excluded by mmshare's rules
            // (never truncate) and its consequence (SIGBUS) is documented.
            let mut m = unsafe { opts.map_mut(file)? };
            let base = m.as_mut_ptr();
            (MapKind::ReadWrite(m), base)
        } else {
            // SAFETY: as above.
            let m = unsafe { opts.map(file)? };
            let base = m.as_ptr().cast_mut();
            (MapKind::ReadOnly(m), base)
        };
        // mmap returns page-aligned addresses; the data area starts one page in.
        debug_assert_eq!(base as usize % HEADER_SIZE, 0);
        Ok(Mapping {
            guard: Guarded::register(base as usize, len),
            _map: map,
            base,
            len,
            writable,
        })
    }

    /// Whether the truncation guard caught an access past the end of the file (it was
    /// truncated under this mapping). Always false without the guard.
    pub(crate) fn truncated(&self) -> bool {
        self.guard.as_ref().is_some_and(Guarded::truncated)
    }

    /// Whether stores are allowed (the mapping is read-write).
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    /// The 8-byte header word at `offset`.
    pub(crate) fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= HEADER_SIZE);
        // SAFETY: the header page is mapped for the life of `self`, the offset is 8-aligned in a
        // page-aligned mapping, and every process accesses header words only atomically. On a
        // read-only mapping the crate only ever performs Relaxed loads through these (stores and
        // RMWs are behind `writable()` checks), which the std atomic docs allow on read-only
        // memory for register-sized atomics.
        unsafe { AtomicU64::from_ptr(self.base.add(offset).cast()) }
    }

    /// The first `n` lines of the header's stripe table.
    pub(crate) fn stripe_lines(&self, n: usize) -> &[super::stripes::StripeLine] {
        use crate::format::offsets::{STRIPE_LINE, STRIPES};
        assert!(STRIPES + n * STRIPE_LINE <= HEADER_SIZE);
        // SAFETY: as for `u64_at`: the lines lie in the mapped header page, 64-aligned in a
        // page-aligned mapping, and `StripeLine` is only atomics, accessed atomically by every
        // process (Relaxed loads only through a read-only mapping).
        unsafe { std::slice::from_raw_parts(self.base.add(STRIPES).cast(), n) }
    }

    /// The 4-byte header word at `offset`.
    pub(crate) fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= HEADER_SIZE);
        // SAFETY: as for `u64_at`.
        unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) }
    }

    /// The 4-byte word at `offset` (anywhere in the mapping).
    pub(crate) fn u32_word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len);
        // SAFETY: inside the mapping (checked), 4-aligned in a page-aligned mapping, alive for
        // `&self`; every process accesses it only atomically, and on a read-only mapping the
        // crate only loads through it (Relaxed), as for `u64_at`.
        unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) }
    }

    /// The 8-byte word at `offset` (anywhere in the mapping).
    pub(crate) fn u64_word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.len);
        // SAFETY: as for `u32_word`, with 8-byte alignment.
        unsafe { AtomicU64::from_ptr(self.base.add(offset).cast()) }
    }

    /// `count` values of `R` from `offset`.
    ///
    /// # Safety
    /// `R` is `repr(C)` and made only of `AtomicU64`s (so any bytes are a valid `R` and every
    /// access to it is atomic).
    pub(crate) unsafe fn atomic_structs<R>(&self, offset: usize, count: usize) -> &[R] {
        let end = count
            .checked_mul(size_of::<R>())
            .and_then(|n| n.checked_add(offset))
            .expect("struct range overflows");
        assert!(
            offset.is_multiple_of(8) && end <= self.len,
            "structs {offset}..{end}"
        );
        debug_assert!(align_of::<R>() <= 8);
        // SAFETY: inside the mapping and aligned (checked), alive for `&self`; the caller
        // vouches that `R` is made of atomics, which every process uses only atomically (on a
        // read-only mapping the crate only loads through them, Relaxed, as for `u64_at`).
        unsafe { std::slice::from_raw_parts(self.base.add(offset).cast::<R>(), count) }
    }

    /// Pointer to byte `offset` of the mapping.
    ///
    /// # Panics
    /// If `offset` is past the end.
    pub(crate) fn ptr_at(&self, offset: usize) -> *mut u8 {
        assert!(offset <= self.len);
        // SAFETY: inside (or one past) the mapping.
        unsafe { self.base.add(offset) }
    }

    /// Start of the data area (page aligned). Valid for `len - HEADER_SIZE` bytes.
    pub(crate) fn data_ptr(&self) -> *mut u8 {
        // SAFETY: `len >= HEADER_SIZE`, so the result is inside (or one past) the mapping.
        unsafe { self.base.add(HEADER_SIZE) }
    }

    /// Writes the dirty pages of bytes `offset..offset + len` back to the file and waits
    /// (msync of the pages that hold them). A no-op for read-only mappings.
    pub(crate) fn flush_range(&self, offset: usize, len: usize) -> io::Result<()> {
        crate::fault::step(crate::fault::Step::Sync)?;
        #[cfg(test)]
        mirror::copy(self, offset, len);
        match &self._map {
            MapKind::ReadWrite(m) => m.flush_range(offset, len),
            MapKind::ReadOnly(_) => Ok(()),
        }
    }

    /// Drops this process's page-table entries for the pages that hold bytes
    /// `offset..offset + len` (`MADV_DONTNEED`), so they no longer count in its resident
    /// memory. The mapping is shared and file-backed: nothing is lost (dirty pages are in the
    /// page cache, bound for the file), and the next access maps them again from the cache.
    pub(crate) fn release(&self, offset: usize, len: usize) {
        const PAGE: usize = 4096;
        let start = offset / PAGE * PAGE;
        let end = offset
            .saturating_add(len)
            .min(self.len)
            .next_multiple_of(PAGE)
            .min(self.len);
        if end <= start {
            return;
        }
        // SAFETY: the range lies inside this mapping (clamped to its length, page aligned from
        // its page-aligned base); MADV_DONTNEED on a shared file mapping only drops page-table
        // entries, every access through atomics re-faults the page from the page cache.
        let _ = unsafe {
            rustix::mm::madvise(
                self.base.add(start).cast(),
                end - start,
                rustix::mm::Advice::LinuxDontNeed,
            )
        };
    }

    /// Writes dirty pages back to the file and waits (msync). A no-op for read-only mappings.
    pub(crate) fn flush(&self) -> io::Result<()> {
        match &self._map {
            MapKind::ReadWrite(m) => m.flush(),
            MapKind::ReadOnly(_) => Ok(()),
        }
    }
}

/// Tests of what reaches the disk: while a thread has a mirror file set, every
/// [`Mapping::flush_range`] of it also copies the bytes it syncs into the mirror at the same
/// offsets. The mirror is then the disk as a machine crash would leave it (only what was
/// synced), without crashing the machine.
#[cfg(test)]
pub(crate) mod mirror {
    use std::cell::RefCell;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    thread_local! {
        static MIRROR: RefCell<Option<File>> = const { RefCell::new(None) };
        static LOG: RefCell<Vec<(usize, usize, u64)>> = const { RefCell::new(Vec::new()) };
    }

    /// Mirrors this thread's syncs into `file` (or stops, with `None`), and starts a new log.
    pub(crate) fn set(file: Option<File>) {
        MIRROR.with(|m| *m.borrow_mut() = file);
        LOG.with(|l| l.borrow_mut().clear());
    }

    /// The syncs mirrored since the last [`set`] or `take_log`, in order: offset, length, and
    /// the header's sequence word at the time.
    pub(crate) fn take_log() -> Vec<(usize, usize, u64)> {
        LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }

    pub(super) fn copy(map: &super::Mapping, offset: usize, len: usize) {
        MIRROR.with(|m| {
            if let Some(file) = m.borrow().as_ref() {
                let sequence = map
                    .u64_at(crate::format::offsets::SEQUENCE)
                    .load(std::sync::atomic::Ordering::Relaxed);
                LOG.with(|l| l.borrow_mut().push((offset, len, sequence)));
                // SAFETY: `offset..offset + len` is inside the mapping (the caller's range).
                let bytes = unsafe { std::slice::from_raw_parts(map.base.add(offset), len) };
                file.write_all_at(bytes, offset as u64)
                    .expect("mirror write");
            }
        });
    }
}
