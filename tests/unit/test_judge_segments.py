"""Per-segment guardrails (core.segments): the Bonferroni correction on crafted e-values and counts,
the buckets (named, other, late, one-variant, small), the message and the status they leave."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api.models import Guardrail, ModelRolloutSpec, SegmentsStatus, Verdict
from controller.core import segments, statistics
from controller.core.judge import Cause, GuardrailData, Judgement, VariantData, judge
from controller.core.observation import Observation, ObservationStatus
from tests.support.simulator import Simulator

ALPHA = 0.01


def vec(values: dict[str, float]) -> Observation:
    return Observation(ObservationStatus.OK, vector=values)


def ok(value: float) -> Observation:
    return Observation(ObservationStatus.OK, value=value)


def guardrail(rule: dict[str, Any] | None = None, **extra: Any) -> Guardrail:
    body: dict[str, Any] = {
        "name": "error-rate",
        "metric": {"builtin": "ErrorRate"},
        "segmentBy": "region",
        **(rule or {"sequential": {"significance": ALPHA}}),
        **extra,
    }
    return Guardrail.model_validate(body)


def counts(cand: dict[str, tuple[float, float]], inc: dict[str, tuple[float, float]]) -> GuardrailData:
    """(errors, total) per segment and variant."""
    return GuardrailData(
        VariantData(errors=vec({s: e for s, (e, _) in cand.items()}), total=vec({s: t for s, (_, t) in cand.items()})),
        VariantData(errors=vec({s: e for s, (e, _) in inc.items()}), total=vec({s: t for s, (_, t) in inc.items()})),
    )


def log_e_worse(ce: float, ct: float, ie: float, it: float) -> float:
    return statistics.rate_ratio_test(
        candidate_events=ce,
        candidate_total=ct,
        incumbent_events=ie,
        incumbent_total=it,
        alpha=ALPHA,
        beta=0.05,
        min_ratio=1.5,
    ).worse


# -- the correction ------------------------------------------------------------------------------


@given(
    ce=st.integers(0, 120),
    ct=st.integers(1000, 4000),
    ie=st.integers(0, 200),
    it=st.integers(4000, 20000),
    slots=st.integers(1, 20),
)
@settings(max_examples=200, deadline=None)
def test_one_segment_fails_exactly_when_its_e_value_reaches_k_over_alpha(
    ce: int, ct: int, ie: int, it: int, slots: int
) -> None:
    g = guardrail(maxSegments=slots)
    j = judge(g, counts({"eu": (ce, ct)}, {"eu": (ie, it)}))
    worse = log_e_worse(ce, ct, ie, it)
    k = slots + 1
    assert segments.buckets_of(g) == k
    # Bonferroni on e-processes: reject at e >= K / alpha, i.e. log e >= log(K / alpha).
    assert (j.verdict is Verdict.FAIL) == (worse >= math.log(k / ALPHA) and ct >= g.min_samples)


def test_evidence_between_one_and_k_over_alpha_fails_the_aggregate_but_not_a_segment() -> None:
    g = guardrail(maxSegments=9)  # K = 10: threshold log(1000) = 6.9 against log(100) = 4.6
    cand, inc = (40, 2000), (100, 10000)  # 2.0% against 1.0%
    worse = log_e_worse(*cand, *inc)
    assert math.log(1 / ALPHA) <= worse < math.log(10 / ALPHA)
    aggregate = Guardrail.model_validate({"name": "e", "metric": {"builtin": "ErrorRate"}, "sequential": {}})
    flat = GuardrailData(VariantData(errors=ok(40), total=ok(2000)), VariantData(errors=ok(100), total=ok(10000)))
    assert judge(aggregate, flat).verdict is Verdict.FAIL
    assert judge(g, counts({"eu": cand}, {"eu": inc})).verdict is not Verdict.FAIL


def test_many_segments_each_tested_at_alpha_over_k_and_one_failure_fails_the_guardrail() -> None:
    g = guardrail(maxSegments=9)
    good = {s: (100.0, 10000.0) for s in ("us", "de", "fr", "jp", "br")}
    cand = {**{s: (20.0, 2000.0) for s in good}, "eu": (62.0, 2000.0)}
    inc = {**good, "eu": (200.0, 20000.0)}
    j = judge(g, counts(cand, inc))
    assert j.verdict is Verdict.FAIL
    assert j.message == "error-rate failed in region=eu: 3.1% vs 1.0%"
    assert j.segments is not None
    assert (j.segments.judged, j.segments.failed) == (6, 1)
    assert j.segments.worst[0].segment == "eu" and j.segments.worst[0].verdict is Verdict.FAIL
    assert j.segments.worst[0].candidate_samples == 2000 and j.segments.worst[0].incumbent_samples == 20000
    assert "significance 0.001" in (j.segments.worst[0].bound or "")
    # The guardrail's own evidence is the aggregate's: what status compares between analyses.
    assert j.evidence.candidate_samples == 12000 and j.evidence.incumbent_samples == 70000
    assert j.evidence.candidate_value == pytest.approx(162 / 12000)


def test_every_segment_passing_passes_and_the_pass_side_needs_no_correction() -> None:
    g = guardrail()
    cand = {s: (80.0, 20000.0) for s in ("us", "eu", "ap")}
    inc = {s: (400.0, 40000.0) for s in ("us", "eu", "ap")}
    j = judge(g, counts(cand, inc))
    assert j.verdict is Verdict.PASS, j.message
    assert j.message == "all 3 segments by region pass"


# -- buckets: named, other, late -----------------------------------------------------------------


def test_segments_beyond_the_cap_are_judged_together_as_other_top_by_traffic_first() -> None:
    g = guardrail(maxSegments=2)
    totals = {"us": 5000.0, "eu": 3000.0, "ap": 400.0, "sa": 300.0, "af": 200.0}
    cand = {s: (t * 0.01, t) for s, t in totals.items()}
    cand["sa"] = (60.0, 300.0)  # sa is bad, and has no slot of its own: "other" fails
    inc = {s: (t * 0.02, 2 * t) for s, t in totals.items()}
    j = judge(g, counts(cand, inc))
    assert j.segments is not None
    assert j.segments.named == ["us", "eu"] and j.segments.other == 3
    assert j.verdict is Verdict.FAIL and "region=(other)" in j.message
    other = j.segments.worst[0]
    assert other.segment == segments.OTHER and other.candidate_samples == 900 and other.incumbent_samples == 1800
    assert "significance 0.00333" in (other.bound or "")  # alpha / (2 + 1)


def test_a_late_segment_gets_a_free_slot_and_named_segments_never_move() -> None:
    g = guardrail(maxSegments=3)
    first = judge(g, counts({"us": (10, 1000), "eu": (5, 500)}, {"us": (40, 4000), "eu": (20, 2000)}))
    assert first.segments is not None and first.segments.named == ["us", "eu"] and first.segments.other == 0
    # ap appears later and is now the largest: it takes the free slot, after the others.
    later = counts(
        {"us": (20, 2000), "eu": (10, 1000), "ap": (200, 9000)}, {"us": (80, 8000), "eu": (40, 4000), "ap": (90, 9000)}
    )
    j = judge(g, later, first.segments)
    assert j.segments is not None and j.segments.named == ["us", "eu", "ap"]
    assert j.verdict is Verdict.FAIL and "region=ap" in j.message
    # With no slot left, a late segment goes to other even when larger than a named one.
    full = SegmentsStatus(label="region", named=["us", "eu", "jp"])
    j = judge(g, later, full)
    assert j.segments is not None and j.segments.named == ["us", "eu", "jp"]
    assert j.segments.other == 1 and "region=(other)" in j.message


def test_once_other_has_a_member_a_free_slot_stays_free_so_no_value_ever_leaves_other() -> None:
    """A slot left free after other was used (here: maxSegments raised mid-rollout) is not given
    to a value: it could be one of other's, and other's counts would go back."""
    later = counts(
        {"us": (20, 2000), "eu": (10, 1000), "ap": (200, 9000)}, {"us": (80, 8000), "eu": (40, 4000), "ap": (90, 9000)}
    )
    used = SegmentsStatus(label="region", named=["us"], other=2)
    j = judge(guardrail(maxSegments=3), later, used)
    assert j.segments is not None and j.segments.named == ["us"] and j.segments.other == 2
    assert "region=(other)" in j.message


def test_a_buckets_counts_going_backwards_hold_the_guardrail_though_the_aggregate_grew() -> None:
    g = guardrail(maxSegments=1)
    data = counts(
        {"us": (10, 20000), "eu": (2, 1000), "ap": (2, 1000)}, {"us": (40, 40000), "eu": (4, 2000), "ap": (4, 2000)}
    )
    first = judge(g, data)
    assert first.segments is not None and first.segments.named == ["us"]
    recorded = {w.segment: w for w in first.segments.worst}
    assert segments.OTHER in recorded and recorded[segments.OTHER].candidate_samples == 2000
    # other's candidate requests drop from 2000 to 1500 while us grows: the aggregate rises.
    now = counts(
        {"us": (20, 40000), "eu": (2, 500), "ap": (2, 1000)}, {"us": (80, 80000), "eu": (4, 2000), "ap": (4, 2000)}
    )
    j = judge(g, now, first.segments)
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.COUNTS_WENT_BACKWARDS, j.message
    assert "region=(other)" in j.message and "candidate requests 1500 < 2000" in j.message
    assert j.segments is not None and j.segments.worst[0].candidate_samples == 2000  # the recorded counts stay


def test_named_segments_of_another_label_are_not_carried_over() -> None:
    g = guardrail(maxSegments=1)
    old = SegmentsStatus(label="device", named=["eu"])
    j = judge(g, counts({"us": (10, 5000), "eu": (5, 500)}, {"us": (40, 20000), "eu": (20, 2000)}), old)
    assert j.segments is not None and j.segments.named == ["us"]


# -- no data is not a pass; small segments -------------------------------------------------------


def test_a_segment_only_one_variant_has_is_no_data_and_holds_the_guardrail() -> None:
    g = guardrail()
    cand = {"us": (10.0, 20000.0), "eu": (10.0, 5000.0)}
    inc = {"us": (40.0, 40000.0)}
    j = judge(g, counts(cand, inc))
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.NO_DATA
    assert j.message.startswith("region=eu: only the candidate has traffic")


def test_a_small_segment_is_reported_but_never_holds_the_verdict_and_its_failure_counts() -> None:
    g = guardrail(minSegmentShare=0.05)
    cand = {"us": (80.0, 20000.0), "tiny": (0.0, 50.0)}
    inc = {"us": (400.0, 40000.0), "tiny": (1.0, 100.0)}
    j = judge(g, counts(cand, inc))
    assert j.verdict is Verdict.PASS, j.message
    assert j.segments is not None and j.segments.small == 1
    assert "1 small segments inconclusive" in j.message
    assert j.segments.worst[0].segment == "tiny" and j.segments.worst[0].verdict is Verdict.INCONCLUSIVE
    # A small segment that is shown worse still fails the guardrail: evidence is evidence.
    cand["tiny"] = (60.0, 600.0)
    inc["tiny"] = (4.0, 1200.0)
    j = judge(g, counts(cand, inc))
    assert j.verdict is Verdict.FAIL and "region=tiny" in j.message


def test_every_segment_small_is_inconclusive_not_a_pass() -> None:
    g = guardrail(maxSegments=20, minSegmentShare=0.5)
    cand = {s: (1.0, 1000.0) for s in "abc"}
    inc = {s: (2.0, 2000.0) for s in "abc"}
    j = judge(g, counts(cand, inc))
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.INSUFFICIENT


def test_a_failed_or_empty_query_is_the_whole_guardrails_problem() -> None:
    g = guardrail()
    data = counts({"us": (1, 1000)}, {"us": (2, 2000)})
    broken = GuardrailData(VariantData(errors=Observation.error("timeout"), total=data.candidate.total), data.incumbent)
    assert judge(g, broken).cause is Cause.ERROR
    empty = GuardrailData(VariantData(errors=vec({}), total=vec({})), data.incumbent)
    assert judge(g, empty).verdict is Verdict.INCONCLUSIVE
    nan = GuardrailData(VariantData(errors=vec({"us": math.nan}), total=vec({"us": 1.0})), data.incumbent)
    assert judge(g, nan).cause is Cause.NO_DATA


def test_a_segment_without_errors_has_zero_errors_when_its_totals_came() -> None:
    g = guardrail()
    data = GuardrailData(
        VariantData(errors=vec({"us": 3.0}), total=vec({"us": 20000.0, "eu": 20000.0})),
        VariantData(errors=vec({"us": 400.0, "eu": 400.0}), total=vec({"us": 40000.0, "eu": 40000.0})),
    )
    j = judge(g, data)
    assert j.verdict is Verdict.PASS and j.segments is not None and j.segments.passed == 2


# -- the other rules -----------------------------------------------------------------------------


def values(cand: dict[str, float], inc: dict[str, float], samples: float = 1000.0) -> GuardrailData:
    return GuardrailData(
        VariantData(value=vec(cand), samples=vec(dict.fromkeys(cand, samples))),
        VariantData(value=vec(inc), samples=vec(dict.fromkeys(inc, samples))),
    )


def test_relative_rule_per_segment_names_the_segment() -> None:
    g = guardrail({"relative": {"maxRatio": 1.2}}, metric={"builtin": "LatencyP99"})
    j = judge(g, values({"us": 0.10, "eu": 0.30}, {"us": 0.12, "eu": 0.10}))
    assert j.verdict is Verdict.FAIL
    assert j.message == "error-rate failed in region=eu: 0.3 vs 0.1 (ratio <= 1.2)"
    assert judge(g, values({"us": 0.10, "eu": 0.11}, {"us": 0.12, "eu": 0.10})).verdict is Verdict.PASS


def test_absolute_rule_per_segment_and_its_other_bucket_weighs_values_by_samples() -> None:
    g = guardrail({"absolute": {"max": 0.2}}, metric={"builtin": "LatencyP99"}, maxSegments=1)
    data = GuardrailData(
        VariantData(value=vec({"us": 0.1, "eu": 0.1, "ap": 0.4}), samples=vec({"us": 5000, "eu": 3000, "ap": 1000})),
    )
    j = judge(g, data)
    # other = eu and ap: (0.1 * 3000 + 0.4 * 1000) / 4000 = 0.175
    assert j.verdict is Verdict.PASS, j.message
    data = GuardrailData(
        VariantData(value=vec({"us": 0.1, "eu": 0.1, "ap": 0.4}), samples=vec({"us": 5000, "eu": 1000, "ap": 3000})),
    )
    j = judge(g, data)
    assert j.verdict is Verdict.FAIL and j.message == "error-rate failed in region=(other): 0.325 breaks <= 0.2"


def test_min_samples_applies_per_segment() -> None:
    g = guardrail({"absolute": {"max": 0.2}}, metric={"builtin": "LatencyP99"}, minSamples=500)
    data = GuardrailData(VariantData(value=vec({"us": 0.1, "eu": 0.9}), samples=vec({"us": 5000, "eu": 400})))
    j = judge(g, data)
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.INSUFFICIENT and "region=eu" in j.message


# -- in status, through the engine ---------------------------------------------------------------


def segmented_spec() -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "incumbent": {"name": "v1"},
            "candidate": {"name": "v2"},
            "traffic": {"gatewayAPI": {"httpRoute": "r"}},
            "canary": {"steps": [{"weight": 10, "hold": "1m"}, {"weight": 50, "hold": "1m"}]},
            "analysis": {"interval": "30s", "progressDeadline": "10m"},
            "guardrails": [
                {
                    "name": "error-rate",
                    "metric": {"builtin": "ErrorRate"},
                    "segmentBy": "region",
                    "sequential": {"significance": ALPHA},
                }
            ],
        }
    )


def test_status_keeps_the_named_segments_through_a_provider_error_and_the_rollback_names_the_segment() -> None:
    spec = segmented_spec()
    g = spec.guardrails[0]
    answers = [
        counts({"us": (10, 2000), "eu": (2, 200)}, {"us": (200, 18000), "eu": (20, 1800)}),
        GuardrailData(VariantData(errors=Observation.error("timeout"), total=Observation.error("timeout"))),
        counts({"us": (20, 4000), "eu": (60, 2000)}, {"us": (400, 36000), "eu": (40, 3600)}),
    ]

    def judged(name: str, sim: Simulator) -> Judgement:
        previous = next((gs.segments for gs in sim.status.guardrails if gs.name == name), None)
        return judge(g, answers[min(sim.analyses - 1, len(answers) - 1)], previous)

    sim = Simulator(spec, judge=judged)
    sim.run(until=lambda s: s.analyses == 2)
    seg = sim.status.guardrails[0].segments
    assert seg is not None and seg.named == ["us", "eu"] and seg.worst == []
    sim.run()
    failed = sim.status.failed_candidates[-1]
    assert failed.guardrail == "error-rate" and "region=eu: 3.0% vs 1.1%" in failed.message
    assert failed.observed == pytest.approx(0.03) and "significance 0.00111" in (failed.threshold or "")
    seg = sim.status.guardrails[0].segments
    assert seg is not None and seg.worst[0].segment == "eu"


def test_a_segmented_guardrail_has_no_error_budget_and_a_step_waits_for_every_segments_pass() -> None:
    """Aggregate counts can hide a segment's harm: no budget spends on them, and an inconclusive
    segment holds the step to its deadline however affordable the aggregate looks."""
    spec = segmented_spec()
    g = spec.guardrails[0]
    # us: clearly fine; eu: a handful of requests, not conclusive either way.
    data = counts({"us": (40, 20000), "eu": (6, 1500)}, {"us": (800, 80000), "eu": (12, 6000)})

    def judged(name: str, sim: Simulator) -> Judgement:
        previous = next((gs.segments for gs in sim.status.guardrails if gs.name == name), None)
        return judge(g, data, previous)

    assert judged("error-rate", Simulator(spec)).cause is Cause.INSUFFICIENT
    sim = Simulator(spec, judge=judged)
    sim.run()
    assert sim.status.error_budget is None
    assert sim.candidate_weights("v2") == [10, 0]
    assert sim.status.reason == "ProgressDeadlineExceeded"


def test_a_segment_without_requests_in_either_variant_takes_no_slot() -> None:
    g = guardrail(maxSegments=1)
    j = judge(g, counts({"(none)": (0, 0), "us": (10, 5000)}, {"(none)": (0, 0), "us": (40, 20000)}))
    assert j.segments is not None and j.segments.named == ["us"] and j.segments.other == 0


def test_errors_in_a_segment_without_requests_are_inconsistent_not_dropped() -> None:
    g = guardrail()
    data = GuardrailData(
        VariantData(errors=vec({"us": 10.0, "eu": 5.0}), total=vec({"us": 20000.0, "eu": 0.0})),
        VariantData(errors=vec({"us": 400.0, "eu": 5.0}), total=vec({"us": 40000.0, "eu": 0.0})),
    )
    j = judge(g, data)
    # A provider problem holds the guardrail even in a segment too small to matter otherwise.
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.INCONSISTENT_COUNTS, j.message
    assert j.segments is not None and "eu" in j.segments.named
    assert j.segments.worst[0].segment == "eu" and "inconsistent counts" in j.segments.worst[0].message


def test_errors_query_without_by_segment_is_inconsistent_never_a_pass() -> None:
    """A custom errorsQuery that forgets `by (region)`: its errors land in (none), which has no
    total. The real segments must not read that as zero errors, and (none) holds at any size."""
    g = guardrail({"sequential": {"significance": ALPHA, "minAbsoluteEffect": 0.01}})
    big = 200000.0
    data = GuardrailData(
        VariantData(errors=vec({"(none)": 0.3 * 2 * big}), total=vec({"us": big, "eu": big})),
        VariantData(errors=vec({"(none)": 0.001 * 10 * big}), total=vec({"us": 5 * big, "eu": 5 * big})),
    )
    j = judge(g, data)
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.INCONSISTENT_COUNTS, j.message
    assert j.segments is not None and j.segments.passed == 0
    assert j.segments.worst[0].segment == "(none)" and "inconsistent counts" in j.segments.worst[0].message


def test_one_values_errors_over_its_total_inside_other_are_inconsistent() -> None:
    g = guardrail(maxSegments=1)
    # other sums eu and ap to 160 errors of 20100 requests, which looks fine; eu alone has 160 of 100.
    cand = {"us": (10.0, 50000.0), "eu": (160.0, 100.0), "ap": (0.0, 20000.0)}
    inc = {"us": (40.0, 100000.0), "eu": (0.0, 100.0), "ap": (0.0, 40000.0)}
    j = judge(g, counts(cand, inc))
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.INCONSISTENT_COUNTS, j.message
    assert "region=(other)" in j.message and "eu" in j.message


# -- drift per segment ---------------------------------------------------------------------------


def histograms(cand: dict[str, dict[str, float]], inc: dict[str, dict[str, float]]) -> GuardrailData:
    """Cumulative `le` buckets per segment, as the provider's grouped() returns them."""
    return GuardrailData(
        VariantData(distribution=Observation(ObservationStatus.OK, groups=cand)),
        VariantData(distribution=Observation(ObservationStatus.OK, groups=inc)),
    )


