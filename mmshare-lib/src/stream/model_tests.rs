//! The slot protocol (`protocol`) and the sleep handshake (`sleep`), run by the loom model
//! checker on loom's atomics.
//!
//! Frame data lives in loom's `UnsafeCell`s, so loom reports any write by the publisher that is
//! not ordered after a subscriber's read of the same slot (or the other way round) as a
//! causality violation: exactly the overwrite of a held frame the protocol exists to prevent.
//! The futex words sleep on a loom condition variable with no timeout, so a lost wake-up
//! leaves a thread asleep for good, which loom reports as a deadlock. Each model has a twin
//! with one piece of the protocol removed (or one step moved), which loom must reject.

use super::layout::{CONFIG_HELD_MASK, CONFIG_LOSSLESS, Record};
use super::protocol::*;
use super::sleep::{self, Futex};
use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU32 as LoomU32;
use loom::sync::atomic::AtomicU64 as LoomU64;
use loom::sync::{Arc, Condvar, Mutex};
use std::sync::atomic::Ordering::{self, Acquire, Relaxed, SeqCst};
use std::time::Duration;

/// Which piece of the protocol a [`Mutant`] (or [`ModelFutex`]) word removes or moves.
const HOLD_FENCE: u16 = 1;
const TAKE_BACK_FENCE: u16 = 2;
const HOLD_SCAN: u16 = 4;
const LOSSLESS_FLOOR: u16 = 8;
const RECLAIM_IN_ONE_STEP: u16 = 16;
const SUBSCRIBE_FENCE: u16 = 32;
/// The fence that ends `publish` (before the publisher reads `SLEEPERS`).
const PUBLISH_FENCE: u16 = 64;
/// The waiter's fence after it registered as a sleeper (`sleep_unless`).
const SLEEP_FENCE: u16 = 128;
/// The waker's fence before it reads the sleeper count (`sleep::wake`).
const WAKE_FENCE: u16 = 256;
/// The waiter registers after its last check instead of before.
const REGISTER_LATE: u16 = 512;
/// The waiter reads the futex word after its last check instead of before.
const READ_WORD_LATE: u16 = 1024;
/// The waker wakes without bumping the futex word.
const NO_BUMP: u16 = 2048;
/// The reclaimer's fence between marking a record and clearing it (`free_record`).
const FREE_FENCE: u16 = 4096;
/// The waiter's Acquire fence between reading the futex word and its last check.
const READ_FENCE: u16 = 8192;
/// A subscriber starting at the oldest frame records `PUBLISHED` as its first cursor.
const HIGH_FIRST_CURSOR: u16 = 16384;
/// `latest()` re-reads `PUBLISHED` after a failed search without its Acquire fence.
const LATEST_FENCE: u16 = 32768;

/// Loom's atomics, with the pieces named in `DROP` removed from the protocol.
struct Mutant<const DROP: u16>(LoomU64);

/// Runs a `SeqCst` fence unless `DROP` names `piece`.
fn fence_unless<const DROP: u16>(piece: u16) {
    if DROP & piece == 0 {
        loom::sync::atomic::fence(SeqCst);
    }
}

impl<const DROP: u16> Word for Mutant<DROP> {
    fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
    fn store(&self, value: u64, order: Ordering) {
        self.0.store(value, order);
    }
    fn compare_exchange(&self, c: u64, n: u64, s: Ordering, f: Ordering) -> Result<u64, u64> {
        self.0.compare_exchange(c, n, s, f)
    }
    fn fence(order: Ordering) {
        loom::sync::atomic::fence(order);
    }
    fn fence_after_hold() {
        fence_unless::<DROP>(HOLD_FENCE);
    }
    fn fence_after_take_back() {
        fence_unless::<DROP>(TAKE_BACK_FENCE);
    }
    fn fence_in_subscribe() {
        fence_unless::<DROP>(SUBSCRIBE_FENCE);
    }
    fn fence_after_publish() {
        fence_unless::<DROP>(PUBLISH_FENCE);
    }
    fn fence_in_free() {
        fence_unless::<DROP>(FREE_FENCE);
    }
    fn fence_before_reread() {
        if DROP & LATEST_FENCE == 0 {
            loom::sync::atomic::fence(Acquire);
        }
    }
    const SCAN_HOLDS: bool = DROP & HOLD_SCAN == 0;
    const KEEP_LOSSLESS: bool = DROP & LOSSLESS_FLOOR == 0;
    const RECLAIM_MARKS_FIRST: bool = DROP & RECLAIM_IN_ONE_STEP == 0;
    const LOW_FIRST_CURSOR: bool = DROP & HIGH_FIRST_CURSOR == 0;
}

/// A futex word (or a sleeper count) in loom's memory. Its sleep is the kernel's, as far as
/// the handshake can tell: the value is compared under the lock that a wake takes too, so a
/// waker whose bump came before the comparison is seen by it, and one that comes after finds
/// the sleeper waiting. There is no timeout and no spurious wake-up.
///
/// A lost wake-up would leave the sleeper asleep for good, which loom reports as a deadlock
/// but cannot unwind from cleanly (its runtime panics again in a destructor). So the side
/// that does the waking `close`s the word once it is done: a sleeper still waiting then, with
/// no wake since it fell asleep, would have slept until its timeout, and fails the model.
struct ModelFutex<const DROP: u16> {
    word: LoomU32,
    /// The "kernel" of the word: shared by words that one waiter sleeps on at once
    /// ([`ModelFutex::sharing`]), as `futex_waitv` sleeps on several.
    sleep: Arc<Sleep>,
}

/// A futex "kernel": its bookkeeping and the condition variable its sleepers wait on.
struct Sleep {
    kernel: Mutex<Kernel>,
    asleep: Condvar,
}

/// What the model's "kernel" keeps about a futex word's sleepers.
#[derive(Default)]
struct Kernel {
    /// Wake calls so far.
    wakes: u64,
    /// The waker is done: no wake will come any more.
    closed: bool,
    /// Wakers of a shared kernel that are done so far ([`ModelFutex::finish`]).
    done: u32,
}

/// What a model fails with when a wake-up was lost.
const LOST_WAKE_UP: &str = "a wake-up was lost";

impl<const DROP: u16> ModelFutex<DROP> {
    fn new() -> Self {
        ModelFutex {
            word: LoomU32::new(0),
            sleep: Arc::new(Sleep {
                kernel: Mutex::new(Kernel::default()),
                asleep: Condvar::new(),
            }),
        }
    }

    /// A word of its own whose sleepers share `other`'s kernel, so that one waiter can sleep
    /// on both at once ([`Futex::wait_any`]).
    fn sharing(other: &Self) -> Self {
        ModelFutex {
            word: LoomU32::new(0),
            sleep: other.sleep.clone(),
        }
    }

