"""Which user the daemon runs as, checked by the client before it sends anything (SO_PEERCRED;
docs/PROTOCOL.md, Transport): from Python (`server_uid`, `$MMSHARE_SERVER_UID`, the default
socket) and from C (`mms_connect_as`). When the tests run as root (CI), the daemon runs as
uid 1001 (started with setpriv); otherwise it is this user's own, and a uid it is not plays
the wrong one."""

import os
import shutil
import subprocess
import tempfile
import time

import pytest

import mmshare
from test_c_api import c_program  # noqa: F401 (the fixture that compiles tests/c programs)

OTHER_UID = 1001


@pytest.fixture
def foreign(daemon_bin):
    """A daemon and the uid it runs as: 1001 when this process is root, else this user."""
    me = os.geteuid()
    uid = OTHER_UID if me == 0 else me
    prefix = []
    if uid != me:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to run the daemon as another uid")
        prefix = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    # Not under pytest's tmp_path: its parents are private to this user.
    root = tempfile.mkdtemp(prefix="mmshare-uid-")
    os.chmod(root, 0o755)
    os.chown(root, uid, uid)
    socket = os.path.join(root, "mmshared.sock")
    proc = subprocess.Popen(
        [*prefix, daemon_bin, "--socket", socket, "--dir", os.path.join(root, "data"),
         "--mem-dir", os.path.join(root, "mem"), "--socket-mode", "0666"],
        stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MMSHARE_")})
    deadline = time.monotonic() + 30
    for line in proc.stderr:
        if "listening on" in line:
            break
        if time.monotonic() > deadline:
            break
    else:
        proc.kill()
        raise RuntimeError(f"mmshared did not start (exit {proc.wait()})")
    yield socket, uid
    proc.kill()
    proc.wait(timeout=30)
    shutil.rmtree(root, ignore_errors=True)


def test_the_daemons_uid_connects_and_another_is_refused_naming_both(foreign, monkeypatch):
    socket, uid = foreign
    monkeypatch.delenv("MMSHARE_SERVER_UID", raising=False)
    assert mmshare.connect(socket, server_uid=uid).list() == []
    with pytest.raises(mmshare.WrongServer) as refused:
        mmshare.connect(socket, server_uid=uid + 1)
    e = refused.value
    assert (e.path, e.expected, e.actual) == (socket, uid + 1, uid)
    assert isinstance(e, mmshare.ConnectError)
    message = str(e)
    for needle in (f"the daemon at {socket} runs as uid {uid}", f"not as uid {uid + 1}",
                   "or root", "MMSHARE_SERVER_UID"):
        assert needle in message, message
    # A path the program names, with no uid given: not checked.
    mmshare.Client(socket).close()
    # The environment's uid, and the program's over it.
    monkeypatch.setenv("MMSHARE_SERVER_UID", str(uid + 1))
    with pytest.raises(mmshare.WrongServer):
        mmshare.connect(socket)
    mmshare.connect(socket, server_uid=uid)
    monkeypatch.setenv("MMSHARE_SERVER_UID", "nobody")
    with pytest.raises(mmshare.ConnectError, match="MMSHARE_SERVER_UID=\"nobody\" is not a uid"):
        mmshare.connect(socket)
    with pytest.raises(ValueError):
        mmshare.connect(socket, server_uid=-1)


def test_the_default_socket_must_be_this_users_daemon_or_root(foreign, monkeypatch):
    socket, uid = foreign
    me = os.geteuid()
    monkeypatch.delenv("MMSHARE_SERVER_UID", raising=False)
    monkeypatch.setenv("MMSHARE_SOCKET", socket)
    if uid == me:
        client = mmshare.connect()
        assert client.path == socket
    else:
        with pytest.raises(mmshare.WrongServer) as refused:
            mmshare.connect()
        assert (refused.value.expected, refused.value.actual) == (me, uid)
        assert f"not as uid {me} (this user) or root" in str(refused.value)
        # Nothing was created there.
        assert mmshare.connect(socket, server_uid=uid).list() == []
        monkeypatch.setenv("MMSHARE_SERVER_UID", str(uid))
        assert mmshare.connect().path == socket


def test_a_c_program_connects_with_mms_connect_as_only_to_the_expected_uid(
        foreign, c_program):  # noqa: F811 (the fixture imported above)
    socket, uid = foreign
    out = subprocess.run([c_program("server_uid"), socket, str(uid), str(uid + 1)],
                         capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items()
                              if not k.startswith("MMSHARE_")})
    assert out.returncode == 0, out.stderr
    refused, connected = out.stdout.splitlines()
    assert refused.startswith("MMS_ERR_WRONG_SERVER: "), refused
    assert f"runs as uid {uid}, not as uid {uid + 1}" in refused, refused
    assert connected == "connected"


def test_the_cli_takes_the_daemons_uid_with_server_uid_and_refuses_another(foreign, cli_bin):
    socket, uid = foreign
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSHARE_")}

    def cli(*args, **extra):
        return subprocess.run([cli_bin, *args], capture_output=True, text=True,
                              env={**env, **extra}, timeout=60)

    wrong = cli("--socket", socket, "--server-uid", str(uid + 1), "ls")
    assert wrong.returncode == 4, wrong  # permission: not the daemon it must be
    assert f"the daemon at {socket} runs as uid {uid}, not as uid {uid + 1}" in wrong.stderr
    assert wrong.stderr.count("\n") == 1, wrong.stderr
    assert cli("--socket", socket, "--server-uid", str(uid), "ls").returncode == 0
    assert cli("--socket", socket, "ls").returncode == 0  # a named socket, no uid: no check
    # The default socket (here from MMSHARE_SOCKET) must be this user's daemon or root's.
    default = cli("ls", MMSHARE_SOCKET=socket)
    if uid == os.geteuid():
        assert default.returncode == 0, default
    else:
        assert default.returncode == 4, default
        assert f"not as uid {os.geteuid()} (this user) or root" in default.stderr
        assert cli("--server-uid", str(uid), "ls", MMSHARE_SOCKET=socket).returncode == 0
        assert cli("ls", MMSHARE_SOCKET=socket, MMSHARE_SERVER_UID=str(uid)).returncode == 0
