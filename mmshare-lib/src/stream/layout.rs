//! The control file of a stream, byte for byte, and the subscriber record type.
//!
//! docs/FORMAT.md describes the same layout in prose. All integers are little-endian. The
//! header's fixed part (magic to `RECORDS_OFFSET`) is written at create and only checked by
//! readers; since every participant can write this file, nothing in it is trusted: slot and
//! record counts are taken from the data file's header, which only the publisher can write.

pub(crate) use crate::control_file::{MAGIC, RECORD_SIZE, VERSION, control_header, offsets};

/// Most samples one subscriber may hold at once (the held entries of a record).
pub const MAX_HELD: usize = 16;

/// `config` bits 0..8: the number of holds granted (`1..=MAX_HELD`).
pub(crate) const CONFIG_HELD_MASK: u64 = 0xFF;
/// `config` bit 8: the subscriber is lossless.
pub(crate) const CONFIG_LOSSLESS: u64 = 1 << 8;
/// `config` bit 9: the subscriber holds no liveness lock on its record's byte (the kernel has
/// no OFD locks); it is judged by the process identity in `who` instead.
pub(crate) const CONFIG_UNLOCKED: u64 = 1 << 9;
/// `config` bit 10: the publisher demoted this lossless subscriber to lossy (its stall policy).
pub(crate) const CONFIG_DEMOTED: u64 = 1 << 10;
/// `config` bit 11: the publisher evicted this subscriber (its stall policy).
pub(crate) const CONFIG_EVICTED: u64 = 1 << 11;
/// `config` bit 12: the subscription has started: its cursor is where it starts (set after
/// the last cursor store of `subscribe`). Only started records count as subscribers.
pub(crate) const CONFIG_STARTED: u64 = 1 << 12;

/// `config` bits 16 to 63: the low 48 bits of the subscription's nonce, so that the
/// publisher's compare-and-swap of a `config` it read (a demotion) can only succeed on the
/// subscription it read it from, never on a new one that claimed the freed record with the
/// same mode and holds.
pub(crate) const fn config_tag(nonce: u64) -> u64 {
    nonce << 16
}

/// The control file's byte that the subscriber of record `r` holds an exclusive OFD lock on
/// for as long as the record is its own: the record's first byte.
pub(crate) const fn record_lock_byte(r: usize) -> u64 {
    (offsets::RECORDS + RECORD_SIZE * r) as u64
}

/// `owner` while a record is being freed (reclaimed, or left): not free, not anyone's.
pub(crate) const OWNER_RECLAIMING: u64 = u64::MAX;

/// The control-file length for `max_subscribers` records.
pub(crate) const fn control_len(max_subscribers: u32) -> usize {
    offsets::RECORDS + RECORD_SIZE * max_subscribers as usize
}

/// One subscriber's record, as laid out in the control file (`W` is `AtomicU64` there; the
/// model tests use loom's atomics). Each group sits on its own 64-byte line: the publisher
/// reads line 0 on every loan and it rarely changes; the subscriber writes line 1 on every
/// receive; lines 2 and 3 hold the held entries.
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | `owner` | 0 = free; else the subscription's nonce (a random word, never 0 or `u64::MAX`, new for every subscription); `u64::MAX` while being freed |
/// | 8 | `config` | bits 0–7: holds granted; bit 8: lossless; bit 9: no liveness lock (judge by `who`); bit 10: demoted by the publisher; bit 11: evicted by it; bits 16–63: the nonce's low 48 bits |
/// | 16 | `reclaimer` | 0, or the identity of the process freeing the record (set before `owner` is marked, cleared after it is 0) |
/// | 24 | `who` | the subscribing process's pid and start time (as the data file's writer word), for display and for records without a liveness lock |
/// | 64 | `cursor` | the next frame number this subscriber wants |
/// | 72 | `missed` | frames it skipped so far |
/// | 80 | `received` | frames it received so far |
/// | 88 | `sleeping` | 1 while the subscriber is counted in `SLEEPERS` |
/// | 96 | `cpu` | a hint: the CPU the subscriber last started waiting on, plus one (0: unknown) |
/// | 128 | `held[16]` | 0 = free, else slot index + 1 |
#[repr(C)]
pub(crate) struct Record<W> {
    pub(crate) owner: W,
    pub(crate) config: W,
    pub(crate) reclaimer: W,
    pub(crate) who: W,
    _line0: [W; 4],
    pub(crate) cursor: W,
    pub(crate) missed: W,
    pub(crate) received: W,
    pub(crate) sleeping: W,
    pub(crate) cpu: W,
    _line1: [W; 3],
    pub(crate) held: [W; MAX_HELD],
}

impl<W> Record<W> {
    /// A record whose every word is `new()` (the model tests build their own).
    #[cfg(test)]
    pub(crate) fn new_with(new: impl Fn() -> W) -> Record<W> {
        Record {
            owner: new(),
            config: new(),
            reclaimer: new(),
            who: new(),
            _line0: std::array::from_fn(|_| new()),
            cursor: new(),
            missed: new(),
            received: new(),
            sleeping: new(),
            cpu: new(),
            _line1: std::array::from_fn(|_| new()),
            held: std::array::from_fn(|_| new()),
        }
    }
}

const _: () = assert!(size_of::<Record<std::sync::atomic::AtomicU64>>() == RECORD_SIZE);
const _: () = assert!(std::mem::offset_of!(Record<std::sync::atomic::AtomicU64>, cursor) == 64);
const _: () = assert!(std::mem::offset_of!(Record<std::sync::atomic::AtomicU64>, held) == 128);
