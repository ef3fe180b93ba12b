"""The connection to mmshared (docs/PROTOCOL.md), made by the Rust core: requests run with the
GIL released, and a request is never split by a KeyboardInterrupt (it is raised once the
request is over, so the connection stays usable)."""

import asyncio
import os
from typing import NamedTuple

import numpy as np

from . import _fork, _native, errors
from ._proto import ArrayInfo, StreamInfo, SubscriberStat
from .array import SharedArray, dtype_text
from .service import Requester, Server, ServiceInfo
from .stream import Publisher, Subscriber

SOCKET_ENV = "MMSHARE_SOCKET"
SERVER_UID_ENV = "MMSHARE_SERVER_UID"


def default_socket_path() -> str:
    """`$MMSHARE_SOCKET`, else `$XDG_RUNTIME_DIR/mmshare/mmshared.sock`, else
    `/tmp/mmshare-$UID/mmshared.sock` (the daemon's default)."""
    return os.fspath(_native.default_socket_path())


_dtype_text = dtype_text


def _shape(shape) -> list:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    out = []
    for n in shape:
        n = int(n)
        if not 0 <= n < 2**64:
            raise errors.InvalidShape(f"shape {shape}: dimension {n} is not in 0 .. 2**64 - 1")
        out.append(n)
    return out


def _info(kind: str, info: dict):
    if kind == "array":
        return ArrayInfo(**info)
    info = dict(info)
    info["subscribers"] = tuple(SubscriberStat(**sub) for sub in info["subscribers"])
    return StreamInfo(**info)


