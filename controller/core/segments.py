"""Per-segment guardrails: the rule judged per value of a label, false rollbacks bounded over all.

A candidate can improve the average and hurt a slice (one region, one device class); judging
only the aggregate misses it, and judging every slice at the guardrail's significance multiplies
false rollbacks by the number of slices. Here each segment gets the rule of its own, and the
guardrail fails when any segment fails, with the probability of a false rollback over all
segments at most the rule's significance, however often it is looked at:

- Segments are *buckets*: up to `maxSegments` label values get a test of their own (the largest
  by traffic when they get it, kept in status for the whole rollout), every other value is summed
  into one `(other)` bucket and never leaves it: once `(other)` has a member no slot is handed
  out again. So at most K = maxSegments + 1 hypotheses are ever tested, K fixed by the
  spec before any data, and every bucket's cumulative counts only grow (a value joining `(other)`
  adds its requests as if they came since the last look): each e-process is one supermartingale.
- The sequential rule's statistic is an e-process per bucket (judge/statistics: a nonnegative
  supermartingale under "the candidate is no worse in this segment"). Bonferroni on e-processes
  (Vovk & Wang, "E-values: calibration, combination and applications", Ann. Statist. 2021):
  reject bucket k when its e-process reaches K / alpha. By Ville's inequality each crosses with
  probability at most alpha / K at any time, so some true null crosses at some look with
  probability at most alpha: family-wise, under continuous monitoring, with segments appearing
  at any time (a bucket with no data yet is an e-process stuck at 1). The price is log K in the
  log threshold: a few more samples, not K times as many. bench/judge.py simulates it.
- The pass side needs no correction: the guardrail passes only when every bucket passes, and a
  bucket worse by the minimum effect passes with probability at most judge.PASS_SIGNIFICANCE.
- The drift rule's chi-square test runs per bucket at significance / K (Bonferroni on p-values:
  per analysis, as the aggregate drift rule's guarantee is). Its distributions come by segment
  (Observation.groups), one vector of buckets per label value.
- Absolute and relative rules have no significance: their bounds apply per segment as they do to
  the aggregate, each segment needing minSamples.

No data is never a pass: a segment only one variant has is inconclusive (NoData) for the rules
that compare; a segment under minSegmentShare of the requests is judged and reported (its
failure fails the guardrail) but its inconclusive verdict never holds the guardrail. A provider
problem holds it at any size: errors of a value with no requests, or more than its requests (an
errorsQuery without `by (<segmentBy>)` puts them all in `(none)`), are InconsistentCounts, and a
missing error count is zero only when every value with errors has requests. The evidence of the
aggregate stays the guardrail's evidence (cumulative counts, checked against going backwards by
the engine); the worst few buckets' evidence goes to status, and their counts are checked against
going backwards at the next analysis (other buckets' drops only through the aggregate: status
keeps no counts for every bucket).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.api.models import (
    MAX_SEGMENT_EVIDENCE,
    Evidence,
    Guardrail,
    SegmentEvidence,
    SegmentsStatus,
    Verdict,
)
from controller.core import labels
from controller.core.judge import (
    PROVIDER_PROBLEMS,
    Cause,
    GuardrailData,
    Judgement,
    VariantData,
    _fmt,
    _Inconclusive,
    _need,
    check_counts,
    excess_errors,
    judge,
)
from controller.core.observation import Observation, ObservationStatus

OTHER = "(other)"
# Label values longer than status can hold are judged in the other bucket.
MAX_SEGMENT_NAME = 128
_FIELDS = ("value", "samples", "errors", "total")
# Worst first: a provider problem, then missing data, then too few samples.
_SEVERITY = {cause: i for i, cause in enumerate((*PROVIDER_PROBLEMS, Cause.NO_DATA, Cause.INSUFFICIENT))}


def buckets_of(guardrail: Guardrail) -> int:
    """K: the hypotheses a segmented guardrail can ever test (its named segments and other)."""
    return guardrail.segment_slots + 1


def segment_significance(significance: float, guardrail: Guardrail) -> float:
    """Bonferroni over the K buckets: each e-process is compared with K / significance."""
    return significance / buckets_of(guardrail)


def assign(
    sizes: Mapping[str, float | None], named: Sequence[str], slots: int, *, other_used: bool = False
) -> tuple[list[str], dict[str, list[str]]]:
    """The named segments after this analysis (the earlier ones first, never dropped) and each
    bucket's label values. New values take a free slot, largest first, until the slots are full;
    the rest go to OTHER. Once OTHER has had a member (`other_used`: the last analysis had one)
    no slot is handed out again, even one left free (a shorter name, a larger maxSegments):
    a value never leaves OTHER, so OTHER's counts, like every bucket's, only grow, and each
    bucket's e-process is one supermartingale."""
    kept = list(dict.fromkeys(named))[:slots]
    if not other_used:
        fresh = sorted(
            (s for s in sizes if s not in kept and len(s) <= MAX_SEGMENT_NAME and s != OTHER),
            key=lambda s: (-(sizes[s] or 0.0), s),
        )
        kept += fresh[: max(0, slots - len(kept))]
    members: dict[str, list[str]] = {s: [s] for s in kept if s in sizes}
    rest = sorted(s for s in sizes if s not in kept)
    if rest:
        members[OTHER] = rest
    return kept, members


