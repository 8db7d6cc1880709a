"""The five classifiers of Mitro et al. 2018 (Table 3, as reconstructed in DESIGN.md §4).

Every model takes float32 images ``(N, C, H, W)`` in ``[0, 1]`` and returns logits ``(N,
n_classes)``; softmax lives in the metrics, never in a model. Normalisation (per-channel mean and
standard deviation, a fixed buffer) is each model's **first layer**, so attacks, the denoiser and
the metrics all work in pixel space.

Two input shapes are supported: ``(1, 28, 28)`` (MNIST statistics 0.1307 / 0.3081) and
``(3, 32, 32)`` (CIFAR-10 training-set statistics, see ``/work/shared/data/README.md``:
mean 0.4914, 0.4822, 0.4465, std 0.2470, 0.2435, 0.2616).

``MODELS`` is a plain dict, name → constructor ``(input_shape, n_classes=10) -> nn.Module``;
``build_model`` validates the arguments and calls it. ``Normalize`` and ``check_input_shape``
are defined here, before the model modules are imported, because every model uses them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ddl._validate import check_choice, check_int, is_int

#: Per-channel (mean, std) of the training set of each supported input shape.
INPUT_STATS: dict[tuple[int, int, int], tuple[tuple[float, ...], tuple[float, ...]]] = {
    (1, 28, 28): ((0.1307,), (0.3081,)),
    (3, 32, 32): ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class Normalize(nn.Module):
    """Fixed per-channel standardisation ``(x - mean) / std``, the first layer of every model.

    The statistics are non-persistent buffers: they come from the constructor (i.e. from the
    input shape), so they follow ``.to(device)`` but are not part of the state dict (and are
    never rounded when a checkpoint is stored in float16).

    Parameters
    ----------
    mean, std : sequence of float, length C
        Per-channel statistics; every ``std`` must be > 0.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(
                f"Normalize: mean and std must have the same length and std > 0; "
                f"got mean={tuple(mean)}, std={tuple(std)}."
            )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std  # (N, C, H, W)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def check_input_shape(input_shape: Sequence[int], who: str) -> tuple[int, int, int]:
    """Return ``input_shape`` as a tuple after checking it is one of ``INPUT_STATS``' keys.

    Raises
    ------
    ValueError
        Naming ``who`` (the caller), the rule and the value received.
    """
    shape = None
    if isinstance(input_shape, (tuple, list, torch.Size)) and all(is_int(s) for s in input_shape):
        shape = tuple(input_shape)
    if shape not in INPUT_STATS:
        supported = ", ".join(str(s) for s in INPUT_STATS)
        raise ValueError(
            f"{who}: input_shape must be one of {supported} (C, H, W); got {input_shape!r}."
        )
    return shape  # type: ignore[return-value]


def check_n_classes(n_classes: int, who: str) -> int:
    """Check that ``n_classes`` is an int >= 2."""
    return check_int(who, "n_classes", n_classes, 2)


def normalisation_for(input_shape: tuple[int, int, int]) -> Normalize:
    """The ``Normalize`` layer with the training-set statistics of ``input_shape``."""
    mean, std = INPUT_STATS[input_shape]
    return Normalize(mean, std)


# The model modules import the helpers above, so they are imported after them.
from ddl.models.autoencoder import AutoEncoder  # noqa: E402
from ddl.models.convnet import ConvNet  # noqa: E402
from ddl.models.hrnn import HRNN  # noqa: E402
from ddl.models.mlp import MLP  # noqa: E402
from ddl.models.resnet import ResNet  # noqa: E402

#: name → constructor ``(input_shape, n_classes=10) -> nn.Module``.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "convnet": ConvNet,
    "autoencoder": AutoEncoder,
    "resnet": ResNet,
    "hrnn": HRNN,
}


def build_model(name: str, input_shape: Sequence[int], n_classes: int = 10) -> nn.Module:
    """Build one of the five models by name.

    Parameters
    ----------
    name : str
        One of ``MODELS``: "autoencoder", "convnet", "hrnn", "mlp", "resnet".
    input_shape : tuple of int (C, H, W)
        ``(1, 28, 28)`` or ``(3, 32, 32)``.
    n_classes : int, default 10
        Number of output logits (>= 2).

    Returns
    -------
    nn.Module
        Fresh model in training mode (as every new ``nn.Module``), float32, on the CPU; it maps
        ``(N, C, H, W)`` float32 in ``[0, 1]`` to logits ``(N, n_classes)``.

    Examples
    --------
    >>> model = build_model("mlp", (1, 28, 28))
    >>> model.eval()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    check_choice("build_model", "name", name, sorted(MODELS))
    shape = check_input_shape(input_shape, f"build_model({name!r})")
    check_n_classes(n_classes, f"build_model({name!r})")
    return MODELS[name](shape, n_classes=n_classes)


__all__ = [
    "INPUT_STATS",
    "MODELS",
    "AutoEncoder",
    "ConvNet",
    "HRNN",
    "MLP",
    "Normalize",
    "ResNet",
    "build_model",
]
