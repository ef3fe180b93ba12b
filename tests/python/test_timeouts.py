"""A frozen daemon (SIGSTOP) never stalls a Python or C client past its timeout: the request
raises `mmshare.Timeout` naming the socket and the wait, and the same client works again
once the daemon runs (it connects again)."""

import os
import signal
import subprocess
import time

import pytest

import mmshare
from test_c_api import c_program  # noqa: F401 (the fixture that compiles tests/c programs)


def _all_stopped(pid):
    """Whether every thread of `pid` is stopped (the state after the command's ')')."""
    tasks = os.listdir(f"/proc/{pid}/task")
    return all(open(f"/proc/{pid}/task/{t}/stat").read().rsplit(") ", 1)[1][0] in "Tt"
               for t in tasks)


@pytest.fixture
def stopped(daemon):
    """The daemon, stopped for the test's body (once `stop()` is called: SIGSTOP is
    delivered asynchronously, so it waits until every thread is stopped) and continued
    afterwards."""
    def stop():
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 20
        while not _all_stopped(daemon.proc.pid):
            assert time.monotonic() < deadline, "the daemon did not stop"
            time.sleep(0.001)
    yield daemon, stop
    os.kill(daemon.proc.pid, signal.SIGCONT)


def test_a_request_to_a_stopped_daemon_times_out_and_the_client_recovers(stopped):
    daemon, stop = stopped
    client = mmshare.connect(daemon.socket, timeout=0.3)
    assert client.list() == []
    stop()
    with pytest.raises(mmshare.Timeout) as timed_out:
        client.stat("x")
    message = str(timed_out.value)
    assert daemon.socket in message and "300ms" in message, message
    with pytest.raises(mmshare.Timeout):
        mmshare.connect(daemon.socket, timeout=0.3)
    os.kill(daemon.proc.pid, signal.SIGCONT)
    assert client.list() == []


def test_the_timeout_comes_from_the_environment_and_bad_values_are_refused(stopped, monkeypatch):
    daemon, stop = stopped
    monkeypatch.setenv("MMSHARE_TIMEOUT", "soon")
    with pytest.raises(mmshare.ConnectError, match='MMSHARE_TIMEOUT="soon"'):
        mmshare.connect(daemon.socket)
    with pytest.raises(ValueError):
        mmshare.connect(daemon.socket, timeout=-1)
    monkeypatch.setenv("MMSHARE_TIMEOUT", "0.3")
    client = mmshare.connect(daemon.socket)
    stop()
    with pytest.raises(mmshare.Timeout):
        client.list()


def test_a_c_client_times_out_on_a_stopped_daemon(stopped, c_program):
    daemon, stop = stopped
    stop()
    out = subprocess.run([c_program("timeout"), daemon.socket], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert daemon.socket in out.stdout and "did not" in out.stdout, out.stdout
