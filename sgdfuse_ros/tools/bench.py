"""``sgdfuse bench``: per-stage latency, end-to-end fps and peak memory of the fusion pipeline.

The per-frame path is what the node runs for each synchronized pair:

``thermal``  thermal gain (a mono16 frame made from the 8-bit sample: the percentile gain runs as
             on a radiometric camera) and registration
``color``    the visible luma split (BT.601 Y/Cb/Cr)
``stage1``   the stage-1 network on the chosen backend (padding included)
``masks``    the per-frame cost of the semantic masks: they are *reused* from the asynchronous
             mask worker, as in the node; the worker's own time per refresh is measured
             separately (``mask_worker_ms``)
``refiner``  the few-step refiner (``sgdfuse`` method only)
``merge``    the fused luma back into the visible colour

Frames cycle through the bundled sample pairs (``sgdfuse_ros/data/samples``) resized to
``--size``. Latencies are medians and 95th percentiles over ``--frames`` frames after a warm-up;
fps is frames over wall time of the timed loop. The machine's load average is recorded with the
numbers: on a shared machine, compare only runs taken under similar load. The bench owns its
process: it sets the runtimes' CPU threads (:func:`sgdfuse_ros.runtime.set_threads`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import sys
import tempfile
import time
from typing import Any

import numpy as np

from sgdfuse_ros.core.imaging import parse_size
from sgdfuse_ros.ros.outputs import jpeg_bytes
from sgdfuse_ros.runtime.backends import BACKEND_NAMES, default_backend
from sgdfuse_ros.runtime.threads import available_cores, set_threads
from .timing import bench_frames, load_average, peak_rss_mb, time_stats

#: Pipeline timing keys reported as stages.
STAGES = ('thermal', 'color', 'resize', 'stage1', 'masks', 'refiner', 'compose', 'merge',
          'total', 'jpeg')


def add_arguments(p) -> None:
    """Arguments of ``sgdfuse bench``."""
    p.add_argument('--size', default=None,
                   help='frame size WxH (default 640x480; 256x256 with --task medical)')
    p.add_argument('--work-size', default=None,
                   help='WxH the networks run at (default: the frame size); a smaller one '
                   "is blended at the frame's size (stage 'compose')")
    p.add_argument('--task', choices=('ivif', 'medical'), default='ivif',
                   help='ivif: the bundled thermal/camera samples (default); medical: the '
                   'bundled MRI pairs, with the medical weights when installed')
    p.add_argument('--backend', default='onnxruntime',
                   help=f'inference backend: {", ".join(BACKEND_NAMES)} or auto '
                   '(default onnxruntime, the CPU default)')
    p.add_argument('--frames', type=int, default=50, help='timed frames (default 50)')
    p.add_argument('--warmup', type=int, default=5, help='untimed frames first (default 5)')
    p.add_argument('--method', default='auto',
                   help='fusion method: auto (sgdfuse when installed, else stage1), stage1, '
                   'sgdfuse')
    p.add_argument('--weights', type=Path, help='stage-1 weights (default: the shipped ones)')
    p.add_argument('--refiner-weights', type=Path,
                   help='refiner (student) weights for sgdfuse (default: the shipped ones)')
    p.add_argument('--refiner-backend', default=None,
                   help="backend of the refiner (default: --backend; torch runs the method's "
                   'own PyTorch sampler)')
    p.add_argument('--random', action='store_true',
                   help='time an untrained stage-1 network when no weights are installed')
    p.add_argument('--threads', type=int, default=None,
                   help=f'inference threads (default: the usable cores, {available_cores()})')
    p.add_argument('--mask-worker', default='auto',
                   help='mask provider run in a MaskWorker thread while fusing, as in the node '
                   "(auto: the method's own when it uses masks; or a provider name, e.g. "
                   'lite_medsam, to time stage 1 beside it); none: masks computed beforehand '
                   'and reused, no concurrent worker (the per-frame path alone)')
    p.add_argument('--mask-provider', default='auto',
                   help="the pipeline's mask provider (auto, lite_medsam, saliency...)")
    p.add_argument('--mask-rate', type=float, default=2.0,
                   help='mask refreshes per second asked of the worker (default 2)')
    p.add_argument('--mask-checkpoint', type=Path, help='SAM / MobileSAM checkpoint')
    p.add_argument('--mask-frames', type=int, default=3,
                   help='provider calls timed alone before the run (default 3)')
    p.add_argument('--jpeg', type=int, metavar='QUALITY',
                   help="also time the JPEG of each fused frame, the node's compressed output "
                   '(publish_compressed with jpeg_quality QUALITY); not in the total')
    p.add_argument('--graph', default='float', choices=('float', 'int8', 'both'),
                   help='graphs of the networks on onnxruntime: float (default), int8 (their '
                   'INT8 quantization), or both side by side in alternating runs')
    p.add_argument('--rounds', type=int, default=2,
                   help='with --graph both: runs of each graph, alternating (default 2)')
    p.add_argument('--json', action='store_true', help='print one JSON object')
    p.add_argument('--variants', action='store_true',
                   help='instead: time stage 1 under graph/layout choices (NHWC, graph '
                   'optimization levels, the SpaceToDepth pass, IO binding, threads, INT8)')


def _resolve_method(name: str) -> str:
    from sgdfuse_ros.fusion.methods import available_methods

    if name != 'auto':
        return name
    return 'sgdfuse' if 'sgdfuse' in available_methods() else 'stage1'


def _method_options(method: str, *, backend: str, threads: int, tmp: str,
                    weights: str | os.PathLike | None, refiner_weights, random_weights: bool,
                    task: str = 'ivif') -> tuple[dict[str, Any], str | None]:
    """The method's options (weights: given, shipped, or untrained ones written to ``tmp``
    when ``random_weights``) and a note when untrained weights are timed. Task ``medical``
    takes the medical weights where they are installed (``fusion.medical.method_options``)."""
    from sgdfuse_ros.models import weights as shipped
    from .random_checkpoints import write_random_refiner, write_random_stage1

    stage1_path, student_path = shipped.STAGE1_WEIGHTS, shipped.STUDENT_WEIGHTS
    if task == 'medical' and shipped.MEDICAL_STAGE1_WEIGHTS.is_file():
        stage1_path = shipped.MEDICAL_STAGE1_WEIGHTS
    if task == 'medical' and shipped.MEDICAL_STUDENT_WEIGHTS.is_file():
        student_path = shipped.MEDICAL_STUDENT_WEIGHTS

    weights_path, note = (Path(weights) if weights else None), None
    if not weights and not stage1_path.is_file():
        if not random_weights:
            raise FileNotFoundError(f'no stage-1 weights at {stage1_path}; pass '
                                    '--weights, or --random to time an untrained network')
        weights_path = write_random_stage1(Path(tmp) / 'stage1_random.pt')
        note = 'untrained stage-1 weights'
    opts: dict[str, Any] = {'backend': backend, 'threads': threads}
    if weights_path is not None:  # else the method's shipped weights
        opts['stage1_weights' if method == 'sgdfuse' else 'weights'] = str(weights_path)
    if method == 'sgdfuse':
        if refiner_weights:
            opts['weights'] = str(refiner_weights)
        elif not student_path.is_file():
            if not random_weights:
                raise FileNotFoundError(f'no refiner weights at {student_path}; pass '
                                        '--refiner-weights, or --random')
            opts['weights'] = str(write_random_refiner(Path(tmp) / 'refiner_random.pt'))
            note = 'untrained weights' if note else 'untrained refiner weights'
    return opts, note


def _place_refiner(method, which: str, threads: int, engines_dir) -> str | None:
    """Run the method's refiner (a :class:`sgdfuse_ros.fusion.sgdfuse.RefinerRunner`) on
    backend ``which`` (the one-graph K-step sampler; ``torch``: its own PyTorch sampler),
    unless it already runs there; returns the line describing it (None: no refiner)."""
    r = getattr(method, 'refiner', None)
    if r is None:
        return None
    if which == 'torch':
        import torch

        r.use_backend('torch')
        return f'torch {torch.__version__} (CPU)'
    current = r.backend
    if current is None or which not in ('auto', current.name):
        opts = {'engines_dir': engines_dir} if engines_dir is not None else {}
        current = r.use_backend(which, steps=getattr(method, 'steps', None), threads=threads,
                                **opts)
    return current.describe()


def _masks_alone(provider, pairs, mask_frames: int, concurrent: bool
                 ) -> tuple[list[float], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The provider timed alone (the first call warms up), and the masks of the pairs it saw
    (of every pair when there is no concurrent worker, for the timed loop to reuse)."""
    from sgdfuse_ros.core import imaging

    mask_ms: list[float] = []
    cached: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    count = max(mask_frames + 1, 2 if concurrent else len(pairs) + 1)
    for i in range(count):
        thermal, vis, name = pairs[i % len(pairs)]
        if thermal.ndim == 3:  # task medical: a pseudo-colour PET/SPECT image, masked on luma
            thermal = imaging.rgb_to_gray(thermal)
        ir = imaging.ThermalGain(smoothing=0.0)(thermal)
        tm = time.perf_counter()
        cached[name] = provider(ir, vis).as_tuple()
        if i >= 1:
            mask_ms.append((time.perf_counter() - tm) * 1e3)
    return mask_ms, cached


