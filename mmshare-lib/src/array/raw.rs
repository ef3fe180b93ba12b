//! [`RawArray`]: an array file mapped into this process, read and written as bytes through the
//! seqlock. The typed [`crate::Array`] is a thin layer over it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::Duration;

use crate::array::control::ArrayControl;
use crate::array::mapping::Mapping;
use crate::array::region::Region;
use crate::array::seqlock::{self, end_write, read_begin, read_validate, try_begin_write};
use crate::array::striped::StripedHold;
use crate::backoff::Backoff;
use crate::error::{OpenError, ReadError, WaitTimeout, WriteError};
use crate::fault;
use crate::format::{
    FLAG_TORN, FormatError, HEADER_SIZE, Header, Kind, now_ns, offsets, padded_len,
};
use crate::sys::{Liveness, ProcessId};

/// Default bound on how long a read or a write waits for the other side.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a handle may use the array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read-only mapping: consistent reads, waiting for versions. Stores are impossible.
    Read,
    /// Read-write mapping: everything `Read` allows, plus writes and recovery.
    Write,
}

/// What a successful consistent read saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The version the copy belongs to (`sequence / 2`).
    pub version: u64,
    /// Whether that version is marked TORN (only `true` when the handle accepts torn data).
    pub torn: bool,
}

/// The result of [`RawArray::recover_dead_writer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// No write was in progress; nothing to do.
    NotHeld,
    /// The recorded writer process still runs; nothing was changed.
    WriterAlive(ProcessId),
    /// A write is in progress but no writer is recorded yet (it is between taking the write
    /// side and recording itself, or died exactly there). Nothing was changed; ask again later
    /// or decide from outside (the daemon knows which connection held write access).
    WriterUnknown {
        /// The odd sequence seen.
        sequence: u64,
    },
    /// The writer was dead: the array is now marked TORN, the write side released, and waiting
    /// readers were woken.
    Recovered {
        /// The dead writer.
        writer: ProcessId,
        /// The version published by the recovery.
        version: u64,
    },
}

thread_local! {
    /// A per-call timeout set by [`RawArray::with_timeout`]: the handle's address and the
    /// timeout.
    static TIMEOUT_OVERRIDE: std::cell::Cell<Option<(usize, Duration)>> =
        const { std::cell::Cell::new(None) };
}

/// An array file mapped into this process, accessed as bytes.
///
/// Every method is safe to call from any thread; reads and writes go through the seqlock
/// (module `seqlock`), so they are consistent with other processes mapping the same file.
#[derive(Debug)]
pub struct RawArray {
    map: Mapping,
    header: Header,
    file: File,
    timeout: Duration,
    accept_torn: bool,
    /// Drop the pages of each range read or written from resident memory afterwards
    /// ([`RawArray::set_release_pages`]).
    release_pages: bool,
    retries: AtomicU64,
    /// The array's control file (sleeper count), when there is one.
    control: Option<ArrayControl>,
    /// The writer registration this handle holds (slot, and the identity word of the process
    /// that registered: a forked child's copy leaves it alone).
    writer_slot: Option<(usize, u64)>,
}

