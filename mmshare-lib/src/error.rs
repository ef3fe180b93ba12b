//! Typed errors, one enum per operation whose failure modes differ.
//!
//! Format, dtype, shape and name errors live next to their parsers (`FormatError`,
//! `DTypeError`, `ShapeError`, `NameError`) and are wrapped here.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::dtype::{DType, DTypeError};
use crate::format::FormatError;
use crate::sys::ProcessId;

/// Opening an array file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file could not be opened, read or mapped.
    #[error("cannot open array file {path}: {source}")]
    Io {
        /// The file (or `<fd>` when opened from a descriptor).
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a valid array file.
    #[error("invalid array file {path}: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: FormatError,
    },
    /// The file holds another kind of object (a stream's data file).
    #[error("{path} holds a {kind}, not an array")]
    NotAnArray {
        /// The file.
        path: PathBuf,
        /// What it holds.
        kind: &'static str,
    },
    /// A typed handle was asked for a different element type than the array or stream holds.
    #[error("its elements are {found}, but the program asked for {expected}")]
    DTypeMismatch {
        /// The Rust element type's dtype.
        expected: DType,
        /// The array's dtype.
        found: DType,
    },
    /// The element type's layout does not match its dtype: its size is not the dtype's size,
    /// or it needs more alignment than the data area guarantees. Indexing with it would reach
    /// past the mapping, so the handle is refused.
    #[error(
        "element type for {dtype} is {size} bytes with alignment {align}, but {dtype} elements are {expected} bytes (alignment at most 8)"
    )]
    ElementLayout {
        /// The dtype the element type claims.
        dtype: DType,
        /// `size_of` the element type.
        size: usize,
        /// `align_of` the element type.
        align: usize,
        /// The dtype's element size.
        expected: usize,
    },
    /// The program's element type (a `Record` struct) does not describe a valid dtype.
    #[error("the element type has no valid dtype: {0}")]
    ElementDType(#[source] DTypeError),
}

/// Checks that an object of dtype `found` can be handled as `T` elements: `T`'s dtype is
/// `found`, and `T` has the size and alignment the element arithmetic relies on.
pub(crate) fn check_element<T: crate::dtype::Element>(found: &DType) -> Result<(), OpenError> {
    let expected = T::dtype().map_err(OpenError::ElementDType)?;
    if *found != expected {
        return Err(OpenError::DTypeMismatch {
            expected,
            found: found.clone(),
        });
    }
    // Indexing multiplies by `size_of::<T>()` within `data_len = count * dtype.size()` bytes,
    // and the data area (every frame) is page-aligned: both hold only if these do.
    if size_of::<T>() != expected.size() || align_of::<T>() > 8 {
        return Err(OpenError::ElementLayout {
            size: size_of::<T>(),
            align: align_of::<T>(),
            expected: expected.size(),
            dtype: expected,
        });
    }
    Ok(())
}

