"""The working size that holds the camera's rate, chosen from measured timings.

A live stream gets one fused frame per camera period only when fusing a frame takes less than
that period. :class:`WorkingSizeController` picks the largest working size (the size the
networks run at; the published frame keeps the camera's size, see :mod:`.compose`) whose
measured time fits, and adapts it when the load changes:

* it keeps the recent times per fused frame and a moving average of the camera period;
* when the median of the last ``patience`` frames is over ``target`` x period it steps down
  the ladder of sizes (each about 0.8x the pixels of the one above, sides multiples of the
  networks' 32), straight to the first size whose time, scaled by its pixels, fits; at the
  smallest size it degrades the method instead (``levels``: the refiner off, stage 1 alone);
* when the median of the last ``patience_up`` frames, scaled to the next size up, would still
  fit with room to spare (``headroom``), it steps back up: first the method, then the size.
  The two thresholds are apart (hysteresis) and medians ignore a few frames slowed by other
  work, so it does not oscillate between two sizes.

Part of a frame's time does not depend on the working size: the frame-size passes (colour,
registration, the blend at the frame's size, publishing). When that part alone takes the camera
period, no working size holds the rate; the budget then becomes ``overload_factor`` x that
part (the networks get the rest), so the node fuses at a steady share of the best rate the
machine can reach instead of shrinking the working size for nothing. The controller is told
which part of each frame's time scales with the working size (``observe(frame_ms, period_s,
scaled_ms)``); without it, all of it is taken to scale.

A stream starts at the largest size within ``start_pixels`` (VGA) and climbs from there, so the
first frames of a large camera do not wait for networks at its full size.

It is plain Python with an injectable clock-free interface: the node feeds it, tests drive it
with made-up timings.
"""

from __future__ import annotations

import collections

#: Sides of working sizes are multiples of this (the refiner's side multiple: no padding).
SIDE_MULTIPLE = 32
#: Degradation levels below the full method, in order.
LEVELS = ('full', 'stage1')


def size_ladder(frame: tuple[int, int], *, max_pixels: int | None = None,
                min_pixels: int = 320 * 160, step: float = 0.8) -> list[tuple[int, int]]:
    """Working sizes for a ``frame`` ``(W, H)``, largest first: the frame's aspect, sides
    multiples of :data:`SIDE_MULTIPLE` (the frame's own size first when it is within
    ``max_pixels``), each about ``step`` x the pixels of the one before, down to
    ``min_pixels``."""
    w, h = frame
    if w < 1 or h < 1:
        raise ValueError(f'frame size must be positive, got {w}x{h}')
    cap = w * h if not max_pixels else min(w * h, int(max_pixels))
    sizes: list[tuple[int, int]] = []
    if w * h <= cap:
        sizes.append((w, h))
    scale = (cap / (w * h)) ** 0.5
    m = SIDE_MULTIPLE
    while True:
        sw = max(m, int(w * scale / m) * m)
        sh = max(m, int(round(h * scale / m)) * m)
        if sw * sh <= cap and (not sizes or sw * sh < sizes[-1][0] * sizes[-1][1]):
            sizes.append((sw, sh))
        if sw * sh <= min_pixels or sw == m:
            break
        scale *= step ** 0.5
    return sizes or [(w, h)]


