"""Defended clean accuracy and oblivious FGSM accuracy against the sparsity k of the dictionary
defence, for a standard zoo model and its denoised variant (the curve behind a missed target of
the denoised-training issue: how the trade-off moves when the classifier is trained behind k = 1).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python tools/sparsity_curve.py --dataset cifar10 --model resnet
        [--ks 1 2 3 5 8] [--n-images 1000] [--eps 8/255] [--data-dir ../shared/data]

For each k: the tuned defence's other parameters (``ddl.experiments.config.load_tuned()``), the dictionary
fitted on the full clean training set (k = the tuned k: the zoo's shipped one), FGSM computed on
the bare classifier on the first N test images. A measurement on test images, reported, not used
to choose anything. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from fractions import Fraction
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--model", default="resnet")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 5, 8])
    p.add_argument("--n-images", type=int, default=1000)
    p.add_argument("--eps", default="8/255")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    eps = float(Fraction(args.eps))

    import ddl.zoo
    from ddl.experiments import config
    from ddl.attacks import fgsm
    from ddl.data import load_dataset
    from ddl.defence import DictionaryDenoiser
    from ddl.models.train import predict

    x_train, _ = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    x, y = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    x, y = x[:args.n_images], y[:args.n_images]
    tuned = config.load_tuned()[args.dataset]
    params = {f.name: getattr(tuned, f.name) for f in dataclasses.fields(tuned) if f.name != "dictionary_source"}
    models = {v: ddl.zoo.load(args.model, args.dataset, variant=v) for v in ("standard", "denoised")}
    adv = {v: fgsm(m, x, y, eps=eps) for v, m in models.items()}

    def acc(m, z):
        return 100 * (predict(m, z).argmax(1) == y).double().mean().item()

    print(f"{args.dataset} {args.model}, first {args.n_images} test images, FGSM eps={args.eps} on the bare "
          f"classifier; accuracy %")
    print("| k | standard: defended clean | standard: FGSM denoised | denoised variant: defended clean | "
          "denoised variant: FGSM denoised | fit s |")
    print("|---|---|---|---|---|---|")
    for k in args.ks:
        t = time.perf_counter()
        if k == tuned.n_nonzero_coefs:
            den = ddl.zoo.load_defence(args.dataset, "tuned")
        else:
            den = DictionaryDenoiser(**{**params, "n_nonzero_coefs": k}).fit(x_train)
        fit_s = time.perf_counter() - t
        with torch.no_grad():
            row = [f"{acc(models[v], den(z)):.1f}" for v in ("standard", "denoised") for z in (x, adv[v])]
        print(f"| {k}{' (tuned)' if k == tuned.n_nonzero_coefs else ''} | " + " | ".join(row) + f" | {fit_s:.0f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
