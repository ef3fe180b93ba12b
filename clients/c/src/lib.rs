//! The C API of mmshare: arrays and streams for C and C++ programs, over the same Rust code
//! that Rust and Python programs use, so the seqlock and slot protocols exist once.
//!
//! Conventions (the header, `include/mmshare.h`, is generated from this file by cbindgen):
//! - Every function that can fail returns an `MMS_*` status (`MMS_OK` is 0) and writes its
//!   results through out-pointers only on success. `mms_last_error()` gives the one-line
//!   message of the calling thread's last failure.
//! - No Rust panic crosses the boundary: each entry point runs under `catch_unwind` and a
//!   panic (a bug) becomes `MMS_ERR_INTERNAL` with its message.
//! - Handles are opaque pointers. `*_close` releases what a handle holds and leaves it
//!   usable only for `*_free` (other calls return `MMS_ERR_CLOSED`); `*_free` closes and frees
//!   it (NULL is fine). A NULL handle or out-pointer is `MMS_ERR_INVALID_ARGUMENT`.
//! - A handle is used by one thread at a time (handles are cheap: open one per thread).
//!   Samples may be released from any thread.
//! - Timeouts are in milliseconds: 0 = do not wait, negative = wait without limit.

#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mmshare::{
    Access, ArrayInfo, Backing, Client, ClientError, ConnectOptions, CreateOptions, Delivery,
    ErrorKind, Finish, LoanToken, ObjectInfo, OpenError, Order, Publisher, RawArray, ReadError,
    SampleToken, Shared, StreamError, StreamInfo, StreamOptions, Subscriber, WaitTimeout,
    WriteError, WriteSession,
};

// ---------------------------------------------------------------------------------------------
// Version

/// The version of mmshare this header belongs to (compare with `mms_version()`, the library's,
/// to catch a header and a library of different releases).
pub const MMS_VERSION_MAJOR: c_int = 0;
/// See `MMS_VERSION_MAJOR`.
pub const MMS_VERSION_MINOR: c_int = 1;
/// See `MMS_VERSION_MAJOR`.
pub const MMS_VERSION_PATCH: c_int = 0;
/// The version as one number, MAJOR * 10000 + MINOR * 100 + PATCH, for `#if`.
pub const MMS_VERSION_NUMBER: c_int = 100;

/// The library's version, "MAJOR.MINOR.PATCH" (static; never freed).
#[unsafe(no_mangle)]
pub extern "C" fn mms_version() -> *const c_char {
    VERSION.as_ptr()
}

/// The library's version as `MMS_VERSION_NUMBER` computes it.
#[unsafe(no_mangle)]
pub extern "C" fn mms_version_number() -> c_int {
    version_number(
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    )
}

const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"",
    };

fn version_number(major: &str, minor: &str, patch: &str) -> c_int {
    let n = |s: &str| s.parse::<c_int>().unwrap_or(0);
    n(major) * 10_000 + n(minor) * 100 + n(patch)
}

// ---------------------------------------------------------------------------------------------
// Status codes

/// Success.
pub const MMS_OK: c_int = 0;
/// A NULL pointer, a string that is not UTF-8, a buffer of the wrong length, a bad flag.
pub const MMS_ERR_INVALID_ARGUMENT: c_int = 1;
/// No array or stream of that name.
pub const MMS_ERR_NOT_FOUND: c_int = 2;
/// The name is taken.
pub const MMS_ERR_ALREADY_EXISTS: c_int = 3;
/// Not allowed: the file's permissions, or a write through a read-only handle.
pub const MMS_ERR_PERMISSION: c_int = 4;
/// Nothing came (or no slot freed up) within the timeout.
pub const MMS_ERR_TIMEOUT: c_int = 5;
/// Taken: another publisher is attached, or this handle has a write or loan open already.
pub const MMS_ERR_BUSY: c_int = 6;
/// An array where a stream was expected, or the other way round.
pub const MMS_ERR_WRONG_KIND: c_int = 7;
/// Not the dtype asked for, or not a dtype at all.
pub const MMS_ERR_DTYPE: c_int = 8;
/// The array was left torn by a writer that died mid-write; the bytes were copied anyway.
pub const MMS_ERR_TORN: c_int = 9;
/// The handle was closed.
pub const MMS_ERR_CLOSED: c_int = 10;
/// The daemon could not be reached (is `mmshared` running?).
pub const MMS_ERR_CONNECT: c_int = 11;
/// An I/O error, or a file that is not a valid mmshare file.
pub const MMS_ERR_IO: c_int = 12;
/// The daemon's reply made no sense (another protocol version?).
pub const MMS_ERR_PROTOCOL: c_int = 13;
/// A limit was reached: quota, disk space, subscriber records, samples held at once.
pub const MMS_ERR_QUOTA: c_int = 14;
/// This handle lost its role: another process took over the publisher or the write side,
/// or the subscription was reclaimed.
pub const MMS_ERR_LOST: c_int = 15;
/// A bug (in mmshare or the daemon); the message says where.
pub const MMS_ERR_INTERNAL: c_int = 16;
/// The daemon on the socket runs as another user than expected (the message names both
/// uids); nothing was sent to it. See `mms_connect_as`.
pub const MMS_ERR_WRONG_SERVER: c_int = 17;
/// This process is out of file descriptors: it could not receive the ones the daemon sent.
pub const MMS_ERR_NO_DESCRIPTORS: c_int = 18;

/// Flag for `mms_create_array` / `mms_create_stream`: back it by the daemon's tmpfs directory
/// (RAM speed, gone at reboot) instead of its storage directory.
pub const MMS_CREATE_MEMORY: u32 = 1;
/// Flag: column-major (Fortran) order instead of row-major (C).
pub const MMS_CREATE_ORDER_F: u32 = 2;
/// Flag: an existing object with the same dtype, shape and order is not an error.
pub const MMS_CREATE_EXIST_OK: u32 = 4;
/// Flag for `mms_create_array`: a sparse file, allocated region by region as it is written
/// (only the header at create); a write on a full disk then fails with `MMS_ERR_QUOTA`
/// instead of crashing the writer. For arrays larger than the free disk.
pub const MMS_CREATE_SPARSE: u32 = 8;
/// `mms_create_array`: the stripe count goes in the flags' bits 8..14, as
/// `n << MMS_CREATE_STRIPES_SHIFT`: 0 lets the daemon choose from the size (one lock below 1
/// MiB), 1 is one lock for the whole array, 2 to 32 divide it along its outermost axis into
/// at most that many stripes, each with its own lock, so that writers of different regions
/// (`mms_array_begin_write_region`) run at once.
pub const MMS_CREATE_STRIPES_SHIFT: u32 = 8;
/// The bits of the flags that hold the stripe count.
pub const MMS_CREATE_STRIPES_MASK: u32 = 0x3F << MMS_CREATE_STRIPES_SHIFT;

/// For [`mms_stream_options_set`]: frames in the ring (default 8).
pub const MMS_OPTION_SLOTS: c_int = 1;
/// For [`mms_stream_options_set`]: subscriber records (default 16).
pub const MMS_OPTION_MAX_SUBSCRIBERS: c_int = 2;
/// For [`mms_stream_options_set`]: permission bits (default 0600).
pub const MMS_OPTION_MODE: c_int = 3;
/// For [`mms_stream_options_set`]: the newest frames kept for late subscribers (default 0).
pub const MMS_OPTION_HISTORY: c_int = 4;
/// For [`mms_stream_options_set`]: `MMS_CREATE_*` flags (default 0).
pub const MMS_OPTION_FLAGS: c_int = 5;
/// `mms_stream_options_set`: whether frames vary in length along axis 0 (1) or not (0, the
/// default); the shape is then the largest frame's.
pub const MMS_OPTION_VARIABLE: c_int = 6;
/// `mms_stream_options_set`: how many publishers may publish at once, each in a ring (lane)
/// of its own (1, the default, to 16); subscribers get the frames of all of them.
pub const MMS_OPTION_MAX_PUBLISHERS: c_int = 7;

/// For [`mms_subscribe_from`]: where the subscriber starts by default (the next frame if
/// lossy, frame 0 if lossless).
pub const MMS_START_DEFAULT: c_int = 0;
/// For [`mms_subscribe_from`]: the next frame published.
pub const MMS_START_NEXT: c_int = 1;
/// For [`mms_subscribe_from`]: the oldest frame still offered (the stream's history).
pub const MMS_START_OLDEST: c_int = 2;
/// For [`mms_subscribe_from`]: the frame number given (resuming; the frames from it that are
/// gone are counted as missed).
pub const MMS_START_FRAME: c_int = 3;

/// `mms_info.kind` of an array.
pub const MMS_KIND_ARRAY: c_int = 1;
/// `mms_info.kind` of a stream.
pub const MMS_KIND_STREAM: c_int = 2;

/// The most dimensions an array or frame has.
pub const MMS_MAX_NDIM: usize = 32;
const _: () = assert!(MMS_MAX_NDIM == mmshare::MAX_NDIM);
// `mms_subscribe` documents its default hold count.
const _: () = assert!(mmshare::DEFAULT_MAX_HELD == 2);

/// The longest dtype string, with its terminating NUL.
pub const MMS_DTYPE_LEN: usize = 16;

// ---------------------------------------------------------------------------------------------
// Errors: a status and a message, kept per thread

struct Failure {
    code: c_int,
    message: String,
}

impl Failure {
    fn new(code: c_int, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(MMS_ERR_INVALID_ARGUMENT, message)
    }
}

type Result<T = ()> = std::result::Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message never holds a NUL from us; one from elsewhere is cut there.
    let text = CString::new(message.split('\0').next().unwrap_or_default()).unwrap_or_default();
    // `try_with`: at thread exit (a call from a thread-local destructor) the slot may be gone.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = text);
}

/// Runs an entry point: its status, with the message stored on failure, and a panic turned
/// into `MMS_ERR_INTERNAL` (it never unwinds into C).
fn ffi(f: impl FnOnce() -> Result) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => MMS_OK,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            set_last_error(&format!(
                "internal error in mmshare (a bug, please report it): {what}"
            ));
            MMS_ERR_INTERNAL
        }
    }
}

fn server_code(kind: ErrorKind) -> c_int {
    match kind {
        ErrorKind::NotFound => MMS_ERR_NOT_FOUND,
        ErrorKind::AlreadyExists => MMS_ERR_ALREADY_EXISTS,
        ErrorKind::InvalidName | ErrorKind::InvalidShape => MMS_ERR_INVALID_ARGUMENT,
        ErrorKind::InvalidDtype => MMS_ERR_DTYPE,
        ErrorKind::PermissionDenied => MMS_ERR_PERMISSION,
        ErrorKind::QuotaExceeded | ErrorKind::NoSpace => MMS_ERR_QUOTA,
        ErrorKind::Busy => MMS_ERR_BUSY,
        ErrorKind::WrongKind => MMS_ERR_WRONG_KIND,
        ErrorKind::Timeout => MMS_ERR_TIMEOUT,
        ErrorKind::ProtocolError => MMS_ERR_PROTOCOL,
        ErrorKind::Internal => MMS_ERR_INTERNAL,
        // A kind newer than this binding: none while it is built with the library.
        _ => MMS_ERR_INTERNAL,
    }
}

fn open_code(e: &OpenError) -> c_int {
    match e {
        OpenError::DTypeMismatch { .. } => MMS_ERR_DTYPE,
        _ => MMS_ERR_IO,
    }
}

