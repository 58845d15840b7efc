"""The full method, ``sgdfuse``: stage 1 + semantic masks + the few-step diffusion refiner.

:class:`RefinerRunner` runs a refiner checkpoint on arrays (any size: padded to the network's
multiple and cropped back); :class:`SGDFuseMethod` is the registered fusion method
(``build_method('sgdfuse', steps=K, teacher=False)``). Registered from :mod:`.networks`.

The shipped weights: ``weights/refiner_student.pt`` (the distilled K-step student, the default)
and, when present, ``weights/refiner_teacher.pt`` (the many-step teacher, ``teacher=True``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
import time
from typing import Any

import numpy as np

from sgdfuse_ros.core import imaging
from .methods import MethodOutput, register_method

LOG = logging.getLogger('sgdfuse_ros.refiner')

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / 'weights'
STUDENT_WEIGHTS = WEIGHTS_DIR / 'refiner_student.pt'
TEACHER_WEIGHTS = WEIGHTS_DIR / 'refiner_teacher.pt'
#: Weights of the ablation variants (``sgdfuse ablate``), when installed.
ABLATION_DIR = WEIGHTS_DIR / 'ablation'


def _as_chw(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x[None] if x.ndim == 2 else x


def padded_inputs(f1: np.ndarray, masks: np.ndarray, ir: np.ndarray, vis: np.ndarray,
                  multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``[F1, masks, IR, VIS]`` of ``(C, H, W)`` arrays (masks ``2 x H x W``) stacked on the
    channel axis and padded to ``multiple`` (as :func:`.imaging.pad_to_multiple`); returns the
    ``(2 + 3C) x H' x W'`` stack and the original ``(H, W)``."""
    stack = np.concatenate([f1, masks, ir, vis]).transpose(1, 2, 0)
    padded, size = imaging.pad_to_multiple(stack, multiple)
    return padded.transpose(2, 0, 1), size


def refine_arrays(model, diffusion, f1: np.ndarray, masks: np.ndarray, ir: np.ndarray,
                  vis: np.ndarray, *, steps: int, t_start: int, start: str) -> np.ndarray:
    """Run a refiner network (PyTorch) through the diffusion sampler on ``(C, H, W)`` arrays
    (masks ``2 x H x W``) of any size, on the model's device and dtype; returns the refined
    float32 ``(C, H, W)`` image."""
    import torch

    from sgdfuse_ros.models.refiner import build_condition

    x, size = padded_inputs(f1, masks, ir, vis, model.multiple)
    x = torch.from_numpy(np.ascontiguousarray(x))[None].to(next(model.parameters()))
    c = f1.shape[0]
    tf1 = x[:, :c]
    cond = build_condition(tf1, x[:, c:c + 2], x[:, c + 2:2 * c + 2], x[:, 2 * c + 2:],
                           model.config.sources)
    with torch.inference_mode():
        out = diffusion.sample(model, cond, tf1, steps=steps, t_start=t_start, start=start)
    return out[0].float().cpu().numpy()[:, :size[0], :size[1]]


