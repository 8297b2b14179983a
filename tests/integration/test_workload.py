"""The plane with workload controllers (tests/support/workload.py): Deployments really roll out,
and Traefik routes to the pods' IPs that the real endpointslice controller wrote.

A plane of its own for this module (kube-controller-manager, kube-scheduler and kwok act on
everything in a plane: the shared session plane's tests do not expect that). kwok plays the
kubelet: pods get IPs from its `--cidr` (10.77.1.0/24, inside the range the host blackholes while
a test's network namespace exists) and become Ready without containers. For the routing test the
test adds those pod IPs to its network namespace's `lo` and listens there, so the EndpointSlices
the controller wrote point at real listeners. All traffic is on loopback or inside the namespace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.support.controlplane import ControlPlane
from tests.support.gatewayapi import install_gateway_api_crds, make_httproute
from tests.support.netns import network_namespace
from tests.support.traefik import (
    InsideBackend,
    Traefik,
    WeightTimeline,
    ensure_gateway_class,
    gateway,
    send,
    set_route_weights,
)
from tests.support.workload import Workload, live_pods, pod_network, ready_endpoints, rolled_out, running_cluster, until
from tests.support.world import unique

G, V = "gateway.networking.k8s.io", "v1"


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[ControlPlane, Workload, client.ApiClient]]:
    with running_cluster() as (plane, workload):
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        yield plane, workload, api


@pytest.fixture
def ns(cluster: tuple[ControlPlane, Workload, client.ApiClient]) -> str:
    name = unique("w")
    client.CoreV1Api(cluster[2]).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def deployment(name: str, replicas: int, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                # kwok runs no container: the image is never pulled.
                "spec": {
                    "containers": [{"name": "server", "image": "model-server:1", "ports": [{"containerPort": 8080}]}]
                },
            },
        },
    }


def service(name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        # The port has a name: Traefik matches the EndpointSlice's port by it.
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
    }


def test_a_deployment_rolls_out_and_its_service_gets_the_pods_ips(
    cluster: tuple[ControlPlane, Workload, client.ApiClient], ns: str
) -> None:
    api = cluster[2]
    apps, core, disc = client.AppsV1Api(api), client.CoreV1Api(api), client.DiscoveryV1Api(api)
    apps.create_namespaced_deployment(ns, deployment("web", 2, {"app": "web"}))
    core.create_namespaced_service(ns, service("web", {"app": "web"}))

    until("web rolled out", lambda: rolled_out(apps, ns, "web"))
    pods = live_pods(core, ns, "app=web")
    ips = {p.status.pod_ip for p in pods}
    assert len(pods) == 2 and len(ips) == 2, [(p.metadata.name, p.status.pod_ip) for p in pods]
    assert all(ipaddress.IPv4Address(ip) in pod_network() for ip in ips), ips
    assert {p.spec.node_name for p in pods} == {"kwok-node-0"}  # bound by the real scheduler
    assert all(p.status.phase == "Running" for p in pods)
    # The real endpointslice controller, not the test, wrote the Service's endpoints.
    until("endpoints = the pods' IPs", lambda: ready_endpoints(disc, ns, "web") == ips)

    # A template change: a new ReplicaSet, the old one scaled to 0, its pods deleted (kwok's
    # pod-delete stage), the endpoints following the new pods.
    patch = {"spec": {"template": {"metadata": {"annotations": {"rollout": "2"}}}}}
    apps.patch_namespaced_deployment("web", ns, patch)
    until("web rolled out again", lambda: rolled_out(apps, ns, "web"))
    sets = apps.list_namespaced_replica_set(ns, label_selector="app=web").items
    assert sorted(rs.spec.replicas for rs in sets) == [0, 2], [(rs.metadata.name, rs.spec.replicas) for rs in sets]
    new_pods = until(
        "the old pods gone",
        lambda: pods_now if len(pods_now := live_pods(core, ns, "app=web")) == 2 else None,
    )
    # All replaced (kwok may hand a freed IP to a new pod: compare the pods, not their IPs).
    assert not {p.metadata.uid for p in new_pods} & {p.metadata.uid for p in pods}
    new_ips = {p.status.pod_ip for p in new_pods}
    until("endpoints = the new pods' IPs", lambda: ready_endpoints(disc, ns, "web") == new_ips)


def test_kwok_renews_the_nodes_lease_so_the_node_and_its_pods_stay_ready(
    cluster: tuple[ControlPlane, Workload, client.ApiClient],
) -> None:
    """Without a renewed Lease (kwok's --node-lease-duration-seconds) the node lifecycle
    controller marks the node NotReady after its grace period and every pod on it not Ready: a
    Service's endpoints empty out ~40 s into a run (seen in the demo: Traefik "no available
    server"). Checked by the Lease itself, without waiting out the grace period."""
    leases = client.CoordinationV1Api(cluster[2])

    def renew_time() -> object:
        lease = leases.read_namespaced_lease("kwok-node-0", "kube-node-lease")
        assert lease.spec.lease_duration_seconds == 40, lease.spec  # held by the kwok process
        return lease.spec.renew_time

    first = until("the node's Lease", lambda: _or_none(renew_time))
    until("the node's Lease renewed", lambda: renew_time() != first, timeout=60)
    node = client.CoreV1Api(cluster[2]).read_node("kwok-node-0")
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"


def _or_none(read: Callable[[], object]) -> object | None:
    try:
        return read()
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_traefik_routes_by_weight_to_the_pod_ips_the_endpointslice_controller_wrote(
    cluster: tuple[ControlPlane, Workload, client.ApiClient], ns: str, tmp_path: Path
) -> None:
    plane, _, api = cluster
    apps, core, disc = client.AppsV1Api(api), client.CoreV1Api(api), client.DiscoveryV1Api(api)
    custom = client.CustomObjectsApi(api)
    install_gateway_api_crds(api)
    ensure_gateway_class(api)
    for name in ("model-a", "model-b"):
        apps.create_namespaced_deployment(ns, deployment(name, 1, {"model": name}))
        core.create_namespaced_service(ns, service(name, {"model": name}))
    ip = {}
    for name in ("model-a", "model-b"):
        until(f"{name} rolled out", lambda name=name: rolled_out(apps, ns, name))  # type: ignore[misc]
        (pod,) = live_pods(core, ns, f"model={name}")
        ip[name] = pod.status.pod_ip
        until(f"{name}'s endpoints", lambda name=name: ready_endpoints(disc, ns, name) == {ip[name]})  # type: ignore[misc]

    with network_namespace() as netns:
        backends = {}
        traefik = Traefik(ns=netns, plane=plane, workdir=tmp_path, namespaces=[ns])
        timeline: WeightTimeline | None = None
        try:
            for name, address in ip.items():
                netns.add_address(address)  # the pod's IP, where its "container" listens
                backends[name] = InsideBackend(netns, address, name)
            custom.create_namespaced_custom_object(G, V, ns, "gateways", gateway())
            custom.create_namespaced_custom_object(
                G, V, ns, "httproutes", make_httproute("models", [("model-a", 80), ("model-b", 20)])
            )
            traefik.start()
            timeline = WeightTimeline(traefik, ns, "models").start()
            assert traefik.entry is not None
            port = traefik.entry.port
            until(
                "Traefik's weights 80/20",
                lambda: timeline.timeline and timeline.timeline[-1][1] == {"model-a": 80, "model-b": 20},
            )
            until("a routed request", lambda: set(send(port, 1)) <= {"model-a", "model-b"}, timeout=60)

            # Weighted round robin: the shares are exact up to where the cycle started.
            seen = send(port, 100)
            assert sum(seen.values()) == 100 and set(seen) <= {"model-a", "model-b"}, seen
            assert abs(seen.get("model-a", 0) - 80) <= 2, seen

            def set_weights(a: int, b: int) -> None:
                set_route_weights(api, ns, "models", [a, b])
                until(
                    f"Traefik's weights {a}/{b}",
                    lambda: timeline.timeline[-1][1] == {"model-a": a, "model-b": b},  # type: ignore[union-attr]
                )

            # Once Traefik's API shows 0% (what WeightTimeline records for the e2e split check),
            # not one request reaches model-a.
            set_weights(0, 100)
            hits_a = backends["model-a"].hits
            assert send(port, 100) == {"model-b": 100}
            assert backends["model-a"].hits == hits_a

            # All weights 0: no backend gets a request; Traefik answers 503 (the Gateway API
            # says 500; the stand-in answers 500).
            set_weights(0, 0)
            hits = {name: b.hits for name, b in backends.items()}
            assert send(port, 20) == {"HTTP 503": 20}
            assert {name: b.hits for name, b in backends.items()} == hits

            set_weights(100, 0)
            assert send(port, 50) == {"model-a": 50}
            applied = [w for _, w in timeline.timeline]
            assert applied == [
                {"model-a": 80, "model-b": 20},
                {"model-a": 0, "model-b": 100},
                {"model-a": 0, "model-b": 0},
                {"model-a": 100, "model-b": 0},
            ], applied
            route = custom.get_namespaced_custom_object(G, V, ns, "httproutes", "models")
            conditions = {c["type"]: c["status"] for p in route["status"]["parents"] for c in p["conditions"]}
            assert conditions.get("Accepted") == "True" and conditions.get("ResolvedRefs") == "True", conditions
        finally:
            if timeline is not None:
                timeline.stop()
            traefik.stop()
            for backend in backends.values():
                backend.close()
