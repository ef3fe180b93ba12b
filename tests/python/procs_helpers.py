"""Functions the process tests run in other processes (importable by `spawn` and
`forkserver` children, which pickle functions by name)."""

import numpy as np


def write_through(client, name):
    """A pickled client in a worker: creates an array and writes it."""
    array = client.create(name, "<i8", (3,))
    with array.write() as w:
        w[:] = [7, 8, 9]
    return array.version


def read_array(array):
    """A pickled array in a worker (opened again by name, same mode)."""
    return array.read().tolist(), array.writable


def receive_frames(subscriber, count):
    """A pickled subscriber in a worker: its own new subscription (lossless, from frame 0);
    takes `count` frames."""
    got = []
    for _ in range(count):
        with subscriber.receive(timeout=60) as sample:
            got.append((sample.number, sample.array.tolist()))
    return got


def publish_frames(publisher, count):
    """A pickled publisher in a worker: attaches anew (the sender closed it first)."""
    publisher.wait_for_subscribers(1, timeout=60)
    for n in range(count):
        publisher.send(np.full(2, n, np.uint8))
    return publisher.next_number


def use_inherited(subscriber):
    """An inherited (forked, not pickled) subscriber: refused at first use."""
    import mmshare
    try:
        subscriber.try_receive()
    except mmshare.WrongProcess as e:
        return f"refused: {e}"
    return "used"
