"""Shared fixtures for the Python tests: the Rust binaries (worker, daemon, CLI) and a real
daemon on a temporary directory."""

import os
import pathlib
import subprocess
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _binary(env_var: str, package: str, name: str) -> str:
    path = os.environ.get(env_var)
    if path:
        return path
    subprocess.run(["cargo", "build", "--quiet", "-p", package, "--bin", name], cwd=REPO, check=True)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "debug" / name)


@pytest.fixture(scope="session")
def worker() -> str:
    """Path of `mmshare-test-worker` (tests/src/main.rs)."""
    return _binary("MMSHARE_TEST_WORKER", "mmshare-tests", "mmshare-test-worker")


@pytest.fixture(scope="session")
def daemon_bin() -> str:
    return _binary("MMSHARE_DAEMON", "mmshare-daemon", "mmshared")


@pytest.fixture(scope="session")
def cli_bin() -> str:
    return _binary("MMSHARE_CLI", "mmshare-cli", "mmshare")


class Daemon:
    def __init__(self, binary, root: pathlib.Path, *extra):
        self.socket = str(root / "mmshared.sock")
        self.root = root
        self.proc = subprocess.Popen(
            [binary, "--socket", self.socket, "--dir", str(root / "data"),
             "--mem-dir", str(root / "mem"), *extra],
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        for line in self.proc.stderr:
            if "listening on" in line:
                break
            if time.monotonic() > deadline:
                break
        else:
            raise RuntimeError("mmshared did not start")
        # Keep reading its log, so that a test that makes it log a lot never fills the pipe
        # (the daemon would block on its next log line).
        self.log = []
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def daemon(daemon_bin, tmp_path):
    """A real mmshared on a temp dir; yields it, kills it afterwards."""
    d = Daemon(daemon_bin, tmp_path)
    yield d
    d.stop()


def control_state(name):
    """The control state of object `name` as this process maps it: the memfd the daemon named
    `mmshare-control:NAME`, found in /proc/self/maps and read in place (read-only bytes over
    the live mapping; valid while the handle that mapped it lives)."""
    import ctypes
    for line in open("/proc/self/maps"):
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].strip() == f"/memfd:mmshare-control:{name} (deleted)":
            start, end = (int(x, 16) for x in fields[0].split("-"))
            return (ctypes.c_char * (end - start)).from_address(start)
    raise AssertionError(f"no control state of {name!r} is mapped in this process")
