"""Finding the rule and reading weights in an HTTPRoute, and the patch that writes them: pure logic.

The same route shapes go to the real API server in tests/integration/test_gatewayapi_router.py;
here every odd shape a route can take (including ones the CRD schema would refuse) is cheap.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client

from controller.api.models import ModelRef, Traffic
from controller.kube.objects import Objects
from controller.routers.base import RouterProblem, Weights
from controller.routers.gatewayapi import (
    BackendService,
    HttpRouteWeights,
    RuleBackends,
    find_backends,
    split_of,
    splits_as,
    weight_patch,
)
from controller.routers.istio import VirtualServiceWeights
from controller.routers.kserve import KServeCanary
from controller.routers.llmisvc import LlmInferenceServiceGroup
from controller.routers.registry import router_for
from controller.routers.replicas import ReplicaRatio

NS = "models"
LABEL = "HTTPRoute models/route"
INC = BackendService("fraud-v1")
CAND = BackendService("fraud-v2")


def ref(name: str, weight: Any = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


def route(*rules: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """A route body; a list is a rule's backendRefs, a dict a whole rule."""
    return {"spec": {"rules": [r if isinstance(r, dict) else {"backendRefs": r} for r in rules]}}


def find(
    body: dict[str, Any], inc: BackendService = INC, cand: BackendService = CAND, rule_name: str | None = None
) -> RuleBackends:
    return find_backends(body, label=LABEL, namespace=NS, incumbent=inc, candidate=cand, rule_name=rule_name)


def problem(body: dict[str, Any], **kwargs: Any) -> RouterProblem:
    with pytest.raises(RouterProblem) as caught:
        find(body, **kwargs)
    return caught.value


# -- which Service a model is ----------------------------------------------------------------------


def test_a_models_service_defaults_to_its_name_and_port_is_checked_only_when_given() -> None:
    assert BackendService.of(ModelRef(name="fraud-v1")) == BackendService("fraud-v1", None)
    model = ModelRef.model_validate({"name": "fraud-v1", "backend": {"service": "fraud-svc", "port": 9000}})
    assert BackendService.of(model) == BackendService("fraud-svc", 9000)
    only_port = ModelRef.model_validate({"name": "fraud-v1", "backend": {"port": 9000}})
    assert BackendService.of(only_port) == BackendService("fraud-v1", 9000)


# -- finding the rule -------------------------------------------------------------------------------


def test_the_first_rule_with_both_backends_is_chosen() -> None:
    body = route([ref("other", 1)], [ref("fraud-v1", 90), ref("fraud-v2", 10)], [ref("fraud-v1"), ref("fraud-v2")])
    found = find(body)
    assert (found.rule_index, found.incumbent.index, found.candidate.index) == (1, 0, 1)
    assert (found.incumbent.weight, found.candidate.weight) == (90, 10)


def test_a_rule_with_only_one_of_the_backends_is_passed_over() -> None:
    body = route([ref("fraud-v1", 100)], [ref("fraud-v2", 5), ref("mirror", 1), ref("fraud-v1", 95)])
    found = find(body)
    assert (found.rule_index, found.incumbent.index, found.candidate.index) == (1, 2, 0)


def test_rule_name_picks_the_named_rule_even_when_an_earlier_one_has_both() -> None:
    body = route(
        {"name": "shadow", "backendRefs": [ref("fraud-v1", 50), ref("fraud-v2", 50)]},
        {"name": "main", "backendRefs": [ref("fraud-v1", 99), ref("fraud-v2", 1)]},
    )
    found = find(body, rule_name="main")
    assert (found.rule_index, found.rule_name, found.incumbent.weight) == (1, "main", 99)
    assert find(body).rule_index == 0


def test_an_unknown_rule_name_is_backend_not_in_route() -> None:
    body = route({"name": "main", "backendRefs": [ref("fraud-v1"), ref("fraud-v2")]})
    p = problem(body, rule_name="canary")
    assert p.reason == "BackendNotInRoute"
    assert "no rule named canary" in p.message


def test_a_named_rule_without_the_candidate_names_the_candidates_service() -> None:
    body = route({"name": "main", "backendRefs": [ref("fraud-v1", 100)]}, [ref("fraud-v1"), ref("fraud-v2")])
    p = problem(body, rule_name="main")
    assert p.reason == "BackendNotInRoute"
    assert "rule main has no backendRef to Service fraud-v2 (the candidate's)" in p.message
    assert "fraud-v1" not in p.message.split("to ", 1)[1]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([[ref("fraud-v1", 100)]], "no backendRef to Service fraud-v2 (the candidate's)"),
        ([[ref("fraud-v2", 100)]], "no backendRef to Service fraud-v1 (the incumbent's)"),
        ([[ref("other")]], "nor to Service fraud-v2"),
        ([[ref("fraud-v1")], [ref("fraud-v2")]], "in different rules"),
        ([], "no backendRef to Service fraud-v1"),
    ],
)
def test_a_missing_backend_is_named(rules: list[list[dict[str, Any]]], expected: str) -> None:
    p = problem(route(*rules))
    assert p.reason == "BackendNotInRoute"
    assert expected in p.message
    assert LABEL in p.message


