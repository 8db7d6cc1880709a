"""Fill the compute-time table of a committed run with the stage times of a recompute (issue 10,
item 12).

The MNIST cells of ``results/paper`` and ``results/tuned`` were computed by a ddl that did not
record stage times, so their rows of the report's compute-time table were empty. This script takes
a second run folder that recomputed those cells with today's ddl (same preset, same data; stage
times recorded) and, for every committed record without ``computed_seconds``, copies the
recompute's ``computed_seconds`` **only if the recompute is the same computation**: same defence
parameters, identical clean predictions, and perturbed, denoised and denoised-clean predictions
that agree with the committed cell's on at least ``--min-agreement`` of the images (default 99 %,
the rule of ``tools/resample_pixel_figures.py``: a gradient summed in another order on another
thread count flips the sign of near-zero FGSM components, which moved 1 to 15 images of 10,000 in
the recomputed MNIST cells; another ε, model or dictionary moves hundreds). The copied times are
labelled (``computed_seconds_source``: when, with what ddl, torch and threads;
``computed_seconds_agreement``: the least agreement over the four kinds), and the report says so.
Anything that does not match is left
empty and listed; nothing else in ``results.json`` changes. Then the report is re-rendered.

    DDL_OMP_NATIVE=0 python tools/fill_stage_times.py results/tuned runs/mnist-times-tuned \
        --recompute mnist --data-dir ../shared/data --threads 1
    DDL_OMP_NATIVE=0 python tools/fill_stage_times.py results/paper runs/mnist-times-paper \
        --recompute mnist --data-dir ../shared/data --threads 1

``--recompute DATASET...`` first runs the committed run's preset on those data sets into the
second folder (its cells only: no ε sweep, no figures, no adaptive suite; resumable like any run
folder), then fills.

``DDL_OMP_NATIVE=0``: the committed runs used the torch OMP kernel; a dictionary fitted with the C
kernel is a different fit (see results/tuned's README), so its accuracies would not match.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from ddl._io import safe_torch_load
from ddl._validate import check_number
from ddl.experiments.pipeline import write_results
from ddl.experiments.report import write_report


def _cell(r: dict) -> tuple:
    return r["dataset"], r["model"], r["attack"], json.dumps(r["attack_params"], sort_keys=True), r["n_images"]


KINDS = ("clean", "perturbed", "denoised", "denoised_clean")


def _omp_kernel(run_dir: Path) -> str:
    """The OMP kernel(s) that fitted the run's dictionaries, from their cache entry records
    (``torch``, ``native``; ``?`` when none says)."""
    kernels = set()
    for rec in sorted((run_dir / "cache").glob("dictionary-*.entry.json")):
        kernels.add(json.loads(rec.read_text()).get("inputs", {}).get("omp_kernel", "?"))
    return "/".join(sorted(kernels)) or "?"


def _agreement(committed: Path, r: dict, recompute: Path, twin: dict) -> dict[str, float]:
    """Fraction of images on which the two cells' saved predictions agree, per kind."""
    a = safe_torch_load(committed / r["files"]["arrays"])
    b = safe_torch_load(recompute / twin["files"]["arrays"])
    return {k: float((a[f"pred_{k}"] == b[f"pred_{k}"]).double().mean()) for k in KINDS}


def fill(committed: Path, recompute: Path, min_agreement: float = 0.99) -> tuple[list[str], list[str]]:
    """Copy stage times into ``committed/results.json``; return (filled cells, refused cells)."""
    min_agreement = check_number("fill_stage_times", "min_agreement", min_agreement, 0, 1)
    results = json.loads((committed / "results.json").read_text())
    again = json.loads((recompute / "results.json").read_text())
    ours, theirs = results["config"].get("name"), again["config"].get("name")
    if ours != theirs:
        raise ValueError(f"fill_stage_times: the recompute {recompute} ran preset {theirs!r}, the committed run "
                         f"{committed} preset {ours!r}; recompute with the same preset.")
    by_cell = {_cell(r): r for r in again["records"]}
    filled, refused = [], []
    machine = again.get("machine", {})
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    kernel = _omp_kernel(recompute)
    for r in results["records"]:
        if any(v is not None for v in (r.get("computed_seconds") or {}).values()):
            continue
        name = "/".join(map(str, _cell(r)[:3]))
        twin = by_cell.get(_cell(r))
        if twin is None:
            refused.append(f"{name}: not in the recompute")
            continue
        if not any(v is not None for v in (twin.get("computed_seconds") or {}).values()):
            refused.append(f"{name}: the recompute recorded no stage times (its stages were read from a cache "
                           f"written without them)")
            continue
        if twin["defence_params"] != r["defence_params"]:
            refused.append(f"{name}: the recompute used other defence parameters ({twin['defence_params']})")
            continue
        agreement = _agreement(committed, r, recompute, twin)
        if agreement["clean"] < 1 or min(agreement.values()) < min_agreement:
            refused.append(f"{name}: the recompute differs (predictions agree on "
                           f"{', '.join(f'{k} {v:.2%}' for k, v in agreement.items())})")
            continue
        r["computed_seconds"] = twin["computed_seconds"]
        r["computed_seconds_source"] = (f"measured by recomputing the cells (tools/fill_stage_times.py "
                                        f"--recompute; ddl {again.get('ddl_version', '?')}, torch "
                                        f"{machine.get('torch', '?')}, {machine.get('threads', '?')} thread(s), "
                                        f"{machine.get('device', '?')}, OMP kernel {kernel}; filled in on {date})")
        r["computed_seconds_agreement"] = min(agreement.values())
        filled.append(name)
    if filled:
        write_results(committed / "results.json", results)
        write_report(committed)
    return filled, refused


def recompute(committed: Path, run_dir: Path, datasets: list[str], data_dir: str | None) -> None:
    """The committed run's preset, restricted to ``datasets``, into ``run_dir`` (cells only)."""
    import dataclasses

    from ddl.experiments.config import get_preset
    from ddl.experiments.reproduce import reproduce

    name = json.loads((committed / "results.json").read_text())["config"]["name"]
    rc = dataclasses.replace(get_preset(name), datasets=tuple(datasets), robustness_n_images=0)
    reproduce(rc, run_dir, data_dir=data_dir, figures=False, sweep=False, progress=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("committed", type=Path, help="the committed run folder (results/tuned)")
    ap.add_argument("recompute_run", type=Path, help="the run folder that recomputed its cells")
    ap.add_argument("--recompute", nargs="+", metavar="DATASET", help="recompute these data sets' cells first")
    ap.add_argument("--data-dir", help="folder holding mnist/ and cifar-10-batches-py/ (with --recompute)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (with --recompute)")
    ap.add_argument("--min-agreement", type=float, default=0.99,
                    help="least fraction of images with the same prediction, per kind (default: 0.99)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.recompute:
        recompute(args.committed, args.recompute_run, args.recompute, args.data_dir)
    try:
        filled, refused = fill(args.committed, args.recompute_run, args.min_agreement)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"filled {len(filled)} cell(s): {', '.join(filled) or '-'}")
    for line in refused:
        print(f"left empty: {line}")
    return 0 if not refused else 1


if __name__ == "__main__":
    sys.exit(main())
