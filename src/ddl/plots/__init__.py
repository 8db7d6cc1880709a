"""Figures of the reproduction (DESIGN.md §4 "Figures"): t-SNE, pixel distributions, atoms, CAMs.

Every plotting function builds a :class:`matplotlib.figure.Figure` directly (never ``pyplot``), so
nothing depends on a display or on global figure state, and returns it; functions that accept
``ax`` draw on that axes instead and return its figure. :func:`save_figure` writes a PNG
atomically (temporary name in the destination folder, then ``os.replace``).

==========================  =========================================================
function                    figure of Mitro et al. 2018
==========================  =========================================================
``tsne``, ``plot_tsne``     Fig. 3: t-SNE of the data sets
``plot_qq``                 Fig. 4: QQ-plot of pixel values, clean vs perturbed
``plot_density``            Fig. 4: density of pixel values
``plot_atoms``              Fig. 4a: learned dictionary atoms
``grad_cam``, ``plot_cam``  Figs. 5-7, 9, 10: top misclassifications with (Grad-)CAM
``plot_examples``           Fig. 8: clean / perturbed / denoised examples
``plot_eps_curves``         beyond the paper: accuracy against the attack budget ε
==========================  =========================================================
"""

from __future__ import annotations

# The shared helpers come first: the sub-modules below import them from this package while it is
# still being initialised, so they must already be defined at that point.
import io
import os
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ddl._validate import check_int

__all__ = [
    "class_activation_map",
    "grad_cam",
    "plot_atoms",
    "plot_cam",
    "plot_density",
    "plot_eps_curves",
    "plot_examples",
    "pick_examples",
    "plot_metric_histograms",
    "plot_qq",
    "plot_tsne",
    "quantiles",
    "sample_pixels",
    "grey_level_edges",
    "save_figure",
    "top_misclassified",
    "tsne",
]


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> str:
    """Write ``fig`` as a PNG file atomically.

    The PNG is rendered in memory, written under a temporary name in the destination folder and
    renamed with ``os.replace``, so an interrupted run never leaves a truncated image behind.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure, as returned by the ``plot_*`` functions.
    path : str or os.PathLike
        Destination; must end with ``.png``. Missing parent folders are created.
    dpi : int, default 150
        Resolution in dots per inch.

    Returns
    -------
    path : str
        The path written.
    """
    from ddl._io import atomic_write_bytes

    if not isinstance(fig, Figure):
        raise TypeError(f"save_figure: fig must be a matplotlib.figure.Figure; got {type(fig).__name__}.")
    if not str(path).lower().endswith(".png"):
        raise ValueError(f"save_figure: path must end with '.png' (figures are written as PNG); got {str(path)!r}.")
    check_int("save_figure", "dpi", dpi, 1)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return str(atomic_write_bytes(path, buf.getvalue()))


def _to_numpy(x: Any, *, func: str, name: str) -> np.ndarray:
    """Tensor or ndarray -> ndarray (detached, on the CPU, dtype unchanged); anything else raises."""
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{func}: {name} must be a torch.Tensor or numpy.ndarray; got {type(x).__name__}.")


def _float_array(x: Any, *, func: str, name: str, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """A finite floating-point array (dtype kept), with its number of dimensions checked."""
    a = _to_numpy(x, func=func, name=name)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{func}: {name} must hold floating-point values; got dtype {a.dtype}.")
    if ndim is not None and a.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{func}: {name} must have {ndim} dimensions; got shape {tuple(a.shape)}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{func}: {name} must be finite; got {int(np.sum(~np.isfinite(a)))} NaN/inf values.")
    return a


def _label_array(y: Any, *, func: str, name: str, n: int | None = None) -> np.ndarray:
    """A 1-D integer label array (length ``n`` when given)."""
    a = _to_numpy(y, func=func, name=name)
    if not np.issubdtype(a.dtype, np.integer) or a.ndim != 1:
        raise ValueError(f"{func}: {name} must be a 1-D integer array; got dtype {a.dtype}, shape {tuple(a.shape)}.")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{func}: {name} must have {n} entries (one per image); got {a.shape[0]}.")
    return a


def _figure_and_axes(ax: Axes | None, *, func: str, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The caller's axes and its figure, or a fresh Figure (no pyplot) with one axes."""
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot()
    if not isinstance(ax, Axes):
        raise TypeError(f"{func}: ax must be a matplotlib Axes or None; got {type(ax).__name__}.")
    try:
        return ax.get_figure(root=True), ax  # matplotlib >= 3.10: the top figure, past sub-figures
    except TypeError:
        return ax.figure, ax


def _to_image(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) in [0, 1] -> an array imshow draws as is, and the colour map: gray for C == 1."""
    if x.shape[0] == 1:
        return x[0], "gray"
    return np.transpose(x, (1, 2, 0)), None


from ddl.plots.atoms import plot_atoms  # noqa: E402
from ddl.plots.cam import class_activation_map, grad_cam, plot_cam, top_misclassified  # noqa: E402
from ddl.plots.curves import plot_eps_curves, plot_metric_histograms  # noqa: E402
from ddl.plots.distributions import grey_level_edges, plot_density, plot_qq, quantiles, sample_pixels  # noqa: E402
from ddl.plots.examples import pick_examples, plot_examples  # noqa: E402
from ddl.plots.tsne import plot_tsne, tsne  # noqa: E402
