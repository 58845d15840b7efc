"""sgdfuse_node end to end: a real rclpy graph on loopback, real image pairs, bad input mixed in.

In-process tests run the node and a tester node in one executor thread of their own rclpy
context (``ros_harness``); one test starts the node as a separate process through ``main`` and
the YAML file. Tests with a method of their own hand the node a pipeline built around it. The
parameter schema is tested without ROS in test_params.py; the operations (shutdown, max_latency,
the thermal non-finite policy, run-time parameters) in test_node_ops.py, the managed node in
test_lifecycle.py.
"""

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
from rclpy.parameter import Parameter  # noqa: E402
from ros_harness import (RATE_HZ, REPO, ROAD, Harness, accounted, image_msg,  # noqa: E402
                         load_pairs, new_context, ns, pipeline_with, raw)
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from sgdfuse_ros.core.slots import LatestSlot  # noqa: E402
from sgdfuse_ros.fusion.methods import MethodOutput, resolve_method_name  # noqa: E402
from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig  # noqa: E402
from sgdfuse_ros.params import ParameterError  # noqa: E402
from sgdfuse_ros.ros import convert  # noqa: E402
from sgdfuse_ros.ros.graph import qos_profile  # noqa: E402
from sgdfuse_ros.ros.node import SgdfuseNode  # noqa: E402

pytestmark = pytest.mark.ros


# --------------------------------------------------------------------------------------------
# Pure parts: the drop-oldest slot and the config files
# --------------------------------------------------------------------------------------------

def test_latest_slot_drops_the_oldest():
    slot = LatestSlot()
    assert slot.put('a') is False
    assert slot.put('b') is True and slot.replaced == 1
    assert slot.get(timeout=0) == 'b' and slot.get(timeout=0) is None
    got = []
    waiter = threading.Thread(target=lambda: got.append(slot.get(timeout=5)))
    waiter.start()
    time.sleep(0.05)
    slot.close()  # wakes a waiting consumer
    waiter.join(2)
    assert got == [None] and not waiter.is_alive()


def test_rviz_config_shows_every_image_topic():
    import yaml

    cfg = yaml.safe_load((REPO / 'config' / 'sgdfuse.rviz').read_text())
    topics = {d['Topic']['Value'] for d in cfg['Visualization Manager']['Displays']}
    from sgdfuse_ros.params import DEFAULTS, NODE_NAME, TOPIC_PARAMETERS

    assert {DEFAULTS[t] for t in TOPIC_PARAMETERS} | {
        f'/{NODE_NAME}/ir_mask', f'/{NODE_NAME}/rgb_mask'} <= topics


def test_fastdds_profile_is_the_shm_profile():
    import xml.etree.ElementTree as ET

    xmlns = {'f': 'http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles'}
    root = ET.parse(REPO / 'config' / 'fastdds_shm.xml').getroot()
    shm = [d for d in root.iterfind('.//f:transport_descriptor', xmlns)
           if d.findtext('f:type', namespaces=xmlns) == 'SHM']
    assert len(shm) == 1 and int(shm[0].findtext('f:segment_size', namespaces=xmlns)) >= 32 << 20
    participant = root.find('.//f:participant', xmlns)
    assert participant.get('is_default_profile') == 'true'
    used = {t.text for t in participant.iterfind('.//f:userTransports/f:transport_id', xmlns)}
    assert shm[0].findtext('f:transport_id', namespaces=xmlns) in used


# --------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def context():
    ctx = new_context()
    yield ctx
    rclpy.try_shutdown(context=ctx)


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------

