"""FusionStream: a video through the pipeline with masks refreshed beside it, live and offline.

The video is a pan across a real registered pair (a window sliding over a bundled RoadScene
sample), fused with the default method and the ``saliency`` mask provider.
"""

import gc
import threading
import time

import numpy as np
import pytest

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.paths import samples_dir
from sgdfuse_ros.fusion.pipeline import FusionPipeline
from sgdfuse_ros.fusion.stream import FusionStream

WINDOW = (224, 448)  # rows, columns of each frame
STEP = 4  # pixels the window moves per frame


@pytest.fixture(scope='module')
def pan():
    """Twelve frame pairs of a left-to-right pan across a real pair."""
    root = samples_dir()
    ir = imaging.read_image(root / 'ir' / 'FLIR_00977.jpg', gray=True)
    vis = imaging.read_image(root / 'vi' / 'FLIR_00977.jpg')
    h, w = WINDOW
    frames = []
    for i in range(12):
        x = i * STEP
        frames.append((np.ascontiguousarray(ir[:h, x:x + w]),
                       np.ascontiguousarray(vis[:h, x:x + w])))
    return frames


def _pipeline(method: str = 'auto') -> FusionPipeline:
    return FusionPipeline(method=method, mask_provider='saliency')


def test_the_default_method_uses_masks():
    # Everything below is about masks: it only means something if the default method uses them.
    assert _pipeline().method.uses_masks


def _run_offline(frames, **kwargs):
    # The plain schedule (masks reused as they are) unless a test asks for carried masks.
    kwargs.setdefault('carry_masks', False)
    with FusionStream(_pipeline(), live=False, **kwargs) as stream:
        results = [stream.push(t, v, name=f'frame {i}') for i, (t, v) in enumerate(frames)]
        return results, stream.mask_stats()


def test_offline_output_is_deterministic(pan):
    a, _ = _run_offline(pan, camera_rate=10.0, mask_rate=2.5)
    b, _ = _run_offline(pan, camera_rate=10.0, mask_rate=2.5)
    for ra, rb in zip(a, b):
        assert np.array_equal(ra.image, rb.image)
        assert np.array_equal(ra.masks[0], rb.masks[0]) and np.array_equal(ra.masks[1],
                                                                           rb.masks[1])
    # The masks do reach the fusion: the same video with masks refreshed on every frame differs.
    c, _ = _run_offline(pan, camera_rate=10.0, mask_rate=10.0)
    assert any(not np.array_equal(ra.image, rc.image) for ra, rc in zip(a, c))