def test_a_route_without_rules_references_no_backend() -> None:
    assert problem({"spec": {}}).reason == "BackendNotInRoute"
    assert problem({"spec": {"rules": [{"matches": []}]}}).reason == "BackendNotInRoute"


@pytest.mark.parametrize(
    "other",
    [
        {"kind": "InferencePool", "group": "inference.networking.k8s.io"},
        {"kind": "Service", "group": "example.com"},
        {"namespace": "elsewhere"},
    ],
)
def test_refs_of_another_kind_group_or_namespace_are_not_the_models_service(other: dict[str, Any]) -> None:
    body = route([ref("fraud-v1", 90), ref("fraud-v2", 10, **other)])
    assert problem(body).reason == "BackendNotInRoute"


def test_explicit_defaults_of_kind_group_and_namespace_still_match() -> None:
    body = route([ref("fraud-v1", 90, kind="Service", group="", namespace=NS), ref("fraud-v2", 10)])
    assert find(body).candidate.index == 1


def test_a_model_port_must_match_the_refs_port() -> None:
    body = route([ref("fraud", 70, port=8080), ref("fraud", 30, port=9090)])
    found = find(body, inc=BackendService("fraud", 8080), cand=BackendService("fraud", 9090))
    assert (found.incumbent.weight, found.candidate.weight) == (70, 30)
    assert problem(route([ref("fraud-v1", port=80), ref("fraud-v2", port=80)]), cand=BackendService("fraud-v2", 81))


def test_a_service_referenced_twice_in_the_rule_is_ambiguous() -> None:
    body = route([ref("fraud-v1", 50, port=80), ref("fraud-v1", 50, port=81), ref("fraud-v2", 0, port=80)])
    p = problem(body)
    assert p.reason == "AmbiguousBackend"
    assert "backend.port" in p.message
    assert find(body, inc=BackendService("fraud-v1", 81)).incumbent.index == 1


def test_both_models_on_one_backend_ref_is_ambiguous() -> None:
    p = problem(route([ref("shared", 100)]), inc=BackendService("shared"), cand=BackendService("shared"))
    assert p.reason == "AmbiguousBackend"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"spec": "nope"},
        {"spec": {"rules": {"backendRefs": []}}},
        {"spec": {"rules": ["rule"]}},
        {"spec": {"rules": [{"backendRefs": "fraud-v1"}]}},
        {"spec": {"rules": [{"backendRefs": [ref("fraud-v1"), "fraud-v2"]}]}},
        route([ref("fraud-v1", "90"), ref("fraud-v2", 10)]),
        route([ref("fraud-v1", 90), ref("fraud-v2", 1.5)]),
        route([ref("fraud-v1", True), ref("fraud-v2", 0)]),
        route([ref("fraud-v1", 90), ref("fraud-v2", -1)]),
    ],
)
def test_a_malformed_route_is_a_problem_not_a_crash(body: dict[str, Any]) -> None:
    assert problem(body).reason == "MalformedRoute"


def test_a_malformed_weight_elsewhere_is_none_of_our_business() -> None:
    body = route([ref("fraud-v1", 90), ref("fraud-v2", 10), ref("third", "heavy")])
    assert find(body).candidate.weight == 10


# -- weights as percentages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inc", "cand", "expected"),
    [
        (100, 0, (100, 0)),
        (0, 100, (0, 100)),
        (90, 10, (90, 10)),
        (9, 1, (90, 10)),
        (3, 1, (75, 25)),
        (None, None, (50, 50)),  # both left out: 1 and 1
        (None, 3, (25, 75)),
        (2, 1, (67, 33)),
        (7, 1, (87, 13)),  # 12.5% rounds half up
        (1, 1000, (0, 100)),  # 99.9%: the incumbent's 0.1% does not show
    ],
)
def test_weights_become_percentages_of_the_two(inc: int | None, cand: int | None, expected: tuple[int, int]) -> None:
    found = find(route([ref("fraud-v1", inc), ref("third", 1000), ref("fraud-v2", cand)]))
    assert split_of(found, label=LABEL) == Weights(incumbent=expected[0], candidate=expected[1])


def test_zero_weight_on_both_is_a_problem_not_a_split() -> None:
    found = find(route([ref("fraud-v1", 0), ref("fraud-v2", 0), ref("fallback", 1)]))
    with pytest.raises(RouterProblem) as caught:
        split_of(found, label=LABEL)
    assert caught.value.reason == "ZeroWeights"
    assert "fraud-v1" in caught.value.message and "fraud-v2" in caught.value.message


@given(inc=st.integers(0, 1_000_000), cand=st.integers(0, 1_000_000))
def test_a_split_always_adds_up_to_100_and_is_the_nearest_percent(inc: int, cand: int) -> None:
    if inc + cand == 0:
        return
    weights = split_of(find(route([ref("fraud-v1", inc), ref("fraud-v2", cand)])), label=LABEL)
    assert weights.incumbent + weights.candidate == 100
    assert abs(weights.candidate - 100 * cand / (inc + cand)) <= 0.5


