"""``sgdfuse demo``: the whole product in one command, on this machine, in about a minute.

1. Make a sample bag from the bundled pairs: RGB 640x480 ``rgb8`` and a thermal camera of its
   own resolution (320x256 ``mono16`` radiometric counts) with jittered stamps, plus the
   thermal -> RGB homography (:func:`sgdfuse_ros.ros.sample_bag.make_sample_bag`).
2. Start ``sgdfuse_node`` as a separate process with a parameter file (topics, method,
   homography, masks published) and the Fast DDS profile of ``config/fastdds_shm.xml``. ROS
   traffic stays on this machine (:func:`sgdfuse_ros.ros.graph.ros_env_defaults`: localhost
   discovery, a random ``ROS_DOMAIN_ID`` unless one is set, as ``scripts/env.sh`` does).
3. Play the bag into it in real time (:class:`sgdfuse_ros.ros.live.BagPlayer`) and record the
   fused topic and the mask topics (:class:`sgdfuse_ros.ros.live.BagRecorder`), and the node's
   ``/diagnostics``.
4. Print throughput, latency (RGB frame published -> fused frame received) and the metric table
   of the fused frames; write a contact sheet (thermal, RGB, masks, fused) as a PNG.

Everything it starts is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import os
from pathlib import Path
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np

from sgdfuse_ros.params import DEFAULTS, NODE_NAME, node_params_yaml

#: What the demo writes into its output folder (removed first when they exist).
SAMPLE_BAG = 'sample_bag'
FUSED_BAG = 'fused_bag'
NODE_PARAMS = 'node_params.yaml'
NODE_LOG = 'node.log'
CONTACT_SHEET = 'contact_sheet.png'
FUSED_TOPIC = DEFAULTS['fused_topic']
MASK_TOPICS = (f'/{NODE_NAME}/ir_mask', f'/{NODE_NAME}/rgb_mask')


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the live demo (the parser of ``sgdfuse demo`` declares --out, --offline)."""
    p.add_argument('--method', default='auto', help="the node's fusion method (default auto)")
    p.add_argument('--rate', type=float, default=10.0, help='camera frame rate in Hz '
                   '(default 10)')
    p.add_argument('--hold', type=int, default=6,
                   help='frames per sample pair in the bag (default 6)')
    p.add_argument('--visible-size', default='640x480', metavar='WxH',
                   help='RGB frame size (default 640x480)')
    p.add_argument('--thermal-size', default='320x256', metavar='WxH',
                   help='thermal frame size (default 320x256, registered by a homography)')
    p.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap',
                   help='bag storage (default mcap)')
    p.add_argument('--startup-timeout', type=float, default=120.0, metavar='S',
                   help='seconds to wait for the node to come up (default 120)')


@dataclass
class DemoConfig:
    out: Path = Path('demo_out')
    method: str = 'auto'
    rate_hz: float = 10.0
    hold: int = 6
    visible_size: tuple[int, int] = (640, 480)
    thermal_size: tuple[int, int] | None = (320, 256)
    storage: str = 'mcap'
    startup_timeout: float = 120.0
    #: drop the node's wait for the last frames after this many idle seconds
    drain_idle_s: float = 3.0


def run_demo_command(args) -> int:
    from sgdfuse_ros.core.imaging import parse_size

    try:
        cfg = DemoConfig(out=args.out, method=args.method, rate_hz=args.rate, hold=args.hold,
                         visible_size=parse_size(args.visible_size),
                         thermal_size=parse_size(args.thermal_size), storage=args.storage,
                         startup_timeout=args.startup_timeout)
    except ValueError as exc:
        print(f'sgdfuse demo: error: {exc}', file=sys.stderr)
        return 2
    return run_demo(cfg)


def _say(text: str) -> None:
    print(text, flush=True)


def _node_command() -> list[str]:
    exe = Path(sys.executable).parent / 'sgdfuse_node'
    if exe.is_file():
        return [str(exe)]
    found = shutil.which('sgdfuse_node')
    return [found] if found else [sys.executable, '-m', 'sgdfuse_ros.ros.node']


