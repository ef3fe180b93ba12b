//! The commands. Each returns `Err(message)` for `main` to print as one line.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mmshare::{
    Access, ArrayInfo, Backing, Client, ClientError, ConnectOptions, CreateOptions, ErrorKind,
    ObjectInfo, Order, ProcessId, ReadError, WriteError,
};
use serde_json::json;

use crate::failure::{Class, Failure};
use crate::npy;

pub type Result<T = ()> = std::result::Result<T, Failure>;

/// Streaming chunk size for put/get.
const CHUNK: usize = 8 << 20;
/// Arrays at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_FROM: u64 = 64 << 20;

/// Prints a line on stdout. A closed pipe (`mmshare ls | head`) ends the program quietly with
/// success; any other write error is an error like the others.
pub fn emit(line: &str) -> Result {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(format!("cannot write to standard output: {e}").into()),
    }
}

/// How every command reaches the daemon, set once by `main` from `--socket` and
/// `--server-uid`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Target {
    /// No `--socket` was given: the socket is the default one (`$MMSHARE_SOCKET` included),
    /// whose daemon must run as this user or root.
    pub default_socket: bool,
    /// `--server-uid`: the uid the daemon must run as (or root).
    pub server_uid: Option<u32>,
    /// `--daemon-timeout`: how long to wait for the daemon.
    pub timeout: Option<std::time::Duration>,
}

static TARGET: std::sync::OnceLock<Target> = std::sync::OnceLock::new();

/// Sets how commands connect (once, before any command runs).
pub fn set_target(target: Target) {
    let _ = TARGET.set(target);
}

/// The `--server-uid` given, if any (the demo passes it on to its child processes).
pub fn server_uid() -> Option<u32> {
    TARGET.get().and_then(|t| t.server_uid)
}

/// The options every command connects with: the default socket is checked as the default
/// (its daemon must be this user's or root's), a named one only against `--server-uid` or
/// `$MMSHARE_SERVER_UID`.
fn connect_options(socket: &Path) -> ConnectOptions {
    let target = TARGET.get().copied().unwrap_or_default();
    let mut options = if target.default_socket && socket == mmshare::default_socket_path() {
        ConnectOptions::default_socket()
    } else {
        ConnectOptions::new(socket)
    };
    if let Some(uid) = target.server_uid {
        options = options.server_uid(uid);
    }
    if let Some(wait) = target.timeout {
        options = options.timeout(wait);
    }
    options
}

/// Connects to the daemon at `socket`: the one place every command connects through.
pub fn try_connect(socket: &Path) -> std::result::Result<Client, ClientError> {
    Client::connect_with(&connect_options(socket))
}

/// [`try_connect`], its error as the line to print.
pub fn connect(socket: &Path) -> Result<Client> {
    Ok(try_connect(socket)?)
}

fn order_name(info: &ArrayInfo) -> &'static str {
    wire_order_name(info.order)
}

/// "C" or "F".
pub fn wire_order_name(order: mmshare::internal::proto::WireOrder) -> &'static str {
    match order {
        mmshare::internal::proto::WireOrder::C => "C",
        mmshare::internal::proto::WireOrder::F => "F",
    }
}

/// "file" or "memory".
pub fn backing_name(b: Backing) -> &'static str {
    match b {
        Backing::File => "file",
        Backing::Memory => "memory",
    }
}

/// The `--json` form of an array description.
pub fn info_json(info: &ArrayInfo) -> serde_json::Value {
    json!({
        "kind": "array",
        "name": info.name,
        "dtype": info.dtype,
        "shape": info.shape,
        "order": order_name(info),
        "nbytes": info.data_len,
        "data_offset": info.data_offset,
        "path": info.path,
        "version": info.version,
        "backing": backing_name(info.backing),
        "owner_uid": info.owner_uid,
        "mode": format!("{:04o}", info.mode),
        "file_mode": file_mode(info, None).map(|m| format!("{m:04o}")),
        "torn": info.torn,
        "stripe_bytes": info.stripe_bytes,
        "sparse": info.sparse,
    })
}

/// The permission bits of the array's file itself (not the access mode the daemon checks):
/// from the path when this user can reach it, else from a descriptor opened through the
/// daemon (`client`), else unknown.
fn file_mode(info: &ArrayInfo, client: Option<&Client>) -> Option<u32> {
    if let Ok(m) = std::fs::metadata(&info.path) {
        return Some(m.mode() & 0o7777);
    }
    let array = client?.open_raw(&info.name, Access::Read).ok()?;
    array.file().metadata().ok().map(|m| m.mode() & 0o7777)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A shape as every command prints it, the way NumPy does: `(480, 640)`, `(7,)`, `()`.
pub fn shape_text(shape: &[u64]) -> String {
    format!(
        "({})",
        match shape {
            [one] => format!("{one},"),
            _ => shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }
    )
}

/// `10 s`, `0.5 s`: a duration for people.
fn seconds_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if (s - s.round()).abs() < 0.05 {
        format!("{:.0} s", s.round())
    } else {
        format!("{s:.1} s")
    }
}

