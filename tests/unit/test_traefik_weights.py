"""tests/support/traefik.applied_weights: reading a route's applied weights from Traefik's API.

The payloads follow Traefik v3.6.12's naming (pkg/provider/kubernetes/gateway/httproute.go); the
router and child names are those seen in its access log on this machine (docs/development.md).
"""

from __future__ import annotations

from typing import Any

from tests.support.traefik import applied_weights

WRR = "httproute-{ns}-{route}-gw-{ns}-models-gateway-ep-web-{rule}-37415f09922c72ff63ca-wrr@kubernetesgateway"


def wrr(ns: str, route: str, rule: int, children: list[tuple[str, int | None]]) -> dict[str, Any]:
    services = []
    for backend, weight in children:
        child: dict[str, Any] = {"name": f"{ns}-{backend}-http-8080"}
        if weight is not None:
            child["weight"] = weight
        services.append(child)
    return {
        "name": WRR.format(ns=ns, route=route, rule=rule),
        "provider": "kubernetesgateway",
        "type": "weighted",
        "status": "enabled",
        "weighted": {"services": services},
    }


def leaf(name: str) -> dict[str, Any]:
    return {"name": name, "provider": "kubernetesgateway", "type": "loadbalancer", "loadBalancer": {"servers": []}}


def test_weights_by_backend_name_zero_kept() -> None:
    services = [
        leaf("default-model-a-http-8080@kubernetesgateway"),
        wrr("default", "models", 0, [("model-a", 80), ("model-b", 0)]),
        leaf("default-model-b-http-8080@kubernetesgateway"),
    ]
    assert applied_weights(services, "default", "models") == {"model-a": 80, "model-b": 0}


def test_no_router_yet_is_none() -> None:
    assert applied_weights([leaf("default-model-a-http-8080@kubernetesgateway")], "default", "models") is None


def test_other_routes_rules_and_namespaces_are_not_mixed_up() -> None:
    services = [
        wrr("default", "models-2", 0, [("x", 1)]),
        wrr("other", "models", 0, [("y", 1)]),
        wrr("default", "models", 1, [("z", 1)]),
        wrr("default", "models", 0, [("model-a", 50), ("model-b", 50)]),
    ]
    assert applied_weights(services, "default", "models") == {"model-a": 50, "model-b": 50}
    assert applied_weights(services, "default", "models", rule=1) == {"z": 1}
    assert applied_weights(services, "default", "models-2") == {"x": 1}


def test_a_missing_weight_is_the_gateway_api_default_1() -> None:
    services = [wrr("t-ns", "r", 0, [("m-1", None), ("m-2", 3)])]
    assert applied_weights(services, "t-ns", "r") == {"m-1": 1, "m-2": 3}
