"""Batch-OMP (ddl.sparse.omp) against scikit-learn, least squares, known codes and hand cases."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import orthogonal_mp_gram

from ddl._validate import WrongTypeError
from ddl.sparse.omp import omp, omp_reconstruct


def _sk_omp(X, D, **kw):
    """scikit-learn's Gram OMP, one signal per column, returned as (n_samples, n_components)."""
    if "tol" in kw:
        kw["norms_squared"] = np.einsum("ij,ij->i", X, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = orthogonal_mp_gram(D @ D.T, D @ X.T, **kw)
    return out.reshape(D.shape[0], -1).T


def _unit_rows(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture
def random_problem(rng):
    """Dense random signals (no sparse structure) over a random unit-norm dictionary."""
    D = _unit_rows(rng.standard_normal((30, 16)))
    X = rng.standard_normal((300, 16))
    return X, D


# ------------------------------------------------------------------ agreement with sklearn
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_matches_sklearn_on_sparse_signal(sparse_signal, k):
    X, D, _ = sparse_signal
    ours = omp(X, D, n_nonzero_coefs=k).numpy()
    ref = _sk_omp(X, D, n_nonzero_coefs=k)
    np.testing.assert_array_equal(ours != 0, ref != 0)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4, 8, 12])
def test_matches_sklearn_on_random_data(random_problem, k):
    X, D = random_problem
    ours = omp(X, D, n_nonzero_coefs=k).numpy()
    ref = _sk_omp(X, D, n_nonzero_coefs=k)
    np.testing.assert_array_equal(ours != 0, ref != 0)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12)
    assert (np.count_nonzero(ours, axis=1) == k).all()


@pytest.mark.parametrize("tol", [8.0, 2.0, 0.3, 1e-6])
def test_tol_matches_sklearn(random_problem, tol):
    X, D = random_problem
    ours = omp(X, D, tol=tol).numpy()
    # scikit-learn always takes a first atom; we give ‖x‖² <= tol a zero code (documented)
    small = np.einsum("ij,ij->i", X, X) <= tol
    assert not ours[small].any()
    ours, X = ours[~small], X[~small]
    ref = _sk_omp(X, D, tol=tol)
    np.testing.assert_array_equal(ours != 0, ref != 0)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-10)
    residual = ((X - ours @ D) ** 2).sum(1)
    assert (residual <= tol * (1 + 1e-9)).all()
    # the number of atoms differs between signals, so the compaction path was exercised
    assert len(np.unique(np.count_nonzero(ours, axis=1))) > 2


def test_tol_and_k_stop_at_whichever_comes_first(random_problem):
    X, D = random_problem
    both = omp(X, D, n_nonzero_coefs=3, tol=2.0).numpy()
    only_k = omp(X, D, n_nonzero_coefs=3).numpy()
    only_tol = omp(X, D, tol=2.0).numpy()
    nnz_k, nnz_tol = np.count_nonzero(only_k, axis=1), np.count_nonzero(only_tol, axis=1)
    expected = np.where((nnz_tol <= nnz_k)[:, None], only_tol, only_k)
    np.testing.assert_allclose(both, expected, rtol=1e-12, atol=1e-12)


def test_signal_below_tol_gets_zero_code(random_problem):
    X, D = random_problem
    X = np.vstack([X[:5], 0.01 * X[5:6]])             # last row: ‖x‖² ≈ 2e-3
    codes = omp(X, D, tol=0.01).numpy()
    assert np.count_nonzero(codes[-1]) == 0
    assert (np.count_nonzero(codes[:-1], axis=1) > 0).all()


# ------------------------------------------------------------------ exactness properties
@pytest.fixture
def incoherent_signal(rng):
    """3-sparse codes over 120 atoms in 100 dimensions (low coherence, so OMP recovers them;
    on the 24 x 16 `sparse_signal` plain OMP itself fails on a few rows, as sklearn does)."""
    D = _unit_rows(rng.standard_normal((120, 100)))
    codes = np.zeros((40, 120))
    for row in codes:
        support = rng.choice(120, size=3, replace=False)
        row[support] = rng.uniform(1.0, 2.0, size=3) * rng.choice([-1.0, 1.0], size=3)
    return codes @ D, D, codes


