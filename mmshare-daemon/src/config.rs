//! Command-line flags and their defaults (every default works without root).

use std::io;
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::dirs::{self, DirError, DirLock, LockError, OwnDir};

/// How the daemon writes its log (to stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `mmshared`: owns named shared-memory arrays and hands out file descriptors to them.
#[derive(Clone, Debug, Parser)]
#[command(name = "mmshared", version, about)]
pub struct Config {
    /// One directory for a whole separate daemon: its socket is DIR/mmshared.sock, its
    /// persistent arrays are in DIR/arrays, its memory arrays in a directory of its own on
    /// /dev/shm (see --mem-dir). DIR is created if its parent exists. --socket, --dir and
    /// --mem-dir still override their part
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Unix socket to listen on [default: $MMSHARE_SOCKET, else
    /// $XDG_RUNTIME_DIR/mmshare/mmshared.sock, else /tmp/mmshare-$UID/mmshared.sock]. Its
    /// directory must belong to the daemon's user (not /tmp itself, nor a directory another
    /// user made); that of a socket you name must exist, only the default one is created
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Directory of persistent (file-backed) arrays [default: $MMSHARE_DIR, else
    /// $XDG_DATA_HOME/mmshare, else ~/.local/share/mmshare]. Created if its parent exists
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Directory of memory arrays, on tmpfs [default: /dev/shm/mmshare-$UID with the default
    /// --dir; with any other --dir (or --home, or $MMSHARE_DIR), /dev/shm/mmshare-$UID-HASH,
    /// HASH derived from that directory's absolute path, so two daemons never share one; if
    /// another user holds that name, a private directory with a random suffix, remembered in
    /// the storage directory for later starts]. Created if its parent exists; one you name must
    /// belong to the daemon's user
    #[arg(long)]
    pub mem_dir: Option<PathBuf>,
    /// Most arrays the daemon will hold
    #[arg(long, default_value_t = 4096)]
    pub max_arrays: usize,
    /// Most bytes all arrays and streams together may take (their files' apparent sizes and
    /// their control state), e.g. 64G; only the filesystems' free space by default
    #[arg(long, value_parser = parse_bytes)]
    pub max_bytes: Option<u64>,
    /// Most bytes one user's arrays and streams may take in each directory, e.g. 8G [default:
    /// --user-share of what the daemon may hold there]. The daemon's own uid and root are
    /// limited only by --max-bytes and the filesystems
    #[arg(long, value_parser = parse_bytes)]
    pub max_bytes_per_user: Option<u64>,
    /// Without --max-bytes-per-user: the percent of what the daemon may hold in a directory
    /// (the size of its filesystem, at most --max-bytes) that one user's objects there may
    /// take
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub user_share: u32,
    /// Percent of every limit (bytes in each directory, --max-arrays) that users other than
    /// the daemon's own and root may never take together, so that they cannot lock those out
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(0..=99))]
    pub reserve: u32,
    /// Most arrays and streams one user may own (the daemon's own uid and root excepted)
    #[arg(long, default_value_t = 512)]
    pub max_objects_per_user: usize,
    /// Most simultaneous client connections; one more gets a Busy reply
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Most connections one uid may hold at once (the daemon's own uid and root excepted)
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_user: usize,
    /// Connections out of --max-connections that only the daemon's own uid and root may use,
    /// so that other users can never lock them out
    #[arg(long, default_value_t = 16)]
    pub reserved_connections: usize,
    /// Seconds after which a connection that holds nothing (no write access, no stream) and
    /// has sent nothing is closed; clients dial again by themselves on their next request.
    /// 0: never
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub idle_timeout: u64,
    /// Permission bits of the socket file, in octal (0666 lets every user connect; access
    /// to each array is still checked against its owner and mode)
    #[arg(long, value_parser = parse_octal, default_value = "600")]
    pub socket_mode: u32,
    /// Log level (error, warn, info, debug, trace, off) or comma-separated TARGET=LEVEL
    /// filters; RUST_LOG overrides it
    #[arg(long, default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,
    /// Log format: text (one line per event), or json (one JSON object per line, for log
    /// collectors)
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve metrics in the Prometheus text format at ADDR: a Unix socket path (mode 0600: the
    /// daemon's user only), or a loopback address such as 127.0.0.1:9464 (GET /metrics). Off by
    /// default: they show object names and uids to whoever can connect there
    #[arg(long, value_name = "ADDR", value_parser = crate::metrics::parse_endpoint)]
    pub metrics: Option<crate::metrics::Endpoint>,
    /// Do not keep control state in a descriptor keeper: the daemon then starts with fresh
    /// control state for every object, so processes that were using an object when it
    /// restarted no longer see the processes that attach after it (for throw-away daemons)
    #[arg(long)]
    pub no_fd_keeper: bool,
    /// Run as the descriptor keeper on this socket (started by the daemon itself)
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub fd_keeper: Option<PathBuf>,
}

const LOG_LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Accepts what `tracing` understands as a filter, but only with level names it knows:
/// `EnvFilter` takes a bare unknown word such as "chatty" as a target name and then logs
/// nothing, which is never what was meant.
fn parse_log_level(s: &str) -> Result<String, String> {
    let bad = |what: &str| {
        let whole = if what == s {
            String::new()
        } else {
            format!(" in {s:?}")
        };
        format!(
            "unknown log level {what:?}{whole} (use one of {}, or TARGET=LEVEL)",
            LOG_LEVELS.join(", ")
        )
    };
    if s.trim().is_empty() {
        return Err(bad(s));
    }
    for directive in s.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(bad(level));
        }
    }
    tracing_subscriber::EnvFilter::try_new(s).map_err(|e| format!("bad log filter {s:?}: {e}"))?;
    Ok(s.to_owned())
}

fn parse_octal(s: &str) -> Result<u32, String> {
    let digits = s.trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode between 0 and 777"))
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    // Binary units whether written K or KiB (512M is 512 MiB), fractions allowed (1.5G).
    parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|e| format!("{s:?} is not a byte count such as 1048576, 512M or 64G ({e})"))
}

fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// 64-bit FNV-1a: a hash that never changes between builds (the memory directory derived from
/// it must be the same after an upgrade, or memory arrays would seem to vanish).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A directory the user named: it must be a directory of the daemon's own if it exists; if
/// not, it is created (0700) only when its parent exists, never with missing ancestors.
fn ensure_named_dir(flag: &str, dir: &Path) -> Result<OwnDir, String> {
    match dirs::open_own(dir) {
        Ok(own) => Ok(own),
        Err(DirError::Missing) => {
            let parent = parent_of(dir);
            if !parent.is_dir() {
                return Err(format!(
                    "{flag} {}: its parent directory {} does not exist (mmshared creates only its \
                     default directories with their parents; create it first)",
                    dir.display(),
                    parent.display()
                ));
            }
            dirs::ensure_own(dir, false).map_err(|e| refusal(flag, dir, &e))
        }
        Err(e) => Err(refusal(flag, dir, &e)),
    }
}

/// The line that refuses directory `dir` (given by `flag`) for reason `e`.
fn refusal(flag: &str, dir: &Path, e: &DirError) -> String {
    match e {
        DirError::Io(err) => format!("cannot use {flag} {}: {err}", dir.display()),
        DirError::Foreign { .. } | DirError::Symlink { .. } | DirError::Unsafe { .. } => format!(
            "{flag} {}; mmshared uses only directories of its own (another user could read, \
             replace or redirect what it puts there): choose a directory you own",
            e.explain(dir)
        ),
        DirError::Missing | DirError::NotADirectory => format!("{flag} {}", e.explain(dir)),
    }
}

/// The directory `path` is in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// One of the documented default directories: created with its parents if missing. Before
/// anything is created, the nearest existing ancestor (what the new directories go into) is
/// checked with [`dirs::check_parent`]; an existing directory must be the daemon's, in a
/// parent that passes the same check.
fn ensure_default_dir(what: &str, dir: &Path) -> Result<OwnDir, String> {
    check_default_parent(what, dir)?;
    dirs::ensure_own(dir, true).map_err(|e| match e {
        DirError::Io(err) => format!("cannot create the default {what} {}: {err}", dir.display()),
        e => format!(
            "the default {what}: {}{}",
            e.explain(dir),
            if e.is_taken() { TAKEN_HINT } else { "" }
        ),
    })
}

