"""Exact t-SNE in torch, and the scatter plot of an embedding (Fig. 3 of Mitro et al. 2018).

Why hand-written: scikit-learn's ``TSNE`` would make scikit-learn a runtime dependency for one
figure. The exact O(n²) algorithm is about a hundred lines of torch and is fast enough for the
≤ 3,000 points we plot (memory: a few n×n float64 matrices, ~0.4 GB at n = 3,000); it also runs
on CUDA.

The algorithm is that of van der Maaten & Hinton 2008 ("Visualizing Data using t-SNE", JMLR 9),
with the optimisation schedule of scikit-learn's exact method:

- conditional probabilities p_{j|i} ∝ exp(-β_i ‖x_i - x_j‖²) (eq. 1), with β_i = 1 / (2σ_i²) found
  by bisection so that the perplexity 2^{H(P_i)} equals the requested one (eq. 2; same bisection
  and tolerance, 1e-5 nats, as scikit-learn's ``_binary_search_perplexity``);
- symmetrised joint probabilities p_ij = (p_{j|i} + p_{i|j}) / 2n (§3.1);
- Student-t joint probabilities q_ij ∝ (1 + ‖y_i - y_j‖²)⁻¹ in the embedding (eq. 4) and the
  gradient 4 Σ_j (p_ij - q_ij)(y_i - y_j)(1 + ‖y_i - y_j‖²)⁻¹ of KL(P‖Q) (eq. 5); one degree of
  freedom for every ``n_components`` (the paper's choice; scikit-learn uses n_components - 1);
- gradient descent with momentum 0.5 during the first 250 iterations, when P is multiplied by the
  early exaggeration (12), then momentum 0.8; per-parameter gains (delta-bar-delta, Jacobs 1988)
  as in the authors' reference implementation: +0.2 where the gradient changes sign against the
  previous update, ×0.8 elsewhere, floor 0.01; update and gains restart when the exaggeration
  ends, as in scikit-learn;
- learning rate "auto" = max(n / early_exaggeration / 4, 50) (Belkina et al. 2019, scikit-learn's
  default); initialisation by PCA scaled to standard deviation 1e-4 (scikit-learn's default) or
  N(0, 1e-4²) ("random", the paper's);
- inputs with more than 50 features are first reduced to 50 by PCA, as in the reference
  implementation (scikit-learn does not do this).

We run exactly ``n_iter`` iterations: no early stop on the gradient norm or on lack of progress
(scikit-learn has both); with a fixed count the run time is predictable and the result does not
depend on a convergence heuristic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ddl.plots import _figure_and_axes, _float_array, _label_array

_EXAGGERATION_ITERS = 250  # iterations with early exaggeration and momentum 0.5 (scikit-learn's)
_PCA_DIMS = 50  # reference implementation: PCA to 50 dimensions before t-SNE
_MACHINE_EPSILON = float(np.finfo(np.float64).eps)


def tsne(
    features: Any,
    *,
    n_components: int = 2,
    perplexity: float = 30.0,
    n_iter: int = 750,
    learning_rate: float | str = "auto",
    early_exaggeration: float = 12.0,
    init: str = "pca",
    random_state: int = 0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Embed ``features`` in ``n_components`` dimensions with exact t-SNE.

    Parameters
    ----------
    features : Tensor or ndarray of shape (n_samples, n_features), floating point
        One row per point (flatten images first: ``x.flatten(1)``). More than 50 features are
        reduced to 50 by PCA first.
    n_components : int, default 2
        Dimension of the embedding.
    perplexity : float, default 30.0
        Effective number of neighbours, in (0, n_samples - 1).
    n_iter : int, default 750
        Total number of gradient steps, >= 250 (the first 250 use early exaggeration).
    learning_rate : float or "auto", default "auto"
        Step size; "auto" is max(n_samples / early_exaggeration / 4, 50).
    early_exaggeration : float, default 12.0
        Factor on P during the first 250 iterations, >= 1.
    init : {"pca", "random"}, default "pca"
        Initial embedding: first principal components scaled to standard deviation 1e-4, or
        N(0, 1e-4²) drawn with ``random_state``.
    random_state : int, default 0
        Seed of the random initialisation (the run is deterministic for a given seed).
    device : str or torch.device, default "cpu"
        Where to compute (float64 throughout).

    Returns
    -------
    embedding : ndarray of shape (n_samples, n_components), float64

    References
    ----------
    L. van der Maaten, G. Hinton, "Visualizing Data using t-SNE", JMLR 9, 2008, eqs. (1)-(5).
    """
    x = _check_tsne_args(features, n_components, perplexity, n_iter, learning_rate, early_exaggeration, init)
    if not isinstance(random_state, int) or isinstance(random_state, bool):
        raise TypeError(f"tsne: random_state must be an int; got {random_state!r}.")
    x = torch.as_tensor(x, dtype=torch.float64, device=torch.device(device))
    n = x.shape[0]
    if x.shape[1] > _PCA_DIMS:
        x = _pca(x, _PCA_DIMS)  # (n, 50)
    p = _joint_probabilities(_squared_distances(x), perplexity)  # (n, n), sums to 1
    y = _initial_embedding(x, n_components, init, random_state)  # (n, n_components)
    lr = max(n / early_exaggeration / 4.0, 50.0) if learning_rate == "auto" else float(learning_rate)
    y = _gradient_descent(y, p * early_exaggeration, _EXAGGERATION_ITERS, lr, momentum=0.5)
    y = _gradient_descent(y, p, n_iter - _EXAGGERATION_ITERS, lr, momentum=0.8)
    return y.cpu().numpy()


