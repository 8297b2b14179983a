"""Label guardrails in the pure core: waiting for ground truth, its bound, its status line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.api.models import (
    Evidence,
    Guardrail,
    GuardrailStatus,
    LabelProgress,
    ModelRolloutSpec,
    Phase,
    Verdict,
)
from controller.core import labels
from controller.core.judge import Cause, Judgement
from tests.support.simulator import Simulator

LABELS = {
    "name": "accuracy",
    "metric": {"builtin": "LabelledErrorRate"},
    "sequential": {"significance": 0.05},
    "labelDelay": "5m",
    "minSamples": 50,
}
ERRORS = {"name": "errors", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 0.01}}


def spec(*guardrails: dict[str, Any], **overrides: Any) -> ModelRolloutSpec:
    body: dict[str, Any] = {
        "incumbent": {"name": "fraud-v1"},
        "candidate": {"name": "fraud-v2"},
        "traffic": {"gatewayAPI": {"httpRoute": "fraud"}},
        "canary": {"steps": [{"weight": 10, "hold": "1m"}, {"weight": 50, "hold": "1m"}]},
        "analysis": {"interval": "30s", "progressDeadline": "10m"},
        "guardrails": list(guardrails) or [LABELS],
    }
    body.update(overrides)
    return ModelRolloutSpec.model_validate(body)


def labels_arriving(*, from_minute: float, per_minute: float, enough: float) -> Any:
    """A judge for the label guardrail: labels for the candidate start to arrive `from_minute`
    into the rollout at `per_minute`, and the test concludes (pass) at `enough` of them."""

    def judge(name: str, sim: Simulator) -> Judgement:
        if name != "accuracy":
            return Judgement(Verdict.PASS, "ok", Evidence(candidate_value=0.0, candidate_samples=100))
        started = sim.status.rollout_started
        assert started is not None
        minutes = (sim.clock.now() - started).total_seconds() / 60
        have = max(0.0, (minutes - from_minute) * per_minute)
        if have <= 0:
            return Judgement(Verdict.INCONCLUSIVE, "candidate samples: no data", cause=Cause.NO_DATA)
        evidence = Evidence(candidate_value=0.1, incumbent_value=0.1, candidate_samples=have, incumbent_samples=have)
        if have >= enough:
            return Judgement(Verdict.PASS, "not worse", evidence)
        needed = evidence.model_copy(update={"samples_needed": enough - have})
        return Judgement(Verdict.INCONCLUSIVE, "not yet conclusive", needed, Cause.INSUFFICIENT)

    return judge


def test_a_step_short_of_labels_waits_past_its_hold_then_advances_when_they_confirm() -> None:
    sim = Simulator(spec(), judge=labels_arriving(from_minute=2, per_minute=40, enough=400))
    sim.run(until=lambda s: s.status.reason == "WaitingForLabels")
    assert sim.status.current_step == 0 and sim.status.phase is Phase.PROGRESSING
    sim.run(until=lambda s: s.status.current_step == 1 or s.status.phase is not Phase.PROGRESSING)
    waited = [e for e in sim.events if e.reason == "WaitingForLabels"]
    assert len(waited) == 1 and "waiting for labels" in waited[0].message
    assert sim.status.current_step == 1
    # 400 labels at 40/min from minute 2: not before minute 12, past the 10m deadline (+5m delay).
    assert sim.clock.now() - sim.status.rollout_started >= timedelta(minutes=12)  # type: ignore[operator]


def test_the_status_says_have_need_rate_and_expected_time() -> None:
    sim = Simulator(spec(), judge=labels_arriving(from_minute=0, per_minute=40, enough=1000))
    sim.run(until=lambda s: bool(s.status.guardrails) and (s.status.guardrails[0].labels or _none()).have >= 300)
    progress = sim.status.guardrails[0].labels
    assert progress is not None and progress.need == 1000 and progress.per_minute == pytest.approx(40, rel=0.01)
    assert progress.expected_at is not None
    left = (progress.expected_at - sim.clock.now()).total_seconds() / 60
    assert left == pytest.approx((1000 - progress.have) / 40, rel=0.01)


def _none() -> LabelProgress:
    return LabelProgress(have=0, since=datetime(2026, 1, 1, tzinfo=UTC), since_have=0)


def test_labels_that_never_arrive_are_never_a_pass_and_end_at_the_deadline_plus_the_delay() -> None:
    sim = Simulator(spec(), judge=labels_arriving(from_minute=10_000, per_minute=1, enough=10))
    sim.run()
    assert sim.status.phase is Phase.ROLLED_BACK and sim.status.reason == "ProgressDeadlineExceeded"
    assert sim.candidate_weights("fraud-v2") == [10, 0]
    assert sim.status.failed_candidates[-1].verdict is Verdict.INCONCLUSIVE
    elapsed = sim.clock.now() - sim.status.rollout_started  # type: ignore[operator]
    assert timedelta(minutes=15) <= elapsed < timedelta(minutes=16)
    # Waiting for labels is not "inconclusive" towards inconclusiveLimit: no InconclusiveLimitExceeded.
    assert "Promoted" not in [e.reason for e in sim.events]


def test_a_step_missing_more_than_labels_ends_at_the_plain_deadline() -> None:
    def judge(name: str, sim: Simulator) -> Judgement:
        return Judgement(Verdict.INCONCLUSIVE, "not yet conclusive", cause=Cause.INSUFFICIENT)

    other = {**ERRORS, "name": "latency", "sequential": {}, "absolute": None}
    other.pop("absolute")
    sim = Simulator(spec(LABELS, other), judge=judge)
    sim.run()
    assert sim.status.phase is Phase.ROLLED_BACK and sim.status.reason == "ProgressDeadlineExceeded"
    elapsed = sim.clock.now() - sim.status.rollout_started  # type: ignore[operator]
    assert timedelta(minutes=10) <= elapsed < timedelta(minutes=11)


def test_the_last_step_promotes_only_once_its_predictions_had_the_label_delay() -> None:
    sim = Simulator(spec(), judge=labels_arriving(from_minute=0, per_minute=1000, enough=10))
    sim.run(until=lambda s: s.status.current_step == 1)
    entered = sim.clock.now()
    sim.run()
    assert sim.status.phase is Phase.PROMOTED
    # Hold 1m + labelDelay 5m at the last step, whatever the test said before.
    assert sim.clock.now() - entered >= timedelta(minutes=6)
    promoted = [d for d in sim.status.history if d.action == "promote"]
    assert promoted and promoted[-1].time - entered >= timedelta(minutes=6)


def test_a_label_guardrail_that_fails_rolls_back() -> None:
    def judge(name: str, sim: Simulator) -> Judgement:
        return Judgement(Verdict.FAIL, "candidate rate 0.15 is significantly above incumbent 0.05")

    sim = Simulator(spec(), judge=judge)
    sim.run()
    assert sim.status.phase is Phase.ROLLED_BACK and sim.status.reason == "GuardrailFailed"
    assert sim.status.failed_candidates[-1].guardrail == "accuracy"


def test_waiting_line_reads_as_the_cli_shows_it() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    progress = LabelProgress(
        have=320, need=1000, per_minute=40, expected_at=now + timedelta(minutes=17), since=now, since_have=0
    )
    assert labels.waiting(progress, now) == "waiting for labels: 320 of 1,000 needed, ~40/min, about 17 min"
    stalled = progress.model_copy(update={"per_minute": 0.0, "expected_at": None})
    assert labels.waiting(stalled, now) == "waiting for labels: 320 of 1,000 needed, none arriving"


def test_the_count_of_record_never_goes_down_and_the_rate_is_this_steps() -> None:
    t0 = datetime(2026, 1, 1, 12, tzinfo=UTC)

    def status(have: float | None) -> GuardrailStatus:
        evidence = Evidence(candidate_samples=have, samples_needed=100)
        return GuardrailStatus(name="accuracy", verdict=Verdict.INCONCLUSIVE, evidence=evidence)

    first = labels.progress(status(100), None, first_in_step=True, now=t0)
    assert first.per_minute is None and first.need == 200
    later = labels.progress(status(160), first, first_in_step=False, now=t0 + timedelta(minutes=2))
    assert later.per_minute == 30 and later.since == t0
    missing = labels.progress(status(None), later, first_in_step=True, now=t0 + timedelta(minutes=4))
    assert missing.have == 160 and missing.since_have == 160


def test_fewer_labelled_samples_than_recorded_is_a_provider_problem_keeping_the_record() -> None:
    recorded = Evidence(candidate_value=0.2, candidate_samples=500, incumbent_value=0.1, incumbent_samples=900)
    now = Judgement(Verdict.PASS, "ok", recorded.model_copy(update={"candidate_samples": 100}))
    checked = labels.check_samples(now, recorded, sequential=False)
    assert checked.cause is Cause.COUNTS_WENT_BACKWARDS and checked.evidence == recorded
    # A stalled counter's extrapolation shrinks as the window grows: 9.8 labels, then 6.4.
    stalled = Judgement(Verdict.PASS, "ok", recorded.model_copy(update={"candidate_samples": 330}))
    assert labels.check_samples(stalled, recorded, sequential=False) is stalled
    # A mean that goes down is no count going backwards.
    lower_value = Judgement(Verdict.PASS, "ok", recorded.model_copy(update={"candidate_value": 0.01}))
    assert labels.check_samples(lower_value, recorded, sequential=False) is lower_value


def test_a_labelled_sequential_guardrails_counts_may_shrink_only_by_the_extrapolation_slack() -> None:
    """HA replicas answering in turn: errors 100 then 40 would feed the e-process counts that went
    back; increase()'s extrapolation only moves a few labelled errors a little (3 to 2.7)."""
    recorded = Evidence(candidate_value=0.2, candidate_samples=500, incumbent_value=0.1, incumbent_samples=900)
    went_back = recorded.model_copy(update={"candidate_value": 0.1, "candidate_samples": 400})
    fewer_errors = Judgement(Verdict.FAIL, "worse", went_back)
    checked = labels.check_samples(fewer_errors, recorded, sequential=True)
    assert checked.cause is Cause.COUNTS_WENT_BACKWARDS and checked.verdict is Verdict.INCONCLUSIVE
    assert checked.evidence == recorded and "candidate errors 40 < 100" in checked.message
    # A few errors read a little lower by increase()'s extrapolation: no problem (e2e saw 3 -> 2.7).
    few = recorded.model_copy(update={"candidate_value": 3 / 500})
    wobble = Judgement(
        Verdict.INCONCLUSIVE, "not yet", few.model_copy(update={"candidate_value": 2.7 / 490, "candidate_samples": 490})
    )
    assert labels.check_samples(wobble, few, sequential=True) is wobble
    # Samples within the slack, errors unchanged (a stalled label counter): no problem.
    same_errors = recorded.model_copy(update={"candidate_value": 100 / 330, "candidate_samples": 330})
    stalled = Judgement(Verdict.PASS, "ok", same_errors)
    assert labels.check_samples(stalled, recorded, sequential=True) is stalled
    # Samples far below the record are still a provider problem.
    halved = Judgement(
        Verdict.PASS, "ok", recorded.model_copy(update={"candidate_value": 0.5, "candidate_samples": 200})
    )
    assert labels.check_samples(halved, recorded, sequential=True).cause is Cause.COUNTS_WENT_BACKWARDS

    # Through the engine: a labelled sequential guardrail whose errors went back keeps the record.
    def accuracy(s: Simulator) -> GuardrailStatus | None:
        return next((g for g in s.status.guardrails if g.name == "accuracy"), None)

    sim = Simulator(
        spec(), judge=lambda _, __: Judgement(Verdict.INCONCLUSIVE, "not yet", recorded, Cause.INSUFFICIENT)
    )
    sim.run(until=lambda s: (g := accuracy(s)) is not None and g.evidence == recorded)
    first = accuracy(sim)
    assert first is not None
    sim.judge = lambda _, __: fewer_errors
    sim.run(until=lambda s: (g := accuracy(s)) is not None and g.last_evaluated != first.last_evaluated)
    after = accuracy(sim)
    assert after is not None and after.verdict is Verdict.INCONCLUSIVE and after.evidence == recorded
    assert sim.status.phase is not Phase.ROLLED_BACK