impl RawArray {
    /// Opens and maps the array file at `path`.
    ///
    /// # Errors
    /// [`OpenError::Io`] if the file cannot be opened or mapped, [`OpenError::Format`] if it is
    /// not a valid v1 array file (each defect has its own [`FormatError`]).
    pub fn open(path: impl AsRef<Path>, access: Access) -> Result<RawArray, OpenError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(access == Access::Write)
            .open(path)
            .map_err(|source| OpenError::Io {
                path: path.to_owned(),
                source,
            })?;
        let mut raw = Self::from_file_at(file, access, path.to_owned())?;
        // A participant by path is one too: the daemon, which holds nothing open of an array
        // nobody uses, looks for this lock to see that someone does (docs/FORMAT.md).
        let _ = crate::sys::hold_participant_lock(&raw.file);
        raw.control = ArrayControl::open_beside(path);
        if access == Access::Write {
            raw.register_writer();
        }
        Ok(raw)
    }

    /// Registers this write handle as a writer of its process (docs/FORMAT.md, "A writer
    /// that dies mid-write"): an exclusive OFD lock on the byte of a free registration slot of
    /// the header (`WRITER_SLOTS`), then the process's identity word in that slot, both kept
    /// until the handle goes. Only a read-write description can take an exclusive lock and
    /// only writers map the header read-write, so no reader can forge a registration. A
    /// recovery then tells whether a recorded writer lives by the kernel's word rather than by
    /// `/proc`: right across pid namespaces, and after an `exec`. Clients do it for every
    /// handle opened for writing. Nothing happens for a read-only handle, when every slot is
    /// taken, without OFD locks, or without a start time in the process's identity.
    pub fn register_writer(&mut self) {
        let me = ProcessId::current();
        if !self.map.writable() || self.writer_slot.is_some() || me.start_time == 0 {
            return;
        }
        for k in 0..WRITER_SLOT_COUNT {
            match crate::sys::try_lock_byte(&self.file, writer_slot_offset(k) as u64) {
                Ok(true) => {
                    self.writer_slot_word(k)
                        .store(me.to_word(), Ordering::Release);
                    self.writer_slot = Some((k, me.to_word()));
                    return;
                }
                Ok(false) => {}
                Err(_) => return,
            }
        }
    }

    fn writer_slot_word(&self, k: usize) -> &AtomicU64 {
        self.map.u64_at(writer_slot_offset(k))
    }

    /// What the writer registrations say of the process whose identity word is `writer`:
    /// alive if a slot names it and a writer's exclusive lock is held on it (by another
    /// description than this handle's, or by this handle itself); dead if slots name it and
    /// none is locked (every write handle of that process is gone: it died, or exec'd); `None`
    /// if no slot names it (it wrote unregistered), if its identity has no start time, or if
    /// the locks cannot be told (no OFD locks, or a reader's shared lock on the byte).
    fn writer_liveness(&self, writer: u64) -> Option<Liveness> {
        if ProcessId::from_word(writer).is_none_or(|w| w.start_time == 0) {
            return None;
        }
        let mut named = false;
        for k in 0..WRITER_SLOT_COUNT {
            if self.writer_slot_word(k).load(Ordering::Acquire) != writer {
                continue;
            }
            if self.writer_slot.is_some_and(|(own, _)| own == k) {
                return Some(Liveness::Alive);
            }
            match crate::sys::write_locked(&self.file, writer_slot_offset(k) as u64) {
                Ok(Some(true)) => return Some(Liveness::Alive),
                // Unlocked, and still naming it: a handle that goes clears its slot before it
                // unlocks, so a slot seen unlocked while it still names `writer` is one whose
                // handle died with its process.
                Ok(Some(false)) => {
                    named |= self.writer_slot_word(k).load(Ordering::Acquire) == writer;
                }
                Ok(None) | Err(_) => return None,
            }
        }
        named.then_some(Liveness::Dead)
    }

    /// Maps an already open array file and its control file (as the daemon hands them out).
    /// A `control` that is not an array control file is ignored.
    ///
    /// # Errors
    /// As [`RawArray::from_file`].
    pub fn from_files(
        file: File,
        control: Option<File>,
        access: Access,
    ) -> Result<RawArray, OpenError> {
        let mut raw = Self::from_file(file, access)?;
        raw.control = control.and_then(ArrayControl::map);
        Ok(raw)
    }

    /// Whether the truncation guard ([`crate::guard_mappings_against_truncation`], which the
    /// daemon installs) caught an access of this handle past the end of the file: someone
    /// truncated it. Always false in a process without the guard.
    pub fn truncated_under_guard(&self) -> bool {
        self.map.truncated()
    }

    /// Whether this handle has the array's control file, so that its waits register as
    /// sleepers and its writes wake only when someone sleeps.
    pub fn has_control(&self) -> bool {
        self.control.is_some()
    }

    fn sleepers(&self) -> Option<&AtomicU32> {
        self.control.as_ref().map(ArrayControl::sleepers)
    }

    /// Takes back the sleeper count of waiters that died asleep: `SLEEPERS` is set to 0 when
    /// no process holds the sleepers' presence lock (module `array::control`), so that writes stop
    /// calling `FUTEX_WAKE` for nobody. Returns whether it changed anything. The daemon runs
    /// it with its periodic check.
    pub fn heal_sleepers(&self) -> bool {
        self.control
            .as_ref()
            .is_some_and(ArrayControl::heal_sleepers)
    }

    /// Maps an already open array file (for example a descriptor received from the daemon).
    ///
    /// The header is read with `pread` and validated before anything is mapped, and only the
    /// bytes the header declares are mapped, after checking that the file holds them.
    ///
    /// # Errors
    /// As [`RawArray::open`]; `Access::Write` on a descriptor opened read-only is an
    /// [`OpenError::Io`] (`EACCES`).
    pub fn from_file(file: File, access: Access) -> Result<RawArray, OpenError> {
        Self::from_file_at(file, access, PathBuf::from("<descriptor>"))
    }

    fn from_file_at(file: File, access: Access, path: PathBuf) -> Result<RawArray, OpenError> {
        let io_err = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        let format_err = |source| OpenError::Format {
            path: path.clone(),
            source,
        };
        let size = file.metadata().map_err(io_err)?.len();
        let mut page = vec![0u8; HEADER_SIZE];
        let got = read_up_to(&file, &mut page).map_err(io_err)?;
        let mut header = Header::decode(&page[..got]).map_err(format_err)?;
        if header.kind != Kind::Array {
            return Err(OpenError::NotAnArray {
                path,
                kind: header.kind.name(),
            });
        }
        header.check_file_len(size).map_err(format_err)?;
        let records = header.read_extensions(&file).map_err(format_err)?;
        header.apply_extensions(&records).map_err(format_err)?;
        let unknown = header.features.unknown_ro_compat();
        if access == Access::Write && unknown != 0 {
            return Err(format_err(FormatError::ReadOnlyFeatures { unknown }));
        }
        let len = usize::try_from(header.file_len()).map_err(|_| {
            format_err(FormatError::FileTooShort {
                size,
                needed: header.file_len(),
            })
        })?;
        let map = Mapping::map(&file, len, access == Access::Write).map_err(io_err)?;
        Ok(RawArray {
            map,
            header,
            file,
            timeout: DEFAULT_TIMEOUT,
            accept_torn: false,
            release_pages: false,
            retries: AtomicU64::new(0),
            control: None,
            writer_slot: None,
        })
    }

    /// The immutable header: name, dtype, shape, order, sizes, owner.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The open file behind the mapping.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// How this handle was opened.
    pub fn access(&self) -> Access {
        if self.map.writable() {
            Access::Write
        } else {
            Access::Read
        }
    }

    /// Sets how long reads and writes wait for the other side before they report a timeout
    /// (default [`DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs `f` with this handle's reads and writes waiting at most `timeout` instead of the
    /// handle's own, on this thread only (other threads using the handle meanwhile keep
    /// theirs): for callers that share one handle between threads with per-call timeouts.
    pub fn with_timeout<R>(&self, timeout: Duration, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<(usize, Duration)>);
        impl Drop for Restore {
            fn drop(&mut self) {
                TIMEOUT_OVERRIDE.with(|o| o.set(self.0));
            }
        }
        let me = std::ptr::from_ref(self) as usize;
        let _restore = Restore(TIMEOUT_OVERRIDE.with(|o| o.replace(Some((me, timeout)))));
        f()
    }

    /// The timeout in force for this handle on this thread.
    pub(super) fn timeout(&self) -> Duration {
        let me = std::ptr::from_ref(self) as usize;
        match TIMEOUT_OVERRIDE.with(std::cell::Cell::get) {
            Some((handle, timeout)) if handle == me => timeout,
            _ => self.timeout,
        }
    }

    /// Chooses whether reads of a TORN array succeed (reporting `torn: true` in the
    /// [`Snapshot`]) or fail with [`ReadError::Torn`] (the default).
    pub fn set_accept_torn(&mut self, accept: bool) {
        self.accept_torn = accept;
    }

    /// Reader retries so far on this handle: copies thrown away because a write overlapped.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub(super) fn seq(&self) -> &AtomicU64 {
        self.map.u64_at(offsets::SEQUENCE)
    }

    fn futex(&self) -> &AtomicU32 {
        self.map.u32_at(offsets::FUTEX)
    }

    pub(super) fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// One step of `backoff` while waiting for the array's futex word to leave `futex_seen`:
    /// false once the time is up.
    pub(super) fn pause(&self, backoff: &mut Backoff, futex_seen: u32) -> bool {
        backoff.pause(self.futex(), futex_seen, self.control.as_ref())
    }

    pub(super) fn count_retries(&self, retries: u64) {
        if retries > 0 {
            self.retries.fetch_add(retries, Ordering::Relaxed);
        }
    }

    pub(super) fn accepts_torn(&self) -> bool {
        self.accept_torn
    }

    fn flags(&self) -> &AtomicU32 {
        self.map.u32_at(offsets::FLAGS)
    }

    /// The raw sequence counter (odd while a write is in progress). In a striped array it is
    /// the generation, which is always even: each stripe has its own sequence.
    pub fn sequence(&self) -> u64 {
        // Relaxed: a momentary value for display and polling; consistent reads use the seqlock.
        self.seq().load(Ordering::Relaxed)
    }

    /// The sequence with acquire ordering if no write holds the array (`Err` with the odd
    /// value while one does); in a striped array the generation, whose low bit means nothing
    /// (a write is counted in it while it holds its stripes, and a scribbled odd value must not
    /// stall every reader and waiter for good).
    pub(super) fn stable_sequence(&self) -> Result<u64, u64> {
        if self.is_striped() {
            let g = self.seq().load(Ordering::Relaxed);
            // Acquire fence: as in `read_begin`, valid on read-only memory.
            fence(Ordering::Acquire);
            return Ok(g);
        }
        read_begin(self.seq())
    }

    /// The current version: `sequence / 2`, the number of completed writes and recoveries.
    pub fn version(&self) -> u64 {
        self.sequence() / 2
    }

    /// Whether the array is marked TORN right now.
    pub fn is_torn(&self) -> bool {
        if self.is_striped() {
            return self.any_stripe_torn();
        }
        // Relaxed: an instantaneous status; reads check TORN inside the seqlock.
        self.flags().load(Ordering::Relaxed) & FLAG_TORN != 0
    }

    /// Completed writes (a statistic; not part of the consistency protocol). In a striped
    /// array, each write counts in its first stripe's line: the sum of those and the header's.
    pub fn write_count(&self) -> u64 {
        // Relaxed: statistic only.
        let header = self
            .map
            .u64_at(offsets::WRITE_COUNT)
            .load(Ordering::Relaxed);
        if !self.is_striped() {
            return header;
        }
        self.lines()
            .iter()
            .map(|l| l.writes.load(Ordering::Relaxed))
            .fold(header, u64::wrapping_add)
    }

    /// Time of the last completed write, ns since the Unix epoch (0 if never written); in a
    /// striped array the latest of its stripes' and the header's.
    pub fn last_write_ns(&self) -> u64 {
        // Relaxed: statistic only.
        let header = self
            .map
            .u64_at(offsets::LAST_WRITE_NS)
            .load(Ordering::Relaxed);
        if !self.is_striped() {
            return header;
        }
        self.lines()
            .iter()
            .map(|l| l.last_write_ns.load(Ordering::Relaxed))
            .fold(header, u64::max)
    }

    /// The process recorded as holding the write side, if any.
    pub fn writer(&self) -> Option<ProcessId> {
        if self.is_striped() {
            return self.first_stripe_writer();
        }
        // Relaxed: advisory, for error messages (recovery claims it with a CAS).
        ProcessId::from_word(self.writer_word().load(Ordering::Relaxed))
    }

    fn writer_word(&self) -> &AtomicU64 {
        self.map.u64_at(offsets::WRITER)
    }

    /// The futex word's value, read before the sequence: if a publish happens after this read,
    /// the word differs and a futex sleep on this value returns at once.
    pub(super) fn futex_snapshot(&self) -> u32 {
        let f = self.futex().load(Ordering::Relaxed);
        // Acquire fence: keeps the sequence load that follows after this load even on weakly
        // ordered CPUs; otherwise a waiter could pair an old odd sequence with an already
        // bumped futex value and sleep through the wake. Pairs with the Release `fetch_add` in
        // `wake`.
        fence(Ordering::Acquire);
        f
    }

    /// Writes dirty pages of a read-write mapping to the file (msync) and waits for it.
    ///
    /// # Errors
    /// The OS error from msync.
    pub fn flush(&self) -> std::io::Result<()> {
        self.map.flush()
    }

    /// The start of a write of `len` bytes at `offset`, and whether it covers the whole data.
    fn write_range(&self, offset: u64, len: usize) -> Result<(usize, bool), WriteError> {
        let start = self
            .check_bytes(offset, len as u64)
            .ok_or(WriteError::OutOfBounds {
                start: offset,
                end: offset.saturating_add(len as u64),
                len: self.header.data_len,
            })?;
        Ok((start, offset == 0 && len as u64 == self.header.data_len))
    }

    fn check_bytes(&self, offset: u64, len: u64) -> Option<usize> {
        let end = offset.checked_add(len)?;
        (end <= self.header.data_len).then_some(offset as usize)
    }

    /// Runs `attempt` inside the seqlock read protocol until it validates, and returns its value.
    ///
    /// `attempt` gets the data pointer and the even sequence; it must only load (atomically).
    /// With `once`, a failed validation is reported as [`ReadError::Conflict`] instead of
    /// retried.
    ///
    /// A panic in `attempt` is caught and judged like its result: if a write overlapped, the
    /// panic may come from torn data and is thrown away with the copy (retried, or `Conflict`);
    /// if the snapshot validates, the data was consistent and the panic is the caller's own,
    /// so it continues unwinding.
    pub(crate) fn read_protocol<R>(
        &self,
        once: bool,
        mut attempt: impl FnMut(*const u8, u64) -> R,
    ) -> Result<(R, Snapshot), ReadError> {
        if self.is_striped() {
            return self.read_stripes(once, 0..self.header.data_len, attempt);
        }
        let mut backoff = Backoff::new(self.timeout());
        let mut retries = 0u64;
        loop {
            let futex_seen = self.futex_snapshot();
            let s = match read_begin(self.seq()) {
                Ok(s) => s,
                Err(odd) => {
                    if !backoff.pause(self.futex(), futex_seen, self.control.as_ref()) {
                        return Err(self.read_timeout(&backoff, odd, retries));
                    }
                    continue;
                }
            };
            let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                attempt(self.map.data_ptr(), s)
            }));
            // Relaxed: ordered by the fence in `read_validate`, and written only under the
            // odd sequence, so a validated copy sees the flags of its own version.
            let flags = self.flags().load(Ordering::Relaxed);
            if read_validate(self.seq(), s) || fault::skip_recheck() {
                let value = value.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                if retries > 0 {
                    self.retries.fetch_add(retries, Ordering::Relaxed);
                }
                let torn = flags & FLAG_TORN != 0;
                if torn && !self.accept_torn {
                    return Err(ReadError::Torn { version: s / 2 });
                }
                return Ok((
                    value,
                    Snapshot {
                        version: s / 2,
                        torn,
                    },
                ));
            }
            retries += 1;
            if once {
                self.retries.fetch_add(retries, Ordering::Relaxed);
                return Err(ReadError::Conflict {
                    seen: s,
                    now: self.sequence(),
                });
            }
            if !backoff.pause(self.futex(), futex_seen, self.control.as_ref()) {
                return Err(self.read_timeout(&backoff, self.sequence(), retries));
            }
        }
    }

    pub(super) fn read_timeout(&self, backoff: &Backoff, sequence: u64, retries: u64) -> ReadError {
        self.retries.fetch_add(retries, Ordering::Relaxed);
        ReadError::Timeout {
            waited: backoff.elapsed(),
            sequence,
            retries,
            writer: self.writer(),
        }
    }

    /// After each read or write of a range or region through this handle (`read_bytes`,
    /// `write_bytes`, the region calls, the typed handle's region calls), drop the pages it
    /// touched from this process's resident memory (`MADV_DONTNEED`; nothing is lost: the
    /// mapping is shared and file-backed). For arrays larger than RAM read and written by
    /// region: resident memory then stays near one region's size, whatever the bytes touched,
    /// at the cost of mapping a page again when a range is touched again. Off by default.
    pub fn set_release_pages(&mut self, release: bool) {
        self.release_pages = release;
    }

    /// Drops the pages of the data bytes `bytes` from resident memory, if this handle was
    /// asked to ([`RawArray::set_release_pages`]); passes `result` on.
    pub(super) fn released<R>(&self, bytes: std::ops::Range<u64>, result: R) -> R {
        if self.release_pages {
            let offset = self.header.data_offset + bytes.start;
            self.map.release(
                offset as usize,
                bytes.end.saturating_sub(bytes.start) as usize,
            );
        }
        result
    }

    /// Copies `dst.len()` bytes starting at byte `offset` of the data into `dst`, as one
    /// consistent snapshot.
    ///
    /// # Errors
    /// [`ReadError::OutOfBounds`] (in bytes) if the range is not inside the data;
    /// [`ReadError::Torn`] if the array is torn and the handle does not accept that;
    /// [`ReadError::Timeout`] if no consistent copy could be made in time.
    pub fn read_bytes(&self, offset: u64, dst: &mut [u8]) -> Result<Snapshot, ReadError> {
        self.read_bytes_to(offset, dst, seqlock::Dest::Reused)
    }

    /// [`RawArray::read_bytes`] into memory allocated for this copy and not touched yet (a
    /// new buffer): a big copy then stores through the cache, where the kernel has just
    /// zeroed each new page, instead of streaming past it as it does into a buffer used
    /// before. The bytes copied are the same.
    ///
    /// # Errors
    /// As [`RawArray::read_bytes`].
    pub fn read_bytes_fresh(&self, offset: u64, dst: &mut [u8]) -> Result<Snapshot, ReadError> {
        self.read_bytes_to(offset, dst, seqlock::Dest::Fresh)
    }

    fn read_bytes_to(
        &self,
        offset: u64,
        dst: &mut [u8],
        dest: seqlock::Dest,
    ) -> Result<Snapshot, ReadError> {
        let start = self
            .check_bytes(offset, dst.len() as u64)
            .ok_or(ReadError::OutOfBounds {
                start: offset,
                end: offset.saturating_add(dst.len() as u64),
                len: self.header.data_len,
            })?;
        let end = offset + dst.len() as u64;
        let copy = |data, _| {
            // SAFETY: the data area is mapped for `padded_len(data_len)` bytes (checked at open)
            // and the range is inside `data_len`; all shared accesses are atomic words.
            unsafe { seqlock::load_bytes_to(data, start, dst, dest) }
        };
        // A striped array's read takes only the stripes of the range.
        let got = if self.is_striped() {
            self.read_stripes(false, offset..end, copy)
        } else {
            self.read_protocol(false, copy)
        };
        self.released(offset..end, got).map(|(_, snap)| snap)
    }

    /// Takes the write side, runs `body`, then publishes. The building block of every write.
    ///
    /// `full` says the write replaces every byte, which clears TORN.
    pub(crate) fn write_protocol<R>(
        &self,
        full: bool,
        body: impl FnOnce(&WriteScope<'_>) -> R,
    ) -> Result<R, WriteError> {
        self.write_protocol_in(0..self.header.data_len, full, body)
    }

    /// [`RawArray::write_protocol`] for a write of the bytes `bytes` only: in a striped array
    /// it takes only their stripes (and `full` clears TORN only on the stripes they cover
    /// whole); an array with one sequence takes it whole.
    pub(crate) fn write_protocol_in<R>(
        &self,
        bytes: std::ops::Range<u64>,
        full: bool,
        body: impl FnOnce(&WriteScope<'_>) -> R,
    ) -> Result<R, WriteError> {
        self.write_protocol_covering(bytes, full, u32::MAX, body)
    }

    /// [`RawArray::write_protocol_in`], with `covered` limiting the stripes whose TORN mark
    /// the write may clear to those it replaces whole (bit `k` for stripe `k`; a region with
    /// gaps replaces fewer stripes than its span touches).
    pub(crate) fn write_protocol_covering<R>(
        &self,
        bytes: std::ops::Range<u64>,
        full: bool,
        covered: u32,
        body: impl FnOnce(&WriteScope<'_>) -> R,
    ) -> Result<R, WriteError> {
        if !self.map.writable() {
            return Err(WriteError::ReadOnly);
        }
        let (mut hold, holder) = self.acquire(bytes)?;
        if let Hold::Stripes(h) = &mut hold {
            h.restrict_covered(covered);
        }
        let scope = WriteScope {
            array: self,
            hold,
            holder,
            clear_torn: std::cell::Cell::new(full),
            mark_torn: std::cell::Cell::new(false),
        };
        // If `body` panics, dropping `scope` marks the array TORN and publishes, so the write
        // side is never left held by a live process.
        let value = body(&scope);
        // Disarm the guard *before* publishing, so nothing can publish this sequence twice.
        let scope = std::mem::ManuallyDrop::new(scope);
        match scope.publish(false) {
            Ok(_) => Ok(value),
            Err(lost) => {
                if !self.is_striped() {
                    self.mark_torn_after_loss();
                }
                Err(lost)
            }
        }
    }

    /// Takes the write side of the bytes `bytes`: the array's sequence, or in a striped array
    /// the stripes of those bytes. Returns the holding and the identity word recorded.
    fn acquire(&self, bytes: std::ops::Range<u64>) -> Result<(Hold, u64), WriteError> {
        let (hold, holder) = if self.is_striped() {
            // Before taking anything: the first call reads /proc.
            let me = ProcessId::current();
            let hold = self.acquire_stripes(bytes.clone(), me)?;
            (Hold::Stripes(Box::new(hold)), me.to_word())
        } else {
            let (s, holder) = self.acquire_write()?;
            (Hold::Whole(s), holder)
        };
        if self.header.is_sparse()
            && let Err(e) = self.fill_holes(&bytes)
        {
            // Nothing was written: published unchanged (sequences only grow), not torn.
            let _ = self.publish_hold(&hold, false, false, holder);
            return Err(e);
        }
        Ok((hold, holder))
    }

    /// Fills the holes among the data bytes `bytes` of a sparse array with zeros written by
    /// `pwrite`, so that the write about to store into them through the mapping finds its
    /// blocks allocated: a full disk is then this write's error, never a SIGBUS in the middle
    /// of it. (`fallocate` is not enough: a store into an allocated but unwritten extent may
    /// still need a block of the filesystem's own, on ext4 for one, and fail with SIGBUS.)
    ///
    /// Called with the bytes' write side held, so nobody else writes them meanwhile; a hole
    /// holds zeros, so writing zeros changes nothing readers can see. Ranges already
    /// allocated cost one `lseek`.
    fn fill_holes(&self, bytes: &std::ops::Range<u64>) -> Result<(), WriteError> {
        use rustix::fs::{SeekFrom, seek};
        static ZEROS: [u8; 65536] = [0; 65536];
        let base = self.header.data_offset;
        let (start, end) = (base + bytes.start, base + bytes.end);
        let no_space = |at: u64, e: std::io::Error| WriteError::NoSpace {
            offset: at - base,
            len: end - at,
            error: e.to_string(),
        };
        let mut at = start;
        while at < end {
            let hole = seek(&self.file, SeekFrom::Hole(at)).map_err(|e| no_space(at, e.into()))?;
            if hole >= end {
                break;
            }
            // The hole ends where data starts again (ENXIO: at the end of the file).
            let data = seek(&self.file, SeekFrom::Data(hole))
                .unwrap_or(end)
                .min(end);
            let mut off = hole;
            while off < data {
                let n = ((data - off) as usize).min(ZEROS.len());
                self.file
                    .write_all_at(&ZEROS[..n], off)
                    .map_err(|e| no_space(off, e))?;
                off += n as u64;
            }
            at = data;
        }
        Ok(())
    }

    /// Publishes the write held by `hold` (see [`RawArray::publish`]).
    fn publish_hold(
        &self,
        hold: &Hold,
        clear_torn: bool,
        mark_torn: bool,
        holder: u64,
    ) -> Result<u64, WriteError> {
        match hold {
            Hold::Whole(s) => self.publish(*s, clear_torn, mark_torn, holder),
            Hold::Stripes(h) => self.publish_stripes(h, clear_torn, mark_torn, holder),
        }
    }

    /// Writes `src` at byte `offset` of the data, under the seqlock.
    ///
    /// A write that covers the whole data area clears TORN; a partial one keeps it.
    ///
    /// # Errors
    /// [`WriteError::ReadOnly`], [`WriteError::OutOfBounds`] (in bytes), or
    /// [`WriteError::Timeout`] when the write side stays held.
    pub fn write_bytes(&self, offset: u64, src: &[u8]) -> Result<u64, WriteError> {
        let (start, _) = self.write_range(offset, src.len())?;
        // The range replaces all of its own bytes: in a striped array, that clears TORN on the
        // stripes it covers whole; with one sequence, only a write of everything does.
        let bytes = offset..offset + src.len() as u64;
        let full = self.is_striped() || bytes == (0..self.header.data_len);
        let written = self.write_protocol_in(bytes.clone(), full, |scope| {
            // SAFETY: the range is inside the writable data area and we hold the write side.
            unsafe { seqlock::store_bytes(scope.data_ptr(), start, src) };
            scope.version()
        });
        self.released(bytes, written)
    }

    /// Takes the write side: returns the even sequence it replaced and the identity word it
    /// recorded (which `publish` gives back).
    fn acquire_write(&self) -> Result<(u64, u64), WriteError> {
        // Before taking the lock: the first call reads /proc, which must not lengthen the time
        // the write side is held without an identity.
        self.acquire_write_as(ProcessId::current())
    }

    fn acquire_write_as(&self, me: ProcessId) -> Result<(u64, u64), WriteError> {
        let mut backoff = Backoff::new(self.timeout());
        loop {
            let futex_seen = self.futex_snapshot();
            match try_begin_write(self.seq()) {
                Ok(s) => {
                    self.record_writer(s, me)?;
                    if fault::early_publish() {
                        // The broken writer of the fault tests: it hands the write side back
                        // (identity, then sequence) before writing anything.
                        self.writer_word().store(0, Ordering::Relaxed);
                        let _ = end_write(self.seq(), s);
                    }
                    return Ok((s, me.to_word()));
                }
                Err(seen) if seen & 1 == 1 => {
                    if !backoff.pause(self.futex(), futex_seen, self.control.as_ref()) {
                        return Err(WriteError::Timeout {
                            waited: backoff.elapsed(),
                            sequence: seen,
                            writer: self.writer(),
                        });
                    }
                }
                // Another writer won the race from the same even value: try again at once.
                Err(_) => std::hint::spin_loop(),
            }
        }
    }

    /// Records this process as the holder of the write side it just took (replacing even `s`).
    ///
    /// The word is 0 whenever the sequence is even (`publish` clears it, by CAS, before its
    /// Release publish), so the CAS from 0 fails only while a recovery has claimed the word:
    /// see [`RawArray::swap_identity`].
    fn record_writer(&self, s: u64, me: ProcessId) -> Result<(), WriteError> {
        self.record_writer_on(self.writer_word(), self.seq(), s, me.to_word())
            .map_err(|found| WriteError::LostWriteSide {
                sequence: s.wrapping_add(1),
                found,
            })
    }

    /// Records identity `me` in `writer` for the sequence word `seq` (the array's or a
    /// stripe's) just taken from even `s`; `Err` with the sequence found if the write side was
    /// lost before that.
    ///
    /// A writer that stalled between its sequence CAS and here for the 2 s after which an
    /// unidentified write is taken over finds the word free again once that recovery has
    /// published: the sequence tells. It hands the word back and stops before writing.
    pub(super) fn record_writer_on(
        &self,
        writer: &AtomicU64,
        seq: &AtomicU64,
        s: u64,
        me: u64,
    ) -> Result<(), u64> {
        self.swap_identity_on(writer, seq, s, 0, me)?;
        // Relaxed: the CAS above ordered this after the claim it could have lost to.
        let now = seq.load(Ordering::Relaxed);
        if now != s.wrapping_add(1) && !fault::skip_identity_recheck() {
            let _ = writer.compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
            return Err(now);
        }
        Ok(())
    }

    /// The holder of odd `s + 1` moves the identity word from `from` to `to` by CAS.
    fn swap_identity(&self, s: u64, from: u64, to: u64) -> Result<(), WriteError> {
        self.swap_identity_on(self.writer_word(), self.seq(), s, from, to)
            .map_err(|found| WriteError::LostWriteSide {
                sequence: s.wrapping_add(1),
                found,
            })
    }

    /// The holder of a sequence word `seq` (the array's, or a stripe's) at odd `s + 1` moves
    /// its identity word `writer` from `from` to `to` by CAS; `Err` with the sequence found
    /// when the write side was lost.
    ///
    /// The CAS fails only while a recovery has claimed the word. A claim is always followed
    /// by one of two things, so wait (within the handle's timeout) to see which:
    /// - the recovery takes the write side over (the sequence leaves `s + 1`): this writer
    ///   lost it;
    /// - the recovery finds the sequence moved (it claimed on a stale look: the same identity
    ///   word recorded again by a later write of the same process, an ABA) and hands the word
    ///   back as it found it: the CAS then succeeds.
    ///
    /// Deciding "lost" on the first failure would leave `s + 1` held by nobody.
    pub(super) fn swap_identity_on(
        &self,
        writer: &AtomicU64,
        seq: &AtomicU64,
        s: u64,
        from: u64,
        to: u64,
    ) -> Result<(), u64> {
        let held = s.wrapping_add(1);
        // Made only once a CAS failed: the common case is one CAS, and reading the handle's
        // timeout (a thread-local override first) is not free on a write of a few bytes.
        let mut backoff: Option<Backoff> = None;
        loop {
            // AcqRel: the word's modification order decides who owns the write side (this
            // writer or a recoverer); the Release half also keeps this write's data stores
            // before a recoverer's successful claim of the word after our hand-over.
            if writer
                .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(());
            }
            let backoff = backoff.get_or_insert_with(|| Backoff::new(self.timeout()));
            // Relaxed: the claim's outcome shows in the sequence; the CAS above decides.
            let now = seq.load(Ordering::Relaxed);
            if now != held {
                return Err(now);
            }
            let futex_seen = self.futex_snapshot();
            if !self.pause(backoff, futex_seen) {
                // A recoverer claimed the word and stopped there (it died): leave the write
                // side to the recovery of that recoverer.
                return Err(now);
            }
        }
    }

    /// Makes the new state visible: writer cleared, statistics, TORN, sequence, futex wake.
    /// Returns the published version.
    ///
    /// `s` is the even sequence the holder replaced, `holder` the identity word it recorded.
    /// Both hand-overs are compare-and-swaps, so a holder whose write side was taken over by a
    /// recovery (which claims the identity word, then moves the sequence on) finds out here and
    /// changes nothing: not the flags (it would clear the recovery's TORN), not the sequence
    /// (it would move it backwards).
    ///
    /// # Errors
    /// [`WriteError::LostWriteSide`] when the write side was taken over.
    fn publish(
        &self,
        s: u64,
        clear_torn: bool,
        mark_torn: bool,
        holder: u64,
    ) -> Result<u64, WriteError> {
        let lost = |found| WriteError::LostWriteSide {
            sequence: s.wrapping_add(1),
            found,
        };
        // Give the identity up first, by CAS: a recovery claims this word (with a CAS) before
        // it takes the sequence over, so exactly one of the two wins. If we win, a recovery that
        // looks now sees no writer recorded (only the 2 s unidentified rule could act, and its
        // takeover then makes our sequence CAS below fail); if it won, we touch nothing more.
        if !fault::early_publish() {
            self.swap_identity(s, holder, 0)?;
        }
        if !mark_torn {
            // Relaxed: statistics, written only under the write side. Recoveries and panicked
            // writes are not completed writes.
            // Wrapping: the mapping may hold any value; nothing here may panic.
            let count = self.map.u64_at(offsets::WRITE_COUNT);
            count.store(
                count.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
            self.map
                .u64_at(offsets::LAST_WRITE_NS)
                .store(now_ns(), Ordering::Relaxed);
        }
        let flags = self.flags().load(Ordering::Relaxed);
        let new_flags = if mark_torn {
            flags | FLAG_TORN
        } else if clear_torn {
            flags & !FLAG_TORN
        } else {
            flags
        };
        // Relaxed: published by the Release CAS in `end_write`.
        self.flags().store(new_flags, Ordering::Relaxed);
        if !fault::early_publish() {
            end_write(self.seq(), s).map_err(lost)?;
        }
        self.wake();
        Ok(s.wrapping_add(2) / 2)
    }

    /// After losing the write side: takes it again (within the handle's timeout) and publishes
    /// TORN, so that the stores this writer made while it no longer held the write side
    /// cannot hide behind a version that a later whole write declared consistent. If the write
    /// side cannot be had, the recovery's own TORN mark stands.
    fn mark_torn_after_loss(&self) {
        if let Ok((s, holder)) = self.acquire_write() {
            let _ = self.publish(s, false, true, holder);
        }
    }

    pub(super) fn wake(&self) {
        // Release: a waiter that sees the new futex value also sees the new sequence. Pairs
        // with the Acquire fence in `futex_snapshot`.
        self.futex().fetch_add(1, Ordering::Release);
        if let Some(sleepers) = self.sleepers() {
            // Pairs with a waiter's fence after it counted itself (`Backoff::pause`): we see
            // it, or its FUTEX_WAIT sees the bump above and returns at once. With nobody
            // asleep, no system call.
            std::sync::atomic::fence(Ordering::SeqCst);
            if sleepers.load(Ordering::Relaxed) == 0 {
                return;
            }
        }
        crate::sys::futex_wake_all(self.futex());
    }

    /// Waits until a version newer than `newer_than` is published, and returns it.
    ///
    /// Spins for a few microseconds (frequent updates are seen at once), then yields, then
    /// sleeps on the shared futex word, so waiting on a quiet array costs no CPU. Works on
    /// read-only handles. A recovery after a dead writer also counts as a new version.
    ///
    /// # Errors
    /// [`WaitTimeout`] when `timeout` passes first.
    pub fn wait_for_version(&self, newer_than: u64, timeout: Duration) -> Result<u64, WaitTimeout> {
        let mut backoff = Backoff::new(timeout);
        loop {
            let futex_seen = self.futex_snapshot();
            if let Ok(s) = self.stable_sequence()
                && s / 2 > newer_than
            {
                return Ok(s / 2);
            }
            if !backoff.pause(self.futex(), futex_seen, self.control.as_ref()) {
                return Err(WaitTimeout {
                    newer_than,
                    current: self.version(),
                    waited: backoff.elapsed(),
                });
            }
        }
    }

    /// Releases the write side if the process holding it is dead, marking the array TORN.
    ///
    /// This is what the daemon runs when a writer's connection closes and periodically. It
    /// takes the write side over from the dead writer by moving the sequence from odd `s` to
    /// odd `s + 2` with a CAS (so two recoveries cannot both act, and a live writer is never
    /// disturbed), records itself as writer, sets TORN, and publishes `s + 3`, waking all
    /// waiters.
    ///
    /// On a striped array this is done for every stripe held by a dead writer (each one marked
    /// TORN, as [`RawArray::recover_stripe_judged`] does), and the answer sums them up: the
    /// last recovery if there was one, else the first stripe whose writer is unknown (with
    /// that stripe's sequence), else the first live writer, else [`Recovery::NotHeld`]. A
    /// caller that watches unidentified stripes asks stripe by stripe instead.
    ///
    /// # Errors
    /// [`WriteError::ReadOnly`] on a read-only handle.
    pub fn recover_dead_writer(&self) -> Result<Recovery, WriteError> {
        self.recover_dead_writer_judged(|writer| writer.liveness())
    }

    /// [`RawArray::recover_dead_writer`] with the caller's judgement of the recorded writer's
    /// liveness (for example [`ProcessId::liveness`] overruled by what the caller knows: the
    /// daemon knows which live processes hold write access, whatever pid namespace they
    /// recorded their pid in). Recovery acts only on [`Liveness::Dead`].
    ///
    /// # Errors
    /// [`WriteError::ReadOnly`] on a read-only handle.
    pub fn recover_dead_writer_judged(
        &self,
        judge: impl Fn(ProcessId) -> Liveness,
    ) -> Result<Recovery, WriteError> {
        if !self.is_striped() {
            return self.recover_stripe_judged(0, &judge);
        }
        let (mut recovered, mut unknown, mut alive) = (None, None, None);
        for k in 0..self.stripes() {
            match self.recover_stripe_judged(k, &judge)? {
                r @ Recovery::Recovered { .. } => recovered = Some(r),
                r @ Recovery::WriterUnknown { .. } => unknown = unknown.or(Some(r)),
                r @ Recovery::WriterAlive(_) => alive = alive.or(Some(r)),
                Recovery::NotHeld => {}
            }
        }
        Ok(recovered.or(unknown).or(alive).unwrap_or(Recovery::NotHeld))
    }

    /// [`RawArray::recover_dead_writer_judged`] for one stripe of a striped array (for an
    /// array with one sequence, stripe 0 is the array): if stripe `stripe` is held by a
    /// writer `judge` finds dead, takes it over, marks it TORN, counts the recovery as a new
    /// version and publishes the stripe. [`Recovery::WriterUnknown`] carries the stripe's own
    /// sequence. A stripe number past the last is [`Recovery::NotHeld`].
    ///
    /// # Errors
    /// [`WriteError::ReadOnly`] on a read-only handle.
    pub fn recover_stripe_judged(
        &self,
        stripe: u64,
        judge: impl Fn(ProcessId) -> Liveness,
    ) -> Result<Recovery, WriteError> {
        if !self.map.writable() {
            return Err(WriteError::ReadOnly);
        }
        let Some((seq, writer_word)) = self.stripe_words(stripe) else {
            return Ok(Recovery::NotHeld);
        };
        let me = ProcessId::current();
        // A lost race below means the state changed under us; look again (a few times at most:
        // each retry means another process made progress).
        for _ in 0..4 {
            // Acquire: synchronizes with the last publish (the holder's CAS continues its release
            // sequence), so the writer word below is the holder's or 0, never an older one.
            let s = seq.load(Ordering::Acquire);
            if s & 1 == 0 {
                return Ok(Recovery::NotHeld);
            }
            let word = writer_word.load(Ordering::Acquire);
            let Some(writer) = ProcessId::from_word(word) else {
                return Ok(Recovery::WriterUnknown { sequence: s });
            };
            // The writer's registration, when it made one, is the kernel's word; `judge` only
            // for writers that wrote unregistered.
            let registered = self.writer_liveness(word);
            match registered.unwrap_or_else(|| judge(writer)) {
                Liveness::Alive => return Ok(Recovery::WriterAlive(writer)),
                Liveness::Unknown => return Ok(Recovery::WriterUnknown { sequence: s }),
                Liveness::Dead => {}
            }
            if let Some(version) = self.take_over(stripe, s, word, me) {
                return Ok(Recovery::Recovered { writer, version });
            }
        }
        Ok(Recovery::WriterUnknown {
            sequence: seq.load(Ordering::Relaxed),
        })
    }

    /// The sequence and identity words of stripe `stripe` (of the array itself when it has
    /// one sequence and `stripe` is 0); `None` past the last stripe.
    fn stripe_words(&self, stripe: u64) -> Option<(&AtomicU64, &AtomicU64)> {
        if !self.is_striped() {
            return (stripe == 0).then(|| (self.seq(), self.writer_word()));
        }
        let line = self.lines().get(usize::try_from(stripe).ok()?)?;
        Some((&line.seq, &line.writer))
    }

    /// Stripe `stripe`'s sequence (odd while held) and recorded holder, right now; for an
    /// array with one sequence, stripe 0 is the array's sequence and writer. `None` past the
    /// last stripe.
    pub fn stripe_state(&self, stripe: u64) -> Option<(u64, Option<ProcessId>)> {
        let (seq, writer) = self.stripe_words(stripe)?;
        // Relaxed: a momentary value, for deciding whether to look closer.
        Some((
            seq.load(Ordering::Relaxed),
            ProcessId::from_word(writer.load(Ordering::Relaxed)),
        ))
    }

    /// Whether a write is in progress right now: the sequence is odd, or, on a striped
    /// array, some stripe's is.
    pub fn write_in_progress(&self) -> bool {
        (0..self.stripes()).any(|k| self.stripe_state(k).is_some_and(|(s, _)| s & 1 == 1))
    }

    /// The recovery itself, once the holder of stripe `stripe` at odd `s` (identity `word`, 0
    /// if none) is judged gone: claims the identity word, takes the write side over (`s` to
    /// `s + 2`), marks TORN, and publishes `s + 3`; on a striped array it counts the
    /// recovery in the generation before publishing. Returns the published version, or
    /// `None` if the state changed first (another recoverer claimed the word, or the holder
    /// recorded itself or published).
    fn take_over(&self, stripe: u64, s: u64, word: u64, me: ProcessId) -> Option<u64> {
        let (seq, writer) = self.stripe_words(stripe)?;
        // Claim the identity: of several recoverers, exactly one replaces it with its own; the
        // others then see a live recoverer and leave it alone. The holder's own CASes on this
        // word (recording itself, giving it up before publishing) fail from now on, so it can
        // no longer publish or change the flags.
        writer
            .compare_exchange(word, me.to_word(), Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        // Take the write side over: odd `s` to odd `s + 2`. Only the claimant gets here and the
        // holder cannot publish any more, so this fails only if the sequence moved before the
        // claim (the holder published): then there is nothing to recover. Acquire: see the
        // holder's stores before overwriting state.
        if seq
            .compare_exchange(s, s.wrapping_add(2), Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // The claim was made on a stale look (the holder published, and the word we
            // claimed may already be a later holder's: the same process records the same
            // word). Hand it back exactly as found; that holder waits for this in
            // `swap_identity_on`.
            let _ =
                writer.compare_exchange(me.to_word(), word, Ordering::AcqRel, Ordering::Relaxed);
            return None;
        }
        // Release fence: the TORN store below cannot become visible before `s + 2`, so a reader
        // that validated an older version never sees it (pairs with the reader's Acquire fence
        // in `read_validate`, as for writers).
        fence(Ordering::Release);
        if self.is_striped() {
            return Some(self.publish_recovered_stripe(stripe as usize, s, me.to_word()));
        }
        // Only the claimant publishes `s + 3`: it holds the identity word and `s + 2`.
        self.publish(s.wrapping_add(1), false, true, me.to_word())
            .ok()
    }
}

impl RawArray {
    /// Releases a write side that is held with **no writer recorded**, marking the array TORN.
    ///
    /// A writer records itself a few instructions after taking the write side, so an odd
    /// `sequence` that stays unidentified for seconds means the writer died in between. Only a
    /// caller that has watched it stay so (the daemon waits 2 s) should call this: a writer
    /// stopped (SIGSTOP) in exactly that window would otherwise lose its write side.
    ///
    /// Does nothing (returns [`Recovery::NotHeld`]) unless the sequence still equals
    /// `sequence` and no writer is recorded; if a writer recorded itself meanwhile, defers to
    /// [`RawArray::recover_dead_writer`]. On a striped array, whose stripes each have a
    /// sequence, use [`RawArray::recover_unidentified_stripe`]; this returns `NotHeld`.
    ///
    /// # Errors
    /// [`WriteError::ReadOnly`] on a read-only handle.
    pub fn recover_unidentified_writer(&self, sequence: u64) -> Result<Recovery, WriteError> {
        if self.is_striped() {
            if !self.map.writable() {
                return Err(WriteError::ReadOnly);
            }
            return Ok(Recovery::NotHeld);
        }
        self.recover_unidentified_stripe(0, sequence)
    }

    /// [`RawArray::recover_unidentified_writer`] for stripe `stripe` of a striped array (for
    /// an array with one sequence, stripe 0 is the array), whose own sequence the caller saw
    /// at `sequence` with no writer recorded.
    ///
    /// # Errors
    /// [`WriteError::ReadOnly`] on a read-only handle.
    pub fn recover_unidentified_stripe(
        &self,
        stripe: u64,
        sequence: u64,
    ) -> Result<Recovery, WriteError> {
        if !self.map.writable() {
            return Err(WriteError::ReadOnly);
        }
        let Some((seq, writer)) = self.stripe_words(stripe) else {
            return Ok(Recovery::NotHeld);
        };
        if sequence & 1 == 0 || seq.load(Ordering::Acquire) != sequence {
            return Ok(Recovery::NotHeld);
        }
        // A writer recorded itself after all: its liveness is for the caller to judge
        // (`recover_dead_writer` or the `_judged` variant), not for this unconditional takeover.
        if writer.load(Ordering::Acquire) != 0 {
            return Ok(Recovery::WriterUnknown { sequence });
        }
        match self.take_over(stripe, sequence, 0, ProcessId::current()) {
            Some(version) => Ok(Recovery::Recovered {
                writer: ProcessId {
                    pid: 0,
                    start_time: 0,
                },
                version,
            }),
            // The holder recorded itself (its liveness is the caller's to judge) or published.
            None if seq.load(Ordering::Relaxed) == sequence => {
                Ok(Recovery::WriterUnknown { sequence })
            }
            None => Ok(Recovery::NotHeld),
        }
    }
}

impl RawArray {
    /// A consistent read of any size, streamed: `f` pulls bytes through a [`ByteReader`] (for
    /// example chunk by chunk into a file). If a write overlapped, `f` runs again from the
    /// start, so it must be able to restart (truncate its output) and must not act on the bytes
    /// until this returns.
    ///
    /// # Errors
    /// [`ReadError::Torn`] (unless accepted) or [`ReadError::Timeout`].
    pub fn read_stream<R>(
        &self,
        mut f: impl FnMut(&ByteReader<'_>) -> R,
    ) -> Result<(R, Snapshot), ReadError> {
        let len = self.header.data_len;
        self.read_protocol(false, |data, _| {
            f(&ByteReader {
                data,
                len,
                region: None,
                _life: std::marker::PhantomData,
            })
        })
    }

    /// [`RawArray::read_stream`] for a region: `f` pulls the region's bytes (in the array's
    /// memory order) through a [`ByteReader`]; in a striped array only the region's stripes
    /// are validated. As there, `f` may run again from the start.
    ///
    /// # Errors
    /// [`ReadError::Region`] for a region of another array, [`ReadError::Torn`] (unless
    /// accepted) or [`ReadError::Timeout`].
    pub fn read_region_stream<R>(
        &self,
        region: &Region,
        mut f: impl FnMut(&ByteReader<'_>) -> R,
    ) -> Result<(R, Snapshot), ReadError> {
        region.check_for(&self.header)?;
        let len = region.byte_len();
        let attempt = |data, _| {
            f(&ByteReader {
                data,
                len,
                region: Some(region),
                _life: std::marker::PhantomData,
            })
        };
        let got = if self.is_striped() {
            self.read_stripes(false, region.span(), attempt)
        } else {
            self.read_protocol(false, attempt)
        };
        self.released(region.span(), got)
    }

    /// A write of any size, streamed: takes the write side, lets `f` write bytes through a
    /// [`ByteWriter`], then publishes. As for closure writes, a panic in `f` publishes TORN,
    /// and TORN is cleared only if `f` calls [`ByteWriter::clear_torn`].
    ///
    /// # Errors
    /// [`WriteError::ReadOnly`] or [`WriteError::Timeout`]; `f` did not run.
    pub fn write_stream<R>(&self, f: impl FnOnce(&ByteWriter<'_>) -> R) -> Result<R, WriteError> {
        let len = self.header.data_len;
        self.write_protocol(false, |scope| f(&ByteWriter { scope, len }))
    }
}

/// The write side of an array held across calls, for bindings that cannot run the write
/// inside a closure (Python's `with array.write() as view:`, a C caller's begin / commit).
/// Made by [`RawArray::begin_write`]; ended by [`RawArray::finish_write`], which must be
/// called exactly once (there is no `Drop` that publishes: a session that is forgotten leaves
/// the write side held until a recovery takes it over, as for a writer that died).
#[derive(Debug)]
#[must_use = "a write session holds the write side until finish_write"]
pub struct WriteSession {
    /// What the write holds.
    hold: Hold,
    /// The identity word recorded as the holder.
    holder: u64,
    /// The mapping it belongs to (checked by `finish_write`).
    data: *mut u8,
    /// Made by [`RawArray::begin_write_durable`]: `finish_write` syncs.
    durable: bool,
    /// Whether [`Finish::Repair`] may clear TORN: the write covers every byte it holds (in a
    /// striped array the hold itself says which stripes; with one sequence, only a write of
    /// the whole array may).
    repairs: bool,
}

// SAFETY: a session is plain numbers (the pointer is only compared, never dereferenced); the
// write side it stands for belongs to the process, not to a thread.
unsafe impl Send for WriteSession {}
// SAFETY: as above; `&WriteSession` gives access to nothing.
unsafe impl Sync for WriteSession {}

impl WriteSession {
    /// The version the write will publish.
    pub fn version(&self) -> u64 {
        self.hold.version()
    }
}

/// How a [`WriteSession`] ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The write completed; TORN stays as it was (a partial write cannot repair).
    Complete,
    /// The write completed and replaced every byte: TORN is cleared.
    Repair,
    /// The write failed part-way: the data may be half-written, so the version is published
    /// TORN (readers get [`ReadError::Torn`] until a repairing write).
    Torn,
}

impl RawArray {
    /// Takes the write side for a write made in place between this call and
    /// [`RawArray::finish_write`], through [`RawArray::data_ptr`].
    ///
    /// # Errors
    /// [`WriteError::ReadOnly`], [`WriteError::Timeout`] when the write side stays held,
    /// [`WriteError::LostWriteSide`] if a recovery took it over before this writer recorded
    /// itself (nothing may be written then).
    pub fn begin_write(&self) -> Result<WriteSession, WriteError> {
        if !self.map.writable() {
            return Err(WriteError::ReadOnly);
        }
        self.begin_write_covering(0..self.header.data_len, u32::MAX, true)
    }

    /// [`RawArray::begin_write`] for a region only: in a striped array it takes only the
    /// stripes of the region's span, so writers of other stripes go on at once. Write only
    /// inside the region (its runs, through [`RawArray::data_ptr`]). [`Finish::Repair`] clears
    /// TORN on the stripes the region covers whole; with one sequence, only if the region is
    /// the whole array.
    ///
    /// # Errors
    /// [`WriteError::Region`] for a region of another array, and the errors of
    /// [`RawArray::begin_write`].
    pub fn begin_write_region(&self, region: &Region) -> Result<WriteSession, WriteError> {
        region.check_for(&self.header)?;
        let covered = self.stripes_within(|stripe| region.covers(stripe));
        let full = region.byte_len() == self.header.data_len;
        self.begin_write_covering(region.span(), covered, full)
    }

    /// [`RawArray::begin_write`] for the data bytes `bytes` only, for bindings whose region is
    /// a foreign view (a NumPy basic index): `contiguous` says the write covers every byte of
    /// `bytes` (so [`Finish::Repair`] may clear TORN on the stripes inside them), `durable` as
    /// [`RawArray::begin_write_durable`]. Write only inside `bytes`.
    ///
    /// # Errors
    /// [`WriteError::OutOfBounds`] (in bytes) and the errors of [`RawArray::begin_write`] (and
    /// of [`RawArray::begin_write_durable`]).
    pub fn begin_write_span(
        &self,
        bytes: std::ops::Range<u64>,
        contiguous: bool,
        durable: bool,
    ) -> Result<WriteSession, WriteError> {
        if bytes.start > bytes.end || bytes.end > self.header.data_len {
            return Err(WriteError::OutOfBounds {
                start: bytes.start,
                end: bytes.end,
                len: self.header.data_len,
            });
        }
        let covered = if contiguous {
            self.stripes_within(|s| bytes.start <= s.start && s.end <= bytes.end)
        } else {
            0
        };
        let full = contiguous && bytes == (0..self.header.data_len);
        let session = self.begin_write_covering(bytes, covered, full)?;
        if durable {
            return self.make_durable(session);
        }
        Ok(session)
    }

    fn begin_write_covering(
        &self,
        bytes: std::ops::Range<u64>,
        covered: u32,
        full: bool,
    ) -> Result<WriteSession, WriteError> {
        if !self.map.writable() {
            return Err(WriteError::ReadOnly);
        }
        let (mut hold, holder) = self.acquire(bytes)?;
        if let Hold::Stripes(h) = &mut hold {
            h.restrict_covered(covered);
        }
        Ok(WriteSession {
            hold,
            holder,
            data: self.map.data_ptr(),
            durable: false,
            repairs: self.is_striped() || full,
        })
    }

    /// [`RawArray::begin_write`] for a **durable** write of a file-backed array: once
    /// [`RawArray::finish_write`] returns `Ok`, the new version is on disk, and a machine crash
    /// at any point before that leaves the file either at the old version or marked as
    /// mid-write, which the next open (the daemon's start, or a recovery) turns into TORN: a
    /// crash never leaves a committed version next to half-written data.
    ///
    /// The order (docs/FORMAT.md, "Durability"): the write side is taken (the sequence goes
    /// odd) and the header page is synced **before any data is written**, so the disk says
    /// "mid-write" before it can hold a byte of the new data; `finish_write` syncs the data,
    /// publishes (the sequence goes even), and syncs the header page again. Three `msync`s a
    /// write: for data that must survive a power loss, not for a hot loop. On a memory-backed
    /// array (tmpfs) the syncs cost little and mean nothing.
    ///
    /// # Errors
    /// As [`RawArray::begin_write`]; [`WriteError::NotDurable`] (version 0) when the header
    /// cannot be synced: nothing is written, and the write side is given back.
    pub fn begin_write_durable(&self) -> Result<WriteSession, WriteError> {
        let session = self.begin_write()?;
        self.make_durable(session)
    }

    /// Makes `session` durable: syncs the header page ("mid-write") before anything is
    /// written; gives the write side back if that fails.
    fn make_durable(&self, mut session: WriteSession) -> Result<WriteSession, WriteError> {
        session.durable = true;
        if let Err(e) = self.sync_header() {
            // Nothing written: the version goes out unchanged but for its number.
            let _ = self.finish_write(
                WriteSession {
                    durable: false,
                    ..session
                },
                Finish::Complete,
            );
            return Err(WriteError::NotDurable {
                version: 0,
                stage: "the sync of the header before the data",
                error: e.to_string(),
            });
        }
        Ok(session)
    }

    fn sync_header(&self) -> std::io::Result<()> {
        self.map.flush_range(0, HEADER_SIZE)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let len = padded_len(self.header.data_len) as usize;
        if len == 0 {
            return Ok(());
        }
        self.map.flush_range(HEADER_SIZE, len)
    }

    /// Writes `src` at byte `offset` of the data **durably** (see
    /// [`RawArray::begin_write_durable`]): when it returns `Ok`, the version is on disk.
    ///
    /// # Errors
    /// As [`RawArray::write_bytes`]; [`WriteError::NotDurable`] when a sync fails.
    pub fn write_bytes_durable(&self, offset: u64, src: &[u8]) -> Result<u64, WriteError> {
        let (start, full) = self.write_range(offset, src.len())?;
        let session = self.begin_write_durable()?;
        // SAFETY: the range is inside the writable data area and the session holds the write
        // side.
        unsafe { seqlock::store_bytes(self.data_ptr(), start, src) };
        let how = if full {
            Finish::Repair
        } else {
            Finish::Complete
        };
        self.finish_write(session, how)
    }

    /// Publishes the write of `session` (see [`Finish`]) and returns its version.
    ///
    /// # Errors
    /// [`WriteError::LostWriteSide`] if a recovery took the write side over meanwhile (this
    /// writer was judged dead): nothing is published as this write, and the array is left
    /// TORN (this writer takes the write side again to mark it so, since its stores may have
    /// landed on a version someone else published).
    ///
    /// # Panics
    /// If `session` was made by another array handle (a bug in the caller).
    pub fn finish_write(&self, session: WriteSession, how: Finish) -> Result<u64, WriteError> {
        assert!(
            session.data == self.map.data_ptr(),
            "finish_write: the session belongs to another array handle"
        );
        let torn = how == Finish::Torn;
        // A durable write's data reaches the disk before the commit does.
        let data_synced = if session.durable {
            self.sync_data()
        } else {
            Ok(())
        };
        if session.durable && crate::fault::step(crate::fault::Step::CrashBeforeCommit).is_err() {
            // The test's power cut: nothing after this point happens.
            return Err(WriteError::NotDurable {
                version: 0,
                stage: "a simulated crash before the commit",
                error: String::new(),
            });
        }
        let repair = how == Finish::Repair && session.repairs;
        let version = match self.publish_hold(&session.hold, repair, torn, session.holder) {
            Ok(version) => version,
            Err(lost) => {
                if !self.is_striped() {
                    self.mark_torn_after_loss();
                }
                return Err(lost);
            }
        };
        if !session.durable {
            return Ok(version);
        }
        let failed = |stage: &'static str, e: std::io::Error| WriteError::NotDurable {
            version,
            stage,
            error: e.to_string(),
        };
        data_synced.map_err(|e| failed("the sync of the data", e))?;
        self.sync_header()
            .map_err(|e| failed("the sync of the commit", e))?;
        Ok(version)
    }

    /// The first byte of the data area (`header().data_len` bytes, then padding to 8). Writing
    /// through it is for the holder of a [`WriteSession`] only; reading through it outside
    /// [`RawArray::read_raw`] sees whatever is there (a write in progress included).
    pub fn data_ptr(&self) -> *mut u8 {
        self.map.data_ptr()
    }

    /// Runs `attempt` inside the seqlock read protocol, retried until a copy validates, for
    /// bindings whose copies are made by foreign code (NumPy indexing from Python).
    ///
    /// # Safety
    /// `attempt` may only read the data area (through the pointer it gets, within
    /// `data_len` bytes) and must tolerate bytes that change while it reads them: a copy
    /// that overlapped a write is thrown away and `attempt` runs again, so it must not act on
    /// what it read before this returns. Its reads race with writers' stores; like a
    /// seqlock reader in C, it relies on the hardware making such reads return some value.
    ///
    /// # Errors
    /// [`ReadError::Torn`] (unless accepted) or [`ReadError::Timeout`].
    pub unsafe fn read_raw<R>(
        &self,
        attempt: impl FnMut(*const u8) -> R,
    ) -> Result<(R, Snapshot), ReadError> {
        let mut attempt = attempt;
        self.read_protocol(false, |data, _| attempt(data))
    }

    /// [`RawArray::read_raw`] for an attempt that reads only the data bytes `bytes` (a NumPy
    /// basic index's view): in a striped array only their stripes are validated, so writes
    /// elsewhere do not make it retry. The version is then a lower bound, as for
    /// [`RawArray::read_region_bytes`].
    ///
    /// # Safety
    /// As [`RawArray::read_raw`], reading only inside `bytes`.
    ///
    /// # Errors
    /// [`ReadError::OutOfBounds`] (in bytes), [`ReadError::Torn`] (unless accepted) or
    /// [`ReadError::Timeout`].
    pub unsafe fn read_raw_span<R>(
        &self,
        bytes: std::ops::Range<u64>,
        attempt: impl FnMut(*const u8) -> R,
    ) -> Result<(R, Snapshot), ReadError> {
        if bytes.start > bytes.end || bytes.end > self.header.data_len {
            return Err(ReadError::OutOfBounds {
                start: bytes.start,
                end: bytes.end,
                len: self.header.data_len,
            });
        }
        let mut attempt = attempt;
        if self.is_striped() {
            return self.read_stripes(false, bytes, |data, _| attempt(data));
        }
        self.read_protocol(false, |data, _| attempt(data))
    }
}

/// Byte access to the live data inside [`RawArray::read_stream`] (the whole data area) and
/// [`RawArray::read_region_stream`] (a region's bytes, in the array's memory order).
#[derive(Debug)]
pub struct ByteReader<'a> {
    data: *const u8,
    len: u64,
    region: Option<&'a Region>,
    _life: std::marker::PhantomData<&'a ()>,
}

impl ByteReader<'_> {
    /// Length in bytes: the data's, or the region's.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty array or region.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `dst.len()` bytes from `offset` (atomic 8-byte loads); in a region reader,
    /// `offset` counts the region's bytes in memory order.
    ///
    /// # Panics
    /// If the range is outside the data (or the region).
    pub fn read_at(&self, offset: u64, dst: &mut [u8]) {
        if let Some(region) = self.region {
            assert!(
                offset
                    .checked_add(dst.len() as u64)
                    .is_some_and(|e| e <= self.len),
                "read of {} bytes at {offset} is outside the region's {} bytes",
                dst.len(),
                self.len
            );
            let run = region.run_len();
            let mut done = 0;
            while done < dst.len() {
                let at = offset + done as u64;
                let (k, within) = (at / run, at % run);
                let n = ((run - within) as usize).min(dst.len() - done);
                let from = (region.run_start(k) + within) as usize;
                // SAFETY: a run of a region checked against this array lies in the mapped data
                // area, kept mapped by the handle this reader borrows.
                unsafe { seqlock::load_bytes(self.data, from, &mut dst[done..done + n]) };
                done += n;
            }
            return;
        }
        assert!(
            offset
                .checked_add(dst.len() as u64)
                .is_some_and(|e| e <= self.len),
            "read of {} bytes at {offset} is outside {} bytes of data",
            dst.len(),
            self.len
        );
        // SAFETY: the range is inside the mapped data area, kept mapped by the handle this
        // reader borrows; all shared accesses are atomic words.
        unsafe { seqlock::load_bytes(self.data, offset as usize, dst) };
    }
}

/// Byte access to the data inside [`RawArray::write_stream`], with the write side held.
pub struct ByteWriter<'a> {
    scope: &'a WriteScope<'a>,
    len: u64,
}

impl std::fmt::Debug for ByteWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteWriter")
            .field("len", &self.len)
            .finish()
    }
}

