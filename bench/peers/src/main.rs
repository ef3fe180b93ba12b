//! mmshare raced against what users would pick instead, in one run, between two processes
//! pinned to two CPUs.
//!
//! Run: `./scripts/bench-peers` (it builds this crate in release mode, passes its arguments on,
//! runs the Python rows and makes the tables and plots with `report.py`). This program writes
//! its figures as JSON to `$BENCH_PEERS_JSON` and one progress line per case to standard error.
//!
//! **One-way latency, receiver busy-waiting**: the parent process (CPU 0) fills a message of
//! the size and sends it; the child (CPU 1) receives it, reads every byte, fills a reply of
//! the same size and sends it back; the parent receives it and reads every byte. One-way =
//! round trip / 2, per round; p50, p99 and p99.9 over the rounds after a warm-up. Every case
//! moves and touches the same bytes, so the rows compare transports, not work:
//! - the floor: a raw cache-line ping-pong (two words in a shared mapping, no payload);
//! - mmshare stream: loan, fill in place, publish / receive, read in place, release;
//! - mmshare array: seqlock write of the whole array / wait for the version, consistent copy;
//! - iceoryx2 0.10 publish-subscribe, configured like its own benchmark for low latency
//!   (one publisher, one subscriber, history 0, subscriber buffer 1, safe overflow, the slice
//!   length set on the publisher): `loan_slice_uninit` + `write_from_slice` + `send` /
//!   `receive` + read the payload;
//! - Zenoh 1.10 publish-subscribe over its shared-memory transport (module `zenoh_shm`: how
//!   it is configured, and why its receivers block);
//! - a Unix stream socket: `write_all` / `read_exact` into a buffer;
//! - Redis pub/sub through a redis-server on a private Unix socket (persistence off), with the
//!   `redis` crate: `PUBLISH` / a subscribed connection's next message (Redis has no busy-wait
//!   receive: each side blocks in a socket read).
//!
//! **Placements**: the floor and the 64 B stream ping-pong again, in fresh files each time,
//! alternating (see [`placements`]): what the bound "stream 64 B ÷ floor" is judged on.
//!
//! **Blocking receive**, **throughput** to 1..N consumer processes (Redis: `SET` of a key per
//! frame, `GET` polled by each consumer), **reader scaling**, **request/response round
//! trips** and **fan-in** from several publishers are described where they are implemented,
//! below.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use iceoryx2::prelude::*;
use mmshare::{
    Access, Array, ArraySpec, DType, Delivery, Publisher, StreamSpec, Subscriber,
    create_array_file, create_stream_files,
};

mod zenoh_shm;

type Result<T = ()> = std::result::Result<T, String>;

/// Message sizes, with the rounds each gets (fewer for big messages).
const SIZES: [(usize, usize); 4] = [
    (64, 20_000),
    (4096, 20_000),
    (1 << 20, 2_000),
    (8 << 20, 300),
];

/// The Zenoh latency row's case (its row also carries the attempts that failed).
const ZENOH_LATENCY: &str = "Zenoh 1.10 SHM pub-sub";

/// The machine's online CPUs (not this process's affinity, which pinning narrows).
fn cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Pins this process to CPU `cpu` (modulo the CPUs there are: more processes than CPUs share).
fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu % cpus().min(rustix::thread::CpuSet::MAX_CPU));
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Fills `buf` with `round`'s bytes, eight at a time.
fn fill(buf: &mut [u8], round: u64) {
    for chunk in buf.chunks_exact_mut(8) {
        chunk.copy_from_slice(&round.to_le_bytes());
    }
}

/// Reads every byte (eight at a time); the sum keeps the reads from being optimized away.
fn touch(buf: &[u8]) -> u64 {
    buf.chunks_exact(8).fold(0u64, |a, c| {
        a.wrapping_add(u64::from_le_bytes(c.try_into().expect("8 bytes")))
    })
}

/// Latency samples in ns, sorted.
struct Dist(Vec<f64>);

impl Dist {
    fn new(mut samples: Vec<f64>) -> Dist {
        samples.sort_by(f64::total_cmp);
        Dist(samples)
    }

    /// The `q` quantile (0 ..= 1).
    fn at(&self, q: f64) -> f64 {
        self.0[((self.0.len() - 1) as f64 * q) as usize]
    }

    /// p50, p99, p99.9, the sample count, and the quantiles 1 - 10^-x for x = 0, 0.05 .. 3
    /// (0 % .. 99.9 %: a latency-by-percentile curve for the plots).
    fn json(&self) -> serde_json::Value {
        let curve: Vec<[f64; 2]> = (0..=60)
            .map(|i| {
                let q = 1.0 - 10f64.powf(-f64::from(i) / 20.0);
                [q, self.at(q)]
            })
            .collect();
        serde_json::json!({
            "p50_ns": self.at(0.5), "p99_ns": self.at(0.99), "p999_ns": self.at(0.999),
            "samples": self.0.len(), "quantiles": curve,
        })
    }
}

/// Times `rounds` round trips of `round` after a tenth as many unmeasured; one-way figures.
fn one_way(rounds: usize, round: impl FnMut(u64) -> Result) -> Result<Dist> {
    timed(rounds, 2.0, round)
}

/// Times `rounds` rounds of `round` after a tenth as many unmeasured, each divided by `per`.
fn timed(rounds: usize, per: f64, mut round: impl FnMut(u64) -> Result) -> Result<Dist> {
    let warm = rounds / 10;
    let mut times = Vec::with_capacity(rounds);
    for i in 0..(warm + rounds) as u64 {
        let t = Instant::now();
        round(i + 1)?;
        if i as usize >= warm {
            times.push(t.elapsed().as_nanos() as f64 / per);
        }
    }
    Ok(Dist::new(times))
}

fn spawn(args: &[&str]) -> Result<Child> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))
}

fn wait_ready(child: &mut Child) -> Result {
    let mut line = [0u8; 6];
    child
        .stdout
        .as_mut()
        .expect("piped")
        .read_exact(&mut line)
        .map_err(|e| format!("the child did not start: {e}"))?;
    if &line == b"ready\n" {
        Ok(())
    } else {
        Err(format!("the child said {line:?}"))
    }
}

fn ready() -> Result {
    let mut out = std::io::stdout().lock();
    out.write_all(b"ready\n")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

/// Waits for a child; an error with its own (the `error: ` line a failing child writes to its
/// standard output, read by us: see `main`) if it failed.
fn finish(child: Child) -> Result {
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("error: ").map(str::to_owned));
    Err(match said {
        Some(e) => format!("the child failed ({}): {e}", out.status),
        None => format!("the child failed: {}", out.status),
    })
}

// ---------------------------------------------------------------------------------------------
// The floor

fn raw_words(path: &Path) -> Result<(memmap2::MmapMut, &'static AtomicU64, &'static AtomicU64)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    // SAFETY: a private benchmark file of 4096 bytes, accessed only through atomics.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(|e| e.to_string())?;
    let base = map.as_mut_ptr();
    // SAFETY: offsets 0 and 64 are 8-aligned words inside the mapping, which the caller keeps
    // alive for as long as it uses them (the returned map).
    let words = unsafe {
        (
            &*base.cast::<AtomicU64>(),
            &*base.add(64).cast::<AtomicU64>(),
        )
    };
    Ok((map, words.0, words.1))
}

fn child_raw(path: &str, rounds: u64) -> Result {
    pin(1);
    let (_map, ping, pong) = raw_words(Path::new(path))?;
    ready()?;
    for i in 1..=rounds {
        while ping.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        pong.store(i, Ordering::Release);
    }
    Ok(())
}

fn raw(dir: &Path, rounds: usize) -> Result<Dist> {
    let path = dir.join("raw");
    std::fs::write(&path, vec![0u8; 4096]).map_err(|e| e.to_string())?;
    let (_map, ping, pong) = raw_words(&path)?;
    let total = (rounds + rounds / 10) as u64;
    let mut child = spawn(&["__raw", path.to_str().expect("utf-8"), &total.to_string()])?;
    wait_ready(&mut child)?;
    let r = one_way(rounds, |i| {
        ping.store(i, Ordering::Release);
        while pong.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        Ok(())
    })?;
    finish(child)?;
    Ok(r)
}