    /// One of `wakers` wakers of a shared kernel is done; the last closes it.
    fn finish(&self, wakers: u32) {
        let mut kernel = self.sleep.kernel.lock().unwrap();
        kernel.done += 1;
        if kernel.done == wakers {
            kernel.closed = true;
            self.sleep.asleep.notify_all();
        }
    }

    /// Takes one sleeper out of the count (never below 0: with `REGISTER_LATE` a waiter that
    /// found what it wanted never registered).
    fn unregister(&self) {
        let _ = self
            .word
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// No wake will come any more (the waking side is done).
    fn close(&self) {
        self.finish(1);
    }
}

impl<const DROP: u16> Futex for ModelFutex<DROP> {
    fn load(&self, order: Ordering) -> u32 {
        self.word.load(order)
    }
    fn fetch_add(&self, value: u32, order: Ordering) -> u32 {
        self.word.fetch_add(value, order)
    }
    fn fence(order: Ordering) {
        loom::sync::atomic::fence(order);
    }
    fn wait(&self, seen: u32, at_most: Duration) {
        Self::wait_any(&[(self, seen)], at_most);
    }
    fn wait_any(words: &[(&Self, u32)], _at_most: Duration) {
        let sleep = &words[0].0.sleep;
        assert!(
            words.iter().all(|(w, _)| Arc::ptr_eq(&w.sleep, sleep)),
            "a model waits only on words that share a kernel"
        );
        let mut kernel = sleep.kernel.lock().unwrap();
        if words.iter().any(|(w, seen)| w.word.load(Relaxed) != *seen) {
            return;
        }
        let since = kernel.wakes;
        while kernel.wakes == since {
            assert!(
                !kernel.closed,
                "{LOST_WAKE_UP}: asleep with nobody left to wake it"
            );
            kernel = sleep.asleep.wait(kernel).unwrap();
        }
    }
    fn wake_all(&self) {
        self.sleep.kernel.lock().unwrap().wakes += 1;
        self.sleep.asleep.notify_all();
    }
    fn fence_after_register() {
        fence_unless::<DROP>(SLEEP_FENCE);
    }
    fn fence_after_read() {
        if DROP & READ_FENCE == 0 {
            loom::sync::atomic::fence(Acquire);
        }
    }
    fn fence_before_count() {
        fence_unless::<DROP>(WAKE_FENCE);
    }
    const REGISTER_FIRST: bool = DROP & REGISTER_LATE == 0;
    const READ_WORD_FIRST: bool = DROP & READ_WORD_LATE == 0;
    const BUMP: bool = DROP & NO_BUMP == 0;
}

/// A whole stream in loom's memory: `SLOTS` slots of one word of data each, and both sides'
/// sleeper counts and futex words.
struct Model<const DROP: u16> {
    published: Mutant<DROP>,
    /// The slot table's words: a tag and a time per slot (the packed layout: loom explores
    /// orders, not cache lines).
    slots: Vec<Mutant<DROP>>,
    records: Vec<Record<Mutant<DROP>>>,
    budget: Mutant<DROP>,
    data: Vec<UnsafeCell<u64>>,
    /// `SLEEPERS` and `FUTEX`: subscribers waiting for a frame.
    sleepers: ModelFutex<DROP>,
    futex: ModelFutex<DROP>,
    /// `PUB_SLEEPERS` and `PUB_FUTEX`: the publisher waiting for a slot.
    pub_sleepers: ModelFutex<DROP>,
    pub_futex: ModelFutex<DROP>,
    /// `MEMBER_SLEEPERS` and `MEMBER_FUTEX`: waiting for the subscribers to change.
    member_sleepers: ModelFutex<DROP>,
    member_futex: ModelFutex<DROP>,
}

// SAFETY: (for the model only) every access to `data` goes through loom's UnsafeCell,
// which checks it against the happens-before order; that is the point of the model.
unsafe impl<const DROP: u16> Sync for Model<DROP> {}

impl<const DROP: u16> Model<DROP> {
    fn new(slots: usize, records: usize) -> Arc<Self> {
        let w = || Mutant::<DROP>(LoomU64::new(0));
        Arc::new(Model {
            published: w(),
            slots: (0..2 * slots).map(|_| w()).collect(),
            records: (0..records).map(|_| Record::new_with(w)).collect(),
            budget: w(),
            data: (0..slots).map(|_| UnsafeCell::new(u64::MAX)).collect(),
            sleepers: ModelFutex::new(),
            futex: ModelFutex::new(),
            pub_sleepers: ModelFutex::new(),
            pub_futex: ModelFutex::new(),
            member_sleepers: ModelFutex::new(),
            member_futex: ModelFutex::new(),
        })
    }

    /// Another lane of the same stream: a ring of its own whose futex word shares `first`'s
    /// kernel, so that a subscriber of both lanes sleeps on both words at once.
    fn another_lane(first: &Self) -> Arc<Self> {
        let w = || Mutant::<DROP>(LoomU64::new(0));
        let slots = first.slots.len() / 2;
        Arc::new(Model {
            published: w(),
            slots: (0..2 * slots).map(|_| w()).collect(),
            records: (0..first.records.len())
                .map(|_| Record::new_with(w))
                .collect(),
            budget: w(),
            data: (0..slots).map(|_| UnsafeCell::new(u64::MAX)).collect(),
            sleepers: ModelFutex::new(),
            futex: ModelFutex::sharing(&first.futex),
            pub_sleepers: ModelFutex::new(),
            pub_futex: ModelFutex::new(),
            member_sleepers: ModelFutex::new(),
            member_futex: ModelFutex::new(),
        })
    }

    fn ring(&self) -> Ring<'_, Mutant<DROP>> {
        Ring {
            published: &self.published,
            slots: SlotTable::new(&self.slots, 2, self.slots.len() / 2),
            records: &self.records,
            budget: &self.budget,
        }
    }
}

/// The publisher: frames `state.next..until`, each slot's data set to its frame number.
/// Waits (by yielding) when no slot is free.
fn publish_frames<const DROP: u16>(m: &Model<DROP>, state: &mut PublisherState, until: u64) {
    let ring = m.ring();
    while state.next < until {
        let slot = loop {
            match try_loan(&ring, state) {
                Some(slot) => break slot,
                None => loom::thread::yield_now(),
            }
        };
        let n = state.next;
        // SAFETY: loom checks this access against the subscriber's reads.
        m.data[slot].with_mut(|p| unsafe { *p = n });
        assert_eq!(publish(&ring, state, slot, 0), n);
    }
}

/// Reads a taken frame's data: it must be the frame the protocol says it is.
fn read_taken<const DROP: u16>(m: &Model<DROP>, taken: Taken) {
    // SAFETY: loom checks this access against the publisher's writes.
    let value = m.data[taken.slot].with(|p| unsafe { *p });
    assert_eq!(value, taken.number, "a held frame was overwritten");
}

