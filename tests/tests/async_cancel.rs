//! Cancel safety and backpressure of the async waits: a dropped `recv`, `changed` or
//! `loan_async` takes nothing, leaves no registration and no sleeper count, and the next
//! await gets what the dropped one would have; `loan_async` waits for a lossless subscriber
//! and resumes when it frees a slot. One test per file (the waiter threads are per process).

use std::path::Path;
use std::time::Duration;

use mmshare::{
    Access, Array, ArraySpec, DType, Delivery, Publisher, StreamSpec, Subscriber,
    create_array_file, create_stream_files,
};

fn word(path: &Path, at: u64) -> u32 {
    use std::os::unix::fs::FileExt;
    let mut w = [0u8; 4];
    std::fs::File::open(path)
        .expect("control file")
        .read_exact_at(&mut w, at)
        .expect("read");
    u32::from_le_bytes(w)
}

#[test]
fn dropped_futures_lose_nothing_and_loans_wait_for_lossless_subscribers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let array_path = create_array_file(dir.path(), &ArraySpec::new("a", DType::U64, vec![4]))
        .expect("array")
        .0;
    let mut spec = StreamSpec::new("s", DType::U64, vec![4]);
    spec.slots = 3;
    let stream = create_stream_files(dir.path(), &spec).expect("stream").0;
    let control = stream.join(mmshare::internal::CONTROL_FILE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let short = Duration::from_millis(30);
        // A recv dropped by a timeout: nothing registered or counted; the frame published
        // after it goes to the next recv.
        let mut sub = Subscriber::<u64>::open(&stream, Delivery::Lossless).expect("subscribe");
        let mut publisher = Publisher::<u64>::open(&stream).expect("publisher");
        assert!(tokio::time::timeout(short, sub.recv()).await.is_err());
        assert_eq!(mmshare::internal::registered_waiters(), 0);
        assert_eq!(word(&control, 0x40), 0, "SLEEPERS back to 0");
        publisher.send(&[7, 7, 7, 7]).expect("send");
        let s = sub.recv().await.expect("frame 0");
        assert_eq!((s.number(), &s[..]), (0, &[7u64, 7, 7, 7][..]));
        drop(s);

        // The same for `changed`.
        let writer = Array::<u64>::open(&array_path, Access::Write).expect("writer");
        let reader = Array::<u64>::open(&array_path, Access::Read).expect("reader");
        assert!(
            tokio::time::timeout(short, reader.changed(0))
                .await
                .is_err()
        );
        assert_eq!(mmshare::internal::registered_waiters(), 0);
        assert_eq!(word(&mmshare::internal::control_path(&array_path), 0x40), 0);
        writer.write_all(&[1, 2, 3, 4]).expect("write");
        assert_eq!(reader.changed(0).await, 1);
        assert_eq!(
            reader.changed(0).await,
            1,
            "an already newer version resolves at once"
        );

        // Backpressure: frames 1..=3 fill the ring of 3 while the lossless subscriber reads
        // nothing; a loan waits (a dropped one leaves nothing behind), and is woken when the
        // subscriber, in another thread as another process would be, frees a slot.
        let (go, start) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            start.recv().expect("go");
            // Late enough that the loan below is asleep when a slot frees up.
            std::thread::sleep(Duration::from_millis(100));
            (0..4)
                .map(|_| {
                    let s = sub
                        .receive_timeout(Duration::from_secs(10))
                        .expect("a frame");
                    (s.number(), s[0])
                })
                .collect::<Vec<_>>()
        });
        for n in 1..4u64 {
            let mut loan = publisher.loan_async().await.expect("a free slot");
            loan.fill(n);
            loan.publish();
        }
        assert!(
            tokio::time::timeout(short, publisher.loan_async())
                .await
                .is_err()
        );
        assert_eq!(mmshare::internal::registered_waiters(), 0);
        assert_eq!(word(&control, 0x80), 0, "PUB_SLEEPERS back to 0");
        go.send(()).expect("reader");
        let mut loan = tokio::time::timeout(Duration::from_secs(10), publisher.loan_async())
            .await
            .expect("woken by the subscriber's progress")
            .expect("a slot");
        assert_eq!(loan.number(), 4);
        loan.fill(4);
        loan.publish();
        assert_eq!(
            word(&control, 0x80),
            0,
            "PUB_SLEEPERS back to 0 after a loan that waited"
        );
        let got = reader.join().expect("reader thread");
        assert_eq!(
            got,
            [(1, 1), (2, 2), (3, 3), (4, 4)],
            "every frame, in order"
        );
    });
    assert_eq!(mmshare::internal::registered_waiters(), 0);
    // Cancelled futures whose words the waiter slept on never made it fall back to polling.
    assert!(!mmshare::internal::waiter_polls());
}
