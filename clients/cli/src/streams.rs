//! Streams from the shell: `create --stream`, `pub` (a .npy stack of frames into a stream),
//! `sub` (a stream's frames into a .npy stack), and the stream side of `ls` and `info`.
//!
//! Frames are moved as bytes (`Client::publisher_bytes`, `Client::subscribe_bytes`), straight
//! between the file and the slot, so a stream of any dtype needs no per-type code and no frame
//! is held in RAM beyond the one being copied.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mmshare::{DType, ErrorKind, Order, StreamError, StreamInfo, StreamOptions, WatchEvent};
use serde_json::json;

use crate::commands::{
    Result, backing_name, connect, emit, shape_text, wire_order_name as order_name,
};
use crate::failure::{Class, Failure};
use crate::npy;

/// The `--json` form of a stream description.
pub fn stream_json(info: &StreamInfo) -> serde_json::Value {
    json!({
        "kind": "stream",
        "name": info.name,
        "dtype": info.dtype,
        "shape": info.shape,
        "order": order_name(info.order),
        "slots": info.slots,
        "history": info.history,
        "header": (!info.header.is_empty()).then_some(&info.header),
        "variable": info.variable,
        "max_subscribers": info.max_subscribers,
        "frame_nbytes": info.frame_len,
        "published": info.published,
        "publisher": info.publisher,
        "max_publishers": info.max_publishers.max(1),
        "publishers": info.publishers,
        "subscribers": info.subscribers.iter().map(|s| json!({
            "pid": s.pid,
            "mode": if s.lossless { "lossless" } else { "lossy" },
            "lag": s.lag,
            "missed": s.missed,
            "received": s.received,
            "max_held": s.max_held,
        })).collect::<Vec<_>>(),
        "backing": backing_name(info.backing),
        "owner_uid": info.owner_uid,
        "mode": format!("{:04o}", info.mode),
        "path": info.path,
    })
}

/// The ring of `create --stream`, and what its frames carry.
#[derive(Clone, Debug)]
pub struct Ring {
    pub slots: u32,
    pub max_subscribers: u32,
    pub on_stall: mmshare::StallPolicy,
    pub history: u32,
    pub header: Option<String>,
    pub variable: bool,
    pub max_publishers: u32,
}

/// `create --stream`.
#[allow(clippy::too_many_arguments)]
pub fn create(
    socket: &Path,
    name: &str,
    dtype: &str,
    shape: &[u64],
    memory: bool,
    mode_bits: u32,
    order: Order,
    exist_ok: bool,
    ring: Ring,
) -> Result {
    let options = |exist_ok: bool| {
        let o = StreamOptions::new(name, dtype, shape)
            .slots(ring.slots)
            .max_subscribers(ring.max_subscribers)
            .on_stall(ring.on_stall)
            .history(ring.history)
            .variable(ring.variable)
            .max_publishers(ring.max_publishers)
            .mode(mode_bits)
            .order(order)
            .exist_ok(exist_ok);
        let o = match &ring.header {
            Some(h) => o.header(h.clone()),
            None => o,
        };
        if memory { o.memory() } else { o }
    };
    let client = connect(socket)?;
    let (info, verb) = match client.create_stream(&options(false)) {
        Ok(info) => (info, "created"),
        Err(e) if exist_ok && e.kind() == Some(ErrorKind::AlreadyExists) => {
            (client.create_stream(&options(true))?, "exists")
        }
        Err(e) => return Err(e.into()),
    };
    emit(&format!(
        "{verb} stream {} {} frames of {}{}{} order {}, {} slots{}{}, up to {} subscribers ({}) mode {:04o} at {}",
        info.name,
        info.dtype,
        if info.variable { "up to " } else { "" },
        shape_text(&info.shape),
        if info.header.is_empty() {
            String::new()
        } else {
            format!(" with a {} header", info.header)
        },
        order_name(info.order),
        info.slots,
        if info.history > 0 {
            format!(" keeping the newest {}", info.history)
        } else {
            String::new()
        },
        if info.max_publishers > 1 {
            format!(" for each of up to {} publishers", info.max_publishers)
        } else {
            String::new()
        },
        info.max_subscribers,
        backing_name(info.backing),
        info.mode,
        info.path
    ))
}

