//! Fault injection: a writer SIGKILLed while it holds the write side. Recovery must mark the
//! array TORN and release it; readers must get the torn error rather than hang or read half a
//! write; the next complete write must clear it.

mod common;

use std::time::Duration;

use common::{Worker, make_array, pattern};
use mmshare::{Access, Array, DType, ReadError, Recovery};

const WATCHDOG: Duration = Duration::from_secs(30);

/// A writer killed mid-write: a reader in another process, blocked on the held write side, is
/// woken by recovery and gets the torn error; the next whole-array write clears it.
#[test]
fn sigkilled_writer_is_recovered_as_torn_and_next_write_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_array(dir.path(), "killed", DType::U64, &[1024]);
    let p = path.to_str().unwrap();
    let arr = Array::<u64>::open(&path, Access::Write).unwrap();
    arr.write_all(&vec![7; 1024]).unwrap();

    let mut holder = Worker::spawn(&["hold", p]);
    let line = holder.expect_line("holding", WATCHDOG);
    let pid = common::field(&line, "pid");
    assert_eq!(arr.sequence() % 2, 1, "the worker holds the write side");
    assert_eq!(arr.writer().map(|w| u64::from(w.pid)), Some(pid));
    assert!(matches!(
        arr.recover_dead_writer(),
        Ok(Recovery::WriterAlive(_))
    ));
    holder.kill();

    // A reader that is already waiting when recovery happens.
    let mut waiter = Worker::spawn(&["expect-torn", p, "20000"]);
    waiter.expect_line("waiting", WATCHDOG);
    std::thread::sleep(Duration::from_millis(200));

    let recovery = arr.recover_dead_writer().unwrap();
    let Recovery::Recovered { writer, version } = recovery else {
        panic!("expected recovery, got {recovery:?}");
    };
    assert_eq!(u64::from(writer.pid), pid);
    // Sequence: 2 after the first write, 3 when the worker took the write side, 5 when recovery
    // took it over, 6 when recovery published: version 3.
    assert_eq!(version, 3);
    let (status, lines) = waiter.finish(WATCHDOG);
    assert!(
        status.success(),
        "waiting reader did not see TORN: {lines:?}"
    );
    assert!(lines.iter().any(|l| l == "torn version=3"), "{lines:?}");

    assert_eq!(arr.read_to_vec(), Err(ReadError::Torn { version: 3 }));
    assert!(arr.is_torn());
    // A partial write does not clear TORN (the rest may still be half-written)...
    arr.write_range(0, &[1, 2, 3]).unwrap();
    assert!(matches!(arr.read_to_vec(), Err(ReadError::Torn { .. })));
    // ...a whole-array write does.
    arr.write_all(&vec![9; 1024]).unwrap();
    assert_eq!(arr.read_to_vec().unwrap(), vec![9; 1024]);
    assert_eq!(arr.recover_dead_writer(), Ok(Recovery::NotHeld));
}

/// Writers killed at arbitrary points of back-to-back writes: after recovery the array is
/// either marked TORN or holds one complete version; never a silent half-write, never held.
#[test]
fn writer_killed_at_random_points_never_leaves_a_silent_half_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_array(dir.path(), "scribbled", DType::U64, &[1 << 16]);
    let p = path.to_str().unwrap();
    let mut arr = Array::<u64>::open(&path, Access::Write).unwrap();
    arr.raw_mut().set_accept_torn(true);
    let mut recovered = 0;
    for round in 0..8u64 {
        let mut w = Worker::spawn(&["scribble", p]);
        w.expect_line("scribbling", WATCHDOG);
        std::thread::sleep(Duration::from_millis(20 + 13 * round));
        w.kill();
        let outcome = arr.recover_dead_writer().unwrap();
        if matches!(outcome, Recovery::Recovered { .. }) {
            recovered += 1;
        } else {
            assert_eq!(outcome, Recovery::NotHeld, "round {round}");
        }
        assert_eq!(arr.sequence() % 2, 0, "released after round {round}");
        let mut data = vec![0u64; arr.len()];
        let snap = arr.read_into(&mut data).unwrap();
        if !snap.torn {
            let complete = data
                .iter()
                .enumerate()
                .all(|(i, &x)| x == pattern(snap.version, i));
            assert!(
                complete,
                "round {round}: untorn snapshot {} is not one complete write",
                snap.version
            );
        }
        // Repair for the next round.
        arr.write_with(|v| {
            let next = v.version();
            for i in 0..v.len() {
                v.set(i, pattern(next, i));
            }
            v.clear_torn();
        })
        .unwrap();
    }
    // The scribbler holds the write side nearly all the time, so most kills land mid-write.
    assert!(recovered > 0, "no kill landed inside a write in 8 rounds");
}

/// Several recoverers racing on one dead writer: exactly one recovers it, the sequence ends
/// even at s + 3, and no one takes the write side from a live recoverer.
#[test]
fn concurrent_recoveries_act_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_array(dir.path(), "raced", DType::U64, &[512]);
    let p = path.to_str().unwrap();
    let handles: Vec<Array<u64>> = (0..3)
        .map(|_| Array::<u64>::open(&path, Access::Write).unwrap())
        .collect();
    for round in 0..10 {
        let mut holder = Worker::spawn(&["hold", p]);
        holder.expect_line("holding", WATCHDOG);
        holder.kill();
        let held = handles[0].sequence();
        assert_eq!(held % 2, 1);
        let outcomes: Vec<Recovery> = std::thread::scope(|s| {
            let joins: Vec<_> = handles
                .iter()
                .map(|h| s.spawn(move || h.recover_dead_writer().unwrap()))
                .collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        });
        let recovered = outcomes
            .iter()
            .filter(|o| matches!(o, Recovery::Recovered { .. }))
            .count();
        assert_eq!(recovered, 1, "round {round}: {outcomes:?}");
        assert_eq!(
            handles[0].sequence(),
            held + 3,
            "round {round}: {outcomes:?}"
        );
        handles[0].write_all(&[round; 512]).unwrap();
    }
}
