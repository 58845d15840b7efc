"""MaskCarrier (masks carried with the scene and blended between refreshes) and the flicker
benchmark's measures, on windows of a bundled real pair."""

import numpy as np
import pytest

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.paths import samples_dir
from sgdfuse_ros.masks.motion import MaskCarrier
from sgdfuse_ros.tools import flicker_bench as fb


@pytest.fixture(scope='module')
def luma() -> np.ndarray:
    vis = imaging.read_image(samples_dir() / 'vi' / 'M3FD_00388.png')
    return imaging.visible_luma(vis)  # 768 x 1024


def _window(img, x, y=100, w=320, h=240):
    return img[y:y + h, x:x + w]


def _box_mask(x0, y0, w=320, h=240):
    m = np.zeros((h, w), np.float32)
    m[y0:y0 + 40, x0:x0 + 30] = 1.0
    return m


def test_empty_before_the_first_refresh(luma):
    carrier = MaskCarrier()
    a, b = carrier.masks_for(_window(luma, 0))
    assert a.shape == (240, 320) and not a.any() and not b.any()


def test_masks_follow_a_pan(luma):
    """The window moves 12 px right: the content (and the carried mask) 12 px left."""
    carrier = MaskCarrier(blend_frames=1)
    m = _box_mask(150, 100)
    carrier.update((m, m * 0.5), _window(luma, 0))
    a, b = carrier.masks_for(_window(luma, 12))
    dx, dy = carrier.last_shift
    assert abs(dx + 12) < 1.0 and abs(dy) < 1.0, carrier.last_shift
    ys, xs = np.nonzero(a > 0.5)
    assert abs(xs.min() - 138) <= 1 and abs(xs.max() - 167) <= 1
    np.testing.assert_allclose(b, 0.5 * a, atol=1e-6)
    # The same frame as the refresh: the masks as given.
    carrier.update((m, m), _window(luma, 12))
    np.testing.assert_allclose(carrier.masks_for(_window(luma, 12))[0], m, atol=1e-6)


def test_a_refresh_fades_in_instead_of_snapping(luma):
    frame = _window(luma, 40)
    m1, m2 = _box_mask(50, 50), _box_mask(200, 120)
    carrier = MaskCarrier(blend_frames=3)
    carrier.update((m1, m1), frame)
    # The first refresh is used at once (nothing was shown before it) ...
    np.testing.assert_allclose(carrier.masks_for(frame)[0], m1)
    # ... or, with fade_in, fades in from empty masks.
    fading = MaskCarrier(blend_frames=3, fade_in=True)
    fading.update((m1, m1), frame)
    first = [float(fading.masks_for(frame)[0].max()) for _ in range(4)]
    np.testing.assert_allclose(first, [1 / 3, 2 / 3, 1.0, 1.0], atol=1e-6)
    carrier.update((m2, m2), frame)
    a = carrier.masks_for(frame)[0]
    np.testing.assert_allclose(a, m1 + (m2 - m1) / 3, atol=1e-6)
    carrier.masks_for(frame)
    np.testing.assert_allclose(carrier.masks_for(frame)[0], m2, atol=1e-6)


def test_no_motion_without_texture():
    flat = np.full((120, 160), 0.5, np.float32)
    m = np.zeros_like(flat)
    m[40:60, 40:60] = 1
    carrier = MaskCarrier(blend_frames=1)
    carrier.update((m, m), flat)
    np.testing.assert_allclose(carrier.masks_for(flat)[0], m)
    assert carrier.last_shift == (0.0, 0.0)


def test_bad_input_is_named():
    carrier = MaskCarrier()
    with pytest.raises(ValueError, match='masks are'):
        carrier.update((np.zeros((10, 10)), np.zeros((10, 10))), np.zeros((12, 10)))
    with pytest.raises(ValueError, match='two H x W'):
        carrier.update(np.zeros((3, 10, 10)), np.zeros((10, 10)))
    carrier.update((np.zeros((20, 20)), np.zeros((20, 20))), np.zeros((20, 20)))
    with pytest.raises(ValueError, match='frame is'):
        carrier.masks_for(np.zeros((30, 20)))
    with pytest.raises(ValueError):
        MaskCarrier(blend_frames=0)


def test_pan_flicker_undoes_the_shift(luma):
    clip = [_window(luma, x) for x in range(0, 40, 4)]
    assert np.allclose(fb.pan_flicker([c * 255 for c in clip], 4, 8), 0.0)
    # Output tied to the screen (a fixed pattern added): flicker the measure sees.
    pattern = (np.indices((240, 320)).sum(0) % 16 < 8) * 8.0
    flick = fb.pan_flicker([c * 255 + pattern for c in clip], 4, 8)
    assert flick.min() > 1.0


def test_clips_and_static_std():
    ir = np.tile(np.arange(256, dtype=np.uint8), (200, 2))
    vis = ir.copy()
    pan = fb.pan_clip(ir, vis, size=(128, 96), step=4, frames=5)
    assert len(pan) == 5 and pan[1][0].shape == (96, 128)
    np.testing.assert_array_equal(pan[1][0][:, :-4], pan[0][0][:, 4:])
    with pytest.raises(ValueError, match='needs'):
        fb.pan_clip(ir, vis, size=(500, 96), step=4, frames=5)
    static = fb.static_clip(ir, vis, size=(128, 96), sigma=2.0, frames=24, seed=1)
    std = fb.temporal_std([a.astype(np.float32) for a, _ in static], margin=0)
    assert 1.6 < std < 2.4


def test_bench_runs_on_a_small_clip(tmp_path, capsys):
    rc = fb.main(['--methods', 'laplacian', '--size', '160x128', '--frames', '4',
                  '--static-frames', '3', '--json', str(tmp_path / 'r.json')])
    assert rc == 0
    out = capsys.readouterr().out
    assert '| laplacian |' in out and (tmp_path / 'r.json').is_file()
    assert fb.main(['--size', '10x10']) == 2
