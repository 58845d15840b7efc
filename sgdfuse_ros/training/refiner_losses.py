"""The stage-2 (refiner) loss: mask-guided intensity and gradient terms plus the global terms.

Tensors are ``(B, C, H, W)`` in ``[0, 1]``: the refined image ``F``, the sources ``IR`` and
``Y`` (visible luma, or RGB with ``C = 3``) and the two semantic masks ``M_ir``, ``M_vis``
(``(B, 1, H, W)`` each, soft, in ``[0, 1]``). The building blocks are the stage-1 losses of
:mod:`.losses` (reused, with their per-pixel weight maps).

The salient region is the union of the two masks, ``M = max(M_ir, M_vis)``. With
``|grad X| = |S_x * X| + |S_y * X|`` (Sobel):

* mask-guided intensity  ``L_int^M  = sum(M |F - max(IR, Y)|) / sum(M)``
* mask-guided gradient   ``L_grad^M = sum(M | |grad F| - max(|grad IR|, |grad Y|) |) / sum(M)``

i.e. inside the regions SAM marks, F keeps the brighter (thermal) intensity and the stronger
edge of the two sources. Both are 0 when the masks are empty (the "without SAM" ablation then
trains on the global terms alone). So that regions outside the masks are not neglected, the
global terms of stage 1 are added (unweighted means over all pixels):

* ``L_int  = |F - max(IR, Y)|_1``,  ``L_grad = | |grad F| - max(|grad IR|, |grad Y|) |_1``
* ``L_ssim = 1 - (a SSIM(F, IR) + (1 - a) SSIM(F, Y))``,
  ``L_corr = 2 - (corr(F - Y, IR) + corr(F - IR, Y))``

and the total is::

    L = w_mi L_int^M + w_mg L_grad^M + w_int L_int + w_grad L_grad + w_ssim L_ssim + w_corr L_corr
        + w_det L_det

with ``w_mi = 1.5`` and ``w_mg = 1.0`` (the authors' weights) by default. Two additions, off by
default (weights and shares of :class:`RefinerLossWeights`):

* **Detail** ``L_det = | HP(F) - sel(HP(IR), HP(Y)) |_1``, with ``HP`` the finest Laplacian
  level (the image minus its 5x5 binomial blur) and ``sel`` the larger in magnitude per pixel:
  the detail a Laplacian pyramid keeps (what SF and Qabf reward), asked of the refiner.
* **Mask-aware SSIM**: the infrared share of the SSIM term varies per pixel,
  ``a(x) = a_out + (a_in - a_out) M(x)``: inside the salient regions F should keep the thermal
  structure, outside the visible texture. The loss then asks different things inside and
  outside the masks, so a network that does not read them cannot meet it.

Speed: the SSIM and Sobel filters are computed here as *grouped* (depthwise) convolutions over
all images of the batch at once. The values are those of :func:`.losses.ssim_map` and
:func:`.losses.sobel_magnitude` (the tests check it), but on a CPU the backward pass is about
20x faster than through single-channel convolutions (8 crops of 128x128: SSIM against both
sources 19 ms instead of 400 ms forward + backward), which decides the training speed here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from sgdfuse_ros.models.filters import high_pass, high_pass_kernel
from .losses import _SOBEL_X, _gaussian_window, _weighted_mean, correlation_loss, intensity_loss


def _grouped_filter(x: torch.Tensor, kernels: torch.Tensor, pad_mode: str) -> torch.Tensor:
    """Filter every channel of every image of ``x`` (``(B, C, H, W)``) with each of ``kernels``
    (``(K, kh, kw)``, same-size output): ``(B, C * K, H, W)``, kernel index fastest."""
    b, c, h, w = x.shape
    k, kh, kw = kernels.shape
    ph, pw = kh // 2, kw // 2
    xp = F.pad(x, (pw, pw, ph, ph), mode=pad_mode).reshape(1, b * c, h + 2 * ph, w + 2 * pw)
    weight = kernels.to(x).unsqueeze(1).repeat(b * c, 1, 1, 1)  # (B*C*K, 1, kh, kw)
    return F.conv2d(xp, weight, groups=b * c).reshape(b, c * k, h, w)


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|S_x * x| + |S_y * x|`` per channel (replicate padding); equals
    :func:`.losses.sobel_magnitude`."""
    b, c, h, w = x.shape
    kx = _SOBEL_X.to(x)
    g = _grouped_filter(x, torch.stack([kx, kx.t()]), 'replicate')
    return g.reshape(b, c, 2, h, w).abs().sum(2)


