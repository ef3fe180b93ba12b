//! The multi-process torn-read detector: writers fill a 1 MiB array with a pattern derived from
//! each write's version while readers check every snapshot they accept. It must stay silent on
//! the real seqlock and fire on a deliberately broken one.

mod common;

use std::time::Duration;

use common::{Worker, field, make_array};
use mmshare::DType;

/// 1 MiB of u64.
const ELEMENTS: u64 = 1 << 17;
const WATCHDOG: Duration = Duration::from_secs(60);

struct Outcome {
    reader_lines: Vec<String>,
    reader_codes: Vec<i32>,
    writes: u64,
}

fn run(secs: f64, writer_fault: Option<&str>, reader_fault: Option<&str>) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = make_array(dir.path(), "torn", DType::U64, &[ELEMENTS]);
    let path = path.to_str().unwrap();
    let secs = secs.to_string();
    let mut writer_args = vec!["writer", path, &secs];
    writer_args.extend(writer_fault);
    let mut reader_args = vec!["reader", path, &secs];
    reader_args.extend(reader_fault);
    let writers: Vec<Worker> = (0..2).map(|_| Worker::spawn(&writer_args)).collect();
    let readers: Vec<Worker> = (0..3).map(|_| Worker::spawn(&reader_args)).collect();
    let mut out = Outcome {
        reader_lines: Vec::new(),
        reader_codes: Vec::new(),
        writes: 0,
    };
    for r in readers {
        let (status, lines) = r.finish(WATCHDOG);
        out.reader_codes.push(status.code().unwrap_or(-1));
        out.reader_lines.extend(lines);
    }
    for w in writers {
        let (status, lines) = w.finish(WATCHDOG);
        assert!(status.success(), "writer failed: {lines:?}");
        out.writes += lines.iter().map(|l| field(l, "writes")).sum::<u64>();
    }
    out
}

/// Two writer and three reader processes on one 1 MiB mapping for three seconds: no reader ever
/// accepts a torn snapshot or sees the version go backwards, and reads really overlapped writes.
#[test]
fn reader_never_accepts_a_torn_snapshot_across_processes() {
    let out = run(3.0, None, None);
    assert_eq!(out.reader_codes, [0, 0, 0], "{:?}", out.reader_lines);
    let reads: u64 = out.reader_lines.iter().map(|l| field(l, "reads")).sum();
    let retries: u64 = out.reader_lines.iter().map(|l| field(l, "retries")).sum();
    let versions: u64 = out.reader_lines.iter().map(|l| field(l, "versions")).sum();
    eprintln!(
        "writes={} reads={reads} retries={retries} versions={versions}",
        out.writes
    );
    assert!(out.writes > 10, "writers barely wrote: {}", out.writes);
    assert!(
        reads > 10 && versions > 3,
        "readers barely read: {:?}",
        out.reader_lines
    );
    assert!(
        retries > 0,
        "no read ever overlapped a write, so nothing was tested"
    );
}

/// Readers that skip the second sequence check accept torn snapshots: the detector fires.
#[test]
fn detector_catches_readers_that_skip_the_recheck() {
    let out = run(5.0, None, Some("skip-recheck"));
    assert!(
        out.reader_codes.contains(&3),
        "detector did not fire: {:?}",
        out.reader_lines
    );
    assert!(
        out.reader_lines
            .iter()
            .any(|l| l.starts_with("torn snapshot accepted"))
    );
}

/// Writers that publish the even sequence before writing the data: the detector fires.
#[test]
fn detector_catches_writers_that_publish_before_writing() {
    let out = run(5.0, Some("early-publish"), None);
    assert!(
        out.reader_codes.contains(&3),
        "detector did not fire: {:?}",
        out.reader_lines
    );
}
