"""The process's memory: resident size from ``/proc``, and handing freed heap back.

After a large frame, the C allocator (glibc ``malloc``) keeps much of the memory it freed for
reuse: pages of arrays below its mmap threshold stay resident until ``malloc_trim`` returns
them. :func:`release_heap` does that; callers run it when frame sizes change, not per frame.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


def proc_status_mb(field: str = 'VmRSS') -> float | None:
    """A ``kB`` field of ``/proc/self/status`` in MB (10^6 bytes): ``VmRSS`` (resident now),
    ``VmHWM`` (peak resident); None where there is no ``/proc`` (not Linux)."""
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_heap() -> bool:
    """Return the C heap's free pages to the system (glibc ``malloc_trim(0)``). Returns
    whether it could (False off glibc). Costs a few milliseconds: not for every frame."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
