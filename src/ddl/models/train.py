"""Training loop (Adam + cross-entropy, as in Mitro et al. 2018 §"Experiments") and prediction.

Hand-written rather than taken from a training framework because the reproduction needs three
things together: exact determinism from a seed, **per-epoch resumability with bit-identical
results** (a run killed after epoch k and resumed ends with the same weights as an uninterrupted
run), and no dependency beyond torch (no torchvision: the CIFAR-10 augmentation below is plain
tensor indexing).

Determinism: ``torch.manual_seed(seed)`` before the first epoch (dropout draws from the global
generator); the shuffling order of epoch ``e`` comes from its own ``torch.Generator`` seeded with
``(seed, e)`` and so does the augmentation, so neither depends on what ran before. The resume
state saves the global RNG state (CPU, and CUDA when used), the model, the optimiser, the
scheduler and the history after every epoch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ddl._io import atomic_torch_save
from ddl._validate import check_choice, check_images, check_int, check_labels, check_number, check_optional_number

AUGMENTATIONS = ("crop_flip", "flip", "shift")
LR_SCHEDULES = ("cosine",)
_STATE_FORMAT = "ddl-train-resume-v1"


@dataclass
class History:
    """Per-epoch training record (lists indexed by epoch, 0-based).

    Attributes
    ----------
    loss, accuracy : list of float
        Mean training cross-entropy and training accuracy (fraction in [0, 1]) over the epoch, in
        training mode (dropout on), as the progress bar shows them.
    val_loss, val_accuracy : list of float
        Same on ``(x_val, y_val)`` in eval mode after the epoch; empty when no validation set.
    lr : list of float
        Learning rate at the start of each epoch.
    seconds : list of float
        Wall-clock seconds of each epoch's training (validation excluded).
    """

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """Number of finished epochs."""
        return len(self.loss)

    def to_dict(self) -> dict[str, list[float]]:
        """Plain dict of lists (JSON-serialisable)."""
        return asdict(self)


def augment_crop_flip(
    x: torch.Tensor, generator: torch.Generator, *, pad: int = 4, flip: bool = True
) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip (the usual CIFAR-10 augmentation).

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W), float32 in [0, 1]
    generator : torch.Generator
        Source of the random offsets and flips (on the CPU).
    pad : int, default 4
        Zero padding on every side; offsets are uniform in ``[0, 2*pad]``.
    flip : bool, default True
        Also mirror each image left-right with probability 1/2 (False for digits).

    Returns
    -------
    Tensor of shape (N, C, H, W)
        New tensor; ``x`` is not modified.
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (N, C, H+2p, W+2p)
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < (0.5 if flip else 0.0)).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)  # (N, 1, H, 1)
    cols = ox[:, None] + torch.arange(w, device=x.device)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols).view(n, 1, 1, w)  # (N, 1, 1, W)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    idx_c = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[idx_n, idx_c, rows, cols]  # (N, C, H, W)


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """Independent CPU generator for (seed, epoch, stream); stream 0 = shuffling, 1 = augmentation."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 4 + stream)


def _check_fit_args(model, x, y, epochs, batch_size, lr, x_val, y_val, augment, lr_schedule,
                    grad_clip=None) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"fit: model must be a torch.nn.Module; got {type(model).__name__}.")
    check_images("fit", "x", x, value_range=None, dtype=torch.float32)
    check_labels("fit", "y", y, x.shape[0], per="image of x")
    check_int("fit", "epochs", epochs, 1)
    check_int("fit", "batch_size", batch_size, 1)
    check_number("fit", "lr", lr, low=0, low_open=True)
    if (x_val is None) != (y_val is None):
        raise ValueError("fit: x_val and y_val must be given together; got only one of them.")
    if x_val is not None and (x_val.shape[1:] != x.shape[1:] or y_val.shape != (x_val.shape[0],)):
        raise ValueError(
            f"fit: x_val must have shape (M, {', '.join(map(str, x.shape[1:]))}) and y_val (M,); "
            f"got {tuple(x_val.shape)} and {tuple(y_val.shape)}."
        )
    check_choice("fit", "augment", augment, (None, *AUGMENTATIONS))
    check_choice("fit", "lr_schedule", lr_schedule, (None, *LR_SCHEDULES))
    check_optional_number("fit", "grad_clip", grad_clip, 0, low_open=True)


