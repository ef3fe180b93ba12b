//! Array file format v1: the page-0 header, byte for byte.
//!
//! docs/FORMAT.md is the normative description; this module is its implementation and the two
//! must move together. All integers are little-endian at fixed offsets. The page has two parts:
//!
//! * the **immutable part** (`0x000..0x284`): written once at create, before the file becomes
//!   visible under its name, and never again. A CRC32 (IEEE, as `zlib.crc32`) over
//!   `0..header_len` is stored at `header_len`.
//! * the **mutable part** (`0x400..0x1000`): the seqlock and its companions, each group on its own
//!   64-byte cache line so that readers polling the sequence do not share a line with the futex
//!   word writers bump or with the statistics they update. Only the seqlock code touches it (see
//!   `seqlock.rs` for who may write what).
//!
//! Data starts at `data_offset` (4096 in v1: page aligned, so NumPy or `mmap` can map the data
//! alone) and is `data_len` bytes long, followed by zero padding up to a multiple of 8 bytes so
//! that every data access can be a whole aligned 8-byte word.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::dtype::{DType, DTypeError};
use crate::name::{NameError, validate_name};
use crate::shape::{MAX_DATA_LEN, MAX_FILE_LEN, MAX_NDIM, Order, ShapeError, data_len};

/// Size of the header page, and the data offset of every v1 file.
pub const HEADER_SIZE: usize = 4096;
// The shape module's size limit assumes this header size (it cannot name it: shapes come
// before the format).
const _: () = assert!(MAX_DATA_LEN == (MAX_FILE_LEN - HEADER_SIZE as u64) & !7);
/// First bytes of every array file.
pub const MAGIC: [u8; 8] = *b"MMSHARE\0";
/// The format version of a file that uses no feature flag and no extension area: every file
/// this code writes unless it needs one, so that readers of version 1 read it.
pub const FORMAT_VERSION: u32 = 1;
/// The format version of a file with feature flags or an extension area (docs/FORMAT.md,
/// "Versions, features and extensions"). This code reads both.
pub const FORMAT_VERSION_FEATURES: u32 = 2;

/// Incompatible feature bit 3: each entry of the stream's slot table is a 64-byte cache line
/// (tag, publish time, 48 bytes reserved) instead of 16 bytes; every stream this code makes
/// has it (docs/FORMAT.md, "Slot lines").
pub const FEATURE_SLOT_LINES: u32 = 8;

/// Incompatible feature bit 0: the stream's slot table is followed by a frame-info table of
/// [`Header::frame_info_stride`] bytes per slot (each frame's rows, then its per-frame header),
/// and the frames start after it.
pub const FEATURE_FRAME_INFO: u32 = 1;
/// Incompatible feature bit 1: the stream's frames vary in length along axis 0 (their rows
/// are in the frame-info table); requires [`FEATURE_FRAME_INFO`].
pub const FEATURE_VARIABLE_FRAMES: u32 = 2;
/// Incompatible feature bit 2: the stream has several publishers, one ring ("lane") each,
/// in files of their own (docs/FORMAT.md, "Lanes"); this file is lane [`Header::lane`] of
/// [`Header::lanes`]. Requires [`FEATURE_FRAME_INFO`]: each frame-info entry then holds the
/// identity of the publisher that published the frame after its rows.
pub const FEATURE_LANES: u32 = 4;
/// Incompatible features this code knows: a file with any other bit set in
/// [`Features::incompat`] is refused.
pub const KNOWN_INCOMPAT: u32 =
    FEATURE_FRAME_INFO | FEATURE_VARIABLE_FRAMES | FEATURE_LANES | FEATURE_SLOT_LINES;
/// Most publishers (lanes) a stream may have.
pub const MAX_PUBLISHERS: u32 = 16;
/// Largest per-frame header, in bytes (its frame-info entry is then 65536 bytes).
pub const MAX_FRAME_HEADER: usize = 65528;
/// Read-only-compatible feature bit 0: the array's data area is **sparse**, allocated region
/// by region: a writer must allocate (`fallocate`) the file range of what it writes before it
/// writes it, so that a full disk is an error at that write, never a SIGBUS. A writer that
/// does not know this bit would store into holes: it may only read the file.
pub const FEATURE_RO_SPARSE: u32 = 1;
/// Read-only-compatible features this code knows: a file with any other bit set in
/// [`Features::ro_compat`] may be read but never written.
pub const KNOWN_RO_COMPAT: u32 = FEATURE_RO_SPARSE;
/// Extension record tags this code knows. A record whose tag has bit 15 set is *critical*: a
/// reader that does not know it refuses the file; other records it skips.
pub const KNOWN_EXTENSION_TAGS: &[u16] = &[
    EXTENSION_STALL_POLICY,
    EXTENSION_HISTORY,
    EXTENSION_RECORD_DTYPE,
    EXTENSION_FRAME_HEADER,
    EXTENSION_STRIPES,
];

/// Extension tag `0x8005` (critical): a striped array's stripe size, 8 bytes: `u64` bytes
/// per stripe (little endian), a non-zero multiple of 64 that makes the data area 2 to
/// [`MAX_STRIPES`] stripes. Critical because a reader that validated only the array's
/// sequence (in a striped array, its generation) would accept a half-written region.
pub const EXTENSION_STRIPES: u16 = 0x8005;

/// Most stripes an array may have: the header's stripe table (0x800..0x1000) has 32 lines.
pub const MAX_STRIPES: u32 = 32;

/// The number of stripes of `stripe_bytes` bytes in `data_len` bytes (the last may be
/// shorter); 1 for an array that is not striped (`stripe_bytes` 0).
pub fn stripe_count(data_len: u64, stripe_bytes: u64) -> u64 {
    if stripe_bytes == 0 {
        1
    } else {
        data_len.div_ceil(stripe_bytes)
    }
}

/// The stripe size that divides an array into at most `wanted` stripes of whole slabs along
/// its outermost axis in memory (axis 0 in C order, the last axis in F order), each a multiple
/// of 64 bytes; 0 (not striped) when that gives fewer than 2 stripes.
///
/// Slabs of the outermost axis keep a stripe's bytes contiguous, so that a region of those
/// slabs takes only the stripes it covers. Rounding to 64 bytes keeps stripe boundaries on
/// cache lines, and so on 8-byte words: no word belongs to two stripes.
pub fn choose_stripe_bytes(dtype: &DType, shape: &[u64], order: Order, wanted: u32) -> u64 {
    let Ok(data_len) = data_len(dtype, shape) else {
        return 0;
    };
    let outer = match order {
        Order::C => shape.first(),
        Order::F => shape.last(),
    };
    let slabs = outer.copied().unwrap_or(0);
    if wanted < 2 || slabs < 2 || data_len == 0 {
        return 0;
    }
    let slab = data_len / slabs;
    // Slabs per stripe: as many as split the array into `wanted`, then rounded up so that a
    // stripe is a multiple of 64 bytes.
    let per_line = 64 / gcd(slab, 64);
    let per_stripe = slabs
        .div_ceil(u64::from(wanted.min(MAX_STRIPES)))
        .next_multiple_of(per_line);
    let bytes = per_stripe.saturating_mul(slab);
    if stripe_count(data_len, bytes) < 2 {
        0
    } else {
        bytes
    }
}

/// Below this size an array gets one sequence unless its creator asks for stripes.
pub const STRIPED_FROM_BYTES: u64 = 1 << 20;

/// The smallest stripe the default choice makes.
pub const MIN_DEFAULT_STRIPE: u64 = 64 << 10;

