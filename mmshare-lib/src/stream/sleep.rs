//! The sleep handshake of a stream, as code generic over its words so that the loom model
//! checker runs exactly this order of steps (`model_tests`).
//!
//! Each side of a stream can wait for the other: a subscriber for the next frame (on
//! `SLEEPERS` and `FUTEX`, woken by a publish), the publisher for a free slot (on
//! `PUB_SLEEPERS` and `PUB_FUTEX`, woken by a released hold or a moved lossless cursor). Both
//! use the same two halves:
//!
//! ```text
//! waiter (`sleep_unless`)                      waker (`wake`, after its progress)
//!   SLEEPERS += 1          (register)            the progress (a publish, a release)
//!   fence(SeqCst)                                fence(SeqCst)
//!   seen = FUTEX.load(Relaxed); fence(Acquire)   if SLEEPERS != 0:
//!   check the condition: met, done                   FUTEX += 1 (Release)
//!   FUTEX_WAIT(FUTEX, seen)                          FUTEX_WAKE(FUTEX, all)
//!   SLEEPERS -= 1          (the caller)
//! ```
//!
//! No wake-up is lost. The two `SeqCst` fences come in one order or the other. If the
//! waker's comes first, the waiter's check, after its own fence, sees the progress. If the
//! waiter's comes first, the waker sees the count and bumps the word: a waiter that read
//! `seen` before the bump either finds the changed word in the kernel's check inside
//! `FUTEX_WAIT` (it does not sleep) or is already queued when `FUTEX_WAKE` comes; one that
//! read it after the bump sees the progress in its check (the bump is a Release store made
//! after the progress, read before an Acquire fence). Every step is needed, and each
//! omission is a model twin that loom rejects (a waiter asleep for good is a deadlock, since
//! the models' futex has no timeout):
//!
//! * without the waiter's fence, its check may miss the progress while the waker misses its
//!   count;
//! * without the Acquire fence after the read of `FUTEX`, a waiter that read the bump may
//!   still check with a stale view, and sleep on the bumped value;
//! * without the waker's fence (for a publish: the one that ends `protocol::publish`), the
//!   same from the other side;
//! * registering after the check leaves a window where the check missed the progress and the
//!   waker read a count of 0;
//! * reading `FUTEX` after the check lets the bump land between the two: the waiter sleeps on
//!   the bumped value, and the `FUTEX_WAKE` came before it slept;
//! * waking without the bump loses the race with a waiter between its read of `FUTEX` and its
//!   `FUTEX_WAIT`: the kernel's check sees an unchanged word and nobody wakes it.
//!
//! With nobody asleep a waker's cost is one fence and one load: no system call. In the real
//! code every sleep is also bounded, so a count that a scribbler zeroed costs latency, never a
//! waiter for good: a blocking wait sleeps 50 ms at most (the `backoff` schedule), and the
//! async waiter thread wakes every registered task once a second to check in full.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{self, Acquire, Relaxed, Release, SeqCst};
use std::time::Duration;

/// A shared `u32` word of the handshake (a sleeper count or a futex word), its fences, and the
/// kernel's sleep on it.
///
/// Implemented for `std`'s `AtomicU32` (mappings) and, in the model tests, for a loom word
/// whose sleep is a condition variable. The fence hooks and the step-order constants exist
/// only so that the model tests can remove or reorder one step at a time.
pub(crate) trait Futex: Sync {
    fn load(&self, order: Ordering) -> u32;
    fn fetch_add(&self, value: u32, order: Ordering) -> u32;
    fn fence(order: Ordering);

    /// Sleeps while the word holds `seen`, at most `at_most`; may return early for any
    /// reason (callers look again).
    fn wait(&self, seen: u32, at_most: Duration);

    /// Sleeps while every word of `words` holds its value, at most `at_most` (a wake on any
    /// one ends it); may return early for any reason (callers look again).
    fn wait_any(words: &[(&Self, u32)], at_most: Duration)
    where
        Self: Sized;

    /// Wakes every process sleeping on the word.
    fn wake_all(&self);

    /// The waiter's fence between registering and reading the futex word.
    #[inline]
    fn fence_after_register() {
        Self::fence(SeqCst);
    }

    /// The waiter's Acquire fence between reading the futex word and its last check.
    #[inline]
    fn fence_after_read() {
        Self::fence(Acquire);
    }

    /// The waker's fence between its progress and reading the sleeper count (callers whose
    /// progress already ends with one use [`wake_after_fence`]).
    #[inline]
    fn fence_before_count() {
        Self::fence(SeqCst);
    }

    /// Whether the waiter registers before its last check (false only in a model test).
    const REGISTER_FIRST: bool = true;

    /// Whether the waiter reads the futex word before its last check (false only in a model
    /// test).
    const READ_WORD_FIRST: bool = true;

    /// Whether the waker bumps the futex word before waking (false only in a model test).
    const BUMP: bool = true;
}

