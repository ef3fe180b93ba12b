"""Record (structured) and time dtypes from Python: arrays and streams of them through a real
daemon, the same records read by Rust (`#[derive(Record)]` in mmshare-test-worker) and by
`np.memmap` with docs/FORMAT.md's recipe, NumPy's own spelling of every layout, and strict
casting field by field."""

import pathlib
import re
import subprocess

import numpy as np
import pytest

import mmshare

ROOT = pathlib.Path(__file__).resolve().parents[2]

# tests/src/main.rs, `Detection`: the same layout, padding included.
DETECTION = np.dtype({
    "names": ["x", "y", "id", "t", "box"],
    "formats": ["<f4", "<f4", "<u4", "<M8[ns]", ("<f4", (2, 2))],
    "offsets": [0, 4, 8, 16, 24],
    "itemsize": 40,
})
ROWS = 3


def detections(n: int) -> np.ndarray:
    """Frame `n` as the Rust worker builds it (`detection(n, i)`)."""
    out = np.zeros(ROWS, DETECTION)
    i = np.arange(ROWS)
    out["x"] = n + i
    out["y"] = -(n * 2 + i)
    out["id"] = n * 10 + i
    out["t"] = (1_700_000_000_000_000_000 + n * 1000 + i).astype("M8[ns]")
    out["box"][:, 0, 0] = i
    out["box"][:, 0, 1] = n
    out["box"][:, 1] = (1.5, -2.5)
    return out


def recipe():
    """docs/FORMAT.md's "Reading it from NumPy, raw" code, as written there."""
    text = (ROOT / "docs" / "FORMAT.md").read_text()
    section = text.split("## Reading it from NumPy, raw")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    definitions, usage = code.split("\ndtype, shape, order, data_offset = read_header(path)\n")
    namespace = {}
    exec(definitions, namespace)
    return namespace["read_header"], usage


NESTED = np.dtype([
    ("pos", [("x", "<f4"), ("y", "<f4")]),
    ("flags", "|u1"),
    ("m", "<f8", (2, 3)),
    ("when", "<M8[us]"),
    ("took", "<m8[ms]"),
    ("raw", "|V3"),
    ("pts", [("a", "<i2"), ("b", "|b1")], (2,)),
])


@pytest.mark.parametrize("dtype", [DETECTION, NESTED, np.dtype([("x", "<f4"), ("id", "<u8")],
                                                              align=True)],
                         ids=["padded", "nested", "aligned"])
def test_a_record_array_is_read_by_np_memmap_with_the_format_recipe(daemon, dtype):
    c = mmshare.connect(daemon.socket)
    a = c.create("recs", dtype, (4, 2))
    assert a.dtype == dtype
    rng = np.random.default_rng(7)
    data = np.frombuffer(rng.integers(0, 256, 4 * 2 * dtype.itemsize, dtype=np.uint8).tobytes(),
                         dtype=dtype).reshape(4, 2).copy()
    # Only named fields are compared: padding bytes are nobody's.
    for name in dtype.names:
        if data[name].dtype.kind in "fc":
            data[name] = np.nan_to_num(data[name])
    with a.write() as w:
        w[...] = data
    read_header, usage = recipe()
    path = daemon.root / "data" / "recs"
    namespace = {"path": path, "read_header": read_header, "np": np}
    exec("dtype, shape, order, data_offset = read_header(path)\n" + usage, namespace)
    m = namespace["a"]
    assert m.dtype == dtype, (m.dtype, dtype)
    assert m.shape == (4, 2)
    for name in dtype.names:
        np.testing.assert_array_equal(m[name], data[name])
    # Another client sees the same records, and the daemon names the dtype as NumPy does.
    b = mmshare.connect(daemon.socket).open("recs")
    assert b.dtype == dtype
    np.testing.assert_array_equal(b.read(), m)
    info = c.stat("recs")
    assert info.dtype == repr(np.lib.format.dtype_to_descr(dtype))


def test_record_frames_round_trip_between_python_and_rust(daemon, worker):
    """Python publishes record frames that a Rust `Subscriber<Detection>` checks record by
    record, then Rust publishes and Python checks: padding, a nested subarray and a datetime
    field on both sides."""
    c = mmshare.connect(daemon.socket)
    c.create_stream("dets", DETECTION, (ROWS,), slots=4)
    frames = 200
    rust = subprocess.Popen([worker, "records-check", daemon.socket, "dets", str(frames)],
                            stdout=subprocess.PIPE, text=True)
    assert rust.stdout.readline().strip() == "subscribed"
    pub = c.publisher("dets")
    for n in range(frames):
        if n % 2:
            pub.send(detections(n))
        else:
            with pub.loan() as frame:
                frame[...] = detections(n)
    out, _ = rust.communicate(timeout=120)
    assert rust.returncode == 0, out
    assert out.strip() == f"ok frames={frames}"
    pub.close()
    c.delete("dets")

    c.create_stream("dets2", DETECTION, (ROWS,), slots=4)
    sub = c.subscribe("dets2", lossless=True)
    rust = subprocess.Popen([worker, "records-pub", daemon.socket, "dets2", str(frames)],
                            stdout=subprocess.PIPE, text=True)
    for n in range(frames):
        with sub.receive(timeout=60) as sample:
            assert sample.number == n
            assert sample.array.dtype == DETECTION
            for name in DETECTION.names:
                np.testing.assert_array_equal(sample.array[name], detections(n)[name])
    assert rust.communicate(timeout=60)[0].strip() == f"published {frames}"


