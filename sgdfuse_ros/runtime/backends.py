"""Inference backends behind one interface, chosen by name: torch, onnxruntime, tensorrt.

A :class:`~.base.Backend` runs one model: named ``float32`` numpy inputs in, named numpy outputs
out::

    be = build_backend('onnxruntime', onnx_path='engines/stage1_0123abcd.onnx')
    f1 = be.run({'ir': ir, 'vis': vis})['f1']

``torch`` runs a module (the reference and the training framework, :mod:`.torch_backend`),
``onnxruntime`` an ONNX file (the embedded default on machines without CUDA, :mod:`.ort`),
``tensorrt`` an engine built from an ONNX file and cached under ``engines/`` (:mod:`.tensorrt`).
A backend that cannot load here raises :class:`BackendError` naming why (no CUDA device,
TensorRT not installed, a stale engine...); :func:`build_with_fallback` then falls back to
another backend, ``onnxruntime`` by default, and the built backend keeps the reason.

The heavy packages (torch, onnxruntime, tensorrt) are imported only when a backend is built.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from .base import LOG, Backend, BackendError, default_engines_dir
from .ort import OrtBackend, clear_session_cache, import_onnxruntime
from .tensorrt import TensorRTBackend, cuda_device, import_tensorrt
from .threads import available_cores
from .torch_backend import TorchBackend

__all__ = ['BACKENDS', 'BACKEND_NAMES', 'Backend', 'BackendError', 'DEFAULT_FALLBACK',
           'OrtBackend', 'TensorRTBackend', 'TorchBackend', 'available_cores', 'backend_names',
           'build_backend', 'build_with_fallback', 'clear_session_cache', 'default_backend',
           'default_engines_dir', 'register_backend', 'unavailable_reason']

#: Backend names in the order ``auto`` prefers them on a machine that has what they need.
BACKEND_NAMES = ('torch', 'onnxruntime', 'tensorrt')
DEFAULT_FALLBACK = 'onnxruntime'

#: name -> backend class. Register more with :func:`register_backend`.
BACKENDS: dict[str, type[Backend]] = {
    'torch': TorchBackend,
    'onnxruntime': OrtBackend,
    'tensorrt': TensorRTBackend,
}


def register_backend(name: str, cls: type[Backend]) -> None:
    BACKENDS[name] = cls


def backend_names() -> list[str]:
    return list(BACKENDS)


def unavailable_reason(name: str) -> str | None:
    """Why a backend cannot run here (cheap: imports only, builds nothing), or None."""
    if name not in BACKENDS:
        return f'unknown backend {name!r}; choose from {", ".join(BACKENDS)}'
    try:
        if name == 'torch':
            import torch  # noqa: F401
        elif name == 'onnxruntime':
            import_onnxruntime()
        elif name == 'tensorrt':
            import_tensorrt()
            cuda_device(0)
    except BackendError as exc:
        return exc.reason
    except ImportError as exc:
        return str(exc)
    return None


def default_backend() -> str:
    """``tensorrt`` where it can run (a CUDA GPU with TensorRT), else ``onnxruntime`` (the
    embedded CPU default), else ``torch``."""
    for name in ('tensorrt', 'onnxruntime'):
        if unavailable_reason(name) is None:
            return name
    return 'torch'


def build_backend(name: str, *, onnx_path: str | os.PathLike | None = None, module=None,
                  input_names: Sequence[str] | None = None,
                  output_names: Sequence[str] | None = None, **options) -> Backend:
    """Build a backend by name. ``torch`` needs ``module`` (+ ``input_names``/``output_names``);
    the others need ``onnx_path``. ``options`` go to the backend's constructor."""
    if name == 'auto':
        name = default_backend()
    if name not in BACKENDS:
        raise ValueError(f'unknown backend {name!r}; choose from auto, {", ".join(BACKENDS)}')
    cls = BACKENDS[name]
    if cls.source == 'module':
        if module is None:
            raise ValueError(f'{name}: needs a torch module')
        if input_names is None or output_names is None:
            raise ValueError(f'{name}: needs input_names and output_names')
        return cls(module, input_names, output_names, **options)
    if onnx_path is None and not options.get('engine_file_path'):
        raise ValueError(f'{name}: needs onnx_path')
    return cls(onnx_path, **options)


def build_with_fallback(name: str, build: Callable[[str], Backend], *,
                        fallback: str | None = DEFAULT_FALLBACK,
                        warn: Callable[[str], None] | None = None) -> Backend:
    """``build(name)``, or ``build(fallback)`` when the first raises :class:`BackendError`.

    ``build`` maps a backend name to a built backend (it carries the model and the options);
    ``warn`` receives one line naming the failure and the fallback (default: the log). A
    fallback backend carries ``fallback_from`` (the name asked for) and ``fallback_reason``
    (why it could not load), which its :meth:`~.base.Backend.report` shows.
    """
    try:
        return build(name)
    except BackendError as exc:
        if not fallback or fallback == name:
            raise
        (warn or LOG.warning)(f'{exc}; falling back to {fallback!r}')
        be = build(fallback)
        be.fallback_from, be.fallback_reason = name, exc.reason
        return be
