"""Training of the refiner: the many-step teacher (``sgdfuse train stage2``) and the few-step
student distilled from it (``sgdfuse train distill``).

Data. The pairs and the validation split are those of stage 1 (:mod:`.data`: validation = every
FMB pair and every 5th RoadScene pair, never trained on). For every pair, F1 (from the given
stage-1 weights) and the two semantic masks (from a mask provider, ``lite_medsam`` by default)
are computed once at native resolution and cached on disk under ``cache_dir``
(``f1/<stage-1 sha12>/<set>/<name>.npy``, ``masks/<provider>/<set>/<name>.npz``), then random
crops of ``[IR, F1, masks, VIS]`` are drawn with :class:`.data.CropSampler`.

Teacher (see :mod:`sgdfuse_ros.models.diffusion` for the process). Each step draws
``t ~ U{0..T-1}`` per crop and noises ``x_0`` to ``x_t``; ``x_0`` is F1, or, for a share
``bootstrap`` of the crops, the network's own stop-gradient estimate ``net(x_{t'}, cond, t')``
made at a later timestep ``t' ~ U{t..T-1}``, which is what the sampler feeds it at every step
after the first. The x0-prediction ``x0_hat = net(x_t, cond, t)`` is scored with the refiner loss
(:mod:`.refiner_losses`: mask-guided intensity and gradient inside the masks, plus the global
terms), since fusion has no ground truth to regress to. Adam, warm-up + cosine decay, an EMA of
the weights (what is written and evaluated), checkpoints and ``--resume`` as for stage 1.

Student (output distillation of the deterministic DDIM teacher, as in Luhman & Luhman 2021).
The teacher's 60-step sample is computed once per training pair at native resolution (cached,
``teacher/<teacher sha12>/...``). The student starts from the teacher's weights and is trained
through its own K-step sampler (unrolled, differentiable, random start noise) on crops to
match the teacher's sample (L1) plus a small weight of the refiner loss on its output.

Shift-steady training (the ``steady`` weights, docs/refiner.md): with ``--w-shift`` each crop
gives two views offset by a random shift, both scored, their outputs held to agree where they
overlap (:func:`shift_disagreement`; the teacher's noise is drawn on the whole crop, so both
views see it shifted); ``--input-noise`` adds sensor noise to the network's inputs of half the
crops (:func:`noisy_inputs`) while the loss sees the clean sources; ``--start clean`` makes a
student that starts from F1 itself; ``--blind`` keeps the masks in the loss but not in the
network's input (an ablation). The data and caches live in :mod:`.refiner_data`.

Ablation variants (``--variant``): ``no_sam`` zeroes the masks in training and inference (the
mask-guided terms vanish); ``no_diffusion`` trains the same network as a one-pass regressor
(input ``x_t`` = clean F1, ``t = 0``, sampled with one step from ``clean``); ``no_hfah`` replaces
the HFAH by a plain output convolution.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
import json
import os
from pathlib import Path
import shlex
import sys
import time
from typing import Any, Callable

import numpy as np
import torch

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.hashing import sha256_file
from sgdfuse_ros.core.imaging import planar_luma
from sgdfuse_ros.core.metrics import mean_metrics
from sgdfuse_ros.models.checkpoint import load_fp32_state_dict
from sgdfuse_ros.models.diffusion import Diffusion, to_image, to_model
from sgdfuse_ros.models.refiner import (PRESETS, RefinerNet, SamplerSettings, build_condition,
                                        config_from_checkpoint, count_params, gflops_per_step,
                                        make_checkpoint, preset, read_checkpoint)
from sgdfuse_ros.models.run import refine_arrays
from .common import ema_of, pick_device, resume_training, run_steps, save_atomic
from .refiner_config import (RefinerTrainConfig, add_distill_arguments, add_stage2_arguments,
                             config_from_args)
from .refiner_data import (LogFn, PairCache, RefinerPair,  # noqa: F401  (re-exported)
                           _save_npy_atomic, crop_sampler, load_refiner_split,
                           split_batch, stage1_weights_path)
from .refiner_losses import RefinerLoss
from .stage1 import count_wins, evaluate


# ----------------------------------------------------------------------------------------------
# Running a refiner on pairs, validation
# ----------------------------------------------------------------------------------------------

def settings_for(cfg: RefinerTrainConfig) -> SamplerSettings:
    if cfg.mode == 'teacher' and cfg.variant == 'no_diffusion':
        return SamplerSettings(steps=1, t_start=0, start='clean')
    start = cfg.start if cfg.mode == 'distill' else 'f1'
    return SamplerSettings(steps=cfg.sample_steps, t_start=cfg.t_start, start=start)


def refine_pair(model: RefinerNet, settings: SamplerSettings, p: RefinerPair, *,
                use_masks: bool = True, diffusion: Diffusion | None = None,
                masks: np.ndarray | None = None, steps: int | None = None) -> np.ndarray:
    """Refined ``(C, H, W)`` image of one pair at native resolution (the fixed start noise)."""
    m = p.masks if masks is None else masks
    if not use_masks:
        m = np.zeros_like(m)
    return refine_arrays(model, diffusion or Diffusion(), p.f1, m, p.ir, p.vis,
                         steps=steps or settings.steps, t_start=settings.t_start,
                         start=settings.start)


#: Metric convention of the validation tables (MMIF-CDDFuse's evaluator, see core.metrics).
CONVENTION = 'evaluator'


def validation_rows(pairs: list[RefinerPair], refiners: dict[str, Callable[[RefinerPair],
                                                                            np.ndarray]],
                    baselines: bool = True, convention: str = CONVENTION
                    ) -> dict[str, dict[str, float]]:
    """Mean metrics of each ``name -> fn(pair) -> (C, H, W)`` refiner on ``pairs``, plus
    ``stage1`` (F1 itself) and ``laplacian``."""
    from sgdfuse_ros.core.baselines import fuse_laplacian

    def score(fn):
        return mean_metrics(evaluate(fn, pairs, convention=convention))

    rows = {name: score(lambda p, fn=fn: planar_luma(fn(p))) for name, fn in refiners.items()}
    if baselines:
        rows['stage1'] = score(lambda p: planar_luma(p.f1))
        rows['laplacian'] = score(
            lambda p: fuse_laplacian(planar_luma(p.ir), planar_luma(p.vis)))
    return rows


def relative_gaps(rows: dict[str, dict[str, float]], a: str, b: str) -> dict[str, float]:
    """``(a - b) / |b|`` per headline metric."""
    from sgdfuse_ros.core.metrics import HEADLINE

    return {k: (rows[a][k] - rows[b][k]) / max(abs(rows[b][k]), 1e-12) for k in HEADLINE}


def time_sampler(model: RefinerNet, settings: SamplerSettings, *, size=(480, 640),
                 repeats: int = 5, steps: int | None = None) -> float:
    """Median milliseconds of the whole sampler (all steps, batch 1) on a ``size`` frame."""
    diffusion = Diffusion()
    h, w = size
    c = model.config.channels
    f1 = torch.rand(1, c, h, w)
    cond = build_condition(f1, torch.rand(1, 2, h, w), torch.rand(1, c, h, w),
                           torch.rand(1, c, h, w), model.config.sources)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            diffusion.sample(model, cond, f1, steps=steps or settings.steps,
                             t_start=settings.t_start, start=settings.start)
            if i:
                times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


# ----------------------------------------------------------------------------------------------
# Training loops
# ----------------------------------------------------------------------------------------------

def _generator(seed: int, step: int, dev: torch.device) -> torch.Generator:
    g = torch.Generator(device=dev)
    g.manual_seed(int(seed) * 1_000_003 + int(step))
    return g


def train(cfg: RefinerTrainConfig, *, resume: bool = False, stop_at: int | None = None,
          command: str = '', log: LogFn = print, pairs=None) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) a teacher (``cfg.mode == 'teacher'``) or distillation
    (``'distill'``) run; returns a summary (``loss_start``, ``loss_end``, ``metrics``...).

    ``stop_at`` interrupts after that step (checkpoint written; resume continues it exactly).
    ``pairs``: pre-loaded ``(train, validation)`` lists (tests), else loaded from ``cfg.data``.
    """
    if cfg.mode not in ('teacher', 'distill'):
        raise ValueError(f'mode must be teacher or distill, got {cfg.mode!r}')
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, resume, stop_at, command, log, pairs)
    finally:
        torch.set_num_threads(threads)


