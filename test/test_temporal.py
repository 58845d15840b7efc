"""TemporalFilter (fusion.temporal) and FusionStream's temporal option, on a pan across a real
registered pair: steadier where the scene is steady, at once where it changes."""

import numpy as np
import pytest

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.flow import StepFlow, sequence_flicker
from sgdfuse_ros.core.paths import samples_dir
from sgdfuse_ros.fusion.pipeline import FusionPipeline
from sgdfuse_ros.fusion.stream import FusionStream
from sgdfuse_ros.fusion.temporal import TemporalFilter, TemporalSettings

H, W, STEP = 192, 256, 2


@pytest.fixture(scope='module')
def pan():
    """Eight frames of a window moving STEP px right per frame over a real pair."""
    root = samples_dir()
    ir = imaging.read_image(root / 'ir' / 'FLIR_00977.jpg', gray=True)
    vis = imaging.read_image(root / 'vi' / 'FLIR_00977.jpg')
    return [(np.ascontiguousarray(ir[:H, STEP * i:STEP * i + W]),
             np.ascontiguousarray(vis[:H, STEP * i:STEP * i + W])) for i in range(8)]


def _noisy(img, rng, sigma):
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.float32)


def test_noise_on_a_moving_scene_is_calmed(pan):
    """Fused frames = the visible luma + independent noise: the filter follows the pan and
    removes much of the noise (measured with the flow between the visible frames)."""
    rng = np.random.default_rng(1)
    grays = [imaging.rgb_to_gray(v) for _, v in pan]
    noisy = [_noisy(g.astype(np.float32), rng, 3.0) for g in grays]
    filt = TemporalFilter()
    steady = [filt(n / 255.0, g) * 255.0 for n, g in zip(noisy, grays)]
    steps = [StepFlow.between(a, b) for a, b in zip(grays[:-1], grays[1:])]
    before = sequence_flicker(noisy, steps)[2:].mean()
    after = sequence_flicker(steady, steps)[2:].mean()
    assert after < 0.75 * before
    # and it stays on the scene: the error against the clean frame shrinks, not grows
    clean_err = np.mean([np.abs(s - g)[8:-8, 8:-8].mean() for s, g in zip(steady[3:], grays[3:])])
    noisy_err = np.mean([np.abs(n - g)[8:-8, 8:-8].mean() for n, g in zip(noisy[3:], grays[3:])])
    assert clean_err < noisy_err


def test_a_change_shows_at_once():
    """A bright object appearing in a static scene is not held back by the previous output."""
    rng = np.random.default_rng(2)
    base = rng.uniform(60, 120, (192, 256)).astype(np.float32)
    base = np.asarray(np.round(base), np.uint8)
    filt = TemporalFilter()
    for _ in range(3):
        filt(base / 255.0, base)
    changed = base.copy()
    changed[60:100, 80:140] = 240
    out = filt(changed / 255.0, changed) * 255.0
    assert np.abs(out[62:98, 82:138] - 240).max() < 1.0
    # elsewhere the scene is the same, and so is the output: within a few levels next to the
    # object (where the flow is pulled by it), unchanged nearly everywhere else
    diff = np.abs(out - base)
    diff[60:100, 80:140] = 0
    assert diff.max() < 6.0
    assert diff[140:].max() < 0.5 and diff[:, 180:].max() < 0.5 and diff[:, :40].max() < 0.5


def test_settings_checked_and_size_change_restarts():
    with pytest.raises(ValueError, match='strength'):
        TemporalSettings(strength=1.0)
    with pytest.raises(ValueError, match='scale'):
        TemporalSettings(scale=3)
    with pytest.raises(ValueError, match='preset'):
        TemporalSettings(preset='slow')
    with pytest.raises(TypeError, match='TemporalSettings'):
        FusionStream(FusionPipeline(method='mean'), live=False, camera_rate=10.0, temporal=0.7)
    filt = TemporalFilter()
    a = np.full((64, 64), 100, np.uint8)
    filt(a / 255.0, a)
    b = np.full((48, 64), 90, np.uint8)
    assert np.array_equal(filt(b / 255.0, b), (b / 255.0).astype(np.float32))
    with pytest.raises(ValueError, match='one size'):
        filt(np.zeros((48, 64), np.float32), np.zeros((48, 60), np.uint8))


