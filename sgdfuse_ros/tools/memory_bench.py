"""Memory of the fusion pipeline per frame size, and after a burst of large frames.

``python -m sgdfuse_ros.tools.memory_bench`` prints two tables:

* **Peak resident memory per resolution**: for each ``--sizes`` entry a fresh process builds one
  :class:`~sgdfuse_ros.fusion.pipeline.FusionPipeline` (default method, default budget), fuses
  ``--frames`` pairs of that size (the bundled sample pair scaled to it) and reports its peak
  RSS (``VmHWM`` of ``/proc/self/status``), its RSS after the pipeline was built, and the
  size the method ran at.
* **Burst** (``--burst``): one pipeline in one process fuses small frames, then large ones,
  then small ones again, and reports the RSS (``VmRSS``) after each phase, so that memory kept
  after a large frame (allocator arenas, caches) shows as the difference between the first and
  the last phase.

``--max-pixels`` / ``--oversize`` set the pipeline's pixel budget (see ``sgdfuse fuse
--help``); ``--method`` another method. Linux only (reads ``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import time

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.budget import FrameTooLarge
from sgdfuse_ros.core.memory import proc_status_mb
from sgdfuse_ros.core.paths import samples_dir

DEFAULT_SIZES = ('640x480', '1920x1080', '3840x2160', '8000x6000')


def sample_frames(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The first bundled sample pair scaled to ``size`` ``(W, H)``: thermal gray ``uint8``,
    visible RGB ``uint8``."""
    pair = imaging.match_pairs(samples_dir() / 'ir', samples_dir() / 'vi')[0][0]
    ir = imaging.resize(imaging.read_image(pair.ir, gray=True), size)
    vis = imaging.resize(imaging.read_image(pair.vis, gray=False), size)
    return ir, vis


def _pipeline(args: argparse.Namespace):
    from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig

    cfg = PipelineConfig(method=args.method, thermal_smoothing=0.0)
    if args.max_pixels is not None:
        cfg.max_pixels = args.max_pixels
    if args.oversize is not None:
        cfg.oversize = args.oversize
    return FusionPipeline(cfg)


def _work_size(pipe, size: tuple[int, int]) -> str:
    try:
        w, h = pipe.working_size(size)
    except FrameTooLarge:
        return 'refused'
    return f'{w}x{h}'


def measure_size(args: argparse.Namespace, size: tuple[int, int]) -> dict:
    """Build a pipeline, fuse ``args.frames`` pairs of ``size``; figures in MB and ms."""
    pipe = _pipeline(args)
    built = proc_status_mb('VmRSS')
    ir, vis = sample_frames(size)
    times, refused = [], ''
    for _ in range(args.frames):
        t0 = time.perf_counter()
        try:
            pipe.fuse(ir, vis)
        except imaging.ImageError as exc:
            refused = str(exc)
            break
        times.append((time.perf_counter() - t0) * 1e3)
    return {'size': f'{size[0]}x{size[1]}', 'method': pipe.method_name,
            'work': _work_size(pipe, size), 'built_mb': built,
            'peak_mb': proc_status_mb('VmHWM'), 'after_mb': proc_status_mb('VmRSS'),
            'ms': float(np.median(times)) if times else None, 'refused': refused}


def measure_burst(args: argparse.Namespace) -> dict:
    """Small frames, large frames, small frames through one pipeline: RSS after each phase."""
    small, large = imaging.parse_size(args.small), imaging.parse_size(args.large)
    pipe = _pipeline(args)
    frames = {s: sample_frames(s) for s in (small, large)}
    phases = []
    for label, size in (('small', small), ('large', large), ('small again', small)):
        for _ in range(args.frames):
            pipe.fuse(*frames[size])
        phases.append({'phase': label, 'size': f'{size[0]}x{size[1]}',
                       'work': _work_size(pipe, size), 'rss_mb': proc_status_mb('VmRSS')})
    return {'method': pipe.method_name, 'phases': phases, 'peak_mb': proc_status_mb('VmHWM')}