def test_fuses_real_pairs_and_survives_bad_input(context, ivif):
    """RoadScene pairs (several sizes) at 15 Hz, thermal as mono8 and mono16, with broken
    messages mixed in; then the thermal stream stops and diagnostics say so."""
    pairs = load_pairs(ivif / 'RoadScene', ROAD)
    # stage1: the best method whose output does not depend on when the mask worker refreshed,
    # and the frame's own working size (not one chosen from timings), so a frame can be
    # recomputed offline below.
    h = Harness(context, {'thermal_timeout': 0.6, 'diagnostics_period': 0.25,
                          'method': 'stage1', 'max_latency': 0.0, 'auto_work_size': False})
    try:
        good = [(image_msg(ir, 'mono8', 'thermal_cam'),
                 image_msg(ir.astype(np.uint16) * 40 + 7000, 'mono16', 'thermal_cam'),
                 image_msg(vi, 'rgb8', 'rgb_cam'), vi.shape[:2]) for _, ir, vi in pairs]
        other = pairs[1][1]
        nan = np.full((4, 4), 20.0, np.float32)
        nan[2, 2] = np.nan
        bad = {  # index -> (thermal, rgb, what)
            8: (image_msg(pairs[0][2], 'rgb8', 'thermal_cam'), None, 'colour thermal'),
            16: (image_msg(other, 'mono8', 'thermal_cam'), None, 'size mismatch'),
            24: (None, raw(10, 10, 'rgb8', 30, bytes(200), 'rgb_cam'), 'truncated rgb'),
            32: (image_msg(nan, '32FC1', 'thermal_cam'), None, 'NaN'),
            40: (raw(0, 0, 'mono8', 0, b''), None, 'zero size'),
            48: (None, raw(4, 4, 'yuv422', 8, bytes(32), 'rgb_cam'), 'unknown encoding'),
        }
        sent = {}  # stamp ns -> (rgb size, pair index, thermal kind)
        t0 = time.perf_counter()
        n = 60
        for i in range(n):
            k = i % len(good)
            th8, th16, rgb, size = good[k]
            thermal = th8 if i % 2 == 0 else th16
            stamp = h.stamp()
            if i in bad:
                b_th, b_rgb, _ = bad[i]
                h.publish(b_th or thermal, b_rgb or rgb, stamp)
            else:
                h.publish(thermal, rgb, stamp)
                sent[ns(stamp)] = (size, k, 'mono8' if i % 2 == 0 else 'mono16')
            time.sleep(max(0.0, t0 + (i + 1) / RATE_HZ - time.perf_counter()))
        h.wait_for(lambda: h.node.counters()['pairs'] == accounted(h.node.counters()), 3.0)
        time.sleep(0.3)
        c = h.node.counters()

        # Fused frames: the RGB frame's header, its size, rgb8, and only for good pairs.
        assert len(h.fused) >= 0.5 * len(sent), (len(h.fused), c)
        for _, msg in h.fused:
            assert ns(msg.header.stamp) in sent, 'a fused frame for a pair never sent whole'
            size, _, _ = sent[ns(msg.header.stamp)]
            assert (msg.height, msg.width) == size
            assert msg.encoding == 'rgb8' and msg.header.frame_id == 'rgb_cam'
            assert msg.step == msg.width * 3 and len(msg.data) == msg.step * msg.height
        assert max(ns(m.header.stamp) for _, m in h.fused) >= sorted(sent)[-3], \
            'the node stopped fusing after the bad messages'

        # The image content is the pipeline's: recompute a mono8 pair offline (no gain state).
        ref = FusionPipeline(PipelineConfig(method=h.node.settings.method))
        for _, msg in h.fused:
            size, k, kind = sent[ns(msg.header.stamp)]
            if kind == 'mono8':
                expect = ref.fuse(pairs[k][1], pairs[k][2]).image
                got = convert.image_to_numpy(msg)
                np.testing.assert_array_equal(got, expect)
                break
        else:
            pytest.fail('no mono8 pair was fused')

        # Every pair is accounted for: fused, dropped as stale, or an error (bad input).
        assert c['thermal_received'] == n and c['rgb_received'] == n
        assert c['pairs'] == n, c
        assert c['pairs'] == accounted(c) and c['published'] + c['dropped']['stale'] + sum(
            c['errors'].values()) == c['pairs']  # max_latency 0: no late drops
        assert 1 <= c['errors'].get('input', 0) <= len(bad)
        assert c['errors'].get('input', 0) + c['dropped']['stale'] >= len(bad)
        assert set(c['errors']) <= {'input'}, c['errors']
        assert len(h.fused) >= c['published'] - 2  # best effort, but in one process

        # Thermal stops; RGB goes on: diagnostics warn after thermal_timeout.
        h.diagnostics.clear()
        t1 = time.perf_counter()
        for i in range(int(1.5 * RATE_HZ)):
            h.publish(None, good[0][2], h.stamp())
            time.sleep(max(0.0, t1 + (i + 1) / RATE_HZ - time.perf_counter()))
        assert h.wait_for(lambda: any('thermal stream stopped' in s.message
                                      for s in h.diagnostics), 2.0), \
            [s.message for s in h.diagnostics]
        warn = [s for s in h.diagnostics if 'thermal stream stopped' in s.message][-1]
        assert warn.level == DiagnosticStatus.WARN
        values = {kv.key: kv.value for kv in warn.values}
        for key in ('method', 'backend', 'thermal_rate_hz', 'rgb_rate_hz', 'fused_rate_hz',
                    'pairs_dropped_stale', 'errors_total', 'errors_input', 'latency_fuse_ms',
                    'latency_age_ms', 'sync_dropped_out_of_slop'):
            assert key in values, key
        assert values['method'] == h.node.pipeline.method_name
        assert float(values['rgb_rate_hz']) > 5.0 and float(values['thermal_rate_hz']) == 0.0
    finally:
        h.close()


