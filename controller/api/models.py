"""ModelRollout v1alpha1: what a platform team writes (spec) and what the controller records (status).

Semantics (docs/api.md explains them with examples):
- The incumbent of record lives in `status.incumbent`; `spec.incumbent` only bootstraps it.
- Changing `spec.candidate` starts a new rollout; promotion makes the candidate the incumbent;
  rollback keeps the incumbent and records the failed candidate with the evidence.
- Exactly one traffic router block, exactly one way to give the steps, exactly one rule and one
  metric source per guardrail. No data is never a pass: `onNoData`/`onError` choose between
  waiting, pausing for a human and rolling back.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from controller.api.duration import DURATION_PATTERN
from controller.api.reasons import Reason
from controller.api.rules import ApiModel, Rule

GROUP = "modelrollout.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelRollout"
PLURAL = "modelrollouts"
SINGULAR = "modelrollout"
SHORT_NAMES = ("mro",)

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]
DnsName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
DnsLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
Port = Annotated[int, Field(ge=1, le=65535)]
Weight = Annotated[int, Field(ge=0, le=100)]
QueryTemplate = Annotated[str, Field(min_length=1, max_length=4096)]
# A Prometheus label name: no hyphens, no leading digit.
LabelName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
# A finite number: the API server's JSON cannot carry NaN/Inf, and the models refuse them too.
Bound = Annotated[float, Field(allow_inf_nan=False)]

MAX_STEPS = 20
MAX_GUARDRAILS = 16
MAX_HISTORY = 20
MAX_FAILED_CANDIDATES = 10
# Comparisons a comparator may have in flight (spec.shadow.maxConcurrency): its threads are sized by it.
MAX_SHADOW_CONCURRENCY = 1000
# Earlier shadows' comparators whose mirror is still to be removed (one per candidate replaced mid-shadow).
MAX_PENDING_MIRRORS = 4
# Segments a guardrail names (plus "other"), and failing segments whose evidence status keeps.
MAX_SEGMENTS = 20
DEFAULT_MAX_SEGMENTS = 8
DEFAULT_MIN_SEGMENT_SHARE = 0.02
MAX_SEGMENT_EVIDENCE = 5


def _has(value: Any) -> bool:
    return value is not None


def _exactly_one(*values: Any) -> bool:
    return sum(v is not None for v in values) == 1


# A PromQL range (what {{window}} becomes): whole numbers, units in descending order, e.g. 1m30s.
# `1.5m`, `30s1m` and `0s` are valid Go durations but Prometheus refuses them.
PROMQL_DURATION = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$"
# Upper bounds keep every duration far inside what CEL's duration() (Go, int64 ns) can hold.
MAX_DEADLINE = "720h"
MAX_WINDOW = "24h"
MAX_TIMEOUT = "5m"
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


# The API server's in-cluster names, and link-local literals (cloud metadata services): never a
# metric provider. One regex on the whole address, so CEL and Python read it the same way (and
# the API server's cost budget holds); the controller also checks what names resolve to.
UNSAFE_METRIC_ADDRESS = (
    r"(?i)^https?://(kubernetes(\.default(\.svc(\.[^/:?#]*)?)?)?\.?"
    r"|169\.254\.[0-9]{1,3}\.[0-9]{1,3}"
    r"|\[fe[89ab][0-9a-f]:[^\]]*\])(:[0-9]*)?([/?#].*)?$"
)


def _seconds(duration: str) -> float:
    """A validated duration in seconds, as a float: it never overflows (a timedelta may), so the
    Python twin of a CEL rule refuses an absurd duration with a validation error, as CEL does."""
    return sum(float(v) * _UNIT_SECONDS[u] for v, u in re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", duration))


def _promql_range(duration: str) -> bool:
    return re.fullmatch(PROMQL_DURATION, duration) is not None and _seconds(duration) > 0


# --------------------------------------------------------------------------------------------
# Models being rolled out
# --------------------------------------------------------------------------------------------


class ModelBackend(ApiModel):
    """Where a model is served, for the router in use; every field defaults from the model name."""

    rules = (
        Rule(
            cel="!has(self.service) || !has(self.inferencePool)",
            message="set service or inferencePool, not both: a backendRef names one object",
            check=lambda b: b.service is None or b.inference_pool is None,
            field_path=".inferencePool",
        ),
    )

    service: DnsLabel | None = Field(
        None, description="Gateway API: the backendRef Service name (default: model name)."
    )
    inference_pool: DnsLabel | None = Field(
        None,
        description="Gateway API: the backendRef is this InferencePool (group inference.networking.k8s.io) "
        "instead of a Service (Gateway API Inference Extension).",
    )
    port: Port | None = Field(None, description="Gateway API: the backendRef port, when the route names one.")
    host: DnsName | None = Field(None, description="Istio: destination host (default: the router block's host).")
    subset: DnsLabel | None = Field(None, description="Istio: destination subset (default: model name).")
    deployment: DnsName | None = Field(
        None, description="Replica ratio: the Deployment serving it (default: model name)."
    )
    storage_uri: Annotated[str, Field(max_length=2048, pattern=r"^[a-z0-9+.-]+://\S+$")] | None = Field(
        None, description="KServe: the predictor's storageUri for this model."
    )
    llm_inference_service: DnsName | None = Field(
        None, description="KServe LLMInferenceService canary group: the member serving it (default: model name)."
    )


class ModelRef(ApiModel):
    """A model version taking part in a rollout. `name` fills `{{model}}` in metric queries."""

    name: DnsName = Field(description="Model identifier, e.g. fraud-scorer-v7.")
    version: Annotated[str, Field(max_length=128, pattern=r"^[-A-Za-z0-9._+:@/]*$")] | None = Field(
        None, description="Free-form version, fills {{version}}."
    )
    backend: ModelBackend | None = Field(None, description="Where it is served; defaults derive from name.")


# --------------------------------------------------------------------------------------------
# Traffic routers: exactly one block
# --------------------------------------------------------------------------------------------


class GatewayApiTraffic(ApiModel):
    """Weights of two backendRefs in one rule of a Gateway API HTTPRoute; nothing else is touched."""

    http_route: DnsName = Field(description="HTTPRoute name, in the ModelRollout's namespace.")
    rule_name: DnsLabel | None = Field(
        None, description="Name of the rule holding the backends (default: the first rule that references them)."
    )


class IstioTraffic(ApiModel):
    """Weights of the two destinations of one HTTP route of an Istio VirtualService."""

    virtual_service: DnsName
    route: DnsLabel | None = Field(None, description="Name of the http route (default: the first one).")
    host: DnsName = Field(description="Destination host of both variants, unless a model's backend overrides it.")


class KServeTraffic(ApiModel):
    """KServe's own canary: the candidate predictor plus canaryTrafficPercent."""

    inference_service: DnsName


class LlmInferenceServiceTraffic(ApiModel):
    """KServe's LLMInferenceService canary group: the weights of two members of one route group."""

    group: DnsLabel = Field(
        description="spec.router.route.group both LLMInferenceServices (the incumbent's and the candidate's) name."
    )


class ReplicasTraffic(ApiModel):
    """No mesh: two Deployments behind one Service, the candidate's share of replicas follows the weight."""

    rules = (
        Rule(
            cel=f"duration(self.scaleDownDelay) <= duration('{MAX_WINDOW}')",
            message=f"scaleDownDelay must be at most {MAX_WINDOW}",
            check=lambda r: _seconds(r.scale_down_delay) <= _seconds(MAX_WINDOW),
            field_path=".scaleDownDelay",
        ),
    )

    total_replicas: Annotated[int, Field(ge=1, le=1000)] = Field(
        description="Replicas of both Deployments together; the candidate never gets more than its weight's share."
    )
    scale_down_delay: Duration = Field("30s", description="How long the losing Deployment keeps its replicas.")


class Traffic(ApiModel):
    # One field per router block, each served by the router controller/routers/registry.py keys
    # by the field's name; the rule that exactly one is set is built from these fields.
    gateway_api: GatewayApiTraffic | None = Field(None, alias="gatewayAPI")
    istio: IstioTraffic | None = None
    kserve: KServeTraffic | None = None
    replicas: ReplicasTraffic | None = None
    llm_inference_service: LlmInferenceServiceTraffic | None = None


def _exactly_one_block(model: type[ApiModel]) -> Rule:
    blocks = [field.alias or name for name, field in model.model_fields.items()]
    return Rule(
        cel=f"[{', '.join(f'has(self.{block})' for block in blocks)}].filter(x, x).size() == 1",
        message=f"exactly one router must be set: {', '.join(blocks[:-1])} or {blocks[-1]}",
        check=lambda t: _exactly_one(*(getattr(t, name) for name in model.model_fields)),
    )


