"""The approximate-time matching rule, fed with messages constructed in the test (no ROS graph).

Index 0 is the thermal input, index 1 the RGB input, as in the node.
"""

import sys
import types

import pytest

from sgdfuse_ros.core.matching import DROP_REASONS, ApproximateMatcher, stamp_to_ns
from sgdfuse_ros.ros.sync import SyncedSubscriptions

MS = 1_000_000  # ns


def image(stamp_ms: float, frame_id: str = ''):
    """A sensor_msgs/Image with only its header set (the matcher looks at nothing else)."""
    from sensor_msgs.msg import Image

    msg = Image()
    ns = int(round(stamp_ms * MS))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    return msg


def ms(msg) -> float:
    return stamp_to_ns(msg) / MS


def dropped(m: ApproximateMatcher, reason: str) -> list[int]:
    return m.stats.dropped[reason]


@pytest.fixture
def messages():
    pytest.importorskip('sensor_msgs.msg', reason='needs the ros extra (sensor_msgs)')


def test_stamp_forms(messages):
    from builtin_interfaces.msg import Time as TimeMsg
    from rclpy.time import Time

    assert stamp_to_ns(image(1500.25)) == 1_500_250_000
    assert stamp_to_ns(TimeMsg(sec=2, nanosec=7)) == 2_000_000_007
    assert stamp_to_ns(Time(nanoseconds=42)) == 42
    assert stamp_to_ns(42) == 42
    assert stamp_to_ns(object()) is None and stamp_to_ns(True) is None


def test_pair_inside_slop_and_header_kept(messages):
    m = ApproximateMatcher(queue_size=5, slop=0.05)
    assert m.push(0, image(1000.0, 'thermal')) is None
    pair = m.push(1, image(1030.0, 'rgb'))
    assert pair is not None
    assert [p.header.frame_id for p in pair] == ['thermal', 'rgb']
    assert m.pending() == 0 and m.stats.pairs == 1 and m.stats.received == [1, 1]


def test_pair_outside_slop_is_not_matched(messages):
    m = ApproximateMatcher(queue_size=5, slop=0.05)
    assert m.push(0, image(1000.0)) is None
    assert m.push(1, image(1080.0)) is None
    # a difference of exactly the slop does not match either (message_filters: strictly less)
    assert m.push(1, image(1050.0)) is None
    assert m.push(1, image(1049.0)) is not None
    assert m.pending(1) == 2


def test_closest_partner_wins(messages):
    m = ApproximateMatcher(queue_size=5, slop=0.05)
    m.push(0, image(1000.0))
    m.push(0, image(1033.0))
    pair = m.push(1, image(1025.0))
    assert [ms(p) for p in pair] == [1033.0, 1025.0]
    assert m.pending(0) == 1  # 1000 stays queued: the rule does not discard older frames


def test_out_of_order_arrival(messages):
    m = ApproximateMatcher(queue_size=5, slop=0.02)
    m.push(0, image(1100.0))
    m.push(0, image(1000.0))  # arrives late
    assert [ms(p) for p in m.push(1, image(1005.0))] == [1000.0, 1005.0]
    assert [ms(p) for p in m.push(1, image(1098.0))] == [1100.0, 1098.0]
    late_rgb = m.push(1, image(1200.0))
    assert late_rgb is None
    assert [ms(p) for p in m.push(0, image(1201.0))] == [1201.0, 1200.0]
    assert m.stats.pairs == 3 and m.pending() == 0


def test_identical_stamps(messages):
    m = ApproximateMatcher(queue_size=5, slop=0.01)
    m.push(0, image(1000.0, 'a'))
    m.push(0, image(1000.0, 'b'))  # same stamp on the same input replaces
    assert dropped(m, 'duplicate_stamp') == [1, 0]
    pair = m.push(1, image(1000.0, 'rgb'))
    assert [p.header.frame_id for p in pair] == ['b', 'rgb']
    # zero slop cannot match anything: even identical stamps span 0, not < 0
    z = ApproximateMatcher(queue_size=5, slop=0.0)
    z.push(0, image(1000.0))
    assert z.push(1, image(1000.0)) is None


