//! The seqlock that lets any number of processes read an array while one process writes it,
//! with no lock on the read side and no daemon on the data path.
//!
//! # The protocol
//!
//! Shared state, all in the header page of the mapped file (`format::offsets`):
//!
//! * `SEQUENCE` (u64): even = stable, odd = a write is in progress. Only the process holding the
//!   write side changes it; taking the write side *is* changing it from even to odd.
//! * `FUTEX` (u32): bumped after every publish, so sleepers can wait for "something changed".
//! * `WRITER` (u64: pid and start time in one word): who holds the write side. The holder moves
//!   it from 0 to its identity (CAS) right after taking the write side, and back to 0 (CAS)
//!   before it publishes, so it is 0 whenever the sequence is even. A recovery *claims* it with
//!   a CAS before taking the write side over; whoever loses one of these CASes has lost the
//!   write side and touches nothing more.
//! * `FLAGS` (TORN bit), `WRITE_COUNT`, `LAST_WRITE_NS`: written only while the sequence is
//!   odd, by the holder or by recovery; so readers see them consistently, like the data.
//!
//! **Writers** (any process with a read-write mapping; several may compete):
//!
//! ```text
//! loop:
//!     f = FUTEX.load(Relaxed); fence(Acquire)      // for sleeping (see the reader)
//!     s = SEQUENCE.load(Relaxed)
//!     if s is odd: back off (spin, yield, sleep on FUTEX while it is f), give up on timeout
//!     if SEQUENCE.compare_exchange(s, s + 1, Acquire, Relaxed) succeeds: break
//! fence(Release)                               // the stores below stay after s + 1
//! WRITER.compare_exchange(0, me)               // fails only if a recovery claimed it: lost,
//!                                              //   stop before writing anything
//! write the data (Relaxed 8-byte atomic stores, or vector stores in asm: below)
//! WRITER.compare_exchange(me, 0, AcqRel)       // fails if a recovery claimed it: lost
//! WRITE_COUNT += 1; LAST_WRITE_NS = now; FLAGS &= !TORN if the write replaced everything
//! SEQUENCE.compare_exchange(s + 1, s + 2, Release)   // publish: everything above
//!                                              //   happens-before; fails if taken over: lost
//! FUTEX.fetch_add(1, Release); fence(SeqCst)
//! if SLEEPERS != 0 (the array's control file; module `array::control`): futex_wake(FUTEX, all)
//! lost: take the write side again and publish TORN (the stores made after losing it may
//!       have landed on a version someone else published); report `LostWriteSide`
//! ```
//!
//! Publishing is a compare-and-swap, never a plain store, so only the holder of `s + 1` can
//! publish: a writer that was wrongly judged dead (its pid read from another pid namespace,
//! say) cannot move the sequence backwards, clear the TORN mark the recovery set, or make a
//! third writer's half-done write look complete. It gets an error instead.
//!
//! The compare-and-swap is what excludes other writers: only one of them moves `s` to `s + 1`.
//! Its Acquire pairs with the previous writer's Release CAS that published `s`, so a writer
//! updating part of the array builds on the complete previous version.
//!
//! **Readers** (any process; read-only mappings are enough because readers never store):
//!
//! ```text
//! loop:
//!     f = FUTEX.load(Relaxed); fence(Acquire)
//!     s1 = SEQUENCE.load(Relaxed); fence(Acquire)   // = an Acquire load; pairs with the
//!                                                   //   writer's Release CAS that published s1
//!     if s1 is odd: back off as above (a write is in progress), continue
//!                   (the futex sleep is SLEEPERS += 1; fence(SeqCst); FUTEX_WAIT(FUTEX, f);
//!                   SLEEPERS -= 1: a publish after the load of f changed FUTEX, so the sleep
//!                   returns at once, and a writer that bumped FUTEX after our fence sees us
//!                   in SLEEPERS and wakes us; no wake-up can be lost)
//!     copy the data (Relaxed 8-byte atomic loads, or vector loads in asm) and read FLAGS
//!     fence(Acquire)                                // keeps the copy before the re-check
//!     s2 = SEQUENCE.load(Relaxed)
//!     if s1 == s2: the copy is a snapshot of version s1 / 2; done
//!     else: a write overlapped; count a retry and loop
//! ```
//!
//! Why the second fence: if the copy observed any store of a writer that started after `s1`,
//! that store comes after the writer's `fence(Release)`, which follows its `s1 + 1` CAS. The
//! reader's `fence(Acquire)` then synchronizes with the writer's fence, so the re-check must see
//! `s1 + 1` or later and the reader retries (Boehm 2012, "Can seqlocks get along with
//! programming language memory models?"; Rust RFC 3301). Without it, the re-check may read a
//! stale `s1` and accept a half-written copy; `seqlock::model_tests` shows the model checker
//! finding exactly that.
//!
//! Every shared access is an atomic operation or the CPU's own (an `asm!` block), so racing
//! with a writer is never undefined behaviour: a reader may *copy* torn bytes, but it never forms
//! a `&T` or `&[T]` over them and throws the copy away unless the re-check passes. Readers use
//! Relaxed loads plus fences rather than Acquire loads because the Rust memory model only
//! promises that register-sized Relaxed loads work on read-only memory. In Rust, data accesses
//! are aligned 8-byte words, never mixed sizes: ranges that start or end inside a word load or
//! merge the whole word. On x86-64 with AVX2 the body of a reader's copy is 32-byte vector
//! loads in an `asm!` block (`vector_copy`), which the compiler sees as an opaque call
//! between the two fences and which moves data at the speed of `memcpy`; a writer's stores
//! are the same block's 32-byte stores, between taking the write side and publishing.
//!
//! # What goes wrong, and what it costs
//!
//! * **A read overlaps a write.** The re-check fails and the reader copies again. Under a
//!   constant stream of writes to a large array a reader can retry indefinitely, so reads take a
//!   timeout and report it instead of spinning forever.
//! * **A writer holds the write side for long.** Readers and other writers spin briefly (the
//!   common case is a short write), then yield, then sleep on the futex, and time out.
//! * **A writer dies mid-write.** The sequence stays odd forever and the data may be half
//!   written. Nothing in the mapping can tell a dead writer from a slow one, so *recovery* is
//!   done from outside (the daemon, which holds a read-write mapping): it checks that the
//!   recorded writer process is gone (pid and start time, so a reused pid does not fool it),
//!   *claims* the dead writer's identity word with a CAS (so of several recoverers exactly one
//!   acts; the others then see a live recoverer), takes the write side over with a CAS from odd
//!   `s` to odd `s + 2`, sets TORN, and publishes `s + 3`: the version advances by 2 (the
//!   dead write's version is never published). A writer is judged dead only on positive
//!   evidence (`sys::Liveness`); one whose liveness cannot be told is left alone.
//!   Waiting readers wake up; reads then fail with a distinct *torn* error (unless the caller
//!   opts in to torn data) until a write that replaces the whole array clears the flag. A partial write keeps it: the rest of
//!   the array may still be half-written. A write closure that panics is treated the same way:
//!   the guard sets TORN and publishes, so the lock is never left held.
//! * **A writer dies between its CAS and recording its identity** (a window of a few
//!   instructions). Recovery then sees an odd sequence with no writer recorded and reports it as
//!   unknown rather than guessing; the daemon resolves it from the connection that held write
//!   access.
//!
//! # Stripes: one seqlock per region
//!
//! With one sequence, a writer of one row excludes every other writer and makes every reader
//! retry. A *striped* array divides its data area into stripes of `stripe_bytes` bytes (a
//! multiple of 64; the last stripe may be shorter), 2 to 32 of them, and gives each stripe the
//! seqlock above. Writers of disjoint regions then run at once; readers validate only the
//! stripes they copy. The code is module `stripes`; docs/FORMAT.md gives the bytes.
//!
//! Shared state: the array's header words keep their places, and stripe `k` owns the 64-byte
//! line `0x800 + 64k` of the header page:
//!
//! * `SEQ_k` (u64): stripe `k`'s sequence, exactly as `SEQUENCE` above (even = stable);
//! * `WRITER_k` (u64): the identity of its holder, as `WRITER` above;
//! * `FUTEX_k` (u32): bumped after each publish of the stripe;
//! * `FLAGS_k` (u32): bit 0, TORN: this stripe may be half written.
//!
//! The array's `SEQUENCE` becomes its **generation**: always even, it goes up by 2 for every
//! write of any region (and every recovery), so `version() = generation / 2` still counts
//! writes and "wait for a new version" keeps its meaning. The array's `WRITER` stays 0 and its
//! TORN bit unused (a stripe's says it); `FUTEX` is still bumped by every publish.
//!
//! **Which stripes a region takes.** The bytes `start..end` touch the 8-byte words
//! `[floor8(start), ceil8(end))`; a region takes the stripes of those words. A stripe boundary
//! is a multiple of 64, so no word belongs to two stripes: a writer's read-merge-store of a
//! partial word never touches another writer's stripe.
//!
//! **Writers** of the stripes `i..=j`:
//!
//! ```text
//! for k in i..=j, ascending:                     // ascending: no cycle of waiters can form
//!     take stripe k as try_begin_write takes SEQUENCE (CAS even s_k -> s_k + 1, Acquire;
//!         fence(Release))
//!     WRITER_k.compare_exchange(0, me)           // at once: a writer that dies waiting for a
//!                                                //   later stripe is known on those it holds
//!     if k is held by another: either wait for it holding i..k-1, or step back: publish
//!         i..k-1 unwritten (a null publish, below), wait until k is free, start again at i
//! v = (GENERATION.fetch_add(2, Release) + 2) / 2 // while holding every stripe (see readers):
//!                                                //   the write's version, known as it writes
//! write the region (as a whole write does), inside the held stripes only
//! first held stripe's line: WRITES += 1; LAST_WRITE_NS = now  // its holder's own line
//! for k in i..=j: WRITER_k.compare_exchange(me, 0); FLAGS_k &= !TORN if the write replaced
//!     all of stripe k; SEQ_k.compare_exchange(s_k + 1, s_k + 2, Release)   // publish
//! FUTEX_k.fetch_add(1) for each k; FUTEX.fetch_add(1); fence(SeqCst); wake sleepers
//! ```
//!
//! * *Deadlock.* Every writer takes stripes in ascending order, so in any chain of writers
//!   waiting for each other the holder of the highest stripe waits for nobody. (The model
//!   `model_catches_taking_stripes_in_descending_order` shows two writers deadlocking
//!   otherwise.)
//! * *Stepping back.* A writer that finds a stripe held first hands back the ones it took,
//!   so that it does not make readers of those wait for a write elsewhere; after a few rounds
//!   it holds and waits instead, so that wide writers are not starved by narrow ones.
//! * *Null publish.* Handing back a stripe unwritten moves `SEQ_k` from `s_k + 1` to `s_k + 2`
//!   like a publish, without counting a write: sequences only grow (a revert to `s_k` would let
//!   two holdings look alike to recovery), and readers of the stripe retry once.
//! * *One write at a time per thread.* A thread that holds a write of an array must not take
//!   another write of the same array, through any handle: with one sequence it would wait for
//!   itself; with stripes, holding stripe 3 and then taking stripe 1 breaks the order, and two
//!   threads doing so can wait for each other. Both end at the writers' timeouts, with an
//!   error; nothing refuses the second write up front (a write session may be finished on
//!   another thread, so the library cannot tell whose it is).
//! * *A whole-array write* takes every stripe: up to 32 compare-and-swaps more than a single
//!   seqlock, against a copy of at least 64 bytes per stripe.
//!
//! **Readers** of the stripes `i..=j`:
//!
//! ```text
//! g1 = GENERATION.load(Relaxed); fence(Acquire)
//! for k in i..=j: s_k = SEQ_k.load(Relaxed); fence(Acquire); if odd: back off, start over
//! copy the region (as a whole read does) and FLAGS_i..FLAGS_j
//! for k in i..=j: fence(Acquire); if SEQ_k.load(Relaxed) != s_k: retry
//! whole-array reads only: fence(Acquire); if GENERATION.load(Relaxed) != g1: retry
//! the copy holds every write counted in g1; a whole-array copy is exactly version g1 / 2
//! ```
//!
//! * *Why a region copy is consistent.* Any store the copy observed lies in some stripe `k`
//!   of the region and was made by a writer holding `k`, after that writer's Release fence,
//!   which follows its CAS of `SEQ_k` to odd. The Acquire fence before the re-check of `SEQ_k`
//!   synchronizes with that fence, so the re-check sees the odd value or a later one. This
//!   needs the re-check of **every** stripe the copy touched: one left out is a torn copy
//!   accepted (`model_catches_validating_too_few_stripes`).
//! * *Why the version is a lower bound.* A writer counts itself in the generation while it
//!   still holds its stripes. A reader whose load of `g1` sees that count (Acquire, through the
//!   writer's fences) then sees each of the writer's stripes odd or published, never from
//!   before the write: every write `g1` counts is in the copy. A region copy may also hold
//!   later writes; a consumer that waits for versions newer than the one it read never misses
//!   a change. Loading the generation after the copy instead would report writes the copy does
//!   not hold (`model_catches_a_region_read_that_reports_a_late_generation`).
//! * *Why a whole-array copy is exact.* Every write moves some stripe of a whole-array read
//!   and the generation; with both unchanged across the copy, it holds exactly the writes
//!   counted in `g1`. The re-check of the generation, and counting before publishing, are
//!   both needed (two models, one mutation each).
//! * *Starvation.* A whole-array reader under steady writers of disjoint regions retries
//!   while any stripe moves during its copy, as a reader of a plain array does under one
//!   writer; it times out rather than spins forever.
//! * *TORN* is per stripe. A region read fails with the torn error if any of its stripes is
//!   torn (unless the caller accepts torn data); a write that replaces all of a stripe clears
//!   that stripe's mark.
//!
//! **Dead writers.** Recovery works per stripe exactly as above per array: for each odd
//! `SEQ_k` whose `WRITER_k` is proven dead, claim `WRITER_k`, take `SEQ_k` from `s` to
//! `s + 2`, set `TORN_k`, add 2 to the generation (while holding `s + 2`, for the reason the
//! writers count while holding: a whole-array reader must not see the stripe move without the
//! generation; the models check that rule for writers, `model_catches_counting_a_write_after_publishing`,
//! and the recovery is the same code shape), publish `s + 3`, bump `FUTEX_k` and `FUTEX` and
//! wake. A writer whose identity CAS on a stripe fails waits, as for the array's word, to see
//! whether the claim becomes a takeover (lost) or is handed back (it goes on). Writers publish
//! stripe by stripe (flags, identity, sequence), so that no stripe sits odd with no identity
//! while its writer is busy with another. A writer that died holding several stripes is recorded on each and they are
//! recovered one by one; each is marked torn, even one it had not written yet (nothing tells,
//! and the rule stays simple). An odd stripe with no identity (a writer that died in the few
//! instructions between its CAS and recording itself) is taken over once it has stayed so for
//! 2 s, whether or not write access is leased: several writers at once are the normal case of
//! a striped array, so a lease says nothing about which of them it was.
//!
//! The code below is generic over [`SeqWord`], the sequence counter's operations, so that the
//! loom model checker can run the exact same algorithm on its own atomics.

