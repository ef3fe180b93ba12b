"""Exceptions. Daemon refusals mirror the Rust `ErrorKind` variants one to one."""

import os


class MmshareError(Exception):
    """Base class of every mmshare error."""

    kind = None


class NotFound(MmshareError, FileNotFoundError):
    """No array or stream of that name (that this uid may see). Also a `FileNotFoundError`,
    so `except FileNotFoundError` catches it as it would a missing file. (Not a `KeyError`:
    a client is not a mapping, and `KeyError` would quote the message.)"""
    kind = "NotFound"


class AlreadyExists(MmshareError, FileExistsError):
    """An array or stream of that name exists. Also a `FileExistsError`."""
    kind = "AlreadyExists"


class InvalidName(MmshareError, ValueError):
    kind = "InvalidName"


class InvalidDtype(MmshareError, ValueError):
    kind = "InvalidDtype"


class InvalidShape(MmshareError, ValueError):
    kind = "InvalidShape"


class PermissionDenied(MmshareError, PermissionError):
    kind = "PermissionDenied"


class QuotaExceeded(MmshareError):
    kind = "QuotaExceeded"


class NoSpace(MmshareError):
    kind = "NoSpace"


class Busy(MmshareError):
    kind = "Busy"


class ProtocolError(MmshareError):
    kind = "ProtocolError"


class Internal(MmshareError):
    kind = "Internal"


class WrongKind(MmshareError):
    """The name belongs to an array where a stream was asked for, or the other way round."""
    kind = "WrongKind"


# Wire order of ErrorKind (docs/PROTOCOL.md).
BY_INDEX = [NotFound, AlreadyExists, InvalidName, InvalidDtype, InvalidShape,
            PermissionDenied, QuotaExceeded, NoSpace, Busy, ProtocolError, Internal, WrongKind]


class ConnectError(MmshareError, ConnectionError):
    """The daemon's socket could not be reached (the message names the path)."""


class WrongServer(ConnectError):
    """The daemon on the socket runs as another user than expected, so nothing was sent to
    it: on the default socket it must be this user's or root's (another user may have taken
    the socket path), elsewhere the uid given as `server_uid` (or `$MMSHARE_SERVER_UID`) or
    root. The message names the socket and both uids."""

    def __init__(self, message, path=None, expected=None, actual=None):
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None  # the socket
        self.expected = expected  # the uid the daemon was expected to run as
        self.actual = actual      # the uid it runs as (SO_PEERCRED)


class Torn(MmshareError):
    """A write did not complete (its writer died, or its body raised): the data may be
    half-written."""

    def __init__(self, version):
        super().__init__(
            f"array is torn at version {version}: a write did not complete (its writer died or "
            "failed); a write of the whole array with write(repair=True) repairs it, "
            "read(allow_torn=True) reads it anyway")
        self.version = version


class Evicted(MmshareError):
    """The publisher evicted this subscriber: it was lossless and stalled the stream longer
    than the stream's stall policy (`on_stall="evict"`) allows. It receives nothing more;
    subscribe again to go on."""


class ServerLost(MmshareError):
    """The server of a service that had these requests died before it answered them: they
    will never be answered (send them again). `server` is its slot, `pending` the correlation
    ids of the requests it had. Mirrors the Rust `ServiceError::ServerLost`."""

    def __init__(self, message, server=None, pending=()):
        super().__init__(message)
        self.server = server
        self.pending = tuple(pending)


class LostWriteSide(MmshareError):
    """The write side was taken from this writer before it could publish (a recovery judged it
    dead, or it stalled so long that its write was released). Nothing was published as this
    write; its stores may have landed after the recovery, so the array is left TORN. Mirrors
    the Rust `WriteError::LostWriteSide`."""

    def __init__(self, sequence, found):
        super().__init__(
            f"lost the write side before publishing (took sequence {sequence}, found {found}): "
            "the write was not published and the array is marked torn")
        self.sequence = sequence  # the odd sequence this writer held
        self.found = found        # the sequence found when it tried to go on


class Timeout(MmshareError, TimeoutError):
    """A read, write or wait did not complete in time (`wait_for`, `wait_for_subscribers`
    included), or the daemon did not accept a connection or answer a request within the
    client's `timeout` (it is stopped or overloaded; the next request connects again)."""
    kind = "Timeout"


BY_INDEX.append(Timeout)  # ErrorKind 12, defined after the classes above


class HoldLimit(MmshareError):
    """A subscriber already holds its `max_held` samples. A sample is held until it is
    released and no NumPy view of its frame is left: release samples (or use them in `with`
    blocks) and keep copies, not views, of frames needed later."""


class FormatError(MmshareError):
    """The mapped file is not a valid mmshare array file."""


class WrongProcess(MmshareError):
    """A handle was used in a process `fork()` made after it was opened: it is its opener's
    participant. Open it again in the child (or pass it pickled: it reopens by name)."""
