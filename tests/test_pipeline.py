"""End to end on tiny synthetic images (the SMOKE preset): every field the report reads, and caching."""

import json

import pytest
import torch

from ddl.experiments import pipeline
from ddl.experiments.config import SMOKE, AttackConfig, DataConfig


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke")
    results = pipeline.run_experiment(SMOKE, run_dir, progress=False)
    return run_dir, results


def test_results_file_has_every_field(smoke_run):
    run_dir, results = smoke_run
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["records"] == json.loads(json.dumps(results["records"]))
    assert json.loads((run_dir / "config.json").read_text()) == SMOKE.to_dict()
    (r,) = on_disk["records"]
    assert (r["dataset"], r["model"], r["attack"], r["n_images"]) == ("mnist", "mlp", "fgsm", 40)
    assert r["attack_params"] == {"eps": 0.1}
    assert r["defence_params"]["n_nonzero_coefs"] == 3
    for key in ("clean", "perturbed", "denoised", "denoised_clean"):
        assert 0.0 <= r["accuracy"][key] <= 1.0
        assert 0.0 <= r["confidence"][key] <= 1.0
    assert set(r["accuracy"]["high_confidence"]) == {"threshold", "n_images", "perturbed", "denoised"}
    for key in ("perturbed", "denoised", "denoised_clean"):
        assert r["psnr"][key] > 0 and -1.0 <= r["ssim"][key] <= 1.0
    assert set(r["seconds"]) == {"attack", "dictionary", "denoise", "evaluate"}


def test_every_accuracy_has_its_wilson_interval_and_every_comparison_a_mcnemar_test(smoke_run):
    # counts from the saved per-image predictions, intervals and p-values from scipy
    from scipy.stats import binomtest

    run_dir, results = smoke_run
    (r,) = json.loads((run_dir / "results.json").read_text())["records"]
    arrays = torch.load(run_dir / r["files"]["arrays"], weights_only=True)
    y = arrays["y"].long()
    right = {k: arrays[f"pred_{k}"].long() == y for k in ("clean", "perturbed", "denoised", "denoised_clean")}
    assert r["accuracy_ci_method"] == {"method": "wilson", "confidence": 0.95}
    for kind, c in right.items():
        ref = binomtest(int(c.sum()), len(y)).proportion_ci(method="wilson")
        assert r["accuracy_ci"][kind] == pytest.approx([ref.low, ref.high], rel=1e-12, abs=1e-15)
    mask = arrays["high_confidence_mask"]
    hc = r["accuracy_ci"]["high_confidence"]
    assert int(mask.sum()) == r["accuracy"]["high_confidence"]["n_images"]
    for kind in ("perturbed", "denoised"):
        if mask.any():
            ref = binomtest(int(right[kind][mask].sum()), int(mask.sum())).proportion_ci(method="wilson")
            assert hc[kind] == pytest.approx([ref.low, ref.high], rel=1e-12, abs=1e-15)
        else:
            assert hc[kind] is None
    for name, (a, b) in {"denoised_vs_perturbed": ("denoised", "perturbed"),
                         "denoised_clean_vs_clean": ("denoised_clean", "clean")}.items():
        t = r["paired_tests"][name]
        b10, b01 = int((right[a] & ~right[b]).sum()), int((~right[a] & right[b]).sum())
        assert (t["n_images"], t["b10"], t["b01"]) == (len(y), b10, b01)
        assert t["p_value"] == pytest.approx(binomtest(b10, b10 + b01).pvalue if b10 + b01 else 1.0, rel=1e-12)
        assert t["difference"] == pytest.approx(r["accuracy"][a] - r["accuracy"][b], abs=1e-12)
        assert t["difference_ci"][0] <= t["difference"] <= t["difference_ci"][1]


def test_results_name_the_machine_that_produced_them(smoke_run):
    import ddl
    from ddl.sparse.kernel import kernel_name

    _, results = smoke_run
    m = results["machine"]
    assert m["ddl_version"] == ddl.__version__ and m["torch"] == torch.__version__
    assert m["device"] == SMOKE.device and m["omp_kernel"]["used"] == kernel_name(SMOKE.device)
    assert len(m["cpu"]["flags_sha256"]) == 16 and m["threads"]["torch"] >= 1
    assert "platform" in m  # the fields of the machine record before ddl.provenance are kept


