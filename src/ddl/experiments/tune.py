"""Choose the denoiser's patch size and sparsity on a validation split (the ``tuned`` preset).

The paper suggests Bayesian selection of the number of atoms. Our search space is small (a few
patch sizes × a few sparsities), and for a fixed dictionary every sparsity can be scored from
one fit, so an exhaustive grid is cheaper and more thorough than a sequential optimiser here; it
needs no extra dependency (optuna) either.

Protocol (never the test set): the last ``n_val`` images of the *training* split are held out;
the dictionary is learned from patches of the other training images; the validation images are
attacked with FGSM (the preset's ε) on the data set's classifier; the score of a setting is the
mean of its denoised accuracy on the perturbed and on the clean validation images, so a setting
that "defends" by destroying benign accuracy does not win. Caveat, recorded in the output: zoo
classifiers were trained on the whole training split, validation images included, so their
clean validation accuracy is optimistic; the attack and the denoiser never see test images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ddl._io import atomic_write_json
from ddl.experiments.config import PRESET_MAX_PATCHES
from ddl.constants import PAPER_FGSM_EPS

SPACE = {
    "mnist": {"patch_size": (5, 7, 9), "remove_mean": (True, False), "n_nonzero_coefs": (1, 2, 3, 5, 8, 12)},
    "cifar10": {"patch_size": (4, 6, 8), "remove_mean": (True, False), "n_nonzero_coefs": (1, 2, 3, 5, 8, 12)},
}


def tune_defence(dataset: str, *, data_dir=None, model: str = "mlp", n_val: int = 1000,
                 n_components: int = 256, max_patches: int = PRESET_MAX_PATCHES, device: str = "cpu",
                 cache_dir: str | Path = "runs/tune/cache", progress: bool = True) -> dict:
    """Grid search of (patch_size, n_nonzero_coefs); returns the best setting and the whole log."""
    from ddl import metrics
    from ddl.experiments import pipeline
    from ddl.experiments.config import AttackConfig, DefenceConfig
    from ddl.defence import DictionaryDenoiser
    from ddl.models.train import predict

    x, y = _training_split(dataset, data_dir, n_val)
    x_fit, x_val, y_val = x[:-n_val], x[-n_val:], y[-n_val:]
    eps = PAPER_FGSM_EPS[dataset]
    cfg = _classifier_config(dataset, data_dir, model, device)
    clf, info = pipeline.get_model(cfg, x_fit, y[:-n_val], x_val, y_val, Path(cache_dir), progress=progress)
    t = time.perf_counter()
    x_adv = pipeline.run_attack(AttackConfig("fgsm", {"eps": eps}), clf, x_val, y_val)
    if progress:  # one flushed line per stage (readable in a log file)
        print(f"tune {dataset}: FGSM eps {eps} on {n_val} validation images in {time.perf_counter() - t:.1f} s",
              flush=True)
    log = []
    for p, rm in ((p, rm) for p in SPACE[dataset]["patch_size"] for rm in SPACE[dataset]["remove_mean"]):
        t = time.perf_counter()
        den = DictionaryDenoiser(patch_size=p, n_components=n_components, n_nonzero_coefs=1,
                                 remove_mean=rm, max_patches=max_patches, device=device).fit(x_fit)
        fit_seconds = time.perf_counter() - t
        if progress:
            print(f"tune {dataset}: dictionary patch {p}, remove_mean {rm} fitted in {fit_seconds:.1f} s",
                  flush=True)
        for k in SPACE[dataset]["n_nonzero_coefs"]:
            if k >= den.dictionary_.shape[1]:
                continue
            den.n_nonzero_coefs = k
            with torch.no_grad():
                acc_adv = metrics.accuracy(predict(clf, den.transform(x_adv), device=device), y_val)
                acc_clean = metrics.accuracy(predict(clf, den.transform(x_val), device=device), y_val)
            row = {"patch_size": p, "remove_mean": rm, "n_components": n_components, "n_nonzero_coefs": k,
                   "denoised": acc_adv, "denoised_clean": acc_clean,
                   "score": (acc_adv + acc_clean) / 2, "fit_seconds": fit_seconds}
            log.append(row)
            if progress:
                print(f"tune {dataset}: patch {p}, remove_mean {rm}, k {k}: denoised {acc_adv:.4f}, "
                      f"denoised clean {acc_clean:.4f}", flush=True)
    best = max(log, key=lambda r: r["score"])
    defence = DefenceConfig(patch_size=best["patch_size"], n_components=n_components,
                            n_nonzero_coefs=best["n_nonzero_coefs"], remove_mean=best["remove_mean"],
                            max_patches=max_patches)
    return {"dataset": dataset, "model": model, "model_info": {k: v for k, v in info.items() if k != "key"},
            "fgsm_eps": eps, "n_val": n_val, "validation": f"last {n_val} training images",
            "best": {"patch_size": defence.patch_size, "n_components": n_components,
                     "n_nonzero_coefs": defence.n_nonzero_coefs, "remove_mean": defence.remove_mean,
                     "max_patches": max_patches},
            "log": log}


def save_tuned(results: dict[str, dict], path: str | Path) -> Path:
    """Write the search results (one entry per data set) to ``path`` (a run folder's
    ``tuned_defence.json``; never into the installed package).

    Entries of data sets that are not in ``results`` are kept, so tuning one data set does not
    erase the other's. ``ddl reproduce --preset tuned --tuned-defence PATH`` reads the file.
    """
    path = Path(path)
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(results)
    return atomic_write_json(path, merged)


def plan_tuning(dataset: str, *, data_dir=None, model: str = "mlp", n_val: int = 1000,
                n_components: int = 256, max_patches: int = PRESET_MAX_PATCHES, device: str = "cpu") -> list[str]:
    """What :func:`tune_defence` would do, as lines of text (``ddl tune --dry-run``), after
    loading the training split and the zoo classifier as it does and checking ``n_val``; nothing
    is computed or written."""
    from ddl.experiments.reproduce import describe_model

    x, _ = _training_split(dataset, data_dir, n_val)
    cfg = _classifier_config(dataset, data_dir, model, device)
    space = SPACE[dataset]
    n_fits = len(space["patch_size"]) * len(space["remove_mean"])
    return [f"{dataset}: validation = the last {n_val} of {len(x)} training images, FGSM ε "
            f"{PAPER_FGSM_EPS[dataset]:.4g} on classifier {describe_model(cfg)}",
            f"  {n_fits} dictionaries ({n_components} atoms, {max_patches} patches; patch size "
            f"{', '.join(map(str, space['patch_size']))} × remove_mean yes/no), each scored at k = "
            f"{', '.join(map(str, space['n_nonzero_coefs']))}"]


def _training_split(dataset: str, data_dir, n_val: int):
    """The training split (x, y) of which the last ``n_val`` images are the validation set."""
    from ddl.data import load_dataset

    x, y = load_dataset(dataset, "train", data_dir=data_dir)
    if not 0 < n_val < len(x):
        raise ValueError(f"tune_defence: n_val must be in [1, {len(x) - 1}]; got {n_val}.")
    return x, y


def _classifier_config(dataset: str, data_dir, model: str, device: str):
    """The ExperimentConfig whose classifier (``pipeline.get_model``) is attacked on the validation set."""
    from ddl.experiments.config import DataConfig, ExperimentConfig, ModelConfig

    return ExperimentConfig(name=f"tune-{dataset}", data=DataConfig(dataset=dataset, source="full", data_dir=data_dir),
                            model=ModelConfig(name=model), device=device)
