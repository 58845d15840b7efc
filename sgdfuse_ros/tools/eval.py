"""``sgdfuse eval``: score fused images against their infrared and visible sources.

The metrics and their two conventions are those of :mod:`sgdfuse_ros.core.metrics`:
``standard`` (SSIM as Wang et al. define it, PSNR with peak 255) and ``evaluator`` (SSIM and
PSNR as the evaluator published with MMIF-CDDFuse computes them, so the numbers sit beside
published tables). The other metrics are the same in both.

A folder that is missing or cannot be listed is one error line (exit status 2); an image that
cannot be read is listed as a warning and left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sgdfuse_ros.core import files, imaging
from sgdfuse_ros.core.metrics import CONVENTIONS, compute_metrics, format_table, mean_metrics
from .common import err, warn


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--ir', required=True, type=Path, help='infrared folder')
    p.add_argument('--vis', required=True, type=Path, help='visible folder')
    p.add_argument('--fused', required=True, type=Path, help='fused folder (same file names)')
    p.add_argument('--convention', choices=CONVENTIONS, default='standard',
                   help='SSIM and PSNR as Wang et al. define them, peak 255 (standard, the '
                   'default), or as the MMIF-CDDFuse evaluator computes them (evaluator: SSIM '
                   'of its pinned scikit-image, PSNR with peak max(F)) to compare with '
                   'published tables; the other metrics are the same in both')
    p.add_argument('--json', action='store_true', help='print one JSON object of the means')
    p.add_argument('--per-image', action='store_true', help='also list every image')


def evaluate_folders(ir_dir: Path, vis_dir: Path, fused_dir: Path, *,
                     convention: str = 'standard'
                     ) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Metrics per image name for fused images scored against their sources, and the problems
    met (unmatched names, unreadable or mismatched images: those images are left out)."""
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
            per_image[pair.name] = compute_metrics(f, ir, vis, convention=convention)
        except (imaging.ImageError, ValueError) as exc:
            problems.append(str(exc))
        except OSError as exc:  # a file that cannot be read (permissions, a folder...)
            problems.append(str(files.os_problem(exc.filename or pair.name, exc)))
    return per_image, problems


def run(args: argparse.Namespace) -> int:
    try:
        for flag, folder in (('--ir', args.ir), ('--vis', args.vis), ('--fused', args.fused)):
            files.require_folder(folder, flag)
        per_image, problems = evaluate_folders(args.ir, args.vis, args.fused,
                                               convention=args.convention)
    except (files.PathError, ValueError) as exc:
        err(str(exc))
        return 2
    except OSError as exc:  # a folder that cannot be listed
        err(str(files.os_problem(exc.filename or args.fused, exc)))
        return 2
    for p in problems:
        warn(p)
    if not per_image:
        err('no fused image could be scored')
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
    if args.convention != 'standard':
        print(f'SSIM and PSNR in the {args.convention} convention')
    print(format_table(rows))
    return 0
