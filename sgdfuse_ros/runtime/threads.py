"""CPU threads of the inference runtimes: one explicit, process-wide setting.

PyTorch's intra-op thread count belongs to the whole process, and the fusion and the mask
worker share one process: a constructor that set it would silently override whoever set it
before. So no backend, method or mask provider sets it; whoever owns the process (the node, a
command) calls :func:`set_threads` once. ONNX Runtime sessions each have their own pool: a
backend's ``threads`` option sets it per session, and :func:`set_threads` sets the default of
sessions created afterwards.
"""

from __future__ import annotations

import os
import sys

_threads: int | None = None


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


def set_threads(n: int | None) -> None:
    """Use ``n`` intra-op threads: PyTorch's (process-wide) and the default of ONNX Runtime
    sessions created from now on. ``None`` returns the sessions' default to the usable cores
    and leaves PyTorch as it is. PyTorch is never imported for this (it costs hundreds of MB a
    runtime path does not need): if it is loaded already its count is set now, otherwise
    ``OMP_NUM_THREADS``, which PyTorch reads when it is first imported."""
    global _threads
    if n is None:
        _threads = None
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f'threads must be a positive integer, got {n!r}')
    _threads = n
    torch = sys.modules.get('torch')
    if torch is not None:
        torch.set_num_threads(n)
    else:
        os.environ['OMP_NUM_THREADS'] = str(n)


def default_threads() -> int:
    """Intra-op threads of a new ONNX Runtime session that asks for no number: the value of
    :func:`set_threads`, else the usable cores."""
    return _threads or available_cores()
