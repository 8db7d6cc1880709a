"""Atomic file writing and safe tensor loading, shared by every module that writes results.

Every file is written under a temporary name in the destination folder and then renamed with
``os.replace``, so an interrupted run never leaves a half-written file that a later run would
trust. Tensor files are read with ``torch.load(..., weights_only=True)``: they can hold tensors,
numbers, strings, lists and dicts, never arbitrary objects.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (non-finite floats as null is *not* done: NaN stays NaN)."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to memory, then write atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def safe_torch_load(path: str | os.PathLike, *, map_location: str = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` (tensors and plain containers only)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safe_torch_load: no file at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
