"""ddl.experiments.robustness_run: the evaluation's cache name holds everything a result depends
on, and the terminal table prints intervals, paired tests and the machine."""

from __future__ import annotations

import pytest
import torch

import ddl.robustness._cache as rcache
from ddl.defence import DictionaryDenoiser
from ddl.defence.purifiers import MedianSmoothing
from ddl.experiments.robustness_run import cache_key, format_table


@pytest.fixture(scope="module")
def den():
    x = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    return DictionaryDenoiser(patch_size=2, n_components=6, n_nonzero_coefs=1, remove_mean=False,
                              max_patches=500).fit(x)


def _key(den, **change):
    kw = dict(parts={"model": "m", "n": 10}, defence=den, attacks=("pgd:bpda", "square"),
              budgets={"pgd_steps": 5, "beta": 10.0, "cascade": True}, seed=0)
    kw.update(change)
    return cache_key(kw.pop("parts"), **kw)


def test_cache_key_holds_attack_order_budgets_defence_state_and_kernel(den, monkeypatch):
    base = _key(den)
    assert _key(den) == base and len(base) == 16
    other_dictionary = DictionaryDenoiser.from_dictionary(-den.dictionary_, patch_size=2, n_nonzero_coefs=1,
                                                          remove_mean=False)
    changed = [_key(den, attacks=("square", "pgd:bpda")), _key(den, attacks=("square",)),
               _key(den, budgets={"pgd_steps": 6, "beta": 10.0, "cascade": True}),
               _key(den, budgets={"pgd_steps": 5, "beta": 5.0, "cascade": True}),
               _key(den, budgets={"pgd_steps": 5, "beta": 10.0, "cascade": False}),
               _key(den, seed=1), _key(other_dictionary), _key(MedianSmoothing(size=3).fit()), _key(None)]
    assert len({base, *changed}) == len(changed) + 1
    other = {"native": "torch", "torch": "native"}[rcache.omp_kernel_name("cpu")]
    monkeypatch.setattr(rcache, "omp_kernel_name", lambda device: other)
    assert _key(den) != base


def _record(**extra):
    k1, k3 = repr(0.1), repr(0.3)
    return {"dataset": "mnist", "model": "convnet", "n_images": 4, "eps": [0.1, 0.3],
            "defence": {"name": "tuned"}, "clean_accuracy": {"bare": 1.0, "defended": 0.75},
            "bare_pgd": {k1: 0.25, k3: 0.0}, "attacks": {"pgd:bpda": {k1: 0.5, k3: 0.25}},
            "worst_case": {k1: 0.5, k3: 0.0}, "strongest_attack": {k1: "pgd:bpda", k3: "pgd:bpda"},
            "seconds": {"pgd:bpda": 1.25}, "flags": [], "unbounded_accuracy": None, "params": {}, **extra}


def test_format_table_prints_every_accuracy_with_its_interval():
    table = format_table(_record())
    # Wilson intervals of k of 4 (scipy.stats.binomtest(k, 4).proportion_ci(method="wilson"))
    assert "clean: bare 100.0 [51.0, 100.0]   defended 75.0 [30.1, 95.4]" in table
    assert "bare model, PGD     25.0 [4.6, 69.9]     0.0 [0.0, 49.0]" in table
    assert "pgd:bpda           50.0 [15.0, 85.0]    25.0 [4.6, 69.9]       1.2" in table
    assert "WORST CASE         50.0 [15.0, 85.0]     0.0 [0.0, 49.0]" in table
    assert "produced by" not in table and "paired tests" not in table      # an old record has neither


def test_format_table_prints_paired_tests_and_machine():
    paired = {"defended_vs_bare_clean": {"difference": -0.25, "difference_ci": [-0.6, 0.2], "p_value": 1.0},
              "worst_case_vs_bare_pgd": {repr(0.1): {"difference": 0.25, "difference_ci": [-0.2, 0.6],
                                                     "p_value": 1.0},
                                         repr(0.3): {"difference": 0.0, "difference_ci": [-0.4, 0.4],
                                                     "p_value": 1.0}}}
    machine = {"ddl_version": "9.9", "git_commit": "abc", "torch": "2.0", "omp_kernel": {"used": "torch",
               "requested": "torch"}, "cpu": {"model": "X", "machine": "x86_64", "cores": 2,
               "flags_sha256": "f00"}, "threads": {"torch": 1, "interop": 1}, "device": "cpu"}
    table = format_table(_record(paired_tests=paired, machine=machine, params={"cascade": True}))
    assert "  clean, defended vs bare: -25.0 points [-60.0, +20.0], p = 1" in table
    assert ("  worst case vs bare model under PGD: ε 0.1: +25.0 points [-20.0, +60.0], p = 1; "
            "ε 0.3: +0.0 points [-40.0, +40.0], p = 1") in table
    assert ("cascade: each attack after the first ran only on the images the attacks above it left, so its row "
            "is cumulative (the accuracy after it and every attack above it)") in table
    assert ("produced by: ddl 9.9 (commit abc); torch 2.0; OMP kernel torch (asked: torch); CPU X (x86_64, "
            "2 cores, flags sha256 f00); threads: torch 1, inter-op 1; device cpu") in table


