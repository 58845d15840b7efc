"""Benchmark of sgdfuse_node's own cost: real pairs in at a fixed rate, fused frames out.

    python -m sgdfuse_ros.tools.node_bench [--rate 15] [--duration 20] [--size 640x480]
                                         [--method auto] [--thermal mono16] [--json FILE]
                                         [--param publish_compressed:=true ...]
    python -m sgdfuse_ros.tools.node_bench --transport-check --size 1920x1080 --duration 3

Starts the node in this process (its own executor thread), plus a driver node in a second
executor thread that publishes thermal + RGB pairs built from real image pairs (the bundled
samples, or ``--data DIR`` with ``ir/`` and ``vi/``), resized to the given size, each pair
stamped with the time it is published. It records when each fused frame arrives.

Printed figures (after ``--warmup`` seconds, which are discarded):

* input rate (pairs published per second) and output rate (fused frames received per second),
  pairs the node dropped (per reason: stale, older than ``max_latency``...), errors;
* latency: RGB stamp to fused frame received, percentiles;
* model time: the fusion pipeline's own time for that frame (``FusionPipeline.fuse``);
* node cost: latency minus model time, i.e. what the node adds (DDS in and out, sync, queueing,
  conversion, message building). The target is at most 30 ms at 640x480.

``--transport-check`` measures something else: best-effort images of ``--size`` sent to a second
process, counting how many arrive, to check that the DDS profile lets large images through.

Environment: set ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a ``ROS_DOMAIN_ID`` of your
own (``. scripts/env.sh`` does both and selects the Fast DDS profile); the benchmark sets
LOCALHOST and a random domain itself when they are unset.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import random
import sys
import threading
import time

import numpy as np

from sgdfuse_ros.ros.graph import join_spinner, qos_profile, ros_env_defaults, spin
from .timing import cpu_name


def _percentiles(values) -> dict[str, float]:
    if not len(values):
        return {}
    v = np.asarray(values, dtype=np.float64)
    return {'p50': float(np.percentile(v, 50)), 'p90': float(np.percentile(v, 90)),
            'p95': float(np.percentile(v, 95)), 'p99': float(np.percentile(v, 99)),
            'max': float(v.max()), 'mean': float(v.mean())}



def _load_pairs(data: Path | None, size: tuple[int, int], limit: int = 8):
    from sgdfuse_ros.core.imaging import dataset_pairs, read_image, resize
    from sgdfuse_ros.core.paths import samples_dir

    root = data or samples_dir()
    pairs = dataset_pairs(root)[:limit]
    if not pairs:
        raise SystemExit(f'no image pairs under {root} (expected ir/ and vi/)')
    out = []
    for p in pairs:
        ir = resize(read_image(p.ir, gray=True), size)
        vi = resize(read_image(p.vis, gray=False), size)
        out.append((ir, vi))
    return out


def run_benchmark(*, rate: float = 15.0, duration: float = 20.0, warmup: float = 3.0,
                  size: tuple[int, int] = (640, 480), method: str = 'auto',
                  thermal: str = 'mono16', data: Path | None = None,
                  params: dict | None = None) -> dict:
    """Run the node benchmark; returns the figures (see the module docstring)."""
    ros_env_defaults()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from sgdfuse_ros.ros import convert
    from sgdfuse_ros.ros.node import SgdfuseNode

    pairs = _load_pairs(data, size)
    msgs = []
    for ir, vi in pairs:
        th = ir.astype(np.uint16) * 40 + 7000 if thermal == 'mono16' else ir
        t_msg = convert.numpy_to_image(th, thermal, use_cv_bridge=False)
        t_msg.header.frame_id = 'thermal_cam'
        r_msg = convert.numpy_to_image(vi, 'rgb8', use_cv_bridge=False)
        r_msg.header.frame_id = 'rgb_cam'
        msgs.append((t_msg, r_msg))

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    overrides = {'method': method, **(params or {})}
    node = SgdfuseNode('sgdfuse_bench', context=ctx, parameter_overrides=[
        Parameter(k, value=v) for k, v in overrides.items()])
    driver = rclpy.create_node('sgdfuse_bench_driver', context=ctx)
    qos = qos_profile(node.settings.qos_reliability, node.settings.qos_depth)
    pub_t = driver.create_publisher(Image, node.settings.thermal_topic, qos)
    pub_r = driver.create_publisher(Image, node.settings.rgb_topic, qos)
    received: dict[int, float] = {}
    model_ms: dict[int, float] = {}
    timings: dict[int, dict] = {}
    clock = driver.get_clock()

    def on_fused(msg):
        received[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = \
            clock.now().nanoseconds

    def on_frame(stamp_ns, t):
        model_ms[stamp_ns] = t.get('total', 0.0)
        timings[stamp_ns] = t

    driver.create_subscription(Image, node.settings.fused_topic, on_fused, qos)
    node.add_frame_listener(on_frame)
    executors = []
    for n in (node, driver):  # one thread each: receipt is not delayed by the node's callbacks
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(n)
        thread = threading.Thread(target=spin, args=(ex,), daemon=True)
        thread.start()
        executors.append((ex, thread))
    try:
        deadline = time.time() + 15
        while time.time() < deadline and not (pub_t.get_subscription_count()
                                              and pub_r.get_subscription_count()
                                              and node.fusion.pub_fused.get_subscription_count()):
            time.sleep(0.05)
        load_before = os.getloadavg()
        sent: list[int] = []
        t0 = time.perf_counter()
        period = 1.0 / rate
        i = 0
        while time.perf_counter() - t0 < warmup + duration:
            t_msg, r_msg = msgs[i % len(msgs)]
            stamp = clock.now()
            t_msg.header.stamp = r_msg.header.stamp = stamp.to_msg()
            pub_t.publish(t_msg)
            pub_r.publish(r_msg)
            if time.perf_counter() - t0 >= warmup:
                sent.append(stamp.nanoseconds)
            i += 1
            time.sleep(max(0.0, t0 + i * period - time.perf_counter()))
        t_sent = time.perf_counter() - t0 - warmup
        time.sleep(1.0)
        load_after = os.getloadavg()
        counters = node.counters()
    finally:
        for ex, thread in executors:
            join_spinner(ex, thread, 5.0)  # no rclpy thread left at exit (it aborts)
        node.destroy_node()
        driver.destroy_node()
        rclpy.try_shutdown(context=ctx)

    first = sent[0] if sent else 0
    got = {s: r for s, r in received.items() if s >= first}
    lat = [(r - s) / 1e6 for s, r in got.items()]
    model = [model_ms[s] for s in got if s in model_ms]
    own = [(got[s] - s) / 1e6 - model_ms[s] for s in got if s in model_ms]
    stage_keys = ('queue_wait', 'convert', 'thermal', 'color', 'fuse', 'merge', 'publish')
    stages = {k: float(np.mean([timings[s][k] for s in got if s in timings and k in timings[s]]))
              for k in stage_keys if any(k in timings.get(s, {}) for s in got)}
    return {
        'method': method,
        'resolved_method': _resolved(method),
        'size': f'{size[0]}x{size[1]}', 'thermal': thermal,
        'rate_requested_hz': rate, 'duration_s': duration, 'warmup_s': warmup,
        'input_rate_hz': len(sent) / t_sent if t_sent > 0 else 0.0,
        'output_rate_hz': len(got) / t_sent if t_sent > 0 else 0.0,
        'pairs_sent': len(sent), 'fused_received': len(got),
        'dropped': counters['dropped'], 'errors': counters['errors'],
        'latency_ms': _percentiles(lat), 'model_ms': _percentiles(model),
        'node_cost_ms': _percentiles(own), 'stage_mean_ms': stages,
        'load_before': load_before, 'load_after': load_after,
        'cpu': cpu_name(), 'cpus': os.cpu_count(),
        'python': platform.python_version(),
    }


def _resolved(method: str) -> str:
    from sgdfuse_ros.fusion.methods import resolve_method_name

    try:
        return resolve_method_name(method)
    except ValueError:
        return method


def format_report(r: dict) -> str:
    def row(name, p):
        if not p:
            return f'| {name} | - | - | - | - | - |'
        return (f'| {name} | {p["p50"]:.1f} | {p["p90"]:.1f} | {p["p95"]:.1f} | {p["p99"]:.1f} '
                f'| {p["max"]:.1f} |')

    lines = [
        f'method {r["resolved_method"]} ({r["method"]}), {r["size"]}, thermal {r["thermal"]}, '
        f'{r["duration_s"]:.0f} s after {r["warmup_s"]:.0f} s warm-up',
        f'machine: {r["cpus"]} CPUs ({r["cpu"]}), load average before '
        f'{r["load_before"][0]:.2f}, after {r["load_after"][0]:.2f}',
        f'input {r["input_rate_hz"]:.2f} Hz ({r["pairs_sent"]} pairs), output '
        f'{r["output_rate_hz"]:.2f} Hz ({r["fused_received"]} fused), dropped '
        + (', '.join(f'{k} {v}' for k, v in r['dropped'].items() if v) or 'none')
        + f', errors {r["errors"] or 0}',
        '',
        '| ms | p50 | p90 | p95 | p99 | max |',
        '|---|---|---|---|---|---|',
        row('latency (RGB stamp -> fused received)', r['latency_ms']),
        row('model time (FusionPipeline.fuse)', r['model_ms']),
        row('node cost (latency - model time)', r['node_cost_ms']),
        '',
        'mean per stage (ms): ' + ', '.join(f'{k} {v:.1f}' for k, v in
                                             r['stage_mean_ms'].items()),
    ]
    return '\n'.join(lines)


def transport_check(*, size: tuple[int, int], rate: float, duration: float) -> dict:
    """Publish best-effort rgb8 images of ``size`` from this process to a receiver process and
    count what arrives: shows whether the DDS set-up (``FASTRTPS_DEFAULT_PROFILES_FILE``) lets
    large images through. The receiver inherits this process's environment."""
    import array
    import subprocess

    ros_env_defaults()
    import rclpy
    from sensor_msgs.msg import Image

    topic = f'/sgdfuse_transport_check_{random.randrange(1 << 20)}'
    receiver = subprocess.Popen(
        [sys.executable, '-m', 'sgdfuse_ros.tools.node_bench', '--receive', topic,
         '--duration', str(duration + 5.0)], stdout=subprocess.PIPE, text=True)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node('sgdfuse_transport_check', context=ctx)
    try:
        pub = node.create_publisher(Image, topic, qos_profile('best_effort', 5))
        deadline = time.time() + 30
        while time.time() < deadline and not pub.get_subscription_count():
            time.sleep(0.05)
        time.sleep(0.5)
        w, h = size
        msg = Image(height=h, width=w, encoding='rgb8', step=w * 3)
        msg.data = array.array('B', bytes(w * h * 3))
        sent, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < duration:
            pub.publish(msg)
            sent += 1
            time.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    out, _ = receiver.communicate(timeout=duration + 30)
    got = int(out.strip().splitlines()[-1]) if out.strip() else 0
    return {'size': f'{w}x{h}', 'mb_per_image': w * h * 3 / 1e6, 'rate_hz': rate,
            'sent': sent, 'received': got,
            'profile': os.environ.get('FASTRTPS_DEFAULT_PROFILES_FILE') or '(Fast DDS default)'}


