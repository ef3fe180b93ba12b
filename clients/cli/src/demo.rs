//! `mmshare demo`: a real pipeline on a stream. A producer process publishes video frames at a
//! set rate; at the same time a lossless consumer (every frame, in order), a lossy consumer
//! (deliberately slow: it skips frames and counts them) and a `latest()` viewer (the newest
//! frame, 30 times a second) read them in place, each in its own process. A live line shows
//! frames/s, GB/s, publish→receive latency p50/p99 and frames missed per consumer. The Python
//! that attaches to the same stream is printed first, and the demo runs until `--seconds` or
//! Ctrl-C, so it can be tried meanwhile.
//!
//! If no daemon answers (and the user did not name a socket), the demo starts one inside this
//! process on a temporary directory and stops it at the end. Everything it creates is removed.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use mmshare::{ClientError, Delivery, StreamError, StreamOptions};
use serde_json::json;

use crate::commands::{Result, connect, emit, shape_text, try_connect};
use crate::failure::Failure;

/// The demo's child processes, for the Ctrl-C handler to stop.
static CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// One 640×480 RGB frame.
const SHAPE: [u64; 3] = [480, 640, 3];
/// Slots in the ring: room for the consumers to run behind by a few frames.
const SLOTS: u32 = 16;
/// The consumers, in the order the live line shows them.
const CONSUMERS: [&str; 3] = ["lossless", "lossy", "latest"];

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn run(socket_given: bool, socket: &Path, seconds: f64, fps: f64) -> Result {
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(Failure::bad_input(format!(
            "--seconds {seconds} must be between 0 and 86400"
        )));
    }
    if !(fps > 0.0 && fps <= 100_000.0) {
        return Err(Failure::bad_input(format!(
            "--fps {fps} must be between 0 and 100000"
        )));
    }
    // Keep the temp dir and the embedded daemon alive until the end.
    let mut _temp = None;
    let mut embedded = None;
    let socket = match try_connect(socket) {
        Ok(_) => socket.to_owned(),
        // A daemon of another user on the default socket is reported, not worked around.
        Err(e) if socket_given || matches!(e, ClientError::WrongServer { .. }) => {
            return Err(e.into());
        }
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
                // A throw-away daemon: nothing has to outlive it.
                "--no-fd-keeper".as_ref(),
            ])
            .map_err(|e| Failure::from(e.to_string()))?;
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
    let name = format!("demo.camera-{}", std::process::id());
    // Ctrl-C (or SIGTERM) must not leave the stream or the temp directories behind. The child
    // processes are stopped, the stream deleted, and the directories removed.
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
            if let Ok(c) = try_connect(&socket) {
                let _ = c.delete(&name);
            }
            for d in &dirs {
                let _ = std::fs::remove_dir_all(d);
            }
            eprintln!("\nmmshare: demo stopped; cleaned up");
            std::process::exit(130);
        });
    }
    let info = client.create_stream(
        &StreamOptions::new(&name, "u1", &SHAPE)
            .slots(SLOTS)
            .memory()
            .mode(0o644),
    )?;
    emit(&format!(
        "created stream {name}: {SLOTS} slots of {} uint8 ({:.2} MB per frame) in RAM",
        shape_text(&SHAPE),
        info.frame_len as f64 / 1e6,
    ))?;
    emit("\nAttach from Python while the demo runs (pip install ./clients/python):")?;
    emit("    import mmshare")?;
    emit(&format!(
        "    client = mmshare.connect({:?})",
        socket.display().to_string()
    ))?;
    emit(&format!("    sub = client.subscribe({name:?})"))?;
    emit("    with sub.receive(timeout=1) as s: print(s.number, s.array.shape, s.array.mean())")?;
    emit(&format!(
        "(the demo deletes {name} when it ends in {seconds} s, or at Ctrl-C; `--seconds 600` gives you time)\n"
    ))?;
    emit(&format!(
        "a producer publishes {fps} frames/s; a lossless consumer takes every frame, a lossy one works slowly and skips (counting what it misses), a viewer takes latest() 30 times a second; each in its own process:"
    ))?;
    let exe = std::env::current_exe()?;
    let spawn = |args: &[&str]| {
        let mut command = Command::new(&exe);
        command.arg("--socket").arg(&socket);
        if let Some(uid) = crate::commands::server_uid() {
            command.arg("--server-uid").arg(uid.to_string());
        }
        let child = command
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
    let mut children = Vec::new();
    for role in CONSUMERS {
        children.push((role, spawn(&["__demo-consumer", &name, role])?));
    }
    // Each consumer says "ready" once subscribed, so the producer's first frame reaches all.
    let latest: Arc<Mutex<std::collections::HashMap<String, serde_json::Value>>> = Arc::default();
    let mut readers = Vec::new();
    for (role, child) in &mut children {
        let out = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(out).lines();
        match lines.next() {
            Some(Ok(line)) if line == "ready" => {}
            other => return Err(format!("the {role} consumer did not start: {other:?}").into()),
        }
        let latest = Arc::clone(&latest);
        let role = role.to_string();
        readers.push(std::thread::spawn(move || {
            for line in lines.map_while(std::result::Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    latest.lock().expect("not poisoned").insert(role.clone(), v);
                }
            }
        }));
    }
    let mut producer = spawn(&[
        "__demo-producer",
        &name,
        &seconds.to_string(),
        &fps.to_string(),
    ])?;
    let produced = producer.stdout.take().expect("piped");
    {
        let latest = Arc::clone(&latest);
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(produced)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    latest
                        .lock()
                        .expect("not poisoned")
                        .insert("producer".into(), v);
                }
            }
        }));
    }
    let terminal = std::io::stdout().is_terminal();
    let started = Instant::now();
    let status = loop {
        std::thread::sleep(Duration::from_millis(1000));
        let done = producer.try_wait()?;
        let stats = latest.lock().expect("not poisoned").clone();
        // Nothing to show before the first reports (the processes are starting).
        if stats.is_empty() && done.is_none() {
            continue;
        }
        let line = live_line(&stats, started.elapsed());
        if terminal {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
        } else {
            emit(&line)?;
        }
        if let Some(status) = done {
            break status;
        }
    };
    let mut failed = !status.success();
    for (_, child) in &mut children {
        failed |= !child.wait()?.success();
    }
    for r in readers {
        let _ = r.join();
    }
    if terminal {
        println!();
    }
    let totals = latest.lock().expect("not poisoned").clone();
    let result = summary(&totals, failed);
    let _ = client.delete(&name);
    drop(client);
    if embedded.is_some() {
        emit("\n(this demo's daemon and stream are gone now: start `mmshared`, then")?;
        emit(
            " `mmshare create cam --stream --dtype u1 --shape 480,640,3 --memory` to keep one around)",
        )?;
    }
    if let Some(d) = embedded {
        d.stop();
    }
    result
}

