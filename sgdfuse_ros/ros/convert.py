"""sensor_msgs/Image and sensor_msgs/CompressedImage <-> numpy, with the checks a live node needs.

Pure functions: they read and build message objects but need no ROS graph. Every problem with a
message (unknown encoding, zero or inconsistent sizes, a ``step`` too small for the width, data
shorter or longer than ``step * height``, undecodable compressed data) raises
:class:`~sgdfuse_ros.core.imaging.ImageError` (a ``ValueError``) whose text names the field and
the numbers, so a throttled log line says what a camera driver got wrong.

Non-finite pixels (NaN, infinite) of a float image: :func:`image_to_numpy` rejects them; a
thermal frame follows a policy (:data:`NONFINITE_POLICIES`, :func:`thermal_frame`): radiometric
cameras mark dead pixels with NaN, and one dead pixel must not cost every frame. ``replace``
sets them to the frame's smallest finite value (the coldest pixel: neutral for the thermal
gain, whose bounds are percentiles) and counts them; ``reject`` refuses the frame with
:class:`NonFiniteError`. A frame without a single finite pixel is refused either way.

Decoding goes through cv_bridge when it is importable (a ROS installation) and through this
module's own numpy code otherwise (a venv with the PyPI wheels); both run after the same checks,
so they accept and reject the same messages. ``use_cv_bridge=False`` forces the numpy path.

Supported raw encodings: ``mono8``, ``8UC1``, ``mono16``, ``16UC1``, ``32FC1``, ``rgb8``,
``bgr8``, ``rgba8``, ``bgra8``. Big-endian data (``is_bigendian``) is byte-swapped to native.
"""

from __future__ import annotations

import array
import sys

import cv2
import numpy as np

from sgdfuse_ros.core.imaging import ImageError, is_gray_rgb

#: encoding -> (dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    'mono8': (np.dtype(np.uint8), 1),
    '8UC1': (np.dtype(np.uint8), 1),
    'mono16': (np.dtype(np.uint16), 1),
    '16UC1': (np.dtype(np.uint16), 1),
    '32FC1': (np.dtype(np.float32), 1),
    'rgb8': (np.dtype(np.uint8), 3),
    'bgr8': (np.dtype(np.uint8), 3),
    'rgba8': (np.dtype(np.uint8), 4),
    'bgra8': (np.dtype(np.uint8), 4),
}
THERMAL_ENCODINGS = ('mono8', '8UC1', 'mono16', '16UC1', '32FC1')
VISIBLE_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', '8UC1')
#: Encodings :func:`numpy_to_image` writes.
OUTPUT_ENCODINGS = tuple(ENCODINGS)
#: What :func:`thermal_frame` does with NaN or infinite pixels of a float thermal frame.
NONFINITE_POLICIES = ('replace', 'reject')


class NonFiniteError(ImageError):
    """A float frame holds NaN or infinite pixels and the policy is ``reject``; ``count`` of
    them, out of ``total``."""

    def __init__(self, text: str, *, count: int, total: int):
        super().__init__(text)
        self.count = count
        self.total = total

_bridge = None
_bridge_checked = False


def cv_bridge_available() -> bool:
    """True when cv_bridge imports (a ROS installation); the result is cached."""
    return _get_bridge() is not None


def _get_bridge():
    global _bridge, _bridge_checked
    if not _bridge_checked:
        _bridge_checked = True
        try:
            from cv_bridge import CvBridge
            _bridge = CvBridge()
        except Exception:  # ImportError, or a cv_bridge built against another numpy
            _bridge = None
    return _bridge


def _use_bridge(use_cv_bridge: bool | None) -> bool:
    if use_cv_bridge is False:
        return False
    return _get_bridge() is not None


def is_compressed(msg) -> bool:
    """True for a sensor_msgs/CompressedImage (it has ``format`` and no ``encoding``)."""
    return hasattr(msg, 'format') and not hasattr(msg, 'encoding')


# --------------------------------------------------------------------------------------------
# Image -> numpy
# --------------------------------------------------------------------------------------------

def check_image(msg, *, what: str = 'image') -> tuple[np.dtype, int]:
    """Validate the layout fields of a sensor_msgs/Image; returns ``(dtype, channels)``.

    Raises :class:`ImageError` naming the problem.
    """
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ImageError(f'{what}: unsupported encoding {enc!r} (supported: '
                         + ', '.join(ENCODINGS) + ')')
    dtype, channels = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageError(f'{what}: zero size {w}x{h} ({enc})')
    row = w * channels * dtype.itemsize
    if step < row:
        raise ImageError(f'{what}: step {step} is smaller than width * bytes per pixel = '
                         f'{w} * {channels * dtype.itemsize} = {row} ({enc} {w}x{h})')
    n = len(msg.data)
    if n != step * h:
        kind = 'truncated data' if n < step * h else 'data longer than step * height'
        raise ImageError(f'{what}: {kind}: {n} bytes, expected step * height = {step} * {h} = '
                         f'{step * h} ({enc} {w}x{h})')
    return dtype, channels


