"""Baseline input purifiers, to put beside the dictionary denoiser under the same attacks.

Each is an ``nn.Module`` mapping images to images with the denoiser's interface: parameters
stored unchanged by ``__init__`` (``get_params``; a NumPy number as the Python number it holds),
validated when used (and stored as validated), ``fit`` (nothing to learn:
returns ``self``), ``forward`` = ``transform``, and a ``grad`` attribute saying what the backward
pass of ``forward`` is:

``"exact"``
    Autograd through the operation itself (only where it is written in torch: Gaussian blur,
    median smoothing — the gradient of a median flows to the pixel it selected).
``"bpda"``
    Forward the purifier, backward the identity (straight-through; Athalye, Carlini & Wagner
    2018). The only gradient the non-differentiable ones (bit depth, JPEG, TV, wavelet) offer.
``"none"``
    No graph (the output is detached).

Images are ``float (N, C, H, W)`` in [0, 1]; outputs have the input's shape, dtype and device.

=========================  ============  ==============================  =====================
purifier                   spec (CLI)    parameters (defaults)           grads offered
=========================  ============  ==============================  =====================
``BitDepthReduction``      ``bits:4``    ``bits=4``                      bpda, none
``MedianSmoothing``        ``median:3``  ``size=3`` (odd)                exact, bpda, none
``GaussianBlur``           ``gauss:1``   ``sigma=1.0, truncate=4.0``     exact, bpda, none
``JPEGCompression``        ``jpeg:75``   ``quality=75``                  bpda, none
``TotalVariation``         ``tv:0.1``    ``weight=0.1, max_num_iter=200``  bpda, none
``WaveletShrinkage``       ``wavelet:0.05``  ``sigma=0.05, wavelet="db1",  bpda, none
                                         mode="soft", method="BayesShrink"``
=========================  ============  ==============================  =====================

References: bit-depth reduction and median smoothing as "feature squeezing" (Xu, Evans & Qi,
NDSS 2018); JPEG (Dziugaite et al. 2016; Guo et al. 2018, who also use total-variation
minimisation); wavelet shrinkage (Chang, Yu & Vetterli 2000, BayesShrink; Prakash et al. 2018).
TV and wavelet shrinkage call scikit-image (``denoise_tv_chambolle``, ``denoise_wavelet``, the
latter needs PyWavelets); JPEG calls Pillow; the others are torch.

What they do NOT prove: like the denoiser, a purifier evaluated with attacks computed on the bare
model (oblivious) says nothing about an attacker who knows it. All of these are known to fall to
BPDA or to attacks through their exact gradient (Athalye et al. 2018; Tramèr et al. 2020):
evaluate them with ``ddl robustness --defence median:3`` (adaptive attacks, worst case per image).
Boundary handling: median and Gaussian use scipy.ndimage's default ``mode="reflect"`` (the edge
pixel repeated: ``d c b a | a b c d``), so they match ``scipy.ndimage.median_filter`` and
``gaussian_filter`` numerically.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ddl._validate import check_choice, check_images, check_int, check_number, check_optional_int
from ddl.sparse.omp import straight_through

__all__ = ["PURIFIERS", "BitDepthReduction", "GaussianBlur", "JPEGCompression", "MedianSmoothing",
           "TotalVariation", "WaveletShrinkage"]


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python number (or bool, or str) it holds; anything else unchanged.

    The checks then judge it as before (``np.bool_(True)`` is still no int), and ``get_params``
    gives what JSON, Pillow and a weights-only ``torch.load`` accept."""
    return value.item() if isinstance(value, np.generic) else value


