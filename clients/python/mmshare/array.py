"""SharedArray: a mapped mmshare array, read and written through the Rust core.

The seqlock protocol of docs/FORMAT.md (the consistent copy, the write side with its
identity word, publishing, recovery of a dead writer's write) runs in `mmshare._native`, the
same Rust code as the Rust API; this module shapes it for NumPy users.

Views without copies: the native handle gives the address and length of its mapping, and a
small object carrying NumPy's `__array_interface__` turns them into an ndarray whose `base` is
that object, which holds the native handle, which owns the mapping. A view therefore keeps the
pages mapped for as long as it exists, even after `close()`.

`read()` copies with the GIL released (any number of threads may read at once); `read(index=)`
applies the index inside the read protocol, between the two sequence loads, so fancy, boolean
and scalar indexes (which copy as they are applied) return the copy that was validated.
`.array` is read-only on every handle; the only writable view is the one `write()` yields, made
read-only when its block ends.
"""

import ast
from contextlib import contextmanager

import types

import numpy as np

from . import _fork, errors


CASTINGS = ("no", "equiv", "safe", "same_kind", "unsafe")
# Booleans, integers (signed or not), floats, complex numbers: what 'same_kind' lets a
# Python number go into.
_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def numpy_dtype(text: str) -> np.dtype:
    """The NumPy dtype of a dtype as the daemon names it: a descr string (`'<f4'`,
    `'<M8[ns]'`), or a record's descr list (`"[('x', '<f4'), ('', '|V4'), ('t', '<u8')]"`),
    read as the `.npy` format reads it, unnamed `|Vn` entries being padding."""
    if text.startswith("["):
        return np.lib.format.descr_to_dtype(ast.literal_eval(text))
    return np.dtype(text)


def dtype_text(dtype) -> str:
    """What the daemon is sent for `dtype`: a string as given (the daemon parses and names
    it), else NumPy's descr: `'<f4'`, or a record's field list with every offset and the
    itemsize spelled out (padding as unnamed `|Vn` entries), as `.npy` headers hold it."""
    if isinstance(dtype, str):
        return dtype
    dtype = np.dtype(dtype)
    if dtype.subdtype is not None:
        raise ValueError(
            f"dtype {dtype} is a subarray dtype: give its element dtype "
            f"({dtype.subdtype[0]}) and put {dtype.subdtype[1]} into the shape")
    if dtype.names is not None:
        return repr(np.lib.format.dtype_to_descr(dtype))
    return dtype.str


def check_cast(value, dtype: np.dtype, casting: str, what: str) -> None:
    """Raises TypeError unless NumPy's `casting` rule lets `value` be written into elements of
    `dtype` (the rule of `np.copyto`): by default 'same_kind', so a float is never silently
    truncated into an integer array, nor a complex into a real one. A record takes a tuple
    (or a list of tuples), each item checked against its field, or records with the same
    field names; a time takes dates and strings, converted as NumPy converts them."""
    if casting == "unsafe":
        return
    if dtype.names is not None and not isinstance(value, (np.ndarray, np.generic)):
        _check_record(value, dtype, casting, what)
        return
    if dtype.kind in "Mm" and not isinstance(value, (np.ndarray, np.generic)):
        src = np.asarray(value).dtype
        if src.kind in "OUS":
            np.asarray(value, dtype=dtype)  # raises for what is not a date
            return
    if isinstance(value, (np.ndarray, np.generic)):
        src = value.dtype
        # NumPy casts records to records field by field *by position*: other names would
        # land in the wrong fields.
        ok = np.can_cast(src, dtype, casting=casting) and src.names == dtype.names
    else:
        # Python numbers (and lists of them) are "weak", as NumPy treats them: an int fits any
        # integer dtype (NumPy itself raises OverflowError for one out of range), a float any
        # floating dtype; only the kind counts under 'same_kind'.
        given = np.asarray(value)
        src = given.dtype
        python_ints = isinstance(value, (int, list, tuple)) and not isinstance(value, bool)
        if python_ints and src.kind in "iu" and dtype.kind in "iu" and given.size:
            # NumPy 2 raises OverflowError for a Python int out of the dtype's range; NumPy 1
            # wraps it around. The same refusal on both.
            info = np.iinfo(dtype)
            low, high = int(given.min()), int(given.max())
            if low < info.min or high > info.max:
                bad = low if low < info.min else high
                raise OverflowError(f"Python integer {bad} out of bounds for {dtype}")
        if casting == "same_kind" and src.kind in _KIND_RANK and dtype.kind in _KIND_RANK:
            ok = _KIND_RANK[src.kind] <= _KIND_RANK[dtype.kind]
        else:
            ok = np.can_cast(src, dtype, casting=casting)
    if not ok:
        raise TypeError(
            f"cannot write {src} values into {what} of {dtype} with casting={casting!r}: "
            f"convert them first (np.round(x).astype({str(dtype)!r}), say) or pass "
            f"casting='unsafe'")


