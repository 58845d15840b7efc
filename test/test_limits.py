"""Limits that keep the user's memory and files safe: the pipeline's pixel budget, memory handed
back after large frames, and the command line's output-path checks and file-system errors."""

from pathlib import Path
import platform
import sys

import numpy as np
import pytest

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.budget import (DEFAULT_MAX_PIXELS, FrameTooLarge, PixelBudget, fit_pixels,
                                     parse_max_pixels)
from sgdfuse_ros.core.memory import proc_status_mb, release_heap
from sgdfuse_ros.fusion import pipeline as pipeline_module
from sgdfuse_ros.fusion.pipeline import FusionPipeline
from sgdfuse_ros.tools.cli import main


def _pair(ivif, size=None, name='FLIR_00211'):
    """A real RoadScene pair (thermal gray, visible RGB), scaled to ``size`` ``(W, H)``."""
    ir = imaging.read_image(ivif / 'RoadScene' / 'ir' / f'{name}.jpg', gray=True)
    vis = imaging.read_image(ivif / 'RoadScene' / 'vi' / f'{name}.jpg', gray=False)
    if size is not None:
        ir, vis = imaging.resize(ir, size), imaging.resize(vis, size)
    return ir, vis


class _Recorder:
    """A real fusion method that notes the size of every pair it is handed."""

    def __init__(self, method):
        self.method, self.sizes = method, []

    def __getattr__(self, key):
        return getattr(self.method, key)

    def __call__(self, ir, vis, masks=None, **options):
        self.sizes.append((ir.shape[1], ir.shape[0]))
        if masks is not None:
            self.sizes.extend((m.shape[1], m.shape[0]) for m in masks)
        return self.method(ir, vis, masks, **options)


# ----------------------------------------------------------------------------------------------
# The budget itself
# ----------------------------------------------------------------------------------------------

def test_budget_sizes_keep_the_aspect_and_fit():
    assert DEFAULT_MAX_PIXELS == 1920 * 1080
    assert fit_pixels((640, 480), DEFAULT_MAX_PIXELS) == (640, 480)
    assert fit_pixels((1920, 1080), DEFAULT_MAX_PIXELS) == (1920, 1080)
    assert fit_pixels((3840, 2160), DEFAULT_MAX_PIXELS) == (1920, 1080)
    for size in ((4000, 3000), (8000, 6000), (12345, 77), (77, 12345), (5, 4_000_000)):
        w, h = fit_pixels(size, DEFAULT_MAX_PIXELS)
        assert w * h <= DEFAULT_MAX_PIXELS and w >= 1 and h >= 1, size
        if min(size) > 100:  # aspect kept to a pixel, and no room wasted
            assert abs(w / h - size[0] / size[1]) < size[0] / size[1] * 2 / min(w, h)
            assert (w + 1) * (h + 1) > DEFAULT_MAX_PIXELS
    assert parse_max_pixels('1920x1080') == parse_max_pixels(2073600) == 2073600
    assert parse_max_pixels('0') is None and parse_max_pixels(0) is None
    assert parse_max_pixels(None) is None
    for bad in ('big', '-5', '0x10', '1920x', True):
        with pytest.raises(ValueError, match='max_pixels'):
            parse_max_pixels(bad)
    with pytest.raises(ValueError, match='oversize must be one of resize, refuse'):
        PixelBudget(mode='crop')
    budget = PixelBudget(max_pixels='100x100', mode='refuse')
    assert budget.working_size((100, 100)) == (100, 100)
    with pytest.raises(FrameTooLarge, match=r'x.png: frame 101x100 \(10100 pixels\) is over the '
                       r'pixel budget max_pixels 10000'):
        budget.working_size((101, 100), name='x.png')


# ----------------------------------------------------------------------------------------------
# The pipeline under a budget
# ----------------------------------------------------------------------------------------------

