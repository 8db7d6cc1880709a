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
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ddl.errors import DDLError

__all__ = ["BadFileError", "WrongTypeError", "check_bool", "check_choice", "check_images", "check_int",
           "check_int_pair", "check_labels", "check_number", "check_optional_int", "check_optional_number",
           "close_match", "describe", "is_int", "is_real", "load_torch_file", "require_keys"]


class BadFileError(DDLError, ValueError):
    """A file given by the user cannot be read, or does not hold what it should."""


class WrongTypeError(TypeError, ValueError):
    """A value of the wrong type (``2.0`` for an int, ``1`` for a flag).

    Both a ``TypeError`` and a ``ValueError``: the checks these rules replaced raised one or the
    other, and callers catch either."""


def is_int(value: Any) -> bool:
    """An int or a NumPy integer (``numbers.Integral``), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _bounds_rule(kind: str, low: Any, high: Any, low_open: bool = False, high_open: bool = False) -> str:
    """``"an int in [1, 8]"``, ``"a finite number > 0"``, ``"an int"``: ``kind`` and its bounds."""
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high}"
    return kind


def _int_rule(low: int | None, high: int | None, odd: bool = False, high_name: str | None = None) -> str:
    shown = high if high is None or high_name is None else f"{high_name}={high}"
    return _bounds_rule("an odd int" if odd else "an int", low, shown)


def check_int(where: str, name: str, value: Any, low: int | None = None, high: int | None = None,
              *, odd: bool = False, high_name: str | None = None) -> int:
    """``int(value)`` if it is an int (not a bool; a NumPy integer becomes a Python int) in
    ``[low, high]`` (either bound may be None), and odd with ``odd`` (window sizes).

    ``high_name`` says where ``high`` comes from: ``check_int("omp", "n_nonzero_coefs", 25, 1, 24,
    high_name="n_components")`` → ``omp: n_nonzero_coefs must be an int in [1, n_components=24]; got 25.``"""
    rule = _int_rule(low, high, odd, high_name)
    if not is_int(value):
        raise WrongTypeError(f"{where}: {name} must be {rule}; got {value!r}.")
    if (low is not None and value < low) or (high is not None and value > high) or (odd and value % 2 == 0):
        raise ValueError(f"{where}: {name} must be {rule}; got {value!r}.")
    return int(value)


def check_int_pair(where: str, name: str, value: Any, low: int = 1) -> tuple[int, int]:
    """``(value, value)`` for an int, or ``tuple(value)`` for a pair (tuple or list) of ints, every
    int ``>= low`` (patch sizes and steps: ``8`` or ``(8, 4)``), as Python ints.

    Not an int nor a pair of ints (``2.5``, ``(8, 8, 8)``, ``True``): :class:`WrongTypeError`;
    an int below ``low``: ``ValueError``."""
    pair = (value, value) if is_int(value) else value
    message = f"{where}: {name} must be an int >= {low} or a pair of them; got {value!r}."
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(is_int(v) for v in pair)):
        raise WrongTypeError(message)
    if min(pair) < low:
        raise ValueError(message)
    return int(pair[0]), int(pair[1])


def check_bool(where: str, name: str, value: Any) -> bool:
    """``value`` if it is a bool (:class:`WrongTypeError` otherwise: 1 and "yes" are not flags)."""
    if not isinstance(value, bool):
        raise WrongTypeError(f"{where}: {name} must be a bool; got {value!r}.")
    return value


def check_optional_int(where: str, name: str, value: Any, low: int | None = None,
                       high: int | None = None) -> int | None:
    """``None``, or ``int(value)`` checked by :func:`check_int`."""
    return None if value is None else check_int(where, name, value, low, high)


def is_real(value: Any) -> bool:
    """A real number (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _number_rule(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    return _bounds_rule("a finite number", low, high, low_open, high_open)


def _finite(value: Any) -> bool:
    """``math.isfinite``, except that an int too large for a float is not finite (instead of an
    ``OverflowError``: ``10**400``)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _number_ok(value: Any, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    return (_finite(value)
            and (low is None or (value > low if low_open else value >= low))
            and (high is None or (value < high if high_open else value <= high)))


def check_number(where: str, name: str, value: Any, low: float | None = None, high: float | None = None,
                 *, low_open: bool = False, high_open: bool = False) -> float:
    """``float(value)`` if it is a finite real number in ``[low, high]`` (``(low`` with ``low_open``,
    ``high)`` with ``high_open``); bools and NaN are refused."""
    rule = _number_rule(low, high, low_open, high_open)
    if not is_real(value):
        raise WrongTypeError(f"{where}: {name} must be {rule}; got {value!r}.")
    if not _number_ok(value, low, high, low_open, high_open):
        raise ValueError(f"{where}: {name} must be {rule}; got {value!r}.")
    return float(value)


def check_optional_number(where: str, name: str, value: Any, low: float | None = None,
                          high: float | None = None, *, low_open: bool = False,
                          high_open: bool = False) -> float | None:
    """``None``, or ``float(value)`` checked as by :func:`check_number`; the message says that
    None is allowed (``fit: grad_clip must be None or a finite number > 0; got 0.0.``)."""
    if value is None:
        return None
    rule = f"None or {_number_rule(low, high, low_open, high_open)}"
    if not is_real(value):
        raise WrongTypeError(f"{where}: {name} must be {rule}; got {value!r}.")
    if not _number_ok(value, low, high, low_open, high_open):
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


def _dtype_name(dtype: Any) -> str:
    """``"float32"`` for ``torch.float32`` (and for ``np.float32``)."""
    return str(dtype).removeprefix("torch.")


def describe(value: Any) -> str:
    """What a value is, for the "got ..." part of a message: ``"float64 tensor of shape (2, 3)"``,
    ``"uint8 numpy array of shape (2, 3)"``, or the type name (``"list"``)."""
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
        return f"{_dtype_name(value.dtype)} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"{value.dtype} numpy array of shape {value.shape}"
    return type(value).__name__


def _image_rule(dtype: Any, value_range: tuple[float, float] | None, nonempty: bool,
                range_from: str | None) -> str:
    kind = "a floating-point tensor" if dtype is None else f"a {_dtype_name(dtype)} tensor"
    conditions = ["every size >= 1"] if nonempty else []
    if value_range is not None:
        conditions.append(f"values in [{value_range[0]:g}, {value_range[1]:g}]"
                          + (f" ({range_from})" if range_from else ""))
    return f"{kind} of shape (N, C, H, W)" + (f" with {' and '.join(conditions)}" if conditions else "")


def check_images(where: str, name: str, x: Any, *, value_range: tuple[float, float] | None = (0.0, 1.0),
                 dtype: Any = None, nonempty: bool = False, range_from: str | None = None) -> Any:
    """``x`` if it is a batch of images: a floating-point ``torch.Tensor`` of shape (N, C, H, W).

    Parameters
    ----------
    value_range : (lo, hi) or None, default (0.0, 1.0)
        Every value must lie in ``[lo, hi]`` (NaN is refused); the message reports the min and
        max found. None checks no values (and the message promises none).
    dtype : torch.dtype, optional
        The one dtype accepted (``torch.float32``); by default any floating-point dtype.
    nonempty : bool, default False
        Every size (N, C, H and W) must be >= 1.
    range_from : str, optional
        Where ``value_range`` comes from, for the message (``"the clip range"``).

    A value that is not such a tensor (not a tensor, another dtype, another shape) raises
    :class:`WrongTypeError` (the checks this replaced raised a ``TypeError`` for some of these and
    a ``ValueError`` for others), one with values outside the range a ``ValueError``::

        f: x must be a floating-point tensor of shape (N, C, H, W) with values in [0, 1]; got float64 tensor of shape (2, 3).
        f: x must be a floating-point tensor of shape (N, C, H, W) with values in [0, 1]; got float32 tensor of shape (2, 1, 4, 4) with values in [-0.5, 1].
    """
    import torch

    rule = _image_rule(dtype, value_range, nonempty, range_from)
    at = f"{where}: {name} must be {rule}; got"
    if not isinstance(x, torch.Tensor):
        raise WrongTypeError(f"{at} {describe(x)}.")
    if not x.is_floating_point():
        raise WrongTypeError(f"{at} {describe(x)} (convert with ddl.data.to_float_images or "
                             f"{name}.float() / 255).")
    if dtype is not None and x.dtype != dtype:
        raise WrongTypeError(f"{at} {describe(x)} (convert with {name}.to(torch.{_dtype_name(dtype)})).")
    if x.ndim != 4 or (nonempty and 0 in x.shape):
        raise WrongTypeError(f"{at} {describe(x)}.")
    if value_range is not None and x.numel():
        if bool(torch.isnan(x).any()):
            raise ValueError(f"{at} {describe(x)} with NaN values.")
        lo, hi = float(x.min()), float(x.max())
        if lo < value_range[0] or hi > value_range[1]:
            raise ValueError(f"{at} {describe(x)} with values in [{lo:.6g}, {hi:.6g}].")
    return x


def check_labels(where: str, name: str, y: Any, n: int, n_classes: int | None = None, *,
                 per: str | None = None, classes_from: str | None = None, allow_int: bool = False) -> Any:
    """``y`` if it is class labels: an int64 ``torch.Tensor`` of shape ``(n,)`` with values in
    ``[0, n_classes)`` (any values when ``n_classes`` is None).

    Parameters
    ----------
    per : str, optional
        What each label goes with, for the message (``"image of x"`` → "(one per image of x)").
    classes_from : str, optional
        Where ``n_classes`` comes from, for the message (``"the model has 10 outputs"``).
    allow_int : bool, default False
        Accept an int as well, and return it as ``torch.full((n,), y)`` (one class for all).

    A value that is not such a tensor (not a tensor, another dtype, another shape) raises
    :class:`WrongTypeError`, one with labels outside ``[0, n_classes)`` a ``ValueError``::

        fit: y must be an int64 tensor of shape (4,) (one per image of x); got int32 tensor of shape (4,).
    """
    import torch

    rule = ("an int or " if allow_int else "") + f"an int64 tensor of shape ({n},)"
    rule += f" (one per {per})" if per else ""
    if n_classes is not None:
        rule += f" with values in [0, {n_classes})" + (f" ({classes_from})" if classes_from else "")
    at = f"{where}: {name} must be {rule}; got"
    if allow_int and is_int(y):
        if n_classes is not None and not 0 <= y < n_classes:
            raise ValueError(f"{at} {y!r}.")
        return torch.full((n,), int(y), dtype=torch.int64)
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (n,):
        raise WrongTypeError(f"{at} {describe(y)}.")
    if n_classes is not None and n:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"{at} {describe(y)} with values in [{lo}, {hi}].")
    return y


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
