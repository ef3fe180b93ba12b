"""Streams: a ring of frames that a publisher fills in place and subscribers read in place.

The slot protocol (loans, holds, lossless cursors, sleeping and waking, crash rules) runs in
the Rust core (`mmshare._native` over mmshare-lib's `stream` module); this module shapes it
for NumPy:

    pub = client.publisher("frames")
    with pub.loan() as frame:          # a writable ndarray over a free slot
        frame[:] = camera.read()       # published on normal exit, discarded on an exception

    sub = client.subscribe("frames", lossless=True)
    with sub.receive(timeout=1.0) as sample:
        process(sample.array)          # read-only, zero-copy; released at the end of the block

A sample's hold lasts as long as the sample is not released *and* as long as any NumPy view
of its frame exists: `release()` (or the end of a `with` block) makes the sample itself
unusable at once, and the slot is given back as soon as the last view of it is gone. A view
therefore never shows a frame the publisher has reused. Views that are kept count against
`max_held` (`HoldLimit`); keep a copy (`np.array(sample.array)`) instead.
"""

import sys

import types
from typing import NamedTuple

import numpy as np

from . import _fork, errors
from .array import _Pages, _check_casting, as_bytes, check_cast, checked, numpy_dtype

#: How long `Publisher.loan` and `Publisher.send` wait for a free slot by default (seconds).
LOAN_TIMEOUT = 10.0


class Loan:
    """A loaned slot of a publisher. As a context manager it yields a writable ndarray over
    the slot, publishes the frame when the block ends normally and discards it when the block
    raises; `number` is the frame's number (known inside the block).

    Inside the block, `header` is the frame's header (a writable 0-d array of the stream's
    header dtype, zeroed: `loan.header["t"] = ...`, `loan.header[()] = 7`), and for
    variable-size frames `rows` says how many rows of the frame are published (the largest
    frame's unless set)."""

    # `Class[np.float32]` in annotations at run time too (the generics of the stubs).
    __class_getitem__ = classmethod(types.GenericAlias)

    def __init__(self, publisher, timeout, casting="same_kind", native=None):
        self._publisher = publisher
        self._timeout = timeout
        self._casting = casting
        # A slot already loaned (`aloan`), else one is loaned when the block is entered.
        self._loaned = native
        self._native = None
        self._view = None
        self._header = None
        self._header_pages = None
        self.number = None

    def __repr__(self):
        if self._view is not None:
            state = f"frame {self.number} on loan"
        elif self.number is not None:
            state = f"published frame {self.number}"
        elif self._loaned is not None:
            state = f"frame {self._loaned.number} loaned, not entered"
        else:
            state = "not entered"
        return f"<mmshare.Loan of {self._publisher.name}: {state}>"

    @property
    def header(self) -> np.ndarray:
        """The frame's header, writable inside the block (`None` when frames carry none)."""
        if self._view is None:
            raise errors.MmshareError("the loan's header exists inside its `with` block only")
        return self._header

    @property
    def rows(self) -> int:
        """The rows the frame is published with."""
        if self._view is None:
            raise errors.MmshareError("the loan's rows exist inside its `with` block only")
        return self._native.rows

    @rows.setter
    def rows(self, rows: int):
        if self._view is None:
            raise errors.MmshareError("the loan's rows exist inside its `with` block only")
        self._native.set_rows(int(rows))

    def __enter__(self) -> np.ndarray:
        if self._native is not None or self.number is not None:
            raise errors.MmshareError("a loan is entered once; take a new loan for each frame")
        p = self._publisher
        p._check_process()
        self._native, self._loaned = self._loaned or p._native.loan(self._timeout), None
        # Known from the loan on (as Rust's `number()` before publish).
        self.number = self._native.number
        self._pages = _Pages.at(self._native, p._template, self._native.address, True)
        self._view = checked(self._pages.array(), self._casting,
                             f"a frame of stream {p.name!r}")
        if p.header_dtype is not None:
            self._header_pages = _Pages(self._native, p.header_dtype, (), "C", True,
                                        address=self._native.header_address)
            self._header = checked(self._header_pages.array(), self._casting,
                                   f"the header of a frame of stream {p.name!r}")
        return self._view

    def __exit__(self, exc_type, exc, tb):
        # A loan inherited by a forked child is its parent's: never published from the child.
        self._publisher._check_process()
        native, view = self._native, self._view
        self._view = None
        if view is not None:
            # The frame is the subscribers' once published: the view becomes read-only and no
            # new view can be made from its base. (Views sliced from it inside the block stay
            # writable, as NumPy cannot revoke them: do not keep them past the block.)
            view.flags.writeable = False
            view.base.flags.writeable = False
            self._pages.finished = True
            self._pages = None
            if self._header is not None:
                self._header.flags.writeable = False
                self._header.base.flags.writeable = False
                self._header_pages.finished = True
                self._header, self._header_pages = None, None
        if exc_type is None:
            self.number = native.publish()
        else:
            native.abandon()
            self.number = None
        return False


