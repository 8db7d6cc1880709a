"""Tests of ddl.models: the five architectures (timm-style parametrised test over MODELS)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ddl.models import INPUT_STATS, MODELS, HRNN, Normalize, build_model

SHAPES = [(1, 28, 28), (3, 32, 32)]
CAM_MODELS = ["convnet", "resnet", "autoencoder"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("shape", SHAPES, ids=["mnist", "cifar10"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_shapes_step_and_determinism(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape)
    x = torch.rand(16, *shape)
    y = torch.arange(16) % 10

    model.train()
    torch.manual_seed(1)  # same dropout masks before and after the step
    loss0 = F.cross_entropy(model(x), y)
    assert loss0.isfinite()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss0.backward()
    opt.step()
    torch.manual_seed(1)
    loss1 = F.cross_entropy(model(x), y)
    assert loss1.item() < loss0.item()

    model.eval()
    out = model(x)
    assert out.shape == (16, 10) and out.dtype == torch.float32
    assert not out.isnan().any()
    assert torch.equal(out, model(x))  # eval mode is deterministic (no dropout, fixed BN statistics)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_n_classes_is_configurable(name):
    model = build_model(name, (3, 32, 32), n_classes=3).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("shape", SHAPES, ids=["mnist", "cifar10"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_normalisation_is_the_first_layer_with_the_dataset_statistics(name, shape):
    model = build_model(name, shape)
    first = next(iter(model.children()))
    assert isinstance(first, Normalize)
    mean, std = INPUT_STATS[shape]
    x = torch.rand(2, *shape)
    expected = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    torch.testing.assert_close(first(x), expected, rtol=0, atol=1e-6)
    # Fixed constants, not parameters, and not stored in the state dict.
    assert not any(p is first.mean or p is first.std for p in model.parameters())
    assert not any(k.startswith("normalize.") for k in model.state_dict())


def test_normalisation_constants_match_the_data_readme():
    assert INPUT_STATS[(1, 28, 28)] == ((0.1307,), (0.3081,))
    assert INPUT_STATS[(3, 32, 32)] == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    # README: training means 125.30692, 122.95039, 113.86538, stds 62.99322, 62.08871, 66.70490 (/255).
    readme = ([125.30692, 122.95039, 113.86538], [62.99322, 62.08871, 66.70490])
    for ours, theirs in zip(INPUT_STATS[(3, 32, 32)], readme, strict=True):
        assert max(abs(a - b / 255) for a, b in zip(ours, theirs, strict=True)) < 5e-5


def test_mlp_parameter_count_by_hand():
    # BN(784) + Dense 784->784 + BN(784) + Dense 784->256 + Dense 256->10 (Table 3).
    expected = 2 * 784 + (784 * 784 + 784) + 2 * 784 + (784 * 256 + 256) + (256 * 10 + 10)
    assert sum(p.numel() for p in build_model("mlp", (1, 28, 28)).parameters()) == expected


@pytest.mark.parametrize(("shape", "side"), [((1, 28, 28), 3), ((3, 32, 32), 4)])
def test_convnet_dense_input_follows_the_documented_padding(shape, side):
    model = build_model("convnet", shape)
    assert model.fc.in_features == 256 * side * side
    assert model.features(torch.rand(2, *shape)).shape == (2, 256, side, side)


@pytest.mark.parametrize("shape", SHAPES, ids=["mnist", "cifar10"])
@pytest.mark.parametrize("name", CAM_MODELS)
def test_cam_layer_output_is_features(name, shape):
    model = build_model(name, shape).eval()
    x = torch.rand(3, *shape)
    seen = {}
    handle = getattr(model, model.cam_layer).register_forward_hook(lambda m, i, o: seen.setdefault("map", o))
    model(x)
    handle.remove()
    feats = model.features(x)
    assert feats.ndim == 4 and feats.shape[0] == 3
    torch.testing.assert_close(seen["map"], feats, rtol=0, atol=0)


def test_resnet_logits_are_global_average_pooling_then_dense():
    # The CAM setting (Zhou et al. 2016, eq. 2): logits_c = sum_k w_ck mean(A_k) + b_c.
    model = build_model("resnet", (3, 32, 32)).eval()
    x = torch.rand(4, 3, 32, 32)
    feats = model.features(x)
    assert feats.shape == (4, 128, 4, 4)
    cam = torch.einsum("ck,nkhw->nchw", model.head.weight, feats)
    torch.testing.assert_close(model(x), cam.mean(dim=(2, 3)) + model.head.bias, rtol=1e-5, atol=1e-5)


def test_autoencoder_feature_map_is_16x16_for_both_shapes():
    for shape in SHAPES:
        assert build_model("autoencoder", shape).features(torch.rand(1, *shape)).shape == (1, 1, 16, 16)


def test_hrnn_reads_rows_as_sequences_of_pixels_with_channels_as_features():
    model = build_model("hrnn", (3, 32, 32))
    assert model.pixel_lstm.input_size == 3 and model.top_lstm.input_size == 128 // 8
    # A permutation of the rows changes the output (the row LSTM is order-sensitive) ...
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    assert not torch.allclose(model(x), model(x.flip(2)))
    # ... and each image is processed independently of the others in the batch.
    torch.testing.assert_close(model(x)[1:], model(x[1:]), rtol=1e-5, atol=1e-6)


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"^build_model: name must be one of autoencoder, convnet, hrnn, mlp, resnet; got 'x'\.$"):
        build_model("x", (1, 28, 28))


@pytest.mark.parametrize("bad", [(1, 32, 32), (3, 28, 28), (28, 28), (1, 28, 28, 1), "mnist", None])
def test_unsupported_input_shape(bad):
    with pytest.raises(ValueError, match=r"build_model\('mlp'\): input_shape must be one of \(1, 28, 28\), \(3, 32, 32\)"):
        build_model("mlp", bad)


@pytest.mark.parametrize("bad", [1, 0, 2.0, True])
def test_bad_n_classes(bad):
    with pytest.raises(ValueError, match=r"n_classes must be an int >= 2; got"):
        build_model("convnet", (1, 28, 28), n_classes=bad)


def test_direct_constructor_validates_too():
    with pytest.raises(ValueError, match=r"^ResNet: input_shape must be one of"):
        MODELS["resnet"]((1, 64, 64))
    with pytest.raises(ValueError, match=r"HRNN: row_hidden must be divisible by reshape_steps; got row_hidden=100, reshape_steps=8\."):
        HRNN((1, 28, 28), row_hidden=100)


def test_normalize_rejects_bad_statistics():
    with pytest.raises(ValueError, match=r"Normalize: mean and std must have the same length and std > 0"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError, match=r"same length"):
        Normalize((0.5, 0.5), (0.2,))


def test_models_are_plain_modules_in_a_plain_dict():
    assert sorted(MODELS) == ["autoencoder", "convnet", "hrnn", "mlp", "resnet"]
    assert all(isinstance(build_model(n, (1, 28, 28)), nn.Module) for n in MODELS)
