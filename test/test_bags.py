"""rosbag2 tools: offline fusion, sample bags, play/record on a real rclpy graph, the demo.

Offline tests need only ``rosbags`` (``bag fuse --params`` included: the parameter schema needs
no rclpy). The ROS tests run a real rclpy graph on loopback with the package's environment
defaults (set here before any rclpy context exists: a random domain id unless one is set, the
Fast DDS profile).
"""

import os
from pathlib import Path
import random
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from sgdfuse_ros.ros import graph

REPO = Path(__file__).resolve().parents[1]
graph.ros_env_defaults()

pytest.importorskip('rosbags', reason='needs the ros extra (rosbags)')

from sgdfuse_ros.fusion.pipeline import PipelineConfig  # noqa: E402
from sgdfuse_ros.params import load_node_params  # noqa: E402
from sgdfuse_ros.ros import bag_fuse, bag_io, live, sample_bag  # noqa: E402
from sgdfuse_ros.tools import cli  # noqa: E402

SMALL = (160, 120)
THERMAL = 'sensor_msgs/msg/Image'


def sample(tmp_path, name='in', **kw):
    args = dict(visible_size=SMALL, storage='mcap', progress=False)
    args.update(kw)
    return sample_bag.make_sample_bag(tmp_path / name, **args)


def by_topic(path, topics=None):
    out = {}
    for topic, log_ns, msg in bag_io.read_messages(path, topics):
        out.setdefault(topic, []).append((log_ns, msg))
    return out


def raw_by_topic(path):
    reader = bag_io.BagReader(path)
    try:
        out = {}
        for conn, log_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((log_ns, bytes(raw)))
        return out
    finally:
        reader.close()


def write_bag(path, storage, messages, types=None):
    """A bag from ``(topic, log_ns, msg or raw bytes)``; ``types`` maps topics to their type
    (default sensor_msgs/msg/Image)."""
    from rosbags.rosbag2 import Writer

    ts = bag_io.typestore()
    writer = Writer(path, version=8, storage_plugin=bag_io.storage_plugin(storage))
    writer.open()
    conns = {}
    for topic, log_ns, msg in sorted(messages, key=lambda m: m[1]):
        kind = (types or {}).get(topic, THERMAL)
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, kind, typestore=ts)
        data = msg if isinstance(msg, bytes) else ts.serialize_cdr(msg, kind)
        writer.write(conns[topic], log_ns, data)
    writer.close()
    return path


def image(stamp, h=24, w=32, enc='mono16', frame='cam', value=None):
    rng = np.random.default_rng(stamp % 1000)
    if enc == 'mono16':
        arr = (rng.integers(27000, 31000, (h, w))).astype(np.uint16)
    elif enc == 'rgb8':
        arr = rng.integers(0, 255, (h, w, 3)).astype(np.uint8)
    else:
        arr = rng.integers(0, 255, (h, w)).astype(np.uint8)
    return bag_io.image_message(arr, enc, bag_io.make_header(stamp, frame))


def run_cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------------------------
# Offline fusion
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_round_trip_n_pairs_in_n_fused_out(tmp_path, storage):
    info = sample(tmp_path, storage=storage, frames=9)
    assert bag_io.detect_storage(info.path) == storage
    summary = bag_fuse.fuse_bag(info.path, tmp_path / 'out', pipeline='mean', progress=False)
    assert summary.ok and summary.pairs_matched == summary.pairs_fused == 9
    assert summary.storage == storage and bag_io.detect_storage(tmp_path / 'out') == storage
    assert all(c == 0 for d in summary.unmatched.values() for c in d.values())

    got = by_topic(tmp_path / 'out')
    fused = got['/fused/image_raw']
    rgb = got['/rgb/image_raw']
    assert len(fused) == 9 and len(rgb) == 9 and len(got['/thermal/image_raw']) == 9
    # stamps and frame_id are the RGB frame's; one fused frame per RGB frame, in order
    assert [bag_io.stamp_ns(m) for _, m in fused] == [bag_io.stamp_ns(m) for _, m in rgb]
    assert [bag_io.stamp_ns(m) for _, m in rgb] == [s for _, s, _ in info.schedule]
    f0 = fused[0][1]
    assert (f0.width, f0.height, f0.encoding) == (*SMALL, 'rgb8')
    assert f0.header.frame_id == 'rgb_camera_optical_frame'
    # logged when the later frame of the pair arrived
    for (log_f, msg_f) in fused:
        partners = [log for log, m in rgb if bag_io.stamp_ns(m) == bag_io.stamp_ns(msg_f)]
        assert log_f >= partners[0]
    # the original topics are copied byte for byte
    raw_in, raw_out = raw_by_topic(info.path), raw_by_topic(tmp_path / 'out')
    for topic in ('/thermal/image_raw', '/rgb/image_raw'):
        assert raw_out[topic] == raw_in[topic]
    meta = bag_io.bag_info(tmp_path / 'out')
    assert meta['message_count'] == 27
    assert meta['topics']['/fused/image_raw'] == ('sensor_msgs/msg/Image', 9)


