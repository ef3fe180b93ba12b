//! A client object survives a daemon restart: its next request dials again (retrying while
//! the daemon is away), and the leases its live handles hold (write access to an array, a
//! role on a stream) are taken again on the new connection before anything else, while the
//! data path never stopped.

mod common;

use std::time::Duration;

use common::{Daemon, Worker};
use mmshare::{CreateOptions, Delivery, StreamOptions};

const WATCHDOG: Duration = Duration::from_secs(60);
const FRAMES: u64 = 20_000;

/// SIGKILL the daemon while one client object holds a write lease on an array and a live
/// lossless subscription on a stream. After the restart the same object's next request
/// succeeds; its new connection holds both leases again (the daemon, which closes a
/// connection that holds nothing after `--idle-timeout 1`, keeps it open); the subscription
/// gets every frame, in order; the writer still writes.
#[test]
fn a_client_object_keeps_its_leases_across_a_daemon_restart() {
    let mut d = Daemon::start(&["--idle-timeout", "1"]);
    let sock = d.socket.display().to_string();
    let c = d.client();
    let writer = c
        .create(&CreateOptions::new("state", "<u8", &[4]).memory())
        .unwrap();
    c.create_stream(&StreamOptions::new("frames", "<u8", &[64]).slots(8).memory())
        .unwrap();
    let sub = c.subscribe::<u64>("frames", Delivery::Lossless).unwrap();
    let publisher = Worker::spawn(&["stream-pub", &sock, "frames", &FRAMES.to_string()]);
    let check = |sample: mmshare::Sample<'_, u64>, next: &mut u64| {
        assert_eq!(sample.number(), *next, "frames out of order or missed");
        assert_eq!(
            sample[0],
            common::pattern(*next, 0),
            "frame {next}'s contents"
        );
        *next += 1;
    };
    let mut next = 0u64;
    for _ in 0..100 {
        check(sub.receive_timeout(WATCHDOG).unwrap(), &mut next);
    }
    d.kill();
    d.restart();
    // The same client object: the first request after the restart dials again.
    assert_eq!(c.stat("state").unwrap().name, "state");
    writer.write_bytes(0, &7u64.to_le_bytes()).unwrap();
    while next < FRAMES {
        check(sub.receive_timeout(WATCHDOG).unwrap(), &mut next);
    }
    let (status, lines) = publisher.finish(WATCHDOG);
    assert!(status.success(), "publisher: {status:?} {lines:?}");
    // Idle well past --idle-timeout: a connection holding no lease would have been closed.
    std::thread::sleep(Duration::from_millis(2500));
    let closed: Vec<String> = d
        .log()
        .into_iter()
        .filter(|l| l.contains("holding nothing: closing"))
        .collect();
    assert!(
        closed.is_empty(),
        "the client's new connection held no lease: {closed:?}"
    );
    drop((writer, sub));
}

/// While the daemon is down, a request waits for it to come back (up to the client's
/// timeout) instead of failing at once.
#[test]
fn a_request_while_the_daemon_restarts_waits_for_it() {
    let mut d = Daemon::start(&[]);
    let c = d.client();
    c.create(&CreateOptions::new("x", "u1", &[1]).memory())
        .unwrap();
    d.kill();
    let socket = d.socket.clone();
    let asker = std::thread::spawn(move || c.stat("x").map(|i| i.name));
    std::thread::sleep(Duration::from_millis(300));
    d.restart();
    assert_eq!(asker.join().unwrap().unwrap(), "x", "{}", socket.display());
}
