"""Run folders: same inputs, same numbers, whatever happens to the process or the files (issue 14).

A TINY reproduction (``_run_folder_child.TINY``: synthetic images, an MLP, FGSM, JSMA, a sweep)
is run once uninterrupted in this process (the reference). Then: runs killed with SIGKILL at
chosen moments (between training epochs, half-way through a cache write, between a cache file
and its record, inside a results write, at a random time) and resumed; two processes on one
folder; edited, swapped and truncated cache files; a full disk; a read-only folder. Every run
must report exactly the reference's accuracies, confidences, PSNR/SSIM and per-image arrays.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _run_folder_child import THREADS, TINY

import ddl._io
from ddl.experiments import pipeline
from ddl.errors import CacheError, RunFolderError
from ddl.experiments.reproduce import reproduce

CHILD = Path(__file__).with_name("_run_folder_child.py")
COMPARED = ("dataset", "model", "attack", "attack_params", "defence_params", "n_images", "accuracy",
            "confidence", "psnr", "ssim")


# --- helpers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread):
    """The uninterrupted run (in this process)."""
    run_dir = tmp_path_factory.mktemp("reference")
    reproduce(TINY, run_dir, figures=False, progress=False)
    return run_dir


def numbers(run_dir: Path) -> tuple[list[dict], dict[str, bytes]]:
    """Every reported number of a run folder, and the bytes of its per-image arrays."""
    results = json.loads((run_dir / "results.json").read_text())
    records = results["records"] + results["sweep"]
    rows = [{**{k: r[k] for k in COMPARED}, "model_test_accuracy": r["model_info"]["test_accuracy"]}
            for r in records]
    arrays = {r["files"]["arrays"]: (run_dir / r["files"]["arrays"]).read_bytes() for r in records}
    return rows, arrays


def assert_same_numbers(run_dir: Path, reference: Path) -> None:
    rows, arrays = numbers(run_dir)
    ref_rows, ref_arrays = numbers(reference)
    assert len(rows) == len(ref_rows) == 3
    for row, ref in zip(rows, ref_rows):
        # json text: exact float equality, NaN-safe
        assert json.dumps(row, sort_keys=True) == json.dumps(ref, sort_keys=True), (row, ref)
    assert arrays.keys() == ref_arrays.keys()
    for name in arrays:  # PSNR, SSIM, predictions, examples: bit for bit
        assert arrays[name] == ref_arrays[name], name


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


def run_child(run_dir: Path, kill: str = "", **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    return subprocess.Popen([sys.executable, str(CHILD), str(run_dir), kill], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def seed_with_model(run_dir: Path, reference: Path) -> None:
    """Copy the reference's trained model into a fresh run folder (the kill then happens later in
    the run, and the child process need not train)."""
    (run_dir / "cache").mkdir(parents=True)
    for p in (reference / "cache").glob("model-*"):
        shutil.copy2(p, run_dir / "cache" / p.name)


# --- first run == re-run, and no stage depends on what ran before it ----------------------------
def test_rerun_of_a_finished_folder_recomputes_nothing_and_changes_no_file(reference, forbid_recompute,
                                                                          capsys):
    before = {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    mtimes = {p: p.stat().st_mtime_ns for p in before}
    capsys.readouterr()
    again = reproduce(TINY, reference, figures=False, progress=True)
    out = capsys.readouterr().out
    # the first run evaluated the model it stored (float16 weights), so the cached re-run reports
    # the same confidences, and writes the same per-image arrays, bit for bit
    first = json.loads((reference / "results.json").read_text())
    for r, ref in zip(again["records"] + again["sweep"], first["records"] + first["sweep"], strict=True):
        assert json.dumps({k: r[k] for k in COMPARED}) == json.dumps({k: ref[k] for k in COMPARED})
    assert all(s == "cached" for r in again["records"] + again["sweep"] for s in r["stages"].values())
    assert "computing" not in out and out.count("cached") >= 10
    after = {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    assert after == before  # no file written, none left behind (no lock file either)
    assert {p: p.stat().st_mtime_ns for p in after} == mtimes


def test_stages_do_not_read_or_change_the_global_rng(reference, one_thread, tmp_path):
    torch.manual_seed(12345)
    torch.rand(1000)  # whatever ran before in this process
    state = torch.get_rng_state()
    reproduce(TINY, tmp_path / "run", figures=False, progress=False)
    assert_same_numbers(tmp_path / "run", reference)
    assert torch.equal(torch.get_rng_state(), state)


# --- SIGKILL at chosen moments, then resume ------------------------------------------------------
KILLS = {
    # id: (kill spec, model copied in first, what the resumed run must say)
    "between-epochs": ("after_replace:model-mlp-*.resume.pt:1", False, "resumed from epoch 1"),
    "inside-model-write": ("mid_write:model-mlp-????????????????.pt:1", False, "resumed from epoch 2"),
    "file-before-its-record": ("after_replace:adv-jsma-*.pt:1", True, "computing"),
    "inside-record-write": ("before_replace:dictionary-*.entry.json:1", True, "computing"),
    "inside-results-write": ("mid_write:results.json:2", True, "cached"),
}


@pytest.mark.parametrize("moment", list(KILLS))
def test_killed_run_resumes_to_identical_results(moment, reference, one_thread, tmp_path, capsys):
    spec, seeded, says = KILLS[moment]
    run_dir = tmp_path / "run"
    if seeded:
        seed_with_model(run_dir, reference)
    child = run_child(run_dir, spec)
    out, err = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL, (child.returncode, out, err)
    assert "finished" not in out
    left = temp_files(run_dir)
    if spec.startswith(("mid_write", "before_replace")):
        assert len(left) == 1, left  # the killed write's temporary file
    capsys.readouterr()
    reproduce(TINY, run_dir, figures=False, progress=True)
    out, err = capsys.readouterr()
    assert "took over the lock of" in err and "is no longer running" in err
    if left:
        assert "removed 1 temporary file(s)" in err
    assert temp_files(run_dir) == []
    assert says in out
    assert "failed verification" not in err  # an interrupted write is not a tampered entry
    assert_same_numbers(run_dir, reference)
    results = json.loads((run_dir / "results.json").read_text())
    epoch = {"between-epochs": 1, "inside-model-write": 2}.get(moment)
    for r in results["records"] + results["sweep"]:
        assert r["resumed_stages"] == ({"model": epoch} if epoch else {})


#: the kill delay's generator is seeded (issue 19, item 8): a failure names a delay that can be
#: replayed, and the suite never draws from (or reseeds) the global ``random`` generator; the seed
#: is the issue's number, not one picked among others. The moment the signal lands in the child
#: still depends on the machine's speed: ``assert_same_numbers`` must hold at any moment.
KILL_DELAY_SEED = 19


def test_killed_at_a_random_moment_resumes_to_identical_results(reference, one_thread, tmp_path):
    delay = random.Random(KILL_DELAY_SEED).uniform(0.0, 3.0)
    run_dir = tmp_path / "run"
    child = run_child(run_dir)
    assert child.stdout.readline().strip() == "started"
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    reproduce(TINY, run_dir, figures=False, progress=False)
    assert temp_files(run_dir) == []
    assert_same_numbers(run_dir, reference), f"killed {delay:.2f} s after start"


# --- two processes, one folder --------------------------------------------------------------------
def test_two_concurrent_runs_on_one_folder(reference, tmp_path):
    run_dir = tmp_path / "run"
    seed_with_model(run_dir, reference)
    first = run_child(run_dir, "hold:adv-fgsm-*.pt:1")  # holds the folder half-way through its run
    while (line := first.stdout.readline()) and line.strip() != "holding":
        pass
    second = run_child(run_dir)
    while (line := second.stderr.readline()) and "waiting for it to finish" not in line:
        pass
    assert f"{run_dir} is in use by another ddl run (PID {first.pid} on " in line
    Path(f"{run_dir}.release").touch()
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    # the second computed nothing: it read what the first one wrote
    status = [line.split()[1] for line in outs[1][0].splitlines() if line.startswith("  ")
              and line.split()[0] in ("model", "attack", "dictionary", "denoise")]
    assert status and set(status) == {"cached"}, outs[1][0]
    assert_same_numbers(run_dir, reference)
    assert not (run_dir / ".ddl.lock").exists()


def test_busy_folder_refused_with_the_owner_named(tmp_path):
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / ".ddl.lock", "w") as f:
        f.write(json.dumps({"pid": 4242, "host": "otherhost", "started": time.time()}))
        f.flush()
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunFolderError, match=r"^.*run is in use by another ddl run \(PID 4242 on "
                           r"otherhost, since \d\d:\d\d:\d\d\); wait for it to finish or choose another run folder$"):
            reproduce(TINY, run_dir, figures=False, progress=False, wait=False)


# --- tampered cache entries -----------------------------------------------------------------------
def _tampered_copy(reference: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    return run_dir


def _swap_two_denoised(cache: Path) -> tuple[Path, Path]:
    by_size: dict[int, list[Path]] = {}
    for p in sorted(cache.glob("denoised-*.pt")):
        by_size.setdefault(p.stat().st_size, []).append(p)
    a, b = next(v for v in by_size.values() if len(v) >= 2)[:2]  # same size: only the hash tells
    data_a = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data_a)
    return a, b


def test_swapped_truncated_and_edited_entries_are_detected_and_recomputed(reference, one_thread,
                                                                          tmp_path, capsys):
    run_dir = _tampered_copy(reference, tmp_path)
    cache = run_dir / "cache"
    a, b = _swap_two_denoised(cache)
    (model,) = cache.glob("model-mlp-*.pt")
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncated
    (dictionary,) = cache.glob("dictionary-*.pt")
    blob = bytearray(dictionary.read_bytes())
    blob[len(blob) // 2: len(blob) // 2 + 64] = bytes(64)  # a zeroed block, same size
    dictionary.write_bytes(bytes(blob))
    capsys.readouterr()
    reproduce(TINY, run_dir, figures=False, progress=False)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "failed verification" in line]
    assert len(lines) == 4, err
    for path, why in ((a, "SHA-256 differs"), (b, "SHA-256 differs"), (dictionary, "SHA-256 differs"),
                      (model, "truncated or extended")):
        (line,) = [x for x in lines if str(path) in x]
        assert line.startswith(f"ddl: warning: cache entry {path} failed verification: ") and why in line
        assert line.endswith("; recomputing it")
    assert_same_numbers(run_dir, reference)
    for p in (a, b, model, dictionary):  # recomputed entries verify again
        assert ddl._io.check_entry(p, key=p.stem.rsplit("-", 1)[1],
                                   stage=json.loads(ddl._io.entry_record_path(p).read_text())["stage"])[0] == "ok"


def test_strict_run_stops_at_a_tampered_entry(reference, tmp_path):
    run_dir = _tampered_copy(reference, tmp_path)
    a, _ = _swap_two_denoised(run_dir / "cache")
    with pytest.raises(CacheError) as info:
        reproduce(TINY, run_dir, figures=False, progress=False, strict=True)
    message = str(info.value)
    assert "\n" not in message and message.startswith("cache entry ") and "failed verification: SHA-256" in message
    assert "delete it to have it recomputed, or run without --strict" in message
    assert temp_files(run_dir) == [] and not (run_dir / ".ddl.lock").exists()


# --- faults: full disk, read-only folder ------------------------------------------------------------
def test_full_disk_is_one_line_naming_the_folder_and_leaves_no_temp_file(reference, one_thread, tmp_path,
                                                                          monkeypatch):
    run_dir = tmp_path / "run"
    seed_with_model(run_dir, reference)
    real_write = ddl._io._write_all

    def full_disk(f, data, path):
        if path.name.startswith("dictionary-"):
            f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(f, data, path)

    monkeypatch.setattr(ddl._io, "_write_all", full_disk)
    with pytest.raises(RunFolderError) as info:
        reproduce(TINY, run_dir, figures=False, progress=False)
    assert str(info.value) == f"cannot write {run_dir / 'cache'}: no space left on device"
    assert isinstance(info.value, OSError)
    assert temp_files(run_dir) == [] and list((run_dir / "cache").glob("dictionary-*")) == []
    assert not (run_dir / ".ddl.lock").exists()
    monkeypatch.setattr(ddl._io, "_write_all", real_write)  # space again: the run completes
    reproduce(TINY, run_dir, figures=False, progress=False)
    assert_same_numbers(run_dir, reference)


def _read_only(monkeypatch, folder: Path) -> None:
    """Refuse, as a read-only file system does, every file opened for writing under ``folder``."""
    real_open = os.open
    write = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def ro_open(path, flags, *args, **kwargs):
        if flags & write and str(Path(path).resolve()).startswith(str(folder.resolve())):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", ro_open)


def test_finished_folder_reports_from_a_read_only_location(reference, one_thread, tmp_path, monkeypatch):
    from ddl.experiments.report import write_report

    run_dir = _tampered_copy(reference, tmp_path)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    _read_only(monkeypatch, run_dir)
    reproduce(TINY, run_dir, figures=False, progress=False)  # nothing left to compute
    write_report(run_dir)  # `ddl report`: the report there is already this one
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert_same_numbers(run_dir, reference)
    # something left to compute: one line naming the folder
    (adv,) = (run_dir / "cache").glob("adv-jsma-*.pt")
    monkeypatch.undo()
    adv.unlink()
    ddl._io.entry_record_path(adv).unlink()
    _read_only(monkeypatch, run_dir)
    monkeypatch.setattr(pipeline, "run_attack", lambda *a, **k: pytest.fail("computed in a read-only folder"))
    with pytest.raises(RunFolderError, match=f"^cannot write {run_dir}: read-only file system; nothing can "
                                             f"be computed in a folder that cannot be written$"):
        reproduce(TINY, run_dir, figures=False, progress=False)


def test_write_errors_name_the_folder_not_the_temp_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(RunFolderError, match=f"^cannot write {tmp_path}: no space left on device$"):
        ddl._io.atomic_write_json(tmp_path / "results.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_unchanged_content_is_not_rewritten(tmp_path):
    path = ddl._io.atomic_write_json(tmp_path / "x.json", {"a": 1})
    os.utime(path, ns=(1, 1))
    ddl._io.atomic_write_json(path, {"a": 1})
    assert path.stat().st_mtime_ns == 1
    ddl._io.atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}


def test_results_rewritten_only_when_more_than_timings_changed(tmp_path):
    path = tmp_path / "results.json"
    results = {"records": [{"accuracy": {"clean": 0.5}, "seconds": {"attack": 1.0}, "stages": {}}],
               "seconds": {"data": 1.0}, "machine": {"threads": 2}}
    assert pipeline.write_results(path, results)
    later = {"records": [{"accuracy": {"clean": 0.5}, "seconds": {"attack": 9.0}, "stages": {"a": "cached"}}],
             "seconds": {"data": 9.0}, "machine": {"threads": 1}}
    assert not pipeline.write_results(path, later)
    assert json.loads(path.read_text()) == results
    changed = {**later, "records": [{"accuracy": {"clean": 0.75}, "seconds": {}, "stages": {}}]}
    assert pipeline.write_results(path, changed)


def test_full_disk_through_the_command_line_is_one_line(one_thread, tmp_path, monkeypatch, capsys):
    from ddl.cli import main

    real_write = ddl._io._write_all

    def full_disk(f, data, path):
        if path.name.startswith("adv-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(f, data, path)

    monkeypatch.setattr(ddl._io, "_write_all", full_disk)
    run_dir = tmp_path / "demo"
    assert main(["demo", "--preset", "smoke", "--run-dir", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"ddl demo: error: cannot write {run_dir / 'cache'}: no space left on device\n"
    assert temp_files(run_dir) == []