@dataclass(frozen=True)
class _Judged:
    segment: str
    judgement: Judgement
    share: float | None  # of both variants' requests, when the rule counts them
    small: bool


def judge_segments(guardrail: Guardrail, data: GuardrailData, previous: SegmentsStatus | None) -> Judgement:
    """The segmented guardrail's verdict; `data` holds vectors keyed by the segment label's value
    and `previous` the status of the last analysis (its named segments carry over)."""
    label = guardrail.segment_by
    assert label is not None
    groups: tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]] | None = None
    try:
        cand, inc = _vectors(data.candidate, "candidate"), _vectors(data.incumbent, "incumbent")
        if guardrail.drift is not None:
            groups = (
                _groups(data.candidate.distribution, "candidate"),
                _groups(data.incumbent.distribution, "incumbent"),
            )
            # A segment's distribution counts its predictions: the sum of its buckets (for
            # cumulative `le` buckets, the largest: +Inf).
            bucket_label = guardrail.metric.distribution_label or "le"
            for vectors, by_segment in zip((cand, inc), groups, strict=True):
                vectors["distribution"] = {s: _predictions(b, bucket_label) for s, b in by_segment.items()}
    except _Inconclusive as why:
        return Judgement(Verdict.INCONCLUSIVE, why.message, why.evidence, why.cause)
    sized = "total" if guardrail.sequential is not None else "distribution" if groups is not None else "samples"
    values = sorted({s for vectors in (cand, inc) for vector in vectors.values() for s in vector})
    sizes: dict[str, float | None] = {
        s: (cand[sized].get(s, 0.0) + inc.get(sized, {}).get(s, 0.0)) if sized in cand else None for s in values
    }
    # A segment with nothing but zeros in either variant tells nothing: it takes no slot. (Errors
    # without requests are kept, to be judged inconsistent rather than dropped.)
    active = {s for vectors in (cand, inc) for vector in vectors.values() for s, v in vector.items() if v != 0}
    sizes = {s: size for s, size in sizes.items() if size is None or size > 0 or s in active}
    same = previous is not None and previous.label == label
    named = list(previous.named) if previous is not None and same else []
    other_used = previous is not None and same and previous.other > 0
    named, members = assign(sizes, named, guardrail.segment_slots, other_used=other_used)
    known = [v for v in sizes.values() if v is not None]
    everything = sum(known) if len(known) == len(sizes) else None
    alpha = _significance(guardrail)
    per_segment = _per_segment(guardrail)
    recorded = {w.segment: w for w in previous.worst} if previous is not None and previous.label == label else {}
    judged: list[_Judged] = []
    for segment, of in members.items():
        j = _judge_bucket(per_segment, label, segment, of, cand, inc, groups)
        if guardrail.sequential is not None and segment in recorded:
            j = _check_bucket_counts(guardrail, j, recorded[segment])
        size = _bucket_size(of, sizes)
        share = size / everything if size is not None and everything else None
        judged.append(_Judged(segment, j, share, share is not None and share < guardrail.segment_share))
    policy = (
        f"{guardrail.segment_slots} largest segments judged on their own, the rest as {OTHER}; "
        + (f"each at significance {alpha:g}/{buckets_of(guardrail)}; " if alpha is not None else "")
        + f"under {guardrail.segment_share:.0%} of requests: reported, never holding the verdict"
    )
    return _verdict(guardrail, label, judged, named, members, policy, cand, inc)