fn stream_code(e: &StreamError) -> c_int {
    match e {
        StreamError::Open(o) => open_code(o),
        StreamError::WrongKind { .. } => MMS_ERR_WRONG_KIND,
        StreamError::PublisherBusy { .. }
        | StreamError::PublishersFull { .. }
        | StreamError::LoanOutstanding { .. } => MMS_ERR_BUSY,
        StreamError::Lanes { .. } => MMS_ERR_INVALID_ARGUMENT,
        StreamError::PublisherLost { .. }
        | StreamError::SubscriptionLost { .. }
        | StreamError::Evicted { .. } => MMS_ERR_LOST,
        StreamError::NoRecord { .. }
        | StreamError::NoHoldBudget { .. }
        | StreamError::HoldLimit { .. } => MMS_ERR_QUOTA,
        StreamError::BadMaxHeld { .. }
        | StreamError::BadStart { .. }
        | StreamError::LengthMismatch { .. }
        | StreamError::NotWholeRows { .. }
        | StreamError::TooManyRows { .. }
        | StreamError::FixedSize { .. }
        | StreamError::FrameHeader { .. } => MMS_ERR_INVALID_ARGUMENT,
        StreamError::LoanTimeout { .. }
        | StreamError::ReceiveTimeout { .. }
        | StreamError::SubscribersTimeout { .. } => MMS_ERR_TIMEOUT,
        _ => MMS_ERR_IO,
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let code = match &e {
            ClientError::Connect { .. } => MMS_ERR_CONNECT,
            ClientError::WrongServer { .. } => MMS_ERR_WRONG_SERVER,
            ClientError::BadServerUid { .. } | ClientError::BadTimeout { .. } => {
                MMS_ERR_INVALID_ARGUMENT
            }
            ClientError::Timeout { .. } => MMS_ERR_TIMEOUT,
            ClientError::Io(_) => MMS_ERR_IO,
            ClientError::Protocol(_) => MMS_ERR_PROTOCOL,
            ClientError::OutOfDescriptors { .. } => MMS_ERR_NO_DESCRIPTORS,
            ClientError::Server { kind, .. } => server_code(*kind),
            ClientError::Open(o) => open_code(o),
            ClientError::Stream(s) => stream_code(s),
            // An error newer than this binding: none while it is built with the library.
            _ => MMS_ERR_INTERNAL,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<StreamError> for Failure {
    fn from(e: StreamError) -> Failure {
        Failure::new(stream_code(&e), e.to_string())
    }
}

impl From<ReadError> for Failure {
    fn from(e: ReadError) -> Failure {
        let code = match &e {
            ReadError::Torn { .. } => MMS_ERR_TORN,
            ReadError::Timeout { .. } => MMS_ERR_TIMEOUT,
            ReadError::Conflict { .. } => MMS_ERR_BUSY,
            ReadError::OutOfMemory { .. } => MMS_ERR_QUOTA,
            _ => MMS_ERR_INVALID_ARGUMENT,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<WriteError> for Failure {
    fn from(e: WriteError) -> Failure {
        let code = match &e {
            WriteError::ReadOnly => MMS_ERR_PERMISSION,
            WriteError::Timeout { .. } => MMS_ERR_TIMEOUT,
            WriteError::LostWriteSide { .. } => MMS_ERR_LOST,
            WriteError::NotDurable { .. } => MMS_ERR_IO,
            WriteError::NoSpace { .. } => MMS_ERR_QUOTA,
            _ => MMS_ERR_INVALID_ARGUMENT,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<WaitTimeout> for Failure {
    fn from(e: WaitTimeout) -> Failure {
        Failure::new(MMS_ERR_TIMEOUT, e.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments from C

/// `p` as a `&str`; `what` names it in the error.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives the call.
unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Failure::invalid(format!("{what} is not UTF-8")))
}

/// The handle behind `p`, open.
///
/// # Safety
/// `p` is NULL or a live handle of this type from this library, used by this thread only.
unsafe fn live<'a, H: Handle + 'a>(p: *mut H) -> Result<&'a mut H::Inner> {
    if p.is_null() {
        return Err(Failure::invalid(format!("the {} handle is NULL", H::WHAT)));
    }
    // SAFETY: a live handle, ours, not used by another thread meanwhile (the contract).
    match unsafe { (*p).slot() } {
        Some(inner) => Ok(inner),
        None => Err(Failure::new(
            MMS_ERR_CLOSED,
            format!("the {} handle was closed", H::WHAT),
        )),
    }
}

/// Writes `value` through the out-pointer `p`.
///
/// # Safety
/// `p` is NULL or valid for a write of one `T`.
unsafe fn put<T>(p: *mut T, value: T) {
    if !p.is_null() {
        // SAFETY: non-NULL and valid for a write (the contract).
        unsafe { p.write(value) };
    }
}

/// Checks that the out-pointer `p` is not NULL.
fn needed<T>(p: *mut T, what: &str) -> Result {
    if p.is_null() {
        Err(Failure::invalid(format!("{what} is NULL")))
    } else {
        Ok(())
    }
}

/// `ndim` dimensions at `shape`.
///
/// # Safety
/// `shape` is NULL or points at `ndim` readable `u64`s.
unsafe fn dims<'a>(shape: *const u64, ndim: u32) -> Result<&'a [u64]> {
    let n = ndim as usize;
    if n > MMS_MAX_NDIM {
        return Err(Failure::invalid(format!(
            "ndim is {n}; at most {MMS_MAX_NDIM}"
        )));
    }
    if n == 0 {
        return Ok(&[]);
    }
    if shape.is_null() {
        return Err(Failure::invalid(format!("shape is NULL with ndim {n}")));
    }
    // SAFETY: `n` readable values (the contract).
    Ok(unsafe { std::slice::from_raw_parts(shape, n) })
}

/// A timeout in ms: `None` for "no limit" (negative).
fn limit(timeout_ms: i64) -> Option<Duration> {
    u64::try_from(timeout_ms).ok().map(Duration::from_millis)
}

/// Runs `attempt` with the timeout, in hour-long slices while there is no limit.
fn waiting<R, E>(
    timeout_ms: i64,
    mut attempt: impl FnMut(Duration) -> std::result::Result<R, E>,
    is_timeout: impl Fn(&E) -> bool,
) -> std::result::Result<R, E> {
    match limit(timeout_ms) {
        Some(d) => attempt(d),
        None => loop {
            match attempt(Duration::from_secs(3600)) {
                Err(e) if is_timeout(&e) => continue,
                other => return other,
            }
        },
    }
}

/// The stripe count in `mms_create_array`'s flags.
fn stripes_flag(flags: u32) -> Result<u32> {
    let n = (flags & MMS_CREATE_STRIPES_MASK) >> MMS_CREATE_STRIPES_SHIFT;
    if n > 32 {
        return Err(Failure::invalid(format!(
            "{n} stripes asked for (flags {flags:#x}); an array has at most 32"
        )));
    }
    Ok(n)
}

fn create_flags(flags: u32) -> Result<(Backing, Order, bool)> {
    let known = MMS_CREATE_MEMORY | MMS_CREATE_ORDER_F | MMS_CREATE_EXIST_OK;
    if flags & !known != 0 {
        return Err(Failure::invalid(format!(
            "unknown create flags {:#x}",
            flags & !known
        )));
    }
    Ok((
        if flags & MMS_CREATE_MEMORY != 0 {
            Backing::Memory
        } else {
            Backing::File
        },
        if flags & MMS_CREATE_ORDER_F != 0 {
            Order::F
        } else {
            Order::C
        },
        flags & MMS_CREATE_EXIST_OK != 0,
    ))
}

/// An opaque handle: its state while open, `None` once closed. (Each handle type is written
/// out as its own struct, so that cbindgen declares it as an opaque C type.)
trait Handle: Sized {
    type Inner;
    /// The handle's kind, for messages.
    const WHAT: &'static str;
    fn wrap(inner: Option<Self::Inner>) -> Self;
    fn slot(&mut self) -> &mut Option<Self::Inner>;
}

macro_rules! handle {
    ($name:ident, $inner:ty, $what:literal) => {
        impl Handle for $name {
            type Inner = $inner;
            const WHAT: &'static str = $what;
            fn wrap(inner: Option<$inner>) -> Self {
                $name(inner)
            }
            fn slot(&mut self) -> &mut Option<$inner> {
                &mut self.0
            }
        }
    };
}

fn boxed<H: Handle>(inner: H::Inner) -> *mut H {
    Box::into_raw(Box::new(H::wrap(Some(inner))))
}

/// Closes a handle (drops its state).
///
/// # Safety
/// `p` is NULL or a live handle from this library.
unsafe fn close<H: Handle>(p: *mut H) {
    if !p.is_null() {
        // SAFETY: a live handle (the contract).
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { (*p).slot().take() })));
    }
}

/// Frees a handle.
///
/// # Safety
/// `p` is NULL or a live handle from this library, not used after.
unsafe fn free<H: Handle>(p: *mut H) {
    if !p.is_null() {
        // SAFETY: made by `boxed`, freed once (the contract).
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(p) })));
    }
}

// ---------------------------------------------------------------------------------------------
// Messages and names

/// The message of the calling thread's last failure ("" before any); valid until the next
/// failing call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn mms_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// The name of a status ("MMS_ERR_TIMEOUT"), or "MMS_UNKNOWN_STATUS".
#[unsafe(no_mangle)]
pub extern "C" fn mms_status_name(status: c_int) -> *const c_char {
    let name: &'static CStr = match status {
        MMS_OK => c"MMS_OK",
        MMS_ERR_INVALID_ARGUMENT => c"MMS_ERR_INVALID_ARGUMENT",
        MMS_ERR_NOT_FOUND => c"MMS_ERR_NOT_FOUND",
        MMS_ERR_ALREADY_EXISTS => c"MMS_ERR_ALREADY_EXISTS",
        MMS_ERR_PERMISSION => c"MMS_ERR_PERMISSION",
        MMS_ERR_TIMEOUT => c"MMS_ERR_TIMEOUT",
        MMS_ERR_BUSY => c"MMS_ERR_BUSY",
        MMS_ERR_WRONG_KIND => c"MMS_ERR_WRONG_KIND",
        MMS_ERR_DTYPE => c"MMS_ERR_DTYPE",
        MMS_ERR_TORN => c"MMS_ERR_TORN",
        MMS_ERR_CLOSED => c"MMS_ERR_CLOSED",
        MMS_ERR_CONNECT => c"MMS_ERR_CONNECT",
        MMS_ERR_IO => c"MMS_ERR_IO",
        MMS_ERR_PROTOCOL => c"MMS_ERR_PROTOCOL",
        MMS_ERR_QUOTA => c"MMS_ERR_QUOTA",
        MMS_ERR_LOST => c"MMS_ERR_LOST",
        MMS_ERR_INTERNAL => c"MMS_ERR_INTERNAL",
        MMS_ERR_WRONG_SERVER => c"MMS_ERR_WRONG_SERVER",
        MMS_ERR_NO_DESCRIPTORS => c"MMS_ERR_NO_DESCRIPTORS",
        _ => c"MMS_UNKNOWN_STATUS",
    };
    name.as_ptr()
}

// ---------------------------------------------------------------------------------------------
// Descriptions

/// What an array or a stream is (from `mms_stat`, `mms_array_info`).
#[repr(C)]
#[derive(Debug)]
pub struct mms_info {
    /// `MMS_KIND_ARRAY` or `MMS_KIND_STREAM`.
    pub kind: c_int,
    /// NumPy dtype string, NUL-terminated (`"<f4"`, `"|u1"`, `"<M8[ns]"`, ...). A record
    /// (structured) dtype is "|V" and its itemsize here ("|V40"); `mms_stat_descr` and
    /// `mms_array_descr` give its fields.
    pub dtype: [c_char; MMS_DTYPE_LEN],
    /// Dimensions used in `shape` (an array's, or one frame's).
    pub ndim: u32,
    /// The shape; entries past `ndim` are 0.
    pub shape: [u64; MMS_MAX_NDIM],
    /// 'C' (row-major) or 'F' (column-major).
    pub order: c_char,
    /// Byte offset of the data in the file (of the first frame, for a stream).
    pub data_offset: u64,
    /// Bytes of data: the array's, or one frame's.
    pub data_len: u64,
    /// An array's version when described; a stream's frames published so far.
    pub version: u64,
    /// Whether an array was left torn by a writer that died mid-write.
    pub torn: bool,
    /// A stream's slots (0 for an array).
    pub slots: u32,
    /// A stream's subscriber limit (0 for an array).
    pub max_subscribers: u32,
    /// An array's bytes per stripe, each with its own lock (0: one lock for the whole array).
    pub stripe_bytes: u64,
}

fn info_base(
    kind: c_int,
    dtype: &str,
    shape: &[u64],
    order: mmshare::internal::proto::WireOrder,
) -> mms_info {
    let mut info = mms_info {
        kind,
        dtype: [0; MMS_DTYPE_LEN],
        ndim: shape.len() as u32,
        shape: [0; MMS_MAX_NDIM],
        order: if order == mmshare::internal::proto::WireOrder::F {
            b'F' as c_char
        } else {
            b'C' as c_char
        },
        data_offset: 0,
        data_len: 0,
        version: 0,
        torn: false,
        slots: 0,
        max_subscribers: 0,
        stripe_bytes: 0,
    };
    // A record's descr does not fit: its header form (`|V` and the itemsize) always does.
    let short = mmshare::DType::parse(dtype)
        .map_or_else(|_| dtype.to_owned(), |d| d.header_descr().into_owned());
    for (to, from) in info
        .dtype
        .iter_mut()
        .zip(short.bytes().take(MMS_DTYPE_LEN - 1))
    {
        *to = from as c_char;
    }
    for (to, from) in info.shape.iter_mut().zip(shape) {
        *to = *from;
    }
    info
}

fn array_info(a: &ArrayInfo) -> mms_info {
    let mut info = info_base(MMS_KIND_ARRAY, &a.dtype, &a.shape, a.order);
    info.data_offset = a.data_offset;
    info.data_len = a.data_len;
    info.version = a.version;
    info.torn = a.torn;
    info.stripe_bytes = a.stripe_bytes;
    info
}

fn stream_info(s: &StreamInfo) -> mms_info {
    let mut info = info_base(MMS_KIND_STREAM, &s.dtype, &s.shape, s.order);
    info.data_offset = s.data_offset;
    info.data_len = s.frame_len;
    info.version = s.published;
    info.slots = s.slots;
    info.max_subscribers = s.max_subscribers;
    info
}

// ---------------------------------------------------------------------------------------------
// The client

/// A connection to the daemon.
#[derive(Debug)]
pub struct mms_client(Option<Client>);
handle!(mms_client, Client, "client");

/// Connects to the daemon at `socket_path`, or (NULL) at the default socket
/// (`$MMSHARE_SOCKET`, else `$XDG_RUNTIME_DIR/mmshare/mmshared.sock`, else
/// `/tmp/mmshare-$UID/mmshared.sock`). The daemon on the default socket must run as this user
/// or root (`MMS_ERR_WRONG_SERVER` otherwise); `$MMSHARE_SERVER_UID` names another uid to
/// accept, and applies to a named `socket_path` too.
///
/// # Safety
/// `socket_path` is NULL or a NUL-terminated string; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_connect(
    socket_path: *const c_char,
    out: *mut *mut mms_client,
) -> c_int {
    ffi(|| {
        needed(out, "out")?;
        // SAFETY: NULL or NUL-terminated (the contract).
        let options = unsafe { connect_options(socket_path) }?;
        let client = Client::connect_with(&options)?;
        // SAFETY: checked non-NULL; valid for a write (the contract).
        unsafe { put(out, boxed(client)) };
        Ok(())
    })
}

