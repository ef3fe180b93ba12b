//! [`Array<T>`]: a typed handle over a mapped array file, with consistent reads, zero-copy
//! optimistic reads and closure-scoped writes.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::path::Path;

use crate::array::raw::{Access, RawArray, Snapshot, WriteScope};
use crate::array::region::{Region, RegionRanges};
use crate::array::seqlock;
use crate::dtype::{DType, Element};
use crate::error::{OpenError, ReadError, WriteError};
use crate::shape::Order;

/// A typed handle on a mapped array of `T`.
///
/// It dereferences to [`RawArray`] for what does not depend on `T`: `version()`,
/// `wait_for_version()`, `flush()`, `is_torn()`, `set_timeout()`, `recover_dead_writer()`, ...
///
/// # Example
/// ```
/// use std::time::Duration;
/// use mmshare::{create_array_file, Access, Array, ArraySpec, DType};
/// let dir = tempfile::tempdir()?;
/// let (path, _) = create_array_file(dir.path(), &ArraySpec::new("v", DType::F32, vec![3]))?;
/// let writer = Array::<f32>::open(&path, Access::Write)?;
/// let reader = Array::<f32>::open(&path, Access::Read)?;
/// writer.write_with(|view| {
///     for i in 0..view.len() {
///         view.set(i, i as f32 * 0.5);
///     }
/// })?;
/// assert_eq!(reader.read_to_vec()?, [0.0, 0.5, 1.0]);
/// // Zero-copy: sum in place, validated afterwards, retried if a write overlapped.
/// let sum = reader.read_with(|view| (0..view.len()).map(|i| view.get(i)).sum::<f32>())?;
/// assert_eq!(sum, 1.5);
/// assert_eq!(reader.wait_for_version(0, Duration::from_secs(1))?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Array<T: Element> {
    raw: RawArray,
    _element: PhantomData<fn() -> T>,
}

impl<T: Element> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("element", &T::dtype().ok())
            .field("raw", &self.raw)
            .finish()
    }
}

impl<T: Element> Deref for Array<T> {
    type Target = RawArray;
    fn deref(&self) -> &RawArray {
        &self.raw
    }
}

impl<T: Element> Array<T> {
    /// Opens and maps the array file at `path`, checking that it holds `T` elements.
    ///
    /// # Errors
    /// As [`RawArray::open`], plus [`OpenError::DTypeMismatch`].
    pub fn open(path: impl AsRef<Path>, access: Access) -> Result<Array<T>, OpenError> {
        Self::from_raw(RawArray::open(path, access)?)
    }

    /// Types an untyped handle.
    ///
    /// # Errors
    /// [`OpenError::DTypeMismatch`] when the array's dtype is not `T`'s;
    /// [`OpenError::ElementLayout`] if `T`'s size is not its dtype's size or it needs more than
    /// 8-byte alignment (impossible for the sealed [`Element`] types; checked because every
    /// index below relies on it); [`OpenError::ElementDType`] for a record type whose fields
    /// are not a valid record.
    pub fn from_raw(raw: RawArray) -> Result<Array<T>, OpenError> {
        crate::error::check_element::<T>(&raw.header().dtype)?;
        Ok(Array {
            raw,
            _element: PhantomData,
        })
    }

    /// The untyped handle back.
    pub fn into_raw(self) -> RawArray {
        self.raw
    }

    /// Mutable access to the untyped handle's settings (timeout, torn policy).
    pub fn raw_mut(&mut self) -> &mut RawArray {
        &mut self.raw
    }

    /// The dimensions.
    pub fn shape(&self) -> &[u64] {
        &self.raw.header().shape
    }

    /// The element type (always `T::dtype()`).
    pub fn dtype(&self) -> &DType {
        &self.raw.header().dtype
    }

