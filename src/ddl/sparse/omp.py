"""Batch orthogonal matching pursuit, batched over millions of signals, CPU or CUDA.

Written by hand because the existing implementations do not fit: scikit-learn's
``orthogonal_mp_gram`` codes one signal at a time in a Python loop (about 13k 7x7 patches/s at
k = 5), and SPAMS has neither CUDA nor gradients and selects atoms by OLS rather than OMP.

Algorithm
---------
Batch-OMP of Rubinstein, Zibulevsky & Elad (2008), "Efficient Implementation of the K-SVD
Algorithm using Batch Orthogonal Matching Pursuit", Algorithm 5: the Gram matrix
``G = D Dᵀ`` is computed once, the correlations ``α⁰ = D x`` of a whole chunk of signals by one
GEMM, and the residual ``r = x − D_Sᵀ γ`` is never formed. With the progressive Cholesky factor
``L Lᵀ = G_SS`` of the selected atoms S, Algorithm 5 updates ``α = α⁰ − G_S γ_S`` and the squared
residual ``ε = ‖x‖² − ...`` through ``δ`` (its lines 8–13).

We keep the same factor L but update the correlations in an equivalent, cheaper order. Write
``z = L⁻¹ α⁰_S`` (so ``γ_S = L⁻ᵀ z``) and ``Q = G_S L⁻ᵀ`` (n_components × k). Appending an atom
appends one row to L (the forward substitution of Algorithm 5, line 5) and therefore one entry to
z and one column to Q, leaving the earlier ones unchanged, so

    α⁽ᵏ⁾ = α⁰ − Q z = α⁽ᵏ⁻¹⁾ − z_k q_k,        ε⁽ᵏ⁾ = ε⁽ᵏ⁻¹⁾ − z_k²,

with, for the new atom j and ``c_i = q_i[j]`` (= the new row of L, i < k),

    L_kk = sqrt(G_jj − Σ c_i²),   q_k = (G_j − Σ_i c_i q_i) / L_kk,   z_k = α⁽ᵏ⁻¹⁾_j / L_kk.

This is Gram–Schmidt run in the correlation domain (q_k = D u_k for the k-th orthonormalised atom
u_k). Per signal it costs the same ``2nK + K·L²`` flops as Algorithm 5 but needs no triangular
solve inside the loop: every step is a handful of elementwise passes over a (K, chunk) tensor, all
signals of the chunk at once, and the last step needs only its row of L (nothing is selected
after it). ``γ_S = L⁻ᵀ z`` is solved once at the end by a batched back substitution.

Implementation notes (all measured on a 2-core CPU, see bench/README.md): the per-chunk state is
atom-major (K, chunk) so per-signal scalars broadcast along contiguous rows; the argmax uses
packed integer keys (see ``_ArgmaxAbs``) because ``torch.argmax`` over short rows is not
vectorised; buffers are allocated once per call (fresh megabyte tensors cost page faults at
every step); signals that need no atom (zero or flat patches, ``‖x‖² <= tol``) are filtered
out before coding; finished signals are masked, and dropped from the working set once half
of them are done. The selected atoms are those of classic OMP (largest ``|α_j| = |d_jᵀ r|``), so the
supports equal scikit-learn's ``orthogonal_mp_gram``; the tie-breaking and stopping rules copy it
(``α_j² < eps`` stops, ``L_kk² ≤ eps`` means dependent atoms, eps of the dtype).

``selection="ols"`` (order-recursive matching pursuit / OLS, the rule of SPAMS' ``omp``) picks the
atom whose addition lowers the residual most, ``argmax_j α_j² / ‖P⊥ d_j‖²`` with
``‖P⊥ d_j‖² = G_jj − Σ_i q_i[j]²``, maintained by one extra pass per step.

Two kernels (issue 13). On the CPU the loop above runs per signal in C
(:mod:`ddl.sparse._omp_native`, compiled with the system C compiler on first use and loaded by
ctypes): the signal's correlations (a row of the GEMM output, updated in place), its
Gram–Schmidt columns and L stay in L1/L2, a step is a few vectorised loops of length K with the
next ``max |α|`` fused into the update, and nothing is dispatched per step. Profiled on W1
(48,400 MNIST patches, 100 atoms, 1 thread), the torch kernel spent its time in per-step passes
over (K, chunk) blocks and their dispatch (k = 5: ``addcmul_`` 15 %, ``index_select`` 15 %,
bit tricks of the argmax 12 %; k = 38: ``addcmul_`` 46 %), reaching 0.4–1.7x SPAMS; the C loop
with the same GEMM is 2.8–3.6x SPAMS at k = 1…38 (bench/README.md). The GEMM ``X Dᵀ`` stays in
torch (MKL), in chunks whose (m, K) output stays near 512 kB. Which kernel runs is
:mod:`ddl.sparse.kernel`'s (``set_omp_kernel``, ``DDL_OMP_KERNEL``); on CUDA the torch kernel
runs; the tests run both on the CPU.
Threads: with ``torch.get_num_threads() = T > 1`` the chunks go to T Python threads (ctypes
releases the GIL) while torch is held at one thread, so no OpenMP worker ever spins on a
busy machine (:mod:`ddl.sparse.threads`). The C driver is :mod:`ddl.sparse.native_driver`:
``native_omp`` for the three entry points here; ``denoise`` / ``ExactDenoise`` run the denoiser's
whole patch pipeline the same way (cut and centre, code, add back; the exact backward applies
each patch's fixed-support projection in C).

Orientation: atoms are the ROWS of ``dictionary`` (n_components, n_features) and codes are
(n_samples, n_components), as in scikit-learn; the papers write D with atoms as columns.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ddl._validate import check_choice, check_int, check_number
from ddl.sparse.kernel import kernel_name, native_library  # noqa: F401  (kernel_name: re-exported)
from ddl.sparse.native_driver import native_omp
from ddl.sparse.threads import holds_torch_threads

__all__ = ["DEPENDENT_MSG", "GRADS", "omp", "omp_reconstruct", "omp_support", "straight_through"]

DEPENDENT_MSG = (
    "omp: the selected atoms became linearly dependent (Cholesky pivot <= eps) for {n} signal(s); "
    "their codes stop with fewer than the requested atoms. Remove duplicated or collinear atoms "
    "from the dictionary."
)


# ----------------------------------------------------------------------------- validation
def _as_tensor(func: str, name: str, a, device=None) -> Tensor:
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(a)
    elif not isinstance(a, Tensor):
        raise TypeError(
            f"{func}: {name} must be a torch.Tensor or numpy.ndarray; got {type(a).__name__}."
        )
    if device is not None:
        a = a.to(device)
    return a


def _check_float_matrix(func: str, name: str, a: Tensor) -> None:
    if a.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{func}: {name} must be float32 or float64; got {a.dtype}.")
    if a.dim() != 2:
        raise ValueError(f"{func}: {name} must be 2-D; got shape {tuple(a.shape)}.")
    # One reduction instead of isfinite's two full passes; the exact test runs only when the
    # sum is not finite (NaN/inf in a, or a sum that overflows).
    if not bool(torch.isfinite(a.sum())) and not bool(torch.isfinite(a).all()):
        raise ValueError(f"{func}: {name} contains NaN or infinite values.")


def _check_inputs(func, X, dictionary, n_nonzero_coefs, tol, precompute_gram=None):
    """Validate once at the public entry point; returns (X, dictionary, gram, k_max)."""
    X = _as_tensor(func, "X", X)
    dictionary = _as_tensor(func, "dictionary", dictionary, device=X.device)
    _check_float_matrix(func, "X", X)
    _check_float_matrix(func, "dictionary", dictionary)
    if dictionary.dtype != X.dtype:
        raise TypeError(
            f"{func}: X and dictionary must have the same dtype; got X {X.dtype} and "
            f"dictionary {dictionary.dtype} (convert one explicitly)."
        )
    n_components, n_features = dictionary.shape
    if X.shape[1] != n_features:
        raise ValueError(
            f"{func}: X must have n_features={n_features} columns (the dictionary's row length); "
            f"got X of shape {tuple(X.shape)}."
        )
    if n_nonzero_coefs is None and tol is None:
        raise ValueError(f"{func}: give n_nonzero_coefs, tol or both; got neither.")
    if n_nonzero_coefs is not None:
        k_max = check_int(func, "n_nonzero_coefs", n_nonzero_coefs, 1, n_components, high_name="n_components")
    else:
        k_max = min(n_features, n_components)
    if tol is not None:
        check_number(func, "tol (squared residual norm)", tol, 0)
    gram = precompute_gram
    if gram is not None:
        gram = _as_tensor(func, "precompute_gram", gram, device=X.device)
        if tuple(gram.shape) != (n_components, n_components) or gram.dtype != X.dtype:
            raise ValueError(
                f"{func}: precompute_gram must be dictionary @ dictionary.T of shape "
                f"({n_components}, {n_components}) and dtype {X.dtype}; got shape "
                f"{tuple(gram.shape)} and dtype {gram.dtype}."
            )
    return X, dictionary, gram, k_max


# ----------------------------------------------------------------------------- the kernel
# Every per-chunk tensor is stored "atom-major", shape (K, m) with the m signals of the chunk
# contiguous: then the per-signal scalars broadcast along rows and reduce over dim 0, which
# torch's CPU kernels vectorise (measured 2-3x faster than the (m, K) layout for these shapes).


class _ArgmaxAbs:
    """Exact column-wise ``argmax_j |A[j, :]|`` (first index on ties) for a (K, m) float tensor.

    ``torch.argmax`` over a short dimension is not vectorised on the CPU (about 4 ns per element,
    which made it a third of the whole OMP time). Instead the low ``b = ceil(log2 K)`` mantissa
    bits of ``|A|`` read as integers (non-negative floats order like their bit patterns) are
    replaced by ``2^b - 1 - j``, so one vectorised integer ``amax`` gives the bucket of the
    maximum and its index. Two values closer than 2^-(mantissa - b) relative share a bucket and
    the lower index would win, so the choice is checked against the exact ``max |A|`` and the
    (rare) columns where it differs are redone with ``torch.argmax``. float64 input is ranked
    through its float32 rounding the same way and checked in float64. Buffers are reused
    across calls: fresh megabyte-sized tensors cost page faults on every step.
    """

    def __init__(self, n_components: int, width: int, dtype, device):
        self.b = max(1, (n_components - 1).bit_length())
        self.low = (1 << self.b) - 1
        self.enabled = self.b <= 12            # keep >= 11 mantissa bits; else plain argmax
        self.mask = 0x7FFFFFFF & ~self.low     # also clears the sign bit: |A|
        self.code = torch.arange(self.low, self.low - n_components, -1, dtype=torch.int32,
                                 device=device)[:, None]
        shape = (n_components, width)
        self.p = torch.empty(shape, dtype=torch.int32, device=device)
        self.a32 = torch.empty(shape, dtype=torch.float32, device=device) \
            if dtype != torch.float32 else None

    def __call__(self, A: Tensor, flat_base: Tensor, nonneg: bool = False):
        """Return (idx, flat, value): the argmax per column, its index into A.view(-1) and
        A's value there (signed). A must be contiguous; flat_base = arange(m)."""
        m = A.shape[1]
        if not self.enabled:
            idx = (A if nonneg else A.abs()).argmax(0)
            flat = torch.add(flat_base, idx, alpha=m)
            return idx, flat, A.view(-1).index_select(0, flat)
        a32 = A if self.a32 is None else self.a32[:, :m].copy_(A)
        p = torch.bitwise_and(a32.view(torch.int32), self.mask, out=self.p[:, :m])  # |A|, bucketed
        p.bitwise_or_(self.code)
        idx = (self.low - (p.amax(0) & self.low)).long()
        flat = torch.add(flat_base, idx, alpha=m)                      # idx * m + column
        value = A.view(-1).index_select(0, flat)
        best = A.amax(0) if nonneg else torch.maximum(A.amax(0), A.amin(0).neg_())
        bad = (value if nonneg else value.abs()) != best
        if bool(bad.any()):
            cols = bad.nonzero()[:, 0]
            sub = A.index_select(1, cols)
            idx[cols] = (sub if nonneg else sub.abs()).argmax(0)
            flat = torch.add(flat_base, idx, alpha=m)
            value = A.view(-1).index_select(0, flat)
        return idx, flat, value


