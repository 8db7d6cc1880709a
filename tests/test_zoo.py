"""Tests of ddl.models.checkpoint and ddl.zoo (temporary zoo folders; one slow test on the real zoo)."""

import json
import os

import pytest
import torch

import ddl
import ddl.zoo
from ddl.models import build_model
from ddl.models.checkpoint import load_checkpoint, round_to_float16, save_checkpoint, sha256_file
from ddl.models.train import predict

META = {"architecture": "convnet", "input_shape": (1, 28, 28), "n_classes": 10, "dataset": "mnist",
        "epochs": 3, "seconds": 12.5, "test_accuracy": 0.5, "preset": "cpu"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def convnet():
    torch.manual_seed(0)
    return build_model("convnet", (1, 28, 28)).eval()


def test_float32_round_trip_gives_identical_logits(tmp_path, convnet):
    x = torch.rand(5, 1, 28, 28)
    path = save_checkpoint(tmp_path / "sub" / "c.pt", convnet, META, float16=False)
    model, meta = load_checkpoint(path)
    assert not model.training
    assert torch.equal(predict(model, x), predict(convnet, x))
    assert meta == {**META, "input_shape": [1, 28, 28], "ddl_version": ddl.__version__}


def test_float16_checkpoint_holds_the_rounded_model_and_is_half_the_size(tmp_path, convnet):
    x = torch.rand(5, 1, 28, 28)
    p16 = save_checkpoint(tmp_path / "h.pt", convnet, META, float16=True)
    p32 = save_checkpoint(tmp_path / "f.pt", convnet, META, float16=False)
    n_params = sum(p.numel() for p in convnet.parameters())
    assert p16.stat().st_size < 2 * n_params + 100_000 < p32.stat().st_size
    model, _ = load_checkpoint(p16)
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert torch.equal(predict(model, x), predict(round_to_float16(convnet), x))


def test_batch_norm_buffers_survive_the_round_trip(tmp_path):
    model = build_model("resnet", (3, 32, 32))
    model(torch.rand(8, 3, 32, 32))  # update running statistics and num_batches_tracked
    model.eval()
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "r.pt", model, {**META, "architecture": "resnet",
                                                                            "input_shape": [3, 32, 32]}, float16=False))
    assert loaded.stem_bn.num_batches_tracked.item() == 1
    assert torch.equal(loaded.stem_bn.running_var, model.stem_bn.running_var)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, convnet):
    save_checkpoint(tmp_path / "c.pt", convnet, META)
    save_checkpoint(tmp_path / "c.pt", convnet, META)  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


@pytest.mark.parametrize(
    ("meta", "exc", "match"),
    [
        ({"architecture": "convnet"}, ValueError, r"save_checkpoint: meta must contain architecture, input_shape, n_classes; missing input_shape, n_classes"),
        ({**META, "architecture": "vgg"}, ValueError, r"save_checkpoint: meta\['architecture'\] must be one of autoencoder, convnet, hrnn, mlp, resnet; got 'vgg'"),
        ({**META, "when": object()}, TypeError, r"save_checkpoint: meta must hold only JSON values"),
        ([("architecture", "convnet")], TypeError, r"save_checkpoint: meta must be a dict; got list"),
    ],
)
def test_save_checkpoint_meta_errors(tmp_path, convnet, meta, exc, match):
    with pytest.raises(exc, match=match):
        save_checkpoint(tmp_path / "c.pt", convnet, meta)


def test_non_weights_only_pickle_is_refused(tmp_path, convnet):
    path = tmp_path / "evil.pt"
    payload = {"format": "ddl-checkpoint-v1", "meta": META, "dtype": "float32",
               "state_dict": convnet.state_dict(), "hook": os.getcwd}  # a function reference
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"load_checkpoint: checkpoint .*evil\.pt holds Python objects other "
                                         r"than tensors, numbers, strings and containers") as info:
        load_checkpoint(path)
    assert "weights_only=False" not in str(info.value)  # never advise loading it unsafely
    torch.save({"format": "ddl-checkpoint-v1", "model": convnet}, path)  # a whole pickled module
    with pytest.raises(ValueError, match=r"holds Python objects"):
        load_checkpoint(path)


