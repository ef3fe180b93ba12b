//! Exporting: a local stream's frames, or an array's versions, put on Zenoh.
//!
//! # A stream
//!
//! The exporter subscribes to the stream (lossless, or lossy with `--export-lossy`) while at
//! least one Zenoh subscriber matches its key, and puts each frame as one message
//! ([`crate::message`]) on `P/frames/NAME`: lossless with `CongestionControl::Block` (a full
//! link blocks the put, the exporter stops taking frames, and the local publisher waits, as
//! for any slow lossless subscriber), lossy with `CongestionControl::Drop`. While nothing
//! matches it holds no subscription, so an absent remote side never holds the local
//! publisher back; it remembers the next frame it owes and subscribes from there
//! ([`StartAt::Frame`]) when a subscriber appears. Frames the stream no longer offers by then
//! (older than its ring and its history; with history 0 and frames of 64 KiB or more, which
//! are loaned newest first, even the newest frame may be gone once every local subscriber is
//! past it) are counted as lost.
//!
//! An importer that finds a gap in the numbers (frames that were in flight when a link or a
//! bridge died) asks for them on `P/resume/NAME?from=N`; the exporter subscribes again from
//! frame `N` and marks the first frame it then sends [`message::RESUMED`], so the importer
//! knows that whatever is missing between `N` and that frame is gone for good.
//!
//! The frame's bytes are not copied by the bridge: the message is the head and per-frame
//! header (a small buffer) followed by a Zenoh buffer that points into the mapped slot. The
//! sample stays held until Zenoh has let go of that buffer (its transport copies it into its
//! own batches), so the slot cannot be reused under it. Up to 16 frames are lent at once (at
//! most half of the stream's hold budget), so that Zenoh's transport has the next frame
//! while it still sends one.
//!
//! Frames published faster than they go out are batched: a message takes the frames already
//! waiting behind the first, while it fits one Zenoh batch and the window allows, so a stream of
//! small frames costs one Zenoh put per batch rather than per frame. A lone frame is sent at
//! once (batching never waits).
//!
//! # An array
//!
//! The exporter waits for each new version, reads it whole (the seqlock read: one copy,
//! which a consistent snapshot needs) and puts it on `P/versions/NAME` (reliable, blocking).
//! Versions that come faster than the link takes them are coalesced: after each put the
//! exporter reads the newest. The last one put is also the answer to `P/latest/NAME`, which an
//! importer asks when it starts or when this bridge comes back after a disconnection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mmshare::{
    Access, Client, Delivery, ObjectInfo, SampleToken, StartAt, SubscribeOptions, Subscriber,
};
use zenoh::Wait;
use zenoh::bytes::ZBytes;
use zenoh::qos::CongestionControl;

use crate::message::{self, HEAD, Head};
use crate::stats::{self, Stats, word};
use crate::{Result, connect};
use mmshare::bridge_stats::Direction;

/// Frames lent at once, at most: the most a subscriber may hold.
const MAX_WINDOW: usize = 16;

/// A message takes more frames while another like the last would keep it within this: one
/// Zenoh batch (at most 65,535 bytes, less its own framing), so that a message of several
/// frames is never fragmented. Small frames published faster than they are sent go out
/// several to a message, larger ones one each.
const BATCH_BYTES: usize = 65_000;

/// No resume asked for.
const NONE: u64 = u64::MAX;

/// What one export needs.
pub struct Export {
    pub session: zenoh::Session,
    pub socket: Option<String>,
    pub prefix: String,
    pub name: String,
    pub lossy: bool,
    pub stop: Arc<AtomicBool>,
}

/// The description an importer makes its local object from (`P/meta/NAME`).
fn meta(info: &ObjectInfo, lossy: bool) -> String {
    match info {
        ObjectInfo::Stream(s) => serde_json::json!({
            "kind": "stream", "dtype": s.dtype, "shape": s.shape,
            "order": format!("{:?}", s.order), "slots": s.slots, "history": s.history,
            "header": s.header, "variable": s.variable, "max_publishers": s.max_publishers,
            "lossy": lossy, "memory": s.backing == mmshare::Backing::Memory,
        }),
        ObjectInfo::Array(a) => serde_json::json!({
            "kind": "array", "dtype": a.dtype, "shape": a.shape,
            "order": format!("{:?}", a.order), "memory": a.backing == mmshare::Backing::Memory,
        }),
    }
    .to_string()
}

/// Answers `P/meta/NAME` for as long as the returned queryable lives.
fn declare_meta(
    session: &zenoh::Session,
    key: String,
    text: String,
) -> Result<zenoh::query::Queryable<()>> {
    session
        .declare_queryable(key.clone())
        .callback({
            let key = key.clone();
            move |query| {
                // Answered with this object's own key: the query may have been a pattern.
                let _ = query.reply(key.clone(), text.clone()).wait();
            }
        })
        .wait()
        .map_err(|e| format!("zenoh queryable {key}: {e}"))
}