class Client:
    """One connection to the daemon. Requests are serialized, so a client may be shared by
    threads. Arrays opened for writing keep the connection open (the writer's lease).

    Before sending anything, the client checks which user the daemon runs as (SO_PEERCRED)
    and raises `errors.WrongServer` naming both uids if it is not the expected one; root is
    always accepted. Expected: `server_uid` if given, else `$MMSHARE_SERVER_UID` if set, else,
    on the default socket (`path=None`, which includes `$MMSHARE_SOCKET`), this user; a
    `path` given with neither is not checked.

    `timeout` (seconds) bounds the wait for the daemon to accept the connection and to answer
    each request; a daemon that is stopped or overloaded then raises `errors.Timeout` naming
    the socket and the wait (the next request connects again). Default: `$MMSHARE_TIMEOUT`
    if set, else 10 seconds; 0 waits without limit.

    >>> import numpy as np, mmshare
    >>> daemon = mmshare.start_daemon()        # a throw-away daemon (tests, notebooks)
    >>> client = daemon.connect()              # or mmshare.connect() for the user's daemon
    >>> frame = client.create("doc.frame", np.float32, (2, 3))
    >>> with frame.write() as view:            # the write side, published on exit
    ...     view[:] = 1.5
    >>> float(frame.read().sum()), frame.version
    (9.0, 1)
    >>> client.open("doc.frame").array.shape   # another handle: the same pages
    (2, 3)
    >>> daemon.stop()
    0
    """

    def __init__(self, path=None, *, server_uid=None, timeout=None):
        if server_uid is not None:
            server_uid = int(server_uid)
            if not 0 <= server_uid < 2**32:
                raise ValueError(f"server_uid {server_uid} is not a uid (0 .. 2**32 - 1)")
        if timeout is not None:
            timeout = float(timeout)
        self._args = (os.fspath(path) if path is not None else None, server_uid, timeout)
        self._conn = _native.Connection(*self._args)
        self._generation = _fork.generation
        self.path = os.fspath(self._conn.path)
        #: The daemon's name and version, from its hello.
        self.server_name = self._conn.server_name

    def __reduce__(self):
        """Pickled, a client is how to connect (socket, expected daemon uid, timeout): the
        receiving process connects anew."""
        path, server_uid, timeout = self._args
        return (_connect_again, (path, server_uid, timeout))

    def __repr__(self):
        state = "closed" if self._conn is None else "connected"
        return f"<mmshare.Client {self.path} {state}>"

    @property
    def _c(self):
        if self._conn is None:
            raise errors.ConnectError(f"the client of {self.path} is closed; connect again")
        if self._generation != _fork.generation:
            # A forked child: the inherited connection is the parent's (its replies would go
            # to whichever process reads first). The child connects on its own; the parent's
            # connection object is kept, unused, so that nothing is sent or closed on it.
            self._inherited = getattr(self, "_inherited", []) + [self._conn]
            self._conn = _native.Connection(*self._args)
            self._generation = _fork.generation
        return self._conn

    def _array(self, reply, mode) -> SharedArray:
        info, native = reply
        array = SharedArray(ArrayInfo(**info), native, lease=self if native.writable else None)
        array._origin = (self._args, info["name"], mode)
        return array

    def create(self, name, dtype, shape, memory=False, mode=None, order="C",
               exist_ok=False, stripes=0, sparse=False) -> SharedArray:
        """Creates an array (owned by this uid) and returns it opened "r+". `mode`: who may
        open it through the daemon, permission bits (default 0o600: only this uid).

        `stripes` divides the array along its outermost axis in memory into that many
        regions (at most 32, whole rows each for C order), each with its own lock, so that
        writers of different regions (`with a.write(np.s_[0:100]) as v:`) run at once and a
        reader of a region (`a.read(np.s_[200:300])`) is not held up by writes elsewhere: 1
        for one lock, 0 (the default) lets the daemon choose from the size (one lock below
        1 MiB). `exist_ok` does not compare it; `info.stripe_bytes` says what was made.

        `sparse=True` allocates only the header at create; each write allocates what it
        writes first, so a full disk raises `NoSpace` at that write (never a crash): for
        arrays larger than the free disk, written here and there. The daemon's limits count
        the apparent size."""
        mode = 0o600 if mode is None else mode
        if order not in ("C", "F"):
            raise ValueError(f"order must be 'C' or 'F', not {order!r}")
        if not isinstance(stripes, int) or isinstance(stripes, bool) or not 0 <= stripes <= 32:
            raise ValueError(f"stripes must be an int from 0 to 32, not {stripes!r}")
        return self._array(self._c.create(name, _dtype_text(dtype), _shape(shape), order,
                                             bool(memory), int(mode), bool(exist_ok),
                                             stripes, bool(sparse)), "r+")

    def open(self, name, mode="r") -> SharedArray:
        """Opens an array: mode "r" maps it read-only, "r+" read-write."""
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
        return self._array(self._c.open(name, mode == "r+"), mode)

    def stat(self, name):
        """An array's `ArrayInfo` or a stream's `StreamInfo` (as `describe`)."""
        return self.describe(name)

    def list(self, prefix="") -> list:
        """Every array (that this uid may read) whose name starts with `prefix`."""
        return [ArrayInfo(**info) for info in self._c.list(prefix)]

    def describe(self, name):
        """An array's `ArrayInfo` or a stream's `StreamInfo`."""
        return _info(*self._c.describe(name))

    def list_all(self, prefix="") -> list:
        """Every array and stream (that this uid may read) whose name starts with `prefix`,
        as `ArrayInfo` and `StreamInfo`, in name order."""
        return [_info(kind, info) for kind, info in self._c.list_all(prefix)]

    def create_stream(self, name, dtype, shape, slots=8, memory=False, mode=None,
                      exist_ok=False, max_subscribers=16, order="C", on_stall="block",
                      stall_after=1.0, history=0, header=None,
                      variable=False, max_publishers=1) -> StreamInfo:
        """Creates a stream of `slots` frames, each of `dtype` and `shape`, for at most
        `max_subscribers` subscribers at once; returns its description. `mode`: permission
        bits (default 0o600).

        `history` keeps the newest frames offered for subscribers that join late or resume
        (`subscribe(..., start="oldest")`), at most `slots - 2`; the subscribers together may
        then hold `slots - 1 - max(history, 1)` samples at once.

        `on_stall` says what the publisher does about a lossless subscriber that keeps it
        waiting for a slot: "block" (wait for it: the default), "demote" (after `stall_after`
        seconds of waiting, make it lossy: it misses frames, each counted, and its `demoted`
        says so) or "evict" (the same, and its next receive raises `Evicted`).

        `header` gives every frame a header of that dtype (one element: a number, a time, a
        record such as `[("t", "M8[ns]"), ("exposure", "f4")]`), written in the loan
        (`loan.header`, or `send(..., header=)`) and read in the sample (`sample.header`),
        with the frame's guarantees. `variable=True` makes frames vary in length along axis 0:
        `shape` is the largest frame's, and each frame has its own rows (`send` a shorter
        array, or set `loan.rows`); samples have their actual shape.

        `max_publishers` lets that many publishers publish at once, each in a ring (lane) of
        its own, so that none waits for another: every subscriber gets the frames of all of
        them (a lossless one every frame of each, in each one's order), merged by publish
        time, and `sample.publisher` says whose each is. The stream takes `max_publishers`
        times the space.

        >>> import numpy as np, mmshare
        >>> daemon = mmshare.start_daemon()
        >>> client = daemon.connect()
        >>> info = client.create_stream("doc.ticks", "<u4", (2,), slots=4)
        >>> pub, sub = client.publisher("doc.ticks"), client.subscribe("doc.ticks", lossless=True)
        >>> pub.send(np.array([1, 2], np.uint32))
        0
        >>> with sub.receive(timeout=5) as sample:
        ...     sample.number, sample.array.tolist()
        (0, [1, 2])
        >>> daemon.stop()
        0
        """
        if order not in ("C", "F"):
            raise ValueError(f"order must be 'C' or 'F', not {order!r}")
        mode = 0o600 if mode is None else mode
        return _info("stream", self._c.create_stream(
            name, _dtype_text(dtype), _shape(shape), order, int(slots), int(max_subscribers),
            bool(memory), int(mode), bool(exist_ok), str(on_stall), float(stall_after),
            int(history), None if header is None else _dtype_text(header), bool(variable),
            int(max_publishers)))

    def create_service(self, name, request, response, max_requesters=8, max_servers=2,
                       slots=4, memory=False, mode=None, exist_ok=False) -> ServiceInfo:
        """Creates a service that takes requests of `request` (a `(dtype, shape)` pair) and
        answers with responses of `response`, for `max_requesters` requesters and
        `max_servers` servers at once (each at most 16); `slots`: requests one requester may
        have in flight to one server (and responses one server to one requester) before it
        waits. A service is streams `NAME.req.S` and `NAME.resp.R` (the Rust `service` module
        docs); `delete_service` removes them."""
        (rd, rs), (sd, ss) = request, response
        mode = 0o600 if mode is None else mode
        requests, responses, nr, ns = self._c.create_service(
            name, (_dtype_text(rd), _shape(rs)), (_dtype_text(sd), _shape(ss)),
            int(max_requesters), int(max_servers), int(slots), bool(memory), int(mode),
            bool(exist_ok))
        return ServiceInfo(name, nr, ns, _info("stream", requests), _info("stream", responses))

    def delete_service(self, name) -> None:
        """Deletes every stream of service `name` (processes using them keep working)."""
        self._c.delete_service(name)

    def requester(self, name) -> Requester:
        """Attaches as a requester of service `name` (needs read and write permission), in the
        first free requester slot (`Busy` when all are taken)."""
        native = self._c.requester(name)
        requests, responses = self._service_streams(name)
        return Requester(native, requests, responses, lease=self)

    def server(self, name) -> Server:
        """Attaches as a server of service `name` (needs read and write permission), in the
        first free server slot (`Busy` when all are taken)."""
        native = self._c.server(name)
        requests, responses = self._service_streams(name)
        return Server(native, requests, responses, lease=self)

    def _service_streams(self, name):
        return (self.describe(f"{name}.req.0"), self.describe(f"{name}.resp.0"))

    def publisher(self, name) -> Publisher:
        """Attaches as a publisher of stream `name` (as many at a time as the stream's
        `max_publishers`, 1 unless created with more: `Busy` past that); needs write
        permission. The connection stays open while it is attached (its lease)."""
        info, native = self._c.publisher(name)
        publisher = Publisher(_info("stream", info), native, lease=self)
        publisher._origin = (self._args, name, {})
        return publisher

    def subscribe(self, name, lossless=False, max_held=2, start=None) -> Subscriber:
        """Subscribes to stream `name` (needs read permission): lossy by default (never
        slows the publisher, counts what it skips), or `lossless` (every frame, in order).
        It may hold `max_held` samples at once (fewer if the stream's budget is short).

        `start` says where it starts: "next" (the next frame published; the default when
        lossy), "oldest" (the oldest frame the stream still has: its history), or a frame
        number `n` (resuming: the frames from `n` that are gone are counted in `missed` at
        the first receive). A lossless subscriber starts at frame 0 by default: it gets
        every frame still offered and counts the earlier ones as missed."""
        if start is None:
            kind, frame = "default", 0
        elif isinstance(start, str):
            if start not in ("next", "oldest"):
                raise ValueError(f"start must be 'next', 'oldest' or a frame number, not {start!r}")
            kind, frame = start, 0
        elif isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be 'next', 'oldest' or a frame number, not {start!r}")
        else:
            kind, frame = "frame", start
        info, native = self._c.subscribe(name, bool(lossless), int(max_held), kind, frame)
        subscriber = Subscriber(_info("stream", info), native, lease=self)
        subscriber._origin = (self._args, name,
                              {"lossless": bool(lossless), "max_held": int(max_held),
                               "start": start})
        return subscriber

    def wait_for(self, name, timeout=None):
        """Waits until an array or a stream named `name` exists (and this uid may read it),
        up to `timeout` seconds (None: a day); returns its `ArrayInfo` or `StreamInfo`, or
        raises `Timeout`. One request: the daemon answers when it creates the object (nothing
        polls), at once if it exists. Ctrl-C interrupts it."""
        return _info(*self._c.wait_for(name, timeout))

    async def await_for(self, name, timeout=None):
        """`wait_for` on the running asyncio loop: one request on a connection of its own,
        whose answer the loop awaits (no thread waits). Returns the `ArrayInfo` or
        `StreamInfo`; raises `Timeout` when `timeout` seconds (None: a day) pass. Cancel-safe:
        a cancelled await closes its connection, and the daemon stops waiting."""
        from . import aio
        pending = self._c.start_wait_for(name, timeout)
        while True:
            got = pending.try_take()
            if got is not None:
                return _info(*got)
            await aio.readable(pending.fileno())

    def watch(self, prefix="") -> "Watch":
        """Watches the arrays and streams whose names start with `prefix` (that this uid may
        read): an iterator of `WatchEvent`s (created, deleted, a stream's subscribers
        changing), from the moment this returns. `watch.next(timeout)` waits at most that
        long (None when nothing came). Close it (or use `with`) to end it."""
        return Watch(self._c.watch(prefix))

    def delete(self, name) -> None:
        """Unlinks the array or stream: mappings keep working, the name is free at once."""
        self._c.delete(name)

    def close(self):
        """Drops this handle on the connection; it closes once no array opened for writing
        through it (whose lease it is) is left."""
        self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class WatchEvent(NamedTuple):
    """One change a `Watch` reports. `kind`: "created" (an object; `object` is "array" or
    "stream"), "deleted", "subscribers" (a stream's attached subscribers are now `count`),
    or "lost" (`count` events were dropped because the watcher fell behind: list again)."""
    kind: str
    name: str = ""
    object: str = ""
    count: int = 0


