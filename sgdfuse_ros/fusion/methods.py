"""Registry of fusion methods.

A method fuses a registered pair of luma images (``float32`` in ``[0, 1]``, same 2-D shape) into a
fused luma. Each method is built once by a factory (which loads its weights) and then called per
frame. The classical baselines are always available; network methods register themselves when
their weights exist.

``build_method('auto')`` picks the best available method (see :data:`AUTO_ORDER`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from sgdfuse_ros.core.baselines import BASELINES


@dataclass
class MethodOutput:
    """What one fusion call returns: the fused luma, and optionally the intermediate results."""

    fused: np.ndarray
    f1: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)


class FusionMethod(Protocol):
    """A built fusion method."""

    name: str
    #: Side lengths must be multiples of this; the pipeline pads and crops.
    multiple: int
    #: True when the method consumes the semantic masks (``masks`` argument).
    uses_masks: bool

    def __call__(self, ir: np.ndarray, vis: np.ndarray,
                 masks: tuple[np.ndarray, np.ndarray] | None = None) -> MethodOutput:
        ...


class _Baseline:
    multiple = 1
    uses_masks = False

    def __init__(self, name: str):
        self.name = name
        self._fn = BASELINES[name]

    def __call__(self, ir, vis, masks=None) -> MethodOutput:
        return MethodOutput(self._fn(ir, vis))


MethodFactory = Callable[..., FusionMethod]
#: name -> (factory, is_available). ``is_available()`` says whether the method can be built here
#: (its weights exist); it must be cheap and must not load models.
_REGISTRY: dict[str, tuple[MethodFactory, Callable[[], bool]]] = {}

#: The order in which ``auto`` looks for a method: the full method first.
AUTO_ORDER = ('sgdfuse', 'stage1', 'laplacian')


def register_method(name: str, factory: MethodFactory,
                    available: Callable[[], bool] = lambda: True) -> None:
    _REGISTRY[name] = (factory, available)


for _name in BASELINES:
    register_method(_name, lambda _n=_name, **_: _Baseline(_n))


def _load_plugins() -> None:
    # Network methods live in modules that import torch; register them on first use.
    from . import networks  # noqa: F401


def method_names() -> list[str]:
    _load_plugins()
    return list(_REGISTRY)


def available_methods() -> list[str]:
    _load_plugins()
    return [n for n, (_, avail) in _REGISTRY.items() if avail()]


def resolve_method_name(name: str) -> str:
    """Map ``auto`` to a concrete method; check that a named method exists."""
    _load_plugins()
    if name == 'auto':
        for cand in AUTO_ORDER:
            if cand in _REGISTRY and _REGISTRY[cand][1]():
                return cand
        return 'laplacian'
    if name not in _REGISTRY:
        raise ValueError(f'unknown fusion method {name!r}; choose from auto, '
                         + ', '.join(_REGISTRY))
    return name


def build_method(name: str = 'auto', **options) -> FusionMethod:
    """Build a fusion method by name; options go to its factory (weights, backend, steps...)."""
    name = resolve_method_name(name)
    factory, available = _REGISTRY[name]
    if not available() and not options.get('weights'):
        raise FileNotFoundError(f'fusion method {name!r} has no weights installed; pass weights=')
    return factory(**options)
