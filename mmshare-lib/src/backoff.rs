//! How a reader or writer waits for the other side: spin, then yield, then sleep on the futex.
//!
//! A store is seen by a process spinning on another core as soon as the cache line moves (tens
//! of nanoseconds), but waking a *sleeping* process costs about 20 µs on the reference machine
//! (docs/BENCHMARKS.md: the round-trip floor of the daemon benchmark). So waiting starts by
//! spinning for a short while (a stream of frequent updates is then seen at spin latency), then
//! yields, then sleeps on the shared futex word so that a quiet array costs no CPU. Every wait
//! has a deadline.
//!
//! Spinning only helps when the process waited for runs on another CPU: on the waiter's own
//! CPU it cannot run while the waiter spins, and every spin delays the very store it waits for
//! by the whole spin. A waiter that knows the other side last ran on its own CPU (a stream's
//! CPU hints, module `stream::files`) skips the spin and yields from the start
//! ([`Backoff::without_spin`]), which hands the CPU over at once.
//!
//! A stream publisher waiting for a lossless subscriber to free a slot yields for longer
//! ([`Backoff::patient`]), unless its own recent waits were long ([`WaitHistory`]).

use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

use crate::sys;

/// Spin this long before yielding.
const SPIN_FOR: Duration = Duration::from_micros(20);
/// Then yield until this much time has passed, then sleep.
const YIELD_UNTIL: Duration = Duration::from_micros(100);
/// The same for a [`Backoff::patient`] wait.
const PATIENT_YIELD_UNTIL: Duration = Duration::from_millis(2);
/// A waiter whose recent waits averaged at least this long takes the usual schedule even where
/// it would be patient ([`WaitHistory`]).
const LONG_WAIT: Duration = Duration::from_micros(250);
/// One wait counts as at most this long in a [`WaitHistory`]: a single wait of seconds (a
/// subscriber that started late, this process stopped for a while) cannot make the history
/// long by itself (three waits of 1 ms or more in a row do), and a dozen short waits bring it
/// back from any history.
const SAMPLE_CAP: Duration = Duration::from_millis(1);
/// Longest single futex sleep: waiters re-check their condition at least this often, which
/// bounds the cost of any wake-up that could be missed (for example a writer in a process that
/// died after publishing but before waking).
const MAX_SLEEP: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub(crate) struct Backoff {
    started: Option<Instant>,
    timeout: Duration,
    yield_until: Duration,
    spin_for: Duration,
}

impl Backoff {
    pub(crate) fn new(timeout: Duration) -> Backoff {
        Backoff {
            started: None,
            timeout,
            yield_until: YIELD_UNTIL,
            spin_for: SPIN_FOR,
        }
    }

    /// Drops the spin phase (from now on, if the wait has started): the next steps yield, then
    /// sleep, on the usual schedule. For a waiter that shares its CPU with the process it
    /// waits for.
    pub(crate) fn without_spin(&mut self) {
        self.spin_for = Duration::ZERO;
    }

    /// A wait that is expected to end soon because the other side is at work right now (a
    /// stream publisher waiting for a lossless subscriber that is reading a frame): it yields
    /// for up to 2 ms before it sleeps. Sleeping there would add a wake-up (tens of µs) to
    /// every frame of a pipeline whose frames take longer than 100 µs to read (1 MiB frames to
    /// one lossless consumer: about 4 000 frames/s with the 100 µs schedule, 11 600 with this
    /// one, in one quick run of `./scripts/bench-peers --quick`, when the publisher was always
    /// patient). A waiter whose waits have lately been long takes the usual schedule instead
    /// ([`Backoff::patient_unless`]).
    pub(crate) fn patient(timeout: Duration) -> Backoff {
        Backoff {
            yield_until: PATIENT_YIELD_UNTIL,
            ..Backoff::new(timeout)
        }
    }

    /// The schedule for a wait that would be [`Backoff::patient`], given how long the same
    /// waiter's recent waits lasted: patient while they were short, the usual one once they
    /// are long ([`WaitHistory::long`]).
    pub(crate) fn patient_unless(history: &WaitHistory, timeout: Duration) -> Backoff {
        if history.long() {
            Backoff::new(timeout)
        } else {
            Backoff::patient(timeout)
        }
    }

