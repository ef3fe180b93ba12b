"""SharedArray: a mapped mmshare array with the seqlock protocol of docs/FORMAT.md.

Memory ordering of the pure-Python seqlock
-----------------------------------------
A reader loads the sequence, copies the data, loads the sequence again and accepts the copy
only if both loads agree and are even. This needs the three steps to reach memory in program
order. CPython performs them as separate C calls (the compiler cannot move loads across an
opaque call), and **x86-64 never reorders a load with an earlier load** (its TSO model), so no
fence instruction is needed there. On weakly ordered CPUs (ARM, POWER) the hardware may reorder
the copy's loads with the second sequence load; a reader there can accept a torn copy unless an
acquire fence separates them. The reader therefore issues libatomic's
`atomic_thread_fence(acquire)` where Rust's `read_begin` / `read_validate` do; without
libatomic there is no fence, and `read()` is only trusted on x86-64 (elsewhere it warns and the
Rust client is the one to use). Writers use real atomic operations (libatomic) everywhere,
and follow the Rust writer (mmshare-lib/src/seqlock.rs) step for step: compare-and-swap the
sequence from even s to s + 1, then the writer word from 0 to this process; to publish,
compare-and-swap the writer word back to 0, store the statistics and flags, compare-and-swap
the sequence from s + 1 to s + 2. A writer-word CAS fails only while a recovery has claimed the
word, and a claim is always followed either by a takeover (the sequence leaves s + 1) or by a
hand-back of the word as the recovery found it (its claim was made on a stale look), so the
writer waits (within its timeout) until the sequence or the CAS tells which. A takeover, or a
failed publishing CAS, means the write side is lost: the writer changes nothing more, takes the
write side again to mark the array TORN if it wrote anything, and raises `LostWriteSide`.

Every loop that may sleep (`read()`, `wait()`, `write()`) loads the futex word, then an acquire
fence, then the sequence, as Rust's `futex_snapshot`: a publish after the futex load changes
the word, so FUTEX_WAIT returns at once instead of sleeping through the wake-up.

`read(index=...)` applies the index inside the loop, between the two sequence loads: fancy,
boolean and scalar indexes copy as they are applied, and the copy returned must be the one
validated. `.array` is read-only on every handle; the only writable view is the one `write()`
yields, made read-only when its block ends.
"""

import mmap
import os
import platform
import signal
import threading
import time
import warnings
from contextlib import contextmanager

import numpy as np

from . import _format as fmt
from . import _sys, errors

_SPIN = 20e-6          # spin this long before yielding
_YIELD_UNTIL = 100e-6  # then yield until this long, then sleep on the futex
_MAX_SLEEP = 0.05      # longest futex sleep between re-checks
_U64 = 2**64 - 1

ORDERED_LOADS = platform.machine() in ("x86_64", "AMD64", "i686", "i386")


def _file_len(data_len: int) -> int:
    return fmt.HEADER_SIZE + (data_len + 7) // 8 * 8


