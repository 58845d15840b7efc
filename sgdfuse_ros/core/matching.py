"""Approximate time synchronization of a thermal and an RGB stream.

:class:`ApproximateMatcher` is the matching rule as a plain class with no ROS in it: feed
``(input index, message or stamp)`` and get back a matched tuple when one completes. The live
node (through :class:`sgdfuse_ros.ros.sync.SyncedSubscriptions`, the ROS glue) and the offline
bag tool use this same class, so a bag is paired exactly as the node would pair it live. It
reports why every frame that is not paired was dropped (:data:`DROP_REASONS`).
:data:`SYNC_BACKENDS` and :func:`message_filters_available` name the synchronizers the glue
can use (the node's parameter schema checks them without ROS).

The rule is the one of message_filters' Python ``ApproximateTimeSynchronizer``:

* each input keeps a queue of at most ``queue_size`` messages keyed by stamp; a message with the
  stamp of one already queued on that input replaces it; beyond ``queue_size`` the oldest stamp
  is evicted;
* when a message arrives, the other inputs' queued messages within ``slop`` of its stamp are
  tried closest first (ties: the one queued first), and the first combination whose stamps
  span strictly less than ``slop`` is emitted and removed from the queues;
* older unmatched messages are not discarded when a newer set is emitted; they leave their
  queue when it overflows (or at :meth:`ApproximateMatcher.flush`);
* messages without ``header.stamp`` are refused unless ``allow_headerless`` (then they are
  stamped with the arrival time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import itertools
import time
from typing import Any, Callable

#: Why a frame left a queue without being paired:
#: ``superseded``: a newer frame of the same input was paired instead (the normal fate of the
#: extra frames of the faster camera); ``out_of_slop``: another input already has frames more
#: than ``slop`` newer, and none came within ``slop`` (clock offset or a too small slop);
#: ``queue_overflow``: evicted while its partner could still have come (the other stream lags
#: by more than ``queue_size`` frames); ``duplicate_stamp``: replaced by a frame with the same
#: stamp on the same input; ``headerless``: no ``header.stamp`` and ``allow_headerless`` off;
#: ``unpaired``: still waiting when the matcher was flushed (end of a bag).
DROP_REASONS = ('superseded', 'out_of_slop', 'queue_overflow', 'duplicate_stamp', 'headerless',
                'unpaired')


def stamp_to_ns(obj) -> int | None:
    """Nanoseconds of a stamp: an int, an rclpy ``Time``, a ``builtin_interfaces/Time``, or a
    message with ``header.stamp``. None when there is none."""
    if isinstance(obj, bool):
        return None
    if isinstance(obj, int):
        return obj
    ns = getattr(obj, 'nanoseconds', None)
    if isinstance(ns, int):
        return ns
    if hasattr(obj, 'sec') and hasattr(obj, 'nanosec'):
        return int(obj.sec) * 1_000_000_000 + int(obj.nanosec)
    header = getattr(obj, 'header', None)
    stamp = getattr(header, 'stamp', None)
    if stamp is not None and stamp is not obj:
        return stamp_to_ns(stamp)
    return None


@dataclass
class SyncStats:
    """Counters of an :class:`ApproximateMatcher` (per input where a list)."""

    inputs: int = 2
    received: list[int] = field(default_factory=list)
    pairs: int = 0
    dropped: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self):
        if not self.received:
            self.received = [0] * self.inputs
        for reason in DROP_REASONS:
            self.dropped.setdefault(reason, [0] * self.inputs)

    def total_dropped(self, index: int | None = None) -> int:
        if index is None:
            return sum(sum(v) for v in self.dropped.values())
        return sum(v[index] for v in self.dropped.values())

    def copy(self) -> SyncStats:
        return SyncStats(self.inputs, list(self.received), self.pairs,
                         {k: list(v) for k, v in self.dropped.items()})

    def as_dict(self) -> dict[str, Any]:
        return {'received': list(self.received), 'pairs': self.pairs,
                'dropped': {k: list(v) for k, v in self.dropped.items()}}


class ApproximateMatcher:
    """The approximate-time matching rule (see the module docstring), with drop accounting.

    Not thread-safe: callers serialise :meth:`push` (the ROS glue holds a lock).

    ``on_drop(index, item, reason)`` is called for every frame that leaves without a partner.
    ``clock_ns`` stamps headerless items when ``allow_headerless`` is on.
    """

    def __init__(self, *, queue_size: int, slop: float, inputs: int = 2,
                 allow_headerless: bool = False,
                 on_drop: Callable[[int, Any, str], None] | None = None,
                 clock_ns: Callable[[], int] = time.time_ns):
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f'queue_size must be an integer >= 1, got {queue_size!r}')
        if not slop >= 0:  # also refuses NaN
            raise ValueError(f'slop must be >= 0 seconds, got {slop!r}')
        if inputs < 2:
            raise ValueError(f'need at least 2 inputs, got {inputs}')
        self.queue_size = queue_size
        self.slop = float(slop)
        # Same conversion as rclpy.duration.Duration(seconds=slop).
        self.slop_ns = int(self.slop * 1e9)
        self.inputs = inputs
        self.allow_headerless = bool(allow_headerless)
        self.on_drop = on_drop
        self.clock_ns = clock_ns
        self.stats = SyncStats(inputs)
        self._queues: list[dict[int, Any]] = [{} for _ in range(inputs)]
        self._newest: list[int | None] = [None] * inputs
        self._last_paired: list[int | None] = [None] * inputs

    def pending(self, index: int | None = None) -> int:
        """Frames waiting for a partner (on one input, or all)."""
        if index is None:
            return sum(len(q) for q in self._queues)
        return len(self._queues[index])

    def push(self, index: int, item: Any, stamp: Any = None) -> tuple | None:
        """Feed one frame. ``stamp`` defaults to the item's own (:func:`stamp_to_ns`).

        Returns the matched tuple (one item per input, in input order) or None.
        """
        if not 0 <= index < self.inputs:
            raise IndexError(f'input index {index} out of range 0..{self.inputs - 1}')
        self.stats.received[index] += 1
        t = stamp_to_ns(item if stamp is None else stamp)
        if t is None:
            if not self.allow_headerless:
                self._drop(index, item, 'headerless')
                return None
            t = int(self.clock_ns())
        queue = self._queues[index]
        if t in queue:
            self._drop(index, queue[t], 'duplicate_stamp')
        queue[t] = item
        if self._newest[index] is None or t > self._newest[index]:
            self._newest[index] = t
        while len(queue) > self.queue_size:
            oldest = min(queue)
            self._drop(index, queue.pop(oldest), self._reason(index, oldest, 'queue_overflow'))
        if t not in queue:  # it was the oldest of a full queue
            return None

        candidates = []
        for j, other in enumerate(self._queues):
            if j == index:
                continue
            near = [(abs(s - t), s) for s in other if abs(s - t) <= self.slop_ns]
            if not near:
                return None
            near.sort(key=lambda d_s: d_s[0])  # stable: ties keep queue order
            candidates.append([s for _, s in near])
        for combo in itertools.product(*candidates):
            stamps = list(combo)
            stamps.insert(index, t)
            if max(stamps) - min(stamps) < self.slop_ns:
                out = tuple(q.pop(s) for q, s in zip(self._queues, stamps))
                for j, s in enumerate(stamps):
                    if self._last_paired[j] is None or s > self._last_paired[j]:
                        self._last_paired[j] = s
                self.stats.pairs += 1
                return out
        return None

    def flush(self) -> list[tuple[int, Any, str]]:
        """Empty the queues (end of stream); returns ``(index, item, reason)`` for each frame
        left, oldest first per input, and counts them."""
        left = []
        for index, queue in enumerate(self._queues):
            for t in sorted(queue):
                reason = self._reason(index, t, 'unpaired')
                left.append((index, queue[t], reason))
                self._drop(index, queue[t], reason)
            queue.clear()
        return left

    def _reason(self, index: int, t: int, default: str) -> str:
        last = self._last_paired[index]
        if last is not None and t < last:
            return 'superseded'
        for j, newest in enumerate(self._newest):
            if j != index and newest is not None and newest - t > self.slop_ns:
                return 'out_of_slop'
        return default

    def _drop(self, index: int, item: Any, reason: str) -> None:
        self.stats.dropped[reason][index] += 1
        if self.on_drop is not None:
            self.on_drop(index, item, reason)


# --------------------------------------------------------------------------------------------
# Synchronizers of the ROS glue (sgdfuse_ros.ros.sync)
# --------------------------------------------------------------------------------------------

#: ``auto`` (message_filters when importable), ``message_filters`` or ``builtin`` (the matcher).
SYNC_BACKENDS = ('auto', 'message_filters', 'builtin')


def message_filters_available() -> bool:
    """True when ``message_filters`` (a ROS installation) imports."""
    try:
        import message_filters  # noqa: F401
    except Exception:
        return False
    return True
