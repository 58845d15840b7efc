"""What a fusion method is: the :class:`FusionMethod` protocol and its :class:`MethodOutput`.

A method fuses a registered pair of luma images (``float32`` in ``[0, 1]``, same 2-D shape) into a
fused luma. It is built once by a factory (which loads its weights) and then called per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class MethodOutput:
    """What one fusion call returns: the fused luma, and optionally the intermediate results."""

    fused: np.ndarray
    f1: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: The blend that made ``fused`` (a :class:`.compose.BlendMaps`), when asked for with
    #: ``maps=True`` of a method whose ``blend_maps`` is true: to blend the sources at a size
    #: other than the one the method ran at.
    maps: Any = None


class FusionMethod(Protocol):
    """A built fusion method."""

    name: str
    #: Side lengths must be multiples of this; the pipeline pads and crops.
    multiple: int
    #: True when the method consumes the semantic masks (``masks`` argument).
    uses_masks: bool
    # A method may also have ``blend_maps = True``: it then takes ``maps=True`` and returns
    # its blend maps in :attr:`MethodOutput.maps` (:mod:`.compose`).

    def __call__(self, ir: np.ndarray, vis: np.ndarray,
                 masks: tuple[np.ndarray, np.ndarray] | None = None) -> MethodOutput:
        ...

    def backend_report(self) -> dict[str, str]:
        """Network name -> one line saying the backend that actually runs it, with the fallback
        and its reason when a fallback happened (``{}`` for a method without networks)."""
        ...