/// The floor and the 64 B stream ping-pong, `k` times each, alternating, each time in files
/// of their own (a directory of their own in `dir`): their p50s, as JSON.
///
/// Where the kernel puts a mapping's pages decides which slice of the shared L3 owns each
/// cache line, and so how far a line travels between the two cores: on the 2-vCPU machine
/// of docs/BENCHMARKS.md the floor's p50 comes out near 135 ns in some placements and near
/// 210 ns in others, run after run. A ratio of one run's floor to one run's stream is then
/// as much the two placements as the code; the medians of several placements each are what
/// the bound is judged on.
fn placements(dir: &Path, k: usize, rounds: usize) -> Result<serde_json::Value> {
    let (mut floors, mut streams) = (Vec::new(), Vec::new());
    let (mut arrays, mut forked) = (Vec::new(), Vec::new());
    for _ in 0..k {
        let own = tempfile::tempdir_in(dir).map_err(|e| e.to_string())?;
        floors.push(raw(own.path(), rounds)?.at(0.5));
        streams.push(stream(own.path(), 64, rounds)?.at(0.5));
        // The array ping-pong with a spawned and with a fork()ed second process: the bound
        // "forked ÷ spawned" at 64 B is a race of placements as much as the floor is.
        arrays.push(array(own.path(), 64, rounds)?.at(0.5));
        forked.push(array_forked(own.path(), 64, rounds)?.at(0.5));
    }
    let text = |v: &[f64]| {
        v.iter()
            .map(|&x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    progress(
        "placements",
        64,
        "floor p50 (ns), fresh files each",
        &text(&floors),
    );
    progress(
        "placements",
        64,
        "mmshare stream p50 (ns), alternating",
        &text(&streams),
    );
    progress(
        "placements",
        64,
        "mmshare array p50 (ns), alternating",
        &text(&arrays),
    );
    progress(
        "placements",
        64,
        "mmshare array, fork()ed child p50 (ns), alternating",
        &text(&forked),
    );
    Ok(serde_json::json!({
        "rounds": rounds, "floor_p50_ns": floors, "stream_p50_ns": streams,
        "array_p50_ns": arrays, "array_forked_p50_ns": forked,
    }))
}

// ---------------------------------------------------------------------------------------------
// mmshare stream

fn stream_path(dir: &Path, name: &str, size: usize) -> Result<PathBuf> {
    let mut spec = StreamSpec::new(name, DType::U8, vec![size as u64]);
    spec.slots = 4;
    Ok(create_stream_files(dir, &spec)
        .map_err(|e| e.to_string())?
        .0)
}

fn stream_send(publisher: &mut Publisher<u8>, round: u64) -> Result {
    let mut loan = publisher.loan().map_err(|e| e.to_string())?;
    fill(&mut loan, round);
    loan.publish();
    Ok(())
}

fn stream_receive(subscriber: &Subscriber<u8>) -> Result<u64> {
    loop {
        if let Some(sample) = subscriber.receive().map_err(|e| e.to_string())? {
            return Ok(touch(&sample));
        }
        std::hint::spin_loop();
    }
}

fn child_stream(ping: &str, pong: &str, rounds: u64) -> Result {
    pin(1);
    let subscriber = Subscriber::<u8>::open(ping, Delivery::Lossless).map_err(|e| e.to_string())?;
    let mut publisher = Publisher::<u8>::open(pong).map_err(|e| e.to_string())?;
    ready()?;
    let mut sum = 0u64;
    for i in 1..=rounds {
        sum = sum.wrapping_add(stream_receive(&subscriber)?);
        stream_send(&mut publisher, i)?;
    }
    std::hint::black_box(sum);
    Ok(())
}

fn stream(dir: &Path, size: usize, rounds: usize) -> Result<Dist> {
    let ping = stream_path(dir, &format!("sping{size}"), size)?;
    let pong = stream_path(dir, &format!("spong{size}"), size)?;
    let mut publisher = Publisher::<u8>::open(&ping).map_err(|e| e.to_string())?;
    let total = (rounds + rounds / 10) as u64;
    let mut child = spawn(&[
        "__stream",
        ping.to_str().expect("utf-8"),
        pong.to_str().expect("utf-8"),
        &total.to_string(),
    ])?;
    wait_ready(&mut child)?;
    let replies = Subscriber::<u8>::open(&pong, Delivery::Lossless).map_err(|e| e.to_string())?;
    let r = one_way(rounds, |i| {
        stream_send(&mut publisher, i)?;
        std::hint::black_box(stream_receive(&replies)?);
        Ok(())
    })?;
    finish(child)?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// mmshare array

fn child_array(ping: &str, pong: &str, rounds: u64) -> Result {
    pin(1);
    let ping = Array::<u8>::open(ping, Access::Read).map_err(|e| e.to_string())?;
    let pong = Array::<u8>::open(pong, Access::Write).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; ping.len()];
    let mut reply = vec![0u8; pong.len()];
    ready()?;
    let mut seen = 0;
    for i in 1..=rounds {
        seen = spin_for_version(&ping, seen);
        ping.read_into(&mut buf).map_err(|e| e.to_string())?;
        std::hint::black_box(touch(&buf));
        fill(&mut reply, i);
        pong.write_all(&reply).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Busy-waits for a version newer than `seen` (as the other cases busy-wait).
fn spin_for_version(array: &Array<u8>, seen: u64) -> u64 {
    loop {
        let v = array.version();
        if v > seen {
            return v;
        }
        std::hint::spin_loop();
    }
}

/// The two arrays of an array ping-pong (`PREFIXping`, `PREFIXpong`), and the parent's
/// handles: the writer of ping and the reader of pong.
type ArrayPair = (PathBuf, PathBuf, Array<u8>, Array<u8>);

fn array_pair(dir: &Path, prefix: &str, size: usize) -> Result<ArrayPair> {
    let make = |name: String| {
        create_array_file(dir, &ArraySpec::new(name, DType::U8, vec![size as u64]))
            .map(|(p, _)| p)
            .map_err(|e| e.to_string())
    };
    let (ping, pong) = (
        make(format!("{prefix}ping{size}"))?,
        make(format!("{prefix}pong{size}"))?,
    );
    let writer = Array::<u8>::open(&ping, Access::Write).map_err(|e| e.to_string())?;
    let replies = Array::<u8>::open(&pong, Access::Read).map_err(|e| e.to_string())?;
    Ok((ping, pong, writer, replies))
}

/// The parent's side of an array ping-pong, timed: write ping, wait for pong's next version,
/// copy it and read every byte.
fn array_parent(
    writer: &Array<u8>,
    replies: &Array<u8>,
    size: usize,
    rounds: usize,
) -> Result<Dist> {
    let (mut msg, mut buf) = (vec![0u8; size], vec![0u8; size]);
    let mut seen = 0;
    one_way(rounds, |i| {
        fill(&mut msg, i);
        writer.write_all(&msg).map_err(|e| e.to_string())?;
        seen = spin_for_version(replies, seen);
        replies.read_into(&mut buf).map_err(|e| e.to_string())?;
        std::hint::black_box(touch(&buf));
        Ok(())
    })
}

fn array(dir: &Path, size: usize, rounds: usize) -> Result<Dist> {
    let (ping, pong, writer, replies) = array_pair(dir, "a", size)?;
    let total = (rounds + rounds / 10) as u64;
    let mut child = spawn(&[
        "__array",
        ping.to_str().expect("utf-8"),
        pong.to_str().expect("utf-8"),
        &total.to_string(),
    ])?;
    wait_ready(&mut child)?;
    let r = array_parent(&writer, &replies, size, rounds)?;
    finish(child)?;
    Ok(r)
}

/// The array ping-pong with a `fork()`ed child instead of a spawned process: the parent opens
/// both sides' handles, forks, and the child plays its side with the handles it inherited
/// (what a `multiprocessing` worker does on Linux, where Python forks by default before 3.14).
fn array_forked(dir: &Path, size: usize, rounds: usize) -> Result<Dist> {
    let (ping, pong, writer, replies) = array_pair(dir, "f", size)?;
    let child_in = Array::<u8>::open(&ping, Access::Read).map_err(|e| e.to_string())?;
    let child_out = Array::<u8>::open(&pong, Access::Write).map_err(|e| e.to_string())?;
    let total = (rounds + rounds / 10) as u64;
    let (mut buf, mut reply) = (vec![0u8; size], vec![0u8; size]);
    // SAFETY: the child runs only the loop below (no locks another thread could hold: its
    // buffers were allocated before the fork) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: asks the kernel to kill this child if the parent dies (no memory touched).
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        pin(1);
        let mut seen = 0;
        let mut ok = true;
        for i in 1..=total {
            seen = spin_for_version(&child_in, seen);
            ok &= child_in.read_into(&mut buf).is_ok();
            std::hint::black_box(touch(&buf));
            fill(&mut reply, i);
            ok &= child_out.write_all(&reply).is_ok();
        }
        // SAFETY: ends the child without running the parent's destructors or atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    drop((child_in, child_out));
    let r = array_parent(&writer, &replies, size, rounds)?;
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid
        || !libc::WIFEXITED(status)
        || libc::WEXITSTATUS(status) != 0
    {
        return Err(format!("the forked child failed (status {status:#x})"));
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// iceoryx2

/// One direction of an iceoryx2 ping-pong: a publish-subscribe service of byte slices.
struct Iox {
    publisher: iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>,
    subscriber: iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>,
    size: usize,
}

fn iox_service(
    node: &Node<ipc::Service>,
    name: &str,
) -> Result<iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>>
{
    node.service_builder(&ServiceName::new(name).map_err(|e| format!("{e:?}"))?)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(1)
        .enable_safe_overflow(true)
        .open_or_create()
        .map_err(|e| format!("iceoryx2 service {name}: {e:?}"))
}

impl Iox {
    /// Publishes on `out`, subscribes to `inbound`.
    fn new(node: &Node<ipc::Service>, out: &str, inbound: &str, size: usize) -> Result<Iox> {
        let publisher = iox_service(node, out)?
            .publisher_builder()
            .initial_max_slice_len(size)
            .create()
            .map_err(|e| format!("iceoryx2 publisher: {e:?}"))?;
        let subscriber = iox_service(node, inbound)?
            .subscriber_builder()
            .create()
            .map_err(|e| format!("iceoryx2 subscriber: {e:?}"))?;
        Ok(Iox {
            publisher,
            subscriber,
            size,
        })
    }

    fn send(&self, round: u64) -> Result {
        let mut sample = self
            .publisher
            .loan_slice_uninit(self.size)
            .map_err(|e| format!("iceoryx2 loan: {e:?}"))?;
        // Filled in place, eight bytes at a time, as the other cases fill their messages.
        let payload = sample.payload_mut();
        let words = payload.len() / 8;
        let base = payload.as_mut_ptr().cast::<u8>();
        for k in 0..words {
            // SAFETY: word `k` lies inside the loaned payload of `size` bytes; unaligned
            // writes of plain bytes into it initialize it.
            unsafe {
                base.add(8 * k)
                    .cast::<[u8; 8]>()
                    .write_unaligned(round.to_le_bytes())
            };
        }
        // SAFETY: every byte was written above (sizes here are multiples of 8).
        let sample = unsafe { sample.assume_init() };
        sample.send().map_err(|e| format!("iceoryx2 send: {e:?}"))?;
        Ok(())
    }

    fn receive(&self) -> Result<u64> {
        loop {
            if let Some(sample) = self
                .subscriber
                .receive()
                .map_err(|e| format!("iceoryx2 receive: {e:?}"))?
            {
                return Ok(touch(sample.payload()));
            }
            std::hint::spin_loop();
        }
    }
}

fn child_iox(ping: &str, pong: &str, size: usize, rounds: u64) -> Result {
    pin(1);
    set_log_level(LogLevel::Error);
    let node = NodeBuilder::new()
        .create::<ipc::Service>()
        .map_err(|e| format!("iceoryx2 node: {e:?}"))?;
    let iox = Iox::new(&node, pong, ping, size)?;
    ready()?;
    for i in 1..=rounds {
        std::hint::black_box(iox.receive()?);
        iox.send(i)?;
    }
    Ok(())
}

fn iceoryx2(size: usize, rounds: usize) -> Result<Dist> {
    let id = std::process::id();
    let (ping, pong) = (
        format!("mmshare-bench/{id}/ping{size}"),
        format!("mmshare-bench/{id}/pong{size}"),
    );
    let node = NodeBuilder::new()
        .create::<ipc::Service>()
        .map_err(|e| format!("iceoryx2 node: {e:?}"))?;
    // Both services exist before the child opens them.
    let _ = iox_service(&node, &ping)?;
    let _ = iox_service(&node, &pong)?;
    let total = (rounds + rounds / 10) as u64;
    let mut child = spawn(&["__iox", &ping, &pong, &size.to_string(), &total.to_string()])?;
    wait_ready(&mut child)?;
    let iox = Iox::new(&node, &ping, &pong, size)?;
    // The child's subscriber may connect a moment after ours: let the ports see each other.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let r = one_way(rounds, |i| {
        iox.send(i)?;
        std::hint::black_box(iox.receive()?);
        Ok(())
    })?;
    finish(child)?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Unix socket

fn child_socket(path: &str, size: usize, rounds: u64) -> Result {
    pin(1);
    let mut s = UnixStream::connect(path).map_err(|e| e.to_string())?;
    let (mut buf, mut reply) = (vec![0u8; size], vec![0u8; size]);
    for i in 1..=rounds {
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        std::hint::black_box(touch(&buf));
        fill(&mut reply, i);
        s.write_all(&reply).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn socket(dir: &Path, size: usize, rounds: usize) -> Result<Dist> {
    socket_timed(dir, &format!("sock{size}"), size, rounds, 2.0)
}

/// The socket ping-pong on `dir/name`, each round trip divided by `per` (2: one-way; 1: an
/// RPC's whole round trip).
fn socket_timed(dir: &Path, name: &str, size: usize, rounds: usize, per: f64) -> Result<Dist> {
    let path = dir.join(name);
    let listener = UnixListener::bind(&path).map_err(|e| e.to_string())?;
    let total = (rounds + rounds / 10) as u64;
    let child = spawn(&[
        "__socket",
        path.to_str().expect("utf-8"),
        &size.to_string(),
        &total.to_string(),
    ])?;
    let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
    let (mut msg, mut buf) = (vec![0u8; size], vec![0u8; size]);
    let r = timed(rounds, per, |i| {
        fill(&mut msg, i);
        s.write_all(&msg).map_err(|e| e.to_string())?;
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        std::hint::black_box(touch(&buf));
        Ok(())
    })?;
    finish(child)?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Redis pub/sub

fn redis_client(socket: &str) -> Result<redis::Client> {
    redis::Client::open(format!("redis+unix://{socket}")).map_err(|e| format!("redis: {e}"))
}

fn redis_publish(conn: &mut redis::Connection, channel: &str, msg: &[u8]) -> Result {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(msg)
        .query::<i64>(conn)
        .map(|_| ())
        .map_err(|e| format!("redis PUBLISH: {e}"))
}

fn redis_receive(pubsub: &mut redis::PubSub<'_>) -> Result<u64> {
    let msg = pubsub
        .get_message()
        .map_err(|e| format!("redis message: {e}"))?;
    let payload: Vec<u8> = msg
        .get_payload()
        .map_err(|e| format!("redis payload: {e}"))?;
    Ok(touch(&payload))
}

fn child_redis(socket: &str, ping: &str, pong: &str, size: usize, rounds: u64) -> Result {
    pin(1);
    let client = redis_client(socket)?;
    let mut out = client.get_connection().map_err(|e| format!("redis: {e}"))?;
    let mut inbound = client.get_connection().map_err(|e| format!("redis: {e}"))?;
    let mut pubsub = inbound.as_pubsub();
    pubsub
        .subscribe(ping)
        .map_err(|e| format!("redis SUBSCRIBE: {e}"))?;
    ready()?;
    let mut reply = vec![0u8; size];
    for i in 1..=rounds {
        std::hint::black_box(redis_receive(&mut pubsub)?);
        fill(&mut reply, i);
        redis_publish(&mut out, pong, &reply)?;
    }
    Ok(())
}

/// Redis pub/sub between the two processes (each side blocks in a socket read: Redis has no
/// busy-wait receive), through a redis-server on a private Unix socket.
fn redis(socket: &str, size: usize, rounds: usize) -> Result<Dist> {
    let id = std::process::id();
    let (ping, pong) = (
        format!("mmshare-bench-{id}-ping{size}"),
        format!("mmshare-bench-{id}-pong{size}"),
    );
    let client = redis_client(socket)?;
    let mut out = client.get_connection().map_err(|e| format!("redis: {e}"))?;
    let mut inbound = client.get_connection().map_err(|e| format!("redis: {e}"))?;
    let mut pubsub = inbound.as_pubsub();
    pubsub
        .subscribe(&pong)
        .map_err(|e| format!("redis SUBSCRIBE: {e}"))?;
    let total = (rounds + rounds / 10) as u64;
    let mut child = spawn(&[
        "__redis",
        socket,
        &ping,
        &pong,
        &size.to_string(),
        &total.to_string(),
    ])?;
    wait_ready(&mut child)?;
    let mut msg = vec![0u8; size];
    let r = one_way(rounds, |i| {
        fill(&mut msg, i);
        redis_publish(&mut out, &ping, &msg)?;
        std::hint::black_box(redis_receive(&mut pubsub)?);
        Ok(())
    })?;
    drop(pubsub);
    finish(child)?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Blocking receive: a message every GAP to a receiver that sleeps in its API's blocking call;
// the message carries its send time (CLOCK_REALTIME ns, bytes 0..8), the receiver measures
// send -> its wake-up with the same clock.

/// Messages per blocking case, and the gap between them (long enough for the receiver to be
/// asleep when the next one comes).
const BLOCKING: usize = 1000;
const GAP: std::time::Duration = std::time::Duration::from_millis(2);

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn stamp(buf: &mut [u8]) {
    buf[..8].copy_from_slice(&now_ns().to_le_bytes());
}

fn stamped(buf: &[u8]) -> u64 {
    u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"))
}

/// The receiver's report: every wake-up latency in ns, on one line.
fn report_latencies(lat: &[f64]) -> Result {
    let mut out = std::io::stdout().lock();
    let line: Vec<String> = lat.iter().map(f64::to_string).collect();
    writeln!(out, "{}", line.join(" "))
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

fn parse_report(child: Child) -> Result<Dist> {
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("the receiver failed: {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<f64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    if nums.is_empty() {
        return Err(format!("the receiver said {text:?}"));
    }
    Ok(Dist::new(nums))
}

fn blocking_child(kind: &str, a: &str, b: &str, size: usize) -> Result {
    pin(1);
    let mut lat = Vec::with_capacity(BLOCKING);
    let timeout = std::time::Duration::from_secs(30);
    match kind {
        "stream" => {
            let sub = Subscriber::<u8>::open(a, Delivery::Lossless).map_err(|e| e.to_string())?;
            ready()?;
            for _ in 0..BLOCKING {
                let s = sub.receive_timeout(timeout).map_err(|e| e.to_string())?;
                lat.push(now_ns().saturating_sub(stamped(&s)) as f64);
                std::hint::black_box(touch(&s));
            }
        }
        "stream-async" => {
            // The same subscriber awaited from a tokio task (current-thread runtime): woken by
            // mmshare's waiter thread, not sleeping in the futex itself.
            let mut sub =
                Subscriber::<u8>::open(a, Delivery::Lossless).map_err(|e| e.to_string())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| e.to_string())?;
            ready()?;
            runtime.block_on(async {
                for _ in 0..BLOCKING {
                    let s = tokio::time::timeout(timeout, sub.recv())
                        .await
                        .map_err(|_| "no frame within the timeout".to_string())?
                        .map_err(|e| e.to_string())?;
                    lat.push(now_ns().saturating_sub(stamped(&s)) as f64);
                    std::hint::black_box(touch(&s));
                }
                Ok::<(), String>(())
            })?;
        }
        "array" => {
            let arr = Array::<u8>::open(a, Access::Read).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; size];
            ready()?;
            // An array keeps only the newest value: a reader woken after the next write has
            // come sees that one (one wake-up for two messages), so it runs to the last version.
            let mut seen = 0;
            while seen < BLOCKING as u64 {
                seen = arr
                    .wait_for_version(seen, timeout)
                    .map_err(|e| e.to_string())?;
                arr.read_into(&mut buf).map_err(|e| e.to_string())?;
                lat.push(now_ns().saturating_sub(stamped(&buf)) as f64);
                std::hint::black_box(touch(&buf));
            }
        }
        "iceoryx2" => {
            set_log_level(LogLevel::Error);
            let node = NodeBuilder::new()
                .create::<ipc::Service>()
                .map_err(|e| format!("iceoryx2 node: {e:?}"))?;
            let sub = iox_lossless(&node, a, 1)?
                .subscriber_builder()
                .create()
                .map_err(|e| format!("iceoryx2 subscriber: {e:?}"))?;
            let listener = iox_event(&node, b)?
                .listener_builder()
                .create()
                .map_err(|e| format!("iceoryx2 listener: {e:?}"))?;
            ready()?;
            let mut got = 0;
            while got < BLOCKING {
                listener
                    .blocking_wait(|_| {})
                    .map_err(|e| format!("iceoryx2 wait: {e:?}"))?;
                while let Some(s) = sub
                    .receive()
                    .map_err(|e| format!("iceoryx2 receive: {e:?}"))?
                {
                    lat.push(now_ns().saturating_sub(stamped(s.payload())) as f64);
                    std::hint::black_box(touch(s.payload()));
                    got += 1;
                }
            }
        }
        "socket" => {
            let mut s = UnixStream::connect(a).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; size];
            for _ in 0..BLOCKING {
                s.read_exact(&mut buf).map_err(|e| e.to_string())?;
                lat.push(now_ns().saturating_sub(stamped(&buf)) as f64);
                std::hint::black_box(touch(&buf));
            }
        }
        "redis" => {
            let client = redis_client(a)?;
            let mut conn = client.get_connection().map_err(|e| format!("redis: {e}"))?;
            let mut pubsub = conn.as_pubsub();
            pubsub
                .subscribe(b)
                .map_err(|e| format!("redis SUBSCRIBE: {e}"))?;
            ready()?;
            for _ in 0..BLOCKING {
                let msg = pubsub.get_message().map_err(|e| format!("redis: {e}"))?;
                let payload: Vec<u8> = msg.get_payload().map_err(|e| format!("redis: {e}"))?;
                lat.push(now_ns().saturating_sub(stamped(&payload)) as f64);
                std::hint::black_box(touch(&payload));
            }
        }
        other => return Err(format!("unknown blocking case {other}")),
    }
    report_latencies(&lat)
}

fn iox_event(
    node: &Node<ipc::Service>,
    name: &str,
) -> Result<iceoryx2::service::port_factory::event::PortFactory<ipc::Service>> {
    node.service_builder(&ServiceName::new(name).map_err(|e| format!("{e:?}"))?)
        .event()
        .max_notifiers(1)
        .max_listeners(1)
        .open_or_create()
        .map_err(|e| format!("iceoryx2 event {name}: {e:?}"))
}

/// Sends BLOCKING stamped messages of `size`, GAP apart, with `send`.
fn send_spaced(size: usize, mut send: impl FnMut(&mut [u8]) -> Result) -> Result {
    let mut msg = vec![0u8; size];
    for i in 0..BLOCKING as u64 {
        std::thread::sleep(GAP);
        fill(&mut msg, i);
        stamp(&mut msg);
        send(&mut msg)?;
    }
    Ok(())
}

fn blocking(
    dir: &Path,
    redis_socket: Option<&str>,
    size: usize,
) -> Result<Vec<(&'static str, Dist)>> {
    let mut rows = Vec::new();
    // mmshare stream, received by a blocking call, then awaited in a tokio task.
    for (kind, label) in [
        ("stream", "mmshare stream (receive_timeout)"),
        ("stream-async", "mmshare stream (async recv, tokio)"),
    ] {
        let path = stream_path(dir, &format!("b{kind}{size}"), size)?;
        let mut publisher = Publisher::<u8>::open(&path).map_err(|e| e.to_string())?;
        let mut child = spawn(&[
            "__blocking",
            kind,
            path.to_str().expect("utf-8"),
            "-",
            &size.to_string(),
        ])?;
        wait_ready(&mut child)?;
        send_spaced(size, |msg| {
            let mut loan = publisher.loan().map_err(|e| e.to_string())?;
            loan.copy_from_slice(msg);
            loan.publish();
            Ok(())
        })?;
        rows.push((label, parse_report(child)?));
    }
    // mmshare array.
    let (path, _) = create_array_file(
        dir,
        &ArraySpec::new(format!("barray{size}"), DType::U8, vec![size as u64]),
    )
    .map_err(|e| e.to_string())?;
    let writer = Array::<u8>::open(&path, Access::Write).map_err(|e| e.to_string())?;
    let mut child = spawn(&[
        "__blocking",
        "array",
        path.to_str().expect("utf-8"),
        "-",
        &size.to_string(),
    ])?;
    wait_ready(&mut child)?;
    send_spaced(size, |msg| {
        writer.write_all(msg).map(|_| ()).map_err(|e| e.to_string())
    })?;
    rows.push((
        "mmshare array (wait_for_version + read)",
        parse_report(child)?,
    ));
    // iceoryx2: publish-subscribe plus an event service to wake the listener.
    set_log_level(LogLevel::Error);
    let id = std::process::id();
    let (data, event) = (
        format!("mmshare-bench/{id}/bdata{size}"),
        format!("mmshare-bench/{id}/bevent{size}"),
    );
    let node = NodeBuilder::new()
        .create::<ipc::Service>()
        .map_err(|e| format!("iceoryx2 node: {e:?}"))?;
    // Lossless (no safe overflow, buffer 8): a receiver woken late must still get every
    // message, or it would wait for ever for the ones overwritten.
    let service = iox_lossless(&node, &data, 1)?;
    let notifier = iox_event(&node, &event)?
        .notifier_builder()
        .create()
        .map_err(|e| format!("iceoryx2 notifier: {e:?}"))?;
    let publisher = service
        .publisher_builder()
        .initial_max_slice_len(size)
        .create()
        .map_err(|e| format!("iceoryx2 publisher: {e:?}"))?;
    let mut child = spawn(&["__blocking", "iceoryx2", &data, &event, &size.to_string()])?;
    wait_ready(&mut child)?;
    std::thread::sleep(std::time::Duration::from_millis(100));
    send_spaced(size, |msg| {
        let sample = publisher
            .loan_slice_uninit(size)
            .map_err(|e| format!("iceoryx2 loan: {e:?}"))?;
        sample
            .write_from_slice(msg)
            .send()
            .map_err(|e| format!("iceoryx2 send: {e:?}"))?;
        notifier
            .notify()
            .map_err(|e| format!("iceoryx2 notify: {e:?}"))?;
        Ok(())
    })?;
    rows.push((
        "iceoryx2 0.10 (event listener blocking_wait + receive)",
        parse_report(child)?,
    ));
    // Unix socket.
    let path = dir.join(format!("bsock{size}"));
    let listener = UnixListener::bind(&path).map_err(|e| e.to_string())?;
    let child = spawn(&[
        "__blocking",
        "socket",
        path.to_str().expect("utf-8"),
        "-",
        &size.to_string(),
    ])?;
    let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
    send_spaced(size, |msg| s.write_all(msg).map_err(|e| e.to_string()))?;
    rows.push(("Unix socket (blocking read)", parse_report(child)?));
    // Redis.
    if let Some(socket) = redis_socket {
        let channel = format!("mmshare-bench-{id}-blocking{size}");
        let client = redis_client(socket)?;
        let mut conn = client.get_connection().map_err(|e| format!("redis: {e}"))?;
        let mut child = spawn(&["__blocking", "redis", socket, &channel, &size.to_string()])?;
        wait_ready(&mut child)?;
        send_spaced(size, |msg| redis_publish(&mut conn, &channel, msg))?;
        rows.push(("Redis pub/sub", parse_report(child)?));
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Throughput: frames to N consumer processes, each reading every byte of every frame; nobody
// waits for an ack, so producer and consumers overlap as a pipeline does. frames/s = frames /
// (first publish .. last consumer done).

fn consumer_child(kind: &str, a: &str, b: &str, size: usize, frames: u64, cpu: usize) -> Result {
    pin(cpu);
    let mut buf = vec![0u8; size];
    let mut sum = 0u64;
    match kind {
        "stream" | "stream-copy" => {
            let sub = Subscriber::<u8>::attach(
                mmshare::StreamFiles::open(a, false).map_err(|e| e.to_string())?,
                mmshare::SubscribeOptions::new(Delivery::Lossless).max_held(1),
            )
            .map_err(|e| e.to_string())?;
            ready()?;
            for _ in 0..frames {
                let s = sub
                    .receive_timeout(std::time::Duration::from_secs(30))
                    .map_err(|e| e.to_string())?;
                if kind == "stream" {
                    sum = sum.wrapping_add(touch(&s));
                } else {
                    s.copy_to(&mut buf);
                    sum = sum.wrapping_add(touch(&buf));
                }
            }
        }
        "iceoryx2" => {
            set_log_level(LogLevel::Error);
            let node = NodeBuilder::new()
                .create::<ipc::Service>()
                .map_err(|e| format!("iceoryx2 node: {e:?}"))?;
            let sub = iox_lossless(&node, a, b.parse().unwrap_or(1))?
                .subscriber_builder()
                .create()
                .map_err(|e| format!("iceoryx2 subscriber: {e:?}"))?;
            ready()?;
            let mut got = 0;
            while got < frames {
                match sub
                    .receive()
                    .map_err(|e| format!("iceoryx2 receive: {e:?}"))?
                {
                    Some(s) => {
                        sum = sum.wrapping_add(touch(s.payload()));
                        got += 1;
                    }
                    // More consumers than CPUs: let the others run.
                    None => std::thread::yield_now(),
                }
            }
        }
        "zenoh" => sum = zenoh_shm::consumer(a, frames)?,
        "redis" => {
            // `a` is the server's socket, `b` the key prefix; frame i is the value of `b:i`.
            let mut conn = redis_client(a)?
                .get_connection()
                .map_err(|e| format!("redis: {e}"))?;
            ready()?;
            for i in 0..frames {
                let key = format!("{b}:{i}");
                loop {
                    let value: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&key)
                        .query(&mut conn)
                        .map_err(|e| format!("redis GET: {e}"))?;
                    match value {
                        Some(v) => {
                            sum = sum.wrapping_add(touch(&v));
                            break;
                        }
                        // Not set yet: poll again after letting the producer and server run.
                        None => std::thread::yield_now(),
                    }
                }
            }
        }
        "socket" => {
            let mut s = UnixStream::connect(a).map_err(|e| e.to_string())?;
            for _ in 0..frames {
                s.read_exact(&mut buf).map_err(|e| e.to_string())?;
                sum = sum.wrapping_add(touch(&buf));
            }
        }
        other => return Err(format!("unknown consumer {other}")),
    }
    std::hint::black_box(sum);
    Ok(())
}

/// A lossless iceoryx2 service for `consumers` subscribers: no safe overflow (the publisher
/// retries until delivered when a subscriber's buffer is full), buffer 8.
fn iox_lossless(
    node: &Node<ipc::Service>,
    name: &str,
    consumers: usize,
) -> Result<iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>>
{
    node.service_builder(&ServiceName::new(name).map_err(|e| format!("{e:?}"))?)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(consumers)
        .history_size(0)
        .subscriber_max_buffer_size(8)
        .enable_safe_overflow(false)
        .open_or_create()
        .map_err(|e| format!("iceoryx2 service {name}: {e:?}"))
}

/// Consumers `first..first + n`, consumer `i` pinned to CPU `1 + i` (modulo the CPUs).
fn spawn_consumers(
    kind: &str,
    (a, b): (&str, &str),
    size: usize,
    frames: usize,
    first: usize,
    n: usize,
) -> Result<Vec<Child>> {
    (first..first + n)
        .map(|i| {
            spawn(&[
                "__consumer",
                kind,
                a,
                b,
                &size.to_string(),
                &frames.to_string(),
                &(1 + i).to_string(),
            ])
        })
        .collect()
}

fn throughput(
    dir: &Path,
    redis_socket: Option<&str>,
    kind: &str,
    size: usize,
    frames: usize,
    n: usize,
) -> Result<f64> {
    if kind == "zenoh" {
        return zenoh_shm::throughput(dir, size, frames, n, 0);
    }
    let tag = format!("{kind}{size}x{n}");
    let start;
    let children;
    match kind {
        "stream" | "stream-copy" => {
            let mut spec = StreamSpec::new(format!("t{tag}"), DType::U8, vec![size as u64]);
            spec.slots = 8;
            let path = create_stream_files(dir, &spec)
                .map_err(|e| e.to_string())?
                .0;
            let mut publisher = Publisher::<u8>::open(&path).map_err(|e| e.to_string())?;
            let mut cs = spawn_consumers(
                kind,
                (path.to_str().expect("utf-8"), "-"),
                size,
                frames,
                0,
                n,
            )?;
            for c in &mut cs {
                wait_ready(c)?;
            }
            start = Instant::now();
            for i in 0..frames as u64 {
                let mut loan = publisher.loan().map_err(|e| e.to_string())?;
                fill(&mut loan, i);
                loan.publish();
            }
            children = cs;
        }
        "iceoryx2" => {
            set_log_level(LogLevel::Error);
            let name = format!("mmshare-bench/{}/t{tag}", std::process::id());
            let node = NodeBuilder::new()
                .create::<ipc::Service>()
                .map_err(|e| format!("iceoryx2 node: {e:?}"))?;
            let service = iox_lossless(&node, &name, n)?;
            let publisher = service
                .publisher_builder()
                .initial_max_slice_len(size)
                .max_loaned_samples(1)
                .create()
                .map_err(|e| format!("iceoryx2 publisher: {e:?}"))?;
            let mut cs = spawn_consumers(kind, (&name, &n.to_string()), size, frames, 0, n)?;
            for c in &mut cs {
                wait_ready(c)?;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            start = Instant::now();
            for i in 0..frames as u64 {
                let mut sample = publisher
                    .loan_slice_uninit(size)
                    .map_err(|e| format!("iceoryx2 loan: {e:?}"))?;
                let payload = sample.payload_mut();
                let base = payload.as_mut_ptr().cast::<u8>();
                for k in 0..size / 8 {
                    // SAFETY: word `k` lies inside the loaned payload of `size` bytes.
                    unsafe {
                        base.add(8 * k)
                            .cast::<[u8; 8]>()
                            .write_unaligned(i.to_le_bytes())
                    };
                }
                // SAFETY: every byte was written above (sizes here are multiples of 8).
                let sample = unsafe { sample.assume_init() };
                sample.send().map_err(|e| format!("iceoryx2 send: {e:?}"))?;
            }
            children = cs;
        }
        "redis" => {
            // Frame i is SET as its own key; each consumer GETs the keys in order, polling
            // until the next one exists. The keys are deleted (FLUSHDB) once all are read.
            let socket = redis_socket.ok_or("no Redis server")?;
            let mut conn = redis_client(socket)?
                .get_connection()
                .map_err(|e| format!("redis: {e}"))?;
            let prefix = format!("mmshare-bench-{}-{tag}", std::process::id());
            let mut cs = spawn_consumers(kind, (socket, &prefix), size, frames, 0, n)?;
            for c in &mut cs {
                wait_ready(c)?;
            }
            let mut msg = vec![0u8; size];
            start = Instant::now();
            for i in 0..frames as u64 {
                fill(&mut msg, i);
                redis::cmd("SET")
                    .arg(format!("{prefix}:{i}"))
                    .arg(&msg)
                    .query::<()>(&mut conn)
                    .map_err(|e| format!("redis SET: {e}"))?;
            }
            for c in cs {
                finish(c)?;
            }
            let fps = frames as f64 / start.elapsed().as_secs_f64();
            redis::cmd("FLUSHDB")
                .query::<()>(&mut conn)
                .map_err(|e| format!("redis FLUSHDB: {e}"))?;
            return Ok(fps);
        }
        "socket" => {
            let mut sockets = Vec::new();
            let mut cs = Vec::new();
            for i in 0..n {
                let path = dir.join(format!("t{tag}-{i}.sock"));
                let listener = UnixListener::bind(&path).map_err(|e| e.to_string())?;
                // Consumer i on its own CPU as in the other cases (1 + i, modulo the CPUs).
                cs.extend(spawn_consumers(
                    kind,
                    (path.to_str().expect("utf-8"), "-"),
                    size,
                    frames,
                    i,
                    1,
                )?);
                sockets.push(listener.accept().map_err(|e| e.to_string())?.0);
            }
            let mut msg = vec![0u8; size];
            start = Instant::now();
            for i in 0..frames as u64 {
                fill(&mut msg, i);
                for s in &mut sockets {
                    s.write_all(&msg).map_err(|e| e.to_string())?;
                }
            }
            children = cs;
        }
        other => return Err(format!("unknown case {other}")),
    }
    for c in children {
        finish(c)?;
    }
    Ok(frames as f64 / start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Reader scaling: N reader processes take consistent copies of one 4 KiB array as fast as they
// can while a writer process rewrites it 10 000 times a second: mmshare's seqlock (readers
// never write shared memory) against a process-shared POSIX rwlock (readers take the lock,
// which writes its cache line).

const SCALE_BYTES: usize = 4096;
const WRITER_HZ: f64 = 10_000.0;

/// A file holding a process-shared `pthread_rwlock_t` (offset 0) and the data (offset 4096).
fn rwlock_map(path: &Path) -> Result<memmap2::MmapMut> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    // SAFETY: a private benchmark file; the lock is used only through pthread calls and the
    // data only under the lock.
    unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(|e| e.to_string())
}

fn rwlock_of(map: &mut memmap2::MmapMut) -> *mut libc::pthread_rwlock_t {
    map.as_mut_ptr().cast()
}

fn rwlock_init(path: &Path) -> Result {
    std::fs::write(path, vec![0u8; 4096 + SCALE_BYTES]).map_err(|e| e.to_string())?;
    let mut map = rwlock_map(path)?;
    // SAFETY: the attribute and the lock live in valid memory (a local and the page-aligned
    // start of the mapping, larger than pthread_rwlock_t); initialized once, before any user.
    unsafe {
        let mut attr: libc::pthread_rwlockattr_t = std::mem::zeroed();
        libc::pthread_rwlockattr_init(&mut attr);
        libc::pthread_rwlockattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
        let rc = libc::pthread_rwlock_init(rwlock_of(&mut map), &attr);
        libc::pthread_rwlockattr_destroy(&mut attr);
        if rc != 0 {
            return Err(format!("pthread_rwlock_init: {rc}"));
        }
    }
    map.flush().map_err(|e| e.to_string())
}

/// Runs for `secs`; prints how many operations it made.
fn scale_child(kind: &str, role: &str, path: &str, secs: f64, cpu: usize) -> Result {
    pin(cpu);
    let deadline = Instant::now() + std::time::Duration::from_secs_f64(secs);
    let mut ops = 0u64;
    let mut buf = vec![0u8; SCALE_BYTES];
    match (kind, role) {
        ("seqlock", "writer") => {
            let a = Array::<u8>::open(path, Access::Write).map_err(|e| e.to_string())?;
            let period = std::time::Duration::from_secs_f64(1.0 / WRITER_HZ);
            let start = Instant::now();
            ready()?;
            while Instant::now() < deadline {
                fill(&mut buf, ops);
                a.write_all(&buf).map_err(|e| e.to_string())?;
                ops += 1;
                if let Some(wait) = period.mul_f64(ops as f64).checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        ("seqlock", "reader") => {
            let a = Array::<u8>::open(path, Access::Read).map_err(|e| e.to_string())?;
            ready()?;
            while Instant::now() < deadline {
                a.read_into(&mut buf).map_err(|e| e.to_string())?;
                std::hint::black_box(touch(&buf));
                ops += 1;
            }
        }
        ("rwlock", role) => {
            let mut map = rwlock_map(Path::new(path))?;
            let lock = rwlock_of(&mut map);
            // SAFETY: the data page follows the lock's page inside the mapping.
            let data = unsafe { map.as_mut_ptr().add(4096) };
            let period = std::time::Duration::from_secs_f64(1.0 / WRITER_HZ);
            let start = Instant::now();
            ready()?;
            while Instant::now() < deadline {
                if role == "writer" {
                    fill(&mut buf, ops);
                    // SAFETY: an initialized process-shared lock; the data is written only
                    // under its write lock.
                    unsafe {
                        libc::pthread_rwlock_wrlock(lock);
                        std::ptr::copy_nonoverlapping(buf.as_ptr(), data, SCALE_BYTES);
                        libc::pthread_rwlock_unlock(lock);
                    }
                    ops += 1;
                    if let Some(wait) = period.mul_f64(ops as f64).checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                } else {
                    // SAFETY: as above; read only under the read lock.
                    unsafe {
                        libc::pthread_rwlock_rdlock(lock);
                        std::ptr::copy_nonoverlapping(data, buf.as_mut_ptr(), SCALE_BYTES);
                        libc::pthread_rwlock_unlock(lock);
                    }
                    std::hint::black_box(touch(&buf));
                    ops += 1;
                }
            }
        }
        other => return Err(format!("unknown scaling role {other:?}")),
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ops}")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

fn ops_of(child: Child) -> Result<u64> {
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("a scaling process failed: {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("a scaling process said {text:?}"))
}

/// One case: the writer and `readers` readers for `secs`; (reads/s in all, writes/s).
fn scaling(dir: &Path, kind: &str, readers: usize, secs: f64, cpus: usize) -> Result<(f64, f64)> {
    let path = if kind == "seqlock" {
        create_array_file(
            dir,
            &ArraySpec::new(
                format!("scale-{readers}"),
                DType::U8,
                vec![SCALE_BYTES as u64],
            ),
        )
        .map_err(|e| e.to_string())?
        .0
    } else {
        let path = dir.join(format!("scale-rwlock-{readers}"));
        rwlock_init(&path)?;
        path
    };
    let p = path.to_str().expect("utf-8");
    let s = secs.to_string();
    let mut children = vec![spawn(&["__scale", kind, "writer", p, &s, "0"])?];
    for i in 0..readers {
        children.push(spawn(&[
            "__scale",
            kind,
            "reader",
            p,
            &s,
            &((1 + i) % cpus).to_string(),
        ])?);
    }
    for c in &mut children {
        wait_ready(c)?;
    }
    let mut counts = Vec::new();
    for c in children {
        counts.push(ops_of(c)?);
    }
    let writes = counts[0] as f64 / secs;
    let reads: u64 = counts[1..].iter().sum();
    Ok((reads as f64 / secs, writes))
}

// ---------------------------------------------------------------------------------------------

fn size_text(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn us(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.0} µs", ns / 1e3)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// One progress line on standard error (the tables are written by `report.py` from the JSON).
fn progress(section: &str, size: usize, case: &str, figure: &str) {
    eprintln!("{section:<11} {:>7}  {case:<48} {figure}", size_text(size));
}

fn latency_figure(d: &Dist) -> String {
    format!(
        "p50 {}  p99 {}  p99.9 {}",
        us(d.at(0.5)),
        us(d.at(0.99)),
        us(d.at(0.999))
    )
}

// ---------------------------------------------------------------------------------------------
// Request → response round trips
//
// The requester (this process, CPU 0) fills a request of the size and sends it; the server
// (a child, CPU 1) receives it, reads every byte, fills a response of the same size and sends
// it back to that requester; the requester receives it and reads every byte. The figure is
// the whole round trip (not halved). Both sides busy-poll:
// - mmshare service (one requester, one server, rings of 4, through a daemon this run starts):
//   `Requester::loan` + fill in place + `send` / `Server::try_receive`, `loan_response` + fill
//   + `send` / `Requester::try_receive` + read in place;
// - iceoryx2 0.10 request-response (one client, one server, one active request, response
//   buffer 1): `loan_slice_uninit` + fill + `send` / `Server::receive`, `loan_slice_uninit` +
//   fill + `send` / `PendingResponse::receive`;
// - a Unix stream socket: the request written, the response read (`write_all` / `read_exact`).

/// A daemon of this run's own (for the cases that go through one), killed on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Result<Daemon> {
        let exe = std::env::var_os("MMSHARE_BENCH_DAEMON").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/mmshared"),
            PathBuf::from,
        );
        let socket = dir.join("mmshared.sock");
        let child = Command::new(&exe)
            .arg("--socket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir.join("daemon-data"))
            .arg("--mem-dir")
            .arg(dir.join("daemon-mem"))
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let start = Instant::now();
        while mmshare::Client::connect(&socket).is_err() {
            if start.elapsed().as_secs() > 30 {
                return Err("the daemon did not come up".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(Daemon { child, socket })
    }

    fn client(&self) -> Result<mmshare::Client> {
        mmshare::Client::connect(&self.socket).map_err(|e| e.to_string())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Times `rounds` round trips of `round` after a tenth as many unmeasured; whole round trips.
fn round_trips(rounds: usize, round: impl FnMut(u64) -> Result) -> Result<Dist> {
    timed(rounds, 1.0, round)
}

fn service_err(e: mmshare::ServiceError) -> String {
    e.to_string()
}

fn child_rpc_mmshare(socket: &str, name: &str, rounds: u64) -> Result {
    pin(1);
    let client = mmshare::Client::connect(socket).map_err(|e| e.to_string())?;
    let server = client.server_bytes(name).map_err(service_err)?;
    ready()?;
    for i in 1..=rounds {
        let request = loop {
            if let Some(r) = server.try_receive().map_err(service_err)? {
                break r;
            }
            std::hint::spin_loop();
        };
        std::hint::black_box(touch(&request));
        let mut response = server.loan_response(&request).map_err(service_err)?;
        fill(&mut response, i);
        response.send().map_err(service_err)?;
    }
    Ok(())
}

fn rpc_mmshare(daemon: &Daemon, size: usize, rounds: usize) -> Result<Dist> {
    let client = daemon.client()?;
    let name = format!("bench.rpc{size}");
    client
        .create_service(
            &mmshare::ServiceOptions::new(
                name.as_str(),
                "u1",
                &[size as u64],
                "u1",
                &[size as u64],
            )
            .max_requesters(1)
            .max_servers(1)
            .memory(),
        )
        .map_err(|e| e.to_string())?;
    let total = (rounds + rounds / 10) as u64;
    let sock = daemon.socket.to_str().expect("utf-8");
    let mut child = spawn(&["__rpc_mmshare", sock, &name, &total.to_string()])?;
    wait_ready(&mut child)?;
    let mut requester = client.requester_bytes(&name).map_err(service_err)?;
    let r = round_trips(rounds, |i| {
        let mut request = requester.loan().map_err(service_err)?;
        fill(&mut request, i);
        request.send().map_err(service_err)?;
        let response = loop {
            if let Some(r) = requester.try_receive().map_err(service_err)? {
                break r;
            }
            std::hint::spin_loop();
        };
        std::hint::black_box(touch(&response));
        Ok(())
    })?;
    drop(requester);
    finish(child)?;
    let _ = client.delete_service(&name);
    Ok(r)
}

type IoxRpc = iceoryx2::service::port_factory::request_response::PortFactory<
    ipc::Service,
    [u8],
    (),
    [u8],
    (),
>;

fn iox_rpc_service(node: &Node<ipc::Service>, name: &str) -> Result<IoxRpc> {
    node.service_builder(&ServiceName::new(name).map_err(|e| format!("{e:?}"))?)
        .request_response::<[u8], [u8]>()
        .max_clients(1)
        .max_servers(1)
        .max_active_requests_per_client(1)
        .max_response_buffer_size(1)
        .open_or_create()
        .map_err(|e| format!("iceoryx2 service {name}: {e:?}"))
}

/// Fills an uninitialized iceoryx2 payload eight bytes at a time, as `fill` does.
fn fill_uninit(payload: &mut [core::mem::MaybeUninit<u8>], round: u64) {
    let base = payload.as_mut_ptr().cast::<u8>();
    for k in 0..payload.len() / 8 {
        // SAFETY: word `k` lies inside the payload; unaligned writes of plain bytes into it
        // initialize it.
        unsafe {
            base.add(8 * k)
                .cast::<[u8; 8]>()
                .write_unaligned(round.to_le_bytes())
        };
    }
}

fn child_rpc_iox(name: &str, size: usize, rounds: u64) -> Result {
    pin(1);
    set_log_level(LogLevel::Error);
    let node = NodeBuilder::new()
        .create::<ipc::Service>()
        .map_err(|e| format!("iceoryx2 node: {e:?}"))?;
    let server = iox_rpc_service(&node, name)?
        .server_builder()
        .initial_max_slice_len(size)
        .create()
        .map_err(|e| format!("iceoryx2 server: {e:?}"))?;
    ready()?;
    for i in 1..=rounds {
        let active = loop {
            if let Some(a) = server
                .receive()
                .map_err(|e| format!("iceoryx2 receive: {e:?}"))?
            {
                break a;
            }
            std::hint::spin_loop();
        };
        std::hint::black_box(touch(active.payload()));
        let mut response = active
            .loan_slice_uninit(size)
            .map_err(|e| format!("iceoryx2 loan: {e:?}"))?;
        fill_uninit(response.payload_mut(), i);
        // SAFETY: every byte was written above (sizes here are multiples of 8).
        let response = unsafe { response.assume_init() };
        response
            .send()
            .map_err(|e| format!("iceoryx2 send: {e:?}"))?;
    }
    Ok(())
}

fn rpc_iox(size: usize, rounds: usize) -> Result<Dist> {
    let name = format!("mmshare-bench/{}/rpc{size}", std::process::id());
    let node = NodeBuilder::new()
        .create::<ipc::Service>()
        .map_err(|e| format!("iceoryx2 node: {e:?}"))?;
    let service = iox_rpc_service(&node, &name)?;
    let total = (rounds + rounds / 10) as u64;
    let mut child = spawn(&["__rpc_iox", &name, &size.to_string(), &total.to_string()])?;
    wait_ready(&mut child)?;
    let client = service
        .client_builder()
        .initial_max_slice_len(size)
        .create()
        .map_err(|e| format!("iceoryx2 client: {e:?}"))?;
    // Let the ports see each other.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let r = round_trips(rounds, |i| {
        let mut request = client
            .loan_slice_uninit(size)
            .map_err(|e| format!("iceoryx2 loan: {e:?}"))?;
        fill_uninit(request.payload_mut(), i);
        // SAFETY: every byte was written above.
        let request = unsafe { request.assume_init() };
        let pending = request
            .send()
            .map_err(|e| format!("iceoryx2 send: {e:?}"))?;
        loop {
            if let Some(response) = pending
                .receive()
                .map_err(|e| format!("iceoryx2 receive: {e:?}"))?
            {
                std::hint::black_box(touch(response.payload()));
                return Ok(());
            }
            std::hint::spin_loop();
        }
    })?;
    finish(child)?;
    Ok(r)
}

fn rpc_socket(dir: &Path, size: usize, rounds: usize) -> Result<Dist> {
    socket_timed(dir, &format!("rpc{size}"), size, rounds, 1.0)
}

// ---------------------------------------------------------------------------------------------
// Fan-in: several publisher processes into one lossless subscriber
//
// N publisher processes (on CPUs 1, 2, ..., or where the scheduler puts them when there are
// fewer CPUs beside the subscriber's than publishers) each publish
// `frames` frames of 4 KiB, filled in place, as fast as the one lossless subscriber (this
// process, CPU 0) takes them; the subscriber reads every byte of every frame, and yields its
// CPU when no ring has a frame. The figure is frames per second over
// all publishers, from the moment they are told to start (a file they wait for) to the last
// frame taken:
// - mmshare stream created with `max_publishers` N (one ring per publisher), lossless
//   subscriber holding one sample at a time;
// - iceoryx2 0.10 publish-subscribe with `max_publishers` N, a lossless subscriber (buffer 8,
//   no safe overflow, publishers blocking when it is full).

fn wait_go(go: &str) {
    while !Path::new(go).exists() {
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

fn child_fan_in(kind: &str, path: &str, go: &str, frames: u64, cpu: usize) -> Result {
    // Pinned only where each publisher has a CPU of its own beside the subscriber's: several
    // publishers pinned to one CPU starve each other (iceoryx2's then hang for good).
    // Otherwise free to run on every CPU (not the parent's pin to CPU 0, which a spawned
    // child inherits).
    if cpu != 0 {
        pin(cpu);
    } else {
        let mut every = rustix::thread::CpuSet::new();
        for c in 0..cpus().min(rustix::thread::CpuSet::MAX_CPU) {
            every.set(c);
        }
        let _ = rustix::thread::sched_setaffinity(None, &every);
    }
    const SIZE: usize = 4096;
    match kind {
        "stream" => {
            let mut publisher = Publisher::<u8>::open(path).map_err(|e| e.to_string())?;
            ready()?;
            wait_go(go);
            for i in 1..=frames {
                let mut loan = publisher.loan().map_err(|e| e.to_string())?;
                fill(&mut loan, i);
                loan.publish();
            }
        }
        _ => {
            set_log_level(LogLevel::Error);
            let node = NodeBuilder::new()
                .create::<ipc::Service>()
                .map_err(|e| format!("iceoryx2 node: {e:?}"))?;
            let publisher = iox_fan_in(&node, path, 4)?
                .publisher_builder()
                .initial_max_slice_len(SIZE)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .map_err(|e| format!("iceoryx2 publisher: {e:?}"))?;
            // Connected to the subscriber before the first frame (a frame sent before the
            // publisher sees it reaches nobody).
            iceoryx2::port::update_connections::UpdateConnections::update_connections(&publisher)
                .map_err(|e| format!("iceoryx2 connections: {e:?}"))?;
            ready()?;
            wait_go(go);
            for i in 1..=frames {
                let mut sample = publisher
                    .loan_slice_uninit(SIZE)
                    .map_err(|e| format!("iceoryx2 loan: {e:?}"))?;
                fill_uninit(sample.payload_mut(), i);
                // SAFETY: every byte was written above.
                let sample = unsafe { sample.assume_init() };
                sample.send().map_err(|e| format!("iceoryx2 send: {e:?}"))?;
            }
            // iceoryx2's samples live in the publisher's memory: stay until they are taken.
            wait_go(&format!("{go}.done"));
        }
    }
    Ok(())
}

fn iox_fan_in(
    node: &Node<ipc::Service>,
    name: &str,
    publishers: usize,
) -> Result<iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>>
{
    node.service_builder(&ServiceName::new(name).map_err(|e| format!("{e:?}"))?)
        .publish_subscribe::<[u8]>()
        .max_publishers(publishers)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(8)
        .enable_safe_overflow(false)
        .open_or_create()
        .map_err(|e| format!("iceoryx2 service {name}: {e:?}"))
}

fn fan_in(dir: &Path, kind: &str, publishers: usize, frames: usize) -> Result<f64> {
    const SIZE: usize = 4096;
    let go = dir.join(format!("go-{kind}-{publishers}"));
    let _ = std::fs::remove_file(&go);
    let _ = std::fs::remove_file(dir.join(format!("go-{kind}-{publishers}.done")));
    let (name, take): (String, Box<dyn FnMut() -> Result<bool>>) = if kind == "stream" {
        let mut spec = StreamSpec::new(format!("fan{publishers}"), DType::U8, vec![SIZE as u64]);
        spec.slots = 8;
        spec.max_publishers = publishers as u32;
        let (path, _) = create_stream_files(dir, &spec).map_err(|e| e.to_string())?;
        let subscriber = Subscriber::<u8>::open(
            &path,
            mmshare::SubscribeOptions::new(Delivery::Lossless).max_held(1),
        )
        .map_err(|e| e.to_string())?;
        let take = move || -> Result<bool> {
            match subscriber.receive().map_err(|e| e.to_string())? {
                Some(sample) => {
                    std::hint::black_box(touch(&sample));
                    Ok(true)
                }
                None => Ok(false),
            }
        };
        (path.to_str().expect("utf-8").to_owned(), Box::new(take))
    } else {
        let name = format!("mmshare-bench/{}/fan{publishers}", std::process::id());
        let node = NodeBuilder::new()
            .create::<ipc::Service>()
            .map_err(|e| format!("iceoryx2 node: {e:?}"))?;
        let subscriber = iox_fan_in(&node, &name, 4)?
            .subscriber_builder()
            .create()
            .map_err(|e| format!("iceoryx2 subscriber: {e:?}"))?;
        let take = move || -> Result<bool> {
            let _node = &node;
            match subscriber
                .receive()
                .map_err(|e| format!("iceoryx2 receive: {e:?}"))?
            {
                Some(sample) => {
                    std::hint::black_box(touch(sample.payload()));
                    Ok(true)
                }
                None => {
                    // A publisher that came after our last look is connected here (as
                    // iceoryx2's own examples do between receives).
                    iceoryx2::port::update_connections::UpdateConnections::update_connections(
                        &subscriber,
                    )
                    .map_err(|e| format!("iceoryx2 connections: {e:?}"))?;
                    Ok(false)
                }
            }
        };
        (name, Box::new(take))
    };
    let mut take = take;
    // A case that hangs (a child that never says it is ready, or never exits) is killed after
    // 90 s and reported as not finished, rather than hanging the run.
    let pids = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let (pids, finished) = (pids.clone(), finished.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !finished.load(Ordering::Relaxed) {
                if start.elapsed().as_secs() > 90 {
                    for &pid in pids.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                        // SAFETY: kill(2) on a child of ours (a plain system call).
                        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    }
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    let outcome = fan_in_run(&mut take, kind, &name, &go, dir, publishers, frames, &pids);
    finished.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    if outcome.is_err() {
        // A case that failed leaves no publisher behind to take CPU time from the next ones.
        for &pid in pids.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            // SAFETY: kill(2) on a child of ours (a plain system call).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    outcome
}

/// The timed part of [`fan_in`]: the publisher processes, the start signal, the frames.
#[allow(clippy::too_many_arguments)]
fn fan_in_run(
    take: &mut dyn FnMut() -> Result<bool>,
    kind: &str,
    name: &str,
    go: &Path,
    dir: &Path,
    publishers: usize,
    frames: usize,
    pids: &std::sync::Mutex<Vec<u32>>,
) -> Result<f64> {
    let cpus = cpus();
    let total = publishers * frames;
    let mut children = Vec::new();
    for k in 0..publishers {
        // A CPU of its own beside the subscriber's, or (0) left to the scheduler when there
        // are not enough.
        let cpu = if publishers < cpus { 1 + k } else { 0 };
        let mut child = spawn(&[
            "__fan_in",
            kind,
            name,
            go.to_str().expect("utf-8"),
            &frames.to_string(),
            &cpu.to_string(),
        ])?;
        pids.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child.id());
        wait_ready(&mut child)?;
        children.push(child);
    }
    // iceoryx2's ports connect a moment after they are made.
    std::thread::sleep(std::time::Duration::from_millis(100));
    std::fs::write(go, b"").map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut got = 0;
    while got < total {
        if start.elapsed().as_secs() > 60 {
            return Err(format!("{got} of {total} frames came within 60 s"));
        }
        if take()? {
            got += 1;
        } else {
            // Nothing in any ring: let a publisher that shares the CPU run (the same for both).
            std::thread::yield_now();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = dir.join(format!("go-{kind}-{publishers}.done"));
    std::fs::write(&done, b"").map_err(|e| e.to_string())?;
    for child in children {
        finish(child)?;
    }
    let _ = std::fs::remove_file(&done);
    Ok(total as f64 / elapsed)
}

fn run(quick: bool, out: &Path) -> Result {
    pin(0);
    // iceoryx2 warns on stdout that it found no config file (defaults are what we want).
    set_log_level(LogLevel::Error);
    let dir = tempfile::tempdir_in(if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    })
    .map_err(|e| e.to_string())?;
    let d = dir.path();
    let scale = if quick { 10 } else { 1 };
    let cpus = cpus();
    let redis_socket = std::env::var("MMSHARE_BENCH_REDIS").ok();
    if redis_socket.is_none() {
        eprintln!(
            "(no Redis rows: ./scripts/bench-peers starts a redis-server and sets MMSHARE_BENCH_REDIS)"
        );
    }
    let floor = raw(d, 20_000 / scale)?;
    progress(
        "latency",
        8,
        "raw cache-line ping-pong (the floor)",
        &latency_figure(&floor),
    );
    let placements = placements(d, if quick { 3 } else { 9 }, 20_000 / scale)?;
    let mut latency = Vec::new();
    for (size, rounds) in SIZES {
        let rounds = (rounds / scale).max(20);
        let (zenoh, zenoh_failed) =
            zenoh_shm::again_after_a_loss(&format!("zenoh latency {size} B"), |attempt| {
                zenoh_shm::latency(d, size, rounds, attempt)
            })?;
        let mut cases: Vec<(&str, Dist)> = vec![
            ("mmshare stream", stream(d, size, rounds)?),
            ("mmshare array", array(d, size, rounds)?),
            (
                "mmshare array, fork()ed child",
                array_forked(d, size, rounds)?,
            ),
            ("iceoryx2 0.10 pub-sub", iceoryx2(size, rounds)?),
            (ZENOH_LATENCY, zenoh),
            ("Unix socket", socket(d, size, rounds)?),
        ];
        if let Some(socket) = &redis_socket {
            cases.push(("Redis pub/sub", redis(socket, size, rounds)?));
        }
        for (case, dist) in &cases {
            progress("latency", size, case, &latency_figure(dist));
            let mut row = dist.json();
            row["case"] = (*case).into();
            row["size"] = size.into();
            if *case == ZENOH_LATENCY {
                row["failed_attempts"] = zenoh_failed.clone().into();
            }
            latency.push(row);
        }
    }
    let mut blocking_rows = Vec::new();
    for size in [64usize, 4096] {
        for (case, dist) in blocking(d, redis_socket.as_deref(), size)? {
            progress("blocking", size, case, &latency_figure(&dist));
            let mut row = dist.json();
            row["case"] = case.into();
            row["size"] = size.into();
            blocking_rows.push(row);
        }
    }
    // 1 consumer, and N: one per CPU beside the producer's (at most 4), and at least 2 (on a
    // 2-CPU machine the second shares a CPU, which the tables say).
    let many = (cpus - 1).clamp(2, 4);
    let run_number: u32 = std::env::var("BENCH_PEERS_RUN")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let reversed = run_number.is_multiple_of(2);
    let mut throughput_rows = Vec::new();
    for (size, frames) in [(4096usize, 50_000usize), (1 << 20, 2_000), (8 << 20, 200)] {
        let frames = (frames / scale).max(20);
        for n in [1, many] {
            let mut cases = vec![
                ("mmshare stream, read in place", "stream"),
                ("mmshare stream, copied out", "stream-copy"),
                ("iceoryx2 0.10 (lossless)", "iceoryx2"),
                ("Zenoh 1.10 SHM (reliable, blocking)", "zenoh"),
                ("Unix socket (one per consumer)", "socket"),
            ];
            if redis_socket.is_some() {
                cases.push(("Redis SET / GET (a key per frame)", "redis"));
            }
            // Each block's cases run in the order listed in odd runs and in reverse in even
            // ones (`BENCH_PEERS_RUN`, set by ./scripts/bench-peers), so that no case always
            // follows the same one (the first mmshare case of a block followed the last
            // block's Redis case in every run); the rows keep the listed order.
            let mut order: Vec<usize> = (0..cases.len()).collect();
            if reversed {
                order.reverse();
            }
            let mut rows = vec![serde_json::Value::Null; cases.len()];
            for k in order {
                let (case, kind) = cases[k];
                let (fps, failed) = if kind == "zenoh" {
                    zenoh_shm::again_after_a_loss(
                        &format!("zenoh throughput {size} B to {n}"),
                        |attempt| zenoh_shm::throughput(d, size, frames, n, attempt),
                    )?
                } else {
                    (
                        throughput(d, redis_socket.as_deref(), kind, size, frames, n)?,
                        Vec::new(),
                    )
                };
                progress(
                    "throughput",
                    size,
                    case,
                    &format!("{n} consumer(s): {fps:.0} frames/s"),
                );
                rows[k] = serde_json::json!({
                    "case": case, "size": size, "consumers": n, "frames": frames,
                    "frames_per_s": fps, "failed_attempts": failed,
                });
            }
            throughput_rows.extend(rows);
        }
    }
    let max_readers = std::env::args()
        .skip_while(|a| a != "--max-readers")
        .nth(1)
        .and_then(|n| n.parse().ok())
        // One per CPU beside the writer's, and at least 3: on a small machine the rows then
        // also show readers that share CPUs (with the writer, or with each other).
        .unwrap_or((cpus.max(2) - 1).max(3));
    let secs = if quick { 0.5 } else { 2.0 };
    let mut scaling_rows = Vec::new();
    for n in 1..=max_readers {
        let (ours, our_writes) = scaling(d, "seqlock", n, secs, cpus)?;
        let (theirs, their_writes) = scaling(d, "rwlock", n, secs, cpus)?;
        progress(
            "scaling",
            SCALE_BYTES,
            &format!("{n} reader(s)"),
            &format!("seqlock {ours:.0} reads/s, rwlock {theirs:.0} reads/s"),
        );
        scaling_rows.push(serde_json::json!({
            "readers": n, "seconds": secs, "writer_hz": WRITER_HZ,
            "seqlock_reads_per_s": ours, "rwlock_reads_per_s": theirs,
            "seqlock_writes_per_s": our_writes, "rwlock_writes_per_s": their_writes,
        }));
    }
    let daemon = Daemon::start(d)?;
    let mut rpc_rows = Vec::new();
    for (size, rounds) in [(64usize, 20_000usize), (4096, 20_000), (1 << 20, 2_000)] {
        let rounds = (rounds / scale).max(20);
        let cases: Vec<(&str, Dist)> = vec![
            ("mmshare service", rpc_mmshare(&daemon, size, rounds)?),
            ("iceoryx2 0.10 request-response", rpc_iox(size, rounds)?),
            ("Unix socket RPC", rpc_socket(d, size, rounds)?),
        ];
        for (case, dist) in &cases {
            progress("request/response", size, case, &latency_figure(dist));
            let mut row = dist.json();
            row["case"] = (*case).into();
            row["size"] = size.into();
            rpc_rows.push(row);
        }
    }
    drop(daemon);
    let mut fan_in_rows = Vec::new();
    let fan_frames = (50_000 / scale).max(100);
    for publishers in 2..=4 {
        for (case, kind) in [
            ("mmshare stream (max_publishers)", "stream"),
            ("iceoryx2 0.10 (max_publishers, lossless)", "iceoryx2"),
        ] {
            let (fps, error) = match fan_in(d, kind, publishers, fan_frames) {
                Ok(fps) => (Some(fps), None),
                Err(e) => (None, Some(e)),
            };
            progress(
                "fan-in",
                4096,
                case,
                &match (fps, &error) {
                    (Some(fps), _) => format!("{publishers} publishers: {fps:.0} frames/s"),
                    (None, e) => format!("{publishers} publishers: did not finish: {e:?}"),
                },
            );
            fan_in_rows.push(serde_json::json!({
                "case": case, "size": 4096, "publishers": publishers,
                "frames_each": fan_frames, "frames_per_s": fps, "error": error,
            }));
        }
    }
    let results = serde_json::json!({
        "quick": quick, "cpus": cpus, "floor": floor.json(), "latency": latency,
        "placements": placements,
        "blocking": blocking_rows, "blocking_gap_ms": GAP.as_millis() as u64,
        "throughput": throughput_rows, "throughput_reversed": reversed, "scaling": scaling_rows,
        "rpc": rpc_rows, "fan_in": fan_in_rows,
    });
    std::fs::write(out, results.to_string())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map_or("", String::as_str);
    let num = |i: usize| arg(i).parse::<u64>().unwrap_or(0);
    let result = match arg(1) {
        "__raw" => child_raw(arg(2), num(3)),
        "__stream" => child_stream(arg(2), arg(3), num(4)),
        "__array" => child_array(arg(2), arg(3), num(4)),
        "__iox" => child_iox(arg(2), arg(3), num(4) as usize, num(5)),
        "__zenoh" => zenoh_shm::child_latency(arg(2), num(3) as usize, num(4)),
        "__socket" => child_socket(arg(2), num(3) as usize, num(4)),
        "__redis" => child_redis(arg(2), arg(3), arg(4), num(5) as usize, num(6)),
        "__blocking" => blocking_child(arg(2), arg(3), arg(4), num(5) as usize),
        "__scale" => scale_child(
            arg(2),
            arg(3),
            arg(4),
            arg(5).parse().unwrap_or(1.0),
            num(6) as usize,
        ),
        "__rpc_mmshare" => child_rpc_mmshare(arg(2), arg(3), num(4)),
        "__rpc_iox" => child_rpc_iox(arg(2), num(3) as usize, num(4)),
        // One fan-in case alone: KIND (stream, iceoryx2) PUBLISHERS FRAMES (frames/s).
        "__fan_in_only" => (|| {
            pin(0);
            let dir = tempfile::tempdir_in("/dev/shm").map_err(|e| e.to_string())?;
            let fps = fan_in(dir.path(), arg(2), num(3) as usize, num(4) as usize)?;
            println!("{fps:.0} frames/s");
            Ok(())
        })(),
        // One request-response case alone: CASE SIZE ROUNDS, CASE mmshare or iceoryx2 (p50 and
        // p99 of the round trip in ns).
        "__rpc_only" => (|| {
            pin(0);
            let dir = tempfile::tempdir_in("/dev/shm").map_err(|e| e.to_string())?;
            let (size, rounds) = (num(3) as usize, num(4) as usize);
            let dist = match arg(2) {
                "mmshare" => rpc_mmshare(&Daemon::start(dir.path())?, size, rounds)?,
                "iceoryx2" => rpc_iox(size, rounds)?,
                other => return Err(format!("unknown case {other}")),
            };
            println!("p50 {:.0} ns, p99 {:.0} ns", dist.at(0.5), dist.at(0.99));
            Ok(())
        })(),
        // Throughput cases alone (for profiling and tuning): KIND[,KIND...] SIZE FRAMES
        // CONSUMERS, the kinds one after another in this process as a full run's throughput
        // block runs them (all but Redis, which needs its server).
        "__throughput_only" => (|| {
            pin(0);
            let dir = tempfile::tempdir_in("/dev/shm").map_err(|e| e.to_string())?;
            for kind in arg(2).split(',') {
                // Files of their own for each case (a kind may come twice).
                let case = tempfile::tempdir_in(dir.path()).map_err(|e| e.to_string())?;
                let fps = throughput(
                    case.path(),
                    None,
                    kind,
                    num(3) as usize,
                    num(4) as usize,
                    num(5) as usize,
                )?;
                println!("{kind}: {fps:.0} frames/s");
            }
            Ok(())
        })(),
        // Reader scaling alone: READERS SECONDS (seqlock and rwlock, same run).
        "__scaling_only" => (|| {
            pin(0);
            let dir = tempfile::tempdir_in("/dev/shm").map_err(|e| e.to_string())?;
            let secs = arg(3).parse().unwrap_or(1.0);
            for kind in ["seqlock", "rwlock"] {
                let (reads, writes) = scaling(dir.path(), kind, num(2) as usize, secs, cpus())?;
                println!("{kind}: {reads:.0} reads/s, {writes:.0} writes/s");
            }
            Ok(())
        })(),
        // One latency case alone: CASE SIZE ROUNDS, CASE one of stream, array, array-forked, zenoh,
        // iceoryx2 (p50 and p99 in ns).
        "__latency_only" => (|| {
            pin(0);
            let dir = tempfile::tempdir_in("/dev/shm").map_err(|e| e.to_string())?;
            let (d, size, rounds) = (dir.path(), num(3) as usize, num(4) as usize);
            let dist = match arg(2) {
                "stream" => stream(d, size, rounds)?,
                "array" => array(d, size, rounds)?,
                "array-forked" => array_forked(d, size, rounds)?,
                "iceoryx2" => iceoryx2(size, rounds)?,
                "zenoh" => {
                    zenoh_shm::again_after_a_loss("zenoh", |attempt| {
                        zenoh_shm::latency(d, size, rounds, attempt)
                    })?
                    .0
                }
                "floor" => raw(d, rounds)?,
                other => return Err(format!("unknown case {other}")),
            };
            println!("p50 {:.0} ns, p99 {:.0} ns", dist.at(0.5), dist.at(0.99));
            Ok(())
        })(),
        "__fan_in" => child_fan_in(arg(2), arg(3), arg(4), num(5), num(6) as usize),
        "__consumer" => consumer_child(
            arg(2),
            arg(3),
            arg(4),
            num(5) as usize,
            num(6),
            num(7) as usize,
        ),
        _ => match std::env::var_os("BENCH_PEERS_JSON") {
            Some(out) => run(args.iter().any(|a| a == "--quick"), Path::new(&out)),
            None => Err(
                "set BENCH_PEERS_JSON to the file for the figures (./scripts/bench-peers does)"
                    .into(),
            ),
        },
    };
    if let Err(e) = result {
        eprintln!("bench-peers: {e}");
        // A child's standard output goes to its parent (`finish`), which names the error.
        if arg(1).starts_with("__") {
            println!("error: {e}");
        }
        std::process::exit(1);
    }
}
