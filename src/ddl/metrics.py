"""Evaluation metrics: accuracy, confidence, PSNR, SSIM, the high-confidence subset, and the
statistics of an accuracy over images (Wilson interval, paired McNemar test).

Everything here takes torch tensors in the project's conventions (images float ``(N, C, H, W)``,
labels int64 ``(N,)``, logits ``(N, K)``) and returns plain Python floats for reductions, so
results drop straight into ``results.json``.

:func:`wilson_interval` and :func:`mcnemar` are defined in ``ddl._stats`` (standard library and
NumPy only, so that the report can use them without torch) and are public here: every accuracy ddl
reports carries its 95 % Wilson interval over images, and every comparison of two accuracies on
the same images a paired McNemar test (DESIGN.md §5b).

SSIM is written by hand in torch rather than called from scikit-image because the pipeline scores
tens of thousands of images per run: one batched, separable Gaussian filter over the whole batch
(two float64 GEMMs with banded matrices) is much faster than a Python loop over images and
channels (10,000 CIFAR-10 images in about 3 s on one CPU thread), and runs on the GPU. It
reproduces ``skimage.metrics.structural_similarity(im1, im2, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=..., channel_axis=0)`` image by image (the tests check
this to a relative 1e-5 on grey 28×28 and colour 32×32 images).

References
----------
Wang, Bovik, Sheikh, Simoncelli (2004), "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13(4):600-612 — eq. (13) (SSIM with C3 = C2/2), eq. (14)-(16)
(Gaussian-weighted local statistics, 11×11 window, σ = 1.5, population covariances) and
eq. (17) (mean SSIM).
"""

from __future__ import annotations

import math

import torch

from ddl._stats import mcnemar, wilson_interval
from ddl._validate import check_choice, check_int, check_labels, check_number

__all__ = ["accuracy", "mean_confidence", "psnr", "ssim", "high_confidence_misclassified", "mcnemar",
           "wilson_interval"]

_REDUCTIONS = ("mean", "none")
# Images per chunk in ssim: bounds memory (float64 intermediates) for tens of thousands of images.
_SSIM_CHUNK = 128


# ----------------------------------------------------------------------------- validation
def _check_logits(fn: str, logits: torch.Tensor, name: str = "logits") -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor of shape (N, K); got {type(logits).__name__}.")
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"{fn}: {name} must have shape (N, K) with K >= 1; got shape {tuple(logits.shape)}.")
    if not logits.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor; got {logits.dtype}.")
    if logits.shape[0] == 0:
        raise ValueError(f"{fn}: {name} holds no samples (N=0); the metric is undefined for an empty set.")


