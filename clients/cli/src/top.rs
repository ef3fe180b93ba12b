//! `mmshare top`: every array and stream with its update rate and throughput, the process
//! writing or publishing it, and (for streams) its subscribers and their lag; refreshed in
//! place on a terminal, or one snapshot as JSON.
//!
//! Rates come from the difference between two looks at the daemon's descriptions (an array's
//! version, a stream's frames published), so `top` itself maps nothing and slows nobody.
//! The process holding an array's write side is read from the array's header, through a
//! read-only mapping that `top` keeps per array.
//!
//! The objects `mmshare-bridge` carries to or from other hosts get a table of their own: per
//! object and direction, frames and bytes per second, frames lost, reconnects and whether the
//! other side is connected, read from the counter arrays the bridge keeps
//! ([`mmshare::bridge_stats`]) rather than listed as arrays.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use mmshare::{Access, Client, ObjectInfo, RawArray, Shared};
use serde_json::json;

use crate::commands::{Result, connect, emit, shape_text};

/// One row: what changed between two looks.
struct Row {
    name: String,
    kind: &'static str,
    dtype: String,
    shape: Vec<u64>,
    /// Versions (arrays) or frames (streams) per second.
    rate: f64,
    /// Bytes per second moved by those updates.
    bytes_per_s: f64,
    /// Version or frames published.
    count: u64,
    /// The pid writing (an array's write side, now) or publishing (a stream).
    writer: Option<u32>,
    subscribers: usize,
    /// The largest lag of a subscriber, in frames.
    max_lag: u64,
    missed: u64,
}

/// One object a bridge carries: what changed between two looks at its counters.
struct BridgeRow {
    object: String,
    direction: &'static str,
    pid: u64,
    frames_per_s: f64,
    bytes_per_s: f64,
    frames: u64,
    lost: u64,
    reconnects: u64,
    connected: bool,
}

/// A bridge's counters at one look: frames, bytes, when.
type BridgeSeen = HashMap<String, (u64, u64, Instant)>;

/// The bridge rows, from the stats arrays among `objects` (mapped read-only in `handles`).
fn bridge_rows(
    client: &Client,
    objects: &[ObjectInfo],
    seen: &mut BridgeSeen,
    handles: &mut HashMap<String, Shared<RawArray>>,
) -> Vec<BridgeRow> {
    use mmshare::bridge_stats::{self, WORDS, word};
    let now = Instant::now();
    let mut rows = Vec::new();
    let mut still = BridgeSeen::new();
    for o in objects {
        let ObjectInfo::Array(a) = o else { continue };
        let Some((direction, object)) = bridge_stats::parse_name(&a.name) else {
            continue;
        };
        if !handles.contains_key(&a.name)
            && let Ok(h) = client.open_raw(&a.name, Access::Read)
        {
            handles.insert(a.name.clone(), h);
        }
        let mut bytes = [0u8; WORDS * 8];
        let Some(w) = handles
            .get(&a.name)
            .filter(|h| h.info().data_len == bytes.len() as u64)
            .and_then(|h| h.read_bytes(0, &mut bytes).ok())
            .and_then(|_| bridge_stats::from_bytes(&bytes))
        else {
            continue;
        };
        let (frames, sent) = (w[word::FRAMES], w[word::BYTES]);
        let (f0, b0, at) = seen.get(&a.name).copied().unwrap_or((frames, sent, now));
        let secs = now.duration_since(at).as_secs_f64();
        let per_s = |d: u64| if secs > 0.0 { d as f64 / secs } else { 0.0 };
        rows.push(BridgeRow {
            object: object.to_owned(),
            direction: direction.as_str(),
            pid: w[word::PID],
            frames_per_s: per_s(frames.saturating_sub(f0)),
            bytes_per_s: per_s(sent.saturating_sub(b0)),
            frames,
            lost: w[word::LOST],
            reconnects: w[word::RECONNECTS],
            connected: w[word::CONNECTED] == 1,
        });
        still.insert(a.name.clone(), (frames, sent, now));
    }
    *seen = still;
    rows
}

