"""``sgdfuse export --onnx --shipped --quantize int8``: the INT8 graphs of the shipped networks.

Each shipped float graph (stage 1, and the student refiner's sampler at its own step count) is
quantized by :func:`sgdfuse_ros.runtime.quantize.quantize_graph`, calibrated on the training
split of registered pairs (:func:`sgdfuse_ros.training.data.split_pairs`: never a validation
pair), and written beside it as ``<stem>_int8.onnx`` + sidecar. What stays float, per network:

* stage 1: its depthwise convolutions (as everywhere);
* the refiner: its depthwise and fixed filters, and the three convolutions of its output
  head (8-bit steps there reach the image: 0.45% lower MI and up to 20 gray levels at a pixel
  when they are quantized, 0.10% and 9 levels when not; docs/benchmarks.md).

The refiner is calibrated on what it sees at run time: the float stage 1's F1 and the
``saliency`` masks of the pair. Then both methods are scored on the validation split, float
against INT8, on the eight headline metrics (:func:`compare_graphs`); the command fails when
any differs by more than 1%.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.metrics import HEADLINE, compute_metrics
from sgdfuse_ros.models.weights import SHIPPED_GRAPHS

#: The largest relative change of a headline metric (mean over the validation pairs) that an
#: INT8 graph may bring.
METRIC_TOLERANCE = 0.01
#: Calibration pairs taken from each set's training split (evenly spaced).
PAIRS_PER_SET = 5
#: Side multiple the calibration inputs are padded to (both networks take it).
PAD = 32
#: Per shipped target: node-name prefixes of the convolutions kept float (besides the grouped
#: ones): the refiner's output head (its attention, its convolution and its output layer).
KEEP_FLOAT = {'stage1': (), 'refiner': ('/net/head/attn/', '/net/head/head/', '/net/head/out/')}


def default_data() -> Path:
    """The registered pairs: ``SGDFUSE_DATA`` when set, else ``../shared/data/ivif`` beside
    the checkout."""
    if os.environ.get('SGDFUSE_DATA'):
        return Path(os.environ['SGDFUSE_DATA'])
    return Path(__file__).resolve().parents[3] / 'shared' / 'data' / 'ivif'


def split_of(data: str | os.PathLike, which: str, per_set: int | None = None) -> list:
    """Loaded pairs (:class:`sgdfuse_ros.training.data.Pair`, luma) of the ``train`` or
    ``validation`` split of every set under ``data``; ``per_set`` evenly spaced ones per set
    (None: all)."""
    from sgdfuse_ros.training.data import expand_data_dirs, load_pair, split_pairs

    out = []
    for folder in expand_data_dirs([data]):
        train, val = split_pairs(folder)
        chosen = train if which == 'train' else val
        if per_set and len(chosen) > per_set:
            chosen = [chosen[round(i * (len(chosen) - 1) / (per_set - 1))]
                      for i in range(per_set)] if per_set > 1 else chosen[:1]
        out.extend(load_pair(p, folder.name) for p in chosen)
    return out


def _padded(pair) -> tuple[np.ndarray, np.ndarray]:
    ir, _ = imaging.pad_to_multiple(pair.ir[0], PAD)
    vis, _ = imaging.pad_to_multiple(pair.vis[0], PAD)
    return ir[None, None].astype(np.float32), vis[None, None].astype(np.float32)


def stage1_feeds(pairs: Iterable) -> Iterable[dict[str, np.ndarray]]:
    for pair in pairs:
        ir, vis = _padded(pair)
        yield {'ir': ir, 'vis': vis}


def refiner_feeds(pairs: Iterable, stage1_graph: str | os.PathLike
                  ) -> Iterable[dict[str, np.ndarray]]:
    """The refiner's inputs as the method gives them: the float stage 1's F1 and the saliency
    masks of the pair."""
    from sgdfuse_ros.fusion.sgdfuse import saliency_masks
    from sgdfuse_ros.runtime.quantize import cpu_session

    stage1 = cpu_session(stage1_graph)
    for pair in pairs:
        ir, vis = _padded(pair)
        f1 = stage1.run(None, {'ir': ir, 'vis': vis})[0]
        masks = np.stack(saliency_masks(ir[0, 0], vis[0, 0]))[None].astype(np.float32)
        yield {'f1': f1, 'masks': masks, 'ir': ir, 'vis': vis}


def _check_input(sidecar: dict, target: str, stage1_graph: Path) -> dict[str, np.ndarray]:
    """The sample pair at the export size, as the target's input."""
    from sgdfuse_ros.runtime.export import sample_pair
    from sgdfuse_ros.training.data import Pair

    h, w = sidecar.get('export_size') or (480, 640)
    ir, vis, name = sample_pair(h, w)
    pair = Pair('samples', name, ir[None], vis[None])
    feeds = stage1_feeds([pair]) if target == 'stage1' else refiner_feeds([pair], stage1_graph)
    return next(iter(feeds))


