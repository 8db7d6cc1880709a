"""The robustness evaluation's cache: what an entry's key holds, and verified chunk entries.

One entry is the per-image survival of one attack at one ε on one chunk of images
``[start, stop)``: a small JSON file with a record beside it (``<file>.entry.json``), written and
checked by :mod:`ddl._io` exactly as the pipeline's stages are (``write_entry_record`` /
``check_entry``: size and SHA-256 of the bytes, stage, key). An entry that fails the check is
reported on stderr, deleted and recomputed; a file without a record (a run killed between the
two writes) is recomputed.

The key of an entry is the SHA-256 of everything its survival depends on (:func:`evaluation_inputs`
plus the attack, ε and chunk): the caller's ``cache_key`` and the SHA-256 of the images, labels,
model and defence themselves (so a wrong ``cache_key`` cannot make a stale entry look valid), the
ordered attack list (under cascade an attack only sees the survivors of those before it), every
budget, β, EOT samples, the cascade flag, the OMP kernel that codes the patches
(``ddl.sparse.kernel_name``) and the device.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: bump when the survival of an entry would change for the same inputs (a new seeding scheme)
# v3: AutoAttack's attacks seeded per image. Running APGD and Square batched with each image's
# own generator kept v3: it draws the same numbers per image as one image at a time (tested bit
# for bit against pyautoattack on each image alone; bench/autoattack_batching.py on a real case).
RNG_SCHEME = "per-image-v3"
STAGE = "robustness"

__all__ = ["RNG_SCHEME", "STAGE", "defence_sha256", "entry_key", "evaluation_inputs",
           "load_entry", "module_sha256", "omp_kernel_name", "save_entry", "tensor_sha256"]


def _update_tensor(h, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def tensor_sha256(t: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    h = hashlib.sha256()
    _update_tensor(h, t)
    return h.hexdigest()


def module_sha256(module: nn.Module | None) -> str:
    """SHA-256 of a module's state: for every submodule its class, its ``get_params()`` (when it
    has one: the purifiers, the denoiser), its tensor attributes (a fitted ``dictionary_``) and
    its parameters and buffers. ``"none"`` for None.

    It is the hash of what the module computes with, not of a file: a
    :class:`~ddl.defence.DictionaryDenoiser` loaded from a file and the one that saved it hash
    the same, whatever ddl version wrote the file."""
    if module is None:
        return "none"
    h = hashlib.sha256()
    for name, sub in module.named_modules():
        h.update(f"[{name}] {type(sub).__module__}.{type(sub).__qualname__}".encode())
        if callable(getattr(sub, "get_params", None)):
            h.update(json.dumps(sub.get_params(), sort_keys=True, default=str).encode())
        for attr, value in sorted(vars(sub).items()):
            if isinstance(value, Tensor) and not attr.startswith("_"):   # not a private cache
                h.update(attr.encode())
                _update_tensor(h, value)
        for attr, value in list(sub.named_parameters(recurse=False)) + list(sub.named_buffers(recurse=False)):
            h.update(attr.encode())
            _update_tensor(h, value)
    return h.hexdigest()


defence_sha256 = module_sha256


def omp_kernel_name(device) -> str:
    """The OMP kernel that codes patches on ``device`` (``"native"`` or ``"torch"``)."""
    from ddl.sparse.kernel import kernel_name

    return kernel_name(device)


def evaluation_inputs(*, cache_key: str, model: nn.Module, defence: nn.Module | None, x: Tensor,
                      y: Tensor, attacks: list[str], params: dict[str, Any]) -> dict[str, Any]:
    """What every entry of one evaluation depends on (its record's ``inputs``)."""
    return {"cache_key": cache_key, "images_sha256": tensor_sha256(x), "labels_sha256": tensor_sha256(y),
            "model_sha256": module_sha256(model), "defence_sha256": defence_sha256(defence),
            "omp_kernel": omp_kernel_name(x.device) if defence is not None else "none",
            "device": x.device.type, "attacks": list(attacks), "rng": RNG_SCHEME,
            **{k: params[k] for k in sorted(params)}}


def entry_key(inputs: dict[str, Any], name: str, eps: float, start: int, stop: int) -> str:
    """SHA-256 of one entry: the evaluation's inputs, the attack ``name``, ``eps`` and the chunk."""
    blob = json.dumps({**inputs, "entry": name, "eps": repr(float(eps)), "images": [start, stop]},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def entry_path(folder: Path, cache_key: str, key: str, name: str, eps: float, start: int,
               stop: int) -> Path:
    safe = name.replace(":", "_")
    return folder / f"{cache_key}-{safe}-{float(eps)!r}-{start}-{stop}-{key[:12]}.json"


def load_entry(path: Path, *, key: str, n: int) -> tuple[Tensor, float, float | None] | None:
    """``(survival (n,) bool, seconds, cpu_seconds)`` of a verified entry (``cpu_seconds`` None in
    an entry written before ddl kept it), or None (missing, unrecorded, or failed: then deleted
    after a one-line warning, to be recomputed)."""
    from ddl._io import _warn, check_entry, remove_entry

    state, record, reason = check_entry(path, key=key, stage=STAGE)
    if state == "ok":
        try:
            blob = json.loads(path.read_text())
            survival = blob["survival"]
            if len(survival) == n and all(v in (0, 1) for v in survival):
                cpu = record.get("cpu_seconds")
                return (torch.tensor(survival, dtype=torch.bool), float(record.get("seconds", 0.0)),
                        None if cpu is None else float(cpu))
            reason = f"it holds {len(survival)} survival bits, expected {n}"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = f"it cannot be read ({type(exc).__name__})"
    if state in ("ok", "bad"):
        _warn(f"warning: cache entry {path} failed verification: {reason}; recomputing it")
        remove_entry(path)
    return None


def save_entry(path: Path, *, key: str, inputs: dict[str, Any], name: str, eps: float,
               start: int, stop: int, attacked: list[int], survival: Tensor, seconds: float,
               cpu_seconds: float) -> None:
    """Write one entry and then its record (``ddl._io.write_entry_record``)."""
    from ddl._io import atomic_write_json, write_entry_record

    atomic_write_json(path, {"attack": name, "eps": float(eps), "images": [start, stop],
                             "attacked": attacked, "survival": [int(v) for v in survival.tolist()]})
    write_entry_record(path, key=key, stage=STAGE, inputs=inputs, seconds=seconds,
                       cpu_seconds=cpu_seconds, attack=name, eps=float(eps), images=[start, stop])
