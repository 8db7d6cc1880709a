"""What produced a number: :func:`machine_record`, written into every results file.

A reviewer who gets another number on another machine must be able to see why. Floating-point
results depend on the code (ddl version, git commit), the torch build, the BLAS and the
instruction set it dispatches to (MKL picks AVX2 or AVX-512 code paths at run time), the OMP
kernel (compiled C or torch: not the same bits) and, for the C kernel, the compiler; the CPU
(model and the hash of its instruction-set flags) and the threads actually used.

``threadpoolctl`` (a scikit-learn dependency) names the BLAS libraries loaded in the process and
the architecture they chose; ``torch.__config__`` names torch's own BLAS and CPU capability.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["git_commit", "machine_record", "format_machine"]


_PINNED: dict[str, str | None] = {}


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit of the checkout ddl runs from (``+dirty`` when it has uncommitted changes to
    tracked files), or None when ddl is not run from a git checkout.

    For ddl's own checkout (``path`` None) the answer of the first call is kept for the life of
    the process: a long run records the code it started with, not a commit made while it ran.
    The CLI asks at start-up (:func:`pin`)."""
    if path is None:
        if "ddl" not in _PINNED:
            _PINNED["ddl"] = _git_commit(Path(__file__).resolve().parent)
        return _PINNED["ddl"]
    return _git_commit(Path(path))


def pin() -> None:
    """Record ddl's commit now (see :func:`git_commit`)."""
    git_commit()


def _git_commit(here: Path) -> str | None:
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        lines = rev.stdout.split()
        if rev.returncode != 0 or len(lines) != 2:
            return None
        root, head = lines
        # ddl installed inside someone else's repository (a venv in a project), or installed
        # (not editable) into a venv inside a ddl checkout, is not the checkout's code
        src = (Path(root) / "src" / "ddl").resolve()
        if here.resolve() != src and src not in here.resolve().parents:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if dirty.returncode != 0:
        return head + "+unknown"       # could not tell whether the tree is clean
    return head + ("+dirty" if dirty.stdout.strip() else "")


def _blas() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    if blas:
        out["torch_blas"] = blas.group(1)
    mkl = re.search(r"Math Kernel Library Version ([^\s]+)", config)
    if mkl:
        out["torch_mkl"] = mkl.group(1)
    try:
        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        pass
    try:
        from threadpoolctl import threadpool_info

        out["libraries"] = [
            {k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads")
             if lib.get(k) is not None}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]
    except ImportError:
        pass
    cbwr = os.environ.get("MKL_CBWR")
    if cbwr:
        out["MKL_CBWR"] = cbwr
    return out


def machine_record(device: str = "cpu") -> dict[str, Any]:
    """A JSON-ready dict of what produces numbers here (see the module docstring).

    Keys: ``ddl_version``, ``git_commit``, ``python``, ``platform``, ``torch``, ``blas``,
    ``omp_kernel`` (``requested``, ``used``, and for the C kernel ``compiler``), ``cpu``
    (``model``, ``flags_sha256``: the first 16 hex digits of the sorted flags' SHA-256),
    ``threads`` (torch intra-op and inter-op threads), ``device``.
    """
    import torch

    from ddl import __version__
    from ddl.sparse import _omp_native
    from ddl.sparse.kernel import get_omp_kernel, kernel_name

    cpu = _omp_native.cpu_info()
    used = kernel_name(device)
    kernel: dict[str, Any] = {"requested": get_omp_kernel(), "used": used}
    if used == "native":
        kernel["compiler"] = _omp_native.compiler_version()
        kernel["flags"] = " ".join(_omp_native.flags())
    elif _omp_native.reason():
        kernel["why_not_native"] = _omp_native.reason()
    return {
        "ddl_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "blas": _blas(),
        "omp_kernel": kernel,
        "cpu": {"model": cpu["model"], "machine": platform.machine(),
                "flags_sha256": hashlib.sha256(cpu["flags"].encode()).hexdigest()[:16],
                "cores": os.cpu_count()},
        "threads": {"torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads()},
        "device": str(device),
    }


def format_machine(m: dict[str, Any] | None) -> list[str]:
    """Lines that say what produced a result, for terminal and reports; old records (platform,
    torch, threads only) print what they have."""
    if not m:
        return ["machine: not recorded"]
    lines = []
    ver = m.get("ddl_version")
    if ver or m.get("git_commit"):
        lines.append(f"ddl {ver or '?'}" + (f" (commit {m['git_commit']})" if m.get("git_commit")
                                            else ""))
    blas = m.get("blas") or {}
    torch_line = f"torch {m.get('torch', '?')}"
    if blas.get("torch_blas"):
        torch_line += f", BLAS {blas['torch_blas']}" + (f" {blas['torch_mkl']}"
                                                         if blas.get("torch_mkl") else "")
    if blas.get("torch_cpu_capability"):
        torch_line += f" ({blas['torch_cpu_capability']})"
    libs = [f"{lib.get('internal_api')} {lib.get('version', '')} {lib.get('architecture', '')}".strip()
            for lib in blas.get("libraries", [])]
    if libs:
        torch_line += "; loaded BLAS: " + ", ".join(libs)
    lines.append(torch_line)
    k = m.get("omp_kernel")
    if isinstance(k, dict):
        kl = f"OMP kernel {k.get('used')} (asked: {k.get('requested')})"
        if k.get("compiler"):
            kl += f", compiler {k['compiler']}"
        if k.get("why_not_native"):
            kl += f"; not native: {k['why_not_native']}"
        lines.append(kl)
    elif k:
        lines.append(f"OMP kernel {k}")
    cpu = m.get("cpu")
    if isinstance(cpu, dict):
        lines.append(f"CPU {cpu.get('model')} ({cpu.get('machine')}, {cpu.get('cores')} cores, "
                     f"flags sha256 {cpu.get('flags_sha256')})")
    if m.get("platform"):
        lines.append(f"platform {m['platform']}")
    th = m.get("threads")
    if isinstance(th, dict):
        lines.append(f"threads: torch {th.get('torch')}, inter-op {th.get('interop')}")
    elif th is not None:
        lines.append(f"threads: {th}")
    if m.get("device"):
        lines.append(f"device {m['device']}")
    if "omp_kernel" not in m:
        lines.append("OMP kernel, compiler, CPU model and ddl commit: not recorded (written before "
                     "ddl recorded them; see the run folder's PROVENANCE.md where it has one)")
    return lines


if __name__ == "__main__":                       # python -m ddl.provenance
    import json

    json.dump(machine_record(), sys.stdout, indent=1)
    print()
