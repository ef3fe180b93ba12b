//! Striped arrays across processes: writers of regions that share stripes but not bytes, and
//! readers of random row ranges checking every copy they accept, on one mapping; a writer
//! killed in the middle of a region write, recovered with only its stripes torn, by the
//! library and by the daemon. The detector must stay silent on the real protocol and fire on
//! a deliberately broken one (a reader that skips its re-checks, writers that publish first).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, Worker, field};
use mmshare::{Access, Array, ArraySpec, DType, ReadError, Recovery, create_array_file};

/// 4096 rows of 64 u64 (2 MiB), 8 stripes of 512 rows.
const ROWS: u64 = 4096;
const COLS: u64 = 64;
const STRIPE_ROWS: u64 = 512;
const WATCHDOG: Duration = Duration::from_secs(60);

/// Three writers' regions, each across a stripe boundary and sharing a stripe with the next:
/// rows 256..768, 768..1280, 1280..1792. Rows outside them are written only by whole-array
/// writes.
const WRITERS: [&str; 3] = ["256..768", "768..1280", "1280..1792"];
const BLOCKS: &str = "0,256,768,1280,1792,4096";

fn make(dir: &Path) -> String {
    let mut spec = ArraySpec::new("striped", DType::U64, vec![ROWS, COLS]);
    spec.stripes = 8;
    let (path, header) = create_array_file(dir, &spec).unwrap();
    assert_eq!(header.stripe_bytes, STRIPE_ROWS * COLS * 8);
    path.to_str().unwrap().to_owned()
}

struct Outcome {
    reader_codes: Vec<i32>,
    reader_lines: Vec<String>,
    writes: u64,
}

/// The region writers, a whole-array writer and three readers for `secs`.
fn run(secs: f64, writer_fault: Option<&str>, reader_fault: Option<&str>) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path());
    let secs = secs.to_string();
    let mut writers: Vec<Worker> = WRITERS
        .iter()
        .chain(&["all"])
        .map(|rows| {
            let mut args = vec!["region-writer", &path, &secs, rows];
            args.extend(writer_fault);
            Worker::spawn(&args)
        })
        .collect();
    let mut reader_args = vec!["region-reader", &path, &secs, BLOCKS];
    reader_args.extend(reader_fault);
    let readers: Vec<Worker> = (0..3).map(|_| Worker::spawn(&reader_args)).collect();
    let mut out = Outcome {
        reader_codes: Vec::new(),
        reader_lines: Vec::new(),
        writes: 0,
    };
    for r in readers {
        let (status, lines) = r.finish(WATCHDOG);
        out.reader_codes.push(status.code().unwrap_or(-1));
        out.reader_lines.extend(lines);
    }
    for w in writers.drain(..) {
        let (status, lines) = w.finish(WATCHDOG);
        assert!(status.success(), "writer failed: {lines:?}");
        out.writes += lines.iter().map(|l| field(l, "writes")).sum::<u64>();
    }
    out
}

/// Region writers sharing stripes, a whole-array writer and readers of random ranges, all in
/// separate processes for three seconds: no reader accepts a copy in which a block mixes two
/// writes or a whole copy holds a write its version does not count, and reads overlapped
/// writes.
#[test]
fn region_readers_never_accept_a_torn_copy_across_processes() {
    let out = run(3.0, None, None);
    assert_eq!(out.reader_codes, [0, 0, 0], "{:?}", out.reader_lines);
    let reads: u64 = out.reader_lines.iter().map(|l| field(l, "reads")).sum();
    let whole: u64 = out.reader_lines.iter().map(|l| field(l, "whole")).sum();
    let retries: u64 = out.reader_lines.iter().map(|l| field(l, "retries")).sum();
    eprintln!(
        "writes={} reads={reads} whole={whole} retries={retries}",
        out.writes
    );
    assert!(out.writes > 40, "writers barely wrote: {}", out.writes);
    assert!(reads > 40 && whole > 3, "{:?}", out.reader_lines);
    assert!(
        retries > 0,
        "no read overlapped a write: nothing was tested"
    );
}

/// Readers that accept a copy without re-checking its stripes: the detector fires.
#[test]
fn detector_catches_region_readers_that_skip_the_recheck() {
    let out = run(5.0, None, Some("skip-recheck"));
    assert!(
        out.reader_codes.contains(&3),
        "no torn copy detected with the re-check skipped: {:?}",
        out.reader_lines
    );
}

/// Writers that publish their stripes before writing: the detector fires.
#[test]
fn detector_catches_region_writers_that_publish_first() {
    let out = run(5.0, Some("early-publish"), None);
    assert!(
        out.reader_codes.contains(&3),
        "no torn copy detected with early publishing: {:?}",
        out.reader_lines
    );
}

