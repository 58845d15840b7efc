"""Benchmark of the mask providers: speed at 640x480, streaming cost, and what the masks mean.

``python -m sgdfuse_ros.tools.mask_bench [--settings S ...] [--dense S ...] [--streaming SECONDS]
[--overlays DIR] [--json FILE]``

A *setting* is ``provider[:input_size][@backend]``, e.g. ``saliency``, ``lite_medsam:160``,
``lite_medsam:256@torch``, ``mobile_sam:512``, ``sam_vit_b:384``. For each setting it reports

* **speed**: median over ``--timing-pairs`` real pairs resized to 640x480 (after one warm-up
  pair) of the encoder time, the decoder time (both modalities together) and the total time for
  both masks, and the refresh rate that allows;
* **meaning**: over ``--quality-pairs`` real pairs of ``--data`` at their own size, the
  fraction of pairs whose IR mask is hotter inside than outside (mask-weighted mean IR
  intensity: ``sum(m I) / sum(m)`` vs ``sum((1 - m) I) / sum(1 - m)``), the mean of that
  difference, and the mean mask coverage. A pair whose mask is empty counts as not hotter;
* **dense** (``--dense``): the offline dense mode's time for one 640x480 pair;
* **streaming** (``--streaming``): a fusion loop at ``--fps`` on 640x480 pairs, timed alone and
  then beside a :class:`~.masks.MaskWorker` running the setting at ``--rate`` Hz (default: as
  often as the provider allows, at most 2 Hz): the fusion slowdown, and the mask refresh
  interval and age the fusion loop saw.

``mobile_sam`` and ``sam_*`` settings run from ``--checkpoint-dir`` (the official files, see the
README); without them the models are timed with randomly initialised weights of the same
architecture (their speed does not depend on the weights; their masks do, so meaning is not
reported for them).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
import os
from pathlib import Path
import platform
import sys
import tempfile
import time

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.runtime.ort import clear_session_cache
from sgdfuse_ros.runtime.threads import set_threads

DEFAULT_SETTINGS = ('saliency', 'lite_medsam:128', 'lite_medsam:160', 'lite_medsam:256')
BENCH_SIZE = (640, 480)


@dataclass
class Setting:
    label: str
    provider: str
    model_type: str | None
    input_size: int | None
    backend: str | None


def parse_setting(text: str) -> Setting:
    label = text
    backend = None
    if '@' in text:
        text, backend = text.split('@', 1)
    size = None
    if ':' in text:
        text, s = text.split(':', 1)
        size = int(s)
    model_type = None
    if text.startswith('sam_vit_'):
        model_type, text = text[len('sam_'):], 'sam'
    return Setting(label, text, model_type, size, backend)


def data_dir(given: Path | None) -> Path:
    """The folder of real pairs: ``--data``, else ``$SGDFUSE_DATA``; a ``ValueError`` naming
    both when neither is set or the folder does not exist."""
    env = os.environ.get('SGDFUSE_DATA')
    root = given or (Path(env) if env else None)
    if root is None:
        raise ValueError('no pair folder: pass --data DIR (registered pairs as DIR/<set>/ir, '
                         'DIR/<set>/vi or DIR/ir, DIR/vi) or set SGDFUSE_DATA')
    if not root.is_dir():
        raise ValueError(f'--data {root}: no such folder')
    return root


def real_pairs(root: Path) -> list[imaging.PairPaths]:
    """Every registered pair under ``root`` (``root/<set>/{ir,vi}/NAME`` or ``root/{ir,vi}``)."""
    if (root / 'ir').is_dir():
        return imaging.dataset_pairs(root)
    pairs: list[imaging.PairPaths] = []
    for sub in sorted(p for p in root.iterdir() if (p / 'ir').is_dir()):
        pairs += [imaging.PairPaths(f'{sub.name}/{p.name}', p.ir, p.vis)
                  for p in imaging.dataset_pairs(sub)]
    return pairs


def load_pair(pair: imaging.PairPaths, size: tuple[int, int] | None = None):
    from .masks import read_pair

    ir, vis = read_pair(pair.ir, pair.vis)
    if size is not None:
        ir = imaging.resize(ir, size)
        vis = imaging.resize(vis, size)
    return ir, vis


def _checkpoint_for(setting: Setting, ckpt_dir: Path | None, tmp: Path) -> tuple[str | None, bool]:
    """``(checkpoint, real)``: the official file when present, else a random-weight one."""
    from sgdfuse_ros.masks.checkpoints import OFFICIAL
    from .random_checkpoints import write_random_sam_checkpoint

    if setting.provider not in ('mobile_sam', 'sam'):
        return None, True
    kind = setting.model_type if setting.provider == 'sam' else 'mobile_sam'
    if ckpt_dir is not None:
        for f in OFFICIAL:
            if (f.model_type or f.provider) == kind and (ckpt_dir / f.filename).is_file():
                return str(ckpt_dir / f.filename), True
    path = tmp / f'random_{kind}.pt'
    if not path.is_file():
        write_random_sam_checkpoint(kind, path)
    return str(path), False


def build(setting: Setting, ckpt: str | None, common: dict, **extra):
    from sgdfuse_ros.masks import PROVIDERS, build_provider
    from sgdfuse_ros.masks.base import SAM_ONLY_OPTIONS

    sam_family = PROVIDERS[setting.provider].sam_family
    opts = {k: v for k, v in common.items() if sam_family or k not in SAM_ONLY_OPTIONS}
    opts.update(extra)
    if ckpt:
        opts['checkpoint'] = ckpt
    if setting.model_type:
        opts['model_type'] = setting.model_type
    if setting.input_size:
        opts['input_size'] = setting.input_size
    if setting.backend:
        opts['backend'] = setting.backend
    return build_provider(setting.provider, **opts)


def time_provider(provider, frames) -> dict[str, float]:
    """Median timings (ms) over ``frames`` after one warm-up call; ``cpu``: the process CPU time
    of a call (all threads), which other work on a shared machine does not inflate."""
    if hasattr(provider, 'prepare'):
        provider.prepare()
    provider(*frames[0])
    rows = []
    for ir, vis in frames[1:] or frames:
        c0 = time.process_time()
        t = dict(provider(ir, vis).timings)
        t['cpu'] = (time.process_time() - c0) * 1e3
        rows.append(t)
    keys = ('prompts', 'encoder', 'decoder', 'total', 'cpu')
    return {k: float(np.median([r.get(k, 0.0) for r in rows])) for k in keys}


def mask_meaning(provider, pairs) -> dict[str, float]:
    wins, diffs, cover = 0, [], []
    for pair in pairs:
        ir, vis = load_pair(pair)
        m = provider(ir, vis).ir.astype(np.float64)
        w_in, w_out = m.sum(), (1.0 - m).sum()
        if w_in < 1e-6 or w_out < 1e-6:
            diffs.append(0.0)
        else:
            d = float((m * ir).sum() / w_in - ((1.0 - m) * ir).sum() / w_out)
            wins += d > 0
            diffs.append(d)
        cover.append(float(m.mean()))
    return {'pairs': len(pairs), 'hotter_inside': wins, 'mean_difference': float(np.mean(diffs)),
            'coverage': float(np.mean(cover))}


def streaming(provider, frames, *, seconds: float, fps: float, rate: float,
              method: str, priority: str | None = None, blocks: int = 4) -> dict[str, float]:
    """A fusion loop at ``fps`` on 640x480 pairs beside a :class:`~.masks.MaskWorker` running
    ``provider`` at ``rate`` Hz, reusing the worker's latest masks as the node does.

    The fusion time with and without the worker is measured in alternating blocks (``blocks``
    of each, ``seconds`` in all) so that a change of the machine's load reaches both alike:
    in a "beside" block every fused pair is submitted to the worker; in an "alone" block
    nothing is, and timing starts once the refresh in progress has finished."""
    from sgdfuse_ros.masks import MaskWorker
    from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig

    pipe = FusionPipeline(PipelineConfig(method=method, thermal_smoothing=0.0))
    thermal = [imaging.to_uint8(ir) for ir, _ in frames]
    state = {'i': 0, 'seen': 0}
    lat = {'alone': [], 'beside': []}
    ages, refresh_times = [], []  # refresh_times: one list per beside block

    def run(worker, block_s: float, submit: bool) -> None:
        if not submit:
            while worker.busy:
                time.sleep(0.005)
        t_end = time.monotonic() + block_s
        next_t = time.monotonic()
        if submit:  # refreshes and ages count from the block's first new masks on
            refresh_times.append([])
            old = worker.latest()
            state['seen'] = old.frame if old is not None else 0
        while time.monotonic() < t_end:
            k = state['i'] % len(frames)
            snap = worker.latest()
            if snap is not None and submit:
                if snap.frame != state['seen']:
                    state['seen'] = snap.frame
                    refresh_times[-1].append(snap.computed)
                if refresh_times[-1]:
                    ages.append(snap.age)
            shape = frames[k][1].shape[:2]
            masks = snap.as_tuple() if snap is not None and snap.as_tuple()[0].shape == shape \
                else (np.zeros(shape, np.float32),) * 2
            t0 = time.perf_counter()
            res = pipe.fuse(thermal[k], frames[k][1], masks=masks)
            lat['beside' if submit else 'alone'].append((time.perf_counter() - t0) * 1e3)
            if submit:
                worker.submit(res.ir, frames[k][1])
            state['i'] += 1
            next_t += 1.0 / fps
            time.sleep(max(0.0, next_t - time.monotonic()))

    load0 = os.getloadavg()[0]
    worker = MaskWorker(provider, rate_hz=rate, max_age_s=4.0, priority=priority).start()
    worker.submit(*frames[0])   # the first refresh (after the worker prepared the provider)
    worker.wait_for(1, timeout=300)
    block = seconds / (2 * blocks)
    try:
        for _ in range(blocks):
            run(worker, block, submit=False)
            run(worker, block, submit=True)
    finally:
        stats = worker.stats()
        worker.stop()
    gaps = np.concatenate([np.diff(t) for t in refresh_times])  # within beside blocks
    alone = {'fuse_ms_median': float(np.median(lat['alone'])),
             'fuse_ms_p90': float(np.percentile(lat['alone'], 90)), 'frames': len(lat['alone'])}
    beside = {'fuse_ms_median': float(np.median(lat['beside'])),
              'fuse_ms_p90': float(np.percentile(lat['beside'], 90)),
              'frames': len(lat['beside']),
              'refresh_interval_s': float(np.median(gaps)) if len(gaps) else None,
              'max_refresh_interval_s': float(gaps.max()) if len(gaps) else None,
              'max_age_s': float(max(ages)) if ages else None,
              'refreshes': sum(map(len, refresh_times)),
              'worker_median_ms': stats['median_compute_ms'],
              'stale_reads': stats['stale_reads'], 'scheduling': stats['scheduling']}
    slowdown = beside['fuse_ms_median'] / alone['fuse_ms_median'] - 1.0
    return {'alone': alone, 'beside': beside, 'slowdown': slowdown, 'rate_hz': rate,
            'method': pipe.method_name, 'load': [load0, os.getloadavg()[0]]}


def write_overlays(out_dir: Path, pairs, built: list, width: int = 640) -> list[Path]:
    """One PNG per pair: a row per provider (thermal + mask | visible + mask), labelled."""
    import cv2

    from .masks import overlay

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for pair in pairs:
        ir, vis = load_pair(pair)
        rows = []
        for label, provider in built:
            img = overlay(ir, vis, provider(ir, vis))
            h = round(img.shape[0] * width / img.shape[1])
            img = cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)
            cv2.putText(img, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1,
                        cv2.LINE_AA)
            rows.append(img)
        path = out_dir / (pair.name.replace('/', '_') + '.png')
        imaging.write_image(path, np.concatenate(rows, axis=0))
        paths.append(path)
    return paths


def _fmt(v, nd=0):
    if v is None:
        return 'n/a'
    return f'{v:.{nd}f}'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='python -m sgdfuse_ros.tools.mask_bench',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--data', type=Path, default=None,
                   help='root of the real pairs (<set>/ir + <set>/vi, or ir + vi); default: '
                   '$SGDFUSE_DATA')
    p.add_argument('--settings', nargs='+', default=list(DEFAULT_SETTINGS),
                   help='provider[:input_size][@backend] (default: %(default)s)')
    p.add_argument('--dense', nargs='*', default=[], help='settings to time in dense mode')
    p.add_argument('--points-per-side', type=int, default=16, help='dense lattice (16)')
    p.add_argument('--timing-pairs', type=int, default=6, help='pairs timed at 640x480 (6)')
    p.add_argument('--quality-pairs', type=int, default=0,
                   help='pairs for the meaning columns (0 = all)')
    p.add_argument('--skip-meaning', action='store_true', help='timing only')
    p.add_argument('--checkpoint-dir', type=Path, help='folder with the official checkpoints')
    p.add_argument('--threads', type=int, help='CPU threads (default: all cores)')
    p.add_argument('--max-prompts', type=int, help='box prompts per modality (default 4)')
    p.add_argument('--engines-dir', type=Path, help='where encoder ONNX exports are cached')
    p.add_argument('--streaming', type=float, default=0.0,
                   help='seconds of fusion loop alone and beside the mask worker (0 = skip)')
    p.add_argument('--fps', type=float, default=10.0, help='fusion loop rate (10)')
    p.add_argument('--rate', type=float, help='mask worker rate in Hz (default: as often as '
                   'the provider allows, at most 2)')
    p.add_argument('--method', default='auto', help='fusion method of the streaming loop')
    p.add_argument('--blocks', type=int, default=4,
                   help='alternating alone / beside blocks of the streaming run (4 each)')
    p.add_argument('--priority', choices=('idle', 'nice', 'normal'),
                   help="the mask worker's CPU priority (see MaskWorker; default: the "
                   "provider's own, idle for the SAM family)")
    p.add_argument('--overlays', type=Path, help='write overlay PNGs of --overlay-pairs here')
    p.add_argument('--overlay-pairs', nargs='+', default=[], help='pair names (SET/NAME)')
    p.add_argument('--overlay-width', type=int, default=640, help='overlay width in pixels')
    p.add_argument('--json', type=Path, help='write all results as JSON')
    args = p.parse_args(argv)

    common: dict = {}
    if args.threads:  # this command owns its process: PyTorch's threads too
        set_threads(args.threads)
        common['threads'] = args.threads
    if args.max_prompts is not None:
        common['max_prompts'] = args.max_prompts
    if args.engines_dir:
        common['engines_dir'] = str(args.engines_dir)
    try:
        args.data = data_dir(args.data)
    except ValueError as exc:
        print(f'mask_bench: error: {exc}', file=sys.stderr)
        return 2
    pairs = real_pairs(args.data)
    if not pairs:
        print(f'mask_bench: error: no pairs under {args.data}', file=sys.stderr)
        return 2
    step = max(1, len(pairs) // max(args.timing_pairs, 1))
    timing_frames = [load_pair(pp, BENCH_SIZE) for pp in pairs[::step][:args.timing_pairs]]
    qstep = max(1, len(pairs) // args.quality_pairs) if args.quality_pairs else 1
    quality = pairs[::qstep]
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f'# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load '
          f'{load:.2f}; {len(pairs)} pairs in {args.data}')
    results: dict = {'load_before': load, 'settings': {}, 'dense': {}}
    rows = []
    overlay_built = []
    with tempfile.TemporaryDirectory(prefix='sgdfuse-maskbench-') as tmp:
        for text in args.settings:
            s = parse_setting(text)
            ckpt, real = _checkpoint_for(s, args.checkpoint_dir, Path(tmp))
            prov = build(s, ckpt, common)
            load0 = os.getloadavg()[0]
            t = time_provider(prov, timing_frames)
            res = {'timing_ms': t, 'real_weights': real, 'load': [load0, os.getloadavg()[0]],
                   'describe': getattr(prov, 'describe', lambda: s.provider)()}
            if real and not args.skip_meaning:
                res['meaning'] = mask_meaning(prov, quality)
            if real and args.overlays:
                overlay_built.append((s.label, prov))
            if args.streaming > 0:
                rate = args.rate or min(2.0, 1e3 / max(t['total'] * 1.2, 1.0))
                # A fresh provider (and runtime sessions), prepared by the worker in its own
                # thread as in the node, so the runtimes' threads get the worker's priority.
                clear_session_cache()
                res['streaming'] = streaming(build(s, ckpt, common), timing_frames,
                                             seconds=args.streaming, fps=args.fps, rate=rate,
                                             method=args.method, priority=args.priority,
                                             blocks=args.blocks)
            results['settings'][s.label] = res
            rows.append((s.label, res))
            print(f'{s.label}: {res["describe"]}; {json.dumps(t)}', flush=True)
        for text in args.dense:
            s = parse_setting(text)
            ckpt, real = _checkpoint_for(s, args.checkpoint_dir, Path(tmp))
            prov = build(s, ckpt, common, dense=True, points_per_side=args.points_per_side)
            if hasattr(prov, 'prepare'):
                prov.prepare()
            r = prov(*timing_frames[0])
            results['dense'][s.label] = {k: r.timings.get(k) for k in
                                         ('encoder', 'decoder', 'total')}
            results['dense'][s.label]['instances'] = r.instances
            print(f'dense {s.label}: {json.dumps(results["dense"][s.label])}', flush=True)
        if args.overlays and overlay_built:
            chosen = [pp for pp in pairs if pp.name in args.overlay_pairs] or pairs[:3]
            results['overlays'] = [str(x) for x in write_overlays(
                args.overlays, chosen, overlay_built, width=args.overlay_width)]
    results['load_after'] = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')

    print()
    print('| setting | encoder ms | decoder ms | total ms (both masks) | refresh Hz | CPU ms | '
          'load | IR hotter inside | IR in - out | coverage |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for label, res in rows:
        t, m = res['timing_ms'], res.get('meaning')
        hot = f'{m["hotter_inside"]}/{m["pairs"]}' if m else (
            'n/a (random weights)' if not res['real_weights'] else 'not measured')
        print(f'| {label} | {_fmt(t["encoder"])} | {_fmt(t["decoder"])} | {_fmt(t["total"])} | '
              f'{1e3 / max(t["total"], 1e-6):.1f} | {_fmt(t["cpu"])} | {max(res["load"]):.1f} | '
              f'{hot} | '
              f'{_fmt(m["mean_difference"], 3) if m else "n/a"} | '
              f'{_fmt(m["coverage"], 3) if m else "n/a"} |')
    if results['dense']:
        print()
        print(f'| dense mode ({args.points_per_side}x{args.points_per_side} prompts), 640x480 | '
              'encoder ms | decoder ms | total ms | instances ir / vis |')
        print('|---|---|---|---|---|')
        for label, d in results['dense'].items():
            print(f'| {label} | {_fmt(d["encoder"])} | {_fmt(d["decoder"])} | '
                  f'{_fmt(d["total"])} | {d["instances"].get("ir")} / '
                  f'{d["instances"].get("vis")} |')
    if args.streaming > 0:
        print()
        print(f'| streaming beside fusion ({args.fps:g} fps, 640x480) | worker Hz | fuse ms '
              'alone | fuse ms beside | slowdown | refresh interval s (median / max) | '
              'max age s | load |')
        print('|---|---|---|---|---|---|---|---|')
        for label, res in rows:
            st = res.get('streaming')
            if not st:
                continue
            a, b = st['alone'], st['beside']
            print(f'| {label} | {st["rate_hz"]:.2f} | {a["fuse_ms_median"]:.1f} | '
                  f'{b["fuse_ms_median"]:.1f} | {100 * st["slowdown"]:+.0f}% | '
                  f'{_fmt(b.get("refresh_interval_s"), 2)} / '
                  f'{_fmt(b.get("max_refresh_interval_s"), 2)} | {_fmt(b.get("max_age_s"), 2)} | '
                  f'{max(st["load"]):.1f} |')
    print(f'\nload average before {results["load_before"]:.2f}, after {results["load_after"]:.2f}')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
