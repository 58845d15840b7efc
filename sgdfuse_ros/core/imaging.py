"""Image handling shared by every fusion method: loading, thermal gain, colour, padding, geometry.

Conventions used across the package:

* Thermal (infrared) frames are 2-D arrays: ``uint8``, ``uint16`` (radiometric counts) or float.
  :class:`ThermalGain` maps them to ``float32`` in ``[0, 1]``.
* Visible frames are ``uint8`` RGB (``H x W x 3``) or gray (``H x W``).
* Fusion networks and classical methods work on ``float32`` luma in ``[0, 1]``; colour is restored
  afterwards from the visible frame's Cb/Cr (:func:`rgb_to_ycbcr`, :func:`ycbcr_to_rgb`).
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file or frame and the problem."""


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def read_image(path: str | os.PathLike, *, gray: bool | None = None) -> np.ndarray:
    """Read an 8- or 16-bit image file.

    Returns ``H x W`` for gray images (including gray images stored with three equal channels)
    and ``H x W x 3`` RGB for colour. ``gray=True`` forces one channel (colour converted to luma),
    ``gray=False`` forces RGB. The dtype (``uint8`` or ``uint16``) is kept.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f'{path}: no such file')
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ImageError(f'{path}: cannot decode image (unreadable or not an image)')
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageError(f'{path}: unsupported bit depth {img.dtype} (expected 8- or 16-bit)')
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        elif img.shape[2] == 1:
            img = img[:, :, 0]
        elif img.shape[2] != 3:
            raise ImageError(f'{path}: unsupported channel count {img.shape[2]}')
    if img.ndim == 3:
        img = np.ascontiguousarray(img[:, :, ::-1])  # BGR -> RGB
        if is_gray_rgb(img):
            img = np.ascontiguousarray(img[:, :, 0])
    if gray is True and img.ndim == 3:
        img = rgb_to_gray(img)
    elif gray is False and img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img


def is_gray_rgb(img: np.ndarray, tol: int = 2) -> bool:
    """True when a 3-channel image has (nearly) identical channels, as JPEG-stored gray does."""
    if img.ndim != 3 or img.shape[2] != 3:
        return False
    a = img[:, :, 0].astype(np.int32)
    return bool(np.abs(a - img[:, :, 1]).max() <= tol and np.abs(a - img[:, :, 2]).max() <= tol)


def encode_image(path: str | os.PathLike, img: np.ndarray) -> bytes:
    """``uint8``/``uint16`` gray or RGB encoded in the format of ``path``'s suffix (PNG when
    it has none)."""
    path = Path(path)
    out = img[:, :, ::-1] if img.ndim == 3 else img
    ok, buf = cv2.imencode(path.suffix or '.png', np.ascontiguousarray(out))
    if not ok:
        raise ImageError(f'{path}: cannot encode image')
    return buf.tobytes()


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write ``uint8``/``uint16`` gray or RGB; creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(encode_image(path, img))


def list_images(folder: str | os.PathLike) -> dict[str, Path]:
    """Map file stem -> path for the images in a folder (non-recursive, sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f'{folder}: not a folder')
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}


@dataclass(frozen=True)
class PairPaths:
    name: str
    ir: Path
    vis: Path


def match_pairs(ir_dir: str | os.PathLike, vis_dir: str | os.PathLike
                ) -> tuple[list[PairPaths], list[str]]:
    """Pair the images of two folders by file stem.

    Returns the pairs and a list of problems (one line per unmatched name).
    """
    irs, viss = list_images(ir_dir), list_images(vis_dir)
    pairs = [PairPaths(n, irs[n], viss[n]) for n in irs if n in viss]
    problems = [f'{irs[n]}: no visible image named {n}.* in {vis_dir}' for n in irs
                if n not in viss]
    problems += [f'{viss[n]}: no infrared image named {n}.* in {ir_dir}' for n in viss
                 if n not in irs]
    return pairs, problems


#: Folder names of a medical set's second image (the functional or CT image, in the infrared
#: role); the structural image is in ``MRI/``.
MEDICAL_SECOND_DIRS = ('PET', 'SPECT', 'CT')


def pair_dirs(root: str | os.PathLike) -> tuple[Path, Path] | None:
    """``(first, second)`` image folders of a data set, or None when ``root`` has neither
    layout: ``ir/`` + ``vi/`` (or ``vis/``), or a medical set's ``PET/``, ``SPECT/`` or ``CT/``
    (first role) + ``MRI/`` (second role)."""
    root = Path(root)
    if (root / 'ir').is_dir():
        return root / 'ir', root / 'vi' if (root / 'vi').is_dir() else root / 'vis'
    if (root / 'MRI').is_dir():
        for name in MEDICAL_SECOND_DIRS:
            if (root / name).is_dir():
                return root / name, root / 'MRI'
    return None


