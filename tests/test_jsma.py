"""JSMA (Papernot et al. 2016, Algorithm 3, eq. (10)): hand-made networks, a double-loop reference
for the pairwise saliency search, budgets, clipping, θ < 0, random targets, colour, 13 classes."""

import math
import re
from importlib import import_module

import numpy as np
import pytest
import torch
from torch import nn

from ddl.attacks import JSMAInfo, jsma
J = import_module("ddl.attacks.jsma")   # the module (ddl.attacks.jsma is also the function's name)

# Hand-made saliency: α = ∂Z_2/∂x and β = ∂(Z_0 + Z_1)/∂x of a linear model with rows W_0 = β,
# W_1 = 0, W_2 = α. All 15 pairs (a = α_p+α_q, b = β_p+β_q; admissible when a > 0 and b < 0):
#   (0,3) a=1.5 b=-2 → 3    (0,4) a=4 b=-0.5 → 2   (0,5) a=1 b=-4 → 4   (1,2) a=1 b=-1 → 1
#   (1,5) a=2 b=-2 → 4      (2,4) a=2 b=-1.5 → 3   (3,4) a=3.5 b=-0.5 → 1.75
#   (3,5) a=0.5 b=-4 → 2    (4,5) a=3 b=-2.5 → 7.5  ← the best pair
#   (0,1) b=0, (0,2) a=0, (1,3) b=0, (1,4) b=1.5, (2,3) a<0, (2,5) a<0: not admissible.
ALPHA = [1.0, 2.0, -1.0, 0.5, 3.0, 0.0]
BETA = [-1.0, 1.0, -2.0, -1.0, 0.5, -3.0]


def _linear(weight, bias, dtype=torch.float32):
    lin = nn.Linear(len(weight[0]), len(weight)).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight, dtype=dtype))
        lin.bias.copy_(torch.tensor(bias, dtype=dtype))
    return nn.Sequential(nn.Flatten(), lin).eval()


def _hand_model(sign=1.0, bias0=1.0):
    return _linear([[sign * b for b in BETA], [0.0] * 6, [sign * a for a in ALPHA]], [bias0, 0.0, 0.0])


def _small_cnn(c=1, hw=8, k=10, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c, 6, 3, padding=1), nn.Tanh(), nn.Flatten(),
                         nn.Linear(6 * hw * hw, k)).to(dtype).eval()


def _reference_pair(alpha, beta, domain, increase):
    """Obviously-correct double loop over p < q (eq. (10)); first pair wins ties. float32 numpy."""
    best, pair = None, None
    n = len(alpha)
    for p in range(n):
        for q in range(p + 1, n):
            if not (domain[p] and domain[q]):
                continue
            a, b = alpha[p] + alpha[q], beta[p] + beta[q]
            if increase and a > 0 and b < 0:
                score = a * abs(b)
            elif not increase and a < 0 and b > 0:
                score = abs(a) * b
            else:
                continue
            if best is None or score > best:
                best, pair = score, (p, q)
    return pair


def _search(alpha, beta, domain, increase, budget_bytes):
    s = 1.0 if increase else -1.0
    return J._best_pairs(s * alpha, -s * beta, domain, budget_bytes)


# ------------------------------------------------------------------------ hand-made network
def test_hand_network_first_step_and_success():
    x = torch.zeros(1, 1, 1, 6)
    # Z(0) = [1, 0, 0] → class 0; after x4 = x5 = 1: Z = [1 + 0.5 - 3, 0, 3] → class 2 = target.
    x_adv, info = jsma(_hand_model(), x, target=torch.tensor([2]), gamma=1.0, return_info=True)
    assert x_adv.view(6).tolist() == [0, 0, 0, 0, 1, 1]
    assert info.success.tolist() == [True] and info.n_iter.tolist() == [1]
    assert info.n_changed.tolist() == [2] and info.l0.tolist() == [2]
    assert info.l2.tolist() == [pytest.approx(math.sqrt(2))] and info.linf.tolist() == [1.0]


