"""Streams from Python, against Rust on the other side (mmshare-test-worker) and a real daemon.

Frames are u64 arrays whose element i of frame n is n * K + i (mod 2**64), the pattern the
Rust worker publishes and checks (tests/src/main.rs), so every frame is checked whole and by
its number on both sides.
"""

import os
import select
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mmshare

K = np.uint64(0x9E3779B97F4A7C15)
ELEMS = 64


def pattern(n: int) -> np.ndarray:
    return np.full(ELEMS, n, dtype=np.uint64) * K + np.arange(ELEMS, dtype=np.uint64)


def line_of(proc, timeout=60) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def stream(client, name, slots=8, **kw):
    return client.create_stream(name, "<u8", (ELEMS,), slots=slots, **kw)


def test_python_publisher_to_rust_lossless_subscribers(daemon, worker):
    """10 000 frames filled in place from Python reach two Rust lossless subscribers, each
    checked whole, in order, none missed or repeated."""
    c = mmshare.connect(daemon.socket)
    stream(c, "py2rs")
    subs = [subprocess.Popen([worker, "stream-sub", daemon.socket, "py2rs", "lossless", "9999"],
                             stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for s in subs:
        assert line_of(s).startswith("subscribed next=0")
    pub = c.publisher("py2rs")
    for n in range(10_000):
        loan = pub.loan(timeout=30)
        with loan as frame:
            frame[:] = pattern(n)
        assert loan.number == n
    for s in subs:
        out, _ = s.communicate(timeout=120)
        assert s.returncode == 0, out
        assert "received=10000 missed=0 last=9999 torn=0" in out, out


def test_rust_publisher_to_a_python_lossless_subscriber(daemon, worker):
    """10 000 frames from a Rust publisher, received in Python in order, each checked whole."""
    c = mmshare.connect(daemon.socket)
    stream(c, "rs2py")
    sub = c.subscribe("rs2py", lossless=True)
    pub = subprocess.Popen([worker, "stream-pub", daemon.socket, "rs2py", "10000"],
                           stdout=subprocess.PIPE, text=True)
    for n in range(10_000):
        with sub.receive(timeout=30) as sample:
            assert (sample.number, sample.missed_before) == (n, 0)
            np.testing.assert_array_equal(sample.array, pattern(n))
    out, _ = pub.communicate(timeout=60)
    assert pub.returncode == 0 and "published 10000" in out, out
    assert (sub.received, sub.missed) == (10_000, 0)
    with pytest.raises(mmshare.Timeout):
        sub.receive(timeout=0.05)


def test_frames_copied_into_the_callers_buffer_arrive_whole_and_in_order(daemon, worker):
    """10 000 frames from a Rust publisher, copied by a lossless Python subscriber into one
    buffer it owns, half by `receive_into`, half by polling `try_receive_into`: each one
    whole, in order, none missed; nothing is held afterwards (each frame was released at
    once: a subscriber allowed one hold never runs out of them)."""
    c = mmshare.connect(daemon.socket)
    stream(c, "into")
    sub = c.subscribe("into", lossless=True, max_held=1)
    pub = subprocess.Popen([worker, "stream-pub", daemon.socket, "into", "10000"],
                           stdout=subprocess.PIPE, text=True)
    out = np.empty(ELEMS, np.uint64)
    for n in range(10_000):
        out[:] = 0
        if n % 2:
            got = None
            while got is None:
                got = sub.try_receive_into(out)
        else:
            got = sub.receive_into(out, timeout=30)
        assert got == n
        np.testing.assert_array_equal(out, pattern(n))
    text, _ = pub.communicate(timeout=60)
    assert pub.returncode == 0 and "published 10000" in text, text
    assert (sub.received, sub.missed) == (10_000, 0)
    out[:] = 7
    assert sub.try_receive_into(out) is None
    assert (out == 7).all(), "an empty poll wrote into the buffer"
    with pytest.raises(mmshare.Timeout, match="no frame within"):
        sub.receive_into(out, timeout=0.05)
    # Any C-contiguous writable buffer of the frame's bytes takes the bytes as they are.
    raw = bytearray(ELEMS * 8)
    pub = c.publisher("into")
    pub.send(pattern(10_000))
    assert sub.receive_into(raw, timeout=5) == 10_000
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint64), pattern(10_000))
    # A poll copies into them too: an exact ndarray is borrowed with the subscriber taken,
    # anything else (a bytearray, an ndarray subclass) the general way.
    class Sub(np.ndarray):
        pass
    for n, dst in enumerate([bytearray(ELEMS * 8), np.zeros(ELEMS, np.uint64).view(Sub)],
                            start=10_001):
        pub.send(pattern(n))
        assert sub.try_receive_into(dst) == n
        np.testing.assert_array_equal(np.frombuffer(dst, np.uint64), pattern(n))


