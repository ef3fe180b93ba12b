//! Zenoh 1.10 publish-subscribe over its shared-memory transport, as a peer in the same run.
//!
//! Configured the way Zenoh's documentation sets up zero-copy between local processes: the
//! `shared-memory` feature, `transport/shared_memory/enabled` (its default once the feature is
//! on) with the SHM subsystem initialised when the session opens (`mode: "init"`, so that no
//! measured message pays for it), a POSIX SHM provider (`ShmProviderBuilder::default_backend`)
//! whose buffers the publisher allocates, fills in place and puts; subscribers get the same
//! buffer mapped (`ZBytes::as_shm`), and every receiver checks that each payload really came
//! through shared memory (it fails the run otherwise). Two peers, no router, no scouting: the
//! listener's Unix-socket endpoint is given to the other side explicitly (the socket carries
//! Zenoh's small messages naming the SHM buffer, not the payload). Publishers use reliable
//! delivery with `CongestionControl::Block` (lossless, as the other peers' rows) and
//! `express(true)` for the latency rows (no batching, as Zenoh's own z_ping does).
//!
//! A message can go missing on this path with no error on either side (the receiver simply
//! never gets it; one way it happens is Zenoh's watchdog invalidating a buffer still in transit
//! when the receiving thread was descheduled for over 100 ms, eclipse-zenoh/zenoh#2628). A
//! receiver therefore waits at most [`TIMEOUT`], and [`again_after_a_loss`] runs such a case
//! again from the start (fresh sessions, sockets and processes), at most [`ATTEMPTS`] times;
//! the errors of the attempts that failed go into the results, and the report says so.
//!
//! Zenoh has no busy-wait receive across processes: a frame's arrival is signalled on the
//! session's socket and read by the session's own threads, which hand the sample to the
//! subscriber's channel. Each receiver therefore blocks in the channel's `recv`, and the
//! session threads are not pinned (pinned beside a spinning thread they would starve).

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use zenoh::Wait;
use zenoh::qos::CongestionControl;
use zenoh::shm::{
    BlockOn, GarbageCollect, PosixShmProviderBackend, ShmProvider, ShmProviderBuilder,
};

use super::{
    Dist, Result, fill, finish, one_way, pin, ready, spawn, spawn_consumers, touch, wait_ready,
};

/// How long a receiver waits for one message before it fails the attempt (every message of a
/// run that finishes arrives within milliseconds).
const TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a Zenoh case is started before its failure ends the run.
const ATTEMPTS: usize = 3;

/// Runs `case` (given the attempt's number, for names of its own) until it succeeds, at most
/// [`ATTEMPTS`] times; its figure and the errors of the attempts before it, each also shown
/// on standard error as it happens.
pub(super) fn again_after_a_loss<T>(
    what: &str,
    mut case: impl FnMut(usize) -> Result<T>,
) -> Result<(T, Vec<String>)> {
    let mut failed = Vec::new();
    loop {
        match case(failed.len()) {
            Ok(figure) => return Ok((figure, failed)),
            Err(e) if failed.len() + 1 < ATTEMPTS => {
                eprintln!("{what}: {e}; running it again from the start");
                failed.push(e);
            }
            Err(e) => {
                return Err(format!(
                    "{what}: {e} (attempt {ATTEMPTS} of {ATTEMPTS}; the ones before: {})",
                    failed.join("; ")
                ));
            }
        }
    }
}

