"""The wire protocol (docs/PROTOCOL.md): postcard-encoded messages, written out by hand.

Encoding rules used: unsigned LEB128 varints for u32/u64 and lengths (always in their minimal
form: a varint of more than one byte never ends in a 0x00 byte), one byte for bool and Option
tags, enums as a varint variant index followed by their fields, structs as their fields in
order. A message must use every byte. Replies that break a rule are refused with a
ProtocolError naming the byte offset.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

from . import errors

PROTOCOL_VERSION = 1
MAX_MESSAGE = 64 * 1024

ORDERS = ("C", "F")
BACKINGS = ("file", "memory")
ROLES = ("publish", "subscribe")


@dataclass(frozen=True)
class ArrayInfo:
    """What the daemon says about an array."""

    name: str
    dtype: str
    shape: Tuple[int, ...]
    order: str
    data_offset: int
    data_len: int
    version: int
    backing: str
    owner_uid: int
    owner_gid: int
    mode: int
    torn: bool
    path: str
    #: Bytes per stripe, each with its own seqlock (0: one sequence for the whole array).
    stripe_bytes: int = 0
    #: Whether the file is sparse (allocated region by region as it is written).
    sparse: bool = False

    @property
    def nbytes(self) -> int:
        return self.data_len


@dataclass(frozen=True)
class SubscriberStat:
    """One subscriber of a stream, as the daemon reports it (statistics, read unsynchronized)."""

    pid: int
    lossless: bool
    max_held: int
    lag: int
    missed: int
    received: int


@dataclass(frozen=True)
class StreamInfo:
    """What the daemon says about a stream (docs/PROTOCOL.md, StreamInfo). `shape`, `dtype`
    and `order` are one frame's; slot `i`'s frame starts at `data_offset + i * slot_stride`
    in the stream's data file."""

    name: str
    dtype: str
    shape: Tuple[int, ...]
    order: str
    slots: int
    max_subscribers: int
    data_offset: int
    frame_len: int
    slot_stride: int
    published: int
    backing: str
    owner_uid: int
    owner_gid: int
    mode: int
    path: str
    publisher: Optional[int]
    subscribers: Tuple[SubscriberStat, ...]
    #: "block", "demote" or "evict" (what the publisher does about a stalling lossless
    #: subscriber), and after how many seconds of waiting.
    on_stall: str = "block"
    stall_after: float = 0.0
    #: The newest frames kept offered for subscribers that join late (0: none).
    history: int = 0
    #: The dtype of each frame's header, canonical ("" when frames carry none).
    header: str = ""
    #: Whether frames vary in length along axis 0 (`shape` is the largest frame's).
    variable: bool = False
    #: Publishers it may have at once (one ring, a lane, each).
    max_publishers: int = 1
    #: The pids of the publishers attached now, in lane order.
    publishers: Tuple[int, ...] = ()


def _varint(n: int) -> bytes:
    if n < 0 or n >= 1 << 64:
        raise ValueError(f"{n} does not fit in an unsigned 64-bit integer")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return _varint(len(b)) + b


def _bool(v: bool) -> bytes:
    return b"\x01" if v else b"\x00"


def encode_hello(client: str, version: int = PROTOCOL_VERSION) -> bytes:
    return _varint(0) + _varint(version) + _string(client)


def encode_create(name: str, dtype: str, shape, order: str, memory: bool, mode: int,
                  exist_ok: bool, stripes: int = 0, sparse: bool = False) -> bytes:
    if order not in ORDERS:
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise errors.InvalidShape(f"shape {shape} has a negative dimension")
    body = _string(name) + _string(dtype) + _varint(len(shape))
    body += b"".join(_varint(d) for d in shape)
    body += _varint(ORDERS.index(order)) + _varint(1 if memory else 0)
    if not 0 <= stripes < 2**32:
        raise ValueError(f"stripes must be 0 to 32, not {stripes}")
    body += _varint(mode) + _bool(exist_ok) + _varint(stripes) + _bool(sparse)
    return _varint(1) + body


def encode_open(name: str, write: bool) -> bytes:
    return _varint(2) + _string(name) + _varint(1 if write else 0)


def encode_stat(name: str) -> bytes:
    return _varint(3) + _string(name)


def encode_list(prefix: str, after: Optional[str]) -> bytes:
    tail = b"\x00" if after is None else b"\x01" + _string(after)
    return _varint(4) + _string(prefix) + tail


def encode_delete(name: str) -> bytes:
    return _varint(5) + _string(name)


def _shape(shape) -> bytes:
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise errors.InvalidShape(f"shape {shape} has a negative dimension")
    return _varint(len(shape)) + b"".join(_varint(d) for d in shape)


STALLS = ("block", "demote", "evict")


