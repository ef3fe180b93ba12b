//! The slot protocol of the module docs, as code generic over its atomic words, so that the
//! loom model checker runs exactly this algorithm (see `model_tests`).
//!
//! Nothing here sleeps, allocates on the fast path or trusts a value from the control file:
//! every slot index read from it is checked against the slot count, and arithmetic on shared
//! values wraps instead of panicking.

use std::sync::atomic::Ordering::{self, AcqRel, Acquire, Relaxed, Release, SeqCst};

use super::layout::{
    CONFIG_DEMOTED, CONFIG_EVICTED, CONFIG_HELD_MASK, CONFIG_LOSSLESS, CONFIG_STARTED, MAX_HELD,
    OWNER_RECLAIMING, Record,
};

/// Whether a record's owner word is still `me` (checked again after a hold's fence: a
/// subscriber that was reclaimed while alive must not use what is now someone else's record).
fn still_owner<W: Word>(ring: &Ring<'_, W>, record: usize, me: u64) -> bool {
    ring.records[record].owner.load(Relaxed) == me
}

/// The operations the protocol needs from a shared `u64` word, and its fences.
///
/// Implemented for `std`'s `AtomicU64` (mappings) and, in tests, for loom's. The fence hooks
/// are separate methods only so that the model tests can remove one at a time.
pub(crate) trait Word: Sync {
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, value: u64, order: Ordering);
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
    fn fence(order: Ordering);

    /// The subscriber's fence between storing its hold and re-checking the tag.
    #[inline]
    fn fence_after_hold() {
        Self::fence(SeqCst);
    }

    /// The publisher's fence between taking a tag back and scanning the holds.
    #[inline]
    fn fence_after_take_back() {
        Self::fence(SeqCst);
    }

    /// A new subscriber's fence between recording its mode and cursor and reading
    /// `PUBLISHED` for its starting point.
    #[inline]
    fn fence_in_subscribe() {
        Self::fence(SeqCst);
    }

    /// The publisher's fence at the end of a publish, before it reads `SLEEPERS` (the
    /// waker's fence of the sleep handshake, module `sleep`) and before its next loan reads
    /// cursors (pairing with `fence_in_subscribe`).
    #[inline]
    fn fence_after_publish() {
        Self::fence(SeqCst);
    }

    /// A `latest()` that did not find the newest frame: its fence between the search's tag
    /// loads and its re-read of `PUBLISHED`.
    #[inline]
    fn fence_before_reread() {
        Self::fence(Acquire);
    }

    /// A reclaimer's fence between marking a record as being freed and clearing its holds.
    #[inline]
    fn fence_in_free() {
        Self::fence(SeqCst);
    }

    /// Whether the publisher scans the holds at all (false only in a model test).
    const SCAN_HOLDS: bool = true;

    /// Whether the publisher respects lossless cursors (false only in a model test).
    const KEEP_LOSSLESS: bool = true;

    /// Whether a reclaim marks the record as being reclaimed while it clears it (false only
    /// in a model test, where the record is freed first and cleared after).
    const RECLAIM_MARKS_FIRST: bool = true;

    /// Whether a subscriber starting at the oldest frame records cursor 0 before its fence
    /// (false only in a model test, where it records `PUBLISHED` as a `Next` start does).
    const LOW_FIRST_CURSOR: bool = true;
}

impl Word for std::sync::atomic::AtomicU64 {
    #[inline]
    fn load(&self, order: Ordering) -> u64 {
        std::sync::atomic::AtomicU64::load(self, order)
    }
    #[inline]
    fn store(&self, value: u64, order: Ordering) {
        std::sync::atomic::AtomicU64::store(self, value, order);
    }
    #[inline]
    fn compare_exchange(&self, c: u64, n: u64, s: Ordering, f: Ordering) -> Result<u64, u64> {
        std::sync::atomic::AtomicU64::compare_exchange(self, c, n, s, f)
    }
    #[inline]
    fn fence(order: Ordering) {
        std::sync::atomic::fence(order);
    }
}

/// One slot's entry in the slot table: its tag and its publish time, side by side so that a
/// subscriber gets both with one cache line.
#[repr(C)]
pub(crate) struct SlotWords<W> {
    /// 0, or the frame number + 1 it holds (with `TAKEN_BACK` once taken back).
    pub(crate) tag: W,
    /// Publish time of that frame, ns since the Unix epoch.
    pub(crate) time: W,
}

/// The slot table: per slot, its tag and publish time, `stride` words from one slot's to the
/// next's: 2 in the packed table of streams made without `FEATURE_SLOT_LINES` (four slots to a
/// cache line), 8 with it (a cache line per slot, so that a loan made right after a publish
/// does not touch the line a subscriber is polling: docs/FORMAT.md, "Slot lines").
pub(crate) struct SlotTable<'a, W> {
    words: &'a [W],
    stride: usize,
    /// `words.len() / stride`, kept: a division on every use would cost more than the use.
    slots: usize,
}

impl<W> Clone for SlotTable<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W> Copy for SlotTable<'_, W> {}

impl<'a, W> SlotTable<'a, W> {
    /// The table of `slots` slots, `stride` words apart, in `words`.
    ///
    /// # Panics
    /// If `stride` is below 2 or the words are not `slots` strides (a bug of the caller: the
    /// layout is the header's, checked at open).
    pub(crate) fn new(words: &'a [W], stride: usize, slots: usize) -> SlotTable<'a, W> {
        assert!(
            stride >= 2 && slots.checked_mul(stride) == Some(words.len()),
            "a slot table of {} words for {slots} slots of stride {stride}",
            words.len()
        );
        SlotTable {
            words,
            stride,
            slots,
        }
    }

    /// Slots in the table.
    pub(crate) fn len(&self) -> usize {
        self.slots
    }

    /// Slot `i`'s tag and time.
    pub(crate) fn get(&self, i: usize) -> &'a SlotWords<W> {
        let pair = &self.words[i * self.stride..i * self.stride + 2];
        // SAFETY: `SlotWords<W>` is `repr(C)` with two `W` fields, laid out as `[W; 2]`;
        // `pair` is two consecutive `W`s that live as long as `'a`.
        unsafe { &*pair.as_ptr().cast::<SlotWords<W>>() }
    }

