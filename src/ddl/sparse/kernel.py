"""Which OMP kernel runs on the CPU: the compiled C kernel or the pure-torch one.

The two give the same codes up to float rounding, not the same bits, and online dictionary
learning amplifies rounding (the tuned CIFAR-10 dictionary re-fitted with the C kernel instead
of the torch kernel changed 11.5 % of a ConvNet's denoised predictions). So the choice is
explicit, recorded with every result (:func:`ddl.provenance.machine_record`) and part of every
cache key of a fitted dictionary:

- ``set_omp_kernel("auto" | "native" | "torch")`` in Python;
- ``DDL_OMP_KERNEL=auto|native|torch`` in the environment (read at the first OMP call unless
  :func:`set_omp_kernel` was called; the older ``DDL_OMP_NATIVE=0`` still means ``torch``);
- ``--omp-kernel`` on every command that codes patches.

``"auto"`` (the default) uses the C kernel where it builds and loads, and otherwise the torch
kernel, saying so once per process on stderr with the reason (no compiler, a compiler that
failed or hung, an unsafe cache folder...). ``"native"`` refuses to run without the C kernel.
On CUDA the torch kernel always runs.
"""

from __future__ import annotations

import os
import sys
import threading

import torch

from ddl.errors import DDLError
from ddl.sparse import _omp_native as _native

__all__ = ["KERNELS", "get_omp_kernel", "kernel_name", "native_library", "set_omp_kernel"]

KERNELS = ("auto", "native", "torch")

_lock = threading.Lock()
_state: dict = {"choice": None, "noticed": False}


class KernelUnavailableError(DDLError, RuntimeError):
    """``native`` was asked for and the C kernel cannot be built or loaded here."""


def _check_choice(where: str, name: str, value) -> str:
    if not isinstance(value, str) or value.strip().lower() not in KERNELS:
        raise ValueError(f"{where}: {name} must be one of {', '.join(KERNELS)}; got {value!r}")
    return value.strip().lower()


def set_omp_kernel(kernel: str) -> str:
    """Choose the CPU OMP kernel for this process; returns the previous setting.

    ``"native"`` builds and loads the C kernel now and raises :class:`KernelUnavailableError`
    (with the reason) when it cannot.
    """
    kernel = _check_choice("set_omp_kernel", "kernel", kernel)
    if kernel == "native" and _native.load() is None:      # load first: no thread sees a
        raise KernelUnavailableError(                       # choice that cannot run
            f"set_omp_kernel: the native OMP kernel cannot be used here: {_native.reason()}")
    with _lock:
        previous = _state["choice"] or _from_env()
        _state["choice"] = kernel
    return previous


def get_omp_kernel() -> str:
    """The requested setting: ``"auto"``, ``"native"`` or ``"torch"``."""
    return _state["choice"] or _from_env()


def _from_env() -> str:
    value = os.environ.get("DDL_OMP_KERNEL")
    if value is not None and value.strip():
        return _check_choice("ddl", "the environment variable DDL_OMP_KERNEL", value)
    if os.environ.get("DDL_OMP_NATIVE", "").strip().lower() in ("0", "false", "no", "off"):
        return "torch"
    return "auto"


def native_library(device: str | torch.device = "cpu"):
    """The loaded C kernel if OMP on ``device`` is to run it, else None."""
    if torch.device(device).type != "cpu":
        return None
    choice = get_omp_kernel()
    if choice == "torch":
        return None
    lib = _native.load()
    if lib is None:
        if choice == "native":
            raise KernelUnavailableError(
                f"DDL_OMP_KERNEL=native: the native OMP kernel cannot be used here: "
                f"{_native.reason()}")
        with _lock:
            noticed, _state["noticed"] = _state["noticed"], True
        if not noticed:
            print(f"ddl: OMP runs the torch kernel (the C kernel is unavailable: "
                  f"{_native.reason()})", file=sys.stderr)
    return lib


def kernel_name(device: str | torch.device = "cpu") -> str:
    """``"native"`` when OMP on ``device`` runs the compiled C kernel here, else ``"torch"``.

    A dictionary fitted with one kernel is a different (equally good) fit from one fitted with
    the other, so cache keys and records of fitted dictionaries name the kernel.
    """
    return "native" if native_library(device) is not None else "torch"
