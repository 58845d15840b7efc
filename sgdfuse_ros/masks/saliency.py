"""Non-learned salient regions: the ``saliency`` provider, and the box prompts of the SAM family.

Both modalities are analysed at a small working size (longest side :data:`WORK_SIDE` pixels),
which keeps the cost at a few milliseconds per frame at any input size.

* **Thermal: hot regions.** With ``m`` the median and ``p`` the 99.5th percentile of the
  (smoothed) frame, ``s = max(p - m, MIN_SPREAD)`` and ``B`` a wide Gaussian blur (the local
  background), hotness is ``h = GLOBAL_WEIGHT * (I - m) / s + (I - B) / s`` where ``I > m``, and 0
  elsewhere. A pixel is hot when ``h > THERMAL_THRESHOLD``: above the scene's typical level and
  clearly above its surroundings, so large warm background (a sunlit road, a wall) counts less
  than people, engines and lamps.
* **Visible: high-contrast regions.** A centre-surround contrast (differences of Gaussians of
  the L, a, b channels of CIELAB, or of the luma for gray frames, at two surround sizes and
  against the frame's mean) plus the
  spectral residual of the luma (Hou and Zhang, CVPR 2007), each scaled by its 99th percentile.
  Salient where the sum exceeds its mean plus one standard deviation.

Hot / salient pixels are cleaned by a morphological opening and closing and split into
connected components. Components smaller than :data:`MIN_AREA` of the frame are dropped, the
rest are ranked by mean saliency x area ** 0.25 (salient compact objects first; components over
:data:`LARGE_AREA` of the frame last), and the best ``max_regions`` are kept. Each gives a box
(frame pixels, with a :data:`BOX_MARGIN` margin) and a confidence (mean saliency over the
component, in ``[0, 1]``).

The ``saliency`` provider's mask is the soft saliency map (``h / (2 * threshold)`` clipped to
``[0, 1]``; each hot pixel is at least 0.5) inside the kept components, zero elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
import time

import cv2
import numpy as np

from sgdfuse_ros.core.imaging import to_float
from .base import MaskOptions, MaskResult, ProviderInfo, check_frames, register_provider

WORK_SIDE = 256
MIN_SPREAD = 0.04
THERMAL_THRESHOLD = 0.35
GLOBAL_WEIGHT = 0.25
LARGE_AREA = 0.25
MIN_AREA = 0.0002
BOX_MARGIN = 0.1


@dataclass
class Regions:
    """Salient regions of one frame.

    ``saliency``: soft map in ``[0, 1]`` at the working size (``h x w``); ``labels``: component
    labels at the working size, ``k + 1`` for the k-th kept region, 0 elsewhere; ``boxes``:
    ``N x 4`` ``x0 y0 x1 y1`` in frame pixels (ranked, with margin); ``scores``: ``N`` in
    ``[0, 1]``; ``frame_size``: ``(H, W)`` of the frame.
    """

    saliency: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    frame_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.boxes)

    def saliency_at(self, size: tuple[int, int]) -> np.ndarray:
        """The soft saliency map resized to ``(H, W)``."""
        h, w = size
        return cv2.resize(self.saliency, (w, h), interpolation=cv2.INTER_LINEAR)

    def mask(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The saliency provider's channel: the soft map inside the kept regions, at ``size``
        (default the frame's)."""
        h, w = size or self.frame_size
        kept = (self.labels > 0).astype(np.uint8)
        kept = cv2.dilate(kept, np.ones((3, 3), np.uint8))
        small = self.saliency * kept
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(out, 0.0, 1.0).astype(np.float32)


def _work_size(shape: tuple[int, int], side: int) -> tuple[int, int]:
    h, w = shape
    s = min(1.0, side / max(h, w))
    return max(8, round(w * s)), max(8, round(h * s))  # (W, H) for cv2