    /// Every slot's entry, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a SlotWords<W>> + 'a {
        let table = *self;
        (0..table.len()).map(move |i| table.get(i))
    }
}

impl<'a, W> std::ops::Index<usize> for SlotTable<'a, W> {
    type Output = SlotWords<W>;
    fn index(&self, i: usize) -> &SlotWords<W> {
        self.get(i)
    }
}

/// The shared words of one stream. `slots` has one entry per slot; its length is the slot
/// count, taken from the data file's header.
pub(crate) struct Ring<'a, W> {
    /// Frames published so far (data file).
    pub(crate) published: &'a W,
    /// Per slot: its tag and publish time (data file).
    pub(crate) slots: SlotTable<'a, W>,
    /// Subscriber records (control file).
    pub(crate) records: &'a [Record<W>],
    /// Holds granted out of the hold capacity (control file).
    pub(crate) budget: &'a W,
}

/// A tag with this bit set names a frame that was taken back: no longer offered to
/// subscribers, but possibly still held by one (so the slot is not reused yet). The other bits
/// are the frame's tag, which is what lets a holder tell that its slot was never reused.
pub(crate) const TAKEN_BACK: u64 = 1 << 63;

/// A Relaxed load followed by an Acquire fence: an Acquire load that is also valid on a
/// read-only mapping (the Rust memory model promises only Relaxed loads there).
#[inline]
fn load_acquire<W: Word>(word: &W) -> u64 {
    let v = word.load(Relaxed);
    W::fence(Acquire);
    v
}

// ---------------------------------------------------------------------------------------------
// Publisher

/// What the publisher keeps in its own memory: the next frame number and its copy of the tags
/// (it is their only writer).
#[derive(Debug)]
pub(crate) struct PublisherState {
    pub(crate) next: u64,
    pub(crate) tags: Vec<u64>,
    /// The newest frames it never takes back: the stream's history, at least 1 (but for
    /// newest-first loans, which may take back even the newest frame: [`try_loan`]).
    pub(crate) keep: u64,
    /// Loans reuse the slot of the *newest* frame nobody can want any more, rather than the
    /// oldest's, when the stream keeps no history and has no lossy subscriber (see
    /// [`try_loan`]).
    pub(crate) newest_first: bool,
}

impl PublisherState {
    /// The same publisher, keeping the newest `history` frames offered (at least the newest
    /// one, which every stream keeps).
    pub(crate) fn keeping(mut self, history: u32) -> PublisherState {
        self.keep = crate::format::frames_kept(history);
        self
    }

    /// The same publisher, reusing the newest free frame's slot first when it may.
    pub(crate) fn newest_first(mut self, yes: bool) -> PublisherState {
        self.newest_first = yes;
        self
    }
}

/// Takes over the publishing side of `ring` (the caller owns the publisher word). The
/// numbering continues from the highest frame any slot holds: a previous publisher that died
/// between storing a tag and storing `PUBLISHED` had completed that frame, so it is published
/// now rather than numbered twice.
pub(crate) fn attach<W: Word>(ring: &Ring<'_, W>) -> PublisherState {
    let published = load_acquire(ring.published);
    let tags: Vec<u64> = ring.slots.iter().map(|s| s.tag.load(Relaxed)).collect();
    W::fence(Acquire);
    let next = tags
        .iter()
        .map(|&t| t & !TAKEN_BACK)
        .fold(published, u64::max);
    if next != published {
        // Release: pairs with subscribers' Acquire of PUBLISHED, as a publish's store does.
        ring.published.store(next, Release);
    }
    // Pairs with a new lossless subscriber's fence (see `subscribe`): from here on, our reads
    // of cursors see it, or it starts after every frame we could take back.
    W::fence(SeqCst);
    PublisherState {
        next,
        tags,
        keep: 1,
        newest_first: false,
    }
}

/// The lowest cursor among the lossless subscribers (`u64::MAX` when there are none): frames
/// at or above it must not be taken back. And whether a lossy subscriber is there (one that
/// may still want the oldest frames offered).
fn lossless_floor<W: Word>(ring: &Ring<'_, W>) -> (u64, bool) {
    let mut floor = u64::MAX;
    let mut lossy = false;
    for record in ring.records {
        // Relaxed: the fence below orders these before everything the loan does next.
        if record.owner.load(Relaxed) != 0 {
            if record.config.load(Relaxed) & CONFIG_LOSSLESS != 0 {
                floor = floor.min(record.cursor.load(Relaxed));
            } else {
                lossy = true;
            }
        }
    }
    // Acquire: pairs with the Release store of a lossless subscriber's cursor, so a cursor
    // past frame g comes with the hold that subscriber stored before advancing it.
    W::fence(Acquire);
    (floor, lossy)
}

/// Whether any subscriber records a hold on `slot`.
fn is_held<W: Word>(ring: &Ring<'_, W>, slot: usize) -> bool {
    let want = slot as u64 + 1;
    let held = ring.records.iter().any(|record| {
        if record.owner.load(Relaxed) == 0 {
            return false;
        }
        let granted = (record.config.load(Relaxed) & CONFIG_HELD_MASK) as usize;
        record.held[..granted.min(MAX_HELD)]
            .iter()
            .any(|h| h.load(Relaxed) == want)
    });
    // Acquire: pairs with the Release store of a hold's release, so a subscriber's reads of
    // the old frame happen-before the writes of the new one.
    W::fence(Acquire);
    held
}

