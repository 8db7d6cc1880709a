"""Tests of ddl.plots: the numbers behind every figure, read back from the matplotlib artists.

References: scikit-learn's t-SNE internals (``_joint_probabilities``, ``_kl_divergence``,
``_gradient_descent``) and ``trustworthiness``; numpy's ``quantile`` and ``histogram``; CAM and
Grad-CAM worked out by hand on a tiny conv net with fixed weights.
"""

from __future__ import annotations

import doctest
import re

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F

from ddl import plots
from ddl.plots import atoms as atoms_mod
from ddl.plots import distributions as dist_mod



@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors: one thread is faster, and on a shared 2-core machine much steadier (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _blobs(rng, n_per=50, n_features=10, centres=3, spread=8.0):
    """Well separated Gaussian blobs: (n_per * centres, n_features) float64 and labels."""
    means = rng.standard_normal((centres, n_features)) * spread
    x = np.concatenate([m + rng.standard_normal((n_per, n_features)) for m in means])
    return x, np.repeat(np.arange(centres), n_per)


# ----------------------------------------------------------------------------------------- t-SNE


def test_tsne_separates_blobs_as_well_as_sklearn(rng):
    from sklearn.manifold import TSNE, trustworthiness

    x, _ = _blobs(rng, n_per=50, spread=2.0)  # 150 points, 10 features
    emb = plots.tsne(x, perplexity=30.0, n_iter=750, random_state=0)
    ref = TSNE(perplexity=30.0, max_iter=750, init="pca", random_state=0).fit_transform(x)
    t_ours, t_ref = trustworthiness(x, emb, n_neighbors=5), trustworthiness(x, ref, n_neighbors=5)
    assert emb.shape == (150, 2) and emb.dtype == np.float64
    assert t_ours >= 0.9 and t_ours == pytest.approx(t_ref), (t_ours, t_ref)  # same algorithm, same seed


def test_tsne_reproducible_and_seeded(rng):
    x, _ = _blobs(rng, n_per=15, n_features=60)  # > 50 features: goes through the PCA step
    a = plots.tsne(torch.from_numpy(x), perplexity=10.0, n_iter=260, init="random", random_state=3)
    b = plots.tsne(x, perplexity=10.0, n_iter=260, init="random", random_state=3)
    c = plots.tsne(x, perplexity=10.0, n_iter=260, init="random", random_state=4)
    assert a.shape == (45, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(b, c, atol=1e-3)
    np.testing.assert_array_equal(plots.tsne(x, perplexity=10.0, n_iter=260), plots.tsne(x, perplexity=10.0, n_iter=260))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"features": np.zeros((10, 3), dtype=np.int64)}, TypeError, "features must hold floating-point"),
        ({"features": np.zeros(10)}, ValueError, "features must have 2 dimensions"),
        ({"features": np.full((10, 3), np.nan)}, ValueError, "features must be finite"),
        ({"features": np.zeros((2, 3))}, ValueError, "at least 3 rows"),
        ({"features": [[0.0]]}, TypeError, "torch.Tensor or numpy.ndarray"),
        ({"perplexity": 9.0}, ValueError, r"^tsne: perplexity \(for 10 samples\) must be a finite number in \(0, 9\); got 9\.0\.$"),
        ({"perplexity": 0}, ValueError, "perplexity"),
        ({"n_iter": 100}, ValueError, "n_iter must be an int >= 250; got 100|n_iter must be an int >= 250"),
        ({"n_components": 0}, ValueError, r"n_components must be an int in \[1, 3\]; got 0"),
        ({"learning_rate": -1.0}, ValueError, r"^tsne: learning_rate \(when not 'auto'\) must be a finite number > 0; got -1\.0\.$"),
        ({"early_exaggeration": 0.5}, ValueError, "early_exaggeration must be a finite number >= 1; got 0.5"),
        ({"init": "spectral"}, ValueError, "init must be one of pca, random; got 'spectral'"),
        ({"random_state": None}, TypeError, r"^tsne: random_state must be an int >= 0; got None\.$"),
        ({"n_components": 4}, ValueError, r"n_components must be an int in \[1, 3\]; got 4"),
    ],
)
def test_tsne_errors(kwargs, exc, match):
    args = {"features": np.random.default_rng(0).standard_normal((10, 3)), "perplexity": 3.0, "n_iter": 250}
    args.update(kwargs)
    features = args.pop("features")
    with pytest.raises(exc, match=match):
        plots.tsne(features, **args)


