//! A harness that drives the daemon's request handling without a socket, for the wire fuzz
//! target (`fuzz/`, cargo-fuzz) and the bounded fuzz test (`tests/wire_fuzz.rs`).
//!
//! [`Harness::feed`] does with one message exactly what a connection does: the same bounded
//! decode as `Connection::recv`, then, for a request, the same dispatch as the connection
//! handler, on a registry of its own in a temporary directory. The reply is returned as the
//! connection would send it; descriptors in it are counted and closed.
//!
//! [`Harness::run`] takes a fuzzer's input: a script of messages from several clients, and
//! checks after every message that the reply fits in a message, matches the request and
//! shows the client nothing it may not know, and that the registry agrees with the files on
//! disk and stays within its limits, in total and per user. It panics on a violation, so a
//! fuzzer reports it as a crash and a test fails.
//!
//! Not covered: the connection's own state (the Hello-first rule, timeouts, the malformed
//! message count, connection slots), descriptor passing, several connections at once, a
//! descriptor keeper.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use mmshare::internal::proto::{
    self, ArrayInfo, Backing, ErrorKind, MAX_MESSAGE, ObjectInfo, OpenAccess, Request, Response,
    StreamInfo, StreamRole, WatchEvent,
};

use crate::connection::{Incoming, classify, encode_reply};
use crate::registry::{Creds, Limits, Registry};

/// The harness's `--max-bytes`: what all its arrays and streams may take together. Large
/// requests are refused by this quota before any file is made, so a fuzzer cannot fill the
/// disk (or, on `/dev/shm`, the memory).
pub const MAX_BYTES: u64 = 64 << 20;

/// The harness's `--max-arrays`: arrays and streams together. Enough objects with long names
/// for a `List` reply to need more than one page.
pub const MAX_OBJECTS: usize = 256;

/// The harness's `--max-objects-per-user`.
pub const MAX_OBJECTS_PER_USER: usize = 48;

/// The harness's `--user-share` (the daemon's default), in percent.
pub const USER_SHARE: u32 = 25;

/// The harness's `--reserve`, in percent: twice the daemon's default, so that three of the
/// four other users reach it before their own limits (in objects and in bytes).
pub const RESERVE: u32 = 50;

/// The uid the harness's daemon counts as its own (client 0 of [`creds`]): like root, it is
/// limited only by the totals.
pub const DAEMON_UID: u32 = 1000;

/// What separates the messages of a [`Harness::run`] script.
pub const SEPARATOR: &[u8] = b"\xfeMM\xfd";

/// The number of clients [`creds`] tells apart.
pub const CLIENTS: u8 = 6;

/// The clients a script's messages come from, chosen by each message's first byte (modulo
/// [`CLIENTS`]): 0 the daemon's user ([`DAEMON_UID`] 1000, gid 1000), 1 another user of the
/// same group (1001), 2 a user of another group (1002, gid 1002), 3 root, 4 a second user of
/// that group (1003, gid 1002), 5 a user of a group of its own (1004, gid 1004). The pid is 0
/// ("unknown"): no pid of a real process, which the daemon would otherwise watch.
pub fn creds(selector: u8) -> Creds {
    let (uid, gid) = match selector % CLIENTS {
        0 => (1000, 1000),
        1 => (1001, 1000),
        2 => (1002, 1002),
        3 => (0, 0),
        4 => (1003, 1002),
        _ => (1004, 1004),
    };
    Creds { uid, gid, pid: 0 }
}

/// Builds a [`Harness::run`] script from messages, each with its client selector.
pub fn script<'a>(messages: impl IntoIterator<Item = (u8, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (selector, message)) in messages.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(SEPARATOR);
        }
        out.push(selector);
        out.extend_from_slice(message);
    }
    out
}

/// Splits a script into its messages: (client selector, message bytes). Empty parts are
/// skipped; a part of one byte is an empty message.
pub fn split_script(input: &[u8]) -> Vec<(u8, &[u8])> {
    let mut parts = Vec::new();
    let mut rest = input;
    loop {
        let end = rest
            .windows(SEPARATOR.len())
            .position(|w| w == SEPARATOR)
            .unwrap_or(rest.len());
        if let Some((&selector, message)) = rest[..end].split_first() {
            parts.push((selector, message));
        }
        if end == rest.len() {
            return parts;
        }
        rest = &rest[end + SEPARATOR.len()..];
    }
}

/// What the daemon did with one message.
#[derive(Debug)]
pub struct Fed {
    /// The request the bytes decoded to, if they did.
    pub request: Option<Request>,
    /// The reply.
    pub response: Response,
    /// Descriptors the reply carried (closed already).
    pub descriptors: usize,
    /// The array or stream the connection now holds write access to, or is attached to.
    pub lease: Option<String>,
    /// The owner uid, group and mode of the object the request named, as it was before the
    /// request (`None`: no such object, or a request that names none).
    pub before: Option<(u32, u32, u32)>,
}