/// `info` of a stream.
pub fn info(info: &StreamInfo, as_json: bool) -> Result {
    if as_json {
        return emit(&stream_json(info).to_string());
    }
    emit(&format!("name:        {}", info.name))?;
    emit("kind:        stream")?;
    emit(&format!("dtype:       {}", info.dtype))?;
    emit(&format!(
        "frame shape: {}{}",
        shape_text(&info.shape),
        if info.variable {
            " (the largest: frames vary in length along the first axis)"
        } else {
            ""
        }
    ))?;
    emit(&format!(
        "header:      {}",
        if info.header.is_empty() {
            "none"
        } else {
            &info.header
        }
    ))?;
    emit(&format!("order:       {}", order_name(info.order)))?;
    emit(&format!("frame bytes: {}", info.frame_len))?;
    emit(&format!("slots:       {}", info.slots))?;
    emit(&format!(
        "history:     {}",
        if info.history == 0 {
            "none (a subscriber that joins late starts at the newest frame)".to_owned()
        } else {
            format!(
                "the newest {} frames are kept for late subscribers",
                info.history
            )
        }
    ))?;
    emit(&format!(
        "on stall:    {}",
        match info.stall {
            mmshare::internal::proto::WireStall::Block =>
                "block (wait for a stalled lossless subscriber)".to_owned(),
            mmshare::internal::proto::WireStall::Demote { after_ms } =>
                format!("demote a lossless subscriber that stalls the publisher for {after_ms} ms"),
            mmshare::internal::proto::WireStall::Evict { after_ms } =>
                format!("evict a lossless subscriber that stalls the publisher for {after_ms} ms"),
        }
    ))?;
    emit(&format!("published:   {}", info.published))?;
    if info.max_publishers > 1 {
        let pids: Vec<String> = info.publishers.iter().map(|p| format!("pid {p}")).collect();
        emit(&format!(
            "publishers:  {} of at most {}{}{}",
            info.publishers.len(),
            info.max_publishers,
            if pids.is_empty() { "" } else { ": " },
            pids.join(", ")
        ))?;
    } else {
        emit(&format!(
            "publisher:   {}",
            info.publisher
                .map_or_else(|| "none".to_string(), |p| format!("pid {p}"))
        ))?;
    }
    emit(&format!(
        "subscribers: {} (of at most {})",
        info.subscribers.len(),
        info.max_subscribers
    ))?;
    for s in &info.subscribers {
        emit(&format!(
            "  pid {:<8} {:<8} lag {:<8} missed {:<8} received {}",
            s.pid,
            if s.lossless { "lossless" } else { "lossy" },
            s.lag,
            s.missed,
            s.received
        ))?;
    }
    emit(&format!("backing:     {}", backing_name(info.backing)))?;
    emit(&format!("mode:        {:04o}", info.mode))?;
    emit(&format!("path:        {}", info.path))
}

/// Sets the returned flag on Ctrl-C (or SIGTERM), so a loop can stop cleanly.
/// Ctrl-C during a wait: say so and exit 130, as a shell does for SIGINT.
fn interrupted(what: &str) -> ! {
    eprintln!("mmshare: {what}");
    std::process::exit(130);
}

fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    // A second handler cannot be installed; a command installs one at most.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    stop
}