fn holder_text(writer: Option<ProcessId>) -> String {
    match writer {
        Some(w) => format!("pid {}", w.pid),
        None => "a process that did not record its pid".into(),
    }
}

/// `--shape` as the user typed it: like `mmshare::parse_shape`, but an empty dimension
/// (`3,,4`, `3,4,`, `,3`) is a typo to report, not something to skip. `7,` and `(7,)` stay
/// valid: that is how Python writes a 1-d shape.
fn parse_shape_arg(text: &str) -> Result<Vec<u64>> {
    let inner = text
        .trim()
        .trim_start_matches(['(', '['])
        .trim_end_matches([')', ']']);
    if !inner.trim().is_empty() {
        let parts: Vec<&str> = inner.split([',', 'x']).map(str::trim).collect();
        let parts = match parts.as_slice() {
            [one, ""] if !one.is_empty() => &parts[..1],
            _ => &parts[..],
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(Failure::bad_input(format!(
                "bad shape {text:?}: it has an empty dimension (write it like 3,4)"
            )));
        }
    }
    mmshare::parse_shape(text).map_err(Failure::bad_input)
}

/// `--shape`, `--mode` and `--order` of `create` (arrays and streams alike): the shape, the
/// mode as typed and as bits, and the order.
fn parse_create_args<'a>(
    shape: &str,
    mode: Option<&'a str>,
    order: &str,
) -> Result<(Vec<u64>, &'a str, u32, Order)> {
    let shape = parse_shape_arg(shape)?;
    let mode_text = mode.unwrap_or("0600");
    let mode_bits = u32::from_str_radix(mode_text.trim_start_matches("0o"), 8).map_err(|_| {
        Failure::bad_input(format!(
            "bad mode {mode_text:?}: expected octal digits such as 0644"
        ))
    })?;
    let order: Order = order.parse()?;
    Ok((shape, mode_text, mode_bits, order))
}

#[allow(clippy::too_many_arguments)]
pub fn create(
    socket: &Path,
    name: &str,
    dtype: &str,
    shape: &str,
    memory: bool,
    mode: Option<&str>,
    order: &str,
    exist_ok: bool,
    stripes: u32,
    sparse: bool,
) -> Result {
    let (shape, mode_text, mode_bits, order) = parse_create_args(shape, mode, order)?;
    let options = |exist_ok: bool| {
        let o = CreateOptions::new(name, dtype, &shape)
            .mode(mode_bits)
            .order(order)
            .exist_ok(exist_ok)
            .stripes(stripes)
            .sparse(sparse);
        if memory { o.memory() } else { o }
    };
    let client = connect(socket)?;
    // Create first; only if the name is taken, accept the existing array (the daemon checks
    // that it has the same dtype, shape, order and backing), so the output can say which.
    let (array, verb) = match client.create(&options(false)) {
        Ok(array) => (array, "created"),
        Err(e) if exist_ok && e.kind() == Some(ErrorKind::AlreadyExists) => {
            (client.create(&options(true))?, "exists")
        }
        Err(e) => return Err(e.into()),
    };
    let info = array.info();
    emit(&format!(
        "{verb} {} {} {} order {} ({}, {}{}) mode {:04o} at {}",
        info.name,
        info.dtype,
        shape_text(&info.shape),
        order_name(info),
        human_bytes(info.data_len),
        backing_name(info.backing),
        stripes_text(info),
        info.mode,
        info.path
    ))?;
    if verb == "exists" && mode.is_some() && info.mode != mode_bits {
        eprintln!(
            "mmshare: note: {name} already existed with mode {:04o}; --mode {mode_text} was not applied (delete it and create it again to change it)",
            info.mode
        );
    }
    Ok(())
}

/// `create --stream`: the same flags as an array, plus the ring's size.
#[allow(clippy::too_many_arguments)]
pub fn create_stream(
    socket: &Path,
    name: &str,
    dtype: &str,
    shape: &str,
    memory: bool,
    mode: Option<&str>,
    order: &str,
    exist_ok: bool,
    ring: crate::streams::Ring,
) -> Result {
    let (shape, _, mode_bits, order) = parse_create_args(shape, mode, order)?;
    crate::streams::create(
        socket, name, dtype, &shape, memory, mode_bits, order, exist_ok, ring,
    )
}

