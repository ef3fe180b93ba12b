//! Importing: remote streams and arrays written into local ones of the same description.
//!
//! `--import REMOTE/GLOB` subscribes to `REMOTE/*/GLOB` (frames and array versions) and asks
//! `REMOTE/meta/GLOB` for the descriptions of what is exported already, so the local objects
//! exist before their first frame and local subscribers can attach to them early. A name first
//! seen in a frame is described on the spot. A local object that exists with another dtype,
//! shape or frame layout is left alone, and its frames are dropped with one message.
//!
//! # Frames, in order and once
//!
//! A stream of one publisher is numbered without gaps at the source, so the importer knows
//! which remote frame it wants next. A frame below that number is a duplicate (sent again
//! around a resume) and dropped; a frame above it means frames went missing in flight (a
//! link or the exporting bridge went down with frames queued): the importer asks the exporter
//! to resume from the missing number (`REMOTE/resume/NAME?from=N`) and drops frames until
//! the first one sent in answer (flag `RESUMED`). That frame is delivered, and whatever still
//! lies between `N` and it (frames the source no longer offers) is counted as lost. A lossy
//! export is not asked to resume: its gaps are counted as lost.
//!
//! The mapping from remote numbers to the local stream's own numbers (a constant offset,
//! changed only after a loss) is written to the stats array before the first frame that
//! uses it is published, so an importer that is killed and started again derives the next
//! remote frame it wants from the local stream and that offset, and asks for exactly that.
//!
//! A stream of several publishers is imported into one local publisher (its frames keep their
//! order within each remote lane, and their per-frame headers, but not their lane or publisher
//! id); gaps are counted per lane and are not resumed.
//!
//! # Threads
//!
//! A stream's messages up to 64 KiB (small frames, one or several to a message) are written
//! into local slots on Zenoh's receiving thread, in the subscriber's callback: no hand-over
//! to another thread, whose wake-up (a context switch, several µs on a busy machine) would
//! otherwise be paid for every message. Everything else goes through a bounded queue to the
//! importer's own thread: larger messages, whose copy into a slot would hold up the
//! reception of the next; array versions; frames of an object not described yet, which are
//! dropped while the thread asks for its description (a Zenoh query it does not wait for:
//! the answer comes back as news, through the receiving thread, which a thread waiting for
//! it while the queue fills would hold up). A stream's message is handled in the callback
//! only while none of its messages wait in the queue, so its messages keep their order
//! either way. Both paths share the objects under one lock, which neither holds while it
//! waits for an answer from Zenoh. Either path waiting for a local slot (a lossless local
//! subscriber behind) holds up Zenoh's receiving thread, directly, through the full queue or
//! through the lock: backpressure reaches the link, and the other objects of this import wait
//! too.
//!
//! # Copies
//!
//! A frame's bytes are copied once, from Zenoh's receive buffers into the loaned local slot,
//! slice by slice; an array version once, into the array under its seqlock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use mmshare::{Client, CreateOptions, Publisher, RawArray, Shared, StreamOptions};
use zenoh::Wait;
use zenoh::bytes::ZBytes;
use zenoh::sample::{Sample, SampleKind};

use crate::message::{self, BadMessage, HEAD, Head};
use crate::stats::{Stats, word};
use crate::{Result, connect, glob_key, glob_matches};
use mmshare::bridge_stats::Direction;

/// How long an unanswered resume request waits before it is asked again.
const RESUME_AGAIN: Duration = Duration::from_secs(1);

/// A local stream fed from a remote one.
struct StreamIn {
    publisher: Publisher<u8>,
    stats: Stats,
    /// The remote number wanted next (a stream of one publisher), once known.
    next: Option<u64>,
    /// Per remote lane, the number expected next (several publishers).
    lanes: HashMap<u32, u64>,
    one_lane: bool,
    lossy: bool,
    /// When a resume was last asked for, while its answer has not come.
    asked: Option<Instant>,
    /// The remote stream's creation time, once a frame said it: a stream deleted and made
    /// again under the name is numbered afresh.
    source: Option<u64>,
}

/// A local array fed from a remote one.
struct ArrayIn {
    array: Shared<RawArray>,
    stats: Stats,
    /// The newest remote version written.
    version: u64,
    /// The remote array's creation time, once a version said it.
    source: Option<u64>,
}

enum Local {
    Stream(Box<StreamIn>),
    Array(Box<ArrayIn>),
    /// Not imported, for the reason given once.
    Refused,
}

