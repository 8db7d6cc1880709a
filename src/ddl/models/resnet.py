"""Small pre-activation ResNet of Mitro et al. 2018, Table 3 (DESIGN.md §4).

Conv · BatchNorm · ReLU · basic block · 3× residual block · Dropout 0.25 · BatchNorm · ReLU ·
GlobalAveragePooling · Dense 10.

The closing "BatchNorm · ReLU · pooling" is the pre-activation ResNet layout (He et al. 2016,
"Identity Mappings in Deep Residual Networks", Fig. 4(e)), so every block here is a pre-activation
block: ``x + conv(relu(bn(conv(relu(bn(x))))))``. Choices where the table is silent:

- Widths (default): stem 16 channels; the basic block keeps 16 at full resolution; the three
  residual blocks double the width and halve the resolution (32, 64, 128; stride 2, with a 1×1
  strided projection on the shortcut). MNIST: 28 → 14 → 7 → 4; CIFAR-10: 32 → 16 → 8 → 4.
  About 0.3 M weights: small enough to train at a useful speed on 2 CPU cores.
- 3×3 kernels everywhere, "same" padding, no bias before batch norm.
- ``cam_layer = "final_act"``: the ReLU after the last BatchNorm; ``features(x)`` returns that
  map (N, 128, 4, 4). Global average pooling + Dense on it is exactly the CAM setting of Zhou et
  al. 2016 (eq. 2): CAM_c = Σ_k w_ck A_k.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ddl.models import check_input_shape, check_n_classes, normalisation_for


class _PreActBlock(nn.Module):
    """Pre-activation residual block: BN · ReLU · Conv3×3(stride) · BN · ReLU · Conv3×3, plus shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))  # (N, c_in, h, w)
        skip = self.shortcut(out) if not isinstance(self.shortcut, nn.Identity) else x  # (N, c_out, h', w')
        out = self.conv1(out)  # (N, c_out, h', w'), h' = ceil(h / stride)
        out = self.conv2(F.relu(self.bn2(out)))  # (N, c_out, h', w')
        return out + skip  # (N, c_out, h', w')


class ResNet(nn.Module):
    """Pre-activation ResNet: stem, one basic block, three down-sampling residual blocks, GAP.

    Parameters
    ----------
    input_shape : tuple (C, H, W), default (1, 28, 28)
        ``(1, 28, 28)`` or ``(3, 32, 32)``.
    n_classes : int, default 10
    widths : tuple of four int, default (16, 32, 64, 128)
        Channels of the stem/basic block and of the three residual blocks.

    Attributes
    ----------
    cam_layer : str
        Name of the sub-module whose output is the last feature map ("final_act").
    """

    cam_layer = "final_act"

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        *,
        widths: tuple[int, int, int, int] = (16, 32, 64, 128),
    ) -> None:
        super().__init__()
        shape = check_input_shape(input_shape, "ResNet")
        check_n_classes(n_classes, "ResNet")
        w0, w1, w2, w3 = widths
        self.normalize = normalisation_for(shape)
        self.stem = nn.Conv2d(shape[0], w0, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(w0)
        self.block0 = _PreActBlock(w0, w0, stride=1)
        self.block1 = _PreActBlock(w0, w1, stride=2)
        self.block2 = _PreActBlock(w1, w2, stride=2)
        self.block3 = _PreActBlock(w2, w3, stride=2)
        self.dropout = nn.Dropout(0.25)
        self.final_bn = nn.BatchNorm2d(w3)
        self.final_act = nn.ReLU()
        self.head = nn.Linear(w3, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map before global average pooling, shape (N, widths[3], 4, 4)."""
        x = self.normalize(x)  # (N, C, H, W)
        x = F.relu(self.stem_bn(self.stem(x)))  # (N, w0, H, W)
        x = self.block0(x)  # (N, w0, H, W)
        x = self.block1(x)  # (N, w1, H/2, W/2)
        x = self.block2(x)  # (N, w2, H/4, W/4)
        x = self.block3(x)  # (N, w3, 4, 4)
        x = self.dropout(x)  # (N, w3, 4, 4)
        return self.final_act(self.final_bn(x))  # (N, w3, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))  # (N, w3) global average pooling
        return self.head(x)  # (N, n_classes) logits