/// `pub NAME FILE [--rate HZ] [--loop]`: publishes the frames of a .npy stack (first axis =
/// frames), each read from the file straight into a loaned slot.
pub fn publish(
    socket: &Path,
    name: &str,
    path: &Path,
    raw: bool,
    pace: Pace,
    wait_subscribers: Option<usize>,
) -> Result {
    let client = connect(socket)?;
    let info = match client.describe(name)? {
        mmshare::ObjectInfo::Stream(info) => info,
        mmshare::ObjectInfo::Array(_) => {
            return Err(Failure::bad_input(format!(
                "{name} is an array, not a stream (use `mmshare put`)"
            )));
        }
    };
    let stdin = path == Path::new("-");
    let mut source = if raw || stdin {
        if pace.looping && stdin {
            return Err(Failure::bad_input(
                "--loop needs a file to start over: standard input cannot be read twice",
            ));
        }
        Source::raw(path)?
    } else {
        Source::npy(path, name, &info)?
    };
    let mut publisher = client.publisher_bytes(name)?;
    publisher.set_timeout(pace.loan_timeout);
    let stop = stop_flag();
    if let Some(n) = wait_subscribers {
        eprintln!("waiting for {n} subscribers of {name} (Ctrl-C to stop)");
        // In one-second sleeps, each woken at once by a join, so that Ctrl-C is seen.
        loop {
            match publisher.wait_for_subscribers(n, Duration::from_secs(1)) {
                Ok(_) => break,
                Err(StreamError::SubscribersTimeout { .. }) if !stop.load(Ordering::Relaxed) => {}
                Err(StreamError::SubscribersTimeout { attached, .. }) => interrupted(&format!(
                    "stopped waiting: {attached} of {n} subscribers attached"
                )),
                Err(e) => return Err(e.into()),
            }
        }
    }
    let period = pace.rate.map(|hz| Duration::from_secs_f64(1.0 / hz));
    let start = Instant::now();
    let first = publisher.next_number();
    let mut sent = 0u64;
    'outer: loop {
        loop {
            if stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            if let Some(period) = period {
                let due = start + period.mul_f64(sent as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let mut loan = publisher.loan()?;
            // A loan dropped unpublished (at the end of the input) is given back: the next
            // frame takes its number.
            if !source.next_frame(&mut loan, first + sent)? {
                break;
            }
            loan.publish();
            sent += 1;
        }
        if !pace.looping {
            break;
        }
        source.rewind()?;
    }
    let secs = start.elapsed().as_secs_f64();
    // Standard output may be a pipe of frames elsewhere: the report goes to standard error
    // when the frames came from standard input.
    let report = format!(
        "published {sent} frames ({}..{}) to {name} in {secs:.2} s ({:.0} frames/s)",
        first,
        first + sent,
        sent as f64 / secs.max(1e-9)
    );
    if stdin {
        eprintln!("{report}");
        Ok(())
    } else {
        emit(&report)
    }
}

/// How `pub` paces its frames.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Frames per second, or as fast as the ring allows.
    pub rate: Option<f64>,
    /// Start over at the first frame after the last, until Ctrl-C.
    pub looping: bool,
    /// How long a loan waits for a free slot.
    pub loan_timeout: Duration,
}

/// Where `pub` reads frames: a .npy stack, or raw frames back to back (a file, or standard
/// input).
enum Source {
    Npy {
        file: BufReader<File>,
        path: PathBuf,
        frames: u64,
        left: u64,
        data_offset: u64,
    },
    Raw {
        reader: Box<dyn Read>,
        /// The file, to start over (`--loop`); none for standard input.
        file: Option<File>,
        what: String,
    },
}

impl Source {
    /// Raw frames from `path` (`-`: standard input).
    fn raw(path: &Path) -> Result<Source> {
        if path == Path::new("-") {
            return Ok(Source::Raw {
                reader: Box::new(BufReader::with_capacity(1 << 20, std::io::stdin().lock())),
                file: None,
                what: "standard input".into(),
            });
        }
        let file = open_input(path)?;
        let reader = file
            .try_clone()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(Source::Raw {
            reader: Box::new(BufReader::with_capacity(1 << 20, reader)),
            file: Some(file),
            what: path.display().to_string(),
        })
    }

