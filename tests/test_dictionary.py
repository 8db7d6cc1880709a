"""Dictionary learning (ddl.sparse.dictionary, ddl.sparse._updates): numbers against closed forms,
hand computations and scikit-learn; every error branch by its message."""

import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import MiniBatchDictionaryLearning, sparse_encode
from sklearn.linear_model import orthogonal_mp_gram

from ddl.sparse import learn_dictionary
from ddl.sparse._updates import _bcd_sweep_numpy, _bcd_sweep_torch, ksvd_update, mod_update, online_update
from ddl.sparse.dictionary import DictionaryLearner, _lasso_codes, _past_weight
from ddl.sparse.omp import omp


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: threads only contend on the shared 2-core machine (10-100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sparse_data(seed, n_samples=2000, n_features=20, n_components=30, k=3, noise=0.0):
    """Like conftest's sparse_signal, larger: unit-norm atoms (rows), k-sparse codes with
    |c| in [1, 2], X = codes @ dictionary (+ Gaussian noise). float64 tensors (X, dictionary)."""
    rng = np.random.default_rng(seed)
    dictionary = rng.standard_normal((n_components, n_features))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    codes = np.zeros((n_samples, n_components))
    for i in range(n_samples):
        support = rng.choice(n_components, size=k, replace=False)
        codes[i, support] = rng.uniform(1.0, 2.0, size=k) * rng.choice([-1.0, 1.0], size=k)
    X = codes @ dictionary + noise * rng.standard_normal((n_samples, n_features))
    return torch.from_numpy(X), torch.from_numpy(dictionary)


def objective(X, codes, dictionary):
    return 0.5 * float(((X - codes @ dictionary) ** 2).sum()) / X.shape[0]


def fraction_recovered(learned, true, threshold=0.99):
    """Fraction of true atoms with a learned atom at |cosine| > threshold (sign/order free)."""
    return float(((learned @ true.T).abs().max(dim=0).values > threshold).double().mean())


def random_codes(rng, n_samples, n_components, k):
    codes = np.zeros((n_samples, n_components))
    for i in range(n_samples):
        codes[i, rng.choice(n_components, size=k, replace=False)] = rng.standard_normal(k)
    return torch.from_numpy(codes)


# ------------------------------------------------------------------------------ MOD update
def test_mod_update_equals_closed_form_with_rows_renormalised(rng):
    X = torch.from_numpy(rng.standard_normal((60, 8)))
    codes = random_codes(rng, 60, 12, 4)
    C, Xn = codes.numpy(), X.numpy()
    closed = np.linalg.inv(C.T @ C) @ C.T @ Xn  # (C^T C)^-1 C^T X, Engan et al. eq. (6) transposed
    norms = np.linalg.norm(closed, axis=1)
    dictionary, new_codes = mod_update(X, codes)
    np.testing.assert_allclose(dictionary.numpy(), closed / norms[:, None], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(new_codes.numpy(), C * norms[None, :], rtol=1e-10, atol=1e-12)
    # the renormalisation does not change the product, hence not the objective
    np.testing.assert_allclose((new_codes @ dictionary).numpy(), C @ closed, rtol=1e-10, atol=1e-12)
    assert torch.equal(codes, torch.from_numpy(C))  # inputs untouched


def test_mod_update_is_the_least_squares_minimiser(rng):
    X = torch.from_numpy(rng.standard_normal((80, 6)))
    codes = random_codes(rng, 80, 10, 3)
    dictionary, new_codes = mod_update(X, codes)
    best = objective(X, new_codes, dictionary)
    for _ in range(5):  # any perturbation of the unnormalised solution is worse
        other = (new_codes @ dictionary).numpy()
        lstsq = np.linalg.lstsq(codes.numpy(), X.numpy(), rcond=None)[0]
        np.testing.assert_allclose(other, codes.numpy() @ lstsq, atol=1e-10)
        perturbed = torch.from_numpy(lstsq + 1e-3 * rng.standard_normal(lstsq.shape))
        assert objective(X, codes, perturbed) > best


def test_mod_update_singular_warns_uses_ridge_and_zeroes_unused_atoms(rng):
    X = torch.from_numpy(rng.standard_normal((40, 5)))
    codes = random_codes(rng, 40, 6, 2)
    codes[:, 3] = 0.0  # atom 3 unused: C^T C singular
    with pytest.warns(RuntimeWarning, match=r"mod_update: codes.T @ codes is singular"):
        dictionary, new_codes = mod_update(X, codes)
    assert torch.equal(dictionary[3], torch.zeros(5, dtype=torch.float64))
    assert torch.equal(new_codes[:, 3], torch.zeros(40, dtype=torch.float64))
    used = [0, 1, 2, 4, 5]
    np.testing.assert_allclose(dictionary[used].norm(dim=1).numpy(), 1.0, rtol=1e-12)
    # the ridge is tiny: the used atoms equal the least-squares solution on the used columns
    sub, _ = mod_update(X, codes[:, used])
    np.testing.assert_allclose(dictionary[used].numpy(), sub.numpy(), atol=1e-6)


# ---------------------------------------------------------------------------- K-SVD update
def test_ksvd_update_first_atom_is_one_power_step_on_explicit_residual(rng):
    X, _ = sparse_data(1, n_samples=200, n_features=10, n_components=15)
    dictionary = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((15, 10))), dim=1)
    codes = omp(X, dictionary, n_nonzero_coefs=3)
    new_dict, new_codes = ksvd_update(X, dictionary, codes)
    users = torch.nonzero(codes[:, 0]).squeeze(1)
    g = codes[users, 0]
    E = X[users] - codes[users] @ dictionary + torch.outer(g, dictionary[0])  # residual without atom 0
    d = E.T @ g
    d = d / d.norm()
    torch.testing.assert_close(new_dict[0], d, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new_codes[users, 0], E @ d, rtol=1e-12, atol=1e-12)


