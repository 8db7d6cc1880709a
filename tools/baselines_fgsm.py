"""The paper's protocol for every baseline purifier: FGSM on the bare classifier, then the
defence (oblivious), on the first N test images; written to results/baselines/fgsm.json and read by
tools/baselines_table.py for the *FGSM* columns of results/baselines/README.md.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python tools/baselines_fgsm.py [--n-images 1000] [--data-dir ../shared/data]

Same classifiers, defences (``ddl.experiments.robustness_run.build_defence`` specs) and ε as tools/baselines.sh:
MNIST ConvNet at ε 0.1 and 0.3, CIFAR-10 ResNet at 2/255 and 8/255. FGSM is deterministic, so
the only choice is N; every defence sees the same adversarial images. Per row: clean accuracy of
the bare and of the defended classifier, accuracy under FGSM without and with the defence, and
the defence's seconds for the N clean + 2 N attacked images (one thread).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SETUPS = {
    "mnist": ("convnet", (0.1, 0.3), ("tuned", "bits:1", "median:3", "gauss:1.0", "jpeg:75", "tv:0.1",
                                      "wavelet:0.05")),
    "cifar10": ("resnet", (2 / 255, 8 / 255), ("tuned", "bits:5", "median:3", "gauss:0.5", "jpeg:75", "tv:0.1",
                                               "wavelet:0.03")),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=1000)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "results" / "baselines" / "fgsm.json"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import ddl.zoo
    from ddl._io import atomic_write_json
    from ddl.attacks import fgsm
    from ddl.data import load_dataset
    from ddl.models.train import predict
    from ddl.experiments.robustness_run import build_defence

    def acc(model, x, y) -> float:
        return (predict(model, x).argmax(1) == y).double().mean().item()

    out = {"n_images": args.n_images, "attack": "fgsm (on the bare classifier, then the defence)",
           "threads": torch.get_num_threads(), "rows": []}
    for dataset, (model_name, eps_list, specs) in SETUPS.items():
        x, y = load_dataset(dataset, "test", data_dir=args.data_dir)
        x, y = x[:args.n_images], y[:args.n_images]
        model = ddl.zoo.load(model_name, dataset)
        adv = {e: fgsm(model, x, y, eps=e) for e in eps_list}
        bare = {repr(float(e)): acc(model, a, y) for e, a in adv.items()}
        for spec in specs:
            den, desc = build_defence(spec, dataset, data_dir=args.data_dir, progress=False)
            den.eval()
            t = time.perf_counter()
            with torch.no_grad():
                clean = acc(model, den(x), y)
                defended = {repr(float(e)): acc(model, den(a), y) for e, a in adv.items()}
            seconds = time.perf_counter() - t
            row = {"dataset": dataset, "model": model_name, "defence": desc, "spec": spec,
                   "clean": {"bare": acc(model, x, y), "defended": clean},
                   "fgsm": {"bare": bare, "defended": defended}, "seconds": round(seconds, 1)}
            out["rows"].append(row)
            print(f"{dataset} {model_name} {spec:<14} clean {100 * clean:5.1f}  "
                  + "  ".join(f"eps {float(k):.4f}: {100 * v:5.1f}" for k, v in defended.items())
                  + f"  ({seconds:.1f} s)", flush=True)
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
