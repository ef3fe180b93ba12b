"""Python rows of ./scripts/bench-peers: handing NumPy frames between two Python processes.

One-way latency (round trip / 2) of a ping-pong between two processes pinned to CPUs 0 and 1,
each side writing every byte of its message and reading every byte of the other's:
- mmshare stream from Python, copied out: `send()` (copied into a loaned slot by the native
  core) / `try_receive_into(out)` in a busy loop (the frame copied into the caller's array and
  released in the same call), then `out` read: the same work as the `shared_memory` case;
- mmshare stream from Python, read in place: `send()` / `try_receive()` in a busy loop, the
  sample's view read in place, released;
- `multiprocessing.shared_memory` + `multiprocessing.Lock`: the writer copies its message into
  the block and bumps a sequence word under the lock; the reader busy-polls the word, then
  copies the message out under the lock (a consistent copy, as mmshare's);
- `multiprocessing.Queue` of NumPy arrays (pickled through a pipe; the reader blocks in get);
- pyzmq over `ipc://`: a PAIR socket each way, the NumPy message sent with
  `send(msg, copy=False)` (zero-copy on the sending side), received with `recv(copy=False)`
  into a `zmq.Frame` read through `np.frombuffer` (no copy out), the reader blocking in `recv`
  (pyzmq's usual use; its polling would cost an exception per empty poll).

And a whole 64 MiB array copied out from one Python process: `read()` beside `np.array(view)`,
`read(out=)` beside `np.copyto` (`copy_cases`).

Usage: python_peers.py SOCKET --json FILE [--quick]; SOCKET is a running mmshared's; the figures
go to FILE (report.py makes the tables, with mmshare's Rust figure beside them).
"""

import json
import multiprocessing as mp
import os
import sys
import time
from multiprocessing import shared_memory

import numpy as np

import mmshare

SIZES = [(64, 5000), (4096, 5000), (1 << 20, 300)]


def pin(cpu):
    try:
        os.sched_setaffinity(0, {cpu % os.cpu_count()})
    except OSError:
        pass


def percentiles(v):
    v = sorted(v)
    at = lambda q: v[int((len(v) - 1) * q)]  # noqa: E731
    return at(0.5), at(0.99), at(0.999)


def timed(rounds, one):
    warm = rounds // 10
    times = []
    for i in range(warm + rounds):
        t = time.perf_counter_ns()
        one(i)
        if i >= warm:
            times.append((time.perf_counter_ns() - t) / 2)
    return percentiles(times)


def touch(a):
    # Reads every byte (as the Rust cases do, 8 at a time).
    return int(a.view(np.uint64).sum()) if a.nbytes % 8 == 0 else int(a.sum())


# -- mmshare stream ------------------------------------------------------------------------------

def mmshare_child(socket, ping, pong, size, total, ready, copy):
    pin(1)
    c = mmshare.connect(socket)
    sub = c.subscribe(ping, lossless=True, max_held=1)
    pub = c.publisher(pong)
    msg, out = np.full(size, 1, np.uint8), np.empty(size, np.uint8)
    ready.set()
    for _ in range(total):
        if copy:
            while sub.try_receive_into(out) is None:
                pass
            touch(out)
        else:
            while True:
                s = sub.try_receive()
                if s is not None:
                    break
            with s:
                touch(s.array)
        pub.send(msg)


def mmshare_case(socket, size, rounds, copy):
    c = mmshare.connect(socket)
    tag = f"py{os.getpid()}-{size}"
    ping, pong = f"{tag}.ping", f"{tag}.pong"
    for name in (ping, pong):
        c.create_stream(name, "u1", (size,), slots=4, memory=True)
    pub = c.publisher(ping)
    replies = c.subscribe(pong, lossless=True, max_held=1)
    ready = mp.Event()
    total = rounds + rounds // 10
    child = mp.Process(target=mmshare_child,
                       args=(socket, ping, pong, size, total, ready, copy))
    child.start()
    ready.wait(60)
    msg, out = np.full(size, 2, np.uint8), np.empty(size, np.uint8)

    def one(_):
        pub.send(msg)
        if copy:
            while replies.try_receive_into(out) is None:
                pass
            touch(out)
            return
        while True:
            s = replies.try_receive()
            if s is not None:
                break
        with s:
            touch(s.array)

    r = timed(rounds, one)
    child.join(60)
    for name in (ping, pong):
        c.delete(name)
    return r


