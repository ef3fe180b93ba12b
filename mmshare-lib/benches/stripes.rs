//! Striped arrays across processes, measured side by side in one run:
//!
//! - **parallel writers**: 1, 2 and 4 writer processes, each writing its own region of one
//!   striped array (one stripe each) over and over, against the same processes copying the
//!   same regions with plain `memcpy` into the same mapping (no protocol): the aggregate
//!   bandwidth, and each one's gain over a single process;
//! - **a reader of an untouched region**: one process reading its region, alone and while
//!   another process writes a different region flat out;
//! - **whole-array operations**: reads and writes of the whole array, striped (32 stripes) and
//!   with one sequence, in the same run (the comparison with the code before stripes is
//!   `scripts/bench-stripes`, which runs the seqlock benchmark of both commits);
//! - **O(slice)**: the time of a 1 MiB region write and read in sparse arrays of 1 GiB and
//!   64 GiB (the operation must not grow with the array).
//!
//! Run: `cargo bench -p mmshare --bench stripes` (the worker processes are this binary again).
//! The arrays live on tmpfs (/dev/shm) but for the sparse ones, which need a disk.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmshare::{Access, ArraySpec, DType, RawArray, create_array_file};

/// Region sizes per writer.
const SIZES: [(u64, &str); 3] = [
    (64 << 10, "64 KiB"),
    (1 << 20, "1 MiB"),
    (64 << 20, "64 MiB"),
];
/// Runs of each measurement; the median is reported.
const RUNS: usize = 5;
/// How long each worker process works per run: long enough that the start (a gate file every
/// worker polls) and the scheduler's slices are small beside it, whatever the region size.
const RUN_TIME: Duration = Duration::from_millis(400);
/// Bytes moved per timed call in the in-process tables (at least one call).
const BYTES_PER_RUN: u64 = 1 << 30;

