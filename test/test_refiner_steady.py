"""The shift-steady refiner (``steady`` preset: blur-pool, bilinear maps, detail gains) and the
training terms that go with it: the detail and mask-aware SSIM losses, the shift-equivariance
term, noise augmentation, warm starts from another architecture, a start without noise."""

import numpy as np
import pytest
import torch

from sgdfuse_ros.models.diffusion import Diffusion, Sampler, to_model
from sgdfuse_ros.models.filters import (high_pass, high_pass_kernel, separable_high_pass,
                                        separable_kernels)
from sgdfuse_ros.models.refiner import (DETAIL_GAIN, RefinerConfig, RefinerNet, build_condition,
                                        make_checkpoint, preset)
from sgdfuse_ros.training import refiner_losses as rl
from sgdfuse_ros.training.refiner import _load_weights, noisy_inputs, shift_disagreement


def _randomised(net: RefinerNet, std: float = 0.05) -> RefinerNet:
    torch.manual_seed(0)
    torch.nn.init.normal_(net.head.out.weight, std=std)
    return net.eval()


def _scene(h=256, w=352, seed=0):
    """A smooth random scene with edges (so that shifts are meaningful)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.avg_pool2d(torch.rand(1, 5, h, w, generator=g), 9, 1, 4)
    edges = (torch.rand(1, 5, h // 8, w // 8, generator=g) > 0.5).float()
    edges = torch.nn.functional.interpolate(edges, size=(h, w), mode='nearest')
    return 0.6 * base + 0.4 * edges


def _shift_error(net: RefinerNet, shifts=(4, 8, 12, 20)) -> float:
    x = _scene()
    c = net.config.channels
    h, w = 192, 256
    errs = []
    with torch.no_grad():
        for s in shifts:
            a = net(to_model(x[:, :c, :h, :w]), x[:, :, :h, :w], torch.tensor([250]))
            b = net(to_model(x[:, :c, :h, s:s + w]), x[:, :, :h, s:s + w], torch.tensor([250]))
            errs.append(float(shift_disagreement(a, b, (0, s), border=32)))
    return float(np.mean(errs))


def test_steady_preset_moves_with_the_input():
    """Blur-pool and bilinear maps: shifted inputs give (nearly) shifted outputs; the
    pixel-shuffled, strided ``realtime`` network of the same weights does not."""
    steady = _randomised(RefinerNet(preset('steady')))
    plain = _randomised(RefinerNet(preset('realtime', detail=True, sources=True)))
    e_steady, e_plain = _shift_error(steady), _shift_error(plain)
    assert e_steady < 0.3 * e_plain, (e_steady, e_plain)


def test_detail_maps_add_the_sources_high_pass():
    cfg = preset('tiny', maps='bilinear', detail=True, antialias=True)
    net = RefinerNet(cfg).eval()
    # Output convolution: zero except a constant bias on the IR detail map (index 3).
    with torch.no_grad():
        net.head.out.bias[3] = float(np.arctanh(0.25))
    x = _scene(64, 96)
    f1, masks, ir, vis = x[:, :1], x[:, 1:3], x[:, 3:4], x[:, 4:5]
    with torch.no_grad():
        out = net(to_model(f1), build_condition(f1, masks, ir, vis), torch.tensor([3]))
    k = high_pass_kernel(1)
    expect = torch.clamp(f1 + DETAIL_GAIN * 0.25 * high_pass(ir, k), 0, 1)
    torch.testing.assert_close(out, to_model(expect), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match='detail'):
        RefinerConfig(detail=True, sources=False)
    with pytest.raises(ValueError, match='maps'):
        RefinerConfig(maps='nearest')


def test_steady_sampler_exports_to_onnx(tmp_path):
    pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    net = _randomised(RefinerNet(preset('tiny', maps='bilinear', detail=True, antialias=True)))
    sampler = Sampler(net, Diffusion(), steps=1, t_start=250, start='clean').eval()
    x = _scene(32, 64)
    args = (x[:, :1], x[:, 1:3], x[:, 3:4], x[:, 4:5])
    names = ['f1', 'masks', 'ir', 'vis']
    path = tmp_path / 'r.onnx'
    torch.onnx.export(sampler, args, str(path), opset_version=17, dynamo=False,
                      input_names=names, output_names=['fused'],
                      dynamic_axes={n: {2: 'h', 3: 'w'} for n in names + ['fused']})
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    y = _scene(96, 64, seed=3)
    other = (y[:, :1], y[:, 1:3], y[:, 3:4], y[:, 4:5])
    (out,) = sess.run(None, {n: a.numpy() for n, a in zip(names, other)})
    with torch.no_grad():
        np.testing.assert_allclose(out, sampler(*other).numpy(), atol=1e-4)


def test_detail_loss_is_zero_for_the_selected_detail():
    x = _scene(64, 64)
    ir = x[:, 3:4]
    flat = torch.full_like(ir, 0.4)  # no detail: the selection is IR's everywhere
    assert float(rl.detail_loss(ir.clone(), ir, flat)) < 1e-7
    assert float(rl.detail_loss(ir.clone(), flat, ir)) < 1e-7
    blurred = torch.nn.functional.avg_pool2d(ir, 5, 1, 2)
    assert float(rl.detail_loss(blurred, ir, flat)) > 1e-3


def test_mask_aware_ssim_share_follows_the_masks():
    x = _scene(64, 64)
    ir, vis = x[:, 3:4], x[:, 4:5]
    masks = torch.zeros(1, 2, 64, 64)
    masks[:, 0, :32] = 1.0
    loss = rl.RefinerLoss(rl.RefinerLossWeights(ssim_ir_in=0.9, ssim_ir_out=0.2))
    share = loss.ssim_share(masks)
    assert float(share[0, 0, 0, 0]) == pytest.approx(0.9)
    assert float(share[0, 0, -1, -1]) == pytest.approx(0.2)
    uniform = rl.RefinerLoss(rl.RefinerLossWeights())
    assert uniform.ssim_share(masks) == 0.5
    # F = IR scores better under the share that asks for IR where the masks are.
    s_in = rl.ssim_loss(ir.clone(), ir, vis, None, share)
    s_out = rl.ssim_loss(ir.clone(), ir, vis, None, 0.2 + 0 * share)
    assert float(s_in) < float(s_out)


def test_shift_disagreement_and_noise():
    x = _scene(64, 80)[:, :1]
    a = x[..., :48, :48]
    b = x[..., 5:53, 7:55]
    assert float(shift_disagreement(a, b, (5, 7), border=4)) == 0.0
    assert float(shift_disagreement(a, b, (0, 0), border=4)) > 0.01
    g = torch.Generator().manual_seed(0)
    imgs = [torch.round(x.expand(16, 1, 64, 80) * 255) / 255 for _ in range(2)]  # 8-bit
    noisy = noisy_inputs(imgs, 3 / 255, g)
    changed = [(n - i).abs().flatten(1).amax(1) > 0 for n, i in zip(noisy, imgs)]
    assert 2 <= int(changed[0].sum()) <= 14  # about half of the crops
    assert float((noisy[0] - imgs[0]).abs().max()) < 15 / 255


def test_warm_start_from_another_architecture(tmp_path):
    old = _randomised(RefinerNet(preset('tiny')))
    path = tmp_path / 'old.pt'
    torch.save(make_checkpoint(old), path)
    new = RefinerNet(preset('tiny', antialias=True, maps='bilinear', detail=True))
    with pytest.raises(ValueError, match='differs'):
        _load_weights(new, str(path), 'cpu', 'preset')
    _load_weights(new, str(path), 'cpu', 'preset', log=lambda *_: None, partial=True)
    torch.testing.assert_close(new.downs[0].conv.weight, old.downs[0].weight)
    torch.testing.assert_close(new.stem.weight, old.stem.weight)
    assert float(new.head.out.weight.abs().max()) == 0.0  # other shape: left at its init


def test_blind_variant_keeps_the_masks_in_the_loss_only():
    from sgdfuse_ros.training.refiner_config import RefinerTrainConfig

    full, blind = RefinerTrainConfig(), RefinerTrainConfig(blind=True)
    no_sam = RefinerTrainConfig(variant='no_sam')
    assert (full.use_masks, full.loss_masks) == (True, True)
    assert (blind.use_masks, blind.loss_masks) == (False, True)
    assert (no_sam.use_masks, no_sam.loss_masks) == (False, False)


def test_detail_floor_adds_the_selected_finest_level():
    cfg = preset('tiny', maps='bilinear', detail=True, antialias=True, detail_floor=0.25)
    net = RefinerNet(cfg).eval()  # zero output convolution: only the fixed transfer acts
    x = _scene(64, 96)
    f1, masks, ir, vis = x[:, :1], x[:, 1:3], x[:, 3:4], x[:, 4:5]
    with torch.no_grad():
        out = net(to_model(f1), build_condition(f1, masks, ir, vis), torch.tensor([3]))
    kv, kh = separable_kernels(1)
    hi, hv = separable_high_pass(ir, kv, kh), separable_high_pass(vis, kv, kh)
    # The separable blur is the 5x5 binomial one.
    torch.testing.assert_close(hi, high_pass(ir, high_pass_kernel(1)), atol=1e-6, rtol=0)
    expect = torch.clamp(f1 + 0.25 * torch.where(hi.abs() >= hv.abs(), hi, hv), 0, 1)
    torch.testing.assert_close(out, to_model(expect), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match='detail_floor'):
        RefinerConfig(detail_floor=0.2)


def test_shipped_student_is_the_steady_design_and_its_sidecar_holds():
    import json

    from sgdfuse_ros.core.hashing import sha256_file
    from sgdfuse_ros.core.paths import WEIGHTS_DIR
    from sgdfuse_ros.models.refiner import load_refiner

    path = WEIGHTS_DIR / 'refiner_student.pt'
    model, meta = load_refiner(path)
    cfg = model.config
    assert (cfg.antialias, cfg.maps, cfg.detail) == (True, 'bilinear', True)
    assert meta['sampler'] == {'steps': 1, 't_start': 250, 'start': 'clean', 'extra': {}}
    assert meta['use_masks'] is True and cfg.detail_floor == 0.3 and cfg.detail_core == 3.0
    side = json.loads(path.with_suffix('.json').read_text())
    assert side['sha256'] == sha256_file(path)
    rows = side['validation_metrics']['rows']
    assert side['validation_metrics']['convention'] == 'evaluator'
    wins = [k for k in ('EN', 'SD', 'SF', 'MI', 'SCD', 'VIF', 'Qabf', 'SSIM')
            if rows['full'][k] > rows['laplacian'][k]]
    assert len(wins) == 7, wins
    for name in ('no_sam', 'blind'):
        _, vmeta = load_refiner(path.parent / 'ablation' / f'{name}.pt')
        assert vmeta['use_masks'] is False
