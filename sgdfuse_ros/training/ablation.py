"""The paper's ablation and mask-robustness experiments (``sgdfuse ablate``).

Rows (each scored with the headline fusion metrics against the 8-bit sources, means over the
pairs, native resolution):

``full``                  stage 1 + masks + the shipped student refiner
``without SAM``           stage 1 + a refiner trained and run with empty masks
``masks not read``        stage 1 + a refiner trained with the masks in its loss but empty
                          masks as its input (and run so): does the network use them?
``single stage``          stage 1 alone (F1)
``without diffusion``     stage 1 + masks + the same network trained as a one-pass regressor
``without HFAH``          stage 1 + masks + a refiner with a plain output convolution
``masks eroded/dilated``  the full method with its masks eroded or dilated (grey-level
                          morphology, elliptical 5 and 11 pixel kernels) at inference only
``laplacian``             the classical Laplacian pyramid, for reference

Below the table, how many of the eight headline metrics each part improves: stage 1 ->
+ refiner (``without SAM`` over ``single stage``) -> + masks (``full`` over ``without SAM``),
and ``full`` over ``laplacian``.

The variants' weights come from ``--ablation-dir`` (default: the package's
``weights/ablation/``: ``no_sam.pt``, ``no_diffusion.pt``, ``no_hfah.pt``); a missing file drops
its row with a note. Each pair's F1 and masks are computed once and shared by all rows.
"""

from __future__ import annotations

import json
from pathlib import Path
import sys
import time
from typing import Any

import cv2
import numpy as np

from sgdfuse_ros.core import imaging

#: (better, worse) row pairs whose headline wins the command reports.
STEPS = (('without SAM', 'single stage'), ('full', 'without SAM'),
         ('full', 'masks not read'), ('full', 'single stage'), ('full', 'laplacian'))
VARIANT_FILES = {'without SAM': 'no_sam.pt', 'masks not read': 'blind.pt',
                 'without diffusion': 'no_diffusion.pt', 'without HFAH': 'no_hfah.pt'}
PERTURBATIONS = (('masks eroded 5 px', 'erode', 5), ('masks eroded 11 px', 'erode', 11),
                 ('masks dilated 5 px', 'dilate', 5), ('masks dilated 11 px', 'dilate', 11))


def perturb_mask(mask: np.ndarray, op: str, size: int) -> np.ndarray:
    """Grey-level erosion or dilation of a soft mask with a ``size`` px elliptical kernel."""
    if op not in ('erode', 'dilate'):
        raise ValueError(f'op must be erode or dilate, got {op!r}')
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    fn = cv2.erode if op == 'erode' else cv2.dilate
    return fn(np.ascontiguousarray(mask, np.float32), kernel)


def add_arguments(p) -> None:
    """Arguments of ``sgdfuse ablate``."""
    src = p.add_argument_group('pairs (either --ir/--vis folders or --data)')
    src.add_argument('--ir', type=Path, help='infrared folder')
    src.add_argument('--vis', type=Path, help='visible folder (same file names)')
    src.add_argument('--data', action='append', metavar='DIR',
                     help='pair folder(s) in the training layout; with --split')
    src.add_argument('--split', default='validation', choices=('validation', 'train', 'all'),
                     help='which pairs of --data (default %(default)s)')
    p.add_argument('--task', choices=('ivif', 'medical'), default='ivif',
                   help='ivif (default) or medical: PET/SPECT/CT pairs with an MRI (--ir the '
                   'functional or CT image, --vis the MRI; or --data medical sets), scored on '
                   'their luma, with the medical weights as the defaults')
    p.add_argument('--weights', type=Path, help='refiner of the full method (default: the '
                   'shipped student of the task)')
    p.add_argument('--stage1', type=Path, help='stage-1 weights (default: shipped, per task)')
    p.add_argument('--ablation-dir', type=Path,
                   help="variants' weights folder (default: the package's weights/ablation, "
                   'or weights/medical/ablation for task medical)')
    p.add_argument('--mask-provider', default='saliency',
                   help='mask provider (default %(default)s: the refiner is trained with it and '
                   'the node runs it)')
    p.add_argument('--convention', default='evaluator', choices=('evaluator', 'standard'),
                   help="metric convention (default %(default)s: MMIF-CDDFuse's evaluator)")
    p.add_argument('--mask-checkpoint', type=Path, help='SAM/MobileSAM checkpoint file')
    p.add_argument('--steps', type=int, help="refiner steps (default: each checkpoint's own)")
    p.add_argument('--teacher', type=Path, help='also score this teacher checkpoint')
    p.add_argument('--json', action='store_true', help='print one JSON object')
    p.add_argument('--quiet', action='store_true', help='no progress bar')


