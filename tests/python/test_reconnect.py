"""A Python (and a C) client object survives a daemon restart (SIGKILL): the next request connects
again, the write lease and the stream roles it holds are taken again on the new connection,
and a lossless subscription and a publisher of the same object carry on with every frame."""

import subprocess

import numpy as np

import mmshare
from conftest import Daemon
from test_c_api import c_program  # noqa: F401 (the fixture that compiles tests/c programs)


def test_a_client_object_keeps_working_and_its_leases_across_a_daemon_restart(daemon_bin,
                                                                              tmp_path):
    d = Daemon(daemon_bin, tmp_path, "--idle-timeout", "1")
    try:
        c = mmshare.connect(d.socket)
        state = c.create("state", "<u8", (4,), memory=True)
        c.create_stream("frames", "<u8", (16,), slots=4, memory=True)
        pub = c.publisher("frames")
        sub = c.subscribe("frames", lossless=True, max_held=1)
        for n in range(10):
            pub.send(np.full(16, n, np.uint64))
            with sub.receive(timeout=10) as s:
                assert s.number == n and int(s.array[0]) == n
        d.stop()
        d = Daemon(daemon_bin, tmp_path, "--idle-timeout", "1")
        assert c.stat("state").name == "state"   # the same object, a new connection
        with state.write() as view:
            view[0] = 7
        assert state.read(0) == 7
        for n in range(10, 50):
            pub.send(np.full(16, n, np.uint64))
            with sub.receive(timeout=10) as s:
                assert s.number == n and int(s.array[0]) == n
        # The daemon sees this process as the stream's publisher and subscriber still.
        info = c.describe("frames")
        assert len(info.subscribers) == 1 and info.published == 50
        pub.close()
        sub.close()
        state.close()
        c.close()
    finally:
        d.stop()


def test_a_c_client_object_keeps_working_across_a_daemon_restart(daemon_bin, tmp_path,
                                                                 c_program):
    d = Daemon(daemon_bin, tmp_path)
    try:
        proc = subprocess.Popen([c_program("reconnect"), d.socket], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        d.stop()
        d = Daemon(daemon_bin, tmp_path)
        out, _ = proc.communicate("go\n", timeout=60)
        assert proc.returncode == 0 and out.strip() == "done", out
    finally:
        d.stop()
