"""A video of frame pairs in, fused frames out: a pipeline with its masks and temporal state.

:class:`FusionStream` owns a :class:`~.pipeline.FusionPipeline` (whose thermal gain smooths over
frames) and, for methods that use masks, the masks that go with it. Everything that fuses a
video uses it: the ROS node, ``sgdfuse bag fuse``, ``sgdfuse fuse --sequence`` and the demo.

Two ways to refresh the masks, one behaviour:

``live=True`` (the node)
    A :class:`~sgdfuse_ros.masks.MaskWorker` refreshes the masks in its own thread, at most
    ``mask_rate`` times a second, on the newest pair. :meth:`FusionStream.push` never waits for
    it: it fuses with the worker's latest masks (empty masks until the first refresh, or when
    the frame size changed), then submits the pair it just fused. Ages are measured on the
    monotonic clock from the submission of the masks' source pair (compute time included).

``live=False`` (offline tools)
    The same schedule, computed in the calling thread and deterministic: a refresh every
    ``N = max(1, round(camera_rate / mask_rate))`` frames, starting at frame 0, on the pair just
    fused. Its masks become visible with the node's latency, measured in frames: the frame a
    refresh starts on does not use it (the node submits a pair after fusing it), and the
    masks are first used ``mask_latency`` frames later (default: one refresh period, ``N``
    frames: a provider that keeps up with ``mask_rate`` finishes within a period, so this is
    the latest the node would see them; it does not depend on how fast this machine is, so two
    runs give the same frames). A ``mask_latency`` above ``N`` models a provider slower than
    the rate: the next refresh then starts when the previous one is done, every
    ``mask_latency`` frames, as the worker does. Frames before the first masks arrive use empty
    masks, as the node does. Ages are frame time: the ``stamp`` difference when stamps are
    given, else frames / ``camera_rate``.

Between refreshes the masks move with the scene (``carry_masks``, the default): a
:class:`~sgdfuse_ros.masks.motion.MaskCarrier` keeps each refresh with a small copy of the frame
it was computed on, shifts the masks by the motion estimated from that frame to the current one
and blends a new refresh in over a few frames, so the fused video neither drags a mask behind a
moving scene nor snaps at a refresh. The first frame (and the first after a change of frame
size) gets its masks computed at once, in the calling thread, instead of empty masks: the
refiner reads its masks, and switching from empty to real ones would show as a jump.
``carry_masks=False`` gives the plain schedule above (masks reused as they are; empty until the
first refresh).

Methods that use no masks get no worker and no refreshes: :meth:`push` is the pipeline alone.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import cv2
import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.imaging import ImageError
from sgdfuse_ros.masks import MaskResult, MaskWorker
from sgdfuse_ros.masks.motion import MaskCarrier
from .pipeline import FusionPipeline, FusionResult
from .temporal import TemporalFilter, TemporalSettings

LOG = logging.getLogger('sgdfuse_ros.fusion')


def _motion_luma(visible: np.ndarray) -> np.ndarray:
    """The 8-bit gray frame the mask carrier estimates motion on."""
    if visible.ndim == 2:
        return visible
    return cv2.cvtColor(visible, cv2.COLOR_RGB2GRAY)


def _steady(temporal: TemporalFilter, result: FusionResult, visible: np.ndarray,
            luma: np.ndarray | None) -> None:
    """Steady ``result`` in place with the stream's temporal filter (timed as ``temporal``)."""
    t0 = time.perf_counter()
    fused = result.luma
    steady = temporal(fused, _motion_luma(visible) if luma is None else luma, result.ir)
    if result.image.ndim == 2:
        result.image = imaging.to_uint8(steady)
    else:  # the same change on R, G and B moves the luma by it and keeps the chroma
        delta = np.rint((steady - fused) * 255.0).astype(np.int16)
        result.image = np.clip(result.image + delta[..., None], 0, 255).astype(np.uint8)
    result.luma = steady
    ms = (time.perf_counter() - t0) * 1e3
    result.timings['temporal'] = ms
    result.timings['total'] = result.timings.get('total', 0.0) + ms


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f'{name} must be a finite number > 0, got {value!r}')
    return float(value)


