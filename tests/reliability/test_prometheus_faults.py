"""Prometheus killed, slow beyond the query timeout, returning NaN, empty or stale answers.

Five rollouts run at once under one controller, each in its own namespace and pointed (by
`spec.provider.prometheus.address`) at its own broken view of a real Prometheus:

| fault   | how                                                   | policy               | verdict |
|---------|-------------------------------------------------------|----------------------|---------|
| killed  | a Prometheus of its own, SIGKILLed at step 1          | onError Wait         | RolledBack (InconclusiveLimitExceeded) |
| slow    | a proxy that delays every answer 3 s (timeout 1 s)    | onError Pause        | Paused (GuardrailInconclusive) |
| NaN     | a real series whose value is NaN                      | onNoData Rollback    | RolledBack (NoData) |
| empty   | a query for a series that does not exist              | onNoData Wait        | RolledBack (InconclusiveLimitExceeded) |
| stale   | a proxy replaying its first answer (staleAfter 2 s)   | onNoData Pause       | Paused (GuardrailInconclusive) |

Each must never advance past step 1 (audit log), never be promoted, end in its configured
verdict, and say why with a Warning `GuardrailInconclusive` Event.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.reliability.conftest import another_world
from tests.support.controller import ControllerFactory
from tests.support.controlplane import ControlPlane
from tests.support.faultproxy import FaultProxy, wait_until
from tests.support.prometheus import Exporter, ModelTraffic, PrometheusServer
from tests.support.world import World, phase, rollout_body

pytestmark = pytest.mark.usefixtures("gateway_api")

STEPS = {"steps": [{"weight": 10, "hold": "30s"}, {"weight": 50, "hold": "2s"}]}
ANALYSIS = {"interval": "1s", "window": "10s", "progressDeadline": "120s", "inconclusiveLimit": 4}
SAMPLES = 'sum(increase(model_requests_total{model="{{model}}"}[10s]))'


@pytest.fixture
def doomed_prometheus(exporter: Exporter) -> Iterator[PrometheusServer]:
    from tests.conftest import _session_pids

    server = PrometheusServer([exporter.port]).start()
    yield server
    server.close()
    _session_pids.extend(server.pids)


def _guardrail(**extra: Any) -> list[dict[str, Any]]:
    g = {"name": "error-rate", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 0.05}, "minSamples": 5}
    return [{**g, **extra}]


def _quality(query: str, **extra: Any) -> list[dict[str, Any]]:
    metric = {"query": query, "samplesQuery": SAMPLES}
    return [{"name": "quality", "metric": metric, "absolute": {"min": 0.5}, "minSamples": 5, **extra}]


def test_prometheus_faults_never_advance_never_promote_and_end_in_the_configured_verdict(
    world: World,
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    traffic: ModelTraffic,
    exporter: Exporter,
    prometheus: PrometheusServer,
    doomed_prometheus: PrometheusServer,
    controllers: ControllerFactory,
) -> None:
    worlds = {"killed": world}
    for fault in ("slow", "nan", "empty", "stale"):
        worlds[fault] = another_world(api_client, control_plane, traffic, f"t-prom-{fault}")
    nan = worlds["nan"]
    for model in (nan.incumbent, nan.candidate):
        exporter.set_gauge("model_quality", {"model": model}, math.nan)
    # Prometheus has scraped the NaN before the rollout asks (else the first answer is "no series").
    prometheus.wait_for(f'model_quality{{model="{nan.candidate}"}}', lambda r: bool(r))
    # Prometheus has the stale case's candidate before its first (replayed) answer is taken.
    prometheus.wait_for(f'increase(model_requests_total{{model="{worlds["stale"].candidate}"}}[10s])', bool)
    slow = FaultProxy(prometheus.url, delay=3.0)
    stale = FaultProxy(prometheus.url, replay=True)
    try:

        def provider(url: str, **extra: str) -> dict[str, Any]:
            return {"prometheus": {"address": url, "timeout": "1s", **extra}}

        specs: dict[str, dict[str, Any]] = {
            "killed": {"provider": provider(doomed_prometheus.url), "guardrails": _guardrail(onError="Wait")},
            "slow": {"provider": provider(slow.url), "guardrails": _guardrail(onError="Pause")},
            "nan": {
                "provider": provider(prometheus.url),
                "guardrails": _quality('sum(model_quality{model="{{model}}"})', onNoData="Rollback"),
            },
            "empty": {
                "provider": provider(prometheus.url),
                "guardrails": _quality('sum(model_no_such_metric{model="{{model}}"})', onNoData="Wait"),
            },
            "stale": {"provider": provider(stale.url, staleAfter="2s"), "guardrails": _guardrail(onNoData="Pause")},
        }
        controllers.start("c1", *[arg for w in worlds.values() for arg in ("--namespace", w.namespace)])
        for fault, w in worlds.items():
            w.apply(rollout_body("demo", w.incumbent, w.candidate, canary=STEPS, analysis=ANALYSIS, **specs[fault]))
        world.wait(lambda o: (o.get("status", {}).get("weights") or {}).get("candidate") == 10)
        assert doomed_prometheus.proc is not None
        doomed_prometheus.proc.send_signal(signal.SIGKILL)
        doomed_prometheus.proc.wait(timeout=10)

        expected = {
            "killed": ("RolledBack", "InconclusiveLimitExceeded", "unreachable"),
            "slow": ("Paused", "GuardrailInconclusive", "timed out"),
            "nan": ("RolledBack", "NoData", "NaN"),
            "empty": ("RolledBack", "InconclusiveLimitExceeded", "no series"),
            "stale": ("Paused", "GuardrailInconclusive", "stale"),
        }
        for fault, (verdict, reason, why) in expected.items():
            w = worlds[fault]
            obj = w.wait(phase(verdict), timeout=90)
            status = obj["status"]

            # The status is written before the Events are sent: wait for the Event saying why.
            def warned(w: World = w, why: str = why) -> bool:
                return any(t == "Warning" and r == "GuardrailInconclusive" and why in m for t, r, m in w.events())

            wait_until(warned, timeout=30)
            events = w.events()
            print(f"\n{fault}: {status['phase']}/{status['reason']}: {status.get('message')}")
            assert status["reason"] == reason, (fault, status)
            assert max(w.candidate_writes(), default=0) <= 10, (fault, w.candidate_writes())
            assert 50 not in w.candidate_writes() and 100 not in w.candidate_writes()
            assert "Promoted" not in [r for _, r, _ in events] and "StepAdvanced" not in [r for _, r, _ in events]
            warnings = [m for t, r, m in events if t == "Warning" and r == "GuardrailInconclusive"]
            assert warnings, (fault, events)
            assert any(why in m for m in warnings), (fault, why, warnings)
        assert slow.hits > 0 and stale.hits > 0
    finally:
        slow.close()
        stale.close()
        for model in (nan.incumbent, nan.candidate):
            exporter.remove("model_quality", {"model": model})