class _Purifier(nn.Module):
    """Shared machinery: parameters, validation, grad modes, ``fit``."""

    _PARAMS: tuple[str, ...] = ()
    GRADS: tuple[str, ...] = ("bpda", "none")

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as stored."""
        return {name: getattr(self, name) for name in self._PARAMS}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())

    def fit(self, x=None, y=None):
        """Nothing to learn; checks the parameters and returns ``self`` (the denoiser's interface)."""
        self._check(f"{type(self).__name__}.fit")
        return self

    def _check(self, func: str) -> None:
        if self.grad == "exact" and "exact" not in self.GRADS:
            raise ValueError(f"{func}: grad='exact' is not offered by {type(self).__name__} (it is "
                             f"not differentiable in torch); use 'bpda' (identity backward) or 'none'.")
        check_choice(func, "grad", self.grad, self.GRADS)
        self._check_params(func)

    def _check_params(self, func: str) -> None:  # pragma: no cover - overridden
        pass

    def transform(self, x: Tensor) -> Tensor:
        """Purify a batch: (N, C, H, W) float in [0, 1] → same shape, dtype and device."""
        func = f"{type(self).__name__}.transform"
        self._check(func)
        check_images(func, "x", x, value_range=None)  # no range test: it would cost a pass per call
        needs_grad = torch.is_grad_enabled() and x.requires_grad
        if self.grad == "exact" and needs_grad:
            return self._purify(x)
        with torch.no_grad():
            out = self._purify(x.detach())
        if self.grad == "bpda" and needs_grad:
            return straight_through(x, out)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`transform` (so the module composes with ``nn.Sequential``)."""
        return self.transform(x)                                   # (N, C, H, W) -> same

    def _purify(self, x: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError


def _reflect_index(n: int, r: int, device) -> Tensor:
    """Indices of a length-``n`` axis padded by ``r`` on each side, scipy's ``mode="reflect"``
    (numpy's ``"symmetric"``: ``d c b a | a b c d | d c b a``)."""
    return torch.as_tensor(np.pad(np.arange(n), r, mode="symmetric"), device=device)


def _pad_reflect(x: Tensor, r: int) -> Tensor:
    """(N, C, H, W) → (N, C, H + 2r, W + 2r), scipy.ndimage ``mode="reflect"``."""
    if r == 0:
        return x
    x = x.index_select(2, _reflect_index(x.shape[2], r, x.device))
    return x.index_select(3, _reflect_index(x.shape[3], r, x.device))


class BitDepthReduction(_Purifier):
    """Reduce each pixel to ``bits`` bits: ``round(x · (2^bits − 1)) / (2^bits − 1)`` (Xu et al.
    2018's bit-depth squeezer; round half to even, as ``np.rint``).

    Parameters
    ----------
    bits : int in [1, 8], default 4
    grad : {"bpda", "none"}, default "bpda"
        (the true gradient is zero almost everywhere)
    """

    _PARAMS = ("bits", "grad")

    def __init__(self, bits: int = 4, grad: str = "bpda"):
        super().__init__()
        self.bits = _plain(bits)
        self.grad = grad

    def _check_params(self, func):
        self.bits = check_int(func, "bits", self.bits, 1, 8)

    def _purify(self, x):
        levels = 2 ** self.bits - 1
        return torch.round(x * levels) / levels


class MedianSmoothing(_Purifier):
    """Median of each ``size × size`` window, per channel (Xu et al. 2018's local smoothing),
    in torch; edges as scipy.ndimage's ``mode="reflect"``.

    Parameters
    ----------
    size : odd int >= 1, default 3
    grad : {"exact", "bpda", "none"}, default "exact"
        ``exact``: autograd of the median (the gradient goes to the pixel each window selected).
    """

    _PARAMS = ("size", "grad")
    GRADS = ("exact", "bpda", "none")

    def __init__(self, size: int = 3, grad: str = "exact"):
        super().__init__()
        self.size = _plain(size)
        self.grad = grad

    def _check_params(self, func):
        self.size = check_int(func, "size (the window is size x size)", self.size, 1, odd=True)

    def _purify(self, x):
        r = self.size // 2
        N, C, H, W = x.shape
        windows = _pad_reflect(x, r).unfold(2, self.size, 1).unfold(3, self.size, 1)  # (N,C,H,W,s,s)
        return windows.reshape(N, C, H, W, -1).median(dim=-1).values


class GaussianBlur(_Purifier):
    """Gaussian smoothing of each channel (separable convolution), as
    ``scipy.ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=...)``.

    Parameters
    ----------
    sigma : float > 0, default 1.0
        Standard deviation in pixels.
    truncate : float > 0, default 4.0
        Kernel radius ``int(truncate · sigma + 0.5)``, as scipy.
    grad : {"exact", "bpda", "none"}, default "exact"
    """

    _PARAMS = ("sigma", "truncate", "grad")
    GRADS = ("exact", "bpda", "none")

    def __init__(self, sigma: float = 1.0, truncate: float = 4.0, grad: str = "exact"):
        super().__init__()
        self.sigma = _plain(sigma)
        self.truncate = _plain(truncate)
        self.grad = grad

    def _check_params(self, func):
        for name in ("sigma", "truncate"):
            setattr(self, name, check_number(func, name, getattr(self, name), 0, low_open=True))

    def kernel(self, dtype=torch.float64) -> Tensor:
        """The 1-D kernel (length ``2r + 1``, sums to 1), scipy's ``_gaussian_kernel1d``."""
        r = int(self.truncate * float(self.sigma) + 0.5)
        t = np.arange(-r, r + 1, dtype=np.float64)
        k = np.exp(-0.5 / float(self.sigma) ** 2 * t * t)
        return torch.as_tensor(k / k.sum(), dtype=dtype)

    def _purify(self, x):
        N, C, H, W = x.shape
        k = self.kernel(x.dtype).to(x.device)
        r = (len(k) - 1) // 2
        y = _pad_reflect(x, r).reshape(N * C, 1, H + 2 * r, W + 2 * r)
        y = torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1))          # rows
        y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1))          # columns
        return y.reshape(N, C, H, W)


