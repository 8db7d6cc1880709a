"""``evaluate_robustness``: every attack at every ε, the worst case per image, and the flags.

The evaluation follows Carlini et al. (2019, "On Evaluating Adversarial Robustness") and
AutoAttack (Croce & Hein 2020):

- the defended classifier is judged on its **real** forward pass ``model(defence(x))``, whatever
  gradient the attack used (:mod:`ddl.robustness.threat`);
- an image is **robust at ε only if every attack failed on it** (worst case per image); a clean
  image the defended model already misclassifies counts as broken at every ε;
- every random choice of an attack on an image depends only on ``seed`` and the image's index
  (PGD's starts, and AutoAttack's, each from the image's own generator: :func:`~ddl.robustness.autoattack`),
  so an image's outcome does not depend on which other images are attacked with it: the cascade
  gives the same worst case per image as attacking every image, and any chunk of images can be
  computed (and cached) on its own;
- every accuracy carries its 95 % Wilson interval over images and every comparison a paired exact
  McNemar test (:class:`~ddl.robustness.result.RobustnessResult`);
- the result carries computed sanity **flags** (:mod:`ddl.robustness.flags`) that say when the
  numbers are probably not to be trusted (too weak an attack, masked gradients...).

Attack names are ``"<attack>:<threat>"``: ``pgd``, ``apgd-ce``, ``apgd-t``, ``fab-t`` with a
threat of ``THREATS``, and ``square`` alone (black-box: no gradient, so no threat model).
``pgd:oblivious`` is the paper's protocol (PGD on the bare model, then defend). The bare model
is also attacked with PGD at every ε (``bare_pgd``): it shows what the defence adds, and feeds
the "attack too weak" flag.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor, nn

from ddl.robustness import _cache
from ddl.robustness._names import BLACK_BOX, eps_key, parse_attack
from ddl.robustness.attacks import autoattack, pgd_linf
from ddl.robustness.flags import compute_flags
from ddl.robustness.result import CONFIDENCE, RobustnessResult
from ddl.robustness.threat import defended

__all__ = ["CONFIDENCE", "DEFAULT_ATTACKS", "RobustnessResult", "evaluate_robustness", "parse_attack"]

DEFAULT_ATTACKS = ("pgd:oblivious", "pgd:bpda", "pgd:exact", "pgd:soft", "apgd-ce:soft",
                   "apgd-t:soft", "square")


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


def _check_attacks(attacks, cascade: bool) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Parsed attacks and their names; under cascade every black-box attack must come after
    every gradient attack (so that the masked-gradient flag sees the images they left)."""
    specs = [parse_attack(a) for a in attacks]
    names = [a if t is None else f"{a}:{t}" for a, t in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluate_robustness: attacks lists a name twice: {list(attacks)!r}.")
    if cascade:
        box = [i for i, (a, _) in enumerate(specs) if a in BLACK_BOX]
        grad = [i for i, (a, _) in enumerate(specs) if a not in BLACK_BOX]
        if box and grad and min(box) < max(grad):
            raise ValueError(f"evaluate_robustness: with cascade=True the black-box attack "
                             f"{names[min(box)]!r} must come after every gradient attack (the "
                             f"masked-gradient flag needs the images they left standing); got "
                             f"attacks={names!r}.")
    return specs, names


def _attack(name: str, threat: str | None, e: float, idx: Tensor, callback, *, model, defence, x, y,
            p: dict) -> Tensor:
    """Adversarial images of ``attack:threat`` at ``e`` for the images ``idx``."""
    xs, ys = x[idx.to(x.device)], y[idx.to(x.device)]
    if name == "bare-pgd":
        return pgd_linf(model, xs, ys, eps=e, steps=p["pgd_steps"], restarts=p["pgd_restarts"],
                        seed=p["seed"], batch_size=p["batch_size"], callback=callback, image_ids=idx)[0]
    if name == "pgd":
        target = defended(model, defence, threat, beta=p["beta"], eot_samples=p["eot_samples"])
        return pgd_linf(target, xs, ys, eps=e, steps=p["pgd_steps"], restarts=p["pgd_restarts"],
                        seed=p["seed"], batch_size=p["batch_size"], callback=callback, image_ids=idx)[0]
    target = defended(model, defence, threat or "bpda", beta=p["beta"], eot_samples=p["eot_samples"])
    return autoattack(target, xs, ys, attack=name, eps=e, seed=p["seed"], n_iter=p["apgd_iter"],
                      n_queries=p["square_queries"], n_target_classes=p["n_target_classes"],
                      callback=callback, image_ids=idx, batch_size=p["batch_size"])


def _run_unit(unit: dict, *, model, defence, x, y, clean_def, clean_bare, p: dict, emit=None,
              callback=None) -> list[dict]:
    """One unit of an evaluation: the attacks of ``unit["steps"]``, in order, at ``unit["eps"]`` on
    the images ``[start, stop)``; a pure function of its arguments (a Ray task runs it as is).

    Each step is ``(full name, attack, threat)``; a step with a result in ``unit["known"]`` (a
    verified cache entry) is not recomputed. Under cascade a step attacks only the images every
    earlier step of the unit left standing; otherwise every clean-correct image. ``bare-pgd``
    attacks the bare model and is judged on it. Returns one dict per computed step (name, eps,
    start, stop, attacked image indices, survival (stop - start,) bool, seconds, cpu_seconds:
    wall time, and the CPU time of this process (all its threads), which a paused or starved
    process does not inflate); ``emit`` (the serial path) receives each as soon as it is computed."""
    start, stop, e = unit["start"], unit["stop"], unit["eps"]
    real = defended(model, defence, "bpda", beta=p["beta"])
    alive = clean_def[start:stop].clone()
    out = []
    for full, name, threat in unit["steps"]:
        bare = name == "bare-pgd"
        base = clean_bare[start:stop] if bare else (alive if unit["cascade"] else clean_def[start:stop])
        if full in unit["known"]:
            chunk = unit["known"][full]
        else:
            idx = base.nonzero().squeeze(1) + start
            t0, c0 = time.perf_counter(), time.process_time()
            chunk = torch.zeros(stop - start, dtype=torch.bool)
            if len(idx):
                step_cb = None if callback is None else (lambda k, full=full: callback(full, e, k))
                x_adv = _attack(name, threat, e, idx, step_cb, model=model, defence=defence, x=x, y=y, p=p)
                judge = model if bare else real
                chunk[idx - start] = ((_predict(judge, x_adv, p["batch_size"]) == y[idx.to(y.device)]).cpu()
                                      & base[idx - start])
            done = {"name": full, "eps": e, "start": start, "stop": stop, "attacked": idx.tolist(),
                    "survival": chunk, "seconds": time.perf_counter() - t0,
                    "cpu_seconds": time.process_time() - c0}
            if emit is not None:
                emit(done)
            out.append(done)
        if not bare:
            alive &= chunk
    return out


class _Driver:
    """Cuts an evaluation into units of (ε, chunk of images), runs the units serially or on an
    :class:`~ddl._parallel.Engine`, and keeps every (attack, ε, chunk) result as a verified cache
    entry, written here (never by a worker): a serial and a parallel run write the same entries,
    and an interrupted one resumes at the first result it had not written."""

    def __init__(self, n: int, chunk_size: int, cache: Path | None, cache_key: str | None,
                 inputs: dict | None, progress: bool, engine):
        self.n, self.chunk_size, self.cache, self.cache_key = n, chunk_size, cache, cache_key
        self.inputs, self.progress, self.engine = inputs, progress, engine
        self.results: dict[tuple[str, str], list] = {}     # (name, eps key) -> [(start, survival)]
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float | None] = {}     # None: a unit from before CPU time was kept

    def _entry(self, name: str, e: float, start: int, stop: int):
        key = _cache.entry_key(self.inputs, name, e, start, stop)
        return key, _cache.entry_path(self.cache, self.cache_key, key, name, e, start, stop)

    def _keep(self, name: str, e: float, start: int, survival: Tensor, seconds: float,
              cpu_seconds: float | None) -> None:
        self.results.setdefault((name, eps_key(e)), []).append((start, survival))
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        known = self.cpu_seconds.get(name, 0.0)
        self.cpu_seconds[name] = None if known is None or cpu_seconds is None else known + cpu_seconds

    def _save(self, done: dict) -> None:
        """Write one computed result once: an entry already there must agree with it."""
        name, e, start, stop = done["name"], done["eps"], done["start"], done["stop"]
        if self.cache is not None:
            key, path = self._entry(name, e, start, stop)
            there = _cache.load_entry(path, key=key, n=stop - start)
            if there is None:
                _cache.save_entry(path, key=key, inputs=self.inputs, name=name, eps=e, start=start, stop=stop,
                                  attacked=done["attacked"], survival=done["survival"], seconds=done["seconds"],
                                  cpu_seconds=done["cpu_seconds"])
            elif not torch.equal(there[0], done["survival"]):
                raise RuntimeError(f"evaluate_robustness: two computations of {name} at eps {e:.4g} on images "
                                   f"[{start}, {stop}) disagree ({path}); an attack is not deterministic")
        self._keep(name, e, start, done["survival"], done["seconds"], done["cpu_seconds"])

    def run(self, eps, steps, cascade: bool, shared: dict) -> None:
        """Run ``steps`` ((full name, attack, threat), in order) at every ε on every chunk."""
        units = []
        for e in eps:
            for start in range(0, self.n, self.chunk_size):
                stop = min(start + self.chunk_size, self.n)
                known = {}
                if self.cache is not None:
                    for full, _, _ in steps:
                        key, path = self._entry(full, e, start, stop)
                        cached = _cache.load_entry(path, key=key, n=stop - start)
                        if cached is not None:
                            known[full] = cached[0]
                            self._keep(full, e, start, *cached)
                if len(known) < len(steps):
                    units.append({"eps": e, "start": start, "stop": stop, "steps": steps, "cascade": cascade,
                                  "known": known})
        bar = self._bar(len(units) * len(steps), units)
        try:
            if self.engine is None or not self.engine.parallel:
                for unit in units:
                    def emit(done, unit=unit):
                        self._save(done)
                        if bar is not None:
                            bar.update(1)
                    callback = None
                    if bar is not None:
                        def callback(name, e, k, counter={}):     # noqa: B006 (images done per step)
                            counter[name] = counter.get(name, 0) + k
                            bar.set_postfix_str(f"{name} eps={e:.4g}: {counter[name]} images")
                    _run_unit(unit, **shared, emit=emit, callback=callback)
                    if bar is not None:
                        bar.update(len(unit["known"]))
            else:
                for i, computed in self.engine.map(_run_unit, units, shared=shared):
                    for done in computed:
                        self._save(done)
                    if bar is not None:
                        bar.update(len(steps))
        finally:
            if bar is not None:
                bar.close()

    def survival(self, name: str, e: float) -> Tensor:
        """(N,) bool survival of ``name`` at ``e``, assembled from its chunks."""
        out = torch.zeros(self.n, dtype=torch.bool)
        for start, chunk in self.results.get((name, eps_key(e)), []):
            out[start:start + len(chunk)] = chunk
        return out

    def _bar(self, total: int, units):
        if not self.progress or not units:
            return None
        from tqdm import tqdm
        where = "" if self.engine is None else f" ({self.engine.describe()})"
        return tqdm(total=total, desc=f"robustness{where}", unit="attack-chunk", leave=False)


