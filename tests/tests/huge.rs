//! Arrays bigger than RAM: a 64 GiB sparse array (this machine has 24 GiB) written and read by
//! 1 MiB regions at random rows from two processes, with resident memory bounded; a sparse
//! array on a full disk fails the write, not the writer; no sparse array in memory; the
//! daemon's limits count a sparse array's apparent size.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{Daemon, Worker, field};
use mmshare::{
    Access, Array, ArraySpec, CreateOptions, DType, ErrorKind, WriteError, create_array_file,
};

const WATCHDOG: Duration = Duration::from_secs(300);
const MIB: u64 = 1 << 20;

/// The resident-memory bound this test holds a process of region reads and writes to, with
/// its pages released after each operation: its own code and buffers, a few regions' pages.
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// A sparse u8 array of `rows` rows of 1 MiB, 32 stripes, in `dir`.
fn sparse(dir: &Path, name: &str, rows: u64) -> String {
    let mut spec = ArraySpec::new(name, DType::U8, vec![rows, MIB]);
    spec.stripes = 32;
    spec.sparse = true;
    let (path, header) = create_array_file(dir, &spec).unwrap();
    assert!(header.is_sparse());
    assert_eq!(header.stripe_bytes, rows / 32 * MIB);
    path.to_str().unwrap().to_owned()
}

/// 64 GiB, allocated only where written: two processes each write 256 rows of 1 MiB at random,
/// read each back and read another row (768 MiB touched each, twelve times the bound),
/// releasing pages after each operation; their peak resident memory stays under the bound, and
/// what they wrote is on disk and nothing else. A process that keeps its pages instead (the
/// default) grows with what it touches: the bound is the release's doing.
#[test]
fn a_64_gib_sparse_array_is_used_by_region_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse(dir.path(), "huge", 64 * 1024);
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.len() > 64 << 30, "apparent size {}", meta.len());
    assert!(
        meta.blocks() * 512 < MIB,
        "{} bytes allocated at create",
        meta.blocks() * 512
    );
    let workers: Vec<Worker> = (1..=2)
        .map(|seed| Worker::spawn(&["huge-io", &path, "256", &seed.to_string(), "release"]))
        .collect();
    for w in workers {
        let (status, lines) = w.finish(WATCHDOG);
        assert!(status.success(), "{lines:?}");
        let report = lines.last().unwrap();
        eprintln!("release: {report}");
        let touched = field(report, "touched");
        assert!(touched >= 12 * RSS_BOUND_KIB * 1024, "{report}");
        assert!(
            field(report, "hwm_kib") < RSS_BOUND_KIB,
            "peak resident memory over the bound: {report}"
        );
    }
    // At most the 512 rows written (and the header), whatever was read.
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        allocated <= 512 * MIB + 64 * 1024,
        "{allocated} bytes allocated"
    );
    assert!(allocated >= 400 * MIB, "{allocated} bytes allocated");

    let (status, lines) = Worker::spawn(&["huge-io", &path, "96", "3", "keep"]).finish(WATCHDOG);
    assert!(status.success(), "{lines:?}");
    let report = lines.last().unwrap();
    eprintln!("keep: {report}");
    assert!(
        field(report, "hwm_kib") > 2 * RSS_BOUND_KIB,
        "pages kept should cost memory, or the bound above proves nothing: {report}"
    );
}

/// On a full filesystem (a 16 MiB ext4 image, loop-mounted), a sparse array of 64 MiB takes
/// region writes until the space is gone; the next write is `NoSpace`, naming the bytes, and
/// changes nothing: the writer is not killed (a store into a hole of a full filesystem would
/// be a SIGBUS), earlier rows read back, holes read as zeros, and the array stays usable.
#[test]
fn a_sparse_array_on_a_full_disk_fails_the_write_not_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (image, mnt) = (dir.path().join("disk.img"), dir.path().join("small"));
    std::fs::create_dir(&mnt).unwrap();
    let run = |cmd: &str, args: &[&std::ffi::OsStr]| {
        std::process::Command::new(cmd)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::File::create(&image)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let mounted = run("mkfs.ext4", &["-q".as_ref(), image.as_os_str()])
        && run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                image.as_os_str(),
                mnt.as_os_str(),
            ],
        );
    if !mounted {
        eprintln!("skipped: cannot make and loop-mount an ext4 image (needs root and mkfs.ext4)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mnt);
    let path = sparse(&mnt, "big", 64);
    let a = Array::<u8>::open(&path, Access::Write).unwrap();
    let row = |r: u64| vec![(r + 1) as u8; MIB as usize];
    let mut written = 0;
    let failure = loop {
        match a.write_region_from(written..written + 1, &row(written)) {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 64, "a 16 MiB filesystem took 64 MiB");
    };
    assert!((6..16).contains(&written), "{written} rows fitted");
    assert!(
        matches!(failure, WriteError::NoSpace { len, .. } if len > 0 && len <= MIB),
        "{failure}"
    );
    assert!(
        failure.to_string().contains("nothing was written"),
        "{failure}"
    );
    assert!(
        !a.is_torn(),
        "a write refused before it began tears nothing"
    );
    for r in 0..written {
        let (got, _) = a.read_region(r..r + 1).unwrap();
        assert!(got.iter().all(|&b| b == (r + 1) as u8), "row {r}");
    }
    let (hole, _) = a.read_region(40..41).unwrap();
    assert!(
        hole.iter().all(|&b| b == 0),
        "a row never written reads as zeros"
    );
    // Rows already allocated can be written again on the full filesystem.
    a.write_region_from(0..1, &row(7)).unwrap();
}

/// A sparse array is refused in a memory filesystem, where reading a hole takes memory (and
/// on a full one kills the reader), by the library and by the daemon's memory directory.
#[test]
fn a_sparse_array_is_refused_in_memory() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let mut spec = ArraySpec::new("s", DType::U8, vec![1024]);
    spec.sparse = true;
    let err = create_array_file(dir.path(), &spec).unwrap_err();
    assert!(
        matches!(err, mmshare::CreateError::SparseInMemory { .. }),
        "{err}"
    );
    let daemon = Daemon::start(&[]);
    let err = daemon
        .client()
        .create(&CreateOptions::new("s", "u1", &[1024]).memory().sparse(true))
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::InvalidShape), "{err}");
    assert!(
        err.to_string().contains("cannot be sparse in memory"),
        "{err}"
    );
}

/// Through the daemon: a sparse array is made at once whatever its size, says so, and counts
/// its apparent size against the daemon's byte limit.
#[test]
fn the_daemon_makes_sparse_arrays_and_counts_their_apparent_size() {
    let daemon = Daemon::start(&["--max-bytes", "8G"]);
    let client = daemon.client();
    let a = client
        .create(&CreateOptions::new("sparse", "u1", &[4096, MIB]).sparse(true))
        .unwrap();
    assert!(a.info().sparse && a.header().is_sparse());
    let meta = std::fs::metadata(&a.info().path).unwrap();
    assert!(meta.len() > 4 << 30 && meta.blocks() * 512 < MIB);
    let err = client
        .create(&CreateOptions::new("more", "u1", &[4096, MIB]).sparse(true))
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::QuotaExceeded), "{err}");
    let dense = client
        .create(&CreateOptions::new("dense", "u1", &[16]))
        .unwrap();
    assert!(!dense.info().sparse);
}
