"""Re-compute one committed cell's FGSM predictions from its shipped inputs and count agreement.

The zoo classifier, the zoo's shipped dictionary (SHA-256 checked) and the test images are the
committed run's inputs; the FGSM images are re-computed here, denoised with whatever OMP kernel
this process uses (``--omp-kernel``; ``CC=/nonexistent`` simulates a machine without a
compiler), and the predictions compared image by image with the committed arrays.

    .venv/bin/python tools/check_committed_cell.py --cell results/tuned/cells/tuned-mnist-convnet --omp-kernel torch
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def agreement(cell: Path, *, n_images: int | None, data_dir: str, cache: Path) -> dict:
    """Re-compute the FGSM cell of the committed run folder ``cell`` on its first ``n_images``
    test images (all: None) with the current OMP kernel; count the predictions that agree with
    the committed arrays. Also says whether the labels are the committed ones, which dictionary
    the pipeline used (``"zoo"``: the shipped one) and which one the committed record names."""
    from ddl.experiments import pipeline
    from ddl.experiments.config import ExperimentConfig
    from ddl.sparse import kernel_name

    cfg = ExperimentConfig.from_dict(json.loads((cell / "config.json").read_text()))
    cfg = cfg.replace(data=cfg.data.__class__(**{**cfg.data.__dict__, "data_dir": str(data_dir)}))
    records = json.loads((cell / "results.json").read_text())["records"]
    record = next(r for r in records if r["attack"] == "fgsm")
    committed = torch.load(cell / record["files"]["arrays"], weights_only=True)
    x_train, y_train, x_test, y_test = pipeline.load_data(cfg)
    n = n_images or len(committed["y"])
    x, y = x_test[:n], y_test[:n]
    model, _ = pipeline.get_model(cfg, x_train, y_train, x_test, y_test, cache, progress=False)
    den, _ = pipeline.get_denoiser(cfg, x_train, cache, progress=False, status=(status := {}))
    attack = next(a for a in cfg.attacks if a.name == "fgsm")
    x_adv = pipeline.run_attack(attack, model, x, y)
    with torch.no_grad():
        pred = {"perturbed": model(x_adv).argmax(1),
                "denoised": torch.cat([model(den.transform(x_adv[i:i + 1000])).argmax(1)
                                       for i in range(0, n, 1000)])}
    out = {"cell": str(cell), "committed_dictionary": records[0]["dictionary"]["source"],
           "dictionary": status.get("dictionary"), "omp_kernel": kernel_name(), "n_images": n,
           "labels_match": bool(torch.equal(y.to(torch.uint8), committed["y"][:n]))}
    for name, p in pred.items():
        out[f"{name}_agree"] = int((p.to(torch.uint8) == committed[f"pred_{name}"][:n]).sum())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", required=True)
    ap.add_argument("--n-images", type=int, default=None)
    ap.add_argument("--omp-kernel", default="auto", choices=["auto", "native", "torch"])
    ap.add_argument("--data-dir", default="../shared/data")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import tempfile

    from ddl.sparse import set_omp_kernel

    set_omp_kernel(args.omp_kernel)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(agreement(Path(args.cell), n_images=args.n_images, data_dir=args.data_dir,
                                   cache=Path(tmp))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
