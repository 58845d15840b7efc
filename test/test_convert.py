"""sensor_msgs/Image and CompressedImage <-> numpy, with constructed messages (no ROS graph)."""

import array
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip('sensor_msgs.msg', reason='needs the ros extra (sensor_msgs)')

from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from sgdfuse_ros.core.imaging import ImageError, read_image  # noqa: E402
from sgdfuse_ros.ros import convert  # noqa: E402


def raw_msg(data: bytes, *, h, w, enc, step, big=False) -> Image:
    msg = Image(height=h, width=w, encoding=enc, step=step, is_bigendian=int(big))
    msg.data = array.array('B', data)
    return msg


def rng_image(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == 'f':
        return rng.random(shape, dtype=np.float32) * 100.0 - 20.0
    return rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize('enc', list(convert.ENCODINGS))
def test_round_trip_every_encoding(enc):
    dtype, ch = convert.ENCODINGS[enc]
    shape = (7, 5) if ch == 1 else (7, 5, ch)
    img = rng_image(shape, dtype)
    msg = convert.numpy_to_image(img, enc, use_cv_bridge=False)
    assert (msg.height, msg.width, msg.encoding) == (7, 5, enc)
    assert msg.step == 5 * ch * np.dtype(dtype).itemsize
    back = convert.image_to_numpy(msg, use_cv_bridge=False)
    assert back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, img)


def test_step_padding_is_skipped():
    img = rng_image((4, 3, 3), np.uint8)
    step = 3 * 3 + 7  # 7 bytes of padding per row
    data = b''.join(img[r].tobytes() + b'\xee' * 7 for r in range(4))
    out = convert.image_to_numpy(raw_msg(data, h=4, w=3, enc='rgb8', step=step),
                                 use_cv_bridge=False)
    np.testing.assert_array_equal(out, img)


def test_mono16_odd_step_and_big_endian():
    img = np.array([[1, 2, 0x1234], [65535, 256, 7]], dtype=np.uint16)
    # big-endian rows, one padding byte per row: the step is not a multiple of 2
    data = b''.join(img[r].astype('>u2').tobytes() + b'\x00' for r in range(2))
    msg = raw_msg(data, h=2, w=3, enc='mono16', step=7, big=True)
    out = convert.image_to_numpy(msg, use_cv_bridge=False)
    assert out.dtype == np.uint16 and out.dtype.isnative
    np.testing.assert_array_equal(out, img)
    little = raw_msg(img.astype('<u2').tobytes(), h=2, w=3, enc='16UC1', step=6)
    np.testing.assert_array_equal(convert.image_to_numpy(little, use_cv_bridge=False), img)


def test_float_image_nan_and_inf_rejected():
    img = np.ones((3, 4), np.float32)
    img[1, 2] = np.nan
    with pytest.raises(ImageError, match='NaN'):
        convert.thermal_from_msg(convert.numpy_to_image(img, '32FC1', use_cv_bridge=False),
                                 use_cv_bridge=False)
    img[1, 2] = np.inf
    with pytest.raises(ImageError, match='1 NaN or infinite'):
        convert.image_to_numpy(convert.numpy_to_image(img, '32FC1', use_cv_bridge=False),
                               use_cv_bridge=False)


def test_thermal_nonfinite_policy():
    """A radiometric frame (kelvin) with dead pixels marked NaN and one hot +inf: ``replace``
    sets them to the frame's coldest finite value and counts them, ``reject`` refuses the
    frame naming the count, and a frame with no finite pixel is refused by both."""
    kelvin = rng_image((48, 64), np.float32, seed=3) + 290.0
    dead = kelvin.copy()
    dead[5, 7] = dead[20, 30] = np.nan
    dead[40, 1] = np.inf
    dead[0, 0] = -np.inf
    msg = convert.numpy_to_image(dead, '32FC1', use_cv_bridge=False)
    out, replaced = convert.thermal_frame(msg, nonfinite='replace', use_cv_bridge=False)
    assert replaced == 4 and out.dtype == np.float32 and np.isfinite(out).all()
    coldest = np.nanmin(np.where(np.isfinite(dead), dead, np.nan))
    assert out[5, 7] == out[20, 30] == out[40, 1] == out[0, 0] == coldest
    keep = np.isfinite(dead)
    np.testing.assert_array_equal(out[keep], dead[keep])

    with pytest.raises(convert.NonFiniteError, match='4 NaN or infinite pixels of 3072') as err:
        convert.thermal_frame(msg, nonfinite='reject', use_cv_bridge=False)
    assert (err.value.count, err.value.total) == (4, 3072)
    assert isinstance(err.value, ImageError)

    clean = convert.numpy_to_image(kelvin, '32FC1', use_cv_bridge=False)
    for policy in convert.NONFINITE_POLICIES:
        out, replaced = convert.thermal_frame(clean, nonfinite=policy, use_cv_bridge=False)
        assert replaced == 0
        np.testing.assert_array_equal(out, kelvin)

    all_nan = convert.numpy_to_image(np.full((4, 5), np.nan, np.float32), '32FC1',
                                     use_cv_bridge=False)
    for policy in convert.NONFINITE_POLICIES:
        with pytest.raises(ImageError, match='no finite pixel: all 20 pixels of the 5x4'):
            convert.thermal_frame(all_nan, nonfinite=policy, use_cv_bridge=False)
    with pytest.raises(ValueError, match='nonfinite must be one of replace, reject'):
        convert.thermal_frame(clean, nonfinite='zero')
    from sgdfuse_ros.params import BY_NAME

    assert BY_NAME['thermal_nonfinite'].choices == convert.NONFINITE_POLICIES


