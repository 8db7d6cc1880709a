"""Exact L∞ projection shared by every attack: ``|x_adv − x| ≤ eps`` holds exactly in the dtype.

``x + eps`` is rounded to the dtype of ``x`` (float32: up to half an ulp of ``x + eps``, ~3e-8
near 0.3), so the textbook ``clamp(x_adv, x − eps, x + eps)`` can leave values ~1e-8 outside
the ball. :func:`project_linf` moves those values back inside, one ulp of the larger magnitude
at a time, after the last operation; the check is done on the exact difference (float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["project_linf", "within_linf"]


def within_linf(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Per-value ``|x_adv − x| ≤ eps``, the difference computed exactly (in float64 for float32
    inputs; float64 inputs compare their float64 difference)."""
    wide = torch.float64
    return (x_adv.to(wide) - x.to(wide)).abs() <= eps


def project_linf(x_adv: Tensor, x: Tensor, eps: float, clip: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Projection onto ``{‖x' − x‖∞ ≤ eps} ∩ clip``, exact in the dtype of ``x``.

    Both sets are boxes, so clamping to the ball then to ``clip`` is the Euclidean projection
    (``x`` itself is in both). The ball's bounds ``x ± eps`` are computed in float64 and rounded
    to the dtype *towards x* (round to nearest, then one ulp back where that overshot), so each
    bound is the float closest to the exact bound that is inside the ball. For float64 inputs
    any value whose float64 difference still exceeds eps is moved back by one ulp of the larger
    magnitude until it is inside.
    """
    lo, hi = clip
    x_adv = x_adv.detach()
    if x.dtype == torch.float64:
        up, down = x + eps, x - eps
    else:
        x64 = x.double()
        up64, down64 = x64 + eps, x64 - eps
        up, down = up64.to(x.dtype), down64.to(x.dtype)
        up = torch.where(up.double() > up64, torch.nextafter(up, x), up)
        down = torch.where(down.double() < down64, torch.nextafter(down, x), down)
    out = torch.max(torch.min(x_adv, up), down).clamp_(lo, hi)
    for _ in range(8):                             # float64 only, in practice; 8 is a guard
        bad = ~within_linf(out, x, eps)
        if not bad.any():
            return out
        big = torch.max(x.abs(), out.abs())
        ulp = torch.nextafter(big, torch.full_like(big, float("inf"))) - big
        out = torch.where(bad, out - torch.sign(out - x) * ulp, out)
    raise RuntimeError("project_linf: could not bring values within eps (a bug).")