/// A registry of the daemon's in a temporary directory (removed on drop), with small limits
/// ([`MAX_BYTES`], [`MAX_OBJECTS`], [`MAX_OBJECTS_PER_USER`], [`USER_SHARE`], [`RESERVE`];
/// its own uid [`DAEMON_UID`]) and no descriptor keeper.
#[derive(Debug)]
pub struct Harness {
    registry: Registry,
    /// A registry that stays empty: what a client is told about a name that does not exist.
    empty: OnceLock<Registry>,
    /// The data files that [`Harness::run`]'s clients hold mapped (with the participant lock),
    /// until they disconnect.
    held: Mutex<Vec<Held>>,
    scratch: Scratch,
}

/// A data file a client holds, as a client that maps it does (with the participant lock), and
/// what its object is charged.
#[derive(Debug)]
struct Held {
    /// Keeps the participant lock.
    _file: File,
    /// Device and inode.
    id: (u64, u64),
    owner: u32,
    backing: Backing,
    charge: u64,
}

fn limits() -> Limits {
    Limits {
        max_arrays: MAX_OBJECTS,
        max_bytes: Some(MAX_BYTES),
        max_bytes_per_user: None,
        user_share: USER_SHARE,
        reserve: RESERVE,
        max_objects_per_user: MAX_OBJECTS_PER_USER,
        daemon_uid: DAEMON_UID,
        max_open_objects: MAX_OBJECTS,
    }
}

/// The name a request names, if any.
fn named(request: &Request) -> Option<&str> {
    match request {
        Request::Create { name, .. }
        | Request::Open { name, .. }
        | Request::Stat { name }
        | Request::Delete { name }
        | Request::CreateStream { name, .. }
        | Request::OpenStream { name, .. }
        | Request::WaitFor { name, .. } => Some(name),
        Request::Hello { .. }
        | Request::List { .. }
        | Request::ListAll { .. }
        | Request::Watch { .. } => None,
    }
}

impl Harness {
    /// A harness in `/dev/shm` when it can make a directory there (tmpfs: creates cost no
    /// disk writes), else in the system's temporary directory.
    ///
    /// # Errors
    /// No temporary directory can be made, or the registry cannot be loaded in it.
    pub fn new() -> io::Result<Harness> {
        Harness::in_dir(Path::new("/dev/shm")).or_else(|_| Harness::in_dir(&std::env::temp_dir()))
    }

    /// A harness in a new directory under `parent`. Directories that harnesses of processes
    /// that no longer run left there (a crash found by a fuzzer aborts the process) are
    /// removed first.
    ///
    /// # Errors
    /// The directory cannot be made, or the registry cannot be loaded in it.
    pub fn in_dir(parent: &Path) -> io::Result<Harness> {
        sweep_stale(parent);
        let scratch = Scratch::new(parent)?;
        let (storage, memory) = (scratch.storage(), scratch.memory());
        std::fs::DirBuilder::new().mode(0o700).create(&storage)?;
        std::fs::DirBuilder::new().mode(0o700).create(&memory)?;
        let registry = Registry::load(storage, memory, limits(), None)?;
        Ok(Harness {
            registry,
            empty: OnceLock::new(),
            held: Mutex::new(Vec::new()),
            scratch,
        })
    }

    /// The owner uid, group and mode of the object `name`, as root's `Stat` shows them.
    fn owner_of(&self, name: &str) -> Option<(u32, u32, u32)> {
        let stat = Request::Stat { name: name.into() };
        match crate::server::handle_request(&self.registry, creds(3), stat).0 {
            Response::Array(a) => Some((a.owner_uid, a.owner_gid, a.mode)),
            Response::Stream(s) => Some((s.owner_uid, s.owner_gid, s.mode)),
            _ => None,
        }
    }

    /// The reply to `request` from `who` in a registry where nothing exists.
    fn absent_reply(&self, request: &Request, who: Creds) -> Result<Response, String> {
        if let Some(empty) = self.empty.get() {
            return Ok(crate::server::handle_request(empty, who, request.clone()).0);
        }
        let (storage, memory) = (
            self.scratch.path.join("empty-storage"),
            self.scratch.path.join("empty-memory"),
        );
        for dir in [&storage, &memory] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let empty = Registry::load(storage, memory, limits(), None)
            .map_err(|e| format!("an empty registry: {e}"))?;
        let empty = self.empty.get_or_init(|| empty);
        Ok(crate::server::handle_request(empty, who, request.clone()).0)
    }

    /// The storage directory (`Backing::File`).
    pub fn storage_dir(&self) -> PathBuf {
        self.scratch.storage()
    }

    /// The memory directory (`Backing::Memory`).
    pub fn memory_dir(&self) -> PathBuf {
        self.scratch.memory()
    }

