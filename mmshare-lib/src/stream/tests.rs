//! Streams in one process: publisher and subscribers on real files and real mappings, in
//! threads. The cross-process, crash and scribbler tests live in the workspace's `tests`
//! crate; the protocol's interleavings are checked by loom in `model_tests`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::*;
use crate::array::raw::{Access, RawArray};
use crate::dtype::DType;
use crate::error::{OpenError, StreamError};
use crate::format::StreamSpec;
use crate::shape::Order;
use crate::sys::{ProcessId, futex_wake_calls};

const ELEMS: usize = 64;

fn make(dir: &Path, slots: u32, max_subscribers: u32) -> PathBuf {
    let mut spec = StreamSpec::new("s", DType::U64, vec![ELEMS as u64]);
    spec.slots = slots;
    spec.max_subscribers = max_subscribers;
    create_stream_files(dir, &spec).unwrap().0
}

/// Fills a loaned frame with a pattern only frame `n` has.
fn fill(frame: &mut [u64], n: u64) {
    for (i, x) in frame.iter_mut().enumerate() {
        *x = n.wrapping_mul(1_000_003).wrapping_add(i as u64);
    }
}

/// Whether `frame` is exactly frame `n`'s pattern.
fn is_frame(frame: &[u64], n: u64) -> bool {
    frame
        .iter()
        .enumerate()
        .all(|(i, &x)| x == n.wrapping_mul(1_000_003).wrapping_add(i as u64))
}

fn send(publisher: &mut Publisher<u64>) -> u64 {
    let mut loan = publisher.loan().unwrap();
    let n = loan.number();
    fill(&mut loan, n);
    assert_eq!(loan.publish(), n);
    n
}

/// The basic path: loan, fill in place, publish; receive in place with number and time.
#[test]
fn a_published_frame_is_received_in_place_with_its_number_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    assert!(
        subscriber.receive().unwrap().is_none(),
        "nothing published yet"
    );
    let before = crate::format::now_ns();
    for n in 0..10 {
        assert_eq!(send(&mut publisher), n);
        let sample = subscriber.receive().unwrap().expect("just published");
        assert_eq!((sample.number(), sample.missed_before()), (n, 0));
        assert!(is_frame(&sample, n));
        assert!(
            sample.published_ns() >= before && sample.published_ns() <= crate::format::now_ns()
        );
        assert!(sample.is_intact());
    }
    assert_eq!((subscriber.received(), subscriber.missed()), (10, 0));
    assert_eq!(publisher.files().published(), 10);
}

/// A loan dropped without publishing is returned: nobody receives it and the next frame gets
/// its number.
#[test]
fn a_dropped_loan_is_never_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    for _ in 0..10 {
        let mut loan = publisher.loan().unwrap();
        loan.fill(u64::MAX);
    }
    assert!(subscriber.receive().unwrap().is_none());
    assert_eq!(send(&mut publisher), 0);
    let sample = subscriber.receive().unwrap().unwrap();
    assert!(is_frame(&sample, 0));
}

/// A subscriber receives what is published after it subscribed; `latest()` also gives the
/// newest frame from before.
#[test]
fn a_new_subscriber_starts_after_the_frames_published_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    for _ in 0..3 {
        send(&mut publisher);
    }
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    assert_eq!(subscriber.next_number(), 3);
    assert!(subscriber.receive().unwrap().is_none());
    {
        let newest = subscriber.latest().unwrap().expect("frame 2 exists");
        assert_eq!((newest.number(), newest.missed_before()), (2, 0));
        assert!(is_frame(&newest, 2));
    }
    send(&mut publisher);
    assert_eq!(subscriber.receive().unwrap().unwrap().number(), 3);
}

/// Lossy: a subscriber that falls behind skips to the oldest frame still there and counts
/// exactly what it skipped; received + missed == published.
#[test]
fn a_lossy_subscriber_that_falls_behind_counts_every_missed_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 5, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    for _ in 0..20 {
        send(&mut publisher);
    }
    // The publisher kept the newest frames; the oldest it kept is 20 - 4 = 16 (one slot was
    // on loan each time, and frames are taken back oldest first).
    let first = subscriber.receive().unwrap().unwrap();
    assert!(first.number() >= 15, "frame {}", first.number());
    assert_eq!(first.missed_before(), first.number());
    assert!(is_frame(&first, first.number()));
    drop(first);
    let mut last = 0;
    while let Some(sample) = subscriber.receive().unwrap() {
        assert!(is_frame(&sample, sample.number()));
        assert_eq!(sample.missed_before(), 0);
        last = sample.number();
    }
    assert_eq!(last, 19);
    assert_eq!(subscriber.received() + subscriber.missed(), 20);
    let info = publisher.files().subscribers();
    assert_eq!(info.len(), 1);
    assert_eq!(
        (info[0].received, info[0].missed, info[0].lag),
        (subscriber.received(), subscriber.missed(), 0)
    );
    assert!(!info[0].lossless);
}

/// Lossless: the publisher cannot get more than a ring ahead of the slowest lossless
/// subscriber; `try_loan` says so at once, `loan` times out with the lag, and once the
/// subscriber catches up every frame arrives in order.
#[test]
fn a_lossless_subscriber_holds_the_publisher_back_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    let mut sent = 0;
    while let Some(mut loan) = publisher.try_loan().unwrap() {
        fill(&mut loan, sent);
        loan.publish();
        sent += 1;
        assert!(sent < 100, "the publisher was never held back");
    }
    // 4 slots: the loan needs one the subscriber has taken; none is.
    assert_eq!(sent, 4);
    let err = publisher
        .loan_timeout(Duration::from_millis(20))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::LoanTimeout {
                lag: 4,
                slots: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("4 frames behind"), "{err}");
    for n in 0..4 {
        let sample = subscriber.receive().unwrap().unwrap();
        assert_eq!((sample.number(), sample.missed_before()), (n, 0));
        assert!(is_frame(&sample, n));
    }
    assert!(publisher.try_loan().unwrap().is_some());
    assert_eq!(subscriber.missed(), 0);
}

/// Lossless through threads: 10 000 frames through a 4-slot ring to two lossless subscribers,
/// each frame's content and number checked, none missed or duplicated, while a lossy one
/// never slows anyone down and keeps its books.
#[test]
fn lossless_frames_arrive_whole_and_in_order_across_threads() {
    const FRAMES: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 6, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscribers: Vec<_> = [Delivery::Lossless, Delivery::Lossless, Delivery::Lossy]
        .into_iter()
        .map(|mode| {
            let sub = StreamFiles::open(&path, false).unwrap();
            let sub =
                Subscriber::<u64>::attach(sub, crate::SubscribeOptions::new(mode).max_held(1))
                    .unwrap();
            std::thread::spawn(move || {
                let mut next = 0;
                let mut received = 0;
                while next < FRAMES {
                    let sample = sub.receive_timeout(Duration::from_secs(20)).unwrap();
                    assert!(
                        is_frame(&sample, sample.number()),
                        "torn frame {}",
                        sample.number()
                    );
                    if mode == Delivery::Lossless {
                        assert_eq!((sample.number(), sample.missed_before()), (next, 0));
                    } else {
                        assert_eq!(sample.number(), next + sample.missed_before());
                    }
                    next = sample.number() + 1;
                    received += 1;
                }
                assert_eq!(received + sub.missed(), FRAMES);
                (mode, received, sub.missed())
            })
        })
        .collect();
    for _ in 0..FRAMES {
        send(&mut publisher);
    }
    for handle in subscribers {
        let (mode, received, missed) = handle.join().unwrap();
        if mode == Delivery::Lossless {
            assert_eq!((received, missed), (FRAMES, 0));
        }
    }
}

/// A held sample is never rewritten, however many frames are published meanwhile (lossy
/// subscriber, so the publisher never waits for it).
#[test]
fn a_held_sample_is_never_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    send(&mut publisher);
    send(&mut publisher);
    let held = subscriber.receive().unwrap().unwrap();
    let also = subscriber.receive().unwrap().unwrap();
    for _ in 0..100 {
        send(&mut publisher);
    }
    assert!(is_frame(&held, 0) && is_frame(&also, 1));
    assert!(held.is_intact() && also.is_intact());
}

/// `max_held` is enforced, and the hold budget (`slots - 2`) caps what subscribers may hold,
/// with clear errors.
#[test]
fn holds_are_limited_per_subscriber_and_by_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 5, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let open = |max_held| {
        Subscriber::<u64>::attach(
            StreamFiles::open(&path, false).unwrap(),
            crate::SubscribeOptions::new(Delivery::Lossy).max_held(max_held),
        )
    };
    let first = open(2).unwrap();
    assert_eq!(first.max_held(), 2);
    // Budget 3: the second gets what is left.
    let second = open(2).unwrap();
    assert_eq!(second.max_held(), 1);
    let err = open(1).unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::NoHoldBudget {
                slots: 5,
                budget: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("more slots"), "{err}");
    assert!(matches!(
        open(0),
        Err(StreamError::BadMaxHeld { given: 0, max: 16 })
    ));
    assert!(matches!(
        open(17),
        Err(StreamError::BadMaxHeld { given: 17, .. })
    ));
    for _ in 0..3 {
        send(&mut publisher);
    }
    let a = first.receive().unwrap().unwrap();
    let b = first.receive().unwrap().unwrap();
    let err = first.receive().unwrap_err();
    assert!(
        matches!(err, StreamError::HoldLimit { max_held: 2 }),
        "{err}"
    );
    drop(a);
    assert_eq!(first.receive().unwrap().unwrap().number(), 2);
    drop(b);
    // Dropping a subscriber gives its holds back.
    drop(second);
    assert_eq!(open(1).unwrap().max_held(), 1);
}

/// Every record taken is a clear error; a dropped subscriber frees its record.
#[test]
fn every_record_taken_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 8, 2);
    let a = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    let _b = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    let err = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::NoRecord {
                max_subscribers: 2,
                ..
            }
        ),
        "{err}"
    );
    drop(a);
    Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
}

/// One publisher at a time; a new one continues the numbering, including a frame whose
/// publish was cut short between its tag and `PUBLISHED` (a publisher killed there).
#[test]
fn a_second_publisher_is_refused_and_a_new_one_continues_the_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let err = Publisher::<u64>::open(&path).unwrap_err();
    assert!(
        matches!(err, StreamError::PublisherBusy { pid, .. } if pid == ProcessId::current().pid),
        "{err}"
    );
    send(&mut publisher);
    send(&mut publisher);
    drop(publisher);
    let subscriber = Subscriber::<u64>::open(
        &path,
        SubscribeOptions::new(Delivery::Lossless).start(StartAt::Next),
    )
    .unwrap();
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    assert_eq!(publisher.next_number(), 2);
    // Frame 2 written and tagged, then the publisher "dies" before storing PUBLISHED.
    let slot = {
        let mut loan = publisher.loan().unwrap();
        fill(&mut loan, 2);
        loan.slot()
    };
    publisher.files().ring().slots[slot].tag.store(3, Relaxed);
    drop(publisher);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    assert_eq!(
        publisher.next_number(),
        3,
        "the complete frame 2 counts as published"
    );
    assert_eq!(publisher.files().published(), 3);
    send(&mut publisher);
    let numbers: Vec<u64> = std::iter::from_fn(|| {
        subscriber.receive().unwrap().map(|s| {
            assert!(is_frame(&s, s.number()));
            s.number()
        })
    })
    .collect();
    assert_eq!(numbers, [2, 3]);
}

/// A publisher replaced while attached (judged dead) gets an error instead of publishing.
#[test]
fn a_replaced_publisher_may_not_publish() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let other = ProcessId {
        pid: 1,
        start_time: 1,
    }
    .to_word();
    publisher.files().publisher_word().store(other, Relaxed);
    let err = publisher.loan().unwrap_err();
    assert!(
        matches!(err, StreamError::PublisherLost { by: 1, .. }),
        "{err}"
    );
}

