"""Attack names (``"<attack>:<threat>"``) and ε keys, shared by evaluate and flags."""

from __future__ import annotations

from ddl.robustness.threat import THREATS

__all__ = ["BLACK_BOX", "GRADIENT_ATTACKS", "eps_key", "parse_attack"]

GRADIENT_ATTACKS = ("pgd", "apgd-ce", "apgd-t", "fab-t")
BLACK_BOX = ("square",)
_GRADIENT_ATTACKS, _BLACK_BOX = GRADIENT_ATTACKS, BLACK_BOX


def parse_attack(spec: str) -> tuple[str, str | None]:
    """``"pgd:soft"`` → ``("pgd", "soft")``; ``"square"`` → ``("square", None)``; errors name the rule."""
    if not isinstance(spec, str):
        raise ValueError(f"evaluate_robustness: attacks must be strings like 'pgd:soft'; got {spec!r}.")
    name, _, threat = spec.partition(":")
    if name in _BLACK_BOX:
        if threat:
            raise ValueError(f"evaluate_robustness: '{name}' is black-box and takes no threat "
                             f"model; got {spec!r} (write '{name}').")
        return name, None
    if name not in _GRADIENT_ATTACKS:
        raise ValueError(f"evaluate_robustness: unknown attack {name!r} in {spec!r}; choose from "
                         f"{_GRADIENT_ATTACKS + _BLACK_BOX}.")
    if threat not in THREATS:
        raise ValueError(f"evaluate_robustness: attack {spec!r} needs a threat model after ':', "
                         f"one of {THREATS} (e.g. '{name}:soft').")
    if threat == "oblivious" and name != "pgd":
        raise ValueError(f"evaluate_robustness: only 'pgd:oblivious' is offered for the oblivious "
                         f"threat; got {spec!r}.")
    return name, threat


def eps_key(eps: float) -> str:
    """The JSON key of an ε: ``repr`` of the float (exact, round-trips)."""
    return repr(float(eps))