def _to_uint8(x: Tensor) -> np.ndarray:
    """(N, C, H, W) float in [0, 1] → (N, H, W, C) uint8, rounded to the nearest grey level."""
    return (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _images_back(arr: np.ndarray, like: Tensor) -> Tensor:
    """(N, H, W, C) array → (N, C, H, W) tensor of ``like``'s dtype and device."""
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).to(like.dtype).to(like.device)


class JPEGCompression(_Purifier):
    """Encode each image as JPEG at ``quality`` with Pillow and decode it (Dziugaite et al. 2016).

    Pixels are first rounded to 8 bits (``round(255 x)``); 1-channel images are encoded as
    greyscale ("L"), 3-channel as RGB with Pillow's defaults otherwise (4:2:0 chroma
    subsampling, the standard quantisation tables scaled by ``quality``). The output is
    ``decoded / 255``.

    Parameters
    ----------
    quality : int in [1, 95], default 75
    grad : {"bpda", "none"}, default "bpda"
    """

    _PARAMS = ("quality", "grad")

    def __init__(self, quality: int = 75, grad: str = "bpda"):
        super().__init__()
        self.quality = _plain(quality)
        self.grad = grad

    def _check_params(self, func):
        self.quality = check_int(func, "quality (Pillow's useful range)", self.quality, 1, 95)

    def _purify(self, x):
        from PIL import Image

        if x.shape[1] not in (1, 3):
            raise ValueError(f"JPEGCompression: x must have 1 or 3 channels; got {x.shape[1]}.")
        out = []
        for img in _to_uint8(x):                                       # (H, W, C) uint8
            pil = Image.fromarray(img[..., 0], "L") if img.shape[2] == 1 else Image.fromarray(img, "RGB")
            buf = io.BytesIO()
            pil.save(buf, format="JPEG", quality=self.quality)
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
            out.append(dec[..., None] if dec.ndim == 2 else dec)
        return _images_back(np.stack(out).astype(np.float32) / 255.0, x)


def _per_image(x: Tensor, fn) -> Tensor:
    """Apply ``fn((H, W, C) float64) -> (H, W, C)`` to each image of a (N, C, H, W) batch."""
    arr = x.detach().cpu().double().permute(0, 2, 3, 1).numpy()
    return _images_back(np.stack([fn(img) for img in arr]), x)


