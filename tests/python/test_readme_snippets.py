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


def test_the_shell_quick_start_runs_as_written(daemon, cli_bin, tmp_path):
    """README's "Quick start from the shell" block, top to bottom in one bash (`set -e`: every
    command must succeed), with `mmshare` and a Python with NumPy on PATH, against a fresh
    daemon reached through MMSHARE_SOCKET."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Quick start from the shell"):]
    block = section[section.index("```\n") + 4:]
    block = block[:block.index("```")]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mmshare").symlink_to(cli_bin)
    # This interpreter's environment (with NumPy) provides `python3`; the CLI under test comes
    # first.
    venv_bin = pathlib.Path(sys.executable).parent
    env = {"MMSHARE_SOCKET": daemon.socket, "PATH": f"{bin_dir}:{venv_bin}:/usr/bin:/bin",
           "HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    import numpy as np
    rec = np.load(tmp_path / "rec.npy")
    assert rec.shape == (100, 480, 640)
    assert np.load(tmp_path / "snapshot.npy").shape == (480, 640)
    assert "received 100 frames (0..100) from frames, missed 0" in done.stdout, done.stdout