@given(candidate=st.integers(0, 100), scale=st.integers(1, 1000))
def test_a_route_already_at_the_ratio_needs_no_write(candidate: int, scale: int) -> None:
    wanted = Weights.for_candidate(candidate)
    found = find(route([ref("fraud-v1", wanted.incumbent * scale), ref("fraud-v2", wanted.candidate * scale)]))
    assert splits_as(found, wanted)
    assert split_of(found, label=LABEL) == wanted


@pytest.mark.parametrize(
    ("inc", "cand", "wanted"),
    [(2, 1, 33), (100, 0, 10), (0, 0, 0), (91, 9, 10), (None, None, 0)],
)
def test_a_route_off_the_ratio_needs_a_write(inc: int | None, cand: int | None, wanted: int) -> None:
    found = find(route([ref("fraud-v1", inc), ref("fraud-v2", cand)]))
    assert not splits_as(found, Weights(incumbent=100 - wanted, candidate=wanted))


# -- the patch ---------------------------------------------------------------------------------------


def test_the_patch_sets_only_the_two_weights_after_testing_what_was_read() -> None:
    body = route(
        [ref("elsewhere", 1)],
        {
            "name": "main",
            "filters": [{"type": "RequestHeaderModifier"}],
            "backendRefs": [ref("fraud-v2", port=8080), ref("mirror", 3), ref("fraud-v1", 100, port=8080)],
        },
    )
    found = find(body)
    ops = weight_patch(found, Weights(incumbent=80, candidate=20))
    assert ops == [
        {"op": "test", "path": "/spec/rules/1/name", "value": "main"},
        {"op": "test", "path": "/spec/rules/1/backendRefs/2/port", "value": 8080},
        {"op": "test", "path": "/spec/rules/1/backendRefs/2/name", "value": "fraud-v1"},
        {"op": "add", "path": "/spec/rules/1/backendRefs/2/weight", "value": 80},
        {"op": "test", "path": "/spec/rules/1/backendRefs/0/port", "value": 8080},
        {"op": "test", "path": "/spec/rules/1/backendRefs/0/name", "value": "fraud-v2"},
        {"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 20},
    ]


def test_the_patch_applied_to_the_route_changes_nothing_but_the_two_weights() -> None:
    body = route(
        {"backendRefs": [ref("fraud-v1", 100), ref("mirror", 3), ref("fraud-v2")], "filters": [{"type": "X"}]},
        [ref("fraud-v1", 1), ref("fraud-v2", 1)],
    )
    patched = apply_json_patch(body, weight_patch(find(body), Weights(incumbent=75, candidate=25)))
    expected = copy.deepcopy(body)
    expected["spec"]["rules"][0]["backendRefs"][0]["weight"] = 75
    expected["spec"]["rules"][0]["backendRefs"][2]["weight"] = 25
    assert patched == expected


def test_an_unnamed_rule_and_refs_without_ports_get_name_tests_only() -> None:
    ops = weight_patch(find(route([ref("fraud-v1", 1), ref("fraud-v2", 1)])), Weights(incumbent=50, candidate=50))
    assert [op["op"] for op in ops] == ["test", "add", "test", "add"]


def apply_json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Enough of RFC 6902 (test, add on an object member) to check the patch's effect."""
    out = copy.deepcopy(doc)
    for op in ops:
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "test":
            assert node[last] == op["value"], op
        else:
            assert op["op"] == "add"
            node[last] = op["value"]
    return out


# -- the registry ------------------------------------------------------------------------------------


def objects() -> Objects:
    return Objects(client.ApiClient())


def test_the_registry_gives_the_gateway_api_router_for_a_gateway_api_block() -> None:
    traffic = Traffic.model_validate({"gatewayAPI": {"httpRoute": "models"}})
    assert isinstance(router_for(traffic, objects()).plan, HttpRouteWeights)


@pytest.mark.parametrize(
    ("block", "kind"),
    [
        ({"istio": {"virtualService": "vs", "host": "models.svc"}}, VirtualServiceWeights),
        ({"kserve": {"inferenceService": "fraud"}}, KServeCanary),
        ({"replicas": {"totalReplicas": 4}}, ReplicaRatio),
        ({"llmInferenceService": {"group": "chat"}}, LlmInferenceServiceGroup),
    ],
)
def test_the_registry_gives_each_block_its_router(block: dict[str, Any], kind: type) -> None:
    assert isinstance(router_for(Traffic.model_validate(block), objects()).plan, kind)


def test_a_traffic_block_with_no_router_is_router_not_supported() -> None:
    with pytest.raises(RouterProblem) as caught:
        router_for(Traffic.model_construct(gateway_api=None, istio=None, kserve=None, replicas=None), objects())
    assert caught.value.reason == "RouterNotSupported"
    assert "traffic.gatewayAPI" in caught.value.message and "traffic.replicas" in caught.value.message
