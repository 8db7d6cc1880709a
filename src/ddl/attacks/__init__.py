"""Adversarial attacks as plain functions: ``attack(model, x, labels, **params) -> x_adv``.

Every attack takes a model in eval mode and float images (N, C, H, W) within ``clip``, returns a
new tensor of the same shape, dtype and device, leaves ``x`` and the model untouched (no
``.grad`` on parameters, no mode switch) and validates its inputs with :mod:`ddl.attacks._checks`.

``ATTACKS`` maps the names used in configs and on the command line to the functions.
"""

from ddl.attacks.fgsm import fgsm
from ddl.attacks.jsma import JSMAInfo, jsma
from ddl.attacks.pgd import pgd

ATTACKS = {"fgsm": fgsm, "pgd": pgd, "jsma": jsma}

__all__ = ["ATTACKS", "JSMAInfo", "fgsm", "jsma", "pgd"]
