//! Streams across real processes and a real daemon: every frame through lossless
//! subscribers, exact books for lossy ones, `latest()` under a flat-out publisher, and the
//! crash and scribbler cases (SIGKILL of a subscriber, of a publisher mid-loan, of the daemon;
//! random bytes in the control file).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{Daemon, Worker, field, pattern};
use mmshare::{Delivery, ErrorKind, ObjectInfo, StreamInfo, StreamOptions};

const WATCHDOG: Duration = Duration::from_secs(120);

fn socket(daemon: &Daemon) -> String {
    daemon.socket.display().to_string()
}

/// A stream of u64 frames of 64 elements (what the workers use).
fn create(daemon: &Daemon, name: &str, slots: u32) -> StreamInfo {
    daemon
        .client()
        .create_stream(&StreamOptions::new(name, "uint64", &[64]).slots(slots))
        .unwrap()
}

fn describe(daemon: &Daemon, name: &str) -> StreamInfo {
    match daemon.client().describe(name).unwrap() {
        ObjectInfo::Stream(info) => info,
        other => panic!("{name} is not a stream: {other:?}"),
    }
}

/// Waits (watchdog `WATCHDOG`) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WATCHDOG, "watchdog: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

fn publish(publisher: &mut mmshare::Publisher<u64>) -> u64 {
    let mut loan = publisher.loan().unwrap();
    let n = loan.number();
    for (i, x) in loan.iter_mut().enumerate() {
        *x = pattern(n, i);
    }
    loan.publish()
}

fn is_frame(frame: &[u64], n: u64) -> bool {
    frame.iter().enumerate().all(|(i, &x)| x == pattern(n, i))
}

/// Lossless: 100 000 frames through three subscriber processes, each frame's content and
/// number checked by each, none missed or duplicated (the workers exit 3 on any gap or
/// mismatch).
#[test]
fn lossless_frames_all_reach_three_subscriber_processes() {
    const FRAMES: u64 = 100_000;
    let daemon = Daemon::start(&[]);
    let info = create(&daemon, "frames", 8);
    assert_eq!((info.slots, info.frame_len, info.published), (8, 512, 0));
    let sock = socket(&daemon);
    let last = (FRAMES - 1).to_string();
    let mut subs: Vec<Worker> = (0..3)
        .map(|_| Worker::spawn(&["stream-sub", &sock, "frames", "lossless", &last]))
        .collect();
    for sub in &mut subs {
        sub.expect_line("subscribed next=0", WATCHDOG);
    }
    let info = describe(&daemon, "frames");
    assert_eq!(info.subscribers.len(), 3);
    assert!(
        info.subscribers
            .iter()
            .all(|s| s.lossless && s.max_held == 1)
    );
    let publisher = Worker::spawn(&["stream-pub", &sock, "frames", &FRAMES.to_string()]);
    let (status, lines) = publisher.finish(WATCHDOG);
    assert!(status.success(), "publisher: {lines:?}");
    for sub in subs {
        let (status, lines) = sub.finish(WATCHDOG);
        assert!(status.success(), "subscriber: {status:?} {lines:?}");
        let report = lines.last().unwrap();
        assert_eq!(field(report, "received"), FRAMES, "{report}");
        assert_eq!(field(report, "missed"), 0, "{report}");
        assert_eq!(field(report, "last"), FRAMES - 1, "{report}");
    }
    assert_eq!(describe(&daemon, "frames").published, FRAMES);
}

