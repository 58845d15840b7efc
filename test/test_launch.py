"""The launch file, run for real: ``launch/sgdfuse.launch.py`` through launch's own
``LaunchService`` (``test/launch_runner.py``, what ``ros2 launch`` does), in its own process,
with the package found as ``ros2 launch`` finds it (an ament prefix from ``sgdfuse
ament-prefix``). A tester node here publishes pairs on the remapped topics and watches what
comes out; each launch is stopped with SIGINT, as Ctrl-C stops ``ros2 launch``, and must leave
no process behind.

launch, launch_ros and composition_interfaces are not on PyPI: ``scripts/launch_env.sh``
builds them from ``../shared/ros-src`` (cached in ``.cache/launch-env/<venv>``, about a
minute the first time). Without those sources the tests skip, naming them.
"""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='the launch tests need rclpy (the ros extra)')

REPO = Path(__file__).resolve().parents[1]
ROS_SRC = Path(os.environ.get('SGDFUSE_ROS_SRC', REPO.parent / 'shared' / 'ros-src'))
#: One per venv (scripts/launch_env.sh builds a message package for this Python).
LAUNCH_ENV = Path(os.environ.get('SGDFUSE_LAUNCH_ENV',
                                 REPO / '.cache' / 'launch-env' / Path(sys.prefix).name))
VER = f'{sys.version_info[0]}.{sys.version_info[1]}'
TOPICS = {'thermal_topic': '/launch_test/thermal', 'rgb_topic': '/launch_test/rgb',
          'fused_topic': '/launch_test/fused'}

from ros_harness import new_context  # noqa: E402  (sets the ROS environment first)

import rclpy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from sgdfuse_ros.core.imaging import read_image  # noqa: E402
from sgdfuse_ros.core.paths import samples_dir  # noqa: E402
from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig  # noqa: E402
from sgdfuse_ros.params import NODE_NAME  # noqa: E402
from sgdfuse_ros.ros import convert  # noqa: E402
from sgdfuse_ros.ros.graph import qos_profile  # noqa: E402
from sgdfuse_ros.tools.ament_prefix import write_prefix  # noqa: E402

pytestmark = pytest.mark.ros


def _joined(*parts, old: str = '') -> str:
    return os.pathsep.join([*map(str, parts), *([old] if old else [])])


@pytest.fixture(scope='module')
def launch_base(tmp_path_factory) -> dict[str, str]:
    """The environment of a ``ros2 launch`` but the package: launch and launch_ros importable,
    composition_interfaces on the ament index (``scripts/launch_env.sh``)."""
    if not (ROS_SRC / 'launch-jazzy.tar.gz').is_file():
        pytest.skip(f'no ROS 2 launch sources at {ROS_SRC} (launch and launch_ros are not on '
                    'PyPI; set SGDFUSE_ROS_SRC)')
    proc = subprocess.run(['bash', str(REPO / 'scripts' / 'launch_env.sh'), sys.executable],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, 'SGDFUSE_LAUNCH_ENV': str(LAUNCH_ENV)})
    assert proc.returncode == 0, f'scripts/launch_env.sh failed:\n{proc.stderr[-3000:]}'
    prefix = LAUNCH_ENV / 'prefix'
    messages = prefix / 'lib' / f'python{VER}' / 'site-packages'
    return {
        **os.environ,
        'PYTHONPATH': _joined(LAUNCH_ENV / 'site', messages),
        'AMENT_PREFIX_PATH': _joined(prefix, sys.prefix),
        'LD_LIBRARY_PATH': _joined(prefix / 'lib', old=os.environ.get('LD_LIBRARY_PATH', '')),
        'ROS_HOME': str(tmp_path_factory.mktemp('ros_home')),
        'PYTHONUNBUFFERED': '1',
    }


