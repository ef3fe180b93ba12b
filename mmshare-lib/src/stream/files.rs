//! A stream's two files: crash-safe creation, opening, mapping, and the shared words in them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::layout::{self, Record, control_len};
use super::protocol::{Ring, SlotTable};
use super::sleep;
use crate::array::mapping::Mapping;
use crate::array::raw::{read_up_to, read_word_at};
use crate::error::{CreateError, OpenError, StreamError};
use crate::fault::{Step, step};
use crate::files::{failed_in, new_temp_file, publish, reserve, temp_name};
use crate::format::{FormatError, HEADER_SIZE, Header, Kind, StallPolicy, StreamSpec, offsets};
use crate::sys::{self, ProcessId};
use std::time::Duration;

/// The data file's name inside a stream's directory.
pub const DATA_FILE: &str = "data";
/// The control file's name inside a stream's directory.
pub const CONTROL_FILE: &str = "control";

/// The name of lane `lane`'s data file (`data`, then `data.1`, `data.2`, ...) or control
/// file (`base` [`CONTROL_FILE`]) in a stream's directory: lane 0's are the files of a
/// stream with one publisher.
pub fn lane_file(base: &str, lane: u32) -> String {
    if lane == 0 {
        base.to_owned()
    } else {
        format!("{base}.{lane}")
    }
}

/// Checks that `lanes` are all the lanes of one stream, in lane order.
pub(crate) fn check_lanes(lanes: &[StreamFiles]) -> Result<(), StreamError> {
    let Some(first) = lanes.first() else {
        return Err(StreamError::Lanes {
            name: String::new(),
            reason: "no lane was given".into(),
        });
    };
    let head = first.header();
    let bad = |reason: String| {
        Err(StreamError::Lanes {
            name: head.name.clone(),
            reason,
        })
    };
    if lanes.len() != head.lanes as usize {
        return bad(format!(
            "it has {} lanes (publishers); {} were given",
            head.lanes,
            lanes.len()
        ));
    }
    for (k, lane) in lanes.iter().enumerate() {
        let h = lane.header();
        if h.lane != k as u32 || *h != head.for_lane(k as u32) {
            return bad(format!(
                "the files given as lane {k} are lane {} of stream {:?} created at {} ns, not of this one",
                h.lane, h.name, h.created_ns
            ));
        }
    }
    Ok(())
}

/// Creates the stream `dir/NAME/` (its data and control files) crash-safely and returns the
/// directory's path and the data file's header.
///
/// Both files are made in a temporary directory (`.tmp-*`, never a valid name), their space
/// reserved (no sparse files), their headers written and synced, and the directory renamed to
/// `NAME` with `RENAME_NOREPLACE`; so a stream is either whole under its name or absent.
///
/// # Errors
/// As [`crate::create_array_file`]: [`CreateError::Invalid`] (also for bad `slots` or
/// `max_subscribers`), [`CreateError::AlreadyExists`], [`CreateError::NoSpace`],
/// [`CreateError::Io`]. Nothing is left behind on error.
///
/// # Example
/// ```
/// use mmshare::{create_stream_files, DType, StreamSpec};
/// let dir = tempfile::tempdir()?;
/// let (path, header) = create_stream_files(dir.path(), &StreamSpec::new("camera", DType::U8, vec![480, 640]))?;
/// assert!(path.join("data").is_file() && path.join("control").is_file());
/// assert_eq!(header.data_len, 480 * 640);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn create_stream_files(
    dir: &Path,
    spec: &StreamSpec,
) -> Result<(PathBuf, Header), CreateError> {
    create_stream_dir(dir, spec, true)
}

/// Creates the stream directory `dir/NAME/` crash-safely, as [`create_stream_files`] does, but
/// with only the data file in it: for a daemon, which keeps control state in sealed memory of
/// its own ([`new_stream_control`]) and hands it out with the data file.
///
/// # Errors
/// As [`create_stream_files`].
pub fn create_stream_data(dir: &Path, spec: &StreamSpec) -> Result<(PathBuf, Header), CreateError> {
    create_stream_dir(dir, spec, false)
}

