//! Control state (sleeper counts, subscriber records, hold budgets) lives in sealed memfds
//! that the daemon makes and a descriptor keeper process holds across daemon restarts
//! (`mmshare-daemon/src/keeper.rs`). These tests restart real daemons under real pipelines.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Worker};
use mmshare::{Delivery, StreamOptions};

const WATCHDOG: Duration = Duration::from_secs(60);

fn socket(d: &Daemon) -> String {
    d.socket.display().to_string()
}

/// A lossless subscriber that joins after a daemon SIGKILL and restart, while the publisher
/// that attached before it keeps publishing, gets every frame published after it subscribed:
/// the publisher and the new subscriber share one control state (the keeper's), so the
/// publisher sees the new subscriber's cursor and holds. The subscriber from before the
/// restart gets every frame too.
#[test]
fn a_subscriber_joining_after_a_restart_gets_every_frame() {
    const FRAMES: u64 = 30_000;
    let mut d = Daemon::start(&[]);
    d.client()
        .create_stream(&StreamOptions::new("live", "u8", &[64]).slots(8))
        .unwrap();
    let sock = socket(&d);
    let last = (FRAMES - 1).to_string();
    // A lossless subscriber that takes 100 µs a frame paces the publisher (about 3 s).
    let mut early = Worker::spawn(&["stream-sub", &sock, "live", "lossless", &last, "100"]);
    early.expect_line("subscribed next=0", WATCHDOG);
    let publisher = Worker::spawn(&["stream-pub", &sock, "live", &FRAMES.to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    d.kill();
    d.restart();
    // The restarted daemon serves the state the pipeline uses: it sees the early subscriber.
    let info = match d.client().describe("live").unwrap() {
        mmshare::ObjectInfo::Stream(info) => info,
        other => panic!("{other:?}"),
    };
    assert_eq!(info.subscribers.len(), 1, "{info:?}");
    // Slower than the early one: with state the publisher did not share, it would be
    // overtaken and miss frames.
    let mut late = Worker::spawn(&["stream-sub", &sock, "live", "lossless-next", &last, "200"]);
    let joined = late.expect_line("subscribed next=", WATCHDOG);
    let next: u64 = joined["subscribed next=".len()..].parse().unwrap();
    assert!(
        next < FRAMES,
        "the late subscriber joined after the last frame: {joined}"
    );
    let (status, lines) = publisher.finish(WATCHDOG);
    assert!(status.success(), "publisher: {status:?} {lines:?}");
    let (status, lines) = late.finish(WATCHDOG);
    assert!(status.success(), "late subscriber: {status:?} {lines:?}");
    let want = format!("received={} missed=0", FRAMES - next);
    assert!(
        lines.iter().any(|l| l.starts_with(&want)),
        "{want}: {lines:?}"
    );
    let (status, lines) = early.finish(WATCHDOG);
    assert!(status.success(), "early subscriber: {status:?} {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("received={FRAMES} missed=0"))),
        "{lines:?}"
    );
}

/// An array reader asleep across a daemon restart is still counted in the control state a
/// writer opened after the restart gets, so that writer wakes it (one `FUTEX_WAKE`, counted
/// in this process) instead of leaving it to its 50 ms re-check.
#[test]
fn an_array_sleeper_from_before_a_restart_is_seen_by_a_writer_after_it() {
    let mut d = Daemon::start(&[]);
    let reader = {
        let c = d.client();
        c.create(&mmshare::CreateOptions::new("a", "u8", &[4]).memory())
            .unwrap();
        c.open_raw("a", mmshare::Access::Read).unwrap()
    };
    let waiter = std::thread::spawn(move || reader.wait_for_version(0, WATCHDOG));
    // It spins, yields, then sleeps on the futex within a few milliseconds.
    std::thread::sleep(Duration::from_millis(300));
    d.kill();
    d.restart();
    let writer = d.client().open_raw("a", mmshare::Access::Write).unwrap();
    assert!(writer.has_control());
    let before = mmshare::internal::futex_wake_calls();
    writer.write_bytes(0, &[1; 32]).unwrap();
    assert_eq!(
        mmshare::internal::futex_wake_calls() - before,
        1,
        "the writer did not see the sleeper registered before the restart"
    );
    assert_eq!(waiter.join().unwrap().unwrap(), 1);
}

/// The daemon marks control state in use on the client's own open file description before it
/// sends it: a client that never takes the participant lock itself (here one speaking the
/// protocol raw) still keeps the state with the keeper across a daemon SIGKILL, well past the
/// keeper's once-a-second check for unused state.
#[test]
fn state_sent_to_a_client_counts_as_in_use_before_the_client_locks_it() {
    let mut d = Daemon::start(&[]);
    d.client()
        .create_stream(&StreamOptions::new("held", "u8", &[8]))
        .unwrap();
    let mut holder = Worker::spawn(&["raw-hold", &socket(&d), "held"]);
    holder.expect_line("holding", WATCHDOG);
    d.kill();
    // The keeper, with no daemon, drops unused state once a second.
    std::thread::sleep(Duration::from_millis(2500));
    d.restart();
    holder.kill(); // before the assertion, so a failure leaves no process behind
    assert!(
        d.log_has("kept the control state a previous daemon left with the keeper"),
        "{:?}",
        d.log()
    );
}

/// The pid of the descriptor keeper that serves `d`'s memory directory (from its socket's
/// peer credentials), if one runs.
fn keeper_pid(d: &Daemon) -> Option<u32> {
    use rustix::net;
    let fd = net::socket_with(
        net::AddressFamily::UNIX,
        net::SocketType::SEQPACKET,
        net::SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    let addr = net::SocketAddrUnix::new(d.mem_dir().join(".keeper.sock")).ok()?;
    net::connect(&fd, &addr).ok()?;
    let cred = net::sockopt::socket_peercred(&fd).ok()?;
    Some(cred.pid.as_raw_nonzero().get() as u32)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// The keeper outlives a stopped daemon only while some process still uses control state: it
/// stays while a subscriber lives, and exits once the subscriber is gone.
#[test]
fn the_keeper_stays_only_while_control_state_is_in_use() {
    let mut d = Daemon::start(&[]);
    d.client()
        .create_stream(&StreamOptions::new("s", "u8", &[8]))
        .unwrap();
    let pid = keeper_pid(&d).expect("a keeper serves the daemon");
    let subscriber = d.client().subscribe::<u64>("s", Delivery::Lossy).unwrap();
    d.stop_with(rustix::process::Signal::TERM);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        alive(pid),
        "the keeper left while a subscriber used its state"
    );
    drop(subscriber);
    let start = Instant::now();
    while alive(pid) {
        assert!(
            start.elapsed() < WATCHDOG,
            "watchdog: the keeper never exits"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With `--no-fd-keeper` no keeper runs, and the daemon still serves.
#[test]
fn a_daemon_without_a_keeper_starts_none() {
    let d = Daemon::start(&["--no-fd-keeper"]);
    d.client()
        .create_stream(&StreamOptions::new("s", "u8", &[8]))
        .unwrap();
    assert_eq!(keeper_pid(&d), None);
    assert!(!d.log_has("descriptor keeper reached"));
}
