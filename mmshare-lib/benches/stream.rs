//! Streams against the floor and the alternatives, in one run, between two pinned processes.
//!
//! Run: `cargo bench -p mmshare --bench stream`; add section names (`latency`, `publish`,
//! `handoff`, `flow`, `fanout`) after `--` to run only those.
//!
//! - **one-way latency** (64 B and 4 KiB frames, the receiver spinning): ping-pong round trips
//!   between two processes, halved. The floor is a raw cache-line ping-pong (two words in a
//!   shared mapping); then a stream (loan, fill, publish; receive, read every byte, release) and
//!   an array (seqlock write; wait for the version, consistent copy).
//! - **blocking latency**: one frame every 2 ms to a subscriber asleep in `receive_timeout`;
//!   the subscriber measures publish time → its wake-up (same clock, same machine).
//! - **publish cost**: `loan` + `publish` of a 64 B frame with nobody asleep (counting the
//!   FUTEX_WAKE calls, which must be 0) and with a subscriber asleep.
//! - **8 MiB frames**: hand-off of a frame to another process and back an ack: a stream read
//!   in place, a stream with a consumer copy, an array (seqlock write + consistent copy), a
//!   Unix socket.
//! - **1 → N subscribers**: 4 KiB frames to N lossless subscriber processes, each reading
//!   every byte of every frame.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mmshare::internal::futex_wake_calls;
use mmshare::{
    Access, Array, ArraySpec, DType, Delivery, Publisher, StreamSpec, Subscriber,
    create_array_file, create_stream_files,
};

const ROUND_TRIPS: usize = 20_000;
const BIG: usize = 8 << 20;
const BIG_ROUNDS: usize = 60;
const TIMEOUT: Duration = Duration::from_secs(20);

fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu % rustix::thread::CpuSet::MAX_CPU);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), at(0.999))
}

fn stream(dir: &Path, name: &str, elems: u64, slots: u32) -> PathBuf {
    stream_of(dir, name, DType::U8, elems, slots)
}

fn stream_of(dir: &Path, name: &str, dtype: DType, elems: u64, slots: u32) -> PathBuf {
    let mut spec = StreamSpec::new(name, dtype, vec![elems]);
    spec.slots = slots;
    create_stream_files(dir, &spec).unwrap().0
}

fn spawn(args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "bench child failed");
    String::from_utf8(out.stdout).unwrap()
}

/// A mapping of two words on separate cache lines, for the raw ping-pong.
fn raw_words(path: &Path) -> (memmap2::MmapMut, *const AtomicU64, *const AtomicU64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: a private benchmark file; both processes access it only through atomics.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file).unwrap() };
    let base = map.as_mut_ptr();
    // SAFETY: the file is 4096 bytes; offsets 0 and 64 are 8-aligned words inside it.
    let (ping, pong) = unsafe { (base.cast::<AtomicU64>(), base.add(64).cast::<AtomicU64>()) };
    (map, ping, pong)
}

fn child_raw(path: &str) {
    pin(1);
    let (_map, ping, pong) = raw_words(Path::new(path));
    // SAFETY: valid for the life of `_map`.
    let (ping, pong) = unsafe { (&*ping, &*pong) };
    for i in 1..=ROUND_TRIPS as u64 + 1000 {
        while ping.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        pong.store(i, Ordering::Release);
    }
}

fn child_stream_echo(ping: &str, pong: &str) {
    pin(1);
    let subscriber = Subscriber::<u8>::open(ping, Delivery::Lossless).unwrap();
    let mut publisher = Publisher::<u8>::open(pong).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut sum = 0u64;
    for _ in 0..ROUND_TRIPS + 1000 {
        let sample = loop {
            if let Some(s) = subscriber.receive().unwrap() {
                break s;
            }
            std::hint::spin_loop();
        };
        // Read every byte, eight at a time.
        sum = sample.chunks_exact(8).fold(sum, |a, c| {
            a.wrapping_add(u64::from_le_bytes(c.try_into().expect("8 bytes")))
        });
        drop(sample);
        let mut loan = publisher.loan().unwrap();
        loan[0] = 1;
        loan.publish();
    }
    std::hint::black_box(sum);
}

