"""Classical fusion baselines on luma: ``mean``, ``max`` and a Laplacian pyramid.

All take and return ``float32`` arrays in ``[0, 1]`` of the same 2-D shape.
"""

from __future__ import annotations

import cv2
import numpy as np


def fuse_mean(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Pixel-wise average."""
    return (0.5 * (ir + vis)).astype(np.float32)


def fuse_max(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Pixel-wise maximum (keeps the brighter of the two sources everywhere)."""
    return np.maximum(ir, vis).astype(np.float32)


def _gaussian_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    pyr = [img]
    for _ in range(levels - 1):
        pyr.append(cv2.pyrDown(pyr[-1]))
    return pyr


def _laplacian_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    gauss = _gaussian_pyramid(img, levels)
    lap = []
    for fine, coarse in zip(gauss[:-1], gauss[1:]):
        up = cv2.pyrUp(coarse, dstsize=(fine.shape[1], fine.shape[0]))
        lap.append(fine - up)
    lap.append(gauss[-1])
    return lap


def pyramid_levels(shape: tuple[int, ...], max_levels: int = 5, min_side: int = 8) -> int:
    """How many pyramid levels an image of ``shape`` supports (coarsest side >= ``min_side``)."""
    side = min(shape[:2])
    levels = 1
    while levels < max_levels and side // 2 >= min_side:
        side //= 2
        levels += 1
    return levels


def fuse_laplacian(ir: np.ndarray, vis: np.ndarray, levels: int = 5) -> np.ndarray:
    """Laplacian-pyramid fusion (Burt and Adelson).

    Detail bands: at each pixel the coefficient with the larger absolute value is kept
    (max-abs selection). The coarsest (low-pass) band is averaged. Reconstruction collapses the
    pyramid. The result is clipped to ``[0, 1]``.
    """
    ir = np.asarray(ir, dtype=np.float32)
    vis = np.asarray(vis, dtype=np.float32)
    if ir.shape != vis.shape:
        raise ValueError(f'shape mismatch: {ir.shape} vs {vis.shape}')
    levels = min(levels, pyramid_levels(ir.shape))
    la, lb = _laplacian_pyramid(ir, levels), _laplacian_pyramid(vis, levels)
    fused = [np.where(np.abs(a) >= np.abs(b), a, b) for a, b in zip(la[:-1], lb[:-1])]
    out = 0.5 * (la[-1] + lb[-1])
    for band in reversed(fused):
        out = cv2.pyrUp(out, dstsize=(band.shape[1], band.shape[0])) + band
    return np.clip(out, 0.0, 1.0).astype(np.float32)


BASELINES = {
    'mean': fuse_mean,
    'max': fuse_max,
    'laplacian': fuse_laplacian,
}