    /// The frames of the .npy stack at `path`, checked against stream `name`'s frames.
    fn npy(path: &Path, name: &str, info: &StreamInfo) -> Result<Source> {
        let mut file = BufReader::with_capacity(1 << 20, open_input(path)?);
        let header = npy::read_header(&mut file)
            .map_err(|e| Failure::bad_input(format!("{}: {e}", path.display())))?;
        // A Fortran-order stream's frames (of more than one dimension that is not 1) are
        // contiguous in a Fortran-order stack whose *last* axis counts them; every other stack
        // counts them along its first axis, in C order.
        let fortran_frames = info.order == mmshare::internal::proto::WireOrder::F
            && info.shape.iter().filter(|&&d| d > 1).count() > 1;
        let split = if fortran_frames {
            header.shape.split_last()
        } else {
            header.shape.split_first()
        };
        let (frames, frame_shape) = match split {
            Some((&n, rest)) => (n, rest),
            None => {
                return Err(Failure::bad_input(format!(
                    "{} holds a 0-d array, not a stack of frames",
                    path.display()
                )));
            }
        };
        let file_multi_d = header.shape.iter().filter(|&&d| d > 1).count() > 1;
        if fortran_frames && !header.fortran && file_multi_d {
            let n = header.shape.first().copied().unwrap_or(0);
            return Err(Failure::bad_input(format!(
                "stream {name} is in Fortran order: give a Fortran-order .npy whose last axis \
                 counts the frames, shape {} (np.asfortranarray(np.stack(frames, axis=-1))), \
                 not {} in C order; nothing was published",
                shape_text(&[info.shape.as_slice(), &[n]].concat()),
                shape_text(&header.shape)
            )));
        }
        if !fortran_frames && header.fortran && file_multi_d {
            return Err(Failure::bad_input(format!(
                "{} is in Fortran order, so its frames (along the first axis) are not \
                 contiguous; save the stack in C order (np.ascontiguousarray); nothing was \
                 published",
                path.display()
            )));
        }
        let dtype: DType = info
            .dtype
            .parse()
            .map_err(|e: mmshare::DTypeError| e.to_string())?;
        if header.dtype != dtype || frame_shape != info.shape.as_slice() {
            return Err(Failure::bad_input(format!(
                "{} holds frames of {} {}, but stream {name} takes {} {}; nothing was published",
                path.display(),
                header.dtype,
                shape_text(frame_shape),
                info.dtype,
                shape_text(&info.shape)
            )));
        }
        if frames == 0 {
            return Err(Failure::bad_input(format!(
                "{} holds no frames",
                path.display()
            )));
        }
        Ok(Source::Npy {
            file,
            path: path.to_path_buf(),
            frames,
            left: frames,
            data_offset: header.data_offset,
        })
    }

    /// Fills `frame` with the next frame (number `n`, for messages); false at the end.
    fn next_frame(&mut self, frame: &mut [u8], n: u64) -> Result<bool> {
        match self {
            Source::Npy {
                file, path, left, ..
            } => {
                if *left == 0 {
                    return Ok(false);
                }
                file.read_exact(frame)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                *left -= 1;
                Ok(true)
            }
            Source::Raw { reader, what, .. } => {
                let mut got = 0;
                while got < frame.len() {
                    match reader.read(&mut frame[got..]) {
                        Ok(0) => break,
                        Ok(k) => got += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("cannot read {what}: {e}").into()),
                    }
                }
                if got == 0 && !frame.is_empty() {
                    return Ok(false);
                }
                if got < frame.len() {
                    return Err(Failure::bad_input(format!(
                        "{what} ended in the middle of frame {n}: {got} of its {} bytes \
                         (frames of raw input are the stream's frames exactly, back to back); \
                         the frames before it were published",
                        frame.len()
                    )));
                }
                Ok(true)
            }
        }
    }

    /// Back to the first frame (`--loop`).
    fn rewind(&mut self) -> Result {
        match self {
            Source::Npy {
                file,
                path,
                frames,
                left,
                data_offset,
            } => {
                file.seek(SeekFrom::Start(*data_offset))
                    .map_err(|e| format!("cannot rewind {}: {e}", path.display()))?;
                *left = *frames;
                Ok(())
            }
            Source::Raw {
                reader, file, what, ..
            } => {
                let file = file.as_mut().ok_or("standard input cannot be read twice")?;
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| format!("cannot rewind {what}: {e}"))?;
                let again = file
                    .try_clone()
                    .map_err(|e| format!("cannot read {what}: {e}"))?;
                *reader = Box::new(BufReader::with_capacity(1 << 20, again));
                Ok(())
            }
        }
    }
}

fn open_input(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| {
        Failure::new(
            crate::failure::io_class(&e),
            format!("cannot open {}: {e}", path.display()),
        )
    })
}