@contextmanager
def _deferred_signals():
    """Defers SIGINT/SIGTERM for a few statements, so a KeyboardInterrupt cannot split a
    compare-and-swap from the bookkeeping that must follow it. Python-level handlers only run
    in the main thread; elsewhere there is nothing to defer."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Backoff:
    """Spin, then yield, then sleep on the futex; with a deadline."""

    def __init__(self, timeout):
        self.start = time.monotonic()
        self.deadline = None if timeout is None else self.start + timeout

    def pause(self, futex_address, seen) -> bool:
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            return False
        elapsed = now - self.start
        if elapsed < _SPIN:
            pass
        elif elapsed < _YIELD_UNTIL:
            os.sched_yield()
        else:
            left = _MAX_SLEEP if self.deadline is None else min(_MAX_SLEEP, self.deadline - now)
            if _sys.HAVE_FUTEX:
                _sys.futex_wait(futex_address, seen, max(left, 0.0))
            else:
                time.sleep(min(left, 0.001))
        return True


class SharedArray:
    """An array handed out by the daemon, mapped into this process.

    `array` is a zero-copy, read-only view of the live pages (whatever the mode); `read()`
    takes a consistent copy; `write()` takes the write side, yields the only writable view,
    and publishes a new version.
    """

    def __init__(self, info, fd: int, writable: bool, lease=None):
        self.info = info
        self.writable = writable
        self._lease = lease  # a write handle keeps its connection open: the writer's lease
        try:
            size = os.fstat(fd).st_size
            length = _file_len(info.data_len)
            if size < length:
                raise errors.FormatError(f"array file is {size} bytes, its header needs {length}")
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            self._mm = mmap.mmap(fd, length, flags=mmap.MAP_SHARED, prot=prot)
        finally:
            os.close(fd)  # the mapping keeps what it needs
        header = fmt.parse_header(self._mm[:fmt.HEADER_SIZE])
        if (header["dtype"], header["shape"]) != (info.dtype, tuple(info.shape)):
            raise errors.FormatError("the file's header does not match the daemon's description")
        self.dtype = np.dtype(info.dtype)
        self.shape = tuple(info.shape)
        self.order = info.order
        self.name = info.name
        self.path = info.path
        self._words = np.frombuffer(self._mm, dtype="<u8", count=fmt.HEADER_SIZE // 8)
        self._u32 = np.frombuffer(self._mm, dtype="<u4", count=fmt.HEADER_SIZE // 4)
        self._base = self._words.ctypes.data
        count = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        # `.array` is read-only down to its buffer (a read-only memoryview), so its WRITEABLE
        # flag cannot be turned back on: NumPy code cannot write around the seqlock.
        self._array = self._data_view(memoryview(self._mm).toreadonly(), count)
        # The writable pages: only write() hands out views of them, read-only again on exit.
        self._rw = self._data_view(self._mm, count) if writable else None
        self.retries = 0

    def _data_view(self, buffer, count: int) -> np.ndarray:
        flat = np.frombuffer(buffer, dtype=self.dtype, count=count, offset=fmt.HEADER_SIZE)
        return flat.reshape(self.shape, order=self.order)

    # -- state ------------------------------------------------------------------------------

    @property
    def array(self) -> np.ndarray:
        """The live pages as an ndarray, zero-copy. Not synchronized: it may show a write in
        progress. Always read-only, even with mode "r+" (write through `write()`)."""
        return self._array

    def _check_open(self):
        if self._words is None:
            raise errors.MmshareError(f"array {self.name} is closed")

    def _seq(self) -> int:
        self._check_open()
        return int(self._words[fmt.SEQUENCE // 8])

    def _futex(self) -> int:
        self._check_open()
        return int(self._u32[fmt.FUTEX // 4])

    def _futex_snapshot(self) -> int:
        """The futex word, then an acquire fence, as `futex_snapshot` in mmshare-lib/src/raw.rs.

        The fence keeps the sequence load that follows after this load even on weakly ordered
        CPUs; otherwise a waiter could pair an old odd sequence with an already bumped futex
        value and sleep through the wake-up. Pairs with the release fetch-add in `_publish`."""
        seen = self._futex()
        _sys.fence_acquire()
        return seen

    def _copy(self, index) -> np.ndarray:
        """`array[index]` (all of it for None) copied out of the pages; called between the two
        sequence loads of `read()`. For fancy, boolean and scalar indexes applying the index
        *is* the copy, so it must happen here, inside the protocol, like any copy."""
        if index is None:
            return np.array(self._array, copy=True)
        got = self._array[index]
        if isinstance(got, np.ndarray) and got.flags.owndata:
            return got  # a fancy or boolean index copied: that copy is this attempt's
        return np.array(got, copy=True)  # a view of the pages (basic index) or a scalar

    @property
    def version(self) -> int:
        """The current version: sequence // 2."""
        return self._seq() // 2

    @property
    def torn(self) -> bool:
        """Whether a write did not complete (until a repairing write)."""
        self._check_open()
        return bool(self._u32[fmt.FLAGS // 4] & fmt.FLAG_TORN)

    # -- reading ----------------------------------------------------------------------------

    def read(self, index=None, timeout: float = 10.0, allow_torn: bool = False) -> np.ndarray:
        """A consistent copy of the array, or of `array[index]`, through the seqlock.

        Any NumPy index works (slices, integers, integer or boolean arrays); it is applied in
        every attempt, inside the protocol, so the copy returned is the one the seqlock
        validated. Raises `Torn` if a write did not complete (unless `allow_torn`), `Timeout`
        if no consistent copy could be taken within `timeout` seconds.
        """
        self._check_open()
        if not ORDERED_LOADS and not _sys.have_fences():
            warnings.warn("mmshare's Python read() relies on x86-64 load ordering; on this CPU a "
                          "torn copy could be accepted (see mmshare.array docs)", stacklevel=2)
        backoff = _Backoff(timeout)
        futex_address = self._base + fmt.FUTEX
        while True:
            seen = self._futex_snapshot()
            s1 = self._seq()
            _sys.fence_acquire()  # the copy below stays after the first sequence load
            if s1 & 1 == 0:
                copy = self._copy(index)
                flags = int(self._u32[fmt.FLAGS // 4])
                _sys.fence_acquire()  # ... and before the second one
                if self._seq() == s1:
                    if flags & fmt.FLAG_TORN and not allow_torn:
                        raise errors.Torn(s1 // 2)
                    return copy
                self.retries += 1
            if not backoff.pause(futex_address, seen):
                raise errors.Timeout(
                    f"no consistent read of {self.name} within {timeout} s "
                    f"(sequence {self._seq()}, {self.retries} retries)")

    def wait(self, newer_than=None, timeout=None) -> int:
        """Waits until a version newer than `newer_than` (default: the current one) is
        published and returns it. Sleeps on the shared futex in the file, so a quiet array
        costs no CPU; polls if the futex cannot be used. Raises `Timeout`."""
        if newer_than is None:
            newer_than = self.version
        backoff = _Backoff(timeout)
        futex_address = self._base + fmt.FUTEX
        while True:
            seen = self._futex_snapshot()  # before the sequence: a publish after it wakes us
            s = self._seq()
            _sys.fence_acquire()  # an acquire load of the sequence, as Rust's read_begin
            if s & 1 == 0 and s // 2 > newer_than:
                return s // 2
            if not backoff.pause(futex_address, seen):
                raise errors.Timeout(
                    f"no version of {self.name} newer than {newer_than} within {timeout} s")

    # -- writing ----------------------------------------------------------------------------

    @contextmanager
    def write(self, timeout: float = 10.0, repair: bool = False):
        """Takes the write side, yields a writable view of the array, publishes a new version
        on exit.

        The view is the only writable one there is (`array` is read-only) and it is made
        read-only when the block ends, however it ends: keep writing to it afterwards and
        NumPy raises ValueError instead of writing around the seqlock.

        If the body raises (KeyboardInterrupt included), the data may be half-written: the
        version is published marked TORN (readers get `Torn` until a repairing write), the
        write side is released, and the exception propagates. The lock is never left held:
        taking it and publishing run with SIGINT/SIGTERM deferred, so an interrupt cannot land
        between a compare-and-swap and the bookkeeping (while a recovery has claimed the writer
        word, that includes waiting, at most `timeout`, for it to take over or hand it back).
        A write that replaces the whole array can pass `repair=True` to clear an earlier TORN
        mark.

        Raises `LostWriteSide` if the write side was taken from this writer (a recovery judged
        it dead) before it published: nothing is published as this write, the sequence is left
        to whoever holds it now, and the array ends up TORN (this writer takes the write side
        again, within `timeout`, to mark it so, since its stores may have landed on a version
        someone else published). If that happens while the body's own exception propagates,
        the body's exception is the one raised; the array is TORN all the same.
        """
        if not self.writable:
            raise errors.PermissionDenied(f"{self.name} is open read-only; open it with mode 'r+'")
        self._check_open()
        _sys.atomics()  # fail before anything is taken if libatomic is missing
        me = _sys.process_identity()  # before taking the lock: it reads /proc
        held = []      # [s], s the even sequence replaced, once the write side is ours
        yielded = ok = False
        try:
            self._take_write_side(timeout, me, held)
            view = self._rw.view()
            yielded = True
            try:
                yield view
            finally:
                view.flags.writeable = False  # nothing may write once the version is published
            ok = True
        finally:
            if held:
                # Interrupted before the body ran: nothing was written, publish it clean.
                self._finish_write(held[0], me, timeout, clean=ok or not yielded,
                                   repair=repair and ok, wrote=yielded, raising=not ok)

    def _take_write_side(self, timeout, me: int, held: list) -> None:
        """Takes the write side (CAS of the sequence from even s to s + 1) and records `me` as
        its holder (CAS of the writer word from 0), as `acquire_write_as` in
        mmshare-lib/src/raw.rs. Appends s to `held` with signals deferred, so a caller's
        `finally` sees it even if an interrupt lands right after.

        Raises `Timeout` if the write side stays held, and `LostWriteSide` if a recovery took
        it over before this writer could record itself (`record_writer`): nothing may be
        written, and the sequence is left alone (it is the recovery's). The record runs with
        signals deferred, waiting as `_swap_identity` does: an interrupt there could leave
        s + 1 held by nobody."""
        seq_address = self._base + fmt.SEQUENCE
        writer_address = self._base + fmt.WRITER
        futex_address = self._base + fmt.FUTEX
        backoff = _Backoff(timeout)
        while True:
            seen = self._futex_snapshot()
            s = self._seq()
            if s & 1 == 0:
                with _deferred_signals():
                    if _sys.cas_u64(seq_address, s, (s + 1) & _U64):
                        _sys.fence_release()  # the stores below stay after s + 1
                        self._swap_identity(s, 0, me, timeout)
                        # A writer that stalled between its sequence CAS and the record for the
                        # 2 s after which an unidentified write is taken over finds the word free
                        # again once that recovery has published: the sequence tells. Hand the
                        # word back and stop before writing anything.
                        now = self._seq()
                        if now != (s + 1) & _U64:
                            _sys.compare_exchange_u64(writer_address, me, 0)
                            raise errors.LostWriteSide((s + 1) & _U64, now)
                        held.append(s)
                        return
                continue  # another writer won the race from the same even value
            if not backoff.pause(futex_address, seen):
                raise errors.Timeout(
                    f"write side of {self.name} still held after {timeout} s (sequence {s})")

    def _swap_identity(self, s: int, old: int, new: int, timeout) -> None:
        """The holder of odd s + 1 moves the writer word from `old` to `new` by CAS
        (`swap_identity` in mmshare-lib/src/raw.rs). Call with signals deferred.

        The CAS fails only while a recovery has claimed the word, and a claim is always
        followed by one of two things, so wait (within `timeout`) to see which:
        - the recovery takes the write side over (the sequence leaves s + 1): raises
          `LostWriteSide`;
        - the recovery finds the sequence moved (it claimed on a stale look: the same identity
          word recorded again by a later write of this process, an ABA) and hands the word back
          as it found it: the CAS then succeeds.
        Deciding "lost" on the first failure would leave s + 1 held by nobody. If the claimant
        neither takes over nor hands back within `timeout` (it died after claiming), raises
        `LostWriteSide` and leaves the write side to the recovery of that claimant."""
        held = (s + 1) & _U64
        writer_address = self._base + fmt.WRITER
        futex_address = self._base + fmt.FUTEX
        backoff = _Backoff(timeout)
        while True:
            # The futex word first: a takeover's publish after this load changes it, so the
            # pause below does not sleep through it.
            seen = self._futex_snapshot()
            if _sys.compare_exchange_u64(writer_address, old, new) == old:
                return
            now = self._seq()
            if now != held:
                raise errors.LostWriteSide(held, now)
            if not backoff.pause(futex_address, seen):
                raise errors.LostWriteSide(held, now)

    def _finish_write(self, s: int, me: int, timeout, clean: bool, repair: bool, wrote: bool,
                      raising: bool) -> None:
        """Publishes the write that replaced even `s`; on a loss, marks the array TORN and
        raises `LostWriteSide` (unless the block's own exception is propagating)."""
        try:
            self._publish(s, me, clean, repair, timeout)
        except errors.LostWriteSide:
            if wrote:
                self._mark_torn_after_loss(timeout, me)
            if not raising:
                raise

    def _publish(self, s: int, me: int, clean: bool, repair: bool, timeout) -> None:
        """Gives the writer word up, stores the statistics and flags, publishes s + 2: `publish`
        in mmshare-lib/src/raw.rs. Both hand-overs are compare-and-swaps: if a recovery took
        the write side over (it claims the writer word, then moves the sequence on), this
        raises `LostWriteSide` and changes nothing more, so the sequence never moves
        backwards, the recovery's TORN mark stays, and a third writer's write in progress is
        not published. A claim that is handed back (made on a stale look) is waited out, within
        `timeout` (`_swap_identity`). `clean` False publishes TORN (and counts no write)."""
        held = (s + 1) & _U64
        with _deferred_signals():
            # Give the identity up first: a recovery claims this word (CAS) before it takes the
            # sequence over, so exactly one of us wins. If it took the write side over, touch
            # nothing more; if it hands the word back (a stale claim), this waits for that.
            self._swap_identity(s, me, 0, timeout)
            w = self._words
            if clean:
                w[fmt.WRITE_COUNT // 8] = (int(w[fmt.WRITE_COUNT // 8]) + 1) & _U64
                w[fmt.LAST_WRITE_NS // 8] = time.time_ns()
            flags = int(self._u32[fmt.FLAGS // 4])
            if not clean:
                flags |= fmt.FLAG_TORN
            elif repair:
                flags &= ~fmt.FLAG_TORN
            self._u32[fmt.FLAGS // 4] = flags
            # Publish: a compare-and-swap (sequentially consistent, so also a release), never a
            # store, so only the holder of s + 1 can publish.
            found = _sys.compare_exchange_u64(self._base + fmt.SEQUENCE, held, (s + 2) & _U64)
            if found != held:
                raise errors.LostWriteSide(held, found)
            _sys.fetch_add_u32_release(self._base + fmt.FUTEX, 1)
            _sys.futex_wake_all(self._base + fmt.FUTEX)

    def _mark_torn_after_loss(self, timeout, me: int) -> None:
        """After losing the write side: takes it again (within `timeout`) and publishes TORN,
        so the stores made after the loss cannot hide behind a version that a later whole
        write declared consistent (`mark_torn_after_loss` in mmshare-lib/src/raw.rs). If the
        write side cannot be had, the recovery's own TORN mark stands."""
        held = []
        try:
            self._take_write_side(timeout, me, held)
        except (errors.Timeout, errors.LostWriteSide):
            pass
        finally:
            if held:
                try:
                    self._publish(held[0], me, clean=False, repair=False, timeout=timeout)
                except errors.LostWriteSide:
                    pass

    # -- lifetime ---------------------------------------------------------------------------

    def flush(self):
        """Writes dirty pages to the file (msync). A no-op for read-only arrays."""
        if self.writable:
            self._mm.flush()

    def close(self):
        """Unmaps the array (views taken from `array` must be gone) and drops the lease."""
        self._array = self._rw = None
        self._words = self._u32 = None
        try:
            self._mm.close()
        except BufferError:
            pass  # a caller still holds a view; the mapping goes when it does
        self._lease = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        mode = "r+" if self.writable else "r"
        state = "closed" if self._words is None else f"version {self.version}"
        return (f"<SharedArray {self.name} {self.dtype.str} {self.shape} order {self.order} "
                f"mode {mode} {state}>")
