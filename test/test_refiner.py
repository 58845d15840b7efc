"""The refiner (stage 2): the diffusion schedule, the sampler's step count, the mask-guided loss,
the network's shapes, a short teacher run that lowers the loss, distillation and resume, the
registered ``sgdfuse`` method, ONNX export, the ablation helpers."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sgdfuse_ros.core import imaging
from sgdfuse_ros.models.diffusion import (DenoiseStep, Diffusion, Sampler, fixed_noise,
                                          noise_tile, tiled_noise, to_model)
from sgdfuse_ros.models.refiner import (PRESETS, RefinerConfig, RefinerNet, build_condition,
                                        count_params, gflops_per_step, load_refiner,
                                        make_checkpoint, preset)
from sgdfuse_ros.models.stage1 import Stage1Config, Stage1Net
from sgdfuse_ros.models.stage1 import make_checkpoint as stage1_checkpoint
from sgdfuse_ros.training import losses as s1losses
from sgdfuse_ros.training import refiner_losses as rl
from sgdfuse_ros.training.refiner import train
from sgdfuse_ros.training.refiner_config import PRESET_NAMES, RefinerTrainConfig

TINY = preset('tiny')


def _randomised(net: RefinerNet, std: float = 0.3) -> RefinerNet:
    """Leave the identity-initialised output layer so that the output depends on the input."""
    torch.manual_seed(0)
    for p in net.head.out.parameters():
        torch.nn.init.normal_(p, std=std)
    return net.eval()


def _inputs(b=2, h=32, w=48, c=1):
    g = torch.Generator().manual_seed(1)
    f1, ir, vis = (torch.rand(b, c, h, w, generator=g) for _ in range(3))
    masks = torch.rand(b, 2, h, w, generator=g)
    return f1, masks, ir, vis


# ----------------------------------------------------------------------------------------------
# Schedule and sampler
# ----------------------------------------------------------------------------------------------

def test_linear_schedule():
    d = Diffusion()
    assert d.T == 1000
    assert float(d.betas[0]) == pytest.approx(1e-6) and float(d.betas[-1]) == pytest.approx(1e-2)
    steps = d.betas[1:] - d.betas[:-1]
    assert torch.allclose(steps, torch.full_like(steps, (1e-2 - 1e-6) / 999), atol=1e-9)
    abar = d.alphas_cumprod
    assert bool((abar[1:] < abar[:-1]).all())
    assert float(d.abar(-1)) == 1.0 and float(d.abar(0)) == pytest.approx(1 - 1e-6)
    assert float(d.abar(999)) == pytest.approx(np.prod(1 - np.linspace(1e-6, 1e-2, 1000)),
                                               rel=1e-4)
    assert float(d.abar(999)) < 0.01  # x_999 is (almost) pure noise
    # Forward process: mean sqrt(abar) x0, variance 1 - abar.
    x0 = torch.full((1, 1, 256, 256), 0.5)
    xt = d.q_sample(x0, 500, torch.randn(1, 1, 256, 256, generator=torch.Generator()
                                         .manual_seed(0)))
    a = float(d.abar(500))
    assert float(xt.mean()) == pytest.approx(0.5 * a ** 0.5, abs=0.01)
    assert float(xt.std()) == pytest.approx((1 - a) ** 0.5, abs=0.01)
    with pytest.raises(ValueError):
        Diffusion(beta_start=0.1, beta_end=0.01)


def test_timesteps():
    d = Diffusion()
    assert d.timesteps(1) == [999]
    assert d.timesteps(2) == [999, 500]
    assert d.timesteps(4, 500) == [500, 375, 250, 125]
    ts = d.timesteps(60)
    assert len(ts) == 60 and len(set(ts)) == 60 and ts == sorted(ts, reverse=True)
    with pytest.raises(ValueError):
        d.timesteps(0)
    with pytest.raises(ValueError):
        d.timesteps(5, 2)  # not 5 distinct steps below t=2


@pytest.mark.parametrize('steps', [1, 2, 4, 60])
def test_sampler_calls_the_network_once_per_step(steps):
    d = Diffusion()
    net = _randomised(RefinerNet(TINY))
    f1, masks, ir, vis = _inputs()
    cond = build_condition(f1, masks, ir, vis)
    seen = []

    def denoise(x, c, t):
        seen.append(int(t[0]))
        return net(x, c, t)

    with torch.no_grad():
        out = d.sample(denoise, cond, f1, steps=steps)
    assert seen == d.timesteps(steps)
    assert out.shape == f1.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    # The one-graph module does the same computation.
    sampler = Sampler(net, d, steps=steps, t_start=999)
    with torch.no_grad():
        torch.testing.assert_close(sampler(f1, masks, ir, vis), out, atol=1e-5, rtol=0)


def test_ddim_step_is_exact_for_a_perfect_prediction():
    d = Diffusion()
    x0 = torch.rand(1, 1, 8, 8) * 2 - 1
    eps = torch.randn(1, 1, 8, 8)
    x_t = d.q_sample(x0, 700, eps)
    torch.testing.assert_close(d.ddim_step(x_t, x0, 700, 300), d.q_sample(x0, 300, eps))
    torch.testing.assert_close(d.ddim_step(x_t, x0, 700, -1), x0)


def test_step_module_chain_equals_the_sampler():
    d = Diffusion()
    net = _randomised(RefinerNet(TINY))
    f1, masks, ir, vis = _inputs(b=1)
    sampler = Sampler(net, d, steps=3, t_start=600)
    step = DenoiseStep(net, d, sampler.timesteps)
    cond = build_condition(f1, masks, ir, vis)
    x = d.start(f1, 600, 'f1', fixed_noise(f1))
    with torch.no_grad():
        for t in sampler.timesteps:
            x = step(x, cond, torch.tensor([t]))
        torch.testing.assert_close((x + 1) / 2, sampler(f1, masks, ir, vis), atol=1e-5, rtol=0)


def test_fixed_noise_is_deterministic_and_tiled():
    a = noise_tile(1, 0)
    assert torch.equal(a, noise_tile(1, 0)) and not torch.equal(a, noise_tile(1, 1))
    big = tiled_noise(a, 100, 130)
    assert big.shape == (1, 1, 100, 130)
    assert torch.equal(big[..., :64, :64], a) and torch.equal(big[..., 64:100, :64],
                                                               a[..., :36, :])
    assert abs(float(a.mean())) < 0.1 and float(a.std()) == pytest.approx(1.0, abs=0.1)


# ----------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('overrides', [{}, {'hfah': False}, {'sources': False},
                                       {'output': 'tanh'}, {'top_decoder': True},
                                       {'channels': 3}])
def test_shapes_and_range(overrides):
    cfg = preset('tiny', **overrides)
    net = _randomised(RefinerNet(cfg))
    f1, masks, ir, vis = _inputs(c=cfg.channels)
    x = torch.randn_like(f1)
    with torch.no_grad():
        out = net(x, build_condition(f1, masks, ir, vis, cfg.sources), torch.tensor([10, 900]))
    assert out.shape == f1.shape
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    assert float(out.std()) > 0


def test_blend_output_starts_as_f1():
    net = RefinerNet(TINY).eval()
    f1, masks, ir, vis = _inputs()
    with torch.no_grad():
        out = net(torch.randn_like(f1), build_condition(f1, masks, ir, vis), torch.tensor([5]))
    torch.testing.assert_close(out, to_model(f1))


def test_presets_and_complexity():
    assert tuple(PRESETS) == PRESET_NAMES
    rt = RefinerNet(preset('realtime'))
    gflops = gflops_per_step(rt)
    assert 0.3 < gflops < 1.2, gflops  # two steps within the CPU budget of METHOD.md
    assert count_params(rt) < 600_000
    assert rt.multiple == 32
    paper = preset('paper')
    assert (paper.base, paper.mults, paper.res_blocks, paper.dropout) == (64, (1, 2, 4, 8), 2,
                                                                          0.2)
    assert paper.cond_channels == 5  # the paper's 5-channel condition (RGB F1 + two masks)
    net = RefinerNet(paper).eval()
    assert net.attn is not None and net.multiple == 8
    with torch.no_grad():
        out = net(torch.randn(1, 3, 16, 16), torch.rand(1, 5, 16, 16), torch.tensor([3]))
    assert out.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError):
        preset('nope')
    with pytest.raises(ValueError):
        RefinerConfig(output='nope')


def test_checkpoint_round_trip(tmp_path):
    net = _randomised(RefinerNet(TINY))
    torch.save(make_checkpoint(net, half=True, role='student'), tmp_path / 'r.pt')
    model, meta = load_refiner(tmp_path / 'r.pt')
    assert meta['role'] == 'student' and meta['config']['base'] == TINY.base
    assert all(p.dtype == torch.float32 for p in model.parameters())
    torch.save({'x': 1}, tmp_path / 'bad.pt')
    with pytest.raises(ValueError):
        load_refiner(tmp_path / 'bad.pt')


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------

def test_mask_guided_terms_only_see_the_masked_pixels():
    g = torch.Generator().manual_seed(0)
    f, ir, vis = (torch.rand(2, 1, 40, 40, generator=g) for _ in range(3))
    masks = torch.zeros(2, 2, 40, 40)
    masks[:, 0, 5:15, 5:20] = 1.0    # IR mask
    masks[:, 1, 20:30, 10:30] = 0.7  # VIS mask
    changed = f.clone()
    changed[:, :, 32:, :] = torch.rand(2, 1, 8, 40, generator=g)  # outside both (+ Sobel halo)
    for fn in (rl.mask_intensity_loss, rl.mask_gradient_loss):
        assert float(fn(f, ir, vis, masks)) > 0
        assert float(fn(changed, ir, vis, masks)) == pytest.approx(float(fn(f, ir, vis, masks)))
        assert float(fn(f, ir, vis, torch.zeros_like(masks))) == 0.0  # empty masks: no term
    # The definition: a weighted mean over M = max(M_ir, M_vis).
    m = masks.amax(1, keepdim=True)
    ref = (m * (f - torch.maximum(ir, vis)).abs()).sum() / m.sum()
    assert float(rl.mask_intensity_loss(f, ir, vis, masks)) == pytest.approx(float(ref), rel=1e-5)
    # Inside the masks, the max-selection image has no intensity error.
    best = torch.maximum(ir, vis)
    assert float(rl.mask_intensity_loss(best, ir, vis, masks)) == 0.0


def test_total_loss_and_fast_filters_match_stage1_losses():
    g = torch.Generator().manual_seed(0)
    f, ir, vis = (torch.rand(3, 1, 33, 47, generator=g) for _ in range(3))
    masks = torch.rand(3, 2, 33, 47, generator=g)
    w = rl.RefinerLossWeights()
    total, terms = rl.RefinerLoss(w)(f, ir, vis, masks)
    m = masks.amax(1, keepdim=True)
    expect = (w.mask_intensity * s1losses.intensity_loss(f, ir, vis, m)
              + w.mask_gradient * s1losses.gradient_loss(f, ir, vis, m)
              + w.intensity * s1losses.intensity_loss(f, ir, vis)
              + w.gradient * s1losses.gradient_loss(f, ir, vis)
              + w.ssim * s1losses.ssim_loss(f, ir, vis, None, w.ssim_ir_share)
              + w.correlation * s1losses.correlation_loss(f, ir, vis))
    assert float(total) == pytest.approx(float(expect), rel=1e-5)
    assert set(terms) == {'m_int', 'm_grad', 'int', 'grad', 'ssim', 'corr'}
    rgb = [torch.rand(2, 3, 20, 24, generator=g) for _ in range(3)]
    assert float(rl.ssim_loss(*rgb, None, 0.3)) == pytest.approx(
        float(s1losses.ssim_loss(*rgb, None, 0.3)), abs=1e-6)
    torch.testing.assert_close(rl.sobel_magnitude(rgb[0]), s1losses.sobel_magnitude(rgb[0]))


# ----------------------------------------------------------------------------------------------
# Training, distillation, the method
# ----------------------------------------------------------------------------------------------

def _mini_data(ivif: Path, tmp: Path, n: int = 3, side: int = 160) -> Path:
    """``n`` TNO pairs, centre-cropped to ``side`` pixels (quick to fuse and score)."""
    root = tmp / f'mini{n}'
    for sub in ('ir', 'vi'):
        (root / sub).mkdir(parents=True)
    for p in sorted(imaging.dataset_pairs(ivif / 'TNO'), key=lambda p: p.name)[:n]:
        for src, sub in ((p.ir, 'ir'), (p.vis, 'vi')):
            img = imaging.read_image(src, gray=True)
            y, x = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
            imaging.write_image(root / sub / f'{p.name}.png', img[y:y + side, x:x + side])
    return root


@pytest.fixture(scope='module')
def stage1_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = Stage1Net(Stage1Config(down=2, dim_hi=8, dim=8, heads=2, msfem_branch=4,
                                 ffn_expansion=1.0))
    path = tmp_path_factory.mktemp('s1') / 'stage1.pt'
    torch.save(stage1_checkpoint(net), path)
    return path


def _cfg(data, out, steps, stage1, tmp, **kw) -> RefinerTrainConfig:
    base = dict(data=[str(data)], out=str(out), steps=steps, preset='tiny', crop=32, batch=4,
                lr=3e-3, warmup=2, checkpoint_every=5, validate=False, threads=1,
                stage1=str(stage1), mask_provider='saliency', cache_dir=str(tmp / 'cache'),
                sample_steps=4)
    base.update(kw)
    return RefinerTrainConfig(**base)


QUIET = dict(log=lambda *_: None)


def test_short_teacher_run_lowers_the_loss(ivif, tmp_path, stage1_weights):
    data = _mini_data(ivif, tmp_path)
    out = tmp_path / 'teacher.pt'
    summary = train(_cfg(data, out, 60, stage1_weights, tmp_path, lr=1e-2), **QUIET)
    assert summary['loss_end'] < 0.85 * summary['loss_start'], summary
    model, meta = load_refiner(out)
    assert meta['role'] == 'teacher' and meta['sampler']['steps'] == 4
    assert meta['train']['steps'] == 60 and meta['use_masks'] is True
    assert out.with_suffix('.json').is_file()
    # F1 and masks were cached once per pair.
    assert len(list((tmp_path / 'cache' / 'masks' / 'saliency').rglob('*.npz'))) == 3
    assert len(list((tmp_path / 'cache' / 'f1').rglob('*.npy'))) == 3


def test_distillation_and_resume(ivif, tmp_path, stage1_weights):
    data = _mini_data(ivif, tmp_path, n=2)
    teacher = tmp_path / 'teacher.pt'
    train(_cfg(data, teacher, 6, stage1_weights, tmp_path, sample_steps=3), **QUIET)
    kw = dict(mode='distill', teacher=str(teacher), sample_steps=2, t_start=500, lr=1e-3)
    train(_cfg(data, tmp_path / 'full.pt', 8, stage1_weights, tmp_path, **kw), **QUIET)
    part = _cfg(data, tmp_path / 'part.pt', 8, stage1_weights, tmp_path, **kw)
    assert train(part, stop_at=4, **QUIET)['stopped']
    with pytest.raises(FileExistsError):
        train(part, **QUIET)
    train(part, resume=True, **QUIET)
    a, _ = load_refiner(tmp_path / 'full.pt')
    b, meta = load_refiner(tmp_path / 'part.pt')
    assert meta['role'] == 'student' and meta['sampler']['steps'] == 2
    assert meta['sampler']['t_start'] == 500
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=k)
    assert len(list((tmp_path / 'cache' / 'teacher').rglob('*.npy'))) == 2


def test_sgdfuse_method_in_the_pipeline(ivif, tmp_path, stage1_weights):
    from sgdfuse_ros.fusion.methods import build_method, method_names
    from sgdfuse_ros.fusion.pipeline import FusionPipeline

    assert 'sgdfuse' in method_names()
    ref = tmp_path / 'student.pt'
    torch.save(make_checkpoint(_randomised(RefinerNet(TINY), 0.05), role='student'), ref)
    paths = sorted(imaging.dataset_pairs(ivif / 'RoadScene'), key=lambda p: p.name)[1]
    ir, vis = imaging.read_image(paths.ir, gray=True), imaging.read_image(paths.vis)
    opts = {'weights': str(ref), 'stage1_weights': str(stage1_weights), 'steps': 3}
    pipe = FusionPipeline(method='sgdfuse', method_options=opts, mask_provider='saliency')
    res = pipe.fuse(ir, vis)
    assert res.method == 'sgdfuse' and res.image.shape == vis.shape
    assert res.masks is not None and res.f1 is not None
    assert {'stage1', 'refiner', 'masks'} <= set(res.timings)
    assert not np.allclose(res.luma, res.f1)
    method = build_method('sgdfuse', **opts)
    out = method(imaging.to_float(ir), imaging.visible_luma(vis), res.masks)
    np.testing.assert_allclose(out.fused, res.luma, atol=1e-5)
    with pytest.raises(ValueError):
        build_method('sgdfuse', **{**opts, 'steps': 0})


def test_onnx_export_of_the_sampler(tmp_path):
    pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    net = _randomised(RefinerNet(TINY), 0.1)
    sampler = Sampler(net, Diffusion(), steps=2, t_start=500).eval()
    path = tmp_path / 'refiner.onnx'
    args = _inputs(b=1, h=32, w=64)
    names = ['f1', 'masks', 'ir', 'vis']
    torch.onnx.export(sampler, args, str(path), opset_version=17, dynamo=False,
                      input_names=names, output_names=['fused'],
                      dynamic_axes={n: {2: 'h', 3: 'w'} for n in names + ['fused']})
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    other = _inputs(b=1, h=96, w=64)  # another size: dynamic H/W and the tiled noise
    (out,) = sess.run(None, {n: a.numpy() for n, a in zip(names, other)})
    with torch.no_grad():
        ref = sampler(*other).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)



def test_ahead_of_time_export_is_what_the_method_runs(tmp_path, monkeypatch):
    """`sgdfuse export --onnx` writes the files the shipped method then loads: building it
    afterwards exports nothing new, and its output matches the PyTorch path."""
    pytest.importorskip('onnxruntime')
    from sgdfuse_ros.tools.cli import main
    from sgdfuse_ros.fusion.methods import build_method

    assert main(['export', '--onnx', '--out', str(tmp_path), '--models', 'stage1',
                 'refiner']) == 0
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert any(n.startswith('refiner_k') and n.endswith('.onnx') for n in before), before
    monkeypatch.setenv('SGDFUSE_ENGINES', str(tmp_path))
    method = build_method('sgdfuse', backend='onnxruntime')
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    rng = np.random.default_rng(0)
    ir, vis = (rng.random((96, 128), dtype=np.float32) for _ in range(2))
    masks = (np.zeros((96, 128), np.float32), np.ones((96, 128), np.float32))
    reference = build_method('sgdfuse', backend='torch')
    np.testing.assert_allclose(method(ir, vis, masks).fused, reference(ir, vis, masks).fused,
                               atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Ablation helpers
# ----------------------------------------------------------------------------------------------

def test_mask_perturbations():
    from sgdfuse_ros.training.ablation import perturb_mask

    m = np.zeros((64, 64), np.float32)
    m[20:40, 20:40] = 1.0
    ero5, ero11 = perturb_mask(m, 'erode', 5), perturb_mask(m, 'erode', 11)
    dil5, dil11 = perturb_mask(m, 'dilate', 5), perturb_mask(m, 'dilate', 11)
    assert ero11.sum() < ero5.sum() < m.sum() < dil5.sum() < dil11.sum()
    assert ero5.sum() == 16 * 16 and dil5.sum() > 24 * 24 - 20  # ellipse corners
    with pytest.raises(ValueError):
        perturb_mask(m, 'open', 5)


def test_ablate_command_runs(ivif, tmp_path, stage1_weights, capsys):
    from sgdfuse_ros.tools.cli import main

    student = tmp_path / 'student.pt'
    torch.save(make_checkpoint(_randomised(RefinerNet(TINY), 0.05), role='student',
                               use_masks=True), student)
    adir = tmp_path / 'abl'
    adir.mkdir()
    torch.save(make_checkpoint(_randomised(RefinerNet(TINY), 0.05), use_masks=False),
               adir / 'no_sam.pt')
    data = _mini_data(ivif, tmp_path, n=2)
    rc = main(['ablate', '--ir', str(data / 'ir'), '--vis', str(data / 'vi'), '--weights',
               str(student), '--stage1', str(stage1_weights), '--ablation-dir', str(adir),
               '--mask-provider', 'saliency', '--json', '--quiet'])
    assert rc == 0
    import json
    result = json.loads(capsys.readouterr().out)
    rows = result['rows']
    assert {'full', 'without SAM', 'single stage', 'masks eroded 5 px',
            'masks dilated 11 px'} <= set(rows)
    assert 'without HFAH' not in rows and any('HFAH' in n for n in result['notes'])
    assert set(result['headline']) <= set(rows['full'])


def test_cli_parses_train_subcommands():
    from sgdfuse_ros.tools.cli import build_parser

    args = build_parser().parse_args(['train', 'stage2', '--data', 'd', '--out', 'o.pt',
                                      '--variant', 'no_sam'])
    assert args.train_command == 'stage2' and args.variant == 'no_sam'
    args = build_parser().parse_args(['train', 'distill', '--data', 'd', '--out', 'o.pt',
                                      '--teacher', 't.pt', '--student-steps', '1'])
    assert args.student_steps == 1 and args.teacher == Path('t.pt')
    assert args.resume is False
    args = build_parser().parse_args(['train', 'stage2', '--data', 'd', '--out', 'o.pt',
                                      '--resume'])
    assert args.resume is True and args.variant == 'full'


def test_shipped_weights():
    from sgdfuse_ros.fusion.methods import resolve_method_name
    from sgdfuse_ros.models.weights import ABLATION_DIR, STUDENT_WEIGHTS, TEACHER_WEIGHTS

    assert STUDENT_WEIGHTS.is_file() and TEACHER_WEIGHTS.is_file()
    assert STUDENT_WEIGHTS.stat().st_size < 5_000_000
    model, meta = load_refiner(STUDENT_WEIGHTS)
    assert meta['role'] == 'student' and 1 <= meta['sampler']['steps'] <= 4
    cfg = model.config  # the shift-steady design: anti-aliased, smooth maps, detail gains
    assert (cfg.antialias, cfg.maps, cfg.detail) == (True, 'bilinear', True)
    assert meta['use_masks'] is True
    assert Diffusion.from_description(meta['diffusion']).describe() == Diffusion().describe()
    _, tmeta = load_refiner(TEACHER_WEIGHTS)
    assert tmeta['role'] == 'teacher' and tmeta['sampler']['steps'] == 60
    assert tmeta['sampler']['steps'] >= 10 * meta['sampler']['steps']
    for variant in ('no_sam', 'blind'):  # trained without masks as input
        _, ameta = load_refiner(ABLATION_DIR / f'{variant}.pt')
        assert ameta['use_masks'] is False, variant
    assert resolve_method_name('auto') == 'sgdfuse'