    /// Handles one message from a client with `creds`, as a connection that has said Hello
    /// does: a message longer than the connection's receive buffer (`MAX_MESSAGE + 1`) is cut
    /// to it as the kernel would, the bytes are decoded as `Connection::recv` decodes them, and
    /// a request is served as the connection handler serves it. Write access it grants is not
    /// recorded as a lease (see [`Harness::run`]).
    pub fn feed(&self, message: &[u8], creds: Creds) -> Fed {
        self.feed_keeping(message, creds).0
    }

    /// [`Harness::feed`], returning the reply's descriptors too.
    fn feed_keeping(&self, message: &[u8], creds: Creds) -> (Fed, Vec<File>) {
        let truncated = message.len() > MAX_MESSAGE + 1;
        let received = &message[..message.len().min(MAX_MESSAGE + 1)];
        match classify(received, truncated) {
            Incoming::Request(request) => {
                let before = named(&request).and_then(|name| self.owner_of(name));
                let (response, files, lease) =
                    crate::server::handle_request(&self.registry, creds, request.clone());
                let fed = Fed {
                    request: Some(request),
                    response,
                    descriptors: files.len(),
                    lease,
                    before,
                };
                (fed, files)
            }
            // What the connection handler replies to a malformed message.
            Incoming::Bad(e) => {
                let fed = Fed {
                    request: None,
                    response: Response::Error {
                        kind: ErrorKind::ProtocolError,
                        message: e.to_string(),
                    },
                    descriptors: 0,
                    lease: None,
                    before: None,
                };
                (fed, Vec::new())
            }
            Incoming::Closed => unreachable!("classify never reports a close"),
        }
    }

