"""ddl.experiments.robust_training_report: the worst case over an arm's runs, the counts with
Wilson intervals and the paired McNemar tests (checked against SciPy), and the section that
``ddl report --robust-training`` embeds."""

from __future__ import annotations

import json

import pytest
from scipy.stats import binomtest

from ddl.experiments import robust_training_report as rtr
from test_report import RESULTS

N = 8


def _record(clean, worst, *, variant, defence=None, attacks=("pgd:bpda",), flags=()):
    """A robustness record on N images: ``clean`` and ``worst`` (ε key → bits) as 0/1 strings."""
    bits = lambda s: [int(c) for c in s]                                            # noqa: E731
    return {"n_images": N, "image_indices": list(range(N)), "defence": defence,
            "model_info": {"source": "zoo", "name": "convnet", "variant": variant},
            "clean_correct": {"defended": bits(clean), "bare": bits(clean)},
            "worst_survival": {k: bits(v) for k, v in worst.items()},
            "flags": [{"code": f} for f in flags],
            "params": {"attacks": list(attacks), "pgd_steps": 20, "apgd_iter": 20, "square_queries": 200,
                       "cascade": True, "eot_samples": 1}}


ADV = _record("11111110", {"0.1": "11111100", "0.3": "11110000"}, variant="adversarial")
ADV_AA = _record("11111110", {"0.3": "11010000"}, variant="adversarial", attacks=("apgd-ce:bpda", "square"),
                 flags=("weak_attack",))
ADV = dict(ADV, flags=[{"code": "weak_attack"}], compute_seconds=10.0)
ADV_AA = dict(ADV_AA, compute_seconds=2.5)
DDL = _record("11111011", {"0.1": "11110001", "0.3": "10000000"}, variant="adversarial-ddl",
              defence={"name": "tuned"}, flags=("zero_gradients",))