def gradient_loss(f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """``| |grad F| - max(|grad IR|, |grad Y|) |_1`` (weighted mean with ``weight``); equals
    :func:`.losses.gradient_loss`."""
    n = f.shape[1]
    g = sobel_magnitude(torch.cat([f, ir.expand_as(f), vis], 1))
    target = torch.maximum(g[:, n:2 * n], g[:, 2 * n:])
    return _weighted_mean((g[:, :n] - target).abs(), weight)


def ssim_maps(f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, window: int = 11,
              sigma: float = 1.5, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(SSIM(F, IR), SSIM(F, Y))`` per-pixel maps, the formula of :func:`.losses.ssim_map`
    (Gaussian window, reflect padding), with the eight local moments filtered at once."""
    g = _gaussian_window(window, sigma, f)
    ir = ir.expand_as(f)
    h, w = f.shape[-2:]
    mode = 'reflect' if min(h, w) > window // 2 else 'replicate'
    n = f.shape[1]
    st = torch.cat([f, ir, vis, f * f, ir * ir, vis * vis, f * ir, f * vis], 1)
    st = _grouped_filter(st, g.view(1, 1, -1), mode)
    st = _grouped_filter(st, g.view(1, -1, 1), mode)
    mf, mi, mv, ff, ii, vv, fi, fv = st.split(n, 1)
    sff = ff - mf * mf
    out = []
    for mu, sxx, sxy in ((mi, ii - mi * mi, fi - mf * mi), (mv, vv - mv * mv, fv - mf * mv)):
        num = (2 * mf * mu + c1) * (2 * sxy + c2)
        out.append(num / ((mf * mf + mu * mu + c1) * (sff + sxx + c2)))
    return out[0], out[1]


def ssim_loss(f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
              weight: torch.Tensor | None = None,
              ir_share: float | torch.Tensor = 0.5) -> torch.Tensor:
    """``1 - (a SSIM(F, IR) + (1 - a) SSIM(F, Y))``; equals :func:`.losses.ssim_loss`.
    ``ir_share`` may be a per-pixel map ``(B, 1, H, W)`` (the mask-aware share)."""
    s_ir, s_vis = ssim_maps(f, ir, vis)
    return 1.0 - _weighted_mean(ir_share * s_ir + (1.0 - ir_share) * s_vis, weight)


def detail_loss(f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """``| HP(F) - sel(HP(IR), HP(Y)) |_1``: the finest Laplacian level of F against the
    larger-magnitude one of the sources, per pixel (see the module docstring)."""
    n = f.shape[1]
    hp = high_pass(torch.cat([f, ir.expand_as(f), vis], 1), high_pass_kernel(3 * n).to(f))
    hi, hv = hp[:, n:2 * n], hp[:, 2 * n:]
    target = torch.where(hi.abs() >= hv.abs(), hi, hv)
    return (hp[:, :n] - target).abs().mean()


@dataclass
class RefinerLossWeights:
    """Weights of the refiner's loss terms (stored with the training config)."""

    mask_intensity: float = 1.5
    mask_gradient: float = 1.0
    intensity: float = 0.5
    gradient: float = 4.0
    ssim: float = 1.0
    #: Share of the infrared source in the SSIM term.
    ssim_ir_share: float = 0.5
    correlation: float = 0.5
    #: Weight of the detail term ``L_det`` (0: off).
    detail: float = 0.0
    #: Mask-aware SSIM: infrared share inside / outside the salient regions (negative: the
    #: uniform ``ssim_ir_share`` everywhere).
    ssim_ir_in: float = -1.0
    ssim_ir_out: float = -1.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def salient_weight(masks: torch.Tensor) -> torch.Tensor:
    """``M = max(M_ir, M_vis)`` from ``(B, 2, H, W)`` masks -> ``(B, 1, H, W)``."""
    if masks.shape[1] != 2:
        raise ValueError(f'masks must have 2 channels (IR, VIS), got {masks.shape[1]}')
    return masks.amax(1, keepdim=True)


def _masked_term(term: Callable[..., torch.Tensor], f: torch.Tensor, ir: torch.Tensor,
                 vis: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``term(f, ir, vis, M)`` weighted by the salient mask ``M`` (0 when the masks are
    empty)."""
    m = salient_weight(masks)
    if float(m.sum()) <= 0:
        return f.sum() * 0.0
    return term(f, ir, vis, m)


def mask_intensity_loss(f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
                        masks: torch.Tensor) -> torch.Tensor:
    """``L_int^M`` (0 when the masks are empty)."""
    return _masked_term(intensity_loss, f, ir, vis, masks)


def mask_gradient_loss(f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
                       masks: torch.Tensor) -> torch.Tensor:
    """``L_grad^M`` (0 when the masks are empty)."""
    return _masked_term(gradient_loss, f, ir, vis, masks)


class RefinerLoss(torch.nn.Module):
    """The total refiner loss; ``forward(f, ir, vis, masks)`` returns the total and a dict of
    the unweighted terms (floats, for logging)."""

    def __init__(self, weights: RefinerLossWeights | None = None):
        super().__init__()
        self.weights = weights or RefinerLossWeights()

    def forward(self, f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
                masks: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        scale: dict[str, float] = {}

        def add(name, weight, fn):
            if weight:
                terms[name] = fn()
                scale[name] = weight

        add('m_int', w.mask_intensity, lambda: mask_intensity_loss(f, ir, vis, masks))
        add('m_grad', w.mask_gradient, lambda: mask_gradient_loss(f, ir, vis, masks))
        add('int', w.intensity, lambda: intensity_loss(f, ir, vis))
        add('grad', w.gradient, lambda: gradient_loss(f, ir, vis))
        add('ssim', w.ssim, lambda: ssim_loss(f, ir, vis, None, self.ssim_share(masks)))
        add('corr', w.correlation, lambda: correlation_loss(f, ir, vis))
        add('det', w.detail, lambda: detail_loss(f, ir, vis))
        if not terms:
            return f.sum() * 0.0, {}
        total = sum(scale[k] * v for k, v in terms.items())
        return total, {k: float(v.detach()) for k, v in terms.items()}

    def ssim_share(self, masks: torch.Tensor) -> float | torch.Tensor:
        """The infrared share of the SSIM term: a number, or the mask-aware map."""
        w = self.weights
        if w.ssim_ir_in < 0 or w.ssim_ir_out < 0:
            return w.ssim_ir_share
        return w.ssim_ir_out + (w.ssim_ir_in - w.ssim_ir_out) * salient_weight(masks)
