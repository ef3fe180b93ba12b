//! Whether a subscriber or publisher lives is the kernel's word, not `/proc`'s: each holds an
//! exclusive OFD lock on a byte of the stream's control state (its record's, or the
//! publisher's) that the kernel drops when it dies or execs. These tests put real processes
//! where `/proc` misleads: in another pid namespace, and after an `exec`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, Worker};
use mmshare::{DType, Publisher, StreamOptions, StreamSpec};

const WATCHDOG: Duration = Duration::from_secs(60);

fn unshare_works() -> bool {
    let ok = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: `unshare --pid --fork --mount-proc` does not work here (needs root)");
    }
    ok
}

/// A subscriber in another pid namespace (with its own /proc: its pid means another process
/// here) is not reclaimed while it lives, and gets every frame. Judged from `/proc`, its
/// record named a process that is not it, and the publisher's reclaim freed it at once.
#[test]
fn a_subscriber_in_another_pid_namespace_is_not_reclaimed_while_alive() {
    if !unshare_works() {
        return;
    }
    const FRAMES: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) =
        mmshare::create_stream_files(dir.path(), &StreamSpec::new("ns", DType::U64, vec![64]))
            .unwrap();
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let path_arg = path.display().to_string();
    let mut sub = Worker::spawn_program(
        Path::new("unshare"),
        &[
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            common::worker_path(),
            "path-sub",
            &path_arg,
            &FRAMES.to_string(),
        ],
        &[],
    );
    sub.expect_line("subscribed", WATCHDOG);
    assert_eq!(
        publisher.reclaim_dead_subscribers(),
        0,
        "a live subscriber in another pid namespace was reclaimed"
    );
    for _ in 0..FRAMES {
        let mut loan = publisher.loan().unwrap();
        let n = loan.number();
        for (i, x) in loan.iter_mut().enumerate() {
            *x = common::pattern(n, i);
        }
        loan.publish();
    }
    let (status, lines) = sub.finish(WATCHDOG);
    assert!(status.success(), "subscriber: {status:?} {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("received={FRAMES} missed=0")),
        "{lines:?}"
    );
}

/// A subscriber whose process execs another program (same pid, same start time) is gone as a
/// subscriber: the daemon reclaims its record. Judged from `/proc`, it lived for ever and its
/// lossless cursor held the publisher back for good.
#[test]
fn a_subscriber_that_execs_is_reclaimed() {
    let d = Daemon::start(&[]);
    let sock = d.socket.display().to_string();
    let c = d.client();
    c.create_stream(&StreamOptions::new("x", "<u8", &[8]).slots(8).memory())
        .unwrap();
    // A subscriber of this process keeps the stream in use, so the daemon keeps its control
    // state (and must judge the other record on its own).
    let ours = c.subscribe::<u64>("x", mmshare::Delivery::Lossy).unwrap();
    let mut sub = Worker::spawn(&["subscribe-then-exec", &sock, "x"]);
    sub.expect_line("subscribed", WATCHDOG);
    let subscribers = || match c.describe("x").unwrap() {
        mmshare::ObjectInfo::Stream(info) => info.subscribers.len(),
        other => panic!("{other:?}"),
    };
    let deadline = std::time::Instant::now() + WATCHDOG;
    while subscribers() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog: the exec'd subscriber's record was never reclaimed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The publisher is not held back by it.
    let mut publisher = c.publisher::<u64>("x").unwrap();
    publisher.set_timeout(WATCHDOG);
    for _ in 0..20 {
        publisher.loan().unwrap().publish();
    }
    drop(ours);
    sub.kill();
}

/// A reader killed while asleep (counted in the array's sleeper count) does not leave every
/// later write with a `FUTEX_WAKE` system call: its presence lock went with it, and the
/// daemon's periodic check takes the count back. Judged by this process's count of wake
/// calls (a watchdog is only the failure condition).
#[test]
fn a_reader_killed_asleep_leaves_writes_without_system_calls() {
    let d = Daemon::start(&[]);
    let sock = d.socket.display().to_string();
    let c = d.client();
    let writer = c
        .create(&mmshare::CreateOptions::new("x", "<u8", &[1]).memory())
        .unwrap();
    let mut saw_the_sleeper = false;
    for _attempt in 0..5 {
        let mut reader = Worker::spawn(&["client-wait", &sock, "x"]);
        reader.expect_line("waiting", WATCHDOG);
        // Past its spinning and yielding: asleep, counted.
        std::thread::sleep(Duration::from_millis(300));
        reader.kill();
        let before = mmshare::internal::futex_wake_calls();
        writer.write_bytes(0, &[1]).unwrap();
        saw_the_sleeper |= mmshare::internal::futex_wake_calls() > before;
        let deadline = std::time::Instant::now() + WATCHDOG;
        loop {
            let before = mmshare::internal::futex_wake_calls();
            for _ in 0..10 {
                writer.write_bytes(0, &[2]).unwrap();
            }
            if mmshare::internal::futex_wake_calls() == before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "watchdog: writes still call FUTEX_WAKE for a reader killed asleep"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if saw_the_sleeper {
            return;
        }
    }
    panic!("the killed reader was never seen counted as a sleeper: the test proved nothing");
}

/// A writer whose process execs in the middle of a write (same pid, same start time) is gone
/// as a writer: its write handle's registration lock went with the exec, and the daemon
/// recovers the write (TORN, a new version). Judged from `/proc`, it lived for ever and the
/// array stayed mid-write.
#[test]
fn a_writer_that_execs_mid_write_is_recovered() {
    let d = Daemon::start(&[]);
    let sock = d.socket.display().to_string();
    let c = d.client();
    drop(
        c.create(&mmshare::CreateOptions::new("w", "<u8", &[4]).memory())
            .unwrap(),
    );
    let mut writer = Worker::spawn(&["hold-then-exec", &sock, "w"]);
    writer.expect_line("holding", WATCHDOG);
    let deadline = std::time::Instant::now() + WATCHDOG;
    loop {
        let info = c.stat("w").unwrap();
        if info.torn && info.version >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog: the write of a writer that exec'd was never recovered: {info:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.kill();
}
