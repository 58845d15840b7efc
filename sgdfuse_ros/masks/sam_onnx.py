"""SAM-family masks from exported ONNX graphs, without PyTorch (the runtime install).

Where PyTorch and the ``sam`` extra are installed the SAM-family providers of :mod:`.sam` build
the model from its checkpoint (exporting its encoder and box decoder on first use). On a machine
without them (``pip install "sgdfuse_ros[runtime]"``), :func:`exported_provider` runs the same
two graphs exported ahead of time on a machine with PyTorch::

    sgdfuse export --onnx --models masks --mask-provider lite_medsam --out engines/

and copied into the engines folder (``$SGDFUSE_ENGINES``, see
:func:`sgdfuse_ros.runtime.base.default_engines_dir`). The graphs are found by name:
``mask_encoder_<model>_<input size>_<hash12>.onnx`` and
``mask_decoder_<model>_<input size>_b<max_prompts>_<hash12>.onnx`` (:mod:`.sam_export`), where
``hash12`` starts the checkpoint's SHA-256: computed from ``checkpoint`` when the file is on this
machine, the packaged LiteMedSAM file's known SHA-256 for ``lite_medsam``, else any one export of
that model and size (an error when several are there: set the checkpoint).

Per frame it does what :class:`.sam.SamFamilyProvider` does with box prompts (the streaming
default): the saliency regions give the boxes, each frame is encoded once, the boxes go through
the decoder as one batch, instances are filtered by predicted IoU and stability score and merged
by the rule of :mod:`.base`; here in numpy. Point prompts (``grid``) and the dense mode prompt the
decoder outside the exported graph and need PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from pathlib import Path
import time

import cv2
import numpy as np

from sgdfuse_ros.core.hashing import sha256_file
from .base import (MaskConfigError, MaskOptions, MaskResult, check_frames, merge_instances,
                   register_exported_sam, relevance)
from .checkpoints import OFFICIAL, official_by_size
from .saliency import frame_regions
from .sam_processing import prepare_image

#: Input normalisation of each model's encoder (as :func:`.sam_models.load_sam_parts` sets it).
NORMALIZE = {'lite_medsam': 'unit', 'mobile_sam': 'imagenet', 'vit_b': 'imagenet',
             'vit_l': 'imagenet', 'vit_h': 'imagenet'}


@dataclass(frozen=True)
class ExportedGraphs:
    """The encoder and box-decoder exports of one SAM-family model."""

    kind: str
    input_size: int
    boxes: int
    encoder: Path
    decoder: Path
    digest12: str


def _sha12(opts: MaskOptions, provider: str) -> str | None:
    """The start of the checkpoint's SHA-256, when it can be known here."""
    if opts.checkpoint and Path(opts.checkpoint).is_file():
        official = official_by_size(Path(opts.checkpoint).stat().st_size)
        return (official.sha256 if official else sha256_file(opts.checkpoint))[:12]
    if provider == 'lite_medsam' and not opts.checkpoint:
        return next(f.sha256 for f in OFFICIAL if f.provider == 'lite_medsam')[:12]
    return None


def _kinds(provider: str, opts: MaskOptions) -> list[str]:
    """The model names the provider's graphs may carry (``sam``: its ViT size)."""
    if provider != 'sam':
        return [provider]
    if opts.model_type:
        return [opts.model_type]
    if opts.checkpoint and Path(opts.checkpoint).is_file():
        official = official_by_size(Path(opts.checkpoint).stat().st_size)
        if official is not None and official.model_type:
            return [official.model_type]
    return ['vit_b', 'vit_l', 'vit_h']


def find_exported(provider: str, opts: MaskOptions, engines: Path) -> ExportedGraphs | str:
    """The exported graphs of ``provider`` for these options in ``engines``, or a line saying
    what was looked for."""
    from .sam import DEFAULT_INPUT_SIZE  # torch-free at import

    digest = _sha12(opts, provider)
    n = opts.max_prompts
    looked, found = [], []
    for kind in _kinds(provider, opts):
        size = opts.input_size or DEFAULT_INPUT_SIZE[kind]
        tail = digest or '*'
        enc_glob = f'mask_encoder_{kind}_{size}_{tail}.onnx'
        looked.append(enc_glob)
        for enc in sorted(engines.glob(enc_glob)) if engines.is_dir() else []:
            h = enc.stem.rsplit('_', 1)[1]
            dec = engines / f'mask_decoder_{kind}_{size}_b{n}_{h}.onnx'
            if dec.is_file():
                found.append(ExportedGraphs(kind, size, n, enc, dec, h))
            else:
                looked.append(dec.name)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        return (f'several exports fit ({", ".join(g.encoder.name for g in found)}): set the '
                'mask checkpoint to choose')
    return f'looked for {" and ".join(looked)} (with its box decoder) in {engines}'


