"""The INT8 graphs shipped beside the float ones: what they are, that the option selects them,
and that the method with them scores within 1% of the float graphs on real pairs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sgdfuse_ros.core.hashing import sha256_file
from sgdfuse_ros.models.weights import SHIPPED_GRAPHS
from sgdfuse_ros.params import validate_settings
from sgdfuse_ros.runtime import export
from sgdfuse_ros.runtime.quantize import GRAPH_KINDS, graph_kind, kind_path

pytestmark = pytest.mark.skipif(importlib.util.find_spec('onnxruntime') is None,
                                reason='needs the runtime extra (onnxruntime)')


def _int8(target: str) -> tuple[Path, Path]:
    graph, sidecar = export.shipped_graphs(SHIPPED_GRAPHS[target], 'int8')[0]
    return graph, sidecar


@pytest.mark.parametrize('target', sorted(SHIPPED_GRAPHS))
def test_int8_graph_ships_beside_the_float_one_and_derives_from_it(target):
    """Each network's INT8 graph names the shipped weights, was quantized from the float graph
    that ships now, on training pairs only, and keeps its depthwise convolutions float."""
    weights = SHIPPED_GRAPHS[target]
    graph, sidecar = _int8(target)
    float_graph, float_sidecar = export.shipped_graph_paths(weights)
    assert graph == kind_path(float_graph, 'int8') and graph.is_file(), (
        f'no {graph}: run `sgdfuse export --onnx --shipped --quantize int8`')
    meta, float_meta = export.read_onnx_sidecar(sidecar), export.read_onnx_sidecar(float_sidecar)
    assert graph_kind(meta) == 'int8' and graph_kind(float_meta) == 'float'
    assert export.graph_problem(graph, sidecar, sha256_file(weights)) is None
    q = meta['quantization']
    assert q['float_onnx_sha256'] == float_meta['onnx_sha256'] == sha256_file(float_graph), (
        f'{graph} was quantized from another float graph: run `sgdfuse export --onnx '
        '--shipped --quantize int8`')
    assert q['calibration']['split'] == 'train' and q['calibration_inputs'] >= 10
    assert not any(p.startswith('FMB/') for p in q['calibration']['pairs'])  # all validation
    assert q['int8_convs'] > len(q['float_convs']) and q['max_abs_diff_to_float'] < 0.02
    for key in ('inputs', 'outputs', 'multiple', 'config', 'timesteps', 'sampler', 'use_masks'):
        assert meta.get(key) == float_meta.get(key)
    # never taken for the float graph, and the float graph never taken for it
    assert export.shipped_graphs(weights)[0] == (float_graph, float_sidecar)
    assert all(not p.stem.endswith('_int8') for p, _ in export.shipped_graphs(weights))
    found, data, _ = export.find_graph(sha256_file(weights), pattern='none', dirs=[],
                                       shipped=weights, kind='int8')
    assert found == graph and data['graph'] == 'int8'


def test_the_option_selects_the_graph_and_refuses_what_cannot_run():
    from sgdfuse_ros.fusion.sgdfuse import SGDFuseMethod
    from sgdfuse_ros.fusion.stage1 import Stage1Method

    for graph in GRAPH_KINDS:
        m = SGDFuseMethod(backend='onnxruntime', graph=graph)
        want = {t: (_int8(t)[0] if graph == 'int8' else
                    export.shipped_graph_paths(SHIPPED_GRAPHS[t])[0]) for t in SHIPPED_GRAPHS}
        assert m.stage1.backend.path == want['stage1'] and m.refiner.backend.path == \
            want['refiner'], graph
        report = m.backend_report()
        assert all(('int8 graph' in line) == (graph == 'int8') for line in report.values())
        assert m.refiner.steps == 1
    assert Stage1Method(backend='onnxruntime').backend.path == \
        export.shipped_graph_paths(SHIPPED_GRAPHS['stage1'])[0]  # the default stays float
    with pytest.raises(ValueError, match='graph must be one of'):
        Stage1Method(backend='onnxruntime', graph='fp8')
    with pytest.raises(ValueError, match='onnxruntime'):
        Stage1Method(backend='torch', graph='int8')
    with pytest.raises(FileNotFoundError, match='no int8 graph.*--quantize int8'):
        SGDFuseMethod(backend='onnxruntime', graph='int8', steps=2)  # ships for K=1 only
    s = validate_settings({'network_graph': 'int8', 'backend': 'onnxruntime'})
    assert s.pipeline_config().method_options == {'backend': 'onnxruntime', 'graph': 'int8'}
    assert 'graph' not in validate_settings({}).pipeline_config().method_options


def test_int8_method_scores_within_one_percent_of_float_on_real_pairs(ivif):
    """The sgdfuse method on its INT8 graphs against its float graphs, on validation pairs of
    two sets at their own sizes: each headline metric within 1%, and the images close."""
    from sgdfuse_ros.tools.quantize import METRIC_TOLERANCE, compare_graphs, split_of

    pairs = split_of(ivif, 'validation', per_set=2)
    assert len(pairs) >= 3
    res = compare_graphs(pairs, threads=1)
    assert res['worst'] <= METRIC_TOLERANCE, res
    assert all(np.isfinite(v) for row in ('float', 'int8') for v in res[row].values())
    assert res['float'] != res['int8']  # a different graph ran


def test_bench_shows_both_graphs_side_by_side():
    from sgdfuse_ros.tools.bench import run_bench
    from sgdfuse_ros.tools.bench_graphs import format_graphs, run_graphs

    res = run_graphs(run_bench, rounds=1, size=(160, 128), frames=2, warmup=1,
                     method='sgdfuse', mask_worker='none', mask_provider='saliency',
                     threads=1)
    assert [r['graph'] for r in res['runs']] == ['float', 'int8']
    assert 'int8 graph' in res['runs'][1]['backend_report']['refiner']
    assert 'int8 graph' not in res['runs'][0]['backend_report']['refiner']
    text = format_graphs(res)
    for label in ('stage 1', 'refiner', 'per-frame total', 'end-to-end fps'):
        line = next(x for x in text.splitlines() if x.strip().startswith(label))
        assert len(line.split()) >= len(label.split()) + 2


def test_the_int8_graphs_are_what_the_command_makes(tmp_path, ivif):
    """Quantizing the shipped float graphs again, on the pairs named in the sidecars, gives the
    shipped INT8 graphs byte for byte (runs where those calibration pairs are present)."""
    from sgdfuse_ros.tools.quantize import PAIRS_PER_SET, quantize_shipped, split_of

    note = export.read_onnx_sidecar(_int8('stage1')[1])['quantization']['calibration']
    if [f'{p.set}/{p.name}' for p in split_of(ivif, 'train', PAIRS_PER_SET)] != note['pairs']:
        pytest.skip(f'{ivif} is not the collection the graphs were calibrated on '
                    f'({note["data"]})')
    for weights in SHIPPED_GRAPHS.values():
        graph, sidecar = export.shipped_graph_paths(weights)
        (tmp_path / graph.name).write_bytes(graph.read_bytes())
        (tmp_path / sidecar.name).write_bytes(sidecar.read_bytes())
    written = quantize_shipped(ivif, tmp_path, log=lambda line: None)
    assert sorted(p.name for p in written) == sorted(_int8(t)[0].name for t in SHIPPED_GRAPHS)
    for target in SHIPPED_GRAPHS:
        shipped, shipped_sidecar = _int8(target)
        fresh = tmp_path / shipped.name
        assert sha256_file(fresh) == sha256_file(shipped), (
            f'{shipped} is not what `sgdfuse export --onnx --shipped --quantize int8` makes')
        q = export.read_onnx_sidecar(tmp_path / shipped_sidecar.name)['quantization']
        assert q['calibration']['pairs'] == note['pairs']


def test_quantize_asks_for_shipped_in_one_line(capsys):
    from sgdfuse_ros.tools.cli import main

    assert main(['export', '--onnx', '--quantize', 'int8']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--shipped' in err[0]


def test_the_int8_graphs_run_without_torch_or_onnx(tmp_path):
    """The runtime install (onnxruntime, no torch, no onnx) runs the method on its INT8 graphs."""
    from test_runtime_install import run_without_torch

    out = run_without_torch("""
        import numpy as np
        from sgdfuse_ros.fusion.methods import build_method

        rng = np.random.default_rng(0)
        ir, vis = (rng.random((96, 128), dtype=np.float32) for _ in range(2))
        method = build_method('sgdfuse', graph='int8')
        fused = method(ir, vis, (np.zeros_like(ir), np.ones_like(ir))).fused
        RESULT = {'report': method.backend_report(), 'finite': bool(np.isfinite(fused).all()),
                  'paths': [str(method.stage1.backend.path), str(method.refiner.backend.path)]}
    """, tmp_path)
    assert out['heavy'] == [] and out['finite']
    assert all(r.startswith('onnxruntime') and r.endswith('int8 graph')
               for r in out['report'].values())
    assert [Path(p).name for p in out['paths']] == [_int8('stage1')[0].name,
                                                   _int8('refiner')[0].name]
