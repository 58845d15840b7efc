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
numbers: on a shared machine, compare only runs taken under similar load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

from sgdfuse_ros.runtime.backends import BACKEND_NAMES, available_cores, default_backend
from sgdfuse_ros.runtime.export import parse_size

#: Pipeline timing keys reported as stages (the pipeline's names -> the bench's).
STAGES = (('thermal', 'thermal'), ('color', 'color'), ('stage1', 'stage1'), ('masks', 'masks'),
          ('refiner', 'refiner'), ('merge', 'merge'), ('total', 'total'))


def add_arguments(p) -> None:
    """Arguments of ``sgdfuse bench``."""
    p.add_argument('--size', default='640x480', help='working size WxH (default 640x480)')
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
    p.add_argument('--json', action='store_true', help='print one JSON object')
    p.add_argument('--variants', action='store_true',
                   help='instead: time stage 1 under graph/layout choices (NHWC, graph '
                   'optimization levels, the SpaceToDepth pass, IO binding, threads, INT8)')


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    v = sorted(values)
    p95 = v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
    return {'median': statistics.median(v), 'p95': p95, 'min': v[0]}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != 'darwin' else kb / 2 ** 20


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return None


def bench_frames(size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """The sample pairs at ``size`` (W, H): ``(mono16 thermal, uint8 RGB visible, name)``."""
    import cv2

    from sgdfuse_ros.core.paths import samples_dir
    from sgdfuse_ros.core import imaging

    frames = []
    for pair in imaging.dataset_pairs(samples_dir()):
        ir = imaging.resize(imaging.read_image(pair.ir, gray=True), size)
        vis = cv2.resize(imaging.read_image(pair.vis, gray=False), size,
                         interpolation=cv2.INTER_AREA)
        mono16 = ir.astype(np.uint16) * 40 + 20000  # a radiometric-looking 16-bit frame
        frames.append((mono16, vis, pair.name))
    if not frames:
        raise FileNotFoundError(f'no sample pairs in {samples_dir()}')
    return frames


def _resolve_method(name: str) -> str:
    from sgdfuse_ros.fusion.methods import available_methods

    if name != 'auto':
        return name
    return 'sgdfuse' if 'sgdfuse' in available_methods() else 'stage1'


def _random_weights(tmp: str) -> Path:
    import torch

    from sgdfuse_ros.models.stage1 import Stage1Net, make_checkpoint, preset

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Stage1Net(preset('realtime'))
        torch.nn.init.normal_(model.head.weight, std=0.01)
    path = Path(tmp) / 'stage1_random.pt'
    torch.save(make_checkpoint(model, note='untrained, for timing'), path)
    return path


def _random_refiner(tmp: str) -> Path:
    import torch

    from sgdfuse_ros.models.refiner import RefinerNet, SamplerSettings, make_checkpoint, preset

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = RefinerNet(preset('realtime'))
    path = Path(tmp) / 'refiner_random.pt'
    torch.save(make_checkpoint(model, role='student',
                               sampler=SamplerSettings(steps=2, t_start=500)), path)
    return path


def _refiner_on_backend(method, backend: str, threads: int, engines_dir=None):
    """Run the method's refiner (a :class:`..fusion.refiner.RefinerRunner`) through a runtime
    backend (the one-graph K-step sampler), unless it already runs there."""
    r = method.refiner
    current = getattr(r, 'backend', None)
    if current is not None and backend in ('auto', getattr(current, 'name', None)):
        return current
    opts = {'engines_dir': engines_dir} if engines_dir is not None else {}
    return r.use_backend(backend, steps=getattr(method, 'steps', None), threads=threads, **opts)


def run_bench(*, size: tuple[int, int], backend: str = 'onnxruntime', frames: int = 50,
              warmup: int = 5, method: str = 'auto', weights: str | os.PathLike | None = None,
              random_weights: bool = False, threads: int | None = None, mask_frames: int = 5,
              mask_worker: str | None = 'auto', mask_rate_hz: float = 2.0,
              mask_options: dict[str, Any] | None = None, mask_provider: str = 'auto',
              refiner_weights: str | os.PathLike | None = None,
              refiner_backend: str | None = None,
              engines_dir: str | os.PathLike | None = None,
              method_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the result object (see the module docstring).

    ``mask_worker``: a mask provider run by a :class:`~..fusion.masks.MaskWorker` thread at
    ``mask_rate_hz`` *while* the frames are fused, as in the node (``auto``: the pipeline's own
    provider when the method uses masks; a provider name: that provider even for ``stage1``,
    to measure the per-frame path beside it). ``none``: no concurrent worker; a method that
    uses masks gets them computed once per sample pair beforehand and reused (the per-frame path
    alone). The provider is also timed alone (``mask_frames`` refreshes, ``mask_alone_ms``).

    ``sgdfuse``: ``weights`` are stage 1's, ``refiner_weights`` the student's (``random_weights``
    makes untrained ones of both where none are installed). The method runs its refiner in
    PyTorch; ``refiner_backend`` (default: ``backend``) runs the same K-step sampler through
    :func:`.loader.refiner_backend` instead, as one graph.
    """
    from sgdfuse_ros.fusion.networks import STAGE1_WEIGHTS
    from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig

    if frames < 1:
        raise ValueError(f'frames must be >= 1, got {frames}')
    backend = default_backend() if backend == 'auto' else backend
    method = _resolve_method(method)
    threads = threads or available_cores()
    tmp = tempfile.TemporaryDirectory(prefix='sgdfuse-bench-')
    worker = None
    try:
        weights_path = Path(weights) if weights else None
        note = None
        if not weights and not STAGE1_WEIGHTS.is_file():
            if not random_weights:
                raise FileNotFoundError(f'no stage-1 weights at {STAGE1_WEIGHTS}; pass '
                                        '--weights, or --random to time an untrained network')
            weights_path, note = _random_weights(tmp.name), 'untrained stage-1 weights'
        opts: dict[str, Any] = {'backend': backend, 'threads': threads}
        if weights_path is not None:  # else the method's shipped weights
            opts['stage1_weights' if method == 'sgdfuse' else 'weights'] = str(weights_path)
        if method == 'sgdfuse':
            from sgdfuse_ros.fusion.refiner import STUDENT_WEIGHTS
            if refiner_weights:
                opts['weights'] = str(refiner_weights)
            elif not STUDENT_WEIGHTS.is_file():
                if not random_weights:
                    raise FileNotFoundError(f'no refiner weights at {STUDENT_WEIGHTS}; pass '
                                            '--refiner-weights, or --random')
                opts['weights'] = str(_random_refiner(tmp.name))
                note = 'untrained weights' if note else 'untrained refiner weights'
        if engines_dir is not None:
            opts['engines_dir'] = str(engines_dir)
        opts.update(method_options or {})
        t0 = time.perf_counter()
        pipe = FusionPipeline(PipelineConfig(method=method, method_options=opts,
                                             mask_provider=mask_provider,
                                             mask_options=dict(mask_options or {})))
        refiner_detail = None
        if getattr(pipe.method, 'refiner', None) is not None:
            which = refiner_backend or backend
            if which != 'torch':
                refiner_detail = _refiner_on_backend(pipe.method, which, threads,
                                                     engines_dir).describe()
            else:
                import torch
                pipe.method.refiner.use_backend('torch')
                refiner_detail = f'torch {torch.__version__} (CPU)'
        load_s = time.perf_counter() - t0
        pairs = bench_frames(size)

        provider, worker_name = None, None
        concurrent = mask_worker not in (None, 'none')
        if mask_worker in ('auto', None, 'none'):
            provider = pipe.mask_provider
        else:
            from sgdfuse_ros.masks import build_provider
            provider = build_provider(mask_worker, **dict(mask_options or {}))
        if provider is not None:
            worker_name = getattr(provider, 'name', str(mask_worker))

        mask_ms: list[float] = []
        cached: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if provider is not None:  # the provider timed alone; masks of every pair kept
            from sgdfuse_ros.core import imaging
            count = max(mask_frames + 1, 2 if concurrent else len(pairs) + 1)
            for i in range(count):  # the first one warms up
                thermal, vis, name = pairs[i % len(pairs)]
                ir = imaging.ThermalGain(smoothing=0.0)(thermal)
                tm = time.perf_counter()
                cached[name] = provider(ir, vis).as_tuple()
                if i >= 1:
                    mask_ms.append((time.perf_counter() - tm) * 1e3)

        worker_ms: list[float] = []
        if provider is not None and concurrent:
            from sgdfuse_ros.masks import MaskWorker, build_provider
            from sgdfuse_ros.runtime.backends import clear_session_cache

            # A fresh provider whose runtimes the worker prepares in its own thread (as in the
            # node), so their thread pools get the worker's idle priority.
            clear_session_cache()
            name = mask_provider if mask_worker in ('auto', None) else mask_worker
            provider = build_provider(name, **dict(mask_options or {}))
            worker = MaskWorker(provider, rate_hz=mask_rate_hz).start()

        timings: dict[str, list[float]] = {k: [] for k, _ in STAGES}
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
            for key, _ in STAGES:
                if key in t:
                    timings[key].append(t[key])
            if 'masks' not in t and pipe.method.uses_masks:
                timings['masks'].append(t.get('resize', 0.0))  # reused: at most a resize
            if 'refiner' not in t and method == 'sgdfuse' and 'stage1' in t:
                timings['refiner'].append(t['fuse'] - t['stage1'])
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        worker_stats = None
        if worker is not None:
            refreshes = worker.refreshes - refreshes0
            worker.stop()
            worker_stats = worker.stats()
            worker_ms = list(worker._compute_ms)
            worker_stats['refresh_hz'] = round(refreshes / wall, 2)
        stage1_method = getattr(pipe.method, 'stage1', pipe.method)  # sgdfuse holds a stage 1
        backend_desc = getattr(getattr(stage1_method, 'backend', None), 'describe', None)
        if backend_desc is None and backend == 'torch':
            import torch
            detail = f'torch {torch.__version__} (CPU), {torch.get_num_threads()} threads'
        else:
            detail = backend_desc() if backend_desc else backend
        stats = {k: _stats(v) for k, v in timings.items()}
    finally:
        if worker is not None:
            worker.stop()
        tmp.cleanup()

    def med(key):
        return None if stats.get(key) is None else round(stats[key]['median'], 2)

    alone = _stats(mask_ms)
    beside = _stats(worker_ms)
    w, h = size
    out = {
        'stage1_ms': med('stage1'), 'masks_ms': med('masks'), 'refiner_ms': med('refiner'),
        'total_ms': med('total'), 'fps': round(frames / wall, 2),
        'peak_rss_mb': round(peak_rss_mb(), 1), 'backend': backend, 'size': f'{w}x{h}',
        'method': method, 'frames': frames, 'threads': threads,
        'thermal_ms': med('thermal'), 'color_ms': med('color'), 'merge_ms': med('merge'),
        'p95_ms': {k: round(v['p95'], 2) for k, v in stats.items() if v},
        'mask_worker': worker_name,
        'mask_worker_ms': None if beside is None else round(beside['median'], 1),
        'mask_refresh_hz': None if worker_stats is None else worker_stats['refresh_hz'],
        'mask_alone_ms': None if alone is None else round(alone['median'], 1),
        'load_s': round(load_s, 2), 'load_average': load_average(),
        'cores': available_cores(),
        'cpu_ms_per_frame': round(cpu * 1e3 / frames, 2), 'backend_detail': detail,
        'refiner_detail': refiner_detail,
    }
    if note:
        out['note'] = note
    return out


def format_table(res: dict[str, Any]) -> str:
    """A readable per-stage table of a :func:`run_bench` result."""
    rows = [('thermal preprocessing', 'thermal'), ('colour split', 'color'),
            ('stage 1', 'stage1'), ('masks (reused)', 'masks'), ('refiner', 'refiner'),
            ('colour merge', 'merge'), ('per-frame total', 'total')]
    p95 = res.get('p95_ms', {})
    lines = [f'sgdfuse bench: {res["method"]} on {res["backend"]} at {res["size"]}, '
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
        size = parse_size(args.size)
        if args.variants:
            rows = run_variants(size=size, frames=args.frames, weights=args.weights,
                                random_weights=args.random, threads=args.threads)
            print(json.dumps(rows) if args.json else format_variants(rows, size))
            return 0
        res = run_bench(size=size, backend=args.backend, frames=args.frames,
                        warmup=args.warmup, method=args.method, weights=args.weights,
                        random_weights=args.random, threads=args.threads,
                        mask_frames=args.mask_frames, mask_worker=args.mask_worker,
                        mask_rate_hz=args.mask_rate, mask_provider=args.mask_provider,
                        refiner_weights=args.refiner_weights,
                        refiner_backend=args.refiner_backend,
                        mask_options={'checkpoint': str(args.mask_checkpoint)}
                        if args.mask_checkpoint else None)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f'sgdfuse: error: {exc}', file=sys.stderr)
        return 2
    except RuntimeError as exc:  # BackendError and friends
        print(f'sgdfuse: error: {exc}', file=sys.stderr)
        return 1
    print(json.dumps(res) if args.json else format_table(res))
    return 0


# ----------------------------------------------------------------------------------------------
# Graph and layout variants of stage 1 (``sgdfuse bench --variants``)
# ----------------------------------------------------------------------------------------------

def quantize_int8(onnx_path: Path, out_path: Path, calibration: list[dict[str, np.ndarray]]
                  ) -> Path:
    """Static INT8 quantization (QDQ, per-channel weights) calibrated on real pairs."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calibration)

        def get_next(self):
            return next(self._it, None)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out_path.with_name(out_path.stem + '_pre.onnx')
    quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return out_path


def run_variants(*, size: tuple[int, int], frames: int = 30, weights=None,
                 random_weights: bool = False, threads: int | None = None,
                 int8: bool = True) -> list[dict[str, Any]]:
    """Time stage 1 under graph and layout choices, round-robin (so that load changes on a
    shared machine hit every variant alike). Returns one row per variant: median / p10 ms and
    the max abs difference from PyTorch on the sample pairs."""
    import torch

    from sgdfuse_ros.fusion.networks import STAGE1_WEIGHTS
    from sgdfuse_ros.models.stage1 import load_stage1
    from sgdfuse_ros.runtime import backends as be_mod
    from sgdfuse_ros.runtime.export import ExportSpec, export_module, module_digest, stage1_spec

    threads = threads or available_cores()
    torch.set_num_threads(threads)
    w, h = size
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix='sgdfuse-variants-') as tmp:
        weights_path = Path(weights) if weights else STAGE1_WEIGHTS
        if not weights and not STAGE1_WEIGHTS.is_file():
            if not random_weights:
                raise FileNotFoundError('no stage-1 weights; pass --weights or --random')
            weights_path = _random_weights(tmp)
        model, _ = load_stage1(weights_path)
        m = model.multiple
        h, w = h // m * m, w // m * m
        digest = module_digest(model)
        spec = stage1_spec(model, size=(h, w))
        fused = export_module(model, spec, Path(tmp) / 'fused', digest=digest, source='bench')
        raw_spec = ExportSpec(**{**spec.__dict__, 'passes': ()})
        raw = export_module(model, raw_spec, Path(tmp) / 'raw', digest=digest, source='bench')
        pairs = []
        for i, (thermal, vis, _) in enumerate(bench_frames((w, h))):
            from sgdfuse_ros.core import imaging
            ir = imaging.ThermalGain(smoothing=0.0)(thermal)
            pairs.append({'ir': ir[None, None], 'vis': imaging.visible_luma(vis)[None, None]})
        ref_be = be_mod.TorchBackend(model, ['ir', 'vis'], ['f1'])
        refs = [ref_be.run(p)['f1'] for p in pairs]

        def ort(path, **kw):
            return be_mod.OrtBackend(path, threads=kw.pop('threads', threads), reuse=False, **kw)

        class Threads:  # torch's thread count is process-wide: set it for each call
            def __init__(self, be, n):
                self.be, self.n = be, n

            def run(self, feeds):
                torch.set_num_threads(self.n)
                return self.be.run(feeds)

        nhwc = be_mod.TorchBackend(model, ['ir', 'vis'], ['f1'], channels_last=True)
        variants: list[tuple[str, Any]] = [
            (f'torch eager, NCHW, {threads} threads', Threads(ref_be, threads)),
            (f'torch eager, channels_last (NHWC), {threads} threads', Threads(nhwc, threads)),
            ('torch eager, NCHW, 1 thread', Threads(ref_be, 1)),
            ('onnxruntime, all optimizations + SpaceToDepth pass (default)', ort(fused.path)),
            ('onnxruntime, default + thread spinning', ort(fused.path, allow_spinning=True)),
            ('onnxruntime, raw export (pixel_unshuffle as reshape/transpose)', ort(raw.path)),
            ('onnxruntime, extended (no NCHWc blocked layout)',
             ort(fused.path, graph_optimization='extended')),
            ('onnxruntime, basic', ort(fused.path, graph_optimization='basic')),
            ('onnxruntime, IO binding', ort(fused.path, io_binding=True)),
            ('onnxruntime, 1 thread', ort(fused.path, threads=1)),
        ]
        if int8:
            q = quantize_int8(fused.path, Path(tmp) / 'int8.onnx', pairs)
            variants.append(('onnxruntime, INT8 static QDQ (per-channel)', ort(q)))
        times: dict[str, list[float]] = {name: [] for name, _ in variants}
        cpu: dict[str, float] = {name: 0.0 for name, _ in variants}
        diffs: dict[str, float] = {}
        for name, be in variants:
            outs = [be.run(p)['f1'] for p in pairs]
            diffs[name] = max(float(np.abs(o - r).max()) for o, r in zip(outs, refs))
            for p in pairs[:2]:
                be.run(p)
        # Blocks of frames per variant, the variants rotating: load drift on a shared machine
        # reaches every variant, and one variant's idle spinning threads (OpenMP, onnxruntime)
        # only touch the untimed first frame of the next block.
        block = 5
        for start in range(0, frames, block):
            for name, be in variants:
                be.run(pairs[start % len(pairs)])
                c0 = time.process_time()
                for i in range(start, min(start + block, frames)):
                    feeds = pairs[i % len(pairs)]
                    t0 = time.perf_counter()
                    be.run(feeds)
                    times[name].append((time.perf_counter() - t0) * 1e3)
                cpu[name] += time.process_time() - c0
        for name, _ in variants:
            v = sorted(times[name])
            rows.append({'variant': name, 'median_ms': round(statistics.median(v), 2),
                         'p10_ms': round(v[len(v) // 10], 2),
                         'cpu_ms': round(cpu[name] * 1e3 / len(v), 2),
                         'max_abs_diff': diffs[name]})
    return rows


def format_variants(rows: list[dict[str, Any]], size: tuple[int, int]) -> str:
    base = rows[0]['median_ms']
    lines = [f'stage 1 at {size[0]}x{size[1]}, load average {load_average()}',
             f'  {"variant":66s} {"median":>7s} {"p10":>7s} {"cpu":>7s} {"vs torch":>8s} '
             f'{"max diff":>9s}']
    for r in rows:
        lines.append(f'  {r["variant"]:66s} {r["median_ms"]:7.2f} {r["p10_ms"]:7.2f} '
                     f'{r["cpu_ms"]:7.2f} {r["median_ms"] / base:8.2f} '
                     f'{r["max_abs_diff"]:9.1e}')
    return '\n'.join(lines)
