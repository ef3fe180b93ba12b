"""The array file header (docs/FORMAT.md): offsets and validation."""

import struct
import zlib

from . import errors

HEADER_SIZE = 4096
MAGIC = b"MMSHARE\0"
IMMUTABLE_END = 0x280
SEQUENCE = 0x400
FUTEX = 0x440
WRITER = 0x480
FLAGS = 0x4C0
WRITE_COUNT = 0x500
LAST_WRITE_NS = 0x508
FLAG_TORN = 1


def parse_header(page: bytes) -> dict:
    """Validates a header page the way docs/FORMAT.md asks and returns its fields."""
    if len(page) < HEADER_SIZE:
        raise errors.FormatError(f"file is {len(page)} bytes, shorter than the 4096-byte header")
    if page[:8] != MAGIC:
        raise errors.FormatError(f"bad magic {page[:8]!r}: not an mmshare array file")
    version, header_len = struct.unpack_from("<II", page, 0x08)
    if version != 1:
        raise errors.FormatError(f"unsupported format version {version}")
    if header_len != IMMUTABLE_END:
        raise errors.FormatError(f"header length {header_len} is invalid")
    stored = struct.unpack_from("<I", page, header_len)[0]
    computed = zlib.crc32(page[:header_len])
    if stored != computed:
        raise errors.FormatError(f"header checksum mismatch: stored {stored:#x}, computed {computed:#x}")
    data_offset, data_len = struct.unpack_from("<QQ", page, 0x10)
    kind, order, ndim, name_len = struct.unpack_from("<IIII", page, 0x20)
    if data_offset != HEADER_SIZE or kind != 1 or order > 1 or ndim > 32 or not 0 < name_len < 256:
        raise errors.FormatError("invalid header fields")
    dtype = page[0x30:0x40].rstrip(b"\0").decode("ascii")
    shape = struct.unpack_from(f"<{ndim}Q", page, 0x80)
    name = page[0x180:0x180 + name_len].decode("ascii")
    return {
        "name": name, "dtype": dtype, "shape": tuple(shape), "order": "F" if order else "C",
        "data_offset": data_offset, "data_len": data_len,
    }
