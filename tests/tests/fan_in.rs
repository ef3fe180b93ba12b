//! Streams with several publishers, across real processes and a real daemon: three publisher
//! processes into two lossless subscriber processes, every frame exactly once per subscriber
//! in each publisher's order; a publisher SIGKILLed mid-loan while two others go on, and its
//! lane taken by a new publisher; the limit, the listing and the daemon's restart.

mod common;

use std::time::Duration;

use common::{Daemon, Worker, field};
use mmshare::{ClientError, Delivery, ObjectInfo, StreamError, StreamInfo, StreamOptions};

const WATCHDOG: Duration = Duration::from_secs(120);

fn socket(daemon: &Daemon) -> String {
    daemon.socket.display().to_string()
}

/// A stream of u64 frames of 64 elements (what the workers use) with `publishers` lanes.
fn create(daemon: &Daemon, name: &str, publishers: u32) -> StreamInfo {
    daemon
        .client()
        .create_stream(
            &StreamOptions::new(name, "uint64", &[64])
                .slots(8)
                .max_publishers(publishers),
        )
        .unwrap()
}

fn describe(daemon: &Daemon, name: &str) -> StreamInfo {
    match daemon.client().describe(name).unwrap() {
        ObjectInfo::Stream(info) => info,
        other => panic!("{name} is not a stream: {other:?}"),
    }
}

/// Element `i` of frame `n` of lane `lane`, as `fan-in-pub` writes it.
fn fan_in_pattern(lane: u32, n: u64, i: usize) -> u64 {
    common::pattern(n + (u64::from(lane) << 40), i)
}

/// Three publisher processes publish 10,000 frames each into two lossless subscriber
/// processes: each subscriber gets all 30,000, every publisher's frames exactly once and in
/// its order, whole and tagged with their publisher (checked frame by frame by the worker),
/// and the daemon lists the stream's publishers and its subscribers once each.
#[test]
fn three_publisher_processes_reach_two_lossless_subscribers_whole_and_in_order() {
    const FRAMES: u64 = 10_000;
    let daemon = Daemon::start(&[]);
    let info = create(&daemon, "fan", 3);
    assert_eq!((info.max_publishers, info.publishers.len()), (3, 0));
    let sock = socket(&daemon);
    let counts = format!("{FRAMES},{FRAMES},{FRAMES}");
    let mut subs: Vec<Worker> = (0..2)
        .map(|_| Worker::spawn(&["fan-in-sub", &sock, "fan", &counts]))
        .collect();
    for sub in &mut subs {
        sub.expect_line("subscribed", WATCHDOG);
    }
    let listed = describe(&daemon, "fan");
    assert_eq!(
        listed.subscribers.len(),
        2,
        "each subscriber once: {listed:?}"
    );
    // All three attached before any publishes (a lane is reused once free).
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("go");
    let gate = gate.to_str().unwrap();
    let mut publishers: Vec<Worker> = (0..3)
        .map(|_| Worker::spawn(&["fan-in-pub", &sock, "fan", &FRAMES.to_string(), gate]))
        .collect();
    for publisher in &mut publishers {
        publisher.expect_line("lane=", WATCHDOG);
    }
    std::fs::write(gate, b"").unwrap();
    let mut lanes = Vec::new();
    let mut ids = Vec::new();
    for publisher in publishers {
        let (status, lines) = publisher.finish(WATCHDOG);
        assert!(status.success(), "publisher: {status:?} {lines:?}");
        lanes.push(field(&lines[0], "lane"));
        ids.push(field(&lines[0], "id"));
        assert_eq!(lines.last().unwrap(), &format!("published {FRAMES}"));
    }
    lanes.sort_unstable();
    assert_eq!(lanes, [0, 1, 2], "one lane each");
    ids.sort_unstable();
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    for sub in subs {
        let (status, lines) = sub.finish(WATCHDOG);
        assert!(status.success(), "subscriber: {status:?} {lines:?}");
        let report = lines.last().unwrap();
        assert_eq!(field(report, "received"), 3 * FRAMES, "{report}");
        assert_eq!(field(report, "missed"), 0, "{report}");
        assert!(
            report.ends_with(&format!("publishers={}", ids.join(","))),
            "tagged with the ids the publishers reported: {report}"
        );
    }
    assert_eq!(describe(&daemon, "fan").published, 3 * FRAMES);
}

