"""The judge: the one place where measured values meet a guardrail's bound.

`judge(guardrail, data)` returns pass / fail / inconclusive with its evidence. Inconclusive
says why, because the rollout treats the causes differently:
- NO_DATA (empty, NaN, stale series) and ERROR (provider failure) follow the guardrail's
  onNoData / onError policy;
- INSUFFICIENT (too few samples, or a difference not yet significant) waits for more traffic,
  bounded by the progress deadline.
None of them is ever a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from controller.api.models import BuiltinMetric, Evidence, Guardrail, RelativeRule, SegmentsStatus, Verdict
from controller.core import statistics
from controller.core.observation import Observation, ObservationStatus

# The sequential rule's bound on passing a candidate worse by its minimum effect or more. The
# guardrail's significance bounds false rollbacks alone; a pass at 5% keeps a good candidate's
# wait for evidence short enough for the default schedule even at significance 0.01 (at 1% as
# well, 2.4% of good candidates at 200 requests/s ran out of progressDeadline in step 1).
PASS_SIGNIFICANCE = 0.05


class Cause(StrEnum):
    NO_DATA = "NoData"
    ERROR = "ProviderError"
    INSUFFICIENT = "InsufficientSamples"
    # Provider problems in the counts themselves (follow onError, as ERROR does).
    COUNTS_WENT_BACKWARDS = "CountsWentBackwards"
    INCONSISTENT_COUNTS = "InconsistentCounts"


PROVIDER_PROBLEMS = (Cause.ERROR, Cause.COUNTS_WENT_BACKWARDS, Cause.INCONSISTENT_COUNTS)
# Errors above total by at most this (requests, or this share of the total) are clamped to the
# total: increase() extrapolates each series on its own, so two counters of the same requests
# disagree by a fraction of a request. Beyond it the two queries do not count the same requests.
EXCESS_ERRORS_CLAMPED = 1.0
EXCESS_ERRORS_SHARE_CLAMPED = 0.01


@dataclass(frozen=True)
class VariantData:
    """What the providers returned for one variant; None where the guardrail needs nothing."""

    value: Observation | None = None
    samples: Observation | None = None
    errors: Observation | None = None
    total: Observation | None = None
    distribution: Observation | None = None


@dataclass(frozen=True)
class GuardrailData:
    candidate: VariantData
    incumbent: VariantData = field(default_factory=VariantData)


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    message: str
    evidence: Evidence = field(default_factory=Evidence)
    cause: Cause | None = None
    # A segmented guardrail's segments (core.segments); None for the others.
    segments: SegmentsStatus | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS


class _Inconclusive(Exception):
    def __init__(self, cause: Cause, message: str, evidence: Evidence | None = None) -> None:
        super().__init__(message)
        self.cause, self.message, self.evidence = cause, message, evidence or Evidence()


def _need(obs: Observation | None, what: str) -> Observation:
    if obs is None:
        raise _Inconclusive(Cause.NO_DATA, f"{what}: not measured")
    if obs.status is ObservationStatus.ERROR:
        raise _Inconclusive(Cause.ERROR, f"{what}: {obs.message or 'provider error'}")
    if obs.status is ObservationStatus.NO_DATA:
        raise _Inconclusive(Cause.NO_DATA, f"{what}: {obs.message or 'no data'}")
    return obs


def _scalar(obs: Observation | None, what: str) -> float:
    value = _need(obs, what).value
    if value is None or not math.isfinite(value):
        raise _Inconclusive(Cause.NO_DATA, f"{what}: not a finite number")
    return value


def _enough(samples: float | None, minimum: int, who: str, evidence: Evidence) -> None:
    if samples is not None and samples < minimum:
        raise _Inconclusive(
            Cause.INSUFFICIENT,
            # increase() extrapolates, so counts come fractional: say them as whole requests.
            f"{who} has {math.floor(samples)} of the {minimum} samples needed",
            evidence.model_copy(update={"samples_needed": math.ceil(minimum - samples)}),
        )


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def judge(guardrail: Guardrail, data: GuardrailData, previous: SegmentsStatus | None = None) -> Judgement:
    """Pass, fail or inconclusive, with the evidence. Never raises for bad data. A guardrail with
    segmentBy gets vectors by segment in `data` and its last analysis' segments in `previous`."""
    if guardrail.segment_by is not None:
        # core.segments builds on this module's rules, one segment at a time.
        from controller.core.segments import judge_segments

        return judge_segments(guardrail, data, previous)
    try:
        if guardrail.absolute is not None:
            return _absolute(guardrail, data)
        if guardrail.relative is not None:
            return _relative(guardrail, data)
        if guardrail.sequential is not None:
            return _sequential(guardrail, data)
        if guardrail.drift is not None:
            return _drift(guardrail, data)
        raise _Inconclusive(Cause.NO_DATA, "guardrail has no rule")
    except _Inconclusive as why:
        return Judgement(Verdict.INCONCLUSIVE, why.message, why.evidence, why.cause)