def _child(args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [sys.executable, '-m', 'sgdfuse_ros.tools.memory_bench', '--method', args.method,
           '--frames', str(args.frames), *extra]
    if args.max_pixels is not None:
        cmd += ['--max-pixels', str(args.max_pixels)]
    if args.oversize is not None:
        cmd += ['--oversize', args.oversize]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ['?'])[-1]
        return {'error': f'exit status {proc.returncode}: {tail}'}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _print_sizes(rows: list[tuple[str, dict]]) -> None:
    print(f'{"frame":>10s} {"method":>8s} {"runs at":>10s} {"built MB":>9s} {"peak MB":>8s} '
          f'{"after MB":>9s} {"ms/frame":>9s}')
    for size, r in rows:
        if 'error' in r:
            print(f'{size:>10s}  {r["error"]}')
        elif r['refused']:
            print(f'{size:>10s} {r["method"]:>8s} {"refused":>10s} {r["built_mb"]:9.0f} '
                  f'{r["peak_mb"]:8.0f} {r["after_mb"]:9.0f} {"-":>9s}')
        else:
            print(f'{size:>10s} {r["method"]:>8s} {r["work"]:>10s} {r["built_mb"]:9.0f} '
                  f'{r["peak_mb"]:8.0f} {r["after_mb"]:9.0f} {r["ms"]:9.0f}')


def _print_burst(r: dict) -> None:
    if 'error' in r:
        print(f'burst: {r["error"]}')
        return
    print(f'burst through one pipeline ({r["method"]}), {r["frames"]} frame(s) per phase:')
    for p in r['phases']:
        print(f'  {p["phase"]:12s} {p["size"]:>10s} (runs at {p["work"]:>9s}): '
              f'RSS {p["rss_mb"]:6.0f} MB')
    first, last = r['phases'][0]['rss_mb'], r['phases'][-1]['rss_mb']
    print(f'  back to {100 * last / first:.0f}% of the first phase; peak {r["peak_mb"]:.0f} MB')


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m sgdfuse_ros.tools.memory_bench',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--sizes', nargs='*', default=list(DEFAULT_SIZES), metavar='WxH',
                   help=f'frame sizes, one process each (default {" ".join(DEFAULT_SIZES)})')
    p.add_argument('--frames', type=int, default=3, help='frames per size / per burst phase')
    p.add_argument('--method', default='auto', help='fusion method (default auto)')
    p.add_argument('--max-pixels', help="the pipeline's pixel budget (default the pipeline's)")
    p.add_argument('--oversize', choices=('resize', 'refuse'), help='over-budget frames')
    p.add_argument('--burst', action='store_true', help='also the small-large-small burst')
    p.add_argument('--small', default='640x480', help='burst: the small frame size')
    p.add_argument('--large', default='3840x2160', help='burst: the large frame size')
    p.add_argument('--one', metavar='WxH', help=argparse.SUPPRESS)  # a child process's size
    p.add_argument('--burst-child', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not Path('/proc/self/status').is_file():
        print('memory_bench: needs /proc/self/status (Linux)', file=sys.stderr)
        return 2
    if args.one:
        print(json.dumps(measure_size(args, imaging.parse_size(args.one))))
        return 0
    if args.burst_child:
        print(json.dumps(measure_burst(args)))
        return 0
    print(f'machine: {os.cpu_count()} CPU(s); method {args.method}; max_pixels '
          f'{args.max_pixels or "default"}; {args.frames} frame(s) per size')
    rows = [(s, _child(args, ['--one', s])) for s in args.sizes]
    _print_sizes(rows)
    if args.burst:
        r = _child(args, ['--burst-child', '--small', args.small, '--large', args.large])
        r['frames'] = args.frames
        _print_burst(r)
    return 0


if __name__ == '__main__':
    sys.exit(main())
