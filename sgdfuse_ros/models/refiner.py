"""Stage 2 of SGDFuse: the mask-guided conditional denoiser (the refiner's U-Net).

One network serves as the many-step diffusion *teacher* and, distilled, as the few-step
*student* (see :mod:`.diffusion` for the schedule and the sampler, ``docs/refiner.md`` for the
design). It predicts the clean fused image ``x0`` from a noisy one::

    x0_hat = net(x_t, cond, t)           x_t, x0_hat: (B, C, H, W) in the diffusion domain [-1, 1]
    cond  = [F1 (C), IR mask (1), VIS mask (1)] (+ [IR (C), VIS (C)] with ``sources``), in [0, 1]

Architecture::

    x_t, F1 (, IR, VIS)  --pixel_unshuffle(s)--+                      s = ``down`` (1: none)
    IR mask, VIS mask    --avg_pool(s)---------+-> stem -> e0 (width w0) at 1/s
    encoder   level i: ``res_blocks`` residual blocks (timestep-conditioned), skip e_i,
              stride-2 3x3 convolution to level i+1 (width w_{i+1} = base * mults[i+1])
    middle    residual block, multi-head spatial self-attention, residual block; attention only
              here, at the lowest resolution
    decoder   level i (lowest-1 .. 1, and 0 with ``top_decoder``): nearest x2 upsampling,
              concatenation with skip e_i, ``res_blocks`` residual blocks -> d_i
    HFAH      every decoder level projected by a 1x1 convolution to ``hfah_dim`` channels and
              upsampled (bilinear) to level 0; with level 0's own features (d_0, or the skip e_0
              without a top decoder) they form the multi-level set {f_l}; a spatial attention
              map ``A = sigmoid(conv3x3([f_l]))`` (one map per level) weights them; the
              weighted features are concatenated and a fusion head of ``head_convs`` 3x3
              convolutions and a last 3x3 convolution to ``n * s * s`` channels follows,
              pixel-shuffled (s) to full resolution, then Tanh.
              Without HFAH (ablation): the plain U-Net end, a 3x3 convolution of level 0's
              features (d_0 or [e_0, up(d_1)]) to the output, then Tanh.
    output    ``tanh``:  x0_hat = Tanh(head)  (the paper's: the image itself)
              ``blend``: (gi, gv, r) = Tanh(head) and, in [0, 1] image values,
                         y = F1 + gi (IR - F1) + gv (VIS - F1) + r / 2,  x0_hat = 2 clip(y) - 1
                         (without ``sources``: y = F1 + r / 2). The low-resolution network then
                         decides per pixel how much of each full-resolution source to take and
                         what to add, and fine detail never has to pass the narrow features.
                         The last convolution starts at zero, so an untrained net returns F1.

Timestep conditioning: a sinusoidal embedding of ``t`` -> Linear -> SiLU -> Linear, added per
channel (after a Linear) inside every residual block.

The ``realtime`` preset runs the whole U-Net at 1/4 resolution (pixel-unshuffle) with widths
16-48, no normalisation and LeakyReLU, attention at 1/32 (300 tokens at 640x480), no top
decoder (the HFAH merges straight into level 0) and the ``blend`` output: well under a GFLOP per
step at 640x480. The ``paper`` preset is the authors' configuration (full resolution, base 64,
multipliers [1, 2, 4, 8], 2 residual blocks, dropout 0.2, GroupNorm, SiLU, Tanh image output)
for GPUs. The module is ONNX-exportable (opset 17) with dynamic height and width; sides must be
multiples of :attr:`RefinerNet.multiple`.

Checkpoints are plain dicts, as for stage 1::

    {'format': 'sgdfuse-refiner', 'version': 1, 'config': {...RefinerConfig...},
     'state_dict': {...}, 'sampler': {'steps': K, 't_start': ...}, 'role': 'teacher'|'student',
     'train': {...}, ...}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import math
import os
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from .checkpoint import (config_from_dict, load_fp32_state_dict, read_tagged_checkpoint,
                         tagged_checkpoint)
from .filters import BlurDown, separable_high_pass, separable_kernels

CHECKPOINT_FORMAT = 'sgdfuse-refiner'
CHECKPOINT_VERSION = 1
OUTPUTS = ('blend', 'tanh')
NORMS = ('none', 'group')
ACTIVATIONS = ('lrelu', 'silu')
MAPS = ('shuffle', 'bilinear')
#: Largest gain of a source's finest detail level added by the ``detail`` maps.
DETAIL_GAIN = 2.0


@dataclass(frozen=True)
class RefinerConfig:
    """Architecture hyper-parameters; stored with the weights."""

    #: Image channels C (1 = luma, 3 = RGB); the condition has C + 2 (+ 2C with ``sources``).
    channels: int = 1
    #: Also condition on the two sources (IR and VIS); needed by the ``blend`` output.
    sources: bool = True
    #: Pixel-unshuffle factor: the U-Net runs at 1/down of the input resolution.
    down: int = 4
    base: int = 16
    #: Width of level i = base * mults[i]; level i runs at 1/(down * 2^i).
    mults: tuple[float, ...] = (1, 1.5, 2, 3)
    res_blocks: int = 1
    #: Decoder blocks at level 0 too (else the HFAH merges straight into level 0).
    top_decoder: bool = False
    #: Self-attention heads at the lowest level (0: no attention).
    heads: int = 2
    dropout: float = 0.0
    norm: str = 'none'
    act: str = 'lrelu'
    #: Hierarchical Feature Aggregation Head (False: plain output convolution; ablation).
    hfah: bool = True
    #: Channels each lower decoder level is projected to in the HFAH.
    hfah_dim: int = 8
    #: 3x3 convolutions of the HFAH fusion head before its output convolution.
    head_convs: int = 1
    output: str = 'blend'
    #: Width of the timestep embedding.
    time_dim: int = 32
    #: 1x1 (cheap, for down > 1) or 3x3 stem.
    stem_kernel: int = 1
    #: Residual blocks of the encoder at level 0 (default ``res_blocks``; -1 = that default).
    top_blocks: int = -1
    #: Kernel of the head's output convolution (1 keeps the full-resolution-sized output cheap).
    out_kernel: int = 1
    #: Shift-steady sampling: a [1 2 1] blur before every stride-2 convolution (blur-pool) and
    #: bilinear instead of nearest up-sampling in the decoder, so that features do not depend
    #: on where the image sits on the down-sampling grid.
    antialias: bool = False
    #: How the head's maps reach full resolution: ``shuffle`` (pixel-shuffle of ``down**2``
    #: sub-pixel channels per map) or ``bilinear`` (one channel per map, smoothly up-sampled:
    #: maps that move with the scene).
    maps: str = 'shuffle'
    #: Blend output with detail gains: two more maps ``(di, dv)`` that add
    #: ``DETAIL_GAIN * (di HP(IR) + dv HP(VIS))``, HP = the source minus its 5x5 binomial blur
    #: (its finest Laplacian level), computed at full resolution.
    detail: bool = False
    #: Fixed detail transfer on top of the learned gains: ``+ detail_floor * sel(HP(IR),
    #: HP(VIS))``, the larger-magnitude finest level of the two sources per pixel (what a
    #: Laplacian pyramid keeps); chosen on training pairs, not learned (see docs/refiner.md).
    detail_floor: float = 0.0
    #: Coring of the detail floor: selected detail below this magnitude (grey levels of 255)
    #: is sensor noise, not structure; it is shrunk away (``s - clamp(s, -c, c)``), so the
    #: floor does not pass noise on (a static scene stays calm).
    detail_core: float = 0.0

    def __post_init__(self):
        if self.channels < 1:
            raise ValueError(f'channels must be >= 1, got {self.channels}')
        if self.down < 1 or self.base < 1 or self.res_blocks < 0:
            raise ValueError('down and base must be >= 1, res_blocks >= 0')
        if len(self.mults) < 2:
            raise ValueError('mults needs at least two levels')
        if self.norm not in NORMS:
            raise ValueError(f'norm must be one of {NORMS}, got {self.norm!r}')
        if self.act not in ACTIVATIONS:
            raise ValueError(f'act must be one of {ACTIVATIONS}, got {self.act!r}')
        if self.output not in OUTPUTS:
            raise ValueError(f'output must be one of {OUTPUTS}, got {self.output!r}')
        if self.heads < 0 or (self.heads and self.widths[-1] % self.heads):
            raise ValueError(f'the lowest width {self.widths[-1]} must be a multiple of heads '
                             f'({self.heads})')
        if self.norm == 'group' and any(w % 8 for w in self.widths):
            raise ValueError('GroupNorm needs widths that are multiples of 8')
        if self.stem_kernel not in (1, 3) or self.out_kernel not in (1, 3):
            raise ValueError('stem_kernel and out_kernel must be 1 or 3')
        if self.maps not in MAPS:
            raise ValueError(f'maps must be one of {MAPS}, got {self.maps!r}')
        if self.detail and not (self.output == 'blend' and self.sources):
            raise ValueError('detail gains need the blend output with sources')
        if self.detail_floor and not self.detail:
            raise ValueError('detail_floor needs detail=True')
        if not 0.0 <= self.detail_floor <= 1.0:
            raise ValueError(f'detail_floor must be in [0, 1], got {self.detail_floor}')
        object.__setattr__(self, 'mults', tuple(self.mults))

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(max(int(round(self.base * m)), 1) for m in self.mults)

    @property
    def levels(self) -> int:
        return len(self.mults)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return self.down * 2 ** (self.levels - 1)

    @property
    def cond_channels(self) -> int:
        return self.channels + 2 + (2 * self.channels if self.sources else 0)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'RefinerConfig':
        return config_from_dict(cls, d, 'refiner')


#: ``realtime``: the shipped CPU preset; ``paper``: the authors' U-Net (GPUs); ``tiny``: tests.
PRESETS: dict[str, RefinerConfig] = {
    'realtime': RefinerConfig(top_blocks=0),
    'paper': RefinerConfig(channels=3, sources=False, down=1, base=64, mults=(1, 2, 4, 8),
                           res_blocks=2, top_decoder=True, heads=4, dropout=0.2, norm='group',
                            act='silu', hfah_dim=64, head_convs=2, output='tanh', time_dim=256,
                           stem_kernel=3, out_kernel=3),
    'tiny': RefinerConfig(down=2, base=8, mults=(1, 2, 2), heads=2, hfah_dim=4, time_dim=16),
    #: ``realtime`` made shift-steady (blur-pool, bilinear maps) with detail gains.
    'steady': RefinerConfig(top_blocks=0, antialias=True, maps='bilinear', detail=True),
}


def preset(name: str, **overrides) -> RefinerConfig:
    if name not in PRESETS:
        raise ValueError(f'unknown refiner preset {name!r}; choose from {", ".join(PRESETS)}')
    return RefinerConfig(**{**asdict(PRESETS[name]), **overrides})


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------

def _act(kind: str) -> nn.Module:
    return nn.SiLU() if kind == 'silu' else nn.LeakyReLU(0.1)


def _norm(kind: str, width: int) -> nn.Module:
    return nn.GroupNorm(min(32, width // 4), width) if kind == 'group' else nn.Identity()


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t w_k), sin(t w_k)]``, ``w_k = max_period^(-k / (dim/2))``;
    ``t``: ``(B,)`` (any numeric type) -> ``(B, dim)``."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(k * (-math.log(max_period) / half))
    args = t.float().reshape(-1, 1) * freqs.reshape(1, -1)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """``skip(x) + conv(drop(act(norm(conv(act(norm(x))) + W t_emb))))``."""

    def __init__(self, cin: int, cout: int, time_dim: int, cfg: RefinerConfig):
        super().__init__()
        self.norm1 = _norm(cfg.norm, cin)
        self.act1 = _act(cfg.act)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(time_dim, cout)
        self.norm2 = _norm(cfg.norm, cout)
        self.act2 = _act(cfg.act)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act1(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(self.drop(self.act2(self.norm2(h))))
        return self.skip(x) + h


class SpatialAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map (pre-norm, residual)."""

    def __init__(self, width: int, heads: int, cfg: RefinerConfig):
        super().__init__()
        self.heads = heads
        self.norm = _norm(cfg.norm, width)
        self.qkv = nn.Conv2d(width, 3 * width, 1)
        self.proj = nn.Conv2d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.heads
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, d, h * w).unbind(1)
        attn = torch.softmax(torch.matmul(q.transpose(-2, -1), k) * (d ** -0.5), dim=-1)
        out = torch.matmul(v, attn.transpose(-2, -1)).reshape(b, c, h, w)
        return x + self.proj(out)

    def extra_macs(self, out: torch.Tensor) -> int:
        # q^T k and v attn^T: 2 * (HW)^2 * C for batch 1.
        c, h, w = out.shape[1:]
        return 2 * (h * w) ** 2 * c