Traffic.rules = (_exactly_one_block(Traffic),)


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


class Step(ApiModel):
    weight: Weight = Field(description="The candidate's share of traffic in percent during this step.")
    hold: Duration = Field(
        "0s",
        description=(
            "Planned time at this weight. The step ends after it only when every guardrail has the samples it "
            "needs; with analysis.endStepsEarly it may end early when every guardrail passes conclusively."
        ),
    )
    manual_gate: bool = Field(
        False, description="After the hold, wait for a human to promote (kubectl modelrollout promote)."
    )


class LinearSteps(ApiModel):
    """Shorthand: stepWeight, 2*stepWeight, ... up to maxWeight, each held for `hold`."""

    rules = (
        Rule(
            cel="self.stepWeight <= self.maxWeight",
            message="stepWeight must not exceed maxWeight",
            check=lambda s: s.step_weight <= s.max_weight,
            field_path=".stepWeight",
        ),
    )

    step_weight: Annotated[int, Field(ge=1, le=100)]
    max_weight: Annotated[int, Field(ge=1, le=100)]
    hold: Duration


class AfterLastStep(StrEnum):
    PROMOTE = "Promote"
    WAIT_FOR_PROMOTION = "WaitForPromotion"


def _strictly_increasing(steps: list[Step] | None) -> bool:
    if not steps:
        return True
    return all(a.weight < b.weight for a, b in itertools.pairwise(steps))


class Canary(ApiModel):
    rules = (
        Rule(
            cel="has(self.steps) != has(self.linear)",
            message="set exactly one of steps (explicit list) or linear (shorthand)",
            check=lambda c: _exactly_one(c.steps, c.linear),
        ),
        Rule(
            cel="!has(self.steps) || (self.steps.map(s, s.weight).isSorted() && "
            "self.steps.all(s, self.steps.exists_one(t, t.weight == s.weight)))",
            message="step weights must be strictly increasing",
            check=lambda c: _strictly_increasing(c.steps),
            field_path=".steps",
        ),
    )

    steps: Annotated[list[Step], Field(min_length=1, max_length=MAX_STEPS)] | None = None
    linear: LinearSteps | None = None
    after_last_step: AfterLastStep = Field(
        AfterLastStep.PROMOTE, description="Promote at once after the last step, or wait for a human to promote."
    )


# --------------------------------------------------------------------------------------------
# Guardrails
# --------------------------------------------------------------------------------------------


class BuiltinMetric(StrEnum):
    """Metrics computed from the conventional model-server metric names, and LLM metrics computed
    from vLLM's names or another family's (docs/metrics.md, docs/llm.md)."""

    ERROR_RATE = "ErrorRate"
    LATENCY_P99 = "LatencyP99"
    PREDICTION_DISTRIBUTION = "PredictionDistribution"
    # Ground truth, counted when a label arrives (docs/labels.md).
    LABELLED_ERROR_RATE = "LabelledErrorRate"
    LABELLED_LOSS = "LabelledLoss"
    TIME_TO_FIRST_TOKEN_P99 = "TimeToFirstTokenP99"
    INTER_TOKEN_LATENCY_P99 = "InterTokenLatencyP99"
    END_TO_END_LATENCY_P99 = "EndToEndLatencyP99"
    TRUNCATED_OR_ABORTED_RATE = "TruncatedOrAbortedRate"
    OUTPUT_TOKENS_PER_SECOND = "OutputTokensPerSecond"
    COST_PER_1K_OUTPUT_TOKENS = "CostPer1kOutputTokens"
    # Shadow phase only: the share of mirrored requests on which the candidate's prediction
    # disagreed with the incumbent's, from the comparator's counters (docs/shadow.md).
    SHADOW_DISAGREEMENT = "ShadowDisagreement"


# Builtins read from an LLM server's metrics, whose names `metric.llmMetrics` may choose.
LLM_BUILTINS = (
    BuiltinMetric.TIME_TO_FIRST_TOKEN_P99,
    BuiltinMetric.INTER_TOKEN_LATENCY_P99,
    BuiltinMetric.END_TO_END_LATENCY_P99,
    BuiltinMetric.TRUNCATED_OR_ABORTED_RATE,
    BuiltinMetric.OUTPUT_TOKENS_PER_SECOND,
    BuiltinMetric.COST_PER_1K_OUTPUT_TOKENS,
)


def _cel_list(metrics: tuple[BuiltinMetric, ...]) -> str:
    return "[" + ", ".join(f"'{m.value}'" for m in metrics) + "]"


MetricName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")]


class LlmMetricFamily(StrEnum):
    """Whose metric names the LLM builtins read (docs/llm.md lists both)."""

    VLLM = "vLLM"
    LLM_D = "llm-d"


class LlmMetrics(ApiModel):
    """The metric names behind the LLM builtins: a family's, each overridable (a user's own names)."""

    family: LlmMetricFamily = Field(
        LlmMetricFamily.VLLM, description="vLLM's names (model servers) or llm-d's endpoint picker's (the gateway)."
    )
    model_label: LabelName | None = Field(
        None, description="Label holding the model name, matched against {{model}} (default: model_name)."
    )
    time_to_first_token: MetricName | None = Field(None, description="Histogram of time to first token, seconds.")
    inter_token_latency: MetricName | None = Field(None, description="Histogram of time between tokens, seconds.")
    end_to_end_latency: MetricName | None = Field(None, description="Histogram of request latency, seconds.")
    finished_requests: MetricName | None = Field(
        None, description="Counter of finished requests labelled finished_reason (stop, length, abort)."
    )
    generation_tokens: MetricName | None = Field(None, description="Counter of output tokens.")
    prompt_tokens: MetricName | None = Field(None, description="Counter of prompt tokens.")
    replicas: MetricName | None = Field(
        None, description="A gauge every serving replica exports once per model: its series count the replicas."
    )


_PRICE = Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)]


class ModelPrice(ApiModel):
    """What one model costs to serve: per replica-hour (self-hosted) or per million tokens."""

    rules = (
        Rule(
            cel="has(self.perReplicaHour) != has(self.perMillionOutputTokens)",
            message="set exactly one of perReplicaHour or perMillionOutputTokens",
            check=lambda p: _exactly_one(p.per_replica_hour, p.per_million_output_tokens),
        ),
        Rule(
            cel="!has(self.perMillionInputTokens) || has(self.perMillionOutputTokens)",
            message="perMillionInputTokens goes with perMillionOutputTokens",
            check=lambda p: p.per_million_input_tokens is None or p.per_million_output_tokens is not None,
            field_path=".perMillionInputTokens",
        ),
    )

    model: DnsName = Field(description="The ModelRef name this price is for.")
    per_replica_hour: _PRICE | None = Field(None, description="Price of one serving replica for one hour.")
    per_million_output_tokens: _PRICE | None = Field(None, description="Price of one million output tokens.")
    per_million_input_tokens: _PRICE | None = Field(None, description="Price of one million prompt tokens (default 0).")


class MetricSource(ApiModel):
    """Where a guardrail's numbers come from. Query templates get {{model}}, {{version}},
    {{variant}}, {{namespace}} and {{window}} filled in for each variant."""

    rules = (
        Rule(
            cel="[has(self.query), has(self.errorsQuery), has(self.distributionQuery), has(self.builtin)]"
            ".filter(x, x).size() == 1",
            message="set exactly one of query, errorsQuery (with totalQuery), distributionQuery or builtin",
            check=lambda m: _exactly_one(m.query, m.errors_query, m.distribution_query, m.builtin),
        ),
        Rule(
            cel="has(self.errorsQuery) == has(self.totalQuery)",
            message="errorsQuery and totalQuery go together",
            check=lambda m: _has(m.errors_query) == _has(m.total_query),
            field_path=".totalQuery",
        ),
        Rule(
            cel="!has(self.samplesQuery) || has(self.query)",
            message="samplesQuery only applies to query",
            check=lambda m: m.samples_query is None or m.query is not None,
            field_path=".samplesQuery",
        ),
        Rule(
            cel="!has(self.distributionLabel) || has(self.distributionQuery)",
            message="distributionLabel only applies to distributionQuery",
            check=lambda m: m.distribution_label is None or m.distribution_query is not None,
            field_path=".distributionLabel",
        ),
        Rule(
            cel=f"!has(self.llmMetrics) || (has(self.builtin) && self.builtin in {_cel_list(LLM_BUILTINS)})",
            message="llmMetrics only applies to the LLM builtins",
            check=lambda m: m.llm_metrics is None or m.builtin in LLM_BUILTINS,
            field_path=".llmMetrics",
        ),
        Rule(
            cel="has(self.prices) == (has(self.builtin) && self.builtin == 'CostPer1kOutputTokens')",
            message="builtin CostPer1kOutputTokens needs prices, and prices apply to it only",
            check=lambda m: (m.prices is not None) == (m.builtin == BuiltinMetric.COST_PER_1K_OUTPUT_TOKENS),
            field_path=".prices",
        ),
        Rule(
            cel="!has(self.prices) || self.prices.all(p, self.prices.exists_one(q, q.model == p.model))",
            message="one price per model",
            check=lambda m: m.prices is None or len({p.model for p in m.prices}) == len(m.prices),
            field_path=".prices",
        ),
    )

    query: QueryTemplate | None = Field(None, description="One value per variant (absolute and relative rules).")
    samples_query: QueryTemplate | None = Field(None, description="Requests behind `query`, for minSamples.")
    errors_query: QueryTemplate | None = Field(None, description="Count of bad events per variant (sequential rule).")
    total_query: QueryTemplate | None = Field(None, description="Count of all events per variant (sequential rule).")
    distribution_query: QueryTemplate | None = Field(
        None, description="Counts by prediction bucket or class per variant, as a vector (drift rule)."
    )
    distribution_label: LabelName | None = Field(
        None, description="Label that names the bucket or class in distributionQuery's result (default: le)."
    )
    builtin: BuiltinMetric | None = None
    llm_metrics: LlmMetrics | None = Field(
        None, description="LLM builtins only: whose metric names they read (default: vLLM's)."
    )
    prices: Annotated[list[ModelPrice], Field(max_length=16)] | None = Field(
        None, description="builtin CostPer1kOutputTokens only: each model's price, by model name."
    )


