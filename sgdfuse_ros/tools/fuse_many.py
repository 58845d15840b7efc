"""``sgdfuse bag fuse-many``: fuse every bag of a fleet's recordings on a Ray cluster.

The fusion options are those of ``sgdfuse bag fuse`` (added by the same function,
:func:`sgdfuse_ros.tools.bag.add_fuse_options`, and read by the same settings function, so the
two commands never drift apart); the library is :mod:`sgdfuse_ros.fleet`. Importing this module
needs neither Ray nor rosbags.

Exit status: 0 every bag fused with every matched pair; 1 some bags failed (a re-run retries
them) or some pairs could not be fused; 2 nothing was attempted (Ray missing, bad arguments,
no bag found, the output folder in use); 130 interrupted (a re-run resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
import sys
from typing import Any, Callable


def _err(msg: str) -> None:
    print(f'sgdfuse bag fuse-many: error: {msg}', file=sys.stderr)


def add_parser(sub, fuse_options: Callable[[Any], None]) -> argparse.ArgumentParser:
    """Register ``fuse-many`` under ``sub``: its own arguments, then the fusion options of
    ``bag fuse`` added by ``fuse_options(group)``."""
    p = sub.add_parser(
        'fuse-many', help='fuse many bags on a Ray cluster (resumable)',
        description='Fuse every rosbag2 bag found under the inputs into OUT/<bag name>, with '
        'the options of "bag fuse", on a Ray cluster (a local instance sized to this machine '
        'unless --address is given). Long bags are split into time ranges fused in parallel. '
        'OUT/sgdfuse-manifest.json records every bag; a re-run skips the finished ones (whose '
        'checksum still matches) and retries the failed ones.')
    p.add_argument('inputs', nargs='+', metavar='INPUT',
                   help='bag, folder searched for bags, glob, or a text file listing bags')
    p.add_argument('--out', type=Path, required=True, metavar='DIR',
                   help='output folder (created; one fused bag per input bag, and the manifest)')
    p.add_argument('--address', metavar='auto|HOST:PORT',
                   help='join a running Ray cluster (auto: the one started on this machine '
                   'with "ray start"); default: start a local instance for this run')
    p.add_argument('--workers', type=int, metavar='N',
                   help='fusion workers, each holding the networks once (default: the '
                   "cluster's CPUs / --cpus-per-worker)")
    p.add_argument('--cpus-per-worker', type=float, default=1.0, metavar='C',
                   help='CPUs reserved per worker, also its network threads (default 1)')
    p.add_argument('--chunk', type=float, default=600.0, metavar='S',
                   help='split bags longer than 1.5 x S seconds into ranges of about S s fused '
                   'in parallel (default 600; 0: never split)')
    p.add_argument('--margin', type=float, metavar='S',
                   help='seconds read before each range to warm up pairing, thermal gain and '
                   'masks (default: until the output no longer depends on where the range '
                   'starts, 38 s at 10 Hz; shorter margins change a few pixels after range '
                   'boundaries)')
    p.add_argument('--retries', type=int, default=1, metavar='N',
                   help='further attempts of a bag whose worker died (default 1)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing OUT/<bag name> that this manifest did not write '
                   '(default: refuse that bag); outputs of earlier runs are replaced only when '
                   'stale, and an input is never replaced')
    fuse_options(p.add_argument_group('fusion options (as for "bag fuse")'))
    return p


def run(args, settings: Callable[[Any], Any]) -> int:
    """Run ``fuse-many``; ``settings(args)`` is ``bag fuse``'s reading of the fusion options
    (the node's settings: defaults, --params files, options)."""
    from sgdfuse_ros import fleet

    if not fleet.ray_available():
        _err(fleet.RAY_HINT)
        return 2
    from sgdfuse_ros.fusion.methods import resolve_method_name
    from sgdfuse_ros.ros.bag_io import BagError

    try:
        s = settings(args)
        cfg = s.pipeline_config()
        options = fleet.FuseOptions(
            thermal_topic=s.thermal_topic, rgb_topic=s.rgb_topic, fused_topic=s.fused_topic,
            slop=s.sync_slop, queue_size=s.sync_queue_size, only_fused=args.only_fused,
            storage=args.storage,
            # as bag fuse: without --params the encoding follows the pipeline's output
            output_encoding=s.output_encoding if (args.params or args.output_encoding) else None,
            mask_rate=s.mask_rate, mask_max_age=s.mask_max_age_s,
            thermal_nonfinite=s.thermal_nonfinite, pipeline=cfg)
        options.validate()
        resolve_method_name(cfg.method)
        # Ray prints its own notices (a worker died...) on stdout: they go to stderr, so stdout
        # holds the summary alone (one JSON object with --json).
        with contextlib.redirect_stdout(sys.stderr):
            summary = fleet.fuse_many(
                args.inputs, args.out, options, address=args.address, workers=args.workers,
                cpus_per_worker=args.cpus_per_worker, chunk_s=args.chunk,
                margin_s=args.margin, retries=args.retries, overwrite=args.overwrite,
                progress=not (args.quiet or args.json))
    except (ValueError, BagError, fleet.InputError, fleet.ManifestError,
            fleet.FleetError) as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err(f'interrupted; finished bags are recorded in {args.out}, run the same command '
             'again to resume')
        return 130
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(summary.format())
    return 0 if summary.ok else 1
