"""Checks of values and files a user passes in: one helper per rule, one message style.

Every message names where the value entered (a function or a command), the parameter, the rule
and the value received (STYLE.md §3.6)::

    DefenceConfig: n_nonzero_coefs must be an int in [1, 8]; got 9.
    ddl denoise: --input runs/adv.pt is not a readable torch file (corrupt, truncated, or not written by torch.save).

Argument order is always ``(where, name, value, rule...)``. The checks return the value (converted
where the rule says so), so a caller writes ``eps = check_number("fgsm", "eps", eps, low=0)``.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ddl.errors import DDLError

__all__ = ["BadFileError", "check_bool", "check_choice", "check_int", "check_number", "check_optional_int",
           "close_match", "load_torch_file", "require_keys"]


class BadFileError(DDLError, ValueError):
    """A file given by the user cannot be read, or does not hold what it should."""


def _is_int(value: Any) -> bool:
    """An int or a NumPy integer (``numbers.Integral``), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(where: str, name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]`` (either bound may be None)."""
    ok = _is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        if low is not None and high is not None:
            rule = f"an int in [{low}, {high}]"
        elif low is not None:
            rule = f"an int >= {low}"
        elif high is not None:
            rule = f"an int <= {high}"
        else:
            rule = "an int"
        raise ValueError(f"{where}: {name} must be {rule}; got {value!r}.")
    return value


def check_bool(where: str, name: str, value: Any) -> bool:
    """``value`` if it is a bool (``TypeError`` otherwise: 1 and "yes" are not flags)."""
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be a bool; got {value!r}.")
    return value


def check_optional_int(where: str, name: str, value: Any, low: int | None = None,
                       high: int | None = None) -> int | None:
    """``None``, or ``value`` checked by :func:`check_int`."""
    return None if value is None else check_int(where, name, value, low, high)


def check_number(where: str, name: str, value: Any, low: float | None = None, high: float | None = None,
                 *, low_open: bool = False) -> float:
    """``float(value)`` if it is a finite real number in ``[low, high]`` (``(low, high]`` with
    ``low_open``); bools and NaN are refused."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low)) and (high is None or value <= high)
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
        if low is not None and high is not None:
            rule = f"a finite number in {lo}, {high}]"
        elif low is not None:
            rule = f"a finite number {'>' if low_open else '>='} {low}"
        elif high is not None:
            rule = f"a finite number <= {high}"
        else:
            rule = "a finite number"
        raise ValueError(f"{where}: {name} must be {rule}; got {value!r}.")
    return float(value)


def close_match(value: Any, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""`` when none is close."""
    if not isinstance(value, str):
        return ""
    match = difflib.get_close_matches(value.lower(), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_choice(where: str, name: str, value: Any, choices: Iterable) -> Any:
    """``value`` if it is one of ``choices``; the message suggests the closest choice."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{where}: {name} must be one of {', '.join(map(str, choices))}; got {value!r}"
                         f"{close_match(value, map(str, choices))}.")
    return value


def load_torch_file(path: str | os.PathLike, *, where: str, what: str, map_location: str = "cpu") -> Any:
    """Read a ``torch.save`` file weights-only (tensors, numbers, strings and containers).

    Every way the file can be unreadable becomes one :class:`BadFileError` that says so: no file,
    a folder, an empty, truncated or random-bytes file, a text file, a file that holds Python
    objects. ``torch.load`` itself raises a different exception for each (``EOFError``,
    ``KeyError``, ``IndexError``, ``OSError``, ``RuntimeError``, ``UnpicklingError``), and for
    the last one advises ``weights_only=False``, which would execute code from the file: we never
    give that advice.

    Parameters
    ----------
    path : path
    where : str
        Who reads the file, for the message (``"load_checkpoint"``; ``""`` when ``what`` says it,
        as the CLI's ``"--input"``).
    what : str
        What the file is, for the message (``"--input"``, ``"checkpoint"``).
    """
    import torch

    path = Path(path)
    at = f"{where}: {what}" if where else what
    if not path.exists():
        raise BadFileError(f"{at} {path} does not exist.")
    if not path.is_file():
        raise BadFileError(f"{at} {path} is not a file.")
    if path.stat().st_size == 0:
        raise BadFileError(f"{at} {path} is empty (0 bytes), e.g. a copy or download that was "
                           f"interrupted; write it again.")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before failing on them
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if zipfile.is_zipfile(path) and "weights only" in str(exc).lower():
            raise BadFileError(
                f"{at} {path} holds Python objects other than tensors, numbers, strings "
                f"and containers; ddl reads only such plain files and will not run code from a file."
            ) from None
        raise BadFileError(_corrupt(at, path)) from None
    except (EOFError, KeyError, IndexError, OSError, RuntimeError, ValueError, AttributeError,
            TypeError, zipfile.BadZipFile, UnicodeDecodeError):
        # torch.load's reaction to bytes that are not a torch file depends on the bytes
        raise BadFileError(_corrupt(at, path)) from None


def _corrupt(at: str, path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(512)
    kind = "a text file" if head and _looks_like_text(head) else "corrupt or truncated"
    return (f"{at} {path} is not a readable torch file ({kind}, {path.stat().st_size} bytes; "
            f"expected a file written by torch.save).")


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def require_keys(where: str, what: str, path: str | os.PathLike, blob: Any, keys: Iterable[str],
                 *, any_of: bool = False) -> None:
    """Raise :class:`BadFileError` unless ``blob`` is a dict holding ``keys`` (one of them with
    ``any_of``)."""
    keys = tuple(keys)
    at = f"{where}: {what}" if where else what
    if not isinstance(blob, dict):
        raise BadFileError(f"{at} {path} holds a {type(blob).__name__}, not a dict with "
                           f"{' or '.join(map(repr, keys)) if any_of else ', '.join(map(repr, keys))}.")
    present = [k for k in keys if k in blob]
    if (any_of and not present) or (not any_of and len(present) < len(keys)):
        need = " or ".join(map(repr, keys)) if any_of else ", ".join(repr(k) for k in keys if k not in blob)
        have = ", ".join(map(repr, sorted(map(str, blob)))) or "nothing"
        raise BadFileError(f"{at} {path} lacks {need} (it holds {have}).")
