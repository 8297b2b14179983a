"""The CLI's text views: a snapshot of `status`, and the verdicts `wait` turns into exit codes."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.cli.render import list_rows, progress_bar, status_view
from controller.cli.waiting import Verdict, verdict_of

SNAPSHOTS = Path(__file__).parent / "snapshots"
NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def rollout(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {
            "name": "fraud-scorer",
            "namespace": "payments",
            "generation": 2,
            "creationTimestamp": "2026-11-27T11:40:00Z",
        },
        "spec": {
            "incumbent": {"name": "fraud-v7"},
            "candidate": {"name": "fraud-v8", "version": "8.0.1"},
            "traffic": {"gatewayAPI": {"httpRoute": "fraud-scorer"}},
            "canary": {
                "steps": [
                    {"weight": 5, "hold": "5m"},
                    {"weight": 25, "hold": "10m"},
                    {"weight": 50, "hold": "10m", "manualGate": True},
                ]
            },
            "analysis": {"interval": "1m", "progressDeadline": "30m"},
            "guardrails": [
                {
                    "name": "error-rate",
                    "metric": {"builtin": "ErrorRate"},
                    "sequential": {"significance": 0.05, "minEffect": 0.5},
                },
                {"name": "p99-latency", "metric": {"builtin": "LatencyP99"}, "relative": {"maxRatio": 1.2}},
            ],
        },
        "status": status,
    }


PROGRESSING = {
    "observedGeneration": 2,
    "phase": "Progressing",
    "reason": "StepAdvanced",
    "message": "step 2/3: 25% to fraud-v8",
    "incumbent": {"name": "fraud-v7"},
    "candidate": {"name": "fraud-v8", "version": "8.0.1"},
    "candidateHash": "abc",
    "currentStep": 1,
    "totalSteps": 3,
    "stepDisplay": "2/3",
    "rolloutStarted": "2026-11-27T11:45:00Z",
    "stepStarted": "2026-11-27T11:55:00Z",
    "lastAnalysis": "2026-11-27T11:59:30Z",
    "weights": {"incumbent": 75, "candidate": 25},
    "guardrails": [
        {
            "name": "error-rate",
            "verdict": "Inconclusive",
            "message": "not yet conclusive",
            "evidence": {
                "candidateValue": 0.004,
                "incumbentValue": 0.003,
                "candidateSamples": 900,
                "incumbentSamples": 12000,
                "bound": "difference < 0.0015",
                "samplesNeeded": 2100,
            },
        },
        {
            "name": "p99-latency",
            "verdict": "Pass",
            "message": "candidate 0.21 vs incumbent 0.2 within bounds",
            "evidence": {
                "candidateValue": 0.21,
                "incumbentValue": 0.2,
                "candidateSamples": 900,
                "incumbentSamples": 12000,
                "bound": "ratio <= 1.2",
            },
        },
    ],
    "history": [
        {"time": "2026-11-27T11:45:00Z", "step": 0, "action": "start", "reason": "RolloutStarted"},
        {
            "time": "2026-11-27T11:55:00Z",
            "step": 1,
            "action": "advance",
            "reason": "StepAdvanced",
            "message": "step 2/3: 25% to fraud-v8",
        },
    ],
    "conditions": [
        {
            "type": "Reconciling",
            "status": "True",
            "reason": "StepAdvanced",
            "message": "",
            "lastTransitionTime": "2026-11-27T11:45:00Z",
        }
    ],
}
EVENTS = [
    {
        "type": "Normal",
        "reason": "RolloutStarted",
        "message": "rolling out fraud-v8 against fraud-v7",
        "count": 1,
        "time": datetime(2026, 11, 27, 11, 45, tzinfo=UTC),
    },
    {
        "type": "Warning",
        "reason": "GuardrailInconclusive",
        "message": "p99-latency: no series",
        "count": 3,
        "time": datetime(2026, 11, 27, 11, 50, tzinfo=UTC),
    },
]


def test_status_view_snapshot() -> None:
    text = status_view(rollout(**PROGRESSING), EVENTS, NOW)
    snapshot = SNAPSHOTS / "status_progressing.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.write_text(text)
    assert text == snapshot.read_text(), "run with UPDATE_SNAPSHOTS=1 after an intended change, and review the diff"
    assert "\x1b" not in text  # readable without colour


def test_list_rows_show_phase_step_and_weights() -> None:
    text = list_rows([rollout(**PROGRESSING)], NOW, wide=False, all_namespaces=True)
    assert text.splitlines()[0].split() == [
        "NAMESPACE",
        "NAME",
        "PHASE",
        "STEP",
        "INCUMBENT%",
        "CANDIDATE%",
        "INCUMBENT",
        "CANDIDATE",
        "AGE",
    ]
    assert text.splitlines()[1].split() == [
        "payments",
        "fraud-scorer",
        "Progressing",
        "2/3",
        "75",
        "25",
        "fraud-v7",
        "fraud-v8",
        "20m",
    ]


def test_progress_bar() -> None:
    assert progress_bar(0.25, width=8) == "[##------] 25%"


def with_conditions(phase: str, **conditions: str) -> dict[str, Any]:
    status = {
        **PROGRESSING,
        "phase": phase,
        "conditions": [
            {"type": t, "status": s, "reason": "X", "lastTransitionTime": "2026-11-27T11:45:00Z"}
            for t, s in conditions.items()
        ],
    }
    return rollout(**status)


@pytest.mark.parametrize(
    ("obj", "verdict"),
    [
        (with_conditions("Promoted", Ready="True"), Verdict.PROMOTED),
        (with_conditions("Promoted", Ready="False", Reconciling="True"), None),  # weights not confirmed yet
        (with_conditions("RolledBack", Stalled="True"), Verdict.ROLLED_BACK),
        (with_conditions("Paused", Reconciling="True"), Verdict.PAUSED),
        (with_conditions("Progressing", Reconciling="True"), None),
    ],
)
def test_verdicts(obj: dict[str, Any], verdict: Verdict | None) -> None:
    assert verdict_of(obj) is verdict


@pytest.mark.parametrize(
    ("reason", "verdict", "code"),
    [
        ("GuardrailFailed", Verdict.ROLLED_BACK, 1),
        ("AbortedByUser", Verdict.ROLLED_BACK, 1),
        ("ProgressDeadlineExceeded", Verdict.INCONCLUSIVE, 4),
        ("ErrorBudgetExhausted", Verdict.INCONCLUSIVE, 4),
        ("CountsWentBackwards", Verdict.INCONCLUSIVE, 4),
    ],
)
def test_a_rollback_without_evidence_has_its_own_exit_code(reason: str, verdict: Verdict, code: int) -> None:
    obj = with_conditions("RolledBack", Stalled="True")
    obj["status"]["reason"] = reason
    assert verdict_of(obj) is verdict and verdict.exit_code == code


def test_a_status_about_an_older_spec_is_no_verdict() -> None:
    obj = with_conditions("Promoted", Ready="True")
    obj["metadata"]["generation"] = 3
    assert verdict_of(obj) is None
    obj = with_conditions("RolledBack", Stalled="True")
    obj["metadata"]["annotations"] = {"modelrollout.dev/retry": "retry-abc-1"}
    assert verdict_of(obj) is None


def test_a_pause_with_a_promote_or_abort_not_yet_acted_on_is_no_verdict() -> None:
    """`promote` then `wait`: the Paused the promote ends must not exit 3."""
    for request in ("promote", "abort"):
        obj = with_conditions("Paused", Reconciling="True")
        obj["metadata"]["annotations"] = {f"modelrollout.dev/{request}": "req-1"}
        assert verdict_of(obj) is None
        obj["status"][f"handled{request.capitalize()}"] = "req-1"
        assert verdict_of(obj) is Verdict.PAUSED


def test_exit_codes() -> None:
    assert [v.exit_code for v in (Verdict.PROMOTED, Verdict.ROLLED_BACK, Verdict.PAUSED)] == [0, 1, 3]


def test_status_shows_the_error_budget_spent_and_left() -> None:
    status = {**PROGRESSING, "errorBudget": {"spent": 12.5, "left": 87.5, "nextStep": 40.2}}
    text = status_view(rollout(**status), [], NOW)
    assert "Budget:     12.5 of 100 excess bad requests spent, 87.5 left; next step may cost up to 40.2" in text


def test_status_shows_each_segmented_guardrails_worst_segments() -> None:
    obj = rollout(**PROGRESSING)
    obj["spec"]["guardrails"][0]["segmentBy"] = "region"
    error_rate = {
        "name": "error-rate",
        "verdict": "Fail",
        "message": "error-rate failed in region=eu: 3.1% vs 1.0%",
        "segments": {
            "label": "region",
            "named": ["us", "eu"],
            "judged": 3,
            "passed": 1,
            "failed": 1,
            "small": 1,
            "other": 4,
            "policy": "8 largest segments judged on their own",
            "worst": [
                {
                    "segment": "eu",
                    "verdict": "Fail",
                    "candidateValue": 0.031,
                    "incumbentValue": 0.01,
                    "candidateSamples": 2000,
                    "incumbentSamples": 20000,
                    "message": "candidate rate 0.031 is significantly above incumbent 0.01",
                }
            ],
        },
    }
    text = status_view(rollout(**{**PROGRESSING, "guardrails": [error_rate]}) | {"spec": obj["spec"]}, [], NOW)
    assert "error-rate: 3 segments by region judged: 1 pass, 1 fail, 1 small, 4 values in (other)" in text
    row = next(line for line in text.splitlines() if line.split()[1:2] == ["region=eu"])
    assert "0.031" in row and "2000/20000" in row
    # Without segments, no Segments block.
    assert "Segments" not in status_view(rollout(**PROGRESSING), [], NOW)


def test_status_shows_pending_gates_and_last_deliveries() -> None:
    obj = rollout(
        **PROGRESSING,
        gates=[
            {
                "name": "ticket", "step": 2, "candidateHash": "abc", "state": "Refused", "code": 503,
                "message": "change freeze", "since": "2026-11-27T11:58:00Z", "answered": "2026-11-27T11:59:40Z",
            }
        ],
        notifications={
            "nextSeq": 4,
            "outbox": [
                {"seq": 3, "id": "n3", "event": "StepAdvanced", "time": "2026-11-27T11:55:00Z",
                 "candidate": "fraud-v8", "step": 1, "reason": "StepAdvanced"}
            ],
            "receivers": [
                {"name": "slack", "delivered": 3, "lastId": "d-3", "lastTime": "2026-11-27T11:55:02Z", "lastCode": 200},
                {"name": "pager", "delivered": 2, "lastTime": "2026-11-27T11:59:00Z", "lastCode": 503,
                 "lastError": "HTTP 503", "failures": 4},
            ],
        },
    )  # fmt: skip
    obj["spec"]["webhooks"] = [
        {"name": "ticket", "type": "BeforeStep", "url": "https://tickets.example.com/approve"},
        {"name": "owner", "type": "BeforePromotion", "service": {"name": "approvals", "port": 8080}},
        {"name": "slack", "type": "Notification", "url": "https://hooks.slack.com/services/x", "format": "Slack"},
        {"name": "pager", "type": "Notification", "url": "https://pager.example.com/hook"},
    ]
    text = status_view(obj, [], NOW)
    section = text.split("Webhooks\n", 1)[1].split("\n\n", 1)[0]
    assert "ticket  BeforeStep" in section and "Refused for step 3: HTTP 503 20s ago, waiting since 2m" in section
    assert "owner   BeforePromotion  service/approvals:8080" in section and "not asked yet" in section
    assert "delivered d-3 4m ago, HTTP 200; 0 pending" in section
    assert "failing x4 (60s ago): HTTP 503; 1 pending" in section


def shadow_rollout(**status: Any) -> dict[str, Any]:
    obj = rollout(**status)
    obj["spec"]["shadow"] = {
        "percent": 10,
        "duration": "20m",
        "comparator": {"service": "fraud-comparator"},
        "comparison": {"predictionPath": "$.label", "equal": {}},
        "noiseFloor": {"sample": 0.1},
        "guardrails": [
            {
                "name": "agreement",
                "metric": {"builtin": "ShadowDisagreement"},
                "sequential": {"minAbsoluteEffect": 0.01},
            }
        ],
    }
    return obj


IN_SHADOW = {
    "observedGeneration": 2,
    "phase": "Progressing",
    "reason": "RolloutStarted",
    "message": "rolling out fraud-v8 against fraud-v7",
    "incumbent": {"name": "fraud-v7"},
    "candidate": {"name": "fraud-v8", "version": "8.0.1"},
    "currentStep": 0,
    "totalSteps": 3,
    "stepDisplay": "shadow",
    "stepStarted": "2026-11-27T11:50:00Z",
    "lastAnalysis": "2026-11-27T11:59:30Z",
    "weights": {"incumbent": 100, "candidate": 0},
    "shadow": {
        "state": "Mirroring",
        "started": "2026-11-27T11:50:00Z",
        "mirrorPercent": 10,
        "comparisons": 612,
        "disagreements": 19,
        "rate": 0.031,
        "noiseFloorRate": 0.028,
        "samplesNeeded": 400,
    },
    "guardrails": [
        {
            "name": "agreement",
            "verdict": "Inconclusive",
            "message": "not yet conclusive",
            "evidence": {"candidateValue": 0.031, "incumbentValue": 0.028, "candidateSamples": 612},
        }
    ],
}


def test_status_shows_the_shadow_phase_its_agreement_and_what_it_waits_for() -> None:
    text = status_view(shadow_rollout(**IN_SHADOW), [], NOW)
    assert "Shadow:     Mirroring: 10% mirrored to comparator fraud-comparator:8080 (read back 10%)" in text
    assert "the candidate answers no user" in text
    assert "612 compared, 19 disagree (3.10%); incumbent vs itself 2.80%; needs 400 more comparisons" in text
    assert "Guardrails (shadow: judged on the mirrored requests)" in text and "agreement" in text
    assert "error-rate" not in text.split("Guardrails")[1]  # the canary's come after shadow
    assert "then step 1 at 5% (shadow ends)" in text and "shadow's duration ends in 10m" in text
    steps = text.split("Steps")[1]
    assert ">  shadow  0% (10% mirrored)  20m   Mirroring" in steps


def test_status_after_a_failed_shadow_keeps_its_evidence() -> None:
    failed = {
        **IN_SHADOW,
        "phase": "RolledBack",
        "reason": "GuardrailFailed",
        "shadow": {**IN_SHADOW["shadow"], "state": "Failed", "mirrorPercent": 0, "rate": 0.15, "disagreements": 92},
    }
    text = status_view(shadow_rollout(**failed), [], NOW)
    assert "Shadow:     Failed: 10% mirrored to comparator fraud-comparator:8080 (read back 0%)" in text
    assert "92 disagree (15.00%)" in text and "the candidate answers no user" not in text


def test_status_names_the_comparator_of_record_not_the_specs() -> None:
    """Review finding 16: the mirror points where status says, whatever spec.shadow says now."""
    moved = {**IN_SHADOW, "shadow": {**IN_SHADOW["shadow"], "comparator": {"service": "old-comparator", "port": 9000}}}
    text = status_view(shadow_rollout(**moved), [], NOW)
    assert "mirrored to comparator old-comparator:9000 (read back 10%)" in text
    skipped = {**moved, "shadow": {**moved["shadow"], "state": "Skipped"}}
    obj = shadow_rollout(**skipped)
    del obj["spec"]["shadow"]  # taken out mid-shadow: the shadow of record is still shown
    text = status_view(obj, [], NOW)
    assert "Shadow:     Skipped: mirrored to comparator old-comparator:9000" in text
