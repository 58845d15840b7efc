"""The refiner's training configurations and command-line options (``sgdfuse train stage2`` and
``sgdfuse train distill``). Imports no torch, so the ``sgdfuse`` command starts fast."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from .config import add_common_arguments, common_config_fields

#: Must match :data:`sgdfuse_ros.models.refiner.PRESETS` (checked by the tests).
PRESET_NAMES = ('realtime', 'paper', 'tiny')
#: Ablation variants (see ``docs/refiner.md``): ``full``; ``no_sam`` (trained and run with empty
#: masks); ``no_diffusion`` (the same network as a one-pass regressor: clean F1 in, t = 0);
#: ``no_hfah`` (a plain output convolution instead of the HFAH).
VARIANTS = ('full', 'no_sam', 'no_diffusion', 'no_hfah')
DEFAULT_CACHE = 'runs/refiner/cache'


@dataclass
class RefinerTrainConfig:
    """Everything a refiner run depends on; stored in every checkpoint. ``mode`` is
    ``teacher`` (``train stage2``) or ``distill`` (``train distill``)."""

    mode: str = 'teacher'
    data: list[str] = field(default_factory=list)
    out: str = 'refiner.pt'
    #: Training state file; default ``<out>.ckpt``.
    checkpoint: str = ''
    preset: str = 'realtime'
    variant: str = 'full'
    channels: int = 1
    #: Stage-1 weights that make F1 (default: the shipped ones).
    stage1: str = ''
    mask_provider: str = 'lite_medsam'
    cache_dir: str = DEFAULT_CACHE
    #: Start from these refiner weights (teacher fine-tuning; the student starts from its
    #: teacher unless this is set).
    init: str = ''
    steps: int = 3000
    crop: int = 128
    batch: int = 8
    lr: float = 1e-3
    lr_min: float = 2e-5
    warmup: int = 100
    ema: float = 0.995
    # Loss weights (RefinerLossWeights).
    mask_intensity: float = 1.5
    mask_gradient: float = 1.0
    intensity: float = 0.5
    gradient: float = 4.0
    ssim: float = 1.0
    ssim_ir_share: float = 0.5
    correlation: float = 0.5
    #: Teacher: share of each batch whose noised image is the model's own (stop-gradient)
    #: estimate instead of F1, as the sampler feeds it (see docs/refiner.md).
    bootstrap: float = 0.5
    #: Sampler of the written weights: steps and start timestep (teacher: 60 from 999).
    sample_steps: int = 60
    t_start: int = 999
    # Distillation only.
    teacher: str = ''
    #: Weight of the L1 distance to the teacher's sample and of the refiner loss on the
    #: student's output.
    distill: float = 1.0
    fusion: float = 0.1
    seed: int = 0
    checkpoint_every: int = 200
    device: str = 'auto'
    threads: int = 0
    half: bool = False
    validate: bool = True

    def loss_weights(self):
        from .refiner_losses import RefinerLossWeights
        return RefinerLossWeights(self.mask_intensity, self.mask_gradient, self.intensity,
                                  self.gradient, self.ssim, self.ssim_ir_share, self.correlation)

    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint) if self.checkpoint else Path(str(self.out) + '.ckpt')

    @property
    def use_masks(self) -> bool:
        return self.variant != 'no_sam'


def _common(p: argparse.ArgumentParser, d: RefinerTrainConfig) -> None:
    add_common_arguments(p, d, init_help='start from these refiner weights', loss_scope='global ')
    p.add_argument('--stage1', type=Path,
                   help='stage-1 weights that make F1 (default: the shipped weights)')
    p.add_argument('--mask-provider', default=d.mask_provider,
                   help='mask provider for the cached training masks (default %(default)s)')
    p.add_argument('--cache-dir', type=Path, default=Path(d.cache_dir),
                   help='where F1, masks and teacher samples are cached (%(default)s)')
    p.add_argument('--w-mask-int', type=float, default=d.mask_intensity,
                   help='mask-guided intensity weight (default %(default)s)')
    p.add_argument('--w-mask-grad', type=float, default=d.mask_gradient,
                   help='mask-guided gradient weight (default %(default)s)')


def add_stage2_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train stage2`` (teacher) options; defaults come from :class:`RefinerTrainConfig`."""
    d = RefinerTrainConfig()
    _common(p, d)
    p.add_argument('--preset', default=d.preset, choices=PRESET_NAMES,
                   help='architecture preset (default %(default)s)')
    p.add_argument('--variant', default=d.variant, choices=VARIANTS,
                   help='ablation variant (default %(default)s)')
    p.add_argument('--channels', type=int, default=d.channels, choices=(1, 3),
                   help='1 = luma (default), 3 = RGB')
    p.add_argument('--bootstrap', type=float, default=d.bootstrap,
                   help='share of noised self-estimates in a batch (default %(default)s)')
    p.add_argument('--sample-steps', type=int, default=d.sample_steps,
                   help='sampling steps of the teacher (default %(default)s)')
    p.add_argument('--t-start', type=int, default=d.t_start,
                   help='first sampling timestep (default %(default)s)')


def add_distill_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train distill`` (student) options."""
    d = RefinerTrainConfig(mode='distill', steps=1500, lr=3e-4, warmup=50, sample_steps=2,
                           t_start=500)
    _common(p, d)
    p.add_argument('--teacher', required=True, type=Path, help='teacher weights (train stage2)')
    p.add_argument('--student-steps', type=int, default=d.sample_steps, choices=(1, 2, 3, 4),
                   help='sampling steps K of the student (default %(default)s)')
    p.add_argument('--t-start', type=int, default=d.t_start,
                   help="the student's first timestep (default %(default)s)")
    p.add_argument('--w-distill', type=float, default=d.distill,
                   help='L1 to the teacher sample (default %(default)s)')
    p.add_argument('--w-fusion', type=float, default=d.fusion,
                   help="refiner loss on the student's output (default %(default)s)")
    p.set_defaults(steps=d.steps, lr=d.lr, warmup=d.warmup)


def config_from_args(args, mode: str) -> RefinerTrainConfig:
    cfg = RefinerTrainConfig(
        **common_config_fields(args), mode=mode,
        stage1=str(args.stage1) if args.stage1 else '', mask_provider=args.mask_provider,
        cache_dir=str(args.cache_dir), mask_intensity=args.w_mask_int,
        mask_gradient=args.w_mask_grad)
    if mode == 'teacher':
        cfg.preset, cfg.variant, cfg.channels = args.preset, args.variant, args.channels
        cfg.bootstrap = args.bootstrap
        cfg.sample_steps, cfg.t_start = args.sample_steps, args.t_start
    else:
        cfg.teacher = str(args.teacher)
        cfg.sample_steps, cfg.t_start = args.student_steps, args.t_start
        cfg.distill, cfg.fusion = args.w_distill, args.w_fusion
    return cfg