def _cdr_stamp(raw: bytes) -> int:
    """``header.stamp`` (ns) of a serialized message whose first field is a std_msgs/Header."""
    little = raw[1] & 1  # CDR encapsulation: 0x0001 little endian, 0x0000 big endian
    sec, nsec = struct.unpack_from('<iI' if little else '>iI', raw, 4)
    return sec * 1_000_000_000 + nsec


def _write_params(path: Path, sample, method: str) -> None:
    values = {'thermal_topic': sample.thermal_topic, 'rgb_topic': sample.rgb_topic,
              'fused_topic': FUSED_TOPIC, 'method': method, 'publish_masks': True,
              'diagnostics_period': 0.5,
              # The sample scenes change every 6 frames; the default mask provider (saliency,
              # about 20 ms) refreshes at 5 Hz here, so the contact sheet shows each scene's
              # own masks.
              'mask_rate': 5.0}
    if sample.homography is not None:
        values['homography'] = sample.homography_list()
    path.write_text(node_params_yaml(values, comments=[
        'sgdfuse_node parameters of the demo (written by `sgdfuse demo`); the others take',
        'the defaults of config/sgdfuse.yaml.']))


class _NodeProcess:
    """``sgdfuse_node`` in its own session, output to a log file; stopped with SIGINT, then
    SIGTERM, then SIGKILL."""

    def __init__(self, params: Path, log: Path):
        self.log_path = log
        self._log = log.open('w')
        cmd = _node_command() + ['--ros-args', '--params-file', str(params),
                                 '-r', f'__node:={NODE_NAME}']
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return '\n'.join(self.log_path.read_text(errors='replace').splitlines()[-lines:])
        except OSError:
            return ''

    def stop(self) -> int | None:
        for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=wait)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                continue  # a second Ctrl-C escalates to the next signal
            except ProcessLookupError:
                break
        self._log.close()
        return self.proc.poll()


@dataclass
class _Live:
    """What the demo saw on the graph (filled from callbacks)."""

    rgb_published: dict[int, int]
    fused_received: dict[int, int]
    masks_received: int = 0
    diagnostics: dict[str, str] | None = None


