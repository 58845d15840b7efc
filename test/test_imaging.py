"""Image handling: loading, thermal gain, colour, padding, registration."""

import cv2
import numpy as np
import pytest

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.baselines import fuse_laplacian, fuse_max, fuse_mean, pyramid_levels


def test_read_gray_stored_as_rgb_collapses_to_one_channel(ivif):
    ir = imaging.read_image(ivif / 'TNO' / 'ir' / '01.png')
    assert ir.ndim == 2 and ir.dtype == np.uint8


def test_read_colour_is_rgb(tmp_path):
    img = np.zeros((4, 5, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    imaging.write_image(tmp_path / 'c.png', img)
    back = imaging.read_image(tmp_path / 'c.png')
    assert back.shape == (4, 5, 3)
    assert back[0, 0, 0] == 200 and back[0, 0, 2] == 0


def test_read_16_bit_keeps_depth(tmp_path):
    img = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    imaging.write_image(tmp_path / 't.png', img)
    back = imaging.read_image(tmp_path / 't.png')
    assert back.dtype == np.uint16 and np.array_equal(back, img)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(imaging.ImageError, match='no such file'):
        imaging.read_image(tmp_path / 'missing.png')
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'not an image')
    with pytest.raises(imaging.ImageError, match='bad.png: cannot decode'):
        imaging.read_image(bad)


def test_match_pairs_reports_unmatched(tmp_path):
    (tmp_path / 'ir').mkdir()
    (tmp_path / 'vi').mkdir()
    img = np.zeros((4, 4), np.uint8)
    for n in ('a', 'b'):
        imaging.write_image(tmp_path / 'ir' / f'{n}.png', img)
    for n in ('b', 'c'):
        imaging.write_image(tmp_path / 'vi' / f'{n}.jpg', img)
    pairs, problems = imaging.match_pairs(tmp_path / 'ir', tmp_path / 'vi')
    assert [p.name for p in pairs] == ['b']
    assert len(problems) == 2 and any('a.png' in p for p in problems)


def test_ycbcr_round_trip():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    y, cb, cr = imaging.rgb_to_ycbcr(rgb)
    back = imaging.to_uint8(imaging.ycbcr_to_rgb(y, cb, cr))
    assert np.abs(back.astype(int) - rgb).max() <= 1
    gray = np.full((3, 3, 3), 77, np.uint8)
    y, cb, cr = imaging.rgb_to_ycbcr(gray)
    assert np.allclose(y, 77 / 255, atol=1e-6) and np.allclose(cb, 0.5, atol=1e-6)


def test_merge_luma_keeps_visible_colour():
    vis = np.zeros((8, 8, 3), np.uint8)
    vis[..., 2] = 180  # blue
    y, _, _ = imaging.rgb_to_ycbcr(vis)
    out = imaging.merge_luma(y, vis)
    assert out.shape == vis.shape and np.abs(out.astype(int) - vis).max() <= 1
    assert imaging.merge_luma(y, vis[..., 0]).ndim == 2


def test_thermal_gain_uses_percentiles_and_smooths():
    rng = np.random.default_rng(1)
    frame = rng.integers(20000, 30000, (64, 80)).astype(np.uint16)
    gain = imaging.ThermalGain(low_percentile=1, high_percentile=99, smoothing=0.0,
                               sample_stride=1)
    out = gain(frame)
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert np.mean(out == 0) < 0.03 and np.mean(out == 1) < 0.03
    # A hot object entering the view must not rescale the whole image at once.
    smooth = imaging.ThermalGain(smoothing=0.9, sample_stride=1)
    base = smooth(frame)
    hot = frame.copy()
    hot[:20, :20] = 60000
    smoothed_change = np.abs(smooth(hot)[40:, 40:] - base[40:, 40:]).mean()
    unsmoothed = imaging.ThermalGain(smoothing=0.0, sample_stride=1)
    jump = np.abs(unsmoothed(hot)[40:, 40:] - base[40:, 40:]).mean()
    assert smoothed_change < 0.4 * jump


def test_thermal_gain_flat_scene_is_not_amplified():
    flat = np.full((32, 32), 25000, np.uint16)
    flat[0, 0] = 25003
    out = imaging.ThermalGain(smoothing=0.0)(flat)
    assert out.max() - out.min() < 0.1


def test_thermal_gain_rejects_nan_and_bad_shape():
    gain = imaging.ThermalGain()
    with pytest.raises(imaging.ImageError, match='NaN'):
        gain(np.array([[0.1, np.nan]], np.float32))
    with pytest.raises(imaging.ImageError, match='2-D'):
        gain(np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ValueError):
        imaging.ThermalGain(low_percentile=50, high_percentile=10)


def _thermal_stream(ivif, dtype, n, *, seed=0, name='FLIR_00211.jpg', offset=None,
                    scale=None):
    """``n`` noisy frames of one real thermal scene, ``offset + scale * gray``: float32
    (kelvin by default) or uint16 counts."""
    ir = imaging.read_image(ivif / 'RoadScene' / 'ir' / name, gray=True).astype(np.float32)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        noisy = ir + rng.normal(0, 1.0, ir.shape).astype(np.float32)
        if dtype == np.float32:
            yield (280 + noisy / 255 * 30 if offset is None
                   else offset + noisy * scale).astype(np.float32)
        else:
            yield np.clip(20000 + noisy * 40 if offset is None else offset + noisy * scale,
                          0, 65535).astype(np.uint16)


def _corrupt(frame, kind, rng):
    if kind == 'random_bytes':  # NaN/inf replaced by the coldest pixel, as the node does
        bad = rng.integers(0, 256, frame.nbytes, np.uint8).view(frame.dtype).reshape(
            frame.shape).copy()
        if bad.dtype.kind == 'f':
            bad[~np.isfinite(bad)] = bad[np.isfinite(bad)].min()
        return bad
    bad = frame.copy()  # 'spikes': 2 % of the pixels at 1e30
    bad.flat[rng.choice(bad.size, bad.size // 50, replace=False)] = 1e30
    return bad


@pytest.mark.parametrize('dtype,kind', [(np.float32, 'random_bytes'), (np.float32, 'spikes'),
                                        (np.uint16, 'random_bytes')])
def test_thermal_gain_shrugs_off_one_corrupt_frame(ivif, dtype, kind):
    """One corrupt frame in a steady stream: the output is back within 2 grey levels of its
    level before within 10 frames (a plain moving average took hundreds), and the frame is
    counted as held."""
    rng = np.random.default_rng(3)
    gain = imaging.ThermalGain()
    frames = list(_thermal_stream(ivif, dtype, 41))
    before = [imaging.to_uint8(gain(f)) for f in frames[:30]][-1].astype(np.float32)
    with np.errstate(all='raise'):  # no overflow warning either
        gain(_corrupt(frames[30], kind, rng))
    assert gain.held == 1
    after = [np.abs(imaging.to_uint8(gain(f)) - before).mean() for f in frames[31:41]]
    assert min(after) <= 2.0 and after[-1] <= 2.0, after
    assert gain.held == 1


@pytest.mark.parametrize('dtype', [np.float32, np.uint16])
def test_thermal_gain_follows_a_real_change_of_scene_as_fast_as_a_plain_average(ivif, dtype):
    """A camera cut to another, much hotter scene jumps like a corrupt frame but persists:
    after ``confirm`` frames the bounds are those of the plain moving average, frame for
    frame."""
    plain = imaging.ThermalGain(jump_limit=float('inf'))
    robust = imaging.ThermalGain()
    cold, hot = ((280, 0.1), (400, 0.5)) if dtype == np.float32 else ((20000, 4), (30000, 100))
    cold = list(_thermal_stream(ivif, dtype, 20, offset=cold[0], scale=cold[1]))
    hot = list(_thermal_stream(ivif, dtype, 30, seed=1, name='FLIR_04269.jpg', offset=hot[0],
                               scale=hot[1]))
    for f in cold:
        plain(f), robust(f)
    for i, f in enumerate(hot):
        plain(f), robust(f)
        if i >= robust.confirm - 1:
            assert robust.bounds == pytest.approx(plain.bounds, rel=1e-9), i
    assert robust.held == robust.confirm - 1


def test_pad_and_crop_round_trip():
    img = np.arange(7 * 13, dtype=np.float32).reshape(7, 13)
    padded, size = imaging.pad_to_multiple(img, 8)
    assert padded.shape == (8, 16) and size == (7, 13)
    assert np.array_equal(imaging.crop_to(padded, size), img)
    tiny, _ = imaging.pad_to_multiple(np.ones((2, 3, 3)), 16)
    assert tiny.shape == (16, 16, 3)


def test_homography_registration_and_size_check():
    thermal = np.zeros((40, 50), np.uint8)
    thermal[10:20, 10:20] = 255
    visible = np.zeros((80, 100, 3), np.uint8)
    h = imaging.parse_homography([2, 0, 0, 0, 2, 0, 0, 0, 1])
    warped = imaging.align_pair(thermal, visible, h)
    assert warped.shape == (80, 100)
    ys, xs = np.nonzero(warped > 128)
    assert 19 <= ys.min() <= 21 and 37 <= ys.max() <= 40 and 19 <= xs.min() <= 21
    with pytest.raises(imaging.ImageError, match='size mismatch'):
        imaging.align_pair(thermal, visible, None)
    with pytest.raises(ValueError, match='9 values'):
        imaging.parse_homography([1, 2, 3])
    with pytest.raises(ValueError, match='singular'):
        imaging.parse_homography([0] * 9)


def test_resize_to_working_resolution():
    img = np.random.default_rng(2).random((48, 64)).astype(np.float32)
    assert imaging.resize(img, (32, 24)).shape == (24, 32)
    assert imaging.resize(img, (128, 96)).shape == (96, 128)


def test_baselines_on_known_values():
    a = np.array([[0.2, 0.8]], np.float32)
    b = np.array([[0.6, 0.4]], np.float32)
    assert np.allclose(fuse_mean(a, b), [[0.4, 0.6]])
    assert np.allclose(fuse_max(a, b), [[0.6, 0.8]])


def test_laplacian_keeps_the_stronger_detail():
    rng = np.random.default_rng(3)
    flat = np.full((64, 64), 0.5, np.float32)
    textured = np.clip(0.5 + 0.2 * rng.standard_normal((64, 64)), 0, 1).astype(np.float32)
    fused = fuse_laplacian(flat, textured)
    # detail of the textured source survives (a mean would halve it)
    assert np.std(fused) > 0.8 * np.std(textured)
    assert np.allclose(fuse_laplacian(textured, textured), textured, atol=1e-5)
    assert pyramid_levels((20, 300)) == 2


def test_laplacian_on_real_pair(ivif):
    ir = imaging.to_float(imaging.read_image(ivif / 'RoadScene' / 'ir' / 'FLIR_00211.jpg',
                                             gray=True))
    vis = imaging.visible_luma(imaging.read_image(ivif / 'RoadScene' / 'vi' / 'FLIR_00211.jpg'))
    fused = fuse_laplacian(ir, vis)
    assert fused.shape == ir.shape
    grad = lambda x: np.abs(cv2.Sobel(x, cv2.CV_32F, 1, 0)).mean()  # noqa: E731
    assert grad(fused) >= 0.9 * max(grad(ir), grad(vis))
