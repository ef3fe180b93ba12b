//! The raw handle on a striped array: the protocol of the seqlock essay's section "Stripes",
//! run over the header's stripe table with identities, back-off, TORN and wake-ups.
//!
//! Reads and writes of a region take only the stripes the region touches; whole-array reads
//! and writes take them all. The array's `SEQUENCE` word is the generation: always even, 2
//! more for every write.

use std::ops::Range;
use std::sync::atomic::Ordering;

use super::raw::RawArray;
use super::seqlock::{end_write, read_validate};
use super::stripes::{
    Held, MAX_STRIPES, StripeLine, count_write, read_begin_stripes, read_validate_stripes,
    stripes_of,
};
use crate::backoff::Backoff;
use crate::error::{ReadError, WriteError};
use crate::format::{FLAG_TORN, now_ns, stripe_count};
use crate::sys::ProcessId;

/// Rounds a writer that finds a stripe of its region held steps back (hands back the stripes
/// it took and waits) before it holds what it has and waits: stepping back keeps a narrow
/// write elsewhere from holding up readers of the stripes it took; holding keeps wide writes
/// from starving behind narrow ones.
const STEP_BACK_ROUNDS: u32 = 4;

/// A striped write in progress: the stripes held, those the write replaces whole (bit `k` for
/// stripe `k`: a write that restores its region clears their TORN marks), and the write's
/// version.
#[derive(Debug)]
pub(crate) struct StripedHold {
    held: Held,
    covered: u32,
    version: u64,
}

impl StripedHold {
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Keeps only the stripes in `covered` among those the write replaces whole (a region
    /// with gaps covers fewer than its span).
    pub(crate) fn restrict_covered(&mut self, covered: u32) {
        self.covered &= covered;
    }
}

impl RawArray {
    /// The stripe table's lines in use.
    pub(crate) fn lines(&self) -> &[StripeLine] {
        // At most MAX_STRIPES: the header's check at open.
        self.mapping().stripe_lines(self.stripes() as usize)
    }

    /// Whether the array has a sequence per stripe (docs/FORMAT.md, "Striped arrays").
    pub fn is_striped(&self) -> bool {
        self.header().stripe_bytes != 0
    }

    /// How many stripes the array has: 1 for an array with one sequence.
    pub fn stripes(&self) -> u64 {
        stripe_count(self.header().data_len, self.header().stripe_bytes)
    }

    /// The stripes the bytes `start..end` of the data touch.
    pub(crate) fn stripes_of(&self, start: u64, end: u64) -> Range<usize> {
        stripes_of(start, end, self.header().stripe_bytes)
    }

    /// The stripes (bit `k` for stripe `k`) whose bytes `covered` says a write replaces.
    pub(crate) fn stripes_within(&self, covered: impl Fn(Range<u64>) -> bool) -> u32 {
        let sb = self.header().stripe_bytes;
        let len = self.header().data_len;
        (0..self.stripes())
            .filter(|&k| covered(k * sb..((k + 1) * sb).min(len)))
            .fold(0, |mask, k| mask | 1 << k)
    }

    /// Whether some stripe of the array is marked TORN right now.
    pub(crate) fn any_stripe_torn(&self) -> bool {
        // Relaxed: an instantaneous status; reads check TORN inside the protocol.
        self.lines()
            .iter()
            .any(|l| l.flags.load(Ordering::Relaxed) & FLAG_TORN != 0)
    }

    /// The first stripe holder recorded, if any.
    pub(crate) fn first_stripe_writer(&self) -> Option<ProcessId> {
        // Relaxed: advisory, for error messages.
        self.lines()
            .iter()
            .find_map(|l| ProcessId::from_word(l.writer.load(Ordering::Relaxed)))
    }