fn create_stream_dir(
    dir: &Path,
    spec: &StreamSpec,
    with_control: bool,
) -> Result<(PathBuf, Header), CreateError> {
    let header = Header::new_stream(spec)?;
    let target = dir.join(&header.name);
    let temp = dir.join(temp_name(&header.name));
    let io_err = failed_in(dir, header.file_len());
    step(Step::MakeTempDir)
        .and_then(|()| std::fs::DirBuilder::new().mode(0o700).create(&temp))
        .map_err(&io_err)?;
    let result = fill(&temp, &header, spec, dir, with_control).and_then(|()| {
        publish(&temp, &target, dir, header.file_len(), |t| {
            std::fs::remove_dir_all(t)
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result.map(|()| (target, header))
}

fn fill(
    temp: &Path,
    header: &Header,
    spec: &StreamSpec,
    dir: &Path,
    with_control: bool,
) -> Result<(), CreateError> {
    let io_err = failed_in(dir, header.file_len());
    let new_file = |name: &str| new_temp_file(&temp.join(name)).map_err(&io_err);
    for lane in 0..header.lanes {
        let data = new_file(&lane_file(DATA_FILE, lane))?;
        reserve(&data, header.file_len(), dir)?;
        step(Step::WriteHeader)
            .and_then(|()| data.write_all_at(&header.for_lane(lane).encode()[..], 0))
            .map_err(&io_err)?;
        let records = spec.extensions();
        if !records.is_empty() {
            let (area, _) = crate::format::encode_extensions(&records);
            data.write_all_at(&area, header.extension_offset())
                .map_err(&io_err)?;
        }
        step(Step::SyncFile)
            .and_then(|()| data.sync_all())
            .map_err(&io_err)?;
        if with_control {
            let control = new_file(&lane_file(CONTROL_FILE, lane))?;
            reserve(&control, control_len(spec.max_subscribers) as u64, dir)?;
            control
                .write_all_at(&layout::control_header(spec.slots, spec.max_subscribers), 0)
                .map_err(&io_err)?;
            control.sync_all().map_err(&io_err)?;
        }
    }
    File::open(temp).and_then(|d| d.sync_all()).map_err(&io_err)
}

/// Makes the control state of stream `name` as the daemon hands it out: a sealed memfd (no
/// file, and no one who receives it can change its size) of `4096 + 256 × max_subscribers`
/// bytes, laid out as a stream's control file, every record free. Its memfd name is
/// `mmshare-control:NAME`, as for arrays.
///
/// # Errors
/// The OS error.
pub fn new_stream_control(name: &str, slots: u32, max_subscribers: u32) -> std::io::Result<File> {
    crate::sys::sealed_memfd(
        &crate::sys::memfd_name(name),
        control_len(max_subscribers) as u64,
        &layout::control_header(slots, max_subscribers),
    )
}

/// A stream's frames published so far and its attached publisher, read with `pread` from its
/// data file (for a stream nobody maps: the daemon describes unused streams without mapping
/// them). A file too short for its header's words reads as nothing published.
///
/// # Errors
/// The OS error of the read.
pub fn peek_stream_counters(data: &File) -> std::io::Result<(u64, Option<ProcessId>)> {
    Ok((
        read_word_at(data, offsets::PUBLISHED as u64)?,
        ProcessId::from_word(read_word_at(data, offsets::PUBLISHER as u64)?),
    ))
}

/// A stream's two files, mapped: the data file read-only (subscribers) or read-write (the
/// publisher), the control file always read-write.
pub struct StreamFiles {
    header: Header,
    stall: StallPolicy,
    history: u32,
    slots: usize,
    max_subscribers: usize,
    data: Mapping,
    control: Mapping,
    data_file: File,
    control_file: File,
}

impl std::fmt::Debug for StreamFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamFiles")
            .field("name", &self.header.name)
            .field("slots", &self.slots)
            .field("max_subscribers", &self.max_subscribers)
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

impl StreamFiles {
    /// Opens the stream directory `path` (as made by [`create_stream_files`]).
    ///
    /// # Errors
    /// [`StreamError::Open`] when a file cannot be opened or its header is invalid;
    /// [`StreamError::WrongKind`] for an array; [`StreamError::BadControl`].
    pub fn open(path: impl AsRef<Path>, writable_data: bool) -> Result<StreamFiles, StreamError> {
        Self::open_lane(path, 0, writable_data)
    }

    /// Opens every lane of the stream directory `path`, in lane order (one for a stream
    /// with one publisher).
    ///
    /// # Errors
    /// As [`StreamFiles::open`]; [`StreamError::Lanes`] when a lane's files are not the
    /// stream's.
    pub fn open_lanes(
        path: impl AsRef<Path>,
        writable_data: bool,
    ) -> Result<Vec<StreamFiles>, StreamError> {
        let path = path.as_ref();
        let first = Self::open_lane(path, 0, writable_data)?;
        let mut lanes = vec![first];
        for lane in 1..lanes[0].header.lanes {
            lanes.push(Self::open_lane(path, lane, writable_data)?);
        }
        check_lanes(&lanes)?;
        Ok(lanes)
    }

    /// Opens lane `lane` of the stream directory `path` (its files `data.LANE` and
    /// `control.LANE`; `data` and `control` for lane 0).
    ///
    /// # Errors
    /// As [`StreamFiles::open`].
    pub fn open_lane(
        path: impl AsRef<Path>,
        lane: u32,
        writable_data: bool,
    ) -> Result<StreamFiles, StreamError> {
        let path = path.as_ref();
        let open = |name: &str, write: bool| {
            let p = path.join(name);
            OpenOptions::new()
                .read(true)
                .write(write)
                .open(&p)
                .map_err(|source| OpenError::Io { path: p, source })
        };
        let data = open(&lane_file(DATA_FILE, lane), writable_data)?;
        // Seen by a daemon as a participant, as a client is (see `RawArray::open`).
        let _ = crate::sys::hold_participant_lock(&data);
        let control = open(&lane_file(CONTROL_FILE, lane), true)?;
        Self::from_files_at(data, control, writable_data, path.to_owned())
    }

    /// Maps a stream from descriptors (as the daemon hands them out).
    ///
    /// # Errors
    /// As [`StreamFiles::open`].
    pub fn from_files(
        data: File,
        control: File,
        writable_data: bool,
    ) -> Result<StreamFiles, StreamError> {
        Self::from_files_at(data, control, writable_data, PathBuf::from("<descriptor>"))
    }

    fn from_files_at(
        data: File,
        control: File,
        writable_data: bool,
        path: PathBuf,
    ) -> Result<StreamFiles, StreamError> {
        let data_path = path.join(DATA_FILE);
        let io_err = |p: &Path| {
            let p = p.to_owned();
            move |source| OpenError::Io { path: p, source }
        };
        let format_err = |source| OpenError::Format {
            path: data_path.clone(),
            source,
        };
        let size = data.metadata().map_err(io_err(&data_path))?.len();
        let mut page = vec![0u8; HEADER_SIZE];
        let got = read_up_to(&data, &mut page).map_err(io_err(&data_path))?;
        let mut header = Header::decode(&page[..got]).map_err(format_err)?;
        let Kind::Stream {
            slots,
            max_subscribers,
        } = header.kind
        else {
            return Err(StreamError::WrongKind {
                path: data_path,
                expected: "a stream",
                found: "an array",
            });
        };
        header.check_file_len(size).map_err(format_err)?;
        let records = header.read_extensions(&data).map_err(format_err)?;
        header.apply_extensions(&records).map_err(format_err)?;
        let stall = StallPolicy::from_extensions(&records);
        let history =
            crate::format::history_from_extensions(&records, slots).map_err(format_err)?;
        let unknown = header.features.unknown_ro_compat();
        if writable_data && unknown != 0 {
            return Err(StreamError::Open(format_err(
                FormatError::ReadOnlyFeatures { unknown },
            )));
        }
        let len = usize::try_from(header.file_len()).map_err(|_| {
            format_err(FormatError::FileTooShort {
                size,
                needed: header.file_len(),
            })
        })?;
        let data_map = Mapping::map(&data, len, writable_data).map_err(io_err(&data_path))?;

        let control_path = path.join(CONTROL_FILE);
        let bad = |reason: String| StreamError::BadControl {
            path: control_path.clone(),
            reason,
        };
        let control_size = control.metadata().map_err(io_err(&control_path))?.len();
        let needed = control_len(max_subscribers);
        if control_size < needed as u64 {
            return Err(bad(format!(
                "it is {control_size} bytes; {max_subscribers} subscriber records need {needed}"
            )));
        }
        let mut head = [0u8; 16];
        read_up_to(&control, &mut head).map_err(io_err(&control_path))?;
        if head[..8] != layout::MAGIC {
            return Err(bad(format!("bad magic {:02x?}", &head[..8])));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if version != layout::VERSION {
            return Err(bad(format!(
                "layout version {version} (this build reads {})",
                layout::VERSION
            )));
        }
        let control_map = Mapping::map(&control, needed, true).map_err(io_err(&control_path))?;
        Ok(StreamFiles {
            header,
            stall,
            history,
            slots: slots as usize,
            max_subscribers: max_subscribers as usize,
            data: data_map,
            control: control_map,
            data_file: data,
            control_file: control,
        })
    }

    /// Whether the truncation guard ([`crate::guard_mappings_against_truncation`], which the
    /// daemon installs) caught an access past the end of the data file or the control state:
    /// someone truncated a file under these mappings. Always false without the guard.
    pub fn truncated_under_guard(&self) -> bool {
        self.data.truncated() || self.control.truncated()
    }

    /// What the publisher does about a lossless subscriber that stalls it (the data file's
    /// extension record; Block without one).
    pub fn stall_policy(&self) -> StallPolicy {
        self.stall
    }

    /// The newest frames the publisher keeps offered for subscribers that join late (the
    /// data file's history record; 0 without one).
    pub fn history(&self) -> u32 {
        self.history
    }

    /// Holds all subscribers together may have at once: `slots - 1 - max(history, 1)`.
    pub fn hold_capacity(&self) -> u64 {
        crate::format::hold_capacity(self.slots as u32, self.history)
    }

    /// The data file's header: name, dtype, frame shape, order, slots, owner, mode.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The data file (for handing its descriptor on).
    pub fn data_file(&self) -> &File {
        &self.data_file
    }

    /// The control file.
    pub fn control_file(&self) -> &File {
        &self.control_file
    }

    /// Subscriber records (the data file's header).
    pub fn max_subscribers(&self) -> usize {
        self.max_subscribers
    }

    /// Slots in the ring.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Frames published so far.
    pub fn published(&self) -> u64 {
        // Relaxed: a statistic.
        self.data.u64_at(offsets::PUBLISHED).load(Ordering::Relaxed)
    }

    /// The attached publisher, if any.
    pub fn publisher(&self) -> Option<ProcessId> {
        ProcessId::from_word(self.publisher_word().load(Ordering::Relaxed))
    }

    /// Every subscriber record in use: who, in which mode, how far behind, how much missed.
    pub fn subscribers(&self) -> Vec<SubscriberInfo> {
        self.owned_records().into_iter().map(|(_, s)| s).collect()
    }

    /// The subscribers of a stream with several publishers, given its lanes in order: each
    /// once, as lane 0's records list them (every subscription has one record in each lane,
    /// all with its nonce as their owner), with lag, missed and received summed over the
    /// lanes.
    pub fn lane_subscribers(lanes: &[&StreamFiles]) -> Vec<SubscriberInfo> {
        let Some((first, rest)) = lanes.split_first() else {
            return Vec::new();
        };
        let mut all = first.owned_records();
        for lane in rest {
            for (owner, other) in lane.owned_records() {
                if let Some((_, s)) = all.iter_mut().find(|(o, _)| *o == owner) {
                    s.lag = s.lag.saturating_add(other.lag);
                    s.missed = s.missed.saturating_add(other.missed);
                    s.received = s.received.saturating_add(other.received);
                }
            }
        }
        all.into_iter().map(|(_, s)| s).collect()
    }

    /// The records in use, with their owner words.
    fn owned_records(&self) -> Vec<(u64, SubscriberInfo)> {
        let published = self.published();
        self.records()
            .iter()
            .filter_map(|r| {
                // Relaxed: statistics, read without synchronization.
                let owner = r.owner.load(Ordering::Relaxed);
                if owner == 0 || owner == layout::OWNER_RECLAIMING {
                    return None;
                }
                let who =
                    ProcessId::from_word(r.who.load(Ordering::Relaxed)).unwrap_or(ProcessId {
                        pid: 0,
                        start_time: 0,
                    });
                let cursor = r.cursor.load(Ordering::Relaxed);
                let config = r.config.load(Ordering::Relaxed);
                Some((
                    owner,
                    SubscriberInfo {
                        who,
                        lossless: config & layout::CONFIG_LOSSLESS != 0,
                        max_held: (config & layout::CONFIG_HELD_MASK) as usize,
                        lag: published.saturating_sub(cursor),
                        missed: r.missed.load(Ordering::Relaxed),
                        received: r.received.load(Ordering::Relaxed),
                    },
                ))
            })
            .collect()
    }

    /// Reclaims the records of subscribers that are gone; returns how many it freed. Their
    /// holds and lossless cursors stop holding the publisher back (a publisher waiting for
    /// them is woken), their budget returns, and a sleeper count they left behind is taken
    /// out.
    ///
    /// A record's owner is gone when nobody holds the liveness lock on the record's byte
    /// (byte 0x1000 + 256 × record of the control file): the kernel drops it when its holder dies or execs, in
    /// any pid namespace. This call takes that lock itself before it frees the record (so no
    /// subscriber can claim it meanwhile) and gives it back after. Only a record marked as
    /// having no lock (a kernel without OFD locks) is judged by `judge` from the process
    /// identity it records (positive evidence only: see [`crate::sys::Liveness`]). A record whose
    /// owner word is garbage (a scribble) and that nobody locks is freed the same way.
    pub fn reclaim_subscribers(&self, judge: impl Fn(ProcessId) -> crate::sys::Liveness) -> usize {
        let _one_at_a_time = RECLAIMS.lock().unwrap_or_else(|p| p.into_inner());
        let ring = self.ring();
        let mut freed = 0;
        for r in 0..self.max_subscribers {
            let rec = &ring.records[r];
            let owner = rec.owner.load(Ordering::Relaxed);
            if owner == 0 {
                continue;
            }
            let unlocked = rec.config.load(Ordering::Relaxed) & layout::CONFIG_UNLOCKED != 0;
            let found = if unlocked && owner != layout::OWNER_RECLAIMING {
                ProcessId::from_word(rec.who.load(Ordering::Relaxed))
                    .filter(|who| judge(*who) == crate::sys::Liveness::Dead)
                    .and_then(|_| super::protocol::reclaim(&ring, r, owner, me(), reclaimer_gone))
            } else {
                let byte = layout::record_lock_byte(r);
                match sys::try_lock_byte(&self.control_file, byte) {
                    Ok(true) => {
                        // Nobody holds the record: its owner (or a freer) is gone.
                        let found =
                            super::protocol::free_record(&ring, r, owner, me(), reclaimer_gone);
                        sys::unlock_byte(&self.control_file, byte);
                        found
                    }
                    // Held: its owner lives (or is claiming it, or a freer is at work).
                    Ok(false) | Err(_) => None,
                }
            };
            if let Some(found) = found {
                self.forget_sleeper(found);
                if found.was_started {
                    self.count_leave();
                }
                freed += 1;
            }
        }
        if freed > 0 {
            super::publisher::wake_publisher_side(self);
            self.announce_membership();
        }
        freed
    }

    /// Subscribers attached: records in use whose subscription has started (its start
    /// found; a record being claimed or freed is not counted).
    pub fn subscriber_count(&self) -> usize {
        count_started(self.records())
    }

    /// Counts a subscription that started (`JOINS`, for watchers).
    pub(crate) fn count_join(&self) {
        self.control
            .u64_at(layout::offsets::JOINS)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a started subscription that ended (`LEAVES`, for watchers).
    pub(crate) fn count_leave(&self) {
        self.control
            .u64_at(layout::offsets::LEAVES)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Wakes whoever waits for the subscribers to change ([`StreamFiles::wait_for_members`]):
    /// called after a record is claimed (and its subscription started) or freed. No system
    /// call when nobody waits.
    pub(crate) fn announce_membership(&self) {
        sleep::wake(self.member_sleepers(), self.member_futex());
    }

    /// Waits until `done(subscriber_count)` holds, at most `timeout`: woken by every claim and
    /// free of a record (no polling), and looking again at least once a second (a process
    /// that writes the control file can zero the sleeper count). `Ok` with the count that
    /// satisfied it, or `Err` with the last count seen when the time is up. Returns at once
    /// if it holds already.
    pub fn wait_for_members(
        &self,
        timeout: Duration,
        done: impl Fn(usize) -> bool,
    ) -> Result<usize, usize> {
        let deadline = std::time::Instant::now() + timeout;
        let (sleepers, futex) = (self.member_sleepers(), self.member_futex());
        loop {
            let found = sleep::sleep_unless(
                futex,
                || {
                    sleepers.fetch_add(1, Ordering::Relaxed);
                },
                || {
                    let n = self.subscriber_count();
                    done(n).then_some(n)
                },
                |seen| {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if !left.is_zero() {
                        sleep::Futex::wait(futex, seen, left.min(MEMBER_RECHECK));
                    }
                },
            );
            let _ = sleepers.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
            if let Some(n) = found {
                return Ok(n);
            }
            if std::time::Instant::now() >= deadline {
                return Err(self.subscriber_count());
            }
        }
    }

    /// [`StreamFiles::wait_for_members`] polled: the subscriber count if `done` holds for it
    /// (the wait ended); otherwise registers `waker` with the process's waiter thread (counted
    /// in `MEMBER_SLEEPERS`, so every claim and free of a record wakes it; the thread's
    /// periodic re-check wakes it too) and returns `Pending`. For bindings whose event loop
    /// keeps the wait (Python's asyncio). End an abandoned wait with
    /// [`StreamFiles::end_member_wait`].
    #[cfg(feature = "async")]
    pub fn poll_members(
        &self,
        done: impl Fn(usize) -> bool,
        wait: &mut crate::waiter::AsyncWait,
        waker: &std::task::Waker,
    ) -> std::task::Poll<usize> {
        wait.registration = None;
        let (sleepers, futex) = (self.member_sleepers(), self.member_futex());
        let counted = &mut wait.counted;
        let mut registration = None;
        let found = sleep::sleep_unless(
            futex,
            || {
                if !*counted {
                    sleepers.fetch_add(1, Ordering::Relaxed);
                    *counted = true;
                }
            },
            || {
                let n = self.subscriber_count();
                done(n).then_some(n)
            },
            |seen| {
                registration = Some(crate::waiter::register(
                    &self.control_file,
                    layout::offsets::MEMBER_FUTEX,
                    seen,
                    waker,
                ));
            },
        );
        wait.registration = registration;
        match found {
            Some(n) => {
                self.end_member_wait(wait);
                std::task::Poll::Ready(n)
            }
            None => std::task::Poll::Pending,
        }
    }

    /// Ends a wait of [`StreamFiles::poll_members`]: its registration goes and its count in
    /// `MEMBER_SLEEPERS` is given back (nothing if it had none).
    #[cfg(feature = "async")]
    pub fn end_member_wait(&self, wait: &mut crate::waiter::AsyncWait) {
        wait.registration = None;
        if std::mem::take(&mut wait.counted) {
            let _ =
                self.member_sleepers()
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(1))
                    });
        }
    }

    /// Takes the liveness lock on record `r`'s byte for a subscriber claiming it: `Ok(false)`
    /// if someone else holds it.
    pub(crate) fn lock_record(&self, r: usize) -> std::io::Result<bool> {
        sys::try_lock_byte(&self.control_file, layout::record_lock_byte(r))
    }

    /// Gives up the liveness lock on record `r`'s byte.
    pub(crate) fn unlock_record(&self, r: usize) {
        sys::unlock_byte(&self.control_file, layout::record_lock_byte(r));
    }

    /// Takes the publisher's liveness lock: an exclusive lock on the `PUBLISHER` word's first
    /// byte of the **data file**, which only a publisher (the one participant with a
    /// read-write description of it) can take. `Ok(Some(false))` if a live publisher holds
    /// it; `Ok(None)` if a subscriber's shared lock is in the way (which tells nothing).
    pub(crate) fn lock_publisher(&self) -> std::io::Result<Option<bool>> {
        let byte = offsets::PUBLISHER as u64;
        if sys::try_lock_byte(&self.data_file, byte)? {
            return Ok(Some(true));
        }
        Ok(match sys::write_locked(&self.data_file, byte)? {
            Some(true) => Some(false),
            // Gone between the two calls, or a shared lock: cannot tell.
            Some(false) | None => None,
        })
    }

    /// Gives up the publisher's liveness lock.
    pub(crate) fn unlock_publisher(&self) {
        sys::unlock_byte(&self.data_file, offsets::PUBLISHER as u64);
    }

    /// Whether a publisher is attached, as the kernel tells (another description than this
    /// handle's holds the publisher's exclusive lock on the data file); `None` if it cannot
    /// tell (no OFD locks, or a subscriber's shared lock on that byte).
    pub fn publisher_attached(&self) -> Option<bool> {
        sys::write_locked(&self.data_file, offsets::PUBLISHER as u64)
            .ok()
            .flatten()
    }

    /// Takes a dead subscriber's registration out of `SLEEPERS`.
    pub(crate) fn forget_sleeper(&self, found: super::protocol::Freed) {
        if found.was_sleeping {
            let _ = self
                .sleepers()
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
        }
    }

    /// Repairs what a process scribbling on the control file can leave behind for good:
    /// a damaged fixed header (which would make every later attach fail), records whose owner
    /// word names no possible process (never reclaimable by liveness), records marked as
    /// being freed by a process that is gone (or by none), and a hold budget above its
    /// maximum. Live records are left alone. The daemon runs it periodically. Returns whether
    /// anything was repaired.
    pub fn repair_control(&self) -> bool {
        let mut repaired = false;
        let Kind::Stream {
            slots,
            max_subscribers,
        } = self.header.kind
        else {
            return false;
        };
        let want = layout::control_header(slots, max_subscribers);
        let mut have = [0u8; 64];
        let guard = RECLAIMS.lock().unwrap_or_else(|p| p.into_inner());
        if self.control_file.read_exact_at(&mut have, 0).is_ok()
            && have[..offsets_fixed_end()] != want[..offsets_fixed_end()]
        {
            repaired |= self
                .control_file
                .write_all_at(&want[..offsets_fixed_end()], 0)
                .is_ok();
        }
        drop(guard);
        // Records whose owner word is garbage, or that a freer left marked: nobody holds
        // their liveness lock, so `reclaim_subscribers` frees them.
        if self.reclaim_subscribers(|_| crate::sys::Liveness::Unknown) > 0 {
            repaired = true;
        }
        let _one_at_a_time = RECLAIMS.lock().unwrap_or_else(|p| p.into_inner());
        let ring = self.ring();
        let capacity = self.hold_capacity();
        let used = ring.budget.load(Ordering::Relaxed);
        if used > capacity {
            let granted: u64 = ring
                .records
                .iter()
                .filter(|r| r.owner.load(Ordering::Relaxed) != 0)
                .map(|r| r.config.load(Ordering::Relaxed) & layout::CONFIG_HELD_MASK)
                .sum();
            let _ = ring.budget.compare_exchange(
                used,
                granted.min(capacity),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            repaired = true;
        }
        if repaired {
            super::publisher::wake_publisher_side(self);
        }
        repaired
    }

    pub(crate) fn ring(&self) -> Ring<'_, AtomicU64> {
        let stride = self.header().slot_entry_len() / 8;
        // SAFETY: the slot table is `slots` entries of `stride` words, all `AtomicU64`s.
        let words = unsafe {
            self.data
                .atomic_structs::<AtomicU64>(offsets::SLOT_TABLE, self.slots * stride)
        };
        let slots = SlotTable::new(words, stride, self.slots);
        Ring {
            published: self.data.u64_at(offsets::PUBLISHED),
            slots,
            records: self.records(),
            budget: self.control.u64_at(layout::offsets::BUDGET),
        }
    }

    fn records(&self) -> &[Record<AtomicU64>] {
        // SAFETY: `Record<AtomicU64>` is `repr(C)` and made only of `AtomicU64`s.
        unsafe {
            self.control
                .atomic_structs(layout::offsets::RECORDS, self.max_subscribers)
        }
    }

    /// The owner words (subscription nonces) of the started subscriptions: who they are, as
    /// the kernel-backed liveness of their records keeps them (a service's requester tells
    /// its server from the one that replaced it by this).
    pub(crate) fn started_owners(&self) -> Vec<u64> {
        self.records()
            .iter()
            .filter(|r| {
                let owner = r.owner.load(Ordering::Relaxed);
                owner != 0
                    && owner != layout::OWNER_RECLAIMING
                    && r.config.load(Ordering::Relaxed) & layout::CONFIG_STARTED != 0
            })
            .map(|r| r.owner.load(Ordering::Relaxed))
            .collect()
    }

    pub(crate) fn publisher_word(&self) -> &AtomicU64 {
        self.data.u64_at(offsets::PUBLISHER)
    }

    /// The lane's publisher attaches so far (only an attaching publisher stores it).
    pub(crate) fn attaches_word(&self) -> &AtomicU64 {
        self.data.u64_at(offsets::ATTACHES)
    }

    /// Which lane (publisher ring) of its stream these files are: 0 for a stream with one.
    pub fn lane(&self) -> u32 {
        self.header.lane
    }

    /// Subscribers sleep on this (data file); the publisher bumps it.
    pub(crate) fn futex(&self) -> &AtomicU32 {
        self.data.u32_at(offsets::FUTEX)
    }

    pub(crate) fn sleepers(&self) -> &AtomicU32 {
        self.control.u32_word(layout::offsets::SLEEPERS)
    }

    pub(crate) fn pub_sleepers(&self) -> &AtomicU32 {
        self.control.u32_word(layout::offsets::PUB_SLEEPERS)
    }

    pub(crate) fn pub_futex(&self) -> &AtomicU32 {
        self.control.u32_word(layout::offsets::PUB_FUTEX)
    }

    /// Notes the CPU this publisher runs on in the control file's hint, when it moved (a
    /// load, and a store only on a change, so the line stays shared with the subscribers that
    /// read it).
    pub(crate) fn note_publisher_cpu(&self) {
        let word = self.control.u32_word(layout::offsets::PUB_CPU);
        let cpu = crate::sys::cpu_hint();
        // Relaxed: a hint, read without synchronization; a wrong one costs a spin or a yield.
        if word.load(Ordering::Relaxed) != cpu {
            word.store(cpu, Ordering::Relaxed);
        }
    }

    /// Whether more processes may be busy-waiting on this stream than the machine has CPUs
    /// online: its publishers (one per lane it allows: its `max_publishers`, attached or not)
    /// and the subscribers started in this lane. Then some waiter surely shares its CPU with someone it waits for, and a spin
    /// there delays that one by the whole spin: waiters yield from the start instead. (A
    /// count of what could be running, not of what runs; the cost of a wrong answer is a
    /// spin or a yield.)
    pub(crate) fn crowded(&self) -> bool {
        let publishers = self.header.lanes.max(1) as usize;
        let subscribers = super::protocol::started_subscribers(self.records());
        publishers + subscribers > crate::sys::usable_cpus()
    }

    /// Whether this lane's publisher last published from CPU `cpu` (a [`crate::sys::cpu_hint`],
    /// not 0): a subscriber there that spins keeps it from publishing.
    pub(crate) fn publisher_on(&self, cpu: u32) -> bool {
        cpu != 0
            && self
                .control
                .u32_word(layout::offsets::PUB_CPU)
                .load(Ordering::Relaxed)
                == cpu
    }

    /// Notes CPU `cpu` in record `r`'s hint (a subscriber that starts waiting), when it moved.
    pub(crate) fn note_subscriber_cpu(&self, r: usize, cpu: u32) {
        let word = &self.records()[r].cpu;
        if word.load(Ordering::Relaxed) != u64::from(cpu) {
            word.store(u64::from(cpu), Ordering::Relaxed);
        }
    }

    /// Whether a started lossless subscriber last started waiting on CPU `cpu` (not 0): a
    /// publisher there that spins waiting for a slot keeps that subscriber from freeing one.
    pub(crate) fn lossless_subscriber_on(&self, cpu: u32) -> bool {
        let started_lossless = layout::CONFIG_STARTED | layout::CONFIG_LOSSLESS;
        cpu != 0
            && self.records().iter().any(|r| {
                // Relaxed: hints; the records may change meanwhile, which costs a spin at most.
                r.config.load(Ordering::Relaxed) & started_lossless == started_lossless
                    && r.cpu.load(Ordering::Relaxed) == u64::from(cpu)
            })
    }

    pub(crate) fn member_sleepers(&self) -> &AtomicU32 {
        self.control.u32_word(layout::offsets::MEMBER_SLEEPERS)
    }

    pub(crate) fn member_futex(&self) -> &AtomicU32 {
        self.control.u32_word(layout::offsets::MEMBER_FUTEX)
    }

    /// Start of slot `slot`'s frame: page aligned, `header.data_len` bytes.
    pub(crate) fn slot_ptr(&self, slot: usize) -> *mut u8 {
        assert!(slot < self.slots);
        let offset = self.header.data_offset + self.header.slot_stride() * slot as u64;
        // Inside the mapping: file_len covers every slot (checked at open).
        self.data.ptr_at(offset as usize)
    }

    /// Slot `slot`'s row count word (`ROWS[slot]` of the frame-info table), if the stream has
    /// the table. Only the publisher stores it, while the slot is on loan.
    pub(crate) fn rows_word(&self, slot: usize) -> Option<&AtomicU64> {
        assert!(slot < self.slots);
        let table = self.header.frame_info_offset()?;
        let offset = table + u64::from(self.header.frame_info_stride) * slot as u64;
        // 64-byte aligned (the table and its stride are), inside the mapping (checked at open:
        // the frames start after the whole table).
        Some(self.data.u64_word(offset as usize))
    }

    /// Start of slot `slot`'s per-frame header (`header.frame_header_len()` bytes, 8-byte
    /// aligned), if the stream has one.
    pub(crate) fn header_ptr(&self, slot: usize) -> Option<*mut u8> {
        assert!(slot < self.slots);
        self.header.frame_header.as_ref()?;
        let table = self.header.frame_info_offset()?;
        let offset = table
            + u64::from(self.header.frame_info_stride) * slot as u64
            + crate::format::frame_header_offset(self.header.has_lanes()) as u64;
        Some(self.data.ptr_at(offset as usize))
    }

    /// Slot `slot`'s publisher word (`PUBLISHER[slot]` of the frame-info table: who published
    /// the frame, see [`PublisherId`]), if the stream has lanes. Only the publisher stores it,
    /// while the slot is on loan.
    pub(crate) fn publisher_of_word(&self, slot: usize) -> Option<&AtomicU64> {
        assert!(slot < self.slots);
        if !self.header.has_lanes() {
            return None;
        }
        let table = self.header.frame_info_offset()?;
        let offset = table + u64::from(self.header.frame_info_stride) * slot as u64 + 8;
        Some(self.data.u64_word(offset as usize))
    }

    /// Units per row, a slice along axis 0: bytes if `bytes` (a handle made by
    /// `attach_bytes`), else elements of `elem_size` bytes.
    pub(crate) fn row_units(&self, bytes: bool, elem_size: usize) -> usize {
        let row = self.header.row_len() as usize;
        if bytes { row } else { row / elem_size }
    }

    /// The most rows a frame has: its first dimension (1 for a 0-d frame).
    pub(crate) fn max_rows(&self) -> u64 {
        self.header.shape.first().copied().unwrap_or(1)
    }

    /// The rows the frame in slot `slot` has: `ROWS[slot]` (at most the maximum: a larger value
    /// someone wrote reads as the maximum) for a variable-size stream, else the maximum. Read
    /// only while the slot is held.
    pub(crate) fn rows_of(&self, slot: usize) -> u64 {
        let max = self.max_rows();
        if !self.header.is_variable() {
            return max;
        }
        self.rows_word(slot).map_or(max, |w| {
            w.load(std::sync::atomic::Ordering::Relaxed).min(max)
        })
    }

    /// Whether the data file is mapped read-write.
    pub(crate) fn data_writable(&self) -> bool {
        self.data.writable()
    }
}

/// Reclaims and repairs in this process, one at a time: a record's `reclaimer` names a
/// process, so two threads of one process must not free records concurrently.
static RECLAIMS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Records in use whose subscription has started ([`super::protocol::started_subscribers`]).
fn count_started(records: &[Record<AtomicU64>]) -> usize {
    super::protocol::started_subscribers(records)
}

/// The longest a wait for the subscribers to change sleeps before it looks again: the
/// sleeper count is in the control file, which any participant can write (a zeroed count
/// costs a waiter at most this much delay).
const MEMBER_RECHECK: Duration = Duration::from_secs(1);

/// This process, as a reclaimer.
fn me() -> u64 {
    ProcessId::current().to_word()
}

/// A new subscription's owner word: random, so that a record freed and claimed again (by a
/// sibling subscriber of the same process, say) never carries the word an earlier owner
/// still checks for; never 0 (free) or `OWNER_RECLAIMING`.
pub(crate) fn subscription_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(ProcessId::current().to_word());
    h.write_u64(COUNT.fetch_add(1, Ordering::Relaxed));
    h.write_u64(crate::format::now_ns());
    match h.finish() {
        0 | layout::OWNER_RECLAIMING => 1,
        n => n,
    }
}

/// Whether a record's `reclaimer` word names a process that will not finish its work: this
/// very process (which frees one record at a time, so a mark of its own is a leftover), no
/// possible process, a process positively dead, or one whose liveness cannot be told and that
/// recorded no start time. Every identity a running process records has its start time (read
/// from `/proc/self/stat`), so the last case is a scribble (small numbers are the usual
/// garbage) or a process that could not read its own `/proc`; a live reclaimer in another pid
/// namespace, whose liveness cannot be told either, has its start time and is left alone.
pub(crate) fn reclaimer_gone(word: u64) -> bool {
    word == me()
        || owner_of(word).is_none_or(|who| match who.liveness() {
            crate::sys::Liveness::Alive => false,
            crate::sys::Liveness::Dead => true,
            crate::sys::Liveness::Unknown => who.start_time == 0,
        })
}

/// End of the control file's fixed header (magic to records offset).
const fn offsets_fixed_end() -> usize {
    layout::offsets::RECORDS_OFFSET + 4
}

/// The process a reclaimer word names, if it names one: not 0, not `OWNER_RECLAIMING`, and a
/// pid that can exist (anyone can write the control file; a pid of 0 or above 2^31 - 1 would
/// mean "every process" or nothing to `kill(pid, 0)`).
fn owner_of(word: u64) -> Option<ProcessId> {
    if word == layout::OWNER_RECLAIMING {
        return None;
    }
    ProcessId::from_word(word).filter(|who| who.pid != 0 && who.pid <= i32::MAX as u32)
}

/// One subscriber of a stream, as its record shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriberInfo {
    /// The subscribing process.
    pub who: ProcessId,
    /// Lossless (holds the publisher back) or lossy.
    pub lossless: bool,
    /// Samples it may hold at once.
    pub max_held: usize,
    /// Frames published that it has not taken yet.
    pub lag: u64,
    /// Frames it skipped.
    pub missed: u64,
    /// Frames it took.
    pub received: u64,
}

/// A stream's membership as a watcher sees it (the daemon's presence thread): a mapping of
/// its control state of its own, so that the watcher keeps no hold on the stream itself (the
/// daemon closes streams nobody uses) and the mapping lasts as long as it needs it.
pub struct Membership {
    control: Mapping,
    max_subscribers: usize,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("max_subscribers", &self.max_subscribers)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Maps the control state `control` of a stream of `max_subscribers` records (the data
    /// file's value: [`StreamFiles`] has checked the state's size against it).
    ///
    /// # Errors
    /// The mapping fails, or the file is shorter than that.
    pub fn map(control: &File, max_subscribers: u32) -> std::io::Result<Membership> {
        let len = control_len(max_subscribers);
        if control.metadata()?.len() < len as u64 {
            return Err(std::io::Error::other(format!(
                "the control state is shorter than {len} bytes"
            )));
        }
        Ok(Membership {
            control: Mapping::map(control, len, true)?,
            max_subscribers: max_subscribers as usize,
        })
    }

    /// The sleeper count and the futex word of the membership handshake: count yourself in
    /// the first, fence (SeqCst), read the second, then look ([`Membership::count`]), and
    /// sleep while the word holds what you read; take yourself out after (never below 0).
    pub fn words(&self) -> (&AtomicU32, &AtomicU32) {
        (
            self.control.u32_word(layout::offsets::MEMBER_SLEEPERS),
            self.control.u32_word(layout::offsets::MEMBER_FUTEX),
        )
    }

    /// Subscribers attached (started subscriptions).
    pub fn count(&self) -> usize {
        // SAFETY: `Record<AtomicU64>` is `repr(C)` and made only of `AtomicU64`s; the mapping
        // holds `max_subscribers` records from `RECORDS` (`Membership::map`).
        let records: &[Record<AtomicU64>] = unsafe {
            self.control
                .atomic_structs(layout::offsets::RECORDS, self.max_subscribers)
        };
        count_started(records)
    }

    /// Subscriptions started and ended so far (`JOINS`, `LEAVES`: statistics any participant
    /// can write).
    pub fn joins_and_leaves(&self) -> (u64, u64) {
        (
            self.control
                .u64_at(layout::offsets::JOINS)
                .load(Ordering::Relaxed),
            self.control
                .u64_at(layout::offsets::LEAVES)
                .load(Ordering::Relaxed),
        )
    }
}