/// Receives (reading each frame in place, then releasing it) until the subscriber's cursor
/// reaches `until`; returns the frame numbers received.
fn take_until<const DROP: u16>(
    m: &Model<DROP>,
    ring: &Ring<'_, Mutant<DROP>>,
    sub: &mut SubscriberState,
    until: u64,
) -> Vec<u64> {
    let mut got = Vec::new();
    while sub.cursor < until {
        match receive(ring, sub, 0) {
            Some(taken) => {
                read_taken(m, taken);
                got.push(taken.number);
                release(ring, sub.record, 0, taken.slot);
            }
            None => loom::thread::yield_now(),
        }
    }
    got
}

/// A record claimed for the model's subscriber (identity 7), with the one hold the hold
/// budget of capacity 1 grants it.
fn record_with_one_hold<const DROP: u16>(ring: &Ring<'_, Mutant<DROP>>) -> usize {
    let record = claim_record(ring, 7).unwrap();
    assert_eq!(take_budget(ring, 1, 1), 1);
    record
}

fn subscriber(record: usize, cursor: u64) -> SubscriberState {
    SubscriberState::new(record, cursor, 7)
}

/// Runs `model` under loom, and requires that loom rejects it: with a causality violation
/// (a frame written while read) or the model's own assertion. Any other panic (a broken
/// harness) fails the test.
fn expect_rejected(model: impl Fn() + std::panic::UnwindSafe, assertion: &str) {
    let message = rejection(model);
    assert!(
        message.contains("Causality violation") || message.contains(assertion),
        "rejected for another reason: {message}"
    );
}

/// [`expect_rejected`], accepting only the model's own assertion `assertion`.
fn expect_failing_with(model: impl Fn() + std::panic::UnwindSafe, assertion: &str) {
    let message = rejection(model);
    assert!(
        message.contains(assertion),
        "rejected for another reason: {message}"
    );
}

/// The panic message with which loom rejects `model` (the test fails if it accepts it).
fn rejection(model: impl Fn() + std::panic::UnwindSafe) -> String {
    let panic = std::panic::catch_unwind(model).expect_err("loom accepted a broken protocol");
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

fn builder() -> loom::model::Builder {
    bounded(3)
}

/// A builder exploring schedules with at most `preemptions` preemptions (the models
/// whose threads spin are explored with 2, so that the suite stays within minutes).
fn bounded(preemptions: usize) -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder
}

/// Frames 0 and 1 are in slots 0 and 1 of a 3-slot ring and a lossy subscriber wants
/// frame 0 when the publisher publishes frames 2 and 3; the loan for frame 3 wants slot 0
/// back. The subscriber never reads a frame being rewritten, every frame it gets is the
/// one numbered, and received + missed covers all four.
fn check_lossy<const DROP: u16>() {
    builder().check(|| {
        let m = Model::<DROP>::new(3, 1);
        let ring = m.ring();
        let record = record_with_one_hold(&ring);
        let start = subscribe(&ring, record, 1, false);
        let mut state = attach(&ring);
        publish_frames(&m, &mut state, 2);
        let publisher = {
            let m = m.clone();
            loom::thread::spawn(move || publish_frames(&m, &mut state, 4))
        };
        let mut sub = subscriber(record, start);
        if let Some(taken) = receive(&ring, &mut sub, 0) {
            read_taken(&m, taken);
            release(&ring, record, 0, taken.slot);
        }
        publisher.join().unwrap();
        while let Some(taken) = receive(&ring, &mut sub, 0) {
            read_taken(&m, taken);
            release(&ring, record, 0, taken.slot);
        }
        assert_eq!(sub.received + sub.missed, 4);
    });
}

#[test]
fn model_lossy_subscriber_never_reads_a_rewritten_frame() {
    check_lossy::<0>();
}

#[test]
fn model_catches_a_missing_fence_after_the_hold() {
    expect_rejected(check_lossy::<HOLD_FENCE>, "a held frame was overwritten");
}

#[test]
fn model_catches_a_missing_fence_after_the_take_back() {
    expect_rejected(
        check_lossy::<TAKE_BACK_FENCE>,
        "a held frame was overwritten",
    );
}

#[test]
fn model_catches_a_publisher_that_ignores_holds() {
    expect_rejected(check_lossy::<HOLD_SCAN>, "a held frame was overwritten");
}

/// A lossless subscriber that has not taken frame 0 yet, with frames 0 and 1 published
/// in a 3-slot ring: while the publisher publishes frames 2 and 3 (it must wait for the
/// subscriber), the subscriber gets all four, in order, none missed. With `newest_first`, the
/// loans take the newest free frame's slot (`loan_newest_free`), so frames stop landing in
/// slot `number % slots` and the subscriber must find them by scanning.
fn check_lossless<const DROP: u16>(newest_first: bool) {
    bounded(2).check(move || {
        let m = Model::<DROP>::new(3, 1);
        let ring = m.ring();
        let record = record_with_one_hold(&ring);
        assert_eq!(subscribe(&ring, record, 1, true), 0);
        let mut state = attach(&ring).newest_first(newest_first);
        publish_frames(&m, &mut state, 2);
        let publisher = {
            let m = m.clone();
            loom::thread::spawn(move || publish_frames(&m, &mut state, 4))
        };
        let mut sub = subscriber(record, 0);
        let got = take_until(&m, &ring, &mut sub, 4);
        publisher.join().unwrap();
        assert_eq!(got, [0, 1, 2, 3], "lossless delivery missed or reordered");
        assert_eq!(sub.missed, 0);
    });
}

#[test]
fn model_lossless_subscriber_gets_every_frame_in_order() {
    check_lossless::<0>(false);
}

#[test]
fn model_lossless_subscriber_gets_every_frame_in_order_from_newest_first_loans() {
    check_lossless::<0>(true);
}

#[test]
fn model_catches_a_newest_first_loan_that_ignores_lossless_cursors() {
    expect_rejected(
        || check_lossless::<LOSSLESS_FLOOR>(true),
        "lossless delivery missed or reordered",
    );
}

#[test]
fn model_catches_a_newest_first_loan_that_ignores_holds() {
    expect_rejected(
        || check_lossless::<HOLD_SCAN>(true),
        "a held frame was overwritten",
    );
}

