"""One call for the fusion methods: a network's backend by name, exported on first use.

::

    from .loader import load_network
    from .export import stage1_spec

    be = load_network('onnxruntime', module=model, spec=stage1_spec(model),
                      digest=sha256_file(weights), source=str(weights), fallback='onnxruntime')
    f1 = be.run({'ir': ir[None, None], 'vis': vis[None, None]})['f1']

``torch`` runs the module itself; ``onnxruntime`` and ``tensorrt`` run its ONNX export, found in
(or written to) the engines folder by the weights' hash (:func:`.export.ensure_onnx`).
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Callable

from .backends import (BACKENDS, Backend, build_backend, build_with_fallback,
                       default_backend)
from .export import ExportSpec, ensure_onnx

LOG = logging.getLogger('sgdfuse_ros.runtime')


def _accepted(cls: type[Backend], options: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in options.items() if k in params}


def _common_options(name: str, device: str | None, threads: int | None) -> dict[str, Any]:
    """``device`` / ``threads`` in each backend's own terms."""
    dev = str(device) if device else 'cpu'
    on_cuda = dev.startswith('cuda')
    if name == 'torch':
        return {'device': dev, 'threads': threads}
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

    ``module``: the PyTorch network (eval mode). ``spec``: how it exports
    (:func:`.export.stage1_spec`...). ``digest`` / ``source``: its weights' SHA-256 and origin
    (keys the ONNX file). ``device`` / ``threads`` are translated for each backend; ``options``
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


def stage1_backend(backend: str, model, weights: str | os.PathLike, *, device: str | None = None,
                   threads: int | None = None, **options) -> Backend:
    """The stage-1 network on a named backend, its ONNX keyed by the weights file's hash."""
    from .engine_cache import sha256_file
    from .export import stage1_spec

    return load_network(backend, module=model, spec=stage1_spec(model),
                        digest=sha256_file(weights), source=str(weights), device=device,
                        threads=threads, **options)


def run_stage1(be: Backend, ir, vis, channels: int = 1):
    """F1 luma (``H x W`` float32) of a padded luma pair through a stage-1 backend."""
    import numpy as np

    x = np.ascontiguousarray(ir, np.float32)[None, None]
    y = np.ascontiguousarray(vis, np.float32)[None, None]
    if channels > 1:
        x = np.ascontiguousarray(np.broadcast_to(x, (1, channels) + x.shape[2:]))
        y = np.ascontiguousarray(np.broadcast_to(y, (1, channels) + y.shape[2:]))
    out = be.run({'ir': x, 'vis': y})['f1'][0]
    if out.shape[0] == 3:
        return 0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2]
    return out[0]


def refiner_spec(sampler, *, size: tuple[int, int] = (480, 640)):
    """How the K-step student exports as one graph: ``(f1, masks, ir, vis) -> fused``, all
    ``1 x C x H x W`` (masks ``1 x 2 x H x W``) in ``[0, 1]``, dynamic H and W. The file name
    carries K and the start timestep, so each sampler setting gets its own export."""
    import torch

    from .export import ExportSpec

    net = sampler.net
    c = net.config.channels
    dyn = {2: 'height', 3: 'width'}

    def make(h, w):
        return (torch.rand(1, c, h, w), torch.rand(1, 2, h, w), torch.rand(1, c, h, w),
                torch.rand(1, c, h, w))

    ts = list(sampler.timesteps)
    return ExportSpec(f'refiner_k{len(ts)}_t{ts[0]}', ('f1', 'masks', 'ir', 'vis'), ('fused',),
                      make, None, dynamic_axes={k: dyn for k in ('f1', 'masks', 'ir', 'vis',
                                                                 'fused')},
                      multiple=net.multiple, size=size,
                      meta={'timesteps': ts, 'start': sampler.start})


def refiner_backend(backend: str, model, diffusion, *, steps: int, t_start: int,
                    start: str = 'f1', weights: str | os.PathLike | None = None,
                    device: str | None = None, threads: int | None = None,
                    export_size: tuple[int, int] = (480, 640), **options) -> Backend:
    """The refiner's K-step sampler (one graph, :class:`..models.diffusion.Sampler`) on a named
    backend; its ONNX is exported on first use, keyed by the weights file's hash (or the
    module's state when ``weights`` is None). ``export_size``: ``(H, W)`` of the export's
    trace and parity check (the graph takes any multiple of the network's side multiple)."""
    from sgdfuse_ros.models.diffusion import Sampler
    from .engine_cache import sha256_file
    from .export import module_digest

    sampler = Sampler(model, diffusion, steps=int(steps), t_start=int(t_start),
                      start=start).eval()
    if weights is not None:
        digest, source = sha256_file(weights), str(weights)
    else:
        digest, source = module_digest(model), 'in-memory refiner'
    return load_network(backend, module=sampler, spec=refiner_spec(sampler, size=export_size),
                        digest=digest,
                        source=source, device=device, threads=threads, **options)


def run_refiner(be: Backend, f1, masks, ir, vis):
    """Refined image (``C x H x W`` float32, ``[0, 1]``) of padded ``C x H x W`` arrays
    (``masks``: ``2 x H x W``) through a refiner backend. Inputs the graph dropped (the
    sources, for a network without them) are not fed."""
    import numpy as np

    arrays = {'f1': f1, 'masks': masks, 'ir': ir, 'vis': vis}
    feeds = {n: np.ascontiguousarray(arrays[n], np.float32)[None] for n in be.input_names}
    return be.run(feeds)['fused'][0]
