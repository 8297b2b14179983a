"""Traefik (tests/support/traefik.py) as the e2e suite uses it, without the workload controllers:
one entry point and Gateway listener per route (each route's parentRef names its listener by
`sectionName`), one WeightTimeline polling Traefik's API for all routes, and what Traefik answers
for all weights 0 and for a backendRef to a missing Service.

Backends are sockets of this process inside the test's network namespace, behind selector-less
Services and EndpointSlices the test writes (test_workload.py has the real endpointslice
controller). All traffic is on loopback or inside the namespace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from tests.support.controlplane import ControlPlane
from tests.support.gatewayapi import make_httproute
from tests.support.netns import network_namespace
from tests.support.traefik import (
    InsideBackend,
    Traefik,
    WeightTimeline,
    ensure_gateway_class,
    gateway,
    send,
    service_with_endpoints,
    set_route_weights,
)
from tests.support.workload import until

G, V = "gateway.networking.k8s.io", "v1"


def route(name: str, section: str, backends: list[tuple[str, int]]) -> dict[str, Any]:
    body = make_httproute(name, backends)
    body["spec"]["parentRefs"] = [{"name": "models-gateway", "sectionName": section}]
    return body


def test_one_entry_point_per_route_and_the_weights_traefik_applied(
    api_client: client.ApiClient, control_plane: ControlPlane, gateway_api: list[str], namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    core, disc, custom = (
        client.CoreV1Api(api_client),
        client.DiscoveryV1Api(api_client),
        client.CustomObjectsApi(api_client),
    )
    ensure_gateway_class(api_client)
    with network_namespace() as netns:
        names = ["one-a", "one-b", "two-a", "two-b"]
        backends: dict[str, InsideBackend] = {}
        traefik = Traefik(
            ns=netns, plane=control_plane, workdir=tmp_path, entry_points={"one": 8001, "two": 8002}, namespaces=[ns]
        )
        weights: WeightTimeline | None = None
        try:
            for name in names:
                address = netns.add_address()
                backends[name] = InsideBackend(netns, address, name)
                svc, eps = service_with_endpoints(name, [address])
                core.create_namespaced_service(ns, svc)
                disc.create_namespaced_endpoint_slice(ns, eps)
            custom.create_namespaced_custom_object(G, V, ns, "gateways", gateway(listeners={"one": 8001, "two": 8002}))
            custom.create_namespaced_custom_object(
                G, V, ns, "httproutes", route("one", "one", [("one-a", 100), ("one-b", 0)])
            )
            custom.create_namespaced_custom_object(
                G, V, ns, "httproutes", route("two", "two", [("two-a", 50), ("two-b", 50)])
            )
            traefik.start()
            weights = WeightTimeline(traefik, ns, ["one", "two"]).start()
            one, two = traefik.entries["one"].port, traefik.entries["two"].port
            until("both routers", lambda: all(weights.timelines.values()), timeout=60)  # type: ignore[union-attr]
            until("a routed request on one", lambda: send(one, 1) == {"one-a": 1}, timeout=60)
            until("a routed request on two", lambda: set(send(two, 1)) <= {"two-a", "two-b"}, timeout=60)

            # Each entry point serves its own route only.
            assert send(one, 40) == {"one-a": 40}
            seen = send(two, 40)
            assert set(seen) == {"two-a", "two-b"} and abs(seen["two-a"] - 20) <= 2, seen

            # A weight change on one route shows in its timeline only, and once it shows, the
            # 0% side gets nothing.
            set_route_weights(api_client, ns, "one", [0, 100])
            until("one at 0/100", lambda: weights.timelines["one"][-1][1] == {"one-a": 0, "one-b": 100})  # type: ignore[union-attr]
            hits = backends["one-a"].hits
            assert send(one, 40) == {"one-b": 40}
            assert backends["one-a"].hits == hits
            assert weights.timelines["two"] == weights.timelines["two"][:1], weights.timelines["two"]

            # All weights 0: 503 from Traefik, no backend asked.
            set_route_weights(api_client, ns, "one", [0, 0])
            until("one at 0/0", lambda: weights.timelines["one"][-1][1] == {"one-a": 0, "one-b": 0})  # type: ignore[union-attr]
            before = {n: b.hits for n, b in backends.items()}
            assert send(one, 10) == {"HTTP 503": 10}
            assert {n: b.hits for n, b in backends.items()} == before

            # A backendRef to a Service that does not exist: its share answers 500 (the Gateway
            # API's rule), the other share is served.
            body = custom.get_namespaced_custom_object(G, V, ns, "httproutes", "two")
            body["spec"]["rules"][0]["backendRefs"][1]["name"] = "no-such-service"
            custom.replace_namespaced_custom_object(G, V, ns, "httproutes", "two", body)
            until(
                "two naming no-such-service",
                lambda: "no-such-service" in weights.timelines["two"][-1][1],  # type: ignore[union-attr]
            )
            seen = send(two, 40)
            assert set(seen) == {"two-a", "HTTP 500"} and abs(seen["two-a"] - 20) <= 2, seen
            assert weights.errors == 0
        finally:
            if weights is not None:
                weights.stop()
            traefik.stop()
            for backend in backends.values():
                backend.close()
