"""ddl.metrics against scikit-image (PSNR, SSIM) and hand counts (accuracy, confidence, subset)."""

import json
import math
import re

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ddl import metrics


def _pairs(rng, shape):
    """Clean images and a noisy copy clipped to [0, 1], float64 numpy (N, C, H, W)."""
    clean = rng.uniform(0.0, 1.0, size=shape)
    # Add some structure so SSIM is not ~0: smooth ramps plus noise.
    ramp = np.linspace(0, 1, shape[-1])[None, None, None, :]
    clean = 0.5 * clean + 0.5 * ramp
    noisy = np.clip(clean + rng.normal(0.0, 0.1, size=shape), 0.0, 1.0)
    return clean, noisy


# ------------------------------------------------------------------------------------ accuracy
def test_accuracy_from_logits_and_labels_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [5.0, 1.0, 9.0], [0.0, 0.1, 0.0]])
    y = torch.tensor([0, 1, 1, 1])
    assert metrics.accuracy(logits, y) == 0.75                        # rows 0, 1, 3 right
    assert metrics.accuracy(torch.tensor([0, 2, 2, 1]), y) == 0.5      # labels: 0 and 3 right


def test_accuracy_errors():
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="^" + re.escape(
            "accuracy: y must be an int64 tensor of shape (3,) (one per prediction); got int64 tensor of shape (2,).")
            + "$"):
        metrics.accuracy(torch.zeros(3, 2), y)
    with pytest.raises(TypeError, match="^" + re.escape(
            "accuracy: y must be an int64 tensor of shape (2,) (one per prediction); got int32 tensor of shape (2,).")
            + "$"):
        metrics.accuracy(torch.zeros(2, 2), y.int())
    with pytest.raises(TypeError, match="accuracy: predicted labels .* must be int64; got torch.float32"):
        metrics.accuracy(torch.tensor([0.0, 1.0]), y)
    with pytest.raises(ValueError, match="accuracy: logits_or_pred holds no samples"):
        metrics.accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"accuracy: logits_or_pred must have shape \(N, K\)"):
        metrics.accuracy(torch.zeros(2, 2, 2), y)
    with pytest.raises(TypeError, match="accuracy: logits_or_pred must be a torch.Tensor"):
        metrics.accuracy([[0.0, 1.0]], y)


# ------------------------------------------------------------------------------------ confidence
def test_mean_confidence_by_hand():
    # softmax([0, 0]) max = 1/2; softmax([ln 3, 0]) max = 3/4; softmax([0, ln 4, 0]) max = 4/6.
    logits = torch.tensor([[0.0, 0.0, -math.inf], [math.log(3.0), 0.0, -math.inf], [0.0, math.log(4.0), 0.0]], dtype=torch.float64)
    assert metrics.mean_confidence(logits) == pytest.approx((0.5 + 0.75 + 4 / 6) / 3, rel=1e-12)


def test_high_confidence_misclassified_by_hand():
    # Confidences: ln 9 → 0.9 exactly (inclusive); ln 8 → 8/9 < 0.9.
    logits = torch.tensor([[math.log(9.0), 0.0],    # pred 0, conf 0.9, y=1 → wrong, selected
                           [math.log(8.0), 0.0],    # pred 0, conf 0.889, y=1 → wrong, not confident
                           [0.0, 5.0],              # pred 1, conf 0.993, y=1 → right
                           [7.0, 0.0]])             # pred 0, conf 0.999, y=1 → selected
    y = torch.tensor([1, 1, 1, 1])
    mask = metrics.high_confidence_misclassified(logits, y)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [True, False, False, True]
    assert metrics.high_confidence_misclassified(logits, y, threshold=0.0).tolist() == [True, True, False, True]
    assert metrics.high_confidence_misclassified(logits, y, threshold=0.9995).tolist() == [False] * 4


