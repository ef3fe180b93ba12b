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
//! Zenoh has no busy-wait receive across processes: a frame's arrival is signalled on the
//! session's socket and read by the session's own threads, which hand the sample to the
//! subscriber's channel. Each receiver therefore blocks in the channel's `recv`, and the
//! session threads are not pinned (pinned beside a spinning thread they would starve).

use std::path::Path;
use std::time::{Duration, Instant};

use zenoh::Wait;
use zenoh::qos::CongestionControl;
use zenoh::shm::{
    BlockOn, GarbageCollect, PosixShmProviderBackend, ShmProvider, ShmProviderBuilder,
};

use super::{
    Dist, Result, fill, finish, one_way, pin, ready, spawn, spawn_consumers, touch, wait_ready,
};

/// How long a receiver waits for one message before it fails the run.
const TIMEOUT: Duration = Duration::from_secs(30);

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
        .ok_or("zenoh: no message within 30 s")?;
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

/// One-way latency: the parent puts, the child receives and replies, as the other cases.
pub(super) fn latency(dir: &Path, size: usize, rounds: usize) -> Result<Dist> {
    let at = dir.join(format!("zlat{size}.sock"));
    let at = at.to_str().expect("utf-8");
    let session = session(at, true)?;
    let provider = provider(size, 4)?;
    let publisher = declare_publisher(&session, "mmshare-bench/ping", true)?;
    let subscriber = declare_subscriber(&session, "mmshare-bench/pong")?;
    let total = (rounds + rounds / 10) as u64;
    let mut child = spawn(&["__zenoh", at, &size.to_string(), &total.to_string()])?;
    wait_ready(&mut child)?;
    settle();
    let r = one_way(rounds, |i| {
        put(&publisher, &provider, size, i)?;
        std::hint::black_box(receive(&subscriber)?);
        Ok(())
    })?;
    drop(subscriber);
    finish(child)?;
    Ok(r)
}

/// A throughput consumer (`__consumer zenoh AT -`): receives `frames` frames.
pub(super) fn consumer(at: &str, frames: u64) -> Result<u64> {
    let session = session(at, false)?;
    let subscriber = declare_subscriber(&session, "mmshare-bench/frames")?;
    settle();
    ready()?;
    let mut sum = 0u64;
    for _ in 0..frames {
        sum = sum.wrapping_add(receive(&subscriber)?);
    }
    Ok(sum)
}

/// Frames per second to `n` consumer processes, every frame to every consumer (reliable,
/// blocking congestion control), 8 buffers in the pool as iceoryx2's subscribers get 8.
pub(super) fn throughput(dir: &Path, size: usize, frames: usize, n: usize) -> Result<f64> {
    let at = dir.join(format!("zthr{size}x{n}.sock"));
    let at = at.to_str().expect("utf-8");
    let session = session(at, true)?;
    let provider = provider(size, 8)?;
    let publisher = declare_publisher(&session, "mmshare-bench/frames", false)?;
    let mut children = spawn_consumers("zenoh", (at, "-"), size, frames, 0, n)?;
    for c in &mut children {
        wait_ready(c)?;
    }
    settle();
    let start = Instant::now();
    for i in 0..frames as u64 {
        put(&publisher, &provider, size, i)?;
    }
    for c in children {
        finish(c)?;
    }
    Ok(frames as f64 / start.elapsed().as_secs_f64())
}
