"""The refiner's training configurations and command-line options (``sgdfuse train stage2`` and
``sgdfuse train distill``). Imports no torch, so the ``sgdfuse`` command starts fast."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from .config import add_common_arguments, common_config_fields

#: Must match :data:`sgdfuse_ros.models.refiner.PRESETS` (checked by the tests).
PRESET_NAMES = ('realtime', 'paper', 'tiny', 'steady')
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
    detail: float = 0.0
    ssim_ir_in: float = -1.0
    ssim_ir_out: float = -1.0
    #: Weight of the shift-equivariance term: a second view of each crop shifted by up to
    #: ``shift_max`` pixels; the outputs must agree where they overlap (0: off).
    shift: float = 0.0
    shift_max: int = 32
    #: Sensor-noise augmentation: half of the crops get Gaussian noise of a standard deviation
    #: up to this many grey levels (of 255) on the network's inputs (F1, IR, VIS), while the
    #: loss scores against the clean sources: the refiner learns not to pass noise on as
    #: detail (0: off).
    input_noise: float = 0.0
    #: The masks shape the loss but the network does not see them (its mask inputs are zero,
    #: in training and at inference): the ablation of the masks as an input.
    blind: bool = False
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
    #: Where the student's sampler starts: ``f1`` (F1 noised with the fixed tile) or ``clean``
    #: (F1 itself: nothing tied to the screen).
    start: str = 'f1'
    #: Steps the teacher's targets are sampled with (0: the teacher's own).
    teacher_steps: int = 0
    seed: int = 0
    checkpoint_every: int = 200
    device: str = 'auto'
    threads: int = 0
    half: bool = False
    validate: bool = True

    def loss_weights(self):
        from .refiner_losses import RefinerLossWeights
        return RefinerLossWeights(self.mask_intensity, self.mask_gradient, self.intensity,
                                  self.gradient, self.ssim, self.ssim_ir_share, self.correlation,
                                  self.detail, self.ssim_ir_in, self.ssim_ir_out)

    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint) if self.checkpoint else Path(str(self.out) + '.ckpt')

    @property
    def loss_masks(self) -> bool:
        """The loss sees the masks (all but the ``no_sam`` variant)."""
        return self.variant != 'no_sam'

    @property
    def use_masks(self) -> bool:
        """The network sees the masks."""
        return self.loss_masks and not self.blind


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
    p.add_argument('--w-detail', type=float, default=d.detail,
                   help='weight of the finest-detail term (default %(default)s)')
    p.add_argument('--ssim-ir-in', type=float, default=d.ssim_ir_in,
                   help='infrared SSIM share inside the masks (negative: uniform)')
    p.add_argument('--ssim-ir-out', type=float, default=d.ssim_ir_out,
                   help='infrared SSIM share outside the masks (negative: uniform)')
    p.add_argument('--w-shift', type=float, default=d.shift,
                   help='weight of the shift-equivariance term (default %(default)s)')
    p.add_argument('--shift-max', type=int, default=d.shift_max,
                   help='largest shift of its second view, px (default %(default)s)')
    p.add_argument('--blind', action='store_true',
                   help='masks in the loss only, never as the network input (ablation)')
    p.add_argument('--input-noise', type=float, default=d.input_noise,
                   help='largest sensor-noise sigma on the inputs, grey levels (default '
                   '%(default)s)')


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
    p.add_argument('--start', default=d.start, choices=('f1', 'clean'),
                   help="the student's start: noised F1 or F1 itself (default %(default)s)")
    p.add_argument('--teacher-steps', type=int, default=d.teacher_steps,
                   help="steps of the teacher's targets (default: its own)")
    p.set_defaults(steps=d.steps, lr=d.lr, warmup=d.warmup)


def config_from_args(args, mode: str) -> RefinerTrainConfig:
    cfg = RefinerTrainConfig(
        **common_config_fields(args), mode=mode,
        stage1=str(args.stage1) if args.stage1 else '', mask_provider=args.mask_provider,
        cache_dir=str(args.cache_dir), mask_intensity=args.w_mask_int,
        mask_gradient=args.w_mask_grad, detail=args.w_detail, ssim_ir_in=args.ssim_ir_in,
        ssim_ir_out=args.ssim_ir_out, shift=args.w_shift, shift_max=args.shift_max,
        input_noise=args.input_noise, blind=args.blind)
    if mode == 'teacher':
        cfg.preset, cfg.variant, cfg.channels = args.preset, args.variant, args.channels
        cfg.bootstrap = args.bootstrap
        cfg.sample_steps, cfg.t_start = args.sample_steps, args.t_start
    else:
        cfg.teacher = str(args.teacher)
        cfg.sample_steps, cfg.t_start = args.student_steps, args.t_start
        cfg.distill, cfg.fusion = args.w_distill, args.w_fusion
        cfg.start, cfg.teacher_steps = args.start, args.teacher_steps
    return cfg
