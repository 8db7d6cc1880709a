"""The report's compute-time table, and tools/fill_stage_times.py, which fills the rows of cells
computed by a ddl that did not record stage times from a recompute of the same computation
(identical clean predictions, the others agreeing on >= 99 % of the images)."""

import copy
import importlib.util
import json
import re
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


def _write(folder: Path, records, exist_ok=False, **extra) -> Path:
    folder.mkdir(exist_ok=exist_ok)
    (folder / "results.json").write_text(json.dumps({"ddl_version": "0.1.0", "config": {"name": "tuned"},
                                                     "records": records, **extra}))
    return folder


SECONDS = {"attack": 1.25, "dictionary": 2.5, "denoise": 3.75, "denoise_clean_test_set": 12.0}


def _arrays(folder: Path, r: dict, flips: dict[str, int]) -> None:
    """Save the cell's predictions: 1,000 images, all of class 0, but the first ``flips[kind]``
    of each kind predicted as class 1."""
    import torch

    preds = {}
    for k in ("clean", "perturbed", "denoised", "denoised_clean"):
        p = torch.zeros(1000, dtype=torch.long)
        p[: flips.get(k, 0)] = 1
        preds[f"pred_{k}"] = p
    rel = f"cells/{r['model']}/arrays.pt"
    (folder / rel).parent.mkdir(parents=True)
    torch.save(preds, folder / rel)
    r["files"] = {"arrays": rel}


def _pair(tmp_path, cells):
    """A committed folder and a recompute folder; ``cells``: (model, the recompute's prediction
    flips per kind or None for a cell it lacks, the committed cell's seconds or None)."""
    old, new = [], []
    (tmp_path / "committed").mkdir()
    (tmp_path / "again").mkdir()
    for model, flips, seconds in cells:
        r = _record("mnist", model, "fgsm", 0.96, seconds)
        _arrays(tmp_path / "committed", r, {})
        old.append(r)
        if flips is not None:
            t = _record("mnist", model, "fgsm", 0.96, SECONDS)
            _arrays(tmp_path / "again", t, flips)
            new.append(t)
    (tmp_path / "again" / "cache").mkdir()
    (tmp_path / "again" / "cache" / "dictionary-0123.pt.entry.json").write_text(
        json.dumps({"stage": "dictionary", "inputs": {"images": "ab", "omp_kernel": "torch"}}))
    committed = _write(tmp_path / "committed", copy.deepcopy(old), exist_ok=True)
    recompute = _write(tmp_path / "again", new, machine={"torch": "2.13.0+cpu", "threads": 1, "device": "cpu"},
                       exist_ok=True)
    return committed, recompute, old


def test_fill_copies_the_times_of_the_same_computation_only_and_labels_them(tmp_path):
    committed, recompute, old = _pair(tmp_path, [
        ("mlp", {}, None),                      # identical predictions: filled
        ("autoencoder", {"perturbed": 3}, None),  # 997 of 1,000 agree: 99.7 %, filled
        ("convnet", {"denoised": 11}, None),    # 98.9 %: refused
        ("hrnn", {"clean": 1}, None),           # clean predictions must be identical: refused
        ("resnet", None, None),                 # not recomputed: refused
        ("cnn", {}, {"attack": 9.0}),           # already has its own times: untouched
    ])
    filled, refused = _tool().fill(committed, recompute)
    assert filled == ["mnist/mlp/fgsm", "mnist/autoencoder/fgsm"]
    assert [line.split(":")[0] for line in refused] == ["mnist/convnet/fgsm", "mnist/hrnn/fgsm", "mnist/resnet/fgsm"]
    assert "denoised 98.90%" in refused[0] and "clean 99.90%" in refused[1] and "not in the recompute" in refused[2]
    out = json.loads((committed / "results.json").read_text())["records"]
    assert out[0]["computed_seconds"] == SECONDS and out[1]["computed_seconds"] == SECONDS
    assert out[0]["computed_seconds_agreement"] == 1.0 and out[1]["computed_seconds_agreement"] == 0.997
    assert out[0]["computed_seconds_source"] == out[1]["computed_seconds_source"]
    assert re.fullmatch(r"measured by recomputing the cells \(tools/fill_stage_times\.py --recompute; ddl 0\.1\.0, "
                        r"torch 2\.13\.0\+cpu, 1 thread\(s\), cpu, OMP kernel torch; filled in on \d{4}-\d\d-\d\d\)",
                        out[0]["computed_seconds_source"])
    # nothing else changed: refused cells have no times, the recorded cell keeps its own
    for got, want in zip(out, old):
        assert {k: v for k, v in got.items() if not k.startswith("computed_seconds")} == \
               {k: v for k, v in want.items() if not k.startswith("computed_seconds")}
    assert all("computed_seconds" not in r for r in out[2:5])
    assert out[5]["computed_seconds"] == {"attack": 9.0}
    md = (committed / "report.md").read_text()
    assert "| MNIST | mlp | fgsm | 100 | 1.2 | 2.5 | 3.8 | 12.0 |" in md
    assert "| MNIST | convnet | fgsm | 100 | — | — | — | — |" in md
    assert ("Rows without times (MNIST: 3 cells): every stage of these cells was read from a cache written by an "
            "earlier ddl that did not record stage times; their wall time per cell is in the table of stages "
            "above.") in md
    assert (f"MNIST: these 2 cells were computed by an earlier ddl that did not record stage times; the times "
            f"shown were {out[0]['computed_seconds_source']}. The recomputed predictions are identical in 1 of the "
            f"2 cells and agree with the committed ones on at least 99.70 % of the images in every cell (the "
            f"committed numbers are unchanged).\n") in md