/// One `--import`.
pub struct Import {
    pub session: zenoh::Session,
    pub socket: Option<String>,
    pub remote: String,
    pub glob: String,
}

/// Hands the bytes `[start, start + len)` of `payload` to `out(offset, bytes)`, slice by
/// slice, offsets counted from `start`.
fn for_each_in(payload: &ZBytes, start: usize, len: usize, mut out: impl FnMut(usize, &[u8])) {
    let end = start + len;
    let mut at = 0usize;
    for slice in payload.slices() {
        let (from, to) = (start.max(at), end.min(at + slice.len()));
        if from < to {
            out(from - start, &slice[from - at..to - at]);
        }
        at += slice.len();
        if at >= end {
            break;
        }
    }
}

/// The head of the frame at byte `at` of a message, and its per-frame header (copied: a few
/// dozen bytes).
fn read_head(payload: &ZBytes, at: usize) -> std::result::Result<(Head, Vec<u8>), BadMessage> {
    let left = payload.len().saturating_sub(at);
    let mut first = [0u8; HEAD];
    let mut got = 0;
    for_each_in(payload, at, HEAD.min(left), |o, bytes| {
        first[o..o + bytes.len()].copy_from_slice(bytes);
        got = o + bytes.len();
    });
    let head = Head::decode(&first[..got], left)?;
    let mut header = vec![0u8; head.header_len as usize];
    for_each_in(payload, at + HEAD, header.len(), |o, bytes| {
        header[o..o + bytes.len()].copy_from_slice(bytes);
    });
    Ok((head, header))
}

/// What the discovery thread tells the frame loop.
enum Found {
    /// The remote bridge came (true) or went (false).
    Remote(bool),
    /// An exported object and its description.
    Object(String, serde_json::Value),
    /// An array's newest version, as asked for.
    Latest(String, ZBytes),
}

/// How often the importer asks again what the remote side exports (new arrays that never
/// change would not be seen otherwise; new streams are also seen at their first frame).
const DISCOVER_EVERY: Duration = Duration::from_secs(1);

/// A stream's messages up to this size (one or more frames, with their heads) are written
/// into local slots on Zenoh's receiving thread, in the subscriber's callback: a message then
/// costs no hand-over to the importer's thread (a wake-up, on a busy machine a context switch
/// of several µs). Larger ones go to the importer's thread, so that the copy of one does not
/// hold up the reception of the next.
const INLINE_BYTES: u64 = 64 << 10;

/// Messages waiting for the importer's thread, at most: a full queue holds up Zenoh's
/// receiving thread (and so the link), as Zenoh's own subscriber queue does.
const QUEUED: usize = 256;

/// The objects being imported: shared by the importer's thread and Zenoh's receive callback.
#[derive(Default)]
struct Locals {
    objects: HashMap<String, Local>,
    /// Per stream, its messages handed to the importer's thread and not handled yet. The
    /// callback handles a stream's message itself only when none wait there, so that the
    /// stream's messages keep their order.
    queued: HashMap<String, usize>,
}

fn lock(locals: &Mutex<Locals>) -> MutexGuard<'_, Locals> {
    locals.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts one queued message of a stream as handled when dropped (after the handling's own
/// lock has gone: it takes the lock).
struct Handled<'a> {
    locals: &'a Mutex<Locals>,
    name: Option<String>,
}

impl Drop for Handled<'_> {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            let mut l = lock(self.locals);
            if let Some(n) = l.queued.get_mut(name) {
                *n -= 1;
                if *n == 0 {
                    l.queued.remove(name);
                }
            }
        }
    }
}

/// What handling a stream's frames needs of the import.
struct Ctx {
    session: zenoh::Session,
    remote: String,
}

/// The kind (`frames`, `versions`) and object name of a key under `remote`, if the name
/// matches `glob`.
fn parse_key<'k>(remote: &str, glob: &str, key: &'k str) -> Option<(&'k str, &'k str)> {
    let (kind, name) = key
        .strip_prefix(remote)?
        .strip_prefix('/')?
        .split_once('/')?;
    (matches!(kind, "frames" | "versions") && glob_matches(glob, name)).then_some((kind, name))
}

