//! Two "hosts" on one machine: two network namespaces joined by a veth pair (addresses on that
//! link only), each with its own mmshare daemon, and bridges started in them. Set up and torn
//! down by each test; needs root (the tests say so and pass without doing anything otherwise).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mmshare::Client;

/// The two addresses on the link.
pub const A_ADDR: &str = "10.77.0.1";
pub const B_ADDR: &str = "10.77.0.2";

/// Whether this process can make network namespaces; prints why not when it cannot.
pub fn can_run(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        eprintln!("{test}: skipped: network namespaces need root (run ./scripts/test as root)");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("{test}: skipped: no `ip` command (Debian package iproute2)");
        return false;
    }
    true
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The main workspace's debug binaries (the daemon), as ./scripts/test builds them.
fn workspace_bin(name: &str, env: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/debug")
                .join(name)
        },
        PathBuf::from,
    )
}

/// One host: a namespace, a daemon, and the bridges started in it.
pub struct Host {
    pub ns: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub addr: &'static str,
    pub veth: String,
    daemon: Child,
    pub bridge: Option<Child>,
}

impl Host {
    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect to the host's daemon")
    }

    /// Runs a command inside this host's namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.ns];
        all.extend_from_slice(args);
        run(&all);
    }

    /// Starts this host's bridge with these arguments (after the socket and the prefix).
    pub fn start_bridge(&mut self, prefix: &str, args: &[&str]) {
        assert!(self.bridge.is_none(), "one bridge per host");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("bridge.log"))
            .expect("bridge log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_mmshare-bridge"))
            .arg("--socket")
            .arg(&self.socket)
            .args(["--prefix", prefix])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mmshare-bridge");
        self.bridge = Some(child);
    }

    /// SIGKILLs this host's bridge.
    pub fn kill_bridge(&mut self) {
        if let Some(mut b) = self.bridge.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
    }

    /// The bridge's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bridge.log")).unwrap_or_default()
    }

    /// One scrape of the daemon's metrics endpoint.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut c = std::os::unix::net::UnixStream::connect(self.dir.join("metrics.sock"))
            .expect("the metrics endpoint");
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        text
    }

    /// `mmshare top --json` on this host.
    pub fn top(&self) -> serde_json::Value {
        let out = Command::new(workspace_bin("mmshare", "MMSHARE_CLI"))
            .arg("--socket")
            .arg(&self.socket)
            .args(["top", "--json", "--interval", "0.2"])
            .output()
            .expect("mmshare top");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("top's JSON")
    }

    /// The 16 counter words the bridge keeps for `name` (`dir` "in" or "out").
    pub fn stats(&self, dir: &str, name: &str) -> Vec<u64> {
        let array = self
            .client()
            .open::<u64>(
                &format!("mmshare-bridge.{dir}.{name}"),
                mmshare::Access::Read,
            )
            .expect("the bridge's stats array");
        array.read_to_vec().expect("read the stats")
    }
}