class _Handle(_fork.Owned):
    """What a publisher and a subscriber share: the stream's description, the native handle,
    the connection that is its lease, the frame layout, and `with` support."""

    # `Class[np.float32]` in annotations at run time too (the generics of the stubs).
    __class_getitem__ = classmethod(types.GenericAlias)

    def __init__(self, info, native, lease):
        self._born()
        self._origin = None  # how to open it again: (client args, name, options)
        self._waits = set()  # pending awaits (`mmshare.aio.Wait`), ended by `close`
        self.info = info
        self._native = native
        self._lease = lease
        self.name = info.name
        self.dtype = numpy_dtype(info.dtype)
        self.shape = tuple(info.shape)
        self.order = info.order
        #: The dtype of each frame's header, or None when frames carry none.
        self.header_dtype = numpy_dtype(info.header) if info.header else None
        # Views are sized by the dtype the daemon named; the mapping by what the file says.
        header_len = 0 if self.header_dtype is None else self.header_dtype.itemsize
        if header_len != native.header_bytes:
            raise errors.MmshareError(
                f"stream {self.name!r}: its header is {native.header_bytes} bytes in the file, "
                f"but {header_len} as the daemon describes it")
        #: Whether frames vary in length along axis 0 (`shape` is the largest frame's).
        self.variable = info.variable
        self._template = _Pages.template(self.dtype, self.shape, self.order)
        # Frames of a plain numeric dtype in C order and of one size: an ndarray that already
        # is one (dtype, shape, contiguous) goes to the native side as it is (`send`).
        self._plain = self.order == "C" and not self.variable and self.dtype.kind in "biufc"

    def close(self):
        self._native = None
        self._lease = None
        # Pending awaits (areceive, aloan, await_for_subscribers) end with an error.
        for wait in list(self._waits):
            wait.interrupt()

    def __reduce__(self):
        """Pickled, a publisher or a subscriber is its stream's name (and a subscriber its
        options): the receiving process attaches anew through a connection of its own. A
        subscriber there is a **new subscription** (its own cursor and holds; a lossless one
        starts where its options say, not where this one is); a publisher can attach only
        once this one is closed (one publisher at a time: `Busy` otherwise)."""
        if self._origin is None:
            raise TypeError(f"stream handle {self.name!r} was not opened through a Client")
        from .client import _open_again
        args, name, options = self._origin
        kind = "publisher" if isinstance(self, Publisher) else "subscriber"
        return (_open_again, (kind, args, name, options))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PublisherId(NamedTuple):
    """Who published a frame of a stream of several publishers (`Sample.publisher`,
    `Publisher.id`): `id`, one number for the publisher's life, never another's; its `lane`
    (ring); its `attach` (1 for its lane's first publisher, then 2 for the one that replaced
    it, ...); its `pid`."""
    id: int
    lane: int
    attach: int
    pid: int