def test_plot_tsne_draws_each_class(rng):
    emb = rng.standard_normal((30, 2))
    labels = np.repeat([2, 0, 1], 10)
    fig = plots.plot_tsne(emb, torch.from_numpy(labels), class_names=["zero", "one", "two"], title="t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["zero", "one", "two"]
    for c, coll in enumerate(ax.collections):
        np.testing.assert_array_equal(coll.get_offsets(), emb[labels == c])
    assert ax.get_title() == "t"
    with pytest.raises(ValueError, match=r"embedding must have shape \(n_samples, 2\)"):
        plots.plot_tsne(rng.standard_normal((30, 3)), labels)
    with pytest.raises(ValueError, match="labels must have 30 entries"):
        plots.plot_tsne(emb, labels[:5])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, len\(class_names\) = 2\)"):
        plots.plot_tsne(emb, labels, class_names=["a", "b"])


# ------------------------------------------------------------------------------ distributions


@pytest.mark.parametrize("n", [2, 11, 101])
def test_quantiles_equal_numpy(tiny_images, n):
    np.testing.assert_allclose(
        plots.quantiles(tiny_images, n), np.quantile(tiny_images.numpy().astype(np.float64), np.linspace(0, 1, n)),
        rtol=0, atol=1e-12,
    )


def test_quantiles_doctest_and_errors():
    assert doctest.testmod(dist_mod, extraglobs={"np": np}).failed == 0
    with pytest.raises(ValueError, match="quantiles: n must be an int >= 2; got 1"):
        plots.quantiles(np.ones(3), 1)
    with pytest.raises(ValueError, match="x must not be empty"):
        plots.quantiles(np.ones(0), 3)


def test_plot_qq_draws_quantiles(rng):
    clean = torch.from_numpy(rng.uniform(size=(4, 1, 6, 6)).astype(np.float32))
    adv = (clean + 0.1 * torch.sign(torch.randn(clean.shape))).clamp(0, 1)
    den = clean * 0.9
    fig = plots.plot_qq(clean, adv, denoised=den, n_quantiles=21)
    diag, l_adv, l_den = fig.axes[0].get_lines()
    q = plots.quantiles(clean, 21)
    np.testing.assert_array_equal(l_adv.get_xdata(), q)
    np.testing.assert_array_equal(l_adv.get_ydata(), plots.quantiles(adv, 21))
    np.testing.assert_array_equal(l_den.get_ydata(), plots.quantiles(den, 21))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["y = x", "perturbed", "denoised"]
    assert len(plots.plot_qq(clean, adv).axes[0].get_lines()) == 2
    with pytest.raises(ValueError, match="n_quantiles must be an int >= 2; got 1"):
        plots.plot_qq(clean, adv, n_quantiles=1)


@pytest.mark.parametrize("log", [False, True])
def test_plot_density_integrates_to_one(rng, log):
    arrays = {"clean": rng.uniform(size=(3, 1, 8, 8)), "perturbed": torch.from_numpy(rng.beta(0.5, 0.5, size=500))}
    fig = plots.plot_density(arrays, bins=25, log=log)
    ax = fig.axes[0]
    patches = ax.patches
    assert len(patches) == 2 and ax.get_yscale() == ("log" if log else "linear")
    for patch, v in zip(patches, arrays.values(), strict=True):
        density, edges, _ = patch.get_data()
        assert np.sum(density * np.diff(edges)) == pytest.approx(1.0, rel=1e-12)
        counts, _ = np.histogram(np.asarray(v).ravel(), bins=edges)
        np.testing.assert_allclose(density, counts / (np.asarray(v).size * np.diff(edges)))
    assert edges[0] == min(float(v.min()) for v in arrays.values())


