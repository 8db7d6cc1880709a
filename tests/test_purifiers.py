"""Tests of ddl.defence.purifiers: each purifier against its reference (scipy.ndimage, Pillow,
scikit-image, hand-computed values), its grad modes (BPDA backward = identity, exact = autograd)
and its parameter errors."""

import io
import json
import re

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from PIL import Image

from ddl.defence import (
    PURIFIERS,
    BitDepthReduction,
    GaussianBlur,
    JPEGCompression,
    MedianSmoothing,
    TotalVariation,
    WaveletShrinkage,
)

ALL = [BitDepthReduction, MedianSmoothing, GaussianBlur, JPEGCompression, TotalVariation, WaveletShrinkage]


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n=3, c=3, h=12, w=10, seed=0, dtype=torch.float32):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _hwc(img: torch.Tensor) -> np.ndarray:
    return img.permute(1, 2, 0).double().numpy()


# ----------------------------------------------------------------------------- references
def test_bit_depth_by_hand():
    x = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.51, 1 / 14, 3 / 14, 0.93, 1.0]).view(1, 1, 1, 9)
    assert BitDepthReduction(bits=1)(x).flatten().tolist() == [0, 0, 0, 0, 1, 0, 0, 1, 1]
    # 3 bits: levels k/7; 0.5*7 = 3.5 and 1/14*7 = 0.5, 3/14*7 = 1.5 round half to even (np.rint)
    expect = torch.tensor([0, 1, 3, 4, 4, 0, 2, 7, 7]) / 7
    assert torch.allclose(BitDepthReduction(bits=3)(x).flatten(), expect, atol=1e-7)
    x8 = torch.arange(256).float().view(1, 1, 16, 16) / 255
    assert torch.equal(BitDepthReduction(bits=8)(x8), x8)  # 8 bits keeps every grey level


@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("channels", [1, 3])
def test_median_matches_scipy_median_filter(size, channels):
    x = _images(c=channels)
    ref = ndi.median_filter(x.numpy(), size=(1, 1, size, size), mode="reflect")
    assert np.array_equal(MedianSmoothing(size=size)(x).numpy(), ref)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_gaussian_blur_matches_scipy_gaussian_filter(sigma):
    x = _images(dtype=torch.float64)
    ref = ndi.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="reflect", truncate=4.0)
    assert np.abs(GaussianBlur(sigma=sigma)(x).numpy() - ref).max() < 1e-12
    out32 = GaussianBlur(sigma=sigma)(x.float())
    assert out32.dtype == torch.float32 and np.abs(out32.double().numpy() - ref).max() < 1e-6
    assert np.abs(GaussianBlur(sigma=sigma, truncate=2.0)(x).numpy()
                  - ndi.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="reflect",
                                        truncate=2.0)).max() < 1e-12


def _pillow_round_trip(img_u8: np.ndarray, quality: int) -> np.ndarray:
    pil = Image.fromarray(img_u8[..., 0], "L") if img_u8.shape[2] == 1 else Image.fromarray(img_u8, "RGB")
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    return dec[..., None] if dec.ndim == 2 else dec


