//! The streams the daemon serves: creating them, handing out their two descriptors, listing,
//! deleting, and reclaiming the records of subscribers that died.
//!
//! A stream is a directory `NAME/` with its `data` file, and control state in a sealed memfd
//! (see the library's `stream` module). While a stream is in use the daemon keeps both mapped
//! (the data file read-write) to report frames published and subscribers, and to reclaim dead
//! subscribers' records; it is never on the data path. A stream nobody uses is not held open
//! (see `held`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use mmshare::format::{Header, Kind};
use mmshare::internal::proto::{
    Backing, ErrorKind, MAX_MESSAGE, ObjectInfo, StreamInfo, StreamRole, SubscriberStat, WireOrder,
};
use mmshare::internal::{CONTROL_FILE, DATA_FILE, TEMP_PREFIX, create_stream_data};
use mmshare::lane_file;
use mmshare::{
    CreateError, DType, FormatError, Liveness, Order, ProcessId, StallPolicy, StreamError,
    StreamFiles, StreamSpec, validate_name,
};
use tracing::{error, info, warn};

use crate::keeper;

use super::held::{self, Held, Token};
use super::{
    Creds, Perm, Registry, RequestError, State, denied, file_id, internal, name_taken, no_space,
    not_found, open_failed, owns, permits, quarantine, visible,
};

/// One stream the daemon serves.
#[derive(Debug)]
pub struct StreamEntry {
    /// The data file's header (dtype, frame shape, slots, owner, mode).
    pub header: Header,
    /// Which directory it lives in.
    pub backing: Backing,
    /// Its directory.
    pub path: PathBuf,
    /// Device and inode of the data file, to check that files opened by path are this stream.
    pub id: (u64, u64),
    /// Its stall policy (an extension record of the data file).
    pub stall: StallPolicy,
    /// Its history (an extension record of the data file; 0 without one).
    pub history: u32,
    /// What the daemon holds open of it, only while it is in use (see `held`).
    pub(super) held: Held<StreamOpen>,
}

/// What makes `existing` another stream than the one `asked` (a header built from a
/// `CreateStream` request) describes, each as "what (existing, asked VALUE)"; empty when they
/// are the same stream. The mode is not compared.
fn stream_differences(
    existing: &StreamEntry,
    asked: &Header,
    backing: Backing,
    stall: StallPolicy,
    history: u32,
) -> Vec<String> {
    let h = &existing.header;
    let mut differs = Vec::new();
    let mut differ = |what: &str, have: String, want: String| {
        if have != want {
            differs.push(format!("{what} {have} (asked {want})"));
        }
    };
    differ("dtype", h.dtype.descr().into(), asked.dtype.descr().into());
    differ(
        "shape",
        format!("{:?}", h.shape),
        format!("{:?}", asked.shape),
    );
    differ(
        "order",
        format!("{:?}", h.order),
        format!("{:?}", asked.order),
    );
    let geometry = |k: Kind| match k {
        Kind::Stream {
            slots,
            max_subscribers,
        } => (slots, max_subscribers),
        Kind::Array => (0, 0),
    };
    let (have, want) = (geometry(h.kind), geometry(asked.kind));
    differ("slots", have.0.to_string(), want.0.to_string());
    differ("max_subscribers", have.1.to_string(), want.1.to_string());
    differ(
        "backing",
        format!("{:?}", existing.backing).to_lowercase(),
        format!("{backing:?}").to_lowercase(),
    );
    differ(
        "on_stall",
        format!("{:?}", existing.stall),
        format!("{stall:?}"),
    );
    differ("history", existing.history.to_string(), history.to_string());
    let header_of = |h: &Header| {
        h.frame_header
            .as_ref()
            .map_or_else(|| "none".to_owned(), |d| d.descr().into_owned())
    };
    differ("per-frame header", header_of(h), header_of(asked));
    differ(
        "variable-size frames",
        h.is_variable().to_string(),
        asked.is_variable().to_string(),
    );
    differ(
        "max_publishers",
        h.lanes.to_string(),
        asked.lanes.to_string(),
    );
    differs
}

/// A stream in use, as the daemon holds it open.
#[derive(Debug)]
pub struct StreamOpen {
    /// The daemon's own mapping of its data file and control state (lane 0's, for a stream
    /// with several publishers: every subscriber has a record there, so its membership is
    /// the stream's).
    pub files: StreamFiles,
    /// Lanes 1 and up of a stream with several publishers.
    pub more: Vec<StreamFiles>,
    _place: Token,
}

impl StreamOpen {
    /// Whether both files still hold what the daemon maps of them: a publisher could truncate
    /// the data file (the control state is sealed), and touching a mapped page past the end
    /// would be SIGBUS. Checked before every access; a truncation racing with the check is
    /// caught by the truncation guard, and then this says false for good.
    pub fn intact(&self, header: &Header) -> bool {
        let long_enough = |file: &File, len: u64| file.metadata().is_ok_and(|m| m.len() >= len);
        let Kind::Stream {
            max_subscribers, ..
        } = header.kind
        else {
            return false;
        };
        self.lanes().all(|files| {
            !files.truncated_under_guard()
                && long_enough(files.data_file(), header.file_len())
                && long_enough(
                    files.control_file(),
                    4096 + 256 * u64::from(max_subscribers),
                )
        })
    }

