"""Full-scale denoising benchmark: the 10,000 test images of MNIST and of CIFAR-10.

Run by hand (never in CI), from the repository root::

    .venv/bin/python bench/full_scale.py --data-dir ../shared/data --threads 1

Per data set: a dictionary of 256 atoms is learned once on clean training patches
(``DictionaryDenoiser.fit``, 200,000 sampled patches, online learning, k = 5; cached in
``--cache`` so a re-run only times the denoising), then the 10,000 test images are denoised
(MNIST: 7x7 patches, CIFAR-10: 8x8x3, stride 1, means removed, OMP k = 5, overlaps averaged,
clipped). Reports, as one JSON line per data set: wall time of ``transform`` on all test
images (and its CPU time: on a shared machine the wall time also counts waiting for a core), peak resident memory during it (VmHWM reset through /proc/self/clear_refs just
before), patches/s, and the fraction of the machine's thin-GEMM rate reached, counting the
Batch-OMP flops ``2nK + K·k²`` per patch (Rubinstein et al. 2008, Section 4) plus the
reconstruction's ``2nk`` (n features, K atoms, k nonzeros). Targets (issue 13): MNIST <= 10 s,
CIFAR-10 <= 40 s, peak RSS <= 1.5 GB. ``kernel`` says which OMP kernel ran ("c": ddl's C loop,
compiled on first use; "torch": the fallback).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

CASES = {"mnist": {"patch_size": 7}, "cifar10": {"patch_size": 8}}


def _rss_mb(field: str = "VmHWM") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _gemm_gflops(n_features: int, n_components: int, width: int = 4096, repeat: int = 7) -> float:
    """The machine's rate for the (K x n) @ (n x width) float32 GEMM of Batch-OMP's first step."""
    D, X = torch.randn(n_components, n_features), torch.randn(n_features, width)
    D @ X
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        D @ X
        times.append(time.perf_counter() - t)
    return 2 * n_components * n_features * width / statistics.median(times) / 1e9


def _kernel() -> str:
    from ddl.sparse import _omp_native

    return "c" if _omp_native.load() is not None else "torch"


def run(name: str, args) -> dict:
    from ddl.data import load_dataset
    from ddl.defence import DictionaryDenoiser

    p = CASES[name]["patch_size"]
    k, n_components = args.k, args.n_components
    cache = Path(args.cache) / f"full_scale_{name}_p{p}_K{n_components}_k{k}.pt"
    fit_seconds = None
    if cache.exists():
        den = DictionaryDenoiser.load(cache)
    else:
        x_train, _ = load_dataset(name, "train", data_dir=args.data_dir)
        t = time.perf_counter()
        den = DictionaryDenoiser(patch_size=p, n_components=n_components, n_nonzero_coefs=k,
                                 max_patches=200_000, random_state=0).fit(x_train)
        fit_seconds = time.perf_counter() - t
        del x_train
        den.save(cache)
    den.grad = "none"
    x_test, _ = load_dataset(name, "test", data_dir=args.data_dir)
    x_test = x_test[: args.n_images]
    n, c, h, w = x_test.shape
    n_patches = n * (h - p + 1) * (w - p + 1)
    n_features = c * p * p
    _reset_peak()
    rss0 = _rss_mb("VmRSS")
    t, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        x_den = den.transform(x_test)
    seconds, cpu_seconds = time.perf_counter() - t, time.process_time() - cpu
    peak = _rss_mb()
    flops = n_patches * (2 * n_features * n_components + n_components * k * k + 2 * n_features * k)
    gemm = _gemm_gflops(n_features, n_components)
    mse = float(((x_den - x_test) ** 2).mean())
    return {
        "workload": "full_scale", "data": name, "n_images": n, "patch": [c, p, p],
        "n_components": n_components, "n_nonzero_coefs": k, "threads": args.threads,
        "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
        "patches_per_s": round(n_patches / seconds),
        "rss_before_mb": round(rss0, 1), "peak_rss_during_mb": round(peak, 1),
        "fit_seconds": None if fit_seconds is None else round(fit_seconds, 1),
        "n_training_patches": den.n_training_patches_,
        "gflops_batch_omp_model": round(flops / seconds / 1e9, 2),
        "thin_gemm_gflops": round(gemm, 1),
        "fraction_of_gemm_rate": round(flops / seconds / 1e9 / gemm, 3),
        "mse_clean_vs_denoised": mse, "torch": torch.__version__, "kernel": _kernel(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["mnist", "cifar10"], choices=list(CASES))
    ap.add_argument("--data-dir", default=None, help="folder with mnist/ and cifar-10-batches-py/")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-images", type=int, default=10_000)
    ap.add_argument("--n-components", type=int, default=256)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--cache", default="/tmp/ddl-full-scale")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    for name in args.data:
        print(json.dumps(run(name, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
