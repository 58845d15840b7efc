"""Infrared/visible image fusion (IVIF) quality metrics on 8-bit gray images.

The eleven metrics reported in the IVIF literature, computed with the conventions of the open
``Evaluator`` class that MMIF-CDDFuse published (``utils/Evaluator.py``) and that many fusion
repositories reuse, so that numbers are comparable with published tables:

=====  ======================================================  ===========================
name   what it measures                                        inputs
=====  ======================================================  ===========================
EN     Shannon entropy of the fused image (bits)               F
SD     standard deviation of the fused image (contrast)        F
SF     spatial frequency (edge activity)                       F
AG     average gradient (sharpness)                            F
MI     mutual information MI(F, IR) + MI(F, VIS) (nats)        F, IR, VIS
SCD    sum of the correlations of differences                  F, IR, VIS
VIF    pixel-domain VIF of F against IR plus against VIS       F, IR, VIS
Qabf   Xydeas-Petrovic gradient (edge) preservation            F, IR, VIS
SSIM   SSIM(F, IR) + SSIM(F, VIS)                              F, IR, VIS
PSNR   peak signal-to-noise ratio against both sources (dB)    F, IR, VIS
CC     mean of the correlation coefficients with IR and VIS    F, IR, VIS
=====  ======================================================  ===========================

Higher is better for all of them.

Inputs are 2-D arrays of the same shape, ``uint8`` or float with values in ``0..255`` (the 8-bit
gray scale the literature evaluates on; a fused ``[0, 1]`` float image must be scaled by 255
first). They are converted to ``float64``. Histogram-based metrics (EN, MI) round to the nearest
integer level, as the evaluator does for its 8-bit inputs.

Two conventions, chosen with ``compute_metrics(..., convention=...)``, differ only in SSIM and
PSNR; every other metric follows the evaluator in both:

* ``'standard'`` (default): SSIM as Wang et al. (2004) define it (11x11 Gaussian window,
  sigma 1.5, population statistics, dynamic range L = 255); PSNR with peak 255.
* ``'evaluator'``: the evaluator's own choices, as run with its pinned scikit-image 0.19:
  ``structural_similarity(F, X)`` on ``float32`` inputs without ``data_range``, i.e. a 7x7
  uniform window, sample (N-1) statistics and L = 2 (the ``[-1, 1]`` float range, not 255, so
  the stabilising constants are ~16000 times smaller); PSNR with peak ``max(F)``. (Computed
  here in ``float64``; the evaluator's ``float32`` arithmetic moves its SSIM by ~1e-6.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
import math

import cv2
import numpy as np

METRIC_NAMES = ('EN', 'SD', 'SF', 'AG', 'MI', 'SCD', 'VIF', 'Qabf', 'SSIM', 'PSNR', 'CC')
"""Every metric :func:`compute_metrics` knows, in the order tables print them."""

HEADLINE = ('EN', 'SD', 'SF', 'MI', 'SCD', 'VIF', 'Qabf', 'SSIM')
"""The eight metrics MMIF-CDDFuse and its successors report in their IVIF tables."""

CONVENTIONS = ('standard', 'evaluator')
"""Values of ``convention`` in :func:`compute_metrics` (see the module docstring)."""

SSIM_STYLES = ('wang', 'evaluator')
"""Values of ``style`` in :func:`ssim`."""

VIF_MIN_SIDE = 41
"""Smallest image side :func:`vif` accepts (the 3-tap window must still fit at the 4th scale)."""

# Xydeas-Petrovic constants (sigmoid height, slope and midpoint for gradient strength and
# orientation; weight exponent).
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8
QABF_L = 1.0

_VIF_SIGMA_NSQ = 2.0
_VIF_EPS = 1e-10

# Sobel kernels for cv2.filter2D, which correlates: these are the evaluator's convolution kernels
# rotated by 180 degrees, so the signs agree too. Signs matter: the orientation arctan(sy / sx)
# flips sign with them, but the pi/2 used where sx == 0 does not.
_SOBEL_X = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])  # left - right
_SOBEL_Y = np.array([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])  # below - above


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------

def _as_image(img: np.ndarray, name: str) -> np.ndarray:
    """Validate one gray image and return it as ``float64``."""
    arr = np.asarray(img)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f'{name}: expected a numeric array, got dtype {arr.dtype}')
    if np.iscomplexobj(arr):
        raise ValueError(f'{name}: complex values are not images')
    if arr.ndim != 2:
        raise ValueError(f'{name}: expected a 2-D gray image, got shape {arr.shape}')
    if arr.size == 0:
        raise ValueError(f'{name}: empty image, shape {arr.shape}')
    arr = arr.astype(np.float64, copy=False)
    lo, hi = float(arr.min()), float(arr.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f'{name}: contains NaN or infinite values')
    if lo < -0.5 or hi > 255.5:
        raise ValueError(f'{name}: values span {lo:g}..{hi:g}; expected the 8-bit range 0..255')
    return arr


def _as_images(**images: np.ndarray) -> list[np.ndarray]:
    """Validate several images (keyword name -> array) and check that their shapes agree."""
    out = [_as_image(img, name) for name, img in images.items()]
    shapes = {arr.shape for arr in out}
    if len(shapes) > 1:
        desc = ', '.join(f'{name} {arr.shape}' for name, arr in zip(images, out))
        raise ValueError(f'shape mismatch: {desc}')
    return out


def _levels(img: np.ndarray) -> np.ndarray:
    """Gray levels 0..255 as ``intp`` (nearest integer, as the evaluator's ``np.round``)."""
    return np.clip(np.rint(img), 0, 255).astype(np.intp)


def _require_side(shape: tuple[int, ...], side: int, what: str) -> None:
    if min(shape) < side:
        raise ValueError(f'{what} needs images at least {side}x{side} pixels, got {shape}')


# --------------------------------------------------------------------------------------------
# Metrics of the fused image alone
# --------------------------------------------------------------------------------------------

def _entropy(f: np.ndarray) -> float:
    p = np.bincount(_levels(f).ravel(), minlength=256) / f.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def entropy(img: np.ndarray) -> float:
    """EN: Shannon entropy in bits of the 256-bin gray-level histogram.

    ``EN = -sum_l p_l log2 p_l`` with ``p_l`` the fraction of pixels at level ``l`` (values
    rounded to the nearest integer). 0 for a constant image, 8 for a flat histogram.
    """
    return _entropy(_as_image(img, 'image'))


def _standard_deviation(f: np.ndarray) -> float:
    return float(np.std(f))


def standard_deviation(img: np.ndarray) -> float:
    """SD: population standard deviation ``sqrt(mean((I - mean(I))^2))`` (``np.std``)."""
    return _standard_deviation(_as_image(img, 'image'))


def _spatial_frequency(f: np.ndarray) -> float:
    rf2 = np.mean(np.diff(f, axis=1) ** 2) if f.shape[1] > 1 else 0.0
    cf2 = np.mean(np.diff(f, axis=0) ** 2) if f.shape[0] > 1 else 0.0
    return float(np.sqrt(rf2 + cf2))


def spatial_frequency(img: np.ndarray) -> float:
    """SF: spatial frequency ``sqrt(RF^2 + CF^2)``.

    ``RF^2 = mean((I[i, j] - I[i, j-1])^2)`` over the ``M x (N-1)`` horizontal first differences
    (row frequency) and ``CF^2`` likewise over the ``(M-1) x N`` vertical ones.
    """
    return _spatial_frequency(_as_image(img, 'image'))


def _average_gradient(f: np.ndarray) -> float:
    if min(f.shape) < 2:
        raise ValueError(f'AG needs at least 2 pixels along each axis, got {f.shape}')
    gy, gx = np.gradient(f)
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2.0)))