class AbsoluteRule(ApiModel):
    """The candidate's value must stay within [min, max]."""

    rules = (
        Rule(
            cel="has(self.min) || has(self.max)",
            message="set min, max or both",
            check=lambda r: _has(r.min) or _has(r.max),
        ),
        Rule(
            cel="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="min must not exceed max",
            check=lambda r: r.min is None or r.max is None or r.min <= r.max,
            field_path=".min",
        ),
    )

    min: Bound | None = None
    max: Bound | None = None


class RelativeRule(ApiModel):
    """The candidate compared with the incumbent in the same window: ratio and/or difference."""

    rules = (
        Rule(
            cel="has(self.maxRatio) || has(self.maxIncrease) || has(self.minRatio) || has(self.maxDecrease)",
            message="set at least one of maxRatio, maxIncrease, minRatio, maxDecrease",
            check=lambda r: any(_has(v) for v in (r.max_ratio, r.max_increase, r.min_ratio, r.max_decrease)),
        ),
        Rule(
            cel="!has(self.minRatio) || !has(self.maxRatio) || self.minRatio <= self.maxRatio",
            message="minRatio must not exceed maxRatio",
            check=lambda r: r.min_ratio is None or r.max_ratio is None or r.min_ratio <= r.max_ratio,
            field_path=".minRatio",
        ),
    )

    max_ratio: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None, description="candidate / incumbent must not exceed this (e.g. 1.2: at most 20% worse)."
    )
    min_ratio: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None, description="candidate / incumbent must not fall below this (for metrics where higher is better)."
    )
    max_increase: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="candidate - incumbent must not exceed this."
    )
    max_decrease: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="incumbent - candidate must not exceed this."
    )


class SequentialRule(ApiModel):
    """An always-valid sequential test that the candidate's bad-event rate is not worse than the
    incumbent's, safe to check at every interval (docs/guardrails.md gives the method)."""

    significance: Annotated[float, Field(gt=0, le=0.2, allow_inf_nan=False)] = Field(
        0.01, description="False-rollback rate the test guarantees under continuous monitoring."
    )
    min_effect: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = Field(
        0.5, description="Smallest relative increase worth catching (0.5: the candidate's rate is 1.5x)."
    )
    min_absolute_effect: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] | None = Field(
        None,
        description="Smallest absolute increase worth catching (0.001: 0.1 percentage points): the candidate "
        "also passes once its own rate is shown below it, so the rule concludes when errors are (nearly) absent.",
    )


class DriftRule(ApiModel):
    """The candidate's prediction distribution compared with the incumbent's."""

    rules = (
        Rule(
            cel="has(self.maxPSI) || has(self.maxJSDistance)",
            message="set maxPSI, maxJSDistance or both",
            check=lambda r: _has(r.max_psi) or _has(r.max_js_distance),
        ),
    )

    max_psi: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] | None = Field(
        None, alias="maxPSI", description="Largest population stability index tolerated (0.2 is a common choice)."
    )
    max_js_distance: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = Field(
        None, alias="maxJSDistance", description="Largest Jensen-Shannon distance (base 2) tolerated."
    )
    significance: Annotated[float, Field(gt=0, le=0.2, allow_inf_nan=False)] = Field(
        0.01, description="The difference must also be statistically significant at this level."
    )


class DataPolicy(StrEnum):
    """What an inconclusive guardrail does. There is deliberately no 'pass'."""

    WAIT = "Wait"
    PAUSE = "Pause"
    ROLLBACK = "Rollback"


_VALUE_BUILTINS = tuple(m for m in BuiltinMetric if m is not BuiltinMetric.PREDICTION_DISTRIBUTION)
# Builtins on counts of bad events among all events (the sequential rule): a request error, a
# wrong prediction, a truncated or aborted generation.
_EVENT_BUILTINS = (
    BuiltinMetric.ERROR_RATE,
    BuiltinMetric.LABELLED_ERROR_RATE,
    BuiltinMetric.TRUNCATED_OR_ABORTED_RATE,
    BuiltinMetric.SHADOW_DISAGREEMENT,
)
# Builtins on ground truth: their guardrails are label guardrails even without labelDelay.
LABELLED_BUILTINS = (BuiltinMetric.LABELLED_ERROR_RATE, BuiltinMetric.LABELLED_LOSS)