@pytest.mark.parametrize('h, w, data_len, step, enc, pattern', [
    (0, 4, 0, 4, 'mono8', 'zero size 4x0'),
    (4, 0, 0, 0, 'mono8', 'zero size 0x4'),
    (4, 4, 15, 4, 'mono8', r'truncated data: 15 bytes, expected step \* height = 4 \* 4 = 16'),
    (4, 4, 17, 4, 'mono8', 'data longer than step'),
    (4, 4, 16, 3, 'mono8', 'step 3 is smaller than width'),
    (2, 3, 12, 4, 'mono16', r'step 4 is smaller than width \* bytes per pixel = 3 \* 2 = 6'),
    (2, 2, 8, 4, 'yuv422', "unsupported encoding 'yuv422'"),
    (2, 2, 8, 4, '', "unsupported encoding ''"),
])
def test_bad_layouts_name_the_problem(h, w, data_len, step, enc, pattern):
    msg = raw_msg(bytes(data_len), h=h, w=w, enc=enc, step=step)
    with pytest.raises(ImageError, match=pattern):
        convert.image_to_numpy(msg, use_cv_bridge=False)
    assert issubclass(ImageError, ValueError)


def test_thermal_and_visible_encoding_rules():
    rgb = rng_image((3, 4, 3), np.uint8)
    with pytest.raises(ImageError, match='thermal.*colour'):
        convert.thermal_from_msg(convert.numpy_to_image(rgb, 'rgb8', use_cv_bridge=False))
    mono16 = rng_image((3, 4), np.uint16)
    with pytest.raises(ImageError, match='rgb: encoding .mono16. is not an 8-bit'):
        convert.visible_from_msg(convert.numpy_to_image(mono16, 'mono16', use_cv_bridge=False))
    t = convert.thermal_from_msg(convert.numpy_to_image(mono16, 'mono16', use_cv_bridge=False),
                                 use_cv_bridge=False)
    assert t.dtype == np.uint16 and t.shape == (3, 4)


@pytest.mark.parametrize('enc', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
def test_visible_colour_orders_become_rgb(enc):
    rgb = rng_image((5, 6, 3), np.uint8)
    alpha = np.full((5, 6, 1), 200, np.uint8)
    layout = {'rgb8': rgb, 'bgr8': rgb[:, :, ::-1],
              'rgba8': np.concatenate([rgb, alpha], 2),
              'bgra8': np.concatenate([rgb[:, :, ::-1], alpha], 2)}[enc]
    msg = convert.numpy_to_image(np.ascontiguousarray(layout), enc, use_cv_bridge=False)
    out = convert.visible_from_msg(msg, use_cv_bridge=False)
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


def test_real_pair_round_trip_mono8_and_mono16(ivif):
    ir = read_image(ivif / 'RoadScene' / 'ir' / 'FLIR_00211.jpg', gray=True)
    vi = read_image(ivif / 'RoadScene' / 'vi' / 'FLIR_00211.jpg', gray=False)
    radiometric = ir.astype(np.uint16) * 40 + 7000  # a plausible 16-bit camera range
    for img, enc in ((ir, 'mono8'), (radiometric, 'mono16')):
        out = convert.thermal_from_msg(convert.numpy_to_image(img, enc, use_cv_bridge=False),
                                       use_cv_bridge=False)
        np.testing.assert_array_equal(out, img)
    out = convert.visible_from_msg(convert.numpy_to_image(vi, 'rgb8', use_cv_bridge=False),
                                   use_cv_bridge=False)
    np.testing.assert_array_equal(out, vi)


def compressed(img_bgr_or_gray: np.ndarray, ext: str, fmt: str) -> CompressedImage:
    ok, buf = cv2.imencode(ext, img_bgr_or_gray)
    assert ok
    msg = CompressedImage(format=fmt)
    msg.data = array.array('B', buf.tobytes())
    return msg


def test_compressed_input(ivif):
    vi = read_image(ivif / 'RoadScene' / 'vi' / 'FLIR_00977.jpg', gray=False)
    ir = read_image(ivif / 'RoadScene' / 'ir' / 'FLIR_00977.jpg', gray=True)
    jpeg = compressed(np.ascontiguousarray(vi[:, :, ::-1]), '.jpg', 'rgb8; jpeg compressed bgr8')
    out = convert.visible_from_msg(jpeg)
    assert out.shape == vi.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - vi).mean() < 4  # JPEG loss only; channels not swapped
    radiometric = ir.astype(np.uint16) * 40 + 7000
    png16 = compressed(radiometric, '.png', 'mono16; png compressed mono16')
    np.testing.assert_array_equal(convert.thermal_from_msg(png16), radiometric)
    gray_as_rgb = compressed(np.repeat(ir[:, :, None], 3, axis=2), '.png', 'bgr8; png')
    np.testing.assert_array_equal(convert.thermal_from_msg(gray_as_rgb), ir)
    with pytest.raises(ImageError, match='colour'):
        convert.thermal_from_msg(compressed(np.ascontiguousarray(vi[:, :, ::-1]), '.png', 'png'))
    with pytest.raises(ImageError, match='8-bit'):
        convert.visible_from_msg(png16)