def test_receive_into_refuses_what_cannot_hold_the_frame(daemon):
    """Wrong sizes, read-only and non-contiguous buffers, and variable-size streams are clear
    errors naming what was wanted (once a frame is there for them); nothing is taken from the
    stream meanwhile."""
    c = mmshare.connect(daemon.socket)
    stream(c, "into-bad")
    pub, sub = c.publisher("into-bad"), c.subscribe("into-bad", lossless=True)
    # With nothing to copy, a poll answers before it looks at the buffer.
    assert sub.try_receive_into(np.empty(1, np.uint8)) is None
    pub.send(pattern(0))
    with pytest.raises(ValueError, match=f"of {ELEMS * 8} bytes \\(got {(ELEMS - 1) * 8} bytes"):
        sub.try_receive_into(np.empty(ELEMS - 1, np.uint64))
    frozen = np.empty(ELEMS, np.uint64)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        sub.receive_into(frozen, timeout=1)
    with pytest.raises(ValueError, match="C-contiguous"):
        sub.try_receive_into(np.empty(2 * ELEMS, np.uint64)[::2])
    with pytest.raises(ValueError, match="C-contiguous"):
        sub.try_receive_into(b"x" * (ELEMS * 8))      # bytes: read-only
    out = np.empty(ELEMS, np.uint64)
    assert sub.try_receive_into(out) == 0, "a refused call took the frame"
    np.testing.assert_array_equal(out, pattern(0))
    c.create_stream("into-var", "<u2", (8, 4), slots=4, variable=True)
    vsub = c.subscribe("into-var")
    with pytest.raises(mmshare.MmshareError, match="fixed-size frames only"):
        vsub.try_receive_into(np.empty((8, 4), np.uint16))


