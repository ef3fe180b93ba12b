//! Regions: boxes of an array's index space, and where their elements lie in the data area.
//!
//! A region gives one range of indices per leading axis (axes it leaves out are whole), as
//! NumPy's basic slicing with steps of 1 does (`a[100:200, :]`). Its elements, in the array's
//! memory order, lie in the data area as *runs*: maximal contiguous byte ranges, all of the
//! same length. In memory order (outermost axis first: axis 0 for C order, the last axis for
//! F order), let `j` be the innermost axis the region does not take whole; the axes inside
//! `j` are whole, so each run is `len(range_j)` times the bytes of one step of axis `j`, and
//! there is one run per combination of indices on the axes outside `j`. A region that takes
//! every axis whole is one run, the whole data area.
//!
//! A read or write of a region in a striped array takes the stripes of its *span*, the bytes
//! from the start of its first run to the end of its last (module `stripes`).

use std::ops::Range;

use super::raw::{RawArray, Snapshot, WriteScope};
use super::seqlock;
use crate::error::{ReadError, RegionError, WaitTimeout, WriteError};
use crate::format::Header;
use crate::shape::Order;

/// What names a region: one range of indices per leading axis, as `&[100..200, 0..4]`
/// (`&[Range<u64>]`, an array or a `Vec` of ranges), or a single range of the first axis
/// (`100..200`: those rows, every other axis whole).
pub trait RegionRanges {
    /// The ranges, one per leading axis.
    fn ranges(&self) -> &[Range<u64>];
}

impl RegionRanges for [Range<u64>] {
    fn ranges(&self) -> &[Range<u64>] {
        self
    }
}

impl<const N: usize> RegionRanges for [Range<u64>; N] {
    fn ranges(&self) -> &[Range<u64>] {
        self
    }
}

impl RegionRanges for Vec<Range<u64>> {
    fn ranges(&self) -> &[Range<u64>] {
        self
    }
}

impl RegionRanges for Range<u64> {
    fn ranges(&self) -> &[Range<u64>] {
        std::slice::from_ref(self)
    }
}

impl<T: RegionRanges + ?Sized> RegionRanges for &T {
    fn ranges(&self) -> &[Range<u64>] {
        (**self).ranges()
    }
}

/// A region of one array, checked against its shape: where its runs lie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// The array's shape, order and element size, which the region was checked against.
    array: (Vec<u64>, Order, usize),
    /// The region's extent on each axis, in the array's axis order.
    shape: Vec<u64>,
    /// The region's ranges on the axes outside the innermost partial one, in memory order
    /// (outermost first), and the byte step of each of those axes.
    outer: Vec<(Range<u64>, u64)>,
    /// Byte offset of the first run's start, ignoring the outer axes' starts.
    inner_start: u64,
    /// Bytes per run.
    run: u64,
    /// Runs in the region (0 if it is empty).
    count: u64,
}