def _load_weights(model: RefinerNet, path: str, dev, what: str, log: LogFn = print,
                  partial: bool = False) -> dict[str, Any]:
    """Load ``path``'s weights into ``model``. With ``partial``, an architecture that differs
    (another preset: blur-pool, map output, detail gains) gives every tensor of the same name
    and shape (a strided convolution's weights go to its blur-pool convolution); the rest keep
    their initialisation (the zero output convolution: the network starts as F1 again)."""
    ck = read_checkpoint(path, map_location=dev)
    state = ck.get('ema', ck['state_dict'])
    if config_from_checkpoint(ck) == model.config:
        load_fp32_state_dict(model, state)
        return ck
    if not partial:
        raise ValueError(f'{path}: its architecture differs from the {what}')
    own = model.state_dict()
    taken = {}
    for k, v in state.items():
        parts = k.split('.')
        if parts[0] == 'downs' and len(parts) == 3 and f'downs.{parts[1]}.conv.{parts[2]}' in own:
            k = f'downs.{parts[1]}.conv.{parts[2]}'
        if k in own and own[k].shape == v.shape:
            taken[k] = v.float()
    model.load_state_dict(taken, strict=False)
    log(f'refiner: {len(taken)} of {len(own)} tensors taken from {path} (other architecture)')
    return ck


