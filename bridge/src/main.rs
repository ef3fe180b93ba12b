//! `mmshare-bridge`: carries one host's mmshare streams and arrays to other hosts over Zenoh.
//!
//! A bridge runs beside a host's daemon. It **exports** the local objects whose names match
//! `--export` patterns and **imports** remote ones (`--import REMOTE/PATTERN`) into local
//! objects of the same description, created when missing, so that local subscribers and
//! readers (Rust, Python, C, the CLI) read remote frames in place like local ones. Zenoh does
//! the networking: peer to peer or through routers, TCP, QUIC, TLS, multicast scouting and
//! access control are all set in Zenoh's own configuration (`--config FILE`), with
//! `--listen` and `--connect` for the common case.
//!
//! It is its own binary so that Zenoh (a large build) stays out of the daemon's, the CLI's
//! and the library's dependency trees.
//!
//! # Keys
//!
//! Every bridge has a deployment prefix `P` (`--prefix`, a host or site name; it may contain
//! `/`). For each exported object `NAME`:
//!
//! | key | what |
//! |---|---|
//! | `P/frames/NAME` | a stream's frames, one Zenoh sample each ([`message`]) |
//! | `P/versions/NAME` | an array's versions, one sample each |
//! | `P/meta/NAME` | queryable: the object's description (JSON: kind, dtype, shape, ...) |
//! | `P/latest/NAME` | queryable: an array's newest version |
//! | `P/resume/NAME?from=N` | queryable: send a stream again from frame `N` |
//! | `P/bridge` | liveliness token: the bridge is up |
//!
//! Patterns are names with `*` standing for any run of characters (`cam*`, `*`); on the
//! wire a `*` becomes Zenoh's `$*`.
//!
//! What is guaranteed, and what each side counts, is in the modules [`export`] and
//! [`import`]; the counters are in [`stats`].

mod export;
mod import;
mod message;
mod stats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use mmshare::{Client, ObjectInfo, WatchEvent};
use zenoh::Wait;

type Result<T = ()> = std::result::Result<T, String>;

/// Carries mmshare streams and arrays between hosts over Zenoh.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// This bridge's key prefix (a host or site name, e.g. `robot1`); Zenoh keys are
    /// PREFIX/frames/NAME and so on
    #[arg(long)]
    prefix: String,
    /// The local daemon's socket (default: as the other mmshare tools find it)
    #[arg(long)]
    socket: Option<String>,
    /// Export the local streams and arrays whose names match (`*` is any run of characters),
    /// streams lossless; may be repeated
    #[arg(long, value_name = "PATTERN")]
    export: Vec<String>,
    /// Export the matching streams lossy (best effort, dropped under congestion)
    #[arg(long, value_name = "PATTERN")]
    export_lossy: Vec<String>,
    /// Import REMOTE_PREFIX/PATTERN into local objects of the same names; may be repeated
    #[arg(long, value_name = "REMOTE/PATTERN")]
    import: Vec<String>,
    /// A Zenoh configuration file (JSON5): mode, endpoints, TLS, QUIC, scouting, access
    /// control, timeouts
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A Zenoh endpoint to listen on, e.g. tcp/0.0.0.0:7447 (added to the configuration's)
    #[arg(long, value_name = "ENDPOINT")]
    listen: Vec<String>,
    /// A Zenoh endpoint to connect to, e.g. tcp/10.0.0.1:7447 (added to the configuration's)
    #[arg(long, value_name = "ENDPOINT")]
    connect: Vec<String>,
}

/// `*` in a name pattern: any run of characters.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A name pattern as a Zenoh key chunk (`*` → `$*`; a lone `*` stays `*`).
fn glob_key(pattern: &str) -> String {
    if pattern == "*" {
        "*".into()
    } else {
        pattern.replace('*', "$*")
    }
}

/// Checks a pattern: name characters and `*` only.
fn check_pattern(pattern: &str) -> Result {
    let ok = !pattern.is_empty()
        && pattern
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-*".contains(c))
        && !pattern.contains("**");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "pattern {pattern:?}: use name characters [A-Za-z0-9_.-] and single `*`s"
        ))
    }
}

fn zenoh_config(args: &Args) -> Result<zenoh::Config> {
    let mut c = match &args.config {
        Some(path) => zenoh::Config::from_file(path)
            .map_err(|e| format!("zenoh configuration {}: {e}", path.display()))?,
        None => zenoh::Config::default(),
    };
    let mut add = |key: &str, extra: &[String]| -> Result {
        if extra.is_empty() {
            return Ok(());
        }
        let mut all: Vec<String> = c
            .get_json(key)
            .ok()
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default();
        all.extend(extra.iter().cloned());
        let json = serde_json::to_string(&all).expect("strings");
        c.insert_json5(key, &json)
            .map_err(|e| format!("zenoh configuration {key} = {json}: {e}"))
    };
    add("listen/endpoints", &args.listen)?;
    add("connect/endpoints", &args.connect)?;
    Ok(c)
}

fn connect(socket: Option<&str>) -> Result<Client> {
    match socket {
        Some(s) => Client::connect(s),
        None => Client::connect_default(),
    }
    .map_err(|e| format!("cannot reach mmshared: {e}"))
}