    /// Every lane's files, lane 0 first.
    pub fn lanes(&self) -> impl Iterator<Item = &StreamFiles> {
        std::iter::once(&self.files).chain(&self.more)
    }

    /// Whether a process other than the daemon uses the stream: holds its control state or
    /// maps its data file (a participant lock on either), in any lane.
    fn in_use(&self) -> bool {
        let locked = |f: &File| mmshare::internal::has_participants(f).unwrap_or(true);
        self.lanes()
            .any(|files| locked(files.control_file()) || locked(files.data_file()))
    }
}

fn wire_order(order: Order) -> WireOrder {
    match order {
        Order::C => WireOrder::C,
        Order::F => WireOrder::F,
    }
}

impl StreamEntry {
    /// The key of lane `lane`'s control state in the descriptor keeper: lane 0's is a
    /// stream's of one publisher; the others add `#LANE` to the name (never part of a name).
    pub(super) fn lane_key(&self, lane: u32) -> String {
        lane_key(self.id, &self.header, lane)
    }

    /// The keys of every lane's control state.
    pub(super) fn keys(&self) -> Vec<String> {
        (0..self.header.lanes).map(|k| self.lane_key(k)).collect()
    }

    /// The daemon's open state of it, if it is open now.
    pub fn open_state(&self) -> Option<Arc<StreamOpen>> {
        self.held.get()
    }

    /// Opens its data file (never through a symlink) and checks that it is this stream's.
    fn open_data(&self, write: bool) -> io::Result<File> {
        super::open_checked(&self.path.join(DATA_FILE), self.id, write)
    }

    /// Opens lane `lane`'s data file (lane 0: [`StreamEntry::open_data`]), never through a
    /// symlink, and checks that its header is this stream's lane `lane`.
    fn open_lane_data(&self, lane: u32, write: bool) -> io::Result<File> {
        if lane == 0 {
            return self.open_data(write);
        }
        let path = self.path.join(lane_file(DATA_FILE, lane));
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)?;
        let mut page = vec![0u8; mmshare::format::HEADER_SIZE];
        let got = read_prefix(&file, &mut page)?;
        // The whole immutable part, byte for byte (the entry's header has its extension
        // records applied; a decoded one has not).
        let end = mmshare::format::offsets::CRC + 4;
        match Header::decode(&page[..got]) {
            Ok(h) if h.encode()[..end] == self.header.for_lane(lane).encode()[..end] => Ok(file),
            _ => Err(io::Error::other(format!(
                "{} is not lane {lane} of this stream",
                path.display()
            ))),
        }
    }

    /// Frames published (by every publisher) and the attached publishers, in lane order:
    /// from the daemon's mapping while it holds the stream open, else read from the data
    /// files. A damaged stream reads as nothing.
    fn counters(&self) -> (u64, Vec<ProcessId>) {
        match self.held.get() {
            Some(open) if open.intact(&self.header) => {
                open.lanes()
                    .fold((0, Vec::new()), |(published, mut publishers), files| {
                        publishers.extend(files.publisher());
                        (published + files.published(), publishers)
                    })
            }
            Some(_) => (0, Vec::new()),
            None => (0..self.header.lanes)
                .map(|lane| {
                    self.open_lane_data(lane, false)
                        .and_then(|f| {
                            let whole = f.metadata()?.len() >= self.header.file_len();
                            Ok(if whole {
                                mmshare::internal::peek_stream_counters(&f)?
                            } else {
                                (0, None)
                            })
                        })
                        .unwrap_or((0, None))
                })
                .fold((0, Vec::new()), |(published, mut publishers), (n, p)| {
                    publishers.extend(p);
                    (published + n, publishers)
                }),
        }
    }

    /// The description sent to clients; `subscribers` lists each subscriber (Stat) or none
    /// (ListAll, to keep pages small). A stream the daemon holds nothing open of has none.
    pub fn info(&self, subscribers: bool) -> StreamInfo {
        let Kind::Stream {
            slots,
            max_subscribers,
        } = self.header.kind
        else {
            unreachable!("stream entries hold stream headers");
        };
        let open = self.held.get().filter(|o| o.intact(&self.header));
        let subs = match open {
            Some(open) if subscribers => {
                StreamFiles::lane_subscribers(&open.lanes().collect::<Vec<_>>())
            }
            _ => Vec::new(),
        };
        let subs = subs
            .into_iter()
            .map(|s| SubscriberStat {
                pid: s.who.pid,
                lossless: s.lossless,
                max_held: s.max_held as u32,
                lag: s.lag,
                missed: s.missed,
                received: s.received,
            })
            .collect();
        let (published, publishers) = self.counters();
        StreamInfo {
            name: self.header.name.clone(),
            dtype: self.header.dtype.descr().into_owned(),
            shape: self.header.shape.clone(),
            order: wire_order(self.header.order),
            slots,
            max_subscribers,
            data_offset: self.header.data_offset,
            frame_len: self.header.data_len,
            slot_stride: self.header.slot_stride(),
            published,
            backing: self.backing,
            owner_uid: self.header.owner_uid,
            owner_gid: self.header.owner_gid,
            mode: self.header.mode,
            path: self.path.display().to_string(),
            publisher: publishers.first().map(|p| p.pid),
            subscribers: subs,
            stall: self.stall.into(),
            history: self.history,
            header: self
                .header
                .frame_header
                .as_ref()
                .map(|d| d.descr().into_owned())
                .unwrap_or_default(),
            variable: self.header.is_variable(),
            max_publishers: self.header.lanes,
            publishers: publishers.iter().map(|p| p.pid).collect(),
        }
    }

    /// Bytes its files take.
    fn bytes(&self) -> u64 {
        stream_bytes(&self.header)
    }
}

