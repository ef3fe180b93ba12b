"""Issue 7, section 3: what read(), .array, write() and wait() promise about consistency.

* read(index=...) applies the index inside the seqlock loop, so the copy that is validated is
  the copy that is returned, for every kind of index (basic, fancy, boolean, scalar).
* .array is read-only on every handle; a writable view exists only inside write() and is made
  read-only when the block ends.

The protocol itself runs in Rust (`mmshare._native` over mmshare-lib's raw.rs), where the order
of its loads and fences is checked (loom models, cross-process tests); these tests check what a
Python caller sees. No result depends on timing: where a reader must overlap a write, the write
is held open in this process until the reader has had time to start, and the assertions hold
whenever it started.
"""

import numpy as np
import pytest

import threading
import time

import mmshare

# Every published version of the array below is all 0 (version 0) or all 1+1j (version 1). The
# writer stores the real parts first and the imaginary parts later, so a copy taken in between
# holds 1+0j, a value no version ever had.
TORN = 1 + 0j
DONE = 1 + 1j

INDEXES = {
    "none": None,
    "basic-slice": (slice(1, 3),),
    "basic-strided": slice(None, None, 3),
    "fancy": [0, 3],
    "fancy-array": np.array([3, 1, 3]),
    "boolean": np.array([True, False, False, True]),
    "scalar": 2,
    "scalar-tuple": (2,),
    "ellipsis": Ellipsis,
}


def _apply(a, index):
    """What read(index=index) means: `a[index]`, or all of `a` for None."""
    return a if index is None else a[index]


@pytest.mark.parametrize("index", INDEXES.values(), ids=INDEXES.keys())
def test_an_indexed_read_overlapping_a_write_returns_the_validated_copy(daemon, index):
    c = mmshare.connect(daemon.socket)
    w = c.create("ix", "<c16", (4,))
    r = c.open("ix")
    expected = _apply(np.full(4, DONE), index)

    block = w.write(timeout=10)
    view = block.__enter__()     # the write side is held: the sequence is odd
    view.real[:] = 1             # half of the write is in the pages
    got = []
    reader = threading.Thread(target=lambda: got.append(r.read(index=index, timeout=30)))
    reader.start()
    time.sleep(0.1)              # let the reader start and meet the write in progress
    assert not got, f"a read returned while a write was in progress: {got}"
    view.imag[:] = 1
    block.__exit__(None, None, None)
    reader.join(60)
    assert got, "the reader did not return after the write was published"
    assert r.version == 1
    assert not np.any(np.asarray(got[0]) == TORN), f"a torn copy was accepted: {got[0]!r}"
    np.testing.assert_array_equal(got[0], expected)
    assert isinstance(got[0], np.ndarray) and got[0].shape == np.shape(expected)


@pytest.mark.parametrize("index", [None, slice(100, 3000, 7), [4095, 0, 17]],
                         ids=["none", "slice", "fancy"])
def test_reads_under_a_rust_writer_running_flat_out_are_never_torn(daemon, worker, index):
    """A Rust writer process rewrites the array continuously (element i of version v is
    v * K + i, as in tests/src/main.rs); every copy Python accepts, whole or indexed, belongs to
    one version: element minus index is the same for all of it (or all of it is 0, as
    created)."""
    import subprocess
    c = mmshare.connect(daemon.socket)
    a = c.create("flat", "<u8", (4096,))
    positions = np.arange(4096, dtype=np.uint64)
    if index is not None:
        positions = positions[index]
    writer = subprocess.Popen([worker, "writer", a.path, "1.0"], stdout=subprocess.DEVNULL)
    try:
        seen = 0
        while writer.poll() is None or seen == 0:
            got = np.asarray(a.read(index=index, timeout=30), dtype=np.uint64)
            if not got.any():
                continue  # version 0: the array as created, before the writer's first write
            base = got - positions
            assert (base == base[0]).all(), f"a torn copy: {np.unique(base)[:4]}"
            seen += 1
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert seen > 0


@pytest.mark.parametrize("index", INDEXES.values(), ids=INDEXES.keys())
def test_an_indexed_read_returns_an_independent_copy(daemon, index):
    c = mmshare.connect(daemon.socket)
    w = c.create("cp", "<i8", (4,))
    with w.write() as v:
        v[:] = [10, 11, 12, 13]
    r = c.open("cp")
    got = r.read(index=index)
    assert isinstance(got, np.ndarray) and got.flags.writeable
    assert not np.may_share_memory(got, r.array)
    np.testing.assert_array_equal(got, _apply(np.array([10, 11, 12, 13]), index))
    with w.write() as v:
        v[:] = 0
    np.testing.assert_array_equal(got, _apply(np.array([10, 11, 12, 13]), index))