def _receive(topic: str, duration: float) -> int:
    ros_env_defaults()
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('sgdfuse_transport_receiver')
    count, last = [0], [0.0]

    def on_image(_msg):
        count[0] += 1
        last[0] = time.time()

    node.create_subscription(Image, topic, on_image, qos_profile('best_effort', 5))
    t0 = time.time()
    # until the duration ends, or the sender has been silent for 1.5 s after sending something
    while time.time() - t0 < duration and not (count[0] and time.time() - last[0] > 1.5):
        rclpy.spin_once(node, timeout_sec=0.1)
    print(count[0], flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='python -m sgdfuse_ros.tools.node_bench',
                                 description=__doc__.split('\n\n')[0])
    ap.add_argument('--rate', type=float, default=15.0, help='pairs per second (default 15)')
    ap.add_argument('--duration', type=float, default=20.0, help='measured seconds')
    ap.add_argument('--warmup', type=float, default=3.0, help='discarded seconds first')
    ap.add_argument('--size', default='640x480', help='WxH of both streams (default 640x480)')
    ap.add_argument('--method', default='auto', help='fusion method (default auto)')
    ap.add_argument('--thermal', choices=('mono16', 'mono8'), default='mono16')
    ap.add_argument('--data', type=Path, help='folder with ir/ and vi/ (default: samples)')
    ap.add_argument('--json', type=Path, help='also write the figures to this JSON file')
    ap.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                    help='a node parameter (repeatable; the value read as YAML), e.g. '
                    'publish_compressed:=true')
    ap.add_argument('--transport-check', action='store_true',
                    help='instead: send best-effort rgb8 images of --size to another process '
                         'and count what arrives (checks the DDS profile)')
    ap.add_argument('--receive', metavar='TOPIC', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.receive:
        return _receive(a.receive, a.duration)
    try:
        w, h = (int(x) for x in a.size.lower().split('x'))
    except ValueError:
        ap.error(f'--size must be WxH, got {a.size!r}')
    if a.rate <= 0 or a.duration <= 0 or a.warmup < 0 or w <= 0 or h <= 0:
        ap.error('rate, duration and size must be positive')
    if a.transport_check:
        r = transport_check(size=(w, h), rate=a.rate, duration=a.duration)
        print(f'{r["size"]} rgb8 ({r["mb_per_image"]:.1f} MB) at {r["rate_hz"]:g} Hz, best '
              f'effort, to another process: sent {r["sent"]}, received {r["received"]} '
              f'(profile: {r["profile"]})')
        if a.json:
            a.json.write_text(json.dumps(r, indent=2))
        return 0
    import yaml

    params = {}
    for p in a.param:
        name, sep, value = p.partition(':=')
        if not sep or not name:
            ap.error(f'--param must be NAME:=VALUE, got {p!r}')
        params[name] = yaml.safe_load(value)
    r = run_benchmark(rate=a.rate, duration=a.duration, warmup=a.warmup, size=(w, h),
                      method=a.method, thermal=a.thermal, data=a.data, params=params)
    print(format_report(r))
    if a.json:
        a.json.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
