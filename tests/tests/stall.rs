//! A stream's stall policy: what its publisher does about a lossless subscriber that keeps it
//! waiting for a slot. Real processes; the stalled subscriber is stopped with SIGSTOP. Judged
//! by counters: the publisher gets through all its frames (with the default policy it would
//! wait for the stopped subscriber until its loan times out, the failure), and the stopped
//! subscriber, once continued, accounts for every frame as received or missed.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Worker};
use mmshare::{StallPolicy, StreamOptions};
use rustix::process::{Pid, Signal, kill_process};

const WATCHDOG: Duration = Duration::from_secs(60);
const FRAMES: u64 = 2000;

/// Stops `w` and waits until it is stopped.
fn stop(w: &Worker) {
    let pid = w.pid();
    kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::STOP).unwrap();
    let deadline = Instant::now() + WATCHDOG;
    while !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with(['T', 't']))
    }) {
        assert!(
            Instant::now() < deadline,
            "watchdog: the worker did not stop"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn cont(w: &Worker) {
    kill_process(Pid::from_raw(w.pid() as i32).unwrap(), Signal::CONT).unwrap();
}

/// A stream with `policy`, a lossless subscriber stopped right after subscribing, a lossy one
/// and a publisher of `FRAMES` frames: returns the stopped subscriber (not yet continued).
fn pipeline(d: &Daemon, policy: StallPolicy) -> Worker {
    let sock = d.socket.display().to_string();
    d.client()
        .create_stream(
            &StreamOptions::new("s", "<u8", &[64])
                .slots(8)
                .memory()
                .on_stall(policy),
        )
        .unwrap();
    let last = (FRAMES - 1).to_string();
    let mut stalled = Worker::spawn(&["stream-sub", &sock, "s", "lossless", &last]);
    stalled.expect_line("subscribed next=0", WATCHDOG);
    stop(&stalled);
    let mut lossy = Worker::spawn(&["stream-sub", &sock, "s", "lossy", &last]);
    lossy.expect_line("subscribed", WATCHDOG);
    let publisher = Worker::spawn(&["stream-pub", &sock, "s", &FRAMES.to_string()]);
    let (status, lines) = publisher.finish(WATCHDOG);
    assert!(
        status.success(),
        "the publisher did not get past the stopped subscriber: {status:?} {lines:?}"
    );
    let (status, lines) = lossy.finish(WATCHDOG);
    assert!(
        status.success(),
        "the lossy subscriber: {status:?} {lines:?}"
    );
    stalled
}

#[test]
fn a_stopped_lossless_subscriber_is_demoted_and_counts_what_it_missed() {
    let d = Daemon::start(&[]);
    let stalled = pipeline(
        &d,
        StallPolicy::Demote {
            after: Duration::from_millis(200),
        },
    );
    // The daemon shows it lossy now.
    match d.client().describe("s").unwrap() {
        mmshare::ObjectInfo::Stream(info) => {
            assert!(
                info.subscribers.iter().all(|s| !s.lossless),
                "{:?}",
                info.subscribers
            );
            assert_eq!(
                info.stall,
                mmshare::internal::proto::WireStall::Demote { after_ms: 200 }
            );
        }
        other => panic!("{other:?}"),
    }
    cont(&stalled);
    let (status, lines) = stalled.finish(WATCHDOG);
    assert!(status.success(), "{status:?} {lines:?}");
    let last = lines
        .iter()
        .find(|l| l.starts_with("received="))
        .unwrap_or_else(|| panic!("{lines:?}"));
    let field = |k: &str| common::field(last, k);
    assert!(last.ends_with("demoted=true"), "{last}");
    assert!(field("missed") > 0, "{last}");
    assert_eq!(field("received") + field("missed"), FRAMES, "{last}");
}

#[test]
fn a_stopped_lossless_subscriber_is_evicted_under_the_evict_policy() {
    let d = Daemon::start(&[]);
    let stalled = pipeline(
        &d,
        StallPolicy::Evict {
            after: Duration::from_millis(200),
        },
    );
    cont(&stalled);
    let (status, lines) = stalled.finish(WATCHDOG);
    assert_eq!(status.code(), Some(5), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("evicted")), "{lines:?}");
}

/// The policy is stored in the stream's data file: it survives a daemon restart, and
/// exist_ok treats it as part of the stream.
#[test]
fn the_policy_is_kept_in_the_file_and_compared_by_exist_ok() {
    let mut d = Daemon::start(&[]);
    let options = StreamOptions::new("p", "<u8", &[8])
        .slots(4)
        .on_stall(StallPolicy::Evict {
            after: Duration::from_millis(1500),
        });
    d.client().create_stream(&options).unwrap();
    d.restart();
    let info = d
        .client()
        .create_stream(&options.clone().exist_ok(true))
        .unwrap();
    assert_eq!(
        info.stall,
        mmshare::internal::proto::WireStall::Evict { after_ms: 1500 }
    );
    let other = d
        .client()
        .create_stream(&options.on_stall(StallPolicy::Block).exist_ok(true));
    assert!(matches!(
        other,
        Err(mmshare::ClientError::Server {
            kind: mmshare::ErrorKind::AlreadyExists,
            ..
        })
    ));
}
