"""Session fixtures: one real control plane (etcd + kube-apiserver) with our CRDs installed.

Nothing here skips: if a component is missing the fixture builds or installs it, or fails.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from kubernetes import client, config

from tests.support.backends import ReplicasWithControllers
from tests.support.chart import chart_service_account, forbidden
from tests.support.controller import ControllerFactory
from tests.support.controlplane import ControlPlane, bin_dir, running_control_plane
from tests.support.kube import install_crds
from tests.support.prometheus import Exporter, ModelTraffic, PrometheusServer
from tests.support.world import World

REPO = Path(__file__).resolve().parents[1]
_session_pids: list[int] = []

# How fast an example runs is no test's business: on a busy 2-core machine Hypothesis' per-example
# deadline and its too-slow health check would fail correct code. Properties are checked in full.
settings.register_profile("modelrollout", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("modelrollout")


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with running_control_plane(audit=True) as plane:
        _session_pids.extend(plane.pids())
        yield plane


@pytest.fixture(scope="session")
def workload_cluster() -> Iterator[tuple[ControlPlane, client.ApiClient]]:
    """A second plane, with kube-controller-manager, kube-scheduler and kwok (tests/support/workload.py):
    for the tests of what the real deployment controller does. Started once, when first asked for."""
    from tests.support.workload import running_cluster

    with running_cluster(audit=True) as (plane, workload):
        _session_pids.extend([*plane.pids(), *workload.pids()])
        yield plane, config.new_client_from_config(config_file=str(plane.kubeconfig))


@pytest.fixture
def replicas_under_controllers(
    workload_cluster: tuple[ControlPlane, client.ApiClient],
) -> Iterator[ReplicasWithControllers]:
    """Two Deployments (tests/support/backends.py) in a fresh namespace of the workload plane,
    rolled out by the real deployment controller; the namespace is deleted after the test (the
    namespace controller and kwok remove its pods: the kwok node holds 250, its pod range 254)."""
    plane, api = workload_cluster
    assert plane.audit_log is not None
    core = client.CoreV1Api(api)
    namespace = f"replicas-{os.urandom(4).hex()}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    backend = ReplicasWithControllers(api, namespace, plane.audit_log)
    backend.create()
    yield backend
    core.delete_namespace(namespace)


@pytest.fixture(scope="session")
def api_client(control_plane: ControlPlane) -> client.ApiClient:
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    install_crds(api, REPO / "crds")
    return api


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Iterator[list[str]]:
    """argv prefix of the real kubectl (the one built with the plane) bound to the plane."""
    binary = bin_dir() / "kubectl"
    yield [str(binary if binary.exists() else "kubectl"), "--kubeconfig", str(control_plane.kubeconfig)]


@pytest.fixture
def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (the plane has no namespace controller, so we clean up ourselves)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:40].strip("-")
    name = "t-" + slug
    name = name + "-" + os.urandom(4).hex()  # 70 cases share a prefix: 16 bits collided
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any control-plane process outlived the session."""
    alive = [pid for pid in _session_pids if _alive(pid)]
    if alive:
        session.exitstatus = 1
        print(f"\nFAIL: control-plane processes still running after the session: {alive}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes, but Popen.wait reaped ours already.
    return True


# -- engine fixtures: Gateway API CRDs, a real Prometheus scraping a real exporter, the controller


@pytest.fixture(scope="session")
def gateway_api(api_client: client.ApiClient) -> list[str]:
    from tests.support.gatewayapi import install_gateway_api_crds

    return install_gateway_api_crds(api_client)


@pytest.fixture(scope="session")
def exporter() -> Iterator[Exporter]:
    exp = Exporter()
    yield exp
    exp.close()


@pytest.fixture(scope="session")
def prometheus(exporter: Exporter) -> Iterator[PrometheusServer]:
    server = PrometheusServer([exporter.port]).start()
    yield server
    server.close()
    # Every process it ran, restarts included, is checked at the end of the session.
    _session_pids.extend(server.pids)


@pytest.fixture
def traffic(exporter: Exporter) -> Iterator[ModelTraffic]:
    load = ModelTraffic(exporter)
    yield load
    load.stop()


@pytest.fixture(scope="session")
def chart_identity(
    control_plane: ControlPlane, api_client: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str, Path]:
    """(release namespace, user, kubeconfig) of the Helm chart's ServiceAccount under its RBAC."""
    return chart_service_account(control_plane, api_client, tmp_path_factory.mktemp("chart"))


@pytest.fixture(params=["admin", "chart-rbac"])
def controller_process(
    request: pytest.FixtureRequest, control_plane: ControlPlane, prometheus: PrometheusServer
) -> Iterator[ControllerFactory]:
    """Controllers for one test, run twice: as the admin, and as the chart's ServiceAccount with
    exactly the chart's RBAC, which must never be refused (zero 403s in the audit log)."""
    if request.param == "admin":
        factory = ControllerFactory(control_plane, prometheus_url=prometheus.url)
        yield factory
        factory.stop_all()
        return
    release_ns, user, kubeconfig = request.getfixturevalue("chart_identity")
    factory = ControllerFactory(
        control_plane, prometheus_url=prometheus.url, kubeconfig=kubeconfig, lease_namespace=release_ns
    )
    yield factory
    factory.stop_all()
    assert control_plane.audit_log is not None
    _, refused = forbidden(control_plane.audit_log, user)
    assert refused == [], f"the chart's RBAC refused the controller: {refused[:5]}"


@pytest.fixture
def world(api_client: client.ApiClient, control_plane: ControlPlane, namespace: str, traffic: ModelTraffic) -> World:
    """A namespace with an HTTPRoute between two model Services that receive traffic."""
    return World(api_client, control_plane, namespace, traffic)
