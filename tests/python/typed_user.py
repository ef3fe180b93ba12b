"""A typed user of mmshare, checked by mypy --strict and pyright (test_typing.py) and run
against a real daemon: `assert_type` pins what each call returns, so stubs full of `Any` fail
the check, and running it shows the types describe what the calls really return."""

import asyncio
from typing import Any, assert_type

import numpy as np
import numpy.typing as npt

import mmshare


def arrays(client: mmshare.Client) -> None:
    shared = client.create("typed.f", np.float32, (3,))
    assert_type(shared, mmshare.SharedArray[np.float32])
    assert_type(shared.read(), npt.NDArray[np.float32])
    assert_type(shared.array, npt.NDArray[np.float32])
    with shared.write() as view:
        assert_type(view, npt.NDArray[np.float32])
        view[:] = 1.5
    assert_type(shared.version, int)
    assert_type(shared.wait(0, timeout=1.0), int)
    opened = client.open("typed.f")
    assert_type(opened, mmshare.SharedArray[Any])
    by_text = client.create("typed.g", "<u2", 4)
    assert_type(by_text, mmshare.SharedArray[Any])
    assert_type(np.asarray(shared), npt.NDArray[Any])
    info = client.stat("typed.f")
    assert_type(info, mmshare.ArrayInfo | mmshare.StreamInfo)
    assert isinstance(info, mmshare.ArrayInfo) and info.shape == (3,)
    assert_type(client.list("typed."), list[mmshare.ArrayInfo])


def streams(client: mmshare.Client) -> None:
    info = client.create_stream("typed.s", "u1", (4,), slots=4, history=1,
                                header=[("t", "<u8")], variable=True)
    assert_type(info, mmshare.StreamInfo)
    publisher = client.publisher("typed.s")
    assert_type(publisher, mmshare.Publisher[Any])
    subscriber: mmshare.Subscriber[np.uint8] = client.subscribe("typed.s", lossless=True)
    assert_type(publisher.send(np.zeros(2, np.uint8), header=(7,)), int)
    loan = publisher.loan()
    assert_type(loan, mmshare.Loan[Any])
    with loan as frame:
        assert_type(frame, npt.NDArray[Any])
        frame[:] = 3
        loan.rows = 1
    sample = subscriber.receive(timeout=5.0)
    assert_type(sample, mmshare.Sample[np.uint8])
    assert_type(sample.array, npt.NDArray[np.uint8])
    assert_type(sample.number, int)
    assert_type(sample.header, npt.NDArray[Any] | None)
    sample.release()
    assert_type(subscriber.try_receive(), mmshare.Sample[np.uint8] | None)
    event = client.watch("typed.").next(0.01)
    assert_type(event, mmshare.WatchEvent | None)


async def awaits(client: mmshare.Client) -> None:
    subscriber: mmshare.Subscriber[np.uint8] = client.subscribe("typed.s", lossless=True,
                                                                start="oldest")
    sample = await subscriber.areceive(timeout=5.0)
    assert_type(sample, mmshare.Sample[np.uint8])
    sample.release()
    shared = client.open("typed.f")
    assert_type(await shared.await_version(0, timeout=5.0), int)
    found = await client.await_for("typed.s", timeout=5.0)
    assert_type(found, mmshare.ArrayInfo | mmshare.StreamInfo)


def main(socket: str) -> None:
    with mmshare.connect(socket) as client:
        arrays(client)
        streams(client)
        asyncio.run(awaits(client))
    try:
        mmshare.connect(socket).open("typed.none")
    except FileNotFoundError as e:
        assert_type(e, FileNotFoundError)


if __name__ == "__main__":
    import sys
    main(sys.argv[1])
