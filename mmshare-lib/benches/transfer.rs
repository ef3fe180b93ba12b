//! Handing an 8 MiB frame to another process: mmshare vs a Unix socket, in one run.
//!
//! Run: `cargo bench -p mmshare --bench transfer`
//!
//! Each round, the producer process publishes one frame and waits until the consumer process
//! says it has it; the time per round is the hand-off latency. Three ways, same frames:
//! - **socket**: the producer writes 8 MiB into a Unix stream socket, the consumer reads them
//!   into its buffer, then sends a 1-byte ack (what a pipeline without shared memory does);
//! - **mmshare copy**: the producer writes the frame into a mapped array (seqlock write), the
//!   consumer wakes in `wait_for_version`, takes a consistent copy into its own buffer, and acks
//!   through a second tiny array;
//! - **mmshare in place**: as above, but the consumer reads the frame where it is
//!   (`read_with`, here summing one byte per 4 KiB page) instead of copying it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mmshare::{Access, Array, ArraySpec, DType, create_array_file};

const FRAME: usize = 8 << 20;
const ROUNDS: usize = 200;
const TIMEOUT: Duration = Duration::from_secs(10);

fn median_us(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[(v.len() - 1) * 99 / 100])
}

fn consumer_socket(path: &str) {
    let mut s = UnixStream::connect(path).unwrap();
    let mut buf = vec![0u8; FRAME];
    for _ in 0..ROUNDS + 10 {
        s.read_exact(&mut buf).unwrap();
        std::hint::black_box(&buf);
        s.write_all(&[1]).unwrap();
    }
}

fn consumer_mmshare(frame_path: &str, ack_path: &str, in_place: bool) {
    let frame = Array::<u8>::open(frame_path, Access::Read).unwrap();
    let ack = Array::<u64>::open(ack_path, Access::Write).unwrap();
    let mut buf = vec![0u8; FRAME];
    let mut seen = 0;
    for _ in 0..ROUNDS + 10 {
        seen = frame.wait_for_version(seen, TIMEOUT).unwrap();
        if in_place {
            let sum = frame
                .read_with(|v| {
                    (0..v.len())
                        .step_by(4096)
                        .map(|i| u64::from(v.get(i)))
                        .sum::<u64>()
                })
                .unwrap();
            std::hint::black_box(sum);
        } else {
            frame.read_into(&mut buf).unwrap();
            std::hint::black_box(&buf);
        }
        ack.write_all(&[seen]).unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__socket") => return consumer_socket(&args[2]),
        Some("__mmshare") => return consumer_mmshare(&args[2], &args[3], args[4] == "in-place"),
        _ => {}
    }
    let dir = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let exe = std::env::current_exe().unwrap();
    let frame_data: Vec<u8> = (0..FRAME).map(|i| (i % 251) as u8).collect();

    // Unix socket.
    let sock_path = dir.path().join("bench.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let mut child = Command::new(&exe)
        .args(["__socket", sock_path.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (mut s, _) = listener.accept().unwrap();
    let mut ack = [0u8; 1];
    let mut socket_times = Vec::new();
    for round in 0..ROUNDS + 10 {
        let t = Instant::now();
        s.write_all(&frame_data).unwrap();
        s.read_exact(&mut ack).unwrap();
        if round >= 10 {
            socket_times.push(t.elapsed().as_nanos() as f64 / 1e3);
        }
    }
    child.wait().unwrap();

    // mmshare, copy and in place.
    let mut results = Vec::new();
    for mode in ["copy", "in-place"] {
        let (frame_path, _) = create_array_file(
            dir.path(),
            &ArraySpec::new(format!("frame-{mode}"), DType::U8, vec![FRAME as u64]),
        )
        .unwrap();
        let (ack_path, _) = create_array_file(
            dir.path(),
            &ArraySpec::new(format!("ack-{mode}"), DType::U64, vec![1]),
        )
        .unwrap();
        let frame = Array::<u8>::open(&frame_path, Access::Write).unwrap();
        let acks = Array::<u64>::open(&ack_path, Access::Read).unwrap();
        let mut child = Command::new(&exe)
            .args([
                "__mmshare",
                frame_path.to_str().unwrap(),
                ack_path.to_str().unwrap(),
                mode,
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut times = Vec::new();
        let mut acked = 0;
        for round in 0..ROUNDS + 10 {
            let t = Instant::now();
            frame.write_all(&frame_data).unwrap();
            acked = acks.wait_for_version(acked, TIMEOUT).unwrap();
            if round >= 10 {
                times.push(t.elapsed().as_nanos() as f64 / 1e3);
            }
        }
        child.wait().unwrap();
        results.push((mode, times));
    }

    println!(
        "\nhanding an 8 MiB frame to another process and getting its ack (same run, {ROUNDS} rounds)"
    );
    println!("command: cargo bench -p mmshare --bench transfer\n");
    println!("| method | p50 per frame | p99 | frames/s at p50 | speed vs socket |");
    println!("|---|---|---|---|---|");
    let (sock50, sock99) = median_us(socket_times);
    println!(
        "| Unix stream socket (write 8 MiB, read 8 MiB, ack) | {sock50:.0} µs | {sock99:.0} µs | {:.0} | 1.00x |",
        1e6 / sock50
    );
    for (mode, times) in results {
        let (p50, p99) = median_us(times);
        let label = if mode == "copy" {
            "mmshare: seqlock write, wait, consistent copy, ack"
        } else {
            "mmshare: seqlock write, wait, read in place, ack"
        };
        println!(
            "| {label} | {p50:.0} µs | {p99:.0} µs | {:.0} | {:.2}x |",
            1e6 / p50,
            sock50 / p50
        );
    }
}
