"""Sanity checks for evaluations through the denoiser.

``warn_if_zero_gradients`` is AutoAttack's ``check_zero_gradients`` idea (Croce & Hein 2020,
``autoattack/checks.py``): if the input gradient of the loss is zero for some inputs, a
gradient-based attack on them fails silently and the "robust accuracy" measured is an artefact
(gradient masking, Athalye et al. 2018), not robustness. Through a ``DictionaryDenoiser`` this
happens with ``grad="none"``; use ``grad="exact"`` or ``grad="bpda"`` for adaptive attacks.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddl._validate import check_images, check_labels

__all__ = ["warn_if_zero_gradients"]


def warn_if_zero_gradients(model: nn.Module, x: Tensor, y: Tensor, *, threshold: float = 1e-8) -> float:
    """Warn when the cross-entropy gradient with respect to the input is ~0.

    Parameters
    ----------
    model : nn.Module
        E.g. ``nn.Sequential(denoiser, classifier)``; its mode is left as it is.
    x : Tensor of shape (N, C, H, W), float
    y : Tensor of shape (N,), int64 labels
    threshold : float, default 1e-8
        A sample counts as zero-gradient when ``sum |∂loss/∂x_i| < threshold`` (AutoAttack's).

    Returns
    -------
    fraction : float
        Fraction of the N inputs whose gradient is ~0 (1.0 when no gradient reaches x at all).

    Warns
    -----
    RuntimeWarning
        When the fraction is > 0, with the count and what to do.
    """
    check_images("warn_if_zero_gradients", "x", x, value_range=None)
    check_labels("warn_if_zero_gradients", "y", y, x.shape[0], per="image of x")
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        else:
            grad = None
    if grad is None:
        per_sample = torch.zeros(x.shape[0])
    else:
        per_sample = grad.abs().reshape(x.shape[0], -1).sum(1)
    n_zero = int((per_sample < threshold).sum())
    if n_zero:
        warnings.warn(
            f"warn_if_zero_gradients: the input gradient is ~0 for {n_zero} of {x.shape[0]} "
            f"inputs; gradient-based attacks will fail on them and overstate robustness "
            f"(gradient masking). Through a DictionaryDenoiser use grad='exact' or grad='bpda'.",
            RuntimeWarning, stacklevel=2)
    return n_zero / x.shape[0]
