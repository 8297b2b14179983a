"""Evidence checkpoints (controller/evidence.py): which analyses may stay unwritten, and when
what was kept is dropped. Pure logic; the controller with a checkpoint on a real control plane
is tests/integration/test_evidence_checkpoint.py."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.evidence import EvidenceCheckpoints, decisions

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
KEY = ("ns", "demo")


def recorded(at: datetime = T0) -> dict[str, Any]:
    return {
        "phase": "Progressing",
        "reason": "StepStarted",
        "currentStep": 0,
        "lastAnalysis": at.isoformat(),
        "errorBudget": {"spent": 1.0, "left": 99.0},
        "guardrails": [
            {
                "name": "error-rate",
                "verdict": "Pass",
                "message": "0.010 <= 0.05 (120 samples)",
                "evidence": {"candidateValue": 0.01, "candidateSamples": 120.0},
                "failures": 0,
                "consecutiveInconclusive": 0,
                "lastEvaluated": at.isoformat(),
            }
        ],
    }


def later(status: dict[str, Any], at: datetime, **guardrail: Any) -> dict[str, Any]:
    """The status after one more analysis at `at` that changed only the evidence (and `guardrail`)."""
    out = copy.deepcopy(status)
    out["lastAnalysis"] = out["guardrails"][0]["lastEvaluated"] = at.isoformat()
    out["errorBudget"] = {"spent": 2.5, "left": 97.5}
    out["guardrails"][0].update(message="0.012 <= 0.05 (180 samples)", evidence={"candidateSamples": 180.0})
    out["guardrails"][0].update(guardrail)
    return out


def test_an_analysis_that_changes_only_evidence_is_kept_within_the_period() -> None:
    checkpoints = EvidenceCheckpoints(timedelta(minutes=5))
    now = T0 + timedelta(seconds=30)
    assert checkpoints.keep(KEY, "u1", recorded(), later(recorded(), now), now)
    kept = checkpoints.current(KEY, "u1", recorded())
    assert kept is not None and kept.last_analysis == now and kept.guardrails[0].evidence.candidate_samples == 180
    assert len(checkpoints) == 1


def test_every_decision_is_written() -> None:
    checkpoints = EvidenceCheckpoints(timedelta(minutes=5))
    now = T0 + timedelta(seconds=30)
    changes = [
        {"verdict": "Fail", "failures": 1},
        {"verdict": "Inconclusive"},
        {"consecutiveInconclusive": 1},
    ]
    for change in changes:
        assert not checkpoints.keep(KEY, "u1", recorded(), later(recorded(), now, **change), now), change
    moved = later(recorded(), now)
    moved.update(currentStep=1, reason="StepAdvanced")
    assert not checkpoints.keep(KEY, "u1", recorded(), moved, now)
    assert len(checkpoints) == 0


def test_the_period_counts_from_the_analysis_of_record() -> None:
    checkpoints = EvidenceCheckpoints(timedelta(minutes=5))
    at_period = T0 + timedelta(minutes=5)
    assert not checkpoints.keep(KEY, "u1", recorded(), later(recorded(), at_period), at_period)
    assert checkpoints.keep(KEY, "u1", recorded(), later(recorded(), at_period), at_period - timedelta(seconds=1))


def test_nothing_is_kept_without_a_period_or_before_the_steps_first_analysis_is_of_record() -> None:
    now = T0 + timedelta(seconds=30)
    assert not EvidenceCheckpoints(timedelta(0)).keep(KEY, "u1", recorded(), later(recorded(), now), now)
    first = {k: v for k, v in recorded().items() if k != "lastAnalysis"}
    assert not EvidenceCheckpoints(timedelta(minutes=5)).keep(KEY, "u1", first, later(recorded(), now), now)


def test_what_was_kept_is_dropped_once_another_status_is_of_record_or_the_uid_changed() -> None:
    checkpoints = EvidenceCheckpoints(timedelta(minutes=5))
    now = T0 + timedelta(seconds=30)
    assert checkpoints.keep(KEY, "u1", recorded(), later(recorded(), now), now)
    assert checkpoints.current(KEY, "u2", recorded()) is None  # deleted and created again
    assert len(checkpoints) == 0
    assert checkpoints.keep(KEY, "u1", recorded(), later(recorded(), now), now)
    other = recorded()
    other["reason"] = "WrittenByAnotherShard"
    assert checkpoints.current(KEY, "u1", other) is None
    assert len(checkpoints) == 0


def test_the_same_status_in_another_key_order_is_the_same_status_of_record() -> None:
    checkpoints = EvidenceCheckpoints(timedelta(minutes=5))
    now = T0 + timedelta(seconds=30)
    assert checkpoints.keep(KEY, "u1", recorded(), later(recorded(), now), now)
    reordered = dict(reversed(list(recorded().items())))
    assert checkpoints.current(KEY, "u1", reordered) is not None


def test_decisions_leave_out_only_evidence() -> None:
    projected = decisions(recorded())
    assert "lastAnalysis" not in projected and "errorBudget" not in projected
    assert projected["guardrails"] == [
        {"name": "error-rate", "verdict": "Pass", "failures": 0, "consecutiveInconclusive": 0}
    ]
    assert projected["phase"] == "Progressing" and projected["currentStep"] == 0


def test_an_unchanged_status_is_not_kept() -> None:
    checkpoints = EvidenceCheckpoints(timedelta(minutes=5))
    assert not checkpoints.keep(KEY, "u1", recorded(), recorded(), T0 + timedelta(seconds=30))
    assert len(checkpoints) == 0


def test_label_progress_and_the_shadows_numbers_are_evidence_but_when_the_wait_began_is_not() -> None:
    status = recorded()
    status["guardrails"][0]["labels"] = {
        "have": 10.0, "need": 400.0, "perMinute": 3.0, "since": T0.isoformat(), "sinceHave": 2.0,
    }  # fmt: skip
    status["shadow"] = {"state": "Comparing", "started": T0.isoformat(), "comparisons": 50.0, "rate": 0.1}
    moved = copy.deepcopy(status)
    moved["guardrails"][0]["labels"].update(have=30.0, perMinute=4.0, expectedAt=T0.isoformat())
    moved["shadow"].update(comparisons=80.0, rate=0.12, message="disagreement 12% on 80 comparisons")
    assert decisions(moved) == decisions(status)
    restarted = copy.deepcopy(moved)
    restarted["guardrails"][0]["labels"]["since"] = (T0 + timedelta(minutes=1)).isoformat()
    assert decisions(restarted) != decisions(status)
