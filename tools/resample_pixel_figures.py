"""Recompute the pixel samples and example grids of committed cells (issue 10, item 11), then
redraw the figures and re-render the report from the run folder's files.

Committed run folders hold, per cell, 20,000 pixel values sampled with a stride of
``numel // 20000``: for a full test set that stride is a multiple of the image size, so the
sample reads one or two pixel positions of every image and the QQ and density figures show those
positions only. The images themselves are not committed, so this script recomputes, for each
cell named on the command line, the attacked and denoised images with the pipeline's own stages
(zoo model, same attack parameters, the preset's defence, each stage seeded from its cache key as
in the run), checks that the recomputed predictions agree with the committed ones on at least 99 %
of the images (else it stops and changes nothing; a dictionary re-learned with today's code need
not be bit-identical), and replaces ``pixels_*`` and ``examples_*`` in the cell's arrays file,
recording the agreement under ``pixels_source``.

    python tools/resample_pixel_figures.py results/tuned mnist convnet fgsm --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import ddl
from ddl.experiments import pipeline
from ddl._io import atomic_torch_save, safe_torch_load
from ddl.experiments.config import get_preset, cell_config


def resample(run_dir: Path, dataset: str, model_name: str, attack_name: str, data_dir: str, cache: Path,
             min_agreement: float = 0.99) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    rec = next(r for r in results["records"] if (r["dataset"], r["model"], r["attack"]) == (dataset, model_name, attack_name))
    preset = results["config"]["name"]
    rc = get_preset(preset)
    cfg = cell_config(rc, dataset, model_name, data_dir=data_dir)
    attack = next(a for a in cfg.attacks if a.name == attack_name)
    assert dict(attack.params) == rec["attack_params"], (attack.params, rec["attack_params"])
    x_train, y_train, x_test, y_test = pipeline.load_data(cfg)
    n = attack.n_images or len(x_test)
    x, y = x_test[:n], y_test[:n]
    model, info = pipeline.get_model(cfg, x_train, y_train, x_test, y_test, cache, progress=False)
    x_adv = pipeline.get_adversarial(cfg, attack, model, info["key"], x, y, cache, progress=False)
    fit_on = x_train if cfg.defence.dictionary_source == "clean" else x_adv
    den, key = pipeline.get_denoiser(cfg, fit_on, cache, progress=False)
    x_den = pipeline.get_denoised(den, key, x_adv, cache, cfg.device, progress=False)
    path = run_dir / rec["files"]["arrays"]
    arrays = safe_torch_load(path)
    from ddl.models.train import predict
    from ddl.plots import pick_examples

    pred_adv, pred_den = (predict(model, v).argmax(1) for v in (x_adv, x_den))
    agree = {k: float((p.long() == arrays[f"pred_{k}"].long()).float().mean())
             for k, p in (("perturbed", pred_adv), ("denoised", pred_den))}
    if min(agree.values()) < min_agreement:
        raise SystemExit(f"{path}: recomputed predictions agree with the committed ones on only {agree}; nothing changed")
    ex = pick_examples(y, arrays["pred_clean"], arrays["pred_perturbed"], n=8)
    arrays.update({f"pixels_{k}": pipeline._pixel_summary(v) for k, v in (("clean", x), ("perturbed", x_adv),
                                                                          ("denoised", x_den))})
    arrays.update({"examples_index": ex, **{f"examples_{k}": v[ex].to(torch.float16)
                                            for k, v in (("clean", x), ("perturbed", x_adv), ("denoised", x_den))}})
    arrays["pixels_agreement"] = {k: round(v, 4) for k, v in agree.items()}
    arrays["pixels_source"] = (f"pixels_* and examples_* recomputed by tools/resample_pixel_figures.py with ddl "
                               f"{ddl.__version__}; predictions agree with this cell's on "
                               + ", ".join(f"{k} {v:.4f}" for k, v in agree.items()))
    atomic_torch_save(path, arrays)
    return {"cell": f"{preset}/{dataset}/{model_name}/{attack_name}", "agreement": agree}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("cells", nargs="+", help="DATASET MODEL ATTACK triples")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--cache", default="runs/resample-cache")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="accept a recomputed cell only if this fraction of its perturbed and denoised "
                        "predictions equal the committed ones (figure captions state any agreement "
                        "below 99.9 %%)")
    args = p.parse_args()
    if len(args.cells) % 3:
        p.error("cells come in DATASET MODEL ATTACK triples")
    run_dir = Path(args.run_dir)
    for i in range(0, len(args.cells), 3):
        print(resample(run_dir, *args.cells[i:i + 3], args.data_dir, Path(args.cache),
                       min_agreement=args.min_agreement), flush=True)
    from ddl.experiments.figures import draw_figures
    from ddl.experiments.report import write_report

    draw_figures(run_dir)
    write_report(run_dir)


if __name__ == "__main__":
    main()