def as_bytes(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array's bytes, as a flat `u1` view of the same memory: what the native
    side is given, since NumPy gives no buffer for times (and a structured one only with a
    format string nobody needs here)."""
    return a.reshape(-1).view(np.uint8)


def _check_record(value, dtype: np.dtype, casting: str, what: str) -> None:
    """check_cast for Python values written into records: a tuple is one record (an item
    per field), a list holds records, anything else goes into every field."""
    if isinstance(value, list):
        for item in value:
            _check_record(item, dtype, casting, what)
        return
    if isinstance(value, tuple):
        if len(value) != len(dtype.names):
            raise TypeError(
                f"a record of {what} has {len(dtype.names)} fields {dtype.names}, "
                f"not the {len(value)} given")
        for name, item in zip(dtype.names, value):
            field = dtype.fields[name][0]
            check_cast(item, field.base if field.subdtype else field, casting,
                       f"field {name!r} of {what}")
        return
    for name in dtype.names:
        field = dtype.fields[name][0]
        check_cast(value, field.base if field.subdtype else field, casting,
                   f"field {name!r} of {what}")


def _check_casting(casting: str) -> str:
    if casting not in CASTINGS:
        raise ValueError(f"casting must be one of {CASTINGS}, not {casting!r}")
    return casting


def dlpack_export(array: np.ndarray, what: str, stream=None, max_version=None, dl_device=None,
                  copy=None):
    """`__dlpack__` of read-only shared memory: zero-copy and marked read-only for consumers
    of DLPack 1.0 or later (`max_version=(1, 0)`: NumPy 2's `np.from_dlpack`, PyTorch 2.4+);
    older consumers cannot be told an export is read-only, so they get a **copy** (and so does
    `copy=True`)."""
    if stream is not None:
        raise BufferError(f"{what} is host memory: stream must be None, not {stream!r}")
    if dl_device is not None and tuple(dl_device) != (1, 0):
        raise BufferError(f"{what} is host memory (kDLCPU, 0), not device {dl_device!r}")
    modern = max_version is not None and tuple(max_version)[0] >= 1
    if copy is True or not modern:
        if copy is False:
            raise BufferError(
                f"{what} is read-only shared memory: without DLPack 1.0 (max_version) it can "
                "only be exported as a copy")
        array = np.array(array, copy=True)
        return array.__dlpack__() if not modern else array.__dlpack__(max_version=max_version)
    return array.__dlpack__(max_version=max_version, copy=False)


class CheckedView(np.ndarray):
    """A writable view over shared memory (a `write()` block's, a loaned frame's) whose item
    assignment and `fill` follow NumPy's casting rule `casting` ('same_kind' unless asked
    otherwise), as `np.copyto` and in-place ufuncs already do: `view[:] = 300.7` into a `u1`
    array raises TypeError instead of storing 44. Slices of it check the same way."""

    _casting = "same_kind"
    _what = "this array"

    def __array_finalize__(self, obj):
        self._casting = getattr(obj, "_casting", "same_kind")
        self._what = getattr(obj, "_what", "this array")

    def __setitem__(self, key, value):
        check_cast(value, self._target(key), self._casting, self._what)
        super().__setitem__(key, value)

    def __getitem__(self, key):
        got = super().__getitem__(key)
        if isinstance(got, np.void) and self.dtype.names is not None:
            # One record: NumPy gives a live `np.void`, whose writes no check sees (and which
            # stays writable after the view is made read-only). A 0-d view of it is checked.
            return super().__getitem__((*key, Ellipsis) if isinstance(key, tuple)
                                       else (key, Ellipsis))
        return got

    def _target(self, key) -> np.dtype:
        """The dtype `self[key] = ...` writes: a record's field (`view["x"]`, its element
        dtype for a subarray field) or fields (`view[["x", "y"]]`), else the view's own."""
        names = self.dtype.names
        if names is not None:
            if isinstance(key, str) and key in names:
                field = self.dtype.fields[key][0]
                return field.base if field.subdtype else field
            if isinstance(key, list) and key and all(isinstance(k, str) for k in key):
                return self.dtype[key]
        return self.dtype

    def fill(self, value):
        check_cast(value, self.dtype, self._casting, self._what)
        super().fill(value)

    def __dlpack__(self, *args, **kwargs):
        # A loaned frame (or a write() view) is the publisher's only until the block ends;
        # an export would let a consumer write into it after it was published.
        raise BufferError(
            f"{self._what} is writable only inside its block and cannot be exported through "
            "DLPack: export the published frame (a Sample) or a copy (np.array(view))")