    /// The read protocol over the stripes of `bytes` (module docs). `attempt` gets the data
    /// pointer and the generation loaded first; the snapshot's version is that generation / 2:
    /// every write it counts is in the copy, and a copy of every stripe is exactly it.
    pub(crate) fn read_stripes<R>(
        &self,
        once: bool,
        bytes: Range<u64>,
        mut attempt: impl FnMut(*const u8, u64) -> R,
    ) -> Result<(R, crate::Snapshot), ReadError> {
        let lines = self.lines();
        let stripes = self.stripes_of(bytes.start, bytes.end);
        let whole = stripes.len() == lines.len();
        let generation = self.seq();
        let mut seen = [0u64; MAX_STRIPES];
        let mut backoff = Backoff::new(self.timeout());
        let mut retries = 0u64;
        loop {
            // The generation first, its low bit ignored: writers keep it even, and a scribbled
            // odd value must not stall every reader (`stable_sequence`).
            let (Ok(g) | Err(g)) = self.stable_sequence();
            let begun = read_begin_stripes(lines, stripes.clone(), &mut seen).map(|()| g);
            let g = match begun {
                Ok(g) => g,
                Err((_, odd)) => {
                    if !self.pause_on(&mut backoff, lines, stripes.clone()) {
                        return Err(self.read_timeout(&backoff, odd, retries));
                    }
                    continue;
                }
            };
            let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                attempt(self.data_ptr(), g)
            }));
            // Relaxed: written only by the holder of the stripe, so ordered like the data.
            let torn = stripes
                .clone()
                .any(|k| lines[k].flags.load(Ordering::Relaxed) & FLAG_TORN != 0);
            if (read_validate_stripes(lines, stripes.clone(), &seen)
                && (!whole || read_validate(generation, g)))
                || crate::fault::skip_recheck()
            {
                let value = value.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                self.count_retries(retries);
                if torn && !self.accepts_torn() {
                    return Err(ReadError::Torn { version: g / 2 });
                }
                return Ok((
                    value,
                    crate::Snapshot {
                        version: g / 2,
                        torn,
                    },
                ));
            }
            retries += 1;
            if once {
                self.count_retries(retries);
                return Err(ReadError::Conflict {
                    seen: g,
                    now: self.sequence(),
                });
            }
            if !self.pause_on(&mut backoff, lines, stripes.clone()) {
                return Err(self.read_timeout(&backoff, self.sequence(), retries));
            }
        }
    }

    /// One pause of a reader or writer that found a stripe of `stripes` held (or a copy that
    /// moved). The futex word is read only now, not on every attempt: every publish of any
    /// stripe writes its cache line, so reading it up front would cost a fast-path reader or
    /// writer a cache miss per writer elsewhere. The stripes are looked at again after that
    /// read, so a publish between the failure and the read is never slept through: if they
    /// are free now, try again at once. False once the time is up.
    fn pause_on(&self, backoff: &mut Backoff, lines: &[StripeLine], stripes: Range<usize>) -> bool {
        let futex_seen = self.futex_snapshot();
        // Relaxed: a hint; the protocol's own loads decide.
        if stripes
            .clone()
            .all(|k| lines[k].seq.load(Ordering::Relaxed) & 1 == 0)
        {
            std::hint::spin_loop();
            return backoff.time_left();
        }
        self.pause(backoff, futex_seen)
    }

    /// Takes the stripes of `bytes` for a write by `me` (ascending, each with its identity
    /// recorded), counts the write in the generation, and returns the holding.
    ///
    /// # Errors
    /// [`WriteError::Timeout`] when a stripe stays held (everything taken is handed back);
    /// [`WriteError::LostWriteSide`] when a recovery claimed a stripe's identity word as this
    /// writer took it (the others are handed back; the recovery owns that one).
    pub(crate) fn acquire_stripes(
        &self,
        bytes: Range<u64>,
        me: ProcessId,
    ) -> Result<StripedHold, WriteError> {
        let lines = self.lines();
        let me = me.to_word();
        let mut held = Held::new(self.stripes_of(bytes.start, bytes.end));
        let mut backoff = Backoff::new(self.timeout());
        let mut rounds = 0;
        while let Some(k) = held.next() {
            match held.take_next(lines) {
                Ok(()) => {
                    // At once, not after the last stripe: a writer that dies waiting for a
                    // later stripe is known on every stripe it holds.
                    let s = held.held().last().map_or(0, |(_, s)| s);
                    if let Err(found) = self.record_stripe_writer(&lines[k], s, me) {
                        self.hand_back(&held, me, 1 << k);
                        return Err(WriteError::LostWriteSide {
                            sequence: s.wrapping_add(1),
                            found,
                        });
                    }
                }
                Err(seen) if seen & 1 == 1 => {
                    let out_of_time = |backoff: &Backoff| WriteError::Timeout {
                        waited: backoff.elapsed(),
                        sequence: seen,
                        writer: ProcessId::from_word(lines[k].writer.load(Ordering::Relaxed)),
                    };
                    if rounds < STEP_BACK_ROUNDS && !held.is_empty() {
                        rounds += 1;
                        self.hand_back(&held, me, 0);
                        held = Held::new(held.stripes());
                        if !self.wait_for_stripe(&lines[k], &mut backoff) {
                            return Err(out_of_time(&backoff));
                        }
                        continue;
                    }
                    if !self.pause_on(&mut backoff, lines, k..k + 1) {
                        self.hand_back(&held, me, 0);
                        return Err(out_of_time(&backoff));
                    }
                }
                // Another writer took it from the same even value: try again at once.
                Err(_) => std::hint::spin_loop(),
            }
        }
        let version = count_write(self.seq()) / 2;
        let covered =
            self.stripes_within(|stripe| bytes.start <= stripe.start && stripe.end <= bytes.end);
        if crate::fault::early_publish() {
            // The broken writer of the fault tests: it hands its stripes back (identities,
            // then sequences) before writing anything.
            for (k, _) in held.held() {
                lines[k].writer.store(0, Ordering::Relaxed);
            }
            held.publish(lines, 0);
        }
        Ok(StripedHold {
            held,
            covered,
            version,
        })
    }

    /// Records `me` as the holder of stripe `line`, just taken from even `s`, as
    /// `record_writer` does for the array's sequence ([`RawArray::record_writer_on`]).
    fn record_stripe_writer(&self, line: &StripeLine, s: u64, me: u64) -> Result<(), u64> {
        self.record_writer_on(&line.writer, &line.seq, s, me)
    }

    /// The holder of stripe `line` at odd `s + 1` moves its identity word from `from` to
    /// `to`, waiting out a recovery's claim as [`RawArray::swap_identity_on`] says.
    fn swap_stripe_identity(
        &self,
        line: &StripeLine,
        s: u64,
        from: u64,
        to: u64,
    ) -> Result<(), u64> {
        self.swap_identity_on(&line.writer, &line.seq, s, from, to)
    }

    /// Waits (within the back-off's time) until stripe `line` is not held; false on timeout.
    fn wait_for_stripe(&self, line: &StripeLine, backoff: &mut Backoff) -> bool {
        loop {
            let futex_seen = self.futex_snapshot();
            // Relaxed: a hint; taking the stripe is a compare-and-swap.
            if line.seq.load(Ordering::Relaxed) & 1 == 0 {
                return true;
            }
            if !self.pause(backoff, futex_seen) {
                return false;
            }
        }
    }

    /// Hands back the stripes of `held` unwritten (a null publish: identity cleared, sequence
    /// on by 2, sleepers woken), all but those in `skip` and those whose identity a recovery
    /// took over, which belong to it.
    fn hand_back(&self, held: &Held, me: u64, skip: u32) {
        let lines = self.lines();
        for (k, s) in held.held() {
            if skip & (1 << k) == 0 {
                self.release_stripe(&lines[k], s, me);
            }
        }
        self.bump_stripe_futexes(held);
        self.wake();
    }

    /// Gives up the identity of stripe `line`, held at odd `s + 1` by `me`, and at once
    /// publishes `s + 2`; false if a recovery took the stripe over (it is the recovery's).
    /// Stripe by stripe, not every identity first: a stripe left odd with no identity while
    /// this writer waits on another would look like a writer that died unidentified.
    fn release_stripe(&self, line: &StripeLine, s: u64, me: u64) -> bool {
        self.release_stripe_then(line, s, me, || {})
    }

    /// [`RawArray::release_stripe`], running `between` after the identity is given up (so
    /// the stripe was still this writer's) and before the sequence is published.
    fn release_stripe_then(
        &self,
        line: &StripeLine,
        s: u64,
        me: u64,
        between: impl FnOnce(),
    ) -> bool {
        // Give the identity up first: a recovery claims this word before it takes the stripe
        // over, so exactly one of the two wins; if it did, the stripe is its.
        if self.swap_stripe_identity(line, s, me, 0).is_err() {
            return false;
        }
        between();
        end_write(line, s).is_ok()
    }

    fn bump_stripe_futexes(&self, held: &Held) {
        let lines = self.lines();
        for (k, _) in held.held() {
            // Release: a waiter that sees the new value sees the publish before it.
            lines[k].futex.fetch_add(1, Ordering::Release);
        }
    }

    /// Publishes a striped write: statistics, each stripe's identity cleared and TORN set or
    /// cleared, each stripe published, sleepers woken. Returns the write's version.
    ///
    /// `clear_torn`: the write replaced every byte of its region, which clears TORN on the
    /// stripes the region covers whole. `mark_torn`: the write is half done.
    ///
    /// # Errors
    /// [`WriteError::LostWriteSide`] when a recovery took one of the stripes over (this writer
    /// was judged dead): that stripe is left to it, the others are published, and then the
    /// stripes lost are taken again and published TORN, since this writer's stores may have
    /// landed on a version the recovery published.
    pub(crate) fn publish_stripes(
        &self,
        hold: &StripedHold,
        clear_torn: bool,
        mark_torn: bool,
        holder: u64,
    ) -> Result<u64, WriteError> {
        let lost = self.publish_stripes_once(hold, clear_torn, mark_torn, holder);
        if lost == 0 {
            return Ok(hold.version);
        }
        let first = lost.trailing_zeros() as usize;
        let found = self.lines()[first].seq.load(Ordering::Relaxed);
        self.mark_stripes_torn(lost);
        Err(WriteError::LostWriteSide {
            sequence: found,
            found,
        })
    }

    /// Publishes as [`RawArray::publish_stripes`] does, once: returns the stripes lost (bit
    /// `k` for stripe `k`) without taking them again.
    fn publish_stripes_once(
        &self,
        hold: &StripedHold,
        clear_torn: bool,
        mark_torn: bool,
        holder: u64,
    ) -> u32 {
        let lines = self.lines();
        let first = hold.held.held().next().map(|(k, _)| k);
        if crate::fault::early_publish() {
            // The broken writer of the fault tests published before writing.
            self.wake();
            return 0;
        }
        let mut lost = 0u32;
        for (k, s) in hold.held.held() {
            // The flags while this writer still holds the identity (a recovery claims the
            // identity before it touches them), as read-modify-writes, so that a recovery's
            // TORN that lands anyway is not overwritten by a stale value. Relaxed: published by
            // the stripe's Release compare-and-swap.
            if mark_torn {
                lines[k].flags.fetch_or(FLAG_TORN, Ordering::Relaxed);
            } else if clear_torn && hold.covered & (1 << k) != 0 {
                lines[k].flags.fetch_and(!FLAG_TORN, Ordering::Relaxed);
            }
            // The statistics go in the first held stripe's own line (plain stores, and no
            // cache line shared with writers of other stripes: the header's counters would be
            // one more line every parallel write fights for), once the identity swap has shown
            // the stripe is still this writer's, and before it is published.
            let count = !mark_torn && first == Some(k);
            if !self.release_stripe_then(&lines[k], s, holder, || {
                if count {
                    // Relaxed: statistics; only the stripe's holder writes them.
                    let line = &lines[k];
                    let writes = line.writes.load(Ordering::Relaxed);
                    line.writes.store(writes.wrapping_add(1), Ordering::Relaxed);
                    line.last_write_ns.store(now_ns(), Ordering::Relaxed);
                }
            }) {
                lost |= 1 << k;
            }
        }
        self.bump_stripe_futexes(&hold.held);
        self.wake();
        lost
    }

    /// Takes the stripes in `mask` again, one at a time, and publishes them TORN, so that
    /// stores this writer made after losing them cannot hide behind a version a later write
    /// declares consistent; a stripe that cannot be had keeps the recovery's own mark.
    fn mark_stripes_torn(&self, mask: u32) {
        let sb = self.header().stripe_bytes;
        let len = self.header().data_len;
        let me = ProcessId::current();
        for k in (0..MAX_STRIPES as u64).filter(|k| mask & (1 << k) != 0) {
            if let Ok(hold) = self.acquire_stripes(k * sb..((k + 1) * sb).min(len), me) {
                // Once: if a recovery takes it again, its own TORN mark stands.
                self.publish_stripes_once(&hold, false, true, me.to_word());
            }
        }
    }

    /// The end of a recovery of stripe `k`, taken over from odd `s` to `s + 2` by `me`: marks
    /// it TORN, counts the recovery in the generation while still holding it (a whole-array
    /// reader must not see the stripe move without the generation), publishes `s + 3` and
    /// wakes sleepers. Returns the version the recovery made.
    pub(super) fn publish_recovered_stripe(&self, k: usize, s: u64, me: u64) -> u64 {
        let line = &self.lines()[k];
        // Relaxed: published by the stripe's Release CAS below, after the recoverer's fence.
        line.flags.fetch_or(FLAG_TORN, Ordering::Relaxed);
        let version = count_write(self.seq()) / 2;
        let _ = line
            .writer
            .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
        // Only the claimant holds `s + 2`: this fails only if the word was scribbled on.
        let _ = end_write(line, s.wrapping_add(1));
        // Release: a waiter that sees the new value sees the publish before it.
        line.futex.fetch_add(1, Ordering::Release);
        self.wake();
        version
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::*;
    use crate::array::create::create_array_file;
    use crate::dtype::DType;
    use crate::format::ArraySpec;
    use crate::sys::Liveness;
    use crate::{Access, RawArray, Recovery};

    /// A striped array of 4 stripes of 256 rows of 64 bytes (16 KiB each), opened for writing.
    fn striped(dir: &std::path::Path) -> RawArray {
        let mut spec = ArraySpec::new("s", DType::U8, vec![1024, 64]);
        spec.stripes = 4;
        let (path, header) = create_array_file(dir, &spec).unwrap();
        assert_eq!(header.stripe_bytes, 256 * 64);
        let mut a = RawArray::open(path, Access::Write).unwrap();
        a.set_timeout(Duration::from_millis(300));
        a
    }

    const STRIPE: u64 = 256 * 64;

    /// Writes of regions count in the generation (always even), land where they were written,
    /// and read back by region and whole.
    #[test]
    fn regions_are_written_and_read_by_their_stripes() {
        let dir = tempfile::tempdir().unwrap();
        let a = striped(dir.path());
        assert!(a.is_striped());
        assert_eq!(a.stripes(), 4);
        assert_eq!(
            a.write_bytes(STRIPE - 3, &[7; 6]).unwrap(),
            1,
            "across stripes 0 and 1"
        );
        assert_eq!(a.write_bytes(3 * STRIPE, &[9; 10]).unwrap(), 2);
        assert_eq!(a.sequence(), 4, "the generation: even, 2 per write");
        assert_eq!(a.write_count(), 2);
        let mut got = [0u8; 8];
        let snap = a.read_bytes(STRIPE - 4, &mut got).unwrap();
        assert_eq!(got, [0, 7, 7, 7, 7, 7, 7, 0]);
        assert!(snap.version >= 1);
        let mut all = vec![0u8; 4 * STRIPE as usize];
        assert_eq!(
            a.read_bytes(0, &mut all).unwrap().version,
            2,
            "a whole read is exact"
        );
        assert_eq!(
            &all[3 * STRIPE as usize..3 * STRIPE as usize + 11],
            &[9; 10].iter().copied().chain([0]).collect::<Vec<_>>()[..]
        );
        assert!(
            a.lines()
                .iter()
                .all(|l| l.seq.load(Ordering::Relaxed) % 2 == 0)
        );
        assert!(
            a.lines()
                .iter()
                .all(|l| l.writer.load(Ordering::Relaxed) == 0)
        );
    }

    /// Writers of disjoint regions are inside their writes at the same time (with one
    /// sequence the second could not enter until the first published), and a reader of an
    /// untouched stripe reads while both hold theirs; a reader of a held stripe waits and
    /// times out.
    #[test]
    fn disjoint_writers_write_at_once_and_other_stripes_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(striped(dir.path()));
        let inside = Arc::new(Barrier::new(3));
        let done = Arc::new(Barrier::new(3));
        let writers: Vec<_> = [0u64, 2]
            .into_iter()
            .map(|k| {
                let (a, inside, done) = (a.clone(), inside.clone(), done.clone());
                std::thread::spawn(move || {
                    a.write_protocol_in(k * STRIPE..(k + 1) * STRIPE, true, |scope| {
                        inside.wait();
                        // SAFETY: inside the data area, in the stripe this write holds.
                        unsafe {
                            crate::array::seqlock::store_bytes(
                                scope.data_ptr(),
                                (k * STRIPE) as usize,
                                &[k as u8 + 1; 8],
                            )
                        };
                        done.wait();
                    })
                    .unwrap();
                })
            })
            .collect();
        inside.wait();
        let mut got = [0u8; 8];
        a.read_bytes(STRIPE, &mut got)
            .expect("stripe 1 is not held");
        a.read_bytes(3 * STRIPE + 100, &mut got)
            .expect("stripe 3 is not held");
        assert!(matches!(
            a.read_bytes(0, &mut got),
            Err(ReadError::Timeout { .. })
        ));
        assert!(
            matches!(
                a.read_bytes(STRIPE - 1, &mut got[..2]),
                Err(ReadError::Timeout { .. })
            ),
            "a range across a held stripe's boundary waits"
        );
        assert!(matches!(
            a.write_bytes(2 * STRIPE + 5, &[1]),
            Err(WriteError::Timeout { .. })
        ));
        done.wait();
        for w in writers {
            w.join().unwrap();
        }
        a.read_bytes(2 * STRIPE, &mut got).unwrap();
        assert_eq!(got, [3; 8]);
        assert_eq!(
            a.version(),
            2,
            "the timed-out write handed its stripe back uncounted"
        );
    }

    /// A write that panics marks only its stripes TORN: other stripes read, a whole read
    /// fails until a write covering the torn stripe whole repairs it.
    #[test]
    fn a_panicking_region_write_tears_only_its_stripes() {
        let dir = tempfile::tempdir().unwrap();
        let a = striped(dir.path());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.write_protocol_in(STRIPE + 10..STRIPE + 20, false, |_| panic!("boom"))
        }));
        assert!(r.is_err());
        assert!(a.is_torn());
        let mut got = [0u8; 16];
        a.read_bytes(0, &mut got).unwrap();
        a.read_bytes(2 * STRIPE, &mut got).unwrap();
        assert!(matches!(
            a.read_bytes(STRIPE, &mut got),
            Err(ReadError::Torn { .. })
        ));
        let mut all = vec![0u8; 4 * STRIPE as usize];
        assert!(matches!(
            a.read_bytes(0, &mut all),
            Err(ReadError::Torn { .. })
        ));
        // A write of part of the stripe does not repair it; one of all of it does.
        a.write_bytes(STRIPE, &[1; 100]).unwrap();
        assert!(a.is_torn());
        a.write_bytes(STRIPE - 8, &vec![2; STRIPE as usize + 16])
            .unwrap();
        assert!(!a.is_torn());
        a.read_bytes(0, &mut all).unwrap();
    }

    /// A stripe whose identity word a recovery claimed during the write belongs to that
    /// recovery: the writer leaves it held for it (no publish), publishes its other stripes,
    /// and reports the loss.
    #[test]
    fn a_stripe_claimed_by_a_recovery_is_left_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = striped(dir.path());
        let r = a.write_protocol_in(0..2 * STRIPE, true, |_| {
            // A recoverer's claim of stripe 1, as `recover` makes it (not yet taken over).
            a.lines()[1].writer.store(12345, Ordering::Relaxed);
        });
        assert!(matches!(r, Err(WriteError::LostWriteSide { .. })), "{r:?}");
        assert_eq!(
            a.lines()[0].seq.load(Ordering::Relaxed),
            2,
            "stripe 0 published"
        );
        assert_eq!(a.lines()[0].writer.load(Ordering::Relaxed), 0);
        assert_eq!(
            a.lines()[1].seq.load(Ordering::Relaxed),
            1,
            "stripe 1 left to the claim"
        );
        assert_eq!(a.lines()[1].writer.load(Ordering::Relaxed), 12345);
    }

    /// A claim made on a stale look and handed back (the recoverer found the stripe moved on)
    /// does not cost the writer its stripe: it waits for the word and publishes as usual.
    #[test]
    fn a_claim_handed_back_leaves_the_write_to_finish() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(striped(dir.path()));
        let me = ProcessId::current().to_word();
        let version = a
            .write_protocol_in(0..2 * STRIPE, true, |scope| {
                a.lines()[1].writer.store(12345, Ordering::Relaxed);
                let a = a.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(50));
                    a.lines()[1].writer.store(me, Ordering::Relaxed);
                });
                scope.version()
            })
            .unwrap();
        assert_eq!(version, 1);
        assert_eq!(
            a.lines()[1].seq.load(Ordering::Relaxed),
            2,
            "stripe 1 published"
        );
        assert_eq!(a.lines()[1].writer.load(Ordering::Relaxed), 0);
        assert!(!a.is_torn());
    }

    /// Regions in every position map to the stripes of their first and last byte, and reads
    /// of a region see exactly the bytes written there (against a plain copy).
    #[test]
    fn region_writes_and_reads_match_a_plain_copy() {
        let dir = tempfile::tempdir().unwrap();
        let a = striped(dir.path());
        let mut model = vec![0u8; 4 * STRIPE as usize];
        let mut x = 1u64;
        for i in 0..200u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let start = (x >> 33) % (4 * STRIPE);
            let len = ((x >> 13) % 3000).min(4 * STRIPE - start) as usize;
            let bytes = vec![i as u8; len];
            a.write_bytes(start, &bytes).unwrap();
            model[start as usize..start as usize + len].copy_from_slice(&bytes);
            let mut got = vec![0u8; len];
            a.read_bytes(start, &mut got).unwrap();
            assert_eq!(got, bytes);
        }
        let mut all = vec![0u8; model.len()];
        assert_eq!(a.read_bytes(0, &mut all).unwrap().version, 200);
        assert!(all == model);
    }

    /// A writer that is gone while holding stripes 1 and 2 (its holding made and forgotten).
    fn leave_held(a: &RawArray, bytes: Range<u64>, pid: u32) -> ProcessId {
        let ghost = ProcessId {
            pid,
            start_time: 42,
        };
        let _hold_left_behind = a.acquire_stripes(bytes, ghost).unwrap();
        ghost
    }

    /// Recovery takes over exactly the stripes a dead writer held, marks each TORN, counts
    /// each in the generation and leaves the rest of the array readable and writable; a
    /// whole write of a recovered stripe clears its mark.
    #[test]
    fn recovery_releases_only_the_dead_writers_stripes() {
        let dir = tempfile::tempdir().unwrap();
        let a = striped(dir.path());
        let ghost = leave_held(&a, STRIPE + 5..2 * STRIPE + 5, 7_000_001);
        assert_eq!(a.sequence(), 2, "the ghost's write was counted");
        assert!(a.write_in_progress());
        assert_eq!(a.stripe_state(1), Some((1, Some(ghost))));
        assert_eq!(a.stripe_state(0), Some((0, None)));
        assert_eq!(a.stripe_state(4), None);
        // A writer of stripe 3 meanwhile is not disturbed, and its liveness is asked.
        let alive = ProcessId::current();
        let judge = |w: ProcessId| {
            if w == ghost {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        };
        let r = a.write_protocol_in(3 * STRIPE..3 * STRIPE + 8, false, |_| {
            assert_eq!(
                a.recover_stripe_judged(3, judge),
                Ok(Recovery::WriterAlive(alive))
            );
            assert_eq!(a.recover_stripe_judged(0, judge), Ok(Recovery::NotHeld));
            let first = a.recover_stripe_judged(1, judge).unwrap();
            assert_eq!(
                first,
                Recovery::Recovered {
                    writer: ghost,
                    version: 3
                },
                "counted as a version (after the ghost's 1 and this write's 2)"
            );
            // The summary over all stripes: the last recovery made.
            assert_eq!(
                a.recover_dead_writer_judged(judge),
                Ok(Recovery::Recovered {
                    writer: ghost,
                    version: 4
                })
            );
        });
        assert!(r.is_ok(), "{r:?}");
        assert!(!a.write_in_progress());
        let torn: Vec<bool> = a
            .lines()
            .iter()
            .map(|l| l.flags.load(Ordering::Relaxed) & FLAG_TORN != 0)
            .collect();
        assert_eq!(torn, [false, true, true, false]);
        for k in 1..=2 {
            assert_eq!(a.lines()[k].seq.load(Ordering::Relaxed), 4, "s + 3 = 4");
            assert_eq!(a.lines()[k].writer.load(Ordering::Relaxed), 0);
        }
        let mut buf = [0u8; 8];
        assert!(a.read_bytes(0, &mut buf).is_ok(), "stripe 0 is whole");
        assert!(a.read_bytes(3 * STRIPE, &mut buf).is_ok(), "so is stripe 3");
        assert!(matches!(
            a.read_bytes(STRIPE, &mut buf),
            Err(ReadError::Torn { .. })
        ));
        assert!(a.is_torn());
        a.write_bytes(STRIPE, &vec![1; STRIPE as usize]).unwrap();
        assert!(a.read_bytes(STRIPE, &mut buf).is_ok(), "rewritten whole");
        assert!(
            a.read_bytes(2 * STRIPE, &mut buf).is_err(),
            "stripe 2 is not"
        );
        let peek = crate::internal::peek_array_state(a.file(), a.header()).unwrap();
        assert_eq!(peek, (a.version(), true));
        a.write_bytes(2 * STRIPE, &vec![1; STRIPE as usize])
            .unwrap();
        let peek = crate::internal::peek_array_state(a.file(), a.header()).unwrap();
        assert_eq!(peek, (a.version(), false));
    }

    /// A stripe held with no identity recorded is the caller's to time: recovery reports it
    /// with the stripe's own sequence, and the unidentified takeover acts only on exactly that
    /// sequence, still unidentified.
    #[test]
    fn an_unidentified_stripe_is_taken_over_only_as_seen() {
        let dir = tempfile::tempdir().unwrap();
        let a = striped(dir.path());
        a.write_bytes(2 * STRIPE, &[1]).unwrap();
        // A writer that died between its CAS and recording itself.
        a.lines()[2].seq.store(3, Ordering::Relaxed);
        assert_eq!(
            a.recover_dead_writer_judged(|_| Liveness::Dead),
            Ok(Recovery::WriterUnknown { sequence: 3 })
        );
        assert_eq!(a.recover_unidentified_writer(3), Ok(Recovery::NotHeld));
        assert_eq!(a.recover_unidentified_stripe(1, 3), Ok(Recovery::NotHeld));
        assert_eq!(a.recover_unidentified_stripe(2, 5), Ok(Recovery::NotHeld));
        assert_eq!(a.recover_unidentified_stripe(9, 3), Ok(Recovery::NotHeld));
        let r = a.recover_unidentified_stripe(2, 3).unwrap();
        assert!(matches!(r, Recovery::Recovered { version: 2, .. }), "{r:?}");
        assert_eq!(a.lines()[2].seq.load(Ordering::Relaxed), 6);
        assert!(a.is_torn());
        // Recorded after all: left to the judgement of its liveness.
        a.lines()[0].seq.store(1, Ordering::Relaxed);
        a.lines()[0]
            .writer
            .store(ProcessId::current().to_word(), Ordering::Relaxed);
        assert_eq!(
            a.recover_unidentified_stripe(0, 1),
            Ok(Recovery::WriterUnknown { sequence: 1 })
        );
    }

    /// A writer whose stripe is recovered under it (it was judged dead while it wrote) loses
    /// that stripe at publish, publishes the others, and then marks the lost one TORN itself:
    /// its late stores must not pass for a version a later write declares consistent.
    #[test]
    fn a_writer_recovered_under_loses_its_stripe_and_marks_it_torn() {
        let dir = tempfile::tempdir().unwrap();
        let a = striped(dir.path());
        let before = a.sequence();
        // Under an identity of its own: this process's registration would prove it alive.
        let ghost = ProcessId {
            pid: 7_000_002,
            start_time: 42,
        };
        let hold = a.acquire_stripes(0..2 * STRIPE, ghost).unwrap();
        let r = a.recover_stripe_judged(1, |_| Liveness::Dead).unwrap();
        assert!(matches!(r, Recovery::Recovered { .. }), "{r:?}");
        let r = a.publish_stripes(&hold, true, false, ghost.to_word());
        assert!(matches!(r, Err(WriteError::LostWriteSide { .. })), "{r:?}");
        let line = |k: usize| &a.lines()[k];
        assert_eq!(line(0).flags.load(Ordering::Relaxed) & FLAG_TORN, 0);
        assert_ne!(line(1).flags.load(Ordering::Relaxed) & FLAG_TORN, 0);
        assert_eq!(
            line(1).seq.load(Ordering::Relaxed),
            6,
            "recovered (4), then taken again and published TORN (6)"
        );
        assert!(!a.write_in_progress());
        assert_eq!(
            a.sequence(),
            before + 6,
            "the write, the recovery and the retake"
        );
    }

    /// A generation scribbled odd (writers keep it even) stalls no reader or waiter: its low
    /// bit is ignored, and writes go on counting in it.
    #[test]
    fn a_scribbled_odd_generation_stalls_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let a = striped(dir.path());
        a.write_bytes(0, &[1]).unwrap();
        a.seq().store(7, Ordering::Relaxed);
        let mut got = [0u8; 4];
        assert_eq!(a.read_bytes(0, &mut got).unwrap().version, 3);
        let mut all = vec![0u8; 4 * STRIPE as usize];
        assert_eq!(a.read_bytes(0, &mut all).unwrap().version, 3);
        assert_eq!(a.wait_for_version(2, Duration::from_millis(10)), Ok(3));
        assert_eq!(a.write_bytes(STRIPE, &[2]).unwrap(), 4);
        assert_eq!(a.wait_for_version(3, Duration::from_millis(10)), Ok(4));
    }
}