/// Kills and reaps the children of an attempt that failed, so that none of them outlives it.
fn reap(children: impl IntoIterator<Item = Child>) {
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A peer session listening on (`listen`) or connecting to (`connect`) the Unix socket `at`,
/// opened on a thread free to run on every CPU, so that the session's threads (which inherit
/// its affinity) are not pinned beside the caller.
fn session(at: &str, listen: bool) -> Result<zenoh::Session> {
    let endpoint = format!("[\"unixsock-stream/{at}\"]");
    let key = if listen {
        "listen/endpoints"
    } else {
        "connect/endpoints"
    };
    let mut config = zenoh::Config::default();
    for (k, v) in [
        ("mode", "\"peer\""),
        ("scouting/multicast/enabled", "false"),
        ("transport/shared_memory/enabled", "true"),
        ("transport/shared_memory/mode", "\"init\""),
        (key, endpoint.as_str()),
    ] {
        config
            .insert_json5(k, v)
            .map_err(|e| format!("zenoh config {k}: {e}"))?;
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut every = rustix::thread::CpuSet::new();
            for cpu in 0..super::cpus().min(rustix::thread::CpuSet::MAX_CPU) {
                every.set(cpu);
            }
            let _ = rustix::thread::sched_setaffinity(None, &every);
            zenoh::open(config)
                .wait()
                .map_err(|e| format!("zenoh open: {e}"))
        })
        .join()
        .map_err(|_| "zenoh open panicked".to_string())?
    })
}

/// An SHM provider with room for `buffers` messages of `size` bytes (and at least 1 MiB:
/// its allocator refuses tiny pools).
fn provider(size: usize, buffers: usize) -> Result<ShmProvider<PosixShmProviderBackend>> {
    ShmProviderBuilder::default_backend((size * buffers).max(1 << 20))
        .wait()
        .map_err(|e| format!("zenoh SHM provider: {e}"))
}

/// Allocates a buffer of `size` (waiting for one to come back when all are in use), fills it
/// with `round`'s bytes in place, and puts it.
fn put(
    publisher: &zenoh::pubsub::Publisher<'_>,
    provider: &ShmProvider<PosixShmProviderBackend>,
    size: usize,
    round: u64,
) -> Result {
    let mut buf = provider
        .alloc(size)
        .with_policy::<BlockOn<GarbageCollect>>()
        .wait()
        .map_err(|e| format!("zenoh SHM alloc: {e:?}"))?;
    fill(&mut buf, round);
    publisher
        .put(buf)
        .wait()
        .map_err(|e| format!("zenoh put: {e}"))
}

/// Waits for the next sample and reads every byte of its payload in place; an error if it did
/// not come through shared memory.
fn receive(
    subscriber: &zenoh::pubsub::Subscriber<
        zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>,
    >,
) -> Result<u64> {
    let sample = subscriber
        .recv_timeout(TIMEOUT)
        .map_err(|e| format!("zenoh receive: {e}"))?
        .ok_or_else(|| format!("zenoh: no message within {} s", TIMEOUT.as_secs()))?;
    let shm = sample
        .payload()
        .as_shm()
        .ok_or("zenoh: a payload did not come through shared memory")?;
    Ok(touch(shm))
}

fn declare_publisher(
    session: &zenoh::Session,
    key: &str,
    express: bool,
) -> Result<zenoh::pubsub::Publisher<'static>> {
    session
        .declare_publisher(key.to_string())
        .congestion_control(CongestionControl::Block)
        .express(express)
        .wait()
        .map_err(|e| format!("zenoh publisher: {e}"))
}

fn declare_subscriber(
    session: &zenoh::Session,
    key: &str,
) -> Result<zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>> {
    session
        .declare_subscriber(key.to_string())
        .wait()
        .map_err(|e| format!("zenoh subscriber: {e}"))
}

/// Gives the two peers' declarations time to reach each other before the first message.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

/// The child of the latency ping-pong (`__zenoh`): connects to `at` and echoes `rounds`
/// messages from the subscriber's callback, in the session's receiving thread (as Zenoh's own
/// z_pong does: no hand-off to another thread).
pub(super) fn child_latency(at: &str, size: usize, rounds: u64) -> Result {
    pin(1);
    let session = session(at, false)?;
    let provider = provider(size, 4)?;
    let publisher = declare_publisher(&session, "mmshare-bench/pong", true)?;
    let (done, finished) = std::sync::mpsc::channel::<Result>();
    let mut seen = 0u64;
    let _subscriber = session
        .declare_subscriber("mmshare-bench/ping")
        .callback_mut(move |sample| {
            let echoed = (|| {
                let shm = sample
                    .payload()
                    .as_shm()
                    .ok_or("zenoh: a payload did not come through shared memory")?;
                std::hint::black_box(touch(shm));
                seen += 1;
                put(&publisher, &provider, size, seen)
            })();
            if echoed.is_err() || seen == rounds {
                let _ = done.send(echoed);
            }
        })
        .wait()
        .map_err(|e| format!("zenoh subscriber: {e}"))?;
    settle();
    ready()?;
    finished
        .recv_timeout(TIMEOUT * 10)
        .map_err(|e| format!("zenoh: the echo did not finish: {e}"))??;
    // A provider that goes away invalidates its buffers, and a buffer still on its way is
    // then refused by the receiver: stay until the last reply has surely arrived.
    std::thread::sleep(Duration::from_secs(1));
    Ok(())
}