def test_ksvd_update_keeps_support_unit_atoms_and_never_raises_objective(rng):
    X, _ = sparse_data(2, n_samples=300, n_features=16, n_components=24)
    dictionary = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((24, 16))), dim=1)
    codes = omp(X, dictionary, n_nonzero_coefs=3)
    before = objective(X, codes, dictionary)
    new_dict, new_codes = ksvd_update(X, dictionary, codes)
    after = objective(X, new_codes, new_dict)
    assert after <= before
    assert after < 0.9 * before  # and it really moves: 10 % lower in one sweep here
    assert torch.equal(new_codes != 0, codes != 0)
    np.testing.assert_allclose(new_dict.norm(dim=1).numpy(), 1.0, rtol=1e-12)


# --------------------------------------------------------------------------- online update
def surrogate(dictionary, A, B):
    """0.5 tr(D^T A D) - tr(D^T B): the online objective up to a constant (Mairal et al. eq. (5))."""
    return float(0.5 * (dictionary * (A @ dictionary)).sum() - (dictionary * B).sum())


def test_online_update_first_atom_closed_form_and_surrogate_decreases(rng):
    X, _ = sparse_data(3, n_samples=400, n_features=12, n_components=20)
    dictionary = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((20, 12))), dim=1)
    codes = omp(X, dictionary, n_nonzero_coefs=3)
    A, B = codes.T @ codes / 400, codes.T @ X / 400
    new = online_update(dictionary, A, B)
    # atom 0 is updated first: normalise(B_0 - sum_{i != 0} A_0i d_i)  (sphere form of Algorithm 2)
    u0 = B[0] - A[0, 1:] @ dictionary[1:]
    torch.testing.assert_close(new[0], u0 / u0.norm(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(new.norm(dim=1).numpy(), 1.0, rtol=1e-12)
    assert surrogate(new, A, B) < surrogate(dictionary, A, B)
    # a second sweep keeps lowering it (block coordinate descent is monotone)
    assert surrogate(online_update(new, A, B), A, B) <= surrogate(new, A, B)
    assert not torch.equal(new, dictionary)


def test_online_update_numpy_and_torch_sweeps_agree_and_skip_unused(rng):
    dictionary = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((10, 7))), dim=1)
    codes = random_codes(rng, 100, 10, 3)
    codes[:, 4] = 0.0
    A, B = codes.T @ codes, codes.T @ torch.from_numpy(rng.standard_normal((100, 7)))
    diag = A.diagonal().tolist()
    d_np, d_t = dictionary.clone(), dictionary.clone()
    _bcd_sweep_numpy(d_np.numpy(), A.numpy(), B.numpy(), diag, 0.0)
    _bcd_sweep_torch(d_t, A, B, diag, 0.0)  # the path used on CUDA
    torch.testing.assert_close(d_np, d_t, rtol=1e-12, atol=1e-12)
    assert torch.equal(d_np[4], dictionary[4])  # A_44 = 0: left for the caller to replace
    torch.testing.assert_close(online_update(dictionary, A, B), d_np, rtol=0, atol=0)