def test_a_poll_into_an_array_like_one_taken_before_still_checks_it(daemon):
    """Once a poll has copied a frame into an exact ndarray, later ones of the same dtype and
    shape skip NumPy's buffer export (they are read straight from the array object); one of
    them that is read-only or not contiguous is still refused, and nothing is taken. Others of
    the frame's bytes (another shape, another dtype) take the frame as before."""
    c = mmshare.connect(daemon.socket)
    stream(c, "into-known")
    pub, sub = c.publisher("into-known"), c.subscribe("into-known", lossless=True)
    out = np.empty(ELEMS, np.uint64)
    pub.send(pattern(0))
    assert sub.try_receive_into(out) == 0            # the shape and dtype are known from here
    pub.send(pattern(1))
    frozen = np.zeros(ELEMS, np.uint64)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        sub.try_receive_into(frozen)
    assert (frozen == 0).all(), "a read-only array was written"
    backing = np.zeros(2 * ELEMS, np.uint64)
    with pytest.raises(ValueError, match="C-contiguous"):
        sub.try_receive_into(backing[::2])
    assert (backing == 0).all(), "a strided view's memory was written"
    with pytest.raises(ValueError, match=f"got {(ELEMS - 1) * 8} bytes"):
        sub.try_receive_into(np.zeros(ELEMS - 1, np.uint64))
    with pytest.raises(ValueError, match=f"got {ELEMS * 4} bytes"):
        sub.try_receive_into(np.zeros(ELEMS, np.uint32))    # the shape, another dtype
    # An array of Python objects has the frame's bytes (8 per reference) and is refused: the
    # frame would overwrite the references.
    refs = np.empty(ELEMS, object)
    with pytest.raises(ValueError, match="plain data, not Python objects"):
        sub.try_receive_into(refs)
    assert all(r is None for r in refs)
    # The native poller reads only a real numpy.ndarray as an array object.
    with pytest.raises(TypeError, match="expected numpy.ndarray"):
        sub._native.poller(bytearray)
    # Only a plain number's dtype is remembered: the item size of a flexible one can be
    # changed in place (dtype.__setstate__), after which an array of it is smaller than the
    # frame though its dtype object and shape are the ones taken before.
    stream(c, "into-void")
    vpub, vsub = c.publisher("into-void"), c.subscribe("into-void", lossless=True)
    void = np.dtype(f"V{ELEMS * 8}")
    vpub.send(pattern(0))
    assert vsub.try_receive_into(np.empty(1, void)) == 0
    state = list(void.__reduce__()[2])
    state[5] = 3                                        # the item size
    void.__setstate__(tuple(state))
    vpub.send(pattern(1))
    with pytest.raises(ValueError, match="got 3 bytes"):
        vsub.try_receive_into(np.empty(1, void))
    square = np.empty((8, ELEMS // 8), np.uint64)    # the frame's bytes in another shape
    assert sub.try_receive_into(square) == 1, "a refused call took the frame"
    np.testing.assert_array_equal(square.ravel(), pattern(1))
    for n in range(2, 6):
        pub.send(pattern(n))
        dst = np.empty(ELEMS, np.uint64) if n % 2 else np.empty(ELEMS * 8, np.uint8)
        assert sub.try_receive_into(dst) == n
        np.testing.assert_array_equal(dst.view(np.uint64), pattern(n))


def test_send_takes_a_ready_frame_as_it_is_and_converts_anything_else(daemon):
    """A frame that already is the stream's (dtype, shape, C-contiguous; owning its memory or a
    view) and one that is not (strided, another byte order) arrive the same; a bad casting rule is refused either
    way."""
    c = mmshare.connect(daemon.socket)
    stream(c, "send-paths")
    pub, sub = c.publisher("send-paths"), c.subscribe("send-paths", lossless=True)
    ready = pattern(1)
    strided = np.repeat(pattern(2), 2)[::2]
    assert not strided.flags.c_contiguous
    view = np.concatenate([pattern(4), pattern(5)])[:ELEMS]      # a view, contiguous
    frames = [ready, strided, pattern(3).astype(">u8"), view]
    for frame in frames:
        pub.send(frame)
    out = np.empty(ELEMS, np.uint64)
    for n in range(1, 5):
        sub.receive_into(out, timeout=5)
        np.testing.assert_array_equal(out, pattern(n))
    with pytest.raises(ValueError, match="casting must be one of"):
        pub.send(ready, casting="sometimes")


def test_the_native_send_and_poll_refuse_what_the_python_methods_refuse(daemon):
    """A handle's `send` and `try_receive_into` are the native core's methods (no Python code
    runs): they still take only an exact ndarray as it is (a subclass, bytes, another dtype of
    the same size go the converting way, with its checks and errors), refuse once the handle
    is closed (a method kept from before included) and in a forked child, and hold no
    reference back to the handle (dropping it detaches at once, with the cycle collector off)."""
    import gc
    c = mmshare.connect(daemon.socket)
    c.create_stream("native-send", "<u4", (4,), slots=4)
    pub, sub = c.publisher("native-send"), c.subscribe("native-send", lossless=True)
    out = np.empty(4, np.uint32)

    class Tagged(np.ndarray):
        pass

    sent = [
        (np.arange(4, dtype=np.uint32), None),                      # as it is
        (np.arange(4, 8, dtype=np.uint32).view(Tagged), None),     # a subclass: converted
        (np.arange(8, 12, dtype=np.int32), "unsafe"),               # same size, other dtype
        (np.arange(12, 16, dtype=">u4"), None),                     # other byte order
    ]
    for frame, casting in sent:
        pub.send(frame, casting=casting)  # casting None: the default rule
    for n in range(4):
        assert sub.try_receive_into(out) == n
        np.testing.assert_array_equal(out, np.arange(4 * n, 4 * n + 4))
    with pytest.raises(TypeError, match="float32"):
        pub.send(np.zeros(4, np.float32))                  # same size, refused by casting
    with pytest.raises(TypeError, match="expected numpy.ndarray"):
        pub._native.sender(bytearray, None, [4], None, None)  # only NumPy's type is read raw
    with pytest.raises(ValueError, match=r"frame shape \(\) is not the stream's \(4,\)"):
        pub.send(bytes(16))                                 # bytes: converted, refused
    with pytest.raises(ValueError, match=r"frame shape \(2, 2\) is not the stream's \(4,\)"):
        pub.send(np.zeros((2, 2), np.uint32))               # its bytes, not its shape
    with pytest.raises(ValueError, match=r"frame shape \(3,\) is not the stream's \(4,\)"):
        pub.send(np.zeros(3, np.uint32))                    # the dtype, fewer elements
    with pytest.raises(ValueError, match="casting must be one of"):
        pub.send(np.arange(4, dtype=np.uint32), casting=3)
    c.create_stream("native-send-u1", "u1", (4,), slots=4)
    with c.publisher("native-send-u1") as bytes_pub:
        with pytest.raises(ValueError, match=r"frame shape \(\) is not"):
            bytes_pub.send(bytes(4))  # its buffer has the frame's format and shape: still not an array
    assert sub.try_receive_into(out) is None

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: both refused
        verdict = b""
        for call in (lambda: pub.send(np.zeros(4, np.uint32)), lambda: sub.try_receive_into(out)):
            try:
                call()
                verdict += b"used "
            except mmshare.WrongProcess:
                verdict += b"refused "
            except BaseException:
                verdict += b"other "
        os.write(write, verdict)
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 100) == b"refused refused "
    assert sub.try_receive_into(out) is None  # nothing was sent from the child

    kept_send, kept_poll = pub.send, sub.try_receive_into
    pub.close()
    sub.close()
    with pytest.raises(mmshare.MmshareError, match="publisher of stream 'native-send' is closed"):
        kept_send(np.zeros(4, np.uint32))
    with pytest.raises(mmshare.MmshareError, match="subscriber of stream 'native-send' is closed"):
        kept_poll(out)
    # As any bound method, each keeps its handle's resources until it goes: then the
    # publisher is detached (another attaches) and the lossless subscription is gone (it does
    # not hold the ring: 8 frames go into 4 slots), with the cycle collector off.
    del kept_send, kept_poll
    gc.disable()
    try:
        with c.publisher("native-send") as again:
            for n in range(8):
                again.send(np.full(4, n, np.uint32), timeout=1)
    finally:
        gc.enable()
    # The one-line use: the handle goes at once, its send keeps the publisher for the call.
    assert c.publisher("native-send").send(np.zeros(4, np.uint32)) == 12  # after 4 + 8

    gc.disable()
    try:
        pub = c.publisher("native-send")
        pub.send(np.zeros(4, np.uint32))
        del pub  # no cycle: the publisher detaches now, not at the next collection
        c.publisher("native-send").close()
    finally:
        gc.enable()


def test_a_slow_lossy_python_subscriber_counts_every_frame_it_misses(daemon, worker):
    c = mmshare.connect(daemon.socket)
    stream(c, "slow", slots=4)
    sub = c.subscribe("slow")
    pub = subprocess.Popen([worker, "stream-pub", daemon.socket, "slow", "3000"],
                           stdout=subprocess.PIPE, text=True)
    numbers, missed_before = [], 0
    for sample in sub:
        np.testing.assert_array_equal(sample.array, pattern(sample.number))
        numbers.append(sample.number)
        missed_before += sample.missed_before
        if sample.number == 2999:
            break
        os.sched_yield()
        if sample.number % 50 == 0:
            import time
            time.sleep(0.002)
    out, _ = pub.communicate(timeout=60)
    assert pub.returncode == 0, out
    assert numbers == sorted(set(numbers)), "a frame came twice or out of order"
    assert sub.received == len(numbers)
    assert sub.received + sub.missed == 3000
    assert missed_before == sub.missed


HOLDER = textwrap.dedent("""
    import sys, time, mmshare
    c = mmshare.connect(sys.argv[1])
    sub = c.subscribe(sys.argv[2], lossless=True, max_held=2)
    print("subscribed", flush=True)
    held = [sub.receive(timeout=30), sub.receive(timeout=30)]
    print("holding", [s.number for s in held], flush=True)
    time.sleep(600)
""")


def test_a_killed_python_subscriber_holding_samples_does_not_stop_the_publisher(daemon,
                                                                                tmp_path):
    """A lossless Python subscriber holds two samples and is SIGKILLed: its hold and cursor
    would stall the publisher for good, but the daemon sees its connection close and reclaims
    its record, so the publisher goes on (well within the loan timeout)."""
    c = mmshare.connect(daemon.socket)
    stream(c, "killed", slots=4)
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    holder = subprocess.Popen([sys.executable, str(script), daemon.socket, "killed"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert line_of(holder) == "subscribed"
        pub = c.publisher("killed")
        pub.send(pattern(0))
        pub.send(pattern(1))
        assert line_of(holder) == "holding [0, 1]"
        # The ring is 4 slots: with frames 0 and 1 held and unread frames kept for the
        # subscriber, the publisher would wait for it from here on.
        import time
        killed = time.monotonic()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        for n in range(2, 40):
            assert pub.send(pattern(n), timeout=10) == n
        # Measured, not asserted (timing is the machine's): the issue asks for < 1 s.
        print(f"the publisher went on {time.monotonic() - killed:.3f} s after the SIGKILL")
        assert c.describe("killed").subscribers == ()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_sample_is_read_only_and_unusable_after_release(daemon):
    c = mmshare.connect(daemon.socket)
    stream(c, "ro")
    pub, sub = c.publisher("ro"), c.subscribe("ro")
    pub.send(pattern(0))
    sample = sub.receive(timeout=10)
    assert isinstance(sample, mmshare.Sample)
    a = sample.array
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0] = 1
    with pytest.raises(ValueError):
        a.flags.writeable = True
    assert sample.is_intact() and sample.published_ns > 0
    sample.release()
    assert sample.released and not sample.is_intact()
    with pytest.raises(mmshare.MmshareError, match="released"):
        sample.array
    # The view taken before the release still shows frame 0: its hold lasts while it exists.
    for n in range(1, 30):
        pub.send(pattern(n))
    np.testing.assert_array_equal(a, pattern(0))


def test_views_kept_after_release_hold_their_slot_until_they_go(daemon):
    """A released sample whose view is kept still holds its slot (never reused under the
    view), so it counts against max_held; once the view goes, the hold goes."""
    c = mmshare.connect(daemon.socket)
    stream(c, "views")
    pub, sub = c.publisher("views"), c.subscribe("views", max_held=1)
    pub.send(pattern(0))
    pub.send(pattern(1))
    with sub.receive(timeout=10) as sample:
        kept = sample.array[2:5]
    with pytest.raises(mmshare.HoldLimit):
        sub.receive(timeout=10)
    np.testing.assert_array_equal(kept, pattern(0)[2:5])
    del kept, sample
    with sub.receive(timeout=10) as sample:
        assert sample.number == 1


def test_a_loan_that_raises_is_never_delivered_and_numbers_continue(daemon):
    c = mmshare.connect(daemon.socket)
    stream(c, "abandon")
    pub, sub = c.publisher("abandon"), c.subscribe("abandon", lossless=True)
    loan = pub.loan()
    with pytest.raises(RuntimeError):
        with loan as frame:
            frame[:] = 7
            raise RuntimeError("camera failed")
    assert loan.number is None and not frame.flags.writeable
    with pytest.raises(mmshare.Timeout):
        sub.receive(timeout=0.05)
    assert pub.send(pattern(0)) == 0
    with sub.receive(timeout=10) as sample:
        assert (sample.number, sample.missed_before) == (0, 0)
        np.testing.assert_array_equal(sample.array, pattern(0))


def test_latest_and_the_daemons_view_of_a_stream(daemon):
    c = mmshare.connect(daemon.socket)
    info = stream(c, "view", slots=6)
    assert (info.slots, info.shape, info.dtype, info.published) == (6, (ELEMS,), "<u8", 0)
    pub = c.publisher("view")
    lossy, lossless = c.subscribe("view"), c.subscribe("view", lossless=True, max_held=1)
    assert lossy.latest() is None
    for n in range(3):
        pub.send(pattern(n))
    with lossy.latest() as newest:
        assert (newest.number, newest.missed_before) == (2, 2)
    assert lossy.missed == 2
    with pytest.raises(mmshare.Busy):
        c.publisher("view")
    d = c.describe("view")
    assert isinstance(d, mmshare.StreamInfo) and d.published == 3
    assert d.publisher == os.getpid()
    modes = sorted((s.lossless, s.lag) for s in d.subscribers)
    assert modes == [(False, 0), (True, 3)], d.subscribers
    kinds = {type(x).__name__: x.name for x in c.list_all()}
    assert kinds == {"StreamInfo": "view"}
    with pytest.raises(mmshare.WrongKind):
        c.open("view")
    c.create("arr", "u1", (3,))
    with pytest.raises(mmshare.WrongKind):
        c.subscribe("arr")


def test_send_checks_the_shape_and_receive_times_out_on_an_idle_stream(daemon):
    c = mmshare.connect(daemon.socket)
    stream(c, "idle")
    pub, sub = c.publisher("idle"), c.subscribe("idle")
    with pytest.raises(ValueError, match="shape"):
        pub.send(np.zeros(ELEMS + 1))
    with pytest.raises(mmshare.Timeout) as timeout:
        sub.receive(timeout=0.05)
    assert isinstance(timeout.value, TimeoutError)
    assert sub.try_receive() is None
    with pytest.raises(TypeError, match="int64 values into stream 'idle' of uint64"):
        pub.send(np.arange(ELEMS))      # signed into unsigned is not 'same_kind' for NumPy
    assert pub.send(np.arange(ELEMS, dtype=np.uint64)) == 0
    got = sub.try_receive()
    assert got is not None and got.array.tolist() == list(range(ELEMS))


def test_threads_waiting_releasing_and_publishing_in_one_process_never_deadlock(daemon):
    """A thread waits in receive() (no timeout) while others drop samples, ask is_intact()
    and publish, all on the same subscriber: a waiting receive holds the subscriber for at
    most a slice, and releases never wait for it."""
    import threading
    c = mmshare.connect(daemon.socket)
    stream(c, "threads")
    pub, sub = c.publisher("threads"), c.subscribe("threads", max_held=2)
    pub.send(pattern(0))
    held = sub.receive(timeout=10)
    got = []
    reader = threading.Thread(target=lambda: got.append(sub.receive(timeout=None)))
    reader.start()
    checker = threading.Thread(target=lambda h=held: [h.is_intact() for _ in range(50)])
    checker.start()
    assert held.is_intact()
    checker.join(30)
    del held                      # dropped while the reader waits
    pub.send(pattern(1))          # the publisher is a thread of this process too
    reader.join(30)
    checker.join(30)
    assert not reader.is_alive() and not checker.is_alive(), "deadlocked"
    assert got[0].number == 1
    np.testing.assert_array_equal(got[0].array, pattern(1))


def test_ctrl_c_interrupts_a_receive_and_a_loan_without_a_timeout(daemon):
    c = mmshare.connect(daemon.socket)
    stream(c, "intr", slots=3)
    pub = c.publisher("intr")
    sub = c.subscribe("intr", lossless=True, max_held=1)

    def interrupted(call):
        old = signal.signal(signal.SIGALRM, signal.default_int_handler)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        try:
            with pytest.raises(KeyboardInterrupt):
                call()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    interrupted(lambda: sub.receive(timeout=None))
    for n in range(3):            # the lossless subscriber now holds the publisher back
        pub.send(pattern(n), timeout=10)
    interrupted(lambda: pub.loan(timeout=None).__enter__())
    with sub.receive(timeout=10) as s:
        assert s.number == 0


def test_a_published_frame_gives_no_new_writable_view(daemon):
    c = mmshare.connect(daemon.socket)
    stream(c, "sealed")
    pub, sub = c.publisher("sealed"), c.subscribe("sealed")
    with pub.loan() as frame:
        frame[:] = pattern(0)
    assert not frame.flags.writeable and not frame.base.flags.writeable
    with pytest.raises(mmshare.MmshareError, match="no new views"):
        np.asarray(frame.base.base)         # the pages under the (checked) view
    with sub.receive(timeout=10) as s:
        np.testing.assert_array_equal(s.array, pattern(0))


def test_subscribe_errors_are_the_matching_exceptions(daemon):
    c = mmshare.connect(daemon.socket)
    stream(c, "errs", slots=3, max_subscribers=1)
    with pytest.raises(ValueError, match="max_held"):
        c.subscribe("errs", max_held=0)
    first = c.subscribe("errs", max_held=1)
    with pytest.raises(mmshare.QuotaExceeded):
        c.subscribe("errs", max_held=1)
    del first


def test_a_sample_dropped_while_another_thread_waits_is_released_when_the_wait_ends(daemon):
    """A sample dropped while another thread holds the subscriber (waiting in receive) is
    queued, and released as soon as that thread lets go of it, with no further call: its hold
    entry in the control file (record 0, HELD at 128) is clear once the wait ends."""
    import threading
    from conftest import control_state
    c = mmshare.connect(daemon.socket)
    stream(c, "queued")
    pub, sub = c.publisher("queued"), c.subscribe("queued", max_held=2)
    pub.send(pattern(0))
    held = sub.receive(timeout=10)
    holds = np.frombuffer(control_state("queued"), dtype="<u8", count=16, offset=4096 + 128)
    assert holds.any(), "the held sample shows in the control file"
    waiter = threading.Thread(target=lambda: pytest.raises(mmshare.Timeout, sub.receive, 0.3))
    waiter.start()
    import time
    # Dropped during the waiter's last slice (0.2 to 0.3 s), when it holds the subscriber and
    # makes no further call that would carry the release out. (If the drop lands elsewhere,
    # the assertion holds all the same.)
    time.sleep(0.25)
    del held
    waiter.join(30)
    assert not holds.any(), f"a release stayed queued: {holds}"


def test_released_views_are_reused_per_slot_and_always_show_their_own_frame(daemon):
    """A released sample's view that nothing else refers to is reused for the next sample in
    its slot (no new view per frame); every sample still shows exactly its own frame, and a view
    that was kept is never handed to another sample."""
    c = mmshare.connect(daemon.socket)
    stream(c, "reuse", slots=4)
    pub, sub = c.publisher("reuse"), c.subscribe("reuse", lossless=True, max_held=2)
    kept = None
    for n in range(200):
        pub.send(pattern(n))
        with sub.receive(timeout=10) as s:
            np.testing.assert_array_equal(s.array, pattern(n))
            if kept is not None:
                assert s.array is not kept, "a kept view was handed to another sample"
            if n == 100:
                kept = s.array          # kept past the release: its slot stays held
    # Released views wait for their slot's next sample (ids alone cannot show reuse: CPython
    # hands a freed object's id to the next one).
    assert sub._free_views, "no released view was kept for reuse"
    np.testing.assert_array_equal(kept, pattern(100))


def test_send_converts_any_frame_to_the_streams_dtype_and_order(daemon):
    c = mmshare.connect(daemon.socket)
    want = np.arange(12, dtype="<i4").reshape(3, 4)
    for order in ("C", "F"):
        c.create_stream(f"conv{order}", "<i4", (3, 4), slots=4, order=order)
        pub, sub = c.publisher(f"conv{order}"), c.subscribe(f"conv{order}")
        # C-ordered, Fortran-ordered, strided, another integer dtype, a list, floats with
        # casting='unsafe': each arrives as `want`.
        strided = np.zeros((3, 8), "<i4")
        strided[:, ::2] = want
        for frame, casting in ((want, "same_kind"), (np.asfortranarray(want), "same_kind"),
                               (strided[:, ::2], "same_kind"), (want.astype(np.int64), "same_kind"),
                               (want.tolist(), "same_kind"), (want.astype(np.float64), "unsafe")):
            pub.send(frame, casting=casting)
            with sub.receive(timeout=10) as s:
                np.testing.assert_array_equal(s.array, want)
                assert s.array.flags.f_contiguous == (order == "F")
        # The native copy takes only a C-contiguous buffer of exactly the frame's bytes.
        for bad, why in ((np.zeros(47, np.uint8), "got 47 bytes"),
                         (np.zeros(96, np.uint8)[::2], "not C-contiguous"),
                         (object(), "buffer")):
            with pytest.raises(ValueError, match="frame must be a C-contiguous buffer of 48") as e:
                pub._native.send(bad, None)
            assert why in str(e.value), (bad, str(e.value))
        assert pub.next_number == 6


def test_a_publisher_held_back_by_a_frozen_subscriber_times_out_by_default(daemon):
    """`loan` and `send` wait a finite time by default (10 s, as Rust's publisher), so a
    lossless subscriber that stops reading never blocks a publisher for good unless it asks
    for that (`timeout=None`); `receive` waits without limit by default, as `queue.get`."""
    import inspect
    for method in (mmshare.Publisher.loan, mmshare.Publisher.send):
        assert inspect.signature(method).parameters["timeout"].default == 10.0
    assert inspect.signature(mmshare.Subscriber.receive).parameters["timeout"].default is None
    c = mmshare.connect(daemon.socket)
    stream(c, "frozen", slots=3)
    pub = c.publisher("frozen")
    sub = c.subscribe("frozen", lossless=True, max_held=1)  # never reads
    for n in range(3):
        pub.send(pattern(n))
    with pytest.raises(mmshare.Timeout):
        pub.send(pattern(3), timeout=0.2)
    with pytest.raises(mmshare.Timeout):
        with pub.loan(timeout=0.2):
            pass
    sub.close()


def test_the_stall_policy_demotes_or_evicts_a_lossless_subscriber_that_stalls(daemon):
    """`on_stall="demote"`: a lossless subscriber that stops reading no longer holds the
    publisher back once it has waited `stall_after`; it is told (`demoted`) and counts what it
    missed. `on_stall="evict"`: its next receive raises `Evicted`."""
    c = mmshare.connect(daemon.socket)
    info = stream(c, "demoting", slots=4, on_stall="demote", stall_after=0.05)
    assert (info.on_stall, info.stall_after) == ("demote", 0.05)
    pub = c.publisher("demoting")
    sub = c.subscribe("demoting", lossless=True, max_held=1)  # does not read for now
    for n in range(20):
        pub.send(pattern(n), timeout=10)  # would wait for the subscriber under "block"
    assert sub.demoted
    received = 0
    while True:
        try:
            with sub.receive(timeout=0) as s:
                received += 1
                last = s.number
        except mmshare.Timeout:
            break
    assert last == 19 and received + sub.missed == 20 and sub.missed > 0
    assert c.describe("demoting").subscribers[0].lossless is False

    stream(c, "evicting", slots=4, on_stall="evict", stall_after=0.05)
    pub = c.publisher("evicting")
    sub = c.subscribe("evicting", lossless=True, max_held=1)
    for n in range(20):
        pub.send(pattern(n), timeout=10)
    with pytest.raises(mmshare.Evicted):
        sub.receive(timeout=1)
    with pytest.raises(ValueError):
        stream(c, "bad", on_stall="sometimes")


def test_history_and_start_points_from_python(daemon, worker):
    """A stream that keeps 8 frames: a Rust publisher publishes 100, then a Python subscriber
    that starts at the oldest frame gets at least the last 8 (bytes checked), one that resumes
    from a frame that is gone learns exactly how many it lost, and the default lossy one starts
    at the next frame."""
    c = mmshare.connect(daemon.socket)
    info = stream(c, "hist", slots=12, history=8)
    assert info.history == 8
    assert c.describe("hist").history == 8
    out = subprocess.run([worker, "stream-pub", daemon.socket, "hist", "100"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out

    oldest = c.subscribe("hist", start="oldest")
    got = []
    while True:
        try:
            s = oldest.receive(timeout=0.2)
        except mmshare.Timeout:
            break
        assert np.array_equal(s.array, pattern(s.number))
        got.append(s.number)
        s.release()
    assert len(got) >= 8 and got[-1] == 99 and got == list(range(got[0], 100)), got
    assert oldest.missed == 0 and oldest.first_frame == got[0]
    oldest.close()

    resumed = c.subscribe("hist", lossless=True, start=50)
    first = resumed.receive(timeout=5)
    # 12 slots hold frames 88..99 at most; the history guarantees 92..99.
    assert 88 <= first.number <= 92 and first.missed_before == first.number - 50
    assert np.array_equal(first.array, pattern(first.number))
    first.release()
    resumed.close()

    later = c.subscribe("hist")
    assert later.first_frame == 100
    with pytest.raises(mmshare.Timeout):
        later.receive(timeout=0.1)
    later.close()

    for bad in ("newest", -1, 1.5, True):
        with pytest.raises(ValueError, match="start must be"):
            c.subscribe("hist", start=bad)
    with pytest.raises(ValueError, match="cannot start at frame 18446744073709551615"):
        c.subscribe("hist", start=2**64 - 1)
    with pytest.raises(mmshare.InvalidShape, match="at most 10"):
        stream(c, "too-much-history", slots=12, history=11)


def test_stat_of_a_stream_describes_it(daemon):
    """`Client.stat` of a stream's name gives its StreamInfo (it raised ProtocolError)."""
    c = mmshare.connect(daemon.socket)
    stream(c, "statme")
    info = c.stat("statme")
    assert isinstance(info, mmshare.StreamInfo) and info.slots == 8


def test_help_shows_the_mode_in_octal_words(daemon):
    """`help(Client.create)` must not show `mode=384`: the default is None, documented as
    0o600."""
    import inspect
    for f in (mmshare.Client.create, mmshare.Client.create_stream):
        sig = str(inspect.signature(f))
        assert "384" not in sig and "mode=None" in sig, sig
        assert "0o600" in f.__doc__


def test_presence_from_python(daemon, worker):
    """`wait_for` returns when another process creates the stream (and raises Timeout when
    none comes); `wait_for_subscribers` returns when a Rust subscriber process joins; a
    watch reports the creation, the subscriber joining and leaving, and the deletion."""
    import threading
    c = mmshare.connect(daemon.socket)
    with pytest.raises(mmshare.Timeout, match='"pres"'):
        c.wait_for("pres", timeout=0.2)
    watch = c.watch("pres")
    found = {}
    t = threading.Thread(target=lambda: found.update(info=c.wait_for("pres", timeout=60)))
    t.start()
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import mmshare
        mmshare.connect({daemon.socket!r}).create_stream("pres", "<u8", ({ELEMS},))
        """)], check=True, timeout=60)
    t.join(60)
    assert isinstance(found["info"], mmshare.StreamInfo) and found["info"].name == "pres"
    assert watch.next(60) == mmshare.WatchEvent("created", "pres", "stream")

    pub = c.publisher("pres")
    assert pub.subscriber_count == 0
    sub = subprocess.Popen([worker, "stream-sub", daemon.socket, "pres", "lossless", "4"],
                           stdout=subprocess.PIPE, text=True)
    assert pub.wait_for_subscribers(1, timeout=60) == 1
    for n in range(5):
        with pub.loan() as frame:
            frame[:] = pattern(n)
    out, _ = sub.communicate(timeout=60)
    assert sub.returncode == 0 and "received=5 missed=0" in out, out
    with pytest.raises(mmshare.Timeout, match="has 0 subscribers"):
        pub.wait_for_subscribers(1, timeout=0.2)
    pub.close()
    c.delete("pres")
    events = [watch.next(60) for _ in range(3)]
    # The subscriber joining, then leaving; the deletion (possibly reported before the leave).
    assert [e.count for e in events if e.kind == "subscribers"] == [1, 0], events
    assert mmshare.WatchEvent("deleted", "pres") in events, events
    assert watch.next(0.2) is None
    watch.close()


def test_writes_follow_numpys_same_kind_casting_unless_told_otherwise(daemon):
    """A float into a u1 stream or array is refused by default, naming both dtypes (it used to
    store 300.7 as 44 and -1.5 as 255); integers in range, and NumPy's own in-place rules,
    still work; casting='unsafe' restores NumPy's plain assignment. Loan.number is known
    inside the block."""
    c = mmshare.connect(daemon.socket)
    c.create_stream("u8s", "u1", (4,), slots=4)
    sub = c.subscribe("u8s", lossless=True)
    pub = c.publisher("u8s")
    with pytest.raises(TypeError, match=r"float64 values into stream 'u8s' of uint8"):
        pub.send(np.full(4, 300.7))
    with pytest.raises(TypeError, match="uint8"):
        with pub.loan() as frame:
            frame[:] = -1.5
    with pytest.raises(TypeError):
        with pub.loan() as frame:
            frame[1:3] = np.array([1.0, 2.0])   # a slice checks as its parent does
    with pytest.raises(TypeError):
        with pub.loan() as frame:
            frame.fill(2.5)
    with pytest.raises(OverflowError):
        with pub.loan() as frame:
            frame[:] = 300                      # NumPy's own check for Python ints
    with pytest.raises(mmshare.Timeout):
        sub.receive(timeout=0.05)               # none of those was published
    loan = pub.loan()
    with loan as frame:
        assert loan.number == 0
        frame[:] = [1, 2, 3, 4]
        frame += np.uint8(1)
    assert pub.send(np.full(4, 7.9), casting="unsafe") == 1
    with pub.loan(casting="unsafe") as frame:
        frame[:] = 9.99
    got = []
    for _ in range(3):
        with sub.receive(timeout=5) as s:
            got.append(list(s.array))
    assert got == [[2, 3, 4, 5], [7] * 4, [9] * 4]
    with pytest.raises(ValueError, match="casting must be"):
        pub.loan(casting="sloppy")

    a = c.create("f4s", "f4", (3,))
    with a.write() as v:
        v[:] = [1, 2, 3]                        # ints into floats: same kind is fine
        v[0] = np.float64(0.5)
    with pytest.raises(TypeError, match="complex128 values into array 'f4s' of float32"):
        with a.write() as v:
            v[:] = 1j
    with a.write(casting="unsafe", repair=True) as v:
        v[:] = np.array([1.9, 2.9, 3.9])
    np.testing.assert_array_equal(a.read(), np.array([1.9, 2.9, 3.9], np.float32))
