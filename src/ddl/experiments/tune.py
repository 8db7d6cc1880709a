"""Choose the denoiser on a validation split of the training set (``ddl tune``, the ``tuned`` preset).

Two objectives, a Pareto front, one point chosen by a stated rule. The paper suggests Bayesian
selection of the number of atoms; a defence that only helps against an attacker who ignores it
proves little (Carlini et al. 2019), so the search scores every setting twice:

1. **clean accuracy** of ``model(defence(x))`` on the ``n_val`` validation images;
2. **worst-case adaptive accuracy** at one ε (default MNIST 0.2, CIFAR-10 4/255) on the first
   ``n_robust`` of them: :func:`ddl.robustness.evaluate_robustness` with ``cascade=True`` and the
   attacks of :data:`TUNE_ATTACKS` *through* the defence (an image counts only if every attack
   failed on it; a clean image the defended model gets wrong counts as broken).

Each carries its 95 % Wilson interval over images (:func:`ddl._stats.wilson_interval`), and two
settings whose intervals overlap on both objectives are reported as *indistinguishable*.

Protocol (never the test set): the training split is loaded, nothing else; its last ``n_val``
images are the validation set and the dictionary is learned from patches of the other training
images. Caveat, recorded in the output: the zoo classifiers were trained on the whole training
split, validation images included, so clean validation accuracies are optimistic; the attacks and
the dictionaries never see a test image.

Search space (:data:`SPACE`): patch size, dictionary size (``n_components``), OMP sparsity
(``n_nonzero_coefs``), mean removal, the dictionary-learning method of
:class:`~ddl.defence.DictionaryDenoiser` (online, K-SVD, MOD) and the stride between patches
(``step``). The stride must tile the image, so ``step`` is suggested only for patch sizes that
every stride of the space tiles; otherwise it is 1 and not a parameter of that trial (Optuna's
conditional parameter: NSGA-II then samples it at random instead of by crossover).
``max_patches`` (patches the dictionary learns from) and ``n_epochs`` are fixed: those of the
shipped tuned defence.

Sampler: NSGA-II (:class:`optuna.samplers.NSGAIISampler`), both objectives maximised. Trials are
asked a generation (``population_size`` trials) at a time, and the sampler of each generation is
seeded with ``seed`` plus the number of trials already in the study, so a study's trials are a
function of its settings alone: run in one go, resumed after an interruption, serial or on Ray,
it proposes the same parameters in the same order (unless the interruption falls between two
asks of one generation, a matter of milliseconds). A setting proposed again is not evaluated
again: its trial gets the first evaluation's numbers and says whose (``duplicate_of``).

Parallelism and storage: the study lives with the driver, in ``RUN_DIR/study.db`` (SQLite, one
study per data set, named ``ddl-tune-<dataset>``). The driver asks Optuna for the trials of a
generation, runs each trial's evaluation as one unit through :class:`ddl._parallel.Engine`
(serial, ``workers=N`` local Ray workers or a Ray cluster) and tells Optuna each result as the
unit finishes. Workers get the images and the classifier once (Ray's object store) and a
parameter dict per trial, and return plain numbers: they never open the database, so SQLite sees
one writer and a worker killed mid-trial costs only that trial (Ray runs it again).

Resume: re-running the same command opens the same study. Finished trials are kept; a trial that
was asked but not told (the run was interrupted) is evaluated with the parameters it already
has, under its own number, and new trials are asked only until the study holds the number of
finished trials asked for. A study is resumed only with the settings it was created with (data
set, classifier, ε, images, attacks, budgets, space, seed): anything else is an error.

Warm start: a new study's first trial is the shipped tuned defence (the old grid's choice),
when the space holds it; without it, 36 trials of NSGA-II on MNIST never came near it (results/tuning).

Choice (:data:`SELECTION_RULE`): among the points of the front whose clean accuracy is at least
the lower bound of the best clean accuracy's interval, the one with the highest worst-case
accuracy. The chosen point and the shipped defence (``ddl/reference/tuned_defence.json``,
the old grid's choice) are then evaluated once more with the black-box Square attack added
(:data:`CHECK_ATTACKS`: left out of the search for its cost, it is what reveals masked
gradients), and compared image by image (exact McNemar tests).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ddl._io import atomic_write_json
from ddl.constants import DATASETS, MODEL_NAMES
from ddl.errors import DDLError
from ddl.experiments.config import PRESET_MAX_PATCHES

__all__ = ["CHECK_ATTACKS", "DEFAULT_MODELS", "SELECTION_RULE", "SPACE", "STUDY_FILE", "TUNE_ATTACKS",
           "TUNE_BUDGETS", "TUNE_EPS", "choose_point", "clean_floor", "indistinguishable", "pareto_front",
           "plan_tuning", "plot_front", "save_tuned", "score", "selection_rule", "summarise_study", "tune_defence"]

#: ε of the robust objective: MNIST 0.2 (where our FGSM accuracies match the paper's), CIFAR-10 4/255.
TUNE_EPS = {"mnist": 0.2, "cifar10": 4 / 255}
#: The classifier each data set is tuned on: the one the shipped tuned defence was chosen with
#: (``reference/tuned_defence.json``: the MNIST MLP, the CIFAR-10 ResNet).
DEFAULT_MODELS = {"mnist": "mlp", "cifar10": "resnet"}
#: Attacks of the robust objective: the committed adaptive suite (results/robustness) without
#: Square, which costs more than all the others together and broke no image first there.
TUNE_ATTACKS = ("pgd:oblivious", "pgd:bpda", "pgd:soft", "apgd-ce:soft")
#: Added when the chosen point and the shipped defence are checked after the search.
CHECK_ATTACKS = ("square",)
#: The committed budgets of results/robustness (PGD 20 steps, APGD 20 iterations, Square 200 queries).
TUNE_BUDGETS = {"pgd_steps": 20, "apgd_iter": 20, "square_queries": 200}
SPACE = {
    "mnist": {"patch_size": (5, 6, 7, 8, 9, 10), "n_components": (64, 128, 256, 512),
              "n_nonzero_coefs": (1, 2, 3, 5, 8), "remove_mean": (True, False),
              "method": ("online", "ksvd", "mod"), "step": (1, 2)},
    "cifar10": {"patch_size": (3, 4, 5, 6, 8), "n_components": (64, 128, 256, 512),
                "n_nonzero_coefs": (1, 2, 3, 5, 8), "remove_mean": (True, False),
                "method": ("online", "ksvd", "mod"), "step": (1, 2)},
}
STUDY_FILE = "study.db"
SELECTION_RULE = ("among the Pareto-optimal settings whose clean accuracy is at least the lower end "
                  "of the 95 % Wilson interval of the best clean accuracy on the front, the one "
                  "with the highest worst-case accuracy (ties: higher clean accuracy, then the "
                  "earlier trial)")
_OBJECTIVES = ("clean", "robust")
#: evaluations a study keeps beside its trials (study attributes)
_EXTRA = ("reference", "check:chosen", "check:reference")
_PARAMS = ("patch_size", "n_components", "n_nonzero_coefs", "remove_mean", "method", "step")


class TuneError(DDLError):
    """``ddl tune`` cannot run as asked (optuna missing, a study created with other settings)."""


# --- statistics of the front -------------------------------------------------------------------
def score(correct: int, n: int) -> dict[str, Any]:
    """``{"accuracy", "correct", "n", "ci"}``: ``correct`` of ``n`` images, with the 95 % Wilson
    interval ``ci = [low, high]`` (:func:`ddl._stats.wilson_interval`)."""
    from ddl._stats import wilson_interval

    return {"accuracy": correct / n, "correct": int(correct), "n": int(n),
            "ci": list(wilson_interval(int(correct), int(n)))}


def pareto_front(points) -> list[int]:
    """Indices of the points no other point dominates, both coordinates maximised.

    ``a`` dominates ``b`` when ``a >= b`` in both coordinates and ``a > b`` in one; equal points
    do not dominate each other, so both stay on the front.

    Examples
    --------
    >>> pareto_front([(0.9, 0.1), (0.8, 0.3), (0.7, 0.2), (0.9, 0.05)])
    [0, 1]
    """
    pts = [tuple(map(float, p)) for p in points]
    for i, p in enumerate(pts):
        if len(p) != 2:
            raise ValueError(f"pareto_front: every point must be a (clean, robust) pair; got {points[i]!r} "
                             f"at index {i}.")

    def dominated(p):
        return any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts)

    return [i for i, p in enumerate(pts) if not dominated(p)]


def indistinguishable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when the intervals of ``a`` and ``b`` (rows with ``"clean"`` and ``"robust"``
    :func:`score` dicts) overlap on both objectives: neither interval ranks them.

    A conservative reading: two accuracies on the same images can differ significantly in a
    paired test while their intervals overlap; the summary gives that test (exact McNemar) for
    the chosen point against the shipped defence."""
    return all(a[k]["ci"][0] <= b[k]["ci"][1] and b[k]["ci"][0] <= a[k]["ci"][1] for k in _OBJECTIVES)