def _check_pair(fn: str, x: torch.Tensor, x_ref: torch.Tensor, data_range: float, reduction: str) -> None:
    for name, t in (("x", x), ("x_ref", x_ref)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor; got {type(t).__name__}.")
        if not t.is_floating_point():
            raise TypeError(f"{fn}: {name} must be a floating-point tensor; got {t.dtype}.")
    if x.shape != x_ref.shape:
        raise ValueError(f"{fn}: x and x_ref must have the same shape; got {tuple(x.shape)} and "
                         f"{tuple(x_ref.shape)}.")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{fn}: x must be a batch of images (N, ...) with N >= 1; got shape {tuple(x.shape)}.")
    check_number(fn, "data_range", data_range, low=0, low_open=True)
    check_choice(fn, "reduction", reduction, _REDUCTIONS)


def _reduce(values: torch.Tensor, reduction: str) -> float | torch.Tensor:
    return float(values.mean()) if reduction == "mean" else values


# ----------------------------------------------------------------------------- classification
def accuracy(logits_or_pred: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of correct predictions.

    Parameters
    ----------
    logits_or_pred : Tensor of shape (N, K) floating point, or (N,) int64
        Either the model's outputs (the arg-max over K is the prediction) or predicted labels.
    y : Tensor of shape (N,), int64
        True labels.

    Returns
    -------
    float
        Accuracy in [0, 1].

    Examples
    --------
    >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]]), torch.tensor([0, 1, 1]))
    0.6666666666666666
    >>> accuracy(torch.tensor([1, 1, 0, 2]), torch.tensor([1, 0, 0, 2]))
    0.75
    """
    t = logits_or_pred
    if isinstance(t, torch.Tensor) and t.ndim == 1:
        if t.dtype != torch.int64:
            raise TypeError(f"accuracy: predicted labels (1-D logits_or_pred) must be int64; got {t.dtype}.")
        if t.shape[0] == 0:
            raise ValueError("accuracy: logits_or_pred holds no samples (N=0); accuracy is undefined.")
        pred = t
    else:
        _check_logits("accuracy", t, "logits_or_pred")
        pred = t.argmax(dim=1)
    check_labels("accuracy", "y", y, pred.shape[0], per="prediction")
    return float((pred == y.to(pred.device)).double().mean())


def mean_confidence(logits: torch.Tensor) -> float:
    """Mean over images of the largest softmax probability.

    Parameters
    ----------
    logits : Tensor of shape (N, K), floating point
        Pre-softmax model outputs (softmax is applied here).

    Returns
    -------
    float
        Mean of ``max_k softmax(logits)_k``, in [1/K, 1].

    Examples
    --------
    >>> round(mean_confidence(torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])), 6)
    0.625
    """
    _check_logits("mean_confidence", logits)
    return float(torch.softmax(logits.double(), dim=1).amax(dim=1).mean())


def high_confidence_misclassified(logits: torch.Tensor, y: torch.Tensor, *,
                                  threshold: float = 0.9) -> torch.Tensor:
    """Mask of images "misclassified with high confidence" (Mitro et al. 2018, §Experiments).

    An image is selected when the prediction is wrong **and** its largest softmax probability is
    at least ``threshold``.

    Parameters
    ----------
    logits : Tensor of shape (N, K), floating point
        Pre-softmax outputs, typically on the perturbed images.
    y : Tensor of shape (N,), int64
        True labels.
    threshold : float in [0, 1], default 0.9
        Minimum max-softmax confidence (inclusive).

    Returns
    -------
    Tensor of shape (N,), bool

    Examples
    --------
    >>> lg = torch.tensor([[4.0, 0.0], [0.1, 0.0], [0.0, 4.0]])
    >>> high_confidence_misclassified(lg, torch.tensor([1, 1, 1])).tolist()
    [True, False, False]
    """
    _check_logits("high_confidence_misclassified", logits)
    check_labels("high_confidence_misclassified", "y", y, logits.shape[0], per="prediction")
    check_number("high_confidence_misclassified", "threshold", threshold, 0, 1)
    prob = torch.softmax(logits.double(), dim=1)
    conf, pred = prob.max(dim=1)
    return (pred != y.to(pred.device)) & (conf >= threshold)


# ----------------------------------------------------------------------------- image quality
def psnr(x: torch.Tensor, x_ref: torch.Tensor, *, data_range: float = 1.0,
         reduction: str = "mean") -> float | torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10·log10(data_range² / MSE)``, in dB.

    The MSE is taken over all of an image's values (channels included) in float64, as
    ``skimage.metrics.peak_signal_noise_ratio`` does.

    Parameters
    ----------
    x : Tensor of shape (N, ...), floating point
        Images to score (e.g. perturbed or denoised).
    x_ref : Tensor of the same shape, floating point
        Reference (clean) images.
    data_range : float > 0, default 1.0
        ``MAX``: the span of possible pixel values (1 for images in [0, 1]).
    reduction : {"mean", "none"}, default "mean"
        ``"mean"``: the mean of the per-image PSNRs (not the PSNR of the mean MSE), a float;
        ``"none"``: the per-image values, a float64 Tensor of shape (N,).

    Returns
    -------
    float or Tensor of shape (N,), float64

    Notes
    -----
    An image identical to its reference has MSE 0 and PSNR ``+inf`` (no warning); with
    ``reduction="mean"`` a single such image makes the mean ``+inf``. Use ``reduction="none"``
    and filter if you want the mean over changed images only.

    Examples
    --------
    >>> ref = torch.zeros(2, 1, 2, 2)
    >>> x = ref.clone(); x[0, 0, 0, 0] = 0.5      # MSE 0.25 / 4 → 10·log10(16) dB
    >>> psnr(x, ref, reduction="none").tolist()
    [12.041199826559248, inf]
    """
    _check_pair("psnr", x, x_ref, data_range, reduction)
    diff = x.double() - x_ref.to(x.device).double()
    mse = diff.pow(2).flatten(1).mean(dim=1)
    with torch.no_grad():
        values = 10.0 * torch.log10(data_range ** 2 / mse)   # mse = 0 → +inf
    return _reduce(values, reduction)


