"""sgdfuse_node's operations on a real rclpy graph: clean shutdown of a node process on SIGINT and
SIGTERM while frames stream, ``max_latency``, the thermal non-finite policy, and parameters
changed at run time through the node's parameter service (as ``ros2 param set`` does)."""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='needs the ros extra (rclpy)')

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from ros_harness import (REPO, ROAD, Harness, accounted, image_msg, load_pairs,  # noqa: E402
                         new_context, ns, pipeline_with)
from sensor_msgs.msg import Image  # noqa: E402

from sgdfuse_ros.fusion.methods import MethodOutput  # noqa: E402
from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig  # noqa: E402
from sgdfuse_ros.ros import convert  # noqa: E402
from sgdfuse_ros.ros.graph import qos_profile  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def context():
    ctx = new_context()
    yield ctx
    rclpy.try_shutdown(context=ctx)


@pytest.fixture(scope='module')
def pair(ivif):
    _, ir, vi = load_pairs(ivif / 'RoadScene', ROAD[2:3])[0]
    return ir, vi


# --------------------------------------------------------------------------------------------
# Shutdown
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_signal_while_frames_stream_stops_without_errors(context, pair, sig):
    """A node process (the console entry's code path) fusing a 15 Hz stream with a network
    method gets Ctrl-C or SIGTERM mid-stream: it exits 0, with no error line and no
    traceback. The frames are 1280x960, so the worker is always in the middle of a frame when
    the signal comes (with rclpy's own signal handler its publish then failed on the context
    shut down under it, every time)."""
    import cv2

    ir, vi = (cv2.resize(a, (1280, 960)) for a in pair)
    thermal = image_msg(ir.astype(np.uint16) * 40, 'mono16', 'thermal_cam')
    _signal_mid_stream(context, sig, thermal, image_msg(vi, 'rgb8', 'rgb_cam'), 15.0)


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_node_busy_with_hd_frames_exits_without_abort(context, pair, sig):
    """1920x1080 RGB with 640x512 mono16 thermal (registered by a homography), published at
    30 Hz, faster than the node fuses: stopped mid-stream, the process exits 0 with no
    ``terminate called`` abort, no traceback and no error line."""
    import cv2

    ir, vi = cv2.resize(pair[0], (640, 512)), cv2.resize(pair[1], (1920, 1080))
    thermal = image_msg(ir.astype(np.uint16) * 40 + 7000, 'mono16', 'thermal_cam')
    scale = [1920 / 640, 0.0, 0.0, 0.0, 1080 / 512, 0.0, 0.0, 0.0, 1.0]
    _signal_mid_stream(context, sig, thermal, image_msg(vi, 'rgb8', 'rgb_cam'), 30.0,
                       ['-p', f'homography:={scale}'])


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_signal_while_the_refiner_is_rebuilt_exits_without_abort(context, tmp_path, sig):
    """``refiner_steps`` changed to a step count with no shipped graph (exported on first use,
    into an empty engine_dir), then Ctrl-C or SIGTERM while that build runs (6 s into it:
    exporting and loading the graph, where an exit aborted the process): it exits 0 within
    seconds, with no ``terminate called`` abort and no traceback."""
    pytest.importorskip('torch', reason='exports a refiner graph on first use: the torch extra')
    tag = random.randrange(1 << 30)
    name = f'sgdfuse_rebuild_{tag}'
    log = tmp_path / 'node.log'
    with open(log, 'w') as out:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'sgdfuse_ros.ros.node', '--ros-args',
             '-p', f'thermal_topic:=/rb_{tag}/thermal', '-p', f'rgb_topic:=/rb_{tag}/rgb',
             '-p', f'fused_topic:=/rb_{tag}/fused', '-p', 'method:=sgdfuse',
             '-p', f'engine_dir:={tmp_path / "engines"}', '-r', f'__node:={name}'],
            cwd=REPO, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT, text=True)
    h = None
    try:
        h = Harness(context, {'thermal_topic': f'/rb_{tag}/thermal', 'rgb_topic': f'/rb_{tag}/rgb',
                              'fused_topic': f'/rb_{tag}/fused'}, node_class=None, name=name,
                    connect=False)
        result = h.set_params(refiner_steps=7)[0]
        assert result.successful, (result.reason, log.read_text())
        deadline = time.time() + 30
        while 'refiner_steps: building' not in log.read_text() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(6.0)  # inside the build
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if h is not None:
            h.close()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert 'terminate called' not in text and 'Traceback' not in text, text
    assert '[ERROR]' not in text and '[FATAL]' not in text, text
    assert f'stopping on {sig.name}' in text, text


