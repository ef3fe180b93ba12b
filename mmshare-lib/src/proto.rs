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
        /// Stripes, each with its own seqlock, so that regions are written and read apart
        /// (docs/FORMAT.md, "Striped arrays"): 0 lets the daemon choose from the size, 1 is
        /// one sequence for the whole array, 2 to 32 ask for that many (whole slabs of the
        /// outermost axis each, so an array may get fewer).
        #[serde(default)]
        stripes: u32,
        /// A sparse file: only the header is allocated at create, each write allocates what it
        /// writes (a full disk is that write's error). Limits count the apparent size.
        #[serde(default)]
        sparse: bool,
    },
    /// Open an existing array; the reply carries the descriptor.
    Open {
        /// Array name.
        name: String,
        /// Read or write.
        access: OpenAccess,
    },
    /// Describe an array (`Response::Array`) or a stream (`Response::Stream`).
    Stat {
        /// Array or stream name.
        name: String,
    },
    /// List arrays whose names start with `prefix`, in name order, after `after`.
    List {
        /// Name prefix ("" for all).
        prefix: String,
        /// Continue after this name (from the previous page), or from the start.
        after: Option<String>,
    },
    /// Delete (unlink) an array or a stream. Mappings that exist keep working.
    Delete {
        /// Array or stream name.
        name: String,
    },
    /// Create a stream: a ring of `slots` frames of `dtype` and `shape`. The reply
    /// (`Response::Stream`) carries no descriptor; attach with `OpenStream`.
    CreateStream {
        /// Stream name (the same namespace as arrays).
        name: String,
        /// NumPy dtype string.
        dtype: String,
        /// One frame's dimensions.
        shape: Vec<u64>,
        /// Memory order of a frame.
        order: WireOrder,
        /// Frames in the ring (3..=4096).
        slots: u32,
        /// Subscriber records (1..=1024).
        max_subscribers: u32,
        /// File or memory backing.
        backing: Backing,
        /// Permission bits (`0o777` mask).
        mode: u32,
        /// Succeed if an identical stream exists.
        exist_ok: bool,
        /// What the publisher does about a lossless subscriber that stalls it.
        #[serde(default)]
        stall: WireStall,
        /// The newest frames kept offered for late subscribers (`0..=slots - 2`).
        #[serde(default)]
        history: u32,
        /// The dtype of each frame's header (a dtype string); empty: frames carry none.
        #[serde(default)]
        header: String,
        /// Whether frames vary in length along axis 0 (`shape` is the largest frame's).
        #[serde(default)]
        variable: bool,
        /// Publishers it may have at once, one lane each (1..=16; 0 is read as 1).
        #[serde(default)]
        max_publishers: u32,
    },
    /// Attach to a stream as a publisher or as a subscriber. The reply
    /// (`Response::Stream`) carries two descriptors per lane (one lane per publisher the
    /// stream may have, `StreamInfo::max_publishers`), in lane order: the lane's data file
    /// (read-write for a publisher, read-only for a subscriber), then its control state
    /// (read-write).
    OpenStream {
        /// Stream name.
        name: String,
        /// Publisher or subscriber.
        role: StreamRole,
    },
    /// Like `List`, for arrays and streams both.
    ListAll {
        /// Name prefix ("" for all).
        prefix: String,
        /// Continue after this name, or from the start.
        after: Option<String>,
    },
    /// Wait until an array or a stream named `name` exists (and the caller may read it), at
    /// most `timeout_ms` milliseconds; the reply is `Stat`'s, or `Error{Timeout}`. The daemon
    /// is woken by the creation: it does not poll.
    WaitFor {
        /// Array or stream name.
        name: String,
        /// How long to wait, in milliseconds (at most a day).
        timeout_ms: u64,
    },
    /// Turn this connection into a watch: the reply is `Event(Ready)`, then one `Event` per
    /// change of the objects whose names start with `prefix` (created, deleted, a stream's
    /// subscribers joining or leaving) until the client closes the connection. The client
    /// sends nothing more on it.
    Watch {
        /// Name prefix ("" for all).
        prefix: String,
    },
}

/// What a watch reports (`Request::Watch`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WatchEvent {
    /// The watch is set up: every change from here on is reported.
    Ready,
    /// An array or a stream was created.
    Created {
        /// Its name.
        name: String,
        /// A stream (true) or an array.
        stream: bool,
    },
    /// An array or a stream was deleted.
    Deleted {
        /// Its name.
        name: String,
    },
    /// A stream's attached subscribers changed: this many now.
    Subscribers {
        /// The stream's name.
        name: String,
        /// Subscribers attached.
        count: u32,
    },
    /// The client fell behind and this many events were dropped: list again to catch up.
    Lost {
        /// Events dropped.
        events: u64,
    },
}

/// Which side of a stream `OpenStream` attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamRole {
    /// The one publisher (needs write permission).
    Publish,
    /// A subscriber (needs read permission).
    Subscribe,
}

