//! Daemon benchmarks: open latency, opens per second under concurrency, and daemon memory.
//!
//! Run: `cargo bench -p mmshare-daemon --bench open`
//!
//! Starts the real `mmshared` (release build) on a temp directory and measures, in one run:
//! - the latency of what a new client does: connect, Hello, Open, map (p50/p99), next to the
//!   same `open(2)` + `mmap` done directly on the file without a daemon, and a bare
//!   SOCK_SEQPACKET round trip to a thread in this process (the floor for any request);
//! - opens per second (Open + map + unmap on a kept connection) with 1, 16 and 128 clients;
//! - the daemon's resident memory idle and with 1000 open connections.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mmshare::{Access, Client, CreateOptions, RawArray};

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn latencies(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..n / 10 {
        f(); // warm up
    }
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as f64 / 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not support.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bench.sock");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_mmshared"))
        .arg("--socket")
        .arg(&socket)
        .arg("--dir")
        .arg(dir.path().join("data"))
        .arg("--mem-dir")
        .arg(dir.path().join("mem"))
        .args(["--max-connections", "2048", "--log-level", "warn"])
        .env("RUST_LOG", "warn,mmshare_daemon::server=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmshared");
    let stderr = daemon.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("mmshared exited").unwrap();
        if line.contains("listening on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let pid = daemon.id();
    std::thread::sleep(Duration::from_millis(200));
    let rss_idle = rss_kib(pid);

    let setup = Client::connect(&socket).unwrap();
    let arr = setup
        .create(&CreateOptions::new("bench", "f4", &[1024, 1024]).memory())
        .unwrap();
    let path = arr.info().path.clone();

    println!("\ndaemon benchmarks (same run, same machine)");
    println!("command: cargo bench -p mmshare-daemon --bench open\n");

    // Latency of a new client's first open.
    let cold = latencies(2000, || {
        let c = Client::connect(&socket).unwrap();
        let a = c.open_raw("bench", Access::Read).unwrap();
        std::hint::black_box(a.version());
    });
    let direct = latencies(2000, || {
        let a = RawArray::open(&path, Access::Read).unwrap();
        std::hint::black_box(a.version());
    });
    let kept = Client::connect(&socket).unwrap();
    let warm = latencies(5000, || {
        let a = kept.open_raw("bench", Access::Read).unwrap();
        std::hint::black_box(a.version());
    });
    let stat = latencies(5000, || {
        std::hint::black_box(kept.stat("bench").unwrap());
    });
    let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok(n) = b.recv(&mut buf) {
            if n == 0 || b.send(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let ping = latencies(5000, || {
        let mut buf = [0u8; 64];
        a.send(&[1; 16]).unwrap();
        a.recv(&mut buf).unwrap();
    });
    let _ = a.send(&[]);
    drop(a);
    let _ = echo.join();

    println!("| operation | p50 | p99 |");
    println!("|---|---|---|");
    for (label, v) in [
        ("new client: connect + Hello + Open + mmap", &cold),
        ("kept connection: Open + mmap + unmap", &warm),
        ("kept connection: Stat", &stat),
        ("baseline: open(2) + mmap of the file, no daemon", &direct),
        ("baseline: Unix datagram round trip to a thread", &ping),
    ] {
        println!(
            "| {label} | {:.1} µs | {:.1} µs |",
            pct(v, 0.5),
            pct(v, 0.99)
        );
    }

    // Throughput with concurrent clients, each on its own connection.
    println!("\n| concurrent clients | opens/s (Open + mmap + unmap) |");
    println!("|---|---|");
    for clients in [1usize, 16, 128] {
        let stop = Arc::new(AtomicBool::new(false));
        let total = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let (stop, total, socket) = (stop.clone(), total.clone(), socket.clone());
                std::thread::spawn(move || {
                    let c = Client::connect(&socket).unwrap();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let a = c.open_raw("bench", Access::Read).unwrap();
                        std::hint::black_box(a.version());
                        n += 1;
                    }
                    total.fetch_add(n, Ordering::Relaxed);
                })
            })
            .collect();
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        for th in threads {
            th.join().unwrap();
        }
        let rate = total.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
        println!("| {clients} | {rate:.0} |");
    }

    // Memory with 1000 idle connections.
    let conns: Vec<Client> = (0..1000)
        .map(|_| Client::connect(&socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let rss_1000 = rss_kib(pid);
    drop(conns);
    println!("\n| daemon state | RSS |");
    println!("|---|---|");
    println!("| idle, no arrays | {:.1} MiB |", rss_idle as f64 / 1024.0);
    println!(
        "| 1 array, 1000 open connections | {:.1} MiB |",
        rss_1000 as f64 / 1024.0
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}
