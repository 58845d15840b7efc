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
    from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig

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
    from sgdfuse_ros.core import imaging
    from sgdfuse_ros.fusion.methods import available_methods, method_names

    if args.list_methods:
        avail = set(available_methods())
        for name in method_names():
            print(f'{name:12s} {"available" if name in avail else "no weights installed"}')
        return 0
    if args.ir.is_dir() != args.vis.is_dir():
        _err('--ir and --vis must both be files or both be folders')
        return 2
    from sgdfuse_ros.runtime.backends import BackendError  # a backend that cannot load here
    try:
        pipeline = _build_pipeline(args)
    except (ValueError, FileNotFoundError, ImportError, BackendError) as exc:
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
    from sgdfuse_ros.core import imaging
    from sgdfuse_ros.core.metrics import compute_metrics

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
    from sgdfuse_ros.core.metrics import format_table

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
    p = sub.add_parser('demo', help='the live demo: sample bag -> node -> fused bag, metrics',
                       description='Make a sample bag from the bundled pairs, start '
                       'sgdfuse_node, play the bag into it, record the fused topic, then print '
                       'throughput, latency and the metric table and write a contact sheet. '
                       'With --offline: fuse the sample pairs with the default method and the '
                       'classical baselines and print the metrics for each method.')
    p.add_argument('--out', type=Path, default=Path('demo_out'), help='output folder')
    p.add_argument('--methods', nargs='+', default=['auto', 'mean', 'max', 'laplacian'],
                   help='methods to compare (--offline)')
    p.add_argument('--offline', action='store_true',
                   help='no ROS: fuse the sample pairs with each method, print the metrics')
    from .demo import add_arguments
    add_arguments(p)


def cmd_demo(args) -> int:
    if args.offline:
        return _demo_offline(args)
    from .demo import run_demo_command
    return run_demo_command(args)


def _demo_offline(args) -> int:
    from sgdfuse_ros.core.paths import samples_dir
    from sgdfuse_ros.fusion.methods import resolve_method_name
    from sgdfuse_ros.core.metrics import format_table

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
# train
# ----------------------------------------------------------------------------------------------

def _add_train(sub) -> None:
    p = sub.add_parser('train', help='train the networks (stage1, stage2, distill)',
                       description='Train a network of the method on registered pairs.')
    tsub = p.add_subparsers(dest='train_command', metavar='NETWORK', required=True)
    s1 = tsub.add_parser('stage1', help='the stage-1 initial-fusion network',
                         description='Train stage 1 on folders of pairs (ir/ + vi/). The '
                         'validation pairs (every FMB pair, every 5th RoadScene pair) are held '
                         'out and scored at the end against the Laplacian baseline.')
    from sgdfuse_ros.training.config import add_arguments
    add_arguments(s1)
    # The refiner (issue 5): teacher and distilled student.
    from sgdfuse_ros.training.refiner_config import add_distill_arguments, add_stage2_arguments
    s2 = tsub.add_parser('stage2', help='the diffusion refiner (many-step teacher)',
                         description='Train the mask-guided diffusion refiner (the teacher) on '
                         'F1 of the given stage-1 weights and cached masks; the validation '
                         'pairs are held out and scored at the end.')
    add_stage2_arguments(s2)
    sd = tsub.add_parser('distill', help='distil the teacher into a few-step student',
                         description='Distil a stage2 teacher into a student that samples in K '
                         'steps (output distillation of the deterministic DDIM sampler).')
    add_distill_arguments(sd)


def cmd_train(args) -> int:
    if args.train_command == 'stage1':
        from sgdfuse_ros.training.stage1 import run_train_stage1
        return run_train_stage1(args)
    if args.train_command == 'stage2':
        from sgdfuse_ros.training.refiner import run_train_stage2
        return run_train_stage2(args)
    if args.train_command == 'distill':
        from sgdfuse_ros.training.refiner import run_train_distill
        return run_train_distill(args)
    _err(f'unknown network {args.train_command!r}')
    return 2