/// With nobody asleep a publish makes no system call; with a subscriber asleep it wakes it.
#[test]
fn a_publish_with_nobody_asleep_makes_no_system_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 8, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    let before = futex_wake_calls();
    for _ in 0..1000 {
        send(&mut publisher);
        drop(subscriber.receive().unwrap().unwrap());
    }
    assert_eq!(
        futex_wake_calls() - before,
        0,
        "a publish with nobody asleep made a FUTEX_WAKE"
    );

    let sleeper = {
        let path = path.clone();
        std::thread::spawn(move || {
            let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
            let woken = crate::sys::futex_wakeups();
            let sample = subscriber.receive_timeout(Duration::from_secs(20)).unwrap();
            (sample.number(), crate::sys::futex_wakeups() > woken)
        })
    };
    // Wait until the subscriber is registered as a sleeper, then publish.
    let files = publisher.files();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while files.sleepers().load(Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriber never slept"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = futex_wake_calls();
    let n = send(&mut publisher);
    assert_eq!(futex_wake_calls() - before, 1);
    let (got, _woken) = sleeper.join().unwrap();
    assert_eq!(got, n);
}

/// A dead subscriber's record (here: a lossless one that stopped taking frames) holds the
/// publisher back until it is reclaimed; live subscribers' records are left alone.
#[test]
fn a_dead_subscribers_record_is_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 5, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let live = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    // A process that existed and is gone: its pid with a start time nobody has.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let dead = ProcessId { pid, start_time: 1 };
    let ring = publisher.files().ring();
    let record = protocol::claim_record(&ring, dead.to_word()).unwrap();
    assert_eq!(protocol::take_budget(&ring, 1, 3), 1);
    protocol::subscribe(&ring, record, 1, true);
    for _ in 0..5 {
        send(&mut publisher);
    }
    assert!(
        publisher.try_loan().unwrap().is_none(),
        "the dead lossless subscriber holds it back"
    );
    assert_eq!(publisher.files().subscribers().len(), 2);
    assert_eq!(publisher.reclaim_dead_subscribers(), 1);
    assert_eq!(publisher.reclaim_dead_subscribers(), 0);
    assert!(publisher.try_loan().unwrap().is_some());
    let left = publisher.files().subscribers();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].who, ProcessId::current());
    assert!(live.receive().unwrap().is_some());
}

/// Views have the stream's frame shape and memory order.
#[test]
fn views_have_the_frame_shape_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = StreamSpec::new("img", DType::F32, vec![2, 3]);
    spec.frame.order = Order::F;
    let path = create_stream_files(dir.path(), &spec).unwrap().0;
    let mut publisher = Publisher::<f32>::open(&path).unwrap();
    let subscriber = Subscriber::<f32>::open(&path, Delivery::Lossy).unwrap();
    let mut loan = publisher.loan().unwrap();
    {
        let mut view = loan.view_mut();
        assert_eq!(view.shape(), [2, 3]);
        view[[1, 2]] = 7.5;
    }
    // Fortran order: element [1, 2] is at 1 + 2 * 2.
    assert_eq!(loan[5], 7.5);
    loan.publish();
    let sample = subscriber.receive().unwrap().unwrap();
    assert_eq!(sample.view()[[1, 2]], 7.5);
    assert_eq!(sample.view().shape(), [2, 3]);
}

/// The wrong element type, an array opened as a stream and a stream opened as an array are
/// refused with errors naming what is wrong.
#[test]
fn kinds_and_element_types_are_checked_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let err = Subscriber::<f32>::open(&path, Delivery::Lossy).unwrap_err();
    assert!(
        matches!(err, StreamError::Open(OpenError::DTypeMismatch { .. })),
        "{err}"
    );
    let err = RawArray::open(path.join(DATA_FILE), Access::Read).unwrap_err();
    assert!(
        matches!(err, OpenError::NotAnArray { kind: "stream", .. }),
        "{err}"
    );
    let (array, _) = crate::array::create::create_array_file(
        dir.path(),
        &crate::format::ArraySpec::new("a", DType::U64, vec![4]),
    )
    .unwrap();
    let fake = dir.path().join("fake");
    std::fs::create_dir(&fake).unwrap();
    std::fs::copy(&array, fake.join(DATA_FILE)).unwrap();
    std::fs::copy(path.join(CONTROL_FILE), fake.join(CONTROL_FILE)).unwrap();
    let err = Subscriber::<u64>::open(&fake, Delivery::Lossy).unwrap_err();
    assert!(matches!(err, StreamError::WrongKind { .. }), "{err}");
    // A control file that is not one.
    std::fs::copy(path.join(DATA_FILE), fake.join(DATA_FILE)).unwrap();
    std::fs::write(fake.join(CONTROL_FILE), vec![0u8; 1 << 16]).unwrap();
    let err = Subscriber::<u64>::open(&fake, Delivery::Lossy).unwrap_err();
    assert!(matches!(err, StreamError::BadControl { .. }), "{err}");
    std::fs::write(fake.join(CONTROL_FILE), b"MMSHCTL\0").unwrap();
    let err = Subscriber::<u64>::open(&fake, Delivery::Lossy).unwrap_err();
    assert!(err.to_string().contains("subscriber records need"), "{err}");
}

/// Creating a stream validates its geometry and leaves nothing behind on error.
#[test]
fn stream_creation_checks_slots_and_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    for (slots, subs) in [(2, 4), (4097, 4), (4, 0), (4, 1025)] {
        let mut spec = StreamSpec::new("bad", DType::U8, vec![1]);
        spec.slots = slots;
        spec.max_subscribers = subs;
        let err = create_stream_files(dir.path(), &spec).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "not {}",
                if slots == 2 || slots == 4097 {
                    slots
                } else {
                    subs
                }
            )),
            "{err}"
        );
    }
    let mut huge = StreamSpec::new("huge", DType::U8, vec![1 << 62]);
    huge.slots = 4;
    let err = create_stream_files(dir.path(), &huge).unwrap_err();
    assert!(err.to_string().contains("do not fit"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
    make(dir.path(), 4, 4);
    let err =
        create_stream_files(dir.path(), &StreamSpec::new("s", DType::U8, vec![1])).unwrap_err();
    assert!(
        matches!(err, crate::error::CreateError::AlreadyExists(_)),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// `latest()` under a publisher running flat out returns whole, increasing frames, every time.
#[test]
fn latest_under_a_flat_out_publisher_returns_whole_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    send(&mut publisher);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                send(&mut publisher);
            }
        })
    };
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    let mut last = 0;
    let mut taken = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Until the publisher has gone through the ring many times while we watched.
    while last < 5_000 || taken < 5_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the publisher made no progress"
        );
        taken += 1;
        let sample = subscriber.latest().unwrap().expect("frames exist");
        assert!(
            is_frame(&sample, sample.number()),
            "torn frame {}",
            sample.number()
        );
        assert!(sample.number() >= last);
        assert!(sample.is_intact());
        last = sample.number();
    }
    stop.store(true, Relaxed);
    running.join().unwrap();
}

/// Loans and publishes `n` frames; returns the slot each went into.
fn send_recording_slots(publisher: &mut Publisher<u64>, n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| {
            let mut loan = publisher.loan().unwrap();
            let (number, slot) = (loan.number(), loan.slot());
            fill(&mut loan, number);
            loan.publish();
            slot
        })
        .collect()
}

/// A loan reuses the slot of the oldest frame, so a lossy subscriber that is behind keeps
/// every newer frame: it misses exactly the one taken back.
#[test]
fn a_loan_reuses_the_oldest_frames_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    let mut slots = send_recording_slots(&mut publisher, 4);
    let mut sorted = slots.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [0, 1, 2, 3], "four frames fill the four slots");
    for n in 4..9 {
        slots.extend(send_recording_slots(&mut publisher, 1));
        assert_eq!(slots[n], slots[n - 4], "frame {n} replaces frame {}", n - 4);
    }
    // Frames 0..=4 were taken back, and 5 too: the loan made right after frame 8's publish
    // (`Publisher::loan_ahead`) has its slot; 6..=8 are all still there.
    assert!(publisher.loans_ahead);
    let first = subscriber.receive().unwrap().unwrap();
    assert_eq!((first.number(), first.missed_before()), (6, 6));
    assert!(is_frame(&first, 6));
    drop(first);
    for n in 7..9 {
        let sample = subscriber.receive().unwrap().unwrap();
        assert_eq!((sample.number(), sample.missed_before()), (n, 0));
    }
}

/// A frame taken back while a subscriber holds it stays intact for that holder, is offered to
/// nobody else (they skip it, counted), and the loan goes to the next oldest slot instead.
#[test]
fn a_frame_taken_back_while_held_goes_to_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    // Holds are placed between a publish and the next loan, after the moment a loan made
    // ahead (`Publisher::loan_ahead`) would have chosen: this is about the choice itself.
    publisher.loans_ahead = false;
    let open = || {
        Subscriber::<u64>::attach(
            StreamFiles::open(&path, false).unwrap(),
            crate::SubscribeOptions::new(Delivery::Lossy).max_held(1),
        )
        .unwrap()
    };
    let (holder, other) = (open(), open());
    let slots = send_recording_slots(&mut publisher, 4);
    let held = holder.receive().unwrap().unwrap();
    assert_eq!(held.number(), 0);
    // Frame 4 cannot have frame 0's slot (held): frame 0 is taken back, frame 1's slot is used.
    assert_eq!(send_recording_slots(&mut publisher, 1), [slots[1]]);
    assert!(is_frame(&held, 0) && held.is_intact());
    let sample = other.receive().unwrap().unwrap();
    assert_eq!((sample.number(), sample.missed_before()), (2, 2));
    drop(sample);
    drop(held);
    // Released, the taken-back slot is free again and used before any frame is dropped.
    assert_eq!(send_recording_slots(&mut publisher, 1), [slots[0]]);
    let sample = other.receive().unwrap().unwrap();
    assert_eq!((sample.number(), sample.missed_before()), (3, 0));
}

/// Holds recorded beyond what a subscriber was granted (a scribble) are ignored by the
/// publisher: only the granted entries can keep a slot from reuse.
#[test]
fn holds_beyond_the_granted_count_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    // Holds are placed between a publish and the next loan, after the moment a loan made
    // ahead (`Publisher::loan_ahead`) would have chosen: this is about the choice itself.
    publisher.loans_ahead = false;
    let subscriber = Subscriber::<u64>::attach(
        StreamFiles::open(&path, false).unwrap(),
        crate::SubscribeOptions::new(Delivery::Lossy).max_held(1),
    )
    .unwrap();
    let slots = send_recording_slots(&mut publisher, 4);
    let ring = subscriber.files().ring();
    let record = ring
        .records
        .iter()
        .find(|r| r.owner.load(Relaxed) != 0)
        .expect("the subscriber's record");
    record.held[MAX_HELD - 1].store(slots[0] as u64 + 1, Relaxed);
    assert_eq!(send_recording_slots(&mut publisher, 1), [slots[0]]);
    // The same entry within the grant does keep the slot.
    record.held[0].store(slots[1] as u64 + 1, Relaxed);
    assert_eq!(send_recording_slots(&mut publisher, 1), [slots[2]]);
    record.held[0].store(0, Relaxed);
}

/// A subscriber whose record was reclaimed (judged dead) and claimed by someone else takes
/// nothing and leaves the record's holds alone, even when the loss shows only at the hold.
#[test]
fn a_subscriber_that_lost_its_record_takes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let files = StreamFiles::open(&path, false).unwrap();
    let ring = files.ring();
    let record = protocol::claim_record(&ring, 7).unwrap();
    let cursor = protocol::subscribe(&ring, record, 1, false);
    send(&mut publisher);
    // Reclaimed and reused by owner 8 between our last check and our hold.
    ring.records[record].owner.store(8, Relaxed);
    let mut state = protocol::SubscriberState::new(record, cursor, 7);
    assert_eq!(protocol::receive(&ring, &mut state, 0), None);
    assert!(state.lost);
    assert_eq!(ring.records[record].held[0].load(Relaxed), 0);
    assert_eq!(ring.records[record].cursor.load(Relaxed), cursor);
}

/// A lossless subscriber's cursor keeps exactly the frames it has not taken: the frame just
/// below it is free for reuse, even when it is the only one.
#[test]
fn the_frame_a_lossless_subscriber_took_last_is_free_for_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    let slots = send_recording_slots(&mut publisher, 4);
    assert!(
        publisher.try_loan().unwrap().is_none(),
        "frame 0 is not taken yet"
    );
    drop(subscriber.receive().unwrap().unwrap());
    let loan = publisher
        .try_loan()
        .unwrap()
        .expect("frame 0 was taken and released");
    assert_eq!(loan.slot(), slots[0]);
}

