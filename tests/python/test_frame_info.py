"""Per-frame headers and variable-size frames across languages, through a real daemon: every
frame's rows, data and header checked on the other side, Rust (mmshare-test-worker, a
`#[derive(Record)]` header) <-> Python <-> C (tests/c/frames.c), each direction.

Frame n: `n % 7` rows of 4 `u2` (the stream's largest frame is 6 x 4), element i = n * 100 + i,
and the header `header_of(n)`."""

import subprocess

import numpy as np
import pytest

import mmshare

from test_c_api import c_program  # noqa: F401  (the fixture that compiles tests/c/*.c)

# [('t', '<u8'), ('exposure', '<f4'), ('roi', '<u2', (4,)), ('', '|V4')]: 4 bytes of padding.
HEADER = np.dtype({"names": ["t", "exposure", "roi"],
                   "formats": ["<u8", "<f4", ("<u2", (4,))],
                   "offsets": [0, 8, 12], "itemsize": 24})
SHAPE = (6, 4)
FRAMES = 150


def rows_of(n: int) -> int:
    return n % 7


def frame_of(n: int) -> np.ndarray:
    return ((n * 100 + np.arange(rows_of(n) * 4)) % 65536).astype("<u2").reshape(-1, 4)


def header_of(n: int):
    return (1_000_000 + n, n * 0.5, [n, n + 1, n + 2, n + 3])


def create(client, name):
    return client.create_stream(name, "<u2", SHAPE, slots=4, header=HEADER, variable=True)


def check_sample(sample, n):
    assert sample.number == n
    assert sample.rows == rows_of(n)
    assert sample.array.shape == (rows_of(n), 4)
    np.testing.assert_array_equal(sample.array, frame_of(n))
    h = sample.header
    assert h.shape == () and h.dtype == HEADER
    assert (int(h["t"]), float(h["exposure"]), h["roi"].tolist()) == header_of(n)


def publish_from_python(pub, frames):
    for n in range(frames):
        if n % 2:
            pub.send(frame_of(n), header=header_of(n))
        else:
            loan = pub.loan()
            with loan as frame:
                loan.header["t"] = 1_000_000 + n
                loan.header["exposure"] = n * 0.5
                loan.header["roi"] = [n, n + 1, n + 2, n + 3]
                frame[:rows_of(n)] = frame_of(n)
                loan.rows = rows_of(n)


def test_python_to_rust_and_rust_to_python(daemon, worker):
    c = mmshare.connect(daemon.socket)
    info = create(c, "cam")
    assert info.variable
    assert info.header == "[('t', '<u8'), ('exposure', '<f4'), ('roi', '<u2', (4,)), ('', '|V4')]"
    rust = subprocess.Popen([worker, "frames-check", daemon.socket, "cam", str(FRAMES)],
                            stdout=subprocess.PIPE, text=True)
    assert rust.stdout.readline().strip() == "subscribed"
    pub = c.publisher("cam")
    assert pub.variable and pub.header_dtype == HEADER
    publish_from_python(pub, FRAMES)
    out, _ = rust.communicate(timeout=120)
    assert rust.returncode == 0, out
    assert out.strip() == f"ok frames={FRAMES}"
    pub.close()

    create(c, "cam2")
    sub = c.subscribe("cam2", lossless=True)
    rust = subprocess.Popen([worker, "frames-pub", daemon.socket, "cam2", str(FRAMES)],
                            stdout=subprocess.PIPE, text=True)
    for n in range(FRAMES):
        with sub.receive(timeout=60) as sample:
            check_sample(sample, n)
    assert rust.communicate(timeout=60)[0].strip() == f"published {FRAMES}"


