"""Input validation shared by every attack (STYLE.md §3.6: check where the value enters, once).

Each public attack calls these at its top and then hands trusted tensors to private helpers.
Every message names the attack, the parameter, the rule and the value received. Scalar parameters
(eps, steps, seed, loss, ...) are checked with ``ddl._validate``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ddl._validate import _is_real


def check_eval_mode(fn_name: str, model: nn.Module) -> None:
    """Raise if ``model`` (or any sub-module) is in training mode.

    Dropout and batch-norm in training mode make the gradient random and batch-dependent, so an
    attack would not be reproducible. The mode is not switched here: the caller owns the model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn_name}: model must be a torch.nn.Module; got {type(model).__name__}.")
    if any(m.training for m in model.modules()):
        raise ValueError(f"{fn_name}: model is in training mode (dropout/batch-norm would make the attack "
                         f"random); call model.eval() first.")


def check_clip(fn_name: str, clip: object) -> tuple[float, float]:
    """Return ``clip`` as ``(lo, hi)`` floats; raise unless it is two finite numbers with lo < hi."""
    if not isinstance(clip, (tuple, list)) or len(clip) != 2 or not all(_is_real(c) for c in clip):
        raise ValueError(f"{fn_name}: clip must be a pair of numbers (lo, hi); got {clip!r}.")
    lo, hi = float(clip[0]), float(clip[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{fn_name}: clip must be finite with lo < hi; got {clip!r}.")
    return lo, hi


def check_image_batch(fn_name: str, x: object, clip: tuple[float, float], name: str = "x") -> None:
    """Raise unless ``x`` is a floating (N, C, H, W) tensor with N >= 1, no NaN, values within ``clip``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn_name}: {name} must be a torch.Tensor of shape (N, C, H, W); "
                        f"got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"{fn_name}: {name} must be a floating-point tensor in [{clip[0]}, {clip[1]}]; "
                        f"got {x.dtype} (convert with ddl.data.to_float_images).")
    if x.ndim != 4 or x.shape[0] == 0 or 0 in x.shape[1:]:
        raise ValueError(f"{fn_name}: {name} must have shape (N, C, H, W) with every size >= 1; "
                         f"got shape {tuple(x.shape)}.")
    if torch.isnan(x).any():
        raise ValueError(f"{fn_name}: {name} contains NaN values.")
    lo, hi = float(x.min()), float(x.max())
    if lo < clip[0] or hi > clip[1]:
        raise ValueError(f"{fn_name}: {name} values must lie within clip=({clip[0]}, {clip[1]}); "
                         f"got min {lo:.6g}, max {hi:.6g}.")


def check_labels(fn_name: str, y: object, n: int, n_classes: int, name: str = "y") -> None:
    """Raise unless ``y`` is an int64 tensor of shape (n,) with values in [0, n_classes)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{fn_name}: {name} must be an int64 torch.Tensor of shape ({n},); "
                        f"got {type(y).__name__}.")
    if y.dtype != torch.int64:
        raise TypeError(f"{fn_name}: {name} must be int64 class labels; got {y.dtype}.")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{fn_name}: {name} must have shape ({n},) to match x; got shape {tuple(y.shape)}.")
    if n and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"{fn_name}: {name} values must be class indices in [0, {n_classes}) "
                         f"(the model has {n_classes} outputs); got min {int(y.min())}, max {int(y.max())}.")


def n_classes_of(fn_name: str, model: nn.Module, x: torch.Tensor) -> int:
    """Number of model outputs, from one forward pass on the first image; checks the output is (1, K)."""
    with torch.no_grad():
        out = model(x[:1])
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1 or out.shape[1] < 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{fn_name}: model must map (N, C, H, W) images to logits of shape (N, K) with "
                         f"K >= 2; got {shape} for one image.")
    return int(out.shape[1])