def test_sample_pixels_covers_every_position_without_aliasing():
    """10,000 MNIST-sized images whose left half is black: the old strided sample (every
    numel // 20,000-th value) read only two positions per image, both on the left edge."""
    x = torch.zeros(10_000, 1, 28, 28)
    x[..., 14:] = 1.0
    strided = x.reshape(-1)[:: x.numel() // 20_000][:20_000]
    assert float(strided.mean()) == 0.0  # the bug: the clean pixels all look 0
    s = plots.sample_pixels(x, 20_000, seed=0)
    assert s.shape == (20_000,) and s.dtype == torch.float16
    assert abs(float(s.float().mean()) - 0.5) < 0.02  # binomial sd 0.0035
    # the positions: uniform over the 784 pixel positions, and identical for same-shape tensors
    pos = plots.sample_pixels(torch.arange(x.numel(), dtype=torch.float64).reshape(x.shape) % 784, 20_000)
    assert len(set(pos.float().round().tolist())) > 700
    assert torch.equal(plots.sample_pixels(x, 500, seed=3), plots.sample_pixels(x.clone(), 500, seed=3))
    assert not torch.equal(plots.sample_pixels(x, 500, seed=3), plots.sample_pixels(x, 500, seed=4))


def test_sample_pixels_small_inputs_and_errors():
    x = torch.rand(2, 1, 3, 3)
    assert torch.equal(plots.sample_pixels(x, 100), x.reshape(-1).half())
    with pytest.raises(ValueError, match=r"sample_pixels: n must be an int >= 1; got 0"):
        plots.sample_pixels(x, 0)
    with pytest.raises(TypeError, match=r"sample_pixels: x must be a torch.Tensor; got ndarray"):
        plots.sample_pixels(x.numpy(), 5)


def test_density_on_grey_levels_puts_each_level_in_its_own_bin():
    # clean 8-bit pixels: 0 (x3), 1/255 (x1), 128/255 (x2), 1 (x2); a bin per level, width 1/255
    v = np.array([0, 0, 0, 1, 128, 128, 255, 255]) / 255
    fig = plots.plot_density({"clean": torch.tensor(v, dtype=torch.float16).float()}, grey_levels=255)
    density, edges, _ = fig.axes[0].patches[0].get_data()
    assert len(density) == 256 and np.allclose(np.diff(edges), 1 / 255)
    assert np.allclose(edges[[0, -1]], [-0.5 / 255, 1 + 0.5 / 255])
    mass = density * np.diff(edges)
    assert np.allclose(mass[[0, 1, 128, 255]], [3 / 8, 1 / 8, 2 / 8, 2 / 8]) and np.isclose(mass.sum(), 1)
    with pytest.raises(ValueError, match=r"give grey_levels or value_range, not both"):
        plots.plot_density({"a": v}, grey_levels=255, value_range=(0, 1))
    with pytest.raises(ValueError, match=r"with grey_levels=255 every value must lie in \[-0.00196078, 1.00196\]; "
                                         r"data span \[0, 1.5\]"):
        plots.plot_density({"a": np.array([0.0, 1.5])}, grey_levels=255)


def test_pipeline_keeps_a_random_pixel_sample():
    from ddl.experiments import pipeline

    x = torch.zeros(10_000, 1, 28, 28)
    x[..., 14:] = 1.0
    assert torch.equal(pipeline._pixel_summary(x), plots.sample_pixels(x, 20_000, seed=0))


def test_plot_density_errors():
    with pytest.raises(ValueError, match=r"value_range must be \(low, high\) .* containing every value"):
        plots.plot_density({"a": np.array([0.0, 2.0])}, value_range=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"value_range must be \(low, high\).*; got 1.0"):
        plots.plot_density({"a": np.array([0.0, 1.0])}, value_range=1.0)
    with pytest.raises(ValueError, match="non-empty dict"):
        plots.plot_density({})
    with pytest.raises(ValueError, match="bins must be an int >= 1; got 0"):
        plots.plot_density({"a": np.ones(3)}, bins=0)
    with pytest.raises(TypeError, match=r"arrays\['a'\] must hold floating-point"):
        plots.plot_density({"a": np.ones(3, dtype=np.uint8)})


# ----------------------------------------------------------------------------------------- atoms


def _mosaic_tile(fig, i, n_cols, ph, pw):
    mosaic = np.asarray(fig.axes[0].images[0].get_array())
    r, c = divmod(i, n_cols)
    return mosaic[r * (ph + 1) : r * (ph + 1) + ph, c * (pw + 1) : c * (pw + 1) + pw]


@pytest.mark.parametrize(("n_channels", "patch_size"), [(1, 3), (3, (2, 3))])
def test_plot_atoms_tiles_are_scaled_atoms(rng, n_channels, patch_size):
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    d = rng.standard_normal((20, n_channels * ph * pw))
    d[7] = 0.25  # a constant atom is drawn mid-grey
    fig = plots.plot_atoms(torch.from_numpy(d).float(), patch_size, n_channels=n_channels, n_cols=8)
    for i in range(20):
        atom = d[i].astype(np.float32).astype(np.float64).reshape(n_channels, ph, pw).transpose(1, 2, 0)  # (p_h, p_w, C)
        expected = np.full_like(atom, 0.5) if i == 7 else (atom - atom.min()) / (atom.max() - atom.min())
        tile = _mosaic_tile(fig, i, 8, ph, pw)
        np.testing.assert_allclose(tile[..., :3], np.broadcast_to(expected, (ph, pw, 3)), atol=1e-6)
        assert np.all(tile[..., 3] == 1.0)
    mosaic = np.asarray(fig.axes[0].images[0].get_array())
    assert mosaic.shape == (3 * (ph + 1) - 1, 8 * (pw + 1) - 1, 4)
    assert np.all(mosaic[ph, :, 3] == 0.0)  # gap row is transparent
    assert "all 20" in fig.axes[0].get_title()


def test_plot_atoms_limits_and_errors(rng):
    d = rng.standard_normal((300, 4))
    fig = plots.plot_atoms(d, 2, max_atoms=256)
    assert "256 of 300" in fig.axes[0].get_title()
    assert np.asarray(fig.axes[0].images[0].get_array()).shape == (16 * 3 - 1, 16 * 3 - 1, 4)
    np.testing.assert_allclose(atoms_mod._atom_tiles(d, (2, 2), 1)[0, ..., 0], ((d[0] - d[0].min()) / np.ptp(d[0])).reshape(2, 2))
    with pytest.raises(ValueError, match=r"n_channels \* p_h \* p_w = 3\*2\*2 = 12 columns; got shape \(300, 4\)"):
        plots.plot_atoms(d, 2, n_channels=3)
    with pytest.raises(ValueError, match="n_channels must be 1 .* or 3 .*; got 2"):
        plots.plot_atoms(d, (1, 2), n_channels=2)
    with pytest.raises(ValueError, match=r"^plot_atoms: patch_size must be an int >= 1 or a pair of them; got \(2, 2, 1\)\.$"):
        plots.plot_atoms(d, (2, 2, 1))
    with pytest.raises(ValueError, match="max_atoms must be an int >= 1; got 0"):
        plots.plot_atoms(d, 2, max_atoms=0)


# ------------------------------------------------------------------------------------------- CAM


class _TinyGapNet(nn.Module):
    """Conv(1 -> 3, 3x3, padding 1, known weights) · ReLU · GAP · Linear(3, 2, known weights)."""

    def __init__(self, fc_weight):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[0, 0, 0], [0, 1, 0], [0, 0, 0]]], [[[1, 0, -1], [1, 0, -1], [1, 0, -1]]],
                                                 [[[0.1, 0.1, 0.1], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1]]]], dtype=torch.float32))
            self.conv.bias.copy_(torch.tensor([0.0, 0.1, -0.2]))
            self.fc.weight.copy_(torch.tensor(fc_weight))
            self.fc.bias.copy_(torch.tensor([0.3, -0.3]))

    def forward(self, x):
        a = self.act(self.conv(x))  # (N, 3, H, W)
        return self.fc(a.mean(dim=(2, 3)))  # (N, 2)