def checked(view: np.ndarray, casting: str, what: str) -> np.ndarray:
    """`view` as a `CheckedView` that applies `casting` to what is written into it."""
    out = view.view(CheckedView)
    out._casting = _check_casting(casting)
    out._what = what
    return out


class _Pages:
    """The object NumPy keeps as a view's `base`: it describes the elements of `shape` at
    `address` (default: the native handle's data address), and keeps `owner` (the native
    handle, loan or sample that owns those pages) alive."""

    __slots__ = ("owner", "_interface", "finished", "dtype")

    def __init__(self, owner, dtype: np.dtype, shape, order: str, writable: bool,
                 address=None):
        self.owner = owner
        self.finished = False
        if address is None:
            address = owner.data_address
        self.dtype = dtype
        self._interface = _Pages.located(_Pages.template(dtype, shape, order), address,
                                         writable)

    @property
    def __array_interface__(self) -> dict:
        # Once a loan is published (`finished`), no new view of its frame may be made from
        # here (`np.asarray(frame.base)`): the frame is the subscribers' now.
        if self.finished:
            raise errors.MmshareError("this frame was published or abandoned: no new views")
        return self._interface

    @staticmethod
    def template(dtype: np.dtype, shape, order: str) -> dict:
        """The `__array_interface__` of elements of `dtype` in `shape` and `order`, without
        its data address (made once per handle; `located` completes it per view)."""
        strides = None
        if order == "F" and len(shape) > 1:
            step, strides = dtype.itemsize, []
            for n in shape:
                strides.append(step)
                step *= n
            strides = tuple(strides)
        # A record is described as opaque bytes of its itemsize ('|V40'), made a record by
        # `array()`: the interface's `descr` would turn padding into fields named 'f3'.
        return {"version": 3, "shape": tuple(shape), "typestr": dtype.str, "strides": strides,
                "dtype": dtype}

    def array(self) -> np.ndarray:
        """The ndarray over these pages, of the template's dtype. A record's is a view of an
        opaque-bytes array, which is made read-only (the view keeps its own flag), so that
        `frame.base` gives no writable way around a loan's end."""
        raw = np.asarray(self)
        if self.dtype.names is None:
            return raw
        out = raw.view(self.dtype)
        raw.flags.writeable = False
        return out

    @staticmethod
    def located(template: dict, address: int, writable: bool) -> dict:
        interface = {k: v for k, v in template.items() if k != "dtype"}
        # An empty array has no data to point at, but NumPy wants a non-null address.
        interface["data"] = (address or 8, not writable)
        return interface

    @classmethod
    def at(cls, owner, template: dict, address: int, writable: bool) -> "_Pages":
        """Pages at `address` kept alive by `owner`, from a template (the fast path of the
        per-frame views of streams)."""
        pages = cls.__new__(cls)
        pages.owner = owner
        pages.finished = False
        pages.dtype = template["dtype"]
        pages._interface = cls.located(template, address, writable)
        return pages


def _basic_parts(index):
    """`index` as a tuple, if it is a NumPy *basic* index (integers, slices, `...`,
    `np.newaxis`): one whose result is a view of the pages; None otherwise (integer or boolean
    arrays, lists: NumPy copies for those)."""
    parts = index if isinstance(index, tuple) else (index,)
    for p in parts:
        if p is None or p is Ellipsis or isinstance(p, slice):
            continue
        if isinstance(p, (int, np.integer)) and not isinstance(p, (bool, np.bool_)):
            continue
        return None
    return parts


def _region_view(pages: np.ndarray, parts: tuple) -> np.ndarray:
    """The view of `pages` that the basic index `parts` selects, always an ndarray (an index
    of every axis by integers gives a 0-d view, not a scalar)."""
    if not any(p is Ellipsis for p in parts):
        parts = parts + (Ellipsis,)
    return pages[parts]