def average_gradient(img: np.ndarray) -> float:
    """AG: average gradient ``mean(sqrt((Gx^2 + Gy^2) / 2))`` over all ``M x N`` pixels.

    As in the evaluator, ``Gx``/``Gy`` are ``np.gradient``'s derivatives: central differences
    ``(I[j+1] - I[j-1]) / 2`` inside and one-sided differences on the first and last column/row.
    (Some MATLAB toolboxes use forward differences over the ``(M-1) x (N-1)`` interior instead;
    the two agree on linear ramps and differ slightly elsewhere.)
    """
    return _average_gradient(_as_image(img, 'image'))


# --------------------------------------------------------------------------------------------
# Pairwise measures
# --------------------------------------------------------------------------------------------

def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    joint = np.bincount((_levels(a) * 256 + _levels(b)).ravel(), minlength=256 * 256)
    pab = joint.reshape(256, 256) / a.size
    pa = pab.sum(axis=1)
    pb = pab.sum(axis=0)
    i, j = np.nonzero(pab)
    p = pab[i, j]
    mi = float(np.sum(p * (np.log(p) - np.log(pa[i]) - np.log(pb[j]))))
    return max(mi, 0.0)  # clears rounding residue (about -1e-16) when a and b are independent


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information of two images in nats, from their 256 x 256 joint histogram.

    ``MI(A, B) = sum_{a,b} p(a, b) ln(p(a, b) / (p(a) p(b)))`` with levels rounded to integers.
    Natural log, as the evaluator (``sklearn.metrics.mutual_info_score`` on the flattened
    integer-valued images, which equals this for 8-bit data). ``MI(A, A)`` is the entropy of
    ``A`` in nats. The fusion metric MI is ``MI(F, IR) + MI(F, VIS)``.
    """
    a, b = _as_images(a=a, b=b)
    return _mutual_information(a, b)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    da = a - a.mean()
    db = b - b.mean()
    den = math.sqrt(float(np.sum(da * da)) * float(np.sum(db * db)))
    if den == 0.0:
        return math.nan
    return float(np.sum(da * db)) / den


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation coefficient of the pixel values of two images.

    ``r = sum((A - mean A)(B - mean B)) / sqrt(sum((A - mean A)^2) sum((B - mean B)^2))``;
    NaN when either image is constant (the correlation is undefined). The fusion metric CC is
    ``(r(F, IR) + r(F, VIS)) / 2``.
    """
    a, b = _as_images(a=a, b=b)
    return _correlation(a, b)