def exported_provider(provider: str, opts: MaskOptions, reason: str) -> 'ExportedSamProvider':
    """The SAM-family ``provider`` from its exported graphs, for a machine where the PyTorch
    one cannot be built (``reason``). Raises ``ImportError`` naming both ways to get it: the
    ``sam`` extra, or the graphs exported on a machine with PyTorch."""
    from sgdfuse_ros.runtime.base import default_engines_dir

    if opts.dense or (opts.grid and provider != 'lite_medsam'):
        raise ImportError(f'mask provider {provider!r} with point prompts or the dense mode '
                          f'runs in PyTorch: {reason}')
    if opts.max_prompts == 0:
        raise MaskConfigError('max_prompts=0 and no grid: the model would get no prompts')
    engines = Path(opts.engines_dir) if opts.engines_dir else default_engines_dir()
    graphs = find_exported(provider, opts, engines)
    if isinstance(graphs, str):
        ckpt = f' --mask-checkpoint {opts.checkpoint}' if opts.checkpoint else ''
        size = f' --mask-input-size {opts.input_size}' if opts.input_size else ''
        raise ImportError(
            f'mask provider {provider!r} is not available: {reason}; or run it from its ONNX '
            f'graphs exported on a machine with PyTorch (`sgdfuse export --onnx --models masks '
            f'--mask-provider {provider}{ckpt}{size}`, max_prompts {opts.max_prompts}) and copied '
            f'into {engines}: {graphs}')
    return ExportedSamProvider(provider, graphs, opts)