/// An empty slot (a dropped loan's) that a hold names is not loaned while the hold stays;
/// the loan takes the oldest frame's slot instead.
#[test]
fn a_held_empty_slot_is_not_loaned() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    // Holds are placed between a publish and the next loan, after the moment a loan made
    // ahead (`Publisher::loan_ahead`) would have chosen: this is about the choice itself.
    publisher.loans_ahead = false;
    let subscriber = Subscriber::<u64>::attach(
        StreamFiles::open(&path, false).unwrap(),
        crate::SubscribeOptions::new(Delivery::Lossy).max_held(1),
    )
    .unwrap();
    let slots = send_recording_slots(&mut publisher, 3);
    let empty = publisher.loan().unwrap().slot();
    let ring = subscriber.files().ring();
    let record = ring
        .records
        .iter()
        .find(|r| r.owner.load(Relaxed) != 0)
        .expect("the subscriber's record");
    record.held[0].store(empty as u64 + 1, Relaxed);
    assert_eq!(send_recording_slots(&mut publisher, 1), [slots[0]]);
    record.held[0].store(0, Relaxed);
    assert_eq!(send_recording_slots(&mut publisher, 1), [empty]);
}

/// Byte handles work on a stream of any dtype, and loans and samples can be detached from
/// their borrows as tokens (for bindings): one outstanding loan at a time, abandoned loans
/// never delivered, held tokens counted against `max_held` until released.
#[test]
fn byte_handles_and_tokens_move_frames_of_any_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 5, 4);
    let mut publisher =
        Publisher::<u8>::attach_bytes(StreamFiles::open(&path, true).unwrap()).unwrap();
    assert_eq!(publisher.frame_len(), ELEMS * 8);
    let typed = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    let bytes = Subscriber::<u8>::attach_bytes(
        StreamFiles::open(&path, false).unwrap(),
        crate::SubscribeOptions::new(Delivery::Lossy).max_held(1),
    )
    .unwrap();
    assert_eq!(bytes.frame_len(), ELEMS * 8);

    let token = publisher.loan_token(Duration::from_secs(1)).unwrap();
    assert_eq!(token.number(), 0);
    assert!(matches!(
        publisher.loan_token(Duration::from_secs(1)),
        Err(StreamError::LoanOutstanding { .. })
    ));
    assert!(matches!(
        publisher.try_loan(),
        Err(StreamError::LoanOutstanding { .. })
    ));
    publisher.abandon_token(token);

    let token = publisher.loan_token(Duration::from_secs(1)).unwrap();
    assert_eq!(token.number(), 0, "an abandoned loan takes no number");
    let mut frame = [0u64; ELEMS];
    fill(&mut frame, 0);
    // SAFETY: the loaned frame is ELEMS * 8 writable bytes, ours until published.
    unsafe {
        std::ptr::copy_nonoverlapping(
            frame.as_ptr().cast::<u8>(),
            publisher.frame_ptr(&token),
            ELEMS * 8,
        );
    }
    assert_eq!(publisher.publish_token(token).unwrap(), 0);

    let sample = typed.receive().unwrap().expect("published");
    assert_eq!(sample.number(), 0);
    assert!(is_frame(&sample, 0));
    drop(sample);

    let held = bytes.receive().unwrap().expect("published").into_token();
    assert_eq!((held.number(), held.missed_before()), (0, 0));
    assert!(held.published_ns() > 0);
    assert!(bytes.token_is_intact(&held));
    // SAFETY: the held frame is ELEMS * 8 readable bytes while the token is held.
    let read = unsafe { std::slice::from_raw_parts(bytes.frame_ptr(&held), ELEMS * 8) };
    assert_eq!(read, bytemuck::cast_slice::<u64, u8>(&frame));
    fill(&mut frame, 1);
    assert_eq!(
        publisher
            .send(bytemuck::cast_slice::<u64, u8>(&frame))
            .unwrap(),
        1
    );
    assert!(matches!(
        bytes.receive(),
        Err(StreamError::HoldLimit { max_held: 1 })
    ));
    bytes.release_token(held);
    assert_eq!(bytes.receive().unwrap().expect("frame 1").number(), 1);
}

/// Two subscribers of one process: when one's record is reclaimed (here its liveness lock is
/// dropped by hand, as the kernel drops it at death) and a third subscriber of the same
/// process claims that record, the first one's drop leaves the new owner's record alone: the
/// owner word is a per-subscription nonce, not the process's identity.
#[test]
fn a_reclaimed_subscriber_never_disturbs_a_sibling_that_took_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 6, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let first = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    let second = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    let record = first.record();
    first.files().unlock_record(record);
    assert_eq!(
        publisher.reclaim_dead_subscribers(),
        1,
        "only the unlocked one"
    );
    let third = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    assert_eq!(third.record(), record, "the freed record is reused");
    drop(first);
    let ring = publisher.files().ring();
    assert_eq!(ring.records[record].owner.load(Relaxed), third.owner_word());
    assert_eq!(publisher.files().subscribers().len(), 2);
    let n = send(&mut publisher);
    assert_eq!(third.receive().unwrap().unwrap().number(), n);
    assert!(second.receive().unwrap().is_some());
    assert_eq!(
        publisher.reclaim_dead_subscribers(),
        0,
        "both live ones are locked"
    );
}

/// A live subscriber is never reclaimed, whatever its recorded identity says: the kernel's
/// lock, not `/proc`, tells. (Here the identity is made to name a dead process.)
#[test]
fn a_live_subscriber_is_not_reclaimed_whatever_its_identity_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 5, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let record = subscriber.record();
    let ring = publisher.files().ring();
    ring.records[record]
        .who
        .store(ProcessId { pid, start_time: 1 }.to_word(), Relaxed);
    assert_eq!(publisher.reclaim_dead_subscribers(), 0);
    let n = send(&mut publisher);
    assert_eq!(subscriber.receive().unwrap().unwrap().number(), n);
}

/// A second publisher is refused while the first lives, and attaches once it is gone, by the
/// publisher's liveness lock.
#[test]
fn the_publisher_lock_admits_one_publisher_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let first = Publisher::<u64>::open(&path).unwrap();
    assert!(matches!(
        Publisher::<u64>::open(&path),
        Err(StreamError::PublisherBusy { .. })
    ));
    let files = StreamFiles::open(&path, false).unwrap();
    assert_eq!(files.publisher_attached(), Some(true));
    drop(first);
    assert_eq!(files.publisher_attached(), Some(false));
    Publisher::<u64>::open(&path).unwrap();
}

/// A subscription's `config` carries part of its nonce: a demotion the publisher computed from
/// one subscription's `config` (a compare-and-swap from that value) can never land on a new
/// subscription that claimed the freed record with the same mode and holds.
#[test]
fn a_demotion_read_from_one_subscription_never_lands_on_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 1);
    let publisher = Publisher::<u64>::open(&path).unwrap();
    let first = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    let record = first.record();
    let ring = publisher.files().ring();
    let seen = ring.records[record].config.load(Relaxed);
    drop(first);
    let next = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    assert_eq!(next.record(), record, "the only record, claimed again");
    let now = ring.records[record].config.load(Relaxed);
    assert_eq!(now & 0x1FF, seen & 0x1FF, "same holds and mode");
    assert_ne!(now, seen, "but not the same config word");
    assert_eq!(protocol::demote_laggards(&ring, false), 1);
    assert!(next.demoted(), "a demotion computed now applies to it");
}

/// The stall policy demotes only the lossless subscribers that hold the publisher back: a lossy
/// subscriber at the same cursor is left alone (cargo-mutants: a mask turned into `|` made
/// every subscriber at the floor "demoted", and, under Evict, evicted a lossy one).
#[test]
fn demotion_touches_only_the_lossless_subscribers_at_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let files = StreamFiles::open(&path, false).unwrap();
    let ring = files.ring();
    let lossless = protocol::claim_record(&ring, 7).unwrap();
    protocol::subscribe(&ring, lossless, 1, true);
    let lossy = protocol::claim_record(&ring, 8).unwrap();
    protocol::subscribe(&ring, lossy, 1, false);
    let lossy_config = ring.records[lossy].config.load(Relaxed);
    assert_eq!(protocol::demote_laggards(&ring, true), 1);
    assert_eq!(ring.records[lossy].config.load(Relaxed), lossy_config);
    let demoted = ring.records[lossless].config.load(Relaxed);
    assert_eq!(demoted & layout::CONFIG_LOSSLESS, 0);
    assert_ne!(demoted & layout::CONFIG_DEMOTED, 0);
    assert_ne!(demoted & layout::CONFIG_EVICTED, 0);
    assert_eq!(
        protocol::demote_laggards(&ring, true),
        0,
        "nothing lossless is left"
    );
}

/// Freeing a record gives back exactly the holds it was granted and reports whether its owner
/// was counted asleep (cargo-mutants: the hold mask and the sleeper test could be mutated
/// without a test failing: the budget then leaks or over-returns, and SLEEPERS drifts).
#[test]
fn freeing_a_record_returns_its_holds_and_says_whether_it_slept() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 8, 4);
    let files = StreamFiles::open(&path, false).unwrap();
    let ring = files.ring();
    // Another subscriber's hold stays in the budget: a free that gives back more than its
    // own would take it too.
    let other = protocol::claim_record(&ring, 5).unwrap();
    assert_eq!(protocol::take_budget(&ring, 1, 6), 1);
    protocol::subscribe(&ring, other, 1, false);
    for (holds, asleep) in [(3u64, true), (2, false)] {
        let record = protocol::claim_record(&ring, 7).unwrap();
        assert_eq!(protocol::take_budget(&ring, holds, 6), holds);
        protocol::subscribe(&ring, record, holds, true);
        ring.records[record]
            .sleeping
            .store(u64::from(asleep), Relaxed);
        let budget = ring.budget.load(Relaxed);
        let freed = protocol::reclaim(&ring, record, 7, 0x5EED, |_| false).unwrap();
        assert_eq!(freed.was_sleeping, asleep);
        assert_eq!(ring.budget.load(Relaxed), budget - holds);
        assert_eq!(
            ring.budget.load(Relaxed),
            1,
            "the other subscriber's hold is still counted"
        );
        assert_eq!(ring.records[record].owner.load(Relaxed), 0);
        assert_eq!(ring.records[record].config.load(Relaxed), 0);
        assert_eq!(ring.records[record].sleeping.load(Relaxed), 0);
    }
}

/// A record that another freer is at work on is left to it while that freer lives, and taken
/// over once it is dead; a record stuck half-freed (owner word OWNER_RECLAIMING) is finished
/// only from that state (cargo-mutants: the liveness test of the registered freer and the
/// stuck-state check could be inverted without a test failing).
#[test]
fn a_live_freer_is_left_alone_and_a_dead_ones_work_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let files = StreamFiles::open(&path, false).unwrap();
    let ring = files.ring();
    let record = protocol::claim_record(&ring, 7).unwrap();
    assert_eq!(protocol::take_budget(&ring, 1, 2), 1);
    protocol::subscribe(&ring, record, 1, false);
    let rec = &ring.records[record];
    // Another freer (0xF1) registered itself and died after marking the owner word.
    rec.reclaimer.store(0xF1, Relaxed);
    rec.owner.store(layout::OWNER_RECLAIMING, Relaxed);
    let alive = |who: u64| who != 0xF1;
    let dead = |who: u64| who == 0xF1;
    assert_eq!(
        protocol::free_record(&ring, record, layout::OWNER_RECLAIMING, 0x5EED, alive),
        None,
        "a freer that lives is not overtaken"
    );
    assert_eq!(rec.reclaimer.load(Relaxed), 0xF1);
    assert_eq!(
        protocol::free_record(&ring, record, 7, 0x5EED, dead),
        None,
        "the owner word is no longer 7: not ours to free as 7's"
    );
    assert!(protocol::free_record(&ring, record, layout::OWNER_RECLAIMING, 0x5EED, dead).is_some());
    assert_eq!(rec.owner.load(Relaxed), 0);
    assert_eq!(rec.reclaimer.load(Relaxed), 0);
    assert_eq!(
        ring.budget.load(Relaxed),
        0,
        "its hold went back to the budget"
    );
    // A record that is not stuck is not finished as if it were.
    let record = protocol::claim_record(&ring, 9).unwrap();
    assert_eq!(
        protocol::free_record(&ring, record, layout::OWNER_RECLAIMING, 0x5EED, dead),
        None
    );
    assert_eq!(ring.records[record].owner.load(Relaxed), 9);
}

