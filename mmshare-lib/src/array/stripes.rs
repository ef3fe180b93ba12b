//! The protocol of a striped array, in code: one seqlock per stripe (a byte range of the data
//! area) plus the generation word that counts every write. The essay that justifies it is the
//! seqlock module's section "Stripes"; this module is its executable form, generic over
//! [`SeqWord`] so that the loom models below run the same code the library runs.
//!
//! What is here, and what is not:
//! - the mapping of a byte range to the stripes it touches ([`stripes_of`]);
//! - a writer's holding of a run of stripes, taken in ascending order and handed back by
//!   publishing each one ([`Held`]);
//! - a reader's begin and validate over a run of stripes;
//! - the generation: counted while the stripes are held, checked by whole-array readers.
//!
//! Identities, back-off, sleeping, TORN and the statistics are the caller's (module `raw`), as
//! for the single seqlock.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::seqlock::{SeqWord, end_write, read_begin, read_validate, try_begin_write};
use crate::format::offsets;

/// Most stripes an array may have: the header's stripe table has 32 lines.
pub(crate) const MAX_STRIPES: usize = crate::format::MAX_STRIPES as usize;

/// One stripe's line of the header's stripe table (docs/FORMAT.md, "Striped arrays"), as
/// the mapping holds it: only ever accessed through its atomics.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct StripeLine {
    /// The stripe's sequence: even = stable, odd = held.
    pub(crate) seq: AtomicU64,
    /// The holder's identity word, 0 when none.
    pub(crate) writer: AtomicU64,
    /// Bumped after each publish of the stripe.
    pub(crate) futex: AtomicU32,
    /// Bit 0: TORN.
    pub(crate) flags: AtomicU32,
    /// Completed writes whose first stripe this is (a statistic; written by the holder only).
    pub(crate) writes: AtomicU64,
    /// When the last of those completed, ns since the Unix epoch.
    pub(crate) last_write_ns: AtomicU64,
    _reserved: [AtomicU64; 3],
}

const _: () = assert!(size_of::<StripeLine>() == offsets::STRIPE_LINE);
const _: () = assert!(std::mem::offset_of!(StripeLine, seq) == offsets::STRIPE_SEQ);
const _: () = assert!(std::mem::offset_of!(StripeLine, writer) == offsets::STRIPE_WRITER);
const _: () = assert!(std::mem::offset_of!(StripeLine, futex) == offsets::STRIPE_FUTEX);
const _: () = assert!(std::mem::offset_of!(StripeLine, flags) == offsets::STRIPE_FLAGS);
const _: () = assert!(std::mem::offset_of!(StripeLine, writes) == offsets::STRIPE_WRITES);
const _: () =
    assert!(std::mem::offset_of!(StripeLine, last_write_ns) == offsets::STRIPE_LAST_WRITE_NS);

/// A stripe line is the seqlock word of its stripe.
impl SeqWord for StripeLine {
    #[inline]
    fn load(&self, order: Ordering) -> u64 {
        self.seq.load(order)
    }
    #[inline]
    fn compare_exchange(&self, c: u64, n: u64, s: Ordering, f: Ordering) -> Result<u64, u64> {
        self.seq.compare_exchange(c, n, s, f)
    }
    #[inline]
    fn fence(order: Ordering) {
        std::sync::atomic::fence(order);
    }
    #[inline]
    fn fetch_add(&self, v: u64, order: Ordering) -> u64 {
        self.seq.fetch_add(v, order)
    }
}

/// The stripes that the bytes `start..end` of the data area touch, for stripes of
/// `stripe_bytes` bytes (a non-zero multiple of 8).
///
/// The rule, stated for clients in other languages: a range touches the 8-byte words
/// `[floor8(start), ceil8(end))`, and the stripes of those words. Because stripe boundaries are
/// multiples of 8, no word lies in two stripes, so that is `start / stripe_bytes ..=
/// (end - 1) / stripe_bytes`. An empty range touches no stripe.
pub(crate) fn stripes_of(start: u64, end: u64, stripe_bytes: u64) -> Range<usize> {
    debug_assert!(stripe_bytes > 0 && stripe_bytes.is_multiple_of(8));
    // The header check bounds the stripe count by MAX_STRIPES, so these fit in usize.
    let first = (start / stripe_bytes) as usize;
    if end <= start {
        return first..first;
    }
    first..((end - 1) / stripe_bytes) as usize + 1
}