def _hand_cam(model, x, target):
    """Σ_k w_ck A_k computed from the known weights, before normalisation; (N, H, W)."""
    a = F.relu(F.conv2d(x, model.conv.weight, model.conv.bias, padding=1))  # (N, 3, H, W)
    w = model.fc.weight[target]  # (N, 3)
    return (w[:, :, None, None] * a).sum(1).detach()


def _minmax(m):
    lo = m.amin(dim=(1, 2), keepdim=True)
    return (m - lo) / (m.amax(dim=(1, 2), keepdim=True) - lo)


def test_grad_cam_equals_cam_for_gap_linear_head(rng):
    model = _TinyGapNet([[0.5, 1.0, 2.0], [1.0, -1.0, 0.5]]).eval()  # class 0: positive weights -> CAM >= 0
    x = torch.from_numpy(rng.uniform(size=(4, 1, 8, 8)).astype(np.float32))
    target = torch.zeros(4, dtype=torch.int64)
    gc = plots.grad_cam(model, x, target, layer=model.act)
    cam = plots.class_activation_map(model, x, target, layer="act", fc="fc")
    assert gc.shape == (4, 8, 8) and gc.dtype == torch.float32
    torch.testing.assert_close(gc, cam, rtol=0, atol=1e-6)
    torch.testing.assert_close(cam, _minmax(_hand_cam(model, x, target)), rtol=0, atol=1e-6)
    assert torch.all(gc.amin(dim=(1, 2)) == 0) and torch.allclose(gc.amax(dim=(1, 2)), torch.ones(4))


