//! Streams: a ring of frames that one publisher fills in place and any number of subscribers
//! read in place, every frame delivered (or every miss counted), with no system call on the
//! fast path; and streams of several publishers, one such ring each ("Several publishers").
//!
//! # The pieces
//!
//! A stream named `NAME` is a directory `NAME/` holding two files:
//!
//! * `data`: a v1 header page of kind *stream* (dtype, frame shape, order, `slots`,
//!   `max_subscribers`), then the **slot table** (one tag and one publish time per slot), then,
//!   for streams with per-frame headers or variable-size frames, the **frame-info table** (each
//!   slot's row count and header, written under the loan and read under the hold exactly as the
//!   frame), then `slots` frames, each starting on a page boundary. Only the publisher may write it;
//!   subscribers map it read-only (they receive an `O_RDONLY` descriptor), so frame data, frame
//!   numbers and publish times are protected by the kernel from everyone but the publisher.
//! * `control`: what subscribers must write. A small header (sleeper counters, the hold
//!   budget), then `max_subscribers` **records**, one per subscriber: its owner (pid and start
//!   time), its mode and hold limit, its cursor, its counters and its **held** entries. Every
//!   participant maps it read-write, so nothing in it is trusted: every value read from it is
//!   bounds-checked before use, and a wrong value can only cost frames or time (below).
//!
//! # The slot protocol
//!
//! Frames are numbered 0, 1, 2, ... by the publisher. Shared words (all `u64`):
//!
//! * `PUBLISHED` (data file): how many frames have been published; frame `n` exists once
//!   `PUBLISHED > n`. Only the publisher stores it, always upwards.
//! * `TAG[i]` (data file): which frame slot `i` holds: 0 = none (never used, or on loan);
//!   frame number + 1 = that frame, offered to subscribers; the same with bit 63 set = that
//!   frame, *taken back*: no longer offered, but maybe still held, so not reused yet. Only the
//!   publisher stores it.
//! * `TIME[i]` (data file): when the frame in slot `i` was published (ns since the epoch),
//!   right after `TAG[i]` in the slot table, so that both come with one cache line. Each
//!   slot's pair has a cache line of its own (`FEATURE_SLOT_LINES`; streams made before it
//!   pack four slots to a line), so that a loan never rewrites the line a subscriber polls
//!   for another slot's frame: see "Loans made ahead" below.
//! * `HELD[r][k]` (control file): subscriber `r`'s hold `k`: 0 = none, otherwise slot + 1.
//!   Only subscriber `r` stores it (and whoever reclaims a dead subscriber's record).
//! * `CURSOR[r]` (control file): the next frame subscriber `r` wants. The publisher reads it
//!   for lossless subscribers only.
//!
//! A slot is **free** when its frame is taken back (or it has none) and no subscriber holds
//! it. The publisher reuses a slot only after it has taken its frame back *and then* found no
//! hold on it; a subscriber
//! reads a slot only after it has recorded its hold *and then* found the tag it wanted still
//! there. Each side stores first and checks the other's word second, with a `SeqCst` fence in
//! between (Dekker's pattern), so in every interleaving at least one of them sees the other:
//! either the publisher sees the hold and leaves the slot alone, or the subscriber sees the
//! taken-back tag and lets go before reading anything.
//!
//! **Publisher** (one at a time; `next` is its copy of `PUBLISHED`):
//!
//! ```text
//! loan:
//!     first, each slot that offers no frame (TAG 0: never used, or a dropped loan's; or
//!         taken back while held): fence(SeqCst), scan the holds as below; free: loan it (it
//!         costs nobody a frame)
//!     floor = lowest CURSOR of the lossless subscribers (Relaxed loads, then fence(Acquire))
//!     for each slot i that offers a frame, oldest frame first (ring order from next % slots):
//!         TAG[i] = g + 1:
//!         skip if g + keep >= next     // the newest `keep` frames stay readable: the
//!                                      //   history, at least 1 (latest()); but see
//!                                      //   "Newest first" below
//!         skip if g >= floor           // a lossless subscriber has not taken it yet
//!         TAG[i].store(TAKEN_BACK | (g + 1), Relaxed)       // take it back
//!         fence(SeqCst)                // pairs with the subscriber's fence after its hold
//!         skip if any HELD[r][k] = i + 1 (Relaxed loads, then fence(Acquire): the holder's
//!                                      //   reads of the old frame happen-before our writes)
//!         TAG[i].store(0, Relaxed); fence(Release)     // on loan
//!         loan slot i: the publisher writes the frame through a plain &mut [T]
//!     second look: each taken-back or empty slot again, as in the first step: the
//!         scan above looks at one slot at a time, and a lossy subscriber moving its hold
//!         from slot to slot could fail every check although a slot was free at each instant
//!     no slot: wait (only lossless subscribers can cause this), or time out
//! publish:
//!     TIME[i] = now; TAG[i].store(next + 1, Release)   // the frame happens-before a
//!     PUBLISHED.store(next + 1, Release)               //   subscriber's Acquire of either
//!     next += 1
//!     fence(SeqCst); if SLEEPERS != 0: bump FUTEX and wake (see Sleeping)
//! ```
//!
//! **Subscriber** (`cursor` is its copy of `CURSOR[r]`):
//!
//! ```text
//! receive:
//!     fast path: TAG[cursor % slots] = cursor + 1 (Relaxed load, fence(Acquire))? then hold
//!         that slot as below; the tag alone proves the frame published, and PUBLISHED's
//!         cache line is not read
//!     if cursor >= PUBLISHED (Relaxed load, fence(Acquire)): nothing new
//!     find slot i with TAG[i] = cursor + 1 (slot cursor % slots first, then all slots);
//!         none: the frame was taken back (we are too slow): take the oldest frame after
//!         it that is still offered and below the PUBLISHED we read (the tags of later
//!         frames may still look stale to us), and count the frames skipped as missed
//!     HELD[r][k].store(i + 1, Release) // Release: the entry may have held another slot just
//!                                       //   before; see `protocol::hold`
//!     fence(SeqCst)                     // pairs with the publisher's fence after take-back
//!     OWNER[r] still us? no: we were reclaimed (judged dead): CAS our hold back to 0, stop
//!     TAG[i] still the tag we found (Relaxed load, fence(Acquire): pairs with the publish's
//!         Release store, so the frame's bytes and TIME[i] are visible)?
//!         no: HELD[r][k].store(0, Release) and look again (the frame is gone; the search
//!             then skips to the oldest frame still offered, counting the skipped ones)
//!     yes: the frame is ours to read in place until we release it; cursor = frame + 1;
//!          CURSOR[r].store(cursor, Release)
//! release:
//!     HELD[r][k].CAS(i + 1 -> 0, Release)   // our reads happen-before the publisher's
//!                                           //   reuse; a CAS so as never to erase a hold
//!                                           //   that is not ours
//! ```
//!
//! **Lossless subscribers** also hold the publisher back: the publisher never takes back a
//! frame at or above a lossless subscriber's cursor. A lossless subscriber stores its hold
//! before it advances its cursor (Release), so a publisher that sees the advanced cursor
//! (Acquire) also finds the hold in its scan. A new subscriber records its mode and a cursor
//! no higher than any frame it may start at first (`PUBLISHED` to start at the next frame, 0
//! to start at the oldest one still offered, `n` to resume at frame `n`), then fences
//! (SeqCst) and only then finds its starting point (reads `PUBLISHED` again, or scans the
//! tags for the oldest frame offered); the publisher fences (SeqCst) after every publish
//! before it reads cursors. So either the publisher sees the new subscriber, or the
//! subscriber starts after every frame the publisher might be taking back; only the loan
//! already under way can still take back frames the subscriber found, which it then counts
//! as missed (`model_a_lossless_subscriber_starting_at_the_oldest_frame_keeps_it`).
//!
//! **History.** A stream may keep its newest `history` frames offered (`keep = max(history,
//! 1)` above), whatever order the other slots are reused in, for subscribers that join late
//! or resume. It costs hold budget: see below.
//!
//! **`latest()`** takes the frame `PUBLISHED - 1` the same way. It never starves: the
//! publisher takes back its newest frame only once a newer one is published (and then in
//! the very next loan, if every older slot is held), or in the newest-first case below,
//! where the subscriber has taken that frame already; each attempt re-reads `PUBLISHED`, so
//! an attempt fails only if the publisher published and loaned again within the few
//! nanoseconds between our search and our check. When the newest frame is gone and
//! `PUBLISHED` has not moved (read again after the search), the subscriber is past it:
//! `latest()` returns "nothing" at once.
//!
//! **Newest first.** Which slot a loan takes is the publisher's choice, among those the
//! steps above let go. Frames of 64 KiB or more, in a stream with no history and no lossy
//! subscriber at the time of the loan (a record being claimed counts as lossy), go into the
//! slot of the *newest* frame every lossless subscriber is past and nobody holds, the newest
//! frame of all included (`keep` is 0 there: with no history it is offered only for
//! `latest()`, and every subscriber has taken it); the older frames that could go are taken
//! back with it, so the frames offered stay consecutive. A pipeline in step then writes each
//! frame into the slot just read, in the caches. Each candidate goes through the same
//! take-back, fence and hold scan as above
//! (`model_latest_racing_a_newest_first_loan_of_the_newest_frame_stays_safe`).
//!
//! **Loans made ahead.** For frames below 64 KiB in a stream with slot lines, the publisher
//! makes its next loan right after each publish (`Publisher::loan_ahead`): the same steps,
//! run while subscribers read the frame just published instead of on the next frame's way
//! to them. Only the timing moves: the frame taken back leaves the offer one publish
//! earlier (a lossy subscriber lagging a whole ring finds one frame fewer), and the hold
//! budget already counts the slot on loan.
//!
//! # Why a free slot always exists for lossy subscribers
//!
//! Each subscriber holds at most `max_held` samples. Subscribing takes `max_held` from the
//! stream's **hold budget** of `slots - 1 - keep` (one slot is on loan, `keep` keep the newest
//! frames: `slots - 2` without history); when the budget is short the subscriber gets what is
//! left, and when nothing is left the subscribe fails with a clear error. With the budget
//! respected, at most that many slots are held, so at every instant some slot is neither held,
//! nor among the newest `keep`, nor on loan, unless a
//! lossless subscriber still needs it; the loan's second look at the slots it took back finds
//! it even while a lossy subscriber moves its hold from slot to slot under the first scan
//! (`model_try_loan_never_fails_with_only_lossy_subscribers`). Lossy subscribers therefore
//! never make the publisher wait.
//!
//! # Several publishers: one ring per publisher
//!
//! A stream created with `max_publishers` P > 1 is P of the rings above under one name, one
//! **lane** per publisher: lane 0 is `data` and `control`, lane k is `data.k` and `control.k`
//! (control state in sealed memfds through the daemon, as for lane 0). Each lane is the
//! single-publisher ring of this essay, word for word, so each publisher keeps the fast path
//! above and no publisher ever waits for another: there is no word, lock or line that two
//! publishers share. Every lane's data header carries the same stream (feature bit `LANES`,
//! the lane count and its own index: docs/FORMAT.md, "Lanes"), and whoever opens the lanes
//! checks that they are one stream's, in order.
//!
//! * **A publisher** attaches to the first lane it can take, exactly as a lone publisher
//!   takes a stream (the `PUBLISHER` word and its liveness lock); past the limit it gets
//!   `StreamError::PublishersFull`. Each attach bumps the lane's `ATTACHES` word, and the
//!   publisher writes its identity (its pid, and that attach number) into each frame's
//!   frame-info entry while it holds the loan, as it writes the rows: a subscriber reads it
//!   under its hold with the frame ([`Sample::publisher`]). A publisher that dies is found
//!   and replaced per lane as above; its replacement continues the lane's numbering, so a
//!   frame's number is its number *in its lane*.
//! * **A subscriber** holds one record in every lane (all with the same nonce, so that the
//!   daemon can list it once), and everything of this essay holds per lane: its cursor, its
//!   holds, its `max_held` (per lane), lossless or lossy, its missed counts
//!   ([`Subscriber::lane_stats`]), history and the stall policy (a publisher applies its
//!   stream's policy to the subscriber's record in its own lane). A lossless subscriber
//!   therefore gets every frame of every publisher, in each publisher's order, exactly once;
//!   a slow one holds back each publisher only in its own lane.
//! * **Merging.** `receive` looks at each lane's next frame (its tag and publish time, read
//!   without a hold: `protocol::next_publish_time`) and takes from the lane whose next frame
//!   was published first, then validates the take as above; a lane that fell behind
//!   (its next frame no longer offered) goes first, and ties go round the lanes. Publish
//!   times are `CLOCK_REALTIME` readings taken just before each publish, so the order across
//!   publishers is their order of arrival as far as the clocks of one machine tell; within a
//!   publisher it is exact. `latest()` takes the newest frame by publish time across lanes
//!   and skips (and counts) only within that lane.
//! * **Sleeping.** A subscriber that finds nothing in any lane registers in every lane's
//!   `SLEEPERS`, fences once, reads every lane's `FUTEX`, checks every lane, and sleeps on all
//!   the futex words at once (`futex_waitv`, Linux 5.16; before it, 1 ms naps). Each
//!   publisher runs the waker's half on its own lane only. The argument of "Sleeping" below
//!   holds for each pair of a publisher and its lane's words, so a publish in any lane wakes
//!   it, and a publish nobody sleeps on still makes no system call
//!   (`model_a_subscriber_of_two_lanes_gets_every_frame_of_each_and_every_wake_up`, with
//!   twins that register in one lane only, drop the fence, read the words late, or wake
//!   without the bump).
//!
//! # Sleeping, and why a publish makes no system call when nobody sleeps
//!
//! Waiters spin briefly, then yield, then sleep on a futex (the `backoff` module's schedule;
//! a publisher waiting for a lossless subscriber yields for up to 2 ms before it sleeps, since
//! that subscriber is usually reading a frame right then, and a wake-up per frame would cost
//! a pipeline of large frames more than half its throughput; but once that publisher's recent
//! waits averaged 250 µs or more (a subscriber paced by a network link, or reading frames of
//! several megabytes), yielding through them costs other processes more CPU time than the
//! wake-up it saves, and the publisher takes the usual schedule: `backoff::WaitHistory`. Its
//! sleeps then end by the time its stall policy acts).
//! A waiter skips the spin and yields at once when the side it waits for last ran on its own
//! CPU: while it spins there, that side cannot run. Each side leaves a hint of its CPU in the
//! control file for this (`PUB_CPU`, written by the publisher after a publish when it moved;
//! a record's `cpu`, written by a subscriber when it starts waiting), read only by a waiter
//! at the start of its wait. Two consumers and a producer on two CPUs, one consumer beside the
//! producer, otherwise spend most of each frame spinning at each other.
//! Before sleeping, a subscriber adds itself to `SLEEPERS` (control file) and then sets the
//! `sleeping` flag of its record (cleared before it takes itself out again: a subscriber
//! that dies asleep is taken out of `SLEEPERS` by whoever reclaims its record), fences (SeqCst),
//! reads `FUTEX` (data file) and checks `PUBLISHED` once more; it sleeps only if nothing
//! arrived, on `FUTEX` holding that value, and removes itself when it wakes. A publish stores
//! `PUBLISHED`, fences (SeqCst), and bumps `FUTEX` and calls `FUTEX_WAKE` only if `SLEEPERS`
//! is not zero. Either the publisher sees the sleeper, or the sleeper sees the frame; and if the
//! bump comes between the sleeper's read of `FUTEX` and its sleep, the kernel sees the changed
//! value and does not sleep. No wake-up is lost, and with nobody asleep a publish is a few
//! stores and one fence. The publisher waiting for lossless subscribers sleeps the same way on
//! `PUB_FUTEX` (control file), and a subscriber that advances its cursor, releases a hold or
//! drops a hold it could not use, and whoever reclaims a record, wake it only if
//! `PUB_SLEEPERS` says it sleeps (a publisher that attaches resets it: one that died asleep
//! left itself counted).
//!
//! Both sides run this handshake through one function pair (`sleep::sleep_unless` and
//! `sleep::wake`), blocking or async (an async waiter's sleep is the waiter thread's), and the
//! loom models run that same code: each step removed or moved (either fence, the fence that
//! ends a publish, registering after the check, reading `FUTEX` after it, waking without the
//! bump) leaves a sleeper asleep for good, and the models fail.
//!
//! # What a scribbler can do
//!
//! Anything that can write the control file can write any of its bytes. It cannot touch frame
//! data, tags, times or `PUBLISHED` (the data file is read-only to it), and every index taken
//! from the control file is checked against the data file's header, so it cannot make anyone
//! access memory out of bounds. It can: erase its own or others' holds (the publisher may then
//! reuse a held slot, and the holder reads a newer frame's bytes: `Sample::is_intact` reports
//! it, because a held slot keeps its frame's tag, taken back or not, until it is reused), lower or raise cursors (lossless subscribers miss frames, counted; or the publisher
//! waits until its loan times out), set a record's demoted or evicted mark (that subscriber
//! becomes lossy, or its next receive fails with `StreamError::Evicted`), zero `SLEEPERS` (sleepers then wake by the sleep's 50 ms
//! re-check instead of at once; async ones by the waiter thread's full re-check, once a second),
//! or take every record and the whole budget (new subscribers get a clear error), or write
//! false CPU hints (a waiter then spins where it should have yielded, or the reverse). A blocking
//! sleep never lasts more than 50 ms and every wait has a timeout. The
//! daemon repairs what would otherwise last for good: the control file's fixed header, records
//! whose owner word nobody's liveness lock backs (a scribble) or left half-freed by a freer
//! that is gone, and a budget above its maximum.
//!
//! Two things are beyond that. **Truncating** the control file makes every process that maps
//! it fault (SIGBUS) at its next access, as truncating an array file does to its readers; the
//! daemon checks both files' sizes before it touches a stream (racy, but it keeps the daemon
//! up), and only processes the stream's owner allowed to attach can do it. And a held sample
//! is a plain `&[T]` over shared memory: if a scribbler's erased hold lets the publisher
//! reuse the slot, the holder's reads race with the publisher's writes, which is undefined
//! behaviour in the Rust model, however benign on the hardware (bytes of two frames).
//! `Sample::is_intact` detects such a reuse after the reads, as a seqlock re-check does; it
//! does not make the reads defined.
//!
//! # Crashes
//!
//! * **A subscriber dies.** Its record still shows its holds and cursor. Whether it lives is
//!   the kernel's word, not a guess from pids: a subscriber holds an exclusive
//!   open-file-description lock on its record's byte of the control file from before it
//!   claims the record until after it has freed it, and the kernel drops that lock when the
//!   process dies or execs, in whatever pid namespace it runs (`sys::try_lock_byte`). A freer
//!   (the daemon's periodic check, [`Publisher::reclaim_dead_subscribers`] for file-only use)
//!   reclaims a record only after taking that lock itself, so it never meets a live owner or a
//!   subscriber claiming the record. The owner word is a per-subscription nonce, so an owner
//!   whose record was freed (only possible without OFD locks) never mistakes a later
//!   subscription of its own process for itself. Without OFD locks (before Linux 3.15) a
//!   record is marked and judged from the process identity it records, with positive evidence
//!   of death only. Freeing a record (reclaiming it, or leaving) first records who frees it
//!   (`reclaimer`, a CAS), then marks the owner word (a CAS) and fences (SeqCst), clears the
//!   record with Release stores, and unmarks with CASes: it never clears a record someone else
//!   owns, and one left half-freed by a freer that is gone is finished by the next freer. A
//!   subscriber whose record was freed while it was alive (a misjudgment without locks, or a
//!   scribbler) finds out at its next hold (it re-checks its owner word after the hold's
//!   fence) and stops with `SubscriptionLost`, and its `Drop` then leaves the record alone.
//! * **The publisher dies mid-loan.** The slot it was filling has tag 0, so nothing
//!   half-written is ever delivered. A new publisher reads `PUBLISHED` and the tags and
//!   continues the numbering: if the old one died between storing a tag and storing
//!   `PUBLISHED`, the new one counts that complete frame as published.
//! * **The daemon dies.** It is not on the data path: publisher and subscribers go on.
//! * **Two publishers** on one ring (lane). The attached publisher holds an exclusive lock on the first byte of
//!   the data file's `PUBLISHER` word (only a read-write description, so only a publisher,
//!   can take one); another that cannot take it is refused, and one that can knows the
//!   recorded publisher is gone. Without OFD locks a publisher misjudged dead (across pid
//!   namespaces) can be replaced; it finds out at its next loan (`PublisherLost`).
//!
//! # Layout
//! - `layout`: byte offsets of the control file and the shared record type.
//! - `protocol`: the algorithm above, generic over its atomic words so that loom checks it.
//! - `sleep`: the sleep handshake of either side (Sleeping, below), generic in the same way.
//! - `model_tests`: the loom models of both, each with twins that loom must reject.
//! - `files`: creating a stream's files, opening and mapping them.
//! - `publisher`: [`Publisher`] and its loans, [`SampleMut`].
//! - `subscriber`: [`Subscriber`] and its samples, [`Sample`].

mod files;
mod layout;
#[cfg(test)]
mod model_tests;
mod protocol;
mod publisher;
mod sleep;
mod subscriber;
#[cfg(test)]
mod tests;

pub(crate) use files::subscription_nonce;
pub use files::{
    CONTROL_FILE, DATA_FILE, Membership, StreamFiles, SubscriberInfo, create_stream_data,
    create_stream_files, lane_file, new_stream_control, peek_stream_counters,
};
pub use layout::MAX_HELD;
#[cfg(feature = "async")]
pub use publisher::LoanAsync;
pub use publisher::{LoanToken, Publisher, SampleMut};
#[cfg(feature = "async")]
pub use subscriber::Recv;
pub use subscriber::{
    DEFAULT_MAX_HELD, Delivery, LaneStats, PublisherId, Sample, SampleToken, StartAt,
    SubscribeOptions, Subscriber,
};
