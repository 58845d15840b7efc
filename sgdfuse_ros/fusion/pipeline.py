"""A frame pair in, a fused frame out: the ROS-free fusion pipeline.

Stages, each timed (milliseconds, in :attr:`FusionResult.timings`):

``thermal``   thermal gain (mono16 -> [0, 1]) and registration into the visible frame
``color``     visible luma split (and, at the end, ``merge``: fused luma + visible chroma)
``resize``    to and from the working resolution, when one is set
``masks``     semantic masks, for methods that use them (streaming callers pass cached masks)
``fuse``      the fusion method itself (networks add their own sub-stages, e.g. ``stage1``)
"""

from __future__ import annotations

from dataclasses import dataclass, field
import time
from typing import Any

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.imaging import ImageError, ThermalGain
from .methods import FusionMethod, build_method

OUTPUT_MODES = ('color', 'mono')


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
    #: ``(W, H)`` the method runs at, or None for the visible frame's own size.
    work_size: tuple[int, int] | None = None
    #: ``color`` restores the visible chroma (when the visible frame has colour); ``mono`` not.
    output: str = 'color'
    thermal_low_percentile: float = 1.0
    thermal_high_percentile: float = 99.0
    thermal_smoothing: float = 0.9


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
    timings: dict[str, float] = field(default_factory=dict)
    method: str = ''


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
        cfg.homography = imaging.parse_homography(cfg.homography)
        self.config = cfg
        self.gain = ThermalGain(low_percentile=cfg.thermal_low_percentile,
                                high_percentile=cfg.thermal_high_percentile,
                                smoothing=cfg.thermal_smoothing)
        self.method: FusionMethod = build_method(cfg.method, **cfg.method_options)
        self.mask_provider = None
        if self.method.uses_masks:
            from sgdfuse_ros.masks import build_provider
            self.mask_provider = build_provider(cfg.mask_provider, **cfg.mask_options)

    @property
    def method_name(self) -> str:
        return self.method.name

    def fuse(self, thermal: np.ndarray, visible: np.ndarray, *,
             masks: tuple[np.ndarray, np.ndarray] | None = None, name: str = 'frame'
             ) -> FusionResult:
        """Fuse one pair. ``masks`` (IR, visible; float [0, 1] at the visible size) skips the
        mask provider, as streaming callers do with masks from a background worker."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if thermal.ndim != 2:
            raise ImageError(f'{name}: thermal frame must be 2-D, got shape {thermal.shape}')
        registered = imaging.align_pair(thermal, visible, self.config.homography, name=name)
        ir = self.gain(registered)
        t1 = time.perf_counter()
        timings['thermal'] = (t1 - t0) * 1e3
        if visible.dtype != np.uint8:
            raise ImageError(f'{name}: visible frame must be 8-bit, got {visible.dtype}')
        vis_y = imaging.visible_luma(visible)
        t2 = time.perf_counter()
        timings['color'] = (t2 - t1) * 1e3

        if self.method.uses_masks and masks is None:
            tm = time.perf_counter()
            masks = self.mask_provider(ir, vis_y if visible.ndim == 2 else visible).as_tuple()
            timings['masks'] = (time.perf_counter() - tm) * 1e3

        h, w = vis_y.shape
        work = self.config.work_size
        ir_w, vis_w, masks_w = ir, vis_y, masks
        if work is not None and work != (w, h):
            tr = time.perf_counter()
            ir_w, vis_w = imaging.resize(ir, work), imaging.resize(vis_y, work)
            if masks is not None:
                masks_w = tuple(imaging.resize(m, work) for m in masks)
            timings['resize'] = (time.perf_counter() - tr) * 1e3

        tf = time.perf_counter()
        out = self.method(ir_w, vis_w, masks_w if self.method.uses_masks else None)
        timings['fuse'] = (time.perf_counter() - tf) * 1e3
        timings.update(out.timings)

        fused, f1 = out.fused, out.f1
        if fused.shape != (h, w):
            tr = time.perf_counter()
            fused = imaging.resize(fused, (w, h))
            f1 = imaging.resize(f1, (w, h)) if f1 is not None else None
            timings['resize'] = timings.get('resize', 0.0) + (time.perf_counter() - tr) * 1e3
        tc = time.perf_counter()
        color = self.config.output == 'color' and visible.ndim == 3
        image = imaging.merge_luma(fused, visible if color else vis_y)
        timings['merge'] = (time.perf_counter() - tc) * 1e3
        timings['total'] = (time.perf_counter() - t0) * 1e3
        return FusionResult(image=image, luma=fused, ir=ir, f1=f1, masks=masks,
                            timings=timings, method=self.method.name)