def test_hand_network_saliency_pair_matches_hand_table():
    alpha, beta = torch.tensor([ALPHA]), torch.tensor([BETA])
    p, q, found = _search(alpha, beta, torch.ones(1, 6, dtype=torch.bool), True, 2**20)
    assert (p.item(), q.item(), found.item()) == (4, 5, True)
    # Without feature 5: best is (0,5)/(1,5) gone → (0,3) and (2,4) tie at 3 → the first, (0,3).
    dom = torch.tensor([[True, True, True, True, True, False]])
    p, q, found = _search(alpha, beta, dom, True, 2**20)
    assert (p.item(), q.item()) == (0, 3)
    # Only features 1 and 3: (1,3) has b = 0 → nothing admissible.
    dom = torch.tensor([[False, True, False, True, False, False]])
    assert not _search(alpha, beta, dom, True, 2**20)[2].item()


def test_single_selection_is_top_two_target_derivatives():
    # α = [1, 2, -1, 0.5, 3, 0] → features 4 and 1, whatever β says (ART's ranking).
    x_adv, info = jsma(_hand_model(), torch.zeros(1, 1, 1, 6), target=torch.tensor([2]), gamma=1 / 3,
                       selection="single", return_info=True)
    assert x_adv.view(6).tolist() == [0, 1, 0, 0, 1, 0] and info.n_iter.tolist() == [1]


def test_theta_negative_decreases_features():
    # With all weights negated, decreasing features plays the role of increasing them: the
    # θ < 0 map (a < 0, b > 0, score |a|·b) picks (4, 5) again. One iteration (γ = 1/3).
    x = torch.ones(1, 1, 1, 6)
    x_adv, info = jsma(_hand_model(sign=-1.0), x, target=torch.tensor([2]), theta=-1.0, gamma=1 / 3, return_info=True)
    assert x_adv.view(6).tolist() == [1, 1, 1, 1, 0, 0]
    assert info.n_iter.tolist() == [1] and not info.success.item()
    # and a partial step keeps the feature in the domain: θ = -0.4 twice on the same pair
    x_adv = jsma(_hand_model(sign=-1.0), x, target=torch.tensor([2]), theta=-0.4, gamma=2 / 3)
    assert x_adv.view(6)[4:].tolist() == pytest.approx([0.2, 0.2])
    assert x_adv.view(6)[:4].tolist() == [1, 1, 1, 1]


def test_features_at_the_bound_are_not_in_the_domain():
    # x4 already at 1: cannot increase, so the best admissible pair is (0,5)/(1,5) at score 4 → (0,5).
    # Z = [5 + 0.5, 0, 3] → class 0; after x0 = x5 = 1: Z = [5.5 - 1 - 3, 0, 3 + 1] → class 2.
    x = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 6)
    x_adv, info = jsma(_hand_model(bias0=5.0), x, target=torch.tensor([2]), gamma=1 / 3, return_info=True)
    assert x_adv.view(6).tolist() == [1, 0, 0, 0, 1, 1] and info.success.item()


# ------------------------------------------------------------------------ search vs reference
@pytest.mark.parametrize("budget_bytes", [1, 24 * 4 * 40 * 7, 2**30], ids=["1row", "7rows", "all"])
@pytest.mark.parametrize("increase", [True, False])
@pytest.mark.parametrize("data", ["normal", "anti-correlated"])
def test_chunked_search_equals_double_loop(rng, budget_bytes, increase, data):
    # "anti-correlated": α ≈ β, so u = α and v = −β lie near a line of slope −1 and almost every
    # feature is on the first Pareto layers: the candidate set is all of Γ, chunked by rows.
    a_rows, n = 4, 40
    alpha = torch.from_numpy(rng.normal(size=(a_rows, n)).astype(np.float32))
    noise = rng.normal(size=(a_rows, n)).astype(np.float32)
    beta = torch.from_numpy(noise if data == "normal" else alpha.numpy() + 0.01 * noise)
    domain = torch.from_numpy(rng.uniform(size=(a_rows, n)) < 0.8)
    p, q, found = _search(alpha, beta, domain, increase, budget_bytes)
    for i in range(a_rows):
        ref = _reference_pair(alpha[i].numpy(), beta[i].numpy(), domain[i].numpy(), increase)
        assert found[i].item() and (p[i].item(), q[i].item()) == ref


