"""``sgdfuse fuse``: a registered pair, every pair of two folders, or two folders as one video.

Pairs and folders of pairs are still images: each is fused on its own (no temporal smoothing of
the thermal gain; masks computed for each pair by methods that use them). ``--sequence`` takes
the two folders as the frames of one video, in file-name order, through a
:class:`~sgdfuse_ros.fusion.stream.FusionStream` in its offline mode: the thermal gain smoothed
over frames as in the node, and masks refreshed on the node's schedule (every
``round(rate / mask_rate)`` frames, used from one refresh period later), so the output is
what the node would publish for that video, frame for frame, on any machine.

Safe with the user's memory and files: the networks run on at most ``--max-pixels`` pixels
(default 1920x1080; larger frames are fused at a reduced working size and written at their
own size, or refused with ``--oversize refuse``); an output never replaces an input, an
existing file is replaced only with ``--overwrite`` (every name is checked before the first is
written), and a path that cannot be used is one error line (exit status 2). Each image is
written atomically. A folder run stopped by Ctrl-C or SIGTERM says so (exit status 130) and
leaves :data:`PARTIAL_LIST` in the output folder, the outputs it wrote: the same command run
again replaces those (they are its own) without ``--overwrite`` and finishes the folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from sgdfuse_ros.core import files, imaging
from sgdfuse_ros.core.budget import DEFAULT_MAX_PIXELS, FrameTooLarge
from .common import (add_budget_arguments, add_task_argument, err, given_options, progress,
                     too_large, warn)

#: Frame rate assumed for ``--sequence`` without ``--rate`` (Hz).
DEFAULT_RATE = 10.0
#: Mask refreshes per second of ``--sequence`` without ``--mask-rate`` (the node's default).
DEFAULT_MASK_RATE = 2.0
#: In the output folder while a folder run writes it (:class:`~sgdfuse_ros.core.files.RunOutputs`).
PARTIAL_LIST = '.sgdfuse_fuse_partial'


def add_arguments(p: argparse.ArgumentParser) -> None:
    # required unless --list-methods: checked by run()
    p.add_argument('--ir', type=Path, help='infrared image file or folder (task medical: the '
                   'PET, SPECT or CT) (required)')
    p.add_argument('--vis', type=Path,
                   help='visible image file or folder (task medical: the MRI) (required)')
    add_task_argument(p)
    p.add_argument('--out', type=Path,
                   help='output file (pair mode) or folder (folder and sequence modes) '
                   '(required)')
    p.add_argument('--method', default='auto',
                   help='fusion method: auto (best available), or a name from --list-methods')
    p.add_argument('--weights', type=Path, help='weights file for a network method')
    p.add_argument('--backend', help='inference backend for network methods '
                   '(torch, onnxruntime, tensorrt)')
    p.add_argument('--steps', type=int, help='refiner steps (sgdfuse method)')
    p.add_argument('--teacher', action='store_true',
                   help='use the many-step teacher refiner (sgdfuse method, reference quality)')
    p.add_argument('--mask-provider', default='auto', help='mask provider for the sgdfuse method')
    p.add_argument('--mask-checkpoint', type=Path, help='SAM/MobileSAM checkpoint file')
    p.add_argument('--homography', type=float, nargs=9, metavar='H',
                   help='thermal->visible homography, 9 numbers row-major')
    p.add_argument('--mono', action='store_true', help='write gray output even for colour input')
    p.add_argument('--sequence', action='store_true',
                   help='the two folders are one video (frames in file-name order): thermal '
                   "gain smoothed over frames, masks refreshed on the live node's schedule")
    p.add_argument('--rate', type=float, metavar='HZ',
                   help=f'frame rate of the --sequence video (default {DEFAULT_RATE:g})')
    p.add_argument('--mask-rate', type=float, metavar='HZ',
                   help='mask refreshes per second in --sequence mode '
                   f'(default {DEFAULT_MASK_RATE:g}, as the node)')
    p.add_argument('--temporal', type=float, metavar='K',
                   help='--sequence: motion-compensated temporal filter of the fused frames, '
                   'strength K in [0, 1) (0.5 steadies real video; default off, as the node)')
    add_budget_arguments(p)
    p.add_argument('--overwrite', action='store_true',
                   help='replace output files that exist already (never an input)')
    p.add_argument('--list-methods', action='store_true', help='list the methods and exit')
    p.add_argument('--quiet', action='store_true', help='no progress bar')


def method_options(args: argparse.Namespace) -> dict:
    """The method factory's options from the command line (``weights``, ``backend``...)."""
    opts = given_options(args, ('weights', 'backend', 'steps'))
    if getattr(args, 'teacher', False):
        opts['teacher'] = True
    return opts


