"""Flicker on real registered video: flow-compensated, per sequence and per step, with the
quality of the frames.

``python -m sgdfuse_ros.tools.flicker_bench --video DIR`` (``--help`` for the options). ``DIR``
holds sequences ``SEQ/ir/NNNN.png`` + ``SEQ/vi/NNNN.png`` (registered pairs, consecutive frames),
or is one such sequence. Each sequence is fused in frame order as ``sgdfuse fuse --sequence``
and the node do (:class:`~sgdfuse_ros.fusion.stream.FusionStream` offline: thermal gain smoothed
over frames, masks refreshed every ``round(rate / mask_rate)`` frames), with a fresh pipeline
per sequence.

Flicker of a step is :mod:`sgdfuse_ros.core.flow`'s flow-compensated mean absolute difference
(flowD): DIS flow between consecutive visible frames, computed once per step and applied to the
outputs of every method and to the inputs themselves (the thermal frame and the visible luma),
in grey levels of the 8-bit gray image ``sgdfuse eval`` scores. Reported per method: the mean
over all steps of all sequences, each sequence's mean and its ratio to the reference method's
(``laplacian`` by default), and the largest ratio of one step to the reference's on the same
step. The frames are scored with the eight headline metrics (``core.metrics.HEADLINE``) against
their own IR and visible frames, mean over all frames (every ``--metrics-every``-th), and
counted against the reference method.

Method specs: ``NAME`` (a fusion method with its default options) or ``NAME:OPTION=VALUE,...``
where the options are :class:`FusionStream` keywords (``temporal=on`` adds the stream's
temporal filter at its default settings, ``temporal=0.5`` at that strength).
"""

from __future__ import annotations

import os
from pathlib import Path
import platform
import sys
import time
from typing import Any

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.flow import FLOWS, StepFlow, sequence_flicker
from sgdfuse_ros.core.metrics import HEADLINE, compute_metrics

REFERENCE = 'laplacian'


def find_sequences(root: Path) -> list[Path]:
    """``root`` itself when it holds ``ir/`` and ``vi/``, else its sub-folders that do."""
    root = Path(root)
    if (root / 'ir').is_dir() and (root / 'vi').is_dir():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f'{root}: no such folder')
    seqs = sorted(p for p in root.iterdir() if (p / 'ir').is_dir() and (p / 'vi').is_dir())
    if not seqs:
        raise FileNotFoundError(f'{root}: no sequence folders (SEQ/ir, SEQ/vi) in it')
    return seqs