def quantize_shipped(data: str | os.PathLike | None = None, float_dir: str | os.PathLike |
                     None = None, *, log: Callable[[str], None] = print) -> list[Path]:
    """Quantize the shipped float graphs (those beside the shipped weights, or the same files in
    ``float_dir``) to INT8, calibrated on the training pairs of ``data`` (default:
    :func:`default_data`); returns the INT8 graphs written beside them."""
    from sgdfuse_ros.runtime.export import read_onnx_sidecar, shipped_graph_paths
    from sgdfuse_ros.runtime.quantize import quantize_graph

    data = Path(data) if data is not None else default_data()
    if not data.is_dir():
        raise FileNotFoundError(f'no calibration pairs at {data} (pass --data, or set '
                                'SGDFUSE_DATA)')
    pairs = split_of(data, 'train', PAIRS_PER_SET)
    note = {'data': data.name, 'split': 'train', 'pairs': [f'{p.set}/{p.name}' for p in pairs],
            'padded_to': PAD}
    graphs = {}
    for target, weights in SHIPPED_GRAPHS.items():
        path, _ = shipped_graph_paths(weights)
        graphs[target] = Path(float_dir) / path.name if float_dir is not None else path
    written = []
    for target, path in graphs.items():
        if not path.is_file():
            raise FileNotFoundError(f'{path}: no float graph to quantize (run `sgdfuse export '
                                    '--onnx --shipped` first)')
        feeds = (stage1_feeds(pairs) if target == 'stage1'
                 else refiner_feeds(pairs, graphs['stage1']))
        check = _check_input(read_onnx_sidecar(Path(str(path) + '.json')), target,
                             graphs['stage1'])
        out, sidecar = quantize_graph(path, feeds, keep_float=KEEP_FLOAT[target], check=check,
                                      calibration_note=note)
        q = sidecar['quantization']
        log(f'{target}: {out} ({q["int8_convs"]} INT8 convolutions, {len(q["float_convs"])} '
            f'float; calibrated on {q["calibration_inputs"]} training pairs); max |int8 - '
            f'float| = {q["max_abs_diff_to_float"]:.2e} on the sample pair')
        written.append(out)
    return written


def method_metrics(pairs: list, graph: str, *, threads: int | None = None,
                   weights_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """Mean headline metrics of the ``sgdfuse`` method (saliency masks) with its ``graph``
    networks on ``pairs``, each at its own size. ``weights_dir``: a folder holding the
    shipped weights with the graphs under test beside them (default: the package's)."""
    from sgdfuse_ros.fusion.sgdfuse import SGDFuseMethod, saliency_masks

    opts: dict[str, Any] = {}
    if weights_dir is not None:
        opts = {'weights': Path(weights_dir) / SHIPPED_GRAPHS['refiner'].name,
                'stage1_weights': Path(weights_dir) / SHIPPED_GRAPHS['stage1'].name}
    method = SGDFuseMethod(backend='onnxruntime', threads=threads, graph=graph, **opts)
    rows = []
    for pair in pairs:
        ir, vis = pair.ir[0], pair.vis[0]
        fused = method(ir, vis, saliency_masks(ir, vis)).fused
        rows.append(compute_metrics(imaging.to_uint8(fused), imaging.to_uint8(ir),
                                    imaging.to_uint8(vis), HEADLINE))
    return {k: float(np.mean([r[k] for r in rows])) for k in HEADLINE}


def compare_graphs(pairs: list, *, threads: int | None = None,
                   weights_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Float against INT8 on ``pairs`` (:func:`method_metrics`): both rows, the relative
    change of each metric and the worst one."""
    ref = method_metrics(pairs, 'float', threads=threads, weights_dir=weights_dir)
    q = method_metrics(pairs, 'int8', threads=threads, weights_dir=weights_dir)
    change = {k: (q[k] - ref[k]) / abs(ref[k]) if ref[k] else 0.0 for k in HEADLINE}
    return {'float': ref, 'int8': q, 'change': change,
            'worst': max(abs(v) for v in change.values()), 'pairs': len(pairs)}


def format_comparison(res: dict[str, Any]) -> str:
    head = ' '.join(f'{k:>8s}' for k in HEADLINE)
    lines = [f'{"validation, " + str(res["pairs"]) + " pairs":24s} {head}']
    for row in ('float', 'int8'):
        lines.append(f'{row:24s} ' + ' '.join(f'{res[row][k]:8.4f}' for k in HEADLINE))
    lines.append(f'{"change, %":24s} ' + ' '.join(f'{100 * res["change"][k]:+8.2f}'
                                                  for k in HEADLINE))
    return '\n'.join(lines)


def run_quantize_shipped(kind: str, out: str | os.PathLike | None, data: str | os.PathLike |
                         None, *, log: Callable[[str], None] = print) -> int:
    """``--shipped --quantize int8``: quantize, then check float against INT8 on the
    validation split; 0 when every headline metric is within :data:`METRIC_TOLERANCE`."""
    import shutil
    import tempfile

    if kind != 'int8':
        raise ValueError(f'--quantize: only int8, got {kind!r}')
    quantize_shipped(data, out, log=log)
    pairs = split_of(Path(data) if data is not None else default_data(), 'validation')
    with tempfile.TemporaryDirectory(prefix='sgdfuse-quantize-') as tmp:
        weights_dir = None
        if out is not None:  # the method finds graphs beside its weights: put them together
            weights_dir = Path(tmp)
            for weights in SHIPPED_GRAPHS.values():
                shutil.copy2(weights, weights_dir / weights.name)
            for f in Path(out).iterdir():
                if f.name.endswith(('.onnx', '.onnx.json')):
                    shutil.copy2(f, weights_dir / f.name)
        res = compare_graphs(pairs, weights_dir=weights_dir)
    log(format_comparison(res))
    ok = res['worst'] <= METRIC_TOLERANCE
    log(f'worst change {100 * res["worst"]:.2f}% ({"within" if ok else "OVER"} '
        f'{100 * METRIC_TOLERANCE:.0f}%)')
    return 0 if ok else 1