/// Creating an array file failed; no file was left behind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The name, shape or mode is invalid.
    #[error("{0}")]
    Invalid(#[from] FormatError),
    /// An array with that name exists.
    #[error("array file {0} already exists")]
    AlreadyExists(PathBuf),
    /// The filesystem has no room for the array.
    #[error("no space for {needed} bytes in {dir}")]
    NoSpace {
        /// Bytes the file needs.
        needed: u64,
        /// Target directory.
        dir: PathBuf,
    },
    /// A sparse array asked for in a memory filesystem (tmpfs, ramfs), where a read of a page
    /// never written allocates memory, so that on a full filesystem a reader would be killed
    /// (SIGBUS): a sparse array lives on a disk filesystem.
    #[error(
        "a sparse array cannot live in {dir}, a memory filesystem: reading a page it never wrote takes memory there, and on a full filesystem that kills the reader; create it in a directory on disk, or not sparse"
    )]
    SparseInMemory {
        /// Target directory.
        dir: PathBuf,
    },
    /// Any other I/O failure.
    #[error("cannot create array file in {dir}: {source}")]
    Io {
        /// Target directory.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// A consistent read did not produce a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A writer died in the middle of a write: the data may be half-written. Use
    /// `set_accept_torn(true)` to read it anyway.
    #[error(
        "array is torn at version {version}: a write did not complete (its writer died or failed); a write of the whole array repairs it"
    )]
    Torn {
        /// Version of the torn state.
        version: u64,
    },
    /// No consistent snapshot could be taken in time: a write was in progress (held by
    /// `writer`, if known) or writes kept overlapping the copy.
    #[error("no consistent read within {} (sequence {sequence}, {retries} retries{})", seconds(*.waited), holder_note(.writer))]
    Timeout {
        /// How long the read tried.
        waited: Duration,
        /// The last sequence seen (odd: a write in progress).
        sequence: u64,
        /// Copies that were invalidated by a concurrent write.
        retries: u64,
        /// The process recorded as holding the write side, if any.
        writer: Option<ProcessId>,
    },
    /// An optimistic read (`try_read_with`) overlapped a write; nothing was retried.
    #[error("optimistic read overlapped a write (sequence {seen} then {now})")]
    Conflict {
        /// Sequence before the read.
        seen: u64,
        /// Sequence after it.
        now: u64,
    },
    /// The requested element range is not inside the array.
    #[error("range {start}..{end} is out of bounds for an array of {len} elements")]
    OutOfBounds {
        /// First element.
        start: u64,
        /// One past the last element.
        end: u64,
        /// Elements in the array.
        len: u64,
    },
    /// A copy of the whole array could not be allocated.
    #[error("cannot allocate {bytes} bytes for a copy of the array; read it in ranges")]
    OutOfMemory {
        /// Bytes the copy needs.
        bytes: u64,
    },
    /// A whole-array read was given a buffer of the wrong length.
    #[error("buffer holds {got} elements but the array has {expected}")]
    LengthMismatch {
        /// Elements in the array.
        expected: u64,
        /// Elements in the buffer.
        got: u64,
    },
    /// The array's shape cannot be an in-memory `ndarray` on this machine (a dimension or the
    /// element count does not fit `isize`); read it in ranges instead.
    #[error(
        "shape {shape:?} cannot be held as an ndarray here (too large for this machine's address space); read it in ranges"
    )]
    ShapeTooLarge {
        /// The array's shape.
        shape: Vec<u64>,
    },
    /// The region asked for is not one of the array.
    #[error(transparent)]
    Region(#[from] RegionError),
}

/// A region (one range of indices per leading axis) that does not fit the array, or data that
/// does not fit the region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// More ranges than the array has axes.
    #[error("region gives {given} ranges but the array has {ndim} axes")]
    TooManyAxes {
        /// Ranges given.
        given: usize,
        /// Axes of the array.
        ndim: usize,
    },
    /// A range that runs backwards or past its axis.
    #[error("region's range {start}..{end} on axis {axis} is not inside 0..{len}")]
    OutOfBounds {
        /// The axis.
        axis: usize,
        /// The range's start.
        start: u64,
        /// The range's end.
        end: u64,
        /// The axis' length.
        len: u64,
    },
    /// A region made for another array (of another shape or order).
    #[error("region was made for an array of shape {made_for:?}, not this one of shape {shape:?}")]
    OtherArray {
        /// The shape it was made for.
        made_for: Vec<u64>,
        /// This array's shape.
        shape: Vec<u64>,
    },
    /// A buffer of another size than the region.
    #[error("buffer holds {got} elements but the region has {expected}")]
    LengthMismatch {
        /// Elements in the region.
        expected: u64,
        /// Elements given.
        got: u64,
    },
}

/// A write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The handle was opened read-only.
    #[error("array is open read-only; open it with write access to write")]
    ReadOnly,
    /// Another writer held the write side for the whole timeout.
    #[error("write side still held after {} (sequence {sequence}{})", seconds(*.waited), holder_note(.writer))]
    Timeout {
        /// How long the writer waited.
        waited: Duration,
        /// The last sequence seen.
        sequence: u64,
        /// The process recorded as holding it, if any.
        writer: Option<ProcessId>,
    },
    /// The element range is not inside the array.
    #[error("range {start}..{end} is out of bounds for an array of {len} elements")]
    OutOfBounds {
        /// First element.
        start: u64,
        /// One past the last element.
        end: u64,
        /// Elements in the array.
        len: u64,
    },
    /// A whole-array write was given data of the wrong length.
    #[error("data holds {got} elements but the array has {expected}")]
    LengthMismatch {
        /// Elements in the array.
        expected: u64,
        /// Elements given.
        got: u64,
    },
    /// The write side was taken from this writer before it could publish: something judged it
    /// dead (a recovery) or it stalled so long that its write was released. Its stores may
    /// have landed after the recovery, so the array is left TORN; nothing was published as
    /// this write.
    #[error(
        "lost the write side before publishing (took sequence {sequence}, found {found}): the write was not published and the array is marked torn"
    )]
    LostWriteSide {
        /// The odd sequence this writer held.
        sequence: u64,
        /// The sequence found when publishing.
        found: u64,
    },
    /// A durable write could not make its data or its commit reach the disk (`msync` failed):
    /// the version is published in memory (`version`, 0 if nothing was written), but a machine
    /// crash may lose it; the file then shows the write as torn at the next open.
    #[error(
        "the write (version {version}) is published but not known to be on disk: {stage} failed: {error}"
    )]
    NotDurable {
        /// The version published, or 0 when the write did not start.
        version: u64,
        /// Which sync failed ("the sync of the header before the data", "the sync of the
        /// data", "the sync of the commit").
        stage: &'static str,
        /// The OS error, as text.
        error: String,
    },
    /// The region given is not one of the array.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// A sparse array's file range for this write could not be allocated (the disk is full,
    /// or a quota): nothing was written.
    #[error(
        "cannot allocate {len} bytes at data offset {offset} of this sparse array for the write ({error}): nothing was written"
    )]
    NoSpace {
        /// Where the write starts in the data area.
        offset: u64,
        /// Bytes it needed.
        len: u64,
        /// The OS error, as text.
        error: String,
    },
}