/// The live line: the producer's rate and each consumer's rate, latency and misses.
fn live_line(stats: &std::collections::HashMap<String, serde_json::Value>, t: Duration) -> String {
    let f = |v: &serde_json::Value, k: &str| {
        v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0)
    };
    let mut parts = vec![format!("{:>4.0} s", t.as_secs_f64())];
    if let Some(p) = stats.get("producer") {
        parts.push(format!(
            "published {:.0} frames/s {:.2} GB/s",
            f(p, "rate"),
            f(p, "gbps")
        ));
    }
    for role in CONSUMERS {
        if let Some(c) = stats.get(role) {
            parts.push(format!(
                "{role}: {:.0}/s p50 {:.0} µs p99 {:.0} µs missed {:.0}",
                f(c, "rate"),
                f(c, "p50_us"),
                f(c, "p99_us"),
                f(c, "missed")
            ));
        }
    }
    parts.join(" | ")
}

/// The final lines, from each process's last report; an error if the lossless consumer
/// missed a frame or anyone saw a frame that was not whole.
fn summary(stats: &std::collections::HashMap<String, serde_json::Value>, failed: bool) -> Result {
    let u =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let published = stats.get("producer").map_or(0, |p| u(p, "published"));
    emit(&format!("\nproducer: published {published} frames"))?;
    let mut bad = 0;
    for role in CONSUMERS {
        if let Some(c) = stats.get(role) {
            // Why each one misses what it misses.
            let why = match role {
                "lossless" => "every frame, or the publisher waits",
                "lossy" => "skipped while busy: it never slows the publisher",
                _ => "skipped by design: latest() jumps to the newest frame",
            };
            emit(&format!(
                "{role}: received {} frames, missed {} ({why}); {} damaged (each frame's number \
                 and bytes checked); latency publish -> receive over the run p50 {} µs, p99 {} µs",
                u(c, "received"),
                u(c, "missed"),
                u(c, "bad"),
                u(c, "total_p50_us"),
                u(c, "total_p99_us")
            ))?;
            bad += u(c, "bad");
        }
    }
    let lossless = stats.get("lossless");
    let lossless_ok =
        lossless.is_some_and(|c| u(c, "missed") == 0 && u(c, "received") == published);
    if failed || bad > 0 || !lossless_ok {
        return Err(format!(
            "the demo's pipeline failed ({bad} frames damaged, lossless consumer {} of {published} frames{})",
            lossless.map_or(0, |c| u(c, "received")),
            if failed { ", a process failed" } else { "" }
        ).into());
    }
    Ok(())
}

