"""Which optional parts are installed, and the one-line error that names the extra to install.

The runtime install (``pip install "sgdfuse_ros[runtime]"``) runs the fusion on ONNX Runtime
from the ONNX graphs shipped with the weights and has no PyTorch. What needs PyTorch (training,
ONNX export, the ``torch`` backend, the many-step teacher, the SAM-family models without
exported graphs) says so through :func:`require_torch`. Nothing here imports torch: the checks
look for the package (:func:`importlib.util.find_spec`) without importing it.
"""

from __future__ import annotations

import importlib.util

#: What to run for the PyTorch parts.
TORCH_INSTALL = 'pip install "sgdfuse_ros[torch]"'
#: What to run for the ONNX Runtime parts (the vehicle install).
RUNTIME_INSTALL = 'pip install "sgdfuse_ros[runtime]"'


class TorchRequired(ModuleNotFoundError):
    """Something that needs PyTorch was asked for where it is not installed. An ``ImportError``,
    so that every command that reports a missing package reports this in one line."""

    def __init__(self, what: str, hint: str | None = None):
        super().__init__(f'{what} needs PyTorch, which is not installed here (the runtime '
                         f'install runs without it): {TORCH_INSTALL}'
                         + (f'; {hint}' if hint else ''), name='torch')
        self.what = what


def installed(module: str) -> bool:
    """``module`` can be imported here (looked up, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing, or a blocked module
        return False


def torch_available() -> bool:
    """PyTorch is installed (the ``torch`` extra)."""
    return installed('torch')


def require_torch(what: str, hint: str | None = None) -> None:
    """Raise :class:`TorchRequired` naming ``what`` (and ``hint``, another way) when PyTorch is
    not installed."""
    if not torch_available():
        raise TorchRequired(what, hint)
