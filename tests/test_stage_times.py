"""The report's compute-time table, and tools/fill_stage_times.py, which fills the rows of cells
computed by a ddl that did not record stage times from a recompute with identical accuracies."""

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from ddl.experiments import report

TOOL = Path(__file__).resolve().parents[1] / "tools" / "fill_stage_times.py"


def _tool():
    spec = importlib.util.spec_from_file_location("fill_stage_times", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _record(dataset, model, attack, clean, seconds=None):
    r = {"dataset": dataset, "model": model, "attack": attack, "attack_params": {"eps": 0.1}, "n_images": 100,
         "defence_params": {"n_components": 64, "n_nonzero_coefs": 1, "patch_size": 4},
         "accuracy": {"clean": clean, "perturbed": 0.25, "denoised": 0.5, "denoised_clean": 0.75,
                      "high_confidence": {"threshold": 0.9, "n_images": 4, "perturbed": 0.0, "denoised": 0.5}},
         "confidence": {"clean": 0.9, "perturbed": 0.8, "denoised": 0.7, "denoised_clean": 0.85},
         "psnr": {"perturbed": 20.0, "denoised": 22.0, "denoised_clean": 30.0},
         "ssim": {"perturbed": 0.5, "denoised": 0.6, "denoised_clean": 0.9}, "model_info": {"source": "zoo"}}
    if seconds is not None:
        r["computed_seconds"] = seconds
    return r


def _write(folder: Path, records, **extra) -> Path:
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"ddl_version": "0.1.0", "config": {"name": "tuned"},
                                                     "records": records, **extra}))
    return folder


SECONDS = {"attack": 1.25, "dictionary": 2.5, "denoise": 3.75, "denoise_clean_test_set": 12.0}


def test_fill_copies_the_times_of_identical_cells_only_and_labels_them(tmp_path):
    old = [_record("mnist", "mlp", "fgsm", 0.96), _record("mnist", "convnet", "fgsm", 0.99),
           _record("mnist", "resnet", "fgsm", 0.97), _record("cifar10", "mlp", "fgsm", 0.6, {"attack": 9.0})]
    new = [_record("mnist", "mlp", "fgsm", 0.96, SECONDS),
           _record("mnist", "convnet", "fgsm", 0.98, SECONDS)]  # resnet missing, convnet differs
    committed = _write(tmp_path / "committed", copy.deepcopy(old))
    recompute = _write(tmp_path / "again", new, machine={"torch": "2.13.0+cpu", "threads": 1, "device": "cpu"})
    filled, refused = _tool().fill(committed, recompute)
    assert filled == ["mnist/mlp/fgsm"]
    assert [line.split(":")[0] for line in refused] == ["mnist/convnet/fgsm", "mnist/resnet/fgsm"]
    assert "differs" in refused[0] and "not in the recompute" in refused[1]
    out = json.loads((committed / "results.json").read_text())["records"]
    assert out[0]["computed_seconds"] == SECONDS
    assert "whose accuracies are identical" in out[0]["computed_seconds_source"]
    assert "1 thread(s)" in out[0]["computed_seconds_source"]
    # nothing else changed: the refused cells have no times, the recorded CIFAR-10 cell keeps its own
    for got, want in zip(out, old):
        assert {k: v for k, v in got.items() if not k.startswith("computed_seconds")} == \
               {k: v for k, v in want.items() if not k.startswith("computed_seconds")}
    assert "computed_seconds" not in out[1] and "computed_seconds" not in out[2]
    assert out[3]["computed_seconds"] == {"attack": 9.0}
    md = (committed / "report.md").read_text()
    assert "| MNIST | mlp | fgsm | 100 | 1.2 | 2.5 | 3.8 | 12.0 |" in md
    assert "| MNIST | convnet | fgsm | 100 | — | — | — | — |" in md
    assert ("MNIST: these cells were computed by an earlier ddl that did not record stage times; the times "
            "shown were measured on ") in md


def test_fill_of_a_run_with_nothing_to_fill_writes_nothing(tmp_path):
    committed = _write(tmp_path / "committed", [_record("mnist", "mlp", "fgsm", 0.96, SECONDS)])
    before = (committed / "results.json").read_bytes()
    recompute = _write(tmp_path / "again", [_record("mnist", "mlp", "fgsm", 0.96, {"attack": 99.0})])
    assert _tool().fill(committed, recompute) == ([], [])
    assert (committed / "results.json").read_bytes() == before
    assert not (committed / "report.md").exists()


@pytest.mark.parametrize("seconds, row", [
    (SECONDS, ["MNIST", "mlp", "fgsm", "100", "1.2", "2.5", "3.8", "12.0"]),
    ({"attack": 0.05, "denoise": None}, ["MNIST", "mlp", "fgsm", "100", "0.1", "—", "—", "—"]),
])
def test_compute_time_table_rows(seconds, row):
    rows = report.compute_time_table([_record("mnist", "mlp", "fgsm", 0.9, seconds)])
    assert rows[0] == ["data set", "model", "attack", "n", "attack s", "dictionary s", "denoise s",
                       "denoise clean test set s"]
    assert rows[1] == row
