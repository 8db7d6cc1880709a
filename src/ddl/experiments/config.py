"""Frozen, validated configuration of an experiment, and every named preset.

Every stage gets one small frozen dataclass; the CLI builds them, ``pipeline.run_experiment``
reads them, nothing below the pipeline reads argparse or globals. ``from_dict`` rejects unknown
keys (an ignored typo in a config silently changes an experiment), ``to_dict`` gives the plain
record that is written to ``config.json`` and hashed into cache keys.

Configs are values: frozen dataclasses whose mappings are :class:`FrozenDict` and whose
sequences are tuples, so ``DEMO.attacks[0].params["eps"] = 0.5`` raises instead of changing the
preset for everybody, and every config is hashable.

Presets are values here, not files that get executed: ``DEMO`` and ``SMOKE`` (one
``ExperimentConfig`` each), and the reproduction presets ``PAPER``, ``NOISY_DICTIONARY``,
``QUICK`` and ``tuned`` (a ``ReproduceConfig`` each, see :func:`get_preset`). This module imports
no application module (pipeline, reproduce, tune, figures, report), so all of them can read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ddl._validate import BadFileError, check_bool, check_choice, check_int, check_number, check_optional_int
from ddl.constants import (ATTACK_NAMES, DATASETS, MAX_PATCHES, MODEL_NAMES, PAPER_FGSM_EPS, PAPER_JSMA,
                           ZOO_VARIANTS)

SOURCES = ("sample", "full", "synthetic")
DICTIONARY_METHODS = ("online", "ksvd", "mod")
DICTIONARY_SOURCES = ("clean", "perturbed")

#: Patches the committed presets learn their dictionaries from (``paper``, the tuned defence);
#: ``DefenceConfig``'s default is the denoiser's, ``ddl.constants.MAX_PATCHES``.
PRESET_MAX_PATCHES = 100_000


class FrozenDict(dict):
    """A dict that cannot be changed after it is made, and is hashable.

    A ``dict`` subclass so that ``json.dumps`` and cache keys see exactly the plain dict they saw
    before configs were frozen. Nested dicts become ``FrozenDict`` and lists become tuples."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for k, v in dict.items(self):
            dict.__setitem__(self, k, _freeze(v))

    def _refuse(self, *args, **kwargs):
        raise TypeError("FrozenDict: a configuration is immutable; build a new one with "
                        "dataclasses.replace (or FrozenDict({**old, key: value})).")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self):
        return hash(tuple(sorted(self.items(), key=lambda kv: str(kv[0]))))

    def __reduce__(self):
        return (FrozenDict, (dict(self),))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __repr__(self):
        return f"FrozenDict({dict.__repr__(self)})"


def _freeze(v: Any) -> Any:
    if isinstance(v, FrozenDict):
        return v
    if isinstance(v, dict):
        return FrozenDict(v)
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


