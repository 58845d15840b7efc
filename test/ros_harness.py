"""What the ROS tests share: a node under test with a tester node on one executor, message
builders, real image pairs, and a client of the node's services.

Not a test module: test_node.py, test_node_ops.py and test_lifecycle.py import it (pytest puts
``test/`` on the path). The environment is set before rclpy creates any context
(``ros_env_defaults``: localhost-only discovery, a random domain id unless one is set, the
package's Fast DDS profile).
"""

from __future__ import annotations

import array
from pathlib import Path
import random
import threading
import time

from sgdfuse_ros.ros.graph import qos_profile, ros_env_defaults

ros_env_defaults()

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from sgdfuse_ros.core.imaging import read_image  # noqa: E402
from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig  # noqa: E402
from sgdfuse_ros.params import DEFAULTS  # noqa: E402
from sgdfuse_ros.ros import convert  # noqa: E402
from sgdfuse_ros.ros.node import SgdfuseNode  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATE_HZ = 15.0
ROAD = ['FLIR_00211.jpg', 'FLIR_00977.jpg', 'FLIR_01130.jpg', 'FLIR_04269.jpg',
        'FLIR_04424.jpg', 'FLIR_04484.jpg']


def new_context():
    """A fresh rclpy context (a module fixture's body: yield it, then shut it down)."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    return ctx


class Harness:
    """The node under test plus a tester node (publishes pairs, records outputs), spun by one
    executor in a background thread. ``node_class``: :class:`SgdfuseNode` (fusing once built:
    the harness waits for the graph to connect), a managed node (``connect=False``: it has no
    subscriptions before it is activated), or None: the node named ``name`` runs elsewhere (a
    process) and only the tester is here."""

    def __init__(self, context, params: dict, *, thermal_type=Image, rgb_type=Image,
                 pipeline: FusionPipeline | None = None, node_class=SgdfuseNode,
                 connect: bool = True, name: str | None = None):
        self.context = context
        self._clients: dict = {}
        self.name = name or f'sgdfuse_{random.randrange(1 << 30)}'
        self.node = None if node_class is None else node_class(
            self.name, context=context, pipeline=pipeline,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        topics = {k: params.get(k, DEFAULTS[k])
                  for k in ('thermal_topic', 'rgb_topic', 'fused_topic')}
        self.tester = rclpy.create_node(self.name + '_tester', context=context)
        qos = qos_profile('best_effort', 5)
        self.pub_thermal = self.tester.create_publisher(thermal_type, topics['thermal_topic'],
                                                        qos)
        self.pub_rgb = self.tester.create_publisher(rgb_type, topics['rgb_topic'], qos)
        self.fused, self.diagnostics = [], []
        self.tester.create_subscription(
            Image, topics['fused_topic'], lambda m: self.fused.append((time.time(), m)), qos)
        self.tester.create_subscription(
            DiagnosticArray, '/diagnostics',
            lambda m: self.diagnostics.extend(s for s in m.status if self.name in s.name), 10)
        self.executor = SingleThreadedExecutor(context=context)
        if self.node is not None:
            self.executor.add_node(self.node)
        self.executor.add_node(self.tester)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        if connect:
            self.connect()

    def connect(self, timeout: float = 10.0) -> None:
        """Wait until the tester and the node see each other's topics."""
        assert self.wait_for(lambda: (
            self.pub_thermal.get_subscription_count() and self.pub_rgb.get_subscription_count()
            and self.node.fusion.pub_fused is not None
            and self.node.fusion.pub_fused.get_subscription_count()), timeout), \
            'graph did not connect'

    def stamp(self):
        return self.tester.get_clock().now().to_msg()

    def publish(self, thermal_msg, rgb_msg, stamp):
        for msg, pub in ((thermal_msg, self.pub_thermal), (rgb_msg, self.pub_rgb)):
            if msg is not None:
                msg.header.stamp = stamp
                pub.publish(msg)

    def stream(self, thermal_msg, rgb_msg, seconds: float, *, rate: float = RATE_HZ,
               age: float = 0.0) -> int:
        """Publish the pair at ``rate`` for ``seconds``, stamped ``age`` seconds in the past;
        returns how many pairs were sent."""
        n, t0 = int(seconds * rate), time.perf_counter()
        for i in range(n):
            stamp = self.tester.get_clock().now() - rclpy.duration.Duration(seconds=age)
            self.publish(thermal_msg, rgb_msg, stamp.to_msg())
            time.sleep(max(0.0, t0 + (i + 1) / rate - time.perf_counter()))
        return n

    def wait_for(self, cond, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if cond():
                return True
            time.sleep(0.05)
        return bool(cond())

    def settled(self, timeout: float = 3.0) -> bool:
        """Wait until every synchronized pair has met its fate."""
        return self.wait_for(lambda: self.node.counters()['pairs']
                             == accounted(self.node.counters()), timeout)

    def call(self, srv_type, service: str, request, timeout: float = 60.0):
        """Call one of the node's services (``service`` relative to the node, e.g.
        ``set_parameters``) from the tester node; the response. One client per service, kept:
        ``wait_for_service`` sees the server's request reader, not that the server has matched
        the client's response reader too, so a fresh client's first request can be answered
        into the void; the first call of each client waits a moment for that."""
        key = (srv_type, service)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self.tester.create_client(
                srv_type, f'/{self.name}/{service}')
            assert client.wait_for_service(timeout_sec=10.0), f'no service {service}'
            time.sleep(0.5)
        future = client.call_async(request)
        assert self.wait_for(future.done, timeout), f'{service}: no response'
        return future.result()

    def set_params(self, **values):
        """``ros2 param set`` through the node's SetParameters service: one result per
        value."""
        from rcl_interfaces.srv import SetParameters

        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return self.call(SetParameters, 'set_parameters', request).results

    def close(self):
        self.executor.shutdown(timeout_sec=5)
        self.thread.join(5)
        if self.node is not None:
            self.node.destroy_node()
        self.tester.destroy_node()


def pipeline_with(method, mask_provider=None) -> FusionPipeline:
    """A pipeline that fuses with ``method`` (an object with the method interface: ``name``,
    ``multiple``, ``uses_masks``, a call), for handing to the node: no registry involved."""
    pipe = FusionPipeline(PipelineConfig(method='mean'))
    pipe.method = method
    if method.uses_masks:
        from sgdfuse_ros.masks import build_provider

        pipe.mask_provider = mask_provider or build_provider('saliency')
    return pipe


def ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def accounted(c) -> int:
    """Pairs whose fate is known: published, dropped (any reason) or failed."""
    return c['published'] + sum(c['dropped'].values()) + sum(c['errors'].values())


def load_pairs(root: Path, names):
    pairs = []
    for name in names:
        ir = read_image(root / 'ir' / name, gray=True)
        vi = read_image(root / 'vi' / name, gray=False)
        pairs.append((name, ir, vi))
    return pairs


def image_msg(img, enc, frame_id):
    msg = convert.numpy_to_image(img, enc, use_cv_bridge=False)
    msg.header.frame_id = frame_id
    return msg


def raw(h, w, enc, step, data: bytes, frame_id='thermal_cam'):
    msg = Image(height=h, width=w, encoding=enc, step=step)
    msg.data = array.array('B', data)
    msg.header.frame_id = frame_id
    return msg
