"""How a network exports to ONNX: the spec each network defines beside itself.

The runtime (:mod:`sgdfuse_ros.runtime.export`) runs specs; it does not know which networks
exist. Each network's module builds its own spec (:func:`.stage1.stage1_spec`,
:func:`.refiner_export.refiner_exportables`, the SAM family's in
:mod:`sgdfuse_ros.masks.sam_export`). Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
from typing import Any, Callable, Sequence

import numpy as np

#: ONNX opset of every export.
OPSET = 17
#: Default max abs difference allowed between ONNX Runtime and PyTorch (``[0, 1]`` images).
TOLERANCE = 1e-3


@dataclass
class ExportSpec:
    """How to export one network.

    ``make_inputs(h, w)`` returns example tensors (in ``input_names`` order) for a working size;
    ``real_inputs(ir, vis, h, w)`` the same from a real luma pair (float32 ``[0, 1]``, already
    ``h x w``) for the parity check (None: the check runs on the example inputs).
    ``dynamic_axes`` as in ``torch.onnx.export``.
    """

    name: str
    input_names: Sequence[str]
    output_names: Sequence[str]
    make_inputs: Callable[[int, int], tuple]
    real_inputs: Callable[[np.ndarray, np.ndarray, int, int], tuple] | None = None
    dynamic_axes: dict[str, dict[int, str]] | None = None
    #: Sides must be multiples of this (the check pair is cropped to it).
    multiple: int = 1
    #: ``(H, W)`` of the example and check inputs.
    size: tuple[int, int] = (480, 640)
    opset: int = OPSET
    tolerance: float = TOLERANCE
    #: Graph passes to apply after export (names in
    #: :data:`sgdfuse_ros.runtime.onnx_passes.GRAPH_PASSES`).
    passes: Sequence[str] = ('fuse_pixel_unshuffle',)
    #: Extra facts for the sidecar (model config, timesteps...).
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Exportable:
    """One network ready to export: the module, its spec, its weights' digest and source."""

    module: Any
    spec: ExportSpec
    digest: str
    source: str


def module_digest(module) -> str:
    """SHA-256 of a module's state (names, shapes, dtypes and bytes), for weights with no file."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f'{name}:{tuple(t.shape)}:{t.dtype}'.encode())
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()