def run_demo(cfg: DemoConfig) -> int:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        print('sgdfuse demo: error: the live demo needs rclpy (pip install "sgdfuse_ros[ros]"); '
              '`sgdfuse demo --offline` runs without ROS', file=sys.stderr)
        return 2
    from sgdfuse_ros.ros.bag_io import BagError
    from sgdfuse_ros.ros.graph import ros_env_defaults
    from sgdfuse_ros.ros.sample_bag import make_sample_bag

    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    for name in (SAMPLE_BAG, FUSED_BAG):
        if (out / name).is_dir() and (out / name / 'metadata.yaml').is_file():
            shutil.rmtree(out / name)
    for name in (SAMPLE_BAG + '.params.yaml', NODE_PARAMS, NODE_LOG, CONTACT_SHEET):
        (out / name).unlink(missing_ok=True)
    t_start = time.monotonic()

    _say(f'[1/4] sample bag from the bundled pairs -> {out / SAMPLE_BAG}')
    try:
        sample = make_sample_bag(out / SAMPLE_BAG, rate_hz=cfg.rate_hz, hold=cfg.hold,
                                 visible_size=cfg.visible_size, thermal_size=cfg.thermal_size,
                                 storage=cfg.storage)
    except (BagError, ValueError) as exc:
        print(f'sgdfuse demo: error: {exc}', file=sys.stderr)
        return 2
    _say('      ' + sample.format().replace('\n', '\n      '))

    profile = ros_env_defaults()
    _write_params(out / NODE_PARAMS, sample, cfg.method)
    _say(f'[2/4] starting sgdfuse_node (ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]}, discovery '
         f'{os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"]}, DDS profile '
         f'{profile if profile else "default (config/fastdds_shm.xml not found)"})')
    live = _Live({}, {})
    code = 1
    # SIGTERM (a CI timeout, `kill`) cleans up like Ctrl-C: the node runs in its own session
    # and would otherwise outlive the demo. SIGINT is set too: a process started in the
    # background of a script inherits it ignored.
    old_handlers = {}
    if threading.current_thread() is threading.main_thread():
        old_handlers = {sig: signal.signal(sig, _raise_interrupt)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
    node_proc = None
    try:
        node_proc = _NodeProcess(out / NODE_PARAMS, out / NODE_LOG)
        code = _run_graph(cfg, sample, node_proc, live, out)
    except KeyboardInterrupt:
        print('sgdfuse demo: interrupted; stopping the node', file=sys.stderr)
        code = 130
    finally:
        rc = node_proc.stop() if node_proc is not None else None
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if code == 0 and rc not in (0, None):
            print(f'sgdfuse demo: the node exited with status {rc}; see {out / NODE_LOG}',
                  file=sys.stderr)
    if code != 0:
        return code

    _say('[4/4] results')
    return _report(cfg, sample, live, out, t_start)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _run_graph(cfg: DemoConfig, sample, node_proc: _NodeProcess, live: _Live, out: Path) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from diagnostic_msgs.msg import DiagnosticArray

    from sgdfuse_ros.ros.bag_io import IMAGE
    from sgdfuse_ros.ros.graph import join_spinner, spin
    from sgdfuse_ros.ros.live import BagPlayer, BagRecorder

    context = rclpy.Context()
    # rclpy's own signal handler would take Ctrl-C / SIGTERM from the demo's handlers (and
    # whether it is installed depends on timing); the demo stops its graph itself.
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('sgdfuse_demo', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    recorder = None
    stop = threading.Event()
    try:
        def on_diag(msg) -> None:
            for status in msg.status:
                if status.name.startswith(f'{NODE_NAME}:'):
                    live.diagnostics = {kv.key: kv.value for kv in status.values}

        node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)

        def on_message(topic: str, raw: bytes, _now: int) -> None:
            if topic == FUSED_TOPIC:
                live.fused_received.setdefault(_cdr_stamp(raw), time.time_ns())
            else:
                live.masks_received += 1

        recorder = BagRecorder(node, out / FUSED_BAG, [FUSED_TOPIC, *MASK_TOPICS],
                                    storage=cfg.storage,
                                    types={t: IMAGE for t in (FUSED_TOPIC, *MASK_TOPICS)},
                                    on_message=on_message)

        def on_publish(topic: str, _log: int, raw: bytes, wall_ns: int) -> None:
            if topic == sample.rgb_topic:
                live.rgb_published[_cdr_stamp(raw)] = wall_ns

        player = BagPlayer(node, sample.path, on_publish=on_publish)
        spinner.start()

        t0 = time.monotonic()
        while True:
            if not node_proc.alive():
                print(f'sgdfuse demo: error: the node stopped while starting (status '
                      f'{node_proc.proc.returncode}); its log {node_proc.log_path}:\n'
                      + node_proc.tail(), file=sys.stderr)
                return 1
            if (player.wait_for_subscribers(timeout=0.2)
                    and recorder.publisher_count(FUSED_TOPIC) > 0):
                break
            if time.monotonic() - t0 > cfg.startup_timeout:
                print(f'sgdfuse demo: error: the node did not come up within '
                      f'{cfg.startup_timeout:.0f} s; its log {node_proc.log_path}:\n'
                      + node_proc.tail(), file=sys.stderr)
                return 1
        time.sleep(0.5)  # let discovery settle in both directions
        _say(f'      node ready after {time.monotonic() - t0:.1f} s')

        _say(f'[3/4] playing {sample.frames} thermal + RGB frame pairs at {sample.rate_hz:g} Hz '
             f'and recording {FUSED_TOPIC} and the masks -> {out / FUSED_BAG}')
        stats = player.run(stop)
        if stats.interrupted:  # Ctrl-C while playing (the player stops cleanly)
            raise KeyboardInterrupt
        _say(f'      {stats.format().splitlines()[0]}')
        # Drain: the node may still be fusing the last pairs.
        last_count, last_change = -1, time.monotonic()
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            n = len(live.fused_received)
            if n >= sample.frames:
                break
            if n != last_count:
                last_count, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > cfg.drain_idle_s:
                break
            time.sleep(0.1)
        time.sleep(0.6)  # one more diagnostics period with the final counters
        rec = recorder.close()
        recorder = None
        _say(f'      {rec.format().splitlines()[0]}')
        if not live.fused_received:
            print('sgdfuse demo: error: no fused frame came back from the node; its log '
                  f'{node_proc.log_path}:\n' + node_proc.tail(), file=sys.stderr)
            return 1
        return 0
    finally:
        stop.set()
        if recorder is not None:
            try:
                recorder.close()
            except Exception:  # noqa: BLE001
                pass
        join_spinner(executor, spinner if spinner.ident else None, 5.0)  # none left at exit
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _report(cfg: DemoConfig, sample, live: _Live, out: Path, t_start: float) -> int:
    diag = live.diagnostics or {}
    method = diag.get('method', cfg.method)
    n_in = sample.frames
    n_out = len(live.fused_received)
    recv = sorted(live.fused_received.values())
    _say(f'\nNode: method {method} (backend {diag.get("backend", "?")}), sync '
         f'{diag.get("sync_backend", "?")}, conversion {diag.get("conversion", "?")}')
    _say(f'Frames: {n_in} pairs played, {diag.get("pairs_synced", "?")} synchronized by the '
         f'node, {n_out} fused frames received ({diag.get("pairs_dropped_stale", "?")} pairs '
         'dropped as stale while the model was busy)')
    errors = diag.get('errors_total', '0')
    if errors != '0':
        _say(f'Node errors: {errors} (last: {diag.get("last_error", "")})')
    if n_out >= 2:
        span = (recv[-1] - recv[0]) / 1e9
        rate = (n_out - 1) / span if span > 0 else float('nan')
        _say(f'Throughput: {rate:.1f} fused frames/s (input {sample.rate_hz:g} pairs/s)')
    lat = [(t - live.rgb_published[s]) / 1e6 for s, t in live.fused_received.items()
           if s in live.rgb_published]
    if lat:
        _say(f'Latency, RGB frame published -> fused frame received: p50 {_pct(lat, 50):.1f} ms, '
             f'p95 {_pct(lat, 95):.1f} ms, max {max(lat):.1f} ms ({len(lat)} frames)')
    for key, label in (('latency_total_ms', 'model time (FusionPipeline.fuse)'),
                       ('latency_node_ms', 'node time (convert + fuse + publish)'),
                       ('latency_queue_wait_ms', 'wait in the drop-oldest slot')):
        if key in diag:
            _say(f'  {label}: {diag[key]} ms')

    loaded = _load_frames(sample, out, _pick_frames(sample, live))
    table = _metric_table(sample, loaded, method)
    if table:
        _say(f'\nMetrics of the fused frames (the last one of each scene, {len(loaded)} scenes; '
             'means, higher is better; offline rows: other methods on the same frames):')
        _say(table)
    sheet = _contact_sheet(sample, loaded, out, method)
    _say(f'\nContact sheet: {sheet}')
    _say(f'Sample bag: {sample.path}   fused bag: {out / FUSED_BAG}   node log: {out / NODE_LOG}')
    _say(f'Demo finished in {time.monotonic() - t_start:.0f} s.')
    return 0 if n_out > 0 else 1


def _pick_frames(sample, live: _Live) -> list[tuple[int, int, int]]:
    """The last fused frame of each scene: ``(scene, RGB stamp, thermal stamp)``."""
    chosen: dict[int, tuple[int, int, int]] = {}
    for scene, rgb_stamp, th_stamp in sample.schedule:
        if rgb_stamp in live.fused_received:
            chosen[scene] = (scene, rgb_stamp, th_stamp)
    return [chosen[k] for k in sorted(chosen)]


def _load_frames(sample, out: Path, frames) -> list[dict]:
    """Thermal, RGB, masks and fused images of the chosen frames (from the two bags)."""
    from sgdfuse_ros.ros import convert
    from sgdfuse_ros.ros.bag_io import read_messages, stamp_ns

    want = {rgb: {'scene': scene, 'thermal_stamp': th} for scene, rgb, th in frames}
    by_thermal = {v['thermal_stamp']: k for k, v in want.items()}
    for topic, _, msg in read_messages(sample.path):
        s = stamp_ns(msg)
        if topic == sample.rgb_topic and s in want:
            want[s]['rgb'] = convert.visible_from_msg(msg, use_cv_bridge=False)
        elif topic == sample.thermal_topic and s in by_thermal:
            want[by_thermal[s]]['thermal'] = convert.thermal_from_msg(msg, use_cv_bridge=False)
    for topic, _, msg in read_messages(out / FUSED_BAG):
        s = stamp_ns(msg)
        if s in want:
            key = 'fused' if topic == FUSED_TOPIC else topic.rsplit('/', 1)[-1]
            img = convert.image_to_numpy(msg, use_cv_bridge=False)
            want[s][key] = np.array(img)
    return [want[rgb] for _, rgb, _ in frames if 'fused' in want[rgb] and 'rgb' in want[rgb]
            and 'thermal' in want[rgb]]


def _registered_ir8(sample, thermal: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from sgdfuse_ros.core import imaging

    hom = sample.homography
    reg = imaging.warp_thermal(thermal, hom, size) if hom is not None else thermal
    return imaging.to_uint8(imaging.ThermalGain(smoothing=0.0)(reg))


def _metric_table(sample, loaded: list[dict], method: str) -> str | None:
    try:
        from sgdfuse_ros.core.metrics import compute_metrics, format_table
    except ImportError:
        _say('\n(metric table skipped: sgdfuse_ros.core.metrics is not available here)')
        return None
    from sgdfuse_ros.core import imaging
    from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig

    if not loaded:
        return None
    size = sample.visible_size
    rows: dict[str, list[dict[str, float]]] = {f'node: {method}': []}
    offline = [m for m in ('mean', 'max', 'laplacian') if m != method]
    pipes = {m: FusionPipeline(PipelineConfig(method=m, homography=sample.homography,
                                              thermal_smoothing=0.0)) for m in offline}
    for f in loaded:
        ir8 = _registered_ir8(sample, f['thermal'], size)
        vis8 = imaging.to_uint8(imaging.visible_luma(f['rgb']))
        fused = f['fused']
        fused8 = imaging.rgb_to_gray(fused) if fused.ndim == 3 else fused
        rows[f'node: {method}'].append(compute_metrics(imaging.to_uint8(fused8)
                                                       if fused8.dtype != np.uint8 else fused8,
                                                       ir8, vis8))
        for m, pipe in pipes.items():
            res = pipe.fuse(f['thermal'], f['rgb'])
            rows.setdefault(f'{m} (offline)', []).append(
                compute_metrics(imaging.to_uint8(res.luma), ir8, vis8))
    means = {name: {k: float(np.mean([r[k] for r in vals])) for k in vals[0]}
             for name, vals in rows.items() if vals}
    return format_table(means)


def _tile(img: np.ndarray, size: tuple[int, int], label: str) -> np.ndarray:
    import cv2

    from sgdfuse_ros.core import imaging

    if img.dtype != np.uint8:
        img = imaging.to_uint8(imaging.ThermalGain(smoothing=0.0)(img))
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    tile = np.ascontiguousarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
    cv2.rectangle(tile, (0, 0), (min(size[0], 9 * len(label) + 8), 20), (0, 0, 0), -1)
    cv2.putText(tile, label, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return tile


def _contact_sheet(sample, loaded: list[dict], out: Path, method: str) -> Path:
    """One row per scene: thermal (as sent), RGB, IR mask, RGB mask (when the node published
    masks), fused."""
    from sgdfuse_ros.core import imaging

    tw = 320
    th = round(tw * sample.visible_size[1] / sample.visible_size[0])
    has_masks = any('ir_mask' in f for f in loaded)
    tw_, th_ = sample.thermal_size
    rows = []
    for f in loaded:
        cells = [_tile(f['thermal'], (tw, th), f'thermal {tw_}x{th_} {sample.thermal_encoding}'),
                 _tile(f['rgb'], (tw, th), 'RGB')]
        if has_masks:
            blank = np.zeros((th, tw), np.uint8)
            cells += [_tile(f.get('ir_mask', blank), (tw, th), 'IR mask'),
                      _tile(f.get('rgb_mask', blank), (tw, th), 'RGB mask')]
        cells.append(_tile(f['fused'], (tw, th), f'fused ({method})'))
        rows.append(np.concatenate(cells, axis=1))
    sheet = np.concatenate(rows, axis=0) if rows else np.zeros((th, tw, 3), np.uint8)
    path = out / CONTACT_SHEET
    imaging.write_image(path, sheet)
    return path