def test_high_confidence_errors_more():
    with pytest.raises(ValueError, match="^" + re.escape(
            "high_confidence_misclassified: y must be an int64 tensor of shape (2,) (one per prediction); "
            "got int64 tensor of shape (3,).") + "$"):
        metrics.high_confidence_misclassified(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="mean_confidence: logits must be a floating-point tensor; got torch.int64"):
        metrics.mean_confidence(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="^" + re.escape(
            "accuracy: y must be an int64 tensor of shape (2,) (one per prediction); got list.") + "$"):
        metrics.accuracy(torch.zeros(2, 3), [0, 1])


def test_high_confidence_errors():
    with pytest.raises(ValueError, match=r"high_confidence_misclassified: threshold must be a finite number in \[0, 1\]; got 1.5"):
        metrics.high_confidence_misclassified(torch.zeros(2, 3), torch.tensor([0, 1]), threshold=1.5)
    with pytest.raises(ValueError, match="mean_confidence: logits must have shape"):
        metrics.mean_confidence(torch.zeros(3))


# ------------------------------------------------------------------------------------ PSNR
@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (4, 3, 32, 32)], ids=["grey28", "colour32"])
@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_psnr_matches_skimage(rng, shape, data_range):
    clean, noisy = _pairs(rng, shape)
    ours = metrics.psnr(torch.from_numpy(noisy).float(), torch.from_numpy(clean).float(),
                        data_range=data_range, reduction="none")
    ref = [peak_signal_noise_ratio(clean[i].astype(np.float32), noisy[i].astype(np.float32),
                                   data_range=data_range) for i in range(shape[0])]
    assert ours.shape == (shape[0],) and ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5)
    assert metrics.psnr(torch.from_numpy(noisy), torch.from_numpy(clean),
                        data_range=data_range) == pytest.approx(np.mean(ref), rel=1e-5)


def test_psnr_by_hand_and_identical_images():
    ref = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    x = ref.clone()
    x[0, 0, 0, 0] = 0.2                                   # MSE = 0.04 / 4 = 0.01 → 20 dB
    values = metrics.psnr(x, ref, reduction="none")
    assert values[0].item() == pytest.approx(20.0, abs=1e-9)
    assert values[1].item() == math.inf                   # documented: identical → +inf
    assert metrics.psnr(x, ref) == math.inf               # and the mean follows


def test_psnr_errors():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"psnr: x and x_ref must have the same shape; got \(2, 1, 4, 4\) and \(2, 1, 4, 3\)"):
        metrics.psnr(x, torch.zeros(2, 1, 4, 3))
    with pytest.raises(ValueError, match="psnr: data_range must be a finite number > 0; got 0"):
        metrics.psnr(x, x, data_range=0)
    with pytest.raises(ValueError, match="psnr: reduction must be one of .*; got 'sum'"):
        metrics.psnr(x, x, reduction="sum")
    with pytest.raises(TypeError, match="psnr: x must be a floating-point tensor; got torch.uint8"):
        metrics.psnr(x.to(torch.uint8), x)


# ------------------------------------------------------------------------------------ SSIM
def _skimage_ssim(clean, noisy, data_range, **kw):
    return [structural_similarity(clean[i], noisy[i], gaussian_weights=True, sigma=kw.get("sigma", 1.5),
                                  use_sample_covariance=False, data_range=data_range, channel_axis=0,
                                  win_size=kw.get("win_size", 11))
            for i in range(clean.shape[0])]


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (4, 3, 32, 32)], ids=["grey28", "colour32"])
@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_ssim_matches_skimage(rng, shape, data_range):
    clean, noisy = _pairs(rng, shape)
    ours = metrics.ssim(torch.from_numpy(noisy), torch.from_numpy(clean), data_range=data_range,
                        reduction="none")
    ref = _skimage_ssim(clean, noisy, data_range)
    assert ours.shape == (shape[0],) and ours.dtype == torch.float64
    assert 0.1 < min(ref) < max(ref) < 0.99                # a non-trivial comparison
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5)
    assert metrics.ssim(torch.from_numpy(noisy).float(), torch.from_numpy(clean).float(),
                        data_range=data_range) == pytest.approx(np.mean(ref), rel=1e-5)


