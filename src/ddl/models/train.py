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

Adversarial training (:class:`AdversarialTraining`, passed as ``fit(adversarial=...)``) is an
option of this one loop, not a second loop: each batch is replaced by adversarial examples found
by an inner maximisation before the step (PGD-AT, fast AT, TRADES). Its random starts come from
one more per-epoch generator (stream 2) and the catastrophic-overfitting guard's fixed batch from
another (stream 3), so the global RNG (dropout) is drawn exactly as in standard training: with
``eps = 0`` PGD-AT and fast AT give the weights of standard training bit for bit.
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
from ddl._validate import (check_choice, check_images, check_int, check_labels, check_number,
                           check_optional_int, check_optional_number)
from ddl.attacks._linf import project_linf

AUGMENTATIONS = ("crop_flip", "flip", "shift")
#: Methods of :class:`AdversarialTraining`.
ADVERSARIAL_METHODS = ("pgd", "fast", "trades")
#: Threat models (``ddl.robustness.threat``) the adversary inside training may use through a
#: ``transform``; ``oblivious`` would not attack the defended classifier at all.
TRAINING_THREATS = ("bpda", "exact", "soft")
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
        Wall-clock seconds of each epoch's training (validation excluded); with adversarial
        training they include the inner maximisation (and not the guard's measurement).
    cpu_seconds : list of float or None
        CPU seconds of the same (``time.process_time``: this process, all its threads, so up to
        threads × wall); unlike ``seconds`` not inflated by a paused or starved process. None
        for the epochs of a resume state written before ddl kept it.
    eps : list of float
        Adversarial training only: the budget ε of each epoch (smaller during the warm-up).
    robust_accuracy : list of float
        Adversarial training only: accuracy on the epoch's adversarial training examples (train
        mode, the logits of the step). ``accuracy`` is then the clean accuracy of the same batches
        (pgd, fast: a no-gradient eval-mode forward before the attack; trades: the step's clean
        logits, train mode) and ``loss`` the training objective.
    guard_accuracy : list of float
        Fast AT only: PGD accuracy on the guard's fixed batch of training images after each epoch.
    rolled_back_to : int or None
        Fast AT only: the 1-based epoch whose weights the guard restored when it stopped training
        (catastrophic overfitting); None when it did not fire.
    """

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float | None] = field(default_factory=list)
    eps: list[float] = field(default_factory=list)
    robust_accuracy: list[float] = field(default_factory=list)
    guard_accuracy: list[float] = field(default_factory=list)
    rolled_back_to: int | None = None

    @property
    def epochs(self) -> int:
        """Number of finished epochs."""
        return len(self.loss)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists, JSON-serialisable; the adversarial-training entries (``eps``,
        ``robust_accuracy``, ``guard_accuracy``, ``rolled_back_to``) only when they hold values."""
        out = asdict(self)
        for key in _ADVERSARIAL_HISTORY:
            if out[key] in ([], None):
                del out[key]
        return out


_ADVERSARIAL_HISTORY = ("eps", "robust_accuracy", "guard_accuracy", "rolled_back_to")


