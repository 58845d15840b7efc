"""Fusion at a working size, blended at the frame's own size: the networks' maps applied to the
full-resolution sources.

Both networks end in a per-pixel blend of the sources (``docs/stage1.md``, ``docs/refiner.md``)::

    F1 = clamp(B + T (max(IR, VIS) - B), 0, 1),   B = A IR + Bv VIS + r           (stage 1)
    Y  = clamp(F1 + gi (IR - F1) + gv (VIS - F1) + r2 / 2
               + G (di HP(IR) + dv HP(VIS)) + floor core(sel(HP(IR), HP(VIS))), 0, 1)  (refiner)

with ``HP`` the finest Laplacian level (the source minus its 5-tap binomial blur), ``sel`` the
larger-magnitude of the two and ``core`` the coring of the detail floor. The maps (``A``, ``Bv``,
``r``, ``T``; ``gi``, ``gv``, ``r2``, ``di``, ``dv``) are smooth: the networks predict them from
a frame at a working size (what the CPU can afford), and :func:`compose` evaluates the formulas
on the sources at the frame's own size, the maps up-sampled (bilinear, pixel centres aligned).
So a 1920x1080 frame fused at 640x352 keeps the fine detail of both cameras, where scaling up a
fused 640x352 image would not (docs/benchmarks.md, "HD frames"). At the working size itself the
result is the networks' own output.

:class:`BlendMaps` is what a method returns for this (``method(ir, vis, masks, maps=True)``).
Everything here is numpy and OpenCV: no network runs at the frame's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: The 5-tap binomial of the refiner's high pass (``models.filters``), as an OpenCV kernel.
_BINOMIAL = (np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0)


@dataclass(frozen=True)
class RefinerBlend:
    """The refiner's maps: ``maps`` ``(n, h, w)`` = ``gi, gv, r2`` (and ``di, dv`` with
    detail), on a grid spanning ``cover`` ``(W, H)`` pixels of the working frame from its
    top-left corner (the network's padded input; its maps sit at 1/down of it)."""

    maps: np.ndarray
    cover: tuple[int, int]
    detail_gain: float = 2.0
    detail_floor: float = 0.0
    detail_core: float = 0.0

    @property
    def detail(self) -> bool:
        return self.maps.shape[0] >= 5


@dataclass(frozen=True)
class BlendMaps:
    """The blend a method predicted at the working size ``work`` ``(w, h)``: stage 1's maps
    ``(4, h, w)`` (``A, Bv, r, T``) and the refiner's (None for stage 1 alone)."""

    work: tuple[int, int]
    stage1: np.ndarray
    refiner: RefinerBlend | None = None


def upsample(grid: np.ndarray, cover: tuple[int, int], work: tuple[int, int],
        size: tuple[int, int]) -> np.ndarray:
    """``grid`` ``(h', w')``, spanning ``cover`` pixels of a ``work``-sized frame, bilinearly
    up-sampled onto a frame of ``size`` ``(W, H)`` (pixel centres aligned, as
    ``F.interpolate(align_corners=False)``)."""
    (cw, ch), (w, h), (W, H) = cover, work, size
    wp, hp = int(round(W * cw / w)), int(round(H * ch / h))
    if grid.shape == (hp, wp):
        out = grid
    else:
        out = cv2.resize(grid, (wp, hp), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out[:H, :W])


def _high_pass(x: np.ndarray) -> np.ndarray:
    """``x`` minus its 5x5 binomial blur (replicated border), float32."""
    blur = cv2.sepFilter2D(x, cv2.CV_32F, _BINOMIAL, _BINOMIAL, borderType=cv2.BORDER_REPLICATE)
    return np.subtract(x, blur, out=blur)


def stage1_terms(maps: np.ndarray) -> np.ndarray:
    """Stage 1's maps ``(A, Bv, r, T)`` as ``((1-T) A, (1-T) Bv, (1-T) r, T)``: then
    ``F1 = clamp(a IR + b VIS + c + T max(IR, VIS))``, fewer passes at full resolution."""
    a, b, r, t = maps
    keep = 1.0 - t
    return np.stack([keep * a, keep * b, keep * r, t]).astype(np.float32, copy=False)


def refiner_terms(blend: RefinerBlend) -> np.ndarray:
    """The refiner's maps as the coefficients of ``F1, IR, VIS, 1, HP(IR), HP(VIS)``
    (``1 - gi - gv, gi, gv, r2 / 2, G di, G dv``): linear in the maps, so they can be
    up-sampled instead of the maps."""
    m = blend.maps
    gi, gv, r = m[0], m[1], m[2]
    terms = [1.0 - gi - gv, gi, gv, 0.5 * r]
    if blend.detail:
        terms += [blend.detail_gain * m[3], blend.detail_gain * m[4]]
    return np.stack(terms).astype(np.float32, copy=False)


def compose(maps: BlendMaps, ir: np.ndarray, vis: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """``(fused, f1)`` luma (float32 ``[0, 1]``) at the size of ``ir`` and ``vis`` (float32
    ``[0, 1]`` luma, registered, of one size): the formulas of the module docstring with the
    maps of ``maps`` up-sampled to that size."""
    h, w = ir.shape
    size, work = (w, h), maps.work
    a, b, c, t = (upsample(x, work, work, size) for x in stage1_terms(maps.stage1))
    f1 = np.multiply(a, ir, out=a)
    f1 += np.multiply(b, vis, out=b)
    f1 += c
    top = np.maximum(ir, vis, out=c)
    top *= t
    f1 += top
    np.clip(f1, 0.0, 1.0, out=f1)
    del b, c, t, top
    rb = maps.refiner
    if rb is None:
        return f1, f1
    terms = [upsample(x, rb.cover, work, size) for x in refiner_terms(rb)]
    y = np.multiply(terms[0], f1, out=terms[0])
    y += np.multiply(terms[1], ir, out=terms[1])
    y += np.multiply(terms[2], vis, out=terms[2])
    y += terms[3]
    if rb.detail:
        hi, hv = _high_pass(ir), _high_pass(vis)
        y += np.multiply(terms[4], hi, out=terms[4])
        y += np.multiply(terms[5], hv, out=terms[5])
        if rb.detail_floor:
            sel = np.where(np.abs(hi) >= np.abs(hv), hi, hv)
            core = np.float32(rb.detail_core / 255.0)
            if core > 0:  # s - clamp(s, -c, c)
                sel -= np.clip(sel, -core, core, out=hi)
            sel *= np.float32(rb.detail_floor)
            y += sel
    return np.clip(y, 0.0, 1.0, out=y), f1
