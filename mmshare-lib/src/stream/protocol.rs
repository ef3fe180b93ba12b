//! The slot protocol of the module docs, as code generic over its atomic words, so that the
//! loom model checker runs exactly this algorithm (see `model_tests`).
//!
//! Nothing here sleeps, allocates on the fast path or trusts a value from the control file:
//! every slot index read from it is checked against the slot count, and arithmetic on shared
//! values wraps instead of panicking.

use std::sync::atomic::Ordering::{self, AcqRel, Acquire, Relaxed, Release, SeqCst};

use super::layout::{
    CONFIG_DEMOTED, CONFIG_EVICTED, CONFIG_HELD_MASK, CONFIG_LOSSLESS, MAX_HELD, OWNER_RECLAIMING,
    Record,
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

    /// Whether the publisher scans the holds at all (false only in a model test).
    const SCAN_HOLDS: bool = true;

    /// Whether the publisher respects lossless cursors (false only in a model test).
    const KEEP_LOSSLESS: bool = true;

    /// Whether a reclaim marks the record as being reclaimed while it clears it (false only
    /// in a model test, where the record is freed first and cleared after).
    const RECLAIM_MARKS_FIRST: bool = true;
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

/// The shared words of one stream. `slots` has one entry per slot; its length is the slot
/// count, taken from the data file's header.
pub(crate) struct Ring<'a, W> {
    /// Frames published so far (data file).
    pub(crate) published: &'a W,
    /// Per slot: its tag and publish time (data file).
    pub(crate) slots: &'a [SlotWords<W>],
    /// Subscriber records (control file).
    pub(crate) records: &'a [Record<W>],
    /// Holds granted out of `slots - 2` (control file).
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
    PublisherState { next, tags }
}

