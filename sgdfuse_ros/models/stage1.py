"""Stage 1 of SGDFuse: the initial-fusion network (infrared + visible -> F1).

Architecture (see ``docs/stage1.md``)::

    ir, vis  (B, C, H, W), float in [0, 1]
      |  pixel_unshuffle(s)            -> (B, C*s*s, H/s, W/s)            s = ``down``
      |  3x3 conv stems (one per source) -> width ``dim_hi`` at 1/s         (skip features)
      |  stride-2 3x3 conv              -> width ``dim`` at 1/(2s)
      |     IR : MSFEM  (1x1 | 3x3 | 5x5 | 7x7 branches; the 3/5/7 branches depthwise +
      |                   pointwise enhanced; fused with the 1x1 branch; channel attention;
      |                   residual)
      |     VIS: transformer block(s): channel-wise ("transposed") multi-head self-attention
      |          + gated depthwise feed-forward; the attention map is (C/h x C/h), so the cost
      |          is linear in the pixel count
      |     cross-attention IR <-> VIS, channel-wise as well, then a 1x1 merge
      |  decoder: pixel_shuffle(2) to 1/s, concat with both stems, convs,
      |           head -> 4*C_out*s*s channels -> pixel_shuffle(s) -> (a, b, r, t) full res.
      v
    B  = 2 sigmoid(a) * ir + 2 sigmoid(b) * vis + r           (blend)
    F1 = clamp(B + sigmoid(t) * (max(ir, vis) - B), 0, 1)      (per-pixel selection)

The two gains are independent (each in (0, 2)), so the blend can keep the full detail of both
sources (``a = b = 1`` with ``r`` removing one base: the additive fusion that the SCD metric
rewards); ``t`` moves each pixel towards the per-pixel maximum of the sources (pure selection,
which MI and VIF reward). The fine detail itself comes straight from the full-resolution inputs
and never has to pass the narrow low-resolution features.

All heavy layers run at 1/s and 1/(2s) of the input resolution; at full resolution there are only
the (un)shuffles and the blend, so the cost per 640x480 frame stays well under a GFLOP for the
``realtime`` preset. The model is ONNX-exportable (opset 17) with dynamic height and width; the
input sides must be multiples of :attr:`Stage1Net.multiple` (callers pad, see
:func:`sgdfuse_ros.core.imaging.pad_to_multiple`).

Checkpoints are plain dicts::

    {'format': 'sgdfuse-stage1', 'version': 1, 'config': {...Stage1Config...},
     'state_dict': {...}, 'train': {...training config...}, 'step': int, 'optimizer': {...}}

and :func:`load_stage1` rebuilds the model from them on any device (``map_location``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import math
import os
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from .checkpoint import (config_from_dict, load_fp32_state_dict, read_tagged_checkpoint,
                         tagged_checkpoint)
from .export_spec import ExportSpec

CHECKPOINT_FORMAT = 'sgdfuse-stage1'
CHECKPOINT_VERSION = 1
#: The blend maps of :meth:`Stage1Net.forward_maps`, in order.
MAP_NAMES = ('gain_ir', 'gain_vis', 'offset', 'select')


@dataclass(frozen=True)
class Stage1Config:
    """Architecture hyper-parameters; stored with the weights."""

    #: Channels of each input (1 = luma, 3 = RGB; the infrared input is repeated to match).
    in_channels: int = 1
    #: Channels of F1 (1 or ``in_channels``).
    out_channels: int = 1
    #: Pixel-unshuffle factor of the stems; the core runs at 1/(2*down).
    down: int = 4
    #: Width of the stems and the decoder at 1/down.
    dim_hi: int = 16
    #: Width of the core (MSFEM, transformer, cross-attention) at 1/(2*down).
    dim: int = 32
    #: Attention heads (``dim`` must be a multiple).
    heads: int = 2
    #: Transformer blocks on the visible stream.
    blocks: int = 1
    #: Cross-attention blocks between the streams.
    cross_blocks: int = 1
    #: Output width of each MSFEM branch.
    msfem_branch: int = 8
    #: Hidden width of the feed-forward networks, as a multiple of ``dim``.
    ffn_expansion: float = 2.0
    #: 3x3 convolutions of the decoder at 1/down.
    dec_convs: int = 1

    def __post_init__(self):
        if self.in_channels < 1:
            raise ValueError(f'in_channels must be >= 1, got {self.in_channels}')
        if self.out_channels not in (1, self.in_channels):
            raise ValueError(f'out_channels must be 1 or in_channels ({self.in_channels}), '
                             f'got {self.out_channels}')
        if self.down < 1 or self.dim < 1 or self.dim_hi < 1:
            raise ValueError('down, dim and dim_hi must be positive')
        if self.heads < 1 or self.dim % self.heads:
            raise ValueError(f'dim ({self.dim}) must be a multiple of heads ({self.heads})')
        if self.blocks < 0 or self.cross_blocks < 0 or self.dec_convs < 0:
            raise ValueError('blocks, cross_blocks and dec_convs must be >= 0')

    @property
    def multiple(self) -> int:
        return 2 * self.down

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'Stage1Config':
        return config_from_dict(cls, d, 'stage-1')


#: Named presets: ``realtime`` fits the 2-core CPU budget at 640x480, ``large`` is for GPUs.
PRESETS: dict[str, Stage1Config] = {
    'realtime': Stage1Config(),
    'large': Stage1Config(down=2, dim_hi=32, dim=64, heads=4, blocks=2, cross_blocks=2,
                          msfem_branch=16, ffn_expansion=2.66, dec_convs=2),
}


def preset(name: str, **overrides) -> Stage1Config:
    if name not in PRESETS:
        raise ValueError(f'unknown stage-1 preset {name!r}; choose from {", ".join(PRESETS)}')
    return Stage1Config(**{**asdict(PRESETS[name]), **overrides})


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------

def _act() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of a ``(B, C, H, W)`` tensor."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        xc = x - mu
        var = (xc * xc).mean(1, keepdim=True)
        return xc * torch.rsqrt(var + self.eps) * self.weight + self.bias


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel re-weighting."""

    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        hidden = max(dim // reduction, 4)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class MSFEM(nn.Module):
    """Multi-Scale Feature Enhancement Module (infrared stream).

    ``y = x + CA(conv1x1([b1(x), pw(dw([b3(x), b5(x), b7(x)]))]))`` where ``bk`` is a ``k x k``
    convolution, ``dw``/``pw`` a depthwise 3x3 then pointwise convolution and ``CA`` channel
    attention.
    """

    def __init__(self, dim: int, branch: int):
        super().__init__()
        self.b1 = nn.Conv2d(dim, branch, 1)
        self.b3 = nn.Conv2d(dim, branch, 3, padding=1)
        self.b5 = nn.Conv2d(dim, branch, 5, padding=2)
        self.b7 = nn.Conv2d(dim, branch, 7, padding=3)
        self.dw = nn.Conv2d(3 * branch, 3 * branch, 3, padding=1, groups=3 * branch)
        self.pw = nn.Conv2d(3 * branch, dim, 1)
        self.fuse = nn.Conv2d(branch + dim, dim, 1)
        self.ca = ChannelAttention(dim)
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multi = torch.cat([self.b3(x), self.b5(x), self.b7(x)], 1)
        multi = self.act(self.pw(self.act(self.dw(self.act(multi)))))
        y = self.fuse(torch.cat([self.act(self.b1(x)), multi], 1))
        return x + self.ca(y)


def _channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                       temperature: torch.Tensor) -> torch.Tensor:
    """Transposed attention: softmax over a ``(C/h x C/h)`` map per head, applied to ``v``.

    ``q, k, v``: ``(B, C, H, W)``. Cost ``O(H W C^2 / h)``: linear in the pixel count.
    """
    b, c, h, w = v.shape
    q = F.normalize(q.reshape(b, heads, c // heads, -1), dim=-1)
    k = F.normalize(k.reshape(b, heads, c // heads, -1), dim=-1)
    v = v.reshape(b, heads, c // heads, -1)
    attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * temperature, dim=-1)
    return torch.matmul(attn, v).reshape(b, c, h, w)


def _attention_macs(x: torch.Tensor) -> int:
    # q k^T and attn v: 2 * (C/h)^2 * HW per head; B=1.
    c, h, w = x.shape[1:]
    return 2 * c * c * h * w


class SelfAttention(nn.Module):
    """Multi-head channel-wise self-attention (q, k, v from 1x1 + depthwise 3x3 convolutions)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.qkv_dw = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, 1)
        return self.proj(_channel_attention(q, k, v, self.heads, self.temperature))

    def extra_macs(self, x: torch.Tensor) -> int:
        return _attention_macs(x) // self.heads


class CrossAttention(nn.Module):
    """Channel-wise cross-attention: queries from one stream, keys and values from the other."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.q = nn.Conv2d(dim, dim, 1)
        self.q_dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.kv = nn.Conv2d(dim, 2 * dim, 1)
        self.kv_dw = nn.Conv2d(2 * dim, 2 * dim, 3, padding=1, groups=2 * dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.q_dw(self.q(x))
        k, v = self.kv_dw(self.kv(context)).chunk(2, 1)
        return self.proj(_channel_attention(q, k, v, self.heads, self.temperature))

    def extra_macs(self, x: torch.Tensor) -> int:
        return _attention_macs(x) // self.heads


class FeedForward(nn.Module):
    """Gated depthwise feed-forward: ``W2 (gelu(dw(W1a x)) * dw(W1b x))``."""

    def __init__(self, dim: int, expansion: float):
        super().__init__()
        hidden = max(int(dim * expansion), 1)
        self.w1 = nn.Conv2d(dim, 2 * hidden, 1)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.w2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.dw(self.w1(x)).chunk(2, 1)
        return self.w2(F.gelu(a) * b)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + SA(LN(x))`` then ``x + FFN(LN(x))``."""

    def __init__(self, dim: int, heads: int, expansion: float):
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = FeedForward(dim, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class CrossBlock(nn.Module):
    """Both directions of cross-attention (IR queries VIS and VIS queries IR), then FFNs."""

    def __init__(self, dim: int, heads: int, expansion: float):
        super().__init__()
        self.norm_i = LayerNorm2d(dim)
        self.norm_v = LayerNorm2d(dim)
        self.i_from_v = CrossAttention(dim, heads)
        self.v_from_i = CrossAttention(dim, heads)
        self.norm_fi = LayerNorm2d(dim)
        self.norm_fv = LayerNorm2d(dim)
        self.ffn_i = FeedForward(dim, expansion)
        self.ffn_v = FeedForward(dim, expansion)

    def forward(self, fi: torch.Tensor, fv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ni, nv = self.norm_i(fi), self.norm_v(fv)
        fi, fv = fi + self.i_from_v(ni, nv), fv + self.v_from_i(nv, ni)
        fi = fi + self.ffn_i(self.norm_fi(fi))
        fv = fv + self.ffn_v(self.norm_fv(fv))
        return fi, fv


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

class Stage1Net(nn.Module):
    """Initial fusion: ``F1 = clamp(B + sigmoid(t) (max(ir, vis) - B), 0, 1)`` with the blend
    ``B = 2 sigmoid(a) ir + 2 sigmoid(b) vis + r``.

    ``a``, ``b`` (per-pixel gain logits), ``r`` (a residual) and ``t`` (selection logits) are
    predicted at 1/``down`` and pixel-shuffled to full resolution; an untrained network outputs
    ``(mean + max) / 2`` of the sources. Inputs
    ``(B, in_channels, H, W)`` in ``[0, 1]`` with ``H, W`` multiples of :attr:`multiple`; a
    1-channel infrared input is accepted with RGB visible input (it is broadcast). Output
    ``(B, out_channels, H, W)`` in ``[0, 1]``.
    """

    def __init__(self, config: Stage1Config | None = None):
        super().__init__()
        cfg = config or Stage1Config()
        self.config = cfg
        s, c = cfg.down, cfg.in_channels
        self.stem_ir = nn.Sequential(nn.Conv2d(c * s * s, cfg.dim_hi, 3, padding=1), _act())
        self.stem_vis = nn.Sequential(nn.Conv2d(c * s * s, cfg.dim_hi, 3, padding=1), _act())
        self.down_ir = nn.Sequential(nn.Conv2d(cfg.dim_hi, cfg.dim, 3, stride=2, padding=1),
                                     _act())
        self.down_vis = nn.Sequential(nn.Conv2d(cfg.dim_hi, cfg.dim, 3, stride=2, padding=1),
                                      _act())
        self.msfem = MSFEM(cfg.dim, cfg.msfem_branch)
        self.vis_blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.heads, cfg.ffn_expansion) for _ in range(cfg.blocks))
        self.cross = nn.ModuleList(
            CrossBlock(cfg.dim, cfg.heads, cfg.ffn_expansion) for _ in range(cfg.cross_blocks))
        self.merge = nn.Conv2d(2 * cfg.dim, cfg.dim, 1)
        self.up = nn.Conv2d(cfg.dim, 4 * cfg.dim_hi, 1)
        self.dec_in = nn.Sequential(nn.Conv2d(3 * cfg.dim_hi, cfg.dim_hi, 1), _act())
        self.dec = nn.Sequential(*[m for _ in range(cfg.dec_convs) for m in (
            nn.Conv2d(cfg.dim_hi, cfg.dim_hi, 3, padding=1), _act())])
        n = cfg.out_channels * s * s
        self.head = nn.Conv2d(cfg.dim_hi, 4 * n, 3, padding=1)
        # Start half way between the mean and the maximum of the sources: gains
        # 2 sigmoid(-ln 3) = 0.5, r = 0, selection t = sigmoid(0) = 0.5.
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.zero_()
            self.head.bias[:2 * n] = -math.log(3.0)

    @property
    def multiple(self) -> int:
        return self.config.multiple

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.forward_maps(ir, vis)[0]

    def forward_maps(self, ir: torch.Tensor, vis: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F1, maps)``: ``maps`` = ``[2 sigmoid(a), 2 sigmoid(b), r, sigmoid(t)]`` (``B x 4C x
        H x W``), the per-pixel blend that makes F1 from the sources (:data:`MAP_NAMES`), so
        that maps predicted at one size can blend sources of another."""
        cfg = self.config
        s = cfg.down
        if cfg.in_channels > 1 and ir.shape[1] == 1:  # static for luma models (ONNX export)
            ir = ir.expand(-1, cfg.in_channels, -1, -1)
        hi_i = self.stem_ir(F.pixel_unshuffle(ir, s))
        hi_v = self.stem_vis(F.pixel_unshuffle(vis, s))
        fi = self.msfem(self.down_ir(hi_i))
        fv = self.down_vis(hi_v)
        for blk in self.vis_blocks:
            fv = blk(fv)
        for blk in self.cross:
            fi, fv = blk(fi, fv)
        lo = F.leaky_relu(self.merge(torch.cat([fi, fv], 1)), 0.1)
        up = F.pixel_shuffle(self.up(lo), 2)
        h = self.dec(self.dec_in(torch.cat([up, hi_i, hi_v], 1)))
        ga, gb, r, t = F.pixel_shuffle(self.head(h), s).chunk(4, 1)
        if cfg.out_channels != cfg.in_channels:  # RGB in, luma out
            ir, vis = ir.mean(1, keepdim=True), vis.mean(1, keepdim=True)
        a, b, sel = 2 * torch.sigmoid(ga), 2 * torch.sigmoid(gb), torch.sigmoid(t)
        blend = a * ir + b * vis + r
        f1 = torch.clamp(blend + sel * (torch.maximum(ir, vis) - blend), 0.0, 1.0)
        return f1, torch.cat([a, b, r, sel], 1)


class Stage1WithMaps(nn.Module):
    """A stage-1 network exported with its blend maps: ``(ir, vis) -> (f1, maps)``."""

    def __init__(self, net: Stage1Net):
        super().__init__()
        self.net = net
        self.config = net.config

    @property
    def multiple(self) -> int:
        return self.net.multiple

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_maps(ir, vis)


# ----------------------------------------------------------------------------------------------
# Complexity
# ----------------------------------------------------------------------------------------------

def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (batch 1): convolutions and linear layers via
    forward hooks, plus the attention matrix products of modules with an ``extra_macs`` method.
    Element-wise operations are not counted. GFLOPs = 2 * MACs / 1e9."""
    total = [0]

    def conv_hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total[0] += out[0].numel() * (mod.in_channels // mod.groups) * k

    def linear_hook(mod, inp, out):
        total[0] += out[0].numel() * mod.in_features

    def extra_hook(mod, inp, out):
        total[0] += int(mod.extra_macs(out[:1] if torch.is_tensor(out) else out[0][:1]))

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        if hasattr(m, 'extra_macs'):
            handles.append(m.register_forward_hook(extra_hook))
    try:
        model(*[x[:1] for x in inputs])
    finally:
        for h in handles:
            h.remove()
    return total[0]


def gflops_per_frame(model: Stage1Net, height: int = 480, width: int = 640) -> float:
    """GFLOPs (2 x MACs) of one ``height x width`` frame."""
    c = model.config.in_channels
    x = torch.zeros(1, c, height, width)
    p = next(model.parameters())
    return 2 * count_macs(model, x.to(p), x.to(p)) / 1e9


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------

def make_checkpoint(model: Stage1Net, *, half: bool = False, **extra) -> dict[str, Any]:
    """A checkpoint dict: format tag, hyper-parameters and state dict (fp16 with ``half``), plus
    ``extra`` entries (``train`` config, ``step``, ``optimizer`` state, ``metrics``...)."""
    return tagged_checkpoint(model, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, half=half, **extra)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = 'cpu'
                    ) -> dict[str, Any]:
    """Read a stage-1 checkpoint file (tensors mapped to ``map_location``) and check its tag."""
    return read_tagged_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, 'stage-1',
                                  map_location)


def load_stage1(path: str | os.PathLike, map_location: str | torch.device = 'cpu'
                ) -> tuple[Stage1Net, dict[str, Any]]:
    """Build the network from a checkpoint file; returns ``(model in eval mode, meta)``.

    ``meta`` is the checkpoint without its state dict and optimizer state (config, training
    config, step, metrics...). The weights are cast to fp32 whatever they were stored as.
    """
    ckpt = read_checkpoint(path, map_location)
    model = Stage1Net(Stage1Config.from_dict(ckpt['config']))
    load_fp32_state_dict(model, ckpt['state_dict'])
    model.to(map_location).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ('state_dict', 'optimizer')}
    return model, meta


# ----------------------------------------------------------------------------------------------
# ONNX export
# ----------------------------------------------------------------------------------------------

def stage1_spec(model: Stage1Net, size: tuple[int, int] = (480, 640)) -> ExportSpec:
    """How stage 1 exports (the module :class:`Stage1WithMaps` of the network): ``(ir, vis)``
    ``1 x C x H x W`` -> ``f1`` and its blend ``maps`` (``1 x 4C x H x W``), dynamic H and W,
    checked on a real pair (the luma broadcast to the network's channels)."""
    import numpy as np

    c = model.config.in_channels
    dyn = {2: 'height', 3: 'width'}

    def make(h, w):
        return (torch.rand(1, c, h, w), torch.rand(1, c, h, w))

    def real(ir, vis, h, w):
        ti = torch.from_numpy(np.ascontiguousarray(ir, np.float32))[None, None]
        tv = torch.from_numpy(np.ascontiguousarray(vis, np.float32))[None, None]
        return ti.expand(1, c, h, w).contiguous(), tv.expand(1, c, h, w).contiguous()

    return ExportSpec('stage1', ('ir', 'vis'), ('f1', 'maps'), make, real,
                      dynamic_axes={'ir': dyn, 'vis': dyn, 'f1': dyn, 'maps': dyn},
                      multiple=model.multiple, size=size,
                      meta={'config': asdict(model.config), 'maps': list(MAP_NAMES)})
