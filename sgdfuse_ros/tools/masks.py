"""``sgdfuse masks``: write the masks of image pairs, so users can see what guides the fusion.

For each pair ``NAME`` (a pair of files, or the pairs of two folders matched by file name):

* ``NAME_ir_mask.png``, ``NAME_vis_mask.png``: the masks, 8-bit gray (0-255), the input's size;
* ``NAME_overlay.png``: thermal (red) and visible (green) masks over their frames, side by side,
  with the box prompts the provider used.

A pair over ``--max-pixels`` has its masks computed at the largest size within the budget and
written at its own size (``--oversize refuse``: listed as a failure instead). Outputs are
checked as ``sgdfuse fuse`` checks them: never an input, existing files only with
``--overwrite``, a path that cannot be used is one error line (exit status 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

import cv2
import numpy as np

from sgdfuse_ros.core import files, imaging
from sgdfuse_ros.core.budget import FrameTooLarge, PixelBudget
from sgdfuse_ros.masks.base import MaskResult, build_provider, provider_names
from .common import add_budget_arguments, err, given_options, too_large

#: In the output folder while a folder run writes it (:class:`~sgdfuse_ros.core.files.RunOutputs`):
#: after Ctrl-C or SIGTERM the same command replaces what it lists without ``--overwrite``.
PARTIAL_LIST = '.sgdfuse_masks_partial'
IR_COLOUR = (255, 60, 40)
VIS_COLOUR = (40, 230, 60)


def tint(frame: np.ndarray, mask: np.ndarray, colour, alpha: float = 0.55) -> np.ndarray:
    """``frame`` (gray or RGB, ``uint8`` or float ``[0, 1]``) as RGB ``uint8`` with ``mask``
    (``[0, 1]``) blended in ``colour``."""
    if frame.dtype != np.uint8:
        frame = imaging.to_uint8(frame)
    rgb = np.repeat(frame[:, :, None], 3, axis=2) if frame.ndim == 2 else frame
    a = (alpha * np.clip(mask, 0.0, 1.0))[:, :, None]
    out = rgb.astype(np.float32) * (1.0 - a) + np.asarray(colour, np.float32) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _draw_boxes(img: np.ndarray, boxes: np.ndarray | None, colour) -> None:
    if boxes is None:
        return
    t = max(1, round(max(img.shape[:2]) / 400))
    for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
        cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), colour, t)


def overlay(ir: np.ndarray, visible: np.ndarray, result: MaskResult,
            boxes: bool = True) -> np.ndarray:
    """Thermal with its mask (red) beside visible with its mask (green): RGB ``uint8``,
    ``H x 2W``. ``boxes``: also draw the provider's box prompts (thin, white)."""
    left = tint(ir, result.ir, IR_COLOUR)
    right = tint(visible, result.vis, VIS_COLOUR)
    if boxes:
        _draw_boxes(left, result.boxes.get('ir'), (255, 255, 255))
        _draw_boxes(right, result.boxes.get('vis'), (255, 255, 255))
    return np.concatenate([left, right], axis=1)


