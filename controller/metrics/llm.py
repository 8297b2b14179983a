"""Prometheus' LLM builtins: time to first token, inter-token latency, finish reasons, throughput, cost.

An LLM server is judged on other numbers than a classifier: how long until the first token
(TTFT), how fast tokens follow (inter-token latency), how often an answer is cut off (finished by
`length`) or abandoned (`abort`), and what 1,000 output tokens cost. vLLM exports all of them
labelled `model_name` (docs: vLLM's design/metrics.md); llm-d's endpoint picker exports some under
other names, seen from the gateway. So the names are not hard-wired: a `Family` holds one set,
`metric.llmMetrics` picks vLLM's (the default) or llm-d's and may override any name (a user's own
exporter). Names the chosen family lacks leave the guardrail inconclusive, saying which field to
set, never a guess.

Cost per 1,000 output tokens comes from the model's price in the guardrail (`metric.prices`),
filled into the query as `{{pricePer...}}` for each variant: per million tokens (input and
output: an API's price, or a chargeback rate), or per replica-hour (self-hosted: replicas counted
as the series of a gauge each replica exports, over the observed token throughput).

The templates are filled per variant by metrics.templates; docs/metrics.md lists them verbatim.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from controller.api.models import BuiltinMetric, LlmMetricFamily, LlmMetrics, ModelPrice
from controller.metrics.builtins import BuiltinQueries

# The finish reasons that count as bad events: cut off at max_tokens, or abandoned.
BAD_FINISH = "length|abort"
# The +Inf bucket of a histogram counts every observation.
_ALL = ',le="+Inf"'


@dataclass(frozen=True)
class Family:
    """One set of metric names; None where the family exports no such metric."""

    name: str
    model_label: str
    time_to_first_token: str | None
    inter_token_latency: str | None
    end_to_end_latency: str | None
    finished_requests: str | None
    generation_tokens: str | None
    prompt_tokens: str | None
    replicas: str | None


FAMILIES: Mapping[LlmMetricFamily, Family] = {
    LlmMetricFamily.VLLM: Family(
        name="vLLM",
        model_label="model_name",
        time_to_first_token="vllm:time_to_first_token_seconds",
        inter_token_latency="vllm:inter_token_latency_seconds",
        end_to_end_latency="vllm:e2e_request_latency_seconds",
        finished_requests="vllm:request_success_total",
        generation_tokens="vllm:generation_tokens_total",
        prompt_tokens="vllm:prompt_tokens_total",
        # One series per replica and model: vLLM exports it from start-up, busy or not.
        replicas="vllm:num_requests_running",
    ),
    # The endpoint picker sees requests at the gateway: latencies, not finish reasons or tokens.
    LlmMetricFamily.LLM_D: Family(
        name="llm-d",
        model_label="model_name",
        time_to_first_token="llm_d_epp_request_ttft_seconds",
        inter_token_latency="llm_d_epp_request_streaming_tpot_seconds",
        end_to_end_latency="inference_objective_request_duration_seconds",
        finished_requests=None,
        generation_tokens=None,
        prompt_tokens=None,
        replicas=None,
    ),
}

# Which field of metric.llmMetrics names what, for the message when a family lacks it.
_FIELDS = {
    "time_to_first_token": "timeToFirstToken",
    "inter_token_latency": "interTokenLatency",
    "end_to_end_latency": "endToEndLatency",
    "finished_requests": "finishedRequests",
    "generation_tokens": "generationTokens",
    "prompt_tokens": "promptTokens",
    "replicas": "replicas",
}


def family_of(names: LlmMetrics | None) -> Family:
    """The family chosen, with the user's overrides applied."""
    chosen = names or LlmMetrics()
    family = FAMILIES[chosen.family]
    overrides = {field: getattr(chosen, field) for field in _FIELDS if getattr(chosen, field) is not None}
    if chosen.model_label is not None:
        overrides["model_label"] = chosen.model_label
    return replace(family, **overrides)


class Missing(Exception):
    """The chosen family has no metric of this kind: the user must name one."""


def _need(family: Family, field: str) -> str:
    name: str | None = getattr(family, field)
    if name is None:
        raise Missing(
            f"the {family.name} metric family has no {field.replace('_', ' ')} metric: "
            f"name one in metric.llmMetrics.{_FIELDS[field]}"
        )
    return name


def _series(name: str, family: Family, extra: str = "") -> str:
    return f'{name}{{{family.model_label}="{{{{model}}}}"{extra}}}'


