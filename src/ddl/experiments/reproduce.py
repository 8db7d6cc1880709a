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


def _cell(item: tuple[bool, str, str], *, rc: ReproduceConfig, run_dir: str, data_dir, device: str,
          progress: bool, strict: bool) -> dict:
    """One cell (``item`` = (is_sweep, data set, model)) as a unit of :class:`ddl._parallel.Engine`:
    ``pipeline.run_experiment`` into the run folder's shared cache, whose lock the driver holds."""
    from ddl.experiments import pipeline

    is_sweep, dataset, model = item
    cfg = cell_config(rc, dataset, model, data_dir=data_dir, device=device, sweep=is_sweep)
    t = time.perf_counter()
    out = pipeline.run_experiment(cfg, Path(run_dir) / "cells" / cfg.name, cache_dir=Path(run_dir) / "cache",
                                  progress=progress, strict=strict, lock_cache=False)
    out["wall_seconds"] = time.perf_counter() - t
    return out


def _model_unit(item: tuple[str, str], *, rc: ReproduceConfig, run_dir: str, data_dir, device: str,
                progress: bool, strict: bool) -> str:
    """Train (or load) the classifier of (data set, model) into the shared cache; its key."""
    from ddl.experiments import pipeline

    dataset, model = item
    cfg = cell_config(rc, dataset, model, data_dir=data_dir, device=device)
    x_train, y_train, x_test, y_test = pipeline.load_data(cfg)
    _, info = pipeline.get_model(cfg, x_train, y_train, x_test, y_test, Path(run_dir) / "cache",
                                 progress=progress, strict=strict)
    return info["key"]


def _run_cells_on(engine, rc: ReproduceConfig, run_dir: Path, cells: list, *, data_dir, device, progress,
                  strict) -> list[dict]:
    """Every cell's output, in the order of ``cells``, computed on ``engine`` in two waves: the
    first model's main cell of each data set (it fits the dictionary and denoises the test set)
    beside the training of every other classifier, then every other cell (attacks and
    evaluations, reading the classifiers and dictionaries from the cache). A stage two cells
    share is so computed once."""
    shared = {"rc": rc, "run_dir": str(run_dir), "data_dir": data_dir, "device": device,
              "progress": progress, "strict": strict}
    first = {(False, d, rc.models[0]) for d in rc.datasets}
    wave1 = [c for c in cells if c in first]
    models = [(d, m) for d in rc.datasets for m in rc.models[1:]]
    outs: dict[tuple, dict] = {}
    units = [("cell", c) for c in wave1] + [("model", m) for m in models]
    for i, out in engine.map(_unit, units, shared=shared):
        if units[i][0] == "cell":
            outs[units[i][1]] = out
    rest = [c for c in cells if c not in outs]
    for i, out in engine.map(_cell, rest, shared=shared):
        outs[rest[i]] = out
    return [outs[c] for c in cells]


def _unit(item, **shared):
    kind, what = item
    return (_cell if kind == "cell" else _model_unit)(what, **shared)


def reproduce(rc: ReproduceConfig, run_dir: str | Path, *, data_dir=None, device="cpu",
              figures: bool = True, sweep: bool = True, progress: bool = True,
              strict: bool = False, wait: bool = True, engine=None) -> dict:
    """Run the grid and the ε sweep (``sweep=False``: the grid only), draw the figures, write
    results.json/CSV and the report.

    One process at a time writes ``run_dir`` (its lock is held throughout; ``wait=False`` refuses
    instead of waiting for another run). ``strict``: a cache entry that fails verification stops
    the run with ``CacheError`` instead of being recomputed. Every stage is a pure function of its
    cache key, so an interrupted, resumed, reordered or repeated run reports the same numbers; a
    run with nothing left to compute rewrites no file (it works on a read-only run folder).

    ``engine`` (a parallel :class:`ddl._parallel.Engine`): the cells run as Ray tasks on a
    filesystem the workers share (the run folder), in two waves (:func:`_run_cells_on`), and the
    results are assembled here in the serial order: the same files as a serial run with the same
    torch threads per cell (times, and which cell says it computed a shared stage, aside). The
    adaptive suite's units and the figures run after, as in a serial run."""
    from ddl.experiments import pipeline
    from ddl._io import lock_run_folder

    run_dir = Path(run_dir)
    cache = run_dir / "cache"
    with lock_run_folder(run_dir, wait=wait):
        atomic_write_json(run_dir / "reproduce_config.json", rc.to_dict())
        do_sweep, records, sweep, seconds, machine = sweep, [], [], {}, {}
        # main cells of every model first, ε sweeps after: an interrupted run has the tables first
        cells = [(is_sweep, dataset, model) for is_sweep in ((False, True) if do_sweep else (False,))
                 for dataset in rc.datasets for model in rc.models]
        parallel = None
        if engine is not None and engine.parallel:
            with lock_run_folder(cache, wait=wait):
                parallel = iter(_run_cells_on(engine, rc, run_dir, cells, data_dir=data_dir, device=device,
                                              progress=progress, strict=strict))
        for is_sweep, dataset, model in cells:
            cfg = cell_config(rc, dataset, model, data_dir=data_dir, device=device, sweep=is_sweep)
            t = time.perf_counter()
            if parallel is not None:
                out = next(parallel)
                seconds[cfg.name] = out.pop("wall_seconds")
            else:
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
                        progress=progress, strict=strict,
                        engine=engine if engine is not None and engine.parallel else None))
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


