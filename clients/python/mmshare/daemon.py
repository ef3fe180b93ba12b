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
                 cleanup: list, notify: socket.socket):
        self.process = process
        self.home = home
        self.socket = socket_path
        self._cleanup = cleanup
        # Kept open while the daemon runs: it says STOPPING=1 there when it stops.
        self._notify = notify

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        return self.process.pid

    def connect(self, **options):
        """`mmshare.connect` to this daemon."""
        from .client import connect
        return connect(self.socket, **options)

    def running(self) -> bool:
        """Whether the daemon process is still running."""
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """Stops the daemon (SIGTERM, then SIGKILL after `timeout` seconds); returns its exit
        status. Removes what `start_daemon` made: a temporary home, and the memory directory
        that goes with it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._notify.close()
        for path in self._cleanup:
            shutil.rmtree(path, ignore_errors=True)
        atexit.unregister(self.stop)
        return self.process.returncode

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else f"exited {self.process.returncode}"
        return f"<mmshare.Daemon pid={self.pid} socket={self.socket!r} {state}>"


def start_daemon(home=None, flags=(), *, timeout: float = 30.0, keeper: bool = False,
                 program: str | None = None) -> Daemon:
    """Starts `mmshared` with its socket and arrays in `home` and returns once it serves: it
    waits for the daemon's own readiness notification (`READY=1`, the systemd protocol), not
    for a log line or a sleep.

    With `home=None` everything is temporary: a new home, and a memory directory of its own
    in /dev/shm, both removed when the daemon stops. A `home` you give is kept, and its memory
    arrays are found again by the next daemon on it.

    `flags` are more `mmshared` flags (`["--max-arrays", "10"]`). By default the daemon runs
    without its descriptor keeper (`keeper=False`): a throw-away daemon for a test or a
    notebook leaves no process behind. `program` is the `mmshared` to run (default:
    `find_program("mmshared")`). The daemon's log goes to this process's stderr.

    Raises FileNotFoundError if `mmshared` is not installed, RuntimeError (with the
    daemon's exit status) if it stops before it is ready, TimeoutError after `timeout`."""
    if isinstance(flags, str):
        raise TypeError("flags is a list of mmshared flags, such as ['--max-arrays', '10']")
    flags = list(flags)
    program = program or find_program("mmshared")
    cleanup = []
    process = None
    notify_dir = tempfile.mkdtemp(prefix="mmshare-notify-")
    cleanup.append(notify_dir)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if home is None:
            home = tempfile.mkdtemp(prefix="mmshare-")
            cleanup.append(home)
            if "--mem-dir" not in flags and os.path.isdir("/dev/shm"):
                memory = tempfile.mkdtemp(prefix="mmshare-mem-", dir="/dev/shm")
                cleanup.append(memory)
                flags += ["--mem-dir", memory]
        home = pathlib.Path(home).absolute()
        socket_path = str(home / "mmshared.sock")
        if "--socket" in flags[:-1]:
            socket_path = flags[flags.index("--socket") + 1]
        # The readiness notification comes on a datagram socket of our own, in a directory
        # only this user can enter.
        notify_path = os.path.join(notify_dir, "notify")
        listener.bind(notify_path)
        args = [program, "--home", str(home), *([] if keeper else ["--no-fd-keeper"]), *flags]
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        process = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mmshared exited with status {process.returncode} before it was ready "
                    "(its log is above)")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"mmshared was not ready within {timeout} s")
            listener.settimeout(min(left, 0.1))
            try:
                message = listener.recv(4096).decode(errors="replace")
            except socket.timeout:
                continue
            if "READY=1" in message.splitlines():
                break
    except BaseException:
        # Whatever stopped the start (an error, Ctrl-C): nothing is left behind.
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        listener.close()
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)
        raise
    daemon = Daemon(process, home, socket_path, cleanup, listener)
    atexit.register(daemon.stop)
    return daemon
