"""`mmshare.start_daemon`: a daemon from Python that is ready when the call returns (it waits
for the daemon's own READY=1), stops with the `with` block, keeps a home it was given and
removes one it made, and reports a daemon that cannot start."""

import pathlib

import pytest

import mmshare


def shm_dirs():
    return {p for p in pathlib.Path("/dev/shm").glob("mmshare-*")}


def test_a_daemon_started_from_python_serves_at_once_and_cleans_up(daemon_bin):
    before = shm_dirs()
    with mmshare.start_daemon(program=daemon_bin) as d:
        assert d.running() and pathlib.Path(d.socket).is_socket()
        c = d.connect()
        c.create("x", "u1", (3,))          # served at once: no retry, no sleep
        c.create("in_ram", "f8", (1024,), memory=True)
        assert sorted(a.name for a in c.list()) == ["in_ram", "x"]
        home = d.home
    assert not d.running() and d.process.returncode == 0
    assert not home.exists(), "a temporary home is removed"
    assert shm_dirs() == before, "its memory directory (and the RAM of its arrays) is removed"


def test_flags_must_be_a_list(daemon_bin):
    with pytest.raises(TypeError, match="list of mmshared flags"):
        mmshare.start_daemon(None, "--max-arrays", program=daemon_bin)


def test_a_given_home_is_kept_and_found_again(daemon_bin, tmp_path):
    with mmshare.start_daemon(tmp_path / "home", program=daemon_bin) as d:
        d.connect().create("kept", "f4", (2, 2))
    with mmshare.start_daemon(tmp_path / "home", program=daemon_bin) as d:
        assert d.connect().stat("kept").shape == (2, 2)
    assert (tmp_path / "home" / "arrays" / "kept").exists()


def test_a_daemon_that_cannot_start_is_reported_with_its_status(daemon_bin, tmp_path):
    (tmp_path / "h").mkdir()
    with pytest.raises(RuntimeError, match="exited with status 2 before it was ready"):
        mmshare.start_daemon(tmp_path / "h", ["--max-arrays", "lots"], program=daemon_bin)
    assert (tmp_path / "h").exists(), "a home that was given is never removed"


def test_find_program_says_how_to_get_a_missing_program(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("sysconfig.get_path", lambda _name: str(tmp_path))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    with pytest.raises(FileNotFoundError, match="cargo install mmshare-daemon"):
        mmshare.find_program("mmshared")
