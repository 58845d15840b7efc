"""The networks run in PyTorch on numpy arrays of any size: padded to the network's side
multiple, run on the model's device and dtype, cropped back. Used by the fusion methods (their
PyTorch path) and by training (validation, the cached F1 of the refiner's pairs).

Importing this module does not import torch (the functions do).
"""

from __future__ import annotations

import numpy as np

from sgdfuse_ros.core import imaging


def fuse_arrays(model, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Run a stage-1 network on ``(C, H, W)`` (or ``H x W``) float arrays of any size.
    Returns float32 ``(C_out, H, W)`` (or ``H x W`` for 2-D input)."""
    import torch

    flat = ir.ndim == 2
    if flat:
        ir, vis = ir[None], vis[None]
    m = model.multiple
    ir_p, size = imaging.pad_to_multiple(ir.transpose(1, 2, 0), m)
    vis_p, _ = imaging.pad_to_multiple(vis.transpose(1, 2, 0), m)
    p = next(model.parameters())
    ti = torch.from_numpy(np.ascontiguousarray(ir_p.transpose(2, 0, 1)))[None].to(p)
    tv = torch.from_numpy(np.ascontiguousarray(vis_p.transpose(2, 0, 1)))[None].to(p)
    with torch.inference_mode():
        out = model(ti, tv)[0].float().cpu().numpy()
    out = out[:, :size[0], :size[1]]
    return out[0] if flat else out


def padded_inputs(f1: np.ndarray, masks: np.ndarray, ir: np.ndarray, vis: np.ndarray,
                  multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``[F1, masks, IR, VIS]`` of ``(C, H, W)`` arrays (masks ``2 x H x W``) stacked on the
    channel axis and padded to ``multiple`` (as :func:`.imaging.pad_to_multiple`); returns the
    ``(2 + 3C) x H' x W'`` stack and the original ``(H, W)``."""
    stack = np.concatenate([f1, masks, ir, vis]).transpose(1, 2, 0)
    padded, size = imaging.pad_to_multiple(stack, multiple)
    return padded.transpose(2, 0, 1), size


def refine_arrays(model, diffusion, f1: np.ndarray, masks: np.ndarray, ir: np.ndarray,
                  vis: np.ndarray, *, steps: int, t_start: int, start: str) -> np.ndarray:
    """Run a refiner network through the diffusion sampler on ``(C, H, W)`` arrays (masks
    ``2 x H x W``) of any size; returns the refined float32 ``(C, H, W)`` image."""
    import torch

    from .refiner import build_condition

    x, size = padded_inputs(f1, masks, ir, vis, model.multiple)
    x = torch.from_numpy(np.ascontiguousarray(x))[None].to(next(model.parameters()))
    c = f1.shape[0]
    tf1 = x[:, :c]
    cond = build_condition(tf1, x[:, c:c + 2], x[:, c + 2:2 * c + 2], x[:, 2 * c + 2:],
                           model.config.sources)
    with torch.inference_mode():
        out = diffusion.sample(model, cond, tf1, steps=steps, t_start=t_start, start=start)
    return out[0].float().cpu().numpy()[:, :size[0], :size[1]]