/// Lossy: a deliberately slow subscriber never slows the publisher, and its books are exact:
/// received + missed == published.
#[test]
fn a_slow_lossy_subscriber_counts_exactly_what_it_missed() {
    const FRAMES: u64 = 20_000;
    let daemon = Daemon::start(&[]);
    create(&daemon, "fast", 8);
    let sock = socket(&daemon);
    let last = (FRAMES - 1).to_string();
    let mut slow = Worker::spawn(&["stream-sub", &sock, "fast", "lossy", &last, "200"]);
    slow.expect_line("subscribed next=0", WATCHDOG);
    let publisher = Worker::spawn(&["stream-pub", &sock, "fast", &FRAMES.to_string()]);
    let (status, lines) = publisher.finish(WATCHDOG);
    assert!(status.success(), "publisher: {lines:?}");
    let (status, lines) = slow.finish(WATCHDOG);
    assert!(status.success(), "subscriber: {status:?} {lines:?}");
    let report = lines.last().unwrap();
    let (received, missed) = (field(report, "received"), field(report, "missed"));
    assert_eq!(received + missed, FRAMES, "{report}");
    assert!(
        missed > 0,
        "the slow subscriber should have fallen behind: {report}"
    );
    assert_eq!(field(report, "last"), FRAMES - 1);
}

/// `latest()` never starves: under a publisher running flat out it keeps returning whole,
/// non-decreasing frames (the worker checks each; it stops after 20 000 or reports fewer).
#[test]
fn latest_under_a_flat_out_publisher_keeps_returning_whole_frames() {
    let daemon = Daemon::start(&[]);
    create(&daemon, "flat", 4);
    let sock = socket(&daemon);
    let mut publisher = Worker::spawn(&["stream-pub", &sock, "flat", "1000000000"]);
    eventually("the publisher publishes", || {
        describe(&daemon, "flat").published > 100
    });
    let reader = Worker::spawn(&["stream-latest", &sock, "flat", "20000"]);
    let (status, lines) = reader.finish(WATCHDOG);
    let published = describe(&daemon, "flat").published;
    publisher.child.kill().unwrap();
    publisher.child.wait().unwrap();
    assert!(status.success(), "{status:?} {lines:?}");
    let report = lines.last().unwrap();
    assert_eq!(field(report, "latest"), 20_000, "{report}");
    assert_eq!(field(report, "bad"), 0, "{report}");
    assert!(
        field(report, "newest") > 100 && published > 20_000,
        "{report}, {published}"
    );
    println!("latest() under a flat-out publisher: {report}");
}

/// SIGKILL a lossless subscriber that holds a sample: the daemon reclaims its record (its
/// hold and its cursor), and the publisher, held back until then, goes on.
#[test]
fn a_killed_subscriber_holding_a_sample_stops_holding_the_publisher_back() {
    let daemon = Daemon::start(&[]);
    create(&daemon, "held", 4);
    let sock = socket(&daemon);
    let mut holder = Worker::spawn(&["stream-hold", &sock, "held", "lossless"]);
    holder.expect_line("subscribed", WATCHDOG);
    let client = daemon.client();
    let mut publisher = client.publisher::<u64>("held").unwrap();
    publish(&mut publisher);
    holder.expect_line("holding 0", WATCHDOG);
    while publisher.try_loan().unwrap().is_some_and(|loan| {
        let n = loan.number();
        let mut loan = loan;
        loan.fill(n);
        loan.publish();
        true
    }) {}
    assert!(
        publisher.try_loan().unwrap().is_none(),
        "held back by the lossless subscriber"
    );
    holder.kill();
    let took = eventually("the dead subscriber's record is reclaimed", || {
        publisher.try_loan().unwrap().is_some()
    });
    println!("reclaimed {took:?} after the SIGKILL");
    assert!(describe(&daemon, "held").subscribers.is_empty());
    assert!(daemon.log_has("reclaimed the records of dead subscribers"));
}

