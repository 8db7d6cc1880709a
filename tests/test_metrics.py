"""ddl.metrics against scikit-image (PSNR, SSIM) and hand counts (accuracy, confidence, subset)."""

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