    /// Holds the data file of a reply that carries one, as a client that maps it does: with
    /// the participant lock, so that a delete of its object keeps it charged.
    fn hold(&self, response: &Response, files: Vec<File>) -> Result<(), String> {
        let (owner, backing, charge) = match response {
            Response::Array(a) => (a.owner_uid, a.backing, array_len(a) + 4096),
            Response::Stream(s) => (
                s.owner_uid,
                s.backing,
                (stream_len(s) + 4096 + 256 * u64::from(s.max_subscribers)) * lanes(s),
            ),
            _ => return Ok(()),
        };
        let Some(file) = files.into_iter().next() else {
            return Ok(());
        };
        mmshare::internal::hold_participant_lock(&file)
            .map_err(|e| format!("participant lock: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("fstat: {e}"))?;
        let held = Held {
            _file: file,
            id: (meta.dev(), meta.ino()),
            owner,
            backing,
            charge,
        };
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(held);
        Ok(())
    }

    /// Runs a fuzzer's input: messages separated by [`SEPARATOR`], each starting with a byte
    /// that chooses its client ([`creds`]). After each message it checks the reply
    /// ([`check_reply`]), that it hides what the client may not read as the daemon promises
    /// (a request naming such an object is answered exactly as for a name that does not exist;
    /// a create of it says only that the name is taken; the daemon's directories appear in no
    /// message to the users who do not see paths), and the registry ([`Harness::check`]);
    /// write access that replies grant is recorded as leases, as the connection handler
    /// records it, and the clients keep the data files they are sent mapped (with the
    /// participant lock), so a deleted object they hold stays charged to its owner. At the end
    /// the clients disconnect (their files are closed, their leases recovered and released, as
    /// when a connection closes), the periodic recovery pass runs, and the registry is
    /// checked again: nothing deleted is charged any more.
    ///
    /// Returns what happened to each message.
    ///
    /// # Panics
    /// On any violation, with the message number, the request and what is wrong.
    pub fn run(&self, input: &[u8]) -> Vec<Fed> {
        let mut leases = BTreeSet::new();
        let mut done = Vec::new();
        for (i, (selector, message)) in split_script(input).into_iter().enumerate() {
            let who = creds(selector);
            let (fed, files) = self.feed_keeping(message, who);
            let checked = check_reply(&fed, who)
                .and_then(|()| self.check_hiding(&fed, who))
                .and_then(|()| self.hold(&fed.response, files))
                .and_then(|()| self.check());
            if let Err(e) = checked {
                panic!(
                    "message {i} (client {selector}, {} bytes): request {:?}, reply {:?}: {e}",
                    message.len(),
                    fed.request,
                    fed.response
                );
            }
            if let Some(name) = &fed.lease
                && leases.len() < 1024
                && !leases.contains(name)
            {
                self.registry.add_lease(name, who.pid);
                leases.insert(name.clone());
            }
            done.push(fed);
        }
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let names: Vec<String> = leases.into_iter().collect();
        self.registry.recover_after_close(&names, 0);
        self.registry.release_leases(&names, 0);
        self.registry.recover_all();
        if let Err(e) = self.check() {
            panic!("after the clients disconnected: {e}");
        }
        done
    }

    /// What the daemon promises to hide from `who` (docs/SECURITY.md, "Names").
    fn check_hiding(&self, fed: &Fed, who: Creds) -> Result<(), String> {
        let sees_paths = who.uid == 0 || who.uid == rustix::process::geteuid().as_raw();
        if let Response::Error { message, .. } = &fed.response
            && !sees_paths
        {
            for dir in [self.storage_dir(), self.memory_dir()] {
                if message.contains(&*dir.to_string_lossy()) {
                    return Err(format!("the message names {}", dir.display()));
                }
            }
        }
        let (Some(request), Some((uid, gid, mode))) = (&fed.request, fed.before) else {
            return Ok(());
        };
        if may(uid, gid, mode, who, 4) {
            return Ok(());
        }
        match request {
            Request::Create { .. } | Request::CreateStream { .. } => {
                if let Response::Error {
                    kind: ErrorKind::AlreadyExists,
                    message,
                } = &fed.response
                {
                    // Only that the name is taken: no owner, mode, shape or dtype (all of
                    // which would bring digits), nothing but the name quoted.
                    let name = format!("{:?}", named(request).unwrap_or_default());
                    let rest = message.replace(&name, "");
                    if rest.chars().any(|c| c.is_ascii_digit()) {
                        return Err(format!(
                            "a create of a name hidden from uid {} says more than that it is taken",
                            who.uid
                        ));
                    }
                }
                Ok(())
            }
            _ => {
                let absent = self.absent_reply(request, who)?;
                if fed.response == absent {
                    Ok(())
                } else {
                    Err(format!(
                        "an object uid {} may not read is answered otherwise than a name that does not exist ({absent:?})",
                        who.uid
                    ))
                }
            }
        }
    }

    /// Checks the registry: nothing is being created, it is within its limits (in total, and
    /// per user: [`MAX_OBJECTS_PER_USER`], [`USER_SHARE`] of [`MAX_BYTES`] in each directory,
    /// and all users but the daemon's and root within what [`RESERVE`] leaves them), root's
    /// `ListAll` pages list every object once and in order, every object has its file (of the
    /// size its description implies) in its directory and there is no other file (no
    /// temporary file left behind), and the bytes counted against the limits, in total and
    /// per owner and directory, and the objects counted per owner, are those of the objects
    /// (files plus control state) and of the deleted objects whose data files clients of
    /// [`Harness::run`] still hold.
    ///
    /// # Errors
    /// What is wrong.
    pub fn check(&self) -> Result<(), String> {
        let (objects, pending, bytes, per_uid) = self.registry.usage();
        if pending != 0 {
            return Err(format!("{pending} names still reserved by a create"));
        }
        if objects > MAX_OBJECTS {
            return Err(format!(
                "{objects} objects, over the limit of {MAX_OBJECTS}"
            ));
        }
        if bytes > MAX_BYTES {
            return Err(format!(
                "{bytes} bytes counted, over the limit of {MAX_BYTES}"
            ));
        }
        let listed = self.list_everything()?;
        if listed.len() != objects {
            return Err(format!(
                "root lists {} objects, the registry counts {objects}",
                listed.len()
            ));
        }
        let mut expected_bytes = 0u64;
        let mut expected_usage: BTreeMap<u32, ([u64; 2], usize)> = BTreeMap::new();
        let mut expected_files = BTreeSet::new();
        let mut live = BTreeSet::new();
        for object in &listed {
            let lanes = match object {
                ObjectInfo::Array(_) => 1,
                ObjectInfo::Stream(s) => lanes(s),
            };
            let (owner, backing, path, len, control) = match object {
                ObjectInfo::Array(a) => (
                    a.owner_uid,
                    a.backing,
                    PathBuf::from(&a.path),
                    array_len(a),
                    4096,
                ),
                ObjectInfo::Stream(s) => (
                    s.owner_uid,
                    s.backing,
                    Path::new(&s.path).join(mmshare::internal::DATA_FILE),
                    stream_len(s),
                    4096 + 256 * u64::from(s.max_subscribers),
                ),
            };
            let dir = match backing {
                Backing::File => self.storage_dir(),
                Backing::Memory => self.memory_dir(),
            };
            let entry = dir.join(object.name());
            if !path.starts_with(&entry) {
                return Err(format!(
                    "{:?} has path {}, not in {}",
                    object.name(),
                    path.display(),
                    entry.display()
                ));
            }
            let on_disk = std::fs::symlink_metadata(&path)
                .map_err(|e| format!("{:?}: {}: {e}", object.name(), path.display()))?;
            if !on_disk.is_file() || on_disk.len() != len {
                return Err(format!(
                    "{:?}: {} is {} bytes (file: {}), its description implies {len}",
                    object.name(),
                    path.display(),
                    on_disk.len(),
                    on_disk.is_file()
                ));
            }
            // The other lanes of a stream with several publishers: files of their own, as long.
            for lane in 1..lanes as u32 {
                let other = entry.join(mmshare::lane_file(mmshare::internal::DATA_FILE, lane));
                let size = std::fs::symlink_metadata(&other).map(|m| m.len());
                if size.as_ref().ok() != Some(&len) {
                    return Err(format!(
                        "{:?}: lane {lane}'s {} is {size:?} bytes, its description implies {len}",
                        object.name(),
                        other.display(),
                    ));
                }
            }
            expected_bytes += (len + control) * lanes;
            let usage = expected_usage.entry(owner).or_default();
            usage.0[usize::from(backing == Backing::Memory)] += (len + control) * lanes;
            usage.1 += 1;
            live.insert((on_disk.dev(), on_disk.ino()));
            // Paths as strings: comparing `PathBuf`s component by component made this check
            // most of the bounded run's time.
            expected_files.insert(entry.to_string_lossy().into_owned());
        }
        // Deleted objects that a client still holds stay charged (once each).
        let mut retired = BTreeSet::new();
        for h in self.held.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if !live.contains(&h.id) && retired.insert(h.id) {
                expected_bytes += h.charge;
                let usage = expected_usage.entry(h.owner).or_default();
                usage.0[usize::from(h.backing == Backing::Memory)] += h.charge;
                usage.1 += 1;
            }
        }
        if bytes != expected_bytes {
            return Err(format!(
                "{bytes} bytes counted against the quota, but the objects (and the deleted ones still held) take {expected_bytes}"
            ));
        }
        let counted: BTreeMap<u32, ([u64; 2], usize)> = per_uid
            .into_iter()
            .filter(|(_, bytes, objects)| *objects != 0 || *bytes != [0, 0])
            .map(|(uid, bytes, objects)| (uid, (bytes, objects)))
            .collect();
        if counted != expected_usage {
            return Err(format!(
                "per owner (bytes in files, in memory; objects) the registry counts {counted:?}, but the objects are {expected_usage:?}"
            ));
        }
        let share = MAX_BYTES * u64::from(USER_SHARE) / 100;
        let mut others = ([0u64; 2], 0usize);
        for (uid, (bytes, objects)) in &counted {
            if *uid == 0 || *uid == DAEMON_UID {
                continue;
            }
            if *objects > MAX_OBJECTS_PER_USER || bytes.iter().any(|b| *b > share) {
                return Err(format!(
                    "uid {uid} has {objects} objects and {bytes:?} bytes, over {MAX_OBJECTS_PER_USER} objects or {share} bytes in a directory"
                ));
            }
            others.0[0] += bytes[0];
            others.0[1] += bytes[1];
            others.1 += objects;
        }
        let (shared_bytes, shared_objects) = (
            MAX_BYTES * u64::from(100 - RESERVE) / 100,
            MAX_OBJECTS * (100 - RESERVE as usize) / 100,
        );
        if others.1 > shared_objects || others.0.iter().any(|b| *b > shared_bytes) {
            return Err(format!(
                "users other than the daemon's and root have {} objects and {:?} bytes, over the {shared_objects} objects or {shared_bytes} bytes in a directory that --reserve leaves them",
                others.1, others.0
            ));
        }
        let mut found = BTreeSet::new();
        for dir in [self.storage_dir(), self.memory_dir()] {
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
                found.insert(entry.path().to_string_lossy().into_owned());
            }
        }
        if found != expected_files {
            let extra: Vec<_> = found.difference(&expected_files).collect();
            let missing: Vec<_> = expected_files.difference(&found).collect();
            return Err(format!(
                "files on disk differ from the objects: not objects {extra:?}, missing {missing:?}"
            ));
        }
        Ok(())
    }