fn child_array_echo(ping: &str, pong: &str) {
    pin(1);
    let ping = Array::<u8>::open(ping, Access::Read).unwrap();
    let pong = Array::<u8>::open(pong, Access::Write).unwrap();
    let mut buf = vec![0u8; ping.len()];
    let mut seen = 0;
    for _ in 0..ROUND_TRIPS + 1000 {
        seen = ping.wait_for_version(seen, TIMEOUT).unwrap();
        ping.read_into(&mut buf).unwrap();
        pong.write_all(&buf[..pong.len()]).unwrap();
    }
}

fn child_sleeper(path: &str, frames: usize) {
    pin(1);
    let subscriber = Subscriber::<u8>::open(path, Delivery::Lossy).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut lat = Vec::new();
    for _ in 0..frames {
        let sample = subscriber.receive_timeout(TIMEOUT).unwrap();
        let now = now_ns();
        lat.push(now.saturating_sub(sample.published_ns()) as f64 / 1e3);
    }
    let (p50, p99, _) = percentiles(lat);
    println!("p50={p50:.1} p99={p99:.1}");
}

fn child_big(path: &str, ack: &str, copy: bool) {
    pin(1);
    let subscriber = Subscriber::<u64>::open(path, Delivery::Lossless).unwrap();
    let mut acks = Publisher::<u8>::open(ack).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut buf = vec![0u64; BIG / 8];
    for _ in 0..BIG_ROUNDS + 5 {
        let sample = subscriber.receive_timeout(TIMEOUT).unwrap();
        if copy {
            buf.copy_from_slice(&sample);
            std::hint::black_box(&buf);
        } else {
            std::hint::black_box(sample.iter().fold(0u64, |a, &x| a.wrapping_add(x)));
        }
        drop(sample);
        acks.send(&[1]).unwrap();
    }
}

/// Reads `frames` frames from a lossless subscription, every byte, with no ack.
fn child_big_flow(path: &str, copy: bool, frames: usize) {
    pin(1);
    let subscriber = Subscriber::<u64>::open(path, Delivery::Lossless).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut buf = vec![0u64; BIG / 8];
    for _ in 0..frames {
        let sample = subscriber.receive_timeout(TIMEOUT).unwrap();
        if copy {
            buf.copy_from_slice(&sample);
            std::hint::black_box(&buf);
        } else {
            std::hint::black_box(sample.iter().fold(0u64, |a, &x| a.wrapping_add(x)));
        }
    }
}

/// Reads `frames` 8 MiB messages from a Unix socket, with no ack.
fn child_socket_flow(path: &str, frames: usize) {
    pin(1);
    let mut s = UnixStream::connect(path).unwrap();
    let mut buf = vec![0u8; BIG];
    for _ in 0..frames {
        s.read_exact(&mut buf).unwrap();
        std::hint::black_box(&buf);
    }
}

fn child_socket(path: &str) {
    pin(1);
    let mut s = UnixStream::connect(path).unwrap();
    let mut buf = vec![0u8; BIG];
    for _ in 0..BIG_ROUNDS + 5 {
        s.read_exact(&mut buf).unwrap();
        std::hint::black_box(&buf);
        s.write_all(&[1]).unwrap();
    }
}