fn stream_bytes(header: &Header) -> u64 {
    let Kind::Stream {
        max_subscribers, ..
    } = header.kind
    else {
        return header.file_len();
    };
    header
        .file_len()
        .saturating_add(4096 + 256 * u64::from(max_subscribers))
        .saturating_mul(u64::from(header.lanes))
}

/// The keeper's key of lane `lane`'s control state of the stream whose lane-0 data file is
/// `id` and whose header is `header`.
fn lane_key(id: (u64, u64), header: &Header, lane: u32) -> String {
    let name = if lane == 0 {
        header.name.clone()
    } else {
        format!("{}#{lane}", header.name)
    };
    keeper::key('s', id, header.created_ns, &name)
}

fn stream_not_found(name: &str) -> RequestError {
    RequestError::new(ErrorKind::NotFound, format!("no stream named {name:?}"))
}

fn wrong_kind(name: &str) -> RequestError {
    RequestError::new(
        ErrorKind::WrongKind,
        format!("{name:?} is an array, not a stream: open it as an array"),
    )
}

impl Registry {
    /// Adds the stream directory `path` found at start, or quarantines it.
    pub(super) fn scan_stream(
        &self,
        backing: Backing,
        name: String,
        path: PathBuf,
        state: &mut State,
    ) {
        let data = path.join(DATA_FILE);
        // A control file beside the data is an older daemon's: control state is in sealed
        // memfds now. Processes that still map it keep working on it.
        if std::fs::remove_file(path.join(CONTROL_FILE)).is_ok() {
            info!(path = %path.display(), "removed an older daemon's control file");
        }
        let (files, more) = match self.map_stream(&path, &name) {
            Ok(lanes) => lanes,
            Err(StreamError::Open(mmshare::OpenError::Format { source, .. }))
                if super::from_a_newer_version(&source) =>
            {
                error!(path = %path.display(), "not serving a stream of a newer mmshare (left in place): {source}");
                return;
            }
            Err(StreamError::Open(mmshare::OpenError::Format { source, .. })) => {
                quarantine(&path, &source.to_string());
                return;
            }
            Err(e @ (StreamError::BadControl { .. } | StreamError::WrongKind { .. })) => {
                quarantine(&path, &e.to_string());
                return;
            }
            Err(e) => {
                error!(path = %data.display(), "cannot open stream, not serving it: {e}");
                return;
            }
        };
        let header = files.header().clone();
        if header.name != name {
            quarantine(&path, &format!("its header names it {:?}", header.name));
            return;
        }
        if state.arrays.contains_key(&name) || state.streams.contains_key(&name) {
            quarantine(
                &path,
                "an array or stream of the same name exists in the other directory",
            );
            return;
        }
        match file_id(files.data_file()) {
            Ok(id) => {
                // Held open only if in use: participants of the daemon that ran before hold
                // the control state the keeper kept (fresh state has none).
                let locked = |f: &File| mmshare::internal::has_participants(f).unwrap_or(true);
                let in_use = std::iter::once(&files)
                    .chain(&more)
                    .any(|f| locked(f.control_file()) || locked(f.data_file()));
                // Over the budget if need be: its participants need this state.
                let daemon = self.limits.daemon_uid;
                let open = in_use.then(|| self.budget.take_over(daemon));
                let entry = StreamEntry {
                    header,
                    backing,
                    path,
                    id,
                    stall: files.stall_policy(),
                    history: files.history(),
                    held: match open {
                        Some(place) => Held::with(StreamOpen {
                            files,
                            more,
                            _place: place,
                        }),
                        None => Held::empty(),
                    },
                };
                state.charge(entry.header.owner_uid, backing, entry.bytes());
                state.streams.insert(name, Arc::new(entry));
            }
            Err(e) => error!(path = %path.display(), "cannot stat stream, not serving it: {e}"),
        }
    }

