"""The evidence's numbers for charts and metrics (limit, sequential evidence and thresholds) agree
with the verdict the judge gives from the same data."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from controller.api.models import Guardrail, Verdict
from controller.core.judge import GuardrailData, VariantData, judge
from controller.core.observation import Observation, ObservationStatus


def ok(value: float) -> Observation:
    return Observation(ObservationStatus.OK, value=value)


def guardrail(**body: Any) -> Guardrail:
    return Guardrail.model_validate({"name": "g", "minSamples": 10, **body})


def test_an_absolute_rules_limit_is_its_bound() -> None:
    j = judge(
        guardrail(metric={"builtin": "ErrorRate"}, absolute={"max": 0.01}),
        GuardrailData(VariantData(value=ok(0.5), samples=ok(100))),
    )
    assert (
        j.evidence.limit == 0.01
        and j.evidence.candidate_value is not None
        and j.evidence.candidate_value > j.evidence.limit
    )
    low = judge(
        guardrail(metric={"builtin": "ErrorRate"}, absolute={"min": 0.9}),
        GuardrailData(VariantData(value=ok(0.95), samples=ok(100))),
    )
    assert low.evidence.limit == 0.9


@given(inc=st.floats(0.01, 100), ratio=st.floats(1.01, 3), increase=st.floats(0.001, 50), cand=st.floats(0, 300))
def test_a_relative_rules_limit_is_the_tightest_upper_bound_and_decides_like_it(
    inc: float, ratio: float, increase: float, cand: float
) -> None:
    g = guardrail(metric={"builtin": "LatencyP99"}, relative={"maxRatio": ratio, "maxIncrease": increase})
    data = GuardrailData(VariantData(value=ok(cand), samples=ok(100)), VariantData(value=ok(inc), samples=ok(100)))
    j = judge(g, data)
    assert j.evidence.limit is not None
    assert abs(j.evidence.limit - min(inc * ratio, inc + increase)) <= 1e-9 * max(1.0, j.evidence.limit)
    margin = 1e-6 * max(1.0, j.evidence.limit)
    if cand > j.evidence.limit + margin:
        assert j.verdict is Verdict.FAIL
    if cand < j.evidence.limit - margin:
        assert j.verdict is Verdict.PASS


@given(ce=st.integers(0, 400), ie=st.integers(0, 400), ct=st.integers(100, 20000), it=st.integers(100, 20000))
def test_the_sequential_evidence_numbers_are_what_the_verdict_stood_on(ce: int, ie: int, ct: int, it: int) -> None:
    g = guardrail(
        metric={"builtin": "ErrorRate"}, sequential={"significance": 0.05, "minEffect": 0.5, "minAbsoluteEffect": 0.05}
    )
    data = GuardrailData(
        VariantData(errors=ok(min(ce, ct)), total=ok(ct)), VariantData(errors=ok(min(ie, it)), total=ok(it))
    )
    j = judge(g, data)
    e = j.evidence
    assert e.worse_threshold is not None and e.not_worse_threshold is not None
    if j.verdict is Verdict.FAIL:
        assert e.worse is not None and e.worse >= e.worse_threshold
    if e.worse is not None and e.worse >= e.worse_threshold:
        assert j.verdict is Verdict.FAIL