/// A publisher SIGKILLed with a loan half written while two others publish: the subscriber
/// gets every frame of the two, nothing of the half-written one; a new publisher takes the
/// dead one's lane (the fourth is refused while three live) and its frames follow, tagged as
/// the lane's second attach.
#[test]
fn a_publisher_killed_mid_loan_costs_the_others_nothing_and_its_lane_is_taken_again() {
    const FRAMES: u64 = 3_000;
    let daemon = Daemon::start(&[]);
    create(&daemon, "cams", 3);
    let sock = socket(&daemon);
    let client = daemon.client();
    let subscriber = client.subscribe::<u64>("cams", Delivery::Lossless).unwrap();
    let mut doomed = Worker::spawn(&["stream-loan-hold", &sock, "cams"]);
    let loaned = doomed.expect_line("loaned 0", WATCHDOG);
    let doomed_lane = field(&loaned, "lane") as usize;
    assert_eq!(describe(&daemon, "cams").publishers, [doomed.pid()]);
    let mut publishers: Vec<Worker> = (0..2)
        .map(|_| Worker::spawn(&["fan-in-pub", &sock, "cams", &FRAMES.to_string()]))
        .collect();
    // Both attached before the kill (one that came after would take the freed lane).
    for publisher in &mut publishers {
        let attached = publisher.expect_line("lane=", WATCHDOG);
        assert_ne!(field(&attached, "lane") as usize, doomed_lane, "{attached}");
    }
    let mut next = [0u64; 3];
    let mut take = |until: &dyn Fn(&[u64; 3]) -> bool| {
        let start = std::time::Instant::now();
        while !until(&next) {
            assert!(
                start.elapsed() < WATCHDOG,
                "watchdog: {next:?} (doomed lane {doomed_lane})"
            );
            let Some(sample) = subscriber.receive().unwrap() else {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            };
            let lane = sample.lane();
            assert_eq!(sample.number(), next[lane], "lane {lane} in order, once");
            let whole = sample
                .iter()
                .enumerate()
                .all(|(i, &x)| x == fan_in_pattern(lane as u32, sample.number(), i));
            assert!(whole, "frame {} of lane {lane} is whole", sample.number());
            next[lane] += 1;
        }
    };
    // Killed while the two others are under way.
    let others = |n: &[u64; 3]| {
        (0..3)
            .filter(|&k| k != doomed_lane)
            .map(|k| n[k])
            .sum::<u64>()
    };
    take(&|n: &[u64; 3]| others(n) >= FRAMES);
    doomed.kill();
    take(&|n: &[u64; 3]| others(n) == 2 * FRAMES);
    for publisher in publishers {
        let (status, lines) = publisher.finish(WATCHDOG);
        assert!(status.success(), "publisher: {status:?} {lines:?}");
    }
    assert_eq!(next[doomed_lane], 0, "nothing of the half-written loan");
    // Three live publishers again: the fourth is refused, with the limit named.
    let mut again = client.publisher::<u64>("cams").unwrap();
    assert_eq!(again.id().lane(), doomed_lane as u32, "the dead one's lane");
    assert_eq!(again.id().attach(), 2);
    let _others: Vec<_> = (0..2)
        .map(|_| client.publisher::<u64>("cams").unwrap())
        .collect();
    // The three are this process's, so the daemon lets it try (a process may attach again,
    // after a restart say); the library finds every lane taken.
    let full = client.publisher::<u64>("cams").unwrap_err();
    assert!(
        matches!(
            full,
            ClientError::Stream(StreamError::PublishersFull {
                max_publishers: 3,
                ..
            })
        ),
        "{full}"
    );
    assert!(full.to_string().contains("max_publishers"), "{full}");
    // Another process is refused by the daemon itself.
    let other = Worker::spawn(&["fan-in-pub", &sock, "cams", "1"]);
    let (status, lines) = other.finish(WATCHDOG);
    assert_eq!(status.code(), Some(2), "a fourth publisher: {lines:?}");
    assert!(
        lines[0].starts_with("refused kind=Some(Busy)") && lines[0].contains("max_publishers"),
        "{lines:?}"
    );
    let mut loan = again.loan().unwrap();
    assert_eq!(loan.number(), 0, "the dead loan was never published");
    for (i, x) in loan.iter_mut().enumerate() {
        *x = fan_in_pattern(doomed_lane as u32, 0, i);
    }
    loan.publish();
    let sample = subscriber.receive_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((sample.lane(), sample.number()), (doomed_lane, 0));
    assert_eq!(sample.publisher(), Some(again.id()));
}

/// Stream files with several publishers outlive a daemon restart: the restarted daemon
/// serves every lane (a publisher and a subscriber made after it get them all).
#[test]
fn a_stream_of_several_publishers_is_served_again_after_a_restart() {
    let mut daemon = Daemon::start(&[]);
    create(&daemon, "multi", 2);
    daemon.restart();
    let client = daemon.client();
    let info = describe(&daemon, "multi");
    assert_eq!(info.max_publishers, 2);
    let subscriber = client
        .subscribe::<u64>("multi", Delivery::Lossless)
        .unwrap();
    assert_eq!(subscriber.lanes(), 2);
    let mut a = client.publisher::<u64>("multi").unwrap();
    let mut b = client.publisher::<u64>("multi").unwrap();
    for p in [&mut a, &mut b] {
        p.loan().unwrap().publish();
    }
    let mut got: Vec<usize> = (0..2)
        .map(|_| {
            subscriber
                .receive_timeout(Duration::from_secs(10))
                .unwrap()
                .lane()
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1]);
    assert_eq!(describe(&daemon, "multi").publishers.len(), 2);
}