def test_offline_refresh_schedule(pan):
    # camera 10 Hz, masks 2.5 Hz: a refresh every 4 frames (0, 4, 8), visible 4 frames later.
    results, stats = _run_offline(pan, camera_rate=10.0, mask_rate=2.5)
    provider = _pipeline().mask_provider
    refreshed = [i for i, r in enumerate(results) if 'masks' in r.timings]
    assert refreshed == [0, 4, 8]
    assert stats['refreshes'] == 3 and stats['refresh_every'] == 4
    assert stats['latency_frames'] == 4 and stats['mode'] == 'offline'
    for i, r in enumerate(results):
        if i < 4:  # before the first refresh arrives: empty masks, as the node
            assert not r.masks[0].any() and not r.masks[1].any()
            continue
        src = 4 * (i // 4) - 4  # the refresh this frame sees
        expect = provider(results[src].ir, pan[src][1]).as_tuple()
        assert np.array_equal(r.masks[0], expect[0]), (i, src)
        assert np.array_equal(r.masks[1], expect[1]), (i, src)
    assert results[4].masks[0].any()  # the pan has hot regions: not a trivially empty mask
    # The last frame (11) uses the refresh of frame 4: 0.7 s of camera time old.
    assert stats['age_s'] == pytest.approx(0.7) and not stats['stale']


def test_offline_schedule_rounding_latency_and_stamps(pan):
    # 10 / 3 Hz rounds to a refresh every 3 frames.
    results, stats = _run_offline(pan[:7], camera_rate=10.0, mask_rate=3.0)
    assert [i for i, r in enumerate(results) if 'masks' in r.timings] == [0, 3, 6]
    # A provider slower than the rate (latency 5 frames > period 3): refreshes every 5 frames.
    results, stats = _run_offline(pan, camera_rate=10.0, mask_rate=3.0, mask_latency=5)
    assert [i for i, r in enumerate(results) if 'masks' in r.timings] == [0, 5, 10]
    assert [bool(r.masks[0].any()) for r in results] == [False] * 5 + [True] * 7
    # Stamps set the frame time: masks of frame 0 used on frame 5, 5 s later, are stale.
    with FusionStream(_pipeline(), live=False, camera_rate=10.0, mask_rate=2.0,
                      mask_max_age=2.0, carry_masks=False) as stream:
        for i, (t, v) in enumerate(pan[:6]):
            stream.push(t, v, stamp=100.0 + i)
        stats = stream.mask_stats()
    assert stats['age_s'] == pytest.approx(5.0) and stats['stale'] and stats['stale_reads'] == 1


class _Gated:
    """The real saliency provider behind a gate the test opens: a refresh as slow as we like."""

    def __init__(self, provider):
        self.provider = provider
        self.worker_priority = provider.worker_priority
        self.gate = threading.Event()
        self.calls = 0

    def describe(self) -> str:
        return 'gated ' + self.provider.describe()

    def __call__(self, ir, visible):
        self.calls += 1
        self.gate.wait(30.0)
        return self.provider(ir, visible)


def test_live_returns_frames_without_waiting_for_masks(pan):
    pipeline = _pipeline()
    gated = _Gated(pipeline.mask_provider)
    pipeline.mask_provider = gated
    # One refresh per 20 s: the second cannot start before the end of the test.
    with FusionStream(pipeline, live=True, mask_rate=0.05, carry_masks=False) as stream:
        assert stream.worker is not None and stream.worker.is_alive()
        first = stream.push(*pan[0])
        deadline = time.monotonic() + 10.0
        while gated.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gated.calls == 1  # the worker is inside the provider, held by the gate
        for t, v in pan[1:4]:  # fused while the refresh is blocked: no waiting, empty masks
            r = stream.push(t, v)
            assert r.image.shape == v.shape and not r.masks[0].any()
        assert not first.masks[0].any()
        stats = stream.mask_stats()
        assert stats['refreshes'] == 0 and stats['age_s'] is None and stats['stale']
        gated.gate.set()
        assert stream.worker.wait_for(1, timeout=10.0)
        r = stream.push(*pan[4])
        # The masks fusion now uses are the first refresh: those of frame 0's pair.
        expect = gated.provider(first.ir, pan[0][1]).as_tuple()
        assert np.array_equal(r.masks[0], expect[0])
        stats = stream.mask_stats()
        assert stats['refreshes'] >= 1 and stats['mode'] == 'live'
        assert stats['age_s'] is not None and stats['age_s'] < stats['max_age_s']


def test_carried_masks_exist_from_the_first_frame(pan):
    # No empty-mask start: the first frame's masks are computed at once, in both modes.
    provider = _pipeline().mask_provider
    for live in (False, True):
        with FusionStream(_pipeline(), live=live, camera_rate=10.0, mask_rate=0.5) as stream:
            first = stream.push(*pan[0])
            second = stream.push(*pan[1])
        expect = provider(first.ir, pan[0][1]).as_tuple()
        assert first.masks[0].any(), live
        assert np.array_equal(first.masks[0], expect[0]) and np.array_equal(first.masks[1],
                                                                            expect[1])
        assert second.masks[0].any(), live


def test_carried_masks_move_with_the_pan(pan):
    # Masks of frame 0 carried to frame 3: the window moved 3 * STEP pixels to the right, so
    # the scene (and its masks) moved left by as much; reused as they are they would not.
    results, _ = _run_offline(pan[:4], camera_rate=10.0, mask_rate=2.5, carry_masks=True)
    m0, m3 = results[0].masks[0], results[3].masks[0]
    d = 3 * STEP
    moved = np.abs(m3[:, :-d] - m0[:, d:]).mean()
    held = np.abs(m3[:, :-d] - m0[:, :-d]).mean()
    assert moved < 0.25 * held, (moved, held)
    # Deterministic offline, carried masks included.
    again, _ = _run_offline(pan[:4], camera_rate=10.0, mask_rate=2.5, carry_masks=True)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(results, again))


def test_close_stops_the_worker_thread(pan):
    stream = FusionStream(_pipeline(), live=True)
    stream.push(*pan[0])
    thread = stream.worker._thread
    assert thread.is_alive()
    stream.close()
    assert not thread.is_alive() and thread not in threading.enumerate()
    with pytest.raises(RuntimeError, match='closed'):
        stream.push(*pan[1])
    stream.close()  # twice is harmless


def test_a_forgotten_stream_stops_its_worker():
    stream = FusionStream(_pipeline(), live=True)
    thread = stream.worker._thread
    assert thread.is_alive()
    del stream
    gc.collect()
    thread.join(5.0)
    assert not thread.is_alive()


def test_methods_without_masks_get_no_worker(pan):
    before = threading.active_count()
    with FusionStream(_pipeline('laplacian'), live=True) as stream:
        assert stream.worker is None and not stream.uses_masks
        assert threading.active_count() == before
        r = stream.push(*pan[0])
        assert r.masks is None and stream.mask_stats() == {}
    with FusionStream(_pipeline('laplacian'), live=False, camera_rate=10.0) as stream:
        assert stream.push(*pan[0]).masks is None and stream.mask_stats() == {}


def test_bad_settings_are_named():
    pipeline = _pipeline('laplacian')
    with pytest.raises(ValueError, match='camera_rate'):
        FusionStream(pipeline, live=False)
    with pytest.raises(ValueError, match='mask_rate'):
        FusionStream(pipeline, mask_rate=0)
    with pytest.raises(ValueError, match='mask_max_age'):
        FusionStream(pipeline, mask_max_age=-1.0)
    with pytest.raises(ValueError, match='mask_latency'):
        FusionStream(pipeline, live=False, camera_rate=10.0, mask_latency=0)
    with pytest.raises(TypeError, match='FusionPipeline'):
        FusionStream(object())