class Publisher(_Handle):
    """The publishing side of a stream (as many at a time as its `max_publishers`: another
    gets `Busy`)."""

    @property
    def id(self) -> PublisherId:
        """Who it is: the identity its frames carry on a stream of several publishers."""
        return PublisherId(*self._native.identity)

    @property
    def next_number(self) -> int:
        """The number the next published frame gets (= frames published so far)."""
        return self._native.next_number

    @property
    def subscriber_count(self) -> int:
        """Subscribers attached now (any process)."""
        return self._native.subscriber_count

    def wait_for_subscribers(self, n=1, timeout=None) -> int:
        """Waits until at least `n` subscribers are attached, up to `timeout` seconds (None:
        no limit); returns how many are, or raises `Timeout` naming how many came. Woken by
        each join (no polling): call it before the first frame so that subscribers started
        alongside miss nothing."""
        self._check_process()
        return self._native.wait_for_subscribers(int(n), timeout)

    def loan(self, timeout=LOAN_TIMEOUT, casting="same_kind") -> Loan:
        """A free slot to fill in place: `with pub.loan() as frame: frame[...] = ...`. Waits
        only while a lossless subscriber is a whole ring behind, up to `timeout` seconds
        (default 10, as Rust's `Publisher::loan`; None: no limit), and raises `Timeout` then:
        a frozen subscriber never stalls a publisher for good unless it asks for that."""
        self._check_process()
        _check_casting(casting)
        return Loan(self, timeout, casting)

    async def await_for_subscribers(self, n=1, timeout=None) -> int:
        """`wait_for_subscribers` on the running asyncio loop: returns the subscriber count
        once at least `n` are attached, woken by each join (no thread waits, nothing polls).
        `timeout` in seconds (None: no limit) raises `Timeout`. Cancel-safe."""
        self._check_process()
        from . import aio
        native, n = self._native, int(n)
        return await aio.poll_until(lambda w: native.poll_subscribers(n, w),
                                    native.end_subscribers_wait, timeout,
                                    f"fewer than {n} subscribers of stream {self.name!r}", self)

    async def aloan(self, timeout=LOAN_TIMEOUT, casting="same_kind") -> Loan:
        """A free slot, awaited on the running asyncio loop without a thread while lossless
        subscribers are a whole ring behind (the core wakes the loop when one moves on); then
        `with loan as frame:` fills and publishes it as `loan()` does. `timeout` in seconds
        (None: no limit) raises `Timeout`. Cancel-safe: a cancelled await has loaned nothing."""
        self._check_process()
        from . import aio
        _check_casting(casting)
        native = self._native
        got = await aio.poll_until(native.poll_loan, native.end_wait, timeout,
                                   f"no free slot of stream {self.name!r}", self)
        return Loan(self, timeout, casting, native=got)

    def __init__(self, info, native, lease):
        super().__init__(info, native, lease)
        # `send` is the native core's own method on each handle (`_send_converting` below
        # does what it cannot): the common call, an ndarray that already is a frame, then
        # runs no Python code at all. It checks what this class's methods check (the process,
        # and that the handle is open) itself.
        # Kept by a caller, the native `send` refuses once the handle is closed, and (as any
        # bound method) keeps the publisher attached until it goes too. A subclass that
        # overrides `send` keeps its own.
        layout = memoryview(np.empty(0, self.dtype)).format if self._plain else None
        spec = _FrameSpec(self.name, self.dtype, self.shape, self.order, self.variable,
                          self.header_dtype)
        self._sender = native.sender(np.ndarray, layout, list(self.shape), spec,
                                     _send_converting)
        if type(self).send is Publisher.send:
            self.send = self._sender.send_frame

    def send(self, frame, timeout=LOAN_TIMEOUT, casting="same_kind", header=None) -> int:
        """Copies `frame` (any array of the stream's shape, converted to its dtype under
        NumPy's `casting` rule: 'same_kind' by default, so floats into an integer stream raise
        TypeError naming both dtypes; 'unsafe' converts as `astype` does) into a loaned slot
        and publishes it; returns its number. Waits for a slot as `loan` does. For
        variable-size frames, `frame` may have fewer rows than the largest frame. `header`: the
        frame's header (a value of the stream's header dtype: a number, a tuple for a record),
        checked under the same casting rule (None: the default, 'same_kind'). A frame that
        already is one (an ndarray of the stream's dtype and shape, C-contiguous) is copied in
        as it is, without Python code."""
        # Reached through the class (`Publisher.send(pub, ...)`, a subclass's `super().send`)
        # or once closed: a handle's own `send` is the native one (see `__init__`).
        if self._native is None:
            raise errors.MmshareError(f"the publisher of stream {self.name!r} is closed")
        self._check_process()
        return self._sender.send_frame(frame, timeout, casting, header)

    def close(self):
        """Detaches (another publisher may attach) once no loan of it, or view of a loaned
        frame, is left. Frames published stay readable."""
        if self._native is not None:
            self._native.close()  # a `send` kept from before refuses from now on
        self.__dict__.pop("send", None)
        self._sender = None
        super().close()

    def __repr__(self):
        return f"<Publisher {self.name} {self.dtype.str} {self.shape}>"


class _FrameSpec(NamedTuple):
    """What `_send_converting` needs of a publisher (not the handle itself: the native core
    keeps this, and a reference back to the handle would keep it alive in a cycle)."""
    name: str
    dtype: np.dtype
    shape: tuple
    order: str
    variable: bool
    header_dtype: object