/// Exports one object until it is deleted (`stop`) or the daemon goes away.
pub fn run(export: Export) -> Result {
    let client = connect(export.socket.as_deref())?;
    let info = client
        .describe(&export.name)
        .map_err(|e| format!("{}: {e}", export.name))?;
    let _meta = declare_meta(
        &export.session,
        format!("{}/meta/{}", export.prefix, export.name),
        meta(&info, export.lossy),
    )?;
    match info {
        ObjectInfo::Stream(s) => {
            // Frames lent to Zenoh at once: up to 16, and at most half of what the stream's
            // subscribers may hold together, leaving the rest to local ones.
            let budget = s.slots.saturating_sub(1 + s.history.max(1)) as usize;
            let window = (budget / 2).clamp(1, MAX_WINDOW);
            stream(&export, &client, s.max_publishers <= 1, window)
        }
        ObjectInfo::Array(_) => array(&export, &client),
    }
}

/// A frame lent to Zenoh: it points into a held sample's slot; dropping it (when Zenoh is
/// done with it) tells the exporter it may release the sample.
struct Lent {
    ptr: *const u8,
    len: usize,
    done: Arc<AtomicBool>,
}

// SAFETY: `Lent` is only a view of mapped memory that stays mapped and unchanged (the sample
// is held) until `done` is set, which happens when the last reference to it is dropped; the
// exporter waits for that before it releases the sample.
unsafe impl Send for Lent {}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `unsafe impl Send for Lent`: the bytes stay valid while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
    }
}

/// A subscription whose frames are lent to Zenoh, up to `window` at once. A frame stays held
/// until Zenoh has dropped its view of it; dropping a `Lending` waits for every lent frame
/// first, so the subscriber's mapping outlives every view into it.
struct Lending {
    sub: Subscriber<u8>,
    lent: VecDeque<(SampleToken, Arc<AtomicBool>)>,
    window: usize,
}

impl Lending {
    /// Releases the frames Zenoh is done with, oldest first; when `window` frames are lent,
    /// waits for the oldest. Returns how many released frames were found torn (a slot reused
    /// under a hold: only a process scribbling on the control file can do that).
    fn settle(&mut self) -> u64 {
        let mut torn = 0;
        while let Some((_, done)) = self.lent.front() {
            if !done.load(Ordering::Acquire) {
                if self.lent.len() < self.window {
                    break;
                }
                wait_returned(done);
            }
            let (token, _) = self.lent.pop_front().expect("a front");
            torn += u64::from(!self.sub.token_is_intact(&token));
            self.sub.release_token(token);
        }
        torn
    }
}

impl Drop for Lending {
    fn drop(&mut self) {
        for (token, done) in self.lent.drain(..) {
            wait_returned(&done);
            self.sub.release_token(token);
        }
    }
}

/// Waits until Zenoh has dropped every reference to a lent frame.
///
/// There is no deadline: releasing the frame while Zenoh may read it is not an option. Zenoh
/// 1.10 copies a message into its send batches inside `put`, so this returns at once; if a
/// view is held longer (a subscriber to the bridge's own keys in the same session keeping a
/// sample), the wait is said after five seconds, once.
fn wait_returned(done: &AtomicBool) {
    let started = std::time::Instant::now();
    let mut said = false;
    let mut pause = Duration::from_micros(5);
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(1));
        if !said && started.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "mmshare-bridge: Zenoh has held a lent frame for 5 s; the stream waits for it"
            );
            said = true;
        }
    }
}

