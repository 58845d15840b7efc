"""The refiner's diffusion process: schedule, forward noising, a deterministic DDIM sampler.

Parameterization and sampler (see ``docs/refiner.md``):

* **Schedule**: linear betas from ``1e-6`` to ``1e-2`` over ``T = 1000`` steps (the authors'
  setting), ``alpha_bar_t = prod_{s<=t} (1 - beta_s)``; ``alpha_bar_999 = 0.0067``, so
  ``x_999`` is almost pure noise. ``alpha_bar_{-1} = 1`` stands for the clean image.
* **Domain**: images in ``[0, 1]`` are mapped to ``x = 2 img - 1`` (the network's Tanh range).
* **Forward process**: ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``. As in the
  paper, the image that gets noised is the stage-1 fusion F1 (``x_0 = 2 F1 - 1``); the
  network's target is not a ground-truth image (fusion has none) but whatever minimises the
  mask-guided fusion loss (:mod:`sgdfuse_ros.training.refiner`).
* **x0-prediction**: the network returns ``x0_hat = net(x_t, cond, t)`` directly, which a few-step
  sampler needs (an epsilon-prediction is ill-conditioned at large ``t``).
* **Deterministic DDIM sampler** (eta = 0): on a decreasing list of timesteps
  ``t_0 > t_1 > ... > t_{K-1}`` and ``t_K = -1``::

      x0_hat = net(x_{t_i}, cond, t_i)
      eps_hat = (x_{t_i} - sqrt(alpha_bar_{t_i}) x0_hat) / sqrt(1 - alpha_bar_{t_i})
      x_{t_{i+1}} = sqrt(alpha_bar_{t_{i+1}}) x0_hat + sqrt(1 - alpha_bar_{t_{i+1}}) eps_hat

  so the last step returns ``x0_hat``. :func:`Diffusion.timesteps` spaces K steps evenly from
  ``t_start`` down: ``t_i = round(t_start (K - i) / K)``.
* **Start**: ``f1`` (default) starts from the forward process applied to F1 at ``t_start``,
  ``noise`` from pure noise, ``clean`` from F1 itself without noise (a one-pass regressor: the
  "without diffusion" ablation). The start noise at inference is a fixed pseudo-random tile
  (:func:`noise_tile`, repeated over the frame): the same input always gives the same output,
  so video does not flicker, and ONNX reproduces it exactly.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

T_DEFAULT = 1000
BETA_START = 1e-6
BETA_END = 1e-2
STARTS = ('f1', 'noise', 'clean')
#: Side of the fixed noise tile used at inference.
TILE = 64


def to_model(img: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` image -> diffusion domain ``[-1, 1]``."""
    return img * 2.0 - 1.0


def to_image(x: torch.Tensor) -> torch.Tensor:
    """Diffusion domain -> ``[0, 1]`` image (clamped)."""
    return torch.clamp((x + 1.0) * 0.5, 0.0, 1.0)


