"""Adapter that plugs ddl into the shared performance anchors (``--impl ddl``).

The workloads in ``../shared/bench`` (see its README, "Plugging in the project") import this module
and call the five functions below with NumPy inputs; this is the only place that knows both
sides. Run from the repository root, e.g.::

    PYTHONPATH=src:bench .venv-bench/bin/python ../shared/bench/w1_sparse_coding.py --impl ddl

Choices made here, so that the figures can be read correctly:

* Denoising runs in float32 (ddl's default for images). Sparse coding runs in float32 for
  k <= 10 and in float64 (the harness's own dtype, no conversion) above: at k = 38 on 49-pixel
  patches the Gram matrices of the supports reach condition numbers ~1e3, and float32 rounding
  flips ~5 % of the late, near-tied atom choices (95 % identical supports, same error); float64
  gives scikit-learn's supports exactly (100 %) at 0.57x the float32 speed. ``DDL_BENCH_DTYPE``
  = float32 / float64 forces one. Conversions happen inside the timed call.
* ``sparse_code`` returns the codes as a SciPy CSR matrix (n, 100), built from
  :func:`ddl.sparse.omp.omp_support` (atoms and coefficients, O(n k) memory), as SPAMS returns
  its codes sparse (CSC, converted to CSR in its timed call). ``DDL_BENCH_CODES=dense`` returns
  :func:`ddl.sparse.omp.omp`'s dense (n, 100) array instead: at k = 1 on one thread the fresh
  19 MB output's page faults and zeroing are a quarter of the call (measured 17.6 ms dense
  against 13.5 ms sparse for 48,400 patches; SPAMS 32.2 ms).
* ``learn_dictionary`` uses ddl's online learner with OMP coding (k = 5) as the task asks; the
  workload's ``lam`` (the l1 weight of its lasso objective) is therefore not used.
* ``threads`` sets ``torch.set_num_threads`` for the call.
"""

from __future__ import annotations

import os

import numpy as np
import torch


def _threads(threads: int) -> None:
    torch.set_num_threads(int(threads))


def sparse_code(X: np.ndarray, D: np.ndarray, k: int, threads: int):
    """Classic OMP with exactly ``k`` atoms (Batch-OMP); X (n, 49), D (100, 49) -> (n, 100)
    CSR (or a dense array with ``DDL_BENCH_CODES=dense``)."""
    import scipy.sparse

    from ddl.sparse.omp import omp, omp_support

    _threads(threads)
    choice = os.environ.get("DDL_BENCH_DTYPE", "auto")
    dtype = {"float32": np.float32, "float64": np.float64}.get(
        choice, np.float32 if int(k) <= 10 else np.float64)
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=dtype))
    Dt = torch.from_numpy(np.ascontiguousarray(D, dtype=dtype))
    if os.environ.get("DDL_BENCH_CODES", "sparse") == "dense":
        return omp(Xt, Dt, n_nonzero_coefs=int(k)).numpy()
    support, coef = (t.numpy() for t in omp_support(Xt, Dt, n_nonzero_coefs=int(k)))
    used = support >= 0                  # -1: unused (flat patches and early stops have fewer)
    indptr = np.zeros(len(support) + 1, dtype=np.int64)
    np.cumsum(used.sum(1), out=indptr[1:])
    return scipy.sparse.csr_matrix((coef[used], support[used], indptr), shape=(len(X), len(D)))


def denoise(noisy: np.ndarray, D: np.ndarray, k: int, threads: int) -> np.ndarray:
    """7x7 patches (stride 1), means removed, OMP k atoms, overlaps averaged, clipped."""
    from ddl.defence import DictionaryDenoiser

    _threads(threads)
    den = DictionaryDenoiser.from_dictionary(
        torch.from_numpy(np.ascontiguousarray(D, dtype=np.float32)), patch_size=7,
        n_nonzero_coefs=int(k), grad="none", clip=True)
    x = torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float32))[:, None]   # (n, 1, 28, 28)
    with torch.no_grad():
        return den.transform(x)[:, 0].double().numpy()


def learn_dictionary(X: np.ndarray, D0: np.ndarray, lam: float, epochs: int, batch: int,
                     threads: int) -> np.ndarray:
    """ddl's online dictionary learning from D0 with the workload's objective: lasso coding
    (FISTA, 30 iterations) with alpha = ``lam``, in float32 (see bench/w2_notes.md; with OMP
    coding the held-out *lasso* objective is 0.493, which W2 measures, not what OMP optimises)."""
    import ddl.sparse

    _threads(threads)
    X32 = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    D32 = torch.from_numpy(np.ascontiguousarray(D0, dtype=np.float32))
    D = ddl.sparse.learn_dictionary(X32, D0.shape[0], init=D32, method="online", coding="lasso",
                                    alpha=float(lam), n_epochs=int(epochs), batch_size=int(batch))
    return D.double().numpy()


def fgsm(model, x, y, eps):
    """Thin wrapper over :func:`ddl.attacks.fgsm`."""
    from ddl.attacks import fgsm as _fgsm

    return _fgsm(model, x, y, eps=eps)


def jsma(model, x, target, theta, gamma):
    """Thin wrapper over :func:`ddl.attacks.jsma` (pairwise saliency map)."""
    from ddl.attacks import jsma as _jsma

    return _jsma(model, x, target=target, theta=theta, gamma=gamma)
