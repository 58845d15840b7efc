"""The sweep that chose the refiner's detail floor (docs/refiner.md, "Detail floor").

Scores a refiner checkpoint with several fixed detail floors on every 4th *training* pair (never
the validation split), evaluator convention, next to stage 1 and the Laplacian pyramid::

    python docs/detail_floor_sweep.py runs/r2/student.pt --core 3 --floors 0 0.25 0.3 0.35 0.4

The floor chosen is the smallest at which the refiner beats ``laplacian`` on SF on these pairs
while keeping its other wins. For the medical weights (``--stage1``: the stage 1 the refiner
was trained on; ``--write``: the weights with that floor)::

    python docs/detail_floor_sweep.py runs/med/student.pt --data ../shared/data/medical \
        --stage1 runs/med/s1a.pt --cache-dir runs/med/cache --every 1 --floors 0 0.3 \
        --write runs/med/student_floor.pt --floor 0.3
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from sgdfuse_ros.core.metrics import format_table
from sgdfuse_ros.models.refiner import RefinerNet, SamplerSettings, load_refiner
from sgdfuse_ros.training.refiner import load_refiner_split, refine_pair, validation_rows
from sgdfuse_ros.training.refiner_config import RefinerTrainConfig
from sgdfuse_ros.training.stage1 import count_wins


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('weights')
    p.add_argument('--data', default='../shared/data/ivif')
    p.add_argument('--floors', type=float, nargs='+', default=[0.0, 0.25, 0.3, 0.35, 0.4])
    p.add_argument('--core', type=float, default=3.0, help='coring, grey levels')
    p.add_argument('--every', type=int, default=4, help='every n-th training pair')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--json', help='write the rows here')
    p.add_argument('--stage1', default='', help='stage-1 weights of F1 (default: shipped)')
    p.add_argument('--cache-dir', default=None, help="F1 and mask cache (default: training's)")
    p.add_argument('--write', help='write the weights with --floor set here')
    p.add_argument('--floor', type=float, help='the floor --write sets')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    extra = {'cache_dir': args.cache_dir} if args.cache_dir else {}
    cfg = RefinerTrainConfig(data=[args.data], mask_provider='saliency', stage1=args.stage1,
                             **extra)
    train, _ = load_refiner_split(cfg, log=lambda *_: None)
    pairs = train[::args.every]
    model, meta = load_refiner(args.weights)
    settings = SamplerSettings(**meta['sampler'])
    refiners = {}
    for k in args.floors:
        net = RefinerNet(dataclasses.replace(model.config, detail_floor=k,
                                             detail_core=args.core if k else 0.0))
        net.load_state_dict(model.state_dict())
        net.eval()
        refiners[f'floor {k}'] = lambda pair, net=net: refine_pair(net, settings, pair)
    rows = validation_rows(pairs, refiners)
    print(f'{len(pairs)} training pairs, coring {args.core} grey levels')
    print(format_table(rows))
    for name in refiners:
        n, won = count_wins(rows, name, 'laplacian')
        print(f'{name}: beats laplacian on {n} of 8 ({", ".join(won)})')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    if args.write:
        ckpt = torch.load(args.weights, map_location='cpu', weights_only=True)
        ckpt['config'].update(detail_floor=args.floor,
                              detail_core=args.core if args.floor else 0.0)
        torch.save(ckpt, args.write)
        print(f'wrote {args.write} with detail floor {args.floor}')


if __name__ == '__main__':
    main()