def selection_rule(max_clean_drop: float | None = None) -> str:
    """The choice rule in words: :data:`SELECTION_RULE`, or with ``max_clean_drop`` its floor
    set that many points below the best clean accuracy instead."""
    if max_clean_drop is None:
        return SELECTION_RULE
    return (f"among the Pareto-optimal settings whose clean accuracy is at most {max_clean_drop:g} points "
            "below the best clean accuracy on the front, the one with the highest worst-case accuracy "
            "(ties: higher clean accuracy, then the earlier trial)")


def clean_floor(rows: list[dict[str, Any]], max_clean_drop: float | None = None) -> float:
    """The lowest clean accuracy :func:`choose_point` accepts among ``rows``."""
    best = max(r["clean"]["accuracy"] for r in rows)
    if max_clean_drop is None:
        return max(rows, key=lambda r: r["clean"]["accuracy"])["clean"]["ci"][0]
    return best - max_clean_drop / 100


def choose_point(rows: list[dict[str, Any]], max_clean_drop: float | None = None) -> dict[str, Any]:
    """The row of the choice rule (:func:`selection_rule`) among ``rows`` (the front: dicts with
    ``number``, ``clean`` and ``robust`` :func:`score` dicts).

    ``max_clean_drop`` (points, >= 0): accept clean accuracies down to the best one minus this
    many points instead of down to the lower end of its interval. Where the front is a steep
    trade (CIFAR-10: every clean point costs robustness) the default lands on a nearly transparent
    dictionary; ``100`` picks the most robust point of the front."""
    if not rows:
        raise ValueError("choose_point: rows must hold at least one point of the front; got none.")
    if max_clean_drop is not None and (isinstance(max_clean_drop, bool) or not 0 <= max_clean_drop <= 100):
        raise ValueError(f"choose_point: max_clean_drop must be a number of points in [0, 100] or None; "
                         f"got {max_clean_drop!r}.")
    floor = clean_floor(rows, max_clean_drop)
    if max_clean_drop is not None:        # best - drop in floating point may miss a point it reaches
        floor -= 1e-12
    eligible = [r for r in rows if r["clean"]["accuracy"] >= floor]
    return max(eligible, key=lambda r: (r["robust"]["accuracy"], r["clean"]["accuracy"], -r["number"]))


# --- one trial: a pure function of its parameters (what a worker runs) -------------------------
def _evaluate_setting(item: dict[str, Any], *, x_fit, x_val, y_val, model, eps: float, n_robust: int,
                      attacks: tuple[str, ...], budgets: dict[str, int], max_patches: int, seed: int,
                      device: str) -> dict[str, Any]:
    """Fit the dictionary of ``item["params"]`` on ``x_fit``, score it on the validation images.

    Returns plain data: per-image outcomes as ``"0"/"1"`` strings (``clean``: all of ``x_val``,
    ``robust``: the worst case on its first ``n_robust``), the first breaks and flags of the
    robustness evaluation, and seconds."""
    import torch

    from ddl.defence import DictionaryDenoiser
    from ddl.models.train import predict
    from ddl.robustness import evaluate_robustness
    from ddl.robustness._names import eps_key

    attacks = item.get("attacks", attacks)
    t0 = time.perf_counter()
    den = DictionaryDenoiser(**item["params"], max_patches=max_patches, random_state=seed,
                             device=device).fit(x_fit)
    fit_seconds = time.perf_counter() - t0
    with torch.no_grad():
        clean = predict(model, den.transform(x_val), device=device).argmax(1) == y_val
    res = evaluate_robustness(model, x_val[:n_robust], y_val[:n_robust], defence=den, eps=eps,
                              attacks=attacks, seed=seed, cascade=True, unbounded=False,
                              progress=False, **budgets)
    k = eps_key(res.eps[0])
    return {"clean": _bits(clean), "robust": _bits(res.worst_survival[k]),
            "first_breaks": res.first_breaks()[k], "flags": [f["code"] for f in res.flags],
            "fit_seconds": fit_seconds, "seconds": time.perf_counter() - t0}


