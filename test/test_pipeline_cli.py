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
    assert rc == 2 and 'none.png: no such file' in capsys.readouterr().err
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


# ----------------------------------------------------------------------------------------------
# fuse --sequence: two folders as one video, through the offline FusionStream
# ----------------------------------------------------------------------------------------------

def _pan_folders(ivif, root, frames=12, step=6):
    """A left-to-right pan across a real pair, written as numbered frames (PNG, lossless)."""
    ir = imaging.read_image(ivif / 'RoadScene' / 'ir' / 'FLIR_00977.jpg', gray=True)
    vi = imaging.read_image(ivif / 'RoadScene' / 'vi' / 'FLIR_00977.jpg')
    h, w = 224, 416
    ir_dir, vi_dir = root / 'ir', root / 'vi'
    pan = []
    for i in range(frames):
        x = i * step
        pan.append((np.ascontiguousarray(ir[:h, x:x + w]), np.ascontiguousarray(vi[:h, x:x + w])))
        imaging.write_image(ir_dir / f'f{i:03d}.png', pan[-1][0])
        imaging.write_image(vi_dir / f'f{i:03d}.png', pan[-1][1])
    return ir_dir, vi_dir, pan


def test_cli_fuse_sequence_is_the_offline_stream(ivif, tmp_path, capsys):
    from sgdfuse_ros.fusion.stream import FusionStream

    ir_dir, vi_dir, pan = _pan_folders(ivif, tmp_path)
    out = tmp_path / 'fused'
    assert main(['fuse', '--ir', str(ir_dir), '--vis', str(vi_dir), '--out', str(out),
                 '--sequence', '--rate', '10', '--mask-rate', '2.5',
                 '--mask-provider', 'saliency', '--quiet']) == 0
    said = capsys.readouterr().out
    assert 'fused 12 frame(s) of a 10 Hz sequence' in said
    assert '3 refresh(es), every 4 frame(s)' in said  # frames 0, 4, 8
    # Frame for frame what the stream gives for the video in name order (the node's schedule).
    pipeline = FusionPipeline(method='auto', mask_provider='saliency')
    assert pipeline.method.uses_masks
    with FusionStream(pipeline, live=False, camera_rate=10.0, mask_rate=2.5) as stream:
        expected = [stream.push(t, v).image for t, v in pan]
    written = [imaging.read_image(out / f'f{i:03d}.png') for i in range(len(pan))]
    assert all(np.array_equal(a, b) for a, b in zip(written, expected))
    # Not what fusing the frames as unrelated still images gives (no temporal gain, masks of
    # each frame at once).
    stills = tmp_path / 'stills'
    assert main(['fuse', '--ir', str(ir_dir), '--vis', str(vi_dir), '--out', str(stills),
                 '--mask-provider', 'saliency', '--quiet']) == 0
    assert not np.array_equal(imaging.read_image(stills / 'f002.png'), written[2])


def test_cli_fuse_sequence_defaults_and_errors(ivif, tmp_path, capsys):
    ir_dir, vi_dir, _ = _pan_folders(ivif, tmp_path, frames=3)
    out = tmp_path / 'fused'
    assert main(['fuse', '--ir', str(ir_dir), '--vis', str(vi_dir), '--out', str(out),
                 '--sequence', '--method', 'laplacian', '--quiet']) == 0
    assert 'of a 10 Hz sequence' in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ['f000.png', 'f001.png', 'f002.png']
    bad = [(['--sequence'], 'folders'), (['--rate', '5'], '--rate applies to --sequence only'),
           (['--sequence', '--rate', '0'], '--rate must be > 0'),
           (['--sequence', '--mask-rate', '-1'], '--mask-rate must be > 0')]
    for extra, message in bad:
        files = ['--ir', str(ir_dir / 'f000.png'), '--vis', str(vi_dir / 'f000.png')]
        args = files if extra == ['--sequence'] else ['--ir', str(ir_dir), '--vis', str(vi_dir)]
        rc = main(['fuse', *args, '--out', str(tmp_path / 'x'), '--method', 'mean', *extra])
        assert rc == 2 and message in capsys.readouterr().err, extra


# ----------------------------------------------------------------------------------------------
# eval --convention
# ----------------------------------------------------------------------------------------------

def test_cli_eval_convention_changes_ssim_and_psnr_only(ivif, tmp_path, capsys):
    ir_dir, vi_dir = ivif / 'RoadScene' / 'ir', ivif / 'RoadScene' / 'vi'
    sub_ir, sub_vi = tmp_path / 'ir', tmp_path / 'vi'
    sub_ir.mkdir()
    sub_vi.mkdir()
    for n in ('FLIR_00211', 'FLIR_00977'):
        shutil.copy(ir_dir / f'{n}.jpg', sub_ir)
        shutil.copy(vi_dir / f'{n}.jpg', sub_vi)
    out = tmp_path / 'fused'
    assert main(['fuse', '--ir', str(sub_ir), '--vis', str(sub_vi), '--out', str(out),
                 '--method', 'laplacian', '--quiet']) == 0
    # One fused image darker, so that its peak max(F) is below 255 (where the two PSNRs part).
    dim = imaging.read_image(out / 'FLIR_00977.png')
    imaging.write_image(out / 'FLIR_00977.png', (dim * 0.8).astype(np.uint8))
    capsys.readouterr()
    scores = {}
    for convention in ('standard', 'evaluator'):
        assert main(['eval', '--ir', str(sub_ir), '--vis', str(sub_vi), '--fused', str(out),
                     '--json', '--per-image', '--convention', convention]) == 0
        scores[convention] = json.loads(capsys.readouterr().out)
    std, ev = scores['standard'], scores['evaluator']
    assert set(std) == set(ev)
    for name in ('FLIR_00211', 'FLIR_00977'):
        s, e = std['per_image'][name], ev['per_image'][name]
        assert {k for k in s if s[k] != e[k]} <= {'SSIM', 'PSNR'} and s['SSIM'] != e['SSIM']
        # Evaluator PSNR: peak max(F) instead of 255.
        peak = float(imaging.read_image(out / f'{name}.png', gray=True).max())
        assert e['PSNR'] == pytest.approx(s['PSNR'] + 20 * np.log10(peak / 255.0), abs=1e-9)
    assert {k for k in std if k != 'per_image' and std[k] != ev[k]} == {'SSIM', 'PSNR'}
    # The default is the standard convention; the table says which one it shows.
    assert main(['eval', '--ir', str(sub_ir), '--vis', str(sub_vi), '--fused', str(out),
                 '--json', '--per-image']) == 0
    assert json.loads(capsys.readouterr().out) == std
    assert main(['eval', '--ir', str(sub_ir), '--vis', str(sub_vi), '--fused', str(out),
                 '--convention', 'evaluator']) == 0
    assert 'evaluator convention' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(['eval', '--ir', str(sub_ir), '--vis', str(sub_vi), '--fused', str(out),
              '--convention', 'matlab'])
    assert "invalid choice: 'matlab'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# The command's structure
# ----------------------------------------------------------------------------------------------

def test_every_command_parses_and_dispatches(capsys):
    from sgdfuse_ros.tools.cli import COMMANDS, build_parser

    parser = build_parser()
    assert main([]) == 2  # no command: the help, exit status 2
    listed = capsys.readouterr().out
    for name, cmd in COMMANDS.items():
        assert name in listed
        assert callable(getattr(cmd.module, cmd.run)), f'{name}: no {cmd.run} in {cmd.module}'
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([name, '--help'])
        assert exc.value.code == 0
        assert cmd.description.split()[0] in capsys.readouterr().out
