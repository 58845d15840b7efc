"""The frame-size work of :mod:`.compose` in few passes over the frame, compiled with numba.

At 1920x1080 the formulas of :func:`.compose.compose` in numpy are some thirty passes over
8 MB float arrays plus the colour merge; here:

1. the maps of both networks are folded at the working size into six coefficients
   (:func:`folded_terms`) and up-sampled by OpenCV;
2. the 5-tap binomial blurs of both sources (OpenCV, for the high-pass terms);
3. one pass evaluates the blend and writes the fused luma and the RGB frame with its luma
   replaced (``RGB + (Y_fused - Y)``: the same chroma, as the pipeline's merge)
   (:func:`compose_frame`).

Rows run in parallel on numba's threads. numba is an optional dependency: :func:`available`
says whether this path can run; the pipeline falls back to the numpy one. The kernels compile
on first use (seconds) and are cached on disk (numba's cache, beside this file or in the
user's cache folder); :func:`warm` compiles them ahead.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading

import cv2
import numpy as np

from .compose import BlendMaps, refiner_terms, stage1_terms, upsample

_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0
_kernels = None


def available() -> bool:
    """numba is installed and not switched off (``SGDFUSE_NUMBA=0``: the numpy and OpenCV
    path, e.g. to compare); cheap: looks for it, imports nothing."""
    if os.environ.get('SGDFUSE_NUMBA', '1') == '0':
        return False
    return _installed()


@functools.lru_cache(maxsize=1)
def _installed() -> bool:
    """Looked for once: the pipeline asks on every frame."""
    return importlib.util.find_spec('numba') is not None


def _build():
    """Compile (or load from numba's cache) the blend kernel."""
    global _kernels
    if _kernels is not None:
        return _kernels
    import numba

    jit = numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)

    @jit
    def blend(rgb, ir, vis, b_ir, b_vis, m0, m1, m2, m3, m4, m5, floor, core, out_rgb, out_y):
        h, w = ir.shape
        color = out_rgb.shape[0] > 0
        zero, one, top = np.float32(0.0), np.float32(1.0), np.float32(255.0)
        for y in numba.prange(h):
            for x in range(w):
                i, s = ir[y, x], vis[y, x]
                hi, hv = i - b_ir[y, x], s - b_vis[y, x]
                sel = hi if abs(hi) >= abs(hv) else hv
                sel -= min(max(sel, -core), core)
                val = (m0[y, x] * i + m1[y, x] * s + m2[y, x] + m3[y, x] * max(i, s)
                       + m4[y, x] * hi + m5[y, x] * hv + floor * sel)
                out_y[y, x] = min(max(val, zero), one)
            if color:
                for x in range(w):
                    d = (out_y[y, x] - vis[y, x]) * top + np.float32(0.5)
                    out_rgb[y, x, 0] = np.uint8(min(max(rgb[y, x, 0] + d, zero), top))
                    out_rgb[y, x, 1] = np.uint8(min(max(rgb[y, x, 1] + d, zero), top))
                    out_rgb[y, x, 2] = np.uint8(min(max(rgb[y, x, 2] + d, zero), top))

    _kernels = blend
    return _kernels


_scratch = threading.local()
_launch = threading.Lock()


def _buffers(shape: tuple[int, int]) -> list[np.ndarray]:
    """Eight float32 frame-sized scratch arrays of this thread (the up-sampled maps and the
    blurs), kept from frame to frame: a frame does not fault in 64 MB of fresh pages."""
    held = getattr(_scratch, 'arrays', None)
    if held is None or held[0].shape != shape:
        held = _scratch.arrays = [np.empty(shape, np.float32) for _ in range(8)]
    return held


def release_scratch() -> None:
    """Let go of this thread's scratch arrays (a stream of large frames ended)."""
    _scratch.arrays = None


def folded_terms(maps: BlendMaps) -> np.ndarray:
    """Both networks' maps as six coefficients at the working size, of ``IR, VIS, 1,
    max(IR, VIS), HP(IR), HP(VIS)``: the refiner's (up-sampled to the working size) times
    stage 1's. One approximation: stage 1's F1 is not clamped to ``[0, 1]`` before the
    refiner's blend (the result is); it differs from :func:`.compose.compose` by more than one
    8-bit step on about 0.2% of the pixels (where F1 saturates), by 0.02 on average."""
    a, b, c, t = stage1_terms(maps.stage1)
    rb = maps.refiner
    if rb is None:
        zero = np.zeros_like(a)
        return np.stack([a, b, c, t, zero, zero])
    work = maps.work
    k = [upsample(x, rb.cover, work, work) for x in refiner_terms(rb)]
    if not rb.detail:
        k += [np.zeros_like(a), np.zeros_like(a)]
    return np.stack([k[0] * a + k[1], k[0] * b + k[2], k[0] * c + k[3], k[0] * t, k[4], k[5]])


def compose_frame(maps: BlendMaps, ir: np.ndarray, vis: np.ndarray,
                  rgb: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(fused luma, image)`` at the size of ``ir`` / ``vis`` (float32 ``[0, 1]``, one size):
    :func:`.compose.compose` with the maps folded (:func:`folded_terms`), and with ``rgb``
    (``uint8`` RGB of that size) the fused RGB frame (its luma replaced), else ``image`` None.
    The six maps are up-sampled by OpenCV, the rest is one parallel pass."""
    blend = _build()
    h, w = ir.shape
    buf = _buffers((h, w))
    terms = [cv2.resize(x, (w, h), dst=buf[k], interpolation=cv2.INTER_LINEAR)
             if x.shape != (h, w) else x for k, x in enumerate(folded_terms(maps))]
    rb = maps.refiner
    floor = float(rb.detail_floor) if rb is not None and rb.detail else 0.0
    core = float(rb.detail_core) / 255.0 if floor else 0.0
    ir = np.ascontiguousarray(ir, np.float32)
    vis = np.ascontiguousarray(vis, np.float32)
    b_ir = cv2.sepFilter2D(ir, cv2.CV_32F, _BINOMIAL, _BINOMIAL, dst=buf[6],
                           borderType=cv2.BORDER_REPLICATE)
    b_vis = cv2.sepFilter2D(vis, cv2.CV_32F, _BINOMIAL, _BINOMIAL, dst=buf[7],
                            borderType=cv2.BORDER_REPLICATE)
    out_y = np.empty((h, w), np.float32)
    out_rgb = (np.empty((h, w, 3), np.uint8) if rgb is not None
               else np.empty((0, 0, 3), np.uint8))
    src = np.ascontiguousarray(rgb) if rgb is not None else out_rgb
    with _launch:  # numba's default (workqueue) threads take one parallel launch at a time
        blend(src, ir, vis, b_ir, b_vis, *terms, np.float32(floor), np.float32(core), out_rgb,
              out_y)
    return out_y, (out_rgb if rgb is not None else None)


def warm() -> None:
    """Compile the kernels now (or load them from numba's cache), so that the first large frame
    of a stream does not wait for the compiler."""
    b = BlendMaps(work=(8, 8), stage1=np.zeros((4, 8, 8), np.float32))
    z = np.zeros((16, 16), np.float32)
    compose_frame(b, z, z, np.zeros((16, 16, 3), np.uint8))