def test_python_to_c_and_c_to_python(daemon, c_program):  # noqa: F811
    c = mmshare.connect(daemon.socket)
    create(c, "ccam")
    prog = subprocess.Popen([c_program("frames"), daemon.socket, "ccam", "check", str(FRAMES)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert prog.stdout.readline().strip() == "ready", prog.stderr.read()
    pub = c.publisher("ccam")
    publish_from_python(pub, FRAMES)
    out, err = prog.communicate(timeout=120)
    assert prog.returncode == 0, err
    assert out.strip() == f"ok frames={FRAMES}"
    pub.close()

    prog = subprocess.Popen([c_program("frames"), daemon.socket, "ccam2", "publish", str(FRAMES)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sub = c.subscribe(c.wait_for("ccam2", timeout=60).name, lossless=True)
    for n in range(FRAMES):
        with sub.receive(timeout=60) as sample:
            check_sample(sample, n)
    out, err = prog.communicate(timeout=60)
    assert prog.returncode == 0, err
    assert "published" in out


def test_rust_to_c(daemon, worker, c_program):  # noqa: F811
    c = mmshare.connect(daemon.socket)
    create(c, "rc")
    prog = subprocess.Popen([c_program("frames"), daemon.socket, "rc", "check", str(FRAMES)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert prog.stdout.readline().strip() == "ready", prog.stderr.read()
    rust = subprocess.run([worker, "frames-pub", daemon.socket, "rc", str(FRAMES)],
                          capture_output=True, text=True, timeout=120)
    assert rust.stdout.strip() == f"published {FRAMES}", rust.stderr
    out, err = prog.communicate(timeout=60)
    assert prog.returncode == 0, err


def test_headers_and_rows_are_checked(daemon):
    c = mmshare.connect(daemon.socket)
    create(c, "strict")
    pub = c.publisher("strict")
    with pytest.raises(ValueError, match="does not fit"):
        pub.send(np.zeros((7, 4), "<u2"))
    with pytest.raises(ValueError, match="does not fit"):
        pub.send(np.zeros((2, 3), "<u2"))
    with pytest.raises(TypeError, match="field 'exposure'"):
        pub.send(np.zeros((1, 4), "<u2"), header=(1, 1j, [0, 0, 0, 0]))
    loan = pub.loan()
    with loan as frame:
        h = loan.header
        assert (int(h["t"]), float(h["exposure"]), h["roi"].tolist()) == (0, 0.0, [0] * 4)
        assert loan.rows == 6 and frame.shape == SHAPE
        with pytest.raises(ValueError, match="larger than the stream's largest"):
            loan.rows = 7
        with pytest.raises(TypeError, match="float64 values into"):
            loan.header["t"] = 0.5
        loan.rows = 0
    with pytest.raises(mmshare.MmshareError, match="inside its `with` block"):
        loan.header
    # A stream whose frames do not vary and carry no header says so.
    c.create_stream("plain", "<u2", SHAPE, slots=4)
    plain = c.publisher("plain")
    with pytest.raises(ValueError, match="carry no header"):
        plain.send(np.zeros(SHAPE, "<u2"), header=1)
    with plain.loan() as frame:
        pass
    loan = plain.loan()
    with loan:
        assert loan.header is None
        with pytest.raises(ValueError, match="do not vary"):
            loan.rows = 3
    with pytest.raises(mmshare.InvalidDtype, match="per-frame header"):
        c.create_stream("bad", "<u2", SHAPE, header="O")
    with pytest.raises(mmshare.InvalidShape, match="at most 65528"):
        c.create_stream("bad", "<u2", SHAPE, header="V65529")
    with pytest.raises(mmshare.InvalidShape, match="Fortran"):
        c.create_stream("bad", "<u2", SHAPE, order="F", variable=True)


def test_format_md_reads_a_frame_its_rows_and_header_with_numpy_alone(daemon):
    """FORMAT.md's "Reading a frame with NumPy" code, run as written on a stream with the
    frame-info table, then its row count and header read at the places the text gives, while
    this subscriber holds the frame."""
    import pathlib
    import re
    import struct
    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text()
    raw = text.split("## Reading it from NumPy, raw")[1]
    namespace = {}
    exec(re.search(r"```python\n(.*?)\ndtype, shape, order, data_offset = read_header",
                   raw, re.S).group(1), namespace)
    section = text.split("### Reading a frame with NumPy")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    c = mmshare.connect(daemon.socket)
    create(c, "raw")
    pub, sub = c.publisher("raw"), c.subscribe("raw", lossless=True)
    data_path = daemon.root / "data" / "raw" / "data"
    page = data_path.read_bytes()[:4096]
    slots, = struct.unpack_from("<I", page, 0x54)
    stride, = struct.unpack_from("<I", page, 0x7C)
    incompat, = struct.unpack_from("<I", page, 0x60)
    entry = 64 if incompat & 8 else 16          # SLOT_LINES: a cache line per slot
    assert entry == 64, "a stream made now has slot lines"
    frame_info = 0x1000 + -(-entry * slots // 64) * 64
    for n in range(5):
        pub.send(frame_of(n), header=header_of(n))
        with sub.receive(timeout=10) as held:
            tags = np.fromfile(data_path, "<u8", count=slots * entry // 8,
                               offset=0x1000)[::entry // 8]
            slot = int(np.flatnonzero(tags == n + 1)[0])
            ns = dict(namespace, data_path=data_path, slot=slot, np=np)
            exec(code, ns)
            at = frame_info + slot * stride
            rows, = struct.unpack_from("<Q", data_path.read_bytes(), at)
            header = np.frombuffer(data_path.read_bytes(), HEADER, count=1, offset=at + 8)[0]
            assert rows == held.rows == rows_of(n)
            np.testing.assert_array_equal(ns["frame"][:rows], frame_of(n))
            assert int(header["t"]) == 1_000_000 + n and header["roi"].tolist() == header_of(n)[2]
