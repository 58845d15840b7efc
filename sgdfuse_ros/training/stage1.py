"""Training of the stage-1 network (``sgdfuse train stage1``).

Adam with a linear warm-up and a cosine decay, random crops of the training pairs (see
:mod:`.data`), an exponential moving average (EMA) of the weights that is what gets evaluated and
shipped, periodic checkpoints (model hyper-parameters, training config, optimizer and EMA state)
and ``--resume``. At the end the EMA weights are written to ``--out`` (small: no optimizer state)
and scored on the validation pairs at their native resolution with the standard fusion metrics,
next to the Laplacian-pyramid baseline; the table goes to the terminal and, with the weights'
SHA-256, the command and the duration, into a JSON sidecar ``<out>.json``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
import json
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
from sgdfuse_ros.models.run import fuse_arrays
from sgdfuse_ros.models.stage1 import (PRESETS, Stage1Net, count_params, gflops_per_frame,
                                       make_checkpoint, preset, read_checkpoint)
from .common import ema_of, pick_device, resume_training, run_steps, save_atomic
from .config import TrainConfig, add_arguments, config_from_args
from .data import CropSampler, Pair, load_split
from .losses import FusionLoss


# ----------------------------------------------------------------------------------------------
# Inference and validation
# ----------------------------------------------------------------------------------------------

def evaluate(fuse: Callable[[Pair], np.ndarray], pairs: list[Pair],
             convention: str = 'standard') -> dict[str, dict]:
    """Metrics per pair (``set/name``) of ``fuse(pair) -> luma float [0, 1] (H, W)``, scored
    as 8-bit gray against the 8-bit sources at the pair's native resolution (``convention``:
    see :func:`sgdfuse_ros.core.metrics.compute_metrics`)."""
    from sgdfuse_ros.core.metrics import compute_metrics

    out = {}
    for p in pairs:
        ir8, vis8 = imaging.to_uint8(planar_luma(p.ir)), imaging.to_uint8(planar_luma(p.vis))
        out[f'{p.set}/{p.name}'] = compute_metrics(imaging.to_uint8(fuse(p)), ir8, vis8,
                                                   convention=convention)
    return out


def validate(model: Stage1Net, pairs: list[Pair]) -> dict[str, dict[str, float]]:
    """Mean metrics of stage 1 and of the Laplacian baseline on ``pairs``."""
    from sgdfuse_ros.core.baselines import fuse_laplacian

    model.eval()
    rows = {
        'stage1': mean_metrics(evaluate(lambda p: planar_luma(fuse_arrays(model, p.ir, p.vis)),
                                        pairs)),
        'laplacian': mean_metrics(evaluate(
            lambda p: fuse_laplacian(planar_luma(p.ir), planar_luma(p.vis)), pairs)),
    }
    return rows


def _metrics_available() -> bool:
    try:
        from sgdfuse_ros.core import metrics  # noqa: F401
    except ImportError:
        return False
    return True


def count_wins(rows: dict[str, dict[str, float]], ours: str = 'stage1',
               theirs: str = 'laplacian') -> tuple[int, list[str]]:
    """How many headline metrics ``ours`` beats ``theirs`` on (higher is better for all)."""
    from sgdfuse_ros.core.metrics import HEADLINE

    won = [k for k in HEADLINE if rows[ours][k] > rows[theirs][k]]
    return len(won), won


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, *, resume: bool = False, stop_at: int | None = None,
          command: str = '', log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) a training run; returns a summary (``loss_start``,
    ``loss_end``, ``metrics``, ``wins``, ``seconds``...).

    ``stop_at`` interrupts the run after that step (the checkpoint is written, nothing else; a
    later call with ``resume=True`` continues it as if it had not stopped).
    """
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, resume, stop_at, command, log)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, resume: bool, stop_at: int | None, command: str,
           log: Callable[[str], None]) -> dict[str, Any]:
    dev = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    arch = preset(cfg.preset, in_channels=cfg.channels, out_channels=cfg.channels)
    model = Stage1Net(arch).to(dev)
    if cfg.init:
        init = read_checkpoint(cfg.init, map_location=dev)
        if init['config'] != asdict(arch):
            raise ValueError(f'{cfg.init}: its architecture differs from preset {cfg.preset!r}')
        load_fp32_state_dict(model, init.get('ema', init['state_dict']))
        log(f'stage1: initialised from {cfg.init} (step {init.get("step")})')
    ema = ema_of(model, Stage1Net(arch).to(dev))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = FusionLoss(cfg.loss_weights())

    train_pairs, val_pairs = load_split(cfg.data, cfg.channels)
    names = {(p.set, p.name) for p in train_pairs}
    leaked = [f'{p.set}/{p.name}' for p in val_pairs if (p.set, p.name) in names]
    if leaked:  # cannot happen with split_pairs; kept as a guard against future edits
        raise RuntimeError(f'validation pairs in the training set: {leaked}')
    sampler = CropSampler(train_pairs, cfg.crop, cfg.seed)
    log(f'stage1: {len(train_pairs)} training pairs, {len(val_pairs)} validation pairs; '
        f'preset {cfg.preset}: {count_params(model)} parameters, '
        f'{gflops_per_frame(ema):.3f} GFLOPs per 640x480 frame; device {dev}')

    def read_state(path: Path) -> dict[str, Any]:
        ck = read_checkpoint(path, map_location=dev)
        if ck['config'] != asdict(arch):
            raise ValueError(f'{path}: its architecture differs from preset {cfg.preset!r}')
        return ck

    ckpt_path = cfg.checkpoint_path()
    step, elapsed, history = resume_training(ckpt_path, resume, read_state, model, ema, opt,
                                             log, 'stage1')

    t0 = time.perf_counter() - elapsed

    def save_state(step: int) -> None:
        save_atomic(make_checkpoint(model, ema=ema.state_dict(), optimizer=opt.state_dict(),
                                    train=asdict(cfg), step=step,
                                    seconds=time.perf_counter() - t0, history=history),
                    ckpt_path)

    def batch_loss(step: int):
        ir_np, vis_np = sampler.batch(step, cfg.batch)
        ir = torch.from_numpy(ir_np).to(dev)
        vis = torch.from_numpy(vis_np).to(dev)
        return loss_fn(model(ir, vis), ir, vis)

    step = run_steps(cfg, model, ema, opt, step=step, stop_at=stop_at, desc='stage1',
                     history=history, batch_loss=batch_loss, save=save_state)
    if step < cfg.steps:
        log(f'stage1: stopped at step {step} of {cfg.steps}; state in {ckpt_path}')
        return {'steps': step, 'stopped': True}
    elapsed = time.perf_counter() - t0

    summary: dict[str, Any] = {
        'steps': step, 'seconds': round(elapsed, 1),
        'loss_start': history[0][1] if history else None,
        'loss_end': history[-1][1] if history else None,
        'params': count_params(ema), 'gflops_640x480': round(gflops_per_frame(ema), 3),
    }
    ema.eval()
    if cfg.validate and val_pairs and not _metrics_available():
        log('stage1: warning: sgdfuse_ros.core.metrics is not available; no validation')
    elif cfg.validate and val_pairs:
        rows = validate(ema, val_pairs)
        wins, won = count_wins(rows)
        summary.update(metrics=rows, wins=wins, won=won,
                       validation=[f'{p.set}/{p.name}' for p in val_pairs])
        from sgdfuse_ros.core.metrics import format_table
        log(f'validation ({len(val_pairs)} pairs, native resolution):')
        log(format_table(rows))
        log(f'stage1 beats laplacian on {wins} of 8: {", ".join(won)}')
    out = Path(cfg.out)
    save_atomic(make_checkpoint(ema, half=cfg.half, train=asdict(cfg), step=step,
                                metrics=summary.get('metrics')), out)
    summary['sha256'] = sha256_file(out)
    sidecar = {'file': out.name, 'sha256': summary['sha256'], 'command': command,
               'preset': cfg.preset, 'config': asdict(arch), 'train': asdict(cfg),
               **{k: v for k, v in summary.items() if k != 'sha256'}}
    with open(out.with_suffix('.json'), 'w') as f:
        json.dump(sidecar, f, indent=2)
    log(f'stage1: wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix(".json")}'
        f' after {elapsed / 60:.1f} min')
    return summary


# ----------------------------------------------------------------------------------------------
# Command line (wired into ``sgdfuse train stage1``)
# ----------------------------------------------------------------------------------------------

def run_train_stage1(args) -> int:
    """Entry point of ``sgdfuse train stage1``; returns the exit status."""
    cfg = config_from_args(args)
    if cfg.crop % PRESETS[cfg.preset].multiple:
        print(f'sgdfuse: error: --crop must be a multiple of {PRESETS[cfg.preset].multiple}',
              file=sys.stderr)
        return 2
    prog = Path(sys.argv[0]).name
    prog = ('sgdfuse' if prog.startswith('sgdfuse') or prog == 'cli.py' else
            'python -m sgdfuse_ros.training.stage1' if prog == 'stage1.py' else sys.argv[0])
    command = ' '.join([prog] + [shlex.quote(a) for a in sys.argv[1:]])
    try:
        train(cfg, resume=args.resume, command=command)
    except (FileNotFoundError, FileExistsError, ValueError, imaging.ImageError) as exc:
        print(f'sgdfuse: error: {exc}', file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m sgdfuse_ros.training.stage1',
                                description='Train the stage-1 fusion network.')
    add_arguments(p)
    return run_train_stage1(p.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