/// The stripe count a creator that does not choose gets for `data_len` bytes: 1 below
/// [`STRIPED_FROM_BYTES`]; above, as many as make stripes of at least [`MIN_DEFAULT_STRIPE`],
/// up to [`MAX_STRIPES`]. A striped whole-array write costs a compare-and-swap per stripe more
/// than a single seqlock, nothing against copying a mebibyte.
pub fn default_stripes(data_len: u64) -> u32 {
    if data_len < STRIPED_FROM_BYTES {
        return 1;
    }
    (data_len / MIN_DEFAULT_STRIPE).min(u64::from(MAX_STRIPES)) as u32
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The stripe size a striped array's extension records give (0 without the record).
///
/// # Errors
/// [`FormatError::BadExtensions`] when the record is not 8 bytes, the size is not a non-zero
/// multiple of 64, it makes fewer than 2 or more than [`MAX_STRIPES`] stripes of `data_len`,
/// or the object is not an array.
pub fn stripes_from_extensions(
    records: &[Extension],
    kind: Kind,
    data_len: u64,
) -> Result<u64, FormatError> {
    let Some(r) = records.iter().find(|r| r.tag == EXTENSION_STRIPES) else {
        return Ok(0);
    };
    let bad =
        |why: String| FormatError::BadExtensions(format!("the stripe size (tag 0x8005) {why}"));
    let bytes: [u8; 8] = r
        .value
        .as_slice()
        .try_into()
        .map_err(|_| bad(format!("is {} bytes, not 8", r.value.len())))?;
    let stripe_bytes = u64::from_le_bytes(bytes);
    if kind != Kind::Array {
        return Err(bad("is in a stream; only arrays are striped".into()));
    }
    if stripe_bytes == 0 || !stripe_bytes.is_multiple_of(64) {
        return Err(bad(format!(
            "is {stripe_bytes}, which is not a non-zero multiple of 64"
        )));
    }
    let count = stripe_count(data_len, stripe_bytes);
    if !(2..=u64::from(MAX_STRIPES)).contains(&count) {
        return Err(bad(format!(
            "{stripe_bytes} makes {count} stripes of {data_len} bytes; 2 to {MAX_STRIPES} are allowed"
        )));
    }
    Ok(stripe_bytes)
}

/// Extension tag `0x8004` (critical): a stream's per-frame header dtype, as its canonical
/// descr text (any dtype; a record's full descr list). Critical because a reader that ignored
/// it would not know where the frames are.
pub const EXTENSION_FRAME_HEADER: u16 = 0x8004;

/// The bytes per frame-info entry of a stream whose per-frame header is `header_len` bytes:
/// the row count (8 bytes), the publisher word (8 bytes, streams with lanes only) and the
/// header, rounded up to whole 64-byte lines.
pub fn frame_info_stride(header_len: usize, lanes: bool) -> u32 {
    (frame_header_offset(lanes) + header_len).next_multiple_of(64) as u32
}

/// Where the per-frame header starts in a frame-info entry: after the row count, and after
/// the publisher word in a stream with lanes.
pub const fn frame_header_offset(lanes: bool) -> usize {
    if lanes { 16 } else { 8 }
}

/// Extension tag 1 (not critical): a stream's [`StallPolicy`], 8 bytes: `u8` kind (0 block,
/// 1 demote, 2 evict), 3 zero bytes, `u32` milliseconds (little endian). A publisher that
/// does not know it blocks, as a stream without it does.
pub const EXTENSION_STALL_POLICY: u16 = 0x0001;

/// Extension tag `0x8002` (critical): a stream's history, 4 bytes: `u32` frames, little
/// endian, `1..=slots - 2`. Critical because an older publisher would reuse the slots the
/// history keeps and an older subscriber would take holds it needs.
pub const EXTENSION_HISTORY: u16 = 0x8002;

/// Extension tag `0x8003` (critical): the full descr of a record dtype, as ASCII text in
/// NumPy's `repr(dtype.descr)` form (`[('x', '<f4'), ('id', '<u4')]`), at most
/// [`crate::MAX_DESCR_LEN`] bytes. The header's dtype field then holds `|V` and the itemsize.
/// Critical because a reader that ignored it would see opaque bytes where the writer meant
/// fields.
pub const EXTENSION_RECORD_DTYPE: u16 = 0x8003;

/// The extension record that carries `dtype`, if it is a record dtype.
pub fn dtype_extension(dtype: &DType) -> Option<Extension> {
    dtype.as_record().map(|r| Extension {
        tag: EXTENSION_RECORD_DTYPE,
        value: r.descr().as_bytes().to_vec(),
    })
}

/// The newest frames a stream with `history` keeps offered, whatever else happens: its
/// history, and at least 1 (the newest frame, for `latest()`; but with history 0, frames of
/// 64 KiB or more loaned newest first may reuse even the newest frame's slot once every
/// subscriber is past it: `Subscriber::latest`). The hold budget counts 1 either way.
pub fn frames_kept(history: u32) -> u64 {
    u64::from(history.max(1))
}

/// Holds all of a stream's subscribers may have at once: every slot but the one on loan and
/// the [`frames_kept`] newest ones (`slots - 2` without history).
pub fn hold_capacity(slots: u32, history: u32) -> u64 {
    u64::from(slots).saturating_sub(1 + frames_kept(history))
}

/// The largest history a ring of `slots` may keep: `slots - 2`, which leaves one hold.
pub fn max_history(slots: u32) -> u32 {
    slots.saturating_sub(2)
}

/// The history a stream's extension records give (0 without the record).
///
/// # Errors
/// [`FormatError::BadHistory`] when the record is not 4 bytes or its value is 0 or more than
/// `slots - 2`.
pub fn history_from_extensions(records: &[Extension], slots: u32) -> Result<u32, FormatError> {
    let Some(r) = records.iter().find(|r| r.tag == EXTENSION_HISTORY) else {
        return Ok(0);
    };
    let value: [u8; 4] = r.value.as_slice().try_into().map_err(|_| {
        FormatError::BadExtensions(format!(
            "the history record (tag 0x8002) is {} bytes, not 4",
            r.value.len()
        ))
    })?;
    let history = u32::from_le_bytes(value);
    check_history(history, slots)?;
    if history == 0 {
        return Err(FormatError::BadExtensions(
            "the history record (tag 0x8002) holds 0; a stream without history has no record"
                .into(),
        ));
    }
    Ok(history)
}

/// A stream's extension records: its stall policy, unless it is Block, and its history,
/// unless it is 0.
pub fn stream_extensions(stall: StallPolicy, history: u32) -> Vec<Extension> {
    let history = (history != 0).then(|| Extension {
        tag: EXTENSION_HISTORY,
        value: history.to_le_bytes().to_vec(),
    });
    stall.to_extension().into_iter().chain(history).collect()
}

/// Checks a stream's history against its slot count.
///
/// # Errors
/// [`FormatError::BadHistory`] above `slots - 2`.
pub fn check_history(history: u32, slots: u32) -> Result<(), FormatError> {
    if history > max_history(slots) {
        return Err(FormatError::BadHistory { history, slots });
    }
    Ok(())
}

/// What a stream's publisher does when a lossless subscriber keeps it waiting for a free slot
/// (the subscriber is a whole ring behind: stopped, frozen, or too slow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StallPolicy {
    /// Wait, up to the loan's timeout (the default): a lossless subscriber gets every frame,
    /// and a stalled one stalls the pipeline.
    #[default]
    Block,
    /// After waiting `after` on them, make the lossless subscribers that hold the publisher
    /// back lossy: the publisher goes on; each such subscriber learns it
    /// (`Subscriber::demoted`) and counts the frames it misses, as any lossy subscriber does.
    Demote {
        /// How long the publisher waits for them first.
        after: std::time::Duration,
    },
    /// As `Demote`, and the subscriber's next receive fails with `StreamError::Evicted`
    /// (it keeps what it holds until it drops; it may subscribe again).
    Evict {
        /// How long the publisher waits for them first.
        after: std::time::Duration,
    },
}

impl StallPolicy {
    /// How long the publisher waits before acting, and whether it evicts (`None` for Block).
    pub fn acts_after(&self) -> Option<(std::time::Duration, bool)> {
        match *self {
            StallPolicy::Block => None,
            StallPolicy::Demote { after } => Some((after, false)),
            StallPolicy::Evict { after } => Some((after, true)),
        }
    }

    /// The extension record that stores it (none for Block, which is the default).
    pub fn to_extension(&self) -> Option<Extension> {
        let (after, evict) = self.acts_after()?;
        let ms = u32::try_from(after.as_millis()).unwrap_or(u32::MAX);
        let mut value = vec![if evict { 2 } else { 1 }, 0, 0, 0];
        value.extend_from_slice(&ms.to_le_bytes());
        Some(Extension {
            tag: EXTENSION_STALL_POLICY,
            value,
        })
    }

    /// The policy a file's extension records give (Block without one, or for a value this
    /// code does not understand: blocking loses nothing).
    pub fn from_extensions(records: &[Extension]) -> StallPolicy {
        let Some(r) = records.iter().find(|r| r.tag == EXTENSION_STALL_POLICY) else {
            return StallPolicy::Block;
        };
        let (Some(&kind), Some(ms)) = (r.value.first(), r.value.get(4..8)) else {
            return StallPolicy::Block;
        };
        let after = std::time::Duration::from_millis(u64::from(u32::from_le_bytes(
            ms.try_into().expect("4 bytes"),
        )));
        match kind {
            1 => StallPolicy::Demote { after },
            2 => StallPolicy::Evict { after },
            _ => StallPolicy::Block,
        }
    }
}

/// What a version-2 file says about the features it uses, ext4-style: `incompat` bits a
/// reader must know to read the file at all, `ro_compat` bits it must know to write it, and
/// `compat` bits it may ignore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Features {
    /// A reader that does not know one of these refuses the file.
    pub incompat: u32,
    /// A reader that does not know one of these may only read the file.
    pub ro_compat: u32,
    /// Anyone may ignore these.
    pub compat: u32,
}

impl Features {
    /// The `ro_compat` bits this code does not know (the file is then read-only to it).
    pub fn unknown_ro_compat(&self) -> u32 {
        self.ro_compat & !KNOWN_RO_COMPAT
    }
}

/// A file's extension area: variable-length descriptions that do not fit the fixed header
/// (a structured dtype's full descr, for example), as records right after the data (or the
/// last slot), never mapped, read once at open. `len` 0 = none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExtensionArea {
    /// Bytes of records.
    pub len: u32,
    /// CRC-32 of those bytes.
    pub crc: u32,
}

/// One record of an extension area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// What it is; bit 15 set = critical (see [`KNOWN_EXTENSION_TAGS`]).
    pub tag: u16,
    /// Its bytes (at most 65535).
    pub value: Vec<u8>,
}

/// Largest extension area, in bytes: a reader never allocates more to read one.
pub const MAX_EXTENSION_LEN: u32 = 1 << 20;

/// Bit 15 of an extension tag: a reader that does not know the tag must refuse the file.
pub const EXTENSION_CRITICAL: u16 = 0x8000;

/// Byte offsets of every header field (see docs/FORMAT.md for invariants and writers).
pub mod offsets {
    /// `[u8; 8]` magic.
    pub const MAGIC: usize = 0x000;
    /// `u32` format version.
    pub const VERSION: usize = 0x008;
    /// `u32` length of the CRC-covered immutable part; the CRC is stored right after it.
    pub const HEADER_LEN: usize = 0x00C;
    /// `u64` offset of the first data byte.
    pub const DATA_OFFSET: usize = 0x010;
    /// `u64` data length in bytes.
    pub const DATA_LEN: usize = 0x018;
    /// `u32` kind: 1 = array, 2 = stream (a ring of frames).
    pub const KIND: usize = 0x020;
    /// `u32` order: 0 = C, 1 = Fortran.
    pub const ORDER: usize = 0x024;
    /// `u32` number of dimensions, 0..=32.
    pub const NDIM: usize = 0x028;
    /// `u32` length of the name in bytes.
    pub const NAME_LEN: usize = 0x02C;
    /// `[u8; 16]` NumPy descr, ASCII, NUL padded.
    pub const DTYPE: usize = 0x030;
    /// `u64` creation time, nanoseconds since the Unix epoch.
    pub const CREATED_NS: usize = 0x040;
    /// `u32` owner uid.
    pub const OWNER_UID: usize = 0x048;
    /// `u32` owner gid.
    pub const OWNER_GID: usize = 0x04C;
    /// `u32` permission bits (0o777 mask).
    pub const MODE: usize = 0x050;
    /// Streams only (zero for arrays): `u32` number of slots in the ring.
    pub const STREAM_SLOTS: usize = 0x054;
    /// Streams only (zero for arrays): `u32` number of subscriber records in the control file.
    pub const STREAM_MAX_SUBSCRIBERS: usize = 0x058;
    /// 36 reserved bytes (zero); in a version-2 file the feature words and the extension
    /// area's locator below, the rest reserved.
    pub const RESERVED: usize = 0x05C;
    /// Streams with [`super::FEATURE_LANES`]: `u16` lanes (publishers), `2..=16`.
    pub const STREAM_LANES: usize = 0x05C;
    /// Streams with [`super::FEATURE_LANES`]: `u16` this file's lane, `0..lanes`.
    pub const STREAM_LANE: usize = 0x05E;
    /// Version 2: `u32` incompatible feature bits.
    pub const FEATURES_INCOMPAT: usize = 0x060;
    /// Version 2: `u32` read-only-compatible feature bits.
    pub const FEATURES_RO_COMPAT: usize = 0x064;
    /// Version 2: `u32` compatible feature bits.
    pub const FEATURES_COMPAT: usize = 0x068;
    /// Version 2: `u32` length of the extension area (0 = none).
    pub const EXT_LEN: usize = 0x06C;
    /// Version 2: `u64` offset of the extension area: exactly where the data (or the last
    /// slot) ends.
    pub const EXT_OFFSET: usize = 0x070;
    /// Version 2: `u32` CRC-32 of the extension area.
    pub const EXT_CRC: usize = 0x078;
    /// Version 2, streams with the frame-info feature: `u32` bytes per frame-info entry.
    pub const FRAME_INFO_STRIDE: usize = 0x07C;
    /// `[u64; 32]` shape; entries past `ndim` are zero.
    pub const SHAPE: usize = 0x080;
    /// `[u8; 256]` name, NUL padded.
    pub const NAME: usize = 0x180;
    /// End of the CRC-covered part: the `header_len` value of v1.
    pub const IMMUTABLE_END: usize = 0x280;
    /// `u32` CRC32 of bytes `0..header_len`.
    pub const CRC: usize = 0x280;

