"""asyncio from Python: awaits of frames, versions and free slots, woken by the Rust core's
waiter thread through an eventfd the loop watches (no thread per waiter), cancel-safe, against
a real daemon and writers in other processes."""

import asyncio
import ctypes
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

import mmshare
from conftest import control_state

SLEEPERS = 0x40  # the stream's control header: subscribers asleep on its futex word
ARRAY_SLEEPERS = 0x0  # the array's control state: its sleeper count (first word)


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def sleepers(name: str, at: int = SLEEPERS) -> int:
    return ctypes.c_uint32.from_buffer(control_state(name), at).value


def test_a_thousand_awaits_on_fifty_streams_are_woken_from_another_process(daemon, worker):
    """1000 tasks await a frame on 50 streams (20 subscribers each); one frame per stream,
    published by another process, wakes them all; the process grew by at most 2 OS threads
    (the core's waiter thread), and nothing stays counted as a sleeper."""
    c = mmshare.connect(daemon.socket)
    names = [f"s{i}" for i in range(50)]
    subs = []
    for name in names:
        c.create_stream(name, "<u8", (4,), slots=24, max_subscribers=20)
        subs += [c.subscribe(name, lossless=True, max_held=1) for _ in range(20)]
    before = threads()

    async def main():
        tasks = [asyncio.create_task(s.areceive(timeout=60)) for s in subs]
        await asyncio.sleep(0.3)  # every task polled and registered
        assert not any(t.done() for t in tasks)
        assert all(sleepers(n) == 20 for n in names)
        grown = threads() - before
        subprocess.run([worker, "client-poke", daemon.socket, *names], check=True, timeout=60)
        samples = await asyncio.gather(*tasks)
        return samples, grown

    samples, grown = asyncio.run(main())
    assert grown <= 2, f"{grown} extra threads for 1000 awaits"
    assert all(s.number == 0 and s.array.tolist() == [1, 2, 3, 4] for s in samples)
    assert all(sleepers(n) == 0 for n in names)
    for s in samples:
        s.release()


def test_cancelled_awaits_take_nothing_and_leave_nothing_counted(daemon, worker):
    """Under load (200 awaits on 10 streams), half the tasks are cancelled and the others
    time out: no frame is taken by any of them (each subscriber's next receive is frame 0),
    and every sleeper count is back to 0."""
    c = mmshare.connect(daemon.socket)
    names = [f"c{i}" for i in range(10)]
    subs = []
    for name in names:
        c.create_stream(name, "<u8", (4,), slots=24, max_subscribers=20)
        subs += [c.subscribe(name, lossless=True, max_held=1) for _ in range(20)]

    async def main():
        tasks = [asyncio.create_task(s.areceive(timeout=None if i % 2 else 0.3))
                 for i, s in enumerate(subs)]
        await asyncio.sleep(0.1)
        for t in tasks[1::2]:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results[1::2])
        assert all(isinstance(r, mmshare.Timeout) for r in results[0::2]), results[0]

    asyncio.run(main())
    assert all(sleepers(n) == 0 for n in names)
    subprocess.run([worker, "client-poke", daemon.socket, *names], check=True, timeout=60)
    for s in subs:
        with s.receive(timeout=10) as sample:
            assert sample.number == 0 and sample.missed_before == 0


def test_array_versions_and_free_slots_are_awaited(daemon):
    """`await_version` wakes on a write from another handle; `aloan` waits while a lossless
    subscriber is a ring behind and goes on when it releases; both time out cleanly."""
    c = mmshare.connect(daemon.socket)
    a = c.create("a", "f4", (3,))
    other = mmshare.connect(daemon.socket).open("a", mode="r+")
    c.create_stream("ring", "u1", (2,), slots=3)
    pub, sub = c.publisher("ring"), c.subscribe("ring", lossless=True, max_held=1)

    async def main():
        waiter = asyncio.create_task(a.await_version(0, timeout=30))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        with other.write() as w:
            w[:] = 2
        assert await waiter == 1
        with pytest.raises(mmshare.Timeout):
            await a.changed(timeout=0.1)
        # Fill the ring: the lossless subscriber has taken nothing.
        for _ in range(3):
            loan = await pub.aloan(timeout=5)
            with loan as frame:
                frame[:] = 1
        with pytest.raises(mmshare.Timeout):
            await pub.aloan(timeout=0.2)
        blocked = asyncio.create_task(pub.aloan(timeout=30))
        await asyncio.sleep(0.1)
        assert not blocked.done()
        with sub.receive(timeout=5):
            pass  # taken and released: a slot frees up
        loan = await blocked
        with loan as frame:
            frame[:] = 3
        assert loan.number == 3

    asyncio.run(main())


