"""Sharded controllers (controller/sharding.py) on the real kube-apiserver, judged by its audit log.

Thirty rollouts, each with its own HTTPRoute, in one namespace; every rollout waits at a manual
gate on its first step, so the test, not the machine's speed, decides when they move on. Who wrote
what is read from the API server's audit log (each process's user agent carries its identity:
controller/main.py), never from the controllers themselves:

- 3 shards x 2 replicas: every write to a rollout (status, finalizers, its route) comes from the
  replicas of the one shard its uid hashes to; SIGKILL one shard's leader, open every gate, and
  that shard's rollouts are promoted by its standby alone, while no other shard touches them.
- Resharding 2 -> 3 (what a `helm upgrade` runs: old and new pods at once): every write by a
  2-shard process precedes every write by a 3-shard process, the 2-shard leaders exit 1, and in
  the end only the 3-shard set writes.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.sharding import shard_of
from tests.support.audit import Write, writes
from tests.support.controller import ControllerFactory, ControllerProcess
from tests.support.controlplane import ControlPlane
from tests.support.gatewayapi import make_httproute
from tests.support.prometheus import PrometheusServer
from tests.support.world import World, phase, rollout_body, unique

pytestmark = pytest.mark.usefixtures("gateway_api")

ROLLOUTS = 30
ANALYSIS = {"interval": "1s", "window": "10s", "progressDeadline": "10m", "inconclusiveLimit": 50}
# The gate holds every rollout on its first step until the test opens it; the later steps keep
# them progressing while the test changes the controllers under them.
STEPS = {
    "steps": [
        {"weight": 20, "hold": "2s", "manualGate": True},
        {"weight": 40, "hold": "3s"},
        {"weight": 60, "hold": "3s"},
        {"weight": 80, "hold": "3s"},
    ]
}
# For the resharding: a second gate, opened once the new set alone runs, so that every rollout
# ends under it whatever the machine's speed.
TWO_GATES = {"steps": [{**step, "manualGate": i in (0, 2)} for i, step in enumerate(STEPS["steps"])]}
AGENT = re.compile(r"^modelrollout-controller/(\S+)")


@pytest.fixture
def controllers(control_plane: ControlPlane, prometheus: PrometheusServer) -> Iterator[ControllerFactory]:
    factory = ControllerFactory(control_plane, prometheus_url=prometheus.url)
    yield factory
    factory.stop_all()


def _at_gate(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return status.get("phase") == "Paused" and status.get("reason") == "AwaitingPromotion"


def _at_second_gate(obj: dict[str, Any]) -> bool:
    return _at_gate(obj) and ((obj.get("status") or {}).get("weights") or {}).get("candidate") == 60


def create_rollouts(world: World, steps: dict[str, Any] = STEPS) -> dict[str, str]:
    """ROLLOUTS rollouts r-<i> on routes models-<i>; returns name -> uid."""
    uids = {}
    for i in range(ROLLOUTS):
        route = make_httproute(f"models-{i}", [(world.incumbent, 100), (world.candidate, 0)])
        world.custom.create_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", world.namespace, "httproutes", route
        )
        body = rollout_body(f"r-{i}", world.incumbent, world.candidate, canary=steps, analysis=ANALYSIS)
        body["spec"]["traffic"] = {"gatewayAPI": {"httpRoute": f"models-{i}"}}
        world.apply(body)
        uids[f"r-{i}"] = world.get(f"r-{i}")["metadata"]["uid"]
    return uids


def wait_all(world: World, names: list[str], predicate: Any, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    for name in names:
        world.wait(predicate, name=name, timeout=max(1.0, deadline - time.monotonic()))


def open_gates(world: World, names: list[str], request: str = "shards-test") -> None:
    for name in names:
        world.annotate({"modelrollout.dev/promote": request}, name=name)


def controller_writes(world: World) -> dict[str, list[tuple[datetime, str]]]:
    """Per rollout, (time, writer identity) of every write a controller attempted to the rollout
    (status, finalizers) or to its route, answered or not."""
    assert world.plane.audit_log is not None
    out: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    records: list[Write] = writes(world.plane.audit_log, namespace=world.namespace)
    for w in records:
        match = AGENT.match(w.user_agent)
        if match is None:
            continue
        if w.resource == "modelrollouts":
            out[w.name].append((w.time, match.group(1)))
        elif w.resource == "httproutes" and w.name.startswith("models-"):
            out["r-" + w.name.removeprefix("models-")].append((w.time, match.group(1)))
    return out


def start_shard_set(
    controllers: ControllerFactory, world: World, prefix: str, tag: str, shards: int, replicas: int
) -> dict[int, list[ControllerProcess]]:
    """`shards` shards of `replicas` processes each, identities <tag>-s<K>-<replica>; the first of
    each shard holds its Lease before the next starts."""
    procs: dict[int, list[ControllerProcess]] = {}
    for k in range(shards):
        args = ("--namespace", world.namespace, "--shards", str(shards), "--shard", str(k))
        leader = controllers.start(f"{tag}-s{k}-0", *args, lease_name=prefix)
        controllers.wait_leader(leader, prefix if shards == 1 else f"{prefix}-{k}")
        procs[k] = [leader]
    for k in range(shards):
        args = ("--namespace", world.namespace, "--shards", str(shards), "--shard", str(k))
        procs[k] += [controllers.start(f"{tag}-s{k}-{r}", *args, lease_name=prefix) for r in range(1, replicas)]
    return procs


def owned_gauge(proc: ControllerProcess) -> dict[str, float]:
    return {
        line.split('shard="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in proc.metrics().splitlines()
        if line.startswith("modelrollout_shard_rollouts{")
    }


def test_three_shards_write_only_their_own_rollouts_and_a_killed_leaders_standby_takes_its_share(
    world: World, controllers: ControllerFactory
) -> None:
    uids = create_rollouts(world)
    names = sorted(uids)
    owner = {name: shard_of(uid, 3) for name, uid in uids.items()}
    share = {k: [n for n in names if owner[n] == k] for k in range(3)}
    assert all(share.values()), f"a shard owns nothing: {share}"  # (2/3)^30 per shard: negligible
    prefix = unique("shards")
    procs = start_shard_set(controllers, world, prefix, "k", shards=3, replicas=2)
    wait_all(world, names, _at_gate)

    # Each leader caches its own share and says so; its standby has cached nothing yet.
    for k in range(3):
        leader, standby = procs[k]
        assert owned_gauge(leader) == {str(k): len(share[k])}
        assert owned_gauge(standby) == {}
        logs = leader.logs()
        assert any(line.get("event") == f"starting: shard {k} of 3" for line in logs)
        assert any(line.get("event") == "synced" and line.get("rollouts") == len(share[k]) for line in logs)

    victim, heir = procs[1]
    victim.kill()
    killed = datetime.now(UTC)
    open_gates(world, names)
    wait_all(world, names, phase("Promoted"))

    written = controller_writes(world)
    report = {k: sorted({who for n in share[k] for _, who in written[n]}) for k in range(3)}
    print(f"\nshares {[len(share[k]) for k in range(3)]}; writers per shard {report}")
    for name in names:
        k = owner[name]
        writers = {who for _, who in written[name]}
        assert writers, f"{name}: no controller write"
        assert writers <= {f"k-s{k}-0", f"k-s{k}-1"}, f"{name} (shard {k}) written by {writers}"
        if k == 1:
            after = {who for when, who in written[name] if when > killed}
            assert after == {heir.identity}, f"{name}: written after the kill by {after}"
        else:
            assert writers == {f"k-s{k}-0"}, f"{name}: a standby wrote though its leader lived: {writers}"
    assert owned_gauge(heir) == {"1": len(share[1])}


def test_resharding_from_two_to_three_never_lets_both_counts_write_and_ends_with_three(
    world: World, controllers: ControllerFactory
) -> None:
    uids = create_rollouts(world, TWO_GATES)
    names = sorted(uids)
    prefix = unique("shards")
    old = start_shard_set(controllers, world, prefix, "two", shards=2, replicas=2)
    wait_all(world, names, _at_gate)

    # As a `helm upgrade` does: the new set starts beside the old one, while the rollouts move on.
    open_gates(world, names)
    new = start_shard_set_beside(controllers, world, prefix, shards=3)
    codes = {k: old[k][0].proc.wait(timeout=120) for k in range(2)}
    wait_all(world, names, _at_second_gate)
    open_gates(world, names, "shards-test-second-gate")
    wait_all(world, names, phase("Promoted"))
    standbys = {p.identity: p.proc.poll() for k in range(2) for p in old[k][1:]}

    written = controller_writes(world)
    old_times = [when for n in names for when, who in written[n] if who.startswith("two-")]
    new_times = [when for n in names for when, who in written[n] if who.startswith("three-")]
    print(
        f"\n2-shard writes {len(old_times)}, 3-shard writes {len(new_times)}; old leaders exited {codes}; "
        f"old standbys {standbys}; last old write {max(old_times)}, first new write {min(new_times)}"
    )
    print_lease_timeline([p for k in range(2) for p in old[k]] + list(new.values()))
    assert codes == {0: 1, 1: 1}, "an old leader that steps down exits 1"
    assert old_times and new_times
    assert max(old_times) < min(new_times), "both shard counts wrote at overlapping times"
    for name, uid in uids.items():
        for _, who in written[name]:
            count, shard = (2, shard_of(uid, 2)) if who.startswith("two-") else (3, shard_of(uid, 3))
            assert who.startswith(("two-s", "three-s")) and who.split("-")[1] == f"s{shard}", (
                f"{name} (shard {shard} of {count}) written by {who}"
            )
        last = max(written[name])[1]
        assert last.startswith("three-"), f"{name}: last written by {last}"
    for k in range(3):
        assert owned_gauge(new[k]) == {str(k): sum(1 for uid in uids.values() if shard_of(uid, 3) == k)}


def print_lease_timeline(procs: list[ControllerProcess]) -> None:
    """What each process logged of its Lease and its shard guard, in time order (for the reader)."""
    marks = ("became leader", "shard guard", "stepping down", "stopping", "synced")
    lines = sorted(
        (line.get("timestamp", ""), proc.identity, line.get("event"), line.get("verdict", ""))
        for proc in procs
        for line in proc.logs()
        if any(str(line.get("event", "")).startswith(mark) or mark in str(line.get("event", "")) for mark in marks)
    )
    for stamp, who, event, verdict in lines:
        print(f"  {stamp} {who:12} {event} {verdict}")


def start_shard_set_beside(
    controllers: ControllerFactory, world: World, prefix: str, *, shards: int
) -> dict[int, ControllerProcess]:
    """One process per shard, started while another shard count holds some of the Leases (so no
    waiting for any of them to lead)."""
    return {
        k: controllers.start(
            f"three-s{k}-0",
            "--namespace",
            world.namespace,
            "--shards",
            str(shards),
            "--shard",
            str(k),
            lease_name=prefix,
        )
        for k in range(shards)
    }
