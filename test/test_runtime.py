"""Inference runtime: ONNX export and parity, the backend registry and its errors, the TensorRT
engine cache (keys, invalidation, atomic writes), TensorRT compatibility of the graphs, the
``stage1`` method on onnxruntime, and the ``export`` / ``bench`` commands. GPU tests carry the
``gpu`` marker and skip with a reason where CUDA or TensorRT is absent."""

import gc
import json
import os
from pathlib import Path
import subprocess
import sys
import weakref

import numpy as np
import onnx
from onnx import TensorProto, helper
import pytest
import torch

from sgdfuse_ros.core.hashing import sha256_file
from sgdfuse_ros.models.export_spec import ExportSpec, module_digest
from sgdfuse_ros.models.stage1 import (Stage1Net, Stage1WithMaps, make_checkpoint, preset,
                                       stage1_spec)
from sgdfuse_ros.runtime import backends
from sgdfuse_ros.runtime import engine_cache
from sgdfuse_ros.runtime import export
from sgdfuse_ros.runtime import onnx_check
from sgdfuse_ros.runtime import ort as ort_backend
from sgdfuse_ros.runtime import tensorrt as trt_backend
from sgdfuse_ros.runtime.backends import BackendError, build_backend
from sgdfuse_ros.runtime.threads import default_threads, set_threads
from sgdfuse_ros.tools.cli import main

SIZE = (96, 128)  # H, W of the export checks: small to keep the tests fast


def _stage1_model() -> Stage1Net:
    torch.manual_seed(0)
    model = Stage1Net(preset('realtime')).eval()
    torch.nn.init.normal_(model.head.weight, std=0.05)  # a non-trivial output (head starts at 0)
    return model


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """The random stage-1 network and its checked ONNX export."""
    model = _stage1_model()
    out = tmp_path_factory.mktemp('engines')
    spec = stage1_spec(model, size=SIZE)
    res = export.export_module(Stage1WithMaps(model), spec, out, digest=module_digest(model),
                               source='random (test)')
    return model, res


def _torch_f1(model, ir, vis):
    with torch.inference_mode():
        return model(torch.from_numpy(ir)[None, None], torch.from_numpy(vis)[None, None]).numpy()


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------

def test_stage1_export_matches_torch_on_a_real_pair(exported):
    model, res = exported
    assert res.max_abs_diff <= 1e-3
    assert res.path.is_file() and res.path.suffix == '.onnx'
    meta = json.loads(res.sidecar.read_text())
    assert meta['weights_sha256'] == module_digest(model)
    assert res.path.name.startswith('stage1_' + meta['weights_sha256'][:12])
    assert meta['onnx_sha256'] == sha256_file(res.path)
    assert meta['opset'] >= 17 and meta['parity']['pair'] and meta['parity']['checked']
    assert meta['graph_passes']['fuse_pixel_unshuffle'] == 2  # both stems: one SpaceToDepth
    # dynamic height and width: another size and a real pair, against PyTorch
    ir, vis, _ = export.sample_pair(160, 224, index=3)
    be = build_backend('onnxruntime', onnx_path=res.path, reuse=False)
    out = be.run({'ir': ir[None, None], 'vis': vis[None, None]})['f1']
    assert out.shape == (1, 1, 160, 224)
    assert np.abs(out - _torch_f1(model, ir, vis)).max() <= 1e-3


