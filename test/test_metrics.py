"""Fusion metrics: hand-computable values, identities, input checks and a real TNO pair."""

import math

import cv2
import numpy as np
import pytest

from sgdfuse_ros.core import metrics
from sgdfuse_ros.core.imaging import read_image
from sgdfuse_ros.core.metrics import (
    compute_metrics, format_table, HEADLINE, METRIC_NAMES, QABF_TA, QABF_TG,
)


def textured(seed: int, shape=(64, 64), blur: float = 2.0) -> np.ndarray:
    """A smooth random 8-bit image spanning 0..255 (neighbouring pixels are correlated)."""
    noise = np.random.default_rng(seed).normal(size=shape)
    smooth = cv2.GaussianBlur(noise, (0, 0), blur)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.round(255 * smooth).astype(np.uint8)


def checkerboard(shape=(8, 8), step: float = 1.0) -> np.ndarray:
    i, j = np.indices(shape)
    return ((i + j) % 2) * step


# --------------------------------------------------------------------------------------------
# Single-image metrics, by hand
# --------------------------------------------------------------------------------------------

def test_entropy_of_two_equally_frequent_levels_is_one_bit():
    img = np.zeros((6, 6), np.uint8)
    img[:, :3] = 200
    assert metrics.entropy(img) == pytest.approx(1.0, abs=1e-12)


def test_entropy_of_a_flat_histogram_is_eight_bits():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert metrics.entropy(img) == pytest.approx(8.0, abs=1e-12)


def test_entropy_rounds_float_values_to_levels():
    img = np.array([[10.2, 9.8], [50.4, 49.6]])  # levels 10, 10, 50, 50
    assert metrics.entropy(img) == pytest.approx(1.0, abs=1e-12)


def test_standard_deviation_of_a_known_array():
    assert metrics.standard_deviation(np.array([[0, 2], [4, 6]])) == pytest.approx(math.sqrt(5))


def test_spatial_frequency_of_ramps_and_a_checkerboard():
    i, j = np.indices((8, 10))
    assert metrics.spatial_frequency(3 * j) == pytest.approx(3.0)  # RF = 3, CF = 0
    assert metrics.spatial_frequency(4 * i) == pytest.approx(4.0)  # RF = 0, CF = 4
    assert metrics.spatial_frequency(3 * j + 4 * i) == pytest.approx(5.0)
    assert metrics.spatial_frequency(checkerboard(step=10)) == pytest.approx(10 * 2**0.5)


def test_average_gradient_of_a_plane():
    i, j = np.indices((8, 8))
    assert metrics.average_gradient(3 * j + 4 * i) == pytest.approx(5 / math.sqrt(2))


def test_average_gradient_uses_central_differences_with_one_sided_borders():
    # each row is j^3 = 0, 1, 8, 27: gradients 1 (one-sided), 4, 13 (central), 19 (one-sided);
    # forward differences over the interior would give (1 + 7 + 19) / 3 = 9 instead of 9.25
    img = np.tile(np.array([0.0, 1.0, 8.0, 27.0]), (5, 1))
    assert metrics.average_gradient(img) == pytest.approx(9.25 / math.sqrt(2))


@pytest.mark.parametrize('value', [0, 117, 255])
def test_constant_image_has_no_information_contrast_or_detail(value):
    img = np.full((48, 48), value, np.uint8)
    assert metrics.entropy(img) == 0.0
    assert metrics.standard_deviation(img) == 0.0
    assert metrics.spatial_frequency(img) == 0.0
    assert metrics.average_gradient(img) == 0.0


# --------------------------------------------------------------------------------------------
# Pairwise measures
# --------------------------------------------------------------------------------------------

def test_mutual_information_of_two_level_images():
    i, j = np.indices((16, 16))
    cols = 255 * (j % 2)
    rows = 255 * (i % 2)
    assert metrics.mutual_information(cols, cols) == pytest.approx(math.log(2))
    assert metrics.mutual_information(cols, rows) == pytest.approx(0.0, abs=1e-12)


def test_mutual_information_with_itself_is_the_entropy_in_nats():
    x = textured(1)
    assert metrics.mutual_information(x, x) == pytest.approx(metrics.entropy(x) * math.log(2))


def test_mutual_information_drops_when_the_image_is_shifted():
    x = textured(2)
    shifted = np.roll(x, 4, axis=1)
    assert metrics.mutual_information(x, shifted) < 0.6 * metrics.mutual_information(x, x)


