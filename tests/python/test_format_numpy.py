"""docs/FORMAT.md is enough to read an mmshare array: parse the header with `struct` and `zlib`
exactly as the document says, then `np.memmap` the data, and compare with what the Rust code
wrote (element i = i % 251, per dtype)."""

import pathlib
import struct
import subprocess
import zlib

import numpy as np
import pytest

DTYPES = ["|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8",
          "<f2", "<f4", "<f8", "<c8", "<c16"]


def read_header(path):
    """The header reader from docs/FORMAT.md, plus the checks the document asks readers to do."""
    with open(path, "rb") as f:
        page = f.read(4096)
    assert page[:8] == b"MMSHARE\0"
    version, header_len = struct.unpack_from("<II", page, 0x08)
    assert version == 1 and header_len == 0x280
    assert struct.unpack_from("<I", page, header_len)[0] == zlib.crc32(page[:header_len])
    data_offset, data_len = struct.unpack_from("<QQ", page, 0x10)
    kind, order, ndim, name_len = struct.unpack_from("<IIII", page, 0x20)
    assert kind == 1 and data_offset == 4096
    dtype = page[0x30:0x40].rstrip(b"\0").decode("ascii")
    shape = struct.unpack_from(f"<{ndim}Q", page, 0x80)
    name = page[0x180:0x180 + name_len].decode("ascii")
    sequence, = struct.unpack_from("<Q", page, 0x400)
    flags, = struct.unpack_from("<I", page, 0x4C0)
    size = pathlib.Path(path).stat().st_size
    assert size >= data_offset + (data_len + 7) // 8 * 8
    return {
        "dtype": dtype, "shape": shape, "order": "F" if order == 1 else "C",
        "data_offset": data_offset, "data_len": data_len, "name": name,
        "version": sequence // 2, "torn": bool(flags & 1),
    }


def expected(dtype, shape, order):
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    v = np.arange(n) % 251
    dt = np.dtype(dtype)
    if dt.kind == "b":
        flat = (np.arange(n) % 2).astype(dt)
    elif dt.kind == "c":
        flat = (v - 1j * v).astype(dt)
    else:
        flat = v.astype(dt)
    # Element i is the i-th element in storage order.
    return flat.reshape(shape, order=order)


def make(worker, tmp_path, name, dtype, shape, order="C"):
    out = subprocess.run(
        [worker, "sample", str(tmp_path), name, dtype, ",".join(map(str, shape)), order],
        check=True, capture_output=True, text=True,
    ).stdout
    assert "version=1" in out
    return tmp_path / name


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_memmap_reads_what_rust_wrote(worker, tmp_path, dtype):
    path = make(worker, tmp_path, "a", dtype, (3, 5, 7))
    h = read_header(path)
    assert h["dtype"] == dtype and h["shape"] == (3, 5, 7) and h["name"] == "a"
    assert h["version"] == 1 and not h["torn"]
    assert h["data_len"] == 3 * 5 * 7 * np.dtype(dtype).itemsize
    a = np.memmap(path, dtype=h["dtype"], mode="r", offset=h["data_offset"],
                  shape=h["shape"], order=h["order"])
    np.testing.assert_array_equal(a, expected(dtype, (3, 5, 7), "C"))


def test_fortran_order_arrays_read_back_in_fortran_order(worker, tmp_path):
    path = make(worker, tmp_path, "f", "<i4", (4, 6), order="F")
    h = read_header(path)
    assert h["order"] == "F"
    a = np.memmap(path, dtype=h["dtype"], mode="r", offset=h["data_offset"],
                  shape=h["shape"], order=h["order"])
    assert a.flags.f_contiguous
    np.testing.assert_array_equal(a, expected("<i4", (4, 6), "F"))
    assert a[1, 0] == 1 and a[0, 1] == 4  # the first index varies fastest


def test_zero_dimensional_array(worker, tmp_path):
    path = make(worker, tmp_path, "scalar", "<f8", ())
    h = read_header(path)
    assert h["shape"] == () and h["data_len"] == 8
    a = np.memmap(path, dtype=h["dtype"], mode="r", offset=h["data_offset"], shape=h["shape"])
    assert a.shape == () and float(a) == 0.0


def test_crc_catches_a_flipped_header_byte(worker, tmp_path):
    path = make(worker, tmp_path, "c", "<u2", (4,))
    raw = bytearray(path.read_bytes())
    raw[0x80] ^= 1  # shape[0]: 4 -> 5
    path.write_bytes(bytes(raw))
    with pytest.raises(AssertionError):
        read_header(path)
