"""ConvNet of Mitro et al. 2018, Table 3 (as reconstructed in DESIGN.md §4).

2× Conv(32, 3) · MaxPool 2 · Dropout 0.25 · 2× Conv(64, 3) · MaxPool 2 · Conv(128, 3) ·
Conv(256, 3) · Dropout 0.25 · Dense 512 · Dropout 0.5 · Dense 10, ReLU after every conv/dense.

Choices where the table is silent (documented here, as DESIGN.md asks):

- The first four convolutions use ``padding=1`` (size kept), the last two ``padding=0``:
  MNIST 28 → 14 → 7 → 5 → 3, CIFAR-10 32 → 16 → 8 → 6 → 4. The valid padding at the end keeps the
  Dense 512 layer small (2304 or 4096 inputs: 1.2 M or 2.1 M weights), so the checkpoint stays a few
  MB in float16 and a CPU epoch stays short, while the early layers keep the full resolution.
- No batch normalisation (none in the table).
- ``cam_layer = "act6"``: the ReLU after the last convolution (256 channels, 3×3 on MNIST, 4×4 on
  CIFAR-10); ``features(x)`` returns the same map. There is no global pooling, so use Grad-CAM.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ddl.models import check_input_shape, check_n_classes, normalisation_for


class ConvNet(nn.Module):
    """VGG-like convolutional classifier (six 3×3 convolutions, two max-pools, two dense layers).

    Parameters
    ----------
    input_shape : tuple (C, H, W), default (1, 28, 28)
        ``(1, 28, 28)`` or ``(3, 32, 32)``.
    n_classes : int, default 10

    Attributes
    ----------
    cam_layer : str
        Name of the sub-module whose output is the last convolutional feature map ("act6").
    """

    cam_layer = "act6"

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), n_classes: int = 10) -> None:
        super().__init__()
        shape = check_input_shape(input_shape, "ConvNet")
        check_n_classes(n_classes, "ConvNet")
        c, h, _ = shape
        self.normalize = normalisation_for(shape)
        self.conv1 = nn.Conv2d(c, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1)
        self.conv5 = nn.Conv2d(64, 128, 3)
        self.conv6 = nn.Conv2d(128, 256, 3)
        self.act6 = nn.ReLU()
        self.drop1 = nn.Dropout(0.25)
        self.drop2 = nn.Dropout(0.25)
        side = h // 4 - 4  # 3 for MNIST, 4 for CIFAR-10
        self.fc = nn.Linear(256 * side * side, 512)
        self.drop3 = nn.Dropout(0.5)
        self.head = nn.Linear(512, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map (after ReLU), shape (N, 256, s, s), s = 3 or 4."""
        x = self.normalize(x)  # (N, C, H, W)
        x = F.relu(self.conv1(x))  # (N, 32, H, W)
        x = F.relu(self.conv2(x))  # (N, 32, H, W)
        x = self.drop1(F.max_pool2d(x, 2))  # (N, 32, H/2, W/2)
        x = F.relu(self.conv3(x))  # (N, 64, H/2, W/2)
        x = F.relu(self.conv4(x))  # (N, 64, H/2, W/2)
        x = F.max_pool2d(x, 2)  # (N, 64, H/4, W/4)
        x = F.relu(self.conv5(x))  # (N, 128, H/4-2, W/4-2)
        return self.act6(self.conv6(x))  # (N, 256, s, s), s = H/4-4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop2(self.features(x))  # (N, 256, s, s)
        x = x.flatten(1)  # (N, 256*s*s)
        x = self.drop3(F.relu(self.fc(x)))  # (N, 512)
        return self.head(x)  # (N, n_classes) logits
