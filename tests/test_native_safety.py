"""The C OMP kernel's loader: no compiled code from a folder or file someone else can write, one
build per instruction set, the same bits from two ISA builds, the kernel switch and its notice."""

import os
import shutil
import stat
import subprocess
import time

import numpy as np
import pytest
import torch

import ddl.sparse.omp as _omp_fn  # noqa: F401  (ddl.sparse.omp the attribute is the function)
from ddl.sparse import _omp_native as native
from ddl.sparse import kernel as kernel_mod
from ddl.sparse import set_omp_kernel, kernel_name, get_omp_kernel

import importlib

omp_module = importlib.import_module("ddl.sparse.omp")

HAS_CC = shutil.which(os.environ.get("CC") or "cc") is not None
needs_cc = pytest.mark.skipif(not HAS_CC, reason="needs a C compiler (CI and dev machines have one)")

_PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE* f = fopen("MARKER", "w"); if (f) { fputs("foreign code ran", f); fclose(f); }
}
"""


@pytest.fixture
def fresh(monkeypatch):
    """A loader that has tried nothing yet; restored afterwards."""
    saved = (native._lib, native._tried, native._reason)
    native._reset()
    yield native
    native._lib, native._tried, native._reason = saved


def _plant(folder, marker):
    """A library with a constructor, under the exact name ddl would load, in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    src = folder / "planted.c"
    src.write_text(_PLANTED.replace("MARKER", str(marker)))
    target = folder / native.library_name(native._compiler_argv())
    subprocess.run(["cc", "-shared", "-fPIC", str(src), "-o", str(target)], check=True)
    src.unlink()
    return target


def _home_unusable(monkeypatch, tmp_path):
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("HOME", str(blocker))
    monkeypatch.delenv("DDL_CACHE_DIR", raising=False)