class HFAH(nn.Module):
    """Hierarchical Feature Aggregation Head (see the module docstring)."""

    def __init__(self, top: int, lower: list[int], n_out: int, cfg: RefinerConfig):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, cfg.hfah_dim, 1) for c in lower)
        dims = [top] + [cfg.hfah_dim] * len(lower)
        self.dims = dims
        total = sum(dims)
        self.attn = nn.Conv2d(total, len(dims), 3, padding=1)
        layers: list[nn.Module] = []
        cin = total
        for _ in range(cfg.head_convs):
            layers += [nn.Conv2d(cin, top, 3, padding=1), _act(cfg.act)]
            cin = top
        self.head = nn.Sequential(*layers)
        self.out = nn.Conv2d(cin, n_out, cfg.out_kernel, padding=cfg.out_kernel // 2)

    def forward(self, top: torch.Tensor, lower: list[torch.Tensor]) -> torch.Tensor:
        size = top.shape[-2:]
        feats = [top] + [F.interpolate(p(x), size=size, mode='bilinear', align_corners=False)
                         for p, x in zip(self.proj, lower)]
        cat = torch.cat(feats, 1)
        a = torch.sigmoid(self.attn(cat))
        weighted = torch.cat([f * a[:, i:i + 1] for i, f in enumerate(feats)], 1)
        return self.out(self.head(weighted))


class PlainHead(nn.Module):
    """The ablation without HFAH: one 3x3 convolution of level 0's features."""

    def __init__(self, top: int, lower: list[int], n_out: int, cfg: RefinerConfig,
                 with_up: bool):
        super().__init__()
        self.with_up = with_up
        cin = top + (lower[0] if with_up else 0)
        self.out = nn.Conv2d(cin, n_out, 3, padding=1)

    def forward(self, top: torch.Tensor, lower: list[torch.Tensor]) -> torch.Tensor:
        if self.with_up:
            up = F.interpolate(lower[0], size=top.shape[-2:], mode='nearest')
            top = torch.cat([top, up], 1)
        return self.out(top)


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

class RefinerNet(nn.Module):
    """The conditional denoiser: ``forward(x_t, cond, t) -> x0_hat`` (see the module docstring).

    ``x_t``: ``(B, C, H, W)`` in the diffusion domain; ``cond``: ``(B, cond_channels, H, W)`` in
    ``[0, 1]`` (F1, IR mask, VIS mask, then IR and VIS with ``sources``); ``t``: ``(B,)`` or
    ``(1,)`` integer timesteps. Returns ``x0_hat`` in ``[-1, 1]``.
    """

    def __init__(self, config: RefinerConfig | None = None):
        super().__init__()
        cfg = config or RefinerConfig()
        self.config = cfg
        c, s, ws = cfg.channels, cfg.down, cfg.widths
        n_img = c * (2 + (2 if cfg.sources else 0))  # x_t, F1 (, IR, VIS)
        td = cfg.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(td, td), nn.SiLU(), nn.Linear(td, td))
        self.stem = nn.Conv2d(n_img * s * s + 2, ws[0], cfg.stem_kernel,
                              padding=cfg.stem_kernel // 2)
        self.enc = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, w in enumerate(ws):
            n = cfg.top_blocks if i == 0 and cfg.top_blocks >= 0 else cfg.res_blocks
            self.enc.append(nn.ModuleList(ResBlock(w, w, td, cfg) for _ in range(n)))
            if i + 1 < len(ws):
                self.downs.append(BlurDown(w, ws[i + 1]) if cfg.antialias else
                                  nn.Conv2d(w, ws[i + 1], 3, stride=2, padding=1))
        lo = ws[-1]
        self.mid1 = ResBlock(lo, lo, td, cfg)
        self.attn = SpatialAttention(lo, cfg.heads, cfg) if cfg.heads else None
        self.mid2 = ResBlock(lo, lo, td, cfg)
        self.dec = nn.ModuleList()
        first = 0 if cfg.top_decoder else 1
        self.dec_levels = list(range(len(ws) - 2, first - 1, -1))
        prev = lo
        for i in self.dec_levels:
            blocks = [ResBlock(prev + ws[i], ws[i], td, cfg)]
            blocks += [ResBlock(ws[i], ws[i], td, cfg) for _ in range(cfg.res_blocks - 1)]
            self.dec.append(nn.ModuleList(blocks))
            prev = ws[i]
        # Decoder outputs the head aggregates, finest first (level 0 itself is ``top``).
        lower = [ws[i] for i in sorted(set(self.dec_levels) - {0})] + [lo]
        if cfg.output == 'blend':
            n_maps = (5 if cfg.detail else 3) * c if cfg.sources else c
        else:
            n_maps = c
        self.n_maps = n_maps
        n_out = n_maps * (s * s if cfg.maps == 'shuffle' else 1)
        if cfg.hfah:
            self.head = HFAH(ws[0], lower, n_out, cfg)
        else:
            self.head = PlainHead(ws[0], lower, n_out, cfg, with_up=not cfg.top_decoder)
        if cfg.detail:
            kv, kh = separable_kernels(2 * c)
            self.register_buffer('hp_kv', kv, persistent=False)
            self.register_buffer('hp_kh', kh, persistent=False)
        if cfg.output == 'blend':  # start as the identity on F1
            nn.init.zeros_(self.head.out.weight)
            nn.init.zeros_(self.head.out.bias)

    @property
    def multiple(self) -> int:
        return self.config.multiple

    @property
    def has_maps(self) -> bool:
        """Its output is a blend of the sources by maps (:meth:`forward` with ``maps=True``)."""
        return self.config.output == 'blend' and self.config.sources

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor,
                maps: bool = False):
        """``x0_hat``; with ``maps=True`` (a network that :attr:`has_maps`) also the head's maps
        ``(gi, gv, r[, di, dv])`` after the Tanh, before up-sampling (``shuffle`` maps: at full
        resolution), so that maps predicted at one size can blend sources of another."""
        cfg = self.config
        c, s = cfg.channels, cfg.down
        f1 = cond[:, :c]
        masks = cond[:, c:c + 2]
        images = [x_t, f1] + ([cond[:, c + 2:]] if cfg.sources else [])
        x = torch.cat(images, 1)
        if s > 1:
            x = torch.cat([F.pixel_unshuffle(x, s), F.avg_pool2d(masks, s)], 1)
        else:
            x = torch.cat([x, masks], 1)
        temb = self.time_mlp(timestep_embedding(t, cfg.time_dim)).expand(x.shape[0], -1)
        h = self.stem(x)
        skips = []
        for i, blocks in enumerate(self.enc):
            for blk in blocks:
                h = blk(h, temb)
            skips.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        h = self.mid1(h, temb)
        if self.attn is not None:
            h = self.attn(h)
        h = self.mid2(h, temb)
        outs = {len(skips) - 1: h}
        up_mode = 'bilinear' if cfg.antialias else 'nearest'
        for i, blocks in zip(self.dec_levels, self.dec):
            h = F.interpolate(h, size=skips[i].shape[-2:], mode=up_mode,
                              **({'align_corners': False} if cfg.antialias else {}))
            h = torch.cat([h, skips[i]], 1)
            for blk in blocks:
                h = blk(h, temb)
            outs[i] = h
        top = outs[0] if cfg.top_decoder else skips[0]
        lower = [outs[i] for i in sorted(outs) if i > 0]
        y = torch.tanh(self.head(top, lower))
        if s > 1 and cfg.maps == 'shuffle':
            y = F.pixel_shuffle(y, s)
        low = y
        if s > 1 and cfg.maps != 'shuffle':
            y = F.interpolate(y, size=x_t.shape[-2:], mode='bilinear', align_corners=False)
        if cfg.output == 'tanh':
            return y
        if cfg.sources:
            gi, gv, r = y[:, :c], y[:, c:2 * c], y[:, 2 * c:3 * c]
            ir, vis = cond[:, c + 2:2 * c + 2], cond[:, 2 * c + 2:]
            img = f1 + gi * (ir - f1) + gv * (vis - f1) + 0.5 * r
            if cfg.detail:
                hp = separable_high_pass(torch.cat([ir, vis], 1), self.hp_kv, self.hp_kh)
                hi, hv = hp[:, :c], hp[:, c:]
                img = img + DETAIL_GAIN * (y[:, 3 * c:4 * c] * hi + y[:, 4 * c:] * hv)
                if cfg.detail_floor:
                    sel = torch.where(hi.abs() >= hv.abs(), hi, hv)
                    if cfg.detail_core:
                        core = cfg.detail_core / 255.0
                        sel = sel - torch.clamp(sel, -core, core)
                    img = img + cfg.detail_floor * sel
        else:
            img = f1 + 0.5 * y
        x0 = 2.0 * torch.clamp(img, 0.0, 1.0) - 1.0
        if maps:
            if not self.has_maps:
                raise ValueError('maps=True needs a blend refiner with sources')
            return x0, low
        return x0