/// No newer version was published in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no version newer than {newer_than} within {} (still at {current})", seconds(*.waited))]
pub struct WaitTimeout {
    /// The version the caller already had.
    pub newer_than: u64,
    /// The version when the wait gave up.
    pub current: u64,
    /// How long it waited.
    pub waited: Duration,
}

/// A duration for people: "10 s", "0.25 s", "1.5 ms".
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{} s", (s * 100.0).round() / 100.0)
    } else if s >= 0.001 {
        format!("{} ms", (s * 1e5).round() / 100.0)
    } else {
        format!("{} µs", (s * 1e8).round() / 100.0)
    }
}

fn holder_note(writer: &Option<ProcessId>) -> String {
    match writer {
        Some(w) => format!(", writer pid {}", w.pid),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations in messages read as people write them, not as `Debug` prints them.
    #[test]
    fn timeouts_print_durations_for_people() {
        let e = WriteError::Timeout {
            waited: Duration::from_millis(10_000) + Duration::from_nanos(123_456),
            sequence: 7,
            writer: Some(ProcessId {
                pid: 42,
                start_time: 1,
            }),
        };
        assert_eq!(
            e.to_string(),
            "write side still held after 10 s (sequence 7, writer pid 42)"
        );
        assert_eq!(seconds(Duration::from_micros(2500)), "2.5 ms");
        assert_eq!(seconds(Duration::from_nanos(1500)), "1.5 µs");
    }
}

/// A stream operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream's files could not be opened or are not valid.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The file holds an array, not a stream (or the other way round).
    #[error("{path} holds {found}, not {expected}")]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// What the caller asked for ("stream" or "array").
        expected: &'static str,
        /// What the file holds.
        found: &'static str,
    },
    /// The control file does not belong to the data file (wrong magic, version or size).
    #[error("invalid control file {path}: {reason}")]
    BadControl {
        /// The control file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another publisher is attached and alive (or its liveness cannot be told).
    #[error("stream {name:?} already has a publisher (pid {pid}); a stream has one at a time")]
    PublisherBusy {
        /// The stream's name.
        name: String,
        /// The attached publisher's pid.
        pid: u32,
    },
    /// Every publisher lane of the stream has a live publisher attached.
    #[error(
        "stream {name:?} already has {max_publishers} publishers attached, its limit (max_publishers)"
    )]
    PublishersFull {
        /// The stream's name.
        name: String,
        /// Its publisher limit.
        max_publishers: u32,
    },
    /// The lanes given for a stream with several publishers are not its lanes.
    #[error("stream {name:?}: wrong lanes: {reason}")]
    Lanes {
        /// The stream's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// This publisher's attachment was taken over (it was judged dead); it publishes nothing
    /// more.
    #[error("stream {name:?}: this publisher was replaced by pid {by} and may not publish")]
    PublisherLost {
        /// The stream's name.
        name: String,
        /// The pid now recorded as publisher (0 if none).
        by: u32,
    },
    /// Every subscriber record is taken.
    #[error(
        "stream {name:?} has all its {max_subscribers} subscriber records taken; create it with a larger max_subscribers"
    )]
    NoRecord {
        /// The stream's name.
        name: String,
        /// Its subscriber limit.
        max_subscribers: u32,
    },
    /// The hold budget (`slots - 1 - max(history, 1)` held samples over all subscribers) is
    /// used up.
    #[error(
        "stream {name:?} cannot grant any more held samples: its {slots} slots (less one on loan and the newest frames it keeps) allow {budget} over all subscribers, and they are taken; create it with more slots (or a shorter history) or subscribe with a smaller max_held"
    )]
    NoHoldBudget {
        /// The stream's name.
        name: String,
        /// Its slot count.
        slots: u32,
        /// Its budget, `slots - 1 - max(history, 1)`.
        budget: u64,
    },
    /// A start frame no stream can reach (frame numbers stay below 2^63 - 1).
    #[error("a subscriber cannot start at frame {given}: frame numbers go up to {max}")]
    BadStart {
        /// The frame asked for.
        given: u64,
        /// The largest frame number there can be.
        max: u64,
    },
    /// `max_held` outside `1..=MAX_HELD`.
    #[error("max_held must be 1 to {max}, not {given}")]
    BadMaxHeld {
        /// The value given.
        given: usize,
        /// The largest allowed.
        max: usize,
    },
    /// A loan made by `Publisher::loan_token` is still outstanding: publish or abandon it
    /// before the next loan.
    #[error("stream {name:?}: a loan is still outstanding; publish or abandon it first")]
    LoanOutstanding {
        /// The stream.
        name: String,
    },
    /// The subscriber already holds its `max_held` samples; drop one first.
    #[error("this subscriber already holds {max_held} samples (its max_held); drop one first")]
    HoldLimit {
        /// Samples it may hold.
        max_held: usize,
    },
    /// This subscriber's record was reclaimed (it was judged dead); it receives nothing more.
    #[error("stream {name:?}: this subscriber's record was reclaimed and it may not receive")]
    SubscriptionLost {
        /// The stream's name.
        name: String,
    },
    /// The publisher evicted this subscriber: it was lossless and stalled the stream for
    /// longer than the stream's stall policy allows. It receives nothing more; it may
    /// subscribe again.
    #[error(
        "stream {name:?}: this subscriber was evicted for stalling the publisher (the stream's stall policy); subscribe again to go on"
    )]
    Evicted {
        /// The stream's name.
        name: String,
    },
    /// No free slot within the timeout: lossless subscribers are a whole ring behind.
    #[error(
        "no free slot within {}: the slowest lossless subscriber is {lag} frames behind ({slots} slots)",
        seconds(*.waited)
    )]
    LoanTimeout {
        /// How long it waited.
        waited: Duration,
        /// Frames between the slowest lossless subscriber and the publisher.
        lag: u64,
        /// The ring's slots.
        slots: u32,
    },
    /// No frame arrived within the timeout.
    #[error("no frame within {} (next expected frame {next})", seconds(*.waited))]
    ReceiveTimeout {
        /// How long it waited.
        waited: Duration,
        /// The frame number it waited for.
        next: u64,
    },
    /// Fewer subscribers than waited for were attached when the time was up.
    #[error(
        "stream {name:?} has {attached} subscribers after waiting {} for {wanted}",
        seconds(*.waited)
    )]
    SubscribersTimeout {
        /// The stream's name.
        name: String,
        /// Subscribers waited for.
        wanted: usize,
        /// Subscribers attached when the time was up.
        attached: usize,
        /// How long it waited.
        waited: Duration,
    },
    /// The per-frame header was asked for as a type that is not its dtype's, or the stream's
    /// frames carry none.
    #[error("stream {name:?}: per-frame header: {reason}")]
    FrameHeader {
        /// The stream's name.
        name: String,
        /// What does not fit.
        reason: String,
    },
    /// A frame was given more rows than the stream's largest frame has.
    #[error("a frame of {rows} rows is larger than the stream's largest, {max} rows")]
    TooManyRows {
        /// Rows asked for.
        rows: u64,
        /// The first dimension of the stream's shape.
        max: u64,
    },
    /// A frame of a stream whose frames do not vary was given other rows than its shape's.
    #[error(
        "the stream's frames do not vary in length: each has {max} rows, not {rows} (create it variable to publish shorter frames)"
    )]
    FixedSize {
        /// Rows asked for.
        rows: u64,
        /// The rows every frame has.
        max: u64,
    },
    /// `send` to a stream of variable-size frames was given a length that is not a whole
    /// number of rows up to the largest frame.
    #[error(
        "frame has {given} elements; a frame of this stream is whole rows of {row} elements, at most {max}"
    )]
    NotWholeRows {
        /// Elements given.
        given: usize,
        /// Elements per row.
        row: usize,
        /// Elements of the largest frame.
        max: usize,
    },
    /// `send` was given a frame of the wrong number of elements.
    #[error("frame has {given} elements, but the stream's frames have {expected}")]
    LengthMismatch {
        /// Elements given.
        given: usize,
        /// Elements per frame.
        expected: usize,
    },
}
