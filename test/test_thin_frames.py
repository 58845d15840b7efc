"""Frames of odd shapes against the pixel budget and the stream: thin frames, whose padding to
the networks' multiple would multiply their pixels, and frames with a side of one pixel."""

import subprocess
import sys

import numpy as np
import pytest

from sgdfuse_ros.core.budget import (DEFAULT_MAX_PIXELS, FrameTooLarge, PixelBudget,
                                     pad_allowance, padded)
from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig, pad_multiple
from sgdfuse_ros.fusion.stream import FusionStream


def test_the_budget_counts_the_padded_frame():
    b = PixelBudget(multiple=32)
    for size in ((1920, 1080), (1280, 720), (640, 512), (1, 1)):  # ordinary padding fits
        assert b.fits(size) and b.working_size(size) == size, size
    assert PixelBudget(480 * 360, multiple=32).fits((480, 360))  # 480x384: small budgets too
    for size in ((500_000, 1), (1_000_000, 1), (1, 300_000), (65_000, 33)):
        assert not b.fits(size), size
        w, h = b.working_size(size)
        pw, ph = padded((w, h), 32)
        assert pw * ph <= DEFAULT_MAX_PIXELS + pad_allowance(DEFAULT_MAX_PIXELS, 32), size
        assert w * h <= DEFAULT_MAX_PIXELS, size
        assert w >= 1 and h >= 1 and (w > 1000 or h > 1000), (size, w, h)  # room not wasted
    with pytest.raises(FrameTooLarge, match=r'run on 500000x32 \(16000000 pixels\) padded'):
        PixelBudget(multiple=32, mode='refuse').check((500_000, 1))
    assert PixelBudget().fits((500_000, 1))  # without padding (no network): its own pixels


def test_network_methods_budget_at_their_networks_multiple():
    assert pad_multiple(FusionPipeline(PipelineConfig(method='mean')).method) == 1
    assert FusionPipeline(PipelineConfig(method='sgdfuse')).budget.multiple >= 8


def _peak_mb(width: int, height: int) -> tuple[tuple[int, ...], int]:
    """Fuse one random ``width`` x ``height`` pair with the default method in a fresh process:
    the fused image's shape and the process's peak RSS (MB)."""
    code = (
        'import resource, numpy as np\n'
        'from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig\n'
        "p = FusionPipeline(PipelineConfig(method='sgdfuse'))\n"
        'rng = np.random.default_rng(0)\n'
        f'ir = rng.integers(20000, 30000, ({height}, {width})).astype(np.uint16)\n'
        f'vis = rng.integers(0, 255, ({height}, {width}, 3)).astype(np.uint8)\n'
        'r = p.fuse(ir, vis)\n'
        "print(*r.image.shape, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    *shape, peak = (int(v) for v in out.stdout.split())
    return tuple(shape), peak


def test_a_thin_pair_runs_within_the_budget():
    """A 500000x1 pair through the default method: fused at its own size, with about the peak
    memory of an ordinary frame of as many pixels (padded to 500000x32 it took over 6 GB)."""
    _, ordinary = _peak_mb(1000, 500)  # first: a graph exported on first use is then cached
    shape, thin = _peak_mb(500_000, 1)
    assert shape == (1, 500_000, 3)
    assert thin < 1.5 * ordinary + 300, (thin, ordinary)


@pytest.mark.parametrize('size', [(1, 1), (1, 2), (2, 1), (1, 40), (40, 1), (2, 2)])
def test_frames_with_a_one_pixel_side_fuse_in_a_stream(size):
    """Tiny frames through a live and an offline stream of the default method (masks carried
    between refreshes by phase correlation, which needs two pixels a side): every frame fused
    at its own size."""
    h, w = size
    rng = np.random.default_rng(1)
    pipe = FusionPipeline(PipelineConfig(method='sgdfuse'))
    for live in (True, False):
        with FusionStream(pipe, live=live, camera_rate=10, mask_rate=5) as stream:
            for _ in range(12):
                ir = rng.integers(20000, 30000, (h, w)).astype(np.uint16)
                vis = rng.integers(0, 255, (h, w, 3)).astype(np.uint8)
                assert stream.push(ir, vis).image.shape == (h, w, 3)