# ----------------------------------------------------------------------------------------------
# ablate (the paper's ablation and mask-robustness experiments: sgdfuse_ros.training.ablation)
# ----------------------------------------------------------------------------------------------

def _add_ablate(sub) -> None:
    p = sub.add_parser('ablate', help="the paper's ablation table (and mask robustness)",
                       description='Score the full method, its ablations (without SAM, single '
                       'stage, without diffusion, without HFAH) and the full method with '
                       'eroded / dilated masks on folders of pairs.')
    from sgdfuse_ros.training.ablation import add_arguments
    add_arguments(p)


def cmd_ablate(args) -> int:
    from sgdfuse_ros.training.ablation import run_ablate_command
    return run_ablate_command(args)


# ----------------------------------------------------------------------------------------------
# export, bench (inference engines: sgdfuse_ros.runtime)
# ----------------------------------------------------------------------------------------------

def _add_export(sub) -> None:
    p = sub.add_parser('export', help='export the networks to ONNX (checked against PyTorch)',
                       description="Export stage 1, the refiner and the mask provider's "
                       'networks to ONNX (opset 17, dynamic height/width), check each against '
                       'PyTorch on a real sample pair and write a JSON sidecar with the source '
                       "weights' SHA-256.")
    from sgdfuse_ros.runtime.export import add_arguments
    add_arguments(p)


def cmd_export(args) -> int:
    from sgdfuse_ros.runtime.export import run_export
    return run_export(args)


def _add_bench(sub) -> None:
    p = sub.add_parser('bench', help='time the fusion pipeline per stage on a backend',
                       description='Per-stage median and p95 latency (thermal preprocessing, '
                       'stage 1, masks, refiner, colour merge), end-to-end fps and peak memory '
                       'on the bundled sample pairs.')
    from .bench import add_arguments
    add_arguments(p)


def cmd_bench(args) -> int:
    from .bench import run_bench_command
    return run_bench_command(args)


# ----------------------------------------------------------------------------------------------
# bag (rosbag2 tools: sgdfuse_ros.ros.bags)
# ----------------------------------------------------------------------------------------------

def _add_bag(sub) -> None:
    p = sub.add_parser('bag', help='rosbag2 tools: fuse a bag, play, record, make a sample bag',
                       description='Offline fusion of rosbag2 bags (mcap, sqlite3) and, with '
                       'rclpy, playing and recording bags without the ros2 command.')
    from .bag import add_arguments
    add_arguments(p)


def cmd_bag(args) -> int:
    from .bag import run
    return run(args)


# ----------------------------------------------------------------------------------------------
# masks (semantic mask providers: sgdfuse_ros.masks)
# ----------------------------------------------------------------------------------------------

def _add_masks(sub) -> None:
    p = sub.add_parser('masks', help='write the semantic masks of image pairs (and overlays)',
                       description='Compute the IR and visible semantic masks of a pair of files, '
                       'or of every pair of two folders (matched by file name), and write '
                       'NAME_ir_mask.png, NAME_vis_mask.png (8-bit, input size) and '
                       'NAME_overlay.png into --out.')
    from .masks import add_arguments
    add_arguments(p)


def cmd_masks(args) -> int:
    from .masks import run_masks_command
    return run_masks_command(args)


# ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='sgdfuse', description='Thermal + RGB image fusion (SGDFuse) tools.')
    parser.add_argument('--version', action='store_true', help='print the version and exit')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for add in (_add_fuse, _add_eval, _add_demo, _add_train, _add_export, _add_bench,
                _add_bag, _add_masks, _add_ablate):
        add(sub)
    return parser


COMMANDS = {
    'fuse': cmd_fuse,
    'eval': cmd_eval,
    'demo': cmd_demo,
    'train': cmd_train,
    'export': cmd_export,
    'bench': cmd_bench,
    'bag': cmd_bag,
    'masks': cmd_masks,
    'ablate': cmd_ablate,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from sgdfuse_ros import __version__
        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    return COMMANDS[args.command](args)


if __name__ == '__main__':
    sys.exit(main())
