//! mmshare: named N-dimensional arrays in memory-mapped files that several processes, in
//! several languages, read and write without copying, coordinated by a seqlock that lives in the
//! file itself.
//!
//! This crate holds the file format, the element types, the seqlock and the typed handles. A
//! process that has an array file (or a descriptor for one) maps it with [`Array::open`] or
//! [`RawArray::from_file`] and from then on every process works on the same physical pages.
//!
//! ```
//! use mmshare::{create_array_file, Access, Array, ArraySpec, DType};
//! let dir = tempfile::tempdir()?;
//! let (path, _) = create_array_file(dir.path(), &ArraySpec::new("frame", DType::U8, vec![4, 4]))?;
//! let producer = Array::<u8>::open(&path, Access::Write)?;
//! let consumer = Array::<u8>::open(&path, Access::Read)?; // could be another process
//! producer.write_all(&[7; 16])?;
//! let mut frame = [0u8; 16];
//! let snap = consumer.read_into(&mut frame)?;
//! assert_eq!((snap.version, frame), (1, [7; 16]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - `dtype`: element types named as NumPy names them, and the [`Element`] trait.
//! - `record`: record (structured) dtypes, their descr text, and the [`Record`] trait.
//! - `shape`: shapes, memory order, checked byte sizes.
//! - `name`: which array names are allowed (they become file names).
//! - `format`: the v1 file header, byte for byte (docs/FORMAT.md is its prose twin).
//! - `seqlock`: the concurrency protocol, documented first, then its primitives.
//! - `backoff`: how waiting works: spin, yield, then sleep on the shared futex.
//! - `sleepers`: an array's control file, where waiters register so writes wake only sleepers.
//! - `mapping`: the shared mapping and the hazard it carries.
//! - `guard`: the daemon's guard against files truncated under its mappings (SIGBUS).
//! - `raw`: [`RawArray`], byte-level consistent reads and writes, waiting, recovery.
//! - `array`: [`Array<T>`], typed handles, zero-copy views, closure-scoped writes.
//! - `create`: crash-safe creation of array files.
//! - `proto`: the wire protocol (postcard messages; docs/PROTOCOL.md is its prose twin),
//!   public as `internal::proto` for the daemon.
//! - `internal`: what the daemon, the command line and the bindings of the same version use
//!   (the wire protocol, control files, process liveness, diagnostics). No stability promise.
//! - `stream`: streams, rings of frames written and read in place ([`Publisher`],
//!   [`Subscriber`]); the slot protocol is documented there.
//! - `service`: request/response ([`Requester`], [`Server`]), built of streams of several
//!   publishers; its design is documented there.
//! - `client`: the synchronous client of the daemon, and typed handles on what it hands out.
//! - `sys`: the Linux system calls (shared futex, process identity, space reservation).
//! - `error`: typed errors, one per operation.
//! - `fault`: deliberate seqlock faults for tests (compiled out unless `fault-injection`).
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(all(
    target_os = "linux",
    target_endian = "little",
    target_has_atomic = "64"
)))]
compile_error!("mmshare supports little-endian Linux with 64-bit atomics");

mod array;
mod backoff;
pub mod bridge_stats;
mod client;
mod control_file;
mod copy;
mod dtype;
mod error;
mod fault;
mod files;
pub mod format;
mod guard;
#[doc(hidden)]
pub mod internal;
mod name;
mod proto;
mod record;
mod service;
mod shape;
mod stream;
mod sys;
#[cfg(feature = "async")]
mod waiter;

// The user-facing API. The file format's constants and codecs are in [`format`]; what only the
// daemon, the command line and the bindings of the same version use is in `internal`.
pub use array::create::create_array_file;
#[cfg(feature = "async")]
pub use array::raw::Changed;
pub use array::raw::{
    Access, ByteReader, ByteWriter, DEFAULT_TIMEOUT, Finish, RawArray, Recovery, Snapshot,
    WriteSession,
};
pub use array::{Array, ReadView, Region, RegionRanges, RegionView, WriteView};
#[doc(hidden)]
pub use client::PendingWaitFor;
pub use client::{
    Client, ClientError, ConnectOptions, CreateOptions, DEFAULT_REQUEST_TIMEOUT, MAX_WAIT,
    SERVER_UID_ENV, SOCKET_ENV, Shared, StreamOptions, TIMEOUT_ENV, Watch, default_socket_path,
};
pub use dtype::{
    ALL_TIME_UNITS, Bool8, DType, DTypeError, DateTime64, Element, TimeDelta64, TimeUnit, units,
};
pub use error::{
    CreateError, OpenError, ReadError, RegionError, StreamError, WaitTimeout, WriteError,
};
#[cfg(feature = "fault-injection")]
pub use fault::{Fault, fail_step, inject as inject_fault};
pub use format::{ArraySpec, FormatError, MAX_PUBLISHERS, StallPolicy, StreamSpec};
pub use guard::guard_mappings_against_truncation;
pub use half::f16;
/// `#[derive(Record)]`: implements [`Record`] for a `#[repr(C)]` struct (feature `derive`).
#[cfg(feature = "derive")]
pub use mmshare_derive::Record;
pub use name::{MAX_NAME_LEN, NameError, validate_name};
pub use num_complex::Complex;
pub use proto::{
    ArrayInfo, Backing, ErrorKind, ObjectInfo, StreamInfo, SubscriberStat, WatchEvent,
};
pub use record::{
    FieldType, MAX_DESCR_LEN, MAX_FIELD_NAME_LEN, MAX_FIELD_NDIM, MAX_ITEMSIZE, MAX_RECORD_DEPTH,
    MAX_RECORD_FIELDS, Record, RecordField, RecordType,
};
pub use service::{
    CALL_HEADER, Request, RequestMut, RequestToken, Requester, Response, ResponseMut,
    ResponseToken, Server, ServiceError, ServiceInfo, ServiceOptions, request_stream,
    response_stream,
};
#[cfg(feature = "async")]
pub use service::{LoanRequest, RecvRequest, RecvResponse};
pub use shape::{MAX_DATA_LEN, MAX_NDIM, Order, ShapeError, data_len, element_count, parse_shape};
pub use stream::{
    DEFAULT_MAX_HELD, Delivery, LaneStats, LoanToken, MAX_HELD, Publisher, PublisherId, Sample,
    SampleMut, SampleToken, StartAt, StreamFiles, SubscribeOptions, Subscriber, SubscriberInfo,
    create_stream_files, lane_file,
};
#[cfg(feature = "async")]
pub use stream::{LoanAsync, Recv};
pub use sys::{Liveness, ProcessId};
#[cfg(feature = "async")]
pub use waiter::AsyncWait;