def _signal_mid_stream(context, sig, thermal, rgb, rate: float, extra=()) -> None:
    tag = random.randrange(1 << 30)
    topics = {k: f'/sig_{tag}/{k}' for k in ('thermal', 'rgb', 'fused')}
    proc = subprocess.Popen(
        [sys.executable, '-m', 'sgdfuse_ros.ros.node', '--ros-args',
         '-p', f'thermal_topic:={topics["thermal"]}', '-p', f'rgb_topic:={topics["rgb"]}',
         '-p', f'fused_topic:={topics["fused"]}', '-p', 'method:=stage1',
         '-p', 'max_latency:=0.0', *extra, '-r', f'__node:=sgdfuse_sig_{tag}'],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    tester = rclpy.create_node(f'sig_tester_{tag}', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(tester)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    qos = qos_profile('best_effort', 5)
    pub_t = tester.create_publisher(Image, topics['thermal'], qos)
    pub_r = tester.create_publisher(Image, topics['rgb'], qos)
    got = []
    tester.create_subscription(Image, topics['fused'], got.append, qos)
    streaming = threading.Event()
    streaming.set()

    def stream():
        while streaming.is_set():
            thermal.header.stamp = rgb.header.stamp = tester.get_clock().now().to_msg()
            pub_t.publish(thermal)
            pub_r.publish(rgb)
            time.sleep(1 / rate)

    publisher = threading.Thread(target=stream, daemon=True)
    try:
        deadline = time.time() + 60  # the process imports the stack and loads the model
        while time.time() < deadline and not (pub_t.get_subscription_count()
                                              and pub_r.get_subscription_count()):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        publisher.start()
        while time.time() < deadline and len(got) < 3:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert len(got) >= 3, 'the node process fused nothing'
        time.sleep(0.4)  # mid-stream: the worker is fusing or about to publish
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f'the node did not stop on {sig.name}:\n{err}')
    finally:
        streaming.clear()
        if publisher.is_alive():
            publisher.join(2)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        executor.shutdown()
        spinner.join(5)
        tester.destroy_node()
    assert proc.returncode == 0, err
    for text in (out, err):
        assert '[ERROR]' not in text and '[FATAL]' not in text and 'Traceback' not in text, \
            text
        assert 'terminate called' not in text, text
    assert f'stopping on {sig.name}' in err, err


# --------------------------------------------------------------------------------------------
# max_latency
# --------------------------------------------------------------------------------------------

class _Sleepy:
    """A method slower than max_latency: the thing under test is the node's dropping."""

    multiple = 1
    uses_masks = False
    name = 'test_sleepy'

    def __init__(self, delay: float):
        self.delay = delay

    def __call__(self, ir, vis, masks=None):
        time.sleep(self.delay)
        return MethodOutput(np.maximum(ir, vis))


def test_pairs_older_than_max_latency_are_dropped_not_published(context, pair):
    """Pairs stamped 0.5 s ago never reach the fusion (late at take); pairs that become too
    old while a slow method fuses them are not published (late at publish); /diagnostics warns
    that nothing gets through. With the limit lifted at run time they are published again."""
    ir, vi = pair
    thermal, rgb = image_msg(ir, 'mono8', 'thermal_cam'), image_msg(vi, 'rgb8', 'rgb_cam')
    h = Harness(context, {'max_latency': 0.2, 'diagnostics_period': 0.25},
                pipeline=pipeline_with(_Sleepy(0.3)))
    ages = []
    h.node.add_frame_listener(lambda stamp, t: ages.append(t))
    try:
        n = h.stream(thermal, rgb, 1.5, age=0.5)
        assert h.settled(), h.node.counters()
        c = h.node.counters()
        assert c['pairs'] == n and c['published'] == 0 and not h.fused, c
        assert c['dropped']['late_at_take'] == n - c['dropped']['stale'] >= 1, c
        assert c['errors'] == {}

        h.diagnostics.clear()
        n2 = h.stream(thermal, rgb, 1.5)  # fresh stamps, but fusing takes 0.3 s > 0.2 s
        assert h.settled(), h.node.counters()
        c = h.node.counters()
        assert c['published'] == 0 and not h.fused and c['pairs'] == n + n2, c
        assert c['dropped']['late_at_publish'] >= 2, c
        assert h.wait_for(lambda: any('older than max_latency (0.2 s)' in s.message
                                      for s in h.diagnostics), 2.0), \
            [s.message for s in h.diagnostics]
        warn = [s for s in h.diagnostics if 'older than max_latency' in s.message][-1]
        assert warn.level == DiagnosticStatus.WARN
        values = {kv.key: kv.value for kv in warn.values}
        assert int(values['pairs_dropped_late_at_publish']) >= 2
        assert 1 <= int(values['pairs_dropped_late_at_take']) <= c['dropped']['late_at_take']

        ok = h.set_params(max_latency=0.8)[0]
        assert ok.successful, ok.reason
        h.stream(thermal, rgb, 1.5)
        assert h.wait_for(lambda: len(h.fused) >= 2, 3.0), h.node.counters()
        assert h.settled()
        # Published frames were all younger than the limit when they were ready.
        assert ages and all(t['age_fused'] <= 800.0 for t in ages), ages
        assert all(t['age_take'] <= t['age_fused'] <= t['age'] for t in ages)
    finally:
        h.close()


def test_stamps_off_the_node_clock_count_from_arrival(context, pair):
    """A bag replayed without /clock carries stamps of its recording day: stamp ages of days
    must not drop every pair. Off by more than CLOCK_MISMATCH_S, max_latency counts from each
    pair's arrival (and the node says so); the published header keeps the original stamp."""
    from sgdfuse_ros.ros.fusion_node import CLOCK_MISMATCH_S

    ir, vi = pair
    thermal, rgb = image_msg(ir, 'mono8', 'thermal_cam'), image_msg(vi, 'rgb8', 'rgb_cam')
    h = Harness(context, {'method': 'max', 'max_latency': 0.2})
    try:
        age = 3 * 24 * 3600.0  # recorded three days ago
        assert age > CLOCK_MISMATCH_S
        n = h.stream(thermal, rgb, 1.5, age=age)
        assert h.wait_for(lambda: len(h.fused) >= 2, 3.0), h.node.counters()
        assert h.settled(), h.node.counters()
        c = h.node.counters()
        assert c['pairs'] == n and c['dropped'].get('late_at_take', 0) == 0, c
        now = h.tester.get_clock().now().nanoseconds
        assert all(now - ns(m.header.stamp) > (age - 60) * 1e9 for _, m in h.fused)
    finally:
        h.close()


# --------------------------------------------------------------------------------------------
# Thermal non-finite policy
# --------------------------------------------------------------------------------------------

def test_radiometric_thermal_with_dead_pixels(context, pair):
    """A 32FC1 camera in kelvin marks 3 dead pixels with NaN: with the default policy every
    frame is fused (dead pixels at the frame's coldest value) and the pixels are counted on
    /diagnostics; switched to reject at run time, the frames are dropped and counted; a frame
    without a finite pixel is an input error either way."""
    ir, vi = pair
    kelvin = ir.astype(np.float32) * 0.2 + 280.0
    dead = kelvin.copy()
    dead[10, 10] = dead[100, 200] = np.nan
    dead[50, 60] = np.inf
    thermal = image_msg(dead, '32FC1', 'thermal_cam')
    rgb = image_msg(vi, 'rgb8', 'rgb_cam')
    h = Harness(context, {'method': 'max', 'max_latency': 0.0, 'diagnostics_period': 0.25})
    try:
        n = h.stream(thermal, rgb, 1.0)
        assert h.settled()
        c = h.node.counters()
        assert c['errors'] == {} and c['published'] >= 0.5 * n, c
        fused = c['published'] + c['fused_replaced']  # each converted frame was fused
        assert c['thermal_nonfinite_frames'] == fused
        assert c['thermal_nonfinite_pixels'] == 3 * fused
        # Each frame is the pipeline's fusion of the frame with the dead pixels replaced (the
        # same frame every time: the thermal gain's smoothing holds still).
        replaced, count = convert.replace_nonfinite(dead)
        assert count == 3
        expect = FusionPipeline(PipelineConfig(method='max')).fuse(replaced, vi).image
        assert h.wait_for(lambda: len(h.fused) >= 3, 2.0)
        np.testing.assert_array_equal(convert.image_to_numpy(h.fused[-1][1]), expect)
        assert h.wait_for(lambda: any(
            kv.key == 'thermal_nonfinite_pixels' and int(kv.value) == 3 * c['published']
            for s in h.diagnostics for kv in s.values), 2.0)

        result = h.set_params(thermal_nonfinite='reject')[0]
        assert result.successful, result.reason
        before = h.node.counters()['published']
        n2 = h.stream(thermal, rgb, 1.0)
        assert h.settled()
        c = h.node.counters()
        assert c['published'] == before and c['errors'] == {}, c
        assert c['dropped']['thermal_nonfinite'] >= 0.5 * n2, c

        for policy in ('reject', 'replace'):
            assert h.set_params(thermal_nonfinite=policy)[0].successful
            nan = image_msg(np.full_like(kelvin, np.nan), '32FC1', 'thermal_cam')
            h.stream(nan, rgb, 0.4)
            assert h.settled()
        c = h.node.counters()
        assert c['errors'].get('input', 0) >= 2 and 'no finite pixel' in c['last_error'], c
        assert c['pairs'] == accounted(c)
    finally:
        h.close()


def test_one_corrupt_radiometric_frame_does_not_drag_the_gain(context, pair):
    """A 32FC1 stream with one frame of random float32 bytes in it: that frame is counted on
    /diagnostics as held, and the frames after it fuse as before it (a plain moving average of
    the gain took hundreds of frames to come back)."""
    ir, vi = pair
    kelvin = ir.astype(np.float32) * 0.2 + 280.0
    rng = np.random.default_rng(5)
    junk = rng.integers(0, 256, kelvin.nbytes, np.uint8).view(np.float32).reshape(kelvin.shape)
    thermal = image_msg(kelvin, '32FC1', 'thermal_cam')
    corrupt = image_msg(junk, '32FC1', 'thermal_cam')
    rgb = image_msg(vi, 'rgb8', 'rgb_cam')
    h = Harness(context, {'method': 'max', 'max_latency': 0.0, 'diagnostics_period': 0.25})
    try:
        h.stream(thermal, rgb, 1.0)
        assert h.settled() and h.fused, h.node.counters()
        before = convert.image_to_numpy(h.fused[-1][1]).astype(np.float32)
        published = h.node.counters()['published']
        h.publish(corrupt, rgb, h.stamp())
        assert h.wait_for(lambda: h.node.counters()['published'] > published, 3.0)
        assert h.node.counters()['thermal_gain_held'] == 1
        h.fused.clear()
        h.stream(thermal, rgb, 10 / 15)  # 10 frames
        assert h.settled() and h.fused, h.node.counters()
        after = convert.image_to_numpy(h.fused[-1][1]).astype(np.float32)
        assert np.abs(after - before).mean() <= 2.0
        assert h.wait_for(lambda: any(
            kv.key == 'thermal_gain_held_frames' and kv.value == '1'
            for s in h.diagnostics for kv in s.values), 2.0)
    finally:
        h.close()


# --------------------------------------------------------------------------------------------
# Run-time parameters, through the parameter service
# --------------------------------------------------------------------------------------------

class _MaskMax:
    """A method that uses masks (so the node runs a mask worker), fusing by maximum."""

    multiple = 1
    uses_masks = True
    name = 'test_mask_max'

    def __call__(self, ir, vis, masks=None):
        return MethodOutput(np.maximum(ir, vis))


def test_run_time_parameters_through_the_parameter_service(context, pair):
    """mask_rate, max_latency, output_encoding, thermal_timeout and thermal_nonfinite change
    while frames stream; a value out of range and the parameters read at start are refused,
    each with its reason; refiner_steps is refused for a method without a refiner."""
    ir, vi = pair
    thermal, rgb = image_msg(ir, 'mono8', 'thermal_cam'), image_msg(vi, 'rgb8', 'rgb_cam')
    h = Harness(context, {'mask_rate': 1.0, 'max_latency': 0.0},
                pipeline=pipeline_with(_MaskMax()))
    try:
        worker = h.node.fusion.stream.worker
        refreshes = worker.refreshes
        h.stream(thermal, rgb, 3.0)
        slow = worker.refreshes - refreshes
        results = h.set_params(mask_rate=6.0, max_latency=0.5, thermal_timeout=3.0,
                               thermal_nonfinite='reject')
        assert all(r.successful for r in results), [r.reason for r in results]
        s = h.node.settings
        assert (s.mask_rate, s.max_latency, s.thermal_timeout, s.thermal_nonfinite) == (
            6.0, 0.5, 3.0, 'reject')
        assert worker.period == pytest.approx(1 / 6.0) and worker.rate_hz == 6.0
        assert worker.max_age_s == 1.0  # the default age limit follows the rate
        refreshes = worker.refreshes
        h.stream(thermal, rgb, 3.0)
        fast = worker.refreshes - refreshes
        assert slow <= 4 and fast >= 2 * slow, (slow, fast)

        assert h.fused[-1][1].encoding == 'rgb8'
        assert h.set_params(output_encoding='mono8')[0].successful
        h.fused.clear()
        h.stream(thermal, rgb, 1.0)
        assert h.wait_for(lambda: len(h.fused) >= 3, 2.0)
        msg = h.fused[-1][1]
        assert msg.encoding == 'mono8'
        mono = pipeline_with(_MaskMax())
        mono.config.output = 'mono'
        np.testing.assert_array_equal(convert.image_to_numpy(msg),
                                      mono.fuse(ir, vi, masks=(ir * 0.0, ir * 0.0)).image)

        bad = h.set_params(max_latency=-1.0)[0]
        assert not bad.successful and 'max_latency must be >= 0 s, got -1.0' in bad.reason
        fixed = h.set_params(sync_slop=0.2)[0]
        assert not fixed.successful and fixed.reason == 'sync_slop: read-only: restart the node'
        steps = h.set_params(refiner_steps=2)[0]
        assert not steps.successful
        assert "the method 'test_mask_max' has no diffusion refiner" in steps.reason
        s = h.node.settings
        assert (s.max_latency, s.sync_slop, s.refiner_steps) == (0.5, 0.05, 0)
        assert h.node.get_parameter('sync_slop').value == 0.05
        assert h.node.counters()['errors'] == {}
    finally:
        h.close()


def test_refiner_steps_change_while_fusing(context, pair):
    """The diffusion refiner is rebuilt with the new number of steps beside the running one,
    which goes on fusing; the worker swaps it between frames. Steps beyond the schema's bound
    are refused before any build."""
    ir, vi = pair
    thermal, rgb = image_msg(ir, 'mono8', 'thermal_cam'), image_msg(vi, 'rgb8', 'rgb_cam')
    h = Harness(context, {'method': 'sgdfuse', 'max_latency': 0.0})
    try:
        default = h.node.pipeline.method.refiner.steps
        h.stream(thermal, rgb, 1.0)
        assert h.wait_for(lambda: len(h.fused) >= 2, 5.0)
        want = default + 1
        result = h.set_params(refiner_steps=want)[0]  # returns at once; the build goes on
        assert result.successful, result.reason
        assert h.node.settings.refiner_steps == want
        h.fused.clear()
        sent = 0
        while h.node.pipeline.method.steps != want and sent < 120 * 15:
            sent += h.stream(thermal, rgb, 1.0)  # fusing goes on with the old refiner
        method = h.node.pipeline.method
        assert method.refiner.steps == want and method.steps == want
        assert h.node.pipeline.config.method_options['steps'] == want
        assert len(h.fused) >= 2, 'no frame while the refiner was rebuilt'
        h.fused.clear()
        h.stream(thermal, rgb, 1.0)
        assert h.settled(10.0) and len(h.fused) >= 2
        assert h.node.counters()['errors'] == {}

        # Beyond the schema's bound (250 steps took 4 GB): refused at once with the reason,
        # nothing built; so is a mask rate no camera gives.
        for name, value, why in (('refiner_steps', 250, 'refiner_steps must be <= 16, got 250'),
                                 ('mask_rate', 1e308, 'mask_rate must be <= 60 Hz')):
            result = h.set_params(**{name: value})[0]
            assert not result.successful and why in result.reason, result.reason
        assert h.node.get_parameter('refiner_steps').value == want
        assert h.node.settings.refiner_steps == want and h.node.pipeline.method.steps == want
        assert h.node.settings.mask_rate == 2.0 and h.node.counters()['errors'] == {}
    finally:
        h.close()
