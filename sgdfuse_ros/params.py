"""The parameters of ``sgdfuse_node``: one schema, no ROS.

Every parameter is written once, in :data:`PARAMETERS`: its name, type, default, allowed values
or range, description, and whether it may change while the node runs. Everything else is
derived from it:

* :data:`NodeSettings`, the validated values (a frozen dataclass with one field per parameter),
  and :meth:`NodeSettings.pipeline_config`, the fusion pipeline they describe;
* :func:`validate_settings`: raw values in, settings out, or one :class:`ParameterError` whose
  one-line message names every parameter that is wrong;
* :func:`load_node_params`: the values of node parameter files (ROS 2 ``--params-file`` YAML, or
  a plain mapping), so offline tools (``sgdfuse bag fuse --params``) read the node's files
  without rclpy;
* :func:`node_params_yaml` writes such files, and :func:`defaults_yaml` is
  ``config/sgdfuse.yaml`` (``python -m sgdfuse_ros.params > config/sgdfuse.yaml``; a test
  checks that the file is current).

The node (:mod:`sgdfuse_ros.ros.node`) declares exactly these parameters with these
descriptions; the launch file takes its topic defaults from :data:`TOPIC_PARAMETERS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, make_dataclass
import json
import math
import os
from pathlib import Path
import sys
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sgdfuse_ros.core.budget import DEFAULT_MAX_PIXELS, OVERSIZE_MODES
from sgdfuse_ros.core.imaging import parse_homography
from sgdfuse_ros.core.matching import SYNC_BACKENDS, message_filters_available
from sgdfuse_ros.fusion.methods import AUTO_ORDER
from sgdfuse_ros.runtime.backends import BACKEND_NAMES

RELIABILITIES = ('best_effort', 'reliable')
OUTPUT_ENCODINGS = ('rgb8', 'mono8')
BACKENDS = ('auto', *BACKEND_NAMES)
#: The node's name in launch files and parameter files.
NODE_NAME = 'sgdfuse'
#: The topic parameters (the launch file offers a remapping argument for each).
TOPIC_PARAMETERS = ('thermal_topic', 'rgb_topic', 'fused_topic')
KINDS = ('str', 'bool', 'int', 'float', 'floats')
#: What a value of each kind is, for messages.
KIND_TEXT = {'str': 'a string', 'bool': 'true or false', 'int': 'an integer',
              'float': 'a finite number', 'floats': 'a list of numbers'}
_KIND_TYPE = {'str': str, 'bool': bool, 'int': int, 'float': float, 'floats': tuple[float, ...]}


class ParameterError(ValueError):
    """Invalid node parameters; the one-line message names every problem."""


@dataclass(frozen=True)
class Param:
    """One node parameter."""

    name: str
    #: ``str``, ``bool``, ``int``, ``float`` (ints accepted) or ``floats`` (a list of numbers)
    kind: str
    default: Any
    description: str
    #: Section of ``config/sgdfuse.yaml`` (a key of :data:`GROUPS`).
    group: str
    #: The allowed values of a string parameter (empty: any).
    choices: tuple[str, ...] = ()
    #: Range of a number: bounds (None: unbounded) and whether each bound is excluded.
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    #: Unit of a number, for messages (``s``, ``Hz``).
    unit: str = ''
    #: True when the value may change while the node runs (``ros2 param set``).
    dynamic: bool = False
    #: Comment beside the value in ``config/sgdfuse.yaml`` (default: the choices).
    note: str = ''
    #: A further check of the value: returns the problem (a phrase) or None.
    check: Callable[[Any], str | None] | None = None

    def range_text(self) -> str:
        """``> 0 s``, ``>= 1``, ``in [0, 1)``, ``one of a, b``, or ``''``."""
        if self.choices:
            return 'one of ' + ', '.join(self.choices)
        unit = f' {self.unit}' if self.unit else ''
        if self.low is not None and self.high is not None:
            return (f'in {"(" if self.low_open else "["}{self.low:g}, {self.high:g}'
                    f'{")" if self.high_open else "]"}{unit}')
        if self.low is not None:
            return f'{">" if self.low_open else ">="} {self.low:g}{unit}'
        if self.high is not None:
            return f'{"<" if self.high_open else "<="} {self.high:g}{unit}'
        return ''

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (of the right type) is not allowed, or None."""
        if self.choices and value not in self.choices:
            return f'{self.name} must be {self.range_text()}, got {value!r}'
        if self.kind in ('int', 'float'):
            below = self.low is not None and (value <= self.low if self.low_open
                                               else value < self.low)
            above = self.high is not None and (value >= self.high if self.high_open
                                                else value > self.high)
            unit = f' {self.unit}' if self.unit else ''
            if below:  # the bound crossed, in words
                return (f'{self.name} must be {">" if self.low_open else ">="} {self.low:g}'
                        f'{unit}, got {value}')
            if above:
                return (f'{self.name} must be {"<" if self.high_open else "<="} {self.high:g}'
                        f'{unit}, got {value}')
        if self.check is not None:
            why = self.check(value)
            if why:
                return f'{self.name} {why}'
        return None


