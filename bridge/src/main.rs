//! `mmshare-bridge`: carries the streams of one host's daemon to another host's over Zenoh.
//!
//! **Work in progress (issue 23).** What runs today: exporting the streams whose names match a
//! prefix, and importing them on the other side into local streams of the same dtype, shape
//! and frame layout, created when missing. Not yet: arrays, resuming after a restart from the
//! last frame delivered, metrics, `mmshare top`, the namespace tests and the benchmark.
//!
//! # Keys
//!
//! A bridge publishes under a deployment prefix `P` (`--prefix`, for example the host's
//! name):
//!
//! * `P/meta/NAME`: a queryable answering with the stream's description as JSON (`dtype`,
//!   `shape`, `order`, `slots`, `header`, `variable`), which an importer needs to create the
//!   local stream before its first frame;
//! * `P/frames/NAME`: one Zenoh sample per frame, the message below.
//!
//! A lossless export is put with `CongestionControl::Block` (reliable: a full link blocks the
//! exporting bridge, whose lossless subscription then holds the local publisher back); a lossy
//! export with `CongestionControl::Drop`.
//!
//! # The frame message
//!
//! Little-endian, 48 bytes, then the frame's per-frame header, then its bytes (its rows):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `MMBR` |
//! | 4 | 2 | version (1) |
//! | 6 | 2 | flags (0) |
//! | 8 | 8 | frame number (in its lane) |
//! | 16 | 8 | publish time, ns since the Unix epoch |
//! | 24 | 8 | rows |
//! | 32 | 8 | publisher word (0 for a stream of one publisher) |
//! | 40 | 4 | lane |
//! | 44 | 4 | per-frame header length |

use std::collections::HashMap;
use std::time::Duration;

use mmshare::{Client, Delivery, ObjectInfo, StreamOptions, SubscribeOptions};
use zenoh::Wait;
use zenoh::qos::CongestionControl;

type Result<T = ()> = std::result::Result<T, String>;

const MAGIC: &[u8; 4] = b"MMBR";
const VERSION: u16 = 1;
const FIXED: usize = 48;

/// The command line.
struct Args {
    socket: Option<String>,
    prefix: String,
    exports: Vec<String>,
    imports: Vec<String>,
    lossy: bool,
    listen: Vec<String>,
    connect: Vec<String>,
}

fn usage() -> String {
    "usage: mmshare-bridge --prefix P [--socket PATH] [--export NAME_PREFIX]... \
     [--import REMOTE_PREFIX/NAME_PREFIX]... [--lossy] [--listen ENDPOINT]... \
     [--connect ENDPOINT]..."
        .into()
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        socket: None,
        prefix: String::new(),
        exports: Vec::new(),
        imports: Vec::new(),
        lossy: false,
        listen: Vec::new(),
        connect: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{}", usage()))
        };
        match a.as_str() {
            "--socket" => args.socket = Some(value()?),
            "--prefix" => args.prefix = value()?,
            "--export" => args.exports.push(value()?),
            "--import" => args.imports.push(value()?),
            "--lossy" => args.lossy = true,
            "--listen" => args.listen.push(value()?),
            "--connect" => args.connect.push(value()?),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    if args.prefix.is_empty() {
        return Err(format!("--prefix is required\n{}", usage()));
    }
    Ok(args)
}

fn zenoh_config(args: &Args) -> Result<zenoh::Config> {
    let mut c = zenoh::Config::default();
    let set = |c: &mut zenoh::Config, key: &str, value: String| {
        c.insert_json5(key, &value)
            .map_err(|e| format!("zenoh configuration {key}: {e}"))
    };
    set(&mut c, "mode", "\"peer\"".into())?;
    set(&mut c, "scouting/multicast/enabled", "false".into())?;
    let list = |v: &[String]| serde_json::to_string(v).expect("strings");
    if !args.listen.is_empty() {
        set(&mut c, "listen/endpoints", list(&args.listen))?;
    }
    if !args.connect.is_empty() {
        set(&mut c, "connect/endpoints", list(&args.connect))?;
    }
    Ok(c)
}

fn connect(socket: Option<&str>) -> Result<Client> {
    match socket {
        Some(s) => Client::connect(s),
        None => Client::connect_default(),
    }
    .map_err(|e| e.to_string())
}

