"""Limits that keep the user's memory and files safe: the pipeline's pixel budget, memory handed
back after large frames, and the command line's output-path checks and file-system errors."""

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

    def __call__(self, ir, vis, masks=None):
        self.sizes.append((ir.shape[1], ir.shape[0]))
        if masks is not None:
            self.sizes.extend((m.shape[1], m.shape[0]) for m in masks)
        return self.method(ir, vis, masks)


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
    np.testing.assert_array_equal(res.image, imaging.merge_luma(res.luma, vis))


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