class ExportedSamProvider:
    """A SAM-family model from its exported encoder and box decoder on ONNX Runtime, box
    prompts only (see the module docstring)."""

    worker_priority = 'idle'  # as the PyTorch one: seconds of CPU per refresh

    def __init__(self, name: str, graphs: ExportedGraphs, opts: MaskOptions):
        from sgdfuse_ros.runtime.loader import resolve_backend

        self.name = name
        self.graphs = graphs
        self.opts = opts
        self.normalize = NORMALIZE[graphs.kind]
        backend = resolve_backend(opts.backend)
        if backend == 'torch':
            raise ImportError(f'mask provider {name!r}: backend torch needs PyTorch; exported '
                              'graphs run on onnxruntime or tensorrt')
        self.backend_name = backend
        self._encoder = self._decoder = None

    def describe(self) -> str:
        g = self.graphs
        run = self._encoder.describe() if self._encoder else self.backend_name
        return (f'{self.name} ({g.kind}, input {g.input_size}, {g.boxes} boxes, exported graphs '
                f'{g.encoder.name}, on {run})')

    def backend_report(self) -> dict[str, str]:
        """``mask_encoder`` / ``mask_decoder`` -> the backend that runs each."""
        if self._encoder is None:
            pending = f'{self.backend_name} (not built yet: built by prepare() or the first frame)'
            return {'mask_encoder': pending, 'mask_decoder': pending}
        return {'mask_encoder': self._encoder.report(), 'mask_decoder': self._decoder.report()}

    def prepare(self) -> None:
        """Build both sessions and run each once (first calls allocate), from the worker's
        thread when a worker runs the provider."""
        if self._encoder is not None:
            return
        from sgdfuse_ros.runtime.backends import build_backend, build_with_fallback
        from sgdfuse_ros.runtime.loader import backend_options

        def load(path: Path, which: str):
            opts = backend_options(which, self.opts.device, self.opts.threads)
            if which == 'tensorrt':
                opts.update(multiple=self.graphs.input_size,
                            model_name=path.stem.rsplit('_', 1)[0])
                if self.opts.engines_dir:
                    opts['engines_dir'] = self.opts.engines_dir
            return build_backend(which, onnx_path=path, **opts)

        fallback = None if self.backend_name == 'onnxruntime' else 'onnxruntime'
        enc = build_with_fallback(self.backend_name, lambda w: load(self.graphs.encoder, w),
                                  fallback=fallback)
        dec = build_with_fallback(self.backend_name, lambda w: load(self.graphs.decoder, w),
                                  fallback=fallback)
        size, n = self.graphs.input_size, self.graphs.boxes
        emb = enc.run({'image': np.zeros((1, 3, size, size), np.float32)})['embedding']
        box = np.tile(np.array([[0, 0, size / 2, size / 2]], np.float32), (n, 1))
        dec.run({'embedding': np.asarray(emb, np.float32), 'boxes': box})
        self._encoder, self._decoder = enc, dec

    def _channel(self, frame: np.ndarray, boxes: np.ndarray, saliency: np.ndarray,
                 shape: tuple[int, int]) -> tuple[np.ndarray, int, float, float]:
        """One modality: its mask channel at frame size, instances merged, encoder and decoder
        milliseconds."""
        t0 = time.perf_counter()
        x, scale = prepare_image(frame, self.graphs.input_size, self.normalize)
        emb = np.ascontiguousarray(self._encoder.run({'image': x})['embedding'], np.float32)
        t1 = time.perf_counter()
        k, n = len(boxes), self.graphs.boxes
        if k == 0:
            return np.zeros(shape, np.float32), 0, (t1 - t0) * 1e3, 0.0
        padded = np.empty((n, 4), np.float32)
        padded[:k] = boxes[:n] * scale
        padded[k:] = padded[0]
        out = self._decoder.run({'embedding': emb, 'boxes': padded})
        logits = np.asarray(out['logits'], np.float32)[:k, 0]
        iou = np.asarray(out['iou'], np.float32)[:k, 0]
        h, w = shape
        f = logits.shape[-1] / self.graphs.input_size  # low-res pixels per input pixel
        lh = max(1, min(logits.shape[-2], math.ceil(h * scale * f)))
        lw = max(1, min(logits.shape[-1], math.ceil(w * scale * f)))
        logits = logits[:, :lh, :lw]
        off = self.opts.stability_offset
        inter = (logits > off).reshape(k, -1).sum(1)
        union = (logits > -off).reshape(k, -1).sum(1)
        stability = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        keep = (iou >= self.opts.iou_threshold) & (stability >= self.opts.stability_threshold)
        keep &= (logits > 0).reshape(k, -1).any(1)
        logits, iou = logits[keep], iou[keep]
        if len(logits) == 0:
            return np.zeros(shape, np.float32), 0, (t1 - t0) * 1e3, \
                (time.perf_counter() - t1) * 1e3
        probs = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        quality = np.clip(iou, 0.0, 1.0)
        sal = cv2.resize(saliency, (lw, lh), interpolation=cv2.INTER_AREA)
        merged = merge_instances(probs, quality * relevance(probs, sal))
        mask = np.clip(cv2.resize(merged, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
        return mask.astype(np.float32), len(probs), (t1 - t0) * 1e3, \
            (time.perf_counter() - t1) * 1e3

    def __call__(self, ir: np.ndarray, visible: np.ndarray) -> MaskResult:
        t0 = time.perf_counter()
        ir, visible = check_frames(ir, visible)
        self.prepare()
        regions = frame_regions(ir, visible, self.opts.max_regions)
        timings = {'prompts': (time.perf_counter() - t0) * 1e3}
        masks, counts, boxes = {}, {}, {}
        for key, frame, reg in (('ir', ir, regions[0]), ('vis', visible, regions[1])):
            boxes[key] = reg.boxes[:self.opts.max_prompts]
            masks[key], counts[key], enc_ms, dec_ms = self._channel(
                frame, boxes[key].astype(np.float32), reg.saliency, ir.shape)
            timings[f'{key}_encoder'], timings[f'{key}_decoder'] = enc_ms, dec_ms
        timings['encoder'] = timings['ir_encoder'] + timings['vis_encoder']
        timings['decoder'] = timings['ir_decoder'] + timings['vis_decoder']
        timings['total'] = (time.perf_counter() - t0) * 1e3
        return MaskResult(masks['ir'], masks['vis'], timings, provider=self.name, boxes=boxes,
                          instances=counts)


register_exported_sam(exported_provider)
