"""One call for the fusion methods and mask providers: a network's backend by name, its ONNX
exported on first use.

::

    from sgdfuse_ros.models.stage1 import stage1_spec
    from sgdfuse_ros.runtime import load_network

    be = load_network('onnxruntime', module=model, spec=stage1_spec(model),
                      digest=sha256_file(weights), source=str(weights), fallback='onnxruntime')
    f1 = be.run({'ir': ir[None, None], 'vis': vis[None, None]})['f1']

``torch`` runs the module itself; ``onnxruntime`` and ``tensorrt`` run its ONNX export, found in
(or written to) the engines folder by the weights' hash (:func:`.export.ensure_onnx`).
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from sgdfuse_ros.models.export_spec import ExportSpec
from .backends import BACKENDS, Backend, build_backend, build_with_fallback, default_backend
from .base import LOG
from .export import ensure_onnx


def _accepted(cls: type[Backend], options: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in options.items() if k in params}


def _common_options(name: str, device: str | None, threads: int | None) -> dict[str, Any]:
    """``device`` / ``threads`` in each backend's own terms."""
    dev = str(device) if device else 'cpu'
    on_cuda = dev.startswith('cuda')
    if name == 'torch':  # its CPU threads are process-wide: see runtime.set_threads
        return {'device': dev}
    if name == 'onnxruntime':
        opts: dict[str, Any] = {'providers': ['cuda'] if on_cuda else ['cpu']}
        if threads:
            opts['threads'] = threads
        if on_cuda and ':' in dev:
            opts['device_id'] = int(dev.split(':')[1])
        return opts
    if name == 'tensorrt':
        return {'device': dev if on_cuda else 0}
    return {}


def load_network(backend: str | None, *, module, spec: ExportSpec, digest: str, source: str,
                 device: str | None = None, threads: int | None = None,
                 engines_dir: str | os.PathLike | None = None, fallback: str | None = None,
                 warn: Callable[[str], None] | None = None, **options) -> Backend:
    """Build ``backend`` (``torch``, ``onnxruntime``, ``tensorrt``, ``auto``/None) for a network.

    ``module``: the PyTorch network (eval mode). ``spec``: how it exports (the network's own,
    e.g. :func:`sgdfuse_ros.models.stage1.stage1_spec`). ``digest`` / ``source``: its weights'
    SHA-256 and origin (keys the ONNX file). ``device`` / ``threads`` are translated for each
    backend (``threads``: ONNX Runtime's per-session pool; PyTorch keeps the process-wide
    setting of :func:`sgdfuse_ros.runtime.set_threads`); ``options``
    go to the backend (e.g. ``precision``, ``force_engine_update`` for TensorRT). When the
    backend cannot load and ``fallback`` names another, that one is built instead (with the
    options it understands) and ``warn`` (default: the log) says so.
    """
    name = default_backend() if backend in (None, 'auto') else backend
    if name not in BACKENDS:
        raise ValueError(f'unknown backend {name!r}; choose from auto, {", ".join(BACKENDS)}')

    def build(which: str) -> Backend:
        cls = BACKENDS[which]
        opts = _common_options(which, device, threads)
        opts.update(options if which == name else _accepted(cls, options))
        if cls.source == 'module':
            return build_backend(which, module=module, input_names=spec.input_names,
                                 output_names=spec.output_names, **opts)
        path = ensure_onnx(module, spec, digest=digest, source=source, out_dir=engines_dir,
                           log=LOG.info)
        if which == 'tensorrt':
            opts.setdefault('multiple', spec.multiple)
            opts.setdefault('model_name', spec.name)
            if engines_dir is not None:
                opts.setdefault('engines_dir', engines_dir)
        return build_backend(which, onnx_path=path, **opts)

    be = build_with_fallback(name, build, fallback=fallback, warn=warn)
    LOG.info('%s: %s', spec.name, be.describe())
    return be


#: Options a fusion method passes through to :func:`load_network` (the rest are its own).
RUNTIME_OPTIONS = ('fallback', 'engines_dir', 'precision', 'enable_fp16', 'force_engine_update',
                   'engine_file_path', 'providers', 'io_binding', 'graph_optimization',
                   'allow_spinning')