/// The lowest cursor among the lossless subscribers (`u64::MAX` when there are none): frames
/// at or above it must not be taken back.
fn lossless_floor<W: Word>(ring: &Ring<'_, W>) -> u64 {
    let mut floor = u64::MAX;
    for record in ring.records {
        // Relaxed: the fence below orders these before everything the loan does next.
        if record.owner.load(Relaxed) != 0 && record.config.load(Relaxed) & CONFIG_LOSSLESS != 0 {
            floor = floor.min(record.cursor.load(Relaxed));
        }
    }
    // Acquire: pairs with the Release store of a lossless subscriber's cursor, so a cursor
    // past frame g comes with the hold that subscriber stored before advancing it.
    W::fence(Acquire);
    floor
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

/// Finds a free slot for the next frame, or `None` when every slot is held, newest, or still
/// needed by a lossless subscriber: first a slot that offers no frame, then the oldest
/// frame's. Slots whose tags it takes back stay empty (a frame a lossless subscriber needs is
/// never taken back).
pub(crate) fn try_loan<W: Word>(ring: &Ring<'_, W>, state: &mut PublisherState) -> Option<usize> {
    // A slot that offers no frame (never used, a dropped loan's, or one taken back while it
    // was held) costs nobody a frame: it goes first, if no hold names it.
    if let Some(slot) = loan_unoffered(ring, state) {
        return Some(slot);
    }
    let slots = state.tags.len();
    let next = state.next;
    let floor = lossless_floor(ring);
    // In steady state slot `next % slots` holds the oldest frame; ring order from there is
    // oldest first.
    let start = (next % slots as u64) as usize;
    for k in 0..slots {
        let slot = (start + k) % slots;
        let tag = state.tags[slot];
        if tag == 0 || tag & TAKEN_BACK != 0 {
            // Offers no frame: `loan_unoffered` looked at it just before, and looks again
            // after the scan.
            continue;
        }
        let frame = tag - 1;
        if tag >= next || (W::KEEP_LOSSLESS && frame >= floor) {
            continue;
        }
        // Relaxed: ordered before the hold scan by the SeqCst fence below.
        ring.slots[slot].tag.store(tag | TAKEN_BACK, Relaxed);
        state.tags[slot] = tag | TAKEN_BACK;
        // Pairs with `fence_after_hold`: a subscriber that stored its hold before this fence
        // is seen below; one that stores it after sees the taken-back tag and lets go.
        W::fence_after_take_back();
        if W::SCAN_HOLDS && is_held(ring, slot) {
            // Still held: it stays taken back (and its holder's frame intact) for now.
            continue;
        }
        // On loan: tag 0 from here until the publish. The Release fence orders it before
        // the frame's writes, for `Sample::is_intact` of a holder whose hold was erased.
        ring.slots[slot].tag.store(0, Relaxed);
        W::fence(Release);
        state.tags[slot] = 0;
        return Some(slot);
    }
    // The scan looks at one slot at a time, so a lossy subscriber moving its hold from slot
    // to slot can make every check fail although a slot was free at every instant. Slots
    // taken back above can only be held transiently now: one more look at them.
    loan_unoffered(ring, state)
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
    W::fence(SeqCst);
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
    let floor = lossless_floor(ring);
    if floor == u64::MAX {
        return 0;
    }
    let mark = CONFIG_DEMOTED | if evict { CONFIG_EVICTED } else { 0 };
    ring.records
        .iter()
        .filter(|rec| {
            let config = rec.config.load(Relaxed);
            rec.owner.load(Relaxed) != 0
                && config & CONFIG_LOSSLESS != 0
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
    subscribe_with(ring, record, holds, lossless, 0)
}

/// [`subscribe`], with `extra` bits in the record's `config` (`CONFIG_UNLOCKED`).
pub(crate) fn subscribe_with<W: Word>(
    ring: &Ring<'_, W>,
    record: usize,
    holds: u64,
    lossless: bool,
    extra: u64,
) -> u64 {
    let rec = &ring.records[record];
    for h in &rec.held {
        h.store(0, Relaxed);
    }
    rec.missed.store(0, Relaxed);
    rec.received.store(0, Relaxed);
    // A cursor no higher than any frame the publisher might still keep for us, before the
    // mode that makes the publisher respect it.
    rec.cursor.store(load_acquire(ring.published), Relaxed);
    let lossless_bit = if lossless { CONFIG_LOSSLESS } else { 0 };
    rec.config
        .store(holds.min(MAX_HELD as u64) | lossless_bit | extra, Release);
    // Pairs with the publisher's fence after a publish (and in `attach`): either its next
    // loan sees this record, or the load below sees its newest PUBLISHED.
    W::fence_in_subscribe();
    let start = load_acquire(ring.published);
    rec.cursor.store(start, Release);
    start
}

/// What freeing a record found in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Freed {
    /// It was counted in `SLEEPERS` (its owner died asleep): the caller takes it out.
    pub(crate) was_sleeping: bool,
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
    // re-checks that the record is still its own: either it sees our mark and undoes its
    // hold, or our clears below come after its hold in that word's order (without this fence
    // the C++ model allows both to miss each other; loom shows it).
    W::fence(SeqCst);
    let holds = rec.config.load(Relaxed) & CONFIG_HELD_MASK;
    // Only whoever clears the flag takes the sleeper out of SLEEPERS: a live subscriber
    // reclaimed while asleep must not take itself out a second time when it wakes.
    let seen = rec.sleeping.load(Relaxed);
    let was_sleeping = seen != 0
        && rec
            .sleeping
            .compare_exchange(seen, 0, Relaxed, Relaxed)
            .is_ok();
    rec.config.store(0, Release);
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
    Some(Freed { was_sleeping })
}

/// Frees this subscriber's own `record` (which holds nothing any more). Does nothing if the
/// record is no longer its own (it was reclaimed: judged dead).
pub(crate) fn unsubscribe<W: Word>(
    ring: &Ring<'_, W>,
    record: usize,
    owner: u64,
    me: u64,
    reclaimer_gone: impl Fn(u64) -> bool,
) {
    // A registered reclaimer that is still at work (it judged us dead) frees the record
    // itself; one that is gone (or a scribble) is ours to take over. A freer stays
    // registered for a few instructions after it has put the owner word back to 0, so a
    // record claimed in that moment may see it: look again a few times while the record is
    // still ours.
    for _ in 0..1000 {
        if free_record(ring, record, owner, me, &reclaimer_gone).is_some()
            || ring.records[record].owner.load(Acquire) != owner
        {
            return;
        }
        std::thread::yield_now();
    }
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
    if load_acquire(&ring.slots[hint].tag) == want {
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

/// Takes the newest published frame into hold `entry`, counting the frames between the
/// cursor and it as missed. `None` before the first publish.
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

/// The slot protocol above, run by the loom model checker on loom's atomics. Frame data lives
/// in loom's `UnsafeCell`s, so loom reports any write by the publisher that is not ordered
/// after a subscriber's read of the same slot (or the other way round) as a causality
/// violation: exactly the overwrite of a held frame the protocol exists to prevent. Each model
/// has a twin with one piece of the protocol removed, which loom must reject.
#[cfg(test)]
mod model_tests {
    use super::*;
    use crate::stream::layout::CONFIG_LOSSLESS;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU64 as LoomU64;

    /// Which piece of the protocol a [`Mutant`] word removes.
    const HOLD_FENCE: u8 = 1;
    const TAKE_BACK_FENCE: u8 = 2;
    const HOLD_SCAN: u8 = 4;
    const LOSSLESS_FLOOR: u8 = 8;
    const RECLAIM_IN_ONE_STEP: u8 = 16;
    const SUBSCRIBE_FENCE: u8 = 32;

    /// Loom's atomics, with the pieces named in `DROP` removed from the protocol.
    struct Mutant<const DROP: u8>(LoomU64);

    impl<const DROP: u8> Word for Mutant<DROP> {
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
            if DROP & HOLD_FENCE == 0 {
                Self::fence(SeqCst);
            }
        }
        fn fence_after_take_back() {
            if DROP & TAKE_BACK_FENCE == 0 {
                Self::fence(SeqCst);
            }
        }
        fn fence_in_subscribe() {
            if DROP & SUBSCRIBE_FENCE == 0 {
                Self::fence(SeqCst);
            }
        }
        const SCAN_HOLDS: bool = DROP & HOLD_SCAN == 0;
        const KEEP_LOSSLESS: bool = DROP & LOSSLESS_FLOOR == 0;
        const RECLAIM_MARKS_FIRST: bool = DROP & RECLAIM_IN_ONE_STEP == 0;
    }

    /// A whole stream in loom's memory: `SLOTS` slots of one word of data each.
    struct Model<W> {
        published: W,
        slots: Vec<SlotWords<W>>,
        records: Vec<Record<W>>,
        budget: W,
        data: Vec<UnsafeCell<u64>>,
    }

    // SAFETY: (for the model only) every access to `data` goes through loom's UnsafeCell,
    // which checks it against the happens-before order; that is the point of the model.
    unsafe impl<W: Sync> Sync for Model<W> {}

    impl<const DROP: u8> Model<Mutant<DROP>> {
        fn new(slots: usize, records: usize) -> Arc<Self> {
            let w = || Mutant::<DROP>(LoomU64::new(0));
            Arc::new(Model {
                published: w(),
                slots: (0..slots)
                    .map(|_| SlotWords {
                        tag: w(),
                        time: w(),
                    })
                    .collect(),
                records: (0..records).map(|_| Record::new_with(w)).collect(),
                budget: w(),
                data: (0..slots).map(|_| UnsafeCell::new(u64::MAX)).collect(),
            })
        }

        fn ring(&self) -> Ring<'_, Mutant<DROP>> {
            Ring {
                published: &self.published,
                slots: &self.slots,
                records: &self.records,
                budget: &self.budget,
            }
        }
    }

    /// The publisher: frames `state.next..until`, each slot's data set to its frame number.
    /// Waits (by yielding) when no slot is free.
    fn publish_frames<const DROP: u8>(
        m: &Model<Mutant<DROP>>,
        state: &mut PublisherState,
        until: u64,
    ) {
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
    fn read_taken<const DROP: u8>(m: &Model<Mutant<DROP>>, taken: Taken) {
        // SAFETY: loom checks this access against the publisher's writes.
        let value = m.data[taken.slot].with(|p| unsafe { *p });
        assert_eq!(value, taken.number, "a held frame was overwritten");
    }

    /// Receives (reading each frame in place, then releasing it) until the subscriber's cursor
    /// reaches `until`; returns the frame numbers received.
    fn take_until<const DROP: u8>(
        m: &Model<Mutant<DROP>>,
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

    fn subscriber(record: usize, cursor: u64) -> SubscriberState {
        SubscriberState {
            record,
            cursor,
            pending_missed: 0,
            missed: 0,
            received: 0,
            dropped_a_hold: false,
            me: 7,
            lost: false,
        }
    }

    /// Runs `model` under loom, and requires that loom rejects it: with a causality violation
    /// (a frame written while read) or the model's own assertion. Any other panic (a broken
    /// harness) fails the test.
    fn expect_rejected(model: fn(), assertion: &str) {
        let panic = std::panic::catch_unwind(model).expect_err("loom accepted a broken protocol");
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("");
        assert!(
            message.contains("Causality violation") || message.contains(assertion),
            "rejected for another reason: {message}"
        );
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
    fn check_lossy<const DROP: u8>() {
        builder().check(|| {
            let m = Model::<Mutant<DROP>>::new(3, 1);
            let ring = m.ring();
            let record = claim_record(&ring, 7).unwrap();
            assert_eq!(take_budget(&ring, 1, 1), 1);
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
    /// subscriber), the subscriber gets all four, in order, none missed.
    fn check_lossless<const DROP: u8>() {
        bounded(2).check(|| {
            let m = Model::<Mutant<DROP>>::new(3, 1);
            let ring = m.ring();
            let record = claim_record(&ring, 7).unwrap();
            assert_eq!(take_budget(&ring, 1, 1), 1);
            assert_eq!(subscribe(&ring, record, 1, true), 0);
            let mut state = attach(&ring);
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
        check_lossless::<0>();
    }

    /// The stall policy at work: a lossless subscriber that wants frame 0 while the publisher
    /// publishes frames 2 to 4 through three slots; the publisher, whenever a loan fails,
    /// demotes it (as `wait_for_slot` does past the policy's wait) and loans again. The
    /// subscriber, demoted at any point of its receive, never reads a rewritten frame, gets
    /// frames in order, and accounts for every frame as received or missed.
    fn check_demotion<const DROP: u8>() {
        // One preemption: with two the model takes minutes; the twin below is rejected with
        // one.
        bounded(1).check(|| {
            let m = Model::<Mutant<DROP>>::new(3, 1);
            let ring = m.ring();
            let record = claim_record(&ring, 7).unwrap();
            assert_eq!(take_budget(&ring, 1, 1), 1);
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
            check_lossless::<LOSSLESS_FLOOR>,
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
    fn check_reclaim<const DROP: u8>() {
        builder().check(|| {
            let m = Model::<Mutant<DROP>>::new(3, 2);
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
            let m = Model::<Mutant<0>>::new(3, 1);
            let ring = m.ring();
            let record = claim_record(&ring, 7).unwrap();
            assert_eq!(take_budget(&ring, 1, 1), 1);
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
            let m = Model::<Mutant<0>>::new(3, 1);
            let ring = m.ring();
            let record = claim_record(&ring, 7).unwrap();
            assert_eq!(take_budget(&ring, 1, 1), 1);
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
    fn check_joiner<const DROP: u8, const ALREADY: u64>() {
        bounded(if ALREADY == 0 { 1 } else { 2 }).check(|| {
            let m = Model::<Mutant<DROP>>::new(3, 1);
            let ring = m.ring();
            let mut state = attach(&ring);
            publish_frames(&m, &mut state, ALREADY);
            let publisher = {
                let m = m.clone();
                loom::thread::spawn(move || publish_frames(&m, &mut state, 4))
            };
            let record = claim_record(&ring, 7).unwrap();
            assert_eq!(take_budget(&ring, 1, 1), 1);
            let start = subscribe(&ring, record, 1, true);
            let mut sub = subscriber(record, start);
            let got = take_until(&m, &ring, &mut sub, 4);
            publisher.join().unwrap();
            assert_eq!(sub.missed, 0, "missed frames: got {got:?} from {start}");
            assert_eq!(got, (start..4).collect::<Vec<_>>());
        });
    }
}
