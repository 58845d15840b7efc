"""Benchmark of fleet fusion on Ray: ``python -m sgdfuse_ros.tools.fleet_bench``.

On the same sample bags (made with :func:`~sgdfuse_ros.ros.sample_bag.make_sample_bag`, 640x480 by
default) it measures, one after the other:

``serial``          :func:`~sgdfuse_ros.ros.bag_fuse.fuse_bag` on each bag in turn, one pipeline
                    built once (what ``sgdfuse bag fuse`` does per bag, minus its start-up), with
                    the default threads (all cores) and with one thread (one worker's share);
``fleet N``         :func:`sgdfuse_ros.fleet.fuse_many` with N workers of one CPU on a local
                    Ray instance, from start (Ray and the workers' weights included) to end;
                    its start-up column counts starting Ray and the workers (weights loaded)
                    plus stopping them at the end;
``fleet 2, split``  (``--split``) the same pairs as one long bag cut into time ranges.

and prints a table: pairs/s over the whole run and without start-up, and the efficiency of the
workers against the one-thread serial rate (1.0: Ray costs nothing). A second table splits the
time: start-up and stop (per run); per pair, the fusion method itself and everything else the
tasks do (reading, decoding, writing, checksums; for split bags the sub-bags and the assembly),
which the serial rows show for ``fuse_bag`` alone; and per bag, worker time left idle by the
scheduling. Then the projection: machines like this one needed to fuse a fleet's day within a
day.

On a shared machine, run it twice and compare: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
import platform
import shutil
import sys
import tempfile
import time
from typing import Any

from .timing import cpu_name

#: The fleet of the projection: vehicles, hours recorded per day, pair rate.
FLEET = {'vehicles': 100, 'hours': 24.0, 'rate_hz': 10.0}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='python -m sgdfuse_ros.tools.fleet_bench',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--bags', type=int, default=4, help='sample bags (default 4)')
    p.add_argument('--frames', type=int, default=150, help='frames per bag (default 150)')
    p.add_argument('--size', default='640x480', help='RGB and thermal size (default 640x480)')
    p.add_argument('--method', default='auto', help='fusion method (default auto: sgdfuse)')
    p.add_argument('--workers', type=int, nargs='+', default=[1, 2],
                   help='fleet runs to time, by worker count (default 1 2)')
    p.add_argument('--split', action='store_true',
                   help='also time 2 workers on one long bag of the same pairs, in ranges')
    p.add_argument('--work', type=Path, help='folder for the bags and outputs (default: a '
                   'temporary one, removed at the end)')
    p.add_argument('--json', action='store_true', help='print the figures as one JSON object')
    return p.parse_args(argv)


def _load() -> str:
    try:
        return ' '.join(f'{x:.1f}' for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return '?'


def _make_bags(root: Path, n: int, frames: int, size: str) -> list[Path]:
    from sgdfuse_ros.ros.sample_bag import make_sample_bag

    paths = []
    for i in range(n):
        path = root / 'in' / f'bag{i}'
        make_sample_bag(path, frames=frames, visible_size=size, seed=i, progress=False)
        paths.append(path)
    return paths


def _serial(paths: list[Path], out: Path, method: str, threads: int | None) -> dict[str, Any]:
    """fuse_bag on each bag with one pipeline; wall time of the fusing only."""
    from sgdfuse_ros.fleet import FuseOptions
    from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig
    from sgdfuse_ros.ros.bag_fuse import fuse_bag
    from sgdfuse_ros.runtime import set_threads

    opts = FuseOptions(pipeline=PipelineConfig(method=method))
    t0 = time.perf_counter()
    set_threads(threads)
    pipe = FusionPipeline(opts.pipeline_config())
    build = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    pairs, fuse_ms, t1 = 0, 0.0, time.perf_counter()
    for p in paths:
        pipe.gain.reset()
        s = fuse_bag(p, out / p.name, pipeline=pipe, progress=False, **opts.bag_kwargs())
        pairs += s.pairs_fused
        fuse_ms += sum(s.fuse_ms)
    busy = time.perf_counter() - t1
    return {'run': f'serial, {threads or "all"} thread(s)', 'workers': 0, 'pairs': pairs,
            'wall_s': build + busy, 'startup_s': build, 'busy_s': busy, 'fuse_s': fuse_ms / 1e3,
            'bags': len(paths), 'method': pipe.method_name}


def _fleet(inputs: list[Path], out: Path, method: str, workers: int, **kw) -> dict[str, Any]:
    from sgdfuse_ros import fleet
    from sgdfuse_ros.fusion.pipeline import PipelineConfig

    shutil.rmtree(out, ignore_errors=True)
    opts = fleet.FuseOptions(pipeline=PipelineConfig(method=method))
    t0 = time.perf_counter()
    s = fleet.fuse_many(inputs, out, opts, workers=workers, progress=False, **kw)
    wall = time.perf_counter() - t0
    if not s.ok:
        raise RuntimeError(f'the fleet run failed: {s.format()}')
    return {'run': f'fleet, {workers} worker(s)' + (', split' if kw.get('chunk_s') else ''),
            'workers': workers, 'pairs': s.pairs_fused, 'wall_s': wall,
            'startup_s': s.startup_s + s.shutdown_s, 'busy_s': s.worker_s, 'fuse_s': s.fuse_s,
            'bags': len(s.fused), 'method': s.method, 'margin_pairs': s.margin_pairs,
            'workers_s': workers * (wall - s.startup_s)}


def _derive(rows: list[dict[str, Any]]) -> None:
    """Rates, efficiency and the Ray costs of each fleet row, against the 1-thread serial."""
    base = next(r for r in rows if r['run'].startswith('serial, 1 '))
    rate1 = base['pairs'] / base['busy_s']
    for r in rows:
        r['fuse_ms_per_pair'] = 1e3 * r['fuse_s'] / r['pairs']
        r['other_ms_per_pair'] = 1e3 * (r['busy_s'] - r['fuse_s']) / r['pairs']
        r['pairs_per_s'] = r['pairs'] / r['wall_s']
        r['steady_pairs_per_s'] = r['pairs'] / (r['wall_s'] - r['startup_s'])
        if r['workers']:
            r['efficiency'] = r['steady_pairs_per_s'] / (r['workers'] * rate1)
            # worker time spent waiting (dispatch, the last bags' tail, renames, manifest)
            r['idle_s_per_bag'] = (r['workers_s'] - r['busy_s']) / max(1, r['bags'])
        else:
            r['efficiency'] = r['steady_pairs_per_s'] / rate1


def _projection(rows: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    """Machines like this one (``cores`` cores, one worker per core) for a fleet's day in a
    day, from the best measured per-machine rate after start-up."""
    fleet_rows = [r for r in rows if r['workers'] == cores and not r['run'].endswith('split')]
    if not fleet_rows:
        return {}
    rate = max(r['steady_pairs_per_s'] for r in fleet_rows)
    pairs_day = FLEET['vehicles'] * FLEET['hours'] * 3600 * FLEET['rate_hz']
    need = pairs_day / 86400.0
    # 600 s ranges with the default margin fuse margin/600 of each long bag twice
    from sgdfuse_ros.fleet import FuseOptions, ranges

    opts = FuseOptions()
    margin = ranges.auto_margin(FLEET['rate_hz'], slop=opts.slop, queue_size=opts.queue_size,
                                smoothing=opts.pipeline.thermal_smoothing,
                                mask_rate=opts.mask_rate) / 600.0
    machines = math.ceil(need * (1 + margin) / rate)
    return {'pairs_per_day': int(pairs_day), 'pairs_per_s_needed': need,
            'per_machine_pairs_per_s': rate, 'margin_overhead': margin, 'machines': machines,
            'cores_per_machine': cores}


def _table(rows: list[dict[str, Any]]) -> str:
    head = ('| run | workers | pairs | wall s | start-up s | pairs/s | pairs/s without start-up '
            '| efficiency |\n|---|---|---|---|---|---|---|---|')
    lines = [head]
    for r in rows:
        lines.append(f"| {r['run']} | {r['workers'] or '-'} | {r['pairs']} | {r['wall_s']:.1f} "
                     f"| {r['startup_s']:.1f} | {r['pairs_per_s']:.2f} | "
                     f"{r['steady_pairs_per_s']:.2f} | {r['efficiency']:.2f} |")
    costs = ['', '| run | start + stop s | fusion ms/pair | other work in tasks ms/pair | '
             'idle worker s/bag | pairs fused twice (margins) |', '|---|---|---|---|---|---|']
    for r in rows:
        idle = f"{r['idle_s_per_bag']:.2f}" if r['workers'] else '-'
        costs.append(f"| {r['run']} | {r['startup_s']:.1f} | {r['fuse_ms_per_pair']:.1f} | "
                     f"{r['other_ms_per_pair']:.1f} | {idle} | {r.get('margin_pairs', 0)} |")
    return '\n'.join(lines + costs)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    from sgdfuse_ros import fleet

    if not fleet.ray_available():
        print(f'fleet_bench: {fleet.RAY_HINT}', file=sys.stderr)
        return 2
    from sgdfuse_ros.runtime.backends import available_cores

    work = args.work or Path(tempfile.mkdtemp(prefix='fleet-bench-'))
    cores = available_cores()
    info = {'machine': f'{cpu_name()}, {cores} cores',
            'python': platform.python_version(), 'load_before': _load(),
            'bags': args.bags, 'frames': args.frames, 'size': args.size}
    try:
        paths = _make_bags(work, args.bags, args.frames, args.size)
        rows = [_serial(paths, work / 'serial', args.method, None),
                _serial(paths, work / 'serial1', args.method, 1)]
        for n in args.workers:
            rows.append(_fleet([work / 'in'], work / f'fleet{n}', args.method, n))
        if args.split:
            from sgdfuse_ros.ros.sample_bag import make_sample_bag

            long = work / 'long' / 'long'
            make_sample_bag(long, frames=args.bags * args.frames, visible_size=args.size,
                                 progress=False)
            seconds = args.bags * args.frames / 10.0
            rows.append(_fleet([long], work / 'fleet-split', args.method, 2,
                               chunk_s=seconds / 4, margin_s=3.0))
        _derive(rows)
        info['load_after'] = _load()
        proj = _projection(rows, cores)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({'info': info, 'rows': rows, 'projection': proj}))
        return 0
    print(f"{info['machine']}, Python {info['python']}; {args.bags} bags x {args.frames} "
          f"frames at {args.size}, method {rows[0]['method']}; load average "
          f"{info['load_before']} before, {info['load_after']} after")
    print(_table(rows))
    if proj:
        print(f"\nprojection: {FLEET['vehicles']} vehicles x {FLEET['hours']:g} h x "
              f"{FLEET['rate_hz']:g} Hz = {proj['pairs_per_day']:,} pairs a day = "
              f"{proj['pairs_per_s_needed']:.0f} pairs/s; at {proj['per_machine_pairs_per_s']:.1f}"
              f" pairs/s per {cores}-core machine (+{proj['margin_overhead']:.0%} margins): "
              f"{proj['machines']} machines")
    return 0


if __name__ == '__main__':
    sys.exit(main())