/// SIGKILL the publisher in the middle of a loan: nothing half-written is delivered, a new
/// publisher can attach (after the daemon sees the old one gone), and numbering continues.
#[test]
fn a_publisher_killed_mid_loan_delivers_nothing_half_written() {
    let daemon = Daemon::start(&[]);
    create(&daemon, "cam", 4);
    let client = daemon.client();
    let subscriber = client.subscribe::<u64>("cam", Delivery::Lossless).unwrap();
    {
        let mut publisher = client.publisher::<u64>("cam").unwrap();
        for _ in 0..2 {
            publish(&mut publisher);
        }
    }
    let mut doomed = Worker::spawn(&["stream-loan-hold", &socket(&daemon), "cam"]);
    doomed.expect_line("loaned 2", WATCHDOG);
    let busy = client.publisher::<u64>("cam").unwrap_err();
    assert_eq!(busy.kind(), Some(ErrorKind::Busy), "{busy}");
    doomed.kill();
    let mut publisher = client.publisher::<u64>("cam").unwrap();
    assert_eq!(publisher.next_number(), 2);
    assert_eq!(publish(&mut publisher), 2);
    let got: Vec<u64> = std::iter::from_fn(|| {
        subscriber.receive().unwrap().map(|s| {
            assert!(
                is_frame(&s, s.number()),
                "frame {} is not whole",
                s.number()
            );
            s.number()
        })
    })
    .collect();
    assert_eq!(got, [0, 1, 2]);
}

/// SIGKILL the daemon: publisher and subscriber keep streaming (the daemon is not on the
/// data path). A subscriber that dies while the daemon is down is reclaimed after the
/// restart, from the control state the running pipeline kept (a second holder stays alive
/// across the restart, so the keeper keeps that state, and it is the restarted daemon that
/// frees the dead one's record).
#[test]
fn streams_outlive_the_daemon_and_dead_records_are_reclaimed_after_a_restart() {
    const FRAMES: u64 = 30_000;
    let mut daemon = Daemon::start(&[]);
    create(&daemon, "live", 8);
    let sock = socket(&daemon);
    let last = (FRAMES - 1).to_string();
    let mut sub = Worker::spawn(&["stream-sub", &sock, "live", "lossless", &last]);
    sub.expect_line("subscribed next=0", WATCHDOG);
    let mut holder = Worker::spawn(&["stream-hold", &sock, "live", "lossy"]);
    holder.expect_line("subscribed", WATCHDOG);
    let mut survivor = Worker::spawn(&["stream-hold", &sock, "live", "lossy"]);
    survivor.expect_line("subscribed", WATCHDOG);
    let publisher = Worker::spawn(&["stream-pub", &sock, "live", &FRAMES.to_string()]);
    holder.expect_line("holding", WATCHDOG);
    daemon.kill();
    holder.kill();
    let (status, lines) = publisher.finish(WATCHDOG);
    assert!(status.success(), "publisher: {lines:?}");
    let (status, lines) = sub.finish(WATCHDOG);
    assert!(status.success(), "subscriber: {status:?} {lines:?}");
    assert_eq!(field(lines.last().unwrap(), "received"), FRAMES);
    daemon.restart();
    let survivor_pid = survivor.pid();
    eventually("the dead holder's record is reclaimed", || {
        let subs = describe(&daemon, "live").subscribers;
        subs.len() == 1 && subs[0].pid == survivor_pid
    });
    survivor.kill();
    assert_eq!(describe(&daemon, "live").published, FRAMES);
}