    /// Whether this wait yields for longer than the usual schedule's 100 µs before it sleeps.
    #[cfg(test)]
    pub(crate) fn is_patient(&self) -> bool {
        self.yield_until > YIELD_UNTIL
    }

    /// Starts the clock if it has not started, and tells whether time is left: for a caller
    /// that found its condition met again and retries at once, without a pause.
    pub(crate) fn time_left(&mut self) -> bool {
        self.started.get_or_insert_with(Instant::now).elapsed() < self.timeout
    }

    /// Time since the first pause (zero before it).
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Waits a little for `futex` to move away from `seen`. Returns `false` once the deadline
    /// has passed (the caller reports its timeout error), `true` to try again.
    ///
    /// With `sleepers` (an array's control file), the sleep is registered there first, so
    /// that the writer knows to wake us (module `array::control`).
    pub(crate) fn pause(
        &mut self,
        futex: &AtomicU32,
        seen: u32,
        sleepers: Option<&crate::array::control::ArrayControl>,
    ) -> bool {
        match self.step() {
            Step::TimedOut => false,
            Step::Sleep(at_most) => {
                match sleepers {
                    Some(control) => {
                        control.sleep_begin();
                        // Pairs with the writer's fence between bumping the futex word and
                        // reading the count: it sees us, or the kernel's check of the futex
                        // word inside FUTEX_WAIT (after this fence) sees its bump.
                        fence(Ordering::SeqCst);
                        sys::futex_wait(futex, seen, at_most);
                        control.sleep_end();
                    }
                    None => sys::futex_wait(futex, seen, at_most),
                }
                true
            }
            Step::Spun => true,
        }
    }

    /// One step of the schedule: spins or yields itself, or tells the caller to sleep (for at
    /// most the duration given), or that the deadline has passed. For waiters that must
    /// register themselves as sleepers around the sleep (streams).
    pub(crate) fn step(&mut self) -> Step {
        let started = *self.started.get_or_insert_with(Instant::now);
        let elapsed = started.elapsed();
        if elapsed >= self.timeout {
            return Step::TimedOut;
        }
        if elapsed < self.spin_for {
            #[cfg(test)]
            SPINS.with(|n| n.set(n.get() + 1));
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        } else if elapsed < self.yield_until {
            std::thread::yield_now();
        } else {
            #[cfg(test)]
            if let Some(hook) = BEFORE_SLEEP.with(|h| h.borrow_mut().take()) {
                hook();
            }
            return Step::Sleep((self.timeout - elapsed).min(MAX_SLEEP));
        }
        Step::Spun
    }
}

/// How long one waiter's recent waits lasted (a moving average over about the last eight, each
/// counted as at most 1 ms), for a waiter that would be patient: a stream publisher waiting for
/// a lossless subscriber to free a slot.
///
/// Yielding through a wait saves the wake-up a sleep would cost (tens of µs, and the waker's
/// `FUTEX_WAKE`), and costs the CPU time of the whole wait whenever another thread wants that
/// CPU. For waits of a few dozen µs to a couple of hundred (a subscriber reading a frame of a
/// megabyte) the saving is worth it. A subscriber that takes most of a millisecond per frame
/// (one paced by a network link, like an exporting bridge; or one reading frames of several
/// megabytes) holds the publisher back that long each time: yielding through that on a machine
/// with fewer CPUs than busy processes takes CPU time from the very processes the publisher
/// waits for, while the wake-up it saves is a small part of the wait. Once the recent waits
/// average [`LONG_WAIT`] or more, the waiter takes the usual schedule (a sleep after 100 µs);
/// once they are short again, the patient one. A publisher that waits for a slot is ahead of
/// its subscribers, which have the rest of the ring to read meanwhile, so its later wake-up
/// costs them nothing unless the ring is so small that they drain it first.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WaitHistory {
    /// The moving average, in µs.
    average_us: u32,
}

