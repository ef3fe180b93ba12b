"""Regions of striped arrays from Python: `a.read(np.s_[...])` validates, and
`with a.write(np.s_[...]) as v:` takes, only the stripes the region lies in; and
docs/FORMAT.md's "Striped arrays" is enough to read a region consistently with nothing but
NumPy, under Rust writers running flat out."""

import struct
import subprocess
import threading
import time
import zlib

import numpy as np
import pytest

import mmshare

ROWS, COLS, STRIPES = 4096, 64, 8  # u64: 2 MiB, stripes of 512 rows (256 KiB)
STRIPE_ROWS = ROWS // STRIPES
K = 0x9E3779B97F4A7C15  # the workers' pattern: element i of version v is v * K + i (mod 2^64)
K_INVERSE = pow(K, -1, 1 << 64)
# The Rust writers' rows, each across a stripe boundary and sharing a stripe with the next;
# and the blocks each written by one writer at a time (the rest stays zero). (No whole-array
# writer here: flat out, it leaves a Python reader of many stripes little room; the Rust
# tests run one.)
WRITERS = ["256..768", "768..1280", "1280..1792"]
BLOCKS = [0, 256, 768, 1280, 1792, 4096]


def make(daemon, name="tiles", stripes=STRIPES):
    c = mmshare.connect(daemon.socket)
    return c, c.create(name, "<u8", (ROWS, COLS), stripes=stripes)


def test_the_daemon_reports_the_stripes_made(daemon):
    c, a = make(daemon)
    assert a.info.stripe_bytes == STRIPE_ROWS * COLS * 8
    assert c.describe("tiles").stripe_bytes == a.info.stripe_bytes
    one = c.create("one", "<u8", (ROWS, COLS), stripes=1)
    assert one.info.stripe_bytes == 0
    small = c.create("small", "<f4", (100,))
    assert small.info.stripe_bytes == 0, "one sequence below 1 MiB by default"
    default = c.create("big", "<u8", (ROWS, COLS))
    assert default.info.stripe_bytes == 64 * 1024, "from 1 MiB: stripes of 64 KiB"
    with pytest.raises(ValueError, match="stripes must be an int from 0 to 32, not 33"):
        c.create("bad", "<u8", (ROWS,), stripes=33)


