"""Flow-compensated flicker of a video: how much a frame differs from its predecessor moved by
the scene's own motion.

The measure the video-fusion literature calls flowD (TemCoCo, VideoFusion): optical flow
between two consecutive frames of a reference video (the visible camera) warps the previous
output onto the current one; the flicker of the step is the mean absolute difference between
the current output and the warped previous output, in grey levels (0..255), over the pixels
where the flow can be trusted:

* the backward flow (current -> previous) and the forward flow (previous -> current) agree:
  ``|w_b(x) + w_f(x + w_b(x))|^2 < 0.01 (|w_b|^2 + |w_f|^2) + 0.5`` px^2 (the forward-backward
  check of Sundaram et al., ECCV 2010); occluded and mismatched pixels fail it;
* ``x + w_b(x)`` lies inside the previous frame, at least ``margin`` pixels from its border.

The flow is OpenCV's DIS optical flow (``MEDIUM`` preset by default; Farneback's as a
cross-check) on the 8-bit reference
frames, computed once per step (:class:`StepFlow`) and applied to every method's output, so
methods are compared on the same pixels with the same motion. Published flowD figures use other
flow networks; compare methods side by side with one flow, never across flows.

A fused output whose frames move exactly with the scene scores what the reference video itself
scores where the flow is right (its residual is the flow's error and the sensor noise); one
that shimmers, or depends on where the image sits on a down-sampling grid, scores more.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: DIS presets by name.
PRESETS = {'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
           'fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
           'medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


#: Flow methods of :meth:`StepFlow.between`: DIS with a preset, or Farneback (a cross-check
#: with a flow of another family).
FLOWS = (*PRESETS, 'farneback')


def dis_flow(a: np.ndarray, b: np.ndarray, preset: str = 'medium') -> np.ndarray:
    """Dense flow ``H x W x 2`` (x, y) from 8-bit gray ``a`` to ``b``:
    ``a(p) ~ b(p + flow(p))``; ``preset`` one of :data:`FLOWS`."""
    if preset not in FLOWS:
        raise ValueError(f'preset must be one of {FLOWS}, got {preset!r}')
    for name, img in (('a', a), ('b', b)):
        if img.ndim != 2 or img.dtype != np.uint8:
            raise ValueError(f'{name} must be an 8-bit gray image, got {img.dtype} {img.shape}')
    if a.shape != b.shape:
        raise ValueError(f'frames differ in size: {a.shape} vs {b.shape}')
    if preset == 'farneback':
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 5, 15, 3, 5, 1.2, 0)
    return cv2.DISOpticalFlow_create(PRESETS[preset]).calc(a, b, None)


def warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``img`` sampled at ``p + flow(p)`` (bilinear, border replicated): the previous frame
    moved onto the current one when ``flow`` is the backward flow current -> previous."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(np.asarray(img, np.float32), gx + flow[..., 0], gy + flow[..., 1],
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass
class StepFlow:
    """The motion of one step (previous -> current frame) and the pixels it is trusted on."""

    backward: np.ndarray
    """Flow current -> previous, ``H x W x 2``."""
    valid: np.ndarray
    """Pixels of the current frame whose flow passes the forward-backward check, bool."""

    @classmethod
    def between(cls, prev: np.ndarray, cur: np.ndarray, *, preset: str = 'medium',
                margin: int = 8) -> 'StepFlow':
        """Flow between two 8-bit gray reference frames (see the module docstring)."""
        back = dis_flow(cur, prev, preset)
        fwd = dis_flow(prev, cur, preset)
        fwd_at = np.stack([warp(fwd[..., 0], back), warp(fwd[..., 1], back)], axis=-1)
        err = np.sum((back + fwd_at) ** 2, axis=-1)
        mag = np.sum(back ** 2, axis=-1) + np.sum(fwd_at ** 2, axis=-1)
        h, w = cur.shape
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        x, y = gx + back[..., 0], gy + back[..., 1]
        inside = (x >= margin) & (x <= w - 1 - margin) & (y >= margin) & (y <= h - 1 - margin)
        return cls(backward=back, valid=(err < 0.01 * mag + 0.5) & inside)

    @property
    def coverage(self) -> float:
        """Share of the frame's pixels the step is measured on."""
        return float(self.valid.mean())

    def flicker(self, prev: np.ndarray, cur: np.ndarray) -> float:
        """Mean ``|cur - warp(prev)|`` over the valid pixels, in the units of the images
        (grey levels for 0..255 images); NaN when no pixel is valid."""
        if prev.shape != cur.shape or cur.shape != self.valid.shape:
            raise ValueError(f'frames {prev.shape} and {cur.shape} do not match the flow '
                             f'{self.valid.shape}')
        if not self.valid.any():
            return float('nan')
        diff = np.abs(np.asarray(cur, np.float32) - warp(prev, self.backward))
        return float(diff[self.valid].mean())


def sequence_flicker(frames: list[np.ndarray], steps: list[StepFlow]) -> np.ndarray:
    """Flicker of each step of ``frames`` (``len(frames) - 1`` values) on the given flows."""
    if len(steps) != len(frames) - 1:
        raise ValueError(f'{len(frames)} frames need {len(frames) - 1} step flows, got '
                         f'{len(steps)}')
    return np.asarray([s.flicker(a, b) for s, a, b in zip(steps, frames[:-1], frames[1:])])