def test_compressed_errors():
    bad = CompressedImage(format='jpeg')
    bad.data = array.array('B', b'\xff\xd8 definitely not a jpeg')
    with pytest.raises(ImageError, match='cannot decode CompressedImage of 24 bytes'):
        convert.visible_from_msg(bad)
    with pytest.raises(ImageError, match='empty CompressedImage'):
        convert.visible_from_msg(CompressedImage(format='jpeg'))
    depth = CompressedImage(format='16UC1; compressedDepth png')
    depth.data = array.array('B', bytes(40))
    with pytest.raises(ImageError, match='compressedDepth'):
        convert.thermal_from_msg(depth)


def test_numpy_to_image_output_rules():
    gray = rng_image((4, 6), np.uint8)
    header = Header(frame_id='rgb_optical')
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = convert.numpy_to_image(gray, 'rgb8', header=header, use_cv_bridge=False)
    assert (msg.encoding, msg.step, msg.header.frame_id) == ('rgb8', 18, 'rgb_optical')
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
    np.testing.assert_array_equal(convert.image_to_numpy(msg)[:, :, 1], gray)
    rgb = rng_image((4, 6, 3), np.uint8)
    mono = convert.numpy_to_image(rgb, 'mono8', use_cv_bridge=False)
    assert mono.encoding == 'mono8' and len(mono.data) == 24
    assert mono.is_bigendian == 0 or sys.byteorder == 'big'
    with pytest.raises(ValueError, match='cannot write a float32'):
        convert.numpy_to_image(np.zeros((2, 2), np.float32), 'mono8')
    with pytest.raises(ValueError, match='unsupported output encoding'):
        convert.numpy_to_image(gray, 'yuv422')
    with pytest.raises(ValueError, match='empty image'):
        convert.numpy_to_image(np.zeros((0, 3), np.uint8), 'mono8')
    np.testing.assert_array_equal(convert.float_to_mono8(np.array([0.0, 0.5, 1.0, 2.0])),
                                  [0, 128, 255, 255])


class _RecordingBridge:
    """Stands in for cv_bridge.CvBridge to check the dispatch, not cv_bridge itself."""

    def __init__(self):
        self.calls = []

    def imgmsg_to_cv2(self, msg, desired_encoding='passthrough'):
        self.calls.append(desired_encoding)
        if msg.encoding == '8UC1':
            raise RuntimeError('bridge refuses')
        return convert._raw_to_numpy(msg, *convert.ENCODINGS[msg.encoding])


def test_cv_bridge_dispatch(monkeypatch):
    bridge = _RecordingBridge()
    monkeypatch.setattr(convert, '_bridge', bridge)
    monkeypatch.setattr(convert, '_bridge_checked', True)
    img = rng_image((3, 4), np.uint16)
    msg = convert.numpy_to_image(img, 'mono16', use_cv_bridge=False)
    np.testing.assert_array_equal(convert.image_to_numpy(msg), img)
    assert bridge.calls == ['passthrough']
    msg.data = msg.data[:-1]  # truncated: our checks refuse it before cv_bridge sees it
    with pytest.raises(ImageError, match='truncated'):
        convert.image_to_numpy(msg)
    assert len(bridge.calls) == 1
    with pytest.raises(ImageError, match='cv_bridge could not convert.*bridge refuses'):
        convert.image_to_numpy(convert.numpy_to_image(img.astype(np.uint8), '8UC1',
                                                      use_cv_bridge=False))
    ok = convert.numpy_to_image(img, 'mono16', use_cv_bridge=False)
    np.testing.assert_array_equal(convert.image_to_numpy(ok, use_cv_bridge=False), img)
    assert len(bridge.calls) == 2  # use_cv_bridge=False bypasses the bridge
