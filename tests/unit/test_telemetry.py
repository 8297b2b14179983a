"""The controller's per-rollout series: what they say, that they stay bounded, and that they go.

And the status budget: the status is in every watch event and cache entry of thousands of
rollouts, so the evidence behind the charts lives in these series, and the status itself is
checked against a size budget at its fullest.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from controller.api.models import (
    MAX_FAILED_CANDIDATES,
    MAX_GUARDRAILS,
    MAX_HISTORY,
    Condition,
    Decision,
    Evidence,
    FailedCandidate,
    GuardrailStatus,
    ModelRef,
    ModelRolloutStatus,
    Phase,
    Verdict,
    Weights,
)
from controller.api.reasons import Reason
from controller.telemetry import Telemetry

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
# The most a status may weigh, as the API server stores it (JSON), at its fullest below: every
# bounded list full, every string at its maximum (about 80 KB today; etcd's object limit is 1.5 MB,
# and a watch of thousands of rollouts carries each one). The numbers behind the dashboard's
# charts add at most NUMBERS_BUDGET_BYTES per guardrail; their history is in Prometheus, not here.
STATUS_BUDGET_BYTES = 96 * 1024
NUMBERS_BUDGET_BYTES = 160


def sequential_evidence() -> Evidence:
    return Evidence(
        candidate_value=0.0123,
        incumbent_value=0.0101,
        candidate_samples=12000,
        incumbent_samples=48000,
        bound="rate ratio < 1.5 or rate < 0.05 to pass, > 1 to fail (significance 0.01)",
        statistic="ratio 1.218; log e-value worse 0.52 / 4.61, not worse by 1.5x 2.10 / 3.69",
        samples_needed=8000,
        worse=0.52,
        worse_threshold=4.61,
        not_worse=2.1,
        not_worse_threshold=3.69,
    )


def status(phase: Phase, guardrails: int = 2, message: str = "", **extra: object) -> ModelRolloutStatus:
    return ModelRolloutStatus(
        phase=phase,
        weights=Weights(incumbent=80, candidate=20),
        last_analysis=NOW,
        guardrails=[
            GuardrailStatus(
                name=f"g{i}",
                verdict=Verdict.INCONCLUSIVE,
                message=message,
                evidence=sequential_evidence(),
                consecutive_inconclusive=3,
            )
            for i in range(guardrails)
        ],
        **extra,
    )


def samples(t: Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(t.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def of(t: Telemetry, metric: str, /, **labels: str) -> float | None:
    return samples(t).get((metric, tuple(sorted(labels.items()))))


def per_rollout(t: Telemetry, name: str = "r") -> list[str]:
    return sorted({n for (n, labels) in samples(t) if ("name", name) in labels})


def test_an_in_flight_rollout_exports_the_evidence_of_each_guardrail() -> None:
    t = Telemetry()
    t.observe_rollout("ns", "r", status(Phase.PROGRESSING), interval=30)
    g = {"namespace": "ns", "name": "r", "guardrail": "g1"}
    assert of(t, "modelrollout_guardrail_observed", **g, variant="candidate") == 0.0123
    assert of(t, "modelrollout_guardrail_observed", **g, variant="incumbent") == 0.0101
    assert of(t, "modelrollout_guardrail_samples", **g, variant="incumbent") == 48000
    assert of(t, "modelrollout_guardrail_samples_needed", **g) == 8000
    assert of(t, "modelrollout_guardrail_evidence", **g, test="worse") == 0.52
    assert of(t, "modelrollout_guardrail_evidence_threshold", **g, test="not_worse") == 3.69
    assert of(t, "modelrollout_guardrail_inconclusive_streak", **g) == 3
    assert of(t, "modelrollout_guardrail_limit", **g) is None  # a sequential rule has no limit in value units
    assert of(t, "modelrollout_rollout_phase", namespace="ns", name="r", phase="Progressing") == 1
    assert of(t, "modelrollout_rollout_last_analysis_seconds", namespace="ns", name="r") == NOW.timestamp()
    assert of(t, "modelrollout_rollout_analysis_interval_seconds", namespace="ns", name="r") == 30


def test_a_pause_for_a_human_says_since_when_and_why_and_ends_with_the_pause() -> None:
    t = Telemetry()
    since = NOW - timedelta(minutes=5)
    t.observe_rollout("ns", "r", status(Phase.PAUSED, paused_since=since, pause_reason=Reason.AWAITING_PROMOTION))
    labels = {"namespace": "ns", "name": "r", "reason": "AwaitingPromotion"}
    assert of(t, "modelrollout_rollout_paused_since_seconds", **labels) == since.timestamp()
    t.observe_rollout("ns", "r", status(Phase.PROGRESSING))
    assert of(t, "modelrollout_rollout_paused_since_seconds", **labels) is None
    assert of(t, "modelrollout_rollout_phase", namespace="ns", name="r", phase="Paused") is None


def test_a_finished_rollout_keeps_only_its_phase_and_conditions_and_a_deleted_one_nothing() -> None:
    t = Telemetry()
    t.observe_rollout("ns", "r", status(Phase.PROGRESSING, guardrails=MAX_GUARDRAILS), interval=30)
    stalled = Condition(type="Stalled", status="True", reason="GuardrailFailed", last_transition_time=NOW)
    t.observe_rollout("ns", "r", status(Phase.ROLLED_BACK, conditions=[stalled]))
    assert [
        n
        for n in per_rollout(t)
        if n.startswith("modelrollout_guardrail_") and "passing" not in n and n != "modelrollout_guardrail_value"
    ] == []
    assert of(t, "modelrollout_rollout_condition", namespace="ns", name="r", condition="Stalled") == 1
    assert of(t, "modelrollout_rollout_last_analysis_seconds", namespace="ns", name="r") is None
    t.forget_rollout("ns", "r")
    assert per_rollout(t) == []


def test_the_series_of_one_rollout_are_bounded() -> None:
    t = Telemetry()
    paused = status(Phase.PAUSED, guardrails=MAX_GUARDRAILS, paused_since=NOW, pause_reason=Reason.AWAITING_PROMOTION)
    t.observe_rollout("ns", "r", paused, interval=30)
    count = sum(1 for (_, labels) in samples(t) if ("name", "r") in labels)
    # weight, phase, pause, conditions (<= 8) + per guardrail: value, passing and 11 evidence series
    assert count <= 3 + 8 + MAX_GUARDRAILS * 13


def test_the_status_at_its_fullest_stays_within_its_budget() -> None:
    longest = "x" * 1024
    model = ModelRef(name="m" * 253, version="v" * 128)
    full = status(
        Phase.PROGRESSING,
        guardrails=MAX_GUARDRAILS,
        message=longest,
        incumbent=model,
        candidate=model,
        history=[
            Decision(time=NOW, step=i, action="a" * 64, reason="r" * 128, message=longest) for i in range(MAX_HISTORY)
        ],
        failed_candidates=[
            FailedCandidate(model=model, time=NOW, reason="r" * 128, message=longest, threshold="t" * 256)
            for _ in range(MAX_FAILED_CANDIDATES)
        ],
        conditions=[
            Condition(type=f"C{i}", status="True", reason="R" * 64, message=longest, last_transition_time=NOW)
            for i in range(8)
        ],
    )
    size = len(json.dumps(full.wire()))
    assert size <= STATUS_BUDGET_BYTES, f"status of {size} bytes"
    numbers = {"limit": 1.0, "worse": 0.52, "worse_threshold": 4.61, "not_worse": 2.1, "not_worse_threshold": 3.69}
    plain = sequential_evidence().model_copy(update={k: None for k in numbers})
    extra = len(json.dumps(sequential_evidence().model_copy(update=numbers).wire())) - len(json.dumps(plain.wire()))
    assert extra <= NUMBERS_BUDGET_BYTES


def test_rollouts_by_phase_follow_each_move_and_start_at_zero() -> None:
    """modelrollout_rollouts{phase} is kept by moving one rollout between counts per reconcile
    (counting every rollout each time was O(rollouts) under the workers' lock)."""
    t = Telemetry()

    def by_phase() -> dict[str, float]:
        return {
            p.value: t.registry.get_sample_value("modelrollout_rollouts", {"phase": p.value}) or 0.0 for p in Phase
        } | {
            "exported": sum(
                t.registry.get_sample_value("modelrollout_rollouts", {"phase": p.value}) is not None for p in Phase
            )
        }

    assert by_phase() == dict.fromkeys((p.value for p in Phase), 0.0) | {"exported": len(Phase)}
    for name, phase in (("a", Phase.PROGRESSING), ("b", Phase.PROGRESSING), ("c", Phase.PROMOTED)):
        t.observe_rollout("ns", name, ModelRolloutStatus(phase=phase))
    t.observe_rollout("ns", "a", ModelRolloutStatus(phase=Phase.PROGRESSING))  # no move: counted once
    t.observe_rollout("ns", "b", ModelRolloutStatus(phase=Phase.ROLLED_BACK))
    t.forget_rollout("ns", "c")
    t.forget_rollout("ns", "never-seen")
    counts = by_phase()
    assert counts[Phase.PROGRESSING.value] == 1
    assert counts[Phase.ROLLED_BACK.value] == 1
    assert counts[Phase.PROMOTED.value] == 0
    assert sum(v for k, v in counts.items() if k != "exported") == 2
