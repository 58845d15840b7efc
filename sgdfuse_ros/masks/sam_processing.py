"""Pre- and post-processing of the SAM-family models: the encoder input of a frame, SAM's
stability score, and the box non-maximum suppression of the dense mode."""

from __future__ import annotations

import cv2
import numpy as np

_IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
_IMAGENET_STD = np.array([58.395, 57.12, 57.375], np.float32)


def prepare_image(frame: np.ndarray, size: int, normalize: str) -> tuple[np.ndarray, float]:
    """``1 x 3 x size x size`` float32 encoder input and the frame -> input scale.

    ``frame``: RGB ``uint8``, or 2-D (``uint8`` or float ``[0, 1]``; replicated to 3 channels).
    """
    h, w = frame.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if frame.dtype == np.uint8:
        x = frame.astype(np.float32)
    else:
        x = np.clip(frame.astype(np.float32), 0.0, 1.0) * 255.0
    x = cv2.resize(x, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if x.ndim == 2:
        x = np.repeat(x[:, :, None], 3, axis=2)
    if normalize == 'imagenet':
        x = (x - _IMAGENET_MEAN) / _IMAGENET_STD
    else:
        x = x * (1.0 / 255.0)
    out = np.zeros((1, 3, size, size), np.float32)
    out[0, :, :nh, :nw] = x.transpose(2, 0, 1)
    return out, scale


def stability_scores(logits, offset: float):
    """IoU of each mask thresholded at ``+offset`` and at ``-offset`` (SAM's stability score);
    0 for masks empty at ``-offset``."""
    import torch

    inter = (logits > offset).flatten(1).sum(1).float()
    union = (logits > -offset).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (highest score first)."""
    order = np.argsort(-scores)
    keep: list[int] = []
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        x0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
        union = area[i] + area[rest] - inter
        order = rest[inter / np.maximum(union, 1e-9) <= iou]
    return np.asarray(keep, np.int64)


def mask_boxes(binary: np.ndarray) -> np.ndarray:
    """``N x 4`` boxes (x0 y0 x1 y1) of ``N x H x W`` binary masks (zeros for empty masks)."""
    n = binary.shape[0]
    out = np.zeros((n, 4), np.float32)
    rows, cols = binary.any(axis=2), binary.any(axis=1)
    for i in range(n):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if ys.size:
            out[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return out
