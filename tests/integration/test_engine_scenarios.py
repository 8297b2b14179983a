"""The controller end to end on the real control plane, a real Prometheus and real HTTP.

Given an HTTPRoute splitting traffic between two model Services, model servers (the exporter)
reporting requests to Prometheus, and the controller running as its own process, when a
ModelRollout is applied, then the route's weights, the status and the Events tell the story.
Route writes are read from the API server's audit log, not from the controller.
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from controller.api import GROUP, PLURAL, VERSION
from tests.support.audit import requests, route_weight_writes, writes
from tests.support.controller import ControllerFactory
from tests.support.prometheus import PrometheusServer
from tests.support.world import World, phase, rollout_body, unique

pytestmark = pytest.mark.usefixtures("gateway_api")


def test_healthy_candidate_walks_every_step_and_is_promoted(
    world: World, controller_process: ControllerFactory
) -> None:
    controller = controller_process.start("c1", "--namespace", world.namespace)
    world.apply(rollout_body("demo", world.incumbent, world.candidate))

    obj = world.wait(phase("Promoted"))

    assert world.candidate_writes() == [20, 50, 100]
    assert world.route_weights() == {world.incumbent: 0, world.candidate: 100}
    status = obj["status"]
    assert status["incumbent"]["name"] == world.candidate and status["weights"] == {"incumbent": 0, "candidate": 100}
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert status["guardrails"][0]["verdict"] == "Pass" and status["guardrails"][0]["evidence"]["candidateSamples"] >= 5
    reasons = [reason for _, reason, _ in world.events()]
    assert reasons[0] == "RolloutStarted" and "StepAdvanced" in reasons and reasons[-1] == "Promoted"
    metrics = controller.metrics()
    assert f'modelrollout_candidate_weight{{name="demo",namespace="{world.namespace}"}} 100.0' in metrics
    assert 'modelrollout_rollouts{phase="Promoted"} 1.0' in metrics
    assert (
        f'modelrollout_guardrail_passing{{guardrail="error-rate",name="demo",namespace="{world.namespace}"}} 1.0'
        in metrics
    )
    decisions = [line for line in controller.logs() if line.get("decision") == "Promoted"]
    assert decisions and decisions[0]["namespace"] == world.namespace and decisions[0]["name"] == "demo"
    assert decisions[0]["step"] == "2/2" and "generation" in decisions[0]


def test_breaching_candidate_is_rolled_back_with_the_evidence(
    world: World, controller_process: ControllerFactory, prometheus: PrometheusServer
) -> None:
    controller_process.start("c1", "--namespace", world.namespace)
    steps = {"steps": [{"weight": 20, "hold": "50s"}, {"weight": 50, "hold": "4s"}]}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps))
    world.wait(lambda o: (o.get("status", {}).get("guardrails") or [{}])[0].get("verdict") == "Pass")

    world.traffic.set(world.candidate, ok=10, errors=10)
    query = (
        f'sum(increase(model_requests_total{{model="{world.candidate}",code=~"5.."}}[10s])) / '
        f'sum(increase(model_requests_total{{model="{world.candidate}"}}[10s]))'
    )
    prometheus.wait_for(query, lambda r: bool(r) and float(r[0]["value"][1]) > 0.05)
    visible = time.time()

    obj = world.wait(phase("RolledBack"), timeout=60)

    status = obj["status"]
    assert world.candidate_writes() == [20, 0]
    assert world.route_weights() == {world.incumbent: 100, world.candidate: 0}
    assert status["reason"] == "GuardrailFailed" and status["incumbent"]["name"] == world.incumbent
    failed = status["failedCandidates"][-1]
    assert failed["guardrail"] == "error-rate" and failed["observed"] > 0.05 and failed["threshold"] == "<= 0.05"
    assert ("Warning", "RolledBack") in [(t, r) for t, r, _ in world.events()]
    assert world.plane.audit_log is not None
    rolled_back_at = route_weight_writes(world.plane.audit_log, world.namespace, world.candidate)[-1][0].timestamp()
    delay = rolled_back_at - visible
    print(f"\nbreach-to-rollback delay: {delay:.1f}s (analysis interval 2s, scrape 1s)")
    assert delay < 30


def test_prometheus_down_never_advances_and_ends_rolled_back(
    world: World, controller_process: ControllerFactory, prometheus: PrometheusServer
) -> None:
    controller_process.start("c1", "--namespace", world.namespace)
    steps = {"steps": [{"weight": 20, "hold": "6s"}, {"weight": 50, "hold": "4s"}]}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps))
    world.wait(lambda o: o.get("status", {}).get("weights", {}).get("candidate") == 20)
    prometheus.stop()
    try:
        obj = world.wait(phase("RolledBack"), timeout=90)
    finally:
        prometheus.start()

    assert max(world.candidate_writes()) == 20
    assert obj["status"]["reason"] in ("InconclusiveLimitExceeded", "ProgressDeadlineExceeded")
    assert any(t == "Warning" and r == "GuardrailInconclusive" for t, r, _ in world.events())
    assert "Promoted" not in [r for _, r, _ in world.events()]


def test_controller_killed_mid_step_resumes_and_reaches_the_same_verdict(
    world: World, controller_process: ControllerFactory
) -> None:
    first = controller_process.start("c1", "--namespace", world.namespace)
    steps = {"steps": [{"weight": 20, "hold": "4s"}, {"weight": 50, "hold": "8s"}, {"weight": 80, "hold": "4s"}]}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps))
    world.wait(
        lambda o: o.get("status", {}).get("currentStep") == 1 and o["status"].get("weights", {}).get("candidate") == 50
    )
    first.kill()
    time.sleep(3)
    controller_process.start("c2", "--namespace", world.namespace)

    world.wait(phase("Promoted"))

    assert world.candidate_writes() == [20, 50, 80, 100]


def test_new_candidate_mid_rollout_resets_and_the_old_one_is_never_promoted(
    world: World, controller_process: ControllerFactory
) -> None:
    controller_process.start("c1", "--namespace", world.namespace)
    steps = {"steps": [{"weight": 20, "hold": "20s"}, {"weight": 50, "hold": "4s"}]}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps))
    world.wait(lambda o: o.get("status", {}).get("weights", {}).get("candidate") == 20)
    third = unique("model-c")
    route = world.custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", world.namespace, "httproutes", "models"
    )
    route["spec"]["rules"][0]["backendRefs"].append({"name": third, "port": 8080, "weight": 0})
    world.custom.replace_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", world.namespace, "httproutes", "models", route
    )
    world.traffic.set(third, ok=20)
    world.custom.patch_namespaced_custom_object(
        GROUP, VERSION, world.namespace, PLURAL, "demo", {"spec": {"candidate": {"name": third}}}
    )

    obj = world.wait(lambda o: phase("Promoted")(o) and o["status"]["incumbent"]["name"] == third)

    assert world.candidate_writes(world.candidate) == [20, 0]
    assert world.candidate_writes(third)[-1] == 100 and 100 not in world.candidate_writes(world.candidate)
    assert obj["status"]["candidate"]["name"] == third


def delete_and_wait_gone(world: World, timeout: float) -> None:
    """Delete the rollout; fail unless the controller has let it go (its finalizer) in `timeout`."""
    world.custom.delete_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, "demo")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not world.custom.list_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL)["items"]:
            return
        time.sleep(0.3)
    raise AssertionError(f"the rollout is still there {timeout}s after its deletion")


def test_deleted_mid_rollout_restores_the_incumbent_then_goes(
    world: World, controller_process: ControllerFactory
) -> None:
    controller_process.start("c1", "--namespace", world.namespace)
    steps = {"steps": [{"weight": 20, "hold": "30s"}, {"weight": 50, "hold": "4s"}]}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps))
    obj = world.wait(lambda o: o.get("status", {}).get("weights", {}).get("candidate") == 20)
    assert "modelrollout.dev/restore-traffic" in obj["metadata"]["finalizers"]

    delete_and_wait_gone(world, timeout=30)

    assert world.route_weights() == {world.incumbent: 100, world.candidate: 0}
    assert world.candidate_writes() == [20, 0]


def test_deleted_with_its_namespace_restores_the_incumbent_and_releases_without_its_events(
    world: World, controller_process: ControllerFactory
) -> None:
    """`kubectl delete namespace` mid-rollout: the API server refuses every new object in a
    namespace being deleted, Events included (403, cause NamespaceTerminating). The release's
    Events are dropped, not retried: before, the refused Event failed each reconcile (retried
    every 300 s, the same Event each time) and the namespace never went. This plane has no
    namespace controller, so the namespace stays Terminating and the test deletes the rollout as
    that controller would."""
    controller = controller_process.start("c1", "--namespace", world.namespace)
    steps = {"steps": [{"weight": 20, "hold": "30s"}, {"weight": 50, "hold": "4s"}]}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps))
    world.wait(lambda o: o.get("status", {}).get("weights", {}).get("candidate") == 20)

    core = client.CoreV1Api(world.api)
    core.delete_namespace(world.namespace)

    def events_refused() -> bool:
        """The API server's admission has seen the namespace terminating (it reads a cache)."""
        probe = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name="probe-"),
            involved_object=client.V1ObjectReference(kind="Namespace", name=world.namespace),
        )
        try:
            core.create_namespaced_event(world.namespace, probe)
        except client.ApiException as exc:
            return exc.status == 403 and "being terminated" in str(exc.body)
        return False

    world.wait(lambda _: events_refused())
    delete_and_wait_gone(world, timeout=60)

    assert world.route_weights() == {world.incumbent: 100, world.candidate: 0}
    assert world.candidate_writes() == [20, 0]
    assert not [line for line in controller.logs() if line.get("event") == "reconcile failed"]
    assert [line for line in controller.logs() if line.get("decision") == "release"]