def noise_tile(channels: int = 1, seed: int = 0, side: int = TILE) -> torch.Tensor:
    """A fixed standard-normal tile ``(1, channels, side, side)`` (NumPy's PCG64, so it is the
    same on every machine and torch version)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((1, channels, side, side)).astype(np.float32))


def tiled_noise(tile: torch.Tensor, height, width) -> torch.Tensor:
    """Repeat ``tile`` to cover ``height x width`` and crop (traceable with dynamic sizes)."""
    side_h, side_w = tile.shape[-2], tile.shape[-1]
    reps_h = (height + side_h - 1) // side_h
    reps_w = (width + side_w - 1) // side_w
    return tile.repeat(1, 1, reps_h, reps_w)[:, :, :height, :width]


def _sqrt(v):
    return v.sqrt() if torch.is_tensor(v) else math.sqrt(v)


def ddim_update(x_t: torch.Tensor, x0_hat: torch.Tensor, a_t, a_p) -> torch.Tensor:
    """The deterministic DDIM update (see the module docstring) from ``x_t`` to the previous
    timestep, given ``alpha_bar`` at both: ``a_t`` and ``a_p``, tensors broadcastable to
    ``x_t`` or Python floats (constants of an exported graph). ``a_p = 1`` returns
    ``x0_hat``. The one place the update is written: the sampler, the one-step module and the
    one-graph sampler all call it."""
    noise_scale = _sqrt(1.0 - a_t)
    noise_scale = noise_scale.clamp_min(1e-4) if torch.is_tensor(noise_scale) else \
        max(noise_scale, 1e-4)
    eps = (x_t - _sqrt(a_t) * x0_hat) / noise_scale
    return _sqrt(a_p) * x0_hat + _sqrt(1.0 - a_p) * eps


class Diffusion:
    """The linear-beta schedule and the operations on it (tensors on any device)."""

    def __init__(self, timesteps: int = T_DEFAULT, beta_start: float = BETA_START,
                 beta_end: float = BETA_END):
        if timesteps < 2:
            raise ValueError(f'timesteps must be >= 2, got {timesteps}')
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f'need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}')
        self.T = int(timesteps)
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        betas = np.linspace(beta_start, beta_end, self.T, dtype=np.float64)
        abar = np.cumprod(1.0 - betas)
        self.betas = torch.from_numpy(betas.astype(np.float32))
        self.alphas_cumprod = torch.from_numpy(abar.astype(np.float32))
        #: alpha_bar with index t + 1, so that index 0 (t = -1) is 1 (the clean image).
        self.abar_ext = torch.from_numpy(np.concatenate([[1.0], abar]).astype(np.float32))

    def describe(self) -> dict:
        """The schedule as stored in a checkpoint (``diffusion`` entry)."""
        return {'T': self.T, 'beta_start': self.beta_start, 'beta_end': self.beta_end,
                'schedule': 'linear'}

    @classmethod
    def from_description(cls, d: dict | None) -> 'Diffusion':
        """The schedule a checkpoint's ``diffusion`` entry (:meth:`describe`) names; the
        defaults for a checkpoint without one."""
        d = d or {}
        if d.get('schedule', 'linear') != 'linear':
            raise ValueError(f'unknown diffusion schedule {d.get("schedule")!r}')
        return cls(int(d.get('T', T_DEFAULT)), float(d.get('beta_start', BETA_START)),
                   float(d.get('beta_end', BETA_END)))

    def abar(self, t: torch.Tensor | int, like: torch.Tensor | None = None) -> torch.Tensor:
        """``alpha_bar_t`` for integer ``t`` in ``[-1, T-1]`` (``-1`` -> 1), shaped
        ``(B, 1, 1, 1)`` for a ``(B,)`` ``t``."""
        t = torch.as_tensor(t, dtype=torch.long)
        table = self.abar_ext.to(like.device if like is not None else t.device)
        out = table[(t.to(table.device) + 1).reshape(-1)]
        return out.reshape(-1, 1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int,
                 noise: torch.Tensor) -> torch.Tensor:
        """``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
        a = self.abar(t, x0).to(x0.dtype)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    def timesteps(self, steps: int, t_start: int | None = None) -> list[int]:
        """``steps`` evenly spaced decreasing timesteps from ``t_start`` (default ``T - 1``)."""
        t_start = self.T - 1 if t_start is None else int(t_start)
        if steps < 1:
            raise ValueError(f'steps must be >= 1, got {steps}')
        if not 0 <= t_start < self.T:
            raise ValueError(f't_start must be in [0, {self.T - 1}], got {t_start}')
        ts = [int(round(t_start * (steps - i) / steps)) for i in range(steps)]
        if len(set(ts)) != len(ts):
            raise ValueError(f'{steps} steps do not fit below t_start={t_start}')
        return ts

    def ddim_step(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t, t_prev) -> torch.Tensor:
        """One deterministic DDIM update from ``t`` to ``t_prev`` (``-1``: returns ``x0_hat``)."""
        a_t = self.abar(t, x_t).to(x_t.dtype)
        a_p = self.abar(t_prev, x_t).to(x_t.dtype)
        return ddim_update(x_t, x0_hat, a_t, a_p)

    def start(self, f1: torch.Tensor, t_start: int, start: str = 'f1',
              noise: torch.Tensor | None = None) -> torch.Tensor:
        """The sampler's initial ``x`` (see the module docstring); ``f1`` in ``[0, 1]``."""
        if start not in STARTS:
            raise ValueError(f'start must be one of {STARTS}, got {start!r}')
        x0 = to_model(f1)
        if start == 'clean':
            return x0
        if noise is None:
            raise ValueError(f'start={start!r} needs noise')
        if start == 'noise':
            return noise
        return self.q_sample(x0, t_start, noise)

    def sample(self, denoise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
               cond: torch.Tensor, f1: torch.Tensor, *, steps: int, t_start: int | None = None,
               start: str = 'f1', noise: torch.Tensor | None = None,
               timesteps: Sequence[int] | None = None,
               trajectory: list | None = None) -> torch.Tensor:
        """Run the DDIM sampler; returns the image in ``[0, 1]``.

        ``denoise(x_t, cond, t)`` is the x0-predicting network (``t``: ``(B,)`` long);
        ``noise``: the start noise (default: the fixed tile, see :func:`fixed_noise`).
        ``timesteps`` overrides the evenly spaced list. With ``trajectory`` (a list) every
        ``x0_hat`` is appended to it. Differentiable (used by distillation) unless called
        under ``torch.no_grad``.
        """
        ts = list(timesteps) if timesteps is not None else self.timesteps(steps, t_start)
        t0 = ts[0]
        if noise is None and start != 'clean':
            noise = fixed_noise(f1)
        x = self.start(f1, t0, start, noise)
        b = x.shape[0]
        for i, t in enumerate(ts):
            tt = torch.full((b,), t, dtype=torch.long, device=x.device)
            x0 = denoise(x, cond, tt)
            if trajectory is not None:
                trajectory.append(x0)
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            x = x0 if t_prev < 0 else self.ddim_step(x, x0, t, t_prev)
        return to_image(x)

    def __repr__(self) -> str:
        return (f'Diffusion(T={self.T}, linear betas {self.beta_start:g}..{self.beta_end:g}, '
                f'alpha_bar_T={float(self.alphas_cumprod[-1]):.4f})')


