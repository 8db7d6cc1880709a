"""Distributions of pixel values before and after the attack: QQ-plot and density (Fig. 4 of Mitro et al. 2018).

The paper shows that FGSM moves the pixel distribution away from the clean one (a QQ-plot bending
off the diagonal, a density with new modes at ±ε from the clean modes) and that denoising moves it
back. Both plots pool all pixel values of all images and channels.

A whole test set has up to 3·10^7 pixel values; the pipeline keeps a sample of them
(:func:`sample_pixels`): positions drawn uniformly at random with a fixed seed, the same positions
in the clean, perturbed and denoised images. A strided sample (every ``numel // n``-th value) is
wrong here: when the stride is a multiple of the image size, it reads the same one or two pixel
positions of every image (for 10,000 MNIST images, two positions on the left edge, where every
clean pixel is 0).

Quantiles are computed here by sorting and linear interpolation (numpy's default "linear"
method, Hyndman & Fan 1996 definition 7) rather than with ``torch.quantile``, which refuses inputs
of more than 2^24 values (a CIFAR-10 test set has 3·10^7 pixel values).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ddl._validate import check_int
from ddl.plots import _figure_and_axes, _float_array


def sample_pixels(x: torch.Tensor, n: int = 20_000, *, seed: int = 0) -> torch.Tensor:
    """``n`` pixel values of ``x`` at positions drawn uniformly at random (with replacement),
    float16, in position order: a sample of the pooled distribution without aliasing.

    Parameters
    ----------
    x : Tensor of any shape, e.g. images (N, C, H, W)
    n : int, default 20_000
        Sample size; when ``x`` has at most ``n`` values, all of them are returned.
    seed : int, default 0
        The positions depend only on ``seed`` and ``x.numel()``: tensors of one shape (clean,
        perturbed, denoised images) are sampled at the same positions.

    Returns
    -------
    Tensor of shape (min(n, x.numel()),), float16, on the CPU

    Examples
    --------
    >>> x = torch.zeros(1000, 1, 4, 4); x[:, :, :, 2:] = 1.0      # right half of every image white
    >>> round(float(sample_pixels(x, 2000).float().mean()), 1)   # a strided sample would read 0.0
    0.5
    """
    check_int("sample_pixels", "n", n, 1)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"sample_pixels: x must be a torch.Tensor; got {type(x).__name__}.")
    flat = x.detach().reshape(-1).cpu()
    if flat.numel() <= n:
        return flat.to(torch.float16).clone()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(flat.numel(), (n,), generator=g).sort().values
    return flat[idx].to(torch.float16)


def grey_level_edges(levels: int = 255) -> np.ndarray:
    """Bin edges centred on the grey levels ``k / levels``, k = 0..levels (width ``1 / levels``).

    Examples
    --------
    >>> grey_level_edges(2)
    array([-0.25,  0.25,  0.75,  1.25])
    """
    check_int("grey_level_edges", "levels", levels, 1)
    return (np.arange(levels + 2) - 0.5) / levels


def quantiles(x: Any, n: int) -> np.ndarray:
    """The ``n`` quantiles of all values of ``x`` at probabilities ``linspace(0, 1, n)``.

    Parameters
    ----------
    x : Tensor or ndarray of any shape, floating point, finite
        Pooled over every entry (e.g. all pixels of images (N, C, H, W)).
    n : int
        Number of quantiles, >= 2 (the first is the minimum, the last the maximum).

    Returns
    -------
    q : ndarray of shape (n,), float64
        Equal to ``numpy.quantile(x, numpy.linspace(0, 1, n))`` (linear interpolation).

    Examples
    --------
    >>> quantiles(np.array([0.0, 1.0, 2.0, 10.0]), 3)
    array([ 0. ,  1.5, 10. ])
    """
    check_int("quantiles", "n", n, 2)
    a = _float_array(x, func="quantiles", name="x")
    if a.size == 0:
        raise ValueError("quantiles: x must not be empty; got shape " f"{tuple(a.shape)}.")
    s = np.sort(a, axis=None).astype(np.float64)  # (m,)
    pos = np.linspace(0.0, 1.0, n) * (s.size - 1)  # fractional index of each quantile
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, s.size - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def plot_qq(
    clean: Any,
    perturbed: Any,
    *,
    denoised: Any | None = None,
    ax: Axes | None = None,
    n_quantiles: int = 101,
) -> Figure:
    """QQ-plot of the pixel values of perturbed (and denoised) images against the clean ones.

    Parameters
    ----------
    clean : Tensor or ndarray of any shape, e.g. (N, C, H, W), floating point
        Reference sample (x-axis).
    perturbed : Tensor or ndarray of any shape, floating point
        Sample on the y-axis, e.g. the attacked images.
    denoised : Tensor or ndarray of any shape, optional
        A second sample on the y-axis, e.g. the denoised perturbed images.
    ax : matplotlib Axes, optional
        Draw here; default a new 5×5-inch figure.
    n_quantiles : int, default 101
        Number of quantiles per sample (probabilities ``linspace(0, 1, n_quantiles)``).

    Returns
    -------
    fig : matplotlib.figure.Figure
        The axes holds the diagonal ``y = x`` first, then one line per sample (markers at the
        quantiles; data = :func:`quantiles` of each sample).
    """
    check_int("plot_qq", "n_quantiles", n_quantiles, 2)
    q_clean = quantiles(_float_array(clean, func="plot_qq", name="clean"), n_quantiles)
    samples = {"perturbed": perturbed} if denoised is None else {"perturbed": perturbed, "denoised": denoised}
    fig, ax = _figure_and_axes(ax, func="plot_qq", figsize=(5.0, 5.0))
    qs = {k: quantiles(_float_array(v, func="plot_qq", name=k), n_quantiles) for k, v in samples.items()}
    lo = min(q_clean[0], *(q[0] for q in qs.values()))
    hi = max(q_clean[-1], *(q[-1] for q in qs.values()))
    ax.plot([lo, hi], [lo, hi], color="0.6", linestyle="--", linewidth=1, label="y = x")
    for (name, q), colour, marker in zip(qs.items(), ("tab:red", "tab:blue"), ("o", "s"), strict=False):
        ax.plot(q_clean, q, color=colour, marker=marker, markersize=3, linewidth=1, label=name)
    ax.set_xlabel("quantiles of clean pixel values")
    ax.set_ylabel(f"quantiles of {' / '.join(qs)} pixel values")
    ax.set_title("QQ-plot against clean images")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper left")
    return fig


def plot_density(
    arrays: Mapping[str, Any],
    *,
    bins: int = 100,
    value_range: tuple[float, float] | None = None,
    grey_levels: int | None = None,
    log: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """Density (normalised histogram) of the pooled pixel values of each array, as step lines.

    Parameters
    ----------
    arrays : mapping of str to Tensor or ndarray (any shape, floating point)
        Label -> sample, e.g. ``{"clean": x, "perturbed": x_adv, "denoised": x_den}``.
    bins : int, default 100
        Number of equal-width bins, shared by all arrays.
    value_range : (float, float), optional
        Edges of the first and last bin; default the joint minimum and maximum of all arrays.
        Every value must lie inside it (nothing is dropped silently).
    grey_levels : int, optional
        Bins centred on the pixel levels ``k / grey_levels`` (255 for 8-bit images: one bin per
        level a clean image can take, so a clean density is not split unevenly between bins);
        replaces ``bins`` and ``value_range``. Every value must lie in
        ``[-0.5 / grey_levels, 1 + 0.5 / grey_levels]``.
    log : bool, default False
        Logarithmic y-axis (empty bins are then not drawn).
    ax : matplotlib Axes, optional
        Draw here; default a new 6×4-inch figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One ``StepPatch`` per array (``patch.get_data()`` gives ``(density, edges, baseline)``);
        each density integrates to 1: ``sum(density * diff(edges)) == 1``.
    """
    if not isinstance(arrays, Mapping) or len(arrays) == 0:
        raise ValueError(f"plot_density: arrays must be a non-empty dict of label -> array; got {arrays!r:.80}.")
    check_int("plot_density", "bins", bins, 1)
    data = {str(k): _float_array(v, func="plot_density", name=f"arrays[{k!r}]").ravel() for k, v in arrays.items()}
    if any(v.size == 0 for v in data.values()):
        raise ValueError("plot_density: every array must hold at least one value; got an empty one.")
    lo = min(float(v.min()) for v in data.values())
    hi = max(float(v.max()) for v in data.values())
    if grey_levels is not None:
        if value_range is not None:
            raise ValueError(f"plot_density: give grey_levels or value_range, not both; got {grey_levels!r} "
                             f"and {value_range!r}.")
        edges = grey_level_edges(grey_levels)
        if lo < edges[0] or hi > edges[-1]:
            raise ValueError(f"plot_density: with grey_levels={grey_levels} every value must lie in "
                             f"[{edges[0]:g}, {edges[-1]:g}]; data span [{lo:g}, {hi:g}].")
        value_range, bins = (float(edges[0]), float(edges[-1])), grey_levels + 1
    if value_range is None:
        value_range = (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)
    elif not (
        isinstance(value_range, (tuple, list)) and len(value_range) == 2 and value_range[0] <= lo <= hi <= value_range[1]
        and value_range[0] < value_range[1]
    ):
        raise ValueError(
            f"plot_density: value_range must be (low, high) with low < high containing every value "
            f"(data span [{lo:g}, {hi:g}]); got {value_range!r}."
        )
    edges = grey_level_edges(grey_levels) if grey_levels is not None else np.linspace(*value_range, bins + 1)
    fig, ax = _figure_and_axes(ax, func="plot_density", figsize=(6.0, 4.0))
    for name, v in data.items():
        counts, _ = np.histogram(v, bins=edges)
        # on a log axis a baseline at 0 would draw every outer edge down to -inf: leave it out
        ax.stairs(counts / (v.size * np.diff(edges)), edges, baseline=None if log else 0.0, label=name, linewidth=1.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("pixel value")
    ax.set_ylabel("density")
    ax.set_title("Density of pixel values")
    ax.legend()
    return fig
