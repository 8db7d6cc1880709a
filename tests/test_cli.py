import json

import pytest

from ddl.cli import main


def test_demo_smoke_preset_writes_results(tmp_path, capsys):
    assert main(["demo", "--preset", "smoke", "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "perturbed" in out and "denoised" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["name"] == "smoke"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


# user errors (one line, exit 2): tests/test_cli_errors.py


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "ddl 0.1.0" in capsys.readouterr().out


def test_zoo_list_shows_every_checkpoint_with_its_accuracy_target_and_the_total_size(capsys):
    from ddl import zoo

    entries = zoo.entries()
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(entries) + 2  # header, one line per checkpoint, total
    for e, line in zip(entries, out[1:]):
        fields = line.split()
        assert fields[:3] == [e.model, e.dataset, f"{100 * e.accuracy:.2f}%"]
        assert fields[3] == f"{e.extra['target_percent']:.2f}"
    total = sum(e.path.stat().st_size for e in entries) / 1e6
    assert out[-1] == f"{len(entries)} checkpoints, {total:.1f} MB"


def test_train_prints_a_line_per_epoch_and_quiet_only_the_result(tmp_path, capsys, monkeypatch):
    import ddl.data
    from ddl.data.synthetic import make_blobs_images

    def fake_load(name, split, *, data_dir=None):
        return make_blobs_images(64 if split == "train" else 16, shape=(1, 28, 28), seed=int(split == "test"))

    monkeypatch.setattr(ddl.data, "load_dataset", fake_load)
    out = tmp_path / "m.pt"
    assert main(["train", "--dataset", "mnist", "--model", "mlp", "--epochs", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:2]] == [["epoch", "1/2:"], ["epoch", "2/2:"]]
    assert lines[-1].startswith("test accuracy ") and lines[-1].endswith(f"checkpoint {out}")
    assert main(["train", "--dataset", "mnist", "--model", "mlp", "--epochs", "1", "--out", str(out), "-q"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("test accuracy ")


def test_demo_in_a_log_prints_a_line_per_stage_and_quiet_none(tmp_path):
    """Run as in a log file (stdout and stderr not terminals): every stage says it is computing and
    when it is done, model training a line per epoch, no carriage-return bar; --quiet prints the
    results only."""
    import os
    import re
    import subprocess
    import sys

    def demo(run_dir, *flags):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        p = subprocess.run([sys.executable, "-m", "ddl", "demo", "--preset", "smoke", "--run-dir", str(run_dir),
                            *flags], capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
        assert "\r" not in p.stdout + p.stderr
        return p.stdout.splitlines()

    lines = demo(tmp_path / "run")
    stage = re.compile(r"  (model|attack|dictionary|denoise) +(computing|done in \d+\.\d s) +[\w-]+\.pt")
    said = [m.groups() for m in map(stage.fullmatch, lines) if m]
    assert [s for s, what in said if what == "computing"] == ["model", "attack", "dictionary", "denoise", "denoise"]
    assert [s for s, what in said if what.startswith("done in")] == ["model", "attack", "dictionary", "denoise",
                                                                     "denoise"]
    assert [line.split()[:2] for line in lines if line.startswith("    epoch")] == [["epoch", "1/2:"],
                                                                                  ["epoch", "2/2:"]]
    assert any(line.startswith("denoised ") for line in lines)  # the results table

    def progress_line(line):
        return stage.fullmatch(line) or line.startswith("    epoch")

    quiet = demo(tmp_path / "quiet", "--quiet")
    assert not [line for line in quiet if progress_line(line)]
    assert quiet[0].startswith("ddl demo: run folder") and quiet[-1].startswith("done in ")
    assert quiet[1:-1] == [line for line in lines if not progress_line(line)][1:-1]  # the same results table
