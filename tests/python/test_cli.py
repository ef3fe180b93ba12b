"""The `mmshare` CLI as a user runs it: .npy round trips for every dtype, mismatches that
change nothing, --json output, clear one-line errors, and the demo."""

import json
import os
import pathlib
import queue
import re
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

import mmshare

DTYPES = ["|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8",
          "<f2", "<f4", "<f8", "<c8", "<c16"]


def run(cli, *args, socket=None, check=True, env=None):
    cmd = [cli] + (["--socket", socket] if socket else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    if dt.kind == "b":
        flat = rng.integers(0, 2, n).astype(dt)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        flat = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
    elif dt.kind == "c":
        flat = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt)
    else:
        flat = rng.standard_normal(n).astype(dt)
    return flat.reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES)
def test_put_then_get_round_trips_every_dtype(cli_bin, daemon, tmp_path, dtype):
    data = sample(dtype, (3, 5, 2))
    np.save(tmp_path / "in.npy", data)
    run(cli_bin, "put", "arr", str(tmp_path / "in.npy"), "--create", socket=daemon.socket)
    run(cli_bin, "get", "arr", str(tmp_path / "out.npy"), socket=daemon.socket)
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == data.dtype and out.shape == data.shape
    np.testing.assert_array_equal(out, data)
    # And the Python client sees the same values.
    np.testing.assert_array_equal(mmshare.connect(daemon.socket).open("arr").read(), data)


@pytest.mark.parametrize("shape,order", [((), "C"), ((0, 4), "C"), ((4, 3), "F"), ((7,), "C")])
def test_zero_d_empty_and_fortran_round_trip(cli_bin, daemon, tmp_path, shape, order):
    data = np.asarray(sample("<f8", shape), order=order)
    np.save(tmp_path / "in.npy", data)
    run(cli_bin, "put", "a", str(tmp_path / "in.npy"), "--create", socket=daemon.socket)
    info = json.loads(run(cli_bin, "info", "a", "--json", socket=daemon.socket).stdout)
    assert info["shape"] == list(shape) and info["order"] == ("F" if order == "F" and len(shape) > 1 else info["order"])
    run(cli_bin, "get", "a", str(tmp_path / "out.npy"), socket=daemon.socket)
    out = np.load(tmp_path / "out.npy")
    assert out.shape == shape
    np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize("order", ["C", "F"])
def test_create_with_stripes_and_get_rows(cli_bin, daemon, tmp_path, order):
    out = run(cli_bin, "create", "tiles", "--dtype", "u4", "--shape", "1024,16", "--order",
              order, "--stripes", "8", socket=daemon.socket).stdout
    assert ", 8 stripes)" in out, out
    info = json.loads(run(cli_bin, "info", "tiles", "--json", socket=daemon.socket).stdout)
    assert info["stripe_bytes"] == (128 * 16 * 4 if order == "C" else 2 * 1024 * 4)
    text = run(cli_bin, "info", "tiles", socket=daemon.socket).stdout
    assert "stripes:     8 of" in text, text
    data = np.asarray(np.arange(1024 * 16, dtype="<u4").reshape(1024, 16), order=order)
    a = mmshare.connect(daemon.socket).open("tiles", "r+")
    with a.write() as v:
        v[...] = data
    for rows, want in [("100:200", data[100:200]), (":3", data[:3]), ("1000:", data[1000:]),
                       ("5:5", data[5:5])]:
        got = run(cli_bin, "get", "tiles", str(tmp_path / "r.npy"), "--rows", rows,
                  socket=daemon.socket).stdout
        a0, b0 = rows.split(":")
        assert f"saved rows {a0 or 0}:{b0 or 1024} of tiles version 1 " in got, got
        out = np.load(tmp_path / "r.npy")
        assert out.shape == want.shape and out.dtype == want.dtype
        np.testing.assert_array_equal(out, want)
        assert out.flags.f_contiguous if order == "F" and want.size else True
    for rows, message in [("10:2000", "0..2000"), ("x", "not a range of rows"),
                          ("3:1", "3..1")]:
        p = run(cli_bin, "get", "tiles", str(tmp_path / "r.npy"), "--rows", rows,
                socket=daemon.socket, check=False)
        assert p.returncode != 0 and message in p.stderr, p.stderr
    p = run(cli_bin, "create", "bad", "--dtype", "u1", "--shape", "8", "--stripes", "40",
            socket=daemon.socket, check=False)
    assert p.returncode != 0 and "40 stripes asked for" in p.stderr, p.stderr
    out = run(cli_bin, "create", "holes", "--dtype", "u1", "--shape", "65536,65536",
              "--sparse", socket=daemon.socket).stdout
    assert "(4.0 GiB, file, 32 stripes, sparse)" in out, out
    assert json.loads(run(cli_bin, "info", "holes", "--json",
                          socket=daemon.socket).stdout)["sparse"] is True
    # No --stripes: the daemon's choice (one lock below 1 MiB).
    out = run(cli_bin, "create", "small", "--dtype", "u1", "--shape", "1000",
              socket=daemon.socket).stdout
    assert " stripes)" not in out, out


def test_mismatched_put_is_an_error_and_changes_nothing(cli_bin, daemon, tmp_path):
    run(cli_bin, "create", "m", "--dtype", "f4", "--shape", "2,3", socket=daemon.socket)
    good = np.arange(6, dtype="<f4").reshape(2, 3)
    np.save(tmp_path / "good.npy", good)
    run(cli_bin, "put", "m", str(tmp_path / "good.npy"), socket=daemon.socket)
    before = json.loads(run(cli_bin, "info", "m", "--json", socket=daemon.socket).stdout)["version"]
    for bad in [np.zeros((2, 3), "<f8"), np.zeros((3, 2), "<f4"), np.zeros((2, 3), "<f4", order="F")]:
        np.save(tmp_path / "bad.npy", bad)
        p = run(cli_bin, "put", "m", str(tmp_path / "bad.npy"), socket=daemon.socket, check=False)
        assert p.returncode == 2  # bad input
        assert p.stderr.count("\n") == 1 and "nothing was written" in p.stderr, p.stderr
    after = json.loads(run(cli_bin, "info", "m", "--json", socket=daemon.socket).stdout)
    assert after["version"] == before
    np.testing.assert_array_equal(mmshare.connect(daemon.socket).open("m").read(), good)


