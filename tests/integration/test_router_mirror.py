"""The shadow's mirror, against each backend's real CRD on the real API server (docs/shadow.md).

Given the backend objects of tests/integration/test_router_contract.py (an HTTPRoute of the
Gateway API v1.4 standard channel to Services or InferencePools, a VirtualService), when the
router adds our mirror to the comparator, changes its share and removes it, then the objects as
the API server has them (read by the test, never through the router) and the audit log show that:
- the API server accepts the mirror as written (the CRD's schema and CEL rules), the weights are
  untouched (the candidate gets no user traffic) and the router reads back what the object has;
- the same mirror twice makes no write; removal at promotion or rollback goes with the weights;
- a mirror the user wrote (to anywhere else) is never read as ours nor touched; on Istio, whose
  http route has one mirror, it stalls the shadow with MirrorInUse and nothing is written;
- a mirror an earlier shadow left (another comparator, status.pendingMirrorRemovals) is read as
  stale and removed with the next write, before ours is added (Istio has room for one);
- the routers that cannot mirror refuse a mirror with MirrorNotSupported, writing nothing, and
  have nothing to do when asked for none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from kubernetes import client

from controller.api.models import ALL_CANDIDATE, ALL_INCUMBENT, ComparatorRef, Weights
from controller.kube.objects import Objects
from controller.routers.base import RouterProblem, RouteTarget, Routing, TrafficRouter
from controller.routers.registry import router_for
from tests.support.backends import (
    BACKENDS,
    CANDIDATE,
    INCUMBENT,
    Backend,
    GatewayApiBackend,
    IstioBackend,
    install_inference_pool_crds,
    install_istio_crds,
    install_kserve_crds,
    install_llm_inference_service_crds,
)
from tests.support.controlplane import ControlPlane

COMPARATOR = ComparatorRef(service="fraud-comparator", port=8080)
MIRRORING = ("gatewayAPI", "gatewayAPI-inferencePool", "istio")


@pytest.fixture(scope="session")
def backend_crds(api_client: client.ApiClient, gateway_api: list[str]) -> list[str]:
    return [
        *gateway_api,
        *install_istio_crds(api_client),
        *install_kserve_crds(api_client),
        *install_llm_inference_service_crds(api_client),
        *install_inference_pool_crds(api_client),
    ]


def _backend(name: str, api_client: client.ApiClient, control_plane: ControlPlane, namespace: str) -> Backend:
    assert control_plane.audit_log is not None
    chosen = BACKENDS[name](api_client, namespace, control_plane.audit_log)
    chosen.create()
    return chosen


@pytest.fixture(params=MIRRORING)
def backend(
    request: pytest.FixtureRequest,
    backend_crds: list[str],
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    namespace: str,
) -> Iterator[Backend]:
    yield _backend(request.param, api_client, control_plane, namespace)


@pytest.fixture(params=("gatewayAPI", "gatewayAPI-inferencePool"))
def gateway_backend(
    request: pytest.FixtureRequest,
    backend_crds: list[str],
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    namespace: str,
) -> Iterator[Backend]:
    """The mirroring backends whose rule may hold several RequestMirror filters."""
    yield _backend(request.param, api_client, control_plane, namespace)


@pytest.fixture
def istio_backend(
    backend_crds: list[str], api_client: client.ApiClient, control_plane: ControlPlane, namespace: str
) -> Iterator[Backend]:
    """Istio: one mirror per http route."""
    yield _backend("istio", api_client, control_plane, namespace)


@pytest.fixture(params=sorted(set(BACKENDS) - set(MIRRORING)))
def no_mirror_backend(
    request: pytest.FixtureRequest,
    backend_crds: list[str],
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    namespace: str,
) -> Iterator[Backend]:
    yield _backend(request.param, api_client, control_plane, namespace)


def target(backend: Backend) -> RouteTarget:
    return RouteTarget(
        namespace=backend.namespace,
        rollout="fraud",
        traffic=backend.traffic(),
        incumbent=backend.model(INCUMBENT),
        candidate=backend.model(CANDIDATE),
        comparator=COMPARATOR,
    )


def router(backend: Backend, api_client: client.ApiClient) -> TrafficRouter:
    return router_for(backend.traffic(), Objects(api_client))


def mirrors_on_object(backend: Backend) -> list[dict[str, Any]]:
    """The mirrors the object has, as the API server stores them: (where it sends, share)."""
    if isinstance(backend, GatewayApiBackend):
        route = backend.get("models")
        return [
            {"to": f["requestMirror"]["backendRef"]["name"], "percent": f["requestMirror"].get("percent")}
            for rule in route["spec"]["rules"]
            for f in rule.get("filters") or []
            if f.get("type") == "RequestMirror"
        ]
    assert isinstance(backend, IstioBackend)
    vs = backend.get("fraud")
    return [
        {"to": http["mirror"]["host"], "percent": round((http.get("mirrorPercentage") or {"value": 100})["value"])}
        for http in vs["spec"]["http"]
        if "mirror" in http
    ]


def test_the_mirror_is_accepted_read_back_and_moves_no_user_traffic(
    backend: Backend, api_client: client.ApiClient
) -> None:
    r, t = router(backend, api_client), target(backend)
    assert r.routing(t) == Routing(ALL_INCUMBENT, 0)
    assert r.apply_routing(t, ALL_INCUMBENT, 20) == Routing(ALL_INCUMBENT, 20)
    assert mirrors_on_object(backend) == [{"to": "fraud-comparator", "percent": 20}]
    assert backend.served() == ALL_INCUMBENT
    assert r.routing(t) == Routing(ALL_INCUMBENT, 20)


def test_the_same_mirror_twice_writes_nothing_and_a_new_share_replaces_it(
    backend: Backend, api_client: client.ApiClient
) -> None:
    r, t = router(backend, api_client), target(backend)
    r.apply_routing(t, ALL_INCUMBENT, 20)
    before = len(backend.writes())
    assert r.apply_routing(t, ALL_INCUMBENT, 20) == Routing(ALL_INCUMBENT, 20)
    assert len(backend.writes()) == before
    assert r.apply_routing(t, ALL_INCUMBENT, 50) == Routing(ALL_INCUMBENT, 50)
    assert mirrors_on_object(backend) == [{"to": "fraud-comparator", "percent": 50}]


def test_step_one_removes_the_mirror_with_the_weights(backend: Backend, api_client: client.ApiClient) -> None:
    r, t = router(backend, api_client), target(backend)
    r.apply_routing(t, ALL_INCUMBENT, 20)
    assert r.apply_routing(t, Weights.for_candidate(10), 0) == Routing(Weights.for_candidate(10), 0)
    assert mirrors_on_object(backend) == []
    assert backend.served() == Weights.for_candidate(10)


@pytest.mark.parametrize("verdict", [ALL_INCUMBENT, ALL_CANDIDATE], ids=["rollback", "promotion"])
def test_a_verdict_removes_the_mirror(backend: Backend, api_client: client.ApiClient, verdict: Weights) -> None:
    r, t = router(backend, api_client), target(backend)
    r.apply_routing(t, ALL_INCUMBENT, 20)
    # The engine's verdicts go through plain apply: it removes a mirror of ours too.
    assert r.apply(t, verdict) == verdict
    assert mirrors_on_object(backend) == []
    assert r.routing(t) == Routing(verdict, 0)


def test_an_earlier_shadows_mirror_is_read_as_stale_and_removed_before_ours(
    backend: Backend, api_client: client.ApiClient
) -> None:
    """Review finding 3: a new candidate with another comparator must not orphan the old mirror."""
    r, old = router(backend, api_client), target(backend)
    r.apply_routing(old, ALL_INCUMBENT, 20)
    new = replace(old, comparator=ComparatorRef(service="next-comparator", port=8080), stale=(COMPARATOR,))
    assert r.routing(new) == Routing(ALL_INCUMBENT, 0, (COMPARATOR,))
    assert r.apply_routing(new, ALL_INCUMBENT, 30) == Routing(ALL_INCUMBENT, 30, ())
    assert mirrors_on_object(backend) == [{"to": "next-comparator", "percent": 30}]
    # No shadow any more (no comparator of its own): the stale one goes all the same.
    r.apply_routing(new, ALL_INCUMBENT, 30)
    gone = replace(old, comparator=None, stale=(COMPARATOR, ComparatorRef(service="next-comparator", port=8080)))
    assert r.apply_routing(gone, Weights.for_candidate(10), 0) == Routing(Weights.for_candidate(10), 0, ())
    assert mirrors_on_object(backend) == []


def test_the_users_own_gateway_mirror_is_left_alone(gateway_backend: Backend, api_client: client.ApiClient) -> None:
    backend = gateway_backend
    assert isinstance(backend, GatewayApiBackend)
    rule = backend.rule
    users = {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"name": "audit-sink", "port": 9000}, "percent": 5},
    }
    backend.json_patch("models", [{"op": "add", "path": f"/spec/rules/{rule}/filters", "value": [users]}])
    r, t = router(backend, api_client), target(backend)
    assert r.routing(t) == Routing(ALL_INCUMBENT, 0)
    r.apply_routing(t, ALL_INCUMBENT, 20)
    assert mirrors_on_object(backend) == [{"to": "audit-sink", "percent": 5}, {"to": "fraud-comparator", "percent": 20}]
    r.apply(t, ALL_INCUMBENT)
    assert mirrors_on_object(backend) == [{"to": "audit-sink", "percent": 5}]


def test_an_istio_route_that_mirrors_elsewhere_stalls_the_shadow(
    istio_backend: Backend, api_client: client.ApiClient
) -> None:
    backend = istio_backend
    assert isinstance(backend, IstioBackend)
    backend.json_patch(
        "fraud",
        [
            {"op": "add", "path": "/spec/http/1/mirror", "value": {"host": "audit-sink", "port": {"number": 9000}}},
            {"op": "add", "path": "/spec/http/1/mirrorPercentage", "value": {"value": 5.0}},
        ],
    )
    r, t = router(backend, api_client), target(backend)
    assert r.routing(t) == Routing(ALL_INCUMBENT, 0)
    before = len(backend.writes())
    with pytest.raises(RouterProblem) as caught:
        r.apply_routing(t, ALL_INCUMBENT, 20)
    assert caught.value.reason == "MirrorInUse" and "audit-sink" in caught.value.message
    assert len(backend.writes()) == before
    # Without a shadow, the user's mirror is simply not ours: weights are set, the mirror stays.
    assert r.apply(t, Weights.for_candidate(10)) == Weights.for_candidate(10)
    assert mirrors_on_object(backend) == [{"to": "audit-sink", "percent": 5}]


def test_routers_that_cannot_mirror_refuse_a_mirror_and_write_nothing(
    no_mirror_backend: Backend, api_client: client.ApiClient
) -> None:
    backend = no_mirror_backend
    r, t = router(backend, api_client), target(backend)
    before = len(backend.writes())
    with pytest.raises(RouterProblem) as caught:
        r.apply_routing(t, ALL_INCUMBENT, 20)
    assert caught.value.reason == "MirrorNotSupported"
    assert "gatewayAPI" in caught.value.message and "istio" in caught.value.message
    assert len(backend.writes()) == before
    # No mirror asked: nothing to do, and nothing mirrored read back.
    assert r.routing(t) == Routing(ALL_INCUMBENT, 0)
    assert r.apply_routing(t, ALL_INCUMBENT, 0) == Routing(ALL_INCUMBENT, 0)
    assert len(backend.writes()) == before