impl Import {
    /// Runs the import until the daemon goes away.
    pub fn run(self) -> Result {
        let client = connect(self.socket.as_deref())?;
        let (found, arrivals) = mpsc::channel();
        let describe = found.clone();
        let key = format!("{}/*/{}", self.remote, glob_key(&self.glob));
        let ctx = Arc::new(Ctx {
            session: self.session.clone(),
            remote: self.remote.clone(),
        });
        let shared: Arc<Mutex<Locals>> = Arc::default();
        let (handoff, queue) = mpsc::sync_channel::<Sample>(QUEUED);
        let _subscriber = self
            .session
            .declare_subscriber(&key)
            .callback({
                let (ctx, shared, glob) = (ctx.clone(), shared.clone(), self.glob.clone());
                move |sample| {
                    if let Some(("frames", name)) =
                        parse_key(&ctx.remote, &glob, sample.key_expr().as_str())
                    {
                        let mut guard = lock(&shared);
                        let l = &mut *guard;
                        if sample.payload().len() as u64 <= INLINE_BYTES
                            && !l.queued.contains_key(name)
                            && let Some(Local::Stream(s)) = l.objects.get_mut(name)
                        {
                            ctx.message(name, s, sample.payload());
                            return;
                        }
                        *l.queued.entry(name.to_owned()).or_default() += 1;
                    }
                    // The importer's thread is gone only when the import ends.
                    let _ = handoff.send(sample);
                }
            })
            .wait()
            .map_err(|e| format!("zenoh subscriber {key}: {e}"))?;
        eprintln!("mmshare-bridge: importing {key}");
        let discovery = Discovery {
            session: self.session.clone(),
            remote: self.remote.clone(),
            glob: self.glob.clone(),
        };
        std::thread::spawn(move || discovery.run(&found));
        let mut seen_remote = false;
        let mut remote_up = false;
        let mut asked_meta: HashMap<String, Instant> = HashMap::new();
        // Per object not made yet: the first frame seen (number, source).
        let mut first_seen: HashMap<String, (u64, u64)> = HashMap::new();
        // Per array not made yet: the newest version seen.
        let mut waiting_version: HashMap<String, ZBytes> = HashMap::new();
        loop {
            while let Ok(news) = arrivals.try_recv() {
                match news {
                    Found::Remote(up) => {
                        for local in lock(&shared).objects.values_mut() {
                            let stats = match local {
                                Local::Stream(s) => &mut s.stats,
                                Local::Array(a) => &mut a.stats,
                                Local::Refused => continue,
                            };
                            if up && seen_remote {
                                stats.add(word::RECONNECTS, 1);
                            }
                            stats.w[word::CONNECTED] = u64::from(up);
                        }
                        seen_remote |= up;
                        remote_up = up;
                    }
                    Found::Object(name, meta) => {
                        if lock(&shared).objects.contains_key(&name) {
                            continue;
                        }
                        // Made without the lock (the daemon is asked), then put in.
                        let first = first_seen.remove(&name);
                        let made = make(&client, &self.remote, &name, &meta);
                        let mut made = from_first(connected(made, remote_up), first);
                        if let (Local::Array(a), Some(payload)) =
                            (&mut made, waiting_version.remove(&name))
                        {
                            version(&name, a, &payload);
                        }
                        lock(&shared).objects.entry(name).or_insert(made);
                    }
                    Found::Latest(name, payload) => {
                        if let Some(Local::Array(a)) = lock(&shared).objects.get_mut(&name) {
                            version(&name, a, &payload);
                        }
                    }
                }
            }
            for local in lock(&shared).objects.values_mut() {
                match local {
                    Local::Stream(s) => s.stats.tick(),
                    Local::Array(a) => a.stats.tick(),
                    Local::Refused => {}
                }
            }
            let sample = match queue.recv_timeout(Duration::from_millis(100)) {
                Ok(sample) => sample,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("zenoh: the subscriber is gone".into());
                }
            };
            let Some((kind, name)) =
                parse_key(&self.remote, &self.glob, sample.key_expr().as_str())
            else {
                continue;
            };
            let name = name.to_owned();
            let _handled = Handled {
                locals: &shared,
                name: (kind == "frames").then(|| name.clone()),
            };
            if !lock(&shared).objects.contains_key(&name) {
                // A frame of an object not described yet: ask for its description (at most
                // once a second; the discovery thread asks too). Until then its frames are
                // dropped; the first one's number is kept, so that a lossless stream asks for
                // them again once it is made (and a lossy one counts them lost). The answer
                // comes back as news (the object is made at the top of the loop): this thread
                // never waits for it, so it keeps draining the queue, and Zenoh's receiving
                // thread, which brings the answer, is never held up by a full queue meanwhile.
                if kind == "frames"
                    && let Ok((head, _)) = read_head(sample.payload(), 0)
                {
                    first_seen
                        .entry(name.clone())
                        .or_insert((head.number, head.source));
                }
                if kind == "versions" {
                    // An array's version is written once the array is made (the newest one
                    // seen meanwhile: they replace each other).
                    waiting_version.insert(name.clone(), sample.payload().clone());
                }
                if asked_meta
                    .get(&name)
                    .is_some_and(|t| t.elapsed() < DISCOVER_EVERY)
                {
                    continue;
                }
                asked_meta.insert(name.clone(), Instant::now());
                let key = format!("{}/meta/{name}", self.remote);
                let (describe, remote) = (describe.clone(), self.remote.clone());
                let asked = self
                    .session
                    .get(&key)
                    .timeout(Duration::from_secs(3))
                    .callback(move |reply| {
                        if let Ok(sample) = reply.result()
                            && let Some((name, meta)) = description(&remote, sample)
                        {
                            let _ = describe.send(Found::Object(name, meta));
                        }
                    })
                    .wait();
                if let Err(e) = asked {
                    eprintln!("mmshare-bridge: {key}: {e}");
                }
                continue;
            }
            // Handled with the lock, which goes before `_handled` counts the message done
            // (that takes the lock too).
            {
                let mut guard = lock(&shared);
                let payload = sample.payload();
                match guard.objects.get_mut(&name) {
                    Some(Local::Stream(s)) => ctx.message(&name, s, payload),
                    Some(Local::Array(a)) => version(&name, a, payload),
                    Some(Local::Refused) | None => {}
                }
            }
            drop(_handled);
        }
    }
}