def teacher_targets(teacher: RefinerNet, settings: SamplerSettings, pairs: list[RefinerPair],
                    cache_dir: str | os.PathLike, teacher_sha: str, use_masks: bool,
                    log: LogFn = print) -> None:
    """Fill ``p.target`` with the teacher's sample of each pair (cached on disk)."""
    root = Path(cache_dir) / 'teacher' / f'{teacher_sha[:12]}_{settings.steps}_{settings.t_start}'
    t0, made = time.perf_counter(), 0
    for p in pairs:
        path = root / p.set / f'{p.name}.npy'
        if path.is_file():
            p.target = np.load(path).astype(np.float32)
            continue
        out = refine_pair(teacher, settings, p, use_masks=use_masks)
        _save_npy_atomic(path, out.astype(np.float16))
        p.target = out.astype(np.float16).astype(np.float32)
        made += 1
    log(f'distill: teacher samples for {len(pairs)} pairs ({made} computed, '
        f'{time.perf_counter() - t0:.0f} s; {root})')


def _train(cfg: RefinerTrainConfig, resume: bool, stop_at: int | None, command: str,
           log: LogFn, pairs) -> dict[str, Any]:
    dev = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    distill = cfg.mode == 'distill'
    diffusion = Diffusion()
    teacher = None
    teacher_meta: dict[str, Any] = {}
    if distill:
        from sgdfuse_ros.models.refiner import load_refiner
        teacher, teacher_meta = load_refiner(cfg.teacher, map_location=dev)
        teacher.requires_grad_(False)
        arch = teacher.config
        tr = teacher_meta.get('train', {})
        cfg.preset = tr.get('preset', cfg.preset)
        cfg.variant = tr.get('variant', 'full')
        cfg.channels = arch.channels
        if not cfg.stage1 and tr.get('stage1'):
            cfg.stage1 = tr['stage1']
        cfg.mask_provider = tr.get('mask_provider', cfg.mask_provider)
        if cfg.variant == 'no_diffusion':
            raise ValueError('the no_diffusion variant is a one-pass regressor: nothing to '
                             'distil')
    else:
        over = {'channels': cfg.channels}
        if cfg.variant == 'no_hfah':
            over['hfah'] = False
        arch = preset(cfg.preset, **over)
    view = cfg.crop - (cfg.shift_max if cfg.shift else 0)
    if view <= 0 or view % arch.multiple:
        raise ValueError(f'--crop (less --shift-max with --w-shift) must be a positive multiple'
                         f' of {arch.multiple}')
    settings = settings_for(cfg)
    if settings.start != 'clean':
        diffusion.timesteps(settings.steps, settings.t_start)  # validates steps / t_start

    model = RefinerNet(arch).to(dev)
    init = cfg.init or (cfg.teacher if distill else '')
    if init:
        _load_weights(model, init, dev, 'teacher' if distill and not cfg.init else 'preset',
                      log, partial=bool(cfg.init))
        log(f'refiner: initialised from {init}')
    ema = ema_of(model, RefinerNet(arch).to(dev))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = RefinerLoss(cfg.loss_weights())

    train_pairs, val_pairs = pairs if pairs is not None else load_refiner_split(cfg, log)
    if distill:
        tset = SamplerSettings(**teacher_meta['sampler'])
        if cfg.teacher_steps:
            tset.steps = cfg.teacher_steps
        teacher_targets(teacher, tset, train_pairs, cfg.cache_dir, sha256_file(cfg.teacher),
                        bool(teacher_meta.get('use_masks', cfg.use_masks)), log)
    sampler = crop_sampler(train_pairs, cfg.crop, cfg.seed, with_target=distill)
    tag = 'distill' if distill else f'stage2 ({cfg.variant})'
    log(f'{tag}: preset {cfg.preset}: {count_params(model)} parameters, '
        f'{gflops_per_step(ema):.3f} GFLOPs per step at 640x480; sampler {settings.steps} '
        f'step(s) from t={settings.t_start} ({settings.start}); device {dev}')

    def read_state(path: Path) -> dict[str, Any]:
        ck = read_checkpoint(path, map_location=dev)
        if config_from_checkpoint(ck) != arch:
            raise ValueError(f'{path}: its architecture differs from this run')
        return ck

    ckpt_path = cfg.checkpoint_path()
    step, elapsed, history = resume_training(ckpt_path, resume, read_state, model, ema, opt,
                                             log, tag)

    t0 = time.perf_counter() - elapsed

    def save_state(step: int) -> None:
        save_atomic(make_checkpoint(model, ema=ema.state_dict(), optimizer=opt.state_dict(),
                                    train=asdict(cfg), step=step,
                                    seconds=time.perf_counter() - t0, history=history,
                                    role=_role(cfg), sampler=settings), ckpt_path)

    def batch_loss(step: int):
        stack, vis = sampler.batch(step, cfg.batch)
        b = split_batch(stack, vis, arch.channels, dev)
        masks = b['masks'] if cfg.use_masks else torch.zeros_like(b['masks'])
        if not cfg.loss_masks:
            b['masks'] = masks
        gen = _generator(cfg.seed, step, dev)
        if cfg.input_noise:
            b['f1_in'], ir_in, vis_in = noisy_inputs(
                [b['f1'], b['ir'], b['vis']], cfg.input_noise / 255.0, gen)
        else:
            b['f1_in'], ir_in, vis_in = b['f1'], b['ir'], b['vis']
        b['cond'] = build_condition(b['f1_in'], masks, ir_in, vis_in, arch.sources)
        # The network's input is made on the whole crop, so that a second view sees the same
        # (shifted) noise as the first.
        if distill:
            b['noise'] = torch.randn(b['f1'].shape, generator=gen, device=dev)
        else:
            b['x_t'], t = _teacher_input(model, cfg, diffusion, b['cond'], b['f1_in'], gen)
        views = [(0, 0)]
        if cfg.shift:
            g = np.random.default_rng([cfg.seed, step, 7])
            views.append(tuple(int(v) for v in g.integers(0, cfg.shift_max + 1, 2)))
        outs, loss, terms = [], 0.0, {}
        for dy, dx in views:
            v = {k: x[:, :, dy:dy + view, dx:dx + view] for k, x in b.items()}
            if distill:
                out = diffusion.sample(model, v['cond'], v['f1_in'], steps=settings.steps,
                                       t_start=settings.t_start, start=settings.start,
                                       noise=v['noise'])
                part = cfg.distill * (out - v['target']).abs().mean()
                terms['l1'] = terms.get('l1', 0.0) + float(part.detach()) / len(views)
                if cfg.fusion:
                    fl, _ = loss_fn(out, v['ir'], v['vis'], v['masks'])
                    part = part + cfg.fusion * fl
                    terms['fus'] = terms.get('fus', 0.0) + float(fl.detach()) / len(views)
            else:
                out = to_image(model(v['x_t'], v['cond'], t))
                part, tv = loss_fn(out, v['ir'], v['vis'], v['masks'])
                for k, x in tv.items():
                    terms[k] = terms.get(k, 0.0) + x / len(views)
            loss = loss + part / len(views)
            outs.append(out)
        if cfg.shift:
            eq = shift_disagreement(outs[0], outs[1], views[1])
            loss = loss + cfg.shift * eq
            terms['shift'] = float(eq.detach())
        return loss, terms

    step = run_steps(cfg, model, ema, opt, step=step, stop_at=stop_at,
                     desc='distill' if distill else 'stage2', history=history,
                     batch_loss=batch_loss, save=save_state)
    if step < cfg.steps:
        log(f'{tag}: stopped at step {step} of {cfg.steps}; state in {ckpt_path}')
        return {'steps': step, 'stopped': True, 'history': history}
    elapsed = time.perf_counter() - t0
    return _finish(cfg, ema, settings, teacher, teacher_meta, val_pairs, history, elapsed,
                   command, log)


