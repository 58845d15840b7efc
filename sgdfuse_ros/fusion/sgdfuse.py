"""The full method, ``sgdfuse``: stage 1 + semantic masks + the few-step diffusion refiner.

:class:`RefinerRunner` runs a refiner checkpoint on arrays (any size: padded to the network's
multiple and cropped back), in PyTorch or through a runtime backend (the K-step sampler as one
graph, exported on first use with the spec of :mod:`sgdfuse_ros.models.refiner_export`);
:class:`SGDFuseMethod` is the fusion method (``build_method('sgdfuse', steps=K,
teacher=False)``).

The shipped weights (:mod:`sgdfuse_ros.models.weights`): the distilled K-step student (the
default) and the many-step teacher (``teacher=True``). Importing this module does not import
torch; building the method does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
import time
from typing import Any

import numpy as np

from sgdfuse_ros.models.run import padded_inputs, refine_arrays
from sgdfuse_ros.models.weights import STUDENT_WEIGHTS, TEACHER_WEIGHTS
from . import stage1
from .base import MethodOutput

LOG = logging.getLogger('sgdfuse_ros.refiner')


def available() -> bool:
    """The shipped student and stage-1 weights are installed (cheap: looks for the files)."""
    return STUDENT_WEIGHTS.is_file() and stage1.available()


def saliency_masks(ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The masks of the refiner export's real-pair check: the non-learned ``saliency``
    provider's (fast, no model), for a luma pair in ``[0, 1]``."""
    from sgdfuse_ros.masks.saliency import SaliencyProvider

    return SaliencyProvider()(ir, vis).as_tuple()


def refiner_backend(backend: str, model, meta: dict[str, Any], *, steps: int | None = None,
                    weights: str | os.PathLike | None = None, device: str | None = None,
                    threads: int | None = None, export_size: tuple[int, int] = (480, 640),
                    **options):
    """A refiner checkpoint's K-step sampler (one graph, ``steps`` overriding the checkpoint's
    K) on a named backend; its ONNX is exported on first use (the spec of
    :func:`sgdfuse_ros.models.refiner_export.refiner_spec`, checked on a real pair), keyed by
    the weights file's hash (or the module's state when ``weights`` is None). ``export_size``:
    ``(H, W)`` of the export's trace and parity check (the graph takes any multiple of the
    network's side multiple)."""
    from sgdfuse_ros.core.hashing import sha256_file
    from sgdfuse_ros.models.export_spec import module_digest
    from sgdfuse_ros.models.refiner_export import refiner_sampler, refiner_spec
    from sgdfuse_ros.runtime.loader import load_network

    sampler = refiner_sampler(model, meta, steps=steps)
    if weights is not None:
        digest, source = sha256_file(weights), str(weights)
    else:
        digest, source = module_digest(model), 'in-memory refiner'
    spec = refiner_spec(sampler, size=export_size, masks_of=saliency_masks)
    return load_network(backend, module=sampler, spec=spec, digest=digest, source=source,
                        device=device, threads=threads, **options)


def run_refiner(be, f1: np.ndarray, masks: np.ndarray, ir: np.ndarray,
                vis: np.ndarray) -> np.ndarray:
    """Refined image (``C x H x W`` float32, ``[0, 1]``) of padded ``C x H x W`` arrays
    (``masks``: ``2 x H x W``) through a refiner backend. Inputs the graph dropped (the
    sources, for a network without them) are not fed."""
    arrays = {'f1': f1, 'masks': masks, 'ir': ir, 'vis': vis}
    feeds = {n: np.ascontiguousarray(arrays[n], np.float32)[None] for n in be.input_names}
    return be.run(feeds)['fused'][0]


