"""Every Python snippet of README.md and of clients/python/README.md runs as written, top to
bottom, in one interpreter per file, against a fresh daemon reached through MMSHARE_SOCKET
(as a user's default socket would be)."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def python_snippets(path):
    return re.findall(r"```python\n(.*?)```", (ROOT / path).read_text(), re.S)


@pytest.mark.parametrize("path", ["README.md", "clients/python/README.md"])
def test_python_snippets_run_as_written_in_order(path, daemon, daemon_bin, tmp_path):
    snippets = python_snippets(path)
    assert snippets, f"{path} has no Python snippet"
    program = "\n\n".join(snippets)
    # The programs on PATH, as a wheel installs them (`start_daemon` looks there).
    programs = str(pathlib.Path(daemon_bin).parent)
    env = {"MMSHARE_SOCKET": daemon.socket, "PATH": f"{programs}:/usr/bin:/bin"}
    # Run where the daemon's user runs them (the memmap line maps by path).
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{path}:\n{done.stderr}"
