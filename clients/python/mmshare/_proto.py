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

    @property
    def nbytes(self) -> int:
        return self.data_len


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
                  exist_ok: bool) -> bytes:
    if order not in ORDERS:
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise errors.InvalidShape(f"shape {shape} has a negative dimension")
    body = _string(name) + _string(dtype) + _varint(len(shape))
    body += b"".join(_varint(d) for d in shape)
    body += _varint(ORDERS.index(order)) + _varint(1 if memory else 0)
    body += _varint(mode) + _bool(exist_ok)
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

    def index(self, choices, what="enum"):
        v = self.varint(32)
        if v >= len(choices):
            self._fail(f"unknown {what} value {v}")
        return choices[v]

    def info(self) -> ArrayInfo:
        name = self.string()
        dtype = self.string()
        ndim = self.varint()
        if ndim > 32:
            self._fail(f"{ndim} dimensions")
        shape = tuple(self.varint() for _ in range(ndim))
        return ArrayInfo(
            name=name, dtype=dtype, shape=shape, order=self.index(ORDERS, "Order"),
            data_offset=self.varint(), data_len=self.varint(), version=self.varint(),
            backing=self.index(BACKINGS, "Backing"), owner_uid=self.varint(32), owner_gid=self.varint(32),
            mode=self.varint(32), torn=self.boolean(), path=self.string())

    def end(self):
        if self.pos != len(self.buf):
            self._fail(f"{len(self.buf) - self.pos} trailing bytes")


def decode_response(buf: bytes):
    """Decodes a reply into ("hello", (version, server)), ("array", ArrayInfo),
    ("list", ([ArrayInfo], more)) or ("deleted", None); an Error reply is raised as the
    matching exception."""
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
