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
- ``tuned``: as ``paper`` with the defence parameters chosen by ``ddl.experiments.tune`` on a validation
  split of the training set (never the test set); see ``TUNED_DEFENCE``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ddl._io import atomic_write_bytes, atomic_write_json
# The presets live in ddl.experiments.config (which imports no application module); re-exported here.
from ddl.experiments.config import (NOISY_DICTIONARY, PAPER, QUICK, ReproduceConfig, cell_config,  # noqa: F401
                        get_preset)
from ddl.experiments.config import REPRODUCE_PRESETS as PRESETS  # noqa: F401
from ddl.constants import MODEL_NAMES as ALL_MODELS  # noqa: F401


def reproduce(rc: ReproduceConfig, run_dir: str | Path, *, data_dir=None, device="cpu",
              figures: bool = True, sweep: bool = True, progress: bool = True,
              strict: bool = False, wait: bool = True) -> dict:
    """Run the grid and the ε sweep (``sweep=False``: the grid only), draw the figures, write
    results.json/CSV and the report.

    One process at a time writes ``run_dir`` (its lock is held throughout; ``wait=False`` refuses
    instead of waiting for another run). ``strict``: a cache entry that fails verification stops
    the run with ``CacheError`` instead of being recomputed. Every stage is a pure function of its
    cache key, so an interrupted, resumed, reordered or repeated run reports the same numbers; a
    run with nothing left to compute rewrites no file (it works on a read-only run folder)."""
    from ddl.experiments import pipeline
    from ddl._io import lock_run_folder

    run_dir = Path(run_dir)
    cache = run_dir / "cache"
    with lock_run_folder(run_dir, wait=wait):
        atomic_write_json(run_dir / "reproduce_config.json", rc.to_dict())
        do_sweep, records, sweep, seconds, machine = sweep, [], [], {}, {}
        # main cells of every model first, ε sweeps after: an interrupted run has the tables first
        for is_sweep in (False, True) if do_sweep else (False,):
            for dataset in rc.datasets:
                for model in rc.models:
                    cfg = cell_config(rc, dataset, model, data_dir=data_dir, device=device, sweep=is_sweep)
                    t = time.perf_counter()
                    out = pipeline.run_experiment(cfg, run_dir / "cells" / cfg.name, cache_dir=cache,
                                                  progress=progress, strict=strict)
                    seconds[cfg.name] = time.perf_counter() - t
                    machine = out.get("machine", {})
                    for r in out["records"]:
                        r["files"] = {k: f"cells/{cfg.name}/{v}" for k, v in r.get("files", {}).items()}
                    (sweep if is_sweep else records).extend(out["records"])
                    if pipeline.computed_something(out["records"]):
                        # partial results after each cell that computed something (a run that
                        # computes nothing writes once, at the end, and only what changed)
                        _write_results(rc, run_dir, records, sweep, seconds, machine)
        results = _write_results(rc, run_dir, records, sweep, seconds, machine)
        robustness = []
        if rc.robustness_n_images and all(rc.defence[d].dictionary_source == "clean" for d in rc.datasets):
            # the adaptive suite through the defence, after the tables (an interrupted run has
            # the paper's tables first); cached per (attack, eps), so it resumes
            t = time.perf_counter()
            for dataset in rc.datasets:
                for model in rc.models:
                    cfg = cell_config(rc, dataset, model, data_dir=data_dir, device=device, sweep=False)
                    robustness.append(pipeline.run_robustness_cell(
                        cfg, cache, n_images=rc.robustness_n_images, eps=rc.robustness_eps[dataset],
                        attacks=rc.robustness_attacks, budgets=rc.robustness_budgets,
                        progress=progress, strict=strict))
            seconds["robustness"] = time.perf_counter() - t
            results = _write_results(rc, run_dir, records, sweep, seconds, machine, robustness)
        if figures:
            from ddl.experiments.figure_data import save_figure_arrays
            from ddl.experiments.figures import draw_figures

            t = time.perf_counter()
            save_figure_arrays(rc, results, run_dir, data_dir=data_dir, device=device)
            draw_figures(run_dir, results)
            seconds["figures"] = time.perf_counter() - t
            results = _write_results(rc, run_dir, records, sweep, seconds, machine, robustness)
    return results


def _write_results(rc, run_dir: Path, records, sweep, seconds, machine, robustness=()) -> dict:
    """results.json, results.csv and the report (each rewritten only when its content changed)."""
    from ddl.experiments.pipeline import write_results
    from ddl.experiments.report import write_report

    results = {"ddl_version": _version(), "config": {"preset": rc.name, "name": rc.name, **rc.to_dict()},
               "records": records, "sweep": sweep, "seconds": seconds, "machine": machine}
    if robustness:
        results["robustness"] = list(robustness)
    write_results(run_dir / "results.json", results)
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
