"""The refiner's training data: the pairs of the split with their F1 and masks, computed once
and cached on disk (``cache_dir``: ``f1/<stage-1 sha12>/<set>/<name>.npy``,
``masks/<provider>/<set>/<name>.npz``), and random crops of ``[IR, F1, masks (, target)]`` + VIS
(see :mod:`.refiner` for how they are used)."""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
import time
from typing import Callable

import numpy as np
import torch

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.hashing import sha256_file
from sgdfuse_ros.models.run import fuse_arrays
from .data import CropSampler, Pair, expand_data_dirs, load_pair, split_pairs
from .refiner_config import RefinerTrainConfig

LogFn = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# Data: pairs with their cached F1 and masks
# ----------------------------------------------------------------------------------------------

@dataclass
class RefinerPair:
    """One pair with its F1, masks and (distillation) teacher sample: ``(C, H, W)`` float32
    (masks ``(2, H, W)``)."""

    set: str
    name: str
    ir: np.ndarray
    vis: np.ndarray
    f1: np.ndarray
    masks: np.ndarray
    paths: imaging.PairPaths | None = None
    target: np.ndarray | None = None


def _save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp.npy')
    np.save(tmp, arr)
    os.replace(tmp, path)


def stage1_weights_path(cfg: RefinerTrainConfig) -> Path:
    if cfg.stage1:
        return Path(cfg.stage1)
    from sgdfuse_ros.models.weights import STAGE1_WEIGHTS
    return STAGE1_WEIGHTS


class PairCache:
    """F1 and masks of pairs, computed on first use and cached on disk (see the module
    docstring). Models and providers are built lazily, only when something is missing."""

    def __init__(self, cache_dir: str | os.PathLike, stage1: str | os.PathLike,
                 provider: str, channels: int = 1, log: LogFn = print):
        self.root = Path(cache_dir)
        self.stage1_path = Path(stage1)
        if not self.stage1_path.is_file():
            raise FileNotFoundError(f'{self.stage1_path}: no stage-1 weights (train stage 1 '
                                    'first or pass --stage1)')
        self.stage1_sha = sha256_file(self.stage1_path)
        self.provider_name = provider
        self.channels = channels
        self.log = log
        self._stage1 = None
        self._provider = None

    def f1_path(self, p: Pair) -> Path:
        return self.root / 'f1' / self.stage1_sha[:12] / p.set / f'{p.name}.npy'

    def mask_path(self, p: Pair) -> Path:
        return self.root / 'masks' / self.provider_name / p.set / f'{p.name}.npz'

    def f1(self, p: Pair) -> np.ndarray:
        path = self.f1_path(p)
        if path.is_file():
            return np.load(path).astype(np.float32)
        if self._stage1 is None:
            from sgdfuse_ros.models.stage1 import load_stage1
            self._stage1, _ = load_stage1(self.stage1_path, map_location='cpu')
        with torch.inference_mode():
            f1 = fuse_arrays(self._stage1, p.ir, p.vis).astype(np.float32)
        _save_npy_atomic(path, f1.astype(np.float16))
        return f1.astype(np.float16).astype(np.float32)

    def masks(self, p: Pair, paths: imaging.PairPaths) -> np.ndarray:
        path = self.mask_path(p)
        if path.is_file():
            with np.load(path) as z:
                return np.stack([z['ir'], z['vis']]).astype(np.float32) / 255.0
        if self._provider is None:
            from sgdfuse_ros.masks import build_provider
            self._provider = build_provider(self.provider_name)
        vis_img = imaging.read_image(paths.vis)
        if vis_img.dtype != np.uint8:
            vis_img = imaging.to_uint8(imaging.to_float(vis_img))
        ir = p.ir[0] if p.ir.shape[0] == 1 else p.ir.mean(0)
        res = self._provider(ir, vis_img)
        m8 = [imaging.to_uint8(res.ir), imaging.to_uint8(res.vis)]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + '.tmp.npz')
        np.savez_compressed(tmp, ir=m8[0], vis=m8[1])
        os.replace(tmp, path)
        return np.stack(m8).astype(np.float32) / 255.0


def load_refiner_split(cfg: RefinerTrainConfig, log: LogFn = print
                       ) -> tuple[list[RefinerPair], list[RefinerPair]]:
    """Training and validation pairs with F1 and masks (computed and cached on first use)."""
    cache = PairCache(cfg.cache_dir, stage1_weights_path(cfg), cfg.mask_provider, cfg.channels,
                      log)
    train: list[RefinerPair] = []
    val: list[RefinerPair] = []
    t0 = time.perf_counter()
    for folder in expand_data_dirs(cfg.data):
        tr, va = split_pairs(folder)
        for group, out in ((tr, train), (va, val)):
            for paths in group:
                p = load_pair(paths, folder.name, cfg.channels)
                out.append(RefinerPair(p.set, p.name, p.ir, p.vis, cache.f1(p),
                                       cache.masks(p, paths), paths))
    names = {(p.set, p.name) for p in train}
    leaked = [f'{p.set}/{p.name}' for p in val if (p.set, p.name) in names]
    if leaked:  # cannot happen with split_pairs; a guard against future edits
        raise RuntimeError(f'validation pairs in the training set: {leaked}')
    log(f'refiner: {len(train)} training and {len(val)} validation pairs with F1 (stage 1 '
        f'{cache.stage1_sha[:12]}) and {cfg.mask_provider} masks ({time.perf_counter() - t0:.0f}'
        f' s, cache {cfg.cache_dir})')
    return train, val


def crop_sampler(pairs: list[RefinerPair], crop: int, seed: int,
                 with_target: bool = False) -> CropSampler:
    """A :class:`.data.CropSampler` over ``[IR, F1, masks (, target)]`` + VIS stacks."""
    stacked = []
    for p in pairs:
        parts = [p.ir, p.f1, p.masks] + ([p.target] if with_target else [])
        stacked.append(Pair(p.set, p.name, np.ascontiguousarray(np.concatenate(parts)), p.vis))
    return CropSampler(stacked, crop, seed)


def split_batch(stack: np.ndarray, vis: np.ndarray, c: int, dev: torch.device):
    t = torch.from_numpy(stack).to(dev)
    out = {'ir': t[:, :c], 'f1': t[:, c:2 * c], 'masks': t[:, 2 * c:2 * c + 2],
           'vis': torch.from_numpy(vis).to(dev)}
    if t.shape[1] > 2 * c + 2:
        out['target'] = t[:, 2 * c + 2:]
    return out
