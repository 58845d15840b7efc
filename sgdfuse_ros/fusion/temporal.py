"""Temporal state at inference: the previous fused frame, carried by the scene's motion, steadies
the current one where the scene is steady and lets it follow where the scene changes.

:class:`TemporalFilter` is a motion-compensated recursive filter on the fused luma:

1. The motion of the step is DIS optical flow (OpenCV, ``FAST`` preset: its own pyramid,
   patches on a quarter-size grid with variational refinement) from the current to the previous
   visible frame, at the frame's size (``scale`` 1, the default). ``scale`` 2 or 4 run it on a
   smaller copy, starting one or two pyramid levels finer so that the flow keeps its sub-pixel
   detail (with the preset's own levels on a half-size copy, what the filter carried was
   blurred: a synthetic pan flickered 0.41 instead of 0.06 grey levels).
2. The previous *output* is warped onto the current frame by it (bilinear).
3. Each pixel takes ``out = fused + k w (warped - fused)`` with
   ``w = ramp(|fused - warped| / tolerance) * ramp(|vis - warped vis| / vis_tolerance)
   * ramp(|ir - warped ir - m| / ir_tolerance)`` (``m``: the median thermal change, a gain
   step of the whole frame; the thermal factor when the thermal frame is given) and
   ``ramp(r) = max(0, 1 - r)``: small differences (the network's shimmer, sensor and
   compression noise, a thermal gain step) are pulled toward the previous output; large ones
   (a person moving against the flow, an occlusion, the flow failing: a source then disagrees
   with its warped predecessor; a warm body moving in the dark, seen by the thermal camera
   alone) pass unchanged, so nothing trails behind moving objects.
4. ``k`` is ``strength``, raised toward 1 (and the tolerance widened) when the visible frame
   repeats its predecessor (mean change under :data:`REPEAT_LEVELS`): cameras and recorders
   that repeat frames would otherwise see the output keep converging on the repeated frame,
   which is flicker where the scene stood still.

Because the output feeds the next frame, a pixel that stays steady converges to a temporal
mean (about ``1 / (1 - strength)`` frames) while anything that changes by more than
``tolerance`` grey levels shows at once. The price: each frame is less faithful to its own
sources' noise and fine edges (the per-frame metrics VIF and Qabf drop; docs/benchmarks.md). A
change of frame size, or :meth:`reset`, starts afresh. Pure numpy + OpenCV; no network, no ROS.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_PRESETS = {'ultrafast': cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            'fast': cv2.DISOPTICAL_FLOW_PRESET_FAST,
            'medium': cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}

#: Mean grey levels of change between a visible frame and its warped predecessor below which
#: the step counts (softly) as a repeated frame.
REPEAT_LEVELS = 1.0


@dataclass(frozen=True)
class TemporalSettings:
    """How strongly the previous output is carried into the current one."""

    #: Largest weight of the warped previous output (0 turns the filter off).
    strength: float = 0.5
    #: Grey levels (0..255) of difference at which the previous output's weight reaches 0.
    tolerance: float = 25.0
    #: The flow runs on a copy this many times smaller than the frame (1, 2 or 4).
    scale: int = 1
    #: Grey levels of disagreement between the visible frame and its warped predecessor at
    #: which the previous output's weight reaches 0 (the flow is wrong there, or the scene
    #: changed).
    vis_tolerance: float = 25.0
    #: Grey levels of local change of the thermal frame against its warped predecessor (after
    #: taking out the frame's overall offset, a gain step) at which the previous output's
    #: weight reaches 0: what moves in the thermal image alone (a warm body in the dark, where
    #: the visible frame stands still) is never held back.
    ir_tolerance: float = 25.0
    #: DIS preset of the filter's flow: ``ultrafast``, ``fast`` or ``medium``.
    preset: str = 'fast'

    def __post_init__(self):
        if not 0.0 <= self.strength < 1.0:
            raise ValueError(f'temporal strength must be in [0, 1), got {self.strength!r}')
        if not self.tolerance > 0:
            raise ValueError(f'temporal tolerance must be > 0 grey levels, got '
                             f'{self.tolerance!r}')
        if not self.ir_tolerance > 0:
            raise ValueError(f'temporal ir_tolerance must be > 0 grey levels, got '
                             f'{self.ir_tolerance!r}')
        if not self.vis_tolerance > 0:
            raise ValueError(f'temporal vis_tolerance must be > 0 grey levels, got '
                             f'{self.vis_tolerance!r}')
        if self.preset not in _PRESETS:
            raise ValueError(f'temporal preset must be one of {tuple(_PRESETS)}, got '
                             f'{self.preset!r}')
        if self.scale not in (1, 2, 4):
            raise ValueError(f'temporal scale must be 1, 2 or 4, got {self.scale!r}')


class TemporalFilter:
    """Motion-compensated recursive filter of fused frames (see the module docstring). Feed the
    frames of one video in order; not thread-safe."""

    def __init__(self, settings: TemporalSettings | None = None):
        self.settings = settings or TemporalSettings()
        self._dis = cv2.DISOpticalFlow_create(_PRESETS[self.settings.preset])
        # on a smaller copy, a finer pyramid level keeps the flow's detail relative to the frame
        shift = {1: 0, 2: 1, 4: 2}[self.settings.scale]
        self._dis.setFinestScale(max(0, self._dis.getFinestScale() - shift))
        self._prev_out: np.ndarray | None = None  # float32 [0, 1], full size
        self._prev_small: np.ndarray | None = None  # uint8 visible gray, flow size
        self._prev_ir: np.ndarray | None = None  # float32 [0, 1] thermal, full size
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.frames = 0

    def reset(self) -> None:
        """Forget the previous frame (the next one passes unchanged)."""
        self._prev_out = self._prev_small = self._prev_ir = None

    def __call__(self, fused: np.ndarray, visible_gray: np.ndarray,
                 thermal: np.ndarray | None = None) -> np.ndarray:
        """The steadied luma (float32 [0, 1]) of ``fused`` (float [0, 1], ``H x W``) given the
        current visible frame as 8-bit gray ``H x W`` and, optionally, the registered thermal
        frame (float [0, 1], ``H x W``: the pipeline's ``FusionResult.ir``)."""
        if fused.shape != visible_gray.shape or fused.ndim != 2 or (
                thermal is not None and thermal.shape != fused.shape):
            raise ValueError(f'fused {fused.shape}, visible {visible_gray.shape} and thermal '
                             f'{None if thermal is None else thermal.shape} must be 2-D of one '
                             f'size')
        s = self.settings
        h, w = fused.shape
        small = visible_gray if s.scale == 1 else cv2.resize(
            visible_gray, (max(8, w // s.scale), max(8, h // s.scale)),
            interpolation=cv2.INTER_AREA)
        fused = np.asarray(fused, np.float32)
        prev, prev_small, prev_ir = self._prev_out, self._prev_small, self._prev_ir
        self._prev_small = small
        ir = None if thermal is None else np.asarray(thermal, np.float32)
        self._prev_ir = ir
        self.frames += 1
        if s.strength == 0 or prev is None or prev.shape != fused.shape \
                or prev_small.shape != small.shape:
            self._prev_out = fused
            return fused
        fx, fy = cv2.split(self._dis.calc(small, prev_small, None))  # current -> previous
        # how far the visible frame itself disagrees with its warped predecessor (small)
        sgx, sgy = self._grid_for(*small.shape)
        prev_vis = cv2.remap(prev_small, cv2.add(sgx, fx), cv2.add(sgy, fy), cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        vis_err = cv2.absdiff(small, prev_vis).astype(np.float32)
        # a repeated visible frame (mean change under REPEAT_LEVELS) is a steady scene: the
        # previous output is kept nearly whole instead of converging over several frames
        repeat = max(0.0, 1.0 - float(vis_err.mean()) / REPEAT_LEVELS)
        strength = s.strength + (1.0 - s.strength) * 0.9 * repeat
        tolerance = s.tolerance * (1.0 + 3.0 * repeat)
        vis_gate = np.maximum(0.0, 1.0 - vis_err * (1.0 / s.vis_tolerance))
        gx, gy = self._grid_for(h, w)
        if s.scale != 1:  # flow and gate to full size (cv2 keeps pixel centres aligned)
            fx, fy, vis_gate = (cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
                                for m in (fx, fy, vis_gate))
        mx = cv2.scaleAdd(fx, float(s.scale), gx)
        my = cv2.scaleAdd(fy, float(s.scale), gy)
        warped = cv2.remap(prev, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        diff = cv2.subtract(warped, fused)
        weight = np.abs(diff)
        weight *= -255.0 / tolerance
        weight += 1.0
        np.maximum(weight, 0.0, out=weight)
        weight *= vis_gate
        if ir is not None and prev_ir is not None and prev_ir.shape == ir.shape:
            weight *= self._thermal_gate(ir, prev_ir, mx, my)
        weight *= strength
        diff *= weight
        out = cv2.add(fused, diff)
        self._prev_out = out
        return out

    def _thermal_gate(self, ir: np.ndarray, prev_ir: np.ndarray, mx: np.ndarray,
                      my: np.ndarray) -> np.ndarray:
        """``ramp(|local thermal change| / ir_tolerance)``: the thermal frame against its
        warped predecessor, less the median change (a gain step of the whole frame)."""
        change = cv2.subtract(ir, cv2.remap(prev_ir, mx, my, cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE))
        offset = float(np.median(change[::8, ::8]))
        gate = np.abs(change - offset)
        gate *= -255.0 / self.settings.ir_tolerance
        gate += 1.0
        return np.maximum(gate, 0.0, out=gate)

    def _grid_for(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinate grids of an ``h x w`` image (the last two sizes kept)."""
        grid = self._grids.get((h, w))
        if grid is None:
            if len(self._grids) >= 2:
                self._grids.clear()
            grid = self._grids[(h, w)] = tuple(np.meshgrid(np.arange(w, dtype=np.float32),
                                                           np.arange(h, dtype=np.float32)))
        return grid