def _significance(guardrail: Guardrail) -> float | None:
    rule = guardrail.sequential or guardrail.drift
    return rule.significance if rule is not None else None


def _per_segment(guardrail: Guardrail) -> Guardrail:
    """The guardrail each segment is judged by: no segments, the significance split over K."""
    update: dict[str, object] = {"segment_by": None}
    for name in ("sequential", "drift"):
        rule = getattr(guardrail, name)
        if rule is not None:
            update[name] = rule.model_copy(update={"significance": segment_significance(rule.significance, guardrail)})
    return guardrail.model_copy(update=update)


def _groups(obs: Observation | None, who: str) -> dict[str, dict[str, float]]:
    """A distribution's buckets by segment; a failed or empty query is the whole guardrail's."""
    groups = {segment: dict(buckets) for segment, buckets in _need(obs, f"{who} distribution").groups.items()}
    if not groups or any(not math.isfinite(v) for buckets in groups.values() for v in buckets.values()):
        raise _Inconclusive(Cause.NO_DATA, f"{who} distribution: empty or not finite")
    return groups


def _predictions(buckets: Mapping[str, float], label: str) -> float:
    return max(buckets.values(), default=0.0) if label == "le" else sum(buckets.values())


def _vectors(variant: VariantData, who: str) -> dict[str, dict[str, float]]:
    """Each measured field's values by segment; a failed or empty query is the whole guardrail's."""
    out: dict[str, dict[str, float]] = {}
    for name in _FIELDS:
        obs: Observation | None = getattr(variant, name)
        if obs is None:
            continue
        vector = dict(_need(obs, f"{who} {name}").vector)
        if any(not math.isfinite(v) for v in vector.values()):
            raise _Inconclusive(Cause.NO_DATA, f"{who} {name}: not finite")
        out[name] = vector
    return out


def _check_bucket_counts(guardrail: Guardrail, j: Judgement, recorded: SegmentEvidence) -> Judgement:
    """A bucket's cumulative counts against those the last analysis recorded for it (status keeps
    the worst MAX_SEGMENT_EVIDENCE buckets' counts): lower is a provider problem, as the engine
    checks the aggregate's (label guardrails with increase()'s extrapolation slack)."""
    then = Evidence(
        candidate_value=recorded.candidate_value,
        incumbent_value=recorded.incumbent_value,
        candidate_samples=recorded.candidate_samples,
        incumbent_samples=recorded.incumbent_samples,
        bound=recorded.bound,
    )
    return labels.check_samples(j, then, sequential=True) if guardrail.labelled else check_counts(j, then)


def _inconsistent(
    of: Sequence[str], cand: Mapping[str, Mapping[str, float]], inc: Mapping[str, Mapping[str, float]]
) -> str | None:
    """Errors a bucket's label value has beyond its requests (none counted, or fewer than its
    errors): the two queries do not count the same requests, e.g. an errorsQuery without
    `by (<segmentBy>)` whose errors all land in one value. Checked per value: a sum hides it."""
    for who, vectors in (("candidate", cand), ("incumbent", inc)):
        errors, totals = vectors.get("errors", {}), vectors.get("total", {})
        for s in of:
            e = errors.get(s, 0.0)
            if e > 0 and (s not in totals or excess_errors(e, totals[s])):
                t = f"{totals[s]:g} requests" if s in totals else "no requests counted"
                return f"{who} {e:g} errors and {t} in {s}"
    return None


def _bucket_size(of: Sequence[str], sizes: Mapping[str, float | None]) -> float | None:
    known = [sizes[s] for s in of]
    return None if any(v is None for v in known) else sum(v or 0.0 for v in known)


