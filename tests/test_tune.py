"""``ddl tune``: the Pareto front, the choice rule, the intervals, the resumable Optuna study,
the argument checks, and that tuning never reads a test image.

The studies run on 300 images of the bundled MNIST sample behind the zoo MLP, with a search
space of 64 settings and budgets of 2 steps, so a trial takes a fraction of a second."""

from __future__ import annotations

import json
import math
import sys

import pytest

from ddl.experiments import tune

TINY_SPACE = {"patch_size": (5, 6), "n_components": (16, 32), "n_nonzero_coefs": (1, 2),
              "remove_mean": (True, False), "method": ("online", "mod"), "step": (1, 2)}
TINY = {"n_val": 30, "n_robust": 8, "space": TINY_SPACE, "max_patches": 2000, "population_size": 3,
        "budgets": {"pgd_steps": 2, "apgd_iter": 2, "square_queries": 5}, "progress": False}


@pytest.fixture
def train_only(monkeypatch):
    """``ddl.data.load_dataset`` serving 300 sample training images and refusing the test split."""
    import ddl.data

    def load(name, split, *, data_dir=None, download=False):
        if split != "train":
            raise RuntimeError(f"tuning read the {split} split of {name}")
        x, y = ddl.data.load_sample("train")
        return x[:300], y[:300]

    monkeypatch.setattr(ddl.data, "load_dataset", load)
    return load


