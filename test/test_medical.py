"""Medical fusion (task ``medical``): roles, colour handling, the wrong-task checks, the CLI.

Runs on the medical pairs bundled with the package (``sgdfuse_ros/data/medical``).
"""

import json

import numpy as np
import pytest

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.paths import MEDICAL_SAMPLES
from sgdfuse_ros.fusion import medical
from sgdfuse_ros.fusion.pipeline import FusionPipeline
from sgdfuse_ros.models import weights as shipped
from sgdfuse_ros.tools.cli import main
from sgdfuse_ros.training.data import expand_data_dirs, split_pairs

SPECT = MEDICAL_SAMPLES / 'MRI_SPECT'
CT = MEDICAL_SAMPLES / 'MRI_CT'


def _spect(name='11'):
    return (imaging.read_image(SPECT / 'SPECT' / f'{name}.png'),
            imaging.read_image(SPECT / 'MRI' / f'{name}.png'))


def _ct(name='11'):
    return (imaging.read_image(CT / 'CT' / f'{name}.png'),
            imaging.read_image(CT / 'MRI' / f'{name}.png'))


def test_bundled_pairs_have_the_expected_kinds():
    spect, mri = _spect()
    assert spect.ndim == 3 and not imaging.is_gray_rgb(spect)   # pseudo-colour
    assert mri.ndim == 2                                         # stored as 3 equal channels
    ct, mri_ct = _ct()
    assert ct.ndim == 2 and mri_ct.ndim == 2


def test_colour_map_of_the_functional_image_is_kept():
    spect, mri = _spect()
    res = FusionPipeline(method='laplacian', task='medical').fuse(spect, mri)
    assert res.image.shape == spect.shape and res.image.dtype == np.uint8
    # The luma is the fused one; the chroma is the SPECT image's (where RGB leaves room for
    # both: saturated colours clip near black and white).
    y, cb, cr = imaging.rgb_to_ycbcr(res.image)
    assert np.abs(y - res.luma).mean() < 0.005
    _, cb0, cr0 = imaging.rgb_to_ycbcr(spect)
    inside = (res.luma > 0.15) & (res.luma < 0.85)
    assert inside.mean() > 0.1
    assert np.abs(cb - cb0)[inside].mean() < 0.01 and np.abs(cr - cr0)[inside].mean() < 0.01
    # The fused luma takes structure from the MRI: it is not the SPECT luma.
    spect_y = imaging.rgb_to_gray(spect).astype(np.float32) / 255
    mri_f = mri.astype(np.float32) / 255
    assert np.corrcoef(res.luma.ravel(), mri_f.ravel())[0, 1] > \
        np.corrcoef(spect_y.ravel(), mri_f.ravel())[0, 1] + 0.1


def test_gray_in_gray_out_and_mono():
    ct, mri = _ct()
    res = FusionPipeline(method='max', task='medical').fuse(ct, mri)
    assert res.image.shape == ct.shape
    expected = np.maximum(ct, mri)  # the max rule on 8-bit gray: exact
    assert np.abs(res.image.astype(int) - expected).max() <= 1
    spect, mri = _spect()
    mono = FusionPipeline(method='laplacian', task='medical', output='mono').fuse(spect, mri)
    assert mono.image.shape == mri.shape
    # A gray MRI stored as three equal channels is a gray MRI.
    rgb_mri = np.repeat(mri[:, :, None], 3, axis=2)
    again = FusionPipeline(method='laplacian', task='medical', output='mono').fuse(spect, rgb_mri)
    np.testing.assert_array_equal(again.image, mono.image)


def test_no_thermal_gain_on_medical_images():
    ct, mri = _ct()
    res = FusionPipeline(method='mean', task='medical').fuse(ct, mri)
    np.testing.assert_allclose(res.ir, ct.astype(np.float32) / 255, atol=1e-6)