def _bucket_variant(vectors: Mapping[str, Mapping[str, float]], of: Sequence[str]) -> tuple[VariantData, bool]:
    """One bucket's scalar observations of one variant, and whether the variant has it at all.
    Counts are summed; a value is the samples-weighted mean of the bucket's values (exact for a
    rate, an approximation for a quantile). An absent error count is zero errors when the
    variant's totals have the segment and every value with errors has totals too: the errors
    query answered by segment, with no errors there (errors elsewhere are no zero here)."""
    fields: dict[str, Observation] = {}
    present = False
    totals = vectors.get("total", {})
    by_segment = all(s in totals for s in vectors.get("errors", {}))
    for name, vector in vectors.items():
        here = [s for s in of if s in vector]
        present = present or bool(here)
        if name == "errors" and not here and by_segment and any(s in totals for s in of):
            fields[name] = Observation(ObservationStatus.OK, value=0.0)
        elif not here:
            fields[name] = Observation.no_data(f"no {name}")
        elif name == "value" and len(here) > 1:
            weights = [vectors.get("samples", {}).get(s, 1.0) for s in here]
            total = sum(weights)
            mean = sum(vector[s] * w for s, w in zip(here, weights, strict=True)) / total if total > 0 else math.nan
            fields[name] = (
                Observation(ObservationStatus.OK, value=mean)
                if math.isfinite(mean)
                else Observation.no_data("no samples")
            )
        else:
            fields[name] = Observation(ObservationStatus.OK, value=sum(vector[s] for s in here))
    return VariantData(**fields), present


def _bucket_distribution(groups: Mapping[str, Mapping[str, float]], of: Sequence[str]) -> tuple[VariantData, bool]:
    """One bucket's distribution: its segments' bucket counts added (cumulative ones stay cumulative)."""
    here = [s for s in of if s in groups]
    summed: dict[str, float] = {}
    for s in here:
        for bucket, count in groups[s].items():
            summed[bucket] = summed.get(bucket, 0.0) + count
    return VariantData(distribution=Observation(ObservationStatus.OK, vector=summed)), bool(here)


def _judge_bucket(
    per_segment: Guardrail,
    label: str,
    segment: str,
    of: Sequence[str],
    cand: Mapping[str, Mapping[str, float]],
    inc: Mapping[str, Mapping[str, float]],
    groups: tuple[Mapping[str, Mapping[str, float]], Mapping[str, Mapping[str, float]]] | None,
) -> Judgement:
    if groups is not None:
        c, has_c = _bucket_distribution(groups[0], of)
        i, has_i = _bucket_distribution(groups[1], of)
    else:
        c, has_c = _bucket_variant(cand, of)
        i, has_i = _bucket_variant(inc, of)
    if per_segment.sequential is not None and (why := _inconsistent(of, cand, inc)) is not None:
        return Judgement(
            Verdict.INCONCLUSIVE,
            f"inconsistent counts: {why}: errorsQuery and totalQuery do not count the same requests "
            f"(does errorsQuery keep by ({label})?)",
            cause=Cause.INCONSISTENT_COUNTS,
        )
    compares = per_segment.absolute is None
    if not has_c or (compares and not has_i):
        who = "incumbent" if has_i else "candidate"
        return Judgement(
            Verdict.INCONCLUSIVE,
            f"only the {who} has traffic in {label}={segment}: no data is not a pass",
            cause=Cause.NO_DATA,
        )
    return judge(per_segment, GuardrailData(candidate=c, incumbent=i))


def _rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if 100 * x >= 1 else f"{100 * x:.2g}%"


def _detail(guardrail: Guardrail, j: Judgement) -> str:
    """The failing numbers in a few words: '3.1% vs 1.0%'."""
    ev = j.evidence
    if guardrail.sequential is not None:
        return f"{_rate(ev.candidate_value)} vs {_rate(ev.incumbent_value)}"
    if guardrail.drift is not None:
        return j.message.split(": ", 1)[-1]  # "PSI 0.83 > 0.2"
    value = "-" if ev.candidate_value is None else _fmt(ev.candidate_value)
    if guardrail.relative is not None and ev.incumbent_value is not None:
        return f"{value} vs {_fmt(ev.incumbent_value)} ({ev.bound})"
    return f"{value} breaks {ev.bound}"


def _evidence(s: _Judged) -> SegmentEvidence:
    ev = s.judgement.evidence
    return SegmentEvidence(
        segment=s.segment,
        verdict=s.judgement.verdict,
        candidate_value=ev.candidate_value,
        incumbent_value=ev.incumbent_value,
        candidate_samples=ev.candidate_samples,
        incumbent_samples=ev.incumbent_samples,
        bound=ev.bound,
        message=s.judgement.message[:256],
    )


