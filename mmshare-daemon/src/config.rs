//! Command-line flags and their defaults (every default works without root).

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use clap::Parser;

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
    /// $XDG_RUNTIME_DIR/mmshare/mmshared.sock, else /tmp/mmshare-$UID/mmshared.sock]. The
    /// directory of a socket you name must exist; only the default one is created
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Directory of persistent (file-backed) arrays [default: $MMSHARE_DIR, else
    /// $XDG_DATA_HOME/mmshare, else ~/.local/share/mmshare]. Created if its parent exists
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Directory of memory arrays, on tmpfs [default: /dev/shm/mmshare-$UID with the default
    /// --dir; with any other --dir (or --home, or $MMSHARE_DIR), /dev/shm/mmshare-$UID-HASH,
    /// HASH derived from that directory's absolute path, so two daemons never share one].
    /// Created if its parent exists
    #[arg(long)]
    pub mem_dir: Option<PathBuf>,
    /// Most arrays the daemon will hold
    #[arg(long, default_value_t = 4096)]
    pub max_arrays: usize,
    /// Most bytes all arrays together may take (file sizes), e.g. 64G; unlimited by default
    #[arg(long, value_parser = parse_bytes)]
    pub max_bytes: Option<u64>,
    /// Most simultaneous client connections; one more gets a Busy reply
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Permission bits of the socket file, in octal (0666 lets every user connect; access
    /// to each array is still checked against its owner and mode)
    #[arg(long, value_parser = parse_octal, default_value = "600")]
    pub socket_mode: u32,
    /// Log level (error, warn, info, debug, trace, off) or comma-separated TARGET=LEVEL
    /// filters; RUST_LOG overrides it
    #[arg(long, default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,
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
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (e.g. 1048576, 512M, 64G)"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use K, M, G or T)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} overflows 64 bits"))
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

/// A directory the user named: it must be a directory if it exists; if not, it is created
/// (0700) only when its parent exists, never with missing ancestors.
fn ensure_named_dir(flag: &str, dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("{flag} {} is not a directory", dir.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(format!(
                    "{flag} {}: its parent directory {} does not exist (mmshared creates only its \
                     default directories with their parents; create it first)",
                    dir.display(),
                    parent.display()
                ));
            }
            create_private_dir(dir, false)
                .map_err(|e| format!("cannot create {flag} {}: {e}", dir.display()))
        }
        Err(e) => Err(format!("{flag} {}: {e}", dir.display())),
    }
}

/// One of the documented default directories: created with its parents if missing.
fn ensure_default_dir(what: &str, dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "the default {what} {} is not a directory",
            dir.display()
        )),
        Err(_) => create_private_dir(dir, true)
            .map_err(|e| format!("cannot create the default {what} {}: {e}", dir.display())),
    }
}

fn create_private_dir(dir: &Path, parents: bool) -> io::Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(parents)
        .mode(0o700)
        .create(dir)
    {
        // Made by someone else in the meantime: the checks that follow judge it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Refuses early, with the fix, when another daemon holds `dir`'s lock (the server takes the
/// lock for real a moment later; this only tests it).
fn check_dir_unlocked(what: &str, flag: &str, dir: &Path) -> Result<(), String> {
    // Only a real directory: the server refuses symlinks (and says so) before it writes in one.
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let path = dir.join(".mmshared.lock");
    let file = match std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(f) => f,
        // The server reports what is wrong with the directory.
        Err(_) => return Ok(()),
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(_) => Err(format!(
            "another mmshared already uses the {what} {}; stop it, or start this one with \
             its own --home DIR (or its own {flag})",
            dir.display()
        )),
    }
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
    /// absolute path, so that a daemon with its own storage never shares memory arrays.
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

    /// Checks the paths and creates the directories that are missing, before anything else
    /// happens: a path that is not a directory, a named directory whose parent is missing and
    /// a directory another daemon uses are refused with one line that says what to do. Only
    /// the documented default directories are created with their parents.
    ///
    /// # Errors
    /// That line.
    pub fn prepare_paths(&self) -> Result<(), String> {
        let socket = self.socket_path();
        let socket_dir = socket
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let flag = if self.socket.is_some() {
            "--socket"
        } else {
            "$MMSHARE_SOCKET"
        };
        let named = self.socket.is_some()
            || (self.home.is_none() && env_path(mmshare::SOCKET_ENV).is_some());
        if named {
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
        }
        if let Some(home) = &self.home {
            ensure_named_dir("--home", home)?;
        }
        let storage = self.storage_dir();
        match (&self.dir, &self.home, env_path("MMSHARE_DIR")) {
            (Some(_), _, _) => ensure_named_dir("--dir", &storage)?,
            (None, Some(_), _) => ensure_named_dir("--home's arrays directory", &storage)?,
            (None, None, Some(_)) => ensure_named_dir("$MMSHARE_DIR", &storage)?,
            (None, None, None) => ensure_default_dir("storage directory", &storage)?,
        }
        let memory = self.memory_dir();
        if self.mem_dir.is_some() {
            ensure_named_dir("--mem-dir", &memory)?;
        } else {
            ensure_named_dir("memory directory (--mem-dir)", &memory)?;
        }
        if !named && self.home.is_none() {
            ensure_default_dir("socket directory", socket_dir)?;
        }
        check_dir_unlocked("storage directory", "--dir", &storage)?;
        check_dir_unlocked("memory directory", "--mem-dir", &memory)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_modes_parse_with_clear_errors() {
        assert_eq!(parse_bytes("64G"), Ok(64 << 30));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert!(parse_bytes("12Q").unwrap_err().contains("12Q"));
        assert!(
            parse_bytes("99999999999T")
                .unwrap_err()
                .contains("overflows")
        );
        assert_eq!(parse_octal("0666"), Ok(0o666));
        assert!(parse_octal("888").is_err());
        assert!(parse_octal("7777").is_err());
    }
}
