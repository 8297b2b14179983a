"""Bad input is refused by the API server itself, with a message naming the field, and by the models."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from controller.api import GROUP, PLURAL, VERSION, ModelRolloutSpec
from tests.support.objects import minimal_rollout

Mutation = Callable[[dict[str, Any]], None]


def setter(path: str, value: Any) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        node: Any = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def deleter(path: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        node: Any = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[keys[-1]]

    return mutate


def guardrail(**body: Any) -> Mutation:
    return setter("guardrails", [{"name": "g", **body}])


G = "spec.guardrails[0]"
CASES: list[tuple[str, Mutation, str]] = [
    ("weights not increasing", setter("canary.steps", [{"weight": 50}, {"weight": 10}]), "spec.canary.steps"),
    ("equal weights", setter("canary.steps", [{"weight": 10}, {"weight": 10}]), "spec.canary.steps"),
    ("weight above 100", setter("canary.steps", [{"weight": 120}]), "spec.canary.steps[0].weight"),
    ("negative weight", setter("canary.steps", [{"weight": -5}]), "spec.canary.steps[0].weight"),
    ("empty steps", setter("canary.steps", []), "spec.canary.steps"),
    ("steps and linear", setter("canary.linear", {"stepWeight": 10, "maxWeight": 50, "hold": "1m"}), "spec.canary"),
    ("neither steps nor linear", setter("canary", {"afterLastStep": "Promote"}), "spec.canary"),
    (
        "linear step above max",
        setter("canary", {"linear": {"stepWeight": 60, "maxWeight": 50, "hold": "1m"}}),
        "spec.canary.linear.stepWeight",
    ),
    ("two router blocks", setter("traffic.kserve", {"inferenceService": "x"}), "spec.traffic"),
    ("no router block", setter("traffic", {}), "spec.traffic"),
    ("NaN threshold", guardrail(metric={"builtin": "ErrorRate"}, absolute={"max": "NaN"}), f"{G}.absolute.max"),
    (
        "negative maxRatio",
        guardrail(metric={"builtin": "LatencyP99"}, relative={"maxRatio": -1}),
        f"{G}.relative.maxRatio",
    ),
    (
        "min above max",
        guardrail(metric={"builtin": "ErrorRate"}, absolute={"min": 0.5, "max": 0.1}),
        f"{G}.absolute.min",
    ),
    ("absolute with no bound", guardrail(metric={"builtin": "ErrorRate"}, absolute={}), f"{G}.absolute"),
    ("unknown rule", guardrail(metric={"builtin": "ErrorRate"}, percentile={"p": 99}), f"{G}.percentile"),
    ("two rules", guardrail(metric={"builtin": "ErrorRate"}, absolute={"max": 1}, drift={"maxPSI": 0.2}), G),
    ("no rule", guardrail(metric={"builtin": "ErrorRate"}), G),
    (
        "two metric sources",
        guardrail(metric={"builtin": "ErrorRate", "query": "up"}, absolute={"max": 1}),
        f"{G}.metric",
    ),
    ("errorsQuery without totalQuery", guardrail(metric={"errorsQuery": "x"}, sequential={}), f"{G}.metric.totalQuery"),
    ("sequential on a plain query", guardrail(metric={"query": "up"}, sequential={}), f"{G}.metric"),
    ("drift without a distribution", guardrail(metric={"builtin": "ErrorRate"}, drift={"maxPSI": 0.2}), f"{G}.metric"),
    ("missing metric", guardrail(absolute={"max": 1}), f"{G}.metric"),
    ("empty query", guardrail(metric={"query": ""}, absolute={"max": 1}), f"{G}.metric.query"),
    ("zero interval", setter("analysis", {"interval": "0s"}), "spec.analysis.interval"),
    ("malformed duration", setter("analysis", {"interval": "5 minutes"}), "spec.analysis.interval"),
    (
        "deadline shorter than a hold",
        setter("analysis", {"interval": "10s", "progressDeadline": "30s"}),
        "spec.analysis.progressDeadline",
    ),
    (
        "deadline shorter than interval",
        setter("analysis", {"interval": "5m", "progressDeadline": "1m"}),
        "spec.analysis.progressDeadline",
    ),
    (
        "inline credentials in address",
        setter("provider", {"prometheus": {"address": "http://user:pw@prom:9090"}}),
        "spec.provider.prometheus.address",
    ),
    (
        "inline password field",
        setter("provider", {"prometheus": {"address": "http://prom:9090", "password": "x"}}),
        "spec.provider.prometheus.password",
    ),
    ("unknown spec field", setter("replicasOfDoom", 3), "spec.replicasOfDoom"),
    (
        "duplicate guardrail names",
        setter(
            "guardrails",
            [
                {"name": "g", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 1}},
                {"name": "g", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 2}},
            ],
        ),
        "spec.guardrails",
    ),
    (
        "critical with tolerance",
        guardrail(metric={"builtin": "ErrorRate"}, absolute={"max": 1}, critical=True, failureTolerance=2),
        f"{G}.failureTolerance",
    ),
    ("kserve without storageUri", setter("traffic", {"kserve": {"inferenceService": "x"}}), "spec.candidate"),
    ("incumbent equals candidate", setter("incumbent", {"name": "fraud-v2"}), "spec.candidate.name"),
    ("uppercase model name", setter("candidate", {"name": "Fraud_V2"}), "spec.candidate.name"),
    ("port zero", setter("candidate", {"name": "fraud-v2", "backend": {"port": 0}}), "spec.candidate.backend.port"),
    (
        "significance too large",
        guardrail(metric={"builtin": "ErrorRate"}, sequential={"significance": 0.5}),
        f"{G}.sequential.significance",
    ),
    (
        "unknown onNoData policy",
        guardrail(metric={"builtin": "ErrorRate"}, absolute={"max": 1}, onNoData="Pass"),
        f"{G}.onNoData",
    ),
    ("missing candidate", deleter("candidate"), "spec.candidate"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), CASES, ids=[c[0] for c in CASES])
def test_malformed_rollout_is_rejected_naming_the_field(
    api_client: client.ApiClient, namespace: str, case: str, mutate: Mutation, field: str
) -> None:
    body = minimal_rollout("bad")
    mutate(body["spec"])
    api = client.CustomObjectsApi(api_client)

    with pytest.raises(ApiException) as refused:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict")

    assert refused.value.status in (400, 422), refused.value.body
    message = json.loads(refused.value.body)["message"]
    assert field in message, f"{case}: {field!r} not named in: {message}"
    with pytest.raises(ValidationError):
        ModelRolloutSpec.model_validate(body["spec"])


def test_there_are_at_least_25_cases() -> None:
    assert len(CASES) >= 25


def test_the_valid_base_is_accepted_by_both(api_client: client.ApiClient, namespace: str) -> None:
    body = copy.deepcopy(minimal_rollout("good"))
    created = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )
    assert ModelRolloutSpec.model_validate(created["spec"]).candidate.name == "fraud-v2"
