"""The sequential rule: its statistics on crafted counts, and its error rates on seeded runs."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.models import Guardrail, Verdict
from controller.core import statistics
from controller.core.judge import PASS_SIGNIFICANCE, Cause, GuardrailData, VariantData, judge
from controller.core.observation import Observation, ObservationStatus


def ok(value: float) -> Observation:
    return Observation(ObservationStatus.OK, value=value)


def counts(ce: float, ct: float, ie: float, it: float) -> GuardrailData:
    return GuardrailData(VariantData(errors=ok(ce), total=ok(ct)), VariantData(errors=ok(ie), total=ok(it)))


def rule(
    alpha: float = 0.05, min_effect: float = 0.5, min_samples: int = 100, absolute: float | None = None
) -> Guardrail:
    sequential: dict[str, float] = {"significance": alpha, "minEffect": min_effect}
    if absolute is not None:
        sequential["minAbsoluteEffect"] = absolute
    return Guardrail.model_validate(
        {"name": "errors", "metric": {"builtin": "ErrorRate"}, "minSamples": min_samples, "sequential": sequential}
    )


def test(ce: float, ct: float, ie: float, it: float, alpha: float = 0.05) -> statistics.RateRatioTest:
    return statistics.rate_ratio_test(
        candidate_events=ce,
        candidate_total=ct,
        incumbent_events=ie,
        incumbent_total=it,
        alpha=alpha,
        beta=alpha,
        min_ratio=1.5,
    )


test.__test__ = False  # type: ignore[attr-defined]


def binomial_log_pmf(k: int, n: int, p: float) -> float:
    return math.log(math.comb(n, k)) + k * math.log(p) + (n - k) * math.log1p(-p)


def share(ratio: float, f: float) -> float:
    """The probability that an event is the candidate's, at rate ratio `ratio` and request share f."""
    return ratio * f / (1 + (ratio - 1) * f)


# -- the statistics on crafted counts ----------------------------------------------------------------


def test_the_e_values_are_likelihood_ratios_of_the_candidates_share_of_events() -> None:
    ce, ct, ie, it = 12, 1000, 95, 19000
    e, f = ce + ie, ct / (ct + it)
    t = test(ce, ct, ie, it)

    def llr(r: float, r0: float) -> float:
        return binomial_log_pmf(ce, e, share(r, f)) - binomial_log_pmf(ce, e, share(r0, f))

    assert t.not_worse == pytest.approx(llr(1.0, 1.5), rel=1e-9)
    mixture = math.log(sum(math.exp(llr(r, 1.0)) for r in (1.5, 2.0, 3.0)) / 3)
    assert t.worse == pytest.approx(mixture, rel=1e-9)
    assert t.fail_threshold == pytest.approx(math.log(20)) and t.pass_threshold == pytest.approx(math.log(20))
    assert test(ce, ct, ie, it, alpha=0.01).fail_threshold == pytest.approx(math.log(100))
    assert t.candidate_rate == 0.012 and t.incumbent_rate == pytest.approx(95 / 19000)


@pytest.mark.parametrize("f", [0.05, 0.25, 0.5])
@pytest.mark.parametrize("events", [1, 7, 40])
def test_each_e_value_has_expectation_one_under_its_null(f: float, events: int) -> None:
    """Ville's inequality needs E[e-value] <= 1 under the null, at every count of events."""

    def expectation(ratio: float, of: str) -> float:
        total = 0.0
        for c in range(events + 1):
            t = statistics.rate_ratio_test(
                candidate_events=c,
                candidate_total=f * 1000,
                incumbent_events=events - c,
                incumbent_total=(1 - f) * 1000,
                alpha=0.05,
                beta=0.05,
                min_ratio=1.5,
            )
            total += math.exp(binomial_log_pmf(c, events, share(ratio, f)) + getattr(t, of))
        return total

    assert expectation(1.0, "worse") == pytest.approx(1.0, rel=1e-9)
    assert expectation(1.5, "not_worse") == pytest.approx(1.0, rel=1e-9)
    # Beyond the null the e-values shrink: a better candidate, or a much worse one, proves less.
    assert expectation(0.8, "worse") < 1 and expectation(2.0, "not_worse") < 1


