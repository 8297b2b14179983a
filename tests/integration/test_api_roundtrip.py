"""Generated valid specs round-trip through the API server and the models unchanged."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from controller.api import GROUP, PLURAL, VERSION, ModelRolloutSpec

names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
durations = st.integers(1, 300).map(lambda s: f"{s}s")


@st.composite
def steps(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        weights = sorted(draw(st.sets(st.integers(0, 100), min_size=1, max_size=6)))
        return {"steps": [{"weight": w, "hold": draw(durations), "manualGate": draw(st.booleans())} for w in weights]}
    top = draw(st.integers(1, 100))
    return {"linear": {"stepWeight": draw(st.integers(1, top)), "maxWeight": top, "hold": draw(durations)}}


@st.composite
def guardrails(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for i in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["absolute", "relative", "sequential", "drift"]))
        g: dict[str, Any] = {"name": f"g{i}", "minSamples": draw(st.integers(1, 10_000))}
        if kind == "absolute":
            low = draw(st.floats(0, 10, allow_nan=False))
            g |= {
                "metric": {"query": 'sum(rate(x{model="{{model}}"}[{{window}}]))'},
                "absolute": {"min": low, "max": low + 1},
            }
        elif kind == "relative":
            g |= {"metric": {"builtin": "LatencyP99"}, "relative": {"maxRatio": draw(st.floats(1, 3))}}
        elif kind == "sequential":
            g |= {
                "metric": {"builtin": "ErrorRate"},
                "sequential": {"significance": draw(st.floats(0.001, 0.2)), "minEffect": 0.5},
            }
        else:
            g |= {"metric": {"builtin": "PredictionDistribution"}, "drift": {"maxPSI": draw(st.floats(0.01, 1))}}
        g["onNoData"] = draw(st.sampled_from(["Wait", "Pause", "Rollback"]))
        out.append(g)
    return out


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    incumbent, candidate = draw(st.lists(names, min_size=2, max_size=2, unique=True))
    return {
        "incumbent": {"name": incumbent},
        "candidate": {"name": candidate, "version": draw(st.text("abc123.", max_size=8))},
        "traffic": {"gatewayAPI": {"httpRoute": draw(names)}},
        "canary": draw(steps()),
        "analysis": {
            "interval": "10s",
            "progressDeadline": "1h",
            "mode": draw(st.sampled_from(["Enforce", "Advisory"])),
        },
        "guardrails": draw(guardrails()),
        "paused": draw(st.booleans()),
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs())
def test_valid_specs_round_trip_unchanged(api_client: client.ApiClient, namespace: str, spec: dict[str, Any]) -> None:
    api = client.CustomObjectsApi(api_client)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"generateName": "rt-"},
        "spec": spec,
    }
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict")
    read = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, created["metadata"]["name"])
    assert ModelRolloutSpec.model_validate(read["spec"]).wire() == ModelRolloutSpec.model_validate(spec).wire()
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, created["metadata"]["name"])
