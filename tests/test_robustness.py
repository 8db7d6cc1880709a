"""ddl.robustness: threat models, exact ε bound, best-iterate PGD, AutoAttack on a linear model
(analytic worst case), sanity flags, worst case per image, and the ``ddl robustness`` CLI."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddl.defence import DictionaryDenoiser
from ddl.robustness import (DefendedModel, autoattack, compute_flags, defended, evaluate_robustness,
                            parse_attack, pgd_linf, project_linf, soft_surrogate, within_linf)
from ddl.robustness.evaluate import RobustnessResult, eps_key


# ----------------------------------------------------------------------------- fixtures
def _linear(n_in: int, n_classes: int, seed: int, dtype=torch.float32) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(n_in, n_classes).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n_classes, n_in, generator=g, dtype=dtype))
        lin.bias.zero_()
    return nn.Sequential(nn.Flatten(), lin).eval()


@pytest.fixture(scope="module")
def denoiser():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, 8, 8, generator=g)
    return DictionaryDenoiser(patch_size=3, n_components=16, n_nonzero_coefs=1,
                              remove_mean=False, max_patches=2000).fit(x)


def _images(n=12, seed=1, shape=(1, 8, 8), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g, dtype=dtype)


# ----------------------------------------------------------------------------- threat models
def test_bpda_gradient_is_the_bare_gradient_at_the_denoised_point(denoiser):
    model = _linear(64, 4, seed=2)
    x, y = _images(), torch.arange(12) % 4
    xr = x.clone().requires_grad_(True)
    (g_bpda,) = torch.autograd.grad(F.cross_entropy(defended(model, denoiser, "bpda")(xr), y,
                                                    reduction="sum"), xr)
    xd = denoiser.transform(x).detach().requires_grad_(True)
    (g_bare,) = torch.autograd.grad(F.cross_entropy(model(xd), y, reduction="sum"), xd)
    torch.testing.assert_close(g_bpda, g_bare, rtol=0, atol=0)


def test_soft_forward_is_the_real_denoiser_bit_for_bit_and_backward_the_surrogate(denoiser):
    x = _images()
    wrapper = DefendedModel(nn.Identity(), denoiser, "soft", beta=7.0)
    xr = x.clone().requires_grad_(True)
    out = wrapper(xr)
    assert torch.equal(out.detach(), denoiser.transform(x))
    v = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (g_wrap,) = torch.autograd.grad((out * v).sum(), xr)
    xs = x.clone().requires_grad_(True)
    (g_sur,) = torch.autograd.grad((soft_surrogate(denoiser, xs, 7.0) * v).sum(), xs)
    torch.testing.assert_close(g_wrap, g_sur, rtol=0, atol=0)
    assert g_wrap.abs().sum() > 0


def test_run_robustness_n_images_must_be_an_int():
    from ddl.experiments.robustness_run import run_robustness

    for value, error in ((True, TypeError), (2.5, TypeError), (0, ValueError)):
        message = f"ddl robustness: --n-images must be an int >= 1; got {value!r}."
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            run_robustness(dataset="mnist", model_name="mlp", n_images=value, eps=[0.1], out="never")


def test_defended_model_stores_numpy_numbers_as_python_numbers():
    wrapper = DefendedModel(nn.Identity(), None, "bpda", beta=np.float32(2.0), eot_samples=np.int64(3))
    assert type(wrapper.eot_samples) is int and wrapper.eot_samples == 3
    assert type(wrapper.beta) is float and wrapper.beta == 2.0


def test_soft_surrogate_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    D = F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1)
    for remove_mean, k in ((False, 1), (True, 2)):
        den = DictionaryDenoiser.from_dictionary(D, patch_size=2, n_nonzero_coefs=k,
                                                 remove_mean=remove_mean)
        x = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: soft_surrogate(den, t, 3.0), (x,))


def test_soft_surrogate_tends_to_the_real_reconstruction_as_beta_grows(denoiser):
    # float64, so that the softmax can be made as sharp as the gaps between correlations need
    den = DictionaryDenoiser.from_dictionary(denoiser.dictionary_.double(), patch_size=3,
                                             n_nonzero_coefs=1, remove_mean=False, clip=False)
    x = _images(seed=5, dtype=torch.float64)
    ref = den.transform(x)                                     # the real reconstruction, unclipped
    errors = [float((soft_surrogate(den, x, b) - ref).abs().max()) for b in (1.0, 10.0, 1e2, 1e4, 1e6)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-6, errors


def test_threat_models_do_not_mutate_the_denoiser(denoiser):
    before = denoiser.grad
    model = _linear(64, 4, seed=2)
    x = _images().requires_grad_(True)
    for t in ("bpda", "exact", "soft"):
        defended(model, denoiser, t)(x).sum().backward()
    assert denoiser.grad == before


def test_exact_threat_is_autograd_through_any_module():
    model = _linear(64, 4, seed=6)
    blur = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    x = _images().requires_grad_(True)
    (g1,) = torch.autograd.grad(defended(model, blur, "exact")(x).sum(), x)
    (g2,) = torch.autograd.grad(model(blur(x)).sum(), x)
    torch.testing.assert_close(g1, g2)


def test_eot_averages_gradients_of_a_randomised_defence():
    class Noise(nn.Module):                        # x + fixed-seed noise per call
        def __init__(self):
            super().__init__()
            self.g = torch.Generator().manual_seed(0)

        def forward(self, x):
            return x + 0.1 * torch.randn(x.shape, generator=self.g, dtype=x.dtype)

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 1, bias=False)).eval()
    x = _images(n=1).requires_grad_(True)
    wrapper = DefendedModel(model, Noise(), "exact", eot_samples=4)
    (g,) = torch.autograd.grad(torch.tanh(wrapper(x)).sum(), x)
    noise = Noise()
    grads = []
    for _ in range(4):
        xi = x.detach().clone().requires_grad_(True)
        grads.append(torch.autograd.grad(torch.tanh(model(noise(xi))).sum() / 4, xi)[0])
    # the gradient of the mean of the logits, not the mean of tanh: compare with that
    xm = x.detach().clone().requires_grad_(True)
    noise = Noise()
    mean_logit = torch.stack([model(noise(xm)) for _ in range(4)]).mean(0)
    (g_ref,) = torch.autograd.grad(torch.tanh(mean_logit).sum(), xm)
    torch.testing.assert_close(g, g_ref)


# ----------------------------------------------------------------------------- ε bound
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [0.1, 0.3, 8 / 255, 2 / 255])
def test_projection_is_within_eps_exactly_and_in_the_box(dtype, eps):
    g = torch.Generator().manual_seed(7)
    x = (torch.randint(0, 256, (50_000,), generator=g) / 255).to(dtype)
    far = x + (torch.rand(50_000, generator=g, dtype=dtype) * 4 - 2) * eps
    out = project_linf(far, x, eps)
    assert bool(within_linf(out, x, eps).all())
    assert bool(((out - x).abs() <= eps).all())               # and compared in the dtype itself
    assert out.min() >= 0 and out.max() <= 1
    # the naive projection overshoots in float32: the fix is needed there
    naive = torch.max(torch.min(far, x + eps), x - eps).clamp(0, 1)
    if dtype == torch.float32:
        assert not bool(within_linf(naive, x, eps).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attacks_respect_eps_exactly(dtype, denoiser):
    model = _linear(64, 4, seed=8).to(dtype)
    x, y = _images(dtype=dtype), torch.arange(12) % 4
    for eps in (0.1, 0.3):
        adv, _ = pgd_linf(model, x, y, eps=eps, steps=5)
        assert adv.dtype == dtype and bool(within_linf(adv, x, eps).all())
        assert adv.min() >= 0 and adv.max() <= 1
        for name in ("apgd-ce", "square"):
            adv = autoattack(model, x, y, attack=name, eps=eps, n_iter=5, n_queries=20)
            assert adv.dtype == dtype and bool(within_linf(adv, x, eps).all())


# ----------------------------------------------------------------------------- attacks
def _analytic_linear_accuracy(model, x, y, eps):
    """Linear model, ε-ball inside [0, 1]: image i is breakable iff for some j ≠ y the margin
    z_y − z_j at x − ε·sign(w_y − w_j) is negative (exact worst case)."""
    W = model[1].weight.detach()
    robust = []
    for xi, yi in zip(x.flatten(1), y):
        ok = True
        for j in range(W.shape[0]):
            if j == yi:
                continue
            d = W[yi] - W[j]
            x_star = xi - eps * torch.sign(d)
            ok &= bool((d @ x_star) > 0)
        robust.append(ok and bool(model(xi.view(1, 1, 4, 4)).argmax() == yi))
    return torch.tensor(robust)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pgd_and_apgd_reach_the_analytic_worst_case_on_a_linear_model(seed):
    model = _linear(16, 5, seed=10 + seed)                     # APGD-T's DLR loss needs >= 4 classes
    with torch.no_grad():                                      # zero-sum rows: every class occurs
        model[1].weight.sub_(model[1].weight.mean(1, keepdim=True))
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(60, 1, 4, 4, generator=g)       # ε-balls stay inside [0, 1]
    y = model(x).argmax(1)                                     # clean-correct by construction
    eps = 0.02
    expected = _analytic_linear_accuracy(model, x, y, eps)
    assert 0 < expected.sum() < len(x)                         # a mix: the test can fail
    # untargeted CE attacks are sound (never beyond the analytic worst case) but can miss: the
    # CE gradient pulls towards the most likely wrong class, not the breakable one
    _, fooled = pgd_linf(model, x, y, eps=eps, steps=40)
    assert not bool((fooled & expected).any())
    adv = autoattack(model, x, y, attack="apgd-ce", eps=eps, n_iter=10)
    with torch.no_grad():
        assert not bool(((model(adv).argmax(1) != y) & expected).any())
    # targeted APGD over every wrong class reaches the analytic worst case exactly (on a linear
    # model the sign step lands on the vertex at once: 10 iterations are plenty)
    adv = autoattack(model, x, y, attack="apgd-t", eps=eps, n_iter=10, n_target_classes=4)
    with torch.no_grad():
        survived = model(adv).argmax(1) == y
    assert torch.equal(survived, expected)
    # and so does the worst case per image of a suite that contains it
    res = evaluate_robustness(model, x, y, eps=[eps], attacks=["pgd:bpda", "apgd-t:bpda"],
                              n_target_classes=4, apgd_iter=10, pgd_steps=40, unbounded=False)
    assert torch.equal(res.worst_survival[eps_key(eps)], expected)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_best_iterate_breaks_at_least_as_many_as_last_iterate(seed):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = _images(n=40, seed=seed)
    y = model(x).argmax(1)
    _, best = pgd_linf(model, x, y, eps=0.05, steps=10, step_size=0.05, best_iterate=True)
    _, last = pgd_linf(model, x, y, eps=0.05, steps=10, step_size=0.05, best_iterate=False)
    assert bool((best | ~last).all())                          # every last-iterate break is found
    assert best.sum() >= last.sum()


def test_pgd_is_seeded_and_leaves_the_global_rng_alone():
    model = _linear(64, 4, seed=2)
    x, y = _images(), torch.arange(12) % 4
    state = torch.random.get_rng_state()
    a, _ = pgd_linf(model, x, y, eps=0.1, steps=3, seed=5)
    autoattack(model, x, y, attack="square", eps=0.1, n_queries=10, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    b, _ = pgd_linf(model, x, y, eps=0.1, steps=3, seed=5)
    assert torch.equal(a, b)
    # per-image random starts: neither the batch size nor the company changes an image's result
    c, _ = pgd_linf(model, x, y, eps=0.1, steps=3, seed=5, batch_size=5)
    assert torch.equal(a, c)
    d, _ = pgd_linf(model, x[4:], y[4:], eps=0.1, steps=3, seed=5, image_ids=range(4, 12))
    assert torch.equal(a[4:], d)


def test_parse_attack_rules():
    assert parse_attack("pgd:soft") == ("pgd", "soft")
    assert parse_attack("square") == ("square", None)
    with pytest.raises(ValueError, match="needs a threat model"):
        parse_attack("pgd")
    with pytest.raises(ValueError, match="black-box"):
        parse_attack("square:bpda")
    with pytest.raises(ValueError, match="unknown attack 'cw'"):
        parse_attack("cw:bpda")
    with pytest.raises(ValueError, match=re.escape(
            "evaluate_robustness: unknown threat model 'bdpa' (did you mean 'bpda'?) in 'pgd:bdpa'; choose one "
            "of: oblivious, bpda, exact, soft.")):
        parse_attack("pgd:bdpa")


def test_evaluate_robustness_refuses_images_outside_0_1_and_labels_outside_the_classes():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 2])
    with pytest.raises(ValueError, match="^" + re.escape(
            "evaluate_robustness: x must be a floating-point tensor of shape (N, C, H, W) with every size >= 1 and "
            "values in [0, 1]; got float32 tensor of shape (2, 1, 2, 2) with values in [2, 2].") + "$"):
        evaluate_robustness(model, torch.full((2, 1, 2, 2), 2.0), y, eps=0.1)
    with pytest.raises(ValueError, match="^" + re.escape(
            "evaluate_robustness: y must be an int64 tensor of shape (2,) (one per image of x) with values in "
            "[0, 3) (the model has 3 outputs); got int64 tensor of shape (2,) with values in [0, 3].") + "$"):
        evaluate_robustness(model, x, torch.tensor([0, 3]), eps=0.1)


# ----------------------------------------------------------------------------- evaluation + flags
class _Quantise(nn.Module):
    """Rounds to 4 levels: a zero gradient almost everywhere (a classic masked defence)."""

    def forward(self, x):
        return torch.round(x * 3) / 3


class _Constant(nn.Module):
    """Maps every image to one fixed image: nothing the attacker does matters."""

    def __init__(self, image):
        super().__init__()
        self.image = image

    def forward(self, x):
        return self.image.expand_as(x) + 0 * x


def _broken_at_03_model():
    """Linear, 4 classes, zero-sum rows: every class occurs, and ε = 0.3 breaks every image."""
    model = _linear(16, 4, seed=21)
    with torch.no_grad():
        model[1].weight.sub_(model[1].weight.mean(1, keepdim=True))
    return model


def _data_for(model, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    return x, model(x).argmax(1)


_FAST = dict(pgd_steps=20, apgd_iter=20, square_queries=100, batch_size=64)


def test_flags_silent_on_a_plain_linear_model():
    model = _broken_at_03_model()
    x, y = _data_for(model)
    res = evaluate_robustness(model, x, y, defence=nn.Identity(), eps=[0.1, 0.2, 0.3],
                              attacks=["pgd:bpda", "pgd:exact", "square"], **_FAST)
    assert res.flags == [], res.flags
    assert res.bare_pgd[eps_key(0.3)] <= 0.01
    assert res.unbounded_accuracy == 0.0


def test_zero_gradient_masked_gradient_and_weak_attack_flags_fire():
    model = _broken_at_03_model()
    x, y = _data_for(model)
    res = evaluate_robustness(model, x, y, defence=_Quantise(), eps=[0.1, 0.3],
                              attacks=["pgd:exact", "square"], unbounded=False, **_FAST)
    codes = {f["code"] for f in res.flags}
    assert "zero_gradients" in codes and "masked_gradients" in codes
    from ddl.robustness.flags import TRUST

    assert all(f["message"].endswith(" " + TRUST[f["code"]]) for f in res.flags)
    # bare model behind an input quantiser: PGD on it cannot move → "attack too weak"
    masked = nn.Sequential(_Quantise(), model).eval()
    res = evaluate_robustness(masked, x, y, eps=[0.3], attacks=["pgd:bpda"], unbounded=False,
                              **_FAST)
    assert "weak_attack" in {f["code"] for f in res.flags} and res.params["weak_attack_checked"]
    # the same outcome from an adversarially trained bare model is what training aimed at: no flag
    robust = evaluate_robustness(masked, x, y, eps=[0.3], attacks=["pgd:bpda"], unbounded=False,
                                 robust_bare_model=True, **_FAST)
    assert robust.bare_pgd == res.bare_pgd and robust.flags == [] and not robust.params["weak_attack_checked"]
    # ... but then the ε = 1 check runs without a defence, and catches the attack that cannot move
    checked = evaluate_robustness(masked, x, y, eps=[0.3], attacks=["pgd:bpda"], robust_bare_model=True, **_FAST)
    assert checked.unbounded_accuracy is not None and checked.unbounded_accuracy > 0.25   # ε = 1 should reach 0
    assert [f["code"] for f in checked.flags] == ["unbounded_above_chance"]
    plain = evaluate_robustness(model, x, y, eps=[0.3], attacks=["pgd:bpda"], robust_bare_model=True, **_FAST)
    assert plain.unbounded_accuracy == 0.0 and plain.flags == []   # an attack that works: no flag
    assert evaluate_robustness(model, x, y, eps=[0.3], attacks=["pgd:bpda"], **_FAST).unbounded_accuracy is None


def test_unbounded_flag_fires_when_nothing_can_move_the_prediction():
    model = _broken_at_03_model()
    x, _ = _data_for(model)
    const = _Constant(x[:1])
    y = model(const(x)).argmax(1)                             # every label = the constant's class
    res = evaluate_robustness(model, x, y, defence=const, eps=[0.3], attacks=["pgd:exact"], **_FAST)
    assert res.unbounded_accuracy == 1.0
    assert "unbounded_above_chance" in {f["code"] for f in res.flags}


def test_non_monotonic_flag_from_a_result():
    n = 10
    t = lambda bits: torch.tensor(bits, dtype=torch.bool)     # noqa: E731
    res = RobustnessResult(
        n_images=n, eps=[0.1, 0.2], clean_accuracy={"bare": 1.0, "defended": 1.0},
        attacks={"pgd:bpda": {"0.1": 0.5, "0.2": 0.7}}, worst_case={"0.1": 0.5, "0.2": 0.5},
        bare_pgd={"0.1": 0.0, "0.2": 0.0},
        survival={"pgd:bpda": {"0.1": t([1] * 5 + [0] * 5), "0.2": t([1] * 7 + [0] * 3)}},
        worst_survival={}, clean_correct={"bare": t([1] * n), "defended": t([1] * n)},
        flags=[], seconds={}, unbounded_accuracy=None)
    flags = compute_flags(res, model=nn.Identity(), defence=None, x=torch.zeros(n, 1, 2, 2),
                          y=torch.zeros(n, dtype=torch.long), n_classes=10, n_channels=1)
    assert [f["code"] for f in flags] == ["non_monotonic"]
    assert "'pgd:bpda'" in flags[0]["message"]


# Hand-made attacks on 1-pixel images: class 1 iff the pixel is > 0.5, and an attack "breaks"
# an image by mapping x to 1 - x. Which attack breaks which image at which ε is written below by
# hand, and so is every expected number.
_HAND_X = torch.tensor([0.2, 0.8, 0.3, 0.7, 0.1, 0.9]).view(6, 1, 1, 1)
_HAND_Y = torch.tensor([0, 1, 0, 1, 0, 0])           # image 5 (0.9, class 1) is misclassified clean
_HAND_BREAKS = {                                     # (attack, ε) → ids of the images it breaks
    ("pgd:oblivious", 0.1): {0}, ("pgd:bpda", 0.1): {1, 5}, ("apgd-ce:bpda", 0.1): {1, 2, 3},
    ("square", 0.1): set(), ("bare-pgd", 0.1): {0},
    ("pgd:oblivious", 0.3): {0, 1}, ("pgd:bpda", 0.3): {0, 1, 2}, ("apgd-ce:bpda", 0.3): {1, 2, 3},
    ("square", 0.3): {3, 4}, ("bare-pgd", 0.3): {0, 1, 2, 3, 4},
}
_HAND_ATTACKS = ["pgd:oblivious", "pgd:bpda", "apgd-ce:bpda", "square"]


def _hand_model():
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        lin.bias.copy_(torch.tensor([0.5, -0.5]))
    return nn.Sequential(nn.Flatten(), lin).eval()


@pytest.fixture
def hand_attacks(monkeypatch):
    """Replaces the attacks by the table ``_HAND_BREAKS``; returns the log of the image ids each
    (attack, ε) was asked to attack."""
    import ddl.robustness.evaluate as ev

    asked: dict[tuple[str, float], list[int]] = {}

    def apply(name, x, eps, image_ids):
        ids = [int(i) for i in image_ids]
        asked.setdefault((name, eps), []).extend(ids)
        hit = torch.tensor([i in _HAND_BREAKS[(name, eps)] for i in ids]).view(-1, 1, 1, 1)
        return torch.where(hit, 1 - x, x)

    def fake_pgd(model, x, y, *, eps, image_ids, **_):
        name = f"pgd:{model.threat}" if isinstance(model, DefendedModel) else "bare-pgd"
        return apply(name, x, eps, image_ids), None

    def fake_autoattack(model, x, y, *, attack, eps, image_ids, **_):
        return apply(attack if attack == "square" else f"{attack}:{model.threat}", x, eps, image_ids)

    monkeypatch.setattr(ev, "pgd_linf", fake_pgd)
    monkeypatch.setattr(ev, "autoattack", fake_autoattack)
    return asked


def _bits(*values):
    return torch.tensor(values, dtype=torch.bool)


@pytest.mark.parametrize("cascade", [False, True])
def test_worst_case_per_image_on_hand_made_attacks(hand_attacks, cascade):
    res = evaluate_robustness(_hand_model(), _HAND_X, _HAND_Y, eps=[0.1, 0.3], attacks=_HAND_ATTACKS,
                              cascade=cascade, chunk_size=4)
    assert torch.equal(res.clean_correct["defended"], _bits(1, 1, 1, 1, 1, 0))
    # only image 4 is left by every attack at 0.1; none at 0.3; image 5 never counts
    assert torch.equal(res.worst_survival["0.1"], _bits(0, 0, 0, 0, 1, 0))
    assert torch.equal(res.worst_survival["0.3"], _bits(0, 0, 0, 0, 0, 0))
    assert res.worst_case == {"0.1": 1 / 6, "0.3": 0.0}
    assert res.bare_pgd == {"0.1": 4 / 6, "0.3": 0.0}
    assert res.first_breaks() == {"0.1": {"pgd:oblivious": 1, "pgd:bpda": 1, "apgd-ce:bpda": 2, "square": 0},
                                  "0.3": {"pgd:oblivious": 2, "pgd:bpda": 1, "apgd-ce:bpda": 1, "square": 1}}
    if cascade:    # cumulative columns; each attack saw only what the earlier ones left
        assert res.attacks == {"pgd:oblivious": {"0.1": 4 / 6, "0.3": 3 / 6},
                               "pgd:bpda": {"0.1": 3 / 6, "0.3": 2 / 6},
                               "apgd-ce:bpda": {"0.1": 1 / 6, "0.3": 1 / 6},
                               "square": {"0.1": 1 / 6, "0.3": 0.0}}
        assert hand_attacks[("apgd-ce:bpda", 0.1)] == [2, 3, 4]
        assert hand_attacks[("square", 0.1)] == [4] and hand_attacks[("square", 0.3)] == [4]
        # the attack with the most first breaks, not the last one
        assert res.strongest() == {"0.1": "apgd-ce:bpda", "0.3": "pgd:oblivious"}
    else:          # each attack alone, on every image the defended model gets right
        assert res.attacks == {"pgd:oblivious": {"0.1": 4 / 6, "0.3": 3 / 6},
                               "pgd:bpda": {"0.1": 4 / 6, "0.3": 2 / 6},
                               "apgd-ce:bpda": {"0.1": 2 / 6, "0.3": 2 / 6},
                               "square": {"0.1": 5 / 6, "0.3": 3 / 6}}
        assert hand_attacks[("square", 0.1)] == [0, 1, 2, 3, 4]
        assert res.strongest() == {"0.1": "apgd-ce:bpda", "0.3": "pgd:bpda"}   # tie: first in order
    # square breaks image 4, which every gradient attack left standing at 0.3: 1 of 6 images
    assert [f["code"] for f in res.flags] == ["masked_gradients"]
    assert "at eps=0.3 the black-box 'square' breaks 16.7% of images" in res.flags[0]["message"]


def test_intervals_and_paired_tests_on_hand_made_attacks(hand_attacks):
    from scipy.stats import binomtest

    rec = evaluate_robustness(_hand_model(), _HAND_X, _HAND_Y, eps=[0.1, 0.3], attacks=_HAND_ATTACKS,
                              cascade=True).to_dict()
    ci = rec["accuracy_ci"]
    # 1 of 6 by hand: (2np + z² ∓ z sqrt(4np(1-p) + z²)) / (2(n + z²)), z = 1.959964
    assert ci["worst_case"]["0.1"] == pytest.approx([0.030053, 0.563502], abs=1e-6)
    assert ci["worst_case"]["0.3"][0] == 0.0 and ci["clean_accuracy"]["bare"] == pytest.approx([0.436498, 0.969947], abs=1e-6)

    def scipy_ci(acc):
        low, high = binomtest(round(acc * 6), 6).proportion_ci(0.95, method="wilson")
        return pytest.approx([low, high], abs=1e-12)

    assert ci["clean_accuracy"] == {k: scipy_ci(v) for k, v in rec["clean_accuracy"].items()}
    for group in ("worst_case", "bare_pgd"):
        assert ci[group] == {k: scipy_ci(v) for k, v in rec[group].items()}
    assert ci["attacks"] == {a: {k: scipy_ci(v) for k, v in acc.items()} for a, acc in rec["attacks"].items()}
    assert ci["unbounded_accuracy"] is None
    tests = rec["paired_tests"]
    # clean: the same model (no defence), so no discordant image
    assert (tests["defended_vs_bare_clean"]["b01"], tests["defended_vs_bare_clean"]["p_value"]) == (0, 1.0)
    # worst case vs bare PGD at 0.1: images 1, 2, 3 survive bare PGD only; p = 2 / 2**3
    w = tests["worst_case_vs_bare_pgd"]["0.1"]
    assert (w["b01"], w["b10"], w["difference"]) == (3, 0, -0.5)
    assert w["p_value"] == 0.25 == pytest.approx(binomtest(0, 3).pvalue)
    assert tests["worst_case_vs_bare_pgd"]["0.3"]["p_value"] == 1.0          # both 0 of 6
    # oblivious is first in the cascade: its survival is its own
    o = tests["worst_case_vs_oblivious"]["0.3"]
    assert (o["b01"], o["b10"], o["p_value"]) == (3, 0, 0.25)


def test_strongest_is_named_by_its_rule_in_the_record(hand_attacks):
    kw = dict(eps=[0.1, 0.3], attacks=_HAND_ATTACKS)
    casc = evaluate_robustness(_hand_model(), _HAND_X, _HAND_Y, cascade=True, **kw).to_dict()
    assert casc["strongest_attack"] == {"0.1": "apgd-ce:bpda", "0.3": "pgd:oblivious"}
    assert "most images first" in casc["strongest_attack_rule"]
    assert casc["first_breaks"]["0.3"] == {"pgd:oblivious": 2, "pgd:bpda": 1, "apgd-ce:bpda": 1, "square": 1}
    full = evaluate_robustness(_hand_model(), _HAND_X, _HAND_Y, **kw).to_dict()
    assert full["strongest_attack_rule"] == "the attack with the lowest accuracy (ties: the first in order)"


def test_cascade_needs_the_black_box_attack_after_every_gradient_attack():
    model = _broken_at_03_model()
    x, y = _data_for(model, n=4)
    message = ("evaluate_robustness: with cascade=True the black-box attack 'square' must come after every "
               "gradient attack (the masked-gradient flag needs the images they left standing); got "
               "attacks=['pgd:bpda', 'square', 'apgd-ce:bpda'].")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        evaluate_robustness(model, x, y, eps=[0.1], attacks=["pgd:bpda", "square", "apgd-ce:bpda"],
                            cascade=True)
    # without cascade every order is allowed (each attack sees every image)
    evaluate_robustness(model, x, y, eps=[0.1], attacks=["square", "pgd:bpda"], unbounded=False,
                        pgd_steps=2, square_queries=2)


def test_masked_gradients_fires_under_cascade_as_without():
    model = _broken_at_03_model()
    x, y = _data_for(model)
    kw = dict(defence=_Quantise(), eps=[0.1, 0.3], attacks=["pgd:exact", "square"], unbounded=False, **_FAST)
    full = evaluate_robustness(model, x, y, **kw)
    casc = evaluate_robustness(model, x, y, cascade=True, **kw)
    assert "masked_gradients" in {f["code"] for f in casc.flags}
    assert casc.flags == full.flags
    for k in full.worst_case:
        assert torch.equal(casc.worst_survival[k], full.worst_survival[k])


@pytest.mark.parametrize("value, what", [(float("nan"), "with NaN values"),
                                         (float("inf"), "with values in [0.25, inf]")])
def test_evaluate_robustness_refuses_nan_and_infinite_images(value, what):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.full((2, 1, 2, 2), 0.25)
    x[1, 0, 1, 1] = value
    message = ("evaluate_robustness: x must be a floating-point tensor of shape (N, C, H, W) with every size "
               f">= 1 and values in [0, 1]; got float32 tensor of shape (2, 1, 2, 2) {what}.")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        evaluate_robustness(model, x, torch.tensor([0, 2]), eps=0.1)


def _tanh_mlp():
    """16 → 32 → 5, random weights: APGD's random start matters (on a linear model it does not)."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 5)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("model_fn, attack, eps, budget", [
    (_tanh_mlp, "apgd-ce", 0.05, dict(n_iter=3)),
    (_broken_at_03_model, "square", 0.08, dict(n_queries=30)),
])
def test_autoattack_result_of_an_image_does_not_depend_on_its_batch_mates(model_fn, attack, eps, budget):
    model = model_fn()
    x = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    y = model(x).argmax(1)
    every = autoattack(model, x, y, attack=attack, eps=eps, seed=3, **budget)
    some = torch.arange(0, 40, 3)
    alone = autoattack(model, x[some], y[some], attack=attack, eps=eps, seed=3, image_ids=some, **budget)
    assert torch.equal(every[some], alone)
    with torch.no_grad():
        broken = model(every).argmax(1) != y
    assert 0 < int(broken.sum()) < 40                     # a mix: the comparison can fail