def test_storage_conversion_only_fused_and_bare_file(tmp_path):
    info = sample(tmp_path, frames=4)
    mcap_file = next(info.path.glob('*.mcap'))
    summary = bag_fuse.fuse_bag(mcap_file, tmp_path / 'out', pipeline='laplacian', only_fused=True,
                                storage='sqlite3', fused_topic='/cam/fused', progress=False)
    assert summary.pairs_fused == 4 and summary.copied == {}
    meta = bag_io.bag_info(tmp_path / 'out')
    assert meta['storage'] == 'sqlite3'
    assert meta['topics'] == {'/cam/fused': ('sensor_msgs/msg/Image', 4)}


def test_mono_output_and_bgr8_mono8_input(tmp_path):
    info = sample(tmp_path, frames=3, rgb_encoding='bgr8', thermal_encoding='mono8')
    msgs = by_topic(info.path)
    assert msgs['/rgb/image_raw'][0][1].encoding == 'bgr8'
    assert msgs['/thermal/image_raw'][0][1].encoding == 'mono8'
    summary = bag_fuse.fuse_bag(info.path, tmp_path / 'out', output_encoding='mono8',
                                pipeline=PipelineConfig(method='mean', output='mono'),
                                progress=False)
    assert summary.pairs_fused == 3
    fused = by_topic(tmp_path / 'out')['/fused/image_raw']
    assert fused[0][1].encoding == 'mono8' and fused[0][1].step == SMALL[0]


def test_unmatched_frames_are_counted_with_reasons(tmp_path, capsys):
    t0 = 1_000 * 10**9
    period = 100_000_000
    msgs = []
    for i in range(10):
        stamp = t0 + i * period
        msgs.append(('/thermal/image_raw', stamp + 3_000_000, image(stamp + 4_000_000)))
        if i != 4:  # one RGB frame lost
            msgs.append(('/rgb/image_raw', stamp + 2_000_000, image(stamp, enc='rgb8')))
    late = t0 + 10 * period  # a thermal frame after the last RGB frame
    msgs.append(('/thermal/image_raw', late + 3_000_000, image(late)))
    write_bag(tmp_path / 'in', 'mcap', msgs)

    code, out, err = run_cli(['bag', 'fuse', tmp_path / 'in', tmp_path / 'out', '--method',
                              'mean', '--quiet'], capsys)
    assert code == 0, err
    assert 'fused 9 of 9 matched pair(s)' in out
    assert '/thermal/image_raw: 11 frame(s), 2 left unmatched (1 superseded, 1 unpaired)' in out
    assert '/rgb/image_raw: 9 frame(s), 0 left unmatched' in out
    assert len(by_topic(tmp_path / 'out')['/fused/image_raw']) == 9

    code, out, _ = run_cli(['bag', 'fuse', tmp_path / 'in', tmp_path / 'out2', '--method',
                            'mean', '--json'], capsys)
    import json
    report = json.loads(out)
    assert code == 0 and report['pairs_fused'] == 9 and report['ok']
    assert report['unmatched']['/thermal/image_raw']['superseded'] == 1


