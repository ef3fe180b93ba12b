"""The Python client against a real daemon: lifecycle, errors, seqlock reads and writes,
waiting, torn handling, and raw np.memmap access."""

import subprocess
import threading
import time

import numpy as np
import pytest

import mmshare


def test_create_open_list_stat_delete(daemon):
    c = mmshare.connect(daemon.socket)
    a = c.create("grid", np.float64, (4, 5), mode=0o644)
    assert a.version == 0 and a.shape == (4, 5) and a.dtype == np.float64
    with a.write() as view:
        view[:] = np.arange(20.0).reshape(4, 5)
    assert a.version == 1
    info = c.stat("grid")
    assert (info.dtype, info.shape, info.order, info.mode, info.version) == ("<f8", (4, 5), "C", 0o644, 1)
    assert [i.name for i in c.list()] == ["grid"]
    assert c.list("nothing") == []
    r = c.open("grid")
    np.testing.assert_array_equal(r.read(), np.arange(20.0).reshape(4, 5))
    np.testing.assert_array_equal(r.read(index=(slice(1, 3), 2)), [7.0, 12.0])
    assert not r.array.flags.writeable
    with pytest.raises(ValueError):
        r.array[0, 0] = 1
    with pytest.raises(mmshare.PermissionDenied):
        with r.write():
            pass
    c.delete("grid")
    with pytest.raises(mmshare.NotFound, match="grid"):
        c.stat("grid")
    # The mapping outlives the name.
    np.testing.assert_array_equal(r.read()[0], [0, 1, 2, 3, 4])


def test_errors_mirror_the_rust_kinds(daemon):
    c = mmshare.connect(daemon.socket)
    with pytest.raises(mmshare.InvalidName, match=r"\.\./x"):
        c.create("../x", "f4", (2,))
    with pytest.raises(mmshare.InvalidDtype, match=">f4"):
        c.create("a", ">f4", (2,))
    with pytest.raises(mmshare.InvalidShape, match="33 dimensions"):
        c.create("a", "u1", (1,) * 33)
    with pytest.raises(mmshare.InvalidShape):
        c.create("a", "u1", (-1,))
    c.create("a", "u1", (2,))
    with pytest.raises(mmshare.AlreadyExists):
        c.create("a", "u1", (2,))
    assert c.create("a", "u1", (2,), exist_ok=True).shape == (2,)
    with pytest.raises(mmshare.NotFound):
        c.open("b")
    with pytest.raises(mmshare.ConnectError, match="/nonexistent/sock"):
        mmshare.connect("/nonexistent/sock")


def test_zero_d_empty_and_fortran_arrays(daemon):
    c = mmshare.connect(daemon.socket)
    s = c.create("scalar", "<c16", ())
    with s.write() as v:
        v[()] = 1 + 2j
    assert c.open("scalar").read() == 1 + 2j
    e = c.create("empty", "f4", (0, 3))
    assert c.open("empty").read().shape == (0, 3)
    f = c.create("fort", "i4", (2, 3), order="F")
    with f.write() as v:
        v[:] = [[1, 2, 3], [4, 5, 6]]
    got = c.open("fort").read()
    np.testing.assert_array_equal(got, [[1, 2, 3], [4, 5, 6]])
    raw = np.memmap(f.path, dtype="<i4", mode="r", offset=4096, shape=(6,))
    np.testing.assert_array_equal(raw, [1, 4, 2, 5, 3, 6])  # column-major on disk
    del e


def test_np_memmap_of_the_path_sees_what_was_written(daemon):
    c = mmshare.connect(daemon.socket)
    a = c.create("raw", "<u2", (3, 7))
    data = (np.arange(21, dtype="<u2") * 3).reshape(3, 7)
    with a.write() as v:
        v[:] = data
    info = c.stat("raw")
    m = np.memmap(info.path, dtype=info.dtype, mode="r", offset=info.data_offset, shape=info.shape)
    np.testing.assert_array_equal(m, data)


def test_wait_sleeps_until_a_write_in_another_thread(daemon):
    c = mmshare.connect(daemon.socket)
    w = c.create("w", "f4", (8,))
    r = c.open("w")
    with pytest.raises(mmshare.Timeout):
        r.wait(newer_than=0, timeout=0.05)

    def later():
        time.sleep(0.2)
        with w.write() as v:
            v[:] = 3

    t = threading.Thread(target=later)
    t.start()
    assert r.wait(newer_than=0, timeout=10) == 1
    t.join()
    np.testing.assert_array_equal(r.read(), [3] * 8)