def test_ssim_other_window_matches_skimage(rng):
    # sigma = 1.0 → skimage's Gaussian radius int(3.5 + 0.5) = 4, so win_size 9 is the same window.
    clean, noisy = _pairs(rng, (3, 2, 20, 24))
    ours = metrics.ssim(torch.from_numpy(noisy), torch.from_numpy(clean), win_size=9, sigma=1.0,
                        reduction="none")
    np.testing.assert_allclose(ours.numpy(), _skimage_ssim(clean, noisy, 1.0, win_size=9, sigma=1.0),
                               rtol=1e-5)


def test_ssim_constants_match_skimage(rng):
    clean, noisy = _pairs(rng, (2, 1, 16, 16))
    ours = metrics.ssim(torch.from_numpy(noisy), torch.from_numpy(clean), k1=0.05, k2=0.1, reduction="none")
    ref = [structural_similarity(clean[i, 0], noisy[i, 0], gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0, K1=0.05, K2=0.1)
           for i in range(2)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5)


def test_ssim_identical_and_symmetric(rng):
    clean, noisy = _pairs(rng, (3, 3, 16, 16))
    a, b = torch.from_numpy(clean), torch.from_numpy(noisy)
    assert metrics.ssim(a, a) == 1.0
    torch.testing.assert_close(metrics.ssim(a, b, reduction="none"), metrics.ssim(b, a, reduction="none"))


def test_ssim_chunking_matches_single_pass(rng, monkeypatch):
    clean, noisy = _pairs(rng, (7, 1, 12, 12))
    a, b = torch.from_numpy(noisy), torch.from_numpy(clean)
    whole = metrics.ssim(a, b, reduction="none")
    monkeypatch.setattr(metrics, "_SSIM_CHUNK", 3)        # chunks 3 + 3 + 1
    torch.testing.assert_close(metrics.ssim(a, b, reduction="none"), whole, rtol=0, atol=0)


def test_ssim_errors():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(TypeError, match="ssim: x_ref must be a torch.Tensor; got ndarray"):
        metrics.ssim(x, x.numpy(), win_size=5)
    with pytest.raises(TypeError, match="ssim: x must be a floating-point tensor; got torch.int64"):
        metrics.ssim(x.long(), x, win_size=5)
    with pytest.raises(ValueError, match=r"ssim: x must be a batch of images \(N, ...\) with N >= 1"):
        metrics.ssim(x[:0], x[:0], win_size=5)
    with pytest.raises(ValueError, match="ssim: data_range must be a finite number > 0; got True"):
        metrics.ssim(x, x, win_size=5, data_range=True)
    with pytest.raises(ValueError, match=r"ssim: win_size must not exceed the image height and width \(H=8, W=8\); got 11"):
        metrics.ssim(x, x)
    with pytest.raises(ValueError, match=r"^ssim: win_size must be an odd int >= 3; got 4\.$"):
        metrics.ssim(x, x, win_size=4)
    with pytest.raises(ValueError, match="ssim: sigma must be a finite number > 0; got -1"):
        metrics.ssim(x, x, win_size=5, sigma=-1.0)
    with pytest.raises(ValueError, match="ssim: k2 must be a finite number >= 0; got -0.1"):
        metrics.ssim(x, x, win_size=5, k2=-0.1)
    with pytest.raises(ValueError, match=r"ssim: x must have shape \(N, C, H, W\); got shape \(2, 8, 8\)"):
        metrics.ssim(x[:, 0], x[:, 0], win_size=5)


# ------------------------------------------------------------------- intervals and paired tests
# References: scipy.stats.binomtest (Wilson interval, exact binomial test) and the paired-difference
# interval published by Fagerland, Lydersen & Laake (2017) for Newcombe's method 10.
from scipy.stats import binomtest  # noqa: E402


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (0, 8), (3, 8), (7, 8), (8, 8), (1, 50), (49, 50),
                                  (500, 1000), (9321, 10000), (9999, 10000), (0, 10000)])