/// The description an importer needs to make the stream.
fn meta_json(info: &mmshare::StreamInfo) -> String {
    serde_json::json!({
        "dtype": info.dtype, "shape": info.shape,
        "order": format!("{:?}", info.order),
        "slots": info.slots, "header": info.header, "variable": info.variable,
    })
    .to_string()
}

/// Exports stream `name`: its frames, forever, as messages on `P/frames/NAME`.
fn export(
    session: zenoh::Session,
    socket: Option<String>,
    prefix: String,
    name: String,
    lossy: bool,
) -> Result {
    let client = connect(socket.as_deref())?;
    let info = match client.describe(&name).map_err(|e| e.to_string())? {
        ObjectInfo::Stream(info) => info,
        ObjectInfo::Array(_) => return Err(format!("{name:?} is an array (not bridged yet)")),
    };
    let meta = meta_json(&info);
    let queryable = session
        .declare_queryable(format!("{prefix}/meta/{name}"))
        .callback(move |query| {
            let _ = query.reply(query.key_expr().clone(), meta.clone()).wait();
        })
        .wait()
        .map_err(|e| format!("zenoh queryable: {e}"))?;
    let publisher = session
        .declare_publisher(format!("{prefix}/frames/{name}"))
        .congestion_control(if lossy {
            CongestionControl::Drop
        } else {
            CongestionControl::Block
        })
        .wait()
        .map_err(|e| format!("zenoh publisher: {e}"))?;
    let delivery = if lossy {
        Delivery::Lossy
    } else {
        Delivery::Lossless
    };
    let subscriber = client
        .subscribe_bytes(&name, SubscribeOptions::new(delivery).max_held(1))
        .map_err(|e| e.to_string())?;
    eprintln!("mmshare-bridge: exporting {name} as {prefix}/frames/{name}");
    let mut message = Vec::new();
    loop {
        let sample = match subscriber.receive_timeout(Duration::from_secs(1)) {
            Ok(sample) => sample,
            Err(mmshare::StreamError::ReceiveTimeout { .. }) => continue,
            Err(e) => return Err(format!("{name}: {e}")),
        };
        let header = sample.header_bytes();
        message.clear();
        message.extend_from_slice(MAGIC);
        message.extend_from_slice(&VERSION.to_le_bytes());
        message.extend_from_slice(&0u16.to_le_bytes());
        message.extend_from_slice(&sample.number().to_le_bytes());
        message.extend_from_slice(&sample.published_ns().to_le_bytes());
        message.extend_from_slice(&sample.rows().to_le_bytes());
        let word = sample.publisher().map_or(0, |p| p.id());
        message.extend_from_slice(&word.to_le_bytes());
        message.extend_from_slice(&(sample.lane() as u32).to_le_bytes());
        message.extend_from_slice(&(header.len() as u32).to_le_bytes());
        message.extend_from_slice(header);
        message.extend_from_slice(&sample);
        drop(sample);
        publisher
            .put(message.clone())
            .wait()
            .map_err(|e| format!("zenoh put: {e}"))?;
        let _ = &queryable;
    }
}

/// A local stream an import writes into, made from its remote description.
struct Local {
    publisher: mmshare::Publisher<u8>,
}

fn make_local(
    client: &Client,
    session: &zenoh::Session,
    remote: &str,
    meta_key: &str,
    name: &str,
) -> Result<Local> {
    let replies = session
        .get(meta_key)
        .timeout(Duration::from_secs(10))
        .wait()
        .map_err(|e| format!("zenoh get {meta_key}: {e}"))?;
    let reply = replies
        .recv()
        .map_err(|_| format!("no description of {remote} came from {meta_key}"))?;
    let sample = reply
        .result()
        .map_err(|e| format!("{meta_key}: {e:?}"))?
        .clone();
    let text =
        String::from_utf8(sample.payload().to_bytes().to_vec()).map_err(|e| e.to_string())?;
    let meta: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let shape: Vec<u64> = meta["shape"]
        .as_array()
        .ok_or("no shape")?
        .iter()
        .map(|d| d.as_u64().ok_or("bad shape"))
        .collect::<std::result::Result<_, _>>()?;
    let mut options = StreamOptions::new(name, meta["dtype"].as_str().ok_or("no dtype")?, &shape)
        .slots(meta["slots"].as_u64().unwrap_or(8) as u32)
        .variable(meta["variable"].as_bool().unwrap_or(false))
        .exist_ok(true);
    if meta["order"] == "F" {
        options = options.order(mmshare::Order::F);
    }
    if let Some(h) = meta["header"].as_str().filter(|h| !h.is_empty()) {
        options = options.header(h);
    }
    client.create_stream(&options).map_err(|e| e.to_string())?;
    let publisher = client.publisher_bytes(name).map_err(|e| e.to_string())?;
    eprintln!("mmshare-bridge: importing {remote} into {name}");
    Ok(Local { publisher })
}

