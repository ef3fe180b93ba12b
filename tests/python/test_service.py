"""Request/response from Python, through a real daemon: a Python requester against a Rust
server process and a Rust requester process against a Python server (every answer checked),
zero-copy loans on both sides, out-of-order responses, a server killed with requests pending
(`ServerLost`), the limits, and bad input."""

import os
import subprocess
import time

import numpy as np
import pytest

import mmshare

from test_c_api import c_program  # noqa: F401  (the fixture that compiles tests/c/*.c)


def answer(x: np.ndarray) -> np.ndarray:
    """The Rust worker's server answer (tests/src/main.rs `service_answer`), on uint64."""
    x = x.astype(np.uint64)
    rotated = (x << np.uint64(17)) | (x >> np.uint64(47))
    return rotated ^ np.uint64(0x5555555555555555)


def pattern(tag: int, n: int = 8) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.uint64(tag) * np.uint64(0x9E3779B97F4A7C15) + np.arange(n, dtype=np.uint64)


def make(client, name, requesters=2, servers=1):
    return client.create_service(name, request=("<u8", (8,)), response=("<u8", (8,)),
                                 max_requesters=requesters, max_servers=servers, memory=True)


def test_python_requester_against_a_rust_server(daemon, worker):
    c = mmshare.connect(daemon.socket)
    info = make(c, "calc")
    assert (info.max_requesters, info.max_servers) == (2, 1)
    assert info.requests.shape == (8,) and info.responses.dtype == "<u8"
    rust = subprocess.Popen([worker, "service-serve", daemon.socket, "calc", "serve"],
                            stdout=subprocess.PIPE, text=True)
    assert rust.stdout.readline().strip() == "serving slot=0"
    req = c.requester("calc")
    assert req.slot == 0 and req.servers == (0,)
    ids = []
    for k in range(300):
        with req.loan(timeout=10) as slot:  # filled in place
            slot[:] = pattern(k)
        ids.append(k)
        if k % 3 == 2:  # three in flight, answered in order of arrival
            for _ in range(3):
                with req.receive(timeout=30) as response:
                    np.testing.assert_array_equal(response.array, answer(pattern(response.id)))
                    assert response.server == 0
    assert req.pending == 0
    with req.call(pattern(1000), timeout=30) as response:
        np.testing.assert_array_equal(response.array, answer(pattern(1000)))
    out, _ = rust.communicate(timeout=60)
    assert out.strip().endswith("served 301")


def test_rust_requester_against_a_python_server(daemon, worker):
    c = mmshare.connect(daemon.socket)
    make(c, "py.calc")
    server = c.server("py.calc")
    rust = subprocess.Popen([worker, "service-call", daemon.socket, "py.calc", "500", "2"],
                            stdout=subprocess.PIPE, text=True)
    assert rust.stdout.readline().strip().startswith("requester slot=")
    for n in range(500):
        with server.receive(timeout=30) as request:
            assert request.requester_pid == rust.pid
            with server.loan_response(request) as out:  # filled in place from the request
                out[:] = answer(request.array)
    assert rust.communicate(timeout=60)[0].strip() == "called 500 bad=0"


def test_a_killed_server_fails_pending_requests_with_server_lost(daemon, worker):
    c = mmshare.connect(daemon.socket)
    make(c, "fragile")
    stalled = subprocess.Popen([worker, "service-serve", daemon.socket, "fragile", "stall"],
                               stdout=subprocess.PIPE, text=True)
    assert stalled.stdout.readline().strip() == "serving slot=0"
    req = c.requester("fragile")
    assert [req.send(pattern(k)) for k in range(2)] == [0, 1]
    assert stalled.stdout.readline().strip() == "holding 1"
    assert stalled.stdout.readline().strip() == "holding 2"
    stalled.kill()
    stalled.wait()
    with pytest.raises(mmshare.ServerLost, match="send them again") as lost:
        req.receive(timeout=60)
    assert (lost.value.server, lost.value.pending) == (0, (0, 1))
    assert req.pending == 0
    with pytest.raises(mmshare.Timeout, match="no server"):
        req.send(pattern(5), timeout=0.2)


