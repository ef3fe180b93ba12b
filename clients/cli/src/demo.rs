//! `mmshare demo`: a producer process and a consumer process share one frame array through the
//! daemon. The Python that opens the same array is printed first (the array exists while the
//! demo runs), then the numbers. The consumer reads the latest frame each time it looks, not
//! every frame: one array holds one frame, and a frame published while the consumer copies the
//! previous one replaces it.
//!
//! If no daemon answers (and the user did not name a socket), the demo starts one inside this
//! process on a temporary directory and stops it at the end. Everything it creates is removed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mmshare::{Access, Client, CreateOptions};

use crate::commands::{Result, connect, emit};

/// The demo's child processes, for the Ctrl-C handler to stop.
static CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// One 640×480 RGB frame.
const SHAPE: [u64; 3] = [480, 640, 3];
/// Frames per second the producer aims for.
const FPS: u64 = 1000;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn run(socket_given: bool, socket: &Path, seconds: f64) -> Result {
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err(format!("--seconds {seconds} must be between 0 and 3600"));
    }
    // Keep the temp dir and the embedded daemon alive until the end.
    let mut _temp = None;
    let mut embedded = None;
    let socket = match Client::connect(socket) {
        Ok(_) => socket.to_owned(),
        Err(e) if socket_given => return Err(e.to_string()),
        Err(_) => {
            let dir = tempfile::Builder::new()
                .prefix("mmshare-demo-")
                .tempdir()
                .map_err(|e| format!("cannot make a temp dir: {e}"))?;
            let mem = if Path::new("/dev/shm").is_dir() {
                tempfile::Builder::new()
                    .prefix("mmshare-demo-")
                    .tempdir_in("/dev/shm")
                    .map_err(|e| format!("cannot make a dir in /dev/shm: {e}"))?
            } else {
                tempfile::Builder::new()
                    .prefix("mmshare-demo-mem-")
                    .tempdir()
                    .map_err(|e| format!("cannot make a temp dir: {e}"))?
            };
            let sock = dir.path().join("mmshared.sock");
            let config = <mmshare_daemon::Config as clap::Parser>::try_parse_from([
                "mmshared".as_ref(),
                "--socket".as_ref(),
                sock.as_os_str(),
                "--dir".as_ref(),
                dir.path().join("data").as_os_str(),
                "--mem-dir".as_ref(),
                mem.path().join("arrays").as_os_str(),
            ])
            .map_err(|e| e.to_string())?;
            let daemon = mmshare_daemon::EmbeddedDaemon::start(config)?;
            emit(&format!(
                "no daemon was running: started one inside this process ({})",
                sock.display()
            ))?;
            embedded = Some(daemon);
            _temp = Some((dir, mem));
            sock
        }
    };
    let client = connect(&socket)?;
    let name = format!("demo.frames-{}", std::process::id());
    // Ctrl-C (or SIGTERM) must not leave the frame array or the temp directories behind. The
    // child processes get the same Ctrl-C from the terminal; this process cleans up and exits.
    {
        let (socket, name) = (socket.clone(), name.clone());
        let dirs: Vec<std::path::PathBuf> = _temp
            .as_ref()
            .map(|(d, m)| vec![d.path().to_owned(), m.path().to_owned()])
            .unwrap_or_default();
        let _ = ctrlc::set_handler(move || {
            for pid in CHILDREN.lock().map(|c| c.clone()).unwrap_or_default() {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
            }
            if let Ok(c) = Client::connect(&socket) {
                let _ = c.delete(&name);
            }
            for d in &dirs {
                let _ = std::fs::remove_dir_all(d);
            }
            eprintln!("mmshare: demo interrupted; cleaned up");
            std::process::exit(130);
        });
    }
    let frames = client
        .create(&CreateOptions::new(&name, "u1", &SHAPE).memory().mode(0o644))
        .map_err(|e| e.to_string())?;
    let frame_bytes = frames.header().data_len;
    emit(&format!(
        "created {name}: {} uint8 ({:.2} MB per frame) in RAM, at {}",
        crate::commands::shape_text(&SHAPE),
        frame_bytes as f64 / 1e6,
        frames.info().path
    ))?;
    // Printed now: the array is deleted when the demo ends.
    emit(
        "\nThe same array from Python while the demo runs (Python client: pip install ./clients/python):",
    )?;
    emit("    import mmshare")?;
    emit(&format!(
        "    client = mmshare.connect({:?})",
        socket.display().to_string()
    ))?;
    emit(&format!(
        "    frame = client.open({name:?}).read()   # consistent copy of the latest frame, shape {}",
        crate::commands::shape_text(&SHAPE)
    ))?;
    emit(&format!(
        "(the demo deletes {name} when it ends in {seconds} s; `--seconds 60` gives you time)\n"
    ))?;
    emit(&format!(
        "starting a producer and a consumer process for {seconds} s; the consumer copies the latest frame each time, so frames published while it copies are skipped ..."
    ))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let spawn = |args: &[&str]| {
        let child = Command::new(&exe)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        if let Ok(mut c) = CHILDREN.lock() {
            c.push(child.id());
        }
        Ok::<_, String>(child)
    };
    let consumer = spawn(&["__demo-consumer", &name])?;
    std::thread::sleep(Duration::from_millis(200)); // let it map and start waiting
    let producer = spawn(&["__demo-producer", &name, &seconds.to_string()])?;
    let produced = producer.wait_with_output().map_err(|e| e.to_string())?;
    let consumed = consumer.wait_with_output().map_err(|e| e.to_string())?;
    let result = if produced.status.success() && consumed.status.success() {
        print!("{}", String::from_utf8_lossy(&produced.stdout));
        print!("{}", String::from_utf8_lossy(&consumed.stdout));
        if embedded.is_some() {
            emit("\n(this demo's daemon and array are gone now: start `mmshared`, then")?;
            emit(
                " `mmshare create cam --dtype u1 --shape 480,640,3 --memory` to keep one around)",
            )?;
        }
        Ok(())
    } else {
        Err(format!(
            "the demo's processes failed (producer {}, consumer {})",
            produced.status, consumed.status
        ))
    };
    drop(frames);
    let _ = client.delete(&name);
    drop(client);
    if let Some(d) = embedded {
        d.stop();
    }
    result
}