use std::sync::atomic::{AtomicU64, Ordering, fence};

/// The operations the seqlock needs from its sequence word (and the matching fence).
///
/// Implemented for `std`'s [`AtomicU64`] (mappings) and, in tests, for loom's.
pub(crate) trait SeqWord {
    fn load(&self, order: Ordering) -> u64;
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
    fn fence(order: Ordering);
    /// Adds `v` (wrapping): a striped array's generation word (module `stripes`).
    fn fetch_add(&self, v: u64, order: Ordering) -> u64;

    /// The Acquire fence after a reader's first sequence load (`read_begin`). A separate
    /// method only so that the model tests can remove this one fence alone.
    #[inline]
    fn fence_after_begin() {
        Self::fence(Ordering::Acquire);
    }

    /// The Acquire fence before a reader's re-check (`read_validate`); separate, as above.
    #[inline]
    fn fence_before_validate() {
        Self::fence(Ordering::Acquire);
    }

    /// The Release fence after a writer's CAS (`try_begin_write`); separate, as above.
    #[inline]
    fn fence_after_take() {
        Self::fence(Ordering::Release);
    }
}

impl SeqWord for AtomicU64 {
    #[inline]
    fn load(&self, order: Ordering) -> u64 {
        AtomicU64::load(self, order)
    }
    #[inline]
    fn compare_exchange(&self, c: u64, n: u64, s: Ordering, f: Ordering) -> Result<u64, u64> {
        AtomicU64::compare_exchange(self, c, n, s, f)
    }
    #[inline]
    fn fence(order: Ordering) {
        fence(order);
    }
    #[inline]
    fn fetch_add(&self, v: u64, order: Ordering) -> u64 {
        AtomicU64::fetch_add(self, v, order)
    }
}

