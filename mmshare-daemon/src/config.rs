//! Command-line flags and their defaults (every default works without root).

use std::path::PathBuf;

use clap::Parser;

/// `mmshared`: owns named shared-memory arrays and hands out file descriptors to them.
#[derive(Clone, Debug, Parser)]
#[command(name = "mmshared", version, about)]
pub struct Config {
    /// Unix socket to listen on [default: $MMSHARE_SOCKET, else
    /// $XDG_RUNTIME_DIR/mmshare/mmshared.sock, else /tmp/mmshare-$UID/mmshared.sock]
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Directory of persistent (file-backed) arrays [default: $MMSHARE_DIR, else
    /// $XDG_DATA_HOME/mmshare, else ~/.local/share/mmshare]
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Directory of memory arrays, on tmpfs [default: /dev/shm/mmshare-$UID]
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
    /// Log level or filter (error, warn, info, debug, trace); RUST_LOG overrides it
    #[arg(long, default_value = "info")]
    pub log_level: String,
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

impl Config {
    /// The socket path, defaults applied.
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(mmshare::default_socket_path)
    }

    /// The persistent storage directory, defaults applied.
    pub fn storage_dir(&self) -> PathBuf {
        if let Some(d) = &self.dir {
            return d.clone();
        }
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(d) = env("MMSHARE_DIR") {
            return d;
        }
        if let Some(d) = env("XDG_DATA_HOME") {
            return d.join("mmshare");
        }
        match env("HOME") {
            Some(home) => home.join(".local/share/mmshare"),
            None => PathBuf::from(format!("/tmp/mmshare-{}/data", uid())),
        }
    }

    /// The memory-array directory, defaults applied.
    pub fn memory_dir(&self) -> PathBuf {
        self.mem_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/dev/shm/mmshare-{}", uid())))
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