def _with_package(base: dict[str, str], prefix: Path, python_path: Path) -> dict[str, str]:
    """``base`` with the package's ament prefix first and its Python package importable."""
    return {**base, 'PYTHONPATH': _joined(base['PYTHONPATH'], python_path),
            'AMENT_PREFIX_PATH': _joined(prefix, base['AMENT_PREFIX_PATH'])}


@pytest.fixture(scope='module')
def launch_env(launch_base, tmp_path_factory) -> dict[str, str]:
    """A pip install made findable by ``sgdfuse ament-prefix`` (this checkout's package)."""
    prefix = write_prefix(tmp_path_factory.mktemp('ament') / 'prefix')
    env = _with_package(launch_base, prefix, REPO)
    env['SGDFUSE_TEST_PREFIX'] = str(prefix)
    return env


@pytest.fixture(scope='module')
def colcon_env(launch_base, tmp_path_factory) -> dict[str, str]:
    """The package built and installed by ``colcon build``, as in a ROS workspace."""
    ws = tmp_path_factory.mktemp('colcon')
    proc = subprocess.run(
        [sys.executable, '-m', 'colcon', 'build', '--base-paths', str(REPO), '--build-base',
         str(ws / 'build'), '--install-base', str(ws / 'install')],
        cwd=ws, capture_output=True, text=True, timeout=600,
        env={**os.environ, 'PYTHONPATH': str(LAUNCH_ENV / 'colcon')})
    assert proc.returncode == 0, \
        f'colcon build failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}'
    prefix = ws / 'install' / 'sgdfuse_ros'
    env = _with_package(launch_base, prefix,
                        prefix / 'lib' / f'python{VER}' / 'site-packages')
    env['SGDFUSE_TEST_PREFIX'] = str(prefix)
    return env


def _session_pids(sid: int) -> list[int]:
    """Processes still alive in session ``sid`` (the launch and everything it started)."""
    pids = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / 'stat').read_text()
        except OSError:
            continue
        fields = stat.rsplit(')', 1)[1].split()
        if fields[0] != 'Z' and int(fields[3]) == sid:  # state, ppid, pgrp, session
            pids.append(int(entry.name))
    return pids