class _OfflineMasks:
    """The worker's schedule, run in the calling thread (see the module docstring)."""

    def __init__(self, provider, *, interval: int, latency: int, camera_rate: float,
                 rate_hz: float, max_age_s: float):
        self.provider = provider
        self.interval = interval
        self.latency = latency
        self.camera_rate = camera_rate
        self.rate_hz = rate_hz
        self.max_age_s = max_age_s
        self.refreshes = 0
        self.errors = 0
        self.stale_reads = 0
        self.last_error: str | None = None
        self.last_compute_ms: float | None = None
        self._compute_ms: list[float] = []
        #: (visible from frame, source frame, source time, masks) of refreshes in flight.
        self._pending: list[tuple[int, int, float, MaskResult]] = []
        self._current: tuple[int, float, MaskResult] | None = None  # source frame, time, masks
        self._age: float | None = None

    def latest(self, frame: int, now: float, shape: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
        """Masks for fusing ``frame`` (taken at time ``now``): the newest arrived refresh."""
        while self._pending and self._pending[0][0] <= frame:
            _, src, src_time, result = self._pending.pop(0)
            self._current = (src, src_time, result)
        if self._current is not None:
            self._age = now - self._current[1]
            if self._age > self.max_age_s:
                self.stale_reads += 1
            ir, vis = self._current[2].as_tuple()
            if ir.shape[:2] == shape and vis.shape[:2] == shape:
                return ir, vis
        empty = np.zeros(shape, np.float32)
        return empty, empty

    @property
    def source(self) -> int | None:
        """The frame the masks handed out last were computed on (None before the first)."""
        return None if self._current is None else self._current[0]

    def refresh(self, frame: int, now: float, ir: np.ndarray, visible: np.ndarray,
                done: MaskResult | None = None) -> float | None:
        """Start the refresh due on ``frame`` (after it was fused); its compute time in ms.
        ``done``: masks of this very pair computed already (the stream's first frame)."""
        if frame % self.interval:
            return None
        t0 = time.perf_counter()
        try:
            result = done if done is not None else self.provider(ir, visible)
        except Exception as exc:  # noqa: BLE001 - as the worker: a bad pair must not end it
            self.errors += 1
            self.last_error = f'{type(exc).__name__}: {exc}'
            if self.errors == 1:
                LOG.error('masks: refresh on frame %d failed: %s', frame, exc)
            return None
        ms = (time.perf_counter() - t0) * 1e3
        self.refreshes += 1
        self.last_compute_ms = ms
        self._compute_ms = (self._compute_ms + [ms])[-50:]
        self._pending.append((frame + self.latency, frame, now, result))
        return ms

    def stats(self) -> dict[str, Any]:
        times = self._compute_ms
        return {'refreshes': self.refreshes, 'dropped': 0, 'errors': self.errors,
                'stale_reads': self.stale_reads, 'last_error': self.last_error,
                'last_compute_ms': self.last_compute_ms,
                'median_compute_ms': float(np.median(times)) if times else None,
                'rate_hz': self.rate_hz, 'max_age_s': self.max_age_s,
                'scheduling': 'caller thread', 'age_s': self._age,
                'stale': self._age is None or self._age > self.max_age_s,
                'refresh_every': self.interval, 'latency_frames': self.latency}


class FusionStream:
    """Fuse a video pair by pair, with masks refreshed beside it (see the module docstring).

    ``mask_rate``: mask refreshes per second. ``mask_max_age``: masks older than this many
    seconds are stale (reported by :meth:`mask_stats`); None: three refresh periods, at least
    1 s. ``camera_rate``: frames per second of the input, needed offline (``live=False``) to
    place the refreshes. ``mask_latency`` (offline only): frames from a refresh's start to the
    first frame that uses it; None: one refresh period. ``carry_masks``: move the masks with the
    scene between refreshes and compute the first ones at once (module docstring).
    ``temporal``: steady the fused frames with a :class:`~.temporal.TemporalFilter` (True for
    its default settings, or a :class:`~.temporal.TemporalSettings`; timed as ``temporal``).
    Not thread-safe: push from one thread.
    """

    def __init__(self, pipeline: FusionPipeline, *, mask_rate: float = 2.0,
                 mask_max_age: float | None = 2.0, camera_rate: float | None = None,
                 live: bool = True, mask_latency: int | None = None,
                 carry_masks: bool = True,
                 temporal: bool | TemporalSettings = False):
        if not isinstance(pipeline, FusionPipeline):
            raise TypeError(f'pipeline must be a FusionPipeline, got {type(pipeline).__name__}')
        self.pipeline = pipeline
        self.live = bool(live)
        self.mask_rate = _positive('mask_rate', mask_rate)
        self.mask_max_age = (max(1.0, 3.0 / self.mask_rate) if mask_max_age is None
                             else _positive('mask_max_age', mask_max_age))
        self.camera_rate = None if camera_rate is None else _positive('camera_rate',
                                                                      camera_rate)
        if not self.live and self.camera_rate is None:
            raise ValueError('camera_rate (frames per second) is needed with live=False: it '
                             'places the mask refreshes in the frame sequence')
        if mask_latency is not None and (isinstance(mask_latency, bool)
                                         or not isinstance(mask_latency, int)
                                         or mask_latency < 1):
            raise ValueError(f'mask_latency must be an integer >= 1 (frames), got '
                             f'{mask_latency!r}')
        if mask_latency is not None and self.live:
            raise ValueError('mask_latency applies to live=False only (live masks arrive when '
                             'the worker has computed them)')
        self.frames = 0
        if not isinstance(temporal, (bool, TemporalSettings)):
            raise TypeError(f'temporal must be True, False or a TemporalSettings, got '
                            f'{temporal!r}')
        self._temporal = (TemporalFilter(temporal if isinstance(temporal, TemporalSettings)
                                         else None) if temporal else None)
        self._closed = False
        self._first_stamp: float | None = None
        self._worker: MaskWorker | None = None
        self._offline: _OfflineMasks | None = None
        self._last_snapshot = None
        self._carrier = MaskCarrier() if carry_masks and pipeline.method.uses_masks else None
        self._carried_shape: tuple[int, int] | None = None  # frame size the carrier holds
        self._carried_source: int | None = None  # source frame of the carrier's newest refresh
        self._sources: dict[int, np.ndarray] = {}  # source frame -> its luma, until used
        if not pipeline.method.uses_masks:
            return
        provider = pipeline.mask_provider
        if self.live:
            self._worker = MaskWorker(provider, rate_hz=self.mask_rate,
                                      max_age_s=self.mask_max_age, start=True)
        else:
            interval = max(1, round(self.camera_rate / self.mask_rate))
            latency = interval if mask_latency is None else mask_latency
            self._offline = _OfflineMasks(provider, interval=max(interval, latency),
                                          latency=latency, camera_rate=self.camera_rate,
                                          rate_hz=self.mask_rate, max_age_s=self.mask_max_age)

    # -- properties ------------------------------------------------------------------------

    @property
    def uses_masks(self) -> bool:
        """True when the method consumes masks (then :meth:`mask_stats` has figures)."""
        return self.pipeline.method.uses_masks

    @property
    def worker(self) -> MaskWorker | None:
        """The live mask worker (None offline or for methods without masks)."""
        return self._worker

    @property
    def closed(self) -> bool:
        return self._closed

    # -- frames ----------------------------------------------------------------------------

    def push(self, thermal: np.ndarray, visible: np.ndarray, *, stamp: float | None = None,
             name: str = 'frame') -> FusionResult:
        """Fuse the next pair of the video. ``stamp``: its capture time in seconds (offline:
        the frame time for mask ages; live: ages use the monotonic clock, as the node does).
        Raises :class:`~sgdfuse_ros.core.imaging.ImageError` for a bad pair (the stream goes
        on with the next one)."""
        if self._closed:
            raise RuntimeError('FusionStream is closed')
        if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, (int, float))
                                  or not math.isfinite(stamp)):
            raise ValueError(f'{name}: stamp must be a finite number of seconds, got {stamp!r}')
        small = self._mask_frame(visible)  # masks live at the working size
        shape = small.shape[:2]
        masks = None
        luma = None
        start = False  # masks of this pair computed now, by the pipeline (carrier only)
        if self._carrier is not None:
            luma = _motion_luma(small)
            start = self._carried_shape != shape
            if not start:
                masks = self._carried_masks(shape, luma, stamp)
        elif self._worker is not None:
            masks = self._live_masks(shape)
        elif self._offline is not None:
            masks = self._offline.latest(self.frames, self._frame_time(stamp), shape)
        result = self.pipeline.fuse(thermal, visible, masks=masks, name=name)
        if self._temporal is not None:  # on the frame's own luma
            _steady(self._temporal, result, visible, luma if small is visible else None)
        ir_small = result.ir if small is visible else imaging.resize(result.ir, small.shape[1::-1])
        own = None if result.masks is None else tuple(
            m if m.shape == shape else imaging.resize(m, small.shape[1::-1]) for m in result.masks)
        result.masks = own  # a stream's masks: at the working size, every frame
        if start and own is not None:
            self._carrier.reset()
            self._carrier.update(own, luma)
            self._carried_shape, self._carried_source = shape, None
            self._sources.clear()
        if self._worker is not None:
            self._worker.submit(ir_small, small)
            if luma is not None:  # the worker numbers submitted pairs from 1
                self._sources[self._worker.submitted] = luma
                for old in [k for k in self._sources if k < self._worker.submitted - 8]:
                    del self._sources[old]
        elif self._offline is not None:
            done = MaskResult(*own) if start and own is not None else None
            ms = self._offline.refresh(self.frames, self._frame_time(stamp), ir_small, small,
                                       done=done)
            if ms is not None:
                result.timings.setdefault('masks', ms)
                if luma is not None:
                    self._sources[self.frames] = luma
        self.frames += 1
        return result

    def _mask_frame(self, visible: np.ndarray) -> np.ndarray:
        """The visible frame the masks are made and carried on: the frame itself, or, when the
        pipeline runs the method at a smaller working size, the frame at that size (masks,
        their refreshes and their motion then cost what the working size costs)."""
        if visible.ndim < 2 or not self.pipeline.method.uses_masks:
            return visible
        h, w = visible.shape[:2]
        try:
            work = self.pipeline.working_size((w, h))
        except ImageError:  # refused: the pipeline says so when it fuses
            return visible
        return visible if work == (w, h) else imaging.resize(visible, work)

    def _carried_masks(self, shape: tuple[int, int], luma: np.ndarray,
                       stamp: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Hand the carrier any refresh that arrived, then the masks carried to this frame."""
        if self._worker is not None:
            snap = self._worker.latest()
            self._last_snapshot = snap or self._last_snapshot
            fresh = None
            if snap is not None and snap.frame != self._carried_source:
                ir, vis = snap.as_tuple()
                if ir.shape[:2] == shape and snap.frame in self._sources:
                    fresh = (snap.frame, (ir, vis))
        else:
            ir, vis = self._offline.latest(self.frames, self._frame_time(stamp), shape)
            src = self._offline.source
            fresh = None
            if src is not None and src != self._carried_source and src in self._sources:
                fresh = (src, (ir, vis))
        if fresh is not None:
            src, pair = fresh
            self._carrier.update(pair, self._sources.pop(src))
            self._carried_source = src
            for old in [k for k in self._sources if k < src]:
                del self._sources[old]
        return self._carrier.masks_for(luma)

    def _frame_time(self, stamp: float | None) -> float:
        """Offline frame time in seconds: the stamp, or the frame index over the camera rate."""
        if stamp is None:
            return self.frames / self.camera_rate
        return float(stamp)

    def _live_masks(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        snap = self._worker.latest()
        self._last_snapshot = snap
        if snap is not None:
            ir, vis = snap.as_tuple()
            if ir.shape[:2] == shape and vis.shape[:2] == shape:
                return ir, vis
        empty = np.zeros(shape, np.float32)
        return empty, empty

    # -- diagnostics -----------------------------------------------------------------------

    def mask_stats(self) -> dict[str, Any]:
        """Mask figures for diagnostics (empty dict for a method without masks): refreshes,
        dropped pairs, errors, stale reads, last error, last and median compute time (ms),
        rate_hz, max_age_s, scheduling, the age (s) of the masks the last frame used (None
        before the first) and ``stale`` (no masks yet, or older than max_age_s), plus
        ``mode`` (live / offline) and the provider's description."""
        if self._worker is not None:
            out = self._worker.stats()
            snap = self._last_snapshot  # age now: the worker's clock is time.monotonic
            out['age_s'] = None if snap is None else time.monotonic() - snap.stamp
            out['stale'] = out['age_s'] is None or out['age_s'] > out['max_age_s']
        elif self._offline is not None:
            out = self._offline.stats()
        else:
            return {}
        provider = self.pipeline.mask_provider
        out['mode'] = 'live' if self.live else 'offline'
        out['provider'] = (provider.describe() if hasattr(provider, 'describe')
                           else type(provider).__name__)
        return out

    # -- lifecycle -------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Stop the mask worker (after the refresh in progress) and wait for its thread.
        Pushing afterwards raises; closing twice is harmless."""
        self._closed = True
        if self._worker is not None:
            self._worker.stop(timeout=timeout)

    def __enter__(self) -> 'FusionStream':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # a forgotten close must not leave a thread behind
        worker = getattr(self, '_worker', None)
        if worker is not None:
            try:
                worker.stop(timeout=0.0)
            except Exception:  # noqa: BLE001 - at interpreter exit threading may be gone
                pass