def _back_substitute(L: Tensor, z: Tensor, k_used: int) -> Tensor:
    """Solve Lᵀ γ = z per column: L (k, k, m) lower triangular, z (k, m); unrolled over k."""
    gamma = torch.zeros_like(z)
    for i in range(k_used - 1, -1, -1):
        acc = z[i]
        if i + 1 < k_used:
            acc = acc - (L[i + 1:k_used, i] * gamma[i + 1:k_used]).sum(0)
        gamma[i] = acc / L[i, i]
    return gamma


class _Workspace:
    """Buffers of one chunk width, reused for every chunk (see `_ArgmaxAbs` on page faults).

    Atom-major: A (K, m) the correlations D r; V (k_max, K, m) the unnormalised q_i, with
    q_i = V_i * scale_i; s (K, m) OLS only, ‖P⊥ d_j‖²; score (K, m) OLS only. Outputs:
    support (k_max, m) int64 (-1 = unused), L (k_max, k_max, m) lower triangular with identity
    rows for unused steps, z (k_max, m).
    """

    def __init__(self, n_components, width, k_max, ols, dtype, device):
        K, m = n_components, width
        kw = {"dtype": dtype, "device": device}
        self.width = m
        self.A = torch.empty((K, m), **kw)
        self.V = torch.empty((k_max, K, m), **kw)
        self.scale = torch.empty((k_max, m), **kw)
        self.s = torch.empty((K, m), **kw) if ols else None
        self.score = torch.empty((K, m), **kw) if ols else None
        self.support = torch.empty((k_max, m), dtype=torch.long, device=device)
        self.L = torch.empty((k_max, k_max, m), **kw)
        self.z = torch.empty((k_max, m), **kw)
        self.argmax_abs = _ArgmaxAbs(K, m, dtype, device)
        self.arange = torch.arange(m, device=device)

    def reset(self, gram_diag) -> None:
        self.support.fill_(-1)
        self.L.zero_()
        self.L.diagonal(dim1=0, dim2=1).fill_(1.0)
        self.z.zero_()
        if self.s is not None:
            self.s.copy_(gram_diag[:, None].expand_as(self.s))


