"""Flicker benchmark: fuse a pan, a static noisy scene and a thermal gain jump in order, as the
node does.

``python -m sgdfuse_ros.tools.flicker_bench`` (``--help`` for the options). Three clips are made
from one registered pair (default: the bundled ``M3FD_00388``, 1024x768):

``pan``     a ``--size`` window (640x480) moving ``--step`` pixels (4) to the right per frame.
            Flicker of frame t is the mean absolute difference (grey levels, 0..255) between
            output t and output t-1 after undoing the known shift, over the overlap less a
            ``--margin`` (16 px) border. A method whose output moves with the scene scores
            near 0; one that depends on where the image sits on its down-sampling grid, or
            whose masks jump, does not. Reported: the mean, the largest frame over the median
            (spikes), and the mean over frames right after a mask refresh.
``static``  the window at the centre, both sources with independent Gaussian sensor noise
            (``--sigma`` 2 grey levels, rounded to 8 bits) on every frame. Reported: the mean
            per-pixel temporal standard deviation of the output and of each input; a calm
            method stays at or below the noisier input.
``gain``    the static clip with the thermal frames ``--gain-jump`` (30) grey levels brighter
            from the middle frame on, as a thermal camera's automatic gain steps. Reported: the
            output's mean change on that step, per step over the next 8, and how far its mean
            has moved by the end (it should follow the new thermal level, not jump to it).

``--video DIR`` measures real registered video instead (:mod:`.video_bench`: flow-compensated
flicker per sequence and per step beside the inputs' own, and the metrics of the frames).

Frames are fused in order through :class:`~sgdfuse_ros.fusion.pipeline.FusionPipeline` with the
method's default backend. Methods that use masks get them as in the node: refreshed every
``round(camera_rate / mask_rate)`` frames (15 Hz / 2 Hz: every 8th frame) from the mask
provider on that frame, and between refreshes either carried with the scene by
:class:`~sgdfuse_ros.masks.motion.MaskCarrier` (``carry``, the default) or reused as they are
(``hold``, the behaviour without the carrier).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import sys
import time
from typing import Any

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.paths import samples_dir
from . import video_bench

DEFAULT_PAIR = 'M3FD_00388.png'
DEFAULT_METHODS = ('laplacian', 'stage1', 'sgdfuse')
MASK_MODES = ('carry', 'hold')


def load_pair(ir_path: Path, vis_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(thermal uint8 H x W, visible uint8 as stored)`` of one registered pair."""
    ir = imaging.to_uint8(imaging.to_float(imaging.read_image(ir_path, gray=True)))
    vis = imaging.read_image(vis_path)
    if vis.dtype != np.uint8:
        vis = imaging.to_uint8(imaging.to_float(vis))
    if ir.shape != vis.shape[:2]:
        raise imaging.ImageError(f'{ir_path}: size {ir.shape} differs from the visible image '
                                 f'{vis.shape[:2]}')
    return ir, vis