def test_time_arrays_keep_their_unit(daemon):
    c = mmshare.connect(daemon.socket)
    a = c.create("when", "datetime64[ms]", (3,))
    assert a.dtype == np.dtype("<M8[ms]")
    with a.write() as w:
        w[0] = np.datetime64("2026-12-05T16:00:00.123")
        w[1] = "2026-12-05T16:00:01"
        w[2] = np.datetime64("NaT")
    got = mmshare.connect(daemon.socket).open("when").read()
    assert got[0] == np.datetime64("2026-12-05T16:00:00.123")
    assert got[1] == np.datetime64("2026-12-05T16:00:01.000")
    assert np.isnat(got[2])
    d = c.create("took", np.dtype("m8[us]"), ())
    with d.write() as w:
        w[...] = np.timedelta64(1500, "us")
    assert d.read() == np.timedelta64(1500, "us")
    assert c.stat("took").dtype == "<m8[us]"


def test_records_are_written_field_by_field_under_same_kind_casting(daemon):
    c = mmshare.connect(daemon.socket)
    c.create_stream("pts", [("x", "<f4"), ("id", "<u4")], (2,), slots=4)
    pub = c.publisher("pts")
    sub = c.subscribe("pts", lossless=True)
    pub.send([(1.5, 7), (2.5, 8)])
    with sub.receive(timeout=10) as s:
        assert s.array.tolist() == [(1.5, 7), (2.5, 8)]
    # A float into the integer field is refused, naming the field; unsafe lets it through.
    with pytest.raises(TypeError, match="float64 values into field 'id'"):
        pub.send([(1.5, 7.9), (2.5, 8)])
    with pub.loan() as frame:
        with pytest.raises(TypeError, match="field 'id'"):
            frame[0] = (1.0, 2.5)
        with pytest.raises(TypeError, match="uint32"):
            frame["id"] = -0.5
        frame[0] = (1.0, 3)
        frame[1] = (4.0, 5)
    pub.send([(1.5, 7.9), (2.5, 8)], casting="unsafe")
    with pytest.raises(TypeError, match="2 fields"):
        pub.send([(1.5,), (2.5,)])
    with sub.receive(timeout=10) as s:
        assert s.array.tolist() == [(1.0, 3), (4.0, 5)]
    with sub.receive(timeout=10) as s:
        assert s.array["id"].tolist() == [7, 8]


def test_bad_records_are_refused_by_the_daemon_with_the_reason(daemon):
    c = mmshare.connect(daemon.socket)
    for dtype, says in [
        ("[('a', '<f4'), ('a', '<u1')]", "appears twice"),
        ("[('a', 'O')]", "not supported"),
        ("[('a', '>f4')]", "big-endian"),
        ("datetime64", "not supported"),
        (np.dtype([("s", "S4")]), "not supported"),
    ]:
        with pytest.raises(mmshare.InvalidDtype, match=says):
            c.create("bad", dtype, (1,))
    # Overlapping fields have no descr (NumPy refuses to write one): refused before sending.
    overlapping = np.dtype({"names": ["a", "b"], "formats": ["<u4", "<u2"],
                            "offsets": [0, 2]})
    with pytest.raises(ValueError):
        c.create("bad", overlapping, (1,))


def test_the_daemon_names_every_time_unit_and_void_as_numpy_does(daemon):
    c = mmshare.connect(daemon.socket)
    for i, unit in enumerate(["Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs",
                              "as"]):
        for kind, name in [("M8", "datetime64"), ("m8", "timedelta64")]:
            given = f"{name}[{unit}]" if i % 2 else f"{kind}[{unit}]"
            a = c.create(f"t{kind}{i}", given, (1,))
            assert c.stat(f"t{kind}{i}").dtype == np.dtype(given).str
            assert a.dtype == np.dtype(given)
    for given in ["V7", "<V7", ">V7", "|V07"]:
        c.create("v", given, (2,))
        assert c.stat("v").dtype == np.dtype(given).str == "|V7"
        c.delete("v")


def test_one_record_of_a_view_is_checked_and_names_must_match(daemon):
    c = mmshare.connect(daemon.socket)
    a = c.create("pts", [("x", "<f4"), ("id", "<u4")], (3,))
    with a.write() as w:
        with pytest.raises(TypeError, match="field 'id'|uint32"):
            w[0]["id"] = 0.7
        w[0]["id"] = 7
        w[1] = (2.5, 8)
        swapped = np.zeros(3, [("id", "<u4"), ("x", "<f4")])
        with pytest.raises(TypeError, match="cannot write"):
            w[...] = swapped
        same = np.zeros(3, [("x", "<f4"), ("id", "<u4")])
        same["id"] = [1, 2, 3]
        w[2:] = same[2:]
    assert a.read()["id"].tolist() == [7, 8, 3]
    with pytest.raises(ValueError, match="subarray dtype"):
        c.create("sub", np.dtype(("<f4", (3,))), (2,))
