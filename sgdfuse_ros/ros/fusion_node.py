"""The fusion part of sgdfuse's two nodes: one class for both, the nodes stay thin.

:class:`NodeFusion` is everything :mod:`.node` (``sgdfuse_node``) and :mod:`.lifecycle`
(``sgdfuse_lifecycle_node``, a managed node) do between their images in and out, in the states
of a managed node:

``unconfigured``  parameters declared, nothing loaded
``inactive``      :meth:`~NodeFusion.configure`: settings checked, models loaded
                  (:class:`~sgdfuse_ros.fusion.stream.FusionStream`), publishers created
``active``        :meth:`~NodeFusion.activate`: the worker thread, the subscriptions and the
                  diagnostics timer run; :meth:`~NodeFusion.deactivate` stops them (the worker
                  finishes the frame in hand) and keeps the models
(back to)         :meth:`~NodeFusion.cleanup`: publishers destroyed, models freed;
``unconfigured``  :meth:`~NodeFusion.shutdown` does what is needed from any state

The plain node configures and activates when it is built. Threads: the executor runs the
subscriptions (in a callback group of their own, apart from the timer and the services, for a
multi-threaded executor) and the synchronizer, whose callback only puts
the newest pair into a :class:`~sgdfuse_ros.core.slots.LatestSlot` (a pair replaced there before
the worker took it is dropped as ``stale``). The worker thread converts, fuses and publishes.
A pair older than ``max_latency`` (node clock minus its RGB stamp) when the worker takes it, or
when its fused frame is ready, is dropped and counted: the node never publishes a frame older
than that. Drops are counted per reason (:data:`.diagnostics.PAIR_DROP_REASONS`), errors per
kind; nothing leaves a callback, and a publish that races the shutdown of the context is not an
error. Parameters: :mod:`sgdfuse_ros.params`, declared and changed at run time by
:class:`~.node_params.NodeParameters`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
import gc
import sys
import threading
import time
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

from sgdfuse_ros.core.imaging import ImageError
from sgdfuse_ros.core.slots import LatestSlot
from sgdfuse_ros.fusion import compose_fast
from sgdfuse_ros.fusion.autosize import AutoWorkSize, RateMeter, fixed_size_values
from sgdfuse_ros.fusion.pipeline import FusionPipeline
from sgdfuse_ros.fusion.stream import FusionStream
from sgdfuse_ros.fusion.temporal import TemporalSettings
from sgdfuse_ros.params import ParameterError
from . import convert, diagnostics
from .node_params import NodeParameters
from .publish_thread import PublishThread
from .outputs import Outputs, overriding_options, qos_factory
from .sync import SyncedSubscriptions

#: Seconds between two log lines of one kind of error or drop.
LOG_THROTTLE_S = 5.0
#: A header stamp further than this (seconds) from the node's clock when the pair arrived is not
#: on the node's clock: a bag replayed without ``/clock``, or a camera whose clock is not
#: synchronised. ``max_latency`` then counts from the pair's arrival instead of its stamp.
CLOCK_MISMATCH_S = 5.0


@dataclass
class _Pair:
    thermal: Any
    rgb: Any
    enqueued: float  # time.monotonic()
    received_ns: int  # node clock


class NodeFusion:
    """The fusion core of a node (see the module docstring). ``node``: the rclpy ``Node`` or
    ``LifecycleNode`` it works for; ``managed``: whether a lifecycle drives it (parameters
    that are read at configuration may then change while unconfigured). ``pipeline``: a built
    pipeline to fuse with instead of the one the parameters describe (tests, embedding); owned
    from then on, freed by :meth:`cleanup` (a later configure builds from the parameters)."""

    def __init__(self, node, *, managed: bool, pipeline: FusionPipeline | None = None):
        self.node = node
        self.managed = managed
        self.state = 'unconfigured'
        self.settings = None
        self.pipeline: FusionPipeline | None = None
        self.stream: FusionStream | None = None
        self.sync: SyncedSubscriptions | None = None
        self.pub_fused = self.pub_ir_mask = self.pub_rgb_mask = self.pub_f1 = None
        self.pub_diag = self.outputs = None  # outputs: camera_info, compressed copies
        self.worker: threading.Thread | None = None
        self._handed = pipeline
        #: Held by each state change and by run-time parameter changes (one at a time).
        self.transition = threading.RLock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._slot = LatestSlot()
        self._timer = None
        self._next_method = None  # a rebuilt method waiting for the worker's frame boundary
        self._loggers: dict[str, Any] = {}
        self._logged: dict[str, float] = {}  # kind -> time.monotonic() of its last line
        self._frame_listeners: list = []
        self.autosize: AutoWorkSize | None = None  # the automatic working size, when on
        self._rate = RateMeter()  # the period of the synchronised pairs
        self.publisher = PublishThread(self._publish, lambda exc: self.report_error(
            'publish', f'{type(exc).__name__}: {exc}'))
        self._images = MutuallyExclusiveCallbackGroup()
        self._timers = MutuallyExclusiveCallbackGroup()
        self._reset_counters()
        self.parameters = NodeParameters(self)

    # ---- run-time parameters ----------------------------------------------------------------

    def offer_method(self, built, options: dict) -> None:
        """Fuse with ``built`` (a method rebuilt for a run-time parameter, from ``options``)
        from the next frame on: the worker swaps it in between two frames, or now when the
        worker does not run."""
        with self._lock:
            stale, self._next_method = self._next_method, (built, options)
        if stale is not None:
            self.close_quietly(stale[0])
        if self.worker is None or not self.worker.is_alive():
            self._swap_method()

    def method_options(self) -> dict:
        """The options of the method that fuses from the next frame on (a rebuilt one waiting
        to be swapped in, else the pipeline's)."""
        with self._lock:
            if self._next_method is not None:
                return dict(self._next_method[1])
        return dict(self.pipeline.config.method_options) if self.pipeline else {}

    def _swap_method(self) -> None:
        with self._lock:
            pending, self._next_method = self._next_method, None
        if pending is None or self.pipeline is None:
            return
        built, options = pending
        old, self.pipeline.method = self.pipeline.method, built
        self.pipeline.config.method_options = options
        self.close_quietly(old)
        steps = getattr(getattr(built, 'refiner', None), 'steps', '?')
        self.node.get_logger().info(f'refiner now runs {steps} steps ('
                                    f'{diagnostics.backend_text(self.backend_report)})')

    @staticmethod
    def close_quietly(obj) -> None:
        """Close a method or mask provider that has ``close()`` (runtime sessions, engines)."""
        close = getattr(obj, 'close', None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 - freeing on the way out
                pass

    # ---- states -----------------------------------------------------------------------------

    def configure(self) -> None:
        """Check the settings, load the models, create the publishers (-> inactive)."""
        with self.transition:
            if self.state != 'unconfigured':
                return
            s = self.parameters.read_settings()
            if s.threads > 0:
                from sgdfuse_ros.runtime import set_threads
                set_threads(s.threads)
            pipeline, self._handed = self._handed, None
            try:
                if pipeline is None:
                    pipeline = FusionPipeline(s.pipeline_config())
            except (ValueError, OSError, ImportError, TypeError, RuntimeError, KeyError) as exc:
                # unknown method, missing or unreadable weights, a backend not installed here
                raise ParameterError(f'cannot build the fusion pipeline (method={s.method!r}, '
                                     f'backend={s.backend!r}): {type(exc).__name__}: {exc}'
                                     ) from exc
            self.pipeline, self.settings = pipeline, s
            auto = (s.auto_work_size and s.work_width == 0 and pipeline.config.work_size is None
                    and getattr(pipeline.method, 'blend_maps', False))  # keeps the detail
            self.autosize = AutoWorkSize(pipeline) if auto else None
            if auto and compose_fast.available():
                compose_fast.warm()  # compiled now, not on the first camera frame
            temporal = (TemporalSettings(strength=s.temporal_strength)
                        if s.temporal_strength > 0 else False)
            self.stream = FusionStream(pipeline, mask_rate=s.mask_rate,
                                       mask_max_age=s.mask_max_age_s, live=True,
                                       temporal=temporal)
            from diagnostic_msgs.msg import DiagnosticArray

            self.outputs = Outputs(self.node, s)  # the image publishers, camera_info, JPEG
            self.pub_fused, self.pub_ir_mask, self.pub_rgb_mask, self.pub_f1 = self.outputs.images
            self.pub_diag = self.node.create_publisher(DiagnosticArray, '/diagnostics', 10)
            self.state = 'inactive'

    def activate(self) -> None:
        """Start the worker, the subscriptions and the diagnostics timer (-> active)."""
        with self.transition:
            if self.state != 'inactive':
                return
            s = self.settings
            from sensor_msgs.msg import CompressedImage, Image

            self._stop.clear()
            with self._lock:
                self._stale_before += self._slot.replaced
                self._slot = LatestSlot()
            self.worker = threading.Thread(target=self._work_loop, name='sgdfuse-fusion',
                                           daemon=True)
            self.worker.start()
            self.publisher.start()
            self.sync = SyncedSubscriptions(
                self.node,
                [(CompressedImage if s.thermal_compressed else Image, s.thermal_topic),
                 (CompressedImage if s.rgb_compressed else Image, s.rgb_topic)],
                qos_factory(s), queue_size=s.sync_queue_size,
                slop=s.sync_slop, callback=self._on_pair, backend=s.sync_backend,
                on_error=lambda exc: self.report_error('callback', f'{type(exc).__name__}: {exc}'),
                callback_group=self._images, qos_overriding_options=overriding_options())
            self._timer = self.node.create_timer(s.diagnostics_period, self._on_diagnostics,
                                                 callback_group=self._timers)
            self._started = time.monotonic()
            self.state = 'active'
            self.node.get_logger().info(
                f'fusing {self.sync.subscriptions[0].topic_name} + '
                f'{self.sync.subscriptions[1].topic_name} -> {self.pub_fused.topic_name} '
                f'({s.output_encoding}) with method {self.pipeline.method_name!r} '
                f'({diagnostics.backend_text(self.backend_report)}), sync {self.sync.backend} '
                f'(slop {s.sync_slop} s, queue {s.sync_queue_size}), QoS {s.qos_reliability} '
                f'depth {s.qos_depth}, max_latency {s.max_latency:g} s, conversion '
                f'{"cv_bridge" if convert.cv_bridge_available() else "numpy"}, working size '
                f'{self._work_size_values()["working_size"]}')

    def deactivate(self) -> None:
        """Stop the subscriptions and the timer, then the worker after the frame in hand
        (-> inactive); the models stay loaded."""
        with self.transition:
            if self.state != 'active':
                return
            if self.sync is not None:
                self.sync.destroy()
                self.sync = None
            if self._timer is not None:
                self.node.destroy_timer(self._timer)
                self._timer = None
            self.stop_worker()
            self.state = 'inactive'

    def stop_worker(self) -> None:
        """Stop the worker thread (it finishes the frame in hand) and wait for it."""
        self._stop.set()
        self._slot.close()
        if self.worker is not None and self.worker.is_alive():
            self.worker.join(timeout=10.0)
        self.publisher.stop()

    def cleanup(self) -> None:
        """Destroy the publishers and free the models (-> unconfigured)."""
        with self.transition:
            self.deactivate()
            for name in ('pub_fused', 'pub_ir_mask', 'pub_rgb_mask', 'pub_f1', 'pub_diag'):
                pub = getattr(self, name)
                if pub is not None:
                    try:
                        self.node.destroy_publisher(pub)
                    except Exception:  # noqa: BLE001 - the node is being destroyed already
                        pass
                    setattr(self, name, None)
            if self.outputs is not None:
                self.outputs.destroy()
            if self.stream is not None:
                try:
                    self.stream.close()
                except Exception as exc:  # noqa: BLE001
                    self.node.get_logger().warning(f'mask worker did not stop cleanly: {exc}')
                self.stream = None
            with self._lock:
                pending, self._next_method = self._next_method, None
            for obj in ((pending or (None,))[0], self._handed,
                        self.pipeline.method if self.pipeline else None,
                        self.pipeline.mask_provider if self.pipeline else None):
                self.close_quietly(obj)
            self.pipeline = self._handed = self.autosize = None
            self.state = 'unconfigured'
        gc.collect()  # the models' memory goes now, not at some later collection
        torch = sys.modules.get('torch')
        if torch is not None:
            try:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass

    def shutdown(self) -> None:
        """From any state: stop everything and free the models (harmless twice)."""
        self.stop_worker()
        self.parameters.close()  # a refiner build under way: finished, then discarded
        self.cleanup()

    # ---- frames -----------------------------------------------------------------------------

    def _on_pair(self, thermal_msg, rgb_msg) -> None:
        # The executor thread, inside the synchronizer: enqueue only, never raise.
        try:
            if self._stop.is_set():
                return
            with self._lock:
                self._pairs += 1
                self._rate.tick(time.monotonic())
            self._slot.put(_Pair(thermal_msg, rgb_msg, time.monotonic(), self._now_ns()))
        except Exception as exc:  # noqa: BLE001
            self.report_error('callback', f'{type(exc).__name__}: {exc}')

    def _now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def _stopping(self) -> bool:
        """True once the worker is told to stop or the context is shut down (then a failed
        publish is the shutdown, not an error)."""
        return self._stop.is_set() or not self.node.context.ok()

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            pair = self._slot.get(timeout=0.2)
            if pair is None:
                continue
            if self._next_method is not None:
                self._swap_method()
            try:
                self._process(pair)
            except convert.NonFiniteError as exc:
                self._drop('thermal_nonfinite', str(exc))
            except ImageError as exc:
                self.report_error('input', str(exc))
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                if self._stopping():
                    return
                self.report_error('fusion', f'{type(exc).__name__}: {exc}')

    def _process(self, pair: _Pair) -> None:
        s = self.settings
        header = pair.rgb.header
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        limit_ms = s.max_latency * 1e3
        t0 = time.monotonic()
        ref_ns = stamp_ns  # what ages count from
        skew_s = (pair.received_ns - stamp_ns) / 1e9
        if abs(skew_s) > CLOCK_MISMATCH_S:
            self._log('clock', 'warning',
                      f"header stamps are {skew_s:.1f} s off this node's clock (a bag replayed "
                      'without /clock, or a camera clock not synchronised): max_latency counts '
                      "from each pair's arrival")
            ref_ns = pair.received_ns
        age_take = (self._now_ns() - ref_ns) / 1e6
        if limit_ms and age_take > limit_ms:
            self._drop('late_at_take', f'pair @ {stamp_ns / 1e9:.3f} was {age_take:.0f} ms old '
                                       f'when the worker took it (max_latency {s.max_latency:g}'
                                       ' s)')
            return
        thermal, replaced = convert.thermal_frame(pair.thermal, nonfinite=s.thermal_nonfinite)
        visible = convert.visible_from_msg(pair.rgb)
        if replaced:
            with self._lock:
                self._nonfinite_pixels += replaced
                self._nonfinite_frames += 1
        t1 = time.monotonic()
        output = 'mono' if s.output_encoding == 'mono8' else 'color'
        if self.pipeline.config.output != output:  # a run-time change, at a frame boundary
            self.pipeline.config.output = output
        if self.autosize is not None:
            self.autosize.before((visible.shape[1], visible.shape[0]))
        result = self.stream.push(
            thermal, visible, name=f'pair @ {header.stamp.sec}.{header.stamp.nanosec:09d}')
        t2 = time.monotonic()
        if self.autosize is not None:  # the frame's time; the networks' part scales with size
            note = self.autosize.after((t2 - t0) * 1e3, self._rate.period,
                                       result.timings.get('fuse'))
            if note:
                self._log('work_size', *note)
        age_fused = (self._now_ns() - ref_ns) / 1e6
        if limit_ms and age_fused > limit_ms:
            self._drop('late_at_publish', f'pair @ {stamp_ns / 1e9:.3f} was {age_fused:.0f} ms '
                                          f'old when fused (max_latency {s.max_latency:g} s)')
            return
        self.publisher.put((pair, result, ref_ns, stamp_ns, age_take, age_fused, t0, t1, t2))

    def _publish(self, item) -> None:
        """The publishing thread: a fused frame and what goes beside it, then its figures."""
        pair, result, ref_ns, stamp_ns, age_take, age_fused, t0, t1, t2 = item
        s, header = self.settings, pair.rgb.header
        self.pub_fused.publish(convert.numpy_to_image(result.image, s.output_encoding,
                                                      header=header))
        age = (self._now_ns() - ref_ns) / 1e6
        if self.pub_ir_mask is not None and result.masks is not None:
            for pub, mask in zip((self.pub_ir_mask, self.pub_rgb_mask), result.masks):
                pub.publish(convert.numpy_to_image(convert.float_to_mono8(mask), 'mono8',
                                                   header=header))
        if self.pub_f1 is not None and result.f1 is not None:
            self.pub_f1.publish(convert.numpy_to_image(convert.float_to_mono8(result.f1),
                                                       'mono8', header=header))
        self.outputs.publish(result, s.output_encoding, header)
        t4 = time.monotonic()
        timings = dict(result.timings)  # the pipeline's stages, plus the node's own below
        timings.update(age_receipt=(pair.received_ns - ref_ns) / 1e6, age_take=age_take,
                       queue_wait=(t0 - pair.enqueued) * 1e3, convert=(t1 - t0) * 1e3,
                       age_fused=age_fused, publish=(t4 - t2) * 1e3, node=(t4 - t0) * 1e3,
                       age=age)
        with self._lock:
            self._published += 1
            self._latency.append(timings)
            listeners = list(self._frame_listeners)
        for listener in listeners:
            try:
                listener(stamp_ns, timings)
            except Exception as exc:  # noqa: BLE001
                self.report_error('listener', f'{type(exc).__name__}: {exc}')

    def add_frame_listener(self, listener) -> None:
        """Call ``listener(stamp_ns, timings_ms)`` (worker thread) after each published frame;
        ``timings_ms`` holds the pipeline's stages plus the node's figures of
        :data:`.diagnostics.LATENCY_KEYS`. For benchmarks and tools."""
        with self._lock:
            self._frame_listeners.append(listener)

    # ---- counters, errors and diagnostics ---------------------------------------------------

    def _reset_counters(self) -> None:
        self._errors: collections.Counter[str] = collections.Counter()
        self._dropped: collections.Counter[str] = collections.Counter()
        self._last_error = ''
        self._latency: collections.deque[dict[str, float]] = collections.deque(maxlen=300)
        self._pairs = self._published = 0
        self._stale_before = 0  # stale drops of the slots of earlier activations
        self._nonfinite_pixels = self._nonfinite_frames = 0
        self._started = time.monotonic()
        self._rates = diagnostics.Rates()

    def _logger(self, key: str):
        with self._lock:
            logger = self._loggers.get(key)
            if logger is None:
                logger = self._loggers[key] = self.node.get_logger().get_child(key)
        return logger

    def _log(self, kind: str, level: str, text: str) -> None:
        """Log one line of ``kind`` at most every :data:`LOG_THROTTLE_S` seconds. Throttled
        here, not by rclpy: its logger finds the caller's source line on every call, throttled
        or not (about 1 ms with the interpreter lock held, per dropped pair)."""
        now = time.monotonic()
        with self._lock:
            if now - self._logged.get(kind, -LOG_THROTTLE_S) < LOG_THROTTLE_S:
                return
            self._logged[kind] = now
        try:
            getattr(self._logger(kind), level)(text)
        except Exception:  # noqa: BLE001 - logging during shutdown
            pass

    def report_error(self, kind: str, text: str) -> None:
        """Count an error of ``kind`` and log it, throttled per kind."""
        with self._lock:
            self._errors[kind] += 1
            self._last_error = f'{kind}: {text}'
            count = self._errors[kind]
        self._log(kind, 'error', f'{text} ({count} {kind} error(s) so far)')

    def _drop(self, reason: str, text: str) -> None:
        """Count a dropped pair and log why, throttled per reason."""
        with self._lock:
            self._dropped[reason] += 1
            count = self._dropped[reason]
        self._log(f'dropped_{reason}', 'warning', f'dropped: {text} ({count} so far)')

    def counters(self) -> dict[str, Any]:
        """A snapshot of the node's counters (also what diagnostics report)."""
        sync = self.sync.stats() if self.sync is not None else None
        pipeline = self.pipeline
        with self._lock:
            dropped = {r: self._dropped.get(r, 0) for r in diagnostics.PAIR_DROP_REASONS}
            dropped['stale'] = self._stale_before + self._slot.replaced + self.publisher.replaced
            return {
                'thermal_received': sync.received[0] if sync else 0,
                'rgb_received': sync.received[1] if sync else 0,
                'pairs': self._pairs,
                'published': self._published,
                'fused_replaced': self.publisher.replaced,  # in 'stale' too: never published
                'dropped': dropped,
                'thermal_nonfinite_pixels': self._nonfinite_pixels,
                'thermal_nonfinite_frames': self._nonfinite_frames,
                'thermal_gain_held': pipeline.gain.held if pipeline is not None else 0,
                'sync_dropped': {r: list(v) for r, v in sync.dropped.items()} if sync else {},
                'errors': dict(self._errors),
                'last_error': self._last_error,
            }

    def latency_stats(self) -> dict[str, tuple[float, float]]:
        """Mean and 95th percentile (ms) of each latency figure over the recent frames."""
        with self._lock:
            window = list(self._latency)
        return diagnostics.latency_stats(window)

    @property
    def backend_report(self) -> dict[str, str] | None:
        """Network -> the backend that really runs it, with any fallback and its reason: the
        ``backend_report()`` of the method and, for methods that use masks, of the mask
        provider; empty when no network runs (or no model is loaded); None when the method
        does not report it."""
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

    def _on_diagnostics(self) -> None:
        try:
            self.pub_diag.publish(self.diagnostics())
        except Exception as exc:  # noqa: BLE001
            if not self._stopping():
                self.report_error('diagnostics', f'{type(exc).__name__}: {exc}')

    def _work_size_values(self) -> dict[str, str]:
        return (self.autosize.values() if self.autosize is not None
                else fixed_size_values(self.pipeline))

    def diagnostics(self):
        """The DiagnosticArray published on /diagnostics."""
        s = self.settings
        c = self.counters()
        now = time.monotonic()
        totals = dict(zip(diagnostics.RATE_KEYS, (
            c['thermal_received'], c['rgb_received'], c['pairs'], c['published'],
            sum(c['errors'].values()),
            c['dropped']['late_at_take'] + c['dropped']['late_at_publish'])))
        rates, grown = self._rates.update(now, totals)
        identity = {'method': self.pipeline.method_name if self.pipeline else '',
                    **diagnostics.backend_values(self.backend_report),
                    'backend_requested': s.backend if s else '',
                    'state': self.state,
                    'sync_backend': self.sync.backend if self.sync else '',
                    'conversion': 'cv_bridge' if convert.cv_bridge_available() else 'numpy',
                    'output_encoding': s.output_encoding if s else '',
                    **self._work_size_values()}
        subs = self.sync.subscriptions if self.sync is not None else []
        streams = [(name, subs[i].topic_name if i < len(subs) else '',
                    self.sync.last_arrival(i) if self.sync is not None else None)
                   for i, name in enumerate(('thermal', 'rgb'))]
        report = diagnostics.build_report(
            now=now, started=self._started, identity=identity, counters=c, rates=rates,
            new_errors=grown['errors'], streams=streams,
            stream_timeout=s.thermal_timeout if s else 1.0,
            masks=self.stream.mask_stats() if self.stream is not None else {},
            latency=self.latency_stats(), new_late=grown['late'], new_fused=grown['fused'],
            max_latency=s.max_latency if s else 0.0)
        for name, text in report.warnings:
            throttle = (LOG_THROTTLE_S if name in ('masks', 'latency')
                        else max(LOG_THROTTLE_S, s.thermal_timeout))
            try:
                self._logger(f'stream.{name}').warning(text, throttle_duration_sec=throttle)
            except Exception:  # noqa: BLE001 - logging during shutdown
                pass
        return diagnostics.to_msg(report, name=f'{self.node.get_name()}: thermal/RGB fusion',
                                  stamp=self.node.get_clock().now().to_msg())


class FusionNodeMixin:
    """What both nodes show of their :class:`NodeFusion` (``self.fusion``)."""

    fusion: NodeFusion

    @property
    def settings(self):
        """The node's validated parameters (:class:`sgdfuse_ros.params.NodeSettings`); None
        before the first configuration."""
        return self.fusion.settings

    @property
    def pipeline(self) -> FusionPipeline | None:
        return self.fusion.pipeline

    @property
    def backend_report(self) -> dict[str, str] | None:
        return self.fusion.backend_report

    def counters(self) -> dict[str, Any]:
        return self.fusion.counters()

    def latency_stats(self) -> dict[str, tuple[float, float]]:
        return self.fusion.latency_stats()

    def diagnostics(self):
        return self.fusion.diagnostics()

    def add_frame_listener(self, listener) -> None:
        self.fusion.add_frame_listener(listener)


__all__ = ['FusionNodeMixin', 'LOG_THROTTLE_S', 'NodeFusion']
