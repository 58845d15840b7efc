"""Registered infrared/visible pairs for training: loading, the validation split, random crops.

A data folder holds ``ir/NAME`` and ``vi/NAME`` (or ``vis/NAME``); a folder without them whose
sub-folders have that layout (``../shared/data/ivif``) stands for all of its sub-folders. Every
image is loaded once into memory (the collection is small): infrared as float32 ``[0, 1]``
(:func:`~sgdfuse_ros.core.imaging.to_float`), visible as its luma
(:func:`~sgdfuse_ros.core.imaging.visible_luma`), or both as RGB for 3-channel networks.

The split is deterministic and depends only on the set's folder name and the sorted pair names:
validation is every ``FMB`` pair and every 5th ``RoadScene`` pair (indices 0, 5, 10, ... in
sorted order), every 5th pair of the medical sets ``MRI_SPECT`` and ``MRI_CT`` (a medical set:
``SPECT/``, ``PET/`` or ``CT/`` beside ``MRI/``, see :func:`~sgdfuse_ros.core.imaging.pair_dirs`)
and every ``MRI_PET`` pair (a test set); everything else trains. :func:`split_pairs` is the one
place that decides it.
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path

import numpy as np

from sgdfuse_ros.core import imaging

#: Set name -> which pairs (by index in sorted order) are held out for validation.
VALIDATION_RULES = {
    'fmb': lambda i: True,
    'roadscene': lambda i: i % 5 == 0,
    'mri_spect': lambda i: i % 5 == 0,
    'mri_ct': lambda i: i % 5 == 0,
    'mri_pet': lambda i: True,
}


@dataclass
class Pair:
    """One loaded pair: float32 arrays ``(C, H, W)`` in ``[0, 1]``."""

    set: str
    name: str
    ir: np.ndarray
    vis: np.ndarray


def expand_data_dirs(dirs: list[str | os.PathLike]) -> list[Path]:
    """Each folder with ``ir/`` as itself; a folder of such folders as its sub-folders."""
    out: list[Path] = []
    for d in map(Path, dirs):
        if imaging.pair_dirs(d):
            out.append(d)
        elif d.is_dir():
            subs = sorted(p for p in d.iterdir() if imaging.pair_dirs(p))
            if not subs:
                raise FileNotFoundError(f'{d}: no ir/ and vi/ folders in it or its sub-folders')
            out.extend(subs)
        else:
            raise FileNotFoundError(f'{d}: not a folder')
    return out


def is_validation(set_name: str, index: int) -> bool:
    """True when pair ``index`` (in sorted order) of set ``set_name`` is held out."""
    rule = VALIDATION_RULES.get(set_name.lower())
    return bool(rule and rule(index))


def split_pairs(folder: str | os.PathLike
                ) -> tuple[list[imaging.PairPaths], list[imaging.PairPaths]]:
    """``(train, validation)`` pair paths of one set folder (see the module docstring)."""
    folder = Path(folder)
    pairs = sorted(imaging.dataset_pairs(folder), key=lambda p: p.name)
    train, val = [], []
    for i, p in enumerate(pairs):
        (val if is_validation(folder.name, i) else train).append(p)
    return train, val


def load_pair(paths: imaging.PairPaths, set_name: str = '', channels: int = 1) -> Pair:
    """Read one pair into float32 ``(C, H, W)`` arrays (infrared gray, visible luma or RGB)."""
    ir_img = imaging.read_image(paths.ir, gray=True)
    vis_img = imaging.read_image(paths.vis)
    if ir_img.shape[:2] != vis_img.shape[:2]:
        raise imaging.ImageError(f'{paths.ir}: size {ir_img.shape[:2]} differs from the visible '
                                 f'image {vis_img.shape[:2]}')
    if ir_img.dtype == np.uint16:
        ir = imaging.ThermalGain(smoothing=0.0)(ir_img)
    else:
        ir = imaging.to_float(ir_img)
    if channels == 1:
        vis = imaging.visible_luma(vis_img)[None]
        ir = ir[None]
    else:
        rgb = vis_img if vis_img.ndim == 3 else np.repeat(vis_img[:, :, None], 3, axis=2)
        vis = imaging.to_float(rgb).transpose(2, 0, 1)
        ir = np.repeat(ir[None], channels, axis=0)
    return Pair(set_name, paths.name, np.ascontiguousarray(ir, dtype=np.float32),
                np.ascontiguousarray(vis, dtype=np.float32))


def load_split(dirs: list[str | os.PathLike], channels: int = 1
               ) -> tuple[list[Pair], list[Pair]]:
    """Load the training and validation pairs of the given data folders into memory."""
    train: list[Pair] = []
    val: list[Pair] = []
    for folder in expand_data_dirs(dirs):
        tr, va = split_pairs(folder)
        train += [load_pair(p, folder.name, channels) for p in tr]
        val += [load_pair(p, folder.name, channels) for p in va]
    return train, val


class CropSampler:
    """Random training batches: a pair (chance proportional to its pixel count, so large
    frames are not under-sampled), a random ``crop x crop`` window, random horizontal and
    vertical flips. Batch ``step`` is a pure function of ``(seed, step)``, so a resumed run sees
    the same batches as an uninterrupted one."""

    def __init__(self, pairs: list[Pair], crop: int = 160, seed: int = 0):
        if not pairs:
            raise ValueError('no training pairs')
        if crop < 8:
            raise ValueError(f'crop must be >= 8, got {crop}')
        self.pairs = [self._fit(p, crop) for p in pairs]
        self.crop = crop
        self.seed = seed
        area = np.array([p.ir.shape[1] * p.ir.shape[2] for p in self.pairs], dtype=np.float64)
        self.prob = area / area.sum()

    @staticmethod
    def _fit(p: Pair, crop: int) -> Pair:
        h, w = p.ir.shape[1:]
        if h >= crop and w >= crop:
            return p
        widths = ((0, 0), (0, max(crop - h, 0)), (0, max(crop - w, 0)))
        return Pair(p.set, p.name, np.pad(p.ir, widths, mode='reflect'),
                    np.pad(p.vis, widths, mode='reflect'))

    def batch(self, step: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ir, vis)`` float32 arrays ``(size, C, crop, crop)`` for training step ``step``."""
        rng = np.random.default_rng([self.seed, step])
        c = self.crop
        irs, viss = [], []
        for idx in rng.choice(len(self.pairs), size=size, p=self.prob):
            p = self.pairs[idx]
            h, w = p.ir.shape[1:]
            y = int(rng.integers(0, h - c + 1))
            x = int(rng.integers(0, w - c + 1))
            a, b = p.ir[:, y:y + c, x:x + c], p.vis[:, y:y + c, x:x + c]
            if rng.random() < 0.5:
                a, b = a[:, :, ::-1], b[:, :, ::-1]
            if rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            irs.append(a)
            viss.append(b)
        return np.ascontiguousarray(np.stack(irs)), np.ascontiguousarray(np.stack(viss))