def pan_clip(ir: np.ndarray, vis: np.ndarray, *, size: tuple[int, int], step: int,
             frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``frames`` windows of ``size`` (W, H) moving ``step`` px right per frame, vertically
    centred."""
    w, h = size
    big_h, big_w = ir.shape
    if h > big_h or w + step * (frames - 1) > big_w:
        raise ValueError(f'a {frames}-frame pan of {w}x{h} at {step} px/frame needs '
                         f'{w + step * (frames - 1)}x{h} pixels; the pair is {big_w}x{big_h}')
    y = (big_h - h) // 2
    return [(ir[y:y + h, x:x + w], vis[y:y + h, x:x + w])
            for x in range(0, step * frames, step)]


def static_clip(ir: np.ndarray, vis: np.ndarray, *, size: tuple[int, int], sigma: float,
                frames: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``frames`` copies of the centre window with independent Gaussian noise (8-bit)."""
    w, h = size
    big_h, big_w = ir.shape
    if h > big_h or w > big_w:
        raise ValueError(f'the pair ({big_w}x{big_h}) is smaller than the window {w}x{h}')
    y, x = (big_h - h) // 2, (big_w - w) // 2
    ir0 = ir[y:y + h, x:x + w].astype(np.float32)
    vis0 = vis[y:y + h, x:x + w].astype(np.float32)
    rng = np.random.default_rng(seed)

    def noisy(a):
        return np.clip(np.rint(a + rng.normal(0.0, sigma, a.shape)), 0, 255).astype(np.uint8)

    return [(noisy(ir0), noisy(vis0)) for _ in range(frames)]


def gain_jump_clip(static: list[tuple[np.ndarray, np.ndarray]], jump: float
                   ) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """The static clip with the thermal frames ``jump`` grey levels brighter (8-bit, clipped)
    from its middle frame on, as a thermal camera's automatic gain steps; and that frame."""
    at = len(static) // 2
    out = []
    for i, (ir, vis) in enumerate(static):
        if i >= at:
            ir = np.clip(ir.astype(np.float32) + jump, 0, 255).astype(np.uint8)
        out.append((ir, vis))
    return out, at


def gain_response(outs: list[np.ndarray], at: int, margin: int) -> dict[str, float]:
    """How an output takes a thermal gain jump at frame ``at``: its mean change on that step,
    its mean change per step over the next (at most 8) steps, and how far its mean has moved
    by the last frame (grey levels)."""
    h, w = outs[0].shape
    inner = [np.asarray(o, np.float32)[margin:h - margin, margin:w - margin] for o in outs]
    steps = [float(np.mean(np.abs(b - a))) for a, b in zip(inner[:-1], inner[1:])]
    after = steps[at:at + 8]
    return {'step': steps[at - 1], 'after': float(np.mean(after)) if after else 0.0,
            'moved': float(np.mean(inner[-1]) - np.mean(inner[at - 1]))}


def fuse_in_order(pipeline, clip: list[tuple[np.ndarray, np.ndarray]], *, refresh_every: int,
                  mask_mode: str = 'carry', temporal: bool = False
                  ) -> tuple[list[np.ndarray], list[int], float]:
    """Fuse ``clip`` frame by frame as the node does; returns the fused lumas (float32 grey
    levels 0..255), the indices of the refresh frames and the mean per-frame carrier cost
    (ms; 0 without masks). ``temporal``: through a default
    :class:`~sgdfuse_ros.fusion.temporal.TemporalFilter` too."""
    from sgdfuse_ros.fusion.temporal import TemporalFilter
    from sgdfuse_ros.masks.motion import MaskCarrier

    if mask_mode not in MASK_MODES:
        raise ValueError(f'mask_mode must be one of {MASK_MODES}, got {mask_mode!r}')
    uses_masks = pipeline.method.uses_masks
    carrier = MaskCarrier()
    steady = TemporalFilter() if temporal else None
    held = None
    outs, refreshes, carry_ms = [], [], []
    for i, (ir, vis) in enumerate(clip):
        masks = None
        if uses_masks:
            luma = imaging.visible_luma(vis)
            if i % refresh_every == 0:
                fresh = pipeline.mask_provider(imaging.to_float(ir), vis).as_tuple()
                refreshes.append(i)
                held = fresh
                carrier.update(fresh, luma)
            if mask_mode == 'carry':
                t0 = time.perf_counter()
                masks = carrier.masks_for(luma)
                carry_ms.append((time.perf_counter() - t0) * 1e3)
            else:
                masks = held
        res = pipeline.fuse(ir, vis, masks=masks)
        luma = res.luma if steady is None else steady(
            res.luma, imaging.rgb_to_gray(vis) if vis.ndim == 3 else vis, res.ir)
        outs.append(luma.astype(np.float32) * 255.0)
    return outs, refreshes, float(np.mean(carry_ms)) if carry_ms else 0.0


def pan_flicker(outs: list[np.ndarray], step: int, margin: int) -> np.ndarray:
    """Per-frame flicker (frames 1..N-1) of a pan moving ``step`` px right per frame."""
    d = []
    for prev, cur in zip(outs[:-1], outs[1:]):
        h, w = cur.shape
        a = cur[margin:h - margin, margin:w - margin - step]
        b = prev[margin:h - margin, margin + step:w - margin]
        d.append(float(np.mean(np.abs(a - b))))
    return np.asarray(d)


def temporal_std(frames: list[np.ndarray], margin: int) -> float:
    """Mean over pixels of the per-pixel standard deviation over frames (grey levels)."""
    stack = np.stack([np.asarray(f, np.float32) for f in frames])
    h, w = stack.shape[1:]
    return float(stack[:, margin:h - margin, margin:w - margin].std(0).mean())


def run(args) -> dict[str, Any]:
    """Both clips for every method; returns the rows and the settings."""
    from sgdfuse_ros.fusion.pipeline import FusionPipeline

    ir_path = args.ir or samples_dir() / 'ir' / DEFAULT_PAIR
    vis_path = args.vis or samples_dir() / 'vi' / DEFAULT_PAIR
    ir, vis = load_pair(Path(ir_path), Path(vis_path))
    size = _parse_size(args.size)
    refresh_every = max(1, int(round(args.camera_rate / args.mask_rate)))
    pan = pan_clip(ir, vis, size=size, step=args.step, frames=args.frames)
    static = static_clip(ir, vis, size=size, sigma=args.sigma, frames=args.static_frames,
                         seed=args.seed)
    gain, jump_at = gain_jump_clip(static, args.gain_jump)
    in_std = {'ir': temporal_std([a.astype(np.float32) for a, _ in static], args.margin),
              'vis': temporal_std([imaging.visible_luma(b) * 255.0 for _, b in static],
                                  args.margin)}
    rows: dict[str, dict[str, Any]] = {}
    for spec in args.methods:
        name, _, mode = spec.partition(':')
        options: dict[str, Any] = {}
        if name == 'sgdfuse':
            if args.weights:
                options['weights'] = str(args.weights)
            if args.steps:
                options['steps'] = args.steps
        if name in ('stage1', 'sgdfuse'):
            options['backend'] = args.backend
            if args.graph != 'float':
                options['graph'] = args.graph
        pipeline = FusionPipeline(method=name, method_options=options,
                                  mask_provider=args.mask_provider)
        temporal = mode == 'temporal'
        mode = 'carry' if temporal else mode
        modes = [mode or 'carry'] if pipeline.method.uses_masks else ['']
        for m in modes:
            label = f'{name} ({m} masks)' if m else name
            label += ', temporal filter' if temporal else ''
            t0 = time.perf_counter()
            outs, refreshes, carry_ms = fuse_in_order(pipeline, pan, refresh_every=refresh_every,
                                                      mask_mode=m or 'carry', temporal=temporal)
            fl = pan_flicker(outs, args.step, args.margin)
            after = [i - 1 for i in refreshes if i >= 1]
            others = [j for j in range(len(fl)) if j not in after]
            souts, _, _ = fuse_in_order(pipeline, static, refresh_every=refresh_every,
                                        mask_mode=m or 'carry', temporal=temporal)
            gouts, _, _ = fuse_in_order(pipeline, gain, refresh_every=refresh_every,
                                        mask_mode=m or 'carry', temporal=temporal)
            median = float(np.median(fl))
            rows[label] = {
                'gain_jump': gain_response(gouts, jump_at, args.margin),
                'pan_mean': float(fl.mean()), 'pan_median': median,
                'pan_max_over_median': float(fl.max() / max(median, 1e-9)),
                'pan_after_refresh': float(fl[after].mean()) if after else None,
                'pan_other': float(fl[others].mean()) if others else None,
                'static_std': temporal_std(souts, args.margin),
                'carrier_ms': round(carry_ms, 2),
                'seconds': round(time.perf_counter() - t0, 1),
                'per_frame': [round(float(v), 4) for v in fl],
            }
            print(f'{label}: pan mean {fl.mean():.3f}, max/median '
                  f'{rows[label]["pan_max_over_median"]:.2f}, static std '
                  f'{rows[label]["static_std"]:.3f}', file=sys.stderr)
    return {'rows': rows, 'input_static_std': in_std,
            'settings': {'pair': str(ir_path), 'size': list(size), 'step': args.step,
                         'frames': args.frames, 'static_frames': args.static_frames,
                         'sigma': args.sigma, 'margin': args.margin,
                         'gain_jump': args.gain_jump,
                         'refresh_every': refresh_every, 'mask_provider': args.mask_provider,
                         'backend': args.backend, 'graph': args.graph},
            'machine': {'cpus': os.cpu_count(), 'load': round(os.getloadavg()[0], 2),
                        'python': platform.python_version()}}


def format_report(result: dict[str, Any]) -> str:
    """A markdown table of the rows."""
    s = result['input_static_std']
    lines = ['| method | pan flicker (mean) | max / median | after a refresh | other frames '
             f'| static std (IR {s["ir"]:.2f}, VIS {s["vis"]:.2f}) | thermal gain jump: step, '
             'next 8 steps, moved |',
             '|---|---|---|---|---|---|---|']
    for name, r in result['rows'].items():
        after = '-' if r['pan_after_refresh'] is None or name.find('masks') < 0 \
            else f'{r["pan_after_refresh"]:.3f}'
        other = '-' if after == '-' else f'{r["pan_other"]:.3f}'
        g = r['gain_jump']
        lines.append(f'| {name} | {r["pan_mean"]:.3f} | {r["pan_max_over_median"]:.2f} | '
                     f'{after} | {other} | {r["static_std"]:.3f} | {g["step"]:.2f}, '
                     f'{g["after"]:.2f}, {g["moved"]:+.2f} |')
    return '\n'.join(lines)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise ValueError(f'--size must be WxH, got {text!r}') from None
    if w < 64 or h < 64:
        raise ValueError(f'--size must be at least 64x64, got {text!r}')
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m sgdfuse_ros.tools.flicker_bench',
                                description='Flicker on a pan and noise on a static scene, '
                                'frames fused in order as the node does.')
    p.add_argument('--methods', nargs='+', default=list(DEFAULT_METHODS),
                   help='methods; NAME:hold reuses masks without carrying them, NAME:temporal '
                   'adds the temporal filter (--video: '
                   'NAME:KEY=VALUE,... passes FusionStream options) '
                   '(default: %(default)s)')
    p.add_argument('--ir', type=Path, help='infrared image (default: the bundled M3FD_00388)')
    p.add_argument('--vis', type=Path, help='visible image')
    p.add_argument('--size', default='640x480', help='window WxH (default %(default)s)')
    p.add_argument('--step', type=int, default=4, help='pan px per frame (default %(default)s)')
    p.add_argument('--frames', type=int, default=64, help='pan frames (default %(default)s)')
    p.add_argument('--static-frames', type=int, default=32,
                   help='static frames (default %(default)s)')
    p.add_argument('--sigma', type=float, default=2.0,
                   help='sensor noise of the static scene, grey levels (default %(default)s)')
    p.add_argument('--margin', type=int, default=16, help='border left out (default %(default)s)')
    p.add_argument('--camera-rate', type=float, default=15.0, help='Hz (default %(default)s)')
    p.add_argument('--mask-rate', type=float, default=2.0, help='Hz (default %(default)s)')
    p.add_argument('--mask-provider', default='saliency', help='(default %(default)s)')
    p.add_argument('--backend', default='auto', help='network backend (default %(default)s)')
    p.add_argument('--weights', type=Path, help='refiner weights of sgdfuse (default: shipped)')
    p.add_argument('--steps', type=int, help="refiner steps (default: the checkpoint's)")
    p.add_argument('--gain-jump', type=float, default=30.0,
                   help='grey levels the thermal frames of the static scene step up by, from '
                   'its middle frame (default %(default)s)')
    p.add_argument('--graph', default='float', choices=('float', 'int8'),
                   help='graphs of the networks on onnxruntime (default %(default)s)')
    p.add_argument('--seed', type=int, default=0, help='noise seed (default %(default)s)')
    p.add_argument('--json', type=Path, help='also write the full result (per frame) here')
    p.add_argument('--video', type=Path, help='real video instead of the synthetic clips: a '
                   'folder of sequences SEQ/ir, SEQ/vi (or one sequence)')
    video_bench.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.step < 1 or args.frames < 3 or args.static_frames < 2 or args.margin < 0:
        print('flicker_bench: error: need --step >= 1, --frames >= 3, --static-frames >= 2, '
              '--margin >= 0', file=sys.stderr)
        return 2
    if args.camera_rate <= 0 or args.mask_rate <= 0:
        print('flicker_bench: error: --camera-rate and --mask-rate must be > 0', file=sys.stderr)
        return 2
    if args.video is not None and (args.rate <= 0 or args.metrics_every < 1):
        print('flicker_bench: error: need --rate > 0 and --metrics-every >= 1', file=sys.stderr)
        return 2
    try:
        result = run(args) if args.video is None else video_bench.run(args)
    except (ValueError, FileNotFoundError, imaging.ImageError) as exc:
        print(f'flicker_bench: error: {exc}', file=sys.stderr)
        return 2
    if args.video is not None:
        print(video_bench.format_report(result))
        m = result['machine']
        print(f'\n{m["cpus"]} CPUs, load {m["load"]}; {result["settings"]["rate"]:g} Hz, masks '
              f'at {result["settings"]["mask_rate"]:g} Hz, flow {result["settings"]["flow"]}')
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return 0
    print(format_report(result))
    m = result['machine']
    print(f'\n{m["cpus"]} CPUs, load {m["load"]}; refresh every '
          f'{result["settings"]["refresh_every"]} frames, {result["settings"]["frames"]} pan '
          f'frames, {result["settings"]["static_frames"]} static frames')
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
