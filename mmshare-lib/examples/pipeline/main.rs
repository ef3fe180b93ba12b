//! A producer process publishes video-sized frames into one mapped array file; a consumer
//! process (this same program, re-executed) waits for each new version and takes a consistent
//! copy, checking that no frame is ever torn. No daemon yet: the file is created directly.
//!
//! Run: `cargo run --release -p mmshare --example pipeline [SECONDS]`

use std::error::Error;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mmshare::{Access, Array, ArraySpec, DType, create_array_file};

const SHAPE: [u64; 3] = [480, 640, 3];

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("consume") {
        return consume(Path::new(&args[2]));
    }
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let dir = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")?
    } else {
        tempfile::tempdir()?
    };
    let (path, header) =
        create_array_file(dir.path(), &ArraySpec::new("frames", DType::U8, SHAPE))?;
    println!(
        "array {} {:?} {} ({} bytes) at {}",
        header.name,
        header.shape,
        header.dtype,
        header.data_len,
        path.display()
    );

    println!(
        "while it runs, Python sees the same pages (docs/FORMAT.md):\n  import numpy as np\n  a = np.memmap({:?}, dtype='|u1', mode='r', offset={}, shape={:?})\n",
        path.display().to_string(),
        header.data_offset,
        (SHAPE[0], SHAPE[1], SHAPE[2])
    );
    let frames = Array::<u8>::open(&path, Access::Write)?;
    let consumer = Command::new(std::env::current_exe()?)
        .args(["consume", path.to_str().ok_or("non-UTF-8 temp path")?])
        .stdout(Stdio::inherit())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(200)); // let the consumer map the file

    // Producer: every frame is filled with its number, and stamped with the publish time.
    let mut frame = vec![0u8; frames.len()];
    let start = Instant::now();
    let mut published = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        published += 1;
        frame.fill(published as u8);
        frame[..8].copy_from_slice(&now_ns().to_le_bytes());
        frames.write_all(&frame)?;
        // ~1000 frames/s, like a fast camera.
        std::thread::sleep(Duration::from_micros(1000));
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Frame 0 with a zero stamp tells the consumer to stop.
    frames.write_all(&vec![0u8; frames.len()])?;
    println!(
        "producer: {published} frames in {elapsed:.1} s = {:.0} frames/s, {:.2} GB/s",
        published as f64 / elapsed,
        published as f64 * frames.len() as f64 / elapsed / 1e9
    );
    let status = consumer.wait_with_output()?.status;
    if !status.success() {
        return Err("consumer failed".into());
    }
    Ok(())
}

fn consume(path: &Path) -> Result<(), Box<dyn Error>> {
    let frames = Array::<u8>::open(path, Access::Read)?;
    let mut buf = vec![0u8; frames.len()];
    let mut latencies = Vec::new();
    let (mut seen, mut last) = (0u64, frames.version());
    loop {
        last = frames.wait_for_version(last, Duration::from_secs(10))?;
        let snap = frames.read_into(&mut buf)?;
        last = last.max(snap.version);
        let stamp = u64::from_le_bytes(buf[..8].try_into()?);
        if stamp == 0 {
            break;
        }
        let received = now_ns();
        let fill = buf[8];
        if buf[8..].iter().any(|&b| b != fill) {
            return Err(format!("torn frame at version {}", snap.version).into());
        }
        latencies.push(received.saturating_sub(stamp));
        seen += 1;
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1e3
    };
    println!(
        "consumer: {seen} frames, every one consistent; {} reads retried; stamp->copy done (write + wake + read of 0.9 MB) p50 {:.1} us, p99 {:.1} us",
        frames.retries(),
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
