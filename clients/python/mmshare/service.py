"""Request/response: a requester sends a request (loaned and filled in place, or copied) to a
service, a server receives it in place and answers with a response filled in place, which
only that requester receives, in place. Both ways zero-copy, no daemon on the way.

>>> import numpy as np, mmshare
>>> daemon = mmshare.start_daemon()
>>> client = daemon.connect()
>>> info = client.create_service("doc.double", request=("<f8", (3,)), response=("<f8", (3,)))
>>> server, requester = client.server("doc.double"), client.requester("doc.double")
>>> requester.send(np.array([1.0, 2.0, 3.0]))
0
>>> with server.receive(timeout=5) as request:
...     server.respond(request, request.array * 2)
>>> with requester.receive(timeout=5) as response:
...     response.id, response.array.tolist()
(0, [2.0, 4.0, 6.0])
>>> daemon.stop()
0
"""

import dataclasses
from typing import Tuple

import numpy as np

from . import _fork, errors
from ._proto import StreamInfo
from .array import _Pages, numpy_dtype

#: How long receives and loans wait by default (seconds).
TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class ServiceInfo:
    """What `Client.create_service` made: the service's name, its requester and server slots,
    and the descriptions of its first request stream (`NAME.req.0`: the requests' dtype and
    shape) and response stream (`NAME.resp.0`)."""
    name: str
    max_requesters: int
    max_servers: int
    requests: StreamInfo
    responses: StreamInfo


class _Shape:
    """A dtype and a shape, and the views of pages of that layout."""

    def __init__(self, info: StreamInfo):
        self.dtype = numpy_dtype(info.dtype)
        self.shape = tuple(info.shape)

    def view(self, owner, address: int, writable: bool) -> np.ndarray:
        return _Pages(owner, self.dtype, self.shape, "C", writable, address=address).array()