def _topic_name(value: str) -> str | None:
    return None if value.strip() and ' ' not in value else f'is not a topic name: {value!r}'


def _topic_or_empty(value: str) -> str | None:
    return None if not value else _topic_name(value)


def _not_empty(value: str) -> str | None:
    return None if value.strip() else 'must not be empty'


def _mask_input_size(value: int) -> str | None:
    if value == 0 or (value >= 64 and value % 16 == 0):
        return None
    return f'must be 0 (the default) or a multiple of 16 of at least 64, got {value}'


def _homography(value: tuple[float, ...]) -> str | None:
    try:
        parse_homography(value)
    except ValueError as exc:
        return f'is invalid: {exc}'
    return None


#: Sections of ``config/sgdfuse.yaml``: key -> (title, comment lines under it).
GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    'topics': ('Topics (remapping with --ros-args -r /thermal/image_raw:=/my/topic works too)',
               ()),
    'sync': ('Synchronization (message_filters ApproximateTimeSynchronizer semantics)', ()),
    'qos': ('QoS of the image subscriptions and publishers', (
        'Per topic, the ROS 2 overrides win over these (read when the node creates the',
        'topic; named by the topic as remapped), e.g.',
        'qos_overrides./fused/image_raw.publisher.reliability (.depth, .history) or',
        'qos_overrides./rgb/image_raw.subscription.reliability. REP 2003: camera drivers',
        'publish reliable, consumers (this node) subscribe best effort.')),
    'method': ('Fusion method and models', ()),
    'masks': ('Semantic masks (methods that use them)', ()),
    'gain': ('Thermal gain (16-bit / float thermal input)', ()),
    'registration': ('Registration', (
        'Thermal -> RGB pixel homography, 9 numbers row-major, from calibration. Empty: the two',
        'streams are already registered and of the same size.')),
    'output': ('Output and debugging', ()),
    'health': ('Health', ()),
}

_AUTO = ', '.join(AUTO_ORDER)

