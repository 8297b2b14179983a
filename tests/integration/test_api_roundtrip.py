"""Generated valid specs round-trip through the API server and the models unchanged.

The strategy builds specs from parts, every part valid on its own and the parts consistent
with each other: one router block (KServe with the candidate's storageUri), strictly increasing
step weights or the linear shorthand, 0-3 guardrails of the four rule kinds each with a metric
source that fits it, and durations inside the deadline rule. Optional fields are left out at
random, so the API server's schema defaults are compared with the models' defaults.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from controller.api import GROUP, KIND, PLURAL, VERSION, ModelRolloutSpec
from controller.api.models import Analysis, PrometheusSource

label = st.from_regex(r"[a-z]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)
dns_name = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True)
version = st.from_regex(r"[A-Za-z0-9][-A-Za-z0-9._+:@/]{0,15}", fullmatch=True)
prom_label = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True)
query = st.sampled_from(
    [
        'sum(rate(fraud_decisions_total{model="{{model}}",decision="approve"}[{{window}}]))',
        'histogram_quantile(0.95, sum by (le) (rate(latency_bucket{model="{{model}}"}[{{window}}])))',
        'avg_over_time(score{model="{{model}}",version="{{version}}",ns="{{namespace}}"}[{{window}}])',
    ]
)


def promql(seconds: int) -> str:
    """A duration as PromQL and CEL both read it: whole numbers, units descending (1h2m3s)."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"


def optional(draw: st.DrawFn, target: dict[str, Any], key: str, strategy: st.SearchStrategy[Any]) -> None:
    """Set target[key] or leave it out (then both sides must fill the same default)."""
    if draw(st.booleans()):
        target[key] = draw(strategy)


@st.composite
def hold_seconds(draw: st.DrawFn) -> tuple[str, float]:
    """A hold, written as people write them, and its length in seconds."""
    if draw(st.booleans()):
        seconds = draw(st.integers(0, 7200))
        return promql(seconds), float(seconds)
    halves = draw(st.integers(1, 240))
    return f"{halves / 2}m", halves * 30.0


@st.composite
def canary(draw: st.DrawFn) -> tuple[dict[str, Any], float]:
    """A canary block and its longest hold in seconds."""
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        weights = sorted(draw(st.sets(st.integers(0, 100), min_size=1, max_size=20)))
        steps, longest = [], 0.0
        for w in weights:
            step: dict[str, Any] = {"weight": w}
            if draw(st.booleans()):
                text, seconds = draw(hold_seconds())
                step["hold"], longest = text, max(longest, seconds)
            optional(draw, step, "manualGate", st.booleans())
            steps.append(step)
        out["steps"] = steps
    else:
        top = draw(st.integers(1, 100))
        text, longest = draw(hold_seconds())
        out["linear"] = {"stepWeight": draw(st.integers(1, top)), "maxWeight": top, "hold": text}
    optional(draw, out, "afterLastStep", st.sampled_from(["Promote", "WaitForPromotion"]))
    return out, longest


@st.composite
def analysis(draw: st.DrawFn, longest_hold: float) -> dict[str, Any] | None:
    if longest_hold < 15 * 60 and draw(st.booleans()):
        return None  # the whole block defaults: interval 30s, progressDeadline 15m
    interval = draw(st.integers(1, 600))
    deadline = int(max(longest_hold, interval)) + draw(st.integers(1, 3600))
    out: dict[str, Any] = {"interval": promql(interval), "progressDeadline": promql(deadline)}
    optional(draw, out, "window", st.integers(1, 24 * 3600).map(promql))
    optional(draw, out, "failureLimit", st.integers(0, 1000))
    optional(draw, out, "inconclusiveLimit", st.integers(1, 1000))
    optional(draw, out, "mode", st.sampled_from(["Enforce", "Advisory"]))
    return out