def test_past_weight_matches_mairal_mini_batch_rule_and_scikit_learn():
    eta = 256
    # scikit-learn's MiniBatchDictionaryLearning._update_inner_stats, step = t - 1 (0-based)
    for t in (1, 2, 10, 255, 256, 257, 1000):
        step = t - 1
        theta = (step + 1) * eta if step < eta - 1 else eta**2 + step + 1 - eta
        sklearn_beta = (theta + 1 - eta) / (theta + 1)
        assert _past_weight(t, eta, 1.0) == pytest.approx(sklearn_beta, rel=1e-15)
        assert _past_weight(t, eta, 8.0) == pytest.approx(sklearn_beta**8, rel=1e-14)
        assert _past_weight(t, eta, 0.0) == 1.0  # plain sums (Algorithm 1 as printed)
    assert _past_weight(2, eta, 1.0) == pytest.approx((eta + 1) / (2 * eta + 1))


# --------------------------------------------------------------------------- lasso coding
def test_lasso_codes_converge_to_scikit_learn_lars_lasso(rng):
    X, _ = sparse_data(4, n_samples=50, n_features=12, n_components=20, noise=0.1)
    dictionary = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((20, 12))), dim=1)
    reference = sparse_encode(X.numpy(), dictionary.numpy(), algorithm="lasso_lars", alpha=0.2)
    codes = _lasso_codes(X, dictionary, 0.2, 10_000)
    np.testing.assert_allclose(codes.numpy(), reference, atol=1e-10)
    assert np.array_equal(np.abs(codes.numpy()) > 1e-9, np.abs(reference) > 1e-9)
    # float32 agrees to float32 accuracy
    codes32 = _lasso_codes(X.float(), dictionary.float(), 0.2, 10_000)
    np.testing.assert_allclose(codes32.numpy(), reference, atol=2e-5)
    # few iterations: inexact, but already close in objective (what the online learner uses)
    def lasso_objective(c):
        return (0.5 * ((X.numpy() - c @ dictionary.numpy()) ** 2).sum(1) + 0.2 * np.abs(c).sum(1)).mean()
    assert lasso_objective(_lasso_codes(X, dictionary, 0.2, 30).numpy()) <= 1.05 * lasso_objective(reference)


# ------------------------------------------------------------------------------- learners
@pytest.mark.parametrize("method", ["ksvd", "mod"])
def test_update_step_never_raises_objective_over_ten_iterations(method):
    """What is monotone, exactly: at every iteration, for the codes that OMP just produced, the
    dictionary update (and the codes it rescales/refits) does not raise 0.5 ||X - C D||^2 / n.
    OMP itself is greedy, so a NEW coding step may raise it a little (it does, by up to 0.5 %
    relative on this data); the whole history still falls overall."""
    X, _ = sparse_data(5, n_samples=300, n_features=16, n_components=24)
    update = ksvd_update if method == "ksvd" else (lambda X, D, C: mod_update(X, C))
    dictionary = DictionaryLearner(24, method=method, n_nonzero_coefs=3, max_iter=1).fit(X).dictionary_
    for _ in range(10):
        codes = omp(X, dictionary, n_nonzero_coefs=3)
        before = objective(X, codes, dictionary)
        dictionary, codes = update(X, dictionary, codes)
        assert objective(X, codes, dictionary) <= before * (1 + 1e-12)
        np.testing.assert_allclose(dictionary.norm(dim=1).numpy(), 1.0, rtol=1e-12)
    # how far it falls depends on the data and the start, so over 5 seeds (data and random_state):
    # history[-1] / history[0] measured on seeds 0-9: 0.61-0.73 (ksvd), 0.63-0.72 (mod); mean of
    # seeds 0-4 0.667 (ksvd), 0.671 (mod), of seeds 5-9 0.702, 0.680. Updates that did nothing
    # would leave it near 1.
    ratios = []
    for seed in range(5):
        X, _ = sparse_data(seed, n_samples=300, n_features=16, n_components=24)
        history = DictionaryLearner(24, method=method, n_nonzero_coefs=3, max_iter=10,
                                    random_state=seed).fit(X).objective_history_
        assert len(history) == 10
        ratios.append(history[-1] / history[0])
    assert max(ratios) < 0.8 and sum(ratios) / 5 < 0.75, ratios