PARAMETERS: tuple[Param, ...] = (
    Param('thermal_topic', 'str', '/thermal/image_raw', 'Thermal image topic (sensor_msgs/Image: '
          'mono8, 8UC1, mono16, 16UC1 or 32FC1; or CompressedImage with thermal_compressed).',
          'topics', check=_topic_name, note='mono8, 8UC1, mono16, 16UC1 or 32FC1'),
    Param('rgb_topic', 'str', '/rgb/image_raw', 'Visible image topic (sensor_msgs/Image: rgb8, '
          'bgr8, rgba8, bgra8, mono8; or CompressedImage with rgb_compressed). Its header is the '
          "fused image's header.", 'topics', check=_topic_name,
          note='rgb8, bgr8, rgba8, bgra8 or mono8'),
    Param('fused_topic', 'str', '/fused/image_raw', 'Output topic of the fused '
          'sensor_msgs/Image.', 'topics', check=_topic_name,
          note="carries the RGB frame's header (stamp, frame_id)"),
    Param('thermal_compressed', 'bool', False, 'Subscribe to sensor_msgs/CompressedImage on '
          'thermal_topic (e.g. /thermal/image_raw/compressed; PNG for 16-bit).', 'topics',
          note='true: sensor_msgs/CompressedImage (PNG for 16-bit)'),
    Param('rgb_compressed', 'bool', False, 'Subscribe to sensor_msgs/CompressedImage on '
          'rgb_topic.', 'topics', note='true: sensor_msgs/CompressedImage (JPEG, PNG)'),
    Param('camera_info_topic', 'str', '', 'sensor_msgs/CameraInfo of the RGB camera (empty = '
          'camera_info beside rgb_topic as remapped, e.g. /rgb/camera_info). Republished with '
          "each fused frame's header on camera_info beside fused_topic, scaled to the fused "
          'image; none without an incoming one.', 'topics', check=_topic_or_empty,
          note='empty: camera_info beside rgb_topic (/rgb/camera_info)'),
    Param('sync_slop', 'float', 0.05, 'Approximate time sync: largest stamp difference (s) '
          'between the thermal and RGB frame of one pair.', 'sync', low=0.0, low_open=True,
          unit='s', note='s; largest stamp difference inside one thermal/RGB pair'),
    Param('sync_queue_size', 'int', 10, 'Approximate time sync: frames kept per input while '
          'waiting for a partner.', 'sync', low=1,
          note='frames kept per input while waiting for a partner'),
    Param('sync_backend', 'str', 'auto', 'Synchronizer: auto (message_filters when installed), '
          'message_filters, or builtin (same rule, with drop reasons).', 'sync',
          choices=SYNC_BACKENDS),
    Param('qos_reliability', 'str', 'best_effort', 'QoS reliability of the image subscriptions '
          'and publishers: best_effort (sensor data) or reliable.', 'qos', choices=RELIABILITIES),
    Param('qos_depth', 'int', 5, 'QoS history depth of the image subscriptions and publishers.',
          'qos', low=1, note='history depth'),
    Param('method', 'str', 'auto', f'Fusion method (auto = the best installed: {_AUTO}; or a '
          'baseline: mean, max, laplacian).', 'method', check=_not_empty,
          note=f'auto = {" > ".join(AUTO_ORDER)} | mean | max | ...'),
    Param('backend', 'str', 'auto', 'Inference backend of network methods: '
          + ', '.join(BACKENDS) + '.', 'method', choices=BACKENDS),
    Param('network_graph', 'str', 'float', 'Graphs of the networks on onnxruntime: float, or '
          'int8 (their INT8 quantization shipped beside them: faster on the CPU, headline '
          'metrics within 1% of float; needs backend onnxruntime, or auto resolving to it).',
          'method', choices=('float', 'int8'), note='float | int8 (onnxruntime only)'),
    Param('threads', 'int', 0, 'CPU threads of the networks, set once at start (0 = the '
          "library's default).", 'method', low=0,
          note="CPU threads of the networks; 0 = the library's default"),
    Param('weights', 'str', '', 'Weights file of the fusion network (empty = the shipped ones).',
          'method', note='fusion network weights; empty = the shipped ones'),
    Param('engine_dir', 'str', '', 'Folder of exported ONNX files / cached TensorRT engines '
          '(empty = the default).', 'method',
          note='exported ONNX / cached TensorRT engines; empty = default'),
    Param('refiner_steps', 'int', 0, "Diffusion refiner steps (0 = the method's default; at "
          'run time the refiner is rebuilt beside the running one, which fuses until it is '
          'ready). At most 16: the graph and its memory grow with the steps (250 took 4 GB), '
          'and the shipped graphs have 1 to 4.', 'method', low=0, high=16, dynamic=True,
          note="diffusion refiner steps; 0 = the method's default"),
    Param('work_width', 'int', 0, 'Width the fusion method runs at (0 = chosen automatically, '
          "see auto_work_size; set work_width and work_height together). The published frame "
          "keeps the RGB frame's size and detail.", 'method', low=0,
          note='resolution the networks run at; 0 x 0 = automatic (auto_work_size)'),
    Param('work_height', 'int', 0, 'Height the fusion method runs at (0 = automatic).',
          'method', low=0),
    Param('auto_work_size', 'bool', True, 'With work_width/height 0: the largest working size '
          'that holds the camera rate on this machine, from measured timings, adapted with '
          "hysteresis (at the smallest size the refiner is turned off); false: the RGB frame's "
          'own size within max_pixels.', 'method',
          note='largest working size that holds the camera rate; false = frame size'),
    Param('max_pixels', 'int', DEFAULT_MAX_PIXELS, 'Most pixels the fusion method runs on (0 = no '
          'limit; the default is 1920x1080): memory is bounded by it, not by the input. A '
          'larger frame (or work size) is handled as oversize says.', 'method', low=0,
          note='pixel budget of the networks (1920x1080); 0 = no limit'),
    Param('oversize', 'str', 'resize', 'A frame over max_pixels: resize (fused at the largest '
          "size within the budget, aspect kept, published at the RGB frame's size) or refuse "
          '(dropped with an error).', 'method', choices=OVERSIZE_MODES),
    Param('temporal_strength', 'float', 0.0, 'Motion-compensated temporal filter of the fused '
          'frames (fusion/temporal.py): the largest weight of the previous output carried by '
          'the flow (0 = off; 0.5 = steadier than laplacian on real video, per-frame VIF and '
          'Qabf a little lower; costs a few ms per frame).', 'method', low=0.0, high=1.0,
          high_open=True, note='0 = off; 0.5: steadier video, a few ms per frame'),
    Param('mask_provider', 'str', 'auto', 'Semantic mask provider for methods that use masks '
          '(auto, mobile_sam, sam, lite_medsam, saliency, none).', 'masks', check=_not_empty,
          note='auto | mobile_sam | sam | lite_medsam | saliency | none'),
    Param('mask_checkpoint', 'str', '', 'Checkpoint of the SAM-family mask model (mobile_sam, '
          'sam).', 'masks', note='checkpoint file for mobile_sam / sam'),
    Param('mask_input_size', 'int', 0, 'Image-encoder input side (pixels, a multiple of 16) of a '
          "SAM-family mask model (0 = the model's default: lite_medsam 160, mobile_sam 512, "
          'sam vit_b 256, vit_l 192, vit_h 128).', 'masks', check=_mask_input_size,
          note='SAM-family encoder input side, multiple of 16; 0 = default'),
    Param('mask_rate', 'float', 2.0, 'Mask refresh rate (Hz) of the mask worker thread (at '
          'most 60: masks are carried between refreshes, and no camera gives more frames).',
          'masks', low=0.0, low_open=True, high=60.0, unit='Hz', dynamic=True,
          note='Hz; own thread refreshes masks, fusion reuses the latest'),
    Param('mask_max_age', 'float', 0.0, 'Masks older than this (s) are reported as stale on '
          '/diagnostics and in the log (0 = three refresh periods, at least 1 s).', 'masks',
          low=0.0, unit='s', note='s; older masks reported stale (0: 3 periods, at least 1 s)'),
    Param('thermal_low_percentile', 'float', 1.0, 'Thermal gain: low bound percentile (16-bit '
          'and float input).', 'gain', low=0.0, high=100.0, high_open=True),
    Param('thermal_high_percentile', 'float', 99.0, 'Thermal gain: high bound percentile, above '
          'the low one.', 'gain', low=0.0, high=100.0, low_open=True),
    Param('thermal_smoothing', 'float', 0.9, 'Thermal gain: temporal smoothing of the bounds '
          '(0 = per frame; higher = steadier).', 'gain', low=0.0, high=1.0, high_open=True,
          note='temporal smoothing of the gain bounds, [0, 1): no flicker'),
    Param('thermal_nonfinite', 'str', 'replace', 'NaN or infinite pixels of a float (32FC1) '
          "thermal frame: replace (with the frame's smallest finite value; counted on "
          '/diagnostics) or reject (the frame is dropped and counted). A frame without a '
          'finite pixel is always dropped.', 'gain', choices=('replace', 'reject'),
          dynamic=True, note="replace (frame's smallest finite value) | reject the frame"),
    Param('homography', 'floats', (), 'Thermal -> RGB pixel homography, 9 numbers row-major '
          '(empty = the streams are already registered and of the same size).', 'registration',
          check=_homography),
    Param('max_latency', 'float', 0.2, 'Largest age (s; node clock minus the RGB stamp) of a '
          'pair when the fusion worker takes it and of its fused frame when ready: older ones '
          'are dropped and counted on /diagnostics, never published (0 = no limit; about 3 '
          'camera frame periods; at most 60).', 'output', low=0.0, high=60.0, unit='s',
          dynamic=True,
          note='s; older pairs / fused frames are dropped, not published; 0 = no limit'),
    Param('output_encoding', 'str', 'rgb8', "Encoding of the fused image: rgb8 (RGB frame's "
          'colour restored) or mono8 (fused luma).', 'output', choices=OUTPUT_ENCODINGS,
          dynamic=True,
          note="rgb8 (RGB frame's colour restored) | mono8 (fused luma)"),
    Param('publish_masks', 'bool', False, 'Also publish the semantic masks (mono8) on ~/ir_mask '
          'and ~/rgb_mask.', 'output', note='~/ir_mask and ~/rgb_mask (mono8)'),
    Param('publish_compressed', 'bool', False, 'Also publish each fused image (and the masks '
          'when published) as sensor_msgs/CompressedImage (JPEG) on <topic>/compressed, the '
          'image_transport name rviz and Foxglove read.', 'output',
          note="JPEG on <fused_topic>/compressed (and the masks')"),
    Param('jpeg_quality', 'int', 90, 'JPEG quality of the compressed output (1-100).', 'output',
          low=1, high=100, note='1-100, publish_compressed'),
    Param('publish_f1', 'bool', False, 'Also publish the stage-1 fused image F1 (mono8) on ~/f1 '
          'for methods that have one.', 'output',
          note='~/f1: stage-1 fused image (mono8), methods that have one'),
    Param('thermal_timeout', 'float', 1.0, 'Seconds without a thermal (or RGB) frame after which '
          'diagnostics warn that the stream stopped (at most 3600).', 'health', low=0.0,
          low_open=True, high=3600.0, unit='s', dynamic=True,
          note='s without a thermal or RGB frame before /diagnostics warns'),
    Param('diagnostics_period', 'float', 1.0, 'Period (s) of the /diagnostics message.',
          'health', low=0.0, low_open=True, unit='s', note='s between /diagnostics messages'),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMETERS}