/// A process that writes random words all over the control file while a pipeline runs can
/// cost frames or time, never a crash: no process dies of a signal, the daemon keeps
/// serving, and afterwards the stream still works.
#[test]
fn scribbling_on_the_control_file_never_crashes_anyone() {
    let daemon = Daemon::start(&[]);
    create(&daemon, "scribbled", 8);
    let sock = socket(&daemon);
    let mut subs: Vec<Worker> = ["lossy", "lossless"]
        .iter()
        .map(|mode| Worker::spawn(&["stream-sub", &sock, "scribbled", mode, "19999"]))
        .collect();
    for sub in &mut subs {
        sub.expect_line("subscribed", WATCHDOG);
    }
    // It gets the control state as any subscriber does: a descriptor from the daemon.
    let scribbler = Worker::spawn(&["stream-scribble-fd", &sock, "scribbled", "3"]);
    let publisher = Worker::spawn(&["stream-pub", &sock, "scribbled", "20000"]);
    let (status, lines) = scribbler.finish(WATCHDOG);
    assert!(status.success(), "scribbler: {lines:?}");
    for (who, worker) in
        std::iter::once(("publisher", publisher)).chain(subs.into_iter().map(|s| ("subscriber", s)))
    {
        let (status, lines) = worker.finish(WATCHDOG);
        assert_eq!(status.signal(), None, "{who} died of a signal: {lines:?}");
        // Success, a clean error (1), a frame reported not intact or a gap (3), a timeout (4),
        // or an eviction (5: the scribbler set the eviction mark in a record's mode word): the
        // scribbler may cause any of these, never a crash.
        assert!(
            matches!(status.code(), Some(0 | 1 | 3 | 4 | 5)),
            "{who}: {status:?} {lines:?}"
        );
    }
    // The daemon serves, and once the scribbling stopped (and the daemon's periodic check
    // repaired what it left), a fresh pipeline works.
    let client = daemon.client();
    eventually("a fresh pipeline works after the scribbling", || {
        let Ok(subscriber) = client.subscribe::<u64>("scribbled", Delivery::Lossy) else {
            return false;
        };
        let mut publisher = client.publisher::<u64>("scribbled").unwrap();
        // A record the scribbler made look like a lossless subscriber holds the publisher back
        // until the daemon's periodic check frees it: that costs time, so look again.
        let Ok(mut loan) = publisher.loan_timeout(Duration::from_secs(1)) else {
            return false;
        };
        let n = loan.number();
        for (i, x) in loan.iter_mut().enumerate() {
            *x = pattern(n, i);
        }
        loan.publish();
        let sample = subscriber.receive_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(sample.number(), n);
        assert!(is_frame(&sample, n));
        true
    });
}

/// A subscriber killed while asleep leaves no sleeper counted behind: once its record is
/// reclaimed, publishing makes no system call again.
#[test]
fn a_subscriber_killed_asleep_leaves_no_sleeper_counted() {
    let daemon = Daemon::start(&[]);
    create(&daemon, "quiet", 8);
    let mut sleeper = Worker::spawn(&["stream-sub", &socket(&daemon), "quiet", "lossy", "1000"]);
    sleeper.expect_line("subscribed", WATCHDOG);
    // Nothing is published: it spins, yields, then sleeps on the futex within a few ms.
    std::thread::sleep(Duration::from_millis(300));
    sleeper.kill();
    eventually("the dead sleeper's record is reclaimed", || {
        describe(&daemon, "quiet").subscribers.is_empty()
    });
    let client = daemon.client();
    let mut publisher = client.publisher::<u64>("quiet").unwrap();
    let before = mmshare::internal::futex_wake_calls();
    for _ in 0..100 {
        publish(&mut publisher);
    }
    assert_eq!(
        mmshare::internal::futex_wake_calls() - before,
        0,
        "a dead sleeper is still counted: every publish wakes"
    );
}

