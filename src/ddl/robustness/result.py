"""``RobustnessResult``: what :func:`~ddl.robustness.evaluate_robustness` measured, per image, with
the 95 % interval of every accuracy and the paired tests of its comparisons.

Every accuracy is a fraction of the same ``N`` images, so it carries a Wilson score interval over
images (:func:`ddl.metrics.wilson_interval`), and every comparison of two accuracies on those
images a paired exact McNemar test (:func:`ddl.metrics.mcnemar`, which also gives Newcombe's
interval of the difference). Both are computed from the per-image outcomes the result holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["CONFIDENCE", "STRONGEST_RULE", "RobustnessResult"]

#: level of every interval in a robustness record
CONFIDENCE = 0.95

STRONGEST_RULE = {
    False: "the attack with the lowest accuracy (ties: the first in order)",
    True: ("cascade: the attack that broke the most images first, i.e. images every earlier attack "
           "left standing (ties: the first in order)"),
}


def _bits(t: Tensor) -> list[int]:
    return [int(v) for v in t.tolist()]


@dataclass
class RobustnessResult:
    """What :func:`evaluate_robustness` measured. Accuracies are fractions in [0, 1] of
    ``n_images``; ``*survival`` and ``clean_correct`` are the per-image outcomes (bool, (N,))."""

    n_images: int
    eps: list[float]
    clean_accuracy: dict[str, float]                       # {"bare", "defended"}
    attacks: dict[str, dict[str, float]]                   # attack → ε key → accuracy
    worst_case: dict[str, float]                           # ε key → accuracy
    bare_pgd: dict[str, float]                             # ε key → accuracy of the bare model
    survival: dict[str, dict[str, Tensor]]                 # attack → ε key → (N,) bool
    worst_survival: dict[str, Tensor]                      # ε key → (N,) bool
    clean_correct: dict[str, Tensor]                       # {"bare", "defended"} → (N,) bool
    flags: list[dict[str, str]]
    seconds: dict[str, float]                              # attack → seconds over all ε
    unbounded_accuracy: float | None
    params: dict[str, Any] = field(default_factory=dict)
    bare_survival: dict[str, Tensor] = field(default_factory=dict)   # ε key → (N,) bool, bare PGD
    unbounded_survival: Tensor | None = None
    # attack → CPU seconds over all ε of the process that computed each unit, all its threads (so up
    # to threads × wall; under Ray, the worker's); wall time in ``seconds`` counts a paused or
    # starved process too. None where a cached unit predates ddl keeping CPU time
    cpu_seconds: dict[str, float | None] = field(default_factory=dict)

    @property
    def cascade(self) -> bool:
        return bool(self.params.get("cascade", False))

    def first_breaks(self) -> dict[str, dict[str, int]]:
        """ε key → attack → how many images it broke first: images that the defended model
        classifies correctly, that every earlier attack (in the order of ``attacks``) left
        standing and that this one broke. The same with and without cascade."""
        out = {}
        for k in self.worst_case:
            alive, counts = self.clean_correct["defended"].clone(), {}
            for a in self.attacks:
                counts[a] = int((alive & ~self.survival[a][k]).sum())
                alive &= self.survival[a][k]
            out[k] = counts
        return out

    def strongest(self) -> dict[str, str]:
        """ε key → the strongest attack (:data:`STRONGEST_RULE`).

        Without cascade, the attack with the lowest accuracy. Under cascade ``attacks[a]`` is
        cumulative (the last attack always has the lowest), so the strongest is the attack with
        the most first breaks (:meth:`first_breaks`). Ties go to the first in order."""
        if self.cascade:
            first = self.first_breaks()
            return {k: max(self.attacks, key=lambda a: first[k][a]) for k in self.worst_case}
        return {k: min(self.attacks, key=lambda a: self.attacks[a][k]) for k in self.worst_case}

    def intervals(self, confidence: float = CONFIDENCE) -> dict[str, Any]:
        """The Wilson interval ``[low, high]`` of every accuracy, keyed like the accuracies."""
        from ddl.metrics import wilson_interval

        n = self.n_images

        def ci(bits: Tensor) -> list[float]:
            return list(wilson_interval(int(bits.sum()), n, confidence))

        return {
            "clean_accuracy": {k: ci(v) for k, v in self.clean_correct.items()},
            "attacks": {a: {k: ci(t) for k, t in v.items()} for a, v in self.survival.items()},
            "worst_case": {k: ci(t) for k, t in self.worst_survival.items()},
            "bare_pgd": {k: ci(t) for k, t in self.bare_survival.items()},
            "unbounded_accuracy": None if self.unbounded_survival is None else ci(self.unbounded_survival),
        }

    def paired_tests(self, confidence: float = CONFIDENCE) -> dict[str, Any]:
        """Exact McNemar tests on the same images (``ddl.metrics.mcnemar``, A vs B, ``difference``
        = accuracy(A) − accuracy(B)):

        - ``defended_vs_bare_clean``: the defended model's clean accuracy against the bare one's;
        - ``worst_case_vs_bare_pgd``: per ε, the defended worst case against PGD on the bare model
          (what the defence adds against an attacker who knows it);
        - ``worst_case_vs_oblivious``: per ε, the worst case against the paper's oblivious attack
          (how much the oblivious number overstates), when ``pgd:oblivious`` ran and its survival is
          its own (without cascade, or first in the cascade).
        """
        from ddl.metrics import mcnemar

        out: dict[str, Any] = {"defended_vs_bare_clean": mcnemar(
            self.clean_correct["defended"], self.clean_correct["bare"], confidence=confidence)}
        if self.bare_survival:
            out["worst_case_vs_bare_pgd"] = {
                k: mcnemar(self.worst_survival[k], self.bare_survival[k], confidence=confidence)
                for k in self.worst_survival}
        names = list(self.attacks)
        if "pgd:oblivious" in names and (not self.cascade or names[0] == "pgd:oblivious"):
            out["worst_case_vs_oblivious"] = {
                k: mcnemar(self.worst_survival[k], self.survival["pgd:oblivious"][k], confidence=confidence)
                for k in self.worst_survival}
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: accuracies, their intervals, the paired tests, per-image arrays as 0/1."""
        return {
            "n_images": self.n_images,
            "eps": list(self.eps),
            "clean_accuracy": dict(self.clean_accuracy),
            "attacks": {a: dict(v) for a, v in self.attacks.items()},
            "worst_case": dict(self.worst_case),
            "bare_pgd": dict(self.bare_pgd),
            "unbounded_accuracy": self.unbounded_accuracy,
            "accuracy_ci": self.intervals(),
            "accuracy_ci_method": {"method": "wilson", "confidence": CONFIDENCE, "over": "images"},
            "paired_tests": self.paired_tests(),
            "paired_tests_method": {"method": "mcnemar-exact", "difference": "accuracy(A) - accuracy(B)",
                                    "interval": "newcombe-10", "confidence": CONFIDENCE},
            "strongest_attack": self.strongest(),
            "strongest_attack_rule": STRONGEST_RULE[self.cascade],
            "first_breaks": self.first_breaks(),
            "flags": list(self.flags),
            "seconds": dict(self.seconds),
            "cpu_seconds": dict(self.cpu_seconds),
            "params": dict(self.params),
            "clean_correct": {k: _bits(v) for k, v in self.clean_correct.items()},
            "survival": {a: {k: _bits(t) for k, t in v.items()} for a, v in self.survival.items()},
            "worst_survival": {k: _bits(t) for k, t in self.worst_survival.items()},
            "bare_survival": {k: _bits(t) for k, t in self.bare_survival.items()},
            "unbounded_survival": None if self.unbounded_survival is None else _bits(self.unbounded_survival),
        }