def build_pipeline(args: argparse.Namespace, *, video: bool = False):
    """The pipeline the command line asks for. ``video``: keep the thermal gain's temporal
    smoothing (still images get none: each is scaled on its own)."""
    from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig

    mask_options = {}
    if getattr(args, 'mask_checkpoint', None):
        mask_options['checkpoint'] = str(args.mask_checkpoint)
    cfg = PipelineConfig(method=args.method, method_options=method_options(args),
                         mask_provider=getattr(args, 'mask_provider', 'auto'),
                         mask_options=mask_options, homography=args.homography,
                         output='mono' if getattr(args, 'mono', False) else 'color',
                         max_pixels=getattr(args, 'max_pixels', DEFAULT_MAX_PIXELS),
                         oversize=getattr(args, 'oversize', 'resize'),
                         task=getattr(args, 'task', 'ivif'))
    if not video:
        cfg.thermal_smoothing = 0.0
    return FusionPipeline(cfg)


def _list_methods() -> int:
    from sgdfuse_ros.fusion.methods import available_methods, method_names

    avail = set(available_methods())
    for name in method_names():
        print(f'{name:12s} {"available" if name in avail else "no weights installed"}')
    return 0


def _check_sequence_args(args: argparse.Namespace) -> str | None:
    """The problem with the sequence options, or None."""
    sequence = getattr(args, 'sequence', False)
    for opt in ('rate', 'mask_rate'):
        value = getattr(args, opt, None)
        flag = '--' + opt.replace('_', '-')
        if value is not None and not sequence:
            return f'{flag} applies to --sequence only'
        if value is not None and not value > 0:
            return f'{flag} must be > 0 Hz, got {value:g}'
    temporal = getattr(args, 'temporal', None)
    if temporal is not None and not sequence:
        return '--temporal applies to --sequence only'
    if temporal is not None and not 0.0 <= temporal < 1.0:
        return f'--temporal must be in [0, 1), got {temporal:g}'
    if sequence and not (args.ir.is_dir() and args.vis.is_dir()):
        return '--sequence needs --ir and --vis to be folders (the frames of one video)'
    return None


def _plan(args: argparse.Namespace
          ) -> tuple[list[imaging.PairPaths], list[str], dict[str, Path], list[Path]]:
    """The pairs to fuse, the problems met matching them, each pair's output file and every
    input file (the outputs must not touch them). Raises ``PathError`` / ``ImageError``."""
    if not args.ir.is_dir():
        files.require_file(args.ir, '--ir')
        files.require_file(args.vis, '--vis')
        files.check_output_file(args.out)
        pair = imaging.PairPaths(args.ir.stem, args.ir, args.vis)
        return [pair], [], {pair.name: args.out}, [args.ir, args.vis]
    files.check_output_folder(args.out)
    pairs, problems = imaging.match_pairs(args.ir, args.vis)
    if not pairs:
        raise imaging.ImageError(f'no image pairs with matching names in {args.ir} and '
                                 f'{args.vis}')
    inputs = [*imaging.list_images(args.ir).values(), *imaging.list_images(args.vis).values()]
    return pairs, problems, {p.name: args.out / f'{p.name}.png' for p in pairs}, inputs


#: Task ``ivif`` with a colour first image: said once per run (a functional image?).
_COLOUR_IR_HINT = ('the infrared image {path} has colour (a PET or SPECT image?): task ivif '
                   'fuses its gray; --task medical keeps its colour map')


def _read(pair: imaging.PairPaths, task: str = 'ivif', hinted: set | None = None):
    """The pair's frames; an unreadable file is an ``ImageError`` naming it. Task ``medical``
    keeps the colour of the first image (a pseudo-colour PET or SPECT image); task ``ivif``
    converts it to gray, with a warning the first time (``hinted`` remembers it)."""
    frames = []
    for path in (pair.ir, pair.vis):
        try:
            frames.append(imaging.read_image(path))
        except OSError as exc:
            raise imaging.ImageError(f'{path}: {exc.strerror or exc}') from None
    if task != 'medical' and frames[0].ndim == 3:
        if hinted is not None and 'colour_ir' not in hinted:
            hinted.add('colour_ir')
            warn(_COLOUR_IR_HINT.format(path=pair.ir))
        frames[0] = imaging.rgb_to_gray(frames[0])
    return frames