@pytest.mark.parametrize("confidence", [0.95, 0.99, 0.5])
def test_wilson_interval_equals_scipy(k, n, confidence):
    ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = metrics.wilson_interval(k, n, confidence)
    assert (low, high) == pytest.approx((ref.low, ref.high), rel=1e-12, abs=1e-15)
    assert isinstance(low, float) and isinstance(high, float)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_interval_by_hand():
    # k = 7, n = 8, z = 1.959964: (2·7 + z² ∓ z·sqrt(4·7·(1/8) + z²)) / (2·(8 + z²))
    z = 1.959963984540054
    half = z * math.sqrt(4 * 7 * (1 / 8) + z * z)
    expected = ((14 + z * z - half) / (2 * (8 + z * z)), (14 + z * z + half) / (2 * (8 + z * z)))
    assert metrics.wilson_interval(7, 8) == pytest.approx(expected, rel=1e-14)
    assert metrics.wilson_interval(7, 8) == pytest.approx((0.52911, 0.97758), abs=1e-5)
    assert metrics.wilson_interval(0, 10) == (0.0, pytest.approx(0.27753, abs=1e-5))
    assert metrics.wilson_interval(10, 10) == (pytest.approx(0.72247, abs=1e-5), 1.0)


@pytest.mark.parametrize("args, kw, error, message", [
    ((3, 0), {}, ValueError, "wilson_interval: n must be an int >= 1; got 0."),
    ((3, 2), {}, ValueError, "wilson_interval: k must be an int in [0, n=2]; got 3."),
    ((-1, 2), {}, ValueError, "wilson_interval: k must be an int in [0, n=2]; got -1."),
    ((1.0, 2), {}, TypeError, "wilson_interval: k must be an int in [0, n=2]; got 1.0."),
    ((True, 2), {}, TypeError, "wilson_interval: k must be an int in [0, n=2]; got True."),
    ((1, 2), {"confidence": 1.0}, ValueError, "wilson_interval: confidence must be a finite number in (0, 1); got 1.0."),
    ((1, 2), {"confidence": 95}, ValueError, "wilson_interval: confidence must be a finite number in (0, 1); got 95."),
    ((1, 2), {"confidence": float("nan")}, ValueError,
     "wilson_interval: confidence must be a finite number in (0, 1); got nan."),
])
def test_wilson_interval_errors(args, kw, error, message):
    with pytest.raises(error, match="^" + re.escape(message) + "$"):
        metrics.wilson_interval(*args, **kw)


def _paired(n11, n10, n01, n00):
    """Per-image correctness of A and B with the given cell counts (n10: A right, B wrong)."""
    a = [1] * n11 + [1] * n10 + [0] * n01 + [0] * n00
    b = [1] * n11 + [0] * n10 + [1] * n01 + [0] * n00
    return a, b


@pytest.mark.parametrize("n11, n10, n01, n00", [
    (3, 0, 0, 1), (3, 1, 0, 1), (0, 2, 0, 0), (5, 3, 3, 0), (10, 7, 1, 2), (59, 6, 16, 80),
    (900, 40, 25, 35), (9000, 210, 150, 640), (100, 0, 13, 0), (1, 17, 0, 0)])
def test_mcnemar_counts_and_p_value_equal_scipy_binomtest(n11, n10, n01, n00):
    a, b = _paired(n11, n10, n01, n00)
    perm = np.random.default_rng(0).permutation(len(a))  # the order of the images is irrelevant
    r = metrics.mcnemar(np.array(a)[perm].astype(bool), torch.tensor(b)[perm])
    assert (r["n_images"], r["b01"], r["b10"]) == (len(a), n01, n10)
    expected = 1.0 if n10 + n01 == 0 else binomtest(n10, n10 + n01, 0.5).pvalue
    assert r["p_value"] == pytest.approx(expected, rel=1e-12)
    assert r["difference"] == pytest.approx((n10 - n01) / len(a), rel=1e-15)
    json.dumps(r)  # plain numbers: results.json stores it


def test_mcnemar_by_hand():
    # A right on 4 of 6 images, B on 2; A alone right on images 1 and 2 (b10 = 2), B alone on none:
    # p = P(2 or 0 of 2 fair coins) = 2 · (1/2)² = 0.5
    r = metrics.mcnemar([True, True, True, False, False, True], [True, False, False, False, False, True])
    assert (r["b01"], r["b10"], r["p_value"], r["difference"]) == (0, 2, 0.5, 2 / 6)
    # 1 discordant image: p = 2 · 1/2 = 1; none: p = 1 and the difference is 0
    assert metrics.mcnemar([1, 0], [1, 1])["p_value"] == 1.0
    same = metrics.mcnemar([1, 0, 1], [1, 0, 1])
    assert (same["b01"], same["b10"], same["p_value"], same["difference"]) == (0, 0, 1.0, 0.0)


