"""Inference backends (torch, onnxruntime, tensorrt), ONNX export and the engine cache.

* :mod:`.backends`: the :class:`Backend` interface, the registry (:func:`build_backend`), the
  three backends, :class:`BackendError` and :func:`build_with_fallback`.
* :mod:`.loader`: :func:`load_network`, what the fusion methods call: a network on a named
  backend, its ONNX exported on first use and keyed by its weights' hash.
* :mod:`.export`: ONNX export checked against PyTorch (``sgdfuse export --onnx``).
* :mod:`.engine_cache`: TensorRT engine keys, file names, sidecars, atomic writes.
* :mod:`.onnx_check`: static TensorRT compatibility checks of ONNX graphs.
* :mod:`.bench`: ``sgdfuse bench``.

Importing this package imports neither torch, onnxruntime nor tensorrt.
"""

from .backends import (Backend, BackendError, backend_names, build_backend,
                       build_with_fallback, default_backend, default_engines_dir,
                       unavailable_reason)
from .loader import load_network

__all__ = ['Backend', 'BackendError', 'backend_names', 'build_backend', 'build_with_fallback',
           'default_backend', 'default_engines_dir', 'load_network', 'unavailable_reason']
