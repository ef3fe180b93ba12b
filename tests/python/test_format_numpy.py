"""docs/FORMAT.md is enough to read an mmshare array: parse the header with `struct` and `zlib`
exactly as the document says, then `np.memmap` the data, and compare with what the Rust code
wrote (element i = i % 251, per dtype)."""

import pathlib
import re
import struct
import warnings
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


# --- dtype strings: the table in docs/FORMAT.md against np.dtype() itself -------------------

SUPPORTED = set(DTYPES)
# NumPy 1.x accepted these aliases; NumPy 2 removed them and mmshare refuses them.
NUMPY1_ONLY = {"bool8", "int0", "uint0", "float_", "complex_", "cfloat", "singlecomplex"}
# New in NumPy 2; NumPy 1.x refuses them.
NUMPY2_ONLY = {p + c for p in ("", "<", "=", "|") for c in "nN"}


def dtype_table():
    """(spelling, descr) for every accepted spelling in FORMAT.md's "dtype strings" table."""
    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text()
    section = doc.split("\n## dtype strings\n")[1].split("\n## ")[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.replace("\\|", "\x01").split("|")]
        ticks = lambda cell: [t.replace("\x01", "|") for t in re.findall(r"`([^`]*)`", cell)]
        descr = ticks(cells[1])[0]
        rows += [(spelling, descr) for spelling in ticks(cells[3])]
    return rows


def numpy_descr(s):
    """What np.dtype(s) gives, as a descr, or None if NumPy refuses it or it is not a plain
    scalar type (structured, subarray)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dt = np.dtype(s)
        except Exception:
            return None
    if dt.fields is not None or dt.subdtype is not None:
        return None
    return dt.str


def test_the_dtype_table_is_what_numpy_accepts():
    table = dict(dtype_table())
    assert len(table) == 179 and set(table.values()) == SUPPORTED
    numpy2 = int(np.__version__.split(".")[0]) >= 2
    for spelling, descr in table.items():
        if not numpy2 and spelling in NUMPY2_ONLY:
            assert numpy_descr(spelling) is None, spelling
            continue
        assert numpy_descr(spelling) == descr, spelling
    # NumPy accepts no other spelling of the supported types among these candidates.
    bodies = {s.lstrip("<>=|") for s in table}
    bodies |= {k for k in np.sctypeDict if isinstance(k, str)}
    bodies |= set(np.typecodes["All"]) | NUMPY1_ONLY
    bodies |= {f"{k}{n}" for k in "?bBhHiIlLqQnNpPeEfFdDgGcCbiufcSUVOMma" for n in range(33)}
    tried = 0
    for body in bodies:
        for variant in {body, body.upper(), body.lower()}:
            for prefix in ("", "<", ">", "=", "|", "!", " "):
                for suffix in ("", " ", "\n"):
                    s = prefix + variant + suffix
                    tried += 1
                    descr = numpy_descr(s)
                    if descr in SUPPORTED and s not in table:
                        assert not numpy2 and s in NUMPY1_ONLY, (s, descr)
    assert tried > 10_000


def policy_verdict(page, area, known_incompat=0, known_ro_compat=0, known_tags=()):
    """docs/FORMAT.md, "Versions, features and extensions", applied with the standard library:
    what a reader makes of a header page and the extension area its header points at."""
    assert page[:8] == b"MMSHARE\0"
    version, header_len = struct.unpack_from("<II", page, 0x08)
    if version not in (1, 2):
        return "UnsupportedVersion"
    assert header_len == 0x280
    assert struct.unpack_from("<I", page, 0x280)[0] == zlib.crc32(page[:0x280])
    if version == 1:
        assert not any(page[0x060:0x07C]), "version 1 has no feature words"
        return "ok"
    incompat, ro_compat, _compat, ext_len = struct.unpack_from("<IIII", page, 0x060)
    ext_offset, = struct.unpack_from("<Q", page, 0x070)
    ext_crc, = struct.unpack_from("<I", page, 0x078)
    if incompat & ~known_incompat:
        return "UnknownFeatures"
    data_offset, data_len = struct.unpack_from("<QQ", page, 0x10)
    assert ext_offset == (data_offset + (data_len + 7) // 8 * 8 if ext_len else 0)
    assert len(area) == ext_len and zlib.crc32(area) == ext_crc
    at = 0
    while at < len(area):
        tag, n = struct.unpack_from("<HH", area, at)
        assert tag != 0 and at + 4 + n <= len(area)
        if tag & 0x8000 and tag not in known_tags:
            return "UnknownExtension"
        at += 4 + n
    return "read-only" if ro_compat & ~known_ro_compat else "ok"


def test_the_format_policy_vectors_read_as_the_document_says():
    """Every vector of docs/format_vectors.json (made by the Rust code) gets, from a reader
    written from docs/FORMAT.md alone, the verdict the vector states."""
    import json
    vectors = json.loads((pathlib.Path(__file__).parents[2] / "docs" / "format_vectors.json")
                         .read_text())
    assert {v["expect"] for v in vectors} >= {"ok", "read-only", "UnknownFeatures",
                                             "UnknownExtension"}
    for v in vectors:
        prefix = bytes.fromhex(v["page_prefix_hex"])
        page = prefix + bytes(4096 - len(prefix))
        area = bytes.fromhex(v["extension_hex"])
        assert policy_verdict(page, area) == v["expect"], v["name"]