class Watch(_fork.Owned):
    """A watch of the daemon's objects (`Client.watch`): iterate it (blocking), or call
    `next(timeout)`. Ends when closed, or when the daemon stops."""

    def __init__(self, native):
        self._born()
        self._native = native
        # The one `anext` awaiting the socket, and its loop (`close` ends it).
        self._waiting = None

    def __repr__(self):
        state = "closed" if self._native.fileno() < 0 else "open"
        return f"<mmshare.Watch {state}>"

    def next(self, timeout=None):
        """The next `WatchEvent`, waiting up to `timeout` seconds (None: without limit);
        None when none came in time, or once the watch ended."""
        self._check_process()
        got = self._native.next(timeout)
        if got is None:
            return None
        kind, f = got
        return WatchEvent(kind, f.get("name", ""), f.get("kind", ""),
                          f.get("count", f.get("events", 0)))

    def __iter__(self):
        """Every event, waiting for each without limit; ends when the watch does."""
        return self

    def __next__(self) -> WatchEvent:
        event = self.next(None)
        if event is None:
            raise StopIteration
        return event

    async def anext(self, timeout=None):
        """`next` on the running asyncio loop (no thread waits): the next `WatchEvent`, or
        None when `timeout` seconds pass first or once the watch ended."""
        self._check_process()
        if self._waiting is not None:
            raise RuntimeError("another task awaits this watch already: one reader at a time")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    got = self._native.try_next()
                    if got is not None:
                        kind, f = got
                        if kind == "end":
                            return None
                        return WatchEvent(kind, f.get("name", ""), f.get("kind", ""),
                                          f.get("count", f.get("events", 0)))
                    fd = self._native.fileno()
                    if fd < 0:
                        return None
                    future = loop.create_future()
                    self._waiting = (loop, fd, future)
                    loop.add_reader(fd, lambda: future.done() or future.set_result(None))
                    try:
                        await future
                    finally:
                        self._stop_waiting()
        except TimeoutError as e:
            if isinstance(e, errors.Timeout):
                raise
            return None

    def _stop_waiting(self) -> None:
        """Ends the pending `anext`'s watch of the socket (before the socket is closed)."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            loop, fd, future = waiting
            loop.remove_reader(fd)
            if not future.done():
                future.set_result(None)

    def __aiter__(self):
        """`async for event in client.watch(...)`: every event, awaited on the loop; ends
        when the watch does."""
        return self

    async def __anext__(self) -> WatchEvent:
        event = await self.anext(None)
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self):
        """Ends the watch (closes its connection); a pending `anext` then returns None."""
        self._stop_waiting()
        self._native.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(path=None, *, server_uid=None, timeout=None) -> Client:
    """Connects to the daemon at `path` (default: `default_socket_path()`, whose daemon must
    run as this user or root). With `server_uid`, the daemon must run as that uid or root;
    `errors.WrongServer` otherwise. `timeout`: seconds to wait for the daemon (see
    `Client`)."""
    return Client(path, server_uid=server_uid, timeout=timeout)


def _connect_again(path, server_uid, timeout) -> Client:
    """A pickled `Client` in the receiving process."""
    return Client(path, server_uid=server_uid, timeout=timeout)


def _open_again(kind, client_args, name, options):
    """A pickled array, publisher or subscriber in the receiving process: opened by name
    again, through a connection of its own."""
    client = _connect_again(*client_args)
    if kind == "array":
        return client.open(name, options)
    if kind == "publisher":
        return client.publisher(name)
    return client.subscribe(name, **options)