def _aggregate(
    guardrail: Guardrail, cand: Mapping[str, Mapping[str, float]], inc: Mapping[str, Mapping[str, float]]
) -> Evidence:
    """The whole guardrail's counts, summed over every segment: what status keeps between analyses."""

    def total(vectors: Mapping[str, Mapping[str, float]], name: str) -> float | None:
        return sum(vectors[name].values()) if name in vectors else None

    if guardrail.sequential is not None:
        ct, it = total(cand, "total"), total(inc, "total")
        ce, ie = total(cand, "errors"), total(inc, "errors")
        return Evidence(
            candidate_value=ce / ct if ce is not None and ct else None,
            incumbent_value=ie / it if ie is not None and it else None,
            candidate_samples=ct,
            incumbent_samples=it,
        )
    sized = "distribution" if guardrail.drift is not None else "samples"
    return Evidence(candidate_samples=total(cand, sized), incumbent_samples=total(inc, sized))


def _verdict(
    guardrail: Guardrail,
    label: str,
    judged: list[_Judged],
    named: list[str],
    members: Mapping[str, Sequence[str]],
    policy: str,
    cand: Mapping[str, Mapping[str, float]],
    inc: Mapping[str, Mapping[str, float]],
) -> Judgement:
    by_size = sorted(judged, key=lambda s: -(s.share or 0.0))
    failed = [s for s in by_size if s.judgement.verdict is Verdict.FAIL]
    passed = [s for s in by_size if s.judgement.verdict is Verdict.PASS]
    waiting = [s for s in by_size if s.judgement.verdict is Verdict.INCONCLUSIVE]
    # A provider problem (counts that contradict each other) holds the guardrail whatever the
    # segment's size: the data is wrong, not scarce.
    holds = [s for s in waiting if not s.small or s.judgement.cause in PROVIDER_PROBLEMS]
    blocking = sorted(holds, key=lambda s: _SEVERITY.get(s.judgement.cause or Cause.NO_DATA, 0))
    small_waiting = [s for s in waiting if s not in holds]
    worst = [*failed, *blocking, *small_waiting][:MAX_SEGMENT_EVIDENCE]
    segments = SegmentsStatus(
        label=label,
        named=named,
        judged=len(judged),
        passed=len(passed),
        failed=len(failed),
        small=sum(s.small for s in judged),
        other=len(members.get(OTHER, ())),
        policy=policy,
        worst=[_evidence(s) for s in worst],
    )
    sample = next((s.judgement.evidence.bound for s in judged if s.judgement.evidence.bound), None)
    evidence = _aggregate(guardrail, cand, inc).model_copy(
        update={
            "bound": f"in every {label}: {sample}"[:256] if sample else None,
            "statistic": f"{len(failed)} failed, {len(passed)} passed, {len(waiting)} inconclusive of "
            f"{len(judged)} segments by {label}",
        }
    )
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more segments)" if len(failed) > 1 else ""
        message = f"{guardrail.name} failed in {label}={first.segment}: {_detail(guardrail, first.judgement)}{more}"
        return Judgement(Verdict.FAIL, message, evidence, segments=segments)
    if blocking:
        first = blocking[0]
        more = f"; {len(blocking) - 1} more segments inconclusive" if len(blocking) > 1 else ""
        needed = [n for s in blocking if (n := _candidate_needed(s, cand)) is not None]
        if needed and first.judgement.cause is Cause.INSUFFICIENT:
            evidence = evidence.model_copy(update={"samples_needed": math.ceil(max(needed))})
        message = f"{label}={first.segment}: {first.judgement.message}{more}"
        return Judgement(Verdict.INCONCLUSIVE, message, evidence, first.judgement.cause, segments=segments)
    if not passed:
        why = (
            f"every segment by {label} is under minSegmentShare {guardrail.segment_share:g}"
            if judged
            else f"no segments by {label}"
        )
        return Judgement(Verdict.INCONCLUSIVE, why, evidence, Cause.INSUFFICIENT if judged else Cause.NO_DATA, segments)
    small = f"; {len(small_waiting)} small segments inconclusive, reported only" if small_waiting else ""
    message = f"all {len(passed)} segments by {label} pass{small}"
    return Judgement(Verdict.PASS, message, evidence, segments=segments)


def _candidate_needed(s: _Judged, cand: Mapping[str, Mapping[str, float]]) -> float | None:
    """A segment's missing samples as the guardrail's candidate requests, at its share of them."""
    ev = s.judgement.evidence
    if ev.samples_needed is None:
        return None
    sized = next((name for name in ("total", "distribution", "samples") if name in cand), "samples")
    everything = sum(cand.get(sized, {}).values())
    mine = ev.candidate_samples
    return ev.samples_needed * everything / mine if mine and everything else None