class _Sleepy:
    """A deliberately slow fusion method: the thing under test is the node's dropping."""

    multiple = 1
    uses_masks = False

    def __init__(self, delay: float, name: str):
        self.delay, self.name = delay, name

    def __call__(self, ir, vis, masks=None):
        time.sleep(self.delay)
        return MethodOutput(np.maximum(ir, vis))


def test_slow_method_drops_stale_pairs_instead_of_queueing(context, ivif):
    _, ir, vi = load_pairs(ivif / 'RoadScene', ROAD[:1])[0]
    h = Harness(context, {'max_latency': 0.0}, pipeline=pipeline_with(_Sleepy(0.3, 'test_sleepy')))
    try:
        thermal, rgb = image_msg(ir, 'mono8', 'thermal_cam'), image_msg(vi, 'rgb8', 'rgb_cam')
        n, t0 = int(3.0 * RATE_HZ), time.perf_counter()
        for i in range(n):
            h.publish(thermal, rgb, h.stamp())
            time.sleep(max(0.0, t0 + (i + 1) / RATE_HZ - time.perf_counter()))
        t_end = time.time()
        time.sleep(0.8)  # the frame in hand and at most one waiting pair finish
        done = h.node.counters()['published']
        time.sleep(0.8)
        c = h.node.counters()
        assert c['published'] == done, 'frames kept coming after input stopped: a backlog'
        assert c['pairs'] == n
        assert c['published'] <= 3.0 / 0.3 + 3, c
        assert c['dropped']['stale'] >= n - c['published'] - 1, c
        assert c['pairs'] == c['published'] + c['dropped']['stale']
        # The frames that do come out are fresh: latency stays about one model time.
        recv, last = h.fused[-1]
        assert recv - ns(last.header.stamp) / 1e9 < 1.0
        assert t_end - ns(last.header.stamp) / 1e9 < 0.9  # the newest pair, not an old one
    finally:
        h.close()


class _WithF1:
    multiple = 1
    uses_masks = False
    name = 'test_with_f1'

    def __call__(self, ir, vis, masks=None):
        return MethodOutput(0.5 * (ir + vis), f1=np.maximum(ir, vis))


