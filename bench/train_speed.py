"""Training and inference speed (images/s) of the five zoo models on MNIST- and CIFAR-shaped input.

Used to plan the epochs of ``tools/train_zoo.py`` (DESIGN.md §4: the paper trains 100 epochs; our
``cpu`` preset trains fewer). Synthetic uniform images are used because speed does not depend on
the pixel values. Training = forward + cross-entropy + backward + Adam step, in training mode;
inference = forward under ``torch.no_grad`` in eval mode.

Usage::

    .venv/bin/python bench/train_speed.py --threads 2 [--device cuda] [--seconds 3]
        [--models mlp,convnet] [--datasets mnist,cifar10] [--batch-sizes 32,128]

Prints one Markdown table row per (model, dataset, batch size), with the estimated seconds per
60 000-image (MNIST) or 50 000-image (CIFAR-10) epoch.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from ddl.models import MODELS, build_model

SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
TRAIN_SIZE = {"mnist": 60_000, "cifar10": 50_000}


def _rate(step, batch_size: int, seconds: float, device: str) -> float:
    """Images/s of ``step()`` run repeatedly for about ``seconds`` after two warm-up calls."""
    step()
    step()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    _sync(device)
    return n * batch_size / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(name: str, dataset: str, batch_size: int, *, seconds: float, device: str) -> tuple[float, float]:
    """Return (training images/s at ``batch_size``, inference images/s at batch 512)."""
    torch.manual_seed(0)
    model = build_model(name, SHAPES[dataset]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(batch_size, *SHAPES[dataset], device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    model.train()
    train = _rate(train_step, batch_size, seconds, device)
    model.eval()
    xi = torch.rand(512, *SHAPES[dataset], device=device)

    def infer_step() -> None:
        with torch.no_grad():
            model(xi)

    infer = _rate(infer_step, 512, seconds, device)
    return train, infer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--datasets", default="mnist,cifar10")
    p.add_argument("--batch-sizes", default="32,128")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    print("| model | dataset | batch | train img/s | s/epoch | infer img/s (batch 512) |")
    print("|---|---|---:|---:|---:|---:|")
    for dataset in args.datasets.split(","):
        for name in args.models.split(","):
            for bs in (int(b) for b in args.batch_sizes.split(",")):
                train, infer = measure(name, dataset, bs, seconds=args.seconds, device=args.device)
                print(
                    f"| {name} | {dataset} | {bs} | {train:,.0f} | {TRAIN_SIZE[dataset] / train:,.0f} | {infer:,.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