pub fn ls(socket: &Path, prefix: &str, json: bool) -> Result {
    let objects = connect(socket)?.list_all(prefix)?;
    if json {
        let list: Vec<_> = objects
            .iter()
            .map(|o| match o {
                ObjectInfo::Array(a) => info_json(a),
                ObjectInfo::Stream(s) => {
                    // A listing carries no per-subscriber statistics (`info` has them).
                    let mut value = crate::streams::stream_json(s);
                    if let Some(map) = value.as_object_mut() {
                        map.remove("subscribers");
                    }
                    value
                }
            })
            .collect();
        return emit(&serde_json::Value::Array(list).to_string());
    }
    let width = dtype_width(objects.iter().map(|o| match o {
        ObjectInfo::Array(a) => a.dtype.as_str(),
        ObjectInfo::Stream(s) => s.dtype.as_str(),
    }));
    emit(&format!(
        "{:<24} {:<6} {:<width$} {:<18} {:<5} {:<7} {:>10} {:>8} {:>5} TORN",
        "NAME", "KIND", "DTYPE", "SHAPE", "ORDER", "BACKING", "SIZE", "VERSION", "MODE"
    ))?;
    for o in &objects {
        match o {
            ObjectInfo::Array(a) => emit(&format!(
                "{:<24} {:<6} {:<width$} {:<18} {:<5} {:<7} {:>10} {:>8} {:>5} {}",
                a.name,
                "array",
                dtype_cell(&a.dtype),
                shape_text(&a.shape),
                order_name(a),
                backing_name(a.backing),
                human_bytes(a.data_len),
                a.version,
                format!("{:04o}", a.mode),
                if a.torn { "yes" } else { "no" }
            ))?,
            // For a stream: one frame's shape, the ring's size, and frames published.
            ObjectInfo::Stream(s) => emit(&format!(
                "{:<24} {:<6} {:<width$} {:<18} {:<5} {:<7} {:>10} {:>8} {:>5} -",
                s.name,
                "stream",
                dtype_cell(&s.dtype),
                shape_text(&s.shape),
                wire_order_name(s.order),
                backing_name(s.backing),
                human_bytes(s.frame_len.saturating_mul(u64::from(s.slots))),
                s.published,
                format!("{:04o}", s.mode),
            ))?,
        }
    }
    Ok(())
}

/// Longest dtype a table cell shows whole; a longer record descr is cut (`info` shows it all).
const DTYPE_CELL: usize = 32;

/// A dtype as a table shows it: whole, or a long record's descr cut to [`DTYPE_CELL`]
/// characters ending in `...`.
pub fn dtype_cell(dtype: &str) -> String {
    if dtype.chars().count() <= DTYPE_CELL {
        return dtype.to_owned();
    }
    let cut: String = dtype.chars().take(DTYPE_CELL - 3).collect();
    format!("{cut}...")
}

/// The width of a table's DTYPE column: its heading's, or the widest cell's.
pub fn dtype_width<'a>(dtypes: impl Iterator<Item = &'a str>) -> usize {
    dtypes
        .map(|d| dtype_cell(d).chars().count())
        .max()
        .unwrap_or(0)
        .max("DTYPE".len())
}

pub fn info(socket: &Path, name: &str, json: bool) -> Result {
    let client = connect(socket)?;
    let info = match client.describe(name)? {
        ObjectInfo::Array(info) => info,
        ObjectInfo::Stream(info) => return crate::streams::info(&info, json),
    };
    let file_mode = file_mode(&info, Some(&client));
    if json {
        let mut value = info_json(&info);
        value["file_mode"] = json!(file_mode.map(|m| format!("{m:04o}")));
        emit(&value.to_string())?;
        return Ok(());
    }
    emit(&format!("name:        {}", info.name))?;
    emit("kind:        array")?;
    emit(&format!("dtype:       {}", info.dtype))?;
    emit(&format!("shape:       {}", shape_text(&info.shape)))?;
    emit(&format!("order:       {}", order_name(&info)))?;
    emit(&format!(
        "nbytes:      {} ({})",
        info.data_len,
        human_bytes(info.data_len)
    ))?;
    emit(&format!("data_offset: {}", info.data_offset))?;
    emit(&format!("path:        {}", info.path))?;
    emit(&format!("version:     {}", info.version))?;
    emit(&format!("backing:     {}", backing_name(info.backing)))?;
    emit(&format!(
        "owner:       {}:{}",
        info.owner_uid, info.owner_gid
    ))?;
    emit(&format!(
        "mode:        {:04o} (who may open it through mmshared)",
        info.mode
    ))?;
    emit(&format!(
        "file mode:   {} (a raw np.memmap of the path works for the file's owner only; other users open it through mmshared)",
        file_mode.map_or_else(|| "unknown".to_string(), |m| format!("{m:04o}"))
    ))?;
    emit(&format!("torn:        {}", info.torn))?;
    emit(&format!(
        "stripes:     {}",
        match info.stripe_bytes {
            0 => "1 (one lock for the whole array)".to_string(),
            b => format!(
                "{} of {} ({b} bytes), each with its own lock",
                mmshare::format::stripe_count(info.data_len, b),
                human_bytes(b)
            ),
        }
    ))?;
    Ok(())
}