/// Newest-first loans may take back the newest frame itself once every subscriber (all
/// lossless) is past it, which `latest()` then races: a lossless subscriber that took frame 0
/// of a 3-slot ring calls `latest()` while the publisher publishes frames 1 and 2, each loan
/// taking back the frame just taken. It gets an intact frame (0 again, or a newer one with the
/// frames between counted as missed) or nothing, never a frame being rewritten; then
/// receives the rest.
fn check_latest_racing_newest_first<const DROP: u16>() {
    builder().check(|| {
        let m = Model::<DROP>::new(3, 1);
        let ring = m.ring();
        let record = record_with_one_hold(&ring);
        assert_eq!(subscribe(&ring, record, 1, true), 0);
        let mut state = attach(&ring).newest_first(true);
        publish_frames(&m, &mut state, 1);
        let mut sub = subscriber(record, 0);
        assert_eq!(take_until(&m, &ring, &mut sub, 1), [0]);
        let publisher = {
            let m = m.clone();
            loom::thread::spawn(move || publish_frames(&m, &mut state, 3))
        };
        if let Some(taken) = latest(&ring, &mut sub, 0) {
            read_taken(&m, taken);
            release(&ring, record, 0, taken.slot);
        }
        take_until(&m, &ring, &mut sub, 3);
        publisher.join().unwrap();
        assert_eq!(
            sub.received + sub.missed,
            3,
            "a frame was neither received nor missed"
        );
    });
}

#[test]
fn model_latest_racing_a_newest_first_loan_of_the_newest_frame_stays_safe() {
    check_latest_racing_newest_first::<0>();
}

#[test]
fn model_catches_a_newest_first_loan_of_the_newest_frame_that_ignores_holds() {
    expect_rejected(
        check_latest_racing_newest_first::<HOLD_SCAN>,
        "a held frame was overwritten",
    );
}

#[test]
fn model_catches_latest_racing_the_newest_frames_loan_without_the_hold_fence() {
    expect_rejected(
        check_latest_racing_newest_first::<HOLD_FENCE>,
        "a held frame was overwritten",
    );
}

/// With oldest-first loans the newest frame stays offered until a newer one is published, so
/// `latest()` always finds one: a lossy subscriber that took frames 0 and 1 of a 3-slot ring
/// calls it while the publisher publishes frames 2 to 4 (the loan for frame 4 takes back
/// frame 1, the newest when the subscriber started looking). Its search may see that
/// take-back; its re-read of `PUBLISHED` must then see frame 2's publish, not give up.
fn check_latest_finds_the_kept_newest_frame<const DROP: u16>() {
    builder().check(|| {
        let m = Model::<DROP>::new(3, 1);
        let ring = m.ring();
        let record = record_with_one_hold(&ring);
        let start = subscribe(&ring, record, 1, false);
        let mut state = attach(&ring);
        publish_frames(&m, &mut state, 2);
        let mut sub = subscriber(record, start);
        assert_eq!(take_until(&m, &ring, &mut sub, 2), [0, 1]);
        let publisher = {
            let m = m.clone();
            loom::thread::spawn(move || publish_frames(&m, &mut state, 5))
        };
        let taken = latest(&ring, &mut sub, 0);
        let taken = taken.expect("latest() gave up while a frame was offered");
        read_taken(&m, taken);
        release(&ring, record, 0, taken.slot);
        publisher.join().unwrap();
    });
}

#[test]
fn model_latest_finds_the_kept_newest_frame() {
    check_latest_finds_the_kept_newest_frame::<0>();
}

#[test]
fn model_catches_latest_rereading_published_without_its_fence() {
    expect_failing_with(
        check_latest_finds_the_kept_newest_frame::<LATEST_FENCE>,
        "latest() gave up while a frame was offered",
    );
}

/// A lossless subscriber joins a 4-slot ring with a history of 2 (hold capacity 1), full of
/// frames 0 to 3, starting at the oldest frame, while the publisher tries twice to loan a slot
/// and publish (frames 4 and 5). A loan that read the cursors before the subscriber's fence
/// may still take back one frame the subscriber found (counted as missed when it gets there);
/// every loan after that keeps every frame from the subscriber's start. So at most one frame
/// from the start on is lost, and the newest 2 frames are always offered.
fn check_oldest_start<const DROP: u16>() {
    builder().check(|| {
        let m = Model::<DROP>::new(4, 1);
        let ring = m.ring();
        let mut state = attach(&ring).keeping(2);
        publish_frames(&m, &mut state, 4);
        let publisher = {
            let m = m.clone();
            loom::thread::spawn(move || {
                // One attempt each: once the subscriber's cursor counts, a loan finds no slot
                // (it wants every frame in the ring), and nothing here receives.
                let ring = m.ring();
                for _ in 0..2 {
                    if let Some(slot) = try_loan(&ring, &mut state) {
                        let n = state.next;
                        // SAFETY: loom checks this access against any other.
                        m.data[slot].with_mut(|p| unsafe { *p = n });
                        publish(&ring, &mut state, slot, 0);
                    }
                }
                state
            })
        };
        let record = record_with_one_hold(&ring);
        let first = subscribe_with(&ring, record, 1, true, 0, StartAt::Oldest).cursor;
        let state = publisher.join().unwrap();
        let newest = state.next - 1;
        let offered: Vec<u64> = ring
            .slots
            .iter()
            .map(|s| s.tag.load(Relaxed))
            .filter(|&t| t != 0 && t & TAKEN_BACK == 0)
            .map(|t| t - 1)
            .collect();
        assert!(
            offered.contains(&newest) && offered.contains(&(newest - 1)),
            "history lost: {offered:?}"
        );
        assert!(first < newest - 1, "started at {first}, within the history");
        let lost: Vec<u64> = (first..=newest).filter(|f| !offered.contains(f)).collect();
        assert!(
            lost.len() <= 1,
            "loans after the subscription took back frames {lost:?} (start {first})"
        );
    });
}

#[test]
fn model_a_lossless_subscriber_starting_at_the_oldest_frame_keeps_it() {
    check_oldest_start::<0>();
}

#[test]
fn model_catches_an_oldest_start_that_records_a_high_first_cursor() {
    expect_failing_with(
        check_oldest_start::<HIGH_FIRST_CURSOR>,
        "loans after the subscription took back frames",
    );
}