#: name -> default value.
DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMETERS}


def describe(p: Param) -> str:
    """The description the node declares: the text, the allowed values, and whether the
    parameter can change at run time."""
    text = p.description
    if p.range_text():
        text += f' Allowed: {p.range_text()}.'
    return text + (' Can change at run time.' if p.dynamic else ' Read at start.')


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------

def _pipeline_config(self):
    """The :class:`~sgdfuse_ros.fusion.pipeline.PipelineConfig` these settings describe."""
    from sgdfuse_ros.fusion.pipeline import PipelineConfig

    method_options: dict[str, Any] = {}
    if self.backend != 'auto':
        method_options['backend'] = self.backend
    if self.network_graph != 'float':
        method_options['graph'] = self.network_graph
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
        max_pixels=self.max_pixels, oversize=self.oversize,
        thermal_low_percentile=self.thermal_low_percentile,
        thermal_high_percentile=self.thermal_high_percentile,
        thermal_smoothing=self.thermal_smoothing)


def _mask_max_age_s(self) -> float | None:
    """``mask_max_age`` in seconds, or None for the mask worker's default."""
    return self.mask_max_age if self.mask_max_age > 0 else None


#: The node's validated parameters: a frozen dataclass, one field per parameter of
#: :data:`PARAMETERS` (``homography`` a tuple: empty, or 9 numbers).
NodeSettings = make_dataclass(
    'NodeSettings', [(p.name, _KIND_TYPE[p.kind]) for p in PARAMETERS], frozen=True,
    namespace={'__doc__': "The node's validated parameters (see sgdfuse_ros.params).",
               '__module__': __name__, 'pipeline_config': _pipeline_config,
               'mask_max_age_s': property(_mask_max_age_s), 'as_dict': asdict})


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _typed(p: Param, v: Any) -> tuple[bool, Any]:
    """Whether ``v`` has the type of ``p``, and the value in its canonical type."""
    if p.kind == 'str':
        return isinstance(v, str), v
    if p.kind == 'bool':
        return isinstance(v, bool), v
    if p.kind == 'int':
        return isinstance(v, int) and not isinstance(v, bool), v
    if p.kind == 'float':
        ok = _is_number(v) and math.isfinite(v)
        return ok, float(v) if ok else v
    if v is None:  # floats: rcl reads an empty YAML list as "not set"
        v = ()
    ok = isinstance(v, (list, tuple, bytes, np.ndarray)) and all(_is_number(x) for x in v)
    return ok, tuple(float(x) for x in v) if ok else v


