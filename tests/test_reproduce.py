"""`ddl reproduce --preset quick` end to end on the bundled sample, and the committed results."""

import json
from pathlib import Path

import pytest

from ddl import report
from ddl.cli import main
from ddl.reproduce import PAPER, QUICK, cell_config, get_preset

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("quick")
    assert main(["reproduce", "--preset", "quick", "--run-dir", str(run_dir)]) == 0
    return run_dir, json.loads((run_dir / "results.json").read_text())


def test_quick_preset_has_every_cell_and_field_the_report_reads(quick_run):
    run_dir, results = quick_run
    cells = {(r["dataset"], r["model"], r["attack"]) for r in results["records"]}
    assert cells == {("mnist", m, a) for m in QUICK.models for a in ("fgsm", "jsma")}
    for r in results["records"] + results["sweep"]:
        assert set(r["accuracy"]) >= {"clean", "perturbed", "denoised", "denoised_clean", "high_confidence"}
        assert set(r["psnr"]) >= {"perturbed", "denoised"} and set(r["ssim"]) >= {"perturbed", "denoised"}
    # the report renders from the file alone, and every table cell of ours is filled in
    blocks = report.build_report(results)
    md = report.to_markdown(blocks)
    assert (run_dir / "report.md").read_text() == report.to_markdown(
        report.build_report(results, figures=[tuple(f) for f in json.loads((run_dir / "figures.json").read_text())]))
    assert "| mlp | MNIST | 98.39 → " in md and "| mlp | MNIST | 98.39 → – |" not in md
    assert (run_dir / "report.html").stat().st_size > 10_000
    assert (run_dir / "results.csv").read_text().count("\n") == 1 + len(results["records"]) + len(results["sweep"])


def test_quick_preset_denoising_helps_against_fgsm(quick_run):
    _, results = quick_run
    for r in results["records"]:
        if r["attack"] == "fgsm":
            assert r["accuracy"]["denoised"] >= r["accuracy"]["perturbed"], r["model"]