def _check_tsne_args(features, n_components, perplexity, n_iter, learning_rate, early_exaggeration, init):
    x = _float_array(features, func="tsne", name="features", ndim=2)
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"tsne: features must have at least 3 rows (points); got shape {tuple(x.shape)}.")
    if not isinstance(n_components, int) or isinstance(n_components, bool) or n_components < 1:
        raise ValueError(f"tsne: n_components must be a positive int; got {n_components!r}.")
    if not isinstance(perplexity, (int, float)) or not 0 < perplexity < n - 1:
        raise ValueError(f"tsne: perplexity must be a number in (0, n_samples - 1 = {n - 1}); got {perplexity!r}.")
    if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < _EXAGGERATION_ITERS:
        raise ValueError(
            f"tsne: n_iter must be an int >= {_EXAGGERATION_ITERS} (the first {_EXAGGERATION_ITERS} "
            f"iterations use early exaggeration); got {n_iter!r}."
        )
    if learning_rate != "auto" and not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(f"tsne: learning_rate must be 'auto' or a positive number; got {learning_rate!r}.")
    if not isinstance(early_exaggeration, (int, float)) or early_exaggeration < 1:
        raise ValueError(f"tsne: early_exaggeration must be a number >= 1; got {early_exaggeration!r}.")
    if init not in ("pca", "random"):
        raise ValueError(f"tsne: init must be 'pca' or 'random'; got {init!r}.")
    return x


def _squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (n, n) of the rows of x (n, d), zero diagonal."""
    sq = (x * x).sum(1)  # (n,)
    d = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min_(0.0)  # (n, n)
    return d.fill_diagonal_(0.0)


def _pca(x: torch.Tensor, k: int) -> torch.Tensor:
    """Scores (n, k) on the first k principal components; signs fixed as scikit-learn's svd_flip."""
    xc = x - x.mean(0)  # (n, d)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)  # vh (min(n, d), d)
    vh = vh[:k]  # (k, d)
    signs = torch.sign(vh.gather(1, vh.abs().argmax(1, keepdim=True)))  # (k, 1): largest |entry| > 0
    return xc @ (vh * signs).T  # (n, k)


def _binary_search_perplexity(
    sq_distances: torch.Tensor, perplexity: float, *, tol: float = 1e-5, max_steps: int = 100
) -> torch.Tensor:
    """Conditional probabilities p_{j|i} (n, n), each row of perplexity exp(H) = ``perplexity``.

    Bisection on β_i = 1/(2σ_i²) for all rows at once, step for step the one of scikit-learn's
    ``_binary_search_perplexity``: start at β = 1, double (halve) while no upper (lower) bound is
    known, else bisect; a row stops when its entropy is within ``tol`` nats of log(perplexity).
    """
    n = sq_distances.shape[0]
    off_diag = ~torch.eye(n, dtype=torch.bool, device=sq_distances.device)  # (n, n)
    beta = torch.ones(n, dtype=sq_distances.dtype, device=sq_distances.device)  # (n,)
    beta_min = torch.full_like(beta, -math.inf)
    beta_max = torch.full_like(beta, math.inf)
    active = torch.ones(n, dtype=torch.bool, device=sq_distances.device)
    out = torch.zeros_like(sq_distances)  # (n, n)
    target = math.log(perplexity)
    for _ in range(max_steps):
        p = torch.exp(-sq_distances * beta[:, None]) * off_diag  # (n, n)
        total = p.sum(1)  # (n,)
        total = torch.where(total == 0.0, torch.full_like(total, 1e-8), total)
        p = p / total[:, None]
        entropy = torch.log(total) + beta * (sq_distances * p).sum(1)  # (n,) in nats
        out = torch.where(active[:, None], p, out)
        diff = entropy - target
        active = active & (diff.abs() > tol)
        if not bool(active.any()):
            break
        too_flat = active & (diff > 0)  # entropy too high: sharpen (raise β)
        too_sharp = active & (diff <= 0)
        beta_min = torch.where(too_flat, beta, beta_min)
        beta_max = torch.where(too_sharp, beta, beta_max)
        up = torch.where(torch.isinf(beta_max), beta * 2.0, (beta + beta_max) / 2.0)
        down = torch.where(torch.isinf(beta_min), beta / 2.0, (beta + beta_min) / 2.0)
        beta = torch.where(too_flat, up, torch.where(too_sharp, down, beta))
    return out