impl Host {
    /// Every stats array on this host: (direction, object, words).
    pub fn all_stats(&self) -> Vec<(String, String, Vec<u64>)> {
        let Ok(client) = Client::connect(&self.socket) else {
            return Vec::new();
        };
        let mut all = Vec::new();
        for info in client.list("mmshare-bridge.").unwrap_or_default() {
            let rest = &info.name["mmshare-bridge.".len()..];
            let Some((dir, object)) = rest.split_once('.') else {
                continue;
            };
            if let Ok(a) = client.open::<u64>(&info.name, mmshare::Access::Read)
                && let Ok(words) = a.read_to_vec()
            {
                all.push((dir.to_owned(), object.to_owned(), words));
            }
        }
        all
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill_bridge();
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// Two hosts, A and B, on one veth link.
pub struct Hosts {
    pub a: Host,
    pub b: Host,
    /// Dropped last: the daemons (in `a` and `b`) are stopped before the namespaces and the
    /// directory go.
    net: Net,
}

/// The namespaces and the temporary directory, removed on drop (also when setting up the
/// hosts failed half-way).
struct Net {
    ns: Vec<String>,
    tmp: PathBuf,
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

static SERIAL: AtomicU32 = AtomicU32::new(0);

impl Hosts {
    pub fn new() -> Hosts {
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let tmp = std::env::temp_dir().join(format!("mmshare-bridge-test-{tag}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).expect("temporary directory");
        let (ns_a, ns_b) = (format!("mmbA{tag}"), format!("mmbB{tag}"));
        let (v_a, v_b) = (format!("vA{tag}"), format!("vB{tag}"));
        let mut net = Net {
            ns: Vec::new(),
            tmp: tmp.clone(),
        };
        run(&["ip", "netns", "add", &ns_a]);
        net.ns.push(ns_a.clone());
        run(&["ip", "netns", "add", &ns_b]);
        net.ns.push(ns_b.clone());
        run(&[
            "ip", "link", "add", &v_a, "type", "veth", "peer", "name", &v_b,
        ]);
        run(&["ip", "link", "set", &v_a, "netns", &ns_a]);
        run(&["ip", "link", "set", &v_b, "netns", &ns_b]);
        for (ns, v, addr) in [(&ns_a, &v_a, A_ADDR), (&ns_b, &v_b, B_ADDR)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                v,
            ]);
            run(&["ip", "-n", ns, "link", "set", v, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let host = |ns: String, v: String, addr: &'static str, sub: &str| {
            let dir = tmp.join(sub);
            std::fs::create_dir_all(&dir).expect("host directory");
            let socket = dir.join("sock");
            let log = std::fs::File::create(dir.join("daemon.log")).expect("daemon log");
            let daemon = Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(workspace_bin("mmshared", "MMSHARE_DAEMON"))
                .arg("--socket")
                .arg(&socket)
                .arg("--dir")
                .arg(dir.join("data"))
                .arg("--mem-dir")
                .arg(dir.join("mem"))
                .arg("--metrics")
                .arg(dir.join("metrics.sock"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start mmshared (build the main workspace first: cargo build)");
            let started = Instant::now();
            while Client::connect(&socket).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "mmshared did not come up"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Host {
                ns,
                dir,
                socket,
                addr,
                veth: v,
                daemon,
                bridge: None,
            }
        };
        let a = host(ns_a, v_a, A_ADDR, "a");
        let b = host(ns_b, v_b, B_ADDR, "b");
        Hosts { a, b, net }
    }

    /// A Zenoh configuration file with a short lease (a dead link is noticed in about a
    /// second) and no multicast scouting: the hosts meet through the endpoints given.
    pub fn short_lease_config(&self) -> String {
        let path = self.net.tmp.join("zenoh.json5");
        std::fs::write(
            &path,
            "{ scouting: { multicast: { enabled: false } },\n  \
             connect: { retry: { period_init_ms: 100, period_max_ms: 500 } },\n  \
             transport: { link: { tx: { lease: 1000, keep_alive: 4 } } } }\n",
        )
        .expect("zenoh config");
        path.to_string_lossy().into_owned()
    }

    /// Takes the link down (both ends) or up again.
    pub fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        run(&["ip", "-n", &self.a.ns, "link", "set", &self.a.veth, state]);
        run(&["ip", "-n", &self.b.ns, "link", "set", &self.b.veth, state]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.a.kill_bridge();
        self.b.kill_bridge();
        if std::thread::panicking() {
            for (host, name) in [(&self.a, "A"), (&self.b, "B")] {
                eprintln!("--- bridge log, host {name}\n{}", host.log());
                for (dir, object, words) in host.all_stats() {
                    eprintln!("--- host {name} {dir} {object}: {words:?}");
                }
            }
        }
    }
}

/// Waits up to `limit` for `f` to give `Some`.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