def test_wrong_task_is_one_clear_error():
    spect, mri = _spect()
    pipe = FusionPipeline(method='laplacian', task='medical')
    thermal16 = imaging.rgb_to_gray(spect).astype(np.uint16) * 200 + 3000
    with pytest.raises(imaging.ImageError, match='16-bit.*thermal.*task ivif'):
        pipe.fuse(thermal16, mri)
    with pytest.raises(imaging.ImageError, match='8-bit'):
        pipe.fuse(spect.astype(np.float32), mri)
    with pytest.raises(imaging.ImageError, match='roles look swapped'):
        pipe.fuse(mri, spect)
    with pytest.raises(imaging.ImageError, match='camera pair.*task ivif'):
        pipe.fuse(spect, spect[:, ::-1].copy())
    # Bad sizes: the same error as for infrared-visible pairs.
    with pytest.raises(imaging.ImageError, match='size mismatch'):
        pipe.fuse(spect[:-3], mri)
    with pytest.raises(imaging.ImageError, match='size mismatch'):
        FusionPipeline(method='laplacian').fuse(imaging.rgb_to_gray(spect)[:-3], mri)
    with pytest.raises(ValueError, match='task must be one of'):
        FusionPipeline(task='mri')


def test_homography_moves_the_colour_with_the_functional_image():
    spect, mri = _spect()
    small = imaging.resize(spect, (128, 128))
    h = [2, 0, 0, 0, 2, 0, 0, 0, 1]
    res = FusionPipeline(method='max', task='medical', homography=h).fuse(small, mri)
    assert res.image.shape == spect.shape
    _, cb, _ = imaging.rgb_to_ycbcr(res.image)
    _, cb0, _ = imaging.rgb_to_ycbcr(spect)
    inside = (res.luma > 0.15) & (res.luma < 0.85)
    assert np.abs(cb - cb0)[inside].mean() < 0.03


def test_method_options_pick_the_medical_weights_only_where_none_are_given():
    assert medical.method_options('laplacian', {}) == {}
    given = medical.method_options('stage1', {'weights': 'mine.pt'})
    assert given['weights'] == 'mine.pt'
    opts = medical.method_options('sgdfuse', {'steps': 2})
    assert opts['steps'] == 2
    if shipped.MEDICAL_STAGE1_WEIGHTS.is_file():
        assert opts['stage1_weights'] == str(shipped.MEDICAL_STAGE1_WEIGHTS)
    if shipped.MEDICAL_STUDENT_WEIGHTS.is_file():
        assert opts['weights'] == str(shipped.MEDICAL_STUDENT_WEIGHTS)
    teacher = medical.method_options('sgdfuse', {'teacher': True})
    if shipped.MEDICAL_TEACHER_WEIGHTS.is_file():
        assert teacher['weights'] == str(shipped.MEDICAL_TEACHER_WEIGHTS)


def test_medical_sets_in_the_training_layout():
    assert imaging.pair_dirs(SPECT) == (SPECT / 'SPECT', SPECT / 'MRI')
    assert [d.name for d in expand_data_dirs([MEDICAL_SAMPLES])] == ['MRI_CT', 'MRI_SPECT']
    train, val = split_pairs(SPECT)
    assert [p.name for p in val] == ['11'] and [p.name for p in train] == ['16']


@pytest.mark.parametrize('method', ['laplacian', 'auto'])
def test_cli_fuse_medical(tmp_path, capsys, method):
    out = tmp_path / 'fused.png'
    rc = main(['fuse', '--task', 'medical', '--method', method,
               '--ir', str(SPECT / 'SPECT' / '11.png'), '--vis', str(SPECT / 'MRI' / '11.png'),
               '--out', str(out)])
    assert rc == 0
    img = imaging.read_image(out)
    assert img.ndim == 3 and not imaging.is_gray_rgb(img)
    rc = main(['fuse', '--task', 'medical', '--method', 'laplacian', '--mono',
               '--ir', str(SPECT / 'SPECT'), '--vis', str(SPECT / 'MRI'),
               '--out', str(tmp_path / 'mono'), '--quiet'])
    assert rc == 0
    assert imaging.read_image(tmp_path / 'mono' / '16.png').ndim == 2