def test_two_replicas_only_the_leader_writes_and_a_kill_hands_over(
    world: World, controller_process: ControllerFactory
) -> None:
    lease = unique("lease")
    leader = controller_process.start("leader", "--namespace", world.namespace, lease_name=lease)
    controller_process.wait_leader(leader, lease)
    standby = controller_process.start("standby", "--namespace", world.namespace, lease_name=lease)
    steps = {"steps": [{"weight": 20, "hold": "6s"}, {"weight": 50, "hold": "20s"}, {"weight": 80, "hold": "4s"}]}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps))
    world.wait(lambda o: o.get("status", {}).get("currentStep") == 1)
    assert world.plane.audit_log is not None
    agents = {
        w.user_agent
        for w in writes(world.plane.audit_log, namespace=world.namespace)
        if "modelrollout-controller" in w.user_agent
    }
    assert agents == {f"modelrollout-controller/{leader.identity}"}

    leader.kill()
    killed = time.time()
    obj = world.wait(phase("Promoted"), timeout=90)

    by_standby = [
        w for w in writes(world.plane.audit_log, namespace=world.namespace) if w.user_agent.endswith("/standby")
    ]
    assert by_standby, "the standby never took over"
    handover = by_standby[0].time.timestamp() - killed
    print(f"\nleader killed -> first write by the new leader: {handover:.1f}s (lease 15s + retry 2s)")
    assert world.candidate_writes() == [20, 50, 80, 100]
    assert obj["status"]["phase"] == "Promoted" and standby.proc.poll() is None