/// Publishes frames: each is filled with its number, stamped with its publish time.
pub fn producer(socket: &Path, name: &str, seconds: f64) -> Result {
    let client = connect(socket)?;
    let frames = client
        .open::<u8>(name, Access::Write)
        .map_err(|e| e.to_string())?;
    let mut frame = vec![0u8; frames.len()];
    let period = Duration::from_nanos(1_000_000_000 / FPS);
    let start = Instant::now();
    let mut published = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        published += 1;
        frame[16..].fill(published as u8);
        frame[8..16].copy_from_slice(&published.to_le_bytes());
        frame[..8].copy_from_slice(&now_ns().to_le_bytes());
        frames.write_all(&frame).map_err(|e| e.to_string())?;
        let next = period * published as u32;
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // A frame with stamp 0 tells the consumer to stop.
    frames
        .write_all(&vec![0u8; frames.len()])
        .map_err(|e| e.to_string())?;
    emit(&format!(
        "producer: {published} frames in {elapsed:.2} s = {:.0} frames/s, {:.2} GB/s written",
        published as f64 / elapsed,
        published as f64 * frames.len() as f64 / elapsed / 1e9
    ))?;
    Ok(())
}

/// Waits for each new version, copies it consistently, checks it, and measures latency.
pub fn consumer(socket: &Path, name: &str) -> Result {
    let client = connect(socket)?;
    let frames = client
        .open::<u8>(name, Access::Read)
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; frames.len()];
    let mut latencies = Vec::new();
    let (mut seen, mut last, mut bad) = (0u64, frames.version(), 0u64);
    let mut first: Option<Instant> = None;
    let mut last_number = 0u64;
    loop {
        last = frames
            .wait_for_version(last, Duration::from_secs(10))
            .map_err(|e| format!("no frame arrived: {e}"))?;
        let snap = frames.read_into(&mut buf).map_err(|e| e.to_string())?;
        let received = now_ns();
        last = last.max(snap.version);
        let stamp = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        if stamp == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        let number = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
        if buf[16..].iter().any(|&b| b != number as u8) {
            bad += 1;
        }
        latencies.push(received.saturating_sub(stamp));
        seen += 1;
        last_number = number;
    }
    let elapsed = first.map_or(0.0, |f| f.elapsed().as_secs_f64()).max(1e-9);
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1e3
    };
    emit(&format!(
        "consumer: read the latest frame {seen} times, frames 1 to {last_number} ({:.0} frames/s, {:.2} GB/s copied out), {bad} inconsistent, {} retried reads",
        seen as f64 / elapsed,
        seen as f64 * frames.len() as f64 / elapsed / 1e9,
        frames.retries()
    ))?;
    emit(&format!(
        "latency publish -> consistent copy in the consumer: p50 {:.0} µs, p99 {:.0} µs (includes copying {:.2} MB)",
        pct(0.5),
        pct(0.99),
        frames.len() as f64 / 1e6
    ))?;
    if bad > 0 {
        return Err(format!("{bad} frames were inconsistent"));
    }
    Ok(())
}
