"""Other writers and other replicas: the controller converges, loses nothing, never double-writes.

- another writer patches the ModelRollout every 50 ms for the whole rollout;
- the leader of two replicas is SIGSTOPped for 30 s and then resumed;
- the spec is edited mid-rollout, the rollout aborted, and the manifest re-applied.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controller.api import GROUP, PLURAL, VERSION
from tests.support.audit import Write, requests, writes
from tests.support.controller import ControllerFactory
from tests.support.world import World, phase, rollout_body, unique

pytestmark = pytest.mark.usefixtures("gateway_api")

FOREIGN_PATCHES = 150
ANALYSIS = {"interval": "1s", "window": "10s", "progressDeadline": "90s", "inconclusiveLimit": 20}


def _longest_conflict_streak(calls: list[Write]) -> int:
    longest = current = 0
    for call in calls:
        current = current + 1 if call.code == 409 else 0
        longest = max(longest, current)
    return longest


def test_a_writer_patching_every_50ms_neither_stops_the_rollout_nor_loses_status(
    world: World, controllers: ControllerFactory
) -> None:
    controller = controllers.start("c1", "--namespace", world.namespace)
    # The last step is a gate the test opens once the writer has made FOREIGN_PATCHES patches:
    # however fast the machine, the rollout runs beside that many foreign writes.
    steps = {
        "steps": [
            {"weight": 20, "hold": "3s"},
            {"weight": 50, "hold": "3s"},
            {"weight": 80, "hold": "3s", "manualGate": True},
        ]
    }
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps, analysis=ANALYSIS))
    stop = threading.Event()
    patched = [0]
    histories: list[list[dict[str, Any]]] = []

    def writer() -> None:
        # What CI, kubectl annotate or another operator does: metadata patches, 20 a second.
        while not stop.is_set():
            body = {"metadata": {"annotations": {"example.com/writer": str(patched[0])}}}
            world.custom.patch_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, "demo", body)
            patched[0] += 1
            stop.wait(0.05)

    def sampler() -> None:
        while not stop.is_set():
            histories.append(world.get().get("status", {}).get("history", []))
            stop.wait(0.1)

    threads = [threading.Thread(target=writer), threading.Thread(target=sampler)]
    for t in threads:
        t.start()
    try:
        world.wait(lambda o: patched[0] >= FOREIGN_PATCHES and o.get("status", {}).get("reason") == "AwaitingPromotion")
        world.annotate({"modelrollout.dev/promote": "after-foreign-patches"})
        obj = world.wait(phase("Promoted"), timeout=120)
    finally:
        stop.set()
        for t in threads:
            t.join()

    status = obj["status"]
    assert world.candidate_writes() == [20, 50, 80, 100]
    for key in (
        "observedGeneration", "phase", "reason", "incumbent", "candidate", "candidateHash", "currentStep",
        "totalSteps", "stepDisplay", "rolloutStarted", "stepStarted", "weights", "guardrails", "history",
        "conditions",
    ):  # fmt: skip
        assert key in status, f"status.{key} lost: {sorted(status)}"
    assert [d["action"] for d in status["history"]] == ["start", "advance", "advance", "pause", "resume", "promote"]
    # No decision written was ever overwritten by a stale one: each history seen extends the last.
    for before, after in itertools.pairwise(histories):
        assert after[: len(before)] == before, "a status write dropped a recorded decision"
    assert world.plane.audit_log is not None
    agent = f"modelrollout-controller/{controller.identity}"
    status_puts = [
        r
        for r in requests(world.plane.audit_log, namespace=world.namespace, resource="modelrollouts")
        if r.user_agent == agent and r.subresource == "status" and r.verb == "update"
    ]
    conflicts = sum(1 for r in status_puts if r.code == 409)
    streak = _longest_conflict_streak(status_puts)
    print(
        f"\n50 ms writer: {patched[0]} patches; controller status PUTs {len(status_puts)}, "
        f"409s {conflicts}, longest 409 streak {streak}"
    )
    assert patched[0] >= FOREIGN_PATCHES
    # Bounded: every conflict is re-read and retried, and the retries never run away.
    assert streak <= 20 and conflicts <= len(status_puts)


def test_leader_stopped_30s_never_writes_after_its_lease_expired(world: World, controllers: ControllerFactory) -> None:
    lease = unique("lease")
    leader = controllers.start("leader", "--namespace", world.namespace, lease_name=lease)
    controllers.wait_leader(leader, lease)
    standby = controllers.start("standby", "--namespace", world.namespace, lease_name=lease)
    steps = {
        "steps": [
            {"weight": 20, "hold": "3s"},
            {"weight": 40, "hold": "3s"},
            {"weight": 60, "hold": "25s"},
            {"weight": 80, "hold": "3s"},
        ]
    }
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps, analysis=ANALYSIS))
    world.wait(lambda o: (o.get("status", {}).get("weights") or {}).get("candidate") == 40)

    leader.proc.send_signal(signal.SIGSTOP)
    stopped = time.time()
    try:
        # The standby takes the lease once it has seen it unrenewed for 15 s, and carries on.
        world.wait(lambda o: (o.get("status", {}).get("weights") or {}).get("candidate") == 60, timeout=60)
        time.sleep(max(0.0, stopped + 30 - time.time()))
    finally:
        leader.proc.send_signal(signal.SIGCONT)
    resumed = time.time()
    code = leader.proc.wait(timeout=30)
    exited = time.time()
    obj = world.wait(phase("Promoted"), timeout=90)

    assert world.plane.audit_log is not None
    everything = writes(world.plane.audit_log, namespace=world.namespace)
    old = [w for w in everything if w.user_agent.endswith("/leader") and w.time.timestamp() > stopped + 0.5]
    new = [w for w in everything if w.user_agent.endswith("/standby")]
    print(
        f"\nleader stopped {resumed - stopped:.0f}s; standby's first write {new[0].time.timestamp() - stopped:.1f}s "
        f"after the stop; old leader exited {code} {exited - resumed:.1f}s after resuming"
    )
    assert new, "the standby never took over"
    assert old == [], f"the old leader wrote after it was stopped: {old}"
    assert code == 1, "a leader that lost its lease must exit 1"
    assert world.candidate_writes() == [20, 40, 60, 80, 100]
    assert obj["status"]["phase"] == "Promoted" and standby.proc.poll() is None


def _apply(kubectl: list[str], namespace: str, body: dict[str, Any], tmp: Path) -> None:
    path = tmp / f"rollout-{os.urandom(3).hex()}.json"
    path.write_text(json.dumps(body))
    subprocess.run([*kubectl, "apply", "-n", namespace, "-f", str(path)], check=True, capture_output=True)


def test_spec_edited_then_aborted_then_reapplied_gives_the_aborted_candidate_no_traffic(
    world: World, controllers: ControllerFactory, kubectl: list[str], tmp_path: Path
) -> None:
    controllers.start("c1", "--namespace", world.namespace)
    steps = [{"weight": 20, "hold": "3s"}, {"weight": 50, "hold": "30s"}, {"weight": 80, "hold": "3s"}]
    body = rollout_body("demo", world.incumbent, world.candidate, canary={"steps": steps}, analysis=ANALYSIS)
    _apply(kubectl, world.namespace, body, tmp_path)
    world.wait(lambda o: (o.get("status", {}).get("weights") or {}).get("candidate") == 50)

    # Spec edited mid-rollout (a longer hold on the step in flight): no step repeated or skipped.
    edited = json.loads(json.dumps(body))
    edited["spec"]["canary"]["steps"][1]["hold"] = "40s"
    _apply(kubectl, world.namespace, edited, tmp_path)
    world.wait(lambda o: o["status"].get("observedGeneration") == o["metadata"]["generation"])
    assert world.candidate_writes() == [20, 50]

    world.custom.patch_namespaced_custom_object(
        GROUP, VERSION, world.namespace, PLURAL, "demo", {"metadata": {"annotations": {"modelrollout.dev/abort": "1"}}}
    )
    obj = world.wait(phase("RolledBack"), timeout=30)
    assert obj["status"]["reason"] == "AbortedByUser", obj["status"]

    # Re-applied as it was first written, and then once more with an edit: still no traffic.
    _apply(kubectl, world.namespace, body, tmp_path)
    time.sleep(4)
    third = json.loads(json.dumps(body))
    third["spec"]["canary"]["steps"][0]["hold"] = "2s"
    _apply(kubectl, world.namespace, third, tmp_path)
    world.wait(lambda o: o["status"].get("observedGeneration") == o["metadata"]["generation"])
    time.sleep(4)

    obj = world.get()
    assert obj["status"]["phase"] == "RolledBack"
    assert world.candidate_writes() == [20, 50, 0]
    assert world.route_weights() == {world.incumbent: 100, world.candidate: 0}
