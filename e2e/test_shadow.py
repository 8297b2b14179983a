"""End to end, shadow before canary (docs/shadow.md): the controller adds the RequestMirror filter
to the real HTTPRoute, the stand-in gateway copies live requests to the comparator (its own
process), the comparator asks both real model servers and counts their agreement, Prometheus
scrapes it, and the controller judges ShadowDisagreement on it.

Given the world of e2e/conftest.py, each test waits for its scenario's verdict and checks it
against what the data plane saw: the route's writes in the API server's audit log, each model
server's request log (users' requests apart from the comparator's calls), and the comparator's
own request log against its counters.
"""

from __future__ import annotations

import re
import time
from typing import Any

from e2e.harness import Scenario, Stack
from e2e.test_scenarios import applied_weights, cli, event_reasons, guardrails, route_weights, verdict
from tests.support.audit import writes
from tests.support.comparator_log import incumbent_calls, worst_excess
from tests.support.controller import metric_value


def mirror_writes(stack: Stack, route: str) -> list[str]:
    """The route's writes that touched its filters, in order: "add" or "remove" of our mirror."""
    assert stack.plane.audit_log is not None
    found = []
    for w in writes(stack.plane.audit_log, namespace=stack.namespace, resource="httproutes"):
        if w.name != route or not isinstance(w.request, list) or w.code >= 300:
            continue
        for op in w.request:
            if "/filters" in op.get("path", "") and op["op"] in ("add", "remove", "replace"):
                found.append(op["op"])
    return found


def counters(scenario: Scenario) -> dict[tuple[str, str], float]:
    """The comparator's comparison counters as it exports them: (variant, outcome) -> count."""
    assert scenario.comparator is not None
    out: dict[tuple[str, str], float] = {}
    for line in scenario.comparator.metrics().splitlines():
        if line.startswith("modelrollout_shadow_comparisons_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            out[(labels["variant"], labels["outcome"])] = float(line.rsplit(" ", 1)[1])
    return out


def metric(scenario: Scenario, name: str, **labels: str) -> float:
    assert scenario.comparator is not None
    return metric_value(scenario.comparator.metrics(), name, labels)


def assert_log_equals_counters(scenario: Scenario) -> list[dict[str, Any]]:
    """Nothing lost, nothing counted twice: every request the comparator received is one log line,
    and its outcomes add up to its counters."""
    assert scenario.comparator is not None
    deadline = time.monotonic() + 10
    while True:  # a request in flight is in neither yet: wait for both to agree
        entries = scenario.comparator.entries()
        received = metric(scenario, "modelrollout_shadow_received_total")
        if len(entries) == received or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(entries) == received > 0
    logged: dict[tuple[str, str], int] = {}
    for e in entries:
        if e["outcome"].startswith("dropped:"):
            continue
        logged[("candidate", e["outcome"])] = logged.get(("candidate", e["outcome"]), 0) + 1
        if e.get("noise"):
            logged[("incumbent", e["noise"])] = logged.get(("incumbent", e["noise"]), 0) + 1
    exported = {k: v for k, v in counters(scenario).items() if v}
    assert exported == logged, (exported, logged)
    dropped = sum(1 for e in entries if e["outcome"].startswith("dropped:"))
    assert metric(scenario, "modelrollout_shadow_dropped_total") == dropped
    return entries


def test_a_candidate_that_disagrees_is_rolled_back_in_shadow_having_answered_no_user(stack: Stack) -> None:
    obj = verdict(stack, "shadow")
    scenario = stack.scenarios["shadow"]
    status = obj["status"]
    assert status["phase"] == "RolledBack" and status["reason"] == "GuardrailFailed", status
    failed = status["failedCandidates"][-1]
    assert failed["guardrail"] == "agreement" and failed["observed"] > 0.07, failed
    assert "in shadow, having served 0 users" in failed["message"]
    assert status["shadow"]["state"] == "Failed" and status["shadow"]["comparisons"] >= 150, status["shadow"]
    # 0 users: the weight never left 0 at the gateway, and the candidate's server saw no user's request,
    # only the comparator's calls.
    assert applied_weights(scenario) == [0]
    assert route_weights(stack, "shadow") == {"shadow-v1": 100, "shadow-v2": 0}
    candidate = stack.servers["shadow-v2"]
    assert candidate.served() == 0 and candidate.shadow_served() > 0
    assert scenario.gateway is not None and scenario.gateway.forwarded.get("shadow-v2", 0) == 0
    # The same errors, latency and score distribution: only the comparison shows it.
    assert guardrails(obj)["shadow-errors"]["verdict"] != "Fail"
    # The mirror filter appeared on the real HTTPRoute and went with the verdict.
    assert mirror_writes(stack, "shadow") == ["add", "remove"]
    assert scenario.gateway.mirror_timeline[-1][1] == {}
    assert "RolledBack" in event_reasons(stack, "shadow")
    # What the comparator counted is what it received.
    entries = assert_log_equals_counters(scenario)
    # The incumbent's extra load stayed under maxIncumbentRPS (8/s, a burst of 8): in no interval of
    # the comparator's own clock more calls than that (no elapsed time to grow with the machine).
    assert incumbent_calls(entries) > 0 and worst_excess(entries, rate=8, burst=8) <= 1e-6
    shown = cli(stack, "status", "shadow")
    assert shown.returncode == 0 and "shadow" in shown.stdout.lower() and "disagree" in shown.stdout.lower(), shown


def test_the_better_candidate_passes_shadow_then_canaries(stack: Stack) -> None:
    obj = verdict(stack, "better")
    scenario = stack.scenarios["better"]
    status = obj["status"]
    assert status["phase"] == "Promoted", status
    shadow = status["shadow"]
    assert shadow["state"] == "Passed" and shadow["rate"] <= 0.10 and shadow["comparisons"] >= 150, shadow
    assert applied_weights(scenario) == [0, 20, 50, 100]
    assert mirror_writes(stack, "better") == ["add", "remove"]
    assert "ShadowPassed" in event_reasons(stack, "better")
    # No user reached the candidate before the gateway had step 1's weight: the gateway sent it
    # nothing under any route generation that gave it 0 (shadow's), and the candidate's server saw
    # no user request the gateway did not send it (its count read first: both only grow).
    gateway = scenario.gateway
    assert gateway is not None
    served = stack.servers["better-v2"].served()
    generations = gateway.generations()
    assert generations[0][0].get("better-v2") == 0  # shadow: the route's first weights
    assert all(sent.get("better-v2", 0) == 0 for weights, sent in generations if weights.get("better-v2", 0) == 0)
    assert 0 < served <= sum(sent.get("better-v2", 0) for _, sent in generations)
    assert_log_equals_counters(scenario)


def test_comparator_down_is_inconclusive_never_a_pass(stack: Stack) -> None:
    obj = verdict(stack, "shadow-down")
    status = obj["status"]
    assert status["phase"] == "RolledBack", status
    assert status["reason"] in ("InconclusiveLimitExceeded", "ProgressDeadlineExceeded"), status
    failed = status["failedCandidates"][-1]
    assert failed["verdict"] == "Inconclusive" and status["shadow"]["state"] == "Inconclusive", status
    assert stack.servers["shadow-down-v2"].served() == 0
    assert route_weights(stack, "shadow-down") == {"shadow-down-v1": 100, "shadow-down-v2": 0}
    assert mirror_writes(stack, "shadow-down") == ["add", "remove"]
