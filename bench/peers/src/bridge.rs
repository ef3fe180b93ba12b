//! `bench-bridge`: mmshare-bridge between two hosts made of network namespaces, raced against
//! Zenoh's own publisher and subscriber and against a plain TCP stream, over the same veth
//! pair, for 4 KiB, 1 MiB and 8 MiB frames. Run by `./scripts/bench-bridge` (root).
//!
//! Every path moves the same payloads with the same work at its ends:
//!
//! * the producer on host A writes the whole frame each time (mmshare: into the loaned slot;
//!   Zenoh: into a new buffer it then puts; TCP: into the buffer it then writes) and stamps
//!   the first 8 bytes with the wall clock;
//! * the consumer on host B has the frame contiguous in memory (mmshare: the slot the
//!   importing bridge filled; Zenoh: its payload copied into one buffer, as the bridge copies
//!   it into a slot; TCP: read into one buffer) and reads every byte (a checksum);
//! * Zenoh in both the bridge and the Zenoh rows: peer mode, TCP on the veth link, reliable,
//!   `CongestionControl::Block`, multicast scouting off, everything else its defaults, but
//!   for shared memory: this workspace builds Zenoh with it (the local peer rows), and it is
//!   turned off here (two namespaces of one machine could share it; two hosts cannot; the
//!   bridge is built without it), and the Zenoh subscriber checks every payload came over
//!   the link.
//!
//! The mmshare path is publisher → daemon-less shared memory → exporting bridge → Zenoh →
//! importing bridge → shared memory → subscriber: two more processes than Zenoh alone.
//!
//! Throughput: the producer sends as fast as it is let (each path's backpressure), the
//! consumer times first to last frame. Latency: one frame at a time, paced well apart, each
//! one's age when the consumer has read it all (one clock: both namespaces are one machine).

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zenoh::Wait;
use zenoh::qos::CongestionControl;

const A_ADDR: &str = "10.78.0.1";
const B_ADDR: &str = "10.78.0.2";
const NS_A: &str = "mmbenchA";
const NS_B: &str = "mmbenchB";
const ZENOH_PORT: u16 = 7450;
const TCP_PORT: u16 = 7451;
const BRIDGE_PORT: u16 = 7452;
/// Rounds of every case (a full run); the table gives their medians.
const ROUNDS: usize = 5;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The options of a producer or consumer role.
#[derive(Clone, Debug)]
struct Role {
    latency: bool,
    size: usize,
    count: usize,
    pace: Duration,
    /// Zenoh endpoint / TCP address / mmshare socket.
    at: String,
    /// mmshare stream name.
    name: String,
}

fn parse_role(args: &[String]) -> Role {
    let mut r = Role {
        latency: false,
        size: 4096,
        count: 1000,
        pace: Duration::ZERO,
        at: String::new(),
        name: String::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || it.next().expect("a value").clone();
        match a.as_str() {
            "--latency" => r.latency = true,
            "--size" => r.size = v().parse().expect("size"),
            "--count" => r.count = v().parse().expect("count"),
            "--pace-us" => r.pace = Duration::from_micros(v().parse().expect("pace")),
            "--at" => r.at = v(),
            "--name" => r.name = v(),
            other => panic!("unknown argument {other}"),
        }
    }
    r
}

/// A frame's template: a pattern, different in every word.
fn template(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + 7) as u8).collect()
}

fn stamp(frame: &mut [u8]) {
    frame[..8].copy_from_slice(&now_ns().to_le_bytes());
}

/// Reads every byte of a frame: a checksum of its 8-byte words.
fn checksum(frame: &[u8]) -> u64 {
    frame.chunks_exact(8).fold(0u64, |s, w| {
        s.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()))
    })
}

/// What a consumer measures.
struct Tally {
    latency: bool,
    count: usize,
    first: Option<Instant>,
    last: Option<Instant>,
    got: usize,
    ages: Vec<u64>,
    sum: u64,
    timed_from: usize,
}

impl Tally {
    fn new(role: &Role) -> Tally {
        Tally {
            latency: role.latency,
            count: role.count,
            first: None,
            last: None,
            got: 0,
            ages: Vec::with_capacity(role.count),
            sum: 0,
            timed_from: 0,
        }
    }