/// The running exports, by object name.
struct Exports {
    args: Arc<Args>,
    session: zenoh::Session,
    running: HashMap<String, (Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl Exports {
    /// Whether `name` is exported, and lossy.
    fn wanted(&self, name: &str) -> Option<bool> {
        if name.starts_with(mmshare::bridge_stats::PREFIX) {
            return None;
        }
        let m = |patterns: &[String]| patterns.iter().any(|p| glob_matches(p, name));
        if m(&self.args.export_lossy) {
            Some(true)
        } else if m(&self.args.export) {
            Some(false)
        } else {
            None
        }
    }

    fn start(&mut self, name: &str) {
        let Some(lossy) = self.wanted(name) else {
            return;
        };
        self.stop(name);
        let stop = Arc::new(AtomicBool::new(false));
        let export = export::Export {
            session: self.session.clone(),
            socket: self.args.socket.clone(),
            prefix: self.args.prefix.clone(),
            name: name.to_owned(),
            lossy,
            stop: stop.clone(),
        };
        let thread = std::thread::spawn(move || {
            let name = export.name.clone();
            if let Err(e) = export::run(export) {
                eprintln!("mmshare-bridge: export of {name} stopped: {e}");
            }
        });
        self.running.insert(name.to_owned(), (stop, thread));
    }

    /// Starts again the exports whose thread ended on its own (an error it could not ride
    /// out), if the object is still there; called about once a second.
    fn revive(&mut self, client: &Client) {
        let ended: Vec<String> = self
            .running
            .iter()
            .filter(|(_, (stop, thread))| thread.is_finished() && !stop.load(Ordering::Acquire))
            .map(|(name, _)| name.clone())
            .collect();
        for name in ended {
            if let Some((_, thread)) = self.running.remove(&name) {
                let _ = thread.join();
            }
            if client.describe(&name).is_ok() {
                eprintln!("mmshare-bridge: starting the export of {name} again");
                self.start(&name);
            }
        }
    }

    fn stop(&mut self, name: &str) {
        if let Some((stop, thread)) = self.running.remove(name) {
            stop.store(true, Ordering::Release);
            let _ = thread.join();
        }
    }
}

fn run() -> Result {
    let args = Arc::new(Args::parse());
    for p in args.export.iter().chain(&args.export_lossy) {
        check_pattern(p)?;
    }
    let mut imports = Vec::new();
    for i in &args.import {
        let (remote, glob) = i
            .rsplit_once('/')
            .ok_or_else(|| format!("--import {i:?}: give REMOTE_PREFIX/PATTERN"))?;
        check_pattern(glob)?;
        imports.push((remote.to_owned(), glob.to_owned()));
    }
    if args.prefix.is_empty() || args.prefix.contains(['*', '$', '?', '#']) {
        return Err(format!(
            "--prefix {:?}: give a key prefix without wildcards",
            args.prefix
        ));
    }
    let client = connect(args.socket.as_deref())?;
    let session = zenoh::open(zenoh_config(&args)?)
        .wait()
        .map_err(|e| format!("zenoh: {e}"))?;
    let _alive = session
        .liveliness()
        .declare_token(format!("{}/bridge", args.prefix))
        .wait()
        .map_err(|e| format!("zenoh liveliness token: {e}"))?;
    for (remote, glob) in imports {
        let import = import::Import {
            session: session.clone(),
            socket: args.socket.clone(),
            remote,
            glob,
        };
        std::thread::spawn(move || {
            if let Err(e) = import.run() {
                eprintln!("mmshare-bridge: import stopped: {e}");
                std::process::exit(1);
            }
        });
    }
    let mut exports = Exports {
        args: args.clone(),
        session,
        running: HashMap::new(),
    };
    // Watch first, then list: an object made in between is seen by one or the other.
    let mut watch = client
        .watch("")
        .map_err(|e| format!("cannot watch mmshared: {e}"))?;
    for object in client.list_all("").map_err(|e| e.to_string())? {
        let name = match &object {
            ObjectInfo::Stream(s) => &s.name,
            ObjectInfo::Array(a) => &a.name,
        };
        exports.start(name);
    }
    loop {
        let event = watch
            .next_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| format!("mmshared: {e}"))?;
        exports.revive(&client);
        match event {
            Some(WatchEvent::Created { name, .. }) => exports.start(&name),
            Some(WatchEvent::Deleted { name }) => exports.stop(&name),
            Some(WatchEvent::Lost { .. }) => {
                for object in client.list_all("").map_err(|e| e.to_string())? {
                    let name = match &object {
                        ObjectInfo::Stream(s) => s.name.clone(),
                        ObjectInfo::Array(a) => a.name.clone(),
                    };
                    if !exports.running.contains_key(&name) {
                        exports.start(&name);
                    }
                }
            }
            _ => {}
        }
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("mmshare-bridge: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        assert!(glob_matches("cam*", "cam"));
        assert!(glob_matches("cam*", "camera.left"));
        assert!(!glob_matches("cam*", "xcam"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("a*b*c", "a-b-c"));
        assert!(!glob_matches("a*b*c", "a-c-b"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(!glob_matches("ab*ba", "aba"));
        assert_eq!(glob_key("cam*"), "cam$*");
        assert_eq!(glob_key("*"), "*");
        assert!(check_pattern("cam.*").is_ok());
        assert!(check_pattern("a/b").is_err());
        assert!(check_pattern("**").is_err());
    }
}
