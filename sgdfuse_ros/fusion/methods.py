"""The registry of fusion methods, listed explicitly: the classical baselines, ``stage1`` and
``sgdfuse``, each with its factory and an availability check (cheap: its weights exist).

A method fuses a registered pair of luma images (``float32`` in ``[0, 1]``, same 2-D shape) into a
fused luma (see :mod:`.base`). Each is built once by :func:`build_method` (which loads its
weights) and then called per frame. ``build_method('auto')`` picks the best available method
(see :data:`AUTO_ORDER`). Users add their own with :func:`register_method`. Importing this
module does not import torch: the network methods import it when built.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from sgdfuse_ros.core.baselines import BASELINES
from . import sgdfuse, stage1
from .base import FusionMethod, MethodOutput

__all__ = ['AUTO_ORDER', 'BaselineMethod', 'FusionMethod', 'MethodOutput', 'available_methods',
           'build_method', 'method_names', 'register_method', 'resolve_method_name']


class BaselineMethod:
    """A classical baseline of :data:`sgdfuse_ros.core.baselines.BASELINES` as a method."""

    multiple = 1
    uses_masks = False

    def __init__(self, name: str, **unused):
        self.name = name
        self._fn = BASELINES[name]

    def backend_report(self) -> dict[str, str]:
        """No networks: ``{}``."""
        return {}

    def __call__(self, ir: np.ndarray, vis: np.ndarray, masks=None) -> MethodOutput:
        return MethodOutput(self._fn(ir, vis))


MethodFactory = Callable[..., FusionMethod]


def _always() -> bool:
    return True


def _baseline(name: str) -> MethodFactory:
    return lambda **options: BaselineMethod(name, **options)


#: name -> (factory, is_available). ``is_available()`` says whether the method can be built here
#: (its weights exist); it is cheap and loads no model.
_REGISTRY: dict[str, tuple[MethodFactory, Callable[[], bool]]] = {
    **{name: (_baseline(name), _always) for name in BASELINES},
    'stage1': (stage1.Stage1Method, stage1.available),
    'sgdfuse': (sgdfuse.SGDFuseMethod, sgdfuse.available),
}

#: The order in which ``auto`` looks for a method: the full method first.
AUTO_ORDER = ('sgdfuse', 'stage1', 'laplacian')


def register_method(name: str, factory: MethodFactory,
                    available: Callable[[], bool] = _always) -> None:
    """Add (or replace) a method: ``factory(**options)`` builds it, ``available()`` says
    cheaply whether it can be built here."""
    _REGISTRY[name] = (factory, available)


def method_names() -> list[str]:
    return list(_REGISTRY)


def available_methods() -> list[str]:
    return [n for n, (_, avail) in _REGISTRY.items() if avail()]


def resolve_method_name(name: str) -> str:
    """Map ``auto`` to a concrete method; check that a named method exists."""
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
