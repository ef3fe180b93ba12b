"""Issue 7, section 3: what read(), .array, write() and wait() promise about consistency.

* read(index=...) applies the index inside the seqlock loop, so the copy that is validated is
  the copy that is returned, for every kind of index (basic, fancy, boolean, scalar).
* .array is read-only on every handle; a writable view exists only inside write() and is made
  read-only when the block ends.
* wait() (and the read and write loops) load the futex word, then an acquire fence, then the
  sequence, as Rust's `futex_snapshot` does.

Everything here is deterministic: a write is held open in this process and completed from a
hook at a known point of the reader's loop; no test depends on timing.
"""

import numpy as np
import pytest

import mmshare
import mmshare.array as array_module
from mmshare import _sys

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
def test_an_indexed_read_overlapping_a_write_returns_the_validated_copy(daemon, monkeypatch, index):
    c = mmshare.connect(daemon.socket)
    w = c.create("ix", "<c16", (4,))
    r = c.open("ix")
    expected = _apply(np.full(4, DONE), index)

    block = w.write(timeout=10)
    view = block.__enter__()     # the write side is held: the sequence is odd
    view.real[:] = 1             # half of the write is in the pages

    real_pause = array_module._Backoff.pause
    calls = []

    def finish_the_write_on_first_pause(self, futex_address, seen):
        # The reader saw the odd sequence and is about to wait. Whatever it copied before
        # this point was copied during the write; complete and publish the write now.
        if not calls:
            view.imag[:] = 1
            block.__exit__(None, None, None)
        calls.append(seen)
        return real_pause(self, futex_address, seen)

    monkeypatch.setattr(array_module._Backoff, "pause", finish_the_write_on_first_pause)
    got = r.read(index=index, timeout=10)
    assert calls, "the reader never waited for the write it overlapped"
    assert r.version == 1
    assert not np.any(np.asarray(got) == TORN), f"a torn copy was accepted: {got!r}"
    np.testing.assert_array_equal(got, expected)
    assert isinstance(got, np.ndarray) and got.shape == np.shape(expected)


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


def _record_loads(monkeypatch):
    """Replaces the futex and sequence loads and the acquire fence with recording versions."""
    events = []
    real_futex, real_seq = mmshare.SharedArray._futex, mmshare.SharedArray._seq
    real_fence = _sys.fence_acquire

    def futex(self):
        events.append("futex")
        return real_futex(self)

    def seq(self):
        events.append("seq")
        return real_seq(self)

    def fence():
        events.append("fence")
        real_fence()

    monkeypatch.setattr(mmshare.SharedArray, "_futex", futex)
    monkeypatch.setattr(mmshare.SharedArray, "_seq", seq)
    monkeypatch.setattr(_sys, "fence_acquire", fence)
    return events


# On x86-64 loads are never reordered with older loads, so no run on this machine can show a
# missing fence between the futex and sequence loads (the lost wake-up it allows happens on
# ARM). These tests check the order of operations instead: the futex load, then an acquire
# fence, then the sequence load, as mmshare-lib/src/raw.rs `futex_snapshot` followed by the
# sequence load in `wait_for_version`, `read_protocol` and `acquire_write` does.
@pytest.mark.parametrize("operation", ["wait", "read", "write"])
def test_the_futex_load_is_fenced_before_the_sequence_load(daemon, monkeypatch, operation):
    c = mmshare.connect(daemon.socket)
    a = c.create("f", "u1", (2,))
    with a.write() as v:
        v[:] = 1
    events = _record_loads(monkeypatch)
    if operation == "wait":
        assert a.wait(newer_than=0, timeout=10) == 1
    elif operation == "read":
        assert a.read(timeout=10).tolist() == [1, 1]
    else:
        with a.write(timeout=10):
            pass
    assert "futex" in events, events
    first_futex = events.index("futex")
    after = events[first_futex + 1:]
    assert after[:2] == ["fence", "seq"], (
        f"{operation}: expected futex, fence, seq; got {events}")
    if operation in ("wait", "read"):
        # The sequence load itself is an acquire (relaxed load + acquire fence), as Rust's
        # read_begin.
        assert after[2] == "fence", events