def validate_settings(values: Mapping[str, Any]) -> NodeSettings:
    """Check raw parameter values (name -> value; missing ones take their defaults).

    Raises :class:`ParameterError` listing every problem at once, each naming its parameter.
    """
    problems: list[str] = [f'unknown parameter {n!r}' for n in values if n not in BY_NAME]
    out: dict[str, Any] = {}
    for p in PARAMETERS:
        v = values.get(p.name, p.default)
        ok, v = _typed(p, v)
        if not ok:
            problems.append(f'{p.name}: expected {KIND_TEXT[p.kind]}, got {v!r}')
        out[p.name] = v
    if problems:  # type problems first: the checks below assume the types
        raise ParameterError('invalid parameters: ' + '; '.join(problems))
    problems = [why for p in PARAMETERS if (why := p.problem(out[p.name]))]

    if len({out[n] for n in TOPIC_PARAMETERS}) != len(TOPIC_PARAMETERS):
        problems.append(', '.join(TOPIC_PARAMETERS[:-1]) + f' and {TOPIC_PARAMETERS[-1]} '
                        'must differ')
    if out['sync_backend'] == 'message_filters' and not message_filters_available():
        problems.append('sync_backend is message_filters but message_filters is not installed '
                        '(use auto)')
    w, h = out['work_width'], out['work_height']
    if (w > 0) != (h > 0):
        problems.append(f'work_width and work_height must both be 0 or both > 0, got {w}x{h}')
    if out['oversize'] == 'refuse' and 0 < out['max_pixels'] < w * h:
        problems.append(f'work_width x work_height ({w}x{h}) is over max_pixels '
                        f"{out['max_pixels']} with oversize refuse")
    lo, hi = out['thermal_low_percentile'], out['thermal_high_percentile']
    if not lo < hi:
        problems.append(f'thermal_low_percentile must be below thermal_high_percentile, got '
                        f'{lo} and {hi}')
    if out['homography'] and not any('homography' in p for p in problems):
        hom = parse_homography(out['homography'])
        if np.allclose(hom / hom[2, 2], np.eye(3), atol=1e-12):
            out['homography'] = ()  # identity: the streams are registered
    if problems:
        raise ParameterError('invalid parameters: ' + '; '.join(problems))
    return NodeSettings(**out)