def _components(binary: np.ndarray, score: np.ndarray, max_regions: int, frame_size,
                conf_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranked components of a binary map: ``labels`` (1..N), ``boxes`` (frame px), ``scores``."""
    h, w = binary.shape
    n, lab, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    labels = np.zeros((h, w), np.int32)
    if n <= 1:
        return labels, np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    flat = lab.reshape(-1)
    mass = np.bincount(flat, weights=score.reshape(-1), minlength=n)
    area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    min_area = max(4.0, MIN_AREA * h * w)
    cand = [i for i in range(1, n) if area[i] >= min_area]
    # Rank by mean saliency x area ** 0.25: salient compact objects before large, mildly salient
    # background (warm road, sky line); regions over LARGE_AREA of the frame come last.
    rank = mass / np.maximum(area, 1.0) ** 0.75
    cand.sort(key=lambda i: (area[i] > LARGE_AREA * h * w, -rank[i]))
    cand = cand[:max_regions]
    fh, fw = frame_size
    sx, sy = fw / w, fh / h
    boxes, scores = [], []
    for k, i in enumerate(cand):
        labels[lab == i] = k + 1
        x, y, bw, bh = (stats[i, cv2.CC_STAT_LEFT], stats[i, cv2.CC_STAT_TOP],
                        stats[i, cv2.CC_STAT_WIDTH], stats[i, cv2.CC_STAT_HEIGHT])
        mx, my = max(1.0, BOX_MARGIN * bw), max(1.0, BOX_MARGIN * bh)
        x0, y0 = max(0.0, (x - mx) * sx), max(0.0, (y - my) * sy)
        x1, y1 = min(fw - 1.0, (x + bw + mx) * sx), min(fh - 1.0, (y + bh + my) * sy)
        boxes.append((x0, y0, x1, y1))
        scores.append(min(1.0, mass[i] / area[i] * conf_scale))
    return (labels, np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(scores, np.float32))


def _clean(binary: np.ndarray) -> np.ndarray:
    b = binary.astype(np.uint8)
    b = cv2.morphologyEx(b, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    return cv2.morphologyEx(b, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))


def thermal_hotness(ir: np.ndarray, work_side: int = WORK_SIDE) -> np.ndarray:
    """Hotness ``h`` (see the module docstring) at the working size."""
    small = cv2.resize(to_float(ir), _work_size(ir.shape, work_side), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    med = float(np.median(small))
    spread = max(float(np.percentile(small, 99.5)) - med, MIN_SPREAD)
    bg = cv2.GaussianBlur(small, (0, 0), max(small.shape) / 10.0)
    glob = (small - med) / spread
    hot = np.where(glob > 0, GLOBAL_WEIGHT * glob + (small - bg) / spread, 0.0)
    return np.maximum(hot, 0.0).astype(np.float32)


def thermal_regions(ir: np.ndarray, max_regions: int = 8,
                    work_side: int = WORK_SIDE) -> Regions:
    """Hot connected regions of a thermal frame (float ``[0, 1]`` or integer), ranked."""
    hot = thermal_hotness(ir, work_side)
    binary = _clean(hot > THERMAL_THRESHOLD)
    conf = 1.0 / (2.0 * THERMAL_THRESHOLD)
    labels, boxes, scores = _components(binary, hot, max_regions, ir.shape[:2], conf)
    soft = np.clip(hot * conf, 0.0, 1.0).astype(np.float32)
    return Regions(soft, labels, boxes, scores, tuple(ir.shape[:2]))


def _spectral_residual(luma: np.ndarray, side: int = 64) -> np.ndarray:
    h, w = luma.shape
    s = side / max(h, w)
    small = cv2.resize(luma, (max(8, round(w * s)), max(8, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    spec = np.fft.fft2(small)
    log_amp = np.log(np.abs(spec) + 1e-8)
    phase = np.angle(spec)
    residual = log_amp - cv2.blur(log_amp.astype(np.float32), (3, 3))
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
    sal = cv2.GaussianBlur(sal.astype(np.float32), (0, 0), 2.0)
    return cv2.resize(sal, (w, h), interpolation=cv2.INTER_LINEAR)


def _scaled(x: np.ndarray) -> np.ndarray:
    ref = float(np.percentile(x, 99))
    return x / ref if ref > 1e-8 else np.zeros_like(x)


def visible_saliency(visible: np.ndarray, work_side: int = WORK_SIDE) -> np.ndarray:
    """Contrast saliency of a visible frame at the working size (about 0-2, see the module
    docstring)."""
    size = _work_size(visible.shape[:2], work_side)
    if visible.ndim == 3:
        small = cv2.resize(visible, size, interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(small.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2Lab)
        chans = [lab[:, :, 0] / 100.0, lab[:, :, 1] / 128.0, lab[:, :, 2] / 128.0]
        luma = chans[0]
    else:
        luma = cv2.resize(to_float(visible), size, interpolation=cv2.INTER_AREA)
        chans = [luma]
    side = max(luma.shape)
    contrast = np.zeros_like(luma)
    border = np.zeros_like(luma)
    b = max(2, side // 32)
    for c in chans:
        centre = cv2.GaussianBlur(c, (0, 0), 1.5)
        for surround in (side / 24.0, side / 8.0):
            contrast += np.abs(centre - cv2.GaussianBlur(c, (0, 0), surround))
        # Boundary prior: contrast to the nearest-looking frame border (sky, road and walls
        # touch a border; objects mostly do not).
        strips = (c[:b].mean(), c[-b:].mean(), c[:, :b].mean(), c[:, -b:].mean())
        border += np.min(np.stack([np.abs(centre - float(m)) for m in strips]), axis=0)
    contrast += border
    return (_scaled(contrast) + _scaled(_spectral_residual(luma))).astype(np.float32)


def visible_regions(visible: np.ndarray, max_regions: int = 8,
                    work_side: int = WORK_SIDE) -> Regions:
    """High-contrast connected regions of a visible frame (RGB ``uint8`` or luma), ranked."""
    sal = visible_saliency(visible, work_side)
    thr = float(sal.mean() + sal.std())
    binary = _clean(sal > thr)
    conf = 1.0 / (2.0 * max(thr, 1e-6))
    labels, boxes, scores = _components(binary, sal, max_regions, visible.shape[:2], conf)
    soft = np.clip(sal * conf, 0.0, 1.0).astype(np.float32)
    return Regions(soft, labels, boxes, scores, tuple(visible.shape[:2]))


def frame_regions(ir: np.ndarray, visible: np.ndarray, max_regions: int = 8
                  ) -> tuple[Regions, Regions]:
    """Regions of both modalities of a (checked) frame pair."""
    return thermal_regions(ir, max_regions), visible_regions(visible, max_regions)


class SaliencyProvider:
    """The ``saliency`` provider: hot thermal regions and high-contrast visible regions."""

    name = 'saliency'
    #: Priority of a :class:`.worker.MaskWorker` running this provider (see there): this
    #: provider holds the GIL for much of its ~20 ms, so it must not run at idle priority.
    worker_priority = 'normal'

    def __init__(self, opts: MaskOptions | None = None):
        self.max_regions = (opts or MaskOptions()).max_regions

    def describe(self) -> str:
        return f'saliency (non-learned, up to {self.max_regions} regions per modality)'

    def backend_report(self) -> dict[str, str]:
        """No networks: ``{}``."""
        return {}

    def __call__(self, ir: np.ndarray, visible: np.ndarray) -> MaskResult:
        t0 = time.perf_counter()
        ir, visible = check_frames(ir, visible)
        r_ir, r_vis = frame_regions(ir, visible, self.max_regions)
        t1 = time.perf_counter()
        m_ir, m_vis = r_ir.mask(), r_vis.mask()
        t2 = time.perf_counter()
        timings = {'prompts': (t1 - t0) * 1e3, 'encoder': 0.0, 'decoder': 0.0,
                   'merge': (t2 - t1) * 1e3, 'total': (t2 - t0) * 1e3}
        return MaskResult(m_ir, m_vis, timings, provider=self.name,
                          boxes={'ir': r_ir.boxes, 'vis': r_vis.boxes},
                          instances={'ir': len(r_ir), 'vis': len(r_vis)})


register_provider(ProviderInfo('saliency', SaliencyProvider, lambda: None,
                               'hot thermal regions + high-contrast visible regions (no model)'))
