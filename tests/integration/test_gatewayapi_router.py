"""The Gateway API router against the real API server with the official HTTPRoute CRD.

Given an HTTPRoute in a fresh namespace, when the router reads or sets the weights, then the
route as the API server has it (a direct read, never the router's word) and the API server's
audit log of writes show that exactly two weight fields changed, and only when they had to.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.api.models import ModelRef, Traffic
from controller.core.clock import SystemClock
from controller.kube.errors import Invalid
from controller.kube.objects import Objects, Resource
from controller.routers.base import RouterProblem, RouteTarget, TrafficRouter, Weights
from controller.routers.gatewayapi import HttpRouteWeights
from controller.routers.registry import router_for
from tests.support.audit import Write, writes
from tests.support.controlplane import ControlPlane
from tests.support.gatewayapi import GROUP, PLURAL, VERSION, make_httproute

pytestmark = pytest.mark.usefixtures("gateway_api")

INCUMBENT, CANDIDATE = "fraud-v1", "fraud-v2"


class Routes:
    """Direct access to the namespace's HTTPRoutes: how the tests set the scene and check it."""

    def __init__(self, api: client.ApiClient, namespace: str, audit_log: Path) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.audit_log = audit_log

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return created

    def get(self, name: str = "models") -> dict[str, Any]:
        route: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        return route

    def names(self) -> list[str]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)["items"]
        return [item["metadata"]["name"] for item in items]

    def json_patch(self, ops: list[dict[str, Any]], name: str = "models") -> None:
        """A write by someone else (a human, another controller)."""
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, ops, _content_type="application/json-patch+json"
        )

    def weights(self, name: str = "models", rule: int = 0) -> dict[str, int]:
        return {ref["name"]: ref["weight"] for ref in self.get(name)["spec"]["rules"][rule]["backendRefs"]}

    def router_patches(self) -> list[Write]:
        """Patches carrying `test` ops: the router's (the scene-setting patches here have none)."""
        return [
            w
            for w in writes(self.audit_log, namespace=self.namespace, resource=PLURAL)
            if w.verb == "patch" and isinstance(w.request, list) and any(op.get("op") == "test" for op in w.request)
        ]

    def all_writes(self) -> list[Write]:
        return writes(self.audit_log, namespace=self.namespace, resource=PLURAL)


@pytest.fixture
def routes(api_client: client.ApiClient, control_plane: ControlPlane, namespace: str) -> Routes:
    assert control_plane.audit_log is not None
    return Routes(api_client, namespace, control_plane.audit_log)


@pytest.fixture
def router(api_client: client.ApiClient) -> TrafficRouter:
    return gateway_api_router(Objects(api_client))


def gateway_api_router(objects: Objects) -> TrafficRouter:
    return TrafficRouter(HttpRouteWeights(), objects, SystemClock())


def target(
    namespace: str,
    *,
    route: str = "models",
    rule_name: str | None = None,
    incumbent: dict[str, Any] | None = None,
    candidate: dict[str, Any] | None = None,
) -> RouteTarget:
    block: dict[str, Any] = {"httpRoute": route}
    if rule_name is not None:
        block["ruleName"] = rule_name
    return RouteTarget(
        namespace=namespace,
        rollout="fraud-scorer",
        traffic=Traffic.model_validate({"gatewayAPI": block}),
        incumbent=ModelRef.model_validate(incumbent or {"name": INCUMBENT}),
        candidate=ModelRef.model_validate(candidate or {"name": CANDIDATE}),
    )


def split(candidate: int) -> Weights:
    return Weights.for_candidate(candidate)


# -- reading ------------------------------------------------------------------------------------


def test_applied_reads_the_two_weights_as_percentages(routes: Routes, router: TrafficRouter, namespace: str) -> None:
    routes.create(make_httproute("models", [(INCUMBENT, 90), ("fallback", 500), (CANDIDATE, 10)]))
    assert router.applied(target(namespace)) == split(10)

    routes.create(make_httproute("scaled", [(INCUMBENT, 3), (CANDIDATE, 1)]))
    assert router.applied(target(namespace, route="scaled")) == split(25)
    assert routes.all_writes()[-1].verb == "create", "reading wrote nothing"