/// What to do about a default directory that someone else holds.
const TAKEN_HINT: &str = " (another user may have created it first: have it removed, or choose \
                          a directory of your own with --home, --dir or --socket)";

/// Checks the directory that the default directory `dir` is (or is about to be) created in.
fn check_default_parent(what: &str, dir: &Path) -> Result<(), String> {
    let base = dir
        .ancestors()
        .skip(1)
        .find(|a| !a.as_os_str().is_empty() && a.exists())
        .unwrap_or(Path::new("/"));
    dirs::check_parent(base).map_err(|e| {
        format!(
            "cannot use the default {what} {}: {}{TAKEN_HINT}",
            dir.display(),
            e.explain(base)
        )
    })
}

/// The socket's directory: it must belong to the daemon (see [`dirs::check_socket_dir`]).
/// `what` names it in the message ("--socket PATH: its directory", ...).
fn check_socket_dir(what: &str, dir: &Path, default: bool) -> Result<(), String> {
    dirs::check_socket_dir(dir).map_err(|e| {
        let reason = e.explain(dir);
        match e {
            DirError::Foreign { .. } | DirError::Symlink { .. } => format!(
                "{what} {reason}: refusing to listen there (its owner could replace the socket, \
                 and clients would talk to their daemon instead); {}",
                if default {
                    "another user may have created it to take the socket over: have it \
                     removed, set XDG_RUNTIME_DIR, or start mmshared with --socket or --home in \
                     a directory of your own"
                } else {
                    "listen in a directory of your own"
                }
            ),
            _ => format!("{what} {reason}"),
        }
    })
}

/// Takes the lock of the `what` directory, or says why not in one line.
fn lock(what: &str, flag: &str, dir: &OwnDir) -> Result<DirLock, String> {
    dir.lock().map_err(|e| match e {
        LockError::Held => format!(
            "another mmshared already uses the {what} {}; stop it, or start this one with \
             its own --home DIR (or its own {flag})",
            dir.path().display()
        ),
        LockError::Refused(message) => format!("cannot use the {what}: {message}"),
    })
}

/// The key of the line in the storage directory's lock file that records the private memory
/// directory the daemon fell back to.
const MEMORY_RECORD: &str = "memory_dir=";

/// The default memory directory: the one recorded at an earlier start if it is still the
/// daemon's, else the predictable `/dev/shm/mmshare-$UID[-HASH]`, else (another user holds
/// that name, or it is a symlink or a file) a new private directory with an unpredictable
/// name, which is recorded in the storage directory's lock file so that later starts (and
/// the memory arrays in it) find it again.
fn default_memory_dir(
    predictable: &Path,
    storage: &OwnDir,
    storage_lock: &DirLock,
    warnings: &mut Vec<String>,
) -> Result<OwnDir, String> {
    let record_file = storage.path().join(dirs::LOCK_FILE);
    let record_error = |e: io::Error| format!("cannot use {}: {e}", record_file.display());
    let recorded = storage_lock.record().map_err(record_error)?;
    if let Some(path) = recorded
        .lines()
        .find_map(|l| l.strip_prefix(MEMORY_RECORD))
        .map(PathBuf::from)
    {
        if dirs::is_fallback_of(predictable, &path) {
            match dirs::open_own(&path) {
                Ok(own) => return Ok(own),
                Err(e) => warnings.push(format!(
                    "the memory directory recorded at an earlier start cannot be used ({}): \
                     choosing one again",
                    e.explain(&path)
                )),
            }
        } else {
            warnings.push(format!(
                "ignoring the memory directory {} recorded in {}: it is not a private \
                 directory of {}",
                path.display(),
                record_file.display(),
                predictable.display()
            ));
        }
        storage_lock.set_record("").map_err(record_error)?;
    }
    let flag = "memory directory (--mem-dir)";
    let parent = parent_of(predictable);
    if !parent.is_dir() {
        return Err(format!(
            "{flag} {}: its parent directory {} does not exist (mmshared creates only its \
             default directories with their parents; create it first)",
            predictable.display(),
            parent.display()
        ));
    }
    dirs::check_parent(parent).map_err(|e| refusal(flag, parent, &e))?;
    match dirs::ensure_own(predictable, false) {
        Ok(own) => Ok(own),
        Err(taken) if taken.is_taken() => {
            let own = dirs::create_fallback(predictable).map_err(|e| {
                format!(
                    "{}, and no private memory directory can be made next to it: {e}",
                    taken.explain(predictable)
                )
            })?;
            storage_lock
                .set_record(&format!("{MEMORY_RECORD}{}\n", own.path().display()))
                .map_err(record_error)?;
            warnings.push(format!(
                "{}: another user may have created it; using the private memory directory {} \
                 instead (recorded in {}, so later starts use it too)",
                taken.explain(predictable),
                own.path().display(),
                record_file.display()
            ));
            Ok(own)
        }
        Err(e) => Err(refusal(flag, predictable, &e)),
    }
}