def test_no_feedback_series_yet_waits_for_labels_instead_of_counting_as_no_data() -> None:
    g = Guardrail.model_validate(LABELS)
    j = labels.not_yet_labelled(g, Judgement(Verdict.INCONCLUSIVE, "no data", cause=Cause.NO_DATA))
    assert j.verdict is Verdict.INCONCLUSIVE and j.cause is Cause.INSUFFICIENT and j.evidence.samples_needed == 50
    error = Judgement(Verdict.INCONCLUSIVE, "timeout", cause=Cause.ERROR)
    assert labels.not_yet_labelled(g, error) is error
    plain = Guardrail.model_validate(ERRORS)
    no_data = Judgement(Verdict.INCONCLUSIVE, "no data", cause=Cause.NO_DATA)
    assert labels.not_yet_labelled(plain, no_data) is no_data


@pytest.mark.parametrize(
    ("guardrail", "message"),
    [
        ({**LABELS, "labelDelay": "721h"}, "labelDelay must be at most 720h"),
        (
            {
                "name": "d",
                "metric": {"builtin": "PredictionDistribution"},
                "drift": {"maxPSI": 0.2},
                "labelDelay": "1h",
            },
            "labelDelay applies to rules on labelled outcomes",
        ),
        (
            {"name": "l", "metric": {"builtin": "LabelledLoss"}, "sequential": {}},
            "the sequential rule needs metric.errorsQuery",
        ),
    ],
)
def test_bad_label_guardrails_are_refused_naming_the_field(guardrail: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Guardrail.model_validate(guardrail)


def test_label_builtins_are_label_guardrails_without_a_delay() -> None:
    loss = Guardrail.model_validate({"name": "l", "metric": {"builtin": "LabelledLoss"}, "relative": {"maxRatio": 1.1}})
    assert loss.labelled and labels.delay(loss) == timedelta(0)
    assert not Guardrail.model_validate(ERRORS).labelled
    custom = Guardrail.model_validate({**ERRORS, "metric": {"query": "x"}, "labelDelay": "2h"})
    assert custom.labelled and labels.delay(custom) == timedelta(hours=2)


def test_the_rollout_in_docs_labels_md_is_valid() -> None:
    import re
    from pathlib import Path

    import yaml

    from controller.api.models import ModelRollout

    text = (Path(__file__).resolve().parents[2] / "docs" / "labels.md").read_text()
    block = re.search(r"```yaml\n(apiVersion: modelrollout.dev.*?)```", text, re.S)
    assert block is not None
    rollout = ModelRollout.model_validate(yaml.safe_load(block.group(1)))
    accuracy = rollout.spec.guardrails[1]
    assert accuracy.labelled and labels.delay(accuracy) == timedelta(minutes=30)


def test_the_cli_shows_the_wait_for_labels() -> None:
    from controller.cli.render import status_view

    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    body = spec().wire()
    waiting = {
        "phase": "Progressing",
        "reason": "WaitingForLabels",
        "message": "step 1/2: accuracy: waiting for labels: 320 of 1,000 needed, ~40/min, about 17 min",
        "incumbent": {"name": "fraud-v1"},
        "candidate": {"name": "fraud-v2"},
        "currentStep": 0,
        "stepStarted": "2026-11-27T11:50:00Z",
        "lastAnalysis": "2026-11-27T11:59:50Z",
        "weights": {"incumbent": 90, "candidate": 10},
        "guardrails": [
            {
                "name": "accuracy",
                "verdict": "Inconclusive",
                "message": "not yet conclusive",
                "evidence": {"candidateSamples": 320.4, "samplesNeeded": 680},
                "lastEvaluated": "2026-11-27T11:59:50Z",
                "labels": {
                    "have": 320.4,
                    "need": 1000,
                    "perMinute": 40,
                    "expectedAt": "2026-11-27T12:17:00Z",
                    "since": "2026-11-27T11:51:00Z",
                    "sinceHave": 0,
                },
            }
        ],
    }
    obj = {
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": "fraud", "namespace": "payments", "generation": 1},
        "spec": body,
        "status": waiting,
    }
    text = status_view(obj, [], now)
    assert "Progressing (WaitingForLabels)" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("accuracy"))
    assert "waiting for labels: 320 of 1,000 needed, ~40/min, about 17 min" in row


