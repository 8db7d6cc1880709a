"""DictionaryDenoiser: clean-patch dictionaries, noise removal, gradients, persistence, errors."""

import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from ddl.defence import DictionaryDenoiser, NotFittedError, warn_if_zero_gradients
from ddl.defence import denoiser as denoiser_module
from ddl.sparse import center_patches, extract_patches


def _psnr(a, b):
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def _clean_patch_dictionary(x, patch):
    """Unit-norm centered patches of x as atoms (flat ones left out), plus 8 random atoms."""
    P, _ = center_patches(extract_patches(x, patch))
    P = P[(P * P).sum(1) > 1e-8]
    extra = torch.randn(8, P.shape[1], dtype=P.dtype, generator=torch.Generator().manual_seed(1))
    D = torch.cat([P, extra])
    return D / D.norm(dim=1, keepdim=True)


def _smooth_images(n, c=1, size=16, seed=0):
    """Sums of a few random low-frequency cosines, scaled into [0.1, 0.9]; (n, c, size, size)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    imgs = torch.zeros(n, c, size, size)
    for _ in range(3):
        fy, fx, ph = torch.rand(3, n, c, 1, 1, generator=g) * torch.tensor([3.0, 3.0, 6.28]).view(3, 1, 1, 1, 1)
        imgs += torch.cos(2 * np.pi * (fy * yy + fx * xx) + ph)
    imgs -= imgs.amin(dim=(2, 3), keepdim=True)
    imgs /= imgs.amax(dim=(2, 3), keepdim=True)
    return 0.1 + 0.8 * imgs


@pytest.fixture
def fitted(tiny_images):
    den = DictionaryDenoiser.from_dictionary(_clean_patch_dictionary(tiny_images, 4),
                                             patch_size=4, n_nonzero_coefs=1)
    return den, tiny_images


# ------------------------------------------------------------------ what it computes
def test_dictionary_of_clean_patches_reconstructs_clean_input(fitted):
    den, x = fitted
    x_den = den(x)
    assert x_den.shape == x.shape and x_den.dtype == torch.float32
    assert _psnr(x_den, x) >= 40.0


def test_denoising_raises_psnr_of_noisy_smooth_images():
    x_train, x_test = _smooth_images(200, seed=0), _smooth_images(20, seed=1)
    den = DictionaryDenoiser(patch_size=5, n_components=48, n_nonzero_coefs=2,
                             max_patches=20_000, random_state=0).fit(x_train)
    noisy = (x_test + 0.1 * torch.randn(x_test.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    before, after = _psnr(noisy, x_test), _psnr(den(noisy), x_test)
    assert after > before + 3.0, (before, after)
    assert den.n_training_patches_ == 20_000          # smooth images have no flat patch
    assert torch.allclose(den.dictionary_.norm(dim=1), torch.ones(48), atol=1e-5)


def test_matches_a_hand_written_pipeline(fitted, rng):
    den, x = fitted
    den.n_nonzero_coefs, den.clip = 3, False
    from ddl.sparse import omp, reconstruct_from_patches

    P, means = center_patches(extract_patches(x, 4))
    codes = omp(P, den.dictionary_, n_nonzero_coefs=3)
    expected = reconstruct_from_patches(codes @ den.dictionary_ + means, x.shape, 4)
    torch.testing.assert_close(den(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("patch, step", [((4, 4), (1, 1)), ((4, 2), (2, 2))])
def test_fused_centering_equals_center_of_extract(tiny_images, patch, step):
    P, means = denoiser_module._centered_patches(tiny_images.double(), patch, step)
    ref_P, ref_means = center_patches(extract_patches(tiny_images.double(), patch, step=step))
    torch.testing.assert_close(P, ref_P, rtol=0, atol=1e-15)
    torch.testing.assert_close(means, ref_means, rtol=0, atol=1e-15)
    x = tiny_images.double().requires_grad_(True)                  # differentiable path
    torch.testing.assert_close(denoiser_module._centered_patches(x, patch, step)[0], ref_P,
                               rtol=0, atol=1e-15)


def test_clip_is_the_only_clipping(fitted):
    den, x = fitted
    bright = x * 3.0                                   # outside [0, 1] on purpose
    den.clip = False
    assert den(bright).max() > 1.0
    den.clip = True
    out = den(bright)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_chunking_does_not_change_the_result(fitted, monkeypatch):
    den, x = fitted
    whole = den(x)
    monkeypatch.setattr(denoiser_module, "_PATCHES_PER_CHUNK", 30)    # one image per chunk
    torch.testing.assert_close(den(x), whole, rtol=0, atol=1e-6)      # GEMM blocking only


def test_fit_is_reproducible_and_samples_max_patches():
    x = _smooth_images(50, seed=3)
    a = DictionaryDenoiser(patch_size=4, n_components=16, n_nonzero_coefs=2, max_patches=3000).fit(x)
    b = DictionaryDenoiser(patch_size=4, n_components=16, n_nonzero_coefs=2, max_patches=3000).fit(x)
    assert a.n_training_patches_ == 3000
    torch.testing.assert_close(a.dictionary_, b.dictionary_, rtol=0, atol=0)


def test_fit_drops_flat_patches():
    x = torch.zeros(4, 1, 10, 10)
    x[:, :, 2:5, 2:5] = 1.0                            # a square on a flat background
    den = DictionaryDenoiser(patch_size=3, n_components=8, n_nonzero_coefs=1).fit(x)
    P, _ = center_patches(extract_patches(x, 3))
    assert den.n_training_patches_ == int(((P * P).sum(1) > 1e-6).sum()) < len(P)


# ------------------------------------------------------------------ gradients
def test_exact_gradient_passes_gradcheck(rng):
    x = torch.from_numpy(rng.uniform(0.2, 0.8, (1, 1, 4, 4))).requires_grad_(True)
    D = torch.from_numpy(rng.standard_normal((8, 9)))
    den = DictionaryDenoiser.from_dictionary(D / D.norm(dim=1, keepdim=True), patch_size=3,
                                             n_nonzero_coefs=2, clip=False)
    assert torch.autograd.gradcheck(den, (x,))


def test_bpda_gradient_is_identity_and_value_is_exact(fitted):
    den, x = fitted
    den.grad = "bpda"
    xr = x.clone().requires_grad_(True)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    out = den(xr)
    (g,) = torch.autograd.grad((out * w).sum(), xr)
    torch.testing.assert_close(g, w, rtol=0, atol=0)
    den.grad = "none"
    torch.testing.assert_close(out.detach(), den(x), rtol=0, atol=0)


def test_grad_none_cuts_the_graph_and_check_warns(fitted):
    den, x = fitted
    model = nn.Sequential(den, nn.Flatten(), nn.Linear(x[0].numel(), 3)).eval()
    y = torch.zeros(len(x), dtype=torch.int64)
    den.grad = "none"
    assert not den(x.clone().requires_grad_(True)).requires_grad
    with pytest.warns(RuntimeWarning, match=r"input gradient is ~0 for 6 of 6 inputs"):
        assert warn_if_zero_gradients(model, x, y) == 1.0
    den.grad = "exact"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_zero_gradients(model, x, y) == 0.0
    assert all(p.grad is None for p in model.parameters())


def test_warn_if_zero_gradients_refuses_what_is_not_images_and_labels():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="^" + re.escape(
            "warn_if_zero_gradients: x must be a floating-point tensor of shape (N, C, H, W); got int64 tensor of "
            "shape (2, 1, 2, 2) (convert with ddl.data.to_float_images or x.float() / 255).") + "$"):
        warn_if_zero_gradients(model, x.long(), y)
    with pytest.raises(ValueError, match="^" + re.escape(
            "warn_if_zero_gradients: y must be an int64 tensor of shape (2,) (one per image of x); got int64 tensor "
            "of shape (3,).") + "$"):
        warn_if_zero_gradients(model, x, torch.tensor([0, 1, 1]))


def test_sequential_defended_model(fitted):
    den, x = fitted
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 10)).eval()
    defended = nn.Sequential(den, clf)
    logits = defended(x)
    assert logits.shape == (6, 10)
    torch.testing.assert_close(logits, clf(den(x)))
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(defended(xr)[:, 0].sum(), xr)
    assert g.abs().sum() > 0


# ------------------------------------------------------------------ persistence and modules
def test_save_load_round_trip(fitted, tmp_path):
    den, x = fitted
    den.n_training_patches_ = 123
    path = tmp_path / "sub" / "den.pt"
    den.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["den.pt"]       # no temp file left
    back = DictionaryDenoiser.load(path)
    assert back.get_params() == {**den.get_params(), "device": "cpu"}
    torch.testing.assert_close(back.dictionary_, den.dictionary_, rtol=0, atol=0)
    torch.testing.assert_close(back(x), den(x), rtol=0, atol=0)
    assert back.n_channels_ == den.n_channels_ and back.n_training_patches_ == 123
    blob = torch.load(path, weights_only=True)
    assert set(blob) >= {"ddl_version", "params", "dictionary"}


def test_numpy_integer_parameters_save_and_load(tmp_path):
    """NumPy numbers pass the checks and are stored as Python ones, so the weights-only load
    reads the file (it refused numpy scalars with an UnpicklingError)."""
    x = _smooth_images(6, size=12)
    den = DictionaryDenoiser(patch_size=np.int64(4), n_components=np.int64(12), n_nonzero_coefs=np.int32(2),
                             tol=np.float64(0.0), step=(np.int64(2), np.int64(2)), n_epochs=np.int64(1),
                             batch_size=np.int64(64), max_patches=np.int64(500), random_state=np.int64(3),
                             method="mod").fit(x)
    den.save(tmp_path / "den.pt")
    back = DictionaryDenoiser.load(tmp_path / "den.pt")
    params = back.get_params()
    assert params == {**den.get_params(), "device": "cpu"}
    assert (params["patch_size"], params["step"], params["n_components"], params["n_nonzero_coefs"]) == (4, (2, 2), 12, 2)
    for name in ("patch_size", "n_components", "n_nonzero_coefs", "n_epochs", "batch_size", "max_patches",
                 "random_state"):
        assert type(params[name]) is int, name
    assert type(params["tol"]) is float and all(type(v) is int for v in params["step"])
    torch.testing.assert_close(back(x), den(x), rtol=0, atol=0)
    den.n_nonzero_coefs = np.int64(1)                  # changed after fit: save converts it too
    den.save(tmp_path / "den1.pt")
    assert DictionaryDenoiser.load(tmp_path / "den1.pt").n_nonzero_coefs == 1


def test_dictionary_is_a_buffer(fitted):
    den, x = fitted
    assert "dictionary_" in den.state_dict()
    den64 = den.to(torch.float64)
    assert den64.dictionary_.dtype == torch.float64
    assert den64(x.double()).dtype == torch.float64


def test_params_are_stored_unchanged():
    den = DictionaryDenoiser(patch_size=(3, 5), n_components=7, tol=0.5, device="cpu")
    assert den.get_params()["patch_size"] == (3, 5) and den.tol == 0.5
    assert "n_components=7" in repr(den)


# ------------------------------------------------------------------ errors
def test_not_fitted():
    den = DictionaryDenoiser()
    with pytest.raises(NotFittedError, match=r"DictionaryDenoiser is not fitted yet; call fit\(x_clean\) before transform\(\)"):
        den(torch.rand(1, 1, 8, 8))
    with pytest.raises(NotFittedError, match=r"before save\(\)"):
        den.save("never.pt")


def test_transform_errors(fitted):
    den, x = fitted
    other = torch.rand(2, 3 if x.shape[1] == 1 else 1, 8, 8)
    with pytest.raises(ValueError, match=r"transform: x has \d channels but the dictionary was fitted on \d-channel images"):
        den(other)
    with pytest.raises(ValueError, match=r"transform: patch_size=\(4, 4\) is larger than the image \(3, 3\)"):
        den(x[:, :, :3, :3])
    with pytest.raises(TypeError, match="^" + re.escape(
            f"DictionaryDenoiser.transform: x must be a floating-point tensor of shape (N, C, H, W); got uint8 tensor "
            f"of shape {tuple(x.shape)} (convert with ddl.data.to_float_images or x.float() / 255).") + "$"):
        den((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="^" + re.escape(
            f"DictionaryDenoiser.transform: x must be a floating-point tensor of shape (N, C, H, W); got float32 tensor "
            f"of shape {tuple(x.shape[1:])}.") + "$"):
        den(x[0])
    den.n_nonzero_coefs = den.n_components + 1
    with pytest.raises(ValueError, match=r"n_nonzero_coefs must be an int in \[1, n_components=\d+\]; got \d+"):
        den(x)
    den.n_nonzero_coefs, den.grad = 1, "adaptive"
    with pytest.raises(ValueError, match=r"^DictionaryDenoiser.transform: grad must be one of exact, bpda, none; got 'adaptive'\.$"):
        den(x)
    den.grad, den.step = "exact", 3
    with pytest.raises(ValueError, match=r"step=3 does not tile the image height 8"):
        den(x)
    den.step, den.patch_size = 1, 3
    with pytest.raises(ValueError, match=r"patch_size=\(3, 3\) with \d channels gives \d+ features but the dictionary has \d+"):
        den(x)


def test_fit_errors():
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"DictionaryDenoiser.fit: n_nonzero_coefs must be an int in \[1, n_components=4\]; got 5"):
        DictionaryDenoiser(n_components=4, n_nonzero_coefs=5, patch_size=3).fit(x)
    with pytest.raises(ValueError, match=r"fit: patch_size=\(9, 9\) is larger than the image \(8, 8\)"):
        DictionaryDenoiser(patch_size=9).fit(x)
    with pytest.raises(ValueError, match=r"^DictionaryDenoiser.fit: tol \(squared residual norm per patch\) must be None or a finite number >= 0; got -1\.$"):
        DictionaryDenoiser(patch_size=3, tol=-1).fit(x)
    with pytest.raises(ValueError, match=r"fit: max_patches must be an int >= 1; got 0"):
        DictionaryDenoiser(patch_size=3, max_patches=0).fit(x)
    with pytest.raises(ValueError, match=r"fit: every sampled patch is flat"):
        DictionaryDenoiser(patch_size=3, n_components=4, n_nonzero_coefs=1).fit(torch.full((2, 1, 8, 8), 0.5))
    with pytest.raises(TypeError, match="^" + re.escape(
            "DictionaryDenoiser.fit: x_clean must be a floating-point tensor of shape (N, C, H, W); got int64 tensor "
            "of shape (2, 1, 8, 8) (convert with ddl.data.to_float_images or x_clean.float() / 255).") + "$"):
        DictionaryDenoiser(patch_size=3).fit(torch.zeros(2, 1, 8, 8, dtype=torch.int64))


def test_from_dictionary_and_load_errors(tmp_path):
    with pytest.raises(ValueError, match=r"dictionary rows have 10 features, not a multiple of patch_size 3x3 = 9"):
        DictionaryDenoiser.from_dictionary(torch.randn(5, 10), patch_size=3, n_nonzero_coefs=1)
    with pytest.raises(ValueError, match=r"n_components=7 does not match the dictionary's 5 rows"):
        DictionaryDenoiser.from_dictionary(torch.randn(5, 9), patch_size=3, n_components=7)
    with pytest.raises(ValueError, match=r"dictionary must be a 2-D floating-point tensor"):
        DictionaryDenoiser.from_dictionary(torch.randn(5), patch_size=3)
    path = tmp_path / "other.pt"
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"is not a file written by DictionaryDenoiser.save"):
        DictionaryDenoiser.load(path)


# ------------------------------------------------------------------ the fused C pipeline (CPU)
_omp_module = __import__("importlib").import_module("ddl.sparse.omp")


@pytest.mark.skipif(__import__("ddl.sparse._omp_native").sparse._omp_native.load() is None, reason="no C compiler: autograd path only")
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("remove_mean", [True, False])
@pytest.mark.parametrize("step", [1, 2])
def test_native_pipeline_equals_autograd_path(tiny_images, monkeypatch, k, remove_mean, step):
    """Forward values and exact / BPDA gradients of the C pipeline equal the torch autograd
    pipeline (supports held fixed), grey and colour, with and without mean removal."""
    x = tiny_images.double()
    x[0, :, :4, :4] = 0.5                                      # a flat region: uncoded patches
    den = DictionaryDenoiser(patch_size=4, n_components=24, n_nonzero_coefs=k, step=step,
                             remove_mean=remove_mean, max_patches=500).fit(x)
    w = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(2))

    def run():
        out = {}
        for grad in ("none", "exact", "bpda"):
            den.grad = grad
            xr = x.clone().requires_grad_(True)
            y = den(xr)
            g = torch.autograd.grad((y * w).sum(), xr)[0] if grad != "none" else None
            out[grad] = (y.detach(), g)
        return out

    native = run()
    monkeypatch.setenv("DDL_OMP_KERNEL", "torch")
    ref = run()
    for grad in ("none", "exact", "bpda"):
        torch.testing.assert_close(native[grad][0], ref[grad][0], rtol=1e-10, atol=1e-12)
        if grad != "none":
            torch.testing.assert_close(native[grad][1], ref[grad][1], rtol=1e-9, atol=1e-11)


def test_exact_gradient_to_the_dictionary_uses_autograd(fitted):
    """A dictionary that needs a gradient takes the autograd path, which provides it."""
    den, x = fitted
    den.grad = "exact"
    D = den.dictionary_.clone().requires_grad_(True)
    out = den._denoise(x[:2], D, (den.patch_size,) * 2, (1, 1), "exact")
    (g,) = torch.autograd.grad(out.sum(), D)
    assert g.abs().sum() > 0


# --- NaN and infinite pixels (issue 19, item 7) ------------------------------------------------
def _use_kernel(kernel):
    """Run the OMP kernel ``kernel`` ("torch" or "native"; conftest restores the choice after
    the test); the native one needs a C compiler."""
    from ddl.sparse import _omp_native, kernel_name, set_omp_kernel

    if kernel == "native" and _omp_native.load() is None:
        pytest.skip(f"the C kernel cannot be built here ({_omp_native.reason()}): torch kernel only")
    set_omp_kernel(kernel)
    assert kernel_name() == kernel


@pytest.mark.parametrize("kernel", ["torch", "native"])
@pytest.mark.parametrize("grad", ["none", "exact", "bpda"])
@pytest.mark.parametrize("value, what", [(float("nan"), "1 NaN value"), (float("inf"), "1 infinite value"),
                                         (float("-inf"), "1 infinite value")])
def test_transform_refuses_a_nan_or_infinite_pixel_with_either_kernel(kernel, grad, value, what):
    # before: the torch kernel raised "omp_reconstruct: X contains NaN or infinite values" and the C
    # kernel returned NaN pixels without an error
    _use_kernel(kernel)
    x = _smooth_images(6, size=8)
    den = DictionaryDenoiser(patch_size=4, n_components=8, n_nonzero_coefs=2, max_patches=200, grad=grad).fit(x)
    bad = x[:3].clone()
    bad[1, 0, 3, 3] = value
    message = ("DictionaryDenoiser.transform: x must be a floating-point tensor of shape (N, C, H, W) with finite "
               f"values; got float32 tensor of shape (3, 1, 8, 8) with {what} in 1 of 3 images.")
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        den.transform(bad.requires_grad_(grad != "none"))
    assert torch.isfinite(den.transform(x[:3])).all()  # the same images without it denoise


def test_transform_counts_every_bad_value_and_image():
    x = _smooth_images(4, size=8)
    den = DictionaryDenoiser(patch_size=4, n_components=8, n_nonzero_coefs=2, max_patches=200).fit(x)
    bad = x.clone()
    bad[0, 0, 0, 0] = bad[0, 0, 1, 1] = float("nan")
    bad[2, 0, 5, 5] = float("inf")
    with pytest.raises(ValueError, match=re.escape("with 2 NaN values and 1 infinite value in 2 of 4 images.")):
        den.transform(bad)


@pytest.mark.parametrize("kernel", ["torch", "native"])
def test_fit_refuses_a_nan_pixel_with_either_kernel(kernel):
    _use_kernel(kernel)
    x = _smooth_images(6, size=8)
    x[4, 0, 2, 6] = float("nan")
    message = ("DictionaryDenoiser.fit: x_clean must be a floating-point tensor of shape (N, C, H, W) with finite "
               "values; got float32 tensor of shape (6, 1, 8, 8) with 1 NaN value in 1 of 6 images.")
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        DictionaryDenoiser(patch_size=4, n_components=8, n_nonzero_coefs=2, max_patches=200).fit(x)
