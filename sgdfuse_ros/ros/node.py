"""The ``sgdfuse_node`` ROS 2 node: synchronized thermal + RGB images in, fused images out.

A thin adapter around :class:`~sgdfuse_ros.fusion.pipeline.FusionPipeline`. Threads:

* the executor thread runs the subscriptions, the synchronizer and the diagnostics timer. The
  sync callback only puts the newest pair into :class:`LatestSlot`, a drop-oldest queue of size
  one (a pair still waiting there when a newer one arrives is counted as dropped, stale);
* one worker thread takes pairs from the slot, converts them, fuses and publishes. A slow model
  therefore skips stale pairs instead of building a backlog;
* for methods that use semantic masks, a mask worker (``fusion.masks.MaskWorker``) refreshes the
  masks at ``mask_rate`` Hz on the newest frames while fusion reuses the latest masks.

No exception leaves a callback: each error is counted by kind and logged, throttled per kind.
Everything the node does is visible on ``/diagnostics``.

Start it with ``sgdfuse_node --ros-args --params-file config/sgdfuse.yaml`` (venv) or
``ros2 run sgdfuse_ros sgdfuse_node --ros-args --params-file ...`` (ROS workspace).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
import math
import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
import rclpy.logging
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rcl_interfaces.msg import ParameterDescriptor

from sgdfuse_ros.core.imaging import ImageError, parse_homography
from sgdfuse_ros.core.slots import LatestSlot
from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig
from . import convert
from sgdfuse_ros.core.matching import (DROP_REASONS, SYNC_BACKENDS, SyncedSubscriptions,
                                       message_filters_available)

RELIABILITIES = ('best_effort', 'reliable')
OUTPUT_ENCODINGS = ('rgb8', 'mono8')
BACKENDS = ('auto', 'torch', 'onnxruntime', 'tensorrt')
#: Latency figures reported first in diagnostics (ms): the pipeline's stages, then the node's
#: (``queue_wait`` in the slot, ``convert`` messages -> arrays, ``publish`` building and sending,
#: ``node`` all of the worker's time, ``age`` RGB stamp -> fused publish). Other stages a method
#: reports (e.g. ``stage1``) follow.
LATENCY_KEYS = ('queue_wait', 'convert', 'thermal', 'color', 'masks', 'resize', 'fuse', 'merge',
                'total', 'publish', 'node', 'age')


class ParameterError(ValueError):
    """Invalid node parameters; the message lists every problem."""


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Param:
    name: str
    default: Any
    description: str
    #: 'str', 'bool', 'int', 'float' (ints accepted), 'floats' (a list of numbers, may be empty)
    kind: str


PARAMETERS: tuple[_Param, ...] = (
    _Param('thermal_topic', '/thermal/image_raw', 'Thermal image topic (sensor_msgs/Image: '
           'mono8, 8UC1, mono16, 16UC1 or 32FC1; or CompressedImage with thermal_compressed).',
           'str'),
    _Param('rgb_topic', '/rgb/image_raw', 'Visible image topic (sensor_msgs/Image: rgb8, bgr8, '
           'rgba8, bgra8, mono8; or CompressedImage with rgb_compressed). Its header is the '
           "fused image's header.", 'str'),
    _Param('fused_topic', '/fused/image_raw', 'Output topic of the fused sensor_msgs/Image.',
           'str'),
    _Param('thermal_compressed', False, 'Subscribe to sensor_msgs/CompressedImage on '
           'thermal_topic (e.g. /thermal/image_raw/compressed; PNG for 16-bit).', 'bool'),
    _Param('rgb_compressed', False, 'Subscribe to sensor_msgs/CompressedImage on rgb_topic.',
           'bool'),
    _Param('sync_slop', 0.05, 'Approximate time sync: largest stamp difference (s) between the '
           'thermal and RGB frame of one pair; > 0.', 'float'),
    _Param('sync_queue_size', 10, 'Approximate time sync: frames kept per input while waiting '
           'for a partner; >= 1.', 'int'),
    _Param('sync_backend', 'auto', 'Synchronizer: auto (message_filters when installed), '
           'message_filters, or builtin (same rule, with drop reasons).', 'str'),
    _Param('qos_reliability', 'best_effort', 'QoS reliability of the image subscriptions and '
           'publishers: best_effort (sensor data) or reliable.', 'str'),
    _Param('qos_depth', 5, 'QoS history depth of the image subscriptions and publishers; '
           '>= 1.', 'int'),
    _Param('method', 'auto', 'Fusion method (auto = the best installed: sgdfuse, stage1, '
           'laplacian; or a baseline: mean, max, laplacian).', 'str'),
    _Param('backend', 'auto', 'Inference backend of network methods: auto, torch, '
           'onnxruntime or tensorrt.', 'str'),
    _Param('weights', '', 'Weights file of the fusion network (empty = the shipped ones).',
           'str'),
    _Param('engine_dir', '', 'Folder of exported ONNX files / cached TensorRT engines (empty = '
           'the default).', 'str'),
    _Param('mask_provider', 'auto', 'Semantic mask provider for methods that use masks (auto, '
           'mobile_sam, sam, lite_medsam, saliency, none).', 'str'),
    _Param('mask_checkpoint', '', 'Checkpoint of the SAM-family mask model (mobile_sam, sam).',
           'str'),
    _Param('mask_input_size', 0, 'Image-encoder input side (pixels, a multiple of 16) of a '
           "SAM-family mask model (0 = the model's default: lite_medsam 160, mobile_sam 512, "
           'sam vit_b 256, vit_l 192, vit_h 128); >= 0.', 'int'),
    _Param('mask_rate', 2.0, 'Mask refresh rate (Hz) of the mask worker thread; > 0.', 'float'),
    _Param('mask_max_age', 0.0, 'Masks older than this (s) are reported as stale on /diagnostics '
           'and in the log (0 = three refresh periods, at least 1 s); >= 0.', 'float'),
    _Param('refiner_steps', 0, "Diffusion refiner steps (0 = the method's default); >= 0.",
           'int'),
    _Param('work_width', 0, "Width the fusion method runs at (0 = the RGB frame's own; set "
           'work_width and work_height together).', 'int'),
    _Param('work_height', 0, "Height the fusion method runs at (0 = the RGB frame's own).",
           'int'),
    _Param('output_encoding', 'rgb8', "Encoding of the fused image: rgb8 (RGB frame's colour "
           'restored) or mono8 (fused luma).', 'str'),
    _Param('thermal_low_percentile', 1.0, 'Thermal gain: low bound percentile (16-bit and float '
           'input), in [0, 100).', 'float'),
    _Param('thermal_high_percentile', 99.0, 'Thermal gain: high bound percentile, in (low, '
           '100].', 'float'),
    _Param('thermal_smoothing', 0.9, 'Thermal gain: temporal smoothing of the bounds, in '
           '[0, 1) (0 = per frame; higher = steadier).', 'float'),
    _Param('homography', [], 'Thermal -> RGB pixel homography, 9 numbers row-major (empty = '
           'the streams are already registered and of the same size).', 'floats'),
    _Param('publish_masks', False, 'Also publish the semantic masks (mono8) on ~/ir_mask and '
           '~/rgb_mask.', 'bool'),
    _Param('publish_f1', False, 'Also publish the stage-1 fused image F1 (mono8) on ~/f1 for '
           'methods that have one.', 'bool'),
    _Param('thermal_timeout', 1.0, 'Seconds without a thermal (or RGB) frame after which '
           'diagnostics warn that the stream stopped; > 0.', 'float'),
    _Param('diagnostics_period', 1.0, 'Period (s) of the /diagnostics message; > 0.', 'float'),
)


@dataclass(frozen=True)
class NodeSettings:
    """The node's validated parameters."""

    thermal_topic: str
    rgb_topic: str
    fused_topic: str
    thermal_compressed: bool
    rgb_compressed: bool
    sync_slop: float
    sync_queue_size: int
    sync_backend: str
    qos_reliability: str
    qos_depth: int
    method: str
    backend: str
    weights: str
    engine_dir: str
    mask_provider: str
    mask_checkpoint: str
    mask_input_size: int
    mask_rate: float
    mask_max_age: float
    refiner_steps: int
    work_width: int
    work_height: int
    output_encoding: str
    thermal_low_percentile: float
    thermal_high_percentile: float
    thermal_smoothing: float
    homography: tuple[float, ...]
    publish_masks: bool
    publish_f1: bool
    thermal_timeout: float
    diagnostics_period: float

    def pipeline_config(self) -> PipelineConfig:
        method_options: dict[str, Any] = {}
        if self.backend != 'auto':
            method_options['backend'] = self.backend
        if self.weights:
            method_options['weights'] = self.weights
        if self.engine_dir:  # the runtime loader's option name (runtime/loader.py)
            method_options['engines_dir'] = self.engine_dir
        if self.refiner_steps > 0:
            method_options['steps'] = self.refiner_steps
        mask_options: dict[str, Any] = {}
        if self.mask_checkpoint:
            mask_options['checkpoint'] = self.mask_checkpoint
        if self.mask_input_size > 0:
            mask_options['input_size'] = self.mask_input_size
        work = (self.work_width, self.work_height) if self.work_width > 0 else None
        return PipelineConfig(
            method=self.method, method_options=method_options,
            mask_provider=self.mask_provider, mask_options=mask_options,
            homography=np.array(self.homography).reshape(3, 3) if self.homography else None,
            work_size=work, output='mono' if self.output_encoding == 'mono8' else 'color',
            thermal_low_percentile=self.thermal_low_percentile,
            thermal_high_percentile=self.thermal_high_percentile,
            thermal_smoothing=self.thermal_smoothing)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_settings(values: dict[str, Any]) -> NodeSettings:
    """Check raw parameter values (name -> value; missing ones take their defaults).

    Raises :class:`ParameterError` listing every problem at once.
    """
    problems: list[str] = []
    out: dict[str, Any] = {}
    known = {p.name for p in PARAMETERS}
    for name in values:
        if name not in known:
            problems.append(f'unknown parameter {name!r}')
    for p in PARAMETERS:
        v = values.get(p.name, p.default)
        if p.kind == 'str':
            ok = isinstance(v, str)
        elif p.kind == 'bool':
            ok = isinstance(v, bool)
        elif p.kind == 'int':
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif p.kind == 'float':
            ok = _is_number(v) and math.isfinite(v)
            v = float(v) if ok else v
        else:  # floats
            if v is None:
                v = []
            ok = (isinstance(v, (list, tuple, bytes, np.ndarray))
                  and all(_is_number(x) for x in v))
            v = tuple(float(x) for x in v) if ok else v
        if not ok:
            problems.append(f'{p.name}: expected {_KIND_TEXT[p.kind]}, got {v!r}')
        out[p.name] = v
    if problems:  # type problems first: the range checks below assume the types
        raise ParameterError('invalid parameters: ' + '; '.join(problems))

    def need(cond: bool, text: str) -> None:
        if not cond:
            problems.append(text)

    for name in ('thermal_topic', 'rgb_topic', 'fused_topic'):
        need(bool(out[name].strip()) and ' ' not in out[name],
             f'{name}: not a topic name: {out[name]!r}')
    need(len({out['thermal_topic'], out['rgb_topic'], out['fused_topic']}) == 3,
         'thermal_topic, rgb_topic and fused_topic must differ')
    need(out['sync_slop'] > 0, f'sync_slop must be > 0 s, got {out["sync_slop"]}')
    need(out['sync_queue_size'] >= 1,
         f'sync_queue_size must be >= 1, got {out["sync_queue_size"]}')
    need(out['sync_backend'] in SYNC_BACKENDS,
         f'sync_backend must be one of {", ".join(SYNC_BACKENDS)}, got {out["sync_backend"]!r}')
    need(out['sync_backend'] != 'message_filters' or message_filters_available(),
         'sync_backend is message_filters but message_filters is not installed (use auto)')
    need(out['qos_reliability'] in RELIABILITIES,
         f'qos_reliability must be one of {", ".join(RELIABILITIES)}, got '
         f'{out["qos_reliability"]!r}')
    need(out['qos_depth'] >= 1, f'qos_depth must be >= 1, got {out["qos_depth"]}')
    need(out['backend'] in BACKENDS,
         f'backend must be one of {", ".join(BACKENDS)}, got {out["backend"]!r}')
    need(bool(out['method'].strip()), 'method must not be empty')
    need(bool(out['mask_provider'].strip()), 'mask_provider must not be empty')
    need(out['mask_rate'] > 0, f'mask_rate must be > 0 Hz, got {out["mask_rate"]}')
    need(out['mask_input_size'] == 0 or (out['mask_input_size'] >= 64
                                          and out['mask_input_size'] % 16 == 0),
         f'mask_input_size must be 0 (the default) or a multiple of 16 of at least 64, got '
         f'{out["mask_input_size"]}')
    need(out['mask_max_age'] >= 0, f'mask_max_age must be >= 0 s, got {out["mask_max_age"]}')
    need(out['refiner_steps'] >= 0, f'refiner_steps must be >= 0, got {out["refiner_steps"]}')
    w, h = out['work_width'], out['work_height']
    need(w >= 0 and h >= 0 and (w > 0) == (h > 0),
         f'work_width and work_height must both be 0 or both > 0, got {w}x{h}')
    need(out['output_encoding'] in OUTPUT_ENCODINGS,
         f'output_encoding must be one of {", ".join(OUTPUT_ENCODINGS)}, got '
         f'{out["output_encoding"]!r}')
    lo, hi = out['thermal_low_percentile'], out['thermal_high_percentile']
    need(0.0 <= lo < hi <= 100.0,
         f'need 0 <= thermal_low_percentile < thermal_high_percentile <= 100, got {lo}, {hi}')
    need(0.0 <= out['thermal_smoothing'] < 1.0,
         f'thermal_smoothing must be in [0, 1), got {out["thermal_smoothing"]}')
    if out['homography']:
        try:
            hom = parse_homography(out['homography'])
            if hom is not None and np.allclose(hom / hom[2, 2], np.eye(3), atol=1e-12):
                out['homography'] = ()  # identity: the streams are registered
        except ValueError as exc:
            problems.append(f'homography: {exc}')
    need(out['thermal_timeout'] > 0,
         f'thermal_timeout must be > 0 s, got {out["thermal_timeout"]}')
    need(out['diagnostics_period'] > 0,
         f'diagnostics_period must be > 0 s, got {out["diagnostics_period"]}')
    if problems:
        raise ParameterError('invalid parameters: ' + '; '.join(problems))
    return NodeSettings(**out)