def image_to_numpy(msg, *, what: str = 'image', use_cv_bridge: bool | None = None,
                   allow_nonfinite: bool = False) -> np.ndarray:
    """A sensor_msgs/Image as an array in the message's own channel order.

    ``H x W`` for one channel, ``H x W x C`` otherwise; native byte order. The array may share
    memory with the message (treat it as read-only). Float images with NaN or infinite values
    are rejected (:class:`NonFiniteError`) unless ``allow_nonfinite``.
    """
    dtype, channels = check_image(msg, what=what)
    if _use_bridge(use_cv_bridge):
        try:
            img = _get_bridge().imgmsg_to_cv2(msg, desired_encoding='passthrough')
        except Exception as exc:  # CvBridgeError and friends: same meaning as ours
            raise ImageError(f'{what}: cv_bridge could not convert ({msg.encoding} '
                             f'{msg.width}x{msg.height}): {exc}') from exc
        img = np.asarray(img)
        if not img.dtype.isnative:
            img = img.astype(img.dtype.newbyteorder('='))
    else:
        img = _raw_to_numpy(msg, dtype, channels)
    if not allow_nonfinite and img.dtype.kind == 'f' and not np.all(np.isfinite(img)):
        bad = int(np.count_nonzero(~np.isfinite(img)))
        raise NonFiniteError(f'{what}: {msg.encoding} image holds {bad} NaN or infinite values',
                             count=bad, total=img.size)
    return img


def replace_nonfinite(img: np.ndarray, *, what: str = 'image') -> tuple[np.ndarray, int]:
    """``img`` with its NaN and infinite pixels set to its smallest finite value, and how many
    there were (``img`` itself, not copied, when there are none). Raises :class:`ImageError`
    when no pixel is finite (nothing to replace them with)."""
    finite = np.isfinite(img)
    bad = img.size - int(np.count_nonzero(finite))
    if bad == 0:
        return img, 0
    if bad == img.size:
        raise ImageError(f'{what}: no finite pixel: all {img.size} pixels of the '
                         f'{img.shape[1]}x{img.shape[0]} frame are NaN or infinite')
    return np.where(finite, img, img[finite].min()).astype(img.dtype, copy=False), bad