/// `sub NAME [--lossless] [--count N] [-o FILE]`: receives frames and reports them; with `-o`,
/// appends each to a .npy stack on disk as it comes (the header is rewritten with the final
/// count at the end).
pub fn subscribe(
    socket: &Path,
    name: &str,
    options: mmshare::SubscribeOptions,
    count: Option<u64>,
    out: Option<Recording<'_>>,
    timeout: Option<Duration>,
    wait: Option<Duration>,
) -> Result {
    let client = connect(socket)?;
    let stop = stop_flag();
    if let Some(wait) = wait {
        let found = client.wait_for_until(name, wait, &mut || stop.load(Ordering::Relaxed))?;
        if found.is_none() {
            interrupted(&format!("stopped waiting for {name}"));
        }
    }
    let info = match client.describe(name)? {
        mmshare::ObjectInfo::Stream(info) => info,
        mmshare::ObjectInfo::Array(_) => {
            return Err(Failure::bad_input(format!(
                "{name} is an array, not a stream (use `mmshare watch`)"
            )));
        }
    };
    let dtype: DType = info
        .dtype
        .parse()
        .map_err(|e: mmshare::DTypeError| e.to_string())?;
    if matches!(out, Some(Recording::Raw(_))) && (info.variable || !info.header.is_empty()) {
        // Raw frames are their bytes back to back, nothing else.
        eprintln!(
            "note: raw frames carry {}; record into a .npy (without --raw) to keep {}",
            match (info.variable, info.header.is_empty()) {
                (true, true) => "no row counts (each frame's rows are its bytes)",
                (false, false) => "no headers",
                _ => "no headers and no row counts (each frame's rows are its bytes)",
            },
            if info.header.is_empty() {
                "them"
            } else {
                "the headers"
            }
        );
    }
    let mut sink = Sink::open(out, dtype, &info)?;
    // Beside a .npy stack: the frames' headers, and the rows of variable-size frames, each a
    // .npy of one element per frame (`NAME.headers.npy`, `NAME.rows.npy`).
    let mut companions = Vec::new();
    if let Some(Recording::Npy(path)) = out {
        if !info.header.is_empty() {
            let header: DType = info
                .header
                .parse()
                .map_err(|e: mmshare::DTypeError| e.to_string())?;
            companions.push((
                Companion::Headers,
                Sink::npy(&sibling(path, "headers"), header, false, vec![])?,
            ));
        }
        if info.variable {
            companions.push((
                Companion::Rows,
                Sink::npy(&sibling(path, "rows"), DType::U64, false, vec![])?,
            ));
        }
        if info.max_publishers > 1 {
            companions.push((
                Companion::Lanes,
                Sink::npy(&sibling(path, "lanes"), DType::U64, false, vec![2])?,
            ));
        }
    }
    let subscriber = client.subscribe_bytes(name, options)?;
    let started = Instant::now();
    let mut received = 0u64;
    let mut first = None;
    let result: std::result::Result<(), String> = loop {
        if stop.load(Ordering::Relaxed) || count.is_some_and(|c| received >= c) {
            break Ok(());
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            break Ok(());
        }
        let sample = match subscriber.receive_timeout(Duration::from_millis(200)) {
            Ok(sample) => sample,
            Err(StreamError::ReceiveTimeout { .. }) => continue,
            Err(e) => break Err(e.to_string()),
        };
        let units = if info.variable { sample.rows() } else { 1 };
        match sink.write(&sample, units) {
            Ok(true) => {}
            // The reader at the other end of the pipe is gone (ffmpeg done, `head`): stop.
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
        let wrote = companions.iter_mut().try_for_each(|(what, c)| {
            let rows = sample.rows().to_le_bytes();
            let mut lane = [0u8; 16];
            lane[..8].copy_from_slice(&(sample.lane() as u64).to_le_bytes());
            lane[8..].copy_from_slice(&sample.number().to_le_bytes());
            let bytes = match what {
                Companion::Headers => sample.header_bytes(),
                Companion::Rows => &rows[..],
                Companion::Lanes => &lane[..],
            };
            c.write(bytes, 1).map(drop)
        });
        if let Err(e) = wrote {
            break Err(e);
        }
        first.get_or_insert(sample.number());
        received += 1;
    };
    let missed = subscriber.missed();
    let to_stdout = matches!(sink, Sink::Stdout(_));
    let saved = sink.finish(result.is_ok())?;
    let mut beside = Vec::new();
    for (_, c) in companions {
        if let Some(p) = c.finish(result.is_ok())? {
            beside.push(p.display().to_string());
        }
    }
    let report = format!(
        "received {received} frames{} from {name}, missed {missed}{}{}",
        first.map_or_else(String::new, |f| format!(" ({f}..{})", f + received)),
        saved.map_or_else(String::new, |p| format!("; saved to {}", p.display())),
        if beside.is_empty() {
            String::new()
        } else {
            format!(" (and {})", beside.join(", "))
        }
    );
    // With the frames on standard output, the report goes to standard error.
    if to_stdout {
        eprintln!("{report}");
    } else {
        emit(&report)?;
    }
    Ok(result?)
}

/// What `sub -o` records into.
#[derive(Clone, Copy, Debug)]
pub enum Recording<'a> {
    /// A .npy stack at this path.
    Npy(&'a Path),
    /// Raw frames back to back at this path (`-`: standard output).
    Raw(&'a Path),
}

/// What a companion file of a .npy recording holds, one element per frame.
#[derive(Clone, Copy, Debug)]
enum Companion {
    /// Each frame's header (`NAME.headers.npy`).
    Headers,
    /// Each frame's rows, for variable-size frames (`NAME.rows.npy`).
    Rows,
    /// Each frame's lane and its number in it, for streams of several publishers
    /// (`NAME.lanes.npy`, two `u64` per frame).
    Lanes,
}

/// `rec.npy` → `rec.WHAT.npy`, beside it.
fn sibling(path: &Path, what: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{stem}.{what}.npy"))
}

/// Where `sub` writes the frames it receives.
enum Sink {
    None,
    /// A .npy stack, written under a temporary name with a placeholder header that the real
    /// one replaces at the end (its frame count is known only then).
    Npy {
        w: BufWriter<File>,
        tmp: PathBuf,
        path: PathBuf,
        dtype: DType,
        fortran: bool,
        /// One unit's shape: a frame's, or a row's (variable-size frames).
        shape: Vec<u64>,
        header_len: usize,
        /// Units written so far.
        count: u64,
    },
    /// Raw frames into a file, under a temporary name until complete.
    Raw {
        w: BufWriter<File>,
        tmp: PathBuf,
        path: PathBuf,
    },
    /// Raw frames to standard output.
    Stdout(BufWriter<std::io::Stdout>),
}

impl Sink {
    fn open(out: Option<Recording<'_>>, dtype: DType, info: &StreamInfo) -> Result<Sink> {
        let create = |path: &Path| -> Result<(BufWriter<File>, PathBuf)> {
            let tmp = temp_path(path);
            let f =
                File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
            Ok((BufWriter::with_capacity(1 << 20, f), tmp))
        };
        match out {
            None => Ok(Sink::None),
            Some(Recording::Raw(path)) if path == Path::new("-") => Ok(Sink::Stdout(
                BufWriter::with_capacity(1 << 20, std::io::stdout()),
            )),
            Some(Recording::Raw(path)) => {
                let (w, tmp) = create(path)?;
                Ok(Sink::Raw {
                    w,
                    tmp,
                    path: path.to_path_buf(),
                })
            }
            Some(Recording::Npy(path)) if path == Path::new("-") => Err(Failure::bad_input(
                "a .npy stack needs a file (its header, written last, holds the frame count); \
                 add --raw to write the frames to standard output",
            )),
            Some(Recording::Npy(path)) => {
                // A Fortran-order stream's frames go into a Fortran-order stack along its last
                // axis, where each is contiguous (`pub` reads such a stack back); every other
                // stream's along the first axis, in C order. Variable-size frames (C order)
                // are stacked row by row: the stack is their rows, back to back.
                let fortran = info.order == mmshare::internal::proto::WireOrder::F
                    && info.shape.iter().filter(|&&d| d > 1).count() > 1;
                let unit = if info.variable {
                    info.shape[1..].to_vec()
                } else {
                    info.shape.clone()
                };
                Sink::npy(path, dtype, fortran, unit)
            }
        }
    }

    /// A .npy stack at `path` of elements of `dtype` in `unit`'s shape, with a placeholder
    /// header (the real one, written at the end, has the count).
    fn npy(path: &Path, dtype: DType, fortran: bool, unit: Vec<u64>) -> Result<Sink> {
        let tmp = temp_path(path);
        let f = File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        // The header for the most units a stack could hold: the real one is padded to its
        // size.
        let placeholder =
            npy::header_bytes(&dtype, fortran, &stack_shape(&unit, fortran, u64::MAX));
        w.write_all(&placeholder)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        Ok(Sink::Npy {
            w,
            tmp,
            path: path.to_path_buf(),
            dtype,
            fortran,
            shape: unit,
            header_len: placeholder.len(),
            count: 0,
        })
    }

    /// Writes one frame of `units` units (rows, for a stack of variable-size frames; else 1);
    /// false when standard output's reader is gone.
    fn write(&mut self, frame: &[u8], units: u64) -> std::result::Result<bool, String> {
        match self {
            Sink::None => Ok(true),
            Sink::Npy { w, tmp, count, .. } => {
                *count += units;
                w.write_all(frame)
                    .map(|()| true)
                    .map_err(|e| format!("cannot write {}: {e}", tmp.display()))
            }
            Sink::Raw { w, tmp, .. } => w
                .write_all(frame)
                .map(|()| true)
                .map_err(|e| format!("cannot write {}: {e}", tmp.display())),
            Sink::Stdout(w) => match w.write_all(frame) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
                Err(e) => Err(format!("cannot write to standard output: {e}")),
            },
        }
    }

    /// Completes the recording (or removes it when `ok` is false); returns the path it is
    /// saved at.
    fn finish(self, ok: bool) -> Result<Option<PathBuf>> {
        match self {
            Sink::None => Ok(None),
            Sink::Stdout(mut w) => {
                match w.flush() {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        return Err(format!("cannot write to standard output: {e}").into());
                    }
                    _ => {}
                }
                Ok(None)
            }
            Sink::Raw { w, tmp, path } => complete(w, &tmp, path, ok, |f| f.sync_all()),
            Sink::Npy {
                w,
                tmp,
                path,
                dtype,
                fortran,
                shape,
                header_len,
                count,
            } => complete(w, &tmp, path, ok, |f| {
                let header = npy::header_bytes_at_least(
                    &dtype,
                    fortran,
                    &stack_shape(&shape, fortran, count),
                    header_len,
                );
                debug_assert_eq!(header.len(), header_len);
                f.seek(SeekFrom::Start(0))?;
                f.write_all(&header)?;
                f.sync_all()
            }),
        }
    }
}

