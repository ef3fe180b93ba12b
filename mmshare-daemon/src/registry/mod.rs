//! The named arrays and streams: what exists, where its files are, who may do what with it.
//! Arrays are handled here; streams (one directory each) in `streams`.
//!
//! The registry is rebuilt from the two directories at start (every header validated), kept in
//! memory under one mutex, and changed only by create and delete. File work that can be slow
//! (fallocate of a large array) happens outside the lock: the name and the bytes are reserved
//! first, so concurrent creates of one name or past a quota cannot both succeed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mmshare::format::{Header, MAX_STRIPES, default_stripes};
use mmshare::internal::proto::{
    ArrayInfo, Backing, ErrorKind, MAX_MESSAGE, ObjectInfo, OpenAccess, WireOrder,
};
use mmshare::internal::{
    CONTROL_DIR, FaultStep, TEMP_PREFIX, create_array_data, fault_step, is_array_control,
    new_array_control,
};
use mmshare::{
    Access, ArraySpec, CreateError, DType, FormatError, Liveness, OpenError, Order, ProcessId,
    RawArray, Recovery, data_len, validate_name,
};
use tracing::{error, info, warn};

use crate::keeper::{self, Keeper};

mod held;
mod streams;
use held::{Budget, Held, Refused, Share, Token};
pub use streams::StreamEntry;

/// Peer credentials of a connection (SO_PEERCRED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creds {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Process id (0 if unknown).
    pub pid: u32,
}

/// A refused request: the kind the client sees, and a message naming the bad value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestError {
    /// Error kind on the wire.
    pub kind: ErrorKind,
    /// Human-readable reason.
    pub message: String,
}

impl RequestError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RequestError {
            kind,
            message: message.into(),
        }
    }
}

/// Limits set on the command line.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most arrays and streams.
    pub max_arrays: usize,
    /// Most bytes in all objects together (data files and control state).
    pub max_bytes: Option<u64>,
    /// Most bytes one user's objects may take, when set; else `user_share`.
    pub max_bytes_per_user: Option<u64>,
    /// Percent of what the daemon may hold in a directory (the size of its filesystem, at most
    /// `max_bytes`) that one user's objects there may take.
    pub user_share: u32,
    /// Percent of every limit (bytes per directory, objects) kept for the daemon's own uid
    /// and root: other users together never take it.
    pub reserve: u32,
    /// Most arrays and streams one user may own.
    pub max_objects_per_user: usize,
    /// The daemon's own uid, which (with root) per-user limits do not apply to.
    pub daemon_uid: u32,
    /// Most objects the daemon holds open at once (each costs it three descriptors); set
    /// from its descriptor limit. Objects nobody uses are not held open.
    pub max_open_objects: usize,
}

impl Limits {
    /// Whether `uid` is the daemon's own or root: limited only by the daemon's totals.
    fn privileged(&self, uid: u32) -> bool {
        uid == 0 || uid == self.daemon_uid
    }
}

/// `pct` percent of `n`, rounded down.
fn percent(n: u64, pct: u32) -> u64 {
    (u128::from(n) * u128::from(pct.min(100)) / 100) as u64
}

/// Bytes an array costs: its file and its control state.
fn array_bytes(header: &Header) -> u64 {
    header.file_len().saturating_add(4096)
}

fn backing_index(backing: Backing) -> usize {
    match backing {
        Backing::File => 0,
        Backing::Memory => 1,
    }
}

/// A deleted object still in use: the daemon's own descriptor of its data file (for the
/// participant check, with its place in the descriptor budget), and what it is charged.
#[derive(Debug)]
struct Retired {
    file: File,
    _place: Token,
    owner: u32,
    backing: Backing,
    bytes: u64,
}

/// What one uid's objects take: bytes per directory (file, memory) and objects, creates in
/// progress included.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    bytes: [u64; 2],
    objects: usize,
}

/// One array the daemon serves.
#[derive(Debug)]
pub struct Entry {
    /// Its immutable header.
    pub header: Header,
    /// Which directory it lives in.
    pub backing: Backing,
    /// Its file.
    pub path: PathBuf,
    /// Device and inode of the file, to check that a file opened by path is this array.
    pub id: (u64, u64),
    /// What the daemon holds open of it, only while it is in use (see `held`).
    held: Held<ArrayOpen>,
}

/// An array in use, as the daemon holds it open.
#[derive(Debug)]
pub struct ArrayOpen {
    /// The daemon's own read-write mapping: for versions, TORN, and dead-writer recovery.
    pub raw: RawArray,
    /// Its control state (sleeper count): a sealed memfd, reopened for each client.
    pub control: File,
    _place: Token,
}

impl ArrayOpen {
    /// Whether the file still holds everything `header` declares. An array file is writable
    /// by its writers, who can truncate it: the daemon checks (fstat) before touching its
    /// mapping, and a truncation racing with that check is caught by the truncation guard (the
    /// access reads a zero page instead of raising SIGBUS, and this then says false).
    pub fn intact(&self, header: &Header) -> bool {
        !self.raw.truncated_under_guard()
            && self
                .raw
                .file()
                .metadata()
                .is_ok_and(|m| m.len() >= header.file_len())
    }

    /// Whether a process other than the daemon uses the array: holds its control state or
    /// maps its file (a participant lock on either).
    fn in_use(&self) -> bool {
        let locked = |f: &File| mmshare::internal::has_participants(f).unwrap_or(true);
        locked(&self.control) || locked(self.raw.file())
    }
}

/// Opens the file at `path` (never through a symlink), read-only or read-write, and checks
/// that it is the object's (device and inode `id`): `NotFound` if another file took the name.
pub(super) fn open_checked(path: &Path, id: (u64, u64), write: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    if file_id(&file)? != id {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "another file took the object's name",
        ));
    }
    Ok(file)
}

fn file_id(file: &File) -> io::Result<(u64, u64)> {
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
}

impl Entry {
    fn new(header: Header, backing: Backing, path: PathBuf, id: (u64, u64)) -> Entry {
        Entry {
            header,
            backing,
            path,
            id,
            held: Held::empty(),
        }
    }

    /// The key of its control state in the descriptor keeper.
    fn key(&self) -> String {
        keeper::key('a', self.id, self.header.created_ns, &self.header.name)
    }

    /// The daemon's open state of it, if it is open now.
    pub fn open_state(&self) -> Option<Arc<ArrayOpen>> {
        self.held.get()
    }

    /// Opens its file (never through a symlink) and checks that it is this array's.
    fn open_file(&self, write: bool) -> io::Result<File> {
        open_checked(&self.path, self.id, write)
    }

    /// Version and TORN: from the daemon's mapping while it holds the array open, else read
    /// from the file. A file that does not hold its header's bytes
    /// reads as version 0, torn.
    fn version_and_torn(&self) -> (u64, bool) {
        match self.held.get() {
            Some(open) if open.intact(&self.header) => (open.raw.version(), open.raw.is_torn()),
            Some(_) => (0, true),
            None => self
                .open_file(false)
                .and_then(|f| {
                    let whole = f.metadata()?.len() >= self.header.file_len();
                    Ok(if whole {
                        mmshare::internal::peek_array_state(&f, &self.header)?
                    } else {
                        (0, true)
                    })
                })
                .unwrap_or((0, true)),
        }
    }