def _gaussian_kernel(win_size: int, sigma: float, dtype: torch.dtype, device) -> torch.Tensor:
    """Normalised 1-D Gaussian of length ``win_size`` (radius (win_size-1)//2), shape (win_size,)."""
    r = (win_size - 1) // 2
    t = torch.arange(-r, r + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _band(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """(size − win + 1, size) matrix whose row i holds ``kernel`` at columns i … i + win − 1."""
    win = kernel.numel()
    out = torch.zeros(size - win + 1, size, dtype=kernel.dtype, device=kernel.device)
    for j in range(win):
        out.diagonal(offset=j).fill_(float(kernel[j]))
    return out


def _ssim_chunk(x: torch.Tensor, y: torch.Tensor, kernel: torch.Tensor, c1: float, c2: float) -> torch.Tensor:
    """Mean SSIM per image of one chunk; x, y float64 (B, C, H, W) → (B,) float64."""
    b, c, h, w = x.shape
    # The five local statistics of every channel as separate images: (5·B·C, H, W).
    stack = torch.stack([x, y, x * x, y * y, x * y]).reshape(5 * b * c, h, w)
    # Separable Gaussian, 'valid' only: skimage filters with reflect padding and then crops a
    # border of (win-1)//2, which removes every output that touched the padding, so 'valid' is the
    # same. Each 1-D pass is one GEMM with a banded matrix (float64 GEMM is far faster than a
    # float64 convolution on the CPU): stat = G_h · X · G_wᵀ.
    g_h, g_w = _band(kernel, h), _band(kernel, w)
    ho, wo = g_h.shape[0], g_w.shape[0]
    stat = (stack.reshape(-1, w) @ g_w.T).reshape(-1, h, wo)          # (5BC, H, Wo)
    stat = (stat.transpose(1, 2).reshape(-1, h) @ g_h.T)               # (5BC·Wo, Ho)
    stat = stat.reshape(5, b, c, wo, ho)                               # transposed maps: order is irrelevant
    ux, uy, uxx, uyy, uxy = stat
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy        # population (co)variances
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(2, 3)).mean(dim=1)                             # per channel, then channels


def ssim(x: torch.Tensor, x_ref: torch.Tensor, *, data_range: float = 1.0, win_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
         reduction: str = "mean") -> float | torch.Tensor:
    """Mean structural similarity per image (Wang et al. 2004), Gaussian-weighted.

    For every channel, local means, variances and the covariance come from a ``win_size × win_size``
    Gaussian window of standard deviation ``sigma``; the SSIM map (eq. 13 of Wang et al., with
    C1 = (k1·data_range)², C2 = (k2·data_range)²) is averaged over the positions where the window
    fits inside the image (a border of ``(win_size-1)//2`` pixels is excluded, like scikit-image),
    then the channel means are averaged, like scikit-image's ``channel_axis``. Computed in float64.

    Covariance convention: **population** (normalised by the window weights summing to 1, no N-1
    correction), as in Wang et al. 2004 and ``structural_similarity(use_sample_covariance=False)``.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W), floating point
        Images to score.
    x_ref : Tensor of shape (N, C, H, W), floating point
        Reference (clean) images. SSIM is symmetric in ``x`` and ``x_ref``.
    data_range : float > 0, default 1.0
        Span of possible pixel values.
    win_size : odd int >= 3, default 11
        Side of the Gaussian window; must not exceed H or W.
    sigma : float > 0, default 1.5
        Standard deviation of the Gaussian window, in pixels.
    k1, k2 : float >= 0, defaults 0.01 and 0.03
        Stabilising constants of Wang et al.
    reduction : {"mean", "none"}, default "mean"
        ``"mean"``: mean over images, a float; ``"none"``: per-image values, float64 Tensor (N,).

    Returns
    -------
    float or Tensor of shape (N,), float64

    Notes
    -----
    scikit-image takes the Gaussian's support from ``sigma`` (radius ``int(3.5·sigma + 0.5)``) and
    uses ``win_size`` only for the border crop; here ``win_size`` sets both. The two agree when
    ``win_size == 2·int(3.5·sigma + 0.5) + 1``, which holds for the defaults (11 and 1.5).

    Examples
    --------
    >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> ssim(x, x)
    1.0
    """
    _check_pair("ssim", x, x_ref, data_range, reduction)
    if x.ndim != 4:
        raise ValueError(f"ssim: x must have shape (N, C, H, W); got shape {tuple(x.shape)}.")
    check_int("ssim", "win_size", win_size, 3, odd=True)
    if win_size > min(x.shape[2], x.shape[3]):
        raise ValueError(f"ssim: win_size must not exceed the image height and width "
                         f"(H={x.shape[2]}, W={x.shape[3]}); got {win_size}.")
    check_number("ssim", "sigma", sigma, low=0, low_open=True)
    check_number("ssim", "k1", k1, low=0)
    check_number("ssim", "k2", k2, low=0)
    kernel = _gaussian_kernel(win_size, float(sigma), torch.float64, x.device)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    x_ref = x_ref.to(x.device)
    with torch.no_grad():
        values = torch.cat([
            _ssim_chunk(x[i:i + _SSIM_CHUNK].double(), x_ref[i:i + _SSIM_CHUNK].double(), kernel, c1, c2)
            for i in range(0, x.shape[0], _SSIM_CHUNK)])
    return _reduce(values, reduction)