def test_limits_and_bad_input(daemon):
    c = mmshare.connect(daemon.socket)
    make(c, "small", requesters=1, servers=1)
    server, req = c.server("small"), c.requester("small")
    with pytest.raises(mmshare.Busy, match="requesters"):
        c.requester("small")
    with pytest.raises(mmshare.Busy, match="servers"):
        c.server("small")
    with pytest.raises(ValueError, match="shape"):
        req.send(np.zeros(3, np.uint64))
    with pytest.raises(TypeError, match="cannot be cast"):
        req.send(np.zeros(8, np.complex128))
    with pytest.raises(mmshare.Timeout):
        req.receive(timeout=0.1)
    # A loan left by an exception is given back, not sent.
    with pytest.raises(RuntimeError):
        with req.loan() as slot:
            slot[:] = 1
            raise RuntimeError("changed my mind")
    with pytest.raises(mmshare.Timeout):
        server.receive(timeout=0.1)
    req.send(np.arange(8, dtype=np.uint64))
    assert server.serve(lambda a, out: np.multiply(a, 10, out=out), timeout=5) == 0
    with req.receive(timeout=5) as response:
        assert response.array.tolist() == [10 * i for i in range(8)]
        assert not response.array.flags.writeable
    assert response.released
    with pytest.raises(mmshare.MmshareError, match="released"):
        response.array
    c.delete_service("small")
    with pytest.raises(mmshare.NotFound):
        c.describe("small.req.0")
    with pytest.raises(mmshare.InvalidShape):
        c.create_service("big", request=("u1", (1,)), response=("u1", (1,)), max_servers=17)


def test_call_from_the_shell(cli_bin, daemon, worker, tmp_path):
    """`mmshare call NAME request.npy -o response.npy`: one request, or a stack of them along
    a first axis; the responses in the same stacking. A request of the wrong shape or dtype
    is refused with both named."""
    from test_cli import run
    c = mmshare.connect(daemon.socket)
    make(c, "calc.sh")
    rust = subprocess.Popen([worker, "service-serve", daemon.socket, "calc.sh", "serve"],
                            stdout=subprocess.PIPE, text=True)
    assert rust.stdout.readline().strip() == "serving slot=0"
    one = pattern(7)
    np.save(tmp_path / "one.npy", one)
    out = run(cli_bin, "call", "calc.sh", str(tmp_path / "one.npy"), "-o",
              str(tmp_path / "answer.npy"), socket=daemon.socket).stdout
    assert "called calc.sh 1 time(s)" in out, out
    np.testing.assert_array_equal(np.load(tmp_path / "answer.npy"), answer(one))
    stack = np.stack([pattern(k) for k in range(5)])
    np.save(tmp_path / "stack.npy", stack)
    run(cli_bin, "call", "calc.sh", str(tmp_path / "stack.npy"), "-o",
        str(tmp_path / "answers.npy"), socket=daemon.socket)
    got = np.load(tmp_path / "answers.npy")
    assert got.shape == (5, 8)
    np.testing.assert_array_equal(got, answer(stack))
    np.save(tmp_path / "bad.npy", np.zeros((3,), np.uint64))
    bad = run(cli_bin, "call", "calc.sh", str(tmp_path / "bad.npy"), "-o",
              str(tmp_path / "x.npy"), socket=daemon.socket, check=False)
    assert bad.returncode == 2 and "(3,)" in bad.stderr.replace("[3]", "(3,)"), bad.stderr
    np.save(tmp_path / "f.npy", np.zeros((8,), np.float32))
    bad = run(cli_bin, "call", "calc.sh", str(tmp_path / "f.npy"), "-o",
              str(tmp_path / "x.npy"), socket=daemon.socket, check=False)
    assert bad.returncode == 2 and "<f4" in bad.stderr and "<u8" in bad.stderr, bad.stderr
    rust.kill()


def test_a_service_from_c(daemon, c_program):  # noqa: F811
    """tests/c/service.c: creates a service, serves it and calls it, every answer checked."""
    out = subprocess.run([c_program("service"), daemon.socket], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "ok calls=300"
