"""``sgdfuse demo``: the live demo with ROS (:mod:`.demo`) or, with ``--offline``, the bundled
sample pairs fused by each method and scored, with no ROS at all."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import err


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .demo import add_arguments as add_live_arguments

    p.add_argument('--out', type=Path, default=Path('demo_out'), help='output folder')
    p.add_argument('--methods', nargs='+', default=['auto', 'mean', 'max', 'laplacian'],
                   help='methods to compare (--offline)')
    p.add_argument('--offline', action='store_true',
                   help='no ROS: fuse the sample pairs with each method, print the metrics')
    add_live_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.offline:
        return run_offline(out=args.out, methods=args.methods)
    from .demo import run_demo_command
    return run_demo_command(args)


def run_offline(*, out: Path, methods: list[str]) -> int:
    """Fuse the sample pairs with each method into ``out/<method>/`` and print the means."""
    from sgdfuse_ros.core.metrics import format_table, mean_metrics
    from sgdfuse_ros.core.paths import samples_dir
    from sgdfuse_ros.fusion.methods import resolve_method_name
    from . import fuse
    from .eval import evaluate_folders

    root = samples_dir()
    fuse_parser = argparse.ArgumentParser(prog='sgdfuse fuse')
    fuse.add_arguments(fuse_parser)
    rows = {}
    try:
        names = list(dict.fromkeys(resolve_method_name(m) for m in methods))
    except ValueError as exc:
        err(str(exc))
        return 2
    for name in names:
        folder = out / name
        fuse_args = fuse_parser.parse_args(
            ['--ir', str(root / 'ir'), '--vis', str(root / 'vi'), '--out', str(folder),
             '--method', name, '--quiet'])
        if fuse.run(fuse_args) != 0:
            err(f'fusing the samples with {name} failed')
            return 1
        per_image, problems = evaluate_folders(root / 'ir', root / 'vi', folder)
        if problems:
            for p in problems:
                err(p)
            return 1
        rows[name] = mean_metrics(per_image)
    print(f'\nMetrics on the {len(per_image)} bundled sample pairs (means; higher is better):')
    print(format_table(rows))
    print(f'\nfused images: {out}/<method>/')
    return 0