class _Working:
    """Columns still being coded. `rows` maps them to workspace columns (None = identity);
    after `compact` the working tensors are fresh (smaller) copies."""

    def __init__(self, ws: _Workspace, norms2):
        self.ws, self.norms2, self.rows = ws, norms2, None
        self.A, self.V, self.scale, self.s = ws.A, ws.V, ws.scale, ws.s

    def compact(self, keep: Tensor, k: int) -> None:
        cols = keep.nonzero()[:, 0]
        self.A = self.A.index_select(1, cols)
        self.V = self.V[:k].index_select(2, cols) if k > 0 else self.V[:, :, :0]
        self.V = torch.cat([self.V, self.V.new_empty((self.ws.V.shape[0] - k,) + self.A.shape)])
        self.scale = self.scale.index_select(1, cols)
        if self.norms2 is not None:
            self.norms2 = self.norms2.index_select(0, cols)
        if self.s is not None:
            self.s = self.s.index_select(1, cols)
        self.rows = cols if self.rows is None else self.rows.index_select(0, cols)

    def store(self, out: Tensor, value: Tensor) -> None:
        """out[..., rows] = value, out being a view into the workspace outputs."""
        if self.rows is None:
            out.copy_(value)
        else:
            out.index_copy_(out.dim() - 1, self.rows, value)