def test_failed_pairs_and_undecodable_frames_are_listed_not_lost(tmp_path, capsys):
    t0 = 2_000 * 10**9
    msgs = []
    for i in range(6):
        stamp = t0 + i * 100_000_000
        enc = 'rgb8' if i == 2 else 'mono16'  # a colour frame on the thermal topic
        msgs.append(('/thermal/image_raw', stamp + 1, image(stamp, enc=enc)))
        rgb = b'\x00\x01\x00\x00garbage' if i == 4 else image(stamp, enc='rgb8')
        msgs.append(('/rgb/image_raw', stamp + 2, rgb))
    write_bag(tmp_path / 'in', 'sqlite3', msgs)
    code, out, err = run_cli(['bag', 'fuse', tmp_path / 'in', tmp_path / 'out', '--method',
                              'mean', '--quiet'], capsys)
    assert code == 1
    assert 'fused 4 of 5 matched pair(s)' in out
    assert '1 matched pair(s) NOT fused' in out and "encoding 'rgb8' is colour" in out
    assert '1 undecodable' in out and 'cannot decode' in out
    assert 'error: 1 pair(s) not fused and 1 undecodable frame(s)' in err
    fused = by_topic(tmp_path / 'out', '/fused/image_raw')['/fused/image_raw']
    assert len(fused) == 4  # the 4 good pairs were still written
    assert t0 + 2 * 100_000_000 not in {bag_io.stamp_ns(m) for _, m in fused}


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_truncated_bag_is_a_clear_error_and_no_output(tmp_path, capsys, storage):
    info = sample(tmp_path, storage=storage, frames=6)
    data = next(p for p in info.path.iterdir() if p.name != 'metadata.yaml')
    size = data.stat().st_size
    with open(data, 'r+b') as fh:
        fh.truncate(size * 2 // 3)
    code, out, err = run_cli(['bag', 'fuse', info.path, tmp_path / 'out', '--method', 'mean',
                              '--quiet'], capsys)
    assert code == 2
    assert 'corrupt or truncated' in err and str(info.path) in err
    assert not (tmp_path / 'out').exists()
    assert 'fused' not in out


def test_corrupt_metadata_and_not_a_bag(tmp_path, capsys):
    info = sample(tmp_path, frames=2)
    (info.path / 'metadata.yaml').write_text('rosbag2_bagfile_information: [1, 2\n')
    code, _, err = run_cli(['bag', 'fuse', info.path, tmp_path / 'out'], capsys)
    assert code == 2 and 'unreadable bag metadata' in err
    (tmp_path / 'empty').mkdir()
    code, _, err = run_cli(['bag', 'fuse', tmp_path / 'empty', tmp_path / 'out'], capsys)
    assert code == 2 and 'no metadata.yaml' in err
    code, _, err = run_cli(['bag', 'fuse', tmp_path / 'nothing', tmp_path / 'out'], capsys)
    assert code == 2 and 'no such bag' in err
    assert not (tmp_path / 'out').exists()


def test_sqlite_bag_shorter_than_its_metadata_is_truncated(tmp_path):
    """A bag whose storage holds fewer messages than metadata.yaml lists (a recording cut
    short and copied half-way) is refused, and the partial output removed."""
    import sqlite3

    info = sample(tmp_path, storage='sqlite3', frames=6)
    db = next(info.path.glob('*.db3'))
    with sqlite3.connect(db) as con:
        con.execute('DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY '
                    'timestamp DESC LIMIT 3)')
    with pytest.raises(bag_io.BagError, match='truncated: .*read 4 of the 6'):
        bag_fuse.fuse_bag(info.path, tmp_path / 'out', pipeline='mean', progress=False)
    assert not (tmp_path / 'out').exists()


def test_missing_topic_is_a_clear_error(tmp_path, capsys):
    info = sample(tmp_path, frames=2)
    code, _, err = run_cli(['bag', 'fuse', info.path, tmp_path / 'out', '--thermal-topic',
                            '/flir/image_raw'], capsys)
    assert code == 2
    assert "no thermal topic '/flir/image_raw'" in err
    assert '/rgb/image_raw, /thermal/image_raw' in err  # lists what the bag has
    assert not (tmp_path / 'out').exists()


def test_topic_of_the_wrong_type_is_a_clear_error(tmp_path, capsys):
    ts = bag_io.typestore()
    String = ts.types['std_msgs/msg/String']
    stamp = 3_000 * 10**9
    write_bag(tmp_path / 'in', 'mcap',
              [('/thermal/image_raw', stamp, String(data='not an image')),
               ('/rgb/image_raw', stamp, image(stamp, enc='rgb8'))],
              types={'/thermal/image_raw': 'std_msgs/msg/String'})
    code, _, err = run_cli(['bag', 'fuse', tmp_path / 'in', tmp_path / 'out'], capsys)
    assert code == 2
    assert "thermal topic '/thermal/image_raw' has type std_msgs/msg/String" in err
    assert not (tmp_path / 'out').exists()


def test_nothing_matched_is_not_reported_as_success(tmp_path, capsys):
    t0 = 4_000 * 10**9
    msgs = []
    for i in range(4):
        stamp = t0 + i * 100_000_000
        msgs.append(('/thermal/image_raw', stamp, image(stamp + 30_000_000)))
        msgs.append(('/rgb/image_raw', stamp + 1, image(stamp, enc='rgb8')))
    write_bag(tmp_path / 'in', 'mcap', msgs)
    code, _, err = run_cli(['bag', 'fuse', tmp_path / 'in', tmp_path / 'out', '--slop', '0.01',
                            '--quiet'], capsys)
    assert code == 2 and 'nothing fused: no thermal/RGB pair matched within slop 0.01 s' in err
    assert not (tmp_path / 'out').exists()
    # all pairs failing (sizes differ, no homography) is no success either
    info = sample(tmp_path, name='sized', frames=3, thermal_size=(80, 64))
    code, _, err = run_cli(['bag', 'fuse', info.path, tmp_path / 'out', '--method', 'mean',
                            '--quiet'], capsys)
    assert code == 2 and 'all failed' in err and 'homography' in err
    assert f'add --params {info.params_file}' in err
    assert not (tmp_path / 'out').exists()
    # and an existing output is never touched
    (tmp_path / 'taken').mkdir()
    code, _, err = run_cli(['bag', 'fuse', info.path, tmp_path / 'taken'], capsys)
    assert code == 2 and 'already exists' in err and (tmp_path / 'taken').is_dir()


def test_compressed_image_inputs(tmp_path):
    t0 = 5_000 * 10**9
    ts = bag_io.typestore()
    Compressed = ts.types['sensor_msgs/msg/CompressedImage']
    rng = np.random.default_rng(0)
    msgs = []
    for i in range(3):
        stamp = t0 + i * 100_000_000
        thermal = rng.integers(27000, 31000, (48, 64)).astype(np.uint16)
        rgb = rng.integers(0, 255, (48, 64, 3)).astype(np.uint8)
        png = np.frombuffer(cv2.imencode('.png', thermal)[1].tobytes(), np.uint8)
        jpg = np.frombuffer(cv2.imencode('.jpg', rgb)[1].tobytes(), np.uint8)
        msgs.append(('/thermal/image_raw/compressed', stamp,
                     Compressed(header=bag_io.make_header(stamp, 't'), format='mono16; png',
                                data=png)))
        msgs.append(('/rgb/image_raw/compressed', stamp + 1,
                     Compressed(header=bag_io.make_header(stamp, 'c'), format='rgb8; jpeg',
                                data=jpg)))
    comp = 'sensor_msgs/msg/CompressedImage'
    write_bag(tmp_path / 'in', 'mcap', msgs,
              types={'/thermal/image_raw/compressed': comp, '/rgb/image_raw/compressed': comp})
    summary = bag_fuse.fuse_bag(tmp_path / 'in', tmp_path / 'out', pipeline='mean',
                                thermal_topic='/thermal/image_raw/compressed',
                                rgb_topic='/rgb/image_raw/compressed', progress=False)
    assert summary.ok and summary.pairs_fused == 3
    fused = by_topic(tmp_path / 'out')['/fused/image_raw']
    assert (fused[0][1].width, fused[0][1].height, fused[0][1].encoding) == (64, 48, 'rgb8')


# --------------------------------------------------------------------------------------------
# Sample bags
# --------------------------------------------------------------------------------------------

def test_make_sample_with_another_thermal_size(tmp_path, capsys):
    code, out, err = run_cli(['bag', 'make-sample', tmp_path / 's', '--frames', '10', '--rate',
                              '20', '--visible-size', '160x120', '--thermal-size', '80x64',
                              '--storage', 'sqlite3'], capsys)
    assert code == 0, err
    assert 'thermal -> visible homography: [2, 0, 0.5, 0, 1.875, 0.4375, 0, 0, 1]' in out
    assert bag_io.detect_storage(tmp_path / 's') == 'sqlite3'
    msgs = by_topic(tmp_path / 's')
    th, rgb = msgs['/thermal/image_raw'], msgs['/rgb/image_raw']
    assert len(th) == len(rgb) == 10
    t0 = th[0][1]
    assert (t0.width, t0.height, t0.encoding) == (80, 64, 'mono16')
    assert t0.header.frame_id == 'thermal_camera_optical_frame'
    counts = np.concatenate([np.asarray(m.data).view('<u2') for _, m in th])
    # radiometric counts: centikelvin between -5 C and +46 C, not an 8-bit image scaled up
    assert 26700 < counts.min() and counts.max() < 32000 and len(np.unique(counts)) > 1000
    r0 = rgb[0][1]
    assert (r0.width, r0.height, r0.encoding) == (160, 120, 'rgb8')
    # free-running cameras: stamps differ by a jitter within a realistic slop, 20 Hz
    offsets = [abs(bag_io.stamp_ns(a) - bag_io.stamp_ns(b)) for (_, a), (_, b) in zip(th, rgb)]
    assert max(offsets) <= 10_000_000 and len(set(offsets)) > 1
    periods = np.diff([bag_io.stamp_ns(m) for _, m in rgb]) / 1e9
    assert np.allclose(periods, 0.05, atol=0.002)

    params = load_node_params(tmp_path / 's.params.yaml')
    hom = np.array(params['homography']).reshape(3, 3)
    assert params['thermal_topic'] == '/thermal/image_raw'
    # pixel centres: thermal (0, 0) -> (0.5, 0.4375); thermal far corner -> visible far corner
    far = hom @ np.array([79.5, 63.5, 1.0])
    assert np.allclose(far[:2] / far[2], [159.5, 119.5])

    summary = bag_fuse.fuse_bag(tmp_path / 's', tmp_path / 'f', progress=False,
                                pipeline=PipelineConfig(method='mean', homography=hom))
    assert summary.ok and summary.pairs_fused == 10
    f0 = by_topic(tmp_path / 'f')['/fused/image_raw'][0][1]
    assert (f0.width, f0.height) == (160, 120)


def test_fuse_cli_takes_the_node_parameter_file(tmp_path, capsys):
    info = sample(tmp_path, frames=4, thermal_size=(80, 64))
    code, out, err = run_cli(['bag', 'fuse', info.path, tmp_path / 'out', '--params',
                              REPO / 'config' / 'sgdfuse.yaml', info.params_file, '--method',
                              'mean', '--quiet'], capsys)
    assert code == 0, err
    assert 'fused 4 of 4 matched pair(s) with mean' in out and 'slop 0.05 s, queue 10' in out
    bad = tmp_path / 'bad.yaml'
    bad.write_text('/**:\n  ros__parameters:\n    sync_slop: -1.0\n')
    code, _, err = run_cli(['bag', 'fuse', info.path, tmp_path / 'out2', '--params', bad],
                           capsys)
    assert code == 2 and 'sync_slop must be > 0' in err


def test_fuse_cli_params_need_no_rclpy(tmp_path):
    """``bag fuse --params`` in a process where rclpy cannot be imported."""
    info = sample(tmp_path, frames=3, thermal_size=(80, 64))
    code = ('import sys; sys.modules["rclpy"] = None; from sgdfuse_ros.tools import cli; '
            'sys.exit(cli.main(sys.argv[1:]))')
    proc = subprocess.run([sys.executable, '-c', code, 'bag', 'fuse', str(info.path),
                           str(tmp_path / 'out'), '--params', str(info.params_file),
                           '--method', 'max', '--quiet'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'fused 3 of 3 matched pair(s) with max' in proc.stdout


class _MaskProbe:
    """A method that uses masks and records, per frame, whether the masks it got were empty."""

    name = 'mask_probe'
    multiple = 1
    uses_masks = True

    def __init__(self):
        self.empty = []

    def __call__(self, ir, vis, masks=None):
        from sgdfuse_ros.fusion.methods import MethodOutput

        self.empty.append(not any(m.any() for m in masks))
        return MethodOutput(np.clip(0.5 * (ir + vis) + 0.5 * masks[0], 0.0, 1.0))


def _probe_pipeline(probe):
    from sgdfuse_ros.fusion.pipeline import FusionPipeline
    from sgdfuse_ros.masks import build_provider

    pipe = FusionPipeline(PipelineConfig(method='mean'))
    pipe.method, pipe.mask_provider = probe, build_provider('saliency')
    return pipe


def test_fuse_bag_refreshes_masks_as_the_node_would(tmp_path):
    """Offline, masks follow the node's schedule at the camera rate read from the bag: at 10 Hz
    and mask_rate 5 Hz a refresh every 2 frames; the first frame's masks are computed at once
    (no empty-mask start), as the node's stream does; twice the same."""
    info = sample(tmp_path, frames=10, hold=5, rate_hz=10.0)
    outs = []
    for run in ('a', 'b'):
        probe = _MaskProbe()
        summary = bag_fuse.fuse_bag(info.path, tmp_path / run, pipeline=_probe_pipeline(probe),
                                    mask_rate=5.0, only_fused=True, progress=False)
        assert summary.ok and summary.pairs_fused == 10
        assert summary.masks['refresh_every'] == 2 and summary.masks['refreshes'] == 5
        assert summary.masks['mode'] == 'offline' and summary.masks['provider']
        assert probe.empty == [False] * 10
        assert 'masks: 5 refresh(es) by ' in summary.format()
        outs.append([bytes(m.data) for _, _, m in bag_io.read_messages(tmp_path / run)])
    assert outs[0] == outs[1]


def test_make_sample_refuses_bad_arguments(tmp_path, capsys):
    code, _, err = run_cli(['bag', 'make-sample', tmp_path / 's', '--thermal-size', '320'],
                           capsys)
    assert code == 2 and 'WIDTHxHEIGHT' in err
    code, _, err = run_cli(['bag', 'make-sample', tmp_path / 's', '--rate', '0'], capsys)
    assert code == 2 and 'rate' in err
    assert not (tmp_path / 's').exists()
    code, out, _ = run_cli(['bag', 'make-sample', tmp_path / 's', '--frames', '2',
                            '--visible-size', '64x48'], capsys)
    assert code == 0
    code, out, _ = run_cli(['bag', 'info', tmp_path / 's'], capsys)
    assert code == 0 and '/thermal/image_raw: sensor_msgs/msg/Image, 2' in out


# --------------------------------------------------------------------------------------------
# Live graph (rclpy on loopback)
# --------------------------------------------------------------------------------------------

def _cli_cmd(*args):
    return [sys.executable, '-m', 'sgdfuse_ros.tools.cli', *map(str, args)]


@pytest.fixture
def ros_node():
    rclpy = pytest.importorskip('rclpy', reason='needs the ros extra (rclpy)')
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node(f'bag_test_{random.randrange(1 << 20)}', context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    thread = threading.Thread(target=graph.spin, args=(executor,), daemon=True)
    thread.start()
    yield node
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)
    thread.join(timeout=2)


@pytest.mark.ros
def test_play_cli_to_recorder_round_trip(tmp_path, ros_node):
    info = sample(tmp_path, frames=12, rate_hz=20.0)
    recorder = live.BagRecorder(ros_node, tmp_path / 'rec', ['/thermal/image_raw',
                                                            '/rgb/image_raw'],
                                types={'/thermal/image_raw': bag_io.IMAGE,
                                       '/rgb/image_raw': bag_io.IMAGE})
    proc = subprocess.run(_cli_cmd('bag', 'play', info.path, '--wait-for-subscribers', '20'),
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'published 24 message(s)' in proc.stdout
    deadline = time.time() + 5
    while time.time() < deadline and sum(recorder.counts.values()) < 24:
        time.sleep(0.05)
    stats = recorder.close()
    assert stats.counts == {'/thermal/image_raw': 12, '/rgb/image_raw': 12}
    played, recorded = raw_by_topic(info.path), raw_by_topic(tmp_path / 'rec')
    for topic in played:
        assert [d for _, d in recorded[topic]] == [d for _, d in played[topic]]
    # timed by the recorded stamps: 12 frames at 20 Hz take about 0.55 s
    logs = [t for t, _ in recorded['/rgb/image_raw']]
    assert 0.4 < (logs[-1] - logs[0]) / 1e9 < 1.5


@pytest.mark.ros
def test_player_to_record_cli_with_clock_and_rate(tmp_path, ros_node):
    from rosgraph_msgs.msg import Clock

    info = sample(tmp_path, frames=8, rate_hz=10.0)
    proc = subprocess.Popen(_cli_cmd('bag', 'record', tmp_path / 'rec', '--topics',
                                     '/rgb/image_raw', '--max-messages', '8', '--duration',
                                     '60', '--storage', 'sqlite3'),
                            cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    clocks = []
    ros_node.create_subscription(Clock, '/clock', lambda m: clocks.append(
        m.clock.sec * 10**9 + m.clock.nanosec), 10)
    try:
        player = live.BagPlayer(ros_node, info.path, rate=2.0, clock=True,
                                topics=['/rgb/image_raw'])
        assert player.wait_for_subscribers(timeout=60), proc.poll()
        time.sleep(0.3)
        t0 = time.monotonic()
        stats = player.run()
        wall = time.monotonic() - t0
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert stats.published == {'/rgb/image_raw': 8}
    assert 0.3 < wall < 1.5  # 0.7 s of bag at twice the speed
    assert proc.returncode == 0, out
    assert 'recorded 8 message(s)' in out
    meta = bag_io.bag_info(tmp_path / 'rec')
    assert meta['storage'] == 'sqlite3'
    assert meta['topics'] == {'/rgb/image_raw': ('sensor_msgs/msg/Image', 8)}
    rec = [bag_io.stamp_ns(m) for _, _, m in bag_io.read_messages(tmp_path / 'rec')]
    assert rec == [s for _, s, _ in info.schedule]
    assert clocks and clocks == sorted(clocks)
    start = bag_io.bag_info(info.path)['start_ns']
    assert start <= clocks[0] and clocks[-1] <= start + 10**9


@pytest.mark.ros
def test_demo_end_to_end(tmp_path):
    pytest.importorskip('rclpy', reason='needs the ros extra (rclpy)')
    proc = subprocess.run(_cli_cmd('demo', '--out', tmp_path / 'demo', '--hold', '2',
                                   '--method', 'laplacian'),
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for text in ('[1/4]', '[2/4]', '[3/4]', '[4/4]', 'Throughput:', 'Latency, RGB frame',
                 'Contact sheet:', '14 pairs played'):
        assert text in out, out
    try:
        import sgdfuse_ros.core.metrics  # noqa: F401
    except ImportError:
        pass
    else:  # the metric table of the node's frames, with the other methods offline beside it
        assert 'node: laplacian' in out and 'Qabf' in out and 'mean (offline)' in out, out
    demo = tmp_path / 'demo'
    sheet = cv2.imread(str(demo / 'contact_sheet.png'))
    # one row per scene with a fused frame: 7 scenes of 2 frames; on a loaded machine the node
    # may drop both frames of one (as it may drop 4 of the 14 pairs below)
    assert sheet is not None and sheet.shape[1] == 3 * 320
    assert sheet.shape[0] % 240 == 0 and 6 * 240 <= sheet.shape[0] <= 7 * 240
    fused = bag_io.bag_info(demo / 'fused_bag')['topics']['/fused/image_raw']
    assert fused[1] >= 10  # at 10 Hz the laplacian node keeps up with nearly every pair
    assert 'homography' in (demo / 'sample_bag.params.yaml').read_text()
    # every process the demo started is gone
    ps = subprocess.run(['ps', '-eo', 'args'], capture_output=True, text=True).stdout
    assert str(demo / 'node_params.yaml') not in ps


@pytest.mark.ros
@pytest.mark.parametrize('sig', ['SIGINT', 'SIGTERM'])
def test_demo_stops_its_node_when_interrupted(tmp_path, sig):
    import signal

    pytest.importorskip('rclpy', reason='needs the ros extra (rclpy)')
    proc = subprocess.Popen(_cli_cmd('demo', '--out', tmp_path / 'demo', '--hold', '30',
                                     '--method', 'mean'),
                            cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:  # wait until the bag is playing
            lines.append(line)
            if line.startswith('[3/4]'):
                break
        time.sleep(1.0)
        proc.send_signal(getattr(signal, sig))
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = ''.join(lines) + out
    assert proc.returncode == 130, out
    assert 'interrupted; stopping the node' in out and 'Traceback' not in out, out
    ps = subprocess.run(['ps', '-eo', 'args'], capture_output=True, text=True).stdout
    assert str(tmp_path / 'demo' / 'node_params.yaml') not in ps


def test_fuse_cli_writes_compressed_fused_frames(tmp_path, capsys):
    """bag fuse --compressed: each fused frame also as JPEG on <fused>/compressed, with its
    header; a node parameter file with qos_overrides (ROS's own parameters) is accepted."""
    info = sample(tmp_path, frames=4, thermal_size=(80, 64))
    yaml_file = tmp_path / 'node.yaml'
    yaml_file.write_text('/**:\n  ros__parameters:\n    jpeg_quality: 80\n    qos_overrides:\n'
                         '      /fused/image_raw:\n        publisher:\n'
                         '          reliability: reliable\n')
    code, _, err = run_cli(['bag', 'fuse', info.path, tmp_path / 'out', '--params', yaml_file,
                            info.params_file, '--method', 'mean', '--compressed', '--quiet'],
                           capsys)
    assert code == 0, err
    meta = bag_io.bag_info(tmp_path / 'out')['topics']
    assert meta['/fused/image_raw/compressed'] == ('sensor_msgs/msg/CompressedImage', 4)
    msgs = by_topic(tmp_path / 'out', ['/fused/image_raw', '/fused/image_raw/compressed'])
    for (log_raw, raw), (log_jpeg, jpeg) in zip(msgs['/fused/image_raw'],
                                                msgs['/fused/image_raw/compressed']):
        assert log_raw == log_jpeg and bag_io.stamp_ns(raw) == bag_io.stamp_ns(jpeg)
        assert jpeg.header.frame_id == raw.header.frame_id
        assert jpeg.format == 'rgb8; jpeg compressed bgr8'
        img = cv2.imdecode(np.asarray(jpeg.data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        want = np.asarray(raw.data, np.uint8).reshape(raw.height, raw.width, 3)
        assert np.abs(img.astype(int) - want).mean() < 4.0
    code, _, err = run_cli(['bag', 'fuse', info.path, tmp_path / 'out2', '--method', 'mean',
                            '--compressed', '--jpeg-quality', '0', '--quiet'], capsys)
    assert code == 2 and 'jpeg_quality must be >= 1' in err