@settings(max_examples=60, deadline=None)
@given(
    delay_s=st.sampled_from([0, 30, 90, 300]),
    verdicts=st.lists(st.sampled_from(["pass", "wait", "nodata", "error"]), min_size=1, max_size=80),
)
def test_whatever_the_labels_say_no_step_outlives_its_bound_and_promotion_needs_a_late_enough_pass(
    delay_s: int, verdicts: list[str]
) -> None:
    body = {**LABELS, "labelDelay": f"{delay_s}s", "onError": "Wait"}
    seq = iter(verdicts)

    def judge(name: str, sim: Simulator) -> Judgement:
        kind = next(seq, verdicts[-1])
        evidence = Evidence(candidate_value=0.1, incumbent_value=0.1, candidate_samples=100, incumbent_samples=100)
        if kind == "pass":
            return Judgement(Verdict.PASS, "not worse", evidence)
        if kind == "wait":
            return Judgement(
                Verdict.INCONCLUSIVE, "not yet", evidence.model_copy(update={"samples_needed": 5}), Cause.INSUFFICIENT
            )
        cause = Cause.NO_DATA if kind == "nodata" else Cause.ERROR
        return Judgement(Verdict.INCONCLUSIVE, kind, cause=cause)

    sim = Simulator(
        spec(body, analysis={"interval": "30s", "progressDeadline": "10m", "inconclusiveLimit": 1000}), judge=judge
    )
    bound = timedelta(minutes=10, seconds=delay_s)
    step_entered = sim.clock.now()
    step = None
    for _ in range(2000):
        out = sim.reconcile()
        if sim.status.current_step != step:
            step, step_entered = sim.status.current_step, sim.clock.now()
        # A step never outlives progressDeadline + labelDelay (plus one wake-up's slack).
        assert sim.clock.now() - step_entered <= bound + timedelta(seconds=31)
        if sim.status.phase is Phase.PROMOTED:
            last = sim.status.guardrails[0]
            assert last.verdict is Verdict.PASS
            assert last.last_evaluated is not None
            assert last.last_evaluated - step_entered >= timedelta(minutes=1, seconds=delay_s)
            return
        if sim.status.phase is Phase.ROLLED_BACK or out.requeue_after is None:
            return
        sim.clock.advance(out.requeue_after)
    raise AssertionError("no verdict")