/// One-way latency: the parent puts, the child receives and replies, as the other cases
/// (`attempt` numbers the socket).
pub(super) fn latency(dir: &Path, size: usize, rounds: usize, attempt: usize) -> Result<Dist> {
    let at = dir.join(format!("zlat{size}-{attempt}.sock"));
    let at = at.to_str().expect("utf-8");
    let session = session(at, true)?;
    let provider = provider(size, 4)?;
    let publisher = declare_publisher(&session, "mmshare-bench/ping", true)?;
    let subscriber = declare_subscriber(&session, "mmshare-bench/pong")?;
    let total = (rounds + rounds / 10) as u64;
    let mut child = spawn(&["__zenoh", at, &size.to_string(), &total.to_string()])?;
    let measured = wait_ready(&mut child).and_then(|()| {
        settle();
        one_way(rounds, |i| {
            put(&publisher, &provider, size, i)?;
            std::hint::black_box(receive(&subscriber)?);
            Ok(())
        })
    });
    match measured {
        Ok(r) => {
            drop(subscriber);
            finish(child)?;
            Ok(r)
        }
        Err(e) => {
            reap([child]);
            Err(e)
        }
    }
}

/// A throughput consumer (`__consumer zenoh AT -`): receives `frames` frames.
pub(super) fn consumer(at: &str, frames: u64) -> Result<u64> {
    let session = session(at, false)?;
    let subscriber = declare_subscriber(&session, "mmshare-bench/frames")?;
    settle();
    ready()?;
    let mut sum = 0u64;
    for got in 0..frames {
        // How far it came tells a frame lost at the start (sent before this subscriber was
        // known) from one lost on the way.
        let bytes = receive(&subscriber).map_err(|e| format!("{e} ({got} of {frames} came)"))?;
        sum = sum.wrapping_add(bytes);
    }
    Ok(sum)
}

/// Frames per second to `n` consumer processes, every frame to every consumer (reliable,
/// blocking congestion control), 8 buffers in the pool as iceoryx2's subscribers get 8
/// (`attempt` numbers the socket).
pub(super) fn throughput(
    dir: &Path,
    size: usize,
    frames: usize,
    n: usize,
    attempt: usize,
) -> Result<f64> {
    let at = dir.join(format!("zthr{size}x{n}-{attempt}.sock"));
    let at = at.to_str().expect("utf-8");
    let session = session(at, true)?;
    let provider = provider(size, 8)?;
    let publisher = declare_publisher(&session, "mmshare-bench/frames", false)?;
    let mut children = spawn_consumers("zenoh", (at, "-"), size, frames, 0, n)?;
    let started = children.iter_mut().try_for_each(wait_ready).and_then(|()| {
        settle();
        let start = Instant::now();
        for i in 0..frames as u64 {
            put(&publisher, &provider, size, i)?;
        }
        Ok(start)
    });
    let start = match started {
        Ok(start) => start,
        Err(e) => {
            reap(children);
            return Err(e);
        }
    };
    // A consumer that lost a frame fails after its timeout; the others are then reaped.
    let mut children = children.into_iter();
    while let Some(c) = children.next() {
        if let Err(e) = finish(c) {
            reap(children);
            return Err(e);
        }
    }
    Ok(frames as f64 / start.elapsed().as_secs_f64())
}