    /// `u64` seqlock sequence (own cache line).
    pub const SEQUENCE: usize = 0x400;
    /// `u32` futex word, bumped on every publish (own cache line).
    pub const FUTEX: usize = 0x440;
    /// `u64` identity of the process holding the write side, 0 when none: pid in the low 32
    /// bits, the low 32 bits of its start time (clock ticks since boot, /proc/PID/stat field
    /// 22) in the high 32 bits. One word, so it is read and claimed atomically.
    pub const WRITER: usize = 0x480;
    /// `u32` flags; bit 0 = TORN (own cache line).
    pub const FLAGS: usize = 0x4C0;
    /// `u64` completed writes.
    pub const WRITE_COUNT: usize = 0x500;
    /// `u64` time of the last completed write, ns since the Unix epoch.
    pub const LAST_WRITE_NS: usize = 0x508;
    /// Writer registrations: 64 `u64`, each 0 or the identity word (as `WRITER`) of the
    /// process whose write handle holds an exclusive OFD lock on that slot's first byte.
    pub const WRITER_SLOTS: usize = 0x600;
    /// Striped arrays: the stripe table, one 64-byte line per stripe from here to 0x1000
    /// (zero in arrays that are not striped). Stripe `k`'s line is at
    /// `STRIPES + k * STRIPE_LINE`, its words at the `STRIPE_*` offsets within it.
    pub const STRIPES: usize = 0x800;
    /// Bytes per stripe line.
    pub const STRIPE_LINE: usize = 64;
    /// In a stripe line: `u64` the stripe's sequence (even = stable, odd = held).
    pub const STRIPE_SEQ: usize = 0;
    /// In a stripe line: `u64` identity of the stripe's holder (as [`WRITER`]), 0 when none.
    pub const STRIPE_WRITER: usize = 8;
    /// In a stripe line: `u32` futex word, bumped after each publish of the stripe.
    pub const STRIPE_FUTEX: usize = 16;
    /// In a stripe line: `u32` flags; bit 0 = TORN.
    pub const STRIPE_FLAGS: usize = 20;
    /// In a stripe line: `u64` completed writes whose first stripe this is (a statistic,
    /// written only by the stripe's holder: an array's write count is `WRITE_COUNT` plus
    /// these).
    pub const STRIPE_WRITES: usize = 24;
    /// In a stripe line: `u64` time of the last completed write whose first stripe this is,
    /// ns since the Unix epoch (an array's last write is the latest of these and
    /// `LAST_WRITE_NS`).
    pub const STRIPE_LAST_WRITE_NS: usize = 32;

    /// Streams: `u64` frames published so far, which is also the number the next frame gets.
    /// Only the publisher writes it (the array's sequence line; streams have no sequence).
    pub const PUBLISHED: usize = 0x400;
    /// Streams: `u64` identity of the attached publisher (pid and start time as for
    /// [`WRITER`]), 0 when none.
    pub const PUBLISHER: usize = WRITER;
    /// Streams: `u64` publishers attached to this ring so far (each attach adds one first:
    /// the publisher's attach number, part of the identity it tags its frames with).
    pub const ATTACHES: usize = WRITE_COUNT;
    /// Streams: the slot table starts on the page after the header: for each slot, its tag
    /// (`u64`, 0 = no frame or on loan, else frame number + 1, with bit 63 set once the frame
    /// is taken back for reuse) then its publish time (`u64`, ns since the Unix epoch), in an
    /// entry of 64 bytes per slot with [`super::FEATURE_SLOT_LINES`] (16 without: streams
    /// made before it). The frames follow on the next page boundary.
    pub const SLOT_TABLE: usize = 0x1000;
}

/// The TORN bit of the flags word: a writer died mid-write; the data may be half-written.
pub const FLAG_TORN: u32 = 1;

/// Fewest slots a stream may have: one on loan to the publisher, one for the newest frame,
/// and at least one a subscriber can hold.
pub const MIN_SLOTS: u32 = 3;
/// Most slots a stream may have (its slot table is then 256 KiB; 64 KiB without slot lines).
pub const MAX_SLOTS: u32 = 4096;
/// Most subscriber records a stream's control file may have.
pub const MAX_SUBSCRIBERS: u32 = 1024;

/// What kind of object the file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A single N-dimensional array behind a seqlock.
    Array,
    /// A ring of `slots` frames, each an N-dimensional array of the header's dtype and shape,
    /// with a control file for up to `max_subscribers` subscribers (see the `stream` module).
    Stream {
        /// Frames in the ring, [`MIN_SLOTS`]`..=`[`MAX_SLOTS`].
        slots: u32,
        /// Subscriber records, `1..=`[`MAX_SUBSCRIBERS`].
        max_subscribers: u32,
    },
}

impl Kind {
    /// Header code.
    pub const fn code(self) -> u32 {
        match self {
            Kind::Array => 1,
            Kind::Stream { .. } => 2,
        }
    }

    /// "array" or "stream".
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Array => "array",
            Kind::Stream { .. } => "stream",
        }
    }
}

/// The immutable description of an array, as stored in its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Array name (validated by [`validate_name`]).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions (at most 32).
    pub shape: Vec<u64>,
    /// Memory order.
    pub order: Order,
    /// Object kind.
    pub kind: Kind,
    /// Offset of the first data byte in the file (4096).
    pub data_offset: u64,
    /// Data length in bytes: product of `shape` times the element size.
    pub data_len: u64,
    /// Creation time, ns since the Unix epoch.
    pub created_ns: u64,
    /// Owner uid.
    pub owner_uid: u32,
    /// Owner gid.
    pub owner_gid: u32,
    /// Permission bits, `0o777` mask.
    pub mode: u32,
    /// Feature flags (all zero in a version-1 file).
    pub features: Features,
    /// The extension area (none in a version-1 file).
    pub extension: ExtensionArea,
    /// Streams with [`FEATURE_FRAME_INFO`]: bytes per frame-info entry (0 otherwise).
    pub frame_info_stride: u32,
    /// Streams: the per-frame header's dtype, if frames carry one (from extension record
    /// `0x8004`; set by [`Header::apply_extensions`]).
    pub frame_header: Option<DType>,
    /// Streams: how many publishers it may have, one lane each (1 without
    /// [`FEATURE_LANES`]).
    pub lanes: u32,
    /// Streams: which lane this file is, `0..lanes`.
    pub lane: u32,
    /// Striped arrays: bytes per stripe (from extension record `0x8005`; set by
    /// [`Header::apply_extensions`]); 0 for an array with one sequence.
    pub stripe_bytes: u64,
}

/// What a caller specifies to create an array; the rest of the [`Header`] is derived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArraySpec {
    /// Array name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Memory order.
    pub order: Order,
    /// Owner uid.
    pub owner_uid: u32,
    /// Owner gid.
    pub owner_gid: u32,
    /// Permission bits, `0o777` mask.
    pub mode: u32,
    /// Stripes wanted, each with a sequence of its own so that writers of disjoint regions
    /// run at once: 0 or 1 for one sequence, at most [`MAX_STRIPES`]. The array may get fewer
    /// ([`choose_stripe_bytes`]), and none if it is too small to divide.
    pub stripes: u32,
    /// A sparse data area ([`FEATURE_RO_SPARSE`]): only the header is allocated at create,
    /// and each write allocates what it writes first (a full disk is then that write's
    /// error). For arrays larger than the disk's free space or than what will ever be
    /// written. Default `false`: the whole file is allocated at create.
    pub sparse: bool,
}

impl ArraySpec {
    /// A C-order spec owned by the calling process's uid/gid with mode 0600.
    pub fn new(name: impl Into<String>, dtype: DType, shape: impl Into<Vec<u64>>) -> Self {
        ArraySpec {
            name: name.into(),
            dtype,
            shape: shape.into(),
            order: Order::C,
            owner_uid: rustix::process::getuid().as_raw(),
            owner_gid: rustix::process::getgid().as_raw(),
            mode: 0o600,
            stripes: 1,
            sparse: false,
        }
    }

    /// The array's extension records: its record descr, for a record dtype; its stripe size,
    /// if it is striped.
    pub fn extensions(&self) -> Vec<Extension> {
        let stripe_bytes = choose_stripe_bytes(&self.dtype, &self.shape, self.order, self.stripes);
        dtype_extension(&self.dtype)
            .into_iter()
            .chain((stripe_bytes != 0).then(|| Extension {
                tag: EXTENSION_STRIPES,
                value: stripe_bytes.to_le_bytes().to_vec(),
            }))
            .collect()
    }
}

/// What a caller specifies to create a stream; the rest of the [`Header`] is derived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    /// Name, dtype, shape, order, owner and mode of the stream; the shape is one frame's.
    pub frame: ArraySpec,
    /// Frames in the ring, [`MIN_SLOTS`]`..=`[`MAX_SLOTS`].
    pub slots: u32,
    /// Subscriber records, `1..=`[`MAX_SUBSCRIBERS`].
    pub max_subscribers: u32,
    /// What the publisher does about a lossless subscriber that stalls it.
    pub stall: StallPolicy,
    /// The newest frames kept offered for subscribers that join late, `0..=slots - 2`.
    pub history: u32,
    /// The dtype of each frame's header (one element of it), if frames carry one.
    pub header: Option<DType>,
    /// Whether frames vary in length along axis 0 (the shape is the largest frame's).
    pub variable: bool,
    /// Publishers it may have at once, `1..=`[`MAX_PUBLISHERS`], one ring (lane) each.
    pub max_publishers: u32,
}

impl StreamSpec {
    /// A stream of 8 slots and 16 subscriber records, C order, owned by the calling process's
    /// uid/gid with mode 0600.
    pub fn new(name: impl Into<String>, dtype: DType, frame_shape: impl Into<Vec<u64>>) -> Self {
        StreamSpec {
            frame: ArraySpec::new(name, dtype, frame_shape),
            slots: 8,
            max_subscribers: 16,
            stall: StallPolicy::Block,
            history: 0,
            header: None,
            variable: false,
            max_publishers: 1,
        }
    }

    /// The stream's extension records (its stall policy, unless it is the default; its
    /// history, unless it is 0; its record descr, for a record dtype).
    pub fn extensions(&self) -> Vec<Extension> {
        let mut records = stream_extensions(self.stall, self.history);
        records.extend(self.frame.extensions());
        records.extend(self.header.as_ref().map(|h| Extension {
            tag: EXTENSION_FRAME_HEADER,
            value: h.descr().as_bytes().to_vec(),
        }));
        records
    }
}