    /// Every object, by root's `ListAll` pages; checks the pages on the way.
    fn list_everything(&self) -> Result<Vec<ObjectInfo>, String> {
        let root = creds(3);
        let mut all: Vec<ObjectInfo> = Vec::new();
        loop {
            let after = all.last().map(|o| o.name().to_owned());
            let request = Request::ListAll {
                prefix: String::new(),
                after: after.clone(),
            };
            let (response, files, lease) =
                crate::server::handle_request(&self.registry, root, request.clone());
            let fed = Fed {
                request: Some(request),
                response,
                descriptors: files.len(),
                lease,
                before: None,
            };
            check_reply(&fed, root).map_err(|e| format!("root's ListAll after {after:?}: {e}"))?;
            let Response::Objects { objects, more } = fed.response else {
                unreachable!("check_reply checked the variant");
            };
            if more && objects.is_empty() {
                return Err(format!(
                    "an empty ListAll page after {after:?} says more follow"
                ));
            }
            all.extend(objects);
            if !more {
                return Ok(all);
            }
        }
    }
}

/// Checks a reply against the request it answers: it is sent whole (it fits in a message and
/// decodes back to itself, unless it is an error whose message had to be shortened), its
/// variant answers the request, it carries the descriptors it should, list pages are in
/// order within the prefix, what it describes `who` may see or do (the daemon's permission
/// rule; a create made the object for `who` or adopted one `who` owns, or any as root; a
/// delete was of an object `who` may write), `path` fields are filled for root and the
/// daemon's own uid and empty for everyone else, and it is no `Internal` error (nothing fails
/// inside the daemon on a private directory).
///
/// # Errors
/// What is wrong.
pub fn check_reply(fed: &Fed, who: Creds) -> Result<(), String> {
    let bytes = encode_reply(&fed.response).map_err(|e| format!("reply not sendable: {e}"))?;
    if bytes.len() > MAX_MESSAGE {
        return Err(format!("reply of {} bytes", bytes.len()));
    }
    let back: Response =
        proto::decode(&bytes).map_err(|e| format!("reply does not decode: {e}"))?;
    match (&back, &fed.response) {
        (a, b) if a == b => {}
        (Response::Error { kind: a, .. }, Response::Error { kind: b, .. }) if a == b => {}
        _ => return Err(format!("reply decodes to {back:?}")),
    }
    let files = fed.descriptors;
    let ok = match (&fed.request, &fed.response) {
        (_, Response::Error { kind, .. }) if *kind == ErrorKind::Internal => {
            return Err("an Internal error".into());
        }
        (_, Response::Error { .. }) => files == 0,
        (None, _) => false,
        (Some(Request::Hello { .. }), Response::Hello { .. }) => files == 0,
        (Some(Request::Create { .. }), Response::Array(a)) => {
            files >= 1 && made_or_adopted(fed.before, a.owner_uid, who)
        }
        (Some(Request::Open { access, .. }), Response::Array(a)) => {
            let need = if *access == OpenAccess::Write { 2 } else { 4 };
            files >= 1 && may(a.owner_uid, a.owner_gid, a.mode, who, need)
        }
        (Some(Request::Stat { .. }), Response::Array(a)) => {
            files == 0 && may(a.owner_uid, a.owner_gid, a.mode, who, 4)
        }
        (Some(Request::Stat { .. } | Request::WaitFor { .. }), Response::Stream(s)) => {
            files == 0 && may(s.owner_uid, s.owner_gid, s.mode, who, 4)
        }
        (Some(Request::WaitFor { .. }), Response::Array(a)) => {
            files == 0 && may(a.owner_uid, a.owner_gid, a.mode, who, 4)
        }
        (Some(Request::Watch { .. }), Response::Event(WatchEvent::Ready)) => files == 0,
        (Some(Request::CreateStream { .. }), Response::Stream(s)) => {
            files == 0 && made_or_adopted(fed.before, s.owner_uid, who)
        }
        (Some(Request::OpenStream { role, .. }), Response::Stream(s)) => {
            let need = if *role == StreamRole::Publish { 2 } else { 4 };
            files as u64 == 2 * lanes(s) && may(s.owner_uid, s.owner_gid, s.mode, who, need)
        }
        (Some(Request::Delete { .. }), Response::Deleted) => {
            files == 0 && fed.before.is_some_and(|(u, g, m)| may(u, g, m, who, 2))
        }
        (Some(Request::List { prefix, after }), Response::List { arrays, .. }) => {
            let names = arrays.iter().map(|a| a.name.as_str());
            page_in_order(names, prefix, after.as_deref())?;
            files == 0
                && arrays
                    .iter()
                    .all(|a| may(a.owner_uid, a.owner_gid, a.mode, who, 4))
        }
        (Some(Request::ListAll { prefix, after }), Response::Objects { objects, .. }) => {
            page_in_order(
                objects.iter().map(ObjectInfo::name),
                prefix,
                after.as_deref(),
            )?;
            files == 0
                && objects.iter().all(|o| match o {
                    ObjectInfo::Array(a) => may(a.owner_uid, a.owner_gid, a.mode, who, 4),
                    ObjectInfo::Stream(s) => may(s.owner_uid, s.owner_gid, s.mode, who, 4),
                })
        }
        _ => false,
    };
    let sees_paths = who.uid == 0 || who.uid == rustix::process::geteuid().as_raw();
    if paths(&fed.response).any(|p| p.is_empty() == sees_paths) {
        return Err(format!(
            "paths shown to uid {} {}",
            who.uid,
            if sees_paths {
                "are missing"
            } else {
                "are not removed"
            }
        ));
    }
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the reply (with {files} descriptors) does not answer the request, or shows what the client may not see"
        ))
    }
}

