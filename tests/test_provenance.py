"""ddl.provenance: the machine fields every result records."""

import hashlib
from pathlib import Path
import subprocess

import torch

from ddl.provenance import format_machine, git_commit, machine_record
from ddl.sparse import _omp_native


def test_machine_record_fields(monkeypatch):
    monkeypatch.setenv("DDL_OMP_KERNEL", "torch")
    torch_threads = torch.get_num_threads()
    m = machine_record()
    assert m["torch"] == torch.__version__
    assert (m["omp_kernel"]["requested"], m["omp_kernel"]["used"]) == ("torch", "torch")
    assert m["threads"]["torch"] == torch_threads
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith(("flags", "Features")))
    expected = hashlib.sha256(" ".join(sorted(flags.split(":", 1)[1].split())).encode())
    assert m["cpu"]["flags_sha256"] == expected.hexdigest()[:16]
    assert m["blas"]["torch_blas"] in torch.__config__.show()


def test_native_kernel_names_its_compiler(monkeypatch):
    monkeypatch.setenv("DDL_OMP_KERNEL", "auto")
    if _omp_native.load() is None:                  # no compiler: says why
        assert machine_record()["omp_kernel"]["why_not_native"] == _omp_native.reason()
        return
    k = machine_record()["omp_kernel"]
    import os
    import shlex

    cc = shlex.split(os.environ.get("CC") or "cc")
    first = subprocess.run([*cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    assert k["used"] == "native" and k["compiler"] == first
    assert "-ffp-contract=off" in k["flags"].split()


def test_git_commit_of_this_checkout_and_of_no_checkout(tmp_path, monkeypatch):
    from ddl import provenance

    monkeypatch.setattr(provenance, "_PINNED", {})       # not the commit an earlier test pinned
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=__file__.rsplit("/", 2)[0]).stdout.strip()
    assert git_commit().split("+")[0] == head
    assert git_commit(tmp_path) is None
    # code inside the checkout but not its src/ddl (e.g. a non-editable install into a venv
    # inside the checkout) is not the checkout's code
    assert git_commit(Path(__file__).resolve().parent) is None


def test_format_machine_reads_old_and_new_records():
    assert format_machine(None) == ["machine: not recorded"]
    old = {"platform": "Linux-x", "torch": "2.13.0", "threads": 1, "device": "cpu"}
    assert format_machine(old) == ["torch 2.13.0", "platform Linux-x", "threads: 1", "device cpu",
                                   "OMP kernel, compiler, CPU model and ddl commit: not recorded (written "
                                   "before ddl recorded them; see the run folder's PROVENANCE.md where it "
                                   "has one)"]
    new = {"ddl_version": "0.1.0", "git_commit": "abc", "torch": "2.13.0",
           "blas": {"torch_blas": "mkl", "torch_cpu_capability": "AVX2"},
           "omp_kernel": {"requested": "auto", "used": "native", "compiler": "gcc 12"},
           "cpu": {"model": "Xeon", "machine": "x86_64", "cores": 2, "flags_sha256": "ff"},
           "threads": {"torch": 1, "interop": 2}}
    assert format_machine(new) == [
        "ddl 0.1.0 (commit abc)", "torch 2.13.0, BLAS mkl (AVX2)",
        "OMP kernel native (asked: auto), compiler gcc 12",
        "CPU Xeon (x86_64, 2 cores, flags sha256 ff)", "threads: torch 1, inter-op 2"]


def test_the_commit_is_the_one_the_process_started_with(monkeypatch):
    from ddl import provenance

    monkeypatch.setattr(provenance, "_PINNED", {})
    provenance.pin()
    first = provenance.git_commit()
    monkeypatch.setattr(provenance, "_git_commit", lambda here: "a later commit")
    assert provenance.git_commit() == first != "a later commit"
    assert provenance.machine_record()["git_commit"] == first