@dataclass(frozen=True)
class AdversarialTraining:
    """How :func:`fit` trains adversarially: the method, the budget and the inner maximisation.

    Each training batch ``x`` (after augmentation) is replaced by adversarial examples found with
    the model in **eval mode** (dropout off, batch-norm statistics frozen: what the attacker of
    the deployed model faces), then the step is taken in train mode. With a ``transform`` (a
    defence) the adversary attacks the defended classifier ``model(transform(x))`` through the
    threat model ``threat`` of :mod:`ddl.robustness.threat`, and the model is trained on
    ``transform(x_adv)``, the defended classifier's real forward.

    Parameters
    ----------
    method : {"pgd", "fast", "trades"}
        ``"pgd"``: PGD-AT (Madry et al. 2018): uniform random start in the ε-ball, ``steps``
        signed-gradient steps of the cross-entropy, train on the result.
        ``"fast"``: fast AT (Wong, Rice & Kolter 2020): FGSM from a uniform random start with step
        ``1.25 ε`` (one step), plus the guard against catastrophic overfitting (below).
        ``"trades"``: TRADES (Zhang et al. 2019): loss ``CE(f(x), y) + β·KL(f(x) ‖ f(x'))``
        (:func:`trades_loss`), ``x'`` maximising that KL by PGD from ``x + 0.001·N(0, 1)`` (the
        authors' start; the KL has a zero gradient at ``x`` itself).
    eps : float in [0, 1]
        L∞ budget at the end of the warm-up. ``0`` makes pgd and fast standard training, bit for
        bit.
    steps : int >= 1, optional
        Inner steps. Default 10 for pgd and trades; fast has exactly one (only 1 is accepted).
    step_size : float > 0, optional
        Inner step. Default ``2.5·eps/steps`` for pgd and trades (Madry et al.'s rule: 2/255 for
        10 steps at 8/255), ``1.25·eps`` for fast (Wong et al.). During the warm-up it scales
        with ε (``step_size · ε_epoch / eps``).
    beta : float > 0, optional
        TRADES' β (only for trades; default 6, the authors' CIFAR-10 value; their MNIST script
        uses 1).
    eps_warmup_epochs : int >= 0, default 0
        Linear ramp of ε over the first epochs: epoch ``e`` (0-based) uses
        ``eps · min(1, (e + 1) / eps_warmup_epochs)`` (e.g. 0.1, 0.2, 0.3, 0.3, … for eps 0.3 over
        3), as MNIST at 0.3 needs. 0: the full ε from the first epoch.
    threat : {"bpda", "exact", "soft"}, default "bpda"
        How the adversary differentiates through ``fit``'s ``transform`` (ignored without one;
        recorded as None then). ``"bpda"`` (identity backward) is the default because it is the
        cheapest that attacks the defended classifier: one denoiser forward per step and no
        backward through it. ``"soft"`` (the smooth surrogate of OMP's atom choice, the strongest
        attack of the evaluation suite) adds the surrogate's forward and backward at every step.
        Measured (``bench/adversarial_training_cost.py``, median of 5, one torch thread on the
        shared 2-core machine, load average ~3): MNIST ConvNet, 256 training images, batch 32,
        pgd with 10 steps at ε 0.3, behind the zoo's tuned defence: **bpda 4.2 s per epoch,
        soft 11.4 s** (2.7×); for scale, pgd without a defence 3.6 s, standard training behind
        the defence 0.5 s. On the 60,000 MNIST images that is ~16 min (bpda) against ~45 min
        (soft) per epoch on one thread.
    guard_drop : float in (0, 1), default 0.5
        Fast AT's guard (Wong et al. 2020 §5.3; Rice et al. 2020): after each epoch the PGD
        accuracy on a fixed batch of training images is measured (at the full ε, ``guard_steps``
        steps of ``eps/4`` from a fixed uniform start, through the defence as in training); when
        it falls below ``(1 − guard_drop)`` times the best so far, the weights of the best epoch
        are restored, training stops and ``log`` says so (:attr:`History.rolled_back_to`). The
        batch is drawn once from the seed and stays in the training set, as in Wong et al.: the
        collapse shows on training data itself.
    guard_size : int >= 1, default 512
        Images in the guard's batch (all of them when the training set is smaller).
    guard_steps : int >= 1, default 10
        PGD steps of the guard's measurement.
    """

    method: str
    eps: float
    steps: int | None = None
    step_size: float | None = None
    beta: float | None = None
    eps_warmup_epochs: int = 0
    threat: str = "bpda"
    guard_drop: float = 0.5
    guard_size: int = 512
    guard_steps: int = 10

    def __post_init__(self):
        where = "AdversarialTraining"
        check_choice(where, "method", self.method, ADVERSARIAL_METHODS)
        check_number(where, "eps", self.eps, 0, 1)
        check_optional_int(where, "steps", self.steps, 1)
        if self.method == "fast" and self.steps not in (None, 1):
            raise ValueError(f"{where}: steps of method 'fast' must be 1 (one FGSM step from a random start; "
                             f"use method 'pgd' for more); got {self.steps!r}.")
        check_optional_number(where, "step_size", self.step_size, 0, low_open=True)
        if self.beta is not None and self.method != "trades":
            raise ValueError(f"{where}: beta is TRADES' weight of the KL term, an option of method 'trades' "
                             f"only; got beta={self.beta!r} with method {self.method!r}.")
        check_optional_number(where, "beta", self.beta, 0, low_open=True)
        check_int(where, "eps_warmup_epochs", self.eps_warmup_epochs, 0)
        check_choice(where, "threat", self.threat, TRAINING_THREATS)
        check_number(where, "guard_drop", self.guard_drop, 0, 1, low_open=True, high_open=True)
        check_int(where, "guard_size", self.guard_size, 1)
        check_int(where, "guard_steps", self.guard_steps, 1)

    @property
    def n_steps(self) -> int:
        """Inner steps: ``steps``, or the method's default (10; fast: 1)."""
        return 1 if self.method == "fast" else (self.steps or 10)

    @property
    def full_step_size(self) -> float:
        """Inner step at the full ε: ``step_size``, or the method's default."""
        if self.step_size is not None:
            return float(self.step_size)
        return 1.25 * self.eps if self.method == "fast" else 2.5 * self.eps / self.n_steps

    @property
    def trades_beta(self) -> float:
        """TRADES' β (6 when not given)."""
        return 6.0 if self.beta is None else float(self.beta)

    def eps_at(self, epoch: int) -> float:
        """ε of the 0-based ``epoch``: ``eps · min(1, (epoch + 1) / eps_warmup_epochs)``."""
        if self.eps_warmup_epochs == 0 or epoch + 1 >= self.eps_warmup_epochs:
            return float(self.eps)
        return float(self.eps) * (epoch + 1) / self.eps_warmup_epochs

    def step_size_at(self, epoch: int) -> float:
        """Inner step of the 0-based ``epoch``: scaled with ε during the warm-up."""
        if self.eps == 0:
            return self.full_step_size
        return self.full_step_size * self.eps_at(epoch) / float(self.eps)

    def record(self, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
        """What a checkpoint records of this training (JSON-serialisable): the method, ε, the
        resolved steps and step size, the warm-up, β (trades), the guard (fast), and with a
        ``transform`` the threat model and the defence's :func:`transform_fingerprint`."""
        out: dict[str, Any] = {"method": self.method, "eps": float(self.eps), "steps": self.n_steps,
                               "step_size": self.full_step_size, "eps_warmup_epochs": self.eps_warmup_epochs,
                               "random_start": "normal(0, 0.001)" if self.method == "trades" else "uniform"}
        if self.method == "trades":
            out["beta"] = self.trades_beta
        if self.method == "fast":
            out["guard"] = {"drop": float(self.guard_drop), "size": self.guard_size, "steps": self.guard_steps}
        out["threat"] = self.threat if transform is not None else None
        out["defence_fingerprint"] = transform_fingerprint(transform)
        return out


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """TRADES' training objective (Zhang et al. 2019, eq. (5); the authors' ``trades_loss``).

    ``mean_i CE(z_i, y_i) + β · mean_i KL(softmax(z_i) ‖ softmax(z'_i))`` with ``z`` the clean and
    ``z'`` the adversarial logits; gradients flow through both.

    Parameters
    ----------
    logits_clean, logits_adv : Tensor of shape (B, K)
    y : Tensor of shape (B,), int64
    beta : float >= 0

    Returns
    -------
    Tensor, scalar
    """
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="sum")
    return F.cross_entropy(logits_clean, y) + beta * kl / logits_clean.shape[0]


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
    adversarial: AdversarialTraining | None = None,
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
    adversarial : AdversarialTraining, optional
        Train on adversarial examples (PGD-AT, fast AT with its guard, TRADES; see
        :class:`AdversarialTraining`). With a ``transform`` the adversary attacks through it with
        ``adversarial.threat``. Its record (:meth:`AdversarialTraining.record`) is part of the
        resume fingerprint and of the resume state, and so is the guard's state (best accuracy,
        best epoch, its weights, whether it stopped): a resumed run equals an uninterrupted one,
        and a run the guard stopped stays stopped.
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
    attacked = None
    if adversarial is not None:
        if not isinstance(adversarial, AdversarialTraining):
            raise TypeError(f"fit: adversarial must be None or an AdversarialTraining; got "
                            f"{type(adversarial).__name__}.")
        config["adversarial"] = adversarial.record(transform)  # only when used: old states still match
        if transform is not None:
            from ddl.robustness.threat import defended

            attacked = defended(model, transform, adversarial.threat)  # checks 'soft' against the defence
    fingerprint = _fingerprint(model, x, y, config)
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = _make_scheduler(optimizer, lr_schedule, epochs * steps_per_epoch)
    history = History()
    guarded = adversarial is not None and adversarial.method == "fast"
    guard = _Guard() if guarded else None
    torch.manual_seed(seed)
    start = 0
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        start = _load_resume(checkpoint_path, fingerprint, model, optimizer, scheduler, history, dev, guard)
        if log is not None:
            log(f"resumed from {checkpoint_path} after epoch {start}"
                + (f" (the guard stopped it; weights of epoch {history.rolled_back_to})" if guard and guard.stopped
                   else ""))
    guard_batch = _guard_batch(x, y, seed, adversarial) if guarded else None
    for epoch in range(start, epochs):
        if guard is not None and guard.stopped:
            break
        t0, c0 = time.perf_counter(), time.process_time()
        history.lr.append(optimizer.param_groups[0]["lr"])
        loss, acc, robust_acc = _train_one_epoch(model, x, y, optimizer, scheduler, epoch, epochs, batch_size,
                                                 seed, augment, dev, progress, grad_clip, transform,
                                                 adversarial, attacked)
        history.seconds.append(time.perf_counter() - t0)
        history.cpu_seconds.append(time.process_time() - c0)
        history.loss.append(loss)
        history.accuracy.append(acc)
        if adversarial is not None:
            history.eps.append(adversarial.eps_at(epoch))
            history.robust_accuracy.append(robust_acc)
        if x_val is not None:
            val_loss, val_acc = _evaluate(model, x_val, y_val, batch_size, dev, transform)
            history.val_loss.append(val_loss)
            history.val_accuracy.append(val_acc)
        fired = None
        if guard is not None:
            g_acc = _guard_accuracy(model, attacked, *guard_batch, adversarial, dev, batch_size)
            history.guard_accuracy.append(g_acc)
            fired = guard.update(model, epoch + 1, g_acc, adversarial.guard_drop)
            if fired is not None:
                history.rolled_back_to = guard.best_epoch
        if checkpoint_path is not None:
            _save_resume(checkpoint_path, fingerprint, epoch + 1, model, optimizer, scheduler, history, dev,
                         config.get("adversarial"), guard)
        if log is not None:
            log(_summary(history, epochs, val_name))
            if fired is not None:
                log(fired)
    model.eval()
    return history


