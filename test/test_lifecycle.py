"""sgdfuse_lifecycle_node, the managed node, driven through its lifecycle services
(``/<node>/change_state``, ``/<node>/get_state``) by a client node on a real rclpy graph on
loopback, with a network method (stage 1 on ONNX Runtime) so that configure really loads a model
and cleanup really frees it."""

import gc
import os
import random
import signal
import subprocess
import sys
import time
import weakref

import pytest

rclpy = pytest.importorskip('rclpy', reason='needs the ros extra (rclpy)')

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from ros_harness import (REPO, ROAD, Harness, image_msg, load_pairs,  # noqa: E402
                         new_context)

from sgdfuse_ros.params import ParameterError  # noqa: E402
from sgdfuse_ros.ros.lifecycle import SgdfuseLifecycleNode  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def context():
    ctx = new_context()
    yield ctx
    rclpy.try_shutdown(context=ctx)


def change(h: Harness, transition: int) -> bool:
    return h.call(ChangeState, 'change_state',
                  ChangeState.Request(transition=Transition(id=transition))).success


def state(h: Harness) -> str:
    return h.call(GetState, 'get_state', GetState.Request()).current_state.label


def test_transitions_through_the_lifecycle_services(context, ivif):
    """unconfigured -> configure (model loaded, no frames) -> activate (frames) -> deactivate
    (no frames, model kept) -> activate -> cleanup (model freed) -> configure -> shutdown
    (from active). Parameters read at configuration change only while unconfigured."""
    _, ir, vi = load_pairs(ivif / 'RoadScene', ROAD[:1])[0]
    thermal, rgb = image_msg(ir, 'mono8', 'thermal_cam'), image_msg(vi, 'rgb8', 'rgb_cam')
    h = Harness(context, {'method': 'stage1', 'max_latency': 0.0},
                node_class=SgdfuseLifecycleNode, connect=False)
    try:
        assert state(h) == 'unconfigured' and h.node.pipeline is None
        # Read-at-configuration parameters change while unconfigured, checked by the schema.
        bad = h.set_params(sync_slop=-1.0)[0]
        assert not bad.successful and 'sync_slop must be > 0 s' in bad.reason
        assert h.set_params(sync_slop=0.04)[0].successful

        assert change(h, Transition.TRANSITION_CONFIGURE)
        assert state(h) == 'inactive'
        assert h.node.settings.sync_slop == 0.04
        pipeline = weakref.ref(h.node.pipeline)
        assert h.node.backend_report['stage1'].startswith(('onnxruntime', 'torch', 'tensorrt'))
        fixed = h.set_params(sync_slop=0.1)[0]
        assert not fixed.successful
        assert fixed.reason == 'sync_slop: read-only: cleanup, set it and configure again'
        assert h.set_params(max_latency=1.5)[0].successful  # run-time ones: in any state

        h.stream(thermal, rgb, 1.0)  # inactive: nobody listens, nothing is fused
        time.sleep(0.3)
        assert not h.fused and h.node.counters()['pairs'] == 0

        assert change(h, Transition.TRANSITION_ACTIVATE)
        assert state(h) == 'active'
        h.connect()
        h.stream(thermal, rgb, 1.5)
        assert h.wait_for(lambda: len(h.fused) >= 5, 5.0), h.node.counters()
        assert h.node.counters()['errors'] == {}

        assert change(h, Transition.TRANSITION_DEACTIVATE)
        assert state(h) == 'inactive' and not h.node.fusion.worker.is_alive()
        time.sleep(0.3)
        h.fused.clear()
        h.stream(thermal, rgb, 1.0)
        time.sleep(0.3)
        assert not h.fused, 'fused frames while inactive'
        assert pipeline() is h.node.pipeline  # models kept while inactive

        assert change(h, Transition.TRANSITION_ACTIVATE)
        h.connect()
        h.stream(thermal, rgb, 1.0)
        assert h.wait_for(lambda: len(h.fused) >= 3, 5.0), h.node.counters()

        assert change(h, Transition.TRANSITION_DEACTIVATE)
        assert change(h, Transition.TRANSITION_CLEANUP)
        assert state(h) == 'unconfigured'
        assert h.node.pipeline is None and h.node.fusion.stream is None
        assert h.node.fusion.pub_fused is None
        gc.collect()
        assert pipeline() is None, 'the pipeline (and its model) outlived cleanup'

        assert h.set_params(sync_slop=0.06)[0].successful
        assert change(h, Transition.TRANSITION_CONFIGURE)
        assert h.node.settings.sync_slop == 0.06
        assert change(h, Transition.TRANSITION_ACTIVATE)
        assert change(h, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert state(h) == 'finalized' and h.node.pipeline is None
        assert not h.node.fusion.worker.is_alive()
    finally:
        h.close()


def test_a_failed_configuration_stays_unconfigured_and_can_be_fixed(context):
    """A method that cannot be built fails configure with the reason logged; the node stays
    unconfigured, takes the corrected parameter and configures."""
    h = Harness(context, {'method': 'no_such_method'}, node_class=SgdfuseLifecycleNode,
                connect=False)
    try:
        assert not change(h, Transition.TRANSITION_CONFIGURE)
        assert state(h) == 'unconfigured' and h.node.pipeline is None
        assert h.set_params(method='mean')[0].successful
        assert change(h, Transition.TRANSITION_CONFIGURE)
        assert state(h) == 'inactive' and h.node.pipeline.method_name == 'mean'
        assert change(h, Transition.TRANSITION_INACTIVE_SHUTDOWN)
        assert state(h) == 'finalized'
    finally:
        h.close()
    with pytest.raises(ParameterError, match='qos_depth: expected an integer'):
        SgdfuseLifecycleNode('sgdfuse_lc_bad', context=context, parameter_overrides=[
            rclpy.parameter.Parameter('qos_depth', value='deep')])


def test_transitions_by_id_the_state_does_not_offer_are_refused(context):
    """Lifecycle managers send transition ids. An id the current state does not offer (or no
    transition at all) is refused with success=false; the node keeps answering, stays in its
    state, and then takes the valid transitions."""
    h = Harness(context, {'method': 'mean'}, node_class=SgdfuseLifecycleNode, connect=False)
    T = Transition
    try:
        for bad in (T.TRANSITION_ACTIVATE, T.TRANSITION_CLEANUP, T.TRANSITION_DEACTIVATE,
                    99, 0, 42):
            assert not change(h, bad), bad
            assert state(h) == 'unconfigured', bad
        assert change(h, T.TRANSITION_CONFIGURE)
        for bad in (T.TRANSITION_CONFIGURE, T.TRANSITION_ACTIVE_SHUTDOWN, 99):
            assert not change(h, bad), bad
            assert state(h) == 'inactive', bad
        assert change(h, T.TRANSITION_ACTIVATE)
        for bad in (T.TRANSITION_CLEANUP, T.TRANSITION_ACTIVATE, T.TRANSITION_CONFIGURE):
            assert not change(h, bad), bad
            assert state(h) == 'active', bad
        assert change(h, T.TRANSITION_ACTIVE_SHUTDOWN)
        for bad in (T.TRANSITION_CONFIGURE, T.TRANSITION_UNCONFIGURED_SHUTDOWN):
            assert not change(h, bad), bad
            assert state(h) == 'finalized', bad
    finally:
        h.close()


def test_lifecycle_process_shuts_down_from_active_on_sigterm(context, ivif):
    """The console entry ``sgdfuse_lifecycle_node`` as a process: configured and activated
    through its services, then SIGTERM: the shutdown transition runs, exit code 0, no error."""
    _, ir, vi = load_pairs(ivif / 'RoadScene', ROAD[1:2])[0]
    tag = random.randrange(1 << 30)
    name = f'sgdfuse_lc_{tag}'
    topics = {k: f'/lc_{tag}/{k}' for k in ('thermal', 'rgb', 'fused')}
    proc = subprocess.Popen(
        [sys.executable, '-m', 'sgdfuse_ros.ros.lifecycle', '--ros-args',
         '-p', f'thermal_topic:={topics["thermal"]}', '-p', f'rgb_topic:={topics["rgb"]}',
         '-p', f'fused_topic:={topics["fused"]}', '-p', 'method:=mean',
         '-r', f'__node:={name}'],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    h = None
    try:
        h = Harness(context, {'thermal_topic': topics['thermal'], 'rgb_topic': topics['rgb'],
                              'fused_topic': topics['fused']}, node_class=None, name=name,
                    connect=False)
        assert not change(h, Transition.TRANSITION_ACTIVATE)  # by id, not offered: refused
        assert change(h, Transition.TRANSITION_CONFIGURE)
        assert change(h, Transition.TRANSITION_ACTIVATE)
        assert state(h) == 'active'
        thermal, rgb = image_msg(ir, 'mono8', 'thermal_cam'), image_msg(vi, 'rgb8', 'rgb_cam')
        assert h.wait_for(lambda: h.pub_rgb.get_subscription_count() >= 1, 10.0)
        h.stream(thermal, rgb, 1.0)
        assert h.wait_for(lambda: len(h.fused) >= 3, 5.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if h is not None:
            h.close()
    assert proc.returncode == 0, err
    assert '[ERROR]' not in err and 'Traceback' not in err, err
    assert 'stopping on SIGTERM' in err and 'shut down: models freed' in err, err
    assert "transition 3 refused in state 'unconfigured'" in err, err
