"""Denoiser forward / backward cost on 200 MNIST test images (issue 13's attack-loop figure).

Run by hand from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python bench/denoiser_speed.py --data-dir ../shared/data

A 256-atom dictionary of 7x7 patches is learned once on 20,000 training images (cached in
``--cache``), then for k = 1 (the tuned MNIST defence; ``--k`` to change) and stride 1 it
times, best and median of ``--repeat`` runs, interleaved so that the machine's load hits all
alike: ``forward`` (no graph), ``bpda`` (forward + backward with grad="bpda"), ``exact``
(forward + backward with grad="exact"), and the batch GEMM ``P Dᵀ`` alone (the arithmetic
floor of any exact k-sparse coder here). One JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n-images", type=int, default=200)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--cache", default="/tmp/ddl-full-scale")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ddl.data import load_dataset
    from ddl.defence import DictionaryDenoiser
    from ddl.defence.denoiser import _centered_patches

    cache = Path(args.cache) / "denoiser_speed_mnist_p7_K256.pt"
    if cache.exists():
        den = DictionaryDenoiser.load(cache)
    else:
        x_train, _ = load_dataset("mnist", "train", data_dir=args.data_dir)
        den = DictionaryDenoiser(patch_size=7, n_components=256, n_nonzero_coefs=args.k,
                                 max_patches=100_000).fit(x_train[:20000])
        cache.parent.mkdir(parents=True, exist_ok=True)
        den.save(cache)
    den.n_nonzero_coefs = args.k
    x, y = load_dataset("mnist", "test", data_dir=args.data_dir)
    x = x[: args.n_images].contiguous()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))

    def forward():
        den.grad = "none"
        with torch.no_grad():
            den(x)

    def backward(grad):
        def run():
            den.grad = grad
            xr = x.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(den(xr)), y[: len(x)])
            loss.backward()
        return run

    P, _ = _centered_patches(x, (7, 7), (1, 1))
    D = den.dictionary_

    def gemm():
        P @ D.T

    cases = {"forward": forward, "bpda": backward("bpda"), "exact": backward("exact"),
             "gemm_only": gemm}
    times = {name: [] for name in cases}
    for f in cases.values():
        f()
    for _ in range(args.repeat):
        for name, f in cases.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    out = {"workload": "denoiser_speed", "n_images": len(x), "n_patches": P.shape[0],
           "k": args.k, "threads": args.threads}
    for name, ts in times.items():
        out[f"{name}_ms_best"] = round(min(ts) * 1e3, 2)
        out[f"{name}_ms_median"] = round(statistics.median(ts) * 1e3, 2)
    out["bpda_over_forward"] = round(min(times["bpda"]) / min(times["forward"]), 2)
    out["exact_over_bpda"] = round(min(times["exact"]) / min(times["bpda"]), 2)
    flops = P.shape[0] * 2 * P.shape[1] * D.shape[0]
    out["gemm_gflops"] = round(flops / min(times["gemm_only"]) / 1e9, 1)
    out["forward_model_gflops"] = round(flops / min(times["forward"]) / 1e9, 1)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