def test_exported_graph_is_tensorrt_compatible(exported):
    _, res = exported
    model = onnx.load(str(res.path))
    assert onnx_check.tensorrt_problems(model) == []
    ops = onnx_check.op_histogram(model)
    assert 'SpaceToDepth' in ops and not set(ops) & onnx_check.CONTROL_FLOW_OPS
    assert set(ops) <= onnx_check.TENSORRT_OPS
    opset = [o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')][0]
    assert onnx_check.MIN_OPSET <= opset <= onnx_check.MAX_OPSET


def test_ensure_onnx_reuses_a_current_export_and_redoes_a_stale_one(exported, tmp_path):
    model, res = exported
    digest = module_digest(model)
    spec = stage1_spec(model, size=SIZE)
    path = export.ensure_onnx(Stage1WithMaps(model), spec, digest=digest, source='t',
                              out_dir=res.path.parent)
    assert path == res.path  # found by the weights' hash, not exported again
    mtime = path.stat().st_mtime_ns
    assert export.ensure_onnx(lambda: pytest.fail('no export needed'), spec, digest=digest,
                              source='t', out_dir=res.path.parent) == path
    assert path.stat().st_mtime_ns == mtime
    # a changed file is re-exported
    other = tmp_path / path.name
    other.write_bytes(path.read_bytes()[:-1] + b'\0')
    (tmp_path / res.sidecar.name).write_text(res.sidecar.read_text())
    assert export.onnx_is_current(other, tmp_path / res.sidecar.name, digest) is not None
    meta = json.loads(res.sidecar.read_text())
    meta['exporter_version'] = export.EXPORTER_VERSION - 1
    old = tmp_path / 'old.json'
    old.write_text(json.dumps(meta))
    assert 'older version' in export.onnx_is_current(path, old, digest)


def test_export_refuses_a_graph_that_differs_from_torch(tmp_path, monkeypatch):
    model = _stage1_model()
    spec = stage1_spec(model, size=SIZE)
    spec.tolerance = 0.0
    monkeypatch.setattr(export, 'parity', lambda *a, **k: 0.5)
    with pytest.raises(export.ExportError, match='differs from PyTorch'):
        export.export_module(Stage1WithMaps(model), spec, tmp_path, digest='ab' * 32,
                             source='t')
    assert not list(tmp_path.glob('*.onnx'))


# ----------------------------------------------------------------------------------------------
# Backends
# ----------------------------------------------------------------------------------------------

def test_onnxruntime_and_torch_backends_agree_on_a_real_pair(exported):
    model, res = exported
    ir, vis, _ = export.sample_pair(*SIZE, index=1)
    feeds = {'ir': ir[None, None], 'vis': vis[None, None]}
    ref = build_backend('torch', module=model, input_names=['ir', 'vis'],
                        output_names=['f1']).run(feeds)['f1']
    ort_be = build_backend('onnxruntime', onnx_path=res.path, threads=1)
    assert ort_be.input_names == ['ir', 'vis'] and ort_be.output_names == ['f1', 'maps']
    assert np.abs(ort_be.run(feeds)['f1'] - ref).max() <= 1e-3
    bound = build_backend('onnxruntime', onnx_path=res.path, threads=1, io_binding=True)
    for _ in range(2):  # first call learns the output shape, second writes into our buffer
        assert np.abs(bound(**feeds)['f1'] - ref).max() <= 1e-3
    assert 'onnxruntime' in ort_be.describe() and '1 threads' in ort_be.describe()
    nhwc = build_backend('torch', module=model, input_names=['ir', 'vis'],
                         output_names=['f1'], channels_last=True)
    assert np.abs(nhwc.run(feeds)['f1'] - ref).max() <= 1e-4


def test_onnxruntime_sessions_are_reused(exported):
    _, res = exported
    a = build_backend('onnxruntime', onnx_path=res.path, threads=1)
    b = build_backend('onnxruntime', onnx_path=res.path, threads=1)
    c = build_backend('onnxruntime', onnx_path=res.path, threads=1, graph_optimization='basic')
    assert a.session is b.session and a.session is not c.session
    d = build_backend('onnxruntime', onnx_path=res.path, threads=1, reuse=False)
    assert d.session is not a.session


def test_a_closed_backend_releases_its_session(exported):
    _, res = exported
    sessions = ort_backend.SESSIONS
    a = build_backend('onnxruntime', onnx_path=res.path, threads=1)
    b = build_backend('onnxruntime', onnx_path=res.path, threads=1)
    shared = weakref.ref(a.session)
    a.close()
    assert a.session is None and b.session is shared() and shared() in sessions  # b still uses it
    with pytest.raises(RuntimeError, match='closed'):
        a.run({'ir': np.zeros((1, 1, 8, 8), np.float32), 'vis': np.zeros((1, 1, 8, 8))})
    b.close()
    gc.collect()
    assert shared() is None and len(sessions) == 0  # the last user closed: the session is gone
    c = build_backend('onnxruntime', onnx_path=res.path, threads=1)
    own = weakref.ref(c.session)
    del c  # a backend dropped without close() releases its share too
    gc.collect()
    assert own() is None and len(sessions) == 0
    alone = build_backend('onnxruntime', onnx_path=res.path, threads=1, reuse=False)
    solo = weakref.ref(alone.session)
    alone.close()
    gc.collect()
    assert solo() is None


def test_set_threads_never_imports_torch():
    """A runtime path that sets its threads must not load PyTorch for it (hundreds of MB): the
    count goes to OMP_NUM_THREADS, which PyTorch reads if it is imported later."""
    code = ('import os, sys\n'
            'from sgdfuse_ros.runtime import set_threads\n'
            'set_threads(1)\n'
            'assert "torch" not in sys.modules, "set_threads imported torch"\n'
            'assert os.environ["OMP_NUM_THREADS"] == "1"\n'
            'import torch\n'
            'assert torch.get_num_threads() == 1, torch.get_num_threads()\n')
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    done = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_set_threads_is_the_one_process_wide_setting(exported):
    _, res = exported
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1 and default_threads() == 1
        assert build_backend('onnxruntime', onnx_path=res.path).threads == 1
        assert build_backend('onnxruntime', onnx_path=res.path, threads=2).threads == 2
        model = _stage1_model()
        be = build_backend('torch', module=model, input_names=['ir', 'vis'],
                           output_names=['f1'])
        assert torch.get_num_threads() == 1 and be.summary() == 'torch (cpu, 1 threads)'
        with pytest.raises(TypeError, match='unknown options'):  # no per-backend torch threads
            build_backend('torch', module=model, input_names=['ir', 'vis'],
                          output_names=['f1'], threads=2)
        with pytest.raises(ValueError, match='positive integer'):
            set_threads(0)
    finally:
        set_threads(None)
        torch.set_num_threads(before)
    assert default_threads() == backends.available_cores()


def test_backend_registry_and_clear_errors(exported, tmp_path):
    _, res = exported
    assert set(backends.backend_names()) == {'torch', 'onnxruntime', 'tensorrt'}
    with pytest.raises(ValueError, match='unknown backend'):
        build_backend('openvino', onnx_path=res.path)
    with pytest.raises(BackendError, match='no ONNX file'):
        build_backend('onnxruntime', onnx_path=tmp_path / 'missing.onnx')
    with pytest.raises(TypeError, match='unknown options'):
        build_backend('onnxruntime', onnx_path=res.path, precsion='fp16')
    with pytest.raises(ValueError, match='needs a torch module'):
        build_backend('torch')
    with pytest.raises(ValueError, match='inputs'):
        build_backend('onnxruntime', onnx_path=res.path).run({'ir': np.zeros((1, 1, 8, 8))})
    import onnxruntime
    if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
        with pytest.raises(BackendError, match="provider 'cuda' is not present"):
            build_backend('onnxruntime', onnx_path=res.path, providers=['cuda'])
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not a model')
    with pytest.raises(BackendError, match='cannot load'):
        build_backend('onnxruntime', onnx_path=bad)


def test_tensorrt_backend_says_why_it_cannot_load(exported):
    _, res = exported
    reason = backends.unavailable_reason('tensorrt')
    if reason is None:
        pytest.skip('TensorRT and CUDA are present: the GPU tests cover this backend')
    with pytest.raises(BackendError) as err:
        build_backend('tensorrt', onnx_path=res.path)
    msg = str(err.value)
    assert "backend 'tensorrt' cannot load" in msg
    assert 'TensorRT is not installed' in msg or 'no CUDA device' in msg
    assert backends.default_backend() in ('onnxruntime', 'torch')


def test_fallback_to_onnxruntime(exported):
    _, res = exported
    warnings = []

    def build(name):
        if name == 'tensorrt':
            raise BackendError('tensorrt', 'no CUDA device')
        return build_backend(name, onnx_path=res.path, threads=1)

    be = backends.build_with_fallback('tensorrt', build, warn=warnings.append)
    assert be.name == 'onnxruntime'
    assert 'no CUDA device' in warnings[0] and "falling back to 'onnxruntime'" in warnings[0]
    with pytest.raises(BackendError):
        backends.build_with_fallback('tensorrt', build, fallback=None)


# ----------------------------------------------------------------------------------------------
# Engine cache (no TensorRT needed)
# ----------------------------------------------------------------------------------------------

PROFILE = {'ir': ((1, 1, 240, 320), (1, 1, 480, 640), (1, 1, 720, 960)),
           'vis': ((1, 1, 240, 320), (1, 1, 480, 640), (1, 1, 720, 960))}


def _key(**changes):
    args = dict(model='stage1', onnx_sha256='a' * 64, profile=PROFILE, precision='fp16',
                compute_capability=(8, 7), trt_version='10.3.0')
    args.update(changes)
    return engine_cache.EngineKey.create(**args)


def test_engine_key_names_the_file_and_round_trips():
    key = _key()
    assert key.filename == 'stage1_480x640_fp16_sm87_trt10.3.0.engine'
    assert _key(compute_capability='8.6', precision='fp32').filename == \
        'stage1_480x640_fp32_sm86_trt10.3.0.engine'
    assert engine_cache.EngineKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key
    assert key.differences(_key(trt_version='10.4.0')) == ["trt_version is '10.4.0', want "
                                                           "'10.3.0'"]
    with pytest.raises(ValueError, match='precision'):
        _key(precision='int4')
    engine, sidecar = engine_cache.engine_paths('engines', key)
    assert engine.parent.name == 'engines' and sidecar.suffix == '.json'


def test_profile_around_the_working_resolution():
    lo, opt, hi = engine_cache.profile_around((1, 1, 480, 640), multiple=8)
    assert opt == (1, 1, 480, 640) and lo == (1, 1, 240, 320) and hi == (1, 1, 720, 960)
    lo, _, hi = engine_cache.profile_around((1, 1, 100, 100), multiple=16, low=0.1, high=1.01)
    assert lo == (1, 1, 16, 16) and hi == (1, 1, 112, 112)
    assert all(d % 16 == 0 for d in lo[2:] + hi[2:])


def test_engine_cache_builds_reuses_and_invalidates(tmp_path):
    calls = []

    def builder(tag):
        def build():
            calls.append(tag)
            return f'engine-{tag}'.encode()
        return build

    key = _key()
    path = engine_cache.engine_paths(tmp_path, key)[0]
    p, built = engine_cache.get_or_build(path, key, builder(1))
    assert built and p == path and path.read_bytes() == b'engine-1'
    assert engine_cache.check_engine(path, key) is None
    _, built = engine_cache.get_or_build(path, key, builder(2))
    assert not built and calls == [1]  # cached
    _, built = engine_cache.get_or_build(path, key, builder(3), force=True)
    assert built and path.read_bytes() == b'engine-3'  # force_engine_update

    for change, reason in [({'onnx_sha256': 'b' * 64}, 'onnx_sha256'),
                           ({'trt_version': '10.4.0'}, 'trt_version'),
                           ({'compute_capability': (8, 6)}, 'compute_capability'),
                           ({'precision': 'fp32'}, 'precision'),
                           ({'profile': {k: (v[0], v[0], v[2]) for k, v in PROFILE.items()}},
                            'input shapes')]:
        other = _key(**change)
        msg = engine_cache.check_engine(path, other)
        assert msg is not None and reason in msg, (change, msg)
        _, built = engine_cache.get_or_build(path, other, builder(reason))
        assert built and engine_cache.check_engine(path, other) is None
        engine_cache.get_or_build(path, key, builder('back'))  # restore for the next case

    path.write_bytes(b'engine-xxxx')  # same size as b'engine-back', other bytes
    assert 'hash' in engine_cache.check_engine(path, key)
    path.write_bytes(b'x')
    assert 'size' in engine_cache.check_engine(path, key)
    path.with_suffix('.json').write_text('{"format": "something else"}')
    assert 'unreadable sidecar' in engine_cache.check_engine(path, key)
    path.with_suffix('.json').unlink()
    assert 'no sidecar' in engine_cache.check_engine(path, key)
    _, built = engine_cache.get_or_build(path, key, builder('final'))
    assert built
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]  # no temp files left