def test_more_candidate_errors_are_more_evidence_of_worse_and_less_of_not_worse() -> None:
    tests = [test(ce, 1000, 100, 19000) for ce in range(0, 30, 3)]
    assert all(a.worse < b.worse for a, b in itertools.pairwise(tests))
    assert all(a.not_worse > b.not_worse for a, b in itertools.pairwise(tests))


def test_thresholds_are_log_one_over_alpha() -> None:
    worse = test(30, 1000, 100, 19000)  # 3% against 0.53%
    assert worse.failed and not worse.passed and worse.worse >= math.log(20)
    same = test(100, 10000, 1900, 190000)
    assert same.passed and not same.failed
    assert not test(100, 10000, 1900, 190000, alpha=1e-12).passed


def test_samples_needed_predicts_when_the_rule_concludes_at_todays_rates() -> None:
    t = test(20, 2000, 380, 38000)  # equal rates, not yet conclusive
    assert not t.passed and not t.failed and t.samples_needed is not None
    later = 2000 + t.samples_needed * 1.05
    assert test(later * 0.01, later, later * 19 * 0.01, later * 19).passed
    sooner = 2000 + t.samples_needed * 0.9
    assert not test(sooner * 0.01, sooner, sooner * 19 * 0.01, sooner * 19).passed


def test_samples_needed_is_none_without_events() -> None:
    assert test(0, 5000, 0, 95000).samples_needed is None


def test_rate_ratio_test_refuses_impossible_input() -> None:
    with pytest.raises(ValueError):
        test(0, 0, 1, 100)
    with pytest.raises(ValueError):
        test(-1, 100, 1, 100)
    with pytest.raises(ValueError):
        statistics.rate_ratio_test(
            candidate_events=1,
            candidate_total=100,
            incumbent_events=1,
            incumbent_total=100,
            alpha=0.05,
            beta=0.05,
            min_ratio=1.0,
        )


@pytest.mark.parametrize("n", [1, 10, 200])
def test_rate_below_has_expectation_one_at_its_bound_and_less_above(n: int) -> None:
    def expectation(p: float) -> float:
        return sum(
            math.exp(binomial_log_pmf(k, n, p) + statistics.rate_below(events=k, total=n, bound=0.01))
            for k in range(n + 1)
        )

    assert expectation(0.01) == pytest.approx(1.0, rel=1e-9)
    assert expectation(0.02) < 1


def test_rate_below_grows_with_error_free_requests_and_refuses_impossible_input() -> None:
    assert (
        0
        < statistics.rate_below(events=0, total=1000, bound=0.001)
        < statistics.rate_below(events=0, total=2000, bound=0.001)
    )
    assert statistics.rate_below(events=5, total=1000, bound=0.001) < 0
    for bad in ({"events": 0, "total": 0, "bound": 0.1}, {"events": -1, "total": 9, "bound": 0.1}):
        with pytest.raises(ValueError):
            statistics.rate_below(**bad)
    with pytest.raises(ValueError):
        statistics.rate_below(events=0, total=10, bound=1.0)


# -- the judge's sequential rule on crafted counts -----------------------------------------------------


def test_incumbent_without_errors_still_fails_a_candidate_with_many() -> None:
    j = judge(rule(), counts(15, 1000, 0, 19000))
    assert j.verdict is Verdict.FAIL and j.evidence.incumbent_value == 0.0
    assert "ratio inf" in (j.evidence.statistic or "")


def test_no_errors_anywhere_waits_and_says_why() -> None:
    j = judge(rule(), counts(0, 50_000, 0, 950_000))
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.INSUFFICIENT
    assert "no errors in either variant" in j.message and j.evidence.samples_needed is None