def _bits(t) -> str:
    return "".join("1" if b else "0" for b in t.tolist())


def _row(number: int, params: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A trial as the summary reports it: parameters, both scores with intervals, seconds."""
    return {"number": number, "params": params,
            "clean": score(result["clean"].count("1"), len(result["clean"])),
            "robust": score(result["robust"].count("1"), len(result["robust"])),
            "first_breaks": result["first_breaks"], "flags": result["flags"],
            "fit_seconds": round(result["fit_seconds"], 3), "seconds": round(result["seconds"], 3)}


# --- checks ------------------------------------------------------------------------------------
def _import_optuna():
    try:
        import optuna
    except ImportError as exc:
        raise TuneError(f'tune_defence: needs optuna, the tune extra: pip install -e ".[tune]" '
                        f"(import failed: {exc})") from None
    return optuna


def _check_args(dataset, *, model, n_trials, n_val, n_robust, eps, attacks, budgets, population_size,
                space) -> None:
    """Every argument a user can get wrong, before anything is loaded."""
    from ddl._validate import check_choice, check_int, check_number
    from ddl.robustness import parse_attack

    f = "tune_defence"
    check_choice(f, "dataset", dataset, DATASETS)
    check_choice(f, "model", model, MODEL_NAMES)
    check_int(f, "n_trials", n_trials, 1)
    check_int(f, "n_val", n_val, 1)
    check_int(f, "n_robust", n_robust, 1, n_val, high_name="n_val")
    check_number(f, "eps", eps, 0, 1, low_open=True)
    check_int(f, "population_size", population_size, 2)
    if not attacks:
        raise ValueError(f"{f}: attacks must name at least one attack; got {attacks!r}.")
    for a in attacks:
        parse_attack(a, where=f"{f}: attacks")
    unknown = sorted(set(budgets) - set(TUNE_BUDGETS))
    if unknown:
        raise ValueError(f"{f}: budgets keys must be among {sorted(TUNE_BUDGETS)}; got {unknown}.")
    for k, v in budgets.items():
        check_int(f, f"budgets[{k!r}]", v, 1)
    _check_space(space)


def _check_space(space: dict[str, tuple]) -> None:
    from ddl.experiments.config import DICTIONARY_METHODS

    f = "tune_defence"
    if not isinstance(space, dict) or set(space) != set(_PARAMS):
        keys = sorted(space) if isinstance(space, dict) else type(space).__name__
        raise ValueError(f"{f}: space must map exactly {', '.join(_PARAMS)} to tuples of choices; got {keys}.")
    for name, choices in space.items():
        if not isinstance(choices, (tuple, list)) or not choices or len(set(choices)) != len(choices):
            raise ValueError(f"{f}: space[{name!r}] must be a non-empty tuple of distinct choices; got {choices!r}.")
    for name in ("patch_size", "n_components", "n_nonzero_coefs", "step"):
        bad = [c for c in space[name] if isinstance(c, bool) or not isinstance(c, int) or c < 1]
        if bad:
            raise ValueError(f"{f}: space[{name!r}] must hold ints >= 1; got {space[name]!r}.")
    if 1 not in space["step"]:
        raise ValueError(f"{f}: space['step'] must include 1 (the stride of patch sizes that a "
                         f"larger stride does not tile); got {space['step']!r}.")
    if max(space["n_nonzero_coefs"]) > min(space["n_components"]):
        raise ValueError(f"{f}: every n_nonzero_coefs must be <= every n_components; got "
                         f"n_nonzero_coefs {space['n_nonzero_coefs']!r} with n_components {space['n_components']!r}.")
    bad = [c for c in space["method"] if c not in DICTIONARY_METHODS]
    bad += [c for c in space["remove_mean"] if not isinstance(c, bool)]
    if bad:
        raise ValueError(f"{f}: space['method'] must hold methods among {DICTIONARY_METHODS} and "
                         f"space['remove_mean'] bools; got {bad!r}.")


def _check_geometry(space, image_shape) -> None:
    """Every patch fits the image and holds at least as many values as the largest sparsity."""
    c, h, w = image_shape
    for p in space["patch_size"]:
        if p > min(h, w) or c * p * p < max(space["n_nonzero_coefs"]):
            raise ValueError(f"tune_defence: space['patch_size'] {p} must fit the {h}x{w} images and "
                             f"hold >= max n_nonzero_coefs = {max(space['n_nonzero_coefs'])} values; "
                             f"got {c * p * p} values per patch.")


# --- the study ---------------------------------------------------------------------------------
def _suggest(trial, space: dict[str, tuple], image_hw: tuple[int, int]) -> dict[str, Any]:
    """The parameters of one trial (define-by-run; ``step`` only where every stride tiles)."""
    params = {name: trial.suggest_categorical(name, list(space[name]))
              for name in ("patch_size", "n_components", "n_nonzero_coefs", "remove_mean", "method")}
    p = params["patch_size"]
    tiles = all((s - p) % st == 0 for s in image_hw for st in space["step"])
    params["step"] = trial.suggest_categorical("step", list(space["step"])) if tiles else 1
    return params


def _params_of(trial) -> dict[str, Any] | None:
    """The full parameter dict of a stored trial, or None when it was interrupted mid-suggestion."""
    p = dict(trial.params)
    p.setdefault("step", trial.user_attrs.get("step"))
    return p if set(p) == set(_PARAMS) and p["step"] is not None else None


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def _open_study(optuna, run_dir: Path, dataset: str, settings: dict[str, Any]):
    """The dataset's study in ``run_dir/study.db``, created with ``settings`` or checked against them."""
    storage = f"sqlite:///{(run_dir / STUDY_FILE).resolve()}"
    name = f"ddl-tune-{dataset}"
    study = optuna.create_study(storage=storage, study_name=name, directions=["maximize", "maximize"],
                                load_if_exists=True)
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
        if settings["warm_start"] is not None:     # the first trial: the shipped setting
            study.enqueue_trial(settings["warm_start"])
    elif stored != json.loads(json.dumps(settings)):
        now = json.loads(json.dumps(settings))
        diff = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
        raise TuneError(f"tune_defence: {run_dir / STUDY_FILE} holds study {name!r} made with other settings "
                        f"({', '.join(f'{k}: {stored.get(k)!r} there, {settings.get(k)!r} now' for k in diff)}); "
                        f"use another run folder or the same settings.")
    return study


def _run_generations(optuna, study, engine, shared, *, n_trials, population_size, seed, space, image_hw,
                     log) -> None:
    """Ask, evaluate and tell generation by generation until ``n_trials`` trials are complete."""
    from optuna.trial import TrialState

    while True:
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        done: dict[str, int] = {}
        for t in complete:                     # the first trial of a setting is its evaluation
            done.setdefault(_key(_params_of(t)), t.number)
        pending = _stale_trials(study)
        n_left = n_trials - len(complete) - len(pending)
        if not pending and n_left <= 0:
            return
        if not pending:
            study.sampler = optuna.samplers.NSGAIISampler(population_size=population_size,
                                                          seed=seed + len(study.trials))
            for _ in range(min(population_size, n_left)):
                trial = study.ask()
                params = _suggest(trial, space, image_hw)
                trial.set_user_attr("step", params["step"])
                pending.append((trial.number, params))
        _evaluate_and_tell(study, engine, shared, pending, done, log)


def _stale_trials(study) -> list[tuple[int, dict[str, Any]]]:
    """Trials asked but never told (an interrupted run): kept with their parameters, or marked
    failed when the interruption came before all of them were suggested."""
    from optuna.trial import TrialState

    stale = []
    for t in study.get_trials(states=(TrialState.RUNNING,)):     # WAITING (enqueued): ask() pops them
        params = _params_of(t)
        if params is None:
            study.tell(t.number, state=TrialState.FAIL)
        else:
            stale.append((t.number, params))
    return stale


def _evaluate_and_tell(study, engine, shared, pending, done: dict[str, int], log) -> None:
    """Evaluate each distinct new setting once (as a unit of ``engine``) and tell every trial."""
    by_key: dict[str, list[int]] = {}
    for number, params in pending:
        by_key.setdefault(_key(params), []).append(number)
    for key in [k for k in by_key if k in done]:         # proposed before: its numbers again
        for number in by_key.pop(key):
            _tell(study, number, _result(study, done[key]), duplicate_of=done[key], log=lambda *a: log(*a, key))
    items = [{"number": numbers[0], "params": json.loads(key)} for key, numbers in by_key.items()]
    for i, result in engine.map(_evaluate_setting, items, shared=shared):
        key = _key(items[i]["params"])
        numbers, log_key = by_key[key], lambda *a: log(*a, key)     # noqa: B023 (called at once)
        _tell(study, numbers[0], result, log=log_key)
        for number in numbers[1:]:
            _tell(study, number, result, duplicate_of=numbers[0], log=log_key)


def _tell(study, number: int, result: dict[str, Any], *, duplicate_of: int | None = None, log) -> None:
    """Store the trial's result (a study attribute ``result:<number>``; a duplicate stores the
    number of the trial it repeats), then tell Optuna its two values."""
    study.set_user_attr(f"result:{number}", result if duplicate_of is None else {"duplicate_of": duplicate_of})
    study.tell(number, [result[k].count("1") / len(result[k]) for k in _OBJECTIVES])
    log(number, result, duplicate_of)


def _result(study, number: int, attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluation of trial ``number`` (followed through ``duplicate_of``)."""
    attrs = study.user_attrs if attrs is None else attrs
    r = attrs[f"result:{number}"]
    return attrs[f"result:{r['duplicate_of']}"] if "duplicate_of" in r else r


# --- the driver --------------------------------------------------------------------------------
def tune_defence(dataset: str, *, run_dir: str | Path, data_dir=None, model: str | None = None,
                 n_trials: int = 36, eps: float | None = None, n_val: int = 1000, n_robust: int = 500,
                 attacks=TUNE_ATTACKS, budgets: dict[str, int] | None = None, population_size: int = 12,
                 space: dict[str, tuple] | None = None, max_patches: int = PRESET_MAX_PATCHES, seed: int = 0,
                 engine=None, warm_start: bool = True, check: bool = True, max_clean_drop: float | None = None,
                 device: str = "cpu", command: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the two-objective study of ``dataset``; write and return its summary.

    Parameters
    ----------
    dataset : {"mnist", "cifar10"}
    run_dir : folder
        Holds ``study.db`` (the Optuna storage), ``tune-<dataset>.json`` (the summary) and
        ``front-<dataset>.png`` (the figure); locked while the study runs.
    data_dir : folder or None
        Where the training split is read (:func:`ddl.data.load_dataset`; never the test split).
    model : zoo classifier name or None
        ``None``: :data:`DEFAULT_MODELS` (the classifier the shipped defence was tuned on).
    n_trials : int >= 1, default 36
        Complete trials the study holds at the end (a resumed study counts those it has).
    eps : float in (0, 1] or None
        ε of the robust objective; ``None``: :data:`TUNE_EPS`.
    n_val : int, default 1000
        The last ``n_val`` training images: the validation set (clean objective).
    n_robust : int in [1, n_val], default 500
        Its first ``n_robust`` images: the robust objective.
    attacks, budgets
        Of :func:`~ddl.robustness.evaluate_robustness` (default :data:`TUNE_ATTACKS`; budgets:
        keys ``pgd_steps``, ``apgd_iter``, ``square_queries``, each missing one from
        :data:`TUNE_BUDGETS`).
    population_size : int >= 2, default 12
        NSGA-II's population: trials asked (and run in parallel) per generation.
    space : dict or None
        Choices of each parameter (keys of :data:`SPACE`); ``None``: ``SPACE[dataset]``.
    max_patches : int, default 100,000
        Patches each dictionary learns from (that of the shipped defence).
    seed : int, default 0
        Seeds the sampler, the dictionaries (``random_state``) and the attacks.
    engine : ddl._parallel.Engine or None
        Where the trials run; ``None``: serially, in this process.
    warm_start : bool, default True
        A new study's first trial is the shipped tuned defence (when the space holds it), so the
        search starts from the incumbent and its front can only be as good or better.
    check : bool, default True
        Evaluate the chosen point and the shipped defence again with :data:`CHECK_ATTACKS` added.
    max_clean_drop : float in [0, 100] or None
        The choice rule (:func:`choose_point`): ``None`` keeps clean accuracy within the interval
        of the front's best; a number of points accepts that much less. Not part of the study's
        settings: another value re-chooses from the same trials (and checks the new choice).
    command : str or None
        The command line, recorded in the summary.

    Returns
    -------
    dict
        The summary (also written to ``run_dir/tune-<dataset>.json``): every trial with both
        scores and intervals, the front, the chosen point and its ``best`` defence (the
        :class:`~ddl.experiments.config.DefenceConfig` fields that :func:`save_tuned` writes and
        :func:`~ddl.experiments.config.load_tuned` reads), the shipped defence scored the same
        way, the paired comparison, seconds per trial and the machine.
    """
    import contextlib

    from ddl._io import lock_run_folder
    from ddl._parallel import Engine

    model = DEFAULT_MODELS.get(dataset) if model is None else model
    eps = TUNE_EPS.get(dataset) if eps is None else eps
    budgets = {**TUNE_BUDGETS, **(budgets or {})}
    space = {k: tuple(v) for k, v in (SPACE.get(dataset, {}) if space is None else space).items()}
    attacks = tuple(attacks)
    _check_args(dataset, model=model, n_trials=n_trials, n_val=n_val, n_robust=n_robust, eps=eps,
                attacks=attacks, budgets=budgets, population_size=population_size, space=space)
    optuna = _import_optuna()
    run_dir = Path(run_dir)
    # an engine given by the caller stays open (the caller may tune several data sets on it)
    with lock_run_folder(run_dir), (contextlib.nullcontext(engine) if engine else Engine()) as engine:
        return _tune_locked(optuna, dataset, run_dir=run_dir, data_dir=data_dir, model=model,
                            n_trials=n_trials, eps=float(eps), n_val=n_val, n_robust=n_robust,
                            attacks=attacks, budgets=budgets, population_size=population_size, space=space,
                            max_patches=max_patches, seed=seed, engine=engine, warm_start=warm_start,
                            check=check, max_clean_drop=max_clean_drop, device=device, command=command,
                            progress=progress)


def _tune_locked(optuna, dataset, *, run_dir, data_dir, model, n_trials, eps, n_val, n_robust, attacks,
                 budgets, population_size, space, max_patches, seed, engine, warm_start, check, max_clean_drop,
                 device, command, progress) -> dict[str, Any]:
    x, y = _training_split(dataset, data_dir, n_val)
    _check_geometry(space, tuple(x.shape[1:]))
    clf, classifier = _classifier(model, dataset, device)
    settings = {"dataset": dataset, "classifier": classifier["file"], "classifier_sha256": classifier["sha256"],
                "eps": eps, "n_train": len(x), "n_val": n_val, "n_robust": n_robust, "attacks": list(attacks),
                "budgets": budgets, "max_patches": max_patches, "seed": seed, "population_size": population_size,
                "space": {k: list(v) for k, v in space.items()},
                "warm_start": _warm_start(dataset, space, tuple(x.shape[2:])) if warm_start else None}
    shared = {"x_fit": x[:-n_val], "x_val": x[-n_val:], "y_val": y[-n_val:], "model": clf, "eps": eps,
              "n_robust": n_robust, "attacks": attacks, "budgets": budgets, "max_patches": max_patches,
              "seed": seed, "device": device}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    try:
        study = _open_study(optuna, run_dir, dataset, settings)
        log = _logger(dataset, n_trials, progress)
        _run_generations(optuna, study, engine, shared, n_trials=n_trials, population_size=population_size,
                         seed=seed, space=space, image_hw=tuple(x.shape[2:]), log=log)
        extra = _reference_and_check(study, engine, shared, dataset, attacks, check, progress, max_clean_drop)
    finally:
        optuna.logging.set_verbosity(verbosity)
    wall = time.perf_counter() - t0
    study.set_user_attr("wall_seconds", study.user_attrs.get("wall_seconds", 0.0) + wall)
    summary = _summarise(study, settings, classifier, extra, engine=engine, device=device, command=command,
                         wall_seconds=wall, max_clean_drop=max_clean_drop)
    atomic_write_json(run_dir / f"tune-{dataset}.json", summary)
    from ddl.plots import save_figure

    save_figure(plot_front(summary), run_dir / f"front-{dataset}.png")
    return summary


def _logger(dataset: str, n_trials: int, progress: bool):
    def log(number, result, duplicate_of, key):
        if not progress:
            return
        p = json.loads(key)
        setting = (f"{p['patch_size']}x{p['patch_size']}/{p['step']}, {p['n_components']} atoms, "
                   f"k {p['n_nonzero_coefs']}, "
                   f"{p['method']}{', mean removed' if p['remove_mean'] else ''}")
        c, r = (result[k].count("1") / len(result[k]) for k in _OBJECTIVES)
        how = f"same setting as trial {duplicate_of}" if duplicate_of is not None else f"{result['seconds']:.0f} s"
        print(f"tune {dataset}: trial {number} (of {n_trials}) {setting}: clean {c:.1%}, worst case {r:.1%} ({how})",
              flush=True)
    return log


def _reference_and_check(study, engine, shared, dataset, attacks, check, progress,
                         max_clean_drop=None) -> dict[str, Any]:
    """The shipped defence scored as the trials were, and (``check``) the chosen point and the
    shipped defence with :data:`CHECK_ATTACKS` added; each computed once, kept in the study."""
    reference = _shipped_params(dataset)
    checked = tuple(attacks) + tuple(a for a in CHECK_ATTACKS if a not in attacks)
    units = [("reference", reference, tuple(attacks))]
    if check:
        units += [("check:chosen", _chosen_params(study, max_clean_drop), checked),
                  ("check:reference", reference, checked)]
    attrs = study.user_attrs
    if reference is not None and attrs.get("reference", {}).get("params") != reference:
        scored = _reference_from_trials(study, reference, attacks)
        if scored is not None:                    # the warm start: scored as one of the trials
            study.set_user_attr("reference", scored)
            attrs = study.user_attrs
    unit_key = lambda params, a: json.dumps([params, list(a)], sort_keys=True)   # noqa: E731
    stored = {unit_key(v["params"], v["attacks"]): v for k, v in attrs.items() if k in _EXTRA and v}
    todo: dict[str, list[str]] = {}
    for name, params, a in units:
        if params is not None and attrs.get(name, {}).get("params") != params:
            todo.setdefault(unit_key(params, a), []).append(name)
    for key in [k for k in todo if k in stored]:          # the same evaluation under another name
        for name in todo.pop(key):
            study.set_user_attr(name, stored[key])
    items = [{"names": names, "params": json.loads(key)[0], "attacks": tuple(json.loads(key)[1])}
             for key, names in todo.items()]
    for item in items:
        if progress:
            print(f"tune {dataset}: {' = '.join(item['names'])} ({', '.join(item['attacks'])}): {item['params']}",
                  flush=True)
    for i, result in engine.map(_evaluate_setting, items, shared=shared):
        for name in items[i]["names"]:
            study.set_user_attr(name, {"params": items[i]["params"], "attacks": list(items[i]["attacks"]),
                                       "result": result})
    return {k: study.user_attrs.get(k) for k in _EXTRA}


def _reference_from_trials(study, reference: dict[str, Any], attacks) -> dict[str, Any] | None:
    """The shipped setting's evaluation when a complete trial has its parameters (else None)."""
    same = [r["number"] for r in _rows(study) if r["params"] == reference and r["duplicate_of"] is None]
    return None if not same else {"params": reference, "attacks": list(attacks), "trial": same[0],
                                  "result": _result(study, same[0])}


def _shipped_params(dataset: str) -> dict[str, Any] | None:
    from ddl.experiments.config import load_tuned

    cfg = load_tuned().get(dataset)
    return None if cfg is None else {k: getattr(cfg, k) for k in _PARAMS}


def _warm_start(dataset: str, space: dict[str, tuple], image_hw: tuple[int, int]) -> dict[str, Any] | None:
    """The shipped setting as Optuna parameters (``step`` only where it is one), or None when
    the space does not hold it."""
    shipped = _shipped_params(dataset)
    if shipped is None or any(shipped[k] not in space[k] for k in _PARAMS):
        return None
    p = shipped["patch_size"]
    if not all((s - p) % st == 0 for s in image_hw for st in space["step"]):
        return None if shipped["step"] != 1 else {k: v for k, v in shipped.items() if k != "step"}
    return shipped


def _rows(study) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    attrs = study.user_attrs
    return [{**_row(t.number, _params_of(t), _result(study, t.number, attrs)),
             "duplicate_of": attrs[f"result:{t.number}"].get("duplicate_of")}
            for t in study.get_trials(states=(TrialState.COMPLETE,))]


def _front_rows(rows) -> list[dict[str, Any]]:
    """The front over distinct settings (a duplicate trial repeats its first's point)."""
    distinct = [r for r in rows if r["duplicate_of"] is None]
    return [distinct[i] for i in pareto_front([(r["clean"]["accuracy"], r["robust"]["accuracy"]) for r in distinct])]


def _chosen_params(study, max_clean_drop=None) -> dict[str, Any]:
    return choose_point(_front_rows(_rows(study)), max_clean_drop)["params"]


def _summarise(study, settings, classifier, extra, *, engine, device, command, wall_seconds,
               max_clean_drop=None) -> dict[str, Any]:
    from ddl.provenance import machine_record

    rows, attrs = _rows(study), study.user_attrs
    front = sorted(_front_rows(rows), key=lambda r: r["clean"]["accuracy"])
    chosen = choose_point(front, max_clean_drop)
    seconds = sorted(r["seconds"] for r in rows if r["duplicate_of"] is None)
    out = {
        "dataset": settings["dataset"], "model": classifier["name"], "classifier": classifier,
        "eps": settings["eps"], "validation": f"last {settings['n_val']} of {settings['n_train']} training images",
        "n_val": settings["n_val"], "n_robust": settings["n_robust"],
        "objectives": {"clean": f"accuracy of model(defence(x)) on the {settings['n_val']} validation images",
                       "robust": f"worst-case accuracy over {', '.join(settings['attacks'])} (cascade) at "
                                 f"eps {settings['eps']:.6g} on the first {settings['n_robust']} of them"},
        "interval": {"method": "wilson", "confidence": 0.95, "over": "images"},
        "attacks": settings["attacks"], "budgets": settings["budgets"],
        "sampler": {"name": "NSGAIISampler", "seed": settings["seed"],
                    "population_size": settings["population_size"],
                    "reseeded": "each generation with seed + trials already in the study"},
        "study": {"storage": STUDY_FILE, "name": study.study_name}, "search_space": settings["space"],
        "max_patches": settings["max_patches"], "n_trials": len(rows),
        "n_distinct_settings": len(seconds), "front": [r["number"] for r in front],
        "selection_rule": selection_rule(max_clean_drop), "max_clean_drop": max_clean_drop,
        "clean_floor": clean_floor(front, max_clean_drop), "chosen": chosen,
        "best": {**chosen["params"], "max_patches": settings["max_patches"], "random_state": settings["seed"]},
        "indistinguishable_from_chosen": [r["number"] for r in rows if r["duplicate_of"] is None
                                          and r["number"] != chosen["number"] and indistinguishable(r, chosen)],
        "indistinguishable_rule": "95 % Wilson intervals overlap on both objectives",
        "trials": rows,
        "per_image": {str(r["number"]): {k: _result(study, r["number"], attrs)[k] for k in _OBJECTIVES}
                      for r in rows if r["duplicate_of"] is None},
        "per_image_format": "1 = correct (clean) / survived every attack (robust), validation images in order",
        "seconds_per_trial": {"mean": sum(seconds) / len(seconds), "median": seconds[len(seconds) // 2],
                              "min": seconds[0], "max": seconds[-1]},
        "wall_seconds_this_run": round(wall_seconds, 1),
        "engine": engine.describe() if engine is not None else "none (summary of the stored trials)",
        "wall_seconds_all_runs": round(attrs.get("wall_seconds", wall_seconds), 1),
        "machine": machine_record(device), "command": command,
        "caveat": ("the zoo classifier was trained on the whole training split, validation images "
                   "included: clean validation accuracies are optimistic; no test image was read"),
    }
    out.update(_comparison(extra, chosen, {r["number"]: _result(study, r["number"], attrs) for r in front}))
    return out


def _comparison(extra, chosen, front_results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The shipped defence's scores, the check with Square, and paired tests of the chosen point
    and of every front point against the shipped defence (same images)."""
    from ddl._stats import mcnemar

    out: dict[str, Any] = {}
    chosen_result = front_results[chosen["number"]]
    ref = extra.get("reference")
    if ref is not None:
        out["reference"] = {"what": "the shipped tuned defence (reference/tuned_defence.json, the old grid's "
                                    "choice) evaluated as the trials were",
                            "trial": ref.get("trial"), **_row(-1, ref["params"], ref["result"]),
                            "per_image": {k: ref["result"][k] for k in _OBJECTIVES}}
        out["reference"].pop("number")
        out["chosen_vs_reference"] = {
            k: mcnemar([c == "1" for c in chosen_result[k]], [c == "1" for c in ref["result"][k]])
            for k in _OBJECTIVES}
        out["reference_indistinguishable_from_chosen"] = indistinguishable(out["reference"], chosen)
        out["front_vs_reference"] = {
            str(n): {k: mcnemar([c == "1" for c in r[k]], [c == "1" for c in ref["result"][k]]) for k in _OBJECTIVES}
            for n, r in front_results.items()}
        out["front_vs_reference_note"] = (
            "exact McNemar per front point, not corrected for testing several points; a point whose robust "
            "difference interval lies above 0 and whose clean interval reaches 0 or above is more robust at "
            "statistically equal or better clean accuracy")
        out["verdict"] = (_verdict(out["chosen_vs_reference"]) if chosen["params"] != ref["params"] else
                          "the chosen setting is the shipped one: no setting of the study beats it under the rule")
        better = [n for n, t in out["front_vs_reference"].items()
                  if t["robust"]["difference_ci"][0] > 0 and t["clean"]["difference_ci"][1] >= 0]
        out["front_more_robust_than_reference"] = [int(n) for n in better]
        if better:
            out["verdict"] += "; more robust than the shipped setting at statistically equal or better clean " \
                              "accuracy (paired, uncorrected): " + ", ".join(
                f"trial {n} ({100 * out['front_vs_reference'][n]['robust']['difference']:+.1f} points "
                f"[{100 * out['front_vs_reference'][n]['robust']['difference_ci'][0]:+.1f}, "
                f"{100 * out['front_vs_reference'][n]['robust']['difference_ci'][1]:+.1f}])" for n in better)
    checks = {}
    for name in ("chosen", "reference"):
        c = extra.get(f"check:{name}")
        if c is not None:
            checks[name] = {"params": c["params"], "attacks": c["attacks"],
                            "robust": score(c["result"]["robust"].count("1"), len(c["result"]["robust"])),
                            "first_breaks": c["result"]["first_breaks"], "flags": c["result"]["flags"]}
    if checks:
        out["check_with_square"] = checks
    return out


def _verdict(tests: dict[str, dict[str, Any]]) -> str:
    """Plain words on chosen vs shipped, from the paired tests' 95 % intervals of the difference."""
    rob, clean = tests["robust"]["difference_ci"], tests["clean"]["difference_ci"]
    robust_word = ("higher" if rob[0] > 0 else "lower" if rob[1] < 0 else "indistinguishable (interval holds 0)")
    clean_word = ("higher" if clean[0] > 0 else "lower" if clean[1] < 0 else "indistinguishable (interval holds 0)")
    beats = rob[0] > 0 and clean[1] >= 0
    return (f"chosen vs shipped: worst-case accuracy {robust_word}, clean accuracy {clean_word}; "
            + ("the chosen setting beats the shipped one on robust accuracy at equal or better clean accuracy"
               if beats else "the chosen setting does not beat the shipped one on robust accuracy at equal "
                             "or better clean accuracy"))


def summarise_study(dataset: str, *, run_dir: str | Path, device: str = "cpu",
                    command: str | None = None, max_clean_drop: float | None = None) -> dict[str, Any]:
    """Write the summary and the figure of what the study in ``run_dir`` holds, evaluating
    nothing (``ddl tune --summarise``): its complete trials, the front, the choice and the shipped
    defence when one of the trials scored it; the Square checks only if a finished run made them.
    For a study that is still short of its trials (interrupted, or slower than planned) the
    summary says so under ``partial``."""
    from optuna.trial import TrialState

    from ddl import zoo
    from ddl._io import lock_run_folder
    from ddl.plots import save_figure

    optuna = _import_optuna()
    run_dir = Path(run_dir)
    name = f"ddl-tune-{dataset}"
    if not (run_dir / STUDY_FILE).is_file():
        raise TuneError(f"summarise_study: no {STUDY_FILE} in {run_dir}; run `ddl tune` there first.")
    with lock_run_folder(run_dir):
        try:
            study = optuna.load_study(study_name=name, storage=f"sqlite:///{(run_dir / STUDY_FILE).resolve()}")
        except KeyError:
            raise TuneError(f"summarise_study: {run_dir / STUDY_FILE} holds no study {name!r}.") from None
        settings = study.user_attrs["settings"]
        entry = next((e for e in zoo.entries() if e.dataset == dataset and Path(e.path).name == settings["classifier"]),
                     None)
        if entry is None:
            raise TuneError(f"summarise_study: the zoo no longer holds {settings['classifier']}, the classifier "
                            f"of study {name!r}.")
        extra = {k: study.user_attrs.get(k) for k in _EXTRA}
        shipped = _shipped_params(dataset)
        if extra["reference"] is None and shipped is not None:
            extra["reference"] = _reference_from_trials(study, shipped, settings["attacks"])
        if extra.get("check:chosen") and extra["check:chosen"]["params"] != _chosen_params(study, max_clean_drop):
            extra["check:chosen"] = None          # made for another choice: `ddl tune` runs this one's
        summary = _summarise(study, settings, _classifier_record(entry, dataset), extra, engine=None, device=device,
                             command=command, wall_seconds=0.0, max_clean_drop=max_clean_drop)
        summary["partial"] = {"complete_trials": summary["n_trials"],
                              "unfinished_trials": len(study.get_trials(states=(TrialState.RUNNING,))),
                              "note": "summary of the stored trials; `ddl tune` with the study's settings "
                                      "resumes the unfinished ones and asks for the rest"}
        atomic_write_json(run_dir / f"tune-{dataset}.json", summary)
        save_figure(plot_front(summary), run_dir / f"front-{dataset}.png")
    return summary


# --- the figure --------------------------------------------------------------------------------
def plot_front(summary: dict[str, Any]):
    """Clean vs worst-case accuracy of every trial, the front with its intervals, the chosen
    point and the shipped defence, from a summary alone (never re-runs a trial)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    pct = lambda r, k: 100 * r[k]["accuracy"]                        # noqa: E731
    trials = [r for r in summary["trials"] if r["duplicate_of"] is None]
    ax.scatter([pct(r, "clean") for r in trials], [pct(r, "robust") for r in trials], s=14,
               color="0.65", label=f"trials ({len(trials)} settings)")
    front = [r for r in trials if r["number"] in set(summary["front"])]
    front.sort(key=lambda r: r["clean"]["accuracy"])
    _points(ax, front, "-o", "tab:blue", "Pareto front (95 % intervals)")
    floor = summary.get("clean_floor", max(front, key=lambda r: r["clean"]["accuracy"])["clean"]["ci"][0])
    ax.axvline(100 * floor, ls="--", lw=0.8, color="tab:red", label="choice: clean accuracy at least this")
    ref = summary.get("reference")
    if ref:
        _points(ax, [ref], "s", "k", "shipped tuned defence", size=11, zorder=4, mfc="none")
    same = bool(ref) and ref["params"] == summary["chosen"]["params"]
    _points(ax, [summary["chosen"]], "*", "tab:red", f"chosen (trial {summary['chosen']['number']}"
            + (", the shipped setting)" if same else ")"), size=12, zorder=5)
    ax.set_xlabel(f"clean accuracy (%), {summary['n_val']} validation images")
    ax.set_ylabel(f"worst-case accuracy (%) at ε = {_eps_text(summary['eps'])}, {summary['n_robust']} images")
    ax.set_title(f"{summary['dataset']}: denoiser settings in front of the {summary['model']}")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _points(ax, rows, fmt, color, label, size=5, zorder=3, **style) -> None:
    """``rows`` as points with their 95 % intervals as error bars, in percent."""
    def bars(k):
        values = [100 * r[k]["accuracy"] for r in rows]
        return values, [[v - 100 * r[k]["ci"][0] for v, r in zip(values, rows)],
                        [100 * r[k]["ci"][1] - v for v, r in zip(values, rows)]]

    (xs, xerr), (ys, yerr) = bars("clean"), bars("robust")
    ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt=fmt, color=color, markersize=size, elinewidth=0.8,
                capsize=2, label=label, zorder=zorder, **style)


# --- files -------------------------------------------------------------------------------------
def save_tuned(results: dict[str, dict], path: str | Path) -> Path:
    """Write the chosen defence of each data set in ``results`` to ``path`` (a run folder's
    ``tuned_defence.json``; never into the installed package).

    Each entry keeps what :func:`~ddl.experiments.config.load_tuned` reads (``best``: the
    DefenceConfig fields) and the summary's main numbers (not its per-trial list: that stays in
    ``tune-<dataset>.json``). Entries of data sets that are not in ``results`` are kept, so tuning
    one data set does not erase the other's. ``ddl reproduce --preset tuned --tuned-defence
    PATH`` reads the file.
    """
    path = Path(path)
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update({d: {k: v for k, v in r.items() if k not in ("trials", "per_image")} for d, r in results.items()})
    return atomic_write_json(path, merged)


def plan_tuning(dataset: str, *, run_dir: str | Path, data_dir=None, model: str | None = None,
                n_trials: int = 36, eps: float | None = None, n_val: int = 1000, n_robust: int = 500,
                attacks=TUNE_ATTACKS, budgets: dict[str, int] | None = None, population_size: int = 12,
                space: dict[str, tuple] | None = None, max_patches: int = PRESET_MAX_PATCHES,
                device: str = "cpu") -> list[str]:
    """What :func:`tune_defence` would do, as lines of text (``ddl tune --dry-run``), after
    loading the training split and the classifier as it does and checking every argument;
    nothing is computed or written, and optuna is not needed."""
    model = DEFAULT_MODELS.get(dataset) if model is None else model
    eps = TUNE_EPS.get(dataset) if eps is None else eps
    budgets = {**TUNE_BUDGETS, **(budgets or {})}
    space = {k: tuple(v) for k, v in (SPACE.get(dataset, {}) if space is None else space).items()}
    _check_args(dataset, model=model, n_trials=n_trials, n_val=n_val, n_robust=n_robust, eps=eps,
                attacks=tuple(attacks), budgets=budgets, population_size=population_size, space=space)
    x, _ = _training_split(dataset, data_dir, n_val)
    _check_geometry(space, tuple(x.shape[1:]))
    _, classifier = _classifier(model, dataset, device)
    db = Path(run_dir) / STUDY_FILE
    eps_text = _eps_text(eps)
    return [f"{dataset}: validation = the last {n_val} of {len(x)} training images (dictionaries learn from "
            f"{max_patches} patches of the other {len(x) - n_val}); classifier zoo {classifier['file']} ({model})",
            f"  objectives: clean accuracy on {n_val} images; worst case of {' '.join(attacks)} (cascade, "
            f"PGD {budgets['pgd_steps']} steps, APGD {budgets['apgd_iter']} iterations) at ε {eps_text} on the "
            f"first {n_robust}; the chosen point is checked with {' '.join(CHECK_ATTACKS)} added "
            f"({budgets['square_queries']} queries)",
            f"  {n_trials} trials, NSGA-II (population {population_size}) over "
            + "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in space.items()),
            f"  study {'would resume from' if db.is_file() else 'would be created in'} {db} as 'ddl-tune-{dataset}'"]


def _eps_text(eps: float) -> str:
    """``0.2 (51/255)``, ``0.01569 (4/255)``: ε and, when it is one, its number of grey levels."""
    levels = eps * 255
    return f"{eps:.4g}" + (f" ({round(levels)}/255)" if abs(levels - round(levels)) < 1e-9 else "")


def _training_split(dataset: str, data_dir, n_val: int):
    """The training split (x, y) of which the last ``n_val`` images are the validation set.
    The only data tuning reads: never the test split."""
    from ddl import data

    x, y = data.load_dataset(dataset, "train", data_dir=data_dir)
    if not 0 < n_val < len(x):
        raise ValueError(f"tune_defence: n_val must be in [1, {len(x) - 1}]; got {n_val}.")
    return x, y


def _classifier(model: str, dataset: str, device: str):
    """The zoo classifier (eval mode) and its record for the summary."""
    from ddl import zoo

    entry = zoo.find(model, dataset)
    if entry is None:
        raise ValueError(f"tune_defence: model must be a zoo classifier of {dataset}; got {model!r} "
                         f"(`ddl zoo list` shows them).")
    return zoo.load(model, dataset, device=device), _classifier_record(entry, dataset)


def _classifier_record(entry, dataset: str) -> dict[str, Any]:
    return {"name": entry.model, "variant": "standard", "source": "zoo", "file": Path(entry.path).name,
            "sha256": entry.sha256, "epochs": entry.epochs, "test_accuracy_recorded_in_zoo": entry.accuracy,
            "default_for_dataset": entry.model == DEFAULT_MODELS[dataset],
            "shipped_defence_tuned_on": DEFAULT_MODELS[dataset]}