def _stall(on_stall: str, after_ms: int) -> bytes:
    """WireStall: the variant index, then (Demote, Evict) `after_ms` as a u32 varint."""
    if on_stall not in STALLS:
        raise ValueError(f"on_stall must be one of {STALLS}, not {on_stall!r}")
    if on_stall == "block":
        return _varint(0)
    if not 0 <= after_ms < 1 << 32:
        raise ValueError(f"after_ms {after_ms} does not fit in an unsigned 32-bit integer")
    return _varint(STALLS.index(on_stall)) + _varint(after_ms)


def encode_create_stream(name: str, dtype: str, shape, order: str, slots: int,
                         max_subscribers: int, memory: bool, mode: int, exist_ok: bool,
                         on_stall: str = "block", after_ms: int = 0,
                         history: int = 0, header: str = "", variable: bool = False,
                         max_publishers: int = 1) -> bytes:
    """Request::CreateStream: `shape`, `dtype` and `order` are one frame's. Note the wire order:
    slots and max_subscribers come before the backing; the stall policy, the history, the
    per-frame header's dtype, whether frames vary and the publisher limit come last."""
    if order not in ORDERS:
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")
    for what, v in (("slots", slots), ("max_subscribers", max_subscribers), ("mode", mode),
                    ("history", history), ("max_publishers", max_publishers)):
        if not 0 <= v < 1 << 32:
            raise ValueError(f"{what} {v} does not fit in an unsigned 32-bit integer")
    body = _string(name) + _string(dtype) + _shape(shape) + _varint(ORDERS.index(order))
    body += _varint(slots) + _varint(max_subscribers) + _varint(1 if memory else 0)
    body += _varint(mode) + _bool(exist_ok) + _stall(on_stall, after_ms) + _varint(history)
    body += _string(header) + _bool(variable) + _varint(max_publishers)
    return _varint(6) + body


def encode_wait_for(name: str, timeout_ms: int) -> bytes:
    """Request::WaitFor: the reply comes when `name` exists (Stat's), or Error{Timeout}."""
    return _varint(9) + _string(name) + _varint(timeout_ms)


def encode_watch(prefix: str) -> bytes:
    """Request::Watch: the connection then carries Event replies until it is closed."""
    return _varint(10) + _string(prefix)


EVENTS = ("Ready", "Created", "Deleted", "Subscribers", "Lost")


def encode_open_stream(name: str, role: str) -> bytes:
    """Request::OpenStream with role "publish" or "subscribe" (the reply carries two
    descriptors: the data file, then the control file)."""
    if role not in ROLES:
        raise ValueError(f"role must be 'publish' or 'subscribe', not {role!r}")
    return _varint(7) + _string(name) + _varint(ROLES.index(role))


def encode_list_all(prefix: str, after: Optional[str]) -> bytes:
    tail = b"\x00" if after is None else b"\x01" + _string(after)
    return _varint(8) + _string(prefix) + tail