/// Everything a client needs to know about a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Name.
    pub name: String,
    /// Canonical NumPy descr of the frames' elements.
    pub dtype: String,
    /// One frame's dimensions.
    pub shape: Vec<u64>,
    /// Memory order of a frame.
    pub order: WireOrder,
    /// Frames in the ring.
    pub slots: u32,
    /// Subscriber records.
    pub max_subscribers: u32,
    /// Offset of slot 0's frame in the data file.
    pub data_offset: u64,
    /// Bytes per frame.
    pub frame_len: u64,
    /// Distance between two slots' frames (page aligned).
    pub slot_stride: u64,
    /// Frames published so far.
    pub published: u64,
    /// File or memory.
    pub backing: Backing,
    /// Owner uid.
    pub owner_uid: u32,
    /// Owner gid.
    pub owner_gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Path of the stream's directory (holding `data` and `control`).
    pub path: String,
    /// The attached publisher's pid, if any.
    pub publisher: Option<u32>,
    /// Its subscribers (empty in `ListAll` replies).
    pub subscribers: Vec<SubscriberStat>,
    /// What the publisher does about a lossless subscriber that stalls it.
    #[serde(default)]
    pub stall: WireStall,
    /// The newest frames kept offered for late subscribers.
    #[serde(default)]
    pub history: u32,
    /// The canonical dtype of each frame's header; empty when frames carry none.
    #[serde(default)]
    pub header: String,
    /// Whether frames vary in length along axis 0 (`shape` is the largest frame's).
    #[serde(default)]
    pub variable: bool,
    /// Publishers it may have at once (its lanes).
    #[serde(default)]
    pub max_publishers: u32,
    /// The pids of the publishers attached now, in lane order.
    #[serde(default)]
    pub publishers: Vec<u32>,
}

/// A stream's stall policy on the wire (`crate::StallPolicy`): postcard encodes the variant
/// index (0 Block, 1 Demote, 2 Evict) as a varint, then `after_ms` as a varint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireStall {
    /// Wait for the subscriber (the default).
    #[default]
    Block,
    /// Make it lossy after `after_ms` of waiting.
    Demote {
        /// Milliseconds.
        after_ms: u32,
    },
    /// Evict it after `after_ms` of waiting.
    Evict {
        /// Milliseconds.
        after_ms: u32,
    },
}

impl From<crate::format::StallPolicy> for WireStall {
    fn from(p: crate::format::StallPolicy) -> WireStall {
        let ms = |d: std::time::Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        match p {
            crate::format::StallPolicy::Block => WireStall::Block,
            crate::format::StallPolicy::Demote { after } => WireStall::Demote {
                after_ms: ms(after),
            },
            crate::format::StallPolicy::Evict { after } => WireStall::Evict {
                after_ms: ms(after),
            },
        }
    }
}

impl From<WireStall> for crate::format::StallPolicy {
    fn from(w: WireStall) -> crate::format::StallPolicy {
        let after = |ms: u32| std::time::Duration::from_millis(u64::from(ms));
        match w {
            WireStall::Block => crate::format::StallPolicy::Block,
            WireStall::Demote { after_ms } => crate::format::StallPolicy::Demote {
                after: after(after_ms),
            },
            WireStall::Evict { after_ms } => crate::format::StallPolicy::Evict {
                after: after(after_ms),
            },
        }
    }
}

/// One subscriber of a stream, as `Stat` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberStat {
    /// Its pid.
    pub pid: u32,
    /// Lossless (holds the publisher back) or lossy.
    pub lossless: bool,
    /// Samples it may hold at once.
    pub max_held: u32,
    /// Frames published that it has not taken.
    pub lag: u64,
    /// Frames it skipped.
    pub missed: u64,
    /// Frames it took.
    pub received: u64,
}

/// An array or a stream, in a `ListAll` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectInfo {
    /// An array.
    Array(ArrayInfo),
    /// A stream.
    Stream(StreamInfo),
}

impl ObjectInfo {
    /// The object's name.
    pub fn name(&self) -> &str {
        match self {
            ObjectInfo::Array(a) => &a.name,
            ObjectInfo::Stream(s) => &s.name,
        }
    }
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
    /// Bytes per stripe, 0 for an array with one sequence (docs/FORMAT.md, "Striped arrays").
    #[serde(default)]
    pub stripe_bytes: u64,
    /// Whether the file is sparse (allocated region by region as it is written).
    #[serde(default)]
    pub sparse: bool,
}

/// The kind of a failed request; mirrored by the Python client's exceptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No array or stream with that name.
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
    /// The name belongs to an array where a stream was asked for, or the other way round.
    WrongKind,
    /// A wait (`WaitFor`) ran out of time.
    Timeout,
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
    /// CreateStream, OpenStream (with two descriptors attached) or Stat of a stream succeeded.
    Stream(StreamInfo),
    /// A page of ListAll.
    Objects {
        /// Arrays and streams, in name order.
        objects: Vec<ObjectInfo>,
        /// More follow: ask again with `after` = the last name.
        more: bool,
    },
    /// A watch's report (`Request::Watch`).
    Event(WatchEvent),
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
    /// A message received cut off at [`MAX_MESSAGE`] + 1 bytes: longer than the limit, by how
    /// much the receiver cannot tell.
    #[error("message of more than {MAX_MESSAGE} bytes exceeds the {MAX_MESSAGE}-byte limit")]
    Oversized,
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

/// A message type of the protocol: [`Request`] or [`Response`].
///
/// Decoding first checks the bytes against the message's layout (docs/PROTOCOL.md) field by
/// field, so that an error names the field, its byte offset and the bad value (an unknown
/// variant index, a non-minimal varint, a string longer than the message, ...), then decodes
/// them with postcard.
pub trait Message: Serialize {
    /// Checks that `bytes` is exactly one well-formed message of this type.
    ///
    /// # Errors
    /// A sentence naming the field, the byte offset and the value that is wrong.
    fn check(bytes: &[u8]) -> Result<(), String>;
}

impl Message for Request {
    fn check(bytes: &[u8]) -> Result<(), String> {
        Walk::new(bytes).message("Request", REQUEST)
    }
}