/// Imports `P/frames/NAME...` into local streams named `NAME...`.
fn import(session: zenoh::Session, socket: Option<String>, pattern: String) -> Result {
    let client = connect(socket.as_deref())?;
    let (remote_prefix, names) = pattern
        .split_once('/')
        .ok_or_else(|| format!("--import {pattern:?}: give REMOTE_PREFIX/NAME_PREFIX"))?;
    // Every frame key of that prefix; the names are filtered here (a key expression cannot
    // match a name prefix inside one chunk).
    let key = format!("{remote_prefix}/frames/**");
    let subscriber = session
        .declare_subscriber(&key)
        .wait()
        .map_err(|e| format!("zenoh subscriber {key}: {e}"))?;
    let mut locals: HashMap<String, Local> = HashMap::new();
    loop {
        let sample = subscriber.recv().map_err(|e| format!("zenoh: {e}"))?;
        let key = sample.key_expr().as_str().to_owned();
        let Some(name) = key
            .strip_prefix(&format!("{remote_prefix}/frames/"))
            .filter(|n| n.starts_with(names))
        else {
            continue;
        };
        let payload = sample.payload().to_bytes();
        if payload.len() < FIXED || &payload[..4] != MAGIC {
            eprintln!("mmshare-bridge: {key}: not a frame message; dropped");
            continue;
        }
        let word = |at: usize| u64::from_le_bytes(payload[at..at + 8].try_into().expect("8"));
        let rows = word(24);
        let header_len = u32::from_le_bytes(payload[44..48].try_into().expect("4")) as usize;
        if payload.len() < FIXED + header_len {
            eprintln!("mmshare-bridge: {key}: a message cut short; dropped");
            continue;
        }
        if !locals.contains_key(name) {
            let meta_key = format!("{remote_prefix}/meta/{name}");
            let local = make_local(&client, &session, &key, &meta_key, name)?;
            locals.insert(name.to_owned(), local);
        }
        let local = locals.get_mut(name).expect("made above");
        let (header, frame) = payload[FIXED..].split_at(header_len);
        let variable = local.publisher.is_variable();
        let mut loan = local.publisher.loan().map_err(|e| e.to_string())?;
        if variable {
            loan.set_rows(rows).map_err(|e| e.to_string())?;
        }
        if loan.len() != frame.len() {
            eprintln!(
                "mmshare-bridge: {key}: a frame of {} bytes, the local stream's is {}; dropped",
                frame.len(),
                loan.len()
            );
            continue;
        }
        loan.copy_from_slice(frame);
        let slot = loan.header_bytes_mut();
        if slot.len() == header.len() {
            slot.copy_from_slice(header);
        }
        loan.publish();
    }
}

fn run() -> Result {
    let args = parse_args()?;
    let session = zenoh::open(zenoh_config(&args)?)
        .wait()
        .map_err(|e| format!("zenoh: {e}"))?;
    let mut threads = Vec::new();
    if !args.exports.is_empty() {
        let client = connect(args.socket.as_deref())?;
        let objects = client.list_all("").map_err(|e| e.to_string())?;
        for object in objects {
            let ObjectInfo::Stream(info) = object else {
                continue;
            };
            if !args
                .exports
                .iter()
                .any(|p| info.name.starts_with(p.as_str()))
            {
                continue;
            }
            let (s, socket, prefix, lossy) = (
                session.clone(),
                args.socket.clone(),
                args.prefix.clone(),
                args.lossy,
            );
            threads.push(std::thread::spawn(move || {
                export(s, socket, prefix, info.name, lossy)
            }));
        }
    }
    for pattern in &args.imports {
        let (s, socket, pattern) = (session.clone(), args.socket.clone(), pattern.clone());
        threads.push(std::thread::spawn(move || import(s, socket, pattern)));
    }
    for t in threads {
        t.join()
            .map_err(|_| "a bridge thread panicked".to_string())??;
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("mmshare-bridge: {e}");
        std::process::exit(1);
    }
}