/// Finds a free slot for the next frame, or `None` when every slot is held, among the newest
/// `keep` (the history), or still needed by a lossless subscriber: first a slot that offers
/// no frame, then the oldest frame's. Slots whose tags it takes back stay empty (a frame a lossless subscriber needs is
/// never taken back).
pub(crate) fn try_loan<W: Word>(ring: &Ring<'_, W>, state: &mut PublisherState) -> Option<usize> {
    if state.newest_first && state.keep == 1 {
        let (floor, lossy) = lossless_floor(ring);
        if !lossy {
            // The slots that offer no frame are the cold ones here (see `loan_newest_free`):
            // they come last.
            return loan_newest_free(ring, state, floor).or_else(|| loan_unoffered(ring, state));
        }
    }
    // A slot that offers no frame (never used, a dropped loan's, or one taken back while it
    // was held) costs nobody a frame: it goes first, if no hold names it.
    if let Some(slot) = loan_unoffered(ring, state) {
        return Some(slot);
    }
    let slots = state.tags.len();
    let next = state.next;
    let (floor, _) = lossless_floor(ring);
    // In steady state slot `next % slots` holds the oldest frame; ring order from there is
    // oldest first.
    let start = (next % slots as u64) as usize;
    for k in 0..slots {
        let slot = (start + k) % slots;
        if let Some(slot) = take_back_for_loan(ring, state, slot, floor, state.keep) {
            return Some(slot);
        }
    }
    // The scan looks at one slot at a time, so a lossy subscriber moving its hold from slot
    // to slot can make every check fail although a slot was free at every instant. Slots
    // taken back above can only be held transiently now: one more look at them.
    loan_unoffered(ring, state)
}

/// With no history and no lossy subscriber, the oldest frame is of no more use than any
/// other frame every lossless subscriber has passed: the loan takes the slot of the *newest*
/// such frame. That may be the newest frame of all: with no history it is kept offered only
/// for `latest()`, and every subscriber there is lossless and has taken it (or skipped it), so
/// a `latest()` would only give it again. A pipeline that keeps up then writes every frame
/// into the slot its subscribers just released, in the caches, instead of into one read a
/// whole ring (or, keeping the newest frame, one frame) ago. Tries the candidates newest
/// first, as [`try_loan`]'s scan tries them oldest first.
///
/// The frames older than the one loaned that could go as well are taken back at the same
/// time (not loaned: their slots keep their bytes until a later loan finds no offered frame
/// free and takes one of them, after the usual hold scan). Nobody can want them, and left
/// offered they would stay in the slots this order no longer cycles through, so that a
/// subscriber starting at the oldest frame offered would start at frames from long ago, with
/// a gap after them: the frames offered stay consecutive, as oldest-first loans keep them.
fn loan_newest_free<W: Word>(
    ring: &Ring<'_, W>,
    state: &mut PublisherState,
    floor: u64,
) -> Option<usize> {
    // The frame a tag offers, if a loan may take it back (the conditions of
    // `take_back_for_loan`; tags are the publisher's own copies).
    let may_go = |state: &PublisherState, tag: u64| -> Option<u64> {
        if tag == 0 || tag & TAKEN_BACK != 0 {
            return None;
        }
        let frame = tag - 1;
        (frame < state.next && (!W::KEEP_LOSSLESS || frame < floor)).then_some(frame)
    };
    let mut below = u64::MAX;
    let (slot, loaned) = loop {
        let (slot, frame) = state
            .tags
            .iter()
            .enumerate()
            .filter_map(|(slot, &tag)| may_go(state, tag).map(|frame| (slot, frame)))
            .filter(|&(_, frame)| frame < below)
            .max_by_key(|&(_, frame)| frame)?;
        if let Some(slot) = take_back_for_loan(ring, state, slot, floor, 0) {
            break (slot, frame);
        }
        below = frame;
    };
    for other in 0..state.tags.len() {
        let tag = state.tags[other];
        if may_go(state, tag).is_some_and(|frame| frame < loaned) {
            // Relaxed, as every take-back: a subscriber's hold re-check sees it, or the
            // hold scan of the loan that reuses the slot (after its fence) sees the hold.
            ring.slots[other].tag.store(tag | TAKEN_BACK, Relaxed);
            state.tags[other] = tag | TAKEN_BACK;
        }
    }
    Some(slot)
}

/// Takes back the frame in `slot` and loans the slot, if the frame may go: it is not among
/// the newest `keep` (the state's, or 0 for [`loan_newest_free`]), every lossless subscriber
/// is past it (`floor`), and nobody holds it. A frame that is still held stays taken back
/// (offered to nobody) until its holder lets go.
fn take_back_for_loan<W: Word>(
    ring: &Ring<'_, W>,
    state: &mut PublisherState,
    slot: usize,
    floor: u64,
    keep: u64,
) -> Option<usize> {
    let next = state.next;
    let tag = state.tags[slot];
    if tag == 0 || tag & TAKEN_BACK != 0 {
        // Offers no frame: `loan_unoffered` looked at it just before, and looks again
        // after the scan.
        return None;
    }
    let frame = tag - 1;
    // The newest `keep` frames stay offered: the history, and the newest frame that
    // `latest()` takes. (`frame + keep >= next`, without overflow: a scribbled tag cannot
    // reach here, since only this publisher stores tags.)
    if frame.saturating_add(keep) >= next || (W::KEEP_LOSSLESS && frame >= floor) {
        return None;
    }
    // Relaxed: ordered before the hold scan by the SeqCst fence below.
    ring.slots[slot].tag.store(tag | TAKEN_BACK, Relaxed);
    state.tags[slot] = tag | TAKEN_BACK;
    // Pairs with `fence_after_hold`: a subscriber that stored its hold before this fence
    // is seen below; one that stores it after sees the taken-back tag and lets go.
    W::fence_after_take_back();
    if W::SCAN_HOLDS && is_held(ring, slot) {
        // Still held: it stays taken back (and its holder's frame intact) for now.
        return None;
    }
    // On loan: tag 0 from here until the publish. The Release fence orders it before
    // the frame's writes, for `Sample::is_intact` of a holder whose hold was erased.
    ring.slots[slot].tag.store(0, Relaxed);
    W::fence(Release);
    state.tags[slot] = 0;
    Some(slot)
}