def test_info_and_ls_json_fields(cli_bin, daemon):
    run(cli_bin, "create", "j", "--dtype", "uint16", "--shape", "4,4", "--memory", "--mode", "0644",
        socket=daemon.socket)
    info = json.loads(run(cli_bin, "info", "j", "--json", socket=daemon.socket).stdout)
    assert set(info) == {"kind", "name", "dtype", "shape", "order", "nbytes", "data_offset",
                         "path", "version", "backing", "owner_uid", "mode", "file_mode", "torn",
                         "stripe_bytes", "sparse"}
    assert info["kind"] == "array"
    # Modes are octal text, as people write them; the file's own mode is shown next to the
    # access mode the daemon checks (the file stays 0600: raw mapping is for its owner).
    assert (info["dtype"], info["shape"], info["nbytes"], info["backing"], info["mode"],
            info["file_mode"]) == ("<u2", [4, 4], 32, "memory", "0644", "0600")
    m = np.memmap(info["path"], dtype=info["dtype"], mode="r", offset=info["data_offset"],
                  shape=tuple(info["shape"]))
    assert m.sum() == 0
    listed = json.loads(run(cli_bin, "ls", "--json", socket=daemon.socket).stdout)
    assert [a["name"] for a in listed] == ["j"]
    assert "j" in run(cli_bin, "ls", socket=daemon.socket).stdout
    run(cli_bin, "rm", "j", socket=daemon.socket)
    assert json.loads(run(cli_bin, "ls", "--json", socket=daemon.socket).stdout) == []