@needs_cc
def test_world_writable_cache_dir_is_never_loaded(fresh, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "ran"
    folder = tmp_path / "cache" / "native"
    _plant(folder, marker)
    os.chmod(folder, 0o777)
    monkeypatch.setenv("DDL_CACHE_DIR", str(tmp_path / "cache"))
    lib = fresh.load()
    assert not marker.exists()
    assert lib is not None and hasattr(lib.cdll, "omp_float")     # built privately instead
    err = capsys.readouterr().err
    assert "writable by its group or others (mode 0777)" in err and err.count("\n") == 1


@needs_cc
def test_world_writable_home_cache_is_never_loaded(fresh, tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    home = tmp_path / "home"
    _plant(home / ".cache" / "ddl" / "native", marker)
    for sub in (home / ".cache", home / ".cache" / "ddl", home / ".cache" / "ddl" / "native"):
        os.chmod(sub, 0o777)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DDL_CACHE_DIR", raising=False)
    assert fresh.load() is not None and not marker.exists()


@needs_cc
def test_the_old_shared_temporary_folder_is_never_read(fresh, tmp_path, monkeypatch):
    """HOME unusable, no DDL_CACHE_DIR: the build goes to a private mkdtemp folder, never to
    <tmp>/ddl-native-<uid> that another user could have prepared."""
    marker = tmp_path / "ran"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    shared = tmp / f"ddl-native-{os.getuid()}"
    _plant(shared, marker)
    os.chmod(shared, 0o777)
    _home_unusable(monkeypatch, tmp_path)
    assert fresh.load() is not None and not marker.exists()
    assert sorted(p.name for p in tmp.iterdir()) == [shared.name]     # the private one is gone


@needs_cc
def test_foreign_owned_folder_is_refused(fresh, tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    folder = tmp_path / "cache" / "native"
    _plant(folder, marker)
    os.chmod(folder, 0o700)
    monkeypatch.setenv("DDL_CACHE_DIR", str(tmp_path / "cache"))
    if os.getuid() == 0:
        os.chown(folder, 65534, 65534)        # really another user's folder
    else:
        monkeypatch.setattr(native, "_uid", lambda: os.getuid() + 1)   # then everything is foreign
    with pytest.raises(native.UnsafePath, match=r"is owned by uid \d+, not by this user"):
        native.check_private(str(folder), directory=True)
    fresh.load()
    assert not marker.exists()


@needs_cc
@pytest.mark.parametrize("how", ["world-writable file", "link"])
def test_planted_file_in_a_private_folder_is_refused(fresh, tmp_path, monkeypatch, how):
    marker = tmp_path / "ran"
    folder = tmp_path / "cache" / "native"
    elsewhere = _plant(tmp_path / "elsewhere", marker)
    folder.mkdir(parents=True, mode=0o700)
    target = folder / elsewhere.name
    if how == "link":
        target.symlink_to(elsewhere)
    else:
        shutil.copy(elsewhere, target)
        os.chmod(target, 0o666)
    monkeypatch.setenv("DDL_CACHE_DIR", str(tmp_path / "cache"))
    assert fresh.load() is not None and not marker.exists()


def test_private_folder_rules(tmp_path):
    ok = tmp_path / "ok"
    ok.mkdir(mode=0o700)
    native.check_private(str(ok), directory=True)
    group = tmp_path / "group"
    group.mkdir()
    os.chmod(group, 0o770)
    with pytest.raises(native.UnsafePath, match=r"group/?.*mode 0770|group or others \(mode 0770\)"):
        native.check_private(str(group), directory=True)
    open_parent = tmp_path / "open"
    (open_parent / "inner").mkdir(parents=True, mode=0o700)
    os.chmod(open_parent, 0o777)                         # others could rename 'inner' away
    with pytest.raises(native.UnsafePath, match="writable by its group or others and not sticky"):
        native.check_private(str(open_parent / "inner"), directory=True)
    os.chmod(open_parent, 0o775)                         # group members could rename it too
    with pytest.raises(native.UnsafePath, match=r"not sticky \(mode 0775\)"):
        native.check_private(str(open_parent / "inner"), directory=True)
    os.chmod(open_parent, 0o1777)                        # sticky, as /tmp: fine
    native.check_private(str(open_parent / "inner"), directory=True)


def test_cpu_flags_key_the_build_whatever_the_line_order(tmp_path, monkeypatch):
    a = tmp_path / "a"
    a.write_text("processor\t: 0\nmodel name\t: Same CPU\nflags\t\t: fpu sse2 avx2 avx512f\n")
    b = tmp_path / "b"
    b.write_text("processor\t: 0\nmodel name\t: Same CPU\nflags\t\t: fpu sse2 avx2\n")
    c = tmp_path / "c"
    c.write_text("flags\t\t: avx512f avx2 sse2 fpu\nmodel name\t: Same CPU\n")
    info = {p.name: native.cpu_info(str(p)) for p in (a, b, c)}
    assert info["a"] == {"model": "Same CPU", "flags": "avx2 avx512f fpu sse2"} == info["c"]
    names = {}
    for p in (a, b, c):
        monkeypatch.setattr(native, "cpu_info", lambda p=p: info[p.name])
        names[p.name] = native.library_name(["cc"])
    assert names["a"] == names["c"] != names["b"]


@needs_cc
def test_two_isa_builds_code_bit_identically(tmp_path, monkeypatch, rng):
    """A baseline x86-64 build (SSE2) and a -march=native build (AVX-512/FMA where the CPU has
    them) give the same bits: no contraction, no reassociation in the C code."""
    if os.uname().machine not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 only (the baseline ISA is x86-64)")
    folder = tmp_path / "builds"
    libs = {m: native.build_into(str(folder), march=m) for m in ("x86-64", "native")}
    # what ddl loaded before: FMAs wherever the CPU has them (the check below must see them)
    libs["contract"] = native.build_into(str(folder), march="native", fp_contract="fast")
    assert len({lib.cdll._name for lib in libs.values()}) == 3     # three different libraries
    D = rng.standard_normal((100, 49))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = rng.standard_normal((3000, 49)) @ np.diag(np.linspace(0.2, 2, 49))
    out = {}
    for march, lib in libs.items():
        monkeypatch.setattr(omp_module, "native_library", lambda device, lib=lib: lib)
        for dtype in (torch.float32, torch.float64):
            Xt, Dt = torch.as_tensor(X, dtype=dtype), torch.as_tensor(D, dtype=dtype)
            for k in (1, 2, 5, 10, 38):
                out[march, dtype, k] = (omp_module.omp(Xt, Dt, n_nonzero_coefs=k),
                                        omp_module.omp_reconstruct(Xt, Dt, n_nonzero_coefs=k,
                                                                   grad="none"))
    for dtype in (torch.float32, torch.float64):
        for k in (1, 2, 5, 10, 38):
            for a, b in zip(out["x86-64", dtype, k], out["native", dtype, k]):
                assert torch.equal(a, b), (dtype, k)
    cpu_has_fma = "fma" in native.cpu_info()["flags"].split()
    if cpu_has_fma:     # contraction changes the bits from k = 2 on (measured: 11-100 % of rows)
        assert not torch.equal(out["contract", torch.float64, 5][0], out["native", torch.float64, 5][0])


def test_set_omp_kernel_switch(monkeypatch):
    monkeypatch.delenv("DDL_OMP_KERNEL", raising=False)
    monkeypatch.delenv("DDL_OMP_NATIVE", raising=False)
    assert get_omp_kernel() == "auto"
    assert set_omp_kernel("torch") == "auto"
    assert kernel_name() == "torch" and get_omp_kernel() == "torch"
    with pytest.raises(ValueError, match=r"^set_omp_kernel: kernel must be one of auto, native, "
                                         r"torch; got 'c'$"):
        set_omp_kernel("c")
    assert get_omp_kernel() == "torch"


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("DDL_OMP_KERNEL", "torch")
    assert kernel_name() == "torch"
    monkeypatch.setenv("DDL_OMP_KERNEL", "fast")
    with pytest.raises(ValueError, match="DDL_OMP_KERNEL must be one of auto, native, torch; "
                                         "got 'fast'"):
        kernel_name()
    monkeypatch.delenv("DDL_OMP_KERNEL")
    monkeypatch.setenv("DDL_OMP_NATIVE", "0")            # the older switch still means torch
    assert get_omp_kernel() == "torch"


def test_auto_falls_back_with_one_notice_and_native_refuses(fresh, monkeypatch, capsys):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setitem(kernel_mod._state, "noticed", False)
    monkeypatch.setenv("DDL_OMP_KERNEL", "auto")
    X, D = torch.eye(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
    omp_module.omp(X, D, n_nonzero_coefs=1)
    assert kernel_name() == "torch"
    err = capsys.readouterr().err
    assert err == ("ddl: OMP runs the torch kernel (the C kernel is unavailable: no C compiler "
                   "(/nonexistent/cc is not on the PATH))\n")
    with pytest.raises(kernel_mod.KernelUnavailableError,
                       match=r"^set_omp_kernel: the native OMP kernel cannot be used here: no C "
                             r"compiler \(/nonexistent/cc is not on the PATH\)$"):
        set_omp_kernel("native")
    monkeypatch.setenv("DDL_OMP_KERNEL", "native")
    with pytest.raises(kernel_mod.KernelUnavailableError, match="^DDL_OMP_KERNEL=native"):
        omp_module.omp(X, D, n_nonzero_coefs=1)


@needs_cc
def test_compiler_with_arguments_works(fresh, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "cc -m64")
    monkeypatch.setenv("DDL_CACHE_DIR", str(tmp_path))
    assert fresh.load() is not None, fresh.reason()


def test_a_hanging_compiler_costs_one_timeout(fresh, tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    cc = tmp_path / "slowcc"
    cc.write_text(f"#!/bin/sh\necho x >> {calls}\nexec sleep 30\n")
    os.chmod(cc, 0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("DDL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_COMPILE_TIMEOUT_S", 1)
    start = time.perf_counter()
    assert fresh.load() is None
    assert time.perf_counter() - start < 10
    assert "did not finish in 1 s" in fresh.reason()
    assert calls.read_text().count("x") == 1


def test_cli_omp_kernel_option(fresh, monkeypatch, capsys, tmp_path):
    from ddl.cli import main

    monkeypatch.setenv("CC", "/nonexistent/cc")
    code = main(["demo", "--preset", "smoke", "--run-dir", str(tmp_path / "run"), "--quiet",
                 "--omp-kernel", "native"])
    assert code == 2
    assert capsys.readouterr().err == ("ddl demo: error: --omp-kernel native: the native OMP kernel cannot be "
                                       "used here: no C compiler "
                                       "(/nonexistent/cc is not on the PATH)\n")
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit):
        main(["demo", "--omp-kernel", "c"])
    assert "argument --omp-kernel: invalid choice: 'c'" in capsys.readouterr().err


def test_a_symlinked_cache_is_checked_where_it_really_is(tmp_path):
    open_folder = tmp_path / "open"
    (open_folder / "real" / "native").mkdir(parents=True, mode=0o700)
    os.chmod(open_folder / "real", 0o700)
    os.chmod(open_folder, 0o777)                    # others could rename 'real' away
    (tmp_path / "home").mkdir(mode=0o700)
    (tmp_path / "home" / "cache").symlink_to(open_folder / "real")
    with pytest.raises(native.UnsafePath, match="open .above .* writable by its group or others"):
        native.check_private(str(tmp_path / "home" / "cache" / "native"), directory=True)


def test_folders_are_created_private_whatever_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        native._private_folder(str(tmp_path / "a" / "b" / "native"))
    finally:
        os.umask(old)
    for p in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "native"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o700, p
