"""Fusion losses: intensity, gradient and structural similarity (SSIM) terms.

All functions take ``(B, C, H, W)`` tensors in ``[0, 1]``: the fused image ``f`` and its two
sources ``ir`` and ``vis`` (the visible luma, or RGB with ``C = 3``). Each accepts an optional
per-pixel weight map ``weight`` (``(B, 1 or C, H, W)``, broadcast over channels) so that
mask-guided variants (stage 2) are the same functions with a mask-derived weight. With a weight
the mean is the weighted mean ``sum(w * e) / sum(w)`` (``w`` broadcast to the error's shape).

Formulas (``|.|_1`` is the mean absolute value over pixels and channels):

* intensity  ``L_int  = | F - max(IR, Y) |_1``
* gradient   ``L_grad = | |grad F| - max(|grad IR|, |grad Y|) |_1`` with
  ``|grad X| = |S_x * X| + |S_y * X|`` (3x3 Sobel kernels, replicate padding)
* SSIM       ``L_ssim = 1 - (a * SSIM(F, IR) + (1 - a) * SSIM(F, Y))`` with the usual 11x11
  Gaussian-window (sigma 1.5) SSIM, ``C1 = 0.01^2``, ``C2 = 0.03^2``; ``a = 0.5`` by default.
  The SSIM term keeps each source's own local structure and contrast, which the max-based terms
  ignore (the SSIM and SCD metrics reward it).
* correlation ``L_corr = 2 - (corr(F - Y, IR) + corr(F - IR, Y))``, Pearson correlations over
  each image of the batch (weighted by ``weight`` when given), averaged over the batch: the
  "sum of the correlations of differences" (SCD) turned into a loss. It asks that what F adds
  to one source is the other source's content, i.e. that neither source is lost.

:class:`FusionLoss` combines them:
``L = w_int L_int + w_grad L_grad + w_ssim L_ssim + w_corr L_corr``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def _weighted_mean(err: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return err.mean()
    w = weight.to(err.dtype).expand_as(err)
    return (w * err).sum() / w.sum().clamp_min(1e-8)


def _per_channel(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b * c, 1, h, w)


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|S_x * x| + |S_y * x|`` per channel (replicate padding), same shape as ``x``."""
    b, c, h, w = x.shape
    kx = _SOBEL_X.to(x)
    kernel = torch.stack([kx, kx.t()]).unsqueeze(1)  # (2, 1, 3, 3)
    g = F.conv2d(F.pad(_per_channel(x), (1, 1, 1, 1), mode='replicate'), kernel)
    return g.abs().sum(1).reshape(b, c, h, w)


def intensity_loss(f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """``| F - max(IR, Y) |_1`` (weighted mean with ``weight``)."""
    return _weighted_mean((f - torch.maximum(ir, vis)).abs(), weight)


def gradient_loss(f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """``| |grad F| - max(|grad IR|, |grad Y|) |_1`` with Sobel gradient magnitudes."""
    target = torch.maximum(sobel_magnitude(ir), sobel_magnitude(vis))
    return _weighted_mean((sobel_magnitude(f) - target).abs(), weight)


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    r = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(r * r) / (2 * sigma * sigma))
    return g / g.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5,
             c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> torch.Tensor:
    """Per-pixel SSIM of two ``(B, C, H, W)`` images in ``[0, 1]`` (Gaussian window, reflect
    padding so the map has the input's size)::

        SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))
    """
    b, c, h, w = x.shape
    g = _gaussian_window(window, sigma, x)
    pad = window // 2
    # Five local moments at once, separable Gaussian filtering.
    stack = _per_channel(torch.cat([x, y, x * x, y * y, x * y], 1))
    mode = 'reflect' if min(h, w) > pad else 'replicate'
    stack = F.pad(stack, (pad, pad, pad, pad), mode=mode)
    stack = F.conv2d(stack, g.view(1, 1, 1, -1))
    stack = F.conv2d(stack, g.view(1, 1, -1, 1))
    mu_x, mu_y, xx, yy, xy = stack.reshape(b, 5, c, h, w).unbind(1)
    sxx = xx - mu_x * mu_x
    syy = yy - mu_y * mu_y
    sxy = xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    return num / den


def ssim_loss(f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
              weight: torch.Tensor | None = None, ir_share: float = 0.5) -> torch.Tensor:
    """``1 - (a SSIM(F, IR) + (1 - a) SSIM(F, Y))`` with ``a = ir_share``."""
    s = ir_share * ssim_map(f, ir) + (1.0 - ir_share) * ssim_map(f, vis)
    return 1.0 - _weighted_mean(s, weight)


def _correlation(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None,
                 eps: float = 1e-6) -> torch.Tensor:
    # Pearson correlation per batch item, shape (B,).
    dims = (1, 2, 3)
    if weight is None:
        w = torch.ones_like(a[:, :1])
    else:
        w = weight.to(a.dtype)
    w = w.expand_as(a)
    ws = w.sum(dims, keepdim=True).clamp_min(eps)
    a = a - (w * a).sum(dims, keepdim=True) / ws
    b = b - (w * b).sum(dims, keepdim=True) / ws
    cov = (w * a * b).sum(dims)
    return cov / torch.sqrt((w * a * a).sum(dims) * (w * b * b).sum(dims) + eps)


def correlation_loss(f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """``2 - (corr(F - Y, IR) + corr(F - IR, Y))`` averaged over the batch (range 0..4)."""
    scd = _correlation(f - vis, ir, weight) + _correlation(f - ir, vis, weight)
    return 2.0 - scd.mean()


@dataclass
class LossWeights:
    """Weights of the stage-1 loss terms (stored with the training config)."""

    intensity: float = 1.0
    gradient: float = 1.0
    ssim: float = 0.0
    #: Share of the infrared source in the SSIM term.
    ssim_ir_share: float = 0.5
    correlation: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class FusionLoss(torch.nn.Module):
    """``w_int L_int + w_grad L_grad + w_ssim L_ssim + w_corr L_corr``; ``forward`` returns the
    total and a dict of the (unweighted) terms as floats for logging."""

    def __init__(self, weights: LossWeights | None = None):
        super().__init__()
        self.weights = weights or LossWeights()

    def forward(self, f: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor,
                weight: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        if w.intensity:
            terms['int'] = intensity_loss(f, ir, vis, weight)
        if w.gradient:
            terms['grad'] = gradient_loss(f, ir, vis, weight)
        if w.ssim:
            terms['ssim'] = ssim_loss(f, ir, vis, weight, w.ssim_ir_share)
        if w.correlation:
            terms['corr'] = correlation_loss(f, ir, vis, weight)
        scale = {'int': w.intensity, 'grad': w.gradient, 'ssim': w.ssim, 'corr': w.correlation}
        total = sum(scale[k] * v for k, v in terms.items())
        if not terms:
            total = f.sum() * 0.0
        return total, {k: float(v.detach()) for k, v in terms.items()}