/// Why a header (or the file around it) is not a valid v1 array file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than a header page: the file is truncated (or not ours).
    #[error("file is {len} bytes, shorter than the {HEADER_SIZE}-byte header")]
    Truncated {
        /// Bytes available.
        len: u64,
    },
    /// The first 8 bytes are not `MMSHARE\0`.
    #[error("bad magic {found:02x?}: not an mmshare array file")]
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// A format version this code does not read.
    #[error("unsupported format version {found} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// `header_len` is not the v1 value.
    #[error("header length {found} is invalid (expected {expected})")]
    BadHeaderLen {
        /// Value found.
        found: u32,
        /// Value required.
        expected: u32,
    },
    /// The CRC does not match the immutable part.
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// CRC stored in the file.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// The data offset is not where v1 puts the data of this kind (page aligned).
    #[error("data offset {offset} is invalid: it must be {expected} (page aligned)")]
    MisalignedDataOffset {
        /// Offset found.
        offset: u64,
        /// Where the data of this kind starts.
        expected: u64,
    },
    /// Unknown kind code.
    #[error("unknown kind code {0}")]
    BadKind(u32),
    /// Unknown order code.
    #[error("unknown order code {0}")]
    BadOrder(u32),
    /// The frame-info table (per-frame headers, variable-size frames) is inconsistent.
    #[error("bad frame-info table: {0}")]
    BadFrameInfo(String),
    /// The dtype field is not a supported descr.
    #[error("bad dtype field: {0}")]
    BadDType(#[from] DTypeError),
    /// The dtype bytes are not NUL-padded ASCII.
    #[error("dtype field is not NUL-padded ASCII: {0:02x?}")]
    BadDTypeBytes(Vec<u8>),
    /// `ndim` beyond 32.
    #[error("ndim {0} exceeds the maximum of {MAX_NDIM}")]
    BadNdim(u32),
    /// Shape overflow.
    #[error("bad shape: {0}")]
    BadShape(#[from] ShapeError),
    /// The name field is invalid.
    #[error("bad name field: {0}")]
    BadName(#[from] NameError),
    /// The name length is out of range, or the name is not UTF-8.
    #[error("name field is malformed (length {0})")]
    BadNameBytes(u32),
    /// Mode bits outside 0o777.
    #[error("mode {0:#o} has bits outside 0o777")]
    BadMode(u32),
    /// More stripes asked for than the header's stripe table holds.
    #[error("{0} stripes asked for; an array has at most {MAX_STRIPES}")]
    BadStripes(u32),
    /// A reserved field is not zero.
    #[error("reserved header bytes at {offset:#x} are not zero")]
    ReservedNotZero {
        /// Offset of the first non-zero reserved byte.
        offset: usize,
    },
    /// The declared data length is not what dtype × shape gives.
    #[error(
        "data length {declared} does not match dtype {dtype} and shape {shape:?} ({expected} bytes)"
    )]
    LengthMismatch {
        /// `data_len` in the header.
        declared: u64,
        /// What dtype and shape imply.
        expected: u64,
        /// The dtype.
        dtype: DType,
        /// The shape.
        shape: Vec<u64>,
    },
    /// The file uses incompatible features this code does not know.
    #[error(
        "the file uses feature bits {unknown:#x} that this build does not know (it knows {known:#x}): open it with a newer mmshare"
    )]
    UnknownFeatures {
        /// The unknown `incompat` bits.
        unknown: u32,
        /// The bits this build knows.
        known: u32,
    },
    /// An array file with incompatible feature bits that only a stream may have (every one
    /// this code knows is about a stream's layout, and none is ever reused for arrays: an
    /// array feature takes a new bit, which older builds refuse as unknown): a damaged or
    /// forged header.
    #[error(
        "the file is an array but has stream feature bits {0:#x} (slot lines, frame info, variable frames, lanes): a damaged header"
    )]
    StreamFeaturesOnArray(u32),
    /// The file uses read-only-compatible features this code does not know, and it was
    /// opened for writing.
    #[error(
        "the file uses feature bits {unknown:#x} that this build may read but not write: open it read-only, or with a newer mmshare"
    )]
    ReadOnlyFeatures {
        /// The unknown `ro_compat` bits.
        unknown: u32,
    },
    /// The extension area is malformed.
    #[error("bad extension area: {0}")]
    BadExtensions(String),
    /// The extension area holds a critical record this code does not know.
    #[error(
        "the file has a critical extension record (tag {tag:#06x}) that this build does not know: open it with a newer mmshare"
    )]
    UnknownExtension {
        /// The record's tag.
        tag: u16,
    },
    /// A stream's slot count is outside [`MIN_SLOTS`]`..=`[`MAX_SLOTS`].
    #[error("a stream has {MIN_SLOTS} to {MAX_SLOTS} slots, not {0}")]
    BadSlots(u32),
    /// A stream's history is more than its slots minus 2.
    #[error(
        "a stream of {slots} slots keeps a history of at most {} frames (slots - 2: one slot is on loan and one must stay free for a hold), not {history}",
        max_history(*slots)
    )]
    BadHistory {
        /// History asked for.
        history: u32,
        /// Slots of the ring.
        slots: u32,
    },
    /// A stream's publisher limit (its lanes) is outside `1..=`[`MAX_PUBLISHERS`], or a
    /// lane's index is not below it.
    #[error(
        "a stream has 1 to {MAX_PUBLISHERS} publishers (lanes), and each lane's index is below that: not lane {lane} of {lanes}"
    )]
    BadLanes {
        /// The lanes (publishers) given.
        lanes: u32,
        /// The lane given.
        lane: u32,
    },
    /// A stream's subscriber limit is outside `1..=`[`MAX_SUBSCRIBERS`].
    #[error("a stream has 1 to {MAX_SUBSCRIBERS} subscriber records, not {0}")]
    BadMaxSubscribers(u32),
    /// A stream's ring (slots × frame size, page aligned) does not fit in a file.
    #[error(
        "{slots} slots of {frame_len}-byte frames (each padded to whole 4096-byte pages) do not fit in a file of at most 2^63 - 1 bytes"
    )]
    StreamTooLarge {
        /// Slots asked for.
        slots: u32,
        /// Bytes per frame.
        frame_len: u64,
    },
    /// An array whose header, data and extension records together do not fit in a file.
    #[error(
        "{data_len} bytes of data and {records} bytes of extension records (a stripe size, a record descr) do not fit in a file of at most 2^63 - 1 bytes with the 4096-byte header; ask for one sequence (stripes 1) or a smaller shape"
    )]
    ArrayTooLarge {
        /// Bytes of data.
        data_len: u64,
        /// Bytes the extension area takes.
        records: u64,
    },
    /// The file is shorter than the data it declares.
    #[error(
        "file is {size} bytes but its header needs {needed} (data offset + padded data length)"
    )]
    FileTooShort {
        /// Actual file size.
        size: u64,
        /// Size the header requires.
        needed: u64,
    },
}

