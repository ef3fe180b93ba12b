//! Recovery after a writer dies mid-write, against the rules that keep it safe: a writer that is
//! positively dead is recovered whatever connections stay open; a live writer that recovery
//! misjudges (another pid namespace with its own /proc) loses its write side cleanly and never
//! runs the sequence backwards; and under repeated kills the sequence accounts for every write
//! and every recovery while no reader accepts a torn snapshot.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Daemon, Worker, field, make_array};
use mmshare::{Access, DType, RawArray, ReadError, Recovery};

const WATCHDOG: Duration = Duration::from_secs(30);

/// A connected client forks a worker that inherits its read-write mapping; the worker is
/// SIGKILLed inside a write while the parent stays connected (its write lease stays open). The
/// daemon must still recover: the lease says nothing about a forked worker that is gone.
#[test]
fn a_forked_writer_killed_mid_write_is_recovered_while_its_parent_stays_connected() {
    let d = Daemon::start(&[]);
    let client = d.client();
    drop(client.create_array::<u8>("forked", &[64]).unwrap());
    let mut parent = Worker::spawn(&["client-fork-hold", d.socket.to_str().unwrap(), "forked"]);
    let line = parent.expect_line("parent connected", WATCHDOG);
    let child = field(&line, "child") as i32;
    // Parent and child print independently: the child's line may come first.
    if !parent.has_seen("child holding") {
        parent.expect_line("child holding", WATCHDOG);
    }
    let reader = client.open::<u8>("forked", Access::Read).unwrap();
    assert_eq!(reader.sequence(), 1, "the child holds the write side");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // The child is the parent's to reap; it stays a zombie, which is positive evidence too.
    // The watchdog only keeps a broken daemon from hanging CI.
    let version = reader.wait_for_version(0, WATCHDOG);
    let parent_still_there = parent.child.try_wait().unwrap().is_none();
    let read = reader.read_to_vec();
    parent.kill(); // before any assertion, so a failure leaves no process behind
    assert!(
        parent_still_there,
        "the parent (and its lease) must still be there"
    );
    assert_eq!(version, Ok(2), "recovery publishes sequence 4 (version 2)");
    assert!(
        matches!(read, Err(ReadError::Torn { version: 2 })),
        "{read:?}"
    );
}

fn unshare_with_own_proc_works() -> bool {
    std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A writer in a pid namespace with its own /proc records a pid that names another process
/// in the daemon's namespace (its pid 1 is the host's init), which `/proc` alone would judge
/// dead. The sequence only grows, every write either publishes or fails with `LostWriteSide`,
/// a lost write leaves the array TORN, and since the writer holds a write lease the daemon
/// recognises it and takes nothing from it. Needs root; skips elsewhere.
#[test]
fn a_writer_misjudged_dead_in_its_own_pid_namespace_never_runs_the_sequence_backwards() {
    if !unshare_with_own_proc_works() {
        eprintln!("skipped: `unshare --pid --mount-proc` is not available here (needs root)");
        return;
    }
    let d = Daemon::start(&[]);
    let client = d.client();
    drop(client.create_array::<u8>("ns", &[64]).unwrap());
    let reader = client.open::<u8>("ns", Access::Read).unwrap();
    let mut writer = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(common::worker_path())
        .args(["slow-writes", d.socket.to_str().unwrap(), "ns", "6", "400"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = writer.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        std::io::BufRead::lines(std::io::BufReader::new(stdout))
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let deadline = Instant::now() + WATCHDOG;
    let mut samples = vec![reader.sequence()];
    while writer.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "watchdog: writer still running");
        samples.push(reader.sequence());
        std::thread::sleep(Duration::from_micros(200));
    }
    samples.push(reader.sequence());
    let lines = lines.join().unwrap();
    assert!(writer.wait().unwrap().success(), "{lines:?}");
    assert!(
        samples.windows(2).all(|w| w[0] <= w[1]),
        "the sequence ran backwards: {samples:?}"
    );
    let outcomes: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("ok ") || l.starts_with("lost "))
        .collect();
    assert_eq!(outcomes.len(), 6, "{lines:?}");
    assert_eq!(reader.sequence() % 2, 0, "nothing is left held");
    let last_ok = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("ok ") || l.starts_with("lost "));
    if last_ok.is_some_and(|l| l.starts_with("lost ")) {
        assert!(reader.is_torn(), "a lost write must leave the array TORN");
    }
    // The writer holds a write lease through its own connection, and the daemon recognises it
    // by its start time (which, unlike its pid, does not depend on the namespace): no write is
    // taken from it. Were it misjudged, the checks above show the failure would be clean.
    let lost = outcomes.iter().filter(|l| l.starts_with("lost ")).count();
    assert_eq!(
        lost, 0,
        "a live, connected writer lost its write side: {lines:?}"
    );
}