def test_stream_applies_it_and_keeps_the_colour(pan):
    frames = pan[:4]
    plain = FusionStream(FusionPipeline(method='laplacian'), live=False, camera_rate=30.0,
                         temporal=False)
    steady = FusionStream(FusionPipeline(method='laplacian'), live=False, camera_rate=30.0,
                          temporal=TemporalSettings(strength=0.5))
    for ir, vis in frames:
        a = plain.push(ir, vis)
        b = steady.push(ir, vis)
    assert 'temporal' in b.timings and 'temporal' not in a.timings
    assert not np.array_equal(a.luma, b.luma)
    # the colour image carries the steadied luma and the visible frame's chroma
    y, cb, cr = imaging.rgb_to_ycbcr(b.image)
    assert np.abs(y - b.luma).max() < 2.5 / 255
    _, cb0, cr0 = imaging.rgb_to_ycbcr(a.image)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(cb - cb0)[inner].mean() < 1.0 / 255
    assert np.abs(cr - cr0)[inner].mean() < 1.0 / 255


def test_cli_fuse_sequence_temporal(pan, tmp_path, capsys):
    from sgdfuse_ros.core import files
    from sgdfuse_ros.tools.cli import main

    for i, (ir, vis) in enumerate(pan[:3]):
        files.write_image(tmp_path / 'ir' / f'{i:04d}.png', ir)
        files.write_image(tmp_path / 'vi' / f'{i:04d}.png', vis)
    common = ['fuse', '--ir', str(tmp_path / 'ir'), '--vis', str(tmp_path / 'vi'),
              '--method', 'laplacian', '--quiet']
    assert main([*common, '--out', str(tmp_path / 'a'), '--sequence', '--temporal', '1.5']) == 2
    assert 'must be in [0, 1)' in capsys.readouterr().err
    assert main([*common, '--out', str(tmp_path / 'a'), '--temporal', '0.7']) == 2
    assert '--sequence only' in capsys.readouterr().err
    assert main([*common, '--out', str(tmp_path / 'plain'), '--sequence']) == 0
    assert main([*common, '--out', str(tmp_path / 'steady'), '--sequence', '--temporal',
                 '0.7']) == 0
    plain = imaging.read_image(tmp_path / 'plain' / '0002.png')
    steady = imaging.read_image(tmp_path / 'steady' / '0002.png')
    first = [imaging.read_image(tmp_path / d / '0000.png') for d in ('plain', 'steady')]
    assert np.array_equal(*first)  # the first frame has no predecessor
    assert not np.array_equal(plain, steady)


def test_a_warm_body_in_the_dark_leaves_no_trail():
    """Visible frame dark and still, a warm blob moving in the thermal frame (the fused frame
    is then the thermal one): given the thermal frame, the filter lets it move at once."""
    rng = np.random.default_rng(4)
    dark = np.full((120, 160), 6, np.uint8)
    frames = []
    for i in range(6):
        ir = np.full((120, 160), 60.0, np.float32) + rng.normal(0, 0.5, (120, 160))
        ir[50:70, 20 + 12 * i:40 + 12 * i] = 100.0  # 40 levels: under the fused tolerance
        frames.append(np.asarray(ir / 255.0, np.float32))
    with_ir, without = TemporalFilter(), TemporalFilter()
    for f in frames:
        a = with_ir(f, dark, f) * 255.0
        b = without(f, dark) * 255.0
    # where the blob was one frame ago (columns 68..80, background now)
    old = (slice(52, 68), slice(70, 78))
    assert np.abs(a[old] - 60.0).max() < 3.0
    assert np.abs(b[old] - 60.0).max() > 10.0  # the visible frame alone cannot see it move
    # and the blob itself is whole where it is now
    assert np.abs(a[52:68, 82:98] - 100.0).max() < 3.0


def test_bag_fuse_takes_the_temporal_strength(tmp_path):
    from sgdfuse_ros.ros import bag_fuse, bag_io
    from sgdfuse_ros.ros.sample_bag import make_sample_bag

    info = make_sample_bag(tmp_path / 'in', frames=4, hold=2, visible_size=(160, 120))
    outs = {}
    for k in (0.0, 0.7):
        out = tmp_path / f'out{k}'
        summary = bag_fuse.fuse_bag(info.path, out, pipeline='laplacian', only_fused=True,
                                    temporal_strength=k, progress=False)
        assert summary.pairs_fused == 4
        outs[k] = [bytes(m.data) for _, _, m in bag_io.read_messages(out, '/fused/image_raw')]
    assert outs[0.0][0] == outs[0.7][0]  # the first frame has no predecessor
    assert outs[0.0][1:] != outs[0.7][1:]