def test_cascade_and_full_run_break_the_same_images_with_apgd_and_square():
    # behind an input quantiser APGD's gradient is zero: its random start breaks some images and
    # Square breaks more of the rest, so both attacks' randomness decides images here
    model = _broken_at_03_model()
    x = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    y = model(x).argmax(1)
    kw = dict(defence=_Quantise(), eps=[0.05, 0.1], attacks=["apgd-ce:exact", "square"], apgd_iter=2,
              square_queries=30, unbounded=False)
    full = evaluate_robustness(model, x, y, **kw)
    casc = evaluate_robustness(model, x, y, cascade=True, **kw)
    for k in full.worst_case:
        assert torch.equal(casc.worst_survival[k], full.worst_survival[k])
        assert full.first_breaks()[k]["apgd-ce:exact"] > 0 and full.first_breaks()[k]["square"] > 0
        assert casc.first_breaks()[k] == full.first_breaks()[k]
        assert 0 < full.worst_case[k] < 1


def test_cached_results_are_reused(tmp_path, denoiser, monkeypatch):
    model = _linear(64, 4, seed=30)
    x = _images(n=10, seed=31)
    y = model(x).argmax(1)
    kw = dict(defence=denoiser, eps=[0.1], attacks=["pgd:bpda"], unbounded=False,
              cache_dir=tmp_path, cache_key="k", **_FAST)
    first = evaluate_robustness(model, x, y, **kw)
    import ddl.robustness.evaluate as ev

    monkeypatch.setattr(ev, "pgd_linf", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    second = evaluate_robustness(model, x, y, **kw)
    assert first.attacks == second.attacks and first.bare_pgd == second.bare_pgd


# ----------------------------------------------------------------------------- CLI
def test_cli_writes_every_field(tmp_path, sample_data_dir):
    from ddl.data import load_sample

    out = tmp_path / "rob"
    den = DictionaryDenoiser(patch_size=7, n_components=16, n_nonzero_coefs=1, remove_mean=False,
                             max_patches=5000).fit(load_sample("train")[0][:200])
    den.save(tmp_path / "den.pt")
    cmd = [sys.executable, "-m", "ddl", "robustness", "--dataset", "mnist", "--zoo", "mlp",
           "--defence", str(tmp_path / "den.pt"), "--eps", "0.1", "0.3", "--n-images", "6",
           "--attacks", "pgd:bpda", "square", "--pgd-steps", "3", "--square-queries", "5",
           "--data-dir", str(sample_data_dir), "--out", str(out), "--threads", "1", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "WORST CASE" in proc.stdout
    rec = json.loads((out / "robustness.json").read_text())
    for field in ("dataset", "model", "defence", "n_images", "image_indices", "clean_accuracy", "eps",
                  "attacks", "worst_case", "flags", "seconds"):
        assert field in rec, field
    assert rec["dataset"] == "mnist" and rec["model"] == "mlp" and rec["n_images"] == 6
    assert rec["image_indices"] == list(range(6))
    assert rec["defence"]["n_nonzero_coefs"] == 1 and rec["defence"]["n_components"] == 16
    assert rec["defence"]["dictionary_sha256"] == hashlib.sha256(den.dictionary_.numpy().tobytes()).hexdigest()
    assert set(rec["clean_accuracy"]) == {"bare", "defended"}
    assert set(rec["attacks"]) == {"pgd:bpda", "square"}
    assert set(rec["worst_case"]) == {"0.1", "0.3"}
    for acc in [*rec["worst_case"].values(), *rec["clean_accuracy"].values()]:
        assert 0 <= acc <= 1 and acc * 6 == pytest.approx(round(acc * 6))
    assert all(set(f) == {"code", "message"} for f in rec["flags"])
    # every accuracy has its interval, each comparison its paired test; the machine is recorded
    from ddl._stats import wilson_interval

    assert rec["accuracy_ci"]["worst_case"] == {k: list(wilson_interval(round(v * 6), 6))
                                                for k, v in rec["worst_case"].items()}
    assert set(rec["paired_tests"]) == {"defended_vs_bare_clean", "worst_case_vs_bare_pgd"}
    assert rec["machine"]["omp_kernel"]["used"] in ("native", "torch")
    assert rec["machine"]["threads"]["torch"] == 1 and rec["machine"]["cpu"]["flags_sha256"]
    worst = next(line for line in proc.stdout.splitlines() if line.startswith("WORST CASE"))
    low, high = rec["accuracy_ci"]["worst_case"]["0.3"]
    assert worst.endswith(f"{100 * rec['worst_case']['0.3']:.1f} [{100 * low:.1f}, {100 * high:.1f}]")
    assert "produced by: ddl " in proc.stdout
    # a second run recomputes nothing and gives the same numbers
    proc2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc2.returncode == 0
    rec2 = json.loads((out / "robustness.json").read_text())
    assert rec2["attacks"] == rec["attacks"] and rec2["worst_case"] == rec["worst_case"]


def test_cli_rejects_bad_eps(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ddl", "robustness", "--dataset", "mnist", "--zoo",
                           "mlp", "--eps", "0.3", "0.1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "ddl robustness: error: --eps must be strictly increasing; got 0.3 0.1" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_cli_robustness_refuses_a_device_other_than_cpu(tmp_path, device):
    # the suite runs on the CPU: `--device cuda` was accepted, ignored, and the record said
    # "device cpu"; now it is refused before anything is loaded, the same with or without a GPU
    proc = subprocess.run([sys.executable, "-m", "ddl", "robustness", "--dataset", "mnist", "--zoo",
                           "mlp", "--eps", "0.1", "--device", device, "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"ddl robustness: error: --device: the adaptive suite runs on the "
                                   f"CPU only (use --workers or --ray-address for more cores); "
                                   f"got {device!r}")
    assert not (tmp_path / "r").exists()


def test_cli_tune_refuses_a_device_other_than_cpu(tmp_path):
    # every trial's robust objective runs the adaptive suite, which runs on the CPU
    proc = subprocess.run([sys.executable, "-m", "ddl", "tune", "--datasets", "mnist", "--device", "cuda",
                           "--run-dir", str(tmp_path / "t")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("ddl tune: error: --device: the adaptive suite runs on the CPU only "
                                   "(use --workers or --ray-address for more cores); got 'cuda'")


def test_evaluate_robustness_names_the_devices_when_model_and_images_differ():
    # a model on another device than x failed inside its first forward pass with torch's own error
    from ddl.robustness import evaluate_robustness

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval().to("meta")
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError) as exc:
        evaluate_robustness(model, x, y, eps=0.1, attacks=["pgd:bpda"])
    assert str(exc.value) == ("evaluate_robustness: model and x must be on one device; the model's "
                              "parameters are on meta, x is on cpu.")


def test_report_section_and_figure_from_saved_records(tmp_path):
    from ddl.experiments.robustness_report import load_records, robustness_markdown, write_robustness_report

    rec = {"dataset": "cifar10", "model": "resnet", "n_images": 4, "eps": [2 / 255, 8 / 255],
           "clean_accuracy": {"bare": 1.0, "defended": 0.75},
           "bare_pgd": {repr(2 / 255): 0.25, repr(8 / 255): 0.0},
           "attacks": {"pgd:oblivious": {repr(2 / 255): 0.75, repr(8 / 255): 0.5},
                       "pgd:soft": {repr(2 / 255): 0.5, repr(8 / 255): 0.0}},
           "worst_case": {repr(2 / 255): 0.5, repr(8 / 255): 0.0},
           "strongest_attack": {repr(2 / 255): "pgd:soft", repr(8 / 255): "pgd:soft"},
           "flags": [{"code": "masked_gradients", "message": "m"}], "unbounded_accuracy": 0.0,
           "params": {"pgd_steps": 3}}
    (tmp_path / "cifar10-resnet.json").write_text(json.dumps(rec))
    (tmp_path / "other.json").write_text(json.dumps({"not": "a record"}))
    assert [r["model"] for r in load_records(tmp_path)] == ["resnet"]
    md = robustness_markdown(load_records(tmp_path))
    # a record without recorded intervals: Wilson intervals of k of 4 images (scipy: 4/4 [51.0,
    # 100], 3/4 [30.1, 95.4], 2/4 [15.0, 85.0], 1/4 [4.6, 69.9], 0/4 [0, 49.0])
    assert ("| resnet | 2/255 | 4 | 100.0 [51.0, 100.0] | 75.0 [30.1, 95.4] | 25.0 [4.6, 69.9] | "
            "75.0 [30.1, 95.4] | 50.0 [15.0, 85.0] | **50.0 [15.0, 85.0]** | pgd:soft |") in md
    assert ("| resnet | 8/255 | 4 | 100.0 [51.0, 100.0] | 75.0 [30.1, 95.4] | 0.0 [0.0, 49.0] | "
            "50.0 [15.0, 85.0] | 0.0 [0.0, 49.0] | **0.0 [0.0, 49.0]** | pgd:soft |") in md
    assert "- resnet: **masked_gradients** — m (accuracy at ε = 1: 0.0 [0.0, 49.0] %)" in md
    assert "- resnet: machine: not recorded" in md
    write_robustness_report(tmp_path)
    assert (tmp_path / "robustness.png").stat().st_size > 10_000
    assert "![accuracy against eps](robustness.png)" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_library_fgsm_and_pgd_respect_eps_exactly(dtype):
    from ddl.attacks import fgsm, pgd

    model = _linear(64, 4, seed=8).to(dtype)
    g = torch.Generator().manual_seed(9)
    x = (torch.randint(0, 256, (200, 1, 8, 8), generator=g) / 255).to(dtype)
    y = torch.arange(200) % 4
    for eps in (0.1, 0.3, 8 / 255):
        for adv in (fgsm(model, x, y, eps=eps), pgd(model, x, y, eps=eps, step_size=eps / 3, steps=4)):
            assert adv.dtype == dtype and bool(within_linf(adv, x, eps).all())
            assert adv.min() >= 0 and adv.max() <= 1


def test_non_monotonic_flag_ignores_the_oblivious_attack():
    n = 10
    t = lambda bits: torch.tensor(bits, dtype=torch.bool)     # noqa: E731
    res = RobustnessResult(
        n_images=n, eps=[0.1, 0.2], clean_accuracy={"bare": 1.0, "defended": 1.0},
        attacks={"pgd:oblivious": {"0.1": 0.5, "0.2": 0.7}}, worst_case={"0.1": 0.5, "0.2": 0.5},
        bare_pgd={"0.1": 0.0, "0.2": 0.0},
        survival={"pgd:oblivious": {"0.1": t([1] * 5 + [0] * 5), "0.2": t([1] * 7 + [0] * 3)}},
        worst_survival={}, clean_correct={"bare": t([1] * n), "defended": t([1] * n)},
        flags=[], seconds={}, unbounded_accuracy=None)
    assert compute_flags(res, model=nn.Identity(), defence=None, x=torch.zeros(n, 1, 2, 2),
                         y=torch.zeros(n, dtype=torch.long), n_classes=10, n_channels=1) == []


def test_cascade_gives_the_same_worst_case_with_cumulative_columns(denoiser, tmp_path):
    model = _linear(64, 4, seed=30)
    x = _images(n=30, seed=31)
    y = model(x).argmax(1)
    kw = dict(defence=denoiser, eps=[0.03, 0.1], attacks=["pgd:bpda", "pgd:soft", "pgd:exact"],
              unbounded=False, **_FAST)
    full = evaluate_robustness(model, x, y, **kw)
    casc = evaluate_robustness(model, x, y, cascade=True, cache_dir=tmp_path, cache_key="c", **kw)
    for k in full.worst_case:
        assert torch.equal(full.worst_survival[k], casc.worst_survival[k])
        cumulative = [casc.attacks[a][k] for a in ("pgd:bpda", "pgd:soft", "pgd:exact")]
        assert cumulative == sorted(cumulative, reverse=True) and cumulative[-1] == casc.worst_case[k]
        assert casc.attacks["pgd:bpda"][k] == full.attacks["pgd:bpda"][k]      # the first is alone
    # later attacks only saw the survivors of the earlier ones
    (path,) = [p for p in tmp_path.glob(f"c-pgd_exact-{0.1!r}-0-30-*.json") if not p.name.endswith(".entry.json")]
    attacked = json.loads(path.read_text())["attacked"]
    assert attacked == casc.survival["pgd:soft"][eps_key(0.1)].nonzero().squeeze(1).tolist()
    assert casc.params["cascade"] is True


# ----------------------------------------------------------------------------- progress
class _Stderr:
    """A stand-in for sys.stderr that records what is written and says whether it is a terminal."""

    def __init__(self, tty: bool):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text += s
        return len(s)

    def flush(self):
        pass


@pytest.mark.parametrize("tty, progress, shown", [(True, None, True), (False, None, False),
                                                   (True, False, False), (False, True, True)])
def test_progress_is_on_by_default_on_a_terminal(monkeypatch, tty, progress, shown):
    model = _linear(64, 4, seed=2)
    x = _images(4)
    stderr = _Stderr(tty)
    monkeypatch.setattr(sys, "stderr", stderr)
    kw = {} if progress is None else {"progress": progress}
    evaluate_robustness(model, x, model(x).argmax(1), eps=[0.1], attacks=["pgd:oblivious"], unbounded=False,
                        pgd_steps=1, **kw)
    assert ("pgd:oblivious eps=0.1" in stderr.text) is shown, stderr.text


def test_every_flag_says_whether_the_worst_case_can_be_trusted():
    """Issue 20: a flag said what to try, not whether the worst case can still be quoted."""
    import inspect

    from ddl.robustness import flags as flags_module

    source = inspect.getsource(flags_module.compute_flags)
    codes = set(__import__("re").findall(r'"code": "([a-z_]+)"', source))
    assert codes == set(flags_module.TRUST)                  # one trust sentence per flag code
    assert all(t.startswith("Can the worst case be trusted? ") for t in flags_module.TRUST.values())


class _RowExact(nn.Module):
    """16 → 32 (tanh) → 5 with every product summed along a contiguous last axis: a row's logits
    are the same bits whatever the batch (checked in the test), so a batched attack can be
    compared with ``pyautoattack`` run on each image alone bit for bit."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1, self.b1 = torch.randn(32, 16, generator=g), torch.randn(32, generator=g)
        self.w2, self.b2 = torch.randn(5, 32, generator=g), torch.randn(5, generator=g)

    def forward(self, x):
        h = torch.tanh((x.flatten(1)[:, None, :] * self.w1).sum(-1) + self.b1)
        return (h[:, None, :] * self.w2).sum(-1) + self.b2


@pytest.mark.parametrize("attack, eps, budget", [
    ("apgd-ce", 0.05, dict(n_iter=5)),
    ("apgd-ce", 0.05, dict(n_iter=3, n_restarts=2)),
    ("apgd-t", 0.05, dict(n_iter=3, n_target_classes=4)),
    ("square", 0.1, dict(n_queries=40)),
    ("fab-t", 0.1, dict(n_iter=5, n_target_classes=3)),
    ("fab-t", 0.1, dict(n_iter=3, n_target_classes=2, n_restarts=2)),
])
def test_batched_autoattack_equals_pyautoattack_run_on_each_image_alone(attack, eps, budget):
    """The reference is ``pyautoattack`` itself, called as its documentation says, on one image
    at a time with that image's seed: the batched attack gives every image the same bits."""
    from ddl.robustness.attacks import _image_seed, _make_attack

    model = _RowExact().eval()
    x = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = model(x)
        assert all(torch.equal(model(x[i:i + 1])[0], logits[i]) for i in range(len(x)))   # rows are exact
    y = logits.argmax(1)
    y[:3] = (y[:3] + 1) % 5                                  # three images misclassified before any attack
    ids = torch.arange(100, 130)
    batched = autoattack(model, x, y, attack=attack, eps=eps, seed=7, image_ids=ids, batch_size=16, **budget)
    n_targets = min(budget.get("n_target_classes", 9), 4)
    alone = []
    with torch.random.fork_rng():
        for i in range(len(x)):
            atk = _make_attack(model, attack, eps, _image_seed(7, 100 + i), x.device, budget.get("n_iter", 100),
                               budget.get("n_restarts", 1), budget.get("n_queries", 1000), n_targets)
            alone.append(project_linf(atk.perturb(x[i:i + 1], y[i:i + 1]), x[i:i + 1], eps))
    assert torch.equal(batched, torch.cat(alone))
    with torch.no_grad():
        broken = model(batched).argmax(1) != y
    assert 3 < int(broken.sum()) < 30                       # a mix: which images break depends on the draws


@pytest.mark.parametrize("batch_size", [0, -4])
def test_autoattack_refuses_a_batch_size_below_one(batch_size):
    # a non-positive batch would attack nothing and return the clean images as "adversarial"
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5)).eval()
    with pytest.raises(ValueError, match=rf"^autoattack: batch_size must be an int >= 1; got {batch_size}\.$"):
        autoattack(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), attack="square", eps=0.1, batch_size=batch_size)
