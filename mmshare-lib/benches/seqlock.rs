//! Seqlock-consistent reads and writes against plain memcpy of the same size, in the same run.
//!
//! Run: `cargo bench -p mmshare --bench seqlock`
//!
//! Criterion measures each case; `iter_custom` also records every sample here so that, at the
//! end, a table prints each seqlock operation's time and bandwidth next to memcpy's, with the
//! ratio. The array lives on tmpfs (/dev/shm when present) so no disk writeback disturbs it.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use mmshare::{Access, ArraySpec, DType, RawArray, create_array_file};

const SIZES: [(usize, &str); 4] = [
    (64, "64 B"),
    (4 << 10, "4 KiB"),
    (1 << 20, "1 MiB"),
    (64 << 20, "64 MiB"),
];

/// (operation, size) -> per-sample nanoseconds per iteration.
static SAMPLES: Mutex<BTreeMap<(String, usize), Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(op: &str, size: usize, iters: u64, elapsed: Duration) -> Duration {
    let per_iter = elapsed.as_nanos() as f64 / iters.max(1) as f64;
    SAMPLES
        .lock()
        .unwrap()
        .entry((op.to_owned(), size))
        .or_default()
        .push(per_iter);
    elapsed
}

fn timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed()
}

fn bench(c: &mut Criterion, dir: &std::path::Path) {
    for (size, label) in SIZES {
        let name = format!("bench-{size}");
        let (path, _) =
            create_array_file(dir, &ArraySpec::new(name, DType::U8, vec![size as u64])).unwrap();
        let array = RawArray::open(&path, Access::Write).unwrap();
        // Buffers placed like the mapping: page aligned, with the destination 256 bytes past a
        // page boundary. glibc's memcpy (`rep movsb`) is ~27x slower when destination and source
        // are 16 bytes apart modulo 4096 (4K aliasing), which two back-to-back `vec!`s of 4 KiB
        // happen to be; the baseline must not measure that accident.
        let mut src_store = vec![0xA5u8; size + 8192];
        let mut dst_store = vec![0u8; size + 8192];
        let src = page_slice(&mut src_store, 0, size);
        let dst = page_slice(&mut dst_store, 256, size);
        array.write_bytes(0, src).unwrap(); // fault every page in once

        let mut group = c.benchmark_group(label);
        group.throughput(Throughput::Bytes(size as u64));
        if size >= 1 << 20 {
            group.sample_size(20);
            group.measurement_time(Duration::from_secs(4));
        }
        group.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter_custom(|iters| {
                let e = timed(iters, || {
                    dst.copy_from_slice(black_box(&*src));
                    black_box(&mut *dst);
                });
                record("memcpy", size, iters, e)
            });
        });
        group.bench_function(BenchmarkId::new("seqlock_read", size), |b| {
            b.iter_custom(|iters| {
                let e = timed(iters, || {
                    black_box(array.read_bytes(0, black_box(&mut *dst)).unwrap());
                });
                record("seqlock_read", size, iters, e)
            });
        });
        group.bench_function(BenchmarkId::new("seqlock_write", size), |b| {
            b.iter_custom(|iters| {
                let e = timed(iters, || {
                    black_box(array.write_bytes(0, black_box(&*src)).unwrap());
                });
                record("seqlock_write", size, iters, e)
            });
        });
        group.finish();
    }
}

/// `len` bytes of `store` starting `offset` bytes past its first page boundary.
fn page_slice(store: &mut [u8], offset: usize, len: usize) -> &mut [u8] {
    let skip = store.as_ptr().align_offset(4096) + offset;
    &mut store[skip..skip + len]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

fn print_table() {
    let mut samples = SAMPLES.lock().unwrap();
    println!("\nseqlock vs memcpy, median of criterion's samples (same run, same machine)");
    println!("command: cargo bench -p mmshare --bench seqlock\n");
    println!("| size | memcpy | seqlock read | read vs memcpy | seqlock write | write vs memcpy |");
    println!("|---|---|---|---|---|---|");
    for (size, label) in SIZES {
        let mut get = |op: &str| samples.get_mut(&(op.to_owned(), size)).map(|v| median(v));
        let (Some(m), Some(r), Some(w)) =
            (get("memcpy"), get("seqlock_read"), get("seqlock_write"))
        else {
            continue; // filtered out on the command line
        };
        let gbps = |ns: f64| size as f64 / ns; // bytes per ns = GB/s
        let cmp = |ns: f64| {
            if size <= 64 {
                format!("+{} ({:.2}x bandwidth)", fmt_ns(ns - m), m / ns)
            } else {
                format!("{:.2}x bandwidth", m / ns)
            }
        };
        println!(
            "| {label} | {} ({:.1} GB/s) | {} ({:.1} GB/s) | {} | {} ({:.1} GB/s) | {} |",
            fmt_ns(m),
            gbps(m),
            fmt_ns(r),
            gbps(r),
            cmp(r),
            fmt_ns(w),
            gbps(w),
            cmp(w)
        );
    }
}

fn main() {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, base.path());
    c.final_summary();
    print_table();
}