def test_search_on_many_features_equals_double_loop(rng, monkeypatch):
    # N = 300: correlated gradients (few Pareto candidates), tiny flat gradients, a domain with
    # holes, and a flat row (α = 1, β = −1: every pair scores 4, ties → the first pair (0, 1)).
    n = 300
    base = rng.normal(size=(3, n)).astype(np.float32)
    alpha = torch.from_numpy(np.stack([base[0], base[1] * 0.01, base[2], np.ones(n, np.float32)]))
    beta = torch.from_numpy(np.stack([-0.5 * base[0] + rng.normal(size=n).astype(np.float32),
                                      -np.abs(base[1]) * 0.01, rng.normal(size=n).astype(np.float32),
                                      -np.ones(n, np.float32)]))
    domain = torch.ones(4, n, dtype=torch.bool)
    domain[2, ::3] = False
    sizes = []
    original = J._pareto_candidates
    monkeypatch.setattr(J, "_pareto_candidates", lambda *a: sizes.append(original(*a).sum(1)) or original(*a))
    p, q, found = _search(alpha, beta, domain, True, 2**16)
    assert (sizes[0][:3] < 40).all()                          # the candidate sets are small
    for i in range(4):
        ref = _reference_pair(alpha[i].numpy(), beta[i].numpy(), domain[i].numpy(), True)
        assert (p[i].item(), q[i].item()) == ref
    assert (p[3].item(), q[3].item()) == (0, 1)


def test_pareto_candidates_by_hand():
    # points (u, v): 0 (3, 0), 1 (2, 2), 2 (0, 3), 3 (1, 1), 4 (2, 2) twin of 1, 5 (0, 0), 6 (1, 2.5).
    # Dominators: 4 ← 1 (equal, earlier); 3 ← 1, 4, 6; 5 ← everyone. At most one: 0, 1, 2, 4, 6.
    u = torch.tensor([[3.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0]])
    v = torch.tensor([[0.0, 2.0, 3.0, 1.0, 2.0, 0.0, 2.5]])
    mask = J._pareto_candidates(u, v, torch.ones(1, 7, dtype=torch.bool))
    assert mask[0].tolist() == [True, True, True, False, True, False, True]


def _dominator_counts(u, v, domain):
    """Brute force: number of features of the domain dominating each feature (strict order)."""
    n = len(u)
    counts = np.zeros(n, int)
    for q in range(n):
        for d in range(n):
            if d != q and domain[d] and u[d] >= u[q] and v[d] >= v[q] and (
                    u[d] > u[q] or v[d] > v[q] or d < q):
                counts[q] += 1
    return counts


def test_pareto_candidates_cover_every_feature_with_at_most_one_dominator(rng):
    # Small integers: many ties, the hard case for the index tie rule.
    u = torch.from_numpy(rng.integers(-3, 4, size=(6, 30)).astype(np.float32))
    v = torch.from_numpy(rng.integers(-3, 4, size=(6, 30)).astype(np.float32))
    domain = torch.from_numpy(rng.uniform(size=(6, 30)) < 0.8)
    mask = J._pareto_candidates(u, v, domain)
    for i in range(6):
        need = (_dominator_counts(u[i].numpy(), v[i].numpy(), domain[i].numpy()) <= 1) & domain[i].numpy()
        got = mask[i].numpy()
        assert (got[need]).all() and not got[~domain[i].numpy()].any()
        assert got.sum() <= need.sum() + 6                       # a superset, but a tight one


@pytest.mark.parametrize("budget_bytes", [1, 2**20])
def test_search_ties_follow_the_first_pair(rng, budget_bytes):
    # Small integers: many pairs share the best score.
    alpha = torch.from_numpy(rng.integers(-2, 3, size=(4, 12)).astype(np.float32))
    beta = torch.from_numpy(rng.integers(-2, 3, size=(4, 12)).astype(np.float32))
    domain = torch.ones(4, 12, dtype=torch.bool)
    p, q, found = _search(alpha, beta, domain, True, budget_bytes)
    for i in range(4):
        ref = _reference_pair(alpha[i].numpy(), beta[i].numpy(), domain[i].numpy(), True)
        assert (p[i].item(), q[i].item()) == ref