impl ByteWriter<'_> {
    /// Data length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty array.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The version this write will publish.
    pub fn version(&self) -> u64 {
        self.scope.version()
    }

    /// Writes `src` at `offset`.
    ///
    /// # Panics
    /// If the range is outside the data.
    pub fn write_at(&self, offset: u64, src: &[u8]) {
        assert!(
            offset
                .checked_add(src.len() as u64)
                .is_some_and(|e| e <= self.len),
            "write of {} bytes at {offset} is outside {} bytes of data",
            src.len(),
            self.len
        );
        // SAFETY: the range is inside the writable data area and the write side is held.
        unsafe { seqlock::store_bytes(self.scope.data_ptr(), offset as usize, src) };
    }

    /// Declares that this write left the whole array consistent: publishing clears TORN.
    pub fn clear_torn(&self) {
        self.scope.set_clear_torn();
    }

    /// Declares that this write could not be finished (for example its input failed midway):
    /// publishing marks the array TORN, so readers are not handed a half-written array.
    pub fn mark_torn(&self) {
        self.scope.set_mark_torn();
    }
}

/// What a writer holds: the array's sequence, or some of a striped array's stripes.
// The striped holding is boxed: it records a sequence per stripe (about 300 bytes), and moved
// around unboxed with every write it cost a write of an array with one sequence 25 ns more
// (64 B: 160 -> 185 ns, `scripts/bench-stripes`). A striped write pays an allocation instead.
#[derive(Debug)]
pub(crate) enum Hold {
    /// The even sequence the write replaced.
    Whole(u64),
    /// The stripes taken (module `striped`).
    Stripes(Box<StripedHold>),
}