/// A subscriber that leaves while another freer is registered on its record keeps looking
/// until that freer is gone, then frees the record itself (cargo-mutants: the "still ours"
/// test of the loop inverted made it give up at once, leaving the record to a later reclaim).
#[test]
fn unsubscribe_waits_out_a_registered_freer_and_then_frees_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let files = StreamFiles::open(&path, false).unwrap();
    let ring = files.ring();
    let record = protocol::claim_record(&ring, 7).unwrap();
    protocol::subscribe(&ring, record, 0, false);
    ring.records[record].reclaimer.store(0xF1, Relaxed);
    // The registered freer is seen alive the first few looks, then gone.
    let looks = std::cell::Cell::new(0);
    protocol::unsubscribe(&ring, record, 7, 7, |who| {
        assert_eq!(who, 0xF1);
        looks.set(looks.get() + 1);
        looks.get() > 3
    });
    assert!(looks.get() > 3, "it gave up before the freer was gone");
    assert_eq!(ring.records[record].owner.load(Relaxed), 0);
    assert_eq!(ring.records[record].reclaimer.load(Relaxed), 0);
}

/// `latest` skips to the newest frame and counts exactly the frames it skipped (cargo-mutants:
/// the count's subtraction turned into `+` or `/` survived the unit tests).
#[test]
fn latest_counts_exactly_the_frames_it_skips() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 6, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    for _ in 0..3 {
        send(&mut publisher);
    }
    let newest = subscriber.latest().unwrap().unwrap();
    assert_eq!((newest.number(), newest.missed_before()), (2, 2));
    drop(newest);
    assert_eq!((subscriber.missed(), subscriber.received()), (2, 1));
    for _ in 0..4 {
        send(&mut publisher);
    }
    let newest = subscriber.latest().unwrap().unwrap();
    assert_eq!((newest.number(), newest.missed_before()), (6, 3));
    drop(newest);
    assert_eq!(subscriber.missed(), 5);
}

/// `Sample::is_intact` tells a frame whose slot was reused (after a scribbler erased the hold
/// that protected it) from one that is still whole (cargo-mutants: `still_intact` returning
/// true, or its `&&` turned into `||`, survived the unit tests).
#[test]
fn a_sample_whose_hold_was_erased_and_slot_reused_is_not_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 3, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    send(&mut publisher);
    let sample = subscriber.receive().unwrap().unwrap();
    assert!(sample.is_intact());
    // Other frames pass: the held slot is not reused while the hold is there.
    for _ in 0..4 {
        send(&mut publisher);
    }
    assert!(sample.is_intact() && is_frame(&sample, 0));
    // A scribbler erases every hold of the record; the next loans reuse the slot.
    let ring = subscriber.files().ring();
    for held in &ring.records[subscriber.record()].held {
        held.store(0, Relaxed);
    }
    // Unprotected from now on, so no longer vouched for, although not rewritten yet.
    assert!(
        !sample.is_intact(),
        "a frame without its hold passed for protected"
    );
    for _ in 0..4 {
        send(&mut publisher);
    }
    assert!(
        !sample.is_intact(),
        "a reused slot passed for the frame it held"
    );
}

fn make_with_history(dir: &Path, slots: u32, history: u32) -> PathBuf {
    let mut spec = StreamSpec::new("h", DType::U64, vec![ELEMS as u64]);
    spec.slots = slots;
    spec.max_subscribers = 4;
    spec.history = history;
    create_stream_files(dir, &spec).unwrap().0
}

/// Takes every frame `subscriber` can get now; returns their numbers (checking each frame's
/// bytes).
fn drain(subscriber: &Subscriber<u64>) -> Vec<u64> {
    let mut got = Vec::new();
    while let Some(sample) = subscriber.receive().unwrap() {
        assert!(is_frame(&sample, sample.number()));
        got.push(sample.number());
    }
    got
}

/// With history `h`, a subscriber that joins late finds exactly the newest `h` frames (the
/// publisher reused every older slot), whatever start it asks for below them; without
/// history, only the newest one.
#[test]
fn history_keeps_the_newest_frames_for_a_late_subscriber() {
    for (slots, history) in [(8, 0), (8, 1), (8, 3), (8, 6), (3, 1), (16, 8)] {
        let dir = tempfile::tempdir().unwrap();
        let path = make_with_history(dir.path(), slots, history);
        let mut publisher = Publisher::<u64>::open(&path).unwrap();
        assert_eq!(publisher.files().history(), history);
        for _ in 0..100 {
            send(&mut publisher);
        }
        let kept = u64::from(history.max(1));
        let oldest = Subscriber::<u64>::open(
            &path,
            SubscribeOptions::new(Delivery::Lossy).start(StartAt::Oldest),
        )
        .unwrap();
        // The ring offers every slot but the one the last loan took; the history is the
        // guarantee, the rest is what the publisher has not reused yet.
        let got = drain(&oldest);
        assert!(got.len() as u64 >= kept, "{slots}/{history}: {got:?}");
        assert_eq!(*got.last().unwrap(), 99);
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
        assert_eq!(
            oldest.missed(),
            0,
            "frames older than the oldest are not missed"
        );
        assert_eq!(oldest.first_frame(), got[0]);
        drop(oldest);

        let next = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
        assert_eq!(next.first_frame(), 100);
        assert!(
            drain(&next).is_empty(),
            "the default lossy start is the next frame"
        );
    }
}

/// The newest `history` frames stay offered while the publisher keeps publishing and a
/// lossy subscriber holds frames: checked from the tags after every publish.
#[test]
fn history_frames_are_never_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_with_history(dir.path(), 8, 5);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let holder =
        Subscriber::<u64>::open(&path, SubscribeOptions::new(Delivery::Lossy).max_held(2)).unwrap();
    assert_eq!(holder.max_held(), 2, "capacity 8 - 1 - 5 = 2");
    let mut held = Vec::new();
    for n in 0..200u64 {
        send(&mut publisher);
        if n % 7 == 0 {
            held.clear();
            if let Some(s) = holder.latest().unwrap() {
                held.push(s);
            }
        }
        let ring = publisher.files().ring();
        for back in 0..5.min(n + 1) {
            let frame = n - back;
            assert!(
                ring.slots.iter().any(|s| s.tag.load(Relaxed) == frame + 1),
                "frame {frame} is within the history of 5 after frame {n} and must be offered"
            );
        }
    }
}

/// The hold budget shrinks with the history: `slots - 1 - max(history, 1)`.
#[test]
fn history_shrinks_the_hold_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_with_history(dir.path(), 8, 4);
    let files = StreamFiles::open(&path, false).unwrap();
    assert_eq!(files.hold_capacity(), 3);
    let a =
        Subscriber::<u64>::open(&path, SubscribeOptions::new(Delivery::Lossy).max_held(2)).unwrap();
    let b =
        Subscriber::<u64>::open(&path, SubscribeOptions::new(Delivery::Lossy).max_held(2)).unwrap();
    assert_eq!((a.max_held(), b.max_held()), (2, 1));
    let e = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap_err();
    assert!(
        matches!(e, StreamError::NoHoldBudget { budget: 3, .. }),
        "{e}"
    );
}

/// Resuming at a frame number: a frame still offered is delivered first; one that is gone
/// is reported as exactly the frames missed, at the first receive.
#[test]
fn resuming_at_a_frame_number_reports_the_exact_gap() {
    for delivery in [Delivery::Lossy, Delivery::Lossless] {
        let dir = tempfile::tempdir().unwrap();
        let path = make_with_history(dir.path(), 8, 4);
        let mut publisher = Publisher::<u64>::open(&path).unwrap();
        for _ in 0..50 {
            send(&mut publisher);
        }
        // Still offered: 47 is within the history of 4 (46..=49).
        let s = Subscriber::<u64>::open(
            &path,
            SubscribeOptions::new(delivery).start(StartAt::Frame(47)),
        )
        .unwrap();
        assert_eq!(s.first_frame(), 47);
        let first = s.receive().unwrap().unwrap();
        assert_eq!((first.number(), first.missed_before()), (47, 0));
        drop(first);
        assert_eq!(drain(&s), vec![48, 49]);
        assert_eq!(s.missed(), 0);
        drop(s);

        // Gone: frames 10.. up to the oldest still offered were reused.
        let s = Subscriber::<u64>::open(
            &path,
            SubscribeOptions::new(delivery).start(StartAt::Frame(10)),
        )
        .unwrap();
        let first = s.receive().unwrap().unwrap();
        let oldest = first.number();
        // The ring's 8 slots hold 42..=49 (the loan of 49 reused 41's); the history keeps
        // 46..=49 whatever the reuse order.
        assert!((42..=46).contains(&oldest), "oldest offered {oldest}");
        assert_eq!(
            first.missed_before(),
            oldest - 10,
            "exactly the frames gone"
        );
        drop(first);
        let rest = drain(&s);
        assert_eq!(rest, (oldest + 1..50).collect::<Vec<_>>());
        assert_eq!(s.missed() + s.received(), 50 - 10);
        drop(s);

        // Ahead: waits for that frame, and the ones before it are not missed.
        let s = Subscriber::<u64>::open(
            &path,
            SubscribeOptions::new(delivery).start(StartAt::Frame(52)),
        )
        .unwrap();
        assert!(s.receive().unwrap().is_none());
        send(&mut publisher);
        send(&mut publisher);
        assert!(
            s.receive().unwrap().is_none(),
            "50 and 51 come before the start"
        );
        send(&mut publisher);
        assert_eq!(drain(&s), vec![52]);
        assert_eq!(s.missed(), 0);
    }
}

/// A lossless subscriber starts at frame 0 unless it asks otherwise: joining late, it gets
/// every frame still offered and counts every earlier one as missed, so it never starts late
/// without a word. Asked to start at the next frame, it counts nothing.
#[test]
fn a_late_lossless_subscriber_reports_what_it_did_not_get() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_with_history(dir.path(), 8, 3);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    for _ in 0..30 {
        send(&mut publisher);
    }
    let late = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    assert_eq!(late.first_frame(), 0);
    let got = drain(&late);
    assert!(got.len() >= 3 && *got.last().unwrap() == 29, "{got:?}");
    assert_eq!(late.missed(), got[0], "frames 0..{} counted", got[0]);
    assert_eq!(late.missed() + late.received(), 30);
    // From now on, every frame: the publisher waits for it.
    for n in 30..60 {
        send(&mut publisher);
        assert_eq!(drain(&late), vec![n]);
    }
    assert_eq!(late.missed() + late.received(), 60);

    let next = Subscriber::<u64>::open(
        &path,
        SubscribeOptions::new(Delivery::Lossless).start(StartAt::Next),
    )
    .unwrap();
    assert_eq!(next.first_frame(), 60);
    send(&mut publisher);
    assert_eq!(drain(&next), vec![60]);
    assert_eq!(next.missed(), 0);
}

/// A history larger than `slots - 2` is refused at create, naming both values; a data file
/// whose history record says so is refused at open.
#[test]
fn a_history_the_ring_cannot_keep_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = StreamSpec::new("big", DType::U64, vec![4]);
    spec.slots = 8;
    spec.history = 7;
    let e = create_stream_files(dir.path(), &spec)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 6") && e.contains("not 7"), "{e}");
    spec.history = 6;
    create_stream_files(dir.path(), &spec).unwrap();
}

/// The history holds whatever order the slots are reused in: a ring whose oldest slot in
/// ring order holds a frame of the history (as a restart, or another reuse order, can leave
/// it) still loses none of the newest `history` frames.
#[test]
fn history_holds_whatever_order_the_ring_is_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_with_history(dir.path(), 6, 3);
    {
        // Frames 0..=5, arranged so that slot 0 (= 6 mod 6, where an oldest-first scan
        // starts) holds frame 4 and slot 1 frame 5; the oldest frames sit in slots 2..=5.
        let files = StreamFiles::open(&path, true).unwrap();
        let ring = files.ring();
        for (slot, frame) in [(0, 4u64), (1, 5), (2, 0), (3, 1), (4, 2), (5, 3)] {
            ring.slots[slot].tag.store(frame + 1, Relaxed);
        }
        ring.published.store(6, Relaxed);
    }
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let loan = publisher.try_loan().unwrap().expect("a slot is free");
    let view = StreamFiles::open(&path, false).unwrap();
    let ring = view.ring();
    let offered: Vec<u64> = ring
        .slots
        .iter()
        .map(|s| s.tag.load(Relaxed))
        .filter(|&t| t != 0 && t & protocol::TAKEN_BACK == 0)
        .map(|t| t - 1)
        .collect();
    for frame in 3..=5 {
        assert!(
            offered.contains(&frame),
            "frame {frame} of the history: {offered:?}"
        );
    }
    let _ = loan;
}