def build_condition(f1: torch.Tensor, masks: torch.Tensor, ir: torch.Tensor | None = None,
                    vis: torch.Tensor | None = None, sources: bool = True) -> torch.Tensor:
    """The condition tensor ``[F1, IR mask, VIS mask (, IR, VIS)]`` (all in ``[0, 1]``)."""
    parts = [f1, masks]
    if sources:
        if ir is None or vis is None:
            raise ValueError('this refiner is conditioned on the sources: pass ir and vis')
        parts += [ir.expand_as(f1), vis]
    return torch.cat(parts, 1)


# ----------------------------------------------------------------------------------------------
# Complexity
# ----------------------------------------------------------------------------------------------

def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def gflops_per_step(model: RefinerNet, height: int = 480, width: int = 640) -> float:
    """GFLOPs (2 x multiply-accumulates of convolutions, linear layers and attention) of one
    denoising step on a ``height x width`` frame; element-wise operations are not counted."""
    from .stage1 import count_macs

    cfg = model.config
    p = next(model.parameters())
    x = torch.zeros(1, cfg.channels, height, width, device=p.device)
    cond = torch.zeros(1, cfg.cond_channels, height, width, device=p.device)
    t = torch.zeros(1, dtype=torch.long, device=p.device)
    return 2 * count_macs(model, x, cond, t) / 1e9