def _raw_to_numpy(msg, dtype: np.dtype, channels: int) -> np.ndarray:
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    big = bool(msg.is_bigendian) and dtype.itemsize > 1
    wire = dtype.newbyteorder('>' if big else '<') if dtype.itemsize > 1 else dtype
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    item = dtype.itemsize
    if step % item == 0:
        rows = buf.view(wire).reshape(h, step // item)[:, :w * channels]
    else:  # rows not aligned to the element size: copy each row's payload out first
        rows = buf.reshape(h, step)[:, :w * channels * item].copy().view(wire)
    img = rows.reshape(h, w, channels) if channels > 1 else rows.reshape(h, w)
    if not img.dtype.isnative:
        img = img.astype(img.dtype.newbyteorder('='))
    return img


# --------------------------------------------------------------------------------------------
# CompressedImage -> numpy
# --------------------------------------------------------------------------------------------

def compressed_to_numpy(msg, *, what: str = 'image') -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG, PNG, ... as OpenCV reads them).

    Returns ``H x W`` (8- or 16-bit) for one channel and ``H x W x 3`` RGB for colour (an alpha
    channel is dropped). ``compressedDepth`` data (image_transport's depth plugin) is rejected.
    """
    fmt = str(getattr(msg, 'format', ''))
    if 'compresseddepth' in fmt.lower():
        raise ImageError(f'{what}: compressedDepth format {fmt!r} is not supported; publish '
                         'the thermal stream raw or with the png "compressed" transport')
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageError(f'{what}: empty CompressedImage (format {fmt!r})')
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageError(f'{what}: cannot decode CompressedImage of {data.size} bytes '
                         f'(format {fmt!r}): corrupt or not an image')
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        else:
            raise ImageError(f'{what}: decoded image has {img.shape[2]} channels')
    return img


# --------------------------------------------------------------------------------------------
# What the fusion pipeline wants
# --------------------------------------------------------------------------------------------

def thermal_frame(msg, *, nonfinite: str = 'reject', use_cv_bridge: bool | None = None
                  ) -> tuple[np.ndarray, int]:
    """A thermal frame (Image or CompressedImage) as a 2-D ``uint8``/``uint16``/``float32``,
    and how many of its pixels were non-finite and replaced.

    Raw images must be single-channel (``mono8``, ``8UC1``, ``mono16``, ``16UC1``, ``32FC1``);
    a colour image is refused (a false-colour palette is not a temperature). Compressed gray
    stored as three equal channels is accepted as gray. ``nonfinite`` (one of
    :data:`NONFINITE_POLICIES`, see the module docstring): ``replace`` or ``reject``
    (:class:`NonFiniteError`); a frame with no finite pixel raises :class:`ImageError` either
    way.
    """
    what = 'thermal'
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f'nonfinite must be one of {", ".join(NONFINITE_POLICIES)}, got '
                         f'{nonfinite!r}')
    if is_compressed(msg):
        img = compressed_to_numpy(msg, what=what)
        if img.ndim == 3:
            if not is_gray_rgb(img, tol=0):
                raise ImageError(f'{what}: compressed image is colour; a thermal frame must be '
                                 'single-channel')
            img = np.ascontiguousarray(img[:, :, 0])
    elif msg.encoding in ENCODINGS and msg.encoding not in THERMAL_ENCODINGS:
        raise ImageError(f'{what}: encoding {msg.encoding!r} is colour; a thermal frame must be '
                         'one of ' + ', '.join(THERMAL_ENCODINGS))
    else:
        img = image_to_numpy(msg, what=what, use_cv_bridge=use_cv_bridge, allow_nonfinite=True)
    if img.dtype.kind != 'f':
        return img, 0
    if nonfinite == 'replace':
        return replace_nonfinite(img, what=what)
    finite = int(np.count_nonzero(np.isfinite(img)))
    if finite == 0:
        replace_nonfinite(img, what=what)  # raises: no finite pixel
    if finite < img.size:
        enc = getattr(msg, 'encoding', 'float')
        raise NonFiniteError(f'{what}: {enc} frame holds {img.size - finite} NaN or infinite '
                             f'pixels of {img.size} (thermal_nonfinite is reject)',
                             count=img.size - finite, total=img.size)
    return img, 0


def thermal_from_msg(msg, *, nonfinite: str = 'reject', use_cv_bridge: bool | None = None
                     ) -> np.ndarray:
    """The array of :func:`thermal_frame` (non-finite pixels rejected by default)."""
    return thermal_frame(msg, nonfinite=nonfinite, use_cv_bridge=use_cv_bridge)[0]


def visible_from_msg(msg, *, use_cv_bridge: bool | None = None) -> np.ndarray:
    """A visible frame (Image or CompressedImage) as ``uint8`` RGB ``H x W x 3`` or gray
    ``H x W``."""
    what = 'rgb'
    if is_compressed(msg):
        img = compressed_to_numpy(msg, what=what)
        if img.dtype != np.uint8:
            raise ImageError(f'{what}: compressed image is {img.dtype}; the visible frame must '
                             'be 8-bit')
        return img
    if msg.encoding in ENCODINGS and msg.encoding not in VISIBLE_ENCODINGS:
        raise ImageError(f'{what}: encoding {msg.encoding!r} is not an 8-bit visible image; '
                         'use one of ' + ', '.join(VISIBLE_ENCODINGS))
    img = image_to_numpy(msg, what=what, use_cv_bridge=use_cv_bridge)
    enc = msg.encoding
    if enc in ('mono8', '8UC1'):
        return img
    if enc == 'rgb8':
        return img
    if enc == 'bgr8':
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if enc == 'rgba8':
        return cv2.cvtColor(img, cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)  # bgra8


# --------------------------------------------------------------------------------------------
# numpy -> Image
# --------------------------------------------------------------------------------------------

def numpy_to_image(img: np.ndarray, encoding: str = 'rgb8', *, header=None,
                   use_cv_bridge: bool | None = None):
    """Build a sensor_msgs/Image from an array laid out as ``encoding`` says.

    ``rgb8`` accepts a gray ``H x W`` ``uint8`` too (replicated to three channels); ``mono8``
    accepts ``uint8`` RGB (converted to luma). ``header`` (std_msgs/Header) is copied in.
    """
    from sensor_msgs.msg import Image

    if encoding not in ENCODINGS:
        raise ValueError(f'unsupported output encoding {encoding!r} (supported: '
                         + ', '.join(ENCODINGS) + ')')
    dtype, channels = ENCODINGS[encoding]
    img = np.asarray(img)
    if encoding == 'rgb8' and img.ndim == 2 and img.dtype == np.uint8:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif encoding == 'mono8' and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    shape_ok = img.ndim == 2 if channels == 1 else (img.ndim == 3 and img.shape[2] == channels)
    if img.dtype != dtype or not shape_ok:
        raise ValueError(f'cannot write a {img.dtype} array of shape {img.shape} as {encoding} '
                         f'(needs {dtype}, {channels} channel(s))')
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f'cannot publish an empty image of shape {img.shape}')
    if use_cv_bridge is not False and _get_bridge() is not None:
        msg = _get_bridge().cv2_to_imgmsg(np.ascontiguousarray(img), encoding=encoding)
    else:
        img = np.ascontiguousarray(img, dtype=dtype.newbyteorder('='))
        msg = Image()
        msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
        msg.encoding = encoding
        msg.is_bigendian = int(sys.byteorder == 'big' and dtype.itemsize > 1)
        msg.step = int(img.shape[1] * channels * dtype.itemsize)
        data = array.array('B')
        data.frombytes(memoryview(img).cast('B'))
        msg.data = data
    if header is not None:
        msg.header.stamp = header.stamp
        msg.header.frame_id = header.frame_id
    return msg


def float_to_mono8(img: np.ndarray) -> np.ndarray:
    """A float image in ``[0, 1]`` (mask, luma) as ``uint8`` for publishing as ``mono8``."""
    return np.clip(np.asarray(img, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