def test_a_backend_ref_without_weight_counts_as_weight_1(routes: Routes, router: TrafficRouter, namespace: str) -> None:
    routes.create(make_httproute("models", [(INCUMBENT, None), (CANDIDATE, 3)]))
    assert router.applied(target(namespace)) == split(75)


# -- writing ------------------------------------------------------------------------------------


def test_apply_sets_each_steps_weights_and_returns_what_the_server_has(
    routes: Routes, api_client: client.ApiClient, namespace: str
) -> None:
    routes.create(make_httproute("models", [(INCUMBENT, 100), (CANDIDATE, 0)]))
    rollout = target(namespace)
    router = router_for(rollout.traffic, Objects(api_client))  # the path the reconciler takes

    for step in (5, 10, 25, 50, 100, 0):
        read_back = router.apply(rollout, split(step))

        assert read_back == split(step)
        assert routes.weights() == {INCUMBENT: 100 - step, CANDIDATE: step}
        assert router.applied(rollout) == split(step)
    assert [w.code for w in routes.router_patches()] == [200] * 6


def test_a_second_apply_with_the_same_weights_writes_nothing(
    routes: Routes, router: TrafficRouter, namespace: str
) -> None:
    routes.create(make_httproute("models", [(INCUMBENT, 100), (CANDIDATE, 0)]))
    rollout = target(namespace)
    router.apply(rollout, split(20))
    after_first = routes.get()["metadata"]
    assert after_first["generation"] == 2, "the first apply wrote the spec"

    assert router.apply(rollout, split(20)) == split(20)
    assert router.apply(rollout, split(20)) == split(20)

    meta = routes.get()["metadata"]
    assert (meta["resourceVersion"], meta["generation"]) == (after_first["resourceVersion"], 2)
    assert len(routes.router_patches()) == 1


def test_a_route_already_at_the_asked_ratio_is_not_rewritten(
    routes: Routes, router: TrafficRouter, namespace: str
) -> None:
    routes.create(make_httproute("models", [(INCUMBENT, 9), (CANDIDATE, 1)]))

    assert router.apply(target(namespace), split(10)) == split(10)

    assert routes.weights() == {INCUMBENT: 9, CANDIDATE: 1}
    assert routes.router_patches() == []


def test_foreign_changes_to_everything_else_survive_our_writes(
    routes: Routes, router: TrafficRouter, namespace: str
) -> None:
    header = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-pool", "value": "a"}]}}
    other_rule = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/explain"}}],
        "backendRefs": [{"name": "explainer", "port": 8080, "weight": 1}],
    }
    routes.create(
        make_httproute(
            "models",
            [(INCUMBENT, 100), (CANDIDATE, 0), ("shadow-model", 0)],
            filters=[header],
            extra_rules=[other_rule],
            labels={"team": "fraud"},
        )
    )
    rollout = target(namespace)
    router.apply(rollout, split(10))

    # Given someone else changes a third backend's weight, a filter, another rule and a label,
    routes.json_patch(
        [
            {"op": "replace", "path": "/spec/rules/0/backendRefs/2/weight", "value": 7},
            {"op": "replace", "path": "/spec/rules/0/filters/0/requestHeaderModifier/set/0/value", "value": "b"},
            {"op": "add", "path": "/spec/rules/1/backendRefs/-", "value": {"name": "explainer-v2", "port": 8080}},
            {"op": "add", "path": "/metadata/labels/owner", "value": "platform"},
        ]
    )
    # and a gateway controller writes the route's status,
    parent_status = {
        "parentRef": {"name": "models-gateway"},
        "controllerName": "example.com/gateway-controller",
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 2,
            }
        ],
    }
    routes.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "models", {"status": {"parents": [parent_status]}}
    )
    before = routes.get()

    # when the router moves to the next step,
    assert router.apply(rollout, split(50)) == split(50)

    # then only our two weights differ.
    after = routes.get()
    expected = copy.deepcopy(before["spec"])
    expected["rules"][0]["backendRefs"][0]["weight"] = 50
    expected["rules"][0]["backendRefs"][1]["weight"] = 50
    assert after["spec"] == expected
    assert after["spec"]["rules"][0]["backendRefs"][2]["weight"] == 7
    assert after["metadata"]["labels"] == {"team": "fraud", "owner": "platform"}
    assert after["status"] == before["status"]