def _plain(v: Any) -> Any:
    """Dataclasses, FrozenDicts and tuples as plain dicts and lists (for JSON)."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _set(obj, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass in __post_init__


@dataclass(frozen=True)
class DataConfig:
    """Which images. ``source="sample"`` is the bundled offline MNIST sample (5,000 train / 1,000
    test); ``"full"`` reads the standard files from ``data_dir`` (else ``$DDL_DATA``, else the
    cache folder); ``"synthetic"`` makes small learnable images (tests only).
    ``n_train``/``n_test`` keep the first images of each split (``None``: all)."""

    dataset: str = "mnist"
    source: str = "sample"
    data_dir: str | None = None
    n_train: int | None = None
    n_test: int | None = None

    def __post_init__(self):
        check_choice("DataConfig", "dataset", self.dataset, DATASETS)
        check_choice("DataConfig", "source", self.source, SOURCES)
        if self.source == "sample" and self.dataset != "mnist":
            raise ValueError(
                f"DataConfig: source='sample' exists only for dataset='mnist'; got dataset={self.dataset!r}."
            )
        _set(self, "n_train", check_optional_int("DataConfig", "n_train", self.n_train, 1))
        _set(self, "n_test", check_optional_int("DataConfig", "n_test", self.n_test, 1))


@dataclass(frozen=True)
class ModelConfig:
    """Which classifier and how to train it when no matching zoo checkpoint is used."""

    name: str = "convnet"
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    use_zoo: bool = True
    #: zoo variant: "standard", or "denoised" (fine-tuned on the tuned defence's reconstructions;
    #: only from the zoo, never trained by the pipeline)
    variant: str = "standard"

    def __post_init__(self):
        check_choice("ModelConfig", "name", self.name, MODEL_NAMES)
        check_choice("ModelConfig", "variant", self.variant, ZOO_VARIANTS)
        if self.variant != "standard" and not self.use_zoo:
            raise ValueError(f"ModelConfig: variant={self.variant!r} models come from the zoo only; "
                             f"got use_zoo=False.")
        _set(self, "epochs", check_int("ModelConfig", "epochs", self.epochs, 1))
        _set(self, "batch_size", check_int("ModelConfig", "batch_size", self.batch_size, 1))
        check_number("ModelConfig", "lr", self.lr, 0, low_open=True)


@dataclass(frozen=True)
class AttackConfig:
    """One attack and its keyword parameters, passed unchanged to ``ddl.attacks.ATTACKS[name]``.

    ``params`` is stored as a :class:`FrozenDict`. ``n_images`` limits the attacked test images
    to the first ``n_images`` (``None``: all of them), the same subset for every model.
    """

    name: str = "fgsm"
    params: FrozenDict = field(default_factory=lambda: FrozenDict(eps=PAPER_FGSM_EPS["mnist"]))
    n_images: int | None = None

    def __post_init__(self):
        check_choice("AttackConfig", "name", self.name, ATTACK_NAMES)
        if not isinstance(self.params, dict):
            raise ValueError(f"AttackConfig: params must be a dict; got {type(self.params).__name__}.")
        _set(self, "params", _freeze(self.params))
        _set(self, "n_images", check_optional_int("AttackConfig", "n_images", self.n_images, 1))

    @property
    def label(self) -> str:
        """Short name used in file names and tables, e.g. ``fgsm_eps0.1``."""
        parts = "_".join(f"{k}{v}" for k, v in sorted(self.params.items()))
        return f"{self.name}_{parts}" if parts else self.name


@dataclass(frozen=True)
class DefenceConfig:
    """The dictionary denoiser: patch size, dictionary size, OMP sparsity, how it is learned.

    ``dictionary_source="clean"`` learns from clean training patches (the default, as in the
    paper's main protocol); ``"perturbed"`` from the perturbed test patches (the paper's other
    option). ``max_patches`` defaults to ``DictionaryDenoiser``'s default (``ddl.constants``)."""

    patch_size: int = 7
    n_components: int = 256
    n_nonzero_coefs: int = 5
    step: int = 1
    method: str = "online"
    n_epochs: int = 1
    max_patches: int = MAX_PATCHES
    remove_mean: bool = True
    random_state: int = 0
    dictionary_source: str = "clean"

    def __post_init__(self):
        _set(self, "patch_size", check_int("DefenceConfig", "patch_size", self.patch_size, 1))
        _set(self, "n_components", check_int("DefenceConfig", "n_components", self.n_components, 1))
        _set(self, "n_nonzero_coefs",
             check_int("DefenceConfig", "n_nonzero_coefs", self.n_nonzero_coefs, 1, self.n_components))
        _set(self, "step", check_int("DefenceConfig", "step", self.step, 1))
        _set(self, "n_epochs", check_int("DefenceConfig", "n_epochs", self.n_epochs, 1))
        _set(self, "max_patches", check_int("DefenceConfig", "max_patches", self.max_patches, 1))
        check_choice("DefenceConfig", "method", self.method, DICTIONARY_METHODS)
        check_choice("DefenceConfig", "dictionary_source", self.dictionary_source, DICTIONARY_SOURCES)
        check_bool("DefenceConfig", "remove_mean", self.remove_mean)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole run: one data set, one model, several attacks, one defence."""

    name: str = "demo"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attacks: tuple[AttackConfig, ...] = (AttackConfig(),)
    defence: DefenceConfig = field(default_factory=DefenceConfig)
    device: str = "cpu"
    high_confidence_threshold: float = 0.9
    #: False: on the full data sets, a zoo defence with these parameters is used as shipped
    #: (SHA-256 checked) instead of fitted again; online dictionary learning amplifies float
    #: rounding, so a re-fit on another machine or OMP kernel is another dictionary
    refit_dictionary: bool = False

    def __post_init__(self):
        _set(self, "attacks", tuple(self.attacks))
        check_bool("ExperimentConfig", "refit_dictionary", self.refit_dictionary)
        if not self.attacks:
            raise ValueError("ExperimentConfig: attacks must name at least one attack; got none.")
        check_number("ExperimentConfig", "high_confidence_threshold", self.high_confidence_threshold, 0, 1)

    # --- plain records ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        """Build from a plain dict (e.g. ``config.json``); unknown keys at any level are errors."""
        d = dict(d)
        _reject_unknown("experiment config", d, cls)
        sub = {
            "data": DataConfig,
            "model": ModelConfig,
            "defence": DefenceConfig,
        }
        for key, sub_cls in sub.items():
            if key in d:
                _reject_unknown(f"{key} config", d[key], sub_cls)
                d[key] = sub_cls(**d[key])
        if "attacks" in d:
            attacks = []
            for a in d["attacks"]:
                _reject_unknown("attack config", a, AttackConfig)
                attacks.append(AttackConfig(**a))
            d["attacks"] = tuple(attacks)
        return cls(**d)

    def replace(self, **changes) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)


def _reject_unknown(where: str, d: Any, cls) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a mapping; got {type(d).__name__}.")
    valid = {f.name for f in dataclasses.fields(cls)}
    for key in d:
        if key not in valid:
            raise ValueError(f"unknown key {key!r} in {where}; valid keys: {', '.join(sorted(valid))}")


def config_key(*parts: Any, length: int = 16) -> str:
    """A short stable hash of plain-data parts (dicts, lists, numbers, strings): a cache key."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# --- experiment presets ------------------------------------------------------------------------