def run(args: argparse.Namespace) -> int:
    if args.list_methods:
        return _list_methods()
    missing = [f'--{k}' for k in ('ir', 'vis', 'out') if getattr(args, k) is None]
    if missing:
        err(f'the following arguments are required: {", ".join(missing)}')
        return 2
    problem = _check_sequence_args(args)
    if problem:
        err(problem)
        return 2
    if args.ir.is_dir() != args.vis.is_dir():
        err('--ir and --vis must both be files or both be folders')
        return 2
    from sgdfuse_ros.runtime.backends import BackendError  # a backend that cannot load here
    try:
        pipeline = build_pipeline(args, video=getattr(args, 'sequence', False))
    except (ValueError, FileNotFoundError, ImportError, BackendError) as exc:
        err(str(exc))
        return 2
    try:
        pairs, problems, outputs, inputs = _plan(args)
        written = files.RunOutputs(args.out if args.ir.is_dir() else None, PARTIAL_LIST)
        own = written.own
        if own:  # an interrupted run's outputs: replaced, but never an input
            files.check_outputs(outputs.values(), inputs, overwrite=True)
        files.check_outputs([o for o in outputs.values() if o.name not in own], inputs,
                            overwrite=args.overwrite)
        if args.ir.is_dir():
            files.writable_folder(args.out)
        else:
            files.writable_folder(args.out.parent, target=args.out)
        written.start()
    except (files.PathError, imaging.ImageError, OSError) as exc:
        if isinstance(exc, OSError):  # e.g. a folder that cannot be listed
            exc = files.os_problem(exc.filename or args.out, exc)
        err(str(exc))
        return 2
    try:
        if getattr(args, 'sequence', False):
            code = _fuse_sequence(args, pipeline, sorted(pairs, key=lambda p: p.name),
                                  problems, outputs, written)
        else:
            code = _fuse_pairs(args, pipeline, pairs, problems, outputs, written)
    except files.PathError as exc:  # an output could not be written: the next would not either
        err(str(exc))
        return 2
    except KeyboardInterrupt:
        err(f'interrupted after {len(written.names)} of {len(outputs)} output(s); the same '
            'command run again finishes (it replaces what this run wrote)'
            if written.path else 'interrupted; nothing written')
        return 130
    written.done()
    return code


def _fuse_pairs(args: argparse.Namespace, pipeline, pairs: list[imaging.PairPaths],
                problems: list[str], outputs: dict[str, Path],
                written: files.RunOutputs) -> int:
    """Each pair on its own (still images)."""
    failures = list(problems)
    hinted: set = set()
    for pair in progress(pairs, f'fuse ({pipeline.method_name})',
                         enabled=len(pairs) > 1 and not args.quiet):
        try:
            result = pipeline.fuse(*_read(pair, pipeline.config.task, hinted),
                                   name=str(pair.ir))
        except (imaging.ImageError, ValueError) as exc:
            failures.append(too_large(exc) if isinstance(exc, FrameTooLarge) else str(exc))
            if len(pairs) == 1:
                err(failures[-1])
                return 1
            continue
        written.write_image(outputs[pair.name], result.image)
    done = len(pairs) - (len(failures) - len(problems))
    if len(pairs) > 1 or failures:
        print(f'fused {done} pair(s) with {pipeline.method_name} into {args.out}')
    return _report(failures)


def _fuse_sequence(args: argparse.Namespace, pipeline, pairs: list[imaging.PairPaths],
                   problems: list[str], outputs: dict[str, Path],
                   written: files.RunOutputs) -> int:
    """Fuse the frames in order through an offline :class:`FusionStream`."""
    from sgdfuse_ros.fusion.stream import FusionStream
    from sgdfuse_ros.fusion.temporal import TemporalSettings

    temporal = TemporalSettings(strength=args.temporal) if getattr(args, 'temporal', None) \
        else False
    rate = args.rate if args.rate is not None else DEFAULT_RATE
    mask_rate = args.mask_rate if args.mask_rate is not None else DEFAULT_MASK_RATE
    failures = list(problems)
    hinted: set = set()
    done = 0
    with FusionStream(pipeline, live=False, camera_rate=rate, mask_rate=mask_rate,
                      temporal=temporal) as stream:
        for pair in progress(pairs, f'fuse sequence ({pipeline.method_name})',
                             enabled=not args.quiet, unit='frame'):
            try:
                result = stream.push(*_read(pair, pipeline.config.task, hinted),
                                     name=str(pair.ir))
            except (imaging.ImageError, ValueError) as exc:
                failures.append(too_large(exc) if isinstance(exc, FrameTooLarge) else str(exc))
                continue
            written.write_image(outputs[pair.name], result.image)
            done += 1
        stats = stream.mask_stats()
    line = (f'fused {done} frame(s) of a {rate:g} Hz sequence with {pipeline.method_name} '
            f'into {args.out}')
    if stats:
        median = stats['median_compute_ms']
        line += (f'; masks ({stats["provider"]}): {stats["refreshes"]} refresh(es), every '
                 f'{stats["refresh_every"]} frame(s)'
                 + ('' if median is None else f', median {median:.0f} ms'))
    print(line)
    return _report(failures)


def _report(failures: list[str]) -> int:
    if failures:
        print(f'{len(failures)} problem(s):', file=sys.stderr)
        for f in failures:
            print(f'  {f}', file=sys.stderr)
        return 1
    return 0
