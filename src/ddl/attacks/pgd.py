"""Projected Gradient Descent, L∞ (Madry, Makelov, Schmidt, Tsipras, Vladu 2018, eq. (2) and §2.1).

``x⁰ = clip(x + U(−ε, ε))`` (random start) or ``x``; then for t = 1..steps:
``xᵗ = Π(xᵗ⁻¹ + α·sign(∇ₓ L(model(xᵗ⁻¹), y)))`` where Π is the projection onto the ε-ball around
``x`` intersected with the clip box. For L∞ both sets are boxes, so clamping to the ball and then
to ``clip`` is the exact Euclidean projection onto their intersection (which contains ``x``).

The step is FGSM's :func:`ddl.attacks.fgsm._gradient_sign_step`. The random start is drawn from a
``torch.Generator`` seeded with ``seed`` on the CPU for the whole input at once, so results do not
depend on the global RNG, the device or ``batch_size``.
"""

from __future__ import annotations

import torch
from torch import nn

from ddl._validate import check_choice, check_images, check_int, check_number
from ddl.attacks._checks import check_clip, check_eval_mode
from ddl._progress import bar
from ddl.attacks._linf import project_linf
from ddl.attacks.fgsm import LOSSES, _gradient_sign_step, _labels_or_predictions

__all__ = ["pgd"]


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, lo: float, hi: float) -> torch.Tensor:
    """Projection onto {‖x' − x‖∞ ≤ eps} ∩ [lo, hi]ⁿ (both boxes, so two clamps are exact)."""
    return project_linf(x_adv, x, eps, (lo, hi))          # exact in the dtype (see _linf)


def _random_start(x: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    """Uniform noise in [−eps, eps], shape of ``x``, from a CPU generator seeded with ``seed``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.rand(x.shape, generator=gen, dtype=x.dtype, device="cpu")
    return (noise * 2.0 - 1.0).mul_(eps).to(x.device)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps: float, step_size: float,
        steps: int, random_start: bool = True, clip: tuple[float, float] = (0.0, 1.0), targeted: bool = False,
        seed: int = 0, loss: str = "ce", batch_size: int = 512, progress: bool = False) -> torch.Tensor:
    """L∞ Projected Gradient Descent (Madry et al. 2018).

    Parameters
    ----------
    model : nn.Module
        Classifier in eval mode mapping (N, C, H, W) to logits (N, K); not modified.
    x : Tensor of shape (N, C, H, W), floating point, values within ``clip``
        Clean images; not modified.
    y : Tensor of shape (N,), int64, or None
        True labels (untargeted) or target classes (targeted). ``None`` (untargeted only) uses the
        model's predictions on ``x`` (no label leaking, Kurakin et al. 2017).
    eps : float >= 0
        Radius of the L∞ ball.
    step_size : float > 0
        α, the size of each signed-gradient step.
    steps : int >= 1
        Number of steps (no early stopping, as in Madry et al.).
    random_start : bool, default True
        Start from ``clip(x + U(−eps, eps))`` instead of ``x``.
    clip : (float, float), default (0.0, 1.0)
    targeted : bool, default False
        Descend the loss of the target classes ``y`` instead of ascending the loss of the labels.
    seed : int >= 0, default 0
        Seed of the random start (a private ``torch.Generator``; the global RNG is untouched).
    loss : {"ce", "margin"}, default "ce"
    batch_size : int >= 1, default 512
        Images per forward/backward pass.

    Returns
    -------
    Tensor of shape (N, C, H, W), same dtype and device as ``x``
        ``‖x' − x‖∞ ≤ eps``, values within ``clip``.

    Notes
    -----
    With ``steps=1``, ``step_size=eps`` and ``random_start=False`` this is exactly :func:`fgsm`.

    References
    ----------
    Madry et al. (2018), "Towards Deep Learning Models Resistant to Adversarial Attacks", eq. (2), §2.1.
    """
    check_eval_mode("pgd", model)
    lo, hi = check_clip("pgd", clip)
    check_images("pgd", "x", x, value_range=(lo, hi), nonempty=True, range_from="the clip range")
    eps = check_number("pgd", "eps", eps, 0)
    step_size = check_number("pgd", "step_size", step_size, 0, low_open=True)
    check_int("pgd", "steps", steps, 1)
    check_int("pgd", "seed", seed, 0)
    check_choice("pgd", "loss", loss, tuple(LOSSES))
    check_int("pgd", "batch_size", batch_size, 1)
    labels = _labels_or_predictions("pgd", model, x, y, targeted, batch_size)
    x = x.detach()
    start = _project(x + _random_start(x, eps, seed), x, eps, lo, hi) if random_start else x.clone()
    chunks = []
    with bar(len(x) * steps, "pgd", progress, unit="img-step") as b:
        for i in range(0, len(x), batch_size):
            x0, x_adv, lab = x[i:i + batch_size], start[i:i + batch_size], labels[i:i + batch_size]
            for _ in range(steps):
                x_adv = _project(_gradient_sign_step(model, x_adv, lab, step_size, targeted=targeted, loss=loss),
                                 x0, eps, lo, hi)
                b.update(len(x0))
            chunks.append(x_adv)
    return torch.cat(chunks)