@pytest.mark.parametrize("method", ["ksvd", "mod"])
def test_first_iteration_objective_is_coding_then_update(method):
    X, _ = sparse_data(6, n_samples=300, n_features=16, n_components=24)
    init = X[:24] / X[:24].norm(dim=1, keepdim=True)
    learner = DictionaryLearner(24, method=method, n_nonzero_coefs=3, max_iter=1, init=init).fit(X)
    codes = omp(X, init, n_nonzero_coefs=3)
    D, C = ksvd_update(X, init, codes) if method == "ksvd" else mod_update(X, codes)
    assert learner.objective_history_[0] == pytest.approx(objective(X, C, D), rel=1e-12)
    assert learner.n_iter_ == 1


@pytest.mark.parametrize("method", ["ksvd", "mod", "online"])
def test_learners_recover_a_known_dictionary(method):
    """30 atoms, 20 features, k = 3, 2000 noiseless samples. How many atoms one run recovers
    depends on the data and the start: measured per seed (data seed = random_state = 0..19),
    0.5-1.0 (ksvd, mod), 0.73-1.0 (online); seed 0 alone gave 0.93 / 0.93 / 0.80. So the mean
    over seeds 0-9: measured 0.85 (ksvd), 0.88 (mod), 0.86 (online); over seeds 10-19 0.88,
    0.85, 0.87. A learner that learns nothing recovers ~0 (a data row is a mix of 3 atoms)."""
    kw = dict(n_epochs=20) if method == "online" else dict(max_iter=20)
    recovered = []
    for seed in range(10):
        X, true = sparse_data(seed)
        D = learn_dictionary(X, 30, method=method, n_nonzero_coefs=3, random_state=seed, **kw)
        recovered.append(fraction_recovered(D, true))
    assert sum(recovered) / 10 >= 0.8, recovered


