"""The error budget and the feasibility estimate: what the evidence so far says about the harm a
candidate can still do, and how long the evidence will take. Pure; everything from status.

A sequential guardrail's verdict records its cumulative counts (rates and requests of both
variants, since the rollout began) as evidence; from them:
- spent: the estimated excess bad requests so far, candidate errors minus its requests times the
  incumbent's rate (never below 0);
- the excess rate bound: an anytime-valid upper confidence bound of the candidate's excess rate
  per request, (upper bound of the incumbent's rate) x (upper bound of the rate ratio - 1), each
  at half the guardrail's significance, so it may be looked at every interval;
- the harm bound of an exposure: that rate times the candidate requests it brings.
docs/guardrails.md ("Error budget") has the argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.api.duration import parse_duration
from controller.api.models import Evidence, Guardrail, ModelRolloutSpec, Step
from controller.core import statistics
from controller.core.judge import PASS_SIGNIFICANCE


@dataclass(frozen=True)
class Counts:
    candidate_errors: float
    candidate_total: float
    incumbent_errors: float
    incumbent_total: float

    @classmethod
    def of(cls, evidence: Evidence) -> Counts | None:
        e = evidence
        if None in (e.candidate_value, e.candidate_samples, e.incumbent_value, e.incumbent_samples):
            return None
        assert e.candidate_value is not None and e.candidate_samples is not None
        assert e.incumbent_value is not None and e.incumbent_samples is not None
        if e.candidate_samples <= 0 or e.incumbent_samples <= 0:
            return None
        return cls(
            e.candidate_value * e.candidate_samples,
            e.candidate_samples,
            e.incumbent_value * e.incumbent_samples,
            e.incumbent_samples,
        )

    @property
    def requests(self) -> float:
        return self.candidate_total + self.incumbent_total

    def spent(self) -> float:
        return max(0.0, self.candidate_errors - self.candidate_total * self.incumbent_errors / self.incumbent_total)

    def excess_rate_bound(self, alpha: float) -> float:
        ratio = statistics.ratio_upper_bound(
            candidate_events=self.candidate_errors,
            candidate_total=self.candidate_total,
            incumbent_events=self.incumbent_errors,
            incumbent_total=self.incumbent_total,
            alpha=alpha / 2,
        )
        if ratio <= 1:
            return 0.0
        rate = statistics.rate_upper_bound(events=self.incumbent_errors, total=self.incumbent_total, alpha=alpha / 2)
        return min(1.0, rate * (ratio - 1))

    def pass_needs(self, share: float, min_effect: float) -> float:
        """Candidate requests until the pass side concludes if the candidate is as good as the
        incumbent and the requests come at `share` (the drift of statistics.rate_ratio_test)."""
        pi = max(self.incumbent_errors, 0.5) / self.incumbent_total
        events = self.candidate_errors + self.incumbent_errors
        f = self.candidate_total / self.requests
        now = statistics._log_ratio(self.candidate_errors, events, f, 1.0, 1 + min_effect)
        per_request = (pi / share) * (math.log1p(min_effect * share) - share * math.log1p(min_effect))
        return max(0.0, (math.log(1 / PASS_SIGNIFICANCE) - now) / per_request)


def exposure(rate: float, step: Step, interval: timedelta) -> float:
    """Candidate requests a step brings over its hold (at least one interval) at `rate` requests/s in all."""
    seconds = max(_seconds(step.hold), interval.total_seconds())
    return rate * step.weight / 100 * seconds


def _seconds(duration: str) -> float:
    return parse_duration(duration).total_seconds()


def arrival_rate(counts: Counts, started: datetime | None, at: datetime | None) -> float | None:
    """Requests per second to both variants together, from the cumulative counts."""
    if started is None or at is None or at <= started:
        return None
    return counts.requests / (at - started).total_seconds()


def step_needs(
    spec: ModelRolloutSpec, guardrail: Guardrail, counts: Counts, index: int, *, rate: float, left: float
) -> float:
    """Seconds step `index` needs, from now, if the candidate is as good as the incumbent: its
    minimum samples, then a conclusive pass or (not at the last step) a next step that fits in
    `left`; at least its hold."""
    steps = spec.expanded_steps()
    step = steps[index]
    rule = guardrail.sequential
    assert rule is not None
    per_second = rate * step.weight / 100
    if per_second <= 0:
        return math.inf
    needs = max(0.0, guardrail.min_samples - counts.candidate_total)
    passing = counts.pass_needs(step.weight / 100, rule.min_effect)
    if index + 1 < len(steps) and spec.analysis.budget > 0:
        nxt = steps[index + 1]
        passing = min(passing, _budget_needs(counts, step, nxt, spec, rate=rate, left=left, alpha=rule.significance))
    return max(_seconds(step.hold), max(needs, passing) / per_second)


def _budget_needs(
    counts: Counts, step: Step, nxt: Step, spec: ModelRolloutSpec, *, rate: float, left: float, alpha: float
) -> float:
    """Candidate requests at this step's share until the next step's harm bound fits in `left`,
    at today's incumbent rate and a candidate as good (doubling, then bisection)."""
    interval = parse_duration(spec.analysis.interval)
    pi = max(counts.incumbent_errors, 0.5) / counts.incumbent_total
    share = step.weight / 100

    def fits(n: float) -> bool:
        more = Counts(
            counts.candidate_errors + pi * n,
            counts.candidate_total + n,
            counts.incumbent_errors + pi * n * (1 - share) / max(share, 1e-9),
            counts.incumbent_total + n * (1 - share) / max(share, 1e-9),
        )
        return more.excess_rate_bound(alpha) * exposure(rate, nxt, interval) <= left

    if fits(0):
        return 0.0
    hi = max(counts.candidate_total, 100.0)
    while not fits(hi):
        hi *= 2
        if hi > 1e9:
            return math.inf
    lo = 0.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class BudgetView:
    """The budget at one analysis: spent, left, and the harm bounds of the next step and of one
    more interval at this step (None while a sequential guardrail has no counts)."""

    spent: float
    left: float
    next_step: float | None
    one_interval: float | None


