"""The report renders results exactly (golden file) and reads the paper's numbers.

The golden file renders the record ``pipeline.evaluate`` computes on hand-made tensors
(``_golden_record``), and every number of that record is checked against a hand computation."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _golden_record import DESIGN, KINDS, SHIFT, clean_value, evaluated_record, golden_results, images
from skimage.metrics import structural_similarity

from ddl.experiments import report

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


def test_evaluate_on_hand_made_tensors_gives_the_hand_computed_record():
    # _golden_record: 8 constant images, image i all i/8 with label i; a lookup "classifier" whose
    # prediction and confidence for each image are listed in DESIGN ("sure": softmax of
    # [log 441, 0 x 9] = 441/450 = 0.98; "unsure": [log 9, 0 x 9] = 9/18 = 0.5).
    record, arrays = evaluated_record()
    assert [[p for p, _ in row] for row in zip(*DESIGN)] == [arrays[f"pred_{k}"].tolist() for k in KINDS]
    assert (record["dataset"], record["model"], record["attack"], record["attack_params"], record["n_images"]) == \
        ("mnist", "convnet", "fgsm", {"eps": 0.1}, 8)

    acc = record["accuracy"]
    assert acc["clean"] == 7 / 8           # images 0-6 right; 7 predicted 8
    assert acc["perturbed"] == 3 / 8       # 0 (unchanged), 1, 2 right; 3, 4, 6 → 9; 5, 7 → 8
    assert acc["denoised"] == 5 / 8        # 0-4 right; 5 → 8, 6 → 9, 7 → 8
    assert acc["denoised_clean"] == 6 / 8  # 0-5 right; 6 → 9, 7 → 8
    # high-confidence subset: perturbed wrong with confidence >= 0.9: 3, 4, 5, 6 (0.98); not 7 (0.5)
    assert acc["high_confidence"] == {"threshold": 0.9, "n_images": 4, "perturbed": 0 / 4, "denoised": 2 / 4}
    assert arrays["high_confidence_mask"].tolist() == [False] * 3 + [True] * 4 + [False]  # denoised: 3, 4 right

    # mean confidence with s "sure" of 8: (0.98 s + 0.5 (8 - s)) / 8
    conf = record["confidence"]
    assert conf["clean"] == pytest.approx((6 * 0.98 + 2 * 0.5) / 8, abs=1e-6)            # 0.86
    assert conf["perturbed"] == pytest.approx((5 * 0.98 + 3 * 0.5) / 8, abs=1e-6)        # 0.80
    assert conf["denoised"] == pytest.approx((7 * 0.98 + 1 * 0.5) / 8, abs=1e-6)         # 0.92
    assert conf["denoised_clean"] == pytest.approx((4 * 0.98 + 4 * 0.5) / 8, abs=1e-6)   # 0.74
    assert [conf[k] for k in KINDS] == pytest.approx([0.86, 0.80, 0.92, 0.74], abs=1e-6)

    # PSNR: every changed pixel moves by δ, so MSE = δ² and PSNR = 20·log10(1/δ); image 0 is unchanged
    # (PSNR +inf), left out of the mean and counted as identical
    psnr = record["psnr"]
    assert SHIFT == {"perturbed": 0.1, "denoised": 0.05, "denoised_clean": 0.025}
    assert psnr["perturbed"] == pytest.approx(20.0, abs=1e-4)                        # 20·log10(10)
    assert psnr["denoised"] == pytest.approx(20 * math.log10(20), abs=1e-4)           # 26.0206
    assert psnr["denoised_clean"] == pytest.approx(20 * math.log10(40), abs=1e-4)     # 32.0412
    assert psnr["n_identical"] == {"perturbed": 1, "denoised": 1, "denoised_clean": 1}
    assert math.isinf(arrays["psnr_perturbed"][0])

    # SSIM of two constant images a and b: the local variances and covariance are 0, so the contrast-
    # structure term is C2/C2 = 1 and SSIM = (2ab + C1) / (a² + b² + C1), C1 = (0.01 · 1)² (Wang et al.
    # eq. 13). Image 0 is unchanged: 1. Means over the 8 images: 0.96588, 0.98885, 0.99677.
    c1 = 0.01 ** 2
    for kind, mean in (("perturbed", 0.96588), ("denoised", 0.98885), ("denoised_clean", 0.99677)):
        a = [clean_value(i) for i in range(8)]
        b = [a[0]] + [v + SHIFT[kind] for v in a[1:]]
        hand = [(2 * ai * bi + c1) / (ai ** 2 + bi ** 2 + c1) for ai, bi in zip(a, b)]
        assert arrays[f"ssim_{kind}"].tolist() == pytest.approx(hand, abs=1e-6)
        assert record["ssim"][kind] == pytest.approx(sum(hand) / 8, abs=1e-6)
        assert record["ssim"][kind] == pytest.approx(mean, abs=1e-5)
        # and scikit-image with ddl's settings (metrics.ssim's docstring) agrees
        clean, other = images("clean").numpy(), images(kind).numpy()
        sk = [structural_similarity(other[i], clean[i], gaussian_weights=True, sigma=1.5, data_range=1.0,
                                    use_sample_covariance=False, channel_axis=0) for i in range(8)]
        assert record["ssim"][kind] == pytest.approx(float(np.mean(sk)), abs=1e-6)


def test_markdown_matches_golden_file():
    # the golden file is the report of the record checked above (tests/_golden_record.py regenerates it)
    md = report.to_markdown(report.build_report(golden_results()))
    assert md == (GOLDEN / "report_small.md").read_text()


def test_golden_file_holds_the_hand_computed_cells():
    # a wrong number in the golden file fails here and in test_markdown_matches_golden_file
    golden = (GOLDEN / "report_small.md").read_text()
    # accuracies 7/8, 3/8, 5/8, 6/8; high-confidence subset 4 images, 2 of 4 denoised right
    assert "| convnet | MNIST | 99.35 → 87.50 | 79.9 → 37.50 | 90.46 → 62.50 | 75.00 | 4, 50.00 |" in golden
    # PSNR 20·log10(10), 20·log10(20); SSIM 0.96588, 0.98885; confidence (5·0.98 + 3·0.5)/8, (7·0.98 + 0.5)/8
    assert "| MNIST | convnet | fgsm | 8 | 20.00 | 26.02 | 0.966 | 0.989 | 0.800 → 0.920 |" in golden
    assert "| MNIST | fgsm | eps=0.1 | 8 |" in golden
    assert "| MNIST | convnet | zoo | 5 | – |" in golden


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
