"""The ``sgdfuse`` command: one function per subcommand, each a thin layer over the library.

Every subcommand is a pair: ``_add_<name>(subparsers)`` declares its arguments and
``cmd_<name>(args) -> int`` runs it and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _err(msg: str) -> None:
    print(f'sgdfuse: error: {msg}', file=sys.stderr)


def _progress(items, desc: str, enabled: bool = True):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return items
    return tqdm(items, desc=desc, unit='pair', file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# fuse
# ----------------------------------------------------------------------------------------------

def _add_fuse(sub) -> None:
    p = sub.add_parser('fuse', help='fuse infrared + visible images (a pair of files or folders)',
                       description='Fuse a registered infrared/visible pair, or every pair of two '
                       'folders (matched by file name). Colour output when the visible input has '
                       'colour.')
    p.add_argument('--ir', required=True, type=Path, help='infrared image file or folder')
    p.add_argument('--vis', required=True, type=Path, help='visible image file or folder')
    p.add_argument('--out', required=True, type=Path,
                   help='output file (pair mode) or folder (folder mode)')
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
    p.add_argument('--list-methods', action='store_true', help='list the methods and exit')
    p.add_argument('--quiet', action='store_true', help='no progress bar')


def _method_options(args) -> dict:
    opts = {}
    for key in ('weights', 'backend', 'steps'):
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = str(value) if isinstance(value, Path) else value
    if getattr(args, 'teacher', False):
        opts['teacher'] = True
    return opts


def _build_pipeline(args):
    from .fusion.pipeline import FusionPipeline, PipelineConfig

    mask_options = {}
    if getattr(args, 'mask_checkpoint', None):
        mask_options['checkpoint'] = str(args.mask_checkpoint)
    cfg = PipelineConfig(method=args.method, method_options=_method_options(args),
                         mask_provider=getattr(args, 'mask_provider', 'auto'),
                         mask_options=mask_options, homography=args.homography,
                         output='mono' if args.mono else 'color',
                         thermal_smoothing=0.0)  # still images: no temporal smoothing
    return FusionPipeline(cfg)


def cmd_fuse(args) -> int:
    from .fusion import imaging
    from .fusion.methods import available_methods, method_names

    if args.list_methods:
        avail = set(available_methods())
        for name in method_names():
            print(f'{name:12s} {"available" if name in avail else "no weights installed"}')
        return 0
    if args.ir.is_dir() != args.vis.is_dir():
        _err('--ir and --vis must both be files or both be folders')
        return 2
    try:
        pipeline = _build_pipeline(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        _err(str(exc))
        return 2

    if not args.ir.is_dir():
        pairs, problems = [imaging.PairPaths(args.ir.stem, args.ir, args.vis)], []
        outputs = {args.ir.stem: args.out}
    else:
        try:
            pairs, problems = imaging.match_pairs(args.ir, args.vis)
        except imaging.ImageError as exc:
            _err(str(exc))
            return 2
        outputs = {p.name: args.out / f'{p.name}.png' for p in pairs}
        if not pairs:
            _err(f'no image pairs with matching names in {args.ir} and {args.vis}')
            return 2
    failures = list(problems)
    for pair in _progress(pairs, f'fuse ({pipeline.method_name})',
                          enabled=len(pairs) > 1 and not args.quiet):
        try:
            result = pipeline.fuse(imaging.read_image(pair.ir, gray=True),
                                   imaging.read_image(pair.vis), name=str(pair.ir))
            imaging.write_image(outputs[pair.name], result.image)
        except (imaging.ImageError, ValueError) as exc:
            failures.append(str(exc))
            if len(pairs) == 1:
                _err(str(exc))
                return 1
    done = len(pairs) - sum(1 for f in failures if f not in problems)
    if len(pairs) > 1 or failures:
        print(f'fused {done} pair(s) with {pipeline.method_name} into {args.out}')
    if failures:
        print(f'{len(failures)} problem(s):', file=sys.stderr)
        for f in failures:
            print(f'  {f}', file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------
# eval
# ----------------------------------------------------------------------------------------------

def _add_eval(sub) -> None:
    p = sub.add_parser('eval', help='score fused images with the standard fusion metrics',
                       description='Mean EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, PSNR and CC of '
                       'fused images against their infrared and visible sources (8-bit gray).')
    p.add_argument('--ir', required=True, type=Path, help='infrared folder')
    p.add_argument('--vis', required=True, type=Path, help='visible folder')
    p.add_argument('--fused', required=True, type=Path, help='fused folder (same file names)')
    p.add_argument('--json', action='store_true', help='print one JSON object of the means')
    p.add_argument('--per-image', action='store_true', help='also list every image')


def evaluate_folders(ir_dir: Path, vis_dir: Path, fused_dir: Path
                     ) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Metrics per image name for fused images scored against their sources."""
    from .fusion import imaging
    from .fusion.metrics import compute_metrics

    pairs, problems = imaging.match_pairs(ir_dir, vis_dir)
    fused = imaging.list_images(fused_dir)
    per_image: dict[str, dict[str, float]] = {}
    for pair in pairs:
        if pair.name not in fused:
            problems.append(f'{fused_dir}: no fused image named {pair.name}.*')
            continue
        try:
            ir = imaging.read_image(pair.ir, gray=True)
            vis = imaging.read_image(pair.vis, gray=True)
            f = imaging.read_image(fused[pair.name], gray=True)
            if ir.dtype != np.uint8:
                ir = imaging.to_uint8(imaging.ThermalGain(smoothing=0.0)(ir))
            if not (ir.shape == vis.shape == f.shape):
                raise imaging.ImageError(f'{fused[pair.name]}: size mismatch (ir {ir.shape}, '
                                         f'vis {vis.shape}, fused {f.shape})')
            per_image[pair.name] = compute_metrics(f, ir, vis)
        except (imaging.ImageError, ValueError) as exc:
            problems.append(str(exc))
    return per_image, problems


