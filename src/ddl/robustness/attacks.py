"""Attacks for robustness evaluation: PGD with restarts and best-iterate tracking, and
AutoAttack's APGD-CE, APGD-T, FAB-T and Square through ``pyautoattack``.

PGD is written here (not wrapped) because an honest evaluation needs what the textbook loop
lacks: an image counts as broken if *any* iterate of *any* restart fools the model (best-iterate
tracking; the last iterate can be worse than an earlier one once the step oscillates), each
image stops as soon as it is broken (early stop: later steps and restarts only spend time on
the images still standing), and the step size decays (cosine) so the last iterates refine
instead of bouncing. AutoAttack's attacks come from ``pyautoattack`` (Croce & Hein 2020),
called one attack at a time so each one's per-image result is kept; they seed the *global*
torch generator, so they run inside ``torch.random.fork_rng`` and leave it as they found it.

Every random choice is per image: PGD draws image ``i``'s start from a generator seeded by
``(seed, restart, image_ids[i])``, and AutoAttack's attacks are run **one image at a time** with
a seed derived from ``(seed, image_ids[i])`` (in a batch, ``pyautoattack``'s random starts, and
Square's squares, shared by the batch, depend on the other images). So an image's result never
depends on what it is attacked with, which makes a cascade give the same worst case per image as
attacking everything, and lets an evaluation be cached and resumed per chunk of images. The
price is AutoAttack's lost batching, measured on one thread (seconds per 100 images, APGD-CE 100
iterations / Square 1000 queries, batched → per image): a ConvNet behind a dictionary denoiser
(MNIST-sized, BPDA) on images it keeps 2.8 → 11.1 s (APGD-CE) and 20.6 → 87.6 s (Square), about
4×; where images break early, 3.9 → 11.4 s and 0.30 → 1.19 s; on a linear model whose forward pass
costs nothing, Python overhead dominates: 0.08 → 2.7 s and 0.23 → 15.2 s. ``pgd_linf`` keeps its
batches (its randomness is per image without that).

Every returned image satisfies ``|x_adv − x| ≤ eps`` **exactly** in its dtype and lies in the
clip box: :func:`project_linf` nudges the few values that float rounding of ``x ± eps`` puts
one ulp outside the ball back inside with ``torch.nextafter``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddl._validate import check_choice
from ddl.attacks._linf import project_linf, within_linf

__all__ = ["AUTOATTACKS", "autoattack", "pgd_linf", "project_linf", "within_linf"]

AUTOATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")


def _per_image_noise(shape, ids: Tensor, seed: int, restart: int, dtype) -> Tensor:
    """U(−1, 1) noise of ``shape`` (B, ...), row b from a generator seeded by (seed, restart, ids[b])."""
    out = torch.empty(shape, dtype=dtype)
    gen = torch.Generator()
    for b, i in enumerate(ids.tolist()):
        gen.manual_seed((seed * 1_000_003 + restart) * 1_000_033 + int(i))
        out[b] = torch.rand(shape[1:], generator=gen, dtype=dtype)
    return out * 2 - 1


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


def pgd_linf(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int = 50,
             restarts: int = 1, step_size: float | None = None, seed: int = 0,
             clip: tuple[float, float] = (0.0, 1.0), best_iterate: bool = True,
             batch_size: int = 256, callback=None, image_ids=None) -> tuple[Tensor, Tensor]:
    """Untargeted L∞ PGD on the cross-entropy, random starts, cosine step decay.

    Parameters
    ----------
    model : nn.Module
        (N, C, H, W) → logits; e.g. a :class:`~ddl.robustness.threat.DefendedModel`. Its forward
        value decides success, its backward gives the direction.
    x : Tensor (N, C, H, W), float, within ``clip``
    y : Tensor (N,), int64 true labels
    eps : float >= 0
    steps : int >= 1
        Gradient steps per restart.
    restarts : int >= 1
        Random starts. Image ``i``'s start in restart ``r`` comes from its own generator, seeded
        from ``(seed, r, image_ids[i])``, so results depend neither on ``batch_size`` nor on
        which other images are attacked with it.
    step_size : float or None
        First step α₀; ``None`` → ``max(eps / 4, 2.5 eps / steps)``. Step t uses
        ``α₀ (1 + cos(π t / steps)) / 2``.
    best_iterate : bool, default True
        Keep any iterate that fools the model (and stop that image). ``False``: the classic
        last iterate of the last restart, judged at the end (for comparison).
    callback : callable(n_done) or None
        Called after each batch with the number of images finished (for progress bars).
    image_ids : sequence of int or None
        Stable identities of the images (default ``range(N)``), for the random starts.

    Returns
    -------
    x_adv : Tensor like ``x``, ``|x_adv − x| ≤ eps`` exactly, within ``clip``
    fooled : Tensor (N,) bool
        Whether ``model(x_adv)`` misclassifies (misclassified clean images count as fooled).
    """
    if step_size is None:
        step_size = max(eps / 4, 2.5 * eps / steps)
    x = x.detach()
    ids = torch.arange(len(x)) if image_ids is None else torch.as_tensor(image_ids).cpu()
    out, fooled_all = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for i in range(0, len(x), batch_size):
        x0, lab = x[i:i + batch_size], y[i:i + batch_size]
        best, fooled = x0.clone(), torch.zeros(len(x0), dtype=torch.bool, device=x.device)
        with torch.no_grad():
            fooled |= model(x0).argmax(1) != lab
        for r in range(restarts):
            noise = _per_image_noise(x0.shape, ids[i:i + batch_size], seed, r, x0.dtype).mul_(eps)
            active = ~fooled if best_iterate else torch.ones_like(fooled)
            cur = project_linf(x0 + noise.to(x0.device), x0, eps, clip)
            for t in range(steps + 1):
                idx = active.nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                grad = None
                if t < steps:
                    xa = cur[idx].clone().requires_grad_(True)
                    with torch.enable_grad():
                        logits = model(xa)
                        (grad,) = torch.autograd.grad(_ce(logits, lab[idx]), xa)
                elif best_iterate:                 # the last iterate: only judge it
                    with torch.no_grad():
                        logits = model(cur[idx])
                else:
                    break
                if best_iterate:
                    hit = logits.detach().argmax(1) != lab[idx]
                    best[idx[hit]] = cur[idx[hit]]
                    fooled[idx[hit]] = True
                    active[idx[hit]] = False
                    keep = ~hit
                    idx, grad = idx[keep], (grad[keep] if grad is not None else None)
                if grad is None:
                    break
                alpha = step_size * (1 + math.cos(math.pi * t / steps)) / 2
                cur[idx] = project_linf(cur[idx] + alpha * grad.sign(), x0[idx], eps, clip)
            if not best_iterate:
                best = cur
        if not best_iterate:
            with torch.no_grad():
                fooled = model(best).argmax(1) != lab
        out[i:i + batch_size], fooled_all[i:i + batch_size] = best, fooled
        if callback is not None:
            callback(len(x0))
    return out, fooled_all


class _InDtype(nn.Module):
    """``model(x.to(dtype))``: runs a float64 model under AutoAttack's float32 inputs."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype
        self.training = False

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.to(self.dtype)).float()


