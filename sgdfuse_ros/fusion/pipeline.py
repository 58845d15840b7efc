"""A frame pair in, a fused frame out: the ROS-free fusion pipeline.

Stages, each timed (milliseconds, in :attr:`FusionResult.timings`):

``thermal``   thermal gain (mono16 -> [0, 1]) and registration into the visible frame
``color``     visible luma split (and, at the end, ``merge``: fused luma + visible chroma)
``resize``    to the working resolution, when one is set or the frame is over budget (and back,
              for a method without blend maps)
``masks``     semantic masks, for methods that use them (streaming callers pass cached masks)
``fuse``      the fusion method itself (networks add their own sub-stages, e.g. ``stage1``)
``compose``   a method with blend maps (``stage1``, ``sgdfuse``) run at a working size smaller
              than the frame: its maps blend the sources at the frame's own size
              (:mod:`.compose`), so the fused frame keeps the cameras' full detail

Memory is bounded by the configuration, not by the input: the method runs on at most
``max_pixels`` pixels (:mod:`sgdfuse_ros.core.budget`; default 1920x1080). A larger frame is
fused at the largest working size within the budget that keeps its aspect and brought back to
the visible frame's size (``oversize='resize'``, the default), or refused with a
:class:`~sgdfuse_ros.core.budget.FrameTooLarge` error (``oversize='refuse'``). What stays at
the frame's own size (thermal gain, colour conversion, the result) is per-pixel work, done in
bands of rows for large frames. When the working size changes (a burst of large frames ends),
the C heap's free pages go back to the system (the ONNX Runtime backend shrinks its arena on
a change of input shape), so a pipeline's memory returns to its level for the frames it sees
now.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import time
from typing import Any

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.budget import (DEFAULT_MAX_PIXELS, FrameTooLarge, PixelBudget,
                                     pixels_text)
from sgdfuse_ros.core.imaging import ImageError, ThermalGain
from sgdfuse_ros.core.memory import release_heap
from . import compose_fast, medical
from .compose import compose
from .methods import FusionMethod, build_method

__all__ = ['DEFAULT_MAX_PIXELS', 'FrameTooLarge', 'FusionPipeline', 'FusionResult',
           'OUTPUT_MODES', 'PipelineConfig']

OUTPUT_MODES = ('color', 'mono')
#: Frames of more pixels than this have their per-pixel colour work done in bands of rows, so
#: its float temporaries stay a few megabytes whatever the frame size.
BAND_PIXELS = 1 << 21


@dataclass
class PipelineConfig:
    """Everything the pipeline needs; validated once in :class:`FusionPipeline`."""

    method: str = 'auto'
    #: Options for the method's factory (``weights``, ``backend``, ``steps``, ``teacher``...).
    method_options: dict[str, Any] = field(default_factory=dict)
    #: Mask provider for methods that use masks (see :mod:`.masks`); ``auto`` picks the best.
    mask_provider: str = 'auto'
    mask_options: dict[str, Any] = field(default_factory=dict)
    #: Thermal -> visible homography (3x3), or None when the pair is already registered.
    homography: np.ndarray | None = None
    #: ``(W, H)`` the method runs at, or None for the visible frame's own size; within
    #: ``max_pixels`` (``resize``: scaled down to it, keeping its aspect; ``refuse``: an error).
    work_size: tuple[int, int] | None = None
    #: Most pixels the method runs on (None or 0: no limit); also takes ``'1920x1080'``.
    max_pixels: int | str | None = DEFAULT_MAX_PIXELS
    #: A frame over ``max_pixels``: ``resize`` (fused at the largest working size within the
    #: budget, aspect kept, result at the visible frame's size) or ``refuse``
    #: (:class:`FrameTooLarge`).
    oversize: str = 'resize'
    #: ``color`` restores the visible chroma (when the visible frame has colour); ``mono`` not.
    output: str = 'color'
    #: A method with blend maps run at a working size smaller than the frame: blend the
    #: frame's own sources with its maps (True, :mod:`.compose`) or scale its output up.
    full_resolution_blend: bool = True
    thermal_low_percentile: float = 1.0
    thermal_high_percentile: float = 99.0
    thermal_smoothing: float = 0.9
    #: ``ivif`` (thermal + camera frames) or ``medical`` (a functional or CT image first, the
    #: MRI second; the functional image's colour map kept; :mod:`.medical`).
    task: str = 'ivif'


@dataclass
class FusionResult:
    image: np.ndarray
    """Fused frame, ``uint8``: RGB when the visible frame has colour and output is ``color``."""
    luma: np.ndarray
    """Fused luma, float32 [0, 1], at the visible frame's size."""
    ir: np.ndarray
    """The thermal frame after gain and registration, float32 [0, 1], visible frame's size."""
    f1: np.ndarray | None = None
    masks: tuple[np.ndarray, np.ndarray] | None = None
    """The masks used (IR, visible): at the visible frame's size, or at the working size when
    they were given there (a :class:`~.stream.FusionStream` keeps them at the working size)."""
    timings: dict[str, float] = field(default_factory=dict)
    method: str = ''


