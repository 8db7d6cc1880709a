"""The report renders results exactly (golden file) and reads the paper's numbers.

The golden file renders the record ``pipeline.evaluate`` computes on hand-made tensors
(``_golden_record``), and every number of that record is checked against a hand computation."""

import json
import math
import re
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
    # RECORD has no recorded intervals (written before ddl recorded them): each is the Wilson interval
    # of accuracy x n_images correct images, here of 9931, 8012, 9234, 9876 of 10,000 and 617 of 1,234
    # (scipy.stats.binomtest(k, n).proportion_ci(method="wilson"), in percent, rounded to 0.1)
    rows = report.comparison_table([RECORD], report.load_paper_tables(), "fgsm")
    assert len(rows) == 1 + 10
    convnet_mnist = rows[2]
    assert convnet_mnist[:5] == ["convnet", "MNIST", "99.35 → 99.31 [99.1, 99.5]", "79.9 → 80.12 [79.3, 80.9]",
                                 "90.46 → 92.34 [91.8, 92.8]"]
    assert convnet_mnist[5:] == ["98.76 [98.5, 99.0]", "1234, 50.00 [47.2, 52.8]"]
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


def _wilson(k, n):
    """scipy's Wilson interval of k of n, the reference of every interval here."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(method="wilson")
    return [ci.low, ci.high]


def test_evaluate_gives_the_intervals_and_paired_tests_of_the_hand_made_record():
    # tallies from DESIGN (see the test above): right clean 0-6, perturbed 0-2, denoised 0-4,
    # denoised clean 0-5; high-confidence subset 3-6, of which denoised gets 3 and 4 right
    record, _ = evaluated_record()
    ci = record["accuracy_ci"]
    for kind, k in (("clean", 7), ("perturbed", 3), ("denoised", 5), ("denoised_clean", 6)):
        assert ci[kind] == pytest.approx(_wilson(k, 8), rel=1e-12, abs=1e-15), kind
    assert ci["high_confidence"]["perturbed"] == pytest.approx(_wilson(0, 4), rel=1e-12, abs=1e-15)
    assert ci["high_confidence"]["perturbed"][0] == 0.0
    assert ci["high_confidence"]["denoised"] == pytest.approx(_wilson(2, 4), rel=1e-12)
    assert record["accuracy_ci_method"] == {"method": "wilson", "confidence": 0.95}
    tests = record["paired_tests"]
    # denoised vs perturbed: only denoised right on 3 and 4, never only perturbed:
    # p = P(0 or 2 heads of 2 fair coins) = 2 · (1/2)² = 0.5
    t = tests["denoised_vs_perturbed"]
    assert (t["n_images"], t["b10"], t["b01"], t["p_value"], t["difference"]) == (8, 2, 0, 0.5, 0.25)
    # denoised clean vs clean: only clean right on 6: one discordant image, p = 2 · 1/2 = 1
    t = tests["denoised_clean_vs_clean"]
    assert (t["n_images"], t["b10"], t["b01"], t["p_value"], t["difference"]) == (8, 0, 1, 1.0, -0.125)
    # on the subset 3-6, perturbed is never right (that is the subset); denoised is on 3 and 4
    t = tests["high_confidence_denoised_vs_perturbed"]
    assert (t["n_images"], t["b10"], t["b01"], t["p_value"], t["difference"]) == (4, 2, 0, 0.5, 0.5)
    json.dumps(record)  # plain numbers only


def test_markdown_matches_golden_file():
    # the golden file is the report of the record checked above (tests/_golden_record.py regenerates it)
    md = report.to_markdown(report.build_report(golden_results()))
    assert md == (GOLDEN / "report_small.md").read_text()


def test_golden_file_holds_the_hand_computed_cells():
    # a wrong number in the golden file fails here and in test_markdown_matches_golden_file
    golden = (GOLDEN / "report_small.md").read_text()
    # accuracies 7/8, 3/8, 5/8, 6/8; high-confidence subset 4 images, 2 of 4 denoised right, with the
    # Wilson intervals (scipy) of 7, 3, 5, 6 of 8 and 2 of 4, in percent
    # (no adaptive record of this run: its adaptive column reads "not evaluated")
    assert "| convnet | MNIST | 99.35 → 87.50 [52.9, 97.8] | 79.9 → 37.50 [13.7, 69.4] | " \
           "90.46 → 62.50 [30.6, 86.3] | not evaluated | 75.00 [40.9, 92.9] | 4, 50.00 [15.0, 85.0] |" in golden
    assert [round(100 * v, 1) for k, n in ((7, 8), (3, 8), (5, 8), (6, 8), (2, 4)) for v in _wilson(k, n)] == \
        [52.9, 97.8, 13.7, 69.4, 30.6, 86.3, 40.9, 92.9, 15.0, 85.0]
    # PSNR 20·log10(10), 20·log10(20); SSIM 0.96588, 0.98885; confidence (5·0.98 + 3·0.5)/8, (7·0.98 + 0.5)/8
    assert "| MNIST | convnet | fgsm | 8 | 20.00 | 26.02 | 0.966 | 0.989 | 0.800 → 0.920 |" in golden
    assert "| MNIST | fgsm | eps=0.1 | 8 |" in golden
    assert "| MNIST | convnet | zoo | 5 | – |" in golden
    # paired tests: +25 points (2 / 0 discordant, p 0.5), -12.5 (0 / 1, p 1), subset +50 (2 / 0, p 0.5)
    row = next(line for line in golden.splitlines() if line.startswith("| MNIST | convnet | fgsm | 8 | +25.00"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5:7] == ["2 / 0", "0.5"] and cells[8:10] == ["0 / 1", "1"] and cells[11:13] == ["2 / 0", "0.5"]
    assert cells[7].startswith("-12.50 [") and cells[10].startswith("+50.00 [")


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
    assert "<td>90.46 → 92.34 [91.8, 92.8]</td>" in page
    assert "![A figure](fig.png)" in md_path.read_text()


def test_an_old_record_without_intervals_gets_them_from_its_counts_or_says_it_has_none():
    # RECORD (no accuracy_ci): 99.31 % of 10,000 images is 9,931 images, so its interval is exact
    assert report.interval_of(RECORD, "clean") == pytest.approx(_wilson(9931, 10000), rel=1e-12)
    assert report.interval_of(RECORD, "denoised", "high_confidence") == pytest.approx(_wilson(617, 1234), rel=1e-12)
    assert report.interval_of(RECORD, "perturbed", "high_confidence") == pytest.approx(_wilson(0, 1234), rel=1e-12)
    # 0.5 of 3 images is no whole number of images: no interval, and the report says why
    odd = {**RECORD, "n_images": 3, "accuracy": {**RECORD["accuracy"], "clean": 0.5}}
    assert report.interval_of(odd, "clean") is None
    assert report.interval_of(odd, "perturbed") is None  # 0.8012 of 3 neither
    md = report.to_markdown(report.build_report({**RESULTS, "records": [odd]}))
    assert "| convnet | MNIST | 99.35 → 50.00 | 79.9 → 80.12 | " in md
    assert report.NO_INTERVAL in md
    assert report.NO_INTERVAL not in report.to_markdown(report.build_report(RESULTS))
    # no per-image predictions were recorded: no paired test, said in words, and no empty table
    assert "No paired test is recorded for 1 of the 1 cells" in md
    assert "| data set | model | attack | images | denoised − perturbed" not in md


def test_a_recorded_interval_is_printed_as_recorded():
    record = {**RECORD, "accuracy_ci": {"clean": [0.5, 0.75], "perturbed": None, "denoised": [0.9, 0.95],
                                        "denoised_clean": [0.125, 0.25],
                                        "high_confidence": {"perturbed": [0.0, 0.1], "denoised": None}}}
    row = report.comparison_table([record], report.load_paper_tables(), "fgsm")[2]
    assert row[2:] == ["99.35 → 99.31 [50.0, 75.0]", "79.9 → 80.12", "90.46 → 92.34 [90.0, 95.0]",
                       "98.76 [12.5, 25.0]", "1234, 50.00"]


def test_paired_tests_table_from_recorded_tests():
    t = {"n_images": 1000, "b01": 3, "b10": 240, "p_value": 2.2e-66, "difference": 0.237,
         "difference_ci": [0.21, 0.2641], "confidence": 0.95}
    u = {**t, "b01": 12, "b10": 4, "p_value": 0.0768, "difference": -0.008, "difference_ci": [-0.0171, 0.0009]}
    record = {**RECORD, "n_images": 1000,
              "paired_tests": {"denoised_vs_perturbed": t, "denoised_clean_vs_clean": u,
                               "high_confidence_denoised_vs_perturbed": None}}
    rows = report.paired_table([record, RECORD])  # the old record has no row
    assert rows[1] == ["MNIST", "convnet", "fgsm", "1000", "+23.70 [+21.0, +26.4]", "240 / 3", "2.2e-66",
                       "-0.80 [-1.7, +0.1]", "4 / 12", "0.077", "–", "–", "–"]
    assert len(rows) == 2
    md = report.to_markdown(report.build_report({**RESULTS, "records": [record, RECORD]}))
    assert "## Paired tests" in md and "No paired test is recorded for 1 of the 2 cells" in md


MACHINE = {"ddl_version": "0.1.0", "git_commit": "0123abcd", "python": "3.12.3", "platform": "Linux-6.8-x86_64",
           "torch": "2.5.1", "blas": {"torch_blas": "mkl", "torch_mkl": "2024.2", "torch_cpu_capability": "AVX2"},
           "omp_kernel": {"requested": "auto", "used": "native", "compiler": "gcc 13.2.0"},
           "cpu": {"model": "Some CPU", "machine": "x86_64", "flags_sha256": "0011223344556677", "cores": 2},
           "threads": {"torch": 1, "interop": 2}, "device": "cpu"}


def test_the_report_says_what_produced_the_results(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({**RESULTS, "machine": MACHINE}))
    md_path, html_path = report.write_report(tmp_path)
    md, page = md_path.read_text(), html_path.read_text()
    section = md.split("## Produced by\n", 1)[1]
    for text in ("ddl 0.1.0 (commit 0123abcd)", "torch 2.5.1, BLAS mkl 2024.2 (AVX2)",
                 "OMP kernel native (asked: auto), compiler gcc 13.2.0",
                 "CPU Some CPU (x86_64, 2 cores, flags sha256 0011223344556677)", "threads: torch 1, inter-op 2"):
        assert text in section and text in page, text
    assert '<h2 id="produced-by">Produced by</h2>' in page
    # a results file from before ddl.provenance (platform, torch, threads) prints what it has
    old = report.to_markdown(report.build_report(
        {**RESULTS, "machine": {"platform": "Linux-x", "torch": "2.2.0", "threads": 2, "device": "cpu"}}))
    assert "platform Linux-x" in old and "threads: 2" in old and "torch 2.2.0" in old
    assert "machine: not recorded" in report.to_markdown(report.build_report(RESULTS))


def _sweep_record(dataset, model, eps, perturbed, denoised):
    return {"dataset": dataset, "model": model, "attack": "fgsm", "attack_params": {"eps": eps}, "n_images": 500,
            "accuracy": {"clean": 0.99, "perturbed": perturbed, "denoised": denoised, "denoised_clean": 0.98}}


def test_matched_eps_row_is_the_sweep_point_nearest_the_papers_perturbed_accuracy():
    # paper MNIST MLP FGSM: perturbed 12.8 %, denoised 82 %; |60.6-12.8|, |12.8-12.8|, |8.6-12.8|
    sweep = [_sweep_record("mnist", "mlp", 0.1, 0.606, 0.90), _sweep_record("mnist", "mlp", 0.2, 0.128, 0.70),
             _sweep_record("mnist", "mlp", 0.3, 0.086, 0.40)]
    rows = report.matched_eps_table(sweep, report.load_paper_tables())
    # intervals of 64, 350 and 490 correct of 500 images (scipy's Wilson interval, in percent)
    assert rows[1] == ["MNIST", "mlp", "12.8", "0.2", "12.80 [10.2, 16.0]", "82", "70.00 [65.8, 73.9]",
                       "98.00 [96.4, 98.9]"]
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
    assert report.eps_label(8 / 255, "cifar10") == "8/255"
    assert report.eps_label(0.03, "cifar10") == "0.03"
    assert report.eps_label(0.0, "cifar10") == "0"
    assert report.eps_label(0.1, "mnist") == "0.1"
    assert report.eps_label(1 / 3, "mnist") == "0.3333"
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


# --- inline marks in the HTML (issue 20) --------------------------------------------------------
def test_code_spans_and_escaped_names_do_not_open_an_emphasis(tmp_path):
    from ddl.experiments.robustness_report import INTRO, md_escape, robustness_rows

    page = report.to_html([report.Block("p", "`apgd-*` are APGD; an image is robust if *every* attack failed")],
                          tmp_path)
    assert "<p><code>apgd-*</code> are APGD; an image is robust if <em>every</em> attack failed</p>" in page
    intro = report.to_html([report.Block("p", INTRO)], tmp_path)
    assert "<code>apgd-*</code> are AutoAttack" in intro and "*" not in intro.replace("<code>apgd-*</code>", "")
    assert md_escape("conv*net_v2|[x]") == r"conv\*net\_v2\|\[x\]"
    k = repr(0.1)
    record = {"dataset": "mnist", "model": "conv*net_v2", "n_images": 10, "eps": [0.1],
              "clean_accuracy": {"bare": 1.0, "defended": 0.9}, "bare_pgd": {k: 0.0},
              "attacks": {"pgd:oblivious": {k: 0.5}}, "worst_case": {k: 0.5},
              "strongest_attack": {k: "pgd:oblivious"}, "flags": [], "params": {}}
    rows = robustness_rows([record], "mnist")
    assert rows[1][0] == r"conv\*net\_v2"
    table = report.to_html([report.Block("table", rows=rows)], tmp_path)
    assert "<td>conv*net_v2</td>" in table and "<em>" not in table
    assert "|" not in report.to_markdown([report.Block("p", md_escape("a|b"))]).replace(r"\|", "")


# --- the adaptive worst case beside the oblivious number in the first table (issue 20, item 2) --
#: an FGSM cell of the tuned defence (k = 1, the zoo's 'tuned' dictionary) in front of a zoo classifier
TUNED_CELL = {**RECORD, "defence_params": {"patch_size": 7, "n_components": 256, "n_nonzero_coefs": 1,
                                           "remove_mean": False},
              "dictionary": {"source": "zoo", "name": "tuned"}, "model_info": {"source": "zoo", "epochs": 5}}
#: a hand-made 50-image robustness record of that defence: 40 of 50 images survive every attack at
#: ε 0.1 and 48 of 50 the oblivious PGD (no recorded interval: the Wilson ones of those counts)
ADAPTIVE = {"dataset": "mnist", "model": "convnet", "n_images": 50, "eps": [0.1, 0.3],
            "model_info": {"source": "zoo", "name": "convnet", "variant": "standard"},
            "defence": {"name": "tuned", "patch_size": 7, "n_components": 256, "n_nonzero_coefs": 1,
                        "remove_mean": False},
            "clean_accuracy": {"bare": 1.0, "defended": 0.98},
            "attacks": {"pgd:oblivious": {"0.1": 0.96, "0.3": 0.9}, "pgd:bpda": {"0.1": 0.8, "0.3": 0.0}},
            "worst_case": {"0.1": 0.8, "0.3": 0.0}, "bare_pgd": {"0.1": 0.5, "0.3": 0.0}, "flags": [],
            "params": {"pgd_steps": 20, "pgd_restarts": 1, "apgd_iter": 20, "square_queries": 200,
                       "cascade": True},
            "machine": {"ddl_version": "0.1.0", "git_commit": "abc123",
                        "cpu": {"model": "Test CPU", "machine": "x86_64", "cores": 2, "flags_sha256": "ff"},
                        "threads": {"torch": 1, "interop": 2}}}
# Wilson intervals (scipy.stats.binomtest(k, 50).proportion_ci(method="wilson"), in percent, 0.1):
# 40/50 -> [67.0, 88.8], 48/50 -> [86.5, 98.9]
CONVNET_ROW = ("| convnet | MNIST | 99.35 → 99.31 [99.1, 99.5] | 79.9 → 80.12 [79.3, 80.9] | "
               "90.46 → 92.34 [91.8, 92.8] | {adaptive} | 98.76 [98.5, 99.0] | 1234, 50.00 [47.2, 52.8] |")


def _adaptive_report(tmp_path, cell, record, name="rob") -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "mnist-convnet.json").write_text(json.dumps(record))
    (folder / "notes.json").write_text(json.dumps({"not": "a record"}))  # not a robustness record: ignored
    blocks = report.build_report({**RESULTS, "records": [cell]}, adaptive=report.adaptive_from_folder(folder))
    return report.to_markdown(blocks)


def test_first_table_puts_the_adaptive_worst_case_beside_the_oblivious_number(tmp_path):
    md = _adaptive_report(tmp_path, TUNED_CELL, ADAPTIVE)
    table1 = md.split("## Table 1 — FGSM", 1)[1].split("\n## ", 1)[0]
    assert ("| model | data set | clean (paper → ours) | perturbed (paper → ours) | denoised (paper → ours) | "
            "adaptive worst case, same ε (ours) | denoised clean (ours) | high-conf. subset: n, denoised |") in table1
    assert CONVNET_ROW.format(adaptive="80.0 [67.0, 88.8], N = 50") in table1
    assert "| mlp | MNIST | 98.39 → – | 12.8 → – | 82 → – | not evaluated | – | – |" in table1
    assert report.ADAPTIVE_NOTE in table1
    # where the number comes from: the file, its images, attacks and budgets, its own oblivious PGD
    # beside its worst case on the same images, and the machine and commit that produced it
    source = str(tmp_path / "rob" / "mnist-convnet.json")
    assert (f"| MNIST | convnet | `{source}` | 50 | pgd:oblivious, pgd:bpda; PGD 20 steps × 1, APGD 20 "
            f"iterations, Square 200 queries; `--cascade` | ε 0.1: 96.0 [86.5, 98.9] → 80.0 [67.0, 88.8] | "
            f"ddl 0.1.0 (commit abc123); CPU Test CPU (x86_64, 2 cores, flags sha256 ff); "
            f"threads: torch 1, inter-op 2 |") in table1
    assert "not evaluated for this defence" not in md


def test_an_adaptive_record_of_another_defence_is_not_borrowed(tmp_path):
    # the paper's defence (k = 38, mean removed) in front of the same classifier: the tuned record is not its own
    paper_cell = {**TUNED_CELL, "defence_params": {"patch_size": 7, "n_components": 256, "n_nonzero_coefs": 38,
                                                   "remove_mean": True}, "dictionary": {"name": "paper"}}
    md = _adaptive_report(tmp_path, paper_cell, ADAPTIVE)
    assert CONVNET_ROW.format(adaptive="not evaluated") in md and "80.0 [67.0, 88.8]" not in md
    folder = tmp_path / "rob"
    assert ("**Adaptive worst case: not evaluated for this defence.** No adaptive attack (one that knows the "
            "denoiser) was run against this run's defence, so the adaptive column reads *not evaluated*, and the "
            "*denoised* column (the paper's oblivious protocol: the attack is computed on the bare classifier) "
            f"is no robustness number. The adaptive records in `{folder}` are of another defence (dictionary "
            "'tuned'). MNIST: n_nonzero_coefs 38 here, 1 there; remove_mean True here, False there; dictionary "
            f"'paper' here, 'tuned' there. They are not borrowed here; that defence's adaptive numbers are in "
            f"`{folder}/README.md`.\n") in md
    # nor a record of the same defence in front of another classifier variant
    fine_tuned = {**ADAPTIVE, "model_info": {"source": "zoo", "variant": "denoised"}}
    assert report.defence_mismatch(TUNED_CELL, fine_tuned) == "classifier variant standard here, denoised there"
    assert report.defence_mismatch(TUNED_CELL, {k: v for k, v in ADAPTIVE.items() if k != "defence"}) == \
        "the record does not say which defence it attacked"
    assert report.defence_mismatch(TUNED_CELL, ADAPTIVE) is None


def test_a_record_without_the_tables_eps_reads_not_evaluated_at_that_eps(tmp_path):
    at_03 = {**ADAPTIVE, "eps": [0.3], "worst_case": {"0.3": 0.0},
             "attacks": {"pgd:oblivious": {"0.3": 0.9}, "pgd:bpda": {"0.3": 0.0}}}
    md = _adaptive_report(tmp_path, TUNED_CELL, at_03)
    assert CONVNET_ROW.format(adaptive="not evaluated at ε 0.1") in md
    assert "| the record has ε 0.3 only |" in md


def test_a_runs_own_robustness_records_are_used_without_a_folder():
    results = {**RESULTS, "records": [RECORD], "robustness": [ADAPTIVE],
               "machine": {"ddl_version": "0.1.0", "git_commit": "def456"}}
    md = report.to_markdown(report.build_report(results))
    # its own records are of its defence by construction (RECORD's k = 38 is not checked against them)
    assert CONVNET_ROW.format(adaptive="80.0 [67.0, 88.8], N = 50") in md
    assert "| MNIST | convnet | results.json (robustness) | 50 |" in md and "| ddl 0.1.0 (commit def456) |" in md
    # a run with neither says so in one sentence below its first table
    plain = report.to_markdown(report.build_report(RESULTS))
    assert CONVNET_ROW.format(adaptive="not evaluated") in plain
    assert ("This run did not run the adaptive suite and no adaptive records were given "
            "(`ddl report RUN --robustness DIR`).") in plain


def test_the_marks_say_what_they_certify():
    verdicts = report.load_verdicts()
    tuned = report.verdict_lookup(verdicts, "tuned")
    assert report.mark_rules(tuned) == {"clean": "✓ ≥ paper on the full test set",
                                        "denoised": "✓ ≥ paper under the paper's oblivious protocol"}
    # the paper preset's literal reading (k = 38) is judged with 3 points of slack (reference/verdicts.json)
    assert report.mark_rules(report.verdict_lookup(verdicts, "paper"))["denoised"] == \
        "✓ ≥ paper − 3 points under the paper's oblivious protocol"
    rows = report.comparison_table([RECORD], report.load_paper_tables(), "fgsm", tuned)
    assert rows[0][2] == "clean (paper → ours; ✓ ≥ paper on the full test set)"
    assert rows[0][4] == "denoised (paper → ours; ✓ ≥ paper under the paper's oblivious protocol)"
    assert report.mark_rules({}) == {}


def test_cli_report_takes_a_folder_of_robustness_records(tmp_path, capsys):
    from ddl.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({**RESULTS, "records": [TUNED_CELL]}))
    (tmp_path / "rob").mkdir()
    (tmp_path / "rob" / "mnist-convnet.json").write_text(json.dumps(ADAPTIVE))
    assert main(["report", str(run), "--robustness", str(tmp_path / "rob")]) == 0
    assert CONVNET_ROW.format(adaptive="80.0 [67.0, 88.8], N = 50") in (run / "report.md").read_text()
    assert "<td>80.0 [67.0, 88.8], N = 50</td>" in (run / "report.html").read_text()
    capsys.readouterr()
    assert main(["report", str(run), "--robustness", str(tmp_path / "nowhere")]) == 2
    assert f"--robustness: {tmp_path / 'nowhere'} is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(run), "--robustness", str(tmp_path / "empty")]) == 2
    assert "no robustness records" in capsys.readouterr().err


ROOT = Path(__file__).resolve().parents[1]


def test_committed_reports_put_the_adaptive_worst_case_in_their_first_table():
    tuned = (ROOT / "results" / "tuned" / "report.md").read_text()
    table1 = tuned.split("## Table 1 — FGSM", 1)[1].split("\n## ", 1)[0]
    cells = [line.strip("|").split(" | ") for line in table1.splitlines() if line.startswith("| ")]
    first = [c for c in cells if len(c) == 8 and c[1] in ("MNIST", "CIFAR-10")]  # the comparison rows
    assert len(first) == 10 and all(", N = " in c[5] for c in first), "an adaptive cell of results/tuned is missing"
    # every record it names is committed beside it, and the marks say what they certify
    for path in re.findall(r"`(results/robustness/[\w-]+\.json)`", table1):
        assert (ROOT / path).is_file(), path
    assert "✓ ≥ paper under the paper's oblivious protocol" in table1
    paper = (ROOT / "results" / "paper" / "report.md").read_text()
    table1 = paper.split("## Table 1 — FGSM", 1)[1].split("\n## ", 1)[0]
    assert "**Adaptive worst case: not evaluated for this defence.**" in table1 and ", N = " not in table1
    assert "`results/robustness/README.md`" in table1