def test_compressed_input_mono8_output_and_f1(context, ivif):
    import array

    import cv2

    _, ir, vi = load_pairs(ivif / 'RoadScene', ROAD[1:2])[0]
    h = None
    try:
        h = Harness(context, {'thermal_compressed': True, 'rgb_compressed': True,
                              'output_encoding': 'mono8', 'publish_f1': True,
                              'thermal_topic': '/thermal/compressed',
                              'rgb_topic': '/rgb/compressed'},
                    thermal_type=CompressedImage, rgb_type=CompressedImage,
                    pipeline=pipeline_with(_WithF1()))
        f1_topic = h.node.fusion.pub_f1.topic_name
        assert f1_topic == f'/{h.name}/f1'
        f1 = []
        h.tester.create_subscription(Image, f1_topic, f1.append, qos_profile('best_effort', 5))
        h.wait_for(lambda: h.node.fusion.pub_f1.get_subscription_count() > 0, 5)
        t_msg = CompressedImage(format='mono16; png compressed mono16')
        t_msg.data = array.array('B', cv2.imencode('.png', ir.astype(np.uint16) * 40)[1]
                                 .tobytes())
        r_msg = CompressedImage(format='rgb8; jpeg compressed bgr8')
        r_msg.data = array.array('B', cv2.imencode('.jpg', vi[:, :, ::-1])[1].tobytes())
        r_msg.header.frame_id = 'rgb_cam'
        for _ in range(10):
            h.publish(t_msg, r_msg, h.stamp())
            time.sleep(1 / RATE_HZ)
        assert h.wait_for(lambda: len(h.fused) >= 5 and len(f1) >= 5, 3.0), h.node.counters()
        for _, msg in h.fused:
            assert msg.encoding == 'mono8' and (msg.height, msg.width) == vi.shape[:2]
            assert msg.header.frame_id == 'rgb_cam'
        assert f1[0].encoding == 'mono8' and f1[0].header.stamp == h.fused[0][1].header.stamp
        assert h.node.counters()['errors'] == {}
    finally:
        if h is not None:
            h.close()


def test_invalid_parameters_stop_the_node_with_a_message(context):
    with pytest.raises(ParameterError) as err:
        SgdfuseNode('sgdfuse_bad', context=context, parameter_overrides=[
            Parameter('sync_slop', value=-1.0), Parameter('output_encoding', value='bgr8'),
            Parameter('qos_depth', value='deep')])
    assert 'sync_slop' in str(err.value) and 'output_encoding' in str(err.value)
    assert 'qos_depth' in str(err.value)
    with pytest.raises(ParameterError, match='unknown fusion method'):
        SgdfuseNode('sgdfuse_bad2', context=context,
                    parameter_overrides=[Parameter('method', value='no_such_method')])


def test_topic_remapping(context):
    node = SgdfuseNode('sgdfuse_remap', context=context, cli_args=[
        '--ros-args', '-r', '/thermal/image_raw:=/cam/thermal', '-r', '/fused/image_raw:=/out'])
    try:
        topics = [s.topic_name for s in node.fusion.sync.subscriptions]
        assert topics == ['/cam/thermal', '/rgb/image_raw']
        assert node.fusion.pub_fused.topic_name == '/out'
        assert node.fusion.worker.is_alive()
    finally:
        node.destroy_node()
    assert not node.fusion.worker.is_alive()  # destroy_node joined the worker


def _diag_values(node) -> dict[str, str]:
    return {kv.key: kv.value for kv in node.diagnostics().status[0].values}