def test_exact_recovery_of_known_codes(incoherent_signal):
    X, D, codes = incoherent_signal
    ours = omp(X, D, n_nonzero_coefs=3).numpy()
    np.testing.assert_array_equal(ours != 0, codes != 0)
    np.testing.assert_allclose(ours, codes, rtol=1e-10, atol=1e-12)


def test_full_support_equals_least_squares(rng):
    D = _unit_rows(rng.standard_normal((16, 16)))      # square, invertible
    X = rng.standard_normal((20, 16))
    ours = omp(X, D, n_nonzero_coefs=16).numpy()
    lstsq = np.linalg.lstsq(D.T, X.T, rcond=None)[0].T
    np.testing.assert_allclose(ours, lstsq, rtol=1e-8, atol=1e-10)


def test_batched_equals_per_signal_and_any_chunk_size(random_problem):
    X, D = random_problem
    batched = omp(X, D, n_nonzero_coefs=5).numpy()
    single = np.vstack([omp(x[None], D, n_nonzero_coefs=5).numpy() for x in X[:40]])
    np.testing.assert_allclose(batched[:40], single, rtol=1e-12, atol=1e-13)
    for chunk in (1, 7, 64):
        np.testing.assert_allclose(omp(X[:70], D, n_nonzero_coefs=5, chunk_size=chunk).numpy(),
                                   batched[:70], rtol=1e-12, atol=1e-13)


def test_float32_close_to_float64(sparse_signal):
    X, D, _ = sparse_signal
    c64 = omp(X, D, n_nonzero_coefs=3).numpy()
    c32 = omp(X.astype(np.float32), D.astype(np.float32), n_nonzero_coefs=3)
    assert c32.dtype == torch.float32
    np.testing.assert_array_equal(c32.numpy() != 0, c64 != 0)
    np.testing.assert_allclose(c32.numpy(), c64, rtol=1e-4, atol=1e-5)