def bound(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def guardrail(draw: st.DrawFn, name: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["absolute", "relative", "sequential", "drift"]))
    g: dict[str, Any] = {"name": name}
    if kind in ("absolute", "relative"):
        g["metric"] = draw(
            st.one_of(
                st.sampled_from([{"builtin": "ErrorRate"}, {"builtin": "LatencyP99"}]),
                st.builds(lambda q, s: {"query": q, **({"samplesQuery": s} if s else {})}, query, st.none() | query),
            )
        )
    if kind == "absolute":
        low, high = sorted(draw(st.lists(bound(-1e6, 1e6), min_size=2, max_size=2)))
        g["absolute"] = draw(st.sampled_from([{"min": low}, {"max": high}, {"min": low, "max": high}]))
    elif kind == "relative":
        low, high = sorted(draw(st.lists(bound(0.01, 10), min_size=2, max_size=2)))
        rule: dict[str, Any] = {}
        optional(draw, rule, "minRatio", st.just(low))
        optional(draw, rule, "maxRatio", st.just(high))
        optional(draw, rule, "maxIncrease", bound(0, 1e3))
        optional(draw, rule, "maxDecrease", bound(0, 1e3))
        g["relative"] = rule or {"maxRatio": high}
    elif kind == "sequential":
        g["metric"] = draw(
            st.sampled_from(
                [
                    {"builtin": "ErrorRate"},
                    {
                        "errorsQuery": 'sum(increase(errors_total{model="{{model}}"}[{{window}}]))',
                        "totalQuery": 'sum(increase(requests_total{model="{{model}}"}[{{window}}]))',
                    },
                ]
            )
        )
        rule = {}
        optional(draw, rule, "significance", bound(0.001, 0.2))
        optional(draw, rule, "minEffect", bound(0.01, 10))
        g["sequential"] = rule
    else:
        if draw(st.booleans()):
            g["metric"] = {"builtin": "PredictionDistribution"}
        else:
            g["metric"] = {"distributionQuery": 'sum by (le) (increase(score_bucket{model="{{model}}"}[{{window}}]))'}
            optional(draw, g["metric"], "distributionLabel", prom_label)
        rule = {}
        optional(draw, rule, "maxPSI", bound(0.01, 10))
        optional(draw, rule, "maxJSDistance", bound(0.01, 1))
        optional(draw, rule, "significance", bound(0.001, 0.2))
        g["drift"] = rule if ("maxPSI" in rule or "maxJSDistance" in rule) else {**rule, "maxPSI": 0.2}
    optional(draw, g, "minSamples", st.integers(1, 100_000))
    if draw(st.booleans()):
        g["critical"] = False
        optional(draw, g, "failureTolerance", st.integers(0, 1000))
    else:
        optional(draw, g, "critical", st.just(True))
    optional(draw, g, "onNoData", st.sampled_from(["Wait", "Pause", "Rollback"]))
    optional(draw, g, "onError", st.sampled_from(["Wait", "Pause", "Rollback"]))
    return g


@st.composite
def traffic_and_models(draw: st.DrawFn) -> dict[str, Any]:
    incumbent, candidate = draw(st.lists(dns_name, min_size=2, max_size=2, unique=True))
    router = draw(st.sampled_from(["gatewayAPI", "istio", "kserve", "replicas"]))
    backends: dict[str, st.SearchStrategy[dict[str, Any]]] = {
        "gatewayAPI": st.fixed_dictionaries({}, optional={"service": label, "port": st.integers(1, 65535)}),
        "istio": st.fixed_dictionaries({}, optional={"host": dns_name, "subset": label}),
        "kserve": st.fixed_dictionaries({"storageUri": st.builds(lambda n: f"s3://models/{n}", label)}),
        "replicas": st.fixed_dictionaries({}, optional={"deployment": dns_name}),
    }
    routers: dict[str, st.SearchStrategy[dict[str, Any]]] = {
        "gatewayAPI": st.fixed_dictionaries({"httpRoute": dns_name}, optional={"ruleName": label}),
        "istio": st.fixed_dictionaries({"virtualService": dns_name, "host": dns_name}, optional={"route": label}),
        "kserve": st.fixed_dictionaries({"inferenceService": dns_name}),
        "replicas": st.fixed_dictionaries(
            {"totalReplicas": st.integers(1, 1000)}, optional={"scaleDownDelay": st.integers(0, 86400).map(promql)}
        ),
    }

    def model(name: str, needs_backend: bool) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": name}
        optional(draw, ref, "version", version)
        if needs_backend or draw(st.booleans()):
            ref["backend"] = draw(backends[router])
        return ref

    out: dict[str, Any] = {"candidate": model(candidate, needs_backend=router == "kserve")}
    if draw(st.booleans()):
        out["incumbent"] = model(incumbent, needs_backend=False)
    out["traffic"] = {router: draw(routers[router])}
    return out