    /// The memory order of the dimensions.
    pub fn order(&self) -> Order {
        self.raw.header().order
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        // The mapping holds every element, so the count fits in usize.
        self.raw.header().len() as usize
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn element_range(&self, start: usize, count: usize) -> Option<usize> {
        let end = start.checked_add(count)?;
        (end <= self.len()).then_some(start * size_of::<T>())
    }

    /// Copies the whole array into `dst` as one consistent snapshot.
    ///
    /// # Errors
    /// [`ReadError::LengthMismatch`] if `dst.len()` is not the element count, and the errors of
    /// [`Array::read_range_into`].
    pub fn read_into(&self, dst: &mut [T]) -> Result<Snapshot, ReadError> {
        if dst.len() != self.len() {
            return Err(ReadError::LengthMismatch {
                expected: self.len() as u64,
                got: dst.len() as u64,
            });
        }
        self.read_range_into(0, dst)
    }

    /// Copies elements `start..start + dst.len()` (in storage order) into `dst`, consistently.
    ///
    /// # Errors
    /// [`ReadError::OutOfBounds`], [`ReadError::Torn`] (unless torn data is accepted), or
    /// [`ReadError::Timeout`] when no consistent copy could be made in time.
    pub fn read_range_into(&self, start: usize, dst: &mut [T]) -> Result<Snapshot, ReadError> {
        let offset = self
            .element_range(start, dst.len())
            .ok_or(ReadError::OutOfBounds {
                start: start as u64,
                end: start.saturating_add(dst.len()) as u64,
                len: self.len() as u64,
            })?;
        self.raw
            .read_bytes(offset as u64, bytemuck::cast_slice_mut(dst))
    }

    /// A consistent copy of the whole array.
    ///
    /// # Errors
    /// [`ReadError::OutOfMemory`] if the copy cannot be allocated (read a range instead), and
    /// the errors of [`Array::read_range_into`].
    pub fn read_to_vec(&self) -> Result<Vec<T>, ReadError> {
        // The length comes from a file another process made: ask, do not assume, for memory.
        // Zeroed by the allocator (a big one is fresh pages from the kernel, not yet touched),
        // so the copy is each page's first touch: it stores through the cache.
        let mut v = bytemuck::allocation::try_zeroed_vec::<T>(self.len()).map_err(|()| {
            ReadError::OutOfMemory {
                bytes: self.raw.header().data_len,
            }
        })?;
        self.raw
            .read_bytes_fresh(0, bytemuck::cast_slice_mut(&mut v))?;
        Ok(v)
    }

    /// A consistent copy as an `ndarray` array with this array's shape and memory order.
    ///
    /// # Errors
    /// [`ReadError::ShapeTooLarge`] when `ndarray` cannot represent the shape on this machine
    /// (an axis or the product of the non-zero axes exceeds `isize::MAX`, which an empty array
    /// such as `[0, 2^63]` can do), and the errors of [`Array::read_to_vec`].
    pub fn read_array(&self) -> Result<ndarray::ArrayD<T>, ReadError> {
        use ndarray::ShapeBuilder;
        let too_large = || ReadError::ShapeTooLarge {
            shape: self.shape().to_vec(),
        };
        let dims = self
            .shape()
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| too_large()))
            .collect::<Result<Vec<usize>, _>>()?;
        // Check the shape before copying: ndarray refuses shapes whose non-zero axes multiply
        // past isize::MAX, even with no elements.
        dims.iter()
            .filter(|&&d| d != 0)
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| isize::try_from(n).is_ok())
            .ok_or_else(too_large)?;
        let data = self.read_to_vec()?;
        let shape = ndarray::IxDyn(&dims).set_f(self.order() == Order::F);
        ndarray::ArrayD::from_shape_vec(shape, data).map_err(|_| too_large())
    }

    /// Zero-copy read: runs `f` on a view of the live mapping, then validates; if a write
    /// overlapped, runs `f` again, until a run validates or the timeout passes.
    ///
    /// Element loads inside `f` are atomic, so a run that overlaps a write sees a mix of old
    /// and new values, but is never undefined behaviour; its result is thrown away. So `f` must
    /// not act on what it sees (no I/O, no sending) until this returns; compute and return.
    /// `f` must also **terminate on any input**, torn mixes included (no loop whose end
    /// depends on the data being consistent): validation happens only after it returns.
    ///
    /// If `f` panics, the panic is caught and the sequence re-checked: when a write overlapped,
    /// the panic is blamed on torn data and `f` runs again; when none did, `f` panicked on a
    /// consistent snapshot and the panic continues to the caller. (The panic hook still runs
    /// for a caught panic, so its message may be printed.)
    ///
    /// # Errors
    /// [`ReadError::Torn`] or [`ReadError::Timeout`], as for copies.
    pub fn read_with<R>(&self, mut f: impl FnMut(&ReadView<'_, T>) -> R) -> Result<R, ReadError> {
        self.raw
            .read_protocol(false, |data, s| f(&ReadView::new(data, self.len(), s)))
            .map(|(r, _)| r)
    }

    /// Like [`Array::read_with`] but runs `f` once: if a write overlapped, the result (or a
    /// panic of `f`) is discarded and [`ReadError::Conflict`] returned.
    ///
    /// # Errors
    /// [`ReadError::Conflict`], [`ReadError::Torn`], [`ReadError::Timeout`] (only while waiting
    /// for a write in progress to finish before the single run).
    pub fn try_read_with<R>(&self, f: impl FnOnce(&ReadView<'_, T>) -> R) -> Result<R, ReadError> {
        let mut f = Some(f);
        self.raw
            .read_protocol(true, |data, s| {
                let f = f.take().expect("try_read_with runs its closure once");
                f(&ReadView::new(data, self.len(), s))
            })
            .map(|(r, _)| r)
    }

    /// Takes the write side, runs `f` on a writable view, and publishes a new version.
    ///
    /// If `f` panics, the array is published as TORN (its data may be half-written) and the
    /// write side is released; the panic then continues. A closure write does not clear TORN
    /// unless it calls [`WriteView::clear_torn`] to say it restored the whole array.
    ///
    /// # Errors
    /// [`WriteError::ReadOnly`] or [`WriteError::Timeout`]; `f` did not run.
    pub fn write_with<R>(&self, f: impl FnOnce(&WriteView<'_, T>) -> R) -> Result<R, WriteError> {
        self.raw.write_protocol(false, |scope| {
            f(&WriteView {
                scope,
                len: self.len(),
                _element: PhantomData,
            })
        })
    }

    /// Replaces the whole array with `src` and publishes; clears TORN. Returns the new version.
    ///
    /// # Errors
    /// [`WriteError::LengthMismatch`], [`WriteError::ReadOnly`], [`WriteError::Timeout`].
    pub fn write_all(&self, src: &[T]) -> Result<u64, WriteError> {
        if src.len() != self.len() {
            return Err(WriteError::LengthMismatch {
                expected: self.len() as u64,
                got: src.len() as u64,
            });
        }
        self.raw.write_bytes(0, bytemuck::cast_slice(src))
    }

    /// Writes `src` at elements `start..start + src.len()` and publishes. Returns the version.
    ///
    /// # Errors
    /// [`WriteError::OutOfBounds`], [`WriteError::ReadOnly`], [`WriteError::Timeout`].
    pub fn write_range(&self, start: usize, src: &[T]) -> Result<u64, WriteError> {
        let offset = self
            .element_range(start, src.len())
            .ok_or(WriteError::OutOfBounds {
                start: start as u64,
                end: start.saturating_add(src.len()) as u64,
                len: self.len() as u64,
            })?;
        self.raw
            .write_bytes(offset as u64, bytemuck::cast_slice(src))
    }
}

/// Regions: boxes of the index space, one range per leading axis (axes left out are whole),
/// as NumPy's `a[100:200, :]`: `&[100..200, 0..4]`, or `100..200` for rows (see
/// [`RegionRanges`]). In a striped array (created with stripes) a region's read
/// validates, and its write takes, only the stripes the region lies in, so readers and writers
/// of other regions do not wait for each other; in any array they copy only the region.
impl<T: Element> Array<T> {
    /// A consistent copy of `region`, shaped as the region (in this array's memory order),
    /// and what it saw: the version is a lower bound in a striped array (every write it counts
    /// is in the copy; see [`RawArray::read_region_bytes`]).
    ///
    /// # Example
    /// ```
    /// use mmshare::{create_array_file, Access, Array, ArraySpec, DType};
    /// let dir = tempfile::tempdir()?;
    /// let mut spec = ArraySpec::new("m", DType::U32, vec![1024, 16]);
    /// spec.stripes = 8; // 128 rows per stripe
    /// let (path, _) = create_array_file(dir.path(), &spec)?;
    /// let a = Array::<u32>::open(&path, Access::Write)?;
    /// a.write_region(100..200, |rows| {
    ///     for i in 0..rows.len() {
    ///         rows.set(i, i as u32);
    ///     }
    /// })?;
    /// let (block, _) = a.read_region(&[150..152, 4..6])?;
    /// assert_eq!(block.shape(), [2, 2]);
    /// assert_eq!(block[[1, 0]], 16 * 51 + 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ReadError::Region`] for a region not inside the array, [`ReadError::OutOfMemory`],
    /// [`ReadError::ShapeTooLarge`], [`ReadError::Torn`], [`ReadError::Timeout`].
    pub fn read_region(
        &self,
        region: impl RegionRanges,
    ) -> Result<(ndarray::ArrayD<T>, Snapshot), ReadError> {
        use ndarray::ShapeBuilder;
        let region = self.raw.region(region)?;
        let too_large = || ReadError::ShapeTooLarge {
            shape: region.shape().to_vec(),
        };
        let dims = region
            .shape()
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| too_large()))
            .collect::<Result<Vec<usize>, _>>()?;
        let n = usize::try_from(region.len()).map_err(|_| too_large())?;
        let mut v = Vec::new();
        v.try_reserve_exact(n).map_err(|_| ReadError::OutOfMemory {
            bytes: region.byte_len(),
        })?;
        v.resize(n, T::zeroed());
        let snap = self
            .raw
            .read_region_bytes(&region, bytemuck::cast_slice_mut(&mut v))?;
        let shape = ndarray::IxDyn(&dims).set_f(self.order() == Order::F);
        let data = ndarray::ArrayD::from_shape_vec(shape, v).map_err(|_| too_large())?;
        Ok((data, snap))
    }

    /// Copies `region` into `dst` (its elements in this array's memory order) as one
    /// consistent snapshot.
    ///
    /// # Errors
    /// [`ReadError::Region`] for a region not inside the array or a `dst` of another size,
    /// [`ReadError::Torn`], [`ReadError::Timeout`].
    pub fn read_region_into(
        &self,
        region: impl RegionRanges,
        dst: &mut [T],
    ) -> Result<Snapshot, ReadError> {
        let region = self.raw.region(region)?;
        self.raw
            .read_region_bytes(&region, bytemuck::cast_slice_mut(dst))
    }

    /// Takes the write side of `region` only (in a striped array: its stripes), runs `f` on
    /// a view of its elements, and publishes a new version. Element `i` of the view is the
    /// region's `i`-th element in this array's memory order.
    ///
    /// As for [`Array::write_with`]: a panic in `f` publishes the region's stripes TORN, and
    /// the write clears TORN (on the stripes the region covers whole) only if `f` calls
    /// [`RegionView::clear_torn`] or [`RegionView::fill`].
    ///
    /// # Errors
    /// [`WriteError::Region`] for a region not inside the array, [`WriteError::ReadOnly`],
    /// [`WriteError::Timeout`]; `f` did not run. [`WriteError::LostWriteSide`]: it ran, and
    /// was not published.
    pub fn write_region<R>(
        &self,
        region: impl RegionRanges,
        f: impl FnOnce(&RegionView<'_, T>) -> R,
    ) -> Result<R, WriteError> {
        let region = self.raw.region(region)?;
        self.raw.write_region_protocol(&region, false, |scope| {
            f(&RegionView {
                scope,
                region: &region,
                len: region.len() as usize,
                _element: PhantomData,
            })
        })
    }

    /// Replaces `region` with `src` (its elements in this array's memory order) and
    /// publishes; clears TORN on the stripes it replaces whole. Returns the version.
    ///
    /// # Errors
    /// [`WriteError::Region`], [`WriteError::ReadOnly`], [`WriteError::Timeout`].
    pub fn write_region_from(
        &self,
        region: impl RegionRanges,
        src: &[T],
    ) -> Result<u64, WriteError> {
        let region = self.raw.region(region)?;
        self.raw
            .write_region_bytes(&region, bytemuck::cast_slice(src))
    }
}

/// A read-only view of the live mapping inside [`Array::read_with`]. Each `get` is an atomic
/// load; nothing here is a reference into shared memory.
pub struct ReadView<'a, T> {
    data: *const u8,
    len: usize,
    sequence: u64,
    _life: PhantomData<&'a T>,
}

