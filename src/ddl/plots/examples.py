"""Clean / perturbed / denoised examples with the model's predictions (Fig. 8 of Mitro et al. 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ddl._validate import check_int
from ddl.plots import _float_array, _label_array, _to_image

_RIGHT, _WRONG = "tab:green", "tab:red"


def plot_examples(
    x_clean: Any,
    x_adv: Any,
    x_den: Any,
    *,
    y: Any,
    pred_clean: Any,
    pred_adv: Any,
    pred_den: Any,
    class_names: Sequence[str] | None = None,
    n: int = 8,
) -> Figure:
    """Three rows of the first ``n`` images: clean, perturbed, denoised, each titled with its prediction.

    Parameters
    ----------
    x_clean, x_adv, x_den : Tensor or ndarray of shape (N, C, H, W), floating point in [0, 1]
        Clean images, their perturbed versions and the denoised perturbed images; C = 1 or 3.
    y : Tensor or ndarray of shape (N,), integer
        True labels.
    pred_clean, pred_adv, pred_den : Tensor or ndarray of shape (N,), integer
        The model's predicted labels on each row's images.
    class_names : sequence of str, optional
        Names indexed by label; default the label numbers.
    n : int, default 8
        Number of columns (the first ``n`` images), in [1, N].

    Returns
    -------
    fig : matplotlib.figure.Figure
        A 3 × n grid of axes in row-major order; each holds one image and the title
        "pred <name>", green when the prediction equals the true label, red otherwise. Column
        footers (x-labels of the last row) read "true <name>".
    """
    rows = (
        ("clean", "x_clean", x_clean, "pred_clean", pred_clean),
        ("perturbed", "x_adv", x_adv, "pred_adv", pred_adv),
        ("denoised", "x_den", x_den, "pred_den", pred_den),
    )
    imgs = {row: _float_array(a, func="plot_examples", name=name, ndim=4) for row, name, a, _, _ in rows}
    shape = imgs["clean"].shape
    for (row, name, _, _, _), a in zip(rows, imgs.values(), strict=True):
        if a.shape != shape or shape[1] not in (1, 3):
            raise ValueError(
                f"plot_examples: x_clean, x_adv and x_den must share one shape (N, 1 or 3, H, W); "
                f"got {tuple(shape)} for x_clean and {tuple(a.shape)} for {name}."
            )
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(f"plot_examples: {name} must lie in [0, 1]; got values in [{a.min():g}, {a.max():g}].")
    n_images = shape[0]
    check_int("plot_examples", f"n (for N={n_images} images)", n, 1, n_images)
    true = _label_array(y, func="plot_examples", name="y", n=n_images)
    preds = {row: _label_array(p, func="plot_examples", name=pname, n=n_images) for row, _, _, pname, p in rows}
    names = _names(class_names, true, *preds.values())
    fig = Figure(figsize=(1.45 * n + 1.0, 5.0), layout="constrained")
    axes = fig.subplots(3, n, squeeze=False)
    for r, (row, a) in enumerate(imgs.items()):
        for c in range(n):
            ax = axes[r, c]
            img, cmap = _to_image(a[c])
            ax.imshow(img, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            p = int(preds[row][c])
            ax.set_title(f"pred {names[p]}", fontsize="small", color=_RIGHT if p == true[c] else _WRONG)
            if r == 2:
                ax.set_xlabel(f"true {names[int(true[c])]}", fontsize="small")
        axes[r, 0].set_ylabel(row, fontsize="medium")
    fig.suptitle(
        "Clean / perturbed / denoised: predictions above (green right, red wrong), true labels below",
        fontsize="medium",
    )
    return fig


def pick_examples(y: Any, pred_clean: Any, pred_adv: Any, n: int = 8) -> "torch.Tensor":
    """Indices of ``n`` images to show: first up to ``ceil(n / 2)`` successful attacks (clean
    prediction right, perturbed wrong), then the first other images, all in test-set order.

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([0, 1, 2, 3, 4, 5])
    >>> pick_examples(y, y, torch.tensor([0, 1, 0, 3, 0, 0]), n=4).tolist()   # attacks succeed on 2, 4, 5
    [0, 1, 2, 4]
    """
    import torch

    y, pc, pa = (torch.as_tensor(a).long() for a in (y, pred_clean, pred_adv))
    check_int("pick_examples", "n", n, 1)
    if not (y.shape == pc.shape == pa.shape and y.ndim == 1):
        raise ValueError(f"pick_examples: y, pred_clean and pred_adv must be 1-D of one length; got shapes "
                         f"{tuple(y.shape)}, {tuple(pc.shape)}, {tuple(pa.shape)}.")
    fooled = ((pc == y) & (pa != y)).nonzero().flatten()[: (n + 1) // 2]
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[fooled] = False
    others = rest.nonzero().flatten()[: n - len(fooled)]
    return torch.cat([fooled, others]).sort().values


def _names(class_names: Sequence[str] | None, *labels: np.ndarray) -> Sequence[str] | dict[int, str]:
    """Label -> display name; checks every label has a name."""
    lo = min(int(a.min()) for a in labels)
    hi = max(int(a.max()) for a in labels)
    if class_names is None:
        return {i: str(i) for i in range(lo, hi + 1)}
    if lo < 0 or hi >= len(class_names):
        raise ValueError(
            f"plot_examples: labels and predictions must lie in [0, len(class_names) = {len(class_names)}); "
            f"got values from {lo} to {hi}."
        )
    return class_names