def _role(cfg: RefinerTrainConfig) -> str:
    return 'student' if cfg.mode == 'distill' else 'teacher'


def noisy_inputs(images: list[torch.Tensor], sigma_max: float, gen: torch.Generator
                 ) -> list[torch.Tensor]:
    """``images`` (``(B, C, H, W)`` each) with independent Gaussian noise on half of the
    crops, of a standard deviation drawn per crop from ``U(0, sigma_max)``, rounded to 8 bits
    and clipped to ``[0, 1]`` like a camera's (all crops are rounded: F1 too then sits on the
    8-bit grid, as the sources do)."""
    x = images[0]
    bsz = x.shape[0]
    sigma = torch.rand(bsz, generator=gen, device=x.device) * sigma_max
    sigma = sigma * (torch.rand(bsz, generator=gen, device=x.device) < 0.5)
    out = []
    for img in images:
        n = torch.randn(img.shape, generator=gen, device=img.device) * sigma.view(-1, 1, 1, 1)
        out.append(torch.clamp(torch.round((img + n) * 255.0) / 255.0, 0.0, 1.0)
                   if sigma_max > 0 else img)
    return out


def shift_disagreement(a: torch.Tensor, b: torch.Tensor, shift: tuple[int, int],
                       border: int = 8) -> torch.Tensor:
    """Mean ``|a - b|`` where ``b`` is the output of the input seen ``shift = (dy, dx)``
    pixels further down-right: ``a[y + dy, x + dx]`` against ``b[y, x]`` over the overlap, less
    ``border`` pixels on each side (padding sees different surroundings there)."""
    dy, dx = shift
    h, w = a.shape[-2:]
    pa = a[..., dy + border:h - border, dx + border:w - border]
    pb = b[..., border:h - dy - border, border:w - dx - border]
    return (pa - pb).abs().mean()