def test_a_held_region_holds_up_only_its_own_stripes(daemon):
    c, a = make(daemon)
    b = c.open("tiles", "r+")
    with a.write(np.s_[0:STRIPE_ROWS]) as v:
        assert v.shape == (STRIPE_ROWS, COLS)
        v[:] = 1
        # Another region: read and written at once, from another handle.
        np.testing.assert_array_equal(b.read(np.s_[STRIPE_ROWS:2 * STRIPE_ROWS, :4]), 0)
        with b.write(np.s_[3 * STRIPE_ROWS:4 * STRIPE_ROWS, 5]) as w:
            assert w.shape == (STRIPE_ROWS,)
            w[:] = 9
        assert b.read(np.s_[3 * STRIPE_ROWS, 5]) == 9
        # The held stripe, or a region across it, waits for the write.
        for index in (np.s_[10], np.s_[STRIPE_ROWS - 1:STRIPE_ROWS + 1], None, [0, 4000]):
            with pytest.raises(mmshare.Timeout):
                b.read(index, timeout=0.05)
        got = []
        t = threading.Thread(target=lambda: got.append(b.read(np.s_[::1000, 0], timeout=10)))
        t.start()
        time.sleep(0.1)
        assert not got, "a read across the held stripe returned during the write"
    t.join(10)
    np.testing.assert_array_equal(got[0], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(a.read()[:STRIPE_ROWS], 1)
    assert a.read()[3 * STRIPE_ROWS + 7, 5] == 9 and a.read()[3 * STRIPE_ROWS + 7, 4] == 0


def test_region_writes_land_where_numpy_indexes_and_repair_by_stripe(daemon):
    c, a = make(daemon)
    model = np.zeros((ROWS, COLS), dtype=np.uint64)
    for region, value in [(np.s_[100:900], 3), (np.s_[5, :], 4), (np.s_[..., 7], 5),
                          (np.s_[4000:, 60:], 6), (np.s_[-1, -1], 7), (np.s_[::-512, 1], 8)]:
        with a.write(region) as v:
            v[...] = value
        model[region] = value
        np.testing.assert_array_equal(a.read(), model)
        np.testing.assert_array_equal(a.read(region), model[region])
    for bad in ([1, 2], np.array([True] * ROWS), (np.s_[0:2], [0])):
        with pytest.raises(ValueError, match="a write region is a basic index"):
            with a.write(bad):
                pass
    with pytest.raises(IndexError):
        with a.write(np.s_[ROWS]):
            pass
    # A region write that raises tears only its own stripes...
    with pytest.raises(RuntimeError):
        with a.write(np.s_[STRIPE_ROWS + 10:2 * STRIPE_ROWS + 10]) as v:
            v[0] = 1
            raise RuntimeError("half done")
    assert a.torn
    a.read(np.s_[0:STRIPE_ROWS])
    a.read(np.s_[3 * STRIPE_ROWS:])
    for torn in (np.s_[STRIPE_ROWS], np.s_[2 * STRIPE_ROWS], None):
        with pytest.raises(mmshare.Torn):
            a.read(torn)
    # ... and a repairing write clears the stripes it replaces whole, no others.
    with a.write(np.s_[STRIPE_ROWS:2 * STRIPE_ROWS + 1], repair=True) as v:
        v[...] = 2
    a.read(np.s_[STRIPE_ROWS])
    with pytest.raises(mmshare.Torn):
        a.read(np.s_[2 * STRIPE_ROWS])
    with a.write(np.s_[2 * STRIPE_ROWS:3 * STRIPE_ROWS, :32], repair=True) as v:
        v[...] = 2
    with pytest.raises(mmshare.Torn):
        a.read(np.s_[2 * STRIPE_ROWS]), "a region with gaps replaces no stripe whole"
    with a.write(np.s_[2 * STRIPE_ROWS:3 * STRIPE_ROWS], repair=True) as v:
        v[...] = 2
    assert not a.torn


def test_a_wait_for_a_region_ends_on_a_write_of_that_region_only(daemon, worker):
    _, a = make(daemon)
    mine = np.s_[0:STRIPE_ROWS]
    stamp = a.stamp(mine)
    # A Rust writer of another region, flat out for half a second: the wait does not end.
    busy = subprocess.Popen([worker, "region-writer", a.path, "0.5", "1280..1792"],
                            stdout=subprocess.PIPE, text=True)
    with pytest.raises(mmshare.Timeout):
        a.wait(stamp, timeout=0.3, region=mine)
    assert busy.wait(30) == 0
    assert a.version > 10, "the other region was written meanwhile"
    assert a.stamp(mine) == stamp
    # A write of the region ends it, from another process.
    got = []
    t = threading.Thread(target=lambda: got.append(a.wait(stamp, timeout=30, region=mine)))
    t.start()
    time.sleep(0.1)
    assert not got
    subprocess.run([worker, "region-writer", a.path, "0.001", "100..101"], check=True,
                   capture_output=True)
    t.join(30)
    assert got and got[0] > stamp
    # The default: from now; a region across stripes counts both.
    with pytest.raises(mmshare.Timeout):
        a.wait(timeout=0.05, region=np.s_[STRIPE_ROWS - 1:STRIPE_ROWS + 1])
    with pytest.raises(ValueError, match="a region is a basic index"):
        a.stamp([1, 2])


def test_a_sparse_array_is_allocated_as_it_is_written(daemon):
    import os
    c = mmshare.connect(daemon.socket)
    a = c.create("sparse", "<u8", (1 << 16, 1 << 14), stripes=32, sparse=True)  # 8 GiB
    assert a.info.sparse and c.describe("sparse").sparse
    assert os.stat(a.path).st_size > 8 << 30
    assert os.stat(a.path).st_blocks * 512 < 1 << 20
    with a.write(np.s_[1000:1002]) as v:
        v[...] = 7
    np.testing.assert_array_equal(a.read(np.s_[999:1003, :2]), [[0, 0], [7, 7], [7, 7], [0, 0]])
    assert os.stat(a.path).st_blocks * 512 < 2 << 20, "only what was written is allocated"
    with pytest.raises(mmshare.InvalidShape, match="cannot be sparse in memory"):
        c.create("mem", "<u8", (1024,), memory=True, sparse=True)


def one_write(block, first):
    """Whether `block` (u64, flat, starting at element `first`) is all zeros or every element
    of one version of the pattern; that version (0 for zeros)."""
    if not block.any():
        return True, 0
    version = ((int(block[0]) - first) * K_INVERSE) % (1 << 64)
    want = np.uint64(version * K % (1 << 64)) + np.arange(first, first + block.size,
                                                           dtype=np.uint64)
    return bool(np.array_equal(block, want)), version


def check_copy(copy, r0, r1):
    """Each block of a copy of rows r0..r1 came from one write; returns an error or None."""
    for b0, b1 in zip(BLOCKS, BLOCKS[1:]):
        lo, hi = max(b0, r0), min(b1, r1)
        if lo >= hi:
            continue
        ok, _ = one_write(copy[lo - r0:hi - r0].ravel(), lo * COLS)
        if not ok:
            return f"rows {lo}..{hi} of a copy of rows {r0}..{r1} mix writes"
    return None


def writers(worker, path, secs):
    return [subprocess.Popen([worker, "region-writer", path, str(secs), rows],
                             stdout=subprocess.PIPE, text=True) for rows in WRITERS]


def ranges(rng, n):
    for _ in range(n):
        if rng.random() < 0.5:
            b = rng.integers(len(BLOCKS) - 1)
            yield BLOCKS[b], BLOCKS[b + 1]
        else:
            x, y = sorted(rng.integers(0, ROWS, 2))
            yield int(x), int(y) + 1


def test_region_reads_under_rust_writers_are_never_torn(daemon, worker):
    _, a = make(daemon)
    procs = writers(worker, a.path, 3.0)
    rng = np.random.default_rng(1)
    reads = 0
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        for r0, r1 in ranges(rng, 20):
            err = check_copy(a.read(np.s_[r0:r1]), r0, r1)
            assert err is None, err
            reads += 1
    for p in procs:
        assert p.wait(60) == 0
    assert reads >= 20, reads
    assert a.retries > 0, "no read overlapped a write: nothing was tested"


# -- a reader from docs/FORMAT.md alone ------------------------------------------------------

def read_striped_header(path):
    """docs/FORMAT.md's header reader, with the extension area's stripe record (0x8005)."""
    with open(path, "rb") as f:
        page = f.read(4096)
        assert page[:8] == b"MMSHARE\0"
        version, header_len = struct.unpack_from("<II", page, 0x08)
        assert version == 2 and header_len == 0x280
        assert struct.unpack_from("<I", page, header_len)[0] == zlib.crc32(page[:header_len])
        data_offset, data_len = struct.unpack_from("<QQ", page, 0x10)
        kind, order, ndim, _ = struct.unpack_from("<IIII", page, 0x20)
        dtype = np.dtype(page[0x30:0x40].rstrip(b"\0").decode("ascii"))
        shape = struct.unpack_from(f"<{ndim}Q", page, 0x80)
        ext_len, ext_offset, ext_crc = struct.unpack_from("<IQI", page, 0x6C)
        f.seek(ext_offset)
        area = f.read(ext_len)
        assert zlib.crc32(area) == ext_crc
    stripe_bytes, at = 0, 0
    while at < len(area):
        tag, n = struct.unpack_from("<HH", area, at)
        if tag == 0x8005:
            stripe_bytes, = struct.unpack_from("<Q", area, at + 4)
        elif tag & 0x8000:
            raise AssertionError(f"unknown critical record {tag:#x}")
        at += 4 + n
    count = -(-data_len // stripe_bytes)
    assert stripe_bytes % 64 == 0 and 2 <= count <= 32
    return dtype, shape, "F" if order == 1 else "C", data_offset, data_len, stripe_bytes


class FormatReader:
    """Consistent reads of row ranges, as the document's reader steps say: the generation
    first, each stripe's sequence (even), the copy and the stripes' flags, each stripe's
    sequence again, and for a copy of every stripe the generation again. On x86-64 every
    aligned 8-byte load is atomic and loads are not reordered with loads, which stands in for
    the acquire fences; `recheck=False` skips the re-checks (the mutation that must fail)."""

    def __init__(self, path, recheck=True):
        (dtype, shape, order, data_offset, self.data_len,
         self.stripe_bytes) = read_striped_header(path)
        self.words = np.memmap(path, dtype="<u8", mode="r", offset=0, shape=(512,))
        self.data = np.memmap(path, dtype=dtype, mode="r", offset=data_offset, shape=shape,
                              order=order)
        self.row_bytes = self.data_len // shape[0]
        self.count = -(-self.data_len // self.stripe_bytes)
        self.recheck = recheck
        self.retries = 0

    def seq(self, k):
        return int(self.words[(0x800 + 64 * k) // 8])

    def torn(self, k):
        return bool(int(self.words[(0x800 + 64 * k + 16) // 8]) >> 32 & 1)

    def read_rows(self, r0, r1, timeout=10.0):
        start, end = r0 * self.row_bytes, r1 * self.row_bytes
        stripes = range(start // self.stripe_bytes, (end - 1) // self.stripe_bytes + 1)
        whole = len(stripes) == self.count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            g = int(self.words[0x400 // 8])
            seen = [self.seq(k) for k in stripes]
            if any(s & 1 for s in seen):
                time.sleep(0)
                continue
            copy = np.array(self.data[r0:r1])
            torn = any(self.torn(k) for k in stripes)
            if not self.recheck or (
                    all(self.seq(k) == s for k, s in zip(stripes, seen))
                    and (not whole or int(self.words[0x400 // 8]) == g)):
                return copy, g // 2, torn
            self.retries += 1
        raise TimeoutError(f"no consistent copy of rows {r0}..{r1}")


def run_format_reader(path, worker, recheck, secs):
    reader = FormatReader(path, recheck)
    procs = writers(worker, path, secs)
    rng = np.random.default_rng(2)
    reads, error = 0, None
    deadline = time.monotonic() + secs - 0.5
    while time.monotonic() < deadline and error is None:
        for r0, r1 in ranges(rng, 10):
            copy, version, torn = reader.read_rows(r0, r1)
            assert not torn
            error = check_copy(copy, r0, r1)
            if error is None and (r0, r1) == (0, ROWS):
                # A copy of every stripe is exactly its version: no newer write in it.
                newest = max(one_write(copy[b0:b1].ravel(), b0 * COLS)[1]
                             for b0, b1 in zip(BLOCKS, BLOCKS[1:]))
                if newest > version:
                    error = f"a whole copy of version {version} holds version {newest}"
            reads += 1
            if error:
                break
    for p in procs:
        p.kill() if error else None
        p.wait(60)
    return reads, reader.retries, error


def test_a_reader_written_from_the_format_document_reads_regions_consistently(daemon, worker):
    _, a = make(daemon)
    # 8 s of writes: on a busy 2-CPU machine a 3 s run once made only 10 whole reads (1,447
    # retries), the writers taking most of each read's turns.
    reads, retries, error = run_format_reader(a.path, worker, True, 8.0)
    assert error is None, error
    # Some reads, and some that overlapped writes (how many depends on the machine's load).
    assert reads >= 20 and retries > 0, (reads, retries)


def test_the_format_reader_without_its_rechecks_is_caught(daemon, worker):
    _, a = make(daemon)
    _, _, error = run_format_reader(a.path, worker, False, 6.0)
    assert error is not None, "a reader that skips the re-checks was never caught"
