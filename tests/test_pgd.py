"""PGD (L∞, Madry et al. 2018): FGSM equivalence, projection, seeded random start, hand steps."""

import re

import pytest
import torch
from torch import nn

from ddl.attacks import fgsm, pgd


def _small_cnn(c=1, hw=8, k=10, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * hw * hw, k)).eval()


def _wrap(linear):
    return nn.Sequential(nn.Flatten(), linear).eval()


def test_one_step_without_random_start_equals_fgsm(rng):
    model = _small_cnn(c=3)
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 10, (6,))
    for targeted in (False, True):
        a = pgd(model, x, y, eps=0.05, step_size=0.05, steps=1, random_start=False, targeted=targeted)
        b = fgsm(model, x, y, eps=0.05, targeted=targeted)
        assert torch.equal(a, b)


def test_steps_by_hand_on_linear_model(linear_model):
    # Two classes: the CE gradient is ±(1 − p_y)·[2, 2.5], so every step moves both values by
    # +α (y = 0) or −α (y = 1). eps 0.25, α 0.1, 4 steps: 0.1, 0.2, 0.25 (projected), 0.25.
    x = torch.tensor([[0.5, 0.5], [0.5, 0.4], [0.9, 0.1]]).view(3, 1, 1, 2)
    y = torch.tensor([0, 1, 0])
    out = pgd(_wrap(linear_model), x, y, eps=0.25, step_size=0.1, steps=4, random_start=False)
    sign = torch.tensor([1.0, -1.0, 1.0]).view(3, 1, 1, 1)
    expected = torch.max(torch.min(x + 0.1 * sign + 0.1 * sign + 0.1 * sign, x + 0.25), x - 0.25).clamp(0, 1)
    assert torch.equal(out, expected)
    assert out.view(3, 2).tolist()[2] == [1.0, pytest.approx(0.35, abs=1e-7)]  # 0.9 + 0.25 clipped to 1


def test_projection_onto_ball_and_box(rng):
    # with many steps larger than eps most values end on the ball's faces or the box; how many
    # depends on the model (dead ReLUs give zero gradients): measured per seed 0-19 0.645-0.992
    # (seed 3: 0.645, 23 % zero gradients), mean 0.925, means of 5 consecutive seeds 0.891-0.945;
    # a PGD that never reached a face would give ~0.125 (image 0 sits on the box's face)
    on_face = []
    for seed in range(5):
        model = _small_cnn(seed=seed)
        x = torch.rand(8, 1, 8, 8)
        x[0] = 0.0                                        # on the lower face of the box
        out = pgd(model, x, torch.randint(0, 10, (8,)), eps=0.1, step_size=0.07, steps=5)
        assert (out - x).abs().max() <= 0.1 + 1e-6
        assert out.min() >= 0.0 and out.max() <= 1.0
        on_face.append((((out - x).abs() > 0.1 - 1e-6) | (out == 0) | (out == 1)).float().mean().item())
    assert sum(on_face) / 5 > 0.85, on_face


def test_pgd_increases_the_loss_beyond_fgsm(rng):
    model = _small_cnn(c=3, seed=1)
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 10, (16,))
    ce = nn.functional.cross_entropy
    with torch.no_grad():
        loss_fgsm = ce(model(fgsm(model, x, y, eps=0.05)), y)
        loss_pgd = ce(model(pgd(model, x, y, eps=0.05, step_size=0.01, steps=20)), y)
    assert loss_pgd > loss_fgsm > ce(model(x), y)


def test_random_start_is_seeded_and_leaves_global_rng_alone(rng):
    model = _small_cnn()
    x, y = torch.rand(5, 1, 8, 8), torch.randint(0, 10, (5,))
    state = torch.get_rng_state()
    a = pgd(model, x, y, eps=0.1, step_size=0.02, steps=2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, pgd(model, x, y, eps=0.1, step_size=0.02, steps=2, seed=3))
    assert not torch.equal(a, pgd(model, x, y, eps=0.1, step_size=0.02, steps=2, seed=4))
    # the noise is drawn for the whole input at once: chunking does not change it
    assert torch.equal(a, pgd(model, x, y, eps=0.1, step_size=0.02, steps=2, seed=3, batch_size=2))


def test_random_start_is_uniform_in_the_ball(rng):
    # A constant model has zero gradient, so PGD returns exactly the projected random start.
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):                               # (N, C, H, W) → (N, 2)
            return self.w * x.flatten(1)[:, :2]

    x = torch.full((4, 1, 32, 32), 0.5)
    out = pgd(Const().eval(), x, torch.zeros(4, dtype=torch.int64), eps=0.2, step_size=0.1, steps=1)
    d = out - x
    assert d.abs().max() <= 0.2 and d.min() < -0.19 and d.max() > 0.19
    assert abs(float(d.mean())) < 0.01 and float(d.std()) == pytest.approx(0.2 / 3 ** 0.5, rel=0.05)


def test_x_and_model_untouched(rng):
    model = _small_cnn()
    x, y = torch.rand(3, 1, 8, 8), torch.randint(0, 10, (3,))
    before = x.clone()
    pgd(model, x, y, eps=0.1, step_size=0.05, steps=3)
    assert torch.equal(x, before)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def _exactly(message):
    return f"^{re.escape(message)}$"


def test_pgd_errors(linear_model):
    model = _wrap(linear_model)
    x, y = torch.full((2, 1, 1, 2), 0.5), torch.tensor([0, 1])
    kw = dict(eps=0.1, step_size=0.05, steps=2)
    with pytest.raises(ValueError, match=r"pgd: model is in training mode"):
        pgd(model.train(), x, y, **kw)
    model.eval()
    with pytest.raises(ValueError, match=_exactly("pgd: step_size must be a finite number > 0; got 0.")):
        pgd(model, x, y, **{**kw, "step_size": 0})
    with pytest.raises(ValueError, match=_exactly("pgd: steps must be an int >= 1; got 0.")):
        pgd(model, x, y, **{**kw, "steps": 0})
    with pytest.raises(ValueError, match=_exactly("pgd: steps must be an int >= 1; got 2.0.")):
        pgd(model, x, y, **{**kw, "steps": 2.0})
    with pytest.raises(ValueError, match=_exactly("pgd: seed must be an int >= 0; got -1.")):
        pgd(model, x, y, **kw, seed=-1)
    with pytest.raises(ValueError, match=_exactly("pgd: eps must be a finite number >= 0; got -1.")):
        pgd(model, x, y, **{**kw, "eps": -1})
    with pytest.raises(TypeError, match="^" + re.escape(
            "pgd: x must be a floating-point tensor of shape (N, C, H, W) with every size >= 1 and values in [0, 1] "
            "(the clip range); got int64 tensor of shape (2, 1, 1, 2) (convert with ddl.data.to_float_images or "
            "x.float() / 255).") + "$"):
        pgd(model, x.to(torch.int64), y, **kw)
    with pytest.raises(ValueError, match="pgd: targeted=True needs the target classes in y"):
        pgd(model, x, None, **kw, targeted=True)
