"""The controller SIGKILLed at every step boundary and at 20 random instants of a 5-step rollout.

Two rollouts run side by side on the session plane, each in its own namespace and with the
same spec and traffic: one under a controller that is never disturbed, one under a controller
that is killed over and over and restarted (as a Deployment would, same identity). Both must
reach the same verdict; the route weights the killed one wrote (read from the API server's
audit log, not from the controller) must be exactly the steps' weights in order: none
exceeded, skipped or repeated.

A third run does the same with the killed controller as one of two shards (the one that owns
the rollout, by its uid), the other shard running beside it, and both with an evidence
checkpoint (analyses that decide nothing stay unwritten for 5 s, so kills lose them): the same
verdict and weights, and every write to the rollout and its route from the owning shard.

A "boundary" kill lands the moment the controller logs a step decision (RolloutStarted,
StepAdvanced, Promoted/RolledBack): the decision is in status, the route write is about to
happen or has just happened. A "random" kill lands at a uniformly random instant after start.

How many kills fit in a rollout depends on how fast the machine is, so the test never counts on
it: the last step of the promoted case is a manual gate that the test answers (in both
namespaces at once) only once all the random kills have landed. A slow machine spends more of
its kills at the gate; every run kills the same number of times.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client

from controller.sharding import shard_of
from tests.reliability.conftest import another_world
from tests.support.audit import writes
from tests.support.controller import ControllerFactory, ControllerProcess
from tests.support.controlplane import ControlPlane
from tests.support.prometheus import ModelTraffic
from tests.support.world import World, phase, rollout_body, unique

pytestmark = pytest.mark.usefixtures("gateway_api")

WEIGHTS = [10, 25, 40, 60, 80]
# On a quiet machine most of the 20 random kills (each ~1 s of start-up plus up to 1.2 s of life)
# land during the holds; the gate on the last step waits for the rest.
STEPS = {"steps": [{"weight": w, "hold": "10s", "manualGate": w == WEIGHTS[-1]} for w in WEIGHTS]}
ANALYSIS = {"interval": "1s", "window": "10s", "progressDeadline": "5m", "inconclusiveLimit": 20}
BOUNDARY = ("RolloutStarted", "StepAdvanced", "Promoted", "RolledBack")
RANDOM_KILLS = 20


def _decisions(proc: ControllerProcess) -> int:
    return sum(1 for line in proc.logs() if line.get("decision") in BOUNDARY)


def _decision_point(obj: dict[str, Any]) -> tuple[Any, ...]:
    """Where the rollout of record stands: a step decision changes it."""
    status = obj.get("status") or {}
    last = (status.get("history") or [{}])[-1]
    return status.get("phase"), status.get("currentStep"), last.get("time"), last.get("action")


def _at_gate(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return status.get("phase") == "Paused" and status.get("reason") == "AwaitingPromotion"


def kill_until_settled(
    factory: ControllerFactory,
    world: World,
    lease: str,
    verdict: str,
    *,
    seed: int,
    open_gate: Callable[[], None] | None = None,
    timeout: float = 300,
    extra: tuple[str, ...] = (),
    kill_when_kept: bool = False,
) -> dict[str, int]:
    """Start, kill, restart the controller until the rollout settles; returns the kill counts.

    A process is killed the moment it logs a step decision or its decision shows in status
    (a boundary kill), or at a random instant of its life. Which of the two a kill was is read
    from status after the kill, not from which came first: a random kill that lands just after
    a decision is a boundary kill too, so every decision of record is counted once, on any
    machine. The verdict is a decision like the others: the process that records it is killed
    too, and the next one carries it out (the route write) and is stopped cleanly.

    `open_gate` is called once, when all the random kills have landed and the rollout waits at
    its manual gate. With `kill_when_kept`, the first random kill waits instead for the process
    to hold an analysis it has not written (its modelrollout_analyses_unwritten_total), so that at
    least one kill loses kept evidence on any machine ("kept" in the counts)."""
    rng = random.Random(seed)
    gate_opened = open_gate is None
    kills = {"boundary": 0, "random": 0, "restarts": 0, "kept": 0}
    deadline = time.monotonic() + timeout
    point = _decision_point(world.get())
    settled = {"Promoted": 100, "RolledBack": 0}[verdict]
    while time.monotonic() < deadline:
        proc = factory.start("victim", "--namespace", world.namespace, *extra, lease_name=lease)
        kills["restarts"] += 1
        randomly = kills["random"] < RANDOM_KILLS
        waiting_for_kept = kill_when_kept and kills["kept"] == 0
        kill_at = time.monotonic() + (rng.uniform(0.05, 1.2) if randomly and not waiting_for_kept else 3600)
        kept = False
        while True:
            obj = world.get()
            if _decision_point(obj) != point or _decisions(proc) > 0 or time.monotonic() >= kill_at:
                break
            # Analyses it kept in memory, unwritten (docs/operations.md "Evidence checkpoints").
            if waiting_for_kept and proc.metric("modelrollout_analyses_unwritten_total") > 0:
                kept = True
                break
            if obj.get("status", {}).get("phase") == verdict:
                # Decided (and its decider killed) before this process: it only carries it out.
                if phase(verdict)(obj) and world.route_weights()[world.candidate] == settled:
                    proc.stop()
                    return kills
            elif not gate_opened and kills["random"] >= RANDOM_KILLS and _at_gate(obj):
                assert open_gate is not None
                open_gate()
                gate_opened = True
            if time.monotonic() >= deadline:
                raise AssertionError(f"not settled after {timeout}s under kills {kills}: {obj.get('status')}")
            time.sleep(0.02)
        proc.kill()
        obj = world.get()
        if _decision_point(obj) != point:
            kills["boundary"] += 1
            point = _decision_point(obj)
        else:
            kills["random"] += 1
            kills["kept"] += int(kept)
    raise AssertionError(f"not settled after {timeout}s under kills {kills}")


def _event_count(world: World, reason: str) -> int:
    items = client.CoreV1Api(world.api).list_namespaced_event(world.namespace).items
    return sum(e.count or 1 for e in items if e.reason == reason)


def route_attempts(world: World) -> list[tuple[int, int]]:
    """(candidate weight, HTTP code) of every route patch in the audit log, in order, failed ones
    included: a controller killed mid-request leaves a write the API server may or may not
    have committed (it answers a vanished client with an error code), and the next controller
    reads the route back and writes the weight again only if it is not there."""
    assert world.plane.audit_log is not None
    out = []
    for w in writes(world.plane.audit_log, namespace=world.namespace, resource="httproutes"):
        if w.verb != "patch" or not isinstance(w.request, list):
            continue
        for i, op in enumerate(w.request):
            if op.get("op") == "test" and op.get("value") == world.candidate and i + 1 < len(w.request):
                out.append((int(w.request[i + 1]["value"]), w.code))
    return out


def collapsed(weights: list[int]) -> list[int]:
    return [w for i, w in enumerate(weights) if i == 0 or weights[i - 1] != w]


def _advance_steps(obj: dict[str, Any]) -> list[int]:
    return [d["step"] for d in obj["status"].get("history", []) if d["action"] == "advance"]


@pytest.mark.parametrize("verdict", ["Promoted", "RolledBack", "Promoted-sharded-checkpoint"])
def test_killed_at_every_boundary_and_random_instants_reaches_the_undisturbed_verdict(
    verdict: str,
    world: World,
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    traffic: ModelTraffic,
    controllers: ControllerFactory,
) -> None:
    calm = another_world(api_client, control_plane, traffic, "t-calm")
    # The same model names in both namespaces: one traffic source, the same evidence.
    calm.incumbent, calm.candidate = world.incumbent, world.candidate
    route = calm.custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", calm.namespace, "httproutes", "models"
    )
    refs = route["spec"]["rules"][0]["backendRefs"]
    refs[0]["name"], refs[1]["name"] = world.incumbent, world.candidate
    calm.custom.replace_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", calm.namespace, "httproutes", "models", route
    )
    controllers.start("calm", "--namespace", calm.namespace, lease_name=unique("lease"))
    canary = STEPS
    if verdict == "RolledBack":
        # Longer holds from step 3: the candidate turns bad there, and must be caught there.
        canary = {"steps": [{"weight": w, "hold": "3s" if i < 2 else "10s"} for i, w in enumerate(WEIGHTS)]}
    body = rollout_body("demo", world.incumbent, world.candidate, canary=canary, analysis=ANALYSIS)
    for w in (world, calm):
        w.apply(body)
    # Sharded: the killed controller is the shard that owns the rollout, one of two, with the
    # other shard running beside it all along; both keep analyses that decide nothing unwritten
    # for 5 s (docs/operations.md "Evidence checkpoints"), so kills lose kept evidence too.
    sharded = verdict.endswith("-sharded-checkpoint")
    verdict = verdict.removesuffix("-sharded-checkpoint")
    lease, extra = unique("lease"), ()
    if sharded:
        mine = shard_of(world.get()["metadata"]["uid"], 2)
        extra = ("--shards", "2", "--shard", str(mine), "--evidence-checkpoint", "5s")
        other = ("--shards", "2", "--shard", str(1 - mine), "--evidence-checkpoint", "5s")
        controllers.start("other-shard", "--namespace", world.namespace, *other, lease_name=lease)

    def open_gates() -> None:
        for w in (world, calm):
            w.wait(_at_gate, timeout=120)
            w.annotate({"modelrollout.dev/promote": "gate-after-kills"})

    with ThreadPoolExecutor(1) as pool:
        killing = pool.submit(
            kill_until_settled,
            controllers,
            world,
            lease,
            verdict,
            seed=int.from_bytes(os.urandom(4)),
            open_gate=open_gates if verdict == "Promoted" else None,
            extra=extra,
            kill_when_kept=sharded,
        )
        if verdict == "RolledBack":
            # Both rollouts reach step 3 (40%) with a healthy candidate, then it starts failing.
            for w in (world, calm):
                w.wait(lambda o: (o.get("status", {}).get("weights") or {}).get("candidate", 0) >= 40, timeout=150)
            traffic.set(world.candidate, ok=10, errors=10)
        kills = killing.result()
    undisturbed = calm.wait(phase(verdict), timeout=120)
    disturbed = world.get()

    attempts = route_attempts(world)
    print(f"\nkills: {kills}; route writes (weight, code): {attempts}")
    assert disturbed["status"]["phase"] == undisturbed["status"]["phase"] == verdict
    assert disturbed["status"]["reason"] == undisturbed["status"]["reason"]
    # Every weight the route was asked for, in order: each step's once (a write whose answer the
    # killed controller never got may be sent again, as the same weight), none above its step.
    written = collapsed([w for w, _ in attempts])
    succeeded = [w for w, code in attempts if code < 300]
    assert collapsed(succeeded) == succeeded, f"a weight written twice: {attempts}"
    if verdict == "Promoted":
        assert written == [*WEIGHTS, 100] == calm.candidate_writes(), attempts
        assert succeeded[-1] == 100 and world.route_weights()[world.candidate] == 100
        # RolloutStarted, four StepAdvanced, the gate's pause, Promoted: each a kill of its own.
        assert kills["boundary"] >= len(WEIGHTS) + 1 and kills["random"] == RANDOM_KILLS
    else:
        # Up to the step where it failed, then straight back to 0; the same in both runs.
        assert written[-1] == 0 and written[:-1] == WEIGHTS[: len(written) - 1], written
        assert calm.candidate_writes()[-1] == 0
        assert kills["boundary"] >= 1
    if sharded:
        assert kills["kept"] == 1, kills
        assert world.plane.audit_log is not None
        writers = {
            w.user_agent.split("/")[1].split(" ")[0]
            for resource in ("modelrollouts", "httproutes")
            for w in writes(world.plane.audit_log, namespace=world.namespace, resource=resource)
            if w.user_agent.startswith("modelrollout-controller/")
        }
        assert writers == {"victim"}, f"the rollout was written by {writers}"
    for w in (world, calm):
        steps = _advance_steps(w.get())
        assert steps == sorted(set(steps)), f"a step was repeated: {steps}"
        assert steps == list(range(1, len(steps) + 1)), f"a step was skipped: {steps}"
        assert _event_count(w, "StepAdvanced") <= len(WEIGHTS) - 1
