"""Checkpoint helpers shared by the stage-1 and refiner networks.

Both store plain dicts with a ``format`` tag and a ``version`` next to the hyper-parameters and
the state dict (see :mod:`.stage1` and :mod:`.refiner` for the entries each adds).
"""

from __future__ import annotations

from dataclasses import asdict, fields
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


def config_from_dict(cls: type, d: dict[str, Any], what: str) -> Any:
    """The hyper-parameter dataclass ``cls`` from a checkpoint's ``config`` dict; unknown keys
    are an error (``what`` names the network in its message)."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f'unknown {what} hyper-parameters: {sorted(unknown)}')
    return cls(**d)


def tagged_checkpoint(model: nn.Module, fmt: str, version: int, *, half: bool = False,
                      **entries) -> dict[str, Any]:
    """A checkpoint dict: the format tag ``fmt`` and ``version``, the hyper-parameters
    (``model.config``, a dataclass), the state dict (detached, on the CPU, floating-point
    tensors in fp16 with ``half``), then ``entries``."""
    sd = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu()
          for k, v in model.state_dict().items()}
    return {'format': fmt, 'version': version, 'config': asdict(model.config), 'state_dict': sd,
            **entries}


def load_fp32_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load ``state_dict`` into ``model``, floating-point tensors cast to fp32 whatever they were
    stored as."""
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in state_dict.items()})


def read_tagged_checkpoint(path: str | os.PathLike, fmt: str, version: int, what: str,
                           map_location: str | torch.device = 'cpu') -> dict[str, Any]:
    """Read a checkpoint file (tensors mapped to ``map_location``) and check that it carries the
    format tag ``fmt`` and a version no newer than ``version``; ``what`` names the kind of
    weights in the error messages (``stage-1``, ``refiner``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such {what} weights file')
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get('format') != fmt:
        raise ValueError(f'{path}: not a {what} checkpoint (format tag missing)')
    if int(ckpt.get('version', 0)) > version:
        raise ValueError(f'{path}: checkpoint version {ckpt.get("version")} is newer than this '
                         f'package supports ({version})')
    return ckpt