/// Connects like `mms_connect`, to a daemon that must run as `server_uid` (or root):
/// another uid is refused with `MMS_ERR_WRONG_SERVER` before anything is sent, and
/// `mms_last_error()` names both uids. For a daemon that another user runs on purpose.
///
/// # Safety
/// `socket_path` is NULL or a NUL-terminated string; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_connect_as(
    socket_path: *const c_char,
    server_uid: u32,
    out: *mut *mut mms_client,
) -> c_int {
    ffi(|| {
        needed(out, "out")?;
        // SAFETY: NULL or NUL-terminated (the contract).
        let options = unsafe { connect_options(socket_path) }?.server_uid(server_uid);
        let client = Client::connect_with(&options)?;
        // SAFETY: checked non-NULL; valid for a write (the contract).
        unsafe { put(out, boxed(client)) };
        Ok(())
    })
}

/// Connects like `mms_connect`, as the arguments say: `server_uid` the uid the daemon must run
/// as (or root), or -1 for the default check; `timeout_ms` how long to wait for the daemon to
/// accept the connection and to answer each request (`MMS_ERR_TIMEOUT` after it), 0 for no
/// limit, or -1 for the default (`$MMSHARE_TIMEOUT` in seconds if set, else 10 seconds).
///
/// # Safety
/// `socket_path` is NULL or a NUL-terminated string; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_connect_with(
    socket_path: *const c_char,
    server_uid: i64,
    timeout_ms: i64,
    out: *mut *mut mms_client,
) -> c_int {
    ffi(|| {
        needed(out, "out")?;
        // SAFETY: NULL or NUL-terminated (the contract).
        let mut options = unsafe { connect_options(socket_path) }?;
        match server_uid {
            -1 => {}
            uid => {
                let uid = u32::try_from(uid).map_err(|_| {
                    Failure::new(
                        MMS_ERR_INVALID_ARGUMENT,
                        format!("server_uid {uid} is not a uid (0 .. 2^32-1) or -1"),
                    )
                })?;
                options = options.server_uid(uid);
            }
        }
        match timeout_ms {
            -1 => {}
            ms => {
                let ms = u64::try_from(ms).map_err(|_| {
                    Failure::new(
                        MMS_ERR_INVALID_ARGUMENT,
                        format!("timeout_ms {ms} is negative (0: no limit, -1: the default)"),
                    )
                })?;
                options = options.timeout(std::time::Duration::from_millis(ms));
            }
        }
        let client = Client::connect_with(&options)?;
        // SAFETY: checked non-NULL; valid for a write (the contract).
        unsafe { put(out, boxed(client)) };
        Ok(())
    })
}

/// The default socket for NULL, else the named one.
///
/// # Safety
/// `socket_path` is NULL or a NUL-terminated string.
unsafe fn connect_options(socket_path: *const c_char) -> Result<ConnectOptions> {
    if socket_path.is_null() {
        Ok(ConnectOptions::default_socket())
    } else {
        // SAFETY: NUL-terminated (the contract).
        Ok(ConnectOptions::new(unsafe {
            text(socket_path, "socket_path")
        }?))
    }
}

/// Closes the connection (arrays and streams opened through it stay usable).
///
/// # Safety
/// `client` is NULL or a live client handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_client_close(client: *mut mms_client) {
    // SAFETY: the contract.
    unsafe { close(client) }
}

/// Closes and frees the client handle.
///
/// # Safety
/// `client` is NULL or a live client handle, not used after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_client_free(client: *mut mms_client) {
    // SAFETY: the contract.
    unsafe { free(client) }
}

/// Describes the array or stream `name`.
///
/// # Safety
/// `client` is a live client handle; `name` a NUL-terminated string; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_stat(
    client: *mut mms_client,
    name: *const c_char,
    out: *mut mms_info,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let c = unsafe { live(client) }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let name = unsafe { text(name, "name") }?;
        needed(out, "out")?;
        let info = match c.describe(name)? {
            ObjectInfo::Array(a) => array_info(&a),
            ObjectInfo::Stream(s) => stream_info(&s),
        };
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(out, info) };
        Ok(())
    })
}

/// Copies `descr` into `buf` (`cap` bytes; NUL-terminated, cut short if it does not fit; `buf`
/// may be NULL when `cap` is 0) and its full length (without the NUL) into `len` (may be
/// NULL).
///
/// # Safety
/// `buf` is NULL or valid for `cap` bytes of writes; `len` NULL or valid for a write.
unsafe fn put_text(descr: &str, buf: *mut c_char, cap: usize, len: *mut usize) -> Result {
    if cap > 0 {
        needed(buf, "buf")?;
        let n = descr.len().min(cap - 1);
        // SAFETY: `buf` is valid for `cap > n` bytes (the contract); `descr` for `n` reads;
        // they do not overlap (one is the caller's, the other ours).
        unsafe {
            std::ptr::copy_nonoverlapping(descr.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    if !len.is_null() {
        // SAFETY: valid for a write (the contract).
        unsafe { *len = descr.len() };
    }
    Ok(())
}

/// The full NumPy descr of the dtype of array or stream `name`: the same string as
/// `mms_info.dtype` for a plain dtype, the field list for a record ("[('x', '<f4'), ('', '|V4'),
/// ('id', '<u8')]", every offset and the itemsize implied by the order and the unnamed `|Vn`
/// padding, as NumPy's `dtype.descr` writes it; at most 16384 bytes). Written into `buf`
/// (`cap` bytes, NUL-terminated, cut short if it does not fit: compare `*len` with `cap`);
/// `*len` gets its full length without the NUL (`len` may be NULL).
///
/// # Safety
/// `client` is a live client handle; `name` a NUL-terminated string; `buf` NULL (with `cap`
/// 0) or valid for `cap` bytes; `len` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_stat_descr(
    client: *mut mms_client,
    name: *const c_char,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let c = unsafe { live(client) }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let name = unsafe { text(name, "name") }?;
        let descr = match c.describe(name)? {
            ObjectInfo::Array(a) => a.dtype,
            ObjectInfo::Stream(s) => s.dtype,
        };
        // SAFETY: as the contract says.
        unsafe { put_text(&descr, buf, cap, len) }
    })
}

/// Deletes the array or stream `name` (processes that have it mapped keep working).
///
/// # Safety
/// `client` is a live client handle; `name` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_delete(client: *mut mms_client, name: *const c_char) -> c_int {
    ffi(|| {
        // SAFETY: the contract above.
        let c = unsafe { live(client) }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let name = unsafe { text(name, "name") }?;
        c.delete(name)?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Arrays

/// The open state of an array handle.
#[derive(Debug)]
pub struct ArrayState {
    array: Shared<RawArray>,
    session: Option<WriteSession>,
}

/// An array mapped into this process.
#[derive(Debug)]
pub struct mms_array(Option<ArrayState>);
handle!(mms_array, ArrayState, "array");

/// Creates the array `name` (`dtype` a NumPy dtype string such as "<f4"; `ndim` dimensions at
/// `shape`; `flags` from `MMS_CREATE_*`; `mode` the permission bits, 0 for 0600) and, if `out`
/// is not NULL, opens it for writing.
///
/// # Safety
/// `client` is a live client handle; `name` and `dtype` NUL-terminated strings; `shape`
/// points at `ndim` values; `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_create_array(
    client: *mut mms_client,
    name: *const c_char,
    dtype: *const c_char,
    ndim: u32,
    shape: *const u64,
    flags: u32,
    mode: u32,
    out: *mut *mut mms_array,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let c = unsafe { live(client) }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let name = unsafe { text(name, "name") }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let dtype = unsafe { text(dtype, "dtype") }?;
        // SAFETY: NULL or `ndim` readable values (the contract).
        let shape = unsafe { dims(shape, ndim) }?;
        let stripes = stripes_flag(flags)?;
        let sparse = flags & MMS_CREATE_SPARSE != 0;
        let (backing, order, exist_ok) =
            create_flags(flags & !(MMS_CREATE_STRIPES_MASK | MMS_CREATE_SPARSE))?;
        let mut options = CreateOptions::new(name, dtype, shape)
            .order(order)
            .exist_ok(exist_ok)
            .stripes(stripes)
            .sparse(sparse)
            .mode(if mode == 0 { 0o600 } else { mode });
        if backing == Backing::Memory {
            options = options.memory();
        }
        let array = opened(c.create(&options)?);
        if out.is_null() {
            // Created only: the mapping (and its writer's lease) goes now.
            drop(array);
            return Ok(());
        }
        // SAFETY: checked non-NULL; valid for a write (the contract).
        unsafe {
            put(
                out,
                boxed(ArrayState {
                    array,
                    session: None,
                }),
            )
        };
        Ok(())
    })
}

/// Opens the array `name` for reading (`writable` 0) or writing. If `dtype` is not NULL the
/// array must have that dtype (else `MMS_ERR_DTYPE`).
///
/// # Safety
/// `client` is a live client handle; `name` a NUL-terminated string; `dtype` NULL or one;
/// `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_open_array(
    client: *mut mms_client,
    name: *const c_char,
    dtype: *const c_char,
    writable: bool,
    out: *mut *mut mms_array,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let c = unsafe { live(client) }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let name = unsafe { text(name, "name") }?;
        needed(out, "out")?;
        let access = if writable {
            Access::Write
        } else {
            Access::Read
        };
        let array = opened(c.open_raw(name, access)?);
        if !dtype.is_null() {
            // SAFETY: NULL or a NUL-terminated string (the contract).
            let want = unsafe { text(dtype, "dtype") }?;
            let have = &array.info().dtype;
            if want != have {
                return Err(Failure::new(
                    MMS_ERR_DTYPE,
                    format!("array {name} holds {have}, not {want}"),
                ));
            }
        }
        // SAFETY: NULL or valid for a write (the contract).
        unsafe {
            put(
                out,
                boxed(ArrayState {
                    array,
                    session: None,
                }),
            )
        };
        Ok(())
    })
}

/// Describes the array (`version` is the current one).
///
/// # Safety
/// `array` is a live array handle; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_info(array: *mut mms_array, out: *mut mms_info) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let a = unsafe { live(array) }?;
        needed(out, "out")?;
        let mut info = array_info(a.array.info());
        info.version = a.array.version();
        info.torn = a.array.is_torn();
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(out, info) };
        Ok(())
    })
}