class _Guard:
    """State of fast AT's guard against catastrophic overfitting (saved in the resume state)."""

    def __init__(self):
        self.best_accuracy = -1.0
        self.best_epoch = 0
        self.best_model: dict[str, torch.Tensor] | None = None
        self.stopped = False

    def update(self, model: nn.Module, epoch: int, accuracy: float, drop: float) -> str | None:
        """Record the 1-based ``epoch``'s guard accuracy; on a collapse restore the best epoch's
        weights, stop, and return the message to log (None otherwise)."""
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch
            self.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return None
        if accuracy >= (1.0 - drop) * self.best_accuracy:
            return None
        model.load_state_dict(self.best_model)
        self.stopped = True
        return (f"guard: PGD accuracy on the guard's training batch fell from {self.best_accuracy:.4f} "
                f"(epoch {self.best_epoch}) to {accuracy:.4f} (epoch {epoch}), more than {drop:g} of the best: "
                f"catastrophic overfitting; rolled back to the weights of epoch {self.best_epoch} and stopped")

    def state(self) -> dict[str, Any]:
        return {"best_accuracy": self.best_accuracy, "best_epoch": self.best_epoch,
                "best_model": self.best_model, "stopped": self.stopped}

    def load(self, state: dict[str, Any]) -> None:
        self.best_accuracy, self.best_epoch = float(state["best_accuracy"]), int(state["best_epoch"])
        self.best_model, self.stopped = state["best_model"], bool(state["stopped"])


