"""The ``stage1`` fusion method: the stage-1 network alone (``fused = F1``), on a runtime backend.

Importing this module does not import torch; building the method does.
"""

from __future__ import annotations

import os
from pathlib import Path
import time

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.models.run import fuse_arrays
from sgdfuse_ros.models.weights import STAGE1_WEIGHTS
from .base import MethodOutput


def available() -> bool:
    """The shipped stage-1 weights are installed (cheap: looks for the file)."""
    return STAGE1_WEIGHTS.is_file()


def stage1_backend(backend: str, model, weights: str | os.PathLike, *, device: str | None = None,
                   threads: int | None = None, **options):
    """The stage-1 network on a named runtime backend, its ONNX (the network's own spec,
    :func:`sgdfuse_ros.models.stage1.stage1_spec`) keyed by the weights file's hash."""
    from sgdfuse_ros.core.hashing import sha256_file
    from sgdfuse_ros.models.stage1 import stage1_spec
    from sgdfuse_ros.runtime.loader import load_network

    return load_network(backend, module=model, spec=stage1_spec(model),
                        digest=sha256_file(weights), source=str(weights), device=device,
                        threads=threads, **options)


def run_stage1(be, ir: np.ndarray, vis: np.ndarray, channels: int = 1) -> np.ndarray:
    """F1 luma (``H x W`` float32) of a padded luma pair through a stage-1 backend."""
    x = np.ascontiguousarray(ir, np.float32)[None, None]
    y = np.ascontiguousarray(vis, np.float32)[None, None]
    if channels > 1:
        x = np.ascontiguousarray(np.broadcast_to(x, (1, channels) + x.shape[2:]))
        y = np.ascontiguousarray(np.broadcast_to(y, (1, channels) + y.shape[2:]))
    return imaging.planar_luma(be.run({'ir': x, 'vis': y})['f1'][0])


class Stage1Method:
    """The stage-1 network alone: ``fused = f1``.

    Options: ``weights`` (a checkpoint file; default the shipped weights), ``device``
    (``cpu``, ``cuda``...), ``threads`` (ONNX Runtime's threads per session; PyTorch's count
    is process-wide, see :func:`sgdfuse_ros.runtime.set_threads`). Any input size: the pair is
    padded to the network's multiple and the result cropped back. ``backend``: ``torch`` (or
    None) runs the module; ``onnxruntime`` or ``tensorrt`` run its ONNX export (made on first
    use and cached, see :mod:`sgdfuse_ros.runtime.loader`), with the options of
    :data:`sgdfuse_ros.runtime.loader.RUNTIME_OPTIONS` (``fallback='onnxruntime'`` falls back
    when the backend cannot load). ``auto`` (the default): TensorRT where it runs, else ONNX
    Runtime when installed (about 2x faster than PyTorch on a busy CPU, see
    docs/benchmarks.md), else PyTorch; it falls back to PyTorch when the backend cannot load.
    """

    name = 'stage1'
    uses_masks = False
    multiple = 1  # padding happens here, at the network's own multiple

    def __init__(self, weights: str | os.PathLike | None = None, device: str = 'cpu',
                 threads: int | None = None, backend: str | None = 'auto', **unused):
        import torch

        from sgdfuse_ros.models.stage1 import load_stage1
        from sgdfuse_ros.runtime.loader import RUNTIME_OPTIONS

        runtime_options = {k: unused.pop(k) for k in RUNTIME_OPTIONS if k in unused}
        unknown = set(unused) - {'steps', 'teacher'}  # refiner options: no meaning here
        if unknown:
            raise TypeError(f'stage1: unknown options {sorted(unknown)}')
        self.weights = Path(weights) if weights else STAGE1_WEIGHTS
        self.device = torch.device(device)
        self.model, self.meta = load_stage1(self.weights, map_location=self.device)
        self.net_multiple = self.model.multiple
        self.backend = None  # None: the module itself (torch); else a runtime Backend
        if backend not in (None, 'torch'):
            if backend == 'auto':
                runtime_options.setdefault('fallback', 'torch')
            self.backend = stage1_backend(backend, self.model, self.weights, device=device,
                                          threads=threads, **runtime_options)

    def backend_report(self) -> dict[str, str]:
        """``{'stage1': the backend that runs the network}`` (with a fallback's reason)."""
        if self.backend is not None:
            return {'stage1': self.backend.report()}
        import torch

        from sgdfuse_ros.runtime.torch_backend import torch_summary

        return {'stage1': torch_summary(torch, str(self.device))}

    def run(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """F1 (float32 ``H x W`` luma in ``[0, 1]``) of a luma pair of any size."""
        cfg = self.model.config
        ir, vis = np.asarray(ir, np.float32), np.asarray(vis, np.float32)
        if self.backend is None:  # the module itself
            shape = (cfg.in_channels,) + ir.shape
            out = fuse_arrays(self.model, np.broadcast_to(ir, shape), np.broadcast_to(vis, shape))
            return np.ascontiguousarray(imaging.planar_luma(out))
        ir_p, size = imaging.pad_to_multiple(ir, self.net_multiple)
        vis_p, _ = imaging.pad_to_multiple(vis, self.net_multiple)
        return np.ascontiguousarray(imaging.crop_to(
            run_stage1(self.backend, ir_p, vis_p, cfg.in_channels), size))

    def __call__(self, ir: np.ndarray, vis: np.ndarray,
                 masks: tuple[np.ndarray, np.ndarray] | None = None) -> MethodOutput:
        if ir.shape != vis.shape or ir.ndim != 2:
            raise ValueError(f'stage1: need two 2-D luma images of one shape, got {ir.shape} '
                             f'and {vis.shape}')
        t0 = time.perf_counter()
        f1 = self.run(ir, vis)
        ms = (time.perf_counter() - t0) * 1e3
        return MethodOutput(fused=f1, f1=f1, timings={'stage1': ms})