def test_an_invalid_index_raises_without_a_result(daemon):
    c = mmshare.connect(daemon.socket)
    c.create("bad", "u1", (3,))
    r = c.open("bad")
    with pytest.raises(IndexError):
        r.read(index=[0, 7])


@pytest.mark.parametrize("mode", ["create", "r+", "r"])
def test_array_is_read_only_on_every_handle(daemon, mode):
    c = mmshare.connect(daemon.socket)
    a = c.create("ro", "<f8", (2, 3))
    if mode != "create":
        a = c.open("ro", mode)
    live = a.array
    assert not live.flags.writeable
    with pytest.raises(ValueError):
        live[0, 0] = 1
    with pytest.raises(ValueError):
        np.copyto(live, 2.0)
    with pytest.raises(ValueError):
        live.flags.writeable = True  # not even on purpose: the buffer under it is read-only
    assert a.version == 0 and not a.read().any()


def test_the_write_view_is_writable_only_inside_the_block(daemon):
    c = mmshare.connect(daemon.socket)
    a = c.create("wv", "<i4", (2, 2))
    with a.write() as v:
        assert v.flags.writeable
        v[:] = 5
    assert not v.flags.writeable
    with pytest.raises(ValueError):
        v[0, 0] = 6
    with pytest.raises(ValueError):
        np.add(v, 1, out=v)
    assert a.version == 1
    np.testing.assert_array_equal(a.read(), [[5, 5], [5, 5]])
    with a.write() as second:  # every block gets its own view; the old one stays read-only
        assert second is not v and second.flags.writeable and not v.flags.writeable
        second[0, 0] = 7
    assert not second.flags.writeable
    np.testing.assert_array_equal(a.read(), [[7, 5], [5, 5]])


def test_the_write_view_is_read_only_after_a_raising_block(daemon):
    c = mmshare.connect(daemon.socket)
    a = c.create("wr", "u1", (3,))
    with pytest.raises(RuntimeError):
        with a.write() as v:
            v[0] = 1
            raise RuntimeError("boom")
    assert not v.flags.writeable
    with pytest.raises(ValueError):
        v[1] = 1
    assert a.torn and a.read(allow_torn=True).tolist() == [1, 0, 0]


def test_read_into_out_copies_in_place_and_checks_the_destination(daemon):
    c = mmshare.connect(daemon.socket)
    for order in ("C", "F"):
        a = c.create(f"out{order}", "<i4", (3, 4), order=order)
        with a.write() as v:
            v[:] = np.arange(12).reshape(3, 4)
        out = np.zeros((3, 4), dtype="<i4", order=order)
        assert a.read(out=out) is out
        np.testing.assert_array_equal(out, np.arange(12).reshape(3, 4))
        wrong_order = np.zeros((3, 4), dtype="<i4", order="F" if order == "C" else "C")
        for bad in (np.zeros((3, 4), "<i8"), np.zeros((4, 3), "<i4"), wrong_order,
                    np.zeros((3, 8), "<i4")[:, ::2], [0] * 12):
            with pytest.raises(ValueError, match="out must be"):
                a.read(out=bad)
        with pytest.raises(ValueError, match="whole reads"):
            a.read(index=0, out=out)
    # The native copy takes any C-contiguous, writable buffer of exactly the array's bytes,
    # and refuses anything else, saying what it wanted and what it got.
    native = a._native
    read_only = np.zeros(48, np.uint8)
    read_only.flags.writeable = False
    for bad, why in ((np.zeros(47, np.uint8), "got 47 bytes"),
                     (np.zeros(96, np.uint8), "got 96 bytes"),
                     (np.zeros(96, np.uint8)[::2], "not C-contiguous"),
                     (np.zeros((4, 3), "<i4", order="F"), "not C-contiguous"),
                     (read_only, "read-only"), (bytes(48), "not writable"), (12, "buffer")):
        with pytest.raises(ValueError, match="C-contiguous, writable buffer of 48 bytes") as e:
            native.read_into(bad, 10.0, False)
        assert why in str(e.value), (bad, str(e.value))
    for good in (bytearray(48), np.zeros(12, "<i4"), np.zeros((2, 24), np.int8)):
        native.read_into(good, 10.0, False)
        assert bytes(good) == np.arange(12, dtype="<i4").reshape(3, 4).tobytes(order="F"), good
