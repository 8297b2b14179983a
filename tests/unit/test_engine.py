"""The rollout state machine, driven through whole rollouts with a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from controller.api.models import ModelRolloutSpec, Phase, Verdict
from controller.core.judge import Cause, Judgement
from tests.support.simulator import Simulator, failing, no_data, passing


def spec(**overrides: Any) -> ModelRolloutSpec:
    body: dict[str, Any] = {
        "incumbent": {"name": "fraud-v1"},
        "candidate": {"name": "fraud-v2"},
        "traffic": {"gatewayAPI": {"httpRoute": "fraud"}},
        "canary": {"steps": [{"weight": 10, "hold": "1m"}, {"weight": 50, "hold": "1m"}, {"weight": 80, "hold": "1m"}]},
        "analysis": {"interval": "30s", "progressDeadline": "10m"},
        "guardrails": [{"name": "errors", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 0.01}}],
    }
    body.update(overrides)
    return ModelRolloutSpec.model_validate(body)


def test_healthy_candidate_walks_every_step_and_is_promoted() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.run()
    assert sim.status.phase is Phase.PROMOTED
    assert sim.candidate_weights("fraud-v2") == [10, 50, 80, 100]
    assert sim.status.incumbent is not None and sim.status.incumbent.name == "fraud-v2"
    assert [e.reason for e in sim.events] == ["RolloutStarted", "StepAdvanced", "StepAdvanced", "Promoted"]
    ready = {c.type: c.status for c in sim.status.conditions}
    assert ready == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}


def test_each_step_holds_for_its_hold_time() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.run(until=lambda s: s.status.current_step == 1)
    assert sim.status.rollout_started is not None
    assert (sim.clock.now() - sim.status.rollout_started).total_seconds() >= 60


def test_failing_guardrail_rolls_back_with_evidence() -> None:
    sim = Simulator(spec(), judge=failing)
    sim.run()
    assert sim.status.phase is Phase.ROLLED_BACK
    assert sim.status.reason == "GuardrailFailed"
    assert sim.candidate_weights("fraud-v2") == [10, 0]
    failed = sim.status.failed_candidates[-1]
    assert failed.model.name == "fraud-v2" and failed.guardrail == "errors"
    assert sim.status.incumbent is not None and sim.status.incumbent.name == "fraud-v1"
    assert {c.type: c.status for c in sim.status.conditions}["Stalled"] == "True"


def test_rollback_is_sticky() -> None:
    sim = Simulator(spec(), judge=failing)
    sim.run()
    sim.judge = passing
    writes = len(sim.writes)
    for _ in range(5):
        sim.advance(300)
        out = sim.reconcile()
        assert out.actions == [] and out.requeue_after is None
    assert sim.status.phase is Phase.ROLLED_BACK and len(sim.writes) == writes


def test_no_data_never_advances_and_ends_in_a_verdict() -> None:
    sim = Simulator(spec(), judge=no_data)
    sim.run()
    assert sim.status.phase is Phase.ROLLED_BACK
    assert sim.status.reason in ("InconclusiveLimitExceeded", "ProgressDeadlineExceeded")
    assert max(sim.candidate_weights("fraud-v2")) == 10
    assert any(e.type == "Warning" and e.reason == "GuardrailInconclusive" for e in sim.events)


def test_insufficient_samples_wait_until_the_deadline() -> None:
    def few(_: str, __: Simulator) -> Judgement:
        return Judgement(Verdict.INCONCLUSIVE, "12 of 100 samples", cause=Cause.INSUFFICIENT)

    sim = Simulator(spec(), judge=few)
    sim.run()
    assert sim.status.reason == "ProgressDeadlineExceeded"
    assert max(sim.candidate_weights("fraud-v2")) == 10


def test_on_no_data_rollback_policy_rolls_back_at_once() -> None:
    guardrails = [
        {"name": "errors", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 0.01}, "onNoData": "Rollback"}
    ]
    sim = Simulator(spec(guardrails=guardrails), judge=no_data)
    sim.run()
    assert sim.status.phase is Phase.ROLLED_BACK and sim.status.reason == "NoData"
    assert sim.analyses == 1


def test_advisory_mode_pauses_instead_of_rolling_back() -> None:
    sim = Simulator(spec(analysis={"interval": "30s", "progressDeadline": "10m", "mode": "Advisory"}), judge=failing)
    sim.run()
    assert sim.status.phase is Phase.PAUSED and sim.status.reason == "GuardrailFailed"
    assert sim.candidate_weights("fraud-v2") == [10]


def test_manual_gate_waits_for_a_promote_request() -> None:
    steps = {"steps": [{"weight": 20, "hold": "30s", "manualGate": True}, {"weight": 60, "hold": "30s"}]}
    sim = Simulator(spec(canary=steps), judge=passing)
    sim.run()
    assert sim.status.phase is Phase.PAUSED and sim.status.reason == "AwaitingPromotion"
    sim.promote_request = "alice-1"
    sim.run()
    assert sim.status.phase is Phase.PROMOTED
    assert sim.candidate_weights("fraud-v2") == [20, 60, 100]


def test_new_candidate_mid_rollout_resets_weights_and_counters() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.run(until=lambda s: s.status.current_step == 1)
    sim.spec = spec(candidate={"name": "fraud-v3"})
    sim.reconcile()
    assert sim.plane["fraud-v2"].candidate == 0
    assert sim.status.candidate is not None and sim.status.candidate.name == "fraud-v3"
    assert sim.status.current_step == 0 and sim.status.guardrails == []
    sim.run()
    assert sim.status.phase is Phase.PROMOTED and sim.status.incumbent is not None
    assert sim.status.incumbent.name == "fraud-v3"
    assert 100 not in sim.candidate_weights("fraud-v2")


def test_deletion_restores_the_incumbent_and_releases() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.run(until=lambda s: s.status.current_step == 1)
    sim.reconcile(deleting=True)
    assert sim.released and sim.plane["fraud-v2"].candidate == 0


def test_no_incumbent_adopts_the_first_candidate_without_a_canary() -> None:
    body = spec().model_dump(by_alias=True, exclude_none=True, mode="json")
    del body["incumbent"]
    sim = Simulator(ModelRolloutSpec.model_validate(body))
    sim.run()
    assert sim.status.phase is Phase.PROMOTED and sim.status.reason == "Adopted" and sim.writes == []


def test_user_pause_holds_weights_and_does_not_count_against_the_deadline() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.run(until=lambda s: s.status.current_step == 1)
    sim.spec = spec(paused=True)
    sim.reconcile()
    assert sim.status.phase is Phase.PAUSED
    sim.advance(3600)
    sim.reconcile()
    sim.spec = spec(paused=False)
    sim.run()
    assert sim.status.phase is Phase.PROMOTED


def test_a_user_pause_written_before_pause_reason_existed_resumes_when_unpaused() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.run(until=lambda s: s.status.current_step == 1)
    sim.spec = spec(paused=True)
    sim.reconcile()
    sim.status.pause_reason = None  # as the previous version wrote it: only status.reason said why
    assert sim.status.reason == "PausedByUser"
    sim.spec = spec(paused=False)
    sim.run()
    assert sim.status.phase is Phase.PROMOTED


def test_idle_rollout_reconciles_without_actions() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.run()
    before = sim.status.wire()
    out = sim.reconcile()
    assert out.actions == [] and out.events == [] and out.requeue_after is None
    assert sim.status.wire() == before


def test_killed_between_deciding_and_acting_the_step_of_record_is_applied_next() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.run(until=lambda s: s.status.current_step == 0 and s.analyses >= 1)
    while sim.status.current_step == 0:
        sim.advance(30)
        sim.reconcile(crash_before_acting=True)
    assert sim.plane["fraud-v2"].candidate == 10  # the advance was decided, not carried out
    sim.run()
    assert sim.candidate_weights("fraud-v2") == [10, 50, 80, 100]


def test_a_verdict_comes_back_until_its_weights_are_read_back() -> None:
    # A router may take a verdict's weights in several applies (the replica ratio shrinks the
    # incumbent only once the candidate's pods are ready): nothing but the requeue wakes us.
    sim = Simulator(spec(), judge=passing)
    out = sim.reconcile()
    while sim.status.phase is not Phase.PROMOTED:
        assert out.requeue_after is not None
        sim.clock.advance(out.requeue_after)
        out = sim.reconcile()
    assert out.requeue_after is not None
    assert sim.reconcile().requeue_after is None  # read back: settled, idle


def test_killed_before_a_rollback_reached_the_route_the_rollback_is_still_carried_out() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.run(until=lambda s: s.status.current_step == 1)
    sim.judge = failing
    while sim.status.phase is not Phase.ROLLED_BACK:
        sim.advance(30)
        sim.reconcile(crash_before_acting=True)
    assert sim.plane["fraud-v2"].candidate == 50
    out = sim.reconcile()
    assert sim.plane["fraud-v2"].candidate == 0 and sim.status.weights is not None
    assert sim.status.weights.candidate == 0 and out.requeue_after is not None
    assert sim.reconcile().actions == []


def test_killed_before_a_promotion_reached_the_route_the_promotion_is_still_carried_out() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.run(until=lambda s: s.status.current_step == 2)
    while sim.status.phase is not Phase.PROMOTED:
        sim.advance(30)
        sim.reconcile(crash_before_acting=True)
    sim.run()
    assert sim.plane["fraud-v2"].candidate == 100 and sim.candidate_weights("fraud-v2")[-1] == 100


def test_abort_rolls_back_at_once_even_in_advisory_mode_and_is_sticky() -> None:
    sim = Simulator(spec(analysis={"interval": "30s", "progressDeadline": "10m", "mode": "Advisory"}), judge=passing)
    sim.run(until=lambda s: s.status.current_step == 1)
    sim.abort_request = "abort-1"
    sim.run()
    assert sim.status.phase is Phase.ROLLED_BACK and sim.status.reason == "AbortedByUser"
    assert sim.plane["fraud-v2"].candidate == 0
    assert sim.status.failed_candidates[-1].reason == "AbortedByUser"


def test_retry_reruns_a_rolled_back_candidate_from_step_one() -> None:
    sim = Simulator(spec(), judge=failing)
    sim.run()
    sim.judge = passing
    sim.retry_request = "retry-1"
    sim.run()
    assert sim.status.phase is Phase.PROMOTED
    assert sim.candidate_weights("fraud-v2") == [10, 0, 10, 50, 80, 100]
    assert "RolloutRetried" in [e.reason for e in sim.events]
    sim.reconcile()
    assert sim.status.phase is Phase.PROMOTED  # the same retry value never acts twice


def test_promote_full_goes_to_100_percent_at_once() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.run(until=lambda s: s.status.weights is not None and s.status.weights.candidate == 10)
    sim.promote_request = "full-1"
    sim.reconcile()
    assert sim.status.phase is Phase.PROMOTED and sim.plane["fraud-v2"].candidate == 100
    assert "human" in (sim.status.message or "")


def test_promote_one_step_skips_the_rest_of_the_hold_only() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.run(until=lambda s: s.status.weights is not None and s.status.weights.candidate == 10)
    sim.promote_request = "step-0"
    sim.reconcile()
    assert sim.status.current_step == 1 and sim.plane["fraud-v2"].candidate == 50
    sim.reconcile()
    assert sim.status.current_step == 1  # repeating the same request does nothing


def test_requests_made_before_a_rollout_never_act_on_it() -> None:
    sim = Simulator(spec(), judge=passing)
    sim.abort_request = "abort-old"
    sim.promote_request = "full-old"
    sim.run(until=lambda s: s.status.current_step == 1)
    assert sim.status.phase is Phase.PROGRESSING


def evidence_spec(*, early: bool) -> ModelRolloutSpec:
    return spec(
        canary={"steps": [{"weight": 10, "hold": "5m"}, {"weight": 50, "hold": "5m"}]},
        analysis={"interval": "30s", "progressDeadline": "10m", "endStepsEarly": early},
    )


def test_end_steps_early_ends_a_step_at_its_first_conclusive_pass() -> None:
    sim = Simulator(evidence_spec(early=True), judge=passing)
    sim.run()
    assert sim.status.phase is Phase.PROMOTED
    assert sim.candidate_weights("fraud-v2") == [10, 50, 100]
    assert sim.status.rollout_started is not None
    # Two steps of one analysis each (plus the route settling), far below the 10 minutes of holds.
    assert (sim.clock.now() - sim.status.rollout_started).total_seconds() < 120


def test_without_end_steps_early_a_pass_waits_for_the_hold() -> None:
    sim = Simulator(evidence_spec(early=False), judge=passing)
    sim.run(until=lambda s: s.status.current_step == 1)
    assert sim.status.rollout_started is not None
    assert (sim.clock.now() - sim.status.rollout_started).total_seconds() >= 300


def test_a_step_never_ends_on_its_hold_while_a_guardrail_is_short_of_samples() -> None:
    from controller.api.models import Evidence

    def short(_: str, __: Simulator) -> Judgement:
        return Judgement(
            Verdict.INCONCLUSIVE, "40 of 100 samples", Evidence(samples_needed=60), cause=Cause.INSUFFICIENT
        )

    for early in (False, True):
        sim = Simulator(evidence_spec(early=early), judge=short)
        sim.run(until=lambda s: s.clock.now() - (s.status.step_started or s.clock.now()) > timedelta(minutes=6))
        # Past the 5-minute hold, still at step 1, and the status says how many samples are missing.
        assert sim.status.current_step == 0 and sim.status.phase is Phase.PROGRESSING
        assert sim.status.guardrails[0].evidence.samples_needed == 60
        sim.run()
        assert sim.status.reason == "ProgressDeadlineExceeded"
        assert sim.candidate_weights("fraud-v2") == [10, 0]


def test_end_steps_early_needs_a_pass_at_the_new_steps_weight() -> None:
    verdicts = iter(["pass", "few", "few", "pass"])

    def sequence(_: str, __: Simulator) -> Judgement:
        v = next(verdicts, "pass")
        if v == "pass":
            return Judgement(Verdict.PASS, "ok")
        return Judgement(Verdict.INCONCLUSIVE, "not yet", cause=Cause.INSUFFICIENT)

    sim = Simulator(evidence_spec(early=True), judge=sequence)
    sim.run(until=lambda s: s.status.current_step == 1)
    assert sim.analyses == 1
    sim.run(until=lambda s: s.status.phase is Phase.PROMOTED)
    # The pass at step 1 did not carry over: step 2 ended only at its own pass, the 4th analysis.
    assert sim.analyses == 4


def test_one_inconclusive_analysis_is_not_yet_a_warning_the_second_in_a_row_is() -> None:
    """A candidate's first series lands a scrape after its first requests: one gap is not news."""
    sim = Simulator(spec(), judge=no_data)

    def streak(n: int) -> Callable[[Simulator], bool]:
        return lambda s: any(g.consecutive_inconclusive >= n for g in s.status.guardrails)

    def warnings() -> list[Any]:
        return [e for e in sim.events if e.type == "Warning" and e.reason == "GuardrailInconclusive"]

    sim.run(until=streak(1))
    assert warnings() == []
    sim.run(until=streak(2))
    assert len(warnings()) == 1 and "never a pass" in warnings()[0].message