    /// The description sent to clients.
    pub fn info(&self) -> ArrayInfo {
        let (version, torn) = self.version_and_torn();
        ArrayInfo {
            name: self.header.name.clone(),
            dtype: self.header.dtype.descr().into_owned(),
            shape: self.header.shape.clone(),
            order: match self.header.order {
                Order::C => WireOrder::C,
                Order::F => WireOrder::F,
            },
            data_offset: self.header.data_offset,
            data_len: self.header.data_len,
            version,
            backing: self.backing,
            owner_uid: self.header.owner_uid,
            owner_gid: self.header.owner_gid,
            mode: self.header.mode,
            torn,
            path: self.path.display().to_string(),
            stripe_bytes: self.header.stripe_bytes,
            sparse: self.header.is_sparse(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    arrays: BTreeMap<String, Arc<Entry>>,
    /// Streams, in the same namespace as arrays (a name is one or the other).
    streams: BTreeMap<String, Arc<StreamEntry>>,
    /// Names being created right now (reserved, not yet visible).
    pending: HashSet<String>,
    /// Bytes of all objects plus pending reservations.
    bytes: u64,
    /// The same per uid and directory, with object counts.
    usage: HashMap<u32, Usage>,
    /// Deleted objects that processes still map: their memory or disk is still taken, so it
    /// stays counted against their owners until no participant holds their data file.
    retired: Vec<Retired>,
    /// Odd sequences seen with no writer recorded: (name, stripe) -> (sequence, first seen).
    /// Stripe 0 of an array with one sequence is the array.
    unidentified: HashMap<(String, u64), (u64, Instant)>,
    /// Open connections holding write access, per array name: each connection's peer process
    /// as the daemon sees it (pid in the daemon's namespace, start time), one entry per
    /// connection.
    leases: HashMap<String, Vec<Lease>>,
    /// Dead writers recovered, per array name, since the daemon started (for its metrics).
    recoveries: HashMap<String, u64>,
}

/// What [`Registry::metrics_snapshot`] returns.
#[derive(Debug)]
pub(crate) struct MetricsSnapshot {
    pub(crate) objects: Vec<ObjectInfo>,
    pub(crate) recoveries: HashMap<String, u64>,
    pub(crate) usage: Vec<UidUsage>,
    pub(crate) bytes: u64,
}

impl State {
    /// Counts an object of `uid` taking `bytes` in `backing` (a create in progress included).
    fn charge(&mut self, uid: u32, backing: Backing, bytes: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
        let u = self.usage.entry(uid).or_default();
        u.bytes[backing_index(backing)] = u.bytes[backing_index(backing)].saturating_add(bytes);
        u.objects += 1;
    }

    /// Gives back what [`State::charge`] counted.
    fn refund(&mut self, uid: u32, backing: Backing, bytes: u64) {
        self.bytes = self.bytes.saturating_sub(bytes);
        if let Some(u) = self.usage.get_mut(&uid) {
            let b = &mut u.bytes[backing_index(backing)];
            *b = b.saturating_sub(bytes);
            u.objects = u.objects.saturating_sub(1);
            if u.objects == 0 {
                self.usage.remove(&uid);
            }
        }
    }

    /// Gives back what a deleted object was charged, or, while some process still maps its
    /// data file (a participant lock on it), keeps charging it until none does. Keeping it
    /// takes a descriptor, so a place in the descriptor budget (`place`): without one the
    /// charge is given back at once.
    fn retire(
        &mut self,
        data: &File,
        place: Option<Token>,
        owner: u32,
        backing: Backing,
        bytes: u64,
    ) {
        match (data.try_clone(), place) {
            (Ok(file), Some(place))
                if mmshare::internal::has_participants(&file).unwrap_or(false) =>
            {
                self.retired.push(Retired {
                    file,
                    _place: place,
                    owner,
                    backing,
                    bytes,
                });
            }
            _ => self.refund(owner, backing, bytes),
        }
    }

    /// Refunds the deleted objects nobody maps any more.
    fn release_retired(&mut self) {
        let (gone, kept): (Vec<Retired>, Vec<Retired>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|r| !mmshare::internal::has_participants(&r.file).unwrap_or(false));
        self.retired = kept;
        for r in gone {
            self.refund(r.owner, r.backing, r.bytes);
        }
    }

    /// Bytes of all objects in `backing`, and of those of uids that `limits` does not
    /// privilege.
    fn backing_bytes(&self, backing: Backing, limits: &Limits) -> (u64, u64) {
        let i = backing_index(backing);
        self.usage.iter().fold((0, 0), |(all, others), (uid, u)| {
            let b = u.bytes[i];
            let o = if limits.privileged(*uid) { 0 } else { b };
            (all.saturating_add(b), others.saturating_add(o))
        })
    }
}

/// An owner uid, its bytes (file, memory) and its objects, as [`Registry::usage`] reports.
pub(crate) type UidUsage = (u32, [u64; 2], usize);

/// A connection holding write access to an array.
#[derive(Clone, Copy, Debug)]
struct Lease {
    /// The peer process, as the daemon sees it (its pid in the daemon's pid namespace).
    who: ProcessId,
    /// Whether it runs in another pid namespace than the daemon: then the pid it records as a
    /// writer is its own namespace's, and means nothing (or another process) here.
    foreign: bool,
}

/// Whether `pid` runs in another pid namespace than this process (false if it cannot be told).
fn in_foreign_pid_namespace(pid: u32) -> bool {
    let ns = |path: String| std::fs::read_link(path).ok();
    match (
        ns(format!("/proc/{pid}/ns/pid")),
        ns("/proc/self/ns/pid".into()),
    ) {
        (Some(theirs), Some(ours)) => theirs != ours,
        _ => false,
    }
}

/// The arrays, and the directories that hold them.
#[derive(Debug)]
pub struct Registry {
    file_dir: PathBuf,
    mem_dir: PathBuf,
    limits: Limits,
    state: Mutex<State>,
    /// The descriptor keeper that holds a copy of every control memfd (none with
    /// `--no-fd-keeper`, or when it could not be started).
    keeper: Mutex<Option<Keeper>>,
    /// Control state the keeper handed over at start, by key, until objects claim it.
    adoptable: Mutex<BTreeMap<String, File>>,
    /// Set when the keeper had to be started again: it is given everything at the next
    /// periodic check (not at once, from under an object's lock).
    refill: AtomicBool,
    /// Objects held open, and how many may be.
    budget: Arc<Budget>,
    /// Where the periodic look for by-path users of unopened arrays goes on next.
    sweep_from: Mutex<String>,
    /// Set while the registry is loaded: objects in use are opened then whatever the budget
    /// says (their participants need their state; the registry's lock is held, so nothing
    /// could be closed to make room).
    loading: AtomicBool,
    /// Objects created and deleted, and streams' subscribers changing: for `WaitFor` and
    /// `Watch` (module `presence`).
    pub(crate) presence: Arc<crate::presence::Presence>,
}

/// A descriptor for `control` to send to a client: a new open file description of the same
/// memfd (so that the client's participant lock is its own, visible to the daemon and the
/// keeper), or, without `/proc`, a duplicate of the daemon's own.
///
/// The daemon takes the participant lock on the new description itself, before sending it:
/// the lock belongs to the description, which the client then holds, so the state counts as
/// in use from the moment it leaves the daemon (a client stopped between receiving it and
/// locking it, or one that never locks, is not invisible), and the kernel drops the lock
/// when the client lets go of it (or when the send fails and the daemon closes its copy).
///
/// Without a reopen (no `/proc`, or out of descriptors) there is none: a duplicate would
/// share the daemon's own description, where the client's locks (its participant lock, a
/// subscriber's record lock) are the daemon's own and invisible to it. An array is then
/// served without control state (its waits re-check every 50 ms); a stream is refused.
pub(crate) fn client_control(control: &File) -> Option<File> {
    let own = mmshare::internal::reopen(control).ok()?;
    let _ = mmshare::internal::hold_participant_lock(&own);
    Some(own)
}

/// Marks a data descriptor about to be sent to a client as in use, on the client's own open
/// file description, before it leaves the daemon (as [`client_control`] does for control
/// state): the object is not closed as unused, nor a deleted object's bytes refunded, in the
/// moment before the client maps it and takes the lock itself.
pub(crate) fn client_data(data: File) -> File {
    let _ = mmshare::internal::hold_participant_lock(&data);
    data
}

/// What a permission check is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// Open for reading, stat, list.
    Read,
    /// Open for writing, delete.
    Write,
}

/// Unix-style check: root and the owner always pass; others need the group or other bit.
pub fn permits(header: &Header, who: Creds, perm: Perm) -> bool {
    if who.uid == 0 || who.uid == header.owner_uid {
        return true;
    }
    let bits = if who.gid == header.owner_gid {
        (header.mode >> 3) & 7
    } else {
        header.mode & 7
    };
    let need = match perm {
        Perm::Read => 4,
        Perm::Write => 2,
    };
    bits & need != 0
}

/// How long a write may sit at an odd sequence with no writer recorded before the daemon
/// concludes the writer died between taking the lock and recording itself.
const UNIDENTIFIED_GRACE: Duration = Duration::from_secs(2);

fn not_found(name: &str) -> RequestError {
    RequestError::new(ErrorKind::NotFound, format!("no array named {name:?}"))
}

/// Whether `who` may know that the object with `header` exists at all: its owner, root, and
/// whoever the mode lets read it. Everyone else is answered exactly as for a name that does
/// not exist (docs/SECURITY.md, "Names").
pub(crate) fn visible(header: &Header, who: Creds) -> bool {
    permits(header, who, Perm::Read)
}

/// Whether `who` owns the object with `header` (root counts as every owner). Only an owner's
/// `exist_ok` create adopts an existing object.
pub(crate) fn owns(header: &Header, who: Creds) -> bool {
    who.uid == 0 || who.uid == header.owner_uid
}

/// Whether `who` may see the daemon's own paths (in `path` fields and messages): the
/// daemon's uid and root, the only users who could open them anyway.
pub(crate) fn sees_paths(who: Creds) -> bool {
    who.uid == 0 || who.uid == rustix::process::geteuid().as_raw()
}

/// A create of `name` that another user's object already holds, as `who` is told it: with
/// no detail of that object unless `who` may read it.
pub(crate) fn name_taken(name: &str, header: &Header, who: Creds, what: &str) -> RequestError {
    let message = if visible(header, who) {
        format!(
            "{name:?} is taken: {what} of uid {} (mode {:#o}) exists under that name, and only \
             its owner's exist_ok create adopts it",
            header.owner_uid, header.mode
        )
    } else {
        format!("the name {name:?} is taken by an object of another user")
    };
    RequestError::new(ErrorKind::AlreadyExists, message)
}

fn denied(name: &str, who: Creds, what: &str, header: &Header) -> RequestError {
    warn!(
        name,
        uid = who.uid,
        gid = who.gid,
        pid = who.pid,
        what,
        "permission denied"
    );
    RequestError::new(
        ErrorKind::PermissionDenied,
        format!(
            "uid {} (gid {}) may not {what} array {name:?} (owner {}:{}, mode {:#o})",
            who.uid, who.gid, header.owner_uid, header.owner_gid, header.mode
        ),
    )
}

/// NoSpace for `what` ("array" or "stream") `name`, whose file needs `needed` bytes (header
/// page, data or slots, padded, and `records` bytes of an array's extension records) in
/// `dir`, naming the limit that was hit: the free space,
/// or else the filesystem's largest file size. The directory is named only to `who` that
/// [`sees_paths`]; others read "the memory directory" or "the storage directory".
fn no_space(
    what: &str,
    name: &str,
    needed: u64,
    records: u64,
    dir: &Path,
    backing: Backing,
    who: Creds,
) -> RequestError {
    let free = rustix::fs::statvfs(dir)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
    let place = if sees_paths(who) {
        dir.display().to_string()
    } else {
        match backing {
            Backing::Memory => "the daemon's memory directory".to_owned(),
            Backing::File => "the daemon's storage directory".to_owned(),
        }
    };
    let file = match what {
        "stream" => format!("its data file needs {needed} bytes (4096-byte header + its slots)"),
        _ if records > 0 => format!(
            "its file needs {needed} bytes (4096-byte header + data padded to 8 bytes + {records} bytes of extension records)"
        ),
        _ => format!("its file needs {needed} bytes (4096-byte header + data padded to 8 bytes)"),
    };
    let message = match free {
        Some(free) if free < needed => format!(
            "no space for {what} {name:?}: {file}, but the filesystem of {place} has {free} bytes free"
        ),
        Some(free) => format!(
            "{what} {name:?} cannot be made: {file}, more than the filesystem of {place} allows for one file or than the daemon's disk quota allows ({free} bytes free)"
        ),
        None => format!("no space for {what} {name:?}: {file} in {place}"),
    };
    RequestError::new(ErrorKind::NoSpace, message)
}

fn internal(context: &str, err: impl std::fmt::Display) -> RequestError {
    error!("{context}: {err}");
    RequestError::new(ErrorKind::Internal, format!("{context}: {err}"))
}

/// The daemon's descriptor limit: (soft, hard).
pub(crate) fn descriptor_limit() -> (u64, u64) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (
        limit.current.unwrap_or(u64::MAX),
        limit.maximum.unwrap_or(u64::MAX),
    )
}

/// The error for `what` `name` that the daemon could not open because of `e`: Busy, naming
/// the resource, when the daemon is out of descriptors or memory (a passing state; the
/// client may try again); NotFound when its file is gone; else Internal.
pub(crate) fn open_failed(what: &str, name: &str, e: io::Error) -> RequestError {
    let errno = e.raw_os_error();
    use rustix::io::Errno;
    if errno == Some(Errno::MFILE.raw_os_error()) || errno == Some(Errno::NFILE.raw_os_error()) {
        let (limit, _) = descriptor_limit();
        warn!(name, "out of file descriptors: {e}");
        return RequestError::new(
            ErrorKind::Busy,
            format!(
                "cannot open {what} {name:?} now: the daemon is out of file descriptors ({e}; \
                 RLIMIT_NOFILE {limit}); try again later"
            ),
        );
    }
    if errno == Some(Errno::NOMEM.raw_os_error()) {
        warn!(name, "out of memory: {e}");
        return RequestError::new(
            ErrorKind::Busy,
            format!("cannot open {what} {name:?} now: the daemon is out of memory ({e})"),
        );
    }
    if e.kind() == io::ErrorKind::NotFound {
        return RequestError::new(ErrorKind::NotFound, format!("no {what} named {name:?}"));
    }
    internal(&format!("cannot open {what} {name:?}"), e)
}

/// Checks that `dir` is a directory of the daemon's own (not a symlink, owned by its
/// effective uid: `/dev/shm` and `/tmp` are writable by all, and a planted
/// `/dev/shm/mmshare-$UID` must not receive or redirect the daemon's files) and makes it 0700,
/// so only the daemon lists it. It creates nothing: `Config::prepare_paths` made the
/// directories, with the same checks, before the registry is loaded.
pub(crate) fn prepare_dir(dir: &Path) -> io::Result<()> {
    let own = crate::dirs::open_own(dir).map_err(|e| match e {
        crate::dirs::DirError::Io(e) => e,
        e => io::Error::other(e.explain(dir)),
    })?;
    own.make_private()
}

/// Locks `m`. A panic while holding one of the registry's locks cannot leave it inconsistent
/// in a way that matters more than stopping service would; keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// Prepares both directories and rebuilds the registry from them.
    ///
    /// Leftover temporary files of interrupted creates are removed; files whose header does
    /// not validate are renamed aside with a `.corrupt` suffix and logged, never served and
    /// never deleted.
    ///
    /// # Errors
    /// A directory cannot be created or read.
    ///
    /// Each object's control state is taken from what `keeper` handed over when it still fits
    /// the object (the state of a daemon that ran before, which live participants may be
    /// using), else made fresh; the keeper is then told of every one, and forgets the rest.
    pub fn load(
        file_dir: PathBuf,
        mem_dir: PathBuf,
        limits: Limits,
        keeper: Option<(Keeper, BTreeMap<String, File>)>,
    ) -> io::Result<Registry> {
        prepare_dir(&file_dir)?;
        prepare_dir(&mem_dir)?;
        let (keeper, held) = match keeper {
            Some((k, held)) => (Some(k), held),
            None => (None, BTreeMap::new()),
        };
        let registry = Registry {
            file_dir,
            mem_dir,
            limits,
            state: Mutex::new(State::default()),
            keeper: Mutex::new(keeper),
            adoptable: Mutex::new(held),
            refill: AtomicBool::new(false),
            budget: Budget::new(limits.max_open_objects),
            sweep_from: Mutex::new(String::new()),
            loading: AtomicBool::new(true),
            presence: Arc::new(crate::presence::Presence::new()),
        };
        {
            let mut state = registry.lock();
            registry.scan(Backing::File, &mut state)?;
            registry.scan(Backing::Memory, &mut state)?;
            info!(
                arrays = state.arrays.len(),
                streams = state.streams.len(),
                bytes = state.bytes,
                open = registry.budget.open(),
                "registry loaded"
            );
        }
        // State the keeper holds for an object that could not be opened at start stays
        // adoptable (its next open takes it: participants still use it); state of objects
        // that are gone is forgotten.
        let known: HashSet<String> = {
            let state = registry.lock();
            let arrays = state.arrays.values().map(|e| e.key());
            arrays
                .chain(state.streams.values().flat_map(|e| e.keys()))
                .collect()
        };
        let stale: Vec<String> = {
            let mut adoptable = lock(&registry.adoptable);
            let stale: Vec<String> = adoptable
                .keys()
                .filter(|k| !known.contains(*k))
                .cloned()
                .collect();
            for key in &stale {
                adoptable.remove(key);
            }
            stale
        };
        if let Some(k) = lock(&registry.keeper).as_mut() {
            for key in &stale {
                let _ = k.forget(key);
            }
        }
        registry.loading.store(false, Ordering::Relaxed);
        registry.keep_everything();
        Ok(registry)
    }