fn u32_at(page: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(page[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(page: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(page[off..off + 8].try_into().expect("8 bytes"))
}

fn put_u32(page: &mut [u8], off: usize, v: u32) {
    page[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(page: &mut [u8], off: usize, v: u64) {
    page[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// `n` rounded up to a multiple of 8: the data area's length in the file.
pub const fn padded_len(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// Nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Header {
    /// Builds the header for a new array, validating name, shape and mode.
    ///
    /// # Errors
    /// [`FormatError::BadName`], [`FormatError::BadShape`], [`FormatError::BadMode`],
    /// [`FormatError::BadStripes`], or [`FormatError::ArrayTooLarge`] when the extension
    /// records push the file past 2^63 - 1 bytes.
    pub fn new(spec: &ArraySpec) -> Result<Header, FormatError> {
        let mut header = Self::build(spec, Kind::Array)?;
        if spec.stripes > MAX_STRIPES {
            return Err(FormatError::BadStripes(spec.stripes));
        }
        let records = spec.extensions();
        header.stripe_bytes = stripes_from_extensions(&records, header.kind, header.data_len)?;
        header.set_extensions(&records);
        if spec.sparse {
            header.features.ro_compat |= FEATURE_RO_SPARSE;
        }
        debug_assert_eq!(records, header.array_extensions());
        let area = padded_len(u64::from(header.extension.len));
        if header
            .extension_offset()
            .checked_add(area)
            .is_none_or(|end| end > MAX_FILE_LEN)
        {
            return Err(FormatError::ArrayTooLarge {
                data_len: header.data_len,
                records: area,
            });
        }
        Ok(header)
    }

    /// Whether the array's data area is sparse ([`FEATURE_RO_SPARSE`]): writers allocate what
    /// they write first.
    pub fn is_sparse(&self) -> bool {
        self.kind == Kind::Array && self.features.ro_compat & FEATURE_RO_SPARSE != 0
    }

    /// An array's extension records, as its header describes them: its record descr, for a
    /// record dtype; its stripe size, if it is striped.
    pub fn array_extensions(&self) -> Vec<Extension> {
        dtype_extension(&self.dtype)
            .into_iter()
            .chain((self.stripe_bytes != 0).then(|| Extension {
                tag: EXTENSION_STRIPES,
                value: self.stripe_bytes.to_le_bytes().to_vec(),
            }))
            .collect()
    }

    /// Builds the header for a new stream, validating what [`Header::new`] does plus the slot
    /// count, the subscriber limit and the ring's size.
    ///
    /// # Errors
    /// As [`Header::new`], plus [`FormatError::BadSlots`], [`FormatError::BadMaxSubscribers`],
    /// [`FormatError::BadHistory`] and [`FormatError::StreamTooLarge`].
    pub fn new_stream(spec: &StreamSpec) -> Result<Header, FormatError> {
        let kind = Kind::Stream {
            slots: spec.slots,
            max_subscribers: spec.max_subscribers,
        };
        let mut header = Self::build(&spec.frame, kind)?;
        // Every stream made now has a cache line per slot-table entry.
        header.features.incompat |= FEATURE_SLOT_LINES;
        header.data_offset = data_offset_of(kind, header.features.incompat);
        if (MIN_SLOTS..=MAX_SLOTS).contains(&spec.slots) {
            check_history(spec.history, spec.slots)?;
        }
        if let Some(h) = &spec.header {
            check_writable_dtype(h)?;
        }
        if !(1..=MAX_PUBLISHERS).contains(&spec.max_publishers) {
            return Err(FormatError::BadLanes {
                lanes: spec.max_publishers,
                lane: 0,
            });
        }
        let lanes = spec.max_publishers > 1;
        if spec.header.is_some() || spec.variable || lanes {
            let header_len = spec.header.as_ref().map_or(0, DType::size);
            if frame_header_offset(lanes) + header_len > 8 + MAX_FRAME_HEADER {
                return Err(FormatError::BadFrameInfo(format!(
                    "the per-frame header is {header_len} bytes; at most {MAX_FRAME_HEADER} are allowed"
                )));
            }
            header.features.incompat |= FEATURE_FRAME_INFO;
            if spec.variable {
                header.features.incompat |= FEATURE_VARIABLE_FRAMES;
            }
            if lanes {
                header.features.incompat |= FEATURE_LANES;
                header.lanes = spec.max_publishers;
            }
            header.frame_info_stride = frame_info_stride(header_len, lanes);
            header.frame_header.clone_from(&spec.header);
            header.check_frame_info()?;
            header.data_offset = stream_data_offset(
                spec.slots,
                header.frame_info_stride,
                header.features.incompat,
            );
        }
        header.set_extensions(&spec.extensions());
        header.check_stream_geometry()?;
        Ok(header)
    }

    /// The per-frame header's dtype from record `0x8004`, checked against the frame-info
    /// stride the header gives.
    fn apply_frame_header(&mut self, records: &[Extension]) -> Result<(), FormatError> {
        let bad = |why: String| {
            FormatError::BadExtensions(format!("the per-frame header (tag 0x8004) {why}"))
        };
        let dtype = match records.iter().find(|r| r.tag == EXTENSION_FRAME_HEADER) {
            None => None,
            Some(_) if self.frame_info_stride == 0 => {
                return Err(bad("is in a file without a frame-info table".into()));
            }
            Some(r) => {
                let text = std::str::from_utf8(&r.value)
                    .ok()
                    .filter(|t| t.is_ascii())
                    .ok_or_else(|| bad("is not ASCII text".into()))?;
                let dtype = DType::parse(text).map_err(|e| bad(format!("is not valid: {e}")))?;
                if dtype.descr() != text {
                    return Err(bad(format!(
                        "is not in canonical form (it would be {:?})",
                        dtype.descr()
                    )));
                }
                Some(dtype)
            }
        };
        let len = dtype.as_ref().map_or(0, DType::size);
        if self.frame_info_stride != 0
            && (len > MAX_FRAME_HEADER
                || frame_info_stride(len, self.has_lanes()) != self.frame_info_stride)
        {
            return Err(bad(format!(
                "of {len} bytes does not fit the frame-info stride {}",
                self.frame_info_stride
            )));
        }
        self.frame_header = dtype;
        Ok(())
    }

    /// Locates `records` as the file's extension area (none when empty).
    fn set_extensions(&mut self, records: &[Extension]) {
        if !records.is_empty() {
            let (area, crc) = encode_extensions(records);
            self.extension = ExtensionArea {
                len: area.len() as u32,
                crc,
            };
        }
    }

    /// Completes a decoded header with what its extension records say about it: a record
    /// dtype's fields (the header's dtype field holds only `|V` and the itemsize).
    ///
    /// # Errors
    /// [`FormatError::BadExtensions`] when the record descr is not a valid record, or its
    /// itemsize is not the one the dtype field gives.
    pub fn apply_extensions(&mut self, records: &[Extension]) -> Result<(), FormatError> {
        self.apply_frame_header(records)?;
        self.stripe_bytes = stripes_from_extensions(records, self.kind, self.data_len)?;
        let Some(r) = records.iter().find(|r| r.tag == EXTENSION_RECORD_DTYPE) else {
            return Ok(());
        };
        let bad = |why: String| {
            FormatError::BadExtensions(format!("the record dtype (tag 0x8003) {why}"))
        };
        let text = std::str::from_utf8(&r.value)
            .ok()
            .filter(|t| t.is_ascii())
            .ok_or_else(|| bad("is not ASCII text".into()))?;
        let record = match DType::parse(text) {
            Ok(DType::Record(record)) => record,
            Ok(other) => return Err(bad(format!("is {other}, not a record"))),
            Err(e) => return Err(bad(format!("is not valid: {e}"))),
        };
        if record.descr() != text {
            return Err(bad(format!(
                "is not in canonical form (it would be {:?})",
                record.descr()
            )));
        }
        if self.dtype != DType::Void(record.itemsize() as u32) {
            return Err(bad(format!(
                "has itemsize {}, but the header's dtype is {}",
                record.itemsize(),
                self.dtype
            )));
        }
        self.dtype = DType::Record(record);
        Ok(())
    }

    fn build(spec: &ArraySpec, kind: Kind) -> Result<Header, FormatError> {
        validate_name(&spec.name)?;
        check_writable_dtype(&spec.dtype)?;
        let data_len = data_len(&spec.dtype, &spec.shape)?;
        if spec.mode & !0o777 != 0 {
            return Err(FormatError::BadMode(spec.mode));
        }
        Ok(Header {
            name: spec.name.clone(),
            dtype: spec.dtype.clone(),
            shape: spec.shape.clone(),
            order: spec.order,
            kind,
            data_offset: data_offset_of(kind, 0),
            data_len,
            created_ns: now_ns(),
            owner_uid: spec.owner_uid,
            owner_gid: spec.owner_gid,
            mode: spec.mode,
            features: Features::default(),
            extension: ExtensionArea::default(),
            frame_info_stride: 0,
            frame_header: None,
            lanes: 1,
            lane: 0,
            stripe_bytes: 0,
        })
    }

    /// Whether the stream has several publishers, one lane each ([`FEATURE_LANES`]).
    pub fn has_lanes(&self) -> bool {
        self.features.incompat & FEATURE_LANES != 0
    }

    /// The header of lane `lane` of this stream: the same but for the lane field (and the
    /// creation time, which stays the stream's).
    ///
    /// # Panics
    /// If `lane` is not below [`Header::lanes`].
    pub fn for_lane(&self, lane: u32) -> Header {
        assert!(lane < self.lanes, "lane {lane} of {}", self.lanes);
        Header {
            lane,
            ..self.clone()
        }
    }

    /// Whether the stream's frames vary in length ([`FEATURE_VARIABLE_FRAMES`]).
    pub fn is_variable(&self) -> bool {
        self.features.incompat & FEATURE_VARIABLE_FRAMES != 0
    }

    /// Streams with [`FEATURE_FRAME_INFO`]: where the frame-info table starts.
    pub fn frame_info_offset(&self) -> Option<u64> {
        match self.kind {
            Kind::Stream { slots, .. } if self.frame_info_stride != 0 => Some(
                offsets::SLOT_TABLE as u64
                    + (self.slot_entry_len() as u64 * u64::from(slots)).next_multiple_of(64),
            ),
            _ => None,
        }
    }

    /// Bytes per slot-table entry: 64 with [`FEATURE_SLOT_LINES`], else 16.
    pub fn slot_entry_len(&self) -> usize {
        slot_entry_len(self.features.incompat)
    }

    /// Bytes of one frame's header (0 without one).
    pub fn frame_header_len(&self) -> usize {
        self.frame_header.as_ref().map_or(0, DType::size)
    }

    /// Bytes of one row of a frame (a slice along axis 0): the frame length divided by its
    /// first dimension (the whole frame for a 0-d frame; 0 for an empty one).
    pub fn row_len(&self) -> u64 {
        match self.shape.first() {
            Some(0) => 0,
            Some(&rows) => self.data_len / rows,
            None => self.data_len,
        }
    }

    /// The frame-info feature's invariants: variable frames need a first dimension, C order,
    /// and the frame-info feature; a stride only with that feature.
    fn check_frame_info(&self) -> Result<(), FormatError> {
        let bad = |why: &str| Err(FormatError::BadFrameInfo(why.to_owned()));
        let info = self.features.incompat & FEATURE_FRAME_INFO != 0;
        if !matches!(self.kind, Kind::Stream { .. }) && (info || self.is_variable()) {
            return bad("an array has no frame-info table");
        }
        if self.is_variable() && !info {
            return bad("variable-size frames need the frame-info feature");
        }
        if info != (self.frame_info_stride != 0) {
            return bad("a frame-info stride goes with the frame-info feature, and only with it");
        }
        if self.has_lanes() && !info {
            return bad("lanes need the frame-info feature (their frames' publisher words)");
        }
        let lanes_ok = if self.has_lanes() {
            (2..=MAX_PUBLISHERS).contains(&self.lanes)
        } else {
            self.lanes == 1
        };
        if !lanes_ok || self.lane >= self.lanes {
            return Err(FormatError::BadLanes {
                lanes: self.lanes,
                lane: self.lane,
            });
        }
        if info
            && (!self.frame_info_stride.is_multiple_of(64)
                || (self.frame_info_stride as usize) < frame_header_offset(self.has_lanes())
                || self.frame_info_stride as usize > 8 + MAX_FRAME_HEADER)
        {
            return Err(FormatError::BadFrameInfo(format!(
                "a frame-info stride of {} bytes is not a multiple of 64 up to 65536",
                self.frame_info_stride
            )));
        }
        if self.is_variable() && self.shape.is_empty() {
            return bad("variable-size frames need at least one dimension (their rows)");
        }
        if self.is_variable() && self.order == Order::F && self.shape.len() > 1 {
            return bad(
                "Fortran-order frames cannot vary in length: their rows are not contiguous",
            );
        }
        Ok(())
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        if self.data_len == 0 {
            0
        } else {
            self.data_len / self.dtype.size() as u64
        }
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.data_len == 0
    }

    /// The smallest valid file size. Arrays: data offset plus the data length padded to 8
    /// bytes. Streams: data offset plus `slots` frames, each [`Header::slot_stride`] apart.
    /// For a decoded or built header this never overflows (checked when it was made).
    pub fn file_len(&self) -> u64 {
        self.extension_offset()
            .saturating_add(padded_len(u64::from(self.extension.len)))
    }

    /// Where the data (or the last slot) ends, and the extension area, if any, starts.
    pub fn extension_offset(&self) -> u64 {
        match self.kind {
            Kind::Array => self.data_offset + padded_len(self.data_len),
            Kind::Stream { slots, .. } => self
                .data_offset
                .saturating_add(self.slot_stride().saturating_mul(u64::from(slots))),
        }
    }

    /// The version this header is written with: 1 unless it needs feature flags or an
    /// extension area.
    pub fn format_version(&self) -> u32 {
        if self.features == Features::default() && self.extension.len == 0 {
            FORMAT_VERSION
        } else {
            FORMAT_VERSION_FEATURES
        }
    }

    /// Reads and checks the extension area of the file this header came from (nothing to do
    /// without one): its CRC, its records, and that every critical record is one this code
    /// knows. Returns the records.
    ///
    /// # Errors
    /// [`FormatError::FileTooShort`] when the area is past the end of the file,
    /// [`FormatError::BadExtensions`] for a CRC mismatch or malformed records,
    /// [`FormatError::UnknownExtension`] for a critical record this code does not know.
    pub fn read_extensions(&self, file: &std::fs::File) -> Result<Vec<Extension>, FormatError> {
        use std::os::unix::fs::FileExt;
        if self.extension.len == 0 {
            return Ok(Vec::new());
        }
        let mut area = vec![0u8; self.extension.len as usize];
        file.read_exact_at(&mut area, self.extension_offset())
            .map_err(|_| FormatError::FileTooShort {
                size: file.metadata().map_or(0, |m| m.len()),
                needed: self.file_len(),
            })?;
        decode_extensions(&area, self.extension.crc)
    }

    /// Streams: the distance between the starts of two frames, the frame length rounded up
    /// to whole 4096-byte pages (at least one page), so that every frame starts page
    /// aligned. Arrays: the padded data length.
    pub fn slot_stride(&self) -> u64 {
        match self.kind {
            Kind::Array => padded_len(self.data_len),
            Kind::Stream { .. } => self
                .data_len
                .max(1)
                .div_ceil(HEADER_SIZE as u64)
                .saturating_mul(HEADER_SIZE as u64),
        }
    }

    fn check_stream_geometry(&self) -> Result<(), FormatError> {
        let Kind::Stream {
            slots,
            max_subscribers,
        } = self.kind
        else {
            return Ok(());
        };
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&slots) {
            return Err(FormatError::BadSlots(slots));
        }
        if !(1..=MAX_SUBSCRIBERS).contains(&max_subscribers) {
            return Err(FormatError::BadMaxSubscribers(max_subscribers));
        }
        let ring = self
            .data_len
            .max(1)
            .checked_next_multiple_of(HEADER_SIZE as u64)
            .and_then(|stride| stride.checked_mul(u64::from(slots)))
            .and_then(|ring| ring.checked_add(self.data_offset))
            .filter(|&len| len <= i64::MAX as u64);
        if ring.is_none() {
            return Err(FormatError::StreamTooLarge {
                slots,
                frame_len: self.data_len,
            });
        }
        Ok(())
    }

    /// The full header page for a new file: immutable part with its CRC, mutable part zero
    /// (sequence 0 = version 0, unlocked, not torn).
    pub fn encode(&self) -> Box<[u8; HEADER_SIZE]> {
        let mut page = Box::new([0u8; HEADER_SIZE]);
        let p = &mut page[..];
        p[offsets::MAGIC..offsets::MAGIC + 8].copy_from_slice(&MAGIC);
        put_u32(p, offsets::HEADER_LEN, offsets::IMMUTABLE_END as u32);
        put_u64(p, offsets::DATA_OFFSET, self.data_offset);
        put_u64(p, offsets::DATA_LEN, self.data_len);
        put_u32(p, offsets::KIND, self.kind.code());
        put_u32(p, offsets::VERSION, self.format_version());
        if self.format_version() == FORMAT_VERSION_FEATURES {
            put_u32(p, offsets::FEATURES_INCOMPAT, self.features.incompat);
            put_u32(p, offsets::FEATURES_RO_COMPAT, self.features.ro_compat);
            put_u32(p, offsets::FEATURES_COMPAT, self.features.compat);
            put_u32(p, offsets::EXT_LEN, self.extension.len);
            put_u32(p, offsets::FRAME_INFO_STRIDE, self.frame_info_stride);
            if self.extension.len > 0 {
                put_u64(p, offsets::EXT_OFFSET, self.extension_offset());
                put_u32(p, offsets::EXT_CRC, self.extension.crc);
            }
        }
        if let Kind::Stream {
            slots,
            max_subscribers,
        } = self.kind
        {
            put_u32(p, offsets::STREAM_SLOTS, slots);
            put_u32(p, offsets::STREAM_MAX_SUBSCRIBERS, max_subscribers);
            if self.has_lanes() {
                p[offsets::STREAM_LANES..offsets::STREAM_LANES + 2]
                    .copy_from_slice(&(self.lanes as u16).to_le_bytes());
                p[offsets::STREAM_LANE..offsets::STREAM_LANE + 2]
                    .copy_from_slice(&(self.lane as u16).to_le_bytes());
            }
        }
        put_u32(p, offsets::ORDER, self.order.code());
        put_u32(p, offsets::NDIM, self.shape.len() as u32);
        put_u32(p, offsets::NAME_LEN, self.name.len() as u32);
        let descr = self.dtype.header_descr();
        p[offsets::DTYPE..offsets::DTYPE + descr.len()].copy_from_slice(descr.as_bytes());
        put_u64(p, offsets::CREATED_NS, self.created_ns);
        put_u32(p, offsets::OWNER_UID, self.owner_uid);
        put_u32(p, offsets::OWNER_GID, self.owner_gid);
        put_u32(p, offsets::MODE, self.mode);
        for (i, &d) in self.shape.iter().enumerate() {
            put_u64(p, offsets::SHAPE + 8 * i, d);
        }
        p[offsets::NAME..offsets::NAME + self.name.len()].copy_from_slice(self.name.as_bytes());
        let crc = crc32fast::hash(&p[..offsets::IMMUTABLE_END]);
        put_u32(p, offsets::CRC, crc);
        page
    }

    /// Decodes and validates a header page.
    ///
    /// Checks, in order: length, magic, version, header length, CRC, then every field. Each
    /// failure is its own [`FormatError`] variant. It does not check the file size; see
    /// [`Header::check_file_len`].
    ///
    /// # Errors
    /// [`FormatError::Truncated`] when `page` is shorter than [`HEADER_SIZE`] (need more bytes),
    /// any other variant for bad bytes.
    pub fn decode(page: &[u8]) -> Result<Header, FormatError> {
        if page.len() < HEADER_SIZE {
            return Err(FormatError::Truncated {
                len: page.len() as u64,
            });
        }
        let magic: [u8; 8] = page[..8].try_into().expect("8 bytes");
        if magic != MAGIC {
            return Err(FormatError::BadMagic { found: magic });
        }
        let version = u32_at(page, offsets::VERSION);
        if version != FORMAT_VERSION && version != FORMAT_VERSION_FEATURES {
            return Err(FormatError::UnsupportedVersion { found: version });
        }
        let header_len = u32_at(page, offsets::HEADER_LEN);
        if header_len as usize != offsets::IMMUTABLE_END {
            return Err(FormatError::BadHeaderLen {
                found: header_len,
                expected: offsets::IMMUTABLE_END as u32,
            });
        }
        let stored = u32_at(page, offsets::CRC);
        let computed = crc32fast::hash(&page[..offsets::IMMUTABLE_END]);
        if stored != computed {
            return Err(FormatError::BadChecksum { stored, computed });
        }
        // The feature bits (covered by the checksum). Unknown ones are refused before
        // anything they may change is checked (the kind, the slot limits, the data offset):
        // a newer layout must be reported as a file of a newer mmshare, which the daemon
        // leaves alone, not as a damaged one, which it renames aside.
        let incompat = if version == FORMAT_VERSION_FEATURES {
            u32_at(page, offsets::FEATURES_INCOMPAT)
        } else {
            0
        };
        let unknown = incompat & !KNOWN_INCOMPAT;
        if unknown != 0 {
            return Err(FormatError::UnknownFeatures {
                unknown,
                known: KNOWN_INCOMPAT,
            });
        }
        let kind = match u32_at(page, offsets::KIND) {
            1 => Kind::Array,
            2 => Kind::Stream {
                slots: u32_at(page, offsets::STREAM_SLOTS),
                max_subscribers: u32_at(page, offsets::STREAM_MAX_SUBSCRIBERS),
            },
            other => return Err(FormatError::BadKind(other)),
        };
        if let Kind::Stream {
            slots,
            max_subscribers,
        } = kind
        {
            if !(MIN_SLOTS..=MAX_SLOTS).contains(&slots) {
                return Err(FormatError::BadSlots(slots));
            }
            if !(1..=MAX_SUBSCRIBERS).contains(&max_subscribers) {
                return Err(FormatError::BadMaxSubscribers(max_subscribers));
            }
        }
        let frame_info_stride = if version == FORMAT_VERSION_FEATURES {
            u32_at(page, offsets::FRAME_INFO_STRIDE)
        } else {
            0
        };
        let data_offset = u64_at(page, offsets::DATA_OFFSET);
        let stream_only = incompat & KNOWN_INCOMPAT;
        if kind == Kind::Array && stream_only != 0 {
            return Err(FormatError::StreamFeaturesOnArray(stream_only));
        }
        let expected = match kind {
            Kind::Stream { slots, .. } if frame_info_stride != 0 => {
                stream_data_offset(slots, frame_info_stride, incompat)
            }
            _ => data_offset_of(kind, incompat),
        };
        if data_offset != expected {
            return Err(FormatError::MisalignedDataOffset {
                offset: data_offset,
                expected,
            });
        }
        let order_code = u32_at(page, offsets::ORDER);
        let order = Order::from_code(order_code).ok_or(FormatError::BadOrder(order_code))?;
        let dtype = decode_dtype(&page[offsets::DTYPE..offsets::DTYPE + 16])?;
        let ndim = u32_at(page, offsets::NDIM);
        if ndim as usize > MAX_NDIM {
            return Err(FormatError::BadNdim(ndim));
        }
        let shape: Vec<u64> = (0..ndim as usize)
            .map(|i| u64_at(page, offsets::SHAPE + 8 * i))
            .collect();
        let name_len = u32_at(page, offsets::NAME_LEN);
        if name_len as usize > offsets::IMMUTABLE_END - offsets::NAME {
            return Err(FormatError::BadNameBytes(name_len));
        }
        let name_bytes = &page[offsets::NAME..offsets::NAME + name_len as usize];
        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| FormatError::BadNameBytes(name_len))?
            .to_owned();
        validate_name(&name)?;
        let mode = u32_at(page, offsets::MODE);
        if mode & !0o777 != 0 {
            return Err(FormatError::BadMode(mode));
        }
        // Everything the fields do not use must be zero, so a v1 reader never silently ignores
        // data a later writer put there.
        let reserved_from = match kind {
            Kind::Array => offsets::STREAM_SLOTS,
            Kind::Stream { .. } => offsets::RESERVED,
        };
        // Version 2: the feature words and the extension locator are fields, not reserved.
        let (features, extension, feature_ranges) = if version == FORMAT_VERSION_FEATURES {
            let features = Features {
                incompat: u32_at(page, offsets::FEATURES_INCOMPAT),
                ro_compat: u32_at(page, offsets::FEATURES_RO_COMPAT),
                compat: u32_at(page, offsets::FEATURES_COMPAT),
            };
            let extension = ExtensionArea {
                len: u32_at(page, offsets::EXT_LEN),
                crc: u32_at(page, offsets::EXT_CRC),
            };
            if extension.len > MAX_EXTENSION_LEN {
                return Err(FormatError::BadExtensions(format!(
                    "the extension area is {} bytes; at most {MAX_EXTENSION_LEN} are allowed",
                    extension.len
                )));
            }
            // Lanes: the stream's reserved word holds the lane count and index.
            let reserved_from =
                if features.incompat & FEATURE_LANES != 0 && matches!(kind, Kind::Stream { .. }) {
                    offsets::FEATURES_INCOMPAT
                } else {
                    reserved_from
                };
            (
                features,
                extension,
                [
                    (reserved_from, offsets::FEATURES_INCOMPAT),
                    (offsets::FRAME_INFO_STRIDE + 4, offsets::SHAPE),
                ],
            )
        } else {
            (
                Features::default(),
                ExtensionArea::default(),
                [(reserved_from, offsets::SHAPE), (0, 0)],
            )
        };
        let unused_ranges = [
            feature_ranges[0],
            feature_ranges[1],
            (offsets::SHAPE + 8 * ndim as usize, offsets::NAME),
            (offsets::NAME + name_len as usize, offsets::IMMUTABLE_END),
            (offsets::CRC + 4, offsets::SEQUENCE),
        ];
        for (start, end) in unused_ranges {
            if let Some(i) = page[start..end].iter().position(|&b| b != 0) {
                return Err(FormatError::ReservedNotZero { offset: start + i });
            }
        }
        let declared = u64_at(page, offsets::DATA_LEN);
        let expected = data_len(&dtype, &shape)?;
        if declared != expected {
            return Err(FormatError::LengthMismatch {
                declared,
                expected,
                dtype,
                shape,
            });
        }
        let mut header = Header {
            name,
            dtype,
            shape,
            order,
            kind,
            data_offset,
            data_len: declared,
            created_ns: u64_at(page, offsets::CREATED_NS),
            owner_uid: u32_at(page, offsets::OWNER_UID),
            owner_gid: u32_at(page, offsets::OWNER_GID),
            mode,
            features,
            extension,
            frame_info_stride,
            frame_header: None,
            lanes: 1,
            lane: 0,
            stripe_bytes: 0,
        };
        if header.has_lanes() && matches!(kind, Kind::Stream { .. }) {
            let u16_at = |off: usize| u32::from(u16::from_le_bytes([page[off], page[off + 1]]));
            header.lanes = u16_at(offsets::STREAM_LANES);
            header.lane = u16_at(offsets::STREAM_LANE);
        }
        header.check_frame_info()?;
        header.check_stream_geometry()?;
        if version == FORMAT_VERSION_FEATURES {
            let at = u64_at(page, offsets::EXT_OFFSET);
            let expected = if extension.len == 0 {
                0
            } else {
                header.extension_offset()
            };
            if at != expected || (extension.len == 0 && extension.crc != 0) {
                return Err(FormatError::BadExtensions(format!(
                    "the extension area is at {at} with {} bytes; it must start at {expected}",
                    extension.len
                )));
            }
        }
        Ok(header)
    }

    /// Checks that a file of `size` bytes holds all the data this header declares.
    ///
    /// # Errors
    /// [`FormatError::FileTooShort`] naming both sizes.
    pub fn check_file_len(&self, size: u64) -> Result<(), FormatError> {
        let needed = self.file_len();
        if size < needed {
            return Err(FormatError::FileTooShort { size, needed });
        }
        Ok(())
    }
}

/// What `DType::parse` refuses cannot be written either (the file would not open): a void
/// of 0 bytes or more than [`crate::MAX_ITEMSIZE`].
fn check_writable_dtype(dtype: &DType) -> Result<(), FormatError> {
    match *dtype {
        DType::Void(n) if n == 0 || n as usize > crate::record::MAX_ITEMSIZE => Err(
            FormatError::BadDType(DTypeError::Unsupported(format!("|V{n}"))),
        ),
        _ => Ok(()),
    }
}

/// Bytes per slot-table entry of a stream with incompatible features `incompat`.
fn slot_entry_len(incompat: u32) -> usize {
    if incompat & FEATURE_SLOT_LINES != 0 {
        64
    } else {
        16
    }
}

/// Where the frames of a stream with a frame-info table of `stride` bytes per slot start:
/// after the slot table (rounded to 64 bytes) and the table, on a page boundary.
fn stream_data_offset(slots: u32, stride: u32, incompat: u32) -> u64 {
    let page = HEADER_SIZE as u64;
    let entries = slot_entry_len(incompat) as u64 * u64::from(slots);
    let table = entries.next_multiple_of(64) + u64::from(slots) * u64::from(stride);
    page + table.next_multiple_of(page)
}

/// Where the data starts: right after the header page for arrays; for streams after the
/// header page and the slot table ([`slot_entry_len`] bytes per slot), on a page boundary.
fn data_offset_of(kind: Kind, incompat: u32) -> u64 {
    let page = HEADER_SIZE as u64;
    match kind {
        Kind::Array => page,
        Kind::Stream { slots, .. } => {
            page + (slot_entry_len(incompat) as u64 * u64::from(slots)).next_multiple_of(page)
        }
    }
}

/// Encodes extension records into an area; returns the area and its CRC-32.
///
/// # Panics
/// If a value is longer than 65535 bytes or a tag is 0.
pub fn encode_extensions(records: &[Extension]) -> (Vec<u8>, u32) {
    let mut area = Vec::new();
    for r in records {
        assert!(r.tag != 0, "tag 0 is not a record");
        let len = u16::try_from(r.value.len()).expect("an extension value fits in 65535 bytes");
        area.extend_from_slice(&r.tag.to_le_bytes());
        area.extend_from_slice(&len.to_le_bytes());
        area.extend_from_slice(&r.value);
    }
    let crc = crc32fast::hash(&area);
    (area, crc)
}

/// Decodes an extension area (records of `tag: u16, len: u16, value: [u8; len]`, little
/// endian, back to back, filling it exactly) whose CRC-32 must be `crc`.
///
/// # Errors
/// [`FormatError::BadExtensions`], [`FormatError::UnknownExtension`].
pub fn decode_extensions(area: &[u8], crc: u32) -> Result<Vec<Extension>, FormatError> {
    let computed = crc32fast::hash(area);
    if computed != crc {
        return Err(FormatError::BadExtensions(format!(
            "checksum mismatch: stored {crc:#010x}, computed {computed:#010x}"
        )));
    }
    let mut records = Vec::new();
    let mut at = 0;
    while at < area.len() {
        let Some(head) = area.get(at..at + 4) else {
            return Err(FormatError::BadExtensions(format!(
                "a record header at {at} is cut off by the end of the area ({} bytes)",
                area.len()
            )));
        };
        let tag = u16::from_le_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
        if tag == 0 {
            return Err(FormatError::BadExtensions(format!(
                "a record at {at} has tag 0"
            )));
        }
        let Some(value) = area.get(at + 4..at + 4 + len) else {
            return Err(FormatError::BadExtensions(format!(
                "record {tag:#06x} at {at} says {len} bytes, past the end of the area ({} bytes)",
                area.len()
            )));
        };
        if tag & EXTENSION_CRITICAL != 0 && !KNOWN_EXTENSION_TAGS.contains(&tag) {
            return Err(FormatError::UnknownExtension { tag });
        }
        // Two critical records of one tag would let readers disagree on which one counts.
        if tag & EXTENSION_CRITICAL != 0 && records.iter().any(|r: &Extension| r.tag == tag) {
            return Err(FormatError::BadExtensions(format!(
                "record {tag:#06x} appears twice"
            )));
        }
        records.push(Extension {
            tag,
            value: value.to_vec(),
        });
        at += 4 + len;
    }
    Ok(records)
}

fn decode_dtype(field: &[u8]) -> Result<DType, FormatError> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let (text, pad) = field.split_at(end);
    if !text.is_ascii() || pad.iter().any(|&b| b != 0) {
        return Err(FormatError::BadDTypeBytes(field.to_vec()));
    }
    let text = std::str::from_utf8(text).map_err(|_| FormatError::BadDTypeBytes(field.to_vec()))?;
    let dtype = DType::parse(text)?;
    // A record's descr is an extension record; the field holds `|V` and the itemsize.
    if dtype.as_record().is_some() {
        return Err(FormatError::BadDType(DTypeError::Unknown(text.to_owned())));
    }
    // Only canonical descrs are written; accepting aliases here would make two spellings of one
    // file valid, and other-language readers would have to know every alias.
    if dtype.descr() != text {
        return Err(FormatError::BadDType(DTypeError::Unknown(text.to_owned())));
    }
    Ok(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stripes are whole slabs of the outermost axis in memory, 64-byte multiples, at most
    /// the number asked for (and never more than 32); too small an array is not striped.
    #[test]
    fn stripe_sizes_are_whole_slabs_of_whole_lines() {
        let c = |dtype: DType, shape: &[u64], wanted| {
            choose_stripe_bytes(&dtype, shape, Order::C, wanted)
        };
        // 1000 rows of 1024 bytes into 4: 250 rows each.
        assert_eq!(c(DType::F64, &[1000, 128], 4), 250 * 1024);
        // Rows of 24 bytes: a multiple of 8 rows per stripe (8 * 24 = 192 = 3 lines).
        assert_eq!(c(DType::U8, &[100, 24], 4), 32 * 24);
        assert_eq!(stripe_count(2400, 32 * 24), 4);
        // Rows of 3 bytes: a multiple of 64 rows.
        assert_eq!(c(DType::U8, &[1000, 3], 8), 128 * 3);
        // Not divisible: one row, no rows, a 0-d array, a zero-size dtype, one stripe wanted.
        assert_eq!(c(DType::F64, &[1, 1 << 20], 8), 0);
        assert_eq!(c(DType::F64, &[0, 8], 8), 0);
        assert_eq!(c(DType::F64, &[], 8), 0);
        assert_eq!(c(DType::Void(0), &[100], 8), 0);
        assert_eq!(c(DType::F64, &[1000, 128], 1), 0);
        // Too small for two stripes of a line each.
        assert_eq!(c(DType::U8, &[64], 4), 0);
        // More than 32 wanted: 32.
        assert_eq!(stripe_count(1 << 20, c(DType::U8, &[1 << 20], 1000)), 32);
        // F order: slabs along the last axis.
        assert_eq!(
            choose_stripe_bytes(&DType::F64, &[128, 1000], Order::F, 4),
            250 * 1024
        );
        for rows in 2..300u64 {
            for wanted in 2..=33 {
                let b = c(DType::U8, &[rows, 24], wanted);
                if b != 0 {
                    assert_eq!(b % 64, 0);
                    assert_eq!(b % 24, 0, "whole rows");
                    let n = stripe_count(rows * 24, b);
                    assert!(
                        (2..=u64::from(wanted.min(32))).contains(&n),
                        "{rows} {wanted}: {n}"
                    );
                }
            }
        }
    }

    /// A striped array's header carries its stripe size in record 0x8005 through encode,
    /// decode and the extension area; hostile sizes are refused with the value.
    #[test]
    fn the_stripe_record_round_trips_and_bad_ones_are_refused() {
        let mut spec = ArraySpec::new("s", DType::F32, vec![4096, 16]);
        spec.stripes = 8;
        let header = Header::new(&spec).unwrap();
        assert_eq!(header.stripe_bytes, 512 * 64);
        assert_eq!(
            header.features,
            Features::default(),
            "no feature bit: the record is critical"
        );
        let page = header.encode();
        let mut decoded = Header::decode(&page[..]).unwrap();
        let (area, crc) = encode_extensions(&spec.extensions());
        decoded
            .apply_extensions(&decode_extensions(&area, crc).unwrap())
            .unwrap();
        assert_eq!(decoded, header);

        let record = |value: Vec<u8>| {
            vec![Extension {
                tag: EXTENSION_STRIPES,
                value,
            }]
        };
        let len = header.data_len;
        for (value, why) in [
            (0u64.to_le_bytes().to_vec(), "is 0, which is not"),
            (100u64.to_le_bytes().to_vec(), "is 100, which is not"),
            (64u64.to_le_bytes().to_vec(), "makes 4096 stripes"),
            (len.to_le_bytes().to_vec(), "makes 1 stripes"),
            (vec![0; 4], "is 4 bytes, not 8"),
        ] {
            let e = stripes_from_extensions(&record(value), Kind::Array, len).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
        let stream = Kind::Stream {
            slots: 8,
            max_subscribers: 1,
        };
        let e = stripes_from_extensions(&record(4096u64.to_le_bytes().to_vec()), stream, len)
            .unwrap_err();
        assert!(e.to_string().contains("only arrays"), "{e}");
        spec.stripes = 33;
        assert_eq!(Header::new(&spec).unwrap_err(), FormatError::BadStripes(33));
    }

    fn sample() -> Header {
        let mut spec = ArraySpec::new("frames", DType::F32, vec![2, 3, 4]);
        spec.owner_uid = 1000;
        spec.owner_gid = 100;
        spec.mode = 0o644;
        Header::new(&spec).unwrap()
    }

    fn reseal(page: &mut [u8]) {
        let crc = crc32fast::hash(&page[..offsets::IMMUTABLE_END]);
        put_u32(page, offsets::CRC, crc);
    }

    /// The format-extension policy's vectors (docs/format_vectors.json): each header page and
    /// extension area, and what a reader must make of it. `MMSHARE_BLESS=1` rewrites the file
    /// from the code; otherwise the committed file must match what the code makes.
    fn policy_vectors() -> Vec<(String, Header, Vec<u8>, String)> {
        let mut base = sample();
        base.created_ns = 1_764_892_800_000_000_000;
        let with = |f: Features, records: &[Extension]| {
            let mut h = base.clone();
            h.features = f;
            let (area, crc) = encode_extensions(records);
            h.extension = ExtensionArea {
                len: area.len() as u32,
                crc,
            };
            (h, area)
        };
        let note = |tag: u16, text: &str| Extension {
            tag,
            value: text.as_bytes().to_vec(),
        };
        let mut v = Vec::new();
        let (h, a) = with(Features::default(), &[]);
        v.push(("no features: version 1".into(), h, a, "ok".into()));
        let (h, a) = with(
            Features {
                compat: 0x1,
                ..Features::default()
            },
            &[],
        );
        v.push((
            "an unknown compat bit: read and written".into(),
            h,
            a,
            "ok".into(),
        ));
        let (h, a) = with(
            Features {
                ro_compat: 0x2,
                ..Features::default()
            },
            &[],
        );
        v.push((
            "an unknown ro_compat bit: read, never written".into(),
            h,
            a,
            "read-only".into(),
        ));
        let (h, a) = with(
            Features {
                incompat: 0x10,
                ..Features::default()
            },
            &[],
        );
        v.push((
            "an unknown incompat bit: refused".into(),
            h,
            a,
            "UnknownFeatures".into(),
        ));
        let (h, a) = with(
            Features::default(),
            &[note(0x0001, "a note anyone may skip")],
        );
        v.push((
            "an extension area with a non-critical record: skipped".into(),
            h,
            a,
            "ok".into(),
        ));
        let (h, a) = with(Features::default(), &[note(0x8001, "[('x', '<f4')]")]);
        v.push((
            "an unknown critical record: refused".into(),
            h,
            a,
            "UnknownExtension".into(),
        ));
        v
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// What this code makes of a vector: "ok", "read-only", or the error's variant name.
    fn verdict(page: &[u8], area: &[u8]) -> String {
        match Header::decode(page) {
            Err(e) => format!("{e:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap()
                .to_owned(),
            Ok(h) => match decode_extensions(area, h.extension.crc) {
                Err(e) => format!("{e:?}")
                    .split([' ', '{', '('])
                    .next()
                    .unwrap()
                    .to_owned(),
                Ok(_) if h.features.unknown_ro_compat() != 0 => "read-only".into(),
                Ok(_) => "ok".into(),
            },
        }
    }

    #[test]
    fn the_format_policy_vectors_hold_and_match_the_committed_file() {
        let vectors: Vec<serde_json::Value> = policy_vectors()
            .into_iter()
            .map(|(name, h, area, expect)| {
                let page = h.encode();
                // The whole page is zero past the CRC; the vector keeps what is not.
                let kept = &page[..offsets::CRC + 4];
                assert_eq!(verdict(&page[..], &area), expect, "{name}");
                serde_json::json!({
                    "name": name,
                    "page_prefix_hex": hex(kept),
                    "extension_hex": hex(&area),
                    "extension_offset": h.extension_offset(),
                    "expect": expect,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&vectors).unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/format_vectors.json");
        if std::env::var_os("MMSHARE_BLESS").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == text,
            "docs/format_vectors.json differs from the code: run MMSHARE_BLESS=1 cargo test -p mmshare --lib format"
        );
    }

    /// A header that needs nothing new is written as version 1, byte for byte as before, so
    /// readers of version 1 read it; feature words in a version-1 file are reserved bytes.
    #[test]
    fn a_header_without_features_is_version_1_and_v1_files_have_no_feature_words() {
        let page = sample().encode();
        assert_eq!(u32_at(&page[..], offsets::VERSION), FORMAT_VERSION);
        let mut bad = page.clone();
        put_u32(&mut bad[..], offsets::FEATURES_COMPAT, 1);
        reseal(&mut bad[..]);
        assert_eq!(
            Header::decode(&bad[..]),
            Err(FormatError::ReservedNotZero {
                offset: offsets::FEATURES_COMPAT
            })
        );
    }

    /// A stream of a newer layout (an unknown incompatible bit, and its data elsewhere) is
    /// reported as a newer mmshare's file, not as a damaged one (the daemon renames those
    /// aside); an array with a stream's feature bit is a damaged header.
    #[test]
    fn an_unknown_layout_is_a_newer_file_and_stream_bits_on_an_array_are_refused() {
        let stream = Header::new_stream(&StreamSpec::new("s", DType::U8, vec![64])).unwrap();
        let mut newer = *stream.encode();
        let bits = u32_at(&newer[..], offsets::FEATURES_INCOMPAT) | 0x10;
        put_u32(&mut newer[..], offsets::FEATURES_INCOMPAT, bits);
        put_u64(
            &mut newer[..],
            offsets::DATA_OFFSET,
            stream.data_offset + 4096,
        );
        reseal(&mut newer[..]);
        let newer_file = Err(FormatError::UnknownFeatures {
            unknown: 0x10,
            known: KNOWN_INCOMPAT,
        });
        assert_eq!(Header::decode(&newer[..]), newer_file);
        // The same for more slots than this build allows, or a kind it does not know.
        let mut more_slots = newer;
        put_u32(&mut more_slots[..], offsets::STREAM_SLOTS, MAX_SLOTS + 1);
        reseal(&mut more_slots[..]);
        assert_eq!(Header::decode(&more_slots[..]), newer_file);
        let mut new_kind = newer;
        put_u32(&mut new_kind[..], offsets::KIND, 3);
        reseal(&mut new_kind[..]);
        assert_eq!(Header::decode(&new_kind[..]), newer_file);
        for bit in [
            FEATURE_SLOT_LINES,
            FEATURE_FRAME_INFO,
            FEATURE_LANES,
            FEATURE_VARIABLE_FRAMES,
        ] {
            let mut array = sample();
            array.features.incompat = bit;
            let e = Header::decode(&array.encode()[..]).unwrap_err();
            assert_eq!(e, FormatError::StreamFeaturesOnArray(bit), "bit {bit:#x}");
            assert!(e.to_string().contains("array"), "{e}");
        }
    }

    /// Features and an extension area make version 2, which round-trips; an unknown
    /// incompatible bit is refused with a message that says what to do; a misplaced or
    /// damaged extension area is its own error.
    #[test]
    fn version_2_round_trips_and_refuses_what_it_does_not_know() {
        let mut h = sample();
        h.features.compat = 0x10;
        let (area, crc) = encode_extensions(&[Extension {
            tag: 7,
            value: b"hello".to_vec(),
        }]);
        h.extension = ExtensionArea {
            len: area.len() as u32,
            crc,
        };
        let page = h.encode();
        assert_eq!(u32_at(&page[..], offsets::VERSION), FORMAT_VERSION_FEATURES);
        assert_eq!(Header::decode(&page[..]), Ok(h.clone()));
        assert_eq!(h.file_len(), h.extension_offset() + 16);
        let records = decode_extensions(&area, crc).unwrap();
        assert_eq!(records[0].value, b"hello");
        let mut unknown = h.clone();
        unknown.features.incompat = 0x8000_0000;
        let e = Header::decode(&unknown.encode()[..]).unwrap_err();
        assert!(
            e.to_string().contains("0x80000000") && e.to_string().contains("newer"),
            "{e}"
        );
        let mut moved = page.clone();
        put_u64(&mut moved[..], offsets::EXT_OFFSET, 4096);
        reseal(&mut moved[..]);
        assert!(matches!(
            Header::decode(&moved[..]),
            Err(FormatError::BadExtensions(_))
        ));
        assert!(matches!(
            decode_extensions(&area, crc ^ 1),
            Err(FormatError::BadExtensions(m)) if m.contains("checksum")
        ));
        let mut cut = area.clone();
        cut.truncate(6);
        let cut_crc = crc32fast::hash(&cut);
        assert!(matches!(
            decode_extensions(&cut, cut_crc),
            Err(FormatError::BadExtensions(m)) if m.contains("past the end")
        ));
        assert_eq!(
            decode_extensions(&[0x01, 0x80, 0, 0], crc32fast::hash(&[0x01, 0x80, 0, 0])),
            Err(FormatError::UnknownExtension { tag: 0x8001 })
        );
        // A critical record twice: readers could disagree on which one counts.
        let twice = [0x02, 0x80, 4, 0, 1, 0, 0, 0, 0x02, 0x80, 4, 0, 2, 0, 0, 0];
        assert!(matches!(
            decode_extensions(&twice, crc32fast::hash(&twice)),
            Err(FormatError::BadExtensions(m)) if m.contains("appears twice")
        ));
    }

    /// An extension area larger than 1 MiB is refused before anything is read or allocated.
    #[test]
    fn a_huge_extension_area_is_refused_at_decode() {
        let mut h = sample();
        h.extension = ExtensionArea {
            len: MAX_EXTENSION_LEN + 1,
            crc: 0,
        };
        let err = Header::decode(&h.encode()[..]).unwrap_err();
        assert!(err.to_string().contains("at most 1048576"), "{err}");
    }

    #[test]
    fn header_round_trips() {
        let h = sample();
        assert_eq!(h.data_len, 96);
        assert_eq!(Header::decode(&h.encode()[..]), Ok(h));
    }

    #[test]
    fn each_corruption_has_its_own_error() {
        let good = sample().encode();
        let check = |edit: &dyn Fn(&mut [u8]), want: &dyn Fn(&FormatError) -> bool| {
            let mut p = good.clone();
            edit(&mut p[..]);
            let err = Header::decode(&p[..]).unwrap_err();
            assert!(want(&err), "unexpected error {err:?}");
        };
        check(&|p| p[0] = b'X', &|e| {
            matches!(e, FormatError::BadMagic { .. })
        });
        check(
            &|p| {
                put_u32(p, offsets::VERSION, 3);
                reseal(p);
            },
            &|e| matches!(e, FormatError::UnsupportedVersion { found: 3 }),
        );
        check(&|p| p[offsets::NAME] ^= 1, &|e| {
            matches!(e, FormatError::BadChecksum { .. })
        });
        check(
            &|p| {
                put_u64(p, offsets::DATA_OFFSET, 4000);
                reseal(p);
            },
            &|e| {
                matches!(
                    e,
                    FormatError::MisalignedDataOffset {
                        offset: 4000,
                        expected: 4096
                    }
                )
            },
        );
        check(
            &|p| {
                put_u64(p, offsets::DATA_LEN, 95);
                reseal(p);
            },
            &|e| {
                matches!(
                    e,
                    FormatError::LengthMismatch {
                        declared: 95,
                        expected: 96,
                        ..
                    }
                )
            },
        );
        check(
            &|p| {
                p[offsets::DTYPE..offsets::DTYPE + 3].copy_from_slice(b">f4");
                reseal(p);
            },
            &|e| matches!(e, FormatError::BadDType(DTypeError::BigEndian(_))),
        );
        check(
            &|p| {
                put_u32(p, offsets::NDIM, 33);
                reseal(p);
            },
            &|e| matches!(e, FormatError::BadNdim(33)),
        );
        // Bytes after the dtype's terminating NUL must be zero, like every unused byte.
        check(
            &|p| {
                p[offsets::DTYPE + 6] = b'x';
                reseal(p);
            },
            &|e| matches!(e, FormatError::BadDTypeBytes(_)),
        );
        // The name's length must fit the name field: one byte more is refused as such (before
        // any slicing), the whole field is read and then refused as a name.
        let room = (offsets::IMMUTABLE_END - offsets::NAME) as u32;
        for too_long in [room + 1, u32::MAX] {
            check(
                &|p| {
                    put_u32(p, offsets::NAME_LEN, too_long);
                    reseal(p);
                },
                &|e| matches!(e, FormatError::BadNameBytes(n) if *n == too_long),
            );
        }
        check(
            &|p| {
                put_u32(p, offsets::NAME_LEN, room);
                reseal(p);
            },
            &|e| matches!(e, FormatError::BadName(_)),
        );
        check(
            &|p| {
                p[offsets::NAME] = b'.';
                reseal(p);
            },
            &|e| matches!(e, FormatError::BadName(_)),
        );
        check(
            &|p| {
                p[offsets::RESERVED + 3] = 1;
                reseal(p);
            },
            &|e| matches!(e, FormatError::ReservedNotZero { offset } if *offset == offsets::RESERVED + 3),
        );
        assert!(matches!(
            Header::decode(&good[..100]),
            Err(FormatError::Truncated { len: 100 })
        ));
        let h = sample();
        assert_eq!(
            h.check_file_len(4096 + 95),
            Err(FormatError::FileTooShort {
                size: 4191,
                needed: 4192
            })
        );
    }
}