def _guard_batch(x: torch.Tensor, y: torch.Tensor, seed: int, adv: AdversarialTraining):
    """(images, labels, uniform start) of the guard: ``guard_size`` training images drawn once
    from the seed (stream 3), and a fixed start in the full ε-ball, so every epoch is measured
    on the same points from the same start."""
    gen = _epoch_generator(seed, 0, 3)
    idx = torch.randperm(x.shape[0], generator=gen)[:adv.guard_size]
    xg = x[idx]
    start = (torch.rand(xg.shape, generator=gen, dtype=xg.dtype) * 2 - 1) * adv.eps
    return xg, y[idx], start


def _guard_accuracy(model, attacked, xg, yg, start, adv: AdversarialTraining, dev, batch_size: int) -> float:
    """PGD accuracy (full ε, ``guard_steps`` steps of ε/4, fixed start) of the model (behind the
    defence when ``attacked`` wraps one) on the guard's batch, in eval mode; restores train mode."""
    model.eval()
    f = model if attacked is None else attacked
    correct = 0
    for lo in range(0, xg.shape[0], batch_size):
        xb, yb = xg[lo:lo + batch_size].to(dev), yg[lo:lo + batch_size].to(dev)
        x_adv = _inner_max(f, xb, start[lo:lo + batch_size].to(dev), adv.eps, adv.eps / 4, adv.guard_steps,
                           lambda logits, yb=yb: F.cross_entropy(logits, yb, reduction="sum"))
        with torch.no_grad():
            correct += (f(x_adv).argmax(1) == yb).sum().item()
    model.train()
    return correct / xg.shape[0]