impl<T: Element> ReadView<'_, T> {
    fn new(data: *const u8, len: usize, sequence: u64) -> Self {
        ReadView {
            data,
            len,
            sequence,
            _life: PhantomData,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The version this view is reading (valid if the read validates).
    pub fn version(&self) -> u64 {
        self.sequence / 2
    }

    /// Element `i` (in storage order).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> T {
        assert!(
            i < self.len,
            "index {i} out of bounds for {} elements",
            self.len
        );
        let mut v = T::zeroed();
        // SAFETY: `i < len`, so the element lies in the mapped data area, which the handle
        // borrowed for 'a keeps mapped; all shared accesses are atomic words.
        unsafe {
            seqlock::load_bytes(
                self.data,
                i * size_of::<T>(),
                bytemuck::bytes_of_mut(&mut v),
            )
        };
        v
    }

    /// Copies elements `start..start + dst.len()` into `dst`.
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub fn copy_to(&self, start: usize, dst: &mut [T]) {
        assert!(
            start.checked_add(dst.len()).is_some_and(|e| e <= self.len),
            "range out of bounds"
        );
        // SAFETY: as for `get`.
        unsafe {
            seqlock::load_bytes(
                self.data,
                start * size_of::<T>(),
                bytemuck::cast_slice_mut(dst),
            )
        };
    }
}

