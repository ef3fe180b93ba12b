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
use crate::shape::{MAX_NDIM, Order, ShapeError, data_len};

/// Size of the header page, and the data offset of every v1 file.
pub const HEADER_SIZE: usize = 4096;
/// First bytes of every array file.
pub const MAGIC: [u8; 8] = *b"MMSHARE\0";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

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
    /// 36 reserved bytes (zero).
    pub const RESERVED: usize = 0x05C;
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
    /// Reserved for per-stripe sequences: 32 `u64`, one per 64-byte line, from here to 0x1000.
    pub const STRIPES: usize = 0x800;

    /// Streams: `u64` frames published so far, which is also the number the next frame gets.
    /// Only the publisher writes it (the array's sequence line; streams have no sequence).
    pub const PUBLISHED: usize = 0x400;
    /// Streams: `u64` identity of the attached publisher (pid and start time as for
    /// [`WRITER`]), 0 when none.
    pub const PUBLISHER: usize = WRITER;
    /// Streams: the slot table starts on the page after the header: for each slot, its tag
    /// (`u64`, 0 = no frame or on loan, else frame number + 1, with bit 63 set once the frame
    /// is taken back for reuse) then its publish time (`u64`, ns since the Unix epoch), 16
    /// bytes per slot. The frames follow on the next page boundary.
    pub const SLOT_TABLE: usize = 0x1000;
}

/// The TORN bit of the flags word: a writer died mid-write; the data may be half-written.
pub const FLAG_TORN: u32 = 1;

/// Fewest slots a stream may have: one on loan to the publisher, one for the newest frame,
/// and at least one a subscriber can hold.
pub const MIN_SLOTS: u32 = 3;
/// Most slots a stream may have (its slot table is then 64 KiB).
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
        }
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
}

impl StreamSpec {
    /// A stream of 8 slots and 16 subscriber records, C order, owned by the calling process's
    /// uid/gid with mode 0600.
    pub fn new(name: impl Into<String>, dtype: DType, frame_shape: impl Into<Vec<u64>>) -> Self {
        StreamSpec {
            frame: ArraySpec::new(name, dtype, frame_shape),
            slots: 8,
            max_subscribers: 16,
        }
    }
}

/// Why a header (or the file around it) is not a valid v1 array file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
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
    /// A stream's slot count is outside [`MIN_SLOTS`]`..=`[`MAX_SLOTS`].
    #[error("a stream has {MIN_SLOTS} to {MAX_SLOTS} slots, not {0}")]
    BadSlots(u32),
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
    /// [`FormatError::BadName`], [`FormatError::BadShape`] or [`FormatError::BadMode`].
    pub fn new(spec: &ArraySpec) -> Result<Header, FormatError> {
        Self::build(spec, Kind::Array)
    }

    /// Builds the header for a new stream, validating what [`Header::new`] does plus the slot
    /// count, the subscriber limit and the ring's size.
    ///
    /// # Errors
    /// As [`Header::new`], plus [`FormatError::BadSlots`], [`FormatError::BadMaxSubscribers`]
    /// and [`FormatError::StreamTooLarge`].
    pub fn new_stream(spec: &StreamSpec) -> Result<Header, FormatError> {
        let kind = Kind::Stream {
            slots: spec.slots,
            max_subscribers: spec.max_subscribers,
        };
        let header = Self::build(&spec.frame, kind)?;
        header.check_stream_geometry()?;
        Ok(header)
    }

    fn build(spec: &ArraySpec, kind: Kind) -> Result<Header, FormatError> {
        validate_name(&spec.name)?;
        let data_len = data_len(spec.dtype, &spec.shape)?;
        if spec.mode & !0o777 != 0 {
            return Err(FormatError::BadMode(spec.mode));
        }
        Ok(Header {
            name: spec.name.clone(),
            dtype: spec.dtype,
            shape: spec.shape.clone(),
            order: spec.order,
            kind,
            data_offset: data_offset_of(kind),
            data_len,
            created_ns: now_ns(),
            owner_uid: spec.owner_uid,
            owner_gid: spec.owner_gid,
            mode: spec.mode,
        })
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
        match self.kind {
            Kind::Array => self.data_offset + padded_len(self.data_len),
            Kind::Stream { slots, .. } => self
                .data_offset
                .saturating_add(self.slot_stride().saturating_mul(u64::from(slots))),
        }
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
        put_u32(p, offsets::VERSION, FORMAT_VERSION);
        put_u32(p, offsets::HEADER_LEN, offsets::IMMUTABLE_END as u32);
        put_u64(p, offsets::DATA_OFFSET, self.data_offset);
        put_u64(p, offsets::DATA_LEN, self.data_len);
        put_u32(p, offsets::KIND, self.kind.code());
        if let Kind::Stream {
            slots,
            max_subscribers,
        } = self.kind
        {
            put_u32(p, offsets::STREAM_SLOTS, slots);
            put_u32(p, offsets::STREAM_MAX_SUBSCRIBERS, max_subscribers);
        }
        put_u32(p, offsets::ORDER, self.order.code());
        put_u32(p, offsets::NDIM, self.shape.len() as u32);
        put_u32(p, offsets::NAME_LEN, self.name.len() as u32);
        let descr = self.dtype.descr().as_bytes();
        p[offsets::DTYPE..offsets::DTYPE + descr.len()].copy_from_slice(descr);
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
        if version != FORMAT_VERSION {
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
        let data_offset = u64_at(page, offsets::DATA_OFFSET);
        let expected = data_offset_of(kind);
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
        let unused_ranges = [
            (reserved_from, offsets::SHAPE),
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
        let expected = data_len(dtype, &shape)?;
        if declared != expected {
            return Err(FormatError::LengthMismatch {
                declared,
                expected,
                dtype,
                shape,
            });
        }
        let header = Header {
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
        };
        header.check_stream_geometry()?;
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

/// Where the data starts: right after the header page for arrays; for streams after the
/// header page and the slot table (16 bytes per slot), on a page boundary.
fn data_offset_of(kind: Kind) -> u64 {
    let page = HEADER_SIZE as u64;
    match kind {
        Kind::Array => page,
        Kind::Stream { slots, .. } => page + (16 * u64::from(slots)).next_multiple_of(page),
    }
}

fn decode_dtype(field: &[u8]) -> Result<DType, FormatError> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let (text, pad) = field.split_at(end);
    if !text.is_ascii() || pad.iter().any(|&b| b != 0) {
        return Err(FormatError::BadDTypeBytes(field.to_vec()));
    }
    let text = std::str::from_utf8(text).map_err(|_| FormatError::BadDTypeBytes(field.to_vec()))?;
    let dtype = DType::parse(text)?;
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
                put_u32(p, offsets::VERSION, 2);
                reseal(p);
            },
            &|e| matches!(e, FormatError::UnsupportedVersion { found: 2 }),
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
