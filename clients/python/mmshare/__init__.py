"""mmshare: zero-copy shared-memory NumPy arrays served by the mmshared daemon.

    import mmshare
    client = mmshare.connect()
    a = client.create("frame", "f4", (480, 640))
    with a.write() as view:
        view[:] = 1.0
    b = client.open("frame")      # read-only
    b.wait(newer_than=0, timeout=5)
    copy = b.read()

    client.create_stream("frames", "u1", (480, 640), slots=8)
    pub = client.publisher("frames")
    sub = client.subscribe("frames", lossless=True)
    with pub.loan() as frame:     # fill a free slot in place; published on exit
        frame[:] = 255
    with sub.receive(timeout=1) as sample:
        print(sample.number, sample.array.mean())
"""

from ._proto import PROTOCOL_VERSION, ArrayInfo, StreamInfo, SubscriberStat
from .array import SharedArray
from .client import Client, Watch, WatchEvent, connect, default_socket_path
from .daemon import Daemon, find_program, start_daemon
from .errors import (AlreadyExists, Busy, ConnectError, Evicted, FormatError, HoldLimit, Internal,
                     InvalidDtype, InvalidName, InvalidShape, LostWriteSide, MmshareError,
                     NoSpace, NotFound, PermissionDenied, ProtocolError, QuotaExceeded, ServerLost,
                     Timeout, Torn, WrongKind, WrongProcess, WrongServer)
from .service import Request, Requester, Response, Server, ServiceInfo
from .stream import Loan, Publisher, PublisherId, Sample, Subscriber

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

try:
    __version__ = _version("mmshare")
except _NotInstalled:  # imported from the source tree, not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "PROTOCOL_VERSION", "ArrayInfo", "StreamInfo", "SubscriberStat", "SharedArray", "Client",
    "Watch", "WatchEvent",
    "connect", "default_socket_path", "Daemon", "find_program", "start_daemon", "__version__",
    "Loan", "Publisher", "PublisherId", "Sample", "Subscriber",
    "Request", "Requester", "Response", "Server", "ServiceInfo", "ServerLost",
    "AlreadyExists", "Busy", "ConnectError", "Evicted", "FormatError", "HoldLimit", "Internal",
    "InvalidDtype", "InvalidName", "InvalidShape", "LostWriteSide", "MmshareError", "NoSpace",
    "NotFound", "PermissionDenied", "ProtocolError", "QuotaExceeded", "Timeout", "Torn",
    "WrongKind", "WrongProcess", "WrongServer",
]