    /// One frame, read whole; true when the run is complete.
    fn frame(&mut self, frame: &[u8]) -> bool {
        self.sum = self.sum.wrapping_add(checksum(frame));
        let now = Instant::now();
        if self.latency {
            let sent = u64::from_le_bytes(frame[..8].try_into().unwrap());
            // The first frames warm the path up.
            if self.got >= 10 {
                self.ages.push(now_ns().saturating_sub(sent));
            }
        }
        // Throughput is timed from the tenth of the frames on: the first ones warm the path
        // (pages of the rings and of Zenoh's buffers touched for the first time).
        if self.got == self.count / 10 {
            self.first = Some(now);
            self.timed_from = self.got;
        }
        self.last = Some(now);
        self.got += 1;
        self.got >= self.count
    }

    fn report(mut self) {
        let secs = match (self.first, self.last) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
            _ => 0.0,
        };
        self.ages.sort_unstable();
        let pct = |p: f64| {
            if self.ages.is_empty() {
                0.0
            } else {
                self.ages[((self.ages.len() - 1) as f64 * p) as usize] as f64 / 1e3
            }
        };
        println!(
            "{}",
            serde_json::json!({
                "frames": self.got,
                "per_s": if secs > 0.0 { (self.got - 1 - self.timed_from) as f64 / secs } else { 0.0 },
                "p50_us": pct(0.5), "p99_us": pct(0.99), "sum": self.sum,
            })
        );
    }
}

fn ready() {
    println!("ready");
    std::io::stdout().flush().unwrap();
}

fn zenoh_config(listen: Option<&str>, connect: Option<&str>) -> zenoh::Config {
    let mut c = zenoh::Config::default();
    c.insert_json5("mode", "\"peer\"").unwrap();
    c.insert_json5("scouting/multicast/enabled", "false")
        .unwrap();
    // This workspace builds Zenoh with its `shared-memory` feature (for the local peer rows),
    // which by default puts every payload of 3 KiB or more into shared memory whenever both
    // sides can map it, as two namespaces of one machine can: the frames would never cross
    // the link. Real hosts share no memory, and the bridge is built without the feature.
    c.insert_json5("transport/shared_memory/enabled", "false")
        .unwrap();
    if let Some(l) = listen {
        c.insert_json5("listen/endpoints", &format!("[\"{l}\"]"))
            .unwrap();
    }
    if let Some(k) = connect {
        c.insert_json5("connect/endpoints", &format!("[\"{k}\"]"))
            .unwrap();
    }
    c
}

