"""Attack names (``"<attack>:<threat>"``) and ε keys, shared by evaluate and flags."""

from __future__ import annotations

from ddl.robustness.threat import THREATS

__all__ = ["BLACK_BOX", "GRADIENT_ATTACKS", "eps_key", "parse_attack"]

GRADIENT_ATTACKS = ("pgd", "apgd-ce", "apgd-t", "fab-t")
BLACK_BOX = ("square",)
_GRADIENT_ATTACKS, _BLACK_BOX = GRADIENT_ATTACKS, BLACK_BOX


def parse_attack(spec: str, *, where: str = "evaluate_robustness") -> tuple[str, str | None]:
    """``"pgd:soft"`` → ``("pgd", "soft")``; ``"square"`` → ``("square", None)``.

    Errors name the rule and, for a misspelt attack or threat model, the close match
    (``unknown threat model 'bdpa' (did you mean 'bpda'?) in 'pgd:bdpa'``). ``where`` starts the
    message (``""``: none, for ``ddl robustness --attacks``, whose error line names the option)."""
    from ddl._validate import close_match

    at = f"{where}: " if where else ""
    if not isinstance(spec, str):
        raise ValueError(f"{at}attacks must be strings like 'pgd:soft'; got {spec!r}.")
    name, _, threat = spec.partition(":")
    if name in _BLACK_BOX:
        if threat:
            raise ValueError(f"{at}'{name}' is black-box and takes no threat model; got {spec!r} "
                             f"(write '{name}').")
        return name, None
    if name not in _GRADIENT_ATTACKS:
        names = _GRADIENT_ATTACKS + _BLACK_BOX
        raise ValueError(f"{at}unknown attack {name!r}{close_match(name, names)} in {spec!r}; choose one "
                         f"of: {', '.join(names)}.")
    if not threat:
        raise ValueError(f"{at}attack {spec!r} needs a threat model after ':', one of: "
                         f"{', '.join(THREATS)} (e.g. '{name}:soft').")
    if threat not in THREATS:
        raise ValueError(f"{at}unknown threat model {threat!r}{close_match(threat, THREATS)} in {spec!r}; "
                         f"choose one of: {', '.join(THREATS)}.")
    if threat == "oblivious" and name != "pgd":
        raise ValueError(f"{at}only 'pgd:oblivious' is offered for the oblivious threat; got {spec!r}.")
    return name, threat


def eps_key(eps: float) -> str:
    """The JSON key of an ε: ``repr`` of the float (exact, round-trips)."""
    return repr(float(eps))
