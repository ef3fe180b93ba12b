//! The control file beside every array and every stream, byte for byte: its fixed part.
//!
//! A stream's control file holds this fixed part, then one record per subscriber (module
//! `stream::layout`). An array's control file is the same fixed part with no records, of which
//! arrays use the sleeper count (module `array::control`). docs/FORMAT.md describes the same
//! bytes in prose; all integers are little-endian. Every participant can write a control file,
//! so nothing in it is trusted.

/// First bytes of a control file.
pub(crate) const MAGIC: [u8; 8] = *b"MMSHCTL\0";
/// Control file layout version.
pub(crate) const VERSION: u32 = 1;

/// Byte offsets in the control file.
pub(crate) mod offsets {
    /// `[u8; 8]` magic.
    pub(crate) const MAGIC: usize = 0x000;
    /// `u32` layout version (1).
    pub(crate) const VERSION: usize = 0x008;
    /// `u32` slots (a copy of the data file's, for diagnostics).
    pub(crate) const SLOTS: usize = 0x00C;
    /// `u32` subscriber records.
    pub(crate) const MAX_SUBSCRIBERS: usize = 0x010;
    /// `u32` bytes per record (256).
    pub(crate) const RECORD_SIZE: usize = 0x014;
    /// `u32` offset of record 0 (4096).
    pub(crate) const RECORDS_OFFSET: usize = 0x018;
    /// `u32` subscribers asleep (or about to sleep) on the data file's futex word (own line).
    pub(crate) const SLEEPERS: usize = 0x040;
    /// `u32` publishers asleep waiting for a lossless subscriber (0 or 1; reset when a
    /// publisher attaches) (own line).
    pub(crate) const PUB_SLEEPERS: usize = 0x080;
    /// `u32` futex word the waiting publisher sleeps on; bumped by subscribers that wake it.
    pub(crate) const PUB_FUTEX: usize = 0x0C0;
    /// `u64` holds granted to subscribers, out of the hold capacity
    /// `slots - 1 - max(history, 1)` (own line).
    pub(crate) const BUDGET: usize = 0x100;
    /// `u32` processes asleep (or about to sleep) waiting for the subscribers to change
    /// (`wait_for_subscribers`, the daemon's watch) (own line).
    pub(crate) const MEMBER_SLEEPERS: usize = 0x140;
    /// `u32` futex word they sleep on; bumped by whoever claims or frees a record while
    /// `MEMBER_SLEEPERS` is not 0 (own line).
    pub(crate) const MEMBER_FUTEX: usize = 0x180;
    /// `u64` subscriptions started so far (a statistic: added to once per subscription, when
    /// it has started) (own line).
    pub(crate) const JOINS: usize = 0x1C0;
    /// `u64` started subscriptions ended so far (left, or their record freed) (own line).
    pub(crate) const LEAVES: usize = 0x200;
    /// `u32` a hint: the CPU the stream's publisher last published from, plus one (0:
    /// unknown); written by the publisher when it changes, read by a subscriber that starts
    /// waiting, to skip spinning on a CPU it shares with the publisher (own line).
    pub(crate) const PUB_CPU: usize = 0x240;
    /// Record 0.
    pub(crate) const RECORDS: usize = 0x1000;
}

/// Size of one subscriber record.
pub(crate) const RECORD_SIZE: usize = 256;

/// The fixed part of a new control file (the rest is zero).
pub(crate) fn control_header(slots: u32, max_subscribers: u32) -> [u8; 64] {
    let mut head = [0u8; 64];
    head[offsets::MAGIC..offsets::MAGIC + 8].copy_from_slice(&MAGIC);
    let fields = [
        (offsets::VERSION, VERSION),
        (offsets::SLOTS, slots),
        (offsets::MAX_SUBSCRIBERS, max_subscribers),
        (offsets::RECORD_SIZE, RECORD_SIZE as u32),
        (offsets::RECORDS_OFFSET, offsets::RECORDS as u32),
    ];
    for (at, value) in fields {
        head[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
    head
}
