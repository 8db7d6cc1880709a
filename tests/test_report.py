"""The report renders hand-written results exactly (golden file) and reads the paper's numbers."""

import json
from pathlib import Path

from ddl import report

GOLDEN = Path(__file__).parent / "golden"

RECORD = {
    "dataset": "mnist", "model": "convnet", "attack": "fgsm", "attack_params": {"eps": 0.1},
    "defence_params": {"n_components": 256, "n_nonzero_coefs": 38, "patch_size": 7},
    "n_images": 10000,
    "accuracy": {"clean": 0.9931, "perturbed": 0.8012, "denoised": 0.9234, "denoised_clean": 0.9876,
                 "high_confidence": {"threshold": 0.9, "n_images": 1234, "perturbed": 0.0, "denoised": 0.5}},
    "confidence": {"clean": 0.99, "perturbed": 0.8, "denoised": 0.9, "denoised_clean": 0.98},
    "psnr": {"perturbed": 20.5, "denoised": 24.25, "denoised_clean": 30.0},
    "ssim": {"perturbed": 0.41, "denoised": 0.72, "denoised_clean": 0.9},
    "model_info": {"source": "zoo", "epochs": 5},
}
RESULTS = {"ddl_version": "0.1.0", "config": {"name": "golden"}, "records": [RECORD]}


def test_paper_tables_hold_the_20_cells_of_each_table():
    paper = report.load_paper_tables()
    ref = report.paper_lookup(paper)
    assert len(ref) == 20
    assert ref[("mnist", "convnet", "fgsm")] == {"clean": 99.35, "perturbed": 79.90, "denoised": 90.46}
    assert ref[("cifar10", "resnet", "fgsm")]["perturbed"] == 0.089
    assert ref[("cifar10", "hrnn", "jsma")] == {"clean": 64, "perturbed": 56.43, "denoised": 61.21}


def test_comparison_row_reads_paper_then_ours():
    rows = report.comparison_table([RECORD], report.load_paper_tables(), "fgsm")
    assert len(rows) == 1 + 10
    convnet_mnist = rows[2]
    assert convnet_mnist[:5] == ["convnet", "MNIST", "99.35 → 99.31", "79.9 → 80.12", "90.46 → 92.34"]
    assert convnet_mnist[5:] == ["98.76", "1234, 50.00"]
    assert rows[1][2] == "98.39 → –"  # a cell we did not run shows the paper and a dash


def test_markdown_matches_golden_file():
    md = report.to_markdown(report.build_report(RESULTS))
    assert md == (GOLDEN / "report_small.md").read_text()


def test_html_is_self_contained_with_embedded_figure(tmp_path):
    # a 1x1 PNG written by hand
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")
    (tmp_path / "fig.png").write_bytes(png)
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    (tmp_path / "figures.json").write_text(json.dumps([["A figure", "fig.png"]]))
    md_path, html_path = report.write_report(tmp_path)
    page = html_path.read_text()
    assert "data:image/png;base64,iVBORw0KGgo" in page and "src=\"fig.png\"" not in page
    assert "<td>90.46 → 92.34</td>" in page
    assert "![A figure](fig.png)" in md_path.read_text()


def _sweep_record(dataset, model, eps, perturbed, denoised):
    return {"dataset": dataset, "model": model, "attack": "fgsm", "attack_params": {"eps": eps}, "n_images": 500,
            "accuracy": {"clean": 0.99, "perturbed": perturbed, "denoised": denoised, "denoised_clean": 0.98}}


def test_matched_eps_row_is_the_sweep_point_nearest_the_papers_perturbed_accuracy():
    # paper MNIST MLP FGSM: perturbed 12.8 %, denoised 82 %; |60.6-12.8|, |12.8-12.8|, |8.6-12.8|
    sweep = [_sweep_record("mnist", "mlp", 0.1, 0.606, 0.90), _sweep_record("mnist", "mlp", 0.2, 0.128, 0.70),
             _sweep_record("mnist", "mlp", 0.3, 0.086, 0.40)]
    rows = report.matched_eps_table(sweep, report.load_paper_tables())
    assert rows[1] == ["MNIST", "mlp", "12.8", "0.2", "12.80", "82", "70.00", "98.00"]
    assert len(rows) == 2


def test_sample_data_reports_carry_a_not_comparable_banner():
    quick = {**RESULTS, "config": {"name": "quick", "source": "sample"}}
    md = report.to_markdown(report.build_report(quick))
    assert "**Not comparable with the paper.** This run uses the bundled MNIST sample data and short " \
           "training (5 epochs)" in md
    demo = {**RESULTS, "config": {"name": "demo", "data": {"source": "sample"}}}
    assert "Not comparable with the paper" in report.to_markdown(report.build_report(demo))
    full = {**RESULTS, "config": {"name": "paper", "source": "full"}}
    assert "Not comparable" not in report.to_markdown(report.build_report(full))


def test_cifar_eps_reads_k_over_255():
    assert report.format_eps("cifar10", 8 / 255) == "8/255"
    assert report.format_eps("cifar10", 0.03) == "0.03"
    assert report.format_eps("mnist", 0.1) == "0.1"
    rows = report.sweep_table([_sweep_record("cifar10", "mlp", 2 / 255, 0.5, 0.6)])
    assert rows[1][2] == "2/255"


def test_protocol_is_stated_once_and_html_has_contents_and_full_width_tables(tmp_path):
    records = [{**RECORD, "model": m} for m in ("mlp", "convnet", "resnet")]
    tables = report.parameters_tables(records)
    assert len(tables["Defence"]) == 2 and len(tables["Attacks"]) == 2 and len(tables["Classifiers"]) == 4
    (tmp_path / "results.json").write_text(json.dumps({**RESULTS, "records": records}))
    _, page = report.write_report(tmp_path)
    html = page.read_text()
    assert '<h2 id="table-1--fgsm">Table 1 — FGSM</h2>' in html and '<a href="#table-1--fgsm">' in html
    assert "width:100%" in html