/// Deterministic random numbers for the kill schedule (the seed is printed).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// One writer's versions: those it announced inside a write (before publishing).
fn announced(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("w "))
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect()
}

/// 100 rounds: three writers write whole arrays back to back, two readers check every snapshot
/// (each write carries its writer's id, so two writers inside the write side at once would
/// show); each round SIGKILLs a random writer and recovers what it left. At the end the
/// versions account exactly for every write and every recovery.
#[test]
fn random_writer_kills_account_for_every_version_and_no_reader_accepts_a_torn_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_array(dir.path(), "ledger", DType::U64, &[8192]);
    let p = path.to_str().unwrap();
    let array = RawArray::open(&path, Access::Write).unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill schedule seed {seed}");
    let mut rng = XorShift(seed);
    let readers: Vec<Worker> = (0..2)
        .map(|_| Worker::spawn(&["ledger-reader", p]))
        .collect();
    let spawn = |id: u64| Worker::spawn(&["ledger-writer", p, &id.to_string()]);
    let mut writers: Vec<Worker> = (0..3).map(spawn).collect();
    let mut versions = Vec::new();
    let mut recoveries = Vec::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(1 + rng.next(8)));
        let victim = rng.next(3) as usize;
        let dead = std::mem::replace(&mut writers[victim], spawn(victim as u64));
        let pid = dead.pid();
        let mut child = dead;
        child.child.kill().unwrap();
        let (_, lines) = child.finish(WATCHDOG);
        versions.extend(announced(&lines));
        // Recover what the dead writer left, if it held the write side. Another writer may
        // hold it instead (then the dead one did not); a writer killed between taking the
        // write side and recording itself leaves it unidentified.
        let deadline = Instant::now() + WATCHDOG;
        loop {
            assert!(
                Instant::now() < deadline,
                "watchdog: recovery never settled"
            );
            match array.recover_dead_writer().unwrap() {
                Recovery::Recovered { writer, version } => {
                    assert_eq!(writer.pid, pid, "only the killed writer is dead");
                    recoveries.push(version);
                    break;
                }
                Recovery::NotHeld | Recovery::WriterAlive(_) => break,
                Recovery::WriterUnknown { sequence } => {
                    // Unidentified: if it stays so, the dead writer took it (live writers record
                    // themselves within instructions).
                    std::thread::sleep(Duration::from_millis(50));
                    if array.sequence() == sequence && array.writer().is_none() {
                        if let Recovery::Recovered { version, .. } =
                            array.recover_unidentified_writer(sequence).unwrap()
                        {
                            recoveries.push(version);
                        }
                        break;
                    }
                }
            }
        }
    }
    std::fs::write(format!("{p}.stop"), b"").unwrap();
    for w in writers {
        let (status, lines) = w.finish(WATCHDOG);
        assert!(status.success(), "{lines:?}");
        versions.extend(announced(&lines));
    }
    for r in readers {
        let (status, lines) = r.finish(WATCHDOG);
        assert!(
            status.success(),
            "a reader accepted a torn snapshot: {lines:?}"
        );
        eprintln!("reader: {lines:?}");
    }
    let final_sequence = array.sequence();
    assert_eq!(final_sequence % 2, 0);
    let announced_set: BTreeSet<u64> = versions.iter().copied().collect();
    assert_eq!(
        announced_set.len(),
        versions.len(),
        "two writes announced the same version: two writers held the write side at once"
    );
    // A recovery publishes version r; the dead write had taken version r - 1 (never published).
    let skipped: BTreeSet<u64> = recoveries.iter().map(|r| r - 1).collect();
    let completed: BTreeSet<u64> = announced_set.difference(&skipped).copied().collect();
    let mut accounted: Vec<u64> = completed
        .iter()
        .chain(&skipped)
        .chain(&recoveries)
        .copied()
        .collect();
    accounted.sort_unstable();
    let expected: Vec<u64> = (1..=final_sequence / 2).collect();
    assert_eq!(
        accounted, expected,
        "versions must be exactly the completed writes, the dead writes and the recoveries"
    );
    // Each completed write adds 2 to the sequence; each recovery adds 4 (the dead writer's
    // take, the recovery's take-over of it, and the recovery's publish).
    assert_eq!(
        final_sequence,
        2 * completed.len() as u64 + 4 * recoveries.len() as u64
    );
    eprintln!(
        "{} completed writes, {} recoveries, final sequence {final_sequence}",
        completed.len(),
        recoveries.len()
    );
    assert!(!recoveries.is_empty(), "no kill landed inside a write");
}