def _samples(obs: Observation | None, who: str) -> float | None:
    return None if obs is None else _scalar(obs, f"{who} samples")


def _absolute(g: Guardrail, data: GuardrailData) -> Judgement:
    rule = g.absolute
    assert rule is not None
    value = _scalar(data.candidate.value, "candidate value")
    samples = _samples(data.candidate.samples, "candidate")
    bounds = [
        f">= {_fmt(rule.min)}" if rule.min is not None else "",
        f"<= {_fmt(rule.max)}" if rule.max is not None else "",
    ]
    bound = " and ".join(b for b in bounds if b)
    limit = rule.max if rule.max is not None else rule.min
    evidence = Evidence(candidate_value=value, candidate_samples=samples, bound=bound, limit=limit)
    _enough(samples, g.min_samples, "candidate", evidence)
    if (rule.max is not None and value > rule.max) or (rule.min is not None and value < rule.min):
        return Judgement(Verdict.FAIL, f"candidate {_fmt(value)} breaks {bound}", evidence)
    if g.metric.builtin is BuiltinMetric.SHADOW_DISAGREEMENT and rule.max is not None and samples is not None:
        evidence = _shown_below(rule.max, value, samples, evidence)
    return Judgement(Verdict.PASS, f"candidate {_fmt(value)} within {bound}", evidence)


def _shown_below(bound: float, rate: float, total: float, evidence: Evidence) -> Evidence:
    """A disagreement rate at or under its bound passes only once the evidence shows it below the
    bound (statistics.rate_below at PASS_SIGNIFICANCE): at 100 comparisons a true 5% disagrees at
    most twice about one time in eight, so the point estimate alone would pass it against 2%.
    Shadow has no users to protect meanwhile, so it can wait for the evidence. A bound of 0 (every
    answer must agree) cannot be shown below: there the point estimate decides."""
    if not 0 < bound < 1:
        return evidence
    below = statistics.rate_below(events=rate * total, total=total, bound=bound)
    threshold = math.log(1 / PASS_SIGNIFICANCE)
    shown = evidence.model_copy(
        update={"statistic": f"log e-value rate below {_fmt(bound)} {below:.2f} / {threshold:.2f}"}
    )
    if below >= threshold:
        return shown
    drift = rate * math.log(0.5) + (1 - rate) * (math.log1p(-bound / 2) - math.log1p(-bound))
    needed = math.ceil((threshold - below) / drift) if drift > 0 else None
    raise _Inconclusive(
        Cause.INSUFFICIENT,
        f"candidate {_fmt(rate)} on {math.floor(total)} is not yet shown below {_fmt(bound)}",
        shown if needed is None else shown.model_copy(update={"samples_needed": needed}),
    )