def _start_worker(name: str, mask_options: dict, rate_hz: float):
    """A fresh provider in a :class:`~sgdfuse_ros.masks.MaskWorker` whose runtimes the worker
    prepares in its own thread (as in the node), so that their thread pools get the worker's
    priority: new sessions, not those of the provider timed alone."""
    from sgdfuse_ros.masks import MaskWorker, build_provider
    from sgdfuse_ros.runtime.backends import clear_session_cache

    clear_session_cache()
    return MaskWorker(build_provider(name, **mask_options), rate_hz=rate_hz).start()


@dataclass
class _Loop:
    """What the timed loop measured."""

    timings: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in STAGES})
    wall: float = 0.0
    cpu: float = 0.0
    worker_stats: dict[str, Any] | None = None


def _timed_loop(pipe, pairs, worker, cached, *, warmup: int, frames: int, method: str,
                jpeg_quality: int | None = None) -> _Loop:
    """Warm up, then fuse ``frames`` pairs, masks from the worker (or the cached ones)."""
    loop = _Loop()
    masks = None
    for i in range(warmup):
        thermal, vis, name = pairs[i % len(pairs)]
        res = pipe.fuse(thermal, vis, masks=masks or cached.get(name))
        if worker is not None:
            worker.submit(res.ir, vis)
    if worker is not None:
        worker.wait_for(1, timeout=300)
    refreshes0 = worker.refreshes if worker is not None else 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(frames):
        thermal, vis, name = pairs[i % len(pairs)]
        if worker is not None:
            snap = worker.latest()
            masks = snap.as_tuple() if snap is not None else None
        res = pipe.fuse(thermal, vis, masks=masks or cached.get(name))
        if worker is not None:
            worker.submit(res.ir, vis)
        t = res.timings
        for key in STAGES:
            if key in t:
                loop.timings[key].append(t[key])
        if 'masks' not in t and pipe.method.uses_masks:
            loop.timings['masks'].append(0.0)  # reused: their resize is in 'resize'
        if 'refiner' not in t and method == 'sgdfuse' and 'stage1' in t:
            loop.timings['refiner'].append(t['fuse'] - t['stage1'])
        if jpeg_quality:
            tj = time.perf_counter()
            jpeg_bytes(res.image, jpeg_quality)
            loop.timings['jpeg'].append((time.perf_counter() - tj) * 1e3)
    loop.wall, loop.cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if worker is not None:
        refreshes = worker.refreshes - refreshes0
        worker.stop()
        loop.worker_stats = worker.stats()
        loop.worker_stats['refresh_hz'] = round(refreshes / loop.wall, 2)
    return loop


