//! `mmshare top`: every array and stream with its update rate and throughput, the process
//! writing or publishing it, and (for streams) its subscribers and their lag; refreshed in
//! place on a terminal, or one snapshot as JSON.
//!
//! Rates come from the difference between two looks at the daemon's descriptions (an array's
//! version, a stream's frames published), so `top` itself maps nothing and slows nobody.
//! The process holding an array's write side is read from the array's header, through a
//! read-only mapping that `top` keeps per array.

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
) -> Result<Vec<Row>> {
    if before.is_empty() {
        let now = Instant::now();
        for o in client.list_all("")? {
            before.insert(o.name().to_string(), (counter(&o).0, now));
        }
        std::thread::sleep(interval);
    }
    let now = Instant::now();
    let objects = client.list_all("")?;
    let mut rows = Vec::with_capacity(objects.len());
    for o in &objects {
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
    before.clear();
    for o in &objects {
        before.insert(o.name().to_string(), (counter(o).0, now));
    }
    handles.retain(|name, _| before.contains_key(name));
    Ok(rows)
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
    if as_json {
        let rows = sample(&client, interval, &mut before, &mut handles)?;
        let list: Vec<_> = rows.iter().map(row_json).collect();
        return emit(&serde_json::Value::Array(list).to_string());
    }
    let terminal = std::io::stdout().is_terminal();
    loop {
        let rows = sample(&client, interval, &mut before, &mut handles)?;
        if terminal {
            // Home and clear: the table is redrawn in place.
            print!("\x1b[H\x1b[2J");
        }
        for line in table(&rows) {
            emit(&line)?;
        }
        if !terminal {
            emit("")?;
        }
        std::thread::sleep(interval);
    }
}