def _send_converting(spec, native, frame, timeout, casting, header) -> int:
    """`Publisher.send` for what the native core does not take as it is: checks `frame` (and
    `header`) against the stream under NumPy's `casting` rule, converts it and sends its
    bytes. The native `send_frame` calls it, after its own process and handle checks."""
    given = frame
    _check_casting(casting)
    if spec.dtype.names is not None and not isinstance(frame, np.ndarray):
        # Tuples are records: checked field by field, then converted as records.
        check_cast(given, spec.dtype, casting, f"stream {spec.name!r}")
        frame = np.asarray(frame, dtype=spec.dtype)
    frame = np.asarray(frame)
    if spec.variable:
        if (frame.ndim != len(spec.shape) or frame.shape[1:] != spec.shape[1:]
                or frame.shape[0] > spec.shape[0]):
            raise ValueError(
                f"frame shape {frame.shape} does not fit the stream's largest frame "
                f"{spec.shape} (its frames vary in length along axis 0)")
    elif frame.shape != spec.shape:
        raise ValueError(f"frame shape {frame.shape} is not the stream's {spec.shape}")
    check_cast(given, spec.dtype, casting, f"stream {spec.name!r}")
    raw_header = None
    if header is not None:
        if spec.header_dtype is None:
            raise ValueError(f"the frames of stream {spec.name!r} carry no header")
        check_cast(header, spec.header_dtype, casting, f"the header of stream {spec.name!r}")
        # Zeros first, so that a record's padding is zero rather than whatever was there.
        value = np.zeros((), spec.header_dtype)
        value[()] = header
        raw_header = as_bytes(value)
    # The frame's bytes in the stream's dtype and memory order (a copy only if they are not
    # already), copied into the slot by the native core: no view is made. The native side
    # takes a C-contiguous buffer: a Fortran-ordered frame's transpose is one.
    if spec.order == "F":
        frame = np.asfortranarray(frame, dtype=spec.dtype).T
    else:
        frame = np.ascontiguousarray(frame, dtype=spec.dtype)
    rows = frame.shape[0] if spec.variable else None
    return native.send(as_bytes(frame), timeout, raw_header, rows)


class Sample:
    """A received frame: `array` (read-only, zero-copy), `number`, `missed_before` (frames
    this subscriber missed just before it), `published_ns` (publish time, ns since the Unix
    epoch). A context manager that releases it."""

    # `Class[np.float32]` in annotations at run time too (the generics of the stubs).
    __class_getitem__ = classmethod(types.GenericAlias)

    def __init__(self, subscriber, native):
        self._native = native
        self._subscriber = subscriber
        self.number = native.number
        #: The lane (publisher ring) it came from: 0 on a stream of one publisher.
        self.lane = native.lane
        #: Who published it (a `PublisherId`), on a stream of several publishers; else None.
        self.publisher = None if native.publisher is None else PublisherId(*native.publisher)
        self.missed_before = native.missed_before
        self.published_ns = native.published_ns
        #: The rows the frame has (its length along axis 0).
        self.rows = native.rows
        self._array = subscriber._view_of(native)
        self._header = None
        if subscriber.header_dtype is not None:
            self._header = _Pages(native, subscriber.header_dtype, (), "C", False,
                                  address=native.header_address).array()

    @property
    def header(self) -> np.ndarray:
        """The frame's header: a read-only 0-d array of the stream's header dtype (None when
        frames carry none), valid while the sample is held, as the frame."""
        if self._native is None:
            raise errors.MmshareError(
                f"sample {self.number} was released; copy the header (sample.header.copy()) "
                "to use it after the release")
        return self._header

    @property
    def array(self) -> np.ndarray:
        """The frame, read-only and zero-copy, valid while the sample is held (any view of
        it keeps the hold until the view is gone)."""
        if self._native is None:
            raise errors.MmshareError(
                f"sample {self.number} was released; keep a copy (np.array(sample.array)) "
                "to use a frame after its release")
        return self._array

    @property
    def released(self) -> bool:
        """Whether the sample was released (its frame may be reused since)."""
        return self._native is None

    def __array__(self, dtype=None, copy=None):
        """NumPy's array protocol (`np.asarray(sample)`, ufuncs): the frame itself, zero-copy
        and read-only (held, so it is consistent), or a copy when asked (`copy=True`) or when
        `dtype` differs."""
        array = self.array
        if dtype is not None and np.dtype(dtype) != array.dtype:
            if copy is False:
                raise ValueError(f"the frame is {array.dtype}; as {np.dtype(dtype)} it needs a copy")
            return array.astype(dtype)
        return np.array(array, copy=True) if copy else array

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """DLPack export of the frame: zero-copy and read-only for DLPack 1.0 consumers
        (NumPy 2's `np.from_dlpack`, PyTorch 2.4+), a copy for older ones (who cannot be told
        it is read-only). The export keeps the sample held for as long as it lives."""
        from .array import dlpack_export
        return dlpack_export(self.array, f"frame {self.number}", stream, max_version,
                             dl_device, copy)

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0

    def is_intact(self) -> bool:
        """Whether the slot still holds this frame (false only if another process erased the
        hold in the control file and the slot was reused)."""
        return self._native is not None and self._native.is_intact()

    def release(self):
        """Lets the frame go: the sample is unusable from here on, and the slot returns to the
        publisher once no view of it is left."""
        view, self._array = self._array, None
        self._header = None
        self._native = None
        subscriber, self._subscriber = self._subscriber, None
        if view is not None and subscriber is not None:
            subscriber._recycle(view)

    def __del__(self):
        try:
            self.release()
        except Exception:  # at interpreter exit the modules may be gone
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def __repr__(self):
        state = "released" if self._native is None else "held"
        return f"<Sample {self.number} missed_before {self.missed_before} {state}>"