/// Fills and publishes frames at `fps` for `seconds`, then an end-of-stream frame (number
/// u64::MAX). Each frame: its number in bytes 0..8, then every byte = number mod 256.
pub fn producer(socket: &Path, name: &str, seconds: f64, fps: f64) -> Result {
    let client = connect(socket)?;
    let mut publisher = client.publisher::<u8>(name)?;
    let period = Duration::from_secs_f64(1.0 / fps);
    let start = Instant::now();
    let mut published = 0u64;
    let mut window = (Instant::now(), 0u64);
    let bytes = publisher.frame_len() as f64;
    while start.elapsed().as_secs_f64() < seconds {
        let mut loan = publisher.loan()?;
        let n = loan.number();
        loan[8..].fill(n as u8);
        loan[..8].copy_from_slice(&n.to_le_bytes());
        loan.publish();
        published += 1;
        if window.0.elapsed() >= Duration::from_secs(1) {
            let secs = window.0.elapsed().as_secs_f64();
            let rate = (published - window.1) as f64 / secs;
            emit(
                &json!({"rate": rate, "gbps": rate * bytes / 1e9, "published": published})
                    .to_string(),
            )?;
            window = (Instant::now(), published);
        }
        if let Some(wait) = period
            .mul_f64(published as f64)
            .checked_sub(start.elapsed())
        {
            std::thread::sleep(wait);
        }
    }
    let mut end = publisher.loan()?;
    end[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    end.publish();
    let secs = start.elapsed().as_secs_f64();
    emit(&json!({"rate": published as f64 / secs, "gbps": published as f64 * bytes / secs / 1e9, "published": published}).to_string())
}

/// A latency histogram, in nanoseconds: 1 ns to 60 s with three significant digits, in
/// bounded memory however long the demo runs.
fn latencies() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Percentile `q` (0..1) of `h`, in microseconds (0 when empty).
fn micros(h: &Histogram<u64>, q: f64) -> u64 {
    h.value_at_quantile(q) / 1000
}

/// A consumer: `lossless` takes every frame, `lossy` takes frames slowly (a 3 ms job after
/// each), `latest` takes the newest frame 30 times a second. Each checks every frame it
/// gets (number and bytes) and reports once a second, as a JSON line.
pub fn consumer(socket: &Path, name: &str, role: &str) -> Result {
    let client = connect(socket)?;
    let delivery = if role == "lossless" {
        Delivery::Lossless
    } else {
        Delivery::Lossy
    };
    let subscriber = client.subscribe_with::<u8>(
        name,
        mmshare::SubscribeOptions::new(delivery)
            .max_held(1)
            .start(mmshare::StartAt::Next),
    )?;
    emit("ready")?;
    let (mut received, mut bad) = (0u64, 0u64);
    let mut all = latencies();
    let mut window = latencies();
    let mut since = (Instant::now(), 0u64);
    let report = |received: u64,
                  bad: u64,
                  missed: u64,
                  window: &mut Histogram<u64>,
                  all: &Histogram<u64>,
                  since: &mut (Instant, u64)| {
        let secs = since.0.elapsed().as_secs_f64().max(1e-9);
        let line = json!({
            "rate": (received - since.1) as f64 / secs,
            "p50_us": micros(window, 0.5),
            "p99_us": micros(window, 0.99),
            "total_p50_us": micros(all, 0.5),
            "total_p99_us": micros(all, 0.99),
            "received": received,
            "missed": missed,
            "bad": bad,
        });
        window.reset();
        *since = (Instant::now(), received);
        emit(&line.to_string())
    };
    loop {
        let sample = if role == "latest" {
            std::thread::sleep(Duration::from_millis(33));
            match subscriber.latest()? {
                Some(s) => s,
                None => continue,
            }
        } else {
            match subscriber.receive_timeout(Duration::from_secs(30)) {
                Ok(s) => s,
                Err(StreamError::ReceiveTimeout { .. }) => {
                    return Err(format!("{role} consumer: no frame for 30 s").into());
                }
                Err(e) => return Err(e.to_string().into()),
            }
        };
        let latency = now_ns().saturating_sub(sample.published_ns());
        let number = u64::from_le_bytes(sample[..8].try_into().expect("8 bytes"));
        if number == u64::MAX {
            break;
        }
        if number != sample.number() || sample[8..].iter().any(|&b| b != number as u8) {
            bad += 1;
        }
        received += 1;
        // Saturating: a latency beyond the histogram's 60 s counts as 60 s.
        window.saturating_record(latency);
        all.saturating_record(latency);
        drop(sample);
        if role == "lossy" {
            // A job slower than the frame period: this consumer falls behind and skips.
            std::thread::sleep(Duration::from_millis(3));
        }
        if since.0.elapsed() >= Duration::from_secs(1) {
            report(
                received,
                bad,
                subscriber.missed(),
                &mut window,
                &all,
                &mut since,
            )?;
        }
    }
    report(
        received,
        bad,
        subscriber.missed(),
        &mut window,
        &all,
        &mut since,
    )
}