class Guardrail(ApiModel):
    rules = (
        Rule(
            cel="[has(self.absolute), has(self.relative), has(self.sequential), has(self.drift)]"
            ".filter(x, x).size() == 1",
            message="set exactly one rule: absolute, relative, sequential or drift",
            check=lambda g: _exactly_one(g.absolute, g.relative, g.sequential, g.drift),
        ),
        Rule(
            cel="(!has(self.absolute) && !has(self.relative)) || has(self.metric.query) || "
            f"(has(self.metric.builtin) && self.metric.builtin in {_cel_list(_VALUE_BUILTINS)})",
            message="absolute and relative rules need metric.query or a value builtin (any but PredictionDistribution)",
            check=lambda g: (
                (g.absolute is None and g.relative is None)
                or g.metric.query is not None
                or g.metric.builtin in _VALUE_BUILTINS
            ),
            field_path=".metric",
        ),
        Rule(
            cel="!has(self.sequential) || has(self.metric.errorsQuery) || "
            f"(has(self.metric.builtin) && self.metric.builtin in {_cel_list(_EVENT_BUILTINS)})",
            message="the sequential rule needs metric.errorsQuery and totalQuery, or builtin "
            f"{', '.join(_EVENT_BUILTINS[:-1])} or {_EVENT_BUILTINS[-1]}",
            check=lambda g: (
                g.sequential is None or g.metric.errors_query is not None or g.metric.builtin in _EVENT_BUILTINS
            ),
            field_path=".metric",
        ),
        Rule(
            cel="!has(self.drift) || has(self.metric.distributionQuery) || "
            "(has(self.metric.builtin) && self.metric.builtin == 'PredictionDistribution')",
            message="the drift rule needs metric.distributionQuery or builtin PredictionDistribution",
            check=lambda g: (
                g.drift is None
                or g.metric.distribution_query is not None
                or g.metric.builtin == BuiltinMetric.PREDICTION_DISTRIBUTION
            ),
            field_path=".metric",
        ),
        Rule(
            cel="has(self.segmentBy) || (!has(self.maxSegments) && !has(self.minSegmentShare))",
            message="maxSegments and minSegmentShare only apply with segmentBy",
            check=lambda g: g.segment_by is not None or (g.max_segments is None and g.min_segment_share is None),
            field_path=".segmentBy",
        ),
        Rule(
            cel="!has(self.segmentBy) || !has(self.drift) || self.segmentBy != "
            "(has(self.metric.distributionLabel) ? self.metric.distributionLabel : 'le')",
            message="segmentBy must differ from the distribution's label (metric.distributionLabel, default le)",
            check=lambda g: (
                g.segment_by is None or g.drift is None or g.segment_by != (g.metric.distribution_label or "le")
            ),
            field_path=".segmentBy",
        ),
        Rule(
            cel="!has(self.metric.builtin) || self.metric.builtin != 'ShadowDisagreement' || "
            "has(self.absolute) || has(self.sequential)",
            message="builtin ShadowDisagreement takes an absolute rule (max disagreement rate) or a sequential "
            "one (against the incumbent's noise floor)",
            check=lambda g: (
                g.metric.builtin != BuiltinMetric.SHADOW_DISAGREEMENT
                or g.absolute is not None
                or g.sequential is not None
            ),
            field_path=".metric.builtin",
        ),
        Rule(
            cel="!has(self.segmentBy) || !has(self.metric.builtin) || self.metric.builtin != 'ShadowDisagreement'",
            message="builtin ShadowDisagreement cannot be segmented: the comparator counts per model pair, not per "
            "segment",
            check=lambda g: g.segment_by is None or g.metric.builtin != BuiltinMetric.SHADOW_DISAGREEMENT,
            field_path=".segmentBy",
        ),
        Rule(
            cel="!self.critical || self.failureTolerance == 0",
            message="a critical guardrail rolls back on its first failure: failureTolerance must be 0",
            check=lambda g: not g.critical or g.failure_tolerance == 0,
            field_path=".failureTolerance",
        ),
        Rule(
            cel=f"!has(self.labelDelay) || duration(self.labelDelay) <= duration('{MAX_DEADLINE}')",
            message=f"labelDelay must be at most {MAX_DEADLINE}",
            check=lambda g: g.label_delay is None or _seconds(g.label_delay) <= _seconds(MAX_DEADLINE),
            field_path=".labelDelay",
        ),
        Rule(
            cel="!has(self.labelDelay) || !has(self.drift)",
            message="labelDelay applies to rules on labelled outcomes (absolute, relative, sequential), not drift",
            check=lambda g: g.label_delay is None or g.drift is None,
            field_path=".labelDelay",
        ),
    )

    name: DnsLabel
    metric: MetricSource
    absolute: AbsoluteRule | None = None
    relative: RelativeRule | None = None
    sequential: SequentialRule | None = None
    drift: DriftRule | None = None
    min_samples: Annotated[int, Field(ge=1, le=100_000_000)] = Field(
        100, description="Requests the candidate must have served in the window before a verdict can be given."
    )
    critical: bool = Field(
        True, description="One failure rolls back. Otherwise failureTolerance failures are tolerated."
    )
    failure_tolerance: Annotated[int, Field(ge=0, le=1000)] = 0
    on_no_data: DataPolicy = Field(DataPolicy.WAIT, description="Empty, NaN, stale or too few samples: never a pass.")
    on_error: DataPolicy = Field(DataPolicy.WAIT, description="Provider error or timeout: never a pass.")
    segment_by: LabelName | None = Field(
        None,
        description="A label of the metric (region, device, tenant): the rule is judged per value of it, and the "
        "guardrail fails when any segment fails, with false rollbacks over all segments bounded by the rule's "
        "significance (sequential, drift; docs/guardrails.md, Per-segment guardrails).",
    )
    max_segments: Annotated[int, Field(ge=1, le=MAX_SEGMENTS)] | None = Field(
        None,
        description=f"Segments judged on their own, the largest by traffic first (default {DEFAULT_MAX_SEGMENTS}); "
        "the rest are judged together as 'other'.",
    )
    min_segment_share: Annotated[float, Field(ge=0, le=0.5, allow_inf_nan=False)] | None = Field(
        None,
        description=f"Segments under this share of the requests (default {DEFAULT_MIN_SEGMENT_SHARE:g}) are reported "
        "and may fail the guardrail, but never hold it while inconclusive.",
    )

    @property
    def segment_slots(self) -> int:
        """Segments judged on their own (the 'other' bucket is one more)."""
        return self.max_segments if self.max_segments is not None else DEFAULT_MAX_SEGMENTS

    @property
    def segment_share(self) -> float:
        return self.min_segment_share if self.min_segment_share is not None else DEFAULT_MIN_SEGMENT_SHARE

    label_delay: Duration | None = Field(
        None,
        description="How long after a prediction its label (ground truth) typically arrives (docs/labels.md). "
        "A label guardrail counts outcomes since the rollout began; a step short of labelled samples waits for "
        "them, up to progressDeadline plus this delay, and the last step promotes only once its own predictions "
        "had this long to be labelled. Labels that never arrive are no data, never a pass.",
    )

    @property
    def labelled(self) -> bool:
        """A label guardrail: judged on ground truth that arrives after the predictions."""
        return self.label_delay is not None or self.metric.builtin in LABELLED_BUILTINS


# --------------------------------------------------------------------------------------------
# Analysis and metric provider
# --------------------------------------------------------------------------------------------


class AnalysisMode(StrEnum):
    ENFORCE = "Enforce"
    ADVISORY = "Advisory"


class DeadlinePolicy(StrEnum):
    """What a step that ran out of progressDeadline without conclusive evidence does."""

    ROLLBACK = "Rollback"
    PAUSE = "Pause"


# Excess bad requests (beyond the incumbent's rate) a rollout may risk on steps that advance on
# bounded risk rather than on a conclusive pass (docs/guardrails.md, "Error budget").
DEFAULT_ERROR_BUDGET = 100


class Analysis(ApiModel):
    rules = (
        Rule(
            cel="duration(self.interval) > duration('0s')",
            message="interval must be longer than 0s",
            check=lambda a: _seconds(a.interval) > 0,
            field_path=".interval",
        ),
        Rule(
            cel="duration(self.progressDeadline) > duration(self.interval)",
            message="progressDeadline must be longer than interval",
            check=lambda a: _seconds(a.progress_deadline) > _seconds(a.interval),
            field_path=".progressDeadline",
        ),
        Rule(
            cel=f"duration(self.progressDeadline) <= duration('{MAX_DEADLINE}')",
            message=f"progressDeadline must be at most {MAX_DEADLINE}",
            check=lambda a: _seconds(a.progress_deadline) <= _seconds(MAX_DEADLINE),
            field_path=".progressDeadline",
        ),
        Rule(
            cel=f"!has(self.window) || (self.window.matches('{PROMQL_DURATION}') && "
            f"duration(self.window) > duration('0s') && duration(self.window) <= duration('{MAX_WINDOW}'))",
            message=f"window goes into PromQL: whole numbers with units from h to ms (e.g. 5m or 1m30s), "
            f"longer than 0s and at most {MAX_WINDOW}",
            check=lambda a: (
                a.window is None or (_promql_range(a.window) and _seconds(a.window) <= _seconds(MAX_WINDOW))
            ),
            field_path=".window",
        ),
        Rule(
            cel=f"has(self.window) || self.interval.matches('{PROMQL_DURATION}')",
            message="without a window the interval goes into PromQL: whole numbers with units from h to ms "
            "(e.g. 90s, not 1.5m), or set window",
            check=lambda a: a.window is not None or re.fullmatch(PROMQL_DURATION, a.interval) is not None,
            field_path=".interval",
        ),
    )

    interval: Duration = Field("30s", description="How often guardrails are evaluated.")
    window: Duration | None = Field(None, description="Range for {{window}} in queries (default: interval).")
    progress_deadline: Duration = Field(
        "15m", description="The longest one step may take; past it the rollout ends in a verdict (rollback)."
    )
    failure_limit: Annotated[int, Field(ge=0, le=1000)] = Field(
        0, description="Failed evaluations of non-critical guardrails tolerated in one rollout, all together."
    )
    inconclusive_limit: Annotated[int, Field(ge=1, le=1000)] = Field(
        10, description="Consecutive inconclusive evaluations before the rollout is rolled back."
    )
    mode: AnalysisMode = Field(
        AnalysisMode.ENFORCE, description="Advisory: a failed guardrail pauses for a human instead of rolling back."
    )
    end_steps_early: bool = Field(
        False,
        description="End a step before its hold once every guardrail has passed conclusively at the step's weight "
        "(evidence-driven steps). A step never ends on its hold alone while a guardrail is short of samples.",
    )
    error_budget: Annotated[int, Field(ge=0, le=1_000_000_000)] | None = Field(
        None,
        description=f"Bad requests beyond the incumbent's rate the rollout may risk (default {DEFAULT_ERROR_BUDGET}; "
        "0: every step needs a conclusive pass). A step whose sequential guardrails are not yet conclusive may "
        "still end once the upper confidence bound of the harm the next step can do fits in what is left. "
        "Promotion always needs conclusive passes.",
    )
    on_deadline: DeadlinePolicy = Field(
        DeadlinePolicy.ROLLBACK,
        description="A step past progressDeadline without conclusive evidence: Rollback, or Pause for a human. "
        "Either way it is recorded as inconclusive, never as failed.",
    )

    @property
    def budget(self) -> int:
        return DEFAULT_ERROR_BUDGET if self.error_budget is None else self.error_budget


class SecretKeyRef(ApiModel):
    name: DnsName
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = "token"