def _as_chw(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x[None] if x.ndim == 2 else x


class RefinerRunner:
    """A refiner checkpoint ready to run on numpy arrays.

    ``meta`` comes from :func:`sgdfuse_ros.models.refiner.load_refiner`: its ``sampler`` entry
    gives the default steps, start timestep and start rule, its ``diffusion`` entry the schedule,
    ``use_masks`` says whether the network was trained with masks (the ``no_sam`` ablation was
    not: its masks are zeroed).
    """

    def __init__(self, model, meta: dict[str, Any], device: str = 'cpu'):
        import torch

        from sgdfuse_ros.models.diffusion import Diffusion
        from sgdfuse_ros.models.refiner import SamplerSettings

        self.model = model.eval()
        self.meta = meta
        self.device = torch.device(device)
        settings = SamplerSettings.from_meta(meta)
        self.steps, self.t_start, self.start = settings.steps, settings.t_start, settings.start
        self.use_masks = bool(meta.get('use_masks', True))
        self.backend = None  # a runtime backend once use_backend() picked one
        self.diffusion = Diffusion.from_description(meta.get('diffusion'))
        self.path: Path | None = None

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = 'cpu') -> 'RefinerRunner':
        from sgdfuse_ros.models.refiner import load_refiner

        model, meta = load_refiner(path, map_location=device)
        runner = cls(model, meta, device)
        runner.path = Path(path)
        return runner

    @property
    def config(self):
        return self.model.config

    def use_backend(self, backend: str | None, *, steps: int | None = None,
                    device: str | None = None, threads: int | None = None, **options):
        """Run :meth:`refine` through a runtime backend (``onnxruntime``, ``tensorrt``,
        ``auto``; see :func:`refiner_backend`): the K-step sampler as one graph, exported on
        first use and cached. ``torch`` (or None) keeps the module. Returns the backend."""
        if backend in (None, 'torch'):
            self.backend = None
            return None
        self.steps = int(steps) if steps else self.steps
        self.backend = refiner_backend(backend, self.model, self.meta, steps=self.steps,
                                       weights=self.path, device=device, threads=threads,
                                       **options)
        return self.backend

    def backend_report(self) -> str:
        """One line on the backend that runs the refiner (with a fallback's reason)."""
        if self.backend is not None:
            return self.backend.report()
        import torch

        from sgdfuse_ros.runtime.torch_backend import torch_summary

        return torch_summary(torch, str(self.device))

    def refine(self, f1: np.ndarray, ir: np.ndarray, vis: np.ndarray,
               masks: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None, *,
               steps: int | None = None, t_start: int | None = None) -> np.ndarray:
        """Refined image, float32 in ``[0, 1]``, of the shape of ``f1`` (``H x W`` or
        ``C x H x W``). ``masks``: (IR, VIS) ``H x W`` pair, a ``2 x H x W`` array or None
        (zeros)."""
        flat = np.asarray(f1).ndim == 2
        f1, ir, vis = _as_chw(f1), _as_chw(ir), _as_chw(vis)
        h, w = f1.shape[1:]
        if masks is None or not self.use_masks:
            m = np.zeros((2, h, w), np.float32)
        else:
            m = np.stack([np.asarray(a, np.float32) for a in masks]) if isinstance(
                masks, (tuple, list)) else np.asarray(masks, np.float32)
            if m.shape != (2, h, w):
                raise ValueError(f'masks must be 2 x {h} x {w}, got {m.shape}')
        k = int(steps) if steps else self.steps
        t0 = self.t_start if t_start is None else int(t_start)
        if self.backend is not None and (k, t0) == (self.steps, self.t_start):
            x, size = padded_inputs(f1, m, ir, vis, self.model.multiple)
            c = f1.shape[0]
            out = run_refiner(self.backend, x[:c], x[c:c + 2], x[c + 2:2 * c + 2],
                              x[2 * c + 2:])[:, :size[0], :size[1]]
        else:
            if k > t0 + 1:
                raise ValueError(f'{k} steps do not fit below t_start={t0}')
            out = refine_arrays(self.model, self.diffusion, f1, m, ir, vis, steps=k,
                                t_start=t0, start=self.start)
        return np.ascontiguousarray(out[0] if flat else out)


class SGDFuseMethod:
    """Stage 1 + masks + refiner (``fused = refiner(F1, masks, IR, VIS)``).

    Options: ``weights`` (refiner checkpoint; default the shipped student, or the teacher with
    ``teacher=True``), ``stage1_weights``, ``steps`` (sampling steps; default the checkpoint's),
    ``device``, ``threads``, ``backend`` (the runtime of both networks, see
    :class:`.stage1.Stage1Method`: ``auto`` = TensorRT on a GPU that has it, else ONNX
    Runtime when installed, else PyTorch; the teacher always runs in PyTorch, its 60 steps
    do not make a sensible single graph). Masks come from the pipeline's mask provider; without
    masks (``masks=None``) the refiner gets empty ones.
    """

    name = 'sgdfuse'
    uses_masks = True
    multiple = 1

    def __init__(self, weights: str | os.PathLike | None = None, *,
                 stage1_weights: str | os.PathLike | None = None, steps: int | None = None,
                 teacher: bool = False, device: str = 'cpu', threads: int | None = None,
                 backend: str | None = 'auto', **options):
        from sgdfuse_ros.runtime.loader import RUNTIME_OPTIONS

        if steps is not None and int(steps) < 1:
            raise ValueError(f'sgdfuse: steps must be >= 1, got {steps}')
        if weights is None:
            weights = TEACHER_WEIGHTS if teacher else STUDENT_WEIGHTS
            if not Path(weights).is_file():
                raise FileNotFoundError(
                    f'sgdfuse: {"teacher" if teacher else "student"} refiner weights are not '
                    f'installed ({weights}); pass weights=')
        self.stage1 = stage1.Stage1Method(stage1_weights, device=device, threads=threads,
                                          backend=backend, **options)
        self.refiner = RefinerRunner.load(weights, device=device)
        self.steps = int(steps) if steps else None
        self.teacher = bool(teacher)
        if not self.teacher and backend not in (None, 'torch'):
            runtime = {k: options[k] for k in RUNTIME_OPTIONS if k in options}
            if backend == 'auto':
                runtime.setdefault('fallback', 'torch')
            self.refiner.use_backend(backend, steps=self.steps, device=device, threads=threads,
                                     **runtime)

    def backend_report(self) -> dict[str, str]:
        """``{'stage1': ..., 'refiner': ...}``: the backend that runs each network."""
        return {**self.stage1.backend_report(), 'refiner': self.refiner.backend_report()}

    def __call__(self, ir: np.ndarray, vis: np.ndarray,
                 masks: tuple[np.ndarray, np.ndarray] | None = None) -> MethodOutput:
        if ir.shape != vis.shape or ir.ndim != 2:
            raise ValueError(f'sgdfuse: need two 2-D luma images of one shape, got {ir.shape} '
                             f'and {vis.shape}')
        if masks is None and self.refiner.use_masks:
            LOG.warning('sgdfuse: no masks given; refining with empty masks')
        t0 = time.perf_counter()
        f1 = self.stage1.run(ir, vis)
        t1 = time.perf_counter()
        fused = self.refiner.refine(f1, ir, vis, masks, steps=self.steps)
        t2 = time.perf_counter()
        return MethodOutput(fused=fused, f1=f1,
                            timings={'stage1': (t1 - t0) * 1e3, 'refiner': (t2 - t1) * 1e3})
