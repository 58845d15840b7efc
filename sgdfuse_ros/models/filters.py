"""Fixed filters of the refiner: blur-pool down-sampling and binomial high-pass detail.

Anti-aliased down-sampling keeps the refiner's output from depending on where the image sits
on its stride grid (steady video on a pan); the high-pass gives the sources' finest detail.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


def _binomial(taps: int) -> torch.Tensor:
    row = torch.tensor([math.comb(taps - 1, k) for k in range(taps)], dtype=torch.float32)
    k = torch.outer(row, row)
    return k / k.sum()


class BlurDown(nn.Module):
    """Blur-pool (Zhang, ICML 2019): a fixed [1 2 1] x [1 2 1] / 16 depthwise blur (reflect
    padding), then the stride-2 3x3 convolution. Removes the aliasing that makes a strided
    convolution's output depend on the input's position on the stride-2 grid."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.register_buffer('blur', _binomial(3).expand(cin, 1, 3, 3).clone(), persistent=False)
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode='reflect'), self.blur, groups=x.shape[1])
        return self.conv(x)


def high_pass_kernel(channels: int) -> torch.Tensor:
    """The depthwise 5x5 binomial kernel of :func:`high_pass` for ``channels`` channels."""
    return _binomial(5).expand(channels, 1, 5, 5).clone()


def high_pass(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``x`` minus its 5x5 binomial blur (replicate padding), per channel; ``kernel`` from
    :func:`high_pass_kernel` for ``x``'s channel count (a constant shape, for ONNX)."""
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode='replicate'), kernel, groups=x.shape[1])
    return x - blurred


def separable_high_pass(x: torch.Tensor, kv: torch.Tensor, kh: torch.Tensor) -> torch.Tensor:
    """:func:`high_pass` with the binomial blur as a 5x1 then a 1x5 pass (the same values, 10
    taps per pixel instead of 25: cheaper at full resolution); ``kv``, ``kh`` from
    :func:`separable_kernels`."""
    c = x.shape[1]
    blurred = F.conv2d(F.pad(x, (0, 0, 2, 2), mode='replicate'), kv, groups=c)
    blurred = F.conv2d(F.pad(blurred, (2, 2, 0, 0), mode='replicate'), kh, groups=c)
    return x - blurred


def separable_kernels(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5-tap binomial ``[1 4 6 4 1] / 16`` as depthwise ``5x1`` and ``1x5`` kernels."""
    row = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    return (row.view(1, 1, 5, 1).expand(channels, 1, 5, 1).clone(),
            row.view(1, 1, 1, 5).expand(channels, 1, 1, 5).clone())
