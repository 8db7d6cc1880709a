"""Intervals and paired tests for accuracies over images: the statistics behind every reported number.

Public as :func:`ddl.metrics.wilson_interval` and :func:`ddl.metrics.mcnemar`. They live in this
ground-floor module, with the standard library and NumPy only, so that the report
(``ddl.experiments.report``, which never imports torch) can compute the interval of a results
file written before intervals were recorded.

References
----------
Wilson (1927), "Probable inference, the law of succession, and statistical inference", JASA
22(158):209-212 — the score interval (Newcombe 1998a, method 3).
Newcombe (1998a), "Two-sided confidence intervals for the single proportion: comparison of seven
methods", Statistics in Medicine 17:857-872.
McNemar (1947), "Note on the sampling error of the difference between correlated proportions or
percentages", Psychometrika 12:153-157 — here in its exact form, a two-sided binomial test of the
discordant pairs with p = 1/2.
Newcombe (1998b), "Improved confidence intervals for the difference between binomial proportions
based on paired data", Statistics in Medicine 17:2635-2650 — method 10 (square-and-add of Wilson
intervals with the corrected correlation φ), as given by Fagerland, Lydersen and Laake (2017),
*Statistical Analysis of Contingency Tables*, §8.5.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from ddl._validate import WrongTypeError, check_int, check_number, describe

__all__ = ["count_interval", "mcnemar", "wilson_interval"]


def _z(confidence: float) -> float:
    """The two-sided normal quantile: 1.959963984540054 for 0.95."""
    return NormalDist().inv_cdf(0.5 + 0.5 * confidence)


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials (no checks)."""
    p = k / n
    denom = 2 * (n + z * z)
    center = (2 * n * p + z * z) / denom
    half = z / denom * math.sqrt(4 * n * p * (1 - p) + z * z)
    # at k = 0 (k = n) the bound is exactly 0 (1); the formula gives it up to rounding
    return (0.0 if k == 0 else center - half), (1.0 if k == n else center + half)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion: ``k`` correct of ``n`` images.

    Parameters
    ----------
    k : int in [0, n]
        Number of successes (correctly classified images).
    n : int >= 1
        Number of trials (images).
    confidence : float in (0, 1), default 0.95
        Two-sided confidence level.

    Returns
    -------
    (low, high) : tuple of float, ``0 <= low <= k/n <= high <= 1``
        ``low`` is exactly 0 when ``k == 0`` and ``high`` exactly 1 when ``k == n``.

    Notes
    -----
    With ``z`` the two-sided normal quantile and ``p = k/n``, the bounds are
    ``(2np + z² ∓ z·sqrt(4np(1−p) + z²)) / (2(n + z²))`` (Wilson 1927; Newcombe 1998a, method 3),
    the same as ``scipy.stats.binomtest(k, n).proportion_ci(confidence, method="wilson")``.
    Unlike the normal (Wald) interval it never leaves [0, 1] and is not empty at k = 0 or k = n.

    Examples
    --------
    >>> [round(v, 4) for v in wilson_interval(7, 8)]
    [0.5291, 0.9776]
    >>> wilson_interval(0, 10)[0], wilson_interval(10, 10)[1]
    (0.0, 1.0)
    """
    where = "wilson_interval"
    n = check_int(where, "n", n, 1)
    k = check_int(where, "k", k, 0, n, high_name="n")
    confidence = check_number(where, "confidence", confidence, 0, 1, low_open=True, high_open=True)
    return _wilson(k, n, _z(confidence))


def count_interval(value: Any, n: Any) -> list[float] | None:
    """The Wilson interval of an accuracy ``value`` recorded as a fraction of ``n`` images, for
    records written before intervals were: ``k = round(value · n)`` when ``k / n`` gives back
    ``value`` (it does for every accuracy ddl writes); None when ``value`` is no such count."""
    if not isinstance(value, (int, float)) or not isinstance(n, int) or n < 1 or not 0 <= value <= 1:
        return None
    k = round(value * n)
    return list(wilson_interval(k, n)) if abs(k / n - value) <= 1e-9 else None


def _correct_vector(where: str, name: str, value: Any) -> np.ndarray:
    """``value`` as a 1-D bool array: bools, or ints that are 0 or 1 (a torch tensor, a NumPy
    array or a sequence)."""
    rule = "a 1-D sequence of booleans (or of 0 and 1), one per image, with at least one image"
    got = describe(value)
    if hasattr(value, "detach"):  # a torch tensor, on any device (no torch import here)
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise WrongTypeError(f"{where}: {name} must be {rule}; got {got}.") from None
    if arr.ndim != 1 or arr.size == 0 or not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
        raise WrongTypeError(f"{where}: {name} must be {rule}; got {got}.")
    if arr.dtype != bool:
        bad = arr[(arr != 0) & (arr != 1)]
        if bad.size:
            raise ValueError(f"{where}: {name} must be {rule}; got {got} holding {bad[0].item()!r}.")
    return arr.astype(bool)


def _binomial_two_sided_half(k: int, m: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``m`` trials with success probability 1/2:
    the probability of an outcome at least as far from m/2 as k, in exact integer arithmetic."""
    low = min(k, m - k)
    if 2 * low == m:  # k = m/2 (and m = 0): every outcome is at least as extreme
        return 1.0
    tail, c = 0, 1  # tail = Σ_{i <= low} C(m, i); c = C(m, i)
    for i in range(low + 1):
        tail += c
        c = c * (m - i) // (i + 1)
    return min(1.0, 2 * tail / (1 << m))  # int / int: correctly rounded, also for m in the thousands