def test_a_large_pair_fuses_at_the_budget_and_comes_back_full_size(ivif):
    ir, vis = _pair(ivif, (4000, 3000))
    pipe = FusionPipeline(method='mean')  # the default budget, resize mode
    assert pipe.config.max_pixels == DEFAULT_MAX_PIXELS and pipe.config.oversize == 'resize'
    pipe.method = rec = _Recorder(pipe.method)
    res = pipe.fuse(ir, vis)
    work = fit_pixels((4000, 3000), DEFAULT_MAX_PIXELS)
    assert rec.sizes == [work] and work[0] * work[1] <= DEFAULT_MAX_PIXELS
    assert work == pipe.working_size((4000, 3000)) == (1662, 1247)
    assert res.image.shape == vis.shape and res.luma.shape == ir.shape == res.ir.shape
    # The mean fused at the working size, brought back to the frame's size, in its colour.
    ir_f, vis_y = imaging.to_float(ir), imaging.visible_luma(vis)
    small = 0.5 * (imaging.resize(ir_f, work) + imaging.resize(vis_y, work))
    np.testing.assert_allclose(res.luma, imaging.resize(small.astype(np.float32), (4000, 3000)),
                               atol=1e-6)
    # the colour merge (compiled where numba is installed) within one 8-bit step of imaging's
    np.testing.assert_allclose(res.image, imaging.merge_luma(res.luma, vis), atol=1, rtol=0)


def test_no_limit_and_a_raised_budget_run_at_full_size(ivif):
    ir, vis = _pair(ivif, (2000, 1500))
    for max_pixels in (None, 0, '2000x1500'):
        pipe = FusionPipeline(method='mean', max_pixels=max_pixels)
        pipe.method = rec = _Recorder(pipe.method)
        assert pipe.fuse(ir, vis).image.shape == vis.shape
        assert rec.sizes == [(2000, 1500)], max_pixels


def test_work_size_is_held_to_the_budget(ivif):
    ir, vis = _pair(ivif, (800, 600))
    pipe = FusionPipeline(method='mean', work_size=(4000, 3000), max_pixels=640 * 480)
    pipe.method = rec = _Recorder(pipe.method)
    assert pipe.fuse(ir, vis).image.shape == vis.shape
    assert rec.sizes == [(640, 480)]
    with pytest.raises(ValueError, match=r"work_size 4000x3000 is over max_pixels 307200 .*"
                       r"oversize='resize'"):
        FusionPipeline(method='mean', work_size=(4000, 3000), max_pixels=640 * 480,
                       oversize='refuse')
    with pytest.raises(ValueError, match='oversize must be one of'):
        FusionPipeline(method='mean', oversize='shrink')


def test_refuse_mode_names_the_option_before_any_work(ivif):
    ir, vis = _pair(ivif, (4000, 3000))
    pipe = FusionPipeline(method='mean', oversize='refuse')
    pipe.method = rec = _Recorder(pipe.method)
    with pytest.raises(FrameTooLarge) as exc:
        pipe.fuse(ir, vis, name='big.png')
    message = str(exc.value)
    assert '\n' not in message and message.startswith('big.png: frame 4000x3000')
    assert 'max_pixels 2073600' in message and "oversize='resize'" in message
    assert isinstance(exc.value, imaging.ImageError)  # callers skip it as a bad pair
    assert rec.sizes == [] and pipe.gain.bounds is None  # nothing was done with it
    small_ir, small_vis = _pair(ivif, (640, 480))
    assert pipe.fuse(small_ir, small_vis).image.shape == small_vis.shape
    # A thermal frame over the budget is refused too, whatever the homography makes of it.
    with pytest.raises(FrameTooLarge, match='frame 4000x3000'):
        pipe.fuse(ir, small_vis)


