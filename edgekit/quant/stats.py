"""The statistics behind the accuracy gate, in plain Python (no scipy on a Jetson).

Agreement of INT8 with FP32 is a binomial proportion: ``k`` of ``n`` validation images get
the same top-1 class. The gate fails only when the data show the true agreement is below
the threshold (a one-sided exact binomial test at 5%), and says so when ``n`` is too small to
tell either way. A labelled accuracy drop is a paired difference on the same images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05  # one-sided tests; the reported intervals are two-sided 95%
Z_ONE_SIDED = 1.6448536269514722  # 95% one-sided normal quantile
Z_TWO_SIDED = 1.959963984540054
MAX_NEEDED = 1_000_000


def _log_pmf(i: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if i == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if i == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space from the larger side."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    terms = [_log_pmf(i, n, p) for i in range(k + 1)]
    top = max(terms)
    if top == -math.inf:
        return 0.0
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k)."""
    return 1.0 - binom_cdf(k - 1, n, p) if k > 0 else 1.0


def _bisect(turns_true: Callable[[float], bool], lo: float, hi: float) -> float:
    """The p in [lo, hi] where a monotone predicate turns from false to true."""
    for _ in range(60):
        mid = (lo + hi) / 2
        if turns_true(mid):
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def upper_bound(k: int, n: int, alpha: float = ALPHA) -> float:
    """Clopper-Pearson one-sided upper bound: the largest p with P(X <= k | p) >= alpha."""
    if k >= n:
        return 1.0
    return _bisect(lambda p: binom_cdf(k, n, p) < alpha, k / n, 1.0)


def lower_bound(k: int, n: int, alpha: float = ALPHA) -> float:
    """Clopper-Pearson one-sided lower bound: the smallest p with P(X >= k | p) >= alpha."""
    if k <= 0:
        return 0.0
    return _bisect(lambda p: binom_sf(k, n, p) >= alpha, 0.0, k / n)


@dataclass(frozen=True)
class Proportion:
    """k of n, its exact 95% interval, and the one-sided test against a threshold."""

    k: int
    n: int
    threshold: float
    low: float  # two-sided 95% Clopper-Pearson interval
    high: float
    p_value: float  # P(X <= k) if the true rate were the threshold
    status: str  # "pass" (shown >= threshold), "fail" (shown below), "undecided"
    needed: int | None  # images that would settle an undecided result at the rate seen

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else 0.0

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def images_needed(k: int, n: int, threshold: float) -> int | None:
    """Images that would decide, at the same observed rate, whether the rate is above or below
    ``threshold`` (normal approximation, exact when every image agrees); None when no number
    would (the rate equals the threshold) or it would take over a million."""
    rate = k / n
    if rate == threshold or not 0 < threshold < 1:
        return None
    if rate == 1.0:  # all agree: the lower bound is ALPHA ** (1 / n)
        m = math.ceil(math.log(ALPHA) / math.log(threshold))
    else:
        m = math.ceil(Z_ONE_SIDED ** 2 * rate * (1 - rate) / (rate - threshold) ** 2)
    m = max(m, n + 1)
    return m if m <= MAX_NEEDED else None


def fails_below(n: int, threshold: float) -> int:
    """The most agreeing images out of ``n`` that the one-sided test still calls a failure (-1: none)."""
    lo, hi = -1, n  # binom_cdf(k) grows with k: find the last k with cdf < ALPHA
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if binom_cdf(mid, n, threshold) < ALPHA:
            lo = mid
        else:
            hi = mid
    return lo


def images_to_fail(threshold: float, margin: float = 0.1, floor: int = 10, limit: int = 100_000) -> int | None:
    """The fewest images (at least ``floor``) with which the one-sided test fails a rate ``margin``
    below ``threshold``, and goes on failing it with every number of images up to ten more (the
    binomial's steps make single counts jump); None when the threshold is too low for that to mean
    anything (``threshold - margin <= 0``)."""
    if threshold - margin <= 0:
        return None
    run = 0
    for n in range(floor, limit):
        run = run + 1 if fails_below(n, threshold) >= math.floor((threshold - margin) * n) else 0
        if run == 10:
            return n - 9
    return limit


def proportion_test(k: int, n: int, threshold: float) -> Proportion:
    if n <= 0:
        raise ValueError("no observations")
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside 0..{n}")
    low = lower_bound(k, n, ALPHA / 2)
    high = upper_bound(k, n, ALPHA / 2)
    p_value = binom_cdf(k, n, threshold)
    if p_value < ALPHA:
        status = "fail"
    elif threshold <= 0 or lower_bound(k, n) >= threshold:
        status = "pass"
    else:
        status = "undecided"
    needed = images_needed(k, n, threshold) if status == "undecided" else None
    return Proportion(k, n, threshold, low, high, p_value, status, needed)


@dataclass(frozen=True)
class PairedDrop:
    """Accuracy of a reference and a candidate on the same labelled images, and the drop."""

    n: int
    ref_accuracy: float
    accuracy: float
    lost: int  # right in the reference, wrong in the candidate
    gained: int  # wrong in the reference, right in the candidate
    max_drop: float
    low: float  # two-sided 95% interval of the drop (reference minus candidate)
    high: float
    status: str  # "pass" (drop shown <= max_drop), "fail" (shown > max_drop), "undecided"

    @property
    def drop(self) -> float:
        return self.ref_accuracy - self.accuracy

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def paired_drop(ref_correct: list[bool], correct: list[bool], max_drop: float) -> PairedDrop:
    """Drop in accuracy on the same images, with the Agresti-Min interval for paired proportions.

    Only discordant images carry information (McNemar): a model that loses 3 images and gains
    2 has dropped one image's worth, with the spread of 5 discordant pairs. Adding half an
    image to each cell of the 2x2 table (Agresti and Min, 2005) keeps the Wald interval's
    coverage near 95% even with a handful of discordant images.
    """
    n = len(ref_correct)
    if n == 0 or n != len(correct):
        raise ValueError("paired accuracy needs the same, non-empty image list for both models")
    ref = np.asarray(ref_correct, bool)
    new = np.asarray(correct, bool)
    lost = int(np.sum(ref & ~new))
    gained = int(np.sum(new & ~ref))
    b, c, m = lost + 0.5, gained + 0.5, n + 2.0
    d = (b - c) / m
    se = math.sqrt(max((b + c) - (b - c) ** 2 / m, 0.0)) / m
    one_low, one_high = d - Z_ONE_SIDED * se, d + Z_ONE_SIDED * se
    status = "fail" if one_low > max_drop else "pass" if one_high <= max_drop else "undecided"
    return PairedDrop(n, float(ref.mean()), float(new.mean()), lost, gained, max_drop,
                      d - Z_TWO_SIDED * se, d + Z_TWO_SIDED * se, status)