def pad_multiple(method) -> int:
    """The side multiple a method's networks pad frames to: its own ``multiple``, or that of
    the networks it runs (a stage-1 network's ``net_multiple``, a refiner's ``multiple``)."""
    found = [getattr(method, 'multiple', 1) or 1, getattr(method, 'net_multiple', 1) or 1]
    for part in (getattr(method, 'stage1', None), getattr(method, 'refiner', None)):
        if part is not None:
            found += [getattr(part, 'net_multiple', 1) or 1, getattr(part, 'multiple', 1) or 1]
    return max(int(m) for m in found)


class FusionPipeline:
    """Fuse thermal + visible frames with a method chosen by name.

    Build once (loads models), then call :meth:`fuse` per frame. Not thread-safe: one pipeline per
    worker thread.
    """

    def __init__(self, config: PipelineConfig | None = None, **overrides):
        cfg = config or PipelineConfig()
        for key, value in overrides.items():
            if not hasattr(cfg, key):
                raise TypeError(f'unknown pipeline option {key!r}')
            setattr(cfg, key, value)
        if cfg.output not in OUTPUT_MODES:
            raise ValueError(f'output must be one of {OUTPUT_MODES}, got {cfg.output!r}')
        if cfg.work_size is not None:
            w, h = cfg.work_size
            if w <= 0 or h <= 0:
                raise ValueError(f'work_size must be positive, got {cfg.work_size}')
            cfg.work_size = (int(w), int(h))
        self.budget = PixelBudget(max_pixels=cfg.max_pixels, mode=cfg.oversize)
        cfg.max_pixels = self.budget.max_pixels
        if cfg.work_size is not None and cfg.oversize == 'refuse' \
                and not self.budget.fits(cfg.work_size):
            w, h = cfg.work_size
            raise ValueError(f'work_size {w}x{h} is over max_pixels {cfg.max_pixels} '
                             f'({pixels_text(cfg.max_pixels)}); lower it, raise max_pixels or '
                             "use oversize='resize'")
        self._last_work: tuple[int, int] | None = None
        cfg.homography = imaging.parse_homography(cfg.homography)
        self.config = cfg
        if medical.check_task(cfg.task) == 'medical':
            cfg.method_options = medical.method_options(cfg.method, cfg.method_options)
        self.gain = ThermalGain(low_percentile=cfg.thermal_low_percentile,
                                high_percentile=cfg.thermal_high_percentile,
                                smoothing=cfg.thermal_smoothing)
        self.method: FusionMethod = build_method(cfg.method, **cfg.method_options)
        # the budget counts the frame the networks run on: padded to their multiple
        self.budget = dataclasses.replace(self.budget, multiple=pad_multiple(self.method))
        self.mask_provider = None
        if self.method.uses_masks:
            from sgdfuse_ros.masks import build_provider
            self.mask_provider = build_provider(cfg.mask_provider, **cfg.mask_options)

    @property
    def method_name(self) -> str:
        return self.method.name

    def set_work_size(self, size: tuple[int, int] | None) -> None:
        """Run the method at ``size`` ``(W, H)`` from the next frame on (None: the frame's
        own), within the pixel budget (a larger size is scaled down to it)."""
        if size is not None:
            w, h = (int(v) for v in size)
            if w <= 0 or h <= 0:
                raise ValueError(f'work_size must be positive, got {size}')
            size = (w, h)
        self.config.work_size = size

    def set_refine(self, on: bool) -> bool:
        """Run the method's refiner (``sgdfuse``) or not (stage 1 alone: a degradation step);
        False when the method has no refiner to switch."""
        if not hasattr(self.method, 'refine'):
            return False
        self.method.refine = bool(on)
        return True

    def working_size(self, size: tuple[int, int], name: str = 'frame') -> tuple[int, int]:
        """``(W, H)`` the method runs at for a visible frame of ``size`` ``(W, H)``: ``work_size``
        or the frame's own, within the pixel budget. Raises :class:`FrameTooLarge` for a frame
        over the budget in ``refuse`` mode."""
        self.budget.check(size, name)
        return self.budget.working_size(self.config.work_size or size, name)

    def fuse(self, thermal: np.ndarray, visible: np.ndarray, *,
             masks: tuple[np.ndarray, np.ndarray] | None = None, name: str = 'frame'
             ) -> FusionResult:
        """Fuse one pair. ``masks`` (IR, visible; float [0, 1] at the visible size, or at the
        working size) skips the mask provider, as streaming callers do with masks from a
        background worker.

        Raises :class:`~sgdfuse_ros.core.imaging.ImageError` for a bad pair, and its subclass
        :class:`FrameTooLarge` for a frame over the pixel budget in ``refuse`` mode (before any
        work on it)."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        pair = None
        if self.config.task == 'medical':  # first: functional or CT image; second: the MRI
            pair = medical.split_pair(thermal, visible, name=name)
            thermal, visible = pair.first, pair.second
        if thermal.ndim != 2:
            raise ImageError(f'{name}: thermal frame must be 2-D, got shape {thermal.shape}')
        if visible.ndim >= 2:  # other shapes: align_pair says what is wrong
            self.budget.check((thermal.shape[1], thermal.shape[0]), name)
            work = self.working_size((visible.shape[1], visible.shape[0]), name)
        homography = self.config.homography
        if homography is not None and thermal.ndim == 2 and thermal.size:
            # the gain on the camera's own pixels (fewer than the visible frame's), then warped
            ir = imaging.align_pair(self.gain(thermal), visible, homography, name=name)
        else:
            ir = self.gain(imaging.align_pair(thermal, visible, homography, name=name))
        t1 = time.perf_counter()
        timings['thermal'] = (t1 - t0) * 1e3
        if visible.dtype != np.uint8:
            raise ImageError(f'{name}: visible frame must be 8-bit, got {visible.dtype}')
        h, w = visible.shape[:2]
        blend = (work != (w, h) and self.config.full_resolution_blend
                 and getattr(self.method, 'blend_maps', False))
        vis_y = _banded_luma(visible)
        t2 = time.perf_counter()
        timings['color'] = (t2 - t1) * 1e3

        h, w = vis_y.shape
        own_masks = self.method.uses_masks and masks is None
        if own_masks and work == (w, h):  # at the frame's size, as streams give them
            tm = time.perf_counter()
            masks = self.mask_provider(ir, vis_y if visible.ndim == 2 else visible).as_tuple()
            timings['masks'] = (time.perf_counter() - tm) * 1e3
            own_masks = False
        ir_w, vis_w, masks_w = ir, vis_y, masks
        if work != (w, h):
            tr = time.perf_counter()
            ir_w, vis_w = imaging.resize(ir, work), imaging.resize(vis_y, work)
            if masks is not None:
                masks_w = tuple(imaging.resize(m, work) for m in masks)
            timings['resize'] = (time.perf_counter() - tr) * 1e3
        if own_masks:  # a frame over the budget: masks at the working size
            tm = time.perf_counter()
            small = vis_w if visible.ndim == 2 else imaging.resize(visible, work)
            masks_w = self.mask_provider(ir_w, small).as_tuple()
            timings['masks'] = (time.perf_counter() - tm) * 1e3

        tf = time.perf_counter()
        m_in = masks_w if self.method.uses_masks else None
        out = self.method(ir_w, vis_w, m_in, maps=True) if blend else self.method(ir_w, vis_w,
                                                                                    m_in)
        timings['fuse'] = (time.perf_counter() - tf) * 1e3
        timings.update(out.timings)
        del ir_w, vis_w

        fused, f1, image = out.fused, out.f1, None
        color = self.config.output == 'color' and visible.ndim == 3
        if blend:
            tc = time.perf_counter()
            if compose_fast.available():  # the blend and the colour merge in one pass
                fused, image = compose_fast.compose_frame(
                    out.maps, ir, vis_y, visible if color and pair is None else None)
                f1 = imaging.resize(out.f1, (w, h))  # F1 itself, scaled up
            else:
                fused, f1 = compose(out.maps, ir, vis_y)
            timings['compose'] = (time.perf_counter() - tc) * 1e3
            if own_masks:
                masks = tuple(imaging.resize(m, (w, h)) for m in masks_w)
        elif fused.shape != (h, w):
            tr = time.perf_counter()
            fused = imaging.resize(fused, (w, h))
            f1 = imaging.resize(f1, (w, h)) if f1 is not None else None
            if own_masks:
                masks = tuple(imaging.resize(m, (w, h)) for m in masks_w)
            timings['resize'] = timings.get('resize', 0.0) + (time.perf_counter() - tr) * 1e3
        del out, masks_w
        if image is None:
            tc = time.perf_counter()
            image = _banded_merge(fused, visible if color else None) if pair is None else \
                medical.restore_colour(fused, pair, self.config.output, self.config.homography)
            timings['merge'] = (time.perf_counter() - tc) * 1e3
        del vis_y
        if work != self._last_work:
            if self._last_work is not None:  # frame size changed: hand freed memory back
                compose_fast.release_scratch()
                release_heap()
            self._last_work = work
        timings['total'] = (time.perf_counter() - t0) * 1e3
        return FusionResult(image=image, luma=fused, ir=ir, f1=f1, masks=masks,
                            timings=timings, method=self.method.name)


def _row_bands(h: int, w: int) -> list[tuple[int, int]]:
    """Row ranges of about :data:`BAND_PIXELS` pixels each covering an ``h x w`` frame."""
    rows = max(1, BAND_PIXELS // max(1, w))
    return [(y, min(h, y + rows)) for y in range(0, h, rows)]


def _banded_luma(visible: np.ndarray) -> np.ndarray:
    """:func:`imaging.visible_luma`, band by band for large frames (same values: per pixel)."""
    h, w = visible.shape[:2]
    if h * w <= BAND_PIXELS:
        return imaging.visible_luma(visible)
    out = np.empty((h, w), np.float32)
    for y0, y1 in _row_bands(h, w):
        out[y0:y1] = imaging.visible_luma(visible[y0:y1])
    return out


def _banded_merge(fused: np.ndarray, visible: np.ndarray | None) -> np.ndarray:
    """The fused luma in the colour of an RGB ``visible`` frame (:func:`imaging.merge_luma`),
    or as gray ``uint8`` (``visible`` None); band by band for large frames (the same values:
    the conversion is per pixel)."""
    h, w = fused.shape
    if h * w <= BAND_PIXELS:
        return imaging.to_uint8(fused) if visible is None else imaging.merge_luma(fused, visible)
    out = np.empty((h, w) if visible is None else (h, w, 3), np.uint8)
    for y0, y1 in _row_bands(h, w):
        out[y0:y1] = (imaging.to_uint8(fused[y0:y1]) if visible is None
                      else imaging.merge_luma(fused[y0:y1], visible[y0:y1]))
    return out