/// Completes a recording written under the temporary name `tmp`: `finish` ends the file (its
/// header, a sync), then the file takes `path`'s name. When `ok` is false (the recording
/// failed), or on any failure here, `tmp` is removed instead: a recording appears under its
/// name only complete.
fn complete(
    w: BufWriter<File>,
    tmp: &Path,
    path: PathBuf,
    ok: bool,
    finish: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<Option<PathBuf>> {
    if !ok {
        let _ = std::fs::remove_file(tmp);
        return Ok(None);
    }
    let done = (|| -> std::result::Result<(), String> {
        let mut f = w
            .into_inner()
            .map_err(|e| format!("cannot write {}: {}", tmp.display(), e.error()))?;
        finish(&mut f).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(tmp, &path)
            .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))
    })();
    match done {
        Ok(()) => Ok(Some(path)),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(e.into())
        }
    }
}

/// The shape of a stack of `n` frames of `frame`: along the first axis, or, for a
/// Fortran-order stack, the last.
fn stack_shape(frame: &[u64], fortran: bool, n: u64) -> Vec<u64> {
    if fortran {
        [frame, &[n]].concat()
    } else {
        [&[n], frame].concat()
    }
}

/// `ls --watch`: `listing` once the watch is set up, then one line per change until Ctrl-C
/// (or until the daemon stops).
pub fn watch_changes(
    socket: &Path,
    prefix: &str,
    as_json: bool,
    listing: impl FnOnce() -> Result,
) -> Result {
    let client = connect(socket)?;
    let mut watch = client.watch(prefix)?;
    listing()?;
    let stop = stop_flag();
    while !stop.load(Ordering::Relaxed) {
        let Some(event) = watch.next_timeout(Some(Duration::from_millis(200)))? else {
            continue;
        };
        let (what, name, detail) = match &event {
            WatchEvent::Created { name, stream } => (
                "created",
                name.as_str(),
                json!(if *stream { "stream" } else { "array" }),
            ),
            WatchEvent::Deleted { name } => ("deleted", name.as_str(), json!(null)),
            WatchEvent::Subscribers { name, count } => ("subscribers", name.as_str(), json!(count)),
            WatchEvent::Lost { events } => ("lost", "", json!(events)),
            _ => continue,
        };
        if as_json {
            emit(&json!({"event": what, "name": name, "detail": detail}).to_string())?;
        } else {
            let text = match &event {
                WatchEvent::Created { name, stream } => {
                    format!(
                        "created {} {name}",
                        if *stream { "stream" } else { "array" }
                    )
                }
                WatchEvent::Deleted { name } => format!("deleted {name}"),
                WatchEvent::Subscribers { name, count } => {
                    format!("subscribers {name}: {count}")
                }
                WatchEvent::Lost { events } => {
                    format!("lost {events} changes (this watch fell behind): list again")
                }
                _ => continue,
            };
            emit(&text)?;
        }
    }
    Ok(())
}

