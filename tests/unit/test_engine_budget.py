"""The cautious schedule: steps that advance on bounded risk, deadlines that explain themselves,
counts that never go backwards. The real judge on counts, the decision core with a fake clock."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from controller.api.duration import parse_duration
from controller.api.models import ModelRolloutSpec, Phase, Verdict
from controller.api.reasons import Reason
from controller.core import budget, statistics
from controller.core.judge import GuardrailData, Judgement, VariantData, judge
from controller.core.observation import Observation, ObservationStatus
from tests.support.simulator import Simulator

STEPS = [{"weight": w, "hold": "5m"} for w in (1, 5, 10, 25, 50)]


def spec(**analysis: Any) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "incumbent": {"name": "v1"},
            "candidate": {"name": "v2"},
            "traffic": {"gatewayAPI": {"httpRoute": "r"}},
            "canary": {"steps": STEPS},
            "analysis": {"interval": "30s", **analysis},
            "guardrails": [
                {
                    "name": "errors",
                    "metric": {"builtin": "ErrorRate"},
                    "sequential": {"significance": 0.01, "minEffect": 0.5},
                }
            ],
        }
    )


def ok(value: float) -> Observation:
    return Observation(ObservationStatus.OK, value=value)


class Traffic:
    """Cumulative counts at `rate` requests/s, split by the weights on the plane, errors at their
    expected share (deterministic: the tests are about the engine, not about luck)."""

    def __init__(self, rate: float, p0: float = 0.01, p1: float = 0.01) -> None:
        self.rate, self.p0, self.p1 = rate, p0, p1
        self.candidate = self.incumbent = 0.0
        self.tamper: Callable[[GuardrailData], GuardrailData] | None = None

    def __call__(self, name: str, sim: Simulator) -> Judgement:
        data = GuardrailData(
            VariantData(errors=ok(round(self.candidate * self.p1)), total=ok(math.floor(self.candidate))),
            VariantData(errors=ok(round(self.incumbent * self.p0)), total=ok(math.floor(self.incumbent))),
        )
        if self.tamper is not None:
            data = self.tamper(data)
        return judge(sim.spec.guardrails[0], data)

    def run(self, sim: Simulator, *, until: Callable[[Simulator], bool] | None = None, limit: int = 2000) -> None:
        for _ in range(limit):
            out = sim.reconcile()
            if (until is not None and until(sim)) or out.requeue_after is None:
                return
            seconds = out.requeue_after.total_seconds()
            weights = sim.plane.get("v2")
            if weights is not None:
                self.candidate += self.rate * seconds * weights.candidate / 100
                self.incumbent += self.rate * seconds * weights.incumbent / 100
            sim.clock.advance(out.requeue_after)
        raise AssertionError("no verdict")


def test_a_good_candidate_walks_the_cautious_schedule_on_bounded_risk_and_is_promoted_on_a_pass() -> None:
    traffic = Traffic(rate=100)
    sim = Simulator(spec(), judge=traffic)
    traffic.run(sim)
    assert sim.status.phase is Phase.PROMOTED
    assert sim.candidate_weights("v2") == [1, 5, 10, 25, 50, 100]
    advanced = [e.message for e in sim.events if e.reason == Reason.STEP_ADVANCED]
    assert "next step's excess bounded by" in advanced[0]  # step 1 ended without a conclusive pass
    assert sim.status.error_budget is not None and sim.status.error_budget.left <= 100
    # Promotion itself needs the conclusive pass, never the budget.
    assert sim.status.guardrails[0].verdict is Verdict.PASS


def test_once_every_sequential_guardrail_passed_the_budget_no_longer_applies() -> None:
    # 5% more errors than the incumbent is within minEffect: a pass. At 2,000 requests/s its
    # excess (0.05% of ~550,000 candidate requests, ~270) outgrows the budget of 100 long after
    # the evidence came in, and must not end the rollout.
    traffic = Traffic(rate=2000, p1=0.0105)
    sim = Simulator(spec(), judge=traffic)
    traffic.run(sim)
    assert sim.status.phase is Phase.PROMOTED, (sim.status.reason, sim.status.message)
    assert sim.status.error_budget is not None and sim.status.error_budget.spent > 100


def test_without_a_budget_every_step_needs_a_conclusive_pass() -> None:
    traffic = Traffic(rate=100)
    sim = Simulator(spec(errorBudget=0), judge=traffic)
    traffic.run(sim)
    assert sim.status.phase is Phase.ROLLED_BACK and sim.status.reason == Reason.PROGRESS_DEADLINE_EXCEEDED
    assert sim.candidate_weights("v2") == [1, 0]


def test_the_last_step_never_ends_on_the_budget_alone() -> None:
    # Exactly between the two sides: the candidate stays inconclusive, so it is never promoted.
    traffic = Traffic(rate=100, p1=0.0125)
    sim = Simulator(spec(progressDeadline="30m"), judge=traffic)
    traffic.run(sim)
    assert sim.status.phase is Phase.ROLLED_BACK
    assert 100 not in sim.candidate_weights("v2")


def test_a_deadline_without_evidence_is_inconclusive_not_failed_everywhere_it_shows() -> None:
    traffic = Traffic(rate=10)
    sim = Simulator(spec(), judge=traffic)
    traffic.run(sim)
    assert sim.status.phase is Phase.ROLLED_BACK and sim.status.reason == Reason.PROGRESS_DEADLINE_EXCEEDED
    assert sim.status.failed_candidates[-1].verdict is Verdict.INCONCLUSIVE
    assert [e.reason for e in sim.events if e.type == "Warning"][-1] == Reason.ROLLED_BACK_INCONCLUSIVE
    assert not any(e.reason == Reason.ROLLED_BACK for e in sim.events)


def test_a_failed_candidate_is_recorded_as_failed() -> None:
    traffic = Traffic(rate=100, p1=0.05)
    sim = Simulator(spec(), judge=traffic)
    traffic.run(sim)
    assert sim.status.reason == Reason.GUARDRAIL_FAILED
    assert sim.status.failed_candidates[-1].verdict is Verdict.FAIL
    assert any(e.reason == Reason.ROLLED_BACK for e in sim.events)


def test_on_deadline_pause_waits_for_a_human_instead() -> None:
    traffic = Traffic(rate=10)
    sim = Simulator(spec(onDeadline="Pause"), judge=traffic)
    traffic.run(sim, until=lambda s: s.status.phase is Phase.PAUSED)
    assert sim.status.pause_reason is Reason.PROGRESS_DEADLINE_EXCEEDED
    assert sim.status.failed_candidates == [] and sim.candidate_weights("v2") == [1]


def test_feasibility_is_estimated_at_the_first_analysis_and_said_at_once() -> None:
    traffic = Traffic(rate=10)
    sim = Simulator(spec(), judge=traffic)
    traffic.run(sim, until=lambda s: s.analyses == 1)
    warning = next(e for e in sim.events if e.reason == Reason.DEADLINE_TOO_SHORT)
    assert warning.type == "Warning"
    # "at 1.0 req/s step 1 needs about 53 min; the deadline is 15m: raise the step's weight or the deadline"
    assert warning.message.startswith("at ") and " req/s step " in warning.message
    assert "needs about " in warning.message and "the deadline is 15m: raise the step's weight or the deadline" in (
        warning.message
    )
    feasible = next(c for c in sim.status.conditions if c.type == "Feasible")
    assert feasible.status == "False" and feasible.reason == Reason.DEADLINE_TOO_SHORT
    assert sim.clock.now() - sim.status.rollout_started < parse_duration("1m")  # at once, not at the deadline


def test_feasible_plans_say_so_and_emit_no_warning() -> None:
    traffic = Traffic(rate=100)
    sim = Simulator(spec(), judge=traffic)
    traffic.run(sim, until=lambda s: s.analyses == 1)
    assert not any(e.reason == Reason.DEADLINE_TOO_SHORT for e in sim.events)
    assert next(c for c in sim.status.conditions if c.type == "Feasible").status == "True"


def test_the_recommended_deadline_is_feasible() -> None:
    traffic = Traffic(rate=10)
    sim = Simulator(spec(), judge=traffic)
    traffic.run(sim, until=lambda s: s.analyses == 1)
    message = next(e.message for e in sim.events if e.reason == Reason.DEADLINE_TOO_SHORT)
    minutes = int(message.rsplit("to at least ", 1)[1].rstrip("m)"))
    traffic = Traffic(rate=10)
    sim = Simulator(spec(progressDeadline=f"{minutes}m"), judge=traffic)
    traffic.run(sim)
    assert sim.status.phase is Phase.PROMOTED


def test_feasibility_needs_minimum_samples_pass_or_budget() -> None:
    g = spec().guardrails[0]
    # 1 req/s to the candidate (1% of 100): minSamples alone takes 100 s; a pass about 53 minutes.
    counts = budget.Counts(0.3, 30, 29.7, 2970)
    needs = budget.step_needs(spec(errorBudget=0), g, counts, 0, rate=100, left=0)
    assert 40 * 60 < needs < 70 * 60
    # With a budget the step may end once the next step's harm bound fits: far sooner.
    assert budget.step_needs(spec(), g, counts, 0, rate=100, left=100) < needs / 3
    # The last step needs the pass whatever the budget.
    last = budget.step_needs(spec(), g, counts, 4, rate=100, left=100)
    assert last >= 300


def test_counts_going_backwards_are_a_provider_problem_never_a_fresh_start() -> None:
    traffic = Traffic(rate=100, p1=0.02)
    sim = Simulator(spec(), judge=traffic)
    traffic.run(sim, until=lambda s: s.analyses == 4)
    before = sim.status.guardrails[0]
    assert before.verdict is Verdict.INCONCLUSIVE
    # A Prometheus restart: the cumulative errors drop from their last value to a third of it.
    traffic.tamper = lambda d: GuardrailData(
        VariantData(errors=ok(d.candidate.errors.value / 3), total=d.candidate.total),  # type: ignore[union-attr,operator]
        d.incumbent,
    )
    traffic.run(sim, until=lambda s: s.analyses == 5)
    after = sim.status.guardrails[0]
    assert after.verdict is Verdict.INCONCLUSIVE and after.consecutive_inconclusive == 1
    assert "counts went backwards" in after.message and "candidate errors" in after.message
    # The higher counts of record stay, so the next look is compared with them as well.
    assert after.evidence.candidate_samples == before.evidence.candidate_samples
    assert after.evidence.candidate_value == before.evidence.candidate_value
    traffic.run(sim, until=lambda s: s.analyses == 6)
    assert "counts went backwards" in sim.status.guardrails[0].message


def test_counts_going_backwards_follow_on_error() -> None:
    traffic = Traffic(rate=100)
    s = spec().model_dump(by_alias=True, exclude_none=True)
    s["guardrails"][0]["onError"] = "Rollback"
    sim = Simulator(ModelRolloutSpec.model_validate(s), judge=traffic)
    traffic.run(sim, until=lambda s: s.analyses == 2)
    traffic.tamper = lambda d: GuardrailData(VariantData(errors=d.candidate.errors, total=ok(1)), d.incumbent)
    traffic.run(sim)
    assert sim.status.phase is Phase.ROLLED_BACK and sim.status.reason == Reason.COUNTS_WENT_BACKWARDS
    assert sim.status.failed_candidates[-1].verdict is Verdict.INCONCLUSIVE


def test_a_no_data_look_keeps_the_counts_of_record() -> None:
    traffic = Traffic(rate=100)
    sim = Simulator(spec(), judge=traffic)
    traffic.run(sim, until=lambda s: s.analyses == 3)
    recorded = sim.status.guardrails[0].evidence
    traffic.tamper = lambda d: GuardrailData(VariantData(errors=Observation(ObservationStatus.NO_DATA)), d.incumbent)
    traffic.run(sim, until=lambda s: s.analyses == 4)
    assert sim.status.guardrails[0].evidence == recorded


@pytest.mark.parametrize("ratio", [1.0, 1.5, 3.0])
def test_the_ratio_bound_covers_the_truth_at_every_look(ratio: float) -> None:
    """Anytime-valid: over 300 seeded runs looked at every 30 s, the bound is ever below the true
    ratio in at most alpha of them (shares change between steps, as in a rollout)."""
    rng, alpha, p0, misses = random.Random(16), 0.05, 0.01, 0
    for _ in range(300):
        ce = ct = ie = it = 0.0
        missed = False
        for share in [0.01] * 10 + [0.05] * 10 + [0.25] * 10 + [0.5] * 10:
            n_c, n_i = round(3000 * share), round(3000 * (1 - share))
            ce += sum(rng.random() < p0 * ratio for _ in range(n_c))
            ie += sum(rng.random() < p0 for _ in range(n_i))
            ct, it = ct + n_c, it + n_i
            bound = statistics.ratio_upper_bound(
                candidate_events=ce, candidate_total=ct, incumbent_events=ie, incumbent_total=it, alpha=alpha
            )
            missed = missed or bound < ratio
        misses += missed
    assert misses / 300 <= alpha


@settings(max_examples=200, deadline=None)
@given(
    c=st.integers(0, 500),
    e=st.integers(1, 5000),
    f=st.floats(0.01, 0.9),
    alpha=st.sampled_from([0.001, 0.01, 0.05]),
)
@example(c=1, e=228, f=0.75, alpha=0.05)  # zero candidate events: the bound once stopped at its start
def test_the_ratio_bound_shrinks_with_evidence_and_grows_with_confidence(
    c: int, e: int, f: float, alpha: float
) -> None:
    c = min(c, e)
    total_c, total_i = 1000 * f, 1000 * (1 - f)

    def bound(c_: float, e_: float, a: float) -> float:
        return statistics.ratio_upper_bound(
            candidate_events=c_, candidate_total=total_c, incumbent_events=e_ - c_, incumbent_total=total_i, alpha=a
        )

    b = bound(c, e, alpha)
    assert b > 0
    assert bound(c, e, alpha / 10) >= b * (1 - 1e-6)  # more confidence, a wider bound
    if c > 0:
        assert bound(c - 1, e, alpha) <= b * (1 + 1e-6)  # fewer candidate errors, a lower bound


def test_a_new_candidate_starts_with_a_fresh_budget_and_no_feasibility_verdict() -> None:
    traffic = Traffic(rate=10)
    sim = Simulator(spec(), judge=traffic)
    traffic.run(sim, until=lambda s: s.analyses == 2)
    assert sim.status.error_budget is not None
    assert any(c.type == "Feasible" for c in sim.status.conditions)
    sim.spec = spec().model_copy(update={"candidate": spec().candidate.model_copy(update={"name": "v3"})})
    sim.reconcile()
    assert sim.status.error_budget is None
    assert not any(c.type == "Feasible" for c in sim.status.conditions)