def _pairs(args) -> list[imaging.PairPaths]:
    if args.data:
        from .data import expand_data_dirs, split_pairs

        out = []
        for folder in expand_data_dirs(args.data):
            tr, va = split_pairs(folder)
            chosen = {'validation': va, 'train': tr, 'all': tr + va}[args.split]
            out += [imaging.PairPaths(f'{folder.name}/{p.name}', p.ir, p.vis) for p in chosen]
        return out
    if not (args.ir and args.vis):
        raise ValueError('give --ir and --vis folders, or --data')
    pairs, problems = imaging.match_pairs(args.ir, args.vis)
    for prob in problems:
        print(f'sgdfuse: warning: {prob}', file=sys.stderr)
    return pairs


def _read(pair: imaging.PairPaths, task: str = 'ivif'
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ir float [0, 1], visible as read (uint8 RGB or gray), visible luma float)``; task
    ``medical``: the functional or CT luma and the MRI, checked as the pipeline checks them."""
    if task == 'medical':
        from sgdfuse_ros.fusion.medical import split_pair

        med = split_pair(imaging.read_image(pair.ir), imaging.read_image(pair.vis),
                         name=str(pair.ir))
        if med.first.shape != med.second.shape:
            raise imaging.ImageError(f'{pair.ir}: size {med.first.shape} differs from the MRI '
                                     f'{med.second.shape}')
        vis = imaging.to_float(med.second)
        return imaging.to_float(med.first), med.second, vis
    ir_img = imaging.read_image(pair.ir, gray=True)
    ir = imaging.ThermalGain(smoothing=0.0)(ir_img) if ir_img.dtype != np.uint8 \
        else imaging.to_float(ir_img)
    vis = imaging.read_image(pair.vis)
    if vis.dtype != np.uint8:
        vis = imaging.to_uint8(imaging.to_float(vis))
    if ir.shape != vis.shape[:2]:
        raise imaging.ImageError(f'{pair.ir}: size {ir.shape} differs from the visible image '
                                 f'{vis.shape[:2]}')
    return ir, vis, imaging.visible_luma(vis)


def run_ablation(args, log=print) -> dict[str, Any]:
    """Compute every row; returns ``{'rows': {name: means}, 'pairs': [...], 'notes': [...]}``."""
    import torch

    from sgdfuse_ros.core.baselines import fuse_laplacian
    from sgdfuse_ros.core.metrics import HEADLINE, compute_metrics
    from sgdfuse_ros.masks import build_provider
    from sgdfuse_ros.fusion.sgdfuse import RefinerRunner
    from sgdfuse_ros.fusion.stage1 import Stage1Method
    from sgdfuse_ros.models import weights as shipped

    medical = getattr(args, 'task', 'ivif') == 'medical'
    default_stage1 = shipped.MEDICAL_STAGE1_WEIGHTS if medical else None
    student_default = shipped.MEDICAL_STUDENT_WEIGHTS if medical else shipped.STUDENT_WEIGHTS
    ablation_default = shipped.MEDICAL_DIR / 'ablation' if medical else shipped.ABLATION_DIR

    pairs = _pairs(args)
    if not pairs:
        raise ValueError('no pairs to evaluate')
    notes: list[str] = []
    stage1 = Stage1Method(args.stage1 or default_stage1)
    full_path = args.weights or student_default
    refiners: dict[str, tuple[RefinerRunner, str]] = {}
    full = RefinerRunner.load(full_path)
    refiners['full'] = (full, 'masks')
    adir = Path(args.ablation_dir) if args.ablation_dir else ablation_default
    for row, fname in VARIANT_FILES.items():
        path = adir / fname
        if path.is_file():
            refiners[row] = (RefinerRunner.load(path), 'masks')
        else:
            notes.append(f'{row}: no weights at {path}; row skipped')
    if args.teacher:
        refiners['teacher'] = (RefinerRunner.load(args.teacher), 'masks')
    mask_opts = {'checkpoint': str(args.mask_checkpoint)} if args.mask_checkpoint else {}
    provider = build_provider(args.mask_provider, **mask_opts)

    order = ['full', 'without SAM', 'masks not read', 'single stage', 'without diffusion',
             'without HFAH'] + [name for name, _, _ in PERTURBATIONS] + ['teacher', 'laplacian']
    scores: dict[str, list[dict[str, float]]] = {}
    items = pairs
    if not args.quiet:
        from tqdm import tqdm
        items = tqdm(pairs, desc='ablate', unit='pair', file=sys.stderr)
    t0 = time.perf_counter()
    for pair in items:
        ir, vis_img, vis = _read(pair, getattr(args, 'task', 'ivif'))
        f1 = stage1.run(ir, vis)
        masks = np.stack(provider(ir, vis_img).as_tuple()).astype(np.float32)
        ir8, vis8 = imaging.to_uint8(ir), imaging.to_uint8(vis)

        def score(name: str, fused: np.ndarray) -> None:
            m = compute_metrics(imaging.to_uint8(fused), ir8, vis8,
                                convention=args.convention)
            scores.setdefault(name, []).append(m)

        score('single stage', f1)
        score('laplacian', fuse_laplacian(ir, vis))
        with torch.inference_mode():
            for name, (runner, _) in refiners.items():
                score(name, runner.refine(f1, ir, vis, masks, steps=args.steps))
            for name, op, size in PERTURBATIONS:
                pm = np.stack([perturb_mask(m, op, size) for m in masks])
                score(name, full.refine(f1, ir, vis, pm, steps=args.steps))
    rows = {}
    for name in order:
        if name in scores:
            rows[name] = {k: float(np.mean([s[k] for s in scores[name]]))
                          for k in scores[name][0]}
    wins = {f'{a} > {b}': [k for k in HEADLINE if rows[a][k] > rows[b][k]]
            for a, b in STEPS if a in rows and b in rows}
    return {'rows': rows, 'headline': list(HEADLINE), 'wins': wins,
            'pairs': [p.name for p in pairs],
            'notes': notes, 'seconds': round(time.perf_counter() - t0, 1),
            'weights': {'full': str(full_path), 'ablation_dir': str(adir),
                        'steps': args.steps or full.steps},
            'mask_provider': args.mask_provider, 'convention': args.convention}


def run_ablate_command(args) -> int:
    """``sgdfuse ablate``: print the table (or JSON); 0 on success."""
    from sgdfuse_ros.core.metrics import format_table

    try:
        result = run_ablation(args)
    except (FileNotFoundError, ValueError, imaging.ImageError, OSError) as exc:
        print(f'sgdfuse: error: {exc}', file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    print(f'Ablation on {len(result["pairs"])} pairs (means; higher is better), masks: '
          f'{result["mask_provider"]}, refiner steps: {result["weights"]["steps"]}, metrics: '
          f'{result["convention"]} convention')
    print(format_table(result['rows']))
    for step, won in result['wins'].items():
        print(f'{step}: {len(won)} of 8 ({", ".join(won)})')
    for note in result['notes']:
        print(f'note: {note}')
    return 0