class TotalVariation(_Purifier):
    """Total-variation minimisation (Chambolle 2004), scikit-image's ``denoise_tv_chambolle``
    on each image, channels separately (``channel_axis=-1``), in float64.

    Parameters
    ----------
    weight : float > 0, default 0.1
        Denoising weight (larger: smoother).
    eps : float > 0, default 2e-4
        Relative stopping tolerance of the cost.
    max_num_iter : int >= 1, default 200
    grad : {"bpda", "none"}, default "bpda"
    """

    _PARAMS = ("weight", "eps", "max_num_iter", "grad")

    def __init__(self, weight: float = 0.1, eps: float = 2e-4, max_num_iter: int = 200,
                 grad: str = "bpda"):
        super().__init__()
        self.weight = _plain(weight)
        self.eps = _plain(eps)
        self.max_num_iter = _plain(max_num_iter)
        self.grad = grad

    def _check_params(self, func):
        for name in ("weight", "eps"):
            setattr(self, name, check_number(func, name, getattr(self, name), 0, low_open=True))
        self.max_num_iter = check_int(func, "max_num_iter", self.max_num_iter, 1)

    def _purify(self, x):
        from skimage.restoration import denoise_tv_chambolle

        return _per_image(x, lambda img: denoise_tv_chambolle(
            img, weight=float(self.weight), eps=float(self.eps), max_num_iter=self.max_num_iter,
            channel_axis=-1))


class WaveletShrinkage(_Purifier):
    """Wavelet shrinkage, scikit-image's ``denoise_wavelet`` on each image (channels separately,
    ``channel_axis=-1``, no YCbCr conversion), in float64, clipped to [0, 1].

    Parameters
    ----------
    sigma : float > 0, default 0.05
        The noise standard deviation the thresholds are computed for (BayesShrink: per sub-band
        ``sigma² / σ_x``; VisuShrink: ``sigma · sqrt(2 log n)``).
    wavelet : str, default "db1"
        A PyWavelets name.
    mode : {"soft", "hard"}, default "soft"
    method : {"BayesShrink", "VisuShrink"}, default "BayesShrink"
    wavelet_levels : int or None, default None
        None: scikit-image's default (3 fewer than the maximum, at least 1).
    grad : {"bpda", "none"}, default "bpda"
    """

    _PARAMS = ("sigma", "wavelet", "mode", "method", "wavelet_levels", "grad")

    def __init__(self, sigma: float = 0.05, wavelet: str = "db1", mode: str = "soft",
                 method: str = "BayesShrink", wavelet_levels: int | None = None, grad: str = "bpda"):
        super().__init__()
        self.sigma = _plain(sigma)
        self.wavelet = wavelet
        self.mode = mode
        self.method = method
        self.wavelet_levels = _plain(wavelet_levels)
        self.grad = grad

    def _check_params(self, func):
        self.sigma = check_number(func, "sigma", self.sigma, 0, low_open=True)
        check_choice(func, "mode", self.mode, ("soft", "hard"))
        check_choice(func, "method", self.method, ("BayesShrink", "VisuShrink"))
        self.wavelet_levels = check_optional_int(func, "wavelet_levels", self.wavelet_levels, 1)
        try:
            import pywt
        except ImportError as exc:
            raise ImportError(f"{func}: needs PyWavelets (pip install PyWavelets).") from exc
        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"{func}: wavelet must be a discrete PyWavelets name (pywt.wavelist(kind='discrete')); "
                             f"got {self.wavelet!r}.")

    def _purify(self, x):
        from skimage.restoration import denoise_wavelet

        return _per_image(x, lambda img: denoise_wavelet(
            img, sigma=float(self.sigma), wavelet=self.wavelet, mode=self.mode,
            wavelet_levels=self.wavelet_levels, convert2ycbcr=False, method=self.method,
            rescale_sigma=True, channel_axis=-1))


#: ``ddl robustness --defence NAME:VALUE``: name → (class, the parameter VALUE sets, its type).
PURIFIERS = {
    "bits": (BitDepthReduction, "bits", int),
    "median": (MedianSmoothing, "size", int),
    "gauss": (GaussianBlur, "sigma", float),
    "jpeg": (JPEGCompression, "quality", int),
    "tv": (TotalVariation, "weight", float),
    "wavelet": (WaveletShrinkage, "sigma", float),
}
