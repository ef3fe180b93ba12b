"""asyncio support: waits that an event loop keeps, woken by the Rust core.

Each event loop gets one `_native.Notifier`: an eventfd that the loop watches with
`add_reader`. An `await` of a handle (`Subscriber.areceive`, `SharedArray.await_version`,
`Publisher.aloan`) polls the handle; when nothing is there yet, the poll registers the wait with
the core's waiter thread (one OS thread per process sleeps on the shared futex words of every
waiting handle, whatever the number of waits) and the coroutine awaits a future. When a publish
or a write moves the word, the waiter thread writes the eventfd and records the wait; the
loop's reader resolves its future and the coroutine polls again.

A cancelled await (a timeout, `task.cancel()`) ends its wait: it has taken nothing, and nothing
stays registered or counted. Works on any asyncio loop with `add_reader` (uvloop included).
"""

import asyncio
import weakref

from . import _native, errors

__all__ = ["Wait", "readable", "poll_until"]


class _LoopWaits:
    """One event loop's notifier, and the futures of its pending waits by id."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.notifier = _native.Notifier()
        self.futures: dict = {}
        loop.add_reader(self.notifier.fileno(), self._on_ready)

    def _on_ready(self) -> None:
        # A wake-up of a wait without a future is one that ended (or a stale one): nothing
        # awaits it. A live wait always has its future by the time this runs: a coroutine
        # registers it right after its poll, with no suspension in between, and this
        # callback runs only when the loop gets control back.
        for wait_id in self.notifier.drain():
            future = self.futures.get(wait_id)
            if future is not None and not future.done():
                future.set_result(None)


_BY_LOOP: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaits]" = (
    weakref.WeakKeyDictionary())


def _loop_waits() -> _LoopWaits:
    loop = asyncio.get_running_loop()
    waits = _BY_LOOP.get(loop)
    if waits is None:
        waits = _BY_LOOP[loop] = _LoopWaits(loop)
    return waits


class Wait:
    """One pending await: `native` is polled by a handle's `poll_*` and ended by its
    `end_wait`; `woken()` returns once the core says the awaited word moved."""

    __slots__ = ("_waits", "native", "_loop", "_future")

    def __init__(self):
        self._waits = _loop_waits()
        self.native = self._waits.notifier.new_wait()
        self._loop = asyncio.get_running_loop()
        self._future = None

    def interrupt(self) -> None:
        """Ends a pending `woken()` early (from any thread): its handle was closed."""
        def wake() -> None:
            if self._future is not None and not self._future.done():
                self._future.set_result(None)
        try:
            self._loop.call_soon_threadsafe(wake)
        except RuntimeError:
            pass  # the loop is closed: nothing awaits

    async def woken(self) -> None:
        waits, wait_id = self._waits, self.native.id
        future = asyncio.get_running_loop().create_future()
        waits.futures[wait_id] = future
        self._future = future
        try:
            await future
        finally:
            self._future = None
            waits.futures.pop(wait_id, None)


async def poll_until(poll, end, timeout, what: str, handle=None):
    """Polls `poll(native_wait)` until it gives something other than None, awaiting the
    core's wake-up in between, for at most `timeout` seconds (None: no limit; `Timeout` then).
    `end(native_wait)` ends the wait however it finishes. With `handle` (whose `_waits` set
    it joins), closing the handle ends the await with `MmshareError`."""
    wait = Wait()
    if handle is not None:
        handle._waits.add(wait)
    try:
        async with asyncio.timeout(timeout):
            while True:
                if handle is not None and handle._native is None:
                    raise errors.MmshareError(f"{what}: {handle.name!r} was closed meanwhile")
                got = poll(wait.native)
                if got is not None:
                    return got
                await wait.woken()
    except TimeoutError as e:
        if isinstance(e, errors.Timeout):
            raise
        raise errors.Timeout(f"{what} within {timeout} s") from None
    finally:
        if handle is not None:
            handle._waits.discard(wait)
        end(wait.native)


async def readable(fd: int) -> None:
    """Returns once `fd` is readable (the running loop's `add_reader`, removed again however
    this ends)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await future
    finally:
        loop.remove_reader(fd)