def _image_seed(seed: int, image_id: int) -> int:
    """The seed of one image's AutoAttack run: a function of ``(seed, image_id)`` only, in
    ``[0, 2**63)`` (torch's seed range)."""
    return ((int(seed) * 1_000_003 + 7_919) * 1_000_033 + int(image_id)) & (2 ** 63 - 1)


def _make_attack(model: nn.Module, attack: str, eps: float, seed: int, device, n_iter: int,
                 n_restarts: int, n_queries: int, n_targets: int):
    """A fresh ``pyautoattack`` attack object (one per image: no state carried between images)."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.fab_pt import FABAttack_PT
    from pyautoattack.square import SquareAttack

    if attack == "apgd-ce":
        return APGDAttack(model, n_restarts=n_restarts, n_iter=n_iter, eps=eps, norm="Linf",
                          loss="ce", seed=seed, device=device, verbose=False)
    if attack == "apgd-t":
        return APGDAttack_targeted(model, n_restarts=n_restarts, n_iter=n_iter, eps=eps,
                                   norm="Linf", seed=seed, device=device, verbose=False,
                                   n_target_classes=n_targets)
    if attack == "fab-t":
        atk = FABAttack_PT(model, n_restarts=n_restarts, n_iter=n_iter, eps=eps, norm="Linf",
                           seed=seed, device=device, verbose=False, n_target_classes=n_targets)
        atk.targeted = True
        return atk
    return SquareAttack(model, p_init=0.8, n_queries=n_queries, eps=eps, norm="Linf",
                        n_restarts=1, seed=seed, device=device, verbose=False,
                        resc_schedule=False)


def autoattack(model: nn.Module, x: Tensor, y: Tensor, *, attack: str, eps: float, seed: int = 0,
               n_iter: int = 100, n_restarts: int = 1, n_queries: int = 1000,
               n_target_classes: int = 9, clip: tuple[float, float] = (0.0, 1.0),
               callback=None, image_ids=None) -> Tensor:
    """One of AutoAttack's L∞ attacks (``pyautoattack``), on ``model`` as given, image by image.

    Parameters
    ----------
    model : nn.Module
        (N, C, H, W) → logits; e.g. a :class:`~ddl.robustness.threat.DefendedModel`.
    x : Tensor (N, C, H, W), float, within ``clip``
    y : Tensor (N,), int64 true labels
    attack : {"apgd-ce", "apgd-t", "fab-t", "square"}
        APGD on the cross-entropy; targeted APGD on the DLR loss (``n_target_classes`` targets);
        targeted FAB; Square (score-based black-box: ``n_queries`` forward passes, no gradient).
    n_iter, n_restarts : AutoAttack's standard values are 100 and 1 (APGD-T, FAB-T, Square).
    n_queries : Square's query budget (AutoAttack's standard is 5000).
    seed : int
        ``pyautoattack`` seeds the global generator once per call, and its attacks draw their
        random starts (and Square its squares, shared by the whole batch) from it, so in a batch
        an image's randomness would depend on its batch mates (measured: Square's outcome
        changed on 12–14 of 53 images when the batch changed). So each image is attacked alone,
        with the seed ``_image_seed(seed, image_ids[i])``, inside ``torch.random.fork_rng``
        (the caller's global generators are left as they were): an image's result depends only
        on itself, ``seed`` and its id, whatever is attacked with it, and a cascade gives the
        same worst case as attacking every image. The cost is the lost batching of the model's
        forward passes (see the module docstring).
    callback : callable(n_done) or None
        Called after each image with 1 (for progress bars).
    image_ids : sequence of int or None
        Stable identities of the images (default ``range(N)``), for the seeds.

    Returns
    -------
    x_adv : Tensor like ``x``, ``|x_adv − x| ≤ eps`` exactly, within ``clip``.
    """
    check_choice("autoattack", "attack", attack, AUTOATTACKS)
    device = x.device
    if x.dtype != torch.float32:                   # AutoAttack works in float32: cast back
        model = _InDtype(model, x.dtype)
    with torch.no_grad():
        n_cls = model(x[:1]).shape[1]
    if attack == "apgd-t" and n_cls < 4:
        raise ValueError(f"autoattack: 'apgd-t' uses the DLR loss, which needs >= 4 classes; the "
                         f"model has {n_cls}.")
    n_targets = min(n_target_classes, n_cls - 1)
    ids = range(len(x)) if image_ids is None else [int(i) for i in torch.as_tensor(image_ids).tolist()]
    if len(ids) != len(x):
        raise ValueError(f"autoattack: image_ids must give one id per image of x ({len(x)}); got "
                         f"{len(ids)}.")
    out = x.detach().clone()
    devices = ([device.index if device.index is not None else torch.cuda.current_device()]
               if device.type == "cuda" else [])
    with torch.random.fork_rng(devices=devices):   # pyautoattack seeds the global generator
        for i, image_id in enumerate(ids):
            xb, yb = x[i:i + 1].detach(), y[i:i + 1]
            atk = _make_attack(model, attack, eps, _image_seed(seed, image_id), device, n_iter,
                               n_restarts, n_queries, n_targets)
            adv = atk.perturb(xb.float(), yb)          # AutoAttack works in float32
            out[i:i + 1] = project_linf(adv.to(xb.dtype), xb, eps, clip)
            if callback is not None:
                callback(1)
    return out