/// Writer, step 1: try to take the write side.
///
/// Returns `Ok(s)` with the even sequence that was replaced by `s + 1`, or `Err(seen)` with the
/// sequence that made it fail (odd: held by someone; even: another writer won the race).
#[inline]
pub(crate) fn try_begin_write<W: SeqWord>(seq: &W) -> Result<u64, u64> {
    // Relaxed: only a hint for the CAS below, which does the real check.
    let s = seq.load(Ordering::Relaxed);
    if s & 1 == 1 {
        return Err(s);
    }
    // Acquire: pairs with the Release CAS in `end_write` of the previous writer, so this
    // writer sees the complete previous version. Failure needs no ordering: we retry.
    seq.compare_exchange(s, s.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)?;
    // Release fence: the data stores that follow cannot become visible before `s + 1`. Pairs
    // with the reader's Acquire fence in `read_validate`.
    W::fence_after_take();
    Ok(s)
}

/// Writer, last step: publish the version `(s + 2) / 2`, if this writer still holds the write
/// side.
///
/// Returns `Err(found)` when the sequence is no longer `s + 1`: a recovery took the write side
/// over (it judged this writer dead). Nothing is published then, so the sequence never moves
/// backwards and a third writer's write in progress is never made to look complete.
#[inline]
pub(crate) fn end_write<W: SeqWord>(seq: &W, s: u64) -> Result<(), u64> {
    debug_assert_eq!(
        s & 1,
        0,
        "end_write takes the even sequence begin_write replaced"
    );
    // Release (on success): every data store of this write happens-before a reader's Acquire
    // of `s + 2`. Pairs with the Acquire fence in `read_begin` and the Acquire CAS in
    // `try_begin_write`. A compare-and-swap, not a store: only the holder of `s + 1` may
    // publish. Failure needs no ordering: the caller only reports it.
    // Wrapping: a hostile writer can put any value in the mapping; nothing here may panic.
    seq.compare_exchange(
        s.wrapping_add(1),
        s.wrapping_add(2),
        Ordering::Release,
        Ordering::Relaxed,
    )
    .map(drop)
}

/// Reader, step 1: the sequence to validate against, or `Err(odd)` while a write is in
/// progress.
#[inline]
pub(crate) fn read_begin<W: SeqWord>(seq: &W) -> Result<u64, u64> {
    // Relaxed load + Acquire fence = Acquire load, but valid on read-only memory. Pairs with the
    // Release CAS in `end_write`: a stable `s` means its data is visible to the copy.
    let s = seq.load(Ordering::Relaxed);
    W::fence_after_begin();
    if s & 1 == 1 { Err(s) } else { Ok(s) }
}

/// Reader, last step: true if no write started since `read_begin` returned `s`, so the copy
/// made in between is a consistent snapshot.
#[inline]
pub(crate) fn read_validate<W: SeqWord>(seq: &W, s: u64) -> bool {
    // Acquire fence: the copy's loads stay before the re-check below. If the copy saw any store
    // of a later writer, this fence synchronizes with that writer's Release fence in
    // `try_begin_write`, so the load below sees at least its `s + 1`.
    W::fence_before_validate();
    seq.load(Ordering::Relaxed) == s
}

