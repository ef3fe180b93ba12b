"""The few system facilities the seqlock needs, through ctypes (no compiled extension).

* The shared futex (`syscall(SYS_futex, ...)` without FUTEX_PRIVATE_FLAG), so `wait()` sleeps
  until a writer in any process publishes. If it cannot be called, waiting falls back to
  polling.
* Atomic compare-and-swap and fetch-add on words of the mapping, and fences, from the system's
  libatomic (`libatomic.so.1`, Debian package libatomic1, installed with gcc). Only writers
  need them; reading works without.
"""

import ctypes
import ctypes.util
import os
import platform

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine())
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_SEQ_CST = 5
_RELEASE = 3


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _syscall = _libc.syscall
    _syscall.restype = ctypes.c_long
except (OSError, AttributeError):  # pragma: no cover - exotic platforms
    _syscall = None

HAVE_FUTEX = _syscall is not None and _SYS_FUTEX is not None


def futex_wait(address: int, expected: int, timeout: float) -> None:
    """Sleeps while the u32 at `address` equals `expected`, at most `timeout` seconds. Returns
    on wake, value change, signal or timeout; callers re-check their condition."""
    ts = _Timespec(int(timeout), int((timeout - int(timeout)) * 1e9))
    _syscall(ctypes.c_long(_SYS_FUTEX), ctypes.c_void_p(address), ctypes.c_int(_FUTEX_WAIT),
             ctypes.c_uint32(expected), ctypes.byref(ts), None, ctypes.c_int(0))


def futex_wake_all(address: int) -> None:
    if HAVE_FUTEX:
        _syscall(ctypes.c_long(_SYS_FUTEX), ctypes.c_void_p(address), ctypes.c_int(_FUTEX_WAKE),
                 ctypes.c_int(2**31 - 1), None, None, ctypes.c_int(0))


_atomic = None


def atomics():
    """The libatomic functions, loaded on first use.

    Raises OSError with an explanation when libatomic is not installed."""
    global _atomic
    if _atomic is None:
        name = ctypes.util.find_library("atomic") or "libatomic.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise OSError(
                "writing from Python needs an atomic compare-and-swap, taken from libatomic "
                "(Debian/Ubuntu package libatomic1); it could not be loaded: " + str(e)) from e
        lib.__atomic_compare_exchange_8.restype = ctypes.c_bool
        lib.__atomic_compare_exchange_8.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_int]
        lib.__atomic_fetch_add_4.restype = ctypes.c_uint32
        lib.__atomic_fetch_add_4.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int]
        lib.atomic_thread_fence.restype = None
        lib.atomic_thread_fence.argtypes = [ctypes.c_int]
        _atomic = lib
    return _atomic


_ACQUIRE = 2
_fence = None


def _fence_fn():
    """libatomic's atomic_thread_fence, or a no-op when libatomic is missing (then only
    x86-64's ordered loads keep readers correct; see mmshare.array)."""
    global _fence
    if _fence is None:
        try:
            _fence = atomics().atomic_thread_fence
        except (OSError, AttributeError):
            _fence = lambda order: None  # noqa: E731
    return _fence


def fence_acquire() -> None:
    _fence_fn()(_ACQUIRE)


def fence_release() -> None:
    _fence_fn()(_RELEASE)


def cas_u64(address: int, expected: int, new: int) -> bool:
    """Sequentially consistent compare-and-swap of the u64 at `address` (a full barrier)."""
    return compare_exchange_u64(address, expected, new) == expected


def compare_exchange_u64(address: int, expected: int, new: int) -> int:
    """Sequentially consistent compare-and-swap of the u64 at `address` (a full barrier, so at
    least as strong as the Acquire, AcqRel and Release CASes of the Rust writer). Returns the
    value found there: `expected` exactly when the swap happened."""
    exp = ctypes.c_uint64(expected)
    if atomics().__atomic_compare_exchange_8(
            address, ctypes.addressof(exp), new, _SEQ_CST, _SEQ_CST):
        return expected
    return exp.value  # libatomic wrote the value it found into `exp`


def fetch_add_u32_release(address: int, value: int) -> int:
    return atomics().__atomic_fetch_add_4(address, value, _RELEASE)


def process_identity() -> int:
    """This process as the header's writer word: pid | (start time & 0xFFFFFFFF) << 32.

    The pid is the one /proc shows (field 1 of /proc/self/stat), not os.getpid(): in a child
    pid namespace sharing the host's /proc, getpid() is namespace-local and would name another
    process to the daemon. Without /proc the start time is 0 ("cannot tell", never "dead")."""
    pid, start = os.getpid(), 0
    try:
        with open("/proc/self/stat") as f:
            text = f.read()
        fields = text.rsplit(")", 1)[1].split()
        pid, start = int(text.split()[0]), int(fields[19])  # field 22; fields[0] is field 3
    except (OSError, IndexError, ValueError):
        pass
    return pid | (start & 0xFFFFFFFF) << 32


def have_fences() -> bool:
    """True when real fences (libatomic) back the reader's ordering."""
    try:
        atomics()
        return True
    except OSError:
        return False