impl Region {
    /// The region of `header`'s array that `ranges` give (one per leading axis, in the
    /// array's axis order; axes left out are whole).
    ///
    /// # Errors
    /// [`RegionError::TooManyAxes`] or [`RegionError::OutOfBounds`], naming the values.
    pub(crate) fn new(header: &Header, ranges: &[Range<u64>]) -> Result<Region, RegionError> {
        let dims = &header.shape;
        if ranges.len() > dims.len() {
            return Err(RegionError::TooManyAxes {
                given: ranges.len(),
                ndim: dims.len(),
            });
        }
        for (axis, (r, &len)) in ranges.iter().zip(dims).enumerate() {
            if r.start > r.end || r.end > len {
                return Err(RegionError::OutOfBounds {
                    axis,
                    start: r.start,
                    end: r.end,
                    len,
                });
            }
        }
        let full = |axis: usize| ranges.get(axis).cloned().unwrap_or(0..dims[axis]);
        let shape: Vec<u64> = (0..dims.len())
            .map(|a| full(a).end - full(a).start)
            .collect();
        // Axes in memory order, outermost first.
        let order: Vec<usize> = match header.order {
            Order::C => (0..dims.len()).collect(),
            Order::F => (0..dims.len()).rev().collect(),
        };
        // Byte step of each axis (in the array's axis order). The data area holds the whole
        // array (at most MAX_DATA_LEN bytes), so none of these overflow.
        let mut step = vec![0u64; dims.len()];
        let mut bytes = header.dtype.size() as u64;
        for &a in order.iter().rev() {
            step[a] = bytes;
            bytes *= dims[a];
        }
        let count_elems: u64 = shape.iter().product();
        // The innermost axis (in memory order) the region does not take whole.
        let partial = order.iter().rposition(|&a| full(a) != (0..dims[a]));
        let (outer, inner_start, run) = match partial {
            None => (Vec::new(), 0, header.data_len),
            Some(p) => {
                let j = order[p];
                let r = full(j);
                let outer = order[..p].iter().map(|&a| (full(a), step[a])).collect();
                (outer, r.start * step[j], (r.end - r.start) * step[j])
            }
        };
        let count = if count_elems == 0 || run == 0 {
            0
        } else {
            outer
                .iter()
                .map(|(r, _): &(Range<u64>, u64)| r.end - r.start)
                .product()
        };
        Ok(Region {
            array: (dims.clone(), header.order, header.dtype.size()),
            shape,
            outer,
            inner_start,
            run,
            count,
        })
    }

    /// Checks that the region was made for an array of `header`'s shape, order and element
    /// size (so that its runs lie inside the data area).
    ///
    /// # Errors
    /// [`RegionError::OtherArray`].
    pub(crate) fn check_for(&self, header: &Header) -> Result<(), RegionError> {
        let (shape, order, size) = &self.array;
        if *shape != header.shape || *order != header.order || *size != header.dtype.size() {
            return Err(RegionError::OtherArray {
                made_for: self.array.0.clone(),
                shape: header.shape.clone(),
            });
        }
        Ok(())
    }

    /// Elements the region holds.
    pub fn len(&self) -> u64 {
        self.shape.iter().product()
    }

    /// The region's extent on each axis, in the array's axis order.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Bytes the region holds.
    pub fn byte_len(&self) -> u64 {
        self.run * self.count
    }

    /// Whether the region holds no element.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the region is one contiguous byte range of the data area.
    pub fn is_contiguous(&self) -> bool {
        self.count <= 1
    }

    /// Bytes per run.
    pub(crate) fn run_len(&self) -> u64 {
        self.run
    }

    /// The data-area offset of run `k` (`k < runs()`), the runs taken in memory order.
    pub(crate) fn run_start(&self, mut k: u64) -> u64 {
        let mut at = self.inner_start;
        for (r, step) in self.outer.iter().rev() {
            let n = r.end - r.start;
            at += (r.start + k % n) * step;
            k /= n;
        }
        at
    }

    /// The bytes from the start of the first run to the end of the last: what a striped
    /// array's read or write of the region takes the stripes of. Empty for an empty region.
    pub(crate) fn span(&self) -> Range<u64> {
        if self.count == 0 {
            return 0..0;
        }
        self.run_start(0)..self.run_start(self.count - 1) + self.run
    }

    /// Whether the region holds every byte of `bytes` (a non-empty range inside the data
    /// area): whether `bytes` lies inside one run, since two runs are never adjacent.
    pub(crate) fn covers(&self, bytes: Range<u64>) -> bool {
        if self.count == 0 || bytes.is_empty() {
            return false;
        }
        // The run that would hold `bytes.start`: its index on each outer axis, from the
        // offset's digits in the axes' steps; every digit must lie inside the region.
        let mut rest = bytes.start;
        let mut start = 0;
        for (r, step) in &self.outer {
            let i = rest / step;
            if !r.contains(&i) {
                return false;
            }
            start += i * step;
            rest -= i * step;
        }
        let run = start + self.inner_start..start + self.inner_start + self.run;
        run.start <= bytes.start && bytes.end <= run.end
    }

