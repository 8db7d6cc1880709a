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
``(seed, restart, image_ids[i])``, and AutoAttack's attacks draw image ``i``'s randomness from a
generator seeded by ``(seed, image_ids[i])`` alone. ``pyautoattack`` itself seeds the global
generator once per call and draws every image's random start, and Square's squares (one square
shared by the whole batch), from it, so in its own batches an image's randomness depends on its
batch mates (measured: Square's outcome changed on 12–14 of 53 images when the batch changed).
So an image's result never depends on what it is attacked with, which makes a cascade give the
same worst case per image as attacking everything, and lets an evaluation be cached and resumed
per chunk of images.

How: APGD-CE and APGD-T run batched through ``pyautoattack``'s own ``attack_single_run``, with
each image's random start drawn from its generator exactly as ``perturb`` draws it for one image
and handed in as ``x_init`` (the restarts and target classes are looped here as ``perturb``
loops them). Square (L∞) is its loop, ``attack_single_run``'s, written here batched: every
image draws its own square and colours from its generator in ``pyautoattack``'s order, so a
batch gives each image the trajectory the image gets alone (tested bit for bit against
``pyautoattack`` run on each image alone, on a model whose rows are computed independently; on a
real model only the forward pass's float rounding can differ between batch sizes, as for PGD).
FAB-T with one restart draws no random number and runs batched through ``perturb``; with more
restarts (random starts) it runs one image at a time, each image seeded alone. Batching
is what this buys, measured on one thread (seconds per 100 images, APGD-CE 100 iterations /
Square 1000 queries, batched in ``pyautoattack`` → one image at a time): a ConvNet behind a
dictionary denoiser (MNIST-sized, BPDA) on images it keeps 2.8 → 11.1 s (APGD-CE) and 20.6 →
87.6 s (Square), about 4×; on a linear model whose forward pass costs nothing, 0.08 → 2.7 s and
0.23 → 15.2 s.

Every returned image satisfies ``|x_adv − x| ≤ eps`` **exactly** in its dtype and lies in the
clip box: :func:`project_linf` nudges the few values that float rounding of ``x ± eps`` puts
one ulp outside the ball back inside with ``torch.nextafter``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddl._validate import check_choice, check_int
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


def _image_generator(seed: int, image_id: int) -> torch.Generator:
    """Image ``image_id``'s generator for AutoAttack's attacks: in the state ``perturb`` leaves the
    global one after ``torch.random.manual_seed(_image_seed(seed, image_id))``."""
    gen = torch.Generator()
    gen.manual_seed(_image_seed(seed, image_id))
    return gen


def _apgd_batched(atk, x: Tensor, y: Tensor, gens: list, n_targets: int | None) -> Tensor:
    """``pyautoattack``'s ``APGDAttack.perturb`` (``n_targets`` None) or
    ``APGDAttack_targeted.perturb`` on a batch, each image's random start from ``gens[i]``.

    The loops are ``perturb``'s: per target class (APGD-T: the ``k``-th most likely class of the
    images still standing, k = 2 … n_targets + 1) and per restart, ``attack_single_run`` on the
    images not broken yet. ``perturb`` draws a standing image's start as
    ``2 * torch.rand(x.shape) - 1`` after seeding the global generator once; here each standing
    image draws the same numbers from its own generator, and the start is passed as ``x_init``."""
    atk.init_hyperparam(x)
    with torch.no_grad():
        acc = atk.model(x).max(1)[1] == y
    adv = x.clone()
    for target_class in ([None] if n_targets is None else range(2, n_targets + 2)):
        for _ in range(atk.n_restarts):
            idx = acc.nonzero().flatten()
            if idx.numel() == 0:
                return adv
            xf, yf = x[idx].clone(), y[idx].clone()
            if target_class is not None:
                with torch.no_grad():
                    atk.y_target = atk.model(xf).sort(dim=1)[1][:, -target_class]
            t = torch.stack([2 * torch.rand(x.shape[1:], generator=gens[i]) - 1 for i in idx.tolist()])
            x_init = xf + atk.eps * torch.ones_like(xf) * atk.normalize(t.to(xf.device))
            _, acc_curr, _, adv_curr = atk.attack_single_run(xf, yf, x_init=x_init)
            broken = (acc_curr == 0).nonzero().flatten()
            acc[idx[broken]] = False
            adv[idx[broken]] = adv_curr[broken].clone()
    return adv


def _square_batched(atk, x: Tensor, y: Tensor, gens: list) -> Tensor:
    """``pyautoattack``'s ``SquareAttack.perturb`` (L∞, one restart, ``resc_schedule=False``) on a
    batch, each image drawing its initial stripes, squares and colours from ``gens[i]`` in the
    order ``attack_single_run`` draws them for one image; the arithmetic is that loop's, per image."""
    atk.init_hyperparam(x)
    with torch.no_grad():
        adv = x.clone()
        acc = atk.predict(x).max(1)[1] == y
        idx = acc.nonzero().flatten()
        if idx.numel() == 0:
            return adv
        xs, ys, gs = x[idx].clone(), y[idx].clone(), [gens[i] for i in idx.tolist()]
        n, c, h, w = xs.shape
        n_features, eps = c * h * w, atk.eps
        start = torch.stack([torch.sign(2 * torch.rand([c, 1, w], generator=g) - 1) for g in gs]).to(xs.device)
        x_best = torch.clamp(xs + eps * start, 0., 1.)
        margin_min, loss_min = atk.margin_and_loss(x_best, ys)
        for i_iter in range(atk.n_queries):
            active = (margin_min > 0.0).nonzero().flatten()
            if active.numel() == 0:
                break
            x_curr, x_best_curr, y_curr = xs[active], x_best[active], ys[active]
            margin_min_curr, loss_min_curr = margin_min[active], loss_min[active]
            p = atk.p_selection(i_iter)
            s = min(max(int(round(math.sqrt(p * n_features / c))), 1), min(h, w))
            new_deltas = torch.zeros_like(x_curr)
            for j, i in enumerate(active.tolist()):
                g = gs[i]
                vh = int((0 + (h - s) * torch.rand([1], generator=g)).long())
                vw = int((0 + (w - s) * torch.rand([1], generator=g)).long())
                colour = torch.sign(2 * torch.rand([c, 1, 1], generator=g) - 1).to(xs.device)
                new_deltas[j, :, vh:vh + s, vw:vw + s] = 2. * eps * colour
            x_new = x_best_curr + new_deltas
            x_new = torch.clamp(torch.min(torch.max(x_new, x_curr - eps), x_curr + eps), 0., 1.)
            margin, loss = atk.margin_and_loss(x_new, y_curr)
            improved = (loss < loss_min_curr).float()
            loss_min[active] = improved * loss + (1. - improved) * loss_min_curr
            improved = torch.max(improved, (margin <= 0.).float())
            margin_min[active] = improved * margin + (1. - improved) * margin_min_curr
            improved = improved.reshape([-1, 1, 1, 1])
            x_best[active] = improved * x_new + (1. - improved) * x_best_curr
        broken = (atk.predict(x_best).max(1)[1] != ys).nonzero().flatten()
        adv[idx[broken]] = x_best[broken].clone()
    return adv


def autoattack(model: nn.Module, x: Tensor, y: Tensor, *, attack: str, eps: float, seed: int = 0,
               n_iter: int = 100, n_restarts: int = 1, n_queries: int = 1000,
               n_target_classes: int = 9, clip: tuple[float, float] = (0.0, 1.0),
               callback=None, image_ids=None, batch_size: int = 100) -> Tensor:
    """One of AutoAttack's L∞ attacks (``pyautoattack``), on ``model`` as given, each image's
    randomness its own (module docstring).

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
        Image ``i``'s randomness comes from a generator seeded with
        ``_image_seed(seed, image_ids[i])``: its result depends only on itself, ``seed`` and its
        id, whatever is attacked with it (up to the float rounding of the model's forward pass
        at another batch size), and a cascade gives the same worst case as attacking every
        image. The caller's global generators are left as they were.
    callback : callable(n_done) or None
        Called after each batch with its number of images (FAB-T with restarts: after each image).
    image_ids : sequence of int or None
        Stable identities of the images (default ``range(N)``), for the seeds.
    batch_size : int
        Images attacked together; it changes no image's randomness.

    Returns
    -------
    x_adv : Tensor like ``x``, ``|x_adv − x| ≤ eps`` exactly, within ``clip``.
    """
    check_choice("autoattack", "attack", attack, AUTOATTACKS)
    check_int("autoattack", "batch_size", batch_size, 1)
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
    with torch.random.fork_rng(devices=devices):   # pyautoattack seeds and draws from the global generator
        if attack != "fab-t" or n_restarts == 1:
            for b in range(0, len(x), batch_size):
                xb, yb = x[b:b + batch_size].detach().float(), y[b:b + batch_size]
                atk = _make_attack(model, attack, eps, 0, device, n_iter, n_restarts, n_queries, n_targets)
                if attack == "fab-t":       # one restart: FAB draws nothing (its random starts are restarts 2, 3...)
                    adv = atk.perturb(xb, yb)
                else:
                    gens = [_image_generator(seed, i) for i in ids[b:b + batch_size]]
                    adv = (_square_batched(atk, xb, yb, gens) if attack == "square" else
                           _apgd_batched(atk, xb, yb, gens, n_targets if attack == "apgd-t" else None))
                out[b:b + batch_size] = project_linf(adv.to(x.dtype), x[b:b + batch_size], eps, clip)
                if callback is not None:
                    callback(len(xb))
            return out
        for i, image_id in enumerate(ids):
            xb, yb = x[i:i + 1].detach(), y[i:i + 1]
            atk = _make_attack(model, attack, eps, _image_seed(seed, image_id), device, n_iter,
                               n_restarts, n_queries, n_targets)
            adv = atk.perturb(xb.float(), yb)          # AutoAttack works in float32
            out[i:i + 1] = project_linf(adv.to(xb.dtype), xb, eps, clip)
            if callback is not None:
                callback(1)
    return out
