"""The ``sgdfuse_node`` ROS 2 node: synchronized thermal + RGB images in, fused images out.

A thin adapter around :class:`~sgdfuse_ros.fusion.stream.FusionStream` (the fusion pipeline
with its mask worker and temporal state). Its parameters are the schema of
:mod:`sgdfuse_ros.params`. Threads:

* the executor thread runs the subscriptions, the synchronizer and the diagnostics timer. The
  sync callback only puts the newest pair into :class:`~sgdfuse_ros.core.slots.LatestSlot`, a
  drop-oldest queue of size one (a pair still waiting there when a newer one arrives is
  counted as dropped, stale);
* one worker thread takes pairs from the slot, converts them, fuses and publishes. A slow model
  therefore skips stale pairs instead of building a backlog;
* for methods that use semantic masks, the stream's mask worker refreshes the masks at
  ``mask_rate`` Hz on the newest frames while fusion reuses the latest masks.

No exception leaves a callback: each error is counted by kind and logged, throttled per kind.
Everything the node does is visible on ``/diagnostics`` (:mod:`.diagnostics`), including the
backend that really runs each network.

Start it with ``sgdfuse_node --ros-args --params-file config/sgdfuse.yaml`` (venv) or
``ros2 run sgdfuse_ros sgdfuse_node --ros-args --params-file ...`` (ROS workspace).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
import sys
import threading
import time
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
import rclpy.logging
from rclpy.node import Node
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

from sgdfuse_ros import params
from sgdfuse_ros.core.imaging import ImageError
from .sync import SyncedSubscriptions
from sgdfuse_ros.core.slots import LatestSlot
from sgdfuse_ros.fusion.pipeline import FusionPipeline
from sgdfuse_ros.fusion.stream import FusionStream
from sgdfuse_ros.params import ParameterError
from . import convert, diagnostics
from .graph import qos_profile

@dataclass
class _Pair:
    thermal: Any
    rgb: Any
    enqueued: float  # time.monotonic()


class SgdfuseNode(Node):
    """Synchronized thermal + RGB in, fused image out (see the module docstring).

    ``pipeline``: a built :class:`~sgdfuse_ros.fusion.pipeline.FusionPipeline` to fuse with
    instead of the one the parameters describe (tests, embedding); the node owns it from then
    on and closes its method when destroyed. The other parameters (topics, masks rate, ...)
    still apply.
    """

    #: Seconds between two log lines of one kind of error.
    LOG_THROTTLE_S = 5.0

    def __init__(self, node_name: str = params.NODE_NAME, *,
                 pipeline: FusionPipeline | None = None, **kwargs):
        super().__init__(node_name, **kwargs)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._loggers: dict[str, Any] = {}
        self._errors: collections.Counter[str] = collections.Counter()
        self._last_error = ''
        self._latency: collections.deque[dict[str, float]] = collections.deque(maxlen=300)
        self._pairs = 0
        self._published = 0
        self._frame_listeners: list = []
        self._worker: threading.Thread | None = None
        self._stream: FusionStream | None = None
        self._sync: SyncedSubscriptions | None = None
        self.pipeline: FusionPipeline | None = pipeline
        self._slot = LatestSlot()
        self._started = time.monotonic()
        self._rates = diagnostics.Rates()
        try:
            self._setup()
        except Exception:
            self._teardown()
            super().destroy_node()
            raise

    # ---- set-up -----------------------------------------------------------------------------

    def _declare_parameters(self) -> tuple[dict[str, Any], list[str]]:
        """Declare every parameter of the schema; returns the values and the type problems."""
        values: dict[str, Any] = {}
        problems = []
        for p in params.PARAMETERS:
            desc = ParameterDescriptor(
                description=params.describe(p), read_only=not p.dynamic,
                additional_constraints=p.range_text(),
                # accept 1 for 1.0 and [] for no homography
                dynamic_typing=p.kind in ('float', 'floats'))
            default = list(p.default) if p.kind == 'floats' else p.default
            try:
                values[p.name] = self.declare_parameter(p.name, default, desc).value
            except Exception as exc:  # noqa: BLE001 - a wrong type in the YAML or command line
                problems.append(f'{p.name}: expected {params.KIND_TEXT[p.kind]} '
                                f'({type(exc).__name__}: {str(exc).split(": " + p.name)[0]})')
        return values, problems

    def _setup(self) -> None:
        values, problems = self._declare_parameters()
        try:
            self.settings = params.validate_settings(values)
        except ParameterError as exc:
            problems.append(str(exc).removeprefix('invalid parameters: '))
        if problems:
            raise ParameterError('invalid parameters: ' + '; '.join(problems))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        s = self.settings
        if s.threads > 0:
            from sgdfuse_ros.runtime import set_threads
            set_threads(s.threads)
        if self.pipeline is None:
            try:
                self.pipeline = FusionPipeline(s.pipeline_config())
            except (ValueError, OSError, ImportError, TypeError, RuntimeError, KeyError) as exc:
                # unknown method, missing or unreadable weights, a backend not installed here
                raise ParameterError(f'cannot build the fusion pipeline (method={s.method!r}, '
                                     f'backend={s.backend!r}): {type(exc).__name__}: {exc}'
                                     ) from exc
        self._stream = FusionStream(self.pipeline, mask_rate=s.mask_rate,
                                    mask_max_age=s.mask_max_age_s, live=True)

        qos = qos_profile(s.qos_reliability, s.qos_depth)
        from sensor_msgs.msg import CompressedImage, Image
        from diagnostic_msgs.msg import DiagnosticArray

        self._pub_fused = self.create_publisher(Image, s.fused_topic, qos)
        self._pub_ir_mask = self._pub_rgb_mask = self._pub_f1 = None
        if s.publish_masks:
            self._pub_ir_mask = self.create_publisher(Image, '~/ir_mask', qos)
            self._pub_rgb_mask = self.create_publisher(Image, '~/rgb_mask', qos)
        if s.publish_f1:
            self._pub_f1 = self.create_publisher(Image, '~/f1', qos)
        self._pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        self._worker = threading.Thread(target=self._work_loop, name='sgdfuse-fusion',
                                        daemon=True)
        self._worker.start()
        self._sync = SyncedSubscriptions(
            self,
            [(CompressedImage if s.thermal_compressed else Image, s.thermal_topic),
             (CompressedImage if s.rgb_compressed else Image, s.rgb_topic)],
            qos, queue_size=s.sync_queue_size, slop=s.sync_slop, callback=self._on_pair,
            backend=s.sync_backend,
            on_error=lambda exc: self._error('callback', f'{type(exc).__name__}: {exc}'))
        self._diag_timer = self.create_timer(s.diagnostics_period, self._on_diagnostics)
        self.get_logger().info(
            f'fusing {self._sync.subscriptions[0].topic_name} + '
            f'{self._sync.subscriptions[1].topic_name} -> {self._pub_fused.topic_name} '
            f'({s.output_encoding}) with method {self.pipeline.method_name!r} '
            f'({diagnostics.backend_text(self.backend_report)}), sync {self._sync.backend} '
            f'(slop {s.sync_slop} s, queue {s.sync_queue_size}), QoS {s.qos_reliability} '
            f'depth {s.qos_depth}, conversion '
            f'{"cv_bridge" if convert.cv_bridge_available() else "numpy"}')

    def _on_set_parameters(self, changed) -> SetParametersResult:
        """``ros2 param set``: parameters that can change at run time take effect at once;
        the others are read-only (rclpy refuses them before this is called)."""
        try:
            self.settings = params.update_settings(self.settings,
                                                   {p.name: p.value for p in changed})
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def add_frame_listener(self, listener) -> None:
        """Call ``listener(stamp_ns, timings_ms)`` (worker thread) after each published frame;
        ``timings_ms`` holds the pipeline's stages plus ``queue_wait``, ``convert``,
        ``publish``, ``node`` and ``age`` (RGB stamp to publish). For benchmarks and tools."""
        with self._lock:
            self._frame_listeners.append(listener)

    @property
    def backend_report(self) -> dict[str, str] | None:
        """Network -> the backend that really runs it, with any fallback and its reason: the
        ``backend_report()`` of the method and, for methods that use masks, of the mask
        provider; empty when no network runs; None when the method does not report it."""
        if self.pipeline is None:
            return {}
        method = self.pipeline.method
        if not callable(getattr(method, 'backend_report', None)):
            return None
        out = dict(method.backend_report())
        provider = self.pipeline.mask_provider if method.uses_masks else None
        if callable(getattr(provider, 'backend_report', None)):
            out.update(provider.backend_report())
        return out

    # ---- callbacks --------------------------------------------------------------------------

    def _on_pair(self, thermal_msg, rgb_msg) -> None:
        # Runs in the executor thread, inside the synchronizer: enqueue only, never raise.
        try:
            if self._stop.is_set():
                return
            with self._lock:
                self._pairs += 1
            self._slot.put(_Pair(thermal_msg, rgb_msg, time.monotonic()))
        except Exception as exc:  # noqa: BLE001
            self._error('callback', f'{type(exc).__name__}: {exc}')

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            pair = self._slot.get(timeout=0.2)
            if pair is None:
                continue
            try:
                self._process(pair)
            except ImageError as exc:
                self._error('input', str(exc))
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                self._error('fusion', f'{type(exc).__name__}: {exc}')

    def _process(self, pair: _Pair) -> None:
        s = self.settings
        t0 = time.monotonic()
        thermal = convert.thermal_from_msg(pair.thermal)
        visible = convert.visible_from_msg(pair.rgb)
        t1 = time.monotonic()
        header = pair.rgb.header
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        result = self._stream.push(
            thermal, visible, name=f'pair @ {header.stamp.sec}.{header.stamp.nanosec:09d}')
        t2 = time.monotonic()
        self._pub_fused.publish(convert.numpy_to_image(result.image, s.output_encoding,
                                                       header=header))
        age = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        if self._pub_ir_mask is not None and result.masks is not None:
            for pub, mask in zip((self._pub_ir_mask, self._pub_rgb_mask), result.masks):
                pub.publish(convert.numpy_to_image(convert.float_to_mono8(mask), 'mono8',
                                                   header=header))
        if self._pub_f1 is not None and result.f1 is not None:
            self._pub_f1.publish(convert.numpy_to_image(convert.float_to_mono8(result.f1),
                                                        'mono8', header=header))
        t4 = time.monotonic()
        timings = dict(result.timings)  # the pipeline's stages, plus the node's own below
        timings.update(queue_wait=(t0 - pair.enqueued) * 1e3, convert=(t1 - t0) * 1e3,
                       publish=(t4 - t2) * 1e3, node=(t4 - t0) * 1e3, age=age)
        with self._lock:
            self._published += 1
            self._latency.append(timings)
            listeners = list(self._frame_listeners)
        for listener in listeners:
            try:
                listener(stamp_ns, timings)
            except Exception as exc:  # noqa: BLE001
                self._error('listener', f'{type(exc).__name__}: {exc}')

    def _on_diagnostics(self) -> None:
        try:
            self._pub_diag.publish(self.diagnostics())
        except Exception as exc:  # noqa: BLE001
            self._error('diagnostics', f'{type(exc).__name__}: {exc}')

    # ---- errors and diagnostics -------------------------------------------------------------

    def _error(self, kind: str, text: str) -> None:
        """Count an error and log it, throttled per kind."""
        with self._lock:
            self._errors[kind] += 1
            self._last_error = f'{kind}: {text}'
            count = self._errors[kind]
            logger = self._loggers.get(kind)
            if logger is None:
                logger = self._loggers[kind] = self.get_logger().get_child(kind)
        try:
            logger.error(f'{text} ({count} {kind} error(s) so far)',
                         throttle_duration_sec=self.LOG_THROTTLE_S)
        except Exception:  # noqa: BLE001 - logging during shutdown
            pass

    def counters(self) -> dict[str, Any]:
        """A snapshot of the node's counters (also what diagnostics report)."""
        sync = self._sync.stats() if self._sync is not None else None
        with self._lock:
            return {
                'thermal_received': sync.received[0] if sync else 0,
                'rgb_received': sync.received[1] if sync else 0,
                'pairs': self._pairs,
                'published': self._published,
                'dropped_stale': self._slot.replaced,
                'sync_dropped': {r: list(v) for r, v in sync.dropped.items()} if sync else {},
                'errors': dict(self._errors),
                'last_error': self._last_error,
            }

    def latency_stats(self) -> dict[str, tuple[float, float]]:
        """Mean and 95th percentile (ms) of each latency figure over the recent frames."""
        with self._lock:
            window = list(self._latency)
        return diagnostics.latency_stats(window)

    def diagnostics(self):
        """The DiagnosticArray this node publishes on /diagnostics."""
        s = self.settings
        c = self.counters()
        now = time.monotonic()
        totals = dict(zip(diagnostics.RATE_KEYS, (
            c['thermal_received'], c['rgb_received'], c['pairs'], c['published'],
            sum(c['errors'].values()))))
        rates, grown = self._rates.update(now, totals)
        identity = {'method': self.pipeline.method_name if self.pipeline else '',
                    **diagnostics.backend_values(self.backend_report),
                    'backend_requested': s.backend,
                    'sync_backend': self._sync.backend if self._sync else '',
                    'conversion': 'cv_bridge' if convert.cv_bridge_available() else 'numpy',
                    'output_encoding': s.output_encoding}
        subs = self._sync.subscriptions if self._sync is not None else []
        streams = [(name, subs[i].topic_name if i < len(subs) else '',
                    self._sync.last_arrival(i) if self._sync is not None else None)
                   for i, name in enumerate(('thermal', 'rgb'))]
        report = diagnostics.build_report(
            now=now, started=self._started, identity=identity,
            counters=c, rates=rates, new_errors=grown['errors'], streams=streams,
            stream_timeout=s.thermal_timeout,
            masks=self._stream.mask_stats() if self._stream is not None else {},
            latency=self.latency_stats())
        for name, text in report.warnings:
            throttle = (self.LOG_THROTTLE_S if name == 'masks'
                        else max(self.LOG_THROTTLE_S, s.thermal_timeout))
            self._stream_logger(name).warning(text, throttle_duration_sec=throttle)
        return diagnostics.to_msg(report, name=f'{self.get_name()}: thermal/RGB fusion',
                                  stamp=self.get_clock().now().to_msg())

    def _stream_logger(self, name: str):
        key = f'stream.{name}'
        with self._lock:
            logger = self._loggers.get(key)
            if logger is None:
                logger = self._loggers[key] = self.get_logger().get_child(name)
        return logger

    # ---- shutdown ---------------------------------------------------------------------------

    def _teardown(self) -> None:
        self._stop.set()
        self._slot.close()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=10.0)
        if self._sync is not None:
            self._sync.destroy()
            self._sync = None
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception as exc:  # noqa: BLE001
                self.get_logger().warning(f'mask worker did not stop cleanly: {exc}')
            self._stream = None
        if self.pipeline is not None:
            close = getattr(self.pipeline.method, 'close', None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass
            self.pipeline = None
        torch = sys.modules.get('torch')
        if torch is not None:
            try:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass

    def destroy_node(self) -> None:
        """Stop the worker (it finishes the frame in hand), free the models, destroy."""
        self._teardown()
        super().destroy_node()


def main(args=None) -> int:
    """Console entry ``sgdfuse_node``: spin the node until Ctrl-C or shutdown."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = SgdfuseNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except ParameterError as exc:
        rclpy.logging.get_logger('sgdfuse_node').fatal(str(exc))
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())


__all__ = ['SgdfuseNode', 'main']