impl Message for Response {
    fn check(bytes: &[u8]) -> Result<(), String> {
        Walk::new(bytes).message("Response", RESPONSE)
    }
}

/// Decodes a whole message: every byte must be used, and every varint must be minimal.
///
/// # Errors
/// [`ProtoError::TooLarge`] or [`ProtoError::Malformed`] (whose text names the field, the byte
/// offset and the value).
pub fn decode<'a, T: Message + Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ProtoError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(ProtoError::TooLarge { len: bytes.len() });
    }
    T::check(bytes).map_err(ProtoError::Malformed)?;
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

/// The type of a field, as laid out on the wire (docs/PROTOCOL.md, "Encoding").
#[derive(Clone, Copy, Debug)]
enum Ty {
    U32,
    U64,
    Bool,
    Str,
    /// `Vec<u64>`.
    Shape,
    /// `Vec<u32>`.
    U32s,
    /// `Option<String>`.
    OptStr,
    /// An enum without fields: its name and its variants, by index.
    Small(&'static str, &'static [&'static str]),
    /// [`ArrayInfo`].
    Info,
    /// `Vec<ArrayInfo>`.
    Infos,
    /// `Option<u32>`.
    OptU32,
    /// A struct with these fields.
    Struct(Fields),
    /// A `Vec` of structs with these fields.
    Structs(Fields),
    /// A `Vec` of enums with fields: the enum's name and its variants, by index.
    Enums(&'static str, &'static [(&'static str, Fields)]),
    /// One enum with fields: its name and its variants, by index.
    Enum(&'static str, &'static [(&'static str, Fields)]),
}

type Fields = &'static [(&'static str, Ty)];

const ORDER: Ty = Ty::Small("Order", &["C", "F"]);
const BACKING: Ty = Ty::Small("Backing", &["File", "Memory"]);
const ACCESS: Ty = Ty::Small("Access", &["Read", "Write"]);
const ERROR_KIND: Ty = Ty::Small(
    "ErrorKind",
    &[
        "NotFound",
        "AlreadyExists",
        "InvalidName",
        "InvalidDtype",
        "InvalidShape",
        "PermissionDenied",
        "QuotaExceeded",
        "NoSpace",
        "Busy",
        "ProtocolError",
        "Internal",
        "WrongKind",
        "Timeout",
    ],
);
const ROLE: Ty = Ty::Small("StreamRole", &["Publish", "Subscribe"]);
const STALL: Ty = Ty::Enum(
    "WireStall",
    &[
        ("Block", &[]),
        ("Demote", &[("after_ms", Ty::U32)]),
        ("Evict", &[("after_ms", Ty::U32)]),
    ],
);

const REQUEST: &[(&str, Fields)] = &[
    ("Hello", &[("version", Ty::U32), ("client", Ty::Str)]),
    (
        "Create",
        &[
            ("name", Ty::Str),
            ("dtype", Ty::Str),
            ("shape", Ty::Shape),
            ("order", ORDER),
            ("backing", BACKING),
            ("mode", Ty::U32),
            ("exist_ok", Ty::Bool),
            ("stripes", Ty::U32),
            ("sparse", Ty::Bool),
        ],
    ),
    ("Open", &[("name", Ty::Str), ("access", ACCESS)]),
    ("Stat", &[("name", Ty::Str)]),
    ("List", &[("prefix", Ty::Str), ("after", Ty::OptStr)]),
    ("Delete", &[("name", Ty::Str)]),
    (
        "CreateStream",
        &[
            ("name", Ty::Str),
            ("dtype", Ty::Str),
            ("shape", Ty::Shape),
            ("order", ORDER),
            ("slots", Ty::U32),
            ("max_subscribers", Ty::U32),
            ("backing", BACKING),
            ("mode", Ty::U32),
            ("exist_ok", Ty::Bool),
            ("stall", STALL),
            ("history", Ty::U32),
            ("header", Ty::Str),
            ("variable", Ty::Bool),
            ("max_publishers", Ty::U32),
        ],
    ),
    ("OpenStream", &[("name", Ty::Str), ("role", ROLE)]),
    ("ListAll", &[("prefix", Ty::Str), ("after", Ty::OptStr)]),
    ("WaitFor", &[("name", Ty::Str), ("timeout_ms", Ty::U64)]),
    ("Watch", &[("prefix", Ty::Str)]),
];

const EVENT: Ty = Ty::Enum(
    "WatchEvent",
    &[
        ("Ready", &[]),
        ("Created", &[("name", Ty::Str), ("stream", Ty::Bool)]),
        ("Deleted", &[("name", Ty::Str)]),
        ("Subscribers", &[("name", Ty::Str), ("count", Ty::U32)]),
        ("Lost", &[("events", Ty::U64)]),
    ],
);

const SUBSCRIBER: Fields = &[
    ("pid", Ty::U32),
    ("lossless", Ty::Bool),
    ("max_held", Ty::U32),
    ("lag", Ty::U64),
    ("missed", Ty::U64),
    ("received", Ty::U64),
];

const STREAM_INFO: Fields = &[
    ("name", Ty::Str),
    ("dtype", Ty::Str),
    ("shape", Ty::Shape),
    ("order", ORDER),
    ("slots", Ty::U32),
    ("max_subscribers", Ty::U32),
    ("data_offset", Ty::U64),
    ("frame_len", Ty::U64),
    ("slot_stride", Ty::U64),
    ("published", Ty::U64),
    ("backing", BACKING),
    ("owner_uid", Ty::U32),
    ("owner_gid", Ty::U32),
    ("mode", Ty::U32),
    ("path", Ty::Str),
    ("publisher", Ty::OptU32),
    ("subscribers", Ty::Structs(SUBSCRIBER)),
    ("stall", STALL),
    ("history", Ty::U32),
    ("header", Ty::Str),
    ("variable", Ty::Bool),
    ("max_publishers", Ty::U32),
    ("publishers", Ty::U32s),
];

const OBJECT: &[(&str, Fields)] = &[
    ("Array", &[("info", Ty::Info)]),
    ("Stream", &[("info", Ty::Struct(STREAM_INFO))]),
];

const INFO: Fields = &[
    ("name", Ty::Str),
    ("dtype", Ty::Str),
    ("shape", Ty::Shape),
    ("order", ORDER),
    ("data_offset", Ty::U64),
    ("data_len", Ty::U64),
    ("version", Ty::U64),
    ("backing", BACKING),
    ("owner_uid", Ty::U32),
    ("owner_gid", Ty::U32),
    ("mode", Ty::U32),
    ("torn", Ty::Bool),
    ("path", Ty::Str),
    ("stripe_bytes", Ty::U64),
    ("sparse", Ty::Bool),
];

const RESPONSE: &[(&str, Fields)] = &[
    ("Hello", &[("version", Ty::U32), ("server", Ty::Str)]),
    ("Array", &[("info", Ty::Info)]),
    ("List", &[("arrays", Ty::Infos), ("more", Ty::Bool)]),
    ("Deleted", &[]),
    ("Error", &[("kind", ERROR_KIND), ("message", Ty::Str)]),
    ("Stream", &[("info", Ty::Struct(STREAM_INFO))]),
    (
        "Objects",
        &[
            ("objects", Ty::Enums("ObjectInfo", OBJECT)),
            ("more", Ty::Bool),
        ],
    ),
    ("Event", &[("event", EVENT)]),
];

fn hex_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Walks a message along its layout; every error names the field, the offset and the value.
struct Walk<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Walk<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Walk { bytes, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn message(mut self, what: &str, variants: &[(&str, Fields)]) -> Result<(), String> {
        if self.bytes.is_empty() {
            return Err(format!(
                "empty message (0 bytes): a {what} starts with its variant index"
            ));
        }
        let index = self.varint(&format!("{what} variant index"), 32)?;
        let Some((name, fields)) = usize::try_from(index).ok().and_then(|i| variants.get(i)) else {
            let known: Vec<String> = variants
                .iter()
                .enumerate()
                .map(|(i, (n, _))| format!("{i} {n}"))
                .collect();
            return Err(format!(
                "unknown {what} variant {index} at byte 0 (expected one of: {})",
                known.join(", ")
            ));
        };
        self.fields(name, fields)?;
        if self.remaining() != 0 {
            return Err(format!(
                "{} trailing bytes after a complete {what}::{name} (which ends at byte {})",
                self.remaining(),
                self.pos
            ));
        }
        Ok(())
    }

    fn fields(&mut self, path: &str, fields: Fields) -> Result<(), String> {
        for (field, ty) in fields {
            self.value(&format!("{path}.{field}"), *ty)?;
        }
        Ok(())
    }

    fn value(&mut self, what: &str, ty: Ty) -> Result<(), String> {
        match ty {
            Ty::U32 => self.varint(what, 32).map(drop),
            Ty::U64 => self.varint(what, 64).map(drop),
            Ty::Bool => self.flag(what, "bool", "false", "true"),
            Ty::Str => self.string(what),
            Ty::OptStr => {
                let at = self.pos;
                self.flag(what, "Option tag", "None", "Some")?;
                if self.bytes[at] == 1 {
                    self.string(what)?;
                }
                Ok(())
            }
            Ty::Shape => {
                // Every element takes at least one byte.
                let n = self.count(what, "elements", 1)?;
                (0..n).try_for_each(|i| self.varint(&format!("{what}[{i}]"), 64).map(drop))
            }
            Ty::U32s => {
                let n = self.count(what, "elements", 1)?;
                (0..n).try_for_each(|i| self.varint(&format!("{what}[{i}]"), 32).map(drop))
            }
            Ty::Small(name, variants) => {
                let at = self.pos;
                let v = self.varint(what, 32)?;
                if usize::try_from(v).is_ok_and(|v| v < variants.len()) {
                    return Ok(());
                }
                let known: Vec<String> = variants
                    .iter()
                    .enumerate()
                    .map(|(i, n)| format!("{i} = {n}"))
                    .collect();
                Err(format!(
                    "unknown {name} value {v} for {what} at byte {at} (expected {})",
                    known.join(", ")
                ))
            }
            Ty::OptU32 => {
                let at = self.pos;
                self.flag(what, "Option tag", "None", "Some")?;
                if self.bytes[at] == 1 {
                    self.varint(what, 32)?;
                }
                Ok(())
            }
            Ty::Struct(fields) => self.fields(what, fields),
            Ty::Structs(fields) => {
                let n = self.count(what, "elements", 1)?;
                (0..n).try_for_each(|i| self.fields(&format!("{what}[{i}]"), fields))
            }
            Ty::Enums(name, variants) => {
                let n = self.count(what, "elements", 1)?;
                (0..n).try_for_each(|i| self.variant(&format!("{what}[{i}]"), name, variants))
            }
            Ty::Enum(name, variants) => self.variant(what, name, variants),
            Ty::Info => self.fields(what, INFO),
            Ty::Infos => {
                // Every element takes at least one byte.
                let n = self.count(what, "elements", 1)?;
                (0..n).try_for_each(|i| self.fields(&format!("{what}[{i}]"), INFO))
            }
        }
    }

    /// One value of an enum with fields: its variant index, then that variant's fields.
    fn variant(
        &mut self,
        what: &str,
        name: &str,
        variants: &[(&'static str, Fields)],
    ) -> Result<(), String> {
        let at = self.pos;
        let v = self.varint(what, 32)?;
        match usize::try_from(v).ok().and_then(|v| variants.get(v)) {
            Some((variant, fields)) => self.fields(&format!("{what}.{variant}"), fields),
            None => {
                let known: Vec<String> = variants
                    .iter()
                    .enumerate()
                    .map(|(i, (n, _))| format!("{i} = {n}"))
                    .collect();
                Err(format!(
                    "unknown {name} value {v} for {what} at byte {at} (expected {})",
                    known.join(", ")
                ))
            }
        }
    }

    /// A length prefix that must not claim more than the rest of the message can hold.
    fn count(&mut self, what: &str, unit: &str, min_size: usize) -> Result<usize, String> {
        let at = self.pos;
        let n = self.varint(&format!("length of {what}"), 64)?;
        let fits = usize::try_from(n).ok().filter(|&n| {
            n.checked_mul(min_size)
                .is_some_and(|b| b <= self.remaining())
        });
        fits.ok_or_else(|| {
            format!(
                "{what} at byte {at} claims {n} {unit}, but only {} bytes follow",
                self.remaining()
            )
        })
    }

    fn flag(&mut self, what: &str, kind: &str, zero: &str, one: &str) -> Result<(), String> {
        match self.bytes.get(self.pos) {
            None => Err(format!(
                "the message ends at byte {} where {what} ({kind}) should be",
                self.pos
            )),
            Some(0 | 1) => {
                self.pos += 1;
                Ok(())
            }
            Some(&b) => Err(format!(
                "{kind} {what} at byte {} is {b:#04x} (expected 00 = {zero} or 01 = {one})",
                self.pos
            )),
        }
    }

    fn string(&mut self, what: &str) -> Result<(), String> {
        let at = self.pos;
        let len = self.count(what, "bytes", 1)?;
        let text = &self.bytes[self.pos..self.pos + len];
        if let Err(e) = std::str::from_utf8(text) {
            return Err(format!(
                "string {what} at byte {at} is not UTF-8 (bad byte at message offset {})",
                self.pos + e.valid_up_to()
            ));
        }
        self.pos += len;
        Ok(())
    }

    /// An unsigned LEB128 varint of at most `bits` bits, in its minimal form.
    fn varint(&mut self, what: &str, bits: u32) -> Result<u64, String> {
        let start = self.pos;
        let max_len = bits.div_ceil(7) as usize; // 5 bytes for a u32, 10 for a u64
        let mut value = 0u64;
        for i in 0..max_len {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(format!(
                    "the message ends inside the varint of {what} (which starts at byte {start})"
                ));
            };
            self.pos += 1;
            let low = u64::from(b & 0x7f);
            let shown = || hex_bytes(&self.bytes[start..self.pos]);
            if i == max_len - 1 {
                if b & 0x80 != 0 {
                    return Err(format!(
                        "varint of {what} at byte {start} is longer than {max_len} bytes, the most a u{bits} takes ({} ...)",
                        shown()
                    ));
                }
                if low >> (bits - 7 * i as u32) != 0 {
                    return Err(format!(
                        "varint of {what} at byte {start} ({}) exceeds the u{bits} range",
                        shown()
                    ));
                }
            }
            value |= low << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(format!(
                        "varint of {what} at byte {start} ({}) is not minimal: {value} is encoded as {}",
                        shown(),
                        hex_bytes(&postcard::to_allocvec(&value).unwrap_or_default())
                    ));
                }
                return Ok(value);
            }
        }
        // Not reached: the last byte either ends the varint or is refused above.
        Err(format!("varint of {what} at byte {start} is too long"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        hex_bytes(b)
    }

    fn unhex(h: &str) -> Vec<u8> {
        h.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// A message of either direction, from a vector's `type` and `value`.
    #[derive(Clone, Debug, PartialEq)]
    enum Msg {
        Request(Request),
        Response(Response),
    }

    impl Msg {
        fn encode(&self) -> Vec<u8> {
            match self {
                Msg::Request(m) => encode(m).unwrap(),
                Msg::Response(m) => encode(m).unwrap(),
            }
        }

        fn decode_like(&self, bytes: &[u8]) -> Result<Msg, ProtoError> {
            match self {
                Msg::Request(_) => decode::<Request>(bytes).map(Msg::Request),
                Msg::Response(_) => decode::<Response>(bytes).map(Msg::Response),
            }
        }
    }

    /// Every vector of docs/protocol_vectors.json: (name, decoded message, bytes).
    fn vectors() -> Vec<(String, Msg, Vec<u8>)> {
        let file: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../../docs/protocol_vectors.json")).unwrap();
        file.into_iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_owned();
                let value = e["value"].clone();
                let msg = match e["type"].as_str() {
                    Some("Request") => Msg::Request(serde_json::from_value(value).unwrap()),
                    Some("Response") => Msg::Response(serde_json::from_value(value).unwrap()),
                    other => panic!("{name}: unknown type {other:?}"),
                };
                (name, msg, unhex(e["hex"].as_str().unwrap()))
            })
            .collect()
    }

    /// Every vector in docs/protocol_vectors.json: its decoded value encodes to exactly its
    /// bytes, and its bytes decode to exactly its value.
    #[test]
    fn every_json_vector_matches_the_encoding_both_ways() {
        let all = vectors();
        assert!(all.len() >= 42, "{} vectors", all.len());
        if std::env::var_os("MMSHARE_BLESS").is_some() {
            // Re-encode every vector from its value (after a message gained a field with a
            // serde default), rewriting only the `hex` strings of the hand-kept file.
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../docs/protocol_vectors.json");
            let mut text = std::fs::read_to_string(&path).unwrap();
            let mut from = 0;
            for (what, msg, _) in &all {
                let at = from
                    + text[from..]
                        .find(&format!(
                            "\"name\": {}",
                            serde_json::to_string(what).unwrap()
                        ))
                        .unwrap();
                let start = at + text[at..].find("\"hex\": \"").unwrap() + "\"hex\": \"".len();
                let end = start + text[start..].find('"').unwrap();
                text.replace_range(start..end, &hex(&msg.encode()));
                from = end;
            }
            std::fs::write(&path, text).unwrap();
            return;
        }
        for (what, msg, bytes) in &all {
            assert_eq!(hex(&msg.encode()), hex(bytes), "{what}: encoding");
            assert_eq!(&msg.decode_like(bytes).unwrap(), msg, "{what}: decoding");
        }
    }

    /// The vectors cover what a client implementer needs to see at least once.
    #[test]
    fn json_vectors_cover_every_variant_kind_and_edge() {
        let all = vectors();
        let mut kinds = std::collections::HashSet::new();
        let (mut file, mut read, mut no_exist_ok, mut zero_d, mut more, mut torn) =
            (false, false, false, false, false, false);
        let mut requests = std::collections::HashSet::new();
        let mut responses = std::collections::HashSet::new();
        let mut long_len = false;
        // Streams: both roles, both object kinds, a publisher present and absent, lossless and
        // lossy subscribers, a stream with none, `more` true and false in Objects replies.
        let mut roles = std::collections::HashSet::new();
        let (mut array_obj, mut stream_obj, mut objects_more, mut objects_last) =
            (false, false, false, false);
        let (mut with_publisher, mut without_publisher, mut no_subscribers) = (false, false, false);
        let (mut lossless, mut lossy, mut stream_file, mut stream_f, mut stream_exist_ok) =
            (false, false, false, false, false);
        for (_, msg, _) in &all {
            // A length over 127 takes a 2-byte varint.
            long_len |= match msg {
                Msg::Request(Request::Stat { name }) => name.len() > 127,
                Msg::Response(Response::Array(a)) => a.name.len() > 127 && a.path.len() > 127,
                _ => false,
            };
            match msg {
                Msg::Request(r) => {
                    requests.insert(std::mem::discriminant(r));
                    match r {
                        Request::Create {
                            backing,
                            exist_ok,
                            shape,
                            ..
                        } => {
                            file |= *backing == Backing::File;
                            no_exist_ok |= !exist_ok;
                            zero_d |= shape.is_empty();
                        }
                        Request::Open { access, .. } => read |= *access == OpenAccess::Read,
                        Request::CreateStream {
                            backing,
                            order,
                            exist_ok,
                            ..
                        } => {
                            stream_file |= *backing == Backing::File;
                            stream_f |= *order == WireOrder::F;
                            stream_exist_ok |= *exist_ok;
                        }
                        Request::OpenStream { role, .. } => {
                            roles.insert(*role);
                        }
                        _ => {}
                    }
                }
                Msg::Response(r) => {
                    responses.insert(std::mem::discriminant(r));
                    match r {
                        Response::Error { kind, .. } => {
                            kinds.insert(*kind);
                        }
                        Response::List { more: m, arrays } => {
                            more |= *m;
                            torn |= arrays.iter().any(|a| a.torn);
                        }
                        Response::Array(a) => torn |= a.torn,
                        Response::Stream(s) => {
                            with_publisher |= s.publisher.is_some();
                            without_publisher |= s.publisher.is_none();
                            no_subscribers |= s.subscribers.is_empty();
                            lossless |= s.subscribers.iter().any(|x| x.lossless);
                            lossy |= s.subscribers.iter().any(|x| !x.lossless);
                        }
                        Response::Objects { objects, more: m } => {
                            objects_more |= *m;
                            objects_last |= !*m;
                            for o in objects {
                                array_obj |= matches!(o, ObjectInfo::Array(_));
                                stream_obj |= matches!(o, ObjectInfo::Stream(_));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        assert_eq!(requests.len(), 11, "every Request variant");
        assert_eq!(responses.len(), 8, "every Response variant");
        assert_eq!(kinds.len(), 13, "every ErrorKind: {kinds:?}");
        assert!(file && read && no_exist_ok && zero_d && more && torn && long_len);
        assert_eq!(roles.len(), 2, "both StreamRoles");
        assert!(stream_file && stream_f && stream_exist_ok);
        assert!(array_obj && stream_obj && objects_more && objects_last);
        assert!(with_publisher && without_publisher && no_subscribers && lossless && lossy);
    }

    /// Every StreamInfo in the vectors describes a stream the format allows, with the
    /// geometry docs/FORMAT.md derives from it (data offset after the slot table, page-aligned
    /// slot stride, frame length = itemsize x shape), so the vectors double as examples of it.
    #[test]
    fn json_stream_vectors_have_the_format_geometry() {
        let mut infos = Vec::new();
        for (_, msg, _) in vectors() {
            match msg {
                Msg::Response(Response::Stream(s)) => infos.push(s),
                Msg::Response(Response::Objects { objects, .. }) => {
                    infos.extend(objects.into_iter().filter_map(|o| match o {
                        ObjectInfo::Stream(s) => Some(s),
                        ObjectInfo::Array(_) => None,
                    }))
                }
                _ => {}
            }
        }
        assert!(infos.len() >= 4, "{} stream infos", infos.len());
        for s in infos {
            let mut spec = crate::format::StreamSpec::new(
                s.name.clone(),
                crate::dtype::DType::parse(&s.dtype).unwrap(),
                s.shape.clone(),
            );
            spec.slots = s.slots;
            spec.max_subscribers = s.max_subscribers;
            let h = crate::format::Header::new_stream(&spec).unwrap();
            assert_eq!(h.dtype.descr(), s.dtype, "{}: canonical dtype", s.name);
            assert_eq!(h.data_offset, s.data_offset, "{}: data_offset", s.name);
            assert_eq!(
                h.data_offset,
                4096 + (64 * u64::from(s.slots)).next_multiple_of(4096)
            );
            assert_eq!(h.data_len, s.frame_len, "{}: frame_len", s.name);
            assert_eq!(h.slot_stride(), s.slot_stride, "{}: slot_stride", s.name);
            assert_eq!(s.slot_stride % 4096, 0);
            let budget = crate::format::hold_capacity(s.slots, s.history);
            let held: u64 = s.subscribers.iter().map(|x| u64::from(x.max_held)).sum();
            assert!(
                held <= budget,
                "{}: {held} holds granted of {budget}",
                s.name
            );
            assert!(s.subscribers.len() <= s.max_subscribers as usize);
        }
    }

    /// docs/PROTOCOL.md's test-vector table lists exactly the vectors of the JSON file.
    #[test]
    fn protocol_md_lists_the_json_vectors() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let section = doc
            .split("## Test vectors")
            .nth(1)
            .expect("a Test vectors section");
        let in_doc: Vec<(String, String)> = section
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split(" | ").collect();
                let name = cells.first()?.strip_prefix("| ")?;
                let hex = cells.get(1)?.trim_end_matches(" |").trim_matches('`');
                (hex.len() >= 2 && hex.bytes().all(|b| b.is_ascii_hexdigit() || b == b' '))
                    .then(|| (name.to_owned(), hex.to_owned()))
            })
            .collect();
        let in_json: Vec<(String, String)> = vectors()
            .into_iter()
            .map(|(n, _, b)| (n, hex(&b)))
            .collect();
        assert_eq!(in_doc, in_json);
    }

    /// Truncated, extended and unknown-variant messages are errors, never panics.
    #[test]
    fn damaged_messages_are_errors() {
        for (what, msg, bytes) in vectors() {
            for cut in 0..bytes.len() {
                // A prefix may happen to be a complete shorter message only if it is all of it.
                assert!(
                    msg.decode_like(&bytes[..cut]).is_err(),
                    "{what} cut at {cut} decoded"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            let e = msg.decode_like(&longer).unwrap_err().to_string();
            assert!(e.contains("1 trailing bytes"), "{what}: {e}");
        }
        for unknown_or_truncated in [6, 7, 8, 9] {
            assert!(matches!(
                decode::<Request>(&[unknown_or_truncated]),
                Err(ProtoError::Malformed(_))
            ));
        }
        assert!(matches!(
            decode::<Request>(&vec![0; MAX_MESSAGE + 1]),
            Err(ProtoError::TooLarge { .. })
        ));
    }

    fn malformed(bytes: &[u8]) -> String {
        match decode::<Request>(bytes) {
            Err(ProtoError::Malformed(m)) => m,
            other => panic!("{} decoded to {other:?}", hex(bytes)),
        }
    }

    /// Unknown variant indices and enum values name the tag, the field and the byte offset
    /// (postcard alone says only "Serde Deserialization Error").
    #[test]
    fn unknown_tags_are_named() {
        let m = malformed(&[99, 0, 0]);
        assert!(m.starts_with("unknown Request variant 99 at byte 0"), "{m}");
        assert!(m.contains("5 Delete"), "{m}");
        assert!(m.contains("8 ListAll"), "{m}");
        assert!(m.contains("10 Watch"), "{m}");
        // Request variant 11 is the first unknown one.
        let m = malformed(&[11, 0, 0]);
        assert!(m.starts_with("unknown Request variant 11 at byte 0"), "{m}");
        // OpenStream { name: "x", role: 2 }
        let m = malformed(&[7, 1, b'x', 2]);
        assert_eq!(
            m,
            "unknown StreamRole value 2 for OpenStream.role at byte 3 (expected 0 = Publish, 1 = Subscribe)"
        );
        // Open { name: "x", access: 7 }
        let m = malformed(&[2, 1, b'x', 7]);
        assert_eq!(
            m,
            "unknown Access value 7 for Open.access at byte 3 (expected 0 = Read, 1 = Write)"
        );
        // Create with order 5, then backing 9.
        let mut create = unhex("01 01 78 02 75 31 01 02 00 01 80 03 00 00 00");
        create[8] = 5;
        let m = malformed(&create);
        assert!(
            m.contains("Order value 5 for Create.order at byte 8"),
            "{m}"
        );
        create[8] = 0;
        create[9] = 9;
        let m = malformed(&create);
        assert!(
            m.contains("Backing value 9 for Create.backing at byte 9"),
            "{m}"
        );
        // exist_ok = 2, List.after tag = 3.
        let m = malformed(&unhex("01 01 78 02 75 31 01 02 00 01 80 03 02 00 00"));
        assert!(m.contains("bool Create.exist_ok at byte 12 is 0x02"), "{m}");
        let m = malformed(&unhex("04 00 03"));
        assert!(m.contains("Option tag List.after at byte 2 is 0x03"), "{m}");
        // ErrorKind 11 is WrongKind; 12 is the first unknown one.
        assert!(matches!(
            decode::<Response>(&unhex("04 0b 00")),
            Ok(Response::Error {
                kind: ErrorKind::WrongKind,
                ..
            })
        ));
        assert!(matches!(
            decode::<Response>(&unhex("04 0c 00")),
            Ok(Response::Error {
                kind: ErrorKind::Timeout,
                ..
            })
        ));
        match decode::<Response>(&unhex("04 0d 00")) {
            Err(ProtoError::Malformed(m)) => {
                assert!(
                    m.contains("ErrorKind value 13 for Error.kind at byte 1"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        // An Objects reply whose one object has the unknown ObjectInfo variant 2.
        match decode::<Response>(&unhex("06 01 02 00")) {
            Err(ProtoError::Malformed(m)) => {
                assert_eq!(
                    m,
                    "unknown ObjectInfo value 2 for Objects.objects[0] at byte 2 (expected 0 = Array, 1 = Stream)"
                )
            }
            other => panic!("{other:?}"),
        }
        // A Stream reply whose publisher Option tag is 2 (after the "Stream reply" vector's
        // fields up to `path`).
        let all = vectors();
        let (_, _, stream) = all.iter().find(|(n, _, _)| n == "Stream reply").unwrap();
        let path = b"/dev/shm/mmshare-1000/points";
        let at = stream.windows(path.len()).position(|w| w == path).unwrap() + path.len();
        let mut bad = stream.clone();
        assert_eq!(bad[at], 1, "publisher is Some");
        bad[at] = 2;
        match decode::<Response>(&bad) {
            Err(ProtoError::Malformed(m)) => {
                assert!(
                    m.contains(&format!(
                        "Option tag Stream.info.publisher at byte {at} is 0x02"
                    )),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    /// Empty, truncated, over-long and non-minimal encodings each say what is wrong.
    #[test]
    fn encoding_errors_name_the_field_and_offset() {
        assert_eq!(
            malformed(&[]),
            "empty message (0 bytes): a Request starts with its variant index"
        );
        // Stat with a name claiming 2^32-1 bytes.
        let m = malformed(&[3, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(
            m.contains("Stat.name at byte 1 claims 4294967295 bytes, but only 0 bytes follow"),
            "{m}"
        );
        let m = malformed(&[3, 2, 0xc3, 0x28]);
        assert!(m.contains("Stat.name at byte 1 is not UTF-8"), "{m}");
        let m = malformed(&[0, 0x80]);
        assert!(m.contains("ends inside the varint of Hello.version"), "{m}");
        let m = malformed(&[0, 0xff, 0xff, 0xff, 0xff, 0x10, 0]);
        assert!(m.contains("exceeds the u32 range"), "{m}");
        let m = malformed(&[0, 0xff, 0xff, 0xff, 0xff, 0x8f, 0]);
        assert!(m.contains("longer than 5 bytes"), "{m}");
        // Non-minimal: 1 as `81 00`, the variant index 3 as `83 00`, a dimension 0 as `80 00`.
        let m = malformed(&[0, 0x81, 0x00, 0]);
        assert_eq!(
            m,
            "varint of Hello.version at byte 1 (81 00) is not minimal: 1 is encoded as 01"
        );
        let m = malformed(&[0x83, 0x00, 1, b'x']);
        assert!(
            m.contains("Request variant index at byte 0 (83 00) is not minimal"),
            "{m}"
        );
        let m = malformed(&unhex("01 01 78 02 75 31 01 80 00 00 01 80 03 00 00 00"));
        assert!(
            m.contains("Create.shape[0] at byte 7 (80 00) is not minimal"),
            "{m}"
        );
        // Postcard alone accepts that last one; the check is what refuses it.
        assert!(
            postcard::from_bytes::<Request>(&unhex(
                "01 01 78 02 75 31 01 80 00 00 01 80 03 00 00 00"
            ))
            .is_ok()
        );
    }

    /// The layout check and postcard agree on every message: whatever the check accepts
    /// postcard decodes, and whatever postcard refuses the check refuses (the check also
    /// refuses non-minimal varints, which postcard accepts).
    fn check_agrees(bytes: &[u8]) {
        for (checked, decoded) in [
            (
                Request::check(bytes),
                postcard::take_from_bytes::<Request>(bytes).map(|(_, r)| r.is_empty()),
            ),
            (
                Response::check(bytes),
                postcard::take_from_bytes::<Response>(bytes).map(|(_, r)| r.is_empty()),
            ),
        ] {
            match (checked, decoded) {
                (Ok(()), Ok(true)) | (Err(_), Err(_)) | (Err(_), Ok(false)) => {}
                (Ok(()), other) => panic!("check accepted {} but postcard: {other:?}", hex(bytes)),
                (Err(e), Ok(true)) => {
                    assert!(e.contains("not minimal"), "{}: {e}", hex(bytes))
                }
            }
        }
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
            check_agrees(&bytes);
        }

        /// Vectors with one byte changed: the check and postcard agree.
        #[test]
        fn mutated_vectors_agree(index in 0usize..1000, at in 0usize..1000, byte in proptest::num::u8::ANY) {
            let all = vectors();
            let (_, _, mut bytes) = all[index % all.len()].clone();
            let at = at % bytes.len();
            bytes[at] = byte;
            check_agrees(&bytes);
        }
    }
}