/// The socket and the two array directories, checked, created where missing and locked:
/// what [`Config::prepare_paths`] returns. The directories' locks are held while it lives.
#[derive(Debug)]
pub(crate) struct Paths {
    /// The socket to listen on, in a directory of the daemon's own.
    pub(crate) socket: PathBuf,
    /// The persistent storage directory.
    pub(crate) storage: PathBuf,
    /// The memory directory: the one configured, or a private one when the default name was
    /// taken.
    pub(crate) memory: PathBuf,
    /// Warnings for the log (written once logging is set up).
    pub(crate) warnings: Vec<String>,
    /// The listening socket the service manager passed (socket activation), bound to
    /// `socket`: used instead of binding one, and left in place at exit.
    pub(crate) passed: Option<std::os::fd::OwnedFd>,
    /// The storage and memory directories' locks.
    _locks: [DirLock; 2],
}

impl Config {
    /// The socket path, defaults applied.
    pub fn socket_path(&self) -> PathBuf {
        if let Some(s) = &self.socket {
            return s.clone();
        }
        if let Some(home) = &self.home {
            return home.join("mmshared.sock");
        }
        mmshare::default_socket_path()
    }

    /// The persistent storage directory, defaults applied.
    pub fn storage_dir(&self) -> PathBuf {
        self.named_storage_dir()
            .unwrap_or_else(|| match env_path("XDG_DATA_HOME") {
                Some(d) => d.join("mmshare"),
                None => match env_path("HOME") {
                    Some(home) => home.join(".local/share/mmshare"),
                    None => PathBuf::from(format!("/tmp/mmshare-{}/data", uid())),
                },
            })
    }

    /// The storage directory if the user chose one (flag, --home or $MMSHARE_DIR).
    fn named_storage_dir(&self) -> Option<PathBuf> {
        if let Some(d) = &self.dir {
            return Some(d.clone());
        }
        if let Some(home) = &self.home {
            return Some(home.join("arrays"));
        }
        env_path("MMSHARE_DIR")
    }

    /// The memory-array directory, defaults applied: `/dev/shm/mmshare-$UID` next to the
    /// default storage directory, else a directory derived from the storage directory's
    /// absolute path, so that a daemon with its own storage never shares memory arrays. When
    /// another user holds that default name, the daemon uses a private directory instead
    /// (what `prepare_paths` returns).
    pub fn memory_dir(&self) -> PathBuf {
        if let Some(d) = &self.mem_dir {
            return d.clone();
        }
        match self.named_storage_dir() {
            None => PathBuf::from(format!("/dev/shm/mmshare-{}", uid())),
            Some(dir) => {
                let abs = std::path::absolute(&dir).unwrap_or(dir);
                let hash = fnv1a(abs.as_os_str().as_encoded_bytes());
                PathBuf::from(format!("/dev/shm/mmshare-{}-{hash:016x}", uid()))
            }
        }
    }

    /// Checks the paths, creates the directories that are missing and takes the directories'
    /// locks, before anything else happens. Refused, with one line that says what to do: a path
    /// that is not a directory, a named directory whose parent is missing, a directory (or the
    /// socket's directory) that belongs to another user or is a symlink, a lock file that is a
    /// symlink, and a directory another daemon uses. Only the documented default directories
    /// are created with their parents; for the default memory directory, a name another user
    /// took is replaced by a private one (see `default_memory_dir`).
    ///
    /// # Errors
    /// That line.
    pub(crate) fn prepare_paths(&self) -> Result<Paths, String> {
        self.prepare_paths_with(None)
    }

