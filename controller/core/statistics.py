"""Statistics the judge needs, in pure Python (no numpy/scipy at run time).

- An always-valid confidence sequence for the difference of two rates (mixture SPRT with a
  normal mixing distribution, Robbins 1970; Johari, Pekelis & Walsh 2017, "Always valid
  inference"), so the same data can be checked at every interval without inflating the
  false-rollback rate.
- Effect sizes between two distributions: population stability index and Jensen-Shannon distance.
- A chi-square test of homogeneity, so a distribution difference must also be significant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RateComparison:
    """Candidate minus incumbent rate, with an always-valid (1 - alpha) confidence interval."""

    candidate_rate: float
    incumbent_rate: float
    difference: float
    lower: float
    upper: float
    log_likelihood_ratio: float
    threshold: float  # log(1/alpha): the mixture LR crosses it when H0 (no difference) is rejected


def _smoothed(events: float, total: float) -> float:
    # Half a pseudo-event keeps the variance positive at 0 or 100% without moving the estimate much.
    return (events + 0.5) / (total + 1.0)


def compare_rates(
    *,
    candidate_events: float,
    candidate_total: float,
    incumbent_events: float,
    incumbent_total: float,
    alpha: float,
    effect: float,
    tau: float | None = None,
) -> RateComparison:
    """Mixture-SPRT confidence sequence for p_candidate - p_incumbent.

    With the estimate d and its variance V, and a N(0, tau^2) mixture over the true difference,
    the mixture likelihood ratio against difference d0 is
        sqrt(V / (V + tau^2)) * exp((d - d0)^2 tau^2 / (2 V (V + tau^2))),
    a nonnegative martingale under d0; by Ville's inequality it exceeds 1/alpha with probability
    at most alpha ever. Inverting gives the interval d +- r valid at all sample sizes at once.
    tau (default: `effect`, the minimum effect of interest) sets where the mixture is most
    powerful; any tau > 0 keeps the guarantee.
    """
    if candidate_total <= 0 or incumbent_total <= 0:
        raise ValueError("both variants need a positive total")
    pc = candidate_events / candidate_total
    pi = incumbent_events / incumbent_total
    vc = _smoothed(candidate_events, candidate_total)
    vi = _smoothed(incumbent_events, incumbent_total)
    variance = vc * (1 - vc) / candidate_total + vi * (1 - vi) / incumbent_total
    tau2 = max(effect if tau is None else tau, 1e-9) ** 2
    log_threshold = math.log(1 / alpha)
    radius = math.sqrt(
        2 * variance * (variance + tau2) / tau2 * (log_threshold + 0.5 * math.log((variance + tau2) / variance))
    )
    difference = pc - pi
    llr = 0.5 * math.log(variance / (variance + tau2)) + difference**2 * tau2 / (2 * variance * (variance + tau2))
    return RateComparison(pc, pi, difference, difference - radius, difference + radius, llr, log_threshold)


def normalise(counts: Sequence[float], *, epsilon: float = 1e-6) -> list[float]:
    """Proportions with a floor, so log-based measures stay finite for empty buckets."""
    total = sum(counts)
    if total <= 0:
        raise ValueError("a distribution needs a positive total")
    floored = [max(c / total, epsilon) for c in counts]
    norm = sum(floored)
    return [p / norm for p in floored]


def population_stability_index(expected: Sequence[float], actual: Sequence[float]) -> float:
    """PSI = sum (a - e) ln(a / e) over buckets; 0.1 is a small shift, 0.25 a large one."""
    e, a = normalise(expected), normalise(actual)
    return sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True))


def jensen_shannon_distance(p_counts: Sequence[float], q_counts: Sequence[float]) -> float:
    """Square root of the base-2 Jensen-Shannon divergence: 0 (same) .. 1 (disjoint)."""
    p, q = normalise(p_counts, epsilon=0.0), normalise(q_counts, epsilon=0.0)
    m = [(pi + qi) / 2 for pi, qi in zip(p, q, strict=True)]

    def kl(x: Sequence[float]) -> float:
        return sum(xi * math.log2(xi / mi) for xi, mi in zip(x, m, strict=True) if xi > 0)

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def chi_square_homogeneity(a_counts: Sequence[float], b_counts: Sequence[float]) -> tuple[float, int, float]:
    """Chi-square test that two count vectors come from one distribution: (statistic, dof, p-value)."""
    pairs = [(a, b) for a, b in zip(a_counts, b_counts, strict=True) if a + b > 0]
    total_a, total_b = sum(a for a, _ in pairs), sum(b for _, b in pairs)
    total = total_a + total_b
    if len(pairs) < 2 or total_a <= 0 or total_b <= 0:
        return 0.0, 0, 1.0
    statistic = 0.0
    for a, b in pairs:
        column = a + b
        expected_a, expected_b = column * total_a / total, column * total_b / total
        statistic += (a - expected_a) ** 2 / expected_a + (b - expected_b) ** 2 / expected_b
    dof = len(pairs) - 1
    return statistic, dof, chi_square_sf(statistic, dof)


def chi_square_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square(dof): the regularized upper incomplete gamma Q(dof/2, x/2)."""
    if x <= 0:
        return 1.0
    return _gamma_q(dof / 2.0, x / 2.0)


def _gamma_q(a: float, x: float) -> float:
    # Series for x < a + 1, Lentz's continued fraction otherwise (Numerical Recipes, 6.2).
    log_prefix = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(1000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_prefix) * h)