/// Whether a successful create's object is the one it should be: a new object of `who`'s,
/// or, with `exist_ok`, an existing one (owned by `before`'s uid) that `who` owns or, as root,
/// may adopt.
fn made_or_adopted(before: Option<(u32, u32, u32)>, owner: u32, who: Creds) -> bool {
    match before {
        None => owner == who.uid,
        Some((uid, _, _)) => owner == uid && (who.uid == uid || who.uid == 0),
    }
}

/// The `path` fields of a reply.
fn paths(r: &Response) -> Box<dyn Iterator<Item = &str> + '_> {
    match r {
        Response::Array(a) => Box::new(std::iter::once(a.path.as_str())),
        Response::Stream(s) => Box::new(std::iter::once(s.path.as_str())),
        Response::List { arrays, .. } => Box::new(arrays.iter().map(|a| a.path.as_str())),
        Response::Objects { objects, .. } => Box::new(objects.iter().map(|o| match o {
            ObjectInfo::Array(a) => a.path.as_str(),
            ObjectInfo::Stream(s) => s.path.as_str(),
        })),
        Response::Hello { .. }
        | Response::Deleted
        | Response::Error { .. }
        | Response::Event(_) => Box::new(std::iter::empty()),
    }
}

/// The daemon's permission rule, written out again: root and the owner may do anything;
/// others need `bit` (4 read, 2 write) in the group or the other bits.
fn may(owner_uid: u32, owner_gid: u32, mode: u32, who: Creds, bit: u32) -> bool {
    let bits = if who.gid == owner_gid {
        mode >> 3
    } else {
        mode
    };
    who.uid == 0 || who.uid == owner_uid || bits & bit != 0
}

