"""LLM serving, the pure parts: InferencePool backendRefs, KServe LLMInferenceService groups, the
LLM builtins' PromQL in each metric family, and the cost guardrail's prices.

The same objects go to the real API server (with the real CRDs) in the router contract suite;
the queries go to a real Prometheus in e2e/ (the LLM scenarios).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.api.models import (
    LLM_BUILTINS,
    BuiltinMetric,
    LlmMetricFamily,
    LlmMetrics,
    ModelPrice,
    ModelRef,
    ModelRolloutSpec,
    ModelRolloutStatus,
    Weights,
)
from controller.core.judge import Cause
from controller.core.observation import Observation, ObservationStatus
from controller.metrics import llm
from controller.metrics.builtins import BuiltinQueries
from controller.metrics.templates import render, variables_for
from controller.observe import observe_and_judge
from controller.routers.base import RouterProblem
from controller.routers.gatewayapi import BackendService, find_backends, weight_patch
from controller.routers.llmisvc import Member, check_others, check_pair, member_of, split_of, weight_patches

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
POOL = "inference.networking.k8s.io"


# -- Gateway API: InferencePool backendRefs -------------------------------------------------------


def pool_ref(name: str, weight: int) -> dict[str, Any]:
    return {"group": POOL, "kind": "InferencePool", "name": name, "weight": weight}


def test_a_models_inference_pool_is_a_backend_ref_of_that_group_and_kind() -> None:
    backend = BackendService.of(ModelRef.model_validate({"name": "llama-v2", "backend": {"inferencePool": "pool-b"}}))
    assert backend == BackendService("pool-b", group=POOL, kind="InferencePool")
    assert str(backend) == "InferencePool pool-b"


def test_a_service_named_like_the_pool_is_not_the_pool() -> None:
    inc = BackendService("llama-v1", group=POOL, kind="InferencePool")
    cand = BackendService("llama-v2", group=POOL, kind="InferencePool")
    route = {
        "spec": {
            "rules": [
                {"backendRefs": [{"name": "llama-v1", "port": 80}, {"name": "llama-v2", "port": 80}]},
                {"backendRefs": [pool_ref("llama-v1", 90), pool_ref("llama-v2", 10)]},
            ]
        }
    }
    found = find_backends(route, label="HTTPRoute ns/llm", namespace="ns", incumbent=inc, candidate=cand)
    assert found.rule_index == 1 and (found.incumbent.weight, found.candidate.weight) == (90, 10)
    # The patch pins the kind of each ref it writes, right before its name.
    ops = weight_patch(found, Weights.for_candidate(50))
    assert ops == [
        {"op": "test", "path": "/spec/rules/1/backendRefs/0/kind", "value": "InferencePool"},
        {"op": "test", "path": "/spec/rules/1/backendRefs/0/name", "value": "llama-v1"},
        {"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 50},
        {"op": "test", "path": "/spec/rules/1/backendRefs/1/kind", "value": "InferencePool"},
        {"op": "test", "path": "/spec/rules/1/backendRefs/1/name", "value": "llama-v2"},
        {"op": "add", "path": "/spec/rules/1/backendRefs/1/weight", "value": 50},
    ]


def test_a_service_incumbent_and_a_pool_candidate_share_a_rule() -> None:
    """Moving a model onto the inference extension: from its Service to its InferencePool."""
    inc, cand = BackendService("llama", port=8000), BackendService("llama", group=POOL, kind="InferencePool")
    route = {"spec": {"rules": [{"backendRefs": [{"name": "llama", "port": 8000, "weight": 1}, pool_ref("llama", 0)]}]}}
    found = find_backends(route, label="HTTPRoute ns/llm", namespace="ns", incumbent=inc, candidate=cand)
    assert (found.incumbent.index, found.candidate.index) == (0, 1)


def test_a_missing_pool_is_named_as_a_pool() -> None:
    inc = BackendService("llama-v1", group=POOL, kind="InferencePool")
    cand = BackendService("llama-v2", group=POOL, kind="InferencePool")
    route = {"spec": {"rules": [{"backendRefs": [pool_ref("llama-v1", 100), {"name": "llama-v2", "port": 80}]}]}}
    with pytest.raises(RouterProblem) as caught:
        find_backends(route, label="HTTPRoute ns/llm", namespace="ns", incumbent=inc, candidate=cand)
    assert caught.value.reason == "BackendNotInRoute"
    assert "InferencePool llama-v2 (the candidate's)" in caught.value.message


# -- KServe LLMInferenceService canary groups -----------------------------------------------------


def llmisvc(
    name: str, weight: int | None, *, group: str | None = "chat", served: str | None = "chat"
) -> dict[str, Any]:
    route: dict[str, Any] = {}
    if group is not None:
        route["group"] = group
    if weight is not None:
        route["weight"] = weight
    model: dict[str, Any] = {"uri": f"hf://org/{name}"}
    if served is not None:
        model["name"] = served
    return {"metadata": {"name": name, "resourceVersion": "7"}, "spec": {"model": model, "router": {"route": route}}}


def members(inc: dict[str, Any], cand: dict[str, Any]) -> tuple[Member, Member]:
    return member_of(inc, label="inc"), member_of(cand, label="cand")


def test_an_absent_weight_counts_as_zero_as_kserve_reads_it() -> None:
    inc, cand = members(llmisvc("v1", 3), llmisvc("v2", None))
    assert split_of(inc, cand, namespace="ns") == Weights(incumbent=100, candidate=0)
    inc, cand = members(llmisvc("v1", 9), llmisvc("v2", 1))
    assert split_of(inc, cand, namespace="ns") == Weights(incumbent=90, candidate=10)


def test_both_weights_zero_is_a_problem() -> None:
    with pytest.raises(RouterProblem) as caught:
        split_of(*members(llmisvc("v1", 0), llmisvc("v2", None)), namespace="ns")
    assert caught.value.reason == "ZeroWeights"


@pytest.mark.parametrize(
    ("candidate", "reason", "says"),
    [
        (llmisvc("v2", 0, group=None), "NotInRouteGroup", "is in no group: set its spec.router.route.group to chat"),
        (llmisvc("v2", 0, group="other"), "NotInRouteGroup", "names group other"),
        (llmisvc("v2", 0, served="chat-2"), "GroupMembersDiverge", "(chat vs chat-2)"),
        # No spec.model.name: KServe takes the object's name, which differs.
        (llmisvc("v2", 0, served=None), "GroupMembersDiverge", "(chat vs v2)"),
    ],
)
def test_members_kserve_would_not_split_are_problems(candidate: dict[str, Any], reason: str, says: str) -> None:
    inc, cand = members(llmisvc("v1", 100), candidate)
    with pytest.raises(RouterProblem) as caught:
        check_pair(inc, cand, group="chat", namespace="ns")
    assert caught.value.reason == reason and says in caught.value.message, caught.value.message


def test_lora_adapters_count_among_the_names_served() -> None:
    with_adapter = llmisvc("v2", 0)
    with_adapter["spec"]["model"]["lora"] = {"adapters": [{"name": "sql-lora", "uri": "hf://org/sql"}]}
    inc, cand = members(llmisvc("v1", 100), with_adapter)
    with pytest.raises(RouterProblem) as caught:
        check_pair(inc, cand, group="chat", namespace="ns")
    assert "(chat vs chat, sql-lora)" in caught.value.message


def test_another_member_of_the_group_with_a_weight_is_a_problem_naming_it() -> None:
    inc, cand = members(llmisvc("v1", 90), llmisvc("v2", 10))
    listed = {"items": [llmisvc("v1", 90), llmisvc("v2", 10), llmisvc("v0", 30)]}
    with pytest.raises(RouterProblem) as caught:
        check_others(inc, cand, listed, group="chat", namespace="ns")
    assert caught.value.reason == "GroupHasOtherMembers" and "v0 (weight 30)" in caught.value.message
    # At weight 0, in another group, or serving other names, it takes none of the pair's traffic.
    for other in (llmisvc("v0", 0), llmisvc("v0", None), llmisvc("v0", 30, group="b"), llmisvc("v0", 30, served="x")):
        check_others(inc, cand, {"items": [llmisvc("v1", 90), other]}, group="chat", namespace="ns")


@pytest.mark.parametrize(
    ("start", "wanted", "order"),
    [
        ((100, 0), 10, [(0, 90), (1, 10)]),  # forward: 90:0 in between, the candidate gets nothing yet
        ((90, 10), 50, [(0, 50), (1, 50)]),  # 50:10 (17%) in between, not 90:50 (36%)
        ((50, 50), 0, [(1, 0), (0, 100)]),  # rollback: the candidate's traffic goes with the first write
        ((20, 80), 100, [(1, 100), (0, 0)]),  # promotion: never 0:80, never 0:0
        ((100, 0), 100, [(1, 100), (0, 0)]),  # straight to 100: 100:100 in between, not 0:0
        ((9, 1), 50, [(0, 50), (1, 50)]),  # a hand-written 9:1: 50:1 (2%), not 9:50 (85%, past 50%)
        ((100, 0), 0, []),
        ((9, 1), 10, []),  # already 90/10: nothing to write
    ],
)
def test_the_write_order_exposes_the_candidate_least_in_between(
    start: tuple[int, int], wanted: int, order: list[tuple[int, int]]
) -> None:
    inc, cand = members(llmisvc("v1", start[0]), llmisvc("v2", start[1]))
    patches = weight_patches(inc, cand, Weights.for_candidate(wanted))
    written = [(p.index, p.body["spec"]["router"]["route"]["weight"]) for p in patches if isinstance(p.body, dict)]
    assert written == order
    for patch in patches:
        assert isinstance(patch.body, dict) and patch.body["metadata"] == {"resourceVersion": "7"}


@pytest.mark.parametrize("inc", [0, 1, 9, 10, 50, 90, 100, 250])
@pytest.mark.parametrize("cand", [0, 1, 10, 50, 90, 100])
@pytest.mark.parametrize("wanted", [0, 10, 20, 50, 100])
def test_in_between_the_candidate_never_gets_more_than_before_or_after(inc: int, cand: int, wanted: int) -> None:
    if inc + cand == 0:
        return
    patches = weight_patches(*members(llmisvc("v1", inc), llmisvc("v2", cand)), Weights.for_candidate(wanted))
    if len(patches) < 2:
        return
    weights = [inc, cand]
    first = patches[0]
    assert isinstance(first.body, dict)
    weights[first.index] = first.body["spec"]["router"]["route"]["weight"]
    assert sum(weights) > 0, "0:0 in between: no member would get the traffic"
    assert weights[1] / sum(weights) <= max(cand / (inc + cand), wanted / 100) + 1e-12


# -- LLM builtins -----------------------------------------------------------------------------------

CANDIDATE = variables_for("llama-v2", None, "candidate", "chat", "5m", rollout="r", incumbent="inc")
PER_TOKEN = ModelPrice(model="llama-v2", per_million_input_tokens=0.1, per_million_output_tokens=0.6)
PER_REPLICA = ModelPrice(model="llama-v2", per_replica_hour=2.5)


def _templates(queries: BuiltinQueries) -> list[str]:
    return [q for q in (queries.value, queries.samples, queries.errors, queries.total) if q]


def test_vllm_names_by_default() -> None:
    ttft = llm.promql(BuiltinMetric.TIME_TO_FIRST_TOKEN_P99, None)
    assert isinstance(ttft, BuiltinQueries)
    assert ttft.value == (
        "histogram_quantile(0.99, sum by (le) (rate("
        'vllm:time_to_first_token_seconds_bucket{model_name="{{model}}"}[{{window}}])))'
    )
    truncated = llm.promql(BuiltinMetric.TRUNCATED_OR_ABORTED_RATE, None)
    assert isinstance(truncated, BuiltinQueries)
    assert truncated.errors == (
        'sum(increase(vllm:request_success_total{model_name="{{model}}",finished_reason=~"length|abort"}'
        "[{{window}}])) or on() vector(0)"
    )
    assert truncated.total == 'sum(increase(vllm:request_success_total{model_name="{{model}}"}[{{window}}]))'


def test_the_llm_d_family_reads_the_endpoint_pickers_names_and_says_what_it_lacks() -> None:
    names = LlmMetrics(family=LlmMetricFamily.LLM_D, model_label="target_model_name")
    ttft = llm.promql(BuiltinMetric.TIME_TO_FIRST_TOKEN_P99, names)
    assert isinstance(ttft, BuiltinQueries) and ttft.value is not None
    assert 'llm_d_epp_request_ttft_seconds_bucket{target_model_name="{{model}}"}' in ttft.value
    itl = llm.promql(BuiltinMetric.INTER_TOKEN_LATENCY_P99, names)
    assert isinstance(itl, BuiltinQueries) and "llm_d_epp_request_streaming_tpot_seconds_bucket" in str(itl.value)
    assert llm.promql(BuiltinMetric.TRUNCATED_OR_ABORTED_RATE, names) == (
        "the llm-d metric family has no finished requests metric: name one in metric.llmMetrics.finishedRequests"
    )


def test_a_users_names_override_the_familys() -> None:
    names = LlmMetrics(finished_requests="tgi_request_count_total", model_label="model")
    truncated = llm.promql(BuiltinMetric.TRUNCATED_OR_ABORTED_RATE, names)
    assert isinstance(truncated, BuiltinQueries)
    assert truncated.total == 'sum(increase(tgi_request_count_total{model="{{model}}"}[{{window}}]))'


@pytest.mark.parametrize("price", [PER_TOKEN, PER_REPLICA], ids=["per-token", "per-replica-hour"])
def test_cost_fills_in_the_models_price(price: ModelPrice) -> None:
    queries = llm.promql(BuiltinMetric.COST_PER_1K_OUTPUT_TOKENS, None, price)
    assert isinstance(queries, BuiltinQueries) and queries.value is not None
    rendered = render(queries.value, {**CANDIDATE, **llm.price_variables(price)})
    if price is PER_TOKEN:
        assert rendered.startswith("(0.1 * sum(increase(vllm:prompt_tokens_total{")
        assert "+ 0.6 * sum(increase(vllm:generation_tokens_total{" in rendered and rendered.endswith(" / 1000")
    else:
        assert rendered.startswith('2.5 * count(vllm:num_requests_running{model_name="llama-v2"}) / (3.6 * sum(rate(')


def test_an_unset_input_price_is_zero() -> None:
    assert llm.price_variables(ModelPrice(model="m", per_million_output_tokens=2)) == {
        "pricePerMillionOutputTokens": "2.0",
        "pricePerMillionInputTokens": "0.0",
    }


def _every_llm_query() -> list[tuple[str, str]]:
    out = []
    for family in LlmMetricFamily:
        for metric in LLM_BUILTINS:
            prices = [PER_TOKEN, PER_REPLICA] if metric is BuiltinMetric.COST_PER_1K_OUTPUT_TOKENS else [None]
            for price in prices:
                queries = llm.promql(metric, LlmMetrics(family=family), price)
                if isinstance(queries, BuiltinQueries):
                    out += [(f"{family.value} {metric.value}", t) for t in _templates(queries)]
    return out


@pytest.mark.parametrize(("what", "template"), _every_llm_query())
def test_docs_show_every_llm_query_verbatim(what: str, template: str) -> None:
    assert template in DOCS.read_text(), f"docs/metrics.md does not show {what}'s query {template}"


@pytest.mark.parametrize(("what", "template"), _every_llm_query())
def test_every_llm_query_renders(what: str, template: str) -> None:
    rendered = render(template, {**CANDIDATE, **llm.price_variables(PER_TOKEN), **llm.price_variables(PER_REPLICA)})
    assert "{{" not in rendered and '="llama-v2"' in rendered and "[5m]" in rendered


# -- observing: the cost guardrail asks each variant with its own price ----------------------------


class Recorder:
    """A provider that answers every query with 1 and remembers what it was asked."""

    builtins: dict[BuiltinMetric, BuiltinQueries] = {}

    def __init__(self) -> None:
        self.asked: list[str] = []

    def llm_builtin(self, metric: BuiltinMetric, names: LlmMetrics | None, price: ModelPrice | None) -> Any:
        return llm.promql(metric, names, price)

    def scalar(self, query: str, *, at: datetime) -> Observation:
        self.asked.append(query)
        return Observation(ObservationStatus.OK, value=1000.0, sample_time=at)

    def vector(self, query: str, *, label: str, at: datetime) -> Observation:
        raise AssertionError("not asked")


def _cost_spec(prices: list[dict[str, Any]]) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "candidate": {"name": "llama-v2"},
            "traffic": {"gatewayAPI": {"httpRoute": "r"}},
            "canary": {"steps": [{"weight": 10, "hold": "1m"}]},
            "guardrails": [
                {
                    "name": "cost",
                    "metric": {"builtin": "CostPer1kOutputTokens", "prices": prices},
                    "relative": {"maxRatio": 1},
                }
            ],
        }
    )


def test_each_variant_is_costed_at_its_own_price() -> None:
    spec = _cost_spec(
        [{"model": "llama-v1", "perReplicaHour": 4}, {"model": "llama-v2", "perMillionOutputTokens": 0.5}]
    )
    provider = Recorder()
    observe_and_judge(
        spec=spec,
        status=ModelRolloutStatus(),
        provider=provider,
        namespace="chat",
        rollout="chat",
        pair=(ModelRef(name="llama-v1"), ModelRef(name="llama-v2")),
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    values = [q for q in provider.asked if "count(" in q or "0.5 *" in q]
    assert any(q.startswith("(0.0 * ") and "0.5 *" in q and '"llama-v2"' in q for q in values), values
    assert any(q.startswith("4.0 * count(") and '"llama-v1"' in q for q in values), values


def test_a_model_without_a_price_leaves_cost_inconclusive_saying_so() -> None:
    spec = _cost_spec([{"model": "llama-v2", "perMillionOutputTokens": 0.5}])
    provider = Recorder()
    judgement = observe_and_judge(
        spec=spec,
        status=ModelRolloutStatus(),
        provider=provider,
        namespace="chat",
        rollout="chat",
        pair=(ModelRef(name="llama-v1"), ModelRef(name="llama-v2")),
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )["cost"]
    assert judgement.cause is Cause.ERROR
    assert judgement.message == "no price for model llama-v1 in guardrail cost's metric.prices"
    assert provider.asked == []