# -- shared_memory + Lock ------------------------------------------------------------------------

def shm_views(shm, size):
    seq = np.ndarray((1,), dtype=np.uint64, buffer=shm.buf, offset=0)
    data = np.ndarray((size,), dtype=np.uint8, buffer=shm.buf, offset=64)
    return seq, data


def shm_send(lock, seq, data, msg):
    with lock:
        np.copyto(data, msg)
        seq[0] += 1


def shm_receive(lock, seq, data, seen, out):
    while int(seq[0]) == seen:
        pass
    with lock:
        np.copyto(out, data)
        now = int(seq[0])
    touch(out)
    return now


def shm_child(ping_name, pong_name, size, total, lock_ping, lock_pong, ready):
    pin(1)
    ping = shared_memory.SharedMemory(ping_name)
    pong = shared_memory.SharedMemory(pong_name)
    pseq, pdata = shm_views(ping, size)
    qseq, qdata = shm_views(pong, size)
    out, msg = np.empty(size, np.uint8), np.full(size, 1, np.uint8)
    ready.set()
    seen = 0
    for _ in range(total):
        seen = shm_receive(lock_ping, pseq, pdata, seen, out)
        shm_send(lock_pong, qseq, qdata, msg)
    del pseq, pdata, qseq, qdata
    ping.close()
    pong.close()


def shm_case(size, rounds):
    ping = shared_memory.SharedMemory(create=True, size=64 + size)
    pong = shared_memory.SharedMemory(create=True, size=64 + size)
    lock_ping, lock_pong = mp.Lock(), mp.Lock()
    pseq, pdata = shm_views(ping, size)
    qseq, qdata = shm_views(pong, size)
    pseq[0] = qseq[0] = 0
    ready = mp.Event()
    total = rounds + rounds // 10
    child = mp.Process(target=shm_child,
                       args=(ping.name, pong.name, size, total, lock_ping, lock_pong, ready))
    child.start()
    ready.wait(60)
    out, msg = np.empty(size, np.uint8), np.full(size, 2, np.uint8)
    seen = [0]

    def one(_):
        shm_send(lock_ping, pseq, pdata, msg)
        seen[0] = shm_receive(lock_pong, qseq, qdata, seen[0], out)

    r = timed(rounds, one)
    child.join(60)
    del pseq, pdata, qseq, qdata
    for s in (ping, pong):
        s.close()
        s.unlink()
    return r


# -- pyzmq ---------------------------------------------------------------------------------------

def zmq_child(ping_addr, pong_addr, size, total, ready):
    import zmq
    pin(1)
    ctx = zmq.Context()
    sin, sout = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    sin.connect(ping_addr)
    sout.connect(pong_addr)
    msg = np.full(size, 1, np.uint8)
    ready.set()
    for _ in range(total):
        touch(np.frombuffer(sin.recv(copy=False).buffer, np.uint8))
        sout.send(msg, copy=False)
    sin.close(linger=1000)
    sout.close(linger=1000)
    ctx.term()


def zmq_case(size, rounds):
    import tempfile

    import zmq
    d = tempfile.mkdtemp(prefix="mmshare-zmq-")
    ping_addr, pong_addr = f"ipc://{d}/ping", f"ipc://{d}/pong"
    ctx = zmq.Context()
    sout, sin = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    sout.bind(ping_addr)
    sin.bind(pong_addr)
    ready = mp.Event()
    total = rounds + rounds // 10
    child = mp.Process(target=zmq_child, args=(ping_addr, pong_addr, size, total, ready))
    child.start()
    ready.wait(60)
    msg = np.full(size, 2, np.uint8)

    def one(_):
        sout.send(msg, copy=False)
        touch(np.frombuffer(sin.recv(copy=False).buffer, np.uint8))

    r = timed(rounds, one)
    child.join(60)
    sout.close(linger=0)
    sin.close(linger=0)
    ctx.term()
    for name in ("ping", "pong"):
        try:
            os.unlink(os.path.join(d, name))
        except OSError:
            pass
    os.rmdir(d)
    return r


# -- multiprocessing.Queue -----------------------------------------------------------------------

def queue_child(qin, qout, size, total, ready):
    pin(1)
    msg = np.full(size, 1, np.uint8)
    ready.set()
    for _ in range(total):
        touch(qin.get())
        qout.put(msg)