_KIND_TEXT = {'str': 'a string', 'bool': 'true or false', 'int': 'an integer',
              'float': 'a finite number', 'floats': 'a list of numbers'}


# --------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------

class _MaskFeed:
    """Runs a :class:`~sgdfuse_ros.masks.MaskWorker` beside fusion: the fusion thread
    submits each frame pair and takes the worker's latest masks, never waiting for them.

    Until the first masks exist (or when the frame size changed), fusion gets empty masks
    rather than computing them itself: a SAM-family provider takes seconds per refresh and
    would stall the fused stream."""

    def __init__(self, provider, rate_hz: float, max_age_s: float | None):
        from sgdfuse_ros.masks import MaskWorker

        self.worker = MaskWorker(provider, rate_hz=rate_hz, max_age_s=max_age_s, start=True)
        self.last = None  # the MaskSnapshot fusion used last

    def submit(self, ir: np.ndarray, visible: np.ndarray) -> None:
        self.worker.submit(ir, visible)

    def latest(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        snap = self.worker.latest()
        self.last = snap
        if snap is not None:
            ir, vis = snap.as_tuple()
            if ir.shape[:2] == shape and vis.shape[:2] == shape:
                return ir, vis
        empty = np.zeros(shape, np.float32)
        return empty, empty

    def stats(self) -> dict[str, Any]:
        out = self.worker.stats()
        snap = self.last  # age now: the worker's clock is time.monotonic
        out['age_s'] = None if snap is None else time.monotonic() - snap.stamp
        out['stale'] = out['age_s'] is None or out['age_s'] > out['max_age_s']
        return out

    def close(self) -> None:
        self.worker.stop(timeout=5.0)


@dataclass
class _Pair:
    thermal: Any
    rgb: Any
    enqueued: float  # time.monotonic()


# --------------------------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------------------------

def _qos(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=(ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort'
                     else ReliabilityPolicy.RELIABLE),
        durability=DurabilityPolicy.VOLATILE)


class SgdfuseNode(Node):
    """Synchronized thermal + RGB in, fused image out (see the module docstring)."""

    #: Seconds between two log lines of one kind of error.
    LOG_THROTTLE_S = 5.0

    def __init__(self, node_name: str = 'sgdfuse', **kwargs):
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
        self._mask_feed: _MaskFeed | None = None
        self._sync: SyncedSubscriptions | None = None
        self.pipeline: FusionPipeline | None = None
        self._slot = LatestSlot()
        self._started = time.monotonic()
        self._rate_prev: tuple[float, dict[str, int]] | None = None
        try:
            self._setup()
        except Exception:
            self._teardown()
            super().destroy_node()
            raise

    # ---- set-up -----------------------------------------------------------------------------

    def _declare_parameters(self) -> tuple[dict[str, Any], list[str]]:
        """Declare every parameter; returns the values and the type problems."""
        values: dict[str, Any] = {}
        problems = []
        for p in PARAMETERS:
            dynamic = p.kind in ('float', 'floats')  # accept 1 for 1.0 and [] for no homography
            desc = ParameterDescriptor(description=p.description, read_only=True,
                                       dynamic_typing=dynamic)
            try:
                values[p.name] = self.declare_parameter(p.name, p.default, desc).value
            except Exception as exc:  # noqa: BLE001 - a wrong type in the YAML or command line
                problems.append(f'{p.name}: expected {_KIND_TEXT[p.kind]} '
                                f'({type(exc).__name__}: {str(exc).split(": " + p.name)[0]})')
        return values, problems

    def _setup(self) -> None:
        values, problems = self._declare_parameters()
        try:
            self.settings = validate_settings(values)
        except ParameterError as exc:
            problems.append(str(exc).removeprefix('invalid parameters: '))
        if problems:
            raise ParameterError('invalid parameters: ' + '; '.join(problems))
        s = self.settings
        try:
            self.pipeline = FusionPipeline(s.pipeline_config())
        except (ValueError, OSError, ImportError, TypeError, RuntimeError, KeyError) as exc:
            # unknown method, missing or unreadable weights, a backend that is not installed
            raise ParameterError(f'cannot build the fusion pipeline (method={s.method!r}, '
                                 f'backend={s.backend!r}): {type(exc).__name__}: {exc}'
                                 ) from exc
        if self.pipeline.method.uses_masks:
            try:
                self._mask_feed = _MaskFeed(self.pipeline.mask_provider, s.mask_rate,
                                            s.mask_max_age if s.mask_max_age > 0 else None)
            except Exception as exc:  # noqa: BLE001 - worker missing or of another interface
                self.get_logger().warning(
                    f'no mask worker ({type(exc).__name__}: {exc}); masks are computed for '
                    'every frame inside fusion, which is slow')

        qos = _qos(s.qos_reliability, s.qos_depth)
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
            f'(backend {self.backend_name}), sync {self._sync.backend} '
            f'(slop {s.sync_slop} s, queue {s.sync_queue_size}), QoS {s.qos_reliability} '
            f'depth {s.qos_depth}, conversion '
            f'{"cv_bridge" if convert.cv_bridge_available() else "numpy"}')

    def add_frame_listener(self, listener) -> None:
        """Call ``listener(stamp_ns, timings_ms)`` (worker thread) after each published frame;
        ``timings_ms`` holds the pipeline's stages plus ``queue_wait``, ``convert``,
        ``publish``, ``node`` and ``age`` (RGB stamp to publish). For benchmarks and tools."""
        with self._lock:
            self._frame_listeners.append(listener)

    @property
    def backend_name(self) -> str:
        """The backend the method reports (a name, or a runtime object with ``name``), else
        the ``backend`` parameter."""
        method = self.pipeline.method if self.pipeline is not None else None
        backend = getattr(method, 'backend', None)
        if backend is None:
            return self.settings.backend
        if isinstance(backend, str):
            return backend
        return str(getattr(backend, 'name', None) or type(backend).__name__)

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
        masks = self._mask_feed.latest(visible.shape[:2]) if self._mask_feed else None
        header = pair.rgb.header
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        result = self.pipeline.fuse(thermal, visible, masks=masks,
                                    name=f'pair @ {header.stamp.sec}.{header.stamp.nanosec:09d}')
        t2 = time.monotonic()
        if self._mask_feed is not None:
            try:
                self._mask_feed.submit(result.ir, visible)
            except Exception as exc:  # noqa: BLE001
                self._error('masks', f'{type(exc).__name__}: {exc}')
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
        out = {}
        seen = {k for t in window for k in t}
        for key in [k for k in LATENCY_KEYS if k in seen] + sorted(seen - set(LATENCY_KEYS)):
            vals = [t[key] for t in window if key in t]
            if vals:
                out[key] = (float(np.mean(vals)), float(np.percentile(vals, 95)))
        return out

    def diagnostics(self):
        """The DiagnosticArray this node publishes on /diagnostics."""
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        s = self.settings
        c = self.counters()
        now = time.monotonic()
        totals = {'thermal': c['thermal_received'], 'rgb': c['rgb_received'],
                  'pairs': c['pairs'], 'fused': c['published'],
                  'errors': sum(c['errors'].values())}
        rates = {k: 0.0 for k in totals}
        new_errors = 0
        if self._rate_prev is not None:
            t_prev, prev = self._rate_prev
            dt = max(now - t_prev, 1e-6)
            rates = {k: (totals[k] - prev[k]) / dt for k in totals}
            new_errors = totals['errors'] - prev['errors']
        self._rate_prev = (now, totals)

        level, problems = DiagnosticStatus.OK, []
        for index, name in ((0, 'thermal'), (1, 'rgb')):
            last = self._sync.last_arrival(index) if self._sync is not None else None
            waited = now - (last if last is not None else self._started)
            if waited > s.thermal_timeout:
                level = DiagnosticStatus.WARN
                topic = self._sync.subscriptions[index].topic_name if self._sync else ''
                if last is None:
                    text = f'no {name} frame yet ({waited:.1f} s since start)'
                else:
                    text = f'{name} stream stopped ({waited:.1f} s without a frame)'
                problems.append(text)
                self._stream_logger(name).warning(
                    f'{text} on {topic}',
                    throttle_duration_sec=max(self.LOG_THROTTLE_S, s.thermal_timeout))
        if new_errors:
            level = DiagnosticStatus.WARN
            problems.append(f'{new_errors} error(s) in the last period; last: {c["last_error"]}')

        values = {
            'method': self.pipeline.method_name if self.pipeline else '',
            'backend': self.backend_name,
            'sync_backend': self._sync.backend if self._sync else '',
            'conversion': 'cv_bridge' if convert.cv_bridge_available() else 'numpy',
            'output_encoding': s.output_encoding,
            'thermal_rate_hz': f'{rates["thermal"]:.2f}',
            'rgb_rate_hz': f'{rates["rgb"]:.2f}',
            'pair_rate_hz': f'{rates["pairs"]:.2f}',
            'fused_rate_hz': f'{rates["fused"]:.2f}',
            'thermal_received': str(c['thermal_received']),
            'rgb_received': str(c['rgb_received']),
            'pairs_synced': str(c['pairs']),
            'fused_published': str(c['published']),
            'pairs_dropped_stale': str(c['dropped_stale']),
            'errors_total': str(totals['errors']),
        }
        for reason in DROP_REASONS:
            counts = c['sync_dropped'].get(reason, [0, 0])
            values[f'sync_dropped_{reason}'] = f'thermal {counts[0]}, rgb {counts[1]}'
        for kind, n in sorted(c['errors'].items()):
            values[f'errors_{kind}'] = str(n)
        values['last_error'] = c['last_error']
        if self._mask_feed is not None:
            m = self._mask_feed.stats()
            provider = self.pipeline.mask_provider
            values['mask_provider'] = (provider.describe() if hasattr(provider, 'describe')
                                       else type(provider).__name__)
            values['mask_refreshes'] = str(m['refreshes'])
            values['mask_compute_ms'] = ('' if m['median_compute_ms'] is None
                                         else f'median {m["median_compute_ms"]:.0f}')
            values['mask_age_s'] = '' if m['age_s'] is None else f'{m["age_s"]:.2f}'
            values['mask_errors'] = str(m['errors'])
            if m['stale'] and now - self._started > m['max_age_s']:
                level = max(level, DiagnosticStatus.WARN)
                text = ('no masks yet' if m['age_s'] is None else
                        f'masks are {m["age_s"]:.1f} s old (mask_max_age {m["max_age_s"]:.1f} s)')
                problems.append(text)
                self._stream_logger('masks').warning(
                    f'{text}; fusing with the latest masks (last mask error: '
                    f'{m["last_error"]})', throttle_duration_sec=self.LOG_THROTTLE_S)
        for key, (mean, p95) in self.latency_stats().items():
            values[f'latency_{key}_ms'] = f'mean {mean:.1f}, p95 {p95:.1f}'

        status = DiagnosticStatus(
            level=level, name=f'{self.get_name()}: thermal/RGB fusion',
            hardware_id='sgdfuse_ros',
            message='; '.join(problems) if problems else (
                f'fusing at {rates["fused"]:.1f} Hz with {values["method"]}'),
            values=[KeyValue(key=k, value=v) for k, v in values.items()])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        return arr

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
        if self._mask_feed is not None:
            try:
                self._mask_feed.close()
            except Exception as exc:  # noqa: BLE001
                self.get_logger().warning(f'mask worker did not stop cleanly: {exc}')
            self._mask_feed = None
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


__all__ = ['SgdfuseNode', 'NodeSettings', 'ParameterError', 'LatestSlot', 'PARAMETERS',
           'validate_settings', 'main']
