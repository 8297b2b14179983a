"""The mirror plans of the Gateway API and Istio routers (docs/shadow.md): pure logic.

Each plan's RFC 6902 ops are applied here by a small applier (test, add, replace, remove, as the
API server applies them, a failed `test` failing the whole patch) so that every odd shape is
cheap; the same plans run against the real CRDs in tests/integration/test_router_mirror.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.models import ComparatorRef, ModelRef, Traffic
from controller.routers.base import RouterProblem, RouteTarget
from controller.routers.gatewayapi import HttpRouteWeights, mirror_percent
from controller.routers.istio import VirtualServiceWeights

COMPARATOR = ComparatorRef(service="cmp", port=8080)


class PatchFailed(Exception):
    pass


def apply_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(doc)

    def walk(path: str) -> tuple[Any, str]:
        parts = path.lstrip("/").split("/")
        node = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, parts[-1]

    for op in ops:
        parent, key = walk(op["path"])
        index: Any = (len(parent) if key == "-" else int(key)) if isinstance(parent, list) else key
        if op["op"] == "test":
            try:
                if parent[index] != op["value"]:
                    raise PatchFailed(op)
            except (KeyError, IndexError):
                raise PatchFailed(op) from None
        elif op["op"] == "add":
            if isinstance(parent, list):
                parent.insert(index, copy.deepcopy(op["value"]))
            else:
                parent[index] = copy.deepcopy(op["value"])
        elif op["op"] == "replace":
            parent[index] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[index]
    return doc


def target(traffic: dict[str, Any], comparator: ComparatorRef | None = COMPARATOR) -> RouteTarget:
    return RouteTarget(
        namespace="models",
        rollout="fraud",
        traffic=Traffic.model_validate(traffic),
        incumbent=ModelRef(name="fraud-v1"),
        candidate=ModelRef(name="fraud-v2"),
        comparator=comparator,
    )


GW = target({"gatewayAPI": {"httpRoute": "route"}})
ISTIO = target({"istio": {"virtualService": "vs", "host": "fraud"}})


def httproute(filters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"backendRefs": [{"name": "fraud-v1", "weight": 100}, {"name": "fraud-v2", "weight": 0}]}
    if filters is not None:
        rule["filters"] = filters
    other = {"matches": [{"path": {"value": "/debug"}}], "backendRefs": [{"name": "debug"}]}
    return {"spec": {"rules": [other, rule]}}


def user_mirror(name: str = "sink", percent: int = 5) -> dict[str, Any]:
    return {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": name, "port": 9000}, "percent": percent}}


def gw_set(route: dict[str, Any], percent: int) -> dict[str, Any]:
    plan = HttpRouteWeights()
    for patch in plan.mirror_patches(GW, [route], percent):
        assert isinstance(patch.body, list)
        route = apply_patch(route, patch.body)
    assert plan.mirrored(GW, [route]) == percent
    return route


@pytest.mark.parametrize("filters", [None, [], [user_mirror()], [{"type": "RequestHeaderModifier"}]])
def test_gateway_mirror_added_changed_removed_leaving_other_filters(filters: list[dict[str, Any]] | None) -> None:
    route = httproute(filters)
    with_mirror = gw_set(route, 20)
    ours = with_mirror["spec"]["rules"][1]["filters"][-1]
    assert ours == {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"name": "cmp", "port": 8080}, "percent": 20},
    }
    assert with_mirror["spec"]["rules"][0] == route["spec"]["rules"][0]
    changed = gw_set(with_mirror, 50)
    assert len(changed["spec"]["rules"][1]["filters"]) == len(with_mirror["spec"]["rules"][1]["filters"])
    removed = gw_set(changed, 0)
    assert (removed["spec"]["rules"][1].get("filters") or []) == (filters or [])


def test_gateway_no_write_when_the_mirror_is_there_or_absent_as_asked() -> None:
    plan = HttpRouteWeights()
    assert plan.mirror_patches(GW, [httproute()], 0) == []
    route = gw_set(httproute(), 20)
    assert plan.mirror_patches(GW, [route], 20) == []


def test_gateway_a_mirror_to_another_port_or_namespace_is_not_ours() -> None:
    other_port = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "cmp", "port": 9090}}}
    other_ns = {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"name": "cmp", "port": 8080, "namespace": "x"}},
    }
    route = httproute([other_port, other_ns])
    assert HttpRouteWeights().mirrored(GW, [route]) == 0
    assert gw_set(route, 0) == route


def test_gateway_duplicates_of_ours_collapse_to_one() -> None:
    mine = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "cmp", "port": 8080}, "percent": 10}}
    route = httproute([mine, user_mirror(), mine])
    fixed = gw_set(route, 30)
    names = [f["requestMirror"]["backendRef"]["name"] for f in fixed["spec"]["rules"][1]["filters"]]
    assert names == ["cmp", "sink"]
    assert gw_set(route, 0)["spec"]["rules"][1]["filters"] == [user_mirror()]


def test_gateway_a_reordered_rule_fails_the_test_ops() -> None:
    route = gw_set(httproute(), 20)
    (patch,) = HttpRouteWeights().mirror_patches(GW, [route], 0)
    moved = copy.deepcopy(route)
    moved["spec"]["rules"][1]["backendRefs"].reverse()
    assert isinstance(patch.body, list)
    with pytest.raises(PatchFailed):
        apply_patch(moved, patch.body)


@pytest.mark.parametrize(
    ("mirror", "percent"),
    [
        ({"percent": 7}, 7),
        ({"fraction": {"numerator": 1, "denominator": 4}}, 25),
        ({"fraction": {"numerator": 3}}, 3),
        ({}, 100),
    ],
)
def test_gateway_mirror_share(mirror: dict[str, Any], percent: int) -> None:
    assert (
        mirror_percent({"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "x"}, **mirror}}) == percent
    )


def test_without_a_comparator_there_is_no_mirror_of_ours() -> None:
    gw = target({"gatewayAPI": {"httpRoute": "route"}}, comparator=None)
    assert HttpRouteWeights().mirrored(gw, [gw_set(httproute(), 20)]) == 0
    assert HttpRouteWeights().mirror_patches(gw, [httproute()], 20) == []


def virtualservice(**route_extra: Any) -> dict[str, Any]:
    def dest(subset: str, weight: int) -> dict[str, Any]:
        return {"destination": {"host": "fraud", "subset": subset}, "weight": weight}

    return {
        "spec": {
            "http": [
                {"name": "debug", "route": [dest("fraud-v3", 100)]},
                {"name": "primary", "route": [dest("fraud-v1", 100), dest("fraud-v2", 0)], **route_extra},
            ]
        }
    }


def istio_set(vs: dict[str, Any], percent: int) -> dict[str, Any]:
    plan = VirtualServiceWeights()
    for patch in plan.mirror_patches(ISTIO, [vs], percent):
        assert isinstance(patch.body, list)
        vs = apply_patch(vs, patch.body)
    assert plan.mirrored(ISTIO, [vs]) == percent
    return vs


def test_istio_mirror_added_changed_removed() -> None:
    vs = virtualservice(retries={"attempts": 2})
    mirrored = istio_set(vs, 20)
    primary = mirrored["spec"]["http"][1]
    assert primary["mirror"] == {"host": "cmp", "port": {"number": 8080}}
    assert primary["mirrorPercentage"] == {"value": 20.0}
    assert istio_set(mirrored, 50)["spec"]["http"][1]["mirrorPercentage"] == {"value": 50.0}
    assert istio_set(mirrored, 0) == vs
    assert VirtualServiceWeights().mirror_patches(ISTIO, [mirrored], 20) == []


def test_istio_a_mirror_without_percentage_mirrors_everything() -> None:
    vs = virtualservice(mirror={"host": "cmp", "port": {"number": 8080}})
    assert VirtualServiceWeights().mirrored(ISTIO, [vs]) == 100
    assert "mirror" not in istio_set(vs, 0)["spec"]["http"][1]


def test_istio_a_users_mirror_is_never_replaced() -> None:
    vs = virtualservice(mirror={"host": "sink", "port": {"number": 9000}}, mirrorPercentage={"value": 5.0})
    plan = VirtualServiceWeights()
    assert plan.mirrored(ISTIO, [vs]) == 0
    assert plan.mirror_patches(ISTIO, [vs], 0) == []
    with pytest.raises(RouterProblem) as caught:
        plan.mirror_patches(ISTIO, [vs], 20)
    assert caught.value.reason == "MirrorInUse" and "sink" in caught.value.message


@given(st.lists(st.integers(0, 100), min_size=1, max_size=6))
def test_any_sequence_of_shares_reads_back_each_and_ends_clean(shares: list[int]) -> None:
    route, vs = httproute([user_mirror()]), virtualservice()
    for share in [*shares, 0]:
        route, vs = gw_set(route, share), istio_set(vs, share)
    assert route == httproute([user_mirror()]) and vs == virtualservice()