@pytest.mark.parametrize("method", ["online", "ksvd", "mod"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_atoms_unit_norm_dtype_kept_history_length(method, dtype):
    X, _ = sparse_data(7, n_samples=500, n_features=12, n_components=16)
    calls = []
    learner = DictionaryLearner(16, method=method, n_nonzero_coefs=2, max_iter=4, batch_size=100,
                                callback=lambda lrn: calls.append((lrn.n_iter_, len(lrn.objective_history_))))
    D = learner.fit(X.to(dtype)).dictionary_
    assert D.dtype == dtype and D.shape == (16, 12) and D.device.type == "cpu"
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(D.norm(dim=1).double().numpy(), 1.0, rtol=tol)
    assert learner.n_iter_ == 4 and len(learner.objective_history_) == 4
    assert calls == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert all(math.isfinite(v) and v > 0 for v in learner.objective_history_)


def test_numpy_input_and_online_epochs_count():
    X, _ = sparse_data(8, n_samples=1000, n_features=10, n_components=12)
    learner = DictionaryLearner(12, n_nonzero_coefs=2, n_epochs=3, batch_size=256).fit(X.numpy())
    assert isinstance(learner.dictionary_, torch.Tensor) and learner.dictionary_.dtype == torch.float64
    assert learner.n_iter_ == 3 * 4  # ceil(1000 / 256) = 4 mini-batches per pass


def test_online_batch_objective_is_the_pre_update_batch_loss():
    X, _ = sparse_data(9, n_samples=512, n_features=10, n_components=12)
    init = X[:12] / X[:12].norm(dim=1, keepdim=True)
    learner = DictionaryLearner(12, n_nonzero_coefs=2, batch_size=512, max_iter=1, init=init, shuffle=False).fit(X)
    codes = omp(X, init, n_nonzero_coefs=2)
    assert learner.objective_history_[0] == pytest.approx(objective(X, codes, init), rel=1e-12)


def test_online_lasso_objective_includes_l1_term_and_uses_lasso_max_iter():
    X, _ = sparse_data(16, n_samples=512, n_features=10, n_components=12, noise=0.05)
    init = X[:12] / X[:12].norm(dim=1, keepdim=True)
    learner = DictionaryLearner(12, coding="lasso", alpha=0.3, lasso_max_iter=7, batch_size=512, max_iter=1,
                                init=init, shuffle=False).fit(X)
    codes = _lasso_codes(X, init, 0.3, 7)
    expected = objective(X, codes, init) + 0.3 * float(codes.abs().sum()) / 512
    assert learner.objective_history_[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_online_is_comparable_with_scikit_learn_minibatch():
    """Invariants only (atoms have arbitrary order and sign): held-out OMP-3 reconstruction error
    and held-out lasso objective of each learned dictionary, same data, same passes."""
    X, _ = sparse_data(0, noise=0.05)
    train, test = X[:1500].numpy(), X[1500:].numpy()

    def omp3_error(D):
        codes = orthogonal_mp_gram(D @ D.T, D @ test.T, n_nonzero_coefs=3).T
        return 0.5 * ((test - codes @ D) ** 2).sum(1).mean()

    def lasso_objective(D, alpha=0.1):
        codes = sparse_encode(test, D, algorithm="lasso_lars", alpha=alpha)
        return (0.5 * ((test - codes @ D) ** 2).sum(1) + alpha * np.abs(codes).sum(1)).mean()

    sk = MiniBatchDictionaryLearning(30, alpha=0.1, batch_size=256, max_iter=2, tol=0.0, max_no_improvement=None,
                                     random_state=0, fit_algorithm="cd").fit(train)
    D_sk = sk.components_ / np.linalg.norm(sk.components_, axis=1, keepdims=True)
    D_omp = learn_dictionary(train, 30, n_nonzero_coefs=3, n_epochs=2).numpy()
    D_lasso = learn_dictionary(train, 30, coding="lasso", alpha=0.1, n_epochs=2).numpy()
    # measured: OMP-3 error 0.41 (ours, OMP-coded) vs 1.03 (scikit-learn, lasso-coded);
    # lasso objective 0.634 (ours, lasso-coded) vs 0.689 (scikit-learn)
    assert omp3_error(D_omp) <= omp3_error(D_sk)
    assert lasso_objective(D_lasso) <= 1.02 * lasso_objective(D_sk)


def test_random_state_reproducible_and_matters():
    X, _ = sparse_data(10, n_samples=600, n_features=10, n_components=12)
    for method in ("online", "ksvd"):
        a = learn_dictionary(X, 12, method=method, n_nonzero_coefs=2, max_iter=3, random_state=3)
        b = learn_dictionary(X, 12, method=method, n_nonzero_coefs=2, max_iter=3, random_state=3)
        c = learn_dictionary(X, 12, method=method, n_nonzero_coefs=2, max_iter=3, random_state=4)
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)


@pytest.mark.parametrize("coding", ["omp", "lasso"])
def test_partial_fit_over_batches_equals_fit_without_shuffle(coding):
    X, _ = sparse_data(11, n_samples=1000, n_features=10, n_components=12)
    init = X[100:112] / X[100:112].norm(dim=1, keepdim=True)
    kw = dict(n_nonzero_coefs=2, batch_size=200, init=init, coding=coding, alpha=0.1 if coding == "lasso" else None)
    fitted = DictionaryLearner(12, shuffle=False, **kw).fit(X)
    stream = DictionaryLearner(12, **kw)
    for start in range(0, 1000, 200):
        stream.partial_fit(X[start : start + 200])
    assert torch.equal(stream.dictionary_, fitted.dictionary_)
    assert stream.objective_history_ == fitted.objective_history_
    assert stream.n_iter_ == fitted.n_iter_ == 5


def test_unused_atoms_are_replaced_from_data():
    """Data live in the first 5 of 8 coordinates; an initial atom along e_8 is never used, so it
    must come back as a (normalised) data row: zero in the last 3 coordinates."""
    rng = np.random.default_rng(12)
    X = np.zeros((400, 8))
    X[:, :5] = rng.standard_normal((400, 5))
    init = np.eye(8)[[0, 1, 2, 3, 4, 7]]
    for method in ("online", "ksvd", "mod"):
        D = learn_dictionary(X, 6, method=method, n_nonzero_coefs=2, max_iter=1, init=init, batch_size=400)
        assert float(D[:, 5:].abs().max()) == 0.0, method
        np.testing.assert_allclose(D.norm(dim=1).numpy(), 1.0, rtol=1e-12)


def test_duplicate_atoms_are_replaced_in_ksvd():
    X, _ = sparse_data(13, n_samples=400, n_features=10, n_components=12)
    init = X[:12] / X[:12].norm(dim=1, keepdim=True)
    init[5] = init[4]  # a duplicate
    D = learn_dictionary(X, 12, method="ksvd", n_nonzero_coefs=2, max_iter=1, init=init)
    coherence = (D @ D.T - torch.eye(12, dtype=D.dtype)).abs().max()
    assert coherence < 0.99


@pytest.mark.parametrize("method", ["online", "ksvd", "mod"])
def test_all_zero_data_keeps_the_given_atoms(method):
    init = torch.nn.functional.normalize(torch.arange(1.0, 25.0, dtype=torch.float64).reshape(4, 6), dim=1)
    learner = DictionaryLearner(4, method=method, n_nonzero_coefs=2, max_iter=2, init=init * 3.0)
    D = learner.fit(torch.zeros(50, 6, dtype=torch.float64)).dictionary_
    torch.testing.assert_close(D, init, rtol=1e-12, atol=1e-12)  # init rows normalised, then kept
    assert learner.objective_history_ == [0.0, 0.0]


def test_init_rows_are_normalised_and_data_init_skips_zero_rows():
    X = torch.zeros(10, 4, dtype=torch.float64)
    X[[2, 5, 7], :] = torch.tensor([[3.0, 0, 0, 4], [0, 2, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    learner = DictionaryLearner(3, method="mod", n_nonzero_coefs=1, max_iter=1)
    learner._start(X, torch.Generator().manual_seed(0))
    rows = {tuple(np.round(r, 6)) for r in learner.dictionary_.numpy()}
    assert rows == {(0.6, 0, 0, 0.8), (0, 1, 0, 0), (0.5, 0.5, 0.5, 0.5)}
    with pytest.raises(ValueError, match=r"n_components must be <= the number of non-zero rows of X \(3 of 10\)"):
        DictionaryLearner(4, n_nonzero_coefs=1).fit(X)


# ------------------------------------------------------------------------------- errors
def test_numpy_numbers_are_stored_as_python_numbers():
    learner = DictionaryLearner(np.int64(8), n_nonzero_coefs=np.int32(2), n_epochs=np.int64(1),
                                batch_size=np.int64(16), max_iter=np.int64(3), forgetting_exponent=np.float32(2.0),
                                lasso_max_iter=np.int64(5), random_state=np.int64(1))
    for name in ("n_components", "n_nonzero_coefs", "n_epochs", "batch_size", "max_iter", "lasso_max_iter",
                 "random_state"):
        assert type(getattr(learner, name)) is int, name
    assert type(learner.forgetting_exponent) is float
    lasso = DictionaryLearner(8, coding="lasso", alpha=np.float32(0.5))
    assert type(lasso.alpha) is float and lasso.alpha == 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_components=0), r"n_components must be an int >= 1; got 0"),
        (dict(n_components=2.5), r"n_components must be an int >= 1; got 2.5"),
        (dict(n_components=True), r"n_components must be an int >= 1; got True"),
        (dict(method="sgd"), r"^DictionaryLearner: method must be one of online, ksvd, mod; got 'sgd'\.$"),
        (dict(coding="lars"), r"^DictionaryLearner: coding must be one of omp, lasso; got 'lars' \(did you mean 'lasso'\?\)\.$"),
        (dict(coding="lasso"), r"^DictionaryLearner\(coding='lasso'\): alpha must be a finite number > 0; got None\.$"),
        (dict(coding="lasso", alpha=0.0), r"^DictionaryLearner\(coding='lasso'\): alpha must be a finite number > 0; got 0\.0\.$"),
        (dict(coding="lasso", alpha=0.1, method="ksvd"), r"coding='lasso' is only available with method='online'"),
        (dict(alpha=0.1), r"alpha is only used with coding='lasso'"),
        (dict(n_nonzero_coefs=0), r"n_nonzero_coefs must be an int >= 1; got 0"),
        (dict(n_nonzero_coefs=9), r"n_nonzero_coefs must be an int in \[1, n_components=8\]; got 9"),
        (dict(n_epochs=0), r"n_epochs must be an int >= 1; got 0"),
        (dict(batch_size=0), r"batch_size must be an int >= 1; got 0"),
        (dict(max_iter=0), r"max_iter must be an int >= 1; got 0"),
        (dict(forgetting_exponent=-1.0), r"^DictionaryLearner: forgetting_exponent must be a finite number >= 0; got -1\.0\.$"),
        (dict(forgetting_exponent=math.inf), r"^DictionaryLearner: forgetting_exponent must be a finite number >= 0; got inf\.$"),
        (dict(lasso_max_iter=0), r"lasso_max_iter must be an int >= 1; got 0"),
        (dict(random_state=-1), r"random_state must be an int >= 0; got -1"),
        (dict(device="tpu:x"), r"device must be a torch device"),
    ],
)
def test_parameter_errors(kwargs, match):
    kwargs = {"n_components": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        DictionaryLearner(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shuffle=1), r"shuffle must be a bool; got 1"),
        (dict(progress="yes"), r"progress must be a bool; got 'yes'"),
        (dict(callback=3), r"callback must be callable or None; got int"),
    ],
)
def test_parameter_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        DictionaryLearner(8, **kwargs)


