"""The frame-size work of :mod:`.compose` in two passes over the frame, compiled with numba.

At 1920x1080 the formulas of :func:`.compose.compose` in numpy are some thirty passes over
8 MB float arrays plus the colour merge; here they are:

1. the visible luma (BT.601, float) of the RGB frame, one pass (:func:`visible_luma`);
2. the 5-tap binomial blurs of both sources (OpenCV, for the high-pass terms);
3. one pass that samples the maps bilinearly from their small grids (no frame-sized map is
   ever made), evaluates stage 1's and the refiner's blends, and writes the fused luma and the
   RGB frame with its luma replaced (``RGB + (Y_fused - Y)``: the same chroma, as the
   ``merge`` of the pipeline) (:func:`compose_frame`).

Rows run in parallel on numba's threads. The results equal :func:`.compose.compose` (float32
rounding) and the merge of :func:`sgdfuse_ros.core.imaging.merge_luma` within one 8-bit step.
numba is an optional dependency: :func:`available` says whether this path can run; the
pipeline falls back to the numpy one. The kernels compile on first use (a few seconds) and are
cached on disk (numba's cache, beside this file or in the user's cache folder).
"""

from __future__ import annotations

import importlib.util
import math

import cv2
import numpy as np

from .compose import BlendMaps, refiner_terms, stage1_terms

_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0
_kernels = None


def available() -> bool:
    """numba is installed (cheap: looks for it, imports nothing)."""
    return importlib.util.find_spec('numba') is not None


def _build():
    """Compile (or load from numba's cache) the two kernels."""
    global _kernels
    if _kernels is not None:
        return _kernels
    import numba

    jit = numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)

    @jit
    def luma(rgb, out):
        h, w = out.shape
        for y in numba.prange(h):
            for x in range(w):
                out[y, x] = (np.float32(0.299 / 255.0) * rgb[y, x, 0]
                             + np.float32(0.587 / 255.0) * rgb[y, x, 1]
                             + np.float32(0.114 / 255.0) * rgb[y, x, 2])

    @numba.njit(inline='always', fastmath=True)
    def bil(g, k, r0, r1, c0, c1, fx, fy):
        top = g[k, r0, c0] + fx * (g[k, r0, c1] - g[k, r0, c0])
        bot = g[k, r1, c0] + fx * (g[k, r1, c1] - g[k, r1, c0])
        return top + fy * (bot - top)

    @numba.njit(inline='always')
    def rows(y, scale, n):
        v = (y + 0.5) * scale - 0.5
        r0 = int(math.floor(v))
        f = v - r0
        if r0 < 0:
            r0, f = 0, 0.0
        if r0 >= n - 1:
            r0, f = n - 1, 0.0
        return r0, min(r0 + 1, n - 1), f

    @jit
    def blend(rgb, ir, vis, b_ir, b_vis, g1, x1, wx1, sy1, g2, x2, wx2, sy2,
              detail, floor, core, out_rgb, out_y, out_f1):
        h, w = ir.shape
        refine = g2.shape[0] > 0
        last1, last2 = g1.shape[2] - 1, g2.shape[2] - 1
        color = out_rgb.shape[0] > 0
        for y in numba.prange(h):
            r0, r1, fy1 = rows(y, sy1, g1.shape[1])
            q0, q1, fy2 = rows(y, sy2, g2.shape[1])
            for x in range(w):
                c0, fx = x1[x], wx1[x]
                c1 = min(c0 + 1, last1)
                i, s = ir[y, x], vis[y, x]
                f1 = (bil(g1, 0, r0, r1, c0, c1, fx, fy1) * i
                      + bil(g1, 1, r0, r1, c0, c1, fx, fy1) * s
                      + bil(g1, 2, r0, r1, c0, c1, fx, fy1)
                      + bil(g1, 3, r0, r1, c0, c1, fx, fy1) * max(i, s))
                f1 = min(max(f1, np.float32(0.0)), np.float32(1.0))
                out_f1[y, x] = f1
                val = f1
                if refine:
                    d0, gx = x2[x], wx2[x]
                    d1 = min(d0 + 1, last2)
                    val = (bil(g2, 0, q0, q1, d0, d1, gx, fy2) * f1
                           + bil(g2, 1, q0, q1, d0, d1, gx, fy2) * i
                           + bil(g2, 2, q0, q1, d0, d1, gx, fy2) * s
                           + bil(g2, 3, q0, q1, d0, d1, gx, fy2))
                    if detail:
                        hi, hv = i - b_ir[y, x], s - b_vis[y, x]
                        val += (bil(g2, 4, q0, q1, d0, d1, gx, fy2) * hi
                                + bil(g2, 5, q0, q1, d0, d1, gx, fy2) * hv)
                        if floor != 0.0:
                            sel = hi if abs(hi) >= abs(hv) else hv
                            sel -= min(max(sel, -core), core)
                            val += floor * sel
                    val = min(max(val, np.float32(0.0)), np.float32(1.0))
                out_y[y, x] = val
                if color:
                    d = (val - s) * np.float32(255.0) + np.float32(0.5)
                    for ch in range(3):
                        o = rgb[y, x, ch] + d
                        out_rgb[y, x, ch] = np.uint8(min(max(o, np.float32(0.0)),
                                                         np.float32(255.0)))

    @jit
    def merge(rgb, fused, vis, out):
        h, w = fused.shape
        for y in numba.prange(h):
            for x in range(w):
                d = (fused[y, x] - vis[y, x]) * np.float32(255.0) + np.float32(0.5)
                for ch in range(3):
                    o = rgb[y, x, ch] + d
                    out[y, x, ch] = np.uint8(min(max(o, np.float32(0.0)), np.float32(255.0)))

    _kernels = (luma, blend, merge)
    return _kernels


