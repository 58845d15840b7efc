"""Score medical fusion on the held-out pairs of ../shared/data/medical (the figures of
docs/benchmarks.md, "Medical fusion").

Fuses every validation pair (``training.data``'s split: every 5th pair of MRI_SPECT and MRI_CT,
never trained on) with ``FusionPipeline(task='medical')`` and prints the means of the headline
metrics in the evaluator convention (functional or CT image in the infrared role, the MRI in the
visible role, 8-bit gray), per set, with the wins against the Laplacian pyramid and against the
published CDDFuse rows.

    python docs/medical_eval.py [--data DIR] [--method NAME] [--opt key=value ...]
        [--mask-provider NAME] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.metrics import HEADLINE, compute_metrics, mean_metrics
from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig
from sgdfuse_ros.training.data import expand_data_dirs, split_pairs

#: CDDFuse (CVPR 2023) trained for medical fusion, as published with MMIF-CDDFuse.
CDDFUSE = {
    'MRI_PET': dict(EN=4.23, SD=70.73, SF=29.57, MI=2.03, SCD=1.69, VIF=0.71, Qabf=0.71,
                    SSIM=1.49),
    'MRI_SPECT': dict(EN=3.90, SD=58.31, SF=20.87, MI=2.49, SCD=1.35, VIF=0.97, Qabf=0.78,
                      SSIM=1.48),
}


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {'true': True, 'false': False}.get(text.lower(), text)


def score(pipeline: FusionPipeline, pairs: list[imaging.PairPaths]) -> dict[str, float]:
    per = {}
    for p in pairs:
        first = imaging.read_image(p.ir)
        mri = imaging.read_image(p.vis)
        out = pipeline.fuse(first, mri, name=str(p.ir))
        ir8 = imaging.read_image(p.ir, gray=True)
        vis8 = imaging.read_image(p.vis, gray=True)
        fused8 = imaging.to_uint8(out.luma)
        per[p.name] = compute_metrics(fused8, ir8, vis8, convention='evaluator',
                                      names=HEADLINE)
    return mean_metrics(per)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default=str(Path(__file__).resolve().parents[1].parent
                                          / 'shared' / 'data' / 'medical'))
    ap.add_argument('--method', default='auto')
    ap.add_argument('--opt', action='append', default=[], metavar='KEY=VALUE')
    ap.add_argument('--mask-provider', default='auto')
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args()
    opts = dict((k, _value(v)) for k, v in (o.split('=', 1) for o in args.opt))
    pipe = FusionPipeline(PipelineConfig(method=args.method, method_options=opts, task='medical',
                                         mask_provider=args.mask_provider,
                                         thermal_smoothing=0.0))
    lap = FusionPipeline(PipelineConfig(method='laplacian', task='medical',
                                        thermal_smoothing=0.0))
    results = {}
    for folder in expand_data_dirs([args.data]):
        _, val = split_pairs(folder)
        ours, base = score(pipe, val), score(lap, val)
        wins = [k for k in HEADLINE if ours[k] > base[k]]
        row = {'pairs': len(val), 'ours': ours, 'laplacian': base, 'wins_laplacian': wins}
        if folder.name in CDDFUSE:
            row['wins_cddfuse'] = [k for k in HEADLINE if ours[k] > CDDFUSE[folder.name][k]]
        results[folder.name] = row
    if args.json:
        print(json.dumps(results))
        return 0
    print(f'method {pipe.method_name}, options {opts}, masks {args.mask_provider}')
    print('set        row        ' + ' '.join(f'{k:>7s}' for k in HEADLINE))
    for name, row in results.items():
        rows = [('ours', row['ours']), ('laplacian', row['laplacian'])]
        if name in CDDFUSE:
            rows.append(('CDDFuse', CDDFUSE[name]))
        for label, m in rows:
            print(f'{name:10s} {label:10s} ' + ' '.join(f'{m[k]:7.3f}' for k in HEADLINE))
        line = f'{name}: {len(row["wins_laplacian"])}/8 wins over laplacian'
        if 'wins_cddfuse' in row:
            line += f', {len(row["wins_cddfuse"])}/8 over CDDFuse ({row["wins_cddfuse"]})'
        print(line + f'  [{row["pairs"]} pairs]')
    return 0


if __name__ == '__main__':
    np.seterr(all='ignore')
    raise SystemExit(main())
