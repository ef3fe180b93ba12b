"""Rust and Python processes on one array through the seqlock: the torn-read detector, both
ways round. Element i of version v is (v * K + i) mod 2**64 (as in the Rust worker)."""

import os
import subprocess
import sys
import time

import numpy as np

import mmshare

K = np.uint64(0x9E3779B97F4A7C15)
N = 1 << 17  # 1 MiB of u64


def pattern(version: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.uint64(version) * K + np.arange(N, dtype=np.uint64)


READER = """
import sys, time
import numpy as np
import mmshare
K = np.uint64(0x9E3779B97F4A7C15)
a = mmshare.connect(sys.argv[1]).open(sys.argv[2])
n = a.shape[0]
idx = np.arange(n, dtype=np.uint64)
end = time.monotonic() + float(sys.argv[3])
reads = last = 0
while time.monotonic() < end:
    v = a.version
    data = a.read()
    if not data.any():
        continue
    version = int(data[0]) * pow(int(K), -1, 2**64) % 2**64  # element 0 is version * K
    with np.errstate(over="ignore"):
        if not np.array_equal(data, np.uint64(version) * K + idx):
            print("torn snapshot accepted", flush=True); sys.exit(3)
    if version < last:
        print("version went backwards", flush=True); sys.exit(3)
    last = version
    reads += 1
print(f"reads={reads} retries={a.retries} last={last}", flush=True)
"""


def test_rust_writers_python_readers_never_see_a_torn_snapshot(daemon, worker, tmp_path):
    c = mmshare.connect(daemon.socket)
    c.create("xl", "<u8", (N,), memory=True)
    script = tmp_path / "reader.py"
    script.write_text(READER)
    writers = [subprocess.Popen([worker, "client-writer", daemon.socket, "xl", "3"],
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    readers = [subprocess.Popen([sys.executable, str(script), daemon.socket, "xl", "3"],
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [r.communicate(timeout=60)[0] for r in readers]
    for w in writers:
        out, _ = w.communicate(timeout=60)
        assert w.returncode == 0, out
    for r, out in zip(readers, outs):
        assert r.returncode == 0, out
    fields = [dict(kv.split("=") for kv in out.split()) for out in outs]
    assert sum(int(f["reads"]) for f in fields) > 10, outs
    assert sum(int(f["retries"]) for f in fields) > 0, f"no read overlapped a write: {outs}"


def test_python_writer_rust_readers_never_see_a_torn_snapshot(daemon, worker):
    c = mmshare.connect(daemon.socket)
    a = c.create("xp", "<u8", (N,), memory=True)
    readers = [subprocess.Popen([worker, "client-reader", daemon.socket, "xp", "3"],
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    end = time.monotonic() + 3.2
    writes = 0
    while time.monotonic() < end:
        data = pattern(a.version + 1)  # this is the only writer: the next version is known
        with a.write() as v:
            v[:] = data
        writes += 1
        os.sched_yield()  # like a producer, leave readers a window between frames
    outs = []
    for r in readers:
        out, _ = r.communicate(timeout=60)
        outs.append(out)
        assert r.returncode == 0, out
    retries = sum(int(dict(kv.split("=") for kv in o.split())["retries"]) for o in outs)
    reads = sum(int(dict(kv.split("=") for kv in o.split())["reads"]) for o in outs)
    assert writes > 10 and reads > 10, (writes, outs)
    assert retries > 0, f"no read overlapped a write: {outs}"