    /// The open state of `entry`, opening it if it is not (`slot` is its slot, locked): its
    /// data file mapped read-write and its control state (the keeper's copy from before a
    /// restart when that still fits, else fresh), handed to the keeper.
    ///
    /// # Errors
    /// Busy when the daemon holds as many objects open as it may or is out of descriptors;
    /// NotFound when the stream is gone; Internal.
    fn open_stream_state(
        &self,
        entry: &StreamEntry,
        slot: &mut Option<Arc<StreamOpen>>,
        uid: u32,
    ) -> Result<Arc<StreamOpen>, RequestError> {
        if let Some(open) = slot {
            return Ok(open.clone());
        }
        let name = &entry.header.name;
        let place = self.place("stream", name, uid)?;
        let (files, more) = self.map_stream(&entry.path, name).map_err(|e| match e {
            StreamError::Open(mmshare::OpenError::Io { source, .. }) => {
                open_failed("stream", name, source)
            }
            other => internal("cannot map stream", other),
        })?;
        if file_id(files.data_file()).ok() != Some(entry.id) {
            return Err(stream_not_found(name));
        }
        for (k, lane) in std::iter::once(&files).chain(&more).enumerate() {
            self.keep(&entry.lane_key(k as u32), lane.control_file());
        }
        let open = Arc::new(StreamOpen {
            files,
            more,
            _place: place,
        });
        *slot = Some(open.clone());
        Ok(open)
    }

    /// Closes `entry` (its slot `slot`, locked) if nobody uses it; returns whether it did.
    pub(super) fn close_stream_if_unused(
        &self,
        entry: &StreamEntry,
        slot: &mut Option<Arc<StreamOpen>>,
    ) -> bool {
        let Some(open) = slot.as_ref() else {
            return false;
        };
        if !held::unused(open, StreamOpen::in_use) || !open.intact(&entry.header) {
            return false;
        }
        *slot = None;
        for key in entry.keys() {
            self.forget(&key);
        }
        true
    }

    /// Closes every stream nobody uses (run with the periodic check).
    /// Every stream held open now (in use by some process).
    pub(crate) fn open_streams(&self) -> Vec<Arc<StreamOpen>> {
        let state = self.lock();
        state
            .streams
            .values()
            .filter_map(|entry| entry.open_state())
            .collect()
    }

    pub(super) fn close_unused_streams(&self) {
        let streams: Vec<Arc<StreamEntry>> = self.lock().streams.values().cloned().collect();
        for entry in streams {
            if let Some(mut slot) = entry.held.try_lock() {
                self.close_stream_if_unused(&entry, &mut slot);
            }
        }
    }

    /// A descriptor of `entry`'s data file, taken before its name goes: the daemon's own while
    /// it holds the stream open, else one opened for it.
    fn stream_data_of(entry: &StreamEntry) -> Option<File> {
        match entry.open_state() {
            Some(open) => open.files.data_file().try_clone().ok(),
            None => entry.open_data(false).ok(),
        }
    }

    /// Maps the stream directory `path` for the daemon, every lane of it (lane 0, then the
    /// others of a stream with several publishers): its data files read-write, each with the
    /// control state the keeper still holds for it when that fits, else fresh state.
    fn map_stream(
        &self,
        path: &Path,
        name: &str,
    ) -> Result<(StreamFiles, Vec<StreamFiles>), StreamError> {
        let first = self.map_lane(path, name, 0, None)?;
        let mut more = Vec::new();
        for lane in 1..first.header().lanes {
            more.push(self.map_lane(path, name, lane, Some(&first))?);
        }
        Ok((first, more))
    }