class PrometheusSource(ApiModel):
    rules = (
        Rule(
            cel="!self.address.matches('^https?://[^/]*@')",
            message="credentials must not be inline in the address: use secretRef",
            check=lambda p: "@" not in p.address.split("://", 1)[-1].split("/", 1)[0],
            field_path=".address",
        ),
        Rule(
            cel=f"!self.address.matches('{UNSAFE_METRIC_ADDRESS.replace(chr(92), chr(92) * 2)}')",
            message="address must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
            check=lambda p: re.search(UNSAFE_METRIC_ADDRESS, p.address) is None,
            field_path=".address",
        ),
        Rule(
            cel=f"duration(self.timeout) > duration('0s') && duration(self.timeout) <= duration('{MAX_TIMEOUT}')",
            message=f"timeout must be longer than 0s and at most {MAX_TIMEOUT}",
            check=lambda p: 0 < _seconds(p.timeout) <= _seconds(MAX_TIMEOUT),
            field_path=".timeout",
        ),
        Rule(
            cel=f"duration(self.staleAfter) > duration('0s') && duration(self.staleAfter) <= duration('{MAX_WINDOW}')",
            message=f"staleAfter must be longer than 0s and at most {MAX_WINDOW}",
            check=lambda p: 0 < _seconds(p.stale_after) <= _seconds(MAX_WINDOW),
            field_path=".staleAfter",
        ),
    )

    address: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$")] = Field(
        description="Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090."
    )
    timeout: Duration = Field("10s", description="Per-query timeout; a timeout is inconclusive, never a pass.")
    stale_after: Duration = Field("5m", description="Samples older than this are no data.")
    secret_ref: SecretKeyRef | None = Field(
        None, description="Secret in the rollout's namespace holding a bearer token (key default: token)."
    )


class MetricBackend(ApiModel):
    prometheus: PrometheusSource | None = None


# --------------------------------------------------------------------------------------------
# Webhooks: gates that CI and humans answer, notifications of verdicts (docs/webhooks.md)
# --------------------------------------------------------------------------------------------

MAX_WEBHOOKS = 8
MAX_OUTBOX = 16


class WebhookType(StrEnum):
    """Gates hold the rollout until their hook answers 2xx; the others are told or asked."""

    BEFORE_TRAFFIC = "BeforeTraffic"  # before the candidate gets its first traffic (step 1's weight)
    BEFORE_STEP = "BeforeStep"  # before each later step's weight increase (steps 2..n)
    BEFORE_PROMOTION = "BeforePromotion"  # before an automatic promotion to 100%
    ROLLBACK = "Rollback"  # asked at every analysis interval: a 2xx answer asks for a rollback
    NOTIFICATION = "Notification"  # told of verdicts (events), never asked


GATE_TYPES = (WebhookType.BEFORE_TRAFFIC, WebhookType.BEFORE_STEP, WebhookType.BEFORE_PROMOTION)


class WebhookEvent(StrEnum):
    STEP_ADVANCED = "StepAdvanced"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    GUARDRAIL_FAILED = "GuardrailFailed"
    INCONCLUSIVE = "Inconclusive"


class WebhookFormat(StrEnum):
    JSON = "JSON"
    CLOUD_EVENTS = "CloudEvents"
    SLACK = "Slack"


class GateErrorPolicy(StrEnum):
    """A gate that answers other than 2xx (or not at all): Wait asks again every analysis interval
    until analysis.progressDeadline (then analysis.onDeadline); Pause waits for a human at once."""

    WAIT = "Wait"
    PAUSE = "Pause"


class ServiceReference(ApiModel):
    """A Service in the rollout's namespace: http(s)://<name>.<namespace>.svc:<port><path>."""

    name: DnsLabel
    port: Port = 80
    path: Annotated[str, Field(max_length=1024, pattern=r"^/[^\s?#]*$")] = "/"
    scheme: Literal["http", "https"] = "http"


def _no_credentials(url: str | None) -> bool:
    return url is None or "@" not in url.split("://", 1)[-1].split("/", 1)[0]


class Webhook(ApiModel):
    rules = (
        Rule(
            cel="[has(self.url), has(self.service), has(self.urlSecretRef)].filter(x, x).size() == 1",
            message="set exactly one of url, service or urlSecretRef",
            check=lambda w: _exactly_one(w.url, w.service, w.url_secret_ref),
        ),
        Rule(
            cel="!has(self.url) || !self.url.matches('^https?://[^/]*@')",
            message="credentials must not be inline in the url: use secretRef (an HMAC key) instead",
            check=lambda w: _no_credentials(w.url),
            field_path=".url",
        ),
        Rule(
            cel=f"!has(self.url) || !self.url.matches('{UNSAFE_METRIC_ADDRESS.replace(chr(92), chr(92) * 2)}')",
            message="url must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
            check=lambda w: w.url is None or re.search(UNSAFE_METRIC_ADDRESS, w.url) is None,
            field_path=".url",
        ),
        Rule(
            cel=f"duration(self.timeout) > duration('0s') && duration(self.timeout) <= duration('{MAX_TIMEOUT}')",
            message=f"timeout must be longer than 0s and at most {MAX_TIMEOUT}",
            check=lambda w: 0 < _seconds(w.timeout) <= _seconds(MAX_TIMEOUT),
            field_path=".timeout",
        ),
        Rule(
            cel="!has(self.events) || self.type == 'Notification'",
            message="events only apply to type Notification",
            check=lambda w: w.events is None or w.type is WebhookType.NOTIFICATION,
            field_path=".events",
        ),
        Rule(
            cel="self.format == 'JSON' || self.type == 'Notification'",
            message="format only applies to type Notification (gates are always asked in JSON)",
            check=lambda w: w.format is WebhookFormat.JSON or w.type is WebhookType.NOTIFICATION,
            field_path=".format",
        ),
        Rule(
            cel="!has(self.caBundleRef) || has(self.urlSecretRef) || (has(self.url) && self.url.startsWith('https://'))"
            " || (has(self.service) && self.service.scheme == 'https')",
            message="caBundleRef only applies to https",
            check=lambda w: (
                w.ca_bundle_ref is None
                or w.url_secret_ref is not None
                or (w.url or "").startswith("https://")
                or (w.service is not None and w.service.scheme == "https")
            ),
            field_path=".caBundleRef",
        ),
    )

    name: DnsLabel = Field(description="Names the hook in status, Events and the delivery id.")
    type: WebhookType
    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$")] | None = Field(
        None, description="Where to POST. Checked by the controller's address policy after DNS resolution."
    )
    service: ServiceReference | None = Field(None, description="Or a Service in the rollout's namespace.")
    url_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Or the URL in a Secret, for URLs that are credentials themselves (a Slack incoming "
        "webhook): never shown in status, Events or logs. Checked by the same address policy.",
    )
    timeout: Duration = Field("10s", description="Per request; a timeout is never a pass.")
    on_error: GateErrorPolicy = Field(
        GateErrorPolicy.WAIT, description="Gates: what a non-2xx answer, an error or a timeout does."
    )
    events: Annotated[list[WebhookEvent], Field(min_length=1, max_length=6)] | None = Field(
        None, description="Notifications: the events to send (default: all)."
    )
    format: WebhookFormat = Field(WebhookFormat.JSON, description="Notifications: JSON, CloudEvents or Slack.")
    secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret (rollout's namespace) holding the HMAC-SHA256 key that signs each body "
        "(header X-ModelRollout-Signature: t=<unix time>,v1=<hex>).",
    )
    ca_bundle_ref: SecretKeyRef | None = Field(
        None, description="Secret holding PEM CA certificates to verify the receiver (https; key default: token)."
    )

    def wants(self, event: WebhookEvent) -> bool:
        return self.type is WebhookType.NOTIFICATION and (self.events is None or event in self.events)


# --------------------------------------------------------------------------------------------
# Shadow phase (docs/shadow.md)
# --------------------------------------------------------------------------------------------

# The JSON path subset the comparator reads: $ then .field or [index] steps, e.g. $.predictions[0].label.
PREDICTION_PATH = r"^\$(\.[A-Za-z_][A-Za-z0-9_-]*|\[[0-9]+\])*$"


class ComparatorRef(ApiModel):
    """The comparator's Service: the router mirrors requests to it (it calls both models itself)."""

    service: DnsLabel = Field(description="Service of the comparator, in the rollout's namespace.")
    port: Port = Field(8080, description="Its port.")


class EqualComparison(ApiModel):
    """Class labels (or any JSON value): the two predictions must be equal."""

    ignore_case: bool = Field(False, description="Compare strings case-insensitively.")


