//! Waiting for a new version across processes: a sleeping reader is woken through the shared
//! futex in the mapping (a private futex would never wake it), and a quiet array times out.

mod common;

use std::time::Duration;

use common::{Worker, field, make_array};
use mmshare::{Access, DType, RawArray};

const WATCHDOG: Duration = Duration::from_secs(30);

fn proc_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .unwrap_or('?')
}

/// A reader process asleep in `wait_for_version` is woken by a write in this process, through
/// a futex wake (counted by the waiter), not by polling.
#[test]
fn futex_wake_crosses_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_array(dir.path(), "wake", DType::U8, &[64]);
    let writer = RawArray::open(&path, Access::Write).unwrap();
    let mut waiter = Worker::spawn(&["wait", path.to_str().unwrap(), "0", "20000"]);
    waiter.expect_line("waiting", WATCHDOG);
    // It gets past spinning and yielding into the futex sleep: it must be seen asleep, not
    // burning CPU. (It re-checks every 50 ms, so a single sample can catch it running: wait
    // until it is seen sleeping; the watchdog fails a waiter that never sleeps.)
    let deadline = std::time::Instant::now() + WATCHDOG;
    while proc_state(waiter.pid()) != 'S' {
        assert!(
            std::time::Instant::now() < deadline,
            "a waiter on a quiet array should sleep"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(writer.write_bytes(0, &[1; 64]).unwrap(), 1);
    let (status, lines) = waiter.finish(WATCHDOG);
    assert!(status.success(), "{lines:?}");
    let line = lines
        .iter()
        .find(|l| l.starts_with("version="))
        .expect("version line");
    assert_eq!(field(line, "version"), 1);
    assert!(
        field(line, "futex_wakeups") >= 1,
        "woken by polling, not by the futex: {line}"
    );
}

/// With no write, a waiter in another process gives up at its timeout and says so.
#[test]
fn wait_times_out_when_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_array(dir.path(), "quiet", DType::U8, &[8]);
    let waiter = Worker::spawn(&["wait", path.to_str().unwrap(), "0", "200"]);
    let (status, lines) = waiter.finish(WATCHDOG);
    assert_eq!(status.code(), Some(4), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("timeout: no version newer than 0")),
        "{lines:?}"
    );
}
