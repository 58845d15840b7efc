"""Arguments and runners of ``sgdfuse bag ...`` (fuse, fuse-many, play, record, make-sample,
info).

Kept apart from :mod:`sgdfuse_ros.tools.cli` so the main command stays thin; importing this module
needs neither rosbags nor rclpy (they load when a subcommand runs).

Exit status: 0 success; 1 the output was written but something needs attention (pairs that
failed to fuse, undecodable frames, nothing recorded); 2 nothing usable was written (bad
arguments, an unreadable or truncated bag, missing topics, topics of the wrong type).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys

from sgdfuse_ros.params import DEFAULTS, OUTPUT_ENCODINGS
from sgdfuse_ros.runtime.backends import BACKEND_NAMES
from .fuse_many import add_parser as add_fuse_many_parser
from .fuse_many import run as run_fuse_many


def _err(msg: str) -> None:
    print(f'sgdfuse bag: error: {msg}', file=sys.stderr)


def add_fuse_options(f) -> None:
    """The fusion options of ``bag fuse`` (all but its input and output) on a parser or an
    argument group: ``bag fuse-many`` takes the same ones, read by :func:`_fuse_settings`."""
    f.add_argument('--params', type=Path, nargs='+', metavar='YAML',
                   help='sgdfuse_node parameter file(s) (later files win): their topics, sync '
                   'slop/queue, method, homography, mask rate, thermal gain and non-finite '
                   'policy are used; the options below override them')
    f.add_argument('--thermal-topic',
                   help=f'thermal image topic (default {DEFAULTS["thermal_topic"]})')
    f.add_argument('--rgb-topic', help=f'RGB image topic (default {DEFAULTS["rgb_topic"]})')
    f.add_argument('--fused-topic', help=f'output topic (default {DEFAULTS["fused_topic"]})')
    f.add_argument('--slop', type=float, help='largest stamp difference (s) inside a pair '
                   f'(default {DEFAULTS["sync_slop"]:g}, as the node)')
    f.add_argument('--queue-size', type=int, help='frames kept per input while waiting for a '
                   f'partner (default {DEFAULTS["sync_queue_size"]}, as the node)')
    f.add_argument('--only-fused', action='store_true',
                   help='write only the fused topic, not the original topics')
    f.add_argument('--storage', choices=('mcap', 'sqlite3'),
                   help="output storage (default: the input's)")
    f.add_argument('--method', help='fusion method (default auto: the best installed)')
    f.add_argument('--backend', help='inference backend of network methods ('
                   + ', '.join(BACKEND_NAMES) + ')')
    f.add_argument('--weights', type=Path, help='weights file of a network method')
    f.add_argument('--mask-provider', help='mask provider for methods that use masks')
    f.add_argument('--mask-checkpoint', type=Path, help='SAM/MobileSAM checkpoint file')
    f.add_argument('--homography', type=float, nargs=9, metavar='H',
                   help='thermal->RGB pixel homography, 9 numbers row-major')
    f.add_argument('--output-encoding', choices=OUTPUT_ENCODINGS,
                   help='encoding of the fused frames (default rgb8 for colour RGB input)')
    f.add_argument('--json', action='store_true', help='print the summary as one JSON object')
    f.add_argument('--quiet', action='store_true', help='no progress bar')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest='bag_command', metavar='ACTION', required=True)

    f = sub.add_parser(
        'fuse', help='fuse every thermal/RGB pair of a bag into a new bag',
        description='Read a rosbag2 bag (mcap or sqlite3), pair thermal and RGB frames with the '
        "node's approximate-time rule, fuse every pair and write a new bag with the fused "
        'topic (sensor_msgs/Image, the RGB header) and the original topics. Prints what was '
        'fused, the frames left unmatched on each topic and why, and the pairs that failed.')
    f.add_argument('input', type=Path, metavar='IN', help='input bag (folder, .mcap or .db3)')
    f.add_argument('output', type=Path, metavar='OUT', help='output bag folder (must not exist)')
    add_fuse_options(f)
    f.add_argument('--compressed', action='store_true',
                   help='also write the fused frames as JPEG sensor_msgs/CompressedImage on '
                   '<fused topic>/compressed (as publish_compressed: true in --params does)')
    f.add_argument('--jpeg-quality', type=int, metavar='Q',
                   help=f'JPEG quality 1-100 (default {DEFAULTS["jpeg_quality"]}, or jpeg_quality '
                   'of --params)')
    add_fuse_many_parser(sub, add_fuse_options)

    p = sub.add_parser(
        'play', help='publish a bag into a live ROS 2 graph (rclpy)',
        description='Publish the messages of a bag timed by their recorded times, with the '
        "node's sensor-data QoS on image topics. Needs rclpy; no ros2 command needed.")
    p.add_argument('input', type=Path, metavar='IN', help='bag to play')
    p.add_argument('--rate', type=float, default=1.0, help='playback speed factor (default 1)')
    p.add_argument('--loop', action='store_true', help='play again and again until Ctrl-C')
    p.add_argument('--clock', action='store_true', help='publish the bag time on /clock')
    p.add_argument('--topics', nargs='+', metavar='TOPIC', help='only these topics')
    p.add_argument('--reliable', action='store_true',
                   help='publish image topics reliable instead of best effort')
    p.add_argument('--qos-depth', type=int, default=5, help='QoS depth (default 5)')
    p.add_argument('--wait-for-subscribers', type=float, default=0.0, metavar='S',
                   help='wait up to S seconds for every topic to have a subscriber first')

    r = sub.add_parser(
        'record', help='record topics of a live ROS 2 graph into a bag (rclpy)',
        description='Subscribe to topics and write what arrives into a new bag, until Ctrl-C, '
        '--duration or --max-messages.')
    r.add_argument('output', type=Path, metavar='OUT', help='output bag folder (must not exist)')
    r.add_argument('--topics', nargs='+', required=True, metavar='TOPIC',
                   help='topics to record (subscribed once a publisher shows their type)')
    r.add_argument('--duration', type=float, metavar='S', help='stop after S seconds')
    r.add_argument('--max-messages', type=int, metavar='N', help='stop after N messages')
    r.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap',
                   help='storage format (default mcap)')

    m = sub.add_parser(
        'make-sample', help='build a sample thermal + RGB bag from image pairs',
        description='Write a bag with a mono16 radiometric thermal stream and an rgb8 stream '
        'made from registered image pairs (default: the bundled samples), with jittered stamps '
        'between the cameras, and a parameter file for the node beside it (BAG.params.yaml; '
        'with the thermal->RGB homography when --thermal-size differs).')
    m.add_argument('output', type=Path, metavar='OUT', help='output bag folder (must not exist)')
    m.add_argument('--pairs', type=Path, help='folder with ir/ and vi/ image pairs '
                   '(default: the bundled samples)')
    m.add_argument('--rate', type=float, default=10.0, help='frame rate in Hz (default 10)')
    m.add_argument('--frames', type=int, help='number of frames (default: every pair once per '
                   'repeat, each held --hold frames)')
    m.add_argument('--repeat', type=int, default=1, help='cycles through the pairs (default 1)')
    m.add_argument('--hold', type=int, default=1,
                   help='consecutive frames per pair (default 1)')
    m.add_argument('--visible-size', default='640x480', metavar='WxH',
                   help='RGB frame size (default 640x480; pairs are centre-cropped to its '
                   'aspect)')
    m.add_argument('--thermal-size', metavar='WxH',
                   help='thermal frame size, e.g. 320x256 (default: the RGB size)')
    m.add_argument('--thermal-encoding', choices=('mono16', 'mono8'), default='mono16')
    m.add_argument('--rgb-encoding', choices=('rgb8', 'bgr8'), default='rgb8')
    m.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    m.add_argument('--jitter', type=float, default=0.01, metavar='S',
                   help='largest thermal-RGB stamp offset in seconds (default 0.01)')
    m.add_argument('--seed', type=int, default=0, help='random seed of noise and jitter')

    i = sub.add_parser('info', help='topics, types and counts of a bag')
    i.add_argument('input', type=Path, metavar='IN', help='bag (folder, .mcap or .db3)')


def run(args) -> int:
    handlers = {'fuse': _fuse, 'play': _play, 'record': _record, 'make-sample': _make_sample,
                'info': _info, 'fuse-many': _fuse_many}
    from sgdfuse_ros.ros.bag_io import BagError

    try:
        return handlers[args.bag_command](args)
    except BagError as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err('interrupted')
        return 130


def _fuse_settings(args):
    """The node settings for ``bag fuse``: the defaults, the --params files over them, the
    options over those; checked by the node's schema (no rclpy needed)."""
    from sgdfuse_ros.params import ParameterError, load_node_params, validate_settings
    from sgdfuse_ros.ros.bag_io import BagError

    try:
        values = load_node_params(*args.params) if args.params else {}
    except ValueError as exc:
        raise BagError(str(exc)) from exc
    values.pop('use_sim_time', None)
    values = {k: v for k, v in values.items() if not k.startswith('qos_overrides.')}
    overrides = {'thermal_topic': args.thermal_topic, 'rgb_topic': args.rgb_topic,
                 'fused_topic': args.fused_topic, 'sync_slop': args.slop,
                 'sync_queue_size': args.queue_size, 'method': args.method,
                 'backend': args.backend, 'weights': str(args.weights) if args.weights else None,
                 'mask_provider': args.mask_provider,
                 'mask_checkpoint': str(args.mask_checkpoint) if args.mask_checkpoint else None,
                 'homography': list(args.homography) if args.homography else None,
                 'output_encoding': args.output_encoding,
                 'publish_compressed': True if getattr(args, 'compressed', False) else None,
                 'jpeg_quality': getattr(args, 'jpeg_quality', None)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return validate_settings(values)
    except ParameterError as exc:
        where = f'{", ".join(map(str, args.params))}: ' if args.params else ''
        raise BagError(f'{where}{exc}') from exc


def _fuse(args) -> int:
    from sgdfuse_ros.fusion.pipeline import FusionPipeline
    from sgdfuse_ros.ros.bag_fuse import UNDECODABLE, fuse_bag
    from sgdfuse_ros.ros.bag_io import BagError
    from sgdfuse_ros.ros.sample_bag import params_file_for

    s = _fuse_settings(args)
    try:
        if s.threads:
            from sgdfuse_ros.runtime import set_threads
            set_threads(s.threads)
        pipeline = FusionPipeline(s.pipeline_config())
    except (ValueError, FileNotFoundError, ImportError, TypeError) as exc:
        _err(f'cannot build the fusion pipeline: {exc}')
        return 2
    # Without --params the output encoding follows the pipeline (mono8 for gray RGB input).
    encoding = s.output_encoding if (args.params or args.output_encoding) else None
    try:
        summary = fuse_bag(args.input, args.output, thermal_topic=s.thermal_topic,
                           rgb_topic=s.rgb_topic, fused_topic=s.fused_topic, slop=s.sync_slop,
                           queue_size=s.sync_queue_size, only_fused=args.only_fused,
                           pipeline=pipeline, storage=args.storage, output_encoding=encoding,
                           mask_rate=s.mask_rate, mask_max_age=s.mask_max_age_s,
                           thermal_nonfinite=s.thermal_nonfinite,
                           temporal_strength=s.temporal_strength,
                           compressed_quality=s.jpeg_quality if s.publish_compressed else None,
                           progress=not (args.quiet or args.json))
    except ValueError as exc:  # slop / queue size
        _err(str(exc))
        return 2
    except BagError as exc:
        hint = params_file_for(args.input)
        if 'size mismatch' in str(exc) and hint.is_file() and not args.params:
            raise BagError(f'{exc}\n  (the homography of this bag is in {hint}: add '
                           f'--params {hint})') from exc
        raise
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(summary.format())
    if not summary.ok:
        _err(f'{len(summary.failures)} pair(s) not fused and '
             f'{sum(c.get(UNDECODABLE, 0) for c in summary.unmatched.values())} '
             f'undecodable frame(s); the {summary.pairs_fused} fused pair(s) are in '
             f'{summary.output}')
        return 1
    return 0


def _fuse_many(args) -> int:
    return run_fuse_many(args, _fuse_settings)


def _play(args) -> int:
    from sgdfuse_ros.ros.live import play_bag

    try:
        stats = play_bag(args.input, rate=args.rate, loop=args.loop, clock=args.clock,
                              topics=args.topics,
                              qos_reliability='reliable' if args.reliable else 'best_effort',
                              qos_depth=args.qos_depth,
                              wait_for_subscribers=args.wait_for_subscribers)
    except (ValueError, ImportError) as exc:
        _err(str(exc))
        return 2
    print(stats.format())
    return 130 if stats.interrupted and not args.loop else 0


def _record(args) -> int:
    from sgdfuse_ros.ros.live import record_bag

    if args.max_messages is not None and args.max_messages < 1:
        _err('--max-messages must be >= 1')
        return 2
    try:
        stats = record_bag(args.output, args.topics, duration=args.duration,
                                max_messages=args.max_messages, storage=args.storage)
    except (ValueError, ImportError) as exc:
        _err(str(exc))
        return 2
    print(stats.format())
    if stats.total == 0:
        _err(f'nothing was recorded on {", ".join(args.topics)} ({args.output} holds an empty '
             'bag)')
        return 1
    return 0


def _make_sample(args) -> int:
    from sgdfuse_ros.ros.sample_bag import make_sample_bag

    try:
        info = make_sample_bag(
            args.output, args.pairs, rate_hz=args.rate, frames=args.frames, repeat=args.repeat,
            hold=args.hold, thermal_encoding=args.thermal_encoding,
            rgb_encoding=args.rgb_encoding, visible_size=args.visible_size,
            thermal_size=args.thermal_size, storage=args.storage, jitter_s=args.jitter,
            seed=args.seed, progress=True)
    except ValueError as exc:
        _err(str(exc))
        return 2
    print(info.format())
    return 0


def _info(args) -> int:
    from sgdfuse_ros.ros.bag_io import bag_info

    info = bag_info(args.input)
    print(f'{info["path"]}: {info["storage"]}, {info["message_count"]} message(s), '
          f'{info["duration_s"]:.2f} s')
    for topic, (kind, count) in info['topics'].items():
        print(f'  {topic}: {kind}, {count}')
    return 0
