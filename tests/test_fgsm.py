"""FGSM against hand computations on the linear_model fixture (CE gradient worked out by hand)."""

import re

import numpy as np
import pytest
import torch
from torch import nn

from ddl.attacks import ATTACKS, fgsm



def _toward_x(target: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Hand rounding of an exact (float64) step to x's dtype: clip to [0, 1], round to nearest,
    and where that lands outside the ε-ball (farther from x than the exact target), take the
    neighbour on x's side: |x' − x| <= ε holds exactly."""
    target = target.clamp(0.0, 1.0)
    v = target.to(x.dtype)
    over = (v.double() - x.double()).abs() > (target - x.double()).abs()
    return torch.where(over, torch.nextafter(v, x), v)

def _wrap(linear: nn.Module) -> nn.Module:
    """(N, 1, 1, F) images → (N, F) → linear; eval mode."""
    return nn.Sequential(nn.Flatten(), linear).eval()


def _hand_ce_grad(w, b, x, y):
    """∇ₓ CE(Wx + b, y) = Wᵀ(softmax(Wx + b) − e_y), float64 numpy, x (N, F), y (N,)."""
    z = x @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return p @ w


def _small_cnn(c=1, hw=8, k=10, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * hw * hw, k)).eval()


W = np.array([[1.0, -2.0], [3.0, 0.5]])
B = np.array([0.1, -0.2])
X = torch.tensor([[0.5, 0.5], [0.0, 1.0], [0.95, 0.02], [0.3, 0.7]], dtype=torch.float32)


def test_fgsm_equals_hand_computation(linear_model):
    y = torch.tensor([0, 1, 0, 1])
    eps = 0.1
    grad = _hand_ce_grad(W, B, X.double().numpy(), y.numpy())
    # For 2 classes the gradient is ±(1 − p_y)(W_1 − W_0) = ±(1 − p_y)·[2, 2.5]: signs (+,+) for y=0.
    assert (np.sign(grad) == np.where(y.numpy()[:, None] == 0, 1.0, -1.0)).all()
    expected = _toward_x(X.double() + eps * torch.from_numpy(np.sign(grad)), X)
    out = fgsm(_wrap(linear_model), X.view(4, 1, 1, 2), y, eps=eps)
    assert out.shape == (4, 1, 1, 2) and out.dtype == torch.float32
    assert torch.equal(out.view(4, 2), expected)
    # Row 1 = [0, 1], y = 1, moves by (−0.1, −0.1): the first value is clipped at 0.
    # float32(0.9) = 0.89999998 would be 0.10000002 from 1.0, beyond eps: the next float up is
    # the closest one inside the ball
    assert out.view(4, 2)[1].tolist() == [0.0, np.nextafter(np.float32(0.9), np.float32(1)).item()]


def test_fgsm_three_classes_mixed_signs_by_hand():
    w = np.array([[1.0, -1.0, 0.5], [-2.0, 0.5, 1.0], [0.3, 2.0, -1.5]])
    b = np.array([0.0, 0.2, -0.1])
    lin = nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    x = torch.tensor([[0.2, 0.5, 0.7], [0.9, 0.1, 0.4]])
    y = torch.tensor([2, 0])
    grad = _hand_ce_grad(w, b, x.double().numpy(), y.numpy())
    assert len(np.unique(np.sign(grad))) == 2           # a real mix of + and − directions
    expected = _toward_x(x.double() + 0.05 * torch.from_numpy(np.sign(grad)), x)
    assert torch.equal(fgsm(_wrap(lin), x.view(2, 1, 1, 3), y, eps=0.05).view(2, 3), expected)


def test_fgsm_targeted_steps_against_the_target_gradient(linear_model):
    target = torch.tensor([1, 0, 1, 0])
    grad = _hand_ce_grad(W, B, X.double().numpy(), target.numpy())
    expected = _toward_x(X.double() - 0.2 * torch.from_numpy(np.sign(grad)), X)
    out = fgsm(_wrap(linear_model), X.view(4, 1, 1, 2), target, eps=0.2, targeted=True)
    assert torch.equal(out.view(4, 2), expected)


def test_fgsm_margin_loss_by_hand(linear_model):
    # margin = Z_other − Z_y, gradient W_other − W_y: y=0 → [2, 2.5] (+,+); y=1 → (−,−).
    y = torch.tensor([0, 1, 0, 1])
    sign = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    out = fgsm(_wrap(linear_model), X.view(4, 1, 1, 2), y, eps=0.1, loss="margin")
    assert torch.equal(out.view(4, 2), _toward_x(X.double() + 0.1 * sign.double(), X))


def test_fgsm_without_labels_uses_model_predictions(linear_model):
    model = _wrap(linear_model)
    x = X.view(4, 1, 1, 2)
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert torch.equal(fgsm(model, x, eps=0.1), fgsm(model, x, pred, eps=0.1))


def test_fgsm_eps_zero_returns_a_copy_of_x(rng):
    model = _small_cnn()
    x = torch.rand(5, 1, 8, 8)
    out = fgsm(model, x, torch.arange(5), eps=0.0)
    assert torch.equal(out, x) and out is not x and out.data_ptr() != x.data_ptr()


def test_fgsm_leaves_x_and_model_untouched_and_bounds_linf(rng):
    model = _small_cnn(c=3)
    model[0].weight.requires_grad_(False)                  # a frozen layer stays frozen
    x = torch.rand(6, 3, 8, 8)
    x_before = x.clone()
    out = fgsm(model, x, torch.arange(6), eps=0.03)
    assert torch.equal(x, x_before) and not x.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]
    assert not model.training
    assert (out - x).abs().max() <= 0.03 + 1e-7
    assert out.min() >= 0.0 and out.max() <= 1.0
    # every value moved by exactly eps unless clipped or its gradient was exactly 0
    moved = (out - x).abs()
    interior = (x > 0.03) & (x < 0.97)
    assert torch.allclose(moved[interior], torch.full_like(moved[interior], 0.03), atol=1e-6)


def test_fgsm_batches_give_the_same_result(rng):
    model = _small_cnn()
    x, y = torch.rand(7, 1, 8, 8), torch.randint(0, 10, (7,))
    assert torch.equal(fgsm(model, x, y, eps=0.1, batch_size=3), fgsm(model, x, y, eps=0.1))


def test_fgsm_custom_clip_and_float64(linear_model):
    model = _wrap(linear_model.double())
    x = torch.tensor([[0.5, 0.5]], dtype=torch.float64).view(1, 1, 1, 2)
    out = fgsm(model, x, torch.tensor([0]), eps=0.3, clip=(-1.0, 0.7))
    assert out.dtype == torch.float64
    assert out.view(2).tolist() == [0.7, 0.7]               # 0.8 clipped to the box


def test_registry():
    from ddl.attacks import jsma, pgd
    assert ATTACKS == {"fgsm": fgsm, "pgd": pgd, "jsma": jsma}


_X_RULE = "fgsm: x must be a floating-point tensor of shape (N, C, H, W) with every size >= 1 and values in [0, 1] (the clip range); got "
_Y_RULE = ("fgsm: y must be an int64 tensor of shape (4,) (one per image of x) with values in [0, 2) "
           "(the model has 2 outputs); got ")


def _exactly(message):
    return f"^{re.escape(message)}$"


def test_fgsm_errors(linear_model):
    model = _wrap(linear_model)
    x = X.view(4, 1, 1, 2)
    y = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"fgsm: model is in training mode \(dropout/batch-norm would make the "
                                         r"attack random\); call model.eval\(\) first."):
        fgsm(model.train(), x, y, eps=0.1)
    model.eval()
    with pytest.raises(TypeError, match=_exactly(f"{_X_RULE}uint8 tensor of shape (4, 1, 1, 2) (convert with "
                                                 f"ddl.data.to_float_images or x.float() / 255).")):
        fgsm(model, x.to(torch.uint8), y, eps=0.1)
    with pytest.raises(ValueError, match=_exactly("fgsm: eps must be a finite number >= 0; got -0.1.")):
        fgsm(model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match=_exactly("fgsm: eps must be a finite number >= 0; got nan.")):
        fgsm(model, x, y, eps=float("nan"))
    with pytest.raises(ValueError, match=_exactly(f"{_X_RULE}float32 tensor of shape (4, 2).")):
        fgsm(model, X, y, eps=0.1)
    with pytest.raises(ValueError, match=_exactly(f"{_X_RULE}float32 tensor of shape (1, 1, 1, 2) with NaN values.")):
        fgsm(model, torch.full((1, 1, 1, 2), float("nan")), y[:1], eps=0.1)
    with pytest.raises(ValueError, match=_exactly(f"{_X_RULE}float32 tensor of shape (4, 1, 1, 2) with values in [0, 1.5].")):
        fgsm(model, x * 0 + torch.tensor([0.0, 1.5]), y, eps=0.1)
    with pytest.raises(ValueError, match=_exactly(f"{_Y_RULE}int64 tensor of shape (4,) with values in [0, 2].")):
        fgsm(model, x, torch.tensor([0, 1, 2, 0]), eps=0.1)
    with pytest.raises(TypeError, match=_exactly(f"{_Y_RULE}int32 tensor of shape (4,).")):
        fgsm(model, x, y.int(), eps=0.1)
    with pytest.raises(ValueError, match=_exactly(f"{_Y_RULE}int64 tensor of shape (3,).")):
        fgsm(model, x, y[:3], eps=0.1)
    with pytest.raises(ValueError, match="fgsm: targeted=True needs the target classes in y; got y=None"):
        fgsm(model, x, eps=0.1, targeted=True)
    with pytest.raises(ValueError, match=r"^fgsm: loss must be one of ce, margin; got 'mse'\.$"):
        fgsm(model, x, y, eps=0.1, loss="mse")
    with pytest.raises(ValueError, match=_exactly("fgsm: batch_size must be an int >= 1; got 0.")):
        fgsm(model, x, y, eps=0.1, batch_size=0)
    with pytest.raises(ValueError, match=r"fgsm: clip must be finite with lo < hi; got \(1.0, 0.0\)"):
        fgsm(model, x, y, eps=0.1, clip=(1.0, 0.0))
    with pytest.raises(ValueError, match="fgsm: clip must be a pair of numbers"):
        fgsm(model, x, y, eps=0.1, clip=0.5)
    with pytest.raises(TypeError, match="fgsm: model must be a torch.nn.Module; got function"):
        fgsm(lambda t: t, x, y, eps=0.1)
    with pytest.raises(ValueError, match=r"fgsm: model must map .* logits of shape \(N, K\) with K >= 2; got \(1, 1, 1, 2\)"):
        fgsm(nn.Identity().eval(), x, y, eps=0.1)
    with pytest.raises(ValueError, match=_exactly(f"{_X_RULE}float32 tensor of shape (0, 1, 1, 2).")):
        fgsm(model, x[:0], y[:0], eps=0.1)
    with pytest.raises(TypeError, match=_exactly(f"{_Y_RULE}list.")):
        fgsm(model, x, [0, 1, 0, 1], eps=0.1)
    with pytest.raises(TypeError, match=_exactly(f"{_X_RULE}float32 numpy array of shape (4, 1, 1, 2).")):
        fgsm(model, x.numpy(), y, eps=0.1)


def test_a_submodule_in_training_mode_is_refused(linear_model):
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), linear_model).eval()
    model[1].train()
    with pytest.raises(ValueError, match="fgsm: model is in training mode"):
        fgsm(model, X.view(4, 1, 1, 2), torch.tensor([0, 1, 0, 1]), eps=0.1)
