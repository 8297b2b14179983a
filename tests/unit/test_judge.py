"""The judge: verdicts with evidence, and no data is never a pass."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.models import Guardrail, Verdict
from controller.core import statistics
from controller.core.judge import Cause, GuardrailData, VariantData, judge
from controller.core.observation import Observation, ObservationStatus


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


# -- edge cases, rule by rule ---------------------------------------------------------------------


def test_absolute_edge_cases() -> None:
    zero = judge(ABS, GuardrailData(VariantData(value=ok(0.0), samples=ok(0))))
    assert zero.verdict is Verdict.INCONCLUSIVE and zero.cause is Cause.INSUFFICIENT
    assert zero.evidence.samples_needed == 100
    all_errors = judge(ABS, GuardrailData(VariantData(value=ok(1.0), samples=ok(500))))
    assert all_errors.verdict is Verdict.FAIL
    nan_samples = judge(ABS, GuardrailData(VariantData(value=ok(0.0), samples=ok(math.nan))))
    assert nan_samples.verdict is Verdict.INCONCLUSIVE and nan_samples.cause is Cause.NO_DATA


def rel(c: Observation | None, i: Observation | None, cn: float = 500, inn: float = 5000) -> GuardrailData:
    return GuardrailData(VariantData(value=c, samples=ok(cn)), VariantData(value=i, samples=ok(inn)))


def test_relative_edge_cases() -> None:
    missing = judge(REL, rel(ok(0.1), None))
    assert missing.verdict is Verdict.INCONCLUSIVE and missing.cause is Cause.NO_DATA
    candidate_missing = judge(REL, rel(Observation.no_data("no series"), ok(0.1)))
    assert candidate_missing.verdict is Verdict.INCONCLUSIVE and candidate_missing.cause is Cause.NO_DATA
    assert judge(REL, rel(ok(math.nan), ok(0.1))).cause is Cause.NO_DATA
    # An incumbent at 0: any candidate value above it is an infinite ratio; both at 0 is a ratio of 1.
    assert judge(REL, rel(ok(0.01), ok(0.0))).verdict is Verdict.FAIL
    assert judge(REL, rel(ok(0.0), ok(0.0))).verdict is Verdict.PASS
    zero_traffic = judge(REL, rel(ok(0.0), ok(0.0), cn=0, inn=0))
    assert zero_traffic.verdict is Verdict.INCONCLUSIVE and zero_traffic.cause is Cause.INSUFFICIENT
    few_incumbent = judge(REL, rel(ok(0.1), ok(0.1), inn=10))
    assert few_incumbent.cause is Cause.INSUFFICIENT and few_incumbent.evidence.samples_needed == 90


def test_sequential_edge_cases() -> None:
    zero = judge(SEQ, counts(0, 0, 0, 0))
    assert zero.verdict is Verdict.INCONCLUSIVE and zero.cause is Cause.INSUFFICIENT
    assert zero.evidence.samples_needed == 100
    no_candidate = judge(SEQ, counts(0, 0, 50, 5000))
    assert no_candidate.verdict is Verdict.INCONCLUSIVE and no_candidate.cause is Cause.INSUFFICIENT
    all_errors = judge(SEQ, counts(1000, 1000, 10, 10000))
    assert all_errors.verdict is Verdict.FAIL and all_errors.evidence.candidate_value == 1.0
    # Both at 100% errors: the candidate is no worse; never a failure, never an exception.
    assert judge(SEQ, counts(5000, 5000, 5000, 5000)).verdict is not Verdict.FAIL
    # No errors anywhere: never a failure; the rule compares rates relative to each other, so with no
    # errors it waits and says so, unless minAbsoluteEffect is set (test_judge_sequential.py).
    none = judge(SEQ, counts(0, 50_000, 0, 500_000))
    assert none.verdict is Verdict.INCONCLUSIVE and none.cause is Cause.INSUFFICIENT
    missing = GuardrailData(VariantData(errors=ok(5), total=ok(500)))
    assert judge(SEQ, missing).cause is Cause.NO_DATA
    assert judge(SEQ, counts(math.nan, 500, 5, 5000)).cause is Cause.NO_DATA
    assert judge(SEQ, counts(5, 500, 5, math.inf)).cause is Cause.NO_DATA
    errored = GuardrailData(
        VariantData(errors=ok(5), total=Observation.error("timeout")), VariantData(errors=ok(5), total=ok(5000))
    )
    assert judge(SEQ, errored).cause is Cause.ERROR


def test_sequential_below_min_samples_is_never_a_verdict_of_pass() -> None:
    j = judge(SEQ, counts(0, 60, 0, 100_000))
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.INSUFFICIENT
    assert j.evidence.samples_needed == 40


def test_drift_edge_cases() -> None:
    same = vec({"0.5": 500, "+Inf": 1000})
    empty = vec({"0.5": 0, "+Inf": 0})
    zero = judge(DRIFT, GuardrailData(VariantData(distribution=empty), VariantData(distribution=same)))
    assert zero.verdict is Verdict.INCONCLUSIVE and zero.cause is Cause.INSUFFICIENT
    missing = judge(DRIFT, GuardrailData(VariantData(distribution=same)))
    assert missing.verdict is Verdict.INCONCLUSIVE and missing.cause is Cause.NO_DATA
    nan = judge(
        DRIFT,
        GuardrailData(VariantData(distribution=vec({"0.5": math.nan, "+Inf": 1})), VariantData(distribution=same)),
    )
    assert nan.cause is Cause.NO_DATA
    novector = judge(DRIFT, GuardrailData(VariantData(distribution=vec({})), VariantData(distribution=same)))
    assert novector.cause is Cause.NO_DATA
    # Every prediction in one bucket while the incumbent spreads them: a drift, and significant.
    lumped = vec({"0.5": 1000, "+Inf": 1000})
    assert judge(DRIFT, GuardrailData(VariantData(distribution=lumped), VariantData(distribution=same))).verdict is (
        Verdict.FAIL
    )
    few = vec({"0.5": 10, "+Inf": 20})
    small = judge(DRIFT, GuardrailData(VariantData(distribution=few), VariantData(distribution=same)))
    assert small.verdict is Verdict.INCONCLUSIVE and small.cause is Cause.INSUFFICIENT


# -- the sequential rule's false-rollback guarantee, checked at every interval ----------------------


def _errors(rng: random.Random, n: int, p: float) -> int:
    """Errors among n requests each failing with probability p: Bernoulli trials by geometric jumps."""
    count, position, log_q = 0, 0, math.log1p(-p)
    while True:
        position += int(math.log(1.0 - rng.random()) / log_q) + 1
        if position > n:
            return count
        count += 1


def test_sequential_false_rollback_rate_under_monitoring_stays_under_alpha() -> None:
    """Null runs (both variants at 1%), judged at every one of 60 intervals on cumulative counts:
    the share of runs ever failed must stay under the rule's significance (Ville's inequality)."""
    rng = random.Random(20261127)
    alpha, runs, intervals = 0.05, 300, 60
    rule = guardrail(metric={"builtin": "ErrorRate"}, sequential={"significance": alpha, "minEffect": 0.5})
    failed = 0
    for _ in range(runs):
        ce = ct = ie = it = 0
        for _ in range(intervals):
            ce, ct = ce + _errors(rng, 60, 0.01), ct + 60
            ie, it = ie + _errors(rng, 940, 0.01), it + 940
            if judge(rule, counts(ce, ct, ie, it)).verdict is Verdict.FAIL:
                failed += 1
                break
    assert failed / runs <= alpha, f"{failed} of {runs} null runs rolled back"


def test_geometric_error_draws_match_the_rate() -> None:
    rng = random.Random(1)
    assert sum(_errors(rng, 1000, 0.01) for _ in range(500)) == pytest.approx(5000, rel=0.05)


# -- ShadowDisagreement's absolute rule passes on evidence, not on the point estimate (finding 6) -

AGREEMENT = guardrail(metric={"builtin": "ShadowDisagreement"}, absolute={"max": 0.02})


def shadow(rate: float, comparisons: float) -> GuardrailData:
    return GuardrailData(VariantData(value=ok(rate), samples=ok(comparisons)))


def test_a_disagreement_under_its_bound_passes_only_once_shown_below_it() -> None:
    # One disagreement in 100: a true 5% does that about one time in 25. Not a pass yet.
    early = judge(AGREEMENT, shadow(0.01, 100))
    assert early.verdict is Verdict.INCONCLUSIVE and early.cause is Cause.INSUFFICIENT
    assert "not yet shown below 0.02" in early.message
    assert early.evidence.samples_needed is not None and early.evidence.samples_needed > 0
    later = judge(AGREEMENT, shadow(0.005, 1000))
    assert later.verdict is Verdict.PASS and "rate below 0.02" in (later.evidence.statistic or "")
    assert judge(AGREEMENT, shadow(0.03, 1000)).verdict is Verdict.FAIL
    # Other absolute rules keep their point estimate.
    errors = guardrail(metric={"builtin": "ErrorRate"}, absolute={"max": 0.02})
    assert judge(errors, shadow(0.01, 100)).verdict is Verdict.PASS


def test_a_shadow_pass_by_samples_needed_comes_with_about_that_many_more() -> None:
    first = judge(AGREEMENT, shadow(0.005, 200))
    needed = first.evidence.samples_needed
    assert first.verdict is Verdict.INCONCLUSIVE and needed is not None
    assert judge(AGREEMENT, shadow(0.005, 200 + needed)).verdict is Verdict.PASS


@given(st.integers(100, 400))
def test_a_five_percent_disagreement_rarely_passes_a_two_percent_bound(comparisons: int) -> None:
    """The pass is anytime-valid at PASS_SIGNIFICANCE: with a true 5%, the counts that pass are so
    unlikely that their probability, at any sample size, stays far under 5%."""
    rng = random.Random(comparisons)
    passes = 0
    for _ in range(200):
        events = sum(rng.random() < 0.05 for _ in range(comparisons))
        passes += judge(AGREEMENT, shadow(events / comparisons, comparisons)).verdict is Verdict.PASS
    assert passes <= 200 * 0.05


def test_a_bound_of_zero_keeps_the_point_estimate() -> None:
    every = guardrail(metric={"builtin": "ShadowDisagreement"}, absolute={"max": 0})
    assert judge(every, shadow(0.0, 100)).verdict is Verdict.PASS
    assert judge(every, shadow(0.01, 100)).verdict is Verdict.FAIL