def test_grad_cam_is_relu_of_signed_cam(rng):
    model = _TinyGapNet([[0.5, 1.0, 2.0], [1.0, -1.0, 0.5]]).eval()
    x = torch.from_numpy(rng.uniform(size=(3, 1, 8, 8)).astype(np.float32))
    hand = _hand_cam(model, x, torch.ones(3, dtype=torch.int64))  # class 1 has a negative weight
    assert hand.min() < 0 < hand.max()
    gc = plots.grad_cam(model, x, 1, layer="act")
    torch.testing.assert_close(gc, _minmax(F.relu(hand)), rtol=0, atol=1e-6)
    cam = plots.class_activation_map(model, x, 1, layer="act", fc=model.fc)
    torch.testing.assert_close(cam, _minmax(hand), rtol=0, atol=1e-6)


def test_grad_cam_upsamples_and_leaves_no_state(rng):
    model = _TinyGapNet([[0.5, 1.0, 2.0], [1.0, -1.0, 0.5]])
    model.conv.stride = (2, 2)  # A is (N, 3, 4, 4) for 8x8 inputs
    model.eval()
    x = torch.from_numpy(rng.uniform(size=(2, 1, 8, 8)).astype(np.float32))
    x_before = x.clone()
    gc = plots.grad_cam(model, x, 0, layer=model.act)
    a = F.relu(F.conv2d(x, model.conv.weight, model.conv.bias, stride=2, padding=1))
    small = (model.fc.weight[0][None, :, None, None] * a).sum(1)  # (2, 4, 4), all >= 0
    expected = _minmax(F.interpolate(small[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0])
    torch.testing.assert_close(gc, expected.detach(), rtol=0, atol=1e-6)
    assert all(p.grad is None for p in model.parameters()) and x.grad is None
    torch.testing.assert_close(x, x_before, rtol=0, atol=0)
    assert len(model.act._forward_hooks) == 0 and len(model.fc._forward_hooks) == 0
    plots.class_activation_map(model, x, 0, layer=model.act, fc=model.fc)
    assert len(model.act._forward_hooks) == 0 and len(model.fc._forward_hooks) == 0


def test_cam_errors(rng):
    model = _TinyGapNet([[0.5, 1.0, 2.0], [1.0, -1.0, 0.5]])
    x = torch.from_numpy(rng.uniform(size=(2, 1, 8, 8)).astype(np.float32))
    with pytest.raises(ValueError, match=r"grad_cam: model is in training mode .* call model.eval\(\) first"):
        plots.grad_cam(model, x, 0, layer=model.act)
    model.eval()
    with pytest.raises(ValueError, match="grad_cam: layer must be a sub-module of the model"):
        plots.grad_cam(model, x, 0, layer=nn.ReLU())
    with pytest.raises(ValueError, match="layer='nope' is not the name of a sub-module"):
        plots.grad_cam(model, x, 0, layer="nope")
    rule = ("target must be an int or an int64 tensor of shape (2,) (one per image of x) with values in "
            "[0, 2) (the model returns 2 scores); got")
    for func in (plots.grad_cam, lambda m, x, t, layer: plots.class_activation_map(m, x, t, layer=layer, fc=m.fc)):
        name = "grad_cam" if func is plots.grad_cam else "class_activation_map"
        for target, got in ((10, "10"), (np.int64(2), repr(np.int64(2))),
                            (torch.tensor([0, 2]), "int64 tensor of shape (2,) with values in [0, 2]")):
            with pytest.raises(ValueError, match="^" + re.escape(f"{name}: {rule} {got}.") + "$"):
                func(model, x, target, layer=model.act)
    with pytest.raises(ValueError, match="^" + re.escape(
            "grad_cam: target must be an int or an int64 tensor of shape (2,) (one per image of x); "
            "got int64 tensor of shape (3,).") + "$"):
        plots.grad_cam(model, x, torch.zeros(3, dtype=torch.int64), layer=model.act)
    with pytest.raises(TypeError, match="^" + re.escape(
            "grad_cam: x must be a floating-point tensor of shape (N, C, H, W); got float32 tensor of shape (1, 8, 8).")
            + "$"):
        plots.grad_cam(model, x[0], 0, layer=model.act)
    with pytest.raises(ValueError, match=r"layer output must be a 4-D tensor \(N, K, h, w\); got \(2, 2\)"):
        plots.grad_cam(model, x, 0, layer=model.fc)
    with pytest.raises(TypeError, match="fc must be an nn.Linear; got ReLU"):
        plots.class_activation_map(model, x, 0, layer=model.act, fc=model.act)
    assert len(model.act._forward_hooks) == 0 and len(model.fc._forward_hooks) == 0

    shared = nn.ReLU()
    twice = nn.Sequential(nn.Conv2d(1, 2, 3), shared, nn.Conv2d(2, 2, 3), shared, nn.Flatten(), nn.LazyLinear(2))
    twice(x)
    with pytest.raises(ValueError, match="layer must run exactly once per forward pass of the model; it ran 2 times"):
        plots.grad_cam(twice.eval(), x, 0, layer=shared)
    assert len(shared._forward_hooks) == 0

    no_gap = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 2)).eval()
    with pytest.raises(ValueError, match="input of fc is not the global average pool .* use grad_cam"):
        plots.class_activation_map(no_gap, x, 0, layer=no_gap[1], fc=no_gap[3])
    assert plots.grad_cam(no_gap, x, 0, layer=no_gap[1]).shape == (2, 8, 8)  # Grad-CAM needs no GAP


