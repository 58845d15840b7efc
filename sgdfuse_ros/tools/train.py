"""``sgdfuse train``: train a network of the method (stage 1, the refiner teacher, the student).

The training loops live in :mod:`sgdfuse_ros.training`; this module assembles their options
into one command with a subcommand per network.
"""

from __future__ import annotations

import argparse

from .common import err


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sgdfuse_ros.training.config import add_arguments as add_stage1_arguments
    from sgdfuse_ros.training.refiner_config import add_distill_arguments, add_stage2_arguments

    tsub = p.add_subparsers(dest='train_command', metavar='NETWORK', required=True)
    s1 = tsub.add_parser('stage1', help='the stage-1 initial-fusion network',
                         description='Train stage 1 on folders of pairs (ir/ + vi/). The '
                         'validation pairs (every FMB pair, every 5th RoadScene pair) are held '
                         'out and scored at the end against the Laplacian baseline.')
    add_stage1_arguments(s1)
    s2 = tsub.add_parser('stage2', help='the diffusion refiner (many-step teacher)',
                         description='Train the mask-guided diffusion refiner (the teacher) on '
                         'F1 of the given stage-1 weights and cached masks; the validation '
                         'pairs are held out and scored at the end.')
    add_stage2_arguments(s2)
    sd = tsub.add_parser('distill', help='distil the teacher into a few-step student',
                         description='Distil a stage2 teacher into a student that samples in K '
                         'steps (output distillation of the deterministic DDIM sampler).')
    add_distill_arguments(sd)


def run(args: argparse.Namespace) -> int:
    if args.train_command == 'stage1':
        from sgdfuse_ros.training.stage1 import run_train_stage1
        return run_train_stage1(args)
    if args.train_command == 'stage2':
        from sgdfuse_ros.training.refiner import run_train_stage2
        return run_train_stage2(args)
    if args.train_command == 'distill':
        from sgdfuse_ros.training.refiner import run_train_distill
        return run_train_distill(args)
    err(f'unknown network {args.train_command!r}')
    return 2