/// The control state a subscriber receives is a sealed memfd: truncating or growing it fails
/// (EPERM), so no participant can turn the daemon's or another participant's accesses into
/// SIGBUS, and the daemon and the subscriber carry on.
#[test]
fn the_control_state_a_subscriber_receives_cannot_be_resized() {
    let mut daemon = Daemon::start(&[]);
    create(&daemon, "cut", 8);
    let client = daemon.client();
    let subscriber = client.subscribe::<u64>("cut", Delivery::Lossy).unwrap();
    let attack = Worker::spawn(&["control-attack", &socket(&daemon), "cut", "stream"]);
    let (status, lines) = attack.finish(WATCHDOG);
    assert!(status.success(), "{lines:?}");
    for what in ["truncate", "grow", "fallocate", "reopened_truncate"] {
        let line = format!("fd1_{what}=EPERM");
        assert!(lines.contains(&line), "{line} not in {lines:?}");
    }
    // Stat (which reads the records) and the periodic check (every 250 ms) both run.
    for _ in 0..5 {
        let _ = daemon.client().describe("cut");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(daemon.is_running(), "the daemon died");
    let mut publisher = client.publisher::<u64>("cut").unwrap();
    let n = publish(&mut publisher);
    let sample = subscriber.receive_timeout(WATCHDOG).unwrap();
    assert_eq!(sample.number(), n);
}

/// The stream example (examples/README.md): a lossless subscriber started before the
/// publisher gets every frame the publisher sends, and says so when the stream goes quiet.
#[test]
fn the_stream_example_delivers_every_frame() {
    let example = common::example_path("stream");
    let daemon = Daemon::start(&[]);
    daemon
        .client()
        .create_stream(
            &StreamOptions::new("demo.camera", "u1", &[480, 640])
                .slots(8)
                .memory(),
        )
        .unwrap();
    let env = [("MMSHARE_SOCKET", daemon.socket.as_os_str())];
    let mut sub = Worker::spawn_program(&example, &["subscribe", "--lossless"], &env);
    sub.expect_line("subscribed (Lossless)", WATCHDOG);
    let publisher = Worker::spawn_program(&example, &["publish", "30"], &env);
    let (status, lines) = publisher.finish(WATCHDOG);
    assert!(status.success(), "publisher: {lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("published 30 frames")),
        "{lines:?}"
    );
    let line = sub.expect_line("no frame for 5 s", WATCHDOG);
    assert!(line.contains("received 30, missed 0"), "{line}");
    let (status, _) = sub.finish(WATCHDOG);
    assert!(status.success());
}

/// Bad stream requests get clear errors of the right kind, and arrays and streams share one
/// namespace and one `--max-arrays` count.
#[test]
fn stream_requests_are_checked_and_share_names_with_arrays() {
    let daemon = Daemon::start(&["--max-arrays", "2"]);
    let client = daemon.client();
    let err = client
        .create_stream(&StreamOptions::new("few", "uint64", &[4]).slots(2))
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::InvalidShape), "{err}");
    assert!(err.to_string().contains("not 2"), "{err}");
    let err = client
        .create_stream(&StreamOptions::new("bad", "float128", &[4]))
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::InvalidDtype), "{err}");
    let err = client
        .create_stream(&StreamOptions::new("../x", "uint64", &[4]))
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::InvalidName), "{err}");

    create(&daemon, "s", 4);
    client
        .create(&mmshare::CreateOptions::new("a", "uint64", &[4]))
        .unwrap();
    // One namespace: a stream's name is taken for arrays and the other way round.
    let err = client
        .create(&mmshare::CreateOptions::new("s", "uint64", &[4]))
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::AlreadyExists), "{err}");
    let err = client
        .create_stream(&StreamOptions::new("a", "uint64", &[4]))
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::AlreadyExists), "{err}");
    // The wrong kind is named as such.
    let err = client.open::<u64>("s", mmshare::Access::Read).unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::WrongKind), "{err}");
    let err = client.subscribe::<u64>("a", Delivery::Lossy).unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::WrongKind), "{err}");
    // One count: two objects reach --max-arrays 2.
    let err = client
        .create_stream(&StreamOptions::new("third", "uint64", &[4]))
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::QuotaExceeded), "{err}");
    // exist_ok with the same description succeeds; ListAll shows both kinds in name order.
    client
        .create_stream(
            &StreamOptions::new("s", "uint64", &[64])
                .slots(4)
                .exist_ok(true),
        )
        .unwrap();
    let names: Vec<(String, bool)> = client
        .list_all("")
        .unwrap()
        .into_iter()
        .map(|o| (o.name().to_owned(), matches!(o, ObjectInfo::Stream(_))))
        .collect();
    assert_eq!(names, [("a".to_owned(), false), ("s".to_owned(), true)]);
    // Delete frees the name (and the count) at once; mappings that exist keep working.
    let subscriber = client.subscribe::<u64>("s", Delivery::Lossy).unwrap();
    client.delete("s").unwrap();
    assert_eq!(
        client.describe("s").unwrap_err().kind(),
        Some(ErrorKind::NotFound)
    );
    assert!(subscriber.receive().unwrap().is_none());
    create(&daemon, "s", 4);
}

