"""Fast Gradient Sign Method (Goodfellow, Shlens, Szegedy 2015, eq. (3)).

``x' = clip(x + ε·sign(∇ₓ J(θ, x, y)))`` with J the cross-entropy of the model's logits. Written
by hand (a dozen lines) rather than wrapped from ART/torchattacks so that it uses
``torch.autograd.grad`` (no ``.grad`` left on parameters), never switches the model's mode,
batches over chunks, and shares its gradient step with PGD (:func:`_gradient_sign_step`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ddl.attacks._linf import project_linf
from ddl._validate import check_choice, check_images, check_int, check_labels, check_number
from ddl.attacks._checks import check_clip, check_eval_mode, n_classes_of

__all__ = ["fgsm"]


def _ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy (sum, not mean: each image's gradient is independent of the chunk size)."""
    return F.cross_entropy(logits, labels, reduction="sum")


def _margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed margin ``max_{j≠y} Z_j − Z_y`` (Carlini & Wagner 2017, eq. (f6) without the clamp)."""
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return (others.amax(dim=1) - z_y).sum()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"ce": _ce_loss, "margin": _margin_loss}


def _gradient_sign_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, step: float, *,
                        targeted: bool, loss: str) -> torch.Tensor:
    """One signed-gradient step, unclipped: ``x + step·sign(∇ₓ L)`` (untargeted) or ``x − step·sign(∇ₓ L)``.

    Shared by FGSM (one step of size ε) and PGD (many steps of size α). Inputs are trusted.

    Parameters
    ----------
    model : nn.Module in eval mode
    x : Tensor (B, C, H, W), floating; not modified
    labels : Tensor (B,), int64; true labels (untargeted) or targets (targeted)
    step : float >= 0
    targeted : bool
    loss : key of ``LOSSES``

    Returns
    -------
    Tensor (B, C, H, W), same dtype as ``x``, detached.
    """
    x_req = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        value = LOSSES[loss](model(x_req), labels)
        (grad,) = torch.autograd.grad(value, x_req)
    direction = -grad.sign() if targeted else grad.sign()      # sign(0) = 0: that value does not move
    return (x.detach() + step * direction).detach()


def _labels_or_predictions(fn_name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                           targeted: bool, batch_size: int) -> torch.Tensor:
    """Validate ``y``, or (untargeted, ``y is None``) return the model's predictions on ``x``."""
    n_classes = n_classes_of(fn_name, model, x)
    if y is None:
        if targeted:
            raise ValueError(f"{fn_name}: targeted=True needs the target classes in y; got y=None.")
        with torch.no_grad():
            return torch.cat([model(x[i:i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])
    check_labels(fn_name, "y", y, x.shape[0], n_classes, per="image of x",
                 classes_from=f"the model has {n_classes} outputs")
    return y.to(x.device)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps: float,
         clip: tuple[float, float] = (0.0, 1.0), targeted: bool = False, loss: str = "ce",
         batch_size: int = 512) -> torch.Tensor:
    """Fast Gradient Sign Method, L∞ (Goodfellow et al. 2015, eq. (3)).

    Untargeted: ``x' = clip(x + ε·sign(∇ₓ L(model(x), y)))``, moving away from the label ``y``.
    Targeted: ``x' = clip(x − ε·sign(∇ₓ L(model(x), y)))`` with ``y`` the target classes
    (Kurakin et al. 2017, "one-step target class method").

    Parameters
    ----------
    model : nn.Module
        Classifier in eval mode mapping (N, C, H, W) to logits (N, K). Not modified: no mode
        switch, no ``.grad`` left on its parameters, their ``requires_grad`` untouched.
    x : Tensor of shape (N, C, H, W), floating point, values within ``clip``
        Clean images; not modified.
    y : Tensor of shape (N,), int64, or None
        True labels (untargeted) or target classes (targeted). ``None`` (untargeted only) uses the
        model's own predictions on ``x``, which avoids "label leaking" (Kurakin et al. 2017, §4.3)
        and is what an attacker without labels can do.
    eps : float >= 0
        L∞ size of the perturbation. ``eps=0`` returns a copy of ``x``.
    clip : (float, float), default (0.0, 1.0)
        Box the adversarial images are clipped to.
    targeted : bool, default False
    loss : {"ce", "margin"}, default "ce"
        Cross-entropy of the logits (the paper's J), or the margin ``max_{j≠y} Z_j − Z_y``.
    batch_size : int >= 1, default 512
        Images per forward/backward pass; bounds memory for large test sets.

    Returns
    -------
    Tensor of shape (N, C, H, W), same dtype and device as ``x``
        A new tensor with ``‖x' − x‖∞ ≤ eps`` and values within ``clip``.

    Notes
    -----
    Values whose gradient is exactly zero get ``sign(0) = 0`` and are not moved.

    References
    ----------
    Goodfellow, Shlens, Szegedy (2015), "Explaining and Harnessing Adversarial Examples", eq. (3).
    Kurakin, Goodfellow, Bengio (2017), "Adversarial Machine Learning at Scale", §3.1, §4.3.

    Examples
    --------
    >>> model = torch.nn.Linear(2, 2).eval()
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]])); _ = model.bias.zero_()
    >>> # ∇ₓ CE = Wᵀ(softmax(Wx) − e_0) = (1 − p_0)·(W_1 − W_0) = (1 − p_0)·[2, 2.5]: both signs +.
    >>> fgsm(torch.nn.Sequential(torch.nn.Flatten(), model).eval(),
    ...      torch.tensor([[[[0.5, 0.5]]]]), torch.tensor([0]), eps=0.1).tolist()
    [[[[0.6000000238418579, 0.6000000238418579]]]]
    """
    check_eval_mode("fgsm", model)
    lo, hi = check_clip("fgsm", clip)
    check_images("fgsm", "x", x, value_range=(lo, hi), nonempty=True, range_from="the clip range")
    eps = check_number("fgsm", "eps", eps, 0)
    check_choice("fgsm", "loss", loss, tuple(LOSSES))
    check_int("fgsm", "batch_size", batch_size, 1)
    labels = _labels_or_predictions("fgsm", model, x, y, targeted, batch_size)
    # project_linf: |x' − x| <= eps exactly in the dtype (x + eps alone can round past it)
    chunks = [project_linf(_gradient_sign_step(model, x[i:i + batch_size], labels[i:i + batch_size],
                                               eps, targeted=targeted, loss=loss),
                           x[i:i + batch_size], eps, (lo, hi))
              for i in range(0, len(x), batch_size)]
    return torch.cat(chunks)