/// An object's counter (version or frames published) and bytes per update.
fn counter(info: &ObjectInfo) -> (u64, u64) {
    match info {
        ObjectInfo::Array(a) => (a.version, a.data_len),
        ObjectInfo::Stream(s) => (s.published, s.frame_len),
    }
}

/// Looks at the daemon's view twice, `interval` apart, and makes the rows.
fn sample(
    client: &Client,
    interval: Duration,
    before: &mut HashMap<String, (u64, Instant)>,
    handles: &mut HashMap<String, Shared<RawArray>>,
    bridges: &mut BridgeSeen,
) -> Result<(Vec<Row>, Vec<BridgeRow>)> {
    if before.is_empty() {
        let now = Instant::now();
        let objects = client.list_all("")?;
        for o in &objects {
            before.insert(o.name().to_string(), (counter(o).0, now));
        }
        bridge_rows(client, &objects, bridges, handles);
        std::thread::sleep(interval);
    }
    let now = Instant::now();
    let objects = client.list_all("")?;
    let mut rows = Vec::with_capacity(objects.len());
    for o in &objects {
        if mmshare::bridge_stats::parse_name(o.name()).is_some() {
            continue;
        }
        let (count, unit) = counter(o);
        let (was, at) = before
            .get(o.name())
            .copied()
            .unwrap_or((count, now - interval));
        let secs = now.duration_since(at).as_secs_f64().max(1e-3);
        let rate = count.saturating_sub(was) as f64 / secs;
        let row = match o {
            ObjectInfo::Array(a) => {
                if !handles.contains_key(&a.name)
                    && let Ok(h) = client.open_raw(&a.name, Access::Read)
                {
                    handles.insert(a.name.clone(), h);
                }
                Row {
                    name: a.name.clone(),
                    kind: "array",
                    dtype: a.dtype.clone(),
                    shape: a.shape.clone(),
                    rate,
                    bytes_per_s: rate * unit as f64,
                    count,
                    writer: handles.get(&a.name).and_then(|h| h.writer()).map(|p| p.pid),
                    subscribers: 0,
                    max_lag: 0,
                    missed: 0,
                }
            }
            ObjectInfo::Stream(listed) => {
                // A listing carries no per-subscriber statistics; a description does.
                let described = match client.describe(&listed.name) {
                    Ok(ObjectInfo::Stream(s)) => Some(s),
                    _ => None,
                };
                let s = described.as_ref().unwrap_or(listed);
                Row {
                    name: s.name.clone(),
                    kind: "stream",
                    dtype: s.dtype.clone(),
                    shape: s.shape.clone(),
                    rate,
                    bytes_per_s: rate * unit as f64,
                    count,
                    writer: s.publisher,
                    subscribers: s.subscribers.len(),
                    max_lag: s.subscribers.iter().map(|x| x.lag).max().unwrap_or(0),
                    missed: s.subscribers.iter().map(|x| x.missed).sum(),
                }
            }
        };
        rows.push(row);
    }
    let bridged = bridge_rows(client, &objects, bridges, handles);
    before.clear();
    for o in &objects {
        before.insert(o.name().to_string(), (counter(o).0, now));
    }
    handles.retain(|name, _| before.contains_key(name));
    Ok((rows, bridged))
}

fn bridge_json(r: &BridgeRow) -> serde_json::Value {
    json!({
        "object": r.object,
        "direction": r.direction,
        "bridge_pid": r.pid,
        "frames_per_s": r.frames_per_s,
        "bytes_per_s": r.bytes_per_s,
        "frames": r.frames,
        "lost": r.lost,
        "reconnects": r.reconnects,
        "connected": r.connected,
    })
}