def _teacher_input(model: RefinerNet, cfg: RefinerTrainConfig, diffusion: Diffusion,
                   cond: torch.Tensor, f1: torch.Tensor, gen: torch.Generator):
    """The teacher's noised input ``(x_t, t)`` for a batch (see the module docstring)."""
    dev = f1.device
    bsz = f1.shape[0]
    x0 = to_model(f1)
    if cfg.variant == 'no_diffusion':
        return x0, torch.zeros(bsz, dtype=torch.long, device=dev)
    T = diffusion.T
    t = torch.randint(0, T, (bsz,), generator=gen, device=dev)
    noise = torch.randn(f1.shape, generator=gen, device=dev)
    if cfg.bootstrap > 0:
        sel = torch.rand(bsz, generator=gen, device=dev) < cfg.bootstrap
        idx = sel.nonzero().flatten()
        if len(idx):
            u = torch.rand(len(idx), generator=gen, device=dev)
            t1 = (t[idx] + (u * (T - t[idx]).float()).long()).clamp(max=T - 1)
            n1 = torch.randn((len(idx),) + f1.shape[1:], generator=gen, device=dev)
            with torch.no_grad():
                prev = model(diffusion.q_sample(x0[idx], t1, n1), cond[idx], t1)
            x0 = x0.clone()
            x0[idx] = prev
    return diffusion.q_sample(x0, t, noise), t


