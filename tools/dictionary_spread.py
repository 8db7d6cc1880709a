"""The spread of dictionary fits: one committed cell re-run with several dictionary seeds.

Online dictionary learning amplifies float rounding (another machine or OMP kernel gives another
dictionary), and its seed picks the initial atoms and the mini-batch order: a difference between
two defences smaller than the fit-to-fit spread is noise. For one (data set, model) cell of a
preset this fits the preset's dictionary with ``random_state`` = each seed (re-fit, not the
shipped one), denoises the cell's FGSM images and the clean test set, and reports the accuracies
per seed, their mean and standard deviation, beside the shipped dictionary's single fit (the
committed number). The FGSM images and the model are the pipeline's (cached in --run-dir).

    .venv/bin/python tools/dictionary_spread.py --dataset mnist --model convnet --seeds 0 1 2 3 4 \\
        --run-dir runs/tuned --out results/tuned/dictionary_spread-mnist-convnet.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tuned")
    ap.add_argument("--dataset", required=True, choices=["mnist", "cifar10"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--run-dir", default="runs/tuned")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from ddl._io import atomic_write_json
    from ddl.experiments import pipeline
    from ddl.experiments.config import cell_config, get_preset
    from ddl.metrics import wilson_interval
    from ddl.provenance import machine_record

    rc = get_preset(args.preset)
    cfg = cell_config(rc, args.dataset, args.model, data_dir=args.data_dir)
    cache = Path(args.run_dir) / "cache"
    x_train, y_train, x_test, y_test = pipeline.load_data(cfg)
    model, info = pipeline.get_model(cfg, x_train, y_train, x_test, y_test, cache, progress=False)
    attack = next(a for a in cfg.attacks if a.name == "fgsm")
    x, y = x_test[:attack.n_images], y_test[:attack.n_images]
    x_adv = pipeline.get_adversarial(cfg, attack, model, info["key"], x, y, cache, progress=False)

    def accuracies(den) -> dict:
        with torch.no_grad():
            out = {}
            for name, images, labels in (("denoised", x_adv, y), ("denoised_clean", x_test, y_test)):
                pred = torch.cat([model(den.transform(images[i:i + 1000])).argmax(1)
                                  for i in range(0, len(images), 1000)])
                k, n = int((pred == labels).sum()), len(labels)
                out[name] = {"accuracy": k / n, "ci95": list(wilson_interval(k, n))}
            return out

    rows = {}
    t = time.perf_counter()
    shipped, _ = pipeline.get_denoiser(cfg, x_train, cache, progress=False, status=(st := {}))
    if st.get("dictionary") != "zoo":
        raise SystemExit(f"{cfg.name}: no shipped dictionary matches the preset's parameters")
    rows["shipped"] = accuracies(shipped)
    for seed in args.seeds:
        c = cfg.replace(refit_dictionary=True,
                        defence=dataclasses.replace(cfg.defence, random_state=seed))
        den, _ = pipeline.get_denoiser(c, x_train, cache, progress=False)
        rows[f"seed {seed}"] = accuracies(den)
        print(seed, {k: round(v["accuracy"] * 100, 2) for k, v in rows[f"seed {seed}"].items()},
              flush=True)
    summary = {}
    for name in ("denoised", "denoised_clean"):
        values = [rows[f"seed {s}"][name]["accuracy"] for s in args.seeds]
        summary[name] = {"mean": statistics.mean(values), "sd": statistics.stdev(values),
                         "min": min(values), "max": max(values),
                         "shipped": rows["shipped"][name]["accuracy"]}
    result = {"preset": args.preset, "dataset": args.dataset, "model": args.model,
              "attack": {"name": "fgsm", **dict(attack.params)}, "n_images": len(y),
              "seeds": args.seeds, "per_fit": rows, "summary": summary,
              "seconds": round(time.perf_counter() - t, 1), "machine": machine_record()}
    atomic_write_json(Path(args.out), result)
    for name, s in summary.items():
        print(f"{name}: {100 * s['mean']:.2f} ± {100 * s['sd']:.2f} % over {len(args.seeds)} fits "
              f"(range {100 * s['min']:.2f}-{100 * s['max']:.2f}); shipped fit {100 * s['shipped']:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
