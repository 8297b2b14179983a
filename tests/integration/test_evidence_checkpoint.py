"""`--evidence-checkpoint`: analyses that decide nothing stay in the controller's memory, and a
decision, the period, or a restart loses nothing that decides (controller/evidence.py).

Against the real control plane, Prometheus and HTTP, with the controller as its own process.
What was written is read from the API server (the object, and its audit log), what the
controller holds from its own /metrics. Nothing here counts on how fast the machine is: each
wait is for something to have happened, each assertion holds however far apart analyses are.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from controller.api import PLURAL
from controller.evidence import decisions
from tests.support.audit import writes
from tests.support.controller import ControllerProcess
from tests.support.world import World, phase, rollout_body, unique

pytestmark = pytest.mark.usefixtures("gateway_api")

ANALYSIS = {"interval": "1s", "window": "10s", "progressDeadline": "1h", "inconclusiveLimit": 50}


def _wait_unwritten(proc: ControllerProcess, at_least: float, world: World, timeout: float = 120) -> None:
    """Until `proc` has kept `at_least` analyses unwritten since it started."""
    world.wait(lambda _: proc.metric("modelrollout_analyses_unwritten_total") >= at_least, timeout=timeout)


def _in_memory_analysis(proc: ControllerProcess, world: World) -> float:
    """The rollout's latest analysis as the controller holds it (its /metrics), kept or written."""
    labels = {"namespace": world.namespace, "name": "demo"}
    return proc.metric("modelrollout_rollout_last_analysis_seconds", labels)


def _passing(obj: dict[str, Any]) -> bool:
    guardrails = obj.get("status", {}).get("guardrails") or [{}]
    return guardrails[0].get("verdict") == "Pass"


def _last_analysis(obj: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(obj["status"]["lastAnalysis"])


def _status_writes(world: World) -> list[dict[str, Any]]:
    """The statuses the API server accepted for the rollout, in order (from its audit log)."""
    assert world.plane.audit_log is not None
    return [
        w.request["status"]
        for w in writes(world.plane.audit_log, namespace=world.namespace, resource=PLURAL)
        if w.subresource == "status" and w.code < 300 and isinstance(w.request, dict) and "status" in w.request
    ]


def test_kept_analyses_are_written_once_the_period_has_passed_and_with_the_next_decision(
    world: World, controller_process: Any
) -> None:
    controller = controller_process.start("c1", "--namespace", world.namespace, "--evidence-checkpoint", "3s")
    steps = {"steps": [{"weight": 20, "hold": "30m"}, {"weight": 50, "hold": "30m"}]}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps, analysis=ANALYSIS))
    first = world.wait(_passing)
    # The analysis of record moves on (the period passed), and some were kept meanwhile.
    second = world.wait(lambda o: _passing(o) and _last_analysis(o) != _last_analysis(first))
    assert second["status"]["guardrails"][0]["evidence"]["candidateSamples"] >= 5
    _wait_unwritten(controller, 1, world)

    # A decision is written at once, with the evidence that made it.
    world.traffic.set(world.candidate, ok=10, errors=10)
    obj = world.wait(phase("RolledBack"))
    failed = obj["status"]["failedCandidates"][-1]
    assert failed["guardrail"] == "error-rate" and failed["observed"] > 0.05
    assert world.candidate_writes() == [20, 0]

    # Two analyses of record that decide the same are the period apart; only decisions come sooner.
    written = _status_writes(world)
    same = [
        (a, b)
        for a, b in pairwise(written)
        if a.get("lastAnalysis") and b.get("lastAnalysis") and decisions(a) == decisions(b)
    ]
    assert same, "no analysis of record was written for the period alone"
    for a, b in same:
        assert _last_analysis({"status": b}) - _last_analysis({"status": a}) >= timedelta(seconds=3), (a, b)


def test_a_controller_killed_with_analyses_kept_in_memory_resumes_the_same_rollout(
    world: World, controller_process: Any
) -> None:
    lease = unique("lease")
    args = ("--namespace", world.namespace, "--evidence-checkpoint", "1h")
    first = controller_process.start("victim", *args, lease_name=lease)
    steps = {"steps": [{"weight": 20, "hold": "30m"}, {"weight": 50, "hold": "2s"}]}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps, analysis=ANALYSIS))
    world.wait(_passing)
    _wait_unwritten(first, 2, world)
    # The controller is ahead of the API server: its latest analysis is not of record.
    world.wait(lambda o: _in_memory_analysis(first, world) > _last_analysis(o).timestamp())

    first.kill()
    second = controller_process.start("victim", *args, lease_name=lease)
    # The new process analyses again at once (the analysis of record is older than the interval)
    # and keeps what decides nothing, as the first did.
    _wait_unwritten(second, 1, world)
    assert world.get()["status"]["currentStep"] == 0

    world.annotate({"modelrollout.dev/promote": "after-the-kill"})
    obj = world.wait(phase("Promoted"))
    assert world.candidate_writes() == [20, 50, 100]
    advanced = [d["step"] for d in obj["status"]["history"] if d["action"] == "advance"]
    assert advanced == sorted(set(advanced)), f"a step was repeated: {advanced}"


def test_the_kept_analysis_sets_the_schedule_so_reconciles_between_analyses_query_nothing(
    world: World, controller_process: Any
) -> None:
    """Resyncs every second, analyses every 5 s: a controller that decided from the status of
    record (its lastAnalysis up to the period old) would analyse at every resync."""
    controller = controller_process.start(
        "c1", "--namespace", world.namespace, "--evidence-checkpoint", "1h", "--resync-period", "1"
    )
    steps = {"steps": [{"weight": 20, "hold": "30m"}, {"weight": 50, "hold": "30m"}]}
    analysis = {**ANALYSIS, "interval": "5s"}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps, analysis=analysis))
    world.wait(_passing)
    seen: list[float] = []

    def three_more_analyses(_: dict[str, Any]) -> bool:
        value = _in_memory_analysis(controller, world)
        if value and (not seen or value != seen[-1]):
            seen.append(value)
        return len(seen) >= 4

    world.wait(three_more_analyses, timeout=180)
    assert controller.metric("modelrollout_analyses_unwritten_total") >= 1
    reconciles = controller.reconciles()
    assert reconciles > len(seen), "no reconcile between analyses: the test would prove nothing"
    # One interval apart, less the second the schedule may round (an analysis is due at the
    # interval after the one before; a resync that lands then runs it).
    gaps = [b - a for a, b in pairwise(seen)]
    assert all(gap >= 4 for gap in gaps), gaps
