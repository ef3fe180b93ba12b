import pathlib
from types import TracebackType
from typing import Any, Sequence

from .client import Client

def find_program(name: str) -> str: ...

class Daemon:
    process: Any
    home: pathlib.Path
    socket: str
    @property
    def pid(self) -> int: ...
    def connect(self, **options: Any) -> Client: ...
    def running(self) -> bool: ...
    def stop(self, timeout: float = 30.0) -> int: ...
    def __enter__(self) -> Daemon: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

def start_daemon(
    home: str | pathlib.Path | None = None,
    flags: Sequence[str] = (),
    *,
    timeout: float = 30.0,
    keeper: bool = False,
    program: str | None = None,
) -> Daemon: ...