fn main() {
    if let Ok(job) = std::env::var("MMSHARE_STRIPES_WORKER") {
        worker(&job);
        return;
    }
    // `cargo bench` passes `--bench`; anything else is a filter nobody needs here.
    let shm = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    println!("striped arrays: command: cargo bench -p mmshare --bench stripes");
    println!(
        "({} CPUs; medians of {RUNS} runs; each worker process works {} ms per run)\n",
        cpus(),
        RUN_TIME.as_millis()
    );
    parallel_writers(shm.path());
    reader_under_writer(shm.path());
    whole_array(shm.path());
    let disk = tempfile::tempdir().unwrap();
    o_slice(disk.path());
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// An array of `regions` regions of `size` bytes, one stripe each (or one sequence).
fn array(dir: &Path, name: &str, size: u64, regions: u64, stripes: u32) -> PathBuf {
    let mut spec = ArraySpec::new(name, DType::U8, vec![regions, size]);
    spec.stripes = stripes;
    let (path, header) = create_array_file(dir, &spec).unwrap();
    if stripes > 1 {
        assert_eq!(header.stripe_bytes, size, "one stripe per region");
    }
    // Every page faulted in once, so no run pays for first touches.
    let a = RawArray::open(&path, Access::Write).unwrap();
    a.write_bytes(0, &vec![1u8; (size * regions) as usize])
        .unwrap();
    path
}

/// Starts `n` worker processes doing `mode` on regions `0..n` of `path` for `RUN_TIME`, all
/// released at once; returns the aggregate bytes per second: the sum of what each one moved
/// divided by the time it measured itself working.
fn run_workers(path: &Path, mode: &str, n: u64) -> f64 {
    let gate = path.with_extension(format!("gate-{mode}-{n}"));
    let _ = std::fs::remove_file(&gate);
    let children: Vec<Child> = (0..n)
        .map(|k| {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.env(
                "MMSHARE_STRIPES_WORKER",
                format!(
                    "{mode} {} {k} {} {}",
                    path.display(),
                    RUN_TIME.as_millis(),
                    gate.display()
                ),
            )
            .stdout(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    // Let every worker open and map the array before the start.
    std::thread::sleep(Duration::from_millis(150));
    std::fs::write(&gate, b"").unwrap();
    let mut rate = 0.0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a worker failed");
        // Each worker prints `BYTES NANOSECONDS`.
        let text = String::from_utf8(out.stdout).unwrap();
        let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().unwrap());
        let (bytes, nanos) = (fields.next().unwrap(), fields.next().unwrap());
        rate += bytes / (nanos / 1e9);
    }
    std::fs::remove_file(&gate).unwrap();
    rate
}

/// A worker: `MODE PATH REGION MILLIS GATE`. Waits for the gate file, then does its job on its
/// region for MILLIS ms and prints the bytes it moved and the nanoseconds it took: `write` (a
/// region write through the protocol), `memcpy` (a plain copy into the mapping), `read` (a
/// region read through the protocol); or, printing nothing, `hammer` / `hammer-memcpy`
/// (region writes through the protocol, or plain copies, until the file `PATH.stop` exists).
fn worker(job: &str) {
    let parts: Vec<&str> = job.split(' ').collect();
    let [mode, path, region, millis, gate] = parts[..] else {
        panic!("bad job {job:?}");
    };
    let (region, millis): (u64, u64) = (region.parse().unwrap(), millis.parse().unwrap());
    let run_time = Duration::from_millis(millis);
    let access = if mode == "read" {
        Access::Read
    } else {
        Access::Write
    };
    let a = RawArray::open(path, access).unwrap();
    let size = a.header().shape[1];
    let r = a.region(region..region + 1).unwrap();
    let buf = vec![region as u8 + 2; size as usize];
    while !Path::new(gate).exists() {
        std::thread::sleep(Duration::from_micros(200));
    }
    // Runs `op` until `run_time` has passed (the clock read once per call: a call moves at
    // least 64 KiB, tens of microseconds beside a clock read's tens of nanoseconds).
    let timed = |op: &mut dyn FnMut()| {
        let start = Instant::now();
        let mut calls = 0u64;
        loop {
            op();
            calls += 1;
            let spent = start.elapsed();
            if spent >= run_time {
                println!("{} {}", calls * size, spent.as_nanos());
                return;
            }
        }
    };
    let at = (region * size) as usize;
    match mode {
        "write" => timed(&mut || {
            a.write_region_bytes(&r, &buf).unwrap();
        }),
        "memcpy" => timed(&mut || {
            // SAFETY: the benchmark's baseline: a plain copy into this process's own region of
            // the mapping, which no other worker touches; no reader runs.
            unsafe {
                std::ptr::copy_nonoverlapping(buf.as_ptr(), a.data_ptr().add(at), buf.len());
            }
            std::hint::black_box(a.data_ptr());
        }),
        "read" => {
            let mut back = buf.clone();
            timed(&mut || {
                a.read_region_bytes(&r, &mut back).unwrap();
                std::hint::black_box(&back);
            })
        }
        "hammer" | "hammer-memcpy" => {
            let stop = PathBuf::from(format!("{path}.stop"));
            while !stop.exists() {
                for _ in 0..64 {
                    if mode == "hammer" {
                        a.write_region_bytes(&r, &buf).unwrap();
                    } else {
                        // SAFETY: as for `memcpy`: this process's own region, no protocol.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                buf.as_ptr(),
                                a.data_ptr().add(at),
                                buf.len(),
                            );
                        }
                    }
                }
            }
        }
        other => panic!("unknown mode {other}"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Aggregate GB/s of `n` processes doing `mode` on their regions: the median of `RUNS` runs.
fn aggregate(path: &Path, mode: &str, n: u64) -> f64 {
    median(
        (0..RUNS)
            .map(|_| run_workers(path, mode, n) / 1e9)
            .collect(),
    )
}

fn parallel_writers(dir: &Path) {
    println!("parallel writers: each process writes its own region (one stripe each), flat out");
    println!(
        "| region | processes | memcpy GB/s | gain | striped writes GB/s | gain | gain vs memcpy's |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (size, label) in SIZES {
        let path = array(dir, &format!("writers-{size}"), size, 4, 4);
        let (mut base_m, mut base_w) = (0.0, 0.0);
        for n in [1u64, 2, 4] {
            let m = aggregate(&path, "memcpy", n);
            let w = aggregate(&path, "write", n);
            if n == 1 {
                (base_m, base_w) = (m, w);
            }
            let (gm, gw) = (m / base_m, w / base_w);
            println!(
                "| {label} | {n} | {m:.2} | {gm:.2}x | {w:.2} | {gw:.2}x | {:.0} % |",
                100.0 * gw / gm
            );
        }
        std::fs::remove_file(&path).unwrap();
    }
    println!();
}

fn reader_under_writer(dir: &Path) {
    println!("a reader of one region, alone and while another process writes another region");
    println!(
        "(a memcpy writer shares the machine's memory bandwidth and caches without any protocol:"
    );
    println!(" the last column is what the protocol costs the reader)");
    println!(
        "| region | alone GB/s | under a memcpy writer | under a striped writer | vs alone | vs under memcpy |"
    );
    println!("|---|---|---|---|---|---|");
    for (size, label) in SIZES {
        let path = array(dir, &format!("reader-{size}"), size, 4, 4);
        let alone = aggregate(&path, "read", 1);
        // The writer writes region 2: start it, let it run, measure the reader, stop it.
        let under = |mode: &str| {
            let stop = PathBuf::from(format!("{}.stop", path.display()));
            let _ = std::fs::remove_file(&stop);
            let gate = path.with_extension("gate-hammer");
            std::fs::write(&gate, b"").unwrap();
            let mut hammer = Command::new(std::env::current_exe().unwrap())
                .env(
                    "MMSHARE_STRIPES_WORKER",
                    format!("{mode} {} 2 0 {}", path.display(), gate.display()),
                )
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let got = aggregate(&path, "read", 1);
            std::fs::write(&stop, b"").unwrap();
            assert!(hammer.wait().unwrap().success());
            got
        };
        let (plain, striped) = (under("hammer-memcpy"), under("hammer"));
        println!(
            "| {label} | {alone:.2} | {plain:.2} | {striped:.2} | {:.2}x | {:.2}x |",
            striped / alone,
            striped / plain
        );
        std::fs::remove_file(&path).unwrap();
    }
    println!();
}

/// Median ns per call of `f` over `RUNS` runs of `iters` calls.
fn per_call(iters: u64, mut f: impl FnMut()) -> f64 {
    median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..iters {
                    f();
                }
                t.elapsed().as_nanos() as f64 / iters as f64
            })
            .collect(),
    )
}

