"""The learned dictionary as a grid of atoms (Fig. 4a of Mitro et al. 2018).

Atoms are the rows of ``dictionary`` (n_components, C·p_h·p_w), flattened channel-major exactly as
``torch.nn.functional.unfold`` (and ``ddl.sparse.extract_patches``) lay out a patch: channel, then
patch row, then patch column. Each atom is min-max scaled to [0, 1] on its own for display
(atoms are unit-norm with arbitrary sign, so a shared scale would leave most of them grey).

All atoms go into one mosaic image drawn by a single ``imshow`` (256 axes would take seconds to
lay out); tiles are separated by a one-pixel transparent gap in which the axes' background colour
shows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ddl._validate import check_int, check_int_pair
from ddl.plots import _float_array

_GAP_COLOUR = "#6f8fb3"  # muted blue: distinct from every grey level and from typical atom colours


def plot_atoms(
    dictionary: Any,
    patch_size: int | tuple[int, int],
    *,
    n_channels: int = 1,
    n_cols: int = 16,
    max_atoms: int = 256,
    title: str | None = None,
) -> Figure:
    """Draw the first ``max_atoms`` atoms of a dictionary as image tiles.

    Parameters
    ----------
    dictionary : Tensor or ndarray of shape (n_components, n_channels * p_h * p_w), floating point
        Atoms as rows, channel-major (the layout of ``torch.nn.functional.unfold``).
    patch_size : int or (int, int)
        Patch height and width (p_h, p_w); an int means a square patch.
    n_channels : {1, 3}, default 1
        1: grey atoms; 3: colour atoms, drawn as (p_h, p_w, 3) RGB.
    n_cols : int, default 16
        Tiles per row of the grid.
    max_atoms : int, default 256
        Draw at most this many atoms, the first ones; the title says so when some are left out.
    title : str, optional
        Figure title; default "Dictionary atoms (k of n_components)".

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes with one image (``fig.axes[0].images[0]``): an RGBA mosaic whose tile (r, c)
        starting at row ``r * (p_h + 1)`` and column ``c * (p_w + 1)`` is atom ``r * n_cols + c``
        scaled to [0, 1] (grey atoms repeated in R, G and B); gaps have alpha 0.
    """
    d = _float_array(dictionary, func="plot_atoms", name="dictionary", ndim=2)
    ph, pw = check_int_pair("plot_atoms", "patch_size", patch_size)
    check_int("plot_atoms", "n_cols", n_cols, 1)
    check_int("plot_atoms", "max_atoms", max_atoms, 1)
    tiles = _atom_tiles(d, (ph, pw), n_channels)[:max_atoms]  # (k, p_h, p_w, 3)
    mosaic = _mosaic(tiles, n_cols)
    rows = math.ceil(len(tiles) / n_cols)
    cols = min(n_cols, len(tiles))
    width = 8.0
    fig = Figure(figsize=(width, max(1.2, width * mosaic.shape[0] / mosaic.shape[1] + 0.35)), layout="constrained")
    ax = fig.add_subplot()
    ax.set_facecolor(_GAP_COLOUR)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    shown = f"{len(tiles)} of {d.shape[0]}" if len(tiles) < d.shape[0] else f"all {d.shape[0]}"
    ax.set_title(title if title is not None else f"Dictionary atoms ({shown}, {ph}×{pw} patches, {rows}×{cols} grid)")
    return fig


def _atom_tiles(d: np.ndarray, patch_size: tuple[int, int], n_channels: int) -> np.ndarray:
    """Atoms (k, C·p_h·p_w) -> display tiles (k, p_h, p_w, 3) in [0, 1], each atom min-max scaled."""
    if n_channels not in (1, 3):
        raise ValueError(f"plot_atoms: n_channels must be 1 (grey) or 3 (colour); got {n_channels!r}.")
    ph, pw = patch_size
    if d.shape[1] != n_channels * ph * pw:
        raise ValueError(
            f"plot_atoms: dictionary must have n_channels * p_h * p_w = {n_channels}*{ph}*{pw} = "
            f"{n_channels * ph * pw} columns; got shape {tuple(d.shape)}."
        )
    a = d.astype(np.float64).reshape(-1, n_channels, ph, pw)  # channel-major, as unfold
    lo = a.min(axis=(1, 2, 3), keepdims=True)
    span = a.max(axis=(1, 2, 3), keepdims=True) - lo
    scaled = np.where(span > 0, (a - lo) / np.where(span > 0, span, 1.0), 0.5)  # constant atom -> mid grey
    tiles = np.transpose(scaled, (0, 2, 3, 1))  # (k, p_h, p_w, C)
    return np.repeat(tiles, 3, axis=3) if n_channels == 1 else tiles


def _mosaic(tiles: np.ndarray, n_cols: int) -> np.ndarray:
    """Tiles (k, p_h, p_w, 3) -> RGBA mosaic with one-pixel transparent gaps, n_cols tiles per row."""
    k, ph, pw, _ = tiles.shape
    cols = min(n_cols, k)
    rows = math.ceil(k / cols)
    out = np.zeros((rows * (ph + 1) - 1, cols * (pw + 1) - 1, 4))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (ph + 1) : r * (ph + 1) + ph, c * (pw + 1) : c * (pw + 1) + pw, :3] = tile
        out[r * (ph + 1) : r * (ph + 1) + ph, c * (pw + 1) : c * (pw + 1) + pw, 3] = 1.0
    return out