/// The full NumPy descr of the array's dtype, as `mms_stat_descr` gives it.
///
/// # Safety
/// `array` is a live array handle; `buf` NULL (with `cap` 0) or valid for `cap` bytes; `len`
/// NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_descr(
    array: *mut mms_array,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let a = unsafe { live(array) }?;
        // SAFETY: as the contract says.
        unsafe { put_text(&a.array.info().dtype, buf, cap, len) }
    })
}

/// How long reads and writes wait for a writer (10 s unless set); negative: no limit.
///
/// # Safety
/// `array` is a live array handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_set_timeout(array: *mut mms_array, timeout_ms: i64) -> c_int {
    ffi(|| {
        // SAFETY: the contract above.
        let a = unsafe { live(array) }?;
        let d = limit(timeout_ms).unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
        a.array.handle_mut().set_timeout(d);
        Ok(())
    })
}

/// An array as the C API keeps it: a read of a torn array copies the bytes and reports it
/// (`MMS_ERR_TORN`) rather than refusing.
fn opened(mut array: Shared<RawArray>) -> Shared<RawArray> {
    array.handle_mut().set_accept_torn(true);
    array
}

/// Refuses to read or wait through a handle whose own write is open: it would wait for
/// itself.
fn no_open_write(a: &ArrayState) -> Result {
    if a.session.is_some() {
        return Err(Failure::new(
            MMS_ERR_BUSY,
            "this handle has a write open (mms_array_begin_write): commit or abort it first",
        ));
    }
    Ok(())
}

fn whole(a: &ArrayState, len: usize, what: &str) -> Result {
    let want = a.array.header().data_len;
    if len as u64 != want {
        return Err(Failure::invalid(format!(
            "{what} is {len} bytes; the array holds {want}"
        )));
    }
    Ok(())
}

/// A consistent copy of the whole array into `dst` (`len` must be its data length); its
/// version goes to `version` (may be NULL). `MMS_ERR_TORN`: a writer died mid-write; the
/// bytes were copied and are what it left.
///
/// # Safety
/// `array` is a live array handle; `dst` valid for `len` bytes of writes; `version` NULL or
/// valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_read(
    array: *mut mms_array,
    dst: *mut c_void,
    len: usize,
    version: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let a = unsafe { live(array) }?;
        needed(dst, "dst")?;
        whole(a, len, "dst")?;
        no_open_write(a)?;
        // SAFETY: checked non-NULL; valid for `len` bytes of writes (the contract).
        let buf = unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>(), len) };
        let snapshot = a.array.read_bytes(0, buf)?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(version, snapshot.version) };
        if snapshot.torn {
            return Err(Failure::new(
                MMS_ERR_TORN,
                format!(
                    "array {} is torn (a writer died mid-write at version {}); the bytes were copied as it left them",
                    a.array.info().name,
                    snapshot.version
                ),
            ));
        }
        Ok(())
    })
}

/// Writes the whole array from `src` (`len` must be its data length) under the seqlock; the
/// new version goes to `version` (may be NULL).
///
/// # Safety
/// `array` is a live array handle; `src` valid for `len` bytes of reads; `version` NULL or
/// valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_write(
    array: *mut mms_array,
    src: *const c_void,
    len: usize,
    version: *mut u64,
) -> c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe { write_whole(array, src, len, version, false) }
}

/// Writes the whole array from `src` as `mms_array_write` does, **durably**: when it returns
/// `MMS_OK` the new version is on disk, and a machine crash before that leaves the array either
/// at the old version or marked torn at the next open, never a committed version next to
/// half-written data (the header is synced as mid-write before the data, the data before the
/// commit, the commit after it: three `msync`s). `MMS_ERR_IO` when a sync fails: the version
/// may be published but not on disk.
///
/// # Safety
/// As `mms_array_write`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_write_durable(
    array: *mut mms_array,
    src: *const c_void,
    len: usize,
    version: *mut u64,
) -> c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe { write_whole(array, src, len, version, true) }
}

/// `mms_array_write` and `mms_array_write_durable`.
///
/// # Safety
/// As `mms_array_write`.
unsafe fn write_whole(
    array: *mut mms_array,
    src: *const c_void,
    len: usize,
    version: *mut u64,
    durable: bool,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let a = unsafe { live(array) }?;
        if src.is_null() {
            return Err(Failure::invalid("src is NULL"));
        }
        whole(a, len, "src")?;
        if a.session.is_some() {
            return Err(Failure::new(
                MMS_ERR_BUSY,
                "this handle has a write open (mms_array_begin_write): commit or abort it first",
            ));
        }
        // SAFETY: checked non-NULL; valid for `len` bytes of reads (the contract).
        let buf = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), len) };
        let v = if durable {
            a.array.write_bytes_durable(0, buf)?
        } else {
            a.array.write_bytes(0, buf)?
        };
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(version, v) };
        Ok(())
    })
}

/// Starts a write in place: takes the write side and gives the data's first byte (`data`)
/// and length (`len`); readers wait (or retry) until `mms_array_commit` or
/// `mms_array_abort`. Write only there, only until then.
///
/// # Safety
/// `array` is a live array handle; `data` and `len` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_begin_write(
    array: *mut mms_array,
    data: *mut *mut c_void,
    len: *mut usize,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let a = unsafe { live(array) }?;
        needed(data, "data")?;
        needed(len, "len")?;
        if a.session.is_some() {
            return Err(Failure::new(
                MMS_ERR_BUSY,
                "this handle has a write open already: commit or abort it first",
            ));
        }
        let session = a.array.begin_write()?;
        let n = a.array.header().data_len as usize;
        a.session = Some(session);
        // SAFETY: NULL or valid for a write (the contract).
        unsafe {
            put(data, a.array.data_ptr().cast::<c_void>());
            put(len, n);
        }
        Ok(())
    })
}

/// The region `nranges` ranges give: rows `starts[k]..ends[k]` of axis `k` for each leading
/// axis `k` (axes past `nranges` are whole).
///
/// # Safety
/// `starts` and `ends` NULL (with `nranges` 0) or valid for `nranges` reads.
unsafe fn region_of(
    a: &ArrayState,
    nranges: u32,
    starts: *const u64,
    ends: *const u64,
) -> Result<mmshare::Region> {
    // SAFETY: NULL (with 0) or `nranges` readable values (the contract).
    let starts = unsafe { dims(starts, nranges) }?;
    // SAFETY: as above.
    let ends = unsafe { dims(ends, nranges) }?;
    let ranges: Vec<std::ops::Range<u64>> = starts.iter().zip(ends).map(|(&s, &e)| s..e).collect();
    a.array
        .region(&ranges[..])
        .map_err(|e| Failure::invalid(e.to_string()))
}

/// A consistent copy of a region of the array into `dst`: rows `starts[k]..ends[k]` of each
/// leading axis `k < nranges` (the other axes whole), its elements in the array's memory
/// order (`len` must be their size in bytes). In an array with stripes only the region's
/// stripes are validated, so writes elsewhere do not make it retry or wait. The version goes
/// to `version` (may be NULL); `MMS_ERR_TORN`: one of the region's stripes was left torn (the
/// bytes were copied as they are).
///
/// # Safety
/// `array` is a live array handle; `starts`, `ends` valid for `nranges` reads; `dst` valid
/// for `len` bytes of writes; `version` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_read_region(
    array: *mut mms_array,
    nranges: u32,
    starts: *const u64,
    ends: *const u64,
    dst: *mut c_void,
    len: usize,
    version: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let a = unsafe { live(array) }?;
        // SAFETY: the contract, passed on.
        let region = unsafe { region_of(a, nranges, starts, ends) }?;
        no_open_write(a)?;
        if region.byte_len() != len as u64 {
            return Err(Failure::invalid(format!(
                "dst is {len} bytes; the region holds {}",
                region.byte_len()
            )));
        }
        let buf: &mut [u8] = if len == 0 {
            &mut []
        } else {
            needed(dst, "dst")?;
            // SAFETY: checked non-NULL; valid for `len` bytes of writes (the contract).
            unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>(), len) }
        };
        let snapshot = a.array.read_region_bytes(&region, buf)?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(version, snapshot.version) };
        if snapshot.torn {
            return Err(Failure::new(
                MMS_ERR_TORN,
                format!(
                    "a stripe of this region of array {} is torn (a writer died mid-write; version {}); the bytes were copied as it left them",
                    a.array.info().name,
                    snapshot.version
                ),
            ));
        }
        Ok(())
    })
}

/// Writes a region of the array (as `mms_array_read_region` names it) from `src`, its
/// elements in the array's memory order (`len` bytes, the region's size), and publishes; it
/// clears the torn mark of the stripes the region replaces whole. In an array with stripes
/// only the region's stripes are taken: writers of other regions write at the same time.
/// The new version goes to `version` (may be NULL).
///
/// # Safety
/// `array` is a live array handle; `starts`, `ends` valid for `nranges` reads; `src` valid
/// for `len` bytes of reads; `version` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_write_region(
    array: *mut mms_array,
    nranges: u32,
    starts: *const u64,
    ends: *const u64,
    src: *const c_void,
    len: usize,
    version: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let a = unsafe { live(array) }?;
        // SAFETY: the contract, passed on.
        let region = unsafe { region_of(a, nranges, starts, ends) }?;
        no_open_write(a)?;
        if region.byte_len() != len as u64 {
            return Err(Failure::invalid(format!(
                "src is {len} bytes; the region holds {}",
                region.byte_len()
            )));
        }
        let buf: &[u8] = if len == 0 {
            &[]
        } else {
            needed(src.cast_mut(), "src")?;
            // SAFETY: checked non-NULL; valid for `len` bytes of reads (the contract).
            unsafe { std::slice::from_raw_parts(src.cast::<u8>(), len) }
        };
        let v = a.array.write_region_bytes(&region, buf)?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(version, v) };
        Ok(())
    })
}

/// Starts a write in place of a region only (as `mms_array_read_region` names it): takes the
/// write side of the region's stripes (of the whole array if it has one lock), and gives the
/// data's first byte (`data`) and length (`len`), as `mms_array_begin_write` does. Write only
/// inside the region, only until `mms_array_commit` or `mms_array_abort`; writers of other
/// stripes write meanwhile, and readers of other stripes do not wait.
///
/// # Safety
/// `array` is a live array handle; `starts`, `ends` valid for `nranges` reads; `data` and
/// `len` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_begin_write_region(
    array: *mut mms_array,
    nranges: u32,
    starts: *const u64,
    ends: *const u64,
    data: *mut *mut c_void,
    len: *mut usize,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let a = unsafe { live(array) }?;
        // SAFETY: the contract, passed on.
        let region = unsafe { region_of(a, nranges, starts, ends) }?;
        needed(data, "data")?;
        needed(len, "len")?;
        if a.session.is_some() {
            return Err(Failure::new(
                MMS_ERR_BUSY,
                "this handle has a write open already: commit or abort it first",
            ));
        }
        let session = a.array.begin_write_region(&region)?;
        let n = a.array.header().data_len as usize;
        a.session = Some(session);
        // SAFETY: NULL or valid for a write (the contract).
        unsafe {
            put(data, a.array.data_ptr().cast::<c_void>());
            put(len, n);
        }
        Ok(())
    })
}

/// The stamp of a region (as `mms_array_read_region` names it) into `stamp`: a number that
/// grows with every write published to the region; in an array with stripes, writes
/// elsewhere leave it (with one lock it is the version). Take it before reading the region,
/// then `mms_array_wait_region` with it: no change is missed.
///
/// # Safety
/// `array` is a live array handle; `starts`, `ends` valid for `nranges` reads; `stamp`
/// valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_region_stamp(
    array: *mut mms_array,
    nranges: u32,
    starts: *const u64,
    ends: *const u64,
    stamp: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let a = unsafe { live(array) }?;
        // SAFETY: the contract, passed on.
        let region = unsafe { region_of(a, nranges, starts, ends) }?;
        needed(stamp, "stamp")?;
        // SAFETY: checked non-NULL; valid for a write (the contract).
        unsafe { put(stamp, a.array.region_stamp(&region)) };
        Ok(())
    })
}

/// Waits (at most `timeout_ms`; negative: no limit) until the region's stamp is above
/// `newer_than` (`mms_array_region_stamp`); the new stamp goes to `stamp` (may be NULL). In an
/// array with stripes, writes elsewhere do not end the wait.
///
/// # Safety
/// `array` is a live array handle; `starts`, `ends` valid for `nranges` reads; `stamp` NULL
/// or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_wait_region(
    array: *mut mms_array,
    nranges: u32,
    starts: *const u64,
    ends: *const u64,
    newer_than: u64,
    timeout_ms: i64,
    stamp: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let a = unsafe { live(array) }?;
        // SAFETY: the contract, passed on.
        let region = unsafe { region_of(a, nranges, starts, ends) }?;
        no_open_write(a)?;
        let v = waiting(
            timeout_ms,
            |d| a.array.wait_for_region(&region, newer_than, d),
            |_| true,
        )?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(stamp, v) };
        Ok(())
    })
}

