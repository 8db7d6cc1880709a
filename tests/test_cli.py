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


def test_zoo_list_shows_every_checkpoint_with_its_variant_accuracy_target_and_the_defences(capsys):
    from ddl import zoo

    entries = zoo.entries()
    defences = zoo.defence_records()
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = out[2:2 + len(entries)]  # after a caption and the header
    for e, line in zip(entries, rows):
        fields = line.split()
        assert fields[:4] == [e.model, e.dataset, e.variant, f"{100 * e.accuracy:.2f}%"]
        if e.defence is not None:  # trained behind a defence: accuracy behind it, and its name
            assert fields[4:6] == [f"{100 * e.extra['denoised_clean_accuracy']:.2f}%", f"({e.defence['name']})"]
            assert fields[6] == f"{e.extra['target_percent']:.2f}"
        else:
            assert fields[4:6] == ["–", f"{e.extra['target_percent']:.2f}"]
        assert fields[-1] == e.path.name
    total = sum(e.path.stat().st_size for e in entries) / 1e6
    assert out[2 + len(entries)] == f"{len(entries)} checkpoints, {total:.1f} MB, in {zoo.ZOO_DIR}"
    defence_rows = out[-len(defences):]
    for r, line in zip(defences, defence_rows):
        q = r["params"]
        assert line.split() == [r["name"], r["dataset"], str(q["patch_size"]), str(q["n_components"]),
                                str(q["n_nonzero_coefs"]), "yes" if q["remove_mean"] else "no",
                                f"{r['size_bytes'] / 1e6:.2f}", r["path"]]
    assert len(defences) == 4  # tuned and paper, for both data sets


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


def test_train_behind_the_tuned_defence_records_it_and_reports_both_accuracies(tmp_path, capsys, monkeypatch):
    """`ddl train --defence tuned`: every training batch is reconstructed by the zoo's tuned
    dictionary (counted), the checkpoint records the variant and the dictionary's SHA-256, and the
    printed accuracy behind the defence is that of the saved model on the reconstructed test set."""
    import torch

    import ddl.data
    import ddl.zoo
    from ddl.data.synthetic import make_blobs_images
    from ddl.defence import DictionaryDenoiser
    from ddl.models.checkpoint import load_checkpoint
    from ddl.models.train import predict

    def fake_load(name, split, *, data_dir=None):
        return make_blobs_images(40 if split == "train" else 12, shape=(1, 28, 28), seed=int(split == "test"))

    monkeypatch.setattr(ddl.data, "load_dataset", fake_load)
    calls = []
    forward = DictionaryDenoiser.forward
    monkeypatch.setattr(DictionaryDenoiser, "forward", lambda self, x: (calls.append(len(x)), forward(self, x))[1])
    out = tmp_path / "m.pt"
    assert main(["train", "--dataset", "mnist", "--model", "mlp", "--epochs", "1", "--batch-size", "16",
                 "--defence", "tuned", "--out", str(out), "-q"]) == 0
    assert calls[:3] == [16, 16, 8]  # the training batches, then the monitored and the final test set
    line = capsys.readouterr().out.strip()
    model, meta = load_checkpoint(out)
    record = ddl.zoo.find_defence("mnist", "tuned")
    assert meta["variant"] == "denoised"
    assert meta["defence"] == {"name": "tuned", "sha256": record["sha256"], "params": record["params"]}
    x_test, y_test = fake_load("mnist", "test")
    with torch.no_grad():
        behind = (predict(model, ddl.zoo.load_defence("mnist")(x_test)).argmax(1) == y_test).double().mean().item()
    assert meta["denoised_clean_accuracy"] == pytest.approx(behind, abs=1 / 12 + 1e-9)  # float16 weights
    assert line == (f"test accuracy {meta['test_accuracy'] * 100:.2f} % on 12 images, "
                    f"{meta['denoised_clean_accuracy'] * 100:.2f} % behind the defence; checkpoint {out}")


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


def test_train_n_train_and_n_test_keep_the_first_images_and_are_recorded(tmp_path, capsys, monkeypatch):
    import ddl.data
    from ddl.data.synthetic import make_blobs_images
    from ddl.models.checkpoint import load_checkpoint

    def fake_load(name, split, *, data_dir=None):
        return make_blobs_images(64 if split == "train" else 16, shape=(1, 28, 28), seed=int(split == "test"))

    monkeypatch.setattr(ddl.data, "load_dataset", fake_load)
    out = tmp_path / "m.pt"
    assert main(["train", "--dataset", "mnist", "--model", "mlp", "--n-train", "20", "--n-test", "5",
                 "--out", str(out), "-q"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("test accuracy ") and line.endswith(f" on 5 images; checkpoint {out}")
    _, meta = load_checkpoint(out)
    assert (meta["n_train"], meta["n_test"]) == (20, 5)
    assert main(["train", "--dataset", "mnist", "--model", "mlp", "--n-test", "17", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "ddl train: error: --n-test 17: the test split has 16 images"


def test_reproduce_dry_run_loads_the_inputs_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "quick"
    assert main(["reproduce", "--preset", "quick", "--run-dir", str(run_dir), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("dry run of --preset quick: nothing is computed or written")
    assert out[1] == "mnist: 2000 training and 200 test images (the sample bundled with ddl)"
    assert out[2] == "  mlp: classifier trained for 1 epoch(s); dictionary fitted on the clean training patches " \
                     "(7×7, 64 atoms, k 1)"
    assert "  adaptive suite: first 12 test images, ε 0.1 0.3, pgd:oblivious pgd:soft square, budgets " \
           "{'pgd_steps': 5, 'square_queries': 20}" in out
    assert not run_dir.exists()


def test_reproduce_and_tune_dry_runs_fail_on_missing_data_as_the_runs_do(tmp_path, capsys):
    for argv in (["reproduce", "--preset", "paper"], ["tune", "--datasets", "mnist"]):
        assert main([*argv, "--data-dir", str(tmp_path / "none"), "--run-dir", str(tmp_path / "run"), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ddl {argv[0]}: error: ") and "mnist" in err and str(tmp_path / "none") in err
    assert not (tmp_path / "run").exists()


def test_tune_dry_run_checks_n_val_and_names_the_classifier(sample_data_dir, tmp_path, capsys):
    argv = ["tune", "--datasets", "mnist", "--data-dir", str(sample_data_dir), "--run-dir", str(tmp_path / "t"), "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "mnist: validation = the last 1000 of 5000 training images (dictionaries learn from " \
                     "100000 patches of the other 4000); classifier zoo mlp_mnist.pt (mlp)"
    assert out[1].startswith("  objectives: clean accuracy on 1000 images; worst case of pgd:oblivious pgd:bpda "
                             "pgd:soft apgd-ce:soft (cascade, PGD 20 steps, APGD 20 iterations) at ε 0.2 ")
    assert out[3] == f"  study would be created in {tmp_path / 't' / 'study.db'} as 'ddl-tune-mnist'"
    assert out[-1] == f"dry run: nothing computed or written; the run would write {tmp_path / 't' / 'tuned_defence.json'}"
    assert main([*argv, "--n-val", "5000"]) == 2
    assert "n_val must be in [1, 4999]; got 5000" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
