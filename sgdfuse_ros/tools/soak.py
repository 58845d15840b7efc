"""Soak benchmark of ``sgdfuse_node`` in its own process: latency, gaps, drops, memory over time.

    python -m sgdfuse_ros.tools.soak --duration 240 --rate 15 --size 640x480 [--busy 2]
        [--warmup 20] [--param max_latency:=0.2 ...] [--trace] [--burst 3840x2160:20]
        [--node-nice -5] [--json FILE]

Starts the node as a separate process (``python -m sgdfuse_ros.ros.node``, the console entry's
code path, parameters given as ``--param NAME:=VALUE``), publishes thermal (mono16) + RGB (rgb8)
pairs made from the bundled sample pairs at ``--rate``, each stamped when it is published, and
records when each fused frame arrives. After ``--warmup`` seconds (not counted) it measures for
``--duration`` seconds and prints tables:

* stamp-to-receipt latency percentiles of the fused frames, frames over 0.5 s and 1 s old;
* gaps between consecutive fused frames (largest, over 0.5 s, over 1 s);
* pairs published and fused, and the node's drops per reason and errors (its /diagnostics, and
  error lines in its log);
* the node's resident memory (RSS) over time, sampled every ``--sample-every`` seconds (at most
  about 200 samples whatever the duration; the table shows a dozen), and its growth from the
  start of the measurement to its end;
* the machine's load average over the run (on a shared machine it qualifies every figure).

``--busy N`` starts N processes that burn one CPU each beside the node (at most 4 per core; each
stops on its own when this command ends or dies, and at the end of the run plus a minute at the
latest). ``--trace`` adds, per fused frame, the node's own timeline (the pair's age when the
synchronizer completed it, when the worker took it, when it was fused and after publishing)
and splits each frame's latency into those steps plus the delivery to this process: where the
time of the slowest frames goes. The node then runs through :func:`_traced_node` (the same
:func:`~sgdfuse_ros.ros.graph.run_node` as ``sgdfuse_node``, plus a frame listener).
``--burst WxH:SECONDS`` publishes frames of another size for that long in the middle of the
measurement and reports the node's memory before, at the peak and after (a node that grew
for a burst of large frames should come back). ``--node-nice N`` starts the node with its
niceness raised by N (negative needs root or CAP_SYS_NICE: the node's share of a contended
CPU).

Output stays bounded for long runs (``--duration 1800``): per-frame figures are kept in memory
as numbers and summarised; memory is sampled, not logged.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import cv2
import numpy as np

from sgdfuse_ros.core.imaging import parse_size
from sgdfuse_ros.core.interrupts import sigterm_as_interrupt
from .timing import bench_frames, cpu_name, load_average

#: Most memory samples whatever the duration.
MAX_SAMPLES = 200
#: Most --busy processes per CPU core.
BUSY_PER_CORE = 4
_BUSY_CODE = """
import os, sys, time
parent, deadline = os.getppid(), time.monotonic() + float(sys.argv[1])
while os.getppid() == parent and time.monotonic() < deadline:
    for _ in range(200000):
        pass
"""


def _die_with_parent() -> None:  # preexec_fn: SIGTERM this child when the soak dies
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the children check their parent anyway
        pass


def start_busy(n: int, seconds: float) -> list[subprocess.Popen]:
    """``n`` CPU-burning processes that end after ``seconds`` or when this process ends."""
    _check_busy(n)
    return [subprocess.Popen([sys.executable, '-c', _BUSY_CODE, str(seconds)],
                             preexec_fn=_die_with_parent) for _ in range(n)]


def _check_busy(n: int) -> None:
    limit = BUSY_PER_CORE * (os.cpu_count() or 1)
    if not 0 <= n <= limit:
        raise ValueError(f'--busy must be in [0, {limit}] ({BUSY_PER_CORE} per core), got {n}')


def stop_processes(procs, sig=signal.SIGTERM, timeout: float = 5.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MiB (None when it is gone)."""
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def percentiles(values) -> dict[str, float]:
    if not len(values):
        return {}
    v = np.asarray(values, np.float64)
    out = {f'p{q}': float(np.percentile(v, q)) for q in (50, 90, 99)}
    out.update(max=float(v.max()), mean=float(v.mean()))
    return out


