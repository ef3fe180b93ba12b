from typing import Awaitable, Callable, TypeVar

_T = TypeVar("_T")

class Wait:
    native: object
    def __init__(self) -> None: ...
    async def woken(self) -> None: ...

async def readable(fd: int) -> None: ...
async def poll_until(
    poll: Callable[[object], _T | None],
    end: Callable[[object], object],
    timeout: float | None,
    what: str,
) -> _T: ...

__all__ = ["Wait", "readable", "poll_until"]