def test_correlation_of_identical_and_inverted_images():
    x = textured(3)
    assert metrics.correlation(x, x) == pytest.approx(1.0)
    assert metrics.correlation(x, 255 - x.astype(float)) == pytest.approx(-1.0)
    assert math.isnan(metrics.correlation(x, np.full_like(x, 9)))


@pytest.mark.parametrize('style', metrics.SSIM_STYLES)
def test_ssim_of_an_image_with_itself_is_one(style):
    x = textured(4)
    assert metrics.ssim(x, x, style=style) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_two_constant_images_is_the_luminance_term():
    a = np.full((20, 20), 100.0)
    b = np.full((20, 20), 50.0)
    c1 = (0.01 * 255) ** 2  # Wang et al. with L = 255
    expected = (2 * 100 * 50 + c1) / (100**2 + 50**2 + c1)
    assert metrics.ssim(a, b) == pytest.approx(expected, rel=1e-12)
    c1 = (0.01 * 2) ** 2  # the evaluator's accidental L = 2
    expected = (2 * 100 * 50 + c1) / (100**2 + 50**2 + c1)
    assert metrics.ssim(a, b, style='evaluator') == pytest.approx(expected, rel=1e-12)


def test_ssim_drops_for_a_shifted_image():
    x = textured(5)
    assert metrics.ssim(x, np.roll(x, 4, axis=0)) < 0.8


def test_ssim_rejects_an_unknown_style_and_a_too_small_image():
    x = textured(6)
    with pytest.raises(ValueError, match='unknown SSIM style'):
        metrics.ssim(x, x, style='gauss')
    with pytest.raises(ValueError, match='at least 11x11'):
        metrics.ssim(x[:10, :10], x[:10, :10])


def test_vif_of_an_image_with_itself_is_one():
    x = textured(7)
    assert metrics.vif(x, x) == pytest.approx(1.0, abs=1e-8)


def test_vif_below_one_for_noise_above_one_for_contrast_enhancement():
    x = textured(8).astype(float)
    noisy = np.clip(x + np.random.default_rng(0).normal(0, 20, x.shape), 0, 255)
    assert 0.0 < metrics.vif(x, noisy) < 0.9
    soft = 64 + x / 2  # 64..191.5
    stretched = 2 * (soft - 128) + 128  # contrast doubled, back to 0..255
    assert metrics.vif(soft, stretched) > 1.2


def test_vif_of_a_flat_reference_is_one_and_small_images_are_refused():
    x = textured(9)
    assert metrics.vif(np.full_like(x, 80), x) == 1.0
    with pytest.raises(ValueError, match='VIF needs images at least 41x41'):
        metrics.vif(x[:40], x[:40])


# --------------------------------------------------------------------------------------------
# Measures against both sources
# --------------------------------------------------------------------------------------------

def test_scd_of_the_sum_of_the_sources_is_two():
    a = textured(10) // 2
    b = textured(11) // 2
    fused = a.astype(float) + b
    assert metrics.scd(fused, a, b) == pytest.approx(2.0)
    assert math.isnan(metrics.scd(a, a, b))  # F - A is constant: undefined


def test_psnr_of_known_mean_squared_errors():
    f = np.full((4, 4), 40.0)
    a = np.full((4, 4), 10.0)
    b = np.full((4, 4), 20.0)
    mse = (30**2 + 20**2) / 2  # 650
    assert metrics.psnr(f, a, b) == pytest.approx(10 * math.log10(255**2 / mse))
    assert metrics.psnr(f, a, b, peak=None) == pytest.approx(10 * math.log10(40**2 / mse))
    assert metrics.psnr(a, a, a) == math.inf
    with pytest.raises(ValueError, match='peak'):
        metrics.psnr(f, a, b, peak=0)


# Q for an edge kept exactly: orientation term Ta / (1 + exp(-22 * (1 - 0.8))) times a strength
# term between Tg / (1 + exp(-15 * (1 - 0.5))) (relative strength 1) and Tg (the evaluator uses
# g_F itself when g_A == g_F, and 8-bit images have Sobel strengths >= 1 wherever they are > 0).
Q_ANGLE = QABF_TA / (1 + math.exp(-22 * 0.2))
Q_KEPT_LOW = QABF_TG / (1 + math.exp(-7.5)) * Q_ANGLE
Q_KEPT_HIGH = QABF_TG * Q_ANGLE


