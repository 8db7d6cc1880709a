"""ddl.experiments.robustness_report: intervals in every cell, paired tests and the machine."""

from __future__ import annotations

import pytest

from ddl.experiments.robustness_report import (accuracy_ci, paired_test_lines, pct_ci, robustness_markdown,
                                               robustness_rows)


def _record(**extra):
    k = repr(8 / 255)
    return {"dataset": "cifar10", "model": "resnet", "n_images": 10, "eps": [8 / 255],
            "clean_accuracy": {"bare": 0.9, "defended": 0.8}, "bare_pgd": {k: 0.0},
            "attacks": {"pgd:oblivious": {k: 0.7}, "pgd:soft": {k: 0.3}}, "worst_case": {k: 0.2},
            "strongest_attack": {k: "pgd:soft"}, "flags": [], "unbounded_accuracy": None,
            "params": {}, **extra}


def test_an_old_record_gets_the_wilson_interval_of_its_counts():
    rec = _record()
    # 2 of 10: scipy.stats.binomtest(2, 10).proportion_ci(method="wilson")
    assert accuracy_ci(rec, "worst_case", repr(8 / 255)) == pytest.approx([0.056682151454375, 0.509837528463358],
                                                                          abs=1e-14)
    assert pct_ci(rec, "worst_case", repr(8 / 255)) == "20.0 [5.7, 51.0]"
    assert pct_ci(rec, "attacks", "square", repr(8 / 255)) == "—"            # not run
    assert accuracy_ci(dict(rec, worst_case={repr(8 / 255): 0.123}), "worst_case", repr(8 / 255)) is None


def test_a_recorded_interval_is_printed_as_recorded():
    k = repr(8 / 255)
    rec = _record(accuracy_ci={"worst_case": {k: [0.111, 0.444]}, "clean_accuracy": {}, "attacks": {},
                               "bare_pgd": {}, "unbounded_accuracy": None})
    assert pct_ci(rec, "worst_case", k) == "20.0 [11.1, 44.4]"
    rows = robustness_rows([rec], "cifar10")
    assert rows[0] == ["model", "ε", "N", "clean (bare)", "clean (defended)", "bare PGD", "oblivious", "pgd:soft",
                       "**worst case**", "strongest"]
    assert rows[1][-2:] == ["**20.0 [11.1, 44.4]**", "pgd:soft"]


def test_paired_tests_and_the_machine_are_in_the_markdown():
    k = repr(8 / 255)
    rec = _record(paired_tests={
        "defended_vs_bare_clean": {"difference": -0.1, "difference_ci": [-0.4, 0.2], "p_value": 1.0},
        "worst_case_vs_bare_pgd": {k: {"difference": 0.2, "difference_ci": [-0.05, 0.5], "p_value": 0.5}},
        "worst_case_vs_oblivious": {k: {"difference": -0.5, "difference_ci": [-0.75, -0.2],
                                        "p_value": 0.03125}}},
        machine={"ddl_version": "1.2", "torch": "2.1", "device": "cpu"})
    assert paired_test_lines(rec) == [
        "clean, defended vs bare: -10.0 points [-40.0, +20.0], p = 1",
        "worst case vs bare model under PGD: ε 8/255: +20.0 points [-5.0, +50.0], p = 0.5",
        "worst case vs oblivious PGD: ε 8/255: -50.0 points [-75.0, -20.0], p = 0.031"]
    md = robustness_markdown([rec])
    assert "- resnet, worst case vs oblivious PGD: ε 8/255: -50.0 points [-75.0, -20.0], p = 0.031" in md
    assert "- resnet: ddl 1.2; torch 2.1; device cpu" in md
    tiny = dict(rec, paired_tests={"defended_vs_bare_clean": {"difference": 0.5, "difference_ci": [0.3, 0.7],
                                                              "p_value": 2e-7}})
    assert paired_test_lines(tiny) == ["clean, defended vs bare: +50.0 points [+30.0, +70.0], p < 0.0001"]


def test_cascade_columns_are_labelled_cumulative():
    k = repr(8 / 255)
    attacks = {"pgd:oblivious": {k: 0.7}, "pgd:soft": {k: 0.3}, "square": {k: 0.2}}
    cascade = _record(attacks=attacks, params={"cascade": True})
    assert robustness_rows([cascade], "cifar10")[0] == [
        "model", "ε", "N", "clean (bare)", "clean (defended)", "bare PGD", "oblivious", "pgd:soft (cumulative)",
        "square (cumulative)", "**worst case**", "strongest"]
    # oblivious first in the cascade ran on every image: its own accuracy; later, it is cumulative
    late = _record(attacks={"pgd:soft": {k: 0.3}, "pgd:oblivious": {k: 0.3}}, params={"cascade": True})
    assert robustness_rows([late], "cifar10")[0][6:8] == ["oblivious (cumulative)", "pgd:soft"]
    # without cascade no label; a mix says which rows ran with cascade
    assert "cumulative" not in " ".join(robustness_rows([_record(attacks=attacks)], "cifar10")[0])
    mixed = robustness_rows([cascade, _record(attacks=attacks, model="convnet")], "cifar10")
    assert mixed[0][7:9] == ["pgd:soft (cumulative under cascade)", "square (cumulative under cascade)"]
    assert [row[0] for row in mixed[1:]] == ["resnet (cascade)", "convnet"]


def test_the_cifar10_eps_axis_is_in_grey_levels(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from ddl.experiments.robustness_report import plot_robustness

    k2, k8 = repr(2 / 255), repr(8 / 255)
    cifar = _record(eps=[2 / 255, 8 / 255], bare_pgd={k2: 0.1, k8: 0.0}, worst_case={k2: 0.4, k8: 0.2},
                    attacks={"pgd:oblivious": {k2: 0.8, k8: 0.7}})
    mnist = _record(dataset="mnist", eps=[0.1, 0.3], bare_pgd={"0.1": 0.5, "0.3": 0.0},
                    worst_case={"0.1": 0.5, "0.3": 0.1}, attacks={"pgd:oblivious": {"0.1": 0.9, "0.3": 0.8}})
    drawn, savefig = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), savefig(fig, *a, **k))[1])
    plot_robustness([mnist, cifar], tmp_path / "robustness.png")
    ax_mnist, ax_cifar = drawn[0].axes
    assert [t.get_text() for t in ax_cifar.get_xticklabels()] == ["0", "2/255", "8/255"]
    assert list(ax_cifar.get_xticks()) == [0.0, 2 / 255, 8 / 255]
    assert ax_cifar.get_xlabel() == "ε (L∞, grey levels k/255)" and ax_mnist.get_xlabel() == "ε (L∞)"
    assert (tmp_path / "robustness.png").is_file()