def test_learn_dictionary_errors_name_the_parameter_and_value():
    X, _ = sparse_data(14, n_samples=20, n_features=6, n_components=8)
    with pytest.raises(ValueError, match=r"n_components must be <= the number of non-zero rows of X \(20 of 20\).*got n_components=21"):
        learn_dictionary(X, 21)
    with pytest.raises(ValueError, match=r"n_nonzero_coefs must be an int in \[1, min\(n_components, n_features\)=6\]; got 7"):
        learn_dictionary(X, 10, n_nonzero_coefs=7)
    with pytest.raises(ValueError, match=r"init must have shape \(n_components, n_features\)=\(8, 6\); got \(8, 5\)"):
        learn_dictionary(X, 8, init=torch.ones(8, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"init must have the dtype of X \(torch.float64\); got torch.float32"):
        learn_dictionary(X, 8, init=torch.ones(8, 6))
    bad_init = torch.ones(8, 6, dtype=torch.float64)
    bad_init[3] = 0.0
    with pytest.raises(ValueError, match=r"init must have no zero rows \(atoms\); rows \[3\] are zero"):
        learn_dictionary(X, 8, init=bad_init)
    X_nan = X.clone()
    X_nan[3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"X must be finite; it contains NaN or infinity"):
        learn_dictionary(X_nan, 4, n_nonzero_coefs=2)
    X_inf = X.clone()
    X_inf[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"X must be finite"):
        learn_dictionary(X_inf, 4, n_nonzero_coefs=2)
    with pytest.raises(TypeError, match=r"X must be float32 or float64; got torch.int64"):
        learn_dictionary(torch.ones(20, 6, dtype=torch.int64), 4, n_nonzero_coefs=2)
    with pytest.raises(TypeError, match=r"X must be float32 or float64; got numpy int32"):
        learn_dictionary(np.ones((20, 6), dtype=np.int32), 4, n_nonzero_coefs=2)
    with pytest.raises(TypeError, match=r"X must be a torch.Tensor or numpy.ndarray; got list"):
        learn_dictionary([[1.0, 2.0]], 1, n_nonzero_coefs=1)
    with pytest.raises(ValueError, match=r"X must be 2-D \(n_samples, n_features\) and non-empty; got shape \(6,\)"):
        learn_dictionary(torch.ones(6, dtype=torch.float64), 1, n_nonzero_coefs=1)


def test_partial_fit_errors():
    X, _ = sparse_data(15, n_samples=100, n_features=6, n_components=8)
    with pytest.raises(ValueError, match=r"partial_fit: method must be 'online' for streaming; got method='ksvd'"):
        DictionaryLearner(4, method="ksvd", n_nonzero_coefs=2).partial_fit(X)
    learner = DictionaryLearner(4, n_nonzero_coefs=2).partial_fit(X)
    with pytest.raises(ValueError, match=r"X_batch must have 6 features and dtype torch.float64.*got 5 features"):
        learner.partial_fit(torch.ones(10, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"X_batch must have 6 features and dtype torch.float64.*torch.float32"):
        learner.partial_fit(X.float())
