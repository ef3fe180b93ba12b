"""Streams of several publishers from Python, through a real daemon: Python and Rust
publisher processes into one Python lossless subscriber (every frame of each, once, in its
order, tagged with its publisher), the limit, the description, and NumPy reading a lane's
file raw."""

import subprocess
import threading

import numpy as np
import pytest

import mmshare

from test_c_api import c_program  # noqa: F401  (the fixture that compiles tests/c/*.c)

FRAMES = 2_000


def pattern(lane: int, n: int) -> np.ndarray:
    """Frame n of lane `lane`, as the Rust worker's fan-in-pub writes it (u64 x 64)."""
    version = np.uint64(n + (lane << 40))
    with np.errstate(over="ignore"):
        return version * np.uint64(0x9E3779B97F4A7C15) + np.arange(64, dtype=np.uint64)


def test_python_and_rust_publishers_reach_a_python_subscriber_whole_and_in_order(daemon, worker):
    c = mmshare.connect(daemon.socket)
    info = c.create_stream("fan", "<u8", (64,), slots=8, max_publishers=3)
    assert (info.max_publishers, info.publishers) == (3, ())
    sub = c.subscribe("fan", lossless=True, max_held=1)
    rust = subprocess.Popen([worker, "fan-in-pub", daemon.socket, "fan", str(FRAMES)],
                            stdout=subprocess.PIPE, text=True)
    rust_lane = int(rust.stdout.readline().split()[0].split("=")[1])
    pubs = [c.publisher("fan") for _ in range(2)]
    assert sorted([p.id.lane for p in pubs] + [rust_lane]) == [0, 1, 2]
    with pytest.raises(mmshare.Busy, match="max_publishers"):
        mmshare.connect(daemon.socket).publisher("fan")  # this process's: the library says so

    def publish(pub):
        for n in range(FRAMES):
            pub.send(pattern(pub.id.lane, n))

    threads = [threading.Thread(target=publish, args=(p,)) for p in pubs]
    for t in threads:
        t.start()
    nxt = [0, 0, 0]
    seen = {}
    while sum(nxt) < 3 * FRAMES:
        with sub.receive(timeout=60) as s:
            assert s.number == nxt[s.lane], f"lane {s.lane} in order, once"
            np.testing.assert_array_equal(s.array, pattern(s.lane, s.number))
            assert s.publisher is not None and s.publisher.lane == s.lane
            seen.setdefault(s.lane, set()).add(s.publisher)
            nxt[s.lane] += 1
    for t in threads:
        t.join()
    assert rust.communicate(timeout=60)[0].strip() == f"published {FRAMES}"
    assert sub.missed == 0 and sub.received == 3 * FRAMES
    for p in pubs:
        assert seen[p.id.lane] == {p.id}
        assert p.id.pid == __import__("os").getpid() and p.id.attach == 1
    (rust_id,) = seen[rust_lane]
    assert rust_id.pid == rust.pid
    described = c.describe("fan")
    assert described.published == 3 * FRAMES
    assert len(described.subscribers) == 1, "one subscriber, listed once"


def test_numpy_reads_every_lane_file_raw(daemon):
    """Each lane is a file of its own, laid out as a stream of one publisher's: NumPy reads
    lane k's newest frame from `data.k` with the offsets docs/FORMAT.md gives."""
    c = mmshare.connect(daemon.socket)
    info = c.create_stream("raw", "<u8", (64,), slots=4, max_publishers=2)
    pubs = [c.publisher("raw") for _ in range(2)]
    for p in pubs:
        p.send(pattern(p.id.lane, 0))
    import pathlib
    path = pathlib.Path(info.path)
    for p in pubs:
        lane = p.id.lane
        data = path / ("data" if lane == 0 else f"data.{lane}")
        raw = np.fromfile(data, dtype=np.uint8)
        header = raw[:4096]
        assert header[0x60] & 4, "LANES"
        assert int.from_bytes(bytes(header[0x5C:0x5E]), "little") == 2
        assert int.from_bytes(bytes(header[0x5E:0x60]), "little") == lane
        # Slot 0 holds frame 0 (tag 1): the frame at data_offset.
        assert int.from_bytes(bytes(raw[0x1000:0x1008]), "little") == 1
        frame = raw[info.data_offset:info.data_offset + 512].view("<u8")
        np.testing.assert_array_equal(frame, pattern(lane, 0))


def test_several_publishers_from_the_shell(cli_bin, daemon, tmp_path):
    """`create --stream --max-publishers N`, shown by `info` (and `--json`) with the attached
    publishers; `sub -o` saves each frame's lane and number in `NAME.lanes.npy` beside the
    frames."""
    from test_cli import run
    sock = daemon.socket
    out = run(cli_bin, "create", "cams", "--stream", "--dtype", "u2", "--shape", "2",
              "--max-publishers", "2", "--history", "4", socket=sock).stdout
    assert "for each of up to 2 publishers" in out, out
    c = mmshare.connect(sock)
    pubs = [c.publisher("cams") for _ in range(2)]
    text = run(cli_bin, "info", "cams", socket=sock).stdout
    pid = __import__("os").getpid()
    assert f"publishers:  2 of at most 2: pid {pid}, pid {pid}" in text, text
    info = __import__("json").loads(run(cli_bin, "info", "cams", "--json", socket=sock).stdout)
    assert info["max_publishers"] == 2 and info["publishers"] == [pid, pid]
    order = [(0, 0), (1, 0), (1, 1), (0, 1)]
    for lane, n in order:
        pubs[lane].send(np.array([lane, n], np.uint16))
    run(cli_bin, "sub", "cams", "--from", "oldest", "--seconds", "0.5",
        "-o", str(tmp_path / "rec.npy"), socket=sock)
    frames = np.load(tmp_path / "rec.npy")
    lanes = np.load(tmp_path / "rec.lanes.npy")
    assert lanes.shape == (4, 2)
    assert sorted(map(tuple, lanes.tolist())) == sorted(order)
    for (lane, n), frame in zip(lanes.tolist(), frames.tolist()):
        assert frame == [lane, n]
    for lane in (0, 1):  # each publisher's frames in its order
        assert [n for l, n in lanes.tolist() if l == lane] == [0, 1]
    bad = run(cli_bin, "create", "many", "--stream", "--dtype", "u1", "--shape", "1",
              "--max-publishers", "17", socket=sock, check=False)
    assert bad.returncode != 0 and "17" in bad.stderr, bad.stderr


def test_several_publishers_from_c(daemon, c_program):  # noqa: F811
    """tests/c/fan_in.c: three publisher handles in three lanes, a fourth refused, and a
    lossless subscriber that checks every frame's lane, number, content and publisher."""
    out = subprocess.run([c_program("fan_in"), daemon.socket], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == f"ok frames={3 * 200}"
