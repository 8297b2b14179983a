"""Statistics the judge needs, in pure Python (no numpy/scipy at run time).

- Always-valid sequential tests of the ratio of two event rates (likelihood ratios of the
  candidate's share of the events, Wald's SPRT made a mixture on the fail side; Ville's
  inequality), so the same data can be checked at every interval without inflating the
  false-rollback rate.
- Effect sizes between two distributions: population stability index and Jensen-Shannon distance.
- A chi-square test of homogeneity, so a distribution difference must also be significant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The fail side's alternatives, as multiples of the minimum effect: the candidate's rate is
# 1 + k * minEffect times the incumbent's, k in (1, 2, 4), with equal weight. The minimum effect
# itself makes the test as fast as Wald's at that effect; 2x and 4x it keep larger regressions
# from waiting for the evidence a small one needs (docs/guardrails.md has the measurements).
FAIL_ALTERNATIVES = (1.0, 2.0, 4.0)


@dataclass(frozen=True)
class RateRatioTest:
    """Two always-valid sequential tests on the ratio of the candidate's rate to the incumbent's.

    `worse` is the log of an e-process against "the candidate is no worse" (ratio <= 1): reject
    (fail the candidate) once it reaches `fail_threshold` = log(1/alpha). `not_worse` is the log of
    an e-process against "the candidate is worse by the minimum ratio or more": reject (pass the
    candidate) once it reaches `pass_threshold` = log(1/beta).
    """

    candidate_rate: float
    incumbent_rate: float
    ratio: float  # estimated rate ratio, candidate / incumbent (inf when only the candidate has events)
    worse: float
    not_worse: float
    fail_threshold: float
    pass_threshold: float
    samples_needed: (
        float | None
    )  # candidate samples until one test concludes at today's rates, if either is heading there

    @property
    def failed(self) -> bool:
        return self.worse >= self.fail_threshold

    @property
    def passed(self) -> bool:
        return self.not_worse >= self.pass_threshold


def _log_ratio(events: float, all_events: float, share: float, ratio: float, null_ratio: float) -> float:
    # Given E events in all, the candidate's count is Binomial(E, theta) with
    # theta = r f / (1 + (r - 1) f): the log-likelihood ratio of rate ratio r against r0.
    return events * math.log(ratio / null_ratio) - all_events * (
        math.log1p((ratio - 1) * share) - math.log1p((null_ratio - 1) * share)
    )


def rate_ratio_test(
    *,
    candidate_events: float,
    candidate_total: float,
    incumbent_events: float,
    incumbent_total: float,
    alpha: float,
    beta: float,
    min_ratio: float,
) -> RateRatioTest:
    """Sequential tests of the candidate's event rate against the incumbent's, conditional on events.

    The incumbent's rate is a nuisance the tests never estimate: given E events in both variants
    together, the candidate's share of them depends only on the rate ratio r and on the candidate's
    share f of the requests (Poisson limit; exact in distribution for rare events). The likelihood
    ratio of r against r0 for that share, r^c / (1 + (r - 1) f)^E * (1 + (r0 - 1) f)^E / r0^c, is
    then a nonnegative martingale under r0 as events arrive at a fixed share, and by Ville's
    inequality it ever reaches 1/alpha with probability at most alpha: every interval may look.

    - worse: a mixture over r = 1 + k (min_ratio - 1), k in FAIL_ALTERNATIVES, against r0 = 1; a
      supermartingale under any r <= 1, so alpha bounds false failures of a candidate no worse.
    - not_worse: r = 1 against r0 = min_ratio; a supermartingale under any r >= min_ratio, so
      beta bounds passes of a candidate worse by the minimum effect or more.
    """
    if candidate_total <= 0 or incumbent_total <= 0:
        raise ValueError("both variants need a positive total")
    if min(candidate_events, incumbent_events) < 0:
        raise ValueError("event counts cannot be negative")
    if min_ratio <= 1:
        raise ValueError("the minimum ratio must be above 1")
    share = candidate_total / (candidate_total + incumbent_total)
    events = candidate_events + incumbent_events
    ratios = [1 + k * (min_ratio - 1) for k in FAIL_ALTERNATIVES]
    weight = math.log(len(ratios))
    logs = [_log_ratio(candidate_events, events, share, r, 1.0) - weight for r in ratios]
    top = max(logs)
    worse = top + math.log(sum(math.exp(x - top) for x in logs))
    not_worse = _log_ratio(candidate_events, events, share, 1.0, min_ratio)
    pc, pi = candidate_events / candidate_total, incumbent_events / incumbent_total
    ratio = pc / pi if pi > 0 else (math.inf if pc > 0 else 1.0)
    fail_at, pass_at = math.log(1 / alpha), math.log(1 / beta)
    # Drift per further candidate sample at today's rates and share: each brings pc candidate
    # events and pi (1 - f) / f incumbent ones. The rule concludes when a drifting test arrives.
    more = pc + pi * (1 - share) / share
    needs: list[float] = []
    for r, x in zip(ratios, logs, strict=True):
        drift = pc * math.log(r) - more * math.log1p((r - 1) * share)
        if drift > 0:
            needs.append((fail_at - x) / drift)
    drift = -(pc * math.log(min_ratio) - more * math.log1p((min_ratio - 1) * share))
    if drift > 0:
        needs.append((pass_at - not_worse) / drift)
    needed = max(0.0, min(needs)) if needs else None
    return RateRatioTest(pc, pi, ratio, worse, not_worse, fail_at, pass_at, needed)


def rate_below(*, events: float, total: float, bound: float) -> float:
    """Log e-value against "the rate is at least `bound`", from one variant's counts alone.

    The likelihood ratio of rate bound/2 against rate `bound` is a nonnegative supermartingale
    for every rate >= bound, so by Ville's inequality it ever reaches 1/beta with probability at
    most beta. Unlike the ratio tests it needs no events at all: n requests without an error are
    evidence of a rate below the bound.
    """
    if total <= 0 or events < 0:
        raise ValueError("a positive total and a count of events that is not negative are needed")
    if not 0 < bound < 1:
        raise ValueError("the bound must lie strictly between 0 and 1")
    half = bound / 2
    return events * math.log(half / bound) + (total - events) * (math.log1p(-half) - math.log1p(-bound))


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


# Alternatives of the upper confidence bounds, as fractions of the value under test: a mixture
# over them keeps the bound within a few percent of the one tuned to the truth, from a bound
# 1.2x the truth (plenty of data) to 7x (a handful of events), at a cost of log 5 in the threshold.
UPPER_ALTERNATIVES = (0.15, 0.3, 0.5, 0.7, 0.85)


def _upper_bound(log_e: Callable[[float], float], start: float, alpha: float) -> float:
    """The smallest value v >= start whose log e-value log_e(v) reaches log(1/alpha), by bisection in
    log space; inf when none up to 1e6 * start. The set below it is an anytime-valid confidence
    set: for the true value the e-process ever reaches 1/alpha with probability at most alpha."""
    target = math.log(1 / alpha)
    lo = hi = max(start, 1e-12)
    if log_e(lo) >= target:
        # The start is already excluded (a floor, e.g. for zero events): walk down, or the bound
        # would be the floor and stop shrinking with evidence.
        while log_e(lo) >= target:
            lo, hi = lo / 2, lo
            if lo < 1e-12:
                return hi
    while log_e(hi) < target:
        lo, hi = hi, hi * 2
        if hi > start * 1e6 + 1e-6:
            return math.inf
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if log_e(mid) < target else (lo, mid)
    return hi


def _log_mean_exp(logs: Sequence[float]) -> float:
    top = max(logs)
    return top + math.log(sum(math.exp(x - top) for x in logs) / len(logs))


def ratio_upper_bound(
    *, candidate_events: float, candidate_total: float, incumbent_events: float, incumbent_total: float, alpha: float
) -> float:
    """Anytime-valid upper confidence bound on the rate ratio r = candidate / incumbent.

    For each r0 the mixture over r = rho r0 (rho in UPPER_ALTERNATIVES, all below r0) of the
    likelihood ratios of the candidate's share of the events is a supermartingale under every
    r >= r0 (as the pass side of rate_ratio_test), so the bound is below the true ratio at some
    look with probability at most alpha, however often it is looked at. inf without events.
    """
    share = candidate_total / (candidate_total + incumbent_total)
    events = candidate_events + incumbent_events
    if events <= 0:
        return math.inf

    def log_e(r0: float) -> float:
        return _log_mean_exp([_log_ratio(candidate_events, events, share, rho * r0, r0) for rho in UPPER_ALTERNATIVES])

    pc, pi = candidate_events / candidate_total, incumbent_events / incumbent_total
    estimate = pc / pi if pi > 0 and pc > 0 else 0.01
    return _upper_bound(log_e, estimate, alpha)


def rate_upper_bound(*, events: float, total: float, alpha: float) -> float:
    """Anytime-valid upper confidence bound on one variant's event rate (same construction)."""
    if total <= 0:
        return 1.0

    def log_e(p0: float) -> float:
        if p0 >= 1:
            return math.inf
        logs = [
            events * math.log(rho) + (total - events) * (math.log1p(-rho * p0) - math.log1p(-p0))
            for rho in UPPER_ALTERNATIVES
        ]
        return _log_mean_exp(logs)

    return min(1.0, _upper_bound(log_e, max(events / total, 0.5 / total), alpha))