impl<T> fmt::Debug for ReadView<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadView").field("len", &self.len).finish()
    }
}

/// A writable view inside [`Array::write_with`]: the write side is held for its whole life.
pub struct WriteView<'a, T> {
    scope: &'a WriteScope<'a>,
    len: usize,
    _element: PhantomData<fn() -> T>,
}

impl<T: Element> WriteView<'_, T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The version this write will publish.
    pub fn version(&self) -> u64 {
        self.scope.version()
    }

    fn check(&self, start: usize, count: usize) -> usize {
        assert!(
            start.checked_add(count).is_some_and(|e| e <= self.len),
            "range {start}..{} out of bounds for {} elements",
            start.saturating_add(count),
            self.len
        );
        start * size_of::<T>()
    }

    /// Element `i` as it is now (this write's stores included).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> T {
        let at = self.check(i, 1);
        let mut v = T::zeroed();
        // SAFETY: in bounds of the mapped data area; the write side is held.
        unsafe { seqlock::load_bytes(self.scope.data_ptr(), at, bytemuck::bytes_of_mut(&mut v)) };
        v
    }

    /// Sets element `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn set(&self, i: usize, value: T) {
        let at = self.check(i, 1);
        // SAFETY: in bounds of the writable data area; the write side is held.
        unsafe { seqlock::store_bytes(self.scope.data_ptr(), at, bytemuck::bytes_of(&value)) };
    }

    /// Writes `src` at elements `start..start + src.len()`.
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub fn copy_from(&self, start: usize, src: &[T]) {
        let at = self.check(start, src.len());
        // SAFETY: as for `set`.
        unsafe { seqlock::store_bytes(self.scope.data_ptr(), at, bytemuck::cast_slice(src)) };
    }

    /// Sets every element to `value`.
    pub fn fill(&self, value: T) {
        const CHUNK: usize = 4096;
        let buf = vec![value; CHUNK.min(self.len)];
        let mut start = 0;
        while start < self.len {
            let n = CHUNK.min(self.len - start);
            self.copy_from(start, &buf[..n]);
            start += n;
        }
        self.clear_torn();
    }

    /// Declares that this write leaves the whole array consistent, so publishing it clears the
    /// TORN mark left by a dead writer. (`fill` and `Array::write_all` do this themselves.)
    pub fn clear_torn(&self) {
        self.scope.set_clear_torn();
    }
}