def _paired_difference_interval(n11: int, n10: int, n01: int, n00: int, z: float) -> tuple[float, float]:
    """Newcombe (1998b) method 10 for p_a − p_b, with p_a = (n11 + n10)/n and p_b = (n11 + n01)/n."""
    n = n11 + n10 + n01 + n00
    a, b = n11 + n10, n11 + n01  # images A gets right, images B gets right
    pa, pb = a / n, b / n
    la, ua = _wilson(a, n, z)
    lb, ub = _wilson(b, n, z)
    phi = 0.0
    if min(a, n - a, b, n - b) > 0:
        det = n11 * n00 - n10 * n01
        # the correlation of the two proportions, continuity-corrected towards 0 when positive
        corrected = det - n / 2 if det > n / 2 else (0.0 if det >= 0 else det)
        phi = corrected / math.sqrt(a * (n - a) * b * (n - b))
    d = pa - pb
    low = d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2 - 2 * phi * (pa - la) * (ub - pb))
    high = d + math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2 - 2 * phi * (pb - lb) * (ua - pa))
    return low, high


def mcnemar(a_correct, b_correct, *, confidence: float = 0.95) -> dict[str, Any]:
    """Paired comparison of two classifiers (or two conditions) on the same images.

    McNemar's test in its exact form: of the images on which exactly one of A and B is right,
    A alone is right on ``b10`` and B alone on ``b01``; under "A and B are equally accurate" each
    such image is A's with probability 1/2, so the p-value is the two-sided binomial test of
    ``b10`` in ``b01 + b10`` trials (1 when there are none).

    Parameters
    ----------
    a_correct, b_correct : sequence of bool (or 0/1) of the same length N >= 1
        Whether A (B) classifies each image correctly, image by image (a torch tensor, a NumPy
        array or a list).
    confidence : float in (0, 1), default 0.95
        Level of the interval of the difference.

    Returns
    -------
    dict
        ``n_images`` (N); ``b01`` (images A gets wrong and B right) and ``b10`` (A right, B
        wrong); ``p_value`` (exact two-sided); ``difference`` = accuracy(A) − accuracy(B) =
        ``(b10 − b01) / N``; ``difference_ci`` = [low, high], Newcombe's (1998b) method-10
        interval of that difference at ``confidence``; ``confidence``. Plain ints, floats and
        lists (JSON-ready).

    Examples
    --------
    >>> r = mcnemar([1, 1, 1, 0, 0, 1], [1, 0, 0, 0, 0, 1])
    >>> r["b01"], r["b10"], r["p_value"], round(r["difference"], 4)
    (0, 2, 0.5, 0.3333)
    """
    where = "mcnemar"
    a = _correct_vector(where, "a_correct", a_correct)
    b = _correct_vector(where, "b_correct", b_correct)
    if a.shape != b.shape:
        raise ValueError(f"{where}: a_correct and b_correct must hold one value per image of the same "
                         f"images; got {a.size} and {b.size} values.")
    confidence = check_number(where, "confidence", confidence, 0, 1, low_open=True, high_open=True)
    n11, n10 = int(np.sum(a & b)), int(np.sum(a & ~b))
    n01, n00 = int(np.sum(~a & b)), int(np.sum(~a & ~b))
    low, high = _paired_difference_interval(n11, n10, n01, n00, _z(confidence))
    return {"n_images": int(a.size), "b01": n01, "b10": n10,
            "p_value": _binomial_two_sided_half(n10, n10 + n01),
            "difference": (n10 - n01) / a.size, "difference_ci": [low, high], "confidence": confidence}
