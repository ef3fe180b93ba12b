"""mmshare: zero-copy shared-memory NumPy arrays served by the mmshared daemon.

    import mmshare
    client = mmshare.connect()
    a = client.create("frame", "f4", (480, 640))
    with a.write() as view:
        view[:] = 1.0
    b = client.open("frame")      # read-only
    b.wait(newer_than=0, timeout=5)
    copy = b.read()
"""

from ._proto import PROTOCOL_VERSION, ArrayInfo
from .array import SharedArray
from .client import Client, connect, default_socket_path
from .errors import (AlreadyExists, Busy, ConnectError, FormatError, Internal, InvalidDtype,
                     InvalidName, InvalidShape, LostWriteSide, MmshareError, NoSpace, NotFound,
                     PermissionDenied, ProtocolError, QuotaExceeded, Timeout, Torn,
                     WrongKind)

__all__ = [
    "PROTOCOL_VERSION", "ArrayInfo", "SharedArray", "Client", "connect", "default_socket_path",
    "AlreadyExists", "Busy", "ConnectError", "FormatError", "Internal", "InvalidDtype",
    "InvalidName", "InvalidShape", "LostWriteSide", "MmshareError", "NoSpace", "NotFound",
    "PermissionDenied", "ProtocolError", "QuotaExceeded", "Timeout", "Torn", "WrongKind",
]
