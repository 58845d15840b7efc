"""ONNX export of a network per its :class:`~sgdfuse_ros.models.export_spec.ExportSpec`, checked
against PyTorch; the exports found again by their weights' hash.

Every export:

* runs the legacy (TorchScript) exporter at opset 17 with dynamic height and width where the model
  allows (the torch.export-based exporter needs onnxscript, which we do not depend on);
* applies the spec's graph passes (:mod:`.onnx_passes`, e.g. ``pixel_unshuffle`` as one
  ``SpaceToDepth``);
* is checked against PyTorch on a real sample pair (or the example inputs when the spec has no
  real ones): the max abs difference must be at most the spec's ``tolerance`` (1e-3 on
  ``[0, 1]`` images);
* is checked for TensorRT compatibility (:mod:`.onnx_check`);
* writes ``<name>_<hash12>.onnx`` + ``<name>_<hash12>.json`` (a sidecar naming the source
  weights, their SHA-256, the export settings, the parity result and what a runtime needs to
  run the graph: input and output names, the side multiple, the network's config and, for the
  refiner, its sampler settings). ``hash12`` starts the SHA-256 of the weights, so a backend
  finds the export of the weights it was given (:func:`ensure_onnx`, which exports on first
  use).

The shipped weights come with their graphs beside them (``<weights>.onnx`` +
``<weights>.onnx.json``, :func:`shipped_graph_paths`; written by ``sgdfuse export --onnx
--shipped``), so the runtime install runs them without PyTorch. Everything that reads graphs and
sidecars (:func:`read_onnx_sidecar`, :func:`graph_problem`, :func:`find_graph`) imports neither
torch nor onnx; exporting needs both.

The specs live with their networks (:mod:`sgdfuse_ros.models`, :mod:`sgdfuse_ros.masks`); what
``sgdfuse export`` exports is listed in :mod:`sgdfuse_ros.tools.export`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import json
import os
from pathlib import Path
import tempfile
import time
from typing import Callable, Sequence
import warnings

import numpy as np

from sgdfuse_ros.core.files import atomic_write_bytes
from sgdfuse_ros.core.hashing import sha256_file
from sgdfuse_ros.models.export_spec import ExportSpec
from . import onnx_check
from .base import default_engines_dir
from .onnx_passes import GRAPH_PASSES, probe_shapes

SIDECAR_FORMAT = 'sgdfuse-onnx'
#: Bumped when the export itself changes (graph passes, settings, what the sidecar must hold):
#: older exports are redone where PyTorch is installed. 3: the sidecar holds what runs the graph
#: without PyTorch (the refiner's sampler settings and ``use_masks``).
EXPORTER_VERSION = 3


class ExportError(RuntimeError):
    """An export that failed or did not match PyTorch."""


@dataclass
class ExportResult:
    name: str
    path: Path
    sidecar: Path
    max_abs_diff: float
    tensorrt_problems: list[str]
    seconds: float
    reused: bool = False
    passes: dict[str, int] = field(default_factory=dict)
    #: What the parity check ran on: ``a real pair``, ``example inputs`` or None (no check).
    checked_on: str | None = 'a real pair'

    def summary(self) -> str:
        trt = 'TensorRT-compatible' if not self.tensorrt_problems else (
            f'{len(self.tensorrt_problems)} TensorRT problems')
        verb = 'reused' if self.reused else f'exported in {self.seconds:.1f} s'
        check = (f'max |onnx - torch| = {self.max_abs_diff:.2e} on {self.checked_on}'
                 if self.checked_on else 'not checked against PyTorch')
        return f'{self.name}: {self.path} ({verb}); {check}; {trt}'


# ----------------------------------------------------------------------------------------------
# Hashes and file names
# ----------------------------------------------------------------------------------------------

def onnx_paths(out_dir: str | os.PathLike, name: str, digest: str, *,
               stem: str | None = None) -> tuple[Path, Path]:
    """``(model.onnx, sidecar.json)`` for a network name and its weights' digest, or for a
    fixed file ``stem`` (the shipped graphs: ``<stem>.onnx`` + ``<stem>.onnx.json``)."""
    if stem is not None:
        return Path(out_dir) / f'{stem}.onnx', Path(out_dir) / f'{stem}.onnx.json'
    base = Path(out_dir) / f'{name}_{digest[:12]}'
    return base.with_suffix('.onnx'), base.with_suffix('.json')


def shipped_graph_paths(weights: str | os.PathLike, variant: str | None = None
                        ) -> tuple[Path, Path]:
    """``(graph.onnx, sidecar.json)`` of the graph shipped beside a weights file:
    ``<dir>/<stem>.onnx`` and ``<dir>/<stem>.onnx.json``, or ``<stem>_<variant>.onnx`` for
    another graph of the same weights (e.g. ``k2``: the refiner's sampler at 2 steps)."""
    weights = Path(weights)
    stem = weights.stem + (f'_{variant}' if variant else '')
    return onnx_paths(weights.parent, '', '', stem=stem)


def shipped_graphs(weights: str | os.PathLike, kind: str = 'float'
                   ) -> list[tuple[Path, Path]]:
    """Every graph of ``kind`` shipped beside a weights file (see :func:`shipped_graph_paths`),
    the weights' own first: the float exports, or their INT8 quantizations (``int8``:
    ``<stem>[_<variant>]_int8.onnx``, :mod:`.quantize`)."""
    weights = Path(weights)
    suffix = '_int8'
    own = shipped_graph_paths(weights, 'int8' if kind == 'int8' else None)
    variants = [p for p in sorted(weights.parent.glob(f'{weights.stem}_*.onnx'))
                if p != own[0] and p.stem.endswith(suffix) == (kind == 'int8')]
    return [own] + [(p, p.with_name(p.name + '.json')) for p in variants]


def read_onnx_sidecar(path: str | os.PathLike) -> dict:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get('format') != SIDECAR_FORMAT:
        raise ValueError(f'{path}: not an ONNX export sidecar')
    return data


def graph_problem(onnx_path: Path, sidecar: Path, digest: str, *, current: bool = True
                  ) -> str | None:
    """None when ``onnx_path`` is a complete export of the weights ``digest``, else why not.
    ``current``: also refuse an export made by another version of the exporter (where it can be
    redone); without it, any complete export of these weights whose sidecar holds what a
    runtime needs (exporter version 3 on) will do."""
    if not onnx_path.is_file():
        return 'not exported yet'
    if not sidecar.is_file():
        return 'no sidecar'
    try:
        data = read_onnx_sidecar(sidecar)
    except (OSError, ValueError) as exc:
        return f'unreadable sidecar: {exc}'
    if data.get('weights_sha256') != digest:
        return 'exported from other weights'
    version = data.get('exporter_version')
    if version != EXPORTER_VERSION and (current or not isinstance(version, int) or version < 3):
        age = 'a newer' if isinstance(version, int) and version > EXPORTER_VERSION else 'an older'
        return f'exported by {age} version of the exporter ({version}, now {EXPORTER_VERSION})'
    if data.get('onnx_sha256') != sha256_file(onnx_path):
        return 'the ONNX file changed since export'
    return None


def onnx_is_current(onnx_path: Path, sidecar: Path, digest: str) -> str | None:
    """None when ``onnx_path`` is a complete export of the weights ``digest`` by this version
    of the exporter, else why not."""
    return graph_problem(onnx_path, sidecar, digest, current=True)


def find_graph(digest: str, *, pattern: str, dirs: Sequence[str | os.PathLike],
               shipped: str | os.PathLike | None = None,
               accept: Callable[[dict], bool] | None = None, current: bool = True,
               kind: str = 'float') -> tuple[Path | None, dict | None, str]:
    """The ONNX graph of the weights ``digest`` among what exists: the graphs shipped beside
    the weights file ``shipped`` (see :func:`shipped_graphs`) first, then, in each folder of
    ``dirs``, ``<pattern>_<hash12>.onnx`` (``pattern``: a glob of the graph's name, e.g.
    ``refiner_k*_t*``), each with a sidecar that names these weights and that ``accept(sidecar)``
    takes. ``current``: see :func:`graph_problem`. ``kind``: ``float`` (the export) or
    ``int8`` (its quantization, ``<pattern>_int8_<hash12>.onnx``, :mod:`.quantize`). Returns
    ``(path, sidecar, '')``, or ``(None, None, what was looked at)``. Imports neither torch
    nor onnx."""
    candidates = []
    if shipped is not None:
        candidates.extend(p for p in shipped_graphs(shipped, kind) if p[0].is_file())
    if kind == 'int8':
        pattern += '_int8'
    for folder in dirs:
        folder = Path(folder)
        if folder.is_dir():
            found = sorted(folder.glob(f'{pattern}_{digest[:12]}.onnx'))
            candidates.extend((p, p.with_suffix('.json')) for p in found)
    seen = []
    for path, sidecar in candidates:
        problem = graph_problem(path, sidecar, digest, current=current)
        if problem is None:
            data = read_onnx_sidecar(sidecar)
            if data.get('graph', 'float') != kind:
                problem = f'a {data.get("graph", "float")} graph'
            elif accept is None or accept(data):
                return path, data, ''
            else:
                problem = 'exported with other settings'
        if path.is_file():
            seen.append(f'{path} ({problem})')
    where = ', '.join(str(Path(d)) for d in dirs)
    looked = f'{pattern}_{digest[:12]}.onnx in {where}'
    if shipped is not None:
        looked = f'{Path(shipped).with_suffix("")}*.onnx or {looked}'
    return None, None, looked + (f'; found {"; ".join(seen)}' if seen else '')


# ----------------------------------------------------------------------------------------------
# A real pair for the parity checks
# ----------------------------------------------------------------------------------------------

def sample_pair(height: int, width: int, index: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """A bundled sample pair as float32 luma ``(ir, vis)`` resized to ``height x width``."""
    from sgdfuse_ros.core.paths import samples_dir
    from sgdfuse_ros.core import imaging

    pairs = imaging.dataset_pairs(samples_dir())
    if not pairs:
        raise ExportError(f'no sample pairs in {samples_dir()}')
    pair = pairs[index % len(pairs)]
    ir = imaging.ThermalGain(smoothing=0.0)(imaging.read_image(pair.ir, gray=True))
    vis = imaging.visible_luma(imaging.read_image(pair.vis))
    return (imaging.resize(ir, (width, height)), imaging.resize(vis, (width, height)),
            pair.name)


# ----------------------------------------------------------------------------------------------
# Export and check
# ----------------------------------------------------------------------------------------------

def _torch_export(module, spec: ExportSpec, path: Path, inputs: tuple) -> None:
    import torch

    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated upstream but is the one that needs no
        # onnxscript; its tracer warnings concern shape arithmetic that stays dynamic.
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', message='Constant folding', category=UserWarning)
        with torch.no_grad():
            torch.onnx.export(module, inputs, str(path), input_names=list(spec.input_names),
                              output_names=list(spec.output_names), opset_version=spec.opset,
                              dynamic_axes=spec.dynamic_axes, do_constant_folding=True,
                              dynamo=False)


def parity(module, onnx_path: Path, inputs: tuple, input_names: Sequence[str]) -> float:
    """Max abs difference between PyTorch and ONNX Runtime (all outputs) on ``inputs``."""
    import onnxruntime as ort
    import torch

    with torch.inference_mode():
        ref = module(*inputs)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=['CPUExecutionProvider'])
    feeds = {n: t.detach().cpu().numpy() for n, t in zip(input_names, inputs)
             if n in {i.name for i in sess.get_inputs()}}
    outs = sess.run(None, feeds)
    if len(outs) != len(refs):
        raise ExportError(f'{onnx_path}: {len(outs)} outputs, PyTorch gives {len(refs)}')
    return max(float(np.abs(o - r.float().cpu().numpy()).max()) for o, r in zip(outs, refs))


def export_module(module, spec: ExportSpec, out_dir: str | os.PathLike, *, digest: str,
                  source: str, check: bool = True, log: Callable[[str], None] | None = None,
                  stem: str | None = None) -> ExportResult:
    """Export ``module`` per ``spec`` into ``out_dir``; check it; write the sidecar.

    ``digest`` is the SHA-256 of the weights (:func:`sha256_file` of the checkpoint, or
    :func:`module_digest`), ``source`` says where they came from. ``stem``: a fixed file name
    (``<stem>.onnx`` + ``<stem>.onnx.json``, the shipped graphs) instead of
    ``<name>_<hash12>``. Raises :class:`ExportError` when the ONNX output differs from PyTorch
    by more than ``spec.tolerance``.
    """
    import onnx
    import torch

    t0 = time.perf_counter()
    module = module.eval()
    onnx_path, sidecar = onnx_paths(out_dir, spec.name, digest, stem=stem)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    h, w = spec.size
    m = max(spec.multiple, 1)
    h, w = max(h // m * m, m), max(w // m * m, m)
    with tempfile.TemporaryDirectory(dir=onnx_path.parent, prefix='.export-') as tmp:
        raw = Path(tmp) / 'raw.onnx'
        with torch.random.fork_rng():
            torch.manual_seed(0)
            example = spec.make_inputs(h, w)
        _torch_export(module, spec, raw, example)
        model = onnx.load(str(raw))
        applied = {}
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(spec.input_names, example)}
        for name in spec.passes:
            applied[name] = GRAPH_PASSES[name](
                model, probe=lambda names: probe_shapes(model, feeds, names))
        model.producer_name = 'sgdfuse_ros'
        model.doc_string = f'{spec.name} from {source} (sha256 {digest})'
        data = model.SerializeToString()
        staged = Path(tmp) / 'model.onnx'
        staged.write_bytes(data)
        diff, pair_name = 0.0, None
        if check:
            if spec.real_inputs is not None:
                ir, vis, pair_name = sample_pair(h, w)
                with torch.random.fork_rng():
                    torch.manual_seed(0)
                    check_inputs = spec.real_inputs(ir, vis, h, w)
            else:
                check_inputs = example
            diff = parity(module, staged, check_inputs, spec.input_names)
            if not np.isfinite(diff) or diff > spec.tolerance:
                raise ExportError(f'{spec.name}: ONNX output differs from PyTorch by {diff:.3g} '
                                  f'(> {spec.tolerance:g}) on pair {pair_name}')
        problems = onnx_check.tensorrt_problems(model)
        atomic_write_bytes(onnx_path, data)
    meta = {
        'format': SIDECAR_FORMAT, 'version': 1, 'exporter_version': EXPORTER_VERSION,
        'model': spec.name,
        'source_weights': source, 'weights_sha256': digest,
        'onnx_sha256': hashlib.sha256(data).hexdigest(), 'opset': spec.opset,
        'inputs': list(spec.input_names), 'outputs': list(spec.output_names),
        'dynamic_axes': {k: {str(a): v for a, v in d.items()}
                         for k, d in (spec.dynamic_axes or {}).items()},
        'multiple': spec.multiple, 'export_size': [h, w], 'graph_passes': applied,
        'parity': {'pair': pair_name, 'max_abs_diff': diff, 'tolerance': spec.tolerance,
                   'checked': bool(check)},
        'tensorrt_problems': problems, 'torch_version': torch.__version__,
        'onnx_version': onnx.__version__, 'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
    }
    meta.update(spec.meta)
    atomic_write_bytes(sidecar, (json.dumps(meta, indent=2) + '\n').encode())
    checked_on = None if not check else 'a real pair' if pair_name else 'example inputs'
    res = ExportResult(spec.name, onnx_path, sidecar, diff, problems,
                       time.perf_counter() - t0, passes=applied, checked_on=checked_on)
    if log:
        log(res.summary())
    return res


def ensure_onnx(module_or_factory, spec: ExportSpec, *, digest: str, source: str,
                out_dir: str | os.PathLike | None = None,
                log: Callable[[str], None] | None = None) -> Path:
    """The ONNX file of these weights: reused when a current export exists, else exported now
    (first use). ``module_or_factory``: the module, or a callable returning it (called only
    when an export is needed)."""
    out_dir = Path(out_dir) if out_dir else default_engines_dir()
    path, sidecar = onnx_paths(out_dir, spec.name, digest)
    reason = onnx_is_current(path, sidecar, digest)
    if reason is None:
        return path
    module = module_or_factory() if callable(module_or_factory) and not hasattr(
        module_or_factory, 'state_dict') else module_or_factory
    if log:
        log(f'exporting {spec.name} to {path} ({reason})')
    return export_module(module, spec, out_dir, digest=digest, source=source, log=log).path


# ----------------------------------------------------------------------------------------------
# A K-step sampler: one graph, or one step called K times
# ----------------------------------------------------------------------------------------------

def unrolled_sampler(step, timesteps: Sequence[int]):
    """K denoising steps with fixed timesteps as one module (one ONNX graph):
    ``forward(x, *cond) = step(... step(step(x, *cond, t0), *cond, t1) ..., t_{K-1})``.

    ``step(x, *cond, t)`` is one step of the student (``t``: an ``int64`` tensor of shape
    ``(1,)``); the loop is unrolled when traced, the timesteps become constants."""
    import torch
    from torch import nn

    ts = [int(t) for t in timesteps]
    if not ts:
        raise ValueError('need at least one timestep')

    class Unrolled(nn.Module):
        def __init__(self):
            super().__init__()
            self.step = step
            self.timesteps = ts

        def forward(self, x, *cond):
            for t in self.timesteps:
                x = self.step(x, *cond, torch.full((1,), t, dtype=torch.int64))
            return x

    return Unrolled().eval()


class StepLoop:
    """The other way to run K steps: a one-step backend called K times from Python, the
    timestep fed as an input. ``run`` has the interface of a :class:`.backends.Backend` with the
    inputs of the unrolled graph."""

    def __init__(self, step_backend, timesteps: Sequence[int], *, x_name: str = 'x',
                 t_name: str = 't', out_name: str | None = None):
        self.backend = step_backend
        self.timesteps = [int(t) for t in timesteps]
        self.x_name, self.t_name = x_name, t_name
        self.out_name = out_name or step_backend.output_names[0]
        self.input_names = [n for n in step_backend.input_names if n != t_name]
        self.output_names = [self.out_name]

    def run(self, inputs):
        feeds = dict(inputs)
        for t in self.timesteps:
            feeds[self.t_name] = np.array([t], np.int64)
            feeds[self.x_name] = self.backend.run(feeds)[self.out_name]
        return {self.out_name: feeds[self.x_name]}