@st.composite
def provider(draw: st.DrawFn) -> dict[str, Any]:
    prom: dict[str, Any] = {
        "address": draw(st.sampled_from(["http://prometheus-operated.monitoring:9090", "https://prom.example/api/v1"]))
    }
    optional(draw, prom, "timeout", st.integers(1, 300).map(promql))
    optional(draw, prom, "staleAfter", st.integers(1, 86400).map(promql))
    optional(
        draw,
        prom,
        "secretRef",
        st.fixed_dictionaries(
            {"name": dns_name}, optional={"key": st.from_regex(r"[-._a-zA-Z0-9]{1,20}", fullmatch=True)}
        ),
    )
    return {"prometheus": prom}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = draw(traffic_and_models())
    spec["canary"], longest_hold = draw(canary())
    block = draw(analysis(longest_hold))
    if block is not None:
        spec["analysis"] = block
    count = draw(st.integers(0, 3))
    if count or draw(st.booleans()):
        names = draw(st.lists(label, min_size=count, max_size=count, unique=True))
        spec["guardrails"] = [draw(guardrail(name)) for name in names]
    if draw(st.booleans()):
        spec["provider"] = draw(provider())
    optional(draw, spec, "paused", st.booleans())
    return spec


def _body(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"generateName": "rt-"}, "spec": spec}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs())
def test_valid_specs_round_trip_unchanged(api_client: client.ApiClient, namespace: str, spec: dict[str, Any]) -> None:
    expected = ModelRolloutSpec.model_validate(spec).wire()  # the models accept every generated spec
    api = client.CustomObjectsApi(api_client)
    created = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _body(spec), field_validation="Strict"
    )
    name = created["metadata"]["name"]
    try:
        read = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        assert ModelRolloutSpec.model_validate(read["spec"]).wire() == expected
    finally:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def test_server_fills_the_model_defaults(api_client: client.ApiClient, namespace: str) -> None:
    """With every optional field left out, the API server stores the models' defaults."""
    spec = {
        "candidate": {"name": "fraud-v2"},
        "traffic": {"replicas": {"totalReplicas": 4}},
        "canary": {"steps": [{"weight": 10}]},
        "guardrails": [{"name": "errors", "metric": {"builtin": "ErrorRate"}, "sequential": {}}],
        "provider": {"prometheus": {"address": "http://prometheus.monitoring:9090"}},
    }
    api = client.CustomObjectsApi(api_client)
    created = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _body(spec), field_validation="Strict"
    )
    stored = created["spec"]
    model = ModelRolloutSpec.model_validate(spec)

    assert stored["analysis"] == Analysis().wire()
    assert stored["canary"] == {
        "steps": [{"weight": 10, "hold": "0s", "manualGate": False}],
        "afterLastStep": "Promote",
    }
    assert stored["traffic"] == model.traffic.wire() == {"replicas": {"totalReplicas": 4, "scaleDownDelay": "30s"}}
    assert stored["guardrails"] == [g.wire() for g in model.guardrails]
    assert stored["provider"]["prometheus"] == PrometheusSource(address="http://prometheus.monitoring:9090").wire()
    assert stored["paused"] is False