def _omp_chunk(ws, norms2, gram, gram_diag, k_max, tol, ols):
    """Batch-OMP of the chunk whose correlations D Xᵀ are in ws.A (consumed).

    Fills ws.support, ws.L, ws.z; returns the number of steps run and the number of signals
    stopped by dependent atoms.
    """
    eps = torch.finfo(ws.A.dtype).eps
    wk = _Working(ws, norms2)
    alive = (norms2 > tol) if tol is not None else None    # None: every working signal runs
    n_dependent, steps = 0, 0
    for k in range(k_max):
        if alive is not None:                               # drop finished signals
            n_alive = int(alive.sum())
            if n_alive == 0:
                break
            if n_alive <= 0.5 * alive.shape[0]:
                wk.compact(alive, k)
                alive = None
        A, V, scale = wk.A, wk.V, wk.scale
        m = A.shape[1]
        # 1. select the atom: classic OMP argmax |d_jᵀ r|, or OLS argmax (d_jᵀ r)² / ‖P⊥ d_j‖²
        base = ws.arange[:m]
        if ols:
            score = (torch.mul(A, A, out=ws.score) if m == ws.width else A * A).div_(wk.s)
            new, flat, _ = ws.argmax_abs(score, base, nonneg=True)
            a_new = A.view(-1).index_select(0, flat)
        else:
            new, flat, a_new = ws.argmax_abs(A, base)                 # a_new (m,) = α_j
        # 2. new row c of L and new column v = G_j − Σ c_i q_i (unnormalised q_k); the last
        #    step needs only c (nothing is selected after it), which skips its O(K·k) work
        last = k == k_max - 1
        direct = wk.rows is None                    # outputs can be written in place
        d2 = gram_diag.index_select(0, new)
        if k > 0:
            Vflat = V.view(V.shape[0], -1)[:k]
            c = torch.index_select(Vflat, 1, flat, out=ws.L[k, :k]) if direct \
                else Vflat.index_select(1, flat)
            c.mul_(scale[:k])                                       # (k, m) = L[k, :k]
            d2 = d2 - (c * c).sum(0)
        if not last:
            v = V[k]
            torch.index_select(gram, 1, new, out=v)                 # G_j, (K, m)
            if k > 0:
                coef = c * scale[:k]
                for i in range(k):
                    v.addcmul_(coef[i], V[i], value=-1.0)
        # 3. stopping: residual orthogonal to all atoms (silent) or dependent atoms (warn)
        stop = (a_new * a_new < eps) | (d2 <= eps)
        if alive is not None:
            stop &= alive
        if bool(stop.any()):
            n_dependent += int((stop & (a_new * a_new >= eps)).sum())
            alive = ~stop if alive is None else alive & ~stop
            if not bool(alive.any()):
                break
        steps = k + 1
        # 4. L_kk, z_k; α ← α − z_k q_k (dead signals: inv = 0, so nothing changes)
        if alive is None:
            inv = torch.rsqrt(d2, out=scale[k])
            zk = torch.mul(a_new, inv, out=ws.z[k]) if direct else a_new * inv
        else:
            inv = torch.where(alive, torch.rsqrt(torch.where(alive, d2, 1.0)), 0.0)
            scale[k] = inv
            zk = a_new * inv
        if not last:
            A.addcmul_((zk * inv)[None], v, value=-1.0)
        if ols and not last:
            wk.s.addcmul_(v * (inv * inv)[None], v, value=-1.0).clamp_min_(eps)
            wk.s.scatter_(0, new[None], math.inf)
        # 5. outputs (the fast path wrote c, z_k above; dead signals get identity rows)
        if alive is None and direct:
            ws.support[k].copy_(new)
            torch.mul(d2, inv, out=ws.L[k, k])
        elif alive is None:
            wk.store(ws.support[k], new)
            if k > 0:
                wk.store(ws.L[k, :k], c)
            wk.store(ws.L[k, k], d2 * inv)
            wk.store(ws.z[k], zk)
        else:
            wk.store(ws.support[k], torch.where(alive, new, -1))
            if k > 0:
                wk.store(ws.L[k, :k], c * alive)
            wk.store(ws.L[k, k], torch.where(alive, d2 * inv, 1.0))
            wk.store(ws.z[k], zk)
        if tol is not None:
            wk.norms2 = wk.norms2 - zk * zk
            done = wk.norms2 <= tol
            alive = ~done if alive is None else alive & ~done
    return steps, n_dependent



