//! The fallback for kernels without `futex_waitv` (before 5.16): forced here with
//! `MMSHARE_ASYNC_POLL=1`, the waiter thread polls the words every millisecond and still wakes
//! every task, from another process's writes and publishes.

mod common;

use std::time::Duration;

use mmshare::{
    Access, Array, ArraySpec, DType, Delivery, StreamSpec, Subscriber, create_array_file,
    create_stream_files,
};

#[test]
fn without_futex_waitv_the_polling_waiter_wakes_every_task() {
    // SAFETY: set before any thread of this test binary reads the environment for mmshare
    // (the waiter reads it once, when first used below); this file holds a single test.
    unsafe { std::env::set_var("MMSHARE_ASYNC_POLL", "1") };
    let dir = tempfile::tempdir().expect("temp dir");
    let array = create_array_file(dir.path(), &ArraySpec::new("a", DType::U64, vec![2]))
        .expect("array")
        .0;
    let stream = create_stream_files(dir.path(), &StreamSpec::new("s", DType::U64, vec![2]))
        .expect("stream")
        .0;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let a = Array::<u64>::open(&array, Access::Read).expect("open");
        let mut sub = Subscriber::<u64>::open(&stream, Delivery::Lossless).expect("subscribe");
        let changed = a.changed(0);
        let recv = sub.recv();
        let poke = tokio::task::spawn_blocking({
            let (array, stream) = (array.clone(), stream.clone());
            move || {
                std::thread::sleep(Duration::from_millis(100));
                std::process::Command::new(common::worker_path())
                    .args(["poke", &format!("a:{}", array.display())])
                    .args([&format!("s:{}", stream.display())])
                    .output()
                    .expect("worker")
            }
        });
        let (v, sample) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(changed, recv)
        })
        .await
        .expect("both woken");
        assert!(poke.await.expect("poke").status.success());
        assert_eq!(v, 1);
        let sample = sample.expect("a frame");
        assert_eq!((sample.number(), &sample[..]), (0, &[1u64, 2][..]));
        assert!(mmshare::internal::waiter_polls(), "the waiter polled");
    });
    assert_eq!(mmshare::internal::registered_waiters(), 0);
}
