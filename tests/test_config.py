import pytest

from ddl.config import (DEMO, SMOKE, AttackConfig, DataConfig, DefenceConfig, ExperimentConfig,
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
    (lambda: ModelConfig(lr=-1.0), r"lr must be a number > 0; got -1.0"),
    (lambda: AttackConfig(name="cw"), r"AttackConfig: name must be one of fgsm, pgd, jsma; got 'cw'"),
    (lambda: DefenceConfig(n_components=8, n_nonzero_coefs=9), r"n_nonzero_coefs must be an int in \[1, 8\]; got 9"),
    (lambda: DefenceConfig(method="lars"), r"method must be one of online, ksvd, mod; got 'lars'"),
    (lambda: ExperimentConfig(attacks=()), "at least one attack"),
    (lambda: ExperimentConfig(high_confidence_threshold=1.5), r"high_confidence_threshold must be in \[0, 1\]; got 1.5"),
])
def test_bad_values_name_the_parameter_and_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_config_key_is_stable_and_sensitive():
    assert config_key("a", {"x": 1, "y": 2}) == config_key("a", {"y": 2, "x": 1})
    assert config_key("a", {"x": 1}) != config_key("a", {"x": 2})
    assert len(config_key("a")) == 16


def test_attack_label():
    assert AttackConfig(name="fgsm", params={"eps": 0.1}).label == "fgsm_eps0.1"
