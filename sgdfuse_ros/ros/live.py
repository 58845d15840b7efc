"""Bags in a live ROS 2 graph (rclpy): play a bag into it, record topics out of it.

:class:`BagPlayer` publishes a bag's messages timed by their recorded times (serialized CDR as
recorded, no re-encoding), optionally with ``/clock``; :class:`BagRecorder` writes what arrives
on topics into a new bag. :func:`play_bag` and :func:`record_bag` run them in a private rclpy
context of their own, with the package's ROS environment defaults
(:func:`.graph.ros_env_defaults`). No ``ros2`` command needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
import os
from pathlib import Path
import threading
import time
from typing import Any, Callable

from .bag_io import (IMAGE_TYPES, BagError, BagReader, offered_qos, open_writer, typestore)
from .graph import join_spinner, msg_class, qos_profile, ros_env_defaults, spin

@dataclass
class PlayStats:
    published: dict[str, int] = field(default_factory=dict)
    skipped_topics: list[str] = field(default_factory=list)
    loops: int = 0
    wall_s: float = 0.0
    bag_s: float = 0.0
    #: largest delay (s) of a publish behind its scheduled time
    max_lag_s: float = 0.0
    interrupted: bool = False

    def format(self) -> str:
        n = sum(self.published.values())
        text = (f'published {n} message(s) on {len(self.published)} topic(s) in '
                f'{self.wall_s:.1f} s ({self.bag_s:.1f} s of bag time'
                + (f', {self.loops} loops' if self.loops > 1 else '')
                + f'; largest lag {self.max_lag_s * 1e3:.0f} ms)')
        for topic, c in self.published.items():
            text += f'\n  {topic}: {c}'
        for t in self.skipped_topics:
            text += f'\n  skipped {t}'
        return text


class BagPlayer:
    """Publish a bag's messages into a live graph, timed by their recorded (log) times.

    Messages are published as they were recorded (serialized CDR, no re-encoding). Image topics
    use the sensor-data QoS of the node (``best_effort``, depth 5) unless told otherwise;
    other topics use ``reliable``. ``clock=True`` also publishes the bag time on ``/clock``
    (``clock_hz`` times per second and before every message), for nodes with use_sim_time.
    ``on_publish(topic, log_ns, raw, wall_ns)`` is called after each publish (from the playing
    thread). Topics whose message package is not installed are skipped, with a note.
    """

    def __init__(self, node, path: str | os.PathLike, *, rate: float = 1.0, loop: bool = False,
                 clock: bool = False, clock_hz: float = 40.0, topics: list[str] | None = None,
                 qos_reliability: str = 'best_effort', qos_depth: int = 5,
                 on_publish: Callable[[str, int, bytes, int], None] | None = None):
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f'rate must be > 0, got {rate}')
        if clock and not clock_hz > 0:
            raise ValueError(f'clock rate must be > 0 Hz, got {clock_hz}')
        self.node = node
        self.path = Path(path)
        self.rate = float(rate)
        self.loop = bool(loop)
        self.clock = bool(clock)
        self.clock_period = 1.0 / clock_hz if clock else 0.0
        self.on_publish = on_publish
        self.stats = PlayStats()
        with BagReader(self.path) as reader:
            bag_topics = reader.topics()
        if topics:
            missing = [t for t in topics if t not in bag_topics]
            if missing:
                raise BagError(f'{self.path}: no topic {", ".join(missing)} in the bag')
            bag_topics = {t: bag_topics[t] for t in topics}
        if not bag_topics:
            raise BagError(f'{self.path}: the bag has no topics')
        image_qos = qos_profile(qos_reliability, qos_depth)
        other_qos = qos_profile('reliable', max(qos_depth, 10))
        self.publishers: dict[str, Any] = {}
        for topic, (msgtype, _) in bag_topics.items():
            cls = msg_class(msgtype)
            if cls is None:
                self.stats.skipped_topics.append(f'{topic} ({msgtype}: message package not '
                                                 'installed)')
                continue
            qos = image_qos if msgtype in IMAGE_TYPES else other_qos
            self.publishers[topic] = node.create_publisher(cls, topic, qos)
            self.stats.published[topic] = 0
        if not self.publishers:
            raise BagError(f'{self.path}: none of the topics can be published here '
                           f'({"; ".join(self.stats.skipped_topics)})')
        self._clock_pub = None
        if self.clock:
            from rosgraph_msgs.msg import Clock

            self._clock_pub = node.create_publisher(Clock, '/clock', qos_profile('reliable', 1))

    def wait_for_subscribers(self, topics: list[str] | None = None, timeout: float = 10.0,
                             stop: threading.Event | None = None) -> bool:
        """Wait until each of ``topics`` (default: every published topic) has a subscriber."""
        wanted = [self.publishers[t] for t in (topics or list(self.publishers))]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in wanted):
                return True
            if stop is not None and stop.is_set():
                return False
            time.sleep(0.05)
        return False

    def _publish_clock(self, bag_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec = int(bag_ns // 1_000_000_000)
        msg.clock.nanosec = int(bag_ns % 1_000_000_000)
        self._clock_pub.publish(msg)

    def _wait(self, target: float, bag_at: Callable[[float], int], stop) -> bool:
        """Sleep until ``target`` (monotonic), publishing /clock; False when stopped."""
        next_clock = time.monotonic()
        while True:
            if stop is not None and stop.is_set():
                return False
            now = time.monotonic()
            if now >= target:
                return True
            if self._clock_pub is not None and now >= next_clock:
                self._publish_clock(bag_at(now))
                next_clock = now + self.clock_period
            step = target - now
            if self._clock_pub is not None:
                step = min(step, max(next_clock - now, 0.0))
            time.sleep(min(step, 0.05))

    def run(self, stop: threading.Event | None = None) -> PlayStats:
        """Play (once, or until ``stop`` with ``loop``); returns the statistics."""
        t_begin = time.monotonic()
        try:
            while True:
                self.stats.loops += 1
                completed = self._play_once(stop)
                if not completed or not self.loop:
                    break
        except KeyboardInterrupt:
            self.stats.interrupted = True
        self.stats.wall_s = time.monotonic() - t_begin
        return self.stats

    def _play_once(self, stop) -> bool:
        with BagReader(self.path) as reader:
            conns = [c for c in reader.connections if c.topic in self.publishers]
            first = None
            wall0 = 0.0
            for conn, log_ns, raw in reader.messages(conns):
                if first is None:
                    first, wall0 = log_ns, time.monotonic()

                def bag_at(now: float, first=first, wall0=wall0) -> int:
                    return first + int((now - wall0) * self.rate * 1e9)

                target = wall0 + (log_ns - first) / 1e9 / self.rate
                if not self._wait(target, bag_at, stop):
                    self.stats.interrupted = True
                    return False
                self.stats.max_lag_s = max(self.stats.max_lag_s, time.monotonic() - target)
                if self._clock_pub is not None:
                    self._publish_clock(log_ns)
                data = bytes(raw)
                self.publishers[conn.topic].publish(data)
                self.stats.published[conn.topic] += 1
                self.stats.bag_s = max(self.stats.bag_s, (log_ns - first) / 1e9)
                if self.on_publish is not None:
                    self.on_publish(conn.topic, log_ns, data, time.time_ns())
            return True


@dataclass
class RecordStats:
    path: str
    storage: str
    counts: dict[str, int] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def format(self) -> str:
        text = (f'recorded {self.total} message(s) on {len(self.counts)} topic(s) in '
                f'{self.wall_s:.1f} s -> {self.path} ({self.storage})')
        for t, c in self.counts.items():
            text += f'\n  {t}: {c}'
        for t in self.waiting:
            text += f'\n  {t}: never published (no type known, not recorded)'
        for t in self.skipped:
            text += f'\n  skipped {t}'
        return text


class BagRecorder:
    """Record topics of a live graph into a new bag (serialized CDR as received).

    ``types`` maps topics to message types known in advance; other topics are subscribed as
    soon as a publisher shows their type (:meth:`poll`, also run by a timer of ``node``). QoS:
    ``reliable`` when every publisher of the topic offers it, else ``best_effort`` (which
    matches both); ``depth`` deep. Messages are logged with their receive time (the node's
    clock). Thread-safe: callbacks run in the node's executor, :meth:`close` from anywhere.
    """

    def __init__(self, node, out: str | os.PathLike, topics: list[str], *,
                 storage: str = 'mcap', types: dict[str, str] | None = None, depth: int = 100,
                 on_message: Callable[[str, bytes, int], None] | None = None):
        if not topics:
            raise ValueError('give at least one topic to record')
        self.node = node
        self.out = Path(out)
        self.storage = storage
        self.depth = depth
        self.on_message = on_message
        self.stats = RecordStats(str(self.out), storage)
        self._lock = threading.Lock()
        self._writer = open_writer(self.out, storage)
        self._conns: dict[str, Any] = {}
        self._subs: dict[str, Any] = {}
        self._pending = {t: (types or {}).get(t) for t in dict.fromkeys(topics)}
        self._t0 = time.monotonic()
        self.poll()
        self._timer = node.create_timer(0.2, self.poll)

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.stats.counts)

    def publisher_count(self, topic: str) -> int:
        """Publishers matched by the recording subscription of ``topic`` (0 before it
        exists)."""
        sub = self._subs.get(topic)
        return sub.get_publisher_count() if sub is not None else 0

    def poll(self) -> None:
        """Subscribe to the topics whose type is now known."""
        if not self._pending:
            return
        try:
            graph = dict(self.node.get_topic_names_and_types())
        except Exception:  # noqa: BLE001 - node shutting down
            return
        for topic in list(self._pending):
            msgtype = self._pending[topic]
            if msgtype is None:
                found = graph.get(topic) or graph.get(self.node.resolve_topic_name(topic))
                if not found:
                    continue
                msgtype = found[0]
            self._pending.pop(topic)
            self._subscribe(topic, msgtype)

    def _subscribe(self, topic: str, msgtype: str) -> None:
        cls = msg_class(msgtype)
        ts = typestore()
        if cls is None or msgtype not in ts.types:
            self.stats.skipped.append(f'{topic} ({msgtype}: message type unknown here)')
            return
        reliability = 'best_effort'
        try:
            infos = self.node.get_publishers_info_by_topic(topic)
            from rclpy.qos import ReliabilityPolicy

            if infos and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                             for i in infos):
                reliability = 'reliable'
        except Exception:  # noqa: BLE001 - keep best effort
            pass
        with self._lock:
            if self._writer is None:
                return
            self._conns[topic] = self._writer.add_connection(
                topic, msgtype, typestore=ts,
                offered_qos_profiles=[offered_qos(reliability, self.depth)])
            self.stats.counts[topic] = 0
        self._subs[topic] = self.node.create_subscription(
            cls, topic, lambda raw, t=topic: self._on_msg(t, raw),
            qos_profile(reliability, self.depth), raw=True)

    def _on_msg(self, topic: str, raw: bytes) -> None:
        try:
            now = self.node.get_clock().now().nanoseconds
            with self._lock:
                if self._writer is None:
                    return
                self._writer.write(self._conns[topic], now, raw)
                self.stats.counts[topic] += 1
            if self.on_message is not None:
                self.on_message(topic, raw, now)
        except Exception as exc:  # noqa: BLE001 - never raise in a callback
            self.node.get_logger().error(f'recording {topic}: {type(exc).__name__}: {exc}',
                                         throttle_duration_sec=5.0)

    def close(self) -> RecordStats:
        """Stop recording and finish the bag (metadata written)."""
        try:
            self.node.destroy_timer(self._timer)
        except Exception:  # noqa: BLE001
            pass
        for sub in self._subs.values():
            try:
                self.node.destroy_subscription(sub)
            except Exception:  # noqa: BLE001
                pass
        self._subs.clear()
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.close()
        self.stats.waiting = [t for t in self._pending]
        self.stats.wall_s = time.monotonic() - self._t0
        return self.stats


def play_bag(in_path: str | os.PathLike, *, rate: float = 1.0, loop: bool = False,
             clock: bool = False, topics: list[str] | None = None,
             qos_reliability: str = 'best_effort', qos_depth: int = 5,
             wait_for_subscribers: float = 0.0) -> PlayStats:
    """Play a bag into the ROS 2 graph (see :class:`BagPlayer`) until it ends, or until Ctrl-C
    with ``loop``. ``wait_for_subscribers`` seconds: wait (at most) for every topic to have a
    subscriber first."""
    ros_env_defaults()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('sgdfuse_bag_player', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()
    try:
        player = BagPlayer(node, in_path, rate=rate, loop=loop, clock=clock, topics=topics,
                           qos_reliability=qos_reliability, qos_depth=qos_depth)
        try:
            if wait_for_subscribers > 0:
                player.wait_for_subscribers(timeout=wait_for_subscribers)
            return player.run()
        except KeyboardInterrupt:
            player.stats.interrupted = True
            return player.stats
    finally:
        join_spinner(executor, spinner, 5.0)  # no rclpy thread left at exit (it aborts)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def record_bag(out: str | os.PathLike, topics: list[str], *, duration: float | None = None,
               max_messages: int | None = None, storage: str = 'mcap',
               types: dict[str, str] | None = None,
               stop: threading.Event | None = None) -> RecordStats:
    """Record ``topics`` into a new bag until ``duration`` seconds have passed,
    ``max_messages`` were recorded, ``stop`` is set, or Ctrl-C."""
    ros_env_defaults()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    if duration is not None and not duration > 0:
        raise ValueError(f'duration must be > 0 s, got {duration}')
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('sgdfuse_bag_recorder', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    recorder = None
    try:
        recorder = BagRecorder(node, out, topics, storage=storage, types=types)
        end = time.monotonic() + duration if duration else math.inf
        try:
            while time.monotonic() < end and not (stop is not None and stop.is_set()):
                executor.spin_once(timeout_sec=min(0.1, max(end - time.monotonic(), 0.0)))
                if max_messages and sum(recorder.counts.values()) >= max_messages:
                    break
        except KeyboardInterrupt:
            pass
        return recorder.close()
    except BaseException:
        if recorder is not None:
            try:
                recorder.close()
            except Exception:  # noqa: BLE001
                pass
        raise
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


__all__ = ['BagPlayer', 'BagRecorder', 'PlayStats', 'RecordStats', 'play_bag', 'record_bag']