def test_failed_build_keeps_no_half_engine(tmp_path):
    key = _key()
    path = engine_cache.engine_paths(tmp_path, key)[0]
    engine_cache.get_or_build(path, key, lambda: b'good')

    def broken():
        raise BackendError('tensorrt', 'build failed')

    with pytest.raises(BackendError):
        engine_cache.get_or_build(path, _key(trt_version='10.9'), broken)
    assert path.read_bytes() == b'good'  # the old engine is untouched...
    assert engine_cache.check_engine(path, key) is None  # ...and still valid for its key


# ----------------------------------------------------------------------------------------------
# TensorRT compatibility checker
# ----------------------------------------------------------------------------------------------

def _model(nodes, inputs, outputs, opset=17, inits=(), domains=()):
    graph = helper.make_graph(nodes, 'g', inputs, outputs, list(inits))
    opsets = [helper.make_opsetid('', opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets)


def test_tensorrt_checker_flags_control_flow_unsupported_ops_and_opsets():
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 1, 4, 4])
    ok = _model([helper.make_node('Relu', ['x'], ['y'])], [x], [y])
    assert onnx_check.tensorrt_problems(ok) == []
    assert any('opset 13' in p for p in onnx_check.tensorrt_problems(
        _model([helper.make_node('Relu', ['x'], ['y'])], [x], [y], opset=13)))

    cond = helper.make_tensor_value_info('c', TensorProto.BOOL, [])
    z = helper.make_tensor_value_info('z', TensorProto.FLOAT, [1, 1, 4, 4])
    branch = helper.make_graph([helper.make_node('Identity', ['x'], ['z'])], 'b', [], [z])
    if_node = helper.make_node('If', ['c'], ['y'], then_branch=branch, else_branch=branch)
    probs = onnx_check.tensorrt_problems(_model([if_node], [x, cond], [y]))
    assert any('dynamic control flow: If' in p for p in probs)

    nz = _model([helper.make_node('NonZero', ['x'], ['y'])], [x], [y])
    assert any('NonZero' in p for p in onnx_check.tensorrt_problems(nz))

    custom = _model([helper.make_node('Gelu', ['x'], ['y'], domain='com.microsoft')], [x], [y],
                    domains=['com.microsoft'])
    probs = onnx_check.tensorrt_problems(custom)
    assert any('custom operator domains' in p for p in probs)

    w = helper.make_tensor_value_info('w', TensorProto.FLOAT, [1, 1, 3, 3])
    conv = _model([helper.make_node('Conv', ['x', 'w'], ['y'], pads=[1, 1, 1, 1])], [x, w], [y])
    assert any('weights are not a constant' in p for p in onnx_check.tensorrt_problems(conv))