def _param_args(params: list[str]) -> list[str]:
    out = []
    for p in params:
        if ':=' not in p:
            raise ValueError(f'--param must be NAME:=VALUE, got {p!r}')
        out += ['-p', p]
    return out


def _traced_node(argv: list[str]) -> int:
    """The node process of ``--trace``: ``sgdfuse_node`` plus a listener writing one line per
    fused frame (stamp and the node's ages in ms) to the file named first in ``argv``."""
    from sgdfuse_ros.ros.graph import run_node
    from sgdfuse_ros.ros.node import SgdfuseNode

    path, threads, ros_args = argv[0], int(argv[1]), argv[2:]
    out = open(path, 'w', buffering=1)
    keys = ('age_receipt', 'age_take', 'age_fused', 'age', 'total')

    def make():
        node = SgdfuseNode()
        node.add_frame_listener(lambda stamp, t: out.write(
            f'{stamp} ' + ' '.join(f'{t.get(k, float("nan")):.2f}' for k in keys) + '\n'))
        return node

    try:
        return run_node(make, ['sgdfuse_soak_node', *ros_args], name='sgdfuse_node',
                        threads=threads)
    finally:
        out.close()


class _Driver:
    """Publishes the pairs and records fused frames and the node's diagnostics."""

    def __init__(self, ctx, sizes: dict[str, tuple[int, int]], topics: dict[str, str],
                 node_name: str, thermal_size: tuple[int, int] | None = None):
        from diagnostic_msgs.msg import DiagnosticArray
        import rclpy
        from sensor_msgs.msg import Image

        from sgdfuse_ros.ros import convert
        from sgdfuse_ros.ros.graph import qos_profile

        self.node = rclpy.create_node(f'sgdfuse_soak_{random.randrange(1 << 20)}', context=ctx)
        qos = qos_profile('best_effort', 5)
        self.pub_t = self.node.create_publisher(Image, topics['thermal'], qos)
        self.pub_r = self.node.create_publisher(Image, topics['rgb'], qos)
        self.msgs: dict[str, list] = {}
        for key, size in sizes.items():
            frames = bench_frames(size)
            self.msgs[key] = []
            for mono16, vis, _ in frames[:2] if key == 'burst' else frames:
                if thermal_size is not None and key == 'base':  # a camera of its own size
                    mono16 = cv2.resize(mono16, thermal_size, interpolation=cv2.INTER_AREA)
                t_msg = convert.numpy_to_image(mono16, 'mono16', use_cv_bridge=False)
                r_msg = convert.numpy_to_image(vis, 'rgb8', use_cv_bridge=False)
                t_msg.header.frame_id, r_msg.header.frame_id = 'thermal_cam', 'rgb_cam'
                self.msgs[key].append((t_msg, r_msg))
        self.received: list[tuple[int, int]] = []  # (stamp ns, receipt ns)
        self.diag: dict[str, str] = {}
        #: (receipt ns, published, drops per reason) of each /diagnostics message
        self.history: list[tuple[int, int, dict[str, int]]] = []
        self.node.create_subscription(Image, topics['fused'], self._on_fused, qos)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)
        self._node_name = node_name

    def _on_fused(self, msg) -> None:
        now = time.time_ns()
        self.received.append((msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
                              now))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f'{self._node_name}:'):
                self.diag = {kv.key: kv.value for kv in status.values}
                self.history.append((time.time_ns(), int(self.diag.get('fused_published', 0)),
                                     {k.removeprefix('pairs_dropped_'): int(v)
                                      for k, v in self.diag.items()
                                      if k.startswith('pairs_dropped_')}))

    def connected(self) -> bool:
        return bool(self.pub_t.get_subscription_count() and self.pub_r.get_subscription_count()
                    and self.diag)

    def publish(self, i: int, key: str = 'base') -> int:
        msgs = self.msgs[key]
        t_msg, r_msg = msgs[i % len(msgs)]
        now = time.time_ns()
        stamp = t_msg.header.stamp
        stamp.sec, stamp.nanosec = divmod(now, 1_000_000_000)
        r_msg.header.stamp = stamp
        self.pub_t.publish(t_msg)
        self.pub_r.publish(r_msg)
        return now