/// `wait_for_subscribers` sleeps until a subscriber joins and is woken by it (one futex sleep,
/// ended by a wake, not by its timeout); it returns at once when they are there already; and
/// it times out cleanly, having slept a few long sleeps rather than polled.
#[test]
fn waiting_for_subscribers_is_woken_by_the_join() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let publisher = Publisher::<u64>::open(&path).unwrap();
    assert_eq!(publisher.subscriber_count(), 0);
    let joiner = {
        let path = path.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let s = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            drop(s);
        })
    };
    let (waits, woken) = crate::sys::futex_wait_calls();
    let n = publisher
        .wait_for_subscribers(1, Duration::from_secs(30))
        .unwrap();
    let (waits_after, woken_after) = crate::sys::futex_wait_calls();
    assert_eq!(n, 1);
    assert_eq!(
        (waits_after - waits, woken_after - woken),
        (1, 1),
        "one sleep, ended by the subscriber's wake"
    );
    // Already there: no sleep at all.
    assert_eq!(
        publisher.wait_for_subscribers(1, Duration::ZERO).unwrap(),
        1
    );
    assert_eq!(crate::sys::futex_wait_calls().0, waits_after);
    // Leaving wakes a waiter too.
    publisher
        .files()
        .wait_for_members(Duration::from_secs(30), |n| n == 0)
        .unwrap();
    joiner.join().unwrap();

    let (waits, _) = crate::sys::futex_wait_calls();
    let e = publisher
        .wait_for_subscribers(2, Duration::from_millis(2500))
        .unwrap_err();
    assert!(
        matches!(
            e,
            StreamError::SubscribersTimeout {
                wanted: 2,
                attached: 0,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("has 0 subscribers after waiting"),
        "{e}"
    );
    let slept = crate::sys::futex_wait_calls().0 - waits;
    assert!(
        (1..=4).contains(&slept),
        "{slept} sleeps in 2.5 s: it polled"
    );
}

/// A start no frame number can reach is refused (a cursor of 2^63 - 1 or more would make a
/// wanted tag of 0, a loaned slot's, or one with the taken-back bit); the last possible frame
/// is accepted, and waits.
#[test]
fn a_start_beyond_every_possible_frame_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    for bad in [u64::MAX, 1 << 63, (1 << 63) - 1] {
        let e = Subscriber::<u64>::open(
            &path,
            SubscribeOptions::new(Delivery::Lossy).start(StartAt::Frame(bad)),
        )
        .unwrap_err();
        assert!(
            matches!(e, StreamError::BadStart { given, .. } if given == bad),
            "{e}"
        );
    }
    let last = Subscriber::<u64>::open(
        &path,
        SubscribeOptions::new(Delivery::Lossy).start(StartAt::Frame(protocol::MAX_START)),
    )
    .unwrap();
    // A loan's slot has tag 0 and is never taken for a frame: not even by a cursor that got
    // past the check (the receive itself refuses a wanted tag of 0 or with bit 63).
    let view = StreamFiles::open(&path, false).unwrap();
    let ring = view.ring();
    let record = protocol::claim_record(&ring, 99).unwrap();
    protocol::subscribe(&ring, record, 1, false);
    let loan = publisher.loan().unwrap();
    assert!(last.receive().unwrap().is_none());
    for cursor in [u64::MAX, (1 << 63) - 1, 1 << 63] {
        let mut state = protocol::SubscriberState::new(record, cursor, 99);
        assert_eq!(
            protocol::receive(&ring, &mut state, 0),
            None,
            "cursor {cursor}"
        );
    }
    let _ = loan;
    assert_eq!(publisher.subscriber_count(), 2);
}

/// Only a started subscription counts as a subscriber: a record claimed but not yet started
/// (its cursor not final) is not, so `wait_for_subscribers` never returns before a
/// subscriber's start is settled. A late lossless subscriber's cursor is the oldest frame
/// offered, not the frame it asked for (its lag shows it).
#[test]
fn only_started_subscriptions_count_and_a_late_cursor_is_the_oldest_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 8, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let ring = publisher.files().ring();
    let record = protocol::claim_record(&ring, 77).unwrap();
    assert_eq!(publisher.subscriber_count(), 0, "claimed, not started");
    protocol::subscribe(&ring, record, 1, false);
    assert_eq!(publisher.subscriber_count(), 1);
    for _ in 0..100 {
        send(&mut publisher);
    }
    let late = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    assert_eq!(late.first_frame(), 0);
    let lag = publisher
        .files()
        .subscribers()
        .iter()
        .find(|s| s.lossless)
        .unwrap()
        .lag;
    assert!(
        lag <= 8,
        "the late subscriber's cursor is within the ring: lag {lag}"
    );
    let first = late.receive().unwrap().unwrap();
    assert_eq!(first.missed_before(), first.number());
    assert_eq!(publisher.subscriber_count(), 2);
}

/// A lossless subscription still starting (its cursor provisional, not yet marked started) is
/// never the one a stall policy demotes; once started, a laggard at the floor is.
#[test]
fn a_subscription_still_starting_is_not_demoted() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let publisher = Publisher::<u64>::open(&path).unwrap();
    let ring = publisher.files().ring();
    let starting = protocol::claim_record(&ring, 11).unwrap();
    // What `subscribe_with` has stored before its fence: the lowest cursor and the mode.
    ring.records[starting].cursor.store(0, Relaxed);
    ring.records[starting]
        .config
        .store(1 | layout::CONFIG_LOSSLESS, Relaxed);
    assert_eq!(protocol::demote_laggards(&ring, true), 0);
    assert_eq!(
        ring.records[starting].config.load(Relaxed) & layout::CONFIG_EVICTED,
        0
    );
    let laggard = protocol::claim_record(&ring, 12).unwrap();
    protocol::subscribe(&ring, laggard, 1, true);
    ring.records[starting].cursor.store(5, Relaxed);
    assert_eq!(protocol::demote_laggards(&ring, true), 1);
    assert_ne!(
        ring.records[laggard].config.load(Relaxed) & layout::CONFIG_EVICTED,
        0
    );
}

fn make_framed(dir: &Path, header: Option<DType>, variable: bool, shape: Vec<u64>) -> PathBuf {
    let mut spec = StreamSpec::new("framed", DType::U32, shape);
    spec.slots = 4;
    spec.header = header;
    spec.variable = variable;
    create_stream_files(dir, &spec).unwrap().0
}

/// A per-frame header travels with its frame: written in the loan (zeroed at its start),
/// read in the sample, each frame's own, also in a slot reused for a later frame; as typed
/// values (checked against the dtype) and as bytes.
#[test]
fn per_frame_headers_travel_with_their_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_framed(dir.path(), Some(DType::U64), false, vec![3]);
    let mut publisher = Publisher::<u32>::open(&path).unwrap();
    let subscriber = Subscriber::<u32>::open(&path, Delivery::Lossless).unwrap();
    assert_eq!(publisher.header_dtype(), Some(&DType::U64));
    for n in 0..10u64 {
        let mut loan = publisher.loan().unwrap();
        assert_eq!(
            loan.header_bytes_mut(),
            &[0u8; 8],
            "a loan starts with a zeroed header"
        );
        if n % 2 == 0 {
            *loan.header_mut::<u64>().unwrap() = 1000 + n;
        } else {
            loan.header_bytes_mut()
                .copy_from_slice(&(1000 + n).to_le_bytes());
        }
        loan.copy_from_slice(&[n as u32; 3]);
        loan.publish();
        let sample = subscriber.receive().unwrap().unwrap();
        assert_eq!(sample.number(), n);
        assert_eq!(*sample.header::<u64>().unwrap(), 1000 + n);
        assert_eq!(sample.header_bytes(), (1000 + n).to_le_bytes());
        assert_eq!(&sample[..], &[n as u32; 3]);
    }
    publisher.send_with_header(&[7, 7, 7], &77u64).unwrap();
    let sample = subscriber.receive().unwrap().unwrap();
    assert_eq!((*sample.header::<u64>().unwrap(), sample[0]), (77, 7));
    // Another type is refused, however the bytes would fit.
    let err = sample.header::<i64>().unwrap_err();
    assert!(matches!(err, StreamError::FrameHeader { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("it is <u8, and the type asked for is <i8"),
        "{err}"
    );
    drop(sample);
    let mut loan = publisher.loan().unwrap();
    assert!(loan.header_mut::<f64>().is_err());
    let _ = loan;

    // A stream without headers has none to give.
    let plain = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&plain).unwrap();
    let mut loan = publisher.loan().unwrap();
    assert!(loan.header_bytes_mut().is_empty());
    let err = loan.header_mut::<u64>().unwrap_err();
    assert!(err.to_string().contains("carry no header"), "{err}");
}

/// Variable-size frames: a loan starts whole and may be shrunk (never past the maximum);
/// the sample has the published rows, as a slice and as a view of the actual shape; `send`
/// takes any whole number of rows. A stream whose frames do not vary refuses other rows.
#[test]
fn variable_size_frames_have_the_rows_they_were_published_with() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_framed(dir.path(), None, true, vec![5, 2]);
    let mut publisher = Publisher::<u32>::open(&path).unwrap();
    let subscriber = Subscriber::<u32>::open(&path, Delivery::Lossless).unwrap();
    assert!(publisher.is_variable());
    assert_eq!((publisher.max_rows(), publisher.row_len()), (5, 2));
    for rows in [5u64, 0, 3, 1, 5, 2] {
        let mut loan = publisher.loan().unwrap();
        assert_eq!(loan.rows(), 5);
        assert_eq!(loan.len(), 10);
        loan.set_rows(rows).unwrap();
        assert_eq!(loan.len(), 2 * rows as usize);
        for (i, x) in loan.iter_mut().enumerate() {
            *x = rows as u32 * 100 + i as u32;
        }
        loan.publish();
        let sample = subscriber.receive().unwrap().unwrap();
        assert_eq!(sample.rows(), rows);
        assert_eq!(sample.shape(), vec![rows, 2]);
        assert_eq!(sample.view().shape(), &[rows as usize, 2]);
        let want: Vec<u32> = (0..2 * rows as u32)
            .map(|i| rows as u32 * 100 + i)
            .collect();
        assert_eq!(&sample[..], &want[..]);
    }
    let mut loan = publisher.loan().unwrap();
    loan.set_rows(2).unwrap();
    assert_eq!(loan.view_mut().shape(), &[2, 2]);
    assert!(matches!(
        loan.set_rows(6),
        Err(StreamError::TooManyRows { rows: 6, max: 5 })
    ));
    let _ = loan;
    publisher.send(&[1, 2, 3, 4]).unwrap();
    assert_eq!(subscriber.receive().unwrap().unwrap().rows(), 2);
    for bad in [vec![1u32; 3], vec![1u32; 12]] {
        let err = publisher.send(&bad).unwrap_err();
        assert!(
            matches!(
                err,
                StreamError::NotWholeRows {
                    row: 2,
                    max: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("whole rows of 2 elements, at most 10"),
            "{err}"
        );
    }

    let sub = dir.path().join("f");
    std::fs::create_dir(&sub).unwrap();
    let fixed = make_framed(&sub, None, false, vec![5, 2]);
    let mut publisher = Publisher::<u32>::open(&fixed).unwrap();
    assert!(!publisher.is_variable());
    let mut loan = publisher.loan().unwrap();
    assert!(matches!(
        loan.set_rows(3),
        Err(StreamError::FixedSize { rows: 3, max: 5 })
    ));
    loan.set_rows(5).unwrap();
    let _ = loan;
    assert!(publisher.send(&[1, 2, 3, 4]).is_err());
}

/// The row count is in a file the publisher writes, and the publisher is as much a suspect
/// as anyone: a count above the maximum reads as the maximum, never past the slot.
#[test]
fn a_damaged_row_count_never_reads_past_the_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_framed(dir.path(), Some(DType::U16), true, vec![4]);
    let mut publisher = Publisher::<u32>::open(&path).unwrap();
    let subscriber = Subscriber::<u32>::open(&path, Delivery::Lossless).unwrap();
    let mut loan = publisher.loan().unwrap();
    loan.set_rows(2).unwrap();
    let slot = loan.slot();
    loan.publish();
    publisher
        .files()
        .rows_word(slot)
        .unwrap()
        .store(u64::MAX, Relaxed);
    let sample = subscriber.receive().unwrap().unwrap();
    assert_eq!(sample.rows(), 4);
    assert_eq!(sample.len(), 4);
}