def _check(array, layout: _Shape, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != layout.shape:
        raise ValueError(f"{what} has shape {array.shape}; the service's are {layout.shape}")
    if not np.can_cast(array.dtype, layout.dtype, casting="same_kind"):
        raise TypeError(f"{what} of {array.dtype} cannot be cast to the service's "
                        f"{layout.dtype} (same_kind)")
    return array


class _Held:
    """A request or response held in place: `array` (read-only, zero-copy) until released; a
    context manager that releases it."""

    def __init__(self, native, layout: _Shape):
        self._native = native
        self.id = native.id
        self._array = layout.view(native, native.address, False)

    @property
    def array(self) -> np.ndarray:
        if self._native is None:
            raise errors.MmshareError(
                f"{type(self).__name__.lower()} {self.id} was released; copy it "
                "(np.array(x.array)) to use it after the release")
        return self._array

    @property
    def released(self) -> bool:
        return self._native is None

    def release(self):
        """Lets it go: the slot returns to the other side once no view of it is left."""
        native, self._native, self._array = self._native, None, None
        if native is not None:
            native.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def __array__(self, dtype=None, copy=None):
        array = self.array
        if dtype is not None and np.dtype(dtype) != array.dtype:
            return array.astype(dtype)
        return np.array(array, copy=True) if copy else array


class Response(_Held):
    """A response, read in place: `array`, `id` (the correlation id of the request it
    answers), `server` (the server slot that answered)."""

    def __init__(self, native, layout: _Shape):
        super().__init__(native, layout)
        self.server = native.server


class Request(_Held):
    """A request, read in place: `array`, `id` (its requester's correlation id),
    `requester` (the requester slot), `requester_pid`. Answer it with `Server.respond` or
    `Server.loan_response` before releasing it."""

    def __init__(self, native, layout: _Shape):
        super().__init__(native, layout)
        self.requester = native.requester
        self.requester_pid = native.requester_pid


class _Loan:
    """A slot being filled in place: as a context manager it yields the writable ndarray and
    sends it when the block ends normally (gives it back when the block raises)."""

    def __init__(self, native, layout: _Shape, address: int, send, abandon):
        self._native = native
        self._send, self._abandon = send, abandon
        self._pages = _Pages(native, layout.dtype, layout.shape, "C", True, address=address)
        self.array = self._pages.array()

    def _finish(self, send: bool):
        if self._pages.finished:
            return None
        self._pages.finished = True
        self.array = None
        return self._send() if send else self._abandon()

    def __del__(self):
        # A loan dropped without its block: given back, never sent half-filled.
        pages = getattr(self, "_pages", None)
        if pages is not None and not pages.finished:
            pages.finished = True
            self._abandon()

    def __enter__(self) -> np.ndarray:
        return self.array

    def __exit__(self, exc_type, exc, tb):
        self._finish(exc_type is None)
        return False


class RequestLoan(_Loan):
    """A request being filled in place (`Requester.loan`): `id` is the correlation id it gets."""

    def __init__(self, requester: "Requester", timeout):
        native = requester._native
        self.id, address = native.loan(timeout)
        super().__init__(native, requester._request, address, native.send_loan,
                         native.abandon_loan)

    def send(self) -> int:
        """Sends it now (as leaving the block does); returns its id."""
        return self._finish(True)


class ResponseLoan(_Loan):
    """A response being filled in place (`Server.loan_response`)."""

    def __init__(self, server: "Server", request: Request):
        native = request._native
        if native is None:
            raise errors.MmshareError(f"request {request.id} was released: answer it first")
        address = native.loan_response()
        super().__init__(native, server._response, address, native.send_response,
                         native.abandon_response)

    def send(self):
        """Sends it now (as leaving the block does)."""
        self._finish(True)


class Requester(_fork.Owned):
    """The calling side of a service. `send` (or `loan`) requests, `receive` their responses
    in any order (each says its `id`), or `call` for one request at a time."""

    def __init__(self, native, requests: StreamInfo, responses: StreamInfo, lease):
        self._native = native
        self._lease = lease
        self._request = _Shape(requests)
        self._response = _Shape(responses)
        self._born()

    @property
    def slot(self) -> int:
        """Its requester slot."""
        return self._native.slot

    @property
    def pending(self) -> int:
        """Requests sent and not answered yet."""
        return self._native.pending

    @property
    def servers(self) -> Tuple[int, ...]:
        """The server slots with a server attached now."""
        return tuple(self._native.servers())

    def loan(self, timeout=TIMEOUT) -> RequestLoan:
        """A request slot to fill in place (`with requester.loan() as request: request[...] =
        ...`), sent when the block ends; waits up to `timeout` seconds for a server and for
        room in its ring."""
        self._check_process()
        return RequestLoan(self, timeout)

    def send(self, request, timeout=TIMEOUT) -> int:
        """Sends a copy of `request` (an array of the service's request shape, cast
        same_kind); returns its correlation id."""
        request = _check(request, self._request, "the request")
        loan = self.loan(timeout)
        with loan as slot:
            slot[...] = request
        return loan.id

    def receive(self, timeout=TIMEOUT) -> Response:
        """The next response to one of its requests, waiting up to `timeout` seconds: raises
        `Timeout`, or `ServerLost` (naming the requests) if the server they went to died."""
        self._check_process()
        return Response(self._native.receive(timeout), self._response)

    def call(self, request, timeout=TIMEOUT) -> Response:
        """Sends `request` and waits for its response (nothing else may be pending)."""
        if self.pending:
            raise errors.MmshareError(
                f"{self.pending} request(s) pending: call() waits for its own response "
                "only; use send() and receive()")
        self.send(request, timeout)
        return self.receive(timeout)



class Server(_fork.Owned):
    """The serving side of a service: `receive` a request, answer it with `respond` (a copy)
    or `loan_response` (filled in place), then release it."""

    def __init__(self, native, requests: StreamInfo, responses: StreamInfo, lease):
        self._native = native
        self._lease = lease
        self._request = _Shape(requests)
        self._response = _Shape(responses)
        self._born()

    @property
    def slot(self) -> int:
        """Its server slot."""
        return self._native.slot

    def receive(self, timeout=TIMEOUT) -> Request:
        """The next request, waiting up to `timeout` seconds (raises `Timeout`)."""
        self._check_process()
        return Request(self._native.receive(timeout), self._request)

    def loan_response(self, request: Request) -> ResponseLoan:
        """The response to `request`, to fill in place: `with server.loan_response(request)
        as out: out[...] = ...` sends it to that requester when the block ends."""
        self._check_process()
        return ResponseLoan(self, request)

    def respond(self, request: Request, response) -> None:
        """Answers `request` with a copy of `response` (the service's response shape)."""
        response = _check(response, self._response, "the response")
        with self.loan_response(request) as out:
            out[...] = response

    def serve(self, handler, timeout=TIMEOUT) -> int:
        """Serves one request: `handler(request_array, response_array)` fills the response
        in place. Returns the request's id."""
        with self.receive(timeout) as request, self.loan_response(request) as out:
            handler(request.array, out)
            return request.id
