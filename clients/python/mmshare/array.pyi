from contextlib import AbstractContextManager
import types
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from ._proto import ArrayInfo

_S = TypeVar("_S", bound=np.generic)
_Casting = Literal["no", "equiv", "safe", "same_kind", "unsafe"]
# A NumPy basic index: integers, slices, `...` and `None`, alone or in a tuple.
_Basic = int | np.integer[Any] | slice | types.EllipsisType | None
_Index = _Basic | tuple[_Basic, ...]

CASTINGS: tuple[str, ...]

def numpy_dtype(text: str) -> np.dtype[Any]: ...
def dtype_text(dtype: npt.DTypeLike) -> str: ...

class SharedArray(Generic[_S]):
    info: ArrayInfo
    writable: bool
    dtype: np.dtype[_S]
    shape: tuple[int, ...]
    order: str
    name: str
    path: str
    @property
    def array(self) -> npt.NDArray[_S]: ...
    @property
    def version(self) -> int: ...
    @property
    def torn(self) -> bool: ...
    @property
    def retries(self) -> int: ...
    def read(
        self,
        index: Any = None,
        timeout: float = 10.0,
        allow_torn: bool = False,
        out: npt.NDArray[_S] | None = None,
    ) -> npt.NDArray[_S]: ...
    def wait(
        self, newer_than: int | None = None, timeout: float | None = None, region: _Index | None = None
    ) -> int: ...
    def stamp(self, region: _Index) -> int: ...
    async def await_version(
        self, newer_than: int | None = None, timeout: float | None = None
    ) -> int: ...
    async def changed(self, newer_than: int | None = None, timeout: float | None = None) -> int: ...
    def write(
        self,
        region: _Index | None = None,
        timeout: float = 10.0,
        repair: bool = False,
        durable: bool = False,
        casting: _Casting = "same_kind",
    ) -> AbstractContextManager[npt.NDArray[_S]]: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def __array__(
        self, dtype: npt.DTypeLike | None = None, copy: bool | None = None
    ) -> npt.NDArray[Any]: ...
    def __dlpack__(
        self,
        *,
        stream: int | Any | None = None,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> Any: ...
    def __dlpack_device__(self) -> tuple[int, int]: ...
    def __enter__(self) -> SharedArray[_S]: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
