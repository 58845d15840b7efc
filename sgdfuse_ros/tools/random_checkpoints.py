"""Checkpoints of randomly initialised networks, for benchmarks and tests where the real weights
are absent: the time a network takes does not depend on its weights' values (its output does, so
nothing measures quality with these).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_random_sam_checkpoint(kind: str, path: str | os.PathLike, seed: int = 0) -> Path:
    """A checkpoint of a randomly initialised SAM-family model in the official layout of
    ``kind`` (``mobile_sam``, ``lite_medsam``, ``vit_b``, ``vit_l``, ``vit_h``) at its native
    input size."""
    import torch

    from sgdfuse_ros.masks.sam_models import (EMBEDDING_STRIDE, NATIVE_INPUT_SIZE,
                                              build_prompt_decoder, build_tinyvit)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if kind.startswith('vit'):
            from segment_anything import sam_model_registry

            state = sam_model_registry[kind]().state_dict()
        else:
            size = NATIVE_INPUT_SIZE[kind]
            enc = build_tinyvit(kind, size)
            prompt, decoder = build_prompt_decoder(size // EMBEDDING_STRIDE[kind], size)
            state = {}
            for prefix, part in (('image_encoder.', enc), ('prompt_encoder.', prompt),
                                 ('mask_decoder.', decoder)):
                state.update({prefix + k: v for k, v in part.state_dict().items()})
    torch.save(state, path)
    return path


def write_random_stage1(path: str | os.PathLike, seed: int = 0) -> Path:
    """A stage-1 checkpoint (``realtime`` preset) with a randomised output head (an untrained
    network's head starts at zero)."""
    import torch

    from sgdfuse_ros.models.stage1 import Stage1Net, make_checkpoint, preset

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Stage1Net(preset('realtime'))
        torch.nn.init.normal_(model.head.weight, std=0.01)
    path = Path(path)
    torch.save(make_checkpoint(model, note='untrained, for timing'), path)
    return path


def write_random_refiner(path: str | os.PathLike, seed: int = 0) -> Path:
    """A student refiner checkpoint (``realtime`` preset, 2 steps from t = 500)."""
    import torch

    from sgdfuse_ros.models.refiner import RefinerNet, SamplerSettings, make_checkpoint, preset

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = RefinerNet(preset('realtime'))
    path = Path(path)
    torch.save(make_checkpoint(model, role='student',
                               sampler=SamplerSettings(steps=2, t_start=500)), path)
    return path
