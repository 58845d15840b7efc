"""Fusion at a working size blended at the frame's own size (``fusion.compose``): the maps
reproduce the networks' output where the sizes agree, and a frame fused at a smaller working
size keeps its detail, on real pairs."""

import numpy as np
import pytest

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.metrics import compute_metrics
from sgdfuse_ros.fusion import compose_fast
from sgdfuse_ros.fusion.compose import compose
from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig
from sgdfuse_ros.masks.saliency import SaliencyProvider


def _pair(ivif, name='M3FD'):
    pair = imaging.dataset_pairs(ivif / name)[0]
    ir = imaging.read_image(pair.ir, gray=True)
    return ir, imaging.read_image(pair.vis)


@pytest.mark.parametrize('method', ['stage1', 'sgdfuse'])
def test_maps_at_the_working_size_give_the_networks_output(ivif, method):
    from sgdfuse_ros.fusion.methods import build_method

    m = build_method(method, backend='onnxruntime')
    assert m.blend_maps
    ir8, vis8 = _pair(ivif)
    ir = imaging.resize(imaging.to_float(ir8), (320, 240))
    vis = imaging.resize(imaging.visible_luma(vis8), (320, 240))
    masks = SaliencyProvider()(ir, vis).as_tuple() if m.uses_masks else None
    out = m(ir, vis, masks, maps=True)
    fused, f1 = compose(out.maps, ir, vis)
    assert np.abs(f1 - out.f1).max() < 1e-4
    # the network's high pass sees its padding (240 rows padded to 256) in the last two rows
    assert np.abs(fused - out.fused)[:-2].max() < 1e-4
    assert np.array_equal(m(ir, vis, masks).fused, out.fused)  # maps change nothing


def _sf_qabf(luma, ir, vis8):
    m = compute_metrics(imaging.to_uint8(luma), ir, imaging.to_uint8(imaging.visible_luma(vis8)))
    return m['SF'], m['Qabf'], m['VIF']


def test_a_smaller_working_size_keeps_the_frames_detail(ivif):
    ir, vis = _pair(ivif)
    h, w = ir.shape
    cfg = dict(method='sgdfuse', mask_provider='saliency', thermal_smoothing=0.0)
    full = FusionPipeline(PipelineConfig(max_pixels=0, **cfg)).fuse(ir, vis)
    pipe = FusionPipeline(PipelineConfig(max_pixels=(w // 2) * (h // 2), **cfg))
    small = pipe.fuse(ir, vis)
    assert 'compose' in small.timings and small.image.shape == full.image.shape
    scaled = imaging.resize(pipe.method(
        imaging.resize(small.ir, (w // 2, h // 2)),
        imaging.resize(imaging.visible_luma(vis), (w // 2, h // 2)),
        tuple(imaging.resize(m, (w // 2, h // 2)) for m in small.masks)).fused, (w, h))
    ref, got, up = (_sf_qabf(x, ir, vis) for x in (full.luma, small.luma, scaled))
    for r, g, u in zip(ref, got, up):
        assert abs(g / r - 1) < 0.05  # within 5% of fusing at full size
        assert g > u  # and better than a fused half-size image scaled up


@pytest.mark.skipif(not compose_fast.available(), reason='numba is not installed')
@pytest.mark.parametrize('refine', [True, False])
def test_the_compiled_blend_equals_the_numpy_one(ivif, refine):
    from sgdfuse_ros.fusion.compose import BlendMaps
    from sgdfuse_ros.fusion.methods import build_method

    m = build_method('sgdfuse', backend='onnxruntime')
    ir8, vis8 = _pair(ivif)
    ir, vis = imaging.to_float(ir8), imaging.visible_luma(vis8)
    h, w = ir.shape
    work = (w // 3, h // 3)  # not a multiple of the networks' 32: padded grids
    ir_w, vis_w = imaging.resize(ir, work), imaging.resize(vis, work)
    out = m(ir_w, vis_w, SaliencyProvider()(ir_w, vis_w).as_tuple(), maps=True)
    maps = out.maps if refine else BlendMaps(work=out.maps.work, stage1=out.maps.stage1)
    ref, _ = compose(maps, ir, vis)
    fused, image = compose_fast.compose_frame(maps, ir, vis, vis8)
    # stage 1's F1 is folded into the refiner's maps unclamped: off where F1 saturates only
    err = np.abs(fused - ref) * 255
    assert err.mean() < 0.1 and np.mean(err > 1) < 0.005
    merged = imaging.merge_luma(fused, vis8).astype(int)
    assert np.abs(image.astype(int) - merged).max() <= 1  # the pipeline's colour merge
    assert np.mean(image != merged) < 0.01
    gray, none = compose_fast.compose_frame(maps, ir, vis)
    assert none is None and np.array_equal(gray, fused)


def test_a_stream_keeps_its_masks_at_the_working_size(ivif):
    """Masks are made, refreshed and carried at the working size; the fused frames keep the
    frame's size."""
    from sgdfuse_ros.fusion.stream import FusionStream

    ir, vis = _pair(ivif)
    h, w = ir.shape
    work = (w // 4 // 32 * 32, h // 4 // 32 * 32)
    pipe = FusionPipeline(PipelineConfig(method='sgdfuse', mask_provider='saliency',
                                         work_size=work))
    with FusionStream(pipe, mask_rate=5.0, live=False, camera_rate=10.0) as stream:
        for _ in range(4):
            res = stream.push(ir, vis)
            assert res.image.shape == vis.shape and 'compose' in res.timings
            assert res.masks[0].shape == res.masks[1].shape == (work[1], work[0])
        assert stream.mask_stats()['refreshes'] >= 1