/// Loans a slot whose tag is 0 or taken back (it offers no frame) and that nobody holds.
fn loan_unoffered<W: Word>(ring: &Ring<'_, W>, state: &mut PublisherState) -> Option<usize> {
    for slot in 0..state.tags.len() {
        let tag = state.tags[slot];
        if tag & TAKEN_BACK != 0 || tag == 0 {
            // The pairing with `fence_after_hold` is already made by the fence that followed
            // the take-back (in `try_loan`, in this call or an earlier one; or `attach`'s for a
            // previous publisher's), which also precedes the hold scan below in program order;
            // a tag of 0 never validates a hold. So this fence is redundant, and removing it
            // is an equivalent mutation (the loom models pass without it: docs/TESTING.md). It
            // is kept so that each look stands on its own; it runs only for slots that offer
            // no frame, which steady streaming does not have.
            W::fence_after_take_back();
            if !(W::SCAN_HOLDS && is_held(ring, slot)) {
                ring.slots[slot].tag.store(0, Relaxed);
                W::fence(Release);
                state.tags[slot] = 0;
                return Some(slot);
            }
        }
    }
    None
}

/// Publishes the frame written into the loaned `slot` and returns its number.
///
/// Ends with a SeqCst fence: the caller reads the sleeper count next (to wake only when
/// someone sleeps), and the next loan reads cursors; both pair with fences on the other side.
pub(crate) fn publish<W: Word>(
    ring: &Ring<'_, W>,
    state: &mut PublisherState,
    slot: usize,
    now_ns: u64,
) -> u64 {
    let frame = state.next;
    let tag = frame.wrapping_add(1);
    // Relaxed: published by the Release store of the tag just below.
    ring.slots[slot].time.store(now_ns, Relaxed);
    // Release: the frame's bytes and time happen-before a subscriber's Acquire of this tag.
    ring.slots[slot].tag.store(tag, Release);
    // Release: pairs with the subscriber's Acquire of PUBLISHED; the tag store above is then
    // visible to its slot search.
    ring.published.store(tag, Release);
    state.tags[slot] = tag;
    state.next = tag;
    W::fence_after_publish();
    frame
}

// ---------------------------------------------------------------------------------------------
// Subscriber

/// What a subscriber keeps in its own memory.
#[derive(Debug)]
pub(crate) struct SubscriberState {
    /// Index of its record.
    pub(crate) record: usize,
    /// The next frame it wants.
    pub(crate) cursor: u64,
    /// Frames skipped since the last sample it took (reported with the next one).
    pub(crate) pending_missed: u64,
    /// Frames skipped in all.
    pub(crate) missed: u64,
    /// Frames taken in all.
    pub(crate) received: u64,
    /// A hold was stored and dropped again since the caller last looked (a waiting publisher
    /// may have seen it and must be woken).
    pub(crate) dropped_a_hold: bool,
    /// Its identity word (the record's owner while the record is its own).
    pub(crate) me: u64,
    /// Its record was found reclaimed: it must stop.
    pub(crate) lost: bool,
}

impl SubscriberState {
    /// A subscriber of `record` (its identity word `me`) whose next frame is `cursor`, with
    /// nothing taken, missed or lost yet.
    pub(crate) fn new(record: usize, cursor: u64, me: u64) -> SubscriberState {
        SubscriberState {
            record,
            cursor,
            pending_missed: 0,
            missed: 0,
            received: 0,
            dropped_a_hold: false,
            me,
            lost: false,
        }
    }
}

/// Where a new subscriber starts.
pub use super::subscriber::StartAt;

/// A frame a subscriber now holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) slot: usize,
    pub(crate) number: u64,
    pub(crate) missed_before: u64,
}

/// How many times a receive looks again after losing a race with the publisher before it
/// reports "nothing yet" (its caller waits and tries again).
const ATTEMPTS: usize = 64;

/// The same for `latest()`, which has no caller loop: it gives up only if the newest frame
/// keeps vanishing this many times in a row, which needs a publisher publishing thousands of
/// frames within the few nanoseconds between our search and our check (or a publisher that
/// breaks the protocol).
const LATEST_ATTEMPTS: usize = 1 << 16;

/// Claims a free record for `owner` (a process identity word, never 0).
#[cfg(test)]
pub(crate) fn claim_record<W: Word>(ring: &Ring<'_, W>, owner: u64) -> Option<usize> {
    claim_record_locked(ring, owner, |_| true, |_| {})
}

/// [`claim_record`], taking each candidate's liveness lock first (`lock(r)`: false if someone
/// else holds it, a subscriber still claiming or a reclaimer at work) and giving it back
/// (`unlock(r)`) if the record was taken meanwhile. A record is thus never owned without its
/// owner's lock held from before the claim: a reclaimer that gets the lock knows the owner is
/// gone.
pub(crate) fn claim_record_locked<W: Word>(
    ring: &Ring<'_, W>,
    owner: u64,
    lock: impl Fn(usize) -> bool,
    unlock: impl Fn(usize),
) -> Option<usize> {
    for (r, record) in ring.records.iter().enumerate() {
        if record.owner.load(Relaxed) != 0 || !lock(r) {
            continue;
        }
        // AcqRel: Acquire pairs with the Release that freed the record (its previous owner's
        // stores are done); Release is not needed but harmless.
        if record
            .owner
            .compare_exchange(0, owner, AcqRel, Relaxed)
            .is_ok()
        {
            return Some(r);
        }
        unlock(r);
    }
    None
}