def test_fgsm_perturbation_has_the_psnr_of_its_eps(smoke_run):
    # Every pixel moves by exactly eps unless clipped, so PSNR >= 10 log10(1 / eps^2) = 20 dB.
    _, results = smoke_run
    assert results["records"][0]["psnr"]["perturbed"] >= 20.0 - 1e-4


def test_second_run_recomputes_nothing(smoke_run, forbid_recompute):
    run_dir, first = smoke_run
    again = pipeline.run_experiment(SMOKE, run_dir, progress=False)
    for key in ("clean", "perturbed", "denoised"):
        assert again["records"][0]["accuracy"][key] == first["records"][0]["accuracy"][key]
    # the cached stages still report what they cost when they were computed
    computed = first["records"][0]["computed_seconds"]
    assert set(computed) == {"attack", "dictionary", "denoise", "denoise_clean_test_set"}
    assert all(v > 0 for v in computed.values())
    assert again["records"][0]["computed_seconds"] == computed


def test_too_many_images_requested_is_an_error(tmp_path):
    cfg = SMOKE.replace(data=DataConfig(dataset="mnist", source="sample", n_test=5000))
    with pytest.raises(ValueError, match="n_test=5000 but the sample mnist split has only 1000 images"):
        pipeline.run_experiment(cfg, tmp_path, progress=False)


def test_attack_subset_is_the_first_images(tmp_path):
    cfg = SMOKE.replace(attacks=(AttackConfig(name="fgsm", params={"eps": 0.2}, n_images=10),))
    (r,) = pipeline.run_experiment(cfg, tmp_path, progress=False)["records"]
    assert r["n_images"] == 10 and r["attack_params"] == {"eps": 0.2}


def test_a_denoised_variant_is_evaluated_behind_the_shipped_dictionary_it_was_trained_with(tmp_path, monkeypatch):
    """get_denoiser takes the zoo's dictionary (SHA-256 checked) for a denoised variant whose
    recorded defence has the cell's parameters, instead of re-fitting one; with other parameters
    it fits as usual."""
    import ddl.zoo
    from ddl.experiments import pipeline
    from ddl.experiments.config import DataConfig, DefenceConfig, ExperimentConfig, ModelConfig
    from ddl.data import make_blobs_images
    from ddl.defence import DictionaryDenoiser
    from ddl.models import build_model
    from ddl.models.checkpoint import save_checkpoint, sha256_file

    zoo_dir = tmp_path / "zoo"
    zoo_dir.mkdir()
    monkeypatch.setattr(ddl.zoo, "ZOO_DIR", zoo_dir)
    d = DefenceConfig(patch_size=4, n_components=8, n_nonzero_coefs=1, remove_mean=False, max_patches=500)
    params = pipeline._defence_params(d)
    x_zoo, _ = make_blobs_images(20, (1, 28, 28), seed=1)
    shipped = DictionaryDenoiser(**params).fit(x_zoo)
    shipped.save(zoo_dir / "defence_tuned_mnist.pt")
    sha = sha256_file(zoo_dir / "defence_tuned_mnist.pt")
    ddl.zoo.update_defence_index({"name": "tuned", "dataset": "mnist", "path": "defence_tuned_mnist.pt",
                                  "sha256": sha, "params": params})
    path = save_checkpoint(zoo_dir / "mlp_mnist_denoised.pt", build_model("mlp", (1, 28, 28)),
                           {"architecture": "mlp", "input_shape": [1, 28, 28], "n_classes": 10, "dataset": "mnist",
                            "variant": "denoised"})
    ddl.zoo.update_index({"model": "mlp", "dataset": "mnist", "accuracy": 0.5, "path": path.name, "epochs": 1,
                          "seconds": 1.0, "sha256": sha256_file(path), "variant": "denoised",
                          "defence": {"name": "tuned", "sha256": sha, "params": params}})
    x_fit, _ = make_blobs_images(20, (1, 28, 28), seed=2)  # other images: a re-fit would differ
    cfg = ExperimentConfig(data=DataConfig(source="full"), model=ModelConfig(name="mlp", variant="denoised"),
                           defence=d)
    status = {}
    den, key = pipeline.get_denoiser(cfg, x_fit, tmp_path / "cache", progress=False, status=status)
    assert status == {"dictionary": "zoo"} and torch.equal(den.dictionary_, shipped.dictionary_)
    assert not (tmp_path / "cache").exists()  # nothing fitted, nothing written
    other = cfg.replace(defence=DefenceConfig(**{**params, "n_components": 6}))
    den2, key2 = pipeline.get_denoiser(other, x_fit, tmp_path / "cache", progress=False, status=status)
    assert status == {"dictionary": "computing"} and den2.dictionary_.shape[0] == 6 and key2 != key
    # a standard classifier with the shipped defence's parameters: the shipped dictionary too
    # (so committed runs reproduce on any machine), unless a re-fit is asked for
    standard = cfg.replace(model=ModelConfig(name="mlp"))
    den3, key3 = pipeline.get_denoiser(standard, x_fit, tmp_path / "cache", progress=False, status=status)
    assert status == {"dictionary": "zoo"} and torch.equal(den3.dictionary_, shipped.dictionary_)
    assert key3 == key
    refit = standard.replace(refit_dictionary=True)
    den4, key4 = pipeline.get_denoiser(refit, x_fit, tmp_path / "cache", progress=False, status=status)
    assert status == {"dictionary": "computing"} and not torch.equal(den4.dictionary_, shipped.dictionary_)
    assert key4 != key
    subset = standard.replace(data=DataConfig(source="full", n_train=20))   # not what was shipped
    pipeline.get_denoiser(subset, x_fit, tmp_path / "cache", progress=False, status=status)
    assert status["dictionary"] != "zoo"