def test_uvloop_wakes_the_same_way(daemon):
    uvloop = pytest.importorskip("uvloop")
    c = mmshare.connect(daemon.socket)
    c.create_stream("uv", "u1", (2,), slots=4)
    pub, sub = c.publisher("uv"), c.subscribe("uv", lossless=True)

    async def main():
        task = asyncio.create_task(sub.areceive(timeout=30))
        await asyncio.sleep(0.05)
        pub.send(np.array([5, 6], np.uint8))
        with await task as sample:
            return sample.array.tolist()

    assert uvloop.run(main()) == [5, 6]


def test_the_asyncio_example_serves_the_newest_frame(daemon):
    """clients/python/examples/serve_latest.py, as the README runs it: an asyncio HTTP server
    whose responses are the newest frame of a stream another client publishes."""
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    c = mmshare.connect(daemon.socket)
    c.create_stream("camera.latest", "u1", (4,), slots=4)
    env = dict(os.environ, MMSHARE_SOCKET=daemon.socket)
    server = subprocess.Popen([sys.executable, str(root / "clients/python/examples/serve_latest.py"),
                               "camera.latest", "127.0.0.1", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stdout.readline()
        assert line.startswith("serving on http://"), line + server.stderr.read()
        url = line.split()[-1]
        pub = c.publisher("camera.latest")
        for n in range(3):
            pub.send(np.full(4, n, np.uint8))
        body = b""
        for _ in range(100):
            body = urllib.request.urlopen(url, timeout=10).read()
            if body.startswith(b"frame 2"):
                break
            import time
            time.sleep(0.05)
        assert body.startswith(b"frame 2:") and b"[2, 2, 2, 2]" in body, body
    finally:
        server.kill()
        server.wait()


def test_presence_is_awaited(daemon, worker):
    """`await_for` answers when the stream is created (one request, no thread), and times out
    cleanly; `await_for_subscribers` is woken by a subscriber in another process; `async for`
    over a watch sees the creation, the subscriber and the deletion."""
    c = mmshare.connect(daemon.socket)

    async def main():
        watch = c.watch("pres")  # returns once the daemon has it in place
        assert await watch.anext(0.05) is None
        waiter = asyncio.create_task(c.await_for("pres.s", timeout=30))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        before = threads()
        c.create_stream("pres.s", "<u8", (4,), slots=8)
        info = await waiter
        assert info.name == "pres.s" and threads() == before
        with pytest.raises(mmshare.Timeout):
            await c.await_for("pres.never", timeout=0.2)
        pub = c.publisher("pres.s")
        joined = asyncio.create_task(pub.await_for_subscribers(1, timeout=30))
        await asyncio.sleep(0.1)
        assert not joined.done()
        sub = subprocess.Popen([worker, "stream-sub", daemon.socket, "pres.s", "lossless", "0"],
                               stdout=subprocess.PIPE, text=True)
        assert await joined == 1
        with pytest.raises(mmshare.Timeout):
            await pub.await_for_subscribers(2, timeout=0.2)
        sub.kill()
        sub.wait()
        seen = []
        async for event in watch:
            seen.append((event.kind, event.name))
            if event.kind == "subscribers" and event.count == 1:
                break
        assert ("created", "pres.s") in seen
        watch.close()
        assert await watch.anext(1) is None

    asyncio.run(main())


def held_entries(name: str) -> int:
    """Holds recorded in the stream's subscriber records (control state, records from 0x1000,
    256 bytes each, held entries at +128)."""
    state = control_state(name)
    count = 0
    for at in range(0x1000, len(state), 256):
        count += sum(1 for k in range(16)
                     if ctypes.c_uint64.from_buffer(state, at + 128 + 8 * k).value)
    return count


def test_several_waits_of_one_subscriber_count_it_once(daemon):
    """Two awaits and a blocking receive in another thread, all on one subscriber: the stream
    counts it asleep once, and not at all once every wait ended (one was cancelled)."""
    import threading
    c = mmshare.connect(daemon.socket)
    c.create_stream("twice", "u1", (1,), slots=8)
    sub = c.subscribe("twice", lossless=True, max_held=4)
    pub = c.publisher("twice")

    async def main():
        first = asyncio.create_task(sub.areceive(timeout=30))
        second = asyncio.create_task(sub.areceive(timeout=30))
        blocked = threading.Thread(target=lambda: sub.receive(timeout=30).release())
        blocked.start()
        await asyncio.sleep(0.2)
        assert sleepers("twice") == 1
        second.cancel()
        await asyncio.sleep(0.05)
        assert sleepers("twice") == 1  # the others still wait
        pub.send(np.array([1], np.uint8))
        pub.send(np.array([2], np.uint8))
        (await first).release()
        await asyncio.to_thread(blocked.join, 30)

    asyncio.run(main())
    assert sleepers("twice") == 0


def test_a_stall_policy_acts_for_an_awaited_loan(daemon):
    """`aloan` applies the stream's stall policy as `loan` does: a lossless subscriber that
    takes nothing is demoted after `stall_after`, and the loan goes on."""
    c = mmshare.connect(daemon.socket)
    c.create_stream("stall", "u1", (1,), slots=3, on_stall="demote", stall_after=0.2)
    sub = c.subscribe("stall", lossless=True, max_held=1)
    pub = c.publisher("stall")
    for n in range(3):
        pub.send(np.array([n], np.uint8))

    async def main():
        loan = await pub.aloan(timeout=10)
        with loan as frame:
            frame[:] = 9
        return loan.number

    assert asyncio.run(main()) == 3
    assert sub.demoted


def test_one_reader_per_watch_and_close_ends_a_pending_one(daemon):
    c = mmshare.connect(daemon.socket)

    async def main():
        watch = c.watch("w.")
        pending = asyncio.create_task(watch.anext(30))
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError, match="one reader at a time"):
            await watch.anext(1)
        watch.close()
        assert await asyncio.wait_for(pending, 5) is None

    asyncio.run(main())


def test_a_sample_inherited_by_fork_keeps_its_hold_in_the_parent(daemon):
    """A child that releases (or drops) a sample it inherited does not free the parent's hold."""
    import gc
    c = mmshare.connect(daemon.socket)
    c.create_stream("heldfork", "u1", (1,), slots=4)
    sub = c.subscribe("heldfork", lossless=True)
    c.publisher("heldfork").send(np.array([1], np.uint8))
    sample = sub.receive(timeout=5)
    assert held_entries("heldfork") == 1
    pid = os.fork()
    if pid == 0:
        try:
            sample.release()
            gc.collect()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert held_entries("heldfork") == 1
    sample.release()
    assert held_entries("heldfork") == 0


def test_closing_a_handle_ends_its_pending_awaits(daemon):
    """`close()` during a pending `areceive` or `aloan` ends it with an error at once (the
    subscription then goes, as a closed handle's does); nothing stays counted."""
    c = mmshare.connect(daemon.socket)
    c.create_stream("closing", "u1", (1,), slots=4)
    sub = c.subscribe("closing", lossless=True, max_held=1)
    pub = c.publisher("closing")

    async def main():
        pending = asyncio.create_task(sub.areceive(timeout=30))
        await asyncio.sleep(0.1)
        sub.close()
        with pytest.raises(mmshare.MmshareError, match="was closed meanwhile"):
            await asyncio.wait_for(pending, 5)
        other = c.subscribe("closing", lossless=True, max_held=1)
        for n in range(4):  # a whole ring the lossless subscriber has not taken
            pub.send(np.array([n], np.uint8))
        blocked = asyncio.create_task(pub.aloan(timeout=30))
        await asyncio.sleep(0.1)
        pub.close()
        with pytest.raises(mmshare.MmshareError, match="was closed meanwhile"):
            await asyncio.wait_for(blocked, 5)
        other.close()

    asyncio.run(main())
    assert sleepers("closing") == 0