def test_diagnostics_name_the_backends_that_really_run(context):
    """The default method's networks report the backend they run on (here a CPU machine with
    ONNX Runtime: onnxruntime for each), never the requested 'auto'; a baseline has none."""
    import importlib.util

    h = Harness(context, {})
    try:
        values = _diag_values(h.node)
        report = h.node.backend_report
        assert values['method'] == resolve_method_name('auto') == 'sgdfuse'
        assert set(report) == {'stage1', 'refiner'}, report
        for net, line in report.items():
            assert values[f'backend_{net}'] == line
            if importlib.util.find_spec('onnxruntime') and not _cuda():
                assert line.startswith('onnxruntime'), (net, line)
        assert values['backend'] == ', '.join(dict.fromkeys(
            line.split(' ', 1)[0].split(';')[0] for line in report.values()))
        assert values['backend'] != 'auto' and values['backend_requested'] == 'auto'
    finally:
        h.close()
    h = Harness(context, {'method': 'laplacian'})
    try:
        values = _diag_values(h.node)
        assert h.node.backend_report == {}
        assert values['method'] == 'laplacian' and values['backend'] == 'none (no network)'
        assert sorted(k for k in values if k.startswith('backend_')) == ['backend_requested']
    finally:
        h.close()
    node = SgdfuseNode('sgdfuse_unreported', context=context, pipeline=pipeline_with(_WithF1()))
    try:  # a method of its own that does not say what runs it: unknown, not a guess
        assert node.backend_report is None
        assert _diag_values(node)['backend'].startswith('unknown')
    finally:
        node.destroy_node()


def _cuda() -> bool:
    import importlib.util

    if importlib.util.find_spec('torch') is None:
        return False
    import torch

    return torch.cuda.is_available()


def test_threads_parameter_sets_the_runtime_threads_once(context):
    from sgdfuse_ros.runtime import set_threads
    from sgdfuse_ros.runtime.threads import default_threads

    torch = pytest.importorskip('torch', reason='needs the torch extra (sgdfuse_ros[torch])')
    before = torch.get_num_threads()
    node = SgdfuseNode('sgdfuse_threads', context=context, parameter_overrides=[
        Parameter('method', value='mean'), Parameter('threads', value=1)])
    try:
        assert default_threads() == 1 and torch.get_num_threads() == 1
    finally:
        node.destroy_node()
        set_threads(None)
        torch.set_num_threads(before)
    with pytest.raises(ParameterError, match='threads must be >= 0'):
        SgdfuseNode('sgdfuse_threads_bad', context=context,
                    parameter_overrides=[Parameter('threads', value=-2)])


