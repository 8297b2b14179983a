"""Fixtures of the fault-injection suite: the session plane and Prometheus, plus private planes
for the faults that would disturb other tests (a paused kube-apiserver, a compacted etcd).

Controllers run as the admin only here (the chart's RBAC is covered by tests/integration), so
each fault runs once. Every process started here is stopped here, and its pid checked at the
end of the session like the session plane's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.conftest import _session_pids
from tests.support.controller import ControllerFactory
from tests.support.controlplane import ControlPlane, running_control_plane
from tests.support.gatewayapi import install_gateway_api_crds
from tests.support.kube import install_crds
from tests.support.prometheus import ModelTraffic, PrometheusServer
from tests.support.world import World

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def controllers(control_plane: ControlPlane, prometheus: PrometheusServer) -> Iterator[ControllerFactory]:
    factory = ControllerFactory(control_plane, prometheus_url=prometheus.url)
    yield factory
    factory.stop_all()


class PrivatePlane:
    """A plane of one test's own, with our CRDs and Gateway API's installed."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        install_crds(self.api, REPO / "crds")
        install_gateway_api_crds(self.api)

    def world(self, traffic: ModelTraffic) -> World:
        name = "rel-" + os.urandom(4).hex()
        client.CoreV1Api(self.api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return World(self.api, self.plane, name, traffic)


def private_plane(*apiserver_args: str) -> Iterator[PrivatePlane]:
    with running_control_plane(audit=True, apiserver_args=list(apiserver_args)) as plane:
        _session_pids.extend(plane.pids())
        yield PrivatePlane(plane)


@pytest.fixture
def own_plane() -> Iterator[PrivatePlane]:
    yield from private_plane()


@pytest.fixture
def uncached_plane() -> Iterator[PrivatePlane]:
    """Watches served by etcd itself (--watch-cache=false), so etcd compaction reaches them."""
    yield from private_plane("--watch-cache=false")


def another_world(api: client.ApiClient, plane: ControlPlane, traffic: ModelTraffic, prefix: str = "t-rel") -> World:
    """One more namespace with its own route and models, on a plane the test already uses."""
    name = f"{prefix}-{os.urandom(4).hex()}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return World(api, plane, name, traffic)