/// Publishes the write started by `mms_array_begin_write`; the new version goes to
/// `version` (may be NULL).
///
/// # Safety
/// `array` is a live array handle; `version` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_commit(array: *mut mms_array, version: *mut u64) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let a = unsafe { live(array) }?;
        let Some(session) = a.session.take() else {
            return Err(Failure::invalid(
                "no write is open on this handle (mms_array_begin_write)",
            ));
        };
        let v = a.array.finish_write(session, Finish::Complete)?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(version, v) };
        Ok(())
    })
}

/// Ends the write started by `mms_array_begin_write` without a complete new value: the array
/// is marked torn (readers see `MMS_ERR_TORN`) until the next complete write.
///
/// # Safety
/// `array` is a live array handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_abort(array: *mut mms_array) -> c_int {
    ffi(|| {
        // SAFETY: the contract above.
        let a = unsafe { live(array) }?;
        let Some(session) = a.session.take() else {
            return Err(Failure::invalid(
                "no write is open on this handle (mms_array_begin_write)",
            ));
        };
        a.array.finish_write(session, Finish::Torn)?;
        Ok(())
    })
}

/// Waits until the array's version is above `newer_than` (at most `timeout_ms`); the version
/// goes to `version` (may be NULL). No system call while versions are already newer.
///
/// # Safety
/// `array` is a live array handle; `version` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_wait(
    array: *mut mms_array,
    newer_than: u64,
    timeout_ms: i64,
    version: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let a = unsafe { live(array) }?;
        no_open_write(a)?;
        let v = waiting(
            timeout_ms,
            |d| a.array.wait_for_version(newer_than, d),
            |_| true,
        )?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(version, v) };
        Ok(())
    })
}

/// Closes the array (a write left open is aborted: the array is marked torn).
///
/// # Safety
/// `array` is NULL or a live array handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_close(array: *mut mms_array) {
    if !array.is_null() {
        // SAFETY: a live handle (the contract).
        if let Some(a) = unsafe { (*array).slot() }
            && let Some(session) = a.session.take()
        {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                a.array.finish_write(session, Finish::Torn)
            }));
        }
    }
    // SAFETY: the contract.
    unsafe { close(array) }
}

/// Closes and frees the array handle.
///
/// # Safety
/// `array` is NULL or a live array handle, not used after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_array_free(array: *mut mms_array) {
    // SAFETY: the contract.
    unsafe {
        mms_array_close(array);
        free(array);
    }
}

// ---------------------------------------------------------------------------------------------
// Streams: creating, publishing

/// Creates the stream `name`: `slots` frames (0: 8) of `dtype` and the frame shape (`ndim`
/// dimensions at `shape`), for at most `max_subscribers` (0: 16) subscribers at once; `flags`
/// from `MMS_CREATE_*`, `mode` the permission bits (0: 0600).
///
/// # Safety
/// `client` is a live client handle; `name` and `dtype` NUL-terminated strings; `shape`
/// points at `ndim` values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_create_stream(
    client: *mut mms_client,
    name: *const c_char,
    dtype: *const c_char,
    ndim: u32,
    shape: *const u64,
    slots: u32,
    max_subscribers: u32,
    flags: u32,
    mode: u32,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let c = unsafe { live(client) }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let name = unsafe { text(name, "name") }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let dtype = unsafe { text(dtype, "dtype") }?;
        // SAFETY: NULL or `ndim` readable values (the contract).
        let shape = unsafe { dims(shape, ndim) }?;
        let (backing, order, exist_ok) = create_flags(flags)?;
        let mut options = StreamOptions::new(name, dtype, shape)
            .order(order)
            .exist_ok(exist_ok)
            .mode(if mode == 0 { 0o600 } else { mode });
        if slots != 0 {
            options = options.slots(slots);
        }
        if max_subscribers != 0 {
            options = options.max_subscribers(max_subscribers);
        }
        if backing == Backing::Memory {
            options = options.memory();
        }
        c.create_stream(&options)?;
        Ok(())
    })
}

/// What [`mms_create_stream_with`] creates: a stream's name, dtype and frame shape, and the
/// ring's settings, set one by one (so that settings added later need no new function).
#[derive(Debug)]
pub struct mms_stream_options(Option<StreamOptions>);
handle!(mms_stream_options, StreamOptions, "stream options");

/// New stream options: `name`, `dtype` and the frame shape (`ndim` dimensions at `shape`), 8
/// slots, 16 subscribers, file-backed, C order, mode 0600, no history. Free with
/// [`mms_stream_options_free`].
///
/// # Safety
/// `name` and `dtype` are NUL-terminated strings; `shape` points at `ndim` values; `out` is
/// valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_stream_options_new(
    name: *const c_char,
    dtype: *const c_char,
    ndim: u32,
    shape: *const u64,
    out: *mut *mut mms_stream_options,
) -> c_int {
    ffi(|| {
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let name = unsafe { text(name, "name") }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let dtype = unsafe { text(dtype, "dtype") }?;
        // SAFETY: NULL or `ndim` readable values (the contract).
        let shape = unsafe { dims(shape, ndim) }?;
        needed(out, "out")?;
        let options = StreamOptions::new(name, dtype, shape);
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(out, boxed(options)) };
        Ok(())
    })
}

/// Sets one of the options: `slots` (frames in the ring), `max_subscribers`, `mode`
/// (permission bits), `history` (the newest frames kept for late subscribers, at most
/// `slots - 2`), `flags` (`MMS_CREATE_*`), `variable` (frames that vary in length: 1),
/// `max_publishers` (publishers at once, one ring each: 1 to 16).
///
/// # Safety
/// `options` is a live options handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_stream_options_set(
    options: *mut mms_stream_options,
    what: c_int,
    value: u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let o = unsafe { live(options) }?;
        let small = || {
            u32::try_from(value)
                .map_err(|_| Failure::invalid(format!("the value {value} does not fit in 32 bits")))
        };
        let taken = std::mem::replace(o, StreamOptions::new("", "", &[]));
        *o = match what {
            MMS_OPTION_SLOTS => taken.slots(small()?),
            MMS_OPTION_MAX_SUBSCRIBERS => taken.max_subscribers(small()?),
            MMS_OPTION_MODE => taken.mode(small()?),
            MMS_OPTION_HISTORY => taken.history(small()?),
            MMS_OPTION_VARIABLE => taken.variable(value != 0),
            MMS_OPTION_MAX_PUBLISHERS => taken.max_publishers(small()?),
            MMS_OPTION_FLAGS => {
                let (backing, order, exist_ok) = create_flags(small()?)?;
                let t = taken.order(order).exist_ok(exist_ok);
                if backing == Backing::Memory {
                    t.memory()
                } else {
                    t
                }
            }
            other => {
                *o = taken;
                return Err(Failure::invalid(format!("{other} is not an MMS_OPTION_*")));
            }
        };
        Ok(())
    })
}

/// Gives every frame a header of `dtype` (a dtype string; a record's descr list included):
/// written through `mms_publisher_header` in a loan, read with `mms_sample_header`.
///
/// # Safety
/// `options` is a live options handle; `dtype` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_stream_options_set_header(
    options: *mut mms_stream_options,
    dtype: *const c_char,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let o = unsafe { live(options) }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let dtype = unsafe { text(dtype, "dtype") }?;
        o.header = Some(dtype.to_owned());
        Ok(())
    })
}

/// Frees stream options.
///
/// # Safety
/// `options` is NULL or a live options handle, not used after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_stream_options_free(options: *mut mms_stream_options) {
    // SAFETY: the contract.
    unsafe { free(options) }
}

/// Creates the stream `options` describe.
///
/// # Safety
/// `client` is a live client handle; `options` a live options handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_create_stream_with(
    client: *mut mms_client,
    options: *mut mms_stream_options,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let c = unsafe { live(client) }?;
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let o = unsafe { live(options) }?;
        c.create_stream(o)?;
        Ok(())
    })
}

/// Waits until an array or a stream named `name` exists (and this user may read it), at most
/// `timeout_ms` (`MMS_ERR_TIMEOUT` then): the daemon answers when it creates it.
///
/// # Safety
/// `client` is a live client handle; `name` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_wait_for(
    client: *mut mms_client,
    name: *const c_char,
    timeout_ms: i64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let c = unsafe { live(client) }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let name = unsafe { text(name, "name") }?;
        // A negative timeout: as long as it takes (a day at a time).
        waiting(
            timeout_ms,
            |d| c.wait_for(name, d),
            |e| e.kind() == Some(mmshare::ErrorKind::Timeout),
        )?;
        Ok(())
    })
}

/// The open state of a publisher handle.
#[derive(Debug)]
pub struct PublisherState {
    publisher: Publisher<u8>,
    loan: Option<LoanToken>,
}

/// The publishing side of a stream (one per stream at a time).
#[derive(Debug)]
pub struct mms_publisher(Option<PublisherState>);
handle!(mms_publisher, PublisherState, "publisher");

/// Attaches as a publisher of stream `name` (`MMS_ERR_BUSY` if another is attached, or as
/// many as the stream's `max_publishers`).
///
/// # Safety
/// `client` is a live client handle; `name` a NUL-terminated string; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_open(
    client: *mut mms_client,
    name: *const c_char,
    out: *mut *mut mms_publisher,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let c = unsafe { live(client) }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let name = unsafe { text(name, "name") }?;
        needed(out, "out")?;
        let publisher = c.publisher_bytes(name)?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe {
            put(
                out,
                boxed(PublisherState {
                    publisher,
                    loan: None,
                }),
            )
        };
        Ok(())
    })
}

fn loan(p: &mut PublisherState, timeout_ms: i64) -> Result<LoanToken> {
    if p.loan.is_some() {
        return Err(Failure::new(
            MMS_ERR_BUSY,
            "a loan is outstanding on this publisher: publish or abandon it first",
        ));
    }
    let publisher = &mut p.publisher;
    Ok(waiting(
        timeout_ms,
        |d| publisher.loan_token(d),
        |e| matches!(e, StreamError::LoanTimeout { .. }),
    )?)
}

/// Loans a free slot to fill in place: its first byte (`frame`), its length in bytes (`len`,
/// may be NULL) and the number the frame will get (`number`, may be NULL). Waits (at most
/// `timeout_ms`) only while a lossless subscriber is a whole ring behind. Then call
/// `mms_publisher_publish` or `mms_publisher_abandon`.
///
/// # Safety
/// `publisher` is a live publisher handle; `frame` valid for a write; `len` and `number`
/// NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_loan(
    publisher: *mut mms_publisher,
    timeout_ms: i64,
    frame: *mut *mut c_void,
    len: *mut usize,
    number: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let p = unsafe { live(publisher) }?;
        needed(frame, "frame")?;
        let token = loan(p, timeout_ms)?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe {
            put(frame, p.publisher.frame_ptr(&token).cast::<c_void>());
            put(len, p.publisher.frame_len());
            put(number, token.number());
        }
        p.loan = Some(token);
        Ok(())
    })
}

/// The per-frame header of the outstanding loan: its first byte (`header`, 8-byte aligned,
/// zeroed when the loan began) and its length (`len`, may be NULL). `MMS_ERR_INVALID_ARGUMENT` when no
/// loan is outstanding or the stream's frames carry no header.
///
/// # Safety
/// `publisher` is a live publisher handle; `header` valid for a write; `len` NULL or valid for
/// a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_header(
    publisher: *mut mms_publisher,
    header: *mut *mut c_void,
    len: *mut usize,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let p = unsafe { live(publisher) }?;
        needed(header, "header")?;
        let Some(token) = p.loan.as_ref() else {
            return Err(Failure::invalid(
                "no loan is outstanding on this publisher (mms_publisher_loan)",
            ));
        };
        let Some(ptr) = p.publisher.header_ptr(token) else {
            return Err(Failure::invalid("this stream's frames carry no header"));
        };
        let n = p.publisher.header_dtype().map_or(0, mmshare::DType::size);
        // SAFETY: valid for a write, or NULL (`len`) (the contract).
        unsafe {
            put(header, ptr.cast::<c_void>());
            put(len, n);
        }
        Ok(())
    })
}

