"""Start-up and memory of ``sgdfuse_node`` as a process, per install (venv), side by side.

    python -m sgdfuse_ros.tools.startup_bench --venv .cache/venv-runtime --venv .venv \\
        [--runs 2] [--size 640x480] [--rate 15] [--steady 20] [--json FILE]

For each run and each venv (alternating, so that a change in the machine's load hits both):

1. this process publishes thermal (mono16) + RGB (rgb8) pairs built from the bundled sample
   pairs, resized to ``--size``, at ``--rate`` Hz, each stamped when published, and listens to
   the fused topic; it publishes before, during and after the node starts, as cameras would;
2. it starts ``<venv>/bin/sgdfuse_node`` with its default parameters (the default method and
   mask provider) and an empty engines folder, so only what the install ships can run;
3. **start-up** is the wall time from just before the process is started to the first fused
   frame received: interpreter, imports, models, DDS discovery and the first fusion;
4. then, for ``--steady`` seconds, it samples the node's resident memory (``VmRSS`` of
   ``/proc/<pid>/status``) every 0.25 s: **steady RSS** is the median of the second half of
   the samples, **peak** the process's high-water mark (``VmHWM``) at the end; the fused frames
   received per second over that window are printed too;
5. the node is stopped with SIGINT (SIGKILL after 10 s).

The size of each venv on disk (``du``-style, every file counted once) is printed beside it.
Needs rclpy in the interpreter that runs this script (the publisher); the node runs in each
venv's own interpreter. Sets localhost-only DDS and a random domain when unset.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from sgdfuse_ros.core.imaging import parse_size
from .timing import cpu_name


def venv_bytes(root: Path) -> int:
    """Bytes a folder takes on disk, each file counted once (hard links), as ``du`` counts."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


#: What resident memory is made of (``/proc/<pid>/status``): private memory, mapped files
#: (libraries), shared memory (the DDS shared-memory transport's segments, shared with the
#: processes at the other end).
RSS_PARTS = ('RssAnon', 'RssFile', 'RssShmem')


def _proc_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith(field + ':'):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def clean_env() -> dict[str, str]:
    """This process's environment without what the ROS wheels' start-up hook of *this* venv
    added: the hook re-executes the interpreter once with its venv's libraries on
    ``LD_LIBRARY_PATH`` and a guard variable, which a child in another venv would inherit (and
    then load this venv's libraries and skip its own start-up)."""
    env = dict(os.environ)
    if env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None) is not None:
        mine = Path(sys.prefix).resolve()
        parts = [p for p in env.get('LD_LIBRARY_PATH', '').split(os.pathsep)
                 if p and not Path(p).resolve().is_relative_to(mine)]
        if parts:
            env['LD_LIBRARY_PATH'] = os.pathsep.join(parts)
        else:
            env.pop('LD_LIBRARY_PATH', None)
    return env


def _has_torch(venv: Path) -> bool:
    code = 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'
    return subprocess.run([str(venv / 'bin' / 'python'), '-c', code],
                          env=clean_env()).returncode == 0