/// The stripes a writer holds (or is taking): a run `first..first + n`, taken one at a time
/// in ascending order, with the even sequence each one had.
///
/// Ascending order is what prevents deadlock: in any chain of writers each waiting for a
/// stripe another holds, the holder of the highest stripe waits for nobody.
#[derive(Debug)]
pub(crate) struct Held {
    stripes: Range<usize>,
    /// How many of `stripes` are held: always a prefix (in taking order).
    count: usize,
    /// `taken[i]`: the even sequence stripe `stripes.start + i` had when it was taken.
    taken: [u64; MAX_STRIPES],
    /// Take in descending order: the deadlock the models must find (tests only).
    #[cfg(test)]
    descending: bool,
}

impl Held {
    /// Nothing held yet of `stripes` (at most [`MAX_STRIPES`] of them).
    pub(crate) fn new(stripes: Range<usize>) -> Held {
        assert!(
            stripes.len() <= MAX_STRIPES,
            "{stripes:?}: too many stripes"
        );
        Held {
            stripes,
            count: 0,
            taken: [0; MAX_STRIPES],
            #[cfg(test)]
            descending: false,
        }
    }

    /// The stripes wanted.
    pub(crate) fn stripes(&self) -> Range<usize> {
        self.stripes.clone()
    }

    /// The `i`th stripe in taking order.
    fn nth(&self, i: usize) -> usize {
        #[cfg(test)]
        if self.descending {
            return self.stripes.end - 1 - i;
        }
        self.stripes.start + i
    }

    /// The stripe to take next, or `None` once all are held.
    pub(crate) fn next(&self) -> Option<usize> {
        (self.count < self.stripes.len()).then(|| self.nth(self.count))
    }

    /// Whether every stripe wanted is held.
    #[cfg(test)]
    pub(crate) fn is_complete(&self) -> bool {
        self.count == self.stripes.len()
    }

    /// Whether no stripe is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The stripes held, each with the even sequence it had when it was taken.
    pub(crate) fn held(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        (0..self.count).map(|i| {
            let k = self.nth(i);
            (k, self.taken[k - self.stripes.start])
        })
    }

    /// Tries to take the next stripe of `seqs` (the stripe sequence words, indexed by stripe).
    ///
    /// `Err(seen)`: the stripe is held by someone (`seen` odd), or another writer took it from
    /// the same even value first (retry at once). Nothing held so far is given back: the
    /// caller decides between waiting while holding and stepping back ([`Held::publish`]).
    ///
    /// # Panics
    /// If every stripe is already held.
    pub(crate) fn take_next<W: SeqWord>(&mut self, seqs: &[W]) -> Result<(), u64> {
        let k = self.next().expect("take_next with every stripe held");
        // The single seqlock's take, per stripe: the Acquire CAS builds on the stripe's last
        // publish, and the Release fence after it keeps this write's data stores after it.
        let s = try_begin_write(&seqs[k])?;
        self.taken[k - self.stripes.start] = s;
        self.count += 1;
        Ok(())
    }

    /// Publishes every stripe held but those in `skip` (bit `k` for stripe `k`: stripes whose
    /// identity a recovery claimed, which it now owns), `s + 1` to `s + 2` with a Release
    /// compare-and-swap each. The holding is spent: the caller drops it.
    ///
    /// The same call hands stripes back unwritten (a *null publish*: after a timeout, or a
    /// writer stepping back): sequences only ever grow, and readers of a stripe published
    /// with no change retry once.
    ///
    /// Returns the stripes whose publish failed because a recovery had taken them over (bit
    /// `k` for stripe `k`): those are left as the recovery left them. The others are
    /// published regardless: a stripe lost to a recovery must not keep the rest held.
    pub(crate) fn publish<W: SeqWord>(&self, seqs: &[W], skip: u32) -> u32 {
        let mut lost = skip;
        for (k, s) in self.held() {
            if skip & (1 << k) == 0 && end_write(&seqs[k], s).is_err() {
                lost |= 1 << k;
            }
        }
        lost
    }
}

/// Reader, step 1 over `stripes`: each stripe's even sequence into `seen` (indexed by stripe),
/// or `Err((k, odd))` for the first stripe a writer holds.
pub(crate) fn read_begin_stripes<W: SeqWord>(
    seqs: &[W],
    stripes: Range<usize>,
    seen: &mut [u64; MAX_STRIPES],
) -> Result<(), (usize, u64)> {
    for k in stripes {
        // Relaxed load + Acquire fence per stripe: pairs with the Release CAS that published
        // the value, so the copy sees that write's data.
        seen[k] = read_begin(&seqs[k]).map_err(|odd| (k, odd))?;
    }
    Ok(())
}