def test_cli_wrong_task_is_one_line(tmp_path, capsys):
    capsys.readouterr()
    rc = main(['fuse', '--task', 'medical', '--method', 'laplacian',
               '--ir', str(SPECT / 'MRI' / '11.png'), '--vis', str(SPECT / 'SPECT' / '11.png'),
               '--out', str(tmp_path / 'x.png')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and 'roles look swapped' in err[0]
    thermal = tmp_path / 'thermal16.png'
    imaging.write_image(thermal, np.full((256, 256), 30000, np.uint16))
    rc = main(['fuse', '--task', 'medical', '--method', 'laplacian', '--ir', str(thermal),
               '--vis', str(SPECT / 'MRI' / '11.png'), '--out', str(tmp_path / 'y.png')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and '16-bit' in err[0] and '--task ivif' in err[0]


def test_cli_eval_on_medical_pairs(tmp_path, capsys):
    assert main(['fuse', '--task', 'medical', '--method', 'laplacian', '--quiet',
                 '--ir', str(SPECT / 'SPECT'), '--vis', str(SPECT / 'MRI'),
                 '--out', str(tmp_path / 'f')]) == 0
    capsys.readouterr()
    assert main(['eval', '--ir', str(SPECT / 'SPECT'), '--vis', str(SPECT / 'MRI'),
                 '--fused', str(tmp_path / 'f'), '--convention', 'evaluator', '--json']) == 0
    means = json.loads(capsys.readouterr().out)
    assert 0 < means['EN'] < 8 and means['SSIM'] > 1.0 and means['Qabf'] > 0.3


def test_bench_medical(capsys):
    assert main(['bench', '--task', 'medical', '--method', 'sgdfuse', '--frames', '2',
                 '--warmup', '1', '--mask-worker', 'none', '--json']) == 0
    res = json.loads(capsys.readouterr().out)
    assert res['task'] == 'medical' and res['size'] == '256x256' and res['total_ms'] > 0


def test_cli_ivif_with_a_colour_first_image_says_so_once(tmp_path, capsys):
    capsys.readouterr()
    rc = main(['fuse', '--method', 'laplacian', '--quiet', '--ir', str(SPECT / 'SPECT'),
               '--vis', str(SPECT / 'MRI'), '--out', str(tmp_path / 'f')])
    err = [line for line in capsys.readouterr().err.splitlines() if 'warning' in line]
    assert rc == 0 and len(err) == 1 and '--task medical' in err[0]
    assert imaging.read_image(tmp_path / 'f' / '11.png').ndim == 2


needs_medical_weights = pytest.mark.skipif(
    not all(p.is_file() for p in shipped.MEDICAL_SHIPPED_GRAPHS.values()),
    reason='the medical weights are not installed')


@needs_medical_weights
def test_medical_weights_ship_with_their_graphs_and_sidecars():
    from sgdfuse_ros.core.hashing import sha256_file
    from sgdfuse_ros.runtime import export

    for target, weights in shipped.MEDICAL_SHIPPED_GRAPHS.items():
        sidecar = json.loads(weights.with_suffix('.json').read_text())
        assert sidecar['sha256'] == sha256_file(weights) and sidecar['file'] == weights.name
        assert weights.stat().st_size < 5_000_000
        graphs = export.shipped_graphs(weights)
        assert graphs[0][0].is_file(), f'run `sgdfuse export --onnx --shipped` ({target})'
        for graph, meta_path in graphs:
            meta = export.read_onnx_sidecar(meta_path)
            assert meta['weights_sha256'] == sha256_file(weights), graph
            assert export.graph_problem(graph, meta_path, sha256_file(weights)) is None


@needs_medical_weights
def test_task_medical_loads_the_medical_weights_and_beats_laplacian_on_a_held_out_pair():
    from sgdfuse_ros.core.metrics import HEADLINE, compute_metrics

    pipe = FusionPipeline(method='sgdfuse', task='medical', mask_provider='saliency')
    assert pipe.config.method_options['stage1_weights'] == str(shipped.MEDICAL_STAGE1_WEIGHTS)
    assert pipe.config.method_options['weights'] == str(shipped.MEDICAL_STUDENT_WEIGHTS)
    lap = FusionPipeline(method='laplacian', task='medical')
    wins = []
    for name in ('11', '16'):  # validation pairs: never trained on
        spect, mri = _spect(name)
        ir8, vis8 = imaging.rgb_to_gray(spect), mri
        ours = compute_metrics(imaging.to_uint8(pipe.fuse(spect, mri).luma), ir8, vis8,
                               HEADLINE, convention='evaluator')
        base = compute_metrics(imaging.to_uint8(lap.fuse(spect, mri).luma), ir8, vis8,
                               HEADLINE, convention='evaluator')
        wins.append(sum(ours[k] > base[k] for k in HEADLINE))
    assert min(wins) >= 6, wins