/// The frame-info table's place in the file: after the slot table, described by feature bits
/// and the stride in the header and the header's dtype in extension record 0x8004; the frames
/// move after it, page aligned. A plain stream has one feature bit: its slot lines.
#[test]
fn the_frame_info_table_is_described_by_the_header() {
    use crate::format::{FEATURE_FRAME_INFO, FEATURE_SLOT_LINES, FEATURE_VARIABLE_FRAMES, Header};
    let dir = tempfile::tempdir().unwrap();
    let record =
        DType::parse("[('t', '<M8[ns]'), ('exposure', '<f4'), ('roi', '<u2', (4,))]").unwrap();
    let path = make_framed(dir.path(), Some(record.clone()), true, vec![100, 3]);
    let files = StreamFiles::open(&path, false).unwrap();
    let h: &Header = files.header();
    assert_eq!(h.format_version(), 2);
    assert_eq!(
        h.features.incompat,
        FEATURE_FRAME_INFO | FEATURE_VARIABLE_FRAMES | FEATURE_SLOT_LINES
    );
    assert_eq!(h.frame_info_stride, 64, "8 + 20 bytes, one line");
    assert_eq!(h.frame_header.as_ref(), Some(&record));
    assert_eq!(
        h.frame_info_offset(),
        Some(0x1000 + 4 * 64),
        "after 4 slot lines"
    );
    assert_eq!(h.data_offset, 4096 + 4096);
    assert_eq!(h.data_offset % 4096, 0);
    let big = DType::Void(5000);
    let sub = dir.path().join("b");
    std::fs::create_dir(&sub).unwrap();
    let path = make_framed(&sub, Some(big), false, vec![1]);
    let h = StreamFiles::open(&path, false).unwrap().header().clone();
    assert_eq!(h.frame_info_stride, 5056);
    assert_eq!(h.features.incompat, FEATURE_FRAME_INFO | FEATURE_SLOT_LINES);
    assert_eq!(
        h.data_offset,
        4096 + (4 * 64 + 4 * 5056u64).next_multiple_of(4096)
    );
    let plain = make(dir.path(), 4, 4);
    let h = StreamFiles::open(&plain, false).unwrap().header().clone();
    // A plain stream has slot lines too: version 2 with that bit only.
    assert_eq!((h.format_version(), h.frame_info_stride), (2, 0));
    assert_eq!(h.features.incompat, FEATURE_SLOT_LINES);

    // What cannot vary, or is too large, is refused at create.
    for (header, variable, shape, order, says) in [
        (None, true, vec![], Order::C, "at least one dimension"),
        (None, true, vec![4, 2], Order::F, "Fortran"),
        (
            Some(DType::Void(65529)),
            false,
            vec![4],
            Order::C,
            "at most 65528",
        ),
    ] {
        let mut spec = StreamSpec::new("bad", DType::U8, shape);
        spec.header = header;
        spec.variable = variable;
        spec.frame.order = order;
        let err = Header::new_stream(&spec).unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Several publishers: one lane each

fn make_lanes(dir: &Path, publishers: u32, slots: u32) -> PathBuf {
    let mut spec = StreamSpec::new("fan_in", DType::U64, vec![ELEMS as u64]);
    spec.slots = slots;
    spec.max_publishers = publishers;
    create_stream_files(dir, &spec).unwrap().0
}

/// A stream of 3 publishers has a data and a control file per lane, each lane's header says
/// which it is, and a stream of one keeps today's layout (no lane bit, no lane files).
#[test]
fn a_stream_of_several_publishers_has_one_lane_of_files_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_lanes(dir.path(), 3, 4);
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "control",
            "control.1",
            "control.2",
            "data",
            "data.1",
            "data.2"
        ]
    );
    let lanes = StreamFiles::open_lanes(&path, false).unwrap();
    for (k, lane) in lanes.iter().enumerate() {
        assert_eq!((lane.lane(), lane.header().lanes), (k as u32, 3));
        assert!(lane.header().has_lanes());
    }
    let single = make(dir.path(), 4, 4);
    let files = StreamFiles::open(&single, false).unwrap();
    assert!(!files.header().has_lanes());
    assert_eq!(
        files.header().features.incompat,
        crate::format::FEATURE_SLOT_LINES,
        "a single publisher's stream has no lanes"
    );
    assert!(!single.join("data.1").exists());
}

/// A loan made ahead is the next loan's however it is asked for: an async loan after a
/// publish gets that slot, and the loan after it a different one (no slot is handed out
/// twice); the subscriber gets every frame whole.
#[cfg(feature = "async")]
#[test]
fn an_async_loan_takes_the_slot_loaned_ahead() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    assert!(publisher.loans_ahead);
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    send(&mut publisher);
    let ahead = publisher
        .ahead
        .expect("a slot loaned ahead after the publish");
    let by_async = {
        let mut future = std::pin::pin!(publisher.loan_async());
        let Poll::Ready(Ok(mut loan)) = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        else {
            panic!("a free slot was there")
        };
        let slot = loan.slot();
        fill(&mut loan, 1);
        loan.publish();
        slot
    };
    assert_eq!(by_async, ahead);
    assert_ne!(
        send_recording_slots(&mut publisher, 1),
        [by_async],
        "a slot handed out twice"
    );
    for n in 0..3 {
        let sample = subscriber.receive().unwrap().unwrap();
        assert_eq!((sample.number(), sample.missed_before()), (n, 0));
        assert!(is_frame(&sample, n));
    }
}

/// A stream file of before slot lines (version 1: 16-byte slot-table entries, no
/// `SLOT_LINES` bit) is still read and written: its frames stream whole and in order, its
/// tags sit 16 bytes apart, and its publisher makes no loan ahead.
#[test]
fn a_stream_file_with_the_packed_slot_table_of_before_still_streams() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    // The same stream in the layout of before: with 4 slots the frames start on the same
    // page, so only the header changes.
    let mut h = StreamFiles::open(&path, false).unwrap().header().clone();
    h.features.incompat &= !crate::format::FEATURE_SLOT_LINES;
    assert_eq!(h.format_version(), 1);
    let page = h.encode();
    let data = std::fs::OpenOptions::new()
        .write(true)
        .open(path.join("data"))
        .unwrap();
    data.write_all_at(&page[..0x400], 0).unwrap();
    drop(data);
    let files = StreamFiles::open(&path, false).unwrap();
    assert_eq!(files.header().slot_entry_len(), 16);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    assert!(!publisher.loans_ahead, "no loan ahead without slot lines");
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    for n in 0..10 {
        assert_eq!(send(&mut publisher), n);
        let sample = subscriber.receive().unwrap().unwrap();
        assert_eq!((sample.number(), sample.missed_before()), (n, 0));
        assert!(is_frame(&sample, n));
    }
    // Frame 9 went into slot 9 % 4 = 1: its tag at 0x1000 + 16.
    let mut tag = [0u8; 8];
    std::fs::File::open(path.join("data"))
        .unwrap()
        .read_exact_at(&mut tag, 0x1000 + 16)
        .unwrap();
    assert_eq!(u64::from_le_bytes(tag), 10);
}

/// Lane files swapped between two streams, or given in the wrong order, are refused with
/// the reason.
#[test]
fn lanes_of_another_stream_or_out_of_order_are_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let pa = make_lanes(a.path(), 2, 4);
    let pb = make_lanes(b.path(), 2, 4);
    let mut mixed = vec![StreamFiles::open_lane(&pa, 0, false).unwrap()];
    mixed.push(StreamFiles::open_lane(&pb, 1, false).unwrap());
    let err = Subscriber::<u64>::attach_lanes(mixed, Delivery::Lossy).unwrap_err();
    assert!(
        matches!(&err, StreamError::Lanes { reason, .. } if reason.contains("lane 1")),
        "{err}"
    );
    let mut swapped = StreamFiles::open_lanes(&pa, false).unwrap();
    swapped.reverse();
    let err = Subscriber::<u64>::attach_lanes(swapped, Delivery::Lossy).unwrap_err();
    assert!(matches!(err, StreamError::Lanes { .. }), "{err}");
    let one = vec![StreamFiles::open_lane(&pa, 0, false).unwrap()];
    let err = Subscriber::<u64>::attach_lanes(one, Delivery::Lossy).unwrap_err();
    assert!(err.to_string().contains("it has 2 lanes"), "{err}");
}

/// Three publishers attach to three lanes; a fourth is refused with the limit named; a
/// lane freed by a publisher that leaves is taken by the next, whose frames say it is a
/// later attach of that lane.
#[test]
fn each_publisher_takes_a_free_lane_and_the_limit_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_lanes(dir.path(), 3, 4);
    let mut publishers: Vec<Publisher<u64>> =
        (0..3).map(|_| Publisher::open(&path).unwrap()).collect();
    let lanes: Vec<u32> = publishers.iter().map(|p| p.id().lane()).collect();
    assert_eq!(lanes, [0, 1, 2]);
    let err = Publisher::<u64>::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::PublishersFull {
                max_publishers: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("max_publishers"), "{err}");
    let first = publishers.remove(1).id();
    assert_eq!((first.attach(), first.pid()), (1, std::process::id()));
    let again = Publisher::<u64>::open(&path).unwrap();
    assert_eq!((again.id().lane(), again.id().attach()), (1, 2));
    assert_ne!(again.id().id(), first.id(), "a new publisher gets a new id");
}

/// Every frame of every publisher reaches a lossless subscriber exactly once, in each
/// publisher's order, tagged with its publisher; lane stats count per publisher.
#[test]
fn a_lossless_subscriber_gets_every_frame_of_every_publisher_in_each_ones_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_lanes(dir.path(), 3, 4);
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    assert_eq!(subscriber.lanes(), 3);
    const FRAMES: u64 = 2_000;
    // All three attached before any publishes: a publisher that finished and went before
    // another attached would hand that one its lane (a lane is reused once free).
    let attached = std::sync::Barrier::new(3);
    let ids = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let (path, attached) = (path.clone(), &attached);
                scope.spawn(move || {
                    let mut publisher = Publisher::<u64>::open(&path).unwrap();
                    attached.wait();
                    for _ in 0..FRAMES {
                        send(&mut publisher);
                    }
                    publisher.id()
                })
            })
            .collect();
        let mut next = [0u64; 3];
        let mut seen = std::collections::HashSet::new();
        while next.iter().any(|&n| n < FRAMES) {
            let sample = subscriber.receive_timeout(Duration::from_secs(30)).unwrap();
            let lane = sample.lane();
            assert_eq!(sample.number(), next[lane], "lane {lane} in order");
            assert!(is_frame(&sample, sample.number()));
            assert_eq!(sample.missed_before(), 0);
            let id = sample.publisher().expect("lanes tag their frames");
            assert_eq!(id.lane() as usize, lane);
            seen.insert(id);
            next[lane] += 1;
        }
        let ids: Vec<PublisherId> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            seen,
            ids.iter().copied().collect(),
            "tagged by who sent them"
        );
        ids
    });
    assert_eq!(ids.len(), 3);
    assert_eq!(
        (subscriber.received(), subscriber.missed()),
        (3 * FRAMES, 0)
    );
    for lane in 0..3 {
        let stats = subscriber.lane_stats(lane).unwrap();
        assert_eq!((stats.received, stats.next_number), (FRAMES, FRAMES));
    }
    assert!(subscriber.receive().unwrap().is_none());
}

/// The merge takes the frame published first among the lanes' next ones, and `latest()`
/// the newest across lanes.
#[test]
fn receive_merges_lanes_by_publish_time_and_latest_is_the_newest_of_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_lanes(dir.path(), 2, 4);
    let mut a = Publisher::<u64>::open(&path).unwrap();
    let mut b = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    let latest_of = |s: &Subscriber<u64>| s.latest().unwrap().map(|x| (x.lane(), x.number()));
    assert_eq!(latest_of(&subscriber), None, "nothing published");
    // b, a, a, b: by publish time (each publish reads the clock after the one before).
    send(&mut b);
    std::thread::sleep(Duration::from_millis(2));
    send(&mut a);
    std::thread::sleep(Duration::from_millis(2));
    send(&mut a);
    std::thread::sleep(Duration::from_millis(2));
    send(&mut b);
    let got: Vec<(usize, u64)> = std::iter::from_fn(|| {
        subscriber
            .receive()
            .unwrap()
            .map(|s| (s.lane(), s.number()))
    })
    .collect();
    assert_eq!(got, [(1, 0), (0, 0), (0, 1), (1, 1)]);
    assert_eq!(latest_of(&subscriber), Some((1, 1)));
    std::thread::sleep(Duration::from_millis(2));
    send(&mut a);
    assert_eq!(latest_of(&subscriber), Some((0, 2)));
}