def _range(name: str, family: Family, extra: str = "") -> str:
    return _series(name, family, extra) + "[{{window}}]"


def _histogram(family: Family, field: str) -> BuiltinQueries:
    base = _need(family, field)
    # Buckets summed across replicas first: a quantile of quantiles means nothing.
    return BuiltinQueries(
        value=f"histogram_quantile(0.99, sum by (le) (rate({_range(base + '_bucket', family)})))",
        samples=f"sum(increase({_range(base + '_bucket', family, _ALL)}))",
    )


def _requests(family: Family) -> str:
    """Requests in the window: the end-to-end latency histogram counts every finished request."""
    base = _need(family, "end_to_end_latency")
    return f"sum(increase({_range(base + '_bucket', family, _ALL)}))"


def _truncated(family: Family) -> BuiltinQueries:
    finished = _need(family, "finished_requests")
    bad = _range(finished, family, f',finished_reason=~"{BAD_FINISH}"')
    every = _range(finished, family)
    # No length/abort series yet is zero bad events; no requests at all is still no data.
    return BuiltinQueries(
        value=f"(sum(rate({bad})) or on() vector(0)) / sum(rate({every}))",
        samples=f"sum(increase({every}))",
        errors=f"sum(increase({bad})) or on() vector(0)",
        total=f"sum(increase({every}))",
    )


def _tokens_per_second(family: Family) -> BuiltinQueries:
    generated = _need(family, "generation_tokens")
    return BuiltinQueries(value=f"sum(rate({_range(generated, family)}))", samples=_requests(family))


def _cost_per_token(family: Family) -> BuiltinQueries:
    generated = f"sum(increase({_range(_need(family, 'generation_tokens'), family)}))"
    prompt = f"sum(increase({_range(_need(family, 'prompt_tokens'), family)}))"
    # Per million tokens -> per 1,000 output tokens: divide by 1,000.
    return BuiltinQueries(
        value=f"({{{{pricePerMillionInputTokens}}}} * {prompt} + {{{{pricePerMillionOutputTokens}}}} * {generated}) "
        f"/ {generated} / 1000",
        samples=_requests(family),
    )


def _cost_per_replica_hour(family: Family) -> BuiltinQueries:
    replicas = f"count({_series(_need(family, 'replicas'), family)})"
    throughput = f"sum(rate({_range(_need(family, 'generation_tokens'), family)}))"
    # price/h * replicas / (3600 s/h * tokens/s) * 1000 tokens = price * replicas / (3.6 * tokens/s)
    return BuiltinQueries(
        value=f"{{{{pricePerReplicaHour}}}} * {replicas} / (3.6 * {throughput})", samples=_requests(family)
    )


def promql(metric: BuiltinMetric, names: LlmMetrics | None, price: ModelPrice | None = None) -> BuiltinQueries | str:
    """The query templates of one LLM builtin in the chosen family; a message when it cannot be built."""
    family = family_of(names)
    try:
        match metric:
            case BuiltinMetric.TIME_TO_FIRST_TOKEN_P99:
                return _histogram(family, "time_to_first_token")
            case BuiltinMetric.INTER_TOKEN_LATENCY_P99:
                return _histogram(family, "inter_token_latency")
            case BuiltinMetric.END_TO_END_LATENCY_P99:
                return _histogram(family, "end_to_end_latency")
            case BuiltinMetric.TRUNCATED_OR_ABORTED_RATE:
                return _truncated(family)
            case BuiltinMetric.OUTPUT_TOKENS_PER_SECOND:
                return _tokens_per_second(family)
            case BuiltinMetric.COST_PER_1K_OUTPUT_TOKENS:
                if price is None:
                    return "CostPer1kOutputTokens needs the model's price in metric.prices"
                if price.per_replica_hour is not None:
                    return _cost_per_replica_hour(family)
                return _cost_per_token(family)
            case _:
                return f"{metric} is not an LLM builtin"
    except Missing as exc:
        return str(exc)


def price_variables(price: ModelPrice) -> dict[str, str]:
    """The `{{pricePer...}}` placeholders of the cost queries, for one model (unset input price: 0)."""
    values = {
        "pricePerReplicaHour": price.per_replica_hour,
        "pricePerMillionOutputTokens": price.per_million_output_tokens,
        "pricePerMillionInputTokens": price.per_million_input_tokens or 0.0,
    }
    return {key: repr(float(value)) for key, value in values.items() if value is not None}