def test_masks_of_a_large_frame_come_from_the_working_size(ivif):
    ir, vis = _pair(ivif, (2400, 1800))
    pipe = FusionPipeline(method='auto', mask_provider='saliency', max_pixels=480 * 360)
    assert pipe.method.uses_masks
    pipe.method = rec = _Recorder(pipe.method)
    res = pipe.fuse(ir, vis)
    assert rec.sizes == [(480, 360)] * 3  # the pair and both masks
    assert res.image.shape == vis.shape and res.f1.shape == ir.shape
    assert all(m.shape == ir.shape for m in res.masks)  # the result's masks: the frame's size
    # Masks a stream hands in (at the frame's size) reach the method at the working size.
    given = tuple(np.full(ir.shape, v, np.float32) for v in (0.25, 0.75))
    pipe.fuse(ir, vis, masks=given)
    assert rec.sizes[3:] == [(480, 360)] * 3


def test_banded_colour_work_equals_the_whole_frame(ivif):
    ir, vis = _pair(ivif, (2100, 1100))  # over BAND_PIXELS: done in bands
    assert 2100 * 1100 > pipeline_module.BAND_PIXELS
    y = pipeline_module._banded_luma(vis)
    np.testing.assert_array_equal(y, imaging.visible_luma(vis))
    fused = imaging.to_float(ir)
    np.testing.assert_array_equal(pipeline_module._banded_merge(fused, vis),
                                  imaging.merge_luma(fused, vis))
    np.testing.assert_array_equal(pipeline_module._banded_merge(fused, None),
                                  imaging.to_uint8(fused))


def test_memory_returns_after_a_burst_of_large_frames(ivif):
    """640x480 frames, then 3840x2160 ones (fused at the default budget), then 640x480 again
    through one pipeline of the default method: resident memory returns to within 10% of its
    level before the burst (ONNX Runtime's arena shrunk, the C heap trimmed)."""
    if proc_status_mb() is None:
        pytest.skip('needs /proc/self/status')
    pipe = FusionPipeline(method='auto', mask_provider='saliency', thermal_smoothing=0.0)
    small, large = _pair(ivif, (640, 480)), _pair(ivif, (3840, 2160))
    from sgdfuse_ros.fusion import compose_fast
    if compose_fast.available():  # its compiled code loads once, whatever the frames
        compose_fast.warm()
    for _ in range(3):
        pipe.fuse(*small)
    before = proc_status_mb()
    for _ in range(2):
        pipe.fuse(*large)
    during = proc_status_mb()
    for _ in range(3):
        pipe.fuse(*small)
    after = proc_status_mb()
    assert after <= 1.10 * before, (before, during, after)


def test_release_heap_and_rss_on_linux():
    if not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc':
        pytest.skip('glibc on Linux only')
    assert release_heap() is True
    assert proc_status_mb('VmHWM') >= proc_status_mb('VmRSS') > 0
    assert proc_status_mb('NoSuchField') is None


# ----------------------------------------------------------------------------------------------
# The command line: the budget's options
# ----------------------------------------------------------------------------------------------

def _write_pair(ivif, folder, name='a', size=None, suffix='.png'):
    """A real pair written as ``folder/ir/NAME`` and ``folder/vi/NAME``; returns the paths."""
    ir, vis = _pair(ivif, size)
    paths = (folder / 'ir' / f'{name}{suffix}', folder / 'vi' / f'{name}{suffix}')
    imaging.write_image(paths[0], ir)
    imaging.write_image(paths[1], vis)
    return paths