    /// Calls `f` with each run's data offset, the byte offset inside the region where it
    /// goes, and its length, in memory order.
    pub(crate) fn for_each_run(&self, mut f: impl FnMut(u64, u64, u64)) {
        for k in 0..self.count {
            f(self.run_start(k), k * self.run, self.run);
        }
    }
}

impl RawArray {
    /// The region of this array that `ranges` give: one range of indices per leading axis
    /// (axes left out are whole), as `a[100:200, :]` in NumPy.
    ///
    /// # Errors
    /// [`RegionError::TooManyAxes`] or [`RegionError::OutOfBounds`], naming the values.
    pub fn region(&self, ranges: impl RegionRanges) -> Result<Region, RegionError> {
        Region::new(self.header(), ranges.ranges())
    }

    /// Copies `region` into `dst` (its bytes in the array's memory order, `region.byte_len()`
    /// of them) as one consistent snapshot. In a striped array only the stripes of the
    /// region's span are validated, so writers elsewhere do not make this retry; the version
    /// is a lower bound: every write it counts is in the copy, and later writes elsewhere
    /// may be counted in later versions. With one sequence (or a region of every stripe) it
    /// is exact.
    ///
    /// # Errors
    /// [`ReadError::Region`] if the region is another array's or `dst` is not its size;
    /// [`ReadError::Torn`] if one of its stripes is torn (unless accepted);
    /// [`ReadError::Timeout`].
    pub fn read_region_bytes(
        &self,
        region: &Region,
        dst: &mut [u8],
    ) -> Result<Snapshot, ReadError> {
        region.check_for(self.header())?;
        if dst.len() as u64 != region.byte_len() {
            let size = self.header().dtype.size() as u64;
            return Err(RegionError::LengthMismatch {
                expected: region.len(),
                got: dst.len() as u64 / size.max(1),
            }
            .into());
        }
        let copy = |data: *const u8, _| {
            region.for_each_run(|at, into, len| {
                let (at, into, len) = (at as usize, into as usize, len as usize);
                // SAFETY: the region was checked against this array, so its runs lie inside
                // the data area mapped for `padded_len(data_len)` bytes; `dst` is its size.
                unsafe { seqlock::load_bytes(data, at, &mut dst[into..into + len]) };
            });
        };
        let got = if self.is_striped() {
            self.read_stripes(false, region.span(), copy)
        } else {
            self.read_protocol(false, copy)
        };
        self.released(region.span(), got).map(|(_, snap)| snap)
    }

    /// Writes `src` (the region's bytes in the array's memory order) into `region` and
    /// publishes. In a striped array only the stripes of the region's span are taken, so
    /// writers of other stripes go on at once; the write clears TORN on the stripes it
    /// replaces whole. With one sequence it takes the array and clears TORN only if the
    /// region is all of it. Returns the version.
    ///
    /// # Errors
    /// [`WriteError::Region`], [`WriteError::ReadOnly`], [`WriteError::Timeout`],
    /// [`WriteError::LostWriteSide`].
    pub fn write_region_bytes(&self, region: &Region, src: &[u8]) -> Result<u64, WriteError> {
        region.check_for(self.header())?;
        if src.len() as u64 != region.byte_len() {
            let size = self.header().dtype.size() as u64;
            return Err(RegionError::LengthMismatch {
                expected: region.len(),
                got: src.len() as u64 / size.max(1),
            }
            .into());
        }
        self.write_region_protocol(region, true, |scope| {
            region.for_each_run(|at, from, len| {
                let (at, from, len) = (at as usize, from as usize, len as usize);
                // SAFETY: inside the data area (checked region); the region's stripes (or the
                // array) are held.
                unsafe { seqlock::store_bytes(scope.data_ptr(), at, &src[from..from + len]) };
            });
            scope.version()
        })
    }

    /// A number that grows each time a write (or a recovery) of `region` is published, and
    /// not for writes elsewhere in a striped array: how many times its stripes were published
    /// (for an array with one sequence, the version). Take it *before* reading the region,
    /// then [`RawArray::wait_for_region`] with it: a write between the two makes the wait
    /// return at once, so no change is missed. A writer that hands a stripe back unwritten
    /// (stepping back for another writer) also moves it: a wait may return with nothing new.
    pub fn region_stamp(&self, region: &Region) -> u64 {
        self.span_stamp(region.span())
    }

