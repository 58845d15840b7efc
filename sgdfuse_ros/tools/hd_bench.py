"""Quality of fusing at a smaller working size: the 8 headline metrics of pairs fused at their
own size, at a pixel budget with the maps blending the frame's own sources (the default), and
at the same budget with the fused image scaled up.

    python -m sgdfuse_ros.tools.hd_bench [--data DIR] [--sets M3FD FMB] [--budget 640x480]

Pairs: ``--data`` (default ``../shared/data/ivif`` beside the checkout, else the pairs shipped
for the tests); thermal gain without smoothing (stills); saliency masks (the node's default).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.metrics import HEADLINE, compute_metrics, mean_metrics
from sgdfuse_ros.runtime.threads import available_cores, set_threads

REPO = Path(__file__).resolve().parents[2]


def _data_root(given: Path | None) -> Path:
    if given is not None:
        return given
    shared = REPO.parent / 'shared' / 'data' / 'ivif'
    return shared if shared.is_dir() else REPO / 'test' / 'data' / 'ivif'


def run(data: Path, sets: list[str], budget: str, method: str = 'auto') -> dict[str, dict]:
    """Mean headline metrics per way of fusing (``own size``, ``blended``, ``scaled up``)."""
    from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig

    common = dict(method=method, mask_provider='saliency', thermal_smoothing=0.0)
    pipes = {'own size': FusionPipeline(PipelineConfig(max_pixels=0, **common)),
             'blended': FusionPipeline(PipelineConfig(max_pixels=budget, **common)),
             'scaled up': FusionPipeline(PipelineConfig(max_pixels=budget,
                                                        full_resolution_blend=False, **common))}
    scores: dict[str, dict[str, dict]] = {k: {} for k in pipes}
    for name in sets:
        for pair in imaging.dataset_pairs(data / name):
            ir = imaging.read_image(pair.ir, gray=True)
            vis = imaging.read_image(pair.vis)
            vis8 = imaging.to_uint8(imaging.visible_luma(vis))
            for way, pipe in pipes.items():
                luma = pipe.fuse(ir, vis, name=pair.name).luma
                scores[way][f'{name}/{pair.name}'] = compute_metrics(imaging.to_uint8(luma),
                                                                     ir, vis8)
    return {way: mean_metrics(s) for way, s in scores.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', type=Path, default=None)
    ap.add_argument('--sets', nargs='+', default=['M3FD', 'FMB'])
    ap.add_argument('--budget', default='640x480', help='pixel budget WxH (default 640x480)')
    ap.add_argument('--method', default='auto')
    a = ap.parse_args(argv)
    set_threads(available_cores())
    try:
        res = run(_data_root(a.data), a.sets, a.budget, a.method)
    except (ValueError, FileNotFoundError) as exc:
        print(f'hd_bench: error: {exc}', file=sys.stderr)
        return 2
    ref = res['own size']
    print(f'| {a.budget} budget, {" + ".join(a.sets)} | ' + ' | '.join(HEADLINE) + ' |')
    print('|---' * (len(HEADLINE) + 1) + '|')
    for way, m in res.items():
        cells = [f'{m[k]:.4f}' + ('' if way == 'own size'
                                  else f' ({100 * (m[k] / ref[k] - 1):+.1f}%)') for k in HEADLINE]
        print(f'| {way} | ' + ' | '.join(cells) + ' |')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
