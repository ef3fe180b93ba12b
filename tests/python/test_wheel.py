"""The wheel as a Python user gets it: built by scripts/build-wheel, installed with pip into a
fresh virtualenv whose PATH has no Rust toolchain, it gives the daemon and the CLI as commands,
`python -m mmshare`, `mmshare.__version__`, a daemon started from Python, and a working
publisher/subscriber pipeline. Its platform tag must be one PyPI accepts (manylinux_2_28 or
older), which build-wheel checks with auditwheel; the sdist must build from source.

Building the wheel takes a few minutes the first time (zig links all three binaries against
glibc 2.28); later runs reuse target/wheel."""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
VERSION = "0.1.0"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([str(REPO / "scripts" / "build-wheel"), "--dev", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=1800)
    # The end of the build's own output is what tells why it failed (pytest's report of a
    # fixture's captured output is long, and a CI log keeps only its tail).
    assert build.returncode == 0, (f"scripts/build-wheel exited with {build.returncode}; "
                                   f"disk: {shutil.disk_usage(out).free >> 20} MiB free; "
                                   f"its output ends:\n{build.stdout[-4000:]}")
    wheels = sorted(out.glob("*.whl"))
    assert [w.name for w in wheels] == [f"mmshare-{VERSION}-cp311-abi3-manylinux_2_28_x86_64.whl"]
    sdists = sorted(out.glob("*.tar.gz"))
    assert [s.name for s in sdists] == [f"mmshare-{VERSION}.tar.gz"]
    return wheels[0], sdists[0]


@pytest.fixture(scope="module")
def venv(built, tmp_path_factory):
    """A fresh virtualenv with the wheel installed, and the environment to run it with: a PATH
    of the venv and the system directories only (no cargo, no rustc)."""
    wheel, _ = built
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=600)
    path = os.pathsep.join([str(root / "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    for tool in ["cargo", "rustc"]:
        assert shutil.which(tool, path=path) is None, f"{tool} is on the test's PATH"
    return root, env


def run(env, *args, **kw):
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=120,
                          **kw)


def test_the_wheel_carries_the_programs_the_licences_and_its_metadata(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(f"mmshare-{VERSION}.dist-info/METADATA").decode()
        for program in ["mmshared", "mmshare"]:
            info = z.getinfo(f"mmshare-{VERSION}.data/scripts/{program}")
            assert (info.external_attr >> 16) & 0o111, f"{program} is not executable"
    assert f"mmshare-{VERSION}.dist-info/licenses/LICENSE-MIT" in names
    assert f"mmshare-{VERSION}.dist-info/licenses/LICENSE-APACHE" in names
    assert "License-Expression: MIT OR Apache-2.0" in metadata, metadata
    assert "Project-URL: Source," in metadata, metadata


def test_installed_without_rust_the_commands_and_a_pipeline_work(venv):
    root, env = venv
    python = str(root / "bin" / "python")
    assert run(env, "mmshared", "--version").stdout.strip() == f"mmshared {VERSION}"
    assert run(env, "mmshare", "--version").stdout.strip() == f"mmshare {VERSION}"
    assert run(env, python, "-m", "mmshare", "--version").stdout.strip() == f"mmshare {VERSION}"
    script = textwrap.dedent("""
        import subprocess, sys
        import numpy as np
        import mmshare
        assert mmshare.__version__ == sys.argv[1], mmshare.__version__
        with mmshare.start_daemon() as daemon:
            client = daemon.connect()
            client.create_stream("camera", "u2", (4, 4), slots=4)
            pub = client.publisher("camera")
            sub = client.subscribe("camera", lossless=True)
            for n in range(20):
                pub.send(np.full((4, 4), n, dtype=np.uint16))
                with sub.receive(timeout=10) as sample:
                    assert sample.number == n and int(sample.array.sum()) == 16 * n
            listing = subprocess.run([sys.executable, "-m", "mmshare", "--socket", daemon.socket,
                                      "ls"], capture_output=True, text=True, check=True).stdout
            assert "camera" in listing and "stream" in listing, listing
            home = daemon.home
        assert not daemon.running() and not home.exists()
        print("pipeline ok")
    """)
    out = run(env, python, "-c", script, VERSION)
    assert out.returncode == 0 and out.stdout.strip() == "pipeline ok", out.stdout + out.stderr


def test_the_sdist_builds_the_extension_from_source(built, tmp_path):
    """The sdist is a complete source tree of the extension (it builds offline from the
    vendored workspace crates); the programs are not in it, and a program lookup says how to
    get them."""
    _, sdist = built
    import tarfile
    with tarfile.open(sdist) as t:
        names = t.getnames()
    root = f"mmshare-{VERSION}"
    assert f"{root}/pyproject.toml" in names
    assert any(n.endswith("mmshare-lib/src/lib.rs") for n in names), names[:20]
    assert not any("wheel-data" in n for n in names)
    # Unoptimized, as the wheel in these tests: the point is that it builds.
    env = dict(os.environ, MATURIN_PEP517_ARGS="--profile dev")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", str(sdist)], check=True, env=env, timeout=1800)
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import mmshare; print(mmshare.__version__);"
                          "mmshare.find_program('mmshared')"],
                         capture_output=True, text=True, env={**env, "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == VERSION
    assert "the mmshared command is not installed" in out.stderr, out.stderr
