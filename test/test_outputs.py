"""What the node publishes beside the fused image (ros/outputs.py): camera_info, JPEG
``<topic>/compressed`` copies, and the ``qos_overrides`` parameters of its topics. The pure
parts without a graph, then the node on a real rclpy graph (``ros_harness``)."""

import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='needs the ros extra (rclpy)')

from ros_harness import (RATE_HZ, ROAD, Harness, image_msg, load_pairs,  # noqa: E402
                         new_context, ns, pipeline_with)
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from sgdfuse_ros.fusion.methods import MethodOutput  # noqa: E402
from sgdfuse_ros.params import ParameterError, validate_settings  # noqa: E402
from sgdfuse_ros.ros.graph import qos_profile  # noqa: E402
from sgdfuse_ros.ros.outputs import (jpeg_bytes, scaled_camera_info,  # noqa: E402
                                     sibling_topic)

pytestmark = pytest.mark.ros


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------

def _info(width=640, height=480) -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model='plumb_bob',
                      d=[-0.1, 0.01, 0.0, 0.0, 0.0],
                      k=[500.0, 0.0, 320.0, 0.0, 505.0, 240.0, 0.0, 0.0, 1.0],
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[500.0, 0.0, 320.0, -25.0, 0.0, 505.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 40, 20, 320, 240
    return info


def test_sibling_topic_is_the_image_transport_rule():
    assert sibling_topic('/rgb/image_raw', 'camera_info') == '/rgb/camera_info'
    assert sibling_topic('/a/b/image', 'camera_info') == '/a/b/camera_info'
    assert sibling_topic('/image', 'camera_info') == '/camera_info'
    assert sibling_topic('image', 'camera_info') == 'camera_info'
    assert sibling_topic('cam/image', 'camera_info') == 'cam/camera_info'


def test_camera_info_scaled_to_the_published_size():
    header = Header(frame_id='rgb_optical')
    header.stamp.sec, header.stamp.nanosec = 12, 345
    same = scaled_camera_info(_info(), 640, 480, header)
    assert list(same.k) == list(_info().k) and list(same.p) == list(_info().p)
    assert same.header.stamp.sec == 12 and same.header.frame_id == 'rgb_optical'

    half = scaled_camera_info(_info(), 320, 240, header)
    assert (half.width, half.height) == (320, 240)
    np.testing.assert_allclose(half.k, [250.0, 0.0, 160.0, 0.0, 252.5, 120.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(half.p, [250.0, 0.0, 160.0, -12.5, 0.0, 252.5, 120.0, 0.0,
                                        0.0, 0.0, 1.0, 0.0])
    assert list(half.d) == list(_info().d) and list(half.r) == list(_info().r)
    assert (half.roi.x_offset, half.roi.y_offset, half.roi.width, half.roi.height) == \
        (20, 10, 160, 120)
    # A projected point lands on the same relative spot of either image.
    X = np.array([0.3, -0.2, 2.0, 1.0])
    full_px = np.array(_info().p).reshape(3, 4) @ X
    half_px = np.array(half.p).reshape(3, 4) @ X
    np.testing.assert_allclose(half_px[:2] / half_px[2], full_px[:2] / full_px[2] / 2)

    uncalibrated = scaled_camera_info(CameraInfo(), 320, 240, header)
    assert (uncalibrated.width, uncalibrated.height) == (320, 240)
    assert list(uncalibrated.k) == [0.0] * 9


def test_jpeg_bytes_round_trip_and_formats():
    import cv2

    rng = np.random.default_rng(0)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (7, 7), 0)
    data, fmt = jpeg_bytes(rgb, 95)
    assert fmt == 'rgb8; jpeg compressed bgr8'
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert np.abs(back.astype(int) - rgb).mean() < 4.0  # RGB stays RGB through the BGR JPEG
    gray, gfmt = jpeg_bytes(rgb[:, :, 0].copy(), 95)
    assert gfmt == 'mono8; jpeg compressed mono8'
    assert cv2.imdecode(np.frombuffer(gray, np.uint8), cv2.IMREAD_UNCHANGED).ndim == 2
    assert len(jpeg_bytes(rgb, 20)[0]) < len(data)
    with pytest.raises(ValueError, match='uint8'):
        jpeg_bytes(rgb.astype(np.float32), 90)


def test_bench_times_the_jpeg_output(capsys):
    import json

    from sgdfuse_ros.tools.cli import main

    argv = ['bench', '--method', 'laplacian', '--size', '160x128', '--frames', '3', '--warmup',
            '1', '--threads', '1', '--json']
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])['jpeg_ms'] is None
    assert main([*argv, '--jpeg', '90']) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res['jpeg_ms'] > 0 and 'jpeg' in res['p95_ms']


