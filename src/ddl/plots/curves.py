"""Accuracy against the attack budget ε, and histograms of PSNR and SSIM (beyond the paper, DESIGN.md §4-5).

The paper reports one ε per data set; the report adds a sweep, drawn by :func:`plot_eps_curves`
(perturbed accuracy dashed, denoised accuracy solid, one colour per model). PSNR and SSIM of the
perturbed and the denoised images against the clean ones are per-image arrays; their histograms
show whether denoising helps every image or only on average.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from ddl._validate import check_int, check_number
from ddl.plots import _figure_and_axes, _to_numpy

_RECORD_KEYS = ("model", "eps", "perturbed", "denoised")


def plot_eps_curves(
    records: Sequence[Mapping[str, Any]], *, ax: Axes | None = None, title: str | None = None,
    grey_levels: bool = False,
) -> Figure:
    """Accuracy of the perturbed and the denoised images against ε, one pair of lines per model.

    Parameters
    ----------
    records : sequence of dict
        One per (model, ε): ``{"model": str, "eps": float >= 0, "perturbed": float in [0, 1],
        "denoised": float in [0, 1]}`` (accuracies as fractions, as in ``results.json``). Other
        keys are ignored; each (model, eps) pair may appear once.
    ax : matplotlib Axes, optional
        Draw here; default a new 7.5×4.5-inch figure.
    title : str, optional
        Axes title; default "Accuracy against ε" (the legend tells perturbed from denoised).
    grey_levels : bool, default False
        Label the ε ticks in grey levels, ``k/255`` (CIFAR-10's convention), at the swept values.

    Returns
    -------
    fig : matplotlib.figure.Figure
        For each model, in order of first appearance: a dashed line (perturbed) then a solid line
        (denoised), both with ε increasing on x and the accuracy fraction on y (shown as %).
    """
    table = _check_records(records)
    fig, ax = _figure_and_axes(ax, func="plot_eps_curves", figsize=(7.5, 4.5))
    colours = [f"C{i % 10}" for i in range(len(table))]
    for colour, (model, rows) in zip(colours, table.items(), strict=True):
        eps, pert, den = (np.array(v) for v in zip(*sorted(rows), strict=True))
        ax.plot(eps, pert, color=colour, linestyle="--", marker="o", markersize=4, label=f"{model}: perturbed")
        ax.plot(eps, den, color=colour, linestyle="-", marker="s", markersize=4, label=f"{model}: denoised")
    if grey_levels:
        ticks = sorted({e for rows in table.values() for e, _, _ in rows})
        ax.set_xticks(ticks, [f"{e * 255:.3g}/255" for e in ticks])
    ax.set_xlabel("ε (L∞ budget, pixel scale [0, 1])")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    ax.set_title(title if title is not None else "Accuracy against ε")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize="small")
    return fig


def _check_records(records: Any) -> dict[str, list[tuple[float, float, float]]]:
    """Records -> {model: [(eps, perturbed, denoised), ...]} after checking keys, ranges, duplicates."""
    if isinstance(records, (str, Mapping)) or not isinstance(records, Sequence) or len(records) == 0:
        raise ValueError(f"plot_eps_curves: records must be a non-empty list of dicts; got {type(records).__name__}.")
    table: dict[str, list[tuple[float, float, float]]] = {}
    for i, r in enumerate(records):
        missing = [k for k in _RECORD_KEYS if not isinstance(r, Mapping) or k not in r]
        if missing:
            raise ValueError(f"plot_eps_curves: records[{i}] lacks key(s) {', '.join(missing)}; got {r!r}.")
        eps, pert, den = (r[k] for k in _RECORD_KEYS[1:])
        check_number("plot_eps_curves", f"records[{i}]['eps']", eps, 0)
        for key, v in (("perturbed", pert), ("denoised", den)):
            check_number("plot_eps_curves", f"records[{i}][{key!r}] (an accuracy fraction)", v, 0, 1)
        rows = table.setdefault(str(r["model"]), [])
        if any(e == eps for e, _, _ in rows):
            raise ValueError(f"plot_eps_curves: records[{i}] repeats model {r['model']!r} at eps={eps!r}.")
        rows.append((float(eps), float(pert), float(den)))
    return table


def plot_metric_histograms(
    psnr: Mapping[str, Any], ssim: Mapping[str, Any], *, bins: int = 40, title: str | None = None
) -> Figure:
    """Histograms of per-image PSNR (left) and SSIM (right), one step line per condition.

    Parameters
    ----------
    psnr : dict of str to Tensor or ndarray of shape (N,), floating point
        Condition -> per-image PSNR in dB, e.g. ``{"perturbed": ..., "denoised": ...}``.
        ``inf`` (an image identical to its clean version) is allowed: such images are counted in
        the legend ("k identical, not drawn") since a histogram has no bin for them.
    ssim : dict of str to Tensor or ndarray of shape (N,), floating point in [-1, 1]
        Condition -> per-image SSIM.
    bins : int, default 40
        Number of equal-width bins per panel, shared by the conditions of that panel.
    title : str, optional
        Figure title.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Two axes (PSNR, SSIM); each holds one ``StepPatch`` per condition with the counts
        (``patch.get_data()`` gives ``(counts, edges, baseline)``).
    """
    check_int("plot_metric_histograms", "bins", bins, 1)
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    ax_psnr, ax_ssim = fig.subplots(1, 2)
    _histograms(ax_psnr, _check_metric(psnr, "psnr", allow_inf=True), bins)
    ax_psnr.set_xlabel("PSNR against clean (dB)")
    ax_psnr.set_title("PSNR per image")
    ssim_data = _check_metric(ssim, "ssim", allow_inf=False)
    for k, v in ssim_data.items():
        if v.min() < -1 or v.max() > 1:
            raise ValueError(
                f"plot_metric_histograms: ssim[{k!r}] must lie in [-1, 1]; got values in [{v.min():g}, {v.max():g}]."
            )
    _histograms(ax_ssim, ssim_data, bins)
    ax_ssim.set_xlabel("SSIM against clean")
    ax_ssim.set_title("SSIM per image")
    for ax in (ax_psnr, ax_ssim):
        ax.set_ylabel("images")
        ax.legend(fontsize="small")
    if title is not None:
        fig.suptitle(title)
    return fig


def _check_metric(values: Any, name: str, *, allow_inf: bool) -> dict[str, np.ndarray]:
    if not isinstance(values, Mapping) or len(values) == 0:
        raise ValueError(
            f"plot_metric_histograms: {name} must be a non-empty dict of condition -> array; "
            f"got {type(values).__name__}."
        )
    out = {}
    for k, v in values.items():
        a = _to_1d(v, name=f"{name}[{k!r}]")
        bad = np.isnan(a) | np.isneginf(a) | (np.isposinf(a) & (not allow_inf))
        if bad.any():
            rule = "finite or +inf" if allow_inf else "finite"
            raise ValueError(f"plot_metric_histograms: {name}[{k!r}] must be {rule}; got {int(bad.sum())} other values.")
        out[str(k)] = a
    return out


def _to_1d(v: Any, *, name: str) -> np.ndarray:
    a = _to_numpy(v, func="plot_metric_histograms", name=name)
    if not np.issubdtype(a.dtype, np.floating) or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"plot_metric_histograms: {name} must be a non-empty 1-D float array; "
            f"got dtype {a.dtype}, shape {tuple(a.shape)}."
        )
    return a.astype(np.float64)


def _histograms(ax: Axes, data: dict[str, np.ndarray], bins: int) -> None:
    """Step histograms with shared edges over the finite values; +inf values are counted in the label."""
    finite = [v[np.isfinite(v)] for v in data.values()]
    pooled = np.concatenate(finite)
    lo, hi = (float(pooled.min()), float(pooled.max())) if pooled.size else (0.0, 1.0)
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.linspace(lo - 0.5, hi + 0.5, bins + 1)
    for (name, v), f in zip(data.items(), finite, strict=True):
        counts, _ = np.histogram(f, bins=edges)
        n_inf = v.size - f.size
        label = f"{name} (mean {f.mean():.3g})" if f.size else name
        if n_inf:
            label += f"; {n_inf} identical (inf), not drawn"
        ax.stairs(counts, edges, label=label, linewidth=1.3)
