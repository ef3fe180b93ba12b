//! The commands. Each returns `Err(message)` for `main` to print as one line.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mmshare::{Access, ArrayInfo, Backing, Client, CreateOptions, Order, ReadError};
use serde_json::json;

use crate::npy;

pub type Result<T = ()> = std::result::Result<T, String>;

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
        Err(e) => Err(format!("cannot write to standard output: {e}")),
    }
}

pub fn connect(socket: &Path) -> Result<Client> {
    Client::connect(socket).map_err(|e| e.to_string())
}

fn order_name(info: &ArrayInfo) -> &'static str {
    match info.order {
        mmshare::proto::WireOrder::C => "C",
        mmshare::proto::WireOrder::F => "F",
    }
}

fn backing_name(b: Backing) -> &'static str {
    match b {
        Backing::File => "file",
        Backing::Memory => "memory",
    }
}

/// The `--json` form of an array description.
pub fn info_json(info: &ArrayInfo) -> serde_json::Value {
    json!({
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
        "mode": info.mode,
        "torn": info.torn,
    })
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

fn shape_text(shape: &[u64]) -> String {
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

#[allow(clippy::too_many_arguments)]
pub fn create(
    socket: &Path,
    name: &str,
    dtype: &str,
    shape: &str,
    memory: bool,
    mode: &str,
    order: &str,
    exist_ok: bool,
) -> Result {
    let shape = mmshare::parse_shape(shape)?;
    let mode = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .map_err(|_| format!("bad mode {mode:?}: expected octal digits such as 0644"))?;
    let order: Order = order
        .parse()
        .map_err(|e: mmshare::ShapeError| e.to_string())?;
    let mut options = CreateOptions::new(name, dtype, &shape)
        .mode(mode)
        .order(order)
        .exist_ok(exist_ok);
    if memory {
        options = options.memory();
    }
    let array = connect(socket)?
        .create(&options)
        .map_err(|e| e.to_string())?;
    let info = array.info();
    emit(&format!(
        "created {} {} {} order {} ({}, {}) at {}",
        info.name,
        info.dtype,
        shape_text(&info.shape),
        order_name(info),
        human_bytes(info.data_len),
        backing_name(info.backing),
        info.path
    ))?;
    Ok(())
}

pub fn ls(socket: &Path, prefix: &str, json: bool) -> Result {
    let arrays = connect(socket)?.list(prefix).map_err(|e| e.to_string())?;
    if json {
        let list: Vec<_> = arrays.iter().map(info_json).collect();
        return emit(&serde_json::Value::Array(list).to_string());
    }
    emit(&format!(
        "{:<24} {:<5} {:<18} {:<5} {:<7} {:>10} {:>8} {:>5} TORN",
        "NAME", "DTYPE", "SHAPE", "ORDER", "BACKING", "SIZE", "VERSION", "MODE"
    ))?;
    for a in &arrays {
        emit(&format!(
            "{:<24} {:<5} {:<18} {:<5} {:<7} {:>10} {:>8} {:>5o} {}",
            a.name,
            a.dtype,
            shape_text(&a.shape),
            order_name(a),
            backing_name(a.backing),
            human_bytes(a.data_len),
            a.version,
            a.mode,
            if a.torn { "yes" } else { "no" }
        ))?;
    }
    Ok(())
}

pub fn info(socket: &Path, name: &str, json: bool) -> Result {
    let info = connect(socket)?.stat(name).map_err(|e| e.to_string())?;
    if json {
        emit(&format!("{}", info_json(&info)))?;
        return Ok(());
    }
    emit(&format!("name:        {}", info.name))?;
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
    emit(&format!("mode:        {:04o}", info.mode))?;
    emit(&format!("torn:        {}", info.torn))?;
    Ok(())
}

pub fn rm(socket: &Path, name: &str) -> Result {
    connect(socket)?.delete(name).map_err(|e| e.to_string())?;
    emit(&format!("deleted {name}"))?;
    Ok(())
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

pub fn put(socket: &Path, name: &str, path: &Path, create: bool, memory: bool) -> Result {
    let mut file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let header = npy::read_header(&mut file).map_err(|e| format!("{}: {e}", path.display()))?;
    let nbytes = mmshare::data_len(header.dtype, &header.shape).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if size < header.data_offset + nbytes {
        return Err(format!(
            "{} is truncated: its header promises {nbytes} bytes of data, the file holds {}",
            path.display(),
            size.saturating_sub(header.data_offset)
        ));
    }
    let order = if header.fortran { Order::F } else { Order::C };
    let client = connect(socket)?;
    let array = if create {
        let mut options = CreateOptions::new(name, header.dtype.descr(), &header.shape)
            .order(order)
            .exist_ok(true);
        if memory {
            options = options.memory();
        }
        client.create(&options)
    } else {
        client.open_raw(name, Access::Write)
    }
    .map_err(|e| e.to_string())?;
    let h = array.header();
    // Order only matters when more than one dimension is longer than 1.
    let same_layout = h.order == order || h.shape.iter().filter(|&&d| d > 1).count() <= 1;
    if h.dtype != header.dtype || h.shape != header.shape || !same_layout {
        return Err(format!(
            "{} holds {} {} order {}, but array {name} is {} {} order {}; nothing was written",
            path.display(),
            header.dtype,
            shape_text(&header.shape),
            order,
            h.dtype,
            shape_text(&h.shape),
            h.order
        ));
    }
    let bar = progress(nbytes, "put");
    let mut buf = vec![0u8; CHUNK.min(nbytes as usize).max(1)];
    let outcome = array
        .write_stream(|w| -> std::io::Result<u64> {
            let mut offset = 0u64;
            while offset < nbytes {
                let n = ((nbytes - offset) as usize).min(buf.len());
                if let Err(e) = file.read_exact(&mut buf[..n]) {
                    // The data is now partly new: do not let readers take it as whole.
                    w.mark_torn();
                    return Err(e);
                }
                w.write_at(offset, &buf[..n]);
                offset += n as u64;
                bar.set_position(offset);
            }
            w.clear_torn();
            Ok(w.version())
        })
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let version = outcome.map_err(|e| {
        format!(
            "reading {} failed midway ({e}); array {name} is marked TORN",
            path.display()
        )
    })?;
    emit(&format!(
        "wrote {} ({}) into {name}, version {version}",
        path.display(),
        human_bytes(nbytes)
    ))?;
    Ok(())
}

pub fn get(socket: &Path, name: &str, path: &Path, allow_torn: bool) -> Result {
    let client = connect(socket)?;
    let mut array = client
        .open_raw(name, Access::Read)
        .map_err(|e| e.to_string())?;
    let h = array.header().clone();
    array.handle_mut().set_accept_torn(allow_torn);
    // Reads of a big array take time; do not give up while writers come and go.
    array.handle_mut().set_timeout(Duration::from_secs(600));
    let target = OutputTarget::of(path)?;
    let dir = target.temp_dir();
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    let head = npy::header_bytes(h.dtype, h.order == Order::F, &h.shape);
    let bar = progress(h.data_len, "get");
    let mut buf = vec![0u8; CHUNK.min(h.data_len as usize).max(1)];
    let (written, snap) = array
        .read_stream(|r| -> std::io::Result<()> {
            // Each attempt starts the file over; only a validated attempt is kept.
            let f = tmp.as_file_mut();
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
        })
        .map_err(|e| match e {
            ReadError::Torn { .. } => format!("{e} (use --allow-torn to save it anyway)"),
            other => other.to_string(),
        })?;
    bar.finish_and_clear();
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    target.deliver(tmp)?;
    if matches!(target, OutputTarget::Stdout) {
        return Ok(());
    }
    emit(&format!(
        "saved {name} version {}{} to {} ({})",
        snap.version,
        if snap.torn { " (TORN)" } else { "" },
        path.display(),
        human_bytes(h.data_len)
    ))?;
    Ok(())
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
            Ok(m) if m.is_dir() => Err(format!(
                "{} is a directory; give a file name",
                path.display()
            )),
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
            Err(e) => Err(format!("cannot write {}: {e}", path.display())),
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

    fn deliver(&self, tmp: tempfile::NamedTempFile) -> Result {
        use std::os::unix::fs::PermissionsExt;
        let copy_into = |mut out: Box<dyn Write>, what: &str| -> Result {
            let mut file = tmp.reopen().map_err(|e| e.to_string())?;
            std::io::copy(&mut file, &mut out)
                .and_then(|_| out.flush())
                .map_err(|e| format!("cannot write {what}: {e}"))
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
                tmp.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                tmp.persist(path)
                    .map(drop)
                    .map_err(|e| format!("cannot write {}: {}", path.display(), e.error))
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

pub fn watch(socket: &Path, name: &str, json: bool) -> Result {
    let client = connect(socket)?;
    let array = client
        .open_raw(name, Access::Read)
        .map_err(|e| e.to_string())?;
    let mut seen = array.version();
    if !json {
        eprintln!("watching {name} from version {seen} (Ctrl-C to stop)");
    }
    let mut window: std::collections::VecDeque<Instant> = Default::default();
    loop {
        match array.wait_for_version(seen, Duration::from_secs(1)) {
            Ok(v) => {
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
            Err(_) => continue, // quiet: keep waiting
        }
    }
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