def visible_luma(rgb: np.ndarray) -> np.ndarray:
    """Luma (BT.601, float32 ``[0, 1]``) of a ``uint8`` RGB frame in one parallel pass."""
    luma = _build()[0]
    out = np.empty(rgb.shape[:2], np.float32)
    luma(np.ascontiguousarray(rgb), out)
    return out


def merge_luma(fused: np.ndarray, rgb: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """``uint8`` RGB frame ``rgb`` with its luma ``vis`` replaced by ``fused`` (both float32
    ``[0, 1]``): ``RGB + (fused - vis)`` per channel, the same chroma (one parallel pass;
    :func:`sgdfuse_ros.core.imaging.merge_luma` within one 8-bit step)."""
    out = np.empty(rgb.shape, np.uint8)
    _build()[2](np.ascontiguousarray(rgb), np.ascontiguousarray(fused, np.float32),
                np.ascontiguousarray(vis, np.float32), out)
    return out


def _axis(n_out: int, cells: int, cover: int, work: int) -> tuple[np.ndarray, np.ndarray,
                                                                  float]:
    """Left cell index and weight along one axis for each of ``n_out`` frame pixels, and the
    scale (grid cells per frame pixel) of a grid of ``cells`` spanning ``cover`` of ``work``
    working pixels."""
    scale = cells * work / (cover * n_out)
    u = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    i0 = np.floor(u)
    w = u - i0
    low, high = i0 < 0, i0 >= cells - 1
    w[low | high] = 0.0
    i0 = np.clip(i0, 0, cells - 1)
    return i0.astype(np.int32), w.astype(np.float32), scale


def compose_frame(maps: BlendMaps, ir: np.ndarray, vis: np.ndarray,
                  rgb: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(fused luma, f1, image)`` at the size of ``ir`` / ``vis`` (float32 ``[0, 1]``, one
    size): :func:`.compose.compose`, and with ``rgb`` (``uint8`` RGB of that size) the fused
    RGB frame (its luma replaced), else ``image`` None."""
    blend = _build()[1]
    h, w = ir.shape
    ww, wh = maps.work
    g1 = np.ascontiguousarray(stage1_terms(maps.stage1))
    x1, wx1, _ = _axis(w, g1.shape[2], ww, ww)
    _, _, sy1 = _axis(h, g1.shape[1], wh, wh)
    rb = maps.refiner
    if rb is not None:
        g2 = np.ascontiguousarray(refiner_terms(rb))
        x2, wx2, _ = _axis(w, g2.shape[2], rb.cover[0], ww)
        _, _, sy2 = _axis(h, g2.shape[1], rb.cover[1], wh)
        detail, floor = rb.detail, float(rb.detail_floor)
        core = float(rb.detail_core) / 255.0
    else:
        g2 = np.zeros((0, 1, 1), np.float32)
        x2, wx2, sy2 = x1, wx1, sy1
        detail, floor, core = False, 0.0, 0.0
    ir = np.ascontiguousarray(ir, np.float32)
    vis = np.ascontiguousarray(vis, np.float32)
    if detail:
        b_ir = cv2.sepFilter2D(ir, cv2.CV_32F, _BINOMIAL, _BINOMIAL,
                               borderType=cv2.BORDER_REPLICATE)
        b_vis = cv2.sepFilter2D(vis, cv2.CV_32F, _BINOMIAL, _BINOMIAL,
                                borderType=cv2.BORDER_REPLICATE)
    else:
        b_ir = b_vis = ir
    out_y = np.empty((h, w), np.float32)
    out_f1 = np.empty((h, w), np.float32)
    out_rgb = (np.empty((h, w, 3), np.uint8) if rgb is not None
               else np.empty((0, 0, 3), np.uint8))
    src = np.ascontiguousarray(rgb) if rgb is not None else out_rgb
    blend(src, ir, vis, b_ir, b_vis, g1, x1, wx1, np.float32(sy1), g2, x2, wx2,
          np.float32(sy2), detail, np.float32(floor), np.float32(core), out_rgb, out_y, out_f1)
    return out_y, out_f1, (out_rgb if rgb is not None else None)


def warm() -> None:
    """Compile the kernels now (or load them from numba's cache), so that the first large frame
    of a stream does not wait for the compiler."""
    b = BlendMaps(work=(8, 8), stage1=np.zeros((4, 8, 8), np.float32))
    z = np.zeros((16, 16), np.float32)
    compose_frame(b, z, z, np.zeros((16, 16, 3), np.uint8))
    visible_luma(np.zeros((4, 4, 3), np.uint8))
    merge_luma(z, np.zeros((16, 16, 3), np.uint8), z)
