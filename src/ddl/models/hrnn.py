"""Hierarchical LSTM ("HRNN") of Mitro et al. 2018, Table 3 (DESIGN.md §4).

TimeDistributed LSTM over the pixels of each row · LSTM over the rows · Reshape · LSTM ·
Dropout 0.25 · Dense 10 (Hihi & Bengio 1996's hierarchical RNN, in the form of the Keras
``mnist_hierarchical_rnn`` example, with an extra LSTM over the reshaped row summary).

Choices where the table is silent, or where we depart from it for a 2-core CPU:

- Colour: each row is a sequence of W pixels whose C channel values are the features (C = 1 for
  MNIST, 3 for CIFAR-10), so the first LSTM sees sequences of length W with C inputs.
- Widths: the table's LSTMs are 256 wide. The pixel-level LSTM runs H·W steps per image, which at
  256 units costs about 0.2 GMAC per MNIST image forward — far too slow for a 2-core CPU. Defaults
  here: ``pixel_hidden=32`` (pixel LSTM), ``row_hidden=128`` (row LSTM, the width of the Keras
  example), its last state reshaped to 8 steps × 16 features (the table reshapes 256 values to
  16×16; we keep rows of 16 features) and read by a ``top_hidden=128`` LSTM. Only the last time
  step of each LSTM is passed on. Measured on this machine (1 thread, batch 32, under load):
  (64, 256, 128) 52 img/s, (32, 256, 128) 104 img/s, (32, 128, 128) 172 img/s; the table's widths
  can be asked for with ``HRNN(shape, pixel_hidden=256, row_hidden=256, top_hidden=256,
  reshape_steps=16)``.
- Initialisation as Keras' LSTM (the paper's layer names are Keras'): Glorot-uniform input
  weights, orthogonal recurrent weights, zero biases except a forget-gate bias of 1
  (``unit_forget_bias``; Jozefowicz et al. 2015). PyTorch's default (uniform ±1/√h, forget bias
  ≈ 0) trained far more slowly here: 69 %, 83 %, 93 % test accuracy after epochs 1–3 on MNIST
  (zoo_logs/hrnn_mnist_try1_torch_init.log).
- No ``cam_layer`` (no convolutional feature map).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ddl.models import check_input_shape, check_n_classes, normalisation_for


def _keras_lstm_init(lstm: nn.LSTM) -> None:
    """Keras' LSTM defaults: Glorot-uniform W_ih, orthogonal W_hh, biases 0 but forget gate 1."""
    h = lstm.hidden_size
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith("weight_ih"):
                nn.init.xavier_uniform_(p)  # (4h, in): same fans as Keras' (in, 4h) kernel
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(p)  # (4h, h)
            elif name.startswith("bias_ih"):
                p.zero_()
                p[h:2 * h] = 1.0  # gate order i, f, g, o: forget-gate bias 1
            elif name.startswith("bias_hh"):
                p.zero_()


class HRNN(nn.Module):
    """Three-level LSTM classifier: pixels of a row → rows → reshaped row summary.

    Parameters
    ----------
    input_shape : tuple (C, H, W), default (1, 28, 28)
        ``(1, 28, 28)`` or ``(3, 32, 32)``.
    n_classes : int, default 10
    pixel_hidden, row_hidden, top_hidden : int, default 32, 128, 128
        Hidden sizes of the three LSTMs.
    reshape_steps : int, default 8
        The row LSTM's last state (``row_hidden`` values) is read as ``reshape_steps`` steps of
        ``row_hidden // reshape_steps`` features; ``row_hidden`` must be divisible by it.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        *,
        pixel_hidden: int = 32,
        row_hidden: int = 128,
        top_hidden: int = 128,
        reshape_steps: int = 8,
    ) -> None:
        super().__init__()
        shape = check_input_shape(input_shape, "HRNN")
        check_n_classes(n_classes, "HRNN")
        if row_hidden % reshape_steps:
            raise ValueError(
                f"HRNN: row_hidden must be divisible by reshape_steps; "
                f"got row_hidden={row_hidden}, reshape_steps={reshape_steps}."
            )
        self.reshape_steps = reshape_steps
        self.normalize = normalisation_for(shape)
        self.pixel_lstm = nn.LSTM(shape[0], pixel_hidden, batch_first=True)
        self.row_lstm = nn.LSTM(pixel_hidden, row_hidden, batch_first=True)
        self.top_lstm = nn.LSTM(row_hidden // reshape_steps, top_hidden, batch_first=True)
        self.dropout = nn.Dropout(0.25)
        self.head = nn.Linear(top_hidden, n_classes)
        for lstm in (self.pixel_lstm, self.row_lstm, self.top_lstm):
            _keras_lstm_init(lstm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = self.normalize(x)  # (N, C, H, W)
        x = x.permute(0, 2, 3, 1).reshape(n * h, w, c)  # (N*H, W, C): one sequence per row
        _, (hx, _) = self.pixel_lstm(x)  # hx: (1, N*H, pixel_hidden), last step of each row
        rows = hx[0].view(n, h, -1)  # (N, H, pixel_hidden)
        _, (hx, _) = self.row_lstm(rows)  # hx: (1, N, row_hidden)
        top = hx[0].view(n, self.reshape_steps, -1)  # (N, reshape_steps, row_hidden/reshape_steps)
        _, (hx, _) = self.top_lstm(top)  # hx: (1, N, top_hidden)
        return self.head(self.dropout(hx[0]))  # (N, n_classes) logits