def test_qabf_when_the_fused_image_equals_both_sources():
    x = textured(12)
    q = metrics.qabf(x, x, x)
    assert Q_KEPT_LOW <= q <= Q_KEPT_HIGH
    assert q == pytest.approx(0.975, abs=1e-3)


def test_qabf_when_the_fused_image_keeps_the_only_edges():
    a = textured(13)
    assert Q_KEPT_LOW <= metrics.qabf(a, a, np.zeros_like(a)) <= Q_KEPT_HIGH


def test_qabf_near_zero_when_the_fused_image_has_no_edges():
    a, b = textured(14), textured(15)
    assert metrics.qabf(np.zeros_like(a), a, b) < QABF_TG / (1 + math.exp(7.5))


def test_qabf_drops_when_a_source_is_ignored():
    a, b = textured(16), textured(17)
    assert metrics.qabf(a, a, b) < 0.75 * metrics.qabf(a, a, a)


# --------------------------------------------------------------------------------------------
# compute_metrics and input checks
# --------------------------------------------------------------------------------------------

def test_compute_metrics_returns_every_metric_in_order():
    a, b = textured(18), textured(19)
    fused = np.maximum(a, b)
    result = compute_metrics(fused, a, b)
    assert tuple(result) == METRIC_NAMES
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.values())
    assert set(HEADLINE) <= set(METRIC_NAMES)
    assert tuple(compute_metrics(fused, a, b, names=('SSIM', 'EN'))) == ('SSIM', 'EN')
    assert result['EN'] == metrics.entropy(fused)
    assert result['MI'] == pytest.approx(metrics.mutual_information(fused, a)
                                         + metrics.mutual_information(fused, b))
    assert result['VIF'] == pytest.approx(metrics.vif(a, fused) + metrics.vif(b, fused))
    assert result['SSIM'] == pytest.approx(metrics.ssim(fused, a) + metrics.ssim(fused, b))
    assert result['CC'] == pytest.approx((metrics.correlation(fused, a)
                                          + metrics.correlation(fused, b)) / 2)


def test_fusing_an_image_with_itself():
    x = textured(20)
    result = compute_metrics(x, x, x, names=('MI', 'SSIM', 'VIF', 'CC', 'PSNR'))
    assert result['MI'] == pytest.approx(2 * metrics.entropy(x) * math.log(2))
    assert result['SSIM'] == pytest.approx(2.0)
    assert result['VIF'] == pytest.approx(2.0, abs=1e-8)
    assert result['CC'] == pytest.approx(1.0)
    assert result['PSNR'] == math.inf


def test_conventions_differ_only_in_ssim_and_psnr():
    a, b = textured(21), textured(22)
    fused = (a.astype(float) + b) / 2.4  # max(F) < 255, so the PSNR peaks differ
    std = compute_metrics(fused, a, b)
    ev = compute_metrics(fused, a, b, convention='evaluator')
    assert {n for n in METRIC_NAMES if std[n] != ev[n]} == {'SSIM', 'PSNR'}
    assert ev['PSNR'] == pytest.approx(metrics.psnr(fused, a, b, peak=None))
    assert ev['SSIM'] == pytest.approx(metrics.ssim(fused, a, style='evaluator')
                                       + metrics.ssim(fused, b, style='evaluator'))


def test_uint8_and_float_inputs_agree():
    a, b = textured(23), textured(24)
    fused = np.maximum(a, b)
    as_uint8 = compute_metrics(fused, a, b)
    as_float = compute_metrics(fused.astype(np.float32), a.astype(float), b.astype(float))
    assert as_float == pytest.approx(as_uint8, rel=1e-12)


def test_input_errors_name_the_problem():
    a = textured(25)
    with pytest.raises(ValueError, match=r'shape mismatch: fused \(64, 64\), ir \(64, 64\), '
                                         r'vis \(64, 63\)'):
        compute_metrics(a, a, a[:, :63])
    with pytest.raises(ValueError, match='fused: expected a 2-D gray image'):
        compute_metrics(np.dstack([a, a, a]), a, a)
    with pytest.raises(ValueError, match='ir: values span 0..1000'):
        compute_metrics(a, a.astype(float) * 1000 / 255, a)
    with pytest.raises(ValueError, match='NaN'):
        metrics.entropy(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match='unknown metric'):
        compute_metrics(a, a, a, names=('EN', 'QABF'))
    with pytest.raises(ValueError, match='unknown convention'):
        compute_metrics(a, a, a, convention='matlab')


