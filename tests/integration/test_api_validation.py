"""Bad input is refused by the API server itself, with a message naming the field, and by the models.

Every case is a minimal valid ModelRollout with one thing broken. It is created through the real
kube-apiserver with strict field validation (so unknown fields are refused, not pruned), and
the same spec is given to `ModelRolloutSpec.model_validate`. Each case states the path the
server must name and a fragment of what it must say; when that fragment is one of our CEL rules'
messages, the pydantic error must carry the same message (the rule's Python twin fired, not
some other check). A second table holds near misses, valid objects on the edge of a rule,
that both must accept.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from controller.api import GROUP, PLURAL, VERSION, ModelRolloutSpec
from controller.api import models as api_models
from controller.api.rules import ApiModel
from tests.support.objects import minimal_rollout

Mutation = Callable[[dict[str, Any]], None]


def setter(path: str, value: Any) -> Mutation:
    """Set spec[path] (dotted, list indices as numbers), creating objects on the way."""

    def mutate(spec: dict[str, Any]) -> None:
        node: Any = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = copy.deepcopy(value)
        else:
            node[last] = copy.deepcopy(value)

    return mutate


def deleter(path: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        node: Any = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[keys[-1]]

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        for m in mutations:
            m(spec)

    return mutate


def guardrail(**body: Any) -> Mutation:
    """Replace the guardrails with one named `g` (so the path is always spec.guardrails[0])."""
    return setter("guardrails", [{"name": "g", **body}])


def prometheus(**body: Any) -> Mutation:
    return setter("provider", {"prometheus": {"address": "http://prometheus.monitoring:9090", **body}})


def webhook(**body: Any) -> Mutation:
    """Replace the webhooks with one named `h` (so the path is always spec.webhooks[0])."""
    return setter("webhooks", [{"name": "h", "type": "BeforeStep", "url": "https://ci.example.com/gate", **body}])


W = "spec.webhooks[0]"
ERR = {"builtin": "ErrorRate"}
G = "spec.guardrails[0]"
SHORT_HOLDS = setter("canary.steps", [{"weight": 10, "hold": "10s"}, {"weight": 50, "hold": "10s"}])
S = "spec.shadow"
DISAGREEMENT = {"name": "agreement", "metric": {"builtin": "ShadowDisagreement"}, "absolute": {"max": 0.02}}
SHADOW = {
    "percent": 10,
    "duration": "5m",
    "comparator": {"service": "fraud-comparator"},
    "comparison": {"predictionPath": "$.predictions[0]", "equal": {}},
    "guardrails": [DISAGREEMENT],
}


def shadow(**body: Any) -> Mutation:
    return setter("shadow", {**SHADOW, **body})


@dataclass(frozen=True)
class Case:
    name: str
    mutate: Mutation
    field: str  # the path the API server must name
    says: str  # a fragment of the API server's message


CASES: list[Case] = [
    # -- steps ----------------------------------------------------------------------------------
    Case(
        "weights not increasing",
        setter("canary.steps", [{"weight": 50}, {"weight": 10}]),
        "spec.canary.steps",
        "step weights must be strictly increasing",
    ),
    Case(
        "equal weights",
        setter("canary.steps", [{"weight": 10}, {"weight": 10}]),
        "spec.canary.steps",
        "step weights must be strictly increasing",
    ),
    Case(
        "weight above 100",
        setter("canary.steps", [{"weight": 120}]),
        "spec.canary.steps[0].weight",
        "less than or equal to 100",
    ),
    Case(
        "negative weight",
        setter("canary.steps", [{"weight": -5}]),
        "spec.canary.steps[0].weight",
        "greater than or equal to 0",
    ),
    Case("empty steps list", setter("canary.steps", []), "spec.canary.steps", "at least 1 items"),
    Case(
        "more than 20 steps",
        setter("canary.steps", [{"weight": w} for w in range(21)]),
        "spec.canary.steps",
        "at most 20 items",
    ),
    Case(
        "both steps and linear",
        setter("canary.linear", {"stepWeight": 10, "maxWeight": 50, "hold": "1m"}),
        "spec.canary",
        "set exactly one of steps (explicit list) or linear (shorthand)",
    ),
    Case(
        "neither steps nor linear",
        setter("canary", {"afterLastStep": "Promote"}),
        "spec.canary",
        "set exactly one of steps (explicit list) or linear (shorthand)",
    ),
    Case(
        "linear stepWeight above maxWeight",
        setter("canary", {"linear": {"stepWeight": 60, "maxWeight": 50, "hold": "1m"}}),
        "spec.canary.linear.stepWeight",
        "stepWeight must not exceed maxWeight",
    ),
    Case(
        "linear hold not shorter than the deadline",
        setter("canary", {"linear": {"stepWeight": 10, "maxWeight": 50, "hold": "15m"}}),
        "spec.analysis.progressDeadline",
        "the linear hold must be shorter than analysis.progressDeadline",
    ),
    Case(
        "unknown afterLastStep",
        setter("canary.afterLastStep", "Rollback"),
        "spec.canary.afterLastStep",
        'Unsupported value: "Rollback"',
    ),
    # -- traffic --------------------------------------------------------------------------------
    Case(
        "two router blocks",
        setter("traffic.istio", {"virtualService": "vs", "host": "fraud.models.svc"}),
        "spec.traffic",
        "exactly one router must be set",
    ),
    Case("no router block", setter("traffic", {}), "spec.traffic", "exactly one router must be set"),
    Case(
        "kserve without storageUri",
        setter("traffic", {"kserve": {"inferenceService": "fraud"}}),
        "spec.candidate.backend.storageUri",
        "the kserve router needs candidate.backend.storageUri",
    ),
    Case(
        "istio without host",
        setter("traffic", {"istio": {"virtualService": "vs"}}),
        "spec.traffic.istio.host",
        "Required value",
    ),
    Case(
        "zero replicas",
        setter("traffic", {"replicas": {"totalReplicas": 0}}),
        "spec.traffic.replicas.totalReplicas",
        "greater than or equal to 1",
    ),
    Case(
        "scaleDownDelay too long",
        setter("traffic", {"replicas": {"totalReplicas": 4, "scaleDownDelay": "25h"}}),
        "spec.traffic.replicas.scaleDownDelay",
        "scaleDownDelay must be at most 24h",
    ),
    Case(
        "a backend naming a Service and an InferencePool",
        setter("candidate.backend", {"service": "fraud-v2", "inferencePool": "fraud-v2"}),
        "spec.candidate.backend.inferencePool",
        "set service or inferencePool, not both",
    ),
    Case(
        "llmInferenceService without a group",
        setter("traffic", {"llmInferenceService": {}}),
        "spec.traffic.llmInferenceService.group",
        "Required value",
    ),
    # -- LLM builtins ---------------------------------------------------------------------------
    Case(
        "llmMetrics on a classic builtin",
        guardrail(metric={"builtin": "ErrorRate", "llmMetrics": {"family": "llm-d"}}, absolute={"max": 0.1}),
        f"{G}.metric.llmMetrics",
        "llmMetrics only applies to the LLM builtins",
    ),
    Case(
        "an unknown LLM metric family",
        guardrail(metric={"builtin": "TimeToFirstTokenP99", "llmMetrics": {"family": "tgi"}}, relative={"maxRatio": 2}),
        f"{G}.metric.llmMetrics.family",
        'Unsupported value: "tgi"',
    ),
    Case(
        "a metric name PromQL cannot hold",
        guardrail(
            metric={"builtin": "TimeToFirstTokenP99", "llmMetrics": {"timeToFirstToken": "ttft{x}"}},
            relative={"maxRatio": 2},
        ),
        f"{G}.metric.llmMetrics.timeToFirstToken",
        "should match",
    ),
    Case(
        "cost without prices",
        guardrail(metric={"builtin": "CostPer1kOutputTokens"}, relative={"maxRatio": 1}),
        f"{G}.metric.prices",
        "builtin CostPer1kOutputTokens needs prices",
    ),
    Case(
        "prices on another builtin",
        guardrail(
            metric={"builtin": "TimeToFirstTokenP99", "prices": [{"model": "fraud-v2", "perReplicaHour": 1}]},
            relative={"maxRatio": 2},
        ),
        f"{G}.metric.prices",
        "builtin CostPer1kOutputTokens needs prices",
    ),
    Case(
        "a price per replica-hour and per token",
        guardrail(
            metric={
                "builtin": "CostPer1kOutputTokens",
                "prices": [{"model": "fraud-v2", "perReplicaHour": 1, "perMillionOutputTokens": 0.5}],
            },
            relative={"maxRatio": 1},
        ),
        f"{G}.metric.prices[0]",
        "set exactly one of perReplicaHour or perMillionOutputTokens",
    ),
    Case(
        "two prices for one model",
        guardrail(
            metric={
                "builtin": "CostPer1kOutputTokens",
                "prices": [{"model": "fraud-v2", "perReplicaHour": 1}, {"model": "fraud-v2", "perReplicaHour": 2}],
            },
            relative={"maxRatio": 1},
        ),
        f"{G}.metric.prices",
        "one price per model",
    ),
    Case(
        "sequential on a latency builtin",
        guardrail(metric={"builtin": "TimeToFirstTokenP99"}, sequential={}),
        f"{G}.metric",
        "the sequential rule needs metric.errorsQuery and totalQuery, or builtin ErrorRate, LabelledErrorRate, "
        "TruncatedOrAbortedRate or ShadowDisagreement",
    ),
    # -- guardrail rules ------------------------------------------------------------------------
    Case(
        "NaN threshold (as a string: JSON has no NaN)",
        guardrail(metric=ERR, absolute={"max": "NaN"}),
        f"{G}.absolute.max",
        "must be of type number",
    ),
    Case(
        "negative maxRatio",
        guardrail(metric={"builtin": "LatencyP99"}, relative={"maxRatio": -1}),
        f"{G}.relative.maxRatio",
        "should be greater than 0",
    ),
    Case(
        "min above max",
        guardrail(metric=ERR, absolute={"min": 0.5, "max": 0.1}),
        f"{G}.absolute.min",
        "min must not exceed max",
    ),
    Case("absolute with neither bound", guardrail(metric=ERR, absolute={}), f"{G}.absolute", "set min, max or both"),
    Case(
        "relative with no bound",
        guardrail(metric={"builtin": "LatencyP99"}, relative={}),
        f"{G}.relative",
        "set at least one of maxRatio, maxIncrease, minRatio, maxDecrease",
    ),
    Case(
        "minRatio above maxRatio",
        guardrail(metric={"builtin": "LatencyP99"}, relative={"minRatio": 1.5, "maxRatio": 1.1}),
        f"{G}.relative.minRatio",
        "minRatio must not exceed maxRatio",
    ),
    Case(
        "drift with no bound",
        guardrail(metric={"builtin": "PredictionDistribution"}, drift={}),
        f"{G}.drift",
        "set maxPSI, maxJSDistance or both",
    ),
    Case(
        "JS distance above 1",
        guardrail(metric={"builtin": "PredictionDistribution"}, drift={"maxJSDistance": 2}),
        f"{G}.drift.maxJSDistance",
        "less than or equal to 1",
    ),
    Case(
        "significance 0.5",
        guardrail(metric=ERR, sequential={"significance": 0.5}),
        f"{G}.sequential.significance",
        "less than or equal to 0.2",
    ),
    Case(
        "unknown guardrail rule",
        guardrail(metric=ERR, percentile={"p": 99, "max": 0.2}),
        f"{G}.percentile",
        "unknown field",
    ),
    Case(
        "two rules",
        guardrail(metric=ERR, absolute={"max": 1}, relative={"maxRatio": 2}),
        G,
        "set exactly one rule: absolute, relative, sequential or drift",
    ),
    Case("no rule", guardrail(metric=ERR), G, "set exactly one rule: absolute, relative, sequential or drift"),
    # -- guardrail metric sources ---------------------------------------------------------------
    Case(
        "metric with two sources",
        guardrail(metric={"builtin": "ErrorRate", "query": "up"}, absolute={"max": 1}),
        f"{G}.metric",
        "set exactly one of query, errorsQuery (with totalQuery), distributionQuery or builtin",
    ),
    Case(
        "metric with no source",
        guardrail(metric={}, absolute={"max": 1}),
        f"{G}.metric",
        "set exactly one of query, errorsQuery (with totalQuery), distributionQuery or builtin",
    ),
    Case("missing metric", guardrail(absolute={"max": 1}), f"{G}.metric", "Required value"),
    Case(
        "empty query",
        guardrail(metric={"query": ""}, absolute={"max": 1}),
        f"{G}.metric.query",
        "at least 1 chars long",
    ),
    Case(
        "errorsQuery without totalQuery",
        guardrail(metric={"errorsQuery": "sum(increase(errors_total[{{window}}]))"}, sequential={}),
        f"{G}.metric.totalQuery",
        "errorsQuery and totalQuery go together",
    ),
    Case(
        "sequential rule with a plain query",
        guardrail(metric={"query": "up"}, sequential={}),
        f"{G}.metric",
        "the sequential rule needs metric.errorsQuery and totalQuery, or builtin ErrorRate",
    ),
    Case(
        "drift without a distribution",
        guardrail(metric=ERR, drift={"maxPSI": 0.2}),
        f"{G}.metric",
        "the drift rule needs metric.distributionQuery or builtin PredictionDistribution",
    ),
    Case(
        "drift on a plain query",
        guardrail(metric={"query": "up"}, drift={"maxPSI": 0.2}),
        f"{G}.metric",
        "the drift rule needs metric.distributionQuery or builtin PredictionDistribution",
    ),
    Case(
        "absolute rule on a distribution",
        guardrail(metric={"builtin": "PredictionDistribution"}, absolute={"max": 1}),
        f"{G}.metric",
        "absolute and relative rules need metric.query or a value builtin",
    ),
    Case(
        "samplesQuery with a builtin",
        guardrail(metric={"builtin": "ErrorRate", "samplesQuery": "up"}, absolute={"max": 1}),
        f"{G}.metric.samplesQuery",
        "samplesQuery only applies to query",
    ),
    Case(
        "distributionLabel that is no Prometheus label",
        guardrail(metric={"distributionQuery": "x", "distributionLabel": "my-class"}, drift={"maxPSI": 0.2}),
        f"{G}.metric.distributionLabel",
        "should match",
    ),
    Case(
        "distributionLabel on a plain query",
        guardrail(metric={"query": "up", "distributionLabel": "le"}, absolute={"max": 1}),
        f"{G}.metric.distributionLabel",
        "distributionLabel only applies to distributionQuery",
    ),
    # -- segments -------------------------------------------------------------------------------
    Case(
        "segmentBy that is no Prometheus label",
        guardrail(metric=ERR, absolute={"max": 1}, segmentBy="re-gion"),
        f"{G}.segmentBy",
        "should match",
    ),
    Case(
        "maxSegments without segmentBy",
        guardrail(metric=ERR, absolute={"max": 1}, maxSegments=4),
        f"{G}.segmentBy",
        "maxSegments and minSegmentShare only apply with segmentBy",
    ),
    Case(
        "segmentBy the same label as the distribution's buckets",
        guardrail(metric={"builtin": "PredictionDistribution"}, drift={"maxPSI": 0.2}, segmentBy="le"),
        f"{G}.segmentBy",
        "segmentBy must differ from the distribution's label",
    ),
    Case(
        "maxSegments above 20",
        guardrail(metric=ERR, absolute={"max": 1}, segmentBy="region", maxSegments=21),
        f"{G}.maxSegments",
        "less than or equal to 20",
    ),
    Case(
        "minSegmentShare above one half",
        guardrail(metric=ERR, absolute={"max": 1}, segmentBy="region", minSegmentShare=0.6),
        f"{G}.minSegmentShare",
        "less than or equal to 0.5",
    ),
    # -- guardrail policy -----------------------------------------------------------------------
    Case(
        "duplicate guardrail names",
        setter(
            "guardrails",
            [
                {"name": "g", "metric": ERR, "absolute": {"max": 1}},
                {"name": "g", "metric": ERR, "absolute": {"max": 2}},
            ],
        ),
        "spec.guardrails",
        "guardrail names must be unique",
    ),
    Case(
        "more than 16 guardrails",
        setter("guardrails", [{"name": f"g{i}", "metric": ERR, "absolute": {"max": 1}} for i in range(17)]),
        "spec.guardrails",
        "at most 16 items",
    ),
    Case(
        "critical with failureTolerance",
        guardrail(metric=ERR, absolute={"max": 1}, critical=True, failureTolerance=2),
        f"{G}.failureTolerance",
        "failureTolerance must be 0",
    ),
    Case(
        "labelDelay beyond 720h",
        guardrail(metric={"builtin": "LabelledErrorRate"}, sequential={}, labelDelay="721h"),
        f"{G}.labelDelay",
        "labelDelay must be at most 720h",
    ),
    Case(
        "labelDelay on a drift rule",
        guardrail(metric={"builtin": "PredictionDistribution"}, drift={"maxPSI": 0.2}, labelDelay="1h"),
        f"{G}.labelDelay",
        "labelDelay applies to rules on labelled outcomes",
    ),
    Case(
        "sequential on LabelledLoss",
        guardrail(metric={"builtin": "LabelledLoss"}, sequential={}),
        f"{G}.metric",
        "the sequential rule needs metric.errorsQuery and totalQuery, or builtin ErrorRate, LabelledErrorRate, "
        "TruncatedOrAbortedRate or ShadowDisagreement",
    ),
    Case(
        "onNoData Pass",
        guardrail(metric=ERR, absolute={"max": 1}, onNoData="Pass"),
        f"{G}.onNoData",
        'Unsupported value: "Pass"',
    ),
    Case(
        "zero minSamples",
        guardrail(metric=ERR, absolute={"max": 1}, minSamples=0),
        f"{G}.minSamples",
        "greater than or equal to 1",
    ),
    Case(
        "guardrail name with capitals",
        setter("guardrails", [{"name": "ErrorRate", "metric": ERR, "absolute": {"max": 1}}]),
        f"{G}.name",
        "should match",
    ),
    # -- analysis -------------------------------------------------------------------------------
    Case("zero interval", setter("analysis", {"interval": "0s"}), "spec.analysis.interval", "longer than 0s"),
    Case(
        "malformed duration",
        setter("analysis", {"interval": "5 minutes"}),
        "spec.analysis.interval",
        "should match",
    ),
    Case(
        "progressDeadline shorter than a hold",
        setter("analysis", {"interval": "10s", "progressDeadline": "30s"}),
        "spec.analysis.progressDeadline",
        "every step's hold must be shorter than analysis.progressDeadline",
    ),
    Case(
        "progressDeadline shorter than interval",
        both(SHORT_HOLDS, setter("analysis", {"interval": "5m", "progressDeadline": "1m"})),
        "spec.analysis.progressDeadline",
        "progressDeadline must be longer than interval",
    ),
    Case(
        "progressDeadline above 720h",
        setter("analysis", {"progressDeadline": "721h"}),
        "spec.analysis.progressDeadline",
        "progressDeadline must be at most 720h",
    ),
    Case(
        "errorBudget with no sequential guardrail to spend it",
        both(guardrail(metric=ERR, absolute={"max": 0.01}), setter("analysis", {"errorBudget": 50})),
        "spec.analysis.errorBudget",
        "analysis.errorBudget is spent only by sequential guardrails",
    ),
    Case(
        "negative errorBudget",
        setter("analysis", {"errorBudget": -1}),
        "spec.analysis.errorBudget",
        "greater than or equal to 0",
    ),
    Case(
        "fractional errorBudget",
        setter("analysis", {"errorBudget": 2.5}),
        "spec.analysis.errorBudget",
        "integer",
    ),
    Case(
        "unknown onDeadline",
        setter("analysis", {"onDeadline": "Wait"}),
        "spec.analysis.onDeadline",
        "Unsupported value",
    ),
    Case(
        "fractional window (not PromQL)",
        setter("analysis", {"window": "1.5m"}),
        "spec.analysis.window",
        "window goes into PromQL",
    ),
    Case("zero window", setter("analysis", {"window": "0s"}), "spec.analysis.window", "window goes into PromQL"),
    Case(
        "fractional interval without a window",
        setter("analysis", {"interval": "1.5m"}),
        "spec.analysis.interval",
        "without a window the interval goes into PromQL",
    ),
    Case(
        "unknown analysis mode",
        setter("analysis", {"mode": "Shadow"}),
        "spec.analysis.mode",
        'Unsupported value: "Shadow"',
    ),
    Case(
        "zero inconclusiveLimit",
        setter("analysis", {"inconclusiveLimit": 0}),
        "spec.analysis.inconclusiveLimit",
        "greater than or equal to 1",
    ),
    # -- provider -------------------------------------------------------------------------------
    Case(
        "user and password in the address",
        prometheus(address="http://user:pass@prom:9090"),
        "spec.provider.prometheus.address",
        "credentials must not be inline in the address: use secretRef",
    ),
    Case(
        "token in the address",
        prometheus(address="https://s3cr3t@prom.monitoring:9090/"),
        "spec.provider.prometheus.address",
        "credentials must not be inline in the address: use secretRef",
    ),
    Case(
        "cloud metadata service (IPv4 link-local)",
        prometheus(address="http://169.254.169.254/latest"),
        "spec.provider.prometheus.address",
        "address must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
    ),
    Case(
        "link-local with a port",
        prometheus(address="https://169.254.10.20:9090"),
        "spec.provider.prometheus.address",
        "address must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
    ),
    Case(
        "IPv6 link-local",
        prometheus(address="http://[fe80::1]:9090"),
        "spec.provider.prometheus.address",
        "address must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
    ),
    Case(
        "IPv6 link-local with a zone",
        prometheus(address="http://[fe80::1%25eth0]:9090"),
        "spec.provider.prometheus.address",
        "address must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
    ),
    Case(
        "IPv6 link-local, upper case",
        prometheus(address="http://[FE80::abcd]:9090"),
        "spec.provider.prometheus.address",
        "address must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
    ),
    Case(
        "the API server by its short name",
        prometheus(address="https://kubernetes"),
        "spec.provider.prometheus.address",
        "address must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
    ),
    Case(
        "the API server in default",
        prometheus(address="https://kubernetes.default:443"),
        "spec.provider.prometheus.address",
        "address must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
    ),
    Case(
        "the API server by its service name",
        prometheus(address="https://kubernetes.default.svc/api"),
        "spec.provider.prometheus.address",
        "address must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
    ),
    Case(
        "the API server by its FQDN",
        prometheus(address="https://Kubernetes.Default.svc.cluster.local."),
        "spec.provider.prometheus.address",
        "address must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
    ),
    Case(
        "inline password field",
        prometheus(password="hunter2"),
        "spec.provider.prometheus.password",
        "unknown field",
    ),
    Case(
        "address without a scheme",
        prometheus(address="prometheus.monitoring:9090"),
        "spec.provider.prometheus.address",
        "should match",
    ),
    Case(
        "zero timeout",
        prometheus(timeout="0s"),
        "spec.provider.prometheus.timeout",
        "timeout must be longer than 0s and at most 5m",
    ),
    Case(
        "zero staleAfter",
        prometheus(staleAfter="0s"),
        "spec.provider.prometheus.staleAfter",
        "staleAfter must be longer than 0s and at most 24h",
    ),
    Case(
        "secretRef without a name",
        prometheus(secretRef={"key": "token"}),
        "spec.provider.prometheus.secretRef.name",
        "Required value",
    ),
    # -- models and the spec itself -------------------------------------------------------------
    Case("unknown spec field", setter("replicasOfDoom", 3), "spec.replicasOfDoom", "unknown field"),
    Case(
        "incumbent equals candidate",
        setter("incumbent", {"name": "fraud-v2"}),
        "spec.candidate.name",
        "candidate and incumbent must be different models",
    ),
    Case("model name with capitals", setter("candidate", {"name": "Fraud_V2"}), "spec.candidate.name", "should match"),
    Case(
        "port 0",
        setter("candidate", {"name": "fraud-v2", "backend": {"port": 0}}),
        "spec.candidate.backend.port",
        "greater than or equal to 1",
    ),
    Case(
        "version that would break out of a PromQL string",
        setter("candidate", {"name": "fraud-v2", "version": '2"} or vector(1) #'}),
        "spec.candidate.version",
        "should match",
    ),
    Case("missing candidate", deleter("candidate"), "spec.candidate", "Required value"),
    # -- webhooks -------------------------------------------------------------------------------
    Case(
        "webhook url with credentials",
        webhook(url="https://user:token@ci.example.com/gate"),
        f"{W}.url",
        "credentials must not be inline in the url",
    ),
    Case(
        "webhook url on a cloud metadata address",
        webhook(url="http://169.254.169.254/latest/meta-data"),
        f"{W}.url",
        "url must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
    ),
    Case(
        "webhook url on a link-local IPv6 address",
        webhook(url="http://[fe80::1]:8080/hook"),
        f"{W}.url",
        "url must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
    ),
    Case(
        "webhook url is the API server",
        webhook(url="https://kubernetes.default.svc/api/v1/namespaces"),
        f"{W}.url",
        "url must not be link-local (169.254.0.0/16, fe80::/10) or the Kubernetes API server",
    ),
    Case(
        "webhook with both url and service",
        webhook(service={"name": "ci"}),
        W,
        "set exactly one of url, service or urlSecretRef",
    ),
    Case(
        "webhook with both url and urlSecretRef",
        webhook(urlSecretRef={"name": "slack-url"}),
        W,
        "set exactly one of url, service or urlSecretRef",
    ),
    Case(
        "webhook with neither url nor service",
        setter("webhooks", [{"name": "h", "type": "BeforeStep"}]),
        W,
        "set exactly one of url, service or urlSecretRef",
    ),
    Case("events on a gate", webhook(events=["Promoted"]), f"{W}.events", "events only apply to type Notification"),
    Case(
        "a Slack format on a gate", webhook(format="Slack"), f"{W}.format", "format only applies to type Notification"
    ),
    Case(
        "caBundleRef on plain http",
        webhook(url="http://ci.example.com/gate", caBundleRef={"name": "ca"}),
        f"{W}.caBundleRef",
        "caBundleRef only applies to https",
    ),
    Case(
        "webhook timeout of zero",
        webhook(timeout="0s"),
        f"{W}.timeout",
        "timeout must be longer than 0s and at most 5m",
    ),
    Case("an unknown webhook type", webhook(type="PostRollout"), f"{W}.type", "Unsupported value"),
    Case("an inline HMAC key", webhook(hmacKey="s3cr3t"), f"{W}.hmacKey", "unknown field"),
    Case(
        "duplicate webhook names",
        setter(
            "webhooks",
            [
                {"name": "h", "type": "Notification", "url": "https://a.example.com/"},
                {"name": "h", "type": "BeforeStep", "url": "https://b.example.com/"},
            ],
        ),
        "spec.webhooks",
        "webhook names must be unique",
    ),
    # -- shadow (docs/shadow.md) ----------------------------------------------------------------
    Case(
        "shadow on a router that cannot mirror",
        both(
            shadow(),
            setter("traffic", {"replicas": {"totalReplicas": 2}}),
        ),
        S,
        "shadow needs a router that can mirror requests",
    ),
    Case(
        "shadow on kserve",
        both(
            shadow(),
            setter("traffic", {"kserve": {"inferenceService": "fraud"}}),
            setter("candidate.backend", {"storageUri": "s3://models/fraud/v2"}),
        ),
        S,
        "shadow needs a router that can mirror requests",
    ),
    Case(
        "shadow without a ShadowDisagreement guardrail",
        shadow(guardrails=[{"name": "e", "metric": ERR, "absolute": {"max": 0.01}}]),
        f"{S}.guardrails",
        "shadow.guardrails needs a guardrail with builtin ShadowDisagreement",
    ),
    Case(
        "ShadowDisagreement among the canary's guardrails",
        both(shadow(), guardrail(metric={"builtin": "ShadowDisagreement"}, absolute={"max": 0.01})),
        "spec.guardrails",
        "builtin ShadowDisagreement is judged in the shadow phase only",
    ),
    Case(
        "a sequential ShadowDisagreement without a noise floor",
        shadow(guardrails=[{"name": "a", "metric": {"builtin": "ShadowDisagreement"}, "sequential": {}}]),
        f"{S}.noiseFloor",
        "a sequential ShadowDisagreement is judged against the incumbent's noise floor",
    ),
    Case(
        "a relative ShadowDisagreement",
        shadow(guardrails=[{"name": "a", "metric": {"builtin": "ShadowDisagreement"}, "relative": {"maxRatio": 2}}]),
        f"{S}.guardrails[0].metric.builtin",
        "builtin ShadowDisagreement takes an absolute rule",
    ),
    Case(
        "two comparison rules",
        shadow(comparison={"equal": {}, "numeric": {"absolute": 0.1}}),
        f"{S}.comparison",
        "set exactly one of equal, numeric or topK",
    ),
    Case(
        "a numeric comparison without a tolerance",
        shadow(comparison={"numeric": {}}),
        f"{S}.comparison.numeric",
        "set absolute, relative or both",
    ),
    Case(
        "a prediction path that is not a JSON path",
        shadow(comparison={"predictionPath": "predictions.0", "equal": {}}),
        f"{S}.comparison.predictionPath",
        "should match",
    ),
    Case("mirroring 0%", shadow(percent=0), f"{S}.percent", "greater than or equal to 1"),
    Case(
        "shadow longer than the deadline",
        shadow(duration="15m"),
        f"{S}.duration",
        "shadow.duration must be shorter than analysis.progressDeadline",
    ),
    Case(
        "duplicate shadow guardrail names",
        shadow(guardrails=[DISAGREEMENT, DISAGREEMENT]),
        f"{S}.guardrails",
        "shadow guardrail names must be unique",
    ),
    Case(
        "a noise floor sample above 1",
        shadow(noiseFloor={"sample": 1.5}),
        f"{S}.noiseFloor.sample",
        "less than or equal to 1",
    ),
    # Review finding 13: rules that could never be conclusive in shadow are refused at once.
    Case(
        "a label guardrail in shadow",
        shadow(
            guardrails=[
                DISAGREEMENT,
                {"name": "l", "metric": {"builtin": "LabelledErrorRate"}, "absolute": {"max": 0.1}},
            ]
        ),
        f"{S}.guardrails",
        "shadow.guardrails cannot hold a label guardrail",
    ),
    Case(
        "a labelDelay in shadow",
        shadow(guardrails=[DISAGREEMENT, {"name": "l", "metric": ERR, "absolute": {"max": 0.1}, "labelDelay": "1h"}]),
        f"{S}.guardrails",
        "shadow.guardrails cannot hold a label guardrail",
    ),
    Case(
        "a segmented ShadowDisagreement",
        shadow(guardrails=[{**DISAGREEMENT, "segmentBy": "region"}]),
        f"{S}.guardrails[0].segmentBy",
        "builtin ShadowDisagreement cannot be segmented",
    ),
    Case(
        "shadow of a candidate served by an InferencePool",
        both(shadow(), setter("candidate.backend", {"inferencePool": "fraud-pool"})),
        "spec.candidate.backend.inferencePool",
        "candidate.backend.inferencePool cannot be shadowed",
    ),
    Case(
        "shadow against an incumbent served by an InferencePool",
        both(shadow(), setter("incumbent.backend", {"inferencePool": "fraud-pool"})),
        "spec.incumbent.backend.inferencePool",
        "incumbent.backend.inferencePool cannot be shadowed",
    ),
]


def _rule_messages() -> set[str]:
    models = (v for v in vars(api_models).values() if isinstance(v, type) and issubclass(v, ApiModel))
    return {rule.message for model in models for rule in model.rules}


RULE_MESSAGES = _rule_messages()


def _create(api_client: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )
    return created


def names_field(message: str, field: str) -> bool:
    """The exact path, as the server prints it: `path: Invalid value...` or `unknown field "path"`."""
    return re.search(re.escape(field) + r'(:|")', message) is not None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_rollout_is_rejected_naming_the_field(
    api_client: client.ApiClient, namespace: str, case: Case
) -> None:
    body = minimal_rollout("bad")
    case.mutate(body["spec"])

    with pytest.raises(ApiException) as refused:
        _create(api_client, namespace, body)

    assert refused.value.status in (400, 422), refused.value.body
    message = json.loads(refused.value.body)["message"]
    assert names_field(message, case.field), f"{case.name}: {case.field!r} not named in: {message}"
    assert case.says in message, f"{case.name}: {case.says!r} not in: {message}"

    with pytest.raises(ValidationError) as invalid:
        ModelRolloutSpec.model_validate(body["spec"])
    if any(case.says in rule for rule in RULE_MESSAGES):
        # The same cross-field rule fired on both sides, not merely some other check.
        assert case.says in str(invalid.value), f"{case.name}: the models said: {invalid.value}"


def test_there_are_at_least_30_malformed_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


# Near misses: valid objects on the edge of a rule. The server and the models must both accept them.
VALID: list[tuple[str, Mutation]] = [
    ("the minimal rollout", lambda spec: None),
    ("no incumbent (the first candidate is adopted)", deleter("incumbent")),
    ("no guardrails", setter("guardrails", [])),
    ("guardrails left out", deleter("guardrails")),
    ("one step at 100%", setter("canary.steps", [{"weight": 100}])),
    ("a first step at 0%", setter("canary.steps", [{"weight": 0, "hold": "1m"}, {"weight": 100}])),
    ("20 steps", setter("canary.steps", [{"weight": 5 * i + 1} for i in range(20)])),
    (
        "linear with stepWeight == maxWeight",
        setter("canary", {"linear": {"stepWeight": 50, "maxWeight": 50, "hold": "1m"}}),
    ),
    ("hold just under the deadline", setter("canary.steps", [{"weight": 10, "hold": "14m59s"}])),
    (
        "longest deadline",
        both(setter("analysis", {"interval": "1h", "progressDeadline": "720h"}), setter("canary.steps.0.hold", "719h")),
    ),
    ("fractional interval with a window", setter("analysis", {"interval": "1.5m", "window": "5m"})),
    (
        "errorBudget 0 without a sequential guardrail",
        both(guardrail(metric=ERR, absolute={"max": 0.01}), setter("analysis", {"errorBudget": 0})),
    ),
    ("onDeadline Pause", setter("analysis", {"onDeadline": "Pause"})),
    (
        "every webhook type, by url and by service, signed, with a private CA",
        setter(
            "webhooks",
            [
                {"name": "load-test", "type": "BeforeTraffic", "url": "http://loadtest.ci:8080/run"},
                {
                    "name": "ticket",
                    "type": "BeforeStep",
                    "service": {"name": "gatekeeper", "port": 8443, "scheme": "https", "path": "/approve"},
                    "caBundleRef": {"name": "ca", "key": "ca.crt"},
                },
                {"name": "owner", "type": "BeforePromotion", "url": "https://ci.example.com/x", "onError": "Pause"},
                {"name": "incidents", "type": "Rollback", "url": "https://pager.example.com/open", "timeout": "5m"},
                {
                    "name": "slack",
                    "type": "Notification",
                    "url": "https://hooks.slack.com/services/T0/B0/x",
                    "format": "Slack",
                    "events": ["Promoted", "RolledBack"],
                    "secretRef": {"name": "hmac", "key": "k"},
                },
                {"name": "bus", "type": "Notification", "url": "https://events.example.com/", "format": "CloudEvents"},
            ],
        ),
    ),
    ("a webhook on an address that only looks like 169.254", webhook(url="https://169.254.example.com/gate")),
    (
        "a Slack URL kept in a Secret, with a CA bundle",
        setter(
            "webhooks",
            [
                {
                    "name": "s",
                    "type": "Notification",
                    "urlSecretRef": {"name": "slack", "key": "url"},
                    "format": "Slack",
                    "caBundleRef": {"name": "ca"},
                }
            ],
        ),
    ),
    ("compound window", setter("analysis", {"window": "1h30m", "interval": "90s", "progressDeadline": "2h"})),
    ("longest window", setter("analysis", {"window": "24h"})),
    ("min == max", guardrail(metric=ERR, absolute={"min": 0.01, "max": 0.01})),
    ("only a lower bound", guardrail(metric={"query": "up"}, absolute={"min": 0.9})),
    ("minRatio == maxRatio", guardrail(metric={"query": "up"}, relative={"minRatio": 1, "maxRatio": 1})),
    ("significance 0.2", guardrail(metric=ERR, sequential={"significance": 0.2})),
    ("errorsQuery and totalQuery", guardrail(metric={"errorsQuery": "e", "totalQuery": "t"}, sequential={})),
    (
        "distributionQuery with a class label",
        guardrail(metric={"distributionQuery": "d", "distributionLabel": "class_name"}, drift={"maxJSDistance": 1}),
    ),
    (
        "segments at their limits",
        guardrail(metric=ERR, sequential={}, segmentBy="region", maxSegments=20, minSegmentShare=0.5),
    ),
    (
        "segmentBy on a drift rule by class",
        guardrail(
            metric={"distributionQuery": "d", "distributionLabel": "class_name"}, drift={"maxPSI": 0.2}, segmentBy="le"
        ),
    ),
    (
        "segmentBy alone, on a relative rule",
        guardrail(metric={"query": "up"}, relative={"maxRatio": 2}, segmentBy="_d"),
    ),
    ("labelDelay 720h", guardrail(metric={"builtin": "LabelledErrorRate"}, sequential={}, labelDelay="720h")),
    ("LabelledLoss relative", guardrail(metric={"builtin": "LabelledLoss"}, relative={"maxRatio": 1.05})),
    ("labelDelay on a custom query", guardrail(metric={"query": "q"}, absolute={"min": 0.9}, labelDelay="2h")),
    ("non-critical with tolerance", guardrail(metric=ERR, absolute={"max": 1}, critical=False, failureTolerance=3)),
    (
        "16 guardrails",
        setter("guardrails", [{"name": f"g{i}", "metric": ERR, "absolute": {"max": 1}} for i in range(16)]),
    ),
    (
        "provider at its limits",
        prometheus(address="https://prom.example:9443/api/prom?x=a@b", timeout="5m", staleAfter="24h"),
    ),
    ("provider with a secretRef", prometheus(secretRef={"name": "prometheus-reader"})),
    ("provider next to link-local", prometheus(address="http://169.255.0.1:9090")),
    ("provider on an IPv6 address", prometheus(address="http://[fd00::1]:9090")),
    ("a service named like the API server", prometheus(address="http://kubernetes-metrics.monitoring:9090")),
    ("the API server's name in a path", prometheus(address="http://prom.example/kubernetes.default")),
    ("versions as people write them", setter("candidate", {"name": "fraud-v2", "version": "v2.0.1+git.3f2a:rc/1"})),
    (
        "kserve with storageUri",
        both(
            setter("traffic", {"kserve": {"inferenceService": "fraud"}}),
            setter("candidate.backend", {"storageUri": "s3://models/fraud/v2"}),
        ),
    ),
    ("istio", setter("traffic", {"istio": {"virtualService": "fraud", "route": "primary", "host": "fraud.svc"}})),
    ("replicas without delay", setter("traffic", {"replicas": {"totalReplicas": 1, "scaleDownDelay": "0s"}})),
    ("an InferencePool backend", setter("candidate.backend", {"inferencePool": "fraud-v2", "port": 8000})),
    ("llmInferenceService", setter("traffic", {"llmInferenceService": {"group": "fraud"}})),
    (
        "TTFT in llm-d's names, for LoRA adapters",
        guardrail(
            metric={
                "builtin": "TimeToFirstTokenP99",
                "llmMetrics": {"family": "llm-d", "modelLabel": "target_model_name"},
            },
            relative={"maxRatio": 1.5},
        ),
    ),
    ("finish reasons, sequential", guardrail(metric={"builtin": "TruncatedOrAbortedRate"}, sequential={})),
    (
        "cost, one model per token and one per replica-hour",
        guardrail(
            metric={
                "builtin": "CostPer1kOutputTokens",
                "prices": [
                    {"model": "fraud-v1", "perMillionInputTokens": 0.1, "perMillionOutputTokens": 0.6},
                    {"model": "fraud-v2", "perReplicaHour": 2.5},
                ],
            },
            relative={"maxRatio": 1.0},
        ),
    ),
    ("shadow on Gateway API", shadow()),
    (
        "shadow on Istio, top-k with a noise floor and a sequential test",
        both(
            setter("traffic", {"istio": {"virtualService": "fraud", "host": "fraud.svc"}}),
            shadow(
                percent=100,
                comparison={"predictionPath": "$.ranking", "topK": {"k": 10, "minOverlap": 0.8, "itemPath": "$.id"}},
                noiseFloor={"sample": 0.1},
                guardrails=[
                    {
                        "name": "agreement",
                        "metric": {"builtin": "ShadowDisagreement"},
                        "sequential": {"minAbsoluteEffect": 0.01},
                    },
                    {"name": "errors", "metric": ERR, "sequential": {}},
                ],
            ),
        ),
    ),
    ("shadow just under the deadline", shadow(duration="14m59s", comparison={"numeric": {"relative": 0.01}})),
]


@pytest.mark.parametrize(("case", "mutate"), VALID, ids=[c for c, _ in VALID])
def test_valid_near_misses_are_accepted_by_both(
    api_client: client.ApiClient, namespace: str, case: str, mutate: Mutation
) -> None:
    body = minimal_rollout("good")
    mutate(body["spec"])
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "good-"

    created = _create(api_client, namespace, body)

    stored = ModelRolloutSpec.model_validate(created["spec"])
    assert stored.wire() == ModelRolloutSpec.model_validate(body["spec"]).wire(), case