/// The stall policy at work: a lossless subscriber that wants frame 0 while the publisher
/// publishes frames 2 to 4 through three slots; the publisher, whenever a loan fails,
/// demotes it (as `wait_for_slot` does past the policy's wait) and loans again. The
/// subscriber, demoted at any point of its receive, never reads a rewritten frame, gets
/// frames in order, and accounts for every frame as received or missed.
fn check_demotion<const DROP: u16>() {
    // One preemption: with two the model takes minutes; the twin below is rejected with
    // one.
    bounded(1).check(|| {
        let m = Model::<DROP>::new(3, 1);
        let ring = m.ring();
        let record = record_with_one_hold(&ring);
        assert_eq!(subscribe(&ring, record, 1, true), 0);
        let mut state = attach(&ring);
        publish_frames(&m, &mut state, 2);
        let publisher = {
            let m = m.clone();
            loom::thread::spawn(move || {
                let ring = m.ring();
                while state.next < 5 {
                    let slot = loop {
                        match try_loan(&ring, &mut state) {
                            Some(slot) => break slot,
                            None => {
                                demote_laggards(&ring, false);
                                loom::thread::yield_now();
                            }
                        }
                    };
                    let n = state.next;
                    // SAFETY: loom checks this access against the subscriber's reads.
                    m.data[slot].with_mut(|p| unsafe { *p = n });
                    assert_eq!(publish(&ring, &mut state, slot, 0), n);
                }
            })
        };
        let mut sub = subscriber(record, 0);
        let got = take_until(&m, &ring, &mut sub, 5);
        publisher.join().unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
        assert_eq!(
            got.len() as u64 + sub.missed,
            5,
            "frames unaccounted for: {got:?}"
        );
    });
}

#[test]
fn model_a_lossless_subscriber_demoted_mid_stream_stays_safe_and_counts_its_misses() {
    check_demotion::<0>();
}

/// The same model catches a subscriber without its fence after the hold: demotion does
/// not make the hold protocol unnecessary.
#[test]
fn model_catches_a_demoted_subscriber_without_the_hold_fence() {
    expect_rejected(check_demotion::<HOLD_FENCE>, "a held frame was overwritten");
}

#[test]
fn model_catches_a_publisher_that_ignores_lossless_cursors() {
    expect_rejected(
        || check_lossless::<LOSSLESS_FLOOR>(false),
        "lossless delivery missed or reordered",
    );
}

/// Record 1 was left by a dead lossless subscriber that wants frame 0; record 0 belongs
/// to an idle live subscriber; frames 0, 1 and 2 fill the 3-slot ring, so no slot is free
/// until record 1 is reclaimed. Concurrently: one thread reclaims record 1, the publisher
/// tries one loan for frame 3 (and publishes it if it gets one), and a new subscriber
/// tries to claim a record and, if it gets record 1, reads the oldest frame, the one the
/// loan wants back. The new subscriber never reads a rewritten frame (the reclaim's
/// clean-up never erases its hold), and once the reclaim is done the publisher goes on.
fn check_reclaim<const DROP: u16>() {
    builder().check(|| {
        let m = Model::<DROP>::new(3, 2);
        let ring = m.ring();
        ring.records[0].owner.store(5, Relaxed);
        let mut state = attach(&ring);
        publish_frames(&m, &mut state, 3);
        let dead = 0xDEAD;
        let stale = &ring.records[1];
        stale.owner.store(dead, Relaxed);
        stale.config.store(1 | CONFIG_LOSSLESS, Relaxed);
        let reclaimer = {
            let m = m.clone();
            loom::thread::spawn(move || {
                assert!(reclaim(&m.ring(), 1, dead, 0x5EED, |_| false).is_some());
            })
        };
        let publisher = {
            let m = m.clone();
            loom::thread::spawn(move || {
                let ring = m.ring();
                if let Some(slot) = try_loan(&ring, &mut state) {
                    // SAFETY: loom checks this access against the subscriber's reads.
                    m.data[slot].with_mut(|p| unsafe { *p = 3 });
                    publish(&ring, &mut state, slot, 0);
                }
                state
            })
        };
        if let Some(record) = claim_record(&ring, 7) {
            assert_eq!(record, 1);
            subscribe(&ring, record, 1, false);
            // It wants the oldest frame (as if it had subscribed before frame 0).
            let mut sub = subscriber(record, 0);
            if let Some(taken) = receive(&ring, &mut sub, 0) {
                read_taken(&m, taken);
                release(&ring, record, 0, taken.slot);
            }
        }
        reclaimer.join().unwrap();
        let mut state = publisher.join().unwrap();
        publish_frames(&m, &mut state, 4);
    });
}

#[test]
fn model_a_dead_subscribers_record_is_reclaimed_while_the_publisher_loans() {
    check_reclaim::<0>();
}

#[test]
fn model_catches_a_reclaim_that_frees_the_record_before_clearing_it() {
    expect_rejected(
        check_reclaim::<RECLAIM_IN_ONE_STEP>,
        "a held frame was overwritten",
    );
}

/// A lossy subscriber takes frame 0, reads it, releases it and unsubscribes while the
/// publisher loans for frames 2 and 3 (the loan for 3 wants slot 0 back): the publisher's
/// rewrite of slot 0 is ordered after the subscriber's read (the unsubscribe's clears are
/// Release stores; with Relaxed ones loom reports the race).
#[test]
fn model_unsubscribe_racing_a_loan_never_races_a_read() {
    builder().check(|| {
        let m = Model::<0>::new(3, 1);
        let ring = m.ring();
        let record = record_with_one_hold(&ring);
        let start = subscribe(&ring, record, 1, false);
        let mut state = attach(&ring);
        publish_frames(&m, &mut state, 2);
        let publisher = {
            let m = m.clone();
            loom::thread::spawn(move || publish_frames(&m, &mut state, 4))
        };
        let mut sub = subscriber(record, start);
        if let Some(taken) = receive(&ring, &mut sub, 0) {
            read_taken(&m, taken);
            release(&ring, record, 0, taken.slot);
        }
        unsubscribe(&ring, record, 7, 7, |_| true);
        publisher.join().unwrap();
    });
}

/// Only a lossy subscriber with one hold (the budget of a 3-slot ring), frames 0, 1, 2
/// filling the ring: while the subscriber moves its hold from frame 0 to frame 1, one
/// `try_loan` still finds a slot (its second look at taken-back slots).
#[test]
fn model_try_loan_never_fails_with_only_lossy_subscribers() {
    builder().check(|| {
        let m = Model::<0>::new(3, 1);
        let ring = m.ring();
        let record = record_with_one_hold(&ring);
        let _ = subscribe(&ring, record, 1, false);
        let mut state = attach(&ring);
        publish_frames(&m, &mut state, 3);
        let publisher = {
            let m = m.clone();
            loom::thread::spawn(move || {
                let ring = m.ring();
                let slot = try_loan(&ring, &mut state);
                assert!(
                    slot.is_some(),
                    "try_loan failed with only a lossy subscriber"
                );
                let slot = slot.unwrap();
                // SAFETY: loom checks this access against the subscriber's reads.
                m.data[slot].with_mut(|p| unsafe { *p = 3 });
            })
        };
        let mut sub = subscriber(record, 0);
        for _ in 0..2 {
            if let Some(taken) = receive(&ring, &mut sub, 0) {
                read_taken(&m, taken);
                release(&ring, record, 0, taken.slot);
            }
        }
        publisher.join().unwrap();
    });
}