impl WaitHistory {
    /// Notes a wait that lasted `waited` (one that ended with what it waited for), counted as
    /// at most [`SAMPLE_CAP`].
    pub(crate) fn record(&mut self, waited: Duration) {
        // At most 1 000 (µs), so neither conversion can fail.
        let sample = i64::try_from(waited.min(SAMPLE_CAP).as_micros()).unwrap_or(1_000);
        let average = i64::from(self.average_us);
        // An eighth of the way to the new sample: about the last eight waits count. Between
        // the old average and the sample, so within 0..=1000.
        let moved = average + (sample - average) / 8;
        self.average_us = u32::try_from(moved).unwrap_or(0);
    }

    /// Whether the recent waits averaged [`LONG_WAIT`] or more.
    pub(crate) fn long(&self) -> bool {
        u128::from(self.average_us) >= LONG_WAIT.as_micros()
    }
}

/// What [`Backoff::step`] did or asks for.
#[derive(Debug)]
pub(crate) enum Step {
    /// It spun or yielded; check again.
    Spun,
    /// Sleep on the futex for at most this long, then check again.
    Sleep(Duration),
    /// The deadline has passed.
    TimedOut,
}

#[cfg(test)]
thread_local! {
    /// Test counter: the spin steps this thread has taken.
    pub(crate) static SPINS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };

    /// Test hook: runs once, in the waiting thread, just before its next futex sleep, that is
    /// inside the window between a waiter's last check and its sleep.
    pub(crate) static BEFORE_SLEEP: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        std::cell::RefCell::new(None);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sleep never asks for more than what is left of the timeout (nor more than the
    /// longest sleep), so a wait ends at its deadline, not up to a sleep later. Judged from
    /// the durations the schedule asks for, not from a clock.
    #[test]
    fn a_sleep_never_outlasts_the_time_left() {
        let timeout = Duration::from_millis(20);
        let mut backoff = Backoff::new(timeout);
        let mut sleeps = 0;
        loop {
            // Read before the step: the step's own reading is later, so what it may ask for is
            // at most this much.
            let left = timeout.saturating_sub(backoff.elapsed());
            match backoff.step() {
                Step::Spun => {}
                Step::Sleep(d) => {
                    assert!(
                        d <= left && d <= MAX_SLEEP,
                        "asked to sleep {d:?} with {left:?} left"
                    );
                    sleeps += 1;
                    std::thread::sleep(d);
                }
                Step::TimedOut => break,
            }
        }
        assert!(sleeps > 0, "the schedule never got to sleeping");
    }

    /// The history turns long after three long waits in a row, not after one however long,
    /// and short again within a dozen short ones.
    #[test]
    fn a_wait_history_follows_the_recent_waits() {
        let mut history = WaitHistory::default();
        assert!(!history.long(), "a new waiter is patient");
        assert!(Backoff::patient_unless(&history, Duration::from_secs(1)).is_patient());
        history.record(Duration::MAX);
        assert!(
            !history.long(),
            "one wait, however long, turned the history"
        );
        history.record(Duration::from_millis(1));
        assert!(!history.long(), "two long waits turned the history");
        history.record(Duration::from_millis(1));
        assert!(
            history.long(),
            "three waits of 1 ms or more left the history short"
        );
        assert!(!Backoff::patient_unless(&history, Duration::from_secs(1)).is_patient());
        for _ in 0..100 {
            history.record(Duration::from_secs(10));
        }
        let mut short_waits = 0;
        while history.long() {
            history.record(Duration::from_micros(5));
            short_waits += 1;
        }
        assert!(
            (8..=12).contains(&short_waits),
            "{short_waits} short waits to forget the long ones"
        );
        // Waits just under the bound keep an average under it; over it, above.
        let mut near = WaitHistory::default();
        for _ in 0..100 {
            near.record(LONG_WAIT - Duration::from_micros(1));
        }
        assert!(!near.long(), "waits under the bound made the history long");
        for _ in 0..100 {
            near.record(LONG_WAIT + Duration::from_micros(10));
        }
        assert!(near.long(), "waits over the bound left the history short");
    }
}
