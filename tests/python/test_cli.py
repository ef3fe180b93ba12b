"""The `mmshare` CLI as a user runs it: .npy round trips for every dtype, mismatches that
change nothing, --json output, clear one-line errors, and the demo."""

import json
import os
import subprocess

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


def test_mismatched_put_is_an_error_and_changes_nothing(cli_bin, daemon, tmp_path):
    run(cli_bin, "create", "m", "--dtype", "f4", "--shape", "2,3", socket=daemon.socket)
    good = np.arange(6, dtype="<f4").reshape(2, 3)
    np.save(tmp_path / "good.npy", good)
    run(cli_bin, "put", "m", str(tmp_path / "good.npy"), socket=daemon.socket)
    before = json.loads(run(cli_bin, "info", "m", "--json", socket=daemon.socket).stdout)["version"]
    for bad in [np.zeros((2, 3), "<f8"), np.zeros((3, 2), "<f4"), np.zeros((2, 3), "<f4", order="F")]:
        np.save(tmp_path / "bad.npy", bad)
        p = run(cli_bin, "put", "m", str(tmp_path / "bad.npy"), socket=daemon.socket, check=False)
        assert p.returncode == 1
        assert p.stderr.count("\n") == 1 and "nothing was written" in p.stderr, p.stderr
    after = json.loads(run(cli_bin, "info", "m", "--json", socket=daemon.socket).stdout)
    assert after["version"] == before
    np.testing.assert_array_equal(mmshare.connect(daemon.socket).open("m").read(), good)


def test_info_and_ls_json_fields(cli_bin, daemon):
    run(cli_bin, "create", "j", "--dtype", "uint16", "--shape", "4,4", "--memory", "--mode", "0644",
        socket=daemon.socket)
    info = json.loads(run(cli_bin, "info", "j", "--json", socket=daemon.socket).stdout)
    assert set(info) == {"name", "dtype", "shape", "order", "nbytes", "data_offset", "path",
                         "version", "backing", "owner_uid", "mode", "torn"}
    assert (info["dtype"], info["shape"], info["nbytes"], info["backing"], info["mode"]) == \
        ("<u2", [4, 4], 32, "memory", 0o644)
    m = np.memmap(info["path"], dtype=info["dtype"], mode="r", offset=info["data_offset"],
                  shape=tuple(info["shape"]))
    assert m.sum() == 0
    listed = json.loads(run(cli_bin, "ls", "--json", socket=daemon.socket).stdout)
    assert [a["name"] for a in listed] == ["j"]
    assert "j" in run(cli_bin, "ls", socket=daemon.socket).stdout
    run(cli_bin, "rm", "j", socket=daemon.socket)
    assert json.loads(run(cli_bin, "ls", "--json", socket=daemon.socket).stdout) == []


@pytest.mark.parametrize("args,needle", [
    (["info", "ghost"], 'no array named "ghost"'),
    (["rm", "ghost"], 'no array named "ghost"'),
    (["get", "ghost", "/tmp/never.npy"], 'no array named "ghost"'),
    (["create", "x", "--dtype", "float33", "--shape", "2"], "float33"),
    (["create", "x", "--dtype", ">f4", "--shape", "2"], ">f4"),
    (["create", "x", "--dtype", "f4", "--shape", "2,-1"], "-1"),
    (["create", "x", "--dtype", "f4", "--shape", ",".join(["1"] * 33)], "33 dimensions"),
    (["create", "../x", "--dtype", "f4", "--shape", "2"], "../x"),
])
def test_cli_errors_are_one_clear_line(cli_bin, daemon, args, needle):
    p = run(cli_bin, *args, socket=daemon.socket, check=False)
    assert p.returncode == 1
    assert p.stderr.startswith("mmshare: ") and p.stderr.count("\n") == 1, p.stderr
    assert needle in p.stderr, p.stderr
    assert "panicked" not in p.stderr and "backtrace" not in p.stderr.lower()


def test_no_daemon_names_the_socket(cli_bin, tmp_path):
    sock = str(tmp_path / "nobody-home.sock")
    p = run(cli_bin, "ls", socket=sock, check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1
    assert sock in p.stderr and "mmshared" in p.stderr, p.stderr


def test_demo_with_a_running_daemon(cli_bin, daemon):
    p = run(cli_bin, "demo", "--seconds", "1", socket=daemon.socket)
    assert "producer:" in p.stdout and "consumer:" in p.stdout and "0 inconsistent" in p.stdout
    assert "import mmshare" in p.stdout
    assert mmshare.connect(daemon.socket).list() == []  # it cleaned up


def test_demo_starts_its_own_daemon_when_none_is_running(cli_bin, tmp_path):
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("MMSHARE_SOCKET", None)
    p = run(cli_bin, "demo", "--seconds", "1", env=env)
    assert "started one inside this process" in p.stdout
    assert "0 inconsistent" in p.stdout


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