def dataset_pairs(root: str | os.PathLike) -> list[PairPaths]:
    """Pairs of a data set laid out as ``root/ir/NAME`` + ``root/vi/NAME``, or a medical set
    (``root/SPECT/NAME`` + ``root/MRI/NAME``; see :func:`pair_dirs`)."""
    root = Path(root)
    dirs = pair_dirs(root) or (root / 'ir', root / 'vi')
    pairs, _ = match_pairs(*dirs)
    return pairs


# --------------------------------------------------------------------------------------------
# Type conversions
# --------------------------------------------------------------------------------------------

def to_float(img: np.ndarray) -> np.ndarray:
    """``uint8``/``uint16``/float image -> ``float32`` in ``[0, 1]`` (by the dtype's range)."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) * (1.0 / 255.0)
    if img.dtype == np.uint16:
        return img.astype(np.float32) * (1.0 / 65535.0)
    out = np.asarray(img, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise ImageError('image holds NaN or infinite values')
    return out


def to_uint8(img: np.ndarray) -> np.ndarray:
    """``float`` in ``[0, 1]`` -> ``uint8`` with rounding and clipping."""
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB -> luma (BT.601), keeping the dtype."""
    if rgb.dtype == np.uint8:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    y, _, _ = rgb_to_ycbcr(to_float(rgb))
    return y


