"""``sgdfuse bench --variants``: stage 1 timed under graph and layout choices (NHWC, graph
optimization levels, the SpaceToDepth pass, IO binding, threads, INT8), round-robin, each with
its max abs difference from PyTorch on the sample pairs.
"""

from __future__ import annotations

from pathlib import Path
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from sgdfuse_ros.runtime.threads import available_cores
from .timing import bench_frames, load_average


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

    from sgdfuse_ros.core import imaging
    from sgdfuse_ros.models.export_spec import ExportSpec, module_digest
    from sgdfuse_ros.models.stage1 import Stage1WithMaps, load_stage1, stage1_spec
    from sgdfuse_ros.models.weights import STAGE1_WEIGHTS
    from sgdfuse_ros.runtime.export import export_module
    from sgdfuse_ros.runtime.ort import OrtBackend
    from sgdfuse_ros.runtime.threads import set_threads
    from sgdfuse_ros.runtime.torch_backend import TorchBackend
    from .random_checkpoints import write_random_stage1

    threads = threads or available_cores()
    set_threads(threads)
    w, h = size
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix='sgdfuse-variants-') as tmp:
        weights_path = Path(weights) if weights else STAGE1_WEIGHTS
        if not weights and not STAGE1_WEIGHTS.is_file():
            if not random_weights:
                raise FileNotFoundError('no stage-1 weights; pass --weights or --random')
            weights_path = write_random_stage1(Path(tmp) / 'stage1_random.pt')
        net, _ = load_stage1(weights_path)
        model = Stage1WithMaps(net)
        m = model.multiple
        h, w = h // m * m, w // m * m
        digest = module_digest(model)
        spec = stage1_spec(net, size=(h, w))
        fused = export_module(model, spec, Path(tmp) / 'fused', digest=digest, source='bench')
        raw_spec = ExportSpec(**{**spec.__dict__, 'passes': ()})
        raw = export_module(model, raw_spec, Path(tmp) / 'raw', digest=digest, source='bench')
        pairs = []
        for thermal, vis, _ in bench_frames((w, h)):
            ir = imaging.ThermalGain(smoothing=0.0)(thermal)
            pairs.append({'ir': ir[None, None], 'vis': imaging.visible_luma(vis)[None, None]})
        ref_be = TorchBackend(net, ['ir', 'vis'], ['f1'])
        refs = [ref_be.run(p)['f1'] for p in pairs]

        def ort(path, **kw):
            return OrtBackend(path, threads=kw.pop('threads', threads), reuse=False, **kw)

        class Threads:  # torch's thread count is process-wide: set it for each call
            def __init__(self, be, n):
                self.be, self.n = be, n

            def run(self, feeds):
                torch.set_num_threads(self.n)
                return self.be.run(feeds)

        nhwc = TorchBackend(net, ['ir', 'vis'], ['f1'], channels_last=True)
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