/// ", 8 stripes" for a striped array, nothing for one with one lock; ", sparse" for a
/// sparse file.
fn stripes_text(info: &ArrayInfo) -> String {
    let stripes = match info.stripe_bytes {
        0 => String::new(),
        b => format!(
            ", {} stripes",
            mmshare::format::stripe_count(info.data_len, b)
        ),
    };
    if info.sparse {
        stripes + ", sparse"
    } else {
        stripes
    }
}

/// Deletes each name in turn; one that fails does not stop the others. Every failure is one
/// line on stderr, and the exit status is that of the last failure if any failed.
pub fn rm(socket: &Path, names: &[String]) -> Result {
    let client = connect(socket)?;
    let mut failed: Option<Failure> = None;
    for name in names {
        match client.delete(name) {
            Ok(()) => emit(&format!("deleted {name}"))?,
            Err(e) => {
                if let Some(previous) = failed.replace(Failure::from(e)) {
                    eprintln!("mmshare: {}", previous.message);
                }
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

fn progress(total: u64, verb: &str) -> ProgressBar {
    let visible = total >= PROGRESS_FROM && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{verb} {{bar:40}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Set by Ctrl-C (or SIGTERM) during `put` and `get`.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Names `get` has put in a directory for a moment; removed if it is interrupted.
static TEMP_NAMES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A `put` waits for the write side in slices this long, so Ctrl-C is noticed at once.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// Ctrl-C during `put` is not allowed to leave the write side held: the first one asks the
/// writing loop to stop (it then publishes the array marked TORN and says how to repair it);
/// a second one exits at once.
fn on_interrupt_stop_put(name: &str, path: &Path) {
    let (name, path) = (name.to_owned(), path.display().to_string());
    let _ = ctrlc::set_handler(move || {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!(
                "mmshare: interrupted again: exiting; array {name} may be left TORN (repair it with: mmshare put {name} {path})"
            );
            std::process::exit(130);
        }
    });
}

/// Ctrl-C during `get`: remove the temporary names it made, say nothing was saved, exit 130.
/// (The snapshot itself is an unnamed file that vanishes with the process.)
fn on_interrupt_clean_get() {
    let _ = ctrlc::set_handler(|| {
        if let Ok(names) = TEMP_NAMES.lock() {
            for p in names.iter() {
                let _ = std::fs::remove_file(p);
            }
        }
        eprintln!("mmshare: interrupted; nothing was saved");
        std::process::exit(130);
    });
}

fn interrupted(message: &str) -> ! {
    eprintln!("mmshare: interrupted; {message}");
    std::process::exit(130);
}

pub fn put(
    socket: &Path,
    name: &str,
    path: &Path,
    create: bool,
    memory: bool,
    timeout: Duration,
) -> Result {
    on_interrupt_stop_put(name, path);
    // `-` is standard input; a pipe or FIFO is read as it comes (its size is unknown ahead).
    let (mut file, regular): (Box<dyn Read>, Option<u64>) = if path.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let f = File::open(path).map_err(|e| {
            Failure::new(
                crate::failure::io_class(&e),
                format!("cannot open {}: {e}", path.display()),
            )
        })?;
        let meta = f.metadata().map_err(|e| {
            Failure::new(
                crate::failure::io_class(&e),
                format!("cannot open {}: {e}", path.display()),
            )
        })?;
        let size = meta.is_file().then_some(meta.len());
        (Box::new(f), size)
    };
    let header = npy::read_header(&mut file)
        .map_err(|e| Failure::bad_input(format!("{}: {e}", path.display())))?;
    let nbytes = mmshare::data_len(&header.dtype, &header.shape)?;
    if let Some(size) = regular
        && size < header.data_offset + nbytes
    {
        return Err(Failure::bad_input(format!(
            "{} is truncated: its header promises {nbytes} bytes of data, the file holds {}",
            path.display(),
            size.saturating_sub(header.data_offset)
        )));
    }
    let order = if header.fortran { Order::F } else { Order::C };
    let client = connect(socket)?;
    let opened = client.open_raw(name, Access::Write);
    let mut array = match opened {
        // --create: make it from the file's dtype, shape and order if the name is free; an
        // existing array is written into if it matches (checked below), whatever its backing.
        Err(e) if create && e.kind() == Some(ErrorKind::NotFound) => {
            let mut options = CreateOptions::new(name, header.dtype.descr(), &header.shape)
                .order(order)
                .exist_ok(true);
            if memory {
                options = options.memory();
            }
            client.create(&options)
        }
        other => other,
    }?;
    let h = array.header().clone();
    // Order only matters when more than one dimension is longer than 1.
    let same_layout = h.order == order || h.shape.iter().filter(|&&d| d > 1).count() <= 1;
    if h.dtype != header.dtype || h.shape != header.shape || !same_layout {
        return Err(Failure::bad_input(format!(
            "{} holds {} {} order {}, but array {name} is {} {} order {}; nothing was written",
            path.display(),
            header.dtype,
            shape_text(&header.shape),
            order,
            h.dtype,
            shape_text(&h.shape),
            h.order
        )));
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        interrupted(&format!("nothing was written to {name}"));
    }
    let bar = progress(nbytes, "put");
    let mut buf = vec![0u8; CHUNK.min(nbytes as usize).max(1)];
    let start = Instant::now();
    array.handle_mut().set_timeout(WAIT_SLICE.min(timeout));
    let mut written = 0u64;
    let outcome = loop {
        let attempt = array.write_stream(|w| -> std::io::Result<u64> {
            let mut offset = 0u64;
            while offset < nbytes {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    if offset > 0 {
                        w.mark_torn();
                    }
                    return Err(std::io::Error::from(std::io::ErrorKind::Interrupted));
                }
                let n = ((nbytes - offset) as usize).min(buf.len());
                if let Err(e) = file.read_exact(&mut buf[..n]) {
                    // The data is now partly new: do not let readers take it as whole.
                    w.mark_torn();
                    return Err(e);
                }
                w.write_at(offset, &buf[..n]);
                offset += n as u64;
                written = offset;
                bar.set_position(offset);
            }
            w.clear_torn();
            Ok(w.version())
        });
        match attempt {
            Ok(outcome) => break outcome,
            Err(WriteError::Timeout { writer, .. }) => {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    interrupted(&format!("nothing was written to {name}"));
                }
                let waited = start.elapsed();
                if waited >= timeout {
                    return Err(Failure::new(
                        Class::Timeout,
                        format!(
                            "array {name}: the write side is held by {} for {} (--timeout); nothing was written",
                            holder_text(writer),
                            seconds_text(waited)
                        ),
                    ));
                }
                let left = timeout - waited;
                array.handle_mut().set_timeout(WAIT_SLICE.min(left));
            }
            Err(e) => return Err(Failure::new(crate::failure::write_class(&e), e.to_string())),
        }
    };
    bar.finish_and_clear();
    let version = match outcome {
        Ok(version) => version,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted && written == 0 => {
            interrupted(&format!("nothing was written to {name}"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => interrupted(&format!(
            "array {name} is marked TORN ({} of {} written); repair it with: mmshare put {name} {}",
            human_bytes(written),
            human_bytes(nbytes),
            path.display()
        )),
        Err(e) => {
            return Err(format!(
                "reading {} failed midway ({e}); array {name} is marked TORN (repair it with: mmshare put {name} {})",
                path.display(),
                path.display()
            )
            .into());
        }
    };
    emit(&format!(
        "wrote {} ({}) into {name}, version {version}",
        path.display(),
        human_bytes(nbytes)
    ))?;
    Ok(())
}

/// The message for a snapshot that did not validate in time.
fn read_error_text(name: &str, e: &ReadError, timeout: Duration) -> String {
    match e {
        ReadError::Torn { .. } => format!("{e} (use --allow-torn to save it anyway)"),
        ReadError::Timeout {
            sequence, writer, ..
        } if sequence % 2 == 1 => format!(
            "array {name}: the write side is held by {} for {} (--timeout); nothing was saved",
            holder_text(*writer),
            seconds_text(timeout)
        ),
        ReadError::Timeout { retries, .. } => format!(
            "array {name}: writes kept overlapping the copy for {} ({retries} retries); nothing was saved (give the writer a pause, or a longer --timeout)",
            seconds_text(timeout)
        ),
        other => other.to_string(),
    }
}

pub fn get(
    socket: &Path,
    name: &str,
    path: &Path,
    allow_torn: bool,
    timeout: Duration,
    rows: Option<(Option<u64>, Option<u64>)>,
) -> Result {
    on_interrupt_clean_get();
    let client = connect(socket)?;
    let mut array = client.open_raw(name, Access::Read)?;
    let h = array.header().clone();
    array.handle_mut().set_accept_torn(allow_torn);
    array.handle_mut().set_timeout(timeout);
    // The rows asked for, as a region of the first axis (the whole array without --rows).
    let rows = match rows {
        None => None,
        Some(_) if h.shape.is_empty() => {
            return Err(format!("{name} is 0-dimensional: it has no rows for --rows").into());
        }
        Some((a, b)) => Some((a.unwrap_or(0), b.unwrap_or(h.shape[0]))),
    };
    let region = match rows {
        None => None,
        Some((a, b)) => Some(
            array
                .region(a..b)
                .map_err(|e| format!("--rows {a}:{b}: {e}"))?,
        ),
    };
    let shape = region
        .as_ref()
        .map_or(h.shape.clone(), |r| r.shape().to_vec());
    let len = region.as_ref().map_or(h.data_len, |r| r.byte_len());
    let target = OutputTarget::of(path)?;
    let dir = target.temp_dir();
    let mut tmp = TempOut::new_in(&dir)?;
    let head = npy::header_bytes(&h.dtype, h.order == Order::F, &shape);
    let bar = progress(len, "get");
    let mut buf = vec![0u8; CHUNK.min(len as usize).max(1)];
    let mut save = |r: &mmshare::ByteReader<'_>| -> std::io::Result<()> {
        // Each attempt starts the file over; only a validated attempt is kept.
        let f = &mut tmp.file;
        f.set_len(0)?;
        f.seek(SeekFrom::Start(0))?;
        let mut out = BufWriter::new(f);
        out.write_all(&head)?;
        let mut offset = 0u64;
        while offset < r.len() {
            let n = ((r.len() - offset) as usize).min(buf.len());
            r.read_at(offset, &mut buf[..n]);
            out.write_all(&buf[..n])?;
            offset += n as u64;
            bar.set_position(offset);
        }
        out.flush()
    };
    let (written, snap) = match &region {
        None => array.read_stream(&mut save),
        Some(region) => array.read_region_stream(region, &mut save),
    }
    .map_err(|e| {
        Failure::new(
            crate::failure::read_class(&e),
            read_error_text(name, &e, timeout),
        )
    })?;
    bar.finish_and_clear();
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    target.deliver(tmp)?;
    if matches!(target, OutputTarget::Stdout) {
        return Ok(());
    }
    let what = match rows {
        None => name.to_string(),
        Some((a, b)) => format!("rows {a}:{b} of {name}"),
    };
    emit(&format!(
        "saved {what} version {}{} to {} ({})",
        snap.version,
        if snap.torn { " (TORN)" } else { "" },
        path.display(),
        human_bytes(len)
    ))?;
    Ok(())
}

/// The file a snapshot is taken into: an unnamed `O_TMPFILE` inode in the target's directory
/// when the filesystem supports it (a killed `get` leaves nothing behind), else a named
/// temporary file (removed on Ctrl-C; only SIGKILL can leave it).
struct TempOut {
    file: File,
    dir: PathBuf,
    /// Set for a named temporary file.
    named: Option<tempfile::TempPath>,
}

impl TempOut {
    fn new_in(dir: &Path) -> Result<TempOut> {
        use rustix::fs::{Mode, OFlags};
        let cant = |e: &std::io::Error| {
            Failure::new(
                crate::failure::io_class(e),
                format!("cannot write in {}: {e}", dir.display()),
            )
        };
        match rustix::fs::open(
            dir,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => Ok(TempOut {
                file: File::from(fd),
                dir: dir.to_owned(),
                named: None,
            }),
            // Not supported here (EOPNOTSUPP, EISDIR or EINVAL from older kernels and some
            // filesystems): a named file, registered for removal on Ctrl-C.
            Err(e) if e == rustix::io::Errno::ACCESS || e == rustix::io::Errno::NOENT => {
                Err(cant(&std::io::Error::from(e)))
            }
            Err(_) => {
                let named = tempfile::NamedTempFile::new_in(dir).map_err(|e| cant(&e))?;
                if let Ok(mut names) = TEMP_NAMES.lock() {
                    names.push(named.path().to_owned());
                }
                let (file, path) = named.into_parts();
                Ok(TempOut {
                    file,
                    dir: dir.to_owned(),
                    named: Some(path),
                })
            }
        }
    }

    /// Puts the file at `target`, replacing what is there atomically.
    fn persist(self, target: &Path) -> std::io::Result<()> {
        if let Some(named) = self.named {
            return named.persist(target).map_err(|e| e.error);
        }
        // An O_TMPFILE inode gets a name with linkat through /proc (no privilege needed), a
        // temporary one since linkat never replaces, which the rename then moves over the
        // target. Only the instant between the two can leave that name behind.
        let fd_path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.file)
        );
        let staging = self.dir.join(format!(
            ".mmshare-get-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        if let Ok(mut names) = TEMP_NAMES.lock() {
            names.push(staging.clone());
        }
        rustix::fs::linkat(
            rustix::fs::CWD,
            fd_path.as_str(),
            rustix::fs::CWD,
            &staging,
            rustix::fs::AtFlags::SYMLINK_FOLLOW,
        )?;
        std::fs::rename(&staging, target).inspect_err(|_| {
            let _ = std::fs::remove_file(&staging);
        })
    }
}

/// Where `get` puts the snapshot. A snapshot is first taken into a temporary file (a read that
/// overlaps a write starts over, which only a file can do), then delivered.
#[derive(Debug)]
enum OutputTarget {
    /// `-`: copied to standard output.
    Stdout,
    /// A device, FIFO or other non-regular file: copied into it, never replaced.
    Special(std::path::PathBuf),
    /// A regular file (or a new one): the temp file is renamed over it, atomically. Symlinks
    /// are followed, so the link stays and its target is replaced.
    Regular { path: std::path::PathBuf, mode: u32 },
}

impl OutputTarget {
    fn of(path: &Path) -> Result<OutputTarget> {
        use std::os::unix::fs::PermissionsExt;
        if path.as_os_str() == "-" {
            return Ok(OutputTarget::Stdout);
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(OutputTarget::Regular {
                path: std::fs::canonicalize(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
                mode: m.permissions().mode() & 0o7777,
            }),
            Ok(m) if m.is_dir() => Err(Failure::bad_input(format!(
                "{} is a directory; give a file name",
                path.display()
            ))),
            Ok(_) => Ok(OutputTarget::Special(path.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A new file gets the usual permissions: 0666 minus the umask.
                let umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
                rustix::process::umask(umask);
                Ok(OutputTarget::Regular {
                    path: path.to_owned(),
                    mode: 0o666 & !umask.as_raw_mode(),
                })
            }
            Err(e) => Err(Failure::new(
                crate::failure::io_class(&e),
                format!("cannot write {}: {e}", path.display()),
            )),
        }
    }

    fn temp_dir(&self) -> std::path::PathBuf {
        match self {
            OutputTarget::Regular { path, .. } => path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_owned(),
            _ => std::env::temp_dir(),
        }
    }

    fn deliver(&self, mut tmp: TempOut) -> Result {
        use std::os::unix::fs::PermissionsExt;
        let mut copy_into = |mut out: Box<dyn Write>, what: &str| -> Result {
            let file = &mut tmp.file;
            file.seek(SeekFrom::Start(0))?;
            std::io::copy(file, &mut out)
                .and_then(|_| out.flush())
                .map_err(|e| {
                    Failure::new(
                        crate::failure::io_class(&e),
                        format!("cannot write {what}: {e}"),
                    )
                })
        };
        match self {
            OutputTarget::Stdout => {
                copy_into(Box::new(std::io::stdout().lock()), "to standard output")
            }
            OutputTarget::Special(path) => {
                let out = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                copy_into(Box::new(out), &path.display().to_string())
            }
            OutputTarget::Regular { path, mode } => {
                tmp.file
                    .set_permissions(std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                tmp.persist(path)
                    .map_err(|e| Failure::from(format!("cannot write {}: {e}", path.display())))
            }
        }
    }
}

/// `2026-11-26T09:40:01.123Z` for a time in ns since the epoch.
pub fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let ms = (ns / 1_000_000) % 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What became of the watched array's name.
enum NameNow {
    /// It still names the mapped file.
    Same,
    /// Nothing has the name any more.
    Deleted,
    /// Another array has the name now (deleted and created again).
    Replaced(Box<mmshare::Shared<mmshare::RawArray>>),
    /// The daemon did not answer.
    Unknown(String),
}

fn file_id(array: &mmshare::RawArray) -> Option<(u64, u64)> {
    array.file().metadata().ok().map(|m| (m.dev(), m.ino()))
}

fn name_now(client: &Client, name: &str, id: Option<(u64, u64)>) -> NameNow {
    match client.open_raw(name, Access::Read) {
        Ok(a) if file_id(&a) == id => NameNow::Same,
        Ok(a) => NameNow::Replaced(Box::new(a)),
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => NameNow::Deleted,
        Err(e) => NameNow::Unknown(e.to_string()),
    }
}

/// How often `watch` checks that the name still means the array it maps.
const NAME_CHECK: Duration = Duration::from_secs(1);

pub fn watch(socket: &Path, name: &str, json: bool, seconds: Option<Duration>) -> Result {
    let started = Instant::now();
    let first = connect(socket)?;
    if let Ok(ObjectInfo::Stream(_)) = first.describe(name) {
        return crate::streams::watch(socket, name, json, seconds);
    }
    let mut array = first.open_raw(name, Access::Read)?;
    let mut client = Some(first);
    let mut id = file_id(&array);
    let mut seen = array.version();
    if !json {
        eprintln!("watching {name} from version {seen} (Ctrl-C to stop)");
    }
    let mut window: std::collections::VecDeque<Instant> = Default::default();
    let mut checked = Instant::now();
    loop {
        if seconds.is_some_and(|s| started.elapsed() >= s) {
            return Ok(());
        }
        if let Ok(v) = array.wait_for_version(seen, NAME_CHECK) {
            let now = Instant::now();
            window.push_back(now);
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
            {
                window.pop_front();
            }
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let missed = v - seen - 1;
            seen = v;
            let line = if json {
                json!({"version": v, "time": utc(wall), "rate": window.len(), "torn": array.is_torn(), "skipped": missed}).to_string()
            } else {
                format!(
                    "version {v:<10} {}  {:>6} updates/s{}{}",
                    utc(wall),
                    window.len(),
                    if missed > 0 {
                        format!("  ({missed} skipped)")
                    } else {
                        String::new()
                    },
                    if array.is_torn() { "  TORN" } else { "" }
                )
            };
            emit(&line)?;
        }
        if checked.elapsed() < NAME_CHECK {
            continue;
        }
        checked = Instant::now();
        // The mapping alone cannot tell that the array was deleted (its pages live on while
        // mapped): ask the daemon what the name means now.
        if client.is_none() {
            client = try_connect(socket).ok();
        }
        let Some(c) = client.as_ref() else { continue };
        match name_now(c, name, id) {
            NameNow::Same => {}
            NameNow::Deleted => {
                return Err(Failure::new(
                    Class::NotFound,
                    format!("array {name} was deleted (last version {seen}); stopped watching"),
                ));
            }
            NameNow::Replaced(new) => {
                array = *new;
                id = file_id(&array);
                seen = array.version();
                window.clear();
                eprintln!(
                    "mmshare: array {name} was deleted and created again; watching the new one from version {seen}"
                );
            }
            NameNow::Unknown(e) => {
                eprintln!(
                    "mmshare: cannot ask mmshared about {name} ({e}); still watching the mapped array"
                );
                client = None;
            }
        }
    }
}

/// `call`: sends the request in `request` (a .npy of the service's request shape, or a stack
/// of them along a first axis) to service `name`, one at a time, and saves the responses (in
/// the same stacking) as a .npy at `out` (`-`: standard output).
pub fn call(socket: &Path, name: &str, request: &Path, out: &Path, timeout: Duration) -> Result {
    let client = connect(socket)?;
    let describe = |stream: String| -> Result<mmshare::StreamInfo> {
        match client.describe(&stream)? {
            mmshare::ObjectInfo::Stream(info) => Ok(info),
            mmshare::ObjectInfo::Array(_) => Err(Failure::bad_input(format!(
                "{stream:?} is an array: {name:?} is not a service"
            ))),
        }
    };
    let (wants, gives) = (
        describe(mmshare::request_stream(name, 0))?,
        describe(mmshare::response_stream(name, 0))?,
    );
    let mut file = std::io::BufReader::new(File::open(request).map_err(|e| {
        Failure::new(
            crate::failure::io_class(&e),
            format!("cannot read {}: {e}", request.display()),
        )
    })?);
    let header = npy::read_header(&mut file)
        .map_err(|e| Failure::bad_input(format!("{}: {e}", request.display())))?;
    if header.dtype.descr() != wants.dtype {
        return Err(Failure::bad_input(format!(
            "{} holds {}; service {name:?} takes requests of {}",
            request.display(),
            header.dtype.descr(),
            wants.dtype
        )));
    }
    let (count, stacked) = if header.shape == wants.shape {
        (1, false)
    } else if header.shape.len() == wants.shape.len() + 1 && header.shape[1..] == wants.shape[..] {
        (header.shape[0], true)
    } else {
        return Err(Failure::bad_input(format!(
            "{} has shape {:?}; service {name:?} takes requests of shape {:?}, or a stack of \
             them (N, {})",
            request.display(),
            header.shape,
            wants.shape,
            wants
                .shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    if header.fortran && header.shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(Failure::bad_input(format!(
            "{} is in Fortran order; save it in C order (np.ascontiguousarray)",
            request.display()
        )));
    }
    let mut requester = client.requester_bytes(name)?;
    requester.set_timeout(timeout);
    let out_dtype: mmshare::DType = gives
        .dtype
        .parse()
        .map_err(|e: mmshare::DTypeError| Failure::new(Class::Other, e.to_string()))?;
    let mut out_shape = gives.shape.clone();
    if stacked {
        out_shape.insert(0, count);
    }
    let target = OutputTarget::of(out)?;
    let mut tmp = TempOut::new_in(&target.temp_dir())?;
    let write_err = |e: std::io::Error| format!("cannot write {}: {e}", out.display());
    {
        let mut w = BufWriter::new(&mut tmp.file);
        w.write_all(&npy::header_bytes(&out_dtype, false, &out_shape))
            .map_err(write_err)?;
        for k in 0..count {
            let mut loan = requester.loan()?;
            file.read_exact(&mut loan).map_err(|e| {
                Failure::bad_input(format!(
                    "{}: request {k} is cut short: {e}",
                    request.display()
                ))
            })?;
            let id = loan.send()?;
            let response = requester.receive_timeout(timeout)?;
            debug_assert_eq!(response.id(), id);
            w.write_all(&response).map_err(write_err)?;
        }
        w.flush().map_err(write_err)?;
    }
    target.deliver(tmp)?;
    if !matches!(target, OutputTarget::Stdout) {
        emit(&format!(
            "called {name} {count} time(s); saved the response{} to {}",
            if count == 1 { "" } else { "s" },
            out.display()
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_795_686_401_123_000_000), "2026-11-26T09:46:41.123Z");
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }
}
