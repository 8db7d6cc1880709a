"""End to end on tiny synthetic images (the SMOKE preset): every field the report reads, and caching."""

import json

import pytest

from ddl import pipeline
from ddl.config import SMOKE, AttackConfig, DataConfig


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