class RefinerRunner:
    """A refiner checkpoint ready to run on numpy arrays (PyTorch).

    ``meta`` comes from :func:`sgdfuse_ros.models.refiner.load_refiner`: its ``sampler`` entry
    gives the default steps, start timestep and start rule, ``use_masks`` says whether the
    network was trained with masks (the ``no_sam`` ablation was not: its masks are zeroed).
    """

    def __init__(self, model, meta: dict[str, Any], device: str = 'cpu'):
        import torch

        from sgdfuse_ros.models.diffusion import Diffusion

        self.model = model.eval()
        self.meta = meta
        self.device = torch.device(device)
        sampler = meta.get('sampler', {})
        self.steps = int(sampler.get('steps', 2))
        self.t_start = int(sampler.get('t_start', 999))
        self.start = sampler.get('start', 'f1')
        self.use_masks = bool(meta.get('use_masks', True))
        self.backend = None  # a runtime backend once use_backend() picked one
        d = meta.get('diffusion') or {}
        self.diffusion = Diffusion(int(d.get('T', 1000)), float(d.get('beta_start', 1e-6)),
                                   float(d.get('beta_end', 1e-2)))

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

    def use_backend(self, backend: str, *, steps: int | None = None, device: str | None = None,
                    threads: int | None = None, **options):
        """Run :meth:`refine` through a runtime backend (``onnxruntime``, ``tensorrt``,
        ``auto``; see :mod:`..runtime.loader`): the K-step sampler as one graph, exported on
        first use and cached. ``torch`` (or None) keeps the module. Returns the backend."""
        if backend in (None, 'torch'):
            self.backend = None
            return None
        from sgdfuse_ros.runtime.loader import refiner_backend

        self.steps = int(steps) if steps else self.steps
        self.backend = refiner_backend(backend, self.model, self.diffusion, steps=self.steps,
                                       t_start=self.t_start, start=self.start,
                                       weights=getattr(self, 'path', None), device=device,
                                       threads=threads, **options)
        return self.backend

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
            from sgdfuse_ros.runtime.loader import run_refiner

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
    :class:`.networks.Stage1Method`: ``auto`` = TensorRT on a GPU that has it, else ONNX
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
        from .networks import Stage1Method

        if steps is not None and int(steps) < 1:
            raise ValueError(f'sgdfuse: steps must be >= 1, got {steps}')
        if weights is None:
            weights = TEACHER_WEIGHTS if teacher else STUDENT_WEIGHTS
            if not Path(weights).is_file():
                raise FileNotFoundError(
                    f'sgdfuse: {"teacher" if teacher else "student"} refiner weights are not '
                    f'installed ({weights}); pass weights=')
        self.stage1 = Stage1Method(stage1_weights, device=device, threads=threads,
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


def _available() -> bool:
    from .networks import STAGE1_WEIGHTS

    return STUDENT_WEIGHTS.is_file() and STAGE1_WEIGHTS.is_file()


register_method('sgdfuse', SGDFuseMethod, available=_available)


# ----------------------------------------------------------------------------------------------
# ONNX export targets (``sgdfuse export --models refiner``)
# ----------------------------------------------------------------------------------------------

def export_targets(options: dict) -> list:
    """The student as one K-step graph (``refiner``: f1, masks, ir, vis -> fused) and as one
    step (``refiner_step``: x, cond, t -> x at the next timestep)."""
    import torch

    from sgdfuse_ros.models.diffusion import DenoiseStep, Diffusion, Sampler
    from sgdfuse_ros.models.refiner import RefinerNet, build_condition, load_refiner, preset
    from sgdfuse_ros.runtime.engine_cache import sha256_file
    from sgdfuse_ros.runtime.export import Exportable, ExportSpec, module_digest

    weights = options.get('refiner_weights') or (STUDENT_WEIGHTS if STUDENT_WEIGHTS.is_file()
                                                 else None)
    if weights is not None:
        model, meta = load_refiner(weights, map_location='cpu')
        digest, source = sha256_file(weights), str(weights)
    elif options.get('allow_random'):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = RefinerNet(preset('realtime')).eval()
        meta = {'sampler': {'steps': 2, 't_start': 500, 'start': 'f1'}}
        digest, source = module_digest(model), 'random initialisation (no weights installed)'
    else:
        raise FileNotFoundError('no refiner weights installed; pass --random to export an '
                                'untrained network')
    s = meta.get('sampler', {})
    diffusion = Diffusion()
    steps, t_start = int(s.get('steps', 2)), int(s.get('t_start', 500))
    sampler = Sampler(model, diffusion, steps=steps, t_start=t_start,
                      start=s.get('start', 'f1')).eval()
    step = DenoiseStep(model, diffusion, sampler.timesteps).eval()
    cfg = model.config
    c = cfg.channels
    dyn = {2: 'height', 3: 'width'}

    def make(h, w):
        return (torch.rand(1, c, h, w), torch.rand(1, 2, h, w), torch.rand(1, c, h, w),
                torch.rand(1, c, h, w))

    def real(ir, vis, h, w):
        from sgdfuse_ros.core.baselines import fuse_laplacian
        from sgdfuse_ros.masks import build_provider

        f1 = fuse_laplacian(ir, vis)
        m = build_provider('saliency')(ir, vis).as_tuple()
        t = [torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]
             for a in (f1, ir, vis)]
        tm = torch.from_numpy(np.stack(m).astype(np.float32))[None]
        return t[0].expand(1, c, h, w), tm, t[1].expand(1, c, h, w), t[2].expand(1, c, h, w)

    def make_step(h, w):
        f1, m, ir, vis = make(h, w)
        return (torch.randn(1, c, h, w), build_condition(f1, m, ir, vis, cfg.sources),
                torch.tensor([sampler.timesteps[0]], dtype=torch.long))

    def real_step(ir, vis, h, w):
        f1, m, tir, tvis = real(ir, vis, h, w)
        return (torch.randn(1, c, h, w), build_condition(f1, m, tir, tvis, cfg.sources),
                torch.tensor([sampler.timesteps[0]], dtype=torch.long))

    size = options.get('size', (480, 640))
    from dataclasses import asdict
    info = {'config': asdict(cfg), 'timesteps': sampler.timesteps, 'start': sampler.start}
    # The name the runtime loader looks for (runtime.loader.refiner_spec): an export made ahead
    # of time is the one the node and `sgdfuse fuse` then use.
    ts = list(sampler.timesteps)
    spec = ExportSpec(f'refiner_k{len(ts)}_t{ts[0]}', ('f1', 'masks', 'ir', 'vis'), ('fused',),
                      make, real,
                      dynamic_axes={k: dyn for k in ('f1', 'masks', 'ir', 'vis', 'fused')},
                      multiple=model.multiple, size=size, meta=info)
    spec_step = ExportSpec('refiner_step', ('x', 'cond', 't'), ('x_next',), make_step,
                           real_step, dynamic_axes={k: dyn for k in ('x', 'cond', 'x_next')},
                           multiple=model.multiple, size=size, meta=info)
    return [Exportable(sampler, spec, digest, source),
            Exportable(step, spec_step, digest, source)]
