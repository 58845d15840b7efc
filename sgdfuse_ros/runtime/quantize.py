"""Cheaper graphs for the CPU: an exported float ONNX graph quantized to INT8, shipped beside it.

A float graph and its INT8 graph take the same inputs and give the same outputs; the INT8 one
runs its convolutions on 8-bit integers (ONNX Runtime's VNNI kernels where the CPU has them).
The INT8 graph is static, in QDQ form (``QuantizeLinear`` / ``DequantizeLinear`` pairs around
each quantized convolution, which ONNX Runtime fuses into integer kernels): activations
``uint8`` with ranges calibrated once (min / max over calibration inputs that the caller
brings), weights ``int8`` per output channel. Grouped (depthwise) convolutions stay float:
ONNX Runtime's integer depthwise kernel is slower than its float one; so do the layers the
caller names (e.g. a network's output head, where 8-bit steps would show in the image).

Files: the INT8 graph of ``<stem>.onnx`` is ``<stem>_int8.onnx`` with its sidecar beside it in
the same convention (``<stem>_int8.onnx.json`` for the shipped graphs, ``<name>_int8_<hash12>``
+ ``.json`` in an engines folder). The sidecar is the float graph's, with ``graph: int8``, the
INT8 file's own SHA-256, and a ``quantization`` entry (format, types, what was left float, the
calibration inputs, the difference to the float graph on a check input), so the loader finds
it by the same weights hash (:func:`sgdfuse_ros.runtime.export.find_graph` with
``kind='int8'``) and never mistakes it for the float graph.

Quantizing needs ``onnx`` and ``onnxruntime`` (its ``quantization`` package); loading the result
needs ONNX Runtime only. The networks and their calibration inputs are not known here: see
``sgdfuse export --onnx --quantize int8`` (:mod:`sgdfuse_ros.tools.quantize`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
import tempfile
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from sgdfuse_ros.core.files import atomic_write_bytes

#: Kinds of graph a network may ship: its float export and its INT8 quantization.
GRAPH_KINDS = ('float', 'int8')
#: File-name suffix of each kind (the float graph has none).
KIND_SUFFIX = {'float': '', 'int8': '_int8'}


def check_kind(kind: str, option: str = 'graph') -> str:
    """``kind`` when it is one of :data:`GRAPH_KINDS`, else a ``ValueError`` naming
    ``option``."""
    if kind not in GRAPH_KINDS:
        raise ValueError(f'{option} must be one of {", ".join(GRAPH_KINDS)}, got {kind!r}')
    return kind


def graph_kind(sidecar: Mapping[str, Any]) -> str:
    """The kind of graph a sidecar describes (``float`` unless it says otherwise)."""
    return str(sidecar.get('graph', 'float'))


def kind_path(path: str | os.PathLike, kind: str) -> Path:
    """Where the ``kind`` graph of the float graph ``path`` lives: ``<stem>_int8.onnx`` beside
    ``<stem>.onnx`` (an engines-folder ``<name>_<hash12>.onnx`` becomes
    ``<name>_int8_<hash12>.onnx``, so its file name still ends with the weights' hash)."""
    path = Path(path)
    suffix = KIND_SUFFIX[check_kind(kind)]
    stem = path.stem
    name, sep, tail = stem.rpartition('_')
    if sep and len(tail) == 12 and all(c in '0123456789abcdef' for c in tail):
        return path.with_name(f'{name}{suffix}_{tail}.onnx')
    return path.with_name(f'{stem}{suffix}.onnx')


def sidecar_path(onnx_path: Path) -> Path:
    """The sidecar beside an ONNX file: ``<file>.onnx.json`` when that convention is in use
    there (the shipped graphs), else ``<name>.json`` (an engines folder)."""
    shipped = onnx_path.with_name(onnx_path.name + '.json')
    plain = onnx_path.with_suffix('.json')
    return shipped if shipped.is_file() or not plain.is_file() else plain


def grouped_convs(model) -> list[str]:
    """Names of the grouped (depthwise) convolutions of an ONNX model."""
    out = []
    for node in model.graph.node:
        if node.op_type == 'Conv':
            group = [a.i for a in node.attribute if a.name == 'group']
            if group and group[0] > 1:
                out.append(node.name)
    return out


def conv_names(model) -> list[str]:
    """Names of the convolutions of an ONNX model, in graph order."""
    return [n.name for n in model.graph.node if n.op_type == 'Conv']


def _reader(feeds: Iterable[Mapping[str, np.ndarray]]):
    """The calibration inputs as ONNX Runtime's calibration reader."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            item = next(self.it, None)
            return None if item is None else {k: np.ascontiguousarray(v, np.float32)
                                              for k, v in item.items()}

    return Reader()


def cpu_session(path: str | os.PathLike, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=['CPUExecutionProvider'])


def max_difference(float_path: str | os.PathLike, int8_path: str | os.PathLike,
                   feeds: Mapping[str, np.ndarray]) -> float:
    """Largest absolute difference between the images (the first output; a network's blend
    maps beside it are not an image) of two graphs on one input."""
    a = cpu_session(float_path).run(None, dict(feeds))[0]
    b = cpu_session(int8_path).run(None, dict(feeds))[0]
    return float(np.abs(a - b).max())


def quantize_graph(float_path: str | os.PathLike, calibration: Iterable[Mapping[str, np.ndarray]],
                   *, keep_float: Sequence[str] = (),
                   check: Mapping[str, np.ndarray] | None = None,
                   calibration_note: Mapping[str, Any] | None = None,
                   out_path: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """Write the INT8 graph of the exported float graph ``float_path`` (see the module
    docstring) and its sidecar; returns ``(path, sidecar)``.

    ``calibration``: input dicts of the graph (its input names -> float32 arrays, any size the
    graph takes) whose activation ranges set the quantization. Convolutions stay float when
    grouped, or when their node name starts with one of ``keep_float`` (e.g. a module path of
    the export, ``/net/head/out/``). ``check``:
    one input on which the INT8 output is compared with the float one (recorded in the
    sidecar). ``calibration_note``: what the calibration inputs were, for the sidecar.
    ``out_path``: default :func:`kind_path` (``<stem>_int8.onnx`` beside the float graph).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .export import read_onnx_sidecar

    float_path = Path(float_path)
    float_sidecar = sidecar_path(float_path)
    meta = read_onnx_sidecar(float_sidecar)
    if graph_kind(meta) != 'float':
        raise ValueError(f'{float_path} is already a {graph_kind(meta)} graph')
    out = Path(out_path) if out_path is not None else kind_path(float_path, 'int8')
    out_sidecar = (out.with_name(out.name + '.json') if float_sidecar.name.endswith('.onnx.json')
                   else out.with_suffix('.json'))
    t0 = time.perf_counter()
    model = onnx.load(str(float_path))
    convs = conv_names(model)
    excluded = list(dict.fromkeys(grouped_convs(model) + [
        n for n in convs if any(n.startswith(prefix) for prefix in keep_float)]))
    n_calib = 0

    def counted(items):
        nonlocal n_calib
        for item in items:
            n_calib += 1
            yield item

    with tempfile.TemporaryDirectory(prefix='.quantize-', dir=out.parent) as tmp:
        pre = Path(tmp) / 'pre.onnx'
        staged = Path(tmp) / 'int8.onnx'
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(staged), _reader(counted(calibration)),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=['Conv'],
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=excluded)
        if n_calib == 0:
            raise ValueError(f'{float_path}: no calibration inputs')
        q = onnx.load(str(staged))
        q.producer_name = 'sgdfuse_ros'
        q.doc_string = f'INT8 (QDQ) of {float_path.name}: {model.doc_string}'
        data = q.SerializeToString()
        staged.write_bytes(data)
        diff = max_difference(float_path, staged, check) if check is not None else None
        atomic_write_bytes(out, data, mode=0o644)
    sidecar = dict(meta)
    sidecar.update({
        'graph': 'int8', 'onnx_sha256': hashlib.sha256(data).hexdigest(),
        'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
        'quantization': {
            'float_graph': float_path.name, 'float_onnx_sha256': meta.get('onnx_sha256'),
            'format': 'QDQ', 'operators': ['Conv'], 'activations': 'uint8, per tensor',
            'weights': 'int8, per output channel', 'calibration_method': 'minmax',
            'calibration_inputs': n_calib, 'calibration': dict(calibration_note or {}),
            'float_convs': excluded, 'int8_convs': len(convs) - len(excluded),
            'max_abs_diff_to_float': diff, 'seconds': round(time.perf_counter() - t0, 1)},
    })
    atomic_write_bytes(out_sidecar, (json.dumps(sidecar, indent=2) + '\n').encode(),
                       mode=0o644)
    return out, sidecar