/// Names of a list page: strictly increasing, each within `prefix` and after `after`.
fn page_in_order<'a>(
    names: impl Iterator<Item = &'a str>,
    prefix: &str,
    after: Option<&str>,
) -> Result<(), String> {
    let mut last = after;
    for name in names {
        if !name.starts_with(prefix) || last.is_some_and(|l| name <= l) {
            return Err(format!(
                "list page with prefix {prefix:?} after {after:?} has {name:?} after {last:?}"
            ));
        }
        last = Some(name);
    }
    Ok(())
}

/// An array file's length: the header page, the data padded to 8 bytes, and a record
/// dtype's extension area (docs/FORMAT.md).
fn array_len(a: &ArrayInfo) -> u64 {
    // A record dtype, then the stripe size of a striped array.
    let records = mmshare::DType::parse(&a.dtype)
        .ok()
        .and_then(|d| mmshare::format::dtype_extension(&d))
        .into_iter()
        .chain((a.stripe_bytes != 0).then(|| mmshare::format::Extension {
            tag: mmshare::format::EXTENSION_STRIPES,
            value: a.stripe_bytes.to_le_bytes().to_vec(),
        }));
    a.data_offset + a.data_len.next_multiple_of(8) + extensions_len(records.collect())
}

/// The bytes an extension area of `records` takes in the file.
fn extensions_len(records: Vec<mmshare::format::Extension>) -> u64 {
    if records.is_empty() {
        0
    } else {
        mmshare::format::padded_len(mmshare::format::encode_extensions(&records).0.len() as u64)
    }
}

/// The lanes (one per publisher it may have) of a stream.
fn lanes(s: &StreamInfo) -> u64 {
    u64::from(s.max_publishers.max(1))
}

/// A stream data file's length: up to the end of its last slot.
fn stream_len(s: &StreamInfo) -> u64 {
    // A stall policy other than Block, a history, a record dtype and a per-frame header are
    // extension records after the last slot, in this order.
    let mut records = mmshare::format::stream_extensions(s.stall.into(), s.history);
    records.extend(
        mmshare::DType::parse(&s.dtype)
            .ok()
            .and_then(|d| mmshare::format::dtype_extension(&d)),
    );
    if !s.header.is_empty() {
        records.push(mmshare::format::Extension {
            tag: mmshare::format::EXTENSION_FRAME_HEADER,
            value: s.header.as_bytes().to_vec(),
        });
    }
    s.data_offset + s.slot_stride * u64::from(s.slots) + extensions_len(records)
}

const SCRATCH_PREFIX: &str = "mmshare-harness-";