def _stage1_detail(pipe, backend: str) -> str:
    """The line describing the backend that runs stage 1."""
    stage1 = getattr(pipe.method, 'stage1', pipe.method)  # sgdfuse holds a stage 1
    be = getattr(stage1, 'backend', None)
    if be is not None:
        return be.describe()
    if backend == 'torch':
        import torch

        return f'torch {torch.__version__} (CPU), {torch.get_num_threads()} threads'
    return backend


def run_bench(*, size: tuple[int, int], backend: str = 'onnxruntime', frames: int = 50,
              warmup: int = 5, method: str = 'auto', weights: str | os.PathLike | None = None,
              random_weights: bool = False, threads: int | None = None, mask_frames: int = 5,
              mask_worker: str | None = 'auto', mask_rate_hz: float = 2.0,
              mask_options: dict[str, Any] | None = None, mask_provider: str = 'auto',
              refiner_weights: str | os.PathLike | None = None,
              refiner_backend: str | None = None,
              engines_dir: str | os.PathLike | None = None,
              method_options: dict[str, Any] | None = None,
              work_size: tuple[int, int] | None = None,
              jpeg_quality: int | None = None, task: str = 'ivif') -> dict[str, Any]:
    """Run the benchmark; returns the result object (see the module docstring).

    ``mask_worker``: a mask provider run by a :class:`~sgdfuse_ros.masks.MaskWorker` thread at
    ``mask_rate_hz`` *while* the frames are fused, as in the node (``auto``: the pipeline's own
    provider when the method uses masks; a provider name: that provider even for ``stage1``,
    to measure the per-frame path beside it). ``none``: no concurrent worker; a method that
    uses masks gets them computed once per sample pair beforehand and reused (the per-frame path
    alone). The provider is also timed alone (``mask_frames`` refreshes, ``mask_alone_ms``).

    ``sgdfuse``: ``weights`` are stage 1's, ``refiner_weights`` the student's (``random_weights``
    makes untrained ones of both where none are installed). ``refiner_backend`` (default:
    ``backend``) runs the refiner's K-step sampler as one graph on that backend (``torch``: the
    method's own PyTorch sampler). Sets the process's runtime threads to ``threads``.
    ``jpeg_quality``: also time the JPEG of each fused frame (``jpeg_ms``), as the node's
    ``publish_compressed`` makes it. ``task``: ``ivif`` or ``medical`` (the bundled medical
    pairs through a medical pipeline, with the medical weights where none are given).
    """
    from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig

    if frames < 1:
        raise ValueError(f'frames must be >= 1, got {frames}')
    backend = default_backend() if backend == 'auto' else backend
    method = _resolve_method(method)
    threads = threads or available_cores()
    set_threads(threads)
    mask_options = dict(mask_options or {})
    worker = None
    with tempfile.TemporaryDirectory(prefix='sgdfuse-bench-') as tmp:
        try:
            opts, note = _method_options(method, backend=backend, threads=threads, tmp=tmp,
                                         weights=weights, refiner_weights=refiner_weights,
                                         random_weights=random_weights, task=task)
            if engines_dir is not None:
                opts['engines_dir'] = str(engines_dir)
            opts.update(method_options or {})
            t0 = time.perf_counter()
            pipe = FusionPipeline(PipelineConfig(method=method, method_options=opts,
                                                 mask_provider=mask_provider,
                                                 mask_options=mask_options,
                                                 work_size=work_size, task=task))
            refiner_detail = _place_refiner(pipe.method, refiner_backend or backend, threads,
                                            engines_dir)
            load_s = time.perf_counter() - t0
            pairs = bench_frames(size, task)

            concurrent = mask_worker not in (None, 'none')
            if mask_worker in ('auto', None, 'none'):
                provider = pipe.mask_provider
            else:
                from sgdfuse_ros.masks import build_provider
                provider = build_provider(mask_worker, **mask_options)
            worker_name = None if provider is None else getattr(provider, 'name',
                                                                 str(mask_worker))
            mask_ms, cached = [], {}
            if provider is not None:
                mask_ms, cached = _masks_alone(provider, pairs, mask_frames, concurrent)
                if concurrent:
                    name = mask_provider if mask_worker in ('auto', None) else mask_worker
                    worker = _start_worker(name, mask_options, mask_rate_hz)
            loop = _timed_loop(pipe, pairs, worker, cached, warmup=warmup, frames=frames,
                               method=method, jpeg_quality=jpeg_quality)
            detail = _stage1_detail(pipe, backend)
            report = pipe.method.backend_report()
        finally:
            if worker is not None:
                worker.stop()

    stats = {k: time_stats(v) for k, v in loop.timings.items()}

    def med(key):
        return None if stats.get(key) is None else round(stats[key]['median'], 2)

    alone = time_stats(mask_ms)
    ws = loop.worker_stats
    beside = None if ws is None else ws['median_compute_ms']
    w, h = size
    out = {
        'stage1_ms': med('stage1'), 'masks_ms': med('masks'), 'refiner_ms': med('refiner'),
        'total_ms': med('total'), 'fps': round(frames / loop.wall, 2),
        'peak_rss_mb': round(peak_rss_mb(), 1), 'backend': backend, 'size': f'{w}x{h}',
        'method': method, 'frames': frames, 'threads': threads, 'task': task,
        'work_size': 'x'.join(map(str, pipe.working_size(size))),
        'resize_ms': med('resize'), 'compose_ms': med('compose'),
        'thermal_ms': med('thermal'), 'color_ms': med('color'), 'merge_ms': med('merge'),
        'jpeg_ms': med('jpeg'),
        'p95_ms': {k: round(v['p95'], 2) for k, v in stats.items() if v},
        'mask_worker': worker_name,
        'mask_worker_ms': None if beside is None else round(beside, 1),
        'mask_refresh_hz': None if ws is None else ws['refresh_hz'],
        'mask_alone_ms': None if alone is None else round(alone['median'], 1),
        'load_s': round(load_s, 2), 'load_average': load_average(),
        'cores': available_cores(),
        'cpu_ms_per_frame': round(loop.cpu * 1e3 / frames, 2), 'backend_detail': detail,
        'refiner_detail': refiner_detail, 'backend_report': report,
    }
    if note:
        out['note'] = note
    return out