@pytest.mark.parametrize("quality", [10, 75, 95])
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_is_byte_identical_to_a_pillow_round_trip(quality, channels):
    x = _images(c=channels, h=16, w=16)
    out = JPEGCompression(quality=quality)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for img_u8, img_out in zip(u8, out):
        dec = _pillow_round_trip(img_u8, quality)
        got = (img_out.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        assert np.array_equal(got, dec)
        assert torch.equal(img_out, torch.from_numpy(dec.astype(np.float32) / 255).permute(2, 0, 1))
    assert (out - x).abs().mean() > 0.002  # it did something (even at quality 95)


@pytest.mark.parametrize("weight", [0.05, 0.3])
@pytest.mark.parametrize("channels", [1, 3])
def test_tv_matches_scikit_image(weight, channels):
    from skimage.restoration import denoise_tv_chambolle

    x = _images(c=channels)
    out = TotalVariation(weight=weight)(x)
    for img, got in zip(x, out):
        ref = denoise_tv_chambolle(_hwc(img), weight=weight, channel_axis=-1)
        assert np.abs(_hwc(got) - ref).max() < 1e-5
    assert (out - x).abs().mean() > 0.01


@pytest.mark.parametrize(("sigma", "wavelet", "method"), [(0.05, "db1", "BayesShrink"), (0.1, "db2", "BayesShrink"),
                                                          (0.05, "db1", "VisuShrink")])
@pytest.mark.parametrize("channels", [1, 3])
def test_wavelet_matches_scikit_image(sigma, wavelet, method, channels):
    pytest.importorskip("pywt")
    from skimage.restoration import denoise_wavelet

    x = _images(c=channels, h=16, w=16)
    out = WaveletShrinkage(sigma=sigma, wavelet=wavelet, method=method)(x)
    for img, got in zip(x, out):
        ref = denoise_wavelet(_hwc(img), sigma=sigma, wavelet=wavelet, method=method, mode="soft",
                              rescale_sigma=True, channel_axis=-1)
        assert np.abs(_hwc(got) - ref).max() < 1e-5
    assert (out - x).abs().mean() > 1e-3


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("cls", ALL)
def test_bpda_backward_is_the_identity(cls):
    x = _images(c=1, h=16, w=16).requires_grad_()
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    out = cls(grad="bpda")(x)
    with torch.no_grad():
        assert torch.equal(out, cls(grad="none")(x))  # the forward is the purifier's
    (g,) = torch.autograd.grad((out * weights).sum(), x)
    assert torch.equal(g, weights)


@pytest.mark.parametrize("cls", ALL)
def test_grad_none_gives_no_graph_and_fit_returns_self(cls):
    x = _images(c=1, h=16, w=16).requires_grad_()
    p = cls(grad="none")
    assert p.fit(x) is p and p.fit() is p
    out = p(x)
    assert not out.requires_grad and out.shape == x.shape and out.dtype == x.dtype


def test_exact_gradients_of_blur_and_median_are_autograd():
    x = _images(n=2, c=2, h=7, w=6, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(GaussianBlur(sigma=0.8), (x,))
    assert torch.autograd.gradcheck(MedianSmoothing(size=3), (x,))
    # each output pixel's gradient reaches exactly the input pixel its window selected
    (g,) = torch.autograd.grad(MedianSmoothing(size=3)(x).sum(), x)
    assert g.sum().item() == x.numel() and (g >= 0).all()


@pytest.mark.parametrize("cls", [BitDepthReduction, JPEGCompression, TotalVariation, WaveletShrinkage])
def test_exact_is_refused_where_there_is_no_torch_gradient(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}.transform: grad='exact' is not offered by "
                                         rf"{cls.__name__} .*use 'bpda' \(identity backward\) or 'none'"):
        cls(grad="exact")(_images(c=1, h=8, w=8))


def test_purifier_composes_with_a_classifier():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 12 * 10, 4))
    x = _images().requires_grad_()
    defended = torch.nn.Sequential(MedianSmoothing(3, grad="bpda"), model)
    defended(x).sum().backward()
    assert x.grad.shape == x.shape and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(("purifier", "message"), [
    (BitDepthReduction(bits=0), "BitDepthReduction.transform: bits must be an int in [1, 8]; got 0."),
    (MedianSmoothing(size=4),
     "MedianSmoothing.transform: size (the window is size x size) must be an odd int >= 1; got 4."),
    (MedianSmoothing(size=np.int64(4)),
     "MedianSmoothing.transform: size (the window is size x size) must be an odd int >= 1; got 4."),
    (GaussianBlur(sigma=-1.0), "GaussianBlur.transform: sigma must be a finite number > 0; got -1.0."),
    (JPEGCompression(quality=100),
     "JPEGCompression.transform: quality (Pillow's useful range) must be an int in [1, 95]; got 100."),
    (JPEGCompression(quality=np.bool_(True)),
     "JPEGCompression.transform: quality (Pillow's useful range) must be an int in [1, 95]; got True."),
    (TotalVariation(weight=0), "TotalVariation.transform: weight must be a finite number > 0; got 0."),
    (WaveletShrinkage(wavelet="nope"),
     "WaveletShrinkage.transform: wavelet must be a discrete PyWavelets name (pywt.wavelist(kind='discrete')); "
     "got 'nope'."),
    (WaveletShrinkage(method="SureShrink"),
     "WaveletShrinkage.transform: method must be one of BayesShrink, VisuShrink; got 'SureShrink' "
     "(did you mean 'VisuShrink'?)."),
    (MedianSmoothing(grad="soft"), "MedianSmoothing.transform: grad must be one of exact, bpda, none; got 'soft'."),
])
def test_bad_parameters_name_the_parameter_and_the_value(purifier, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        purifier(_images(c=1, h=8, w=8))


def test_jpeg_quality_may_be_a_numpy_integer():
    x = _images(n=2)
    assert torch.equal(JPEGCompression(quality=np.int64(50))(x), JPEGCompression(quality=50)(x))


@pytest.mark.parametrize("purifier", [
    BitDepthReduction(bits=np.int64(3)), MedianSmoothing(size=np.int32(3)),
    GaussianBlur(sigma=np.float32(0.5), truncate=np.int64(3)), JPEGCompression(quality=np.int64(50)),
    TotalVariation(weight=np.float64(0.2), eps=np.float32(1e-3), max_num_iter=np.int64(20)),
    WaveletShrinkage(sigma=np.float64(0.1), wavelet_levels=np.int64(1)),
])
def test_parameters_given_as_numpy_scalars_are_plain_python_numbers(purifier):
    """get_params gives what JSON accepts, before use and after (the checks store Python numbers)."""
    before = purifier.get_params()
    json.dumps(before)
    assert all(not isinstance(v, np.generic) for v in before.values())
    purifier(_images(n=1, c=1, h=8, w=8))
    after = purifier.get_params()
    json.dumps(after)
    assert after == before and all(not isinstance(v, np.generic) for v in after.values())


def test_bad_images_are_refused():
    with pytest.raises(TypeError, match="^" + re.escape(
            "MedianSmoothing.transform: x must be a floating-point tensor of shape (N, C, H, W); got uint8 tensor of "
            "shape (1, 1, 4, 4) (convert with ddl.data.to_float_images or x.float() / 255).") + "$"):
        MedianSmoothing()(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="^" + re.escape(
            "GaussianBlur.transform: x must be a floating-point tensor of shape (N, C, H, W); got float32 tensor of "
            "shape (4, 4).") + "$"):
        GaussianBlur()(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"JPEGCompression: x must have 1 or 3 channels; got 2"):
        JPEGCompression()(torch.zeros(1, 2, 8, 8))


def test_registry_names_each_class_and_its_main_parameter():
    assert {n: (c.__name__, p) for n, (c, p, _) in PURIFIERS.items()} == {
        "bits": ("BitDepthReduction", "bits"), "median": ("MedianSmoothing", "size"),
        "gauss": ("GaussianBlur", "sigma"), "jpeg": ("JPEGCompression", "quality"),
        "tv": ("TotalVariation", "weight"), "wavelet": ("WaveletShrinkage", "sigma")}
    for cls, param, kind in PURIFIERS.values():
        assert isinstance(cls().get_params()[param], kind)
