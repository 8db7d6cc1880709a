"""The names and numbers several modules share, defined once (no torch import: ``ddl --help`` stays fast).

``ddl.data.DATASETS`` (per-data-set facts) and ``ddl.models.MODELS`` (constructors) are keyed by
these names; ``tests/test_config.py`` checks that they agree.
"""

from __future__ import annotations

from types import MappingProxyType

#: Data sets ddl loads, in the order tables show them.
DATASETS: tuple[str, ...] = ("mnist", "cifar10")

#: Display names of the data sets.
DATASET_TITLES = MappingProxyType({"mnist": "MNIST", "cifar10": "CIFAR-10"})

#: The five classifiers of Mitro et al. 2018, in the paper's order.
MODEL_NAMES: tuple[str, ...] = ("mlp", "convnet", "autoencoder", "resnet", "hrnn")

#: Variants of a zoo model: trained on clean images; fine-tuned on the reconstructions of the
#: zoo's fitted tuned defence (``"denoised"``); adversarially trained without a defence
#: (``"adversarial"``) or through the tuned defence, to be evaluated behind it
#: (``"adversarial-ddl"``). ``ddl.zoo.load(..., variant=...)``.
ZOO_VARIANTS: tuple[str, ...] = ("standard", "denoised", "adversarial", "adversarial-ddl")

#: Attacks the pipeline and the CLI run.
ATTACK_NAMES: tuple[str, ...] = ("fgsm", "pgd", "jsma")

#: FGSM ε where the paper is silent (DESIGN.md §4): 0.1 on MNIST, 8/255 on CIFAR-10.
PAPER_FGSM_EPS = MappingProxyType({"mnist": 0.1, "cifar10": 8 / 255})

#: JSMA θ (change per feature) and γ (largest fraction of features changed), DESIGN.md §4.
PAPER_JSMA = MappingProxyType({"theta": 1.0, "gamma": 0.1})

#: Patches sampled to learn a dictionary when nothing else is said: the ``max_patches`` default of
#: ``ddl.DictionaryDenoiser``. The committed presets set their own value (100,000).
MAX_PATCHES: int = 200_000

__all__ = ["ATTACK_NAMES", "DATASETS", "DATASET_TITLES", "MAX_PATCHES", "MODEL_NAMES", "PAPER_FGSM_EPS",
           "PAPER_JSMA", "ZOO_VARIANTS"]
