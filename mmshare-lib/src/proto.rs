//! The wire protocol between clients and `mmshared`: typed messages encoded with postcard.
//!
//! One request per SOCK_SEQPACKET message, one reply per request; file descriptors ride on the
//! reply that carries them (SCM_RIGHTS). docs/PROTOCOL.md gives every message byte for byte
//! with test vectors (checked by the tests below and by the Python client's tests).
//!
//! Everything a client sends is untrusted: decoding is bounded by [`MAX_MESSAGE`], and a
//! claimed length never makes it allocate more than a small multiple of that (serde caps
//! preallocation; every element must be present in the message); names, dtypes, shapes and modes are validated by the
//! daemon after decoding, each with its own error kind.

use serde::{Deserialize, Serialize};

/// Protocol version spoken by this build; sent in [`Request::Hello`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest message either side sends or accepts, in bytes. A longer request gets a
/// `ProtocolError` reply. `List` replies are paginated to stay under it.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Where an array's file lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Backing {
    /// The daemon's storage directory: survives daemon and machine restarts.
    File,
    /// The daemon's tmpfs directory (default `/dev/shm/mmshare-$UID`): RAM speed, survives a
    /// daemon restart but not a reboot.
    Memory,
}

/// Access requested by `Open`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpenAccess {
    /// A read-only descriptor (and so a read-only mapping).
    Read,
    /// A read-write descriptor; the connection becomes the writer's lease.
    Write,
}

/// Memory order on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WireOrder {
    /// Row-major.
    C,
    /// Column-major.
    F,
}

/// A client's request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Must be the first message on a connection.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        version: u32,
        /// Free text for the daemon's log (program name).
        client: String,
    },
    /// Create an array; the reply carries a read-write descriptor.
    Create {
        /// Array name.
        name: String,
        /// NumPy dtype string (`<f4`, `float32`, ...).
        dtype: String,
        /// Dimensions.
        shape: Vec<u64>,
        /// Memory order.
        order: WireOrder,
        /// File or memory backing.
        backing: Backing,
        /// Permission bits (`0o777` mask).
        mode: u32,
        /// Succeed (and open it read-write) if an identical array exists.
        exist_ok: bool,
    },
    /// Open an existing array; the reply carries the descriptor.
    Open {
        /// Array name.
        name: String,
        /// Read or write.
        access: OpenAccess,
    },
    /// Describe an array.
    Stat {
        /// Array name.
        name: String,
    },
    /// List arrays whose names start with `prefix`, in name order, after `after`.
    List {
        /// Name prefix ("" for all).
        prefix: String,
        /// Continue after this name (from the previous page), or from the start.
        after: Option<String>,
    },
    /// Delete (unlink) an array. Mappings that exist keep working.
    Delete {
        /// Array name.
        name: String,
    },
}

/// Everything a client needs to know about an array.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayInfo {
    /// Name.
    pub name: String,
    /// Canonical NumPy descr (`<f4`).
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Memory order.
    pub order: WireOrder,
    /// Offset of the data in the file (4096).
    pub data_offset: u64,
    /// Data length in bytes.
    pub data_len: u64,
    /// Version when the reply was made.
    pub version: u64,
    /// File or memory.
    pub backing: Backing,
    /// Owner uid.
    pub owner_uid: u32,
    /// Owner gid.
    pub owner_gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Whether the array is marked TORN.
    pub torn: bool,
    /// Path of the file: for `np.memmap` by the daemon's own uid (the directories are 0700),
    /// and for diagnostics. Other users go through the descriptor.
    pub path: String,
}

/// The kind of a failed request; mirrored by the Python client's exceptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No array with that name.
    NotFound,
    /// An array with that name exists (and differs, with `exist_ok`).
    AlreadyExists,
    /// The name breaks the naming rules.
    InvalidName,
    /// The dtype is not supported.
    InvalidDtype,
    /// The shape is invalid (too many dimensions, overflow).
    InvalidShape,
    /// The caller's uid/gid may not do this.
    PermissionDenied,
    /// A daemon limit (arrays, bytes) would be exceeded.
    QuotaExceeded,
    /// The filesystem has no room.
    NoSpace,
    /// The daemon is at its connection limit.
    Busy,
    /// The message was malformed, too large, out of order, or of another version.
    ProtocolError,
    /// Something failed inside the daemon; it logged the details.
    Internal,
}

/// The daemon's reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Handshake accepted.
    Hello {
        /// The daemon's [`PROTOCOL_VERSION`].
        version: u32,
        /// The daemon's name and version.
        server: String,
    },
    /// Create, Open (with a descriptor attached) or Stat succeeded.
    Array(ArrayInfo),
    /// A page of List.
    List {
        /// Arrays, in name order.
        arrays: Vec<ArrayInfo>,
        /// More arrays follow: ask again with `after` = the last name.
        more: bool,
    },
    /// Delete succeeded.
    Deleted,
    /// The request failed.
    Error {
        /// What kind of failure.
        kind: ErrorKind,
        /// What was wrong, with the value.
        message: String,
    },
}

/// A message that could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Larger than [`MAX_MESSAGE`].
    #[error("message of {len} bytes exceeds the {MAX_MESSAGE}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not a valid encoding (truncated, unknown variant, bad UTF-8, trailing bytes, ...).
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Encodes a message.
///
/// # Errors
/// [`ProtoError::TooLarge`] beyond [`MAX_MESSAGE`].
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    let bytes = postcard::to_allocvec(msg).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE {
        return Err(ProtoError::TooLarge { len: bytes.len() });
    }
    Ok(bytes)
}

