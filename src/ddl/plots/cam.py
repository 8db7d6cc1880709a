"""Class activation maps: CAM, Grad-CAM, and the top-misclassification figure (Figs. 5-7, 9, 10).

Mitro et al. 2018 show where ConvNet, ResNet and AutoEncoder look on their most confidently
misclassified perturbed images. Two maps, both upsampled bilinearly to the input size and min-max
normalised per image to [0, 1]:

- CAM (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization", eq. 2):
  M_c = Σ_k w_ck A_k for a model whose head is ``fc(global_average_pool(A))``. Only valid for
  that architecture (our ResNet); :func:`class_activation_map` checks it.
- Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization"): α_k = spatial mean of ∂y_c/∂A_k (eq. 1), map ReLU(Σ_k α_k A_k)
  (eq. 2), for any architecture (ConvNet, AutoEncoder). y_c is the model's output for class c;
  for ddl's models that is the logit (the pre-softmax score the paper prescribes). For a GAP +
  linear head, ∂y_c/∂A_k = w_ck / (h·w) everywhere, so Grad-CAM = ReLU(CAM) / (h·w): the two agree
  after normalisation wherever the CAM is non-negative (tested).

Written here because the usual package (pytorch-grad-cam) is not a dependency of ddl and its
hooks keep state on the model; ours are removed before returning, and gradients are taken with
``torch.autograd.grad`` with respect to the activation only, so no ``.grad`` is left on the
model's parameters. Normalisation is done after upsampling so every map spans exactly [0, 1]
(a map that is zero everywhere stays zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F

from ddl._validate import check_images, check_int, check_labels
from ddl.plots import _float_array, _to_image


def grad_cam(model: nn.Module, x: torch.Tensor, target: Any, *, layer: nn.Module | str) -> torch.Tensor:
    """Grad-CAM heatmaps of class ``target`` at the output of ``layer``.

    Parameters
    ----------
    model : nn.Module in eval mode
        Classifier returning scores (N, n_classes).
    x : Tensor of shape (N, C, H, W), floating point
        Input images (not modified).
    target : int or Tensor of shape (N,), int64
        Class whose score is explained, per image (an int for all images).
    layer : nn.Module or str
        A sub-module of ``model`` (or its name, as in ``model.get_submodule``) run exactly once
        per forward pass, whose output is a feature map (N, K, h, w); typically the last
        convolutional block (ddl's models name it in their ``cam_layer`` attribute).

    Returns
    -------
    heatmaps : Tensor of shape (N, H, W), float32 in [0, 1], on x's device

    References
    ----------
    R. R. Selvaraju et al., "Grad-CAM", ICCV 2017, eqs. (1)-(2).
    """
    layer, labels = _check_cam_args("grad_cam", model, x, target, layer)
    with torch.enable_grad(), _Capture(layer, "grad_cam") as cap:
        xin = x.detach().clone().requires_grad_(True)  # gives A a graph even if the weights are frozen
        scores = model(xin)  # (N, n_classes)
        _check_scores("grad_cam", scores, x.shape[0], target)
        (grads,) = torch.autograd.grad(scores.gather(1, labels[:, None]).sum(), cap.output)  # (N, K, h, w)
    a = cap.output.detach()
    alpha = grads.mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1), eq. (1)
    cam = F.relu((alpha * a).sum(1))  # (N, h, w), eq. (2)
    return _upsample_and_normalise(cam, x.shape[-2:])


def class_activation_map(
    model: nn.Module, x: torch.Tensor, target: Any, *, layer: nn.Module | str, fc: nn.Linear | str
) -> torch.Tensor:
    """CAM heatmaps (Zhou et al. 2016) for a model whose head is ``fc(global_average_pool(layer output))``.

    Parameters
    ----------
    model : nn.Module in eval mode
        Classifier returning scores (N, n_classes).
    x : Tensor of shape (N, C, H, W), floating point
        Input images (not modified).
    target : int or Tensor of shape (N,), int64
        Class explained, per image.
    layer : nn.Module or str
        Sub-module (or its name) whose output A (N, K, h, w) is globally average-pooled into ``fc``.
    fc : nn.Linear or str
        The final linear layer (or its name), weight (n_classes, K).

    Returns
    -------
    heatmaps : Tensor of shape (N, H, W), float32 in [0, 1], on x's device
        Σ_k w_ck A_k (eq. 2 of Zhou et al.), upsampled bilinearly, min-max normalised per image.

    Raises
    ------
    ValueError
        If the input of ``fc`` is not the spatial mean of ``layer``'s output (then the CAM is not
        what the model computes; use :func:`grad_cam`).
    """
    layer, labels = _check_cam_args("class_activation_map", model, x, target, layer)
    fc = _resolve_module("class_activation_map", model, fc, "fc")
    if not isinstance(fc, nn.Linear):
        raise TypeError(f"class_activation_map: fc must be an nn.Linear; got {type(fc).__name__}.")
    with (
        torch.no_grad(),
        _Capture(layer, "class_activation_map") as cap,
        _Capture(fc, "class_activation_map", inputs=True) as fc_in,
    ):
        scores = model(x)  # (N, n_classes)
    _check_scores("class_activation_map", scores, x.shape[0], target)
    a = cap.output  # (N, K, h, w)
    pooled = a.mean(dim=(2, 3))  # (N, K)
    if pooled.shape != fc_in.output.shape or not torch.allclose(pooled, fc_in.output, rtol=1e-4, atol=1e-5):
        raise ValueError(
            "class_activation_map: the input of fc is not the global average pool of layer's output "
            f"(shapes {tuple(fc_in.output.shape)} and {tuple(pooled.shape)}), so CAM does not apply; use grad_cam."
        )
    cam = torch.einsum("nk,nkhw->nhw", fc.weight[labels].to(a.dtype), a)  # (N, h, w), eq. (2)
    return _upsample_and_normalise(cam, x.shape[-2:])


def top_misclassified(logits: Any, y: Any, k: int) -> np.ndarray:
    """Indices of the ``k`` most confidently misclassified images.

    Parameters
    ----------
    logits : Tensor or ndarray of shape (N, n_classes), floating point
        Scores before the softmax; confidence is the largest softmax probability.
    y : Tensor or ndarray of shape (N,), integer
        True labels.
    k : int
        How many to return, >= 1.

    Returns
    -------
    indices : ndarray of shape (min(k, n_wrong),), int64
        Misclassified images by decreasing confidence (ties: lower index first); fewer than ``k``
        when fewer images are misclassified.
    """
    z = _float_array(logits, func="top_misclassified", name="logits", ndim=2)
    labels = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y)
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (z.shape[0],):
        raise ValueError(
            f"top_misclassified: y must be an integer array of shape ({z.shape[0]},); "
            f"got dtype {labels.dtype}, shape {tuple(labels.shape)}."
        )
    check_int("top_misclassified", "k", k, 1)
    z = z.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    confidence = (p / p.sum(1, keepdims=True)).max(1)  # (N,)
    wrong = np.flatnonzero(z.argmax(1) != labels)
    order = np.argsort(-confidence[wrong], kind="stable")
    return wrong[order[:k]].astype(np.int64)


def plot_cam(
    x: torch.Tensor | np.ndarray,
    heatmaps: torch.Tensor | np.ndarray,
    *,
    titles: Sequence[str] | None = None,
    n_cols: int = 5,
    alpha: float = 0.45,
) -> Figure:
    """Images with their heatmaps overlaid (jet colour map), one panel per image.

    Parameters
    ----------
    x : Tensor or ndarray of shape (N, C, H, W), floating point in [0, 1]
        Images, C = 1 or 3.
    heatmaps : Tensor or ndarray of shape (N, H, W), floating point in [0, 1]
        As returned by :func:`grad_cam` or :func:`class_activation_map`.
    titles : sequence of N str, optional
        Panel titles, e.g. "true 3, pred 8 (0.99)".
    n_cols : int, default 5
        Panels per row.
    alpha : float, default 0.45
        Opacity of the heatmap.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes per image (in order) holding two images: the picture, then the heatmap; and a
        colour bar.
    """
    imgs = _float_array(x, func="plot_cam", name="x", ndim=4)
    maps = _float_array(heatmaps, func="plot_cam", name="heatmaps", ndim=3)
    n = imgs.shape[0]
    if imgs.shape[1] not in (1, 3) or maps.shape != (n, *imgs.shape[2:]):
        raise ValueError(
            f"plot_cam: x must be (N, 1 or 3, H, W) and heatmaps (N, H, W) with the same N, H, W; "
            f"got {tuple(imgs.shape)} and {tuple(maps.shape)}."
        )
    for name, a in (("x", imgs), ("heatmaps", maps)):
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(f"plot_cam: {name} must lie in [0, 1]; got values in [{a.min():g}, {a.max():g}].")
    if titles is not None and len(titles) != n:
        raise ValueError(f"plot_cam: titles must have one entry per image ({n}); got {len(titles)}.")
    check_int("plot_cam", "n_cols", n_cols, 1)
    if n == 0:
        raise ValueError("plot_cam: x must hold at least one image; got 0.")
    cols = min(n_cols, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.0 * cols + 0.8, 2.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        img, cmap = _to_image(imgs[i])
        ax.imshow(img, cmap=cmap, vmin=0.0, vmax=1.0)
        ax.imshow(maps[i], cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha)
        if titles is not None:
            ax.set_title(titles[i], fontsize="small")
    opaque = ScalarMappable(norm=Normalize(0.0, 1.0), cmap="jet")  # the bar without the overlay's alpha
    fig.colorbar(opaque, ax=axes, shrink=0.8, label="activation (normalised)")
    return fig


class _Capture:
    """Context manager: forward hook keeping ``module``'s output (or input), removed on exit."""

    def __init__(self, module: nn.Module, func: str, *, inputs: bool = False) -> None:
        self.module, self.func, self.inputs = module, func, inputs
        self.calls: list[torch.Tensor] = []

    def __enter__(self) -> _Capture:
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        self.calls.append(args[0] if self.inputs else output)

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()

    @property
    def output(self) -> torch.Tensor:
        what = "fc" if self.inputs else "layer"
        if len(self.calls) != 1:
            raise ValueError(
                f"{self.func}: {what} must run exactly once per forward pass of the model; it ran "
                f"{len(self.calls)} times (pass a module that is used once, e.g. not a shared nn.ReLU)."
            )
        out = self.calls[0]
        expected = 2 if self.inputs else 4
        if not isinstance(out, torch.Tensor) or out.dim() != expected:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"{self.func}: {what} {'input' if self.inputs else 'output'} must be a {expected}-D tensor "
                f"{'(N, K)' if self.inputs else '(N, K, h, w)'}; got {shape}."
            )
        return out