def test_search_keeps_pairs_whose_score_underflows_to_zero():
    # a = b = 2e-30 > 0, so (p, q) is admissible, but a·b = 4e-60 is 0 in float32; the reference
    # double loop still takes the first such pair, and so must the search.
    alpha = torch.tensor([[-1.0, 1e-30, 1e-30, 1e-30]])
    beta = torch.tensor([[5.0, -1e-30, -1e-30, -1e-30]])
    ref = _reference_pair(alpha[0].numpy(), beta[0].numpy(), np.ones(4, bool), True)
    p, q, found = _search(alpha, beta, torch.ones(1, 4, dtype=torch.bool), True, 2**20)
    assert ref == (1, 2) and (p.item(), q.item(), found.item()) == (1, 2, True)


def test_search_reports_rows_without_admissible_pairs():
    alpha = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, -5.0]])
    beta = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 9.0]])
    p, q, found = _search(alpha, beta, torch.ones(2, 3, dtype=torch.bool), True, 2**20)
    assert found.tolist() == [False, True] and (p[1].item(), q[1].item()) == (0, 1)


# ------------------------------------------------------------------------ full attack properties
def test_thirteen_classes_two_backward_passes_equal_full_jacobian(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 13)).double().eval()
    x = torch.rand(3, 3, 2, 2, dtype=torch.float64) * 0.8
    with torch.no_grad():
        target = (model(x).argmax(1) + 5) % 13
    # one iteration: γ·N/2 = (1/6)·12/2 = 1
    x_adv, info = jsma(model, x, target=target, gamma=1 / 6, theta=0.5, return_info=True)
    assert info.n_iter.tolist() == [1, 1, 1]
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x[i]).reshape(13, 12)
        t = target[i].item()
        alpha = jac[t]
        beta = sum(jac[j] for j in range(13) if j != t)      # the slow way: every other class
        p, q = _reference_pair(alpha.numpy(), beta.numpy(), np.ones(12, bool), True)
        expected = x[i].reshape(12).clone()
        expected[[p, q]] = (expected[[p, q]] + 0.5).clamp(max=1.0)
        assert torch.equal(x_adv[i].reshape(12), expected)


def test_budget_clip_direction_and_untouched_inputs(rng):
    model = _small_cnn(seed=1)
    model[0].weight.requires_grad_(False)
    x = torch.rand(6, 1, 8, 8)
    before = x.clone()
    target = torch.tensor([1, 2, 3, 4, 5, 6])
    x_adv, info = jsma(model, x, target=target, gamma=0.1, theta=0.3, return_info=True)
    max_iter = math.floor(0.1 * 64 / 2)                     # = 3
    assert torch.equal(x, before)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]
    assert (info.n_iter <= max_iter).all() and (info.n_changed <= 2 * info.n_iter).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv >= x).all()
    d = (x_adv - x).flatten(1)
    assert torch.equal(info.n_changed, (d != 0).sum(1)) and torch.equal(info.l0, info.n_changed)
    torch.testing.assert_close(info.l2, d.double().norm(dim=1))
    with torch.no_grad():
        assert torch.equal(info.success, model(x_adv).argmax(1) == target)


def test_iteration_budget_is_floor_gamma_n_over_2():
    # α = +1 and β = −1 everywhere, so every pair is admissible; the target bias keeps the target
    # unreachable, so the attack runs to the budget: ⌊0.58·100/2⌋ = 29 (float 0.58·100 = 57.999…).
    w = [[-1.0] * 100, [1.0] * 100]
    model = _linear(w, [0.0, -1000.0])
    for gamma, iters in [(0.58, 29), (0.1, 5), (0.03, 1), (0.01, 0)]:
        x_adv, info = jsma(model, torch.zeros(1, 1, 10, 10), target=torch.tensor([1]), gamma=gamma, return_info=True)
        assert info.n_iter.item() == iters and info.n_changed.item() == 2 * iters
        assert not info.success.item()


def test_torchattacks_iteration_rule_is_ceil_gamma_n_over_2():
    w = [[-1.0] * 100, [1.0] * 100]
    model = _linear(w, [0.0, -1000.0])
    for gamma, iters in [(0.58, 29), (0.1, 5), (0.03, 2), (0.01, 1), (0.011, 1)]:
        _, info = jsma(model, torch.zeros(1, 1, 10, 10), target=torch.tensor([1]), gamma=gamma, iterations="ceil",
                       return_info=True)
        assert info.n_iter.item() == iters, gamma