fn pace(role: &Role, started: Instant, i: usize) {
    if !role.pace.is_zero() {
        let due = started + role.pace * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

fn zenoh_pub(role: &Role) {
    let session = zenoh::open(zenoh_config(None, Some(&role.at)))
        .wait()
        .unwrap();
    let publisher = session
        .declare_publisher("bench/zenoh")
        .congestion_control(CongestionControl::Block)
        .wait()
        .unwrap();
    while !publisher.matching_status().wait().unwrap().matching() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let frame = template(role.size);
    let started = Instant::now();
    for i in 0..role.count {
        pace(role, started, i);
        let mut v = frame.clone();
        stamp(&mut v);
        publisher.put(v).wait().unwrap();
    }
    std::thread::sleep(Duration::from_secs(600));
}

fn zenoh_sub(role: &Role) {
    let session = zenoh::open(zenoh_config(Some(&role.at), None))
        .wait()
        .unwrap();
    let subscriber = session.declare_subscriber("bench/zenoh").wait().unwrap();
    ready();
    let mut tally = Tally::new(role);
    let mut buf = vec![0u8; role.size];
    loop {
        let sample = subscriber.recv().unwrap();
        let payload = sample.payload();
        assert!(
            payload.as_shm().is_none(),
            "a Zenoh payload came through shared memory, not over the link"
        );
        let mut at = 0;
        for s in payload.slices() {
            buf[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        }
        assert_eq!(at, role.size);
        if tally.frame(&buf) {
            break;
        }
    }
    tally.report();
}

fn tcp_pub(role: &Role) {
    let mut stream = std::net::TcpStream::connect(&role.at).unwrap();
    stream.set_nodelay(true).unwrap();
    let frame = template(role.size);
    let mut buf = vec![0u8; role.size];
    let started = Instant::now();
    for i in 0..role.count {
        pace(role, started, i);
        buf.copy_from_slice(&frame);
        stamp(&mut buf);
        stream.write_all(&buf).unwrap();
    }
    std::thread::sleep(Duration::from_secs(600));
}

fn tcp_sub(role: &Role) {
    let listener = std::net::TcpListener::bind(&role.at).unwrap();
    ready();
    let (mut stream, _) = listener.accept().unwrap();
    stream.set_nodelay(true).unwrap();
    let mut tally = Tally::new(role);
    let mut buf = vec![0u8; role.size];
    loop {
        stream.read_exact(&mut buf).unwrap();
        if tally.frame(&buf) {
            break;
        }
    }
    tally.report();
}

fn mm_pub(role: &Role) {
    let client = mmshare::Client::connect(&role.at).unwrap();
    let mut publisher = client.publisher_bytes(&role.name).unwrap();
    publisher
        .wait_for_subscribers(1, Duration::from_secs(60))
        .unwrap();
    let frame = template(role.size);
    let started = Instant::now();
    for i in 0..role.count {
        pace(role, started, i);
        let mut loan = publisher.loan().unwrap();
        loan.copy_from_slice(&frame);
        stamp(&mut loan);
        loan.publish();
    }
    std::thread::sleep(Duration::from_secs(600));
}

fn mm_sub(role: &Role) {
    let client = mmshare::Client::connect(&role.at).unwrap();
    client
        .wait_for(&role.name, Duration::from_secs(60))
        .unwrap();
    let subscriber = client
        .subscribe_bytes(
            &role.name,
            mmshare::SubscribeOptions::new(mmshare::Delivery::Lossless)
                .start(mmshare::StartAt::Next),
        )
        .unwrap();
    ready();
    let mut tally = Tally::new(role);
    loop {
        let sample = subscriber.receive_timeout(Duration::from_secs(60)).unwrap();
        if tally.frame(&sample) {
            break;
        }
    }
    tally.report();
}

// ---- The run: two namespaces, daemons and bridges, every case, the table. ----

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The two hosts; removed on drop.
struct Net {
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Net {
    fn up(dir: std::path::PathBuf) -> Net {
        let _ = Command::new("ip").args(["netns", "del", NS_A]).status();
        let _ = Command::new("ip").args(["netns", "del", NS_B]).status();
        sh(&["ip", "netns", "add", NS_A]);
        sh(&["ip", "netns", "add", NS_B]);
        sh(&[
            "ip", "link", "add", "vbenchA", "type", "veth", "peer", "name", "vbenchB",
        ]);
        sh(&["ip", "link", "set", "vbenchA", "netns", NS_A]);
        sh(&["ip", "link", "set", "vbenchB", "netns", NS_B]);
        for (ns, v, addr) in [(NS_A, "vbenchA", A_ADDR), (NS_B, "vbenchB", B_ADDR)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                v,
            ]);
            sh(&["ip", "-n", ns, "link", "set", v, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        Net {
            children: Vec::new(),
            dir,
        }
    }

    fn spawn(&mut self, ns: &str, program: &str, args: &[&str], log: &str) {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", NS_A]).status();
        let _ = Command::new("ip").args(["netns", "del", NS_B]).status();
    }
}

/// Runs one case: the consumer on host B, then the producer on host A; the consumer's figures.
fn case(kind: &str, role: &Role, at_a: &str, at_b: &str) -> serde_json::Value {
    use std::io::BufRead;
    let me = std::env::current_exe().unwrap();
    let args = |at: &str| {
        let mut v = vec![
            "--size".to_string(),
            role.size.to_string(),
            "--count".into(),
            role.count.to_string(),
            "--pace-us".into(),
            role.pace.as_micros().to_string(),
            "--at".into(),
            at.to_string(),
            "--name".into(),
            role.name.clone(),
        ];
        if role.latency {
            v.push("--latency".into());
        }
        v
    };
    let mut sub = Command::new("ip")
        .args(["netns", "exec", NS_B])
        .arg(&me)
        .arg(format!("{kind}-sub"))
        .args(args(at_b))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(sub.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready", "{kind} consumer");
    let mut publisher = Command::new("ip")
        .args(["netns", "exec", NS_A])
        .arg(&me)
        .arg(format!("{kind}-pub"))
        .args(args(at_a))
        .spawn()
        .unwrap();
    let line = lines.next().unwrap().unwrap();
    let _ = publisher.kill();
    let _ = publisher.wait();
    let _ = sub.wait();
    serde_json::from_str(&line).unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(args: &[String]) {
    let quick = args.iter().any(|a| a == "--quick");
    let docs = args.iter().any(|a| a == "--docs");
    let daemon = std::env::var("BENCH_DAEMON").expect("BENCH_DAEMON: the mmshared binary");
    let bridge = std::env::var("BENCH_BRIDGE").expect("BENCH_BRIDGE: the mmshare-bridge binary");
    let dir = std::env::temp_dir().join(format!("mmshare-bench-bridge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut net = Net::up(dir.clone());
    let sock = |h: &str| dir.join(h).join("sock").to_string_lossy().into_owned();
    for (ns, h) in [(NS_A, "a"), (NS_B, "b")] {
        let d = dir.join(h);
        std::fs::create_dir_all(&d).unwrap();
        let (s, data, mem) = (
            sock(h),
            d.join("data").to_string_lossy().into_owned(),
            d.join("mem").to_string_lossy().into_owned(),
        );
        net.spawn(
            ns,
            &daemon,
            &["--socket", &s, "--dir", &data, "--mem-dir", &mem],
            &format!("{h}.log"),
        );
        let started = Instant::now();
        while mmshare::Client::connect(&s).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "mmshared on host {h}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let sizes: [(usize, &str, &str, u32, usize, usize, u64); 3] = [
        // size, label, stream, slots, throughput frames, latency frames, pace (µs)
        (4 << 10, "4 KiB", "bench4k", 64, 500_000, 2_000, 1_000),
        (1 << 20, "1 MiB", "bench1m", 16, 3_000, 300, 5_000),
        (8 << 20, "8 MiB", "bench8m", 8, 300, 100, 40_000),
    ];
    let a = mmshare::Client::connect(sock("a")).unwrap();
    for (size, _, name, slots, ..) in sizes {
        a.create_stream(
            &mmshare::StreamOptions::new(name, "<u1", &[size as u64])
                .slots(slots)
                .memory(),
        )
        .unwrap();
    }
    let listen = format!("tcp/{A_ADDR}:{BRIDGE_PORT}");
    let connect = listen.clone();
    let off = "{ scouting: { multicast: { enabled: false } } }";
    std::fs::write(dir.join("zenoh.json5"), off).unwrap();
    let config = dir.join("zenoh.json5").to_string_lossy().into_owned();
    net.spawn(
        NS_A,
        &bridge,
        &[
            "--socket",
            &sock("a"),
            "--prefix",
            "hostA",
            "--export",
            "bench*",
            "--listen",
            &listen,
            "--config",
            &config,
        ],
        "bridge-a.log",
    );
    net.spawn(
        NS_B,
        &bridge,
        &[
            "--socket",
            &sock("b"),
            "--prefix",
            "hostB",
            "--import",
            "hostA/bench*",
            "--connect",
            &connect,
            "--config",
            &config,
        ],
        "bridge-b.log",
    );
    let b = mmshare::Client::connect(sock("b")).unwrap();
    for (_, _, name, ..) in sizes {
        b.wait_for(name, Duration::from_secs(60)).unwrap();
    }
    // --only 8m,mm,thr: only the sizes (4k, 1m, 8m), paths (mm, zenoh, tcp) and measures
    // (thr, lat) named.
    let only: Vec<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let wanted = |what: &str, all: &[&str]| {
        !all.iter().any(|a| only.iter().any(|o| o == a)) || only.iter().any(|o| o == what)
    };
    let rounds = if quick { 1 } else { ROUNDS };
    let scale = if quick { 5 } else { 1 };
    let mut rows = Vec::new();
    for (size, label, name, _, thr_count, lat_count, pace_us) in sizes {
        let short = &name["bench".len()..];
        if !wanted(short, &["4k", "1m", "8m"]) {
            continue;
        }
        let kinds: Vec<&str> = ["mm", "zenoh", "tcp"]
            .into_iter()
            .filter(|k| wanted(k, &["mm", "zenoh", "tcp"]))
            .collect();
        let at = |kind: &str| match kind {
            "mm" => (sock("a"), sock("b")),
            "zenoh" => (
                format!("tcp/{B_ADDR}:{ZENOH_PORT}"),
                format!("tcp/{B_ADDR}:{ZENOH_PORT}"),
            ),
            _ => (
                format!("{B_ADDR}:{TCP_PORT}"),
                format!("{B_ADDR}:{TCP_PORT}"),
            ),
        };
        // Per path: frames/s, p50 and p99 of each round. The paths take turns within a
        // round (throughput, then latency), so that a slow spell of this shared machine
        // falls on all of them rather than on one path's block of rounds.
        let mut measured = vec![(Vec::new(), Vec::new(), Vec::new()); kinds.len()];
        for _ in 0..rounds {
            let thr = Role {
                latency: false,
                size,
                count: thr_count / scale,
                pace: Duration::ZERO,
                at: String::new(),
                name: name.into(),
            };
            let lat = Role {
                latency: true,
                count: lat_count / scale,
                pace: Duration::from_micros(pace_us),
                ..thr.clone()
            };
            for (k, kind) in kinds.iter().enumerate() {
                let (at_a, at_b) = at(kind);
                let per_s = if wanted("thr", &["thr", "lat"]) {
                    case(kind, &thr, &at_a, &at_b)["per_s"].as_f64().unwrap()
                } else {
                    f64::NAN
                };
                measured[k].0.push(per_s);
            }
            for (k, kind) in kinds.iter().enumerate() {
                let (at_a, at_b) = at(kind);
                let (p50, p99) = if wanted("lat", &["thr", "lat"]) {
                    let r = case(kind, &lat, &at_a, &at_b);
                    (r["p50_us"].as_f64().unwrap(), r["p99_us"].as_f64().unwrap())
                } else {
                    (f64::NAN, f64::NAN)
                };
                measured[k].1.push(p50);
                measured[k].2.push(p99);
            }
        }
        let mut figures = Vec::new();
        for (kind, (per_s, p50, p99)) in kinds.into_iter().zip(measured) {
            let f = (median(per_s), median(p50), median(p99));
            eprintln!(
                "{label:>6} {kind:<6} {:>10.0} frames/s {:>9.1} MB/s  p50 {:>8.1} µs  p99 {:>8.1} µs",
                f.0,
                f.0 * size as f64 / 1e6,
                f.1,
                f.2
            );
            figures.push((kind, f));
        }
        rows.push((label, size, figures));
    }
    drop(net);
    if std::env::var_os("BENCH_KEEP").is_some() {
        eprintln!("logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let table = report(&rows, quick);
    println!("{table}");
    if docs {
        write_docs(&table);
    }
}

type Figures<'a> = Vec<(&'a str, (f64, f64, f64))>;

fn report(rows: &[(&str, usize, Figures<'_>)], quick: bool) -> String {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut t = String::new();
    t += &format!(
        "Run of commit `{commit}` on {} CPUs{}, by `sudo ./scripts/bench-bridge --docs`: \
         two network namespaces on one veth pair; medians of {} rounds, the paths taking \
         turns within each round.\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if quick { " (--quick)" } else { "" },
        if quick { 1 } else { ROUNDS }
    );
    t += "| frame | path | frames/s | MB/s | × Zenoh | p50 µs | p99 µs | p50 × Zenoh |\n";
    t += "|---|---|---:|---:|---:|---:|---:|---:|\n";
    for (label, size, figures) in rows {
        let zenoh = figures
            .iter()
            .find(|(k, _)| *k == "zenoh")
            .map_or((f64::NAN, f64::NAN, f64::NAN), |f| f.1);
        for (kind, (per_s, p50, p99)) in figures {
            let path = match *kind {
                "mm" => "mmshare → bridge → Zenoh → bridge → mmshare",
                "zenoh" => "Zenoh publisher → subscriber",
                _ => "TCP stream",
            };
            t += &format!(
                "| {label} | {path} | {per_s:.0} | {:.0} | {:.2} | {p50:.0} | {p99:.0} | {:.2} |\n",
                per_s * *size as f64 / 1e6,
                per_s / zenoh.0,
                p50 / zenoh.1,
            );
        }
    }
    t
}

const BEGIN: &str = "<!-- bench-bridge: begin (generated by ./scripts/bench-bridge --docs) -->";
const END: &str = "<!-- bench-bridge: end -->";

fn write_docs(table: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        panic!("docs/BENCHMARKS.md has no {BEGIN} ... {END} section");
    };
    let new = format!("{}{BEGIN}\n{table}{}", &text[..b], &text[e..]);
    std::fs::write(&path, new).unwrap();
    eprintln!("wrote the table into docs/BENCHMARKS.md");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let role = || parse_role(&args[2..]);
    match args.get(1).map(String::as_str) {
        Some("run") => run(&args[2..]),
        Some("zenoh-pub") => zenoh_pub(&role()),
        Some("zenoh-sub") => zenoh_sub(&role()),
        Some("tcp-pub") => tcp_pub(&role()),
        Some("tcp-sub") => tcp_sub(&role()),
        Some("mm-pub") => mm_pub(&role()),
        Some("mm-sub") => mm_sub(&role()),
        _ => {
            eprintln!(
                "usage: bench-bridge run [--quick] [--docs]   (as root; see ./scripts/bench-bridge)"
            );
            std::process::exit(2);
        }
    }
}