    /// The control state for the object `key` found at start: the keeper's copy when it is
    /// still sound (sealed, and `fits`: the size and layout this object needs), else `make()`.
    fn control_for(
        &self,
        key: &str,
        fits: impl Fn(&File) -> bool,
        make: impl FnOnce() -> io::Result<File>,
    ) -> io::Result<File> {
        if let Some(held) = lock(&self.adoptable).remove(key) {
            if mmshare::internal::is_sealed(&held) && fits(&held) {
                info!(
                    key,
                    "kept the control state a previous daemon left with the keeper"
                );
                return Ok(held);
            }
            warn!(
                key,
                "the keeper's control state does not fit the object: made afresh"
            );
        }
        make()
    }

    /// Gives the keeper the control state of every object the daemon holds open.
    fn keep_everything(&self) {
        let (arrays, streams) = {
            let state = self.lock();
            let arrays: Vec<Arc<Entry>> = state.arrays.values().cloned().collect();
            let streams: Vec<Arc<StreamEntry>> = state.streams.values().cloned().collect();
            (arrays, streams)
        };
        let arrays = arrays
            .iter()
            .filter_map(|e| Some((e.key(), e.open_state()?)))
            .collect::<Vec<_>>();
        let streams = streams
            .iter()
            .filter_map(|e| Some((e.keys(), e.open_state()?)))
            .collect::<Vec<_>>();
        if let Some(k) = lock(&self.keeper).as_mut() {
            let arrays = arrays.iter().map(|(key, o)| (key.clone(), &o.control));
            let streams = streams.iter().flat_map(|(keys, o)| {
                keys.iter()
                    .cloned()
                    .zip(o.lanes().map(mmshare::StreamFiles::control_file))
            });
            k.keep_all(arrays.chain(streams));
        }
    }

    /// Tells the keeper to hold `control` under `key`; a keeper that had gone (and was
    /// started again) is given everything at the next periodic check.
    pub(crate) fn keep(&self, key: &str, control: &File) {
        match lock(&self.keeper).as_mut().map(|k| k.keep(key, control)) {
            None | Some(Ok(())) => {}
            Some(Err(e)) if e.kind() == io::ErrorKind::NotConnected => {
                self.refill.store(true, Ordering::Relaxed);
            }
            Some(Err(e)) => warn!(
                key,
                "cannot hand control state to the descriptor keeper: {e}"
            ),
        }
    }

    /// `message` with the daemon's directories named instead of shown: for replies to users
    /// other than root and the daemon's own uid (an I/O error can carry a path).
    pub(crate) fn scrub(&self, message: &str) -> String {
        message
            .replace(
                &self.mem_dir.display().to_string(),
                "<the daemon's memory directory>",
            )
            .replace(
                &self.file_dir.display().to_string(),
                "<the daemon's storage directory>",
            )
    }

    /// Takes an array whose file is gone from its name out of the registry: its charge stays
    /// while processes still map it (`data`, a descriptor of its file taken before the name
    /// went: [`State::retire`]), and the keeper forgets its control state. Processes that map
    /// it keep their mapping (and its control state); a new array of this name gets new ones.
    fn unregister_array(
        &self,
        mut state: MutexGuard<'_, State>,
        entry: &Entry,
        data: Option<File>,
    ) {
        let name = &entry.header.name;
        state.arrays.remove(name);
        self.presence.deleted(&entry.header);
        state.unidentified.retain(|(n, _), _| n != name);
        state.recoveries.remove(name);
        let bytes = array_bytes(&entry.header);
        match data {
            Some(data) => state.retire(
                &data,
                self.budget.take(self.limits.daemon_uid, None).ok(),
                entry.header.owner_uid,
                entry.backing,
                bytes,
            ),
            None => state.refund(entry.header.owner_uid, entry.backing, bytes),
        }
        drop(state);
        self.forget(&entry.key());
    }

    /// A descriptor of `entry`'s file, for [`Registry::unregister_array`]: the daemon's own
    /// while it holds the array open, else one opened for it.
    fn data_of(entry: &Entry) -> Option<File> {
        match entry.open_state() {
            Some(open) => open.raw.file().try_clone().ok(),
            None => entry.open_file(false).ok(),
        }
    }

    /// Restarts and refills a descriptor keeper that went away (run with the periodic check,
    /// so that state made meanwhile is never missing from it for long).
    fn check_keeper(&self) {
        let restarted = lock(&self.keeper).as_mut().is_some_and(Keeper::check);
        if restarted | self.refill.swap(false, Ordering::Relaxed) {
            self.keep_everything();
        }
    }