class Subscriber(_Handle):
    """The receiving side of a stream. Lossy (default): never slows the publisher and counts
    every frame it skips; lossless: every frame, in order (the publisher waits for it)."""

    def __init__(self, info, native, lease):
        super().__init__(info, native, lease)
        self.lossless = native.lossless
        # The polling call is the native core's own method on each handle, as `send` is on a
        # publisher's (it checks the process and that the handle is open itself). A subclass
        # that overrides it keeps its own.
        if type(self).try_receive_into is Subscriber.try_receive_into:
            self.try_receive_into = native.poller(np.ndarray).try_receive_into
        self._current = None
        # Views of released samples that nothing else refers to, by slot address, ready to be
        # reused for the next sample in that slot (see `_view_of` and `Sample.release`).
        self._free_views = {}

    def _view_of(self, native) -> np.ndarray:
        """A read-only view of `native`'s frame whose base keeps `native` (its hold) alive.

        Building a view from `__array_interface__` costs microseconds, so a released sample's
        view that nothing else referred to is kept (its base owning nothing) and reused for the
        next sample in the same slot."""
        if self.variable and native.rows != self.shape[0]:
            # A shorter frame: a view of its own shape, made for it.
            shape = (native.rows,) + self.shape[1:]
            return _Pages(native, self.dtype, shape, self.order, False,
                          address=native.address).array()
        reuse = self._free_views.pop(native.address, None)
        if reuse is not None:
            view, pages = reuse
            pages.owner = native
            return view
        return _Pages.at(native, self._template, native.address, False).array()

    def _recycle(self, view) -> None:
        """Takes back a released sample's view if nothing else refers to it or to its base
        (no view of it was kept): its base lets go of the sample, and the view waits for the
        next sample in its slot."""
        pages = view.base
        if not isinstance(pages, _Pages) or view.shape != self.shape:
            # A record's view (over an opaque-bytes array) or a shorter frame's: made afresh
            # each time.
            return
        # References: the caller's local and getrefcount's argument (the view); the view's
        # base, the local and the argument (the pages).
        if sys.getrefcount(view) == 3 and sys.getrefcount(pages) == 3:
            pages.owner = None
            self._free_views[pages._interface["data"][0]] = (view, pages)

    @property
    def max_held(self) -> int:
        """Samples it may hold at once (what it asked for, or less if the stream's hold budget
        was short)."""
        return self._native.max_held

    @property
    def missed(self) -> int:
        """Frames skipped so far (exact: received + missed == the frames from `first_frame`
        up to the last one taken)."""
        return self._native.missed

    @property
    def first_frame(self) -> int:
        """The frame it started at (`start` of `subscribe`): frames before it were published
        before it subscribed and are not counted as missed."""
        return self._native.first_frame

    @property
    def received(self) -> int:
        """Frames received so far."""
        return self._native.received

    @property
    def demoted(self) -> bool:
        """Whether the publisher made this lossless subscriber lossy, because it stalled the
        stream longer than the stream's stall policy (`on_stall`) allows: from then on it may
        miss frames, each counted in `missed`."""
        return self._native.demoted

    @property
    def next_number(self) -> int:
        """The number of the next frame it will receive."""
        return self._native.next_number

    def receive(self, timeout=None) -> Sample:
        """The next frame, waiting up to `timeout` seconds (None, the default: no limit, as
        `queue.Queue.get` waits; a publisher that stops publishing is not an error) with the GIL
        released; raises `Timeout` (a `TimeoutError`) if none comes."""
        self._check_process()
        return Sample(self, self._native.receive(timeout))

    def try_receive(self):
        """The next frame if one is there, else None; never waits."""
        self._check_process()
        got = self._native.try_receive()
        return None if got is None else Sample(self, got)

    def receive_into(self, out, timeout=None) -> int:
        """Copies the next frame into `out` and returns its number, waiting up to `timeout`
        seconds as `receive` does (None: no limit; raises `Timeout`). The frame is released at
        once: no sample, no view, one call per frame. `out`: any C-contiguous writable buffer
        of exactly the frame's bytes (an ndarray of the stream's dtype and shape, usually;
        the bytes are copied as they are). Fixed-size frames only; the per-frame header, if
        the stream has one, is not copied (`receive` has it). Raises `MmshareError` if the
        frame's slot was reused while it was copied (possible only if someone erased this
        subscriber's hold in the stream's control file)."""
        if self._generation != _fork.generation:
            self._check_process()
        return self._native.receive_into(out, timeout)

    def try_receive_into(self, out):
        """Copies the next frame into `out` as `receive_into` does, if one is there, and
        returns its number; None (and `out` untouched) when none is. Never waits: the
        cheapest way to poll for copies from Python (the GIL is kept for frames below
        64 KiB, and a handle's `try_receive_into` is the native method itself: no Python code
        runs). A poll that finds nothing returns before looking at `out` (it is checked
        whenever a frame is there for it; a variable-size stream is refused either way)."""
        # Reached only through the class or once closed (see `__init__`).
        if self._native is None:
            raise errors.MmshareError(f"the subscriber of stream {self.name!r} is closed")
        self._check_process()
        return self._native.try_receive_into(out)

    def latest(self):
        """The newest published frame (None before the first), skipping older ones (counted
        as missed); the same frame again if it was already received and is still offered.
        (It is not once reused: in a stream of frames of 64 KiB or more with no history and
        only lossless subscribers, the publisher's next loan reuses the newest frame's slot
        once every subscriber is past it. Then no frame is offered, and this returns None,
        until the next publish.)"""
        self._check_process()
        got = self._native.latest()
        return None if got is None else Sample(self, got)

    def __iter__(self):
        """Every frame as it arrives, each sample released when the next is taken."""
        self._check_process()
        while True:
            if self._current is not None:
                self._current.release()
            self._current = self.receive()
            yield self._current

    async def areceive(self, timeout=None) -> "Sample":
        """The next frame, awaited on the running asyncio loop without a thread: the core's
        waiter thread wakes the loop when a publish comes (see `mmshare.aio`). `timeout` in
        seconds (None: no limit) raises `Timeout`. Cancel-safe: a cancelled await has taken no
        frame and leaves nothing registered.

        >>> import asyncio, numpy as np, mmshare
        >>> daemon = mmshare.start_daemon()
        >>> client = daemon.connect()
        >>> _ = client.create_stream("doc.async", "u1", (1,), slots=4)
        >>> sub = client.subscribe("doc.async", lossless=True)
        >>> async def first():
        ...     client.publisher("doc.async").send(np.array([7], np.uint8))
        ...     with await sub.areceive(timeout=5) as sample:
        ...         return int(sample.array[0])
        >>> asyncio.run(first())
        7
        >>> daemon.stop()
        0
        """
        self._check_process()
        from . import aio
        native = self._native
        got = await aio.poll_until(native.poll_receive, native.end_wait, timeout,
                                   f"no frame of stream {self.name!r}", self)
        return Sample(self, got)

    def __aiter__(self):
        """`async for sample in sub`: every frame as it arrives (awaited as `areceive`), each
        sample released when the next is taken."""
        return self

    async def __anext__(self) -> "Sample":
        self._check_process()
        if self._current is not None:
            self._current.release()
            self._current = None
        self._current = await self.areceive()
        return self._current

    def close(self):
        """Unsubscribes once its samples (and their views) are gone."""
        if self._current is not None and self._generation == _fork.generation:
            self._current.release()
        self._current = None
        if self._native is not None:
            self._native.close()  # a `try_receive_into` kept from before refuses from now on
        self.__dict__.pop("try_receive_into", None)
        super().close()

    def __repr__(self):
        mode = "lossless" if self.lossless else "lossy"
        return f"<Subscriber {self.name} {mode} {self.dtype.str} {self.shape}>"