def test_min_absolute_effect_lets_an_error_free_candidate_pass() -> None:
    g = rule(absolute=0.001)
    passed = judge(g, counts(0, 50_000, 0, 950_000))
    assert passed.verdict is Verdict.PASS and "below minAbsoluteEffect 0.001" in passed.message
    assert passed.evidence.bound == "rate ratio < 1.5 or rate < 0.001 to pass, > 1 to fail (significance 0.05)"
    early = judge(g, counts(0, 2000, 0, 38_000))
    assert early.verdict is Verdict.INCONCLUSIVE and early.evidence.samples_needed
    later = 2000 + early.evidence.samples_needed * 1.01
    assert judge(g, counts(0, later, 0, later * 19)).verdict is Verdict.PASS
    # Each way to pass runs at half the level: a bit more evidence than the ratio test alone needs.
    assert judge(rule(), counts(100, 10000, 1900, 190000)).verdict is Verdict.PASS
    assert "/ 3.69" in (judge(g, counts(100, 10000, 1900, 190000)).evidence.statistic or "")


def test_min_absolute_effect_never_passes_a_candidate_above_it_and_worse() -> None:
    j = judge(rule(absolute=0.001), counts(30, 10_000, 0, 190_000))
    assert j.verdict is Verdict.FAIL
    with pytest.raises(ValueError):
        rule(absolute=1.0)


@pytest.mark.parametrize(
    "data",
    [counts(12, 10, 5, 5000), counts(5, 500, 5051, 5000), counts(-1, 500, 5, 5000), counts(5, 500, 5, -10)],
)
def test_counts_that_cannot_be_are_a_provider_problem_not_a_verdict(data: GuardrailData) -> None:
    j = judge(rule(), data)
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.INCONSISTENT_COUNTS
    assert "errorsQuery and totalQuery" in j.message


def test_errors_a_fraction_above_total_are_clamped_a_candidate_failing_every_request_fails_at_once() -> None:
    # increase() extrapolates each counter on its own: 300.0000001 errors of 300 requests.
    j = judge(rule(), counts(300.0000001, 300, 300, 30_000))
    assert j.verdict is Verdict.FAIL and j.evidence.candidate_value == 1.0
    # Up to one request, or 1% of the total, over: clamped; the incumbent's side too.
    assert judge(rule(), counts(3, 300, 30_250, 30_000)).cause is not Cause.INCONSISTENT_COUNTS
    assert judge(rule(), counts(301, 300, 300, 30_000)).verdict is Verdict.FAIL


@given(
    excess=st.floats(0, 1),
    ct=st.floats(1, 1e6),
    incumbent_rate=st.floats(0, 0.5),
    it=st.floats(1e4, 1e6),
)
def test_a_candidate_failing_every_request_never_passes(
    excess: float, ct: float, incumbent_rate: float, it: float
) -> None:
    # Against an incumbent failing at most half its requests: a ratio of 2 or more.
    j = judge(rule(), counts(ct + excess, ct, incumbent_rate * it, it))
    assert j.verdict is not Verdict.PASS
    assert j.cause is not Cause.INCONSISTENT_COUNTS


def test_below_min_samples_there_is_no_verdict_either_way() -> None:
    j = judge(rule(min_samples=500), counts(40, 400, 10, 7600))  # 10% against 0.13%
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.INSUFFICIENT
    assert j.evidence.samples_needed == 100
    assert judge(rule(min_samples=100), counts(40, 400, 10, 7600)).verdict is Verdict.FAIL


def test_evidence_names_both_tests_and_their_thresholds() -> None:
    j = judge(rule(alpha=0.01), counts(100, 10000, 1900, 190000))
    assert j.verdict is Verdict.PASS
    assert j.evidence.bound == "rate ratio < 1.5 to pass, > 1 to fail (significance 0.01)"
    # The significance is all the fail test's; the pass test keeps its own level.
    statistic = j.evidence.statistic or ""
    assert f"/ {math.log(100):.2f}," in statistic and statistic.endswith(f"/ {math.log(1 / PASS_SIGNIFICANCE):.2f}")
    assert j.evidence.candidate_samples == 10000