def test_zero_and_flat_signals_give_zero_codes_silently(random_problem):
    X, D = random_problem
    flat = np.full((1, 16), 0.3)
    centered_flat = flat - flat.mean(1, keepdims=True)       # rounding leaves ~1e-17
    X = np.vstack([np.zeros((2, 16)), centered_flat, X[:3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes = omp(X, D, n_nonzero_coefs=4).numpy()
        codes_tol = omp(X, D, tol=0.0).numpy()
    assert not codes[:3].any() and not codes_tol[:3].any()
    np.testing.assert_allclose(codes[3:], _sk_omp(X[3:], D, n_nonzero_coefs=4), rtol=1e-9)


def test_exactly_represented_signal_stops_early_without_warning(incoherent_signal):
    X, D, codes = incoherent_signal                 # 3-sparse signals, ask for 6 atoms
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = omp(X, D, n_nonzero_coefs=6).numpy()
    np.testing.assert_allclose(ours, codes, atol=1e-10)


def test_dependent_atoms_warn_like_sklearn():
    theta = 1e-9                                    # atom 2 lies in span(e1, e2) up to 1e-9
    d2 = [np.cos(theta) / np.sqrt(2), np.cos(theta) / np.sqrt(2), np.sin(theta)]
    D = np.vstack([np.eye(3)[:2], d2])
    x = np.array([[1.0, 2.0, 100.0]])
    with pytest.warns(RuntimeWarning, match="linearly dependent"):
        codes, support = omp(x, D, n_nonzero_coefs=3, return_support=True)
    with pytest.warns(RuntimeWarning, match="linear dependence"):
        ref = orthogonal_mp_gram(D @ D.T, D @ x.T, n_nonzero_coefs=3)
    np.testing.assert_allclose(codes.numpy()[0], ref, rtol=1e-6)
    assert support.tolist() == [[2, 0, -1]]


def test_warning_points_at_the_caller():
    D = np.vstack([np.eye(3)[:2], [np.sqrt(0.5), np.sqrt(0.5), 1e-9]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        omp(np.array([[1.0, 2.0, 100.0]]), D, n_nonzero_coefs=3)
    assert caught and caught[0].filename == __file__


# ------------------------------------------------------------------ options
def test_ols_selection_matches_order_recursive_reference(random_problem):
    X, D = random_problem
    k = 4
    codes, support = omp(X, D, n_nonzero_coefs=k, selection="ols", return_support=True)
    for x, sup, code in zip(X[:60], support.numpy(), codes.numpy()):
        chosen = []                                  # textbook OLS: refit, pick best drop
        for _ in range(k):
            errs = [np.inf if j in chosen else np.linalg.norm(
                x - D[chosen + [j]].T @ np.linalg.lstsq(D[chosen + [j]].T, x, rcond=None)[0])
                for j in range(len(D))]
            chosen.append(int(np.argmin(errs)))
        assert sup.tolist() == chosen
        coef = np.linalg.lstsq(D[chosen].T, x, rcond=None)[0]
        np.testing.assert_allclose(code[chosen], coef, rtol=1e-8, atol=1e-12)
    # OLS never leaves a larger residual than OMP at the same k on these signals (on average)
    r_ols = ((X - codes.numpy() @ D) ** 2).sum()
    r_omp = ((X - omp(X, D, n_nonzero_coefs=k).numpy() @ D) ** 2).sum()
    assert r_ols < r_omp


def test_ols_with_tol_matches_reference(random_problem):
    X, D = random_problem
    X, tol = X[:80], 1.0
    _, support = omp(X, D, tol=tol, selection="ols", return_support=True)
    for x, sup in zip(X, support.numpy()):
        chosen, r = [], x
        while r @ r > tol:
            errs = [np.inf if j in chosen else np.linalg.norm(
                x - D[chosen + [j]].T @ np.linalg.lstsq(D[chosen + [j]].T, x, rcond=None)[0])
                for j in range(len(D))]
            chosen.append(int(np.argmin(errs)))
            r = x - D[chosen].T @ np.linalg.lstsq(D[chosen].T, x, rcond=None)[0]
        assert sup[sup >= 0].tolist() == chosen


def test_return_support_lists_atoms_in_selection_order(sparse_signal):
    X, D, _ = sparse_signal
    codes, support = omp(X, D, n_nonzero_coefs=5, return_support=True)
    assert support.shape == (len(X), 5) and support.dtype == torch.int64
    for row, sup in zip(codes.numpy(), support.numpy()):
        used = sup[sup >= 0]
        assert set(used) == set(np.flatnonzero(row))
        assert (sup[len(used):] == -1).all()
    # the first atom is the one most correlated with x
    assert (support[:, 0].numpy() == np.abs(X @ D.T).argmax(1)).all()


def test_numpy_and_tensor_inputs_give_the_same_tensor(sparse_signal):
    X, D, _ = sparse_signal
    a = omp(X, D, n_nonzero_coefs=3)
    b = omp(torch.from_numpy(X), torch.from_numpy(D), n_nonzero_coefs=3)
    assert isinstance(a, torch.Tensor)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_precomputed_gram_gives_same_codes(random_problem):
    X, D = random_problem
    a = omp(X, D, n_nonzero_coefs=4)
    b = omp(X, D, n_nonzero_coefs=4, precompute_gram=torch.from_numpy(D @ D.T))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_many_atoms_uses_plain_argmax_path(rng):
    D = _unit_rows(rng.standard_normal((4097, 8)))     # 13 index bits > 12: fallback path
    X = rng.standard_normal((10, 8))
    np.testing.assert_allclose(omp(X, D, n_nonzero_coefs=3).numpy(),
                               _sk_omp(X, D, n_nonzero_coefs=3), rtol=1e-8, atol=1e-12)


def test_near_ties_are_resolved_exactly(rng):
    # atoms 0 and 1 have correlations that differ in the 12th digit: the packed-bits argmax
    # puts them in one bucket, the exact check must still pick the larger one (atom 1)
    D = _unit_rows(rng.standard_normal((50, 10)))
    X = np.vstack([D[0] + D[1] * (1 + 1e-12), D[0] * (1 + 1e-12) + D[1]])
    ref = np.abs(X @ D.T).argmax(1)
    _, support = omp(X, D, n_nonzero_coefs=1, return_support=True)
    assert support[:, 0].tolist() == ref.tolist()


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"n_nonzero_coefs": 0}, ValueError, r"^omp: n_nonzero_coefs must be an int in \[1, n_components=24\]; got 0\.$"),
        ({"n_nonzero_coefs": 25}, ValueError, r"^omp: n_nonzero_coefs must be an int in \[1, n_components=24\]; got 25\.$"),
        ({"n_nonzero_coefs": 2.0}, WrongTypeError,
         r"^omp: n_nonzero_coefs must be an int in \[1, n_components=24\]; got 2\.0\.$"),
        ({"n_nonzero_coefs": True}, WrongTypeError,
         r"^omp: n_nonzero_coefs must be an int in \[1, n_components=24\]; got True\.$"),
        ({}, ValueError, r"omp: give n_nonzero_coefs, tol or both; got neither"),
        ({"tol": -1.0}, ValueError, r"^omp: tol \(squared residual norm\) must be a finite number >= 0; got -1\.0\.$"),
        ({"tol": float("nan")}, ValueError, r"^omp: tol \(squared residual norm\) must be a finite number >= 0; got nan\.$"),
        ({"n_nonzero_coefs": 2, "selection": "lars"}, ValueError, r"omp: selection must be one of omp, ols; got 'lars'\."),
        ({"n_nonzero_coefs": 2, "chunk_size": 0}, ValueError, r"chunk_size must be an int >= 1; got 0"),
        ({"n_nonzero_coefs": 2, "precompute_gram": np.eye(3)}, ValueError, r"precompute_gram must be .* \(24, 24\)"),
    ],
)
def test_parameter_errors(sparse_signal, kwargs, exc, match):
    X, D, _ = sparse_signal
    with pytest.raises(exc, match=match):
        omp(X, D, **kwargs)


def test_input_errors(sparse_signal):
    X, D, _ = sparse_signal
    with pytest.raises(ValueError, match=r"X must have n_features=16 columns .* got X of shape \(40, 15\)"):
        omp(X[:, :15], D, n_nonzero_coefs=2)
    with pytest.raises(TypeError, match=r"omp: X must be float32 or float64; got torch.int64"):
        omp(X.astype(np.int64), D, n_nonzero_coefs=2)
    with pytest.raises(TypeError, match=r"same dtype; got X torch.float32 and dictionary torch.float64"):
        omp(X.astype(np.float32), D, n_nonzero_coefs=2)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"omp: X contains NaN or infinite values"):
        omp(bad, D, n_nonzero_coefs=2)
    bad_d = D.copy()
    bad_d[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"omp: dictionary contains NaN or infinite values"):
        omp(X, bad_d, n_nonzero_coefs=2)
    with pytest.raises(ValueError, match=r"omp: dictionary must be 2-D; got shape \(24, 16, 1\)"):
        omp(X, D[:, :, None], n_nonzero_coefs=2)
    with pytest.raises(ValueError, match=r"omp: X must be 2-D; got shape \(16,\)"):
        omp(X[0], D, n_nonzero_coefs=2)
    with pytest.raises(TypeError, match=r"omp: X must be a torch.Tensor or numpy.ndarray; got list"):
        omp(X.tolist(), D, n_nonzero_coefs=2)


