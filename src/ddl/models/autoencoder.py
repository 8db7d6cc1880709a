"""Encoder–decoder ("AutoEncoder") classifier of Mitro et al. 2018, Table 3 (DESIGN.md §4).

Conv(16,3) · MaxPool 2 · Conv(32,3) · MaxPool 2 · Conv(32,3) · MaxPool 2 · Conv(64,3) · Conv(128,3) ·
UpSample 2 · Conv(32,3) · UpSample 2 · Conv(3,3) · Conv(1,5) · Dense 10.

It is a classifier shaped like a convolutional auto-encoder (no reconstruction loss is trained;
the paper trains all five models with cross-entropy only). Choices where the table is silent:

- Every convolution uses "same" padding (3×3: padding 1; the final 5×5: padding 2) and is
  followed by ReLU, except the final Conv(1, 5), which stays linear: its single-channel map is what
  the Dense layer reads, and a ReLU there would zero out part of a 256-value bottleneck.
- Max-pools use ``ceil_mode=True``, so MNIST goes 28 → 14 → 7 → 4 and CIFAR-10 32 → 16 → 8 → 4;
  the two nearest-neighbour ×2 upsamplings then give a 16×16 map for both data sets, and the
  Dense layer has 256 inputs.
- Upsampling is nearest-neighbour (Keras ``UpSampling2D`` default).
- ``cam_layer = "conv_out"``: the last convolution (1 channel, 16×16); ``features(x)`` returns its
  output, which the Dense layer reads directly (no global pooling, so use Grad-CAM).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ddl.models import check_input_shape, check_n_classes, normalisation_for


class AutoEncoder(nn.Module):
    """Convolutional encoder–decoder with a dense classification head.

    Parameters
    ----------
    input_shape : tuple (C, H, W), default (1, 28, 28)
        ``(1, 28, 28)`` or ``(3, 32, 32)``.
    n_classes : int, default 10

    Attributes
    ----------
    cam_layer : str
        Name of the sub-module whose output is the last convolutional feature map ("conv_out").
    """

    cam_layer = "conv_out"

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), n_classes: int = 10) -> None:
        super().__init__()
        shape = check_input_shape(input_shape, "AutoEncoder")
        check_n_classes(n_classes, "AutoEncoder")
        c = shape[0]
        self.normalize = normalisation_for(shape)
        self.enc1 = nn.Conv2d(c, 16, 3, padding=1)
        self.enc2 = nn.Conv2d(16, 32, 3, padding=1)
        self.enc3 = nn.Conv2d(32, 32, 3, padding=1)
        self.mid1 = nn.Conv2d(32, 64, 3, padding=1)
        self.mid2 = nn.Conv2d(64, 128, 3, padding=1)
        self.dec1 = nn.Conv2d(128, 32, 3, padding=1)
        self.dec2 = nn.Conv2d(32, 3, 3, padding=1)
        self.conv_out = nn.Conv2d(3, 1, 5, padding=2)
        self.head = nn.Linear(16 * 16, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map, shape (N, 1, 16, 16) (linear, no ReLU)."""
        x = self.normalize(x)  # (N, C, H, W)
        x = F.max_pool2d(F.relu(self.enc1(x)), 2, ceil_mode=True)  # (N, 16, 14|16, 14|16)
        x = F.max_pool2d(F.relu(self.enc2(x)), 2, ceil_mode=True)  # (N, 32, 7|8, 7|8)
        x = F.max_pool2d(F.relu(self.enc3(x)), 2, ceil_mode=True)  # (N, 32, 4, 4)
        x = F.relu(self.mid1(x))  # (N, 64, 4, 4)
        x = F.relu(self.mid2(x))  # (N, 128, 4, 4)
        x = F.interpolate(x, scale_factor=2, mode="nearest")  # (N, 128, 8, 8)
        x = F.relu(self.dec1(x))  # (N, 32, 8, 8)
        x = F.interpolate(x, scale_factor=2, mode="nearest")  # (N, 32, 16, 16)
        x = F.relu(self.dec2(x))  # (N, 3, 16, 16)
        return self.conv_out(x)  # (N, 1, 16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)  # (N, 256)
        return self.head(x)  # (N, n_classes) logits