    /// [`Config::prepare_paths`], with the path of a socket the service manager passed
    /// (socket activation): the daemon listens there, and leaves that socket's directory, which
    /// the service manager made and owns, unchecked.
    pub(crate) fn prepare_paths_with(&self, passed: Option<&Path>) -> Result<Paths, String> {
        let socket = passed.map_or_else(|| self.socket_path(), Path::to_owned);
        let socket_dir = parent_of(&socket);
        let flag = if self.socket.is_some() {
            "--socket"
        } else {
            "$MMSHARE_SOCKET"
        };
        let named = passed.is_some()
            || self.socket.is_some()
            || (self.home.is_none() && env_path(mmshare::SOCKET_ENV).is_some());
        if named && passed.is_none() {
            match std::fs::metadata(socket_dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(format!(
                        "{flag} {}: {} is not a directory",
                        socket.display(),
                        socket_dir.display()
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "{flag} {}: directory {} does not exist (mmshared creates only its \
                         default socket directory; create it first)",
                        socket.display(),
                        socket_dir.display()
                    ));
                }
            }
            let what = format!("{flag} {}: its directory", socket.display());
            check_socket_dir(&what, socket_dir, false)?;
        }
        // --home holds the socket (unless --socket puts it elsewhere) and the arrays
        // directory: the daemon's own, where a symlink is accepted as for a socket directory.
        if let Some(home) = &self.home {
            match dirs::check_socket_dir(home) {
                Err(DirError::Missing) => {
                    ensure_named_dir("--home", home)?;
                }
                Err(e) if named => return Err(refusal("--home", home, &e)),
                _ => check_socket_dir("--home", home, false)?,
            }
        } else if !named {
            check_default_parent("socket directory", socket_dir)?;
            if let Err(e) = dirs::ensure_own(socket_dir, true)
                && let DirError::Io(err) = e
            {
                return Err(format!(
                    "cannot create the default socket directory {}: {err}",
                    socket_dir.display()
                ));
            }
            check_socket_dir("the default socket directory", socket_dir, true)?;
        }
        let storage_path = self.storage_dir();
        let storage = match (&self.dir, &self.home, env_path("MMSHARE_DIR")) {
            (Some(_), _, _) => ensure_named_dir("--dir", &storage_path)?,
            (None, Some(_), _) => ensure_named_dir("--home's arrays directory", &storage_path)?,
            (None, None, Some(_)) => ensure_named_dir("$MMSHARE_DIR", &storage_path)?,
            (None, None, None) => ensure_default_dir("storage directory", &storage_path)?,
        };
        let storage_lock = lock("storage directory", "--dir", &storage)?;
        let mut warnings = Vec::new();
        let memory = match &self.mem_dir {
            Some(dir) => ensure_named_dir("--mem-dir", dir)?,
            None => default_memory_dir(&self.memory_dir(), &storage, &storage_lock, &mut warnings)?,
        };
        let memory_lock = lock("memory directory", "--mem-dir", &memory)?;
        Ok(Paths {
            socket,
            storage: storage_path,
            memory: memory.path().to_owned(),
            warnings,
            passed: None,
            _locks: [storage_lock, memory_lock],
        })
    }
}

#[cfg(test)]
mod tests {
    /// Binary units however they are written, fractions, plain counts; and errors that
    /// name the value.
    #[test]
    fn byte_counts_parse_in_binary_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("1M"), Ok(1 << 20));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("64G"), Ok(64 << 30));
        assert_eq!(parse_bytes(" 1.5 GB "), Ok(3 << 29));
        assert_eq!(parse_bytes("2T"), Ok(2 << 40));
        for bad in ["", "12Q", "-1", "G", "99999999999999999999"] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    use super::*;

    #[test]
    fn sizes_and_modes_parse_with_clear_errors() {
        assert_eq!(parse_bytes("64G"), Ok(64 << 30));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert!(parse_bytes("12Q").unwrap_err().contains("12Q"));
        let e = parse_bytes("99999999999T").unwrap_err();
        assert!(e.contains("99999999999T") && e.contains("too large"), "{e}");
        assert_eq!(parse_octal("0666"), Ok(0o666));
        assert!(parse_octal("888").is_err());
        assert!(parse_octal("7777").is_err());
    }
}