def test_node_process_with_yaml_and_clean_sigint(context, ivif):
    """The console entry's code path: main(), the YAML file, the SHM profile between two
    processes, and a clean exit on Ctrl-C."""
    _, ir, vi = load_pairs(ivif / 'RoadScene', ROAD[2:3])[0]
    topic = f'/fused_{random.randrange(1 << 20)}'
    proc = subprocess.Popen(
        [sys.executable, '-m', 'sgdfuse_ros.ros.node', '--ros-args', '--params-file',
         str(REPO / 'config' / 'sgdfuse.yaml'), '-p', f'fused_topic:={topic}',
         '-r', '__node:=sgdfuse_proc'],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    tester = rclpy.create_node('sgdfuse_proc_tester', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(tester)
    got = []
    try:
        qos = qos_profile('best_effort', 5)
        pub_t = tester.create_publisher(Image, '/thermal/image_raw', qos)
        pub_r = tester.create_publisher(Image, '/rgb/image_raw', qos)
        sub = tester.create_subscription(Image, topic, got.append, qos)
        deadline = time.time() + 30  # the process imports the stack first
        while time.time() < deadline and not (pub_t.get_subscription_count()
                                              and pub_r.get_subscription_count()
                                              and tester.count_publishers(topic)):
            executor.spin_once(timeout_sec=0.1)
            assert proc.poll() is None, proc.communicate()[0]
        thermal = image_msg(ir.astype(np.uint16) * 40, 'mono16', 'thermal_cam')
        rgb = image_msg(vi, 'rgb8', 'rgb_cam')
        t_end = time.time() + 1.5
        while time.time() < t_end:
            stamp = tester.get_clock().now().to_msg()
            thermal.header.stamp = rgb.header.stamp = stamp
            pub_t.publish(thermal)
            pub_r.publish(rgb)
            executor.spin_once(timeout_sec=1 / RATE_HZ)
        end = time.time() + 2
        while time.time() < end and len(got) < 10:
            executor.spin_once(timeout_sec=0.1)
        assert len(got) >= 5, proc.communicate(timeout=1)[0] if proc.poll() else len(got)
        assert (got[0].height, got[0].width, got[0].encoding) == (*vi.shape[:2], 'rgb8')
        del sub
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail('the node did not stop on SIGINT:\n' + out)
        executor.shutdown()
        tester.destroy_node()
    assert proc.returncode == 0, out
    assert 'Traceback' not in out, out
    method = resolve_method_name('auto')
    assert f'with method {method!r} (' in out, out
    if method != 'laplacian':  # the backends that run the networks, not the parameter 'auto'
        assert 'stage1 on ' in out and 'stage1 on auto' not in out, out


class _MaskUser:
    """A method that consumes masks, to check the node hands them over and publishes them."""

    multiple = 1
    uses_masks = True
    name = 'test_mask_user'

    def __init__(self):
        self.seen = []

    def __call__(self, ir, vis, masks=None):
        self.seen.append(None if masks is None else tuple(m.shape for m in masks))
        return MethodOutput(np.maximum(ir, vis))


def test_masks_reach_the_method_and_the_mask_topics(context, ivif):
    user = _MaskUser()
    _, ir, vi = load_pairs(ivif / 'RoadScene', ROAD[3:4])[0]
    h = None
    try:
        h = Harness(context, {'mask_rate': 5.0, 'publish_masks': True},
                    pipeline=pipeline_with(user))
        got = {'ir': [], 'rgb': []}
        for key, pub in (('ir', h.node.fusion.pub_ir_mask), ('rgb', h.node.fusion.pub_rgb_mask)):
            h.tester.create_subscription(Image, pub.topic_name, got[key].append,
                                         qos_profile('best_effort', 5))
        h.wait_for(lambda: h.node.fusion.pub_ir_mask.get_subscription_count() > 0, 5)
        thermal, rgb = image_msg(ir, 'mono8', 'thermal_cam'), image_msg(vi, 'rgb8', 'rgb_cam')
        t0 = time.perf_counter()
        for i in range(int(2.0 * RATE_HZ)):
            h.publish(thermal, rgb, h.stamp())
            time.sleep(max(0.0, t0 + (i + 1) / RATE_HZ - time.perf_counter()))
        assert h.wait_for(lambda: len(h.fused) >= 5 and got['ir'] and got['rgb'], 5.0), \
            h.node.counters()
        assert all(s == (vi.shape[:2], vi.shape[:2]) for s in user.seen), user.seen[:3]
        assert (got['ir'][0].height, got['ir'][0].width) == vi.shape[:2]
        assert got['rgb'][0].encoding == 'mono8'
        assert h.node.counters()['errors'] == {}
    finally:
        if h is not None:
            h.close()


class _SlowMasks:
    """A mask provider that takes 1.5 s per pair (as a SAM-family model does on a small CPU):
    real saliency masks, delayed."""

    name = 'test_slow_masks'

    def __init__(self, opts=None):
        from sgdfuse_ros.masks import build_provider
        self.inner = build_provider('saliency')
        self.calls = 0

    def describe(self):
        return self.name

    def __call__(self, ir, vis):
        self.calls += 1
        time.sleep(1.5)
        return self.inner(ir, vis)


def test_slow_mask_provider_does_not_stall_fusion(context, ivif):
    """Fusion keeps the camera rate while the masks refresh slowly in their own thread (the
    stream computes the first frame's masks at once, in the fusion thread, so that frame
    waits once); the diagnostics report the masks' state."""
    user, slow = _MaskUser(), _SlowMasks()
    _, ir, vi = load_pairs(ivif / 'RoadScene', ROAD[:1])[0]
    h = None
    try:
        h = Harness(context, {'mask_rate': 2.0, 'mask_max_age': 0.5, 'max_latency': 0.0},
                    pipeline=pipeline_with(user, slow))
        thermal, rgb = image_msg(ir, 'mono8', 'thermal_cam'), image_msg(vi, 'rgb8', 'rgb_cam')
        h.stream(thermal, rgb, 0.5)
        assert h.wait_for(lambda: h.node.counters()['published'] >= 1, 5.0)  # first masks
        assert h.settled()
        before, calls = h.node.counters(), slow.calls
        n = h.stream(thermal, rgb, 3.0)
        assert h.settled()
        c = h.node.counters()
        published = c['published'] - before['published']
        assert c['errors'] == {} and published >= 0.8 * n, c  # not held up by the masks
        assert 1 <= slow.calls - calls <= 4, slow.calls  # about 3 s of frames at 1.5 s each
        # every fused frame was published, or replaced by a newer one before it could be
        assert len(user.seen) == c['published'] + c['fused_replaced']
        assert all(s == (vi.shape[:2], vi.shape[:2]) for s in user.seen)
        values = {kv.key: kv.value for kv in h.node.diagnostics().status[0].values}
        assert values['mask_provider'] == slow.name
        assert int(values['mask_refreshes']) >= 1
        assert float(values['mask_age_s']) > 0.5  # older than mask_max_age: reported
        assert 'old' in h.node.diagnostics().status[0].message
    finally:
        if h is not None:
            h.close()


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


@pytest.mark.slow
def test_soak_640x480(context, ivif):
    """15 Hz of 640x480 pairs: 60 s with SGDFUSE_SLOW=1, a 3 s version otherwise. No errors,
    every pair accounted for, no growth of latency or memory."""
    import cv2

    duration = 60.0 if os.environ.get('SGDFUSE_SLOW') == '1' else 3.0
    frames = []
    for _, ir, vi in load_pairs(ivif / 'RoadScene', ROAD):
        ir = cv2.resize(ir, (640, 480))
        vi = cv2.resize(vi, (640, 480))
        frames.append((image_msg(ir.astype(np.uint16) * 40 + 7000, 'mono16', 'thermal_cam'),
                       image_msg(vi, 'rgb8', 'rgb_cam')))
    h = Harness(context, {})
    ages = []
    h.node.add_frame_listener(lambda stamp, t: ages.append(t['age']))
    try:
        n, t0 = int(duration * RATE_HZ), time.perf_counter()
        rss0 = None
        for i in range(n):
            h.publish(*frames[i % len(frames)], h.stamp())
            if i % int(RATE_HZ) == 0:
                h.fused.clear()  # the harness keeps received frames; only the node is measured
            if i == int(RATE_HZ):
                rss0 = _rss_mb()
            time.sleep(max(0.0, t0 + (i + 1) / RATE_HZ - time.perf_counter()))
        h.wait_for(lambda: h.node.counters()['pairs'] == accounted(h.node.counters()), 3.0)
        c = h.node.counters()
        assert c['errors'] == {} and c['pairs'] == n
        assert c['pairs'] == accounted(c)
        assert c['published'] >= 0.5 * n, c
        third = max(1, len(ages) // 3)
        assert np.median(ages[-third:]) < np.median(ages[:third]) + 50.0, (ages[:5], ages[-5:])
        assert _rss_mb() - rss0 < 200.0
    finally:
        h.close()


def test_dds_profile_passes_several_mb_images_between_processes():
    """Best-effort 6 MB images to another process: the profile's shared-memory segment lets
    them through (Fast DDS's default 512 KiB segment loses most of them)."""
    from sgdfuse_ros.tools.node_bench import transport_check

    r = transport_check(size=(1920, 1080), rate=RATE_HZ, duration=2.0)
    assert r['profile'].endswith('fastdds_shm.xml')
    assert r['received'] >= 0.9 * r['sent'], r