def _inner_max(f, x: torch.Tensor, start: torch.Tensor, eps: float, step_size: float, steps: int,
               objective: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Projected signed-gradient ascent of ``objective(f(x'))`` over the ε-ball around ``x`` ∩ [0, 1]
    from ``x + start``: ``x' ← Π(x' + step_size · sign(∇ objective))``, ``steps`` times.

    Gradients are taken with ``torch.autograd.grad`` (the model's parameter gradients are not
    touched). With ``eps = 0`` the result is ``x`` bit for bit (the projection is exact)."""
    x = x.detach()
    x_adv = project_linf(x + start, x, eps)
    for _ in range(steps):
        x_req = x_adv.clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(objective(f(x_req)), x_req)
        x_adv = project_linf(x_adv + step_size * grad.sign(), x, eps)
    return x_adv


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
                     progress, grad_clip=None, transform=None, adv: AdversarialTraining | None = None,
                     attacked=None) -> tuple[float, float, float | None]:
    """One pass over a seeded permutation of the data; returns (mean loss, accuracy, robust
    accuracy or None); see :class:`History` for what each is under adversarial training."""
    from tqdm.auto import tqdm

    model.train()
    n = x.shape[0]
    order = torch.randperm(n, generator=_epoch_generator(seed, epoch, 0))
    aug_gen = _epoch_generator(seed, epoch, 1)
    adv_gen = _epoch_generator(seed, epoch, 2) if adv is not None else None
    total_loss, correct, robust = 0.0, 0, 0
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
        if adv is not None:
            loss, clean_ok, robust_ok = _adversarial_loss(model, attacked, xb, yb, adv, epoch, adv_gen,
                                                          transform, dev)
            correct += clean_ok
            robust += robust_ok
        else:
            if transform is not None:
                xb = _apply_transform(transform, xb, xb.shape[0], dev)
            logits = model(xb)  # (B, n_classes)
            loss = F.cross_entropy(logits, yb)
            correct += (logits.argmax(1) == yb).sum().item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(idx)
        if progress and i % 20 == 0:
            seen = min(lo + batch_size, n)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}",
                            **({"rob": f"{robust / seen:.4f}"} if adv is not None else {}))
    return total_loss / n, correct / n, (robust / n if adv is not None else None)


def _adversarial_loss(model, attacked, xb, yb, adv: AdversarialTraining, epoch: int, gen: torch.Generator,
                      transform, dev) -> tuple[torch.Tensor, int, int]:
    """(training loss, clean correct, robust correct) of one batch under adversarial training.

    The inner maximisation runs in eval mode against ``attacked`` (the defended classifier under
    the threat model) or the bare model; the step's forward passes run in train mode. The random
    start is drawn from ``gen`` (CPU) for every batch, whatever ε, so the stream is the same for
    any ε."""
    eps, step = adv.eps_at(epoch), adv.step_size_at(epoch)
    f = model if attacked is None else attacked
    model.eval()
    xt = _apply_transform(transform, xb, xb.shape[0], dev) if transform is not None else xb
    if adv.method == "trades":
        start = 0.001 * torch.randn(xb.shape, generator=gen, dtype=xb.dtype).to(dev)
        with torch.no_grad():
            p_clean = F.softmax(model(xt), dim=1)  # (B, K), the fixed target of the inner KL

        def objective(logits):
            return F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="sum")
    else:
        start = ((torch.rand(xb.shape, generator=gen, dtype=xb.dtype) * 2 - 1) * eps).to(dev)
        with torch.no_grad():
            clean_ok = (model(xt).argmax(1) == yb).sum().item()

        def objective(logits):
            return F.cross_entropy(logits, yb, reduction="sum")
    x_adv = _inner_max(f, xb, start, eps, step, adv.n_steps, objective)
    model.train()
    xa = _apply_transform(transform, x_adv, x_adv.shape[0], dev) if transform is not None else x_adv
    if adv.method == "trades":  # clean forward first, as the authors' code (batch-norm statistics)
        logits_clean = model(xt)  # (B, n_classes)
        logits_adv = model(xa)
        loss = trades_loss(logits_clean, logits_adv, yb, adv.trades_beta)
        clean_ok = (logits_clean.argmax(1) == yb).sum().item()
    else:
        logits_adv = model(xa)  # (B, n_classes)
        loss = F.cross_entropy(logits_adv, yb)
    return loss, clean_ok, (logits_adv.argmax(1) == yb).sum().item()


def _summary(h: History, epochs: int, val_name: str = "val") -> str:
    e = h.epochs
    line = f"epoch {e}/{epochs}: loss {h.loss[-1]:.4f} acc {h.accuracy[-1]:.4f}"
    if len(h.robust_accuracy) == e:
        line += f" robust_acc {h.robust_accuracy[-1]:.4f} eps {h.eps[-1]:.4g}"
    if len(h.guard_accuracy) == e:
        line += f" guard_pgd_acc {h.guard_accuracy[-1]:.4f}"
    if h.val_loss:
        line += f" {val_name}_loss {h.val_loss[-1]:.4f} {val_name}_acc {h.val_accuracy[-1]:.4f}"
    return line + f" lr {h.lr[-1]:.2e} {h.seconds[-1]:.1f}s"


def _save_resume(path, fingerprint, epoch, model, optimizer, scheduler, history, dev, adversarial=None,
                 guard: _Guard | None = None) -> None:
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
    if adversarial is not None:  # the record (method, eps, steps, step size, threat, defence) and the guard
        state["adversarial"] = adversarial
    if guard is not None:
        state["guard"] = guard.state()
    atomic_torch_save(path, state)


def _load_resume(path, fingerprint, model, optimizer, scheduler, history, dev, guard: _Guard | None = None) -> int:
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
        if isinstance(values, list):
            getattr(history, key).extend(values)
        else:
            setattr(history, key, values)
    # a state written before ddl kept CPU time: its epochs' CPU time is unknown
    history.cpu_seconds[:0] = [None] * (len(history.seconds) - len(history.cpu_seconds))
    if guard is not None:
        guard.load(state["guard"])
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