def _resolve_module(func: str, model: nn.Module, module: Any, name: str) -> nn.Module:
    if isinstance(module, str):
        try:
            return model.get_submodule(module)
        except AttributeError:
            raise ValueError(f"{func}: {name}={module!r} is not the name of a sub-module of the model.") from None
    if not isinstance(module, nn.Module) or not any(m is module for m in model.modules()):
        raise ValueError(
            f"{func}: {name} must be a sub-module of the model (or its name); got {type(module).__name__}."
        )
    return module


def _check_cam_args(func: str, model: Any, x: Any, target: Any, layer: Any) -> tuple[nn.Module, torch.Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{func}: model must be an nn.Module; got {type(model).__name__}.")
    if model.training:
        raise ValueError(
            f"{func}: model is in training mode (dropout/batch-norm would change the maps); call model.eval() first."
        )
    check_images(func, "x", x, value_range=None)
    layer = _resolve_module(func, model, layer, "layer")
    target = check_labels(func, "target", target, x.shape[0], per="image of x", allow_int=True)
    return layer, target.to(x.device)


def _check_scores(func: str, scores: Any, n: int, target: Any) -> None:
    """The scores' shape, and ``target`` (as the caller gave it, so that an int out of range is
    reported as that int) against their number of classes."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.shape[0] != n:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"{func}: model must return scores of shape (N={n}, n_classes); got {shape}.")
    check_labels(func, "target", target, n, scores.shape[1], per="image of x", allow_int=True,
                 classes_from=f"the model returns {scores.shape[1]} scores")


def _upsample_and_normalise(cam: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """(N, h, w) -> (N, H, W) bilinear (align_corners=False), then min-max per image to [0, 1], float32."""
    up = F.interpolate(cam[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]  # (N, H, W)
    lo = up.amin(dim=(1, 2), keepdim=True)
    span = up.amax(dim=(1, 2), keepdim=True) - lo
    return torch.where(span > 0, (up - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(up))