# ----------------------------------------------------------------------------------------------
# The stage-1 method on a runtime backend, and the commands
# ----------------------------------------------------------------------------------------------

def test_stage1_method_runs_on_onnxruntime(tmp_path):
    from sgdfuse_ros.fusion.stage1 import Stage1Method

    weights = tmp_path / 'stage1.pt'
    torch.save(make_checkpoint(_stage1_model()), weights)
    engines = tmp_path / 'engines'
    ir, vis, _ = export.sample_pair(101, 133, index=2)  # not a multiple of 8: padded
    ref = Stage1Method(weights=weights).run(ir, vis)
    method = Stage1Method(weights=weights, backend='onnxruntime', engines_dir=engines,
                          threads=1)
    out = method(ir, vis)
    assert out.fused.shape == ir.shape and 'stage1' in out.timings
    assert np.abs(out.fused - ref).max() <= 1e-4
    onnx_files = list(engines.glob('stage1_*.onnx'))
    assert len(onnx_files) == 1  # exported on first use, keyed by the weights' hash
    assert onnx_files[0].name.startswith('stage1_' + sha256_file(weights)[:12])
    fb = Stage1Method(weights=weights, backend='tensorrt', engines_dir=engines, threads=1,
                      fallback='onnxruntime')
    if fb.backend.name == 'onnxruntime':  # no TensorRT here: it fell back, with the same file
        assert np.abs(fb.run(ir, vis) - ref).max() <= 1e-4
        assert len(list(engines.glob('stage1_*.onnx'))) == 1


class _Unloadable(backends.Backend):
    """A backend that can never load here (registered through the public registry)."""

    name = 'unloadable'

    def __init__(self, onnx_path, **options):
        raise BackendError('unloadable', 'needs hardware this machine lacks')

    def run(self, inputs):  # pragma: no cover - never built
        raise AssertionError


def test_backend_report_says_what_runs_and_why_it_fell_back(tmp_path, monkeypatch, caplog):
    from sgdfuse_ros.fusion.methods import build_method
    from sgdfuse_ros.fusion.stage1 import Stage1Method

    weights = tmp_path / 'stage1.pt'
    torch.save(make_checkpoint(_stage1_model()), weights)
    monkeypatch.setitem(backends.BACKENDS, 'unloadable', _Unloadable)
    forced = Stage1Method(weights=weights, backend='unloadable', fallback='onnxruntime',
                          engines_dir=tmp_path, threads=1)
    line = forced.backend_report()['stage1']
    assert line == ('onnxruntime (CPUExecutionProvider, 1 threads); fallback: unloadable '
                    'unavailable: needs hardware this machine lacks')
    assert "falling back to 'onnxruntime'" in caplog.text
    to_torch = Stage1Method(weights=weights, backend='unloadable', fallback='torch',
                            engines_dir=tmp_path)
    assert to_torch.backend_report()['stage1'].startswith('torch (cpu, ')
    assert 'fallback: unloadable unavailable: needs hardware' in \
        to_torch.backend_report()['stage1']
    trt_reason = backends.unavailable_reason('tensorrt')
    if trt_reason is not None:  # a real fallback on a machine without TensorRT
        real = Stage1Method(weights=weights, backend='tensorrt', fallback='onnxruntime',
                            engines_dir=tmp_path, threads=1)
        assert real.backend_report()['stage1'].endswith(
            f'fallback: tensorrt unavailable: {trt_reason}')
    plain = Stage1Method(weights=weights, backend='torch')
    assert plain.backend_report() == {'stage1': f'torch (cpu, {torch.get_num_threads()} threads)'}
    assert build_method('laplacian').backend_report() == {}
    assert build_method('max').backend_report() == {}