def update_settings(settings: NodeSettings, changes: Mapping[str, Any]) -> NodeSettings:
    """``settings`` with ``changes`` applied: only parameters that can change at run time, and
    the result valid as a whole. Names outside the schema (``use_sim_time``) are ignored."""
    ours = {k: v for k, v in changes.items() if k in BY_NAME}
    fixed = [k for k in ours if not BY_NAME[k].dynamic]
    if fixed:
        raise ParameterError(f'{", ".join(fixed)} cannot change while the node runs')
    if not ours:
        return settings
    return validate_settings({**settings.as_dict(), **ours})


# --------------------------------------------------------------------------------------------
# Parameter files
# --------------------------------------------------------------------------------------------

def _flatten(params: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    """ROS 2 nested parameter names: ``{a: {b: 1}}`` -> ``{'a.b': 1}``."""
    out = {}
    for key, value in params.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            out.update(_flatten(value, name + '.'))
        else:
            out[name] = value
    return out


def _sections(doc: Mapping, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict]]:
    """``(node path, ros__parameters)`` of every section of a parameter file, in file order."""
    out = []
    for key, value in doc.items():
        if not isinstance(value, dict):
            continue
        here = path + tuple(t for t in str(key).split('/') if t)
        if isinstance(value.get('ros__parameters'), dict):
            out.append((here, value['ros__parameters']))
        out.extend(_sections({k: v for k, v in value.items() if k != 'ros__parameters'}, here))
    return out


def _applies(pattern: tuple[str, ...], node: tuple[str, ...]) -> bool:
    """Whether a section path (``*`` one token, ``**`` any) names the node."""
    if not pattern:
        return not node
    head, rest = pattern[0], pattern[1:]
    if head == '**':
        return any(_applies(rest, node[i:]) for i in range(len(node) + 1))
    return bool(node) and head in ('*', node[0]) and _applies(rest, node[1:])


