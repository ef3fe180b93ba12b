"""The mmshare programs from Python: finding the `mmshared` and `mmshare` commands the wheel
installed, and running a daemon for tests and notebooks (`start_daemon`)."""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time


def find_program(name: str) -> str:
    """The path of the `name` command (`mmshared` or `mmshare`): the one installed beside this
    Python (a wheel puts both in its environment's scripts directory), else the first on PATH.

    Raises FileNotFoundError saying how to get it when there is none."""
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return candidate
    found = shutil.which(name)
    if found:
        return found
    crate = "mmshare-daemon" if name == "mmshared" else "mmshare-cli"
    raise FileNotFoundError(
        f"the {name} command is not installed: the mmshare wheels carry it; an install from "
        f"source does not (cargo install {crate})")


class Daemon:
    """A running `mmshared` started by `start_daemon`; stops it when used as a context manager,
    on `stop()`, or when the interpreter exits."""

    def __init__(self, process: subprocess.Popen, home: pathlib.Path, socket_path: str,
                 owns_home: bool):
        self.process = process
        self.home = home
        self.socket = socket_path
        self._owns_home = owns_home

    @property
    def pid(self) -> int:
        return self.process.pid

    def connect(self, **options):
        """`mmshare.connect` to this daemon."""
        from .client import connect
        return connect(self.socket, **options)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """Stops the daemon (SIGTERM, then SIGKILL after `timeout` seconds); returns its exit
        status. Removes the home directory if `start_daemon` made it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._owns_home:
            shutil.rmtree(self.home, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else f"exited {self.process.returncode}"
        return f"<mmshare.Daemon pid={self.pid} socket={self.socket!r} {state}>"


def start_daemon(home=None, *args: str, timeout: float = 30.0, keeper: bool = False,
                 program: str | None = None) -> Daemon:
    """Starts `mmshared` with everything in `home` (a new temporary directory, removed when it
    stops, if None) and returns once it serves: it waits for the daemon's own readiness
    notification (`READY=1`, the systemd protocol), not for a log line or a sleep.

    `args` are more `mmshared` flags (`"--max-arrays", "10"`). By default the daemon runs
    without its descriptor keeper (`keeper=False`): a throw-away daemon for a test or a
    notebook leaves no process behind. The daemon's log goes to this process's stderr.

    `program` is the `mmshared` to run (default: `find_program("mmshared")`).

    Raises FileNotFoundError if `mmshared` is not installed, RuntimeError (with the
    daemon's exit status) if it stops before it is ready, TimeoutError after `timeout`."""
    program = program or find_program("mmshared")
    owns_home = home is None
    home = pathlib.Path(tempfile.mkdtemp(prefix="mmshare-") if owns_home else home).absolute()
    # The readiness notification comes on a datagram socket of our own, in a directory only
    # this user can enter.
    notify_dir = tempfile.mkdtemp(prefix="mmshare-notify-")
    notify_path = os.path.join(notify_dir, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        listener.bind(notify_path)
        flags = ["--home", str(home)]
        if not keeper:
            flags.append("--no-fd-keeper")
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        process = subprocess.Popen([program, *flags, *args], env=env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if process.poll() is not None:
                if owns_home:
                    shutil.rmtree(home, ignore_errors=True)
                raise RuntimeError(
                    f"mmshared exited with status {process.returncode} before it was ready "
                    "(its log is above)")
            if left <= 0:
                process.kill()
                process.wait()
                raise TimeoutError(f"mmshared was not ready within {timeout} s")
            listener.settimeout(min(left, 0.1))
            try:
                message = listener.recv(4096).decode(errors="replace")
            except socket.timeout:
                continue
            if "READY=1" in message.splitlines():
                break
    finally:
        listener.close()
        shutil.rmtree(notify_dir, ignore_errors=True)
    daemon = Daemon(process, home, str(home / "mmshared.sock"), owns_home)
    atexit.register(daemon.stop)
    return daemon
