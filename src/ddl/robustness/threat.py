"""Threat models: how an attacker's gradient passes through a preprocessing defence.

A preprocessing defence ``f`` (a denoiser, a purifier, any ``nn.Module`` mapping images to
images) defends a classifier ``g`` as ``g(f(x))``. Whatever the attacker does, the *forward*
pass that decides whether an image is broken is always the real ``g(f(x))``; the threat model
only says what the attacker differentiates (Athalye, Carlini & Wagner 2018, §4):

``oblivious``
    The attacker does not know ``f``: attack ``g`` alone, then defend. The paper's protocol.
``bpda``
    Backward Pass Differentiable Approximation with the identity: forward ``g(f(x))``, backward
    ``∂g/∂x`` evaluated at ``f(x)`` (``f`` treated as the identity in the backward pass).
``exact``
    Autograd through ``f`` itself. For :class:`~ddl.defence.DictionaryDenoiser` this is the
    gradient with the OMP support held fixed (exact almost everywhere: the denoiser is piecewise
    linear), for any other module its own backward.
``soft``
    Forward the real ``f``; backward through a smooth *surrogate* of OMP's atom choice. With
    one atom per patch the fixed-support gradient cannot see that a small change of the input
    makes OMP pick another atom: it is blind to the discontinuities that decide the output. The
    surrogate replaces the hard choice by soft matching pursuit: for each patch ``p`` (centred
    if the denoiser removes means), at each of the ``k`` steps, correlations ``c = r Dᵀ`` of the
    residual ``r`` with the unit-norm atoms, weights ``w = softmax(β·|c|)``, update
    ``r ← r − (w ⊙ c) D``; the reconstruction is ``p − r`` (plus the mean), overlaps averaged
    as in the denoiser. As the inverse temperature ``β`` grows the weights tend to the one-hot
    arg max, so for ``k = 1`` the surrogate tends to the true OMP reconstruction (for ``k > 1``
    to matching pursuit, which shares OMP's first atom; OMP re-projects on its support). The
    output clip to [0, 1] is not applied in the surrogate (straight-through), so saturated
    pixels keep a gradient. Any defence can offer its own surrogate by defining
    ``soft_surrogate(x, beta) -> Tensor``.

For a randomised defence, ``eot_samples > 1`` averages the logits of that many draws in each
forward pass that needs a gradient (Expectation over Transformation, Athalye et al. 2018 §4.3):
the gradient of the mean is the mean of the gradients.

The threat model is chosen per call (:func:`defended`); no shared object is mutated: the
denoiser's own ``grad`` attribute is never touched (a shallow copy carries another value).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ddl._validate import check_choice, check_int, check_int_pair, check_number
from ddl.sparse.omp import straight_through

__all__ = ["THREATS", "DefendedModel", "defended", "soft_surrogate"]

THREATS = ("oblivious", "bpda", "exact", "soft")


def _with_grad(defence: nn.Module, grad: str) -> nn.Module:
    """``defence`` with its ``grad`` mode set to ``grad``, without mutating it (shallow copy).

    Modules without a ``grad`` parameter are returned as they are."""
    if getattr(defence, "grad", None) in (None, grad) or not hasattr(defence, "get_params"):
        return defence
    twin = copy.copy(defence)                     # shares dictionary_ and buffers, not attributes
    object.__setattr__(twin, "grad", grad)
    return twin


def soft_surrogate(denoiser: nn.Module, x: Tensor, beta: float) -> Tensor:
    """Soft-matching-pursuit surrogate of a fitted ``DictionaryDenoiser`` (see module docstring).

    Parameters
    ----------
    denoiser : DictionaryDenoiser, fitted
    x : Tensor of shape (N, C, H, W), floating point
    beta : float > 0
        Inverse temperature of the softmax over ``|correlation|``.

    Returns
    -------
    Tensor of shape (N, C, H, W), differentiable in ``x``; not clipped.
    """
    from ddl.sparse.patches import extract_patches, reconstruct_from_patches

    func = "soft_surrogate"
    if getattr(denoiser, "dictionary_", None) is None:
        raise ValueError(f"{func}: denoiser must be a fitted DictionaryDenoiser; got "
                         f"{type(denoiser).__name__} without dictionary_.")
    check_number(func, "beta", beta, 0, low_open=True)
    patch = check_int_pair(func, "patch_size", denoiser.patch_size)
    step = check_int_pair(func, "step", denoiser.step)
    D = denoiser.dictionary_.to(x.dtype)                               # (K, F), unit-norm rows
    P = extract_patches(x, patch, step=step)                           # (N*L, F)
    if denoiser.remove_mean:
        means = P.mean(dim=1, keepdim=True)
        P = P - means
    residual = P
    for _ in range(int(denoiser.n_nonzero_coefs)):
        c = residual @ D.T                                             # (N*L, K)
        w = torch.softmax(beta * c.abs(), dim=1)
        residual = residual - (w * c) @ D
    R = P - residual
    if denoiser.remove_mean:
        R = R + means
    return reconstruct_from_patches(R, x.shape, patch, step=step)     # (N, C, H, W)


class DefendedModel(nn.Module):
    """``model(defence(x))`` whose backward follows a threat model (see the module docstring).

    Parameters
    ----------
    model : nn.Module in eval mode, (N, C, H, W) → logits (N, K)
    defence : nn.Module or None
        Image → image. ``None``: the bare model (every threat is then the bare gradient).
    threat : one of ``THREATS``
        ``"oblivious"`` makes the *forward* the bare model too: it is what the attacker sees.
        Evaluate the attack's output with ``threat="bpda"`` (or any other) to defend it.
    beta : float > 0, default 10
        Inverse temperature of the ``soft`` surrogate.
    eot_samples : int >= 1, default 1
        Draws of a randomised defence averaged (as logits) when a gradient is needed.
    """

    def __init__(self, model: nn.Module, defence: nn.Module | None, threat: str, *,
                 beta: float = 10.0, eot_samples: int = 1):
        super().__init__()
        check_choice("DefendedModel", "threat", threat, THREATS)
        eot_samples = check_int("DefendedModel", "eot_samples", eot_samples, 1)
        beta = check_number("DefendedModel", "beta", beta, 0, low_open=True)
        if threat == "soft" and defence is not None and not (
                hasattr(defence, "soft_surrogate") or hasattr(defence, "dictionary_")):
            raise ValueError(
                f"DefendedModel: threat='soft' needs a DictionaryDenoiser or a defence with a "
                f"soft_surrogate(x, beta) method; got {type(defence).__name__}. Use 'bpda' or "
                f"'exact' for other defences.")
        self.model = model
        self.defence = defence
        self.threat = threat
        self.beta = beta
        self.eot_samples = eot_samples
        # kept in a tuple so that they are not registered as submodules (no duplicate state)
        self._twins = (None, None) if defence is None else (_with_grad(defence, "none"),
                                                            _with_grad(defence, "exact"))

    def _purify(self, x: Tensor) -> Tensor:
        """The real defence output; differentiable according to the threat model."""
        needs_grad = torch.is_grad_enabled() and x.requires_grad
        if not needs_grad:
            with torch.no_grad():
                return self._twins[0](x)
        if self.threat == "exact":
            return self._twins[1](x)
        with torch.no_grad():
            value = self._twins[0](x)
        if self.threat == "bpda":
            return straight_through(x, value)
        # soft: the forward is the real defence bit for bit (value + exactly 0), the backward is
        # the surrogate's
        if hasattr(self.defence, "soft_surrogate"):
            s = self.defence.soft_surrogate(x, self.beta)
        else:
            s = soft_surrogate(self.defence, x, self.beta)
        return value + (s - s.detach())

    def forward(self, x: Tensor) -> Tensor:                            # (N, C, H, W) → (N, K)
        if self.defence is None or self.threat == "oblivious":
            return self.model(x)
        if self.eot_samples == 1 or not (torch.is_grad_enabled() and x.requires_grad):
            return self.model(self._purify(x))
        return torch.stack([self.model(self._purify(x))
                            for _ in range(self.eot_samples)]).mean(0)


def defended(model: nn.Module, defence: nn.Module | None, threat: str = "bpda", **kwargs) -> DefendedModel:
    """A :class:`DefendedModel` in eval mode (the model's and the defence's modes are kept)."""
    wrapper = DefendedModel(model, defence, threat, **kwargs)
    wrapper.training = False                      # not .eval(): that would recurse into both
    return wrapper
