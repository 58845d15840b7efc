"""Inference backends (torch, onnxruntime, tensorrt), ONNX export and the engine cache.

The runtime runs export specs handed to it; it does not know which networks exist (their specs
live with them, in :mod:`sgdfuse_ros.models` and :mod:`sgdfuse_ros.masks`).

* :mod:`.base`: the :class:`Backend` interface and :class:`BackendError`.
* :mod:`.backends`: the registry (:func:`build_backend`) and :func:`build_with_fallback`; the
  backends themselves in :mod:`.torch_backend`, :mod:`.ort`, :mod:`.tensorrt`.
* :mod:`.threads`: :func:`set_threads`, the process-wide CPU thread setting, for whoever owns
  the process.
* :mod:`.loader`: :func:`load_network`, a network on a named backend, its ONNX exported on
  first use and keyed by its weights' hash.
* :mod:`.export`: ONNX export checked against PyTorch; :mod:`.onnx_passes` the graph passes.
* :mod:`.engine_cache`: TensorRT engine keys, file names, sidecars, atomic writes.
* :mod:`.onnx_check`: static TensorRT compatibility checks of ONNX graphs.

Importing this package imports neither torch, onnxruntime nor tensorrt.
"""

from .backends import (Backend, BackendError, backend_names, build_backend,
                       build_with_fallback, default_backend, default_engines_dir,
                       unavailable_reason)
from .loader import load_network
from .threads import available_cores, set_threads

__all__ = ['Backend', 'BackendError', 'available_cores', 'backend_names', 'build_backend',
           'build_with_fallback', 'default_backend', 'default_engines_dir', 'load_network',
           'set_threads', 'unavailable_reason']