/// A directory `mmshare-harness-PID-N` holding `storage/` and `memory/`, removed on drop.
#[derive(Debug)]
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(parent: &Path) -> io::Result<Scratch> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("{SCRATCH_PREFIX}{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Scratch { path }),
                // Left by an earlier process of the same pid: take the next number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn storage(&self) -> PathBuf {
        self.path.join("storage")
    }

    fn memory(&self) -> PathBuf {
        self.path.join("memory")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes, once per process and parent, the scratch directories in `parent` of this user's
/// processes that no longer run.
fn sweep_stale(parent: &Path) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|p| p.into_inner());
        if swept.iter().any(|p| p == parent) {
            return;
        }
        swept.push(parent.to_owned());
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        let gone = !Path::new("/proc").join(pid.to_string()).exists();
        if ours && gone && Path::new("/proc/self").exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(r: &Request) -> Vec<u8> {
        proto::encode(r).unwrap()
    }

    #[test]
    fn scripts_split_into_their_messages() {
        let s = script([(0, &b"ab"[..]), (3, &b""[..]), (1, &b"c"[..])]);
        assert_eq!(
            split_script(&s),
            vec![(0, &b"ab"[..]), (3, &b""[..]), (1, &b"c"[..])]
        );
        assert!(split_script(b"").is_empty());
        let mut empty_parts = SEPARATOR.to_vec();
        empty_parts.extend_from_slice(SEPARATOR);
        assert!(split_script(&empty_parts).is_empty());
    }

    #[test]
    fn a_create_open_delete_script_passes_every_check() {
        let h = Harness::new().unwrap();
        let create = encode(&Request::Create {
            name: "a".into(),
            dtype: "<f4".into(),
            shape: vec![3, 4],
            order: proto::WireOrder::C,
            backing: Backing::Memory,
            mode: 0o640,
            exist_ok: false,
            stripes: 0,
            sparse: false,
        });
        let stream = encode(&Request::CreateStream {
            name: "s".into(),
            dtype: "u1".into(),
            shape: vec![10],
            order: proto::WireOrder::C,
            slots: 4,
            max_subscribers: 2,
            backing: Backing::File,
            mode: 0o600,
            exist_ok: false,
            stall: Default::default(),
            history: 0,
            header: String::new(),
            variable: false,
            max_publishers: 2,
        });
        let open = encode(&Request::Open {
            name: "a".into(),
            access: OpenAccess::Write,
        });
        h.run(&script([
            (0, &create[..]),
            (0, &stream[..]),
            (1, &open[..]),
            (2, &open[..]),
            (3, &open[..]),
        ]));
        assert_eq!(h.registry.usage().0, 2);
        // The group member may not write (0o640), the stranger may not either.
        let fed = h.feed(&open, creds(1));
        assert!(matches!(
            fed.response,
            Response::Error {
                kind: ErrorKind::PermissionDenied,
                ..
            }
        ));
        let delete = encode(&Request::Delete { name: "a".into() });
        let fed = h.feed(&delete, creds(3));
        assert_eq!(fed.response, Response::Deleted);
        h.check().unwrap();
    }

    #[test]
    fn a_deleted_object_a_client_holds_stays_charged_until_it_lets_go() {
        let h = Harness::new().unwrap();
        let create = encode(&Request::Create {
            name: "held".into(),
            dtype: "u1".into(),
            shape: vec![100],
            order: proto::WireOrder::C,
            backing: Backing::Memory,
            mode: 0o600,
            exist_ok: false,
            stripes: 0,
            sparse: false,
        });
        let (fed, files) = h.feed_keeping(&create, creds(2));
        h.hold(&fed.response, files).unwrap();
        let charged = h.registry.usage().2;
        assert_eq!(charged, 4096 + 104 + 4096);
        let delete = encode(&Request::Delete {
            name: "held".into(),
        });
        assert_eq!(h.feed(&delete, creds(2)).response, Response::Deleted);
        assert_eq!(h.registry.usage().2, charged, "still mapped: still charged");
        h.check().unwrap();
        h.held.lock().unwrap().clear();
        h.registry.recover_all();
        assert_eq!(h.registry.usage().2, 0);
        h.check().unwrap();
    }

    #[test]
    fn oversized_and_empty_messages_get_protocol_errors() {
        let h = Harness::new().unwrap();
        for len in [0, MAX_MESSAGE + 1, MAX_MESSAGE + 2, 3 * MAX_MESSAGE] {
            let fed = h.feed(&vec![3u8; len], creds(0));
            assert!(
                matches!(
                    fed.response,
                    Response::Error {
                        kind: ErrorKind::ProtocolError,
                        ..
                    }
                ),
                "{len}: {:?}",
                fed.response
            );
            check_reply(&fed, creds(0)).unwrap();
        }
    }

    #[test]
    fn the_quota_stops_large_creates_before_any_file_is_made() {
        let h = Harness::new().unwrap();
        let create = encode(&Request::Create {
            name: "big".into(),
            dtype: "u1".into(),
            shape: vec![MAX_BYTES],
            order: proto::WireOrder::C,
            backing: Backing::File,
            mode: 0o600,
            exist_ok: false,
            stripes: 0,
            sparse: false,
        });
        let fed = h.feed(&create, creds(0));
        assert!(matches!(
            fed.response,
            Response::Error {
                kind: ErrorKind::QuotaExceeded,
                ..
            }
        ));
        h.check().unwrap();
    }

    #[test]
    fn a_scratch_directory_is_removed_on_drop() {
        let h = Harness::new().unwrap();
        let dir = h.scratch.path.clone();
        assert!(dir.is_dir());
        drop(h);
        assert!(!dir.exists());
    }
}
