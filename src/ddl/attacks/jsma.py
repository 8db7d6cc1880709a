"""Jacobian-based Saliency Map Attack (Papernot, McDaniel, Jha, Fredrikson, Celik, Swami 2016).

Implements Algorithm 3 of "The Limitations of Deep Learning in Adversarial Settings" (crafting by
increasing — or, for θ < 0, decreasing — pairs of features) with the pairwise saliency map of
eq. (10), batched over images and with a memory-bounded, exact pair search. Written by hand
because the existing implementations are either not the paper's algorithm (ART ranks single
features, ART issue #2306) or do not scale (torchattacks: one image at a time, a full N×N matrix,
one backward pass per class, 10 classes hard-coded).

What each step does, for every image still being attacked:

1. **Forward derivative of the logits.** α = ∂Z_t/∂x and β = Σ_{j≠t} ∂Z_j/∂x, with Z the model's
   output *before* the softmax. Carlini & Wagner (2017) compare the two variants (JSMA-Z on the
   logits, JSMA-F on the softmax output F); CleverHans and torchattacks use the logits, and so do
   we, because the softmax saturates on confidently classified inputs and its derivatives then
   carry almost no signal. Only two vectors per image
   are needed, so a step costs **two backward passes whatever the number of classes**:
   α from the gradient of Σ_i Z_{i,t_i}, and β = ∂(Σ_j Z_j)/∂x − α.
2. **Pairwise saliency map, eq. (10).** Over pairs p ≠ q of the search domain Γ, with
   a = α_p + α_q and b = β_p + β_q, pick the pair maximising a·|b| subject to a > 0 and b < 0
   (θ > 0), or |a|·b subject to a < 0 and b > 0 (θ < 0). Ties go to the lexicographically smallest
   (p, q), p < q. If no pair satisfies the conditions the image stops (the paper's arg max is over
   an empty set; CleverHans and torchattacks then modify a zero-score pair, which cannot help).
3. **Modify** x_p and x_q by θ, clipped to ``clip``; a feature that reaches the bound it is pushed
   towards leaves Γ (Algorithm 3, lines "remove p from Γ if x_p = 0 or 1"). Γ starts as the
   features not already at that bound.
4. **Stop** when the model predicts the target, after ⌊γ·N/2⌋ iterations (Algorithm 3's
   ``max_iter``; each iteration changes at most two features, so at most a fraction γ of the
   N features changes), when fewer than two features remain in Γ, or when no admissible pair
   exists. Finished images leave the batch; their values no longer change.

**Features.** N = C·H·W: every channel value of every pixel is a separate feature, as in the
paper's MNIST setting and in CleverHans/torchattacks (on colour images a "pixel" change touches one
channel). ``return_info=True`` reports both counts.

**Exact pair search in bounded memory.** The naive map is an N×N matrix per image (2.4 MB for
MNIST, 9.4 M entries for CIFAR-10, 84 GiB on ImageNet in torchattacks issue #187). We never build
it. With u = sign(θ)·α and v = −sign(θ)·β the problem is: maximise (u_p+u_q)(v_p+v_q) with both
sums > 0. The score only grows when a feature is replaced by one with larger u and larger v, so
each feature's best partner lies in the first two Pareto layers of the points (u_q, v_q) — a few
dozen features, found with one sort. We score every feature against those candidates (exact
best score per feature), then recover the first optimal pair with one O(N) scan; see
:func:`_best_pairs` for the argument. Work per image and step is O(N log N + N·|layers|) instead
of N², and the scoring is chunked by rows so that at most ``memory_budget_mb`` of pair scores exist
at once (all of Γ can be on the layers when u and v are anti-correlated): memory O(batch·N·rows),
never batch·N². The tests check the chosen pair against a plain double loop over all pairs.

**Two rules the paper leaves open**, decided here (and offered as options):

- *iterations*: ⌊γ·N/2⌋ (Papernot's ``max_iter``, CleverHans; ``iterations="floor"``, the default)
  or ⌈γ·N/2⌉ (torchattacks; ``iterations="ceil"``);
- *search domain*: Γ starts with the features below the clip maximum (Papernot, CleverHans;
  ``domain_below=None``, the default) or below a lower threshold (torchattacks: 0.99;
  ``domain_below=0.99``). Only for θ > 0.

With ``iterations="ceil", domain_below=0.99`` our attack reproduces torchattacks' success rate and
mean L0 on the W4 benchmark (bench/w4_notes.md), which checks that the algorithms otherwise agree.

``selection="single"`` is the ranking used by ART's ``SaliencyMapMethod``: the two features of Γ
with the largest sign(θ)·∂Z_t/∂x, no condition on the other classes (one backward pass per step).
It is not the paper's algorithm; ``"pairwise"`` (the paper's) is the default.

References
----------
Papernot et al. (2016), "The Limitations of Deep Learning in Adversarial Settings", IEEE EuroS&P,
Algorithm 3, eq. (8)-(10). Carlini & Wagner (2017), "Towards Evaluating the Robustness of Neural
Networks" (JSMA-Z vs JSMA-F).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ddl._progress import bar
from ddl._validate import (WrongTypeError, check_bool, check_choice, check_images, check_int, check_labels,
                           check_number, check_optional_number)
from ddl.attacks._checks import check_clip, check_eval_mode, n_classes_of

__all__ = ["jsma", "JSMAInfo"]

_SELECTIONS = ("pairwise", "single")
_ITERATION_RULES = ("floor", "ceil")
_BYTES_PER_PAIR = 24      # temporaries per (image, p, q) entry of the pair search: a, b, a·b, masks


@dataclass(frozen=True)
class JSMAInfo:
    """Per-image outcome of :func:`jsma` (all tensors of shape (N,), on the CPU).

    Attributes
    ----------
    success : bool
        The model predicts ``target`` on the adversarial image.
    n_changed : int64
        Features (channel values) that differ from the input.
    l0 : int64
        Pixel positions (H×W) where at least one channel differs; equals ``n_changed`` for grey.
    l2, linf : float64
        Euclidean and max norm of ``x_adv − x`` over the C·H·W values.
    target : int64
        Target class used (given, or drawn at random).
    n_iter : int64
        Iterations run (each changes one pair of features, by θ, clipped).
    """

    success: torch.Tensor
    n_changed: torch.Tensor
    l0: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    target: torch.Tensor
    n_iter: torch.Tensor


# ----------------------------------------------------------------------------- pair search
def _prefix_max(v: torch.Tensor) -> torch.Tensor:
    """Exclusive running maximum along dim 1: out[:, i] = max(v[:, :i]), −inf at i = 0."""
    run = torch.cummax(v, dim=1).values
    return torch.cat([torch.full_like(v[:, :1], -math.inf), run[:, :-1]], dim=1)


def _pareto_candidates(u: torch.Tensor, v: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
    """Mask (A, N) holding every feature of ``domain`` that has at most one dominator.

    q' dominates q when u_q' ≥ u_q and v_q' ≥ v_q, strictly in one coordinate or, for equal
    points, q' < q (a strict order, well defined with ties). After a stable sort by u descending,
    every earlier feature with v ≥ v_q dominates q, so "v above the running maximum of v" marks
    features with no earlier dominator; applied twice (the second time without the first
    marks) it keeps every feature with at most one dominator, plus a few more — a superset is
    all the search needs. One sort and two running maxima: O(N log N).
    """
    uu, vv = u.masked_fill(~domain, -math.inf), v.masked_fill(~domain, -math.inf)
    order = torch.sort(uu, dim=1, descending=True, stable=True).indices
    vs, ds = vv.gather(1, order), domain.gather(1, order)          # (A, N) in u-descending order
    first = ds & (vs > _prefix_max(vs))
    vs = vs.masked_fill(first, -math.inf)
    second = ds & ~first & (vs > _prefix_max(vs))
    return torch.zeros_like(domain).scatter_(1, order, first | second)


def _relu_product(u_rows: torch.Tensor, v_rows: torch.Tensor, u_cols: torch.Tensor,
                  v_cols: torch.Tensor) -> torch.Tensor:
    """max(u_p+u_q, 0)·max(v_p+v_q, 0): the pair score where both sums are > 0, else 0 (broadcast)."""
    return (u_rows + u_cols).clamp_min_(0).mul_((v_rows + v_cols).clamp_min_(0))


def _best_pairs(u: torch.Tensor, v: torch.Tensor, domain: torch.Tensor,
                budget_bytes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact arg max over pairs p < q of ``domain`` of (u_p+u_q)(v_p+v_q), both sums > 0.

    The same pair as scoring all N² pairs (eq. (10) of Papernot et al. with u = ±α, v = ∓β; first
    pair in lexicographic order on ties) without building the N×N map:

    1. If q' dominates q (see :func:`_pareto_candidates`), replacing q by q' never lowers a pair's
       score nor breaks its conditions (floating-point addition and multiplication of positive
       numbers are monotone). Following dominators that differ from p ends in the set C of
       features with at most one dominator. So S_p = max_{q ∈ C, q ≠ p} score(p, q) is p's best
       score, exactly, for every p.
    2. The best score is S* = max_p S_p; the first pair reaching it has p* = the first p with
       S_p = S*, and q* = the first q ≠ p* with score(p*, q) = S* (one O(N) scan).

    Scores are computed as max(a, 0)·max(b, 0), which is 0 for inadmissible pairs; rows whose best
    is 0 (no admissible pair, or one whose product underflows to 0) are redone with explicit masks.
    Work is O(N log N + N·|C|) per image; |C| is a few dozen on real gradients and all of Γ in the
    worst case (anti-correlated u and v), so the scoring is chunked by rows: the largest temporary
    is (A, R, |C|) with A·R·|C|·_BYTES_PER_PAIR ≤ ``budget_bytes``.

    Parameters
    ----------
    u, v : Tensor (A, N), floating
    domain : Tensor (A, N), bool — the search domain Γ of each image
    budget_bytes : int

    Returns
    -------
    p, q : Tensor (A,), int64 — feature indices, p < q
    found : Tensor (A,), bool — False where no admissible pair exists
    """
    a_rows, n = u.shape
    cand = _pareto_candidates(u, v, domain)
    m = max(1, int(cand.sum(dim=1).max()))
    cidx = cand.to(torch.int8).topk(m, dim=1).indices.sort(dim=1).values           # (A, M)
    cok = cand.gather(1, cidx)
    # −inf outside Γ / padding makes a sum −inf, hence a score of 0 (never chosen over an admissible pair)
    uu = u.masked_fill(~domain, -math.inf)
    cu = uu.gather(1, cidx).masked_fill(~cok, -math.inf)[:, None, :]               # (A, 1, M)
    cv = v.gather(1, cidx)[:, None, :]
    best_partner = torch.empty_like(u)                                              # S_p, (A, N)
    rows = max(1, budget_bytes // (_BYTES_PER_PAIR * max(1, a_rows) * m))
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        best_partner[:, r0:r1] = _relu_product(uu[:, r0:r1, None], v[:, r0:r1, None], cu, cv).amax(dim=2)
    # Features of C were also scored against themselves: redo them on C × C without the diagonal.
    cc = _relu_product(cu.transpose(1, 2), cv.transpose(1, 2), cu, cv)             # (A, M, M)
    cc.diagonal(dim1=1, dim2=2).zero_()
    best_partner.scatter_(1, cidx, torch.where(cok, cc.amax(dim=2), best_partner.gather(1, cidx)))
    best, p = best_partner.max(dim=1)                                 # first p reaching S*
    row = _relu_product(uu.gather(1, p[:, None]), v.gather(1, p[:, None]), uu, v)  # (A, N)
    row.scatter_(1, p[:, None], 0.0)
    q = (row == best[:, None]).to(torch.int8).argmax(dim=1)           # first partner reaching S*
    found = best > 0
    zero = torch.nonzero(~found & (domain.sum(dim=1) >= 2)).flatten()
    if len(zero):
        p[zero], q[zero], found[zero] = _best_pairs_masked(u[zero], v[zero], domain[zero], budget_bytes)
    return p, q, found


def _best_pairs_masked(u: torch.Tensor, v: torch.Tensor, domain: torch.Tensor,
                       budget_bytes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain chunked search with explicit conditions (scores may be 0); for rows where the fast one found 0."""
    a_rows, n = u.shape
    best = torch.full((a_rows,), -1.0, dtype=u.dtype, device=u.device)
    bp = torch.zeros(a_rows, dtype=torch.int64, device=u.device)
    bq = torch.zeros_like(bp)
    idx = torch.arange(n, device=u.device)
    rows = max(1, budget_bytes // (_BYTES_PER_PAIR * a_rows * n))
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        a, b = u[:, r0:r1, None] + u[:, None, :], v[:, r0:r1, None] + v[:, None, :]    # (A, R, N)
        ok = (a > 0) & (b > 0) & domain[:, r0:r1, None] & domain[:, None, :] & (idx[r0:r1, None] < idx)
        top, arg = torch.where(ok, a * b, -1.0).flatten(1).max(dim=1)   # first maximum, row-major
        better = top > best
        best = torch.where(better, top, best)
        bp, bq = torch.where(better, r0 + arg // n, bp), torch.where(better, arg % n, bq)
    return bp, bq, best >= 0


def _best_single(u: torch.Tensor, domain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ART's ranking: the two features of ``domain`` with the largest u (first index on ties)."""
    key = u.masked_fill(~domain, -math.inf)
    p = key.argmax(dim=1)
    q = key.scatter(1, p[:, None], -math.inf).argmax(dim=1)
    return torch.minimum(p, q), torch.maximum(p, q), domain.sum(dim=1) >= 2


# ----------------------------------------------------------------------------- main loop
def _logit_derivatives(model: nn.Module, x: torch.Tensor, shape: torch.Size, target: torch.Tensor,
                       need_beta: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits (A, K), α = ∂Z_t/∂x (A, N) and β = Σ_{j≠t} ∂Z_j/∂x (A, N) with two backward passes."""
    x_req = x.detach().view(-1, *shape).requires_grad_(True)     # (A, C, H, W)
    with torch.enable_grad():
        logits = model(x_req)                                     # (A, K)
        onehot = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
        (alpha,) = torch.autograd.grad(logits, x_req, onehot, retain_graph=need_beta)
        beta = None
        if need_beta:
            (total,) = torch.autograd.grad(logits, x_req, torch.ones_like(logits))
            beta = (total - alpha).flatten(1)                     # (A, N)
    return logits.detach(), alpha.flatten(1), beta


def _jsma_chunk(model: nn.Module, x: torch.Tensor, target: torch.Tensor, theta: float, lo: float, hi: float,
                max_iter: int, selection: str, budget_bytes: int,
                domain_hi: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attack one chunk (B, C, H, W); returns x_adv (B, C, H, W), success (B,), n_iter (B,).
    Γ starts with the features below ``domain_hi`` (θ > 0) or above ``lo`` (θ < 0)."""
    b, shape = x.shape[0], x.shape[1:]
    x_cur = x.detach().reshape(b, -1).clone()                     # (A, N), A = images still attacked
    increase = theta > 0
    domain = x_cur < domain_hi if increase else x_cur > lo        # (A, N) search domain Γ
    sign = 1.0 if increase else -1.0
    out, success = x_cur.clone(), torch.zeros(b, dtype=torch.bool, device=x.device)
    n_iter = torch.zeros(b, dtype=torch.int64, device=x.device)
    rows, iters, t = torch.arange(b, device=x.device), torch.zeros_like(n_iter), target.clone()

    def finish(mask: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        """Record the rows in ``mask`` as final (success = ``ok``); return the mask of rows kept."""
        out[rows[mask]], success[rows[mask]], n_iter[rows[mask]] = x_cur[mask], ok[mask], iters[mask]
        return ~mask

    while len(rows):
        logits, alpha, beta = _logit_derivatives(model, x_cur, shape, t, selection == "pairwise")
        reached = logits.argmax(dim=1) == t
        keep = finish(reached | (iters >= max_iter) | (domain.sum(dim=1) < 2), reached)
        x_cur, domain, t, iters, rows, alpha = (v[keep] for v in (x_cur, domain, t, iters, rows, alpha))
        if not len(rows):
            break
        if selection == "pairwise":
            p, q, found = _best_pairs(sign * alpha, -sign * beta[keep], domain, budget_bytes)
        else:
            p, q, found = _best_single(sign * alpha, domain)
        keep = finish(~found, torch.zeros_like(found))            # no admissible pair: stop (module doc)
        x_cur, domain, t, iters, rows, p, q = (v[keep] for v in (x_cur, domain, t, iters, rows, p, q))
        ar = torch.arange(len(rows), device=x.device)
        for f in (p, q):                                          # Algorithm 3: modify, clip, update Γ
            x_cur[ar, f] = (x_cur[ar, f] + theta).clamp(lo, hi)
            domain[ar, f] = x_cur[ar, f] < hi if increase else x_cur[ar, f] > lo
        iters += 1
    return out.view(b, *shape), success, n_iter


def _random_targets(ref: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    """A class ≠ ref, uniform over the other n_classes − 1, from a CPU generator seeded with ``seed``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    offset = torch.randint(1, n_classes, (len(ref),), generator=gen)
    return (ref.cpu() + offset) % n_classes


def _info(x: torch.Tensor, x_adv: torch.Tensor, success, target, n_iter) -> JSMAInfo:
    d = (x_adv - x).detach().cpu().double()
    changed = d != 0
    return JSMAInfo(success=success.cpu(), n_changed=changed.flatten(1).sum(dim=1),
                    l0=changed.any(dim=1).flatten(1).sum(dim=1), l2=d.flatten(1).norm(dim=1),
                    linf=d.flatten(1).abs().amax(dim=1), target=target.cpu(), n_iter=n_iter.cpu())


def _check_theta(theta) -> None:
    """theta must be a finite nonzero number: one rule in every message (a wrong type is a
    :class:`WrongTypeError`, inf, NaN and 0 a ``ValueError``)."""
    message = f"jsma: theta must be a finite nonzero number; got {theta!r}."
    try:
        nonzero = check_number("jsma", "theta", theta) != 0
    except WrongTypeError:
        raise WrongTypeError(message) from None
    except ValueError:
        raise ValueError(message) from None
    if not nonzero:
        raise ValueError(message)


def jsma(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
         target: torch.Tensor | None = None, theta: float = 1.0, gamma: float = 0.1,
         clip: tuple[float, float] = (0.0, 1.0), selection: str = "pairwise", iterations: str = "floor",
         domain_below: float | None = None, seed: int = 0,
         batch_size: int = 256, memory_budget_mb: float = 256,
         return_info: bool = False, progress: bool = False) -> torch.Tensor | tuple[torch.Tensor, JSMAInfo]:
    """Targeted Jacobian-based Saliency Map Attack (Papernot et al. 2016, Algorithm 3, eq. (10)).

    Parameters
    ----------
    model : nn.Module
        Classifier in eval mode mapping (N, C, H, W) to logits (N, K), any K >= 2; not modified.
    x : Tensor of shape (N, C, H, W), floating point, values within ``clip``
        Clean images; not modified.
    y : Tensor of shape (N,), int64, or None
        True labels (the third argument of every ddl attack). With ``target=None`` the target of
        each image is a random class different from ``y`` (``y=None``: from the model's
        prediction on ``x``), uniform over the K − 1 others, drawn with ``seed`` — the paper's
        "random target among the wrong classes".
    target : Tensor of shape (N,), int64, or None
        Target class per image, instead of random targets.
    theta : float, nonzero, default 1.0
        Change applied to each selected feature per step; > 0 increases features (Algorithm 3),
        < 0 decreases them (the signs of the saliency conditions flip).
    gamma : float in (0, 1], default 0.1
        Maximum fraction of features changed: at most ⌊γ·N/2⌋ iterations of two features each,
        N = C·H·W.
    clip : (float, float), default (0.0, 1.0)
    selection : {"pairwise", "single"}, default "pairwise"
        "pairwise": the paper's saliency map over feature pairs. "single": ART's ranking of
        single features by the target-class derivative (not the paper's algorithm).
    iterations : {"floor", "ceil"}, default "floor"
        At most ⌊γ·N/2⌋ iterations (Papernot, CleverHans) or ⌈γ·N/2⌉ (torchattacks).
    domain_below : float or None, default None
        θ > 0 only: Γ starts with the features below this value (torchattacks: 0.99); None: below
        the clip maximum (Papernot, CleverHans).
    seed : int >= 0, default 0
        Seed of the random targets (a private ``torch.Generator``; global RNG untouched).
    batch_size : int >= 1, default 256
        Images attacked together; images that finish leave the batch.
    memory_budget_mb : float > 0, default 256
        Upper bound on the pair-score temporaries of the saliency search.
    return_info : bool, default False
        Also return a :class:`JSMAInfo` with per-image success, changes, norms, target, iterations.

    Returns
    -------
    x_adv : Tensor of shape (N, C, H, W), same dtype and device as ``x``
    info : JSMAInfo, only when ``return_info`` is True

    Notes
    -----
    When ⌊γ·N/2⌋ = 0 (tiny inputs) nothing is changed and ``info.success`` is True only where the
    model already predicts the target.

    Examples
    --------
    >>> lin = torch.nn.Linear(4, 3, bias=False)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[1.0, 0, -1, 0], [0, 1, 2, -1], [0, -1, 0, 1]]))
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), lin).eval()
    >>> x = torch.tensor([[[[0.6, 0.0, 0.0, 0.0]]]])
    >>> jsma(model, x, target=torch.tensor([1]), gamma=1.0).tolist()
    [[[[0.6000000238418579, 1.0, 1.0, 0.0]]]]
    """
    check_eval_mode("jsma", model)
    lo, hi = check_clip("jsma", clip)
    check_images("jsma", "x", x, value_range=(lo, hi), nonempty=True, range_from="the clip range")
    _check_theta(theta)
    check_number("jsma", "gamma", gamma, 0, 1, low_open=True)
    check_choice("jsma", "selection", selection, _SELECTIONS)
    check_choice("jsma", "iterations", iterations, _ITERATION_RULES)
    domain_hi = hi
    if domain_below is not None:
        if theta < 0:
            raise ValueError(f"jsma: domain_below applies to theta > 0 (features that increase); got theta={theta!r}.")
        domain_hi = check_optional_number("jsma", "domain_below", domain_below, lo, hi, low_open=True)
    check_int("jsma", "seed", seed, 0)
    check_int("jsma", "batch_size", batch_size, 1)
    budget = check_number("jsma", "memory_budget_mb", memory_budget_mb, 0, low_open=True)
    check_bool("jsma", "return_info", return_info)
    n_classes = n_classes_of("jsma", model, x)
    target = _resolve_target(model, x, target, y, n_classes, seed, batch_size).to(x.device)
    n_features = x[0].numel()
    half = gamma * n_features / 2
    max_iter = math.floor(half + 1e-9) if iterations == "floor" else math.ceil(half - 1e-9)  # 0.58·100/2 = 28.999…
    parts = []
    with bar(len(x), "jsma", progress) as b:
        for i in range(0, len(x), batch_size):
            parts.append(_jsma_chunk(model, x[i:i + batch_size], target[i:i + batch_size], float(theta), lo, hi,
                                     max_iter, selection, int(budget * 2**20), domain_hi))
            b.update(len(parts[-1][0]))
    x_adv = torch.cat([p[0] for p in parts])
    if not return_info:
        return x_adv
    success, n_iter = torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
    return x_adv, _info(x, x_adv, success, target, n_iter)


def _resolve_target(model, x, target, y, n_classes: int, seed: int, batch_size: int) -> torch.Tensor:
    """Validated ``target``, or random wrong classes relative to ``y`` / the model's predictions."""
    model_classes = f"the model has {n_classes} outputs"
    if target is not None:
        if y is not None:
            check_labels("jsma", "y", y, x.shape[0], n_classes, per="image of x", classes_from=model_classes)
        return check_labels("jsma", "target", target, x.shape[0], n_classes, per="image of x",
                            classes_from=model_classes)
    if y is not None:
        check_labels("jsma", "y", y, x.shape[0], n_classes, per="image of x", classes_from=model_classes)
        ref = y
    else:
        with torch.no_grad():
            ref = torch.cat([model(x[i:i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])
    return _random_targets(ref, n_classes, seed)