def _finish(cfg: RefinerTrainConfig, ema: RefinerNet, settings: SamplerSettings, teacher,
            teacher_meta: dict, val_pairs: list[RefinerPair], history: list, elapsed: float,
            command: str, log: LogFn) -> dict[str, Any]:
    distill = cfg.mode == 'distill'
    tag = 'distill' if distill else 'stage2'
    ema.eval()
    summary: dict[str, Any] = {
        'steps': cfg.steps, 'seconds': round(elapsed, 1),
        'loss_start': history[0][1] if history else None,
        'loss_end': history[-1][1] if history else None,
        'params': count_params(ema), 'gflops_per_step_640x480': round(gflops_per_step(ema), 3),
        'sampler': asdict(settings), 'use_masks': cfg.use_masks,
    }
    diffusion = Diffusion()
    if cfg.validate and val_pairs:
        name = f'{"student" if distill else "teacher"} ({settings.steps} step' \
               f'{"s" if settings.steps > 1 else ""})'
        if cfg.variant != 'full' or cfg.blind:
            name = f'{cfg.variant}{" (blind)" if cfg.blind else ""}: {name}'
        refiners = {name: lambda p: refine_pair(ema, settings, p, use_masks=cfg.use_masks,
                                                diffusion=diffusion)}
        if distill:
            tset = SamplerSettings(**teacher_meta['sampler'])
            refiners[f'teacher ({tset.steps} steps)'] = \
                lambda p: refine_pair(teacher, tset, p,
                                      use_masks=bool(teacher_meta.get('use_masks', True)),
                                      diffusion=diffusion)
        rows = validation_rows(val_pairs, refiners)
        from sgdfuse_ros.core.metrics import format_table
        log(f'validation ({len(val_pairs)} pairs, native resolution):')
        log(format_table(rows))
        summary.update(metrics=rows, validation=[f'{p.set}/{p.name}' for p in val_pairs])
        for other in ('stage1', 'laplacian'):
            wins, won = count_wins(rows, name, other)
            summary[f'wins_vs_{other}'] = won
            log(f'{name} beats {other} on {wins} of 8: {", ".join(won)}')
        if distill:
            gaps = relative_gaps(rows, name, f'teacher ({tset.steps} steps)')
            summary['gap_to_teacher'] = gaps
            log('relative difference to the teacher: ' + ', '.join(
                f'{k} {100 * v:+.2f}%' for k, v in gaps.items()))
    if cfg.validate:
        ms = time_sampler(ema, settings, repeats=3)
        summary['ms_640x480'] = round(ms, 1)
        summary['threads'] = torch.get_num_threads()
        log(f'{tag}: sampler {ms:.0f} ms per 640x480 frame ({settings.steps} step(s), '
            f'{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f})')
    out = Path(cfg.out)
    extra = {'train': asdict(cfg), 'step': cfg.steps, 'metrics': summary.get('metrics'),
             'use_masks': cfg.use_masks, 'diffusion': diffusion.describe()}
    if cfg.mode == 'distill':
        extra['teacher_sha256'] = sha256_file(cfg.teacher)
    save_atomic(make_checkpoint(ema, half=cfg.half, role=_role(cfg), sampler=settings, **extra),
                out)
    summary['sha256'] = sha256_file(out)
    sidecar = {'file': out.name, 'sha256': summary['sha256'], 'command': command,
               'role': _role(cfg), 'config': asdict(ema.config), 'train': asdict(cfg),
               **{k: v for k, v in summary.items() if k != 'sha256'}}
    with open(out.with_suffix('.json'), 'w') as f:
        json.dump(sidecar, f, indent=2)
    log(f'{tag}: wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix(".json")}'
        f' after {elapsed / 60:.1f} min')
    return summary


