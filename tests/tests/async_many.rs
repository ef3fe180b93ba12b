//! A thousand tasks awaiting 100 arrays and streams in one tokio runtime, woken by a write or a
//! publish from another process, with at most two extra OS threads (counted), and nothing left
//! registered or counted as a sleeper afterwards. One test per file: the waiter threads are
//! global to the process, and the harness would run tests of one file side by side.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mmshare::{
    Access, Array, ArraySpec, DType, Delivery, StreamSpec, Subscriber, create_array_file,
    create_stream_files,
};

const ARRAYS: usize = 50;
const STREAMS: usize = 50;
const TASKS_EACH: usize = 10;

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("procfs")
        .count()
}

/// SLEEPERS (u32 at 0x40) of a control file: arrays' `.control/NAME`, streams' control file.
fn sleepers(control: &Path) -> u32 {
    use std::os::unix::fs::FileExt;
    let mut word = [0u8; 4];
    std::fs::File::open(control)
        .expect("control file")
        .read_exact_at(&mut word, 0x40)
        .expect("read SLEEPERS");
    u32::from_le_bytes(word)
}

fn stream_control(stream: &Path) -> PathBuf {
    stream.join(mmshare::internal::CONTROL_FILE)
}

#[test]
fn a_thousand_tasks_on_a_hundred_arrays_and_streams_need_one_waiter_thread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let arrays: Vec<PathBuf> = (0..ARRAYS)
        .map(|i| {
            create_array_file(
                dir.path(),
                &ArraySpec::new(format!("a{i}"), DType::U64, vec![8]),
            )
            .expect("array")
            .0
        })
        .collect();
    let streams: Vec<PathBuf> = (0..STREAMS)
        .map(|i| {
            let mut spec = StreamSpec::new(format!("s{i}"), DType::U64, vec![8]);
            // Ten lossless subscribers holding one frame each need a ring that can lend them.
            spec.slots = 16;
            spec.max_subscribers = TASKS_EACH as u32;
            create_stream_files(dir.path(), &spec).expect("stream").0
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let before = os_threads();
    let arrays2 = arrays.clone();
    let streams2 = streams.clone();
    local.block_on(&runtime, async move {
        let mut tasks = Vec::new();
        for path in &arrays2 {
            let array = std::rc::Rc::new(Array::<u64>::open(path, Access::Read).expect("open"));
            for _ in 0..TASKS_EACH {
                let array = std::rc::Rc::clone(&array);
                tasks.push(tokio::task::spawn_local(async move {
                    let v = array.changed(0).await;
                    let mut got = [0u64; 8];
                    array.read_into(&mut got).expect("read");
                    (v, got.to_vec())
                }));
            }
        }
        for path in &streams2 {
            for _ in 0..TASKS_EACH {
                let files = mmshare::StreamFiles::open(path, false).expect("stream files");
                let mut sub = Subscriber::<u64>::attach(
                    files,
                    mmshare::SubscribeOptions::new(Delivery::Lossless).max_held(1),
                )
                .expect("subscribe");
                tasks.push(tokio::task::spawn_local(async move {
                    let sample = sub.recv().await.expect("a frame");
                    (sample.number(), sample.to_vec())
                }));
            }
        }
        // Every task registered with the waiter thread(s).
        let deadline = Instant::now() + Duration::from_secs(30);
        while mmshare::internal::registered_waiters() < tasks.len() {
            assert!(
                Instant::now() < deadline,
                "only {} registered",
                mmshare::internal::registered_waiters()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let extra = os_threads() - before;
        let names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .expect("procfs")
            .map(|t| {
                std::fs::read_to_string(t.expect("task").path().join("comm")).unwrap_or_default()
            })
            .collect();
        assert!(
            extra <= 2,
            "{extra} extra OS threads for {} waiting tasks: {names:?}",
            tasks.len()
        );
        assert_eq!(
            mmshare::internal::waiter_threads(),
            1,
            "100 words fit one waiter thread"
        );
        // Every waiting task is counted where writers look (a write wakes only if someone is).
        for a in &arrays2 {
            assert_eq!(
                sleepers(&mmshare::internal::control_path(a)),
                TASKS_EACH as u32
            );
        }
        for s in &streams2 {
            assert_eq!(sleepers(&stream_control(s)), TASKS_EACH as u32);
        }

        // Another process writes every array and publishes a frame to every stream.
        let woken_before = mmshare::internal::waiter_wakeups();
        let targets: Vec<String> = arrays2
            .iter()
            .map(|p| format!("a:{}", p.display()))
            .chain(streams2.iter().map(|p| format!("s:{}", p.display())))
            .collect();
        let out = std::process::Command::new(common::worker_path())
            .arg("poke")
            .args(&targets)
            .output()
            .expect("worker");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let want: Vec<u64> = (1..=8).collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let (n, values) = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .unwrap_or_else(|_| panic!("task {i} was never woken"))
                .expect("task");
            let expected = if i < ARRAYS * TASKS_EACH { 1 } else { 0 };
            assert_eq!((n, &values), (expected, &want), "task {i}");
        }
        // The writers saw the sleepers and woke the waiter thread (not only its rescans).
        assert!(mmshare::internal::waiter_wakeups() > woken_before);
    });
    assert_eq!(
        mmshare::internal::registered_waiters(),
        0,
        "nothing left registered"
    );
    for a in &arrays {
        assert_eq!(
            sleepers(&mmshare::internal::control_path(a)),
            0,
            "{}",
            a.display()
        );
    }
    for s in &streams {
        assert_eq!(sleepers(&stream_control(s)), 0, "{}", s.display());
    }
}

/// The futures can be awaited in spawned (multi-threaded) tasks.
#[allow(dead_code)]
fn the_futures_are_send(
    array: &Array<u64>,
    sub: &mut Subscriber<u64>,
    publisher: &mut mmshare::Publisher<u64>,
) {
    fn send<T: Send>(_: &T) {}
    send(&array.changed(0));
    send(&sub.recv());
    send(&publisher.loan_async());
}