impl Ctx {
    /// Asks the exporter to send again from frame `from`.
    fn ask_resume(&self, name: &str, from: u64, s: &mut StreamIn) {
        let key = format!("{}/resume/{name}?from={from}", self.remote);
        eprintln!("mmshare-bridge: {name}: a gap before frame {from}: asking {key}");
        let _ = self.session.get(key).callback(|_| {}).wait();
        s.asked = Some(Instant::now());
        s.stats.add(word::RESUMES, 1);
    }

    /// Every frame of a message, in order.
    fn message(&self, name: &str, s: &mut StreamIn, payload: &ZBytes) {
        let mut at = 0;
        while at < payload.len() {
            match read_head(payload, at) {
                Ok((head, header)) => {
                    self.frame(name, s, &head, &header, payload, at + HEAD + header.len());
                    at += head.len();
                }
                Err(e) => {
                    eprintln!("mmshare-bridge: {name}: the rest of a message dropped: {e}");
                    s.stats.add(word::DROPPED, 1);
                    return;
                }
            }
        }
    }

    /// One frame, whose bytes start at byte `data` of the message.
    fn frame(
        &self,
        name: &str,
        s: &mut StreamIn,
        head: &Head,
        header: &[u8],
        payload: &ZBytes,
        data: usize,
    ) {
        let n = head.number;
        if s.source != Some(head.source) {
            if let Some(was) = s.source {
                // The remote stream was deleted and made again: its numbers start over, and
                // the mapping to local numbers with them.
                eprintln!(
                    "mmshare-bridge: {name}: the remote stream was made again (created at {} ns, \
                     was {was} ns); numbering afresh from its frame 0",
                    head.source
                );
                s.next = Some(0);
                s.lanes.clear();
                s.stats.w[word::MAPPED] = 0;
            }
            s.source = Some(head.source);
            s.stats.w[word::SOURCE] = head.source;
        }
        if head.lane as usize >= mmshare::MAX_PUBLISHERS as usize {
            eprintln!(
                "mmshare-bridge: {name}: a frame of lane {}: dropped",
                head.lane
            );
            s.stats.add(word::DROPPED, 1);
            return;
        }
        if !s.one_lane || head.lane != 0 {
            let expected = s.lanes.entry(head.lane).or_insert(n);
            if n < *expected {
                s.stats.add(word::DUPLICATES, 1);
                return;
            }
            s.stats.add(word::LOST, n - *expected);
            *expected = n + 1;
        } else {
            let asked_lately = s.asked.is_some_and(|t| t.elapsed() < RESUME_AGAIN);
            match judge(s.next, head, s.lossy, asked_lately) {
                Verdict::Take { lost } => {
                    if lost > 0 && !s.lossy {
                        eprintln!(
                            "mmshare-bridge: {name}: frames {}..{n} are no longer offered at \
                             the source: lost",
                            n - lost
                        );
                    }
                    s.stats.add(word::LOST, lost);
                }
                Verdict::Duplicate | Verdict::Await => {
                    s.stats.add(word::DUPLICATES, 1);
                    return;
                }
                Verdict::AskResume(from) => {
                    self.ask_resume(name, from, s);
                    s.stats.add(word::DUPLICATES, 1);
                    return;
                }
            }
        }
        s.asked = None;
        if self.publish(name, s, head, header, payload, data) && s.one_lane && head.lane == 0 {
            s.next = Some(n + 1);
            s.stats.w[word::NEXT] = n + 1;
        }
    }