def test_format_table_explains_oblivious_and_adaptive_and_labels_cascade_rows_cumulative():
    k1, k3 = repr(0.1), repr(0.3)
    record = _record(attacks={"pgd:oblivious": {k1: 0.75, k3: 0.5}, "pgd:bpda": {k1: 0.5, k3: 0.25},
                              "square": {k1: 0.5, k3: 0.0}},
                     seconds={"pgd:oblivious": 1.0, "pgd:bpda": 2.0, "square": 3.0},
                     cpu_seconds={"pgd:oblivious": 0.5, "pgd:bpda": None, "square": 2.5}, params={"cascade": True})
    assert format_table(record).splitlines()[:11] == [
        "mnist / convnet / defence: tuned — 4 test images, accuracy % [95 % Wilson interval] (misclassified "
        "clean images count as broken)",
        "oblivious: PGD on the bare model, then the image is denoised (the paper's protocol: the attacker never "
        "sees the defence)",
        "adaptive: every other attack row attacks through the defence (bpda, exact, soft: how the gradient "
        "passes it; square: no gradient, queries only)",
        "judge the defence by WORST CASE: an image counts as robust only if every attack failed on it",
        "cascade: each attack after the first ran only on the images the attacks above it left, so its row is "
        "cumulative (the accuracy after it and every attack above it)",
        "clean: bare 100.0 [51.0, 100.0]   defended 75.0 [30.1, 95.4]",
        "eps                                   0.1                 0.3   seconds (wall, cpu of all threads)",
        "bare model, PGD          25.0 [4.6, 69.9]     0.0 [0.0, 49.0]",
        "pgd:oblivious           75.0 [30.1, 95.4]   50.0 [15.0, 85.0]       1.0     0.5",
        "pgd:bpda (cumulative)   50.0 [15.0, 85.0]    25.0 [4.6, 69.9]       2.0       -",
        "square (cumulative)     50.0 [15.0, 85.0]     0.0 [0.0, 49.0]       3.0     2.5"]
    plain = format_table(dict(record, params={"cascade": False}))
    assert "cumulative" not in plain
    assert "\npgd:bpda           50.0 [15.0, 85.0]    25.0 [4.6, 69.9]       2.0       -\n" in plain


# --- the output folder: locked while computing, refused when it cannot be written (issue 20) ----
@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """Keyword arguments of a run_robustness on 8 synthetic MNIST-shaped images, an untrained MLP
    checkpoint, no defence and one 1-step PGD."""
    import ddl.data
    from ddl.data.synthetic import make_blobs_images
    from ddl.models import build_model
    from ddl.models.checkpoint import save_checkpoint

    monkeypatch.setattr(ddl.data, "load_dataset", lambda name, split, *, data_dir=None: make_blobs_images(
        8, shape=(1, 28, 28), seed=0))
    save_checkpoint(tmp_path / "m.pt", build_model("mlp", (1, 28, 28)).eval(),
                    {"architecture": "mlp", "input_shape": [1, 28, 28], "n_classes": 10, "dataset": "mnist"})
    return dict(dataset="mnist", checkpoint=str(tmp_path / "m.pt"), defence="none", eps=[0.1], n_images=4,
                attacks=["pgd:oblivious"], budgets={"pgd_steps": 1}, out=tmp_path / "rob", progress=False)