def test_a_python_waiter_registers_as_a_sleeper_so_rust_writers_wake_it(daemon, worker):
    """Writers skip FUTEX_WAKE when the array's control state counts no sleeper. A Python
    `wait()` that sleeps counts itself there (SLEEPERS, a u32 at 0x40 of the control memfd
    `mmshare-control:NAME` the daemon hands out), so a Rust writer in another process wakes
    it, and it takes itself out when it wakes."""
    import subprocess
    from conftest import control_state
    c = mmshare.connect(daemon.socket)
    a = c.create("sl", "<u8", (4,))
    sleepers = np.frombuffer(control_state("sl"), dtype="<u4", count=1, offset=0x40)
    assert sleepers[0] == 0
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(a.wait(newer_than=0, timeout=60)))
    waiter.start()
    for _ in range(2000):  # up to 20 s for the waiter to get past spinning into its sleep
        if sleepers[0] == 1:
            break
        time.sleep(0.01)
    assert sleepers[0] == 1, "the waiter never counted itself as a sleeper"
    subprocess.run([worker, "writer", a.path, "0"], check=True, stdout=subprocess.DEVNULL,
                   timeout=60)
    waiter.join(60)
    assert woke == [1]
    assert sleepers[0] == 0, "the waiter did not take itself out"


def test_ctrl_c_interrupts_a_wait_without_a_timeout(daemon):
    """Waits run in Rust with the GIL released, in slices between which Python's signal
    handlers run: a KeyboardInterrupt ends a wait(timeout=None) at once."""
    import signal
    c = mmshare.connect(daemon.socket)
    a = c.create("quiet", "u1", (1,))
    old = signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(KeyboardInterrupt):
            a.wait(newer_than=0, timeout=None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    with pytest.raises(mmshare.Timeout, match=r"within 0\.3\d* s"):
        a.wait(newer_than=0, timeout=0.3)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_a_raising_write_publishes_torn_and_releases_the_lock(daemon, exc):
    c = mmshare.connect(daemon.socket)
    a = c.create("t", "i8", (4,))
    with pytest.raises(exc):
        with a.write() as v:
            v[0] = 1
            raise exc("boom")
    assert a._seq() % 2 == 0, "the write side was released"
    assert a.version == 1 and a.torn and c.stat("t").torn
    with pytest.raises(mmshare.Torn):
        a.read()
    assert a.read(allow_torn=True)[0] == 1
    with a.write() as v:  # an ordinary write keeps TORN
        v[1] = 2
    assert a.torn
    with a.write(repair=True) as v:
        v[:] = 7
    assert not a.torn
    np.testing.assert_array_equal(a.read(), [7] * 4)


def test_python_writer_killed_mid_write_is_recovered_by_the_daemon(daemon, tmp_path):
    c = mmshare.connect(daemon.socket)
    c.create("victim", "u1", (64,))
    reader = c.open("victim")
    script = tmp_path / "hold.py"
    script.write_text(
        "import sys, time, mmshare\n"
        "a = mmshare.connect(sys.argv[1]).open('victim', 'r+')\n"
        "with a.write() as v:\n"
        "    v[0] = 9\n"
        "    print('holding', flush=True)\n"
        "    time.sleep(3600)\n")
    import sys
    p = subprocess.Popen([sys.executable, str(script), daemon.socket], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "holding"
    p.kill()
    p.wait()
    v = reader.wait(newer_than=0, timeout=30)
    assert v >= 1
    with pytest.raises(mmshare.Torn):
        reader.read()


def test_interrupts_during_requests_never_break_the_connection(daemon):
    """Requests run in Rust, where Python's signal handlers cannot run: a KeyboardInterrupt
    lands once a request is over, so no reply is ever left unread for the next request to
    take. SIGINT every millisecond while requests run: each one that returns is right, and
    the connection keeps working."""
    import signal
    c = mmshare.connect(daemon.socket)
    c.create("z", "u1", (1,))
    c.create("y", "u2", (2,))
    interrupts = answered = 0
    armed = []

    def interrupt(signum, frame):
        # Raises only while a request may be under way, and disarms first: a second signal
        # during the test's own bookkeeping does nothing.
        if armed:
            armed.clear()
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    try:
        for i in range(3000):
            name = ("z", "y")[i % 2]
            try:
                armed.append(True)
                got = c.stat(name).name
                armed.clear()
                assert got == name
                answered += 1
            except KeyboardInterrupt:
                interrupts += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    assert interrupts > 0 and answered > 0, (interrupts, answered)
    assert c.stat("y").shape == (2,) and c.stat("z").shape == (1,)


def test_a_closed_array_says_so(daemon):
    c = mmshare.connect(daemon.socket)
    a = c.create("cl", "u1", (1,))
    a.close()
    with pytest.raises(mmshare.MmshareError, match="closed"):
        a.read()
    assert "closed" in repr(a)