def cumulative(counts: list[float]) -> dict[str, float]:
    bounds = ["0.2", "0.4", "0.6", "0.8", "+Inf"]
    return {le: sum(counts[: i + 1]) for i, le in enumerate(bounds)}


def test_drift_per_segment_names_the_segment_whose_predictions_moved_at_alpha_over_k() -> None:
    g = guardrail({"drift": {"maxPSI": 0.2, "significance": 0.01}}, metric={"builtin": "PredictionDistribution"})
    same = cumulative([200, 200, 200, 200, 200])
    moved = cumulative([50, 50, 100, 300, 500])
    j = judge(g, histograms({"us": same, "eu": moved}, {"us": same, "eu": same}))
    assert j.verdict is Verdict.FAIL and j.message.startswith("error-rate failed in region=eu: PSI "), j.message
    assert j.segments is not None and "significance 0.00111" in (j.segments.worst[0].bound or "")
    # The aggregate's predictions: the +Inf bucket of each segment, both variants.
    assert j.evidence.candidate_samples == 2000 and j.evidence.incumbent_samples == 2000
    assert judge(g, histograms({"us": same, "eu": same}, {"us": same, "eu": same})).verdict is Verdict.PASS


def test_drift_per_segment_a_segment_only_one_variant_predicted_is_no_data() -> None:
    g = guardrail({"drift": {"maxPSI": 0.2}}, metric={"builtin": "PredictionDistribution"})
    same = cumulative([200, 200, 200, 200, 200])
    j = judge(g, histograms({"us": same, "eu": same}, {"us": same}))
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.NO_DATA and "region=eu" in j.message
    empty = GuardrailData(
        VariantData(distribution=Observation(ObservationStatus.OK, groups={})), histograms({}, {"us": same}).incumbent
    )
    assert judge(g, empty).cause is Cause.NO_DATA
