"""Model checkpoints: weights + a small metadata dict, written atomically, read weights-only.

A checkpoint is a ``torch.save``-d dict of plain values and tensors::

    {"format": "ddl-checkpoint-v1", "meta": {...}, "dtype": "float16" | "float32", "state_dict": {...}}

``meta`` always holds ``architecture``, ``input_shape`` and ``n_classes`` (enough to rebuild the
model with ``build_model``) and ``ddl_version``; the zoo adds ``dataset``, ``epochs``, ``seconds``,
``test_accuracy`` and ``preset``. Floating-point weights may be stored in float16 to keep files
small (a few MB); they are restored to float32 on load, so a float16 checkpoint holds the model
*after* rounding its weights to float16 — the zoo measures its accuracies on that rounded model.

Loading never unpickles arbitrary objects: ``torch.load(..., weights_only=True)`` refuses any
file that holds a class or function reference, and we turn that refusal (and every way a file
can be corrupt) into one clear error, never into advice to load it unsafely.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

import ddl
from ddl._io import atomic_torch_save
from ddl._validate import BadFileError, check_choice, load_torch_file
from ddl.models import MODELS, build_model

FORMAT = "ddl-checkpoint-v1"
REQUIRED_META = ("architecture", "input_shape", "n_classes")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def round_to_float16(model: nn.Module) -> nn.Module:
    """Round every floating-point parameter and buffer of ``model`` to float16 and back, in place.

    After this, saving with ``float16=True`` and loading gives exactly the same weights, so
    accuracies measured on the rounded model are the accuracies of the stored checkpoint.
    """
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


def _check_meta(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise TypeError(f"save_checkpoint: meta must be a dict; got {type(meta).__name__}.")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"save_checkpoint: meta must contain {', '.join(REQUIRED_META)}; missing {', '.join(missing)}.")
    check_choice("save_checkpoint", "meta['architecture']", meta["architecture"], sorted(MODELS))
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"save_checkpoint: meta must hold only JSON values (str, int, float, bool, None, list, dict); {exc}.") from exc
    return {**meta, "input_shape": list(meta["input_shape"]), "ddl_version": ddl.__version__}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any], *, float16: bool = True) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically.

    Parameters
    ----------
    path : path
        Destination file (folders are created); written under a temporary name, then renamed.
    model : nn.Module
        One of the ``MODELS`` architectures (its state dict must load into
        ``build_model(meta["architecture"], meta["input_shape"], meta["n_classes"])``).
    meta : dict
        JSON-style values; must contain "architecture", "input_shape", "n_classes". Conventional
        keys: "dataset", "epochs", "seconds", "test_accuracy" (fraction), "preset".
        "ddl_version" is set here to ``ddl.__version__``.
    float16 : bool, default True
        Store floating-point tensors as float16 (half the size; restored to float32 on load).

    Returns
    -------
    Path
        ``path``.
    """
    meta = _check_meta(meta)
    state = {k: (v.detach().cpu().half() if float16 and v.is_floating_point() else v.detach().cpu().clone())
             for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "meta": meta, "dtype": "float16" if float16 else "float32", "state_dict": state}
    return atomic_torch_save(path, payload)  # usual permissions: ddl._io applies the umask


def load_checkpoint(
    path: str | os.PathLike, *, device: str = "cpu", sha256: str | None = None,
    where: str = "load_checkpoint", what: str = "checkpoint",
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by ``save_checkpoint``.

    Parameters
    ----------
    path : path
    device : str, default "cpu"
    sha256 : str, optional
        Expected hex SHA-256 of the file (the zoo index passes it); a mismatch raises before
        anything is unpickled.
    where, what : str
        Who reads the file and what it is, for error messages (the CLI passes ``""`` and
        ``"--checkpoint"``).

    Returns
    -------
    model : nn.Module
        In eval mode, float32, on ``device``.
    meta : dict
        The stored metadata.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ddl._validate.BadFileError (a ValueError)
        SHA-256 mismatch (tampered or corrupt file); an empty, truncated, random or text file; a
        file that is not weights-only (it references classes or functions, which
        ``weights_only=True`` refuses to unpickle); a file that is not a ddl checkpoint or lacks
        its keys; weights that do not fit the architecture.
    """
    path = Path(path)
    prefix = f"{where}: " if where else ""
    if not path.is_file():
        raise FileNotFoundError(f"{prefix}no {what} at {path}." if where == "load_checkpoint"
                                else f"{prefix}{what} {path} does not exist.")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise BadFileError(
                f"{prefix}SHA-256 mismatch for {path}: expected {sha256}, got {actual}; "
                f"the file was changed or corrupted, refusing to load it."
            )
    payload = load_torch_file(path, where=where, what=what)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BadFileError(f"{prefix}{what} {path} is not a ddl checkpoint (expected format {FORMAT!r}, "
                           f"as written by `ddl train` or ddl.models.checkpoint.save_checkpoint).")
    meta, state = payload.get("meta"), payload.get("state_dict")
    if not isinstance(meta, dict) or not isinstance(state, dict) or any(k not in meta for k in REQUIRED_META):
        raise BadFileError(f"{prefix}{what} {path} is a damaged ddl checkpoint: it needs 'meta' with "
                           f"{', '.join(REQUIRED_META)} and 'state_dict'.")
    if meta["architecture"] not in MODELS or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadFileError(f"{prefix}{what} {path} is a damaged ddl checkpoint: architecture "
                           f"{meta['architecture']!r} (known: {', '.join(MODELS)}) or non-tensor weights.")
    try:
        model = build_model(meta["architecture"], tuple(meta["input_shape"]), meta["n_classes"])
    except (ValueError, TypeError) as exc:
        raise BadFileError(f"{prefix}{what} {path} has unusable metadata: {exc}") from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise BadFileError(f"{prefix}weights in {path} do not fit {meta['architecture']!r}: {first}") from None
    return model.to(device).eval(), meta