impl<T> fmt::Debug for WriteView<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteView").field("len", &self.len).finish()
    }
}

/// A writable view of a region inside [`Array::write_region`]: element `i` is the region's
/// `i`-th in the array's memory order. Each access is atomic; nothing here is a reference into
/// shared memory.
pub struct RegionView<'a, T> {
    scope: &'a WriteScope<'a>,
    region: &'a Region,
    len: usize,
    _element: PhantomData<fn() -> T>,
}

impl<T: Element> RegionView<'_, T> {
    /// Number of elements in the region.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The region's extent on each axis.
    pub fn shape(&self) -> &[u64] {
        self.region.shape()
    }

    /// The version this write will publish.
    pub fn version(&self) -> u64 {
        self.scope.version()
    }

    /// Calls `f` with each piece of the elements `start..start + count` that lies in one run:
    /// its data offset and its first element's index.
    fn pieces(&self, start: usize, count: usize, mut f: impl FnMut(usize, usize, usize)) {
        assert!(
            start.checked_add(count).is_some_and(|e| e <= self.len),
            "range {start}..{} out of bounds for a region of {} elements",
            start.saturating_add(count),
            self.len
        );
        let size = size_of::<T>();
        // A run holds whole elements: it is a whole number of steps of an axis.
        let per_run = (self.region.run_len() as usize / size.max(1)).max(1);
        let (mut i, end) = (start, start + count);
        while i < end {
            let (run, within) = (i / per_run, i % per_run);
            let n = (per_run - within).min(end - i);
            let at = self.region.run_start(run as u64) as usize + within * size;
            f(at, i, n);
            i += n;
        }
    }

    /// Element `i` as it is now (this write's stores included).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> T {
        let mut v = T::zeroed();
        self.pieces(i, 1, |at, _, _| {
            // SAFETY: inside the region, which lies in the data area; its stripes are held.
            unsafe {
                seqlock::load_bytes(self.scope.data_ptr(), at, bytemuck::bytes_of_mut(&mut v))
            };
        });
        v
    }

    /// Sets element `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn set(&self, i: usize, value: T) {
        self.copy_from(i, std::slice::from_ref(&value));
    }

    /// Writes `src` at elements `start..start + src.len()` of the region.
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub fn copy_from(&self, start: usize, src: &[T]) {
        self.pieces(start, src.len(), |at, i, n| {
            let part = &src[i - start..i - start + n];
            // SAFETY: as for `get`; the region's stripes are held for writing.
            unsafe { seqlock::store_bytes(self.scope.data_ptr(), at, bytemuck::cast_slice(part)) };
        });
    }

    /// Sets every element of the region to `value`, and clears TORN on the stripes it
    /// replaces whole.
    pub fn fill(&self, value: T) {
        const CHUNK: usize = 4096;
        let buf = vec![value; CHUNK.min(self.len)];
        let mut start = 0;
        while start < self.len {
            let n = CHUNK.min(self.len - start);
            self.copy_from(start, &buf[..n]);
            start += n;
        }
        self.clear_torn();
    }

    /// Declares that this write replaced every element of the region, so publishing it clears
    /// the TORN marks of the stripes it covers whole.
    pub fn clear_torn(&self) {
        self.scope.set_clear_torn();
    }
}

