"""``evaluate_robustness``: every attack at every ε, the worst case per image, and the flags.

The evaluation follows Carlini et al. (2019, "On Evaluating Adversarial Robustness") and
AutoAttack (Croce & Hein 2020):

- the defended classifier is judged on its **real** forward pass ``model(defence(x))``, whatever
  gradient the attack used (:mod:`ddl.robustness.threat`);
- an image is **robust at ε only if every attack failed on it** (worst case per image); a clean
  image the defended model already misclassifies counts as broken at every ε;
- the result carries computed sanity **flags** (:mod:`ddl.robustness.flags`) that say when the
  numbers are probably not to be trusted (too weak an attack, masked gradients...).

Attack names are ``"<attack>:<threat>"``: ``pgd``, ``apgd-ce``, ``apgd-t``, ``fab-t`` with a
threat of ``THREATS``, and ``square`` alone (black-box: no gradient, so no threat model).
``pgd:oblivious`` is the paper's protocol (PGD on the bare model, then defend). The bare model
is also attacked with PGD at every ε (``bare_pgd``): it shows what the defence adds, and feeds
the "attack too weak" flag.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ddl.robustness._names import eps_key, parse_attack
from ddl.robustness.attacks import autoattack, pgd_linf
from ddl.robustness.flags import compute_flags
from ddl.robustness.threat import defended

__all__ = ["DEFAULT_ATTACKS", "RobustnessResult", "evaluate_robustness", "parse_attack"]

DEFAULT_ATTACKS = ("pgd:oblivious", "pgd:bpda", "pgd:exact", "pgd:soft", "apgd-ce:soft",
                   "apgd-t:soft", "square")


@dataclass
class RobustnessResult:
    """What :func:`evaluate_robustness` measured. Accuracies are fractions in [0, 1]."""

    n_images: int
    eps: list[float]
    clean_accuracy: dict[str, float]                       # {"bare", "defended"}
    attacks: dict[str, dict[str, float]]                   # attack → ε key → accuracy
    worst_case: dict[str, float]                           # ε key → accuracy
    bare_pgd: dict[str, float]                             # ε key → accuracy of the bare model
    survival: dict[str, dict[str, Tensor]]                 # attack → ε key → (N,) bool
    worst_survival: dict[str, Tensor]                      # ε key → (N,) bool
    clean_correct: dict[str, Tensor]                       # {"bare", "defended"} → (N,) bool
    flags: list[dict[str, str]]
    seconds: dict[str, float]                              # attack → seconds over all ε
    unbounded_accuracy: float | None
    params: dict[str, Any] = field(default_factory=dict)

    def strongest(self) -> dict[str, str]:
        """ε key → the attack with the lowest accuracy (ties: the first in order)."""
        return {k: min(self.attacks, key=lambda a: self.attacks[a][k]) for k in self.worst_case}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per-image arrays as lists of 0/1."""
        bits = lambda t: [int(v) for v in t.tolist()]          # noqa: E731
        return {
            "n_images": self.n_images,
            "eps": list(self.eps),
            "clean_accuracy": dict(self.clean_accuracy),
            "attacks": {a: dict(v) for a, v in self.attacks.items()},
            "worst_case": dict(self.worst_case),
            "bare_pgd": dict(self.bare_pgd),
            "strongest_attack": self.strongest(),
            "unbounded_accuracy": self.unbounded_accuracy,
            "flags": list(self.flags),
            "seconds": dict(self.seconds),
            "params": dict(self.params),
            "clean_correct": {k: bits(v) for k, v in self.clean_correct.items()},
            "survival": {a: {k: bits(t) for k, t in v.items()} for a, v in self.survival.items()},
            "worst_survival": {k: bits(t) for k, t in self.worst_survival.items()},
        }


def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def _check_inputs(model, x, y, eps):
    from ddl._validate import check_images, check_labels, check_number, is_real
    from ddl.attacks._checks import check_eval_mode, n_classes_of

    func = "evaluate_robustness"
    check_eval_mode(func, model)
    check_images(func, "x", x, value_range=(0.0, 1.0), nonempty=True)
    n_classes = n_classes_of(func, model, x)
    check_labels(func, "y", y, x.shape[0], n_classes, per="image of x",
                 classes_from=f"the model has {n_classes} outputs")
    if is_real(eps):
        eps = [eps]
    eps = list(eps)
    if not eps:
        raise ValueError(f"{func}: eps must list at least one value; got {eps!r}.")
    for e in eps:
        check_number(func, "every eps (for images in [0, 1])", e, 0, 1, low_open=True)
    if sorted(eps) != eps or len(set(eps)) != len(eps):
        raise ValueError(f"{func}: eps must be strictly increasing; got {eps!r}.")
    return [float(e) for e in eps], n_classes