def test_an_idle_held_rollout_costs_no_request_per_reconcile(
    world: World, controller_process: ControllerFactory
) -> None:
    controller = controller_process.start("c1", "--namespace", world.namespace)
    world.apply(rollout_body("demo", world.incumbent, world.candidate))
    world.wait(lambda o: o.get("status", {}).get("weights", {}).get("candidate") == 20)
    world.custom.patch_namespaced_custom_object(
        GROUP, VERSION, world.namespace, PLURAL, "demo", {"spec": {"paused": True}}
    )
    world.wait(phase("Paused"))
    assert world.plane.audit_log is not None
    agent = f"modelrollout-controller/{controller.identity}"
    # Counted by the controller's own reconcile counter, not by the pokes: a busy machine may fold
    # two pokes into one reconcile.
    reconciles_before = controller.reconciles_settled()
    before = len([r for r in requests(world.plane.audit_log, namespace=world.namespace) if r.user_agent == agent])

    for i in range(5):  # each annotation is a watch event, so a reconcile
        world.custom.patch_namespaced_custom_object(
            GROUP, VERSION, world.namespace, PLURAL, "demo", {"metadata": {"annotations": {"poke": str(i)}}}
        )
        time.sleep(1)
    reconciles = controller.reconciles_settled() - reconciles_before

    after = [r for r in requests(world.plane.audit_log, namespace=world.namespace) if r.user_agent == agent][before:]
    print(f"\nidle held rollout: {len(after)} requests in {reconciles} reconciles")
    assert reconciles >= 1
    # The rollout and its route are read from the controller's watch-fed caches (issue 23):
    # before them, each such reconcile read both from the API server.
    assert [(r.verb, r.resource) for r in after] == []


def test_sigterm_releases_the_lease_and_exits_zero(world: World, controller_process: ControllerFactory) -> None:
    lease = unique("lease")
    controller = controller_process.start("c1", "--namespace", world.namespace, lease_name=lease)
    world.apply(rollout_body("demo", world.incumbent, world.candidate))
    world.wait(lambda o: o.get("status", {}).get("weights", {}).get("candidate") == 20)

    code = controller.terminate()

    assert code == 0
    held = client.CoordinationV1Api(world.api).read_namespaced_lease(lease, controller_process.lease_namespace)
    assert not held.spec.holder_identity


def test_missing_route_is_a_condition_and_an_event_and_traffic_stays_put(
    world: World, controller_process: ControllerFactory
) -> None:
    controller_process.start("c1", "--namespace", world.namespace)
    body = rollout_body("demo", world.incumbent, world.candidate)
    body["spec"]["traffic"] = {"gatewayAPI": {"httpRoute": "no-such-route"}}
    world.apply(body)

    obj = world.wait(lambda o: o.get("status", {}).get("reason") == "RouteNotFound", timeout=30)

    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    assert conditions["Stalled"]["status"] == "True" and "no-such-route" in conditions["Stalled"]["message"]
    assert obj["status"]["phase"] == "Progressing" and "weights" not in obj["status"]
    assert ("Warning", "RouteNotFound") in [(t, r) for t, r, _ in world.events()]
    assert world.candidate_writes() == [] and world.route_weights() == {world.incumbent: 100, world.candidate: 0}
