//! The message that carries frames (or one array version) between bridges.
//!
//! A message is one or more frames back to back, each little-endian: a fixed head of [`HEAD`]
//! bytes, then the frame's per-frame header, then its bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `MMBR` |
//! | 4 | 2 | version (1) |
//! | 6 | 2 | flags: 1 lossy export, 2 the first frame after a resume, 4 an array version |
//! | 8 | 8 | frame number in its lane (an array: its version) |
//! | 16 | 8 | publish time, ns since the Unix epoch (an array: when the bridge read it) |
//! | 24 | 8 | rows (an array: 0) |
//! | 32 | 8 | publisher word: pid, and the lane's attach number << 32 (0: one publisher) |
//! | 40 | 4 | lane |
//! | 44 | 4 | per-frame header length in bytes |
//! | 48 | 8 | with flag 2, the frame the exporter was asked to resume from |
//! | 56 | 8 | frame bytes after the per-frame header |
//! | 64 | 8 | the source object's creation time (ns since the Unix epoch): a stream or array deleted and made again under the same name is another source, numbered afresh |
//!
//! A message is untrusted input to the importer: [`Head::decode`] checks the magic, the
//! version, that the lengths fit what is left of the message and that the number is one a
//! stream can reach (below 2^63), and says what is wrong otherwise.

use std::fmt;

/// Bytes before the per-frame header.
pub const HEAD: usize = 72;
/// Frame numbers (and versions) at or above this are refused: no stream gets there, and
/// one more would overflow.
pub const MAX_NUMBER: u64 = 1 << 63;
const MAGIC: &[u8; 4] = b"MMBR";
const VERSION: u16 = 1;

/// The exporter subscribes lossy: gaps are expected, and no resume is asked for.
pub const LOSSY: u16 = 1;
/// The first frame the exporter sends after a resume request (`resumed_from` is valid).
pub const RESUMED: u16 = 2;
/// An array version rather than a stream frame.
pub const ARRAY: u16 = 4;

/// The fixed part of a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// [`LOSSY`], [`RESUMED`], [`ARRAY`].
    pub flags: u16,
    /// The frame's number in its lane, or the array's version.
    pub number: u64,
    /// Publish time, ns since the Unix epoch.
    pub published_ns: u64,
    /// Rows (a stream of variable frames); 0 for an array.
    pub rows: u64,
    /// The publisher word (pid | attach << 32).
    pub publisher: u64,
    /// The lane the frame came from.
    pub lane: u32,
    /// Per-frame header bytes after the head.
    pub header_len: u32,
    /// With [`RESUMED`]: the frame the importer asked for.
    pub resumed_from: u64,
    /// Frame bytes after the per-frame header.
    pub data_len: u64,
    /// The source object's creation time (its identity under its name).
    pub source: u64,
}

/// Why a message was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadMessage(pub String);

impl fmt::Display for BadMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Head {
    /// The head's bytes.
    pub fn encode(&self) -> [u8; HEAD] {
        let mut b = [0u8; HEAD];
        b[0..4].copy_from_slice(MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.number.to_le_bytes());
        b[16..24].copy_from_slice(&self.published_ns.to_le_bytes());
        b[24..32].copy_from_slice(&self.rows.to_le_bytes());
        b[32..40].copy_from_slice(&self.publisher.to_le_bytes());
        b[40..44].copy_from_slice(&self.lane.to_le_bytes());
        b[44..48].copy_from_slice(&self.header_len.to_le_bytes());
        b[48..56].copy_from_slice(&self.resumed_from.to_le_bytes());
        b[56..64].copy_from_slice(&self.data_len.to_le_bytes());
        b[64..72].copy_from_slice(&self.source.to_le_bytes());
        b
    }

    /// Reads a head from the first [`HEAD`] bytes of `b`, where `total` bytes are left in
    /// the message from the head on.
    ///
    /// # Errors
    /// Too few bytes, another magic or version, or a frame longer than what is left.
    pub fn decode(b: &[u8], total: usize) -> Result<Head, BadMessage> {
        if b.len() < HEAD || total < HEAD {
            return Err(BadMessage(format!(
                "{total} bytes left in a message, fewer than the {HEAD}-byte head"
            )));
        }
        if &b[0..4] != MAGIC {
            return Err(BadMessage(format!(
                "magic {:?} is not \"MMBR\"",
                String::from_utf8_lossy(&b[0..4])
            )));
        }
        let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let version = u16_at(4);
        if version != VERSION {
            return Err(BadMessage(format!(
                "message version {version}; this bridge reads version {VERSION}"
            )));
        }
        let head = Head {
            flags: u16_at(6),
            number: u64_at(8),
            published_ns: u64_at(16),
            rows: u64_at(24),
            publisher: u64_at(32),
            lane: u32_at(40),
            header_len: u32_at(44),
            resumed_from: u64_at(48),
            data_len: u64_at(56),
            source: u64_at(64),
        };
        if head.number >= MAX_NUMBER || head.resumed_from >= MAX_NUMBER {
            return Err(BadMessage(format!(
                "frame number {} (resumed from {}) is out of range",
                head.number, head.resumed_from
            )));
        }
        let body = u64::from(head.header_len).checked_add(head.data_len);
        if body.is_none_or(|b| b > (total - HEAD) as u64) {
            return Err(BadMessage(format!(
                "a frame of {} header and {} data bytes does not fit the {} bytes left",
                head.header_len,
                head.data_len,
                total - HEAD
            )));
        }
        Ok(head)
    }

    /// Bytes of this frame in the message, head included.
    pub fn len(&self) -> usize {
        HEAD + self.header_len as usize + self.data_len as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_reads_back_as_written() {
        let head = Head {
            flags: RESUMED | LOSSY,
            number: 1 << 40,
            published_ns: 7,
            rows: 3,
            publisher: 0x0000_0002_0000_1234,
            lane: 5,
            header_len: 16,
            resumed_from: 99,
            data_len: 8,
            source: 1234,
        };
        let bytes = head.encode();
        assert_eq!(&bytes[0..4], b"MMBR");
        assert_eq!(Head::decode(&bytes, HEAD + 16 + 8), Ok(head));
        assert_eq!(head.len(), HEAD + 16 + 8);
    }

    #[test]
    fn a_bad_message_is_refused_with_the_reason() {
        let good = Head {
            header_len: 4,
            data_len: 8,
            ..Head::default()
        }
        .encode();
        let err = |b: &[u8], total| Head::decode(b, total).unwrap_err().0;
        assert!(err(&good[..10], 10).contains("fewer than the 72-byte head"));
        let mut magic = good;
        magic[0] = b'X';
        assert!(err(&magic, HEAD + 12).contains("\"XMBR\""));
        let mut version = good;
        version[4] = 9;
        assert!(err(&version, HEAD + 12).contains("version 9"));
        assert!(err(&good, HEAD + 11).contains("4 header and 8 data bytes does not fit the 11"));
        assert!(Head::decode(&good, HEAD + 12).is_ok());
        let mut huge = good;
        huge[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            err(&huge, HEAD + 12).contains("does not fit"),
            "no overflow"
        );
    }
}
