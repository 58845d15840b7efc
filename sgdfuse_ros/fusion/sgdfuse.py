"""The full method, ``sgdfuse``: stage 1 + semantic masks + the few-step diffusion refiner.

:class:`RefinerRunner` runs a refiner checkpoint on arrays (any size: padded to the network's
multiple and cropped back), in PyTorch or through a runtime backend (the K-step sampler as one
graph, exported on first use with the spec of :mod:`sgdfuse_ros.models.refiner_export`);
:class:`SGDFuseMethod` is the fusion method (``build_method('sgdfuse', steps=K,
teacher=False)``).

The shipped weights (:mod:`sgdfuse_ros.models.weights`): the distilled K-step student (the
default) and the many-step teacher (``teacher=True``). The student's K-step graph ships beside
its weights, with a sidecar holding its sampler settings, so on ONNX Runtime or TensorRT the
method builds and runs without PyTorch (the runtime install); the teacher, the ``torch`` backend
and a step count without an exported graph need PyTorch. Importing this module does not import
torch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
import time
from typing import Any, Callable

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


def refiner_graph_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """What a refiner graph's sidecar holds besides its timesteps so that it runs without the
    checkpoint: the checkpoint's sampler settings and whether it uses masks (``meta`` from
    :func:`sgdfuse_ros.models.refiner.load_refiner`)."""
    from sgdfuse_ros.models.refiner import SamplerSettings

    s = SamplerSettings.from_meta(meta)
    return {'sampler': {'steps': s.steps, 't_start': s.t_start, 'start': s.start},
            'use_masks': bool(meta.get('use_masks', True))}


def refiner_graph_spec(model, meta: dict[str, Any], *, steps: int | None = None,
                       export_size: tuple[int, int] = (480, 640)):
    """``(sampler module, spec)`` of a checkpoint's K-step sampler as one graph, checked on a
    real pair with its saliency masks, its sidecar holding :func:`refiner_graph_meta`."""
    from sgdfuse_ros.models.refiner_export import refiner_sampler, refiner_spec

    sampler = refiner_sampler(model, meta, steps=steps)
    spec = refiner_spec(sampler, size=export_size, masks_of=saliency_masks)
    spec.meta.update(refiner_graph_meta(meta))
    return sampler, spec


def refiner_backend(backend: str, model, meta: dict[str, Any], *, steps: int | None = None,
                    weights: str | os.PathLike | None = None, device: str | None = None,
                    threads: int | None = None, export_size: tuple[int, int] = (480, 640),
                    **options):
    """A refiner checkpoint's K-step sampler (one graph, ``steps`` overriding the checkpoint's
    K) on a named backend, the module in hand; its ONNX is exported on first use (the spec of
    :func:`sgdfuse_ros.models.refiner_export.refiner_spec`, checked on a real pair), keyed by
    the weights file's hash (or the module's state when ``weights`` is None). ``export_size``:
    ``(H, W)`` of the export's trace and parity check (the graph takes any multiple of the
    network's side multiple)."""
    from sgdfuse_ros.core.hashing import sha256_file
    from sgdfuse_ros.models.export_spec import module_digest
    from sgdfuse_ros.runtime.loader import load_network

    sampler, spec = refiner_graph_spec(model, meta, steps=steps, export_size=export_size)
    if weights is not None:
        digest, source = sha256_file(weights), str(weights)
    else:
        digest, source = module_digest(model), 'in-memory refiner'
    return load_network(backend, module=sampler, spec=spec, digest=digest, source=source,
                        device=device, threads=threads, **options)


def refiner_graph(backend: str, weights: str | os.PathLike, *, steps: int | None = None,
                  load: Callable[[], tuple[Any, dict[str, Any]]] | None = None,
                  device: str | None = None, threads: int | None = None,
                  export_size: tuple[int, int] = (480, 640), graph: str = 'float', **options):
    """The K-step sampler of the refiner ``weights`` on a named backend, and the sidecar of
    the graph it runs (None on ``torch``), with no PyTorch needed where a graph exists: the one
    shipped beside the weights, or ``refiner_k<K>_t*_<hash12>.onnx`` in the engines folder
    (``steps`` None: the checkpoint's own K). Otherwise exported from ``load()`` (``(model,
    meta)``, PyTorch) as :func:`refiner_backend` does. ``graph``: ``float`` or ``int8`` (its
    quantization, on onnxruntime; made ahead of time, :mod:`sgdfuse_ros.runtime.quantize`)."""
    from sgdfuse_ros.core.hashing import sha256_file
    from sgdfuse_ros.runtime.loader import load_graph

    def accept(sidecar: dict) -> bool:
        k = len(sidecar.get('timesteps') or ())
        sampler = sidecar.get('sampler') or {}
        return 'use_masks' in sidecar and k == (int(steps) if steps else sampler.get('steps'))

    def exportable():
        return refiner_graph_spec(*load(), steps=steps, export_size=export_size)

    pattern = f'refiner_k{int(steps)}_t*' if steps else 'refiner_k*_t*'
    command = f'sgdfuse export --onnx --models refiner --refiner-weights {weights}' + (
        f' --steps {int(steps)}' if steps else '')
    return load_graph(backend, pattern=pattern, digest=sha256_file(weights), source=str(weights),
                      shipped=weights, accept=accept, exportable=exportable if load else None,
                      export_command=command, device=device, threads=threads, graph=graph,
                      **options)