class Feeder:
    """Publishes pairs at a fixed rate and records when fused frames arrive (own thread)."""

    def __init__(self, size: tuple[int, int], rate: float):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from sgdfuse_ros import params
        from sgdfuse_ros.core.imaging import dataset_pairs, read_image, resize
        from sgdfuse_ros.core.paths import samples_dir
        from sgdfuse_ros.ros import convert
        from sgdfuse_ros.ros.graph import qos_profile, spin

        node = params.validate_settings({})  # the node's defaults: topics and QoS
        self.msgs = []
        for pair in dataset_pairs(samples_dir())[:8]:
            ir = resize(read_image(pair.ir, gray=True), size)
            vi = resize(read_image(pair.vis), size)
            t_msg = convert.numpy_to_image(ir.astype(np.uint16) * 40 + 7000, 'mono16',
                                           use_cv_bridge=False)
            r_msg = convert.numpy_to_image(vi, 'rgb8', use_cv_bridge=False)
            t_msg.header.frame_id, r_msg.header.frame_id = 'thermal_cam', 'rgb_cam'
            self.msgs.append((t_msg, r_msg))
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node('sgdfuse_startup_feeder', context=self.ctx)
        qos = qos_profile(node.qos_reliability, node.qos_depth)
        self.pub_t = self.node.create_publisher(Image, node.thermal_topic, qos)
        self.pub_r = self.node.create_publisher(Image, node.rgb_topic, qos)
        self.received: list[float] = []
        self.node.create_subscription(Image, node.fused_topic,
                                      lambda _m: self.received.append(time.monotonic()), qos)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.rate = rate
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=spin, args=(self.executor,), daemon=True),
                         threading.Thread(target=self._publish, daemon=True)]
        for t in self._threads:
            t.start()

    def _publish(self) -> None:
        clock, period, i = self.node.get_clock(), 1.0 / self.rate, 0
        t0 = time.monotonic()
        while not self._stop.is_set():
            t_msg, r_msg = self.msgs[i % len(self.msgs)]
            t_msg.header.stamp = r_msg.header.stamp = clock.now().to_msg()
            self.pub_t.publish(t_msg)
            self.pub_r.publish(r_msg)
            i += 1
            self._stop.wait(max(0.0, t0 + i * period - time.monotonic()))

    def close(self) -> None:
        import rclpy

        from sgdfuse_ros.ros.graph import join_spinner

        self._stop.set()
        self._threads[1].join(5.0)
        join_spinner(self.executor, self._threads[0], 5.0)  # none left at exit (it aborts)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def measure_node(venv: Path, feeder: Feeder, *, steady: float, timeout: float = 120.0,
                 workdir: Path, env: dict[str, str] | None = None) -> dict:
    """Start the venv's ``sgdfuse_node`` (with ``env`` added to its environment), wait for its
    first fused frame, sample its memory for ``steady`` seconds, stop it; returns the figures
    (see the module docstring)."""
    exe = venv / 'bin' / 'sgdfuse_node'
    if not exe.is_file():
        raise FileNotFoundError(f'{exe} does not exist: is sgdfuse_ros installed in {venv}?')
    engines = Path(tempfile.mkdtemp(prefix='engines-', dir=workdir))
    env = {**clean_env(), 'SGDFUSE_ENGINES': str(engines), **(env or {})}
    log = workdir / f'{venv.name}-{time.time_ns()}.log'
    feeder.received.clear()
    with open(log, 'w') as out:
        t0 = time.monotonic()
        proc = subprocess.Popen([str(exe)], stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            while not feeder.received:
                if proc.poll() is not None or time.monotonic() - t0 > timeout:
                    raise RuntimeError(f'{exe}: no fused frame after {time.monotonic() - t0:.0f}'
                                       f' s (exit {proc.poll()}); log: {log}\n'
                                       + log.read_text()[-2000:])
                time.sleep(0.005)
            first = feeder.received[0] - t0
            rss, parts, t_start = [], [], time.monotonic()
            n_start = len(feeder.received)
            while time.monotonic() - t_start < steady:
                kib = _proc_kib(proc.pid, 'VmRSS')
                if kib is not None:
                    rss.append(kib / 1024)
                    parts.append([(_proc_kib(proc.pid, f) or 0) / 1024 for f in RSS_PARTS])
                time.sleep(0.25)
            fps = (len(feeder.received) - n_start) / (time.monotonic() - t_start)
            peak = (_proc_kib(proc.pid, 'VmHWM') or 0) / 1024
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    half = rss[len(rss) // 2:] or rss
    split = np.median(np.asarray(parts[len(parts) // 2:] or parts), axis=0) if parts else []
    return {'startup_s': round(first, 3),
            'steady_rss_mb': round(statistics.median(half), 1) if half else None,
            **{f'steady_{f[3:].lower()}_mb': round(float(v), 1) for f, v in zip(RSS_PARTS, split)},
            'peak_rss_mb': round(peak, 1), 'fused_fps': round(fps, 2),
            'exported': sorted(p.name for p in engines.iterdir())}


def machine() -> dict:
    return {'cpu': cpu_name(), 'cpus': os.cpu_count(), 'python': platform.python_version(),
            'load_average': [round(x, 2) for x in os.getloadavg()]}


def run(venvs: list[Path], *, runs: int, size: tuple[int, int], rate: float,
        steady: float) -> dict:
    from sgdfuse_ros.ros.graph import ros_env_defaults

    ros_env_defaults()
    installs = {str(v): {'torch': _has_torch(v), 'venv_mb': round(venv_bytes(v) / 2**20),
                         'runs': []} for v in venvs}
    before = machine()
    feeder = Feeder(size, rate)
    try:
        with tempfile.TemporaryDirectory(prefix='startup-bench-') as tmp:
            for i in range(runs):
                for v in venvs:
                    res = measure_node(v, feeder, steady=steady, workdir=Path(tmp))
                    installs[str(v)]['runs'].append(res)
                    print(f'run {i + 1} {v}: {res}', file=sys.stderr)
    finally:
        feeder.close()
    return {'size': f'{size[0]}x{size[1]}', 'rate_hz': rate, 'steady_s': steady,
            'machine': before, 'load_after': [round(x, 2) for x in os.getloadavg()],
            'installs': installs}


def format_table(res: dict) -> str:
    lines = [f"sgdfuse_node start-up and memory at {res['size']}, pairs at {res['rate_hz']} Hz "
             f"({res['machine']['cpus']} CPUs, {res['machine']['cpu']}; load average "
             f"{res['machine']['load_average'][0]} before, {res['load_after'][0]} after)",
             f"{'install':<34} {'torch':>5} {'venv MB':>8} {'run':>3} {'start-up s':>10} "
             f"{'steady RSS MB':>13} {'peak MB':>8} {'fused fps':>9}"]
    for venv, inst in res['installs'].items():
        for i, r in enumerate(inst['runs']):
            lines.append(f"{venv:<34} {'yes' if inst['torch'] else 'no':>5} {inst['venv_mb']:>8} "
                         f"{i + 1:>3} {r['startup_s']:>10.2f} {r['steady_rss_mb']:>13.1f} "
                         f"{r['peak_rss_mb']:>8.1f} {r['fused_fps']:>9.2f}")
    return '\n'.join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='python -m sgdfuse_ros.tools.startup_bench',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--venv', type=Path, action='append', required=True,
                   help='a venv with sgdfuse_ros installed (repeat: side by side)')
    p.add_argument('--runs', type=int, default=2, help='runs per venv (default 2)')
    p.add_argument('--size', default='640x480', help='frame size WxH (640x480)')
    p.add_argument('--rate', type=float, default=15.0, help='pairs per second (15)')
    p.add_argument('--steady', type=float, default=20.0,
                   help='seconds of memory samples after the first fused frame (20)')
    p.add_argument('--json', type=Path, help='also write the figures here')
    args = p.parse_args(argv)
    try:
        size = parse_size(args.size)
    except ValueError as exc:
        p.error(str(exc))
    if args.runs < 1 or args.rate <= 0 or args.steady <= 0:
        p.error('--runs, --rate and --steady must be positive')
    missing = [str(v) for v in args.venv if not (v / 'bin' / 'python').exists()]
    if missing:
        p.error(f'not a venv: {", ".join(missing)}')
    res = run([v.absolute() for v in args.venv], runs=args.runs, size=size, rate=args.rate,
              steady=args.steady)
    print(format_table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