def test_run_robustness_holds_the_lock_of_its_folder_while_it_computes(tiny, monkeypatch):
    import fcntl
    import os

    import ddl.robustness
    from ddl.experiments.robustness_run import run_robustness

    out, real, held = tiny["out"], ddl.robustness.evaluate_robustness, []

    def spy(*args, **kwargs):
        fd = os.open(out / ".ddl.lock", os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        held.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(ddl.robustness, "evaluate_robustness", spy)
    run_robustness(**tiny)
    assert held == [True] and (out / "robustness.json").is_file() and not (out / ".ddl.lock").exists()


def test_a_second_run_on_a_locked_folder_waits_or_is_refused(tiny, monkeypatch):
    import fcntl
    import json
    import os

    import ddl.robustness
    from ddl.errors import RunFolderError
    from ddl.experiments.robustness_run import run_robustness

    out = tiny["out"]
    out.mkdir()
    fd = os.open(out / ".ddl.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another run holds the folder
        os.write(fd, json.dumps({"pid": 4242, "host": "elsewhere"}).encode())
        monkeypatch.setattr(ddl.robustness, "evaluate_robustness", lambda *a, **k: pytest.fail("computed"))
        with pytest.raises(RunFolderError) as info:
            run_robustness(**tiny, wait=False)
    finally:
        os.close(fd)
    assert str(info.value) == (f"ddl robustness: --out {out}: {out} is in use by another ddl run (PID 4242 on "
                               f"elsewhere); wait for it to finish or choose another run folder")


def test_a_folder_that_cannot_be_written_is_refused_before_the_model_is_loaded(tiny, monkeypatch, read_only):
    import ddl.models.checkpoint
    from ddl.errors import RunFolderError
    from ddl.experiments.robustness_run import run_robustness

    out = tiny["out"]
    out.mkdir()
    read_only(out)
    monkeypatch.setattr(ddl.models.checkpoint, "load_checkpoint", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(RunFolderError) as info:
        run_robustness(**tiny)
    assert str(info.value) == (f"ddl robustness: --out {out}: cannot write {out}: read-only file system; nothing "
                               f"can be computed in a folder that cannot be written")
    assert list(out.iterdir()) == []


def test_a_checkpoint_that_records_adversarial_training_is_not_flagged_for_resisting_pgd(tiny, tmp_path):
    """weak_attack expects PGD to break a standard bare model at MNIST's 0.3. A model PGD cannot
    move (constant logits) fires it; the same model in a checkpoint whose record says it was
    adversarially trained on raw images (as `ddl train --adversarial` writes) does not, and the
    record and the table say so; trained through a defence (adversarial-ddl) it still fires."""
    import json

    import torch
    from torch import nn

    from ddl.data.synthetic import make_blobs_images
    from ddl.experiments.robustness_run import format_table, run_robustness
    from ddl.models import build_model
    from ddl.models.checkpoint import save_checkpoint

    _, y = make_blobs_images(8, shape=(1, 28, 28), seed=0)         # the fixture's images
    label = int(torch.mode(y[:4]).values)
    net = build_model("mlp", (1, 28, 28)).eval()
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():                                          # constant logits: PGD cannot move them
        last.weight.zero_()
        last.bias.copy_(10 * nn.functional.one_hot(torch.tensor(label), 10).float())
    base = {"architecture": "mlp", "input_shape": [1, 28, 28], "n_classes": 10, "dataset": "mnist"}
    runs = {}
    for name, extra in (("plain", {}), ("adversarial", {"adversarial": {"method": "pgd", "eps": 0.3,
                                                                         "defence_sha256": None}}),
                        ("adversarial-ddl", {"adversarial": {"method": "pgd", "eps": 0.3, "defence_sha256": "ab"}})):
        save_checkpoint(tmp_path / f"{name}.pt", net, {**base, **extra})
        runs[name] = run_robustness(**{**tiny, "eps": [0.3], "checkpoint": str(tmp_path / f"{name}.pt"),
                                       "out": tmp_path / f"rob-{name}"})
    codes = {n: {f["code"] for f in r["flags"]} for n, r in runs.items()}
    assert runs["plain"]["bare_pgd"]["0.3"] == runs["adversarial"]["bare_pgd"]["0.3"] >= 0.25
    assert "weak_attack" in codes["plain"] and "weak_attack" in codes["adversarial-ddl"]
    assert "weak_attack" not in codes["adversarial"]
    assert [runs[n]["params"]["weak_attack_checked"] for n in runs] == [True, False, True]
    assert runs["adversarial"]["model_info"]["adversarial"]["method"] == "pgd"
    assert "weak_attack not checked: the bare model is adversarially trained" in format_table(runs["adversarial"])
    assert "weak_attack not checked" not in format_table(runs["plain"])
    assert json.loads((tmp_path / "rob-adversarial" / "robustness.json").read_text())["params"][
        "weak_attack_checked"] is False


def test_cli_n_target_classes_reaches_the_targeted_attacks_and_only_then_the_cache_key(tiny, tmp_path):
    """--n-target-classes 9 is AutoAttack's standard for APGD-T and FAB-T; without it the budgets
    (and so the cache names of every earlier run) are what they were."""
    import json

    from ddl.cli import main

    base = ["robustness", "--dataset", "mnist", "--checkpoint", tiny["checkpoint"], "--eps", "0.3", "--n-images", "4",
            "--attacks", "apgd-t:exact", "--apgd-iter", "1", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "default")]) == 0
    assert main(base + ["--n-target-classes", "2", "--out", str(tmp_path / "two")]) == 0
    default, two = (json.loads((tmp_path / d / "robustness.json").read_text()) for d in ("default", "two"))
    assert default["params"]["n_target_classes"] == 3 and two["params"]["n_target_classes"] == 2
    names = lambda d: {p.name.split("-")[0] for p in (tmp_path / d / "cache").glob("*apgd-t*.json")}  # noqa: E731
    assert names("default") and names("default").isdisjoint(names("two"))