    /// Writes one frame into a loaned local slot and publishes it; false if it was dropped.
    fn publish(
        &self,
        name: &str,
        s: &mut StreamIn,
        head: &Head,
        header: &[u8],
        payload: &ZBytes,
        data: usize,
    ) -> bool {
        let data_len = head.data_len as usize;
        let variable = s.publisher.is_variable();
        let mut loan = loop {
            match s.publisher.loan() {
                Ok(loan) => break loan,
                Err(mmshare::StreamError::LoanTimeout { .. }) => continue,
                Err(e) => {
                    eprintln!("mmshare-bridge: {name}: no slot: {e}");
                    s.stats.add(word::DROPPED, 1);
                    return false;
                }
            }
        };
        if variable && let Err(e) = loan.set_rows(head.rows) {
            eprintln!("mmshare-bridge: {name}: frame {}: {e}", head.number);
            s.stats.add(word::DROPPED, 1);
            return false;
        }
        if loan.len() != data_len {
            eprintln!(
                "mmshare-bridge: {name}: frame {} has {data_len} bytes, the local stream's {}; dropped",
                head.number,
                loan.len()
            );
            s.stats.add(word::DROPPED, 1);
            return false;
        }
        let slot = loan.header_bytes_mut();
        if slot.len() != header.len() {
            eprintln!(
                "mmshare-bridge: {name}: frame {} has a {}-byte per-frame header, the local \
                 stream's is {}; dropped",
                head.number,
                header.len(),
                slot.len()
            );
            s.stats.add(word::DROPPED, 1);
            return false;
        }
        slot.copy_from_slice(header);
        let frame: &mut [u8] = &mut loan;
        for_each_in(payload, data, data_len, |at, bytes| {
            frame[at..at + bytes.len()].copy_from_slice(bytes);
        });
        // The number mapping is written before the frame that uses it is published: a
        // restarted importer must never take a frame it published for one it did not.
        let offset = head.number.wrapping_sub(loan.number());
        if s.one_lane
            && head.lane == 0
            && (offset != s.stats.w[word::OFFSET] || s.stats.w[word::MAPPED] == 0)
        {
            s.stats.w[word::OFFSET] = offset;
            s.stats.w[word::MAPPED] = 1;
            if !s.stats.flush() {
                eprintln!(
                    "mmshare-bridge: {name}: frame {} dropped: its mapping was not saved",
                    head.number
                );
                s.stats.w[word::MAPPED] = 0;
                s.stats.add(word::DROPPED, 1);
                return false;
            }
        }
        loan.publish();
        s.stats.add(word::FRAMES, 1);
        s.stats.add(word::BYTES, (data_len + header.len()) as u64);
        s.stats.add(word::COPIED, (data_len + header.len()) as u64);
        true
    }
}

/// Watches the remote bridge come and go, and asks what it exports.
struct Discovery {
    session: zenoh::Session,
    remote: String,
    glob: String,
}