/// A lossless subscriber that subscribes while the publisher publishes gets every frame
/// from its starting point on, none missed.
#[test]
fn model_a_lossless_subscriber_joining_mid_stream_misses_nothing() {
    check_joiner::<0, 2>();
}

/// The same for one that joins before the first frame, while the publisher publishes
/// four frames through three slots (explored with one preemption: with two it takes
/// minutes, and the schedule that breaks it without the fence needs none).
#[test]
fn model_a_lossless_subscriber_joining_at_the_start_misses_nothing() {
    check_joiner::<0, 0>();
}

/// Without the fence in `subscribe`, the publisher may not see the new lossless record
/// while the subscriber reads a `PUBLISHED` older than what it takes back: the joiner from
/// frame 0 misses frames.
#[test]
fn model_catches_a_missing_fence_in_subscribe() {
    expect_rejected(check_joiner::<SUBSCRIBE_FENCE, 0>, "missed frames");
}

/// A lossless subscriber joins after `ALREADY` frames while the publisher publishes up to
/// frame 3 in a 3-slot ring; it must get every frame from its start on.
fn check_joiner<const DROP: u16, const ALREADY: u64>() {
    bounded(if ALREADY == 0 { 1 } else { 2 }).check(|| {
        let m = Model::<DROP>::new(3, 1);
        let ring = m.ring();
        let mut state = attach(&ring);
        publish_frames(&m, &mut state, ALREADY);
        let publisher = {
            let m = m.clone();
            loom::thread::spawn(move || publish_frames(&m, &mut state, 4))
        };
        let record = record_with_one_hold(&ring);
        let start = subscribe(&ring, record, 1, true);
        let mut sub = subscriber(record, start);
        let got = take_until(&m, &ring, &mut sub, 4);
        publisher.join().unwrap();
        assert_eq!(sub.missed, 0, "missed frames: got {got:?} from {start}");
        assert_eq!(got, (start..4).collect::<Vec<_>>());
    });
}

// ---------------------------------------------------------------------------------------------
// The sleep handshake (module `sleep`)

/// The publisher of the sleep models: frames `state.next..until`, each followed by the
/// waker's half as `Publisher::publish_slot` runs it. When no slot is free it waits by the
/// sleep handshake, as `Publisher::wait_for_slot` does once its spinning is over (with no
/// timeout: a lost wake-up is a deadlock).
fn publish_and_wake<const DROP: u16>(m: &Model<DROP>, state: &mut PublisherState, until: u64) {
    let ring = m.ring();
    while state.next < until {
        let slot = loop {
            if let Some(slot) = try_loan(&ring, state) {
                break slot;
            }
            let got = sleep::sleep_unless(
                &m.pub_futex,
                || {
                    m.pub_sleepers.fetch_add(1, Relaxed);
                },
                || try_loan(&ring, state),
                |seen| m.pub_futex.wait(seen, Duration::MAX),
            );
            m.pub_sleepers.unregister();
            if let Some(slot) = got {
                break slot;
            }
        };
        let n = state.next;
        // SAFETY: loom checks this access against the subscriber's reads.
        m.data[slot].with_mut(|p| unsafe { *p = n });
        assert_eq!(publish(&ring, state, slot, 0), n);
        sleep::wake_after_fence(&m.sleepers, &m.futex);
    }
}

/// How the subscriber of a sleep model waits when a receive finds nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waits {
    /// As `Subscriber::receive_timeout` once its spinning is over: its last check is
    /// `newer_than`, and it receives after it wakes.
    Blocking,
    /// As `Recv::poll`: its last check is a whole receive (and its sleep the waiter
    /// thread's, here the futex's own).
    Polling,
}

/// The subscriber of the sleep models: receives frames until its cursor reaches `until`,
/// releasing each and waking the publisher's side after every receive and release (as
/// `Subscriber` does for a lossless subscriber); waits by the sleep handshake when there is
/// nothing new. Returns the frame numbers received.
fn receive_or_sleep<const DROP: u16>(
    m: &Model<DROP>,
    sub: &mut SubscriberState,
    until: u64,
    waits: Waits,
) -> Vec<u64> {
    let ring = m.ring();
    let mut got = Vec::new();
    while sub.cursor < until {
        let mut taken = receive(&ring, sub, 0);
        if taken.is_none() {
            let cursor = sub.cursor;
            taken = sleep::sleep_unless(
                &m.futex,
                || {
                    m.sleepers.fetch_add(1, Relaxed);
                },
                || match waits {
                    Waits::Blocking => newer_than(&ring, cursor).then_some(None),
                    Waits::Polling => receive(&ring, sub, 0).map(Some),
                },
                |seen| m.futex.wait(seen, Duration::MAX),
            )
            .flatten();
            m.sleepers.unregister();
        }
        if let Some(taken) = taken {
            sleep::wake(&m.pub_sleepers, &m.pub_futex);
            read_taken(m, taken);
            got.push(taken.number);
            release(&ring, sub.record, 0, taken.slot);
            sleep::wake(&m.pub_sleepers, &m.pub_futex);
        }
    }
    got
}

/// A subscriber waits for frames 0 and 1 while the publisher publishes them (three slots:
/// the publisher never waits). Every wake-up it needs reaches it: it gets both frames.
fn check_sleeping_subscriber<const DROP: u16>(waits: Waits) {
    bounded(2).check(move || {
        let m = Model::<DROP>::new(3, 1);
        let ring = m.ring();
        let record = record_with_one_hold(&ring);
        let start = subscribe(&ring, record, 1, false);
        let mut state = attach(&ring);
        let publisher = {
            let m = m.clone();
            loom::thread::spawn(move || {
                publish_and_wake(&m, &mut state, 2);
                m.futex.close();
            })
        };
        let mut sub = subscriber(record, start);
        let got = receive_or_sleep(&m, &mut sub, 2, waits);
        publisher.join().unwrap();
        assert_eq!(got, [0, 1]);
    });
}

#[test]
fn model_a_sleeping_subscriber_is_woken_by_every_publish() {
    check_sleeping_subscriber::<0>(Waits::Blocking);
}

#[test]
fn model_an_async_subscriber_is_woken_by_every_publish() {
    check_sleeping_subscriber::<0>(Waits::Polling);
}

#[test]
fn model_catches_a_sleeper_without_its_fence() {
    expect_failing_with(
        || check_sleeping_subscriber::<SLEEP_FENCE>(Waits::Blocking),
        LOST_WAKE_UP,
    );
}

#[test]
fn model_catches_an_async_sleeper_without_its_fence() {
    expect_failing_with(
        || check_sleeping_subscriber::<SLEEP_FENCE>(Waits::Polling),
        LOST_WAKE_UP,
    );
}

#[test]
fn model_catches_a_publish_without_its_closing_fence() {
    expect_failing_with(
        || check_sleeping_subscriber::<PUBLISH_FENCE>(Waits::Blocking),
        LOST_WAKE_UP,
    );
}

