"""Fit the ``tuned`` and ``paper`` dictionary defences on the full clean training sets and publish
them to src/ddl/zoo/ (``defence_<name>_<dataset>.pt`` + a ``"defences"`` record in index.json).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python tools/fit_zoo_defences.py [--data-dir ../shared/data]
        [--datasets mnist cifar10] [--names tuned paper] [--threads 1]

Each dictionary is exactly ``DictionaryDenoiser(**preset_params(dataset, name)).fit(x_train)`` on
the whole clean training set (60,000 MNIST / 50,000 CIFAR-10 images; ``fit``
draws ``max_patches`` patch positions from it, seeded by ``random_state``), the same call
``ddl.experiments.robustness_run.build_defence`` makes, saved with ``DictionaryDenoiser.save`` (float32, a
weights-only dict). The record holds the parameters, the SHA-256 of the file, the fit's seconds
and thread count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def preset_params(dataset: str, name: str) -> dict:
    """The DictionaryDenoiser parameters of a preset's defence: ``tuned`` from
    ``ddl.experiments.config.load_tuned()``, ``paper`` from ``ddl.experiments.config.PAPER.defence`` (the parameters
    ``ddl.experiments.robustness_run.build_defence`` fits with)."""
    import dataclasses

    from ddl.experiments import config

    cfg = config.load_tuned()[dataset] if name == "tuned" else config.PAPER.defence[dataset]
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "dictionary_source"}


def main(argv=None) -> int:
    import ddl
    from ddl import zoo
    from ddl.data import load_dataset
    from ddl.defence import DictionaryDenoiser
    from ddl.models.checkpoint import sha256_file
    from ddl.sparse.omp import kernel_name

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"])
    ap.add_argument("--names", nargs="+", default=list(zoo.DEFENCE_NAMES), choices=zoo.DEFENCE_NAMES)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for dataset in args.datasets:
        x_train, _ = load_dataset(dataset, "train", data_dir=args.data_dir)
        for name in args.names:
            params = preset_params(dataset, name)
            t0 = time.perf_counter()
            den = DictionaryDenoiser(**params).fit(x_train)
            seconds = time.perf_counter() - t0
            fname = zoo.defence_file_name(dataset, name)
            path = Path(zoo.ZOO_DIR) / fname
            den.save(path)
            zoo.update_defence_index({
                "name": name, "dataset": dataset, "path": fname, "sha256": sha256_file(path),
                "params": params, "dictionary_shape": list(den.dictionary_.shape),
                "n_train_images": int(len(x_train)), "n_training_patches": den.n_training_patches_,
                "fit_seconds": round(seconds, 1), "threads": torch.get_num_threads(), "omp_kernel": kernel_name(),
                "size_bytes": path.stat().st_size, "ddl_version": ddl.__version__,
            })
            print(f"{name}/{dataset}: dictionary {tuple(den.dictionary_.shape)} from "
                  f"{den.n_training_patches_} patches in {seconds:.1f} s -> {path} "
                  f"({path.stat().st_size / 1e3:.0f} kB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
