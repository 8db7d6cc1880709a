"""Input validation shared by every attack (STYLE.md §3.6: check where the value enters, once).

Each public attack calls these at its top and then hands trusted tensors to private helpers.
Every message names the attack, the parameter, the rule and the value received. Scalar parameters
(eps, steps, seed, loss, ...), the images (``check_images``) and the labels (``check_labels``) are
checked with ``ddl._validate``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ddl._validate import is_real


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
    if not isinstance(clip, (tuple, list)) or len(clip) != 2 or not all(is_real(c) for c in clip):
        raise ValueError(f"{fn_name}: clip must be a pair of numbers (lo, hi); got {clip!r}.")
    lo, hi = float(clip[0]), float(clip[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{fn_name}: clip must be finite with lo < hi; got {clip!r}.")
    return lo, hi


def n_classes_of(fn_name: str, model: nn.Module, x: torch.Tensor) -> int:
    """Number of model outputs, from one forward pass on the first image; checks the output is (1, K)
    and, before it, that the model's parameters are on x's device (a bare torch error otherwise)."""
    p = next(iter(model.parameters()), None)          # a model without parameters runs anywhere
    if p is not None and p.device != x.device:
        raise ValueError(f"{fn_name}: model and x must be on one device; the model's parameters are on "
                         f"{p.device}, x is on {x.device}.")
    with torch.no_grad():
        out = model(x[:1])
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1 or out.shape[1] < 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{fn_name}: model must map (N, C, H, W) images to logits of shape (N, K) with "
                         f"K >= 2; got {shape} for one image.")
    return int(out.shape[1])
