"""The two CPU kernels of ddl.sparse.omp (C, compiled on first use; torch, the fallback and the
CUDA path) against each other and against scikit-learn; omp_support; threads; the small-support
exact projection."""

import importlib
import os
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import orthogonal_mp_gram

from ddl.sparse import _omp_native, native_driver
from ddl.sparse import threads as threads_module
from ddl.sparse.omp import omp, omp_reconstruct, omp_support

omp_module = importlib.import_module("ddl.sparse.omp")   # ddl.sparse.omp the attribute is the function

native_available = pytest.mark.skipif(
    _omp_native.load() is None, reason="no C compiler here (or DDL_OMP_NATIVE=0): torch kernel only")


def _sk_omp(X, D, **kw):
    if "tol" in kw:
        kw["norms_squared"] = np.einsum("ij,ij->i", X, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = orthogonal_mp_gram(D @ D.T, D @ X.T, **kw)
    return out.reshape(D.shape[0], -1).T


def _unit_rows(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture(params=["native", "torch"])
def kernel(request, monkeypatch):
    """Run the test once with each CPU kernel."""
    if request.param == "native" and _omp_native.load() is None:
        pytest.skip("no C compiler here: torch kernel only")
    monkeypatch.setenv("DDL_OMP_KERNEL", request.param)
    return request.param


@pytest.fixture
def problem(rng):
    D = _unit_rows(rng.standard_normal((40, 16)))
    X = rng.standard_normal((700, 16))
    X[:5] = 0.0                                   # zero signals: zero codes, never coded
    return X, D


@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_both_kernels_match_sklearn(kernel, problem, k):
    X, D = problem
    np.testing.assert_allclose(omp(X, D, n_nonzero_coefs=k).numpy(),
                               _sk_omp(X, D, n_nonzero_coefs=k), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("tol", [0.5, 4.0])
def test_both_kernels_match_sklearn_with_tol(kernel, problem, tol):
    X, D = problem
    ours = omp(X, D, tol=tol).numpy()
    ref = _sk_omp(X[5:], D, tol=tol)
    np.testing.assert_allclose(ours[5:], ref, rtol=1e-7, atol=1e-9)
    assert not ours[:5].any()


def test_both_kernels_float32(kernel, problem):
    X, D = problem
    c32 = omp(X.astype(np.float32), D.astype(np.float32), n_nonzero_coefs=4).numpy()
    np.testing.assert_allclose(c32, _sk_omp(X, D, n_nonzero_coefs=4), rtol=1e-3, atol=1e-4)


@native_available
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("selection", ["omp", "ols"])
def test_native_equals_torch_kernel(problem, monkeypatch, dtype, selection):
    X, D = (torch.as_tensor(a, dtype=dtype) for a in problem)
    kw = {"n_nonzero_coefs": 6, "selection": selection, "return_support": True}
    c_nat, s_nat = omp(X, D, **kw)
    r_nat = omp_reconstruct(X, D, n_nonzero_coefs=6, selection=selection, grad="none")
    monkeypatch.setenv("DDL_OMP_KERNEL", "torch")
    c_ref, s_ref = omp(X, D, **kw)
    r_ref = omp_reconstruct(X, D, n_nonzero_coefs=6, selection=selection, grad="none")
    assert (s_nat == s_ref).all(1).float().mean() >= (0.99 if dtype == torch.float32 else 1.0)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    same = (s_nat == s_ref).all(1)
    torch.testing.assert_close(c_nat[same], c_ref[same], rtol=tol, atol=tol)
    torch.testing.assert_close(r_nat[same], r_ref[same], rtol=tol, atol=tol)


def test_omp_support_matches_codes(kernel, problem):
    X, D = problem
    codes, support_omp = omp(X, D, n_nonzero_coefs=5, return_support=True)
    support, coef = omp_support(X, D, n_nonzero_coefs=5)
    assert support.dtype == torch.int64 and coef.dtype == torch.float64
    torch.testing.assert_close(support, support_omp)
    rebuilt = torch.zeros_like(codes).scatter_add_(1, support.clamp_min(0), coef)
    torch.testing.assert_close(rebuilt, codes, rtol=1e-12, atol=1e-12)
    assert (support[:5] == -1).all() and not coef[:5].any()


def test_omp_support_with_tol_pads_with_minus_one(kernel, problem):
    X, D = problem
    support, coef = omp_support(X, D, tol=3.0)
    assert support.shape == (len(X), 16)
    used = support >= 0
    assert (coef[~used] == 0).all()
    # padding only after the used slots
    assert (used[:, :-1] | ~used[:, 1:]).all()


def test_omp_support_errors(problem):
    X, D = problem
    with pytest.raises(ValueError, match="omp_support: n_nonzero_coefs must be an int"):
        omp_support(X, D, n_nonzero_coefs=0)
    with pytest.raises(ValueError, match="omp_support: selection must be"):
        omp_support(X, D, n_nonzero_coefs=2, selection="lars")


def test_dependent_atoms_warn_with_both_kernels(kernel):
    theta = 1e-9                                    # atom 2 lies in span(e1, e2) up to 1e-9
    D = np.vstack([np.eye(3)[:2], [np.cos(theta) / np.sqrt(2), np.cos(theta) / np.sqrt(2),
                                   np.sin(theta)]])
    with pytest.warns(RuntimeWarning, match="linearly dependent"):
        support, coef = omp_support(np.array([[1.0, 2.0, 100.0]]), D, n_nonzero_coefs=3)
    assert support.tolist() == [[2, 0, -1]] and coef[0, 2] == 0


@native_available
def test_threads_give_the_same_result(problem, monkeypatch):
    X, D = (torch.as_tensor(a, dtype=torch.float32) for a in problem)
    X = X.repeat(8, 1)
    monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (0.0, 0.0, 0.0))   # idle machine
    used = []
    run_workers = threads_module.run_workers

    def spy(worker, n_threads):
        used.append((n_threads, torch.get_num_threads()))
        return run_workers(worker, n_threads)

    monkeypatch.setattr(native_driver, "run_workers", spy)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = omp(X, D, n_nonzero_coefs=5, chunk_size=256)
        torch.set_num_threads(2)
        two = omp(X, D, n_nonzero_coefs=5, chunk_size=256)
        assert torch.get_num_threads() == 2          # restored after the call
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(one, two, rtol=0, atol=0)
    assert used == [(1, 1), (min(2, os.cpu_count() or 1), 1)]   # torch held at 1 meanwhile


def test_busy_machine_gets_one_worker(monkeypatch):
    monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (40.0, 40.0, 40.0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert threads_module.worker_count() == 1
        monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        assert threads_module.worker_count() == min(2, os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("k", [1, 2])
def test_small_support_projection_gradcheck(rng, k):
    """k * n_features <= 2 * n_components: the gathered-atoms projection (k = 1: no solve)."""
    D = torch.from_numpy(_unit_rows(rng.standard_normal((20, 6))))
    X = torch.from_numpy(rng.standard_normal((4, 6))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: omp_reconstruct(x, D, n_nonzero_coefs=k), (X,))
    Dg = D.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, d: omp_reconstruct(x, d, n_nonzero_coefs=k), (X, Dg))
    zero = torch.zeros(2, 6, dtype=D.dtype, requires_grad=True)      # never coded: output 0
    out = omp_reconstruct(zero, Dg, n_nonzero_coefs=k)
    (g,) = torch.autograd.grad(out.sum(), zero)
    assert not out.any() and not g.any()


def _torch_calls(fn, *args):
    """``fn(*args)`` and the names of the torch functions and tensor methods it called."""
    from torch.overrides import TorchFunctionMode

    calls = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            calls.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    with Record():
        out = fn(*args)
    return out, set(calls)


def test_small_and_dense_projection_agree(rng):
    # Both branches of _project_on_support on one problem, each against D_Sᵀ (D_S D_Sᵀ)⁻¹ D_S x
    # written out, and each seen to run by the torch calls it makes: the dense branch forms X Dᵀ
    # and scatters the codes into a code matrix (gather, scatter_add), the gathered one works on
    # the k atoms of each row (bmm). (Before, the test padded the dictionary with zero atoms,
    # reached the gathered branch only and compared it with the formula.)
    D = torch.from_numpy(_unit_rows(rng.standard_normal((5, 6))))
    X = torch.cat([torch.from_numpy(rng.standard_normal((30, 6))), torch.zeros(1, 6, dtype=D.dtype)])
    support, _ = omp_support(X, D, n_nonzero_coefs=2)
    assert (support[:30] >= 0).all() and (support[30] == -1).all()   # the zero row is never coded
    D_S = D[support[:30]]
    coef = torch.linalg.solve(D_S @ D_S.transpose(1, 2), D_S @ X[:30, :, None])
    expected = torch.cat([(coef.transpose(1, 2) @ D_S)[:, 0], torch.zeros(1, 6, dtype=D.dtype)])

    # k · n_features = 12 > 2 · 5 atoms: dense
    dense, dense_calls = _torch_calls(omp_module._project_on_support, X, D, support)
    # the same atoms and 15 zero atoms that no support names: 12 <= 2 · 20, gathered
    padded = torch.cat([D, torch.zeros(15, 6, dtype=D.dtype)])
    small, small_calls = _torch_calls(omp_module._project_on_support, X, padded, support)
    assert {"gather", "scatter_add"} <= dense_calls and "bmm" not in dense_calls
    assert "bmm" in small_calls and not {"gather", "scatter_add"} & small_calls
    torch.testing.assert_close(dense, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(small, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dense, small, rtol=1e-12, atol=1e-14)


def test_load_respects_the_switch(monkeypatch):
    monkeypatch.setenv("DDL_OMP_NATIVE", "0")          # the older switch: the torch kernel
    assert omp_module.native_library("cpu") is None
    monkeypatch.delenv("DDL_OMP_NATIVE")
    saved = (_omp_native._lib, _omp_native._tried, _omp_native._reason)
    try:
        _omp_native._reset()
        monkeypatch.setenv("CC", "/nonexistent/cc")
        assert _omp_native.load() is None                # no compiler: torch kernel, no error
        assert _omp_native.reason() == "no C compiler (/nonexistent/cc is not on the PATH)"
    finally:
        _omp_native._lib, _omp_native._tried, _omp_native._reason = saved


def test_commands_default_to_the_free_cores(monkeypatch):
    """Without --threads, commands that train nothing take the cores the load average leaves free
    (at least one); commands that train keep torch's count, so a cached model never depends on
    the load."""
    import argparse

    from ddl import cli

    cores = os.cpu_count() or 1
    before = torch.get_num_threads()
    try:
        for command, load, want in (("robustness", 40.0, 1), ("robustness", 0.0, cores),
                                    ("attack", 40.0, 1), ("demo", 40.0, cores), ("train", 40.0, cores)):
            torch.set_num_threads(cores)
            monkeypatch.setattr(threads_module.os, "getloadavg", lambda load=load: (load, load, load))
            cli._setup(argparse.Namespace(command=command, device="cpu", threads=None, seed=0,
                                          omp_kernel=None))
            assert torch.get_num_threads() == want, (command, load)
        cli._setup(argparse.Namespace(command="robustness", device="cpu", threads=1, seed=0,
                                      omp_kernel=None))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_native_from_the_environment_is_a_one_line_cli_error(monkeypatch, capsys, tmp_path):
    from ddl.cli import main

    saved = (_omp_native._lib, _omp_native._tried, _omp_native._reason)
    try:
        _omp_native._reset()
        monkeypatch.setenv("CC", "/nonexistent/cc")
        monkeypatch.setenv("DDL_OMP_KERNEL", "native")
        assert main(["demo", "--preset", "smoke", "--run-dir", str(tmp_path), "--quiet"]) == 2
        assert capsys.readouterr().err == (
            "ddl demo: error: DDL_OMP_KERNEL=native: the native OMP kernel cannot be used here: "
            "no C compiler (/nonexistent/cc is not on the PATH)\n")
    finally:
        _omp_native._lib, _omp_native._tried, _omp_native._reason = saved