def queue_case(size, rounds):
    qin, qout = mp.Queue(), mp.Queue()
    ready = mp.Event()
    total = rounds + rounds // 10
    child = mp.Process(target=queue_child, args=(qin, qout, size, total, ready))
    child.start()
    ready.wait(60)
    msg = np.full(size, 2, np.uint8)

    def one(_):
        qin.put(msg)
        touch(qout.get())

    r = timed(rounds, one)
    child.join(60)
    return r


# -- copying a whole array out -------------------------------------------------------------------

COPY_BYTES = 64 << 20


def copy_cases(socket, quick):
    """A whole shared array copied out from Python, each mmshare call beside the NumPy copy of
    the same mapping that does the same work without the seqlock: `read()` (a new array,
    consistent) against `np.array(view)` (a new array, unsynchronized), and `read(out=)` (into
    an array used again and again) against `np.copyto(out, view)`. One process, no writer; the
    calls alternate, and each row is the median of its repetitions."""
    c = mmshare.connect(socket)
    name = f"pycopy{os.getpid()}"
    size = COPY_BYTES >> (3 if quick else 0)
    shared = c.create(name, "u1", (size,))
    view = None
    try:
        shared.write(np.arange(size // 8, dtype=np.uint64).view(np.uint8))
        view = shared.array
        out, plain = np.empty(size, np.uint8), np.empty(size, np.uint8)
        pairs = [
            ("mmshare array.read() (a new array, consistent)", lambda: shared.read(),
             "np.array(view) (a new array, unsynchronized)", lambda: np.array(view)),
            ("mmshare array.read(out=) (into a reused array, consistent)",
             lambda: shared.read(out=out),
             "np.copyto(out, view) (into a reused array, unsynchronized)",
             lambda: np.copyto(plain, view)),
        ]
        reps = 5 if quick else 21
        rows = []
        for ours, f, theirs, g in pairs:
            times = {ours: [], theirs: []}
            for _ in range(reps + 1):  # the first round warms up, uncounted
                for case, call in ((ours, f), (theirs, g)):
                    t = time.perf_counter_ns()
                    call()
                    times[case].append(time.perf_counter_ns() - t)
            for case in (ours, theirs):
                median = sorted(times[case][1:])[reps // 2]
                rows.append({"case": case, "bytes": size, "reps": reps, "median_ns": median})
        np.testing.assert_array_equal(out, plain)
        return rows
    finally:
        del view
        shared.close()
        c.delete(name)


def fmt(ns):
    if ns >= 10_000:
        return f"{ns / 1e3:.0f} µs"
    if ns >= 1_000:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def main():
    socket = sys.argv[1]
    quick = "--quick" in sys.argv
    out = sys.argv[sys.argv.index("--json") + 1]
    pin(0)
    rows = []
    for size, rounds in SIZES:
        rounds = max(rounds // (10 if quick else 1), 20)
        cases = [
            ("mmshare stream from Python (send / try_receive_into)",
             mmshare_case(socket, size, rounds, copy=True)),
            ("mmshare stream from Python (send / try_receive, in place)",
             mmshare_case(socket, size, rounds, copy=False)),
            ("multiprocessing.shared_memory + Lock (consistent copy)", shm_case(size, rounds)),
            ("multiprocessing.Queue of NumPy arrays", queue_case(size, rounds)),
            ("pyzmq PAIR over ipc:// (send / recv, copy=False)", zmq_case(size, rounds)),
        ]
        for name, (p50, p99, p999) in cases:
            print(f"python      {size:>7} B  {name:<56} p50 {fmt(p50)}  p99 {fmt(p99)}  "
                  f"p99.9 {fmt(p999)}", file=sys.stderr)
            rows.append({"case": name, "size": size, "rounds": rounds, "p50_ns": p50,
                         "p99_ns": p99, "p999_ns": p999})
    copies = copy_cases(socket, quick)
    for r in copies:
        print(f"python      {r['bytes'] >> 20:>5} MiB  {r['case']:<60} median "
              f"{r['median_ns'] / 1e6:.2f} ms", file=sys.stderr)
    with open(out, "w") as f:
        json.dump({"python": sys.version.split()[0], "numpy": np.__version__, "rows": rows,
                   "copies": copies}, f)


if __name__ == "__main__":
    main()
