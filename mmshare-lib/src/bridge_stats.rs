//! The counters `mmshare-bridge` keeps for each object it carries between hosts, as read by
//! `mmshare top` and the daemon's metrics endpoint.
//!
//! The bridge keeps them in ordinary arrays of the local daemon, one per object and
//! direction: `mmshare-bridge.out.NAME` for an object it exports, `mmshare-bridge.in.NAME`
//! for one it imports; 24 little-endian u64 words, dtype `<u8`, rewritten a few times a
//! second. Being arrays, they cost the bridge a few stores and outlive it (a restarted
//! importer reads its own back).
//!
//! | word | meaning |
//! |---|---|
//! | 0 | layout: [`LAYOUT`] |
//! | 1 | the bridge's pid |
//! | 2 | frames (array versions) carried |
//! | 3 | bytes carried (frame data and per-frame headers) |
//! | 4 | frames lost: numbers skipped, never delivered |
//! | 5 | reconnects: the other side came back after it had been seen |
//! | 6 | frames dropped as duplicates (arriving twice, or while a resume was awaited) |
//! | 7 | resumes: asked for (importer) or served (exporter) |
//! | 8 | importer: remote frame number minus local frame number (wrapping) |
//! | 9 | the next remote number expected (importer) or sent (exporter); 0 before the first |
//! | 10 | bytes the bridge itself copied (the zero-copy accounting) |
//! | 11 | when the bridge started carrying it, ns since the Unix epoch |
//! | 12 | when these words were last written, ns since the Unix epoch |
//! | 13 | frames that were torn, malformed or did not fit, dropped |
//! | 14 | 1 while the other side is connected |
//! | 15 | importer: 1 once word 8 holds the mapping of a frame it published |
//! | 16 | the source object's creation time (ns since the Unix epoch): which incarnation of the name the mapping (words 8, 9, 15) is about |
//! | 17–23 | 0 (reserved) |

/// Word 0 of a stats array in this layout.
pub const LAYOUT: u64 = 0x4d4d_4252_0000_0002;
/// Words in a stats array.
pub const WORDS: usize = 24;
/// The name every stats array starts with.
pub const PREFIX: &str = "mmshare-bridge.";

/// Word numbers (the table above).
#[allow(missing_docs)]
pub mod word {
    pub const PID: usize = 1;
    pub const FRAMES: usize = 2;
    pub const BYTES: usize = 3;
    pub const LOST: usize = 4;
    pub const RECONNECTS: usize = 5;
    pub const DUPLICATES: usize = 6;
    pub const RESUMES: usize = 7;
    pub const OFFSET: usize = 8;
    pub const NEXT: usize = 9;
    pub const COPIED: usize = 10;
    pub const STARTED: usize = 11;
    pub const UPDATED: usize = 12;
    pub const DROPPED: usize = 13;
    pub const CONNECTED: usize = 14;
    pub const MAPPED: usize = 15;
    pub const SOURCE: usize = 16;
}

/// Which way an object is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Exported from this host.
    Out,
    /// Imported into this host.
    In,
}

impl Direction {
    /// `"out"` or `"in"`, as in the array's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

/// The stats array's name for `object` carried in `direction`.
pub fn array_name(direction: Direction, object: &str) -> String {
    format!("{PREFIX}{}.{object}", direction.as_str())
}

/// The direction and object of a stats array's name; `None` for any other name.
///
/// ```
/// use mmshare::bridge_stats::{Direction, parse_name};
/// assert_eq!(parse_name("mmshare-bridge.in.cam.left"), Some((Direction::In, "cam.left")));
/// assert_eq!(parse_name("cam"), None);
/// ```
pub fn parse_name(name: &str) -> Option<(Direction, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (direction, object) = rest.split_once('.')?;
    let direction = match direction {
        "out" => Direction::Out,
        "in" => Direction::In,
        _ => return None,
    };
    (!object.is_empty()).then_some((direction, object))
}

/// The words of a stats array, checked: `None` unless there are [`WORDS`] of them and the
/// first is [`LAYOUT`] (an array of that name written by something else is not trusted).
pub fn check(words: &[u64]) -> Option<&[u64; WORDS]> {
    let words: &[u64; WORDS] = words.try_into().ok()?;
    (words[0] == LAYOUT).then_some(words)
}

/// [`check`] for the bytes of the array's data (little-endian words).
pub fn from_bytes(bytes: &[u8]) -> Option<[u64; WORDS]> {
    if bytes.len() != WORDS * 8 {
        return None;
    }
    let mut words = [0u64; WORDS];
    for (w, b) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes(b.try_into().expect("8 bytes"));
    }
    check(&words).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_words_are_checked() {
        assert_eq!(array_name(Direction::Out, "cam"), "mmshare-bridge.out.cam");
        assert_eq!(
            parse_name(&array_name(Direction::Out, "a.b")),
            Some((Direction::Out, "a.b"))
        );
        assert_eq!(parse_name("mmshare-bridge.sideways.cam"), None);
        assert_eq!(parse_name("mmshare-bridge.in."), None);
        let mut words = [7u64; WORDS];
        assert!(check(&words).is_none(), "another layout");
        words[0] = LAYOUT;
        assert_eq!(check(&words), Some(&words));
        assert!(check(&words[..WORDS - 1]).is_none());
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(from_bytes(&bytes), Some(words));
        assert_eq!(from_bytes(&bytes[..WORDS * 8 - 8]), None);
    }
}
