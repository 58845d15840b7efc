"""Medical image fusion: a structural MRI with a functional (PET, SPECT) or CT image.

The task ``medical`` of :class:`~sgdfuse_ros.fusion.pipeline.FusionPipeline` runs the same
methods as infrared-visible fusion (``ivif``) with the roles and colour handling of the medical
literature (CDDFuse, EMFusion, U2Fusion):

- the functional or CT image takes the first (infrared) role, the MRI the second (visible);
- the networks fuse the functional image's luma (Y of BT.601 YCbCr, full range) with the MRI;
  a pseudo-colour functional image gets its own chroma (Cb, Cr) back around the fused luma, so
  the output keeps its colour map; gray inputs give gray output, and ``output='mono'`` gray
  output always;
- there is no thermal gain: both images are 8-bit and display-referred, and the fused luma is
  scored against their 8-bit luma.

The checks here refuse pairs that belong to the other task, each with one line that says
what to do: a 16-bit or floating-point first image (a radiometric thermal frame), a colour
second image (a camera frame, or the roles swapped). Sizes are left to the pipeline, which
gives the same errors for both tasks.

:func:`method_options` selects the medical weights through the options the methods already
take (``weights``, ``stage1_weights``), when they are installed and the caller named none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.imaging import ImageError
from sgdfuse_ros.models.weights import (MEDICAL_STAGE1_WEIGHTS, MEDICAL_STUDENT_WEIGHTS,
                                        MEDICAL_TEACHER_WEIGHTS)
from .methods import resolve_method_name

__all__ = ['TASKS', 'MedicalPair', 'check_task', 'method_options', 'restore_colour',
           'split_pair']

#: The pipeline's tasks: infrared-visible fusion (the default) and medical fusion.
TASKS = ('ivif', 'medical')


def check_task(task: str) -> str:
    """``task`` when it is one of :data:`TASKS`; a ``ValueError`` naming them otherwise."""
    if task not in TASKS:
        raise ValueError(f'task must be one of {TASKS}, got {task!r}')
    return task


class MedicalPair:
    """A medical pair in the form the fusion pipeline takes: ``first`` the functional or CT
    luma and ``second`` the MRI, both ``uint8`` 2-D; ``colour`` the functional image as RGB
    when it has colour (its chroma goes back around the fused luma), else None."""

    __slots__ = ('first', 'second', 'colour')

    def __init__(self, first: np.ndarray, second: np.ndarray, colour: np.ndarray | None):
        self.first, self.second, self.colour = first, second, colour


def _plane(img: np.ndarray, role: str, name: str) -> tuple[np.ndarray, bool]:
    """An 8-bit image as ``uint8`` 2-D (its luma) and whether it has colour."""
    if img.dtype == np.uint16:
        raise ImageError(
            f'{name}: the {role} is 16-bit: a radiometric thermal frame, not a medical image '
            '(8-bit PET, SPECT, CT or MRI); fuse thermal and camera frames with task ivif '
            '(--task ivif)')
    if img.dtype != np.uint8:
        raise ImageError(f'{name}: the {role} must be an 8-bit image for task medical, got '
                         f'{img.dtype} (a thermal frame? use task ivif, --task ivif)')
    if img.ndim == 2:
        return img, False
    if img.ndim != 3 or img.shape[2] != 3:
        raise ImageError(f'{name}: the {role} must be gray or RGB, got shape {img.shape}')
    if imaging.is_gray_rgb(img):
        return np.ascontiguousarray(img[:, :, 0]), False
    return imaging.rgb_to_gray(img), True


def split_pair(first: np.ndarray, second: np.ndarray, *, name: str = 'pair') -> MedicalPair:
    """Check a medical pair and split it for the pipeline (see :class:`MedicalPair`).

    ``first``: the functional (PET, SPECT; gray or pseudo-colour RGB) or CT image;
    ``second``: the MRI (gray, or RGB with equal channels). Raises
    :class:`~sgdfuse_ros.core.imaging.ImageError` with one line for a pair of the wrong task.
    """
    first_y, first_colour = _plane(first, 'functional or CT image (first role, --ir)', name)
    second_y, second_colour = _plane(second, 'MRI (second role, --vis)', name)
    if second_colour:
        hint = (' The roles look swapped: the colour image goes first (--ir), the MRI second '
                '(--vis).' if not first_colour else
                ' Two colour images are a camera pair: fuse them with task ivif (--task ivif).')
        raise ImageError(f'{name}: the MRI (second role, --vis) has colour; task medical takes '
                         f'a gray MRI.{hint}')
    return MedicalPair(first_y, second_y, first if first_colour else None)


def restore_colour(fused: np.ndarray, pair: MedicalPair, output: str = 'color',
                   homography: np.ndarray | None = None) -> np.ndarray:
    """The fused luma (float ``[0, 1]``) as the output image: in the functional image's
    colour map (its chroma around the fused luma) when it has colour and ``output`` is
    ``color``, else gray ``uint8``. ``homography``: the one that registered the functional
    image into the MRI's frame (its colour follows it)."""
    if pair.colour is None or output != 'color':
        return imaging.to_uint8(fused)
    colour = pair.colour
    if homography is not None:
        colour = imaging.warp_thermal(colour, homography, (fused.shape[1], fused.shape[0]))
    return imaging.merge_luma(fused, colour)


def _installed(path: Path) -> str | None:
    return str(path) if path.is_file() else None


def method_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for ``method`` with the medical weights filled in where the caller gave
    none and they are installed: ``weights`` of ``stage1``; ``stage1_weights`` and
    ``weights`` (the student, or the teacher with ``teacher=True``) of ``sgdfuse``. Other
    methods (the baselines, one registered by the user) get ``options`` unchanged."""
    name = resolve_method_name(method)
    out = dict(options)
    if name == 'stage1':
        defaults = {'weights': MEDICAL_STAGE1_WEIGHTS}
    elif name == 'sgdfuse':
        refiner = MEDICAL_TEACHER_WEIGHTS if out.get('teacher') else MEDICAL_STUDENT_WEIGHTS
        defaults = {'stage1_weights': MEDICAL_STAGE1_WEIGHTS, 'weights': refiner}
    else:
        return out
    for key, path in defaults.items():
        if out.get(key) is None and _installed(path):
            out[key] = str(path)
    return out