def _wilson(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [ci.low, ci.high]


def test_union_is_the_worst_case_over_runs_at_each_eps_and_keeps_the_first_elsewhere():
    arm = rtr.union([ADV, ADV_AA], ["a.json", "aa.json"])
    # 0.3: robust only where both runs left the image standing (11110000 and 11010000)
    assert arm["worst_survival"]["0.3"] == [True, True, False, True, False, False, False, False]
    assert arm["worst_survival"]["0.1"] == [bool(int(c)) for c in "11111100"]   # only the first run has 0.1
    assert arm["params"]["also"] == [{"file": "aa.json", "attacks": ["apgd-ce:bpda", "square"], "eps": ["0.3"]}]
    assert arm["flags"] == [{"code": "weak_attack"}]                 # fired by both runs: listed once
    assert arm["compute_seconds"] == 12.5                            # both runs' attack compute
    assert rtr.union([ADV, dict(ADV_AA, compute_seconds=None)], ["a", "b"])["compute_seconds"] is None
    other = dict(ADV_AA, clean_correct={"defended": [1] * N, "bare": [1] * N})
    with pytest.raises(ValueError, match=r"^robust_training_report\.union: records must be runs on the same images "
                                         r"and model; b\.json is not on those of a\.json \(clean predictions differ "
                                         r"first at image 7\)$"):
        rtr.union([ADV, other], ["a.json", "b.json"])


def test_summary_counts_intervals_and_paired_tests_agree_with_scipy():
    arms = {"adversarial": rtr.union([ADV, ADV_AA], ["a.json", "aa.json"]), "adversarial-ddl": DDL}
    s = rtr.summarise(arms, dataset="mnist", model="convnet")
    assert s["eps"] == ["0.1", "0.3"]
    adv, ddl = s["arms"]["adversarial"], s["arms"]["adversarial-ddl"]
    assert adv["clean"]["k"] == 7 and adv["worst_case"]["0.3"]["k"] == 3 and ddl["worst_case"]["0.1"]["k"] == 5
    assert adv["clean"]["ci"] == pytest.approx(_wilson(7, N), abs=1e-12)
    assert ddl["worst_case"]["0.3"]["ci"] == pytest.approx(_wilson(1, N), abs=1e-12)
    # ddl − adversarial at 0.3: 10000000 vs 11010000 → b10 = 0 (only ddl), b01 = 2 (only adversarial)
    (t,) = [t for t in s["paired"] if t["eps"] == "0.3"]
    assert (t["a"], t["b"], t["b10"], t["b01"]) == ("adversarial-ddl", "adversarial", 0, 2)
    assert t["difference"] == pytest.approx((1 - 3) / N)
    assert t["p_value"] == pytest.approx(binomtest(0, 2, 0.5).pvalue)
    # clean: 11111011 vs 11111110 → b10 1, b01 1, p 1
    (c,) = [t for t in s["paired"] if t["eps"] == "clean"]
    assert (c["b10"], c["b01"]) == (1, 1) and c["p_value"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"^robust_training_report\.summarise: every arm must be on the images of "
                                         r"'adversarial' \(8 images from 0\); arm 'x' has 8 from 1$"):
        rtr.summarise({"adversarial": ADV, "x": dict(DDL, image_indices=list(range(1, N + 1)))},
                      dataset="mnist", model="convnet")
    with pytest.raises(ValueError, match=r"^robust_training_report\.summarise: arms must hold at least one arm; "
                                         r"got none$"):
        rtr.summarise({}, dataset="mnist", model="convnet")


def test_training_curves_come_from_the_zoo_log_of_an_arm_named_after_its_variant(tmp_path):
    hist = {"loss": [0.5, 0.4], "accuracy": [0.9, 0.95], "robust_accuracy": [0.6, 0.7],
            "val_accuracy": [0.91, 0.96], "eps": [0.15, 0.3], "seconds": [100.4, 99.6]}
    (tmp_path / "convnet_mnist_adversarial.json").write_text(
        json.dumps({"history": hist, "adversarial": {"method": "pgd"}, "finetune_seconds": 200.0}))
    s = rtr.summarise({"adversarial": ADV, "behind the dictionary": dict(ADV, defence={"name": "tuned"})},
                      dataset="mnist", model="convnet", zoo_logs=tmp_path)
    assert s["arms"]["adversarial"]["training"]["history"] == hist
    assert "training" not in s["arms"]["behind the dictionary"]      # the same variant, but not its arm
    from ddl.experiments.report import to_markdown

    md = to_markdown(rtr.section_blocks(s, heading="h1", title="T"))
    assert md.startswith("# T\n")
    assert "| adversarial | 2 | 0.3 | 95.00 | 70.00 | 96.00 | 100 |" in md
    assert "cpu seconds" not in md                                  # logs from before ddl kept CPU time
    cifar = dict(s, dataset="cifar10", arms={"adversarial": {**s["arms"]["adversarial"], "training": {
        "history": {**hist, "eps": [4 / 255, 8 / 255], "cpu_seconds": [None, 80.4]}}}})
    md_cifar = to_markdown(rtr.section_blocks(cifar))
    assert "| adversarial | 1 | 4/255 | 90.00 | 60.00 | 91.00 | 100 | — |" in md_cifar
    assert "| adversarial | 2 | 8/255 | 95.00 | 70.00 | 96.00 | 100 | 80 |" in md_cifar
    assert "| behind the dictionary | tuned | 87.5 % [52.9, 97.8] | 75.0 % [40.9, 92.9] | 50.0 % [21.5, 78.5] | weak_attack |" in md


def test_ddl_report_embeds_the_section_from_a_folder_of_summaries(tmp_path, capsys):
    from ddl.cli import main

    arms = {"adversarial": rtr.union([ADV, ADV_AA], ["results/a.json", "results/aa.json"]), "adversarial-ddl": DDL}
    (tmp_path / "rt" / "cifar10").mkdir(parents=True)
    (tmp_path / "rt" / "summary.json").write_text(json.dumps(rtr.summarise(arms, dataset="mnist", model="convnet")))
    (tmp_path / "rt" / "cifar10" / "summary.json").write_text(
        json.dumps(rtr.summarise({"adversarial": ADV}, dataset="cifar10", model="convnet")))
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(RESULTS))
    assert main(["report", str(run), "--robust-training", str(tmp_path / "rt")]) == 0
    md = (run / "report.md").read_text()
    assert "\n## Adversarial training with and without the dictionary\n" in md
    assert md.index("\n### MNIST convnet\n") < md.index("\n### CIFAR-10 convnet\n")    # ddl's data-set order
    assert ("| adversarial-ddl | tuned | 87.5 % [52.9, 97.8] | 62.5 % [30.6, 86.3] | 12.5 % [2.2, 47.1] | "
            "zero_gradients |") in md
    assert "| adversarial-ddl − adversarial | 0.3 | -25.0 points [" in md and "| 0 / 2 | 0.5 |" in md
    assert "adversarial: also attacked by `apgd-ce:bpda square` (`results/aa.json`, ε 0.3" in md
    assert "| adversarial | none | 87.5 % [52.9, 97.8] | 75.0 % [40.9, 92.9] | 37.5 % [13.7, 69.4] | weak_attack |" in md
    assert "<h4>Paired tests against adversarial" in (run / "report.html").read_text()
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert main(["report", str(run), "--robust-training", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--robust-training: no summary.json of tools/robust_training_table.py in" in err
    assert main(["report", str(run), "--robust-training", str(tmp_path / "nowhere")]) == 2
    assert f"--robust-training: {tmp_path / 'nowhere'} is not a folder" in capsys.readouterr().err
    old = rtr.summarise({"adversarial": ADV}, dataset="mnist", model="convnet")
    del old["suite"], old["arms"]["adversarial"]["defence_name"]      # as an older tool wrote it
    (tmp_path / "rt" / "summary.json").write_text(json.dumps(old))
    assert main(["report", str(run), "--robust-training", str(tmp_path / "rt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith(
        f"--robust-training: {tmp_path / 'rt' / 'summary.json'} is not a summary of tools/robust_training_table.py "
        "as this ddl writes it (missing suite); rerun tools/robust_training_tables.sh")
    (tmp_path / "rt" / "summary.json").write_text("{")
    assert main(["report", str(run), "--robust-training", str(tmp_path / "rt")]) == 2
    assert f"--robust-training: {tmp_path / 'rt' / 'summary.json'} cannot be read as JSON" in capsys.readouterr().err