def test_mcnemar_difference_interval_equals_the_published_newcombe_interval():
    # Fagerland, Lydersen & Laake (2017) §8 (Cavo et al. 2012): the paired table [[59, 6], [16, 80]]
    # (rows: first measurement success/failure; columns: second), Newcombe square-and-add interval
    # "estimate = -0.0621 (95% CI -0.1186 to -0.0046)"
    r = metrics.mcnemar(*_paired(59, 6, 16, 80))
    assert round(r["difference"], 4) == -0.0621
    assert [round(v, 4) for v in r["difference_ci"]] == [-0.1186, -0.0046]
    assert r["confidence"] == 0.95
    # swapping A and B mirrors the interval
    s = metrics.mcnemar(*_paired(59, 16, 6, 80))
    assert s["difference_ci"] == pytest.approx([-v for v in reversed(r["difference_ci"])], rel=1e-12)


def test_mcnemar_difference_interval_without_correlation_is_newcombes_square_and_add():
    # A always right, B right on 7 of 10: φ = 0 (a margin is empty), so the interval is
    # d − sqrt((1 − l_a)² + (u_b − 0.7)²), d + sqrt((0.7 − l_b)² + (u_a − 1)²) with the Wilson
    # bounds from scipy; u_a = 1, so the upper bound is d + (0.7 − l_b)
    r = metrics.mcnemar(*_paired(7, 3, 0, 0))
    la, ua = binomtest(10, 10).proportion_ci(method="wilson")
    lb, ub = binomtest(7, 10).proportion_ci(method="wilson")
    d = 0.3
    assert r["difference_ci"] == pytest.approx(
        [d - math.hypot(1 - la, ub - 0.7), d + math.hypot(0.7 - lb, ua - 1)], rel=1e-12)


@pytest.mark.parametrize("a, b, error, message", [
    ([1, 0], [1, 0, 1], ValueError, "mcnemar: a_correct and b_correct must hold one value per image of the "
                                    "same images; got 2 and 3 values."),
    ([], [], TypeError, "mcnemar: a_correct must be a 1-D sequence of booleans (or of 0 and 1), one per image, "
                        "with at least one image; got list."),
    ([0.5, 1.0], [1, 0], TypeError, "mcnemar: a_correct must be a 1-D sequence of booleans (or of 0 and 1), one "
                                    "per image, with at least one image; got list."),
    ([1, 0], [[1, 0]], TypeError, "mcnemar: b_correct must be a 1-D sequence of booleans (or of 0 and 1), one "
                                  "per image, with at least one image; got list."),
    ([1, 2], [1, 0], ValueError, "mcnemar: a_correct must be a 1-D sequence of booleans (or of 0 and 1), one per "
                                 "image, with at least one image; got list holding 2."),
    (torch.tensor([1.0, 0.0]), [1, 0], TypeError, "mcnemar: a_correct must be a 1-D sequence of booleans (or of 0 "
                                                  "and 1), one per image, with at least one image; got float32 "
                                                  "tensor of shape (2,)."),
])
def test_mcnemar_errors(a, b, error, message):
    with pytest.raises(error, match="^" + re.escape(message) + "$"):
        metrics.mcnemar(a, b)
    with pytest.raises(ValueError, match="^" + re.escape(
            "mcnemar: confidence must be a finite number in (0, 1); got 0.") + "$"):
        metrics.mcnemar([1, 0], [1, 1], confidence=0)


def test_stats_examples_run_and_need_no_torch():
    import doctest
    import subprocess
    import sys

    import ddl._stats

    assert doctest.testmod(ddl._stats).failed == 0
    # the report computes intervals of old results with them, and never imports torch
    code = "import sys, ddl._stats; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