/// Copies `dst.len()` bytes starting `offset` bytes into the data area at `base`: whole
/// aligned 8-byte words with Relaxed atomic loads, or (the body of a copy of 32 bytes or more,
/// on x86-64 with AVX2) vector loads in an `asm!` block ([`vector_copy`]).
///
/// # Safety
/// - `base` is 8-byte aligned and valid for reads of `padded_len(offset + dst.len())` bytes for
///   the duration of the call (the mapping is alive and covers the padded data area).
/// - Other processes or threads access those bytes only through 8-byte atomic operations or
///   this module's `asm!` copies (or not at all while this runs).
#[inline]
pub(crate) unsafe fn load_bytes(base: *const u8, offset: usize, dst: &mut [u8]) {
    // SAFETY: the caller's promise, passed on.
    unsafe { load_bytes_to(base, offset, dst, Dest::Reused) }
}

/// What a copy's destination is, which decides how a big copy stores into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    /// Memory the caller had already (a buffer it reads into again and again): a big copy
    /// (4 MiB and up) streams past the caches into it, as `memcpy` does, so it is not read
    /// into the cache first.
    Reused,
    /// Memory allocated for this copy and not yet touched: each of its pages is zeroed by the
    /// kernel at its first write, through the cache, so the copy stores through the cache
    /// too (streaming stores over the lines just zeroed cost about 1.4 times as much in all:
    /// 20 ms against 14 for 64 MiB, against the 14 of NumPy's `np.array(view)`).
    Fresh,
}

/// [`load_bytes`] into a destination of the kind `dest`.
///
/// # Safety
/// As for [`load_bytes`].
#[inline]
pub(crate) unsafe fn load_bytes_to(base: *const u8, offset: usize, dst: &mut [u8], dest: Dest) {
    debug_assert_eq!(base as usize % 8, 0);
    let end = offset + dst.len();
    let mut pos = offset;
    let mut out = 0;
    // Head: a partial first word.
    if !pos.is_multiple_of(8) && pos < end {
        // SAFETY: the word holding `pos` is in the padded data area, which the caller guarantees
        // is mapped and only accessed atomically.
        let word = unsafe { load_word(base, pos & !7) }.to_le_bytes();
        let from = pos % 8;
        let n = (8 - from).min(end - pos);
        dst[..n].copy_from_slice(&word[from..from + n]);
        pos += n;
        out += n;
    }
    // Body: whole words. `dst` is private memory, so how it is stored is free: groups of four
    // words go out as one unaligned 32-byte store (halving the store count, which bounds the
    // copy in cache), and big copies use non-temporal stores like memcpy does, so the
    // destination is not read into the cache first.
    let body_words = (end - pos) / 8;
    let body = &mut dst[out..out + body_words * 8];
    // SAFETY: the words `pos..pos + 8 * body_words` are in the data area (see above).
    unsafe { copy_words_out(base.add(pos), body, dest) };
    pos += body_words * 8;
    out += body_words * 8;
    // Tail: a partial last word (the padding guarantees the whole word is mapped).
    if pos < end {
        // SAFETY: the last word is inside the padded data area (padding is to 8 bytes).
        let word = unsafe { load_word(base, pos) }.to_le_bytes();
        let n = end - pos;
        dst[out..].copy_from_slice(&word[..n]);
    }
}

/// Copies from these 8-aligned shared words are done with non-temporal stores into the private
/// destination from this size up (memcpy switches at a similar size; below it the destination
/// is better left in cache for the caller).
const NON_TEMPORAL_FROM: usize = 4 << 20;

/// Copies `dst.len() / 8` words from `src` into `dst`: with vector loads in an `asm!` block
/// where the CPU has them ([`vector_copy`]), else with Relaxed atomic loads.
///
/// # Safety
/// `src` is 8-aligned, valid for `dst.len()` bytes of reads, and only accessed atomically by
/// others; `dst.len()` is a multiple of 8.
#[inline]
unsafe fn copy_words_out(src: *const u8, dst: &mut [u8], dest: Dest) {
    debug_assert_eq!(dst.len() % 8, 0);
    #[cfg(target_arch = "x86_64")]
    {
        let non_temporal = dest == Dest::Reused && dst.len() >= NON_TEMPORAL_FROM;
        // SAFETY: `src` is valid for `dst.len()` bytes of reads (the caller's promise) and
        // `dst` for as many writes.
        let done = unsafe { vector_copy(src, dst.as_mut_ptr(), dst.len(), non_temporal) };
        if done > 0 {
            // SAFETY: as above, for what is left.
            unsafe { copy_words_out_scalar(src.add(done), &mut dst[done..]) };
            return;
        }
        if non_temporal {
            use std::arch::x86_64::{_mm_sfence, _mm_stream_si64};
            let out = dst.as_mut_ptr().cast::<i64>();
            for i in 0..dst.len() / 8 {
                // SAFETY: word `i` is in the shared range the caller vouches for.
                let w = unsafe { load_word(src, 8 * i) };
                // SAFETY: `out + i` is inside `dst`; MOVNTI has no alignment requirement and
                // SSE2 is part of x86-64.
                unsafe { _mm_stream_si64(out.add(i), w as i64) };
            }
            // Non-temporal stores are weakly ordered: fence them before `dst` is used (and
            // before the seqlock's own fences and re-check).
            // SAFETY: SSE is part of x86-64.
            unsafe { _mm_sfence() };
            return;
        }
    }
    // SAFETY: the caller's promise, passed on.
    unsafe { copy_words_out_scalar(src, dst) }
}