def test_streams_from_the_shell_create_pub_sub_info_ls(cli_bin, daemon, tmp_path):
    """create --stream, pub of a .npy stack, sub -o recording it (lossless, so every frame),
    info --json with the stream's fields and subscribers, ls with a KIND column."""
    sock = daemon.socket
    out = run(cli_bin, "create", "cam", "--stream", "--slots", "4", "--dtype", "<i2",
              "--shape", "3,5", "--memory", socket=sock).stdout
    assert out.startswith("created stream cam <i2 frames of (3, 5)") and "4 slots" in out
    run(cli_bin, "create", "plain", "--dtype", "u1", "--shape", "2", socket=sock)
    frames = sample("<i2", (50, 3, 5), seed=7)
    stack = tmp_path / "frames.npy"
    np.save(stack, frames)
    rec = tmp_path / "rec.npy"
    sub = subprocess.Popen([cli_bin, "--socket", sock, "sub", "cam", "--lossless", "--count", "50",
                            "-o", str(rec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    c = mmshare.connect(sock)
    for _ in range(500):  # wait until the subscriber is attached
        if c.describe("cam").subscribers:
            break
        time.sleep(0.02)
    info = json.loads(run(cli_bin, "info", "cam", "--json", socket=sock).stdout)
    assert info["kind"] == "stream" and info["slots"] == 4 and info["published"] == 0
    assert info["shape"] == [3, 5] and info["dtype"] == "<i2"
    [s] = info["subscribers"]
    assert set(s) >= {"pid", "mode", "lag", "missed"} and s["mode"] == "lossless"
    published = run(cli_bin, "pub", "cam", str(stack), "--rate", "2000", socket=sock).stdout
    assert published.startswith("published 50 frames (0..50) to cam"), published
    stdout, stderr = sub.communicate(timeout=60)
    assert sub.returncode == 0, stderr
    assert "received 50 frames (0..50) from cam, missed 0" in stdout, stdout
    np.testing.assert_array_equal(np.load(rec), frames)
    assert not list(tmp_path.glob("*.partial"))
    listing = run(cli_bin, "ls", socket=sock).stdout.splitlines()
    assert listing[0].split()[:2] == ["NAME", "KIND"]
    kinds = {line.split()[0]: line.split()[1] for line in listing[1:]}
    assert kinds == {"cam": "stream", "plain": "array"}
    listed = json.loads(run(cli_bin, "ls", "--json", socket=sock).stdout)
    assert [(o["name"], o["kind"]) for o in listed] == [("cam", "stream"), ("plain", "array")]
    assert json.loads(run(cli_bin, "info", "cam", "--json", socket=sock).stdout)["published"] == 50
    text = run(cli_bin, "info", "cam", socket=sock).stdout
    assert "kind:        stream" in text and "published:   50" in text
    # A stack of the wrong frame shape publishes nothing, with one clear line.
    np.save(tmp_path / "bad.npy", sample("<i2", (4, 5, 3)))
    bad = run(cli_bin, "pub", "cam", str(tmp_path / "bad.npy"), socket=sock, check=False)
    assert bad.returncode == 2 and "nothing was published" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    wrong = run(cli_bin, "pub", "plain", str(stack), socket=sock, check=False)
    assert wrong.returncode == 2 and "not a stream" in wrong.stderr


def test_sub_of_a_lossy_stream_reports_what_it_missed(cli_bin, daemon, tmp_path):
    sock = daemon.socket
    run(cli_bin, "create", "fast", "--stream", "--slots", "3", "--dtype", "u1", "--shape", "64",
        socket=sock)
    sub = subprocess.Popen([cli_bin, "--socket", sock, "sub", "fast", "--seconds", "3"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    c = mmshare.connect(sock)
    for _ in range(500):
        if c.describe("fast").subscribers:
            break
        time.sleep(0.02)
    pub = c.publisher("fast")
    for n in range(2000):
        pub.send(np.full(64, n % 256, np.uint8))
    stdout, stderr = sub.communicate(timeout=60)
    assert sub.returncode == 0, stderr
    m = re.search(r"received (\d+) frames .* missed (\d+)", stdout)
    assert m, stdout
    assert int(m.group(1)) + int(m.group(2)) == 2000, stdout


def test_top_json_and_watch_of_a_stream_show_rates_and_subscribers(cli_bin, daemon):
    sock = daemon.socket
    c = mmshare.connect(sock)
    c.create_stream("live", "u1", (1024,), slots=4)
    arr = c.create("state", "<f4", (16,))
    sub = c.subscribe("live")
    pub = c.publisher("live")
    stop = threading.Event()

    def produce():
        while not stop.is_set():
            pub.send(np.zeros(1024, np.uint8))
            with arr.write() as v:
                v[:] = 1
            time.sleep(0.002)

    t = threading.Thread(target=produce)
    t.start()
    try:
        top = json.loads(run(cli_bin, "top", "--json", "--interval", "0.5", socket=sock).stdout)
        rows = {r["name"]: r for r in top}
        assert set(rows) == {"live", "state"}
        live, state = rows["live"], rows["state"]
        assert live["kind"] == "stream" and state["kind"] == "array"
        assert live["updates_per_s"] > 0 and state["updates_per_s"] > 0
        assert live["gb_per_s"] > 0 and live["subscribers"] == 1 and live["writer"] == os.getpid()
        assert live["max_lag"] >= 0 and state["subscribers"] == 0
        w = subprocess.Popen([cli_bin, "--socket", sock, "watch", "live", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = json.loads(w.stdout.readline())
        finally:
            w.kill()
            w.wait(timeout=30)
        assert line["kind"] == "stream" and line["frames_per_s"] > 0
        assert [s["mode"] for s in line["subscribers"]] == ["lossy"]
    finally:
        stop.set()
        t.join(30)
    del sub


@pytest.mark.parametrize("args,needle,status", [
    (["info", "ghost"], 'no array named "ghost"', 3),
    (["rm", "ghost"], 'no array named "ghost"', 3),
    (["get", "ghost", "/tmp/never.npy"], 'no array named "ghost"', 3),
    (["put", "ghost", "/nonexistent/in.npy"], "/nonexistent/in.npy", 3),
    (["create", "x", "--dtype", "float33", "--shape", "2"], "float33", 2),
    (["create", "x", "--dtype", ">f4", "--shape", "2"], ">f4", 2),
    (["create", "x", "--dtype", "f4", "--shape", "2,-1"], "-1", 2),
    (["create", "x", "--dtype", "f4", "--shape", ",".join(["1"] * 33)], "33 dimensions", 2),
    (["create", "../x", "--dtype", "f4", "--shape", "2"], "../x", 2),
])
def test_cli_errors_are_one_clear_line(cli_bin, daemon, args, needle, status):
    """One line, and the exit status of its class (listed in `mmshare --help`)."""
    p = run(cli_bin, *args, socket=daemon.socket, check=False)
    assert p.returncode == status, p
    assert p.stderr.startswith("mmshare: ") and p.stderr.count("\n") == 1, p.stderr
    assert needle in p.stderr, p.stderr
    assert "panicked" not in p.stderr and "backtrace" not in p.stderr.lower()


def test_no_daemon_names_the_socket(cli_bin, tmp_path):
    sock = str(tmp_path / "nobody-home.sock")
    p = run(cli_bin, "ls", socket=sock, check=False)
    assert p.returncode == 8 and p.stderr.count("\n") == 1  # no daemon answers
    assert sock in p.stderr and "mmshared" in p.stderr, p.stderr


def test_demo_with_a_running_daemon(cli_bin, daemon):
    p = run(cli_bin, "demo", "--seconds", "2", "--fps", "200", socket=daemon.socket)
    assert "import mmshare" in p.stdout and "client.subscribe(" in p.stdout
    published = int(re.search(r"producer: published (\d+) frames", p.stdout).group(1))
    assert published > 0
    lossless = re.search(r"lossless: received (\d+) frames, missed (\d+) \(.*?\); (\d+) damaged",
                         p.stdout)
    assert lossless and lossless.groups() == (str(published), "0", "0"), p.stdout
    lossy = re.search(r"lossy: received (\d+) frames, missed (\d+) \(.*?\); (\d+) damaged",
                      p.stdout)
    assert lossy and lossy.group(3) == "0", p.stdout
    # The slow consumer accounts for every frame (the end-of-stream frame aside).
    assert int(lossy.group(1)) + int(lossy.group(2)) == published, p.stdout
    assert re.search(r"latest: received \d+ frames, missed \d+ \(skipped by design.*?\); 0 damaged",
                     p.stdout)
    # No empty status line while the processes start.
    assert not re.search(r"^\s*\d+ s$", p.stdout, re.M), p.stdout
    assert "p50" in p.stdout and "frames/s" in p.stdout
    assert mmshare.connect(daemon.socket).list_all() == []  # it cleaned up


def test_demo_starts_its_own_daemon_when_none_is_running(cli_bin, tmp_path):
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("MMSHARE_SOCKET", None)
    p = run(cli_bin, "demo", "--seconds", "1", "--fps", "100", env=env)
    assert "started one inside this process" in p.stdout
    assert re.search(r"lossless: received \d+ frames, missed 0 \(.*?\); 0 damaged", p.stdout)


def test_get_follows_symlinks_and_writes_to_stdout(cli_bin, daemon, tmp_path):
    data = np.arange(5, dtype="<i2")
    np.save(tmp_path / "in.npy", data)
    run(cli_bin, "put", "s", str(tmp_path / "in.npy"), "--create", socket=daemon.socket)
    real = tmp_path / "real.npy"
    real.write_bytes(b"")
    os.chmod(real, 0o640)
    link = tmp_path / "link.npy"
    link.symlink_to(real)
    run(cli_bin, "get", "s", str(link), socket=daemon.socket)
    assert link.is_symlink() and oct(real.stat().st_mode & 0o777) == "0o640"
    np.testing.assert_array_equal(np.load(link), data)
    p = subprocess.run([cli_bin, "--socket", daemon.socket, "get", "s", "-"], capture_output=True, timeout=60)
    assert p.returncode == 0
    import io
    np.testing.assert_array_equal(np.load(io.BytesIO(p.stdout)), data)


def test_closed_stdout_and_usage_errors_stay_one_line(cli_bin, daemon):
    run(cli_bin, "create", "p", "--dtype", "u1", "--shape", "1", socket=daemon.socket)
    # `mmshare info p | head -0`: the reader is gone before we write.
    p = subprocess.run(f"'{cli_bin}' --socket '{daemon.socket}' info p | head -c 0", shell=True,
                       capture_output=True, text=True, timeout=60)
    assert "panicked" not in p.stderr and "internal error" not in p.stderr, p.stderr
    p = run(cli_bin, "create", "q", "--dtype", "u1", "--shape", "1", "--bogus", socket=daemon.socket, check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--bogus" in p.stderr, p.stderr


def test_bare_mmshare_prints_help_and_exits_2(cli_bin):
    p = run(cli_bin, check=False)
    assert p.returncode == 2, p
    assert "Usage: mmshare" in p.stderr and "create" in p.stderr, p.stderr


def test_rm_takes_several_names_and_reports_each_failure(cli_bin, daemon):
    for n in ["r1", "r2", "r3"]:
        run(cli_bin, "create", n, "--dtype", "u1", "--shape", "1", socket=daemon.socket)
    p = run(cli_bin, "rm", "r1", "ghost", "r3", socket=daemon.socket, check=False)
    assert p.returncode == 3  # the failure's class: not found
    assert p.stdout.split("\n")[:2] == ["deleted r1", "deleted r3"], p.stdout
    assert p.stderr.count("\n") == 1 and 'no array named "ghost"' in p.stderr, p.stderr
    assert [a.name for a in mmshare.connect(daemon.socket).list()] == ["r2"]
    assert run(cli_bin, "rm", socket=daemon.socket, check=False).returncode == 2


def test_info_shows_the_access_mode_and_the_file_mode(cli_bin, daemon):
    run(cli_bin, "create", "fm", "--dtype", "u1", "--shape", "2", "--mode", "0644",
        socket=daemon.socket)
    text = run(cli_bin, "info", "fm", socket=daemon.socket).stdout
    assert re.search(r"^mode: +0644 ", text, re.M) and re.search(r"^file mode: +0600 ", text, re.M), text
    ls = run(cli_bin, "ls", socket=daemon.socket).stdout
    assert " 0644 " in ls, ls


@pytest.mark.parametrize("shape", ["3,,4", "3,4,", ",3", "3x,4", "(3,,)"])
def test_shape_with_an_empty_dimension_is_refused(cli_bin, daemon, shape):
    p = run(cli_bin, "create", "s", "--dtype", "u1", "--shape", shape, socket=daemon.socket,
            check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert repr(shape).strip("'") in p.stderr and "empty dimension" in p.stderr, p.stderr
    assert mmshare.connect(daemon.socket).list() == []


@pytest.mark.parametrize("shape,expect", [("7,", [7]), ("(7,)", [7]), ("3,4", [3, 4]), ("", [])])
def test_python_style_shapes_are_still_accepted(cli_bin, daemon, shape, expect):
    out = run(cli_bin, "create", "s", "--dtype", "u1", "--shape", shape, socket=daemon.socket).stdout
    assert mmshare.connect(daemon.socket).stat("s").shape == tuple(expect)
    assert "(7,)" in out if expect == [7] else True


def test_create_exist_ok_says_exists_and_refuses_a_different_array(cli_bin, daemon):
    args = ["create", "e", "--dtype", "f4", "--shape", "3,4", "--memory", "--mode", "0644"]
    assert run(cli_bin, *args, socket=daemon.socket).stdout.startswith("created e ")
    p = run(cli_bin, *args, "--exist-ok", socket=daemon.socket)
    assert p.stdout.startswith("exists e ") and p.stderr == "", (p.stdout, p.stderr)
    # A different access mode is not applied, and not silently either.
    p = run(cli_bin, *args[:-1], "0600", "--exist-ok", socket=daemon.socket)
    assert p.stdout.startswith("exists e ") and "mode 0644" in p.stdout, p.stdout
    assert "0600 was not applied" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    # A different backing, dtype or shape is refused, naming both.
    for other, needle in [(["--dtype", "f4", "--shape", "3,4"], "in a file"),
                          (["--dtype", "f8", "--shape", "3,4", "--memory"], "<f8"),
                          (["--dtype", "f4", "--shape", "4,3", "--memory"], "(4, 3)")]:
        base = ["create", "e", "--exist-ok"]
        p = run(cli_bin, *base, *other, socket=daemon.socket, check=False)
        assert p.returncode == 9 and p.stderr.count("\n") == 1, p.stderr  # the name is taken
        assert "already exists as <f4 (3, 4) order C in memory" in p.stderr and needle in p.stderr, p.stderr
    assert mmshare.connect(daemon.socket).stat("e").backing == "memory"


def _held_write_side(socket, name):
    """Holds the write side of `name` from this process until the returned event is set."""
    arr = mmshare.connect(socket).open(name, "r+")
    ready, release = threading.Event(), threading.Event()

    def hold():
        with arr.write():
            ready.set()
            release.wait(60)
    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert ready.wait(30)
    return release, t


def test_a_held_write_side_is_reported_with_its_pid_and_seconds(cli_bin, daemon, tmp_path):
    run(cli_bin, "create", "h", "--dtype", "u1", "--shape", "4", socket=daemon.socket)
    tmp_path = tmp_path / "files"
    tmp_path.mkdir()
    np.save(tmp_path / "in.npy", np.arange(4, dtype="u1"))
    release, t = _held_write_side(daemon.socket, "h")
    try:
        for args, what in [(["put", "h", str(tmp_path / "in.npy")], "nothing was written"),
                           (["get", "h", str(tmp_path / "out.npy")], "nothing was saved")]:
            p = run(cli_bin, *args, "--timeout", "0.5", socket=daemon.socket, check=False)
            assert p.returncode == 5 and p.stderr.count("\n") == 1, p.stderr  # timed out
            assert f"held by pid {os.getpid()} for 0.5 s" in p.stderr and what in p.stderr, p.stderr
        p = run(cli_bin, "get", "h", "x.npy", "--timeout", "soon", socket=daemon.socket, check=False)
        assert p.returncode == 2 and "soon" in p.stderr
    finally:
        release.set()
        t.join(30)
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]


def _wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"watchdog: no {what} within {timeout} s"
        time.sleep(0.005)


def test_ctrl_c_during_put_says_what_happened_and_how_to_repair(cli_bin, daemon, tmp_path):
    # Waiting for a held write side: nothing was written, and it says so.
    run(cli_bin, "create", "c", "--dtype", "u1", "--shape", "4", socket=daemon.socket)
    np.save(tmp_path / "small.npy", np.arange(4, dtype="u1"))
    release, t = _held_write_side(daemon.socket, "c")
    try:
        p = subprocess.Popen([cli_bin, "--socket", daemon.socket, "put", "c",
                              str(tmp_path / "small.npy")], stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)  # let it start waiting (either way it must not write)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 130 and "interrupted" in err and "nothing was written to c" in err, (p.returncode, err)
    finally:
        release.set()
        t.join(30)
    # In the middle of a write (data streamed on stdin, so the test decides where it stops):
    # the array is published TORN at once (the write side is released) and stderr says how to
    # repair it.
    n = 24 << 20
    run(cli_bin, "create", "big", "--dtype", "u1", "--shape", str(n), socket=daemon.socket)
    data = np.full(n, 7, dtype="u1")
    np.save(tmp_path / "big.npy", data)
    raw = (tmp_path / "big.npy").read_bytes()
    head = len(raw) - n
    p = subprocess.Popen([cli_bin, "--socket", daemon.socket, "put", "big", "-"],
                         stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(raw[:head + (8 << 20)])  # the header and the first 8 MiB chunk
    p.stdin.flush()
    view = mmshare.connect(daemon.socket).open("big")
    _wait_for(lambda: view.array[0] == 7, what="first chunk written")
    p.send_signal(signal.SIGINT)
    try:  # more data, in case the signal did not interrupt its read of chunk 2
        p.stdin.write(raw[head + (8 << 20):head + (16 << 20)])
        p.stdin.close()
    except BrokenPipeError:
        pass
    err = p.stderr.read().decode()
    p.wait(timeout=30)
    assert p.returncode == 130, (p.returncode, err)
    assert err.count("\n") == 1 and "big is marked TORN" in err, err
    assert "repair it with: mmshare put big -" in err, err
    assert view.torn
    # The write side is free: the repair works at once.
    run(cli_bin, "put", "big", str(tmp_path / "big.npy"), "--timeout", "5", socket=daemon.socket)
    assert not view.torn


def _fds_in(pid, directory):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            out.append(target)
    return out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_an_interrupted_get_leaves_no_temporary_file(cli_bin, daemon, tmp_path, sig):
    run(cli_bin, "create", "k", "--dtype", "u1", "--shape", "4", socket=daemon.socket)
    out = tmp_path / "out"
    out.mkdir()
    release, t = _held_write_side(daemon.socket, "k")  # the get waits with its snapshot file open
    try:
        p = subprocess.Popen([cli_bin, "--socket", daemon.socket, "get", "k", str(out / "k.npy")],
                             stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: _fds_in(p.pid, out), what="snapshot file open in the output directory")
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
    finally:
        release.set()
        t.join(30)
    assert os.listdir(out) == [], os.listdir(out)
    if sig == signal.SIGINT:
        assert p.returncode == 130 and "nothing was saved" in err, (p.returncode, err)


class _Lines:
    """A process's output lines, read on a thread, with timeouts."""

    def __init__(self, stream):
        self.q = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            self.q.put(line)
        self.q.put(None)

    def expect(self, needle, timeout=30):
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            line = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"ended before {needle!r}; saw {seen}"
            seen.append(line)
            if needle in line:
                return line


def test_watch_stops_when_the_array_is_deleted_and_follows_a_recreated_one(cli_bin, daemon):
    c = mmshare.connect(daemon.socket)
    a = c.create("w", "u1", (4,))
    p = subprocess.Popen([cli_bin, "--socket", daemon.socket, "watch", "w", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = _Lines(p.stdout), _Lines(p.stderr)
        time.sleep(0.3)
        with a.write() as v:
            v[:] = 1
        assert json.loads(out.expect('"version"'))["version"] == 1
        a.close()
        c.delete("w")
        b = c.create("w", "u1", (4,))
        err.expect("created again")
        with b.write() as v:
            v[:] = 2
        assert json.loads(out.expect('"version"'))["version"] == 1
        b.close()
        c.delete("w")
        assert "was deleted" in err.expect("was deleted")
        assert p.wait(timeout=30) == 3  # not found any more
    finally:
        p.kill()
        p.wait()


def test_demo_prints_its_python_while_the_stream_exists(cli_bin, daemon):
    """The Python the demo prints attaches to its stream while it runs, and receives frames
    (each frame's first 8 bytes are its number)."""
    p = subprocess.Popen([cli_bin, "--socket", daemon.socket, "demo", "--seconds", "4",
                          "--fps", "100"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = _Lines(p.stdout)
        line = out.expect("client.subscribe(", timeout=60)
        name = re.search(r'client\.subscribe\("([^"]+)"\)', line).group(1)
        sub = mmshare.connect(daemon.socket).subscribe(name)
        with sub.receive(timeout=30) as s:
            assert s.array.shape == (480, 640, 3)
            assert int(s.array.reshape(-1)[:8].view("<u8")[0]) == s.number
        del sub
        assert "lossless: received" in out.expect("lossless: received", timeout=60)
        assert p.wait(timeout=60) == 0
    finally:
        p.kill()
        p.wait()


# The documentation a new user starts from (README.md, the examples' README, the benchmark
# figures) is checked here too: it must stand on its own and match the code.

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_docs_reference_only_files_in_the_repository():
    sources = [REPO / "README.md", REPO / "docs" / "BENCHMARKS.md",
               REPO / "mmshare-lib" / "src" / "backoff.rs",
               *sorted((REPO / "mmshare-lib" / "examples").rglob("*.md")),
               *sorted((REPO / "clients" / "cli" / "src").glob("*.rs"))]
    missing = []
    for src in sources:
        for ref in set(re.findall(r"[\w./-]*[A-Za-z_]\.md\b", src.read_text())):
            candidates = [REPO / ref, src.parent / ref, REPO / "docs" / ref]
            if not any(c.is_file() for c in candidates):
                missing.append(f"{src.relative_to(REPO)}: {ref}")
    assert missing == []


def test_benchmark_figures_name_the_commit_and_its_date():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: commits cannot be looked up")
    text = (REPO / "docs" / "BENCHMARKS.md").read_text()
    runs = re.findall(r"[Rr]uns? of \d{4}-\d\d-\d\d[^:]*:", text)
    assert runs, "no dated runs found"
    for run_text in runs:
        assert "commit" in run_text, f"a run is not dated by a commit: {run_text!r}"
    cited = re.findall(r"commit ([0-9a-f]{7,40}) \(committed (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", text)
    assert len(cited) >= len(runs)
    for sha, when in cited:
        p = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%cd",
                            "--date=format-local:%Y-%m-%d %H:%M", sha],
                           capture_output=True, text=True, env=dict(os.environ, TZ="UTC"),
                           timeout=60)
        assert p.returncode == 0, f"commit {sha} is not in the history: {p.stderr}"
        assert p.stdout.strip() == when, (sha, p.stdout, when)
    # Every bare "commit abc1234" mentioned exists too.
    for sha in set(re.findall(r"\b(?:commit|in) ([0-9a-f]{7,40})\b", text)):
        p = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{sha}^{{commit}}"],
                           capture_output=True, timeout=60)
        assert p.returncode == 0, f"commit {sha} is not in the history"


def test_readme_rust_quick_start_is_the_compiled_example():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Quick start in Rust"):readme.index("## Quick start from the shell")]
    assert re.search(r'^mmshare = \{ path = "[^"]*mmshare-lib" \}$', section, re.M), section
    block = section[section.index("```rust\n") + len("```rust\n"):]
    block = block[:block.index("```")]
    example = (REPO / "mmshare-lib" / "examples" / "quickstart" / "main.rs").read_text()
    begin, end = "// README quick start: begin\n", "// README quick start: end"
    body = example[example.index(begin) + len(begin):example.index(end)]
    assert block == body, "README's Rust quick start differs from examples/quickstart/main.rs"
    assert "fn main() -> Result<" in block


def test_every_whole_rust_program_in_the_readme_is_a_compiled_example():
    """Each ```rust block of README.md with a `main` is the body of an example between its
    `// README: begin` and `// README: end` markers, which `cargo test` compiles."""
    readme = (REPO / "README.md").read_text()
    programs = [b for b in re.findall(r"```rust\n(.*?)```", readme, re.S) if "fn main" in b]
    bodies = []
    for path in (REPO / "mmshare-lib" / "examples").glob("*/main.rs"):
        text = path.read_text()
        for begin, end in [("// README: begin\n", "// README: end"),
                           ("// README quick start: begin\n", "// README quick start: end")]:
            if begin in text:
                bodies.append(text[text.index(begin) + len(begin):text.index(end)])
    assert len(programs) >= 3
    for program in programs:
        assert program in bodies, f"not an example's marked body:\n{program}"


def test_examples_readme_builds_the_examples():
    text = (REPO / "mmshare-lib" / "examples" / "README.md").read_text()
    builds = re.findall(r"^cargo build[^\n]*$", text, re.M)
    assert builds and all("--examples" in b for b in builds), builds


def test_the_exit_status_names_a_busy_stream_and_a_reached_limit(cli_bin, daemon_bin, tmp_path):
    """Busy (6): a second publisher while one is attached. Limit (7): a create past
    --max-arrays. Both listed in `mmshare --help`."""
    from conftest import Daemon
    d = Daemon(daemon_bin, tmp_path, "--max-arrays", "1")
    try:
        c = mmshare.connect(d.socket)
        c.create_stream("busy", "u1", (4,))
        pub = c.publisher("busy")
        np.save(tmp_path / "frames.npy", np.zeros((2, 4), "u1"))
        p = run(cli_bin, "pub", "busy", str(tmp_path / "frames.npy"), socket=d.socket, check=False)
        assert p.returncode == 6 and p.stderr.count("\n") == 1, p
        p = run(cli_bin, "create", "more", "--dtype", "u1", "--shape", "1", socket=d.socket,
                check=False)
        assert p.returncode == 7 and "--max-arrays 1" in p.stderr, p
        del pub
    finally:
        d.stop()
    help_text = run(cli_bin, "--help").stdout
    for line in ["3    no such array, stream or file", "6    busy", "7    a limit is reached"]:
        assert line in help_text, help_text


def test_completions_complete_subcommands_and_flags_in_bash(cli_bin):
    """The bash script, sourced into a real bash, completes a subcommand and a flag; the
    other shells' scripts are generated for the right command."""
    def complete(*words):
        script = (f'source <("{cli_bin}" completions bash); COMP_WORDS=({" ".join(words)}); '
                  f'COMP_CWORD={len(words) - 1}; _mmshare mmshare "{words[-1]}" "{words[-2]}"; '
                  'echo "${COMPREPLY[@]}"')
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                              timeout=60, check=True).stdout.split()
    assert "create" in complete("mmshare", "cr")
    assert complete("mmshare", "create", "x", "--dt") == ["--dtype"]
    assert "#compdef mmshare" in run(cli_bin, "completions", "zsh").stdout
    assert "complete -c mmshare" in run(cli_bin, "completions", "fish").stdout
    assert "#compdef mmshared" in run(cli_bin, "completions", "zsh", "--daemon").stdout
    bad = run(cli_bin, "completions", "tcsh", check=False)
    assert bad.returncode == 2 and "tcsh" in bad.stderr


def test_man_pages_are_written_for_every_command_and_render_cleanly(cli_bin, tmp_path):
    out = run(cli_bin, "man", str(tmp_path / "man1")).stdout.split()
    names = sorted(pathlib.Path(p).name for p in out)
    assert {"mmshare.1", "mmshare-create.1", "mmshare-sub.1", "mmshare-completions.1",
            "mmshared.1"} <= set(names), names
    assert not any("__demo" in n for n in names), names
    for page in out:
        assert pathlib.Path(page).read_text().startswith(".ie"), page
    if shutil.which("groff"):
        # -ww: every warning; -z: no output. A clean page says nothing.
        lint = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", *out],
                              capture_output=True, text=True, timeout=60)
        assert lint.returncode == 0 and lint.stderr == "", lint.stderr
        text = subprocess.run(["groff", "-man", "-Tutf8", str(tmp_path / "man1" / "mmshare.1")],
                              capture_output=True, text=True, timeout=60).stdout
        assert "Exit status:" in text and "no daemon answers at the socket" in text


def test_sub_wait_pub_wait_subscribers_and_ls_watch(cli_bin, daemon, tmp_path):
    """`sub --wait` subscribes once the stream exists; `pub --wait-subscribers 1` publishes
    once that subscriber is attached, so a lossless `sub` started before the stream gets every
    frame; `ls --watch` lists, then prints each change (JSON lines with --json)."""
    sock = daemon.socket
    watch = subprocess.Popen([cli_bin, "--socket", sock, "ls", "--watch", "--json", "cam"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(watch.stdout.readline()) == []  # the listing: nothing yet
    rec = tmp_path / "rec.npy"
    sub = subprocess.Popen([cli_bin, "--socket", sock, "sub", "cam", "--lossless", "--wait", "60",
                            "--count", "20", "-o", str(rec)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run(cli_bin, "create", "cam", "--stream", "--dtype", "u1", "--shape", "8", "--history", "4",
        socket=sock)
    frames = sample("|u1", (20, 8), seed=3)
    np.save(tmp_path / "f.npy", frames)
    out = run(cli_bin, "pub", "cam", str(tmp_path / "f.npy"), "--wait-subscribers", "1",
              socket=sock).stdout
    assert out.startswith("published 20 frames (0..20)"), out
    stdout, stderr = sub.communicate(timeout=60)
    assert sub.returncode == 0, stderr
    assert "received 20 frames (0..20) from cam, missed 0" in stdout, stdout
    np.testing.assert_array_equal(np.load(rec), frames)
    run(cli_bin, "rm", "cam", socket=sock)
    # Lines are read by a thread (select() on a buffered pipe misses lines already buffered).
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in watch.stdout], daemon=True).start()
    events = []
    while len(events) < 4:
        try:
            events.append(json.loads(lines.get(timeout=30)))
        except queue.Empty:
            break
    assert len(events) == 4, events
    assert events[0] == {"event": "created", "name": "cam", "detail": "stream"}, events
    assert [e["detail"] for e in events if e["event"] == "subscribers"] == [1, 0], events
    assert {"event": "deleted", "name": "cam", "detail": None} in events[1:], events
    watch.send_signal(signal.SIGINT)
    watch.communicate(timeout=30)
    assert watch.returncode == 0
    # --wait that runs out: the timeout exit status, naming the stream.
    late = run(cli_bin, "sub", "nothing", "--wait", "0.2", socket=sock, check=False)
    assert late.returncode == 5 and '"nothing"' in late.stderr, late.stderr


def test_history_and_start_points_from_the_shell(cli_bin, daemon, tmp_path):
    """`create --history`, shown by `info`; `sub --from oldest` records the kept frames,
    `--from N` resumes and reports what it missed."""
    sock = daemon.socket
    run(cli_bin, "create", "h", "--stream", "--dtype", "<u2", "--shape", "4", "--slots", "8",
        "--history", "5", socket=sock)
    info = json.loads(run(cli_bin, "info", "h", "--json", socket=sock).stdout)
    assert info["history"] == 5
    assert "the newest 5 frames are kept" in run(cli_bin, "info", "h", socket=sock).stdout
    frames = sample("<u2", (30, 4), seed=5)
    np.save(tmp_path / "f.npy", frames)
    run(cli_bin, "pub", "h", str(tmp_path / "f.npy"), socket=sock)
    out = run(cli_bin, "sub", "h", "--from", "oldest", "--seconds", "0.5",
              "-o", str(tmp_path / "old.npy"), socket=sock).stdout
    got = np.load(tmp_path / "old.npy")
    assert len(got) >= 5, out
    np.testing.assert_array_equal(got, frames[30 - len(got):])
    out = run(cli_bin, "sub", "h", "--from", "10", "--seconds", "0.5", socket=sock).stdout
    first = int(re.search(r"\((\d+)\.\.30\)", out).group(1))
    assert f"missed {first - 10}" in out, out
    bad = run(cli_bin, "sub", "h", "--from", "newest", socket=sock, check=False)
    assert bad.returncode == 2 and "next, oldest or a frame number" in bad.stderr
    too_much = run(cli_bin, "create", "h2", "--stream", "--dtype", "u1", "--shape", "4",
                   "--slots", "4", "--history", "3", socket=sock, check=False)
    assert too_much.returncode == 2 and "at most 2" in too_much.stderr, too_much.stderr


def test_fortran_order_streams_pub_and_sub_with_the_frames_on_the_last_axis(cli_bin, daemon,
                                                                            tmp_path):
    """A Fortran-order stream of (3, 4) frames takes a Fortran-order stack of shape (3, 4, N)
    and records one; a C-order stack is refused with a message that says what to give."""
    sock = daemon.socket
    run(cli_bin, "create", "fs", "--stream", "--dtype", "<f4", "--shape", "3,4", "--order", "F",
        socket=sock)
    frames = sample("<f4", (6, 3, 4), seed=9)
    stack = np.asfortranarray(np.stack(list(frames), axis=-1))
    np.save(tmp_path / "f.npy", stack)
    np.save(tmp_path / "c.npy", frames)
    bad = run(cli_bin, "pub", "fs", str(tmp_path / "c.npy"), socket=sock, check=False)
    assert bad.returncode == 2 and "(3, 4, 6)" in bad.stderr and "axis=-1" in bad.stderr, bad.stderr
    sub = subprocess.Popen([cli_bin, "--socket", sock, "sub", "fs", "--lossless", "--count", "6",
                            "-o", str(tmp_path / "rec.npy")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run(cli_bin, "pub", "fs", str(tmp_path / "f.npy"), "--wait-subscribers", "1", socket=sock)
    _, stderr = sub.communicate(timeout=60)
    assert sub.returncode == 0, stderr
    rec = np.load(tmp_path / "rec.npy")
    assert rec.shape == (3, 4, 6) and rec.flags.f_contiguous
    np.testing.assert_array_equal(rec, stack)


def _ffmpeg():
    path = shutil.which("ffmpeg")
    assert path, "ffmpeg is needed (Debian: apt-get install ffmpeg; ./scripts/test installs it)"
    return path


def test_ffmpeg_to_pub_raw_to_sub_raw_to_ffmpeg_carries_every_frame(cli_bin, daemon, tmp_path):
    """A generated test video (ffmpeg's testsrc) piped as rgb24 into `pub NAME -`, and `sub
    --raw -o -` piped into an ffmpeg that encodes it losslessly (FFV1): the encoded video has
    every frame, each identical to the source's (ffmpeg's per-frame MD5s)."""
    ffmpeg = _ffmpeg()
    sock = daemon.socket
    frames = 60
    run(cli_bin, "create", "video", "--stream", "--dtype", "u1", "--shape", "240,320,3",
        "--slots", "8", socket=sock)
    src = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-frames:v", str(frames)]
    out = tmp_path / "out.mkv"
    sub = subprocess.Popen([cli_bin, "--socket", sock, "sub", "video", "--lossless", "--wait",
                            "60", "--count", str(frames), "--raw", "-o", "-"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    enc = subprocess.Popen([ffmpeg, "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt",
                            "rgb24", "-s", "320x240", "-r", "25", "-i", "-", "-c:v", "ffv1",
                            str(out)], stdin=sub.stdout, stderr=subprocess.PIPE)
    sub.stdout.close()
    gen = subprocess.Popen([ffmpeg, "-loglevel", "error", *src, "-f", "rawvideo", "-pix_fmt",
                            "rgb24", "-"], stdout=subprocess.PIPE)
    pub = subprocess.run([cli_bin, "--socket", sock, "pub", "video", "-", "--wait-subscribers",
                          "1"], stdin=gen.stdout, capture_output=True, text=True, timeout=120)
    gen.stdout.close()
    assert gen.wait(60) == 0
    assert pub.returncode == 0, pub.stderr
    assert f"published {frames} frames (0..{frames})" in pub.stderr, pub.stderr
    assert enc.wait(120) == 0, enc.stderr.read()
    assert sub.wait(60) == 0
    report = sub.stderr.read().decode()
    assert f"received {frames} frames (0..{frames}) from video, missed 0" in report, report

    def md5s(*args):
        got = subprocess.run([ffmpeg, "-loglevel", "error", *args, "-f", "framemd5",
                              "-pix_fmt", "rgb24", "-"], capture_output=True, text=True,
                             check=True).stdout
        return [line.rsplit(",", 1)[1].strip() for line in got.splitlines()
                if line and not line.startswith("#")]

    want = md5s(*src)
    assert len(want) == frames
    assert md5s("-i", str(out)) == want


def test_raw_pub_and_sub_files_and_their_errors(cli_bin, daemon, tmp_path):
    """`pub --raw FILE` and `sub --raw -o FILE` round trip; input that ends mid-frame publishes
    the whole frames before it and says where it ended; `-o -` without --raw is refused."""
    sock = daemon.socket
    run(cli_bin, "create", "r", "--stream", "--dtype", "<u2", "--shape", "3,4", socket=sock)
    frames = sample("<u2", (7, 3, 4), seed=11)
    (tmp_path / "in.raw").write_bytes(frames.tobytes())
    sub = subprocess.Popen([cli_bin, "--socket", sock, "sub", "r", "--lossless", "--count", "7",
                            "--raw", "-o", str(tmp_path / "out.raw")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run(cli_bin, "pub", "r", str(tmp_path / "in.raw"), "--raw", "--wait-subscribers", "1",
        socket=sock)
    out, err = sub.communicate(timeout=60)
    assert sub.returncode == 0, err
    assert (tmp_path / "out.raw").read_bytes() == frames.tobytes()
    (tmp_path / "cut.raw").write_bytes(frames.tobytes()[:24 * 2 + 5])
    cut = run(cli_bin, "pub", "r", str(tmp_path / "cut.raw"), "--raw", socket=sock, check=False)
    assert cut.returncode == 2 and "in the middle of frame 9: 5 of its 24 bytes" in cut.stderr, \
        cut.stderr
    assert json.loads(run(cli_bin, "info", "r", "--json", socket=sock).stdout)["published"] == 9
    npy = run(cli_bin, "sub", "r", "-o", "-", socket=sock, check=False)
    assert npy.returncode == 2 and "add --raw" in npy.stderr
    loop = run(cli_bin, "pub", "r", "-", "--loop", socket=sock, check=False)
    assert loop.returncode == 2 and "standard input cannot be read twice" in loop.stderr


def test_pub_timeout_is_the_loans_wait_for_a_stalled_lossless_subscriber(cli_bin, daemon,
                                                                         tmp_path, worker):
    """`pub --timeout S`: a lossless subscriber that stops taking frames makes `pub` give up
    after S seconds with exit status 5 and a message naming how far behind it is."""
    sock = daemon.socket
    run(cli_bin, "create", "stall", "--stream", "--dtype", "<u8", "--shape", "64", "--slots", "3",
        socket=sock)
    holder = subprocess.Popen([worker, "stream-hold", sock, "stall", "lossless"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().startswith("subscribed")
        np.save(tmp_path / "f.npy", np.zeros((10, 64), np.uint64))
        p = run(cli_bin, "pub", "stall", str(tmp_path / "f.npy"), "--timeout", "0.3",
                socket=sock, check=False)
        assert p.returncode == 5, p.stderr
        assert "frames behind" in p.stderr, p.stderr
    finally:
        holder.kill()
        holder.wait()


def test_record_and_time_dtypes_from_the_shell(cli_bin, daemon, tmp_path):
    """A record array made from a .npy of records (`put --create`: padding, a subarray and a
    time field kept), saved back by `get`; a record stream fed by `pub` and recorded by
    `sub -o` as a .npy of records; times by name; `ls` cuts a long descr, `info` shows it."""
    sock = daemon.socket
    dt = np.dtype({"names": ["x", "v", "t"],
                   "formats": ["<f4", ("<u2", (3,)), "<M8[us]"],
                   "offsets": [0, 6, 16], "itemsize": 32})
    data = np.zeros((4, 2), dt)
    data["x"] = np.arange(8).reshape(4, 2) / 2
    data["v"] = np.arange(24).reshape(4, 2, 3)
    data["t"] = np.datetime64("2026-12-05T16:00:00", "us") + np.arange(8).reshape(4, 2)
    np.save(tmp_path / "in.npy", data)
    run(cli_bin, "put", "recs", str(tmp_path / "in.npy"), "--create", socket=sock)
    run(cli_bin, "get", "recs", str(tmp_path / "out.npy"), socket=sock)
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == dt
    for name in dt.names:
        np.testing.assert_array_equal(out[name], data[name])
    descr = repr(np.lib.format.dtype_to_descr(dt))
    assert f"dtype:       {descr}" in run(cli_bin, "info", "recs", socket=sock).stdout
    row = next(l for l in run(cli_bin, "ls", socket=sock).stdout.splitlines()
               if l.startswith("recs "))
    assert descr[:29] + "..." in row

    run(cli_bin, "create", "frames", "--stream", "--dtype", descr, "--shape", "2",
        "--history", "4", socket=sock)
    run(cli_bin, "pub", "frames", str(tmp_path / "in.npy"), socket=sock)
    run(cli_bin, "sub", "frames", "--from", "oldest", "--seconds", "0.5",
        "-o", str(tmp_path / "got.npy"), socket=sock)
    got = np.load(tmp_path / "got.npy")
    assert got.dtype == dt and got.shape == (4, 2)
    for name in dt.names:
        np.testing.assert_array_equal(got[name], data[name])

    run(cli_bin, "create", "when", "--dtype", "datetime64[ns]", "--shape", "2", socket=sock)
    assert json.loads(run(cli_bin, "info", "when", "--json", socket=sock).stdout)["dtype"] \
        == "<M8[ns]"
    bad = run(cli_bin, "create", "bad", "--dtype", "[('a', '<f4'), ('a', '<f4')]",
              "--shape", "1", socket=sock, check=False)
    assert bad.returncode != 0 and "appears twice" in bad.stderr, bad.stderr


def test_frame_headers_and_variable_frames_from_the_shell(cli_bin, daemon, tmp_path):
    """`create --stream --header DTYPE --variable`, shown by `info`; `sub -o` saves the frames'
    rows back to back, with `NAME.rows.npy` (rows per frame) and `NAME.headers.npy` (each
    frame's header) beside them, so `np.split` gives back every frame."""
    sock = daemon.socket
    header = "[('t', '<u8'), ('exposure', '<f4')]"
    out = run(cli_bin, "create", "cam", "--stream", "--dtype", "u2", "--shape", "5,3",
              "--header", header, "--variable", "--history", "6", socket=sock).stdout
    assert "up to (5, 3) with a [('t', '<u8'), ('exposure', '<f4')] header" in out, out
    info = json.loads(run(cli_bin, "info", "cam", "--json", socket=sock).stdout)
    assert info["header"] == header and info["variable"] is True
    text = run(cli_bin, "info", "cam", socket=sock).stdout
    assert f"header:      {header}" in text and "frames vary in length" in text
    c = mmshare.connect(sock)
    pub = c.publisher("cam")
    rows = [3, 0, 5, 1, 2]
    frames = [np.arange(r * 3, dtype="<u2").reshape(r, 3) + 100 * n for n, r in enumerate(rows)]
    for n, frame in enumerate(frames):
        pub.send(frame, header=(1000 + n, n / 4))
    run(cli_bin, "sub", "cam", "--from", "oldest", "--seconds", "0.5",
        "-o", str(tmp_path / "rec.npy"), socket=sock)
    got_rows = np.load(tmp_path / "rec.rows.npy")
    assert got_rows.tolist() == rows
    stacked = np.load(tmp_path / "rec.npy")
    assert stacked.shape == (sum(rows), 3)
    for frame, got in zip(frames, np.split(stacked, np.cumsum(got_rows)[:-1])):
        np.testing.assert_array_equal(got, frame)
    headers = np.load(tmp_path / "rec.headers.npy")
    assert headers["t"].tolist() == [1000 + n for n in range(5)]
    assert headers["exposure"].tolist() == [n / 4 for n in range(5)]