def load_sequence(seq: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The sequence's pairs in file-name order: (thermal as stored, visible as stored)."""
    pairs, problems = imaging.match_pairs(seq / 'ir', seq / 'vi')
    if problems:
        raise imaging.ImageError(f'{seq}: {problems[0]}')
    if len(pairs) < 2:
        raise imaging.ImageError(f'{seq}: a video needs at least 2 frames, found {len(pairs)}')
    return [(imaging.read_image(p.ir, gray=True), imaging.read_image(p.vis))
            for p in sorted(pairs, key=lambda p: p.name)]


def _gray8(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3:
        img = imaging.rgb_to_gray(img)
    if img.dtype != np.uint8:
        img = imaging.to_uint8(imaging.ThermalGain(smoothing=0.0)(img))
    return img


def parse_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``NAME[:KEY=VALUE,...]`` -> (label, method name, stream options)."""
    name, _, rest = spec.partition(':')
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(',')):
        key, eq, value = item.partition('=')
        if not eq or not key:
            raise ValueError(f'method spec {spec!r}: options are KEY=VALUE, got {item!r}')
        low = value.lower()
        options[key] = {'on': True, 'off': False, 'true': True, 'false': False}.get(low, value)
        if key == 'temporal' and isinstance(options[key], str):
            from sgdfuse_ros.fusion.temporal import TemporalSettings
            try:
                options[key] = TemporalSettings(strength=float(value))
            except ValueError:
                raise ValueError(f'method spec {spec!r}: temporal is on, off or a strength in '
                                 f'[0, 1), got {value!r}') from None
    return spec, name, options


def fuse_sequence(method: str, frames, *, rate: float, mask_rate: float,
                  stream_options: dict[str, Any], method_options: dict[str, Any]
                  ) -> tuple[list[np.ndarray], dict[str, float]]:
    """Fuse ``frames`` in order as ``sgdfuse fuse --sequence`` does; the 8-bit gray outputs
    and the median time of each timed stage (ms)."""
    from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig
    from sgdfuse_ros.fusion.stream import FusionStream

    pipeline = FusionPipeline(PipelineConfig(method=method, method_options=method_options))
    outs, timings = [], {}
    with FusionStream(pipeline, live=False, camera_rate=rate, mask_rate=mask_rate,
                      **stream_options) as stream:
        for i, (ir, vis) in enumerate(frames):
            res = stream.push(ir, vis, name=f'frame {i}')
            outs.append(_gray8(res.image))
            for k, v in res.timings.items():
                timings.setdefault(k, []).append(v)
    return outs, {k: float(np.median(v)) for k, v in timings.items()}


def run(args) -> dict[str, Any]:
    """Every sequence through every method; returns the rows, the inputs and the settings."""
    seqs = find_sequences(args.video)
    specs = [parse_spec(s) for s in args.methods]
    ref = specs[0][0] if args.reference is None else args.reference
    if ref not in [s[0] for s in specs]:
        raise ValueError(f'--reference {ref!r} is not among --methods')
    method_options: dict[str, dict[str, Any]] = {}
    for label, name, _ in specs:
        opts: dict[str, Any] = {}
        if name in ('stage1', 'sgdfuse') and args.backend:
            opts['backend'] = args.backend
        method_options[label] = opts
    per_seq: dict[str, dict[str, Any]] = {}
    rows: dict[str, dict[str, Any]] = {label: {'steps': [], 'metrics': [], 'timings': []}
                                       for label, _, _ in specs}
    inputs: dict[str, list[float]] = {'ir': [], 'vis': []}
    for seq in seqs:
        frames = load_sequence(seq)
        ref_gray = [_gray8(v) for _, v in frames]
        flows = [StepFlow.between(a, b, preset=args.flow)
                 for a, b in zip(ref_gray[:-1], ref_gray[1:])]
        entry: dict[str, Any] = {
            'frames': len(frames),
            'coverage': float(np.mean([f.coverage for f in flows])),
            'inputs': {'ir': sequence_flicker([_gray8(i).astype(np.float32) for i, _ in frames],
                                              flows).tolist(),
                       'vis': sequence_flicker([g.astype(np.float32) for g in ref_gray],
                                               flows).tolist()},
            'methods': {}}
        for k in inputs:
            inputs[k].extend(entry['inputs'][k])
        for label, name, stream_opts in specs:
            t0 = time.perf_counter()
            outs, timings = fuse_sequence(name, frames, rate=args.rate,
                                          mask_rate=args.mask_rate, stream_options=stream_opts,
                                          method_options=method_options[label])
            fl = sequence_flicker([o.astype(np.float32) for o in outs], flows)
            mets = [compute_metrics(outs[i], _gray8(frames[i][0]), ref_gray[i], HEADLINE)
                    for i in range(0, len(outs), args.metrics_every)]
            entry['methods'][label] = {'steps': fl.tolist(), 'timings': timings,
                                       'seconds': round(time.perf_counter() - t0, 1)}
            rows[label]['steps'].extend(fl.tolist())
            rows[label]['metrics'].extend(mets)
            rows[label]['timings'].append(timings)
            print(f'{seq.name} {label}: flicker {fl.mean():.3f}', file=sys.stderr)
        per_seq[seq.name] = entry
    return {'reference': ref, 'rows': summarize(rows, per_seq, ref), 'sequences': per_seq,
            'inputs': {k: float(np.mean(v)) for k, v in inputs.items()},
            'settings': {'video': str(args.video), 'rate': args.rate,
                         'mask_rate': args.mask_rate, 'flow': _flow_name(args.flow),
                         'metrics_every': args.metrics_every, 'backend': args.backend},
            'machine': {'cpus': os.cpu_count(), 'load': round(os.getloadavg()[0], 2),
                        'python': platform.python_version()}}


def summarize(rows: dict[str, dict[str, Any]], per_seq: dict[str, Any], ref: str
              ) -> dict[str, dict[str, Any]]:
    """Per method: mean flicker, each sequence's mean and ratio to ``ref``, the worst step
    ratio, the mean metrics and how many of them beat ``ref``'s."""
    ref_metrics = {k: float(np.mean([m[k] for m in rows[ref]['metrics']])) for k in HEADLINE}
    out = {}
    for label, r in rows.items():
        seq_means, seq_ratio, worst = {}, {}, 0.0
        for name, entry in per_seq.items():
            mine = np.asarray(entry['methods'][label]['steps'])
            theirs = np.asarray(entry['methods'][ref]['steps'])
            seq_means[name] = float(mine.mean())
            seq_ratio[name] = float(mine.mean() / max(theirs.mean(), 1e-9))
            worst = max(worst, float(np.max(mine / np.maximum(theirs, 1e-9))))
        metrics = {k: float(np.mean([m[k] for m in r['metrics']])) for k in HEADLINE}
        stages = {k: float(np.median([t[k] for t in r['timings'] if k in t]))
                  for k in r['timings'][0]}
        out[label] = {'flicker': float(np.mean(r['steps'])),
                      'flicker_vs_ref': float(np.mean(r['steps'])
                                              / max(np.mean(rows[ref]['steps']), 1e-9)),
                      'sequences': seq_means, 'sequence_vs_ref': seq_ratio,
                      'worst_step_vs_ref': worst, 'metrics': metrics,
                      'beats_ref': sum(metrics[k] > ref_metrics[k] for k in HEADLINE),
                      'timings_ms': stages}
    return out


def format_report(result: dict[str, Any]) -> str:
    """Markdown tables: flicker per sequence, then the metrics of the frames."""
    rows, ref = result['rows'], result['reference']
    seqs = list(result['sequences'])
    lines = ['| method | mean flicker | vs ' + ref + ' | ' + ' | '.join(seqs)
             + ' | worst sequence | worst step |',
             '|---|---|---|' + '---|' * len(seqs) + '---|---|']
    for label, r in rows.items():
        worst = max(r['sequence_vs_ref'].values())
        cells = ' | '.join(f'{r["sequences"][s]:.3f} ({r["sequence_vs_ref"][s]:.2f}x)'
                           for s in seqs)
        lines.append(f'| {label} | {r["flicker"]:.3f} | {r["flicker_vs_ref"]:.2f}x | {cells} | '
                     f'{worst:.2f}x | {r["worst_step_vs_ref"]:.2f}x |')
    ins = [{k: float(np.mean(e['inputs'][k])) for k in ('ir', 'vis')}
           for e in result['sequences'].values()]
    for k, name in (('ir', 'input: infrared'), ('vis', 'input: visible luma')):
        cells = ' | '.join(f'{i[k]:.3f}' for i in ins)
        lines.append(f'| {name} | {result["inputs"][k]:.3f} | | {cells} | | |')
    cov = ', '.join(f'{s} {e["coverage"]:.0%}' for s, e in result['sequences'].items())
    lines += ['', f'Pixels measured (flow consistent): {cov}.', '',
              '| method | ' + ' | '.join(HEADLINE)
              + f' | beats {ref} | fuse ms | temporal ms | total ms |',
              '|---|' + '---|' * (len(HEADLINE) + 4)]
    for label, r in rows.items():
        m = r['metrics']
        t = r['timings_ms']
        lines.append(f'| {label} | ' + ' | '.join(f'{m[k]:.4f}' for k in HEADLINE)
                     + f' | {r["beats_ref"]}/{len(HEADLINE)} | {t.get("fuse", 0):.1f} | '
                     f'{t.get("temporal", 0):.1f} | {t.get("total", 0):.1f} |')
    return '\n'.join(lines)


def _flow_name(flow: str) -> str:
    return flow if flow == 'farneback' else f'DIS {flow}'


def add_arguments(p) -> None:
    """The real-video options of ``flicker_bench``."""
    p.add_argument('--rate', type=float, default=30.0,
                   help='frame rate of the videos (--video; default %(default)s Hz)')
    p.add_argument('--reference', help='method the others are compared with (--video; '
                   'default: the first of --methods)')
    p.add_argument('--flow', default='medium', choices=FLOWS,
                   help='measuring flow: a DIS preset, or farneback (--video; default '
                   '%(default)s)')
    p.add_argument('--metrics-every', type=int, default=1,
                   help='score every N-th frame with the metrics (--video; default '
                   '%(default)s)')