def test_rule_name_selects_the_rule_and_leaves_an_earlier_rule_with_both_backends_alone(
    routes: Routes, router: TrafficRouter, namespace: str
) -> None:
    main = {
        "name": "main",
        "matches": [{"path": {"type": "PathPrefix", "value": "/predict"}}],
        "backendRefs": [
            {"name": INCUMBENT, "port": 8080, "weight": 100},
            {"name": CANDIDATE, "port": 8080, "weight": 0},
        ],
    }
    routes.create(make_httproute("models", [(INCUMBENT, 50), (CANDIDATE, 50)], rule_name="shadow", extra_rules=[main]))

    assert router.applied(target(namespace, rule_name="main")) == split(0)
    assert router.applied(target(namespace, rule_name="shadow")) == split(50)
    assert router.applied(target(namespace)) == split(50), "without ruleName: the first rule with both"

    assert router.apply(target(namespace, rule_name="main"), split(30)) == split(30)
    assert routes.weights(rule=1) == {INCUMBENT: 70, CANDIDATE: 30}
    assert routes.weights(rule=0) == {INCUMBENT: 50, CANDIDATE: 50}


def test_model_backend_service_and_port_pick_the_backend_ref(
    routes: Routes, router: TrafficRouter, namespace: str
) -> None:
    routes.create(make_httproute("models", [("fraud-svc", 100)], port=8080))
    routes.json_patch(
        [
            {
                "op": "add",
                "path": "/spec/rules/0/backendRefs/-",
                "value": {"name": "fraud-svc", "port": 9090, "weight": 0},
            }
        ]
    )
    rollout = target(
        namespace,
        incumbent={"name": INCUMBENT, "backend": {"service": "fraud-svc", "port": 8080}},
        candidate={"name": CANDIDATE, "backend": {"service": "fraud-svc", "port": 9090}},
    )

    assert router.apply(rollout, split(40)) == split(40)
    refs = routes.get()["spec"]["rules"][0]["backendRefs"]
    assert [(r["port"], r["weight"]) for r in refs] == [(8080, 60), (9090, 40)]


# -- problems a user must fix: no write ---------------------------------------------------------


def test_a_missing_route_is_route_not_found_and_nothing_is_created(
    routes: Routes, router: TrafficRouter, namespace: str
) -> None:
    for call in (lambda: router.applied(target(namespace)), lambda: router.apply(target(namespace), split(10))):
        with pytest.raises(RouterProblem) as caught:
            call()
        assert caught.value.reason == "RouteNotFound"
        assert f"HTTPRoute {namespace}/models not found" in caught.value.message

    assert routes.names() == []
    assert routes.all_writes() == []


def test_a_route_without_the_candidates_backend_is_backend_not_in_route_and_unchanged(
    routes: Routes, router: TrafficRouter, namespace: str
) -> None:
    routes.create(make_httproute("models", [(INCUMBENT, 100), ("fallback", 1)]))
    before = routes.get()

    with pytest.raises(RouterProblem) as caught:
        router.apply(target(namespace), split(10))

    assert caught.value.reason == "BackendNotInRoute"
    assert f"Service {CANDIDATE} (the candidate's)" in caught.value.message
    assert routes.get() == before
    assert routes.router_patches() == []


def test_an_unknown_rule_name_is_backend_not_in_route(routes: Routes, router: TrafficRouter, namespace: str) -> None:
    routes.create(make_httproute("models", [(INCUMBENT, 100), (CANDIDATE, 0)], rule_name="main"))

    with pytest.raises(RouterProblem) as caught:
        router.apply(target(namespace, rule_name="canary"), split(10))

    assert caught.value.reason == "BackendNotInRoute" and "no rule named canary" in caught.value.message
    assert routes.router_patches() == []