def test_fill_refuses_other_defence_parameters_missing_times_another_preset_and_a_bad_threshold(tmp_path):
    committed, recompute, _ = _pair(tmp_path, [("mlp", {}, None), ("convnet", {}, None)])
    again = json.loads((recompute / "results.json").read_text())
    again["records"][0]["defence_params"] = {**again["records"][0]["defence_params"], "n_nonzero_coefs": 2}
    again["records"][1]["computed_seconds"] = {k: None for k in SECONDS}  # read from an old cache
    (recompute / "results.json").write_text(json.dumps(again))
    before = (committed / "results.json").read_bytes()
    filled, refused = _tool().fill(committed, recompute)
    assert filled == []
    assert refused == [
        "mnist/mlp/fgsm: the recompute used other defence parameters "
        "({'n_components': 64, 'n_nonzero_coefs': 2, 'patch_size': 4})",
        "mnist/convnet/fgsm: the recompute recorded no stage times (its stages were read from a cache "
        "written without them)"]
    assert (committed / "results.json").read_bytes() == before
    again["config"]["name"] = "paper"
    (recompute / "results.json").write_text(json.dumps(again))
    with pytest.raises(ValueError, match=re.escape(f"fill_stage_times: the recompute {recompute} ran preset "
                                                   f"'paper', the committed run {committed} preset 'tuned'; "
                                                   f"recompute with the same preset.")):
        _tool().fill(committed, recompute)
    for bad in (99, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"^fill_stage_times: min_agreement must be a finite number in "
                                             r"\[0, 1\]; got "):
            _tool().fill(committed, recompute, min_agreement=bad)
    assert (committed / "results.json").read_bytes() == before


def test_the_report_rounds_the_agreement_down_and_says_when_it_was_not_recorded():
    source = "measured by recomputing the cells (x)"
    cells = [dict(_record("mnist", m, "fgsm", 0.9, SECONDS), computed_seconds_source=source) for m in ("a", "b", "c")]
    cells[0]["computed_seconds_agreement"] = 0.99996  # "at least 99.99 %", not 100.00 %
    cells[1]["computed_seconds_agreement"] = 1.0
    md = report.to_markdown(report.build_report({"config": {"name": "tuned"}, "records": cells}))
    assert ("MNIST: these 3 cells were computed by an earlier ddl that did not record stage times; the times shown "
            "were measured by recomputing the cells (x). The recomputed predictions are identical in 1 of the 3 "
            "cells and agree with the committed ones on at least 99.99 % of the images in 2 cells; for 1 the "
            "agreement was not recorded.\n") in md


def test_a_stricter_agreement_refuses_the_nearly_identical_cell(tmp_path):
    committed, recompute, _ = _pair(tmp_path, [("autoencoder", {"perturbed": 3}, None)])
    filled, refused = _tool().fill(committed, recompute, min_agreement=0.998)
    assert filled == [] and refused[0].startswith("mnist/autoencoder/fgsm: the recompute differs")


def test_fill_of_a_run_with_nothing_to_fill_writes_nothing(tmp_path):
    committed, recompute, _ = _pair(tmp_path, [("mlp", {}, SECONDS)])
    before = (committed / "results.json").read_bytes()
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
