"""Tests of the fitted defences in the zoo (ddl.zoo.load_defence) and of the defences that
``ddl robustness --defence`` builds (ddl.experiments.robustness_run.build_defence): presets, purifier specs."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ddl.zoo
from ddl.experiments import config
from ddl._validate import BadFileError
from ddl.data import load_sample
from ddl.defence import DictionaryDenoiser, GaussianBlur, MedianSmoothing
from ddl.models.checkpoint import sha256_file
from ddl.experiments.robustness_run import _tensor_sha, build_defence

SHIPPED = Path(ddl.zoo.__file__).resolve().parent
SMALL = {"patch_size": 5, "n_components": 16, "n_nonzero_coefs": 1, "step": 1, "method": "online",
         "n_epochs": 1, "max_patches": 3000, "remove_mean": False, "random_state": 0}


pytestmark = pytest.mark.usefixtures("one_thread")


def _preset(name, dataset):
    cfg = config.load_tuned()[dataset] if name == "tuned" else config.PAPER.defence[dataset]
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "dictionary_source"}


def _publish(zoo_dir: Path, den: DictionaryDenoiser, params: dict, name="tuned", dataset="mnist") -> Path:
    """What tools/fit_zoo_defences.py does for one defence, in ``zoo_dir``."""
    path = zoo_dir / ddl.zoo.defence_file_name(dataset, name)
    den.save(path)
    ddl.zoo.update_defence_index({"name": name, "dataset": dataset, "path": path.name,
                                  "sha256": sha256_file(path), "params": params})
    return path


@pytest.fixture
def small_zoo(tmp_path, monkeypatch):
    monkeypatch.setattr(ddl.zoo, "ZOO_DIR", tmp_path)
    x = load_sample("train")[0][:100]
    den = DictionaryDenoiser(**SMALL).fit(x)
    _publish(tmp_path, den, SMALL)
    return tmp_path, x, den


# ----------------------------------------------------------------------------- the zoo
def test_load_defence_round_trip_equals_a_fresh_fit(small_zoo):
    _, x, den = small_zoo
    loaded = ddl.zoo.load_defence("mnist")
    fresh = DictionaryDenoiser(**SMALL).fit(x)               # an independent fit, same call
    assert torch.equal(loaded.dictionary_, fresh.dictionary_)
    assert loaded.dictionary_.dtype == torch.float32 and loaded.grad == "exact"
    assert {k: loaded.get_params()[k] for k in SMALL} == SMALL
    assert torch.equal(loaded(x[:5]), den(x[:5]))
    assert ddl.zoo.load_defence("mnist", grad="bpda").grad == "bpda"


def test_defence_records_survive_updates_of_the_model_entries(small_zoo):
    zoo_dir, _, _ = small_zoo
    ddl.zoo.update_index({"model": "mlp", "dataset": "mnist", "accuracy": 0.5, "path": "mlp_mnist.pt",
                          "epochs": 1, "seconds": 1.0, "sha256": "0" * 64})
    data = json.loads((zoo_dir / "index.json").read_text())
    assert [e["model"] for e in data["entries"]] == ["mlp"]
    assert [(d["name"], d["dataset"]) for d in data["defences"]] == [("tuned", "mnist")]
    assert [e.model for e in ddl.zoo.entries()] == ["mlp"]   # defences are not model entries
    ddl.zoo.load_defence("mnist")


def test_a_tampered_dictionary_is_refused_in_one_line(small_zoo):
    zoo_dir, _, _ = small_zoo
    path = zoo_dir / "defence_tuned_mnist.pt"
    good = sha256_file(path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BadFileError, match=rf"^ddl.zoo.load_defence: SHA-256 mismatch for .*defence_tuned_mnist\.pt: "
                                           rf"expected {good}, got [0-9a-f]{{64}}; the file was changed or "
                                           rf"corrupted, refusing to load it\.$") as info:
        ddl.zoo.load_defence("mnist")
    assert "\n" not in str(info.value)


def test_a_shipped_dictionary_copied_and_tampered_is_refused(tmp_path, monkeypatch):
    shutil.copy(SHIPPED / "defence_tuned_mnist.pt", tmp_path)
    index = json.loads((SHIPPED / "index.json").read_text())
    (tmp_path / "index.json").write_text(json.dumps({"format_version": 1, "entries": [],
                                                     "defences": index["defences"]}))
    monkeypatch.setattr(ddl.zoo, "ZOO_DIR", tmp_path)
    assert ddl.zoo.load_defence("mnist").dictionary_.shape == (256, 49)
    with (tmp_path / "defence_tuned_mnist.pt").open("r+b") as f:
        f.seek(2000)
        byte = f.read(1)
        f.seek(2000)
        f.write(bytes([byte[0] ^ 0x80]))
    with pytest.raises(ValueError, match=r"SHA-256 mismatch .*refusing to load it"):
        ddl.zoo.load_defence("mnist")


def test_missing_and_unknown_defences(small_zoo):
    with pytest.raises(LookupError, match=r"ddl.zoo.load_defence: no fitted 'paper' defence for 'mnist'; "
                                          r"the zoo holds: tuned/mnist\."):
        ddl.zoo.load_defence("mnist", "paper")
    with pytest.raises(ValueError, match=r"ddl.zoo.load_defence: name must be one of tuned, paper; got 'best'"):
        ddl.zoo.load_defence("mnist", "best")


def test_index_parameters_must_match_the_file(small_zoo):
    zoo_dir, _, _ = small_zoo
    path = zoo_dir / "defence_tuned_mnist.pt"
    ddl.zoo.update_defence_index({"name": "tuned", "dataset": "mnist", "path": path.name,
                                  "sha256": sha256_file(path), "params": {**SMALL, "n_nonzero_coefs": 2}})
    with pytest.raises(ValueError, match=r"ddl.zoo.load_defence: .* holds parameters .* but index.json says"):
        ddl.zoo.load_defence("mnist")


@pytest.mark.parametrize(("name", "dataset", "shape"), [("tuned", "mnist", (256, 49)), ("paper", "mnist", (256, 49)),
                                                         ("tuned", "cifar10", (256, 48)),
                                                         ("paper", "cifar10", (256, 192))])
def test_shipped_defences_have_the_presets_parameters(name, dataset, shape):
    record = ddl.zoo.find_defence(dataset, name)
    assert record["params"] == _preset(name, dataset)
    assert record["n_train_images"] == {"mnist": 60000, "cifar10": 50000}[dataset]
    den = ddl.zoo.load_defence(dataset, name)
    assert tuple(den.dictionary_.shape) == shape == tuple(record["dictionary_shape"])
    assert torch.allclose(den.dictionary_.norm(dim=1), torch.ones(shape[0]), atol=1e-5)
    assert (SHIPPED / record["path"]).stat().st_size < 250_000


def test_defended_classifier_in_one_line():
    net = torch.nn.Sequential(ddl.zoo.load_defence("mnist"), ddl.zoo.load("mlp", "mnist"))
    x, y = load_sample("test")
    with torch.no_grad():
        acc = (net(x[:100]).argmax(1) == y[:100]).float().mean().item()
    assert acc > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["native", "torch"])
@pytest.mark.parametrize("name", ["tuned", "paper"])
def test_a_fresh_fit_on_the_full_training_set_is_as_good_as_the_shipped_dictionary(name, kernel, monkeypatch):
    """What a re-fit can honestly promise: not the same bits (online learning amplifies float
    rounding; another CPU, BLAS path or OMP kernel gives another dictionary: atoms differ by up
    to 0.59 here), but the same quality. Measured on an Intel Xeon (AVX-512), the first 2,000
    test images: reconstruction MSE 0.006814 (native) and 0.006722 (torch) against the shipped
    tuned dictionary's 0.006825 (0.2 % and 1.5 %); the zoo ConvNet's accuracy on the
    reconstructions 98.65 / 98.80 % against 98.75 %; paper: 99.00 % both. Promised: MSE within 5 %
    (relative, + 1e-6) and accuracy within 1 point. Committed results use the shipped
    dictionaries, so they do not depend on this (issue 19, item 4)."""
    from ddl.data import load_dataset
    from ddl.sparse import _omp_native

    if kernel == "native" and _omp_native.load() is None:
        pytest.skip("no C compiler: the torch kernel case runs")
    monkeypatch.setenv("DDL_OMP_KERNEL", kernel)
    data_dir = Path(__file__).resolve().parents[2] / "shared" / "data"
    x_train, _ = load_dataset("mnist", "train", data_dir=data_dir)
    x_test, y_test = load_dataset("mnist", "test", data_dir=data_dir)
    x, y = x_test[:2000], y_test[:2000]
    fresh = DictionaryDenoiser(**_preset(name, "mnist")).fit(x_train)
    shipped = ddl.zoo.load_defence("mnist", name)
    model = ddl.zoo.load("convnet", "mnist")
    with torch.no_grad():
        r_fresh, r_shipped = fresh.transform(x), shipped.transform(x)
        mse_fresh, mse_shipped = ((r_fresh - x) ** 2).mean().item(), ((r_shipped - x) ** 2).mean().item()
        acc_fresh = (model(r_fresh).argmax(1) == y).float().mean().item()
        acc_shipped = (model(r_shipped).argmax(1) == y).float().mean().item()
    assert abs(mse_fresh - mse_shipped) <= 0.05 * mse_shipped + 1e-6, (mse_fresh, mse_shipped)
    assert abs(acc_fresh - acc_shipped) <= 0.01, (acc_fresh, acc_shipped)


# ----------------------------------------------------------------------------- build_defence
def test_build_defence_takes_the_preset_from_the_zoo_without_fitting(monkeypatch):
    import ddl.data

    def no_fit(*a, **k):
        raise AssertionError("build_defence fitted instead of loading the zoo's defence")

    monkeypatch.setattr(ddl.data, "load_dataset", no_fit)
    den, desc = build_defence("tuned", "mnist", cache=None, progress=False)
    assert torch.equal(den.dictionary_, ddl.zoo.load_defence("mnist").dictionary_)
    assert desc == {"name": "tuned", **_preset("tuned", "mnist"), "dictionary_sha256": _tensor_sha(den.dictionary_)}


def test_build_defence_fits_when_the_zoo_parameters_differ(monkeypatch, tmp_path):
    import ddl.data
    import ddl.experiments.robustness_run as rr

    monkeypatch.setattr(rr, "_defence_config", lambda name, dataset: config.DefenceConfig(**SMALL))
    x = load_sample("train")[0][:100]
    monkeypatch.setattr(ddl.data, "load_dataset", lambda *a, **k: (x, None))
    den, desc = build_defence("tuned", "mnist", cache=tmp_path, progress=False)
    assert torch.equal(den.dictionary_, DictionaryDenoiser(**SMALL).fit(x).dictionary_)
    assert desc["patch_size"] == 5 and len(list(tmp_path.glob("dictionary-tuned-mnist-*.pt"))) == 1


@pytest.mark.parametrize(("spec", "cls", "param", "value", "label"), [
    ("bits:4", "BitDepthReduction", "bits", 4, "bits:4"),
    ("median:3", "MedianSmoothing", "size", 3, "median:3"),
    ("gauss:1", "GaussianBlur", "sigma", 1.0, "gauss:1.0"),
    ("jpeg:75", "JPEGCompression", "quality", 75, "jpeg:75"),
    ("tv:0.1", "TotalVariation", "weight", 0.1, "tv:0.1"),
    ("wavelet:0.05", "WaveletShrinkage", "sigma", 0.05, "wavelet:0.05"),
    ("median", "MedianSmoothing", "size", 3, "median:3"),
])
def test_build_defence_parses_purifier_specs(spec, cls, param, value, label):
    purifier, desc = build_defence(spec, "mnist", cache=None, progress=False)
    assert type(purifier).__name__ == cls and getattr(purifier, param) == value
    assert desc["name"] == label and desc["purifier"] == cls and desc[param] == value
    assert "grad" not in desc  # the threat model sets the backward, not the spec
    assert json.loads(json.dumps(desc)) == desc


@pytest.mark.parametrize(("spec", "match"), [
    ("median:4", r"^ddl robustness: --defence median:4: MedianSmoothing.fit: size \(the window is size x size\) "
                 r"must be an odd int >= 1; got 4\.$"),
    ("jpeg:high", r"^ddl robustness: --defence jpeg:high: quality must be an int; got 'high'\.$"),
    ("gauss:-2", r"^ddl robustness: --defence gauss:-2: GaussianBlur.fit: sigma must be a finite number > 0; got -2.0\.$"),
    ("blur:3", r"^ddl robustness: --defence must be none, paper, tuned, a purifier NAME:VALUE with NAME one of "
               r"bits, median, gauss, jpeg, tv, wavelet \(e\.g\. bits:4, median:3, gauss:1\.0, jpeg:75, tv:0\.1, "
               r"wavelet:0\.05\) or a file written by DictionaryDenoiser\.save; got 'blur:3' \(no such file\)\.$"),
])
def test_build_defence_bad_specs_are_one_line(spec, match):
    with pytest.raises(ValueError, match=match):
        build_defence(spec, "mnist", cache=None, progress=False)


def test_build_defence_none_and_types():
    assert build_defence("none", "mnist") == (None, None)
    assert isinstance(build_defence("median:5", "mnist")[0], MedianSmoothing)
    assert isinstance(build_defence("gauss:0.5", "cifar10")[0], GaussianBlur)


def test_cli_robustness_with_a_purifier(tmp_path, sample_data_dir):
    out = tmp_path / "rob"
    cmd = [sys.executable, "-m", "ddl", "robustness", "--dataset", "mnist", "--zoo", "mlp",
           "--defence", "median:3", "--eps", "0.1", "--n-images", "4", "--attacks", "pgd:bpda", "pgd:exact",
           "--pgd-steps", "2", "--data-dir", str(sample_data_dir), "--out", str(out), "--threads", "1", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "defence: median:3" in proc.stdout
    rec = json.loads((out / "robustness.json").read_text())
    assert rec["defence"] == {"name": "median:3", "purifier": "MedianSmoothing", "size": 3}
    assert set(rec["attacks"]) == {"pgd:bpda", "pgd:exact"}
    bad = subprocess.run([*cmd[:9], "median:2", *cmd[10:]], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "ddl robustness: error: --defence median:2: MedianSmoothing.fit: size (the window is "
        "size x size) must be an odd int >= 1; got 2."]