def test_top_misclassified_by_confidence():
    logits = torch.tensor([[5.0, 0.0], [0.0, 1.0], [0.0, 3.0], [2.0, 0.0], [0.0, 0.5], [4.0, 4.0]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    # wrong: 1 (p 0.73), 2 (p 0.95), 3 (p 0.88), 5 (argmax 0 on a tie, p 0.5)
    np.testing.assert_array_equal(plots.top_misclassified(logits, y, 2), [2, 3])
    np.testing.assert_array_equal(plots.top_misclassified(logits.numpy(), y.numpy(), 10), [2, 3, 1, 5])
    with pytest.raises(ValueError, match="k must be an int >= 1; got 0"):
        plots.top_misclassified(logits, y, 0)
    with pytest.raises(ValueError, match=r"y must be an integer array of shape \(6,\)"):
        plots.top_misclassified(logits, y[:3], 1)


def test_plot_cam_overlays(rng):
    x = rng.uniform(size=(3, 3, 5, 5))
    maps = rng.uniform(size=(3, 5, 5))
    fig = plots.plot_cam(x, torch.from_numpy(maps), titles=["a", "b", "c"], n_cols=2)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3 and [ax.get_title() for ax in panels] == ["a", "b", "c"]
    for i, ax in enumerate(panels):
        np.testing.assert_array_equal(ax.images[0].get_array(), x[i].transpose(1, 2, 0))
        np.testing.assert_array_equal(ax.images[1].get_array(), maps[i])
    with pytest.raises(ValueError, match=r"heatmaps must lie in \[0, 1\]"):
        plots.plot_cam(x, maps + 1)
    with pytest.raises(ValueError, match="titles must have one entry per image"):
        plots.plot_cam(x, maps, titles=["a"])
    with pytest.raises(ValueError, match=r"x must be \(N, 1 or 3, H, W\) and heatmaps \(N, H, W\)"):
        plots.plot_cam(x, maps[:2])


# -------------------------------------------------------------------------------------- examples


def test_plot_examples_images_and_titles(rng):
    x = rng.uniform(size=(5, 1, 4, 4)).astype(np.float32)
    adv, den = np.clip(x + 0.1, 0, 1), x * 0.5
    y = np.array([0, 1, 2, 1, 0])
    pred_adv = np.array([1, 1, 0, 1, 2])
    fig = plots.plot_examples(x, adv, den, y=y, pred_clean=y, pred_adv=pred_adv, pred_den=y, class_names=["a", "b", "c"], n=4)
    axes = np.array(fig.axes).reshape(3, 4)
    for r, imgs in enumerate((x, adv, den)):
        for c in range(4):
            np.testing.assert_array_equal(axes[r, c].images[0].get_array(), imgs[c, 0])
    assert [axes[1, c].get_title() for c in range(4)] == ["pred b", "pred b", "pred a", "pred b"]
    assert [axes[1, c].title.get_color() for c in range(4)] == ["tab:red", "tab:green", "tab:red", "tab:green"]
    assert [axes[2, c].get_xlabel() for c in range(4)] == ["true a", "true b", "true c", "true b"]
    assert [axes[r, 0].get_ylabel() for r in range(3)] == ["clean", "perturbed", "denoised"]
    with pytest.raises(ValueError, match=r"^plot_examples: n \(for N=5 images\) must be an int in \[1, 5\]; got 8\.$"):
        plots.plot_examples(x, adv, den, y=y, pred_clean=y, pred_adv=y, pred_den=y)
    with pytest.raises(ValueError, match="must share one shape"):
        plots.plot_examples(x, adv[:, :, :3], den, y=y, pred_clean=y, pred_adv=y, pred_den=y, n=2)
    with pytest.raises(ValueError, match=r"x_adv must lie in \[0, 1\]"):
        plots.plot_examples(x, adv + 1, den, y=y, pred_clean=y, pred_adv=y, pred_den=y, n=2)
    with pytest.raises(ValueError, match=r"pred_den must have 5 entries"):
        plots.plot_examples(x, adv, den, y=y, pred_clean=y, pred_adv=y, pred_den=y[:2], n=2)
    with pytest.raises(ValueError, match=r"must lie in \[0, len\(class_names\) = 2\)"):
        plots.plot_examples(x, adv, den, y=y, pred_clean=y, pred_adv=y, pred_den=y, class_names=["a", "b"], n=2)


# ---------------------------------------------------------------------------------------- curves


def test_plot_eps_curves_lines():
    records = [
        {"model": "mlp", "eps": 0.2, "perturbed": 0.1, "denoised": 0.5, "clean": 0.98},
        {"model": "mlp", "eps": np.float32(0.05), "perturbed": np.float64(0.6), "denoised": 0.9},
        {"model": "convnet", "eps": 0.1, "perturbed": 0.8, "denoised": 0.95},
        {"model": "mlp", "eps": 0.1, "perturbed": 0.3, "denoised": 0.8},
    ]
    fig = plots.plot_eps_curves(records)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["mlp: perturbed", "mlp: denoised", "convnet: perturbed", "convnet: denoised"]
    np.testing.assert_array_equal(lines[0].get_xdata(), [np.float32(0.05), 0.1, 0.2])
    np.testing.assert_array_equal(lines[0].get_ydata(), [0.6, 0.3, 0.1])
    np.testing.assert_array_equal(lines[1].get_ydata(), [0.9, 0.8, 0.5])
    assert lines[0].get_linestyle() == "--" and lines[1].get_linestyle() == "-"
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([], "records must be a non-empty list of dicts"),
        ([{"model": "m", "eps": 0.1, "perturbed": 0.5}], r"records\[0\] lacks key\(s\) denoised"),
        ([{"model": "m", "eps": -0.1, "perturbed": 0.5, "denoised": 0.5}], r"records\[0\]\['eps'\] must be a finite number >= 0"),
        ([{"model": "m", "eps": 0.1, "perturbed": 50.0, "denoised": 0.5}], r"^plot_eps_curves: records\[0\]\['perturbed'\] \(an accuracy fraction\) must be a finite number in \[0, 1\]; got 50\.0\.$"),
        ([{"model": "m", "eps": 0.1, "perturbed": 0.5, "denoised": 0.5}] * 2, r"records\[1\] repeats model 'm' at eps=0.1"),
        ([{"model": "m", "eps": 0.1, "perturbed": True, "denoised": 0.5}], r"^plot_eps_curves: records\[0\]\['perturbed'\] \(an accuracy fraction\) must be a finite number in \[0, 1\]; got True\.$"),
        ({"model": "m"}, "records must be a non-empty list of dicts; got dict"),
    ],
)
def test_plot_eps_curves_errors(records, match):
    with pytest.raises(ValueError, match=match):
        plots.plot_eps_curves(records)