def read_pair(ir_path: Path, vis_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A registered pair from files: thermal as float ``[0, 1]`` (8-bit scaled, 16-bit through
    a percentile gain), visible as read (RGB or gray ``uint8``)."""
    thermal = imaging.read_image(ir_path, gray=True)
    visible = imaging.read_image(vis_path)
    if visible.dtype != np.uint8:
        visible = imaging.to_uint8(imaging.to_float(visible))
    registered = imaging.align_pair(thermal, visible, None, name=str(ir_path))
    return imaging.ThermalGain(smoothing=0.0)(registered), visible


def output_paths(out_dir: Path, name: str) -> list[Path]:
    """``NAME_ir_mask.png``, ``NAME_vis_mask.png`` and ``NAME_overlay.png`` in ``out_dir``."""
    return [out_dir / f'{name}_ir_mask.png', out_dir / f'{name}_vis_mask.png',
            out_dir / f'{name}_overlay.png']


def write_masks(out_dir: Path, name: str, ir: np.ndarray, visible: np.ndarray,
                result: MaskResult, write=files.write_image) -> list[Path]:
    """Write ``NAME_ir_mask.png``, ``NAME_vis_mask.png`` and ``NAME_overlay.png`` with
    ``write(path, image)`` (a file-system failure raises
    :class:`~sgdfuse_ros.core.files.PathError`)."""
    paths = output_paths(out_dir, name)
    write(paths[0], imaging.to_uint8(result.ir))
    write(paths[1], imaging.to_uint8(result.vis))
    write(paths[2], overlay(ir, visible, result))
    return paths


def masks_within_budget(provider, ir: np.ndarray, visible: np.ndarray, budget: PixelBudget,
                        name: str = 'pair') -> MaskResult:
    """The provider's masks of a pair, computed at most at the budget's size: a larger pair is
    scaled down for the provider, its masks and box prompts scaled back to the pair's size
    (``refuse`` mode: :class:`FrameTooLarge`)."""
    h, w = ir.shape
    work = budget.working_size((w, h), name)
    if work == (w, h):
        return provider(ir, visible)
    result = provider(imaging.resize(ir, work), imaging.resize(visible, work))
    scale = np.array([w / work[0], h / work[1]] * 2, np.float32)
    result.ir, result.vis = imaging.resize(result.ir, (w, h)), imaging.resize(result.vis, (w, h))
    result.boxes = {k: np.asarray(b, np.float32).reshape(-1, 4) * scale
                    for k, b in result.boxes.items() if b is not None}
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``sgdfuse masks``."""
    p.add_argument('--ir', required=True, type=Path, help='infrared image file or folder')
    p.add_argument('--vis', required=True, type=Path, help='visible image file or folder')
    p.add_argument('--out', required=True, type=Path, help='output folder')
    p.add_argument('--provider', default='auto',
                   help='mask provider: ' + ', '.join(provider_names()) + ' (default auto: the '
                   "checkpoint's model when --checkpoint is given, else saliency)")
    p.add_argument('--checkpoint', '--mask-checkpoint', dest='checkpoint', type=Path,
                   help='SAM / MobileSAM checkpoint file (official weights; see the README)')
    p.add_argument('--model-type', choices=('vit_b', 'vit_l', 'vit_h'),
                   help='SAM model type (default: read from the checkpoint)')
    p.add_argument('--input-size', type=int,
                   help='image-encoder input side in pixels, a multiple of 16 (default per model)')
    p.add_argument('--max-prompts', type=int, help='box prompts per modality (default 4)')
    p.add_argument('--grid', type=int, help='extra point prompts per side (SAM, MobileSAM)')
    p.add_argument('--dense', action='store_true',
                   help='offline mode: a dense prompt lattice, all instances (slow)')
    p.add_argument('--points-per-side', type=int, help='dense lattice size (default 16)')
    p.add_argument('--backend', choices=('auto', 'torch', 'onnxruntime', 'tensorrt'),
                   help='image-encoder runtime (default auto)')
    p.add_argument('--device', help='cpu or cuda[:N] (default cpu)')
    p.add_argument('--threads', type=int, help='CPU threads (default: all cores)')
    add_budget_arguments(p)
    p.add_argument('--overwrite', action='store_true',
                   help='replace output files that exist already (never an input)')
    p.add_argument('--quiet', action='store_true', help='no per-pair lines')


def provider_options(args) -> dict:
    """:func:`build_provider` options from parsed arguments (unset ones keep their defaults)."""
    opts = given_options(args, ('checkpoint', 'model_type', 'input_size', 'max_prompts', 'grid',
                                'points_per_side', 'backend', 'device', 'threads'))
    if getattr(args, 'dense', False):
        opts['dense'] = True
    return opts


def _plan(args) -> tuple[list[imaging.PairPaths], list[str], list[Path]]:
    """The pairs, the problems met matching them and every input file. Raises ``PathError``
    or ``ImageError``."""
    files.check_output_folder(args.out)
    if not args.ir.is_dir():
        files.require_file(args.ir, '--ir')
        files.require_file(args.vis, '--vis')
        return [imaging.PairPaths(args.ir.stem, args.ir, args.vis)], [], [args.ir, args.vis]
    pairs, problems = imaging.match_pairs(args.ir, args.vis)
    if not pairs:
        raise imaging.ImageError(f'no image pairs with matching names in {args.ir} and '
                                 f'{args.vis}')
    inputs = [*imaging.list_images(args.ir).values(), *imaging.list_images(args.vis).values()]
    return pairs, problems, inputs


def run_masks_command(args) -> int:
    """``sgdfuse masks``; returns the exit status (0 ok, 1 some pairs failed, 2 bad usage or a
    path that cannot be used)."""
    if args.ir.is_dir() != args.vis.is_dir():
        err('--ir and --vis must both be files or both be folders')
        return 2
    try:
        provider = build_provider(args.provider, **provider_options(args))
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        err(str(exc))
        return 2
    budget = PixelBudget(max_pixels=args.max_pixels, mode=args.oversize)
    try:
        pairs, problems, inputs = _plan(args)
        outputs = [p for pair in pairs for p in output_paths(args.out, pair.name)]
        written = files.RunOutputs(args.out if args.ir.is_dir() else None, PARTIAL_LIST)
        if written.own:  # an interrupted run's outputs: replaced, but never an input
            files.check_outputs(outputs, inputs, overwrite=True)
        files.check_outputs([o for o in outputs if o.name not in written.own], inputs,
                            overwrite=args.overwrite)
        files.writable_folder(args.out)
        written.start()
    except (files.PathError, imaging.ImageError, OSError) as exc:
        if isinstance(exc, OSError):  # e.g. a folder that cannot be listed
            exc = files.os_problem(exc.filename or args.out, exc)
        err(str(exc))
        return 2
    describe = getattr(provider, 'describe', lambda: getattr(provider, 'name', '?'))
    if not args.quiet:
        print(f'mask provider: {describe()}')
    try:
        code = _mask_pairs(args, provider, budget, pairs, list(problems), written)
    except KeyboardInterrupt:
        err(f'interrupted after the masks of {len(written.names) // 3} of {len(pairs)} '
            'pair(s); the same command run again finishes (it replaces what this run wrote)')
        return 130
    if code != 2:
        written.done()
    return code


def _mask_pairs(args, provider, budget, pairs, failures: list[str],
                written: files.RunOutputs) -> int:
    totals = []
    for pair in pairs:
        try:
            ir, visible = read_pair(pair.ir, pair.vis)
            result = masks_within_budget(provider, ir, visible, budget, name=str(pair.ir))
        except FrameTooLarge as exc:
            failures.append(too_large(exc))
            continue
        except (imaging.ImageError, ValueError) as exc:
            failures.append(str(exc))
            continue
        except OSError as exc:  # an input that cannot be read
            failures.append(str(files.os_problem(exc.filename or pair.ir, exc)))
            continue
        try:
            write_masks(args.out, pair.name, ir, visible, result, write=written.write_image)
        except files.PathError as exc:  # the next pair could not be written either
            err(str(exc))
            return 2
        totals.append(result.timings.get('total', 0.0))
        if not args.quiet:
            t = result.timings
            print(f'{pair.name}: {ir.shape[1]}x{ir.shape[0]}, {t.get("total", 0):.0f} ms '
                  f'(encoder {t.get("encoder", 0):.0f}, decoder {t.get("decoder", 0):.0f}), '
                  f'instances ir {result.instances.get("ir", 0)} / vis '
                  f'{result.instances.get("vis", 0)}')
    done = len(totals)
    if done:
        print(f'wrote the masks of {done} pair(s) to {args.out} (median '
              f'{float(np.median(totals)):.0f} ms per pair)')
    if failures:
        print(f'{len(failures)} problem(s):', file=sys.stderr)
        for f in failures:
            print(f'  {f}', file=sys.stderr)
        return 1
    return 0