/// A subscriber asleep on every lane is woken by a publish in any lane: woken by the
/// publisher's `FUTEX_WAKE` (this thread's count of wake-ups grows), not found by its sleep's
/// periodic re-check (a subscriber counted as a sleeper in some lanes only would be).
#[test]
fn a_subscriber_asleep_is_woken_by_a_publish_in_any_lane() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_lanes(dir.path(), 3, 4);
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    let mut publishers: Vec<Publisher<u64>> =
        (0..3).map(|_| Publisher::open(&path).unwrap()).collect();
    for lane in [2, 0, 1] {
        let got = std::thread::scope(|scope| {
            let publisher = &mut publishers[lane];
            scope.spawn(move || {
                // Long enough for the receive to be asleep (the backoff sleeps after ~1 ms).
                std::thread::sleep(Duration::from_millis(100));
                send(publisher);
            });
            let (_, woken) = crate::sys::futex_wait_calls();
            let sample = subscriber.receive_timeout(Duration::from_secs(30)).unwrap();
            let (_, woken_after) = crate::sys::futex_wait_calls();
            assert!(woken_after > woken, "lane {lane}: woken by its publisher");
            sample.lane()
        });
        assert_eq!(got, lane);
    }
    for lane in 0..3 {
        let files = subscriber.lane_files(lane).unwrap();
        assert_eq!(files.sleepers().load(Relaxed), 0, "lane {lane}: uncounted");
    }
}

/// Dropping a subscriber of several lanes frees its record in every lane; a subscriber that
/// cannot get a record in some lane gives back the ones it took.
#[test]
fn a_subscriber_of_several_lanes_frees_all_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = StreamSpec::new("full", DType::U64, vec![4]);
    spec.max_publishers = 2;
    spec.max_subscribers = 1;
    let (path, _) = create_stream_files(dir.path(), &spec).unwrap();
    // Someone holds lane 1's only record.
    let lane1 = StreamFiles::open_lane(&path, 1, false).unwrap();
    let ring = lane1.ring();
    assert!(protocol::claim_record(&ring, 99).is_some());
    let err = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap_err();
    assert!(matches!(err, StreamError::NoRecord { .. }), "{err}");
    let lane0 = StreamFiles::open_lane(&path, 0, false).unwrap();
    assert_eq!(lane0.subscribers().len(), 0, "lane 0's record given back");
    ring.records[0].owner.store(0, Relaxed);
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    assert_eq!((lane0.subscriber_count(), lane1.subscriber_count()), (1, 1));
    drop(subscriber);
    assert_eq!((lane0.subscriber_count(), lane1.subscriber_count()), (0, 0));
}

/// A lossy subscriber that fell behind in a busy lane still takes another lane's older frame
/// first: the busy lane competes with the frame it will skip to, not as "behind, first".
#[test]
fn a_lane_that_overruns_a_lossy_subscriber_does_not_starve_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_lanes(dir.path(), 2, 4);
    let mut busy = Publisher::<u64>::open(&path).unwrap();
    let mut quiet = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(
        &path,
        SubscribeOptions::new(Delivery::Lossy).start(StartAt::Frame(0)),
    )
    .unwrap();
    send(&mut quiet);
    std::thread::sleep(Duration::from_millis(2));
    for _ in 0..10 {
        send(&mut busy); // overruns the subscriber in this lane: frame 0 is long gone
    }
    let first = subscriber.receive().unwrap().unwrap();
    assert_eq!(
        (first.lane(), first.number()),
        (quiet.id().lane() as usize, 0),
        "the quiet lane's frame was published first"
    );
    drop(first);
    let next = subscriber.receive().unwrap().unwrap();
    assert_eq!(next.lane(), busy.id().lane() as usize);
    assert!(
        next.missed_before() > 0,
        "the busy lane's skipped frames are counted"
    );
}

/// A token is only ever released on the subscriber that made it: another subscriber's token
/// (same lane, slot and entry) leaves this one's hold alone.
#[test]
fn another_subscribers_token_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 6, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let x = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    let y = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    send(&mut publisher);
    let xt = x.receive().unwrap().unwrap().into_token();
    let yt = y.receive().unwrap().unwrap().into_token();
    assert!(y.frame_ptr(&xt).is_null() && !y.token_is_intact(&xt));
    y.release_token(xt);
    assert!(y.token_is_intact(&yt), "y's own hold is still there");
    y.release_token(yt);
}

/// Publishers attaching at once, from threads of one process, each get a lane of their own.
#[test]
fn publishers_attaching_at_once_get_lanes_of_their_own() {
    for round in 0..200 {
        let dir = tempfile::tempdir().unwrap();
        let path = make_lanes(dir.path(), 3, 4);
        let _subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
        let barrier = std::sync::Barrier::new(3);
        let lanes: Vec<u32> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let (path, barrier) = (path.clone(), &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        let p = Publisher::<u64>::open(&path).unwrap();
                        let lane = p.id().lane();
                        barrier.wait();
                        lane
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = lanes.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2], "round {round}: {lanes:?}");
    }
}

/// Pins this thread to the CPU it runs on now and returns that CPU's hint (CPU + 1).
fn pin_here() -> u32 {
    let hint = crate::sys::cpu_hint();
    assert_ne!(hint, 0, "sched_getcpu failed");
    let mut set = rustix::thread::CpuSet::new();
    set.set(hint as usize - 1);
    rustix::thread::sched_setaffinity(None, &set).unwrap();
    crate::sys::cpu_hint()
}

fn control_u32(files: &StreamFiles, at: u64) -> u32 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 4];
    files.control_file().read_exact_at(&mut b, at).unwrap();
    u32::from_le_bytes(b)
}

/// The CPU hints sit where docs/FORMAT.md puts them (`PUB_CPU` at 0x240, a record's `CPU` at
/// +96), and a waiter whose other side last ran on its own CPU never spins: the subscriber
/// waiting for a frame from a publisher on its CPU, and the publisher waiting for a slot that
/// a lossless subscriber on its CPU holds. With the other side's hint on another CPU, both
/// spin first as before.
#[test]
fn a_waiter_on_the_other_sides_cpu_yields_instead_of_spinning() {
    use crate::backoff::SPINS;
    use std::os::unix::fs::FileExt;
    // CPUs enough that only the hints decide (`crowded` is another test's).
    crate::sys::CPUS_FOR_TEST.with(|c| c.set(Some(64)));
    let here = pin_here();
    let elsewhere = here + 1;
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 3, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    send(&mut publisher);
    assert_eq!(control_u32(publisher.files(), 0x240), here, "PUB_CPU");

    drop(subscriber.receive().unwrap().unwrap());
    let spins = |wait: &dyn Fn()| {
        SPINS.with(|n| n.set(0));
        wait();
        SPINS.with(std::cell::Cell::get)
    };
    let receive_nothing = || {
        assert!(matches!(
            subscriber.receive_timeout(Duration::from_millis(2)),
            Err(StreamError::ReceiveTimeout { .. })
        ));
    };
    assert_eq!(spins(&receive_nothing), 0, "spun on the publisher's CPU");
    let record_cpu = 0x1000 + 256 * subscriber.record() as u64 + 96;
    assert_eq!(
        control_u32(subscriber.files(), record_cpu),
        here,
        "record CPU"
    );
    let files = publisher.files();
    files
        .control_file()
        .write_all_at(&elsewhere.to_le_bytes(), 0x240)
        .unwrap();
    assert!(
        spins(&receive_nothing) > 0,
        "never spun for a publisher elsewhere"
    );

    // Fill the ring (3 slots, the newest kept) until the lossless subscriber holds it back.
    publish_until_held_back(&mut publisher);
    let loan_nothing = |publisher: &mut Publisher<u64>| {
        assert!(matches!(
            publisher.loan_timeout(Duration::from_millis(2)),
            Err(StreamError::LoanTimeout { .. })
        ));
    };
    let mut publisher = std::cell::RefCell::new(publisher);
    assert_eq!(
        spins(&|| loan_nothing(&mut publisher.borrow_mut())),
        0,
        "spun on a lossless subscriber's CPU"
    );
    publisher
        .get_mut()
        .files()
        .control_file()
        .write_all_at(&u64::from(elsewhere).to_le_bytes(), record_cpu)
        .unwrap();
    assert!(
        spins(&|| loan_nothing(&mut publisher.borrow_mut())) > 0,
        "never spun for a subscriber elsewhere"
    );
}

/// A stream of 64 KiB frames, `slots` slots, no history.
fn make_big(dir: &Path, slots: u32, history: u32) -> PathBuf {
    let mut spec = StreamSpec::new(format!("big{history}"), DType::U64, vec![8192]);
    spec.slots = slots;
    spec.history = history;
    create_stream_files(dir, &spec).unwrap().0
}

/// A lossless subscriber allowed one hold, starting at `start`.
fn lossless_one_hold(path: &Path, start: crate::StartAt) -> Subscriber<u64> {
    let options = crate::SubscribeOptions::new(Delivery::Lossless)
        .max_held(1)
        .start(start);
    Subscriber::<u64>::attach(StreamFiles::open(path, false).unwrap(), options).unwrap()
}

/// Frames of 64 KiB with no history and only lossless subscribers are loaned newest first:
/// two lossless subscribers in threads get all 3 000 frames whole and in order, none missed,
/// while the publisher reuses the slot of the newest frame both have passed.
#[test]
fn newest_first_loans_deliver_every_frame_whole_and_in_order() {
    const FRAMES: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let path = make_big(dir.path(), 4, 0);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    assert!(
        publisher.state.newest_first,
        "64 KiB frames are loaned newest first"
    );
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let sub = lossless_one_hold(&path, crate::StartAt::Frame(0));
            std::thread::spawn(move || {
                for n in 0..FRAMES {
                    let sample = sub.receive_timeout(Duration::from_secs(20)).unwrap();
                    assert_eq!((sample.number(), sample.missed_before()), (n, 0));
                    assert!(is_frame(&sample, n), "frame {n} rewritten while held");
                }
                sub.missed()
            })
        })
        .collect();
    for _ in 0..FRAMES {
        send(&mut publisher);
    }
    for reader in readers {
        assert_eq!(reader.join().unwrap(), 0);
    }
}

/// Newest-first loans take the older frames nobody can want out of the offer, so the frames
/// offered stay consecutive: a subscriber that starts at the oldest frame offered starts at
/// the newest frames, not at frames 0 and 1 left in slots the loans no longer cycle through,
/// and misses nothing after it.
#[test]
fn newest_first_loans_keep_the_offered_frames_consecutive() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_big(dir.path(), 4, 0);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let keeping_up = lossless_one_hold(&path, crate::StartAt::Frame(0));
    // The ring filled first (the subscriber behind), so every slot has held a frame; then in
    // step, where the loans cycle through the two slots most recently read.
    for n in 0..4 {
        assert_eq!(send(&mut publisher), n);
    }
    for _ in 0..4 {
        drop(keeping_up.receive().unwrap().unwrap());
    }
    for n in 4..20 {
        assert_eq!(send(&mut publisher), n);
        drop(keeping_up.receive().unwrap().unwrap());
    }
    let offered: Vec<u64> = {
        let ring = publisher.files().ring();
        let mut frames: Vec<u64> = ring
            .slots
            .iter()
            .map(|s| s.tag.load(Relaxed))
            .filter(|&t| t != 0 && t & protocol::TAKEN_BACK == 0)
            .map(|t| t - 1)
            .collect();
        frames.sort_unstable();
        frames
    };
    assert!(
        offered.windows(2).all(|w| w[1] == w[0] + 1) && offered.last() == Some(&19),
        "frames offered: {offered:?}"
    );
    let late = lossless_one_hold(&path, crate::StartAt::Oldest);
    send(&mut publisher);
    let first = late.receive().unwrap().unwrap();
    assert_eq!(
        (first.number(), first.missed_before()),
        (offered[0], 0),
        "started at the oldest frame offered"
    );
    assert!(first.number() >= 18, "started at frame {}", first.number());
    drop(first);
    let mut n = offered[0] + 1;
    while let Some(sample) = late.receive().unwrap() {
        assert_eq!((sample.number(), sample.missed_before()), (n, 0));
        n += 1;
    }
    assert_eq!(n, 21);
}