impl Hold {
    /// The version the write publishes.
    fn version(&self) -> u64 {
        match self {
            Hold::Whole(s) => s / 2 + 1,
            Hold::Stripes(h) => h.version(),
        }
    }
}

/// The write side while held: gives write bodies the data pointer and finishes the write.
pub(crate) struct WriteScope<'a> {
    array: &'a RawArray,
    hold: Hold,
    holder: u64,
    clear_torn: std::cell::Cell<bool>,
    mark_torn: std::cell::Cell<bool>,
}

impl WriteScope<'_> {
    pub(crate) fn data_ptr(&self) -> *mut u8 {
        self.array.map.data_ptr()
    }

    /// The version this write will publish.
    pub(crate) fn version(&self) -> u64 {
        self.hold.version()
    }

    pub(crate) fn set_clear_torn(&self) {
        self.clear_torn.set(true);
    }

    pub(crate) fn set_mark_torn(&self) {
        self.mark_torn.set(true);
    }

    fn publish(&self, panicking: bool) -> Result<u64, WriteError> {
        let torn = panicking || self.mark_torn.get();
        self.array.publish_hold(
            &self.hold,
            self.clear_torn.get() && !torn,
            torn,
            self.holder,
        )
    }
}

impl Drop for WriteScope<'_> {
    /// Reached only when the write body panicked (success paths `forget` the scope): the data
    /// may be half-written, so publish it as TORN rather than leave the lock held.
    fn drop(&mut self) {
        // If the write side was lost meanwhile, the recovery that took it marked it TORN. With
        // one sequence that stands; a striped write takes the stripes it lost again, one at a
        // time, to mark them (waiting at most the handle's timeout for each, as any write).
        let _ = self.publish(true);
    }
}