def _check_options(func: str, selection: Any, chunk_size: Any) -> None:
    """The options the three OMP entry points share."""
    check_choice(func, "selection", selection, ("omp", "ols"))
    check_int(func, "chunk_size", chunk_size, 1)


@holds_torch_threads
def omp(
    X,
    dictionary,
    *,
    n_nonzero_coefs: int | None = None,
    tol: float | None = None,
    precompute_gram=None,
    chunk_size: int = 2048,
    selection: Literal["omp", "ols"] = "omp",
    return_support: bool = False,
):
    """Sparse-code every row of X over the dictionary by batched orthogonal matching pursuit.

    Parameters
    ----------
    X : Tensor or ndarray of shape (n_samples, n_features), float32 or float64
        Signals, one per row. NumPy arrays are wrapped without copying; the result is always a
        Tensor on X's device.
    dictionary : Tensor or ndarray of shape (n_components, n_features), same dtype as X
        Atoms as rows; normally unit-norm (the atom choice of OMP compares raw correlations).
        Moved to X's device if it is on another one.
    n_nonzero_coefs : int in [1, n_components], optional
        Maximum number of atoms per signal.
    tol : float >= 0, optional
        Stop a signal once its squared residual norm ``‖x − codes @ dictionary‖²`` is ``<= tol``
        (scikit-learn's meaning). With both ``n_nonzero_coefs`` and ``tol`` a signal stops at
        whichever comes first; with ``tol`` alone at most ``min(n_features, n_components)`` atoms
        are used. Unlike scikit-learn, a signal with ``‖x‖² <= tol`` gets a zero code.
    precompute_gram : Tensor of shape (n_components, n_components), optional
        ``dictionary @ dictionary.T`` if the caller already has it.
    chunk_size : int, default 2048
        Signals coded together. The working memory is about
        ``chunk_size * n_components * (k_max + 4) * itemsize`` bytes whatever n_samples is, on
        top of a copy of the rows of X that need coding and the dense output codes
        (n_samples x n_components); :func:`omp_reconstruct` never holds the codes.
    selection : {"omp", "ols"}, default "omp"
        "omp": classic OMP, atom with the largest ``|d_jᵀ r|`` (same supports as scikit-learn).
        "ols": order-recursive MP / OLS, atom that lowers the residual most (as SPAMS' omp).
    return_support : bool, default False
        Also return the selected atoms in selection order.

    Returns
    -------
    codes : Tensor of shape (n_samples, n_components), dtype of X
        At most ``k_max`` nonzeros per row; the coefficients are the least-squares fit of x on
        its selected atoms.
    support : Tensor of shape (n_samples, k_max), int64
        Only with ``return_support=True``: atom indices in the order chosen, -1 where unused.

    Warns
    -----
    RuntimeWarning
        When the selected atoms become linearly dependent (Cholesky pivot ``<= eps``); those
        signals stop early. Signals whose residual is already orthogonal to every atom
        (``max_j (d_jᵀ r)² < eps``, e.g. zero or flat patches) stop silently with what they have.

    References
    ----------
    R. Rubinstein, M. Zibulevsky, M. Elad (2008), "Efficient Implementation of the K-SVD
    Algorithm using Batch Orthogonal Matching Pursuit", Technion CS-2008-08, Algorithm 5.

    Examples
    --------
    >>> import torch
    >>> from ddl.sparse.omp import omp
    >>> D = torch.eye(3, dtype=torch.float64)
    >>> omp(torch.tensor([[0.5, -2.0, 1.0]], dtype=torch.float64), D, n_nonzero_coefs=2)
    tensor([[ 0., -2.,  1.]], dtype=torch.float64)
    """
    X, dictionary, gram, k_max = _check_inputs("omp", X, dictionary, n_nonzero_coefs, tol,
                                                precompute_gram)
    _check_options("omp", selection, chunk_size)
    lib = native_library(X.device)  # the C kernel, or None: the torch kernel
    if lib is not None:
        out, n_dependent = native_omp(lib, X, dictionary, gram, k_max, tol, int(chunk_size),
                                       selection == "ols", codes=True, support=return_support)
        codes, support = out["codes"], out.get("support")
    else:
        codes, support, n_dependent = _omp_codes(X, dictionary, gram, k_max, tol,
                                                 int(chunk_size), selection == "ols")
    if n_dependent:
        warnings.warn(DEPENDENT_MSG.format(n=n_dependent), RuntimeWarning, stacklevel=3)
    return (codes, support) if return_support else codes