def run_soak(*, duration: float, rate: float, size: tuple[int, int], busy: int = 0,
             warmup: float = 20.0, params: list[str] | None = None, trace: bool = False,
             executor_threads: int = 1, sample_every: float | None = None,
             burst: tuple[tuple[int, int], float] | None = None, node_nice: int = 0,
             thermal_size: tuple[int, int] | None = None, log=print) -> dict:
    """Run the soak (see the module docstring); returns the figures. ``thermal_size``: the
    thermal camera's own size (default ``size``), registered to the RGB frame by the scaling
    homography."""
    from sgdfuse_ros.ros.graph import join_spinner, ros_env_defaults, spin

    _check_busy(busy)
    ros_env_defaults()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    tag = random.randrange(1 << 20)
    node_name = f'sgdfuse_soak_{tag}'
    topics = {k: f'/soak_{tag}/{k}' for k in ('thermal', 'rgb', 'fused')}
    if thermal_size is not None:
        sx, sy = size[0] / thermal_size[0], size[1] / thermal_size[1]
        params = [*(params or []), f'homography:=[{sx!r}, 0.0, 0.0, 0.0, {sy!r}, 0.0, 0.0, '
                                   '0.0, 1.0]']
    ros_args = ['--ros-args', '-p', f'thermal_topic:={topics["thermal"]}',
                '-p', f'rgb_topic:={topics["rgb"]}', '-p', f'fused_topic:={topics["fused"]}',
                *_param_args(params or []), '-r', f'__node:={node_name}']
    workdir = Path(tempfile.mkdtemp(prefix='sgdfuse_soak_'))
    trace_path = workdir / 'trace.txt'
    cmd = ([sys.executable, '-m', 'sgdfuse_ros.tools.soak', '--node-trace', str(trace_path),
            str(executor_threads), *ros_args] if trace
           else [sys.executable, '-m', 'sgdfuse_ros.ros.node', *ros_args])
    burst_s = burst[1] if burst else 0.0
    b0 = warmup + duration / 2 if burst else float('inf')  # the burst's start and end
    b1 = b0 + burst_s
    total = warmup + duration + burst_s
    every = sample_every or max(5.0, total / MAX_SAMPLES)
    if burst:
        every = min(every, 2.0)
    err_path = workdir / 'node.log'

    def preexec():
        if node_nice:
            os.nice(node_nice)
        _die_with_parent()

    with open(err_path, 'w') as err_file:
        try:
            node = subprocess.Popen(cmd, stdout=err_file, stderr=subprocess.STDOUT,
                                    preexec_fn=preexec)
        except subprocess.SubprocessError as exc:
            raise RuntimeError(f'cannot start the node with nice {node_nice:+d} (a negative '
                               f'value needs root or CAP_SYS_NICE): {exc}') from exc
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    driver = _Driver(ctx, {'base': size, **({'burst': burst[0]} if burst else {})}, topics,
                     node_name, thermal_size)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(driver.node)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()
    busy_procs: list[subprocess.Popen] = []
    samples: list[tuple[float, float | None, float | None]] = []  # (t, rss MiB, load)
    sent: list[int] = []
    try:
        deadline = time.time() + 180  # imports, models, discovery
        while not driver.connected():
            if node.poll() is not None or time.time() > deadline:
                raise RuntimeError('the node did not come up:\n' + err_path.read_text()[-3000:])
            time.sleep(0.2)
        busy_procs = start_busy(busy, total + 60.0)
        log(f'node pid {node.pid} up; {busy} busy process(es); warm-up {warmup:g} s, then '
            f'{duration:g} s at {rate:g} Hz, {size[0]}x{size[1]}'
            + (f', {burst_s:g} s of {burst[0][0]}x{burst[0][1]} in the middle' if burst
               else ''))
        period, t0 = 1.0 / rate, time.perf_counter()
        next_sample, i, measuring = 0.0, 0, False
        while (elapsed := time.perf_counter() - t0) < total:
            stamp = driver.publish(i, 'burst' if b0 <= elapsed < b1 else 'base')
            if elapsed >= warmup:
                if not measuring:
                    measuring = True
                    first_stamp = stamp
                sent.append(stamp)
            if elapsed >= next_sample:
                samples.append((elapsed, rss_mb(node.pid), load_average()))
                next_sample += every
                if len(samples) % 12 == 0:
                    log(f'  {elapsed:6.0f} s: {len(driver.received)} fused, node RSS '
                        f'{samples[-1][1] or 0:.0f} MiB, load {samples[-1][2] or 0:.2f}')
            i += 1
            time.sleep(max(0.0, t0 + i * period - time.perf_counter()))
        time.sleep(2.0)  # the last frames and one more /diagnostics
        samples.append((time.perf_counter() - t0, rss_mb(node.pid), load_average()))
        diag = dict(driver.diag)
    finally:
        stop_processes(busy_procs)
        node_alive = node.poll() is None
        if node_alive:
            node.send_signal(signal.SIGINT)
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        join_spinner(executor, spinner, 5.0)  # no rclpy thread left at exit (it aborts)
        driver.node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    node_log = err_path.read_text()
    result = _summarise(driver.received, sent, first_stamp if sent else 0, samples, warmup,
                        diag, node_log, node.returncode, trace_path if trace else None)
    result['worst_gaps'] = _worst_gaps(driver.received, first_stamp if sent else 0,
                                       driver.history)
    if burst:
        result['burst'] = _burst_memory(samples, b0, b1, burst)
    result.update(duration_s=duration, warmup_s=warmup, rate_hz=rate, node_nice=node_nice,
                  size=f'{size[0]}x{size[1]}', busy=busy, params=list(params or []),
                  trace=trace, executor_threads=executor_threads if trace else 1,
                  cpu=cpu_name(), cpus=os.cpu_count(), python=platform.python_version(),
                  node_log=str(err_path))
    return result


