//! Arrays: a named N-dimensional array in one memory-mapped file, read and written by any
//! number of processes under the seqlock in its header page.
//!
//! - [`seqlock`]: the protocol, with the essay that justifies it and its model checks;
//! - [`stripes`]: the same protocol per stripe, for arrays whose regions are written apart,
//!   and `striped`, the raw handle's reads and writes of them;
//! - [`mapping`]: the shared mapping of an array file and typed access to its header words;
//! - [`raw`]: [`RawArray`](raw::RawArray), the untyped handle that runs the protocol over bytes
//!   (reads, writes, waits, dead-writer recovery);
//! - [`region`]: boxes of an array's index space and where their bytes lie;
//! - [`typed`]: [`Array<T>`](typed::Array), the typed handle users hold;
//! - [`control`]: the array's control file, where sleepers count themselves;
//! - [`create`]: making an array file (and its control file) atomically.
//!
//! Streams reuse the mapping, the raw handle and creation for their lane files.

pub(crate) mod control;
pub(crate) mod create;
pub(crate) mod mapping;
pub(crate) mod raw;
pub(crate) mod region;
pub(crate) mod seqlock;
mod striped;
pub(crate) mod stripes;
mod typed;

pub use region::{Region, RegionRanges};
pub use typed::{Array, ReadView, RegionView, WriteView};