pub(crate) fn read_up_to(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Writer registration slots in the header's mutable part (docs/FORMAT.md).
const WRITER_SLOT_COUNT: usize = 64;

/// Byte offset of writer registration slot `k` (a `u64`), which is also the byte its holder
/// locks.
const fn writer_slot_offset(k: usize) -> usize {
    offsets::WRITER_SLOTS + 8 * k
}

impl Drop for RawArray {
    fn drop(&mut self) {
        // Only in the process that registered (a forked child's copy leaves the parent's
        // registration alone); the slot is cleared before it is unlocked.
        if let Some((k, me)) = self.writer_slot
            && ProcessId::current().to_word() == me
        {
            let _ = self.writer_slot_word(k).compare_exchange(
                me,
                0,
                Ordering::Release,
                Ordering::Relaxed,
            );
            crate::sys::unlock_byte(&self.file, writer_slot_offset(k) as u64);
        }
    }
}

/// The little-endian `u64` at byte `at` of `file` (read with `pread`), or 0 past its end.
pub(crate) fn read_word_at(file: &File, at: u64) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < b.len() {
        match file.read_at(&mut b[got..], at + got as u64) {
            Ok(0) => return Ok(0),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(u64::from_le_bytes(b))
}

/// An array file's version and TORN flag (any stripe's, when `header`, the file's own, is
/// striped), read with `pread` from its header, without mapping it (the daemon describes
/// arrays nobody uses this way). A momentary value, as
/// [`RawArray::version`] and [`RawArray::is_torn`] are; the header itself is not validated.
///
/// # Errors
/// The OS error of the read.
pub fn peek_array_state(file: &File, header: &Header) -> std::io::Result<(u64, bool)> {
    let sequence = read_word_at(file, offsets::SEQUENCE as u64)?;
    let stripes = crate::format::stripe_count(header.data_len, header.stripe_bytes);
    let torn = if header.stripe_bytes == 0 {
        read_word_at(file, offsets::FLAGS as u64)? as u32 & FLAG_TORN != 0
    } else {
        // Each stripe's TORN bit, in its line of the stripe table: the little-endian word at
        // STRIPE_FUTEX holds FUTEX_k (low half) and FLAGS_k (high half).
        let mut torn = false;
        for k in 0..stripes {
            let line = (offsets::STRIPES + k as usize * offsets::STRIPE_LINE) as u64;
            let word = read_word_at(file, line + offsets::STRIPE_FUTEX as u64)?;
            torn |= (word >> 32) as u32 & FLAG_TORN != 0;
        }
        torn
    };
    Ok((sequence / 2, torn))
}

/// Async waiting for a new version (feature `async`, or `tokio`).
#[cfg(feature = "async")]
impl RawArray {
    /// Resolves to the version once one newer than `newer_than` is published, without
    /// blocking a thread: the task sleeps until a writer's wake-up, which the process's waiter
    /// thread turns into a `Waker` call (module `waiter`; one thread sleeps for many waiting
    /// tasks). A writer makes no system call unless some task or thread waits. Works on
    /// read-only handles; a recovery after a dead writer counts as a new version.
    ///
    /// No timeout of its own: wrap it in the runtime's (`tokio::time::timeout`). Cancel-safe:
    /// dropping the future leaves no registration and no sleeper count behind.
    pub fn changed(&self, newer_than: u64) -> Changed<'_> {
        Changed {
            array: self,
            newer_than,
            wait: crate::waiter::AsyncWait::new(),
        }
    }

    /// The version, if one newer than `newer_than` is published (the wait ended); otherwise
    /// registers `waker` with the process's waiter thread (counted among the array's sleepers,
    /// so a write wakes it) and returns `Pending`: poll again once woken, with the same `wait`.
    /// For bindings whose event loop keeps the wait between calls (Python's asyncio);
    /// [`RawArray::changed`] is built on it. End an abandoned wait with
    /// [`RawArray::end_wait`].
    pub fn poll_changed(
        &self,
        newer_than: u64,
        wait: &mut crate::waiter::AsyncWait,
        waker: &std::task::Waker,
    ) -> std::task::Poll<u64> {
        let newer = || {
            self.stable_sequence()
                .ok()
                .map(|s| s / 2)
                .filter(|&v| v > newer_than)
        };
        // A registration from an earlier poll goes: it may hold another waker, and the word's
        // value is read afresh below.
        wait.registration = None;
        if let Some(v) = newer() {
            self.end_wait(wait);
            return std::task::Poll::Ready(v);
        }
        if !wait.counted {
            if let Some(control) = self.control.as_ref() {
                control.sleep_begin();
            }
            wait.counted = true;
        }
        // As a blocking waiter before it sleeps (module `array::control`): pairs with the writer's
        // fence between bumping the futex word and reading the count. Either the writer sees
        // us counted, or the check below (after the futex read) sees its version.
        fence(Ordering::SeqCst);
        let seen = self.futex_snapshot();
        if let Some(v) = newer() {
            self.end_wait(wait);
            return std::task::Poll::Ready(v);
        }
        // Test hook: a write here, after the last check and before the registration, lands
        // inside the window the order above guards (`seen` is older than the write).
        #[cfg(test)]
        if let Some(hook) = crate::backoff::BEFORE_SLEEP.with(|h| h.borrow_mut().take()) {
            hook();
        }
        wait.registration = Some(crate::waiter::register(
            &self.file,
            offsets::FUTEX,
            seen,
            waker,
        ));
        std::task::Poll::Pending
    }

    /// Ends a wait of [`RawArray::poll_changed`]: its registration goes and its sleeper count
    /// is given back (nothing if it had none).
    pub fn end_wait(&self, wait: &mut crate::waiter::AsyncWait) {
        wait.registration = None;
        if std::mem::take(&mut wait.counted)
            && let Some(control) = self.control.as_ref()
        {
            control.sleep_end();
        }
    }
}

/// The future of [`RawArray::changed`] (also reached as `Array::changed`).
#[cfg(feature = "async")]
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Changed<'a> {
    array: &'a RawArray,
    newer_than: u64,
    wait: crate::waiter::AsyncWait,
}