def test_huge_finite_values_are_not_mistaken_for_nan():
    from ddl.sparse.omp import _check_float_matrix

    X = torch.full((3, 4), 3e38, dtype=torch.float32)  # the sum overflows, every value is finite
    assert not torch.isfinite(X.sum())
    _check_float_matrix("omp", "X", X)                 # no error
    X[1, 1] = float("inf")
    with pytest.raises(ValueError, match="contains NaN or infinite"):
        _check_float_matrix("omp", "X", X)


# ------------------------------------------------------------------ reconstruction + gradients
def test_reconstruct_equals_codes_times_dictionary(random_problem):
    X, D = random_problem
    codes = omp(X, D, n_nonzero_coefs=4)
    for grad in ("exact", "bpda", "none"):
        x = torch.from_numpy(X).requires_grad_(grad != "none")
        out = omp_reconstruct(x, D, n_nonzero_coefs=4, grad=grad)
        torch.testing.assert_close(out.detach(), codes @ torch.from_numpy(D), rtol=1e-10, atol=1e-12)
        assert out.requires_grad == (grad != "none")


def test_exact_gradient_passes_gradcheck(rng):
    D = torch.from_numpy(_unit_rows(rng.standard_normal((8, 5))))
    X = torch.from_numpy(rng.standard_normal((3, 5))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: omp_reconstruct(x, D, n_nonzero_coefs=3), (X,))
    Dg = D.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x, d: omp_reconstruct(x, d, n_nonzero_coefs=3), (X, Dg))