def test_quick_preset_draws_every_figure(quick_run):
    run_dir, _ = quick_run
    names = {Path(p).name for _, p in json.loads((run_dir / "figures.json").read_text())}
    for prefix in ("tsne-", "atoms-", "qq-", "density-", "examples-", "quality-", "cam-", "eps-"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert all((run_dir / "figures" / n).stat().st_size > 1000 for n in names)


def test_second_quick_run_recomputes_nothing(quick_run, forbid_recompute):
    run_dir, first = quick_run
    from ddl.reproduce import reproduce

    again = reproduce(QUICK, run_dir, figures=False, progress=False)
    assert [r["accuracy"] for r in again["records"]] == [r["accuracy"] for r in first["records"]]


def test_paper_preset_reads_the_paper_sparsity():
    paper = report.load_paper_tables()
    for dataset in ("mnist", "cifar10"):
        assert PAPER.defence[dataset].n_nonzero_coefs == paper["defence"][dataset]["n_nonzero_coefs"]
        cfg = cell_config(PAPER, dataset, "convnet")
        assert [a.name for a in cfg.attacks] == ["fgsm", "jsma"]
        assert cfg.defence.dictionary_source == "clean"
    assert get_preset("noisy-dictionary").defence["mnist"].dictionary_source == "perturbed"
    with pytest.raises(ValueError, match="unknown preset 'fast'; choose one of: noisy-dictionary, paper, quick, tuned"):
        get_preset("fast")


def _paper_cells() -> list[tuple[str, str, str]]:
    return [(r["dataset"], r["model"], r["attack"]) for r in report.load_paper_tables()["records"]]


#: Committed cells that miss a target of issue 6, with the measured reason (see the closing notes
#: and results/*/report.md). Marked strict xfail: if a re-run makes one pass, the test fails
#: until the entry is removed, so this list cannot go stale silently.
_K38 = ("paper preset, MNIST: k = 38 atoms for 7x7 = 49-pixel patches rebuilds the perturbation "
        "with the digit (denoised ≈ perturbed, denoised clean images at 67 dB PSNR)")
_JSMA_TUNED = ("tuned preset: the defence was chosen on FGSM-perturbed validation images; JSMA's "
               "few saturated pixels partly survive the k = 1 reconstruction")
_MLP_CIFAR = "zoo MLP/CIFAR-10: 59.97 % vs the paper's 60 % (3 test images short)"
_HRNN_CIFAR = "zoo HRNN/CIFAR-10: 62.40 % vs the paper's 64 % (three training runs, zoo_logs/README.md)"
_CIFAR_COST = {
    "fgsm": ("CIFAR-10, FGSM eps 8/255 (the paper's eps is unknown): a reconstruction that removes the "
             "perturbation also removes the texture the classifiers need (denoised clean accuracy "
             "39-60 %), which caps the denoised accuracy (22-44 %)"),
    "jsma": ("CIFAR-10, JSMA: ours is far stronger than the paper's (perturbed 0.4-9 % vs 14.6-56.9 %) "
             "and the defence costs 20-40 points on clean CIFAR-10 images (denoised clean 35-60 %)"),
}
KNOWN_MISSES: dict[tuple[str, str, str, str, str], str] = {
    **{("paper", "mnist", m, a, "denoised"): _K38 for m, a in (
        ("mlp", "fgsm"), ("mlp", "jsma"), ("convnet", "jsma"), ("autoencoder", "jsma"),
        ("resnet", "fgsm"), ("resnet", "jsma"), ("hrnn", "fgsm"), ("hrnn", "jsma"))},
    **{("tuned", "mnist", m, "jsma", "denoised"): _JSMA_TUNED for m in ("convnet", "autoencoder", "hrnn")},
    **{(p, "cifar10", "mlp", a, "clean"): _MLP_CIFAR for p in ("paper", "tuned") for a in ("fgsm", "jsma")},
    **{(p, "cifar10", "hrnn", a, "clean"): _HRNN_CIFAR for p in ("paper", "tuned") for a in ("fgsm", "jsma")},
    **{(p, "cifar10", m, a, "denoised"): _CIFAR_COST[a] for p in ("paper", "tuned")
       for m in ("mlp", "convnet", "autoencoder", "resnet", "hrnn") for a in ("fgsm", "jsma")},
}


def _committed_cell_params():
    params = []
    for preset in ("paper", "tuned"):
        for cell in _paper_cells():
            for what in ("clean", "denoised"):
                key = (preset, *cell, what)
                marks = [pytest.mark.slow]
                if key in KNOWN_MISSES:
                    marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[key]))
                params.append(pytest.param(*key, marks=marks, id="-".join(key)))
    return params


@pytest.mark.parametrize(("preset", "dataset", "model", "attack", "what"), _committed_cell_params())
def test_committed_results_against_the_paper(preset, dataset, model, attack, what):
    """Committed full-data results (issue 6 targets), one cell at a time: clean accuracy (full
    test set) ≥ the paper's; denoised accuracy ≥ the paper's with ``tuned`` and within 3 points with ``paper``."""
    path = RESULTS / preset / "results.json"
    assert path.is_file(), f"no committed results at {path} (run `ddl reproduce --preset {preset}`)"
    records = {(r["dataset"], r["model"], r["attack"]): r for r in json.loads(path.read_text())["records"]}
    assert (dataset, model, attack) in records, f"{preset}: cell {dataset}/{model}/{attack} was not run"
    paper = report.paper_lookup(report.load_paper_tables())[(dataset, model, attack)][what]
    record = records[(dataset, model, attack)]
    # clean: the model's accuracy on the full test set (the zoo's target); a JSMA cell's own
    # clean figure is on its subset of the first images, where a few points of noise are expected
    ours = 100 * (record["model_info"]["test_accuracy"] if what == "clean" else record["accuracy"][what])
    slack = 3.0 if (preset == "paper" and what == "denoised") else 0.0
    assert ours >= paper - slack, f"{preset} {dataset}/{model}/{attack}: {what} {ours:.2f} % < paper {paper} % - {slack}"


def test_save_tuned_keeps_the_other_data_sets_entries(tmp_path):
    from ddl.tune import save_tuned

    path = tmp_path / "tuned.json"
    save_tuned({"mnist": {"best": {"patch_size": 7}}}, path)
    save_tuned({"cifar10": {"best": {"patch_size": 4}}}, path)
    save_tuned({"cifar10": {"best": {"patch_size": 6}}}, path)
    assert json.loads(path.read_text()) == {"mnist": {"best": {"patch_size": 7}},
                                            "cifar10": {"best": {"patch_size": 6}}}