/// With no history and only lossless subscribers, a newest-first loan reuses the slot of the
/// newest frame itself once every subscriber took it and let go, so a pipeline in step
/// writes every frame where the last one was just read. `latest()` has nothing to give then
/// (until the next publish), and returns at once. A held newest frame, or a lossy subscriber
/// (whose `latest()` may want it), or a history of 1 keeps it offered.
#[test]
fn newest_first_loans_reuse_the_newest_frames_slot_once_every_subscriber_took_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_big(dir.path(), 4, 0);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let sub = lossless_one_hold(&path, crate::StartAt::Frame(0));
    let slots = send_recording_slots(&mut publisher, 1);
    drop(sub.receive().unwrap().unwrap());
    // In step: every frame in the slot of the one before.
    for _ in 0..5 {
        assert_eq!(send_recording_slots(&mut publisher, 1), slots);
        let sample = sub.receive().unwrap().unwrap();
        assert!(is_frame(&sample, sample.number()));
    }
    assert_eq!(
        sub.latest().unwrap().unwrap().number(),
        5,
        "offered until a loan"
    );
    let loan = publisher.loan().unwrap();
    assert_eq!(loan.slot(), slots[0]);
    assert!(sub.latest().unwrap().is_none(), "frame 5 is on loan again");
    // A loan given up leaves its slot offering nothing (frame 5 went with it); the next
    // loan takes that slot again.
    assert!(sub.latest().unwrap().is_none());

    // Held: the loan takes another slot, and the held frame stays whole.
    let six = send_recording_slots(&mut publisher, 1);
    let held = sub.receive().unwrap().unwrap();
    assert_eq!(held.number(), 6);
    assert_ne!(send_recording_slots(&mut publisher, 1), six);
    assert!(is_frame(&held, 6), "a held frame was rewritten");
    drop(held);
    drop(sub.receive().unwrap().unwrap());

    // A lossy subscriber: the newest frame stays offered, for its latest() and ours.
    let lossy = Subscriber::<u64>::open(&path, Delivery::Lossy).unwrap();
    let newest = send(&mut publisher);
    drop(sub.receive().unwrap().unwrap());
    let _loan = publisher.loan().unwrap();
    for subscriber in [&lossy, &sub] {
        let again = subscriber.latest().unwrap().unwrap();
        assert_eq!(again.number(), newest);
        assert!(is_frame(&again, newest));
    }

    // A history of 1 keeps the newest frame offered for late joiners.
    let path = make_big(dir.path(), 4, 1);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let sub = lossless_one_hold(&path, crate::StartAt::Frame(0));
    let newest = send(&mut publisher);
    drop(sub.receive().unwrap().unwrap());
    let _loan = publisher.loan().unwrap();
    assert_eq!(sub.latest().unwrap().unwrap().number(), newest);
    let late = lossless_one_hold(&path, crate::StartAt::Oldest);
    assert_eq!(late.receive().unwrap().unwrap().number(), newest);
}

/// `has_new` says whether a receive would find a frame: false before a publish and after
/// everything was received, true once any lane has a frame after the cursor.
#[test]
fn has_new_tells_whether_a_frame_is_waiting_in_any_lane() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    assert!(!subscriber.has_new().unwrap(), "nothing published yet");
    send(&mut publisher);
    send(&mut publisher);
    assert!(subscriber.has_new().unwrap());
    drop(subscriber.receive().unwrap().unwrap());
    assert!(subscriber.has_new().unwrap(), "one of two received");
    drop(subscriber.receive().unwrap().unwrap());
    assert!(!subscriber.has_new().unwrap(), "both received");

    let path = make_lanes(dir.path(), 2, 4);
    let _a = Publisher::<u64>::open(&path).unwrap();
    let mut b = Publisher::<u64>::open(&path).unwrap();
    let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
    assert!(!subscriber.has_new().unwrap());
    send(&mut b);
    assert!(
        subscriber.has_new().unwrap(),
        "a frame in the second lane counts"
    );
    drop(subscriber.receive().unwrap().unwrap());
    assert!(!subscriber.has_new().unwrap());
}

/// Publishes frames until a loan fails at once: a lossless subscriber holds the publisher back.
fn publish_until_held_back(publisher: &mut Publisher<u64>) {
    while publisher
        .loan_timeout(Duration::ZERO)
        .is_ok_and(|mut loan| {
            fill(&mut loan, 0);
            loan.publish();
            true
        })
    {}
}

/// A publisher whose waits for a free slot have lately been long (each here lasts until the
/// publisher has gone to sleep and 1 ms more) takes the usual schedule instead of the patient
/// one: its first waits are patient, its last ones are not. Each frame the subscriber takes is
/// the next.
#[test]
fn a_publisher_whose_slot_waits_are_long_stops_being_patient() {
    use std::sync::atomic::{
        AtomicU64,
        Ordering::{Acquire, Relaxed, Release},
    };
    const WAITS: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = lossless_one_hold(&path, crate::StartAt::Next);
    assert!(
        !publisher.slot_waits_long(),
        "a new publisher is not patient"
    );
    publish_until_held_back(&mut publisher);
    super::publisher::PATIENT_WAITS.with(|w| w.borrow_mut().clear());
    // Loans that have ended so far.
    let loaned = &AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(move || {
            let files = StreamFiles::open(&path, false).unwrap();
            let sleepers = files.pub_sleepers();
            for n in 0..WAITS {
                // Until loan `n` has started (the one before it ended) and is asleep (it has
                // waited 100 µs at least), and 1 ms more: a long wait whatever the scheduler
                // does.
                let started = std::time::Instant::now();
                while loaned.load(Acquire) < n || sleepers.load(Relaxed) == 0 {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "loan {n} never went to sleep"
                    );
                    std::thread::sleep(Duration::from_micros(50));
                }
                std::thread::sleep(Duration::from_millis(1));
                let frame = subscriber.receive_timeout(Duration::from_secs(5)).unwrap();
                assert_eq!(frame.number(), n, "frames out of order");
            }
        });
        for n in 0..WAITS {
            let mut loan = publisher.loan_timeout(Duration::from_secs(5)).unwrap();
            // Release: a subscriber that sees this count sees this loan's sleeper count
            // taken out again too.
            loaned.fetch_add(1, Release);
            fill(&mut loan, n);
            loan.publish();
        }
    });
    assert!(
        publisher.slot_waits_long(),
        "{WAITS} waits of over 1 ms left the publisher patient"
    );
    // Every loan waited (each found the ring full): one record each.
    let patient = super::publisher::PATIENT_WAITS.with(|w| w.borrow().clone());
    assert_eq!(patient.len(), WAITS as usize, "{patient:?}");
    assert!(
        patient[0],
        "the first long wait was not patient: {patient:?}"
    );
    assert!(
        !patient[WAITS as usize - 1],
        "the last wait was patient: {patient:?}"
    );
}

/// A publisher that sleeps early in its wait (its recent waits were long) still acts on the
/// stall policy on time: no sleep of the wait asks for more than what is left of the policy's
/// wait (the longest sleep would be 50 ms), and the stalled subscriber is demoted.
#[test]
fn a_publisher_that_sleeps_early_acts_on_the_stall_policy_on_time() {
    let after = Duration::from_millis(5);
    let dir = tempfile::tempdir().unwrap();
    let mut spec = StreamSpec::new("s", DType::U64, vec![ELEMS as u64]);
    spec.slots = 4;
    spec.max_subscribers = 2;
    spec.stall = crate::StallPolicy::Demote { after };
    let path = create_stream_files(dir.path(), &spec).unwrap().0;
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let stalled = lossless_one_hold(&path, crate::StartAt::Next);
    publish_until_held_back(&mut publisher);
    publisher.note_long_slot_waits();
    super::publisher::SLOT_SLEEPS.with(|w| w.borrow_mut().clear());
    publisher.loan_timeout(Duration::from_secs(10)).unwrap();
    assert!(stalled.demoted(), "the stalled subscriber was not demoted");
    let sleeps = super::publisher::SLOT_SLEEPS.with(|w| w.borrow().clone());
    assert!(!sleeps.is_empty(), "the wait never slept");
    assert!(
        sleeps.iter().all(|&d| d <= after),
        "a sleep past the stall policy's wait of {after:?}: {sleeps:?}"
    );
}

/// With more participants than CPUs (publishers and started subscribers), a waiting publisher
/// and a waiting subscriber yield from the start instead of spinning: one of them surely
/// shares a CPU with someone it waits for. With CPUs enough, they spin first as before.
#[test]
fn waiters_yield_instead_of_spinning_when_participants_outnumber_the_cpus() {
    use crate::backoff::SPINS;
    use crate::sys::CPUS_FOR_TEST;
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), 4, 4);
    let mut publisher = Publisher::<u64>::open(&path).unwrap();
    let subscriber = lossless_one_hold(&path, crate::StartAt::Next);
    let spins = |cpus: usize, wait: &mut dyn FnMut()| {
        CPUS_FOR_TEST.with(|c| c.set(Some(cpus)));
        SPINS.with(|n| n.set(0));
        wait();
        CPUS_FOR_TEST.with(|c| c.set(None));
        SPINS.with(std::cell::Cell::get)
    };
    // `who` waiting with `wait` does not spin on `crowded` CPUs, and does on `free` ones.
    let spins_only_on = |free: usize, crowded: usize, who: &str, wait: &mut dyn FnMut()| {
        assert_eq!(spins(crowded, wait), 0, "{who} spun on {crowded} CPUs");
        assert!(spins(free, wait) > 0, "{who} never spun on {free} CPUs");
    };
    let mut receive_nothing = || {
        assert!(matches!(
            subscriber.receive_timeout(Duration::from_millis(2)),
            Err(StreamError::ReceiveTimeout { .. })
        ));
    };
    // One publisher and one subscriber: crowded on one CPU, not on two.
    spins_only_on(2, 1, "a subscriber", &mut receive_nothing);
    // The subscriber's CPU hint names this thread's CPU now: make it another one, so that
    // only the count decides below.
    let record_cpu = 0x1000 + 256 * subscriber.record() as u64 + 96;
    publisher
        .files()
        .control_file()
        .write_all_at(&u64::from(pin_here() + 1).to_le_bytes(), record_cpu)
        .unwrap();

    // Fill the ring (4 slots) until the lossless subscriber holds the publisher back.
    publish_until_held_back(&mut publisher);
    let mut loan_nothing = || {
        assert!(matches!(
            publisher.loan_timeout(Duration::from_millis(2)),
            Err(StreamError::LoanTimeout { .. })
        ));
    };
    spins_only_on(2, 1, "a publisher", &mut loan_nothing);
    // A second subscriber makes three participants: crowded on two CPUs too.
    let _second = Subscriber::<u64>::attach(
        StreamFiles::open(&path, false).unwrap(),
        crate::SubscribeOptions::new(Delivery::Lossy).max_held(1),
    )
    .unwrap();
    spins_only_on(3, 2, "a publisher of 3 participants", &mut loan_nothing);
}

/// `Sample::copy_to` gives exactly the frame, below and above the size where it switches to
/// the CPU's string move, and refuses a destination of another length.
#[test]
fn copy_to_copies_exactly_the_frame_and_refuses_another_length() {
    let dir = tempfile::tempdir().unwrap();
    for elems in [ELEMS, 4096 + 3] {
        let mut spec = StreamSpec::new(format!("c{elems}"), DType::U64, vec![elems as u64]);
        spec.slots = 4;
        let path = create_stream_files(dir.path(), &spec).unwrap().0;
        let mut publisher = Publisher::<u64>::open(&path).unwrap();
        let subscriber = Subscriber::<u64>::open(&path, Delivery::Lossless).unwrap();
        for _ in 0..3 {
            let n = send(&mut publisher);
            let sample = subscriber.receive().unwrap().unwrap();
            let mut out = vec![u64::MAX; elems];
            sample.copy_to(&mut out);
            assert!(is_frame(&out, n), "frame {n} of {elems} elements");
            let short = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                sample.copy_to(&mut vec![0; elems - 1]);
            }));
            assert!(short.is_err(), "a destination one element short is refused");
        }
    }
}