def load_node_params(*paths: str | os.PathLike, node: str = NODE_NAME) -> dict[str, Any]:
    """The parameter values that files give the node, later files (and later sections) winning,
    as ``--params-file`` given twice.

    A file is a ROS 2 parameter file (``NODE: {ros__parameters: {...}}``; the sections of
    ``/**``, ``NODE``, ``/NODE``, a namespaced ``/ns/NODE`` and wildcard paths apply) or a plain
    mapping of parameter names to values. Raises ``ValueError`` naming the file when it cannot
    be read or is neither.
    """
    import yaml

    target = tuple(t for t in node.split('/') if t)
    out: dict[str, Any] = {}
    for path in paths:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f'{path}: cannot read the parameter file ({exc})') from exc
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ValueError(f'{path}: not a parameter file (a mapping of node names or '
                             'parameters)')
        sections = _sections(doc)
        if not sections:
            if any(isinstance(v, dict) for v in doc.values()):
                raise ValueError(f'{path}: not a parameter file: no ros__parameters section '
                                 'and not a plain mapping of parameters')
            out.update(_flatten(doc))
            continue
        for pattern, params in sections:
            if _applies(pattern, target):
                out.update(_flatten(params))
    return out


def _yaml_value(p_kind: str, value: Any) -> str:
    import yaml

    if p_kind == 'bool':
        return 'true' if value else 'false'
    if p_kind == 'floats':
        return '[' + ', '.join(repr(float(x)) for x in value) + ']'
    if p_kind == 'str':
        bare = value and value == value.strip() and yaml.safe_load(f'k: {value}')['k'] == value
        return value if bare else json.dumps(value)
    return repr(value)


def node_params_yaml(values: Mapping[str, Any], *, comments: Sequence[str] = (),
                     node: str = '/**') -> str:
    """A ROS 2 parameter file (``--params-file``) holding ``values`` for ``node``, checked
    against the schema (the parameters not given keep the node's defaults)."""
    validate_settings(values)  # names, types and ranges
    lines = [f'# {c}' if c else '#' for c in comments] + [f'{node}:', '  ros__parameters:']
    for name, value in values.items():
        p = BY_NAME[name]
        lines.append(f'    {name}: {_yaml_value(p.kind, _typed(p, value)[1])}')
    return '\n'.join(lines) + '\n'


def defaults_yaml() -> str:
    """``config/sgdfuse.yaml``: every parameter at its default, grouped and commented."""
    lines = [
        '# Parameters of sgdfuse_node (sgdfuse_ros). Every value is checked at start-up; an '
        'invalid one',
        '# stops the node with a message naming it. Read-only once the node runs (models load '
        'once:',
        '# restart the node; sgdfuse_lifecycle_node: cleanup, set, configure again), except',
        '# ' + ', '.join(p.name for p in PARAMETERS if p.dynamic) + '.',
        '# Use:  sgdfuse_node --ros-args --params-file config/sgdfuse.yaml',
        '#  or:  ros2 launch sgdfuse_ros sgdfuse.launch.py params_file:=/path/to/this.yaml',
        '# Written from sgdfuse_ros/params.py: python -m sgdfuse_ros.params > '
        'config/sgdfuse.yaml',
        '/**:', '  ros__parameters:']
    for key, (title, notes) in GROUPS.items():
        lines.append(f'    # --- {title} '.ljust(98, '-'))
        lines += [f'    # {n}' for n in notes]
        for p in PARAMETERS:
            if p.group != key:
                continue
            entry = f'    {p.name}: {_yaml_value(p.kind, p.default)}'
            note = p.note or ' | '.join(p.choices)
            lines.append(f'{entry.ljust(37)}  # {note}' if note else entry)
        lines.append('')
    return '\n'.join(lines).rstrip('\n') + '\n'


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sgdfuse_ros.params``: print :func:`defaults_yaml`."""
    sys.stdout.write(defaults_yaml())
    return 0


if __name__ == '__main__':
    sys.exit(main())


__all__ = ['BACKENDS', 'BY_NAME', 'DEFAULTS', 'GROUPS', 'KIND_TEXT', 'NODE_NAME', 'NodeSettings',
           'OUTPUT_ENCODINGS', 'PARAMETERS', 'Param', 'ParameterError', 'RELIABILITIES',
           'TOPIC_PARAMETERS', 'defaults_yaml', 'describe', 'load_node_params',
           'node_params_yaml', 'update_settings', 'validate_settings']