/// Sets the rows the outstanding loan's frame is published with (variable-size frames; at
/// most the largest frame's first dimension): its first `rows` rows are the frame.
///
/// # Safety
/// `publisher` is a live publisher handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_set_rows(publisher: *mut mms_publisher, rows: u64) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let p = unsafe { live(publisher) }?;
        let Some(token) = p.loan.as_mut() else {
            return Err(Failure::invalid(
                "no loan is outstanding on this publisher (mms_publisher_loan)",
            ));
        };
        token.set_rows(rows)?;
        Ok(())
    })
}

/// Publishes the loaned frame; its number goes to `number` (may be NULL).
///
/// # Safety
/// `publisher` is a live publisher handle; `number` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_publish(
    publisher: *mut mms_publisher,
    number: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let p = unsafe { live(publisher) }?;
        let Some(token) = p.loan.take() else {
            return Err(Failure::invalid(
                "no loan is outstanding on this publisher (mms_publisher_loan)",
            ));
        };
        let n = p.publisher.publish_token(token)?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(number, n) };
        Ok(())
    })
}

/// Gives the loaned slot back unpublished: nothing is delivered, and the next frame gets the
/// number this one would have had.
///
/// # Safety
/// `publisher` is a live publisher handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_abandon(publisher: *mut mms_publisher) -> c_int {
    ffi(|| {
        // SAFETY: the contract above.
        let p = unsafe { live(publisher) }?;
        let Some(token) = p.loan.take() else {
            return Err(Failure::invalid(
                "no loan is outstanding on this publisher (mms_publisher_loan)",
            ));
        };
        p.publisher.abandon_token(token);
        Ok(())
    })
}

/// Copies `len` bytes (one whole frame) from `src` into a loaned slot and publishes it; the
/// number goes to `number` (may be NULL).
///
/// # Safety
/// `publisher` is a live publisher handle; `src` valid for `len` bytes of reads; `number`
/// NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_send(
    publisher: *mut mms_publisher,
    src: *const c_void,
    len: usize,
    timeout_ms: i64,
    number: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let p = unsafe { live(publisher) }?;
        if src.is_null() {
            return Err(Failure::invalid("src is NULL"));
        }
        // SAFETY: `src` holds `len` bytes (the contract); no header.
        let n = unsafe { send(p, src, len, std::ptr::null(), 0, timeout_ms) }?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(number, n) };
        Ok(())
    })
}

/// Copies a frame (`len` bytes at `src`) and, unless `header` is NULL, its header
/// (`header_len` bytes, exactly the header dtype's size) into a loaned slot and publishes it.
///
/// # Safety
/// `src` holds `len` bytes; `header` is NULL or holds `header_len` bytes.
unsafe fn send(
    p: &mut PublisherState,
    src: *const c_void,
    len: usize,
    header: *const c_void,
    header_len: usize,
    timeout_ms: i64,
) -> std::result::Result<u64, Failure> {
    let (max, row) = (p.publisher.frame_len(), p.publisher.row_len());
    let variable = p.publisher.is_variable() && row > 0;
    let fits = if variable {
        len <= max && len.is_multiple_of(row)
    } else {
        len == max
    };
    if !fits {
        return Err(Failure::invalid(if variable {
            format!("src is {len} bytes; a frame is whole rows of {row} bytes, at most {max}")
        } else {
            format!("src is {len} bytes; a frame is {max}")
        }));
    }
    let want = p.publisher.header_dtype().map_or(0, mmshare::DType::size);
    if !header.is_null() && (want == 0 || header_len != want) {
        return Err(Failure::invalid(if want == 0 {
            "this stream's frames carry no header".to_owned()
        } else {
            format!("the header is {header_len} bytes; the stream's is {want}")
        }));
    }
    let mut token = loan(p, timeout_ms)?;
    if variable && let Err(e) = token.set_rows((len / row) as u64) {
        // Never outstanding past an error: the next loan must not find it.
        p.publisher.abandon_token(token);
        return Err(e.into());
    }
    // SAFETY: `src` holds `len` bytes (the contract), the loaned slot at least `len` writable
    // bytes that are ours until published; they do not overlap. The same for the header,
    // `want` bytes on both sides (checked above).
    unsafe {
        std::ptr::copy_nonoverlapping(src.cast::<u8>(), p.publisher.frame_ptr(&token), len);
        if let Some(to) = p.publisher.header_ptr(&token).filter(|_| !header.is_null()) {
            std::ptr::copy_nonoverlapping(header.cast::<u8>(), to, want);
        }
    }
    Ok(p.publisher.publish_token(token)?)
}

/// `mms_publisher_send` with the frame's header (`header_len` bytes at `header`, exactly the
/// stream's header dtype's size). For variable-size frames, `len` may be any whole number of
/// rows up to the largest frame.
///
/// # Safety
/// `publisher` is a live publisher handle; `src` valid for `len` bytes of reads; `header`
/// valid for `header_len` bytes of reads; `number` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_send_with_header(
    publisher: *mut mms_publisher,
    src: *const c_void,
    len: usize,
    header: *const c_void,
    header_len: usize,
    timeout_ms: i64,
    number: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let p = unsafe { live(publisher) }?;
        if src.is_null() || header.is_null() {
            return Err(Failure::invalid("src or header is NULL"));
        }
        // SAFETY: as the contract says.
        let n = unsafe { send(p, src, len, header, header_len, timeout_ms) }?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(number, n) };
        Ok(())
    })
}

/// This publisher's id and lane: what the frames of a stream of several publishers carry
/// (`mms_sample_publisher`). `lane` may be NULL.
///
/// # Safety
/// `publisher` is a live publisher handle; `id` valid for a write; `lane` NULL or valid for
/// a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_id(
    publisher: *mut mms_publisher,
    id: *mut u64,
    lane: *mut u32,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let p = unsafe { live(publisher) }?;
        needed(id, "id")?;
        let me = p.publisher.id();
        // SAFETY: NULL or valid for a write (the contract).
        unsafe {
            put(id, me.id());
            put(lane, me.lane());
        }
        Ok(())
    })
}

/// Frames published so far on this stream (the number the next one gets).
///
/// # Safety
/// `publisher` is a live publisher handle; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_next_number(
    publisher: *mut mms_publisher,
    out: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let p = unsafe { live(publisher) }?;
        needed(out, "out")?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(out, p.publisher.next_number()) };
        Ok(())
    })
}

/// Waits until at least `n` subscribers are attached, at most `timeout_ms` (negative: no
/// limit; `MMS_ERR_TIMEOUT` then), woken by each join; `count` (may be NULL) gets how many are.
///
/// # Safety
/// `publisher` is a live publisher handle; `count` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_wait_for_subscribers(
    publisher: *mut mms_publisher,
    n: u32,
    timeout_ms: i64,
    count: *mut u32,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let p = unsafe { live(publisher) }?;
        let got = waiting(
            timeout_ms,
            |d| p.publisher.wait_for_subscribers(n as usize, d),
            |e| matches!(e, StreamError::SubscribersTimeout { .. }),
        )?;
        if !count.is_null() {
            // SAFETY: valid for a write (the contract).
            unsafe { put(count, u32::try_from(got).unwrap_or(u32::MAX)) };
        }
        Ok(())
    })
}

/// Detaches the publisher (an outstanding loan is abandoned); another may attach.
///
/// # Safety
/// `publisher` is NULL or a live publisher handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_close(publisher: *mut mms_publisher) {
    if !publisher.is_null() {
        // SAFETY: a live handle (the contract).
        if let Some(p) = unsafe { (*publisher).slot() }
            && let Some(token) = p.loan.take()
        {
            let _ = catch_unwind(AssertUnwindSafe(|| p.publisher.abandon_token(token)));
        }
    }
    // SAFETY: the contract.
    unsafe { close(publisher) }
}

/// Closes and frees the publisher handle.
///
/// # Safety
/// `publisher` is NULL or a live publisher handle, not used after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_publisher_free(publisher: *mut mms_publisher) {
    // SAFETY: the contract.
    unsafe {
        mms_publisher_close(publisher);
        free(publisher);
    }
}

// ---------------------------------------------------------------------------------------------
// Streams: subscribing

/// The subscriber, shared by its handle and its samples: it stays attached (its frames
/// mapped) until the handle is closed and the last sample released.
type SharedSubscriber = Arc<SubscriberState>;

/// A subscriber and the releases waiting for it. A sample released from another thread while
/// `mms_receive` waits must not wait for that receive: its token is queued and released by
/// whoever holds the subscriber next (a receive waits in slices of `RECEIVE_SLICE` and
/// carries out queued releases between them), or at once if nobody holds it.
#[derive(Debug)]
pub struct SubscriberState {
    subscriber: Mutex<Subscriber<u8>>,
    released: Mutex<Vec<SampleToken>>,
}

/// The longest a receive waits before it carries out releases queued meanwhile.
const RECEIVE_SLICE: Duration = Duration::from_millis(10);

impl SubscriberState {
    /// The subscriber, with queued releases carried out; run `f` on it, then carry out the
    /// releases queued meanwhile.
    fn with<R>(&self, f: impl FnOnce(&Subscriber<u8>) -> R) -> R {
        let s = self
            .subscriber
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.drain(&s);
        let r = f(&s);
        self.drain(&s);
        drop(s);
        self.drain_if_free();
        r
    }

    /// Carries out queued releases if nobody holds the subscriber; a release queued while
    /// someone held it is then never left waiting for the next call.
    fn drain_if_free(&self) {
        while !self
            .released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            match self.subscriber.try_lock() {
                Ok(s) => self.drain(&s),
                Err(std::sync::TryLockError::Poisoned(p)) => self.drain(&p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => break,
            }
        }
    }

    fn drain(&self, s: &Subscriber<u8>) {
        let tokens =
            std::mem::take(&mut *self.released.lock().unwrap_or_else(PoisonError::into_inner));
        for token in tokens {
            s.release_token(token);
        }
    }

    /// Releases `token` now if the subscriber is free, else queues it for its holder.
    fn release(&self, token: SampleToken) {
        self.released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(token);
        self.drain_if_free();
    }
}

/// The receiving side of a stream.
#[derive(Debug)]
pub struct mms_subscriber(Option<SharedSubscriber>);
handle!(mms_subscriber, SharedSubscriber, "subscriber");

/// A received frame, held (its slot is not reused) until `mms_sample_release`.
#[derive(Debug)]
pub struct mms_sample {
    subscriber: SharedSubscriber,
    token: Option<SampleToken>,
    data: *const u8,
    len: usize,
    header: *const u8,
    header_len: usize,
    rows: u64,
    number: u64,
    missed_before: u64,
    published_ns: u64,
    lane: u32,
    publisher: Option<mmshare::PublisherId>,
}

/// Subscribes to stream `name`: lossless (`lossless` true: every frame in order; the
/// publisher waits for this subscriber) or lossy (never slows the publisher; every skipped
/// frame is counted). `max_held` (0: 2) is how many samples it may hold at once. It starts
/// where [`MMS_START_DEFAULT`] says; [`mms_subscribe_from`] chooses.
///
/// # Safety
/// `client` is a live client handle; `name` a NUL-terminated string; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_subscribe(
    client: *mut mms_client,
    name: *const c_char,
    lossless: bool,
    max_held: u32,
    out: *mut *mut mms_subscriber,
) -> c_int {
    // SAFETY: the contract, passed on.
    unsafe { mms_subscribe_from(client, name, lossless, max_held, MMS_START_DEFAULT, 0, out) }
}

/// [`mms_subscribe`], starting at `start` (`MMS_START_*`; `frame` is the frame number for
/// [`MMS_START_FRAME`], and is ignored otherwise).
///
/// # Safety
/// `client` is a live client handle; `name` a NUL-terminated string; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_subscribe_from(
    client: *mut mms_client,
    name: *const c_char,
    lossless: bool,
    max_held: u32,
    start: c_int,
    frame: u64,
    out: *mut *mut mms_subscriber,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let c = unsafe { live(client) }?;
        // SAFETY: NULL or a NUL-terminated string (the contract).
        let name = unsafe { text(name, "name") }?;
        needed(out, "out")?;
        let delivery = if lossless {
            Delivery::Lossless
        } else {
            Delivery::Lossy
        };
        let held = if max_held == 0 {
            mmshare::DEFAULT_MAX_HELD
        } else {
            max_held as usize
        };
        let options = mmshare::SubscribeOptions::new(delivery).max_held(held);
        let options = match start {
            MMS_START_DEFAULT => options,
            MMS_START_NEXT => options.start(mmshare::StartAt::Next),
            MMS_START_OLDEST => options.start(mmshare::StartAt::Oldest),
            MMS_START_FRAME => options.start(mmshare::StartAt::Frame(frame)),
            other => {
                return Err(Failure::invalid(format!("{other} is not an MMS_START_*")));
            }
        };
        let s = c.subscribe_bytes(name, options)?;
        let state = SubscriberState {
            subscriber: Mutex::new(s),
            released: Mutex::new(Vec::new()),
        };
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(out, boxed(Arc::new(state))) };
        Ok(())
    })
}