    /// Tells the keeper to drop `key`.
    pub(crate) fn forget(&self, key: &str) {
        if let Some(Err(e)) = lock(&self.keeper).as_mut().map(|k| k.forget(key))
            && e.kind() == io::ErrorKind::NotConnected
        {
            self.refill.store(true, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn dir(&self, backing: Backing) -> &Path {
        match backing {
            Backing::File => &self.file_dir,
            Backing::Memory => &self.mem_dir,
        }
    }

    fn scan(&self, backing: Backing, state: &mut State) -> io::Result<()> {
        let dir = self.dir(backing).to_owned();
        for item in std::fs::read_dir(&dir)? {
            let item = item?;
            let path = item.path();
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                warn!(path = %path.display(), "ignoring a file whose name is not UTF-8");
                continue;
            };
            if name.starts_with(TEMP_PREFIX) {
                let removed = if item.file_type()?.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                match removed {
                    Ok(()) => {
                        info!(path = %path.display(), "removed the temp file of an interrupted create")
                    }
                    Err(e) => warn!(path = %path.display(), "cannot remove temp file: {e}"),
                }
                continue;
            }
            if name == CONTROL_DIR {
                // Control files of an older daemon: control state is in sealed memfds now.
                // Processes that still map these keep working on them.
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {
                        info!(path = %path.display(), "removed an older daemon's control files")
                    }
                    Err(e) => warn!(path = %path.display(), "cannot remove old control files: {e}"),
                }
                continue;
            }
            if name.ends_with(".corrupt") || name == ".mmshared.lock" || name == keeper::SOCKET_NAME
            {
                continue;
            }
            if validate_name(&name).is_ok() && item.file_type()?.is_dir() {
                self.scan_stream(backing, name, path, state);
                continue;
            }
            if validate_name(&name).is_err() || !item.file_type()?.is_file() {
                warn!(path = %path.display(), "ignoring a file that is not an array");
                continue;
            }
            // Validated in full (a read-only mapping made for the check, then let go): the
            // daemon holds nothing open of an array until someone uses it.
            let opened = open_array_file(&path).and_then(|file| {
                let id = file_id(&file).map_err(|source| OpenError::Io {
                    path: path.clone(),
                    source,
                })?;
                let raw = RawArray::from_file(file, Access::Read)?;
                Ok((raw.header().clone(), id, raw.write_in_progress()))
            });
            let (header, id, mid_write) = match opened {
                Ok(x) => x,
                Err(OpenError::Format { source, .. }) if from_a_newer_version(&source) => {
                    error!(path = %path.display(), "not serving a file of a newer mmshare (left in place): {source}");
                    continue;
                }
                Err(OpenError::Format { source, .. }) => {
                    quarantine(&path, &source.to_string());
                    continue;
                }
                Err(e) => {
                    error!(path = %path.display(), "cannot open array file, not serving it: {e}");
                    continue;
                }
            };
            if header.name != name {
                quarantine(&path, &format!("its header names it {:?}", header.name));
                continue;
            }
            if state.arrays.contains_key(&name) || state.streams.contains_key(&name) {
                quarantine(
                    &path,
                    "an array of the same name exists in the other directory",
                );
                continue;
            }
            let entry = Entry::new(header, backing, path.clone(), id);
            // Opened now only if in use: the keeper kept its control state for participants
            // of the daemon that ran before, or a write was cut short (recovered next).
            if mid_write || lock(&self.adoptable).contains_key(&entry.key()) {
                let mut slot = entry.held.lock();
                if let Err(e) = self.open_array(&entry, &mut slot, self.limits.daemon_uid) {
                    warn!(name, "cannot open an array in use: {}", e.message);
                }
            }
            state.charge(entry.header.owner_uid, backing, array_bytes(&entry.header));
            state.arrays.insert(name, Arc::new(entry));
        }
        Ok(())
    }

    /// The open state of `entry`, opening it if it is not (`slot` is its slot, locked): its
    /// file mapped read-write, and its control state (the keeper's copy from before a restart
    /// when that still fits, else fresh), handed to the keeper.
    ///
    /// # Errors
    /// Busy when the daemon holds as many objects open as it may or is out of descriptors;
    /// NotFound when the file is gone; Internal.
    fn open_array(
        &self,
        entry: &Entry,
        slot: &mut Option<Arc<ArrayOpen>>,
        uid: u32,
    ) -> Result<Arc<ArrayOpen>, RequestError> {
        if let Some(open) = slot {
            return Ok(open.clone());
        }
        let name = &entry.header.name;
        let place = self.place("array", name, uid)?;
        let failed = |e: io::Error| open_failed("array", name, e);
        let file = fault_step(FaultStep::OpenData)
            .and_then(|()| entry.open_file(true))
            .map_err(failed)?;
        let key = entry.key();
        let control = fault_step(FaultStep::MakeControl)
            .and_then(|()| {
                self.control_for(
                    &key,
                    |f| is_array_control(f) && f.metadata().is_ok_and(|m| m.len() == 4096),
                    || new_array_control(name),
                )
            })
            .map_err(failed)?;
        let mapped_control = control.try_clone().map_err(failed)?;
        fault_step(FaultStep::Map).map_err(failed)?;
        let raw =
            RawArray::from_files(file, Some(mapped_control), Access::Write).map_err(
                |e| match e {
                    OpenError::Io { source, .. } => failed(source),
                    other => internal("cannot map array", other),
                },
            )?;
        self.keep(&key, &control);
        let open = Arc::new(ArrayOpen {
            raw,
            control,
            _place: place,
        });
        *slot = Some(open.clone());
        Ok(open)
    }

    /// Closes `entry` (its slot `slot`, locked) if nobody uses it and it is whole and between
    /// writes; returns whether it did.
    fn close_array_if_unused(&self, entry: &Entry, slot: &mut Option<Arc<ArrayOpen>>) -> bool {
        let Some(open) = slot.as_ref() else {
            return false;
        };
        if !held::unused(open, ArrayOpen::in_use)
            || !open.intact(&entry.header)
            || open.raw.write_in_progress()
        {
            return false;
        }
        *slot = None;
        self.forget(&entry.key());
        true
    }

    /// A place in the budget of open objects for `what` `name`, opened for a request of
    /// `uid`; when none is left, closes what nobody uses first. A uid other than the daemon's
    /// own and root may cause at most `--user-share` percent of the places to be taken, and
    /// all such users together what `--reserve` leaves them, so that no user can take every
    /// place by holding objects open.
    ///
    /// # Errors
    /// Busy, naming the numbers, when every place is taken by an object in use;
    /// QuotaExceeded, naming the share, when the user's (or the users') share is.
    fn place(&self, what: &str, name: &str, uid: u32) -> Result<Token, RequestError> {
        if self.loading.load(Ordering::Relaxed) {
            return Ok(self.budget.take_over(uid));
        }
        let max = self.budget.max();
        let share = (!self.limits.privileged(uid)).then(|| Share {
            per_user: (percent(max as u64, self.limits.user_share) as usize).max(1),
            together: (percent(max as u64, 100u32.saturating_sub(self.limits.reserve)) as usize)
                .max(1),
        });
        let refused = match self.budget.take(uid, share) {
            Ok(place) => return Ok(place),
            Err(_) => {
                self.close_unused();
                match self.budget.take(uid, share) {
                    Ok(place) => return Ok(place),
                    Err(refused) => refused,
                }
            }
        };
        let (limit, _) = descriptor_limit();
        let cannot = format!("cannot open {what} {name:?} now");
        Err(match refused {
            Refused::Full => RequestError::new(
                ErrorKind::Busy,
                format!(
                    "{cannot}: the daemon holds {} objects open for their users, all that its \
                     descriptor limit (RLIMIT_NOFILE {limit}) allows ({max} at once); try again \
                     once some are closed",
                    self.budget.open(),
                ),
            ),
            Refused::User { holds, cap } => RequestError::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "{cannot}: uid {uid} already has {holds} objects held open by the daemon, \
                     its share of the {max} it may hold at once (--user-share {}%: {cap}); \
                     close some",
                    self.limits.user_share
                ),
            ),
            Refused::Together { holds: _, cap } => RequestError::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "{cannot}: users other than the daemon's own and root already have all the \
                     open objects that --reserve {}% of the {max} the daemon may hold at once \
                     leaves them ({cap}); try again later",
                    self.limits.reserve
                ),
            ),
        })
    }

    /// Closes every object nobody uses (skipping any whose slot is busy right now).
    fn close_unused(&self) -> usize {
        let (arrays, streams) = {
            let state = self.lock();
            let arrays: Vec<Arc<Entry>> = state.arrays.values().cloned().collect();
            let streams: Vec<Arc<StreamEntry>> = state.streams.values().cloned().collect();
            (arrays, streams)
        };
        let mut closed = 0;
        for e in arrays {
            if let Some(mut slot) = e.held.try_lock()
                && self.close_array_if_unused(&e, &mut slot)
            {
                closed += 1;
            }
        }
        for e in streams {
            if let Some(mut slot) = e.held.try_lock()
                && self.close_stream_if_unused(&e, &mut slot)
            {
                closed += 1;
            }
        }
        closed
    }

    /// Number of arrays served.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.lock().arrays.len()
    }

    /// What counts against the limits (checked by the fuzzing harness): arrays and streams,
    /// names being created, bytes, and per owner uid its bytes (file, memory) and objects.
    pub(crate) fn usage(&self) -> (usize, usize, u64, Vec<UidUsage>) {
        let state = self.lock();
        let objects = state.arrays.len() + state.streams.len();
        let per_uid = state
            .usage
            .iter()
            .map(|(uid, u)| (*uid, u.bytes, u.objects));
        (objects, state.pending.len(), state.bytes, per_uid.collect())
    }

    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.lock().arrays.get(name).cloned()
    }

    /// The array `name` as `who` may know it: an object `who` may not read is answered as a
    /// name that does not exist.
    fn lookup(&self, name: &str, who: Creds) -> Result<Arc<Entry>, RequestError> {
        validate_name(name)
            .map_err(|e| RequestError::new(ErrorKind::InvalidName, e.to_string()))?;
        let state = self.lock();
        if let Some(entry) = state.arrays.get(name) {
            if !visible(&entry.header, who) {
                return Err(not_found(name));
            }
            return Ok(entry.clone());
        }
        if let Some(stream) = state.streams.get(name)
            && visible(&stream.header, who)
        {
            return Err(RequestError::new(
                ErrorKind::WrongKind,
                format!("{name:?} is a stream, not an array: subscribe to it or publish to it"),
            ));
        }
        Err(not_found(name))
    }

    /// Creates an array owned by `who` and returns its description and a read-write file.
    ///
    /// # Errors
    /// InvalidName, InvalidDtype, InvalidShape, ProtocolError (mode), AlreadyExists,
    /// QuotaExceeded, NoSpace, Internal; nothing is left behind on any of them.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        who: Creds,
        name: &str,
        dtype: &str,
        shape: &[u64],
        order: WireOrder,
        backing: Backing,
        mode: u32,
        exist_ok: bool,
        stripes: u32,
        sparse: bool,
    ) -> Result<(ArrayInfo, File, Option<File>), RequestError> {
        validate_name(name)
            .map_err(|e| RequestError::new(ErrorKind::InvalidName, e.to_string()))?;
        let dtype = DType::parse(dtype)
            .map_err(|e| RequestError::new(ErrorKind::InvalidDtype, e.to_string()))?;
        let len = data_len(&dtype, shape)
            .map_err(|e| RequestError::new(ErrorKind::InvalidShape, e.to_string()))?;
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
        if stripes > MAX_STRIPES {
            return Err(RequestError::new(
                ErrorKind::InvalidShape,
                format!("{stripes} stripes asked for; an array has at most {MAX_STRIPES}"),
            ));
        }
        if sparse && backing == Backing::Memory {
            return Err(RequestError::new(
                ErrorKind::InvalidShape,
                format!(
                    "array {name:?} cannot be sparse in memory: reading a page it never wrote takes memory, and on a full memory directory that kills the reader; make it file-backed, or not sparse"
                ),
            ));
        }
        let mut spec = ArraySpec::new("x", dtype.clone(), shape.to_vec());
        spec.order = order;
        spec.sparse = sparse;
        spec.stripes = match stripes {
            0 => default_stripes(len),
            n => n,
        };
        // The daemon's own choice never makes an array too large: the largest arrays, whose
        // stripe record would not fit in a file, get one sequence.
        if stripes == 0 && matches!(Header::new(&spec), Err(FormatError::ArrayTooLarge { .. })) {
            spec.stripes = 1;
        }
        let stripes = spec.stripes;
        let file_len = Header::new(&spec).map(|h| array_bytes(&h)).unwrap_or(len);
        let wait_until = Instant::now() + Duration::from_secs(5);
        loop {
            let mut state = self.lock();
            if let Some(stream) = state.streams.get(name) {
                if !visible(&stream.header, who) {
                    return Err(name_taken(name, &stream.header, who, "a stream"));
                }
                return Err(RequestError::new(
                    ErrorKind::AlreadyExists,
                    format!("a stream named {name:?} exists; arrays and streams share names"),
                ));
            }
            if let Some(existing) = state.arrays.get(name).cloned() {
                drop(state);
                let h = &existing.header;
                if !visible(h, who) {
                    return Err(name_taken(name, h, who, "an array"));
                }
                let same = h.dtype == dtype
                    && h.shape == shape
                    && h.order == order
                    && existing.backing == backing;
                if exist_ok && same {
                    // Only the owner adopts: another user's object under this name (created
                    // first, perhaps on purpose) is never taken for one's own.
                    if !owns(h, who) {
                        return Err(name_taken(name, h, who, "an array"));
                    }
                    match self.open(who, name, OpenAccess::Write) {
                        // Deleted between the lookup and the open: create it after all.
                        Err(e) if e.kind == ErrorKind::NotFound && Instant::now() < wait_until => {
                            continue;
                        }
                        other => return other,
                    }
                }
                let describe = |dtype: &DType, shape: &[u64], order: Order, backing: Backing| {
                    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
                    let dims = match dims.as_slice() {
                        [one] => format!("({one},)"),
                        _ => format!("({})", dims.join(", ")),
                    };
                    let place = match backing {
                        Backing::File => "in a file",
                        Backing::Memory => "in memory",
                    };
                    format!("{} {dims} order {order} {place}", dtype.descr())
                };
                let have = describe(&h.dtype, &h.shape, h.order, existing.backing);
                let message = if exist_ok {
                    format!(
                        "array {name:?} already exists as {have}, not {}; delete it first or ask for the same",
                        describe(&dtype, shape, order, backing)
                    )
                } else {
                    format!("array {name:?} already exists ({have})")
                };
                return Err(RequestError::new(ErrorKind::AlreadyExists, message));
            }
            if state.pending.contains(name) && exist_ok && Instant::now() < wait_until {
                // Another client is creating it right now: with exist_ok, wait for that create
                // to finish and then take its result, instead of failing a race it should win.
                drop(state);
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            self.reserve(&mut state, who, backing, "array", name, file_len)?;
            break;
        }
        let result = self
            .create_file(
                who, name, dtype, shape, order, backing, mode, stripes, sparse,
            )
            .and_then(|entry| {
                // The client's descriptors are made before the array is visible (nothing can
                // close it in between: the participant lock the daemon takes on the client's
                // copy of the control state keeps it open), and a failure takes it away again.
                let handed = fault_step(FaultStep::ClientFiles)
                    .and_then(|()| entry.open_file(true))
                    .map(|file| {
                        let control = entry.open_state().and_then(|o| client_control(&o.control));
                        (client_data(file), control)
                    })
                    .map_err(|e| open_failed("array", name, e));
                match handed {
                    Ok(files) => Ok((entry, files)),
                    Err(e) => {
                        let _ = std::fs::remove_file(&entry.path);
                        self.forget(&entry.key());
                        Err(e)
                    }
                }
            });
        let mut state = self.lock();
        state.pending.remove(name);
        match result {
            Ok((entry, (file, control))) => {
                let info = entry.info();
                self.presence.created(&entry.header, false);
                state.arrays.insert(name.to_owned(), entry);
                drop(state);
                info!(name, uid = who.uid, bytes = len, ?backing, "created");
                Ok((info, file, control))
            }
            Err(e) => {
                state.refund(who.uid, backing, file_len);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create_file(
        &self,
        who: Creds,
        name: &str,
        dtype: DType,
        shape: &[u64],
        order: Order,
        backing: Backing,
        mode: u32,
        stripes: u32,
        sparse: bool,
    ) -> Result<Arc<Entry>, RequestError> {
        let spec = ArraySpec {
            name: name.to_owned(),
            dtype,
            shape: shape.to_vec(),
            order,
            owner_uid: who.uid,
            owner_gid: who.gid,
            mode,
            stripes,
            sparse,
        };
        let dir = self.dir(backing);
        let (path, header) = create_array_data(dir, &spec).map_err(|e| match e {
            CreateError::Invalid(FormatError::BadName(n)) => {
                RequestError::new(ErrorKind::InvalidName, n.to_string())
            }
            CreateError::Invalid(other) => {
                RequestError::new(ErrorKind::InvalidShape, other.to_string())
            }
            CreateError::AlreadyExists(p) => RequestError::new(
                ErrorKind::AlreadyExists,
                format!("a file for {name:?} already exists at {}", p.display()),
            ),
            CreateError::NoSpace { needed, dir } => {
                // What is not header or data: the extension records (a striped array's
                // stripe size, a record dtype's descr).
                let data = data_len(&spec.dtype, &spec.shape).map_or(0, |n| n.next_multiple_of(8));
                let records = needed.saturating_sub(4096 + data);
                no_space("array", name, needed, records, &dir, backing, who)
            }
            CreateError::Io { source, .. } => open_failed("array", name, source),
            CreateError::SparseInMemory { .. } => RequestError::new(
                ErrorKind::InvalidShape,
                format!(
                    "array {name:?} cannot be sparse in memory: reading a page it never wrote takes memory, and on a full memory directory that kills the reader; make it file-backed, or not sparse"
                ),
            ),
            other => RequestError::new(ErrorKind::Internal, other.to_string()),
        })?;
        // The file is visible under its name now; if it cannot be served, take it away again
        // rather than leave a name nobody can create or open until a restart.
        let opened = open_array_file(&path)
            .and_then(|file| {
                file_id(&file).map_err(|source| OpenError::Io {
                    path: path.clone(),
                    source,
                })
            })
            .map_err(|e| match e {
                OpenError::Io { source, .. } => open_failed("array", name, source),
                other => internal("cannot open the new array", other),
            })
            .and_then(|id| {
                let entry = Entry::new(header, backing, path.clone(), id);
                let mut slot = entry.held.lock();
                self.open_array(&entry, &mut slot, who.uid)?;
                drop(slot);
                Ok(entry)
            });
        match opened {
            Ok(entry) => Ok(Arc::new(entry)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Opens an array for `who` and returns its description and a file opened read-only or
    /// read-write, as asked.
    ///
    /// # Errors
    /// InvalidName, NotFound, PermissionDenied, Internal.
    pub fn open(
        &self,
        who: Creds,
        name: &str,
        access: OpenAccess,
    ) -> Result<(ArrayInfo, File, Option<File>), RequestError> {
        let entry = self.lookup(name, who)?;
        let (perm, what) = match access {
            OpenAccess::Read => (Perm::Read, "read"),
            OpenAccess::Write => (Perm::Write, "write"),
        };
        if !permits(&entry.header, who, perm) {
            return Err(denied(name, who, what, &entry.header));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(access == OpenAccess::Write)
            .open(&entry.path)
            .map_err(|e| open_failed("array", name, e))?; // NotFound: deleted meanwhile
        // The permission check was made on `entry`; make sure the file is that array and not a
        // new one created under the same name in between.
        if file_id(&file).ok() != Some(entry.id) {
            return Err(not_found(name));
        }
        // Under the slot's lock: the daemon's participant lock on the client's copy is taken
        // before anything can close the array as unused.
        let control = {
            let mut slot = entry.held.lock();
            let open = self.open_array(&entry, &mut slot, who.uid)?;
            client_control(&open.control)
        };
        Ok((entry.info(), client_data(file), control))
    }

    /// Describes an array (needs read permission).
    ///
    /// # Errors
    /// InvalidName, NotFound, PermissionDenied.
    pub fn stat(&self, who: Creds, name: &str) -> Result<ArrayInfo, RequestError> {
        // `lookup` answers NotFound for an array `who` may not read.
        Ok(self.lookup(name, who)?.info())
    }

    /// One page of the arrays `who` may read whose names start with `prefix`, after `after`;
    /// and whether more follow. Pages stay under the message size limit.
    pub fn list(&self, who: Creds, prefix: &str, after: Option<&str>) -> (Vec<ArrayInfo>, bool) {
        let entries: Vec<Arc<Entry>> = {
            let state = self.lock();
            let start = match after {
                Some(a) => std::ops::Bound::Excluded(a.to_owned()),
                None => std::ops::Bound::Included(prefix.to_owned()),
            };
            state
                .arrays
                .range((start, std::ops::Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix) || k.as_str() < prefix)
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, e)| e.clone())
                .collect()
        };
        // Room for the enum tag, the Vec length and the `more` flag.
        let budget = MAX_MESSAGE - 64;
        let mut used = 0;
        let mut page = Vec::new();
        for entry in entries
            .iter()
            .filter(|e| permits(&e.header, who, Perm::Read))
        {
            let info = entry.info();
            let size = mmshare::internal::proto::encode(&info).map_or(budget, |b| b.len());
            if used + size > budget {
                return (page, true);
            }
            used += size;
            page.push(info);
        }
        (page, false)
    }

    /// Deletes (unlinks) an array. Needs write permission (root and the owner always have it).
    ///
    /// # Errors
    /// InvalidName, NotFound, PermissionDenied, Internal.
    pub fn delete(&self, who: Creds, name: &str) -> Result<(), RequestError> {
        validate_name(name)
            .map_err(|e| RequestError::new(ErrorKind::InvalidName, e.to_string()))?;
        let state = self.lock();
        if let Some(stream) = state.streams.get(name).cloned() {
            drop(state);
            return self.delete_stream(who, stream);
        }
        let entry = state
            .arrays
            .get(name)
            .filter(|e| visible(&e.header, who))
            .cloned()
            .ok_or_else(|| not_found(name))?;
        drop(state);
        if !permits(&entry.header, who, Perm::Write) {
            return Err(denied(name, who, "delete", &entry.header));
        }
        // Taken before the name goes (and outside the registry's lock, as an object's lock is
        // never waited for under it): who still maps the file decides when its bytes are free.
        let data = Self::data_of(&entry);
        let state = self.lock();
        if !state
            .arrays
            .get(name)
            .is_some_and(|e| Arc::ptr_eq(e, &entry))
        {
            return Err(not_found(name)); // deleted by someone else meanwhile
        }
        match std::fs::remove_file(&entry.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal("cannot unlink array file", e)),
        }
        self.unregister_array(state, &entry, data);
        info!(name, uid = who.uid, "deleted");
        Ok(())
    }

    /// Reserves `name` and `bytes` (data and control state, apparent sizes) in `backing` for
    /// a create by `who` of a `what` ("array" or "stream") about to make its files outside the
    /// lock: refused while another client creates the same name, or past a limit (each refusal
    /// names the limit, its value and the usage): the daemon's totals (`--max-arrays`,
    /// `--max-bytes`), and for users other than the daemon's own and root, their own share
    /// (`--max-objects-per-user`, `--max-bytes-per-user` or `--user-share`) and, all of them
    /// together, what `--reserve` leaves them.
    fn reserve(
        &self,
        state: &mut State,
        who: Creds,
        backing: Backing,
        what: &str,
        name: &str,
        bytes: u64,
    ) -> Result<(), RequestError> {
        if state.pending.contains(name) {
            return Err(RequestError::new(
                ErrorKind::AlreadyExists,
                format!("{what} {name:?} is being created by another client"),
            ));
        }
        self.check_count(state, who)?;
        let quota = |message: String| Err(RequestError::new(ErrorKind::QuotaExceeded, message));
        let new_total = state.bytes.saturating_add(bytes);
        if let Some(max) = self.limits.max_bytes
            && new_total > max
        {
            return quota(format!(
                "{what} {name:?} needs {bytes} bytes; {} of --max-bytes {max} are in use",
                state.bytes
            ));
        }
        if !self.limits.privileged(who.uid) {
            let place = match backing {
                Backing::File => "files",
                Backing::Memory => "memory",
            };
            let (_, others) = state.backing_bytes(backing, &self.limits);
            // What the daemon could hold in this directory: the size of its filesystem (and,
            // with --max-bytes, no more than that). Not its free space: a limit that moved
            // with others' usage would tell every user how much the others hold.
            let room = self.room(backing);
            let mine = state
                .usage
                .get(&who.uid)
                .map_or(0, |u| u.bytes[backing_index(backing)]);
            let cap = self.user_byte_cap(backing);
            let rule = match self.limits.max_bytes_per_user {
                Some(cap) => format!("--max-bytes-per-user {cap}"),
                None => format!(
                    "--user-share {}% of the {room} bytes the daemon may hold in {place}",
                    self.limits.user_share
                ),
            };
            if mine.saturating_add(bytes) > cap {
                return quota(format!(
                    "{what} {name:?} needs {bytes} bytes in {place}; uid {} has {mine} there and may have {cap} ({rule})",
                    who.uid
                ));
            }
            let shared = percent(room, 100u32.saturating_sub(self.limits.reserve));
            if others.saturating_add(bytes) > shared {
                return quota(format!(
                    "{what} {name:?} needs {bytes} bytes in {place}, more than users other than the daemon's own and root may still have there together: {shared} in all (--reserve {}% of {room} is kept for the daemon's uid and root)",
                    self.limits.reserve
                ));
            }
        }
        state.pending.insert(name.to_owned());
        state.charge(who.uid, backing, bytes);
        Ok(())
    }

    /// What the daemon may hold in the directory of `backing`: the size of its filesystem (and,
    /// with --max-bytes, no more than that). Not its free space: a limit that moved with
    /// others' usage would tell every user how much the others hold.
    fn room(&self, backing: Backing) -> u64 {
        let room = rustix::fs::statvfs(self.dir(backing))
            .map(|s| s.f_blocks.saturating_mul(s.f_frsize))
            .unwrap_or(0);
        self.limits.max_bytes.map_or(room, |max| room.min(max))
    }

    /// The most bytes one user other than the daemon's own and root may have in the directory
    /// of `backing`.
    pub(crate) fn user_byte_cap(&self, backing: Backing) -> u64 {
        self.limits
            .max_bytes_per_user
            .unwrap_or_else(|| percent(self.room(backing), self.limits.user_share))
    }

    /// The limits the daemon enforces.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Everything the metrics endpoint shows about objects and users, read at scrape time:
    /// every object (streams with their subscribers), the recoveries of dead writers per
    /// array, per uid its bytes (file, memory) and objects, and the total bytes.
    pub(crate) fn metrics_snapshot(&self) -> MetricsSnapshot {
        let (arrays, streams, recoveries, usage, bytes) = {
            let state = self.lock();
            (
                state.arrays.values().cloned().collect::<Vec<_>>(),
                state.streams.values().cloned().collect::<Vec<_>>(),
                state.recoveries.clone(),
                state
                    .usage
                    .iter()
                    .map(|(uid, u)| (*uid, u.bytes, u.objects))
                    .collect(),
                state.bytes,
            )
        };
        // The infos outside the lock: an array's reads its mapping or its file.
        let objects = arrays
            .iter()
            .map(|e| ObjectInfo::Array(e.info()))
            .chain(streams.iter().map(|e| ObjectInfo::Stream(e.info(true))))
            .collect();
        MetricsSnapshot {
            objects,
            recoveries,
            usage,
            bytes,
        }
    }

    /// Refuses a new name when the daemon holds `--max-arrays` arrays and streams already, or
    /// when `who` (other than the daemon's uid and root) owns `--max-objects-per-user`, or
    /// those users together hold all that `--reserve` leaves them.
    fn check_count(&self, state: &State, who: Creds) -> Result<(), RequestError> {
        let quota = |message: String| Err(RequestError::new(ErrorKind::QuotaExceeded, message));
        let count = state.arrays.len() + state.streams.len() + state.pending.len();
        if count >= self.limits.max_arrays {
            return quota(format!(
                "the daemon already holds {count} arrays and streams (--max-arrays {})",
                self.limits.max_arrays
            ));
        }
        if self.limits.privileged(who.uid) {
            return Ok(());
        }
        let mine = state.usage.get(&who.uid).map_or(0, |u| u.objects);
        if mine >= self.limits.max_objects_per_user {
            return quota(format!(
                "uid {} already owns {mine} arrays and streams (--max-objects-per-user {})",
                who.uid, self.limits.max_objects_per_user
            ));
        }
        let others: usize = state
            .usage
            .iter()
            .filter(|(uid, _)| !self.limits.privileged(**uid))
            .map(|(_, u)| u.objects)
            .sum();
        let shared = percent(
            self.limits.max_arrays as u64,
            100u32.saturating_sub(self.limits.reserve),
        ) as usize;
        if others >= shared {
            return quota(format!(
                "users other than the daemon's own and root already own all the arrays and streams that --reserve {}% of --max-arrays {} leaves them ({shared})",
                self.limits.reserve, self.limits.max_arrays
            ));
        }
        Ok(())
    }

    /// Counts a connection that now holds write access to `name`.
    pub fn add_lease(&self, name: &str, pid: u32) {
        // The start time lets recovery recognise this process in a writer identity recorded in
        // another pid namespace (start times do not depend on the namespace; pids do).
        let who = ProcessId::read(pid).unwrap_or(ProcessId { pid, start_time: 0 });
        let foreign = in_foreign_pid_namespace(pid);
        self.lock()
            .leases
            .entry(name.to_owned())
            .or_default()
            .push(Lease { who, foreign });
    }

    /// Forgets the write access of a connection that closed.
    pub fn release_leases(&self, names: &[String], pid: u32) {
        let mut state = self.lock();
        for name in names {
            if let Some(holders) = state.leases.get_mut(name) {
                if let Some(i) = holders.iter().position(|h| h.who.pid == pid) {
                    holders.swap_remove(i);
                }
                if holders.is_empty() {
                    state.leases.remove(name);
                }
            }
        }
    }

    /// The liveness of a recorded writer of `name`, as the daemon judges it: what `/proc` and
    /// `kill(pid, 0)` say, except while a live process in another pid namespace holds a write
    /// lease on the array. Writers of that namespace record pids that mean nothing here (or
    /// name another process), so a writer those checks call dead is then `Alive` if it has the
    /// lease holder's start time (the holder itself: start times count clock ticks since boot
    /// in every namespace, pids do not), and `Unknown` otherwise: no positive evidence.
    fn judge(&self, name: &str, writer: ProcessId) -> Liveness {
        let own = writer.liveness();
        if own != Liveness::Dead {
            return own;
        }
        let low = |t: u64| t & 0xFFFF_FFFF;
        let holders = self.lock().leases.get(name).cloned().unwrap_or_default();
        let mut foreign_alive = holders
            .iter()
            .filter(|h| h.foreign && h.who.liveness() == Liveness::Alive);
        match foreign_alive.clone().next() {
            None => own,
            // The lease holder itself, seen through its own namespace's pid.
            Some(_)
                if foreign_alive.any(|h| {
                    h.who.start_time != 0 && low(h.who.start_time) == low(writer.start_time)
                }) =>
            {
                Liveness::Alive
            }
            // Some process of that namespace (a forked worker, say) whose pid means nothing
            // here: no positive evidence either way.
            Some(_) => Liveness::Unknown,
        }
    }

    /// Recovers every array whose writer died mid-write; run at start and periodically. Also
    /// stops serving arrays whose file was truncated under the daemon.
    ///
    /// A recorded writer that is positively dead (`Liveness::Dead`) is recovered whatever
    /// connections are open: a connected client may have forked the worker that died, and the
    /// client's lease says nothing about that worker. A write lease protects only what cannot
    /// be judged: a write whose writer is not yet recorded, which is taken over after
    /// `UNIDENTIFIED_GRACE` only while no connection holds write access (a stripe of a
    /// striped array whatever the leases: see `recover_stripe`). A recorded writer whose
    /// liveness is `Unknown` is never taken over.
    pub fn recover_all(&self) {
        self.check_keeper();
        self.lock().release_retired();
        self.reclaim_streams(None);
        let entries: Vec<(Arc<Entry>, bool)> = {
            let state = self.lock();
            state
                .arrays
                .values()
                .map(|e| (e.clone(), state.leases.contains_key(&e.header.name)))
                .collect()
        };
        for (entry, leased) in entries {
            // An array the daemon holds nothing open of has no user (or one the sweep below
            // finds): nothing to recover, but its size is checked as an open one's is (a
            // client may keep a read-write descriptor without a lock on it).
            let Some(open) = entry.open_state() else {
                self.check_closed_array(&entry);
                continue;
            };
            let name = &entry.header.name;
            cut_back(open.raw.file(), entry.header.file_len(), name);
            if !open.intact(&entry.header) {
                error!(name, path = %entry.path.display(), "array file was truncated by a writer: removed");
                let data = open.raw.file().try_clone().ok();
                let state = self.lock();
                if state
                    .arrays
                    .get(name)
                    .is_some_and(|e| Arc::ptr_eq(e, &entry))
                {
                    // Removed as Delete removes (the name is free again; processes that map
                    // the file keep what they have).
                    let _ = std::fs::remove_file(&entry.path);
                    self.unregister_array(state, &entry, data);
                }
                continue;
            }
            if open.raw.write_in_progress() {
                self.recover(name, &open.raw, None, leased);
            } else {
                self.lock().unidentified.retain(|(n, _), _| n != name);
            }
            if open.raw.heal_sleepers() {
                info!(
                    name,
                    "waiters that died asleep were taken out of the sleeper count"
                );
            }
            drop(open);
            if let Some(mut slot) = entry.held.try_lock() {
                self.close_array_if_unused(&entry, &mut slot);
            }
        }
        self.close_unused_streams();
        self.sweep();
    }

    /// The size check of an array the daemon holds nothing open of, by path (no descriptor
    /// unless there is something to do): a file grown past its size is cut back, a file cut
    /// short is removed as Delete removes it, as for open arrays.
    fn check_closed_array(&self, entry: &Arc<Entry>) {
        let Ok(meta) = std::fs::symlink_metadata(&entry.path) else {
            return;
        };
        if (meta.dev(), meta.ino()) != entry.id {
            return;
        }
        let len = entry.header.file_len();
        if meta.len() > len {
            if let Ok(file) = entry.open_file(true) {
                cut_back(&file, len, &entry.header.name);
            }
        } else if meta.len() < len {
            let name = &entry.header.name;
            error!(name, path = %entry.path.display(), "array file was truncated by a writer: removed");
            let data = entry.open_file(false).ok();
            let state = self.lock();
            if state
                .arrays
                .get(name)
                .is_some_and(|e| Arc::ptr_eq(e, entry))
            {
                let _ = std::fs::remove_file(&entry.path);
                self.unregister_array(state, entry, data);
            }
        }
    }

    /// Looks, a few arrays a pass, for users of arrays the daemon holds nothing open of: a
    /// process that opened one by path (as the daemon's own uid may) holds a participant lock
    /// on its file. Such an array is opened, so that a write its user leaves half-done is
    /// recovered as any other, and closed again once that user is gone.
    fn sweep(&self) {
        const PER_PASS: usize = 64;
        let from = lock(&self.sweep_from).clone();
        let batch: Vec<Arc<Entry>> = {
            let state = self.lock();
            let after = (std::ops::Bound::Excluded(from), std::ops::Bound::Unbounded);
            let mut batch: Vec<Arc<Entry>> = state
                .arrays
                .range(after)
                .take(PER_PASS)
                .map(|(_, e)| e.clone())
                .collect();
            if batch.is_empty() {
                batch = state.arrays.values().take(PER_PASS).cloned().collect();
            }
            batch
        };
        if let Some(last) = batch.last() {
            *lock(&self.sweep_from) = last.header.name.clone();
        }
        for entry in batch {
            if entry.open_state().is_some() {
                continue;
            }
            let used = entry
                .open_file(false)
                .is_ok_and(|f| mmshare::internal::has_participants(&f).unwrap_or(false));
            if used {
                let mut slot = entry.held.lock();
                if let Err(e) = self.open_array(&entry, &mut slot, self.limits.daemon_uid) {
                    warn!(
                        name = entry.header.name,
                        "an array in use by path cannot be opened: {}", e.message
                    );
                }
            }
        }
    }

    /// After a connection that had `names` open for writing closed: waits briefly for that
    /// process (`pid`) to finish exiting, and recovers any write it left half-done.
    pub fn recover_after_close(&self, names: &[String], pid: u32) {
        // One deadline for all of them: a client that left many arrays odd on purpose cannot
        // hold this blocking thread for long (the periodic check covers what is left).
        let deadline = Instant::now() + Duration::from_secs(2);
        if names.iter().any(|n| self.lock().streams.contains_key(n)) {
            self.reclaim_after_close(pid, deadline);
        }
        for name in names {
            let Some(open) = self.get(name).and_then(|e| e.open_state()) else {
                continue;
            };
            if !open.intact(open.raw.header()) {
                continue;
            }
            // Only stripes that process is recorded on: someone else's write, or one not yet
            // identified, is the periodic check's.
            let held_by_it = |raw: &RawArray| {
                (0..raw.stripes()).any(|k| {
                    raw.stripe_state(k)
                        .is_some_and(|(s, w)| s & 1 == 1 && w.is_some_and(|w| w.pid == pid))
                })
            };
            loop {
                if !held_by_it(&open.raw) {
                    break;
                }
                self.recover(name, &open.raw, Some(pid), true);
                if !held_by_it(&open.raw) {
                    break;
                }
                if Instant::now() >= deadline {
                    warn!(
                        name,
                        pid, "writer closed its connection mid-write but is still running"
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Recovers the array `name` (mapped by `raw`) where its recorded writer is positively
    /// dead, stripe by stripe on a striped array (stripe 0 of an array with one sequence is
    /// the array); only stripes recorded for `closed_pid` when it is given. Returns a
    /// recovery if one was made, else the first other outcome.
    fn recover(
        &self,
        name: &String,
        raw: &RawArray,
        closed_pid: Option<u32>,
        leased: bool,
    ) -> Option<Recovery> {
        let mut outcome = None;
        // The stripes recovered, per dead writer: one log line and one count each.
        let mut dead: Vec<(ProcessId, Vec<u64>, u64)> = Vec::new();
        for k in 0..raw.stripes() {
            let Some((s, writer)) = raw.stripe_state(k) else {
                break;
            };
            if s & 1 == 0 || closed_pid.is_some_and(|pid| writer.is_none_or(|w| w.pid != pid)) {
                continue;
            }
            match self.recover_stripe(name, raw, k, closed_pid, leased) {
                Some(r @ Recovery::Recovered { writer, version }) => {
                    match dead
                        .iter_mut()
                        .find(|(w, ..)| *w == writer && writer.pid != 0)
                    {
                        Some((_, stripes, last)) => {
                            stripes.push(k);
                            *last = version;
                        }
                        None => dead.push((writer, vec![k], version)),
                    }
                    outcome = Some(r);
                }
                other => outcome = outcome.or(other),
            }
        }
        for (writer, stripes, version) in dead {
            let stripes = raw.is_striped().then_some(stripes);
            if writer.pid == 0 {
                warn!(
                    name,
                    ?stripes,
                    version,
                    "a write stayed unidentified for 2 s: marked TORN and released"
                );
            } else {
                warn!(
                    name,
                    ?stripes,
                    writer_pid = writer.pid,
                    version,
                    "writer died mid-write: marked TORN and released"
                );
            }
            let mut state = self.lock();
            // Not for a name deleted meanwhile: a later array of that name starts at 0.
            if state.arrays.contains_key(name) {
                *state.recoveries.entry(name.clone()).or_default() += 1;
            }
        }
        // An unidentified stretch is over once its stripe is published.
        self.lock()
            .unidentified
            .retain(|(n, k), _| n != name || raw.stripe_state(*k).is_some_and(|(s, _)| s & 1 == 1));
        outcome
    }

    /// Recovers stripe `k` of the array `name` if its recorded writer is positively dead; with
    /// no writer recorded, takes it over once it has stayed so for `UNIDENTIFIED_GRACE` and,
    /// on an array with one sequence, no connection holds write access (`leased`). On a
    /// striped array several writers at once are the normal case, so a lease says nothing
    /// about which of them an unidentified stripe is: the grace period alone decides (a
    /// writer stopped in that window loses its write, and finds out when it records itself).
    fn recover_stripe(
        &self,
        name: &String,
        raw: &RawArray,
        k: u64,
        closed_pid: Option<u32>,
        leased: bool,
    ) -> Option<Recovery> {
        let key = (name.clone(), k);
        match raw.recover_stripe_judged(k, |writer| self.judge(name, writer)) {
            Ok(r @ Recovery::Recovered { .. }) => {
                self.lock().unidentified.remove(&key);
                Some(r)
            }
            Ok(Recovery::WriterUnknown { .. }) if leased && !raw.is_striped() => {
                // A connected client holds write access: an unidentified write is most likely
                // its own, between taking the write side and recording itself. Start the
                // grace period afresh once the lease is gone.
                self.lock().unidentified.remove(&key);
                None
            }
            Ok(Recovery::WriterUnknown { .. })
                if raw.stripe_state(k).is_some_and(|(_, w)| w.is_some()) =>
            {
                // A recorded writer whose liveness cannot be told: never taken over. Any
                // unidentified stretch seen before is over (a write that is seen unidentified
                // at its start and again at its publish, 2 s apart, is not one to take over).
                self.lock().unidentified.remove(&key);
                None
            }
            Ok(Recovery::WriterUnknown { sequence }) if closed_pid.is_none() => {
                let mut state = self.lock();
                let first = state
                    .unidentified
                    .entry(key.clone())
                    .or_insert((sequence, Instant::now()));
                if first.0 != sequence {
                    *first = (sequence, Instant::now());
                    return None;
                }
                if first.1.elapsed() < UNIDENTIFIED_GRACE {
                    return None;
                }
                state.unidentified.remove(&key);
                drop(state);
                match raw.recover_unidentified_stripe(k, sequence) {
                    Ok(other) => Some(other),
                    Err(e) => {
                        error!(name, "recovery failed: {e}");
                        None
                    }
                }
            }
            Ok(other) => {
                self.lock().unidentified.remove(&key);
                Some(other)
            }
            Err(e) => {
                error!(name, "recovery failed: {e}");
                None
            }
        }
    }
}

/// Cuts `file` back to `len` bytes if a writer grew it (with `ftruncate` or `fallocate`
/// through its read-write descriptor) to take memory or disk past its limits. Nobody maps
/// past `len`, so nothing anyone uses is lost; run with every periodic check.
pub(crate) fn cut_back(file: &File, len: u64, name: &str) {
    if file.metadata().is_ok_and(|m| m.len() > len) {
        match file.set_len(len) {
            Ok(()) => warn!(
                name,
                len, "a writer grew the object's file: cut back to its size"
            ),
            Err(e) => warn!(
                name,
                "a writer grew the object's file; cannot cut it back: {e}"
            ),
        }
    }
}

/// Opens the array file at `path` read-write for the daemon's own mapping, refusing a symlink.
fn open_array_file(path: &Path) -> Result<File, OpenError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|source| OpenError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Whether a file refused as `e` is not damaged but written by a newer mmshare (a format
/// version, feature or critical extension this build does not know): it is left in place for
/// a newer daemon, never renamed aside as corrupt.
pub(crate) fn from_a_newer_version(e: &FormatError) -> bool {
    matches!(
        e,
        FormatError::UnsupportedVersion { .. }
            | FormatError::UnknownFeatures { .. }
            | FormatError::ReadOnlyFeatures { .. }
            | FormatError::UnknownExtension { .. }
    )
}

/// Renames a bad file aside as `NAME.corrupt` (or `NAME.N.corrupt`), never deleting it.
fn quarantine(path: &Path, reason: &str) {
    let base = path.as_os_str().to_string_lossy().into_owned();
    let target = (0..1000)
        .map(|i| {
            if i == 0 {
                PathBuf::from(format!("{base}.corrupt"))
            } else {
                PathBuf::from(format!("{base}.{i}.corrupt"))
            }
        })
        .find(|p| !p.exists());
    match target.map(|t| std::fs::rename(path, &t).map(|()| t)) {
        Some(Ok(t)) => error!(
            path = %path.display(),
            moved_to = %t.display(),
            "invalid array file quarantined: {reason}"
        ),
        Some(Err(e)) => {
            error!(path = %path.display(), "invalid array file ({reason}); cannot rename it aside: {e}")
        }
        None => {
            error!(path = %path.display(), "invalid array file ({reason}); no free .corrupt name")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_limits(max_open_objects: usize) -> Limits {
        Limits {
            max_arrays: 1000,
            max_bytes: None,
            max_bytes_per_user: None,
            user_share: 25,
            reserve: 25,
            max_objects_per_user: 512,
            daemon_uid: rustix::process::geteuid().as_raw(),
            max_open_objects,
        }
    }

    fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let (file_dir, mem_dir) = (root.path().join("data"), root.path().join("mem"));
        std::fs::create_dir(&file_dir).unwrap();
        std::fs::create_dir(&mem_dir).unwrap();
        (root, file_dir, mem_dir)
    }

    /// More arrays in use at start (here: left mid-write) than the budget has places: the
    /// load opens them all (over the budget) instead of waiting for itself to close some.
    #[test]
    fn a_load_with_more_objects_in_use_than_places_finishes() {
        use std::os::unix::fs::FileExt;
        let (_root, file_dir, mem_dir) = dirs();
        for i in 0..10 {
            let spec = ArraySpec::new(format!("a{i}"), DType::U8, vec![8]);
            let (path, _) = mmshare::internal::create_array_data(&file_dir, &spec).unwrap();
            let f = OpenOptions::new().write(true).open(path).unwrap();
            f.write_all_at(
                &1u64.to_le_bytes(),
                mmshare::format::offsets::SEQUENCE as u64,
            )
            .unwrap();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = Registry::load(file_dir, mem_dir, small_limits(8), None);
            let _ = tx.send(r.map(|r| (r.len(), r.budget.open())));
        });
        let loaded = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("watchdog: the load hangs")
            .unwrap();
        assert_eq!(loaded, (10, 10));
    }

    /// A file grown through a descriptor without a participant lock, of an array the daemon
    /// holds nothing open of, is cut back by the periodic pass; one cut short is removed.
    #[test]
    fn the_periodic_pass_checks_the_size_of_closed_arrays() {
        let (_root, file_dir, mem_dir) = dirs();
        let registry = Registry::load(file_dir, mem_dir, small_limits(8), None).unwrap();
        let who = Creds {
            uid: rustix::process::geteuid().as_raw(),
            gid: 0,
            pid: 0,
        };
        for name in ["grown", "cut"] {
            let (_, file, _) = registry
                .create(
                    who,
                    name,
                    "u1",
                    &[8],
                    WireOrder::C,
                    Backing::File,
                    0o600,
                    false,
                    0,
                    false,
                )
                .unwrap();
            drop(file);
        }
        registry.recover_all();
        assert_eq!(registry.budget.open(), 0, "unused arrays are closed");
        let grown = registry.get("grown").unwrap();
        let len = grown.header.file_len();
        OpenOptions::new()
            .write(true)
            .open(&grown.path)
            .unwrap()
            .set_len(len + (8 << 20))
            .unwrap();
        let cut = registry.get("cut").unwrap();
        OpenOptions::new()
            .write(true)
            .open(&cut.path)
            .unwrap()
            .set_len(100)
            .unwrap();
        registry.recover_all();
        assert_eq!(std::fs::metadata(&grown.path).unwrap().len(), len);
        assert!(
            registry.get("cut").is_none(),
            "the truncated array is removed"
        );
        assert!(!cut.path.exists());
    }

    /// A NoSpace message names the directory only to root and the daemon's own uid.
    #[test]
    fn no_space_names_the_directory_only_to_those_who_can_open_it() {
        let dir = Path::new("/dev/shm");
        let creds = |uid| Creds {
            uid,
            gid: uid,
            pid: 1,
        };
        let other = rustix::process::geteuid()
            .as_raw()
            .wrapping_add(4242)
            .max(1);
        let theirs = no_space(
            "array",
            "big",
            u64::MAX,
            0,
            dir,
            Backing::Memory,
            creds(other),
        )
        .message;
        assert!(!theirs.contains("/dev/shm"), "{theirs}");
        assert!(theirs.contains("the daemon's memory directory"), "{theirs}");
        let root = no_space("array", "big", u64::MAX, 0, dir, Backing::Memory, creds(0)).message;
        assert!(root.contains("/dev/shm"), "{root}");
    }
}