impl Discovery {
    fn run(self, found: &mpsc::Sender<Found>) {
        let (events, changes) = mpsc::channel();
        let alive = self
            .session
            .liveliness()
            .declare_subscriber(format!("{}/bridge", self.remote))
            .history(true)
            .callback(move |sample| {
                let _ = events.send(sample.kind() == SampleKind::Put);
            })
            .wait();
        if let Err(e) = &alive {
            eprintln!("mmshare-bridge: zenoh liveliness: {e}; reconnects are not counted");
        }
        let mut known: HashMap<String, bool> = HashMap::new();
        loop {
            let mut came_back = false;
            match changes.recv_timeout(DISCOVER_EVERY) {
                Ok(up) => {
                    came_back = up;
                    if found.send(Found::Remote(up)).is_err() {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(DISCOVER_EVERY);
                }
            }
            let key = format!("{}/meta/{}", self.remote, glob_key(&self.glob));
            for (name, meta) in ask_meta(&self.session, &self.remote, &key) {
                if !glob_matches(&self.glob, &name) {
                    continue;
                }
                let is_array = meta["kind"] == "array";
                let new = !known.contains_key(&name);
                known.insert(name.clone(), is_array);
                if new && found.send(Found::Object(name.clone(), meta)).is_err() {
                    return;
                }
                // An array's newest version: when it is first seen, and after the remote
                // bridge came back (versions put while the link was down never arrived).
                if is_array && (new || came_back) {
                    for payload in ask(&self.session, &format!("{}/latest/{name}", self.remote)) {
                        if found.send(Found::Latest(name.clone(), payload)).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The payloads of the replies to a query, waiting at most a few seconds.
fn ask(session: &zenoh::Session, key: &str) -> Vec<ZBytes> {
    ask_keyed(session, key)
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

fn ask_keyed(session: &zenoh::Session, key: &str) -> Vec<(String, ZBytes)> {
    let mut got = Vec::new();
    let Ok(replies) = session.get(key).timeout(Duration::from_secs(3)).wait() else {
        return got;
    };
    while let Ok(reply) = replies.recv() {
        if let Ok(sample) = reply.result() {
            got.push((
                sample.key_expr().as_str().to_owned(),
                sample.payload().clone(),
            ));
        }
    }
    got
}

/// The (name, description) replies to a `meta` query.
fn ask_meta(session: &zenoh::Session, remote: &str, key: &str) -> Vec<(String, serde_json::Value)> {
    let mut found = Vec::new();
    for (reply_key, payload) in ask_keyed(session, key) {
        if let Some(described) = described(remote, &reply_key, &payload) {
            found.push(described);
        }
    }
    found
}

/// The (name, description) a reply to a `meta` query gives, if it is one.
fn description(remote: &str, sample: &Sample) -> Option<(String, serde_json::Value)> {
    described(remote, sample.key_expr().as_str(), sample.payload())
}

fn described(
    remote: &str,
    reply_key: &str,
    payload: &ZBytes,
) -> Option<(String, serde_json::Value)> {
    let name = reply_key.strip_prefix(&format!("{remote}/meta/"))?;
    match serde_json::from_slice(&payload.to_bytes()) {
        Ok(meta) => Some((name.to_owned(), meta)),
        Err(e) => {
            eprintln!("mmshare-bridge: {reply_key}: a description that is not JSON: {e}");
            None
        }
    }
}

/// Writes an array version, unless an equal or newer one was written already.
fn version(name: &str, a: &mut ArrayIn, payload: &ZBytes) {
    let head = match read_head(payload, 0) {
        Ok((head, _)) if head.flags & message::ARRAY != 0 => head,
        Ok(_) => return,
        Err(e) => {
            eprintln!("mmshare-bridge: {name}: a message dropped: {e}");
            a.stats.add(word::DROPPED, 1);
            return;
        }
    };
    if a.source != Some(head.source) {
        if a.source.is_some() {
            eprintln!("mmshare-bridge: {name}: the remote array was made again; versions afresh");
        }
        a.version = 0;
        a.source = Some(head.source);
        a.stats.w[word::SOURCE] = head.source;
    }
    if head.number <= a.version {
        a.stats.add(word::DUPLICATES, 1);
        return;
    }
    let len = head.data_len as usize;
    if len as u64 != a.array.info().data_len {
        eprintln!(
            "mmshare-bridge: {name}: a version of {len} bytes, the local array's is {}; dropped",
            a.array.info().data_len
        );
        a.stats.add(word::DROPPED, 1);
        return;
    }
    let data = HEAD + head.header_len as usize;
    let written = a.array.write_stream(|w| {
        for_each_in(payload, data, len, |at, bytes| w.write_at(at as u64, bytes));
    });
    if let Err(e) = written {
        eprintln!(
            "mmshare-bridge: {name}: version {} not written: {e}",
            head.number
        );
        a.stats.add(word::DROPPED, 1);
        return;
    }
    if a.version != 0 && head.number > a.version + 1 {
        // Versions coalesced at the source or on the way: not lost frames, but counted.
        a.stats.add(word::LOST, head.number - a.version - 1);
    }
    a.version = head.number;
    a.stats.add(word::FRAMES, 1);
    a.stats.add(word::BYTES, len as u64);
    a.stats.add(word::COPIED, len as u64);
    a.stats.w[word::NEXT] = head.number + 1;
}

/// What the importer does with a frame of a stream of one publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Publish it; `lost` frames before it will never come (counted).
    Take { lost: u64 },
    /// Drop it: delivered already.
    Duplicate,
    /// Drop it and ask the exporter to send again from this frame.
    AskResume(u64),
    /// Drop it: a resume was asked for lately, and this frame is not its answer.
    Await,
}

/// The rule for frame `head` when `next` is the frame wanted (`None`: any, the first seen).
///
/// A frame below `next` is a duplicate. One above it means frames went missing: a lossy
/// stream counts them lost; a lossless one asks to resume from `next` (unless it asked
/// lately) and drops frames until the answer, the first frame the exporter sent after
/// subscribing again from at most `next` (flag RESUMED): whatever that frame skips is no
/// longer offered at the source, and is counted lost.
fn judge(next: Option<u64>, head: &Head, lossy: bool, asked_lately: bool) -> Verdict {
    let n = head.number;
    let Some(next) = next else {
        return Verdict::Take { lost: 0 };
    };
    if n < next {
        return Verdict::Duplicate;
    }
    let answered = head.flags & message::RESUMED != 0 && head.resumed_from <= next;
    if n == next || lossy || answered {
        Verdict::Take { lost: n - next }
    } else if asked_lately {
        Verdict::Await
    } else {
        Verdict::AskResume(next)
    }
}

/// A new local stream that knows no next frame yet starts from the first frame seen before it
/// was made (so the frames dropped meanwhile are asked for again, or counted lost).
fn from_first(mut local: Local, first: Option<(u64, u64)>) -> Local {
    if let (Local::Stream(s), Some((number, source))) = (&mut local, first)
        && s.next.is_none()
        && s.one_lane
    {
        s.next = Some(number);
        s.source = Some(source);
    }
    local
}

/// A new local object, its counters told whether the remote bridge is there.
fn connected(mut local: Local, up: bool) -> Local {
    match &mut local {
        Local::Stream(s) => s.stats.w[word::CONNECTED] = u64::from(up),
        Local::Array(a) => a.stats.w[word::CONNECTED] = u64::from(up),
        Local::Refused => {}
    }
    local
}

fn u64_list(v: &serde_json::Value) -> Option<Vec<u64>> {
    v.as_array()?
        .iter()
        .map(serde_json::Value::as_u64)
        .collect()
}

/// Makes (or opens) the local object described by `meta`.
fn make(client: &Client, remote: &str, name: &str, meta: &serde_json::Value) -> Local {
    match try_make(client, name, meta) {
        Ok(local) => {
            eprintln!("mmshare-bridge: importing {remote}/{name} into {name}");
            local
        }
        Err(e) => {
            eprintln!("mmshare-bridge: {name} not imported: {e}");
            Local::Refused
        }
    }
}

fn try_make(client: &Client, name: &str, meta: &serde_json::Value) -> Result<Local> {
    let dtype = meta["dtype"]
        .as_str()
        .ok_or("a description without a dtype")?;
    let shape = u64_list(&meta["shape"]).ok_or("a description without a shape")?;
    let order = if meta["order"] == "F" {
        mmshare::Order::F
    } else {
        mmshare::Order::C
    };
    // Memory-backed at the source (the daemon's memory directory): memory-backed here too.
    let memory = meta["memory"].as_bool().unwrap_or(false);
    match meta["kind"].as_str() {
        Some("array") => {
            let mut options = CreateOptions::new(name, dtype, &shape)
                .order(order)
                .exist_ok(true);
            if memory {
                options = options.memory();
            }
            let array = client.create(&options).map_err(|e| e.to_string())?;
            if array.info().dtype != dtype || array.info().shape != shape {
                return Err(format!(
                    "the local array is {} {:?}, the remote one {dtype} {shape:?}",
                    array.info().dtype,
                    array.info().shape
                ));
            }
            let (stats, _) = Stats::open(client, Direction::In, name);
            Ok(Local::Array(Box::new(ArrayIn {
                array,
                stats,
                version: 0,
                source: None,
            })))
        }
        Some("stream") => {
            let mut options = StreamOptions::new(name, dtype, &shape)
                .order(order)
                .slots(meta["slots"].as_u64().unwrap_or(8) as u32)
                .history(meta["history"].as_u64().unwrap_or(0) as u32)
                .variable(meta["variable"].as_bool().unwrap_or(false))
                .exist_ok(true);
            if let Some(h) = meta["header"].as_str().filter(|h| !h.is_empty()) {
                options = options.header(h);
            }
            if memory {
                options = options.memory();
            }
            client.create_stream(&options).map_err(|e| e.to_string())?;
            let publisher = client.publisher_bytes(name).map_err(|e| e.to_string())?;
            let one_lane = meta["max_publishers"].as_u64().unwrap_or(1) <= 1;
            // Counters carry on from the previous run (Stats::open); the next remote frame
            // follows from the local stream and the number mapping that run saved, for the
            // remote stream it was about (checked at the first frame).
            let (mut stats, previous) = Stats::open(client, Direction::In, name);
            let mut next = None;
            let mut source = None;
            match previous {
                Some(p) if one_lane && p[word::MAPPED] == 1 => {
                    let n = publisher.next_number().wrapping_add(p[word::OFFSET]);
                    next = Some(n);
                    source = Some(p[word::SOURCE]);
                    stats.w[word::NEXT] = n;
                }
                _ => stats.w[word::MAPPED] = 0,
            }
            stats.flush();
            Ok(Local::Stream(Box::new(StreamIn {
                publisher,
                stats,
                next,
                lanes: HashMap::new(),
                one_lane,
                lossy: meta["lossy"].as_bool().unwrap_or(false),
                asked: None,
                source,
            })))
        }
        other => Err(format!("unknown kind {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_frame_is_taken_dropped_or_asked_for_by_the_rule() {
        let head = |number, flags, resumed_from| Head {
            number,
            flags,
            resumed_from,
            ..Head::default()
        };
        let take = |lost| Verdict::Take { lost };
        // Nothing known yet: the first frame is taken.
        assert_eq!(judge(None, &head(57, 0, 0), false, false), take(0));
        // In order; a duplicate; a gap in a lossless stream asks once, then waits.
        assert_eq!(judge(Some(10), &head(10, 0, 0), false, false), take(0));
        assert_eq!(
            judge(Some(10), &head(9, 0, 0), false, false),
            Verdict::Duplicate
        );
        assert_eq!(
            judge(Some(10), &head(9, message::RESUMED, 0), false, false),
            Verdict::Duplicate
        );
        assert_eq!(
            judge(Some(10), &head(12, 0, 0), false, false),
            Verdict::AskResume(10)
        );
        assert_eq!(
            judge(Some(10), &head(12, 0, 0), false, true),
            Verdict::Await
        );
        // The answer: sent again from at most 10, starting at 12: 10 and 11 are gone.
        assert_eq!(
            judge(Some(10), &head(12, message::RESUMED, 10), false, true),
            take(2)
        );
        assert_eq!(
            judge(Some(10), &head(12, message::RESUMED, 4), false, true),
            take(2)
        );
        // An answer to another importer's later request is not ours.
        assert_eq!(
            judge(Some(10), &head(12, message::RESUMED, 11), false, true),
            Verdict::Await
        );
        // A lossy stream counts its gaps and never asks.
        assert_eq!(
            judge(Some(10), &head(15, message::LOSSY, 0), true, false),
            take(5)
        );
        assert_eq!(
            judge(Some(10), &head(3, message::LOSSY, 0), true, false),
            Verdict::Duplicate
        );
    }

    /// A message of two frames, cut into slices at awkward places (inside the heads too),
    /// as Zenoh may hand it over.
    #[test]
    fn frames_are_read_across_slice_boundaries() {
        let frame = |number: u64, header: &[u8], data: &[u8]| {
            let head = Head {
                number,
                header_len: header.len() as u32,
                data_len: data.len() as u64,
                ..Head::default()
            };
            [&head.encode()[..], header, data].concat()
        };
        let bytes = [frame(7, b"hh", b"abcdef"), frame(8, b"", b"xyz")].concat();
        for cuts in [vec![], vec![3], vec![1, 70], vec![63, 64, 65, 66, 75, 76]] {
            let mut writer = ZBytes::writer();
            let mut last = 0;
            for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
                writer.append(ZBytes::from(bytes[last..c].to_vec()));
                last = c;
            }
            let payload = writer.finish();
            let (first, header) = read_head(&payload, 0).expect("first head");
            assert_eq!(
                (first.number, &header[..]),
                (7, &b"hh"[..]),
                "cuts {cuts:?}"
            );
            let mut data = vec![0u8; 6];
            for_each_in(&payload, HEAD + 2, 6, |o, b| {
                data[o..o + b.len()].copy_from_slice(b)
            });
            assert_eq!(data, b"abcdef");
            let (second, header) = read_head(&payload, first.len()).expect("second head");
            assert_eq!((second.number, header.len()), (8, 0));
            let mut data = Vec::new();
            for_each_in(&payload, first.len() + HEAD, 3, |_, b| {
                data.extend_from_slice(b)
            });
            assert_eq!(data, b"xyz");
            assert_eq!(first.len() + second.len(), payload.len());
            assert!(
                read_head(&payload, payload.len() - 3).is_err(),
                "a cut head"
            );
        }
    }
}