def test_the_dictionary_cache_key_names_the_omp_kernel(tmp_path, monkeypatch):
    """A dictionary fitted with the C kernel and one fitted with the torch kernel are different
    fits (online learning amplifies rounding), so they never share a cache entry."""
    from ddl.experiments import pipeline
    from ddl.experiments.config import DataConfig, DefenceConfig, ExperimentConfig
    from ddl.data import make_blobs_images
    import importlib

    from ddl.sparse import _omp_native

    omp_module = importlib.import_module("ddl.sparse.omp")  # the module (ddl.sparse.omp is also a function)

    x, _ = make_blobs_images(12, (1, 28, 28), seed=0)
    cfg = ExperimentConfig(data=DataConfig(source="synthetic"),
                           defence=DefenceConfig(patch_size=4, n_components=8, n_nonzero_coefs=1, max_patches=300))
    monkeypatch.setenv("DDL_OMP_KERNEL", "torch")
    assert omp_module.kernel_name() == "torch"
    _, torch_key = pipeline.get_denoiser(cfg, x, tmp_path, progress=False)
    record = json.loads(next(tmp_path.glob("dictionary-*.entry.json")).read_text())
    assert record["inputs"]["omp_kernel"] == "torch"
    monkeypatch.setenv("DDL_OMP_KERNEL", "auto")
    if _omp_native.load() is None:  # no C compiler here: only the torch kernel exists
        assert omp_module.kernel_name() == "torch"
        return
    assert omp_module.kernel_name() == "native" and omp_module.kernel_name("meta") == "torch"
    status = {}
    _, native_key = pipeline.get_denoiser(cfg, x, tmp_path, progress=False, status=status)
    assert native_key != torch_key and status == {"dictionary": "computing"}


def test_reproduce_refit_dictionary_flag(capsys):
    from ddl.cli import main

    assert main(["reproduce", "--preset", "quick", "--refit-dictionary"]) == 2
    assert capsys.readouterr().err == ("ddl reproduce: error: --refit-dictionary: --preset quick always "
                                       "fits its dictionaries (no shipped ones for the bundled data)\n")


def test_demo_puts_an_adaptive_check_beside_the_oblivious_number(capsys, tmp_path):
    import re

    from scipy.stats import binomtest

    from ddl.cli import main

    assert main(["demo", "--preset", "smoke", "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("adaptive check"))
    m = re.fullmatch(r"adaptive check, first 20 test images, eps 0\.1: PGD on the bare model then "
                     r"denoised \(oblivious\) (\d+) %; PGD through the "
                     r"denoiser \(adaptive, 10 steps\) worst case (\d+) % \[(\d+), (\d+)\]\. Judge a "
                     r"defence by the adaptive number: `ddl robustness`\.", line)
    assert m, line
    oblivious, worst, lo, hi = map(int, m.groups())
    assert worst <= oblivious                         # the worst case includes the oblivious attack
    ci = binomtest(round(worst * 20 / 100), 20).proportion_ci(method="wilson")
    assert (lo, hi) == (round(100 * ci.low), round(100 * ci.high))
