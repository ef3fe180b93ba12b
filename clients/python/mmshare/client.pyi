from os import PathLike
from types import TracebackType
from typing import Any, AsyncIterator, Iterator, Literal, NamedTuple, Sequence, TypeVar, overload

import numpy as np
import numpy.typing as npt

from ._proto import ArrayInfo, StreamInfo
from .array import SharedArray
from .service import Requester, Server, ServiceInfo
from .stream import Publisher, Subscriber

_S = TypeVar("_S", bound=np.generic)
_Shape = int | Sequence[int]
_Path = str | PathLike[str] | None
_Order = Literal["C", "F"]

SOCKET_ENV: str
SERVER_UID_ENV: str

def default_socket_path() -> str: ...
def dtype_text(dtype: npt.DTypeLike) -> str: ...

class WatchEvent(NamedTuple):
    kind: str
    name: str = ...
    object: str = ...
    count: int = ...

class Watch:
    def next(self, timeout: float | None = None) -> WatchEvent | None: ...
    async def anext(self, timeout: float | None = None) -> WatchEvent | None: ...
    def __iter__(self) -> Iterator[WatchEvent]: ...
    def __next__(self) -> WatchEvent: ...
    def __aiter__(self) -> AsyncIterator[WatchEvent]: ...
    async def __anext__(self) -> WatchEvent: ...
    def close(self) -> None: ...
    def __enter__(self) -> Watch: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

class Client:
    path: str
    server_name: str
    def __init__(
        self, path: _Path = None, *, server_uid: int | None = None, timeout: float | None = None
    ) -> None: ...
    @overload
    def create(
        self,
        name: str,
        dtype: type[_S] | np.dtype[_S],
        shape: _Shape,
        memory: bool = False,
        mode: int | None = None,
        order: _Order = "C",
        exist_ok: bool = False,
        stripes: int = 0,
        sparse: bool = False,
    ) -> SharedArray[_S]: ...
    @overload
    def create(
        self,
        name: str,
        dtype: npt.DTypeLike,
        shape: _Shape,
        memory: bool = False,
        mode: int | None = None,
        order: _Order = "C",
        exist_ok: bool = False,
        stripes: int = 0,
        sparse: bool = False,
    ) -> SharedArray[Any]: ...
    def open(self, name: str, mode: Literal["r", "r+"] = "r") -> SharedArray[Any]: ...
    def stat(self, name: str) -> ArrayInfo | StreamInfo: ...
    def describe(self, name: str) -> ArrayInfo | StreamInfo: ...
    def list(self, prefix: str = "") -> list[ArrayInfo]: ...
    def list_all(self, prefix: str = "") -> list[ArrayInfo | StreamInfo]: ...
    def create_stream(
        self,
        name: str,
        dtype: npt.DTypeLike,
        shape: _Shape,
        slots: int = 8,
        memory: bool = False,
        mode: int | None = None,
        exist_ok: bool = False,
        max_subscribers: int = 16,
        order: _Order = "C",
        on_stall: Literal["block", "demote", "evict"] = "block",
        stall_after: float = 1.0,
        history: int = 0,
        header: npt.DTypeLike | None = None,
        variable: bool = False,
        max_publishers: int = 1,
    ) -> StreamInfo: ...
    def create_service(
        self,
        name: str,
        request: tuple[npt.DTypeLike, _Shape],
        response: tuple[npt.DTypeLike, _Shape],
        max_requesters: int = 8,
        max_servers: int = 2,
        slots: int = 4,
        memory: bool = False,
        mode: int | None = None,
        exist_ok: bool = False,
    ) -> ServiceInfo: ...
    def delete_service(self, name: str) -> None: ...
    def requester(self, name: str) -> Requester: ...
    def server(self, name: str) -> Server: ...
    def publisher(self, name: str) -> Publisher[Any]: ...
    def subscribe(
        self,
        name: str,
        lossless: bool = False,
        max_held: int = 2,
        start: Literal["next", "oldest"] | int | None = None,
    ) -> Subscriber[Any]: ...
    def wait_for(self, name: str, timeout: float | None = None) -> ArrayInfo | StreamInfo: ...
    async def await_for(
        self, name: str, timeout: float | None = None
    ) -> ArrayInfo | StreamInfo: ...
    def watch(self, prefix: str = "") -> Watch: ...
    def delete(self, name: str) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Client: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

def connect(
    path: _Path = None, *, server_uid: int | None = None, timeout: float | None = None
) -> Client: ...
