"""Stage 1: the network's shapes and padding, the losses, the data split, a short training run,
checkpoints and resume, the registered ``stage1`` method and ONNX export."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sgdfuse_ros.core import imaging
from sgdfuse_ros.models.stage1 import (PRESETS, Stage1Config, Stage1Net, count_macs,
                                       count_params, gflops_per_frame, load_stage1,
                                       make_checkpoint, preset)
from sgdfuse_ros.training import data as tdata
from sgdfuse_ros.training.config import PRESET_NAMES, TrainConfig
from sgdfuse_ros.training.losses import (FusionLoss, LossWeights, correlation_loss,
                                         gradient_loss, intensity_loss, sobel_magnitude,
                                         ssim_loss, ssim_map)
from sgdfuse_ros.models.run import fuse_arrays
from sgdfuse_ros.models.weights import STAGE1_WEIGHTS
from sgdfuse_ros.training.stage1 import train

TINY = Stage1Config(down=2, dim_hi=8, dim=8, heads=2, msfem_branch=4, ffn_expansion=1.0)


def _pair(ivif: Path, set_name: str = 'RoadScene', index: int = 1):
    paths = sorted(imaging.dataset_pairs(ivif / set_name), key=lambda p: p.name)[index]
    return tdata.load_pair(paths, set_name)


def _mini_data(ivif: Path, tmp: Path, n: int = 3) -> Path:
    """A data folder with ``n`` TNO pairs (symlinks)."""
    root = tmp / 'mini'
    for sub in ('ir', 'vi'):
        (root / sub).mkdir(parents=True)
    for p in sorted(imaging.dataset_pairs(ivif / 'TNO'), key=lambda p: p.name)[:n]:
        (root / 'ir' / p.ir.name).symlink_to(p.ir)
        (root / 'vi' / p.vis.name).symlink_to(p.vis)
    return root


# ----------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('channels', [1, 3])
def test_shapes_and_range(channels):
    torch.manual_seed(0)
    cfg = Stage1Config(**{**TINY.__dict__, 'in_channels': channels, 'out_channels': channels})
    net = Stage1Net(cfg).eval()
    for p in net.head.parameters():  # leave the initial head so the output varies
        torch.nn.init.normal_(p, std=0.5)
    ir, vis = torch.rand(2, channels, 48, 64), torch.rand(2, channels, 48, 64)
    with torch.no_grad():
        out = net(ir, vis)
    assert out.shape == (2, channels, 48, 64)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.std()) > 0


def test_luma_out_of_rgb_in():
    net = Stage1Net(Stage1Config(**{**TINY.__dict__, 'in_channels': 3})).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1, 32, 32), torch.rand(1, 3, 32, 32))  # 1-channel IR broadcast
    assert out.shape == (1, 1, 32, 32)


def _initial(ir, vis):
    """What an untrained network outputs: half way between the mean and the maximum."""
    return 0.25 * (ir + vis) + 0.25 * (ir + vis + abs(ir - vis))  # mean/2 + max/2


def test_initial_output():
    net = Stage1Net(TINY).eval()
    ir, vis = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(ir, vis), _initial(ir, vis), atol=1e-6)


@pytest.mark.parametrize('size', [(37, 53), (8, 8), (121, 160)])
def test_odd_sizes_pad_and_crop(size):
    net = Stage1Net(TINY).eval()
    rng = np.random.default_rng(0)
    ir, vis = rng.random(size, dtype=np.float32), rng.random(size, dtype=np.float32)
    out = fuse_arrays(net, ir, vis)
    assert out.shape == size and out.dtype == np.float32
    np.testing.assert_allclose(out, _initial(ir, vis), atol=1e-5)  # nothing shifted


def test_pad_crop_round_trip():
    img = np.arange(37 * 53, dtype=np.float32).reshape(37, 53)
    padded, size = imaging.pad_to_multiple(img, 8)
    assert padded.shape == (40, 56) and size == (37, 53)
    np.testing.assert_array_equal(imaging.crop_to(padded, size), img)


def test_presets_and_complexity():
    assert tuple(sorted(PRESETS)) == PRESET_NAMES
    net = Stage1Net(preset('realtime'))
    gflops = gflops_per_frame(net)
    assert 0.2 < gflops < 1.6, gflops  # the CPU budget of METHOD.md
    assert count_params(net) < 500_000
    assert net.multiple == 8
    # The counter sees a single convolution exactly.
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    assert count_macs(conv, torch.zeros(1, 4, 10, 10)) == 8 * 100 * 4 * 9
    with pytest.raises(ValueError):
        preset('nope')
    with pytest.raises(ValueError):
        Stage1Config(dim=30, heads=4)


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------

def test_max_selection_has_the_lowest_loss(ivif):
    p = _pair(ivif)
    ir, vis = torch.from_numpy(p.ir)[None], torch.from_numpy(p.vis)[None]
    ideal = torch.maximum(ir, vis)
    loss = FusionLoss(LossWeights(intensity=1.0, gradient=1.0, ssim=0.0))
    l_ideal, l_ir, l_vis = (loss(f, ir, vis)[0] for f in (ideal, ir, vis))
    assert l_ideal < l_ir and l_ideal < l_vis
    assert float(intensity_loss(ideal, ir, vis)) == 0.0
    assert gradient_loss(ideal, ir, vis) < min(gradient_loss(ir, ir, vis),
                                               gradient_loss(vis, ir, vis))


def test_loss_terms():
    x = torch.rand(2, 1, 40, 40)
    assert torch.allclose(ssim_map(x, x), torch.ones_like(x), atol=1e-4)
    assert float(ssim_loss(x, x, x)) == pytest.approx(0.0, abs=1e-4)
    ramp = torch.linspace(0, 1, 40).repeat(40, 1)[None, None]
    g = sobel_magnitude(ramp)
    assert g.shape == ramp.shape
    assert float(g[0, 0, 20, 20]) == pytest.approx(8 / 39, rel=1e-4)  # 4 * 2 * slope
    # A weight map restricts the mean to the weighted pixels.
    f, a, b = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    w = torch.zeros(1, 1, 4, 4)
    w[..., :2, :] = 1
    a[..., 2:, :] = 0
    assert float(intensity_loss(f, a, b)) == pytest.approx(0.5)
    assert float(intensity_loss(f, a, b, weight=w)) == pytest.approx(1.0)
    # SCD as a loss: the sum of the sources keeps both entirely; one source alone does not.
    y = torch.rand(2, 1, 40, 40)
    assert float(correlation_loss(x + y, x, y)) == pytest.approx(0.0, abs=1e-4)
    assert float(correlation_loss(x, x, y)) > 1.0
    total, terms = FusionLoss(LossWeights(1.0, 2.0, 0.5, correlation=0.1))(x, x, x)
    assert set(terms) == {'int', 'grad', 'ssim', 'corr'} and float(total) >= 0


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

def test_validation_split(ivif):
    folders = tdata.expand_data_dirs([ivif])
    assert {f.name for f in folders} >= {'TNO', 'RoadScene', 'M3FD', 'FMB'}
    for f in folders:
        train_p, val_p = tdata.split_pairs(f)
        assert not {p.name for p in train_p} & {p.name for p in val_p}
        n = len(train_p) + len(val_p)
        if f.name == 'FMB':
            assert not train_p and len(val_p) == n
        elif f.name == 'RoadScene':
            assert len(val_p) == (n + 4) // 5
            names = sorted(p.name for p in train_p + val_p)
            assert [p.name for p in val_p] == names[::5]
        else:
            assert not val_p


def test_crop_sampler_is_deterministic(ivif):
    pairs = [_pair(ivif, 'TNO', 0), _pair(ivif, 'RoadScene', 1)]
    s = tdata.CropSampler(pairs, crop=64, seed=3)
    a_ir, a_vis = s.batch(7, 4)
    b_ir, b_vis = s.batch(7, 4)
    assert a_ir.shape == (4, 1, 64, 64) and a_vis.dtype == np.float32
    np.testing.assert_array_equal(a_ir, b_ir)
    assert not np.array_equal(a_ir, s.batch(8, 4)[0])


# ----------------------------------------------------------------------------------------------
# Training, checkpoints, resume
# ----------------------------------------------------------------------------------------------

def _cfg(data: Path, out: Path, steps: int, **kw) -> TrainConfig:
    return TrainConfig(data=[str(data)], out=str(out), steps=steps, crop=64, batch=4, lr=3e-3,
                       warmup=2, checkpoint_every=5, validate=False, threads=1, **kw)


def test_short_training_lowers_the_loss(ivif, tmp_path):
    data = _mini_data(ivif, tmp_path)
    out = tmp_path / 'w.pt'
    summary = train(_cfg(data, out, 40, ssim=0.0), log=lambda *_: None)
    assert summary['loss_end'] < 0.9 * summary['loss_start'], summary
    model, meta = load_stage1(out)
    assert meta['step'] == 40 and meta['train']['steps'] == 40
    assert out.with_suffix('.json').is_file()
    assert out.stat().st_size < 2_000_000


def test_checkpoint_resume_matches_an_uninterrupted_run(ivif, tmp_path):
    data = _mini_data(ivif, tmp_path)
    quiet = dict(log=lambda *_: None)
    train(_cfg(data, tmp_path / 'full.pt', 10), **quiet)
    assert train(_cfg(data, tmp_path / 'part.pt', 10), stop_at=5, **quiet)['stopped']
    assert not (tmp_path / 'part.pt').exists()
    with pytest.raises(FileExistsError):
        train(_cfg(data, tmp_path / 'part.pt', 10), **quiet)
    train(_cfg(data, tmp_path / 'part.pt', 10), resume=True, **quiet)
    full, _ = load_stage1(tmp_path / 'full.pt')
    part, meta = load_stage1(tmp_path / 'part.pt')
    assert meta['step'] == 10
    for (k, a), b in zip(full.state_dict().items(), part.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


def test_fp16_checkpoint_loads_as_fp32(tmp_path):
    net = Stage1Net(TINY)
    torch.save(make_checkpoint(net, half=True), tmp_path / 'h.pt')
    model, meta = load_stage1(tmp_path / 'h.pt', map_location='cpu')
    assert meta['config']['dim'] == TINY.dim
    assert all(p.dtype == torch.float32 for p in model.parameters())
    torch.save({'not': 'a checkpoint'}, tmp_path / 'bad.pt')
    with pytest.raises(ValueError):
        load_stage1(tmp_path / 'bad.pt')
    with pytest.raises(FileNotFoundError):
        load_stage1(tmp_path / 'missing.pt')


# ----------------------------------------------------------------------------------------------
# The registered method
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def weights() -> Path:
    """The shipped weights (they ship with the package)."""
    assert STAGE1_WEIGHTS.is_file(), f'the shipped stage-1 weights are missing: {STAGE1_WEIGHTS}'
    return STAGE1_WEIGHTS


def test_registered_method_fuses_a_real_pair(ivif, weights):
    from sgdfuse_ros.fusion.methods import build_method, method_names
    from sgdfuse_ros.fusion.pipeline import FusionPipeline

    assert 'stage1' in method_names()
    method = build_method('stage1', weights=str(weights))
    paths = sorted(imaging.dataset_pairs(ivif / 'RoadScene'), key=lambda p: p.name)[0]
    ir = imaging.read_image(paths.ir, gray=True)
    vis = imaging.read_image(paths.vis)
    out = method(imaging.to_float(ir), imaging.visible_luma(vis))
    assert out.fused.shape == ir.shape and out.fused.dtype == np.float32
    assert 0.0 <= out.fused.min() and out.fused.max() <= 1.0
    assert out.f1 is not None and out.timings['stage1'] > 0
    res = FusionPipeline(method='stage1', method_options={'weights': str(weights)}).fuse(ir, vis)
    assert res.image.shape == vis.shape and res.method == 'stage1'


def test_shipped_weights_are_the_default():
    from sgdfuse_ros.fusion.methods import build_method, resolve_method_name

    assert STAGE1_WEIGHTS.is_file()
    assert STAGE1_WEIGHTS.stat().st_size < 5_000_000
    import json

    from sgdfuse_ros.core.hashing import sha256_file

    sidecar = json.loads(STAGE1_WEIGHTS.with_suffix('.json').read_text())
    assert sidecar['sha256'] == sha256_file(STAGE1_WEIGHTS)
    assert sidecar['wins'] >= 6
    _, meta = load_stage1(STAGE1_WEIGHTS)
    assert meta['config'] == PRESETS['realtime'].__dict__
    assert build_method('stage1', backend='torch').weights == STAGE1_WEIGHTS
    assert resolve_method_name('auto') == 'sgdfuse'  # the refiner ships too


def test_onnx_export_with_dynamic_size(tmp_path):
    pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    net = Stage1Net(preset('realtime')).eval()
    torch.manual_seed(0)
    for p in net.head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    path = tmp_path / 's1.onnx'
    x = torch.rand(1, 1, 64, 80)
    torch.onnx.export(net, (x, x), str(path), opset_version=17, dynamo=False,
                      input_names=['ir', 'vis'], output_names=['f1'],
                      dynamic_axes={n: {2: 'h', 3: 'w'} for n in ('ir', 'vis', 'f1')})
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    ir, vis = torch.rand(1, 1, 48, 96), torch.rand(1, 1, 48, 96)
    (out,) = sess.run(None, {'ir': ir.numpy(), 'vis': vis.numpy()})
    with torch.no_grad():
        ref = net(ir, vis).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)