/// Reader, last step over `stripes`: true if no stripe changed since
/// [`read_begin_stripes`], so the copy made in between is consistent.
///
/// Every stripe the copy touched must be re-checked: a store the copy saw was made by a
/// writer holding the stripe it lies in, after that writer's Release fence; the Acquire fence
/// in `read_validate` synchronizes with it, so the re-check of *that* stripe sees the odd
/// sequence or a later one. A stripe left out is a torn copy accepted.
pub(crate) fn read_validate_stripes<W: SeqWord>(
    seqs: &[W],
    stripes: Range<usize>,
    seen: &[u64; MAX_STRIPES],
) -> bool {
    stripes
        .into_iter()
        .all(|k| read_validate(&seqs[k], seen[k]))
}

/// A writer counts its write in the generation word: adds 2 while it holds its stripes, once
/// it holds all of them and before it publishes any.
///
/// Counting while holding is what makes a reader's generation a lower bound: a reader whose
/// Acquire load of the generation sees this count also sees the stripe taken (odd) or
/// published, never the data from before it.
/// Returns the new generation: the write's version is half of it.
pub(crate) fn count_write<W: SeqWord>(generation: &W) -> u64 {
    // Release: the stripe CASes before it are visible to whoever acquires the new value. (The
    // Release fence after the last take already orders them before this store, so Relaxed
    // would do as well: a mutation to Relaxed survives the models for that reason.)
    generation.fetch_add(2, Ordering::Release).wrapping_add(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// The stripes of a range are those of its first and last byte; boundaries, empty ranges
    /// and unaligned ends included.
    #[test]
    fn ranges_map_to_the_stripes_of_their_words() {
        let b = 64;
        assert_eq!(stripes_of(0, 0, b), 0..0);
        assert_eq!(stripes_of(64, 64, b), 1..1);
        assert_eq!(stripes_of(0, 1, b), 0..1);
        assert_eq!(stripes_of(0, 64, b), 0..1);
        assert_eq!(stripes_of(0, 65, b), 0..2);
        assert_eq!(stripes_of(63, 64, b), 0..1);
        assert_eq!(stripes_of(63, 65, b), 0..2);
        assert_eq!(stripes_of(64, 128, b), 1..2);
        assert_eq!(stripes_of(127, 129, b), 1..3);
        assert_eq!(stripes_of(5, 300, b), 0..5);
        // A word never straddles a boundary: the stripes of the words equal those of the bytes.
        for start in 0..200u64 {
            for end in start + 1..260 {
                let words = stripes_of(start & !7, end.div_ceil(8) * 8, b);
                assert_eq!(stripes_of(start, end, b), words, "{start}..{end}");
            }
        }
    }

    /// Stripes are taken in ascending order, each from its even value; a held one stops the
    /// taking without giving back the others; publishing moves each on by 2.
    #[test]
    fn holding_takes_ascending_and_publishes_each() {
        let seqs: Vec<AtomicU64> = [0, 4, 1, 8].into_iter().map(AtomicU64::new).collect();
        let mut held = Held::new(0..2);
        assert_eq!(held.next(), Some(0));
        held.take_next(&seqs).unwrap();
        assert_eq!(held.next(), Some(1));
        held.take_next(&seqs).unwrap();
        assert!(held.is_complete());
        assert_eq!(held.held().collect::<Vec<_>>(), [(0, 0), (1, 4)]);
        assert_eq!(seqs[0].load(Ordering::Relaxed), 1);
        assert_eq!(held.publish(&seqs, 0), 0);
        assert_eq!(seqs[0].load(Ordering::Relaxed), 2);
        assert_eq!(seqs[1].load(Ordering::Relaxed), 6);

        let mut held = Held::new(1..4);
        held.take_next(&seqs).unwrap();
        assert_eq!(held.take_next(&seqs), Err(1), "stripe 2 is held");
        assert_eq!(held.held().collect::<Vec<_>>(), [(1, 6)]);
        assert_eq!(held.publish(&seqs, 0), 0, "a null publish of stripe 1");
        assert_eq!(seqs[1].load(Ordering::Relaxed), 8);
        assert_eq!(
            seqs[2].load(Ordering::Relaxed),
            1,
            "the other's stripe is untouched"
        );
    }

    /// A stripe a recovery took over is reported lost; the others are still published.
    #[test]
    fn a_stripe_taken_over_is_lost_and_the_rest_published() {
        let seqs: Vec<AtomicU64> = [0, 0, 0].into_iter().map(AtomicU64::new).collect();
        let mut held = Held::new(0..3);
        while !held.is_complete() {
            held.take_next(&seqs).unwrap();
        }
        seqs[1].store(3, Ordering::Relaxed); // taken over: 1 -> 3
        assert_eq!(held.publish(&seqs, 0), 0b010);
        let now: Vec<u64> = seqs.iter().map(|s| s.load(Ordering::Relaxed)).collect();
        assert_eq!(now, [2, 3, 2]);
    }

    /// A reader validates exactly the stripes it began with: a change elsewhere is not a
    /// conflict, a change in its stripes is, and a held stripe is reported by number.
    #[test]
    fn readers_validate_their_own_stripes() {
        let seqs: Vec<AtomicU64> = [2, 4, 6].into_iter().map(AtomicU64::new).collect();
        let mut seen = [0; MAX_STRIPES];
        read_begin_stripes(&seqs, 0..2, &mut seen).unwrap();
        seqs[2].store(8, Ordering::Relaxed);
        assert!(read_validate_stripes(&seqs, 0..2, &seen));
        seqs[1].store(5, Ordering::Relaxed);
        assert!(!read_validate_stripes(&seqs, 0..2, &seen));
        assert_eq!(read_begin_stripes(&seqs, 0..3, &mut seen), Err((1, 5)));
    }
}

/// The striped protocol on loom's atomics: every interleaving, every value a Relaxed load may
/// return, and for each property a broken variant the checker must reject.
#[cfg(test)]
mod model_tests {
    use super::*;
    use crate::array::seqlock::model_tests::{Fenceless, TAKE, VALIDATE};
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU64 as LoomU64;

    /// Words of data per stripe in the models: two, so that a copy of one stripe can be torn.
    const WORDS: usize = 2;

    /// A striped array of `N` stripes: their sequences, the generation and the data.
    struct Model<W, const N: usize> {
        seqs: [W; N],
        generation: LoomU64,
        data: [[LoomU64; WORDS]; N],
    }

    impl<W, const N: usize> Model<W, N> {
        fn new(word: fn() -> W) -> Arc<Self> {
            Arc::new(Model {
                seqs: std::array::from_fn(|_| word()),
                generation: LoomU64::new(0),
                data: std::array::from_fn(|_| std::array::from_fn(|_| LoomU64::new(0))),
            })
        }
    }

    /// How a model writer deviates from the protocol.
    #[derive(Clone, Copy, PartialEq)]
    enum Writer {
        /// As the library does it.
        Correct,
        /// Takes its stripes in descending order.
        Descending,
        /// Counts its write in the generation after publishing its stripes.
        CountsAfterPublish,
    }

    /// One write of `value` into every word of `stripes`, holding and waiting (the worst case
    /// for deadlock: the library steps back before it falls back to this).
    fn write<W: SeqWord, const N: usize>(
        m: &Model<W, N>,
        stripes: Range<usize>,
        value: u64,
        how: Writer,
    ) {
        let mut held = Held::new(stripes);
        held.descending = how == Writer::Descending;
        while !held.is_complete() {
            if held.take_next(&m.seqs).is_err() {
                loom::thread::yield_now();
            }
        }
        // Counted as soon as every stripe is held, as the library does (so that the write's
        // version is known while it writes).
        if how != Writer::CountsAfterPublish {
            count_write(&m.generation);
        }
        for k in held.stripes() {
            for word in &m.data[k] {
                word.store(value, Ordering::Relaxed);
            }
        }
        assert_eq!(held.publish(&m.seqs, 0), 0, "no recovery in the model");
        if how == Writer::CountsAfterPublish {
            count_write(&m.generation);
        }
    }

    /// How a model reader deviates from the protocol.
    #[derive(Clone, Copy, PartialEq)]
    enum Reader {
        /// As the library does it.
        Correct,
        /// Re-checks every stripe but the last of its region.
        ValidatesTooFew,
        /// A whole-array read that does not re-check the generation.
        SkipsGeneration,
        /// Reports the generation loaded after validating instead of before beginning.
        LateGeneration,
    }

    /// One read attempt of the bytes of `stripes`: the generation it reports and the words,
    /// if the copy validated. A whole-array read (`stripes` = all) also requires the
    /// generation unchanged, which makes its version exact.
    fn read<W: SeqWord, const N: usize>(
        m: &Model<W, N>,
        stripes: Range<usize>,
        how: Reader,
    ) -> Option<(u64, Vec<[u64; WORDS]>)> {
        let g1 = read_begin(&m.generation).ok()?;
        let mut seen = [0; MAX_STRIPES];
        read_begin_stripes(&m.seqs, stripes.clone(), &mut seen).ok()?;
        let copy: Vec<[u64; WORDS]> = stripes
            .clone()
            .map(|k| std::array::from_fn(|w| m.data[k][w].load(Ordering::Relaxed)))
            .collect();
        let checked = if how == Reader::ValidatesTooFew {
            stripes.start..stripes.end - 1
        } else {
            stripes.clone()
        };
        if !read_validate_stripes(&m.seqs, checked, &seen) {
            return None;
        }
        let whole = stripes.len() == N;
        if whole && how != Reader::SkipsGeneration && !read_validate(&m.generation, g1) {
            return None;
        }
        let g = if how == Reader::LateGeneration {
            m.generation.load(Ordering::Relaxed)
        } else {
            g1
        };
        Some((g, copy))
    }

    fn check(build: impl Fn() + Sync + Send + 'static, preemptions: usize) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(preemptions);
        builder.check(build);
    }

    /// Two writers of disjoint stripes and a reader across both: the writers never wait for
    /// each other, and the reader accepts only copies in which each stripe is one whole write
    /// (`word`: the stripe word, to run the model with fences removed).
    fn disjoint<W: SeqWord + Send + Sync + 'static>(word: fn() -> W, how: Reader) {
        check(
            move || {
                let m = Model::<W, 2>::new(word);
                let writers: Vec<_> = (0..2)
                    .map(|k| {
                        let m = m.clone();
                        loom::thread::spawn(move || {
                            write(&m, k..k + 1, k as u64 + 1, Writer::Correct)
                        })
                    })
                    .collect();
                if let Some((_, copy)) = read(&m, 0..2, how) {
                    for (k, words) in copy.iter().enumerate() {
                        assert!(
                            words.iter().all(|&w| w == words[0]),
                            "torn copy of stripe {k} accepted: {words:?}"
                        );
                    }
                }
                for w in writers {
                    w.join().unwrap();
                }
                let seqs: Vec<u64> = m.seqs.iter().map(|s| s.load(Ordering::Relaxed)).collect();
                assert_eq!(seqs, [2, 2], "each stripe published once");
                assert_eq!(
                    m.generation.load(Ordering::Relaxed),
                    4,
                    "both writes counted"
                );
            },
            2,
        );
    }

    /// The protocol as implemented: disjoint writers, a reader across the boundary.
    #[test]
    fn model_a_reader_across_a_boundary_never_accepts_a_torn_stripe() {
        disjoint(|| LoomU64::new(0), Reader::Correct);
    }

    /// A reader that re-checks one stripe too few accepts the other writer's half write.
    #[test]
    #[should_panic(expected = "torn copy of stripe 1 accepted")]
    fn model_catches_validating_too_few_stripes() {
        disjoint(|| LoomU64::new(0), Reader::ValidatesTooFew);
    }

    /// Without the Acquire fence before the re-checks, a copy that saw a write's first word
    /// may still validate.
    #[test]
    #[should_panic(expected = "accepted")]
    fn model_catches_a_missing_fence_before_the_stripe_rechecks() {
        disjoint(|| Fenceless::<VALIDATE>(LoomU64::new(0)), Reader::Correct);
    }

    /// Without the writers' Release fence after taking a stripe, its data may be seen before
    /// the odd sequence.
    #[test]
    #[should_panic(expected = "accepted")]
    fn model_catches_a_missing_fence_after_taking_a_stripe() {
        disjoint(|| Fenceless::<TAKE>(LoomU64::new(0)), Reader::Correct);
    }

    /// Two writers of overlapping runs of stripes, `a` and `b`: they exclude each other on
    /// the stripe they share, both finish (no deadlock), and a reader of the shared stripe
    /// sees one whole write.
    fn overlapping(a: Range<usize>, b: (Range<usize>, Writer)) {
        check(
            move || {
                let m = Model::<LoomU64, 3>::new(|| LoomU64::new(0));
                let other = {
                    let (m, b) = (m.clone(), b.clone());
                    loom::thread::spawn(move || write(&m, b.0, 2, b.1))
                };
                write(&m, a.clone(), 1, Writer::Correct);
                if let Some((_, copy)) = read(&m, 1..2, Reader::Correct) {
                    assert!(copy[0] == [1, 1] || copy[0] == [2, 2], "torn: {copy:?}");
                }
                other.join().unwrap();
                let shared = &m.data[1];
                let last = shared[0].load(Ordering::Relaxed);
                assert_eq!(
                    shared[1].load(Ordering::Relaxed),
                    last,
                    "writers interleaved"
                );
                assert_eq!(
                    m.seqs[1].load(Ordering::Relaxed),
                    4,
                    "both took the shared stripe"
                );
            },
            2,
        );
    }

    /// Ascending order, as implemented: writers of 0..=1 and 1..=2 both complete.
    #[test]
    fn model_overlapping_writers_exclude_each_other_without_deadlock() {
        overlapping(0..2, (1..3, Writer::Correct));
    }

    /// The same two stripes taken in opposite orders: each holds one and waits for the other
    /// forever, which loom reports as a model that never ends.
    #[test]
    #[should_panic(expected = "exceeded maximum number of branches")]
    fn model_catches_taking_stripes_in_descending_order() {
        overlapping(0..2, (0..2, Writer::Descending));
    }

    /// A whole-array read is exactly the version it reports: the number of writes it
    /// contains equals the generation / 2, with two writers of disjoint stripes.
    fn versions_of_whole_reads(writer: Writer, reader: Reader) {
        check(
            move || {
                let m = Model::<LoomU64, 2>::new(|| LoomU64::new(0));
                let writers: Vec<_> = (0..2)
                    .map(|k| {
                        let m = m.clone();
                        loom::thread::spawn(move || write(&m, k..k + 1, 1, writer))
                    })
                    .collect();
                if let Some((g, copy)) = read(&m, 0..2, reader) {
                    let writes = copy.iter().filter(|w| w[0] == 1).count() as u64;
                    assert_eq!(
                        writes,
                        g / 2,
                        "a whole read of version {} holds {writes} writes",
                        g / 2
                    );
                }
                for w in writers {
                    w.join().unwrap();
                }
            },
            2,
        );
    }

    #[test]
    fn model_a_whole_read_is_exactly_its_version() {
        versions_of_whole_reads(Writer::Correct, Reader::Correct);
    }

    /// Without the generation re-check, a write published between the generation load and the
    /// stripe loads is in the copy but not in the version.
    #[test]
    #[should_panic(expected = "a whole read of version")]
    fn model_catches_a_whole_read_that_skips_the_generation_check() {
        versions_of_whole_reads(Writer::Correct, Reader::SkipsGeneration);
    }

    /// A writer that counts after publishing lets a whole read see its data under the old
    /// generation, unchanged across the read.
    #[test]
    #[should_panic(expected = "a whole read of version")]
    fn model_catches_counting_a_write_after_publishing() {
        versions_of_whole_reads(Writer::CountsAfterPublish, Reader::Correct);
    }

    /// A region read reports a lower bound: every write counted in its generation is in the
    /// copy (`writer` of stripe 0, then a reader of stripe 0 alone, racing it).
    fn lower_bound_of_region_reads(reader: Reader) {
        check(
            move || {
                let m = Model::<LoomU64, 2>::new(|| LoomU64::new(0));
                let writer = {
                    let m = m.clone();
                    loom::thread::spawn(move || write(&m, 0..1, 1, Writer::Correct))
                };
                if let Some((g, copy)) = read(&m, 0..1, reader)
                    && g >= 2
                {
                    assert_eq!(copy[0], [1, 1], "version {} without its write", g / 2);
                }
                writer.join().unwrap();
            },
            3,
        );
    }

    #[test]
    fn model_a_region_read_holds_every_write_its_version_counts() {
        lower_bound_of_region_reads(Reader::Correct);
    }

    /// Loading the generation after validating reports writes the copy does not hold: the
    /// bridge's exporter, say, would then never send that write.
    #[test]
    #[should_panic(expected = "without its write")]
    fn model_catches_a_region_read_that_reports_a_late_generation() {
        lower_bound_of_region_reads(Reader::LateGeneration);
    }
}