def _span(view: np.ndarray, base: int):
    """The data bytes `(start, end)` a view of the pages starting at address `base` reads or
    writes: from its lowest to its highest byte. A striped array takes (or validates) only
    the stripes of those bytes."""
    start = view.__array_interface__["data"][0] - base
    if view.size == 0:
        return start, start
    low = sum(s * (n - 1) for s, n in zip(view.strides, view.shape) if s < 0)
    high = sum(s * (n - 1) for s, n in zip(view.strides, view.shape) if s > 0)
    return start + low, start + high + view.itemsize


class SharedArray(_fork.Owned):
    """An array handed out by the daemon, mapped into this process.

    `array` is a zero-copy, read-only view of the live pages (whatever the mode); `read()`
    takes a consistent copy; `write()` takes the write side, yields the only writable view,
    and publishes a new version.
    """

    # `Class[np.float32]` in annotations at run time too (the generics of the stubs).
    __class_getitem__ = classmethod(types.GenericAlias)

    def __init__(self, info, native, lease=None):
        self._born()
        self._origin = None  # how to open it again: (client args, name, mode)
        self.info = info
        self._native = native
        self.writable = native.writable
        self._lease = lease  # a write handle keeps its connection open: the writer's lease
        self.dtype = numpy_dtype(info.dtype)
        self.shape = tuple(info.shape)
        self.order = info.order
        self.name = info.name
        self.path = info.path
        # `.array` is read-only down to its base, so its WRITEABLE flag cannot be turned back
        # on: NumPy code cannot write around the seqlock.
        self._array = _Pages(native, self.dtype, self.shape, self.order, False).array()
        self._nbytes = native.data_len
        # The writable pages: write() yields a new view of them per block (made read-only when
        # the block ends), so each block's view is its own.
        self._rw = (_Pages(native, self.dtype, self.shape, self.order, True).array()
                    if native.writable else None)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """DLPack export of the live read-only view (`.array`, not synchronized: see
        `dlpack_export` for what consumers before DLPack 1.0 get)."""
        return dlpack_export(self.array, f"array {self.name!r}", stream, max_version,
                             dl_device, copy)

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0

    # -- state ------------------------------------------------------------------------------

    @property
    def array(self) -> np.ndarray:
        """The live pages as an ndarray, zero-copy. Not synchronized: it may show a write in
        progress. Always read-only, even with mode "r+" (write through `write()`)."""
        self._check_open()
        return self._array

    def _check_open(self):
        self._check_process()
        if self._native.closed:
            raise errors.MmshareError(f"array {self.name} is closed")

    def __reduce__(self):
        """Pickled, an array is its name and mode: the receiving process opens it again
        through a connection of its own (a write handle is a write handle there too)."""
        if self._origin is None:
            raise TypeError(f"array {self.name!r} was not opened through a Client: open it by "
                            "name in the other process")
        from .client import _open_again
        args, name, mode = self._origin
        return (_open_again, ("array", args, name, mode))

    def __array__(self, dtype=None, copy=None):
        """NumPy's array protocol (`np.asarray(shared)`, `np.mean(shared)`, ufuncs): a
        **consistent copy** (`read()`, validated by the seqlock) unless the caller asks for
        no copy (`np.asarray(shared, copy=False)`, NumPy 2), which gives the live read-only
        view (`.array`: zero-copy, not synchronized)."""
        if copy is False:
            if dtype is not None and np.dtype(dtype) != self.dtype:
                raise ValueError(
                    f"array {self.name!r} is {self.dtype}; a view of it as {np.dtype(dtype)} "
                    "would need a copy")
            return self.array
        data = self.read()
        return data if dtype is None else data.astype(dtype, copy=False)

    def _seq(self) -> int:
        """The seqlock sequence (odd while a write is in progress), for diagnostics."""
        return self._native.sequence

    @property
    def version(self) -> int:
        """The current version: sequence // 2."""
        return self._native.version

    @property
    def torn(self) -> bool:
        """Whether a write did not complete (until a repairing write)."""
        return self._native.torn

    @property
    def retries(self) -> int:
        """Copies this handle threw away because a write overlapped them."""
        return self._native.retries

    # -- reading ----------------------------------------------------------------------------

    def read(self, index=None, timeout: float = 10.0, allow_torn: bool = False,
             out=None) -> np.ndarray:
        """A consistent copy of the array, or of `array[index]`, through the seqlock.

        Any NumPy index works (slices, integers, integer or boolean arrays); it is applied in
        every attempt, inside the protocol, so the copy returned is the one the seqlock
        validated. Raises `Torn` if a write did not complete (unless `allow_torn`), `Timeout`
        if no consistent copy could be taken within `timeout` seconds (None: no limit).

        In a striped array (created with `stripes`), a *basic* index (`np.s_[100:200]`,
        `np.s_[:, 3]`, integers and slices) is a region: only the stripes it lies in are
        validated, so writes elsewhere do not make the read retry or wait, and `Torn` is
        raised only if one of its own stripes is torn.

        `out` (whole reads only): an ndarray of the array's dtype and shape, contiguous in its
        order, to copy into instead of a new array (no allocation: the fastest way to take
        copies again and again); it is returned.
        """
        self._check_open()
        if out is not None:
            if index is not None:
                raise ValueError("out= takes whole reads only (index=None)")
            if (not isinstance(out, np.ndarray) or out.dtype != self.dtype
                    or out.shape != self.shape or not out.flags.writeable
                    or not (out.flags.f_contiguous if self.order == "F"
                            else out.flags.c_contiguous)):
                raise ValueError(
                    f"out must be a writable {self.order}-contiguous ndarray of dtype "
                    f"{self.dtype.str} and shape {self.shape}")
            # The native side takes a C-contiguous buffer: a Fortran-ordered array's
            # transpose is one, over the same bytes.
            self._native.read_into(as_bytes(out.T if self.order == "F" else out), timeout,
                                   allow_torn)
            return out
        if index is None:
            raw = np.empty(self._nbytes, dtype=np.uint8)
            # New, untouched memory: the copy stores through the cache, where the kernel
            # zeroes each new page at its first touch (streaming stores lose there).
            self._native.read_into(raw, timeout, allow_torn, fresh=True)
            return raw.view(self.dtype).reshape(self.shape, order=self.order)
        live = self._array
        parts = _basic_parts(index)
        span = None
        if parts is not None:
            # Made once, outside the protocol: a view reads nothing until it is copied.
            span = _span(_region_view(live, parts), self._native.data_address)

        def attempt():
            got = live[index]
            if isinstance(got, np.ndarray) and got.flags.owndata:
                return got  # a fancy or boolean index copied: that copy is this attempt's
            return np.array(got, copy=True)  # a view of the pages (basic index) or a scalar

        return self._native.read_with(attempt, timeout, allow_torn, span)

    def wait(self, newer_than=None, timeout=None, region=None) -> int:
        """Waits until a version newer than `newer_than` (default: the current one) is
        published and returns it. Sleeps on the shared futex (the GIL released), so a quiet
        array costs no CPU. Raises `Timeout`.

        With `region` (a basic index, as `np.s_[100:200]`), waits for a change *of that
        region*: `newer_than` is then the region's `stamp` (default: the current one), and
        the new stamp is returned; in a striped array, writes elsewhere do not end the wait.
        Take the stamp before reading the region, then wait with it: a write in between makes
        the wait return at once, so no change is missed."""
        self._check_open()
        if region is not None:
            span = self._span_of(region)
            if newer_than is None:
                newer_than = self._native.span_stamp(span)
            return self._native.wait_span(span, int(newer_than), timeout)
        if newer_than is None:
            newer_than = self.version
        return self._native.wait(int(newer_than), timeout)

    def stamp(self, region) -> int:
        """A number that grows with every write published to `region` (a basic index): in a
        striped array, writes elsewhere leave it; with one lock it is the version. For
        `wait(newer_than=..., region=...)`."""
        self._check_open()
        return self._native.span_stamp(self._span_of(region))

    def _span_of(self, region):
        parts = _basic_parts(region)
        if parts is None:
            raise ValueError(
                f"a region is a basic index (integers and slices, as np.s_[100:200]), "
                f"not {region!r}")
        return _span(_region_view(self._array, parts), self._native.data_address)

    async def await_version(self, newer_than=None, timeout=None) -> int:
        """`wait`, awaited on the running asyncio loop without a thread: returns the first
        version newer than `newer_than` (default: the current one) once a write publishes it.
        `timeout` in seconds (None: no limit) raises `Timeout`. Cancel-safe."""
        from . import aio
        self._check_open()
        if newer_than is None:
            newer_than = self.version
        native, newer_than = self._native, int(newer_than)
        return await aio.poll_until(lambda w: native.poll_changed(newer_than, w),
                                    native.end_wait, timeout,
                                    f"no version of array {self.name!r} newer than {newer_than}")

    async def changed(self, newer_than=None, timeout=None) -> int:
        """The same as `await_version` (the name of Rust's `Array::changed`)."""
        return await self.await_version(newer_than, timeout)

    # -- writing ----------------------------------------------------------------------------

    @contextmanager
    def write(self, region=None, timeout: float = 10.0, repair: bool = False,
              durable: bool = False, casting: str = "same_kind"):
        """Takes the write side, yields a writable view of the array, publishes a new version
        on exit.

        `region`, a NumPy basic index (`np.s_[100:200]`, `np.s_[:, 0:4]`: integers and
        slices), writes only that part: the view yielded is `array[region]`, and in a striped
        array only the stripes it lies in are taken, so writers of other regions write at the
        same time and readers of other regions are not held up. `repair=True` then clears
        TORN on the stripes the region replaces whole. Other indexes raise ValueError. Inside
        a write, do not start another write of the same array (through any handle): it waits
        for the first, which cannot end, until its timeout.

        Assignments into the view follow NumPy's `casting` rule ('same_kind' by default, as
        `np.copyto` does): a float written into an integer array raises TypeError naming
        both dtypes instead of being truncated; pass `casting='unsafe'` for NumPy's plain
        assignment.

        The view is the only writable one there is (`array` is read-only) and it is made
        read-only when the block ends, however it ends: keep writing to it afterwards and
        NumPy raises ValueError instead of writing around the seqlock.

        If the body raises (KeyboardInterrupt included), the data may be half-written: the
        version is published marked TORN (readers get `Torn` until a repairing write), the
        write side is released, and the exception propagates. The write side is never left
        held: taking it and publishing happen in Rust, and an interrupt that lands before the
        body runs publishes the untouched array as it was. A write that replaces the whole
        array can pass `repair=True` to clear an earlier TORN mark.

        With `durable=True` (a file-backed array whose data must survive a power loss), the
        version is on disk when the block ends: the header is synced as "mid-write" before the
        body runs, the data is synced before the commit, and the commit is synced after it; a
        machine crash in between leaves the array marked torn at the next open, never a
        committed version next to half-written data. Three `msync`s a write.

        Raises `LostWriteSide` if the write side was taken from this writer (a recovery judged
        it dead) before it published: nothing is published as this write, and the array ends
        up TORN (this writer takes the write side again, within `timeout`, to mark it so, since
        its stores may have landed on a version someone else published). If that happens while
        the body's own exception propagates, the body's exception is the one raised; the array
        is TORN all the same.
        """
        if not self.writable:
            raise errors.PermissionDenied(f"{self.name} is open read-only; open it with mode 'r+'")
        self._check_open()
        _check_casting(casting)
        if region is None:
            token = self._native.begin_write(timeout, durable)
            view = self._rw.view()
        else:
            parts = _basic_parts(region)
            if parts is None:
                raise ValueError(
                    f"a write region is a basic index (integers and slices, as np.s_[100:200]), "
                    f"not {region!r}")
            view = _region_view(self._rw.view(), parts)  # IndexError for a bad one, first
            start, end = _span(view, self._native.data_address)
            token = self._native.begin_write(timeout, durable, (start, end),
                                             end - start == view.nbytes)
        view = checked(view, casting, f"array {self.name!r}")
        ok = False
        try:
            try:
                token.started()  # from here on, a token lost unfinished publishes TORN
                yield view
            finally:
                view.flags.writeable = False  # nothing may write once the version is published
            ok = True
        finally:
            try:
                token.finish(("repair" if repair else "complete") if ok else "torn")
            except errors.LostWriteSide:
                if ok:
                    raise

    # -- lifetime ---------------------------------------------------------------------------

    def flush(self):
        """Writes dirty pages to the file (msync). A no-op for read-only arrays."""
        self._native.flush()

    def close(self):
        """Refuses further operations and drops the lease. The pages stay mapped while views
        taken from `array` (or `read()`-free `write()` views) still exist."""
        self._native.close()
        self._lease = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        mode = "r+" if self.writable else "r"
        state = "closed" if self._native.closed else f"version {self.version}"
        return (f"<SharedArray {self.name} {self.dtype.str} {self.shape} order {self.order} "
                f"mode {mode} {state}>")