def _summarise(received, sent, first_stamp, samples, warmup, diag, node_log, returncode,
               trace_path) -> dict:
    got = sorted((s, r) for s, r in received if s >= first_stamp)
    lat = np.array([(r - s) / 1e6 for s, r in got])
    arrivals = np.sort(np.array([r for _, r in got], np.int64))
    gaps = np.diff(arrivals) / 1e6 if len(arrivals) > 1 else np.array([])
    measured = [(t, m, ld) for t, m, ld in samples if t >= warmup]
    mem = [m for _, m, _ in measured if m is not None]
    tenth = max(1, len(mem) // 10)
    start_mb = float(np.mean(mem[:tenth])) if mem else None
    end_mb = float(np.mean(mem[-tenth:])) if mem else None
    loads = [ld for _, _, ld in samples if ld is not None]
    error_lines = [ln for ln in node_log.splitlines() if '[ERROR]' in ln or '[FATAL]' in ln
                   or 'Traceback' in ln]
    out = {
        'pairs_sent': len(sent), 'fused_received': len(got),
        'latency_ms': percentiles(lat),
        'over_500ms': int(np.sum(lat > 500)), 'over_1s': int(np.sum(lat > 1000)),
        'gap_ms': percentiles(gaps), 'gaps_over_500ms': int(np.sum(gaps > 500)),
        'gaps_over_1s': int(np.sum(gaps > 1000)),
        'dropped': {k.removeprefix('pairs_dropped_'): int(v) for k, v in diag.items()
                    if k.startswith('pairs_dropped_')},
        'sync_dropped': {k.removeprefix('sync_dropped_'): v for k, v in diag.items()
                         if k.startswith('sync_dropped_')},
        'errors_total': int(diag.get('errors_total', 0) or 0),
        'node_error_lines': len(error_lines), 'node_error_sample': error_lines[:5],
        'node_exit_code': returncode,
        'node_latency': {k: v for k, v in diag.items()
                         if k.startswith('latency_') and k.split('_', 1)[1].startswith(
                             ('age', 'total', 'queue'))},
        'memory_mb': {'samples': [(round(t, 1), m) for t, m, _ in measured],
                      'start': start_mb, 'end': end_mb, 'max': max(mem) if mem else None,
                      'growth_pct': (100.0 * (end_mb - start_mb) / start_mb
                                     if mem and start_mb else None)},
        'load': {'min': min(loads), 'mean': float(np.mean(loads)), 'max': max(loads)}
        if loads else {},
        'method': diag.get('method', '?'), 'backend': diag.get('backend', '?'),
        'working_size': diag.get('working_size', '?'),
        'degradation': diag.get('degradation', '?'),
    }
    if trace_path is not None and trace_path.is_file():
        out['timeline'] = _trace_breakdown(trace_path, dict(got))
    return out


def _burst_memory(samples, b0: float, b1: float, burst) -> dict:
    """Node RSS (MiB) before the burst (the 10 s before it), its peak (during it and 10 s
    after), and at the end (the last 10 s), and the end over the level before."""
    end = samples[-1][0]

    def mean(lo, hi):
        v = [m for t, m, _ in samples if lo <= t < hi and m is not None]
        return float(np.mean(v)) if v else None

    peak = [m for t, m, _ in samples if b0 <= t <= b1 + 10 and m is not None]
    before, after = mean(b0 - 10, b0), mean(end - 10, end + 1)
    return {'size': f'{burst[0][0]}x{burst[0][1]}', 'seconds': burst[1], 'before': before,
            'peak': max(peak) if peak else None, 'after': after,
            'after_over_before_pct': (100.0 * (after - before) / before
                                      if before and after else None)}


def _worst_gaps(received, first_stamp: int, history, count: int = 5) -> list[dict]:
    """The ``count`` longest gaps between fused frames, each with what the node did meanwhile
    (frames it published and pairs it dropped per reason, from its /diagnostics)."""
    arrivals = sorted(r for s, r in received if s >= first_stamp)
    if len(arrivals) < 2:
        return []
    gaps = sorted(zip(np.diff(arrivals), arrivals[:-1]), reverse=True)[:count]
    out = []
    for gap, start in gaps:
        end = start + gap
        before = [h for h in history if h[0] < start]
        after = [h for h in history if h[0] >= end]
        entry = {'gap_ms': float(gap) / 1e6, 'at_s': float(start - arrivals[0]) / 1e9}
        if before and after:  # the two /diagnostics messages around the gap
            a, b = before[-1], after[0]
            entry['window_ms'] = (b[0] - a[0]) / 1e6
            entry['published'] = b[1] - a[1]
            entry['dropped'] = {k: b[2].get(k, 0) - a[2].get(k, 0) for k in b[2]
                                if b[2].get(k, 0) - a[2].get(k, 0)}
        out.append(entry)
    return out


def _trace_breakdown(path: Path, receipts: dict[int, int]) -> dict:
    """Per-frame steps (ms) from the node's trace joined with the receipts: ``dds_in`` (stamp
    to the synchronizer completing the pair), ``wait`` (to the worker taking it), ``fuse``
    (conversion and fusion), ``publish`` and ``delivery`` (to this process); percentiles over
    all frames and the mean of each step over the slowest 1%."""
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 6 or int(parts[0]) not in receipts:
            continue
        stamp = int(parts[0])
        receipt, take, fused, published, total = (float(x) for x in parts[1:])
        latency = (receipts[stamp] - stamp) / 1e6
        rows.append((latency, receipt, take - receipt, fused - take, published - fused,
                     latency - published, total))
    if not rows:
        return {}
    a = np.array(rows)
    names = ('latency', 'dds_in', 'wait', 'fuse', 'publish', 'delivery', 'pipeline_total')
    slow = a[a[:, 0] >= np.percentile(a[:, 0], 99)]
    return {'frames': len(rows),
            'steps': {n: percentiles(a[:, i]) for i, n in enumerate(names)},
            'slowest_1pct_mean': {n: float(slow[:, i].mean()) for i, n in enumerate(names)}}



def format_report(r: dict) -> str:
    """The tables of a soak run (markdown)."""
    def row(name, p, unit=''):
        if not p:
            return f'| {name} | - | - | - | - | - |'
        return (f'| {name} | {p["p50"]:.0f}{unit} | {p["p90"]:.0f} | {p["p99"]:.0f} | '
                f'{p["max"]:.0f} | {p["mean"]:.0f} |')

    load, mem = r['load'], r['memory_mb']
    lines = [
        f'soak: {r["size"]} at {r["rate_hz"]:g} Hz, {r["duration_s"]:g} s after '
        f'{r["warmup_s"]:g} s warm-up, {r["busy"]} busy process(es); method {r["method"]} '
        f'({r["backend"]}); params {" ".join(r["params"]) or "(defaults)"}'
        + (f'; node nice {r["node_nice"]:+d}' if r['node_nice'] else ''),
        f'machine: {r["cpus"]} CPUs ({r["cpu"]}), Python {r["python"]}; load average (1 min) '
        + (f'min {load["min"]:.2f} / mean {load["mean"]:.2f} / max {load["max"]:.2f}'
           if load else 'n/a'),
        '',
        '| ms | p50 | p90 | p99 | max | mean |', '|---|---|---|---|---|---|',
        row('stamp -> fused frame received', r['latency_ms']),
        row('gap between fused frames', r['gap_ms']),
        '',
        f'pairs sent {r["pairs_sent"]}, fused received {r["fused_received"]}; frames older '
        f'than 500 ms: {r["over_500ms"]}, than 1 s: {r["over_1s"]}; gaps over 500 ms: '
        f'{r["gaps_over_500ms"]}, over 1 s: {r["gaps_over_1s"]}',
        'node drops: ' + (', '.join(f'{k} {v}' for k, v in r['dropped'].items()) or 'n/a')
        + f'; errors {r["errors_total"]} (log: {r["node_error_lines"]} error lines, exit code '
        f'{r["node_exit_code"]})',
        f'working size at the end: {r.get("working_size", "?")}, degradation '
        f'{r.get("degradation", "?")}',
        'node latency (its /diagnostics, last 300 frames): '
        + '; '.join(f'{k.removeprefix("latency_").removesuffix("_ms")} {v}'
                    for k, v in r['node_latency'].items()),
        '',
        f'node RSS (MiB): start {mem["start"] or 0:.0f}, end {mem["end"] or 0:.0f}, max '
        f'{mem["max"] or 0:.0f}, growth {mem["growth_pct"] or 0:+.1f} %',
    ]
    b = r.get('burst')
    if b:
        lines += ['', f'burst of {b["size"]} for {b["seconds"]:g} s: node RSS before '
                  f'{b["before"] or 0:.0f} MiB, peak {b["peak"] or 0:.0f}, after '
                  f'{b["after"] or 0:.0f} ({b["after_over_before_pct"] or 0:+.1f} % over '
                  'before)']
    samples = mem['samples']
    if samples:
        picks = sorted({int(round(k * (len(samples) - 1) / 11)) for k in range(12)})
        lines += ['', '| t (s) | ' + ' | '.join(f'{samples[k][0]:.0f}' for k in picks) + ' |',
                  '|---' * (len(picks) + 1) + '|',
                  '| RSS MiB | ' + ' | '.join(f'{samples[k][1] or 0:.0f}' for k in picks)
                  + ' |']
    if r.get('worst_gaps'):
        lines += ['', 'longest gaps between fused frames (what the node did meanwhile: its '
                  '/diagnostics just before and after each):']
        for g in r['worst_gaps']:
            lines.append(f'  {g["gap_ms"]:.0f} ms at {g["at_s"]:.0f} s: '
                         + (f'over {g["window_ms"]:.0f} ms around it {g["published"]} '
                            'published, dropped '
                            + (', '.join(f'{k} {v}' for k, v in g['dropped'].items()) or
                               'none') if 'published' in g else 'no diagnostics'))
    t = r.get('timeline')
    if t:
        lines += ['', f'where the time goes ({t["frames"]} traced frames, ms):', '',
                  '| step | p50 | p90 | p99 | max | mean | mean of the slowest 1% |',
                  '|---|---|---|---|---|---|---|']
        for name, p in t['steps'].items():
            lines.append(row(name, p)[:-1] + f'| {t["slowest_1pct_mean"][name]:.0f} |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['--node-trace']:
        return _traced_node(argv[1:])
    ap = argparse.ArgumentParser(prog='python -m sgdfuse_ros.tools.soak',
                                 description=__doc__.split('\n\n')[0])
    ap.add_argument('--duration', type=float, default=240.0, help='measured seconds')
    ap.add_argument('--rate', type=float, default=15.0, help='pairs per second (default 15)')
    ap.add_argument('--size', default='640x480', help='WxH of both streams (default 640x480)')
    ap.add_argument('--thermal-size', default=None,
                    help='WxH of the thermal camera (default --size; registered to the RGB '
                    'frame by the scaling homography, e.g. 640x512 beside 1920x1080)')
    ap.add_argument('--busy', type=int, default=0,
                    help='CPU-burning processes beside the node (default 0)')
    ap.add_argument('--warmup', type=float, default=20.0, help='seconds first, not measured')
    ap.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                    help='a node parameter (repeatable), e.g. max_latency:=0.2')
    ap.add_argument('--trace', action='store_true',
                    help="record the node's per-frame timeline and split the latency into "
                    'its steps')
    ap.add_argument('--executor-threads', type=int, default=1,
                    help="with --trace: the node's executor threads (default 1: "
                    'single-threaded, as sgdfuse_node; more: multi-threaded)')
    ap.add_argument('--sample-every', type=float,
                    help=f'seconds between memory samples (default: the run over '
                    f'{MAX_SAMPLES}, at least 5)')
    ap.add_argument('--burst', metavar='WxH:SECONDS',
                    help='in the middle of the run, publish frames of this size for this long '
                    "(the node's memory before, during and after is reported)")
    ap.add_argument('--node-nice', type=int, default=0,
                    help='niceness added to the node process (negative: more CPU under '
                    'contention; needs root or CAP_SYS_NICE)')
    ap.add_argument('--json', type=Path, help='also write the figures to this JSON file')
    a = ap.parse_args(argv)
    try:
        size = parse_size(a.size)
    except ValueError as exc:
        ap.error(str(exc))
    if a.duration <= 0 or a.rate <= 0 or a.warmup < 0:
        ap.error('duration and rate must be > 0, warm-up >= 0')
    burst = None
    if a.burst:
        try:
            text, seconds = a.burst.rsplit(':', 1)
            burst = (parse_size(text), float(seconds))
        except ValueError as exc:
            ap.error(f'--burst must be WxH:SECONDS, got {a.burst!r} ({exc})')
    try:
        with sigterm_as_interrupt():  # the node and busy processes are stopped either way
            r = run_soak(duration=a.duration, rate=a.rate, size=size, busy=a.busy,
                         thermal_size=parse_size(a.thermal_size) if a.thermal_size else None,
                         warmup=a.warmup, params=a.param, trace=a.trace,
                         executor_threads=a.executor_threads, sample_every=a.sample_every,
                         burst=burst, node_nice=a.node_nice,
                         log=lambda text: print(text, file=sys.stderr, flush=True))
    except (ValueError, RuntimeError) as exc:
        print(f'soak: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('soak: interrupted; the node and the busy processes are stopped', file=sys.stderr)
        return 130
    print(format_report(r))
    if a.json:
        a.json.write_text(json.dumps(r, indent=2))
    return 0 if r['node_exit_code'] == 0 and not r['node_error_lines'] else 1


if __name__ == '__main__':
    sys.exit(main())
