"""Python that fits its ecosystem (issue 21): NumPy's array protocol and DLPack on arrays and
frames, idiomatic exceptions, and a repr for every public object."""

import numpy as np
import pytest

import mmshare

NUMPY_2 = int(np.__version__.split(".")[0]) >= 2


def test_refusals_are_the_builtin_exceptions_they_mean(daemon):
    c = mmshare.connect(daemon.socket)
    with pytest.raises(FileNotFoundError, match="nope"):
        c.open("nope")
    c.create("a", "u1", (2,))
    with pytest.raises(FileExistsError, match='"a"'):
        c.create("a", "u1", (2,))
    assert issubclass(mmshare.NotFound, FileNotFoundError)
    assert issubclass(mmshare.AlreadyExists, FileExistsError)
    assert issubclass(mmshare.PermissionDenied, PermissionError)
    assert issubclass(mmshare.Timeout, TimeoutError)
    try:
        c.stat("gone")
    except OSError as e:  # as a missing file would be
        assert isinstance(e, mmshare.MmshareError) and "gone" in str(e)


def test_every_public_object_has_a_repr(daemon):
    c = mmshare.connect(daemon.socket)
    a = c.create("r.a", "f4", (2, 3))
    c.create_stream("r.s", "u1", (4,), slots=4)
    pub, sub = c.publisher("r.s"), c.subscribe("r.s", lossless=True)
    loan = pub.loan()
    pub.send(np.zeros(4, np.uint8))
    with sub.receive(timeout=5) as sample:
        texts = [repr(x) for x in (c, a, pub, sub, sample, loan, c.watch("r."), c.stat("r.a"),
                                   c.stat("r.s"), mmshare.WatchEvent("created", "r.a", "array"))]
    for text in texts:
        assert not text.startswith("<mmshare.") or " at 0x" not in text, text
        assert " object at 0x" not in text, text
    assert "r.a" in texts[1] and "r.s" in texts[2] and "lossless" in texts[3]
    assert texts[0] == f"<mmshare.Client {daemon.socket} connected>"


def test_numpy_takes_arrays_as_consistent_copies_and_frames_as_themselves(daemon):
    c = mmshare.connect(daemon.socket)
    a = c.create("n.a", "f8", (4,))
    with a.write() as w:
        w[:] = [1, 2, 3, 4]
    copy = np.asarray(a)
    assert copy.tolist() == [1, 2, 3, 4] and not np.shares_memory(copy, a.array)
    assert np.mean(a) == 2.5 and np.add(a, 1).tolist() == [2, 3, 4, 5]
    assert np.asarray(a, dtype="f4").dtype == np.float32
    live = a.__array__(copy=False)  # np.asarray(a, copy=False) on NumPy 2
    assert np.shares_memory(live, a.array) and not live.flags.writeable
    with a.write() as w:
        w[:] = 0
    assert copy.tolist() == [1, 2, 3, 4] and live.tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="would need a copy"):
        a.__array__(dtype="f4", copy=False)
    if NUMPY_2:
        assert np.shares_memory(np.asarray(a, copy=False), a.array)

    c.create_stream("n.s", "u2", (3,), slots=4)
    pub, sub = c.publisher("n.s"), c.subscribe("n.s", lossless=True)
    pub.send(np.array([7, 8, 9], np.uint16))
    with sub.receive(timeout=5) as sample:
        frame = np.asarray(sample)
        assert np.shares_memory(frame, sample.array) and frame.tolist() == [7, 8, 9]
        assert not np.shares_memory(np.array(sample, copy=True), sample.array)
        assert np.sum(sample) == 24


class LegacyConsumer:
    """What a DLPack consumer before 1.0 calls: `__dlpack__()` without `max_version`."""

    def __init__(self, source):
        self.source = source

    def __dlpack__(self, **_ignored):
        return self.source.__dlpack__()

    def __dlpack_device__(self):
        return self.source.__dlpack_device__()


def test_dlpack_exports_frames_read_only_and_never_a_loan(daemon):
    c = mmshare.connect(daemon.socket)
    c.create_stream("d.s", "f4", (2, 2), slots=4)
    pub, sub = c.publisher("d.s"), c.subscribe("d.s", lossless=True)
    pub.send(np.eye(2, dtype=np.float32))
    with sub.receive(timeout=5) as sample:
        assert sample.__dlpack_device__() == (1, 0)
        # NumPy 2 asks for DLPack 1.0 (read-only, in place); NumPy 1 cannot, and gets a copy.
        exported = np.from_dlpack(sample)
        assert np.shares_memory(exported, sample.array) == NUMPY_2
        assert exported.tolist() == [[1, 0], [0, 1]]
        if NUMPY_2:
            assert not exported.flags.writeable
        legacy = np.from_dlpack(LegacyConsumer(sample))  # cannot be told: a copy
        assert not np.shares_memory(legacy, sample.array)
        assert legacy.tolist() == [[1, 0], [0, 1]]
        with pytest.raises(BufferError, match="stream must be None"):
            sample.__dlpack__(stream=1)
        with pytest.raises(BufferError, match="only be exported as a copy"):
            sample.__dlpack__(copy=False)
    a = c.create("d.a", "i4", (3,))
    assert np.shares_memory(np.from_dlpack(a), a.array) == NUMPY_2
    with pub.loan() as frame:
        with pytest.raises(BufferError, match="cannot be exported through DLPack"):
            np.from_dlpack(frame)
    with a.write() as view:
        with pytest.raises(BufferError, match="cannot be exported"):
            view.__dlpack__()
