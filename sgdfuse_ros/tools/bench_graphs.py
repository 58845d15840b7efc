"""``sgdfuse bench --graph both``: the per-frame path with the float graphs and with the INT8
graphs (:mod:`sgdfuse_ros.runtime.quantize`), side by side.

The two are timed in alternating runs (float, INT8, float, INT8... ``rounds`` of each, a fresh
pipeline each run) so that a change of load on a shared machine reaches both alike; each stage
shows the median over the runs of the per-run medians, fps the frames over the wall time of all
runs of that graph.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

GRAPHS = ('float', 'int8')
_ROWS = (('stage 1', 'stage1_ms'), ('refiner', 'refiner_ms'), ('per-frame total', 'total_ms'))


def run_graphs(run_bench: Callable[..., dict[str, Any]], *, rounds: int = 2,
               **kwargs) -> dict[str, Any]:
    """``run_bench(**kwargs)`` with ``method_options['graph']`` set to each of :data:`GRAPHS`,
    alternating, ``rounds`` runs of each; returns ``{'float': summary, 'int8': summary,
    'runs': [...]}``."""
    if rounds < 1:
        raise ValueError(f'rounds must be >= 1, got {rounds}')
    runs = []
    base = dict(kwargs.pop('method_options', None) or {})
    for _ in range(rounds):
        for graph in GRAPHS:
            res = run_bench(method_options={**base, 'graph': graph}, **kwargs)
            res['graph'] = graph
            runs.append(res)
    out: dict[str, Any] = {'runs': runs}
    for graph in GRAPHS:
        mine = [r for r in runs if r['graph'] == graph]
        summary = {key: _median([r.get(key) for r in mine]) for _, key in _ROWS}
        summary['fps'] = round(sum(r['frames'] for r in mine)
                               / sum(r['frames'] / r['fps'] for r in mine), 2)
        summary['cpu_ms_per_frame'] = _median([r['cpu_ms_per_frame'] for r in mine])
        summary['load_average'] = [r['load_average'] for r in mine]
        out[graph] = summary
    return out


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.median(values)), 2) if values else None


def format_graphs(res: dict[str, Any]) -> str:
    """The side-by-side table of :func:`run_graphs`."""
    first = res['runs'][0]
    lines = [f'sgdfuse bench: {first["method"]} on {first["backend"]} at {first["size"]}, '
             f'float and INT8 graphs, {len(res["runs"]) // len(GRAPHS)} alternating runs of '
             f'{first["frames"]} frames each, {first["threads"]} threads',
             f'  {"ms (median)":24s} {"float":>9s} {"int8":>9s} {"int8/float":>11s}']

    def row(label, a, b, fmt='{:9.2f}'):
        ratio = f'{b / a:11.2f}' if a and b else f'{"":11s}'
        lines.append(f'  {label:24s} {fmt.format(a)} {fmt.format(b)} {ratio}')

    for label, key in _ROWS:
        a, b = res['float'][key], res['int8'][key]
        if a is not None and b is not None:
            row(label, a, b)
    row('end-to-end fps', res['float']['fps'], res['int8']['fps'], '{:9.1f}')
    row('CPU ms per frame', res['float']['cpu_ms_per_frame'],
        res['int8']['cpu_ms_per_frame'], '{:9.0f}')
    for graph in GRAPHS:
        loads = '; '.join('-' if x is None else f'{x:.2f}' for x in res[graph]['load_average'])
        lines.append(f'  load average, {graph} runs: {loads}')
    return '\n'.join(lines)