class WorkingSizeController:
    """See the module docstring. ``target``: the share of the camera period a frame may take;
    ``headroom``: stepping up needs the predicted time under ``headroom`` x target x period."""

    def __init__(self, *, max_pixels: int | None = None, min_pixels: int = 320 * 160,
                 target: float = 0.85, headroom: float = 0.75, patience: int = 5,
                 patience_up: int = 30, smoothing: float = 0.7, can_degrade: bool = True,
                 start_pixels: int | None = 640 * 480, overload_factor: float = 1.6,
                 settle: int = 3):
        if not 0.0 < target <= 1.0 or not 0.0 < headroom < 1.0:
            raise ValueError('need 0 < target <= 1 and 0 < headroom < 1')
        self.max_pixels, self.min_pixels = max_pixels, int(min_pixels)
        self.target, self.headroom = float(target), float(headroom)
        self.patience, self.patience_up = int(patience), int(patience_up)
        self.smoothing = float(smoothing)
        self.can_degrade = bool(can_degrade)
        self.start_pixels = start_pixels
        self.overload_factor = float(overload_factor)
        self._avg_fixed: float | None = None
        self._avg_scaled: float | None = None
        self._recent: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=max(patience, patience_up))
        #: Frames not counted after a start or a change (first runs at a new size, the first
        #: frame's masks): ``settle`` after a change, twice that after a start.
        self.settle = int(settle)
        self._skip = 0
        self._frame: tuple[int, int] | None = None
        self._ladder: list[tuple[int, int]] = []
        self._index = 0
        self._level = 0
        self._avg_ms: float | None = None
        self._avg_period: float | None = None
        self.changes = 0
        self.reason = 'start: the largest size within max_pixels, until timings arrive'

    def start(self, frame: tuple[int, int], start_pixels: int | None = None) -> None:
        """A stream of ``frame``-sized frames begins (or the camera's size changed): the
        ladder for it, starting at the largest size within ``start_pixels`` (a size that held
        the rate before), else the largest."""
        self._frame = frame
        self._ladder = size_ladder(frame, max_pixels=self.max_pixels,
                                   min_pixels=self.min_pixels)
        self._index = 0
        start_pixels = start_pixels or self.start_pixels
        if start_pixels:
            fits = [i for i, (w, h) in enumerate(self._ladder) if w * h <= start_pixels]
            self._index = fits[0] if fits else len(self._ladder) - 1
        self._avg_ms = None
        self._recent.clear()
        self._skip = 2 * self.settle

    @property
    def size(self) -> tuple[int, int]:
        if not self._ladder:
            raise RuntimeError('WorkingSizeController: call start(frame) first')
        return self._ladder[self._index]

    @property
    def level(self) -> str:
        return LEVELS[self._level]

    def size_for(self, frame: tuple[int, int]) -> tuple[int, int]:
        """The working size for a frame of ``frame`` size (a new size restarts the ladder,
        at the pixel count that held the rate so far)."""
        if frame != self._frame:
            pixels = None if self._frame is None else self.size[0] * self.size[1]
            self.start(frame, pixels)
        return self.size

    def observe(self, frame_ms: float, period_s: float | None,
                scaled_ms: float | None = None) -> bool:
        """One fused frame took ``frame_ms`` (conversion, fusion, publishing), of which
        ``scaled_ms`` (None: all) grows with the working size (the networks), with frames
        arriving every ``period_s`` seconds (None: not known yet). Returns True when the size
        or the level changed."""
        if not self._ladder or period_s is None or period_s <= 0:
            return False
        if self._skip > 0:
            self._skip -= 1
            return False
        fixed = max(0.0, frame_ms - scaled_ms) if scaled_ms is not None else 0.0
        self._recent.append((frame_ms, frame_ms - fixed))
        a = self.smoothing
        self._avg_period = period_s if self._avg_period is None else \
            a * self._avg_period + (1 - a) * period_s
        # medians, not means: a few frames slowed by other work do not move the size
        last = list(self._recent)[-self.patience:]
        if len(last) < self.patience:
            return False
        self._set_averages(last)
        budget = self.budget_ms
        if self._avg_ms > budget:
            return self._down(budget)
        if len(self._recent) >= self.patience_up:
            self._set_averages(self._recent)
            if self._up_fits(budget):
                return self._up(budget)
        return False

    def _set_averages(self, frames) -> None:
        times = sorted(t for t, _ in frames)
        scaled = sorted(s for _, s in frames)
        self._avg_ms, self._avg_scaled = times[len(times) // 2], scaled[len(scaled) // 2]
        self._avg_fixed = max(0.0, self._avg_ms - self._avg_scaled)

    @property
    def budget_ms(self) -> float:
        """Time a frame may take: ``target`` x the camera period, or, when the work that does
        not scale with the working size already takes that, ``overload_factor`` x that work."""
        if self._avg_period is None:
            return float('inf')
        budget = self.target * self._avg_period * 1e3
        fixed = self._avg_fixed or 0.0
        return max(budget, self.overload_factor * fixed) if fixed > 0.8 * budget else budget

    def _predict(self, pixels: int) -> float:
        """Time per frame at ``pixels`` working pixels, from the current one."""
        w, h = self.size
        fixed = min(self._avg_fixed or 0.0, self._avg_ms)
        return fixed + (self._avg_ms - fixed) * pixels / (w * h)

    def _up_fits(self, budget: float) -> bool:
        if self._level > 0:  # the method first: the refiner costs about what stage 1 does
            return self._avg_ms + (self._avg_scaled or self._avg_ms) < self.headroom * budget
        if self._index == 0:
            return False
        uw, uh = self._ladder[self._index - 1]
        return self._predict(uw * uh) < self.headroom * budget

    def _down(self, budget: float) -> bool:
        w, h = self.size
        if budget > self.target * self._avg_period * 1e3:
            of = (f'{self.overload_factor:g}x the {self._avg_fixed:.0f} ms of frame-size work, '
                  f'which alone takes the {self._avg_period * 1e3:.0f} ms camera period')
        else:
            of = f'{self.target:.0%} of the {self._avg_period * 1e3:.0f} ms camera period'
        why = f'{self._avg_ms:.0f} ms per frame at {w}x{h} is over {budget:.0f} ms ({of})'
        if self._index + 1 < len(self._ladder):
            i = self._index + 1
            while i + 1 < len(self._ladder):  # straight to a size that fits
                sw, sh = self._ladder[i]
                if self._predict(sw * sh) <= budget:
                    break
                i += 1
            self._index = i
            self.reason = f'{why}: down to {self.size[0]}x{self.size[1]}'
        elif self.can_degrade and self._level + 1 < len(LEVELS):
            self._level += 1
            self.reason = f'{why} at the smallest size: {LEVELS[self._level]} only'
        else:
            return False
        self._avg_ms = None  # measure the new setting afresh
        self._recent.clear()
        self._skip = self.settle
        self.changes += 1
        return True

    def _up(self, budget: float) -> bool:
        if self._level > 0:
            self._level -= 1
            self.reason = (f'{self._avg_ms:.0f} ms per frame leaves room within '
                           f'{budget:.0f} ms: back to {LEVELS[self._level]}')
        else:
            self._index -= 1
            self.reason = (f'{self._avg_ms:.0f} ms per frame leaves room within '
                           f'{budget:.0f} ms: up to {self.size[0]}x{self.size[1]}')
        self._avg_ms = None
        self._recent.clear()
        self._skip = self.settle
        self.changes += 1
        return True


class RateMeter:
    """The period of a stream from its arrival times: a moving average of the intervals (gaps
    over ``max_gap_s`` are a pause, not the rate)."""

    def __init__(self, smoothing: float = 0.9, max_gap_s: float = 1.0):
        self.smoothing, self.max_gap_s = float(smoothing), float(max_gap_s)
        self._last: float | None = None
        self.period: float | None = None

    def tick(self, t: float) -> None:
        if self._last is not None and 0.0 < t - self._last <= self.max_gap_s:
            dt = t - self._last
            a = self.smoothing
            self.period = dt if self.period is None else a * self.period + (1 - a) * dt
        self._last = t


class AutoWorkSize:
    """A :class:`WorkingSizeController` applied to a pipeline (its ``set_work_size`` and
    ``set_refine``): call :meth:`before` with each frame's size before fusing it and
    :meth:`after` with the time it took; :meth:`after` returns a line to log when the size or
    the level changed."""

    def __init__(self, pipeline, controller: WorkingSizeController | None = None):
        self.pipeline = pipeline
        self.controller = controller or WorkingSizeController(
            max_pixels=pipeline.budget.max_pixels)
        self._applied: tuple[tuple[int, int], str] | None = None

    def before(self, frame: tuple[int, int]) -> tuple[int, int]:
        size = self.controller.size_for(frame)
        level = self.controller.level
        if (size, level) != self._applied:
            self.pipeline.set_work_size(size)
            self.pipeline.set_refine(level == 'full')
            self._applied = (size, level)
        return size

    def after(self, frame_ms: float, period_s: float | None,
              scaled_ms: float | None = None) -> tuple[str, str] | None:
        """``(level, line)`` to log when the size or the method changed: a ``warning`` when
        it had to go down (fusion cannot keep up), else ``info``."""
        if not self.controller.observe(frame_ms, period_s, scaled_ms):
            return None
        line = f'working size: {self.controller.reason}'
        if self.controller.level != 'full' or 'down to' in line:
            return 'warning', line + ' (fusion cannot keep up with the camera)'
        return 'info', line

    def values(self) -> dict[str, str]:
        """For /diagnostics: the working size, the level and why."""
        if self._applied is None:
            return {'working_size': 'automatic: the largest that holds the camera rate (no frame '
                                    'yet)', 'degradation': 'full'}
        (w, h), level = self._applied
        return {'working_size': f'{w}x{h} (auto)', 'degradation': level,
                'working_size_reason': self.controller.reason}


def fixed_size_values(pipeline) -> dict[str, str]:
    """For /diagnostics, without the automatic working size: the fixed one, or the frame's."""
    work = pipeline.config.work_size if pipeline is not None else None
    return {'working_size': f'{work[0]}x{work[1]} (fixed)' if work else
            "the RGB frame's own (within max_pixels)", 'degradation': 'full'}