fn child_count(path: &str, frames: u64, cpu: usize) {
    pin(cpu);
    let subscriber = Subscriber::<u64>::attach(
        mmshare::StreamFiles::open(path, false).unwrap(),
        mmshare::SubscribeOptions::new(Delivery::Lossless).max_held(1),
    )
    .unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut sum = 0u64;
    for _ in 0..frames {
        let sample = subscriber.receive_timeout(TIMEOUT).unwrap();
        sum = sample.iter().fold(sum, |a, &x| a.wrapping_add(x));
    }
    std::hint::black_box(sum);
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn wait_ready(child: &mut Child) {
    let mut line = [0u8; 6];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    assert_eq!(&line, b"ready\n");
}

/// Half the median (and tails) of timed round trips of `round`.
fn one_way(mut round: impl FnMut(u64)) -> (f64, f64, f64) {
    for i in 1..=1000 {
        round(i);
    }
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for i in 1001..=ROUND_TRIPS as u64 + 1000 {
        let t = Instant::now();
        round(i);
        times.push(t.elapsed().as_nanos() as f64 / 2.0);
    }
    percentiles(times)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args[i].as_str();
    match args.get(1).map(String::as_str) {
        Some("__raw") => return child_raw(arg(2)),
        Some("__stream_echo") => return child_stream_echo(arg(2), arg(3)),
        Some("__array_echo") => return child_array_echo(arg(2), arg(3)),
        Some("__sleeper") => return child_sleeper(arg(2), arg(3).parse().unwrap()),
        Some("__big") => return child_big(arg(2), arg(3), arg(4) == "copy"),
        Some("__socket") => return child_socket(arg(2)),
        Some("__big_flow") => {
            return child_big_flow(arg(2), arg(3) == "copy", arg(4).parse().unwrap());
        }
        Some("__socket_flow") => return child_socket_flow(arg(2), arg(3).parse().unwrap()),
        Some("__count") => {
            return child_count(arg(2), arg(3).parse().unwrap(), arg(4).parse().unwrap());
        }
        _ => {}
    }
    let sections = ["latency", "publish", "handoff", "flow", "fanout"];
    let chosen: Vec<&str> = args[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(bad) = chosen.iter().find(|a| !sections.contains(a)) {
        eprintln!("unknown section {bad:?}; the sections are {sections:?}");
        std::process::exit(2);
    }
    let run = |section: &str| chosen.is_empty() || chosen.contains(&section);
    let cpus = cpus();
    pin(0);
    let dir = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let d = dir.path();
    println!(
        "command: cargo bench -p mmshare --bench stream ({cpus} CPUs; parent on CPU 0, child on CPU 1)\n"
    );

    if run("latency") {
        // Raw floor.
        let raw_path = d.join("raw");
        std::fs::write(&raw_path, vec![0u8; 4096]).unwrap();
        let (_map, ping, pong) = raw_words(&raw_path);
        // SAFETY: valid for the life of `_map`.
        let (ping, pong) = unsafe { (&*ping, &*pong) };
        let child = spawn(&["__raw", raw_path.to_str().unwrap()]);
        let raw = one_way(|i| {
            ping.store(i, Ordering::Release);
            while pong.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
        });
        output(child);

        let mut latency = vec![("raw cache-line ping-pong (the floor)".to_string(), raw)];
        for size in [64u64, 4096] {
            let ping = stream(d, &format!("ping{size}"), size, 8);
            let pong = stream(d, &format!("pong{size}"), size, 8);
            let mut publisher = Publisher::<u8>::open(&ping).unwrap();
            let mut child = spawn(&[
                "__stream_echo",
                ping.to_str().unwrap(),
                pong.to_str().unwrap(),
            ]);
            wait_ready(&mut child);
            let replies = Subscriber::<u8>::open(&pong, Delivery::Lossless).unwrap();
            let fill = vec![7u8; size as usize];
            let r = one_way(|_| {
                let mut loan = publisher.loan().unwrap();
                loan.copy_from_slice(&fill);
                loan.publish();
                loop {
                    if replies.receive().unwrap().is_some() {
                        break;
                    }
                    std::hint::spin_loop();
                }
            });
            output(child);
            latency.push((
                format!("stream, {size} B frame (loan, fill, publish / receive, read, release)"),
                r,
            ));

            let (ping_a, _) = create_array_file(
                d,
                &ArraySpec::new(format!("aping{size}"), DType::U8, vec![size]),
            )
            .unwrap();
            let (pong_a, _) = create_array_file(
                d,
                &ArraySpec::new(format!("apong{size}"), DType::U8, vec![8]),
            )
            .unwrap();
            let writer = Array::<u8>::open(&ping_a, Access::Write).unwrap();
            let acks = Array::<u8>::open(&pong_a, Access::Read).unwrap();
            let child = spawn(&[
                "__array_echo",
                ping_a.to_str().unwrap(),
                pong_a.to_str().unwrap(),
            ]);
            let mut seen = 0;
            let r = one_way(|_| {
                writer.write_all(&fill).unwrap();
                seen = acks.wait_for_version(seen, TIMEOUT).unwrap();
            });
            output(child);
            latency.push((
                format!("array, {size} B (seqlock write / wait for the version, copy)"),
                r,
            ));
        }
        println!("one-way latency, receiver spinning ({ROUND_TRIPS} round trips halved)\n");
        println!("| case | p50 | p99 | p99.9 | p50 × raw |");
        println!("|---|---|---|---|---|");
        let floor = latency[0].1.0;
        for (label, (p50, p99, p999)) in &latency {
            println!(
                "| {label} | {p50:.0} ns | {p99:.0} ns | {p999:.0} ns | {:.1}× |",
                p50 / floor
            );
        }
    }
    if run("publish") {
        // Blocking latency and publish cost.
        let path = stream(d, "sleepy", 64, 8);
        let mut publisher = Publisher::<u8>::open(&path).unwrap();
        let before = futex_wake_calls();
        let t = Instant::now();
        const QUIET: u32 = 200_000;
        for _ in 0..QUIET {
            let mut loan = publisher.loan().unwrap();
            loan[0] = 1;
            loan.publish();
        }
        let quiet_ns = t.elapsed().as_nanos() as f64 / f64::from(QUIET);
        let quiet_wakes = futex_wake_calls() - before;
        const SLEEPY: usize = 300;
        let mut child = spawn(&["__sleeper", path.to_str().unwrap(), &SLEEPY.to_string()]);
        wait_ready(&mut child);
        let before = futex_wake_calls();
        let mut costs = Vec::new();
        for _ in 0..SLEEPY {
            std::thread::sleep(Duration::from_millis(2));
            let t = Instant::now();
            let mut loan = publisher.loan().unwrap();
            loan[0] = 2;
            loan.publish();
            costs.push(t.elapsed().as_nanos() as f64);
        }
        let sleepy_wakes = futex_wake_calls() - before;
        let report = output(child);
        let (sleepy_ns, _, _) = percentiles(costs);
        println!("\npublish cost (64 B frame, loan + publish)\n");
        println!("| case | per publish | FUTEX_WAKE calls |");
        println!("|---|---|---|");
        println!(
            "| nobody asleep ({QUIET} publishes back to back) | {quiet_ns:.0} ns | {quiet_wakes} |"
        );
        println!(
            "| a subscriber asleep ({SLEEPY} publishes, 2 ms apart; p50) | {sleepy_ns:.0} ns | {sleepy_wakes} |"
        );
        println!(
            "\nblocking latency (subscriber asleep in receive_timeout, publish → its wake-up, µs): {}",
            report.trim()
        );
    }
    if run("handoff") {
        // 8 MiB frames.
        let frame: Vec<u64> = (0..BIG as u64 / 8).collect();
        let mut big = Vec::new();
        for mode in ["in-place", "copy"] {
            let path = stream_of(d, &format!("big-{mode}"), DType::U64, BIG as u64 / 8, 4);
            let ack = stream(d, &format!("ack-{mode}"), 1, 4);
            let mut publisher = Publisher::<u64>::open(&path).unwrap();
            let mut child = spawn(&["__big", path.to_str().unwrap(), ack.to_str().unwrap(), mode]);
            wait_ready(&mut child);
            let acks = Subscriber::<u8>::open(&ack, Delivery::Lossless).unwrap();
            let mut times = Vec::new();
            for round in 0..BIG_ROUNDS + 5 {
                let t = Instant::now();
                let mut loan = publisher.loan().unwrap();
                loan.copy_from_slice(&frame);
                loan.publish();
                drop(acks.receive_timeout(TIMEOUT).unwrap());
                if round >= 5 {
                    times.push(t.elapsed().as_nanos() as f64 / 1e3);
                }
            }
            output(child);
            let label = if mode == "copy" {
                "stream, the consumer copies the frame out"
            } else {
                "stream, the consumer reads every byte in place"
            };
            big.push((label.to_string(), percentiles(times)));
        }
        {
            let sock = d.join("big.sock");
            let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
            let child = spawn(&["__socket", sock.to_str().unwrap()]);
            let (mut s, _) = listener.accept().unwrap();
            let bytes: Vec<u8> = frame.iter().flat_map(|x| x.to_le_bytes()).collect();
            let mut ack = [0u8; 1];
            let mut times = Vec::new();
            for round in 0..BIG_ROUNDS + 5 {
                let t = Instant::now();
                s.write_all(&bytes).unwrap();
                s.read_exact(&mut ack).unwrap();
                if round >= 5 {
                    times.push(t.elapsed().as_nanos() as f64 / 1e3);
                }
            }
            output(child);
            big.push((
                "Unix socket (write 8 MiB / read 8 MiB, ack)".to_string(),
                percentiles(times),
            ));
        }
        println!(
            "\n8 MiB frame to another process and an ack back ({BIG_ROUNDS} rounds; producer fills the frame each round)\n"
        );
        println!("| case | p50 | p99 | GB/s at p50 | × socket |");
        println!("|---|---|---|---|---|");
        let sock50 = big[2].1.0;
        for (label, (p50, p99, _)) in &big {
            println!(
                "| {label} | {p50:.0} µs | {p99:.0} µs | {:.1} | {:.2}× |",
                BIG as f64 / p50 / 1e3,
                sock50 / p50
            );
        }
    }
    if run("flow") {
        // 8 MiB frames streamed: the producer makes each frame (writes every byte) and sends it
        // on; the consumer reads every byte of every frame; nobody waits for an ack, so the two
        // sides overlap as a pipeline does.
        const FLOW: usize = 200;
        let mut flow = Vec::new();
        for mode in ["in-place", "copy"] {
            let path = stream_of(d, &format!("flow-{mode}"), DType::U64, BIG as u64 / 8, 4);
            let mut publisher = Publisher::<u64>::open(&path).unwrap();
            let mut child = spawn(&[
                "__big_flow",
                path.to_str().unwrap(),
                mode,
                &FLOW.to_string(),
            ]);
            wait_ready(&mut child);
            let t = Instant::now();
            for i in 0..FLOW as u64 {
                let mut loan = publisher.loan().unwrap();
                loan.fill(i);
                loan.publish();
            }
            output(child);
            let label = if mode == "copy" {
                "stream: fill in place / copy out"
            } else {
                "stream: fill in place / read in place"
            };
            flow.push((label, t.elapsed().as_secs_f64() / FLOW as f64));
        }
        {
            let sock = d.join("flow.sock");
            let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
            let child = spawn(&["__socket_flow", sock.to_str().unwrap(), &FLOW.to_string()]);
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; BIG];
            let t = Instant::now();
            for i in 0..FLOW {
                buf.fill(i as u8);
                s.write_all(&buf).unwrap();
            }
            output(child);
            flow.push((
                "Unix socket: fill a buffer, write / read into a buffer",
                t.elapsed().as_secs_f64() / FLOW as f64,
            ));
        }
        println!(
            "
8 MiB frames streamed to another process, no ack ({FLOW} frames)
"
        );
        println!("| case | per frame | GB/s | × socket |");
        println!("|---|---|---|---|");
        let sock = flow[2].1;
        for (label, secs) in &flow {
            println!(
                "| {label} | {:.0} µs | {:.1} | {:.2}× |",
                secs * 1e6,
                BIG as f64 / secs / 1e9,
                sock / secs
            );
        }
    }
    if run("fanout") {
        // 1 → N subscribers.
        println!("\n4 KiB frames to N lossless subscriber processes, each reading every byte\n");
        println!("| subscribers | frames/s | per frame |");
        println!("|---|---|---|");
        const FRAMES: u64 = 50_000;
        for n in [1usize, 2, 4] {
            let path = stream_of(d, &format!("fan{n}"), DType::U64, 512, 16);
            let mut publisher = Publisher::<u64>::open(&path).unwrap();
            let mut children: Vec<Child> = (0..n)
                .map(|i| {
                    spawn(&[
                        "__count",
                        path.to_str().unwrap(),
                        &FRAMES.to_string(),
                        &(1 + i).to_string(),
                    ])
                })
                .collect();
            for c in &mut children {
                wait_ready(c);
            }
            let t = Instant::now();
            for i in 0..FRAMES {
                let mut loan = publisher.loan().unwrap();
                loan.fill(i);
                loan.publish();
            }
            for c in children {
                output(c);
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "| {n} | {:.0} | {:.2} µs |",
                FRAMES as f64 / secs,
                secs * 1e6 / FRAMES as f64
            );
        }
    }
}