def test_queue_overflow_when_partner_lags(messages):
    m = ApproximateMatcher(queue_size=3, slop=0.02)
    for k in range(5):  # RGB frames at 15 Hz; their thermal partners arrive late
        m.push(1, image(1000.0 + k * 66.7))
    assert m.pending(1) == 3
    assert dropped(m, 'queue_overflow') == [0, 2]
    assert m.push(0, image(1000.0)) is None  # its partner was evicted
    assert m.push(0, image(1133.4)) is not None  # the third RGB frame is still there
    assert m.stats.total_dropped() == 2


def test_new_frame_older_than_a_full_queue_is_evicted_at_once(messages):
    m = ApproximateMatcher(queue_size=2, slop=0.02)
    m.push(1, image(1100.0))
    m.push(1, image(1200.0))
    m.push(0, image(1300.0))
    assert m.push(1, image(1000.0)) is None  # oldest of a full queue: evicted, not matched
    assert m.pending(1) == 2 and m.stats.total_dropped(1) == 1


def test_faster_camera(messages):
    """RGB at 30 Hz, thermal at 15 Hz with jitter: every thermal frame is paired with its
    nearest RGB frame; the extra RGB frames are dropped as superseded."""
    m = ApproximateMatcher(queue_size=6, slop=0.02)
    pairs = []
    rgb = [1000.0 + k * 33.33 for k in range(60)]
    thermal = [1000.0 + k * 66.67 + (3.0 if k % 2 else -2.0) for k in range(30)]
    events = sorted([(t, 1) for t in rgb] + [(t + 5.0, 0) for t in thermal])  # thermal later
    for t, index in events:
        stamp = t - 5.0 if index == 0 else t
        out = m.push(index, image(stamp))
        if out is not None:
            pairs.append([ms(p) for p in out])
    assert len(pairs) == 30
    for th, rg in pairs:
        assert abs(th - rg) < 20.0
    m.flush()
    assert m.stats.dropped['superseded'][1] >= 29
    assert m.stats.total_dropped(0) == 0
    assert m.stats.received == [30, 60]


def test_constant_offset_reports_out_of_slop(messages):
    m = ApproximateMatcher(queue_size=3, slop=0.02)
    for k in range(10):
        m.push(1, image(1000.0 + k * 66.7))
        m.push(0, image(1100.0 + k * 66.7))  # thermal clock 100 ms ahead
    assert m.stats.pairs == 0
    assert dropped(m, 'out_of_slop')[1] == 7  # the RGB frames the thermal stream passed
    left = m.flush()
    assert len(left) == 6 and m.pending() == 0
    assert {reason for _, _, reason in left} <= {'out_of_slop', 'unpaired'}


def test_headerless_refused_unless_allowed():
    m = ApproximateMatcher(queue_size=3, slop=0.05)
    assert m.push(0, 'no header here') is None
    assert dropped(m, 'headerless') == [1, 0] and m.pending() == 0
    clock = iter([5 * MS, 6 * MS])
    h = ApproximateMatcher(queue_size=3, slop=0.05, allow_headerless=True,
                           clock_ns=lambda: next(clock))
    h.push(0, 'a')
    assert h.push(1, 'b') == ('a', 'b')


def test_plain_stamps_and_drop_callback():
    seen = []
    m = ApproximateMatcher(queue_size=1, slop=0.01, on_drop=lambda *a: seen.append(a))
    m.push(0, 'frame-a', stamp=1000 * MS)
    m.push(0, 'frame-b', stamp=1100 * MS)
    assert seen == [(0, 'frame-a', 'queue_overflow')]
    assert m.push(1, 'rgb', stamp=1105 * MS) == ('frame-b', 'rgb')
    assert set(m.stats.dropped) == set(DROP_REASONS)
    assert m.stats.as_dict()['pairs'] == 1