/// [`copy_words_out`] with 8-byte atomic loads only (any architecture; the tail of the
/// vector copy).
///
/// # Safety
/// As for [`copy_words_out`].
#[inline]
unsafe fn copy_words_out_scalar(src: *const u8, dst: &mut [u8]) {
    let words = dst.len() / 8;
    let mut chunks = dst.chunks_exact_mut(32);
    for (c, chunk) in (&mut chunks).enumerate() {
        // SAFETY: words 4c..4c+4 are in the shared range.
        let group = unsafe {
            [
                load_word(src, 32 * c),
                load_word(src, 32 * c + 8),
                load_word(src, 32 * c + 16),
                load_word(src, 32 * c + 24),
            ]
        };
        // SAFETY: `chunk` is 32 writable bytes; the store is unaligned-safe.
        unsafe { chunk.as_mut_ptr().cast::<[u64; 4]>().write_unaligned(group) };
    }
    let done = words / 4 * 4;
    for (i, chunk) in chunks.into_remainder().chunks_exact_mut(8).enumerate() {
        // SAFETY: word `done + i` is in the shared range.
        let w = unsafe { load_word(src, 8 * (done + i)) };
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
}

/// Copies most of `len` bytes from `src` to `dst` with vector loads and stores, in `asm!`
/// blocks; returns how many bytes from the start it copied, a multiple of 8 (0 when the CPU
/// lacks AVX2, or for fewer than 32 bytes): the caller copies the rest. One side is the shared
/// mapping, the other private memory: a reader's copy out (`src` shared) or a writer's copy in
/// (`dst` shared). With `non_temporal` (copies bigger than the caches), all but the first 32
/// bytes are stored around the cache, and fenced (`sfence`) before the block ends.
///
/// Why assembly: the words being copied may be stored to by a writer at the same time. That is
/// the seqlock's design (the reader copies, then validates, and throws a racy copy away), but a
/// plain Rust or intrinsic load of such memory is a data race, undefined in the Rust memory
/// model even when the value is discarded; and a writer's plain stores race the readers' loads
/// the same way. Relaxed 8-byte atomic loads are defined, and are
/// what the rest of this module uses, but no atomic type is 32 bytes wide, so an atomic copy
/// moves 8 bytes per load where `memcpy` moves 32. An `asm!` block is outside the model: the
/// compiler treats it as an opaque call that may read `src` and write `dst`, and the loads are
/// the CPU's, whose behaviour under a concurrent store is defined by the architecture: a vector
/// load racing a store may return old and new bytes mixed, which is exactly what the
/// validation catches. The ordering is unchanged: a reader's Acquire fence in `read_begin`
/// comes before the block and the one in `read_validate` after it (compiler barriers on
/// x86-64, whose loads are not reordered with other loads); a writer's block comes after its
/// Release fence in `try_begin_write` and before its Release compare-and-swap that publishes
/// (x86-64 does not reorder stores with older stores, and the non-temporal ones are fenced
/// inside the block). The block never touches memory outside `src..src + len` and
/// `dst..dst + len`.
///
/// # Safety
/// `src` is valid for reads and `dst` for writes of `len` bytes, and they do not overlap.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn vector_copy(src: *const u8, dst: *mut u8, len: usize, non_temporal: bool) -> usize {
    if len < 32 || !std::arch::is_x86_feature_detected!("avx2") {
        return 0;
    }
    if !non_temporal {
        // SAFETY: AVX2 is present (checked above); the pointers as the caller promises.
        return unsafe { vector_copy_avx2(src, dst, len) };
    }
    #[cfg(test)]
    NON_TEMPORAL_COPIES.with(|n| n.set(n.get() + 1));
    // Non-temporal stores need a 32-byte aligned destination (a big `malloc` block starts 16
    // bytes into its page): the first 32 bytes go by an unaligned copy, and the aligned rest
    // from where that copy reached the next 32-byte boundary (a few bytes are copied twice,
    // the same bytes for a writer, and bytes the validation covers for a reader).
    let head = (dst as usize).wrapping_neg() % 32;
    // SAFETY: AVX2 is present; `len` is at least 32 (checked above), so the first copy is in
    // bounds, and the second starts `head < 32` bytes in, at an aligned `dst + head`, for the
    // `len - head` bytes left.
    let done = unsafe {
        vector_copy_avx2(src, dst, 32);
        head + vector_copy_avx2_nt(src.add(head), dst.add(head), len - head)
    };
    // The callers go on with whole words from here (their shared side is 8-aligned).
    done.max(32) & !7
}

#[cfg(test)]
thread_local! {
    /// Test counter: the copies that took the non-temporal path.
    pub(crate) static NON_TEMPORAL_COPIES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The AVX2 body of [`vector_copy`]: 128 bytes per iteration, then 32 at a time.
///
/// # Safety
/// As for [`vector_copy`], and the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vector_copy_avx2(src: *const u8, dst: *mut u8, len: usize) -> usize {
    let (blocks, singles) = (len / 128, len % 128 / 32);
    // SAFETY: reads `src..src + 128 * blocks + 32 * singles` and writes the same range of
    // `dst`, both within `len` bytes (the caller's promise); unaligned vector moves; touches
    // no stack; every ymm register is declared clobbered (ymm0-3 are used, and the upper
    // halves of all of them are cleared at the end).
    unsafe {
        std::arch::asm!(
            "test {blocks}, {blocks}",
            "jz 3f",
            "2:",
            "vmovdqu ymm0, ymmword ptr [{src}]",
            "vmovdqu ymm1, ymmword ptr [{src} + 32]",
            "vmovdqu ymm2, ymmword ptr [{src} + 64]",
            "vmovdqu ymm3, ymmword ptr [{src} + 96]",
            "vmovdqu ymmword ptr [{dst}], ymm0",
            "vmovdqu ymmword ptr [{dst} + 32], ymm1",
            "vmovdqu ymmword ptr [{dst} + 64], ymm2",
            "vmovdqu ymmword ptr [{dst} + 96], ymm3",
            "add {src}, 128",
            "add {dst}, 128",
            "dec {blocks}",
            "jnz 2b",
            "3:",
            "test {singles}, {singles}",
            "jz 5f",
            "4:",
            "vmovdqu ymm0, ymmword ptr [{src}]",
            "vmovdqu ymmword ptr [{dst}], ymm0",
            "add {src}, 32",
            "add {dst}, 32",
            "dec {singles}",
            "jnz 4b",
            "5:",
            "vzeroupper",
            src = inout(reg) src => _,
            dst = inout(reg) dst => _,
            blocks = inout(reg) blocks => _,
            singles = inout(reg) singles => _,
            // ymm0-3 are used, and `vzeroupper` zeroes the upper half of every ymm register.
            out("ymm0") _,
            out("ymm1") _,
            out("ymm2") _,
            out("ymm3") _,
            out("ymm4") _,
            out("ymm5") _,
            out("ymm6") _,
            out("ymm7") _,
            out("ymm8") _,
            out("ymm9") _,
            out("ymm10") _,
            out("ymm11") _,
            out("ymm12") _,
            out("ymm13") _,
            out("ymm14") _,
            out("ymm15") _,
            options(nostack),
        );
    }
    128 * blocks + 32 * singles
}

/// [`vector_copy_avx2`] with non-temporal stores (the destination is not read into the
/// cache first; for copies bigger than the caches, as `memcpy` does), 128 bytes at a time,
/// then fenced so that the copy is complete before the caller's validation and use of `dst`.
///
/// # Safety
/// As for [`vector_copy`], the CPU has AVX2, and `dst` is 32-byte aligned.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vector_copy_avx2_nt(src: *const u8, dst: *mut u8, len: usize) -> usize {
    let blocks = len / 128;
    // SAFETY: reads `src..src + 128 * blocks`, writes the same range of `dst` (aligned, as
    // VMOVNTDQ needs), both within `len` bytes; `sfence` orders the weakly ordered stores
    // before everything after the block; every ymm register clobbered, as above.
    unsafe {
        std::arch::asm!(
            "test {blocks}, {blocks}",
            "jz 3f",
            "2:",
            "vmovdqu ymm0, ymmword ptr [{src}]",
            "vmovdqu ymm1, ymmword ptr [{src} + 32]",
            "vmovdqu ymm2, ymmword ptr [{src} + 64]",
            "vmovdqu ymm3, ymmword ptr [{src} + 96]",
            "vmovntdq ymmword ptr [{dst}], ymm0",
            "vmovntdq ymmword ptr [{dst} + 32], ymm1",
            "vmovntdq ymmword ptr [{dst} + 64], ymm2",
            "vmovntdq ymmword ptr [{dst} + 96], ymm3",
            "add {src}, 128",
            "add {dst}, 128",
            "dec {blocks}",
            "jnz 2b",
            "3:",
            "sfence",
            "vzeroupper",
            src = inout(reg) src => _,
            dst = inout(reg) dst => _,
            blocks = inout(reg) blocks => _,
            // ymm0-3 are used, and `vzeroupper` zeroes the upper half of every ymm register.
            out("ymm0") _,
            out("ymm1") _,
            out("ymm2") _,
            out("ymm3") _,
            out("ymm4") _,
            out("ymm5") _,
            out("ymm6") _,
            out("ymm7") _,
            out("ymm8") _,
            out("ymm9") _,
            out("ymm10") _,
            out("ymm11") _,
            out("ymm12") _,
            out("ymm13") _,
            out("ymm14") _,
            out("ymm15") _,
            options(nostack),
        );
    }
    128 * blocks
}