/// History for late joiners: a publisher process publishes 400 frames, one every 300 µs,
/// into a stream that keeps 8; a lossless subscriber joins (starting at the oldest frame)
/// after at least 100, while the publisher keeps publishing through the join. It gets at
/// least the 8 frames published before it joined, then every frame to the last, in order,
/// each frame's bytes checked.
#[test]
fn a_late_lossless_subscriber_gets_the_history_then_every_frame() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    client
        .create_stream(
            &StreamOptions::new("late", "uint64", &[64])
                .slots(16)
                .history(8),
        )
        .unwrap();
    assert_eq!(describe(&daemon, "late").history, 8);
    let publisher = Worker::spawn(&["stream-pub-paced", &socket(&daemon), "late", "400", "300"]);
    eventually("100 frames", || describe(&daemon, "late").published >= 100);
    let joined_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let subscriber = client
        .subscribe_with::<u64>(
            "late",
            mmshare::SubscribeOptions::new(Delivery::Lossless).start(mmshare::StartAt::Oldest),
        )
        .unwrap();
    let published_at_join = describe(&daemon, "late").published;
    assert!(
        published_at_join < 400,
        "the publisher was still publishing"
    );
    let mut got = Vec::new();
    let mut before_join = 0;
    while got.last() != Some(&399) {
        let sample = subscriber.receive_timeout(WATCHDOG).unwrap();
        assert!(
            is_frame(&sample, sample.number()),
            "frame {}",
            sample.number()
        );
        if sample.published_ns() < joined_ns {
            before_join += 1;
        }
        got.push(sample.number());
    }
    let (status, _) = publisher.finish(WATCHDOG);
    assert!(status.success());
    assert!(
        before_join >= 8,
        "only {before_join} frames published before the join were delivered: {got:?}"
    );
    // From the first frame taken on, every frame. (A loan already under way when the
    // subscriber joined may take back the oldest frame it found: then counted, once.)
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
    assert!(subscriber.missed() <= 1, "missed {}", subscriber.missed());
    assert_eq!(got[0], subscriber.first_frame() + subscriber.missed());
    assert!(got[0] + 8 <= published_at_join, "{got:?}");
}

/// Resuming after a restart from a frame number that is gone: the subscriber learns exactly
/// how many frames it lost, at its first receive, and continues without another gap.
#[test]
fn a_resume_from_a_frame_that_is_gone_reports_the_exact_gap() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    client
        .create_stream(
            &StreamOptions::new("resume", "uint64", &[64])
                .slots(8)
                .history(4),
        )
        .unwrap();
    let (status, _) =
        Worker::spawn(&["stream-pub", &socket(&daemon), "resume", "200"]).finish(WATCHDOG);
    assert!(status.success());
    // Frame 150 was handled before the "restart"; 151 onwards is wanted.
    let subscriber = client
        .subscribe_with::<u64>(
            "resume",
            mmshare::SubscribeOptions::new(Delivery::Lossless).start(mmshare::StartAt::Frame(151)),
        )
        .unwrap();
    let first = subscriber.receive().unwrap().expect("frames are offered");
    let oldest = first.number();
    assert!((192..=196).contains(&oldest), "oldest offered {oldest}");
    assert_eq!(
        first.missed_before(),
        oldest - 151,
        "exactly the frames gone"
    );
    assert!(is_frame(&first, oldest));
    drop(first);
    let mut last = oldest;
    while let Some(s) = subscriber.receive().unwrap() {
        assert_eq!(s.number(), last + 1);
        last = s.number();
    }
    assert_eq!(last, 199);
    assert_eq!(subscriber.missed() + subscriber.received(), 200 - 151);
}