def transform_fingerprint(transform: Callable[[torch.Tensor], torch.Tensor] | None) -> str | None:
    """A stable description of a training transform, for resume fingerprints and records.

    An ``nn.Module`` is described by its class, its ``get_params()`` (when it has them, as the
    denoisers do) and the SHA-256 of its state dict and buffers (for a ``DictionaryDenoiser``:
    its dictionary), so a resume state written with one dictionary is refused with another. Any
    other callable by its qualified name. None for no transform.
    """
    if transform is None:
        return None
    h = hashlib.sha256()
    h.update(f"{type(transform).__module__}.{type(transform).__qualname__}".encode())
    if isinstance(transform, nn.Module):
        params = transform.get_params() if hasattr(transform, "get_params") else {}
        h.update(json.dumps(params, sort_keys=True, default=str).encode())
        for name, t in sorted(transform.state_dict().items()):  # a denoiser's dictionary is a buffer
            t = t.detach().cpu().float().contiguous()
            h.update(f"{name}:{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    else:
        h.update(getattr(transform, "__qualname__", repr(transform)).encode())
    return h.hexdigest()


def _fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: dict[str, Any]) -> str:
    """Hash of what a resume state must match: model structure, data, and training settings."""
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    h.update(type(model).__name__.encode())
    for name, p in model.state_dict().items():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
    h.update(f"{tuple(x.shape)}".encode())
    # A cheap content check of the data: sums over a strided subset (exact in float64).
    step = max(1, x.shape[0] // 1000)
    h.update(f"{x[::step].double().sum().item():.10e}:{y.sum().item()}".encode())
    return h.hexdigest()


def _make_scheduler(optimizer, lr_schedule, total_steps):
    if lr_schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
    return None


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device,
              transform=None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode (on ``transform(x)`` when given);
    restores the previous mode."""
    was_training = model.training
    model.eval()
    if transform is not None:
        x = _apply_transform(transform, x, max(batch_size, 512), device).cpu()
    logits = predict(model, x, batch_size=max(batch_size, 512), device=device)
    model.train(was_training)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).double().mean().item()


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    augment: str | None = None,
    lr_schedule: str | None = None,
    grad_clip: float | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    val_name: str = "val",
) -> History:
    """Train ``model`` with Adam on the cross-entropy loss, resumable per epoch.

    Parameters
    ----------
    model : nn.Module
        Classifier mapping (B, C, H, W) float32 in [0, 1] to logits (B, n_classes). Trained in
        place (moved to ``device``); left in **eval mode** on return, ready for ``predict``.
    x : Tensor of shape (N, C, H, W), float32 in [0, 1]
        Training images (kept where they are; each batch is moved to ``device``).
    y : Tensor of shape (N,), int64
        Training labels.
    epochs : int >= 1
        Total number of epochs (a resumed run counts the epochs already done).
    batch_size : int, default 32
        Mini-batch size (the paper's 32). The last batch of an epoch may be smaller.
    lr : float, default 1e-3
        Adam learning rate (Keras' and the paper's default).
    seed : int, default 0
        Seeds dropout (global torch generator), shuffling and augmentation.
    device : str, default "cpu"
    x_val, y_val : Tensor, optional
        Evaluated in eval mode after each epoch (recorded in the history; not used for any
        decision: no early stopping, no model selection).
    checkpoint_path : path, optional
        Resume state file. After every epoch the model, optimiser, scheduler, RNG states and
        history are written there atomically; on start, an existing file whose fingerprint
        (model structure, data, settings) matches is loaded and training continues after its
        last epoch. A file that does not match raises ``ValueError`` (delete it to start over).
        With ``lr_schedule=None`` the total ``epochs`` is not part of the fingerprint, so a
        finished run can be extended by calling again with more epochs.
    augment : {None, "crop_flip", "flip", "shift"}
        "crop_flip": random crop after 4-pixel zero padding + random horizontal flip, per image
        and per epoch (for CIFAR-10; see ``augment_crop_flip``). "flip": the horizontal flip
        alone (for CIFAR-10 models without translation invariance, such as the MLP). "shift": random translation by
        up to 2 pixels in each direction with zero fill, no flip (for digits).
    lr_schedule : {None, "cosine"}
        None: constant ``lr``. "cosine": ``lr · ½(1 + cos(π t / T))`` over all T steps, per step.
    grad_clip : float > 0, optional
        Clip the global gradient norm to this value before each step (for recurrent models).
    transform : callable, optional
        Applied without gradients to every training batch **after** augmentation and before the
        model, e.g. a fitted :class:`ddl.defence.DictionaryDenoiser`: the model is trained on
        reconstructions (denoiser-aware training, "the dictionary can be embedded in any
        supervised learning algorithm", Mitro et al. 2018). Because it runs on the augmented
        batch, every epoch sees a fresh reconstruction of a fresh crop/flip rather than one cached
        reconstruction per image (measured cost of the tuned denoiser on one 2-core-machine
        thread: ~1,800 MNIST / ~1,100 CIFAR-10 images/s, i.e. 30-50 s per epoch). ``x_val`` is
        transformed too, so the monitored accuracy is that of the defended classifier. The
        transform's identity (class, parameters, dictionary bytes; see
        :func:`transform_fingerprint`) is part of the resume fingerprint. It must map (B, C, H, W)
        to the same shape and be deterministic for resumes to be exact.
    progress : bool, default True
        tqdm bar per epoch with the running loss and accuracy.
    log : callable(str), optional
        Called once per epoch with a one-line summary (e.g. ``print`` or ``logger.info``).
    val_name : str, default "val"
        What ``(x_val, y_val)`` is, for the summary's ``<val_name>_loss`` and ``<val_name>_acc``:
        ``"test"`` when the test set is monitored (``ddl train`` does so; nothing is chosen on it,
        so the numbers are honest test numbers, but they must not be called validation).

    Returns
    -------
    History
        Per-epoch losses, accuracies, learning rates and seconds.
    """
    _check_fit_args(model, x, y, epochs, batch_size, lr, x_val, y_val, augment, lr_schedule, grad_clip)
    if not (isinstance(val_name, str) and val_name.isidentifier()):
        raise ValueError(f"fit: val_name must be a word such as 'val' or 'test'; got {val_name!r}.")
    dev = torch.device(device)
    model.to(dev)
    config = {"batch_size": batch_size, "lr": float(lr), "seed": seed, "augment": augment,
              "lr_schedule": lr_schedule, "epochs": epochs if lr_schedule is not None else None}
    if grad_clip is not None:  # only when used, so resume states written without it still match
        config["grad_clip"] = float(grad_clip)
    if transform is not None:
        if not callable(transform):
            raise TypeError(f"fit: transform must be None or a callable mapping (B, C, H, W) images to the "
                            f"same shape; got {type(transform).__name__}.")
        config["transform"] = transform_fingerprint(transform)
    fingerprint = _fingerprint(model, x, y, config)
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = _make_scheduler(optimizer, lr_schedule, epochs * steps_per_epoch)
    history = History()
    torch.manual_seed(seed)
    start = 0
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        start = _load_resume(checkpoint_path, fingerprint, model, optimizer, scheduler, history, dev)
        if log is not None:
            log(f"resumed from {checkpoint_path} after epoch {start}")
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        history.lr.append(optimizer.param_groups[0]["lr"])
        loss, acc = _train_one_epoch(model, x, y, optimizer, scheduler, epoch, epochs, batch_size, seed,
                                     augment, dev, progress, grad_clip, transform)
        history.seconds.append(time.perf_counter() - t0)
        history.loss.append(loss)
        history.accuracy.append(acc)
        if x_val is not None:
            val_loss, val_acc = _evaluate(model, x_val, y_val, batch_size, dev, transform)
            history.val_loss.append(val_loss)
            history.val_accuracy.append(val_acc)
        if checkpoint_path is not None:
            _save_resume(checkpoint_path, fingerprint, epoch + 1, model, optimizer, scheduler, history, dev)
        if log is not None:
            log(_summary(history, epochs, val_name))
    model.eval()
    return history


def _apply_transform(transform, xb: torch.Tensor, batch_size: int, dev) -> torch.Tensor:
    """``transform`` on ``xb`` (moved to ``dev``) without gradients, in chunks of ``batch_size``;
    refuses a result of another shape."""
    with torch.no_grad():
        out = torch.cat([transform(xb[i:i + batch_size].to(dev)) for i in range(0, xb.shape[0], batch_size)])
    if not isinstance(out, torch.Tensor) or out.shape != xb.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"fit: transform must return images of the shape it was given, {tuple(xb.shape)}; "
                         f"got {got}.")
    return out


def _train_one_epoch(model, x, y, optimizer, scheduler, epoch, epochs, batch_size, seed, augment, dev,
                     progress, grad_clip=None, transform=None) -> tuple[float, float]:
    """One pass over a seeded permutation of the data; returns (mean loss, accuracy) in train mode."""
    from tqdm.auto import tqdm

    model.train()
    n = x.shape[0]
    order = torch.randperm(n, generator=_epoch_generator(seed, epoch, 0))
    aug_gen = _epoch_generator(seed, epoch, 1)
    total_loss, correct = 0.0, 0
    bar = tqdm(range(0, n, batch_size), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
               leave=False, unit="batch")
    for i, lo in enumerate(bar):
        idx = order[lo:lo + batch_size]
        xb = x[idx]  # (B, C, H, W)
        if augment == "crop_flip":
            xb = augment_crop_flip(xb, aug_gen)
        elif augment == "flip":
            xb = augment_crop_flip(xb, aug_gen, pad=0)
        elif augment == "shift":
            xb = augment_crop_flip(xb, aug_gen, pad=2, flip=False)
        xb, yb = xb.to(dev, non_blocking=True), y[idx].to(dev, non_blocking=True)
        if transform is not None:
            xb = _apply_transform(transform, xb, xb.shape[0], dev)
        logits = model(xb)  # (B, n_classes)
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == yb).sum().item()
        if progress and i % 20 == 0:
            seen = min(lo + batch_size, n)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    return total_loss / n, correct / n


def _summary(h: History, epochs: int, val_name: str = "val") -> str:
    e = h.epochs
    line = f"epoch {e}/{epochs}: loss {h.loss[-1]:.4f} acc {h.accuracy[-1]:.4f}"
    if h.val_loss:
        line += f" {val_name}_loss {h.val_loss[-1]:.4f} {val_name}_acc {h.val_accuracy[-1]:.4f}"
    return line + f" lr {h.lr[-1]:.2e} {h.seconds[-1]:.1f}s"


def _save_resume(path, fingerprint, epoch, model, optimizer, scheduler, history, dev) -> None:
    state = {
        "format": _STATE_FORMAT,
        "fingerprint": fingerprint,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": _rng_state(dev),
        "history": history.to_dict(),
    }
    atomic_torch_save(path, state)


def _load_resume(path, fingerprint, model, optimizer, scheduler, history, dev) -> int:
    try:
        state = torch.load(path, map_location=dev, weights_only=True)
    except Exception as exc:  # a weights-only refusal or a corrupt file: say which file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"fit: cannot read the resume state {path} ({first}); delete it to start over.") from exc
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        raise ValueError(f"fit: {path} is not a ddl resume state (format {_STATE_FORMAT}); delete it to start over.")
    if state["fingerprint"] != fingerprint:
        raise ValueError(
            f"fit: the resume state {path} was written for a different model, data set or training "
            f"settings (fingerprint mismatch); delete it to start over, or pass another checkpoint_path."
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng = {k: v.cpu() for k, v in state["rng"].items()}
    _set_rng_state(rng, dev)
    for key, values in state["history"].items():
        getattr(history, key).extend(values)
    return int(state["epoch"])


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512, device: str = "cpu") -> torch.Tensor:
    """Logits of ``model`` on ``x``, in batches, without gradients.

    Parameters
    ----------
    model : nn.Module
        Must be in eval mode (``model.eval()``): in training mode dropout and batch norm would make
        predictions random and change batch-norm statistics, so this raises instead.
    x : Tensor of shape (N, C, H, W), float32 in [0, 1]
    batch_size : int, default 512
    device : str, default "cpu"
        Where the forward passes run; the model must already be there.

    Returns
    -------
    Tensor of shape (N, n_classes), float32, on the CPU
        Logits (softmax is left to the metrics).
    """
    if model.training:
        raise ValueError("predict: model is in training mode (dropout/batch-norm would make predictions "
                         "random); call model.eval() first.")
    check_images("predict", "x", x, value_range=None, dtype=torch.float32)
    check_int("predict", "batch_size", batch_size, 1)
    dev = torch.device(device)
    out = [model(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, x.shape[0], batch_size)]
    if not out:
        raise ValueError(f"predict: x must hold at least one image; got shape {tuple(x.shape)}.")
    return torch.cat(out)  # (N, n_classes)