def test_torchattacks_search_domain_starts_below_0_99():
    # α = +1, β = −1 everywhere: every pair is admissible; features 0..3 sit at 0.995, so they are
    # in Γ under the paper's rule (below the clip maximum 1) and not under torchattacks' (below 0.99).
    w = [[-1.0] * 10, [1.0] * 10]
    model = _linear(w, [0.0, -1000.0])
    x = torch.zeros(1, 1, 1, 10)
    x[..., :4] = 0.995
    paper = jsma(model, x, target=torch.tensor([1]), gamma=0.2, theta=0.001)     # 1 iteration
    ta = jsma(model, x, target=torch.tensor([1]), gamma=0.2, theta=0.001, domain_below=0.99)
    assert (paper != x).flatten().nonzero().flatten().tolist() == [0, 1]       # first optimal pair
    assert (ta != x).flatten().nonzero().flatten().tolist() == [4, 5]


def test_finished_images_stop_changing(rng):
    model = _small_cnn(seed=2)
    x = torch.rand(8, 1, 8, 8) * 0.5
    with torch.no_grad():
        target = (model(x).argmax(1) + 1) % 10
    small, info_s = jsma(model, x, target=target, gamma=0.1, return_info=True)
    large, info_l = jsma(model, x, target=target, gamma=0.4, return_info=True)
    ok = info_s.success
    assert ok.any() and (~ok).any()
    assert torch.equal(large[ok], small[ok]) and torch.equal(info_l.n_iter[ok], info_s.n_iter[ok])
    assert (info_l.n_iter[~ok] >= info_s.n_iter[~ok]).all()
    # batching does not change anything either
    assert torch.equal(jsma(model, x, target=target, gamma=0.1, batch_size=3), small)


def test_target_already_predicted_changes_nothing(rng):
    model = _small_cnn()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        pred = model(x).argmax(1)
    x_adv, info = jsma(model, x, target=pred, return_info=True)
    assert torch.equal(x_adv, x) and info.success.all() and (info.n_iter == 0).all()


def test_random_targets_avoid_the_label_and_are_reproducible(rng):
    model = _small_cnn(k=4)
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 4, (64,))
    kw = dict(gamma=0.04, return_info=True)                 # 1 iteration: fast
    t1 = jsma(model, x, y=y, seed=7, **kw)[1].target
    assert (t1 != y).all() and set(t1.tolist()) == {0, 1, 2, 3}
    assert torch.equal(t1, jsma(model, x, y=y, seed=7, **kw)[1].target)
    assert not torch.equal(t1, jsma(model, x, y=y, seed=8, **kw)[1].target)
    assert torch.equal(t1, jsma(model, x, y=y, seed=7, batch_size=5, **kw)[1].target)
    with torch.no_grad():
        pred = model(x).argmax(1)
    t_pred = jsma(model, x, seed=7, **kw)[1].target         # no y: relative to the prediction
    assert (t_pred != pred).all()


def test_colour_input_counts_channel_values_as_features(rng):
    model = _small_cnn(c=3, hw=4, seed=3)
    x = torch.rand(5, 3, 4, 4) * 0.9
    with torch.no_grad():
        target = (model(x).argmax(1) + 3) % 10
    x_adv, info = jsma(model, x, target=target, gamma=0.25, return_info=True)   # N = 48 → 6 iterations
    assert x_adv.shape == x.shape and (info.n_iter <= 6).all()
    changed = x_adv != x
    assert torch.equal(info.n_changed, changed.flatten(1).sum(1))
    assert torch.equal(info.l0, changed.any(1).flatten(1).sum(1))
    assert (info.l0 <= info.n_changed).all() and (info.n_changed == 2 * info.n_iter).all()


def test_memory_budget_does_not_change_the_result(rng):
    model = _small_cnn(seed=4)
    x = torch.rand(4, 1, 8, 8)
    t = torch.tensor([0, 1, 2, 3])
    assert torch.equal(jsma(model, x, target=t, gamma=0.2, memory_budget_mb=1e-4),
                       jsma(model, x, target=t, gamma=0.2))


def test_float64_and_info_type(rng):
    model = _small_cnn(dtype=torch.float64)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    x_adv, info = jsma(model, x, target=torch.tensor([1, 2]), gamma=0.05, return_info=True)
    assert x_adv.dtype == torch.float64 and isinstance(info, JSMAInfo)


_X_RULE = ("jsma: x must be a floating-point tensor of shape (N, C, H, W) with every size >= 1 and values in "
           "[0, 1] (the clip range); got ")