/// The publisher's stall policy at work: makes the lossless subscribers whose cursor holds it
/// back (the lowest one) lossy, marking them demoted (and evicted, with `evict`) in their
/// `config` with a compare-and-swap (a record freed or changed meanwhile is left alone).
/// Returns how many it demoted. The next loan's floor no longer counts them, and their own
/// receives are the lossy ones they always were: a frame taken back under them is skipped
/// and counted as missed.
pub(crate) fn demote_laggards<W: Word>(ring: &Ring<'_, W>, evict: bool) -> usize {
    let (floor, _) = lossless_floor(ring);
    if floor == u64::MAX {
        return 0;
    }
    let mark = CONFIG_DEMOTED | if evict { CONFIG_EVICTED } else { 0 };
    ring.records
        .iter()
        .filter(|rec| {
            let config = rec.config.load(Relaxed);
            // A subscription still starting has a provisional, low cursor: it is not the
            // laggard (it raises the cursor in a moment).
            rec.owner.load(Relaxed) != 0
                && config & CONFIG_LOSSLESS != 0
                && config & CONFIG_STARTED != 0
                && rec.cursor.load(Relaxed) == floor
                && rec
                    .config
                    .compare_exchange(config, (config & !CONFIG_LOSSLESS) | mark, Relaxed, Relaxed)
                    .is_ok()
        })
        .count()
}

/// Takes up to `want` holds from the budget of `capacity`; returns how many were granted
/// (0 when the budget is used up).
pub(crate) fn take_budget<W: Word>(ring: &Ring<'_, W>, want: u64, capacity: u64) -> u64 {
    let mut used = ring.budget.load(Relaxed);
    loop {
        let grant = want.min(capacity.saturating_sub(used));
        if grant == 0 {
            return 0;
        }
        match ring
            .budget
            .compare_exchange(used, used + grant, Relaxed, Relaxed)
        {
            Ok(_) => return grant,
            Err(now) => used = now,
        }
    }
}

/// Gives `holds` back to the budget (never below zero, whatever a scribbler stored).
pub(crate) fn return_budget<W: Word>(ring: &Ring<'_, W>, holds: u64) {
    let mut used = ring.budget.load(Relaxed);
    while let Err(now) =
        ring.budget
            .compare_exchange(used, used.saturating_sub(holds), Relaxed, Relaxed)
    {
        used = now;
    }
}

/// Starts subscriber `record` (already claimed) with `holds` granted holds; returns its first
/// cursor: the first frame published after this call.
#[cfg(test)]
pub(crate) fn subscribe<W: Word>(
    ring: &Ring<'_, W>,
    record: usize,
    holds: u64,
    lossless: bool,
) -> u64 {
    subscribe_with(ring, record, holds, lossless, 0, StartAt::Next).cursor
}

/// Subscribers attached: records in use whose subscription has started (`CONFIG_STARTED`; a
/// record being claimed or freed is not counted). Relaxed loads: a waiter's look after its
/// fences (module `sleep`), a statistic otherwise.
pub(crate) fn started_subscribers<W: Word>(records: &[Record<W>]) -> usize {
    records
        .iter()
        .filter(|r| {
            let owner = r.owner.load(Relaxed);
            owner != 0 && owner != OWNER_RECLAIMING && r.config.load(Relaxed) & CONFIG_STARTED != 0
        })
        .count()
}

/// Where a new subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Started {
    /// The first frame it will take.
    pub(crate) cursor: u64,
    /// Frames from the one it asked for (`StartAt::Frame`) that were no longer offered: its
    /// first misses, reported with its first frame.
    pub(crate) skipped: u64,
    /// The record was marked started (false: it was freed meanwhile, we were judged dead).
    pub(crate) marked: bool,
}

/// The largest frame number a subscriber may start at: frame numbers, and so tags (frame
/// number + 1), stay below bit 63 (`TAKEN_BACK`).
pub(crate) const MAX_START: u64 = TAKEN_BACK - 2;

/// [`subscribe`], with `extra` bits in the record's `config` (`CONFIG_UNLOCKED`), starting at
/// `start` (a `Frame(n)` with `n <= MAX_START`: the caller checks).
///
/// A lossless subscriber's first cursor is the lowest frame it may want (`PUBLISHED` for
/// `Next`, 0 for `Oldest`, `n` for `Frame(n)`), stored before the mode and the fence: a loan
/// whose floor read follows the fence keeps every frame from there, so what the subscriber
/// finds offered after the fence stays offered for it. Its final cursor is never below the
/// oldest frame offered then (a `Frame(n)` older than that counts the frames between as
/// skipped), so that its cursor does not hold the publisher back for frames that are gone
/// (nor make it the laggard a stall policy demotes). Last, it marks the record started.
pub(crate) fn subscribe_with<W: Word>(
    ring: &Ring<'_, W>,
    record: usize,
    holds: u64,
    lossless: bool,
    extra: u64,
    start: StartAt,
) -> Started {
    let rec = &ring.records[record];
    for h in &rec.held {
        h.store(0, Relaxed);
    }
    rec.missed.store(0, Relaxed);
    rec.received.store(0, Relaxed);
    // A cursor no higher than any frame the publisher might still keep for us, before the
    // mode that makes the publisher respect it.
    let lowest = match start {
        StartAt::Next => load_acquire(ring.published),
        StartAt::Oldest if W::LOW_FIRST_CURSOR => 0,
        StartAt::Oldest => load_acquire(ring.published),
        StartAt::Frame(n) => n,
    };
    rec.cursor.store(lowest, Relaxed);
    let lossless_bit = if lossless { CONFIG_LOSSLESS } else { 0 };
    rec.config
        .store(holds.min(MAX_HELD as u64) | lossless_bit | extra, Release);
    // Pairs with the publisher's fence after a publish (and in `attach`): either its next
    // loan sees this record, or the load below sees its newest PUBLISHED (and the scan for
    // the oldest frame sees every tag that loan could still take back).
    W::fence_in_subscribe();
    let started = match start {
        StartAt::Next => Started {
            cursor: load_acquire(ring.published),
            skipped: 0,
            marked: false,
        },
        StartAt::Oldest => Started {
            cursor: oldest_offered(ring),
            skipped: 0,
            marked: false,
        },
        StartAt::Frame(n) => {
            let oldest = oldest_offered(ring);
            Started {
                cursor: n.max(oldest),
                skipped: oldest.saturating_sub(n),
                marked: false,
            }
        }
    };
    let mut started = started;
    rec.cursor.store(started.cursor, Release);
    if started.skipped > 0 {
        rec.missed.store(started.skipped, Relaxed);
    }
    // Release: whoever counts started records (and reads their cursors) sees the final one.
    // A compare-and-swap loop, not a store: the publisher may demote the record meanwhile.
    let stored = rec.config.load(Relaxed);
    let mut config = stored;
    // Only the publisher's demotion may have changed the record meanwhile (the mode bits);
    // anything else means a freer cleared it (we were judged dead), perhaps for a new owner
    // already: then nothing is marked.
    let ours = |c: u64| (c ^ stored) & !(CONFIG_LOSSLESS | CONFIG_DEMOTED | CONFIG_EVICTED) == 0;
    while ours(config) {
        match rec
            .config
            .compare_exchange(config, config | CONFIG_STARTED, Release, Relaxed)
        {
            Ok(_) => {
                started.marked = true;
                break;
            }
            Err(now) => config = now,
        }
    }
    started
}