def test_output_parameters_are_checked():
    s = validate_settings({})
    assert (s.camera_info_topic, s.publish_compressed, s.jpeg_quality) == ('', False, 90)
    for bad in ({'jpeg_quality': 0}, {'jpeg_quality': 101}, {'camera_info_topic': 'a b'}):
        with pytest.raises(ParameterError, match=next(iter(bad))):
            validate_settings(bad)


# --------------------------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def context():
    ctx = new_context()
    yield ctx
    ctx.try_shutdown()


class _MaskMax:
    """A method that uses masks (so that the node publishes them): the pixel-wise max."""

    multiple = 1
    uses_masks = True
    name = 'test_mask_max'

    def __call__(self, ir, vis, masks=None):
        return MethodOutput(np.maximum(ir, vis))


def _stream(h: Harness, ir, vi, seconds: float = 2.0) -> None:
    thermal, rgb = image_msg(ir, 'mono8', 'thermal_cam'), image_msg(vi, 'rgb8', 'rgb_cam')
    t0 = time.perf_counter()
    for i in range(int(seconds * RATE_HZ)):
        h.publish(thermal, rgb, h.stamp())
        time.sleep(max(0.0, t0 + (i + 1) / RATE_HZ - time.perf_counter()))


def test_camera_info_follows_each_fused_frame(context, ivif):
    """The RGB camera's camera_info (here for an image twice the size of the frames, as a
    camera binning 2x2 would send) comes out beside every fused frame with that frame's
    stamp and the fused image's size, its intrinsics scaled."""
    _, ir, vi = load_pairs(ivif / 'RoadScene', ROAD[:1])[0]
    h, w = vi.shape[:2]
    harness = None
    try:
        harness = Harness(context, {'max_latency': 0.0}, pipeline=pipeline_with(_MaskMax()))
        infos = []
        qos = qos_profile('best_effort', 5)
        harness.tester.create_subscription(CameraInfo, '/fused/camera_info', infos.append, qos)
        pub_info = harness.tester.create_publisher(CameraInfo, '/rgb/camera_info', qos)
        outputs = harness.node.fusion.outputs
        assert outputs.info_sub.topic_name == '/rgb/camera_info'
        assert harness.wait_for(lambda: pub_info.get_subscription_count() > 0
                                and outputs.pub_info.get_subscription_count() > 0, 10.0)
        big = _info(2 * w, 2 * h)
        while outputs.info_sub.latest is None:
            pub_info.publish(big)
            harness.wait_for(lambda: outputs.info_sub.latest is not None, 0.2)
        _stream(harness, ir, vi)
        assert harness.wait_for(lambda: len(harness.fused) >= 5 and len(infos) >= 5, 5.0), \
            harness.node.counters()
        time.sleep(0.3)
        fused_stamps = {ns(m.header.stamp): m for _, m in harness.fused}
        for info in infos:
            frame = fused_stamps.get(ns(info.header.stamp))
            assert frame is not None, "a camera_info whose stamp is no fused frame's"
            assert (info.width, info.height) == (frame.width, frame.height) == (w, h)
            assert info.header.frame_id == frame.header.frame_id == 'rgb_cam'
            np.testing.assert_allclose(info.k, np.array(big.k) * [.5, 1, .5, 1, .5, .5, 1, 1, 1])
        assert len(infos) >= len(harness.fused) - 2  # one per fused frame (best effort)
    finally:
        if harness is not None:
            harness.close()


def test_no_camera_info_in_none_out(context, ivif):
    _, ir, vi = load_pairs(ivif / 'RoadScene', ROAD[1:2])[0]
    harness = None
    try:
        harness = Harness(context, {'max_latency': 0.0, 'rgb_topic': '/other_rgb/image_raw'},
                          pipeline=pipeline_with(_MaskMax()))
        infos = []
        harness.tester.create_subscription(CameraInfo, '/fused/camera_info', infos.append,
                                           qos_profile('best_effort', 5))
        outputs = harness.node.fusion.outputs
        assert outputs.info_sub.topic_name == '/other_rgb/camera_info'
        harness.wait_for(lambda: outputs.pub_info.get_subscription_count() > 0, 10.0)
        _stream(harness, ir, vi, 1.0)
        assert harness.wait_for(lambda: len(harness.fused) >= 3, 5.0), harness.node.counters()
        time.sleep(0.3)
        assert infos == [] and outputs.published_info == 0
        assert outputs._said_no_info  # logged once
    finally:
        if harness is not None:
            harness.close()