# --------------------------------------------------------------------------------------------
# A real pair
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def tno01(ivif):
    ir = read_image(ivif / 'TNO' / 'ir' / '01.png', gray=True)
    vis = read_image(ivif / 'TNO' / 'vi' / '01.png', gray=True)
    return ir, vis


def test_real_pair_max_fusion_values_are_plausible(tno01):
    ir, vis = tno01
    result = compute_metrics(np.maximum(ir, vis), ir, vis)
    assert all(math.isfinite(v) for v in result.values())
    assert 0 < result['EN'] <= 8
    assert 0 < result['SD'] <= 127.5
    assert result['SF'] > 0 and result['AG'] > 0
    assert 0 < result['MI'] < 2 * 8 * math.log(2)
    assert 0 < result['SCD'] < 2
    assert 0 < result['VIF'] < 2
    assert 0 < result['Qabf'] < Q_KEPT_HIGH
    assert 0 < result['SSIM'] < 2
    assert 5 < result['PSNR'] < 40
    assert -1 < result['CC'] < 1


def test_real_pair_reference_values(tno01):
    # Values for TNO 01 fused by max, agreeing to 1e-10 with independent scipy (convolve2d),
    # scikit-learn (mutual_info_score) and scikit-image (shannon_entropy, structural_similarity
    # with Wang's settings) computations.
    ir, vis = tno01
    result = compute_metrics(np.maximum(ir, vis), ir, vis)
    expected = {'EN': 6.5678742538, 'SD': 45.2267541896, 'MI': 4.4789363213,
                'SCD': 1.6988040697, 'VIF': 0.8598945989, 'Qabf': 0.5571371955,
                'SSIM': 1.4475887932, 'PSNR': 12.8608523540, 'CC': 0.3188471663}
    assert {n: result[n] for n in expected} == pytest.approx(expected, abs=1e-8)


def test_real_pair_max_fusion_against_passing_the_infrared_through(tno01):
    ir, vis = tno01
    fused = compute_metrics(np.maximum(ir, vis), ir, vis)
    ir_only = compute_metrics(ir, ir, vis)
    # max fusion keeps visible edges that the infrared image lacks
    assert fused['Qabf'] > ir_only['Qabf'] + 0.05
    assert fused['SF'] > ir_only['SF']
    # passing IR through is perfect against IR and no better than IR against VIS
    assert ir_only['SSIM'] == pytest.approx(1 + metrics.ssim(ir, vis))
    assert ir_only['VIF'] == pytest.approx(1 + metrics.vif(vis, ir), abs=1e-8)
    assert ir_only['MI'] == pytest.approx(metrics.entropy(ir) * math.log(2)
                                          + metrics.mutual_information(ir, vis))
    assert math.isnan(ir_only['SCD'])  # F - IR is zero: nothing added from the visible image
    # picking one source per pixel leaves MSE(F, IR) + MSE(F, VIS) = MSE(IR, VIS): equal PSNR
    assert fused['PSNR'] == pytest.approx(ir_only['PSNR'], rel=1e-12)


# --------------------------------------------------------------------------------------------
# format_table
# --------------------------------------------------------------------------------------------

def test_format_table_aligns_columns_and_marks_missing_values():
    rows = {'max': {'EN': 6.5, 'SSIM': 1.25, 'SCD': math.nan},
            'laplacian pyramid': {'EN': 7.0, 'SSIM': 1.4, 'custom': 3.0}}
    text = format_table(rows, precision=2)
    lines = text.splitlines()
    assert lines[0].split() == ['method', 'EN', 'SCD', 'SSIM', 'custom']
    assert set(lines[1]) == {'-', ' '}
    assert lines[2].split() == ['max', '6.50', 'nan', '1.25', '-']
    assert lines[3].split() == ['laplacian', 'pyramid', '7.00', '-', '1.40', '3.00']
    # right-aligned numeric columns: every column ends at the same offset on every line
    ends = {len(line) for line in lines[:1] + lines[2:]}
    assert len(ends) == 1
    for name in ('EN', 'SCD', 'SSIM'):
        end = lines[0].index(name) + len(name)
        assert lines[2][end - 1] != ' ' and lines[3][end - 1] != ' '
    assert format_table(rows, names=('SSIM',)).splitlines()[0].split() == ['method', 'SSIM']