/// The oldest frame still offered (not taken back, at most the `PUBLISHED` read), or
/// `PUBLISHED` when none is: where a subscriber starting at the oldest frame starts.
pub(crate) fn oldest_offered<W: Word>(ring: &Ring<'_, W>) -> u64 {
    let published = load_acquire(ring.published);
    ring.slots
        .iter()
        .map(|s| s.tag.load(Relaxed))
        .filter(|&t| t != 0 && t & TAKEN_BACK == 0 && t <= published)
        .map(|t| t - 1)
        .min()
        .unwrap_or(published)
}

/// What freeing a record found in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Freed {
    /// It was counted in `SLEEPERS` (its owner died asleep): the caller takes it out.
    pub(crate) was_sleeping: bool,
    /// Its subscription had started (`CONFIG_STARTED`): the caller counts a leave.
    pub(crate) was_started: bool,
}

/// Frees `record` if its owner word is still `owner` (or, with `owner ==
/// OWNER_RECLAIMING`, if it is stuck being freed by a process `reclaimer_dead` says is dead,
/// or by nobody). `me` is the freeing process's identity word.
///
/// The steps, each of which the next freer can see: (1) become the record's `reclaimer`
/// (CAS from 0, or from a dead reclaimer); (2) mark `owner` as being freed (CAS from
/// `owner`); (3) clear `config` and the holds (Release: the holder's reads of its frames
/// happen-before a publisher that reads the cleared values reuses the slots); (4) `owner`
/// back to 0 (CAS, Release: a claimer finds the record cleared); (5) give up `reclaimer`;
/// (6) return the holds to the budget. A freer that dies between (1) and (5) leaves a mark
/// naming it, which the next freer can take over once it is positively dead. Never touches a
/// record someone else owns or is freeing.
pub(crate) fn free_record<W: Word>(
    ring: &Ring<'_, W>,
    record: usize,
    owner: u64,
    me: u64,
    reclaimer_dead: impl Fn(u64) -> bool,
) -> Option<Freed> {
    let rec = &ring.records[record];
    if owner == 0 {
        return None;
    }
    let current = rec.reclaimer.load(Acquire);
    if current != 0 && !reclaimer_dead(current) {
        return None;
    }
    rec.reclaimer
        .compare_exchange(current, me, AcqRel, Relaxed)
        .ok()?;
    let give_up = || {
        let _ = rec.reclaimer.compare_exchange(me, 0, Release, Relaxed);
    };
    let mark = if W::RECLAIM_MARKS_FIRST {
        OWNER_RECLAIMING
    } else {
        0
    };
    let marked = if owner == OWNER_RECLAIMING {
        rec.owner.load(Acquire) == OWNER_RECLAIMING
    } else {
        rec.owner
            .compare_exchange(owner, mark, AcqRel, Relaxed)
            .is_ok()
    };
    if !marked {
        give_up();
        return None;
    }
    // SeqCst: pairs with the fence a subscriber makes after storing a hold, before it
    // re-checks that the record is still its own (`hold`): either it sees our mark and undoes
    // its hold, or our clears below come after its hold in that word's order. So no hold
    // outlives the free. Without the fence (the C++ model allows it; loom shows it) a hold
    // could land after our clear while its subscriber still read its own owner word: it
    // would then sit in a record that is free, and soon someone else's, as a phantom hold, or
    // overwriting that owner's own hold and leaving the frame it reads unprotected. (What the
    // fence cannot prevent: a subscriber misjudged dead keeps storing its cursor and counters
    // into the record until it sees the mark, and its undo of a hold, a compare-and-swap on
    // the slot alone, could erase a next owner's hold of the same slot in the same entry if
    // the record was freed and claimed again in between. Both need the daemon to misjudge a
    // live subscriber, which the liveness locks rule out short of a scribbler.)
    W::fence_in_free();
    // Read and cleared in one step (below), so that a subscription marking itself started
    // meanwhile is not missed.
    let mut config = rec.config.load(Relaxed);
    let holds = config & CONFIG_HELD_MASK;
    // Only whoever clears the flag takes the sleeper out of SLEEPERS: a live subscriber
    // reclaimed while asleep must not take itself out a second time when it wakes.
    let seen = rec.sleeping.load(Relaxed);
    let was_sleeping = seen != 0
        && rec
            .sleeping
            .compare_exchange(seen, 0, Relaxed, Relaxed)
            .is_ok();
    while let Err(now) = rec.config.compare_exchange(config, 0, Release, Relaxed) {
        config = now;
    }
    for h in &rec.held {
        h.store(0, Release);
    }
    if W::RECLAIM_MARKS_FIRST {
        let _ = rec
            .owner
            .compare_exchange(OWNER_RECLAIMING, 0, Release, Relaxed);
    }
    give_up();
    return_budget(ring, holds);
    Some(Freed {
        was_sleeping,
        was_started: config & CONFIG_STARTED != 0,
    })
}