# DEMO: the bundled MNIST sample (5,000 train / 1,000 test), the paper's MLP trained for 10 epochs
# (~30 s), FGSM at the paper's MNIST eps, a 128-atom 7x7 dictionary with 1 atom per patch and no
# mean removal: on this sample that setting recovered most accuracy (76 % vs 62 % with mean
# removal, 37 % with k = 5; measured while writing the preset). About a minute on a 2-core CPU.
DEMO = ExperimentConfig(
    name="demo",
    data=DataConfig(dataset="mnist", source="sample"),
    model=ModelConfig(name="mlp", epochs=10, use_zoo=False),
    attacks=(AttackConfig(name="fgsm", params={"eps": PAPER_FGSM_EPS["mnist"]}),),
    defence=DefenceConfig(patch_size=7, n_components=128, n_nonzero_coefs=1, remove_mean=False,
                          max_patches=50_000),
)

# SMOKE: tiny synthetic images; seconds; used by tests of the pipeline and the CLI.
SMOKE = ExperimentConfig(
    name="smoke",
    data=DataConfig(dataset="mnist", source="synthetic", n_train=200, n_test=40),
    model=ModelConfig(name="mlp", epochs=2, use_zoo=False),
    attacks=(AttackConfig(name="fgsm", params={"eps": 0.1}),),
    defence=DefenceConfig(patch_size=5, n_components=32, n_nonzero_coefs=3, max_patches=5_000),
)

PRESETS = FrozenDict({"demo": DEMO, "smoke": SMOKE})


