"""The refiner as ONNX graphs, defined once: what the ``sgdfuse`` method exports on first use and
what ``sgdfuse export --models refiner`` writes ahead of time (the same file names, so an export
made ahead of time is the one the method then loads).

* ``refiner_k<K>_t<t0>``: the K-step sampler of a checkpoint (:class:`.diffusion.Sampler`) as
  one graph, ``(f1, masks, ir, vis) -> fused``, all ``1 x C x H x W`` (masks ``1 x 2 x H x W``)
  in ``[0, 1]``, dynamic H and W; a blend refiner also outputs the last step's ``maps``
  (``RefinerNet.forward(..., maps=True)``: at 1/``down`` for ``bilinear`` maps), so that a
  frame can be refined at a working size and blended at its own. The name carries K and the
  start timestep, so each sampler setting gets its own export.
* ``refiner_step``: one step (:class:`.diffusion.DenoiseStep`), ``(x, cond, t) -> x_next``,
  for a runtime that calls the step K times.

The schedule and the sampler settings are read from the checkpoint's meta
(:meth:`.diffusion.Diffusion.from_description`, :meth:`.refiner.SamplerSettings.from_meta`).
The parity check runs on a real pair when ``masks_of(ir, vis) -> (ir_mask, vis_mask)`` is given
(the caller brings the masks: this layer knows no mask provider), with the Laplacian-pyramid
fusion standing in for F1; otherwise on random inputs.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

import numpy as np
import torch

from sgdfuse_ros.core.baselines import fuse_laplacian
from .diffusion import DenoiseStep, Diffusion, Sampler
from .export_spec import Exportable, ExportSpec
from .refiner import SamplerSettings, build_condition

MasksOf = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
_DYNAMIC = {2: 'height', 3: 'width'}


def refiner_sampler(model, meta: dict[str, Any], *, steps: int | None = None) -> Sampler:
    """The K-step sampler of a refiner checkpoint (``model``, ``meta`` from
    :func:`.refiner.load_refiner`): its schedule and settings, ``steps`` overriding K."""
    s = SamplerSettings.from_meta(meta)
    diffusion = Diffusion.from_description(meta.get('diffusion'))
    return Sampler(model, diffusion, steps=int(steps) if steps else s.steps,
                   t_start=s.t_start, start=s.start, maps=model.has_maps).eval()


def _example_inputs(c: int) -> Callable[[int, int], tuple]:
    def make(h, w):
        return (torch.rand(1, c, h, w), torch.rand(1, 2, h, w), torch.rand(1, c, h, w),
                torch.rand(1, c, h, w))

    return make


def _real_inputs(c: int, masks_of: MasksOf) -> Callable[..., tuple]:
    def real(ir, vis, h, w):
        f1 = fuse_laplacian(ir, vis)
        t = [torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]
             for a in (f1, ir, vis)]
        tm = torch.from_numpy(np.stack(masks_of(ir, vis)).astype(np.float32))[None]
        return t[0].expand(1, c, h, w), tm, t[1].expand(1, c, h, w), t[2].expand(1, c, h, w)

    return real


def refiner_spec(sampler: Sampler, *, size: tuple[int, int] = (480, 640),
                 masks_of: MasksOf | None = None) -> ExportSpec:
    """The one-graph K-step sampler (see the module docstring)."""
    net = sampler.net
    c = net.config.channels
    ts = list(sampler.timesteps)
    outputs = ('fused', 'maps') if sampler.maps else ('fused',)
    dynamic = {k: _DYNAMIC for k in ('f1', 'masks', 'ir', 'vis', 'fused')}
    if sampler.maps:  # at 1/down of the frame
        dynamic['maps'] = {2: 'maps_height', 3: 'maps_width'}
    return ExportSpec(
        f'refiner_k{len(ts)}_t{ts[0]}', ('f1', 'masks', 'ir', 'vis'), outputs,
        _example_inputs(c), _real_inputs(c, masks_of) if masks_of else None,
        dynamic_axes=dynamic,
        multiple=net.multiple, size=size,
        meta={'config': asdict(net.config), 'timesteps': ts, 'start': sampler.start})


def refiner_step_spec(sampler: Sampler, *, size: tuple[int, int] = (480, 640),
                      masks_of: MasksOf | None = None) -> ExportSpec:
    """One step of ``sampler`` (:class:`.diffusion.DenoiseStep`): ``(x, cond, t) -> x_next``."""
    net = sampler.net
    cfg = net.config
    c = cfg.channels
    make = _example_inputs(c)
    real = _real_inputs(c, masks_of) if masks_of else None
    t0 = torch.tensor([sampler.timesteps[0]], dtype=torch.long)

    def step_inputs(f1, m, ir, vis):
        return torch.randn(1, c, *f1.shape[-2:]), build_condition(f1, m, ir, vis, cfg.sources), t0

    return ExportSpec(
        'refiner_step', ('x', 'cond', 't'), ('x_next',), lambda h, w: step_inputs(*make(h, w)),
        (lambda ir, vis, h, w: step_inputs(*real(ir, vis, h, w))) if real else None,
        dynamic_axes={k: _DYNAMIC for k in ('x', 'cond', 'x_next')}, multiple=net.multiple,
        size=size, meta={'config': asdict(cfg), 'timesteps': list(sampler.timesteps),
                         'start': sampler.start})


def refiner_exportables(model, meta: dict[str, Any], *, digest: str, source: str,
                        size: tuple[int, int] = (480, 640), masks_of: MasksOf | None = None,
                        steps: int | None = None) -> list[Exportable]:
    """The checkpoint's sampler as one graph (``refiner_k<K>_t<t0>``) and as one step
    (``refiner_step``), ready for :func:`sgdfuse_ros.runtime.export.export_module`."""
    sampler = refiner_sampler(model, meta, steps=steps)
    diffusion = Diffusion.from_description(meta.get('diffusion'))
    step = DenoiseStep(model, diffusion, sampler.timesteps).eval()
    return [Exportable(sampler, refiner_spec(sampler, size=size, masks_of=masks_of), digest,
                       source),
            Exportable(step, refiner_step_spec(sampler, size=size, masks_of=masks_of), digest,
                       source)]