class _Reader:
    def __init__(self, buf: bytes):
        self.buf = memoryview(buf)
        self.pos = 0

    def _fail(self, what: str):
        raise errors.ProtocolError(f"malformed reply from the daemon: {what} at byte {self.pos}")

    def varint(self, bits: int = 64) -> int:
        max_bytes = (bits + 6) // 7  # as postcard: 5 bytes for u32, 10 for u64
        value, shift = 0, 0
        for _ in range(max_bytes):
            if self.pos >= len(self.buf):
                self._fail("truncated varint")
            byte = self.buf[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value >= 1 << bits:
                    self._fail("varint out of range")
                if byte == 0 and shift:
                    self._fail(f"non-minimal varint for {value}")
                return value
            shift += 7
        self._fail("varint too long")

    def string(self) -> str:
        n = self.varint()
        if self.pos + n > len(self.buf):
            self._fail("truncated string")
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self._fail("string is not UTF-8")

    def boolean(self) -> bool:
        if self.pos >= len(self.buf):
            self._fail("truncated bool")
        v = self.buf[self.pos]
        self.pos += 1
        if v > 1:
            self._fail("bad bool")
        return bool(v)

    def option_tag(self, what: str) -> bool:
        if self.pos >= len(self.buf):
            self._fail(f"truncated Option tag of {what}")
        v = self.buf[self.pos]
        self.pos += 1
        if v > 1:
            self._fail(f"bad Option tag {v} for {what}")
        return bool(v)

    def count(self, what: str) -> int:
        """A Vec length; every element takes at least one byte, so it cannot exceed the rest."""
        n = self.varint()
        if n > len(self.buf) - self.pos:
            self._fail(f"{what} claims {n} entries")
        return n

    def index(self, choices, what="enum"):
        v = self.varint(32)
        if v >= len(choices):
            self._fail(f"unknown {what} value {v}")
        return choices[v]

    def shape(self) -> Tuple[int, ...]:
        ndim = self.varint()
        if ndim > 32:
            self._fail(f"{ndim} dimensions")
        return tuple(self.varint() for _ in range(ndim))

    def info(self) -> ArrayInfo:
        name = self.string()
        dtype = self.string()
        shape = self.shape()
        return ArrayInfo(
            name=name, dtype=dtype, shape=shape, order=self.index(ORDERS, "Order"),
            data_offset=self.varint(), data_len=self.varint(), version=self.varint(),
            backing=self.index(BACKINGS, "Backing"), owner_uid=self.varint(32), owner_gid=self.varint(32),
            mode=self.varint(32), torn=self.boolean(), path=self.string(),
            stripe_bytes=self.varint(), sparse=self.boolean())

    def subscriber(self) -> SubscriberStat:
        return SubscriberStat(pid=self.varint(32), lossless=self.boolean(),
                              max_held=self.varint(32), lag=self.varint(), missed=self.varint(),
                              received=self.varint())

    def stream_info(self) -> StreamInfo:
        name = self.string()
        dtype = self.string()
        shape = self.shape()
        order = self.index(ORDERS, "Order")
        slots, max_subscribers = self.varint(32), self.varint(32)
        data_offset, frame_len, slot_stride = self.varint(), self.varint(), self.varint()
        published = self.varint()
        backing = self.index(BACKINGS, "Backing")
        owner_uid, owner_gid, mode = self.varint(32), self.varint(32), self.varint(32)
        path = self.string()
        publisher = self.varint(32) if self.option_tag("publisher") else None
        subscribers = tuple(self.subscriber() for _ in range(self.count("subscribers")))
        on_stall = self.index(STALLS, "WireStall")
        after_ms = self.varint(32) if on_stall != "block" else 0
        history = self.varint(32)
        header = self.string()
        variable = self.boolean()
        max_publishers = self.varint(32)
        publishers = tuple(self.varint(32) for _ in range(self.count("publishers")))
        return StreamInfo(
            name=name, dtype=dtype, shape=shape, order=order, slots=slots,
            max_subscribers=max_subscribers, data_offset=data_offset, frame_len=frame_len,
            slot_stride=slot_stride, published=published, backing=backing, owner_uid=owner_uid,
            owner_gid=owner_gid, mode=mode, path=path, publisher=publisher,
            subscribers=subscribers, on_stall=on_stall, stall_after=after_ms / 1000,
            history=history, header=header, variable=variable,
            max_publishers=max_publishers, publishers=publishers)

    def object_info(self):
        """ObjectInfo: an ArrayInfo (variant 0) or a StreamInfo (variant 1)."""
        kind = self.index(("Array", "Stream"), "ObjectInfo")
        return self.info() if kind == "Array" else self.stream_info()

    def end(self):
        if self.pos != len(self.buf):
            self._fail(f"{len(self.buf) - self.pos} trailing bytes")


def decode_response(buf: bytes):
    """Decodes a reply into ("hello", (version, server)), ("array", ArrayInfo),
    ("list", ([ArrayInfo], more)), ("deleted", None), ("stream", StreamInfo) or
    ("objects", ([ArrayInfo or StreamInfo], more)) or ("event", (kind, {fields})); an Error
    reply is raised as the matching exception."""
    r = _Reader(buf)
    tag = r.varint(32)
    if tag == 0:
        out = ("hello", (r.varint(32), r.string()))
    elif tag == 1:
        out = ("array", r.info())
    elif tag == 2:
        n = r.varint()
        if n > MAX_MESSAGE:
            r._fail(f"{n} list entries")
        infos: List[ArrayInfo] = [r.info() for _ in range(n)]
        out = ("list", (infos, r.boolean()))
    elif tag == 3:
        out = ("deleted", None)
    elif tag == 5:
        out = ("stream", r.stream_info())
    elif tag == 6:
        objects = [r.object_info() for _ in range(r.count("objects"))]
        out = ("objects", (objects, r.boolean()))
    elif tag == 7:
        event = r.index(EVENTS, "WatchEvent")
        if event == "Ready":
            fields = {}
        elif event == "Created":
            fields = {"name": r.string(), "stream": r.boolean()}
        elif event == "Deleted":
            fields = {"name": r.string()}
        elif event == "Subscribers":
            fields = {"name": r.string(), "count": r.varint(32)}
        else:
            fields = {"events": r.varint()}
        out = ("event", (event, fields))
    elif tag == 4:
        kind = r.varint(32)
        message = r.string()
        r.end()
        if kind >= len(errors.BY_INDEX):
            raise errors.ProtocolError(f"unknown error kind {kind}: {message}")
        raise errors.BY_INDEX[kind](message)
    else:
        r._fail(f"unknown Response variant {tag}")
    r.end()
    return out
