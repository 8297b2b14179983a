"""Label guardrails end to end: accuracy on delayed ground truth (docs/labels.md).

Given the world of e2e/conftest.py, where a labelling process (e2e/labeller.py) posts the ground
truth of each prediction to the model server that made it LABEL_DELAY seconds later: a candidate
that matches the incumbent on errors, latency and score distribution but is less accurate is
held at its first step until its labels arrive, then rolled back by them; a more accurate one is
promoted once its labels confirm it, its last step held until that step's predictions had the
label delay.
"""

from __future__ import annotations

from datetime import datetime

from e2e.harness import LABEL_DELAY, Stack
from e2e.test_scenarios import applied_weights, event_reasons, guardrails, route_weights, verdict


def _labelled(stack: Stack, model: str) -> dict[str, float]:
    result = stack.prometheus.query(f'sum by (outcome) (model_feedback_total{{model="{model}"}})')
    return {r["metric"]["outcome"]: float(r["value"][1]) for r in result}


def test_a_less_accurate_candidate_is_held_for_its_labels_then_rolled_back_by_them(stack: Stack) -> None:
    obj = verdict(stack, "labels-worse")
    scenario = stack.scenarios["labels-worse"]

    status = obj["status"]
    assert status["phase"] == "RolledBack" and status["reason"] == "GuardrailFailed", status
    assert status["failedCandidates"][-1]["guardrail"] == "accuracy"
    verdicts = {name: g["verdict"] for name, g in guardrails(obj).items()}
    assert verdicts["accuracy"] == "Fail"
    # Equal on the proxies: no other guardrail found anything wrong.
    assert all(v != "Fail" for name, v in verdicts.items() if name != "accuracy"), verdicts
    assert applied_weights(scenario) == [0, 50, 0]
    assert route_weights(stack, "labels-worse") == {scenario.incumbent: 100, scenario.candidate: 0}
    reasons = event_reasons(stack, "labels-worse")
    # Held past its 5s hold for the labels, then rolled back by them.
    assert "WaitingForLabels" in reasons and reasons.index("WaitingForLabels") < reasons.index("RolledBack")
    # The labels were counted for the model that predicted: the candidate's were wrong far more often.
    cand, inc = _labelled(stack, scenario.candidate), _labelled(stack, scenario.incumbent)
    assert cand["incorrect"] / sum(cand.values()) > 2 * inc["incorrect"] / sum(inc.values()), (cand, inc)
    assert stack.servers[scenario.candidate].codes.keys() == {200}
    assert scenario.result["candidate_accuracy"] < scenario.result["incumbent_accuracy"]


def test_a_more_accurate_candidate_is_promoted_once_its_labels_confirm_it(stack: Stack) -> None:
    obj = verdict(stack, "labels-better")
    scenario = stack.scenarios["labels-better"]

    status = obj["status"]
    assert status["phase"] == "Promoted" and status["reason"] == "Promoted", status
    assert {name: g["verdict"] for name, g in guardrails(obj).items()}["accuracy"] == "Pass"
    assert guardrails(obj)["accuracy"]["evidence"]["candidateSamples"] >= 100
    assert applied_weights(scenario) == [0, 50, 80, 100]
    assert "WaitingForLabels" in event_reasons(stack, "labels-better")
    # The last step (hold 5s) promoted only once its own predictions had the label delay.
    entered = next(d["time"] for d in status["history"] if d["action"] == "advance" and d["step"] == 1)
    promoted = next(d["time"] for d in status["history"] if d["action"] == "promote")
    held = (datetime.fromisoformat(promoted) - datetime.fromisoformat(entered)).total_seconds()
    assert held >= 5 + LABEL_DELAY, status["history"]