    /// Maps lane `lane` of the stream directory `path` (`first`: lane 0, whose header the
    /// lane's must match).
    fn map_lane(
        &self,
        path: &Path,
        name: &str,
        lane: u32,
        first: Option<&StreamFiles>,
    ) -> Result<StreamFiles, StreamError> {
        let data_path = path.join(lane_file(DATA_FILE, lane));
        let io = |source| {
            StreamError::Open(mmshare::OpenError::Io {
                path: data_path.clone(),
                source,
            })
        };
        let data = mmshare::internal::fault_step(mmshare::internal::FaultStep::OpenData)
            .and_then(|()| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&data_path)
            })
            .map_err(io)?;
        let id = file_id(&data).map_err(io)?;
        // The keeper's key is lane 0's data file's identity, with the lane.
        let key_id = first.map_or(Ok(id), |f| file_id(f.data_file()).map_err(io))?;
        // The geometry comes from the header, validated in full by `from_files` below.
        let mut page = vec![0u8; mmshare::format::HEADER_SIZE];
        let got = read_prefix(&data, &mut page).map_err(io)?;
        let header = Header::decode(&page[..got]).map_err(|source| {
            StreamError::Open(mmshare::OpenError::Format {
                path: data_path.clone(),
                source,
            })
        })?;
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
        let len = 4096 + 256 * u64::from(max_subscribers);
        let fresh = || {
            mmshare::internal::fault_step(mmshare::internal::FaultStep::MakeControl)
                .and_then(|()| mmshare::internal::new_stream_control(name, slots, max_subscribers))
        };
        let control = self
            .control_for(
                &lane_key(key_id, &header, lane),
                |f| f.metadata().is_ok_and(|m| m.len() == len),
                fresh,
            )
            .map_err(io)?;
        let data_again = data.try_clone().map_err(io)?;
        mmshare::internal::fault_step(mmshare::internal::FaultStep::Map).map_err(io)?;
        let files = match StreamFiles::from_files(data, control, true) {
            // Kept state whose header someone scribbled on (or of another layout version):
            // the stream is fine, its control state is not; start that afresh rather than set
            // the stream aside.
            Err(StreamError::BadControl { reason, .. }) => {
                warn!(
                    name,
                    reason, "kept control state does not validate: made afresh"
                );
                StreamFiles::from_files(data_again, fresh().map_err(io)?, true)
            }
            other => other,
        }?;
        if let Some(first) = first
            && *files.header() != first.header().for_lane(lane)
        {
            return Err(StreamError::Open(mmshare::OpenError::Format {
                path: data_path,
                source: FormatError::BadLanes {
                    lanes: files.header().lanes,
                    lane: files.header().lane,
                },
            }));
        }
        if first.is_none() && files.header().lane != 0 {
            return Err(StreamError::Open(mmshare::OpenError::Format {
                path: data_path,
                source: FormatError::BadLanes {
                    lanes: files.header().lanes,
                    lane: files.header().lane,
                },
            }));
        }
        Ok(files)
    }

    /// The stream `name` as `who` may know it: an object `who` may not read is answered as a
    /// name that does not exist.
    fn lookup_stream(&self, name: &str, who: Creds) -> Result<Arc<StreamEntry>, RequestError> {
        validate_name(name)
            .map_err(|e| RequestError::new(ErrorKind::InvalidName, e.to_string()))?;
        let state = self.lock();
        if let Some(entry) = state.streams.get(name)
            && visible(&entry.header, who)
        {
            return Ok(entry.clone());
        }
        if let Some(array) = state.arrays.get(name)
            && visible(&array.header, who)
        {
            return Err(wrong_kind(name));
        }
        Err(stream_not_found(name))
    }

    /// Creates a stream owned by `who`.
    ///
    /// # Errors
    /// InvalidName, InvalidDtype, InvalidShape (also for bad `slots` or `max_subscribers`),
    /// ProtocolError (mode), AlreadyExists, QuotaExceeded, NoSpace, Internal; nothing is left
    /// behind on any of them.
    #[allow(clippy::too_many_arguments)]
    pub fn create_stream(
        &self,
        who: Creds,
        name: &str,
        dtype: &str,
        shape: &[u64],
        order: WireOrder,
        slots: u32,
        max_subscribers: u32,
        backing: Backing,
        mode: u32,
        exist_ok: bool,
        stall: StallPolicy,
        history: u32,
        frame_header: &str,
        variable: bool,
        max_publishers: u32,
    ) -> Result<StreamInfo, RequestError> {
        validate_name(name)
            .map_err(|e| RequestError::new(ErrorKind::InvalidName, e.to_string()))?;
        let dtype = DType::parse(dtype)
            .map_err(|e| RequestError::new(ErrorKind::InvalidDtype, e.to_string()))?;
        let frame_header = match frame_header {
            "" => None,
            text => Some(DType::parse(text).map_err(|e| {
                RequestError::new(
                    ErrorKind::InvalidDtype,
                    format!("per-frame header dtype: {e}"),
                )
            })?),
        };
        if mode & !0o777 != 0 {
            return Err(RequestError::new(
                ErrorKind::ProtocolError,
                format!("mode {mode:#o} has bits outside 0o777"),
            ));
        }
        let order = match order {
            WireOrder::C => Order::C,
            WireOrder::F => Order::F,
        };
        let mut spec = StreamSpec::new(name, dtype, shape.to_vec());
        spec.frame.order = order;
        spec.frame.owner_uid = who.uid;
        spec.frame.owner_gid = who.gid;
        spec.frame.mode = mode;
        spec.slots = slots;
        spec.max_subscribers = max_subscribers;
        spec.stall = stall;
        spec.history = history;
        spec.header = frame_header;
        spec.variable = variable;
        spec.max_publishers = max_publishers;
        let header = Header::new_stream(&spec).map_err(|e| {
            let kind = match e {
                FormatError::BadName(_) => ErrorKind::InvalidName,
                _ => ErrorKind::InvalidShape,
            };
            RequestError::new(kind, e.to_string())
        })?;
        let bytes = stream_bytes(&header);
        {
            let mut state = self.lock();
            if let Some(existing) = state.streams.get(name).cloned() {
                let h = &existing.header;
                if !visible(h, who) {
                    return Err(name_taken(name, h, who, "a stream"));
                }
                let differs = stream_differences(&existing, &header, backing, stall, history);
                if exist_ok && differs.is_empty() {
                    drop(state);
                    // Only the owner adopts: another user's stream under this name (created
                    // first, perhaps on purpose) is never taken for one's own.
                    if !owns(h, who) {
                        return Err(name_taken(name, h, who, "a stream"));
                    }
                    return Ok(existing.info(true));
                }
                let message = if differs.is_empty() {
                    format!(
                        "stream {name:?} already exists ({} {:?}, {} slots; pass exist_ok to use it)",
                        h.dtype.descr(),
                        h.shape,
                        match h.kind {
                            Kind::Stream { slots, .. } => slots,
                            Kind::Array => 0,
                        }
                    )
                } else {
                    format!(
                        "stream {name:?} already exists and differs from the one asked for: {}",
                        differs.join(", ")
                    )
                };
                return Err(RequestError::new(ErrorKind::AlreadyExists, message));
            }
            if let Some(array) = state.arrays.get(name) {
                if !visible(&array.header, who) {
                    return Err(name_taken(name, &array.header, who, "an array"));
                }
                return Err(RequestError::new(
                    ErrorKind::AlreadyExists,
                    format!("an array named {name:?} exists; arrays and streams share names"),
                ));
            }
            self.reserve(&mut state, who, backing, "stream", name, bytes)?;
        }
        let result = self.create_stream_files(who, name, &spec, backing);
        let mut state = self.lock();
        state.pending.remove(name);
        match result {
            Ok(entry) => {
                let info = entry.info(true);
                self.presence.created(&entry.header, true);
                // Its subscribers, from none: the monitor sees every one that comes and goes.
                if let Some(open) = entry.open_state() {
                    self.presence.adopt(&open.files, true);
                }
                state.streams.insert(name.to_owned(), entry);
                drop(state);
                info!(
                    name,
                    uid = who.uid,
                    bytes,
                    slots,
                    ?backing,
                    "stream created"
                );
                Ok(info)
            }
            Err(e) => {
                state.refund(who.uid, backing, bytes);
                Err(e)
            }
        }
    }

    fn create_stream_files(
        &self,
        who: Creds,
        name: &str,
        spec: &StreamSpec,
        backing: Backing,
    ) -> Result<Arc<StreamEntry>, RequestError> {
        let dir = self.dir(backing);
        let (path, header) = create_stream_data(dir, spec).map_err(|e| match e {
            CreateError::Invalid(other) => {
                RequestError::new(ErrorKind::InvalidShape, other.to_string())
            }
            CreateError::AlreadyExists(p) => RequestError::new(
                ErrorKind::AlreadyExists,
                format!("files for {name:?} already exist at {}", p.display()),
            ),
            CreateError::NoSpace { needed, dir } => {
                no_space("stream", name, needed, 0, &dir, backing, who)
            }
            CreateError::Io { source, .. } => open_failed("stream", name, source),
            other => RequestError::new(ErrorKind::Internal, other.to_string()),
        })?;
        // The directory is visible under its name now; if the stream cannot be served, take
        // it away again rather than leave a name nobody can create or open until a restart.
        // It is held open from the start, as the client that made it is about to use it
        // (closed at the next periodic check if it does not).
        let made = file_id_at(&path.join(DATA_FILE))
            .map_err(|e| open_failed("stream", name, e))
            .and_then(|id| {
                let entry = StreamEntry {
                    header: header.clone(),
                    backing,
                    path: path.clone(),
                    id,
                    stall: spec.stall,
                    history: spec.history,
                    held: Held::empty(),
                };
                let mut slot = entry.held.lock();
                self.open_stream_state(&entry, &mut slot, who.uid)?;
                drop(slot);
                Ok(entry)
            });
        match made {
            Ok(entry) => Ok(Arc::new(entry)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&path);
                Err(e)
            }
        }
    }

    /// Attaches `who` to a stream: returns its description, the data file (read-write for
    /// the publisher, read-only for a subscriber) and the control file.
    ///
    /// # Errors
    /// InvalidName, NotFound, WrongKind, PermissionDenied (write to publish, read to
    /// subscribe), Busy (a live publisher is attached), Internal.
    pub fn open_stream(
        &self,
        who: Creds,
        name: &str,
        role: StreamRole,
    ) -> Result<(StreamInfo, Vec<File>), RequestError> {
        let entry = self.lookup_stream(name, who)?;
        let (perm, what) = match role {
            StreamRole::Publish => (Perm::Write, "publish to"),
            StreamRole::Subscribe => (Perm::Read, "subscribe to"),
        };
        if !permits(&entry.header, who, perm) {
            return Err(denied(name, who, what, &entry.header));
        }
        let datas = (0..entry.header.lanes)
            .map(|lane| entry.open_lane_data(lane, role == StreamRole::Publish))
            .collect::<io::Result<Vec<File>>>()
            .map_err(|e| open_failed("stream", name, e))?;
        // Under the slot's lock: the daemon's participant lock on the client's copy of the
        // control state is taken before anything can close the stream as unused.
        let mut slot = entry.held.lock();
        let open = self.open_stream_state(&entry, &mut slot, who.uid)?;
        // The attached publisher's own process may open the stream to publish again: a client
        // takes its leases again that way on a new connection (after a daemon restart); a
        // second publisher in that process is still refused by the attach itself.
        // Whether a publisher is attached is the kernel's word (its liveness lock), else
        // (no OFD locks) the daemon's judgement of the process the stream records.
        // With several publishers, only a stream whose every lane is taken is busy.
        let taken = |files: &StreamFiles| {
            files.publisher().filter(|publisher| {
                !(who.pid != 0 && publisher.pid == who.pid)
                    && files
                        .publisher_attached()
                        .unwrap_or_else(|| self.judge(name, *publisher) != Liveness::Dead)
            })
        };
        if role == StreamRole::Publish && open.intact(&entry.header) {
            let busy: Vec<u32> = open.lanes().filter_map(taken).map(|p| p.pid).collect();
            if busy.len() == entry.header.lanes as usize {
                let message = if busy.len() == 1 {
                    format!(
                        "stream {name:?} already has a publisher (pid {}); a stream has one at a time unless it is created with max_publishers",
                        busy[0]
                    )
                } else {
                    format!(
                        "stream {name:?} already has {} publishers attached (pids {busy:?}), its limit (max_publishers)",
                        busy.len()
                    )
                };
                return Err(RequestError::new(ErrorKind::Busy, message));
            }
        }
        let mut fds = Vec::with_capacity(2 * datas.len());
        for (data, files) in datas.into_iter().zip(open.lanes()) {
            let control = super::client_control(files.control_file()).ok_or_else(|| {
                open_failed(
                    "stream",
                    name,
                    io::Error::other(
                        "its control state cannot be reopened for the client (is /proc mounted?)",
                    ),
                )
            })?;
            fds.push(super::client_data(data));
            fds.push(control);
        }
        // A watch's monitor looks at it at once: a subscriber is about to join (or a
        // publisher to publish to subscribers about to join).
        self.presence.adopt(&open.files, false);
        drop((open, slot));
        Ok((entry.info(true), fds))
    }

    /// Describes a stream (needs read permission); `None` if `name` is not a stream.
    ///
    /// # Errors
    /// PermissionDenied.
    pub fn stat_stream(&self, who: Creds, name: &str) -> Option<Result<StreamInfo, RequestError>> {
        // A stream `who` may not read is not one: the caller then answers as for a name
        // that does not exist.
        let entry = self.lock().streams.get(name).cloned()?;
        visible(&entry.header, who).then(|| Ok(entry.info(true)))
    }

    /// One page of the arrays and streams `who` may read whose names start with `prefix`,
    /// after `after`; and whether more follow.
    pub fn list_all(
        &self,
        who: Creds,
        prefix: &str,
        after: Option<&str>,
    ) -> (Vec<ObjectInfo>, bool) {
        enum Item {
            Array(Arc<super::Entry>),
            Stream(Arc<StreamEntry>),
        }
        let items: Vec<(String, Item)> = {
            let state = self.lock();
            let keep = |k: &String| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a);
            let mut items: Vec<(String, Item)> = state
                .arrays
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, e)| (k.clone(), Item::Array(e.clone())))
                .chain(
                    state
                        .streams
                        .iter()
                        .filter(|(k, _)| keep(k))
                        .map(|(k, e)| (k.clone(), Item::Stream(e.clone()))),
                )
                .collect();
            items.sort_by(|a, b| a.0.cmp(&b.0));
            items
        };
        let budget = MAX_MESSAGE - 64;
        let mut used = 0;
        let mut page = Vec::new();
        for (_, item) in items {
            let info = match item {
                Item::Array(e) if permits(&e.header, who, Perm::Read) => {
                    ObjectInfo::Array(e.info())
                }
                Item::Stream(e) if permits(&e.header, who, Perm::Read) => {
                    ObjectInfo::Stream(e.info(false))
                }
                _ => continue,
            };
            let size = mmshare::internal::proto::encode(&info).map_or(budget, |b| b.len());
            if used + size > budget {
                return (page, true);
            }
            used += size;
            page.push(info);
        }
        (page, false)
    }

    /// The size check of a stream the daemon holds nothing open of (see
    /// `Registry::check_closed_array`).
    fn check_closed_stream(&self, entry: &Arc<StreamEntry>) {
        let data_path = entry.path.join(DATA_FILE);
        let Ok(meta) = std::fs::symlink_metadata(&data_path) else {
            return;
        };
        if file_id_of(&meta) != entry.id {
            return;
        }
        let len = entry.header.file_len();
        if meta.len() > len {
            if let Ok(file) = entry.open_data(true) {
                super::cut_back(&file, len, &entry.header.name);
            }
        } else if meta.len() < len {
            let name = &entry.header.name;
            let data = entry.open_data(false).ok();
            let state = self.lock();
            if state
                .streams
                .get(name)
                .is_some_and(|e| Arc::ptr_eq(e, entry))
            {
                error!(name, path = %entry.path.display(), "stream data file was truncated by its publisher: removed");
                if let Err(e) = remove_stream_dir(&entry.path, entry.id.1) {
                    warn!(name, "cannot remove the stream's directory: {e}");
                }
                self.unregister_stream(state, entry, data);
            }
        }
    }

    /// Removes a stream whose data file a publisher truncated, as Delete removes it.
    fn retire_stream(&self, entry: &Arc<StreamEntry>, open: &StreamOpen) {
        let name = &entry.header.name;
        let data = open.files.data_file().try_clone().ok();
        let state = self.lock();
        if !state
            .streams
            .get(name)
            .is_some_and(|e| Arc::ptr_eq(e, entry))
        {
            return;
        }
        error!(name, path = %entry.path.display(), "stream data file was truncated by its publisher: removed");
        if let Err(e) = remove_stream_dir(&entry.path, entry.id.1) {
            warn!(name, "cannot remove the stream's directory: {e}");
        }
        self.unregister_stream(state, entry, data);
    }

    /// Takes a stream whose directory is gone from its name out of the registry: its charge
    /// stays while processes still map it (`data`, its data file, taken before the name went),
    /// and the keeper forgets its control state.
    fn unregister_stream(
        &self,
        mut state: MutexGuard<'_, State>,
        entry: &StreamEntry,
        data: Option<File>,
    ) {
        state.streams.remove(&entry.header.name);
        self.presence.deleted(&entry.header);
        let (owner, bytes) = (entry.header.owner_uid, entry.bytes());
        match data {
            Some(data) => state.retire(
                &data,
                self.budget.take(self.limits.daemon_uid, None).ok(),
                owner,
                entry.backing,
                bytes,
            ),
            None => state.refund(owner, entry.backing, bytes),
        }
        drop(state);
        for key in entry.keys() {
            self.forget(&key);
        }
    }

    /// Deletes a stream: its directory is renamed aside (so the name is free at once) and
    /// removed. Processes that map its files keep streaming on them.
    pub(super) fn delete_stream(
        &self,
        who: Creds,
        entry: Arc<StreamEntry>,
    ) -> Result<(), RequestError> {
        let name = &entry.header.name;
        if !visible(&entry.header, who) {
            return Err(not_found(name));
        }
        if !permits(&entry.header, who, Perm::Write) {
            return Err(denied(name, who, "delete", &entry.header));
        }
        let data = Self::stream_data_of(&entry);
        let state = self.lock();
        if !state
            .streams
            .get(name)
            .is_some_and(|e| Arc::ptr_eq(e, &entry))
        {
            return Err(not_found(name)); // deleted by someone else meanwhile
        }
        remove_stream_dir(&entry.path, entry.id.1)
            .map_err(|e| internal("cannot remove stream directory", e))?;
        self.unregister_stream(state, &entry, data);
        info!(name, uid = who.uid, "stream deleted");
        Ok(())
    }

    /// Frees the records of subscribers that are positively dead, in every stream (or only
    /// those of `pid`, after its connection closed); run periodically.
    pub(crate) fn reclaim_streams(&self, pid: Option<u32>) -> usize {
        let streams: Vec<Arc<StreamEntry>> = self.lock().streams.values().cloned().collect();
        let mut freed = 0;
        for entry in streams {
            // A stream the daemon holds nothing open of has no subscribers; its data file's
            // size is checked by path, as an open one's is.
            let Some(open) = entry.open_state() else {
                if pid.is_none() {
                    self.check_closed_stream(&entry);
                }
                continue;
            };
            if pid.is_none() {
                for files in open.lanes() {
                    super::cut_back(
                        files.data_file(),
                        entry.header.file_len(),
                        &entry.header.name,
                    );
                }
            }
            if !open.intact(&entry.header) {
                if pid.is_none() {
                    self.retire_stream(&entry, &open);
                }
                continue;
            }
            let name = &entry.header.name;
            if pid.is_none() && open.lanes().fold(false, |any, f| f.repair_control() | any) {
                warn!(
                    name,
                    "repaired the stream's control file (someone wrote garbage into it)"
                );
            }
            let leased: Vec<u32> = self
                .lock()
                .leases
                .get(name)
                .map(|l| l.iter().map(|h| h.who.pid).collect())
                .unwrap_or_default();
            let judge = |who: ProcessId| {
                if pid.is_some_and(|p| p != who.pid) {
                    return Liveness::Unknown;
                }
                match self.judge(name, who) {
                    // An owner that cannot be judged and recorded no start time (every running
                    // process records its own) is garbage, a scribbled owner word, unless a
                    // connection of that pid holds the stream. One with a start time (a live
                    // subscriber in another pid namespace, say) is never taken for dead.
                    Liveness::Unknown
                        if pid.is_none() && who.start_time == 0 && !leased.contains(&who.pid) =>
                    {
                        Liveness::Dead
                    }
                    other => other,
                }
            };
            let n: usize = open
                .lanes()
                .map(|files| files.reclaim_subscribers(judge))
                .sum();
            if n > 0 {
                warn!(
                    name,
                    records = n,
                    "reclaimed the records of dead subscribers"
                );
                freed += n;
            }
        }
        freed
    }

    /// After a connection that had streams open closed: waits (until `deadline`) for that
    /// process to finish exiting, then reclaims its subscriber records.
    pub(crate) fn reclaim_after_close(&self, pid: u32, deadline: Instant) {
        let me = ProcessId::read(pid);
        while me.is_some_and(|p| p.liveness() == Liveness::Alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.reclaim_streams(Some(pid));
    }
}

/// Device and inode of the file at `path` (not followed if a symlink).
fn file_id_at(path: &Path) -> io::Result<(u64, u64)> {
    Ok(file_id_of(&std::fs::symlink_metadata(path)?))
}

/// Device and inode of `meta`.
fn file_id_of(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Reads up to `buf.len()` bytes from the start of `file` (fewer only at its end).
pub(super) fn read_prefix(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Removes a stream directory: renamed aside first (so the name is free at once), then
/// removed. Processes that map its files keep streaming on them.
fn remove_stream_dir(path: &Path, ino: u64) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let aside = parent.join(format!(
        "{TEMP_PREFIX}deleted-{}-{}",
        std::process::id(),
        mmshare::ProcessId::current().start_time ^ ino
    ));
    match std::fs::rename(path, &aside) {
        Ok(()) => {
            if let Err(e) = std::fs::remove_dir_all(&aside) {
                warn!(path = %aside.display(), "cannot remove a deleted stream's files: {e}");
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
