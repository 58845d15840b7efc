"""Pieces shared by the stage-1 and refiner training loops: device choice, atomic checkpoint
writes, the learning-rate schedule, the EMA of the weights, resume, and the optimisation loop with
its loss bookkeeping (progress bar and history)."""

from __future__ import annotations

import math
import os
from pathlib import Path
import sys
from typing import Any, Callable

import numpy as np
import torch
from torch import nn


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA where available, else the CPU) or a torch device name; fails for ``cuda``
    without a CUDA device."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dev = torch.device(name)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError('--device cuda requested but no CUDA device is available')
    return dev


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, then rename it (no torn files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    torch.save(obj, tmp)
    os.replace(tmp, path)


def learning_rate(cfg: Any, step: int) -> float:
    """Linear warm-up to ``cfg.lr`` over ``cfg.warmup`` steps, then cosine decay to
    ``cfg.lr_min`` at ``cfg.steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(t, 1.0)))


def ema_of(model: nn.Module, fresh: nn.Module) -> nn.Module:
    """``fresh`` (a new instance of the model's network, on its device) made the EMA of
    ``model``: its weights copied, no gradients."""
    fresh.load_state_dict(model.state_dict())
    fresh.requires_grad_(False)
    return fresh


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """Move the EMA weights towards the model's after optimizer step ``step`` (0-based); the
    decay ramps up as ``(1 + step) / (10 + step)`` to at most ``decay``."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - d)


def resume_training(path: Path, resume: bool, read: Callable[[Path], dict[str, Any]],
                    model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer,
                    log: Callable[[str], None], tag: str) -> tuple[int, float, list]:
    """Where a run starts: ``(step, seconds spent so far, loss history)``, ``(0, 0.0, [])`` when
    there is no training state file ``path``. With one, only with ``resume`` (else
    :class:`FileExistsError`): ``read(path)`` returns the checkpoint (and checks that it fits the
    run), whose model, EMA and optimizer state are loaded."""
    if not path.is_file():
        return 0, 0.0, []
    if not resume:
        raise FileExistsError(f'{path} exists: pass --resume to continue it, or delete it to '
                              'start over')
    ck = read(path)
    model.load_state_dict(ck['state_dict'])
    ema.load_state_dict(ck['ema'])
    opt.load_state_dict(ck['optimizer'])
    step = int(ck['step'])
    log(f'{tag}: resumed {path} at step {step}')
    return step, float(ck.get('seconds', 0.0)), list(ck.get('history', []))


class LossTracker:
    """The loss bookkeeping of a training loop: a progress bar (``tqdm`` on stderr) showing a
    running mean of the loss and the current loss terms, and the history ``[step, mean loss]``
    appended to ``history`` (in place) every ``every`` steps and at the last step."""

    def __init__(self, steps: int, step: int, desc: str, history: list):
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        self.bar = tqdm(total=steps, initial=step, desc=desc, unit='step', file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.5 if tty else 30.0)
        self.steps = steps
        self.every = max(1, min(50, steps // 10))
        self.history = history
        self.window: list[float] = []
        self.running: float | None = None

    def record(self, step: int, loss: torch.Tensor, terms: dict[str, float]) -> None:
        """Account for ``loss`` (with its ``terms``) of the step that brought the count to
        ``step``."""
        value = float(loss.detach())
        self.running = value if self.running is None else 0.98 * self.running + 0.02 * value
        self.bar.update(1)
        self.bar.set_postfix(refresh=False, loss=f'{self.running:.4f}',
                             **{k: f'{v:.4f}' for k, v in terms.items()})
        self.window.append(value)
        if step % self.every == 0 or step == self.steps:
            self.history.append([step, float(np.mean(self.window))])
            self.window = []

    def close(self) -> None:
        self.bar.close()


def run_steps(cfg: Any, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer, *,
              step: int, stop_at: int | None, desc: str, history: list,
              batch_loss: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
              save: Callable[[int], None]) -> int:
    """The optimisation loop from ``step`` to ``cfg.steps`` (or ``stop_at`` if that comes
    first); returns the step reached.

    Each step sets the learning rate (:func:`learning_rate`), takes ``(loss, terms) =
    batch_loss(step)``, steps the optimizer, updates the EMA (:func:`ema_update`, decay
    ``cfg.ema``) and books the loss (:class:`LossTracker` with ``desc`` and ``history``);
    ``save(step)`` runs every ``cfg.checkpoint_every`` steps and at the last one.
    """
    tracker = LossTracker(cfg.steps, step, desc, history)
    model.train()
    last = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    while step < last:
        for g in opt.param_groups:
            g['lr'] = learning_rate(cfg, step)
        loss, terms = batch_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(ema, model, cfg.ema, step)
        step += 1
        tracker.record(step, loss, terms)
        if step % cfg.checkpoint_every == 0 or step == last:
            save(step)
    tracker.close()
    return step