# --- reproduction presets ----------------------------------------------------------------------
@dataclass(frozen=True)
class ReproduceConfig:
    """One reproduction (``ddl reproduce``): which cells, which data, which attack and defence
    parameters. Mappings are keyed by data set."""

    name: str = "paper"
    datasets: tuple[str, ...] = DATASETS
    models: tuple[str, ...] = MODEL_NAMES
    source: str = "full"
    n_train: int | None = None
    n_test: int | None = None
    fgsm_eps: FrozenDict = field(default_factory=lambda: FrozenDict(PAPER_FGSM_EPS))
    jsma_params: FrozenDict = field(default_factory=lambda: FrozenDict({**PAPER_JSMA, "seed": 0}))
    jsma_n_images: FrozenDict = field(default_factory=lambda: FrozenDict({"mnist": 1000, "cifar10": 500}))
    fgsm_n_images: int | None = None
    eps_sweep: FrozenDict = field(default_factory=lambda: FrozenDict({
        "mnist": (0.05, 0.1, 0.2, 0.3), "cifar10": (2 / 255, 4 / 255, 8 / 255, 16 / 255)}))
    sweep_n_images: int = 500
    defence: FrozenDict = field(default_factory=lambda: _paper_defence("clean"))
    train_epochs: int = 1  # only when no zoo model matches
    high_confidence_threshold: float = 0.9
    #: the adaptive suite of ddl.robustness on the first N test images of every cell (0: off;
    #: skipped for a dictionary learned from the perturbed set, which depends on the attack)
    robustness_n_images: int = 0
    robustness_eps: FrozenDict = field(default_factory=lambda: FrozenDict({
        "mnist": (0.1, 0.2, 0.3), "cifar10": (2 / 255, 4 / 255, 8 / 255)}))
    robustness_attacks: tuple[str, ...] = ()  # () = ddl.robustness.DEFAULT_ATTACKS
    robustness_budgets: FrozenDict = field(default_factory=FrozenDict)  # evaluate_robustness kwargs
    #: the zoo variant of every classifier ("denoised": fine-tuned behind the tuned defence)
    variant: str = "standard"
    #: fit the dictionaries again rather than use the zoo's shipped ones (ExperimentConfig)
    refit_dictionary: bool = False

    def __post_init__(self):
        check_choice("ReproduceConfig", "variant", self.variant, ZOO_VARIANTS)
        check_bool("ReproduceConfig", "refit_dictionary", self.refit_dictionary)
        for name in ("datasets", "models", "robustness_attacks"):
            _set(self, name, tuple(getattr(self, name)))
        for name in ("fgsm_eps", "jsma_params", "jsma_n_images", "eps_sweep", "defence",
                     "robustness_eps", "robustness_budgets"):
            _set(self, name, _freeze(getattr(self, name)))
        _set(self, "robustness_n_images",
             check_int("ReproduceConfig", "robustness_n_images", self.robustness_n_images, 0))
        for key in self.robustness_budgets:
            check_choice("ReproduceConfig", "robustness_budgets key", key, ROBUSTNESS_BUDGETS)
        for d in self.datasets:
            check_choice("ReproduceConfig", "datasets", d, DATASETS)
        for m in self.models:
            check_choice("ReproduceConfig", "models", m, MODEL_NAMES)
        check_choice("ReproduceConfig", "source", self.source, SOURCES)

    def to_dict(self) -> dict:
        return _plain(self)


def _paper_defence(source: str) -> FrozenDict:
    return FrozenDict({
        "mnist": DefenceConfig(patch_size=7, n_components=256, n_nonzero_coefs=38, dictionary_source=source,
                               max_patches=PRESET_MAX_PATCHES),
        "cifar10": DefenceConfig(patch_size=8, n_components=256, n_nonzero_coefs=2, dictionary_source=source,
                                 max_patches=PRESET_MAX_PATCHES)})


#: evaluate_robustness keywords a preset may set
ROBUSTNESS_BUDGETS = ("pgd_steps", "pgd_restarts", "apgd_iter", "square_queries", "n_target_classes", "beta")
#: budgets of the adaptive suite in the paper/tuned presets (AutoAttack's APGD budget; Square below
#: AutoAttack's 5,000 queries to fit a CPU)
PAPER_ROBUSTNESS = {"pgd_steps": 50, "pgd_restarts": 1, "apgd_iter": 100, "square_queries": 1000}
PAPER = ReproduceConfig(name="paper", robustness_n_images=500, robustness_budgets=PAPER_ROBUSTNESS)
NOISY_DICTIONARY = dataclasses.replace(PAPER, name="noisy-dictionary", defence=_paper_defence("perturbed"))
QUICK = ReproduceConfig(
    name="quick", datasets=("mnist",), models=("mlp", "convnet"), source="sample",
    n_train=2000, n_test=200, jsma_n_images={"mnist": 10}, sweep_n_images=100,
    eps_sweep={"mnist": (0.1, 0.3)},
    defence={"mnist": DefenceConfig(patch_size=7, n_components=64, n_nonzero_coefs=1,
                                    remove_mean=False, max_patches=20_000)},
    robustness_n_images=12, robustness_eps={"mnist": (0.1, 0.3)},
    robustness_attacks=("pgd:oblivious", "pgd:soft", "square"),
    robustness_budgets={"pgd_steps": 5, "square_queries": 20})
REPRODUCE_PRESETS = FrozenDict({"paper": PAPER, "noisy-dictionary": NOISY_DICTIONARY, "quick": QUICK})
#: Every name ``get_preset`` accepts.
REPRODUCE_PRESET_NAMES = ("quick", "paper", "noisy-dictionary", "tuned", "denoised-training")

#: The adaptive suite of the ``denoised-training`` preset: that of results/robustness/ (the tuned
#: defence in front of the standard models: 50 images, PGD 20 steps, APGD 20 iterations, Square
#: 200 queries), so the two tables compare like with like.
DENOISED_TRAINING_ROBUSTNESS = {
    "n_images": 50,
    "attacks": ("pgd:oblivious", "pgd:bpda", "pgd:soft", "apgd-ce:soft", "square"),
    "budgets": {"pgd_steps": 20, "apgd_iter": 20, "square_queries": 200}}