def _labels_rule(name):
    return (f"jsma: {name} must be an int64 tensor of shape (1,) (one per image of x) with values in [0, 3) "
            f"(the model has 3 outputs); got ")


def _exactly(message):
    return f"^{re.escape(message)}$"


def test_jsma_errors():
    model = _hand_model()
    x, t = torch.zeros(1, 1, 1, 6), torch.tensor([2])
    with pytest.raises(ValueError, match="jsma: model is in training mode"):
        jsma(model.train(), x, target=t)
    model.eval()
    for theta in (0, 0.0, float("inf"), float("nan"), -float("inf"), 10**400):  # one rule for every failure
        message = f"jsma: theta must be a finite nonzero number; got {theta!r}."
        with pytest.raises(ValueError, match=_exactly(message)) as info:
            jsma(model, x, target=t, theta=theta)
        assert not isinstance(info.value, TypeError)
    for theta in (True, "1", None):
        with pytest.raises(TypeError, match=_exactly(f"jsma: theta must be a finite nonzero number; got {theta!r}.")):
            jsma(model, x, target=t, theta=theta)
    with pytest.raises(ValueError, match=r"^jsma: gamma must be a finite number in \(0, 1\]; got 1.5\.$"):
        jsma(model, x, target=t, gamma=1.5)
    with pytest.raises(ValueError, match=r"^jsma: gamma must be a finite number in \(0, 1\]; got 0\.$"):
        jsma(model, x, target=t, gamma=0)
    with pytest.raises(ValueError, match=r"^jsma: selection must be one of pairwise, single; got 'triple'\.$"):
        jsma(model, x, target=t, selection="triple")
    with pytest.raises(ValueError, match=_exactly(_labels_rule("y") +
                                                  "int64 tensor of shape (2,).")):
        jsma(model, x, torch.tensor([0, 1]), target=t)
    with pytest.raises(ValueError, match=r"^jsma: iterations must be one of floor, ceil; got 'round'\.$"):
        jsma(model, x, target=t, iterations="round")
    with pytest.raises(ValueError, match=r"^jsma: domain_below must be None or a finite number in \(0.0, 1.0\]; got 0\.$"):
        jsma(model, x, target=t, domain_below=0)
    with pytest.raises(ValueError, match=r"jsma: domain_below applies to theta > 0"):
        jsma(model, x, target=t, theta=-1.0, domain_below=0.99)
    with pytest.raises(ValueError, match=_exactly(_labels_rule("target") +
                                                  "int64 tensor of shape (1,) with values in [3, 3].")):
        jsma(model, x, target=torch.tensor([3]))
    with pytest.raises(TypeError, match=_exactly(_labels_rule("target") +
                                                 "float32 tensor of shape (1,).")):
        jsma(model, x, target=torch.tensor([2.0]))
    with pytest.raises(ValueError, match=_exactly(_labels_rule("y") +
                                                  "int64 tensor of shape (2,).")):
        jsma(model, x, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=_exactly("jsma: memory_budget_mb must be a finite number > 0; got 0.")):
        jsma(model, x, target=t, memory_budget_mb=0)
    with pytest.raises(ValueError, match=_exactly("jsma: batch_size must be an int >= 1; got 0.")):
        jsma(model, x, target=t, batch_size=0)
    with pytest.raises(ValueError, match=_exactly("jsma: seed must be an int >= 0; got -2.")):
        jsma(model, x, seed=-2)
    with pytest.raises(ValueError, match=_exactly("jsma: return_info must be a bool; got 1.")):
        jsma(model, x, target=t, return_info=1)
    with pytest.raises(ValueError, match=_exactly("jsma: return_info must be a bool; got 10.")):
        jsma(model, x, target=t, return_info=10)
    with pytest.raises(TypeError, match=_exactly(_X_RULE + "uint8 tensor of shape (1, 1, 1, 6) "
                                                 "(convert with ddl.data.to_float_images or x.float() / 255).")):
        jsma(model, x.to(torch.uint8), target=t)
    with pytest.raises(ValueError, match=_exactly(_X_RULE + "float32 tensor of shape (1, 1, 1, 6) "
                                                  "with values in [-1, -1].")):
        jsma(model, x - 1, target=t)
