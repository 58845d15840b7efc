"""The ROS glue of approximate time synchronization: subscriptions in, synchronized pairs out.

:class:`SyncedSubscriptions` subscribes to the image topics and calls back with approximately
synchronized sets. It uses ``message_filters.ApproximateTimeSynchronizer`` (with keyword
arguments: its positional signature differs between ROS releases) when message_filters is
importable, and :class:`~sgdfuse_ros.core.matching.ApproximateMatcher` (the same rule, no ROS)
otherwise. With message_filters the matcher still runs beside it on the stamps alone, only to
keep the drop counters (the rule is the same, so the counts are too).
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Callable, Sequence

from sgdfuse_ros.core.matching import (SYNC_BACKENDS, ApproximateMatcher, SyncStats,
                                       message_filters_available, stamp_to_ns)


class SyncedSubscriptions:
    """Subscribe to two or more image topics and call ``callback(*msgs)`` with approximately
    synchronized sets.

    ``topics`` is a sequence of ``(message type, topic name)``. ``backend`` is ``auto``
    (message_filters when importable), ``message_filters`` or ``builtin``. ``on_error(exc)`` is
    called when ``callback`` raises (the exception never propagates: message_filters calls back
    while holding its lock, so an exception there would stop synchronization).
    ``callback_group``: the rclpy callback group of the subscriptions (None: the node's
    default), so a multi-threaded executor never queues them behind the node's other callbacks.
    ``qos``: a profile, or a function that makes a new one per subscription (with
    ``qos_overriding_options`` rclpy changes the profile it is given to the overrides of that
    topic's ``qos_overrides.<topic>.subscription.*`` parameters).
    """

    def __init__(self, node, topics: Sequence[tuple[type, str]], qos, *, queue_size: int,
                 slop: float, callback: Callable[..., None], backend: str = 'auto',
                 on_error: Callable[[BaseException], None] | None = None,
                 callback_group=None, qos_overriding_options=None):
        if backend not in SYNC_BACKENDS:
            raise ValueError(f'sync backend must be one of {SYNC_BACKENDS}, got {backend!r}')
        if backend == 'auto':
            backend = 'message_filters' if message_filters_available() else 'builtin'
        self.backend = backend
        self._callback = callback
        self._on_error = on_error
        self._lock = threading.Lock()
        self._matcher = ApproximateMatcher(queue_size=queue_size, slop=slop, inputs=len(topics))
        self._last_arrival: list[float | None] = [None] * len(topics)
        self._node = node
        group = {} if callback_group is None else {'callback_group': callback_group}
        if qos_overriding_options is not None:
            group['qos_overriding_options'] = qos_overriding_options
        profile = qos if callable(qos) else (lambda: qos)
        if backend == 'message_filters':
            import message_filters
            self._filters = [message_filters.Subscriber(node, msg_type, topic,
                                                        qos_profile=profile(), **group)
                             for msg_type, topic in topics]
            self._sync = message_filters.ApproximateTimeSynchronizer(
                fs=self._filters, queue_size=queue_size, slop=slop, allow_headerless=False)
            self._sync.registerCallback(self._emit)
            for i, f in enumerate(self._filters):
                f.registerCallback(self._count, i)
            self._subscriptions = [f.sub for f in self._filters]
        else:
            self._sync = None
            self._subscriptions = [
                node.create_subscription(msg_type, topic, functools.partial(self._on_msg, i),
                                         profile(), **group)
                for i, (msg_type, topic) in enumerate(topics)]

    @property
    def subscriptions(self) -> list:
        return list(self._subscriptions)

    def stats(self) -> SyncStats:
        """A snapshot of the counters."""
        with self._lock:
            return self._matcher.stats.copy()

    def last_arrival(self, index: int) -> float | None:
        """``time.monotonic()`` of the newest message on input ``index``, or None."""
        return self._last_arrival[index]

    def _on_msg(self, index: int, msg) -> None:
        try:
            self._last_arrival[index] = time.monotonic()
            with self._lock:
                matched = self._matcher.push(index, msg)
        except Exception as exc:  # noqa: BLE001 - a callback must never raise
            self._report(exc)
            return
        if matched is not None:
            self._emit(*matched)

    def _count(self, msg, index: int) -> None:
        # message_filters backend: message_filters pairs; this keeps arrival times and the drop
        # counters by running the same rule on the stamps alone.
        try:
            self._last_arrival[index] = time.monotonic()
            with self._lock:
                self._matcher.push(index, stamp_to_ns(msg), stamp_to_ns(msg))
        except Exception as exc:  # noqa: BLE001
            self._report(exc)

    def _emit(self, *msgs) -> None:
        try:
            self._callback(*msgs)
        except Exception as exc:  # noqa: BLE001
            self._report(exc)

    def _report(self, exc: BaseException) -> None:
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:  # noqa: BLE001
                pass

    def destroy(self) -> None:
        """Destroy the subscriptions (no callback comes afterwards); harmless twice."""
        for sub in self._subscriptions:
            try:
                self._node.destroy_subscription(sub)
            except Exception:  # noqa: BLE001 - already gone at shutdown
                pass
        self._subscriptions = []


class LatestMessage:
    """Subscribe to ``topic`` and keep only its newest message, e.g. the ``camera_info``
    beside an image stream. The callback only stores it (it never raises); ``kwargs`` go to
    ``create_subscription`` (``callback_group``, ``qos_overriding_options``)."""

    def __init__(self, node, msg_type: type, topic: str, qos, **kwargs):
        self._node = node
        self._latest = None
        self.received = 0
        self.subscription = node.create_subscription(msg_type, topic, self._store, qos,
                                                     **kwargs)

    def _store(self, msg) -> None:
        self._latest = msg
        self.received += 1

    @property
    def latest(self):
        """The newest message, or None before the first."""
        return self._latest

    @property
    def topic_name(self) -> str:
        return self.subscription.topic_name if self.subscription is not None else ''

    def destroy(self) -> None:
        """Destroy the subscription; harmless twice."""
        if self.subscription is not None:
            try:
                self._node.destroy_subscription(self.subscription)
            except Exception:  # noqa: BLE001 - already gone at shutdown
                pass
            self.subscription = None


__all__ = ['LatestMessage', 'SyncedSubscriptions']
