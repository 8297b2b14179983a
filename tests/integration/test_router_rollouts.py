"""Whole rollouts through the controller process on the Istio, KServe and replica-ratio backends.

Gateway API rollouts are the engine scenarios (test_engine_scenarios.py); here the same healthy
rollout runs on each other backend's real objects, while a sampler reads, side by side, the split
the objects give (the test's own reading, tests/support/backends.py) and what the rollout's
status claims. Then: the data plane walks the steps in order and ends on the candidate, and
status never claims a weight the data plane did not have.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.api.models import Weights
from tests.support.backends import BACKENDS, Backend, ReplicasBackend, install_istio_crds, install_kserve_crds, uri
from tests.support.chart import (
    RBAC_KINDS,
    create_namespace,
    docs,
    helm_binary,
    helm_env_in,
    run,
    service_account_kubeconfig,
    template,
)
from tests.support.controller import ControllerFactory
from tests.support.controlplane import ControlPlane, bin_dir
from tests.support.prometheus import ModelTraffic, PrometheusServer
from tests.support.world import World, phase, rollout_body, unique


@pytest.fixture(scope="session")
def backend_crds(api_client: client.ApiClient) -> list[str]:
    return [*install_istio_crds(api_client), *install_kserve_crds(api_client)]


class Sampler:
    """Reads (what the objects serve, what status claims) every 0.15 s in a thread."""

    def __init__(self, backend: Backend, world: World, incumbent: str, candidate: str, *, settle: bool) -> None:
        self.backend, self.world, self.incumbent, self.candidate = backend, world, incumbent, candidate
        self.settle = threading.Event()
        if settle:
            self.settle.set()
        self.served: list[int] = []
        self.claimed: list[int] = []
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._sample()
        except BaseException as exc:  # re-raised by stop(): a dead sampler must fail the test
            self.error = exc

    def _sample(self) -> None:
        while not self._stop.is_set():
            if self.settle.is_set():
                self.backend.settle()  # the pods of what the router asked for become ready
            served = self.backend.served(self.incumbent, self.candidate).candidate
            try:
                claimed = (self.world.get().get("status") or {}).get("weights")
            except ApiException:
                claimed = None
            if not self.served or self.served[-1] != served:
                self.served.append(served)
            if claimed is not None and (not self.claimed or self.claimed[-1] != claimed["candidate"]):
                self.claimed.append(claimed["candidate"])
            time.sleep(0.15)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.error is not None:
            raise self.error


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
    sampler = Sampler(backend, world, incumbent, candidate, settle=True)
    try:
        controller_process.start("c1", "--namespace", world.namespace)
        world.apply(body(backend, incumbent, candidate))
        obj = world.wait(phase("Promoted"))
        time.sleep(0.5)  # one more sample of the settled state
    finally:
        sampler.stop()

    assert obj["status"]["weights"] == {"incumbent": 0, "candidate": 100}
    assert backend.served(incumbent, candidate) == Weights.for_candidate(100)
    # The data plane moved forward only, through both steps, to the candidate.
    assert sampler.served == sorted(sampler.served), sampler.served
    assert {20, 50} <= set(sampler.served) and sampler.served[-1] == 100, sampler.served
    # Status claimed only weights the data plane had (each claim seen served no later than claimed).
    assert sampler.claimed == [w for w in sampler.claimed if w in sampler.served], (sampler.claimed, sampler.served)
    assert sampler.claimed[-1] == 100


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
    sampler = Sampler(backend, world, incumbent, candidate, settle=False)
    try:
        controller_process.start("c1", "--namespace", namespace)
        world.apply(body(backend, incumbent, candidate))
        # The router asked for 2 of 10 replicas, but no pod is ready yet.
        world.wait(lambda o: backend.replicas(candidate)[0] == 2, timeout=30)
        time.sleep(5)  # two analysis intervals, several reconciles
        status = world.get()["status"]
        assert status.get("weights") in (None, {"incumbent": 100, "candidate": 0}), status.get("weights")
        assert status["phase"] == "Progressing" and status["currentStep"] == 0
        sampler.settle.set()  # the pods start
        world.wait(phase("Promoted"))
        time.sleep(0.5)  # one more sample of the settled state
    finally:
        sampler.stop()
    assert 20 in sampler.claimed and sampler.claimed[-1] == 100


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
    rendered = template(helm_binary(), helm_env_in(tmp_path), "mr-default", release_ns)
    rbac = [doc for doc in docs(rendered) if doc["kind"] in RBAC_KINDS]
    kubectl = [str(bin_dir() / "kubectl"), "--kubeconfig", str(control_plane.kubeconfig)]
    run([*kubectl, "apply", "--server-side", "-f", "-"], stdin=yaml.safe_dump_all(rbac))
    sa = next(doc["metadata"]["name"] for doc in rbac if doc["kind"] == "ServiceAccount")
    kubeconfig = service_account_kubeconfig(control_plane, api_client, release_ns, sa, tmp_path / "kubeconfig")

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