def _filter_valid(img: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """Separable correlation keeping only fully overlapped outputs (``'valid'`` mode)."""
    r = kernel_1d.size // 2
    out = cv2.sepFilter2D(img, cv2.CV_64F, kernel_1d, kernel_1d, borderType=cv2.BORDER_REFLECT)
    return out[r:out.shape[0] - r, r:out.shape[1] - r]


def _vif_kernel(n: int) -> np.ndarray:
    """Normalised 1-D Gaussian, ``n`` taps, sigma ``n / 5`` (its outer product is the 2-D one)."""
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    sd = n / 5.0
    k = np.exp(-x * x / (2.0 * sd * sd))
    return k / k.sum()


def _vif(ref: np.ndarray, dist: np.ndarray) -> float:
    _require_side(ref.shape, VIF_MIN_SIDE, 'VIF')
    eps, nsq = _VIF_EPS, _VIF_SIGMA_NSQ
    num = den = 0.0
    for scale in range(1, 5):
        k = _vif_kernel(2 ** (5 - scale) + 1)  # 17, 9, 5, 3 taps
        if scale > 1:
            ref = _filter_valid(ref, k)[::2, ::2]
            dist = _filter_valid(dist, k)[::2, ::2]
        mu1 = _filter_valid(ref, k)
        mu2 = _filter_valid(dist, k)
        s1 = np.maximum(_filter_valid(ref * ref, k) - mu1 * mu1, 0.0)
        s2 = np.maximum(_filter_valid(dist * dist, k) - mu2 * mu2, 0.0)
        s12 = _filter_valid(ref * dist, k) - mu1 * mu2

        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        flat_ref = s1 < eps  # no signal to transmit: gain 0, all of dist is noise
        g = np.where(flat_ref, 0.0, g)
        sv = np.where(flat_ref, s2, sv)
        s1 = np.where(flat_ref, 0.0, s1)
        flat_dist = s2 < eps  # nothing received
        g = np.where(flat_dist, 0.0, g)
        sv = np.where(flat_dist, 0.0, sv)
        negative = g < 0  # anti-correlated: treat as no gain, all noise
        sv = np.where(negative, s2, sv)
        g = np.where(negative, 0.0, g)
        sv = np.maximum(sv, eps)

        num += float(np.sum(np.log10(1.0 + g * g * s1 / (sv + nsq))))
        den += float(np.sum(np.log10(1.0 + s1 / nsq)))
    if den == 0.0:
        return 1.0  # reference without any variance: the evaluator's NaN -> 1 fallback
    return num / den


def vif(ref: np.ndarray, dist: np.ndarray) -> float:
    """Pixel-domain visual information fidelity (VIFP, Sheikh and Bovik 2006) of ``dist``.

    Four scales; at scale ``s`` a Gaussian window of ``N = 2^(5-s) + 1`` taps (17, 9, 5, 3) with
    sigma ``N / 5`` gives local means, variances ``s1`` (ref), ``s2`` (dist) and covariance
    ``s12`` over the ``'valid'`` region; from scale 2 on both images are first low-passed with
    that window and decimated by 2. The channel model ``dist = g ref + v`` has gain
    ``g = s12 / s1`` and noise variance ``sv = s2 - g s12`` (``g = 0`` where ``s1`` or ``s2``
    vanishes or ``g < 0``, then ``sv`` = ``s2``, or 0 where ``s2`` vanishes; ``sv >= 1e-10``).
    With HVS noise ``sigma_n^2 = 2``::

        VIF = sum log(1 + g^2 s1 / (sv + 2)) / sum log(1 + s1 / 2)   (sums over pixels and scales)

    ``vif(x, x) == 1``; contrast enhancement gives values above 1. A reference without variance
    returns 1.0 (the evaluator's fallback for 0/0). The fusion metric is
    ``vif(IR, F) + vif(VIS, F)``. Needs both sides >= :data:`VIF_MIN_SIDE` pixels.
    """
    ref, dist = _as_images(ref=ref, dist=dist)
    return _vif(ref, dist)


def _ssim(a: np.ndarray, b: np.ndarray, style: str) -> float:
    if style == 'wang':
        win, data_range, cov_norm = 11, 255.0, 1.0
        k = cv2.getGaussianKernel(win, 1.5, cv2.CV_64F).ravel()
    else:  # 'evaluator': scikit-image 0.19 defaults on float input
        win, data_range = 7, 2.0
        cov_norm = win * win / (win * win - 1.0)
        k = np.full(win, 1.0 / win)
    _require_side(a.shape, win, f'SSIM ({style})')
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    ma, mb = _filter_valid(a, k), _filter_valid(b, k)
    va = cov_norm * (_filter_valid(a * a, k) - ma * ma)
    vb = cov_norm * (_filter_valid(b * b, k) - mb * mb)
    cab = cov_norm * (_filter_valid(a * b, k) - ma * mb)
    s = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(s.mean())


def ssim(a: np.ndarray, b: np.ndarray, *, style: str = 'wang') -> float:
    """Mean structural similarity of two images.

    Local SSIM ``((2 mu_a mu_b + C1)(2 s_ab + C2)) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))``
    with ``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2``, averaged over the positions where the window
    lies fully inside the image. ``style`` picks window and constants:

    * ``'wang'`` (default): Wang et al. 2004 -- 11x11 Gaussian window, sigma 1.5, population
      statistics, L = 255. No automatic downsampling of large images.
    * ``'evaluator'``: what the MMIF-CDDFuse evaluator gets from scikit-image 0.19's
      ``structural_similarity(F, X)`` on ``float32`` 0..255 images: 7x7 uniform window, sample
      statistics (x 49/48), and L = 2 because no ``data_range`` is passed.

    ``ssim(x, x) == 1`` in both styles. The fusion metric is ``ssim(F, IR) + ssim(F, VIS)``.
    """
    if style not in SSIM_STYLES:
        raise ValueError(f'unknown SSIM style {style!r}; choose from {SSIM_STYLES}')
    a, b = _as_images(a=a, b=b)
    return _ssim(a, b, style)


# --------------------------------------------------------------------------------------------
# Measures of a fused image against both sources
# --------------------------------------------------------------------------------------------

def _scd(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return _correlation(f - b, a) + _correlation(f - a, b)


def scd(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SCD: sum of the correlations of differences (Aslantas and Bendes 2015).

    ``SCD = r(F - B, A) + r(F - A, B)`` with ``r`` the Pearson correlation: what ``F`` adds to
    one source should look like the other source. ``F = A + B`` gives 2. NaN when a difference
    or a source is constant (e.g. ``F == A``).
    """
    fused, a, b = _as_images(fused=fused, a=a, b=b)
    return _scd(fused, a, b)


def _sobel(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel gradient strength and orientation; zero padding outside (``'same'`` convolution)."""
    sx = cv2.filter2D(img, cv2.CV_64F, _SOBEL_X, borderType=cv2.BORDER_CONSTANT)
    sy = cv2.filter2D(img, cv2.CV_64F, _SOBEL_Y, borderType=cv2.BORDER_CONSTANT)
    strength = np.sqrt(sx * sx + sy * sy)
    zero = sx == 0
    with np.errstate(divide='ignore', invalid='ignore'):
        angle = np.where(zero, np.pi / 2, np.arctan(sy / np.where(zero, 1.0, sx)))
    return strength, angle


def _edge_preservation(g_src: np.ndarray, a_src: np.ndarray,
                       g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    """Per-pixel Q^{XF}: how well F keeps the strength and orientation of the source edges."""
    with np.errstate(divide='ignore', invalid='ignore'):
        strength = np.where(g_src > g_f, g_f / g_src,
                            np.where(g_src == g_f, g_f, g_src / g_f))
    orientation = 1.0 - np.abs(a_src - a_f) / (np.pi / 2)
    q_g = QABF_TG / (1.0 + np.exp(QABF_KG * (strength - QABF_DG)))
    q_a = QABF_TA / (1.0 + np.exp(QABF_KA * (orientation - QABF_DA)))
    return q_g * q_a


def _qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    g_a, a_a = _sobel(a)
    g_b, a_b = _sobel(b)
    g_f, a_f = _sobel(f)
    w_a, w_b = g_a ** QABF_L, g_b ** QABF_L
    den = float(np.sum(w_a + w_b))
    if den == 0.0:
        return math.nan
    q_af = _edge_preservation(g_a, a_a, g_f, a_f)
    q_bf = _edge_preservation(g_b, a_b, g_f, a_f)
    return float(np.sum(q_af * w_a + q_bf * w_b)) / den


def qabf(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Qabf (Q^{AB/F}): Xydeas and Petrovic's edge-information preservation, 0..~0.975.

    Sobel components ``sx``, ``sy`` (zero padding), strength ``g = sqrt(sx^2 + sy^2)`` and
    orientation ``alpha = arctan(sy / sx)`` (``pi/2`` where ``sx = 0``). For a source ``X``:
    relative strength ``G = g_F / g_X`` if ``g_X > g_F``, ``g_X / g_F`` if ``g_X < g_F`` and
    ``g_F`` if equal (the reference MATLAB/Python quirk, kept for comparability; for 8-bit images
    it differs from the paper's 1 by < 6e-4 per pixel), relative orientation
    ``A = 1 - |alpha_X - alpha_F| / (pi/2)``, and::

        Q^{XF} = Tg / (1 + exp(kg (G - Dg))) * Ta / (1 + exp(ka (A - Da)))
        Qabf = sum(Q^{AF} g_A^L + Q^{BF} g_B^L) / sum(g_A^L + g_B^L)

    with Tg = 0.9994, kg = -15, Dg = 0.5, Ta = 0.9879, ka = -22, Da = 0.8, L = 1. A perfect
    fusion (``F = A = B``) scores about 0.975, the product of the two sigmoids' ceilings. NaN
    when neither source has any gradient.
    """
    fused, a, b = _as_images(fused=fused, a=a, b=b)
    return _qabf(fused, a, b)


def _psnr(f: np.ndarray, a: np.ndarray, b: np.ndarray, peak: float | None) -> float:
    mse = (np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0
    p = float(f.max()) if peak is None else float(peak)
    if mse == 0.0:
        return math.inf
    if p == 0.0:
        return -math.inf
    return 10.0 * math.log10(p * p / mse)


def psnr(fused: np.ndarray, a: np.ndarray, b: np.ndarray, *,
         peak: float | None = 255.0) -> float:
    """PSNR of a fused image against both sources, in dB.

    ``PSNR = 10 log10(peak^2 / MSE)`` with ``MSE = (MSE(F, A) + MSE(F, B)) / 2`` (one PSNR of the
    averaged error, not the average of two PSNRs). ``peak=None`` uses ``max(F)`` as the
    evaluator does (the same as 255 for min-max normalised fused images). ``inf`` when F equals
    both sources.
    """
    if peak is not None and not peak > 0:
        raise ValueError(f'peak must be positive or None, got {peak!r}')
    fused, a, b = _as_images(fused=fused, a=a, b=b)
    return _psnr(fused, a, b, peak)


# --------------------------------------------------------------------------------------------
# All at once
# --------------------------------------------------------------------------------------------

_SSIM_STYLE = {'standard': 'wang', 'evaluator': 'evaluator'}

_Metric = Callable[[np.ndarray, np.ndarray, np.ndarray, str], float]

_METRICS: dict[str, _Metric] = {
    'EN': lambda f, a, b, conv: _entropy(f),
    'SD': lambda f, a, b, conv: _standard_deviation(f),
    'SF': lambda f, a, b, conv: _spatial_frequency(f),
    'AG': lambda f, a, b, conv: _average_gradient(f),
    'MI': lambda f, a, b, conv: _mutual_information(f, a) + _mutual_information(f, b),
    'SCD': lambda f, a, b, conv: _scd(f, a, b),
    'VIF': lambda f, a, b, conv: _vif(a, f) + _vif(b, f),
    'Qabf': lambda f, a, b, conv: _qabf(f, a, b),
    'SSIM': lambda f, a, b, conv: (_ssim(f, a, _SSIM_STYLE[conv])
                                   + _ssim(f, b, _SSIM_STYLE[conv])),
    'PSNR': lambda f, a, b, conv: _psnr(f, a, b, 255.0 if conv == 'standard' else None),
    'CC': lambda f, a, b, conv: (_correlation(f, a) + _correlation(f, b)) / 2.0,
}


def compute_metrics(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray,
                    names: Iterable[str] = METRIC_NAMES, *,
                    convention: str = 'standard') -> dict[str, float]:
    """Compute fusion metrics of ``fused`` against its infrared and visible sources.

    ``names`` selects metrics from :data:`METRIC_NAMES` (e.g. :data:`HEADLINE`); the result maps
    each to its value, in the order asked. ``convention`` is ``'standard'`` or ``'evaluator'``
    (see the module docstring; they differ only in SSIM and PSNR). Raises ``ValueError`` for an
    unknown name or convention, non-2-D input, values outside 0..255 or mismatched shapes.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f'unknown convention {convention!r}; choose from {CONVENTIONS}')
    names = (names,) if isinstance(names, str) else tuple(names)
    unknown = [n for n in names if n not in _METRICS]
    if unknown:
        raise ValueError(f'unknown metric(s) {unknown}; choose from {METRIC_NAMES}')
    f, a, b = _as_images(fused=fused, ir=ir, vis=vis)
    return {n: float(_METRICS[n](f, a, b, convention)) for n in names}


def mean_metrics(per_item: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over items (pairs, images): ``{item: {metric: value}}`` ->
    ``{metric: mean}``, the metrics of the first item in its order."""
    if not per_item:
        raise ValueError('no metrics to average')
    names = next(iter(per_item.values())).keys()
    return {k: float(np.mean([m[k] for m in per_item.values()])) for k in names}


def format_table(rows: Mapping[str, Mapping[str, float]],
                 names: Iterable[str] | None = None, *,
                 precision: int = 4, label: str = 'method') -> str:
    """An aligned plain-text table: one line per row label, one column per metric.

    ``rows`` maps a label (a method, an image) to its metrics, e.g. the output of
    :func:`compute_metrics`. ``names`` fixes the columns; by default the metrics present in any
    row, in :data:`METRIC_NAMES` order, then any others in order of appearance. Values print with
    ``precision`` decimals; a metric missing from a row prints as ``-``.
    """
    if names is None:
        present: list[str] = []
        for metrics in rows.values():
            present.extend(n for n in metrics if n not in present)
        cols = [n for n in METRIC_NAMES if n in present]
        cols += [n for n in present if n not in METRIC_NAMES]
    else:
        cols = [names] if isinstance(names, str) else list(names)

    def cell(metrics: Mapping[str, float], name: str) -> str:
        if name not in metrics:
            return '-'
        value = float(metrics[name])
        return f'{value:.{precision}f}' if math.isfinite(value) else str(value)

    body = [[str(lab)] + [cell(m, n) for n in cols] for lab, m in rows.items()]
    header = [label] + cols
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return '  '.join([first] + rest).rstrip()

    rule = '  '.join('-' * w for w in widths)
    return '\n'.join([line(header), rule] + [line(r) for r in body])