/// The frame the subscriber started at (the one it asked for: frames before it are not
/// counted as missed).
///
/// # Safety
/// `subscriber` is a live subscriber handle; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_subscriber_first_frame(
    subscriber: *mut mms_subscriber,
    out: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let shared = unsafe { live(subscriber) }?;
        needed(out, "out")?;
        let first = shared.with(Subscriber::first_frame);
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(out, first) };
        Ok(())
    })
}

fn sample_of(
    shared: &SharedSubscriber,
    s: &Subscriber<u8>,
    got: Option<mmshare::Sample<'_, u8>>,
) -> *mut mms_sample {
    match got {
        None => std::ptr::null_mut(),
        Some(sample) => {
            let (number, missed_before, published_ns) = (
                sample.number(),
                sample.missed_before(),
                sample.published_ns(),
            );
            let len = sample.len();
            let token = sample.into_token();
            let header_len = s.files().header().frame_header_len();
            Box::into_raw(Box::new(mms_sample {
                subscriber: Arc::clone(shared),
                data: s.frame_ptr(&token),
                len,
                header: s.header_ptr(&token).unwrap_or(std::ptr::null()),
                header_len,
                rows: token.rows(),
                lane: token.lane() as u32,
                publisher: token.publisher(),
                token: Some(token),
                number,
                missed_before,
                published_ns,
            }))
        }
    }
}

/// Receives the next frame (lossless: the next in order; lossy: the oldest still there),
/// waiting at most `timeout_ms` (`MMS_ERR_TIMEOUT` if none comes; 0 does not wait).
///
/// # Safety
/// `subscriber` is a live subscriber handle; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_receive(
    subscriber: *mut mms_subscriber,
    timeout_ms: i64,
    out: *mut *mut mms_sample,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let shared = unsafe { live(subscriber) }?;
        needed(out, "out")?;
        let deadline = limit(timeout_ms).map(|d| std::time::Instant::now() + d);
        loop {
            // One slice with the subscriber held, then releases queued meanwhile are done.
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            let got = shared.with(|s| {
                let got = match left {
                    Some(left) if left.is_zero() => s.receive(),
                    _ => {
                        match s.receive_timeout(left.unwrap_or(RECEIVE_SLICE).min(RECEIVE_SLICE)) {
                            Ok(sample) => Ok(Some(sample)),
                            Err(StreamError::ReceiveTimeout { .. }) => Ok(None),
                            Err(e) => Err(e),
                        }
                    }
                };
                got.map(|got| sample_of(shared, s, got))
            })?;
            if !got.is_null() {
                // SAFETY: NULL or valid for a write (the contract).
                unsafe { put(out, got) };
                return Ok(());
            }
            if left.is_some_and(|l| l <= RECEIVE_SLICE) {
                return Err(Failure::new(
                    MMS_ERR_TIMEOUT,
                    if timeout_ms == 0 {
                        "no frame is waiting".to_owned()
                    } else {
                        format!("no frame within {timeout_ms} ms")
                    },
                ));
            }
        }
    })
}

/// The newest published frame, skipping older ones (counted as missed); `*out` is NULL
/// before the first frame, and while no frame is offered: after the publisher reused the
/// newest frame's slot once every subscriber was past it (frames of 64 KiB or more, no
/// history, only lossless subscribers: `Subscriber::latest` in the Rust docs), until the
/// next publish.
///
/// # Safety
/// `subscriber` is a live subscriber handle; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_latest(
    subscriber: *mut mms_subscriber,
    out: *mut *mut mms_sample,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let shared = unsafe { live(subscriber) }?;
        needed(out, "out")?;
        let sample = shared.with(|s| s.latest().map(|got| sample_of(shared, s, got)))?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(out, sample) };
        Ok(())
    })
}

/// Frames this subscriber skipped so far (received + missed = frames published since it
/// subscribed).
///
/// # Safety
/// `subscriber` is a live subscriber handle; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_subscriber_missed(
    subscriber: *mut mms_subscriber,
    out: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let shared = unsafe { live(subscriber) }?;
        needed(out, "out")?;
        let missed = shared.with(Subscriber::missed);
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(out, missed) };
        Ok(())
    })
}

/// Closes the subscriber handle; it unsubscribes once its samples are released too.
///
/// # Safety
/// `subscriber` is NULL or a live subscriber handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_subscriber_close(subscriber: *mut mms_subscriber) {
    // SAFETY: the contract.
    unsafe { close(subscriber) }
}

/// Closes and frees the subscriber handle.
///
/// # Safety
/// `subscriber` is NULL or a live subscriber handle, not used after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_subscriber_free(subscriber: *mut mms_subscriber) {
    // SAFETY: the contract.
    unsafe { free(subscriber) }
}

/// The frame's first byte (read-only, valid until the sample is released); NULL for NULL.
///
/// # Safety
/// `sample` is NULL or a sample not yet released.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_sample_data(sample: *const mms_sample) -> *const c_void {
    // SAFETY: NULL or a live sample (the contract).
    unsafe { sample.as_ref() }.map_or(std::ptr::null(), |s| s.data.cast())
}

/// The frame's length in bytes: its rows' worth for variable-size frames (0 for NULL).
///
/// # Safety
/// As `mms_sample_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_sample_len(sample: *const mms_sample) -> usize {
    // SAFETY: the contract.
    unsafe { sample.as_ref() }.map_or(0, |s| s.len)
}

/// The rows the frame has, its length along axis 0 (the first dimension of the stream's
/// shape unless its frames vary; 0 for NULL).
///
/// # Safety
/// As `mms_sample_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_sample_rows(sample: *const mms_sample) -> u64 {
    // SAFETY: the contract.
    unsafe { sample.as_ref() }.map_or(0, |s| s.rows)
}

/// The frame's header (read-only, valid until the sample is released), or NULL when the
/// stream's frames carry none (or for NULL).
///
/// # Safety
/// As `mms_sample_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_sample_header(sample: *const mms_sample) -> *const c_void {
    // SAFETY: the contract.
    unsafe { sample.as_ref() }.map_or(std::ptr::null(), |s| s.header.cast())
}

/// The frame header's length in bytes (0 without a header, or for NULL).
///
/// # Safety
/// As `mms_sample_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_sample_header_len(sample: *const mms_sample) -> usize {
    // SAFETY: the contract.
    unsafe { sample.as_ref() }.map_or(0, |s| s.header_len)
}

/// The frame's number (0 for the stream's first frame; 0 for NULL). On a stream of several
/// publishers, its number in its lane (each publisher's frames are numbered in its order).
///
/// # Safety
/// As `mms_sample_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_sample_number(sample: *const mms_sample) -> u64 {
    // SAFETY: the contract.
    unsafe { sample.as_ref() }.map_or(0, |s| s.number)
}

/// The lane (publisher ring) the frame came from: 0 on a stream of one publisher (0 for
/// NULL).
///
/// # Safety
/// As `mms_sample_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_sample_lane(sample: *const mms_sample) -> u32 {
    // SAFETY: the contract.
    unsafe { sample.as_ref() }.map_or(0, |s| s.lane)
}

/// Who published the frame, on a stream of several publishers: the publisher's id (one
/// number for its life, never another's: `(attach << 16) | lane`, never 0), and its pid in
/// `pid` (may be NULL). 0 (and pid 0) on a stream of one publisher, whose frames carry no
/// publisher, or for NULL.
///
/// # Safety
/// As `mms_sample_data`; `pid` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_sample_publisher(sample: *const mms_sample, pid: *mut u32) -> u64 {
    // SAFETY: the contract.
    let id = unsafe { sample.as_ref() }.and_then(|s| s.publisher);
    // SAFETY: NULL or valid for a write (the contract).
    unsafe { put(pid, id.map_or(0, |p| p.pid())) };
    id.map_or(0, |p| p.id())
}

/// Frames this subscriber missed just before this one (0 for NULL).
///
/// # Safety
/// As `mms_sample_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_sample_missed_before(sample: *const mms_sample) -> u64 {
    // SAFETY: the contract.
    unsafe { sample.as_ref() }.map_or(0, |s| s.missed_before)
}

/// When the frame was published, in ns since the Unix epoch (0 for NULL).
///
/// # Safety
/// As `mms_sample_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_sample_published_ns(sample: *const mms_sample) -> u64 {
    // SAFETY: the contract.
    unsafe { sample.as_ref() }.map_or(0, |s| s.published_ns)
}

/// Releases the sample (its slot may be reused) and frees it; NULL is fine. From any thread.
///
/// # Safety
/// `sample` is NULL or a sample from `mms_receive` / `mms_latest`, not used after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_sample_release(sample: *mut mms_sample) {
    if sample.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by `sample_of`, released once (the contract).
        let mut sample = unsafe { Box::from_raw(sample) };
        if let Some(token) = sample.token.take() {
            sample.subscriber.release(token);
        }
    }));
}

// ---------------------------------------------------------------------------------------------
// Services: request/response

/// `mms_service_options_set`: requesters at once (1 to 16; default 8).
pub const MMS_SERVICE_MAX_REQUESTERS: c_int = 1;
/// `mms_service_options_set`: servers at once (1 to 16; default 2).
pub const MMS_SERVICE_MAX_SERVERS: c_int = 2;
/// `mms_service_options_set`: requests (and responses) each ring holds (default 4).
pub const MMS_SERVICE_SLOTS: c_int = 3;
/// `mms_service_options_set`: permission bits (default 0600).
pub const MMS_SERVICE_MODE: c_int = 4;
/// `mms_service_options_set`: `MMS_CREATE_MEMORY` and `MMS_CREATE_EXIST_OK`.
pub const MMS_SERVICE_FLAGS: c_int = 5;

impl From<mmshare::ServiceError> for Failure {
    fn from(e: mmshare::ServiceError) -> Failure {
        use mmshare::ServiceError as E;
        match e {
            E::Client(c) => c.into(),
            E::Stream(s) => s.into(),
            e @ (E::Timeout { .. } | E::NoServer { .. }) => {
                Failure::new(MMS_ERR_TIMEOUT, e.to_string())
            }
            e @ E::ServerLost { .. } => Failure::new(MMS_ERR_LOST, e.to_string()),
            e @ E::Full { .. } => Failure::new(MMS_ERR_BUSY, e.to_string()),
            e @ E::WrongLength { .. } => Failure::invalid(e.to_string()),
            other => Failure::new(MMS_ERR_INTERNAL, other.to_string()),
        }
    }
}

/// What `mms_create_service` creates.
#[derive(Debug)]
pub struct mms_service_options(Option<mmshare::ServiceOptions>);
handle!(
    mms_service_options,
    mmshare::ServiceOptions,
    "service options"
);

/// New service options: requests of `request_dtype` and shape (`request_ndim` dimensions at
/// `request_shape`), responses of `response_dtype` and shape; 8 requesters, 2 servers, rings
/// of 4, file-backed, mode 0600. Free with [`mms_service_options_free`].
///
/// # Safety
/// The names and dtypes are NUL-terminated strings; the shapes point at their `ndim` values;
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_service_options_new(
    name: *const c_char,
    request_dtype: *const c_char,
    request_ndim: u32,
    request_shape: *const u64,
    response_dtype: *const c_char,
    response_ndim: u32,
    response_shape: *const u64,
    out: *mut *mut mms_service_options,
) -> c_int {
    ffi(|| {
        // SAFETY: NULL or NUL-terminated strings, shapes of their `ndim` values (the contract).
        let (name, rd, rs, sd, ss) = unsafe {
            (
                text(name, "name")?,
                text(request_dtype, "request_dtype")?,
                dims(request_shape, request_ndim)?,
                text(response_dtype, "response_dtype")?,
                dims(response_shape, response_ndim)?,
            )
        };
        needed(out, "out")?;
        let options = mmshare::ServiceOptions::new(name, rd, rs, sd, ss);
        // SAFETY: valid for a write (the contract).
        unsafe { put(out, boxed(options)) };
        Ok(())
    })
}