/// A writer SIGKILLed in the middle of a write of rows 600..1100 (stripes 1 and 2) holds up
/// nobody elsewhere: another process writes stripe 5 meanwhile and readers read it. Recovery
/// then releases exactly stripes 1 and 2, marked TORN; the rest reads as before, and a write
/// of the torn stripes' rows repairs them.
#[test]
fn a_writer_killed_mid_region_tears_only_its_stripes() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path());
    let mut holder = Worker::spawn(&["region-hold", &path, "600..1100"]);
    holder.expect_line("holding", WATCHDOG);
    let (status, lines) =
        Worker::spawn(&["region-writer", &path, "0.2", "2600..3000"]).finish(WATCHDOG);
    assert!(
        status.success(),
        "a writer of other stripes waited: {lines:?}"
    );
    holder.kill();
    let mut a = Array::<u64>::open(&path, Access::Write).unwrap();
    a.raw_mut().set_timeout(Duration::from_millis(500));
    let recovered = a.recover_dead_writer().unwrap();
    assert!(
        matches!(recovered, Recovery::Recovered { .. }),
        "{recovered:?}"
    );
    let torn: Vec<bool> = (0..8)
        .map(|k| {
            let rows = k * STRIPE_ROWS..k * STRIPE_ROWS + 1;
            matches!(a.read_region(rows), Err(ReadError::Torn { .. }))
        })
        .collect();
    assert_eq!(torn, [false, true, true, false, false, false, false, false]);
    let (rows, _) = a.read_region(2600..2601).unwrap();
    assert_ne!(rows[[0, 0]], 0, "the other writer's rows are there");
    assert!(
        a.read_region(0..ROWS).is_err(),
        "a whole read sees the tear"
    );
    a.write_region_from(512..1536, &vec![7; (1024 * COLS) as usize])
        .unwrap();
    assert!(!a.is_torn());
    let (all, _) = a.read_region(0..ROWS).unwrap();
    assert_eq!(all[[600, 0]], 7);
}

/// The same through the daemon: a client's writer killed mid-region is recovered by the
/// daemon (rows 2600..2700: stripe 5 only), while another client writes elsewhere; a client then reads every
/// stripe but the killed writer's.
#[test]
fn the_daemon_recovers_only_a_killed_clients_stripes() {
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    let socket = daemon.socket.to_str().unwrap().to_owned();
    let a = client
        .create(&mmshare::CreateOptions::new("tiles", "<u8", &[ROWS, COLS]).stripes(8))
        .unwrap();
    assert_eq!(a.header().stripe_bytes, STRIPE_ROWS * COLS * 8);
    drop(a);
    let mut holder = Worker::spawn(&["client-region-hold", &socket, "tiles", "2600..2700"]);
    holder.expect_line("holding", WATCHDOG);
    let (status, lines) =
        Worker::spawn(&["client-region-writer", &socket, "tiles", "0.2", "0..512"])
            .finish(WATCHDOG);
    assert!(status.success(), "{lines:?}");
    holder.kill();
    let a = client.open::<u64>("tiles", Access::Read).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !a.is_torn() {
        assert!(
            std::time::Instant::now() < deadline,
            "not recovered: {:?}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        daemon.log_has("writer died mid-write"),
        "{:?}",
        daemon.log()
    );
    for k in 0..8 {
        let r = a.read_region(k * STRIPE_ROWS..(k + 1) * STRIPE_ROWS);
        assert_eq!(
            matches!(r, Err(ReadError::Torn { .. })),
            k == 5,
            "stripe {k}: {r:?}"
        );
    }
    assert!(client.stat("tiles").unwrap().torn);
}

/// A reader of a region whose stripe a writer holds sleeps (it is seen asleep, not spinning)
/// and is woken through the futex when that stripe is published, not by its periodic re-check:
/// the wait of a striped reader reads the futex word only when it must wait
/// (`pause_on`), and must still never sleep through the publish it waits for.
#[test]
fn a_region_reader_waiting_for_a_held_stripe_sleeps_and_is_woken_by_the_publish() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path());
    let a = mmshare::RawArray::open(&path, Access::Write).unwrap();
    let region = a.region(600..700).unwrap();
    let session = a.begin_write_region(&region).unwrap();
    let mut reader = Worker::spawn(&["region-wait-read", &path, "650..651"]);
    reader.expect_line("waiting", WATCHDOG);
    let deadline = std::time::Instant::now() + WATCHDOG;
    while std::fs::read_to_string(format!("/proc/{}/stat", reader.pid()))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('S'))
        })
        != Some(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the reader never slept"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    a.finish_write(session, mmshare::Finish::Complete).unwrap();
    let (status, lines) = reader.finish(WATCHDOG);
    assert!(status.success(), "{lines:?}");
    let line = lines.iter().find(|l| l.starts_with("version=")).unwrap();
    assert!(
        field(line, "futex_wakeups") >= 1,
        "woken by polling, not by the futex: {line}"
    );
}