def test_compressed_fused_and_masks_and_qos_overrides(context, ivif):
    """publish_compressed: JPEG of the fused image on <fused_topic>/compressed and of each
    mask on <mask topic>/compressed, equal to the raw ones up to JPEG loss. QoS overrides:
    the fused publisher made reliable and one subscription given another reliability than
    qos_reliability, through the standard parameters."""
    import cv2

    from sgdfuse_ros.ros import convert

    _, ir, vi = load_pairs(ivif / 'RoadScene', ROAD[2:3])[0]
    harness = None
    try:
        harness = Harness(context, {
            'max_latency': 0.0, 'publish_compressed': True, 'publish_masks': True,
            'jpeg_quality': 95,
            'qos_overrides./fused/image_raw.publisher.reliability': 'reliable',
            'qos_overrides./rgb/image_raw.subscription.reliability': 'reliable'},
            pipeline=pipeline_with(_MaskMax()), connect=False)
        node, tester = harness.node, harness.tester
        fusion = node.fusion
        got = {'fused': [], 'ir_mask': [], 'rgb_mask': []}
        topics = {'fused': '/fused/image_raw/compressed',
                  'ir_mask': fusion.pub_ir_mask.topic_name + '/compressed',
                  'rgb_mask': fusion.pub_rgb_mask.topic_name + '/compressed'}
        qos = qos_profile('best_effort', 10)
        for key, topic in topics.items():
            tester.create_subscription(CompressedImage, topic, got[key].append, qos)
        raw_masks = []
        tester.create_subscription(Image, fusion.pub_ir_mask.topic_name, raw_masks.append, qos)
        # a camera driver as REP 2003 has it: publishing reliable (it reaches both kinds)
        tester.destroy_publisher(harness.pub_rgb)
        harness.pub_rgb = tester.create_publisher(Image, '/rgb/image_raw',
                                                  qos_profile('reliable', 5))
        harness.connect()

        # the overrides apply, and are listed as parameters
        assert node.get_parameter('qos_overrides./fused/image_raw.publisher.reliability'
                                  ).value == 'reliable'
        assert node.has_parameter('qos_overrides./thermal/image_raw.subscription.depth')
        pubs = tester.get_publishers_info_by_topic('/fused/image_raw')
        assert [p.qos_profile.reliability for p in pubs] == [ReliabilityPolicy.RELIABLE]
        subs = {t: [s.qos_profile.reliability for s in tester.get_subscriptions_info_by_topic(t)
                    if s.node_name == node.get_name()]
                for t in ('/rgb/image_raw', '/thermal/image_raw')}
        assert subs == {'/rgb/image_raw': [ReliabilityPolicy.RELIABLE],
                        '/thermal/image_raw': [ReliabilityPolicy.BEST_EFFORT]}
        jpeg_pubs = tester.get_publishers_info_by_topic(topics['fused'])
        assert [p.qos_profile.reliability for p in jpeg_pubs] == [ReliabilityPolicy.BEST_EFFORT]

        _stream(harness, ir, vi)
        assert harness.wait_for(lambda: len(harness.fused) >= 3 and all(
            len(v) >= 3 for v in got.values()) and raw_masks, 5.0), \
            ({k: len(v) for k, v in got.items()}, node.counters())
        raw = {ns(m.header.stamp): m for _, m in harness.fused}
        matched = 0
        for msg in got['fused']:
            assert msg.format == 'rgb8; jpeg compressed bgr8'
            frame = raw.get(ns(msg.header.stamp))
            if frame is None:
                continue
            matched += 1
            img = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
            want = convert.image_to_numpy(frame, use_cv_bridge=False)
            assert img.shape == want.shape
            assert np.abs(img[:, :, ::-1].astype(int) - want).mean() < 3.0
        assert matched >= 2
        mask_raw = {ns(m.header.stamp): m for m in raw_masks}
        for msg in got['ir_mask']:
            assert msg.format == 'mono8; jpeg compressed mono8'
            frame = mask_raw.get(ns(msg.header.stamp))
            if frame is not None:
                img = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8),
                                   cv2.IMREAD_UNCHANGED)
                want = convert.image_to_numpy(frame, use_cv_bridge=False)
                assert np.abs(img.astype(int) - want).mean() < 3.0
        assert node.counters()['errors'] == {}
    finally:
        if harness is not None:
            harness.close()


def test_compressed_output_is_off_by_default(context, ivif):
    _, ir, vi = load_pairs(ivif / 'RoadScene', ROAD[3:4])[0]
    harness = None
    try:
        harness = Harness(context, {'max_latency': 0.0}, pipeline=pipeline_with(_MaskMax()))
        assert harness.node.fusion.outputs.pub_fused_jpeg is None
        _stream(harness, ir, vi, 0.5)
        assert harness.wait_for(lambda: harness.fused, 5.0)
        assert harness.tester.get_publishers_info_by_topic('/fused/image_raw/compressed') == []
    finally:
        if harness is not None:
            harness.close()