/// Sets one of the options (`MMS_SERVICE_*`).
///
/// # Safety
/// `options` is a live options handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_service_options_set(
    options: *mut mms_service_options,
    what: c_int,
    value: u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let o = unsafe { live(options) }?;
        let small = u32::try_from(value)
            .map_err(|_| Failure::invalid(format!("the value {value} does not fit in 32 bits")))?;
        let taken = std::mem::replace(o, mmshare::ServiceOptions::new("", "", &[], "", &[]));
        *o = match what {
            MMS_SERVICE_MAX_REQUESTERS => taken.max_requesters(small),
            MMS_SERVICE_MAX_SERVERS => taken.max_servers(small),
            MMS_SERVICE_SLOTS => taken.slots(small),
            MMS_SERVICE_MODE => taken.mode(small),
            MMS_SERVICE_FLAGS => {
                let (backing, order, exist_ok) = create_flags(small)?;
                if order != Order::C {
                    *o = taken;
                    return Err(Failure::invalid("a service's requests are in C order"));
                }
                let t = taken.exist_ok(exist_ok);
                if backing == Backing::Memory {
                    t.memory()
                } else {
                    t
                }
            }
            other => {
                *o = taken;
                return Err(Failure::invalid(format!("{other} is not an MMS_SERVICE_*")));
            }
        };
        Ok(())
    })
}

/// Frees service options.
///
/// # Safety
/// `options` is NULL or a live options handle, not used after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_service_options_free(options: *mut mms_service_options) {
    // SAFETY: the contract.
    unsafe { free(options) }
}

/// Creates the service `options` describe (its request and response streams).
///
/// # Safety
/// `client` and `options` are live handles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_create_service(
    client: *mut mms_client,
    options: *mut mms_service_options,
) -> c_int {
    ffi(|| {
        // SAFETY: live handles of these types, used by this thread only (the contract).
        let (c, o) = unsafe { (live(client)?, live(options)?) };
        c.create_service(o)?;
        Ok(())
    })
}

/// Deletes every stream of service `name`.
///
/// # Safety
/// `client` is a live client handle; `name` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_delete_service(client: *mut mms_client, name: *const c_char) -> c_int {
    ffi(|| {
        // SAFETY: a live handle; a NUL-terminated string (the contract).
        let (c, name) = unsafe { (live(client)?, text(name, "name")?) };
        c.delete_service(name)?;
        Ok(())
    })
}

/// The calling side of a service (`mms_requester_open`).
#[derive(Debug)]
pub struct mms_requester(Option<mmshare::Requester<u8, u8>>);
handle!(mms_requester, mmshare::Requester<u8, u8>, "requester");

/// Attaches as a requester of service `name`, in its first free requester slot
/// (`MMS_ERR_BUSY` when all are taken).
///
/// # Safety
/// `client` is a live client handle; `name` a NUL-terminated string; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_requester_open(
    client: *mut mms_client,
    name: *const c_char,
    out: *mut *mut mms_requester,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle; a NUL-terminated string (the contract).
        let (c, name) = unsafe { (live(client)?, text(name, "name")?) };
        needed(out, "out")?;
        let r = c.requester_bytes(name)?;
        // SAFETY: valid for a write (the contract).
        unsafe { put(out, boxed(r)) };
        Ok(())
    })
}

/// Sends a request (`len` bytes at `src`: exactly a request), waiting up to `timeout_ms` (-1:
/// no limit) for a server and for room; its correlation id goes to `id` (may be NULL).
///
/// # Safety
/// `requester` is a live requester handle; `src` holds `len` bytes; `id` NULL or valid for a
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_requester_send(
    requester: *mut mms_requester,
    src: *const c_void,
    len: usize,
    timeout_ms: i64,
    id: *mut u64,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let r = unsafe { live(requester) }?;
        if src.is_null() {
            return Err(Failure::invalid("src is NULL"));
        }
        r.set_timeout(limit(timeout_ms).unwrap_or(mmshare::MAX_WAIT));
        // SAFETY: `len` readable bytes (the contract).
        let request = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), len) };
        let sent = r.send(request)?;
        // SAFETY: NULL or valid for a write (the contract).
        unsafe { put(id, sent) };
        Ok(())
    })
}

/// A response, held (read in place) until `mms_response_release`.
#[derive(Debug)]
pub struct mms_response {
    requester: *const mms_requester,
    token: Option<SampleToken>,
    data: *const u8,
    len: usize,
    id: u64,
}

/// Receives the next response to one of this requester's requests, waiting up to
/// `timeout_ms` (-1: no limit): `MMS_ERR_TIMEOUT`, or `MMS_ERR_LOST` (with the request ids in
/// `mms_last_error`) when the server they went to died.
///
/// # Safety
/// `requester` is a live requester handle that outlives the response; `out` valid for a
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_requester_receive(
    requester: *mut mms_requester,
    timeout_ms: i64,
    out: *mut *mut mms_response,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let r = unsafe { live(requester) }?;
        needed(out, "out")?;
        let (id, token) = waiting(
            timeout_ms,
            |d| r.receive_token(d),
            |e| matches!(e, mmshare::ServiceError::Timeout { .. }),
        )?;
        let response = mms_response {
            requester: requester.cast_const(),
            data: r.response_ptr(&token),
            len: r.response_len(),
            id,
            token: Some(token),
        };
        // SAFETY: valid for a write (the contract).
        unsafe { put(out, Box::into_raw(Box::new(response))) };
        Ok(())
    })
}

/// The response's bytes (read-only, valid until released); NULL for NULL.
///
/// # Safety
/// `response` is NULL or a live response.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_response_data(response: *const mms_response) -> *const c_void {
    // SAFETY: the contract.
    unsafe { response.as_ref() }.map_or(std::ptr::null(), |r| r.data.cast())
}

/// The response's length in bytes (0 for NULL).
///
/// # Safety
/// As `mms_response_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_response_len(response: *const mms_response) -> usize {
    // SAFETY: the contract.
    unsafe { response.as_ref() }.map_or(0, |r| r.len)
}

/// The correlation id of the request it answers (0 for NULL).
///
/// # Safety
/// As `mms_response_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_response_id(response: *const mms_response) -> u64 {
    // SAFETY: the contract.
    unsafe { response.as_ref() }.map_or(0, |r| r.id)
}

/// Releases a response (NULL: nothing).
///
/// # Safety
/// `response` is NULL or a live response whose requester is still live; not used after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_response_release(response: *mut mms_response) {
    if response.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by `mms_requester_receive`, released once (the contract).
        let mut r = unsafe { Box::from_raw(response) };
        // SAFETY: the requester outlives its responses (the contract).
        if let (Some(token), Some(h)) = (r.token.take(), unsafe { r.requester.as_ref() })
            && let Some(requester) = h.0.as_ref()
        {
            requester.release_response(token);
        }
    }));
}

/// Frees a requester (its slot is free again). Release its responses first.
///
/// # Safety
/// `requester` is NULL or a live requester handle, not used after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_requester_free(requester: *mut mms_requester) {
    // SAFETY: the contract.
    unsafe { free(requester) }
}

/// The serving side of a service (`mms_server_open`).
#[derive(Debug)]
pub struct mms_server(Option<mmshare::Server<u8, u8>>);
handle!(mms_server, mmshare::Server<u8, u8>, "server");

/// Attaches as a server of service `name`, in its first free server slot (`MMS_ERR_BUSY` when
/// all are taken).
///
/// # Safety
/// `client` is a live client handle; `name` a NUL-terminated string; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_server_open(
    client: *mut mms_client,
    name: *const c_char,
    out: *mut *mut mms_server,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle; a NUL-terminated string (the contract).
        let (c, name) = unsafe { (live(client)?, text(name, "name")?) };
        needed(out, "out")?;
        let s = c.server_bytes(name)?;
        // SAFETY: valid for a write (the contract).
        unsafe { put(out, boxed(s)) };
        Ok(())
    })
}

/// A request, held (read in place) until `mms_request_release`.
#[derive(Debug)]
pub struct mms_request {
    server: *const mms_server,
    token: Option<mmshare::RequestToken>,
    data: *const u8,
    len: usize,
    id: u64,
    requester: u32,
}

/// Receives the next request, waiting up to `timeout_ms` (-1: no limit; `MMS_ERR_TIMEOUT`).
///
/// # Safety
/// `server` is a live server handle that outlives the request; `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_server_receive(
    server: *mut mms_server,
    timeout_ms: i64,
    out: *mut *mut mms_request,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let s = unsafe { live(server) }?;
        needed(out, "out")?;
        let token = waiting(
            timeout_ms,
            |d| s.receive_token(d),
            |e| {
                matches!(
                    e,
                    mmshare::ServiceError::Stream(StreamError::ReceiveTimeout { .. })
                )
            },
        )?;
        let request = mms_request {
            server: server.cast_const(),
            data: s.request_ptr(&token),
            len: s.request_len(),
            id: token.id(),
            requester: token.requester_slot(),
            token: Some(token),
        };
        // SAFETY: valid for a write (the contract).
        unsafe { put(out, Box::into_raw(Box::new(request))) };
        Ok(())
    })
}

/// The request's bytes (read-only, valid until released); NULL for NULL.
///
/// # Safety
/// `request` is NULL or a live request.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_request_data(request: *const mms_request) -> *const c_void {
    // SAFETY: the contract.
    unsafe { request.as_ref() }.map_or(std::ptr::null(), |r| r.data.cast())
}

/// The request's length in bytes (0 for NULL).
///
/// # Safety
/// As `mms_request_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_request_len(request: *const mms_request) -> usize {
    // SAFETY: the contract.
    unsafe { request.as_ref() }.map_or(0, |r| r.len)
}

/// The request's correlation id (its requester's; 0 for NULL).
///
/// # Safety
/// As `mms_request_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_request_id(request: *const mms_request) -> u64 {
    // SAFETY: the contract.
    unsafe { request.as_ref() }.map_or(0, |r| r.id)
}

/// The requester slot it came from (0 for NULL).
///
/// # Safety
/// As `mms_request_data`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_request_requester(request: *const mms_request) -> u32 {
    // SAFETY: the contract.
    unsafe { request.as_ref() }.map_or(0, |r| r.requester)
}

/// Answers `request` with a response of `len` bytes at `src` (exactly a response), sent to
/// its requester only; waits up to the server's timeout (10 s) while that requester is a
/// whole ring of responses behind.
///
/// # Safety
/// `server` is the live server handle `request` came from; `request` a live request; `src`
/// holds `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_request_respond(
    server: *mut mms_server,
    request: *const mms_request,
    src: *const c_void,
    len: usize,
) -> c_int {
    ffi(|| {
        // SAFETY: a live handle of this type, used by this thread only (the contract).
        let s = unsafe { live(server) }?;
        // SAFETY: NULL or a live request (the contract).
        let Some(req) = (unsafe { request.as_ref() }) else {
            return Err(Failure::invalid("request is NULL"));
        };
        let Some(token) = req.token.as_ref() else {
            return Err(Failure::invalid("the request was released"));
        };
        if src.is_null() {
            return Err(Failure::invalid("src is NULL"));
        }
        if len != s.response_nbytes() {
            return Err(Failure::invalid(format!(
                "a response of {len} bytes; the service's are {}",
                s.response_nbytes()
            )));
        }
        let loan = s.loan_response_token(token)?;
        let dst = match s.response_ptr(&loan) {
            Ok(dst) => dst,
            Err(e) => {
                let _ = s.abandon_response(loan);
                return Err(e.into());
            }
        };
        // SAFETY: the loaned slot holds `len` bytes, ours until sent; `src` holds `len`.
        unsafe { std::ptr::copy_nonoverlapping(src.cast::<u8>(), dst, len) };
        s.send_response(loan)?;
        Ok(())
    })
}

/// Releases a request (NULL: nothing). Answer it first.
///
/// # Safety
/// `request` is NULL or a live request whose server is still live; not used after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_request_release(request: *mut mms_request) {
    if request.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by `mms_server_receive`, released once (the contract).
        let mut r = unsafe { Box::from_raw(request) };
        // SAFETY: the server outlives its requests (the contract).
        if let (Some(token), Some(h)) = (r.token.take(), unsafe { r.server.as_ref() })
            && let Some(server) = h.0.as_ref()
        {
            server.release_request(token);
        }
    }));
}

/// Frees a server (its slot is free again). Release its requests first.
///
/// # Safety
/// `server` is NULL or a live server handle, not used after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mms_server_free(server: *mut mms_server) {
    // SAFETY: the contract.
    unsafe { free(server) }
}

#[cfg(test)]
mod tests;
