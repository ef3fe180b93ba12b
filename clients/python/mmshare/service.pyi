from types import TracebackType
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

from ._proto import StreamInfo

TIMEOUT: float

class ServiceInfo:
    name: str
    max_requesters: int
    max_servers: int
    requests: StreamInfo
    responses: StreamInfo
    def __init__(
        self,
        name: str,
        max_requesters: int,
        max_servers: int,
        requests: StreamInfo,
        responses: StreamInfo,
    ) -> None: ...

class _Held:
    id: int
    @property
    def array(self) -> npt.NDArray[Any]: ...
    @property
    def released(self) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> Any: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...
    def __array__(
        self, dtype: npt.DTypeLike | None = None, copy: bool | None = None
    ) -> npt.NDArray[Any]: ...

class Response(_Held):
    server: int
    def __enter__(self) -> Response: ...

class Request(_Held):
    requester: int
    requester_pid: int
    def __enter__(self) -> Request: ...

class _Loan:
    array: npt.NDArray[Any] | None
    def __enter__(self) -> npt.NDArray[Any]: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

class RequestLoan(_Loan):
    id: int
    def send(self) -> int: ...

class ResponseLoan(_Loan):
    def send(self) -> None: ...

class Requester:
    @property
    def slot(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def servers(self) -> tuple[int, ...]: ...
    def loan(self, timeout: float | None = ...) -> RequestLoan: ...
    def send(self, request: npt.ArrayLike, timeout: float | None = ...) -> int: ...
    def receive(self, timeout: float | None = ...) -> Response: ...
    def call(self, request: npt.ArrayLike, timeout: float | None = ...) -> Response: ...

class Server:
    @property
    def slot(self) -> int: ...
    def receive(self, timeout: float | None = ...) -> Request: ...
    def loan_response(self, request: Request) -> ResponseLoan: ...
    def respond(self, request: Request, response: npt.ArrayLike) -> None: ...
    def serve(
        self,
        handler: Callable[[npt.NDArray[Any], npt.NDArray[Any]], object],
        timeout: float | None = ...,
    ) -> int: ...