class NumericComparison(ApiModel):
    """Numbers (or lists of numbers, element by element): equal within either tolerance."""

    rules = (
        Rule(
            cel="has(self.absolute) || has(self.relative)",
            message="set absolute, relative or both",
            check=lambda n: _has(n.absolute) or _has(n.relative),
        ),
    )

    absolute: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="|candidate - incumbent| at most this agrees."
    )
    relative: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="|candidate - incumbent| at most this times |incumbent| agrees."
    )


class TopKComparison(ApiModel):
    """Ranked lists: the candidate's first k items must share enough of the incumbent's first k."""

    k: Annotated[int, Field(ge=1, le=1000)] = Field(description="Items of each list compared.")
    min_overlap: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = Field(
        description="Share of the incumbent's top k the candidate's top k must contain to agree."
    )
    item_path: Annotated[str, Field(max_length=256, pattern=PREDICTION_PATH)] | None = Field(
        None, description="Within each list item, the path to its identity (default: the item itself)."
    )


class Comparison(ApiModel):
    """How the comparator decides that two answers agree. A missing path is a disagreement."""

    rules = (
        Rule(
            cel="[has(self.equal), has(self.numeric), has(self.topK)].filter(x, x).size() == 1",
            message="set exactly one of equal, numeric or topK",
            check=lambda c: _exactly_one(c.equal, c.numeric, c.top_k),
        ),
    )

    prediction_path: Annotated[str, Field(max_length=256, pattern=PREDICTION_PATH)] = Field(
        "$", description="JSON path to the prediction in each model's answer, e.g. $.predictions[0]."
    )
    equal: EqualComparison | None = None
    numeric: NumericComparison | None = None
    top_k: TopKComparison | None = Field(None, alias="topK")


class NoiseFloor(ApiModel):
    """For non-deterministic models: the incumbent compared with itself on a sample of the same
    requests; a sequential ShadowDisagreement judges the candidate against that rate."""

    sample: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = Field(
        description="Share of the compared requests also sent a second time to the incumbent."
    )


def _is_disagreement(g: Guardrail) -> bool:
    return g.metric.builtin == BuiltinMetric.SHADOW_DISAGREEMENT


_CEL_DISAGREEMENT = "has(g.metric.builtin) && g.metric.builtin == 'ShadowDisagreement'"


class Shadow(ApiModel):
    """Before step 1: mirror a share of live requests to the comparator, which asks both models
    and compares their predictions; users keep getting the incumbent's answers only."""

    rules = (
        Rule(
            cel=f"self.guardrails.exists(g, {_CEL_DISAGREEMENT})",
            message="shadow.guardrails needs a guardrail with builtin ShadowDisagreement",
            check=lambda s: any(_is_disagreement(g) for g in s.guardrails),
            field_path=".guardrails",
        ),
        Rule(
            cel="self.guardrails.all(g, self.guardrails.exists_one(h, h.name == g.name))",
            message="shadow guardrail names must be unique",
            check=lambda s: len({g.name for g in s.guardrails}) == len(s.guardrails),
            field_path=".guardrails",
        ),
        Rule(
            cel="!self.guardrails.exists(g, has(g.labelDelay) || (has(g.metric.builtin) && "
            "(g.metric.builtin == 'LabelledErrorRate' || g.metric.builtin == 'LabelledLoss')))",
            message="shadow.guardrails cannot hold a label guardrail (labelDelay, LabelledErrorRate, LabelledLoss): "
            "the candidate's mirrored answers are never labelled",
            check=lambda s: not any(g.labelled for g in s.guardrails),
            field_path=".guardrails",
        ),
        Rule(
            cel=f"has(self.noiseFloor) || !self.guardrails.exists(g, has(g.sequential) && {_CEL_DISAGREEMENT})",
            message="a sequential ShadowDisagreement is judged against the incumbent's noise floor: set noiseFloor",
            check=lambda s: (
                s.noise_floor is not None
                or not any(g.sequential is not None and _is_disagreement(g) for g in s.guardrails)
            ),
            field_path=".noiseFloor",
        ),
        Rule(
            cel=f"duration(self.timeout) <= duration('{MAX_TIMEOUT}')",
            message=f"timeout must be at most {MAX_TIMEOUT}",
            check=lambda s: _seconds(s.timeout) <= _seconds(MAX_TIMEOUT),
            field_path=".timeout",
        ),
    )

    percent: Annotated[int, Field(ge=1, le=100)] = Field(description="Share of live requests mirrored, in percent.")
    duration: Duration = Field(
        description="Least time in shadow; it ends only once every shadow guardrail passed (or one failed)."
    )
    comparator: ComparatorRef
    comparison: Comparison
    noise_floor: NoiseFloor | None = None
    guardrails: Annotated[list[Guardrail], Field(min_length=1, max_length=MAX_GUARDRAILS)] = Field(
        description="Judged on the mirrored traffic during shadow only (ShadowDisagreement, and any other rule)."
    )
    max_incumbent_rps: Annotated[int, Field(ge=1, le=100_000)] = Field(
        20,
        alias="maxIncumbentRPS",
        description="Cap on the extra requests per second the comparator sends the incumbent; beyond it a "
        "mirrored request is dropped (counted), never queued.",
    )
    max_concurrency: Annotated[int, Field(ge=1, le=MAX_SHADOW_CONCURRENCY)] = Field(
        16, description="Comparisons in flight at once; beyond it a mirrored request is dropped (counted)."
    )
    timeout: Duration = Field("2s", description="Per model call; a timeout is that model's error.")


def _unique_webhook_names(spec: ModelRolloutSpec) -> bool:
    names = [w.name for w in spec.webhooks]
    return len(names) == len(set(names))


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


def _steps_hold_within_deadline(spec: ModelRolloutSpec) -> bool:
    deadline = _seconds(spec.analysis.progress_deadline)
    return spec.canary.steps is None or all(_seconds(s.hold) < deadline for s in spec.canary.steps)


def _linear_hold_within_deadline(spec: ModelRolloutSpec) -> bool:
    linear = spec.canary.linear
    return linear is None or _seconds(linear.hold) < _seconds(spec.analysis.progress_deadline)


def _unique_guardrail_names(spec: ModelRolloutSpec) -> bool:
    names = [g.name for g in spec.guardrails]
    return len(names) == len(set(names))