@torch.no_grad()
def _omp_chunks(X, dictionary, gram, k_max, tol, chunk_size, ols, counter):
    """Trusting core: prefilter, then Batch-OMP over fixed-size chunks of the rest.

    Yields (rows, support, gamma) per chunk: rows, a slice or (m,) int64 indices into X (use
    :func:`_put_rows`), support (m, k_max)
    int64 (-1 = unused), gamma (m, k_max) coefficients (0 where unused). Signals never coded
    (zero code) are not yielded. counter[0] accumulates the signals stopped by dependent atoms.
    """
    n_components = dictionary.shape[0]
    dtype, device = X.dtype, X.device
    if gram is None:
        gram = dictionary @ dictionary.T
    gram_diag = gram.diagonal().contiguous()
    # Signals that certainly stop before the first atom get a zero code without being coded:
    # ‖x‖² ≤ tol, or max_j (d_jᵀ x)² ≤ ‖x‖² max_j ‖d_j‖² < eps (zero and flat patches).
    norms2 = (X * X).sum(1)
    todo = norms2 * gram_diag.max() >= torch.finfo(dtype).eps
    if tol is not None:
        todo &= norms2 > tol
    rows = None if bool(todo.all()) else todo.nonzero()[:, 0]
    if rows is not None:
        X, norms2 = X.index_select(0, rows), norms2.index_select(0, rows)
    ws = None
    for start in range(0, X.shape[0], chunk_size):
        Xc = X[start:start + chunk_size]
        m = Xc.shape[0]
        if ws is None or m != ws.width:
            ws = _Workspace(n_components, m, k_max, ols, dtype, device)
        ws.reset(gram_diag)
        torch.mm(dictionary, Xc.T, out=ws.A)                        # α⁰ = D Xᵀ, (K, m)
        steps, n_dep = _omp_chunk(ws, norms2[start:start + m] if tol is not None else None,
                                  gram, gram_diag, k_max, tol, ols)
        counter[0] += n_dep
        gamma = _back_substitute(ws.L, ws.z, steps)                 # (k_max, m)
        yield (slice(start, start + m) if rows is None else rows[start:start + m],
               ws.support.T, gamma.T)


def _put_rows(out: Tensor, rows, value: Tensor) -> None:
    """out[rows] = value for rows a slice or an index tensor."""
    if isinstance(rows, slice):
        out[rows] = value
    else:
        out.index_copy_(0, rows, value)


def _scatter_codes(support: Tensor, gamma: Tensor, n_components: int) -> Tensor:
    """Dense (m, n_components) codes from (m, k) support (-1 = unused, gamma 0 there)."""
    block = torch.zeros((support.shape[0], n_components), dtype=gamma.dtype, device=gamma.device)
    return block.scatter_add_(1, support.clamp_min(0), gamma)


def _omp_codes(X, dictionary, gram, k_max, tol, chunk_size, ols):
    n_samples, n_components = X.shape[0], dictionary.shape[0]
    codes = torch.zeros((n_samples, n_components), dtype=X.dtype, device=X.device)
    supports = torch.full((n_samples, k_max), -1, dtype=torch.long, device=X.device)
    counter = [0]
    for rows, support, gamma in _omp_chunks(X, dictionary, gram, k_max, tol, chunk_size, ols,
                                            counter):
        _put_rows(codes, rows, _scatter_codes(support, gamma, n_components))
        _put_rows(supports, rows, support)
    return codes, supports, counter[0]


@holds_torch_threads
def omp_support(
    X,
    dictionary,
    *,
    n_nonzero_coefs: int | None = None,
    tol: float | None = None,
    precompute_gram=None,
    chunk_size: int = 2048,
    selection: Literal["omp", "ols"] = "omp",
) -> tuple[Tensor, Tensor]:
    """Selected atoms and their coefficients per signal, without the dense code matrix.

    Same coding as :func:`omp` (same arguments and warnings); returns what an adaptive attack or
    a sparse consumer needs in O(n_samples · k) memory instead of O(n_samples · n_components).

    Returns
    -------
    support : Tensor of shape (n_samples, k_max), int64
        Atom indices in the order chosen, -1 where unused (k_max = ``n_nonzero_coefs``, or
        ``min(n_features, n_components)`` with ``tol`` alone).
    coef : Tensor of shape (n_samples, k_max), dtype of X
        The least-squares coefficient of each selected atom, 0 where unused:
        ``codes[i, support[i, l]] == coef[i, l]``.

    Examples
    --------
    >>> import torch
    >>> D = torch.eye(3, dtype=torch.float64)
    >>> omp_support(torch.tensor([[0.5, -2.0, 1.0]], dtype=torch.float64), D, n_nonzero_coefs=2)
    (tensor([[1, 2]]), tensor([[-2.,  1.]], dtype=torch.float64))
    """
    X, dictionary, gram, k_max = _check_inputs("omp_support", X, dictionary, n_nonzero_coefs,
                                                tol, precompute_gram)
    _check_options("omp_support", selection, chunk_size)
    lib = native_library(X.device)  # the C kernel, or None: the torch kernel
    if lib is not None:
        out, n_dependent = native_omp(lib, X, dictionary, gram, k_max, tol, int(chunk_size),
                                       selection == "ols", support=True, coef=True)
        support, coef = out["support"], out["coef"]
    else:
        support = torch.full((X.shape[0], k_max), -1, dtype=torch.long, device=X.device)
        coef = torch.zeros((X.shape[0], k_max), dtype=X.dtype, device=X.device)
        counter = [0]
        for rows, sup, gamma in _omp_chunks(X, dictionary, gram, k_max, tol, int(chunk_size),
                                            selection == "ols", counter):
            _put_rows(support, rows, sup)
            _put_rows(coef, rows, gamma)
        n_dependent = counter[0]
    if n_dependent:
        warnings.warn(DEPENDENT_MSG.format(n=n_dependent), RuntimeWarning, stacklevel=3)
    return support, coef