def test_plot_metric_histograms_counts(rng):
    psnr = {"perturbed": rng.normal(20, 2, 50), "denoised": np.append(rng.normal(26, 2, 49), np.inf)}
    ssim = {"perturbed": torch.from_numpy(rng.uniform(0.3, 0.7, 50)), "denoised": rng.uniform(0.6, 1.0, 50)}
    fig = plots.plot_metric_histograms(psnr, ssim, bins=10)
    ax_p, ax_s = fig.axes
    counts = [p.get_data()[0] for p in ax_p.patches]
    assert [c.sum() for c in counts] == [50, 49]
    edges = ax_p.patches[0].get_data()[1]
    np.testing.assert_array_equal(counts[0], np.histogram(psnr["perturbed"], bins=edges)[0])
    assert "1 identical (inf), not drawn" in ax_p.get_legend().get_texts()[1].get_text()
    assert [p.get_data()[0].sum() for p in ax_s.patches] == [50, 50]
    with pytest.raises(ValueError, match=r"ssim\['d'\] must lie in \[-1, 1\]"):
        plots.plot_metric_histograms(psnr, {"d": np.array([0.5, 1.5])})
    with pytest.raises(ValueError, match=r"ssim\['d'\] must be finite; got 1 other values"):
        plots.plot_metric_histograms(psnr, {"d": np.array([0.5, np.inf])})
    with pytest.raises(ValueError, match=r"psnr\['p'\] must be a non-empty 1-D float array"):
        plots.plot_metric_histograms({"p": np.ones((2, 2))}, ssim)