def test_other_files_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"load_checkpoint: .*plain\.pt is not a ddl checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match=r"load_checkpoint: no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_sha256_mismatch_is_refused(tmp_path, convnet):
    path = save_checkpoint(tmp_path / "c.pt", convnet, META)
    good = sha256_file(path)
    load_checkpoint(path, sha256=good)
    with pytest.raises(ValueError, match=r"load_checkpoint: SHA-256 mismatch for .*c\.pt: expected 0{64}, got " + good):
        load_checkpoint(path, sha256="0" * 64)


# --- the zoo, on a temporary folder -------------------------------------------------------------


@pytest.fixture
def zoo(tmp_path, monkeypatch, convnet):
    monkeypatch.setattr(ddl.zoo, "ZOO_DIR", tmp_path)
    for model_name, dataset, shape in [("convnet", "mnist", (1, 28, 28)), ("mlp", "cifar10", (3, 32, 32))]:
        torch.manual_seed(1)
        model = convnet if model_name == "convnet" else build_model(model_name, shape).eval()
        path = save_checkpoint(tmp_path / f"{model_name}_{dataset}.pt", model,
                               {**META, "architecture": model_name, "dataset": dataset, "input_shape": list(shape)})
        ddl.zoo.update_index({"model": model_name, "dataset": dataset, "accuracy": 0.25, "path": path.name,
                              "epochs": 3, "seconds": 12.5, "sha256": sha256_file(path), "preset": "cpu"})
    return tmp_path


def test_zoo_entries_find_and_load(zoo, convnet):
    entries = ddl.zoo.entries()
    assert [(e.model, e.dataset) for e in entries] == [("mlp", "cifar10"), ("convnet", "mnist")]
    e = ddl.zoo.find("convnet", "mnist")
    assert (e.accuracy, e.epochs, e.seconds, e.path, e.extra) == (0.25, 3, 12.5, zoo / "convnet_mnist.pt", {"preset": "cpu"})
    assert e.sha256 == sha256_file(zoo / "convnet_mnist.pt")
    assert ddl.zoo.find("convnet", "cifar10") is None
    model = ddl.zoo.load("convnet", "mnist")
    assert not model.training
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(predict(model, x), predict(round_to_float16(convnet), x))


def test_update_index_replaces_the_entry_of_the_same_pair(zoo):
    record = json.loads((zoo / "index.json").read_text())["entries"][1]
    ddl.zoo.update_index({**record, "accuracy": 0.75})
    assert [e.accuracy for e in ddl.zoo.entries()] == [0.25, 0.75]
    assert sorted(os.listdir(zoo)) == ["convnet_mnist.pt", "index.json", "mlp_cifar10.pt"]


def test_zoo_load_refuses_a_tampered_file(zoo):
    path = zoo / "convnet_mnist.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"SHA-256 mismatch for .*convnet_mnist\.pt.*refusing to load it"):
        ddl.zoo.load("convnet", "mnist")


def test_zoo_load_of_a_missing_pair_lists_what_there_is(zoo):
    with pytest.raises(LookupError, match=r"ddl.zoo.load: no pretrained 'resnet' for 'mnist'; the zoo holds: mlp/cifar10, convnet/mnist"):
        ddl.zoo.load("resnet", "mnist")