def _one_error_line(capsys, *needles):
    """stderr holds exactly one line, the ``sgdfuse: error:`` line naming every needle."""
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith('sgdfuse: error: '), lines
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def test_cli_fuse_max_pixels_resizes_or_refuses(ivif, tmp_path, capsys):
    ir_path, vis_path = _write_pair(ivif, tmp_path, size=(1200, 900))
    out = tmp_path / 'o.png'
    assert main(['fuse', '--ir', str(ir_path), '--vis', str(vis_path), '--out', str(out),
                 '--method', 'mean', '--max-pixels', '320x240']) == 0
    written = imaging.read_image(out)
    assert written.shape == (900, 1200, 3)
    ir, vis = imaging.read_image(ir_path, gray=True), imaging.read_image(vis_path)
    pipe = FusionPipeline(method='mean', max_pixels=320 * 240, thermal_smoothing=0.0)
    np.testing.assert_array_equal(written, pipe.fuse(ir, vis).image)
    assert pipe.working_size((1200, 900)) == (320, 240)
    rc = main(['fuse', '--ir', str(ir_path), '--vis', str(vis_path), '--out',
               str(tmp_path / 'r.png'), '--method', 'mean', '--max-pixels', '76800',
               '--oversize', 'refuse'])
    assert rc == 1 and not (tmp_path / 'r.png').exists()
    _one_error_line(capsys, 'frame 1200x900', '--max-pixels 76800', '--oversize resize')
    with pytest.raises(SystemExit):
        main(['fuse', '--ir', str(ir_path), '--vis', str(vis_path), '--out', str(out),
              '--max-pixels', 'huge'])
    assert 'max_pixels must be a pixel count' in capsys.readouterr().err


def test_cli_masks_max_pixels_writes_full_size_masks(ivif, tmp_path, capsys):
    ir_path, vis_path = _write_pair(ivif, tmp_path, size=(1200, 900))
    out = tmp_path / 'masks'
    assert main(['masks', '--ir', str(ir_path), '--vis', str(vis_path), '--out', str(out),
                 '--provider', 'saliency', '--max-pixels', '320x240', '--quiet']) == 0
    assert imaging.read_image(out / 'a_ir_mask.png').shape == (900, 1200)
    assert imaging.read_image(out / 'a_overlay.png').shape == (900, 2400, 3)
    capsys.readouterr()
    assert main(['masks', '--ir', str(ir_path), '--vis', str(vis_path), '--out',
                 str(tmp_path / 'm2'), '--provider', 'saliency', '--max-pixels', '320x240',
                 '--oversize', 'refuse', '--quiet']) == 1
    assert '--max-pixels 76800' in capsys.readouterr().err
    assert not list((tmp_path / 'm2').glob('*.png'))


# ----------------------------------------------------------------------------------------------
# The command line: outputs never overwrite inputs, existing files only with --overwrite
# ----------------------------------------------------------------------------------------------

def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def test_cli_fuse_out_equal_to_an_input_folder_is_refused(ivif, tmp_path, capsys):
    for name in ('a', 'b'):
        _write_pair(ivif, tmp_path / 'd', name=name)
    before = _snapshot(tmp_path / 'd')
    rc = main(['fuse', '--ir', str(tmp_path / 'd' / 'ir'), '--vis', str(tmp_path / 'd' / 'vi'),
               '--out', str(tmp_path / 'd' / 'ir'), '--method', 'mean', '--quiet'])
    assert rc == 2
    _one_error_line(capsys, 'is the input', 'another --out')
    assert _snapshot(tmp_path / 'd') == before
    # An input of another type under the same name: the fused a.png would be read as it.
    jpg = tmp_path / 'j'
    _write_pair(ivif, jpg, suffix='.jpg')
    before = _snapshot(jpg)
    assert main(['fuse', '--ir', str(jpg / 'ir'), '--vis', str(jpg / 'vi'), '--out',
                 str(jpg / 'vi'), '--method', 'mean', '--overwrite', '--quiet']) == 2
    _one_error_line(capsys, 'beside the input', 'a.jpg')
    assert _snapshot(jpg) == before