impl<T> fmt::Debug for RegionView<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegionView")
            .field("shape", &self.region.shape())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::create::create_array_file;
    use crate::array::raw::Access;
    use crate::format::ArraySpec;

    fn make<T: Element>(shape: Vec<u64>) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) =
            create_array_file(dir.path(), &ArraySpec::new("a", T::dtype().unwrap(), shape))
                .unwrap();
        (dir, path)
    }

    /// A whole read into memory allocated for it (`read_to_vec`) stores through the cache; one
    /// into a buffer the caller has (`read_into`) streams past it, as big copies do. Both give
    /// the array's bytes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn only_reads_into_a_reused_buffer_stream_past_the_cache() {
        use crate::array::seqlock::NON_TEMPORAL_COPIES;
        if !std::arch::is_x86_feature_detected!("avx2") {
            return; // no vector copy: neither streams
        }
        let n = (4 << 20) + 4096; // past the size from which a reused buffer is streamed to
        let (_d, path) = make::<u8>(vec![n as u64]);
        let a = Array::<u8>::open(&path, Access::Write).unwrap();
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        a.write_all(&data).unwrap();
        let streamed = || NON_TEMPORAL_COPIES.with(std::cell::Cell::get);
        let before = streamed();
        assert!(a.read_to_vec().unwrap() == data);
        assert_eq!(streamed(), before, "read_to_vec streamed into its new Vec");
        let mut out = vec![0u8; n];
        a.read_into(&mut out).unwrap();
        assert!(out == data);
        assert!(
            streamed() > before,
            "read_into did not stream into a buffer it was given"
        );
    }

    /// Opening with the wrong element type names both dtypes.
    #[test]
    fn open_with_another_element_type_is_a_clear_error() {
        let (_d, path) = make::<f32>(vec![4]);
        let err = Array::<f64>::open(&path, Access::Read).unwrap_err();
        assert_eq!(
            err.to_string(),
            "its elements are <f4, but the program asked for <f8"
        );
    }

    /// Typed ranges, views and whole-array writes agree with a plain Vec oracle.
    #[test]
    fn typed_reads_and_writes_match_a_vec_oracle() {
        let (_d, path) = make::<u16>(vec![3, 7]);
        let a = Array::<u16>::open(&path, Access::Write).unwrap();
        let mut oracle = vec![0u16; 21];
        let data: Vec<u16> = (100..121).collect();
        a.write_all(&data).unwrap();
        oracle.copy_from_slice(&data);
        a.write_range(5, &[1, 2, 3]).unwrap();
        oracle[5..8].copy_from_slice(&[1, 2, 3]);
        a.write_with(|v| {
            v.set(20, 9);
            assert_eq!(v.get(5), 1);
            assert_eq!(v.version(), 3);
        })
        .unwrap();
        oracle[20] = 9;
        assert_eq!(a.read_to_vec().unwrap(), oracle);
        let mut part = [0u16; 4];
        assert_eq!(a.read_range_into(4, &mut part).unwrap().version, 3);
        assert_eq!(part, oracle[4..8]);
        assert_eq!(a.read_with(|v| v.get(20)).unwrap(), 9);
        assert_eq!(a.try_read_with(|v| v.len()).unwrap(), 21);
        assert!(matches!(
            a.read_range_into(19, &mut part),
            Err(ReadError::OutOfBounds {
                start: 19,
                end: 23,
                len: 21
            })
        ));
        assert!(matches!(
            a.write_all(&[0; 3]),
            Err(WriteError::LengthMismatch {
                expected: 21,
                got: 3
            })
        ));
    }

    /// An element type whose size is not its dtype's size. Only this crate can write this
    /// (the trait is sealed; see the `compile_fail` example on `Element`), which is exactly
    /// why the check at open must hold on its own.
    #[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
    #[repr(transparent)]
    struct Big([u64; 512]);
    impl crate::dtype::sealed::Sealed for Big {}
    impl Element for Big {
        fn dtype() -> Result<DType, crate::DTypeError> {
            Ok(DType::U8)
        }
    }

    /// A typed handle whose element size disagrees with the dtype is refused at open, so
    /// `get`/`set` can never index past the mapping.
    #[test]
    fn element_type_of_the_wrong_size_is_refused_at_open() {
        let (_d, path) = make::<u8>(vec![16]);
        let err = Array::<Big>::open(&path, Access::Write).unwrap_err();
        assert!(
            matches!(
                err,
                OpenError::ElementLayout {
                    dtype: DType::U8,
                    size: 4096,
                    align: 8,
                    expected: 1
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("4096 bytes"), "{err}");
    }

    /// Shapes the format accepts but ndarray cannot hold are an error from `read_array`, not a
    /// panic.
    #[test]
    fn read_array_of_an_unrepresentable_shape_is_an_error() {
        for shape in [vec![0, 1 << 63], vec![1 << 62, 0, 4]] {
            let (_d, path) = make::<u8>(shape.clone());
            let a = Array::<u8>::open(&path, Access::Read).unwrap();
            assert_eq!(a.read_to_vec().unwrap(), Vec::<u8>::new());
            assert_eq!(
                a.read_array().unwrap_err(),
                ReadError::ShapeTooLarge { shape }
            );
        }
        let (_d, path) = make::<u8>(vec![2, 0, 1 << 40]);
        let a = Array::<u8>::open(&path, Access::Read).unwrap();
        assert_eq!(a.read_array().unwrap().shape(), [2, 0, 1 << 40]);
    }

    /// A closure that panics on data torn by an overlapping write is run again; one that
    /// panics on a consistent snapshot propagates its panic.
    #[test]
    fn read_with_retries_a_panic_on_torn_data_and_propagates_one_on_consistent_data() {
        let (_d, path) = make::<u32>(vec![2]);
        let w = Array::<u32>::open(&path, Access::Write).unwrap();
        let r = Array::<u32>::open(&path, Access::Read).unwrap();
        w.write_all(&[1, 1]).unwrap();
        let mut runs = 0;
        let sum = r
            .read_with(|v| {
                runs += 1;
                if runs == 1 {
                    // A write lands while this run looks at the data: it sees a torn mix.
                    w.write_all(&[2, 2]).unwrap();
                    panic!("saw a torn pair");
                }
                v.get(0) + v.get(1)
            })
            .unwrap();
        assert_eq!((runs, sum), (2, 4));
        let mut once = 0;
        let conflict = r.try_read_with(|_| {
            once += 1;
            w.write_all(&[3, 3]).unwrap();
            panic!("torn");
        });
        assert!(
            matches!(conflict, Err(ReadError::Conflict { .. })),
            "{conflict:?}"
        );
        assert_eq!(once, 1);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.read_with(|v| {
                assert_eq!(v.get(0), 4, "a bug of the caller's own");
            })
        }));
        let message = caught.unwrap_err();
        let message = message
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        assert!(message.contains("a bug of the caller's own"), "{message}");
    }

    /// 0-d and empty arrays behave: one element, and none.
    #[test]
    fn zero_dimensional_and_empty_arrays_work() {
        let (_d, path) = make::<f64>(vec![]);
        let a = Array::<f64>::open(&path, Access::Write).unwrap();
        assert_eq!(a.len(), 1);
        a.write_all(&[2.5]).unwrap();
        assert_eq!(a.read_to_vec().unwrap(), [2.5]);
        let (_d2, path) = make::<f64>(vec![3, 0]);
        let e = Array::<f64>::open(&path, Access::Write).unwrap();
        assert!(e.is_empty());
        assert_eq!(e.write_all(&[]).unwrap(), 1);
        assert_eq!(e.read_to_vec().unwrap(), Vec::<f64>::new());
    }
}
