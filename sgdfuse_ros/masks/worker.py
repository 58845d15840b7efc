"""Masks beside the fusion: a worker thread that refreshes them at a set rate on the newest pair.

The caller (the node, a video loop) :meth:`MaskWorker.submit` s every registered frame pair and
fuses with :meth:`MaskWorker.latest`, which never waits. Pairs go into a one-slot, drop-oldest
buffer: a slow provider then skips stale pairs instead of building a backlog (the
``BufferQueue`` + ``ConsumerThread`` pattern of camera_calibration). At most one refresh starts
per ``1 / rate_hz`` seconds, so a fast provider does not take more CPU than asked for.

Age: a snapshot's age is the time since the pair it was computed from was submitted (or since
the ``stamp`` given with it), so it counts the compute time as well as the time since. Masks
older than ``max_age_s`` are flagged (:attr:`MaskSnapshot.stale`) and counted
(:attr:`MaskWorker.stale_reads`) so the caller can report them.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
import os
import threading
import time
from typing import Any, Callable

import numpy as np

from .base import MaskResult

LOG = logging.getLogger('sgdfuse_ros.masks')


@dataclass
class MaskSnapshot:
    """The newest masks, as handed out by :meth:`MaskWorker.latest`."""

    result: MaskResult
    #: Clock time the source pair was submitted (or its ``stamp``), and when its masks were done.
    stamp: float
    computed: float
    #: Sequence number of the source pair (1 for the first submitted pair).
    frame: int
    #: Seconds since ``stamp`` when :meth:`MaskWorker.latest` returned this.
    age: float
    stale: bool

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray]:
        return self.result.as_tuple()

    @property
    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        return self.result.as_tuple()


#: Values of :class:`MaskWorker`'s ``priority``.
PRIORITIES = ('idle', 'nice', 'normal')


class MaskWorker:
    """Run a mask provider in its own thread at ``rate_hz`` on the newest submitted pair.

    ``max_age_s``: masks older than this are stale (default: three refresh periods, at least
    1 s). ``priority``: how the worker thread yields the CPU to the fusion path on Linux:
    ``idle`` (default; the ``SCHED_IDLE`` policy: the masks get only CPU time nothing else wants,
    so on a 2-core CPU the fusion path keeps its speed), ``nice`` (``nice`` added to the thread's
    niceness, default 5: the masks get a smaller share but still compete) or ``normal``. Where
    ``SCHED_IDLE`` is not available ``idle`` falls back to ``nice``. The default (None) is the
    provider's ``worker_priority`` attribute, else ``idle``: the SAM-family providers spend
    their time in runtimes that release the GIL, where ``idle`` is right; the ``saliency``
    provider runs Python and numpy code that holds the GIL in between, and an idle-priority
    thread preempted while holding it stalls the fusion thread of the same process (priority
    inversion), so it asks for ``normal`` (it needs about 20 ms per refresh). The provider's
    runtimes are prepared in the worker thread (their thread pools inherit its priority).
    ``clock``: a monotonic clock in seconds (tests pass a fake one).

    The worker keeps references to the submitted arrays: do not modify them after submitting.
    """

    def __init__(self, provider: Callable[[np.ndarray, np.ndarray], MaskResult], *,
                 rate_hz: float = 2.0, max_age_s: float | None = None,
                 priority: str | None = None, nice: int = 5,
                 name: str = 'sgdfuse-masks', clock: Callable[[], float] = time.monotonic,
                 start: bool = False):
        if not callable(provider):
            raise TypeError('provider must be callable: provider(ir, visible) -> MaskResult')
        if not isinstance(rate_hz, (int, float)) or isinstance(rate_hz, bool) or rate_hz <= 0:
            raise ValueError(f'rate_hz must be > 0, got {rate_hz!r}')
        if max_age_s is None:
            max_age_s = max(1.0, 3.0 / rate_hz)
        if not isinstance(max_age_s, (int, float)) or max_age_s <= 0:
            raise ValueError(f'max_age_s must be > 0, got {max_age_s!r}')
        if priority is None:
            priority = getattr(provider, 'worker_priority', 'idle')
        if priority not in PRIORITIES:
            raise ValueError(f'priority must be one of {", ".join(PRIORITIES)}, got {priority!r}')
        if not isinstance(nice, int) or not 0 <= nice <= 19:
            raise ValueError(f'nice must be an integer in [0, 19], got {nice!r}')
        self.provider = provider
        self.rate_hz = float(rate_hz)
        self.period = 1.0 / self.rate_hz
        self.max_age_s = float(max_age_s)
        self.priority = priority
        self.nice = nice
        self.scheduling = 'normal'  # what _lower_priority achieved (stats)
        self._busy = False
        self._clock = clock
        self._cond = threading.Condition()
        self._slot: tuple[np.ndarray, np.ndarray, float, int] | None = None
        self._snapshot: tuple[MaskResult, float, float, int] | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._submitted = 0
        self.refreshes = 0
        self.dropped = 0
        self.errors = 0
        self.stale_reads = 0
        self.last_error: str | None = None
        self.last_compute_ms: float | None = None
        self._compute_ms: list[float] = []
        if start:
            self.start()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> 'MaskWorker':
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to finish (after the refresh in progress) and wait for it."""
        with self._cond:
            self._stop = True
            self._slot = None
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    close = stop

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> 'MaskWorker':
        if not self._thread.is_alive():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- producer / consumer -----------------------------------------------------------------

    def submit(self, ir: np.ndarray, visible: np.ndarray, stamp: float | None = None) -> None:
        """Offer a pair (replaces a pair not yet taken, which counts as dropped). ``stamp``: its
        capture time on this worker's clock (default: now)."""
        with self._cond:
            if self._stop:
                return
            if self._slot is not None:
                self.dropped += 1
            self._submitted += 1
            self._slot = (ir, visible, self._clock() if stamp is None else float(stamp),
                          self._submitted)
            self._cond.notify_all()

    def latest(self) -> MaskSnapshot | None:
        """The newest masks with their age, or None before the first refresh. Never waits."""
        with self._cond:
            snap = self._snapshot
        if snap is None:
            return None
        result, stamp, computed, frame = snap
        age = self._clock() - stamp
        stale = age > self.max_age_s
        if stale:
            self.stale_reads += 1
        return MaskSnapshot(result, stamp, computed, frame, age, stale)

    @property
    def submitted(self) -> int:
        """How many pairs were offered so far (the sequence number of the newest)."""
        return self._submitted

    @property
    def busy(self) -> bool:
        """True while the provider is computing masks."""
        return self._busy

    @property
    def is_stale(self) -> bool:
        """True when there are no masks yet, or the newest are older than ``max_age_s``."""
        with self._cond:
            snap = self._snapshot
        return snap is None or self._clock() - snap[1] > self.max_age_s

    def wait_for(self, refreshes: int = 1, timeout: float | None = None) -> bool:
        """Block until at least ``refreshes`` refreshes are done (tests, warm-up)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.refreshes < refreshes:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stats(self) -> dict[str, Any]:
        """Counters for diagnostics: refreshes, dropped pairs, errors, stale reads, compute time
        (last and median over the last 50 refreshes, ms), rate and maximum age."""
        with self._cond:
            times = list(self._compute_ms)
        return {'refreshes': self.refreshes, 'dropped': self.dropped, 'errors': self.errors,
                'stale_reads': self.stale_reads, 'last_error': self.last_error,
                'last_compute_ms': self.last_compute_ms,
                'median_compute_ms': float(np.median(times)) if times else None,
                'rate_hz': self.rate_hz, 'max_age_s': self.max_age_s,
                'scheduling': self.scheduling}

    # -- the thread --------------------------------------------------------------------------

    def _lower_priority(self) -> None:
        if self.priority == 'normal' or not hasattr(threading, 'get_native_id'):
            return
        tid = threading.get_native_id()
        if self.priority == 'idle' and hasattr(os, 'SCHED_IDLE'):
            try:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                self.scheduling = 'SCHED_IDLE'
                return
            except OSError as exc:  # pragma: no cover - depends on the platform
                LOG.debug('mask worker: cannot set SCHED_IDLE: %s', exc)
        if self.nice and hasattr(os, 'setpriority'):
            try:
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid)
                               + self.nice)
                self.scheduling = f'nice +{self.nice}'
            except OSError as exc:  # pragma: no cover - depends on the platform
                LOG.debug('mask worker: cannot lower thread priority: %s', exc)

    def _run(self) -> None:
        self._lower_priority()
        prepare = getattr(self.provider, 'prepare', None)
        if callable(prepare):
            try:
                prepare()
            except Exception as exc:  # noqa: BLE001 - reported, the first refresh will retry
                LOG.warning('mask worker: provider preparation failed: %s', exc)
        next_start = -float('inf')
        last_log = -float('inf')
        while True:
            with self._cond:
                while not self._stop:
                    wait = next_start - self._clock()
                    if self._slot is not None and wait <= 0:
                        break
                    self._cond.wait(None if self._slot is None else max(wait, 1e-3))
                if self._stop:
                    return
                ir, visible, stamp, frame = self._slot
                self._slot = None
            t0 = self._clock()
            next_start = t0 + self.period
            tp = time.perf_counter()
            self._busy = True
            try:
                result = self.provider(ir, visible)
            except Exception as exc:  # noqa: BLE001 - a bad pair must not end the worker
                with self._cond:
                    self.errors += 1
                    self.last_error = f'{type(exc).__name__}: {exc}'
                if time.monotonic() - last_log > 5.0:
                    LOG.error('mask worker: refresh failed (%d so far): %s', self.errors, exc)
                    last_log = time.monotonic()
                continue
            finally:
                self._busy = False
            ms = (time.perf_counter() - tp) * 1e3
            with self._cond:
                self._snapshot = (result, stamp, self._clock(), frame)
                self.refreshes += 1
                self.last_compute_ms = ms
                self._compute_ms = (self._compute_ms + [ms])[-50:]
                self._cond.notify_all()
