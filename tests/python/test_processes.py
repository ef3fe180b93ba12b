"""Handles across process boundaries (issue 21): pickled clients, arrays, publishers and
subscribers reopen by name in the receiving process, under the `spawn`, `fork` and
`forkserver` start methods, through `multiprocessing` and `concurrent.futures`; and a handle
inherited through `fork()` is refused in the child (a clear error at first use), never
delivering a frame twice."""

import concurrent.futures
import multiprocessing
import os
import pickle

import numpy as np
import pytest

import mmshare
import procs_helpers as helpers

METHODS = ["spawn", "fork", "forkserver"]


@pytest.mark.parametrize("method", METHODS)
def test_pickled_handles_reopen_by_name_in_workers(daemon, method):
    ctx = multiprocessing.get_context(method)
    c = mmshare.connect(daemon.socket)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        assert pool.submit(helpers.write_through, c, f"w.{method}").result(60) == 1
        written = c.open(f"w.{method}")
        assert written.read().tolist() == [7, 8, 9]
        assert pool.submit(helpers.read_array, written).result(60) == ([7, 8, 9], False)
        rw = c.open(f"w.{method}", "r+")
        assert pool.submit(helpers.read_array, rw).result(60) == ([7, 8, 9], True)

    # A subscriber to a worker: a new subscription of its own there. A publisher to a
    # worker: handed over (closed here first), it attaches there.
    c.create_stream(f"s.{method}", "u1", (2,), slots=8)
    sub = c.subscribe(f"s.{method}", lossless=True)
    pub = c.publisher(f"s.{method}")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        frames = pool.submit(helpers.receive_frames, sub, 3)
        pub.wait_for_subscribers(2, timeout=60)  # ours and the worker's
        for n in range(3):
            pub.send(np.full(2, n, np.uint8))
        assert frames.result(60) == [(n, [n, n]) for n in range(3)]
        for n in range(3):  # ours is its own: every frame once, here too
            with sub.receive(timeout=10) as sample:
                assert sample.number == n
        pub.close()
        published = pool.submit(helpers.publish_frames, pub, 4)  # pickled: attaches there
        for n in range(3, 7):
            with sub.receive(timeout=60) as sample:
                assert (sample.number, sample.array.tolist()) == (n, [n - 3, n - 3])
        assert published.result(60) == 7


@pytest.mark.parametrize("method", METHODS)
def test_multiprocessing_process_arguments(daemon, method):
    """`multiprocessing.Process(args=...)`: pickled under spawn and forkserver (reopened in
    the child), inherited under fork (refused in the child at first use)."""
    ctx = multiprocessing.get_context(method)
    c = mmshare.connect(daemon.socket)
    c.create_stream(f"p.{method}", "u1", (2,), slots=8)
    sub = c.subscribe(f"p.{method}", lossless=True)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        # The pool pickles arguments under every start method.
        assert pool.submit(helpers.use_inherited, sub).result(60) == "used"
    queue = ctx.Queue()
    child = ctx.Process(target=_report, args=(queue, sub))
    child.start()
    outcome = queue.get(timeout=60)
    child.join(60)
    if method == "fork":
        assert outcome.startswith("refused:") and f"process {os.getpid()}" in outcome, outcome
    else:
        assert outcome == "used"


def _report(queue, subscriber):
    queue.put(helpers.use_inherited(subscriber))


def test_a_lossless_subscriber_inherited_by_fork_never_delivers_a_frame_twice(daemon):
    c = mmshare.connect(daemon.socket)
    c.create_stream("forked", "u1", (1,), slots=4)
    sub = c.subscribe("forked", lossless=True)
    pub = c.publisher("forked")
    pub.send(np.array([5], np.uint8))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: every use refused; its client reconnects on its own
        try:
            try:
                sub.receive(timeout=1)
                verdict = b"received"
            except mmshare.WrongProcess:
                verdict = b"refused"
            verdict += b" " + str(len(c.list_all("forked"))).encode()
            os.write(write, verdict)
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 100) == b"refused 1" and status == 0
    with sub.receive(timeout=5) as sample:  # the parent's: frame 0, once
        assert sample.number == 0 and sample.missed_before == 0
    assert sub.try_receive() is None
    assert repr(pickle.loads(pickle.dumps(c))).startswith("<mmshare.Client")


def test_a_loan_inherited_by_fork_is_never_published_from_the_child(daemon):
    c = mmshare.connect(daemon.socket)
    c.create_stream("forked.loan", "u1", (1,), slots=4)
    pub, sub = c.publisher("forked.loan"), c.subscribe("forked.loan", lossless=True)
    loan = pub.loan()
    with loan as frame:
        frame[:] = 1
        pid = os.fork()
        if pid == 0:
            try:
                loan.__exit__(None, None, None)
                os._exit(1)  # published from the child
            except mmshare.WrongProcess:
                os._exit(0)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    with sub.receive(timeout=5) as sample:  # published once, by the parent
        assert sample.number == 0 and sample.array.tolist() == [1]
    assert sub.try_receive() is None