def _relative(g: Guardrail, data: GuardrailData) -> Judgement:
    rule = g.relative
    assert rule is not None
    cand = _scalar(data.candidate.value, "candidate value")
    inc = _scalar(data.incumbent.value, "incumbent value")
    cand_n = _samples(data.candidate.samples, "candidate")
    inc_n = _samples(data.incumbent.samples, "incumbent")
    ratio = cand / inc if inc != 0 else (math.inf if cand > 0 else 1.0)
    diff = cand - inc
    checks: list[tuple[str, bool]] = []
    if rule.max_ratio is not None:
        checks.append((f"ratio <= {_fmt(rule.max_ratio)}", ratio <= rule.max_ratio))
    if rule.min_ratio is not None:
        checks.append((f"ratio >= {_fmt(rule.min_ratio)}", ratio >= rule.min_ratio))
    if rule.max_increase is not None:
        checks.append((f"increase <= {_fmt(rule.max_increase)}", diff <= rule.max_increase))
    if rule.max_decrease is not None:
        checks.append((f"decrease <= {_fmt(rule.max_decrease)}", -diff <= rule.max_decrease))
    evidence = Evidence(
        candidate_value=cand,
        incumbent_value=inc,
        candidate_samples=cand_n,
        incumbent_samples=inc_n,
        bound=" and ".join(text for text, _ in checks),
        statistic=f"ratio {_fmt(ratio)}, difference {_fmt(diff)}",
        limit=_relative_limit(rule, inc),
    )
    _enough(cand_n, g.min_samples, "candidate", evidence)
    _enough(inc_n, g.min_samples, "incumbent", evidence)
    broken = [text for text, ok in checks if not ok]
    if broken:
        return Judgement(
            Verdict.FAIL, f"candidate {_fmt(cand)} vs incumbent {_fmt(inc)} breaks {', '.join(broken)}", evidence
        )
    return Judgement(Verdict.PASS, f"candidate {_fmt(cand)} vs incumbent {_fmt(inc)} within bounds", evidence)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _relative_limit(rule: RelativeRule, incumbent: float) -> float | None:
    """The tightest bound on the candidate's value the rule sets at this incumbent value (upper first)."""
    upper = [incumbent * r for r in (rule.max_ratio,) if r is not None]
    upper += [incumbent + d for d in (rule.max_increase,) if d is not None]
    if upper:
        return _finite(min(upper))
    lower = [incumbent * r for r in (rule.min_ratio,) if r is not None]
    lower += [incumbent - d for d in (rule.max_decrease,) if d is not None]
    return _finite(max(lower)) if lower else None


def excess_errors(errors: float, total: float) -> bool:
    """More errors than requests, beyond what increase()'s extrapolation explains."""
    return errors > total + max(EXCESS_ERRORS_CLAMPED, EXCESS_ERRORS_SHARE_CLAMPED * total)