    /// [`RawArray::region_stamp`] for the data bytes `bytes` (a binding's view of a region);
    /// an empty or out-of-range span counts the stripes it falls in, if any.
    pub fn span_stamp(&self, bytes: Range<u64>) -> u64 {
        let stamp = if self.is_striped() {
            let lines = self.lines();
            let end = bytes.end.min(self.header().data_len);
            self.stripes_of(bytes.start.min(end), end)
                .map(|k| lines[k].seq.load(std::sync::atomic::Ordering::Relaxed) / 2)
                .fold(0u64, u64::wrapping_add)
        } else {
            self.sequence() / 2
        };
        // Acquire: what follows (the caller's read of the region) is ordered after it.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        stamp
    }

    /// Waits until `region` changes: until [`RawArray::region_stamp`] is above `newer_than`,
    /// and returns it. Writes to other stripes of a striped array wake the waiter (every
    /// publish bumps the array's futex word) but do not end the wait. Works on read-only
    /// handles.
    ///
    /// # Errors
    /// [`WaitTimeout`] (its versions are stamps) when `timeout` passes first.
    pub fn wait_for_region(
        &self,
        region: &Region,
        newer_than: u64,
        timeout: std::time::Duration,
    ) -> Result<u64, WaitTimeout> {
        self.wait_for_span(region.span(), newer_than, timeout)
    }

    /// [`RawArray::wait_for_region`] for the data bytes `bytes` (a binding's view of a region).
    ///
    /// # Errors
    /// As [`RawArray::wait_for_region`].
    pub fn wait_for_span(
        &self,
        bytes: Range<u64>,
        newer_than: u64,
        timeout: std::time::Duration,
    ) -> Result<u64, WaitTimeout> {
        let mut backoff = crate::backoff::Backoff::new(timeout);
        loop {
            // The futex word first: a publish after this read changes it, so the sleep below
            // returns at once (as in `wait_for_version`).
            let futex_seen = self.futex_snapshot();
            let stamp = self.span_stamp(bytes.clone());
            if stamp > newer_than {
                return Ok(stamp);
            }
            if !self.pause(&mut backoff, futex_seen) {
                return Err(WaitTimeout {
                    newer_than,
                    current: stamp,
                    waited: backoff.elapsed(),
                });
            }
        }
    }