def plan(rc: ReproduceConfig, run_dir: str | Path, *, data_dir=None, device="cpu",
         figures: bool = True, sweep: bool = True) -> list[str]:
    """What :func:`reproduce` would do, as lines of text, after loading what it needs
    (``ddl reproduce --dry-run``): the data sets, the zoo classifiers and the shipped
    dictionaries, each read and checked as the run reads it (SHA-256 included), so a missing or
    damaged input fails here, in seconds, with the run's own error. Nothing is computed or written.
    """
    from ddl.experiments import pipeline

    lines = [f"dry run of --preset {rc.name}: nothing is computed or written; the run would write "
             f"{Path(run_dir)} (cache in {Path(run_dir) / 'cache'})"]
    for dataset in rc.datasets:
        cfg = cell_config(rc, dataset, rc.models[0], data_dir=data_dir, device=device)
        x_train, _, x_test, _ = pipeline.load_data(cfg)
        where = {"sample": "the sample bundled with ddl", "synthetic": "synthetic"}.get(rc.source)
        if where is None:
            from ddl.data.download import resolve_data_dir

            where = f"from {resolve_data_dir(data_dir)}"
        lines.append(f"{dataset}: {len(x_train)} training and {len(x_test)} test images ({where})")
        for model in rc.models:
            cfg = cell_config(rc, dataset, model, data_dir=data_dir, device=device)
            lines.append(f"  {model}: classifier {describe_model(cfg)}; dictionary {_describe_dictionary(cfg)}")
        fgsm, jsma = cell_config(rc, dataset, rc.models[0]).attacks
        lines.append(f"  attacks: FGSM {dict(fgsm.params)} on {_n(fgsm.n_images, len(x_test))} test images, "
                     f"JSMA {dict(jsma.params)} on {_n(jsma.n_images, len(x_test))}")
        if sweep:
            eps = " ".join(f"{e:.4g}" for e in rc.eps_sweep[dataset])
            lines.append(f"  FGSM ε sweep: {eps} on {_n(rc.sweep_n_images, len(x_test))} test images")
        if rc.robustness_n_images and all(rc.defence[d].dictionary_source == "clean" for d in rc.datasets):
            from ddl.robustness import DEFAULT_ATTACKS

            eps = " ".join(f"{e:.4g}" for e in rc.robustness_eps[dataset])
            lines.append(f"  adaptive suite: first {rc.robustness_n_images} test images, ε {eps}, "
                         f"{' '.join(rc.robustness_attacks or DEFAULT_ATTACKS)}, budgets "
                         f"{dict(rc.robustness_budgets) or 'default'}")
    lines.append("figures: " + ("drawn from the saved arrays" if figures else "skipped (--no-figures)"))
    return lines


def _n(n: int | None, have: int) -> int:
    return have if n is None else min(n, have)


def describe_model(cfg) -> str:
    """The classifier of ``cfg`` (an ExperimentConfig) in words, loaded and SHA-256 checked when
    it comes from the zoo; the run's own rule (``pipeline.get_model``), for dry runs."""
    from ddl import zoo

    m, d = cfg.model, cfg.data
    entry = zoo.find(m.name, d.dataset, m.variant) if m.use_zoo and d.source == "full" else None
    if entry is not None:
        zoo.load(m.name, d.dataset, variant=m.variant, device=cfg.device)
        return f"zoo {entry.path.name} ({m.variant})"
    if m.variant != "standard":  # what pipeline.get_model refuses
        raise ValueError(f"no {m.variant!r} variant of {m.name!r} for {d.dataset!r} ({d.source} data) "
                         f"in the zoo; the pipeline trains only standard models")
    return f"trained for {m.epochs} epoch(s)"


def _describe_dictionary(cfg) -> str:
    """The dictionary a cell uses: the zoo's shipped one (loaded, SHA-256 checked) or a fit."""
    from ddl import zoo
    from ddl.experiments.pipeline import _trained_behind  # the run's own rule, not a copy of it

    p = cfg.defence
    shape = f"{p.patch_size}×{p.patch_size}, {p.n_components} atoms, k {p.n_nonzero_coefs}"
    shipped = _trained_behind(cfg)
    if shipped is not None:
        zoo.load_defence(cfg.data.dataset, shipped["name"], device=cfg.device)
        return f"zoo defence {shipped['name']!r} ({shape})"
    return f"fitted on the {p.dictionary_source} {'training' if p.dictionary_source == 'clean' else 'test'} " \
           f"patches ({shape})"


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
