"""The ``stage1`` fusion method: the stage-1 network alone (``fused = F1``), on a runtime backend.

On ONNX Runtime and TensorRT the method runs the network's ONNX graph: the one shipped beside
the weights, or one exported ahead of time into the engines folder, so building and running it
needs no PyTorch (the runtime install). It loads the checkpoint in PyTorch only for the
``torch`` backend, or to export a graph that does not exist yet. Importing this module does not
import torch.
"""

from __future__ import annotations

import os
from pathlib import Path
import time
from typing import Any, Callable

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.models.run import fuse_arrays
from sgdfuse_ros.models.weights import STAGE1_WEIGHTS
from .base import MethodOutput


def available() -> bool:
    """The shipped stage-1 weights are installed (cheap: looks for the file)."""
    return STAGE1_WEIGHTS.is_file()


def graph_facts(sidecar: dict[str, Any], name: str, inputs: tuple[str, ...],
                channels_key: str) -> tuple[int, int]:
    """``(channels, side multiple)`` of a network's ONNX graph from its sidecar, after checking
    that the graph takes ``inputs``; a ``ValueError`` naming what is missing otherwise."""
    config = sidecar.get('config') or {}
    missing = [n for n in inputs if n not in (sidecar.get('inputs') or [])]
    if missing or channels_key not in config or 'multiple' not in sidecar:
        raise ValueError(f'{name}: the sidecar of graph {sidecar.get("model")!r} lacks '
                         f'{missing or [channels_key, "multiple"]}: export it again '
                         '(`sgdfuse export --onnx`)')
    return int(config[channels_key]), int(sidecar['multiple'])


def stage1_backend(backend: str, weights: str | os.PathLike, *,
                   load_model: Callable[[], Any] | None = None, device: str | None = None,
                   threads: int | None = None, graph: str = 'float', **options):
    """The stage-1 network of ``weights`` on a named runtime backend, and the sidecar of the
    ONNX graph it runs (None on ``torch``): the graph shipped beside the weights or found in
    the engines folder by the weights' hash, else exported with the network's own spec
    (:func:`sgdfuse_ros.models.stage1.stage1_spec`) from ``load_model()`` (PyTorch).
    ``graph``: ``float`` or ``int8`` (its quantization, on onnxruntime; made ahead of time,
    :mod:`sgdfuse_ros.runtime.quantize`)."""
    from sgdfuse_ros.core.hashing import sha256_file
    from sgdfuse_ros.runtime.loader import load_graph

    def exportable():
        from sgdfuse_ros.models.stage1 import Stage1WithMaps, stage1_spec

        model = load_model()
        return Stage1WithMaps(model), stage1_spec(model)

    return load_graph(backend, pattern='stage1', digest=sha256_file(weights), source=str(weights),
                      shipped=weights, exportable=exportable if load_model else None,
                      export_command='sgdfuse export --onnx --models stage1 --stage1-weights '
                      f'{weights}', device=device, threads=threads, graph=graph, **options)


def run_stage1(be, ir: np.ndarray, vis: np.ndarray, channels: int = 1, *,
               maps: bool = False):
    """F1 luma (``H x W`` float32) of a padded luma pair through a stage-1 backend; with
    ``maps`` ``(f1, maps)``, the graph's blend maps ``4 x H x W`` too."""
    x = np.ascontiguousarray(ir, np.float32)[None, None]
    y = np.ascontiguousarray(vis, np.float32)[None, None]
    if channels > 1:
        x = np.ascontiguousarray(np.broadcast_to(x, (1, channels) + x.shape[2:]))
        y = np.ascontiguousarray(np.broadcast_to(y, (1, channels) + y.shape[2:]))
    out = be.run({'ir': x, 'vis': y})
    f1 = imaging.planar_luma(out['f1'][0])
    return (f1, out['maps'][0]) if maps else f1