def _sequential(g: Guardrail, data: GuardrailData) -> Judgement:
    rule = g.sequential
    assert rule is not None
    ce, ct = _scalar(data.candidate.errors, "candidate errors"), _scalar(data.candidate.total, "candidate total")
    ie, it = _scalar(data.incumbent.errors, "incumbent errors"), _scalar(data.incumbent.total, "incumbent total")
    evidence = Evidence(candidate_samples=ct, incumbent_samples=it)
    if min(ce, ct, ie, it) < 0 or excess_errors(ce, ct) or excess_errors(ie, it):
        raise _Inconclusive(
            Cause.INCONSISTENT_COUNTS,
            f"inconsistent counts: {ce:g} errors of {ct:g} and {ie:g} of {it:g}: errorsQuery and totalQuery "
            "do not count the same requests",
            evidence,
        )
    # A fraction of a request too many: every request failed (the worst case for the candidate).
    ce, ie = min(ce, ct), min(ie, it)
    if ct <= 0 or it <= 0:
        raise _Inconclusive(
            Cause.INSUFFICIENT, "no requests counted yet", evidence.model_copy(update={"samples_needed": g.min_samples})
        )
    min_ratio = 1 + rule.min_effect
    absolute = rule.min_absolute_effect
    # With an absolute effect there are two ways to pass, each at half the pass level, so the
    # chance that a candidate worse by both effects passes stays PASS_SIGNIFICANCE.
    beta = PASS_SIGNIFICANCE / 2 if absolute is not None else PASS_SIGNIFICANCE
    # Two one-sided tests, each at its own level: all of the significance goes to false rollbacks.
    test = statistics.rate_ratio_test(
        candidate_events=ce,
        candidate_total=ct,
        incumbent_events=ie,
        incumbent_total=it,
        alpha=rule.significance,
        beta=beta,
        min_ratio=min_ratio,
    )
    pass_bound = f"rate ratio < {min_ratio:g}"
    statistic = (
        f"ratio {_fmt(test.ratio)}; log e-value worse {test.worse:.2f} / {test.fail_threshold:.2f}, "
        f"not worse by {min_ratio:g}x {test.not_worse:.2f} / {test.pass_threshold:.2f}"
    )
    below: float | None = None
    needs = [] if test.samples_needed is None else [test.samples_needed]
    if absolute is not None:
        below = statistics.rate_below(events=ce, total=ct, bound=absolute)
        pass_bound += f" or rate < {_fmt(absolute)}"
        statistic += f", rate below {_fmt(absolute)} {below:.2f} / {test.pass_threshold:.2f}"
        # Its drift per further candidate request at today's rate, as for the ratio tests.
        pc, half = test.candidate_rate, absolute / 2
        drift = pc * math.log(0.5) + (1 - pc) * (math.log1p(-half) - math.log1p(-absolute))
        if drift > 0:
            needs.append(max(0.0, (test.pass_threshold - below) / drift))
    evidence = Evidence(
        candidate_value=test.candidate_rate,
        incumbent_value=test.incumbent_rate,
        candidate_samples=ct,
        incumbent_samples=it,
        bound=f"{pass_bound} to pass, > 1 to fail (significance {rule.significance:g})",
        statistic=statistic,
        worse=_finite(test.worse),
        worse_threshold=test.fail_threshold,
        not_worse=_finite(test.not_worse),
        not_worse_threshold=test.pass_threshold,
    )
    _enough(ct, g.min_samples, "candidate", evidence)
    if test.failed:
        return Judgement(
            Verdict.FAIL,
            f"candidate rate {_fmt(test.candidate_rate)} is significantly above incumbent "
            f"{_fmt(test.incumbent_rate)} (ratio {_fmt(test.ratio)})",
            evidence,
        )
    if test.passed:
        return Judgement(
            Verdict.PASS,
            f"candidate rate {_fmt(test.candidate_rate)} is not {min_ratio:g}x incumbent "
            f"{_fmt(test.incumbent_rate)} (ratio {_fmt(test.ratio)})",
            evidence,
        )
    if below is not None and below >= test.pass_threshold:
        return Judgement(
            Verdict.PASS,
            f"candidate rate {_fmt(test.candidate_rate)} is below minAbsoluteEffect {_fmt(absolute or 0.0)}",
            evidence,
        )
    if ce + ie == 0 and absolute is None:
        raise _Inconclusive(
            Cause.INSUFFICIENT,
            f"no errors in either variant yet ({ct:g} and {it:g} requests): the rule compares rates, "
            "so it waits for errors; set minAbsoluteEffect, or use an absolute rule, where errors are "
            "essentially zero",
            evidence,
        )
    needed = min(needs) if needs else None
    raise _Inconclusive(
        Cause.INSUFFICIENT,
        f"not yet conclusive: candidate {_fmt(test.candidate_rate)} vs incumbent {_fmt(test.incumbent_rate)} "
        f"(ratio {_fmt(test.ratio)})",
        evidence if needed is None else evidence.model_copy(update={"samples_needed": math.ceil(needed)}),
    )


def check_counts(
    judgement: Judgement, recorded: Evidence | None, *, samples_slack: float = 0.0, errors_slack: float = 0.0
) -> Judgement:
    """Cumulative counts lower than those recorded in status are a provider problem (a Prometheus
    restart, HA replicas answering in turn, a reset increase() missed), never a fresh start: a
    restart of the counts would restart the sequential test and void its guarantee. The recorded
    (higher) evidence stays, so the next analysis is compared with it too. samples_slack and
    errors_slack let the requests and the errors drop by that share of the recorded count, plus
    one (label guardrails: labels.py)."""
    if recorded is None:
        return judgement
    now, then = judgement.evidence, recorded

    def floor(old: float, slack: float) -> float:
        return old * (1 - slack) - 1 if slack > 0 else old - 1e-6 * max(1.0, old)

    drops = [
        f"{who} {what} {_fmt(new)} < {_fmt(old)}"
        for who, what, new, old, slack in (
            ("candidate", "requests", now.candidate_samples, then.candidate_samples, samples_slack),
            ("incumbent", "requests", now.incumbent_samples, then.incumbent_samples, samples_slack),
            ("candidate", "errors", events(now, "candidate"), events(then, "candidate"), errors_slack),
            ("incumbent", "errors", events(now, "incumbent"), events(then, "incumbent"), errors_slack),
        )
        if new is not None and old is not None and new < floor(old, slack)
    ]
    if not drops:
        return judgement
    message = (
        f"counts went backwards since the last analysis ({', '.join(drops)}): provider problem, never a fresh start"
    )
    return Judgement(Verdict.INCONCLUSIVE, message, recorded, Cause.COUNTS_WENT_BACKWARDS)


