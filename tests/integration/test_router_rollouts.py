"""Whole rollouts through the controller process on the Istio, KServe and replica-ratio backends.

Gateway API rollouts are the engine scenarios (test_engine_scenarios.py); here the same healthy
rollout runs on each other backend's real objects. Afterwards the API server's audit log gives,
write by write, the split the objects made (the test's own reading, tests/support/backends.py)
and every weight the rollout's status claimed. Then: the data plane walked the steps in order
and ended on the candidate, and status never claimed a weight before the data plane served it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.api.models import Weights
from tests.support.audit import status_claims
from tests.support.backends import BACKENDS, Backend, ReplicasBackend, install_istio_crds, install_kserve_crds, uri
from tests.support.chart import apply_chart_rbac, create_namespace
from tests.support.controller import ControllerFactory
from tests.support.controlplane import ControlPlane
from tests.support.prometheus import ModelTraffic, PrometheusServer
from tests.support.world import World, phase, rollout_body, unique


@pytest.fixture(scope="session")
def backend_crds(api_client: client.ApiClient) -> list[str]:
    return [*install_istio_crds(api_client), *install_kserve_crds(api_client)]


class PodsStart:
    """The deployment controller and kubelet of the test plane: every 0.15 s, once started, the
    pods of what the router asked for become ready (a no-op on backends without Deployments)."""

    def __init__(self, backend: Backend, *, started: bool) -> None:
        self.backend = backend
        self.started = threading.Event()
        if started:
            self.started.set()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.15):
                if self.started.is_set():
                    self.backend.settle()
        except BaseException as exc:  # re-raised by stop(): a dead thread must fail the test
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.error is not None:
            raise self.error


def served_and_claimed(backend: Backend, world: World, incumbent: str, candidate: str) -> tuple[list[int], list[int]]:
    """What the data plane served and what status claimed, each in order, from the audit log
    (every write is there: no short-lived state is missed); and a check that status never
    claimed a weight before the objects served it."""
    served = backend.served_history(incumbent, candidate)
    assert world.plane.audit_log is not None
    claims = status_claims(world.plane.audit_log, world.namespace)
    for at, weight in claims:
        before = [w.candidate for t, w in served if t <= at]
        assert weight in before, f"status claimed {weight}% at {at} when the data plane had served only {before}"
    return [w.candidate for _, w in served], [w for i, (_, w) in enumerate(claims) if i == 0 or claims[i - 1][1] != w]


@pytest.fixture(params=["istio", "kserve", "replicas"])
def setup(
    request: pytest.FixtureRequest,
    backend_crds: list[str],
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    namespace: str,
    traffic: ModelTraffic,
) -> Iterator[tuple[Backend, World, str, str]]:
    assert control_plane.audit_log is not None
    backend = BACKENDS[request.param](api_client, namespace, control_plane.audit_log)
    incumbent, candidate = unique("fraud-a"), unique("fraud-b")
    backend.create(incumbent, candidate)
    traffic.set(incumbent, ok=20)
    traffic.set(candidate, ok=20)
    # World without its HTTPRoute: only its reads of the rollout are used.
    world = World.__new__(World)
    world.api, world.plane, world.namespace, world.traffic = api_client, control_plane, namespace, traffic
    world.custom = client.CustomObjectsApi(api_client)
    world.incumbent, world.candidate = incumbent, candidate
    yield backend, world, incumbent, candidate


def body(backend: Backend, incumbent: str, candidate: str) -> dict[str, Any]:
    rollout = rollout_body("demo", incumbent, candidate, traffic=backend.traffic_block())
    # The KServe router moves traffic by storageUri; the others ignore it.
    rollout["spec"]["incumbent"]["backend"] = {"storageUri": uri(incumbent)}
    rollout["spec"]["candidate"]["backend"] = {"storageUri": uri(candidate)}
    return rollout


def test_a_healthy_candidate_is_promoted_step_by_step_on_each_backend(
    setup: tuple[Backend, World, str, str], controller_process: ControllerFactory
) -> None:
    backend, world, incumbent, candidate = setup
    pods = PodsStart(backend, started=True)
    try:
        controller_process.start("c1", "--namespace", world.namespace)
        world.apply(body(backend, incumbent, candidate))
        obj = world.wait(phase("Promoted"))
    finally:
        pods.stop()

    assert obj["status"]["weights"] == {"incumbent": 0, "candidate": 100}
    assert backend.served(incumbent, candidate) == Weights.for_candidate(100)
    served, claimed = served_and_claimed(backend, world, incumbent, candidate)
    # The data plane moved forward only, through both steps, to the candidate.
    assert served == sorted(served), served
    assert {20, 50} <= set(served) and served[-1] == 100, served
    assert claimed[-1] == 100, claimed


def test_status_claims_a_replica_step_only_once_its_pods_are_ready(
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    namespace: str,
    traffic: ModelTraffic,
    controller_process: ControllerFactory,
) -> None:
    assert control_plane.audit_log is not None
    backend = ReplicasBackend(api_client, namespace, control_plane.audit_log)
    incumbent, candidate = unique("fraud-a"), unique("fraud-b")
    backend.create(incumbent, candidate)
    traffic.set(incumbent, ok=20)
    traffic.set(candidate, ok=20)
    world = World.__new__(World)
    world.api, world.plane, world.namespace, world.traffic = api_client, control_plane, namespace, traffic
    world.custom = client.CustomObjectsApi(api_client)
    pods = PodsStart(backend, started=False)
    try:
        controller_process.start("c1", "--namespace", namespace)
        world.apply(body(backend, incumbent, candidate))
        # The router asked for 2 of 10 replicas, but no pod is ready yet.
        world.wait(lambda o: backend.replicas(candidate)[0] == 2, timeout=30)
        time.sleep(5)  # two analysis intervals, several reconciles: whatever they did is checked below
        status = world.get()["status"]
        assert status.get("weights") in (None, {"incumbent": 100, "candidate": 0}), status.get("weights")
        assert status["phase"] == "Progressing" and status["currentStep"] == 0
        pods.started.set()
        world.wait(phase("Promoted"))
    finally:
        pods.stop()
    served, claimed = served_and_claimed(backend, world, incumbent, candidate)
    assert 20 in claimed and claimed[-1] == 100, claimed
    assert 20 in served and served[-1] == 100, served


def test_a_router_the_chart_did_not_grant_is_router_forbidden_and_nothing_moves(
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    namespace: str,
    traffic: ModelTraffic,
    prometheus: PrometheusServer,
    tmp_path: Path,
) -> None:
    """The chart's default RBAC (routers.replicas=false) under a real ServiceAccount token."""
    assert control_plane.audit_log is not None
    release_ns = create_namespace(api_client, unique("mr-system"))
    # A release name of its own: its ClusterRole must not replace the one of chart_identity ("mr").
    _, kubeconfig = apply_chart_rbac(control_plane, api_client, release_ns, tmp_path, release="mr-default")

    backend = ReplicasBackend(api_client, namespace, control_plane.audit_log)
    incumbent, candidate = unique("fraud-a"), unique("fraud-b")
    backend.create(incumbent, candidate)
    world = World.__new__(World)
    world.api, world.plane, world.namespace, world.traffic = api_client, control_plane, namespace, traffic
    world.custom = client.CustomObjectsApi(api_client)
    writes_before = len(backend.writes())
    factory = ControllerFactory(
        control_plane, prometheus_url=prometheus.url, kubeconfig=kubeconfig, lease_namespace=release_ns
    )
    try:
        factory.start("chart-default", "--namespace", namespace)
        world.apply(body(backend, incumbent, candidate))
        obj = world.wait(lambda o: (o.get("status") or {}).get("reason") == "RouterForbidden", timeout=60)
    finally:
        factory.stop_all()
    conditions = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
    assert conditions["Stalled"] == "True"
    assert "deployments.apps" in obj["status"]["message"] and "routers." in obj["status"]["message"]
    warnings = [m for t, r, m in world.events() if t == "Warning" and r == "RouterForbidden"]
    assert warnings and "traffic left as it is" in warnings[0]
    assert len(backend.writes()) == writes_before
    assert backend.replicas(candidate) == (0, 0) and backend.replicas(incumbent) == (10, 10)
