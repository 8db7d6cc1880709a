"""``ddl reproduce``: the paper's grid (data set × model × attack), the ε sweep, figures, report.

The grid runs ``pipeline.run_experiment`` once per (data set, model) with both attacks, all
sharing one cache folder, so the dictionary of a data set is learned once, attacked sets are
computed once per model, and the denoised clean images once per data set. An interrupted run
resumes from the cache; a second run with the same preset recomputes nothing.

Presets (``PRESETS``):

- ``quick``: the bundled MNIST sample, MLP + ConvNet trained for one epoch, small subsets; a
  minute or two on a CPU. CI runs it end to end.
- ``paper``: the paper's protocol as DESIGN.md §4 reads it: zoo models, dictionary from clean
  training patches, OMP sparsity 38 atoms for MNIST and 2 for CIFAR-10, FGSM on the full test
  sets, JSMA on the first ``jsma_n_images`` test images (the same for every model).
- ``noisy-dictionary``: as ``paper`` but the dictionary is learned from the perturbed test
  patches (the paper's other option).
- ``tuned``: as ``paper`` with the defence parameters chosen by ``ddl.tune`` on a validation
  split of the training set (never the test set); see ``TUNED_DEFENCE``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ddl._io import atomic_write_bytes, atomic_write_json
from ddl.config import AttackConfig, DataConfig, DefenceConfig, ExperimentConfig, ModelConfig

ALL_MODELS = ("mlp", "convnet", "autoencoder", "resnet", "hrnn")


@dataclass(frozen=True)
class ReproduceConfig:
    """One reproduction: which cells, which data, which attack and defence parameters."""

    name: str = "paper"
    datasets: tuple[str, ...] = ("mnist", "cifar10")
    models: tuple[str, ...] = ALL_MODELS
    source: str = "full"
    n_train: int | None = None
    n_test: int | None = None
    fgsm_eps: dict = field(default_factory=lambda: {"mnist": 0.1, "cifar10": 8 / 255})
    jsma_params: dict = field(default_factory=lambda: {"theta": 1.0, "gamma": 0.1, "seed": 0})
    jsma_n_images: dict = field(default_factory=lambda: {"mnist": 1000, "cifar10": 500})
    fgsm_n_images: int | None = None
    eps_sweep: dict = field(default_factory=lambda: {
        "mnist": (0.05, 0.1, 0.2, 0.3), "cifar10": (2 / 255, 4 / 255, 8 / 255, 16 / 255)})
    sweep_n_images: int = 500
    defence: dict = field(default_factory=lambda: {
        "mnist": DefenceConfig(patch_size=7, n_components=256, n_nonzero_coefs=38),
        "cifar10": DefenceConfig(patch_size=8, n_components=256, n_nonzero_coefs=2)})
    train_epochs: int = 1  # only when no zoo model matches
    high_confidence_threshold: float = 0.9

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["defence"] = {k: dataclasses.asdict(v) for k, v in self.defence.items()}
        return d


def _paper_defence(source: str) -> dict:
    return {"mnist": DefenceConfig(patch_size=7, n_components=256, n_nonzero_coefs=38,
                                   dictionary_source=source),
            "cifar10": DefenceConfig(patch_size=8, n_components=256, n_nonzero_coefs=2,
                                     dictionary_source=source)}


PAPER = ReproduceConfig(name="paper")
NOISY_DICTIONARY = dataclasses.replace(PAPER, name="noisy-dictionary", defence=_paper_defence("perturbed"))
QUICK = ReproduceConfig(
    name="quick", datasets=("mnist",), models=("mlp", "convnet"), source="sample",
    n_train=2000, n_test=200, jsma_n_images={"mnist": 10}, sweep_n_images=100,
    eps_sweep={"mnist": (0.1, 0.3)},
    defence={"mnist": DefenceConfig(patch_size=7, n_components=64, n_nonzero_coefs=1,
                                    remove_mean=False, max_patches=20_000)})
PRESETS = {"paper": PAPER, "noisy-dictionary": NOISY_DICTIONARY, "quick": QUICK}


def get_preset(name: str) -> ReproduceConfig:
    """A reproduction preset by name; ``tuned`` reads the tuned defence from ``ddl.tune``."""
    if name == "tuned":
        from ddl.tune import tuned_preset

        return tuned_preset()
    if name not in PRESETS:
        raise ValueError(f"get_preset: unknown preset {name!r}; choose one of: "
                         f"{', '.join(sorted([*PRESETS, 'tuned']))}")
    return PRESETS[name]


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
        model=ModelConfig(name=model, epochs=rc.train_epochs, use_zoo=True),
        attacks=attacks, defence=rc.defence[dataset], device=device,
        high_confidence_threshold=rc.high_confidence_threshold)


def reproduce(rc: ReproduceConfig, run_dir: str | Path, *, data_dir=None, device="cpu",
              figures: bool = True, sweep: bool = True, progress: bool = True) -> dict:
    """Run the grid and the ε sweep (``sweep=False``: the grid only), draw the figures, write
    results.json/CSV and the report."""
    from ddl import pipeline

    run_dir = Path(run_dir)
    cache = run_dir / "cache"
    atomic_write_json(run_dir / "reproduce_config.json", rc.to_dict())
    do_sweep, records, sweep, seconds = sweep, [], [], {}
    # main cells of every model first, ε sweeps after: an interrupted run has the tables first
    for is_sweep in (False, True) if do_sweep else (False,):
        for dataset in rc.datasets:
            for model in rc.models:
                cfg = cell_config(rc, dataset, model, data_dir=data_dir, device=device, sweep=is_sweep)
                t = time.perf_counter()
                out = pipeline.run_experiment(cfg, run_dir / "cells" / cfg.name, cache_dir=cache,
                                              progress=progress)
                seconds[cfg.name] = time.perf_counter() - t
                for r in out["records"]:
                    r["files"] = {k: f"cells/{cfg.name}/{v}" for k, v in r.get("files", {}).items()}
                (sweep if is_sweep else records).extend(out["records"])
                results = _write_results(rc, run_dir, records, sweep, seconds, out.get("machine", {}))
    if figures:
        from ddl.figures import draw_figures

        t = time.perf_counter()
        draw_figures(rc, results, run_dir, data_dir=data_dir, device=device)
        seconds["figures"] = time.perf_counter() - t
        results = _write_results(rc, run_dir, records, sweep, seconds, results["machine"])
    return results


def _write_results(rc, run_dir: Path, records, sweep, seconds, machine) -> dict:
    """results.json, results.csv and the report, rewritten after every cell (partial runs show)."""
    from ddl.report import write_report

    results = {"ddl_version": _version(), "config": {"preset": rc.name, "name": rc.name, **rc.to_dict()},
               "records": records, "sweep": sweep, "seconds": seconds, "machine": machine}
    atomic_write_json(run_dir / "results.json", results)
    write_csv(run_dir / "results.csv", records + sweep)
    write_report(run_dir)
    return results


def _version() -> str:
    from ddl import __version__

    return __version__


CSV_FIELDS = ("dataset", "model", "attack", "attack_params", "n_images", "clean", "perturbed",
              "denoised", "denoised_clean", "high_conf_n", "high_conf_denoised", "psnr_perturbed",
              "psnr_denoised", "ssim_perturbed", "ssim_denoised")


def write_csv(path: Path, records: list[dict]) -> Path:
    """One line per record, the numbers of the tables (fractions, not percent)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_FIELDS)
    for r in records:
        a, hc = r["accuracy"], r["accuracy"]["high_confidence"]
        w.writerow([r["dataset"], r["model"], r["attack"], json.dumps(r["attack_params"], sort_keys=True),
                    r["n_images"], a["clean"], a["perturbed"], a["denoised"], a["denoised_clean"],
                    hc["n_images"], hc["denoised"], r["psnr"]["perturbed"], r["psnr"]["denoised"],
                    r["ssim"]["perturbed"], r["ssim"]["denoised"]])
    return atomic_write_bytes(path, buf.getvalue().encode())
