"""How the SAM-family networks export to ONNX: the image encoder and the box-prompt decoder.

The provider exports them on first use (:meth:`.sam.SamFamilyProvider.prepare`) and
``sgdfuse export --models masks`` ahead of time, with the same specs and so the same file names:
``mask_encoder_<model>_<size>`` and ``mask_decoder_<model>_<size>_b<boxes>``. Ahead of time the
parity check runs on a real sample pair (``real=True``); on first use on random inputs.
torch is imported by the functions, not at module import.
"""

from __future__ import annotations

import numpy as np

from sgdfuse_ros.models.export_spec import ExportSpec
from .sam_models import SamParts
from .sam_processing import prepare_image

#: Box prompts of the decoder's real-pair check (fractions of the input side, ``x0 y0 x1 y1``);
#: repeated when the decoder takes more.
CHECK_BOXES = ((0.1, 0.2, 0.5, 0.7), (0.3, 0.1, 0.9, 0.6), (0.0, 0.0, 1.0, 1.0),
               (0.4, 0.4, 0.6, 0.8))


def _real_image(parts: SamParts):
    import torch

    def real(ir, vis, h, w):
        x, _ = prepare_image(ir, parts.input_size, parts.normalize)
        return (torch.from_numpy(np.ascontiguousarray(x)),)

    return real


def encoder_spec(parts: SamParts, *, real: bool = False) -> ExportSpec:
    """The image encoder: ``image`` (``1 x 3 x S x S``) -> ``embedding``; with ``real`` it is
    checked on the thermal frame of a sample pair."""
    import torch

    size = parts.input_size

    def make(h, w):
        return (torch.rand(1, 3, size, size),)

    return ExportSpec(f'mask_encoder_{parts.kind}_{size}', ('image',), ('embedding',), make,
                      _real_image(parts) if real else None, dynamic_axes=None, multiple=size,
                      size=(size, size), tolerance=1e-2, passes=(),
                      meta={'model': parts.kind, 'input_size': size, 'grid': parts.grid})


def decoder_spec(parts: SamParts, boxes: int, *, real: bool = False) -> ExportSpec:
    """The box decoder of :func:`.sam_models.box_decoder_module` (fixed shapes: ``boxes``
    prompts per call); with ``real`` it is checked on the encoder's embedding of a sample
    pair's thermal frame and :data:`CHECK_BOXES`."""
    import torch

    size, g = parts.input_size, parts.grid

    def make(h, w):
        xy = torch.rand(boxes, 2) * size * 0.5
        return (torch.randn(1, 256, g, g), torch.cat([xy, xy + size * 0.4], dim=1))

    real_inputs = None
    if real:
        image = _real_image(parts)
        check = torch.tensor(CHECK_BOXES * (boxes // len(CHECK_BOXES) + 1))[:boxes] * size

        def real_inputs(ir, vis, h, w):
            with torch.inference_mode():
                emb = parts.encoder(image(ir, vis, h, w)[0])
            return (emb, check)

    return ExportSpec(f'mask_decoder_{parts.kind}_{size}_b{boxes}', ('embedding', 'boxes'),
                      ('logits', 'iou'), make, real_inputs, dynamic_axes=None, multiple=size,
                      size=(size, size), tolerance=1e-2, passes=(),
                      meta={'model': parts.kind, 'input_size': size, 'boxes': boxes})
