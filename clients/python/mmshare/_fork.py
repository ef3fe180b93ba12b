"""Handles and `fork()`: which process a handle belongs to.

A handle is a participant of its own (a subscription's record and cursor, a publisher's
attachment, a connection's request stream). A child made by `fork()` inherits the parent's
handles, but they are still the parent's: using them from the child would make two processes
one participant (a lossless subscription would hand the same frame to both). So every handle
remembers the fork generation it was made in, and refuses to be used in a child with
`errors.WrongProcess` (a `Client` reconnects instead: a connection of its own is all it
needs). Counting forks with `os.register_at_fork` costs nothing per call (no `getpid`).
"""

import os

from . import errors

generation = 0


def _forked() -> None:
    global generation
    generation += 1


os.register_at_fork(after_in_child=_forked)


class Owned:
    """Mixed into handles: `_check_process()` raises in a forked child."""

    _generation = 0
    _pid = 0

    def _born(self) -> None:
        self._generation, self._pid = generation, os.getpid()

    def _check_process(self) -> None:
        if self._generation != generation:
            raise errors.WrongProcess(
                f"{self!r} was opened by process {self._pid}, and this process is a child it "
                "forked: a handle is one participant and stays its opener's. Open it again "
                "here (by name, or pass it pickled: it reopens by name in the receiver)")
