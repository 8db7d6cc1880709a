"""Sanity flags: computed warning signs that an evaluation is probably not to be trusted.

From Carlini et al. (2019, "On Evaluating Adversarial Robustness", §5 checklist) and AutoAttack's
``checks.py`` / ``flags_doc.md`` (Croce & Hein 2020). Each flag is ``{"code", "message"}``; the
message says what was measured, what it means and what to try. None of them is asserted by
hand: each is computed from the result and, for zero gradients, from one more backward pass.

``weak_attack``
    PGD on the *bare* model at the largest ε leaves more than 1 % of images correct, at an ε
    where standard models are known to fall to ~0 % (≥ 0.3 for 1-channel images, MNIST's
    standard; ≥ 8/255 for 3-channel, CIFAR-10's). The attack is probably too weak (too few
    steps, a bug); every defended number is then an overestimate. Not checked below those ε,
    nor for an adversarially trained bare model (``robust_bare_model``), which PGD should not break.
``masked_gradients``
    A black-box attack (Square) breaks more than 1 % of images that every gradient attack left
    standing, at some ε: the gradients through the defence point the wrong way (Athalye et al.
    2018). Try another threat model (``soft``, ``bpda``), more steps, or EOT. Under cascade the
    black-box attack only sees the images the attacks before it left, so
    :func:`~ddl.robustness.evaluate_robustness` requires it after every gradient attack there
    (then it is run on exactly the images every gradient attack left standing, and the flag is
    the same as without cascade).
``zero_gradients``
    More than 1 % of input *values* (pixels × channels) get an exactly zero loss gradient under
    a gradient threat model: gradient attacks cannot move them. Per pixel, not per image.
``non_monotonic``
    Accuracy under an adaptive attack (or the worst case) rises with ε: a larger ball contains
    the smaller one, so a sound attack can only do better. The attack is unreliable. The
    oblivious attack is exempt: it optimises against the bare model, not the defended one, so
    nothing makes its defended accuracy monotonic in ε.
``unbounded_above_chance``
    At ε = 1 any image can be reached, so accuracy should fall to chance or below; if it stays
    above, the attack, not the defence, is failing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddl.robustness._names import eps_key, parse_attack
from ddl.robustness.threat import defended

__all__ = ["FLAG_CODES", "compute_flags", "zero_gradient_fraction"]

FLAG_CODES = ("weak_attack", "masked_gradients", "zero_gradients", "non_monotonic",
              "unbounded_above_chance")
_TOL = 0.01


def zero_gradient_fraction(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 200) -> float:
    """Fraction of input values whose cross-entropy gradient is exactly 0 (per value)."""
    zeros, total = 0, 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xb), y[i:i + batch_size], reduction="sum")
            grad = torch.autograd.grad(loss, xb, allow_unused=True)[0] if loss.requires_grad else None
        zeros += xb.numel() if grad is None else int((grad == 0).sum())
        total += xb.numel()
    return zeros / total


#: Whether the worst case can still be quoted when a flag fires: the last sentence of its message.
#: Every worst case is an upper bound of robust accuracy (a stronger attack can only lower it);
#: a flag says how far from tight it may be.
TRUST = {
    "weak_attack": "Can the worst case be trusted? No: the attacks are too weak to bound "
                   "robustness; quote it only after a stronger run clears this flag.",
    "masked_gradients": "Can the worst case be trusted? Only as a loose upper bound: it already "
                        "counts the black-box breaks, but gradient attacks are misled, so it may "
                        "still be too high; quote it with this flag.",
    "zero_gradients": "Can the worst case be trusted? Only if a black-box attack in the suite "
                      "agrees with it (no masked_gradients flag); otherwise treat it as too high.",
    "non_monotonic": "Can the worst case be trusted? Not at the larger eps, where it is too high; "
                     "take the smaller eps's value as its bound.",
    "unbounded_above_chance": "Can the worst case be trusted? No: the attack cannot even break "
                              "an unbounded perturbation; every bounded number is too high.",
}


def compute_flags(result, *, model: nn.Module, defence: nn.Module | None, x: Tensor, y: Tensor,
                  n_classes: int, n_channels: int, beta: float = 10.0,
                  batch_size: int = 200, robust_bare_model: bool = False) -> list[dict[str, str]]:
    """The flags of a :class:`~ddl.robustness.evaluate.RobustnessResult` (see module docstring);
    ``robust_bare_model``: the bare model is adversarially trained, ``weak_attack`` is not computed."""
    flags: list[dict[str, str]] = []
    keys = [eps_key(e) for e in result.eps]
    e_max = result.eps[-1]

    # weak attack: the bare model must fall at the standard ε of its kind of data
    standard = 0.3 if n_channels == 1 else 8 / 255
    if e_max >= standard - 1e-12 and not robust_bare_model:
        acc = result.bare_pgd[keys[-1]]
        if acc > _TOL:
            flags.append({"code": "weak_attack", "message": (
                f"PGD on the bare model leaves {acc:.1%} of images correct at eps={e_max:.4g} "
                f"(expected <= 1% for a standard model): the attack is probably too weak, so every "
                f"defended accuracy is an overestimate; raise pgd_steps / pgd_restarts. "
                f"{TRUST['weak_attack']}")})

    # masked gradients: black-box beats every gradient attack on > 1 % of images
    grad_names = [n for n in result.attacks if parse_attack(n)[1] is not None]
    box_names = [n for n in result.attacks if parse_attack(n)[1] is None]
    if grad_names and box_names:
        for k, e in zip(keys, result.eps):
            grad_alive = result.clean_correct["defended"].clone()
            for n in grad_names:
                grad_alive &= result.survival[n][k]
            for b in box_names:
                only_box = (grad_alive & ~result.survival[b][k]).double().mean().item()
                if only_box > _TOL:
                    flags.append({"code": "masked_gradients", "message": (
                        f"at eps={e:.4g} the black-box '{b}' breaks {only_box:.1%} of images that "
                        f"every gradient attack left standing: gradients through the defence are "
                        f"misleading (masked); try threat 'soft' or 'bpda', more steps, or EOT. "
                        f"{TRUST['masked_gradients']}")})

    # zero gradients, per input value, for each gradient threat used
    if defence is not None:
        threats = sorted({parse_attack(n)[1] for n in grad_names} - {"oblivious"})
        for t in threats:
            frac = zero_gradient_fraction(defended(model, defence, t, beta=beta), x, y,
                                          batch_size=batch_size)
            if frac > _TOL:
                flags.append({"code": "zero_gradients", "message": (
                    f"threat '{t}': {frac:.1%} of input values get an exactly zero gradient, so "
                    f"gradient attacks cannot move them (gradient masking, not robustness); use "
                    f"another threat model or a black-box attack. {TRUST['zero_gradients']}")})

    # non-monotonic accuracy in eps
    series = {**{n: a for n, a in result.attacks.items() if parse_attack(n)[1] != "oblivious"},
              "worst case": result.worst_case}
    for n, acc in series.items():
        vals = [acc[k] for k in keys]
        rises = [(result.eps[i], result.eps[i + 1]) for i in range(len(vals) - 1)
                 if vals[i + 1] > vals[i]]
        if rises:
            a, b = rises[0]
            flags.append({"code": "non_monotonic", "message": (
                f"'{n}': accuracy rises from eps={a:.4g} to eps={b:.4g} "
                f"({acc[eps_key(a)]:.1%} -> {acc[eps_key(b)]:.1%}); a larger ball cannot help the "
                f"defender, so the attack is unreliable there; add restarts or steps. "
                f"{TRUST['non_monotonic']}")})

    # unbounded
    if result.unbounded_accuracy is not None and result.unbounded_accuracy > 1 / n_classes:
        flags.append({"code": "unbounded_above_chance", "message": (
            f"at eps=1 (any image reachable) the defended model keeps "
            f"{result.unbounded_accuracy:.1%} accuracy, above chance ({1 / n_classes:.0%}): the "
            f"attack is failing, not the defence succeeding; check the threat model and steps. "
            f"{TRUST['unbounded_above_chance']}")})
    return flags
