//! Descriptors are a budgeted resource of the daemon: it holds an object open (its data file,
//! mapped, and its control state) only while some process uses it, never more at once than its
//! descriptor limit allows, and says Busy, naming the limit, when every place is taken. These
//! tests run real daemons under a low `RLIMIT_NOFILE`.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Worker};
use mmshare::{Access, ClientError, CreateOptions, ErrorKind, ObjectInfo, StreamOptions};

const WATCHDOG: Duration = Duration::from_secs(60);

/// The daemon's descriptor limit in these tests. With `--max-connections 16` the daemon keeps
/// 64 for itself and 32 for connections, which leaves places for (256 - 64 - 32) / 3 = 53 open
/// objects.
const NOFILE: u64 = 256;
const OPEN_PLACES: usize = 53;

fn limited_daemon() -> Daemon {
    Daemon::start_with_nofile(&["--max-connections", "16"], NOFILE)
}

/// Polls `f` until it holds, or panics after the watchdog.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !f() {
        assert!(Instant::now() < deadline, "watchdog: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ten times more arrays (and some streams) than the daemon has descriptors: all are created,
/// survive a restart of the daemon under the same limit, and each one opens afterwards with its
/// own contents. The daemon holds about as many descriptors after serving them all as before.
#[test]
fn a_daemon_serves_ten_times_more_objects_than_its_descriptor_limit() {
    const ARRAYS: u64 = 10 * NOFILE;
    const STREAMS: u64 = NOFILE / 2;
    let mut d = limited_daemon();
    let c = d.client();
    for i in 0..ARRAYS {
        let a = c
            .create(&CreateOptions::new(format!("a{i}"), "u8", &[8]).memory())
            .unwrap_or_else(|e| panic!("create a{i}: {e}"));
        a.write_bytes(0, &i.to_le_bytes()).unwrap();
    }
    for i in 0..STREAMS {
        c.create_stream(&StreamOptions::new(format!("s{i}"), "u1", &[16]).slots(4))
            .unwrap_or_else(|e| panic!("create s{i}: {e}"));
    }
    drop(c);
    d.restart();
    let baseline = d.fd_count();
    assert!(
        baseline < NOFILE as usize / 2,
        "the restarted daemon holds {baseline} descriptors for objects nobody uses"
    );
    let c = d.client();
    for i in 0..ARRAYS {
        let a = c
            .open_raw(&format!("a{i}"), Access::Read)
            .unwrap_or_else(|e| panic!("open a{i} after the restart: {e}"));
        let mut got = [0u8; 8];
        a.read_bytes(0, &mut got).unwrap();
        assert_eq!(u64::from_le_bytes(got), i, "contents of a{i}");
    }
    for i in 0..STREAMS {
        let name = format!("s{i}");
        let sub = c
            .subscribe::<u8>(&name, mmshare::Delivery::Lossless)
            .unwrap_or_else(|e| panic!("subscribe to {name} after the restart: {e}"));
        drop(sub);
        match c.describe(&name).unwrap() {
            ObjectInfo::Stream(info) => assert_eq!(info.name, name),
            other => panic!("{name} described as {other:?}"),
        }
    }
    let listed = c.list_all("").unwrap();
    assert_eq!(listed.len() as u64, ARRAYS + STREAMS);
    drop(c);
    // Objects nobody uses any more are closed by the periodic check.
    eventually("the daemon closes what nobody uses", || {
        d.fd_count() <= baseline + 4
    });
}

/// Objects in use hold their places: with every place taken by arrays a client keeps open,
/// opening one more is refused with Busy naming the descriptor limit (not an Internal error,
/// not a hang); once the client lets one go, the open succeeds.
#[test]
fn a_daemon_with_every_place_in_use_answers_busy_naming_its_limit() {
    let d = limited_daemon();
    let c = d.client();
    for i in 0..=OPEN_PLACES {
        c.create(&CreateOptions::new(format!("a{i}"), "u8", &[8]).memory())
            .unwrap();
    }
    // All created handles are dropped: nothing is in use now.
    let mut held = Vec::new();
    for i in 0..OPEN_PLACES {
        held.push(
            c.open_raw(&format!("a{i}"), Access::Read)
                .unwrap_or_else(|e| panic!("open a{i} of {OPEN_PLACES}: {e}")),
        );
    }
    let last = format!("a{OPEN_PLACES}");
    match c.open_raw(&last, Access::Read) {
        Err(ClientError::Server {
            kind: ErrorKind::Busy,
            message,
        }) => {
            assert!(
                message.contains(&format!("RLIMIT_NOFILE {NOFILE}"))
                    && message.contains(&format!("{OPEN_PLACES} objects open")),
                "{message}"
            );
        }
        Err(e) => panic!("one open past the budget: {e}"),
        Ok(_) => panic!("one open past the budget of {OPEN_PLACES} succeeded"),
    }
    // The daemon keeps serving everything that does not need a place.
    assert_eq!(c.stat(&last).unwrap().name, last);
    held.pop();
    eventually("a place comes free once a user lets go", || {
        c.open_raw(&last, Access::Read).is_ok()
    });
}

/// An object the daemon closed while nobody used it comes back with fresh control state that
/// works: a reader asleep waiting for a version is woken by a writer that opened the array
/// after the close (both share the new control state).
#[test]
fn an_array_closed_while_unused_works_when_opened_again() {
    let d = limited_daemon();
    let c = d.client();
    c.stat("absent").unwrap_err(); // connected: the connection's descriptor is counted
    let before = d.fd_count();
    drop(
        c.create(&CreateOptions::new("x", "u8", &[4]).memory())
            .unwrap(),
    );
    eventually("the daemon closes the unused array", || {
        d.fd_count() <= before
    });
    let reader = c.open_raw("x", Access::Read).unwrap();
    let writer = c.open_raw("x", Access::Write).unwrap();
    let from = reader.version();
    let waiter = std::thread::spawn(move || reader.wait_for_version(from, WATCHDOG));
    std::thread::sleep(Duration::from_millis(100));
    writer.write_bytes(0, &7u64.to_le_bytes()).unwrap();
    let woke = waiter.join().unwrap().expect("woken by the write");
    assert_eq!(woke, from + 1);
}

/// A client at its own descriptor limit is told so, as a local error naming its limit (not a
/// protocol error, not a daemon error), and the daemon is none the worse: the array it opened
/// for that client is closed again once nobody holds it.
#[test]
fn a_client_out_of_descriptors_gets_a_local_error() {
    let mut d = limited_daemon();
    let c = d.client();
    c.stat("absent").unwrap_err();
    let before = d.fd_count();
    drop(
        c.create(&CreateOptions::new("x", "u1", &[8]).memory())
            .unwrap(),
    );
    let sock = d.socket.display().to_string();
    let (status, lines) = Worker::spawn(&["open-at-fd-limit", &sock, "x"]).finish(WATCHDOG);
    assert!(status.success(), "{status:?} {lines:?}");
    let line = lines
        .iter()
        .find(|l| l.starts_with("error="))
        .unwrap_or_else(|| panic!("no error reported: {lines:?}"));
    assert!(
        line.starts_with("error=OutOfDescriptors") && line.contains("RLIMIT_NOFILE"),
        "{line}"
    );
    assert!(d.is_running());
    eventually("the daemon closes what the failed client was sent", || {
        d.fd_count() <= before
    });
}
