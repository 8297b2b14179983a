"""Bad input: metric addresses the controller must never fetch, and nonsense that must not crash it.

- A rollout whose `spec.provider.prometheus.address` is loopback, a name resolving to loopback,
  or the API server itself is refused by a controller run as in a cluster (without
  `--allow-loopback-metrics`): nothing is fetched (a listener there counts zero requests), every
  guardrail is inconclusive with the reason, a Warning Event says so, the rollout never
  advances. (Link-local addresses and the API server's names are refused by the CRD itself:
  tests/integration/test_api_validation.py.)
- A Hypothesis fuzzer writes schema-valid but nonsensical ModelRollouts to the real API server:
  whatever the API server accepts, the controller reconciles without crashing (no "reconcile
  crashed" log, the process alive) and gives each a status with a reason and a condition.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.api import GROUP, PLURAL, VERSION
from tests.reliability.conftest import another_world
from tests.support.controller import ControllerFactory
from tests.support.controlplane import ControlPlane
from tests.support.faultproxy import CountingListener, wait_until
from tests.support.prometheus import ModelTraffic, PrometheusServer
from tests.support.world import World, rollout_body

pytestmark = pytest.mark.usefixtures("gateway_api")

ANALYSIS = {"interval": "1s", "window": "10s", "progressDeadline": "60s", "inconclusiveLimit": 50}


def test_loopback_and_api_server_metric_addresses_are_refused_and_never_fetched(
    world: World,
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    traffic: ModelTraffic,
    controllers: ControllerFactory,
) -> None:
    listener = CountingListener()
    try:
        worlds = {
            "loopback": (world, listener.url),
            "localhost": (another_world(api_client, control_plane, traffic), f"http://localhost:{listener.port}"),
            "apiserver": (another_world(api_client, control_plane, traffic), control_plane.url),
        }
        namespaces = [arg for w, _ in worlds.values() for arg in ("--namespace", w.namespace)]
        controllers.start("c1", *namespaces, allow_loopback_metrics=False)
        for w, address in worlds.values():
            provider = {"prometheus": {"address": address, "timeout": "1s"}}
            w.apply(rollout_body("demo", w.incumbent, w.candidate, analysis=ANALYSIS, provider=provider))
        expected = {
            "loopback": "is loopback",
            "localhost": "is loopback",
            "apiserver": "is the Kubernetes API server",
        }
        for case, (w, _) in worlds.items():
            obj = w.wait(
                lambda o: any("refused" in g.get("message", "") for g in o.get("status", {}).get("guardrails", [])),
                timeout=30,
            )
            message = obj["status"]["guardrails"][0]["message"]
            print(f"\n{case}: {message}")
            assert expected[case] in message and obj["status"]["guardrails"][0]["verdict"] == "Inconclusive"

            # The status is written before the Event is sent: wait for the Event.
            def warned(w: World = w) -> bool:
                return any(t == "Warning" and r == "GuardrailInconclusive" and "refused" in m for t, r, m in w.events())

            assert wait_until(warned, timeout=30), w.events()
            assert w.candidate_writes() == [20], "a refused provider must never let the rollout advance"
        assert listener.hits == 0, "a refused address was fetched"
    finally:
        listener.close()


# -- the fuzzer ----------------------------------------------------------------------------------


def _specs(world: World, prometheus_url: str) -> st.SearchStrategy[dict[str, Any]]:
    incumbents = st.sampled_from([world.incumbent, "ghost-a"])
    candidates = st.sampled_from([world.candidate, world.candidate, "ghost-b", world.incumbent])
    hold = st.sampled_from(["0s", "1s", "2s", "500ms"])
    weights = st.lists(st.integers(1, 100), min_size=1, max_size=4, unique=True).map(sorted)
    steps = st.builds(
        lambda ws, hs, gate: [
            {"weight": w, "hold": h, **({"manualGate": True} if gate else {})} for w, h in zip(ws, hs, strict=False)
        ],
        weights,
        st.lists(hold, min_size=4, max_size=4),
        st.booleans(),
    )
    canary = st.one_of(
        steps.map(lambda s: {"steps": s}),
        st.builds(
            lambda sw, mw, h: {"linear": {"stepWeight": min(sw, mw), "maxWeight": max(sw, mw), "hold": h}},
            st.integers(1, 100),
            st.integers(1, 100),
            hold,
        ),
    )
    traffic = st.sampled_from(
        [
            {"gatewayAPI": {"httpRoute": "models"}},
            {"gatewayAPI": {"httpRoute": "no-such-route"}},
            {"gatewayAPI": {"httpRoute": "models", "ruleName": "no-such-rule"}},
            {"istio": {"virtualService": "vs", "route": "primary", "host": "h.svc"}},
            {"replicas": {"totalReplicas": 3}},
        ]
    )
    queries = st.sampled_from(
        [
            "sum(",  # a parse error: Prometheus refuses it
            "vector(1)",
            "model_requests_total",  # several series where one is expected
            'sum(model_requests_total{model="{{model}}"})',
            "{{modle}}",  # an unknown placeholder
            "time()",
            "up == bool 2",
            "sum(rate(model_requests_total[1m])) / 0",  # +Inf
        ]
    )
    policy = st.sampled_from(["Wait", "Pause", "Rollback"])
    number = st.one_of(st.floats(0, 1e9, allow_nan=False), st.integers(0, 10))
    guardrail = st.one_of(
        st.builds(lambda m, q: {"metric": {"builtin": "ErrorRate"}, "absolute": {"max": q}}, st.none(), number),
        st.builds(lambda q, lo: {"metric": {"query": q}, "absolute": {"min": lo}}, queries, number),
        st.builds(lambda q: {"metric": {"query": q}, "relative": {"maxRatio": 1.0}}, queries),
        st.just({"metric": {"builtin": "LatencyP99"}, "relative": {"maxIncrease": 0}}),
        st.just({"metric": {"builtin": "ErrorRate"}, "sequential": {"significance": 0.2, "minEffect": 0.01}}),
        st.just({"metric": {"builtin": "PredictionDistribution"}, "drift": {"maxPSI": 0.0}}),
    ).flatmap(
        lambda g: st.fixed_dictionaries(
            {"minSamples": st.sampled_from([1, 5, 100_000_000]), "onNoData": policy, "onError": policy}
        ).map(lambda extra: {**g, **extra})
    )
    guardrails = st.lists(guardrail, max_size=3).map(lambda gs: [{"name": f"g{i}", **g} for i, g in enumerate(gs)])
    provider = st.one_of(
        st.none(),
        st.sampled_from([prometheus_url, "http://127.0.0.1:1", "http://prometheus.invalid:9090"]).map(
            lambda a: {"prometheus": {"address": a, "timeout": "1s", "staleAfter": "1s"}}
        ),
        st.just({"prometheus": {"address": prometheus_url, "secretRef": {"name": "no-such-secret"}}}),
    )
    analysis = st.fixed_dictionaries(
        {
            "interval": st.sampled_from(["1s", "2s"]),
            "progressDeadline": st.sampled_from(["3s", "20s"]),
            "inconclusiveLimit": st.integers(1, 3),
            "failureLimit": st.integers(0, 2),
            "mode": st.sampled_from(["Enforce", "Advisory"]),
            "endStepsEarly": st.booleans(),
        }
    )
    return st.fixed_dictionaries(
        {
            "incumbent": incumbents.map(lambda n: {"name": n}),
            "candidate": candidates.map(lambda n: {"name": n}),
            "traffic": traffic,
            "canary": canary,
            "analysis": analysis,
            "guardrails": guardrails,
            "paused": st.booleans(),
        },
        optional={"provider": provider.filter(lambda p: p is not None)},
    )


ANNOTATIONS = st.dictionaries(
    st.sampled_from(["modelrollout.dev/promote", "modelrollout.dev/abort", "modelrollout.dev/retry"]),
    st.sampled_from(["1", "full", "full-now", "", "x" * 63]),
    max_size=2,
)


def _clear(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    return bool(status.get("reason")) and (
        status.get("reason") == "InvalidSpec" or any(c.get("reason") and c.get("message") for c in conditions)
    )


def test_fuzzed_nonsense_never_crashes_the_controller_and_each_gets_a_clear_condition(
    world: World, prometheus: PrometheusServer, controllers: ControllerFactory
) -> None:
    controller = controllers.start("c1", "--namespace", world.namespace)
    accepted: list[str] = []
    refused: list[str] = []

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(spec=_specs(world, prometheus.url), annotations=ANNOTATIONS)
    def apply(spec: dict[str, Any], annotations: dict[str, str]) -> None:
        name = f"fuzz-{os.urandom(4).hex()}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelRollout",
            "metadata": {"name": name, "annotations": annotations},
            "spec": spec,
        }
        try:
            world.custom.create_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, body)
        except ApiException as exc:
            assert exc.status == 422, exc  # refused by the schema or a CEL rule: that is fine
            refused.append(name)
            return
        accepted.append(name)

    apply()
    assert accepted, "the fuzzer produced nothing the API server accepts"

    deadline = time.monotonic() + 180  # a bound for a busy machine; a quiet one takes seconds
    unclear = list(accepted)
    while unclear and time.monotonic() < deadline:
        unclear = [n for n in unclear if not _clear(world.get(n))]
        time.sleep(0.5)
    time.sleep(3)  # let the fastest verdicts play out too

    crashed = [line for line in controller.logs() if line.get("event") == "reconcile crashed"]
    reasons = sorted({(world.get(n).get("status") or {}).get("reason", "-") for n in accepted})
    print(f"\nfuzzer: {len(accepted)} accepted, {len(refused)} refused by the API server; reasons {reasons}")
    assert controller.proc.poll() is None, "the controller died"
    assert crashed == [], crashed[:3]
    assert unclear == [], {n: world.get(n).get("status") for n in unclear[:3]}