# -- error rates over seeded runs, judged at every interval ----------------------------------------------


def _errors(rng: random.Random, n: int, p: float) -> int:
    """Errors among n requests each failing with probability p: Bernoulli trials by geometric jumps."""
    count, position, log_q = 0, 0, math.log1p(-p)
    while True:
        position += int(math.log(1.0 - rng.random()) / log_q) + 1
        if position > n:
            return count
        count += 1


def _runs(
    seed: int, p1: float, verdict: Verdict, alpha: float, runs: int = 1000, p0: float = 0.01, g: Guardrail | None = None
) -> int:
    """Seeded runs of the step schedule 5% -> 25% -> 50% of 1000 requests an interval (20 intervals each,
    weights changing under the cumulative counts), p0 = 1% by default: how many ever got `verdict`."""
    rng = random.Random(seed)
    g = g or rule(alpha)
    hits = 0
    for _ in range(runs):
        ce = ct = ie = it = 0
        for weight in [5] * 20 + [25] * 20 + [50] * 20:
            c = 10 * weight
            ce, ct = ce + _errors(rng, c, p1), ct + c
            ie, it = ie + _errors(rng, 1000 - c, p0), it + 1000 - c
            if judge(g, counts(ce, ct, ie, it)).verdict is verdict:
                hits += 1
                break
    return hits


def test_false_rollbacks_under_monitoring_at_every_interval_stay_under_alpha() -> None:
    """Both variants at 1%, judged at each of 60 intervals: Ville's inequality bounds the share of
    runs ever failed by alpha, weight changes included."""
    failed = _runs(20261127, 0.01, Verdict.FAIL, alpha=0.05)
    assert failed / 1000 <= 0.05, f"{failed} of 1000 null runs failed"


def test_passes_of_a_candidate_worse_by_the_minimum_effect_stay_under_alpha() -> None:
    """At exactly the minimum effect the pass test's e-value is a martingale, the hardest case; with
    finer looks its rate approaches alpha (about 3% here: 1000 runs keep the check off the noise)."""
    passed = _runs(20261128, 0.015, Verdict.PASS, alpha=0.01)
    assert passed / 1000 <= PASS_SIGNIFICANCE, f"{passed} of 1000 runs at 1.5x passed"


def test_passes_of_a_candidate_worse_by_both_effects_stay_under_the_pass_level() -> None:
    """At the absolute effect and twice the incumbent's rate: neither way to pass may be taken more
    often than the pass level allows, together."""
    passed = _runs(20261129, 0.002, Verdict.PASS, alpha=0.01, p0=0.001, g=rule(0.01, absolute=0.002))
    assert passed / 1000 <= PASS_SIGNIFICANCE, f"{passed} of 1000 runs passed"


def test_with_errors_this_rare_only_min_absolute_effect_lets_good_candidates_pass() -> None:
    """0.02% errors for both: too few errors for the ratio test in 16,000 candidate requests."""
    with_absolute = _runs(5, 0.0002, Verdict.PASS, alpha=0.01, p0=0.0002, g=rule(0.01, absolute=0.002), runs=50)
    ratio_only = _runs(5, 0.0002, Verdict.PASS, alpha=0.01, p0=0.0002, g=rule(0.01), runs=50)
    assert with_absolute >= 48 and ratio_only <= 2


def test_the_rule_has_power_a_doubled_error_rate_fails_and_an_equal_one_passes() -> None:
    """The bounds above would hold for a rule that never decides: it must also decide."""
    assert _runs(7, 0.02, Verdict.FAIL, alpha=0.05, runs=50) >= 48
    assert _runs(8, 0.01, Verdict.PASS, alpha=0.05, runs=50) >= 48