def rgb_to_ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB (``uint8`` or float ``[0, 1]``) -> ``(Y, Cb, Cr)``, float32 in ``[0, 1]`` (BT.601 full
    range, chroma centred on 0.5: ``Y = 0.299 R + 0.587 G + 0.114 B``,
    ``Cb = 0.564 (B - Y) + 0.5``, ``Cr = 0.713 (R - Y) + 0.5``; OpenCV's float conversion,
    3-4x faster than the same arithmetic in numpy)."""
    x = rgb if rgb.dtype == np.float32 else to_float(rgb)
    y, cr, cb = cv2.split(cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2YCrCb))
    return y, cb, cr


def ycbcr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`; returns float32 RGB clipped to ``[0, 1]``."""
    planes = [np.asarray(a, np.float32) for a in (y, cr, cb)]
    rgb = cv2.cvtColor(cv2.merge(planes), cv2.COLOR_YCrCb2RGB)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def merge_luma(fused_y: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Put a fused luma (float ``[0, 1]``) back into the colour of the visible frame.

    Returns ``uint8`` RGB when the visible frame has colour, else ``uint8`` gray.
    """
    if visible.ndim == 2:
        return to_uint8(fused_y)
    _, cb, cr = rgb_to_ycbcr(visible)
    return to_uint8(ycbcr_to_rgb(fused_y, cb, cr))


#: BT.601 luma weights of R, G and B.
BT601 = (0.299, 0.587, 0.114)


def planar_luma(x: np.ndarray) -> np.ndarray:
    """Luma ``H x W`` of a planar ``(C, H, W)`` image with C = 1 (itself) or 3 (RGB, BT.601):
    the networks' channel-first outputs, where :func:`rgb_to_gray` takes ``H x W x 3``."""
    if x.shape[0] == 1:
        return x[0]
    r, g, b = BT601
    return r * x[0] + g * x[1] + b * x[2]


#: The luma row of :func:`rgb_to_ycbcr` for 8-bit RGB, scaled to ``[0, 1]``.
_LUMA_8BIT = np.array([[c / 255.0 for c in (0.299, 0.587, 0.114)]], np.float32)


def visible_luma(visible: np.ndarray) -> np.ndarray:
    """Luma of a visible frame (gray or RGB) as float32 ``[0, 1]``: the ``Y`` of
    :func:`rgb_to_ycbcr` (for 8-bit RGB in two passes, not the five of the whole conversion)."""
    if visible.ndim == 2:
        return to_float(visible)
    if visible.dtype == np.uint8 and visible.shape[2] == 3:
        return cv2.transform(visible.astype(np.float32), _LUMA_8BIT)
    return rgb_to_ycbcr(visible)[0]


# --------------------------------------------------------------------------------------------
# Thermal gain
# --------------------------------------------------------------------------------------------

class ThermalGain:
    """Map raw thermal counts (``uint8``, ``uint16`` or float) to ``float32`` in ``[0, 1]``.

    The gain is linear between a low and a high bound taken at the ``low_percentile`` and
    ``high_percentile`` of the frame's values. For a stream (``smoothing > 0``) the bounds are
    an exponential moving average over frames, ``b_t = s * b_{t-1} + (1 - s) * p_t``, so the
    image does not flicker as hot objects enter and leave the view (per-frame min-max would).
    8-bit input is passed through unchanged by default (``gain_8bit=False``): it is already
    display-referred.

    Implausible jumps are held. A frame whose percentile bounds leave the current ones by more
    than ``jump_limit`` spans (``H - L``) on either side, or whose span exceeds ``jump_limit``
    spans, does not move the gain: it is mapped with the bounds in hand and counted in
    :attr:`held`. One corrupt frame (random bytes, a burst of 1e30 pixels) then leaves the
    stream as it was. A real change of scene looks the same for one frame but persists: once
    ``confirm`` frames in a row jump consistently (within ``jump_limit`` spans of the first of
    them), the held frames are replayed into the average, so from that frame on the bounds are
    exactly those of the plain average, which adapts at its usual pace.

    Percentiles are computed on a strided subsample (``sample_stride``) to stay cheap at video
    rate, in float64 (float frames may hold values near the float32 limit).
    """

    def __init__(self, *, low_percentile: float = 1.0, high_percentile: float = 99.0,
                 smoothing: float = 0.9, min_span: float = 64.0, gain_8bit: bool = False,
                 sample_stride: int = 4, jump_limit: float = 4.0, confirm: int = 3):
        if not 0.0 <= low_percentile < high_percentile <= 100.0:
            raise ValueError('need 0 <= low_percentile < high_percentile <= 100, got '
                             f'{low_percentile}, {high_percentile}')
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f'smoothing must be in [0, 1), got {smoothing}')
        if min_span <= 0:
            raise ValueError(f'min_span must be positive, got {min_span}')
        if sample_stride < 1:
            raise ValueError(f'sample_stride must be >= 1, got {sample_stride}')
        if not jump_limit > 0:
            raise ValueError(f'jump_limit must be positive, got {jump_limit}')
        if confirm < 1:
            raise ValueError(f'confirm must be >= 1, got {confirm}')
        self.low_percentile = float(low_percentile)
        self.high_percentile = float(high_percentile)
        self.smoothing = float(smoothing)
        self.min_span = float(min_span)
        self.gain_8bit = bool(gain_8bit)
        self.sample_stride = int(sample_stride)
        self.jump_limit = float(jump_limit)
        self.confirm = int(confirm)
        #: Frames mapped with the bounds in hand because their statistics jumped implausibly.
        self.held = 0
        self._bounds: tuple[float, float] | None = None
        self._pending: list[tuple[float, float]] = []

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The current (smoothed) low and high bounds in input units, or None before a frame."""
        return self._bounds

    def reset(self) -> None:
        self._bounds = None
        self._pending = []

    def _jumps(self, new: tuple[float, float], ref: tuple[float, float]) -> bool:
        """Whether bounds ``new`` leave ``ref`` implausibly (see the class docstring)."""
        span = ref[1] - ref[0]
        reach = self.jump_limit * span
        return (new[0] < ref[0] - reach or new[1] > ref[1] + reach
                or new[1] - new[0] > reach or not np.isfinite(new[1] - new[0]))

    def _update(self, new: tuple[float, float]) -> None:
        if self._bounds is None or self.smoothing == 0:
            self._bounds = new
            return
        s0 = self.smoothing
        self._bounds = (s0 * self._bounds[0] + (1 - s0) * new[0],
                        s0 * self._bounds[1] + (1 - s0) * new[1])

    def __call__(self, thermal: np.ndarray) -> np.ndarray:
        if thermal.ndim != 2:
            raise ImageError(f'thermal frame must be 2-D, got shape {thermal.shape}')
        if thermal.size == 0:
            raise ImageError('thermal frame is empty')
        if thermal.dtype == np.uint8 and not self.gain_8bit:
            return to_float(thermal)
        x = thermal if thermal.dtype != np.float64 else thermal.astype(np.float32)
        if x.dtype.kind == 'f' and not np.all(np.isfinite(x)):
            raise ImageError('thermal frame holds NaN or infinite values')
        s = self.sample_stride
        sample = x[::s, ::s].astype(np.float64)
        lo, hi = (float(v) for v in np.percentile(sample, [self.low_percentile,
                                                           self.high_percentile]))
        min_span = self.min_span if x.dtype == np.uint16 else self.min_span / 65535.0 * (
            255.0 if x.dtype == np.uint8 else 1.0)
        if hi - lo < min_span:  # a flat scene: do not amplify noise
            mid = 0.5 * (lo + hi)
            lo, hi = mid - 0.5 * min_span, mid + 0.5 * min_span
        self._observe((lo, hi))
        lo, hi = self._bounds
        with np.errstate(over='ignore'):  # values near the float32 limit: clipped below
            out = (x.astype(np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
        return np.clip(out, 0.0, 1.0, out=out)

    def _observe(self, new: tuple[float, float]) -> None:
        """Fold one frame's bounds into the average, or hold them (class docstring)."""
        if self._bounds is None or self.smoothing == 0 or not self._jumps(new, self._bounds):
            self._pending = []
            self._update(new)
            return
        if self._pending and self._jumps(new, self._pending[0]):
            self._pending = []  # not the same new scene as the frames held before
        self._pending.append(new)
        if len(self._pending) < self.confirm:
            self.held += 1
            return
        for bounds in self._pending:  # a real change of scene: as if never held
            self._update(bounds)
        self._pending = []


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------