/// Frees this subscriber's own `record` (which holds nothing any more). Does nothing if the
/// record is no longer its own (it was reclaimed: judged dead).
pub(crate) fn unsubscribe<W: Word>(
    ring: &Ring<'_, W>,
    record: usize,
    owner: u64,
    me: u64,
    reclaimer_gone: impl Fn(u64) -> bool,
) -> Option<Freed> {
    // A registered reclaimer that is still at work (it judged us dead) frees the record
    // itself; one that is gone (or a scribble) is ours to take over. A freer stays
    // registered for a few instructions after it has put the owner word back to 0, so a
    // record claimed in that moment may see it: look again a few times while the record is
    // still ours.
    for _ in 0..1000 {
        if let Some(freed) = free_record(ring, record, owner, me, &reclaimer_gone) {
            return Some(freed);
        }
        if ring.records[record].owner.load(Acquire) != owner {
            return None;
        }
        std::thread::yield_now();
    }
    None
}

/// Frees the record of a subscriber known to be dead, if its owner word is still `owner`.
/// Returns what it found, or `None` if this call did not free it.
pub(crate) fn reclaim<W: Word>(
    ring: &Ring<'_, W>,
    record: usize,
    owner: u64,
    me: u64,
    reclaimer_dead: impl Fn(u64) -> bool,
) -> Option<Freed> {
    if owner == OWNER_RECLAIMING {
        return None;
    }
    free_record(ring, record, owner, me, reclaimer_dead)
}

/// Finds the slot holding tag `want`, or (unless `exact`) the slot holding the lowest tag
/// above it. Tags are read Relaxed: the caller validates its choice after its hold.
fn find<W: Word>(
    ring: &Ring<'_, W>,
    want: u64,
    exact: bool,
    published: u64,
) -> Option<(usize, u64)> {
    let slots = ring.slots.len();
    let hint = (want.wrapping_sub(1) % slots as u64) as usize;
    if ring.slots[hint].tag.load(Relaxed) == want {
        return Some((hint, want));
    }
    let mut best: Option<(usize, u64)> = None;
    for (slot, entry) in ring.slots.iter().enumerate() {
        let tag = entry.tag.load(Relaxed);
        if tag == want {
            return Some((slot, tag));
        }
        // Only frames below the PUBLISHED read are sure to show their tags here (tags of
        // later ones may still look stale): skip only to those.
        if !exact
            && tag > want
            && tag <= published
            && tag & TAKEN_BACK == 0
            && best.is_none_or(|(_, b)| tag < b)
        {
            best = Some((slot, tag));
        }
    }
    best
}

/// Records a hold of `slot` in `entry` and checks that it still has `tag`; lets go if not.
fn hold<W: Word>(
    ring: &Ring<'_, W>,
    state: &mut SubscriberState,
    entry: usize,
    slot: usize,
    tag: u64,
) -> Hold {
    let held = &ring.records[state.record].held[entry];
    // Release, although the fence below orders it before the re-check: this entry may have
    // held another slot just before, and a publisher that reads this new value instead of
    // that slot's release must still find our reads of it done (C++20 release sequences do
    // not extend over later plain stores; loom finds the overwrite with Relaxed here).
    held.store(slot as u64 + 1, Release);
    // Pairs with the publisher's `fence_after_take_back`.
    W::fence_after_hold();
    if !still_owner(ring, state.record, state.me) {
        // Reclaimed while we were alive (judged dead): the record may be someone else's
        // now. Take back what we wrote, touch nothing more.
        let _ = held.compare_exchange(slot as u64 + 1, 0, Release, Relaxed);
        state.lost = true;
        return Hold::Lost;
    }
    // Acquire (load + fence): pairs with the publish's Release store of the tag, so the
    // frame's bytes and time are visible once it matches.
    if load_acquire(&ring.slots[slot].tag) == tag {
        return Hold::Held;
    }
    // Release: as above. A CAS: if our record was freed meanwhile, the entry may be someone
    // else's now.
    let _ = held.compare_exchange(slot as u64 + 1, 0, Release, Relaxed);
    Hold::Gone
}

/// What a hold attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// The slot still had the tag: the frame is ours until released.
    Held,
    /// The frame was taken back meanwhile; the hold was dropped again (a publisher waiting
    /// for a free slot may have seen it: the caller wakes it).
    Gone,
    /// The record is no longer ours (it was reclaimed): nothing taken.
    Lost,
}

/// Takes the next frame for subscriber `state` into hold `entry` (free), skipping (and
/// counting) frames that were already taken back. `None` when there is nothing new yet.
pub(crate) fn receive<W: Word>(
    ring: &Ring<'_, W>,
    state: &mut SubscriberState,
    entry: usize,
) -> Option<Taken> {
    // Fast path: the next frame is usually in the slot its number hints at. Its tag, read
    // with Acquire, is enough to know it is published (the tag is stored before PUBLISHED),
    // which spares reading PUBLISHED's cache line.
    let want = state.cursor.wrapping_add(1);
    let hint = (state.cursor % ring.slots.len() as u64) as usize;
    // A cursor past the last possible frame (a tag of 0, or with the taken-back bit) must
    // never match a slot on loan or taken back: `subscribe` refuses such starts, this makes
    // sure.
    if want != 0 && want & TAKEN_BACK == 0 && load_acquire(&ring.slots[hint].tag) == want {
        match hold(ring, state, entry, hint, want) {
            Hold::Held => return Some(take(ring, state, hint)),
            Hold::Gone => state.dropped_a_hold = true,
            Hold::Lost => return None,
        }
    }
    for _ in 0..ATTEMPTS {
        let published = load_acquire(ring.published);
        if state.cursor >= published {
            return None;
        }
        let want = state.cursor.wrapping_add(1);
        let Some((slot, tag)) = find(ring, want, false, published) else {
            // Every frame from the cursor on was taken back and replaced since we read
            // PUBLISHED: read it again.
            continue;
        };
        if tag > want {
            let skipped = tag - want;
            state.cursor = tag - 1;
            state.pending_missed = state.pending_missed.saturating_add(skipped);
            state.missed = state.missed.saturating_add(skipped);
            ring.records[state.record]
                .missed
                .store(state.missed, Relaxed);
        }
        match hold(ring, state, entry, slot, tag) {
            Hold::Held => return Some(take(ring, state, slot)),
            Hold::Gone => state.dropped_a_hold = true,
            Hold::Lost => return None,
        }
    }
    None
}