#[cfg(feature = "async")]
impl std::future::Future for Changed<'_> {
    type Output = u64;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<u64> {
        let this = &mut *self;
        this.array
            .poll_changed(this.newer_than, &mut this.wait, cx.waker())
    }
}

#[cfg(feature = "async")]
impl Drop for Changed<'_> {
    fn drop(&mut self) {
        self.array.end_wait(&mut self.wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::create::create_array_file;
    use crate::dtype::DType;
    use crate::format::ArraySpec;

    fn make(dir: &Path, len: u64) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        create_array_file(dir, &ArraySpec::new("t", DType::U8, vec![len]))
            .unwrap()
            .0
    }

    /// Writer registrations live where only writers write (the header of the data file) and
    /// need an exclusive lock, which only a read-write description can take: a reader can
    /// neither take one nor, with a shared lock on a slot's byte, make a dead writer look
    /// alive (the registration then tells nothing, and the judge decides).
    #[test]
    fn a_reader_cannot_forge_a_writer_registration() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let reader = File::open(&path).unwrap();
        assert!(crate::sys::try_lock_byte(&reader, writer_slot_offset(0) as u64).is_err());
        let w = RawArray::open(&path, Access::Write).unwrap();
        assert_eq!(w.writer_slot.map(|(k, _)| k), Some(0));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = ProcessId { pid, start_time: 1 }.to_word();
        w.writer_slot_word(5).store(dead, Ordering::Release);
        assert_eq!(w.writer_liveness(dead), Some(Liveness::Dead));
        crate::sys::lock_shared_byte(&reader, writer_slot_offset(5) as u64).unwrap();
        assert_eq!(
            w.writer_liveness(dead),
            None,
            "a reader's lock is no writer's"
        );
        crate::sys::unlock_byte(&reader, writer_slot_offset(5) as u64);
        assert_eq!(w.writer_liveness(dead), Some(Liveness::Dead));
        assert_eq!(
            w.writer_liveness(ProcessId::current().to_word()),
            Some(Liveness::Alive)
        );
    }

    /// What a machine crash leaves on disk during a durable write, seen through the sync
    /// mirror (a copy of the file that receives exactly the bytes each `msync` writes back):
    /// a write that completes is on disk, committed; one cut off after its data sync and
    /// before its commit shows an odd sequence, which a recovery turns into TORN, never a
    /// committed version next to the new data; a plain write leaves the disk at the old
    /// version until something syncs it.
    #[test]
    fn a_durable_write_commits_on_disk_only_after_its_data_and_a_crash_between_is_torn() {
        use crate::fault::{Step, fail_step};
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 4096);
        let disk = dir.path().join("disk");
        std::fs::copy(&path, &disk).unwrap(); // the create synced everything
        let w = RawArray::open(&path, Access::Write).unwrap();
        crate::array::mapping::mirror::set(Some(
            OpenOptions::new().write(true).open(&disk).unwrap(),
        ));
        let on_disk = |want: u8| {
            let d = RawArray::open(&disk, Access::Read).unwrap();
            let mut got = vec![0u8; 4096];
            let snap = d.read_bytes(0, &mut got);
            assert!(
                got.iter().all(|&b| b == want),
                "disk data is not all {want}"
            );
            snap
        };

        let v1 = w.write_bytes_durable(0, &[1u8; 4096]).unwrap();
        assert_eq!(
            on_disk(1).unwrap().version,
            v1,
            "a durable write is on disk"
        );
        // The order: the header saying "mid-write" (odd), then the data, then the commit.
        let odd = 2 * v1 - 1;
        assert_eq!(
            crate::array::mapping::mirror::take_log(),
            [(0, 4096, odd), (4096, 4096, odd), (0, 4096, 2 * v1)]
        );

        w.write_bytes(0, &[2u8; 4096]).unwrap();
        assert_eq!(
            on_disk(1).unwrap().version,
            v1,
            "a plain write is not synced"
        );

        fail_step(Some((Step::CrashBeforeCommit, 5)));
        let crashed = w.write_bytes_durable(0, &[3u8; 4096]);
        fail_step(None);
        crate::array::mapping::mirror::set(None);
        assert!(
            matches!(crashed, Err(WriteError::NotDurable { .. })),
            "{crashed:?}"
        );
        // The disk: the new data, under an odd sequence (mid-write) that a recovery after the
        // crash (its writer is gone) turns into a TORN version.
        // Opened without registering (after a reboot nobody would hold a lock on it; this
        // process would otherwise register under the same identity as the crashed writer).
        let d = RawArray::from_file(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&disk)
                .unwrap(),
            Access::Write,
        )
        .unwrap();
        assert_eq!(
            d.sequence() % 2,
            1,
            "the commit reached the disk before the data"
        );
        let recovered = d.recover_dead_writer_judged(|_| Liveness::Dead).unwrap();
        assert!(
            matches!(recovered, Recovery::Recovered { .. }),
            "{recovered:?}"
        );
        assert!(d.is_torn());
        assert!(matches!(
            d.read_bytes(0, &mut [0u8; 8]),
            Err(ReadError::Torn { .. })
        ));
    }

    /// A write session held across calls: the data is written in place through `data_ptr`,
    /// readers wait while it is held, and `finish_write` publishes clean, repairing or TORN.
    #[test]
    fn a_write_session_publishes_in_place_and_ends_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 16);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let mut r = RawArray::open(&path, Access::Read).unwrap();
        r.set_timeout(Duration::from_millis(20));
        let write = |how, byte: u8| {
            let session = w.begin_write().unwrap();
            assert_eq!(w.sequence() % 2, 1, "held while the session lives");
            assert_eq!(session.version(), w.version() + 1);
            assert!(matches!(
                r.read_bytes(0, &mut [0u8; 16]),
                Err(ReadError::Timeout { .. })
            ));
            // SAFETY: 16 data bytes, and this thread holds the write side.
            unsafe { std::ptr::write_bytes(w.data_ptr(), byte, 16) };
            w.finish_write(session, how).unwrap()
        };
        let mut buf = [0u8; 16];
        assert_eq!(write(Finish::Complete, 1), 1);
        assert_eq!(r.read_bytes(0, &mut buf).unwrap().version, 1);
        assert_eq!(buf, [1; 16]);
        assert_eq!(write(Finish::Torn, 2), 2);
        assert_eq!(
            r.read_bytes(0, &mut buf),
            Err(ReadError::Torn { version: 2 })
        );
        assert_eq!(write(Finish::Complete, 3), 3);
        assert!(w.is_torn(), "a complete write is not a repair");
        assert_eq!(write(Finish::Repair, 4), 4);
        assert_eq!(r.read_bytes(0, &mut buf).unwrap().version, 4);
        assert_eq!(buf, [4; 16]);
        assert_eq!(w.write_count(), 3, "the torn write is not counted");
        assert!(matches!(r.begin_write(), Err(WriteError::ReadOnly)));
    }

    /// A session can only be finished by the handle that made it.
    #[test]
    #[should_panic(expected = "belongs to another array handle")]
    fn a_write_session_of_another_handle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let a = RawArray::open(&path, Access::Write).unwrap();
        let b = RawArray::open(&path, Access::Write).unwrap();
        let session = a.begin_write().unwrap();
        let _ = b.finish_write(session, Finish::Complete);
    }

    /// `with_timeout` changes the wait of this handle on this thread only, for the call.
    #[test]
    fn with_timeout_applies_to_one_handle_on_one_thread_for_one_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let r = RawArray::open(&path, Access::Read).unwrap();
        let other = RawArray::open(&path, Access::Read).unwrap();
        let session = w.begin_write().unwrap();
        let short = Duration::from_millis(30);
        let err = r
            .with_timeout(short, || r.read_bytes(0, &mut [0u8; 8]))
            .unwrap_err();
        let ReadError::Timeout { waited, .. } = err else {
            panic!("{err:?}")
        };
        assert!(waited >= short && waited < DEFAULT_TIMEOUT, "{waited:?}");
        assert_eq!(r.timeout(), DEFAULT_TIMEOUT, "restored after the call");
        r.with_timeout(short, || {
            assert_eq!(
                other.timeout(),
                DEFAULT_TIMEOUT,
                "another handle keeps its own"
            );
            std::thread::scope(|s| {
                s.spawn(|| assert_eq!(r.timeout(), DEFAULT_TIMEOUT, "another thread too"));
            });
        });
        w.finish_write(session, Finish::Complete).unwrap();
    }

    /// `read_raw` runs the attempt inside the protocol and returns the validated value.
    #[test]
    fn read_raw_returns_what_the_attempt_read_with_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        w.write_bytes(0, &[9; 8]).unwrap();
        let mut attempts = 0;
        // SAFETY: the attempt reads one byte inside the 8 data bytes.
        let (byte, snap) = unsafe {
            w.read_raw(|data| {
                attempts += 1;
                if attempts == 1 {
                    // Overlapped by a write: this copy must be thrown away.
                    w.write_bytes(0, &[5; 8]).unwrap();
                }
                std::ptr::read_volatile(data.add(7))
            })
        }
        .unwrap();
        assert_eq!((byte, snap.version, attempts), (5, 2, 2));
    }

    /// Bytes written through one handle are read back through another, at odd offsets too.
    #[test]
    fn bytes_round_trip_between_handles() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 21);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let r = RawArray::open(&path, Access::Read).unwrap();
        assert_eq!(w.write_bytes(0, &[7; 21]).unwrap(), 1);
        assert_eq!(w.write_bytes(3, &[1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap(), 2);
        let mut buf = [0u8; 21];
        assert_eq!(r.read_bytes(0, &mut buf).unwrap().version, 2);
        assert_eq!(
            buf,
            [
                7, 7, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 7, 7, 7, 7, 7, 7, 7, 7, 7
            ]
        );
        assert_eq!(r.write_bytes(0, &[0]), Err(WriteError::ReadOnly));
        assert!(matches!(
            r.read_bytes(20, &mut [0u8; 2]),
            Err(ReadError::OutOfBounds {
                start: 20,
                end: 22,
                len: 21
            })
        ));
        assert_eq!(r.write_count(), 2);
        // A wall-clock time (after 2020-01-01), not a counter.
        assert!(r.last_write_ns() > 1_577_836_800_000_000_000);
        assert!(!r.header().is_empty());
    }

    /// A held write side makes readers and writers time out with the holder named.
    #[test]
    fn held_write_side_times_out_instead_of_spinning_forever() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let mut w = RawArray::open(&path, Access::Write).unwrap();
        w.set_timeout(Duration::from_millis(30));
        let mut r = RawArray::open(&path, Access::Read).unwrap();
        r.set_timeout(Duration::from_millis(30));
        w.write_protocol(true, |_| {
            let err = r.read_bytes(0, &mut [0u8; 8]).unwrap_err();
            assert!(matches!(err, ReadError::Timeout { sequence: 1, writer: Some(p), .. } if p.pid == std::process::id()), "{err:?}");
            let err = w.write_bytes(0, &[0; 8]).unwrap_err();
            assert!(matches!(err, WriteError::Timeout { .. }), "{err:?}");
            // The holder is alive, so recovery leaves it alone.
            assert!(matches!(w.recover_dead_writer(), Ok(Recovery::WriterAlive(_))));
        })
        .unwrap();
        assert_eq!(r.version(), 1);
        assert_eq!(w.recover_dead_writer(), Ok(Recovery::NotHeld));
    }

    /// A write body that panics leaves the array TORN and unlocked, never held.
    #[test]
    fn panicking_write_body_marks_torn_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.write_protocol(true, |_| panic!("boom")).unwrap();
        }));
        assert!(result.is_err());
        assert_eq!(w.sequence(), 2);
        assert!(w.is_torn());
        assert_eq!(
            w.read_bytes(0, &mut [0u8; 8]),
            Err(ReadError::Torn { version: 1 })
        );
        // A partial write keeps TORN; a whole write clears it.
        w.write_bytes(0, &[1; 4]).unwrap();
        assert!(w.is_torn());
        w.write_bytes(0, &[1; 8]).unwrap();
        assert!(!w.is_torn());
        assert_eq!(w.read_bytes(0, &mut [0u8; 8]).unwrap().version, 3);
    }

    /// A recovery that wrongly judges a live writer dead (its pid read from another pid
    /// namespace, say) takes the write side over; the writer then must not publish: not move
    /// the sequence backwards, not clear TORN, not complete a third writer's write in progress.
    #[test]
    fn a_writer_that_lost_its_write_side_cannot_publish_over_a_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 16);
        let live = RawArray::open(&path, Access::Write).unwrap();
        let recoverer = RawArray::open(&path, Access::Write).unwrap();
        let third = RawArray::open(&path, Access::Write).unwrap();
        // Three identities, as if three processes.
        let [a, b, c] = [1, 2, 3].map(|pid| ProcessId { pid, start_time: 7 });
        let (s, holder) = live.acquire_write_as(a).unwrap();
        assert_eq!((s, live.sequence()), (0, 1));
        // What `recover_dead_writer` does once liveness says Dead.
        assert_eq!(recoverer.take_over(0, 1, holder, b), Some(2));
        assert_eq!(live.sequence(), 4);
        assert!(live.is_torn());
        // A third writer takes the write side and is mid-write when the live one publishes.
        let (s3, holder3) = third.acquire_write_as(c).unwrap();
        assert_eq!(live.sequence(), 5);
        assert_eq!(
            live.publish(s, true, false, holder),
            Err(WriteError::LostWriteSide {
                sequence: 1,
                found: 5
            })
        );
        assert_eq!(live.sequence(), 5, "the loser's publish moved the sequence");
        assert!(live.is_torn(), "the loser's publish cleared TORN");
        assert_eq!(
            third.writer(),
            Some(c),
            "the loser's publish cleared the holder"
        );
        // The third writer's (partial) write completes normally and keeps TORN.
        assert_eq!(third.publish(s3, false, false, holder3), Ok(3));
        assert_eq!(third.sequence(), 6);
        assert!(third.is_torn());
    }

    /// Through the public write path: the writer gets `LostWriteSide`, not a silent success,
    /// and leaves the array TORN even if a whole write cleared it meanwhile; the sequence only
    /// ever grows.
    #[test]
    fn a_write_whose_side_was_taken_over_reports_it_and_leaves_the_array_torn() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 16);
        let live = RawArray::open(&path, Access::Write).unwrap();
        let other = RawArray::open(&path, Access::Write).unwrap();
        let mut seen = vec![];
        let result = live.write_protocol(true, |scope| {
            seen.push(other.sequence());
            let holder = other.writer_word().load(Ordering::Relaxed);
            let recoverer = ProcessId {
                pid: 1,
                start_time: 7,
            };
            assert_eq!(other.take_over(0, 1, holder, recoverer), Some(2));
            seen.push(other.sequence());
            // A whole write by someone else clears TORN while the loser still "writes".
            other.write_bytes(0, &[5; 16]).unwrap();
            seen.push(other.sequence());
            // SAFETY: in bounds, writable; the write side is (no longer) held: that is the
            // scenario, and every store is atomic, so it is not undefined behaviour.
            unsafe { seqlock::store_bytes(scope.data_ptr(), 0, &[9; 16]) };
        });
        seen.push(live.sequence());
        assert_eq!(
            result,
            Err(WriteError::LostWriteSide {
                sequence: 1,
                found: 6
            })
        );
        assert_eq!(seen, [1, 4, 6, 8]);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert!(
            live.is_torn(),
            "the loser's stores hide behind a clean version"
        );
        assert_eq!(
            live.read_bytes(0, &mut [0u8; 16]),
            Err(ReadError::Torn { version: 4 })
        );
    }

    /// ABA on the identity word: a recoverer looked at a write (odd sequence, word W), the
    /// writer published and the same process took the next write (same word W again); the
    /// recoverer's claim of W then succeeds but its take-over of the old sequence fails. It must
    /// hand W back, and the writer must finish normally: nothing is left held by nobody.
    #[test]
    fn a_claim_on_a_stale_look_is_handed_back_and_the_writer_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let recoverer = RawArray::open(&path, Access::Write).unwrap();
        let [a, b] = [1, 2].map(|pid| ProcessId { pid, start_time: 7 });
        let (s0, h) = w.acquire_write_as(a).unwrap();
        let stale = w.sequence(); // what the recoverer saw: 1, held by `a`
        assert_eq!(w.publish(s0, true, false, h), Ok(1));
        let (s1, h1) = w.acquire_write_as(a).unwrap();
        assert_eq!((h1, w.sequence()), (h, 3));
        assert_eq!(recoverer.take_over(0, stale, h, b), None);
        assert_eq!(w.writer(), Some(a), "the claimed word was not handed back");
        assert_eq!(w.publish(s1, true, false, h1), Ok(2));
        assert_eq!((w.sequence(), w.writer()), (4, None));
        assert!(!w.is_torn());
    }

    /// A writer whose identity CAS fails while the sequence is still its own waits for the
    /// claimant to decide (here: hand the word back) instead of giving up and leaving the
    /// write side held by nobody.
    #[test]
    fn a_writer_waits_out_a_claim_that_is_handed_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let claimant = ProcessId {
            pid: 2,
            start_time: 7,
        }
        .to_word();
        // A claim made on a stale look, not yet handed back.
        w.writer_word().store(claimant, Ordering::Relaxed);
        let version = std::thread::scope(|scope| {
            let writer = scope.spawn(|| w.write_bytes(0, &[3; 8]));
            // Hand the word back once the writer is waiting on it (the watchdog only keeps
            // a broken build from hanging).
            let watchdog = std::time::Instant::now() + Duration::from_secs(10);
            while w.sequence() != 1 {
                assert!(
                    std::time::Instant::now() < watchdog,
                    "writer never took the sequence"
                );
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(20));
            w.writer_word()
                .compare_exchange(claimant, 0, Ordering::AcqRel, Ordering::Relaxed)
                .unwrap();
            writer.join().unwrap()
        });
        assert_eq!(version, Ok(1));
        assert_eq!((w.sequence(), w.writer()), (2, None));
    }

    /// A writer that records itself only after a take-over moved the sequence on (it stalled
    /// between its sequence CAS and recording itself) gives the word back and stops.
    #[test]
    fn a_writer_that_records_itself_after_a_take_over_stops_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let recoverer = RawArray::open(&path, Access::Write).unwrap();
        let a = ProcessId {
            pid: 1,
            start_time: 7,
        };
        // The writer's sequence CAS, then (before it records itself) the unidentified
        // take-over: 1 -> 3 -> 4, TORN.
        assert_eq!(try_begin_write(w.seq()), Ok(0));
        assert_eq!(
            recoverer.take_over(
                0,
                1,
                0,
                ProcessId {
                    pid: 2,
                    start_time: 7
                }
            ),
            Some(2)
        );
        assert_eq!(
            w.record_writer(0, a),
            Err(WriteError::LostWriteSide {
                sequence: 1,
                found: 4
            })
        );
        assert_eq!((w.sequence(), w.writer()), (4, None));
        assert!(w.is_torn());
    }

    /// A recovery that loses the race for the identity word (the holder gave it up to publish)
    /// changes nothing.
    #[test]
    fn a_takeover_that_loses_the_identity_word_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let (s, holder) = w.acquire_write().unwrap();
        assert_eq!(w.take_over(0, 1, holder ^ 1, ProcessId::current()), None);
        assert_eq!(w.sequence(), 1);
        assert_eq!(w.publish(s, true, false, holder), Ok(1));
        assert_eq!(w.take_over(0, 1, 0, ProcessId::current()), None);
        assert_eq!((w.sequence(), w.writer()), (2, None));
        assert!(!w.is_torn());
    }

    /// A read that starts while a write is in progress waits it out and returns the new
    /// version; it neither times out at once nor returns the half-written state.
    #[test]
    fn a_read_during_a_write_waits_for_the_publish() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let r = RawArray::open(&path, Access::Read).unwrap();
        let started = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                w.write_protocol(true, |scope| {
                    // SAFETY: in bounds, writable, write side held.
                    unsafe { seqlock::store_bytes(scope.data_ptr(), 0, &[1; 4]) };
                    started.wait();
                    std::thread::sleep(Duration::from_millis(30));
                    // SAFETY: as above.
                    unsafe { seqlock::store_bytes(scope.data_ptr(), 4, &[1; 4]) };
                })
                .unwrap();
            });
            started.wait();
            assert_eq!(r.sequence(), 1, "the write is in progress");
            let mut buf = [0u8; 8];
            assert_eq!(r.read_bytes(0, &mut buf).map(|s| s.version), Ok(1));
            assert_eq!(buf, [1; 8]);
        });
    }

    /// A write that finds the write side held waits for the holder's publish and then writes.
    #[test]
    fn a_write_during_a_write_waits_for_the_publish() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let first = RawArray::open(&path, Access::Write).unwrap();
        let second = RawArray::open(&path, Access::Write).unwrap();
        let started = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                first
                    .write_protocol(true, |_| {
                        started.wait();
                        std::thread::sleep(Duration::from_millis(30));
                    })
                    .unwrap();
            });
            started.wait();
            assert_eq!(second.sequence(), 1, "the first write is in progress");
            assert_eq!(second.write_bytes(0, &[2; 8]), Ok(2));
        });
        assert_eq!(first.sequence(), 4);
    }

    /// Marking TORN is idempotent: a second torn publish (a failed write, a recovery) on an
    /// array that is already TORN keeps it TORN; `ByteWriter::mark_torn` marks it.
    #[test]
    fn torn_stays_torn_through_further_torn_publishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        w.write_stream(|bw| bw.mark_torn()).unwrap();
        assert!(w.is_torn());
        w.write_stream(|bw| bw.mark_torn()).unwrap();
        assert!(w.is_torn(), "a second torn publish cleared TORN");
        let (_, holder) = w.acquire_write().unwrap();
        let recoverer = ProcessId {
            pid: 1,
            start_time: 7,
        };
        assert_eq!(w.take_over(0, 5, holder, recoverer), Some(4));
        assert!(w.is_torn(), "a recovery of a torn array cleared TORN");
        w.write_stream(|bw| {
            bw.write_at(0, &[1; 8]);
            bw.clear_torn();
        })
        .unwrap();
        assert!(!w.is_torn());
    }

    /// The unidentified take-over acts only on the exact odd sequence it was asked about with
    /// no writer recorded; otherwise it changes nothing and says why.
    #[test]
    fn the_unidentified_take_over_acts_only_on_what_it_watched() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        assert_eq!(w.recover_unidentified_writer(1), Ok(Recovery::NotHeld));
        // An even sequence is never "held", even when it is the current one.
        assert_eq!(w.recover_unidentified_writer(0), Ok(Recovery::NotHeld));
        assert_eq!((w.sequence(), w.is_torn()), (0, false));
        // A writer took the write side and died before recording itself.
        assert_eq!(try_begin_write(w.seq()), Ok(0));
        assert_eq!(w.recover_unidentified_writer(2), Ok(Recovery::NotHeld));
        assert_eq!(w.recover_unidentified_writer(3), Ok(Recovery::NotHeld));
        // A writer recorded after all: its liveness is for the caller to judge.
        w.writer_word().store(
            ProcessId {
                pid: 1,
                start_time: 7,
            }
            .to_word(),
            Ordering::Relaxed,
        );
        assert_eq!(
            w.recover_unidentified_writer(1),
            Ok(Recovery::WriterUnknown { sequence: 1 })
        );
        assert_eq!(w.sequence(), 1);
        w.writer_word().store(0, Ordering::Relaxed);
        let recovered = w.recover_unidentified_writer(1).unwrap();
        assert!(
            matches!(recovered, Recovery::Recovered { version: 2, writer } if writer.pid == 0),
            "{recovered:?}"
        );
        assert_eq!((w.sequence(), w.writer()), (4, None));
        assert!(w.is_torn());
        let r = RawArray::open(&path, Access::Read).unwrap();
        assert_eq!(
            r.read_bytes(0, &mut [0u8; 8]),
            Err(ReadError::Torn { version: 2 })
        );
    }

    /// Every publish (a write, a recovery) bumps the futex word, so a waiter that read the
    /// word before the publish cannot sleep through it.
    #[test]
    fn every_publish_bumps_the_futex_word() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let before = w.futex().load(Ordering::Relaxed);
        w.write_bytes(0, &[1; 8]).unwrap();
        assert_eq!(w.futex().load(Ordering::Relaxed), before.wrapping_add(1));
        let (_, holder) = w.acquire_write().unwrap();
        let recoverer = ProcessId {
            pid: 1,
            start_time: 7,
        };
        assert_eq!(w.take_over(0, 3, holder, recoverer), Some(3));
        assert_eq!(w.futex().load(Ordering::Relaxed), before.wrapping_add(2));
    }

    /// The lost-wake-up window: a publish that lands after a waiter's last look at the sequence
    /// but before it sleeps must not be slept through. The waiter's futex sleep returns at once
    /// because the word moved on (counted), not after a sleep that times out.
    #[test]
    fn a_publish_inside_the_lost_wake_up_window_is_not_slept_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let r = RawArray::open(&path, Access::Read).unwrap();
        let writer = std::sync::Arc::new(w);
        let hook_writer = writer.clone();
        crate::backoff::BEFORE_SLEEP.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                hook_writer.write_bytes(0, &[1; 8]).unwrap();
            }));
        });
        let changed = crate::sys::futex_already_changed();
        assert_eq!(r.wait_for_version(0, Duration::from_secs(30)), Ok(1));
        assert!(
            crate::backoff::BEFORE_SLEEP.with(|h| h.borrow().is_none()),
            "the waiter never reached its futex sleep"
        );
        // Counters are per process and other tests run in parallel: only growth is exact.
        assert!(
            crate::sys::futex_already_changed() > changed,
            "the sleep did not see that the word had moved: it slept through the publish"
        );
    }

    /// An async wait whose array is written between its last check and its registration
    /// is still woken: its `seen` was read before the check, so the waiter thread finds the
    /// word moved. (Reading `seen` after the check instead would register the new value and
    /// sleep until the full re-check, which the unit tests set to an hour: this test fails.)
    #[cfg(feature = "async")]
    #[test]
    fn an_async_wait_written_to_inside_its_window_is_woken() {
        use std::future::Future;
        use std::task::{Context, Poll, Wake, Waker};
        struct Count(std::sync::atomic::AtomicUsize);
        impl Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let _serial = crate::waiter::TEST_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let writer = std::sync::Arc::new(RawArray::open(&path, Access::Write).unwrap());
        let r = RawArray::open(&path, Access::Read).unwrap();
        let hook_writer = writer.clone();
        crate::backoff::BEFORE_SLEEP.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                hook_writer.write_bytes(0, &[1; 8]).unwrap();
            }));
        });
        let count = std::sync::Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut changed = r.changed(0);
        assert!(std::pin::Pin::new(&mut changed).poll(&mut cx).is_pending());
        assert!(
            crate::backoff::BEFORE_SLEEP.with(|h| h.borrow().is_none()),
            "the future never reached its registration"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the registration slept through a write made inside its window"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            std::pin::Pin::new(&mut changed).poll(&mut cx),
            Poll::Ready(1)
        );
    }

    /// Files that are cut short are refused with their own errors before anything is mapped.
    #[test]
    fn short_and_truncated_files_are_refused_before_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 100);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(4096 + 50).unwrap();
        let err = RawArray::open(&path, Access::Read).unwrap_err();
        assert!(
            matches!(
                err,
                OpenError::Format {
                    source: FormatError::FileTooShort {
                        size: 4146,
                        needed: 4200
                    },
                    ..
                }
            ),
            "{err:?}"
        );
        f.set_len(10).unwrap();
        let err = RawArray::open(&path, Access::Read).unwrap_err();
        assert!(
            matches!(
                err,
                OpenError::Format {
                    source: FormatError::Truncated { len: 10 },
                    ..
                }
            ),
            "{err:?}"
        );
        let fresh = make(&dir.path().join("b"), 100);
        let ro = std::fs::File::open(&fresh).unwrap();
        let err = RawArray::from_file(ro, Access::Write).unwrap_err();
        assert!(
            matches!(err, OpenError::Io { .. }),
            "a read-only fd cannot be mapped writable: {err:?}"
        );
    }

    /// Waiting times out with the current version, and sees a write made by another thread.
    #[test]
    fn wait_for_version_sees_new_writes_and_times_out_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let r = RawArray::open(&path, Access::Read).unwrap();
        let err = r
            .wait_for_version(0, Duration::from_millis(20))
            .unwrap_err();
        assert_eq!(err.current, 0);
        w.write_bytes(0, &[1; 8]).unwrap();
        // Version 1 is not newer than 1: waiting for it times out.
        let err = r
            .wait_for_version(1, Duration::from_millis(20))
            .unwrap_err();
        assert_eq!(err.current, 1);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                w.write_bytes(0, &[1; 8]).unwrap();
            });
            assert_eq!(r.wait_for_version(1, Duration::from_secs(10)), Ok(2));
        });
    }

    /// The streamed writer reports the data length and the version it will publish, and
    /// stores bytes where asked; the streamed reader reports the length and loads them back.
    /// An array with no elements is empty to both.
    #[test]
    fn streamed_reader_and_writer_report_len_and_version_and_move_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 21);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let r = RawArray::open(&path, Access::Read).unwrap();
        for version in 1..=2 {
            let seen = w
                .write_stream(|bw| {
                    bw.write_at(3, &[version as u8; 5]);
                    (bw.len(), bw.is_empty(), bw.version(), format!("{bw:?}"))
                })
                .unwrap();
            assert_eq!(
                seen,
                (21, false, version, "ByteWriter { len: 21 }".to_owned())
            );
        }
        let (seen, snap) = r
            .read_stream(|br| {
                let mut buf = [0u8; 7];
                br.read_at(2, &mut buf);
                (br.len(), br.is_empty(), buf)
            })
            .unwrap();
        assert_eq!(seen, (21, false, [0, 2, 2, 2, 2, 2, 0]));
        assert_eq!(
            snap,
            Snapshot {
                version: 2,
                torn: false
            }
        );
        let empty = make(&dir.path().join("empty"), 0);
        let e = RawArray::open(&empty, Access::Write).unwrap();
        assert_eq!(
            e.write_stream(|bw| (bw.len(), bw.is_empty())),
            Ok((0, true))
        );
        assert_eq!(
            e.read_stream(|br| (br.len(), br.is_empty()))
                .map(|(seen, _)| seen),
            Ok((0, true))
        );
    }

    /// A handle set to accept torn data reads a TORN array and is told it is torn; set back,
    /// it refuses it again.
    #[test]
    fn a_handle_that_accepts_torn_data_reads_a_torn_array() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        w.write_stream(|bw| {
            bw.write_at(0, &[4; 8]);
            bw.mark_torn();
        })
        .unwrap();
        let mut r = RawArray::open(&path, Access::Read).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            r.read_bytes(0, &mut buf),
            Err(ReadError::Torn { version: 1 })
        );
        r.set_accept_torn(true);
        assert_eq!(
            r.read_bytes(0, &mut buf),
            Ok(Snapshot {
                version: 1,
                torn: true
            })
        );
        assert_eq!(buf, [4; 8]);
        r.set_accept_torn(false);
        assert_eq!(
            r.read_bytes(0, &mut buf),
            Err(ReadError::Torn { version: 1 })
        );
    }

    /// A copy that a write overlapped is thrown away and counted on the reading handle. The
    /// read body itself makes the overlapping write (through another handle) on its first two
    /// attempts; the third copy validates.
    #[test]
    fn copies_that_a_write_overlapped_are_counted_as_retries() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 8);
        let w = RawArray::open(&path, Access::Write).unwrap();
        let r = RawArray::open(&path, Access::Read).unwrap();
        assert_eq!(r.read_bytes(0, &mut [0u8; 8]).map(|s| s.version), Ok(0));
        assert_eq!(r.retries(), 0);
        let mut attempts = 0u8;
        let (buf, snap) = r
            .read_stream(|br| {
                attempts += 1;
                let mut buf = [0u8; 8];
                br.read_at(0, &mut buf);
                if attempts <= 2 {
                    w.write_bytes(0, &[attempts; 8]).unwrap();
                }
                buf
            })
            .unwrap();
        assert_eq!((attempts, buf, snap.version), (3, [2; 8], 2));
        assert_eq!(r.retries(), 2);
        assert_eq!(w.retries(), 0, "the counter is per handle");
    }

    /// A read error other than EINTR while reading the header is reported, not retried: a
    /// directory opens, but reading it fails with EISDIR.
    #[test]
    fn a_header_read_error_is_reported_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        // On a thread with a deadline, so a retry loop fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(RawArray::open(&path, Access::Read).map(drop)));
        let err = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("opening a directory never returned")
            .unwrap_err();
        assert!(
            matches!(&err, OpenError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::IsADirectory),
            "{err:?}"
        );
    }

    /// With the control file beside the array, a write with nobody asleep makes no
    /// FUTEX_WAKE system call; a waiter asleep in another thread is registered there and is
    /// woken by the next write with exactly one.
    #[test]
    fn a_write_with_nobody_asleep_makes_no_system_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), 64);
        assert!(crate::array::control::control_path(&path).is_file());
        let writer = RawArray::open(&path, Access::Write).unwrap();
        assert!(writer.has_control());
        let before = crate::sys::futex_wake_calls();
        for _ in 0..1000 {
            writer.write_bytes(0, &[1; 64]).unwrap();
        }
        assert_eq!(crate::sys::futex_wake_calls() - before, 0);

        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let reader = RawArray::open(&path, Access::Read).unwrap();
                let woken = crate::sys::futex_wakeups();
                let version = reader
                    .wait_for_version(1000, Duration::from_secs(20))
                    .unwrap();
                (version, crate::sys::futex_wakeups() - woken)
            })
        };
        let control = crate::array::control::ArrayControl::open_beside(&path).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while control.sleepers().load(Ordering::Relaxed) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the waiter never slept"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = crate::sys::futex_wake_calls();
        writer.write_bytes(0, &[2; 64]).unwrap();
        assert_eq!(crate::sys::futex_wake_calls() - before, 1);
        let (version, wakeups) = waiter.join().unwrap();
        assert_eq!(version, 1001);
        assert!(wakeups >= 1, "the waiter returned without being woken");
        assert_eq!(control.sleepers().load(Ordering::Relaxed), 0);

        // Without the control file (a descriptor passed alone), every write wakes.
        let bare = RawArray::from_file(
            std::fs::File::options()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap(),
            Access::Write,
        )
        .unwrap();
        assert!(!bare.has_control());
        let before = crate::sys::futex_wake_calls();
        bare.write_bytes(0, &[3; 64]).unwrap();
        assert_eq!(crate::sys::futex_wake_calls() - before, 1);
    }
}