def _joint_probabilities(sq_distances: torch.Tensor, perplexity: float) -> torch.Tensor:
    """Symmetric joint probabilities p_ij (n, n): (p_{j|i} + p_{i|j}) / 2n, floor at machine eps off the diagonal."""
    cond = _binary_search_perplexity(sq_distances, perplexity)  # (n, n), rows sum to 1
    p = cond + cond.T
    p = p / p.sum().clamp_min(_MACHINE_EPSILON)
    p = p.clamp_min(_MACHINE_EPSILON)
    return p.fill_diagonal_(0.0)


def _initial_embedding(x: torch.Tensor, n_components: int, init: str, random_state: int) -> torch.Tensor:
    """PCA scores scaled to std 1e-4 on the first axis, or N(0, 1e-4²) noise; shape (n, n_components)."""
    if init == "pca":
        if n_components > min(x.shape):
            raise ValueError(
                f"tsne: init='pca' needs n_components <= min(n_samples, n_features) = {min(x.shape)}; "
                f"got {n_components} (use init='random')."
            )
        y = _pca(x, n_components)
        return y / y[:, 0].std(correction=0) * 1e-4
    gen = torch.Generator(device="cpu").manual_seed(random_state)
    y = 1e-4 * torch.randn(x.shape[0], n_components, generator=gen, dtype=torch.float64)
    return y.to(x.device)


def _kl_gradient(y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Gradient (n, c) of KL(P‖Q) at the embedding y (n, c): eq. (5) of van der Maaten & Hinton.

    4 Σ_j (p_ij - q_ij) k_ij (y_i - y_j) with the Student-t kernel k_ij = 1 / (1 + ‖y_i - y_j‖²) and
    q_ij = k_ij / Σ_kl k_kl. Written with in-place operations on two n×n buffers because at
    n = 2,000 the time goes into memory traffic, not arithmetic. scikit-learn floors q at machine
    epsilon (for the log in the KL value); in the gradient that changes terms below 1e-16 and is
    left out.
    """
    sq = (y * y).sum(1)  # (n,)
    kernel = torch.addmm((sq[:, None] + sq[None, :]).add_(1.0), y, y.T, alpha=-2.0)  # (n, n): 1 + ‖y_i - y_j‖²
    kernel.clamp_min_(1.0).reciprocal_().fill_diagonal_(0.0)  # k_ij, zero diagonal
    w = torch.sub(p, kernel, alpha=1.0 / float(kernel.sum())).mul_(kernel)  # (n, n): (p_ij - q_ij) k_ij
    return 4.0 * (w.sum(1, keepdim=True) * y - w @ y)  # (n, c)


def _gradient_descent(y: torch.Tensor, p: torch.Tensor, n_steps: int, lr: float, *, momentum: float) -> torch.Tensor:
    """``n_steps`` momentum steps with delta-bar-delta gains; update and gains start from 0 and 1."""
    update = torch.zeros_like(y)
    gains = torch.ones_like(y)
    for _ in range(n_steps):
        grad = _kl_gradient(y, p)  # (n, c)
        same_sign = (update * grad) >= 0.0  # the step did not reverse the gradient's direction
        gains = torch.where(same_sign, gains * 0.8, gains + 0.2).clamp_min_(0.01)
        update = momentum * update - lr * (gains * grad)
        y = y + update
    return y


def plot_tsne(
    embedding: Any,
    labels: Any,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Scatter plot of a 2-D embedding, one colour per class, with a legend (Fig. 3).

    Parameters
    ----------
    embedding : Tensor or ndarray of shape (n_samples, 2), floating point
        As returned by :func:`tsne`.
    labels : Tensor or ndarray of shape (n_samples,), integer
        Class of each point, in [0, n_classes).
    class_names : sequence of str, optional
        Legend entries, indexed by label; default the label numbers.
    title : str, optional
        Axes title.
    ax : matplotlib Axes, optional
        Draw here; default a new 6×5.5-inch figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One scatter collection per class present, in label order.
    """
    emb = _float_array(embedding, func="plot_tsne", name="embedding", ndim=2)
    if emb.shape[1] != 2:
        raise ValueError(f"plot_tsne: embedding must have shape (n_samples, 2); got {tuple(emb.shape)}.")
    y = _label_array(labels, func="plot_tsne", name="labels", n=emb.shape[0])
    classes = np.unique(y)
    if class_names is not None and (classes.min() < 0 or classes.max() >= len(class_names)):
        raise ValueError(
            f"plot_tsne: labels must lie in [0, len(class_names) = {len(class_names)}); "
            f"got labels from {classes.min()} to {classes.max()}."
        )
    fig, ax = _figure_and_axes(ax, func="plot_tsne", figsize=(6.0, 5.5))
    colours = _class_colours(len(classes))
    for colour, c in zip(colours, classes, strict=True):
        name = class_names[c] if class_names is not None else str(c)
        ax.scatter(emb[y == c, 0], emb[y == c, 1], s=6, color=colour, label=name, alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    if title is not None:
        ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, frameon=False, fontsize="small")
    return fig


def _class_colours(n: int) -> list:
    """n distinct colours: tab10 up to 10 classes, else evenly spaced on turbo."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["turbo"](i / (n - 1)) for i in range(n)]