def mean_metrics(per_image: dict[str, dict[str, float]]) -> dict[str, float]:
    names = next(iter(per_image.values())).keys()
    return {k: float(np.mean([m[k] for m in per_image.values()])) for k in names}


def cmd_eval(args) -> int:
    from .fusion.metrics import format_table

    try:
        per_image, problems = evaluate_folders(args.ir, args.vis, args.fused)
    except (ValueError, OSError) as exc:
        _err(str(exc))
        return 2
    for p in problems:
        print(f'sgdfuse: warning: {p}', file=sys.stderr)
    if not per_image:
        _err('no fused image could be scored')
        return 1
    means = mean_metrics(per_image)
    if args.json:
        out = dict(means)
        if args.per_image:
            out['per_image'] = per_image
        print(json.dumps(out, indent=None))
        return 0
    rows = dict(per_image) if args.per_image else {}
    rows[f'mean ({len(per_image)})'] = means
    print(format_table(rows))
    return 0


# ----------------------------------------------------------------------------------------------
# demo
# ----------------------------------------------------------------------------------------------

def _add_demo(sub) -> None:
    p = sub.add_parser('demo', help='fuse the bundled sample pairs and print the metric table',
                       description='Fuse the sample pairs shipped with the package with the '
                       'default method and the classical baselines, write the fused images and '
                       'print the standard metrics for each method.')
    p.add_argument('--out', type=Path, default=Path('demo_out'), help='output folder')
    p.add_argument('--methods', nargs='+', default=['auto', 'mean', 'max', 'laplacian'],
                   help='methods to compare')


def cmd_demo(args) -> int:
    from .data import samples_dir
    from .fusion.methods import resolve_method_name
    from .fusion.metrics import format_table

    root = samples_dir()
    rows = {}
    for name in dict.fromkeys(resolve_method_name(m) for m in args.methods):
        out = args.out / name
        fuse_args = build_parser().parse_args(
            ['fuse', '--ir', str(root / 'ir'), '--vis', str(root / 'vi'), '--out', str(out),
             '--method', name, '--quiet'])
        if cmd_fuse(fuse_args) != 0:
            _err(f'fusing the samples with {name} failed')
            return 1
        per_image, problems = evaluate_folders(root / 'ir', root / 'vi', out)
        if problems:
            for p in problems:
                _err(p)
            return 1
        rows[name] = mean_metrics(per_image)
    print(f'\nMetrics on the {len(per_image)} bundled sample pairs (means; higher is better):')
    print(format_table(rows))
    print(f'\nfused images: {args.out}/<method>/')
    return 0


# ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='sgdfuse', description='Thermal + RGB image fusion (SGDFuse) tools.')
    parser.add_argument('--version', action='store_true', help='print the version and exit')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for add in (_add_fuse, _add_eval, _add_demo):
        add(sub)
    return parser


COMMANDS = {
    'fuse': cmd_fuse,
    'eval': cmd_eval,
    'demo': cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__
        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    return COMMANDS[args.command](args)


if __name__ == '__main__':
    sys.exit(main())