def test_exact_jacobian_is_the_projection_matrix(rng):
    D = _unit_rows(rng.standard_normal((12, 7)))
    x = rng.standard_normal(7)
    _, support = omp(x[None], D, n_nonzero_coefs=3, return_support=True)
    D_S = D[support[0].numpy()]
    projection = D_S.T @ np.linalg.solve(D_S @ D_S.T, D_S)
    jac = torch.autograd.functional.jacobian(
        lambda v: omp_reconstruct(v[None], D, n_nonzero_coefs=3)[0], torch.from_numpy(x))
    np.testing.assert_allclose(jac.numpy(), projection, rtol=1e-10, atol=1e-12)


def test_bpda_gradient_is_identity(random_problem):
    X, D = random_problem
    x = torch.from_numpy(X[:5]).requires_grad_(True)
    w = torch.from_numpy(np.arange(80.0).reshape(5, 16))
    (g,) = torch.autograd.grad((omp_reconstruct(x, D, n_nonzero_coefs=2, grad="bpda") * w).sum(), x)
    torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_reconstruct_errors(sparse_signal):
    X, D, _ = sparse_signal
    with pytest.raises(ValueError, match=r"omp_reconstruct: grad must be one of .*; got 'straight'"):
        omp_reconstruct(X, D, n_nonzero_coefs=2, grad="straight")
    with pytest.raises(ValueError, match=r"omp_reconstruct: n_nonzero_coefs must be an int"):
        omp_reconstruct(X, D, n_nonzero_coefs=99)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; run on a GPU machine")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_agrees_with_cpu(sparse_signal, dtype):
    X, dictionary, _ = sparse_signal
    rng = np.random.default_rng(1)
    X = np.vstack([X, rng.standard_normal((500, X.shape[1]))])
    X_t, D_t = torch.as_tensor(X, dtype=dtype), torch.as_tensor(dictionary, dtype=dtype)
    cpu, s_cpu = omp(X_t, D_t, n_nonzero_coefs=3, return_support=True)
    gpu, s_gpu = omp(X_t.cuda(), D_t.cuda(), n_nonzero_coefs=3, return_support=True)
    assert gpu.device.type == "cuda"
    assert (s_gpu.cpu() == s_cpu).float().mean() >= 0.99
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.allclose(gpu.cpu(), cpu, atol=tol)