class Launch:
    """``ros2 launch sgdfuse_ros sgdfuse.launch.py ARGS`` in a session of its own."""

    def __init__(self, env: dict[str, str], log: Path, *args: str):
        self.log = log
        self._out = open(log, 'w')
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / 'test' / 'launch_runner.py'), 'sgdfuse_ros',
             'sgdfuse.launch.py', *args], env=env, stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors='replace')

    def stop(self, timeout: float = 40.0) -> int:
        """SIGINT to the launch (Ctrl-C); its exit status. Fails when a process it started
        outlives it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout)
        finally:
            left = self.wait_session_empty(5.0)
            self._out.close()
        assert not left, f'processes left running after the launch ended: {left}\n' \
                         f'{self.output()[-3000:]}'
        return code

    def wait_session_empty(self, timeout: float) -> list[int]:
        deadline = time.time() + timeout
        while (left := _session_pids(self.proc.pid)) and time.time() < deadline:
            time.sleep(0.1)
        for pid in left:  # never leak them into the rest of the suite
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left


class LaunchTester:
    """A node that publishes pairs on the launch's topics and records the fused frames."""

    def __init__(self, context):
        self.node = rclpy.create_node('launch_tester', context=context)
        qos = qos_profile('best_effort', 5)
        self.pub_ir = self.node.create_publisher(Image, TOPICS['thermal_topic'], qos)
        self.pub_rgb = self.node.create_publisher(Image, TOPICS['rgb_topic'], qos)
        self.fused: list[Image] = []
        self.node.create_subscription(Image, TOPICS['fused_topic'], self.fused.append, qos)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)

    def spin_until(self, cond, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if cond():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return bool(cond())

    def fuse_one(self, thermal: np.ndarray, visible: np.ndarray, timeout: float = 90.0):
        """Publish the pair (again every 0.5 s, a new stamp each time) until a fused frame
        comes back; that frame and the stamps sent."""
        sent: dict[int, object] = {}
        deadline = time.time() + timeout
        while time.time() < deadline and not self.fused:
            stamp = self.node.get_clock().now().to_msg()
            for img, enc, pub in ((thermal, 'mono8', self.pub_ir), (visible, 'rgb8',
                                                                    self.pub_rgb)):
                msg = convert.numpy_to_image(img, enc, use_cv_bridge=False)
                msg.header.stamp, msg.header.frame_id = stamp, 'rgb_camera'
                pub.publish(msg)
            sent[stamp.sec * 10**9 + stamp.nanosec] = stamp
            self.spin_until(lambda: self.fused, 0.5)
        return (self.fused[0] if self.fused else None), sent

    def close(self):
        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()


@pytest.fixture
def tester():
    ctx = new_context()
    t = LaunchTester(ctx)
    try:
        yield t
    finally:
        t.close()
        ctx.try_shutdown()


@pytest.fixture(scope='module')
def pair():
    name = 'FLIR_00211.jpg'
    thermal = read_image(samples_dir() / 'ir' / name, gray=True)
    visible = read_image(samples_dir() / 'vi' / name)
    return thermal[:120, :160].copy(), visible[:120, :160].copy()


def _params_file(tmp_path: Path) -> Path:
    """A parameter file that changes defaults the test can see: mono8 output, the mean."""
    path = tmp_path / 'params.yaml'
    path.write_text('/**:\n  ros__parameters:\n    method: mean\n    output_encoding: mono8\n'
                    '    max_latency: 0.0\n')
    return path


def _launch_args(tmp_path: Path, *extra: str) -> list[str]:
    return [f'params_file:={_params_file(tmp_path)}',
            *(f'{k}:={v}' for k, v in TOPICS.items()), *extra]


def _check_fused(tester: LaunchTester, launch: Launch, pair) -> None:
    """The node subscribes to the remapped inputs and fuses a pair with the YAML's settings
    (the mean, mono8), keeping the RGB frame's header."""
    assert tester.spin_until(lambda: tester.pub_ir.get_subscription_count()
                             and tester.pub_rgb.get_subscription_count(), 90.0), \
        f'nothing subscribed to the remapped inputs\n{launch.output()[-3000:]}'
    assert tester.spin_until(
        lambda: (NODE_NAME, '/') in tester.node.get_node_names_and_namespaces(), 10.0), \
        tester.node.get_node_names_and_namespaces()
    fused, sent = tester.fuse_one(*pair)
    assert fused is not None, f'no fused frame\n{launch.output()[-3000:]}'
    assert fused.encoding == 'mono8'
    assert fused.header.frame_id == 'rgb_camera'
    assert fused.header.stamp.sec * 10**9 + fused.header.stamp.nanosec in sent
    got = convert.image_to_numpy(fused, use_cv_bridge=False)
    want = FusionPipeline(PipelineConfig(method='mean', output='mono')).fuse(*pair).image
    assert got.shape == want.shape
    assert np.abs(got.astype(float) - want.astype(float)).mean() < 1.0


def _node_commands(launch: Launch) -> list[str]:
    """The command lines of the processes the launch runs."""
    out = []
    for pid in _session_pids(launch.proc.pid):
        try:
            out.append(Path(f'/proc/{pid}/cmdline').read_bytes().replace(b'\0', b' ').decode())
        except OSError:
            pass
    return out


@pytest.mark.parametrize('install', ['pip', 'colcon'])
def test_plain_node_from_the_launch_file(install, request, tester, pair, tmp_path):
    """The package found as ros2 launch finds it, from a pip install (``sgdfuse
    ament-prefix``) and from a colcon build: the node runs from that prefix's
    ``lib/sgdfuse_ros``."""
    env = request.getfixturevalue('launch_env' if install == 'pip' else 'colcon_env')
    launch = Launch(env, tmp_path / 'launch.log', *_launch_args(tmp_path))
    try:
        _check_fused(tester, launch, pair)
        executable = f'{env["SGDFUSE_TEST_PREFIX"]}/lib/sgdfuse_ros/sgdfuse_node'
        commands = _node_commands(launch)
        assert any(executable in c for c in commands), commands
    finally:
        code = launch.stop()
    out = launch.output()
    assert code == 0, out[-3000:]
    assert 'process has finished cleanly' in out, out[-3000:]


def _lifecycle_state(tester: LaunchTester, timeout: float, want: str) -> str:
    """Ask the managed node for its state until it is ``want`` or ``timeout`` passes; the
    last state it gave ('' when it never answered)."""
    from lifecycle_msgs.srv import GetState

    client = tester.node.create_client(GetState, f'/{NODE_NAME}/get_state')
    state = ''

    def reached() -> bool:
        nonlocal state
        if not client.service_is_ready():
            return False
        future = client.call_async(GetState.Request())
        tester.spin_until(future.done, 5.0)
        state = future.result().current_state.label if future.done() else state
        return state == want

    tester.spin_until(reached, timeout)
    tester.node.destroy_client(client)
    return state


def test_managed_node_from_the_launch_file_autostarts(launch_env, tester, pair, tmp_path):
    """managed:=true, autostart left at its default: the node configures and activates
    itself, says so, and fuses."""
    launch = Launch(launch_env, tmp_path / 'launch.log', *_launch_args(tmp_path, 'managed:=true'))
    try:
        state = _lifecycle_state(tester, 90.0, 'active')
        assert state == 'active', f'state {state!r}\n{launch.output()[-3000:]}'
        _check_fused(tester, launch, pair)
    finally:
        code = launch.stop()
    out = launch.output()
    assert code == 0, out[-3000:]
    assert 'process has finished cleanly' in out, out[-3000:]


def test_managed_node_without_autostart_waits_unconfigured(launch_env, tester, tmp_path):
    launch = Launch(launch_env, tmp_path / 'launch.log',
                    *_launch_args(tmp_path, 'managed:=true', 'autostart:=false'))
    try:
        assert _lifecycle_state(tester, 90.0, 'unconfigured') == 'unconfigured'
        time.sleep(2.0)  # nothing drives it: it stays there
        assert _lifecycle_state(tester, 10.0, 'unconfigured') == 'unconfigured'
        assert tester.pub_ir.get_subscription_count() == 0
    finally:
        assert launch.stop() == 0
    assert 'unconfigured: waiting' in launch.output()


def test_ctrl_c_in_a_terminal_stops_the_node_cleanly(launch_env, tester, tmp_path):
    """A terminal's Ctrl-C signals the whole foreground process group: ros2 launch and the
    node it started."""
    launch = Launch(launch_env, tmp_path / 'launch.log', *_launch_args(tmp_path))
    try:
        assert tester.spin_until(lambda: tester.pub_ir.get_subscription_count(), 90.0)
        os.killpg(launch.proc.pid, signal.SIGINT)
    finally:
        code = launch.stop()
    out = launch.output()
    assert code == 0 and 'process has finished cleanly' in out, out[-3000:]


def test_rviz_missing_fails_the_launch_without_orphans(launch_env, tmp_path):
    """rviz:=true where rviz2 is not installed: the launch fails at once, naming rviz2, and
    leaves no fusion node running."""
    launch = Launch(launch_env, tmp_path / 'launch.log', *_launch_args(tmp_path, 'rviz:=true'))
    try:
        code = launch.proc.wait(60.0)
    except subprocess.TimeoutExpired:
        code = None
    launch.stop()
    out = launch.output()
    assert code not in (None, 0), out[-3000:]
    assert 'rviz2' in out, out[-3000:]
    assert 'process started' not in out, out[-3000:]
