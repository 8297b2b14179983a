"""The judge: verdicts with evidence, and no data is never a pass."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.models import Guardrail, Verdict
from controller.core import statistics
from controller.core.judge import Cause, GuardrailData, VariantData, judge
from controller.metrics.base import Observation, ObservationStatus


def ok(value: float) -> Observation:
    return Observation(ObservationStatus.OK, value=value)


def vec(values: dict[str, float]) -> Observation:
    return Observation(ObservationStatus.OK, vector=values)


def guardrail(**body: Any) -> Guardrail:
    return Guardrail.model_validate({"name": "g", "minSamples": 100, **body})


ABS = guardrail(metric={"builtin": "ErrorRate"}, absolute={"max": 0.01})
REL = guardrail(metric={"builtin": "LatencyP99"}, relative={"maxRatio": 1.2})
SEQ = guardrail(metric={"builtin": "ErrorRate"}, sequential={"significance": 0.05, "minEffect": 0.5})
DRIFT = guardrail(metric={"builtin": "PredictionDistribution"}, drift={"maxPSI": 0.2, "significance": 0.01})


def test_absolute_pass_and_fail_carry_evidence() -> None:
    passed = judge(ABS, GuardrailData(VariantData(value=ok(0.005), samples=ok(500))))
    failed = judge(ABS, GuardrailData(VariantData(value=ok(0.05), samples=ok(500))))
    assert passed.verdict is Verdict.PASS and failed.verdict is Verdict.FAIL
    assert failed.evidence.candidate_value == 0.05 and failed.evidence.bound == "<= 0.01"
    assert failed.evidence.candidate_samples == 500


@pytest.mark.parametrize(
    ("obs", "cause"),
    [
        (Observation.no_data("no series"), Cause.NO_DATA),
        (Observation.error("timeout"), Cause.ERROR),
        (Observation(ObservationStatus.OK, value=math.nan), Cause.NO_DATA),
        (Observation(ObservationStatus.OK, value=math.inf), Cause.NO_DATA),
        (None, Cause.NO_DATA),
    ],
)
def test_missing_or_bad_data_is_inconclusive(obs: Observation | None, cause: Cause) -> None:
    j = judge(ABS, GuardrailData(VariantData(value=obs, samples=ok(500))))
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is cause


def test_too_few_samples_is_inconclusive_and_says_how_many_are_missing() -> None:
    j = judge(ABS, GuardrailData(VariantData(value=ok(0.0), samples=ok(40))))
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.INSUFFICIENT
    assert j.evidence.samples_needed == 60


def test_relative_compares_with_the_incumbent() -> None:
    def data(c, i):
        return GuardrailData(VariantData(value=ok(c), samples=ok(500)), VariantData(value=ok(i), samples=ok(5000)))

    assert judge(REL, data(0.11, 0.10)).verdict is Verdict.PASS
    failed = judge(REL, data(0.15, 0.10))
    assert failed.verdict is Verdict.FAIL and failed.evidence.incumbent_value == 0.10


def counts(ce: float, ct: float, ie: float, it: float) -> GuardrailData:
    return GuardrailData(VariantData(errors=ok(ce), total=ok(ct)), VariantData(errors=ok(ie), total=ok(it)))


def test_sequential_fails_a_clearly_worse_candidate_and_passes_an_equal_one() -> None:
    assert judge(SEQ, counts(100, 1000, 100, 10000)).verdict is Verdict.FAIL
    assert judge(SEQ, counts(250, 5000, 2500, 50000)).verdict is Verdict.PASS
    early = judge(SEQ, counts(2, 120, 10, 1000))
    assert early.verdict is Verdict.INCONCLUSIVE and early.evidence.samples_needed


def test_drift_catches_a_shifted_prediction_distribution() -> None:
    same = vec({"0.25": 250, "0.5": 500, "0.75": 750, "+Inf": 1000})
    shifted = vec({"0.25": 50, "0.5": 150, "0.75": 400, "+Inf": 1000})
    assert (
        judge(DRIFT, GuardrailData(VariantData(distribution=same), VariantData(distribution=same))).verdict
        is Verdict.PASS
    )
    failed = judge(DRIFT, GuardrailData(VariantData(distribution=shifted), VariantData(distribution=same)))
    assert failed.verdict is Verdict.FAIL and "PSI" in (failed.evidence.statistic or "")


def test_chi_square_survival_matches_tables() -> None:
    assert statistics.chi_square_sf(3.841, 1) == pytest.approx(0.05, abs=1e-3)
    assert statistics.chi_square_sf(11.070, 5) == pytest.approx(0.05, abs=1e-3)
    assert statistics.chi_square_sf(0.0, 3) == 1.0


@given(st.integers(0, 500), st.integers(1, 5000), st.integers(0, 500), st.integers(1, 5000))
def test_judge_never_passes_without_enough_samples(ce: int, ct: int, ie: int, it: int) -> None:
    ce, ie = min(ce, ct), min(ie, it)
    j = judge(SEQ, counts(ce, ct, ie, it))
    if ct < 100:
        assert j.verdict is not Verdict.PASS
