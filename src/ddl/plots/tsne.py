"""t-SNE of a data set and the scatter plot of an embedding (Fig. 3 of Mitro et al. 2018).

:func:`tsne` is a thin wrapper of scikit-learn's ``TSNE`` (Barnes-Hut, van der Maaten 2014) that
checks its inputs with ddl's messages and, as the authors' reference implementation does, first
reduces inputs of more than 50 features to 50 by PCA (scikit-learn does not). ddl used to carry
its own exact t-SNE in torch (300 lines); scikit-learn is a runtime dependency now, and its
implementation is the one people know.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ddl._validate import check_choice, check_int, check_number
from ddl.plots import _figure_and_axes, _float_array, _label_array

_MIN_ITER = 250  # scikit-learn's minimum (its early-exaggeration phase)
_PCA_DIMS = 50  # reference implementation: PCA to 50 dimensions before t-SNE


def tsne(
    features: Any,
    *,
    n_components: int = 2,
    perplexity: float = 30.0,
    n_iter: int = 1000,
    learning_rate: float | str = "auto",
    early_exaggeration: float = 12.0,
    init: str = "pca",
    random_state: int = 0,
) -> np.ndarray:
    """Embed ``features`` in ``n_components`` dimensions with t-SNE (scikit-learn's ``TSNE``).

    Parameters
    ----------
    features : Tensor or ndarray of shape (n_samples, n_features), floating point
        One row per point (flatten images first: ``x.flatten(1)``). More than 50 features are
        reduced to 50 by PCA first.
    n_components : int, default 2
        Dimension of the embedding, 1 to 3 (Barnes-Hut).
    perplexity : float, default 30.0
        Effective number of neighbours, in (0, n_samples - 1).
    n_iter : int, default 1000
        Gradient steps (scikit-learn's ``max_iter``), >= 250.
    learning_rate : float or "auto", default "auto"
        Step size; "auto" is max(n_samples / early_exaggeration / 4, 50).
    early_exaggeration : float, default 12.0
        Factor on P during the first 250 iterations, >= 1.
    init : {"pca", "random"}, default "pca"
    random_state : int, default 0
        Seed: the result is deterministic for a given seed.

    Returns
    -------
    embedding : ndarray of shape (n_samples, n_components), float64

    References
    ----------
    L. van der Maaten, G. Hinton, "Visualizing Data using t-SNE", JMLR 9, 2008;
    L. van der Maaten, "Accelerating t-SNE using Tree-Based Algorithms", JMLR 15, 2014.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = _check_tsne_args(features, n_components, perplexity, n_iter, learning_rate, early_exaggeration, init)
    check_int("tsne", "random_state", random_state, 0)
    x = np.asarray(x, dtype=np.float64)
    if x.shape[1] > _PCA_DIMS:
        x = PCA(n_components=min(_PCA_DIMS, x.shape[0]), random_state=random_state).fit_transform(x)
    model = TSNE(n_components=n_components, perplexity=perplexity, max_iter=n_iter, learning_rate=learning_rate,
                 early_exaggeration=early_exaggeration, init=init, random_state=random_state)
    return model.fit_transform(x).astype(np.float64)


def _check_tsne_args(features, n_components, perplexity, n_iter, learning_rate, early_exaggeration, init):
    x = _float_array(features, func="tsne", name="features", ndim=2)
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"tsne: features must have at least 3 rows (points); got shape {tuple(x.shape)}.")
    check_int("tsne", "n_components", n_components, 1, 3)
    check_number("tsne", f"perplexity (for {n} samples)", perplexity, 0, n - 1, low_open=True, high_open=True)
    check_int("tsne", "n_iter", n_iter, _MIN_ITER)
    if learning_rate != "auto":
        check_number("tsne", "learning_rate (when not 'auto')", learning_rate, 0, low_open=True)
    check_number("tsne", "early_exaggeration", early_exaggeration, low=1)
    check_choice("tsne", "init", init, ("pca", "random"))
    return x


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
