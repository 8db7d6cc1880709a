"""Honest robustness evaluation of a (defended) classifier: adaptive attacks, worst case per
image, sanity flags.

    >>> from ddl.robustness import evaluate_robustness
    >>> res = evaluate_robustness(model, x, y, defence=denoiser, eps=[0.1, 0.2, 0.3])
    >>> res.worst_case, res.flags

An evaluation that attacks only the bare classifier (*oblivious*) says nothing about an attacker
who knows the defence (Athalye, Carlini & Wagner 2018; Carlini et al. 2019). This package runs
attacks *through* the defence under explicit threat models (:mod:`ddl.robustness.threat`), with
PGD that tracks the best iterate and AutoAttack's attacks (:mod:`ddl.robustness.attacks`),
counts an image as robust only if every attack failed on it, and computes the sanity flags of
:mod:`ddl.robustness.flags`. What it does *not* prove: robustness to attacks outside the suite;
a flag-free result is necessary, not sufficient.
"""

from ddl.robustness.attacks import AUTOATTACKS, autoattack, pgd_linf, project_linf, within_linf
from ddl.robustness.evaluate import DEFAULT_ATTACKS, RobustnessResult, evaluate_robustness, parse_attack
from ddl.robustness.flags import FLAG_CODES, compute_flags, zero_gradient_fraction
from ddl.robustness.threat import THREATS, DefendedModel, defended, soft_surrogate

__all__ = ["AUTOATTACKS", "DEFAULT_ATTACKS", "FLAG_CODES", "THREATS", "DefendedModel",
           "RobustnessResult", "autoattack", "compute_flags", "defended", "evaluate_robustness",
           "parse_attack", "pgd_linf", "project_linf", "soft_surrogate", "within_linf",
           "zero_gradient_fraction"]