fn whole_array(dir: &Path) {
    println!("whole-array operations: 32 stripes against one sequence, same size, same run");
    println!(
        "| size | read, 1 seq | read, 32 stripes | ratio | write, 1 seq | write, 32 stripes | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (size, label) in [(1u64 << 20, "1 MiB"), (64 << 20, "64 MiB")] {
        let rows = 32;
        let one = array(dir, &format!("one-{size}"), size / rows, rows, 1);
        let striped = array(dir, &format!("striped-{size}"), size / rows, rows, 32);
        let (one, striped) = (
            RawArray::open(&one, Access::Write).unwrap(),
            RawArray::open(&striped, Access::Write).unwrap(),
        );
        assert!(!one.is_striped() && striped.stripes() == 32);
        let src = vec![3u8; size as usize];
        let mut dst = vec![0u8; size as usize];
        let iters = (BYTES_PER_RUN / 4 / size).max(4);
        let r1 = per_call(iters, || {
            one.read_bytes(0, &mut dst).unwrap();
        });
        let r32 = per_call(iters, || {
            striped.read_bytes(0, &mut dst).unwrap();
        });
        let w1 = per_call(iters, || {
            one.write_bytes(0, &src).unwrap();
        });
        let w32 = per_call(iters, || {
            striped.write_bytes(0, &src).unwrap();
        });
        println!(
            "| {label} | {:.1} µs | {:.1} µs | {:.3} | {:.1} µs | {:.1} µs | {:.3} |",
            r1 / 1e3,
            r32 / 1e3,
            r32 / r1,
            w1 / 1e3,
            w32 / 1e3,
            w32 / w1
        );
    }
    println!();
}

fn o_slice(dir: &Path) {
    println!("O(slice): a 1 MiB region written and read at random rows of sparse arrays (on disk)");
    println!("| array | region write | region read |");
    println!("|---|---|---|");
    for (rows, label) in [(1024u64, "1 GiB"), (64 * 1024, "64 GiB")] {
        let mut spec = ArraySpec::new(format!("sparse-{rows}"), DType::U8, vec![rows, 1 << 20]);
        spec.stripes = 32;
        spec.sparse = true;
        let (path, _) = create_array_file(dir, &spec).unwrap();
        let mut a = RawArray::open(&path, Access::Write).unwrap();
        a.set_release_pages(true);
        let buf = vec![5u8; 1 << 20];
        let mut back = vec![0u8; 1 << 20];
        // The same 64 rows spread over the array, written once first (allocation is the
        // first write's cost, not the operation's).
        let rows_used: Vec<u64> = (0..64).map(|k| k * (rows / 64)).collect();
        for &r in &rows_used {
            a.write_region_bytes(&a.region(r..r + 1).unwrap(), &buf)
                .unwrap();
        }
        let mut k = 0;
        let w = per_call(256, || {
            let r = rows_used[k % 64];
            k += 1;
            a.write_region_bytes(&a.region(r..r + 1).unwrap(), &buf)
                .unwrap();
        });
        let r = per_call(256, || {
            let r = rows_used[k % 64];
            k += 1;
            a.read_region_bytes(&a.region(r..r + 1).unwrap(), &mut back)
                .unwrap();
        });
        println!("| {label} | {:.0} µs | {:.0} µs |", w / 1e3, r / 1e3);
    }
    println!();
}
