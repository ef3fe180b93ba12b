"""The C API (clients/c, include/mmshare.h) from real C programs compiled with the system `cc`
against libmmshare_c, talking to a real daemon beside Rust and Python: a C reader of an array
written by Rust (the CLI), a C writer read by Python, a C lossless subscriber of a Python
publisher, and bad input refused with the documented statuses."""

import os
import re
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mmshare

REPO = pathlib.Path(__file__).resolve().parents[2]
SOURCES = REPO / "tests" / "c"


def _lib_dir() -> pathlib.Path:
    """Where libmmshare_c.so is (MMSHARE_C_LIB_DIR, else target/debug after building it), with
    the `libmmshare_c.so.0` link beside it that programs linked against it load by its SONAME
    (cargo makes only the `.so`; scripts/install-c makes both)."""
    path = os.environ.get("MMSHARE_C_LIB_DIR")
    if path:
        lib = pathlib.Path(path)
    else:
        subprocess.run(["cargo", "build", "--quiet", "-p", "mmshare-c"], cwd=REPO, check=True)
        lib = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug"
    soname = lib / "libmmshare_c.so.0"
    if not soname.exists():
        soname.unlink(missing_ok=True)  # a dangling link
        soname.symlink_to("libmmshare_c.so")
    return lib


@pytest.fixture(scope="session")
def c_program(tmp_path_factory):
    """Compiles tests/c/NAME.c (warnings are errors) and returns its path."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        pytest.fail("no C compiler: install one (cc) to test the C API")
    lib = _lib_dir()
    out = tmp_path_factory.mktemp("c")
    built = {}

    def build(name):
        if name not in built:
            exe = out / name
            subprocess.run(
                [cc, "-std=c11", "-D_DEFAULT_SOURCE", "-pthread", "-Wall", "-Wextra", "-Werror",
                 "-o", str(exe), str(SOURCES / f"{name}.c"),
                 f"-I{REPO / 'clients' / 'c' / 'include'}", f"-I{SOURCES}", f"-L{lib}",
                 "-lmmshare_c", f"-Wl,-rpath,{lib}"],
                check=True)
            built[name] = str(exe)
        return built[name]

    return build


def test_a_c_reader_reads_an_array_written_by_rust_and_waits_for_the_next_version(
        daemon, cli_bin, c_program, tmp_path):
    c = mmshare.connect(daemon.socket)
    c.create("grid", "<f8", (3, 5))
    first = np.arange(15, dtype="<f8").reshape(3, 5)
    np.save(tmp_path / "first.npy", first)
    env = dict(os.environ, MMSHARE_SOCKET=daemon.socket)
    subprocess.run([cli_bin, "put", "grid", str(tmp_path / "first.npy")], env=env, check=True)
    reader = subprocess.Popen([c_program("read_array"), daemon.socket, "grid"],
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "shape=3x5 order=C"
    assert reader.stdout.readline().split()[1:] == ["sum=105.0", "first=0.0", "last=14.0"]
    assert reader.stdout.readline().strip() == "waiting"
    np.save(tmp_path / "second.npy", first * 2)
    subprocess.run([cli_bin, "put", "grid", str(tmp_path / "second.npy")], env=env, check=True)
    line = reader.stdout.readline().split()
    assert line[1:] == ["sum=210.0", "first=0.0", "last=28.0"], line
    assert reader.wait(timeout=30) == 0


def test_a_c_writer_is_read_by_python(daemon, c_program):
    out = subprocess.run([c_program("write_array"), daemon.socket, "ints"],
                         capture_output=True, text=True, check=True)
    v1, v2 = map(int, out.stdout.split()[1:])
    assert v2 > v1 > 0
    a = mmshare.connect(daemon.socket).open("ints")
    assert (a.dtype.str, a.shape, a.version) == ("<i4", (3, 4), v2)
    np.testing.assert_array_equal(a.read(), 100 + np.arange(12).reshape(3, 4))
    # The file is the same bytes NumPy maps by itself.
    info = a.info
    raw = np.memmap(info.path, dtype="<i4", mode="r", offset=info.data_offset, shape=(3, 4))
    np.testing.assert_array_equal(raw, 100 + np.arange(12).reshape(3, 4))


def test_regions_of_a_striped_array_from_c(daemon, c_program):
    out = subprocess.run([c_program("regions"), daemon.socket, "tiles"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "ok stripe_bytes=65536" in out.stdout, out.stdout
    # What C saw as refusals, it saw for the documented reasons.
    assert "33 stripes asked for" in out.stdout, out.stdout
    assert "no consistent read" in out.stdout, out.stdout
    a = mmshare.connect(daemon.socket).open("tiles")
    np.testing.assert_array_equal(a.read(np.s_[:128]), 1)
    np.testing.assert_array_equal(a.read(np.s_[512:640, 3:5]), 7)
    assert not a.torn


def test_a_c_lossless_subscriber_gets_every_frame_of_a_python_publisher(daemon, c_program):
    frames, elems = 3000, 256
    c = mmshare.connect(daemon.socket)
    c.create_stream("cams", "<u4", (elems,), slots=4, memory=True)
    sub = subprocess.Popen([c_program("subscribe"), daemon.socket, "cams", str(frames)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert sub.stdout.readline().strip() == "ready"
    pub = c.publisher("cams")
    base = np.arange(elems, dtype="<u4")
    for n in range(frames):
        pub.send(base + n * 1000, timeout=30)
    out, err = sub.communicate(timeout=60)
    assert sub.returncode == 0, err
    assert out.strip() == f"ok frames={frames} missed=0"


def test_bad_input_through_the_c_api_gets_errors_not_crashes(daemon, c_program):
    out = subprocess.run([c_program("bad_input"), daemon.socket],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout
    lines = out.stdout.splitlines()
    assert lines[-1] == "all bad input refused"
    # Every refusal came with a message that names what was wrong.
    assert len(lines) > 40, lines
    for line in lines[:-1]:
        status, message = line.split(": ", 1)
        assert status.startswith("MMS_ERR_") and message.strip(), line
    assert any("holds <f8, not <i4" in line for line in lines), lines
    assert any("closed" in line for line in lines if line.startswith("MMS_ERR_CLOSED")), lines


def test_a_sample_released_by_another_thread_does_not_wait_for_a_receive(daemon, c_program):
    out = subprocess.run([c_program("release_thread"), daemon.socket], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_installed_with_pkg_config_a_program_builds_and_runs(daemon, tmp_path):
    if shutil.which("pkg-config") is None:
        pytest.fail("pkg-config is needed to test the installed C API (apt-get install pkg-config)")
    lib = _lib_dir()
    prefix = tmp_path / "prefix"
    subprocess.run([str(REPO / "scripts" / "install-c"), "--from", str(lib), str(prefix)],
                   check=True, capture_output=True)
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "mmshare"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert f"-I{prefix}/include" in flags and "-lmmshare_c" in flags
    exe = tmp_path / "write_array"
    subprocess.run(["cc", "-o", str(exe), str(SOURCES / "write_array.c"), f"-I{SOURCES}", *flags,
                    f"-Wl,-rpath,{prefix}/lib"], check=True)
    out = subprocess.run([str(exe), daemon.socket, "installed"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.startswith("versions ")
    assert mmshare.connect(daemon.socket).open("installed").read().sum() == sum(range(100, 112))


def test_the_readmes_quick_start_in_c_compiles_and_runs_as_shown(daemon, tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start in C", 1)[1].split("\n## ", 1)[0]
    source = section.split("```c\n", 1)[1].split("```", 1)[0]
    python = section.split("<<'EOF'\n", 1)[1].split("EOF\n", 1)[0]
    (tmp_path / "hello.c").write_text(source)
    lib = _lib_dir()
    exe = tmp_path / "hello"
    subprocess.run(["cc", "-Wall", "-Werror", str(tmp_path / "hello.c"),
                    f"-I{REPO / 'clients' / 'c' / 'include'}", f"-L{lib}", "-lmmshare_c",
                    f"-Wl,-rpath,{lib}", "-o", str(exe)], check=True)
    env = dict(os.environ, MMSHARE_SOCKET=daemon.socket)
    hello = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    first = hello.stdout.readline()
    assert first.endswith("px[1] = 1.0; waiting for another writer...\n"), first
    subprocess.run([sys.executable, "-c", python], env=env, check=True)
    out, err = hello.communicate(timeout=60)
    assert hello.returncode == 0, err
    assert out.strip().endswith("px[1] = 2.0"), out


def test_the_cpp_wrapper_owns_handles_and_throws_errors(daemon):
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None:
        pytest.fail("no C++ compiler: install one (c++) to test mmshare.hpp")
    lib = _lib_dir()
    exe = pathlib.Path(daemon.root) / "cpp_roundtrip"
    subprocess.run([cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
                    str(SOURCES / "cpp_roundtrip.cpp"), f"-I{REPO / 'clients' / 'c' / 'include'}",
                    f"-L{lib}", "-lmmshare_c", f"-Wl,-rpath,{lib}"], check=True)
    out = subprocess.run([str(exe), daemon.socket], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "c++ ok"


def test_a_cmake_project_finds_the_installed_package_and_links_it(daemon, tmp_path):
    """scripts/install-c installs a CMake package: a project that does find_package(mmshare 0.1)
    builds against mmshare::mmshare (the shared library, by its SONAME) and
    mmshare::mmshare_static, and its programs see the same version in the header as in the
    library. A request for a version the package does not satisfy fails."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake is needed to test the CMake package (apt-get install cmake)")
    prefix = tmp_path / "prefix"
    subprocess.run([str(REPO / "scripts" / "install-c"), "--from", str(_lib_dir()), str(prefix)],
                   check=True, capture_output=True)
    lib = prefix / "lib"
    assert os.readlink(lib / "libmmshare_c.so.0") == "libmmshare_c.so.0.1.0"
    soname = subprocess.run(["readelf", "-d", str(lib / "libmmshare_c.so.0.1.0")],
                            capture_output=True, text=True, check=True).stdout
    assert "Library soname: [libmmshare_c.so.0]" in soname, soname
    build = tmp_path / "build"
    configure = subprocess.run([cmake, "-S", str(SOURCES / "cmake"), "-B", str(build),
                                f"-DCMAKE_PREFIX_PATH={prefix}"],
                               capture_output=True, text=True, timeout=300)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    made = subprocess.run([cmake, "--build", str(build)], capture_output=True, text=True,
                          timeout=600)
    assert made.returncode == 0, made.stdout + made.stderr
    for program in ["version_check", "version_check_static"]:
        out = subprocess.run([str(build / program), daemon.socket], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout == "header 0.1.0 library 0.1.0 number 100\nconnected\n", out.stdout
    needed = subprocess.run(["readelf", "-d", str(build / "version_check")],
                            capture_output=True, text=True, check=True).stdout
    assert "Shared library: [libmmshare_c.so.0]" in needed, needed
    # A version the package does not satisfy is refused at configure time.
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(n C)\nfind_package(mmshare 0.2 REQUIRED)\n")
    refused = subprocess.run([cmake, "-S", str(newer), "-B", str(newer / "b"),
                              f"-DCMAKE_PREFIX_PATH={prefix}"],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "0.1.0" in refused.stderr, refused.stderr


def test_history_start_points_and_presence_from_c(daemon, c_program):
    """A C program creates a stream with a history (the options builder), waits for a Python
    subscriber, publishes, then subscribes from the oldest frame kept and from a frame that is
    gone: every frame checked, the history delivered, the gap exact."""
    c = mmshare.connect(daemon.socket)
    prog = subprocess.Popen([c_program("presence"), daemon.socket, "hist"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert prog.stdout.readline().strip() == "ready", prog.stderr.read()
    assert c.describe("hist").history == 4
    sub = c.subscribe("hist")  # lossy: the C publisher waits for it, never behind it
    first = sub.receive(timeout=30)
    # Lossy and slow to look: it may have been lapped, and counts exactly what it skipped.
    assert first.missed_before == first.number
    first.release()
    out, err = prog.communicate(timeout=60)
    assert prog.returncode == 0, err
    history, gap = re.search(r"ok history=(\d+) gap=(\d+)", out).groups()
    assert int(history) >= 4 and int(gap) >= 2, out


def test_a_c_program_writes_records_python_reads_by_field(daemon, c_program):
    """A record dtype from C: created by its descr, its itemsize in mms_info, its fields from
    mms_array_descr/mms_stat_descr, written as a C struct of the same layout; NumPy reads the
    fields, padding skipped."""
    out = subprocess.run([c_program("records"), daemon.socket, "pts"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    a = mmshare.connect(daemon.socket).open("pts")
    assert a.dtype.names == ("x", "id") and a.dtype.fields["id"][1] == 8
    assert a.read()["x"].tolist() == [0.5, 1.5, 2.5]
    assert a.read()["id"].tolist() == [1000, 1001, 1002]