class ModelRolloutSpec(ApiModel):
    rules = (
        Rule(
            cel="!has(self.analysis.errorBudget) || self.analysis.errorBudget == 0 || "
            "(has(self.guardrails) && self.guardrails.exists(g, has(g.sequential)))",
            message="analysis.errorBudget is spent only by sequential guardrails: add one, or leave errorBudget out",
            check=lambda s: not s.analysis.error_budget or any(g.sequential is not None for g in s.guardrails),
            field_path=".analysis.errorBudget",
        ),
        Rule(
            cel="!has(self.canary.steps) || self.canary.steps.all(s, "
            "duration(s.hold) < duration(self.analysis.progressDeadline))",
            message="every step's hold must be shorter than analysis.progressDeadline",
            check=_steps_hold_within_deadline,
            field_path=".analysis.progressDeadline",
        ),
        Rule(
            cel="!has(self.canary.linear) || "
            "duration(self.canary.linear.hold) < duration(self.analysis.progressDeadline)",
            message="the linear hold must be shorter than analysis.progressDeadline",
            check=_linear_hold_within_deadline,
            field_path=".analysis.progressDeadline",
        ),
        Rule(
            # guardrails may be left out (no schema default): guard with has().
            cel="!has(self.guardrails) || self.guardrails.all(g, self.guardrails.exists_one(h, h.name == g.name))",
            message="guardrail names must be unique",
            check=_unique_guardrail_names,
            field_path=".guardrails",
        ),
        Rule(
            cel="!has(self.traffic.kserve) || has(self.candidate.backend) && has(self.candidate.backend.storageUri)",
            message="the kserve router needs candidate.backend.storageUri",
            check=lambda s: (
                s.traffic.kserve is None
                or (s.candidate.backend is not None and s.candidate.backend.storage_uri is not None)
            ),
            field_path=".candidate.backend.storageUri",
        ),
        Rule(
            cel="!has(self.incumbent) || self.incumbent.name != self.candidate.name",
            message="candidate and incumbent must be different models",
            check=lambda s: s.incumbent is None or s.incumbent.name != s.candidate.name,
            field_path=".candidate.name",
        ),
        Rule(
            cel="!has(self.shadow) || has(self.traffic.gatewayAPI) || has(self.traffic.istio)",
            message="shadow needs a router that can mirror requests: traffic.gatewayAPI or traffic.istio "
            "(kserve, replicas and llmInferenceService cannot)",
            check=lambda s: s.shadow is None or s.traffic.gateway_api is not None or s.traffic.istio is not None,
            field_path=".shadow",
        ),
        Rule(
            cel="!has(self.shadow) || !has(self.candidate.backend) || !has(self.candidate.backend.inferencePool)",
            message="shadow compares models the comparator calls through their Services: candidate.backend."
            "inferencePool cannot be shadowed",
            check=lambda s: (
                s.shadow is None or s.candidate.backend is None or s.candidate.backend.inference_pool is None
            ),
            field_path=".candidate.backend.inferencePool",
        ),
        Rule(
            cel="!has(self.shadow) || !has(self.incumbent) || !has(self.incumbent.backend) || "
            "!has(self.incumbent.backend.inferencePool)",
            message="shadow compares models the comparator calls through their Services: incumbent.backend."
            "inferencePool cannot be shadowed",
            check=lambda s: (
                s.shadow is None
                or s.incumbent is None
                or s.incumbent.backend is None
                or s.incumbent.backend.inference_pool is None
            ),
            field_path=".incumbent.backend.inferencePool",
        ),
        Rule(
            cel="!has(self.shadow) || duration(self.shadow.duration) < duration(self.analysis.progressDeadline)",
            message="shadow.duration must be shorter than analysis.progressDeadline",
            check=lambda s: s.shadow is None or _seconds(s.shadow.duration) < _seconds(s.analysis.progress_deadline),
            field_path=".shadow.duration",
        ),
        Rule(
            cel=f"!has(self.guardrails) || !self.guardrails.exists(g, {_CEL_DISAGREEMENT})",
            message="builtin ShadowDisagreement is judged in the shadow phase only: put it in shadow.guardrails",
            check=lambda s: not any(_is_disagreement(g) for g in s.guardrails),
            field_path=".guardrails",
        ),
        Rule(
            cel="!has(self.webhooks) || self.webhooks.all(w, self.webhooks.exists_one(h, h.name == w.name))",
            message="webhook names must be unique",
            check=_unique_webhook_names,
            field_path=".webhooks",
        ),
    )

    candidate: ModelRef = Field(description="The model to roll out. Changing it starts a new rollout.")
    incumbent: ModelRef | None = Field(
        None, description="Bootstraps the incumbent of record when status has none; ignored afterwards."
    )
    traffic: Traffic
    canary: Canary
    # A full schema default: the API server fills in what the models would.
    analysis: Analysis = Field(default_factory=lambda: Analysis(), json_schema_extra={"default": Analysis().wire()})
    guardrails: Annotated[list[Guardrail], Field(max_length=MAX_GUARDRAILS)] = Field(
        default_factory=list, description="Each named, each judged on live metrics of both variants."
    )
    provider: MetricBackend | None = Field(
        None, description="Metric provider; defaults come from the controller's settings."
    )
    paused: bool = Field(False, description="Hold the rollout where it is (weights stay put) until set back to false.")
    webhooks: Annotated[list[Webhook], Field(max_length=MAX_WEBHOOKS)] = Field(
        default_factory=list, description="Gates, rollback hooks and notifications (docs/webhooks.md)."
    )
    shadow: Shadow | None = Field(
        None, description="A shadow phase before step 1: mirrored requests, compared prediction by prediction."
    )

    def expanded_steps(self) -> list[Step]:
        """The explicit step list, with the linear shorthand expanded."""
        if self.canary.steps is not None:
            return list(self.canary.steps)
        linear = self.canary.linear
        assert linear is not None  # guaranteed by Canary's rules
        weights = [*list(range(linear.step_weight, linear.max_weight, linear.step_weight)), linear.max_weight]
        return [Step(weight=w, hold=linear.hold) for w in weights]


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


# A rollout in flight: its candidate is being judged (and its traffic is the engine's to move).
ACTIVE = (Phase.PROGRESSING, Phase.PAUSED)

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """metav1.Condition: kstatus reads Ready, Reconciling and Stalled."""

    type: Annotated[str, Field(max_length=316, pattern=r"^([a-zA-Z0-9.-/]*/)?[A-Za-z0-9_]+$")]
    status: ConditionStatus
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: datetime
    observed_generation: Annotated[int, Field(ge=0)] | None = None


class Weights(ApiModel):
    """Percent of traffic per variant of the pair in flight; they add up to 100."""

    rules = (
        Rule(
            cel="self.incumbent + self.candidate == 100",
            message="incumbent and candidate weights must add up to 100",
            check=lambda w: w.incumbent + w.candidate == 100,
        ),
    )

    incumbent: Weight
    candidate: Weight

    @classmethod
    def for_candidate(cls, candidate: int) -> Weights:
        return cls(incumbent=100 - candidate, candidate=candidate)


ALL_INCUMBENT = Weights(incumbent=100, candidate=0)
ALL_CANDIDATE = Weights(incumbent=0, candidate=100)


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


class Evidence(ApiModel):
    """What a verdict stood on, so an SRE never has to guess why."""

    candidate_value: float | None = None
    incumbent_value: float | None = None
    candidate_samples: float | None = None
    incumbent_samples: float | None = None
    bound: Annotated[str, Field(max_length=256)] | None = Field(None, description="The bound, e.g. '<= 0.01'.")
    statistic: Annotated[str, Field(max_length=256)] | None = Field(
        None, description="The test statistic and its threshold, e.g. 'log-LR 3.1 / 4.6'."
    )
    samples_needed: float | None = Field(None, description="Samples still missing for a conclusive verdict.")
    # Numbers for charts and metrics (the strings above are for people): docs/dashboard.md.
    limit: float | None = Field(
        None, description="The bound in the candidate value's units (absolute and relative rules): fails past it."
    )
    worse: float | None = Field(None, description="Sequential rule: log e-value that the candidate is worse.")
    worse_threshold: float | None = Field(None, description="Sequential rule: `worse` fails the candidate at this.")
    not_worse: float | None = Field(
        None, description="Sequential rule: log e-value that the candidate is not worse by the minimum effect."
    )
    not_worse_threshold: float | None = Field(
        None, description="Sequential rule: `notWorse` passes the candidate at this."
    )


class LabelProgress(ApiModel):
    """A label guardrail's wait for ground truth: the candidate's labelled predictions counted, the
    number a conclusive verdict needs, and the arrival rate observed since `since` (this step)."""

    have: float = Field(description="The candidate's labelled predictions counted since the rollout began.")
    need: float | None = Field(None, description="Labelled predictions a conclusive verdict needs (estimate).")
    per_minute: float | None = Field(None, description="Labels arriving per minute, observed in this step.")
    expected_at: datetime | None = Field(None, description="When `need` is expected to be reached at that rate.")
    since: datetime = Field(description="Start of the rate's observation: the step's first analysis.")
    since_have: float = Field(description="`have` at `since`.")


SegmentValue = Annotated[str, Field(max_length=128)]


class SegmentEvidence(ApiModel):
    """One segment's verdict and what it stood on."""

    segment: SegmentValue = Field(description="The label's value ('other': the segments beyond maxSegments).")
    verdict: Verdict
    candidate_value: float | None = None
    incumbent_value: float | None = None
    candidate_samples: float | None = None
    incumbent_samples: float | None = None
    bound: Annotated[str, Field(max_length=256)] | None = None
    message: Annotated[str, Field(max_length=256)] = ""


class SegmentsStatus(ApiModel):
    """A segmented guardrail's segments: which have a test of their own, how they stand, and the
    worst few (failing first) with their evidence."""

    label: LabelName
    named: Annotated[list[SegmentValue], Field(max_length=MAX_SEGMENTS)] = Field(
        default_factory=list,
        description="Segments with a test of their own, in the order they got it; kept for the whole rollout.",
    )
    judged: Annotated[int, Field(ge=0)] = 0
    passed: Annotated[int, Field(ge=0)] = 0
    failed: Annotated[int, Field(ge=0)] = 0
    small: Annotated[int, Field(ge=0)] = Field(0, description="Segments under minSegmentShare: reported only.")
    other: Annotated[int, Field(ge=0)] = Field(0, description="Label values judged together as 'other'.")
    policy: Annotated[str, Field(max_length=512)] = ""
    worst: Annotated[list[SegmentEvidence], Field(max_length=MAX_SEGMENT_EVIDENCE)] = Field(default_factory=list)


class GuardrailStatus(ApiModel):
    name: DnsLabel
    verdict: Verdict
    message: Annotated[str, Field(max_length=1024)] = ""
    evidence: Evidence = Field(default_factory=lambda: Evidence())
    segments: SegmentsStatus | None = None
    failures: Annotated[int, Field(ge=0)] = 0
    consecutive_inconclusive: Annotated[int, Field(ge=0)] = 0
    last_evaluated: datetime | None = None
    labels: LabelProgress | None = Field(None, description="Label guardrails: the wait for ground truth.")


class Decision(ApiModel):
    """One entry of the bounded decision history."""

    time: datetime
    step: Annotated[int, Field(ge=0)]
    action: Annotated[str, Field(max_length=64)]
    reason: Annotated[str, Field(max_length=128)]
    message: Annotated[str, Field(max_length=1024)] = ""