GRADS = ("exact", "bpda", "none")


@holds_torch_threads
def omp_reconstruct(
    X,
    dictionary,
    *,
    n_nonzero_coefs: int | None = None,
    tol: float | None = None,
    grad: Literal["exact", "bpda", "none"] = "exact",
    chunk_size: int = 2048,
    selection: Literal["omp", "ols"] = "omp",
) -> Tensor:
    """Sparse approximation ``codes @ dictionary`` of every row of X, with a chosen gradient.

    With its support S fixed, the OMP approximation of x is the orthogonal projection
    ``x̂ = D_Sᵀ (D_S D_Sᵀ)⁻¹ D_S x`` onto the span of the selected atoms, so it is piecewise
    linear in x: the support is chosen once without a graph, then the coefficients are computed
    again by a differentiable solve on that support.

    Parameters
    ----------
    X : Tensor or ndarray of shape (n_samples, n_features), float32 or float64
    dictionary : Tensor or ndarray of shape (n_components, n_features), same dtype
    n_nonzero_coefs, tol, chunk_size, selection
        As in :func:`omp`.
    grad : {"exact", "bpda", "none"}, default "exact"
        "exact": autograd through the projection with the support held constant (the true
        gradient wherever the support does not change; flows to X and to the dictionary).
        "bpda": identity backward to X (straight-through; Athalye, Carlini & Wagner 2018,
        BPDA, Section 4.1). "none": the result is detached.

    Returns
    -------
    X_hat : Tensor of shape (n_samples, n_features), dtype and device of X

    Examples
    --------
    >>> import torch
    >>> D = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    >>> x = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    >>> x_hat = omp_reconstruct(x, D, n_nonzero_coefs=1)    # atom 1 wins: d·x = 2.2 > 1
    >>> x_hat.detach()                                       # (d·x) d
    tensor([[1.3200, 1.7600]], dtype=torch.float64)
    >>> torch.autograd.grad(x_hat.sum(), x)[0]               # 1ᵀ d dᵀ = 1.4 d
    tensor([[0.8400, 1.1200]], dtype=torch.float64)
    """
    func = "omp_reconstruct"
    check_choice(func, "grad", grad, GRADS)
    X, dictionary, gram, k_max = _check_inputs(func, X, dictionary, n_nonzero_coefs, tol)
    _check_options(func, selection, chunk_size)
    needs_graph = torch.is_grad_enabled() and (X.requires_grad or dictionary.requires_grad)
    counter = [0]
    lib = native_library(X.device)  # the C kernel, or None: the torch kernel
    if grad == "exact" and needs_graph:
        if lib is not None:
            res, counter[0] = native_omp(lib, X.detach(), dictionary.detach(), None, k_max, tol,
                                          int(chunk_size), selection == "ols", support=True)
            support = res["support"]
        else:
            support = torch.full((X.shape[0], k_max), -1, dtype=torch.long, device=X.device)
            for rows, sup, _ in _omp_chunks(X.detach(), dictionary.detach(), None, k_max, tol,
                                            int(chunk_size), selection == "ols", counter):
                _put_rows(support, rows, sup)
        out = _project_on_support(X, dictionary, support)
    elif lib is not None:
        res, counter[0] = native_omp(lib, X.detach(), dictionary.detach(), None, k_max, tol,
                                      int(chunk_size), selection == "ols", recon=True)
        out = res["recon"]
        if grad == "bpda" and needs_graph and X.requires_grad:
            out = straight_through(X, out)              # forward: x̂; backward: identity
    else:
        out = _reconstruct_no_grad(X.detach(), dictionary.detach(), k_max, tol, int(chunk_size),
                                   selection == "ols", counter)
        if grad == "bpda" and needs_graph and X.requires_grad:
            out = straight_through(X, out)              # forward: x̂; backward: identity
    if counter[0]:
        warnings.warn(DEPENDENT_MSG.format(n=counter[0]), RuntimeWarning, stacklevel=3)
    return out


