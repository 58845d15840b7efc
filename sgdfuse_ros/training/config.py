"""The stage-1 training configuration and its command-line options (imports no torch, so the
``sgdfuse`` command starts fast)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Must match :data:`sgdfuse_ros.models.stage1.PRESETS` (checked by the tests).
PRESET_NAMES = ('large', 'realtime')


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in every checkpoint."""

    data: list[str] = field(default_factory=list)
    out: str = 'stage1.pt'
    #: Training state file; default ``<out>.ckpt``.
    checkpoint: str = ''
    preset: str = 'realtime'
    #: Start from these weights (a stage-1 weights or checkpoint file; fine-tuning).
    init: str = ''
    channels: int = 1
    steps: int = 4000
    crop: int = 160
    batch: int = 8
    lr: float = 1e-3
    lr_min: float = 2e-5
    warmup: int = 100
    ema: float = 0.998
    intensity: float = 1.0
    gradient: float = 1.0
    ssim: float = 1.0
    ssim_ir_share: float = 0.5
    correlation: float = 0.0
    seed: int = 0
    checkpoint_every: int = 250
    device: str = 'auto'
    threads: int = 0
    #: Store the shipped weights as fp16 (half the size; loaded back as fp32).
    half: bool = False
    validate: bool = True

    def loss_weights(self):
        from .losses import LossWeights
        return LossWeights(self.intensity, self.gradient, self.ssim, self.ssim_ir_share,
                           self.correlation)

    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint) if self.checkpoint else Path(str(self.out) + '.ckpt')


def add_common_arguments(p: argparse.ArgumentParser, d: Any, *, init_help: str,
                         loss_scope: str = '') -> None:
    """The options that every training command (``train stage1``, ``stage2``, ``distill``)
    shares, with their defaults taken from the config ``d``: data, output and training state,
    the schedule, the global loss weights (``loss_scope`` prefixes their help) and the run
    settings."""
    p.add_argument('--data', action='append', required=True, metavar='DIR',
                   help='pair folder (ir/ + vi/) or a folder of them; repeatable')
    p.add_argument('--out', required=True, type=Path, help='weights file to write (.pt)')
    p.add_argument('--checkpoint', type=Path, help='training state file (default <out>.ckpt)')
    p.add_argument('--resume', action='store_true', help='continue from the checkpoint')
    p.add_argument('--init', type=Path, help=init_help)
    p.add_argument('--steps', type=int, default=d.steps, help='default %(default)s')
    p.add_argument('--crop', type=int, default=d.crop, help='crop side, default %(default)s')
    p.add_argument('--batch', type=int, default=d.batch, help='default %(default)s')
    p.add_argument('--lr', type=float, default=d.lr, help='peak learning rate')
    p.add_argument('--lr-min', type=float, default=d.lr_min, help='final learning rate')
    p.add_argument('--warmup', type=int, default=d.warmup, help='warm-up steps')
    p.add_argument('--ema', type=float, default=d.ema, help='EMA decay of the written weights')
    p.add_argument('--w-int', type=float, default=d.intensity,
                   help=f'{loss_scope}intensity loss weight')
    p.add_argument('--w-grad', type=float, default=d.gradient,
                   help=f'{loss_scope}gradient loss weight')
    p.add_argument('--w-ssim', type=float, default=d.ssim, help='SSIM loss weight')
    p.add_argument('--ssim-ir-share', type=float, default=d.ssim_ir_share,
                   help='share of the infrared source in the SSIM term')
    p.add_argument('--w-corr', type=float, default=d.correlation,
                   help='correlation (SCD) loss weight')
    p.add_argument('--seed', type=int, default=d.seed)
    p.add_argument('--checkpoint-every', type=int, default=d.checkpoint_every)
    p.add_argument('--device', default=d.device, help='auto, cpu, cuda, cuda:N')
    p.add_argument('--threads', type=int, default=d.threads, help='torch CPU threads (0: all)')
    p.add_argument('--half', action='store_true', help='store the weights as fp16')
    p.add_argument('--no-validate', action='store_true', help='skip the final validation')


def common_config_fields(args) -> dict[str, Any]:
    """The config fields that the options of :func:`add_common_arguments` set."""
    return dict(
        data=[str(d) for d in args.data], out=str(args.out),
        checkpoint=str(args.checkpoint) if args.checkpoint else '',
        init=str(args.init) if args.init else '',
        steps=args.steps, crop=args.crop, batch=args.batch, lr=args.lr, lr_min=args.lr_min,
        warmup=args.warmup, ema=args.ema, intensity=args.w_int, gradient=args.w_grad,
        ssim=args.w_ssim, ssim_ir_share=args.ssim_ir_share, correlation=args.w_corr,
        seed=args.seed, checkpoint_every=args.checkpoint_every, device=args.device,
        threads=args.threads, half=args.half, validate=not args.no_validate)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train stage1`` options; defaults come from :class:`TrainConfig`."""
    d = TrainConfig()
    add_common_arguments(p, d, init_help='start from these stage-1 weights (fine-tuning; same '
                         'preset)')
    p.add_argument('--preset', default=d.preset, choices=PRESET_NAMES,
                   help='architecture preset (default %(default)s)')
    p.add_argument('--channels', type=int, default=d.channels, choices=(1, 3),
                   help='1 = luma (default), 3 = RGB')


def config_from_args(args) -> TrainConfig:
    return TrainConfig(**common_config_fields(args), preset=args.preset, channels=args.channels)