    /// Takes the write side of `region` (its span's stripes, or the array), runs `body`,
    /// publishes. `restores` says the body replaces every byte of the region: TORN is then
    /// cleared on the stripes the region covers whole (on the array if it is all of it).
    pub(crate) fn write_region_protocol<R>(
        &self,
        region: &Region,
        restores: bool,
        body: impl FnOnce(&WriteScope<'_>) -> R,
    ) -> Result<R, WriteError> {
        let full = region.byte_len() == self.header().data_len;
        let covered = if self.is_striped() {
            self.stripes_within(|stripe| region.covers(stripe))
        } else {
            0
        };
        let written = self.write_protocol_covering(
            region.span(),
            restores && (full || covered != 0),
            covered,
            body,
        );
        self.released(region.span(), written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::create::create_array_file;
    use crate::dtype::DType;
    use crate::format::ArraySpec;
    use crate::{Access, Array};

    fn header(shape: &[u64], order: Order) -> Header {
        let mut spec = ArraySpec::new("r", DType::U16, shape.to_vec());
        spec.order = order;
        Header::new(&spec).unwrap()
    }

    /// Byte offsets of every element of the region, in memory order, the slow way.
    fn offsets_naive(h: &Header, ranges: &[Range<u64>]) -> Vec<u64> {
        let dims = &h.shape;
        let full: Vec<Range<u64>> = (0..dims.len())
            .map(|a| ranges.get(a).cloned().unwrap_or(0..dims[a]))
            .collect();
        let order: Vec<usize> = match h.order {
            Order::C => (0..dims.len()).collect(),
            Order::F => (0..dims.len()).rev().collect(),
        };
        let mut out = Vec::new();
        let mut idx: Vec<u64> = full.iter().map(|r| r.start).collect();
        if full.iter().any(|r| r.is_empty()) {
            return out;
        }
        loop {
            let mut off = 0;
            for &a in &order {
                off = off * dims[a] + idx[a];
            }
            out.push(off * 2);
            // Odometer, innermost memory axis fastest.
            let mut p = order.len();
            loop {
                if p == 0 {
                    return out;
                }
                p -= 1;
                let a = order[p];
                idx[a] += 1;
                if idx[a] < full[a].end {
                    break;
                }
                idx[a] = full[a].start;
            }
        }
    }

    fn offsets_by_runs(r: &Region) -> Vec<u64> {
        let mut out = Vec::new();
        let mut next = 0;
        r.for_each_run(|at, into, len| {
            assert_eq!(into, next, "runs fill the region in order");
            next += len;
            out.extend((0..len / 2).map(|i| at + 2 * i));
        });
        out
    }

    /// Every region of small C and F arrays, against the slow way: the same bytes in the
    /// same order, the span from the first to the last, and `covers` exactly the ranges all
    /// of whose bytes are in the region.
    #[test]
    fn runs_match_element_by_element_offsets() {
        for order in [Order::C, Order::F] {
            for dims in [vec![5u64], vec![4, 3], vec![3, 4, 2], vec![2, 0, 3]] {
                let h = header(&dims, order);
                let ranges_of = |d: u64| {
                    let mut v = Vec::new();
                    for a in 0..=d {
                        for b in a..=d {
                            v.push(a..b);
                        }
                    }
                    v
                };
                // Every region of 0, 1, ... ndim ranges.
                let mut regions: Vec<Vec<Range<u64>>> = vec![vec![]];
                let mut level = regions.clone();
                for &d in &dims {
                    level = level
                        .iter()
                        .flat_map(|r| {
                            ranges_of(d).into_iter().map(move |x| {
                                let mut r = r.clone();
                                r.push(x);
                                r
                            })
                        })
                        .collect();
                    regions.extend(level.iter().cloned());
                }
                for ranges in regions {
                    let region = Region::new(&h, &ranges).unwrap();
                    let want = offsets_naive(&h, &ranges);
                    assert_eq!(
                        offsets_by_runs(&region),
                        want,
                        "{dims:?} {order:?} {ranges:?}"
                    );
                    assert_eq!(region.byte_len(), 2 * want.len() as u64);
                    let span = region.span();
                    match (want.first(), want.last()) {
                        (Some(&a), Some(&b)) => assert_eq!(span, a..b + 2),
                        _ => assert!(span.is_empty()),
                    }
                    for a in (0..h.data_len).step_by(2) {
                        for b in (a + 2..=h.data_len).step_by(2) {
                            let all = (a..b).step_by(2).all(|x| want.contains(&x));
                            assert_eq!(region.covers(a..b), all, "{ranges:?} {a}..{b}");
                        }
                    }
                    assert_eq!(
                        region.is_contiguous(),
                        want.windows(2).all(|w| w[1] == w[0] + 2)
                    );
                }
            }
        }
    }

    #[test]
    fn bad_regions_name_the_axis_and_values() {
        let h = header(&[4, 3], Order::C);
        assert_eq!(
            Region::new(&h, &[0..1, 0..1, 0..1]),
            Err(RegionError::TooManyAxes { given: 3, ndim: 2 })
        );
        assert_eq!(
            Region::new(&h, &[0..4, 1..5]),
            Err(RegionError::OutOfBounds {
                axis: 1,
                start: 1,
                end: 5,
                len: 3
            })
        );
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 3..2;
        assert!(matches!(
            Region::new(&h, backwards.ranges()),
            Err(RegionError::OutOfBounds { axis: 0, .. })
        ));
        let e = Region::new(&h, &[0..4, 1..5]).unwrap_err().to_string();
        assert!(
            e.contains("axis 1") && e.contains("1..5") && e.contains('3'),
            "{e}"
        );
    }

    fn open(dir: &std::path::Path, shape: &[u64], order: Order, stripes: u32) -> Array<u32> {
        let name = format!("t{}{:?}{order:?}{stripes}", shape.len(), shape[0]);
        let mut spec = ArraySpec::new(name, DType::U32, shape.to_vec());
        spec.order = order;
        spec.stripes = stripes;
        let (path, _) = create_array_file(dir, &spec).unwrap();
        let mut a = Array::<u32>::open(path, Access::Write).unwrap();
        a.raw_mut()
            .set_timeout(std::time::Duration::from_millis(300));
        a
    }

    /// Region writes and reads through the typed handle agree with the same slices taken of
    /// a plain copy, for C and F arrays with one sequence and with stripes.
    #[test]
    fn typed_region_writes_and_reads_match_a_plain_copy() {
        let dir = tempfile::tempdir().unwrap();
        let shape = [64u64, 24];
        for (order, stripes) in [(Order::C, 1), (Order::C, 8), (Order::F, 1), (Order::F, 6)] {
            let a = open(dir.path(), &shape, order, stripes);
            assert_eq!(a.is_striped(), stripes > 1, "{order:?} {stripes}");
            let mut model = ndarray::Array2::<u32>::zeros((64, 24));
            let mut seed = 7u64;
            let mut next = |n: u64| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) % n
            };
            for round in 0..150u32 {
                let (r0, r1) = (next(64), next(64));
                let (c0, c1) = (next(24), next(24));
                let rows = r0.min(r1)..r0.max(r1) + 1;
                let cols = c0.min(c1)..c0.max(c1) + 1;
                let region = [rows.clone(), cols.clone()];
                let mut block = model.slice_mut(ndarray::s![
                    rows.start as usize..rows.end as usize,
                    cols.start as usize..cols.end as usize
                ]);
                let values: Vec<u32> = (0..block.len() as u32)
                    .map(|i| round * 10_000 + i)
                    .collect();
                // The region's elements in the array's memory order.
                let mut k = 0;
                let mut put = |x: &mut u32| {
                    *x = values[k];
                    k += 1;
                };
                if order == Order::C {
                    block.iter_mut().for_each(&mut put);
                } else {
                    block
                        .view_mut()
                        .reversed_axes()
                        .iter_mut()
                        .for_each(&mut put);
                }
                if round % 2 == 0 {
                    a.write_region_from(&region, &values).unwrap();
                } else {
                    a.write_region(&region, |v| {
                        assert_eq!(v.shape(), [rows.end - rows.start, cols.end - cols.start]);
                        v.copy_from(0, &values[..values.len() / 2]);
                        for (i, &x) in values.iter().enumerate().skip(values.len() / 2) {
                            v.set(i, x);
                        }
                        assert_eq!(v.get(values.len() - 1), *values.last().unwrap());
                    })
                    .unwrap();
                }
                let (r2, r3) = (next(64), next(64));
                let rows = r2.min(r3)..r2.max(r3) + 1;
                let (got, _) = a.read_region(rows.clone()).unwrap();
                let want = model.slice(ndarray::s![rows.start as usize..rows.end as usize, ..]);
                assert_eq!(got.into_dimensionality::<ndarray::Ix2>().unwrap(), want);
            }
            let (all, snap) = a.read_region(&[]).unwrap();
            assert_eq!(all.into_dimensionality::<ndarray::Ix2>().unwrap(), model);
            assert_eq!(snap.version, 150);
        }
    }

    /// A region write clears TORN on the stripes it replaces whole and no others; a region
    /// with gaps replaces none. Bad regions and buffers are errors that name the values.
    #[test]
    fn region_writes_clear_torn_only_where_they_replace_stripes() {
        let dir = tempfile::tempdir().unwrap();
        // 4 stripes of 16 rows of 8 u32 (512 bytes each).
        let a = open(dir.path(), &[64, 8], Order::C, 4);
        assert_eq!(a.header().stripe_bytes, 512);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.write_region(0..64, |_| panic!("half done"))
        }));
        assert!(r.is_err());
        assert!(a.is_torn());
        let torn = |a: &Array<u32>| -> Vec<bool> {
            (0..4)
                .map(|k| a.read_region(k * 16..k * 16 + 1).is_err())
                .collect()
        };
        assert_eq!(torn(&a), [true; 4]);
        // Rows 10..40: stripe 1 whole, stripes 0 and 2 in part.
        a.write_region_from(10..40, &[1; 30 * 8]).unwrap();
        assert_eq!(torn(&a), [true, false, true, true]);
        // Columns 0..4 of rows 32..48: stripe 2's rows, but with gaps.
        a.write_region(&[32..48, 0..4], |v| v.fill(2)).unwrap();
        assert_eq!(torn(&a), [true, false, true, true]);
        a.write_region(&[32..48, 0..8], |v| v.fill(3)).unwrap();
        assert_eq!(torn(&a), [true, false, false, true]);
        // Without clear_torn, a closure write clears nothing.
        a.write_region(48..64, |v| v.set(0, 4)).unwrap();
        assert_eq!(torn(&a), [true, false, false, true]);

        let e = a.read_region(0..65).unwrap_err();
        assert!(e.to_string().contains("0..65 on axis 0"), "{e}");
        let e = a.write_region_from(0..2, &[0; 3]).unwrap_err();
        assert_eq!(
            e,
            WriteError::Region(RegionError::LengthMismatch {
                expected: 16,
                got: 3
            })
        );
        let other = a.region(0..2).unwrap();
        let b = open(dir.path(), &[8, 64], Order::C, 1);
        let e = b.read_region_bytes(&other, &mut [0; 64]).unwrap_err();
        assert!(
            matches!(e, ReadError::Region(RegionError::OtherArray { .. })),
            "{e}"
        );
        let mut small = [0u32; 3];
        assert!(
            a.read_region_into(&[0..1, 0..3], &mut small).is_err(),
            "torn"
        );
        a.write_region_from(&[0..1, 0..3], &[5, 6, 7]).unwrap();
        let e = a.read_region_into(1..2, &mut [0; 8]).unwrap_err();
        assert!(
            matches!(e, ReadError::Torn { .. }),
            "stripe 0 is still torn: {e}"
        );
    }

    /// A wait for a region ends on a write of that region, not on writes elsewhere (which
    /// only wake it), and a stamp taken before a write makes the wait return at once.
    #[test]
    fn a_region_wait_ends_on_its_own_region_only() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path(), &[64, 8], Order::C, 4);
        let mine = a.region(0..16).unwrap();
        let stamp = a.region_stamp(&mine);
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                for _ in 0..20 {
                    a.write_region(32..48, |v| v.fill(1)).unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
                a.write_region(8..9, |v| v.fill(2)).unwrap();
            });
            let got = a
                .wait_for_region(&mine, stamp, Duration::from_secs(10))
                .unwrap();
            writer.join().unwrap();
            assert_eq!(got, stamp + 1, "woken by the write of row 8 only");
        });
        assert_eq!(a.read_region(8..9).unwrap().0[[0, 0]], 2);
        let e = a
            .wait_for_region(&mine, stamp + 1, Duration::from_millis(20))
            .unwrap_err();
        assert_eq!((e.newer_than, e.current), (stamp + 1, stamp + 1));
        // A stamp taken before a write: the wait returns at once.
        let before = a.region_stamp(&mine);
        a.write_region(0..1, |v| v.fill(3)).unwrap();
        assert_eq!(
            a.wait_for_region(&mine, before, Duration::ZERO),
            Ok(before + 1)
        );
        // With one sequence the stamp is the version.
        let one = open(dir.path(), &[64, 8], Order::F, 1);
        let r = one.region(0..16).unwrap();
        one.write_region(40..41, |v| v.fill(1)).unwrap();
        assert_eq!(one.region_stamp(&r), one.version());
    }
}