def test_cli_fuse_pair_never_replaces_an_input(ivif, tmp_path, capsys):
    ir_path, vis_path = _write_pair(ivif, tmp_path)
    before = _snapshot(tmp_path)
    link = tmp_path / 'link.png'
    link.hardlink_to(ir_path)  # the same file under another name
    sym = tmp_path / 'sym.png'
    sym.symlink_to(vis_path)
    for out in (ir_path, vis_path, link, sym, tmp_path / 'ir' / '..' / 'ir' / 'a.png'):
        for extra in ([], ['--overwrite']):
            rc = main(['fuse', '--ir', str(ir_path), '--vis', str(vis_path), '--out', str(out),
                       '--method', 'mean', *extra])
            assert rc == 2, (out, extra)
            _one_error_line(capsys, out, 'never replaces an input')
    assert {p: b for p, b in _snapshot(tmp_path).items() if p.name == 'a.png'} == before


def test_cli_fuse_existing_outputs_need_overwrite(ivif, tmp_path, capsys):
    ir_path, vis_path = _write_pair(ivif, tmp_path / 'in')
    out = tmp_path / 'o.png'
    out.write_bytes(b'keep me')
    args = ['fuse', '--ir', str(ir_path), '--vis', str(vis_path), '--out', str(out),
            '--method', 'mean']
    assert main(args) == 2
    _one_error_line(capsys, out, 'exists already', '--overwrite')
    assert out.read_bytes() == b'keep me'
    assert main([*args, '--overwrite']) == 0
    assert imaging.read_image(out).shape == imaging.read_image(vis_path).shape
    # Folder mode: every name is checked before the first is written.
    for name in ('b', 'c'):
        _write_pair(ivif, tmp_path / 'in', name=name)
    fused = tmp_path / 'fused'
    fused.mkdir()
    (fused / 'c.png').write_bytes(b'keep me too')
    folder_args = ['fuse', '--ir', str(tmp_path / 'in' / 'ir'), '--vis',
                   str(tmp_path / 'in' / 'vi'), '--out', str(fused), '--method', 'mean',
                   '--quiet']
    for extra in ([], ['--sequence']):
        assert main([*folder_args, *extra]) == 2
        _one_error_line(capsys, fused / 'c.png', 'exists already', '--overwrite')
        assert sorted(p.name for p in fused.iterdir()) == ['c.png']
        assert (fused / 'c.png').read_bytes() == b'keep me too'
    assert main([*folder_args, '--overwrite']) == 0
    assert sorted(p.name for p in fused.iterdir()) == ['a.png', 'b.png', 'c.png']
    assert imaging.read_image(fused / 'c.png').ndim == 3


def test_cli_masks_outputs_are_checked_like_fuse(ivif, tmp_path, capsys):
    ir_path, vis_path = _write_pair(ivif, tmp_path)
    out = tmp_path / 'm'
    out.mkdir()
    (out / 'a_overlay.png').write_bytes(b'keep me')
    args = ['masks', '--ir', str(ir_path), '--vis', str(vis_path), '--out', str(out),
            '--provider', 'saliency', '--quiet']
    assert main(args) == 2
    _one_error_line(capsys, 'a_overlay.png', 'exists already', '--overwrite')
    assert sorted(p.name for p in out.iterdir()) == ['a_overlay.png']
    assert main([*args, '--overwrite']) == 0
    assert len(list(out.iterdir())) == 3
    # Masks written into the thermal folder under an input's name are refused.
    imaging.write_image(tmp_path / 'ir' / 'a_ir_mask.png', np.zeros((4, 4), np.uint8))
    before = _snapshot(tmp_path / 'ir')
    assert main(['masks', '--ir', str(tmp_path / 'ir'), '--vis', str(tmp_path / 'vi'),
                 '--out', str(tmp_path / 'ir'), '--provider', 'saliency', '--overwrite',
                 '--quiet']) == 2
    _one_error_line(capsys, 'a_ir_mask.png', 'is the input')
    assert _snapshot(tmp_path / 'ir') == before


# ----------------------------------------------------------------------------------------------
# The command line: file-system problems are one line, exit status 2
# ----------------------------------------------------------------------------------------------

