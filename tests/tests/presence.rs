//! Presence across real processes and a real daemon: waiting until a stream exists, a
//! publisher waiting for its subscribers, and watching objects and subscribers come and go.
//! "Woken, not polled" is judged by counters (the daemon's metrics, this thread's futex
//! sleeps), never by a clock.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::{Daemon, Worker};
use mmshare::{Delivery, ErrorKind, ObjectInfo, StreamOptions, WatchEvent};

const WATCHDOG: Duration = Duration::from_secs(120);

fn socket(daemon: &Daemon) -> String {
    daemon.socket.display().to_string()
}

/// The daemon's metrics, scraped over its Unix socket.
fn metrics(path: &Path) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// The value of the metric line that starts with `prefix`, 0 when there is none.
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

/// `wait_for` answers when the stream is created (one request; the daemon looked again once,
/// at that creation, although other objects were created meanwhile), at once when it exists,
/// and with a clean Timeout when it never comes.
#[test]
fn wait_for_is_woken_by_the_creation_and_times_out_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = dir.path().join("metrics.sock");
    let daemon = Daemon::start(&["--metrics", endpoint.to_str().unwrap()]);
    let client = daemon.client();
    let waiter = {
        let client = daemon.client();
        std::thread::spawn(move || client.wait_for("cam.late", WATCHDOG))
    };
    // Other objects come and go first; they do not wake the wait.
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..5 {
        let name = format!("other{i}");
        client
            .create_stream(&StreamOptions::new(&name, "u1", &[4]))
            .unwrap();
        client.delete(&name).unwrap();
    }
    client
        .create_stream(&StreamOptions::new("cam.late", "u1", &[16]))
        .unwrap();
    match waiter.join().unwrap().unwrap() {
        ObjectInfo::Stream(info) => assert_eq!(info.shape, [16]),
        other => panic!("{other:?}"),
    }
    let text = metrics(&endpoint);
    assert_eq!(
        metric(&text, "mmshare_requests_total{kind=\"wait_for\"}"),
        1,
        "{text}"
    );
    assert_eq!(metric(&text, "mmshare_wait_rechecks_total"), 1, "{text}");

    // There already: at once, no look again.
    assert!(matches!(
        client.wait_for("cam.late", Duration::ZERO).unwrap(),
        ObjectInfo::Stream(_)
    ));
    // Never comes.
    let e = client
        .wait_for("cam.never", Duration::from_millis(300))
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Timeout), "{e}");
    assert!(e.to_string().contains("\"cam.never\""), "{e}");
    // A bad name is refused at once, not waited for.
    let e = client.wait_for("../x", WATCHDOG).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::InvalidName), "{e}");
    // The daemon serves a scrape from a snapshot at most a second old.
    std::thread::sleep(Duration::from_millis(1100));
    let text = metrics(&endpoint);
    assert_eq!(metric(&text, "mmshare_wait_rechecks_total"), 1, "{text}");
    assert_eq!(
        metric(&text, "mmshare_errors_total{kind=\"timeout\"}"),
        1,
        "{text}"
    );
    // The client's connection still serves requests.
    client.list_all("").unwrap();
}

/// A publisher waits for a subscriber process: one futex sleep of this thread, ended by the
/// subscriber's wake.
#[test]
fn a_publisher_is_woken_when_a_subscriber_process_joins() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    client
        .create_stream(&StreamOptions::new("joined", "uint64", &[64]))
        .unwrap();
    let mut publisher = client.publisher::<u64>("joined").unwrap();
    let sub = Worker::spawn(&["stream-sub", &socket(&daemon), "joined", "lossless", "9"]);
    let (waits, woken) = mmshare::internal::futex_wait_calls();
    assert_eq!(publisher.wait_for_subscribers(1, WATCHDOG).unwrap(), 1);
    let (waits_after, woken_after) = mmshare::internal::futex_wait_calls();
    // The subscriber may have joined before the first look (no sleep at all).
    assert!(
        waits_after - waits <= 1 && woken_after - woken == waits_after - waits,
        "{} sleeps, {} woken",
        waits_after - waits,
        woken_after - woken
    );
    for n in 0..10u64 {
        let mut loan = publisher.loan().unwrap();
        for (i, x) in loan.iter_mut().enumerate() {
            *x = common::pattern(n, i);
        }
        loan.publish();
    }
    let (status, lines) = sub.finish(WATCHDOG);
    assert!(status.success(), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("received=10 missed=0")),
        "{lines:?}"
    );
    // Gone again: waiting for 1 now times out, cleanly.
    publisher
        .files()
        .wait_for_members(WATCHDOG, |n| n == 0)
        .unwrap();
    let e = publisher
        .wait_for_subscribers(1, Duration::from_millis(200))
        .unwrap_err();
    assert!(e.to_string().contains("has 0 subscribers"), "{e}");
}

/// Takes watch events until `want` holds for one, skipping others; panics after the watchdog.
fn expect_event(watch: &mut mmshare::Watch, want: impl Fn(&WatchEvent) -> bool) -> WatchEvent {
    loop {
        match watch.next_timeout(Some(WATCHDOG)) {
            Ok(Some(e)) if want(&e) => return e,
            Ok(Some(_)) => {}
            other => panic!("no event: {other:?}"),
        }
    }
}

/// A watch sees objects created and deleted, and a stream's subscribers join and leave
/// (processes, and one killed), in order; objects outside its prefix are not reported.
#[test]
fn a_watch_reports_objects_and_subscribers() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let mut watch = client.watch("cam.").unwrap();
    client
        .create_stream(&StreamOptions::new("other", "u1", &[4]))
        .unwrap();
    client
        .create_stream(&StreamOptions::new("cam.a", "uint64", &[64]))
        .unwrap();
    assert_eq!(
        watch.next_timeout(Some(WATCHDOG)).unwrap(),
        Some(WatchEvent::Created {
            name: "cam.a".into(),
            stream: true
        }),
        "the first event is cam.a's creation (other is outside the prefix)"
    );
    let sub = client.subscribe::<u64>("cam.a", Delivery::Lossy).unwrap();
    expect_event(&mut watch, |e| {
        *e == WatchEvent::Subscribers {
            name: "cam.a".into(),
            count: 1,
        }
    });
    let mut other = Worker::spawn(&["stream-hold", &socket(&daemon), "cam.a", "lossy"]);
    other.expect_line("subscribed", WATCHDOG);
    expect_event(&mut watch, |e| {
        *e == WatchEvent::Subscribers {
            name: "cam.a".into(),
            count: 2,
        }
    });
    drop(sub);
    expect_event(&mut watch, |e| {
        *e == WatchEvent::Subscribers {
            name: "cam.a".into(),
            count: 1,
        }
    });
    // Killed: the daemon reclaims its record, and the watch hears of it.
    other.kill();
    expect_event(&mut watch, |e| {
        *e == WatchEvent::Subscribers {
            name: "cam.a".into(),
            count: 0,
        }
    });
    client.delete("cam.a").unwrap();
    expect_event(&mut watch, |e| {
        *e == WatchEvent::Deleted {
            name: "cam.a".into(),
        }
    });
    // Nothing else is pending.
    assert_eq!(
        watch
            .next_timeout(Some(Duration::from_millis(300)))
            .unwrap(),
        None
    );
    drop(watch);
    // The daemon still serves: a watch's connection ended cleanly.
    assert!(matches!(
        client.wait_for("other", Duration::ZERO),
        Ok(ObjectInfo::Stream(_))
    ));
}
