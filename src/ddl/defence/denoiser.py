"""The dictionary-learning denoiser of Mitro, Bridge & Prestwich (2018) as a ``torch.nn.Module``.

What it does: cut each image into overlapping patches, remove each patch's mean, approximate the
patch by OMP with ``n_nonzero_coefs`` atoms of a dictionary learned on clean training patches,
add the mean back, put the patches back averaging the overlaps, and clip to [0, 1] (the paper's
Section "Denoising"; the same pipeline as Elad & Aharon 2006 without their λ-weighted average
with the noisy image). Because it is an ``nn.Module``, ``nn.Sequential(denoiser, model)`` is a
defended classifier.

What it does NOT prove. The paper's attacks are computed on the undefended model and then
denoised: they are *oblivious* (non-adaptive) and say nothing about an attacker who knows the
defence. An adaptive attacker differentiates through the denoiser: ``grad="exact"`` gives the
true gradient almost everywhere (OMP with its support held fixed is a linear projection, and
patch averaging is linear, so the denoiser is piecewise linear), ``grad="bpda"`` the
straight-through approximation of Athalye, Carlini & Wagner (2018). A defence evaluated only
obliviously should be reported as such (Carlini et al. 2019, "On Evaluating Adversarial
Robustness"); run the adaptive attacks as a separate experiment. A gradient that comes out as
all zeros usually means the graph was cut (``grad="none"``), not robustness:
:func:`ddl.defence.checks.warn_if_zero_gradients` checks for that.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddl._progress import bar
from ddl._validate import (check_bool, check_choice, check_images, check_int, check_int_pair,
                           check_optional_number, is_int)
from ddl.constants import MAX_PATCHES
from ddl.sparse import native_driver
from ddl.sparse.kernel import native_library
from ddl.sparse.omp import DEPENDENT_MSG, GRADS, omp_reconstruct, straight_through
from ddl.sparse.patches import (
    _check_geometry,
    center_patches,
    extract_patches,
    reconstruct_from_patches,
)

__all__ = ["DictionaryDenoiser", "NotFittedError"]

_PATCHES_PER_CHUNK = 1 << 17     # transform: ~1.3e5 patches at a time (25 MB for 7x7)
_FLAT = 1e-6                     # fit: patches with ‖p − mean‖² <= this carry no structure


def _centered_patches(x: Tensor, patch, step) -> tuple[Tensor, Tensor]:
    """``center_patches(extract_patches(x, patch, step=step))`` in one pass over the patches.

    The patch means come from ``avg_pool2d`` on the images (mean over C of the p x p window
    means, the same number up to rounding) and are subtracted from the strided patch view
    straight into the row layout, instead of copying the patches, reading them again for the
    means and writing them a third time (2.6x faster on MNIST, 1.3x on CIFAR-10 sizes).
    """
    N, C = x.shape[:2]
    means = F.avg_pool2d(x, patch, step).mean(1)                   # (N, n_h, n_w)
    windows = x.unfold(2, patch[0], step[0]).unfold(3, patch[1], step[1])
    windows = windows.permute(0, 2, 3, 1, 4, 5)                    # (N, n_h, n_w, C, ph, pw)
    if torch.is_grad_enabled() and x.requires_grad:                # out= is not differentiable
        centered = (windows - means[..., None, None, None]).reshape(-1, C * patch[0] * patch[1])
    else:
        centered = torch.empty(windows.shape, dtype=x.dtype, device=x.device)
        torch.sub(windows, means[..., None, None, None], out=centered)
    return centered.view(-1, C * patch[0] * patch[1]), means.reshape(-1, 1)


def _check_finite(where: str, name: str, x: Tensor) -> None:
    """Refuse NaN and infinite pixels, whichever OMP kernel runs (the torch kernel raised on them
    and the C kernel returned NaN pixels): ``DictionaryDenoiser.transform: x must be a
    floating-point tensor of shape (N, C, H, W) with finite values; got float32 tensor of shape
    (1, 1, 8, 8) with 1 NaN value in 1 of 1 images.``"""
    bad = ~torch.isfinite(x.detach())
    if bool(bad.any()):
        from ddl._validate import describe

        n_nan = int(torch.isnan(x.detach()).sum())
        what = " and ".join(f"{n} {kind} value{'s' if n > 1 else ''}"
                            for n, kind in ((n_nan, "NaN"), (int(bad.sum()) - n_nan, "infinite")) if n)
        n_images = int(bad.flatten(1).any(1).sum())
        raise ValueError(f"{where}: {name} must be a floating-point tensor of shape (N, C, H, W) with finite "
                         f"values; got {describe(x)} with {what} in {n_images} of {len(x)} images.")


class NotFittedError(ValueError, AttributeError):
    """Raised when a DictionaryDenoiser is used before ``fit`` (scikit-learn's convention)."""


class DictionaryDenoiser(nn.Module):
    """Patch-dictionary denoiser: OMP reconstruction of overlapping patches, overlaps averaged.

    Parameters are stored unchanged (scikit-learn style) and validated in ``fit``,
    ``transform`` and ``save``, so they may be changed between calls (e.g. ``n_nonzero_coefs``);
    validation stores NumPy numbers as the Python ints and floats they hold.

    Parameters
    ----------
    patch_size : int or (int, int), default 7
    n_components : int, default 256
        Dictionary size (atoms).
    n_nonzero_coefs : int in [1, n_components], default 5
        OMP atoms per patch; the paper's "38 atoms for MNIST and 2 for CIFAR-10" read this way.
    tol : float >= 0 or None, default None
        Also stop a patch once its squared residual is <= tol (see :func:`ddl.sparse.omp`).
    step : int or (int, int), default 1
        Stride between patches; must tile the image exactly (else an error says what fits).
    remove_mean : bool, default True
        Code each patch without its mean (DC) and add it back afterwards.
    method, n_epochs, batch_size
        Passed to :func:`ddl.sparse.learn_dictionary` (``"online"``, ``"ksvd"``, ``"mod"``...).
    max_patches : int, default ddl.constants.MAX_PATCHES (200,000)
        ``fit`` draws this many patch positions uniformly with replacement (seeded by
        ``random_state``) when the images have more patches, and uses all of them otherwise.
        Flat patches (``‖p − mean‖² <= 1e-6``, e.g. MNIST background) are then discarded, as
        they carry nothing to learn; ``n_training_patches_`` says how many were used.
    grad : {"exact", "bpda", "none"}, default "exact"
        Backward pass of ``forward``/``transform``: exact (support held fixed), identity (BPDA),
        or no graph at all.
    random_state : int, default 0
    device : str or torch.device, default "cpu"
        Where ``fit`` learns; the dictionary is stored there. ``transform`` runs on the
        dictionary's device (move the module with ``.to``); inputs must be on it.
    clip : bool, default True
        Clip the output to [0, 1] — the only clipping the denoiser does.

    Attributes
    ----------
    dictionary_ : Tensor of shape (n_components, C * ph * pw)
        Unit-norm atoms as rows, channel-major like ``extract_patches`` (a buffer: follows
        ``.to(device)`` and ``state_dict``).
    n_channels_ : int
    n_training_patches_ : int

    Examples
    --------
    >>> import torch
    >>> from ddl.defence import DictionaryDenoiser
    >>> x = torch.rand(20, 1, 12, 12)
    >>> den = DictionaryDenoiser(patch_size=4, n_components=32, n_nonzero_coefs=3).fit(x)
    >>> den.dictionary_.shape
    torch.Size([32, 16])
    >>> den(x).shape
    torch.Size([20, 1, 12, 12])
    """

    def __init__(self, patch_size=7, n_components: int = 256, n_nonzero_coefs: int = 5,
                 tol: float | None = None, step=1, remove_mean: bool = True,
                 method: str = "online", n_epochs: int = 1, batch_size: int = 256,
                 max_patches: int = MAX_PATCHES, grad: str = "exact", random_state: int = 0,
                 device="cpu", clip: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.n_components = n_components
        self.n_nonzero_coefs = n_nonzero_coefs
        self.tol = tol
        self.step = step
        self.remove_mean = remove_mean
        self.method = method
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.max_patches = max_patches
        self.grad = grad
        self.random_state = random_state
        self.device = device
        self.clip = clip
        self.register_buffer("dictionary_", None)
        self.n_channels_: int | None = None
        self.n_training_patches_: int | None = None

    _PARAMS = ("patch_size", "n_components", "n_nonzero_coefs", "tol", "step", "remove_mean",
               "method", "n_epochs", "batch_size", "max_patches", "grad", "random_state",
               "device", "clip")

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as stored."""
        return {name: getattr(self, name) for name in self._PARAMS}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())

    # ------------------------------------------------------------------ validation
    def _check_params(self, func: str) -> tuple[tuple[int, int], tuple[int, int]]:
        """Validate the parameters and store them as the checks return them (a NumPy integer as
        an int, a NumPy float as a float), so that ``save`` writes plain numbers that
        ``load`` (weights-only) reads and Pillow, JSON and the native code accept. Returns the
        patch size and the step as pairs."""
        pairs = []
        for name in ("patch_size", "step"):
            value = getattr(self, name)
            pairs.append(check_int_pair(func, name, value))
            setattr(self, name, pairs[-1][0] if is_int(value) else type(value)(pairs[-1]))  # keep 7, (7, 7), [7, 7]
        self.n_components = check_int(func, "n_components", self.n_components, 1)
        self.n_nonzero_coefs = check_int(func, "n_nonzero_coefs", self.n_nonzero_coefs, 1)
        check_int(func, "n_nonzero_coefs", self.n_nonzero_coefs, 1, self.n_components, high_name="n_components")
        self.tol = check_optional_number(func, "tol (squared residual norm per patch)", self.tol, 0)
        check_choice(func, "grad", self.grad, GRADS)
        for name in ("remove_mean", "clip"):
            check_bool(func, name, getattr(self, name))
        for name in ("n_epochs", "batch_size", "max_patches"):
            setattr(self, name, check_int(func, name, getattr(self, name), 1))
        if is_int(self.random_state):
            self.random_state = int(self.random_state)
        return pairs[0], pairs[1]

    # ------------------------------------------------------------------ fit
    def fit(self, x_clean: Tensor, y=None, *, progress: bool = False) -> DictionaryDenoiser:
        """Learn ``dictionary_`` from (centered) patches of clean images.

        Parameters
        ----------
        x_clean : Tensor of shape (N, C, H, W), float in [0, 1]
        y : ignored
        progress : bool, default False
            A tqdm bar over the dictionary-learning steps (on a terminal).

        Returns
        -------
        self
        """
        from ddl.sparse import learn_dictionary

        func = "DictionaryDenoiser.fit"
        patch, step = self._check_params(func)
        check_images(func, "x_clean", x_clean, value_range=None)
        _check_finite(func, "x_clean", x_clean)
        _check_geometry(func, tuple(x_clean.shape[2:]), patch, step)
        X = self._training_patches(x_clean.detach(), patch, step)
        if X.shape[0] == 0:
            raise ValueError(
                f"{func}: every sampled patch is flat (‖p − mean‖² <= {_FLAT}); nothing to learn "
                f"from x_clean of shape {tuple(x_clean.shape)}."
            )
        dictionary = learn_dictionary(
            X, self.n_components, method=self.method, n_nonzero_coefs=self.n_nonzero_coefs,
            n_epochs=self.n_epochs, batch_size=self.batch_size, random_state=self.random_state,
            device=self.device, progress=progress)
        self.dictionary_ = dictionary.to(device=self.device, dtype=x_clean.dtype)
        self.n_channels_ = int(x_clean.shape[1])
        self.n_training_patches_ = int(X.shape[0])
        return self

    def _training_patches(self, x: Tensor, patch, step) -> Tensor:
        """Sampled (or all) patches, centered if remove_mean, flat ones dropped; (n, C*ph*pw)."""
        N, C, H, W = x.shape
        n_h, n_w = (H - patch[0]) // step[0] + 1, (W - patch[1]) // step[1] + 1
        total = N * n_h * n_w
        if total <= self.max_patches:
            P = extract_patches(x, patch, step=step)
        else:
            gen = torch.Generator().manual_seed(self.random_state)
            idx = torch.randint(total, (self.max_patches,), generator=gen).to(x.device)
            img, pos = idx // (n_h * n_w), idx % (n_h * n_w)
            top, left = (pos // n_w) * step[0], (pos % n_w) * step[1]
            di = torch.arange(patch[0], device=x.device)
            dj = torch.arange(patch[1], device=x.device)
            rows = (top[:, None] + di)[:, None, :, None]                # (M, 1, ph, 1)
            cols = (left[:, None] + dj)[:, None, None, :]               # (M, 1, 1, pw)
            chans = torch.arange(C, device=x.device)[None, :, None, None]
            P = x[img[:, None, None, None], chans, rows, cols].reshape(len(idx), -1)
        if self.remove_mean:
            P, _ = center_patches(P)
        return P[(P * P).sum(1) > _FLAT]

    # ------------------------------------------------------------------ transform
    @classmethod
    def from_dictionary(cls, dictionary: Tensor, **params) -> DictionaryDenoiser:
        """A fitted denoiser around a given dictionary (rows = atoms, channel-major patches).

        ``params`` are constructor parameters; ``n_components`` is taken from the dictionary
        and the channel count from ``dictionary.shape[1] / (ph * pw)``.
        """
        func = "DictionaryDenoiser.from_dictionary"
        if not isinstance(dictionary, Tensor) or not dictionary.is_floating_point() \
                or dictionary.dim() != 2:
            got = (f"{dictionary.dtype} tensor of shape {tuple(dictionary.shape)}"
                   if isinstance(dictionary, Tensor) else type(dictionary).__name__)
            raise ValueError(
                f"{func}: dictionary must be a 2-D floating-point tensor (n_components, "
                f"C*ph*pw); got {got}."
            )
        if "n_components" in params and params["n_components"] != dictionary.shape[0]:
            raise ValueError(
                f"{func}: n_components={params['n_components']!r} does not match the "
                f"dictionary's {dictionary.shape[0]} rows."
            )
        params["n_components"] = int(dictionary.shape[0])
        den = cls(**params)
        (ph, pw), _ = den._check_params(func)
        if dictionary.shape[1] % (ph * pw):
            raise ValueError(
                f"{func}: dictionary rows have {dictionary.shape[1]} features, not a multiple "
                f"of patch_size {ph}x{pw} = {ph * pw}."
            )
        den.dictionary_ = dictionary.detach().clone().to(den.device)
        den.n_channels_ = dictionary.shape[1] // (ph * pw)
        return den

    def _check_fitted(self, func: str) -> None:
        if self.dictionary_ is None:
            raise NotFittedError(
                f"DictionaryDenoiser is not fitted yet; call fit(x_clean) before {func}()."
            )

    def transform(self, x: Tensor, *, progress: bool = False) -> Tensor:
        """Denoise a batch of images.

        Parameters
        ----------
        x : Tensor of shape (N, C, H, W), floating point, on the dictionary's device
        progress : bool, default False
            A tqdm bar over the images (on a terminal; for a whole data set).

        Returns
        -------
        x_den : Tensor of shape (N, C, H, W), dtype of x, in [0, 1] if ``clip``
            Differentiable according to ``grad``.
        """
        func = "DictionaryDenoiser.transform"
        self._check_fitted("transform")
        patch, step = self._check_params(func)
        check_images(func, "x", x, value_range=None)  # no range test: it would cost a pass per call
        _check_finite(func, "x", x)  # one pass, but a NaN must never reach an OMP kernel (any kernel)
        if x.shape[1] != self.n_channels_:
            raise ValueError(
                f"{func}: x has {x.shape[1]} channels but the dictionary was fitted on "
                f"{self.n_channels_}-channel images."
            )
        if x.device != self.dictionary_.device:
            raise ValueError(
                f"{func}: x is on {x.device} but the dictionary on {self.dictionary_.device}; "
                f"move one (denoiser.to(device) or x.to(device))."
            )
        n_h, n_w = _check_geometry(func, tuple(x.shape[2:]), patch, step)
        if patch[0] * patch[1] * x.shape[1] != self.dictionary_.shape[1]:
            raise ValueError(
                f"{func}: patch_size={patch} with {x.shape[1]} channels gives "
                f"{patch[0] * patch[1] * x.shape[1]} features but the dictionary has "
                f"{self.dictionary_.shape[1]}; set patch_size to the one used in fit."
            )
        dictionary = self.dictionary_.to(x.dtype)
        per_chunk = max(1, _PATCHES_PER_CHUNK // (n_h * n_w))
        if self.grad in ("none", "bpda"):
            parts = []
            with torch.no_grad(), bar(len(x), "denoise", progress) as b:
                for i in range(0, len(x), per_chunk):
                    parts.append(self._denoise(x[i:i + per_chunk].detach(), dictionary, patch, step, "none"))
                    b.update(len(parts[-1]))
            out = torch.cat(parts)
            # BPDA: forward is the denoiser, backward is the identity (Athalye et al. 2018)
            if self.grad == "bpda" and torch.is_grad_enabled() and x.requires_grad:
                return straight_through(x, out)
            return out
        parts = []
        with bar(len(x), "denoise", progress) as b:
            for i in range(0, len(x), per_chunk):
                parts.append(self._denoise(x[i:i + per_chunk], dictionary, patch, step, self.grad))
                b.update(len(parts[-1]))
        return torch.cat(parts)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`transform` (so the module composes with ``nn.Sequential``)."""
        return self.transform(x)                                   # (N, C, H, W) -> same

    def _denoise(self, x: Tensor, dictionary: Tensor, patch, step, grad: str) -> Tensor:
        lib = native_library(x.device)
        if lib is not None and (grad == "none" or not (torch.is_grad_enabled()
                                                       and (x.requires_grad
                                                            or dictionary.requires_grad))):
            # CPU, no graph: the fused C pipeline (cut + centre, code, add back), same numbers
            out, n_dependent = native_driver.denoise(lib, x.detach(), dictionary.detach(), patch, step,
                                               self.n_nonzero_coefs, self.tol, self.remove_mean)
            if n_dependent:
                warnings.warn(DEPENDENT_MSG.format(n=n_dependent), RuntimeWarning, stacklevel=3)
            return out.clamp_(0.0, 1.0) if self.clip else out
        if lib is not None and grad == "exact" and not dictionary.requires_grad:
            # CPU, gradient to x only: the same C pipeline, backward with supports held fixed
            out, n_dependent = native_driver.denoise_exact(lib, x, dictionary, patch, step,
                                                     self.n_nonzero_coefs, self.tol,
                                                     self.remove_mean, self.clip)
            if n_dependent:
                warnings.warn(DEPENDENT_MSG.format(n=n_dependent), RuntimeWarning, stacklevel=3)
            return out
        if self.remove_mean:
            P, means = _centered_patches(x, patch, step)           # (N*L, F), (N*L, 1)
        else:
            P = extract_patches(x, patch, step=step)               # (N*L, C*ph*pw)
        R = omp_reconstruct(P, dictionary, n_nonzero_coefs=self.n_nonzero_coefs, tol=self.tol,
                            grad=grad)                             # (N*L, F)
        in_place = not R.requires_grad                             # no graph: reuse buffers
        if self.remove_mean:
            R = R.add_(means) if in_place else R + means
        out = reconstruct_from_patches(R, x.shape, patch, step=step)  # (N, C, H, W)
        if self.clip:
            out = out.clamp_(0.0, 1.0) if in_place else out.clamp(0.0, 1.0)
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write params, dictionary and ddl version atomically (a plain dict, torch.save)."""
        from ddl import __version__
        from ddl._io import atomic_torch_save

        self._check_fitted("save")
        self._check_params("DictionaryDenoiser.save")  # plain numbers only: load reads weights-only
        params = self.get_params()
        params["device"] = str(params["device"])
        atomic_torch_save(path, {
            "format": "ddl.DictionaryDenoiser",
            "ddl_version": __version__,
            "params": params,
            "dictionary": self.dictionary_.detach().cpu(),
            "n_channels": self.n_channels_,
            "n_training_patches": self.n_training_patches_,
        })

    @classmethod
    def load(cls, path: str | os.PathLike, *, device=None) -> DictionaryDenoiser:
        """Read a file written by :meth:`save` (``torch.load(weights_only=True)``).

        ``device`` overrides the saved ``device`` parameter (default: the saved one).
        """
        from ddl._io import safe_torch_load

        blob = safe_torch_load(path)
        if not isinstance(blob, dict) or blob.get("format") != "ddl.DictionaryDenoiser":
            raise ValueError(f"DictionaryDenoiser.load: {path} is not a file written by "
                             f"DictionaryDenoiser.save.")
        params = dict(blob["params"])
        if device is not None:
            params["device"] = device
        den = cls.from_dictionary(blob["dictionary"], **params)
        if den.n_channels_ != blob["n_channels"]:
            raise ValueError(f"DictionaryDenoiser.load: {path} is inconsistent (channels).")
        den.n_training_patches_ = blob["n_training_patches"]
        return den