def test_zoo_index_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(ddl.zoo, "ZOO_DIR", tmp_path)
    assert ddl.zoo.entries() == []
    with pytest.raises(LookupError, match=r"the zoo holds: nothing yet"):
        ddl.zoo.load("mlp", "mnist")
    (tmp_path / "index.json").write_text(json.dumps({"entries": [{"model": "mlp", "dataset": "mnist"}]}))
    with pytest.raises(ValueError, match=r"ddl.zoo: entry .* lacks accuracy, path, epochs, seconds, sha256"):
        ddl.zoo.entries()
    bad = {"model": "mlp", "dataset": "mnist", "accuracy": 1, "path": "../x.pt", "epochs": 1, "seconds": 1, "sha256": "0"}
    (tmp_path / "index.json").write_text(json.dumps({"entries": [bad]}))
    with pytest.raises(ValueError, match=r"ddl.zoo: entry path '../x.pt' points outside the zoo folder"):
        ddl.zoo.entries()
    (tmp_path / "index.json").write_text("[]")
    with pytest.raises(ValueError, match=r"must hold \{'entries': \[...\]\}; got list"):
        ddl.zoo.entries()


def test_zoo_load_checks_the_file_holds_the_listed_pair(zoo):
    record = json.loads((zoo / "index.json").read_text())["entries"][1]  # convnet/mnist
    ddl.zoo.update_index({**record, "model": "mlp", "dataset": "mnist"})
    with pytest.raises(ValueError, match=r"convnet_mnist\.pt holds 'convnet'/'mnist' \(standard\), not 'mlp'/'mnist' \(standard\)"):
        ddl.zoo.load("mlp", "mnist")


# --- the real zoo ---------------------------------------------------------------------------------


def test_shipped_zoo_is_small_and_consistent():
    entries = ddl.zoo.entries()
    total = sum(e.path.stat().st_size for e in entries)
    assert total < 60e6
    for e in entries:
        assert e.sha256 == sha256_file(e.path)
        assert 0.0 <= e.accuracy <= 1.0 and e.epochs >= 1


@pytest.mark.slow
def test_zoo_accuracies_reproduce_on_the_full_test_set(shared_data_dir):
    from ddl.data import load_dataset

    entries = ddl.zoo.entries()
    if not entries:
        pytest.skip("the zoo index is empty")
    for dataset in sorted({e.dataset for e in entries}):
        x, y = load_dataset(dataset, "test", data_dir=shared_data_dir)
        assert x.shape[0] == 10_000
        for e in (e for e in entries if e.dataset == dataset):
            acc = (predict(ddl.zoo.load(e.model, e.dataset, variant=e.variant), x).argmax(1) == y).double().mean().item()
            # Same float16 weights and same test set; allow 2 images for CPU-kernel rounding differences.
            assert abs(acc - e.accuracy) <= 2e-4, f"{e.model}/{e.dataset}: {acc} vs stored {e.accuracy}"
            if e.extra.get("reached_target"):
                assert 100 * e.accuracy >= e.extra["target_percent"]


# --- variants -------------------------------------------------------------------------------------


def test_a_denoised_variant_round_trips_beside_the_standard_model_with_its_defence(zoo):
    torch.manual_seed(5)
    tuned = build_model("convnet", (1, 28, 28)).eval()
    defence = {"name": "tuned", "sha256": "ab" * 32, "params": {"patch_size": 7, "n_nonzero_coefs": 1}}
    path = save_checkpoint(zoo / "convnet_mnist_denoised.pt", tuned,
                           {**META, "variant": "denoised", "defence": defence})
    ddl.zoo.update_index({"model": "convnet", "dataset": "mnist", "accuracy": 0.5, "path": path.name,
                          "epochs": 4, "seconds": 20.0, "sha256": sha256_file(path), "variant": "denoised",
                          "defence": defence, "denoised_clean_accuracy": 0.45})
    standard, denoised = ddl.zoo.find("convnet", "mnist"), ddl.zoo.find("convnet", "mnist", "denoised")
    assert (standard.variant, standard.defence, standard.accuracy) == ("standard", None, 0.25)
    assert (denoised.variant, denoised.defence, denoised.accuracy) == ("denoised", defence, 0.5)
    assert [(e.model, e.dataset, e.variant) for e in ddl.zoo.entries()] == [
        ("mlp", "cifar10", "standard"), ("convnet", "mnist", "standard"), ("convnet", "mnist", "denoised")]
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(predict(ddl.zoo.load("convnet", "mnist", variant="denoised"), x),
                       predict(round_to_float16(tuned), x))
    assert not torch.equal(predict(ddl.zoo.load("convnet", "mnist"), x), predict(round_to_float16(tuned), x))
    _, meta = load_checkpoint(path)
    assert meta["variant"] == "denoised" and meta["defence"] == defence
    # a checkpoint listed under the wrong variant is refused
    record = json.loads((zoo / "index.json").read_text())["entries"][1]  # the standard convnet/mnist
    ddl.zoo.update_index({**record, "path": path.name, "sha256": sha256_file(path)})
    with pytest.raises(ValueError, match=r"holds 'convnet'/'mnist' \(denoised\), not 'convnet'/'mnist' \(standard\)"):
        ddl.zoo.load("convnet", "mnist")


