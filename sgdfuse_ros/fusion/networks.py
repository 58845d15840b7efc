"""Network fusion methods (``stage1``, ``sgdfuse``) registered into :mod:`.methods`.

Each registers a factory and an availability check (its shipped weights exist).
"""

from __future__ import annotations

import os
from pathlib import Path
import time

import numpy as np

from sgdfuse_ros.core import imaging
from .methods import MethodOutput, register_method

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / 'weights'
#: The shipped stage-1 weights (``realtime`` preset, luma).
STAGE1_WEIGHTS = WEIGHTS_DIR / 'stage1_realtime.pt'


def planar_luma(x: np.ndarray) -> np.ndarray:
    """Luma ``H x W`` of a ``(C, H, W)`` image with C = 1 (itself) or 3 (RGB, BT.601)."""
    return x[0] if x.shape[0] == 1 else 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]


def fuse_arrays(model, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Run a stage-1 network (PyTorch) on ``(C, H, W)`` (or ``H x W``) float arrays of any
    size: pad to the network's multiple, run on the model's device and dtype, crop back.
    Returns float32 ``(C_out, H, W)`` (or ``H x W`` for 2-D input)."""
    import torch

    flat = ir.ndim == 2
    if flat:
        ir, vis = ir[None], vis[None]
    m = model.multiple
    ir_p, size = imaging.pad_to_multiple(ir.transpose(1, 2, 0), m)
    vis_p, _ = imaging.pad_to_multiple(vis.transpose(1, 2, 0), m)
    p = next(model.parameters())
    ti = torch.from_numpy(np.ascontiguousarray(ir_p.transpose(2, 0, 1)))[None].to(p)
    tv = torch.from_numpy(np.ascontiguousarray(vis_p.transpose(2, 0, 1)))[None].to(p)
    with torch.inference_mode():
        out = model(ti, tv)[0].float().cpu().numpy()
    out = out[:, :size[0], :size[1]]
    return out[0] if flat else out


class Stage1Method:
    """The stage-1 network alone (PyTorch backend): ``fused = f1``.

    Options: ``weights`` (a checkpoint file; default the shipped weights), ``device``
    (``cpu``, ``cuda``...), ``threads`` (CPU threads). Any input size: the pair is padded to
    the network's multiple and the result cropped back. ``backend``: ``torch`` (or None) runs
    the module; ``onnxruntime`` or ``tensorrt`` run its ONNX export (made on first use and
    cached, see :mod:`..runtime.loader`), with the options of
    :data:`..runtime.loader.RUNTIME_OPTIONS` (``fallback='onnxruntime'`` falls back when the
    backend cannot load). ``auto`` (the default): TensorRT where it runs, else ONNX Runtime when
    installed (about 2x faster than PyTorch on a busy CPU, see docs/benchmarks.md), else
    PyTorch; it falls back to PyTorch when the backend cannot load.
    """

    name = 'stage1'
    uses_masks = False
    multiple = 1  # padding happens here, at the network's own multiple

    def __init__(self, weights: str | os.PathLike | None = None, device: str = 'cpu',
                 threads: int | None = None, backend: str | None = 'auto', **unused):
        import torch

        from sgdfuse_ros.models.stage1 import load_stage1

        # Runtime backends (issue 6): backend-specific options go to runtime.loader.
        from sgdfuse_ros.runtime.loader import RUNTIME_OPTIONS
        runtime_options = {k: unused.pop(k) for k in RUNTIME_OPTIONS if k in unused}
        unknown = set(unused) - {'steps', 'teacher'}  # refiner options: no meaning here
        if unknown:
            raise TypeError(f'stage1: unknown options {sorted(unknown)}')
        if threads:
            torch.set_num_threads(int(threads))
        self.weights = Path(weights) if weights else STAGE1_WEIGHTS
        self.device = torch.device(device)
        self.model, self.meta = load_stage1(self.weights, map_location=self.device)
        self.net_multiple = self.model.multiple
        self.backend = None  # None: the module itself (torch); else a runtime.Backend
        if backend not in (None, 'torch'):
            from sgdfuse_ros.runtime.loader import stage1_backend
            if backend == 'auto':
                runtime_options.setdefault('fallback', 'torch')
            self.backend = stage1_backend(backend, self.model, self.weights, device=device,
                                          threads=threads, **runtime_options)

    def run(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """F1 (float32 ``H x W`` luma in ``[0, 1]``) of a luma pair of any size."""
        cfg = self.model.config
        ir, vis = np.asarray(ir, np.float32), np.asarray(vis, np.float32)
        if self.backend is None:  # the module itself
            shape = (cfg.in_channels,) + ir.shape
            out = fuse_arrays(self.model, np.broadcast_to(ir, shape), np.broadcast_to(vis, shape))
            return np.ascontiguousarray(planar_luma(out))
        from sgdfuse_ros.runtime.loader import run_stage1
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


register_method('stage1', Stage1Method, available=STAGE1_WEIGHTS.is_file)


# The full method (stage 1 + masks + refiner, issue 5) lives in its own module; importing it
# registers ``sgdfuse``.
from . import refiner as _refiner  # noqa: E402,F401