def view(
    spec: ModelRolloutSpec, guardrails: list[tuple[Guardrail, Evidence]], *, index: int, rate: float | None
) -> BudgetView | None:
    # A segmented guardrail's counts are the aggregate's: a segment's harm can hide in them (a
    # candidate worse in one region, better elsewhere, spends nothing), so it has no budget.
    sequential = [(g, Counts.of(e)) for g, e in guardrails if g.sequential is not None and g.segment_by is None]
    if not sequential:
        return None
    counted = [(g, c) for g, c in sequential if c is not None]
    spent = sum(c.spent() for _, c in counted)
    left = spec.analysis.budget - spent
    if len(counted) < len(sequential) or rate is None or spec.analysis.budget == 0:
        return BudgetView(spent, left, None, None)
    bound = sum(c.excess_rate_bound(g.sequential.significance) for g, c in counted if g.sequential is not None)
    steps = spec.expanded_steps()
    interval = parse_duration(spec.analysis.interval)
    here = steps[index].model_copy(update={"hold": "0s"})
    nxt = bound * exposure(rate, steps[index + 1], interval) if index + 1 < len(steps) else None
    return BudgetView(spent, left, nxt, bound * exposure(rate, here, interval))


def plan(
    spec: ModelRolloutSpec, guardrail: Guardrail, counts: Counts, index: int, *, rate: float, left: float
) -> list[float]:
    """Seconds each step from `index` on needs (step_needs), the counts projected forward at
    today's rates for a candidate as good as the incumbent."""
    steps = spec.expanded_steps()
    pi = max(counts.incumbent_errors, 0.5) / counts.incumbent_total
    needs: list[float] = []
    for i in range(index, len(steps)):
        seconds = step_needs(spec, guardrail, counts, i, rate=rate, left=left)
        needs.append(seconds)
        if not math.isfinite(seconds):
            break
        share = steps[i].weight / 100
        n_c, n_i = rate * seconds * share, rate * seconds * (1 - share)
        counts = Counts(
            counts.candidate_errors + pi * n_c,
            counts.candidate_total + n_c,
            counts.incumbent_errors + pi * n_i,
            counts.incumbent_total + n_i,
        )
    return needs
