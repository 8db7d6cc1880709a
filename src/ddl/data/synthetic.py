"""Small, learnable synthetic image sets for tests and the smoke preset (no files, no downloads).

Each class has one smooth template (a sum of three Gaussian bumps per channel, rescaled to
[0.15, 0.85]); an image is its class template plus Gaussian pixel noise, clipped to [0, 1]. The
templates depend only on ``shape`` and ``n_classes`` (a fixed internal seed), so sets drawn with
different ``seed`` values share their classes: ``make_blobs_images(200, seed=0)`` can train a
model that ``make_blobs_images(100, seed=1)`` tests. The idea follows scikit-learn's
``make_blobs`` (class centres plus isotropic noise), with images as the centres.
"""

from __future__ import annotations

import numpy as np
import torch

from ddl._validate import check_int, check_number, is_int

__all__ = ["make_blobs_images", "blob_templates"]

_TEMPLATE_SEED = 20180107  # fixed: templates must not change with the sampling seed


def _check_args(n, shape, n_classes, seed, noise) -> None:
    check_int("make_blobs_images", "n", n, 1)
    if not (isinstance(shape, tuple) and len(shape) == 3 and all(is_int(s) and s >= 1 for s in shape)):
        raise ValueError(f"make_blobs_images: shape must be a tuple (C, H, W) of ints >= 1; got {shape!r}.")
    check_int("make_blobs_images", "n_classes", n_classes, 2)
    check_int("make_blobs_images", "seed", seed, 0)
    check_number("make_blobs_images", "noise", noise, low=0)


def blob_templates(shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10) -> np.ndarray:
    """The class templates of `make_blobs_images`.

    Returns
    -------
    numpy.ndarray of float32, shape (n_classes, C, H, W), values in [0.15, 0.85]
        Each (class, channel) plane is a sum of three Gaussian bumps (centres uniform in the
        middle 60 % of the image, widths 10-25 % of its size), min-max rescaled.
    """
    _check_args(1, shape, n_classes, 0, 0.0)
    c, h, w = shape
    rng = np.random.default_rng(_TEMPLATE_SEED)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((n_classes, c, h, w), dtype=np.float64)
    for k in range(n_classes):
        for ch in range(c):
            plane = np.zeros((h, w))
            for _ in range(3):
                cy, cx = rng.uniform(0.2, 0.8) * (h - 1), rng.uniform(0.2, 0.8) * (w - 1)
                sy, sx = rng.uniform(0.1, 0.25) * h, rng.uniform(0.1, 0.25) * w
                plane += rng.uniform(0.5, 1.0) * np.exp(-((rows - cy) / sy) ** 2 / 2 - ((cols - cx) / sx) ** 2 / 2)
            span = plane.max() - plane.min()
            plane = (plane - plane.min()) / span if span > 0 else np.full_like(plane, 0.5)
            out[k, ch] = 0.15 + 0.7 * plane
    return out.astype(np.float32)


def make_blobs_images(
    n: int,
    shape: tuple[int, int, int] = (1, 28, 28),
    n_classes: int = 10,
    seed: int = 0,
    *,
    noise: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A tiny learnable image classification set: class template + Gaussian noise.

    Parameters
    ----------
    n : int
        Number of images (>= 1).
    shape : tuple (C, H, W), default (1, 28, 28)
        Image shape; (3, 32, 32) mimics CIFAR-10.
    n_classes : int, default 10
        Number of classes (>= 2).
    seed : int, default 0
        Seed of the labels and the noise (not of the templates; see the module docstring).
    noise : float, default 0.1
        Standard deviation of the pixel noise added to the template.

    Returns
    -------
    x : torch.Tensor of float32, shape (n, C, H, W), values in [0, 1]
        ``clip(template[y] + noise * N(0, 1), 0, 1)``.
    y : torch.Tensor of int64, shape (n,)
        Balanced (class counts differ by at most 1) and shuffled.

    Examples
    --------
    >>> x, y = make_blobs_images(20, shape=(3, 8, 8), n_classes=4, seed=0)
    >>> tuple(x.shape), x.dtype, y.dtype, sorted(y.bincount().tolist())
    ((20, 3, 8, 8), torch.float32, torch.int64, [5, 5, 5, 5])
    """
    _check_args(n, shape, n_classes, seed, noise)
    templates = blob_templates(shape, n_classes)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % n_classes)
    x = templates[y] + np.float32(noise) * rng.standard_normal((n, *shape), dtype=np.float32)
    np.clip(x, 0.0, 1.0, out=x)
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