def format_table(res: dict[str, Any]) -> str:
    """A readable per-stage table of a :func:`run_bench` result."""
    rows = [('thermal preprocessing', 'thermal'), ('colour split', 'color'),
            ('resize to working size', 'resize'), ('stage 1', 'stage1'),
            ('masks (reused)', 'masks'), ('refiner', 'refiner'),
            ('blend at frame size', 'compose'), ('colour merge', 'merge'),
            ('per-frame total', 'total'), ('JPEG (compressed output)', 'jpeg')]
    p95 = res.get('p95_ms', {})
    task = '' if res.get('task', 'ivif') == 'ivif' else f' ({res["task"]})'
    lines = [f'sgdfuse bench: {res["method"]}{task} on {res["backend"]} at {res["size"]} '
             f'(networks at {res.get("work_size", res["size"])}), '
             f'{res["frames"]} frames, {res["threads"]} threads, load average '
             f'{res["load_average"]}',
             f'  {res["backend_detail"]}',
             f'  {"stage":24s} {"median ms":>10s} {"p95 ms":>9s}']
    for label, key in rows:
        m = res.get(f'{key}_ms')
        if m is None:
            continue
        lines.append(f'  {label:24s} {m:10.2f} {p95.get(key, float("nan")):9.2f}')
    if res.get('refiner_detail'):
        lines.append(f'  refiner: {res["refiner_detail"]}')
    for net, line in (res.get('backend_report') or {}).items():
        lines.append(f'  runs {net} on: {line}')
    lines.append(f'  end-to-end: {res["fps"]:.1f} fps; {res["cpu_ms_per_frame"]:.0f} ms of CPU '
                 f'time per frame (all threads); peak RSS {res["peak_rss_mb"]:.0f} MiB')
    if res.get('mask_worker_ms') is not None:
        lines.append(f'  mask worker ({res["mask_worker"]}, its own thread, concurrently): '
                     f'{res["mask_worker_ms"]:.0f} ms per refresh, '
                     f'{res["mask_refresh_hz"]:.2f} refreshes/s; alone '
                     f'{res["mask_alone_ms"] or float("nan"):.0f} ms')
    elif res.get('mask_alone_ms') is not None:
        lines.append(f'  masks ({res["mask_worker"]}) computed beforehand and reused; one '
                     f'refresh alone: {res["mask_alone_ms"]:.0f} ms')
    if res.get('note'):
        lines.append(f'  note: {res["note"]}')
    return '\n'.join(lines)


