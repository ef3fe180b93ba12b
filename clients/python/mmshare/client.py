"""The connection to mmshared (docs/PROTOCOL.md) over a SOCK_SEQPACKET Unix socket."""

import array as _array
import os
import socket
import sys
import threading

import numpy as np

from . import _proto, errors
from .array import SharedArray

SOCKET_ENV = "MMSHARE_SOCKET"


def default_socket_path() -> str:
    """`$MMSHARE_SOCKET`, else `$XDG_RUNTIME_DIR/mmshare/mmshared.sock`, else
    `/tmp/mmshare-$UID/mmshared.sock` (the daemon's default)."""
    env = os.environ.get(SOCKET_ENV)
    if env:
        return env
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "mmshare", "mmshared.sock")
    return f"/tmp/mmshare-{os.getuid()}/mmshared.sock"


def _dtype_text(dtype) -> str:
    if isinstance(dtype, str):
        return dtype  # the daemon parses (and names) it
    return np.dtype(dtype).str


class Client:
    """One connection to the daemon. Requests are serialized, so a client may be shared by
    threads. Arrays opened for writing keep the connection open (the writer's lease)."""

    def __init__(self, path=None):
        self.path = os.fspath(path) if path is not None else default_socket_path()
        self._lock = threading.Lock()
        self._broken = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._sock.connect(self.path)
        except OSError as e:
            self._sock.close()
            raise errors.ConnectError(
                f"cannot connect to mmshared at {self.path}: {e.strerror or e} "
                f"(is the daemon running? start it with `mmshared`, or set {SOCKET_ENV})") from None
        try:
            kind, (version, server) = self._call(_proto.encode_hello(os.path.basename(sys.argv[0]) or "python"))
        except Exception:
            self._sock.close()
            raise
        if kind != "hello" or version != _proto.PROTOCOL_VERSION:
            self._sock.close()
            raise errors.ProtocolError(f"daemon speaks protocol version {version}, this client 1")
        self.server = server

    def _call(self, request: bytes, want_fd: bool = False):
        with self._lock:
            if self._broken:
                raise errors.ConnectError(
                    f"the connection to {self.path} was interrupted mid-request; connect again")
            try:
                self._sock.sendall(request)
                data, fds, flags, _ = socket.recv_fds(self._sock, _proto.MAX_MESSAGE + 1, 1)
            except BaseException as e:
                # A reply may still be on its way: this connection can no longer pair replies
                # with requests. (KeyboardInterrupt lands here too.)
                self._broken = True
                self._sock.close()
                if isinstance(e, OSError):
                    raise errors.ConnectError(f"connection to mmshared at {self.path} failed: {e}") from None
                raise
        for extra in fds[1:]:
            os.close(extra)
        fd = fds[0] if fds else None
        try:
            if not data:
                raise errors.ConnectError("mmshared closed the connection")
            if len(data) > _proto.MAX_MESSAGE or flags & socket.MSG_TRUNC:
                raise errors.ProtocolError("reply longer than the message limit")
            result = _proto.decode_response(data)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        if want_fd:
            if fd is None:
                raise errors.ProtocolError("reply carried no file descriptor")
            return result, fd
        if fd is not None:
            os.close(fd)
        return result

    def _array_reply(self, request: bytes, writable: bool) -> SharedArray:
        (kind, info), fd = self._call(request, want_fd=True)
        if kind != "array":
            os.close(fd)
            raise errors.ProtocolError(f"unexpected reply {kind}")
        os.set_inheritable(fd, False)  # recv_fds does not set close-on-exec itself
        return SharedArray(info, fd, writable, lease=self if writable else None)

    def create(self, name, dtype, shape, memory=False, mode=0o600, order="C",
               exist_ok=False) -> SharedArray:
        """Creates an array (owned by this uid) and returns it opened "r+"."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        request = _proto.encode_create(name, _dtype_text(dtype), shape, order, memory, mode,
                                       exist_ok)
        return self._array_reply(request, writable=True)

    def open(self, name, mode="r") -> SharedArray:
        """Opens an array: mode "r" maps it read-only, "r+" read-write."""
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
        return self._array_reply(_proto.encode_open(name, mode == "r+"), writable=mode == "r+")

    def stat(self, name) -> _proto.ArrayInfo:
        kind, info = self._call(_proto.encode_stat(name))
        return info

    def list(self, prefix="") -> list:
        """Every array (that this uid may read) whose name starts with `prefix`."""
        out, after = [], None
        while True:
            kind, (infos, more) = self._call(_proto.encode_list(prefix, after))
            out.extend(infos)
            if not more or not infos:
                return out
            after = infos[-1].name

    def delete(self, name) -> None:
        """Unlinks the array: mappings keep working, the name is free at once."""
        self._call(_proto.encode_delete(name))

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(path=None) -> Client:
    """Connects to the daemon at `path` (default: `default_socket_path()`)."""
    return Client(path)
