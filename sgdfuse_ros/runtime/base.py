"""The backend interface: one loaded model, named ``float32`` numpy inputs in, named numpy
outputs out, and the error a backend raises when it cannot load here.

The concrete backends live in :mod:`.torch_backend`, :mod:`.ort` and :mod:`.tensorrt`; the
registry that builds them by name in :mod:`.backends`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

LOG = logging.getLogger('sgdfuse_ros.runtime')


class BackendError(RuntimeError):
    """A backend that cannot be built or run on this machine; the message says why."""

    def __init__(self, backend: str, reason: str):
        super().__init__(f'backend {backend!r} cannot load: {reason}')
        self.backend = backend
        self.reason = reason


class Backend(ABC):
    """One loaded model. Build once, then call :meth:`run` per frame (one thread at a time).

    When :func:`.backends.build_with_fallback` built this backend because the one asked for
    could not load, ``fallback_from`` names that one and ``fallback_reason`` says why.
    """

    #: Registry name (``torch``, ``onnxruntime``, ``tensorrt``).
    name: ClassVar[str] = ''
    #: ``onnx`` when the backend runs an ONNX file, ``module`` when it runs a torch module.
    source: ClassVar[str] = 'onnx'

    input_names: list[str]
    output_names: list[str]
    fallback_from: str | None = None
    fallback_reason: str | None = None

    @abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on named ``float32`` arrays; returns the named outputs (numpy)."""

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        return self.run(inputs)

    def describe(self) -> str:
        """One line on what runs where, with versions and settings (for logs and the bench)."""
        return self.name

    def summary(self) -> str:
        """The backend and where it runs, short: ``onnxruntime (CPUExecutionProvider, 2
        threads)``."""
        return self.name

    def report(self) -> str:
        """:meth:`summary`, plus the fallback and its reason when one happened: what a
        method's ``backend_report()`` shows for this network."""
        line = self.summary()
        if self.fallback_from:
            line += f'; fallback: {self.fallback_from} unavailable: {self.fallback_reason}'
        return line

    def close(self) -> None:
        """Release what the backend holds (GPU memory, sessions)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_inputs(self, inputs: Mapping[str, Any]) -> None:
        missing = [n for n in self.input_names if n not in inputs]
        extra = [n for n in inputs if n not in self.input_names]
        if missing or extra:
            raise ValueError(f"{self.name}: inputs {sorted(inputs)} do not match the model's "
                             f'{self.input_names} (missing {missing}, unexpected {extra})')


def as_float32(x: np.ndarray) -> np.ndarray:
    """A C-contiguous array; float64 becomes float32, other types are kept."""
    x = np.asarray(x)
    if x.dtype == np.float64:
        return np.ascontiguousarray(x, dtype=np.float32)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def reject_unknown(backend: str, unused: Mapping[str, Any]) -> None:
    """A ``TypeError`` naming options a backend's constructor does not know."""
    if unused:
        raise TypeError(f'{backend}: unknown options {sorted(unused)}')


def default_engines_dir() -> Path:
    """Where exported ONNX files and engines go: ``$SGDFUSE_ENGINES``, else ``engines/`` of a
    source checkout, else ``~/.cache/sgdfuse_ros/engines``."""
    env = os.environ.get('SGDFUSE_ENGINES')
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / 'engines'
    if checkout.is_dir() and os.access(checkout, os.W_OK):
        return checkout
    cache = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache'))
    return cache / 'sgdfuse_ros' / 'engines'