def run_refiner(be, f1: np.ndarray, masks: np.ndarray, ir: np.ndarray,
                vis: np.ndarray, *, maps: bool = False):
    """Refined image (``C x H x W`` float32, ``[0, 1]``) of padded ``C x H x W`` arrays
    (``masks``: ``2 x H x W``) through a refiner backend; with ``maps`` ``(image, maps)``, the
    last step's blend maps too. Inputs the graph dropped (the sources, for a network without
    them) are not fed."""
    arrays = {'f1': f1, 'masks': masks, 'ir': ir, 'vis': vis}
    feeds = {n: np.ascontiguousarray(arrays[n], np.float32)[None] for n in be.input_names}
    out = be.run(feeds)
    return (out['fused'][0], out['maps'][0]) if maps else out['fused'][0]


def _as_chw(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x[None] if x.ndim == 2 else x


class RefinerRunner:
    """A refiner checkpoint ready to run on numpy arrays.

    ``meta`` comes from :func:`sgdfuse_ros.models.refiner.load_refiner`: its ``sampler`` entry
    gives the default steps, start timestep and start rule, its ``diffusion`` entry the schedule,
    ``use_masks`` says whether the network was trained with masks (the ``no_sam`` ablation was
    not: its masks are zeroed). :meth:`from_weights` makes a runner that loads nothing yet:
    :meth:`use_backend` then runs the weights' ONNX graph and takes those settings from its
    sidecar, so no PyTorch is needed; the module (:attr:`model`) is loaded on first use.
    """

    def __init__(self, model=None, meta: dict[str, Any] | None = None, device: str = 'cpu', *,
                 path: str | os.PathLike | None = None):
        if model is None and path is None:
            raise ValueError('RefinerRunner needs a model (with its meta) or a weights file')
        self._model = model.eval() if model is not None else None
        self._meta = meta
        self.device = str(device)
        self.path: Path | None = Path(path) if path is not None else None
        self.backend = None  # a runtime backend once use_backend() picked one
        self.graph = 'float'  # the kind of graph the backend runs (runtime.quantize)
        self.multiple: int | None = None  # the side multiple of the graph the backend runs
        #: The graph the backend runs also outputs the last step's blend maps (luma).
        self.blend_maps = False
        self.config_facts: dict[str, Any] = {}  # the graph's network config (sidecar)
        self._diffusion = None
        self.steps = self.t_start = None
        self.start, self.use_masks = 'f1', True
        if model is not None:
            self._settings_from_meta()

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = 'cpu') -> 'RefinerRunner':
        """The checkpoint loaded in PyTorch now."""
        runner = cls(path=path, device=device)
        runner._load()
        return runner

    @classmethod
    def from_weights(cls, path: str | os.PathLike, device: str = 'cpu') -> 'RefinerRunner':
        """A runner of the checkpoint ``path`` that loads nothing until it must: see the class
        docstring."""
        if not Path(path).is_file():
            raise FileNotFoundError(f'refiner: no weights file {path}')
        return cls(path=path, device=device)

    def _load(self) -> tuple[Any, dict[str, Any]]:
        if self._model is None:
            from sgdfuse_ros.runtime.extras import require_torch

            require_torch(f'the refiner {self.path} in PyTorch (backend torch, other steps '
                          'than its graph, or exporting the graph)')
            from sgdfuse_ros.models.refiner import load_refiner

            model, self._meta = load_refiner(self.path, map_location=self.device)
            self._model = model.eval()
            if self.steps is None:
                self._settings_from_meta()
        return self._model, self._meta

    def _settings_from_meta(self) -> None:
        from sgdfuse_ros.models.refiner import SamplerSettings

        settings = SamplerSettings.from_meta(self._meta)
        self.steps, self.t_start, self.start = settings.steps, settings.t_start, settings.start
        self.use_masks = bool(self._meta.get('use_masks', True))

    @property
    def model(self):
        """The PyTorch network, loaded on first use (needs PyTorch)."""
        return self._load()[0]

    @property
    def meta(self) -> dict[str, Any]:
        return self._load()[1]

    @property
    def config(self):
        return self.model.config

    @property
    def diffusion(self):
        if self._diffusion is None:
            from sgdfuse_ros.models.diffusion import Diffusion

            self._diffusion = Diffusion.from_description(self.meta.get('diffusion'))
        return self._diffusion

    def use_backend(self, backend: str | None, *, steps: int | None = None,
                    device: str | None = None, threads: int | None = None,
                    graph: str = 'float', **options):
        """Run :meth:`refine` through a runtime backend (``onnxruntime``, ``tensorrt``,
        ``auto``): the K-step sampler as one graph, the one that exists for the weights
        (:func:`refiner_graph`: shipped or in the engines folder; no PyTorch needed) or exported
        on first use and cached; ``graph='int8'`` its INT8 graph (onnxruntime, made ahead of
        time). ``torch`` (or None) keeps the module. Returns the backend."""
        if graph != 'float' and (backend in (None, 'torch') or self.path is None):
            raise ValueError(f"refiner: graph='{graph}' runs the INT8 graph shipped beside a "
                             'weights file on onnxruntime')
        if backend in (None, 'torch'):
            self._load()
            self.backend, self.multiple, self.blend_maps = None, None, False
            return None
        self.graph = graph
        if self.path is None:  # in-memory weights: the module is in hand
            self.backend = refiner_backend(backend, self._model, self._meta, steps=steps,
                                           device=device, threads=threads, **options)
            sidecar = None
        else:
            self.backend, sidecar = refiner_graph(backend, self.path, steps=steps,
                                                  load=self._load, device=device,
                                                  threads=threads, graph=graph, **options)
        if sidecar is None:  # the module runs it (torch, or a fallback to it)
            self._settings_from_meta()
            self.multiple = self.model.multiple
        else:
            from .stage1 import graph_facts

            _, self.multiple = graph_facts(sidecar, 'refiner', ('f1', 'masks'), 'channels')
            sampler = sidecar['sampler']
            self.t_start, self.start = int(sampler['t_start']), sampler.get('start', 'f1')
            self.use_masks = bool(sidecar['use_masks'])
            self.config_facts = dict(sidecar.get('config') or {})
        if sidecar is None and self.backend is not None:
            self.config_facts = {k: getattr(self.model.config, k) for k in
                                 ('channels', 'detail_floor', 'detail_core')}
        self.blend_maps = (self.backend is not None and
                           'maps' in getattr(self.backend, 'output_names', ()) and
                           self.config_facts.get('channels', 1) == 1)
        self.steps = int(steps) if steps else (len(sidecar['timesteps']) if sidecar
                                               else self.steps)
        return self.backend

    def backend_report(self) -> str:
        """One line on the backend that runs the refiner (with a fallback's reason)."""
        if self.backend is not None:
            return self.backend.report() + ('' if self.graph == 'float' else
                                            f'; {self.graph} graph')
        import torch

        from sgdfuse_ros.runtime.torch_backend import torch_summary

        return torch_summary(torch, self.device)

    def refine(self, f1: np.ndarray, ir: np.ndarray, vis: np.ndarray,
               masks: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None, *,
               steps: int | None = None, t_start: int | None = None, maps: bool = False):
        """Refined image, float32 in ``[0, 1]``, of the shape of ``f1`` (``H x W`` or
        ``C x H x W``). ``masks``: (IR, VIS) ``H x W`` pair, a ``2 x H x W`` array or None
        (zeros). Steps or a start other than the backend's graph run the module (PyTorch).
        ``maps`` (a luma pair through a graph with :attr:`blend_maps`): ``(image,
        RefinerBlend)``, the last step's maps too (:mod:`.compose`)."""
        if self.steps is None:
            self._load()
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
        on_graph = self.backend is not None and (k, t0) == (self.steps, self.t_start)
        if maps and not (on_graph and self.blend_maps and flat):
            raise ValueError('refiner: blend maps need a luma pair through a graph that '
                             'outputs them')
        if on_graph:
            x, size = padded_inputs(f1, m, ir, vis, self.multiple)
            c = f1.shape[0]
            out = run_refiner(self.backend, x[:c], x[c:c + 2], x[c + 2:2 * c + 2],
                              x[2 * c + 2:], maps=maps)
            if maps:
                from .compose import RefinerBlend

                out, low = out
                facts = self.config_facts
                blend = RefinerBlend(low, cover=(x.shape[2], x.shape[1]),
                                     detail_floor=float(facts.get('detail_floor', 0.0)),
                                     detail_core=float(facts.get('detail_core', 0.0)))
                return np.ascontiguousarray(out[0, :size[0], :size[1]]), blend
            out = out[:, :size[0], :size[1]]
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
    do not make a sensible single graph), ``graph`` (``float``, the default, or ``int8``: both
    networks' INT8 graphs on ONNX Runtime, shipped beside the float ones for the student's own
    step count; see docs/benchmarks.md). Masks come from the pipeline's mask provider; without
    masks (``masks=None``) the refiner gets empty ones.
    """

    name = 'sgdfuse'
    uses_masks = True
    multiple = 1

    def __init__(self, weights: str | os.PathLike | None = None, *,
                 stage1_weights: str | os.PathLike | None = None, steps: int | None = None,
                 teacher: bool = False, device: str = 'cpu', threads: int | None = None,
                 backend: str | None = 'auto', **options):
        from sgdfuse_ros.runtime.extras import require_torch
        from sgdfuse_ros.runtime.loader import RUNTIME_OPTIONS, auto_fallback

        if steps is not None and int(steps) < 1:
            raise ValueError(f'sgdfuse: steps must be >= 1, got {steps}')
        if weights is None:
            weights = TEACHER_WEIGHTS if teacher else STUDENT_WEIGHTS
            if not Path(weights).is_file():
                raise FileNotFoundError(
                    f'sgdfuse: {"teacher" if teacher else "student"} refiner weights are not '
                    f'installed ({weights}); pass weights=')
        self.teacher = bool(teacher)
        #: Run the refiner (False: stage 1 alone, a degradation step under overload).
        self.refine = True
        if self.teacher and options.get('graph', 'float') != 'float':
            raise ValueError("sgdfuse: the teacher runs in PyTorch; graph='int8' is the "
                             "student's")
        if self.teacher:
            require_torch('the many-step teacher refiner (teacher=True, --teacher)')
        self.stage1 = stage1.Stage1Method(stage1_weights, device=device, threads=threads,
                                          backend=backend, **options)
        self.steps = int(steps) if steps else None
        if self.teacher or backend in (None, 'torch'):
            self.refiner = RefinerRunner.load(weights, device=device)
        else:
            runtime = {k: options[k] for k in RUNTIME_OPTIONS + ('graph',) if k in options}
            if backend == 'auto' and runtime.get('graph', 'float') == 'float':
                runtime.setdefault('fallback', auto_fallback(backend))
            self.refiner = RefinerRunner.from_weights(weights, device=device)
            self.refiner.use_backend(backend, steps=self.steps, device=device, threads=threads,
                                     **runtime)

    @property
    def blend_maps(self) -> bool:
        """Both networks' graphs output their blend maps (``maps=True`` works)."""
        return self.stage1.blend_maps and self.refiner.blend_maps

    def backend_report(self) -> dict[str, str]:
        """``{'stage1': ..., 'refiner': ...}``: the backend that runs each network."""
        return {**self.stage1.backend_report(), 'refiner': self.refiner.backend_report()}

    def __call__(self, ir: np.ndarray, vis: np.ndarray,
                 masks: tuple[np.ndarray, np.ndarray] | None = None, *,
                 maps: bool = False) -> MethodOutput:
        if ir.shape != vis.shape or ir.ndim != 2:
            raise ValueError(f'sgdfuse: need two 2-D luma images of one shape, got {ir.shape} '
                             f'and {vis.shape}')
        if masks is None and self.refiner.use_masks:
            LOG.warning('sgdfuse: no masks given; refining with empty masks')
        t0 = time.perf_counter()
        if not self.refine:  # degraded: stage 1 alone
            out = self.stage1(ir, vis, maps=maps)
            out.timings['refiner'] = 0.0
            return out
        if maps:
            from .compose import BlendMaps

            f1, m1 = self.stage1.run(ir, vis, maps=True)
            t1 = time.perf_counter()
            fused, rb = self.refiner.refine(f1, ir, vis, masks, steps=self.steps, maps=True)
            blend = BlendMaps(work=(ir.shape[1], ir.shape[0]), stage1=m1, refiner=rb)
        else:
            f1 = self.stage1.run(ir, vis)
            t1 = time.perf_counter()
            fused, blend = self.refiner.refine(f1, ir, vis, masks, steps=self.steps), None
        t2 = time.perf_counter()
        return MethodOutput(fused=fused, f1=f1, maps=blend,
                            timings={'stage1': (t1 - t0) * 1e3, 'refiner': (t2 - t1) * 1e3})
