"""The automatic working size: the ladder of sizes and the controller's steps, driven by
made-up timings (no clock, no ROS)."""

import pytest

from sgdfuse_ros.fusion.autosize import (AutoWorkSize, RateMeter, WorkingSizeController,
                                         size_ladder)


def test_ladder_keeps_aspect_multiples_and_budget():
    ladder = size_ladder((1920, 1080), max_pixels=1920 * 1080)
    assert ladder[0] == (1920, 1080)
    for w, h in ladder[1:]:
        assert w % 32 == 0 and h % 32 == 0
        assert abs(w / h - 16 / 9) < 0.2
    pixels = [w * h for w, h in ladder]
    assert pixels == sorted(pixels, reverse=True) and pixels[-1] <= 320 * 160 * 1.3
    capped = size_ladder((3840, 2160), max_pixels=1920 * 1080)
    assert all(w * h <= 1920 * 1080 for w, h in capped)
    with pytest.raises(ValueError):
        size_ladder((0, 10))


def _run(ctrl, cost_per_mpix_ms, period_s, frames, fixed_ms=5.0):
    for _ in range(frames):
        w, h = ctrl.size
        net = cost_per_mpix_ms * w * h / 1e6
        if ctrl.level != 'full':
            net *= 0.5
        ctrl.observe(fixed_ms + net, period_s, net)


def test_steps_down_until_it_holds_the_rate_and_back_up_when_load_drops():
    ctrl = WorkingSizeController(max_pixels=1920 * 1080)
    ctrl.start((1920, 1080))
    _run(ctrl, 120.0, 1 / 30, 200)  # 120 ms per megapixel: full HD cannot hold 30 Hz
    w, h = ctrl.size
    assert 5.0 + 120.0 * w * h / 1e6 <= 0.85 * 1e3 / 30
    assert ctrl.level == 'full' and ctrl.changes >= 1 and 'down to' in ctrl.reason
    small = w * h
    _run(ctrl, 30.0, 1 / 30, 400)  # the load went away
    assert ctrl.size[0] * ctrl.size[1] > small and 'up to' in ctrl.reason


def test_no_oscillation_at_a_steady_load():
    ctrl = WorkingSizeController(max_pixels=1920 * 1080)
    ctrl.start((1920, 1080))
    _run(ctrl, 100.0, 1 / 15, 300)
    changes = ctrl.changes
    _run(ctrl, 100.0, 1 / 15, 600)
    assert ctrl.changes == changes


def test_degrades_the_method_at_the_smallest_size_and_recovers():
    ctrl = WorkingSizeController(max_pixels=640 * 480)
    ctrl.start((640, 480))
    _run(ctrl, 2000.0, 1 / 30, 400)  # hopeless at any size
    assert ctrl.level == 'stage1' and 'only' in ctrl.reason
    _run(ctrl, 10.0, 1 / 30, 400)
    assert ctrl.level == 'full'


class _Pipe:
    class budget:
        max_pixels = 1920 * 1080

    def __init__(self):
        self.sizes, self.refine = [], []

    def set_work_size(self, size):
        self.sizes.append(size)

    def set_refine(self, on):
        self.refine.append(on)
        return True


def test_auto_work_size_applies_changes_to_the_pipeline_once():
    pipe = _Pipe()
    auto = AutoWorkSize(pipe)
    first = auto.before((1920, 1080))  # starts within VGA's pixels, climbs from there
    assert first[0] * first[1] <= 640 * 480 and first[0] % 32 == 0
    auto.before((1920, 1080))
    assert pipe.sizes == [first] and pipe.refine == [True]
    c = auto.controller
    lines = [auto.after(500.0, 1 / 30) for _ in range(c.patience + 2 * c.settle)]
    assert lines[-1][0] == 'warning' and 'working size' in lines[-1][1]
    auto.before((1920, 1080))
    assert len(pipe.sizes) == 2 and pipe.sizes[1][0] < first[0]
    assert auto.values()['degradation'] == 'full'


def test_rate_meter_ignores_pauses():
    meter = RateMeter(smoothing=0.0)
    for t in (0.0, 0.1, 0.2, 5.0, 5.1):
        meter.tick(t)
    assert meter.period == pytest.approx(0.1)


def test_when_frame_size_work_alone_takes_the_period_it_keeps_a_useful_size():
    """40 ms of work that no working size changes, at 30 Hz (33 ms): the rate cannot be held;
    the networks keep a share of the time instead of the smallest size and stage 1 alone."""
    ctrl = WorkingSizeController(max_pixels=1920 * 1080)
    ctrl.start((1920, 1080))
    _run(ctrl, 60.0, 1 / 30, 400, fixed_ms=40.0)
    w, h = ctrl.size
    assert ctrl.level == 'full' and w * h > 320 * 180
    assert 40.0 + 60.0 * w * h / 1e6 <= 1.6 * 40.0 + 1e-6
    assert ctrl.budget_ms == pytest.approx(64.0, rel=0.05)