def evaluate_robustness(model: nn.Module, x: Tensor, y: Tensor, *, defence: nn.Module | None = None,
                        eps, attacks=DEFAULT_ATTACKS, seed: int = 0, beta: float = 10.0,
                        eot_samples: int = 1, pgd_steps: int = 50, pgd_restarts: int = 1,
                        apgd_iter: int = 100, square_queries: int = 1000, n_target_classes: int = 3,
                        unbounded: bool = True, cascade: bool = False, batch_size: int = 200,
                        chunk_size: int = 100, cache_dir=None, cache_key: str | None = None,
                        progress: bool | None = None, engine=None,
                        robust_bare_model: bool = False) -> RobustnessResult:
    """Attack ``model(defence(x))`` with every attack at every ε; worst case per image; flags.

    Parameters
    ----------
    model : nn.Module in eval mode, (N, C, H, W) → logits
    x : Tensor (N, C, H, W), float in [0, 1], finite
    y : Tensor (N,), int64 true labels
    defence : nn.Module or None
        Image → image (e.g. a fitted :class:`~ddl.defence.DictionaryDenoiser`). ``None``
        evaluates the bare model (every threat is then the bare gradient).
    eps : float or increasing list of floats in (0, 1]
    attacks : sequence of ``"<attack>:<threat>"`` (see module docstring)
    seed : int
        Every random choice derives from it and the image's index (PGD's starts, AutoAttack's
        per-image seeds); the global RNG is left untouched.
    beta, eot_samples : passed to :class:`~ddl.robustness.threat.DefendedModel`
    pgd_steps, pgd_restarts : PGD budget (per ε, per attack)
    apgd_iter, square_queries, n_target_classes : AutoAttack budgets (its standard: 100, 5000, 9)
    unbounded : bool, default True
        Also run PGD at ε = 1 through the strongest gradient threat (a sanity flag).
    robust_bare_model : bool, default False
        The bare model is adversarially trained on raw images: the ``weak_attack`` flag, which expects PGD to
        break a *standard* model at the standard ε, is not computed (it would fire by design)
        and ``params["weak_attack_checked"]`` says so; the ε = 1 check (``unbounded``) then runs
        even without a defence, so the attack is still checked. The other flags are unchanged.
    cascade : bool, default False
        AutoAttack's scheme: each attack runs only on the images that every earlier attack (in
        the order of ``attacks``) left standing at that ε. The worst case per image is the same
        as without cascade (an image's outcome under an attack does not depend on the other
        images attacked with it) and much cheaper, but then ``attacks[a][ε]`` is the robust
        accuracy *after* attacks up to ``a`` (cumulative, as AutoAttack prints it), not ``a``'s
        accuracy alone, ``survival[a]`` is cumulative too, and ``strongest()`` names the attack
        that broke the most images first. Under cascade every black-box attack (``square``) must
        come after every gradient attack, else ``ValueError``: the masked-gradient flag compares
        it with the images every gradient attack left standing, which it only sees there.
    batch_size : int
        Images per forward/backward pass of the attacks and the predictions (not a result: every
        attack's randomness is per image).
    chunk_size : int, default 100
        Images per cache entry: with a cache, an interrupted evaluation resumes at the first
        chunk of the first (attack, ε) it had not finished. Results do not depend on it.
    cache_dir, cache_key : folder and a name for this evaluation's files, or both None
        Each (attack, ε, chunk) result is stored as a small JSON file with a verified record
        (``ddl._io``'s entry records, as the pipeline's stages) and reused. The entry's key holds
        everything the result depends on (:mod:`ddl.robustness._cache`): ``cache_key``, the
        SHA-256 of the images, labels, model and defence, the ordered attack list, every budget,
        β, EOT samples, the cascade flag, the OMP kernel and the device; ``cache_key`` only
        names the files.
    engine : :class:`ddl._parallel.Engine` or None
        Where the units run: None (or a serial engine) in this process; a Ray engine spreads the
        units, one per (ε, chunk of ``chunk_size`` images) with the attacks of the list in order,
        over its workers. Every image's randomness depends only on ``seed`` and its index, and
        results are written by this process only, so the result (per-image survivals included)
        and the cache entries are the same whatever the engine.
    progress : bool or None, default None
        A progress bar per attack and ε (on stderr). ``None``: on when stderr is a terminal (an
        evaluation takes minutes, and silence reads as a hang), off in a log file or a pipe (a
        bar's carriage returns would fill it).

    Returns
    -------
    RobustnessResult
        Accuracies with their Wilson intervals, paired McNemar tests, per-image outcomes, flags.
    """
    import sys

    from ddl._validate import check_int

    if progress is None:
        progress = sys.stderr.isatty()
    eps, n_classes = _check_inputs(model, x, y, eps)
    specs, names = _check_attacks(attacks, cascade)
    batch_size = check_int("evaluate_robustness", "batch_size", batch_size, 1)
    chunk_size = check_int("evaluate_robustness", "chunk_size", chunk_size, 1)
    if (cache_dir is None) != (cache_key is None):
        raise ValueError("evaluate_robustness: give both cache_dir and cache_key, or neither.")
    y = y.to(x.device)
    real = defended(model, defence, "bpda", beta=beta)               # the real forward
    clean_bare = (_predict(model, x, batch_size) == y).cpu()
    clean_def = (_predict(real, x, batch_size) == y).cpu()
    params = {"seed": seed, "beta": beta, "eot_samples": eot_samples, "pgd_steps": pgd_steps,
              "pgd_restarts": pgd_restarts, "apgd_iter": apgd_iter, "square_queries": square_queries,
              "n_target_classes": n_target_classes, "cascade": cascade}
    inputs = (None if cache_dir is None else _cache.evaluation_inputs(
        cache_key=cache_key, model=model, defence=defence, x=x, y=y, attacks=names, params=params))
    driver = _Driver(len(x), chunk_size, None if cache_dir is None else Path(cache_dir), cache_key,
                     inputs, progress, engine)
    shared = {"model": model, "defence": defence, "x": x, "y": y, "clean_def": clean_def,
              "clean_bare": clean_bare, "p": {**params, "batch_size": batch_size}}
    steps = [(full, name, threat) for (name, threat), full in zip(specs, names)]
    driver.run(eps, steps + [("bare-pgd", "bare-pgd", None)], cascade, shared)
    survival: dict[str, dict[str, Tensor]] = {n: {} for n in names}
    alive = {eps_key(e): clean_def.clone() for e in eps}
    for full in names:
        for e in eps:
            s = driver.survival(full, e)         # under cascade: cumulative (survivors of all before)
            survival[full][eps_key(e)] = s
            alive[eps_key(e)] &= s
    worst = alive                                      # clean-correct and survived every attack
    bare = {eps_key(e): driver.survival("bare-pgd", e) for e in eps}
    seconds = {n: driver.seconds.get(n, 0.0) for n in names}
    cpu_seconds = {n: driver.cpu_seconds.get(n, 0.0) for n in names}

    frac = lambda t: float(t.double().mean())          # noqa: E731
    result = RobustnessResult(
        n_images=len(x), eps=eps,
        clean_accuracy={"bare": frac(clean_bare), "defended": frac(clean_def)},
        attacks={n: {k: frac(v) for k, v in survival[n].items()} for n in names},
        worst_case={k: frac(v) for k, v in worst.items()},
        bare_pgd={k: frac(v) for k, v in bare.items()}, survival=survival, worst_survival=worst,
        clean_correct={"bare": clean_bare, "defended": clean_def},
        flags=[], seconds=seconds, cpu_seconds=cpu_seconds, unbounded_accuracy=None, bare_survival=bare,
        params={**params, "unbounded": unbounded, "attacks": names, "n_classes": n_classes,
                "chunk_size": chunk_size,
                "misclassified_clean_count_as_broken": True,
                "weak_attack_checked": not robust_bare_model})

    # ε = 1 checks the attack where the defence could hide a failure, and on an adversarially
    # trained bare model, where weak_attack is not computed and nothing else would check it
    threat = _unbounded_threat(result, specs) if unbounded and (defence is not None or robust_bare_model) else None
    if threat is not None:
        name = f"unbounded-pgd:{threat}"
        driver.run([1.0], [(name, "pgd", threat)], False, shared)
        s = driver.survival(name, 1.0)
        result.unbounded_survival, result.unbounded_accuracy = s, frac(s)
        result.seconds[name] = driver.seconds.get(name, 0.0)
        result.cpu_seconds[name] = driver.cpu_seconds.get(name, 0.0)
    result.flags = compute_flags(result, model=model, defence=defence, x=x, y=y,
                                 n_classes=n_classes, n_channels=x.shape[1], beta=beta,
                                 batch_size=batch_size, robust_bare_model=robust_bare_model)
    return result


def _unbounded_threat(result: RobustnessResult, specs) -> str | None:
    """The gradient threat of the strongest adaptive attack at the largest ε (by the rule of
    :meth:`RobustnessResult.strongest`), or None when no adaptive gradient attack ran."""
    k = eps_key(result.eps[-1])
    adaptive = [f"{a}:{t}" for a, t in specs if t not in (None, "oblivious")]
    if not adaptive:
        return None
    if result.cascade:
        first = result.first_breaks()[k]
        best = max(adaptive, key=lambda n: first[n])
    else:
        best = min(adaptive, key=lambda n: result.attacks[n][k])
    return parse_attack(best)[1]
