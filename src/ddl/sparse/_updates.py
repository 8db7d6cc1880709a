"""Dictionary-update steps: one function per learning method (MOD, approximate K-SVD, online).

Each function performs the dictionary half of one alternating-minimisation step of

    min_{D, C}  0.5 * ||X - C D||_F^2   subject to  ||d_j||_2 = 1 and C sparse,

with the codes ``C`` held fixed (or, for K-SVD, updated on their existing support only). None of
them can raise that objective for the codes it is given; ``tests/test_dictionary.py`` checks it.

Orientation: atoms are the ROWS of ``dictionary`` (n_components, n_features), codes are
(n_samples, n_components) and the model is ``X ~ codes @ dictionary`` (scikit-learn's layout). The
papers write ``X ~ D Gamma`` with atoms as columns; every formula below is transposed once, here.

These are private helpers: they trust their inputs (validated once by ``DictionaryLearner``), and
return new tensors, never changing the ones they are given.

Why hand-written: scikit-learn has no K-SVD and no MOD, and its online update is NumPy-only; here
all three run on any torch device in the input's dtype.

References
----------
.. [1] K. Engan, S. O. Aase, J. H. Husoy, "Method of optimal directions for frame design",
   ICASSP 1999 (the MOD update, eq. (6) there: D = X C^T (C C^T)^{-1} in column layout).
.. [2] R. Rubinstein, M. Zibulevsky, M. Elad, "Efficient implementation of the K-SVD algorithm
   using batch orthogonal matching pursuit", Technion CS-2008-08 (Algorithm 5, approximate K-SVD).
.. [3] J. Mairal, F. Bach, J. Ponce, G. Sapiro, "Online learning for matrix factorization and
   sparse coding", JMLR 11 (2010) (Algorithm 2, dictionary update by block-coordinate descent).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

__all__ = ["ksvd_update", "mod_update", "online_update"]


def mod_update(X: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
    """Method of Optimal Directions: least-squares dictionary for fixed codes, rows renormalised.

    Solves ``min_D ||X - codes @ D||_F^2`` in closed form, ``D = (C^T C)^{-1} C^T X`` (eq. (6) of
    [1]_ transposed to our row layout), through a Cholesky factorisation of ``C^T C``. Each
    non-zero row is then scaled to unit norm and the matching code column scaled by the inverse
    factor, so ``codes @ dictionary`` (and therefore the objective) is unchanged by the
    renormalisation.

    If ``C^T C`` is singular (an atom that no sample uses, or linearly dependent code columns),
    a ridge ``lam * I`` with ``lam = sqrt(eps) * trace(C^T C) / n_components`` is added and a
    ``RuntimeWarning`` is issued; the result is then the ridge solution, which can be a little
    worse than the (non-unique) least-squares optimum. An atom whose code column is all zero
    comes back as a ZERO row (with a zero code column): the caller must replace it
    (``DictionaryLearner`` re-initialises it from the worst-represented sample).

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features), float32 or float64
        Training signals.
    codes : Tensor of shape (n_samples, n_components), same dtype and device as ``X``
        Sparse codes, held fixed.

    Returns
    -------
    dictionary : Tensor of shape (n_components, n_features)
        Unit-norm rows, except zero rows for unused atoms.
    codes : Tensor of shape (n_samples, n_components)
        ``codes`` with each column multiplied by the norm its atom had before renormalisation.

    References
    ----------
    .. [1] Engan, Aase, Husoy, ICASSP 1999.
    """
    gram = codes.T @ codes  # (K, K)
    rhs = codes.T @ X  # (K, F)
    chol = _cholesky_or_none(gram)
    if chol is None:
        n_components = gram.shape[0]
        scale = float(gram.diagonal().sum()) / n_components
        lam = float(np.sqrt(torch.finfo(gram.dtype).eps)) * (scale if scale > 0 else 1.0)
        warnings.warn(
            f"mod_update: codes.T @ codes is singular (an atom is unused or code columns are "
            f"linearly dependent); solving with ridge {lam:.3g} * I instead.",
            RuntimeWarning,
            stacklevel=2,
        )
        chol = torch.linalg.cholesky(gram + lam * torch.eye(n_components, dtype=gram.dtype, device=gram.device))
    dictionary = torch.cholesky_solve(rhs, chol)  # (K, F)
    norms = torch.linalg.vector_norm(dictionary, dim=1)  # (K,)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    dictionary = dictionary / safe[:, None]
    return dictionary, codes * norms[None, :]


def _cholesky_or_none(gram: Tensor) -> Tensor | None:
    """Cholesky factor of an SPD matrix, or None when it is numerically singular.

    Singular means the factorisation fails, or its smallest pivot squared is below
    ``n * eps`` times the largest diagonal entry (a factor that would amplify rounding errors by
    more than ``1 / (n * eps)``).
    """
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        return None
    n = gram.shape[0]
    eps = torch.finfo(gram.dtype).eps
    pivots = chol.diagonal() ** 2
    if float(pivots.min()) <= n * eps * float(gram.diagonal().max()):
        return None
    return chol


def ksvd_update(X: Tensor, dictionary: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
    """Approximate K-SVD: one power-iteration step per atom on its users' residual.

    Implements Algorithm 5 of Rubinstein, Zibulevsky and Elad (2008) [2]_ in our row layout. For
    each atom ``j`` in turn (Gauss-Seidel: later atoms see the earlier atoms' new values), with
    ``I`` the samples whose code uses atom ``j`` and ``E_I = X_I - C_I D + g d_j^T`` the residual of
    those samples without atom ``j``'s contribution (never formed explicitly):

    1. ``g = C[I, j]``;
    2. ``d = E_I^T g``, normalised (the best unit atom for the fixed coefficients ``g``);
    3. ``g = E_I d`` (the best coefficients for that atom);
    4. ``D[j] = d``, ``C[I, j] = g``.

    Steps 2 and 3 each minimise ``||E_I - g d^T||_F`` over one factor, so no atom update can
    raise ``0.5 * ||X - C D||_F^2``; the support of ``codes`` never changes. Exact K-SVD would
    take the leading singular pair of ``E_I`` instead of one power step.

    An atom with no users is left unchanged (its code column is zero); the caller replaces it.
    If ``E_I^T g`` is exactly zero the atom and its coefficients are left unchanged.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features), float32 or float64
        Training signals.
    dictionary : Tensor of shape (n_components, n_features), same dtype and device
        Current atoms (unit-norm rows).
    codes : Tensor of shape (n_samples, n_components), same dtype and device
        Current codes; only their non-zero entries are changed.

    Returns
    -------
    dictionary : Tensor of shape (n_components, n_features)
        Updated unit-norm atoms.
    codes : Tensor of shape (n_samples, n_components)
        Updated codes, same support as the input codes.

    References
    ----------
    .. [2] Rubinstein, Zibulevsky, Elad, Technion CS-2008-08, Algorithm 5.
    """
    dictionary = dictionary.clone()
    codes = codes.clone()
    for j in range(dictionary.shape[0]):
        users = torch.nonzero(codes[:, j]).squeeze(1)  # (n_users,)
        if users.numel() == 0:
            continue
        x_users, c_users = X[users], codes[users]  # (n_users, F), (n_users, K)
        old_atom = dictionary[j].clone()
        dictionary[j] = 0.0  # E_I = X_I - C_I D once atom j is removed from D
        g = c_users[:, j]  # (n_users,)
        d = x_users.T @ g - dictionary.T @ (c_users.T @ g)  # E_I^T g, (F,)
        norm = torch.linalg.vector_norm(d)
        if float(norm) == 0.0:
            dictionary[j] = old_atom
            continue
        d = d / norm
        g = x_users @ d - c_users @ (dictionary @ d)  # E_I d, (n_users,)
        dictionary[j] = d
        codes[users, j] = g
    return dictionary, codes


def online_update(dictionary: Tensor, A: Tensor, B: Tensor, *, min_usage: float = 0.0) -> Tensor:
    """Mairal et al.'s dictionary update: one block-coordinate-descent sweep over the atoms.

    Minimises the surrogate ``0.5 * tr(D^T A D) - tr(D^T B)`` (the running average of
    ``0.5 * ||x - D^T a||^2`` over the samples seen so far, with ``A = sum a a^T`` and
    ``B = sum a x^T``) one atom at a time, as in Algorithm 2 of [3]_:

        u_j = d_j + (B_j - A_j D) / A_jj,   d_j <- u_j / ||u_j||.

    Deviation from the paper: Algorithm 2 projects on the unit BALL (``u_j / max(||u_j||, 1)``);
    we project on the unit SPHERE, because OMP, the denoiser and the returned dictionary all
    need unit-norm atoms. With ``||d_j|| = 1`` the term ``0.5 * A_jj ||d_j||^2`` is constant, so
    ``u_j / ||u_j||`` is the exact minimiser of the surrogate over atom ``j`` on the sphere and
    each step still cannot raise the surrogate. One sweep per call, warm-started from the
    previous dictionary (Algorithm 2 repeats sweeps until convergence; one sweep per mini-batch is
    what scikit-learn does too).

    Atoms with ``A_jj <= min_usage`` (never or hardly used) are left unchanged; the caller
    re-initialises them. An atom whose ``u_j`` is exactly zero is left unchanged too.

    Parameters
    ----------
    dictionary : Tensor of shape (n_components, n_features), float32 or float64
        Current atoms, unit-norm rows.
    A : Tensor of shape (n_components, n_components), same dtype and device
        Accumulated ``sum codes^T codes`` (any positive scaling shared with ``B``).
    B : Tensor of shape (n_components, n_features), same dtype and device
        Accumulated ``sum codes^T X``.
    min_usage : float, default 0.0
        Atoms with ``A_jj <= min_usage`` are skipped.

    Returns
    -------
    dictionary : Tensor of shape (n_components, n_features)
        The updated atoms (a new tensor).

    Notes
    -----
    The sweep is a sequence of ``n_components`` tiny dependent updates. On CPU it runs in NumPy
    on zero-copy views: NumPy's per-call overhead is about 5x lower than torch eager mode's,
    which made the sweep 5x faster (0.5 ms vs 2.7 ms for 100 atoms of 49 features), the
    difference between matching SPAMS's time or not in benchmark W2. Elsewhere it runs in torch.

    References
    ----------
    .. [3] Mairal, Bach, Ponce, Sapiro, JMLR 11 (2010), Algorithm 2.
    """
    out = dictionary.detach().clone(memory_format=torch.contiguous_format)
    A, B = A.detach(), B.detach()
    diag = A.diagonal().tolist()
    if out.device.type == "cpu":
        _bcd_sweep_numpy(out.numpy(), A.numpy(), B.numpy(), diag, min_usage)
    else:
        _bcd_sweep_torch(out, A, B, diag, min_usage)
    return out


def _bcd_sweep_torch(D: Tensor, A: Tensor, B: Tensor, diag: list[float], min_usage: float) -> None:
    """In-place torch sweep of ``online_update`` (see there); D, A, B are (K, F), (K, K), (K, F)."""
    for j, a_jj in enumerate(diag):
        if a_jj <= min_usage:
            continue
        v = torch.addmv(B[j], D.T, A[j], alpha=-1.0).add_(D[j], alpha=a_jj)  # A_jj * u_j, (F,)
        norm = torch.linalg.vector_norm(v)
        D[j] = torch.where(norm > 0, v / torch.where(norm > 0, norm, 1.0), D[j])


def _bcd_sweep_numpy(D: np.ndarray, A: np.ndarray, B: np.ndarray, diag: list[float], min_usage: float) -> None:
    """The same sweep on NumPy views (CPU); D is changed in place.

    ``A_jj * u_j = B_j - sum_{i != j} A_ji d_i`` is one matrix-vector product with the
    off-diagonal part of ``A``; with preallocated outputs that is four NumPy calls per atom.
    """
    off = A.copy()
    np.fill_diagonal(off, 0.0)
    v = np.empty(D.shape[1], dtype=D.dtype)
    for j, a_jj in enumerate(diag):
        if a_jj <= min_usage:
            continue
        np.dot(off[j], D, out=v)
        np.subtract(B[j], v, out=v)  # A_jj * u_j, (F,)
        norm = float(np.sqrt(np.dot(v, v)))
        if norm > 0.0:
            np.multiply(v, 1.0 / norm, out=D[j])