def test_adversarial_variants_round_trip_with_their_training_record(zoo):
    """The pair of issue 21: trained without and through the defence; each checkpoint and index
    record says how (method, ε, steps, threat model, the defence's fingerprint)."""
    from ddl.models.train import AdversarialTraining

    class Fitted(torch.nn.Module):            # a stand-in defence with a state to fingerprint
        def __init__(self):
            super().__init__()
            self.register_buffer("dictionary_", torch.arange(6.0).reshape(2, 3))

        def forward(self, x):
            return x

    adv = AdversarialTraining("pgd", 0.3, steps=10, eps_warmup_epochs=2)
    records = {"adversarial": adv.record(None), "adversarial-ddl": adv.record(Fitted())}
    assert records["adversarial"]["threat"] is None and records["adversarial-ddl"]["threat"] == "bpda"
    assert records["adversarial-ddl"]["defence_fingerprint"] != records["adversarial"]["defence_fingerprint"]
    for i, (variant, training) in enumerate(records.items()):
        torch.manual_seed(10 + i)
        model = build_model("convnet", (1, 28, 28)).eval()
        path = save_checkpoint(zoo / f"convnet_mnist_{variant}.pt", model,
                               {**META, "variant": variant, "adversarial": training})
        ddl.zoo.update_index({"model": "convnet", "dataset": "mnist", "accuracy": 0.6 + i / 10, "path": path.name,
                              "epochs": 10, "seconds": 99.0, "sha256": sha256_file(path), "variant": variant,
                              "adversarial": training})
        x = torch.rand(2, 1, 28, 28)
        assert torch.equal(predict(ddl.zoo.load("convnet", "mnist", variant=variant), x),
                           predict(round_to_float16(model), x))
        entry = ddl.zoo.find("convnet", "mnist", variant)
        assert entry.extra["adversarial"] == training and entry.accuracy == 0.6 + i / 10
        assert load_checkpoint(path)[1]["adversarial"] == {"method": "pgd", "eps": 0.3, "steps": 10,
                                                           "step_size": 0.075, "eps_warmup_epochs": 2,
                                                           "random_start": "uniform",
                                                           "threat": training["threat"],
                                                           "defence_fingerprint": training["defence_fingerprint"]}
    assert [e.variant for e in ddl.zoo.entries() if e.model == "convnet"] == [
        "standard", "adversarial", "adversarial-ddl"]


def test_a_missing_variant_and_an_unknown_variant(zoo):
    with pytest.raises(LookupError, match=r"ddl.zoo.load: no 'denoised' variant of 'convnet' for 'mnist'; "
                                          r"the zoo holds \(denoised\): nothing yet"):
        ddl.zoo.load("convnet", "mnist", variant="denoised")
    with pytest.raises(ValueError, match=r"ddl.zoo.find: variant must be one of standard, denoised, adversarial, "
                                         r"adversarial-ddl; got 'noisy'"):
        ddl.zoo.load("convnet", "mnist", variant="noisy")