/// A temporary name beside `path` (renamed to it once the stack is complete).
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.partial", std::process::id()));
    path.with_file_name(name)
}

/// `watch` of a stream: once a second, the frames published, the rate, and each subscriber's
/// mode, lag and misses; stops when the stream is deleted.
pub fn watch(socket: &Path, name: &str, as_json: bool, seconds: Option<Duration>) -> Result {
    let started = Instant::now();
    let client = connect(socket)?;
    let describe = |client: &mmshare::Client| -> Result<Option<mmshare::StreamInfo>> {
        match client.describe(name) {
            Ok(mmshare::ObjectInfo::Stream(info)) => Ok(Some(info)),
            Ok(mmshare::ObjectInfo::Array(_)) => {
                Err(Failure::bad_input(format!("{name} is now an array")))
            }
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    let Some(mut last) = describe(&client)? else {
        return Err(Failure::new(
            Class::NotFound,
            format!("no stream named {name:?}"),
        ));
    };
    if !as_json {
        eprintln!(
            "watching stream {name} from frame {} (Ctrl-C to stop)",
            last.published
        );
    }
    let mut at = Instant::now();
    loop {
        if seconds.is_some_and(|s| started.elapsed() >= s) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
        let Some(info) = describe(&client)? else {
            return Err(format!(
                "stream {name} was deleted ({} frames published); stopped watching",
                last.published
            )
            .into());
        };
        let now = Instant::now();
        let secs = now.duration_since(at).as_secs_f64();
        let rate = info.published.saturating_sub(last.published) as f64 / secs;
        let gbps = rate * info.frame_len as f64 / 1e9;
        if as_json {
            let mut value = stream_json(&info);
            value["frames_per_s"] = json!(rate);
            value["gb_per_s"] = json!(gbps);
            emit(&value.to_string())?;
        } else {
            let subs: Vec<String> = info
                .subscribers
                .iter()
                .map(|s| {
                    format!(
                        "pid {} {} lag {} missed {}",
                        s.pid,
                        if s.lossless { "lossless" } else { "lossy" },
                        s.lag,
                        s.missed
                    )
                })
                .collect();
            emit(&format!(
                "frame {:<10} {:>9.0} frames/s {:>7.3} GB/s  publisher {}  subscribers: {}",
                info.published,
                rate,
                gbps,
                info.publisher
                    .map_or_else(|| "none".to_string(), |p| format!("pid {p}")),
                if subs.is_empty() {
                    "none".to_string()
                } else {
                    subs.join(", ")
                }
            ))?;
        }
        last = info;
        at = now;
    }
}