/// Stores `src` at `offset` bytes into the data area at `base`: Relaxed 8-byte atomic stores,
/// or for the body of 32 bytes or more on x86-64 with AVX2, vector stores in an `asm!` block
/// ([`vector_copy`]); bytes of a partial first or last word outside the range are preserved.
///
/// # Safety
/// - As for [`load_bytes`], with the mapping writable.
/// - The caller holds the write side of the seqlock (so the read-merge-store of partial words
///   cannot lose another writer's bytes).
#[inline]
pub(crate) unsafe fn store_bytes(base: *mut u8, offset: usize, src: &[u8]) {
    debug_assert_eq!(base as usize % 8, 0);
    let end = offset + src.len();
    let mut pos = offset;
    let mut inp = 0;
    // Every word touched below lies in the padded, writable data area, and the caller holds the
    // write side, so no one else stores concurrently: the read-merge-store loses nothing.
    if !pos.is_multiple_of(8) && pos < end {
        let at = pos & !7;
        // SAFETY: see above.
        let mut word = unsafe { load_word(base, at) }.to_le_bytes();
        let from = pos % 8;
        let n = (8 - from).min(end - pos);
        word[from..from + n].copy_from_slice(&src[..n]);
        // SAFETY: see above.
        unsafe { store_word(base, at, u64::from_le_bytes(word)) };
        pos += n;
        inp += n;
    }
    let body_words = (end - pos) / 8;
    let body = &src[inp..inp + body_words * 8];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `base + pos` starts `body.len()` bytes of the writable data area (see above);
    // `body` is the caller's own memory, which does not overlap the mapping.
    let done = unsafe {
        vector_copy(
            body.as_ptr(),
            base.add(pos),
            body.len(),
            body.len() >= NON_TEMPORAL_FROM,
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (i, chunk) in body[done..].chunks_exact(8).enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        // SAFETY: see above.
        unsafe { store_word(base, pos + done + 8 * i, word) };
    }
    pos += body_words * 8;
    inp += body_words * 8;
    if pos < end {
        // SAFETY: see above.
        let mut word = unsafe { load_word(base, pos) }.to_le_bytes();
        let n = end - pos;
        word[..n].copy_from_slice(&src[inp..]);
        // SAFETY: see above.
        unsafe { store_word(base, pos, u64::from_le_bytes(word)) };
    }
}

/// One Relaxed atomic load of the aligned word at `base + at`.
///
/// # Safety
/// `base + at` is 8-byte aligned, mapped for the call, and only accessed atomically by others.
#[inline(always)]
pub(crate) unsafe fn load_word(base: *const u8, at: usize) -> u64 {
    debug_assert_eq!((base as usize + at) % 8, 0);
    // SAFETY: the caller guarantees alignment, validity and atomic-only access. Relaxed: ordering
    // comes from the fences in `read_begin`/`read_validate`. A register-sized Relaxed load is
    // allowed on read-only memory.
    unsafe { AtomicU64::from_ptr(base.add(at).cast::<u64>().cast_mut()) }.load(Ordering::Relaxed)
}

/// One Relaxed atomic store to the aligned word at `base + at`.
///
/// # Safety
/// As [`load_word`], the mapping is writable, and the caller holds the write side.
#[inline(always)]
pub(crate) unsafe fn store_word(base: *mut u8, at: usize, value: u64) {
    debug_assert_eq!((base as usize + at) % 8, 0);
    // SAFETY: the caller guarantees alignment, validity, writability and exclusive write side.
    // Relaxed: ordered after the CAS by the Release fence in `try_begin_write` and before the
    // publish by the Release CAS in `end_write`.
    unsafe { AtomicU64::from_ptr(base.add(at).cast::<u64>()) }.store(value, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte-range copies through whole words give the same bytes as a plain copy, for every
    /// alignment of start and end.
    #[test]
    fn word_copies_match_plain_copies_at_every_alignment() {
        let mut backing = vec![0u64; 8];
        let base = backing.as_mut_ptr().cast::<u8>();
        let pattern: Vec<u8> = (0..64u8).collect();
        for start in 0..20 {
            for len in 0..30 {
                // SAFETY: `backing` is 64 aligned bytes owned by this thread; start + len <= 50.
                unsafe { store_bytes(base, 0, &[0xAA; 64]) };
                // SAFETY: as above.
                unsafe { store_bytes(base, start, &pattern[..len]) };
                let mut all = [0u8; 64];
                // SAFETY: as above.
                unsafe { load_bytes(base, 0, &mut all) };
                let mut expect = [0xAAu8; 64];
                expect[start..start + len].copy_from_slice(&pattern[..len]);
                assert_eq!(all, expect, "store start {start} len {len}");
                let mut part = vec![0u8; len];
                // SAFETY: as above.
                unsafe { load_bytes(base, start, &mut part) };
                assert_eq!(part, &pattern[..len], "load start {start} len {len}");
            }
        }
    }

    /// Publishing succeeds only from `s + 1`: after a takeover moved the sequence on, a late
    /// publish reports what it found and leaves the sequence alone (never backwards).
    #[test]
    fn publish_fails_once_the_sequence_moved_on() {
        let seq = AtomicU64::new(0);
        assert_eq!(try_begin_write(&seq), Ok(0));
        assert_eq!(end_write(&seq, 0), Ok(()));
        assert_eq!(seq.load(Ordering::Relaxed), 2);
        assert_eq!(try_begin_write(&seq), Ok(2));
        seq.store(5, Ordering::Relaxed); // a recovery took 3 over (3 -> 5)
        assert_eq!(end_write(&seq, 2), Err(5));
        assert_eq!(seq.load(Ordering::Relaxed), 5);
        seq.store(6, Ordering::Relaxed); // ... and published 6
        assert_eq!(end_write(&seq, 2), Err(6));
        assert_eq!(seq.load(Ordering::Relaxed), 6);
    }

    /// Copies long enough for the vector path (whole 128-byte blocks, then 32-byte ones, then
    /// words and bytes) give the source's bytes at every start and length up to three blocks
    /// and a bit, into destinations at every alignment, and write nothing past their end.
    #[test]
    fn vector_copies_match_plain_copies() {
        let backing: Vec<u64> = (0..64u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        let base = backing.as_ptr().cast::<u8>();
        let source: &[u8] = bytemuck::cast_slice(&backing);
        for offset in 0..9 {
            for len in 0..=(3 * 128 + 72) {
                for shift in [0, 1, 7, 32] {
                    let mut out = vec![0x5Au8; shift + len + 8];
                    // SAFETY: `backing` is 512 aligned bytes, private; offset + len <= 464.
                    unsafe { load_bytes(base, offset, &mut out[shift..shift + len]) };
                    assert!(
                        out[shift..shift + len] == source[offset..offset + len],
                        "offset {offset} len {len} shift {shift}"
                    );
                    assert!(
                        out[..shift]
                            .iter()
                            .chain(&out[shift + len..])
                            .all(|&b| b == 0x5A),
                        "bytes outside the destination written: offset {offset} len {len}"
                    );
                }
            }
        }
    }

    /// Stores long enough for the vector path land every byte where it belongs, at every start
    /// and length up to three blocks and a bit, from sources at every alignment, and leave the
    /// bytes around them alone.
    #[test]
    fn vector_stores_match_plain_copies() {
        let pattern: Vec<u8> = (0..600u32).map(|i| (i * 7 + 3) as u8).collect();
        for offset in 0..9 {
            for len in 0..=(3 * 128 + 72) {
                for shift in [0, 1, 7, 32] {
                    let mut backing = vec![0xA5A5_A5A5_A5A5_A5A5u64; 64];
                    let base = backing.as_mut_ptr().cast::<u8>();
                    let src = &pattern[shift..shift + len];
                    // SAFETY: `backing` is 512 aligned bytes, private; offset + len <= 464.
                    unsafe { store_bytes(base, offset, src) };
                    let bytes: &[u8] = bytemuck::cast_slice(&backing);
                    assert!(
                        bytes[offset..offset + len] == *src,
                        "offset {offset} len {len} shift {shift}"
                    );
                    assert!(
                        bytes[..offset]
                            .iter()
                            .chain(&bytes[offset + len..])
                            .all(|&b| b == 0xA5),
                        "bytes outside the range written: offset {offset} len {len}"
                    );
                }
            }
        }
    }

    /// Big stores take the non-temporal path (at an aligned start) or the cached one: the same
    /// bytes either way, nothing around them touched.
    #[test]
    fn big_stores_match_plain_copies() {
        let len = NON_TEMPORAL_FROM + 200;
        let src: Vec<u8> = (0..len as u64)
            .map(|i| (i.wrapping_mul(31) >> 3) as u8)
            .collect();
        // Every start modulo 32 that a store's body can have (the mapping's data area is
        // page aligned; bodies start at a multiple of 8): the aligned one, and those whose
        // non-temporal copy must first reach a 32-byte boundary.
        for offset in [0, 3, 8, 16, 24, 32] {
            let mut backing = vec![0u64; (len + 64) / 8];
            let base = backing.as_mut_ptr().cast::<u8>();
            let before = NON_TEMPORAL_COPIES.with(std::cell::Cell::get);
            // SAFETY: `backing` is aligned, private, and covers offset + len.
            unsafe { store_bytes(base, offset, &src) };
            if std::arch::is_x86_feature_detected!("avx2") {
                assert!(
                    NON_TEMPORAL_COPIES.with(std::cell::Cell::get) > before,
                    "offset {offset}: the non-temporal path did not run"
                );
            }
            let bytes: &[u8] = bytemuck::cast_slice(&backing);
            assert!(bytes[offset..offset + len] == src[..], "offset {offset}");
            assert!(
                bytes[..offset]
                    .iter()
                    .chain(&bytes[offset + len..])
                    .all(|&b| b == 0),
                "bytes outside the range written: offset {offset}"
            );
        }
    }

    /// Big copies into a reused destination take the non-temporal path, into a fresh one the
    /// cached path; both must produce the same bytes.
    #[test]
    fn big_copies_match_plain_copies() {
        let words = (NON_TEMPORAL_FROM + 4096) / 8;
        let backing: Vec<u64> = (0..words as u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9))
            .collect();
        let base = backing.as_ptr().cast::<u8>();
        let cases = [
            (0, words * 8),
            (3, words * 8 - 11),
            (8, NON_TEMPORAL_FROM),
            (16, NON_TEMPORAL_FROM + 200),
        ];
        let expect: &[u8] = bytemuck::cast_slice(&backing);
        // Destinations at every alignment modulo 32 (a big `malloc` block starts 16 bytes into
        // its page), each into a buffer with a guard around it.
        let mut out = vec![0u64; (words * 8 + 128) / 8];
        for (offset, len) in cases {
            for (shift, dest) in [0, 8, 16, 24, 5]
                .into_iter()
                .flat_map(|shift| [(shift, Dest::Reused), (shift, Dest::Fresh)])
            {
                let room: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
                let at = (32 - room.as_ptr() as usize % 32) % 32 + shift;
                room.fill(0xEE);
                let before = NON_TEMPORAL_COPIES.with(std::cell::Cell::get);
                // SAFETY: `backing` is aligned, private to this thread, and covers the range.
                unsafe { load_bytes_to(base, offset, &mut room[at..at + len], dest) };
                if std::arch::is_x86_feature_detected!("avx2") {
                    assert_eq!(
                        NON_TEMPORAL_COPIES.with(std::cell::Cell::get) > before,
                        dest == Dest::Reused,
                        "offset {offset} shift {shift} {dest:?}: streaming stores are for a \
                         reused destination only"
                    );
                }
                assert!(
                    room[at..at + len] == expect[offset..offset + len],
                    "offset {offset} len {len} shift {shift}"
                );
                assert!(
                    room[..at]
                        .iter()
                        .chain(&room[at + len..])
                        .all(|&b| b == 0xEE),
                    "bytes outside the destination written: offset {offset} shift {shift}"
                );
            }
        }
    }
}

/// The seqlock algorithm above, run by the loom model checker on loom's atomics, which explores
/// every interleaving and every value a Relaxed load may legally return.
#[cfg(test)]
pub(crate) mod model_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU64 as LoomU64;

    impl SeqWord for LoomU64 {
        fn load(&self, order: Ordering) -> u64 {
            LoomU64::load(self, order)
        }
        fn compare_exchange(&self, c: u64, n: u64, s: Ordering, f: Ordering) -> Result<u64, u64> {
            LoomU64::compare_exchange(self, c, n, s, f)
        }
        fn fence(order: Ordering) {
            loom::sync::atomic::fence(order);
        }
        fn fetch_add(&self, v: u64, order: Ordering) -> u64 {
            LoomU64::fetch_add(self, v, order)
        }
    }

    /// Which fence a [`Fenceless`] word drops.
    pub(crate) const BEGIN: u8 = 1;
    pub(crate) const VALIDATE: u8 = 2;
    pub(crate) const TAKE: u8 = 4;

    /// Loom's atomics with some of the protocol's fences removed (a bit set of `BEGIN`,
    /// `VALIDATE`, `TAKE`): the broken seqlocks the checker must reject.
    pub(crate) struct Fenceless<const DROP: u8>(pub(crate) LoomU64);

    impl<const DROP: u8> SeqWord for Fenceless<DROP> {
        fn load(&self, order: Ordering) -> u64 {
            self.0.load(order)
        }
        fn compare_exchange(&self, c: u64, n: u64, s: Ordering, f: Ordering) -> Result<u64, u64> {
            self.0.compare_exchange(c, n, s, f)
        }
        fn fence(order: Ordering) {
            loom::sync::atomic::fence(order);
        }
        fn fetch_add(&self, v: u64, order: Ordering) -> u64 {
            self.0.fetch_add(v, order)
        }
        fn fence_after_begin() {
            if DROP & BEGIN == 0 {
                Self::fence(Ordering::Acquire);
            }
        }
        fn fence_before_validate() {
            if DROP & VALIDATE == 0 {
                Self::fence(Ordering::Acquire);
            }
        }
        fn fence_after_take() {
            if DROP & TAKE == 0 {
                Self::fence(Ordering::Release);
            }
        }
    }

    /// Shared state of the model: the sequence and a two-word "array".
    struct Model<W> {
        seq: W,
        data: [LoomU64; 2],
    }

    /// One write: both words get the version being written.
    fn write<W: SeqWord>(m: &Model<W>) {
        let s = loop {
            match try_begin_write(&m.seq) {
                Ok(s) => break s,
                Err(_) => loom::thread::yield_now(),
            }
        };
        let v = s / 2 + 1;
        m.data[0].store(v, Ordering::Relaxed);
        m.data[1].store(v, Ordering::Relaxed);
        end_write(&m.seq, s).expect("no one else can take the write side in the model");
    }

    /// One read attempt: the snapshot it accepts, if any.
    fn read<W: SeqWord>(m: &Model<W>) -> Option<(u64, [u64; 2])> {
        let s = read_begin(&m.seq).ok()?;
        let d = [
            m.data[0].load(Ordering::Relaxed),
            m.data[1].load(Ordering::Relaxed),
        ];
        read_validate(&m.seq, s).then_some((s / 2, d))
    }

    fn check_model<W: SeqWord + Send + Sync + 'static>(new: fn() -> W, writers: usize) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(move || {
            let m = Arc::new(Model {
                seq: new(),
                data: [LoomU64::new(0), LoomU64::new(0)],
            });
            let handles: Vec<_> = (0..writers)
                .map(|_| {
                    let m = m.clone();
                    loom::thread::spawn(move || write(&*m))
                })
                .collect();
            if let Some((version, d)) = read(&m) {
                // An accepted snapshot is internally consistent and belongs to its version.
                assert_eq!(d, [version, version], "torn snapshot accepted");
            }
            for h in handles {
                h.join().unwrap();
            }
            // Writers excluded each other: every write produced its own version.
            assert_eq!(m.seq.load(Ordering::Relaxed), 2 * writers as u64);
            assert_eq!(read(&m), Some((writers as u64, [writers as u64; 2])));
        });
    }

    /// A reader that starts after a write has completed (it has seen the published sequence)
    /// and then reads: the case where the Acquire fence after the *first* sequence load is
    /// what makes the data visible. (In `check_model` the reader races the writer from the
    /// start, which does not exercise that fence alone.)
    fn check_reader_after_write<W: SeqWord + Send + Sync + 'static>(new: fn() -> W) {
        loom::model(move || {
            let m = Arc::new(Model {
                seq: new(),
                data: [LoomU64::new(0), LoomU64::new(0)],
            });
            // The write of `write`, minus the hint load `try_begin_write` makes before its
            // CAS: with that extra load, loom (0.7) stops exploring the stale data values
            // this model is about (a probe showed the same with plain atomics), so the one
            // write here takes the write side with the CAS alone. The reader is the real one.
            let writer = {
                let m = m.clone();
                loom::thread::spawn(move || {
                    m.seq
                        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                        .unwrap();
                    W::fence_after_take();
                    m.data[0].store(1, Ordering::Relaxed);
                    m.data[1].store(1, Ordering::Relaxed);
                    end_write(&m.seq, 0).unwrap();
                })
            };
            // Wait (without synchronizing) until the write is published.
            while m.seq.load(Ordering::Relaxed) != 2 {
                loom::thread::yield_now();
            }
            if let Some((version, d)) = read(&m) {
                assert_eq!(d, [version, version], "torn snapshot accepted");
            }
            writer.join().unwrap();
        });
    }

    /// The seqlock as implemented, reader starting after a completed write.
    #[test]
    fn model_reader_after_a_completed_write_sees_its_data() {
        check_reader_after_write(|| LoomU64::new(0));
    }

    /// Without the Acquire fence after the first sequence load, a reader that saw the
    /// published sequence may still copy the old data and accept it as the new version.
    #[test]
    #[should_panic(expected = "torn snapshot accepted")]
    fn model_catches_a_missing_fence_after_the_first_sequence_load() {
        check_reader_after_write(|| Fenceless::<BEGIN>(LoomU64::new(0)));
    }

    /// The seqlock as implemented: no torn snapshot is ever accepted, writers exclude each other.
    #[test]
    fn model_reader_never_accepts_a_torn_snapshot() {
        check_model(|| LoomU64::new(0), 1);
    }

    /// Two writers racing: the CAS lets exactly one in at a time.
    #[test]
    fn model_two_writers_exclude_each_other() {
        check_model(|| LoomU64::new(0), 2);
    }

    /// Without the reader's Acquire fences, the same algorithm accepts a torn snapshot, and loom
    /// finds it: this is what shows the model check has teeth.
    #[test]
    #[should_panic(expected = "torn snapshot accepted")]
    fn model_catches_a_missing_reader_fence() {
        check_model(|| Fenceless::<{ BEGIN | VALIDATE }>(LoomU64::new(0)), 1);
    }

    /// Without only the Acquire fence before the re-check, a copy that saw a later writer's
    /// stores may still pass the re-check.
    #[test]
    #[should_panic(expected = "torn snapshot accepted")]
    fn model_catches_a_missing_fence_before_the_recheck() {
        check_model(|| Fenceless::<VALIDATE>(LoomU64::new(0)), 1);
    }

    /// Without the writer's Release fence after the CAS, data stores may become visible before
    /// the odd sequence; loom finds the torn snapshot.
    #[test]
    #[should_panic(expected = "torn snapshot accepted")]
    fn model_catches_a_missing_writer_fence() {
        check_model(|| Fenceless::<TAKE>(LoomU64::new(0)), 1);
    }
}
