"""Masks that move with the scene between refreshes (``MaskCarrier``).

Masks are refreshed a few times a second (their worker runs at ``mask_rate``) while frames come
at the camera rate. Reused as they are, a mask stays put while the scene moves and then snaps
to the new position at the next refresh, which shows as a jump in the fused video. The carrier
keeps each refresh together with a small copy of the frame it was computed on and, per frame:

* **carries** the masks with the scene: the global translation between that reference frame
  and the current one is estimated by phase correlation (OpenCV ``phaseCorrelate`` with a
  Hanning window) on copies at most :data:`WORK_SIDE` pixels wide, and the masks are shifted
  by it (``warpAffine``, bilinear, edge pixels repeated). A weak correlation peak (below
  ``min_response``: a cut, a flash, a scene without texture) or a shift beyond ``max_shift``
  of the frame leaves the masks where they were;
* **blends** a fresh refresh in over ``blend_frames`` frames, ``(1 - a) old + a new`` with
  ``a = k / blend_frames``, both carried to the current frame, instead of snapping to it.

Start-up: the refiner reads its masks, so fusing the first frames with empty masks and then
switching to real ones is a jump (a few grey levels on the shipped weights) that no short
blend hides. A stream should therefore have its first masks before its first fused frame
(compute them synchronously once); the first refresh is then used as it is. A stream that
must fuse before its first masks can set ``fade_in`` so that the first refresh fades in from
empty masks over ``blend_frames`` frames instead of snapping.

Costs at 640x480 (2-core CPU): a few milliseconds per frame (the correlation of two copies of
at most 160 x 120 pixels, and a shift of two masks; two while blending). ROS-free; the stream
calls :meth:`MaskCarrier.update` on each refresh and :meth:`MaskCarrier.masks_for` per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Width (and height) bound of the copies the motion is estimated on.
WORK_SIDE = 160


@dataclass
class _Reference:
    """One refresh: its masks (``2 x H x W`` float32) and the small luma it was computed on."""

    masks: np.ndarray
    small: np.ndarray


def _small_luma(frame_luma: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """A float32 copy of ``frame_luma`` whose longest side is at most ``side``, and the scale
    factor (small / full)."""
    x = np.asarray(frame_luma)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f'frame_luma must be a non-empty 2-D array, got shape {x.shape}')
    x = x.astype(np.float32) * (1.0 / 255.0 if x.dtype == np.uint8 else 1.0)
    h, w = x.shape
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        size = (max(int(round(w * scale)), 8), max(int(round(h * scale)), 8))
        x = cv2.resize(x, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(x), scale


class MaskCarrier:
    """Carry masks with the scene between refreshes and blend refreshes in (module docstring).

    ``blend_frames``: frames over which a refresh replaces the previous masks (1: at once);
    ``min_response``: phase-correlation peak below which no motion is applied;
    ``max_shift``: largest accepted shift, as a fraction of the frame's width / height;
    ``fade_in``: the first refresh fades in from empty masks (see the module docstring).
    """

    def __init__(self, *, blend_frames: int = 3, min_response: float = 0.05,
                 max_shift: float = 0.25, work_side: int = WORK_SIDE, fade_in: bool = False):
        if blend_frames < 1:
            raise ValueError(f'blend_frames must be >= 1, got {blend_frames}')
        if not 0.0 <= min_response < 1.0:
            raise ValueError(f'min_response must be in [0, 1), got {min_response}')
        if not 0.0 < max_shift <= 1.0:
            raise ValueError(f'max_shift must be in (0, 1], got {max_shift}')
        if work_side < 16:
            raise ValueError(f'work_side must be >= 16, got {work_side}')
        self.blend_frames = int(blend_frames)
        self.min_response = float(min_response)
        self.max_shift = float(max_shift)
        self.work_side = int(work_side)
        self.fade_in = bool(fade_in)
        self._new: _Reference | None = None
        self._old: _Reference | None = None
        self._age = 0  # frames since the newest refresh
        self._window: np.ndarray | None = None
        #: The last estimated shift of the newest refresh, full-resolution pixels ``(dx, dy)``.
        self.last_shift: tuple[float, float] = (0.0, 0.0)

    def reset(self) -> None:
        """Forget every refresh (a new stream)."""
        self._new = self._old = None
        self._age = 0

    def update(self, masks: tuple[np.ndarray, np.ndarray] | np.ndarray,
               frame_luma: np.ndarray) -> None:
        """A refresh: ``masks`` (IR, VIS; ``H x W`` in ``[0, 1]``, or ``2 x H x W``) computed on
        the frame whose luma is ``frame_luma`` (same ``H x W``)."""
        m = np.stack([np.asarray(a, np.float32) for a in masks]) if isinstance(
            masks, (tuple, list)) else np.asarray(masks, np.float32)
        if m.ndim != 3 or m.shape[0] != 2:
            raise ValueError(f'masks must be two H x W arrays, got shape {m.shape}')
        if m.shape[1:] != np.shape(frame_luma):
            raise ValueError(f'masks are {m.shape[1:]} but the frame is {np.shape(frame_luma)}')
        small, _ = _small_luma(frame_luma, self.work_side)
        first = self._new is None
        if self._new is not None:
            # The masks shown now become the old side of the blend (a blend in progress is
            # cut short at its current state only through the newest refresh: cheap and calm).
            self._old = self._new
        self._new = _Reference(np.ascontiguousarray(m), small)
        self._age = 0 if (self.fade_in or not first) else self.blend_frames

    def masks_for(self, frame_luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The masks for the frame whose luma is ``frame_luma``: the refreshes carried to it
        and blended; empty masks before the first refresh."""
        h, w = np.shape(frame_luma)[:2]
        if self._new is None:
            z = np.zeros((h, w), np.float32)
            return z, z.copy()
        if self._new.masks.shape[1:] != (h, w):
            raise ValueError(f'frame is {h}x{w} but the masks are '
                             f'{self._new.masks.shape[1]}x{self._new.masks.shape[2]}')
        small, scale = _small_luma(frame_luma, self.work_side)
        self._age += 1
        a = min(1.0, self._age / self.blend_frames)
        new, self.last_shift = self._carry(self._new, small, scale)
        if a < 1.0:
            old = (self._carry(self._old, small, scale)[0] if self._old is not None
                   else np.zeros_like(new))
            out = old + np.float32(a) * (new - old)
        else:
            self._old = None
            out = new
        return out[0], out[1]

    def _shift(self, ref: np.ndarray, cur: np.ndarray) -> tuple[float, float] | None:
        """Translation ``(dx, dy)`` of ``cur`` against ``ref`` in small-copy pixels, or None
        when the correlation is not to be trusted."""
        if ref.shape != cur.shape or min(ref.shape) < 2:  # no window on a 1-pixel side
            return None
        if self._window is None or self._window.shape != ref.shape:
            self._window = cv2.createHanningWindow(ref.shape[::-1], cv2.CV_32F)
        # Copies: OpenCV applies the window to its inputs in place.
        (dx, dy), response = cv2.phaseCorrelate(ref.copy(), cur.copy(), self._window)
        h, w = ref.shape
        if (response < self.min_response or abs(dx) > self.max_shift * w
                or abs(dy) > self.max_shift * h):
            return None
        return dx, dy

    def _carry(self, ref: _Reference, small: np.ndarray, scale: float
               ) -> tuple[np.ndarray, tuple[float, float]]:
        """``ref``'s masks shifted to the current frame, and the shift in frame pixels."""
        d = self._shift(ref.small, small)
        if d is None or (abs(d[0]) < 0.05 * scale and abs(d[1]) < 0.05 * scale):
            return ref.masks.copy(), (0.0, 0.0)
        dx, dy = d[0] / scale, d[1] / scale
        h, w = ref.masks.shape[1:]
        mat = np.float32([[1, 0, dx], [0, 1, dy]])
        moved = np.stack([cv2.warpAffine(m, mat, (w, h), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REPLICATE) for m in ref.masks])
        return moved, (dx, dy)