def run_bench_command(args) -> int:
    """``sgdfuse bench``."""
    try:
        size = parse_size(args.size or ('256x256' if args.task == 'medical' else '640x480'))
        if args.variants:
            from .bench_variants import format_variants, run_variants

            rows = run_variants(size=size, frames=args.frames, weights=args.weights,
                                random_weights=args.random, threads=args.threads)
            print(json.dumps(rows) if args.json else format_variants(rows, size))
            return 0
        kwargs = dict(size=size, backend=args.backend, frames=args.frames,
                      warmup=args.warmup, method=args.method, weights=args.weights,
                      random_weights=args.random, threads=args.threads,
                      mask_frames=args.mask_frames, mask_worker=args.mask_worker,
                      mask_rate_hz=args.mask_rate, mask_provider=args.mask_provider,
                      refiner_weights=args.refiner_weights,
                      refiner_backend=args.refiner_backend, task=args.task,
                      mask_options={'checkpoint': str(args.mask_checkpoint)}
                      if args.mask_checkpoint else None,
                      work_size=parse_size(args.work_size) if args.work_size else None,
                      jpeg_quality=args.jpeg)
        graph = getattr(args, 'graph', 'float')
        if graph == 'both':
            from .bench_graphs import format_graphs, run_graphs

            both = run_graphs(run_bench, rounds=args.rounds, **kwargs)
            print(json.dumps(both) if args.json else format_graphs(both))
            return 0
        res = run_bench(method_options={'graph': graph} if graph != 'float' else None,
                        **kwargs)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f'sgdfuse: error: {exc}', file=sys.stderr)
        return 2
    except RuntimeError as exc:  # BackendError and friends
        print(f'sgdfuse: error: {exc}', file=sys.stderr)
        return 1
    print(json.dumps(res) if args.json else format_table(res))
    return 0