/// Decodes a whole message: every byte must be used.
///
/// # Errors
/// [`ProtoError::TooLarge`] or [`ProtoError::Malformed`].
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ProtoError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(ProtoError::TooLarge { len: bytes.len() });
    }
    let (msg, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtoError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// The test vectors of docs/PROTOCOL.md: every message kind, its exact bytes in hex.
#[cfg(test)]
pub(crate) fn test_vectors() -> Vec<(&'static str, Result<Request, Response>, &'static str)> {
    let info = ArrayInfo {
        name: "frames".into(),
        dtype: "<f4".into(),
        shape: vec![2, 3],
        order: WireOrder::C,
        data_offset: 4096,
        data_len: 24,
        version: 300,
        backing: Backing::Memory,
        owner_uid: 1000,
        owner_gid: 100,
        mode: 0o644,
        torn: false,
        path: "/m/frames".into(),
    };
    vec![
        (
            "Hello request",
            Ok(Request::Hello {
                version: 1,
                client: "py".into(),
            }),
            "00 01 02 70 79",
        ),
        (
            "Create request",
            Ok(Request::Create {
                name: "frames".into(),
                dtype: "<f4".into(),
                shape: vec![2, 3],
                order: WireOrder::C,
                backing: Backing::Memory,
                mode: 0o644,
                exist_ok: true,
            }),
            "01 06 66 72 61 6d 65 73 03 3c 66 34 02 02 03 00 01 a4 03 01",
        ),
        (
            "Open request (write)",
            Ok(Request::Open {
                name: "frames".into(),
                access: OpenAccess::Write,
            }),
            "02 06 66 72 61 6d 65 73 01",
        ),
        (
            "Stat request",
            Ok(Request::Stat {
                name: "frames".into(),
            }),
            "03 06 66 72 61 6d 65 73",
        ),
        (
            "List request, first page",
            Ok(Request::List {
                prefix: "fr".into(),
                after: None,
            }),
            "04 02 66 72 00",
        ),
        (
            "List request, next page",
            Ok(Request::List {
                prefix: "".into(),
                after: Some("a".into()),
            }),
            "04 00 01 01 61",
        ),
        (
            "Delete request",
            Ok(Request::Delete {
                name: "frames".into(),
            }),
            "05 06 66 72 61 6d 65 73",
        ),
        (
            "Hello reply",
            Err(Response::Hello {
                version: 1,
                server: "mmshared 0.1.0".into(),
            }),
            "00 01 0e 6d 6d 73 68 61 72 65 64 20 30 2e 31 2e 30",
        ),
        (
            "Array reply",
            Err(Response::Array(info.clone())),
            "01 06 66 72 61 6d 65 73 03 3c 66 34 02 02 03 00 80 20 18 ac 02 01 e8 07 64 a4 03 00 09 2f 6d 2f 66 72 61 6d 65 73",
        ),
        (
            "List reply",
            Err(Response::List {
                arrays: vec![info],
                more: false,
            }),
            "02 01 06 66 72 61 6d 65 73 03 3c 66 34 02 02 03 00 80 20 18 ac 02 01 e8 07 64 a4 03 00 09 2f 6d 2f 66 72 61 6d 65 73 00",
        ),
        ("Deleted reply", Err(Response::Deleted), "03"),
        (
            "Error reply",
            Err(Response::Error {
                kind: ErrorKind::NotFound,
                message: "no array named \"x\"".into(),
            }),
            "04 00 12 6e 6f 20 61 72 72 61 79 20 6e 61 6d 65 64 20 22 78 22",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn unhex(h: &str) -> Vec<u8> {
        h.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The bytes in docs/PROTOCOL.md are what this code sends, and decode back to the message.
    #[test]
    fn test_vectors_match_the_encoding_both_ways() {
        for (what, msg, expected) in test_vectors() {
            match msg {
                Ok(req) => {
                    assert_eq!(hex(&encode(&req).unwrap()), expected, "{what}");
                    assert_eq!(decode::<Request>(&unhex(expected)).unwrap(), req, "{what}");
                }
                Err(resp) => {
                    assert_eq!(hex(&encode(&resp).unwrap()), expected, "{what}");
                    assert_eq!(
                        decode::<Response>(&unhex(expected)).unwrap(),
                        resp,
                        "{what}"
                    );
                }
            }
        }
    }

    /// docs/protocol_vectors.json (what the Python client's tests read) holds the same bytes.
    #[test]
    fn json_vectors_file_matches() {
        let file: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../../docs/protocol_vectors.json")).unwrap();
        let ours = test_vectors();
        assert_eq!(file.len(), ours.len());
        for (entry, (what, _, hex)) in file.iter().zip(ours) {
            assert_eq!(entry["name"], what);
            assert_eq!(entry["hex"], hex, "{what}");
        }
    }

    /// Truncated, extended and unknown-variant messages are errors, never panics.
    #[test]
    fn damaged_messages_are_errors() {
        for (what, msg, expected) in test_vectors() {
            let bytes = unhex(expected);
            for cut in 0..bytes.len() {
                let r = match &msg {
                    Ok(_) => decode::<Request>(&bytes[..cut]).map(drop),
                    Err(_) => decode::<Response>(&bytes[..cut]).map(drop),
                };
                // A prefix may happen to be a complete shorter message only if it is all of it.
                assert!(r.is_err(), "{what} cut at {cut} decoded");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode::<Request>(&longer).is_err() || decode::<Response>(&longer).is_err());
        }
        assert!(matches!(
            decode::<Request>(&[6]),
            Err(ProtoError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Request>(&vec![0; MAX_MESSAGE + 1]),
            Err(ProtoError::TooLarge { .. })
        ));
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }
    }
}