def full_resolution_passes(model: RefinerNet) -> int:
    """Rough count of element-wise passes over full-resolution tensors per step (unshuffle of
    the inputs, pooling of the masks, pixel shuffle of the head, the blend), the part of the
    cost that FLOPs do not show."""
    cfg = model.config
    n = 2 + 1 + 1  # concat + unshuffle of the images, pooling of the masks, pixel shuffle
    if cfg.output == 'blend':
        n += 7 if cfg.sources else 3
        n += 8 if cfg.detail else 0  # blur, difference, two gains and their sums
    return n


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------

@dataclass
class SamplerSettings:
    """How a checkpoint's network is sampled: ``steps`` DDIM steps from ``t_start`` (see
    :mod:`.diffusion`). Stored with the weights."""

    steps: int = 2
    t_start: int = 999
    #: Where sampling starts: ``f1`` (the forward process applied to F1, the default) or
    #: ``noise`` (pure Gaussian noise; only sensible with ``t_start`` near T).
    start: str = 'f1'
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> 'SamplerSettings':
        """The settings a checkpoint's ``sampler`` entry gives (defaults where it has none)."""
        s, d = meta.get('sampler') or {}, cls()
        return cls(steps=int(s.get('steps', d.steps)), t_start=int(s.get('t_start', d.t_start)),
                   start=s.get('start', d.start), extra=dict(s.get('extra') or {}))