#[test]
fn model_catches_a_sleeper_that_registers_after_its_check() {
    expect_failing_with(
        || check_sleeping_subscriber::<REGISTER_LATE>(Waits::Blocking),
        LOST_WAKE_UP,
    );
}

#[test]
fn model_catches_a_sleeper_that_reads_the_futex_word_after_its_check() {
    expect_failing_with(
        || check_sleeping_subscriber::<READ_WORD_LATE>(Waits::Blocking),
        LOST_WAKE_UP,
    );
}

#[test]
fn model_catches_a_publish_that_wakes_without_bumping_the_futex_word() {
    expect_failing_with(
        || check_sleeping_subscriber::<NO_BUMP>(Waits::Blocking),
        LOST_WAKE_UP,
    );
}

/// A lossless subscriber wants frame 0 with frames 0 and 1 published in a 3-slot ring; it
/// takes frame 0 and stops, while the publisher publishes frames 2 and 3: the loan for frame 3
/// needs slot 0 back, so the publisher may have to sleep until the subscriber has moved past
/// frame 0 and released it. Every wake-up it needs reaches it. (A subscriber that went on
/// would hide a missing fence in its wake: the fence after its next hold would stand in.)
fn check_sleeping_publisher<const DROP: u16>() {
    bounded(2).check(|| {
        let m = Model::<DROP>::new(3, 1);
        let ring = m.ring();
        let record = record_with_one_hold(&ring);
        assert_eq!(subscribe(&ring, record, 1, true), 0);
        let mut state = attach(&ring);
        publish_frames(&m, &mut state, 2);
        let publisher = {
            let m = m.clone();
            loom::thread::spawn(move || {
                publish_and_wake(&m, &mut state, 4);
                m.futex.close();
                state.next
            })
        };
        let mut sub = subscriber(record, 0);
        let got = receive_or_sleep(&m, &mut sub, 1, Waits::Blocking);
        m.pub_futex.close();
        assert_eq!(publisher.join().unwrap(), 4);
        assert_eq!(got, [0]);
    });
}

/// The other steps of the handshake, each removed or moved in turn: every one leaves a sleeper
/// that nobody is left to wake, whichever side sleeps (an async subscriber's last check is a
/// whole receive, whose own Acquire load stands in for the read fence, so that twin is not
/// one of its).
#[test]
fn model_catches_every_other_broken_step_of_the_handshake() {
    type Check = fn();
    let twins: [(&str, Check); 9] = [
        ("blocking, no read fence", || {
            check_sleeping_subscriber::<READ_FENCE>(Waits::Blocking);
        }),
        ("async, no publish fence", || {
            check_sleeping_subscriber::<PUBLISH_FENCE>(Waits::Polling);
        }),
        ("async, registering late", || {
            check_sleeping_subscriber::<REGISTER_LATE>(Waits::Polling);
        }),
        ("async, reading the word late", || {
            check_sleeping_subscriber::<READ_WORD_LATE>(Waits::Polling);
        }),
        ("async, no bump", || {
            check_sleeping_subscriber::<NO_BUMP>(Waits::Polling);
        }),
        (
            "publisher, no read fence",
            check_sleeping_publisher::<READ_FENCE>,
        ),
        (
            "publisher, registering late",
            check_sleeping_publisher::<REGISTER_LATE>,
        ),
        (
            "publisher, reading the word late",
            check_sleeping_publisher::<READ_WORD_LATE>,
        ),
        ("publisher, no bump", check_sleeping_publisher::<NO_BUMP>),
    ];
    for (name, twin) in twins {
        let message = rejection(twin);
        assert!(
            message.contains(LOST_WAKE_UP),
            "{name}: rejected for another reason: {message}"
        );
    }
}

#[test]
fn model_a_publisher_waiting_for_a_slot_is_woken_by_the_subscriber() {
    check_sleeping_publisher::<0>();
}

#[test]
fn model_catches_a_waiting_publisher_without_its_fence() {
    expect_failing_with(check_sleeping_publisher::<SLEEP_FENCE>, LOST_WAKE_UP);
}

#[test]
fn model_catches_a_subscriber_that_wakes_the_publisher_without_a_fence() {
    expect_failing_with(check_sleeping_publisher::<WAKE_FENCE>, LOST_WAKE_UP);
}

/// A publisher waits for its first subscriber (`wait_for_subscribers`): counted in
/// `MEMBER_SLEEPERS`, it looks for a started subscription and sleeps on `MEMBER_FUTEX`, while
/// a subscriber claims a record, starts its subscription and announces it
/// (`announce_membership`). The waiter always ends up seeing it: no wake-up is lost.
fn check_waiting_for_a_subscriber<const DROP: u16>() {
    bounded(2).check(|| {
        let m = Model::<DROP>::new(3, 1);
        let joiner = {
            let m = m.clone();
            loom::thread::spawn(move || {
                let ring = m.ring();
                let record = claim_record(&ring, 7).unwrap();
                assert_eq!(take_budget(&ring, 1, 1), 1);
                subscribe_with(&ring, record, 1, false, 0, StartAt::Next);
                sleep::wake(&m.member_sleepers, &m.member_futex);
                m.member_futex.close();
            })
        };
        let ring = m.ring();
        loop {
            let found = sleep::sleep_unless(
                &m.member_futex,
                || {
                    m.member_sleepers.fetch_add(1, Relaxed);
                },
                || (started_subscribers(ring.records) >= 1).then_some(()),
                |seen| m.member_futex.wait(seen, Duration::MAX),
            );
            m.member_sleepers.unregister();
            if found.is_some() {
                break;
            }
        }
        joiner.join().unwrap();
    });
}

#[test]
fn model_a_publisher_waiting_for_a_subscriber_is_woken_by_its_join() {
    check_waiting_for_a_subscriber::<0>();
}