_TILES: dict[int, torch.Tensor] = {}


def fixed_noise(like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The inference start noise for a ``(B, C, H, W)`` tensor: :func:`noise_tile` repeated."""
    c = like.shape[1]
    key = c * 1000 + seed
    if key not in _TILES:
        _TILES[key] = noise_tile(c, seed)
    tile = _TILES[key].to(like)
    n = tiled_noise(tile, like.shape[-2], like.shape[-1])
    return n.expand(like.shape[0], -1, -1, -1)


# ----------------------------------------------------------------------------------------------
# Modules for export: one step with a timestep input, and the whole K-step sampler
# ----------------------------------------------------------------------------------------------

class DenoiseStep(nn.Module):
    """One sampler step as a module: ``forward(x, cond, t) -> x at the next timestep``.

    ``t``: ``int64`` ``(1,)``; the next timestep comes from a table over ``timesteps`` (the
    last one maps to ``-1``: the step returns ``x0_hat``). For
    :class:`sgdfuse_ros.runtime.export.StepLoop` and ``unrolled_sampler``.
    """

    def __init__(self, net: nn.Module, diffusion: Diffusion, timesteps: Sequence[int]):
        super().__init__()
        self.net = net
        ts = [int(t) for t in timesteps]
        nxt = torch.full((diffusion.T,), -1, dtype=torch.long)
        for i, t in enumerate(ts):
            nxt[t] = ts[i + 1] if i + 1 < len(ts) else -1
        self.register_buffer('next_t', nxt, persistent=False)
        self.register_buffer('abar_ext', diffusion.abar_ext.clone(), persistent=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1)[:1].long()
        x0 = self.net(x, cond, t)
        t_prev = self.next_t[t]
        a_t = self.abar_ext[t + 1].reshape(1, 1, 1, 1)
        a_p = self.abar_ext[t_prev + 1].reshape(1, 1, 1, 1)
        return ddim_update(x, x0, a_t, a_p)


class Sampler(nn.Module):
    """The whole K-step refiner as one module (one ONNX graph):
    ``forward(f1, masks, ir, vis) -> fused`` in ``[0, 1]`` (``(B, C, H, W)``; ``masks``
    ``(B, 2, H, W)``). Timesteps are constants; the start noise is the fixed tile."""

    def __init__(self, net: nn.Module, diffusion: Diffusion, *, steps: int, t_start: int,
                 start: str = 'f1', seed: int = 0, maps: bool = False):
        super().__init__()
        self.net = net
        #: Also return the last step's blend maps (``RefinerNet.forward(..., maps=True)``).
        self.maps = bool(maps)
        self.timesteps = diffusion.timesteps(steps, t_start)
        if start not in STARTS:
            raise ValueError(f'start must be one of {STARTS}, got {start!r}')
        self.start = start
        c = net.config.channels
        self.register_buffer('tile', noise_tile(c, seed), persistent=False)
        self.coef = []
        for i, t in enumerate(self.timesteps):
            t_prev = self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1
            a_t = float(diffusion.abar_ext[t + 1])
            a_p = float(diffusion.abar_ext[t_prev + 1])
            self.coef.append((a_t, a_p, t_prev))

    def forward(self, f1: torch.Tensor, masks: torch.Tensor, ir: torch.Tensor | None = None,
                vis: torch.Tensor | None = None) -> torch.Tensor:
        from .refiner import build_condition

        cfg = self.net.config
        cond = build_condition(f1, masks, ir, vis, cfg.sources)
        x = to_model(f1)
        if self.start != 'clean':
            noise = tiled_noise(self.tile, f1.shape[-2], f1.shape[-1]).expand_as(f1)
            a0 = self.coef[0][0]
            x = noise if self.start == 'noise' else \
                math.sqrt(a0) * x + math.sqrt(1.0 - a0) * noise
        b = f1.shape[0]
        maps = None
        for t, (a_t, a_p, t_prev) in zip(self.timesteps, self.coef):
            tt = torch.full((b,), t, dtype=torch.long, device=f1.device)
            if self.maps and t_prev < 0:
                x0, maps = self.net(x, cond, tt, maps=True)
            else:
                x0 = self.net(x, cond, tt)
            x = x0 if t_prev < 0 else ddim_update(x, x0, a_t, a_p)
        return (to_image(x), maps) if self.maps else to_image(x)
