"""Label guardrails: verdicts on ground truth that arrives after the predictions (docs/labels.md).

A label (a chargeback, a click, a reviewer's verdict) comes minutes to weeks after the prediction
it judges. Its guardrail counts outcomes since the rollout began (the judge's rules apply
unchanged: a sequential test on labelled outcomes stays always valid however late they come),
and the rollout waits for them:
- a step whose label guardrail is short of labelled samples waits for them, past the hold and up
  to progressDeadline plus the guardrail's labelDelay, never longer;
- the last step promotes only once its own predictions had labelDelay to be labelled;
- the status records what the wait stands on (have, need, observed rate, expected time), so a
  restarted controller and a human see the same count of record.
Pure: everything from the spec, the status and the clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta

from controller.api.duration import parse_duration
from controller.api.models import Evidence, Guardrail, GuardrailStatus, LabelProgress, ModelRolloutSpec, Step, Verdict
from controller.core.judge import Cause, Judgement, check_counts


def delay(guardrail: Guardrail) -> timedelta:
    """The guardrail's labelDelay (zero when unset)."""
    return parse_duration(guardrail.label_delay) if guardrail.label_delay is not None else timedelta(0)


def extension(guardrails: Iterable[Guardrail]) -> timedelta:
    """How far past progressDeadline a step may wait for the labels of these guardrails."""
    return max((delay(g) for g in guardrails if g.labelled), default=timedelta(0))


def labels_due(guardrail: Guardrail, step: Step, step_started: datetime | None) -> datetime | None:
    """When the predictions of the last step's hold have had labelDelay to be labelled."""
    if step_started is None or not guardrail.labelled:
        return None
    return step_started + parse_duration(step.hold) + delay(guardrail)


def not_yet_labelled(guardrail: Guardrail, judgement: Judgement) -> Judgement:
    """No feedback series yet is zero labels so far: the step waits for them (bounded by the
    deadline plus labelDelay) instead of counting towards inconclusiveLimit. Still never a pass;
    provider errors keep their own cause."""
    if not guardrail.labelled or judgement.cause is not Cause.NO_DATA:
        return judgement
    evidence = judgement.evidence.model_copy(update={"samples_needed": float(guardrail.min_samples)})
    message = f"no labelled predictions yet ({judgement.message})"
    return Judgement(Verdict.INCONCLUSIVE, message, evidence, Cause.INSUFFICIENT)


# increase() extrapolates a counter to its window's edges (by up to about a scrape interval at
# each): when labels stall, the same labels count for less as the window since the rollout began
# grows (7 early in a short window, 6 later). Drops within this share of the recorded count are
# that extrapolation; beyond it the counts went backwards (a Prometheus restart, HA replicas).
EXTRAPOLATION_SLACK = 0.5


def check_samples(judgement: Judgement, recorded: Evidence, *, sequential: bool) -> Judgement:
    """Labelled counts since the rollout began never go back (as the sequential rule's counts):
    far fewer than recorded is a provider problem, and the recorded counts stay those of record.
    The samples may drop by EXTRAPOLATION_SLACK (a stalled counter's shrinking extrapolation), and
    so may a sequential rule's errors: labelled errors are few and arrive in bursts, and
    increase()'s extrapolation over the growing window moves a count of 3 to 2.7 between two
    analyses (strict errors rolled a good candidate back as inconclusive in e2e). A larger drop
    (HA replicas answering in turn, a reset) is a provider problem, as for any sequential
    guardrail. An absolute or relative rule's value is no count: only its samples are compared."""
    values = {"candidate_value": None, "incumbent_value": None}
    if sequential:
        return check_counts(judgement, recorded, samples_slack=EXTRAPOLATION_SLACK, errors_slack=EXTRAPOLATION_SLACK)
    stripped = Judgement(judgement.verdict, judgement.message, judgement.evidence.model_copy(update=values))
    checked = check_counts(stripped, recorded.model_copy(update=values), samples_slack=EXTRAPOLATION_SLACK)
    if checked.cause is not Cause.COUNTS_WENT_BACKWARDS:
        return judgement
    return Judgement(checked.verdict, checked.message, recorded, checked.cause)


def progress(
    gs: GuardrailStatus, previous: LabelProgress | None, *, first_in_step: bool, now: datetime
) -> LabelProgress:
    """The wait for labels after this analysis: the candidate's labelled predictions (the count of
    record: counts that went backwards were replaced by the recorded ones, check_samples), those
    needed, and the rate observed in this step."""
    have = gs.evidence.candidate_samples
    if have is None or not math.isfinite(have):
        have = previous.have if previous is not None else 0.0
    if first_in_step or previous is None:
        since, since_have = now, have
    else:
        since, since_have = previous.since, previous.since_have
    needed = gs.evidence.samples_needed
    # Whole labels: the count as shown (increase() extrapolates to fractions) plus those missing.
    need = None if gs.verdict is not Verdict.INCONCLUSIVE or needed is None else math.floor(have) + math.ceil(needed)
    minutes = (now - since).total_seconds() / 60
    per_minute = (have - since_have) / minutes if minutes > 0 else None
    expected_at = None
    if need is not None and per_minute is not None and per_minute > 0:
        expected_at = now + timedelta(minutes=(need - have) / per_minute)
    return LabelProgress(
        have=round(have, 1),
        need=need,
        per_minute=None if per_minute is None else round(per_minute, 2),
        expected_at=expected_at,
        since=since,
        since_have=round(since_have, 1),
    )


def waiting(labels: LabelProgress, now: datetime) -> str:
    """'waiting for labels: 320 of 1,000 needed, ~40/min, about 17 min'."""
    if labels.need is None:
        return f"waiting for labels: {math.floor(labels.have):,} counted"
    parts = [f"waiting for labels: {math.floor(labels.have):,} of {math.ceil(labels.need):,} needed"]
    if labels.per_minute is None or labels.per_minute <= 0:
        parts.append("none arriving")
    else:
        parts.append(f"~{labels.per_minute:.3g}/min")
        if labels.expected_at is not None:
            minutes = max(1, math.ceil((labels.expected_at - now).total_seconds() / 60))
            parts.append(f"about {minutes} min" if minutes < 120 else f"about {minutes / 60:.1f} h")
    return ", ".join(parts)


def only_labels_missing(spec: ModelRolloutSpec, missing: Iterable[str]) -> list[Guardrail] | None:
    """The label guardrails keeping the step, when nothing else keeps it; None otherwise."""
    by_name = {g.name: g for g in spec.guardrails}
    keeping = [by_name.get(name) for name in missing]
    if not keeping or any(g is None or not g.labelled for g in keeping):
        return None
    return [g for g in keeping if g is not None]