def pad_to_multiple(img: np.ndarray, multiple: int, mode: str = 'reflect'
                    ) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the bottom and right of ``img`` (``H x W [x C]``) so both sides are multiples.

    Returns the padded image and the original ``(H, W)`` for :func:`crop_to`.
    """
    if multiple < 1:
        raise ValueError(f'multiple must be >= 1, got {multiple}')
    h, w = img.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return img, (h, w)
    widths = [(0, ph), (0, pw)] + [(0, 0)] * (img.ndim - 2)
    if mode == 'reflect' and (ph >= h or pw >= w):
        mode = 'edge'  # reflect needs the pad to be smaller than the image
    return np.pad(img, widths, mode=mode), (h, w)


def crop_to(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crop the top-left ``(H, W)`` of an image (undoes :func:`pad_to_multiple`)."""
    h, w = size
    return img[:h, :w]


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``(W, H)``; area interpolation when shrinking, linear when enlarging."""
    w, h = size
    if img.shape[1] == w and img.shape[0] == h:
        return img
    shrink = w * h < img.shape[0] * img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def parse_size(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """A frame size ``(W, H)`` from ``'640x480'``; a ``(W, H)`` tuple is checked and passed
    through, None stays None. Raises ``ValueError`` naming the expected form."""
    if text is None:
        return None
    try:
        if isinstance(text, (tuple, list)):
            w, h = (int(v) for v in text)
        else:
            w, h = (int(v) for v in str(text).lower().split('x'))
    except (TypeError, ValueError):
        raise ValueError(f'a size is WIDTHxHEIGHT, e.g. 640x480; got {text!r}') from None
    if w <= 0 or h <= 0:
        raise ValueError(f'a size must be positive, got {text!r}')
    return w, h


def parse_homography(values) -> np.ndarray | None:
    """A 3x3 homography from 9 numbers (row-major), a 3x3 nested list, or None/empty."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return None
    if arr.size != 9:
        raise ValueError(f'a homography needs 9 values (3x3, row-major), got {arr.size}')
    h = arr.reshape(3, 3)
    if not np.all(np.isfinite(h)) or abs(np.linalg.det(h)) < 1e-12:
        raise ValueError('the homography is singular or not finite')
    return h


def warp_thermal(thermal: np.ndarray, homography: np.ndarray, size: tuple[int, int]
                 ) -> np.ndarray:
    """Register a thermal frame into the visible frame.

    ``homography`` maps thermal pixel coordinates to visible pixel coordinates; ``size`` is the
    visible frame's ``(W, H)``. Pixels with no thermal data are filled by edge replication so the
    fusion does not see a black border as a cold object.
    """
    return cv2.warpPerspective(thermal, homography, size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)


def align_pair(thermal: np.ndarray, visible: np.ndarray, homography: np.ndarray | None = None,
               *, name: str = 'pair') -> np.ndarray:
    """Bring a thermal frame onto the visible frame's pixel grid.

    With a homography the thermal frame is warped; without one the sizes must already agree.
    """
    if thermal.ndim != 2:
        raise ImageError(f'{name}: thermal frame must be single-channel, got shape '
                         f'{thermal.shape}')
    if visible.ndim not in (2, 3) or (visible.ndim == 3 and visible.shape[2] != 3):
        raise ImageError(f'{name}: visible frame must be gray or RGB, got shape {visible.shape}')
    if min(thermal.shape[:2]) == 0 or min(visible.shape[:2]) == 0:
        raise ImageError(f'{name}: empty frame (thermal {thermal.shape}, visible {visible.shape})')
    vh, vw = visible.shape[:2]
    if homography is not None:
        return warp_thermal(thermal, homography, (vw, vh))
    if thermal.shape[:2] != (vh, vw):
        raise ImageError(
            f'{name}: size mismatch, thermal {thermal.shape[1]}x{thermal.shape[0]} vs visible '
            f'{vw}x{vh}; set a registration homography (or resize the inputs)')
    return thermal
