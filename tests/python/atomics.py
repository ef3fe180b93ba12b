"""The tests' own atomic access to a mapped array header, from libatomic through ctypes: they
play a recovery against a writer (the Rust core inside `mmshare._native`), so they need a real
compare-and-swap on its writer word, and this process's identity word (docs/FORMAT.md)."""

import ctypes
import ctypes.util
import os

_SEQ_CST = 5
_lib = None


def _atomic():
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(ctypes.util.find_library("atomic") or "libatomic.so.1")
        lib.__atomic_compare_exchange_8.restype = ctypes.c_bool
        lib.__atomic_compare_exchange_8.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_int]
        _lib = lib
    return _lib


def compare_exchange_u64(address: int, expected: int, new: int) -> int:
    """Sequentially consistent compare-and-swap of the u64 at `address`; returns the value
    found there (`expected` exactly when the swap happened)."""
    exp = ctypes.c_uint64(expected)
    if _atomic().__atomic_compare_exchange_8(address, ctypes.addressof(exp), new, _SEQ_CST,
                                             _SEQ_CST):
        return expected
    return exp.value


def process_identity(pid=None) -> int:
    """A process as the header's writer word: pid | (start time & 0xFFFFFFFF) << 32."""
    who = "self" if pid is None else str(pid)
    with open(f"/proc/{who}/stat") as f:
        text = f.read()
    start = int(text.rsplit(")", 1)[1].split()[19])
    return int(text.split()[0]) | (start & 0xFFFFFFFF) << 32