def test_registries_import_no_heavy_package():
    """The method registry (all methods listed, their availability checked), the runtime and the
    export specs import without torch, onnxruntime or tensorrt."""
    import subprocess
    import sys

    code = ('import sys\n'
            'from sgdfuse_ros.fusion import methods\n'
            'import sgdfuse_ros.runtime, sgdfuse_ros.models.export_spec\n'
            'import sgdfuse_ros.models.weights, sgdfuse_ros.masks.sam_export\n'
            'assert methods.available_methods() and "sgdfuse" in methods.method_names()\n'
            'print(sorted(m for m in ("torch", "onnxruntime", "tensorrt") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == '[]'


def test_default_method_here_runs_both_networks_on_onnxruntime():
    from sgdfuse_ros.fusion.methods import build_method

    if backends.default_backend() != 'onnxruntime':
        pytest.skip(f'the default backend here is {backends.default_backend()}')
    method = build_method('auto')
    report = method.backend_report()
    assert method.name == 'sgdfuse' and set(report) == {'stage1', 'refiner'}
    for net, line in report.items():
        assert line.startswith('onnxruntime (CPUExecutionProvider, '), (net, line)
        assert 'fallback' not in line


def test_export_and_bench_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('SGDFUSE_ENGINES', str(tmp_path / 'engines'))
    assert main(['export', '--onnx', '--random', '--models', 'stage1', '--size', '128x96',
                 '--out', str(tmp_path / 'out')]) == 0
    out = capsys.readouterr().out
    assert 'stage1' in out and 'max |onnx - torch|' in out and 'TensorRT-compatible' in out
    assert len(list((tmp_path / 'out').glob('stage1_*.onnx'))) == 1
    assert main(['export', '--onnx', '--models', 'nope']) == 2

    assert main(['bench', '--random', '--method', 'stage1', '--size', '160x128', '--frames', '3',
                 '--warmup', '1', '--threads', '1', '--json']) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ('stage1_ms', 'masks_ms', 'refiner_ms', 'total_ms', 'fps', 'peak_rss_mb',
                'backend', 'size'):
        assert key in res
    assert res['backend'] == 'onnxruntime' and res['size'] == '160x128'
    assert res['stage1_ms'] > 0 and res['total_ms'] >= res['stage1_ms'] and res['fps'] > 0
    assert main(['bench', '--size', 'big']) == 2


# ----------------------------------------------------------------------------------------------
# GPU: TensorRT and the CUDA execution provider
# ----------------------------------------------------------------------------------------------

def _need_tensorrt():
    reason = backends.unavailable_reason('tensorrt')
    if reason:
        pytest.skip(f'TensorRT backend unavailable here: {reason}')


@pytest.mark.gpu
@pytest.mark.parametrize('precision,tol', [('fp32', 1e-3), ('fp16', 2e-2)])
def test_tensorrt_engine_matches_onnxruntime_and_is_cached(exported, tmp_path, precision, tol):
    _need_tensorrt()
    model, res = exported
    ir, vis, _ = export.sample_pair(*SIZE, index=0)
    feeds = {'ir': ir[None, None], 'vis': vis[None, None]}
    ref = build_backend('onnxruntime', onnx_path=res.path).run(feeds)['f1']
    shapes = {'ir': (1, 1) + SIZE, 'vis': (1, 1) + SIZE}
    be = build_backend('tensorrt', onnx_path=res.path, input_shapes=shapes, multiple=8,
                       precision=precision, engines_dir=tmp_path, model_name='stage1')
    assert np.abs(be.run(feeds)['f1'] - ref).max() <= tol
    name = be.engine_path.name
    assert name.startswith(f'stage1_{SIZE[0]}x{SIZE[1]}_{precision}_sm') and '_trt' in name
    assert be.engine_path.with_suffix('.json').is_file()
    mtime = be.engine_path.stat().st_mtime_ns
    again = build_backend('tensorrt', onnx_path=res.path, input_shapes=shapes, multiple=8,
                          precision=precision, engines_dir=tmp_path, model_name='stage1')
    assert again.engine_path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    forced = build_backend('tensorrt', onnx_path=res.path, input_shapes=shapes, multiple=8,
                           precision=precision, engines_dir=tmp_path, model_name='stage1',
                           force_engine_update=True)
    assert forced.engine_path.stat().st_mtime_ns != mtime
    # inside the profile: another size runs on the same engine
    ir2, vis2, _ = export.sample_pair(SIZE[0] + 16, SIZE[1] - 16, index=1)
    out = be.run({'ir': ir2[None, None], 'vis': vis2[None, None]})['f1']
    assert out.shape == (1, 1, SIZE[0] + 16, SIZE[1] - 16)
    # a prebuilt engine without its ONNX: fine while it matches, an error when stale
    pre = build_backend('tensorrt', engine_file_path=be.engine_path, precision=precision)
    assert np.abs(pre.run(feeds)['f1'] - ref).max() <= tol
    sidecar = be.engine_path.with_suffix('.json')
    meta = json.loads(sidecar.read_text())
    meta['key']['trt_version'] = '0.0.1'
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(BackendError, match='stale engine'):
        build_backend('tensorrt', engine_file_path=be.engine_path, precision=precision)


@pytest.mark.gpu
def test_tensorrt_engine_built_at_the_first_frame(exported, tmp_path):
    _need_tensorrt()
    _, res = exported
    be = build_backend('tensorrt', onnx_path=res.path, multiple=8, engines_dir=tmp_path)
    assert be.engine is None  # dynamic H/W and no working size yet
    ir, vis, _ = export.sample_pair(*SIZE)
    be.run({'ir': ir[None, None], 'vis': vis[None, None]})
    assert be.engine_path.name.startswith(f'{res.path.stem}_{SIZE[0]}x{SIZE[1]}_fp16')


@pytest.mark.gpu
def test_onnxruntime_cuda_provider(exported):
    import onnxruntime
    if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
        pytest.skip('onnxruntime has no CUDA execution provider here (install onnxruntime-gpu)')
    if not torch.cuda.is_available():
        pytest.skip('no CUDA device')
    model, res = exported
    ir, vis, _ = export.sample_pair(*SIZE)
    be = build_backend('onnxruntime', onnx_path=res.path, providers=['cuda'])
    assert be.io_binding and be.providers[0] == 'CUDAExecutionProvider'
    out = be.run({'ir': ir[None, None], 'vis': vis[None, None]})['f1']
    assert np.abs(out - _torch_f1(model, ir, vis)).max() <= 1e-3


@pytest.fixture(autouse=True)
def _fresh_sessions():
    yield
    backends.clear_session_cache()


def test_default_engines_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv('SGDFUSE_ENGINES', str(tmp_path))
    assert backends.default_engines_dir() == Path(tmp_path)


# ----------------------------------------------------------------------------------------------
# The TensorRT code paths without TensorRT: a recording stand-in for its Python API
# ----------------------------------------------------------------------------------------------

class _FakeTRT:
    """Just enough of the TensorRT 10 builder API to check what the backend asks of it."""

    __version__ = '10.0.0-fake'

    class Logger:
        WARNING = 'warning'

        def __init__(self, level):
            self.level = level

    class MemoryPoolType:
        WORKSPACE = 'workspace'

    class BuilderFlag:
        FP16 = 'fp16'

    def __init__(self, inputs, parse_ok=True, build_ok=True):
        self.calls = []
        fake = self

        class Tensor:
            def __init__(self, name):
                self.name = name

        class Network:
            num_inputs = len(inputs)

            def get_input(self, i):
                return Tensor(inputs[i])

        class Parser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network, logger):
                fake.calls.append(('parser',))

            def parse_from_file(self, path):
                fake.calls.append(('parse', Path(path).name))
                return parse_ok

            def get_error(self, i):
                return 'unsupported operator NonZero'

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                fake.calls.append(('set_shape', name, lo, opt, hi))

        class Config:
            builder_optimization_level = 3

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(('pool', pool, size))

            def set_flag(self, flag):
                fake.calls.append(('flag', flag))

            def add_optimization_profile(self, profile):
                fake.calls.append(('add_profile',))

        class Builder:
            platform_has_fast_fp16 = True

            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(('network', flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(('build',))
                return b'serialized-engine' if build_ok else None

        self.Builder, self.OnnxParser = Builder, Parser


def test_engine_build_uses_the_tensorrt10_builder_api(exported):
    _, res = exported
    profile = {'ir': PROFILE['ir'], 'vis': PROFILE['vis']}
    trt = _FakeTRT(['ir', 'vis'])
    data = trt_backend.build_engine_bytes(trt, res.path, profile, precision='fp16',
                                       workspace_mb=256)
    assert data == b'serialized-engine'
    assert ('network', 0) in trt.calls  # explicit batch: the only mode in TensorRT 10
    assert ('parse', res.path.name) in trt.calls and ('flag', 'fp16') in trt.calls
    assert ('pool', 'workspace', 256 << 20) in trt.calls
    assert ('set_shape', 'ir') + PROFILE['ir'] in trt.calls
    assert ('set_shape', 'vis') + PROFILE['vis'] in trt.calls
    trt32 = _FakeTRT(['ir', 'vis'])
    trt_backend.build_engine_bytes(trt32, res.path, profile, precision='fp32')
    assert not [c for c in trt32.calls if c[0] == 'flag']
    with pytest.raises(BackendError, match='rejected .*NonZero'):
        trt_backend.build_engine_bytes(_FakeTRT(['ir', 'vis'], parse_ok=False), res.path, profile,
                                    precision='fp16')
    with pytest.raises(BackendError, match='building the engine .* failed'):
        trt_backend.build_engine_bytes(_FakeTRT(['ir', 'vis'], build_ok=False), res.path, profile,
                                    precision='fp16')
    with pytest.raises(BackendError, match="no shapes for input 'vis'"):
        trt_backend.build_engine_bytes(_FakeTRT(['ir', 'vis']), res.path, {'ir': PROFILE['ir']},
                                    precision='fp16')


def test_tensorrt_profile_follows_the_working_resolution(exported):
    _, res = exported
    be = object.__new__(trt_backend.TensorRTBackend)  # the shape logic needs no GPU
    be.onnx_path, be.multiple, be.profile_range = res.path, 8, (0.5, 1.5)
    be._declared = trt_backend.onnx_input_shapes(res.path)
    assert be._declared == {'ir': [1, 1, 'height', 'width'], 'vis': [1, 1, 'height', 'width']}
    assert trt_backend.onnx_output_names(res.path) == ['f1', 'maps']
    shapes = {'ir': (1, 1, 480, 640), 'vis': (1, 1, 480, 640)}
    prof = be.profile_for(shapes)
    assert prof['ir'] == ((1, 1, 240, 320), (1, 1, 480, 640), (1, 1, 720, 960))
    be._profile, be.engine = prof, object()
    assert be._fits(shapes) and be._fits({'ir': (1, 1, 256, 328), 'vis': (1, 1, 720, 960)})
    assert not be._fits({'ir': (1, 1, 1080, 1920), 'vis': (1, 1, 1080, 1920)})
    with pytest.raises(BackendError, match='dynamic dimensions'):
        be.profile_for({'ir': (1, 1, 480, 640)})
    with pytest.raises(ValueError, match='does not fit'):
        be.profile_for({'ir': (1, 3, 480, 640), 'vis': (1, 3, 480, 640)})
    key = engine_cache.EngineKey.create('stage1', 'c' * 64, prof, 'fp16', (8, 7), '10.3.0')
    assert key.filename == 'stage1_480x640_fp16_sm87_trt10.3.0.engine'


def test_prebuilt_engine_staleness_is_explained(tmp_path):
    key = _key()
    path = engine_cache.engine_paths(tmp_path, key)[0]
    engine_cache.write_engine(path, key, b'engine')
    check = trt_backend.TensorRTBackend._check_prebuilt
    assert check(path, 'fp16', (8, 7), '10.3.0') is None
    msg = check(path, 'fp32', (8, 9), '10.5.1')
    assert 'built by TensorRT 10.3.0, this is 10.5.1' in msg
    assert 'sm87, this GPU is sm89' in msg and 'precision fp16' in msg
    assert check(tmp_path / 'none.engine', 'fp16', (8, 7), '10.3.0') == 'no such file'
    path.write_bytes(b'enGine')
    assert 'does not match its sidecar' in check(path, 'fp16', (8, 7), '10.3.0')


def test_bench_variants_time_every_layout_choice():
    from sgdfuse_ros.tools.bench_variants import format_variants, run_variants

    rows = run_variants(size=(128, 96), frames=2, random_weights=True, threads=1)
    names = [r['variant'] for r in rows]
    assert any('channels_last' in n for n in names) and any('INT8' in n for n in names)
    assert any('raw export' in n for n in names) and any('extended' in n for n in names)
    for r in rows:
        assert r['median_ms'] > 0
        assert r['max_abs_diff'] <= (5e-2 if 'INT8' in r['variant'] else 1e-3), r
    assert 'vs torch' in format_variants(rows, (128, 96))


def test_mask_encoder_and_decoder_export(tmp_path):
    from sgdfuse_ros.masks.sam import _lite_medsam_unavailable

    reason = _lite_medsam_unavailable()
    if reason:
        pytest.skip(f'LiteMedSAM unavailable: {reason}')
    from sgdfuse_ros.tools.export import TARGETS

    items = TARGETS['masks']({'mask_input_size': 64})
    names = [i.spec.name for i in items]
    assert names[0] == 'mask_encoder_lite_medsam_64'
    assert names[1].startswith('mask_decoder_lite_medsam_64')
    for item in items:
        res = export.export_module(item.module, item.spec, tmp_path, digest=item.digest,
                                   source=item.source)
        assert res.max_abs_diff <= item.spec.tolerance and res.tensorrt_problems == []
        meta = json.loads(res.sidecar.read_text())
        assert meta['weights_sha256'] == sha256_file(item.source)
        assert meta['parity']['pair']  # checked on a real frame
    dec = build_backend('onnxruntime', onnx_path=res.path)
    ir, vis, _ = export.sample_pair(64, 64)
    emb, boxes = items[1].spec.real_inputs(ir, vis, 64, 64)
    out = dec.run({'embedding': emb.numpy(), 'boxes': boxes.numpy()})
    n = len(boxes)
    assert out['logits'].shape == (n, 1, 64, 64) and out['iou'].shape == (n, 1)


# ----------------------------------------------------------------------------------------------
# K-step sampler: one graph vs one step called K times (a toy step until the refiner lands)
# ----------------------------------------------------------------------------------------------

class _ToyStep(torch.nn.Module):
    """x, cond (F1 + two masks), t -> next x: a timestep-scaled residual at 1/4 resolution."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(16 * 4, 16, 3, padding=1)

    def forward(self, x, cond, t):
        h = torch.nn.functional.pixel_unshuffle(torch.cat([x, cond], 1), 4)
        scale = torch.sin(t.float() / 100.0).reshape(1, 1, 1, 1)
        r = torch.nn.functional.pixel_shuffle(self.conv(h), 4)
        return x + scale * r[:, :1]


def test_unrolled_sampler_and_step_loop_agree(tmp_path):
    torch.manual_seed(0)
    step = _ToyStep().eval()
    timesteps = [999, 749, 499, 249]
    dyn = {2: 'height', 3: 'width'}

    def make(h, w):
        return torch.rand(1, 1, h, w), torch.rand(1, 3, h, w)

    unrolled = export.unrolled_sampler(step, timesteps)
    spec_k = ExportSpec('toy_refiner', ('x', 'cond'), ('out',), make,
                               dynamic_axes={'x': dyn, 'cond': dyn, 'out': dyn}, size=(64, 96))
    res_k = export.export_module(unrolled, spec_k, tmp_path, digest='e' * 64, source='toy')
    spec_1 = ExportSpec('toy_refiner_step', ('x', 'cond', 't'), ('out',),
                               lambda h, w: make(h, w) + (torch.tensor([999]),),
                               dynamic_axes={'x': dyn, 'cond': dyn, 'out': dyn}, size=(64, 96))
    res_1 = export.export_module(step, spec_1, tmp_path, digest='e' * 64, source='toy')
    assert res_k.max_abs_diff <= 1e-3 and res_1.max_abs_diff <= 1e-3
    assert res_k.tensorrt_problems == [] and res_1.tensorrt_problems == []
    x, cond = (t.numpy() for t in make(64, 96))
    one_graph = build_backend('onnxruntime', onnx_path=res_k.path).run({'x': x, 'cond': cond})
    loop = export.StepLoop(build_backend('onnxruntime', onnx_path=res_1.path), timesteps)
    assert loop.input_names == ['x', 'cond']
    k_calls = loop.run({'x': x, 'cond': cond})
    with torch.inference_mode():
        ref = unrolled(torch.from_numpy(x), torch.from_numpy(cond)).numpy()
    assert np.abs(one_graph['out'] - ref).max() <= 1e-4
    assert np.abs(k_calls['out'] - ref).max() <= 1e-4


def test_refiner_sampler_on_onnxruntime(tmp_path):
    from sgdfuse_ros.models.diffusion import Diffusion, Sampler
    from sgdfuse_ros.models.refiner import RefinerNet, preset as refiner_preset
    from sgdfuse_ros.fusion.sgdfuse import refiner_backend, run_refiner

    torch.manual_seed(0)
    net = RefinerNet(refiner_preset('tiny')).eval()
    with torch.no_grad():  # the output convolution starts at zero: make the output non-trivial
        for p in net.parameters():
            if p.dim() > 1 and not p.abs().sum():
                torch.nn.init.normal_(p, std=0.05)
    diffusion = Diffusion()
    m = net.multiple
    ir, vis, _ = export.sample_pair(3 * m, 5 * m, index=4)
    f1 = 0.5 * (ir + vis)
    masks = np.stack([ir > 0.5, vis > 0.5]).astype(np.float32)
    meta = {'sampler': {'steps': 2, 't_start': 500, 'start': 'f1'},
            'diffusion': diffusion.describe()}
    be = refiner_backend('onnxruntime', net, meta, engines_dir=tmp_path, threads=1,
                         export_size=(2 * m, 2 * m))
    out = run_refiner(be, f1[None], masks, ir[None], vis[None])
    with torch.inference_mode():
        ref = Sampler(net, diffusion, steps=2, t_start=500)(
            *(torch.from_numpy(np.ascontiguousarray(a, np.float32))[None]
              for a in (f1[None], masks, ir[None], vis[None])))[0].numpy()
    assert out.shape == (1, 3 * m, 5 * m) and 0.0 <= out.min() and out.max() <= 1.0
    assert np.abs(out - ref).max() <= 1e-3 and np.abs(out - f1).max() > 1e-3
    assert list(tmp_path.glob('refiner_k2_t500_*.onnx'))


def test_bench_full_method_with_a_concurrent_mask_worker(tmp_path, monkeypatch):
    from sgdfuse_ros.tools.bench import format_table, run_bench

    monkeypatch.setenv('SGDFUSE_ENGINES', str(tmp_path))
    res = run_bench(size=(160, 128), method='sgdfuse', random_weights=True, frames=4, warmup=1,
                    threads=1, mask_worker='saliency', mask_frames=1)
    assert res['method'] == 'sgdfuse' and res['refiner_ms'] > 0 and res['masks_ms'] is not None
    assert res['mask_worker'] == 'saliency' and res['mask_alone_ms'] > 0
    assert 'onnxruntime' in res['refiner_detail'] and 'onnxruntime' in res['backend_detail']
    assert not list(tmp_path.glob('*.onnx'))  # the graphs shipped with the weights ran
    assert 'refiner' in format_table(res)


def test_pixel_unshuffle_pass_on_several_channels(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3 * 16 + 1, 8, 1)

        def forward(self, a, b):
            x = torch.cat([a, b, a * b], 1)
            y = torch.cat([torch.nn.functional.pixel_unshuffle(x, 4),
                           torch.nn.functional.avg_pool2d(a, 4)], 1)
            return self.conv(y)

    torch.manual_seed(0)
    net = Net().eval()
    spec = ExportSpec('toy_unshuffle', ('a', 'b'), ('y',),
                             lambda h, w: (torch.rand(1, 1, h, w), torch.rand(1, 1, h, w)),
                             lambda ir, vis, h, w: (torch.from_numpy(ir)[None, None],
                                                    torch.from_numpy(vis)[None, None]),
                             dynamic_axes={'a': {2: 'h', 3: 'w'}, 'b': {2: 'h', 3: 'w'}},
                             size=(64, 96))
    res = export.export_module(net, spec, tmp_path, digest='c' * 64, source='toy')
    assert res.passes['fuse_pixel_unshuffle'] == 1 and res.max_abs_diff <= 1e-5
    ops = onnx_check.op_histogram(res.path)
    assert 'SpaceToDepth' in ops and 'Gather' in ops and 'Transpose' not in ops