class _StraightThrough(torch.autograd.Function):
    """Returns ``value`` exactly; the gradient goes to ``x`` unchanged (BPDA with g(x) = x)."""

    @staticmethod
    def forward(ctx, x, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, None


def straight_through(x: Tensor, value: Tensor) -> Tensor:
    """``value`` in the forward pass, identity in the backward pass to ``x`` (same shape).

    Backward Pass Differentiable Approximation of Athalye, Carlini & Wagner (2018), Section 4.1,
    with the identity as the approximation. Unlike ``x + (value - x).detach()`` the forward
    value is bit-exact.
    """
    if x.shape != value.shape:
        raise ValueError(f"straight_through: x and value must have the same shape; got "
                         f"{tuple(x.shape)} and {tuple(value.shape)}.")
    return _StraightThrough.apply(x, value.detach())


@torch.no_grad()
def _reconstruct_no_grad(X, dictionary, k_max, tol, chunk_size, ols, counter):
    """codes @ dictionary chunk by chunk, never holding the (n_samples, n_components) codes.

    x̂ = Σ_i γ_i d_{S_i}: k gathers of atoms and k fused multiply-adds per chunk, i.e. k·n
    multiply-adds per signal instead of the n_components·n of a dense ``codes @ dictionary``.
    """
    out = torch.zeros_like(X, memory_format=torch.contiguous_format)
    for rows, support, gamma in _omp_chunks(X, dictionary, None, k_max, tol, chunk_size, ols,
                                            counter):
        direct = isinstance(rows, slice)
        block = out[rows] if direct else torch.zeros((support.shape[0], X.shape[1]),
                                                     dtype=X.dtype, device=X.device)
        for i in range(support.shape[1]):
            atoms = dictionary.index_select(0, support[:, i].clamp_min(0))   # γ = 0 if unused
            block.addcmul_(gamma[:, i:i + 1], atoms)
        if not direct:
            out.index_copy_(0, rows, block)
    return out


def _project_on_support(X: Tensor, dictionary: Tensor, support: Tensor) -> Tensor:
    """Differentiable ``D_Sᵀ (D_S D_Sᵀ)⁻¹ D_S x`` per row for a fixed support (n, k), -1 = unused.

    Unused slots get an identity row/column in the k x k Gram matrix and a zero right-hand
    side, so their coefficient is exactly 0 and every system stays positive definite.

    Small supports (``k · n_features <= 2 · n_components``, e.g. the tuned MNIST defence, k = 1)
    gather the k atoms of each row, ``D_S`` (n, k, n_features), instead of forming ``X Dᵀ`` and a
    dense code matrix: O(k·n_features) per row instead of O(n_components·n_features), forward
    and backward, and k = 1 needs no factorisation (``x̂ = (d·x / d·d) d``).
    """
    valid = support >= 0                                                  # (n, k)
    S = support.clamp_min(0)
    k = S.shape[1]
    if k * X.shape[1] <= 2 * dictionary.shape[0]:
        D_S = dictionary[S]                                               # (n, k, F)
        rhs = torch.bmm(D_S, X[:, :, None])[:, :, 0]                      # (n, k) D_S x
        if k == 1:
            norm2 = D_S.square().sum(2)                                    # (n, 1) d·d
            coef = torch.where(valid, rhs / torch.where(valid, norm2, 1.0), 0.0)
            return coef * D_S[:, 0]
        both = valid[:, :, None] & valid[:, None, :]
        eye = torch.eye(k, dtype=X.dtype, device=X.device)
        G_S = torch.where(both, torch.bmm(D_S, D_S.transpose(1, 2)), eye)  # (n, k, k)
        coef = torch.cholesky_solve((rhs * valid)[:, :, None],
                                    torch.linalg.cholesky(G_S)) * valid[:, :, None]
        return torch.bmm(coef.transpose(1, 2), D_S)[:, 0]                 # (n, F)
    gram = dictionary @ dictionary.T                                      # (K, K)
    rhs = (X @ dictionary.T).gather(1, S) * valid                         # (n, k) D_S x
    both = valid[:, :, None] & valid[:, None, :]
    eye = torch.eye(S.shape[1], dtype=X.dtype, device=X.device)
    G_S = torch.where(both, gram[S[:, :, None], S[:, None, :]], eye)      # (n, k, k)
    factor = torch.linalg.cholesky(G_S)
    coef = torch.cholesky_solve(rhs[:, :, None], factor)[:, :, 0] * valid  # (n, k)
    codes = torch.zeros(X.shape[0], dictionary.shape[0], dtype=X.dtype, device=X.device)
    return codes.scatter_add(1, S, coef) @ dictionary                     # (n, n_features)