def make_checkpoint(model: RefinerNet, *, half: bool = False, role: str = 'teacher',
                    sampler: SamplerSettings | None = None, **extra) -> dict[str, Any]:
    """A checkpoint dict: tag, hyper-parameters, state dict (fp16 with ``half``), the role
    (``teacher`` / ``student``), the sampler settings, plus ``extra`` entries."""
    return tagged_checkpoint(model, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, half=half, role=role,
                             sampler=asdict(sampler or SamplerSettings()), **extra)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = 'cpu'
                    ) -> dict[str, Any]:
    """Read a refiner checkpoint file (tensors mapped to ``map_location``) and check its tag."""
    return read_tagged_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, 'refiner',
                                  map_location)


def config_from_checkpoint(ckpt: dict[str, Any]) -> RefinerConfig:
    d = dict(ckpt['config'])
    d['mults'] = tuple(d['mults'])
    return RefinerConfig.from_dict(d)


def load_refiner(path: str | os.PathLike, map_location: str | torch.device = 'cpu'
                 ) -> tuple[RefinerNet, dict[str, Any]]:
    """Build the network from a checkpoint file; returns ``(model in eval mode, meta)``.

    ``meta`` is the checkpoint without its state dict and optimizer state (config, role,
    sampler settings, training config, metrics...). Weights are cast to fp32.
    """
    ckpt = read_checkpoint(path, map_location)
    model = RefinerNet(config_from_checkpoint(ckpt))
    load_fp32_state_dict(model, ckpt['state_dict'])
    model.to(map_location).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ('state_dict', 'optimizer', 'ema')}
    return model, meta