# -- read back and concurrent writers ----------------------------------------------------------


class CappingObjects(Objects):
    """Stands in for a mutating admission webhook that caps the candidate's weight at 5."""

    def json_patch(self, resource: Resource, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        capped, cap_next = [], False
        for op in ops:
            if cap_next and op["op"] == "add":
                op = {**op, "value": min(op["value"], 5)}
            cap_next = op["op"] == "test" and op["value"] == CANDIDATE
            capped.append(op)
        return super().json_patch(resource, namespace, name, capped)


def test_apply_returns_the_weights_read_back_not_the_ones_asked_for(
    routes: Routes, api_client: client.ApiClient, namespace: str
) -> None:
    routes.create(make_httproute("models", [(INCUMBENT, 100), (CANDIDATE, 0)]))
    router = gateway_api_router(CappingObjects(api_client))

    read_back = router.apply(target(namespace), split(30))

    assert routes.weights() == {INCUMBENT: 70, CANDIDATE: 5}
    assert read_back == split(7)  # 5 / 75, as the server has it


class ReorderingObjects(Objects):
    """Another writer reverses the route's backendRefs right before each of our next `times` patches."""

    def __init__(self, api: client.ApiClient, routes: Routes, times: int) -> None:
        super().__init__(api)
        self.routes, self.times = routes, times

    def json_patch(self, resource: Resource, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        if self.times > 0:
            self.times -= 1
            refs = self.routes.get(name)["spec"]["rules"][0]["backendRefs"]
            self.routes.json_patch([{"op": "replace", "path": "/spec/rules/0/backendRefs", "value": refs[::-1]}], name)
        return super().json_patch(resource, namespace, name, ops)


def test_a_concurrent_reorder_fails_our_patch_and_the_retry_hits_the_right_backends(
    routes: Routes, api_client: client.ApiClient, namespace: str
) -> None:
    routes.create(make_httproute("models", [(INCUMBENT, 100), (CANDIDATE, 0)]))
    router = gateway_api_router(ReorderingObjects(api_client, routes, times=1))

    assert router.apply(target(namespace), split(25)) == split(25)

    assert routes.weights() == {INCUMBENT: 75, CANDIDATE: 25}
    assert [ref["name"] for ref in routes.get()["spec"]["rules"][0]["backendRefs"]] == [CANDIDATE, INCUMBENT]
    assert [w.code for w in routes.router_patches()] == [422, 200]


def test_a_route_that_keeps_changing_raises_invalid_without_a_wrong_write(
    routes: Routes, api_client: client.ApiClient, namespace: str
) -> None:
    routes.create(make_httproute("models", [(INCUMBENT, 100), (CANDIDATE, 0)]))
    router = gateway_api_router(ReorderingObjects(api_client, routes, times=99))

    with pytest.raises(Invalid):
        router.apply(target(namespace), split(25))

    assert routes.weights() == {INCUMBENT: 100, CANDIDATE: 0}
    assert [w.code for w in routes.router_patches()] == [422, 422, 422]


class DeletingObjects(Objects):
    """The route is deleted between our read and our patch."""

    def __init__(self, api: client.ApiClient, routes: Routes) -> None:
        super().__init__(api)
        self.routes = routes

    def json_patch(self, resource: Resource, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        self.routes.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return super().json_patch(resource, namespace, name, ops)


def test_a_route_deleted_under_us_is_route_not_found(
    routes: Routes, api_client: client.ApiClient, namespace: str
) -> None:
    routes.create(make_httproute("models", [(INCUMBENT, 100), (CANDIDATE, 0)]))
    router = gateway_api_router(DeletingObjects(api_client, routes))

    with pytest.raises(RouterProblem) as caught:
        router.apply(target(namespace), split(10))

    assert caught.value.reason == "RouteNotFound"
    assert routes.names() == []
