"""Network fusion methods (``stage1``, ``sgdfuse``) registered into :mod:`.methods`.

Each registers a factory and an availability check (its shipped weights exist).
"""

from __future__ import annotations

import os
from pathlib import Path
import time

import numpy as np

from . import imaging
from .methods import MethodOutput, register_method

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / 'weights'
#: The shipped stage-1 weights (``realtime`` preset, luma).
STAGE1_WEIGHTS = WEIGHTS_DIR / 'stage1_realtime.pt'


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

        from ..models.stage1 import load_stage1

        # Runtime backends (issue 6): backend-specific options go to runtime.loader.
        from ..runtime.loader import RUNTIME_OPTIONS
        runtime_options = {k: unused.pop(k) for k in RUNTIME_OPTIONS if k in unused}
        unknown = set(unused) - {'steps', 'teacher'}  # refiner options: no meaning here
        if unknown:
            raise TypeError(f'stage1: unknown options {sorted(unknown)}')
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self.weights = Path(weights) if weights else STAGE1_WEIGHTS
        self.device = torch.device(device)
        self.model, self.meta = load_stage1(self.weights, map_location=self.device)
        self.net_multiple = self.model.multiple
        self.backend = None  # None: the module itself (torch); else a runtime.Backend
        if backend not in (None, 'torch'):
            from ..runtime.loader import stage1_backend
            if backend == 'auto':
                runtime_options.setdefault('fallback', 'torch')
            self.backend = stage1_backend(backend, self.model, self.weights, device=device,
                                          threads=threads, **runtime_options)

    def run(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """F1 (float32 ``H x W`` luma in ``[0, 1]``) of a luma pair of any size."""
        torch = self._torch
        cfg = self.model.config
        ir_p, size = imaging.pad_to_multiple(np.asarray(ir, np.float32), self.net_multiple)
        vis_p, _ = imaging.pad_to_multiple(np.asarray(vis, np.float32), self.net_multiple)
        if self.backend is not None:  # runtime backend (issue 6)
            from ..runtime.loader import run_stage1
            return np.ascontiguousarray(imaging.crop_to(
                run_stage1(self.backend, ir_p, vis_p, cfg.in_channels), size))
        ti = torch.from_numpy(np.ascontiguousarray(ir_p))[None, None].to(self.device)
        tv = torch.from_numpy(np.ascontiguousarray(vis_p))[None, None].to(self.device)
        if cfg.in_channels > 1:
            ti = ti.expand(-1, cfg.in_channels, -1, -1)
            tv = tv.expand(-1, cfg.in_channels, -1, -1)
        with torch.inference_mode():
            out = self.model(ti, tv)[0]
            if out.shape[0] == 3:
                out = 0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2]
            else:
                out = out[0]
            f1 = out.float().cpu().numpy()
        return np.ascontiguousarray(imaging.crop_to(f1, size))

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