def events(evidence: Evidence, who: str) -> float | None:
    """Events (errors, disagreements) behind a verdict on a rate: the rate times its samples (both
    recorded in status), or None without either."""
    rate, total = (
        (evidence.candidate_value, evidence.candidate_samples)
        if who == "candidate"
        else (evidence.incumbent_value, evidence.incumbent_samples)
    )
    return None if rate is None or total is None else rate * total


def _buckets(obs: Observation | None, who: str, label: str) -> dict[str, float]:
    vector = dict(_need(obs, f"{who} distribution").vector)
    if not vector or any(not math.isfinite(v) for v in vector.values()):
        raise _Inconclusive(Cause.NO_DATA, f"{who} distribution: empty or not finite")
    if label == "le":
        return _decumulate(vector, who)
    return vector


def _decumulate(cumulative: Mapping[str, float], who: str) -> dict[str, float]:
    """Histogram buckets are cumulative (le); the tests need per-bucket counts."""
    try:
        ordered = sorted(cumulative.items(), key=lambda kv: float(kv[0]))
    except ValueError as exc:
        raise _Inconclusive(Cause.NO_DATA, f"{who} distribution: bucket bound is not a number") from exc
    out: dict[str, float] = {}
    previous = 0.0
    for le, count in ordered:
        out[le] = max(0.0, count - previous)
        previous = max(previous, count)
    return out


def _drift(g: Guardrail, data: GuardrailData) -> Judgement:
    rule = g.drift
    assert rule is not None
    label = g.metric.distribution_label or "le"
    cand = _buckets(data.candidate.distribution, "candidate", label)
    inc = _buckets(data.incumbent.distribution, "incumbent", label)
    keys = sorted(set(cand) | set(inc))
    c = [cand.get(k, 0.0) for k in keys]
    i = [inc.get(k, 0.0) for k in keys]
    cn, inn = sum(c), sum(i)
    evidence = Evidence(candidate_samples=cn, incumbent_samples=inn)
    if cn <= 0 or inn <= 0:
        raise _Inconclusive(
            Cause.INSUFFICIENT,
            "no predictions counted yet",
            evidence.model_copy(update={"samples_needed": g.min_samples}),
        )
    psi = statistics.population_stability_index(i, c)
    js = statistics.jensen_shannon_distance(i, c)
    chi2, dof, p_value = statistics.chi_square_homogeneity(c, i)
    bounds = []
    over = []
    if rule.max_psi is not None:
        bounds.append(f"PSI <= {_fmt(rule.max_psi)}")
        if psi > rule.max_psi:
            over.append(f"PSI {_fmt(psi)} > {_fmt(rule.max_psi)}")
    if rule.max_js_distance is not None:
        bounds.append(f"JS distance <= {_fmt(rule.max_js_distance)}")
        if js > rule.max_js_distance:
            over.append(f"JS distance {_fmt(js)} > {_fmt(rule.max_js_distance)}")
    evidence = Evidence(
        candidate_value=psi if rule.max_psi is not None else js,
        candidate_samples=cn,
        incumbent_samples=inn,
        bound=" and ".join(bounds) + f" (significance {rule.significance:g})",
        statistic=f"PSI {_fmt(psi)}, JS distance {_fmt(js)}, chi2 {chi2:.1f} (dof {dof}) p={p_value:.3g}",
    )
    _enough(cn, g.min_samples, "candidate", evidence)
    if over and p_value < rule.significance:
        return Judgement(Verdict.FAIL, f"predictions drift from the incumbent's: {', '.join(over)}", evidence)
    if over:
        raise _Inconclusive(
            Cause.INSUFFICIENT, f"{', '.join(over)} but not yet significant (p={p_value:.3g})", evidence
        )
    return Judgement(Verdict.PASS, f"predictions match the incumbent's ({evidence.statistic})", evidence)