fn stream(export: &Export, client: &Client, one_lane: bool, window: usize) -> Result {
    let name = &export.name;
    let (mut stats, _) = Stats::open(client, Direction::Out, name);
    let resume = Arc::new(AtomicU64::new(NONE));
    let asked = resume.clone();
    let resume_key = format!("{}/resume/{name}", export.prefix);
    let _resume = export
        .session
        .declare_queryable(resume_key.clone())
        .callback(move |query| {
            let from = query.parameters().get("from").and_then(|f| f.parse().ok());
            if let Some(from) = from.filter(|&f| f < message::MAX_NUMBER) {
                // Several importers asking at once: the earliest frame serves them all.
                asked.fetch_min(from, Ordering::AcqRel);
                let _ = query.reply(resume_key.clone(), "ok").wait();
            } else {
                let _ = query.reply_err("give from=FRAME").wait();
            }
        })
        .wait()
        .map_err(|e| format!("zenoh queryable: {e}"))?;
    let publisher = export
        .session
        .declare_publisher(format!("{}/frames/{name}", export.prefix))
        .congestion_control(if export.lossy {
            CongestionControl::Drop
        } else {
            CongestionControl::Block
        })
        .wait()
        .map_err(|e| format!("zenoh publisher: {e}"))?;
    let matching = Arc::new(AtomicBool::new(false));
    let seen = matching.clone();
    let _listener = publisher
        .matching_listener()
        .callback(move |status| seen.store(status.matching(), Ordering::Release))
        .wait()
        .map_err(|e| format!("zenoh matching listener: {e}"))?;
    let delivery = if export.lossy {
        Delivery::Lossy
    } else {
        Delivery::Lossless
    };
    eprintln!(
        "mmshare-bridge: exporting stream {name} as {}/frames/{name} ({})",
        export.prefix,
        if export.lossy { "lossy" } else { "lossless" }
    );
    let mut subscriber: Option<Lending> = None;
    // The next frame owed to the remote side (a stream of one publisher only: numbers are
    // per lane), and whether the first frame sent from here answers a resume.
    let mut owed: Option<u64> = None;
    let mut resumed_from: Option<u64> = None;
    let mut highest_sent: Option<u64> = None;
    // Frames below this were counted lost already (or sent).
    let mut lost_counted_to = 0u64;
    let mut was_matching = false;
    let mut ever_matched = false;
    while !export.stop.load(Ordering::Acquire) {
        stats.tick();
        let now_matching = matching.load(Ordering::Acquire);
        if now_matching != was_matching {
            was_matching = now_matching;
            stats.w[word::CONNECTED] = u64::from(now_matching);
            if now_matching && ever_matched {
                stats.add(word::RECONNECTS, 1);
            }
            ever_matched |= now_matching;
            stats.flush();
        }
        let from = resume.swap(NONE, Ordering::AcqRel);
        if from != NONE && one_lane {
            // A request from any Zenoh peer: frames not published yet are refused (the
            // subscription would wait for them, and every importer with it).
            let published = match client.describe(name) {
                Ok(ObjectInfo::Stream(s)) => s.published,
                _ => 0,
            };
            if from > published {
                eprintln!(
                    "mmshare-bridge: {name}: a request to send again from frame {from} \
                     refused: {published} frames published"
                );
            } else {
                eprintln!("mmshare-bridge: {name}: sending again from frame {from}, as asked");
                subscriber = None;
                owed = Some(from);
                resumed_from = Some(from);
                stats.add(word::RESUMES, 1);
            }
        }
        if !now_matching {
            subscriber = None;
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        if subscriber.is_none() {
            let start = owed.map_or(StartAt::Next, StartAt::Frame);
            let options = SubscribeOptions::new(delivery).start(start);
            // The window shrinks to one frame if local subscribers hold the rest.
            let sub = match client
                .subscribe_bytes(name, options.max_held(window))
                .or_else(|_| client.subscribe_bytes(name, options.max_held(1)))
            {
                Ok(sub) => sub,
                Err(e) => {
                    eprintln!("mmshare-bridge: {name}: cannot subscribe ({e}); trying again");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            stats.w[word::SOURCE] = sub.files().header().created_ns;
            let window = sub.max_held();
            subscriber = Some(Lending {
                sub,
                lent: VecDeque::new(),
                window,
            });
        }
        let lending = subscriber.as_mut().expect("subscribed above");
        stats.add(word::DROPPED, lending.settle());
        // One message: the first frame (waited for), then the frames already published
        // behind it, while the window and the batch size allow.
        let source = lending.sub.files().header().created_ns;
        let mut failed = None;
        let mut payload = ZBytes::writer();
        let mut batch: Vec<(u64, usize, usize)> = Vec::new();
        let mut batch_bytes = 0usize;
        loop {
            let sample = if batch.is_empty() {
                match lending.sub.receive_timeout(Duration::from_millis(100)) {
                    Ok(sample) => sample,
                    Err(mmshare::StreamError::ReceiveTimeout { .. }) => break,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            } else {
                match lending.sub.receive() {
                    Ok(Some(sample)) => sample,
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            };
            // Frames skipped before this one, counted once even when a resume goes back
            // over numbers already counted.
            let number = sample.number();
            let skipped_from = number - sample.missed_before().min(number);
            stats.add(
                word::LOST,
                number.saturating_sub(skipped_from.max(lost_counted_to)),
            );
            lost_counted_to = lost_counted_to.max(number + 1);
            let header = sample.header_bytes();
            let frame: &[u8] = &sample;
            let mut flags = if export.lossy { message::LOSSY } else { 0 };
            if resumed_from.is_some() && batch.is_empty() {
                flags |= message::RESUMED;
            }
            let mut head = Vec::with_capacity(HEAD + header.len());
            head.extend_from_slice(
                &Head {
                    flags,
                    number,
                    published_ns: sample.published_ns(),
                    rows: sample.rows(),
                    publisher: sample.publisher().map_or(0, |p| p.id()),
                    lane: sample.lane() as u32,
                    header_len: header.len() as u32,
                    resumed_from: resumed_from.unwrap_or(0),
                    data_len: frame.len() as u64,
                    source,
                }
                .encode(),
            );
            head.extend_from_slice(header);
            let done = Arc::new(AtomicBool::new(false));
            let lent = Lent {
                ptr: frame.as_ptr(),
                len: frame.len(),
                done: done.clone(),
            };
            batch.push((number, frame.len(), header.len()));
            batch_bytes += HEAD + header.len() + frame.len();
            // From here the frame is held by its token until Zenoh lets go of it.
            lending.lent.push_back((sample.into_token(), done));
            payload.append(ZBytes::from(head));
            payload.append(ZBytes::from(bytes::Bytes::from_owner(lent)));
            // Another frame like this one would not fit: stop here.
            let this = HEAD + batch.last().map_or(0, |b| b.1 + b.2);
            if lending.lent.len() >= lending.window || batch_bytes + this > BATCH_BYTES {
                break;
            }
        }
        if let Some(e) = failed {
            // Whatever went wrong with the subscription (the publisher evicted it, its files
            // were damaged), a new one starts from the frame owed. The frames taken for this
            // message are not sent (still owed); their views go before the subscription does.
            eprintln!("mmshare-bridge: {name}: {e}; subscribing again");
            drop(payload);
            subscriber = None;
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = publisher.put(payload.finish()).wait() {
            // The session is going down (the link or the other side is gone): the frames
            // are still owed, and sent again once someone matches.
            eprintln!(
                "mmshare-bridge: {name}: frames {}..={} not sent: {e}",
                batch[0].0,
                batch[batch.len() - 1].0
            );
            subscriber = None;
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        for (number, frame_len, header_len) in batch {
            highest_sent = highest_sent.max(Some(number));
            stats.add(word::FRAMES, 1);
            stats.add(word::BYTES, (frame_len + header_len) as u64);
            stats.add(word::COPIED, header_len as u64);
            if one_lane {
                owed = Some(number + 1);
                stats.w[word::NEXT] = number + 1;
            }
        }
        resumed_from = None;
    }
    stats.flush();
    Ok(())
}

fn array(export: &Export, client: &Client) -> Result {
    let name = &export.name;
    let (mut stats, _) = Stats::open(client, Direction::Out, name);
    let array = client
        .open_raw(name, Access::Read)
        .map_err(|e| format!("{name}: {e}"))?;
    let latest: Arc<Mutex<Option<ZBytes>>> = Arc::default();
    let answer = latest.clone();
    let latest_key = format!("{}/latest/{name}", export.prefix);
    let _latest = export
        .session
        .declare_queryable(latest_key.clone())
        .callback(move |query| {
            let last = answer.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(last) = last {
                let _ = query.reply(latest_key.clone(), last).wait();
            }
        })
        .wait()
        .map_err(|e| format!("zenoh queryable: {e}"))?;
    let publisher = export
        .session
        .declare_publisher(format!("{}/versions/{name}", export.prefix))
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(|e| format!("zenoh publisher: {e}"))?;
    eprintln!(
        "mmshare-bridge: exporting array {name} as {}/versions/{name}",
        export.prefix
    );
    let len = array.info().data_len as usize;
    let mut sent = 0u64;
    while !export.stop.load(Ordering::Acquire) {
        stats.tick();
        if array.version() == sent {
            let _ = array.wait_for_version(sent, Duration::from_millis(100));
            continue;
        }
        let mut message = vec![0u8; HEAD + len];
        let snapshot = match array.read_bytes(0, &mut message[HEAD..]) {
            Ok(s) => s,
            Err(e) => {
                // Torn (a writer died mid-write) or a read that kept racing writers: the next
                // version is sent when there is one.
                eprintln!("mmshare-bridge: {name}: version not sent: {e}");
                stats.add(word::DROPPED, 1);
                sent = array.version();
                continue;
            }
        };
        let head = Head {
            flags: message::ARRAY,
            number: snapshot.version,
            published_ns: stats::now_ns(),
            data_len: len as u64,
            source: array.header().created_ns,
            ..Head::default()
        };
        message[..HEAD].copy_from_slice(&head.encode());
        let payload = ZBytes::from(message);
        *latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(payload.clone());
        if let Err(e) = publisher.put(payload).wait() {
            // Sent again (or a newer version) once Zenoh takes puts again.
            eprintln!(
                "mmshare-bridge: {name}: version {} not sent: {e}",
                snapshot.version
            );
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        sent = snapshot.version;
        stats.add(word::FRAMES, 1);
        stats.add(word::BYTES, len as u64);
        stats.add(word::COPIED, len as u64);
        stats.w[word::NEXT] = sent + 1;
    }
    stats.flush();
    Ok(())
}