/// When the next frame of a subscriber at `cursor` was published, if it is published: the
/// key by which a subscriber of several lanes picks the lane to take from next (the oldest
/// publish first). Read without a hold, so only a hint: a slot reused meanwhile shows a later
/// time, and the receive that follows validates everything it takes. When that frame is no
/// longer offered (a lossy subscriber fell behind in this lane), the time of the frame it
/// will skip to; `Some(0)` if none could be found (taken back while we looked: look again at
/// once); `None` when nothing after `cursor` is published.
pub(crate) fn next_publish_time<W: Word>(ring: &Ring<'_, W>, cursor: u64) -> Option<u64> {
    let want = cursor.wrapping_add(1);
    if want == 0 || want & TAKEN_BACK != 0 {
        return None;
    }
    let published = load_acquire(ring.published);
    if cursor >= published {
        return None;
    }
    // The frame it will take: the one it wants, or (gone) the one it will skip to, whose
    // publish time is what it competes with (not 0: a lane that keeps overrunning a slow
    // subscriber would then always come first and starve the others).
    match find(ring, want, false, published) {
        Some((slot, _)) => Some(ring.slots[slot].time.load(Relaxed)),
        None => Some(0),
    }
}

/// When the newest published frame was published (`None` before the first): the key by
/// which `latest()` picks among lanes. A hint, as [`next_publish_time`].
pub(crate) fn newest_publish_time<W: Word>(ring: &Ring<'_, W>) -> Option<u64> {
    let published = load_acquire(ring.published);
    if published == 0 {
        return None;
    }
    find(ring, published, true, published).map(|(slot, _)| ring.slots[slot].time.load(Relaxed))
}

/// Whether a frame after `cursor` (the next frame a subscriber wants) is published: a
/// sleeping subscriber's last check (module `sleep`), whose Acquire fence precedes it.
pub(crate) fn newer_than<W: Word>(ring: &Ring<'_, W>, cursor: u64) -> bool {
    ring.published.load(Relaxed) > cursor
}

/// Takes the newest published frame into hold `entry`, counting the frames between the
/// cursor and it as missed. `None` before the first publish, and when the subscriber has
/// taken the newest frame and its slot was reused since (newest-first loans, `try_loan`).
pub(crate) fn latest<W: Word>(
    ring: &Ring<'_, W>,
    state: &mut SubscriberState,
    entry: usize,
) -> Option<Taken> {
    for _ in 0..LATEST_ATTEMPTS {
        let published = load_acquire(ring.published);
        if published == 0 {
            return None;
        }
        let Some((slot, tag)) = find(ring, published, true, published) else {
            // Either a newer frame was published meanwhile (look again), or the newest
            // frame went with no newer one: only a newest-first loan takes it back, once
            // every subscriber is past it (we are: there is nothing for us until the next
            // publish). The Acquire fence orders the tag loads of the search before the
            // re-read: a take-back we saw follows the publisher's fence after its last
            // publish, so the re-read sees that publish's PUBLISHED.
            W::fence_before_reread();
            if published <= state.cursor && load_acquire(ring.published) == published {
                return None;
            }
            continue;
        };
        match hold(ring, state, entry, slot, tag) {
            Hold::Gone => {
                state.dropped_a_hold = true;
                continue;
            }
            Hold::Lost => return None,
            Hold::Held => {}
        }
        let number = tag - 1;
        if number >= state.cursor {
            let skipped = number - state.cursor;
            state.pending_missed = state.pending_missed.saturating_add(skipped);
            state.missed = state.missed.saturating_add(skipped);
            ring.records[state.record]
                .missed
                .store(state.missed, Relaxed);
            state.cursor = number;
            return Some(take(ring, state, slot));
        }
        // Already past it (received it before): give it again, cursor unchanged.
        return Some(Taken {
            slot,
            number,
            missed_before: 0,
        });
    }
    None
}

fn take<W: Word>(ring: &Ring<'_, W>, state: &mut SubscriberState, slot: usize) -> Taken {
    let number = state.cursor;
    state.cursor = number.wrapping_add(1);
    state.received += 1;
    let rec = &ring.records[state.record];
    // Release: a lossless subscriber's hold (stored above) comes with its advanced cursor.
    rec.cursor.store(state.cursor, Release);
    rec.received.store(state.received, Relaxed);
    Taken {
        slot,
        number,
        missed_before: std::mem::take(&mut state.pending_missed),
    }
}

/// Lets go of hold `entry`.
pub(crate) fn release<W: Word>(ring: &Ring<'_, W>, record: usize, entry: usize, slot: usize) {
    // Release: our reads of the frame happen-before the publisher's reuse of the slot (it
    // reads this with an Acquire fence in `is_held`). A compare-and-swap: if our record was
    // reclaimed and reused meanwhile, the entry may hold someone else's hold now.
    let _ = ring.records[record].held[entry].compare_exchange(slot as u64 + 1, 0, Release, Relaxed);
}

/// Whether hold `entry` of `record` still names `slot` and the slot still has `tag` (offered
/// or taken back, but not reused): false if a scribbler erased the hold and the publisher
/// reused the slot.
pub(crate) fn still_intact<W: Word>(
    ring: &Ring<'_, W>,
    record: usize,
    entry: usize,
    slot: usize,
    tag: u64,
) -> bool {
    // Acquire: the reads of the frame made before this check stay before it (a seqlock-style
    // re-check: it detects a reuse, it does not make a racing read defined).
    W::fence(Acquire);
    ring.records[record].held[entry].load(Relaxed) == slot as u64 + 1
        && load_acquire(&ring.slots[slot].tag) & !TAKEN_BACK == tag
}
