"""Flow-compensated flicker (core.flow) and the real-video benchmark, on a pan made from a real
registered pair: a window moving over a bundled sample, so the true motion is known."""

import json

import numpy as np
import pytest

from sgdfuse_ros.core import files, imaging
from sgdfuse_ros.core.flow import StepFlow, sequence_flicker, warp
from sgdfuse_ros.core.paths import samples_dir
from sgdfuse_ros.tools import flicker_bench

H, W, STEP = 160, 224, 3


@pytest.fixture(scope='module')
def pair():
    root = samples_dir()
    return (imaging.read_image(root / 'ir' / 'FLIR_00977.jpg', gray=True),
            imaging.read_image(root / 'vi' / 'FLIR_00977.jpg'))


@pytest.fixture(scope='module')
def clip(pair):
    """Six frames of a window moving STEP px right and 1 px down per frame."""
    ir, vis = pair
    return [(np.ascontiguousarray(ir[i:i + H, STEP * i:STEP * i + W]),
             np.ascontiguousarray(vis[i:i + H, STEP * i:STEP * i + W])) for i in range(6)]


def test_flow_finds_the_pan_and_flicker_undoes_it(clip):
    a, b = (imaging.rgb_to_gray(v) for _, v in clip[:2])
    step = StepFlow.between(a, b)
    assert step.coverage > 0.6
    # the backward flow points from the current frame to where its content was: (+STEP, +1)
    assert np.median(step.backward[..., 0][step.valid]) == pytest.approx(STEP, abs=0.3)
    assert np.median(step.backward[..., 1][step.valid]) == pytest.approx(1.0, abs=0.3)
    # frames that move with the scene are steady; the same frames unmoved are not
    moved = step.flicker(a.astype(np.float32), b.astype(np.float32))
    unmoved = float(np.mean(np.abs(b.astype(np.float32) - a.astype(np.float32))))
    assert moved < 0.25 * unmoved
    # flicker added on top of the scene is measured at its size
    noise = np.random.default_rng(0).normal(0, 4.0, b.shape).astype(np.float32)
    noisy = step.flicker(a.astype(np.float32), b.astype(np.float32) + noise)
    assert noisy > moved + 2.0


def test_inconsistent_flow_is_left_out(clip):
    a, b = (imaging.rgb_to_gray(v) for _, v in clip[:2])
    b = b.copy()
    b[40:100, 60:140] = 255 - b[40:100, 60:140]  # an occluder that appears: no true flow
    step = StepFlow.between(a, b)
    inside = step.valid[50:90, 70:130].mean()
    assert inside < step.valid.mean()
    assert warp(a, np.zeros((*a.shape, 2), np.float32)) == pytest.approx(a.astype(np.float32))


def test_sequence_flicker_checks_its_inputs(clip):
    grays = [imaging.rgb_to_gray(v) for _, v in clip[:3]]
    steps = [StepFlow.between(x, y) for x, y in zip(grays[:-1], grays[1:])]
    assert sequence_flicker([g.astype(np.float32) for g in grays], steps).shape == (2,)
    with pytest.raises(ValueError, match='step flows'):
        sequence_flicker([g.astype(np.float32) for g in grays], steps[:1])


def test_video_bench_on_a_sequence_folder(tmp_path, clip, capsys):
    seq = tmp_path / 'videos' / 'pan'
    for i, (ir, vis) in enumerate(clip):
        files.write_image(seq / 'ir' / f'{i:04d}.png', ir)
        files.write_image(seq / 'vi' / f'{i:04d}.png', vis)
    out = tmp_path / 'r.json'
    rc = flicker_bench.main(['--video', str(tmp_path / 'videos'), '--methods', 'laplacian',
                             'max', '--metrics-every', '2', '--json', str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    rows = result['rows']
    assert rows['laplacian']['flicker_vs_ref'] == pytest.approx(1.0)
    assert len(result['sequences']['pan']['methods']['max']['steps']) == len(clip) - 1
    assert 0 < rows['max']['flicker'] < 20 and rows['max']['beats_ref'] in range(9)
    assert '| laplacian |' in capsys.readouterr().out


def test_video_bench_bad_folder_is_one_line(tmp_path, capsys):
    assert flicker_bench.main(['--video', str(tmp_path / 'nothing')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'no such folder' in err[0]


def test_gain_jump_clip_and_response():
    rng = np.random.default_rng(3)
    static = [(rng.integers(0, 240, (40, 50), dtype=np.uint8),
               rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))] * 6
    clip, at = flicker_bench.gain_jump_clip(static, 10.0)
    assert at == 3
    assert np.array_equal(clip[2][0], static[2][0])
    assert np.allclose(clip[3][0].astype(int) - static[3][0], 10)
    # an output that follows the thermal frame: one step of 10, then still
    outs = [ir.astype(np.float32) for ir, _ in clip]
    g = flicker_bench.gain_response(outs, at, 2)
    assert g['step'] == pytest.approx(10.0) and g['after'] == 0.0
    assert g['moved'] == pytest.approx(10.0)


def test_method_specs():
    from sgdfuse_ros.fusion.temporal import TemporalSettings
    from sgdfuse_ros.tools.video_bench import parse_spec

    assert parse_spec('sgdfuse') == ('sgdfuse', 'sgdfuse', {})
    assert parse_spec('sgdfuse:temporal=on')[2] == {'temporal': True}
    assert parse_spec('sgdfuse:temporal=0.6')[2] == {'temporal': TemporalSettings(strength=0.6)}
    with pytest.raises(ValueError, match='strength'):
        parse_spec('sgdfuse:temporal=1.5')
    with pytest.raises(ValueError, match='KEY=VALUE'):
        parse_spec('sgdfuse:temporal')