impl Futex for AtomicU32 {
    #[inline]
    fn load(&self, order: Ordering) -> u32 {
        AtomicU32::load(self, order)
    }
    #[inline]
    fn fetch_add(&self, value: u32, order: Ordering) -> u32 {
        AtomicU32::fetch_add(self, value, order)
    }
    #[inline]
    fn fence(order: Ordering) {
        std::sync::atomic::fence(order);
    }
    fn wait(&self, seen: u32, at_most: Duration) {
        crate::sys::futex_wait(self, seen, at_most);
    }
    fn wait_any(words: &[(&Self, u32)], at_most: Duration) {
        match words {
            [] => {}
            [(word, seen)] => word.wait(*seen, at_most),
            [(first, seen), ..] => {
                // `futex_waitv` needs Linux 5.16; before it, a short sleep on one word and a
                // look at all of them again.
                if crate::sys::futex_wait_any(words, at_most).is_err() {
                    first.wait(*seen, at_most.min(Duration::from_millis(1)));
                }
            }
        }
    }
    fn wake_all(&self) {
        crate::sys::futex_wake_all(self);
    }
}

/// The waiter's half: `register` counts it as a sleeper, then (after the fence and the read
/// of `word`) `check` looks for what it waits for; only if that finds nothing does `sleep`
/// get the value to sleep on (`word` is asleep while it still holds it). Returns what `check`
/// found. The caller takes itself out of the count once it stops waiting (at once for a
/// blocking wait; when the future resolves or is dropped for an async one, whose `sleep`
/// hands the value to the waiter thread).
pub(crate) fn sleep_unless<F: Futex, T>(
    word: &F,
    register: impl FnOnce(),
    check: impl FnOnce() -> Option<T>,
    sleep: impl FnOnce(u32),
) -> Option<T> {
    sleep_unless_any(&[word], register, check, |seen| sleep(seen[0]))
}

/// Most words one waiter sleeps on at once: a subscriber of a stream with several publishers
/// sleeps on every lane's futex word (`format::MAX_PUBLISHERS`).
pub(crate) const MAX_WORDS: usize = crate::format::MAX_PUBLISHERS as usize;

/// [`sleep_unless`] on several words at once (a subscriber of several lanes): `register`
/// counts the waiter in the sleeper count of every word's waker, and `sleep` gets the values
/// read from `words`, in order, to sleep until one of them changes. Each word's waker runs
/// [`wake`] on its own word alone, and the argument of the module docs holds for each pair
/// of a waker and its word: either that waker sees the count, or the check sees its
/// progress; and a bump after the read of its word ends the sleep on all of them.
///
/// # Panics
/// With more than [`MAX_WORDS`] words.
pub(crate) fn sleep_unless_any<F: Futex, T>(
    words: &[&F],
    register: impl FnOnce(),
    check: impl FnOnce() -> Option<T>,
    sleep: impl FnOnce(&[u32]),
) -> Option<T> {
    assert!(words.len() <= MAX_WORDS, "{} futex words", words.len());
    let mut seen = [0u32; MAX_WORDS];
    let seen = &mut seen[..words.len()];
    let read = |seen: &mut [u32]| {
        for (value, word) in seen.iter_mut().zip(words) {
            *value = word.load(Relaxed);
        }
    };
    let mut register = Some(register);
    if F::REGISTER_FIRST
        && let Some(register) = register.take()
    {
        register();
    }
    // Pairs with the waker's fence (`wake`): it sees our count, or we see its progress below.
    F::fence_after_register();
    if F::READ_WORD_FIRST {
        read(seen);
    }
    // Acquire: a bump we read comes with the progress made before it (the checks are Relaxed
    // loads, `protocol::newer_than` for one).
    F::fence_after_read();
    let found = check();
    if found.is_none() {
        if let Some(register) = register {
            register();
        }
        if !F::READ_WORD_FIRST {
            read(seen);
        }
        sleep(seen);
    }
    found
}

/// The waker's half, after its progress and a `SeqCst` fence: bumps `word` and wakes its
/// sleepers if `sleepers` counts any. No system call when nobody sleeps.
#[inline]
pub(crate) fn wake_after_fence<F: Futex>(sleepers: &F, word: &F) {
    if sleepers.load(Relaxed) != 0 {
        if F::BUMP {
            // What orders our progress before the bump, for a waiter that reads the bump and
            // fences Acquire, is the SeqCst fence before the count; Release says so again.
            word.fetch_add(1, Release);
        }
        word.wake_all();
    }
}

/// The waker's half, after its progress: fences, then as [`wake_after_fence`].
#[inline]
pub(crate) fn wake<F: Futex>(sleepers: &F, word: &F) {
    // Pairs with the waiter's fence after it registered (`sleep_unless`).
    F::fence_before_count();
    wake_after_fence(sleepers, word);
}