#[test]
fn model_catches_a_broken_step_of_the_membership_handshake() {
    type Check = fn();
    let twins: [(&str, Check); 4] = [
        (
            "no waiter fence",
            check_waiting_for_a_subscriber::<SLEEP_FENCE>,
        ),
        (
            "no announcer fence",
            check_waiting_for_a_subscriber::<WAKE_FENCE>,
        ),
        (
            "registering late",
            check_waiting_for_a_subscriber::<REGISTER_LATE>,
        ),
        ("no bump", check_waiting_for_a_subscriber::<NO_BUMP>),
    ];
    for (name, twin) in twins {
        let message = rejection(twin);
        assert!(
            message.contains(LOST_WAKE_UP),
            "{name}: rejected for another reason: {message}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Freeing a record whose subscriber is still at work

/// A reclaimer frees the record of a subscriber it judged dead although it is alive and
/// taking frame 0 (a misjudgement the protocol tolerates: that subscriber is told its
/// subscription is lost, or reads a frame whose hold was erased, which `Sample::is_intact`
/// reports). Whatever the interleaving, no hold outlives the free: the subscriber either sees
/// the mark and takes its hold back, or the reclaimer's clear comes after the hold. A hold
/// that survived could land in the record's next owner's entries.
fn check_free_during_hold<const DROP: u16>() {
    builder().check(|| {
        let m = Model::<DROP>::new(3, 1);
        let ring = m.ring();
        let record = record_with_one_hold(&ring);
        let start = subscribe(&ring, record, 1, false);
        let mut state = attach(&ring);
        publish_frames(&m, &mut state, 1);
        let reclaimer = {
            let m = m.clone();
            loom::thread::spawn(move || reclaim(&m.ring(), record, 7, 0x5EED, |_| false))
        };
        let mut sub = subscriber(record, start);
        let _ = receive(&ring, &mut sub, 0);
        assert!(reclaimer.join().unwrap().is_some());
        let rec = &ring.records[record];
        assert_eq!(rec.owner.load(Relaxed), 0);
        assert!(
            rec.held.iter().all(|h| h.load(Relaxed) == 0),
            "a hold outlived the free of its record"
        );
        assert_eq!(rec.config.load(Relaxed) & CONFIG_HELD_MASK, 0);
    });
}

#[test]
fn model_no_hold_outlives_the_free_of_its_record() {
    check_free_during_hold::<0>();
}

#[test]
fn model_catches_a_free_without_its_fence() {
    expect_failing_with(
        check_free_during_hold::<FREE_FENCE>,
        "a hold outlived the free of its record",
    );
}

/// The other side of the same pairing: a subscriber without its fence after the hold.
#[test]
fn model_catches_a_hold_that_outlives_a_free_without_the_hold_fence() {
    expect_failing_with(
        check_free_during_hold::<HOLD_FENCE>,
        "a hold outlived the free of its record",
    );
}

// ---------------------------------------------------------------------------------------------
// Several publishers: one lane (ring) each, one subscriber merging them

/// How the subscriber of the lane models registers before it sleeps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Registers {
    /// In every lane's `SLEEPERS`, as `Subscriber::count_sleeping` does.
    EveryLane,
    /// In lane 0's only: the twin that loom must reject.
    FirstLaneOnly,
}

/// Two publishers publish frames 0 and 1 each into a lane of their own while one lossless
/// subscriber of both lanes receives, merging by `next_publish_time` as `Subscriber::receive`
/// does, and sleeps on both lanes' futex words at once when neither has a frame
/// (`sleep_unless_any`, the futex words sharing a kernel as `futex_waitv` does). Each
/// publisher runs the waker's half on its own lane only. The subscriber gets every frame of
/// each lane exactly once, in that lane's order, and no wake-up is lost.
fn check_two_lanes<const DROP: u16>(registers: Registers) {
    bounded(1).check(move || {
        let lanes = {
            let first = Model::<DROP>::new(3, 1);
            let second = Model::another_lane(&first);
            [first, second]
        };
        let mut subs = Vec::new();
        let mut publishers = Vec::new();
        for m in &lanes {
            let ring = m.ring();
            let record = claim_record(&ring, 7).unwrap();
            assert_eq!(take_budget(&ring, 1, 1), 1);
            let start = subscribe(&ring, record, 1, true);
            subs.push(subscriber(record, start));
            let mut state = attach(&ring);
            let m = m.clone();
            publishers.push(loom::thread::spawn(move || {
                publish_and_wake(&m, &mut state, 2);
                m.futex.finish(2);
            }));
        }
        let mut got = [Vec::new(), Vec::new()];
        while subs.iter().any(|s| s.cursor < 2) {
            // The merge: the lane whose next frame was published first (ties: lane order).
            let mut order: Vec<(u64, usize)> = (0..2)
                .filter_map(|i| Some((next_publish_time(&lanes[i].ring(), subs[i].cursor)?, i)))
                .collect();
            order.sort_unstable();
            let taken = order
                .iter()
                .find_map(|&(_, i)| receive(&lanes[i].ring(), &mut subs[i], 0).map(|t| (i, t)));
            if let Some((i, taken)) = taken {
                let m = &lanes[i];
                sleep::wake(&m.pub_sleepers, &m.pub_futex);
                read_taken(m, taken);
                got[i].push(taken.number);
                release(&m.ring(), subs[i].record, 0, taken.slot);
                sleep::wake(&m.pub_sleepers, &m.pub_futex);
                continue;
            }
            let cursors = [subs[0].cursor, subs[1].cursor];
            let registered = match registers {
                Registers::EveryLane => &lanes[..],
                Registers::FirstLaneOnly => &lanes[..1],
            };
            sleep::sleep_unless_any(
                &[&lanes[0].futex, &lanes[1].futex],
                || {
                    for m in registered {
                        m.sleepers.fetch_add(1, Relaxed);
                    }
                },
                || {
                    (0..2)
                        .any(|i| newer_than(&lanes[i].ring(), cursors[i]))
                        .then_some(())
                },
                |seen| {
                    Futex::wait_any(
                        &[(&lanes[0].futex, seen[0]), (&lanes[1].futex, seen[1])],
                        Duration::MAX,
                    );
                },
            );
            for m in registered {
                m.sleepers.unregister();
            }
        }
        for p in publishers {
            p.join().unwrap();
        }
        assert_eq!(
            got,
            [vec![0, 1], vec![0, 1]],
            "each lane's frames, once, in order"
        );
    });
}

#[test]
fn model_a_subscriber_of_two_lanes_gets_every_frame_of_each_and_every_wake_up() {
    check_two_lanes::<0>(Registers::EveryLane);
}

#[test]
fn model_catches_a_subscriber_of_two_lanes_registered_in_one_only() {
    expect_failing_with(
        || check_two_lanes::<0>(Registers::FirstLaneOnly),
        LOST_WAKE_UP,
    );
}

#[test]
fn model_catches_a_subscriber_of_two_lanes_without_its_sleep_fence() {
    expect_failing_with(
        || check_two_lanes::<SLEEP_FENCE>(Registers::EveryLane),
        LOST_WAKE_UP,
    );
}

#[test]
fn model_catches_two_lanes_whose_publishers_wake_without_bumping() {
    expect_failing_with(
        || check_two_lanes::<NO_BUMP>(Registers::EveryLane),
        LOST_WAKE_UP,
    );
}

#[test]
fn model_catches_a_subscriber_of_two_lanes_that_reads_the_words_after_its_check() {
    expect_failing_with(
        || check_two_lanes::<READ_WORD_LATE>(Registers::EveryLane),
        LOST_WAKE_UP,
    );
}
