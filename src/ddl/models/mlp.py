"""MLP of Mitro et al. 2018, Table 3 (as reconstructed in DESIGN.md §4).

Dropout 0.5 · BatchNorm · Dense 784 · ReLU · Dropout 0.2 · BatchNorm · Dense 256 · ReLU · Dense 10,
on the flattened normalised image. The table gives the layer list and widths; we keep them for both
input shapes (the first hidden layer stays 784 wide on CIFAR-10's 3072 inputs: about 2.6 M
weights, 5 MB in float16, and it trains at several thousand images/s on 2 CPU cores).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ddl.models import check_input_shape, check_n_classes, normalisation_for


class MLP(nn.Module):
    """Fully connected classifier with input dropout and batch normalisation.

    Parameters
    ----------
    input_shape : tuple (C, H, W), default (1, 28, 28)
        ``(1, 28, 28)`` or ``(3, 32, 32)``.
    n_classes : int, default 10
    hidden : tuple of two int, default (784, 256)
        Widths of the two hidden layers (Table 3).
    dropout : tuple of two float, default (0.5, 0.2)
        Dropout on the (normalised) input and after the first hidden layer (Table 3).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        *,
        hidden: tuple[int, int] = (784, 256),
        dropout: tuple[float, float] = (0.5, 0.2),
    ) -> None:
        super().__init__()
        shape = check_input_shape(input_shape, "MLP")
        check_n_classes(n_classes, "MLP")
        n_in = shape[0] * shape[1] * shape[2]
        self.normalize = normalisation_for(shape)
        self.drop_in = nn.Dropout(dropout[0])
        self.bn1 = nn.BatchNorm1d(n_in)
        self.fc1 = nn.Linear(n_in, hidden[0])
        self.drop1 = nn.Dropout(dropout[1])
        self.bn2 = nn.BatchNorm1d(hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.head = nn.Linear(hidden[1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)  # (N, C, H, W)
        x = x.flatten(1)  # (N, C*H*W)
        x = self.bn1(self.drop_in(x))  # (N, C*H*W)
        x = torch.relu(self.fc1(x))  # (N, hidden[0])
        x = self.bn2(self.drop1(x))  # (N, hidden[0])
        x = torch.relu(self.fc2(x))  # (N, hidden[1])
        return self.head(x)  # (N, n_classes) logits