def test_cli_file_system_errors_are_one_line(ivif, tmp_path, capsys):
    ir_path, vis_path = _write_pair(ivif, tmp_path)
    ir_dir, vi_dir = tmp_path / 'ir', tmp_path / 'vi'
    a_file = tmp_path / 'existing.png'
    a_file.write_bytes(b'x')
    a_folder = tmp_path / 'folder'
    a_folder.mkdir()
    (a_folder / 'a.png').mkdir()  # a folder where the fused a.png would go
    pair = ['--ir', str(ir_path), '--vis', str(vis_path)]
    folders = ['--ir', str(ir_dir), '--vis', str(vi_dir)]
    cases = [
        (['fuse', *folders, '--out', str(a_file)], (a_file, 'is a file, not a folder')),
        (['fuse', *folders, '--out', str(a_file), '--sequence'], (a_file, 'not a folder')),
        (['fuse', *pair, '--out', str(a_folder)], (a_folder, 'is a folder')),
        (['fuse', *folders, '--out', str(a_folder)], (a_folder / 'a.png', 'is a folder')),
        (['fuse', *pair, '--out', str(a_file / 'o.png')], (a_file, 'cannot create')),
        (['fuse', *pair, '--out', str(tmp_path / 'o.tga')], ('o.tga', 'unknown image type')),
        (['fuse', '--ir', str(tmp_path / 'none.png'), '--vis', str(vis_path), '--out',
          str(tmp_path / 'o.png')], ('none.png', 'no such file')),
        (['masks', *pair, '--out', str(a_file)], (a_file, 'is a file, not a folder')),
        (['masks', *folders, '--out', str(a_file / 'sub')], (a_file, 'cannot create')),
        (['eval', *folders, '--fused', str(tmp_path / 'missing')],
         ('--fused', 'missing', 'no such folder')),
        (['eval', *folders, '--fused', str(a_file)], (a_file, 'is a file, not a folder')),
    ]
    if Path('/proc/self').is_dir():
        cases += [(['fuse', *pair, '--out', '/proc/o.png'], ('/proc/o.png', 'cannot write')),
                  (['fuse', *folders, '--out', '/proc/fused'], ('/proc/fused', 'cannot')),
                  (['masks', *pair, '--out', '/proc/m'], ('/proc/m', 'cannot'))]
    for argv, needles in cases:
        if argv[0] in ('fuse', 'masks'):
            argv = [*argv, '--method', 'mean'] if argv[0] == 'fuse' else \
                [*argv, '--provider', 'saliency']
        assert main(argv) == 2, argv
        _one_error_line(capsys, *needles)
    assert a_file.read_bytes() == b'x' and not (tmp_path / 'o.png').exists()


# ----------------------------------------------------------------------------------------------
# The node's parameters
# ----------------------------------------------------------------------------------------------

def test_node_parameters_carry_the_budget():
    from sgdfuse_ros.params import ParameterError, validate_settings

    cfg = validate_settings({}).pipeline_config()
    assert (cfg.max_pixels, cfg.oversize) == (DEFAULT_MAX_PIXELS, 'resize')
    cfg = validate_settings({'max_pixels': 640 * 480, 'oversize': 'refuse'}).pipeline_config()
    pipe = FusionPipeline(cfg)
    assert pipe.budget == PixelBudget(max_pixels=640 * 480, mode='refuse',
                                      multiple=pipe.budget.multiple)
    unlimited = validate_settings({'max_pixels': 0}).pipeline_config()
    assert FusionPipeline(unlimited).budget.max_pixels is None
    with pytest.raises(ParameterError, match=r'work_width x work_height \(800x600\) is over '
                       'max_pixels 307200 with oversize refuse'):
        validate_settings({'max_pixels': 640 * 480, 'oversize': 'refuse', 'work_width': 800,
                           'work_height': 600})
    with pytest.raises(ParameterError, match='oversize must be one of resize, refuse'):
        validate_settings({'oversize': 'crop'})
    with pytest.raises(ParameterError, match='max_pixels must be >= 0'):
        validate_settings({'max_pixels': -1})
