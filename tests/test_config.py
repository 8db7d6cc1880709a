import json
import re

import numpy as np
import pytest

from ddl.experiments.config import (DEMO, SMOKE, AttackConfig, DataConfig, DefenceConfig, ExperimentConfig,
                        ModelConfig, config_key)


def test_round_trip_through_plain_dict():
    for cfg in (DEMO, SMOKE):
        assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_keys_are_errors_at_every_level():
    d = DEMO.to_dict()
    d["defence"]["n_atom"] = 3
    with pytest.raises(ValueError, match="unknown key 'n_atom' in defence config; valid keys: dictionary_source"):
        ExperimentConfig.from_dict(d)
    with pytest.raises(ValueError, match="unknown key 'foo' in experiment config"):
        ExperimentConfig.from_dict({**DEMO.to_dict(), "foo": 1})
    d = DEMO.to_dict()
    d["attacks"][0]["epsilon"] = 0.1
    with pytest.raises(ValueError, match="unknown key 'epsilon' in attack config"):
        ExperimentConfig.from_dict(d)


@pytest.mark.parametrize("make, match", [
    (lambda: DataConfig(dataset="svhn"), r"DataConfig: dataset must be one of mnist, cifar10; got 'svhn'"),
    (lambda: DataConfig(dataset="cifar10", source="sample"), "source='sample' exists only for dataset='mnist'"),
    (lambda: DataConfig(n_test=0), r"n_test must be an int >= 1; got 0"),
    (lambda: ModelConfig(name="resnet50"), r"ModelConfig: name must be one of .*got 'resnet50'"),
    (lambda: ModelConfig(epochs=0), r"epochs must be an int >= 1; got 0"),
    (lambda: ModelConfig(lr=-1.0), r"lr must be a finite number > 0; got -1.0"),
    (lambda: AttackConfig(name="cw"), r"AttackConfig: name must be one of fgsm, pgd, jsma; got 'cw'"),
    (lambda: DefenceConfig(n_components=8, n_nonzero_coefs=9), r"n_nonzero_coefs must be an int in \[1, 8\]; got 9"),
    (lambda: DefenceConfig(method="lars"), r"method must be one of online, ksvd, mod; got 'lars'"),
    (lambda: ExperimentConfig(attacks=()), "at least one attack"),
    (lambda: ExperimentConfig(high_confidence_threshold=1.5), r"high_confidence_threshold must be a finite number in \[0, 1\]; got 1.5"),
])
def test_bad_values_name_the_parameter_and_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_remove_mean_must_be_a_bool():
    for value in (1, "yes", None):
        message = f"DefenceConfig: remove_mean must be a bool; got {value!r}."
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$") as info:
            DefenceConfig(remove_mean=value)
        assert isinstance(info.value, TypeError)  # a WrongTypeError, like every wrong type


def test_numpy_integers_are_stored_as_ints():
    cfg = ExperimentConfig(data=DataConfig(n_train=np.int64(100), n_test=np.int32(10)),
                           model=ModelConfig(epochs=np.int64(1), batch_size=np.int64(8)),
                           attacks=(AttackConfig(n_images=np.int64(5)),),
                           defence=DefenceConfig(patch_size=np.int64(5), n_components=np.int64(16),
                                                 n_nonzero_coefs=np.int64(2), step=np.int64(1),
                                                 n_epochs=np.int64(1), max_patches=np.int64(1000)))
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["defence"]["patch_size"] == 5 and type(cfg.defence.n_nonzero_coefs) is int
    assert type(cfg.data.n_train) is int and type(cfg.attacks[0].n_images) is int


def test_config_key_is_stable_and_sensitive():
    assert config_key("a", {"x": 1, "y": 2}) == config_key("a", {"y": 2, "x": 1})
    assert config_key("a", {"x": 1}) != config_key("a", {"x": 2})
    assert len(config_key("a")) == 16


def test_attack_label():
    assert AttackConfig(name="fgsm", params={"eps": 0.1}).label == "fgsm_eps0.1"


def test_presets_are_immutable_and_hashable():
    from ddl.experiments.config import PAPER, QUICK, REPRODUCE_PRESETS, PRESETS

    with pytest.raises(TypeError, match="immutable"):
        DEMO.attacks[0].params["eps"] = 0.5
    with pytest.raises(TypeError, match="immutable"):
        PAPER.fgsm_eps["mnist"] = 0.3
    with pytest.raises(TypeError, match="immutable"):
        PAPER.defence.update(mnist=None)
    with pytest.raises(TypeError, match="immutable"):
        PRESETS["demo"] = SMOKE
    assert DEMO.attacks[0].params["eps"] == 0.1 and PAPER.fgsm_eps["mnist"] == 0.1
    # hashable, and equal configs hash equal (a list given for a tuple field is frozen to a tuple)
    assert len({DEMO, SMOKE, PAPER, QUICK, *REPRODUCE_PRESETS.values()}) == 5
    assert hash(AttackConfig("fgsm", {"eps": 0.1})) == hash(AttackConfig("fgsm", {"eps": 0.1}))
    cfg = ExperimentConfig(attacks=[AttackConfig()])
    assert isinstance(cfg.attacks, tuple) and hash(cfg) == hash(ExperimentConfig())


def test_frozen_params_serialise_and_hash_like_the_plain_dict():
    import json

    a = AttackConfig("jsma", {"theta": 1.0, "gamma": 0.1, "seed": 0})
    assert json.dumps(a.params, sort_keys=True) == json.dumps({"theta": 1.0, "gamma": 0.1, "seed": 0}, sort_keys=True)
    assert config_key("adv", a.params) == config_key("adv", {"seed": 0, "gamma": 0.1, "theta": 1.0})
    assert a.params == {"theta": 1.0, "gamma": 0.1, "seed": 0}


def test_each_shared_constant_has_one_source():
    import inspect

    from ddl import constants, data, models
    from ddl.experiments.config import PAPER
    from ddl.defence import DictionaryDenoiser

    assert tuple(data.DATASETS) == constants.DATASETS
    assert tuple(models.MODELS) == constants.MODEL_NAMES
    assert PAPER.models == constants.MODEL_NAMES and PAPER.datasets == constants.DATASETS
    assert dict(PAPER.fgsm_eps) == dict(constants.PAPER_FGSM_EPS)
    default = inspect.signature(DictionaryDenoiser).parameters["max_patches"].default
    assert DefenceConfig().max_patches == constants.MAX_PATCHES == default
