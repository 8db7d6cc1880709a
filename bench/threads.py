"""Thread table: ddl's OMP and denoiser with 1 thread and with torch's default, alternated.

Run by hand from ../shared/bench (for ``common``)::

    cd ../shared/bench && PYTHONPATH=/work/main/src:/work/main/bench \\
        /work/main/.venv/bin/python /work/main/bench/threads.py --rounds 5

ddl's C kernel takes its thread count from ``torch.get_num_threads()`` (the default is the
number of cores) and runs that many Python threads, each with its own chunks, while torch is
held at one thread (see ``ddl.sparse.threads.run_workers``). For W1 (48,400 MNIST patches, 100
atoms, k = 5) and the denoiser forward (200 MNIST images, 256 atoms of 7x7, k = 1) this times,
round after round, 1 thread and ``--threads`` (default: torch's default at start-up) back to
back, plus the torch kernel (the fallback, OpenMP inside torch) at both settings. One JSON line
with medians, bests, the per-round speed-ups and the load average.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                                "bench"))
import common as C  # noqa: E402


def main() -> int:
    default = torch.get_num_threads()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=default)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    from ddl.sparse import omp
    from ddl.sparse import set_omp_kernel

    D = torch.from_numpy(C.shared_dictionary("mnist").astype(np.float32))
    X, _ = C.center(C.extract_patches(C.load_mnist("mnist")[2][:100]))
    X = torch.from_numpy(X.astype(np.float32))
    from ddl.data import load_dataset
    from ddl.defence import DictionaryDenoiser
    x, _ = load_dataset("mnist", "test", data_dir=args.data_dir or "/work/shared/data")
    x = x[:200].contiguous()
    den_path = "/tmp/ddl-full-scale/denoiser_speed_mnist_p7_K256.pt"
    den = DictionaryDenoiser.load(den_path) if os.path.exists(den_path) else \
        DictionaryDenoiser(patch_size=7, n_components=256, n_nonzero_coefs=1,
                           max_patches=50_000).fit(x)
    den.n_nonzero_coefs, den.grad = 1, "none"

    cases = {
        "w1_k5": lambda: omp(X, D, n_nonzero_coefs=5),
        "denoise_k1": lambda: den(x),
    }
    res = {"workload": "threads", "default_threads": default, "threads": args.threads,
           "loadavg_start": os.getloadavg()[0]}
    with torch.no_grad():
        for name, f in cases.items():
            for kernel in ("c", "torch"):
                set_omp_kernel("native" if kernel == "c" else "torch")
                if kernel == "torch" and name == "denoise_k1":
                    continue
                times = {1: [], args.threads: []}
                for t in times:
                    torch.set_num_threads(t)
                    f()
                for _ in range(args.rounds if kernel == "c" else max(1, args.rounds // 2)):
                    for t in times:
                        torch.set_num_threads(t)
                        s = time.perf_counter()
                        f()
                        times[t].append(time.perf_counter() - s)
                one, many = times[1], times[args.threads]
                res[f"{name}_{kernel}"] = {
                    "t1_median_s": round(statistics.median(one), 4),
                    f"t{args.threads}_median_s": round(statistics.median(many), 4),
                    "speedup_per_round": [round(a / b, 2) for a, b in zip(one, many)],
                    "speedup_median": round(statistics.median(a / b for a, b in zip(one, many)), 2),
                }
    set_omp_kernel("auto")
    torch.set_num_threads(default)
    res["loadavg_end"] = os.getloadavg()[0]
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