def evaluate_robustness(model: nn.Module, x: Tensor, y: Tensor, *, defence: nn.Module | None = None,
                        eps, attacks=DEFAULT_ATTACKS, seed: int = 0, beta: float = 10.0,
                        eot_samples: int = 1, pgd_steps: int = 50, pgd_restarts: int = 1,
                        apgd_iter: int = 100, square_queries: int = 1000, n_target_classes: int = 3,
                        unbounded: bool = True, cascade: bool = False, batch_size: int = 200,
                        cache_dir=None, cache_key: str | None = None,
                        progress: bool = False) -> RobustnessResult:
    """Attack ``model(defence(x))`` with every attack at every ε; worst case per image; flags.

    Parameters
    ----------
    model : nn.Module in eval mode, (N, C, H, W) → logits
    x : Tensor (N, C, H, W), float in [0, 1]
    y : Tensor (N,), int64 true labels
    defence : nn.Module or None
        Image → image (e.g. a fitted :class:`~ddl.defence.DictionaryDenoiser`). ``None``
        evaluates the bare model (every threat is then the bare gradient).
    eps : float or increasing list of floats in (0, 1]
    attacks : sequence of ``"<attack>:<threat>"`` (see module docstring)
    seed : int
        Every random choice (PGD starts, AutoAttack's seeds) derives from it; the global RNG
        is left untouched.
    beta, eot_samples : passed to :class:`~ddl.robustness.threat.DefendedModel`
    pgd_steps, pgd_restarts : PGD budget (per ε, per attack)
    apgd_iter, square_queries, n_target_classes : AutoAttack budgets (its standard: 100, 5000, 9)
    unbounded : bool, default True
        Also run PGD at ε = 1 through the strongest gradient threat (a sanity flag).
    cascade : bool, default False
        AutoAttack's scheme: each attack runs only on the images that every earlier attack (in
        the order of ``attacks``) left standing at that ε. The worst case is the same as without
        cascade (an image is robust only if every attack fails on it) and much cheaper, but then
        ``attacks[a][ε]`` is the robust accuracy *after* attacks up to ``a`` (cumulative, as
        AutoAttack prints it), not ``a``'s accuracy alone, and ``survival[a]`` is cumulative too.
        Put the black-box attack last so that the masked-gradient flag compares it with every
        gradient attack.
    cache_dir, cache_key : folder and key (a string naming model, defence, images and seed)
        When both are given, each (attack, ε) result is stored as a small JSON file and reused,
        so an interrupted evaluation resumes where it stopped.
    progress : bool
        A progress bar per attack and ε (on stderr).

    Returns
    -------
    RobustnessResult
    """
    eps, n_classes = _check_inputs(model, x, y, eps)
    specs = [parse_attack(a) for a in attacks]
    names = [a if t is None else f"{a}:{t}" for a, t in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluate_robustness: attacks lists a name twice: {list(attacks)!r}.")
    if (cache_dir is None) != (cache_key is None):
        raise ValueError("evaluate_robustness: give both cache_dir and cache_key, or neither.")
    y = y.to(x.device)
    real = defended(model, defence, "bpda", beta=beta)               # the real forward
    clean_bare = _predict(model, x, batch_size) == y
    clean_def = _predict(real, x, batch_size) == y

    cache = Path(cache_dir) if cache_dir is not None else None

    tag = "-cascade" if cascade else ""

    def run(name: str, e: float, compute, sub: Tensor | None = None) -> tuple[Tensor, float]:
        """Survival (N,) of the attack ``compute(sub)`` on the images ``sub`` (None: all);
        images outside ``sub`` count as not surviving (cascade: an earlier attack broke them)."""
        path = (cache / f"{cache_key}-{name.replace(':', '_')}{tag}-{e!r}.json" if cache else None)
        if path is not None and path.is_file():
            blob = json.loads(path.read_text())
            if blob.get("n_images") == len(x):
                return torch.tensor(blob["survival"], dtype=torch.bool), float(blob["seconds"])
        t0 = time.perf_counter()
        survive = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        idx = torch.arange(len(x), device=x.device) if sub is None else sub.to(x.device)
        if len(idx):
            x_adv = compute(idx)
            survive[idx] = (_predict(real, x_adv, batch_size) == y[idx]) & clean_def[idx]
        seconds = time.perf_counter() - t0
        if path is not None:
            from ddl._io import atomic_write_json
            atomic_write_json(path, {"attack": name, "eps": e, "n_images": len(x), "cascade": cascade,
                                     "n_attacked": int(len(idx)),
                                     "survival": [int(v) for v in survive.tolist()],
                                     "seconds": seconds})
        return survive.cpu(), seconds

    def bar(desc):
        if not progress:
            return None
        from tqdm import tqdm
        return tqdm(total=len(x), desc=desc, unit="img", leave=False)

    def attack_fn(name, threat, e, which_seed):
        def compute(idx):
            xs, ys = x[idx], y[idx]
            pb = bar(f"{name}{':' + threat if threat else ''} eps={e:.4g}")
            if pb is not None:
                pb.total = len(idx)
            cb = pb.update if pb is not None else None
            try:
                if name == "pgd":
                    target = defended(model, defence, threat, beta=beta, eot_samples=eot_samples)
                    return pgd_linf(target, xs, ys, eps=e, steps=pgd_steps, restarts=pgd_restarts,
                                    seed=which_seed, batch_size=batch_size, callback=cb,
                                    image_ids=idx.cpu())[0]
                target = defended(model, defence, threat or "bpda", beta=beta,
                                  eot_samples=eot_samples)
                return autoattack(target, xs, ys, attack=name, eps=e, seed=which_seed,
                                  n_iter=apgd_iter, n_queries=square_queries,
                                  n_target_classes=n_target_classes, batch_size=batch_size,
                                  callback=cb)
            finally:
                if pb is not None:
                    pb.close()
        return compute

    survival: dict[str, dict[str, Tensor]] = {n: {} for n in names}
    seconds = {n: 0.0 for n in names}
    alive = {eps_key(e): clean_def.cpu().clone() for e in eps}
    for (name, threat), full in zip(specs, names):
        for e in eps:
            sub = alive[eps_key(e)].nonzero().squeeze(1) if cascade else None
            s, sec = run(full, e, attack_fn(name, threat, e, seed), sub)
            survival[full][eps_key(e)], seconds[full] = s, seconds[full] + sec
            alive[eps_key(e)] &= s

    bare_pgd = _bare_pgd(model, x, y, eps, pgd_steps, pgd_restarts, seed, batch_size, clean_bare,
                         cache, cache_key)

    worst = {}
    for e in eps:
        k = eps_key(e)
        alive = clean_def.cpu().clone()
        for n in names:
            alive &= survival[n][k]
        worst[k] = alive
    accuracy = {n: {k: float(v.double().mean()) for k, v in survival[n].items()} for n in names}

    unbounded_acc = None
    if unbounded and defence is not None:
        threats = [t for a, t in specs if t not in (None, "oblivious")]
        if threats:
            best_threat = min(threats, key=lambda t: min(
                accuracy[f"{a}:{tt}"][eps_key(eps[-1])] for a, tt in specs if tt == t))
            s, sec = run(f"unbounded-pgd:{best_threat}", 1.0, attack_fn("pgd", best_threat, 1.0, seed))
            unbounded_acc = float(s.double().mean())
            seconds[f"unbounded-pgd:{best_threat}"] = sec

    result = RobustnessResult(
        n_images=len(x), eps=eps,
        clean_accuracy={"bare": float(clean_bare.double().mean()),
                        "defended": float(clean_def.double().mean())},
        attacks=accuracy, worst_case={k: float(v.double().mean()) for k, v in worst.items()},
        bare_pgd=bare_pgd, survival=survival, worst_survival=worst,
        clean_correct={"bare": clean_bare.cpu(), "defended": clean_def.cpu()},
        flags=[], seconds=seconds, unbounded_accuracy=unbounded_acc,
        params={"seed": seed, "beta": beta, "eot_samples": eot_samples, "pgd_steps": pgd_steps,
                "pgd_restarts": pgd_restarts, "apgd_iter": apgd_iter,
                "square_queries": square_queries, "n_target_classes": n_target_classes,
                "attacks": names, "n_classes": n_classes, "cascade": cascade,
                "misclassified_clean_count_as_broken": True})
    result.flags = compute_flags(result, model=model, defence=defence, x=x, y=y,
                                 n_classes=n_classes, n_channels=x.shape[1], beta=beta,
                                 batch_size=batch_size)
    return result


def _bare_pgd(model, x, y, eps, steps, restarts, seed, batch_size, clean_bare, cache, cache_key):
    """PGD on the bare model at every ε, judged on the bare model (ε key → accuracy)."""
    out = {}
    for e in eps:
        path = cache / f"{cache_key}-bare-pgd-judged-{e!r}.json" if cache else None
        if path is not None and path.is_file():
            out[eps_key(e)] = float(json.loads(path.read_text())["accuracy"])
            continue
        _, fooled = pgd_linf(model, x, y, eps=e, steps=steps, restarts=restarts, seed=seed,
                             batch_size=batch_size)
        acc = float(((~fooled.cpu()) & clean_bare.cpu()).double().mean())
        if path is not None:
            from ddl._io import atomic_write_json
            atomic_write_json(path, {"eps": e, "accuracy": acc})
        out[eps_key(e)] = acc
    return out