class Stage1Method:
    """The stage-1 network alone: ``fused = f1``.

    Options: ``weights`` (a checkpoint file; default the shipped weights), ``device``
    (``cpu``, ``cuda``...), ``threads`` (ONNX Runtime's threads per session; PyTorch's count
    is process-wide, see :func:`sgdfuse_ros.runtime.set_threads`). Any input size: the pair is
    padded to the network's multiple and the result cropped back. ``backend``: ``torch`` (or
    None) runs the module (needs PyTorch); ``onnxruntime`` or ``tensorrt`` run its ONNX graph
    (shipped beside the weights, or exported on first use and cached, see
    :func:`sgdfuse_ros.runtime.loader.load_graph`), with the options of
    :data:`sgdfuse_ros.runtime.loader.RUNTIME_OPTIONS` (``fallback='onnxruntime'`` falls back
    when the backend cannot load). ``auto`` (the default): TensorRT where it runs, else ONNX
    Runtime when installed (about 2x faster than PyTorch on a busy CPU, see
    docs/benchmarks.md), else PyTorch; it falls back to PyTorch when the backend cannot load
    and PyTorch is installed. ``graph``: ``float`` (the default) or ``int8``, the network's
    INT8 graph on ONNX Runtime (shipped beside the float one; faster on the CPU, see
    docs/benchmarks.md); ``int8`` needs the ``onnxruntime`` backend (or ``auto`` resolving
    to it) and does not fall back.
    """

    name = 'stage1'
    uses_masks = False
    multiple = 1  # padding happens here, at the network's own multiple
    #: Returns its blend maps when asked (``maps=True``): the graph outputs them (a luma one).
    blend_maps = False

    def __init__(self, weights: str | os.PathLike | None = None, device: str = 'cpu',
                 threads: int | None = None, backend: str | None = 'auto', graph: str = 'float',
                 **unused):
        from sgdfuse_ros.runtime.loader import RUNTIME_OPTIONS, auto_fallback
        from sgdfuse_ros.runtime.quantize import check_kind

        runtime_options = {k: unused.pop(k) for k in RUNTIME_OPTIONS if k in unused}
        unknown = set(unused) - {'steps', 'teacher'}  # refiner options: no meaning here
        if unknown:
            raise TypeError(f'stage1: unknown options {sorted(unknown)}')
        self.weights = Path(weights) if weights else STAGE1_WEIGHTS
        if not self.weights.is_file():
            raise FileNotFoundError(f'stage1: no weights file {self.weights}')
        self.device = str(device)
        self.graph = check_kind(graph)
        self._model = None
        self.meta: dict[str, Any] | None = None  # the checkpoint's, once loaded in PyTorch
        self.backend = None  # None: the module itself (torch); else a runtime Backend
        if backend in (None, 'torch'):
            if self.graph != 'float':
                raise ValueError(f"stage1: graph='{graph}' runs on onnxruntime, not torch")
            from sgdfuse_ros.runtime.extras import require_torch

            require_torch("the 'torch' backend")
            self.channels, self.net_multiple = self.model.config.in_channels, self.model.multiple
            return
        if backend == 'auto' and self.graph == 'float':
            runtime_options.setdefault('fallback', auto_fallback(backend))
        self.backend, sidecar = stage1_backend(backend, self.weights,
                                               load_model=lambda: self.model, device=device,
                                               threads=threads, graph=self.graph,
                                               **runtime_options)
        if sidecar is None:  # fell back to the module
            self.channels, self.net_multiple = self.model.config.in_channels, self.model.multiple
        else:
            self.channels, self.net_multiple = graph_facts(sidecar, 'stage1', ('ir', 'vis'),
                                                           'in_channels')
            out_channels = (sidecar.get('config') or {}).get('out_channels', 1)
            self.blend_maps = 'maps' in (sidecar.get('outputs') or ()) and out_channels == 1

    @property
    def model(self):
        """The PyTorch network, loaded on first use (needs PyTorch)."""
        if self._model is None:
            from sgdfuse_ros.runtime.extras import require_torch

            require_torch('stage1 in PyTorch (backend torch, or exporting its ONNX graph)')
            import torch

            from sgdfuse_ros.models.stage1 import load_stage1

            self._model, self.meta = load_stage1(self.weights,
                                                 map_location=torch.device(self.device))
        return self._model

    def backend_report(self) -> dict[str, str]:
        """``{'stage1': the backend that runs the network}`` (with a fallback's reason)."""
        if self.backend is not None:
            graph = '' if self.graph == 'float' else f'; {self.graph} graph'
            return {'stage1': self.backend.report() + graph}
        import torch

        from sgdfuse_ros.runtime.torch_backend import torch_summary

        return {'stage1': torch_summary(torch, self.device)}

    def run(self, ir: np.ndarray, vis: np.ndarray, *, maps: bool = False):
        """F1 (float32 ``H x W`` luma in ``[0, 1]``) of a luma pair of any size; with ``maps``
        (where :attr:`blend_maps`) ``(f1, maps)``, its blend maps ``4 x H x W`` too (see
        :mod:`.compose`)."""
        ir, vis = np.asarray(ir, np.float32), np.asarray(vis, np.float32)
        if maps and not self.blend_maps:
            raise ValueError('stage1: this network runs without blend maps')
        if self.backend is None:  # the module itself
            shape = (self.channels,) + ir.shape
            out = fuse_arrays(self.model, np.broadcast_to(ir, shape), np.broadcast_to(vis, shape))
            return np.ascontiguousarray(imaging.planar_luma(out))
        ir_p, size = imaging.pad_to_multiple(ir, self.net_multiple)
        vis_p, _ = imaging.pad_to_multiple(vis, self.net_multiple)
        out = run_stage1(self.backend, ir_p, vis_p, self.channels, maps=maps)
        if not maps:
            return np.ascontiguousarray(imaging.crop_to(out, size))
        h, w = size
        return np.ascontiguousarray(out[0][:h, :w]), np.ascontiguousarray(out[1][:, :h, :w])

    def __call__(self, ir: np.ndarray, vis: np.ndarray,
                 masks: tuple[np.ndarray, np.ndarray] | None = None, *,
                 maps: bool = False) -> MethodOutput:
        if ir.shape != vis.shape or ir.ndim != 2:
            raise ValueError(f'stage1: need two 2-D luma images of one shape, got {ir.shape} '
                             f'and {vis.shape}')
        t0 = time.perf_counter()
        if maps:
            from .compose import BlendMaps

            f1, m = self.run(ir, vis, maps=True)
            blend = BlendMaps(work=(ir.shape[1], ir.shape[0]), stage1=m)
        else:
            f1, blend = self.run(ir, vis), None
        ms = (time.perf_counter() - t0) * 1e3
        return MethodOutput(fused=f1, f1=f1, timings={'stage1': ms}, maps=blend)