# ----------------------------------------------------------------------------------------------
# Command line (wired into ``sgdfuse train stage2`` / ``sgdfuse train distill``)
# ----------------------------------------------------------------------------------------------

def _command_line() -> str:
    if Path(sys.argv[0]).name.startswith('sgdfuse'):
        return 'sgdfuse ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
    return ' '.join(map(shlex.quote, sys.argv))


def _run(args, mode: str) -> int:
    cfg = config_from_args(args, mode)
    try:
        train(cfg, resume=args.resume, command=_command_line())
    except (FileNotFoundError, FileExistsError, ValueError, imaging.ImageError) as exc:
        print(f'sgdfuse: error: {exc}', file=sys.stderr)
        return 2
    return 0


def run_train_stage2(args) -> int:
    """Entry point of ``sgdfuse train stage2`` (the teacher); returns the exit status."""
    if args.preset not in PRESETS:
        print(f'sgdfuse: error: unknown preset {args.preset}', file=sys.stderr)
        return 2
    return _run(args, 'teacher')


def run_train_distill(args) -> int:
    """Entry point of ``sgdfuse train distill`` (the student); returns the exit status."""
    return _run(args, 'distill')


def speed_report(weights: list[str], *, size=(480, 640), repeats: int = 10,
                 steps: list[int] | None = None, threads: int = 2) -> list[dict[str, Any]]:
    """Parameters, GFLOPs per step and median sampler time (PyTorch, ``threads`` threads) of
    refiner checkpoints at ``size``; one row per checkpoint and step count."""
    from sgdfuse_ros.models.refiner import load_refiner

    torch.set_num_threads(threads)
    rows = []
    for path in weights:
        model, meta = load_refiner(path)
        settings = SamplerSettings(**meta.get('sampler', {}))
        for k in steps or [settings.steps]:
            ms = time_sampler(model, settings, size=size, repeats=repeats, steps=k)
            rows.append({'weights': str(path), 'role': meta.get('role'), 'steps': k,
                         'params': count_params(model),
                         'gflops_per_step': round(gflops_per_step(model, *size), 3),
                         'ms': round(ms, 1), 'load': round(os.getloadavg()[0], 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m sgdfuse_ros.training.refiner',
                                description='Train the refiner: teacher (stage2) or student '
                                '(distill); or time checkpoints (speed).')
    sub = p.add_subparsers(dest='mode', required=True)
    add_stage2_arguments(sub.add_parser('stage2'))
    add_distill_arguments(sub.add_parser('distill'))
    sp = sub.add_parser('speed', help='time refiner checkpoints at 640x480 (PyTorch)')
    sp.add_argument('weights', nargs='+')
    sp.add_argument('--steps', type=int, nargs='+', help="step counts (default: each's own)")
    sp.add_argument('--repeats', type=int, default=10)
    sp.add_argument('--threads', type=int, default=2)
    sp.add_argument('--size', default='640x480', help='WxH')
    args = p.parse_args(argv)
    if args.mode == 'speed':
        w, h = (int(v) for v in args.size.lower().split('x'))
        for row in speed_report(args.weights, size=(h, w), repeats=args.repeats,
                                steps=args.steps, threads=args.threads):
            print(json.dumps(row))
        return 0
    return run_train_stage2(args) if args.mode == 'stage2' else run_train_distill(args)


if __name__ == '__main__':
    sys.exit(main())