# ------------------------------------------------------------------------------------ save_figure


def test_save_figure_writes_png_atomically(tmp_path):
    fig = plots.plot_density({"a": np.linspace(0, 1, 11)})
    out = plots.save_figure(fig, tmp_path / "sub" / "density.png", dpi=50)
    data = (tmp_path / "sub" / "density.png").read_bytes()
    assert out.endswith("density.png") and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["density.png"]  # no temp file left
    with pytest.raises(ValueError, match=r"save_figure: path must end with '.png'"):
        plots.save_figure(fig, tmp_path / "x.pdf")
    with pytest.raises(TypeError, match="fig must be a matplotlib.figure.Figure"):
        plots.save_figure(fig.axes[0], tmp_path / "x.png")
    assert isinstance(fig, Figure)


def test_plot_functions_draw_on_a_given_axes(rng):
    fig = Figure()
    ax1, ax2, ax3, ax4 = fig.subplots(1, 4)
    assert plots.plot_tsne(rng.standard_normal((6, 2)), np.arange(6) % 2, ax=ax1) is fig
    assert plots.plot_qq(rng.uniform(size=10), rng.uniform(size=10), ax=ax2) is fig
    assert plots.plot_density({"a": rng.uniform(size=10)}, ax=ax3) is fig
    assert plots.plot_eps_curves([{"model": "m", "eps": 0.1, "perturbed": 0.5, "denoised": 0.7}], ax=ax4) is fig
    assert len(ax1.collections) == 2 and len(ax2.get_lines()) == 2 and len(ax3.patches) == 1 and len(ax4.get_lines()) == 2
    with pytest.raises(TypeError, match="plot_qq: ax must be a matplotlib Axes or None"):
        plots.plot_qq(np.ones(3), np.ones(3), ax="left")


def test_pick_examples_puts_successful_attacks_in_the_grid():
    from ddl.plots import examples as examples_mod

    assert doctest.testmod(examples_mod).failed == 0
    y = torch.arange(20) % 10
    pred_adv = y.clone()
    pred_adv[[11, 13, 17, 19]] = 0                       # the attack fools 4 images, none among the first 8
    idx = plots.pick_examples(y, y, pred_adv, n=8)
    assert idx.tolist() == [0, 1, 2, 3, 11, 13, 17, 19]
    assert plots.pick_examples(y, y, y, n=8).tolist() == list(range(8))      # no success: the first ones
    with pytest.raises(ValueError, match=r"pick_examples: n must be an int >= 1; got 0"):
        plots.pick_examples(y, y, y, n=0)


def test_plot_eps_curves_labels_grey_levels():
    records = [{"model": "mlp", "eps": e / 255, "perturbed": 0.5, "denoised": 0.6} for e in (2, 8)]
    ax = plots.plot_eps_curves(records, grey_levels=True).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2/255", "8/255"]