def _fake_evaluation(calls):
    """A stand-in for ``tune._evaluate_setting`` (same signature): outcomes that depend on the
    parameters, so the sampler has something to optimise; records the trial numbers it ran."""
    def evaluate(item, *, n_robust, x_val, **shared):
        p = item["params"]
        if "number" in item:
            calls.append(item["number"])
        n_clean = min(len(x_val), 20 - 3 * p["n_nonzero_coefs"] + p["patch_size"] + (p["method"] == "mod"))
        n_robust_ok = min(n_robust, p["n_nonzero_coefs"] + p["step"] + p["remove_mean"] + p["n_components"] // 16)
        return {"clean": "1" * n_clean + "0" * (len(x_val) - n_clean),
                "robust": "1" * n_robust_ok + "0" * (n_robust - n_robust_ok),
                "first_breaks": {}, "flags": [], "fit_seconds": 0.0, "seconds": 0.0}
    return evaluate


# --- the statistics, by hand --------------------------------------------------------------------
def test_pareto_front_keeps_exactly_the_non_dominated_points():
    points = [(0.99, 0.10), (0.98, 0.20), (0.95, 0.20), (0.90, 0.40), (0.90, 0.40), (0.85, 0.35),
              (0.99, 0.05), (0.70, 0.40), (0.60, 0.45)]
    front = tune.pareto_front(points)
    assert front == [0, 1, 3, 4, 8]          # 3 and 4 are equal: neither dominates the other

    def dominates(a, b):
        return a[0] >= b[0] and a[1] >= b[1] and a != b

    assert not any(dominates(q, points[i]) for i in front for q in points)
    assert all(any(dominates(points[i], points[j]) for i in front) for j in set(range(len(points))) - set(front))
    assert tune.pareto_front([]) == [] and tune.pareto_front([(0.5, 0.5)]) == [0]
    with pytest.raises(ValueError, match=r"pareto_front: every point must be a \(clean, robust\) pair; got "
                                         r"\(0\.5, 0\.1, 0\.2\) at index 1"):
        tune.pareto_front([(0.5, 0.5), (0.5, 0.1, 0.2)])


def test_the_interval_of_a_score_is_wilsons_computed_by_hand():
    z = 1.959963984540054                       # two-sided 95 % normal quantile
    for k, n in ((7, 8), (287, 300), (0, 30), (30, 30)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        s = tune.score(k, n)
        assert s["accuracy"] == p and s["correct"] == k and s["n"] == n
        assert s["ci"] == pytest.approx([centre - half, centre + half], abs=1e-12)
    assert [round(v, 4) for v in tune.score(7, 8)["ci"]] == [0.5291, 0.9776]


def _rows(*points, n=1000):
    return [{"number": i, "clean": tune.score(round(c * n), n), "robust": tune.score(round(r * n), n)}
            for i, (c, r) in enumerate(points)]


def test_the_choice_is_the_most_robust_point_within_the_best_clean_interval():
    rows = _rows((0.990, 0.10), (0.982, 0.30), (0.970, 0.50), (0.981, 0.40))
    low = tune.score(990, 1000)["ci"][0]
    assert 0.981 < low < 0.982                  # 0.981 falls outside the interval, 0.982 inside
    assert tune.choose_point(rows)["number"] == 1
    ties = _rows((0.99, 0.3), (0.99, 0.3))
    assert tune.choose_point(ties)["number"] == 0  # the earlier trial
    with pytest.raises(ValueError, match="choose_point: rows must hold at least one point"):
        tune.choose_point([])


def test_a_clean_drop_in_points_sets_the_floor_below_the_best_clean_accuracy():
    # the CIFAR-10 front's shape: each clean point costs robustness (results/tuning)
    rows = _rows((0.855, 0.002), (0.836, 0.022), (0.705, 0.116), (0.641, 0.178))
    assert tune.choose_point(rows)["number"] == 1            # default: within 85.5 %'s interval (83.3 %)
    assert tune.choose_point(rows, 2)["number"] == 1         # floor 83.5 %
    assert tune.choose_point(rows, 1.8)["number"] == 0       # floor 83.7 %: only the best clean point
    assert tune.choose_point(rows, 15)["number"] == 2        # floor 70.5 %, reached exactly
    assert tune.choose_point(rows, 20)["number"] == 2        # floor 65.5 %
    assert tune.choose_point(rows, 100)["number"] == 3       # the most robust point of the front
    assert tune.clean_floor(rows, 15) == pytest.approx(0.705)
    assert "at most 15 points below the best clean accuracy" in tune.selection_rule(15)
    for bad in (-1, 101, True):
        with pytest.raises(ValueError, match=r"^choose_point: max_clean_drop must be a number of points in "
                                             r"\[0, 100\] or None; got "):
            tune.choose_point(rows, bad)


def test_settings_are_indistinguishable_when_both_intervals_overlap():
    a, b, c = _rows((0.98, 0.30), (0.975, 0.32), (0.98, 0.45), n=300)
    assert tune.indistinguishable(a, b) and tune.indistinguishable(b, a)
    assert not tune.indistinguishable(a, c)     # 90/300 vs 135/300 robust: intervals apart


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"dataset": "svhn"}, "tune_defence: dataset must be one of"),
    ({"model": "resnet50"}, "tune_defence: model must be one of"),
    ({"n_trials": 0}, r"tune_defence: n_trials must be an int >= 1; got 0"),
    ({"n_val": 30, "n_robust": 31}, r"tune_defence: n_robust must be an int in \[1, n_val=30\]; got 31"),
    ({"eps": 0.0}, r"tune_defence: eps .*got 0\.0"),
    ({"eps": 1.5}, r"tune_defence: eps .*got 1\.5"),
    ({"population_size": 1}, r"tune_defence: population_size must be an int >= 2; got 1"),
    ({"attacks": ()}, r"tune_defence: attacks must name at least one attack; got \(\)"),
    ({"attacks": ("pgd:bdpa",)}, "bdpa"),
    ({"budgets": {"steps": 3}}, r"tune_defence: budgets keys must be among .*got \['steps'\]"),
    ({"budgets": {"pgd_steps": 0}}, r"tune_defence: budgets\['pgd_steps'\] must be an int >= 1; got 0"),
    ({"space": {**TINY_SPACE, "atoms": (8,)}}, "tune_defence: space must map exactly patch_size"),
    ({"space": {**TINY_SPACE, "n_nonzero_coefs": ()}}, r"space\['n_nonzero_coefs'\] must be a non-empty tuple"),
    ({"space": {**TINY_SPACE, "n_nonzero_coefs": (1, 40)}},
     r"every n_nonzero_coefs must be <= every n_components; got n_nonzero_coefs \(1, 40\)"),
    ({"space": {**TINY_SPACE, "step": (2,)}}, r"space\['step'\] must include 1 .*got \(2,\)"),
    ({"space": {**TINY_SPACE, "method": ("lars",)}}, r"space\['method'\] must hold methods .*got \['lars'\]"),
])
def test_bad_arguments_are_refused_in_one_line_before_any_work(kwargs, message, tmp_path, monkeypatch):
    import ddl.data

    monkeypatch.setattr(ddl.data, "load_dataset", lambda *a, **k: pytest.fail("loaded a data set"))
    kwargs = {"dataset": "mnist", **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        tune.tune_defence(kwargs.pop("dataset"), run_dir=tmp_path / "run", **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_a_patch_larger_than_the_images_is_refused(train_only, tmp_path):
    with pytest.raises(ValueError, match=r"space\['patch_size'\] 30 must fit the 28x28 images"):
        tune.plan_tuning("mnist", run_dir=tmp_path, n_val=30, n_robust=8, space={**TINY_SPACE, "patch_size": (5, 30)})


def test_without_optuna_tuning_says_which_extra_to_install(train_only, tmp_path, monkeypatch, capsys):
    from ddl.cli import main

    monkeypatch.setitem(sys.modules, "optuna", None)      # import optuna raises ImportError
    with pytest.raises(tune.TuneError, match=r'needs optuna, the tune extra: pip install -e "\.\[tune\]"'):
        tune.tune_defence("mnist", run_dir=tmp_path / "run", **TINY)
    assert main(["tune", "--datasets", "mnist", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddl tune: error: tune_defence: needs optuna") and err.count("\n") == 1
    assert '".[tune]"' in err


# --- the study ----------------------------------------------------------------------------------
def test_a_study_never_reads_a_test_image_and_writes_a_defence_reproduce_reads(train_only, tmp_path, monkeypatch,
                                                                                 capsys):
    """End to end through the CLI, real evaluations: the loader refuses the test split."""
    pytest.importorskip("optuna")
    from ddl.cli import main
    from ddl.experiments.config import DefenceConfig, get_preset, load_tuned

    with pytest.raises(RuntimeError, match="test split"):
        train_only("mnist", "test")
    monkeypatch.setitem(tune.SPACE, "mnist", TINY_SPACE)
    run = tmp_path / "run"
    argv = ["tune", "--datasets", "mnist", "--trials", "4", "--population", "2", "--n-val", "30",
            "--n-robust", "8", "--pgd-steps", "2", "--apgd-iter", "2", "--square-queries", "5",
            "--max-patches", "2000", "--run-dir", str(run), "--threads", "1", "-q"]
    assert main(argv) == 0
    summary = json.loads((run / "tune-mnist.json").read_text())
    assert summary["n_trials"] == 4 and summary["model"] == "mlp" and summary["eps"] == 0.2
    assert summary["classifier"]["default_for_dataset"] and summary["classifier"]["file"] == "mlp_mnist.pt"
    assert summary["validation"] == "last 30 of 300 training images"
    points = {t["number"]: (t["clean"]["accuracy"], t["robust"]["accuracy"]) for t in summary["trials"]
              if t["duplicate_of"] is None}
    front = [list(points)[i] for i in tune.pareto_front(list(points.values()))]
    assert sorted(summary["front"]) == sorted(front) and summary["chosen"]["number"] in front
    for t in summary["trials"]:
        assert t["robust"]["n"] == 8 and t["clean"]["n"] == 30
        assert t["clean"]["ci"] == tune.score(t["clean"]["correct"], 30)["ci"]
    assert summary["reference"]["params"]["patch_size"] == load_tuned()["mnist"].patch_size
    assert summary["check_with_square"]["chosen"]["attacks"][-1] == "square"
    assert (run / "front-mnist.png").stat().st_size > 10_000
    best = DefenceConfig(**summary["best"])
    assert load_tuned(run / "tuned_defence.json")["mnist"] == best
    assert get_preset("tuned", tuned_file=run / "tuned_defence.json").defence["mnist"] == best
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == (f"saved {run / 'tuned_defence.json'}; use it with `ddl reproduce --preset "
                                    f"tuned --tuned-defence {run / 'tuned_defence.json'}`")
    assert main(argv) == 0                      # a second run finds the study done: nothing re-run
    assert json.loads((run / "tune-mnist.json").read_text())["trials"] == summary["trials"]


def test_an_interrupted_study_resumes_with_no_repeated_trial_and_as_if_uninterrupted(train_only, tmp_path,
                                                                                     monkeypatch):
    optuna = pytest.importorskip("optuna")
    calls: list[int] = []
    fake = _fake_evaluation(calls)
    monkeypatch.setattr(tune, "_evaluate_setting", fake)
    args = {**TINY, "check": False}
    whole = tune.tune_defence("mnist", run_dir=tmp_path / "whole", n_trials=8, **args)

    def interrupted(item, **shared):
        if len(calls) == 4:                    # the fifth trial evaluated: Ctrl-C
            raise KeyboardInterrupt
        return fake(item, **shared)

    calls.clear()
    monkeypatch.setattr(tune, "_evaluate_setting", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune.tune_defence("mnist", run_dir=tmp_path / "run", n_trials=8, **args)
    before = list(calls)
    partial = tune.summarise_study("mnist", run_dir=tmp_path / "run")    # what the study holds, nothing run
    assert calls == before and partial["partial"]["unfinished_trials"] >= 1
    assert partial["n_trials"] == partial["partial"]["complete_trials"] < 8
    study = optuna.load_study(study_name="ddl-tune-mnist", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert "RUNNING" in states and set(before) <= {t.number for t in study.trials if t.state.name == "COMPLETE"}
    monkeypatch.setattr(tune, "_evaluate_setting", fake)
    resumed = tune.tune_defence("mnist", run_dir=tmp_path / "run", n_trials=8, **args)
    study = optuna.load_study(study_name="ddl-tune-mnist", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert [t.number for t in study.trials] == list(range(8))
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert len(calls) == len(set(calls))        # no trial evaluated twice, across both runs
    assert not set(before) & set(calls[len(before):])
    assert [t["params"] for t in resumed["trials"]] == [t["params"] for t in whole["trials"]]
    scores = lambda s: [(t["clean"], t["robust"]) for t in s["trials"]]     # noqa: E731
    assert scores(resumed) == scores(whole)
    n = len(calls)
    again = tune.tune_defence("mnist", run_dir=tmp_path / "run", n_trials=10, **args)  # asking for more
    assert again["n_trials"] == 10 and len(calls) - n <= 2 and len(calls) == len(set(calls))


def test_a_trial_interrupted_before_its_parameters_were_drawn_is_failed_not_repeated(train_only, tmp_path,
                                                                                      monkeypatch):
    optuna = pytest.importorskip("optuna")
    monkeypatch.setattr(tune, "_evaluate_setting", _fake_evaluation([]))
    args = {**TINY, "check": False}
    tune.tune_defence("mnist", run_dir=tmp_path, n_trials=3, **args)
    study = optuna.load_study(study_name="ddl-tune-mnist", storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.ask().suggest_categorical("patch_size", [5, 6])   # asked, then the run died
    summary = tune.tune_defence("mnist", run_dir=tmp_path, n_trials=5, **args)
    study = optuna.load_study(study_name="ddl-tune-mnist", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3 + ["FAIL"] + ["COMPLETE"] * 2
    assert summary["n_trials"] == 5


def test_a_new_study_starts_from_the_shipped_defence_and_scores_it_once(train_only, tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    from ddl.experiments.config import load_tuned

    fake, unnumbered = _fake_evaluation([]), []

    def evaluate(item, **shared):            # records the units that are not trials
        if "number" not in item:
            unnumbered.append(item)
        return fake(item, **shared)

    monkeypatch.setattr(tune, "_evaluate_setting", evaluate)
    shipped = load_tuned()["mnist"]
    space = {**TINY_SPACE, "patch_size": (5, shipped.patch_size), "n_components": (16, shipped.n_components)}
    summary = tune.tune_defence("mnist", run_dir=tmp_path, n_trials=4, **{**TINY, "space": space, "check": False})
    assert summary["trials"][0]["params"] == {k: getattr(shipped, k) for k in tune._PARAMS}
    assert summary["reference"]["trial"] == 0 and unnumbered == []   # scored as trial 0, not again
    assert summary["reference"]["robust"] == summary["trials"][0]["robust"]
    cold = tune.tune_defence("mnist", run_dir=tmp_path / "cold", n_trials=4, warm_start=False,
                             **{**TINY, "space": space, "check": False})
    assert cold["reference"]["trial"] is None and len(unnumbered) == 1
    unnumbered.clear()
    checked = tune.tune_defence("mnist", run_dir=tmp_path / "checked", n_trials=4, **{**TINY, "space": space})
    same = checked["chosen"]["params"] == checked["reference"]["params"]
    assert len(unnumbered) == (1 if same else 2)      # Square checks: one evaluation per distinct setting
    assert checked["check_with_square"]["chosen"]["attacks"][-1] == "square"
    assert ("is the shipped one" in checked["verdict"]) == same
    assert sorted(map(int, checked["front_vs_reference"])) == sorted(checked["front"])
    for n, tests in checked["front_vs_reference"].items():      # the paired difference is the accuracies'
        row = next(t for t in checked["trials"] if t["number"] == int(n))
        assert tests["robust"]["difference"] == pytest.approx(row["robust"]["accuracy"]
                                                              - checked["reference"]["robust"]["accuracy"])


def test_a_study_resumes_only_with_its_own_settings(train_only, tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.setattr(tune, "_evaluate_setting", _fake_evaluation([]))
    args = {**TINY, "check": False}
    tune.tune_defence("mnist", run_dir=tmp_path, n_trials=2, **args)
    with pytest.raises(tune.TuneError, match=r"holds study 'ddl-tune-mnist' made with other settings "
                                             r"\(eps: 0\.2 there, 0\.3 now\)") as info:
        tune.tune_defence("mnist", run_dir=tmp_path, n_trials=2, eps=0.3, **args)
    assert "\n" not in str(info.value)


def test_ray_workers_give_the_study_a_serial_run_gives(train_only, tmp_path):
    """The trials run as units on two local Ray workers; the driver alone writes the study."""
    pytest.importorskip("optuna")
    pytest.importorskip("ray")
    from ddl._parallel import Engine

    args = {**TINY, "check": False}
    serial = tune.tune_defence("mnist", run_dir=tmp_path / "serial", n_trials=4, population_size=2,
                               **{k: v for k, v in args.items() if k != "population_size"})
    with Engine(workers=2) as engine:
        ray = tune.tune_defence("mnist", run_dir=tmp_path / "ray", n_trials=4, population_size=2, engine=engine,
                                **{k: v for k, v in args.items() if k != "population_size"})
    assert ray["engine"] == "ray, 2 local workers"
    assert [(t["params"], t["clean"], t["robust"]) for t in ray["trials"]] == \
           [(t["params"], t["clean"], t["robust"]) for t in serial["trials"]]