fn bridge_table(rows: &[BridgeRow]) -> Vec<String> {
    if rows.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![
        String::new(),
        format!(
            "{:<24} {:<4} {:>8} {:>10} {:>8} {:>12} {:>8} {:>10} {:>9}",
            "BRIDGED",
            "DIR",
            "PID",
            "FRAMES/S",
            "MB/S",
            "FRAMES",
            "LOST",
            "RECONNECTS",
            "CONNECTED"
        ),
    ];
    for r in rows {
        lines.push(format!(
            "{:<24} {:<4} {:>8} {:>10.0} {:>8.1} {:>12} {:>8} {:>10} {:>9}",
            r.object,
            r.direction,
            r.pid,
            r.frames_per_s,
            r.bytes_per_s / 1e6,
            r.frames,
            r.lost,
            r.reconnects,
            if r.connected { "yes" } else { "no" }
        ));
    }
    lines
}

fn row_json(r: &Row) -> serde_json::Value {
    json!({
        "name": r.name,
        "kind": r.kind,
        "dtype": r.dtype,
        "shape": r.shape,
        "updates_per_s": r.rate,
        "gb_per_s": r.bytes_per_s / 1e9,
        "count": r.count,
        "writer": r.writer,
        "subscribers": r.subscribers,
        "max_lag": r.max_lag,
        "missed": r.missed,
    })
}

fn table(rows: &[Row]) -> Vec<String> {
    let width = crate::commands::dtype_width(rows.iter().map(|r| r.dtype.as_str()));
    let mut lines = vec![format!(
        "{:<24} {:<6} {:<width$} {:<16} {:>10} {:>8} {:>12} {:>8} {:>5} {:>8} {:>8}",
        "NAME",
        "KIND",
        "DTYPE",
        "SHAPE",
        "UPDATES/S",
        "GB/S",
        "VERSION",
        "WRITER",
        "SUBS",
        "MAX LAG",
        "MISSED"
    )];
    for r in rows {
        let dash = |v: u64, show: bool| if show { v.to_string() } else { "-".into() };
        lines.push(format!(
            "{:<24} {:<6} {:<width$} {:<16} {:>10.0} {:>8.3} {:>12} {:>8} {:>5} {:>8} {:>8}",
            r.name,
            r.kind,
            crate::commands::dtype_cell(&r.dtype),
            shape_text(&r.shape),
            r.rate,
            r.bytes_per_s / 1e9,
            r.count,
            r.writer.map_or_else(|| "-".to_string(), |p| p.to_string()),
            dash(r.subscribers as u64, r.kind == "stream"),
            dash(r.max_lag, r.kind == "stream"),
            dash(r.missed, r.kind == "stream"),
        ));
    }
    lines
}

/// `top [--json] [--interval S]`.
pub fn run(socket: &Path, as_json: bool, interval: f64) -> Result {
    let client = connect(socket)?;
    let interval = Duration::from_secs_f64(interval);
    let mut before = HashMap::new();
    let mut handles = HashMap::new();
    let mut bridges = BridgeSeen::new();
    if as_json {
        let (rows, bridged) = sample(&client, interval, &mut before, &mut handles, &mut bridges)?;
        let mut list: Vec<_> = rows.iter().map(row_json).collect();
        list.extend(bridged.iter().map(|b| {
            let mut v = bridge_json(b);
            v["kind"] = json!("bridged");
            v
        }));
        return emit(&serde_json::Value::Array(list).to_string());
    }
    let terminal = std::io::stdout().is_terminal();
    loop {
        let (rows, bridged) = sample(&client, interval, &mut before, &mut handles, &mut bridges)?;
        if terminal {
            // Home and clear: the table is redrawn in place.
            print!("\x1b[H\x1b[2J");
        }
        for line in table(&rows).into_iter().chain(bridge_table(&bridged)) {
            emit(&line)?;
        }
        if !terminal {
            emit("")?;
        }
        std::thread::sleep(interval);
    }
}
