"""The fusion pipeline and the ``sgdfuse fuse`` / ``eval`` / ``demo`` commands."""

import json
import shutil

import numpy as np
import pytest

from sgdfuse_ros.tools.cli import main
from sgdfuse_ros.core import imaging
from sgdfuse_ros.fusion.methods import build_method, resolve_method_name
from sgdfuse_ros.fusion.pipeline import FusionPipeline


def _pair(ivif, name='FLIR_00211'):
    return (imaging.read_image(ivif / 'RoadScene' / 'ir' / f'{name}.jpg', gray=True),
            imaging.read_image(ivif / 'RoadScene' / 'vi' / f'{name}.jpg'))


def test_pipeline_colour_and_mono_output(ivif):
    ir, vis = _pair(ivif)
    res = FusionPipeline(method='laplacian').fuse(ir, vis)
    assert res.image.shape == vis.shape and res.image.dtype == np.uint8
    assert res.luma.shape == ir.shape and res.method == 'laplacian'
    assert {'thermal', 'fuse', 'merge', 'total'} <= set(res.timings)
    mono = FusionPipeline(method='laplacian', output='mono').fuse(ir, vis)
    assert mono.image.shape == ir.shape


def test_pipeline_mono16_thermal_and_homography(ivif):
    ir, vis = _pair(ivif)
    small = imaging.resize(ir, (ir.shape[1] // 2, ir.shape[0] // 2))
    mono16 = small.astype(np.uint16) * 40 + 20000  # a radiometric-looking 16-bit frame
    h = [2, 0, 0, 0, 2, 0, 0, 0, 1]
    res = FusionPipeline(method='max', homography=h).fuse(mono16, vis)
    assert res.image.shape == vis.shape
    assert 0.0 <= res.ir.min() and res.ir.max() <= 1.0 and res.ir.std() > 0.05


def test_pipeline_work_size_restores_full_size(ivif):
    ir, vis = _pair(ivif)
    res = FusionPipeline(method='mean', work_size=(160, 96)).fuse(ir, vis)
    assert res.image.shape == vis.shape and 'resize' in res.timings


def test_pipeline_rejects_bad_input_with_a_clear_message(ivif):
    ir, vis = _pair(ivif)
    pipe = FusionPipeline(method='mean')
    with pytest.raises(imaging.ImageError, match='size mismatch'):
        pipe.fuse(ir[:-3], vis)
    with pytest.raises(imaging.ImageError, match='8-bit'):
        pipe.fuse(ir, vis.astype(np.float32))
    with pytest.raises(ValueError, match='unknown fusion method'):
        FusionPipeline(method='nope')
    with pytest.raises(TypeError, match='unknown pipeline option'):
        FusionPipeline(colour=True)


def test_auto_resolves_to_an_available_method():
    name = resolve_method_name('auto')
    assert build_method(name).name == name


def test_cli_fuse_folder_and_eval_json(ivif, tmp_path, capsys):
    ir_dir, vi_dir = tmp_path / 'ir', tmp_path / 'vi'
    ir_dir.mkdir()
    vi_dir.mkdir()
    for n in ('FLIR_00211', 'FLIR_00977'):
        shutil.copy(ivif / 'RoadScene' / 'ir' / f'{n}.jpg', ir_dir)
        shutil.copy(ivif / 'RoadScene' / 'vi' / f'{n}.jpg', vi_dir)
    out = tmp_path / 'fused'
    assert main(['fuse', '--ir', str(ir_dir), '--vis', str(vi_dir), '--out', str(out),
                 '--method', 'laplacian', '--quiet']) == 0
    assert sorted(p.name for p in out.iterdir()) == ['FLIR_00211.png', 'FLIR_00977.png']
    assert imaging.read_image(out / 'FLIR_00211.png').ndim == 3  # colour kept
    capsys.readouterr()
    assert main(['eval', '--ir', str(ir_dir), '--vis', str(vi_dir), '--fused', str(out),
                 '--json']) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {'EN', 'SD', 'SF', 'AG', 'MI', 'SCD', 'VIF', 'Qabf', 'SSIM', 'PSNR',
                           'CC'}
    assert all(np.isfinite(v) for v in scores.values())


def test_cli_folder_mode_keeps_going_and_lists_failures(ivif, tmp_path, capsys):
    ir_dir, vi_dir = tmp_path / 'ir', tmp_path / 'vi'
    ir_dir.mkdir()
    vi_dir.mkdir()
    shutil.copy(ivif / 'RoadScene' / 'ir' / 'FLIR_00211.jpg', ir_dir)
    shutil.copy(ivif / 'RoadScene' / 'vi' / 'FLIR_00211.jpg', vi_dir)
    (ir_dir / 'broken.png').write_bytes(b'garbage')
    shutil.copy(ivif / 'RoadScene' / 'vi' / 'FLIR_00977.jpg', vi_dir / 'broken.jpg')
    shutil.copy(ivif / 'RoadScene' / 'ir' / 'FLIR_00977.jpg', ir_dir / 'lonely.jpg')
    out = tmp_path / 'fused'
    rc = main(['fuse', '--ir', str(ir_dir), '--vis', str(vi_dir), '--out', str(out),
               '--method', 'mean', '--quiet'])
    err = capsys.readouterr().err
    assert rc == 1
    assert (out / 'FLIR_00211.png').is_file()
    assert 'broken.png: cannot decode' in err and 'lonely.jpg' in err


def test_cli_single_pair_errors(ivif, tmp_path, capsys):
    rc = main(['fuse', '--ir', str(tmp_path / 'none.png'),
               '--vis', str(ivif / 'RoadScene' / 'vi' / 'FLIR_00211.jpg'),
               '--out', str(tmp_path / 'o.png'), '--method', 'mean'])
    assert rc == 1 and 'none.png: no such file' in capsys.readouterr().err
    rc = main(['fuse', '--ir', str(ivif / 'TNO' / 'ir' / '01.png'),
               '--vis', str(ivif / 'RoadScene' / 'vi' / 'FLIR_00211.jpg'),
               '--out', str(tmp_path / 'o.png'), '--method', 'mean'])
    assert rc == 1 and 'size mismatch' in capsys.readouterr().err


def test_cli_demo_prints_metric_table(tmp_path, capsys):
    assert main(['demo', '--offline', '--out', str(tmp_path), '--methods', 'mean',
                 'laplacian']) == 0
    out = capsys.readouterr().out
    assert 'laplacian' in out and 'Qabf' in out
    assert len(list((tmp_path / 'laplacian').glob('*.png'))) == 7