class FailedCandidate(ApiModel):
    model: ModelRef
    time: datetime
    reason: Annotated[str, Field(max_length=128)]
    guardrail: DnsLabel | None = None
    observed: float | None = None
    threshold: Annotated[str, Field(max_length=256)] | None = None
    message: Annotated[str, Field(max_length=1024)] = ""
    verdict: Verdict = Field(
        Verdict.FAIL, description="Fail: shown worse (or aborted). Inconclusive: the evidence did not come in time."
    )


class ErrorBudget(ApiModel):
    """The rollout's error budget: excess bad requests (beyond the incumbent's rate) spent and left."""

    spent: float = Field(description="Estimated excess bad requests so far, over the sequential guardrails.")
    left: float = Field(description="analysis.errorBudget minus spent.")
    next_step: float | None = Field(
        None, description="Upper confidence bound of the excess the next step can cost over its hold."
    )


class GateState(StrEnum):
    PENDING = "Pending"  # asked, no answer yet
    PASSED = "Passed"  # answered 2xx (a rollback hook: asked for a rollback)
    REFUSED = "Refused"  # answered other than 2xx, or could not be reached: never a pass


class GateStatus(ApiModel):
    """A hook that is asked (gate or rollback): its last answer for this candidate and step."""

    name: DnsLabel
    step: Annotated[int, Field(ge=0)] = Field(description="Step index asked about (steps count for BeforePromotion).")
    candidate_hash: Annotated[str, Field(max_length=64)]
    state: GateState = GateState.PENDING
    code: Annotated[int, Field(ge=0, le=999)] | None = Field(None, description="HTTP status of the last answer.")
    message: Annotated[str, Field(max_length=256)] = ""
    since: datetime = Field(description="When the controller began to ask (the wait counts from here).")
    answered: datetime | None = Field(None, description="When the last answer (or failure) came.")


class Notice(ApiModel):
    """A verdict still to be delivered to at least one notification hook (the outbox)."""

    seq: Annotated[int, Field(ge=1)]
    id: Annotated[str, Field(max_length=64)] = Field(description="Stable across retries and restarts.")
    event: WebhookEvent
    time: datetime
    candidate: DnsName
    step: Annotated[int, Field(ge=0)]
    reason: Annotated[str, Field(max_length=128)]
    message: Annotated[str, Field(max_length=1024)] = ""
    guardrail: DnsLabel | None = None
    evidence: Evidence | None = None


class Receiver(ApiModel):
    """Delivery state of one notification hook: notices up to `delivered` (seq) are acknowledged."""

    name: DnsLabel
    delivered: Annotated[int, Field(ge=0)] = 0
    last_id: Annotated[str, Field(max_length=64)] | None = None
    last_time: datetime | None = None
    last_code: Annotated[int, Field(ge=0, le=999)] | None = None
    last_error: Annotated[str, Field(max_length=256)] | None = None
    failures: Annotated[int, Field(ge=0)] = Field(0, description="Failed attempts since the last delivery.")


class Notifications(ApiModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=False)

    next_seq: Annotated[int, Field(ge=1)] = 1
    outbox: Annotated[list[Notice], Field(max_length=MAX_OUTBOX)] = Field(default_factory=list)
    receivers: Annotated[list[Receiver], Field(max_length=MAX_WEBHOOKS)] = Field(default_factory=list)
    dropped: Annotated[int, Field(ge=0)] = Field(0, description="Notices dropped undelivered (outbox full).")


class ShadowState(StrEnum):
    MIRRORING = "Mirroring"
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    # A human moved past it (promote, or spec.shadow removed): no evidence behind it, never a pass.
    SKIPPED = "Skipped"


class ShadowStatus(ApiModel):
    """The shadow phase of this candidate: where it stands and the agreement it stood on."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=False)

    state: ShadowState
    started: datetime
    ended: datetime | None = None
    comparator: ComparatorRef | None = Field(
        None, description="Where the mirror points, kept so it is removed even if spec.shadow changes."
    )
    definition: Annotated[str, Field(max_length=64)] | None = Field(
        None,
        description="Digest of what a comparison means (comparator, comparison, noiseFloor, timeout) when shadow "
        "began: the comparator compares only under it, and a change restarts shadow (counts since then).",
    )
    mirror_percent: Annotated[int, Field(ge=0, le=100)] | None = Field(
        None, description="Share of requests the router mirrors to the comparator, as read back."
    )
    comparisons: float | None = Field(None, description="Mirrored requests both models answered, compared.")
    disagreements: float | None = None
    rate: float | None = Field(None, description="disagreements / comparisons.")
    noise_floor_rate: float | None = Field(None, description="The incumbent's disagreement with itself.")
    samples_needed: float | None = Field(None, description="Comparisons still needed for a conclusive verdict.")
    message: Annotated[str, Field(max_length=1024)] = ""


class ModelRolloutStatus(ApiModel):
    # The decision core edits a deep copy of the status in place; everything else is frozen.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=False)

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    phase: Phase | None = None
    reason: Annotated[str, Field(max_length=128)] | None = None
    message: Annotated[str, Field(max_length=1024)] | None = None
    incumbent: ModelRef | None = Field(None, description="The incumbent of record: the model serving 100% when idle.")
    candidate: ModelRef | None = Field(None, description="The candidate this rollout is about.")
    previous_incumbent: ModelRef | None = Field(
        None, description="After a promotion: the incumbent it replaced, until its traffic is confirmed at 0."
    )
    candidate_hash: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="Fingerprint of spec.candidate; a change starts a new rollout."
    )
    current_step: Annotated[int, Field(ge=0)] | None = Field(None, description="Index into the expanded steps.")
    total_steps: Annotated[int, Field(ge=0)] | None = None
    step_display: Annotated[str, Field(max_length=16)] | None = Field(None, description="'2/5' for kubectl get.")
    rollout_started: datetime | None = Field(None, description="When this candidate's rollout began.")
    step_started: datetime | None = None
    last_analysis: datetime | None = None
    paused_since: datetime | None = Field(None, description="Pause time does not count against holds and deadlines.")
    pause_reason: Reason | None = Field(None, description="Why the rollout waits for a human; set only while Paused.")
    handled_promote: Annotated[str, Field(max_length=128)] | None = Field(
        None, description="The last modelrollout.dev/promote annotation value acted on (each value acts once)."
    )
    handled_abort: Annotated[str, Field(max_length=128)] | None = Field(
        None, description="The last modelrollout.dev/abort annotation value acted on."
    )
    handled_retry: Annotated[str, Field(max_length=128)] | None = Field(
        None, description="The last modelrollout.dev/retry annotation value acted on."
    )
    weights: Weights | None = Field(None, description="Weights read back from the data plane.")
    error_budget: ErrorBudget | None = None
    guardrails: Annotated[list[GuardrailStatus], Field(max_length=MAX_GUARDRAILS)] = Field(default_factory=list)
    history: Annotated[list[Decision], Field(max_length=MAX_HISTORY)] = Field(default_factory=list)
    failed_candidates: Annotated[list[FailedCandidate], Field(max_length=MAX_FAILED_CANDIDATES)] = Field(
        default_factory=list
    )
    conditions: Annotated[list[Condition], Field(max_length=8)] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    gates: Annotated[list[GateStatus], Field(max_length=MAX_WEBHOOKS)] = Field(
        default_factory=list, description="Gates and rollback hooks being asked, with their last answer."
    )
    notifications: Notifications | None = Field(None, description="Verdicts still to be delivered, per receiver.")
    shadow: ShadowStatus | None = Field(None, description="This candidate's shadow phase (spec.shadow).")
    pending_mirror_removals: Annotated[list[ComparatorRef], Field(max_length=MAX_PENDING_MIRRORS)] = Field(
        default_factory=list,
        description="Comparators an earlier candidate's shadow mirrored to, whose mirror the route may still "
        "hold: removed with the next route write, and dropped from here once read back gone.",
    )


class ObjectMeta(ApiModel):
    """The part of metav1.ObjectMeta the controller reads; the rest passes through untouched."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    name: str
    namespace: str = "default"
    generation: int = 0
    resource_version: str | None = None
    uid: str | None = None
    deletion_timestamp: datetime | None = None
    finalizers: list[str] = Field(default_factory=list)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelRollout(ApiModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    api_version: Literal["modelrollout.dev/v1alpha1"] = "modelrollout.dev/v1alpha1"
    kind: Literal["ModelRollout"] = "ModelRollout"
    metadata: ObjectMeta
    spec: ModelRolloutSpec
    status: ModelRolloutStatus = Field(default_factory=ModelRolloutStatus)