@pytest.mark.parametrize('kwargs, pattern', [
    ({'queue_size': 0, 'slop': 0.1}, 'queue_size'),
    ({'queue_size': 2.5, 'slop': 0.1}, 'queue_size'),
    ({'queue_size': 2, 'slop': -0.1}, 'slop'),
    ({'queue_size': 2, 'slop': float('nan')}, 'slop'),
    ({'queue_size': 2, 'slop': 0.1, 'inputs': 1}, 'inputs'),
])
def test_invalid_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ApproximateMatcher(**kwargs)


class _FakeNode:
    def create_subscription(self, msg_type, topic, callback, qos, callback_group=None):
        return types.SimpleNamespace(topic_name=topic, callback=callback, group=callback_group)

    def destroy_subscription(self, sub):
        pass


def test_builtin_glue_never_raises(messages):
    errors, got = [], []

    def callback(thermal, rgb):
        got.append((ms(thermal), ms(rgb)))
        raise RuntimeError('downstream failure')

    subs = SyncedSubscriptions(_FakeNode(), [(object, '/t'), (object, '/r')], qos=5,
                               queue_size=5, slop=0.05, callback=callback, backend='builtin',
                               on_error=errors.append, callback_group='images')
    assert [s.group for s in subs.subscriptions] == ['images', 'images']
    t_cb, r_cb = (s.callback for s in subs.subscriptions)
    t_cb(image(1000.0))
    r_cb(image(1010.0))  # the callback raises; the glue reports and carries on
    t_cb(image(1066.0))
    r_cb(image(1070.0))
    assert got == [(1000.0, 1010.0), (1066.0, 1070.0)]
    assert len(errors) == 2 and 'downstream' in str(errors[0])
    assert subs.stats().pairs == 2 and subs.last_arrival(0) is not None


def test_message_filters_backend_uses_keyword_arguments(monkeypatch, messages):
    """With message_filters importable the glue builds its synchronizer with keywords (its
    positional signature changed between releases). A stand-in module records the call."""
    calls = {}

    class Subscriber:
        def __init__(self, node, msg_type, topic, qos_profile=None):
            self.sub = types.SimpleNamespace(topic_name=topic)
            self.callbacks = []

        def registerCallback(self, cb, *args):
            self.callbacks.append((cb, args))

        def signal(self, msg):
            for cb, args in self.callbacks:
                cb(msg, *args)

    class ApproximateTimeSynchronizer:
        def __init__(self, *args, **kwargs):
            calls['args'], calls['kwargs'] = args, kwargs
            self.fs = kwargs['fs']
            # register on the inputs first, as the real one does in its constructor
            for i, f in enumerate(self.fs):
                f.registerCallback(self.add, i)
            self.cb = None
            self.pending = {}

        def registerCallback(self, cb):
            self.cb = cb

        def add(self, msg, index):
            self.pending[index] = msg
            if len(self.pending) == 2:
                self.cb(self.pending[0], self.pending[1])
                self.pending = {}

    fake = types.ModuleType('message_filters')
    fake.Subscriber, fake.ApproximateTimeSynchronizer = Subscriber, ApproximateTimeSynchronizer
    monkeypatch.setitem(sys.modules, 'message_filters', fake)
    errors, got = [], []
    subs = SyncedSubscriptions(object(), [(object, '/t'), (object, '/r')], qos=5, queue_size=7,
                               slop=0.04, callback=lambda *m: got.append(m), backend='auto',
                               on_error=errors.append)
    assert subs.backend == 'message_filters'
    assert calls['args'] == ()
    assert calls['kwargs'] == {'fs': subs._filters, 'queue_size': 7, 'slop': 0.04,
                               'allow_headerless': False}
    subs._filters[0].signal(image(1000.0))
    subs._filters[1].signal(image(1010.0))
    assert len(got) == 1 and not errors
    stats = subs.stats()  # the counters run beside message_filters on the stamps
    assert stats.received == [1, 1] and stats.pairs == 1