#: The tuned defence shipped with ddl (written by ``ddl tune`` on the maintainers' machine).
TUNED_FILE = "tuned_defence.json"


def packaged_tuned_file() -> Path:
    return Path(str(resources.files("ddl") / "reference" / TUNED_FILE))


def load_tuned(path: str | Path | None = None) -> dict[str, DefenceConfig]:
    """The tuned defence of each data set in ``path`` (default: the one shipped with ddl), as
    written by ``ddl tune``: ``{dataset: DefenceConfig}``."""
    path = Path(path) if path is not None else packaged_tuned_file()
    if not path.is_file():
        raise BadFileError(f"load_tuned: no tuned defence at {path}; run `ddl tune` to write one.")
    try:
        tuned = json.loads(path.read_text())
        out = {d: DefenceConfig(**entry["best"]) for d, entry in tuned.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadFileError(f"load_tuned: {path} is not a tuned-defence file written by `ddl tune` "
                           f"({type(exc).__name__}: {exc}).") from None
    for d in out:
        check_choice(f"load_tuned({path})", "data set", d, DATASETS)
    return out


def tuned_preset(path: str | Path | None = None) -> ReproduceConfig:
    """The ``tuned`` ReproduceConfig: ``paper`` with the defence of :func:`load_tuned`."""
    tuned = load_tuned(path)
    return dataclasses.replace(PAPER, name="tuned", datasets=tuple(d for d in PAPER.datasets if d in tuned),
                               defence={**PAPER.defence, **tuned})


def denoised_training_preset(path: str | Path | None = None) -> ReproduceConfig:
    """The ``denoised-training`` ReproduceConfig: the ``tuned`` preset (same defence, the paper's
    protocol: attack the classifier, then denoise) on the zoo's ``denoised`` variants, the
    classifiers fine-tuned on that defence's reconstructions, with the adaptive suite of
    :data:`DENOISED_TRAINING_ROBUSTNESS`."""
    r = DENOISED_TRAINING_ROBUSTNESS
    return dataclasses.replace(tuned_preset(path), name="denoised-training", variant="denoised",
                               robustness_n_images=r["n_images"], robustness_attacks=r["attacks"],
                               robustness_budgets=r["budgets"])


def get_preset(name: str, *, tuned_file: str | Path | None = None) -> ReproduceConfig:
    """A reproduction preset by name; ``tuned`` and ``denoised-training`` read the tuned defence
    (``tuned_file``, default the one shipped with ddl)."""
    if name == "tuned":
        return tuned_preset(tuned_file)
    if name == "denoised-training":
        return denoised_training_preset(tuned_file)
    if name not in REPRODUCE_PRESETS:
        raise ValueError(f"get_preset: unknown preset {name!r}; choose one of: "
                         f"{', '.join(sorted(REPRODUCE_PRESET_NAMES))}")
    if tuned_file is not None:
        raise ValueError(f"get_preset: tuned_file is read only by the 'tuned' preset; got preset {name!r}.")
    return REPRODUCE_PRESETS[name]


def cell_config(rc: ReproduceConfig, dataset: str, model: str, *, data_dir=None, device="cpu",
                sweep: bool = False) -> ExperimentConfig:
    """The ExperimentConfig of one (data set, model) cell, or of its ε sweep."""
    if sweep:
        attacks = tuple(AttackConfig("fgsm", {"eps": e}, n_images=rc.sweep_n_images)
                        for e in rc.eps_sweep[dataset])
    else:
        attacks = (AttackConfig("fgsm", {"eps": rc.fgsm_eps[dataset]}, n_images=rc.fgsm_n_images),
                   AttackConfig("jsma", dict(rc.jsma_params), n_images=rc.jsma_n_images[dataset]))
    return ExperimentConfig(
        name=f"{rc.name}-{dataset}-{model}" + ("-sweep" if sweep else ""),
        data=DataConfig(dataset=dataset, source=rc.source, data_dir=data_dir,
                        n_train=rc.n_train, n_test=rc.n_test),
        model=ModelConfig(name=model, epochs=rc.train_epochs, use_zoo=True, variant=rc.variant),
        attacks=attacks, defence=rc.defence[dataset], device=device,
        high_confidence_threshold=rc.high_confidence_threshold,
        refit_dictionary=rc.refit_dictionary)
